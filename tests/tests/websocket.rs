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
    let mut stream = TcpStream::connect(proxlet.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let request = format!(
        "GET http://127.0.0.1:{0}/ HTTP/1.1\r\nHost: 127.0.0.1:{0}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        echo.plain
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
