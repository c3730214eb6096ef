//! Listener modes (`--mode`): SOCKS5 with intercepted TLS and its
//! username/password authentication, a reverse proxy in front of one
//! origin (a pull-through mirror with the cache plugin, serving offline),
//! several listeners at once, and bad specs refused.

use std::{process::Command, sync::Arc};

use proxlet_tests::{pattern, proxlet::Proxlet, Origin, TestCa};

fn https_origin() -> Origin {
    Origin::https(Arc::new(TestCa::new("modes origin CA")))
}

/// The address a `proxlet listening on PREFIX…` line names.
fn listener(proxlet: &Proxlet, prefix: &str) -> String {
    let log = proxlet.log();
    let line = log
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line in:\n{log}"));
    line.split(' ').next().unwrap().to_owned()
}

/// curl with `args`; (status, body, stderr).
fn curl(args: &[&str]) -> (u16, Vec<u8>, String) {
    proxlet_tests::client::curl_status(Command::new("curl"), args)
}

#[test]
fn socks5_clients_reach_https_origins_through_interception_and_authenticate() {
    let origin = https_origin();
    let ca = origin.ca_pem();
    let proxlet = Proxlet::start(&["--upstream-ca", &ca, "--mode", "socks5@0"]);
    let socks = listener(&proxlet, "proxlet listening on socks5://");
    let ca_path = proxlet.ca_path();
    let cacert = ca_path.to_str().unwrap();
    // By name (the client does not resolve it) and by address; proxlet's
    // certificate, not the origin's.
    let by_name = origin.url("/bytes/2048").replace("127.0.0.1", "localhost");
    let (status, body, err) = curl(&["--socks5-hostname", &socks, "--cacert", cacert, &by_name]);
    assert_eq!((status, body.len()), (200, 2048), "{err}");
    assert_eq!(body, pattern(2048));
    let (status, _, err) = curl(&[
        "--socks5",
        &socks,
        "--cacert",
        cacert,
        &origin.url("/bytes/5"),
    ]);
    assert_eq!(status, 200, "{err}");
    let log = proxlet.log();
    assert!(log.contains(&format!("(socks5) GET {by_name} ")), "{log}");

    // With --proxy-auth: username/password, checked.
    let proxlet = Proxlet::start(&[
        "--upstream-ca",
        &ca,
        "--mode",
        "socks5@0",
        "--proxy-auth",
        "ci:secret",
    ]);
    let socks = listener(&proxlet, "proxlet listening on socks5://");
    let ca_path = proxlet.ca_path();
    let cacert = ca_path.to_str().unwrap();
    let url = origin.url("/bytes/7");
    for bad in [
        format!("socks5h://{socks}"),
        format!("socks5h://ci:wrong@{socks}"),
    ] {
        let (status, _, err) = curl(&["-x", &bad, "--cacert", cacert, &url]);
        assert_eq!(status, 0, "{bad} got through: {err}");
    }
    let good = format!("socks5h://ci:secret@{socks}");
    let (status, body, err) = curl(&["-x", &good, "--cacert", cacert, &url]);
    assert_eq!((status, body), (200, pattern(7)), "{err}");
}

