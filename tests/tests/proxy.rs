//! The proxy core end to end: the real binary, real TLS, curl and hyper.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use proxlet_tests::{client, curl, origin::pattern, proxlet, Origin, Proxlet, TestCa};

fn https_origin() -> Origin {
    Origin::https(Arc::new(TestCa::new("test origin CA")))
}

/// proxlet trusting the origin's CA, as `--upstream-ca`.
fn proxlet_for(origin: &Origin, extra: &[&str]) -> Proxlet {
    let ca = origin
        .ca
        .as_ref()
        .unwrap()
        .path()
        .to_str()
        .unwrap()
        .to_owned();
    let mut args = vec!["--upstream-ca", ca.as_str()];
    args.extend_from_slice(extra);
    Proxlet::start(&args)
}

#[test]
fn https_through_proxlet_returns_the_exact_body_and_logs_the_flow() {
    let origin = https_origin();
    let proxy = proxlet_for(&origin, &[]);
    let url = origin.url("/bytes/1024");
    let got = curl(&proxy, &["--http1.1", &url]);
    assert_eq!(got.status, 200, "{got:?}");
    assert_eq!(got.http_version, "1.1");
    assert_eq!(got.body, pattern(1024));
    let line = format!("GET {url} HTTP/1.1->");
    assert!(
        proxy.wait_for_log(&line, Duration::from_secs(5)),
        "{}",
        proxy.log()
    );
    assert!(proxy.log().contains(" 200 1024B "), "{}", proxy.log());
}

#[test]
fn plain_http_through_proxlet_returns_the_exact_body() {
    let origin = Origin::http();
    let proxy = Proxlet::start(&[]);
    let got = curl(&proxy, &[&origin.url("/bytes/5000")]);
    assert_eq!(got.status, 200, "{got:?}");
    assert_eq!(got.body, pattern(5000));
    let chunked = curl(&proxy, &[&origin.url("/chunked/100000")]);
    assert_eq!(chunked.body, pattern(100_000));
}

#[test]
fn http2_is_spoken_on_both_legs() {
    let origin = https_origin();
    let proxy = proxlet_for(&origin, &[]);
    let got = curl(&proxy, &["--http2", &origin.url("/version")]);
    assert_eq!(got.status, 200, "{got:?}");
    assert_eq!(got.http_version, "2", "client leg");
    assert_eq!(got.text(), "HTTP/2.0", "upstream leg");
    let body = curl(&proxy, &["--http2", &origin.url("/bytes/70000")]);
    assert_eq!(body.body, pattern(70000));
    assert!(
        proxy.wait_for_log("HTTP/2->HTTP/2 200", Duration::from_secs(5)),
        "{}",
        proxy.log()
    );
}

#[test]
fn request_bodies_and_headers_reach_the_origin() {
    let origin = https_origin();
    let proxy = proxlet_for(&origin, &[]);
    let got = curl(
        &proxy,
        &[
            "--http1.1",
            "-H",
            "X-Test: yes",
            "-H",
            "Connection: X-Drop",
            "-H",
            "X-Drop: 1",
            "--data-binary",
            "hello body",
            &origin.url("/echo"),
        ],
    );
    assert_eq!(got.status, 200, "{got:?}");
    let text = got.text();
    assert!(
        text.starts_with("POST ") && text.contains("/echo "),
        "{text}"
    );
    assert!(text.contains("x-test: yes"), "{text}");
    assert!(
        !text.contains("x-drop"),
        "hop-by-hop header named by Connection leaked: {text}"
    );
    assert!(!text.to_ascii_lowercase().contains("via:"), "{text}");
    assert!(text.ends_with("\n\nhello body"), "{text}");
}

#[test]
fn untrusted_upstream_certificate_gives_502_naming_tls_verification() {
    let origin = https_origin();
    let proxy = Proxlet::start(&[]);
    let got = curl(&proxy, &[&origin.url("/bytes/10")]);
    assert_eq!(got.status, 502, "{got:?}");
    assert!(
        got.text().contains("TLS verification of 127.0.0.1 failed"),
        "{}",
        got.text()
    );

    let insecure = Proxlet::start(&["--insecure-upstream"]);
    let got = curl(&insecure, &[&origin.url("/bytes/10")]);
    assert_eq!(got.status, 200, "{got:?}");
    assert_eq!(got.body, pattern(10));
    assert!(
        insecure.log().contains("NOT verified"),
        "{}",
        insecure.log()
    );
}

