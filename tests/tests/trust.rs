//! Trust boundaries, probed as an attacker would: plugins and cache dirs
//! that plant links out of their grant, clients that name another authority
//! than the one fetched, credentials in URLs, fills held by a stalled
//! client, decompression bombs, and limits that must not overflow.

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use proxlet_tests::{config_file, curl, guest, Origin, Proxlet, TestCa};

/// proxlet running the sandbox test plugin with `config` and `extra` lines.
fn sandbox(config_table: &str, extra: &str, args: &[&str]) -> (tempfile::TempDir, Proxlet) {
    let (dir, path) = config_file(&format!(
        "[[plugin]]\nname = \"sandbox\"\npath = {:?}\nconfig = {{ {config_table} }}\n{extra}\n",
        guest("sandbox.wasm")
    ));
    let mut all = vec!["--config", path.to_str().unwrap()];
    all.extend_from_slice(args);
    (dir, Proxlet::start(&all))
}

/// Every file name below `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<String> {
    let mut names = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at).unwrap().flatten() {
            let path = entry.path();
            names.push(path.strip_prefix(dir).unwrap().display().to_string());
            if entry.file_type().unwrap().is_dir() {
                stack.push(path);
            }
        }
    }
    names.sort();
    names
}

/// A grant dir and, beside it, a dir the plugin must never reach.
struct Planted {
    _root: tempfile::TempDir,
    grant: PathBuf,
    outside: PathBuf,
}

const SECRET: &str = "secret-outside-the-grant";

fn planted() -> Planted {
    let root = tempfile::tempdir().unwrap();
    let grant = root.path().join("grant");
    let outside = root.path().join("outside");
    std::fs::create_dir(&grant).unwrap();
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret.txt"), SECRET).unwrap();
    Planted {
        _root: root,
        grant,
        outside,
    }
}

#[test]
fn a_plugin_cannot_serve_store_or_sidecar_through_links_it_planted() {
    let origin = Origin::http();
    let dirs = planted();
    let extra = format!("dirs = {{ \"/data\" = {:?} }}", dirs.grant);
    let (_dir, proxy) = sandbox("mode = \"plant\", target = \"../outside\"", &extra, &[]);

    for path in ["/serve-file", "/serve-below"] {
        let got = curl(&proxy, &[&origin.url(path)]);
        assert!(!got.text().contains(SECRET), "{path} leaked: {got:?}");
        // Refused, fail-open: the flow went on to the origin.
        assert_eq!(got.status, 404, "{path}: {got:?}");
        assert_eq!(origin.hits(path), 1, "{path}");
    }
    assert!(
        proxy.wait_for_log("crosses a symlink", Duration::from_secs(5)),
        "{}",
        proxy.log()
    );
    let refusals = proxy
        .log()
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("plugin sandbox") && l.contains("refused"))
        .count();
    assert!(refusals >= 2, "{}", proxy.log());

    for path in ["/store-below", "/sidecar-below"] {
        let got = curl(&proxy, &[&origin.url(path)]);
        assert_eq!(got.status, 404, "{path}: {got:?}");
    }
    // The store beside the link went through; nothing went through a link.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !dirs.grant.join("ok.txt").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        dirs.grant.join("ok.txt").exists(),
        "{:?}",
        tree(&dirs.grant)
    );
    assert_eq!(tree(&dirs.outside), ["secret.txt"]);
    assert_eq!(
        std::fs::read_to_string(dirs.outside.join("secret.txt")).unwrap(),
        SECRET
    );
}

/// Sends `count` keep-alive GETs for `url` (absolute-form, plain HTTP)
/// through the proxy on one connection and returns each body.
fn keep_alive_bodies(proxy: &Proxlet, url: &str, count: usize) -> Vec<Vec<u8>> {
    let mut stream = TcpStream::connect(proxy.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let request = format!("GET {url} HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
    let mut bodies = Vec::with_capacity(count);
    for _ in 0..count {
        stream.write_all(request.as_bytes()).unwrap();
        let mut length = None;
        loop {
            let mut line = String::new();
            std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse::<usize>().ok();
                }
            }
        }
        let mut body = vec![0; length.expect("a content-length")];
        reader.read_exact(&mut body).unwrap();
        bodies.push(body);
    }
    bodies
}