#[test]
fn a_reverse_proxy_mirrors_one_origin_and_serves_it_offline_with_the_cache() {
    let mut origin = https_origin();
    origin.put(
        "/simple/demo/",
        vec![("text/html", b"<a href=demo-1.0.tar.gz>demo</a>".to_vec())],
    );
    let ca = origin.ca_pem();
    let spec = format!("reverse:https://localhost:{}@0", origin.addr.port());
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let proxlet = Proxlet::start_with_env(
        dir.path(),
        &[("PROXLET_CACHE_DIR", cache.display().to_string())],
        &["--upstream-ca", &ca, "--plugin", "cache", "--mode", &spec],
    )
    .unwrap();
    let mirror = listener(&proxlet, "proxlet listening on http://127.0.0.1");
    let mirror = format!("127.0.0.1{mirror}");
    assert!(
        proxlet
            .log()
            .contains(&format!("({})", spec.trim_end_matches("@0"))),
        "{}",
        proxlet.log()
    );

    // A plain request to the mirror is fetched from the origin (Host and
    // all), and stored under the origin's name.
    let url = format!("http://{mirror}/simple/demo/");
    let (status, body, err) = curl(&[&url]);
    assert_eq!(status, 200, "{err}");
    assert_eq!(body, b"<a href=demo-1.0.tar.gz>demo</a>");
    let (status, body, _) = curl(&[&format!("http://{mirror}/bytes/100")]);
    assert_eq!((status, body), (200, pattern(100)));
    assert_eq!(origin.hits("/simple/demo/"), 1);
    let log = proxlet.log();
    let fetched = format!(
        "(reverse) GET https://localhost:{}/simple/demo/ ",
        origin.addr.port()
    );
    assert!(log.contains(&fetched), "{log}");
    // CONNECT is not a reverse proxy's business.
    let (status, _, _) = curl(&[
        "-p",
        "-x",
        &format!("http://{mirror}"),
        &origin.url("/bytes/1"),
    ]);
    assert_ne!(status, 200);

    // Offline: the origin is gone, the mirror still serves what it has.
    origin.stop();
    let (status, body, err) = curl(&[&url]);
    assert_eq!(status, 200, "{err}");
    assert_eq!(body, b"<a href=demo-1.0.tar.gz>demo</a>");
    assert_eq!(origin.hits("/simple/demo/"), 1);
}

#[test]
fn bad_mode_specs_are_refused_with_the_reason() {
    for (spec, says) in [
        ("reverse:ftp://x", "http:// or https://"),
        ("wireguard", "unknown mode"),
        ("upstream:http://127.0.0.1", "port"),
    ] {
        let output = proxlet_tests::proxlet::run(&["--plugin", "none", "--mode", spec]);
        assert!(!output.status.success(), "{spec} was taken");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(says), "{spec}: {stderr}");
    }
    let output = proxlet_tests::proxlet::run(&["--plugin", "none", "--mode", "socks5@0.0.0.0:0"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("--allow-remote"),
        "{stderr}"
    );
}

#[test]
fn pip_installs_from_a_reverse_mirror_of_the_index_then_offline() {
    let (mut origin, _packages) = proxlet_tests::packages::registry("127.0.0.1");
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("proxlet.toml");
    std::fs::write(
        &config,
        "[[plugin]]\nname = \"pypi-slash\"\n[[plugin]]\nname = \"error-links\"\n[[plugin]]\nname = \"cache\"\n",
    )
    .unwrap();
    let cache = work.path().join("cache");
    let ca = origin.ca_pem();
    let spec = format!("reverse:https://127.0.0.1:{}@0", origin.addr.port());
    let proxlet = Proxlet::start_with_home(
        &work.path().join("home"),
        &[
            "--config",
            config.to_str().unwrap(),
            "--cache-dir",
            cache.to_str().unwrap(),
            "--upstream-ca",
            &ca,
            "--mode",
            &spec,
        ],
    )
    .unwrap();
    let mirror = listener(&proxlet, "proxlet listening on http://");
    let mirror = if proxlet.log().contains(&format!("{mirror} (reverse:")) {
        mirror
    } else {
        panic!("the first listener is not the mirror:\n{}", proxlet.log())
    };
    let index = format!("http://{mirror}/simple/");
    let install =
        |target: &std::path::Path| proxlet_tests::packages::pip_install_from(&index, None, target);
    let first = work.path().join("first");
    proxlet_tests::packages::assert_ok("pip through the mirror", &install(&first), &proxlet);
    assert!(first.join("pkg_b/__init__.py").is_file());
    let host = cache.join(format!("127.0.0.1_{}", origin.addr.port()));
    assert!(host.join("packages/pkg_a-1.0-py3-none-any.whl").is_file());

    origin.stop();
    let offline = work.path().join("offline");
    proxlet_tests::packages::assert_ok(
        "pip offline through the mirror",
        &install(&offline),
        &proxlet,
    );
    assert!(offline.join("pkg_a/__init__.py").is_file());
}