#[test]
fn unreachable_and_slow_upstreams_get_502_and_504_with_reasons() {
    let origin = Origin::http();
    let proxy = Proxlet::start(&["--upstream-timeout", "500ms"]);
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let refused = curl(&proxy, &[&format!("http://127.0.0.1:{port}/")]);
    assert_eq!(refused.status, 502);
    assert!(refused.text().contains("refused"), "{}", refused.text());
    let slow = curl(&proxy, &[&origin.url("/slow/3000")]);
    assert_eq!(slow.status, 504);
    assert!(
        slow.text().contains("did not answer within 500 ms"),
        "{}",
        slow.text()
    );
    let dns = curl(&proxy, &["http://no-such-host.invalid/"]);
    assert_eq!(dns.status, 502);
    assert!(dns.text().contains("DNS"), "{}", dns.text());
}

#[test]
fn ca_persists_across_restarts_with_a_private_key() {
    use std::os::unix::fs::PermissionsExt;
    let home = tempfile::tempdir().unwrap();
    let first = Proxlet::start_with_home(home.path(), &[]).unwrap();
    let ca = std::fs::read(first.ca_path()).unwrap();
    drop(first);
    let second = Proxlet::start_with_home(home.path(), &[]).unwrap();
    assert_eq!(
        std::fs::read(second.ca_path()).unwrap(),
        ca,
        "CA changed on restart"
    );
    let mode = std::fs::metadata(home.path().join("ca-key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // The CA still signs what the second run intercepts.
    let origin = https_origin();
    drop(second);
    let upstream_ca = origin
        .ca
        .as_ref()
        .unwrap()
        .path()
        .to_str()
        .unwrap()
        .to_owned();
    let third = Proxlet::start_with_home(home.path(), &["--upstream-ca", &upstream_ca]).unwrap();
    assert_eq!(curl(&third, &[&origin.url("/bytes/3")]).status, 200);

    let run = |args: &[&str]| {
        let out = proxlet::command()
            .arg("--home")
            .arg(home.path())
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        out
    };
    let path = run(&["ca", "path"]);
    assert_eq!(
        String::from_utf8(path.stdout).unwrap().trim(),
        home.path().join("ca.pem").to_str().unwrap()
    );
    assert_eq!(run(&["ca", "export"]).stdout, ca);
    run(&["ca", "regenerate"]);
    assert_ne!(std::fs::read(home.path().join("ca.pem")).unwrap(), ca);
}

#[test]
fn one_gib_download_and_100_mb_upload_stream_with_bounded_memory() {
    let origin = https_origin();
    let proxy = proxlet_for(&origin, &[]);
    const GIB: u64 = 1 << 30;
    let got = curl(
        &proxy,
        &["-o", "/dev/null", &origin.url(&format!("/bytes/{GIB}"))],
    );
    assert_eq!(got.status, 200, "{got:?}");
    assert_eq!(got.size_download, GIB);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("upload.bin");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
    let block = pattern(1 << 20);
    for _ in 0..100 {
        out.write_all(&block).unwrap();
    }
    drop(out);
    let upload = format!("@{}", file.display());
    let got = curl(
        &proxy,
        &[
            "-H",
            "Content-Type: application/octet-stream",
            "--data-binary",
            &upload,
            &origin.url("/count"),
        ],
    );
    assert_eq!(got.status, 200, "{got:?}");
    assert_eq!(got.text(), (100u64 << 20).to_string());

    let peak = proxy.peak_rss_kib();
    assert!(peak < 64 * 1024, "proxlet peak RSS {peak} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_requests_over_twenty_connections_succeed() {
    let origin = https_origin();
    let proxy = proxlet_for(&origin, &[]);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let sender = client::h2_through(proxy.addr, origin.addr, &proxy.ca_path()).await;
        for i in 0..10 {
            let mut sender = sender.clone();
            let uri = origin.url(&format!("/bytes/{}", 1000 + i));
            tasks.push(tokio::spawn(async move {
                let request = http::Request::get(uri)
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                let response = sender.send_request(request).await.unwrap();
                assert_eq!(response.status(), 200);
                let body = response.into_body().collect().await.unwrap().to_bytes();
                assert_eq!(body, pattern(1000 + i));
            }));
        }
    }
    assert_eq!(tasks.len(), 200);
    for task in tasks {
        task.await.unwrap();
    }
}

/// Sends `bytes` on a fresh connection to proxlet and returns what came back
/// before the proxy closed or went quiet.
fn raw_exchange(proxy: &Proxlet, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(proxy.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = stream.write_all(bytes);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn malformed_and_aborted_requests_leave_the_proxy_serving() {
    let origin = https_origin();
    let proxy = proxlet_for(&origin, &[]);

    let answer = raw_exchange(&proxy, b"GARBAGE\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");

    let huge = format!(
        "GET {} HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        origin.url("/"),
        "a".repeat(1 << 20)
    );
    let answer = raw_exchange(&proxy, huge.as_bytes());
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{answer}"
    );

    // Garbage after CONNECT is relayed to the origin, which drops it.
    let connect = format!(
        "CONNECT {0} HTTP/1.1\r\nHost: {0}\r\n\r\nnot tls at all\r\n\r\n",
        origin.addr
    );
    let answer = raw_exchange(&proxy, connect.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // A client that shuts down its sending side after the request (`nc -N`)
    // still gets the whole response.
    let plain = Origin::http();
    let mut stream = TcpStream::connect(proxy.addr).unwrap();
    let head = format!(
        "GET {} HTTP/1.1\r\nHost: x\r\n\r\n",
        plain.url("/bytes/3000")
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    assert!(answer.ends_with(&pattern(3000)), "{}", proxy.log());

    // A client that leaves in the middle of its upload.
    let mut stream = TcpStream::connect(proxy.addr).unwrap();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n",
        Origin::http().url("/count")
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&[b'x'; 4096]).unwrap();
    drop(stream);

    // A client that leaves in the middle of a download.
    let mut stream = TcpStream::connect(proxy.addr).unwrap();
    let plain = Origin::http();
    let head = format!(
        "GET {} HTTP/1.1\r\nHost: x\r\n\r\n",
        plain.url("/bytes/100000000")
    );
    stream.write_all(head.as_bytes()).unwrap();
    let mut some = [0u8; 65536];
    stream.read_exact(&mut some).unwrap();
    drop(stream);

    let got = curl(&proxy, &[&origin.url("/bytes/2048")]);
    assert_eq!(got.status, 200, "{got:?}");
    assert_eq!(got.body, pattern(2048));
    assert!(
        proxy.wait_for_log("client-aborted", Duration::from_secs(5)),
        "{}",
        proxy.log()
    );
}

#[test]
fn ignored_hosts_are_tunnelled_with_the_origin_certificate() {
    let origin = https_origin();
    let proxy = Proxlet::start(&["--ignore-hosts", "127.0.0.1"]);
    // Trusting only the origin's CA: this works only if proxlet did not intercept.
    let origin_ca = origin.ca.as_ref().unwrap().path();
    let got = client::curl_with(Some(&proxy), origin_ca, &[&origin.url("/bytes/100")]);
    assert_eq!(got.status, 200, "{got:?}");
    assert_eq!(got.body, pattern(100));
    // And a host that is not ignored is intercepted: the origin CA alone fails.
    let other = Proxlet::start(&["--ignore-hosts", "*.example.com"]);
    let got = client::curl_with(Some(&other), origin_ca, &[&origin.url("/bytes/100")]);
    assert!(!got.success, "{got:?}");
}

#[test]
fn port_in_use_exits_with_a_sentence_naming_the_address() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let home = tempfile::tempdir().unwrap();
    let out = proxlet::command()
        .args(["--listen", &addr, "--home"])
        .arg(home.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "cannot listen on {addr}: the address is already in use"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn bad_options_and_config_exit_with_clear_errors() {
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("proxlet.toml");
    std::fs::write(&config, "listen = \"127.0.0.1:0\"\nlisten_port = 9\n").unwrap();
    let run = |args: &[&str]| {
        // In the temporary home: the default cache dir is ./proxlet-cache.
        let out = proxlet::command()
            .current_dir(home.path())
            .arg("--home")
            .arg(home.path())
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!stderr.contains("panicked"), "{stderr}");
        stderr
    };
    let stderr = run(&["--config", config.to_str().unwrap()]);
    assert!(
        stderr.contains("line 2") && stderr.contains("listen_port"),
        "{stderr}"
    );
    let stderr = run(&["--listen", "0.0.0.0:0"]);
    assert!(stderr.contains("--allow-remote"), "{stderr}");
    let stderr = run(&[
        "--upstream-ca",
        "/nonexistent/ca.pem",
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(stderr.contains("/nonexistent/ca.pem"), "{stderr}");
    // Found before the default chain loads: nothing compiled, no cache
    // dir left behind by a run that never started.
    assert!(!stderr.contains("loaded plugin"), "{stderr}");
    assert!(!home.path().join("proxlet-cache").exists());
    let stderr = run(&["--upstream-timeout", "soon", "--listen", "127.0.0.1:0"]);
    assert!(stderr.contains("--upstream-timeout"), "{stderr}");
    let stderr = run(&["--idle-timeout", "soon", "--listen", "127.0.0.1:0"]);
    assert!(stderr.contains("--idle-timeout"), "{stderr}");
    let stderr = run(&["--proxy-auth", "no-colon", "--listen", "127.0.0.1:0"]);
    assert!(
        stderr.contains("--proxy-auth") && stderr.contains("USER:PASS"),
        "{stderr}"
    );

    let broken = tempfile::tempdir().unwrap();
    std::fs::write(broken.path().join("ca.pem"), "not a certificate").unwrap();
    std::fs::write(broken.path().join("ca-key.pem"), "not a key").unwrap();
    // Private, as a key must be: what fails is its content.
    std::fs::set_permissions(
        broken.path().join("ca-key.pem"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let out = proxlet::command()
        .arg("--home")
        .arg(broken.path())
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot load the CA") && stderr.contains("proxlet ca regenerate"),
        "{stderr}"
    );
}

#[test]
fn sigterm_lets_the_in_flight_request_finish() {
    let origin = Origin::http();
    let proxy = Proxlet::start(&[]);
    let url = origin.url("/slow/1500");
    let proxy_url = proxy.url();
    let ca = proxy.ca_path();
    let request = std::thread::spawn(move || {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--noproxy", "", "-x", &proxy_url, "--cacert"])
            .arg(ca)
            .arg(&url)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    });
    assert!(proxy.wait_for_log("", Duration::from_millis(10)));
    std::thread::sleep(Duration::from_millis(500));
    let status = proxy
        .signal_and_wait("TERM", Duration::from_secs(10))
        .expect("proxlet exited");
    assert!(status.success(), "{status}");
    assert_eq!(request.join().unwrap(), "slow");
}

/// Sends `head` one byte every 200 ms until the peer closes; how long that took.
async fn trickle<S>(mut stream: S, head: &[u8]) -> Option<Duration>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let started = std::time::Instant::now();
    for byte in head.iter().cycle().take(200) {
        if stream.write_all(&[*byte]).await.is_err() {
            return Some(started.elapsed());
        }
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            _ => {}
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_heads_are_cut_at_the_client_timeout_also_inside_tunnels() {
    let origin = https_origin();
    let proxy = proxlet_for(&origin, &["--client-timeout", "1s"]);
    let head = b"GET http://127.0.0.1:1/ HTTP/1.1\r\nHost: 127.0.0.1:1\r\nX-Slow: aaaaaaaaaaaaaaaa";

    let plain = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let closed = trickle(plain, head)
        .await
        .expect("the slow client is closed");
    assert!(closed < Duration::from_secs(10), "{closed:?}");

    let tunnel = client::connect_tunnel(proxy.addr, origin.addr).await;
    let config = proxlet_tests::test_ca::client_config(&proxy.ca_path(), &[b"http/1.1"]);
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::IpAddress(origin.addr.ip().into());
    let tls = connector.connect(name, tunnel).await.unwrap();
    let closed = trickle(tls, &head[..])
        .await
        .expect("the slow client in the tunnel is closed");
    assert!(closed < Duration::from_secs(10), "{closed:?}");

    assert!(
        proxy.wait_for_log("--client-timeout", Duration::from_secs(2)),
        "{}",
        proxy.log()
    );
    // Other clients are served throughout.
    assert_eq!(curl(&proxy, &[&origin.url("/bytes/10")]).status, 200);
}

#[test]
fn connections_over_the_limit_are_closed_with_a_warning() {
    let origin = https_origin();
    let proxy = proxlet_for(&origin, &["--max-connections", "2"]);
    let held: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(proxy.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut extra = TcpStream::connect(proxy.addr).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = extra.write_all(b"GET http://127.0.0.1:1/ HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut buf = [0u8; 64];
    assert_eq!(
        extra.read(&mut buf).unwrap_or(0),
        0,
        "the third connection is closed"
    );
    assert!(
        proxy.wait_for_log("connection limit reached (2 open", Duration::from_secs(2)),
        "{}",
        proxy.log()
    );

    drop(held);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(curl(&proxy, &[&origin.url("/bytes/10")]).status, 200);
}

/// A CONNECT tunnel through `proxy` to `target` on a blocking socket, after
/// the proxy's `200`.
fn tunnel(proxy: &Proxlet, target: std::net::SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(proxy.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(
            stream.read(&mut byte).unwrap(),
            1,
            "proxy closed in CONNECT"
        );
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 200"), "{head:?}");
    stream
}

/// Sends `bytes` into an echo tunnel and reads them back.
fn echo_round_trip(stream: &mut TcpStream, bytes: &[u8]) {
    stream.write_all(bytes).unwrap();
    let mut back = vec![0u8; bytes.len()];
    stream.read_exact(&mut back).unwrap();
    assert_eq!(back, bytes);
}

/// Reads until the peer closes (EOF or reset), at most `limit`; how long
/// that took, or `None` if the connection was still open at the limit.
fn time_to_close(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = std::time::Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 4096];
    while started.elapsed() < limit {
        match stream.read(&mut buf) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return Some(started.elapsed()),
        }
    }
    None
}

/// Retries `curl` for up to 10 s until it answers 200.
fn eventually_ok(proxy: &Proxlet, url: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = curl(proxy, &[url]);
        if got.status == 200 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{got:?}\n{}",
            proxy.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn connect_tunnels_count_against_max_connections_until_they_close() {
    let echo = proxlet_tests::raw::echo();
    let origin = Origin::http();
    let proxy = Proxlet::start(&["--max-connections", "3"]);
    let mut tunnels: Vec<TcpStream> = (0..3).map(|_| tunnel(&proxy, echo)).collect();
    for t in &mut tunnels {
        echo_round_trip(t, b"ping");
    }

    let mut extra = TcpStream::connect(proxy.addr).unwrap();
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: x\r\n\r\n",
        origin.url("/bytes/10")
    );
    let _ = extra.write_all(request.as_bytes());
    assert!(
        time_to_close(&mut extra, Duration::from_secs(5)).is_some(),
        "a fourth connection is closed while three tunnels are open"
    );
    assert!(
        proxy.wait_for_log("connection limit reached (3 open", Duration::from_secs(2)),
        "{}",
        proxy.log()
    );
    // The tunnels are unaffected.
    for t in &mut tunnels {
        echo_round_trip(t, b"still here");
    }

    drop(tunnels);
    eventually_ok(&proxy, &origin.url("/bytes/10"));
}

#[test]
fn accept_errors_are_logged_at_a_bounded_rate_and_accepting_recovers() {
    let origin = Origin::http();
    let proxy = Proxlet::start_with_open_file_limit(40, &["--max-connections", "1000"]);
    // More connections than proxlet has file descriptors: accept fails.
    let held: Vec<TcpStream> = (0..60)
        .map(|_| TcpStream::connect(proxy.addr).unwrap())
        .collect();
    assert!(
        proxy.wait_for_log("accept failed", Duration::from_secs(10)),
        "{}",
        proxy.log()
    );
    // The next report comes a second later and counts what happened since.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let reports = loop {
        let log = proxy.log();
        let reports: Vec<String> = log
            .lines()
            .filter(|l| l.contains("accept failed"))
            .map(str::to_owned)
            .collect();
        if reports.len() >= 2 || std::time::Instant::now() > deadline {
            break reports;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(reports.len(), 2, "{}", proxy.log());
    assert!(
        reports[0].contains("Too many open files") && reports[0].contains("ulimit -n"),
        "{}",
        reports[0]
    );
    assert!(
        !reports[1].contains("(1 times since"),
        "failures in between are counted, not logged: {}",
        reports[1]
    );

    drop(held);
    eventually_ok(&proxy, &origin.url("/bytes/10"));
}

#[test]
fn silent_tunnels_and_partial_client_hellos_are_cut_at_the_client_timeout() {
    let origin = https_origin();
    let proxy = proxlet_for(&origin, &["--client-timeout", "1s"]);

    // CONNECT, then not a byte: the TLS origin waits for a ClientHello too.
    let mut silent = tunnel(&proxy, origin.addr);
    let closed = time_to_close(&mut silent, Duration::from_secs(8));
    assert!(closed.is_some(), "a silent tunnel stays open");
    assert!(
        proxy.wait_for_log("(--client-timeout)", Duration::from_secs(2)),
        "{}",
        proxy.log()
    );

    // A TLS record header announcing a ClientHello that never comes.
    let mut partial = tunnel(&proxy, origin.addr);
    partial
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .unwrap();
    let closed =
        time_to_close(&mut partial, Duration::from_secs(8)).expect("a partial ClientHello is cut");
    assert!(closed < Duration::from_secs(5), "{closed:?}");
    assert!(
        proxy.wait_for_log("TLS handshake for", Duration::from_secs(2)),
        "{}",
        proxy.log()
    );
    assert_eq!(curl(&proxy, &[&origin.url("/bytes/10")]).status, 200);
}

#[test]
fn relayed_tunnels_are_closed_when_idle_and_kept_while_bytes_move() {
    let echo = proxlet_tests::raw::echo();
    let proxy = Proxlet::start(&["--idle-timeout", "1s"]);
    let mut busy = tunnel(&proxy, echo);
    let started = std::time::Instant::now();
    // Traffic every 300 ms for 2.4 s, more than twice the idle timeout.
    while started.elapsed() < Duration::from_millis(2400) {
        echo_round_trip(&mut busy, b"tick");
        std::thread::sleep(Duration::from_millis(300));
    }
    echo_round_trip(&mut busy, b"last");
    // Then silence: the tunnel is closed.
    let closed = time_to_close(&mut busy, Duration::from_secs(8))
        .unwrap_or_else(|| panic!("the idle tunnel is still open:\n{}", proxy.log()));
    assert!(closed >= Duration::from_millis(800), "{closed:?}");
    assert!(
        proxy.wait_for_log(
            "without a byte moving (--idle-timeout)",
            Duration::from_secs(2)
        ),
        "{}",
        proxy.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_inside_intercepted_tunnels_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let origin = https_origin();
    let proxy = proxlet_for(&origin, &["--idle-timeout", "1s"]);

    let mut h2 = client::h2_through(proxy.addr, origin.addr, &proxy.ca_path()).await;
    let request = http::Request::get(origin.url("/bytes/10"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = h2.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let deadline = std::time::Instant::now() + Duration::from_secs(8);
    while !h2.is_closed() {
        assert!(
            std::time::Instant::now() < deadline,
            "the idle HTTP/2 connection is still open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // HTTP/1.1 keep-alive inside a tunnel: --client-timeout (30 s) would
    // close it much later.
    let stream = client::connect_tunnel(proxy.addr, origin.addr).await;
    let config = proxlet_tests::test_ca::client_config(&proxy.ca_path(), &[b"http/1.1"]);
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::IpAddress(origin.addr.ip().into());
    let mut tls = connector.connect(name, stream).await.unwrap();
    // The tunnel's own authority: another one would get 421.
    let request = format!("GET /bytes/10 HTTP/1.1\r\nHost: {}\r\n\r\n", origin.addr);
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(8), async {
        let mut buf = [0u8; 1024];
        while let Ok(n) = tls.read(&mut buf).await {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(read.is_ok(), "the idle HTTP/1.1 connection is still open");
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
    assert!(answer.ends_with(&pattern(10)), "{answer:?}");
}

#[test]
fn upstream_timeout_spares_moving_uploads_but_not_silent_origins() {
    let origin = Origin::http();
    let proxy = Proxlet::start(&["--upstream-timeout", "1s", "--idle-timeout", "2s"]);

    // 15 chunks, one every 200 ms: three times the upstream timeout.
    let mut upload = TcpStream::connect(proxy.addr).unwrap();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nContent-Length: 1500\r\nConnection: close\r\n\r\n",
        origin.url("/count")
    );
    upload.write_all(head.as_bytes()).unwrap();
    for _ in 0..15 {
        upload.write_all(&[b'u'; 100]).unwrap();
        std::thread::sleep(Duration::from_millis(200));
    }
    upload
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = Vec::new();
    let _ = upload.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.ends_with("1500\n") || answer.ends_with("1500"),
        "{answer}"
    );

    // An origin that never answers: 504, with or without a request body.
    let silent = proxlet_tests::raw::silent();
    let url = format!("http://{silent}/");
    for args in [vec![url.as_str()], vec!["-d", "small body", url.as_str()]] {
        let got = curl(&proxy, &args);
        assert_eq!(got.status, 504, "{got:?}");
        assert!(got.time_total < 5.0, "{got:?}");
        assert!(
            got.text().contains("did not answer within 1000 ms"),
            "{got:?}"
        );
    }

    // A request body that stops moving is cut by --idle-timeout, not
    // answered 504 by the upstream timeout.
    let mut stalled = TcpStream::connect(proxy.addr).unwrap();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n",
        origin.url("/count")
    );
    stalled.write_all(head.as_bytes()).unwrap();
    stalled.write_all(&[b's'; 100]).unwrap();
    let mut answer = Vec::new();
    stalled
        .set_read_timeout(Some(Duration::from_secs(8)))
        .unwrap();
    let started = std::time::Instant::now();
    let _ = stalled.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(started.elapsed() < Duration::from_secs(6), "{answer}");
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
}

#[test]
fn proxy_auth_is_required_and_never_forwarded() {
    let origin = https_origin();
    let plain = Origin::http();
    let proxy = proxlet_for(
        &origin,
        &["--proxy-auth", "ci:s3:cret", "--proxy-auth", "other:pw"],
    );

    // Plain HTTP without credentials: 407 with the challenge.
    let got = curl(&proxy, &["-i", &plain.url("/echo")]);
    assert_eq!(got.status, 407, "{got:?}");
    assert!(
        got.text()
            .to_ascii_lowercase()
            .contains("proxy-authenticate: basic realm=\"proxlet\""),
        "{}",
        got.text()
    );
    assert_eq!(plain.hits("/echo"), 0);
    let got = curl(&proxy, &["-U", "ci:wrong", &plain.url("/echo")]);
    assert_eq!(got.status, 407, "{got:?}");

    // With credentials: through, and the origin never sees them.
    for user in ["ci:s3:cret", "other:pw"] {
        let got = curl(&proxy, &["-U", user, &plain.url("/echo")]);
        assert_eq!(got.status, 200, "{got:?}");
        assert!(
            !got.text()
                .to_ascii_lowercase()
                .contains("proxy-authorization"),
            "{}",
            got.text()
        );
    }

    // CONNECT without credentials is refused before any tunnel opens.
    let got = curl(&proxy, &[&origin.url("/echo")]);
    assert!(!got.success, "{got:?}");
    assert!(got.stderr.contains("407"), "{got:?}");
    assert_eq!(origin.hits("/echo"), 0);
    // With them, requests inside the tunnel need no more.
    let got = curl(&proxy, &["-U", "ci:s3:cret", &origin.url("/echo")]);
    assert_eq!(got.status, 200, "{got:?}");
    assert!(
        !got.text()
            .to_ascii_lowercase()
            .contains("proxy-authorization"),
        "{}",
        got.text()
    );
    assert!(
        proxy.wait_for_log(" 407 ", Duration::from_secs(2)),
        "{}",
        proxy.log()
    );
}