#[test]
fn a_file_swapped_for_a_link_mid_flight_is_never_served() {
    let origin = Origin::http();
    let dirs = planted();
    std::fs::write(dirs.grant.join("f"), "public").unwrap();
    let extra = format!("dirs = {{ \"/data\" = {:?} }}", dirs.grant);
    let (_dir, proxy) = sandbox("mode = \"serve\"", &extra, &[]);

    // Swap `f` between a regular file and a link to the secret, atomically,
    // as fast as possible, while the plugin keeps answering with it.
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = std::thread::spawn({
        let (stop, grant, outside) = (stop.clone(), dirs.grant.clone(), dirs.outside.clone());
        move || {
            let mut swaps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let link = grant.join("link.tmp");
                let _ = std::fs::remove_file(&link);
                std::os::unix::fs::symlink(outside.join("secret.txt"), &link).unwrap();
                std::fs::rename(&link, grant.join("f")).unwrap();
                std::fs::write(grant.join("file.tmp"), "public").unwrap();
                std::fs::rename(grant.join("file.tmp"), grant.join("f")).unwrap();
                swaps += 1;
            }
            swaps
        }
    });
    let bodies = keep_alive_bodies(&proxy, &origin.url("/files/f"), 3000);
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    assert!(swaps > 100, "the race ran ({swaps} swaps)");
    let leaked = bodies.iter().filter(|b| b == &SECRET.as_bytes()).count();
    let served = bodies.iter().filter(|b| b == &b"public").count();
    assert_eq!(leaked, 0, "the secret was served {leaked} times");
    assert!(served > 0, "the file itself was served");
}

#[test]
fn hand_made_links_in_the_cache_dir_are_not_followed() {
    let ca = Arc::new(TestCa::new("trust test origin CA"));
    let origin = Origin::https(ca.clone());
    origin.put(
        "/d/authorized_keys",
        vec![("text/plain", b"ssh-ed25519 AAAA attacker".to_vec())],
    );
    origin.put("/passwd", vec![("text/plain", b"from the origin".to_vec())]);
    let dirs = planted();
    let cache = dirs.grant.clone();
    let host = cache.join(format!("127.0.0.1_{}", origin.addr.port()));
    std::fs::create_dir_all(&host).unwrap();
    std::os::unix::fs::symlink("../../outside", host.join("d")).unwrap();
    std::os::unix::fs::symlink("../../outside/secret.txt", host.join("passwd")).unwrap();
    let proxy = Proxlet::start(&[
        "--cache-dir",
        cache.to_str().unwrap(),
        "--upstream-ca",
        ca.path().to_str().unwrap(),
        "--plugin",
        "error-links",
        "--plugin",
        "cache",
    ]);

    let keys = curl(&proxy, &[&origin.url("/d/authorized_keys")]);
    assert_eq!(keys.status, 200, "{keys:?}");
    let passwd = curl(&proxy, &[&origin.url("/passwd")]);
    assert!(!passwd.text().contains(SECRET), "{passwd:?}");

    // Whatever the plugins tried, nothing was written outside the cache dir.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(tree(&dirs.outside), ["secret.txt"]);
}

#[test]
fn the_url_fetched_is_the_url_plugins_see_whatever_host_the_client_names() {
    let origin = Origin::http();
    let proxy = Proxlet::start(&["--plugin", "none"]);
    // On the listener the absolute URI rules (RFC 9112 §3.2.2).
    let got = curl(&proxy, &["-H", "Host: attacker.test", &origin.url("/echo")]);
    assert_eq!(got.status, 200, "{got:?}");
    let expected = format!("host: {}", origin.addr);
    assert!(got.text().contains(&expected), "{}", got.text());
    assert!(!got.text().contains("attacker.test"), "{}", got.text());
}