#[test]
fn an_upstream_mode_proxy_chains_through_an_authenticated_parent_and_caches() {
    let origin = https_origin();
    let plain = Origin::http();
    let ca = origin.ca_pem();
    // The parent: a second proxlet that wants credentials and relays the
    // origin's TLS untouched, so the first one is the one intercepting.
    let parent = Proxlet::start(&["--proxy-auth", "up:stream", "--ignore-hosts", "127.0.0.1"]);
    let parent_addr = parent.url().trim_start_matches("http://").to_owned();
    let spec = format!("upstream:http://{parent_addr}@0");
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let start = |auth: &str| {
        Proxlet::start_with_home(
            &dir.path().join(format!("home-{auth}")),
            &[
                "--upstream-ca",
                &ca,
                "--plugin",
                "cache",
                "--cache-dir",
                cache.to_str().unwrap(),
                "--mode",
                &spec,
                "--upstream-auth",
                auth,
            ],
        )
        .unwrap()
    };
    let proxlet = start("up:stream");
    let line = format!("(upstream:http://{parent_addr})");
    assert!(proxlet.log().contains(&line), "{}", proxlet.log());
    let chained = listener_of(&proxlet, &line);
    let ca_path = proxlet.ca_path();
    let cacert = ca_path.to_str().unwrap();

    // https: CONNECT through the parent, TLS intercepted here, stored here.
    let url = origin.url("/bytes/3000");
    for _ in 0..2 {
        let (status, body, err) = curl(&["-x", &chained, "--cacert", cacert, &url]);
        assert_eq!(
            (status, body.len()),
            (200, 3000),
            "{err}\n{}",
            proxlet.log()
        );
        assert_eq!(body, pattern(3000));
    }
    assert_eq!(
        origin.hits("/bytes/3000"),
        1,
        "the second came from the cache"
    );
    let host = cache.join(format!("127.0.0.1_{}", origin.addr.port()));
    assert!(
        host.join("bytes/3000").is_file(),
        "not stored under {host:?}"
    );
    let tunnel = format!("CONNECT 127.0.0.1:{}", origin.addr.port());
    assert!(
        parent.wait_for_log(&tunnel, std::time::Duration::from_secs(5)),
        "{}",
        parent.log()
    );

    // http: absolute-form to the parent, with the credentials.
    let (status, body, err) = curl(&["-x", &chained, &plain.url("/bytes/10")]);
    assert_eq!((status, body), (200, pattern(10)), "{err}");
    let fetched = format!("GET {} ", plain.url("/bytes/10"));
    assert!(
        parent.wait_for_log(&fetched, std::time::Duration::from_secs(5)),
        "{}",
        parent.log()
    );

    // Wrong credentials: the parent's 407 becomes a 502 naming it.
    let wrong = start("up:wrong");
    let wrong_url = listener_of(&wrong, &line);
    let wrong_ca = wrong.ca_path();
    let (status, body, _) = curl(&[
        "-x",
        &wrong_url,
        "--cacert",
        wrong_ca.to_str().unwrap(),
        &origin.url("/bytes/4"),
    ]);
    let body = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("requires authentication"), "{body}");
    let (status, body, _) = curl(&["-x", &wrong_url, &plain.url("/bytes/5")]);
    let body = String::from_utf8_lossy(&body).into_owned();
    assert!(
        status == 502 && body.contains("--upstream-auth"),
        "{status} {body}"
    );

    // The parent gone: 502, and never around it to the origin.
    drop(parent);
    let (status, body, _) = curl(&["-x", &chained, "--cacert", cacert, &origin.url("/bytes/6")]);
    let body = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(status, 502, "{body}");
    assert!(
        body.contains(&format!("parent proxy {parent_addr}")),
        "{body}"
    );
    assert_eq!(origin.hits("/bytes/6"), 0);
    let (status, _, _) = curl(&["-x", &chained, &plain.url("/bytes/7")]);
    assert_eq!(status, 502);
    assert_eq!(plain.hits("/bytes/7"), 0);
}

/// `http://ADDR` of the listener whose line ends with `suffix`.
fn listener_of(proxlet: &Proxlet, suffix: &str) -> String {
    let log = proxlet.log();
    let addr = log
        .lines()
        .find_map(|l| {
            l.strip_prefix("proxlet listening on http://")?
                .strip_suffix(&format!(" {suffix}"))
        })
        .unwrap_or_else(|| panic!("no listener {suffix} in:\n{log}"));
    format!("http://{addr}")
}
