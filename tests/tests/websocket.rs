//! WebSocket through the proxy: a real `websockets` client (PyPI) to real
//! loopback echo servers, through intercepted TLS (wss://) and through a
//! plain CONNECT tunnel (ws://); an upstream refusal reaching the client as
//! it is; and an absolute-form upgrade on the plain-HTTP listener, spoken
//! by hand.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    process::{Child, Command, Stdio},
    time::Duration,
};

use proxlet_tests::{proxlet::Proxlet, test_tools, TestCa};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/websockets_echo.py");

fn python() -> std::path::PathBuf {
    let python = test_tools().join("py/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run ./test.sh (it installs websockets)",
        python.display()
    );
    python
}

/// The echo servers; killed when dropped.
struct Echo {
    child: Child,
    plain: u16,
    tls: u16,
    ca: TestCa,
}

impl Echo {
    fn start() -> Self {
        let ca = TestCa::new("websocket test CA");
        let mut child = Command::new(python())
            .arg(SCRIPT)
            .arg("serve")
            .arg(&ca.server_cert_path)
            .arg(&ca.server_key_path)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let ports: Vec<u16> = line
            .split_whitespace()
            .map(|p| p.parse().unwrap())
            .collect();
        assert_eq!(ports.len(), 2, "the echo servers printed {line:?}");
        Self {
            child,
            plain: ports[0],
            tls: ports[1],
            ca,
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client(proxlet: &Proxlet, url: &str, count: usize) -> String {
    let output = Command::new(python())
        .arg(SCRIPT)
        .arg("client")
        .arg(url)
        .arg(proxlet.url())
        .arg(proxlet.ca_path())
        .arg(count.to_string())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    format!("{text}{}", String::from_utf8_lossy(&output.stderr))
}

#[test]
fn websocket_messages_are_echoed_in_order_through_intercepted_tls_and_tunnels() {
    let echo = Echo::start();
    let proxlet = Proxlet::start(&["--upstream-ca", echo.ca.path().to_str().unwrap()]);

    let url = format!("wss://127.0.0.1:{}/", echo.tls);
    assert_eq!(client(&proxlet, &url, 10_000), "ok 10000");
    // Intercepted: the upgrade went through proxlet's pipeline as a flow.
    let log = proxlet.log();
    let https = format!("https://127.0.0.1:{}/", echo.tls);
    assert!(
        log.contains(&format!("GET {https} HTTP/1.1->HTTP/1.1 101")),
        "{log}"
    );

    let url = format!("ws://127.0.0.1:{}/", echo.plain);
    assert_eq!(client(&proxlet, &url, 1000), "ok 1000");

    // The upstream's refusal reaches the client as it is.
    let url = format!("wss://127.0.0.1:{}/forbidden", echo.tls);
    let refused = client(&proxlet, &url, 1);
    assert!(refused.starts_with("failed status=403"), "{refused}");
}

/// A masked client frame (RFC 6455 §5.2) carrying `payload` as text.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mask = [0x12, 0x34, 0x56, 0x78];
    let mut out = vec![0x81, 0x80 | payload.len() as u8];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

#[test]
fn an_upgrade_on_the_plain_listener_switches_protocols_end_to_end() {
    let echo = Echo::start();
    let proxlet = Proxlet::start(&[]);
    let (mut stream, head) = open_offering(&proxlet, echo.plain, "");
    assert!(head.contains("upgrade: websocket"), "{head}");
    // RFC 6455 §1.3's example key and its accept value, from the upstream.
    assert!(
        head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    for text in ["hello", "through the proxy"] {
        stream.write_all(&frame(text.as_bytes())).unwrap();
        let mut answer = vec![0u8; 2 + text.len()];
        stream.read_exact(&mut answer).unwrap();
        assert_eq!(answer[0], 0x81, "{answer:?}");
        assert_eq!(&answer[2..], text.as_bytes());
    }
}

#[test]
fn an_http2_client_opens_a_websocket_with_extended_connect() {
    use http_body_util::Full;
    use hyper::body::Bytes;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let echo = Echo::start();
    let proxlet = Proxlet::start(&["--upstream-ca", echo.ca.path().to_str().unwrap()]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let target: std::net::SocketAddr = format!("127.0.0.1:{}", echo.tls).parse().unwrap();
        let mut sender =
            proxlet_tests::client::h2_through(proxlet.addr, target, &proxlet.ca_path()).await;
        let request = || {
            http::Request::builder()
                .method(http::Method::CONNECT)
                .uri(format!("https://127.0.0.1:{}/chat", echo.tls))
                .header("sec-websocket-version", "13")
                .extension(hyper::ext::Protocol::from_static("websocket"))
                .body(Full::new(Bytes::new()))
                .unwrap()
        };
        // The server's SETTINGS (which enable extended CONNECT) may not
        // have arrived with the handshake: ask again, a bounded number of
        // times, while the client says they have not.
        let mut response = None;
        for _ in 0..100 {
            sender.ready().await.unwrap();
            match sender.send_request(request()).await {
                Ok(r) => {
                    response = Some(r);
                    break;
                }
                Err(e) if format!("{e:?}").contains("xtended") => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(e) => panic!("extended CONNECT failed: {e:?}"),
            }
        }
        let response = response.expect("extended CONNECT was never enabled");
        assert_eq!(response.status(), 200, "{response:?}");
        assert!(
            response.headers().get("sec-websocket-accept").is_none(),
            "{response:?}"
        );
        let upgraded = hyper::upgrade::on(response).await.unwrap();
        let mut stream = hyper_util::rt::TokioIo::new(upgraded);
        for text in ["over", "http/2 streams"] {
            stream.write_all(&frame(text.as_bytes())).await.unwrap();
            let mut answer = vec![0u8; 2 + text.len()];
            let read = stream.read_exact(&mut answer);
            tokio::time::timeout(Duration::from_secs(20), read)
                .await
                .expect("no echo within 20 s")
                .unwrap();
            assert_eq!(answer[0], 0x81, "{answer:?}");
            assert_eq!(&answer[2..], text.as_bytes());
        }
    });
    let log = proxlet.log();
    assert!(
        log.contains(&format!("GET https://127.0.0.1:{}/chat", echo.tls)),
        "{log}"
    );
}

/// Runs the fixture's `script` client: what it printed, one line each.
fn script(proxlet: &Proxlet, url: &str, messages: &[&str]) -> Vec<String> {
    let output = Command::new(python())
        .arg(SCRIPT)
        .arg("script")
        .arg(url)
        .arg(proxlet.url())
        .arg(proxlet.ca_path())
        .args(messages)
        .output()
        .unwrap();
    let mut lines: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    if !output.status.success() {
        lines.push(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    lines
}

/// proxlet with the sandbox plugin in `websocket` mode and `args`.
fn with_message_plugin(echo: &Echo, args: &[&str]) -> (tempfile::TempDir, Proxlet) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxlet.toml");
    std::fs::write(
        &config,
        format!(
            "[[plugin]]\nname = \"sandbox\"\npath = {:?}\nconfig = {{ mode = \"websocket\" }}\n",
            proxlet_tests::guest("sandbox.wasm")
        ),
    )
    .unwrap();
    let ca = echo.ca.path();
    let mut all = vec![
        "--config",
        config.to_str().unwrap(),
        "--upstream-ca",
        ca.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    (dir, Proxlet::start(&all))
}

#[test]
fn a_message_plugin_replaces_drops_and_injects_messages_as_written() {
    let echo = Echo::start();
    let (_dir, proxlet) = with_message_plugin(&echo, &[]);
    let sent = [
        "hello",
        "please drop this",
        "bin:raw bytes",
        "inject one",
        "big:2000000",
        "panic now",
        "after that",
    ];
    // (A ws:// URL through a proxy is a CONNECT tunnel the client speaks
    // plain HTTP in: relayed as bytes, so the intercepted wss:// it is.)
    for url in [
        format!("wss://127.0.0.1:{}/chat", echo.tls),
        format!("wss://127.0.0.1:{}/again", echo.tls),
    ] {
        let mut got = script(&proxlet, &url, &sent);
        // The injected message comes from proxlet, racing the echoes.
        let injected = got.iter().filter(|l| *l == "'injected by plugin'").count();
        got.retain(|l| l != "'injected by plugin'");
        assert_eq!(injected, 1, "{url}: {got:?}");
        assert_eq!(
            got,
            [
                // The client offered permessage-deflate; with a plugin on
                // the messages it was not offered upstream.
                "extensions: none",
                "'HELLO'",
                "b'raw bytes'",
                "'INJECT ONE'",
                // Longer than the plugins' limit: relayed as it came.
                "big 2000000 'a'",
                // The plugin panicked (fail-open): the message went on.
                "'panic now'",
                "'AFTER THAT'",
                "'LAST'",
            ],
            "{url}\n{}",
            proxlet.log()
        );
    }
    let log = proxlet.log();
    assert!(
        log.contains("not offered upstream: plugin sandbox reads its messages"),
        "{log}"
    );
    assert!(
        log.contains("boom from the sandbox plugin's WebSocket hook"),
        "{log}"
    );

    // A WebSocket the plugin does not want keeps its compression.
    let url = format!("wss://127.0.0.1:{}/ignore", echo.tls);
    let got = script(&proxlet, &url, &["hello"]);
    assert!(
        got[0].starts_with("extensions: permessage-deflate"),
        "{got:?}"
    );
    assert_eq!(got[1..], ["'hello'", "'last'"]);
}

/// `proxlet flows FILE --show ID` once the saved file holds flow `id`.
fn shown_when_saved(file: &std::path::Path, id: u32) -> String {
    let mut shown = String::new();
    let saved = proxlet_tests::wait_until(Duration::from_secs(30), || {
        let output = proxlet_tests::proxlet::command()
            .arg("flows")
            .arg(file)
            .args(["--show", &id.to_string()])
            .output()
            .unwrap();
        shown = String::from_utf8_lossy(&output.stdout).into_owned();
        output.status.success() && shown.contains("websocket:")
    });
    assert!(saved, "flow #{id} never saved with its messages: {shown}");
    shown
}

#[test]
fn captured_websockets_record_their_messages_inflated_with_plugin_marks() {
    let echo = Echo::start();
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("ws.flows");
    let save = ["--save", file.to_str().unwrap()];

    // No plugin: the client's permessage-deflate stays on the wire and
    // the record holds the messages inflated.
    let proxlet = Proxlet::start(
        &[
            &["--upstream-ca", echo.ca.path().to_str().unwrap()][..],
            &save,
        ]
        .concat(),
    );
    let url = format!("wss://127.0.0.1:{}/plain", echo.tls);
    let got = script(&proxlet, &url, &["hello hello hello", "bin:\u{1}\u{2}"]);
    assert!(
        got[0].starts_with("extensions: permessage-deflate"),
        "{got:?}"
    );
    assert_eq!(got[1..], ["'hello hello hello'", "b'\\x01\\x02'", "'last'"]);
    // CONNECT is #1, the upgrade #2.
    let shown = shown_when_saved(&file, 2);
    let lines: Vec<&str> = shown
        .lines()
        .skip_while(|l| !l.starts_with("websocket:"))
        .collect();
    assert!(
        lines[0].starts_with("websocket: 6 messages, closed by the client (1000"),
        "{shown}"
    );
    // Each direction in order (the two interleave as they came).
    let way = |arrow: &str| -> Vec<String> {
        lines[1..7]
            .iter()
            .filter_map(|l| l.split_once(arrow).map(|(_, rest)| rest.trim().to_owned()))
            .collect()
    };
    let sent = [
        "text 17B \"hello hello hello\"",
        "binary 2B 01 02",
        "text 4B \"last\"",
    ];
    assert_eq!(way("→"), sent, "{shown}");
    assert_eq!(way("←"), sent, "{shown}");
    drop(proxlet);

    // With the message plugin: what went on, what it dropped, what it made.
    let file = work.path().join("plugin.flows");
    let (_dir, proxlet) = with_message_plugin(&echo, &["--save", file.to_str().unwrap()]);
    let url = format!("wss://127.0.0.1:{}/chat", echo.tls);
    let got = script(&proxlet, &url, &["please drop this", "inject one"]);
    assert!(got.contains(&"'INJECT ONE'".to_owned()), "{got:?}");
    let shown = shown_when_saved(&file, 2);
    for expected in [
        "text 16B \"please drop this\" [dropped]",
        "text 10B \"INJECT ONE\"",
        "text 18B \"injected by plugin\" [injected]",
    ] {
        assert!(shown.contains(expected), "{expected}:\n{shown}");
    }
}

/// Opens a WebSocket to the plain echo server through proxlet's listener
/// (absolute-form upgrade) offering permessage-deflate, which a watched
/// WebSocket does not get: the stream after the 101.
fn open_by_hand(proxlet: &Proxlet, port: u16) -> TcpStream {
    let extra = "Sec-WebSocket-Extensions: permessage-deflate\r\n";
    let (stream, head) = open_offering(proxlet, port, extra);
    assert!(!head.contains("permessage-deflate"), "{head}");
    stream
}

/// Opens a WebSocket to the plain echo server through proxlet's listener
/// with `extra` header lines in the request: the stream after the 101, and
/// the 101's head (lowercase).
fn open_offering(proxlet: &Proxlet, port: u16, extra: &str) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(proxlet.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let request = format!(
        "GET http://127.0.0.1:{port}/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "closed after {head:?}");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    (stream, head)
}

/// The next frame: (first byte, payload); `None` once the stream closed.
fn read_frame(stream: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head).ok()?;
    assert_eq!(head[1] & 0x80, 0, "frames to the client are not masked");
    let len = match head[1] & 0x7f {
        126 => {
            let mut ext = [0u8; 2];
            stream.read_exact(&mut ext).ok()?;
            u16::from_be_bytes(ext) as usize
        }
        127 => panic!("no test frame is that long"),
        n => n as usize,
    };
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).ok()?;
    Some((head[0], payload))
}

#[test]
fn a_watched_websocket_survives_fragments_and_closes_on_a_broken_frame() {
    let echo = Echo::start();
    let (_dir, proxlet) = with_message_plugin(&echo, &[]);
    let mut stream = open_by_hand(&proxlet, echo.plain);
    // A text message in two fragments with a ping between them: the ping
    // is answered at once, the message reaches the plugin whole.
    let mask = [0x0f, 0xf0, 0x55, 0xaa];
    let masked = |first: u8, payload: &[u8]| {
        let mut out = vec![first, 0x80 | payload.len() as u8];
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    };
    stream.write_all(&masked(0x01, b"frag")).unwrap();
    stream.write_all(&masked(0x89, b"are you there")).unwrap();
    stream.write_all(&masked(0x80, b"mented")).unwrap();
    assert_eq!(
        read_frame(&mut stream),
        Some((0x8a, b"are you there".to_vec())),
        "the pong"
    );
    assert_eq!(
        read_frame(&mut stream),
        Some((0x81, b"FRAGMENTED".to_vec()))
    );

    // A fragmented ping breaks the protocol: both sides get a close 1002.
    stream.write_all(&masked(0x09, b"bad")).unwrap();
    let (first, payload) = read_frame(&mut stream).expect("a close frame");
    assert_eq!(first, 0x88);
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1002);
    assert!(
        String::from_utf8_lossy(&payload[2..]).contains("control frame"),
        "{payload:?}"
    );
    assert_eq!(read_frame(&mut stream), None, "then the connection closes");
    assert!(
        proxlet.wait_for_log("WebSocket closed: protocol error", Duration::from_secs(20)),
        "{}",
        proxlet.log()
    );

    // A frame claiming an absurd length is streamed, never buffered: the
    // connection stays usable until the bytes stop, and proxlet serves on.
    let mut stream = open_by_hand(&proxlet, echo.plain);
    let mut huge = vec![0x82, 0xff];
    huge.extend_from_slice(&(1u64 << 62).to_be_bytes());
    huge.extend_from_slice(&mask);
    stream.write_all(&huge).unwrap();
    stream.write_all(&[0u8; 4096]).unwrap();
    drop(stream);
    let mut stream = open_by_hand(&proxlet, echo.plain);
    stream.write_all(&masked(0x81, b"still here")).unwrap();
    assert_eq!(
        read_frame(&mut stream),
        Some((0x81, b"STILL HERE".to_vec()))
    );
}

#[test]
fn an_open_websocket_shows_its_messages_in_the_web_ui_as_they_come() {
    let echo = Echo::start();
    let proxlet = Proxlet::start(&["--web", "127.0.0.1:0"]);
    let log = proxlet.log();
    let ui = log
        .lines()
        .find_map(|l| l.strip_prefix("proxlet web on http://"))
        .unwrap_or_else(|| panic!("no web line in:\n{log}"))
        .to_owned();
    let (addr, token) = ui.split_once("/?token=").unwrap();
    let api = |path: &str| -> serde_json::Value {
        let output = Command::new("curl")
            .args(["-s", "-H", &format!("X-Proxlet-Token: {token}")])
            .arg(format!("http://{addr}{path}"))
            .output()
            .unwrap();
        serde_json::from_slice(&output.stdout).unwrap_or_default()
    };
    let websocket = || {
        let flows = api("/api/flows");
        let row = flows["flows"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| !r["websocket"].is_null()).cloned());
        row.map(|row| api(&format!("/api/flows/{}", row["id"]))["websocket"].clone())
    };

    let (mut stream, _) = open_offering(&proxlet, echo.plain, "");
    let mask = [1, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | 5];
    frame.extend_from_slice(&mask);
    frame.extend(b"first".iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    stream.write_all(&frame).unwrap();
    assert_eq!(read_frame(&mut stream), Some((0x81, b"first".to_vec())));
    // Still open: the message and its echo show within a bounded wait.
    let mut seen = serde_json::Value::Null;
    let shown = proxlet_tests::wait_until(Duration::from_secs(20), || {
        seen = websocket().unwrap_or_default();
        seen["messages"].as_array().is_some_and(|m| m.len() == 2) && seen["end"].is_null()
    });
    assert!(shown, "{seen}");
    assert_eq!(seen["messages"][0]["content"]["data"], "first");
    assert_eq!(seen["messages"][1]["from_client"], false);

    // Closed: the record says how.
    drop(stream);
    let ended = proxlet_tests::wait_until(Duration::from_secs(20), || {
        seen = websocket().unwrap_or_default();
        !seen["end"].is_null()
    });
    assert!(ended, "{seen}");
}