#[test]
fn a_request_in_a_tunnel_naming_another_authority_is_misdirected() {
    let ca = Arc::new(TestCa::new("trust test origin CA"));
    let origin = Origin::https(ca.clone());
    let proxy = Proxlet::start(&[
        "--plugin",
        "none",
        "--upstream-ca",
        ca.path().to_str().unwrap(),
    ]);

    // HTTP/1.1 Host and HTTP/2 :authority (curl sends Host as :authority).
    for version in ["--http1.1", "--http2"] {
        let got = curl(
            &proxy,
            &[version, "-H", "Host: attacker.test", &origin.url("/echo")],
        );
        assert_eq!(got.status, 421, "{version}: {got:?}");
    }
    // The Host of the tunnel itself, with or without the port, is fine.
    let got = curl(
        &proxy,
        &[
            "-H",
            &format!("Host: {}", origin.addr),
            &origin.url("/echo"),
        ],
    );
    assert_eq!(got.status, 200, "{got:?}");
    assert_eq!(origin.hits("/echo"), 1);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        use http_body_util::{BodyExt, Full};
        // HTTP/2 with a `host` field beside a matching `:authority`.
        let mut h2 =
            proxlet_tests::client::h2_through(proxy.addr, origin.addr, &proxy.ca_path()).await;
        let request = http::Request::get(origin.url("/echo"))
            .header("host", "attacker.test")
            .body(Full::new(bytes::Bytes::new()))
            .unwrap();
        let response = h2.send_request(request).await.unwrap();
        assert_eq!(response.status(), 421);
        // An absolute-form HTTP/1.1 target naming another host.
        let stream = proxlet_tests::client::connect_tunnel(proxy.addr, origin.addr).await;
        let config = proxlet_tests::test_ca::client_config(&proxy.ca_path(), &[b"http/1.1"]);
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let name = rustls::pki_types::ServerName::IpAddress(origin.addr.ip().into());
        let tls = connector.connect(name, stream).await.unwrap();
        let (mut h1, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(connection);
        let request = http::Request::get("https://attacker.test/echo")
            .header("host", "attacker.test")
            .body(Full::new(bytes::Bytes::new()))
            .unwrap();
        let response = h1.send_request(request).await.unwrap();
        assert_eq!(response.status(), 421);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert!(
            String::from_utf8_lossy(&body).contains("not to attacker.test"),
            "{body:?}"
        );
    });
    assert_eq!(
        origin.hits("/echo"),
        1,
        "no misdirected request was fetched"
    );
}

#[test]
fn userinfo_never_reaches_the_log_or_a_plugin_without_the_grant() {
    let origin = Origin::http();
    let (_dir, proxy) = sandbox("mode = \"url\"", "", &[]);
    let url = format!("http://user:hunter2@{}/echo", origin.addr);
    let mut stream = TcpStream::connect(proxy.addr).unwrap();
    stream
        .write_all(format!("GET {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains(&format!("http://{}/echo", origin.addr)),
        "{answer}"
    );
    assert!(
        !answer.contains("hunter2"),
        "the plugin saw the password: {answer}"
    );
    assert!(
        proxy.wait_for_log("/echo", Duration::from_secs(5)),
        "{}",
        proxy.log()
    );
    assert!(!proxy.log().contains("hunter2"), "{}", proxy.log());
}

#[test]
fn a_stalled_fill_does_not_hold_other_clients() {
    let origin = Origin::http();
    let cache = tempfile::tempdir().unwrap();
    let proxy = Proxlet::start(&[
        "--cache-dir",
        cache.path().to_str().unwrap(),
        "--plugin",
        "cache",
    ]);
    let url = origin.url("/bytes/67108864");

    // The first client starts the cold fetch, reads the head, stops reading.
    let mut leader = TcpStream::connect(proxy.addr).unwrap();
    leader
        .write_all(format!("GET {url} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    let mut first = [0u8; 4096];
    let n = leader.read(&mut first).unwrap();
    assert!(first[..n].starts_with(b"HTTP/1.1 200"));

    // Another client gets the whole body: it stops waiting once the fill
    // has stored nothing for a while, and fetches itself.
    let got = curl(&proxy, &["--max-time", "60", "-o", "/dev/null", &url]);
    assert_eq!(got.status, 200, "{got:?}");
    assert_eq!(got.size_download, 64 << 20);
    assert!(
        proxy.log().contains("stored nothing for"),
        "{}",
        proxy.log()
    );
    drop(leader);
}

/// `data` gzip-compressed `layers` times.
fn gzip_layers(data: &[u8], layers: usize) -> Vec<u8> {
    let mut out = data.to_vec();
    for _ in 0..layers {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&out).unwrap();
        out = gz.finish().unwrap();
    }
    out
}

#[test]
fn stacked_content_codings_are_refused_not_decoded() {
    let origin = Origin::http();
    let (_dir, proxy) = sandbox("mode = \"upper\"", "", &[]);
    let body = gzip_layers(b"hello", 1500);
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &body).unwrap();
    let coding = vec!["gzip"; 1500].join(", ");
    let got = curl(
        &proxy,
        &[
            "-H",
            &format!("Content-Encoding: {coding}"),
            "--data-binary",
            &format!("@{}", file.path().display()),
            &origin.url("/count"),
        ],
    );
    // Fail-open: the plugin is skipped and the body goes on untouched.
    assert_eq!(got.status, 200, "{got:?}");
    assert_eq!(got.text(), body.len().to_string());
    assert!(
        proxy.log().contains("1500 stacked content codings"),
        "{}",
        proxy.log()
    );
    // Two layers are still decoded for the plugin.
    let two = gzip_layers(b"hello", 2);
    std::fs::write(file.path(), &two).unwrap();
    let got = curl(
        &proxy,
        &[
            "-H",
            "Content-Encoding: gzip, gzip",
            "--data-binary",
            &format!("@{}", file.path().display()),
            &origin.url("/echo"),
        ],
    );
    assert!(got.text().ends_with("HELLO"), "{}", got.text());
}

#[test]
fn a_plugin_delay_is_capped_by_its_limit() {
    let origin = Origin::http();
    let (_dir, path) = config_file(
        "[[plugin]]\nname = \"replace\"\nlimits = { max_delay_ms = 200 }\n\
         config = { rules = [{ path = \"/bytes/*\", delay_ms = 600000 }] }\n",
    );
    let proxy = Proxlet::start(&["--config", path.to_str().unwrap()]);
    let got = curl(&proxy, &["--max-time", "30", &origin.url("/bytes/10")]);
    assert_eq!(got.status, 200, "{got:?}");
    assert!(
        proxy.wait_for_log("replace=delay:200ms", Duration::from_secs(5)),
        "{}",
        proxy.log()
    );
}

#[test]
fn limits_too_large_are_a_clear_error() {
    let (_dir, path) = config_file(&format!(
        "[[plugin]]\nname = \"sandbox\"\npath = {:?}\nlimits = {{ memory_mb = 9223372036854775807 }}\n",
        guest("sandbox.wasm")
    ));
    let home = tempfile::tempdir().unwrap();
    // Bounded: a proxy that starts anyway is killed and reported.
    let started = Proxlet::start_with_home(home.path(), &["--config", path.to_str().unwrap()]);
    let Err(stderr) = started else {
        panic!("proxlet started with limits.memory_mb = i64::MAX")
    };
    assert!(
        stderr.contains("limits.memory_mb must be an integer from 1 to 4096"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn files_stored_from_credentialed_requests_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let origin = Origin::http();
    let data = tempfile::tempdir().unwrap();
    let extra = format!("dirs = {{ \"/data\" = {:?} }}", data.path());
    let (_dir, proxy) = sandbox("mode = \"store\"", &extra, &[]);
    let plain = curl(&proxy, &[&origin.url("/bytes/100")]);
    assert_eq!(plain.status, 200);
    let cookie = curl(
        &proxy,
        &["-H", "Cookie: session=1", &origin.url("/bytes/200")],
    );
    assert_eq!(cookie.status, 200);
    let auth = curl(&proxy, &["-u", "a:b", &origin.url("/bytes/300")]);
    assert_eq!(auth.status, 200);
    let mode = |name: &str| {
        std::fs::metadata(data.path().join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("100"), 0o644);
    assert_eq!(mode("200"), 0o600);
    assert_eq!(mode("300"), 0o600);
}
