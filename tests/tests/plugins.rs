//! The plugin runtime end to end: real components, the real binary, curl.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use proxlet_tests::{config_file, curl, guest, proxlet, Origin, Proxlet};

fn https_origin() -> Origin {
    Origin::https_with_ca("plugin test origin CA")
}

fn sandbox_config(mode: &str, extra: &str) -> (tempfile::TempDir, PathBuf) {
    config_file(&format!(
        "[[plugin]]\nname = \"sandbox\"\npath = {:?}\nconfig = {{ mode = \"{mode}\" }}\n{extra}\n",
        guest("sandbox.wasm")
    ))
}

/// proxlet running the sandbox plugin in `mode`, plus `args`.
fn sandbox_proxy(mode: &str, extra: &str, args: &[&str]) -> (tempfile::TempDir, Proxlet) {
    let (dir, path) = sandbox_config(mode, extra);
    let mut all = vec!["--config", path.to_str().unwrap()];
    all.extend_from_slice(args);
    (dir, Proxlet::start(&all))
}

/// A response's status and its header `name` (lowercase), read with curl -D.
fn status_and_header(proxy: &Proxlet, url: &str, name: &str) -> (u16, Option<String>) {
    let got = curl(proxy, &["-D", "-", "-o", "/dev/null", url]);
    let prefix = format!("{name}: ");
    let header = got
        .text()
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()).map(|v| v.trim().to_owned()));
    (got.status, header)
}

/// The `x-hello` header of a response.
fn hello_header(proxy: &Proxlet, url: &str) -> (u16, Option<String>) {
    status_and_header(proxy, url, "x-hello")
}

#[test]
fn example_plugin_header_appears_over_http_and_intercepted_https() {
    let origin = https_origin();
    let plain = Origin::http();
    let hello = guest("rust_hello.wasm");
    let proxy = Proxlet::start(&[
        "--upstream-ca",
        &origin.ca_pem(),
        "--plugin",
        hello.to_str().unwrap(),
    ]);
    assert_eq!(
        hello_header(&proxy, &origin.url("/bytes/10")),
        (200, Some("world".into()))
    );
    assert_eq!(
        hello_header(&proxy, &plain.url("/bytes/10")),
        (200, Some("world".into()))
    );
    let body = curl(&proxy, &[&origin.url("/bytes/100")]);
    assert_eq!(body.body, proxlet_tests::pattern(100));
    assert!(
        proxy.log().contains("loaded plugin rust_hello"),
        "{}",
        proxy.log()
    );
    assert!(
        proxy.wait_for_log("rust_hello=edit", Duration::from_secs(5)),
        "{}",
        proxy.log()
    );
}

/// Sends requests until `stop`, counting them; every one must succeed.
fn keep_requesting(
    proxy: &Proxlet,
    url: String,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(usize, Vec<String>)> {
    let proxy_url = proxy.url();
    let ca = proxy.ca_path();
    std::thread::spawn(move || {
        let mut failures = Vec::new();
        let mut sent = 0;
        // Bounded: at most 2000 requests, or until told to stop.
        while !stop.load(Ordering::Relaxed) && sent < 2000 {
            let out = std::process::Command::new("curl")
                .args([
                    "-sS",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "-x",
                    &proxy_url,
                    "--cacert",
                ])
                .arg(&ca)
                .arg(&url)
                .output()
                .unwrap();
            sent += 1;
            let code = String::from_utf8_lossy(&out.stdout).into_owned();
            if code != "200" {
                failures.push(format!("{code} {}", String::from_utf8_lossy(&out.stderr)));
            }
        }
        (sent, failures)
    })
}

/// Waits up to `limit` for the header to become `want`; returns the time taken.
fn wait_for_header(proxy: &Proxlet, url: &str, want: &str, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if hello_header(proxy, url).1.as_deref() == Some(want) {
            return Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn replace_by_rename(target: &Path, source: &Path) {
    let tmp = target.with_extension("wasm.swp");
    std::fs::copy(source, &tmp).unwrap();
    std::fs::rename(&tmp, target).unwrap();
}

#[test]
fn plugin_hot_reloads_on_rename_and_in_place_write_and_survives_broken_files() {
    let origin = https_origin();
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("hello.wasm");
    std::fs::copy(guest("rust_hello.wasm"), &plugin).unwrap();
    let proxy = Proxlet::start(&[
        "--upstream-ca",
        &origin.ca_pem(),
        "--plugin",
        plugin.to_str().unwrap(),
    ]);
    let url = origin.url("/bytes/64");
    assert_eq!(hello_header(&proxy, &url).1.as_deref(), Some("world"));

    let stop = Arc::new(AtomicBool::new(false));
    let load = keep_requesting(&proxy, url.clone(), stop.clone());

    // An editor saving by rename.
    replace_by_rename(&plugin, &guest("rust_hello_reloaded.wasm"));
    let took = wait_for_header(&proxy, &url, "reloaded", Duration::from_secs(2));
    assert!(
        took.is_some(),
        "rename did not reload within 2 s:\n{}",
        proxy.log()
    );

    // Writing the file in place.
    std::fs::write(&plugin, std::fs::read(guest("rust_hello.wasm")).unwrap()).unwrap();
    let took = wait_for_header(&proxy, &url, "world", Duration::from_secs(2));
    assert!(
        took.is_some(),
        "in-place write did not reload within 2 s:\n{}",
        proxy.log()
    );

    // Random bytes, then a valid component of another world: both refused,
    // the last good version keeps serving.
    std::fs::write(&plugin, b"\0asm this is not a component at all").unwrap();
    let named = format!("cannot reload plugin hello: {:?}", plugin);
    assert!(
        proxy.wait_for_log(&named, Duration::from_secs(3)),
        "{}",
        proxy.log()
    );
    assert_eq!(hello_header(&proxy, &url).1.as_deref(), Some("world"));
    replace_by_rename(&plugin, &guest("wrong_world.wasm"));
    assert!(
        proxy.wait_for_log(
            "does not fit the proxlet:plugin world",
            Duration::from_secs(3)
        ),
        "{}",
        proxy.log()
    );
    assert_eq!(hello_header(&proxy, &url).1.as_deref(), Some("world"));

    stop.store(true, Ordering::Relaxed);
    let (sent, failures) = load.join().unwrap();
    assert!(sent > 0);
    assert!(
        failures.is_empty(),
        "{} of {sent} requests failed during reloads: {failures:?}",
        failures.len()
    );
    assert!(
        proxy.log().contains("reloaded plugin hello"),
        "{}",
        proxy.log()
    );
}

#[test]
fn endless_loop_is_cut_at_call_ms_and_other_flows_go_on() {
    let origin = Origin::http();
    let (_dir, proxy) = sandbox_proxy(
        "loop",
        "match = { url = \"/slow/\" }\nlimits = { call_ms = 200 }",
        &[],
    );
    let slow_url = origin.url("/slow/1");
    let looping = {
        let proxy_url = proxy.url();
        std::thread::spawn(move || {
            let started = Instant::now();
            let out = std::process::Command::new("curl")
                .args([
                    "-sS",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "-x",
                    &proxy_url,
                    &slow_url,
                ])
                .output()
                .unwrap();
            (
                String::from_utf8_lossy(&out.stdout).into_owned(),
                started.elapsed(),
            )
        })
    };
    // Flows the plugin does not match are served meanwhile.
    let served = Arc::new(AtomicUsize::new(0));
    for _ in 0..5 {
        if curl(&proxy, &[&origin.url("/bytes/10")]).status == 200 {
            served.fetch_add(1, Ordering::Relaxed);
        }
    }
    let (code, took) = looping.join().unwrap();
    assert_eq!(code, "200", "fail-open skips the plugin");
    assert!(took < Duration::from_secs(10), "answered after {took:?}");
    assert_eq!(served.load(Ordering::Relaxed), 5);
    assert!(
        proxy
            .log()
            .contains("plugin sandbox exceeded its time limit of 200 ms"),
        "{}",
        proxy.log()
    );
    // The instance that looped was dropped; a new one loops and is cut again.
    assert_eq!(curl(&proxy, &[&origin.url("/slow/1")]).status, 200);

    let (_dir, closed) = sandbox_proxy(
        "loop",
        "limits = { call_ms = 100 }\non_error = \"fail-closed\"",
        &[],
    );
    let got = curl(&closed, &[&origin.url("/bytes/10")]);
    assert_eq!(got.status, 502);
    assert!(
        got.text()
            .contains("plugin sandbox exceeded its time limit"),
        "{}",
        got.text()
    );
}

#[test]
fn unbounded_allocation_is_trapped_at_memory_mb() {
    let origin = Origin::http();
    let (_dir, proxy) = sandbox_proxy(
        "alloc",
        "limits = { memory_mb = 16, call_ms = 5000 }\non_error = \"fail-closed\"",
        &[],
    );
    let got = curl(&proxy, &[&origin.url("/bytes/10")]);
    assert_eq!(got.status, 502, "{got:?}");
    assert!(
        got.text().contains("exceeded its memory limit of 16 MiB"),
        "{}",
        got.text()
    );
    assert!(proxy.peak_rss_kib() < 200 * 1024);
    // Still serving.
    let got = curl(&proxy, &[&origin.url("/bytes/10")]);
    assert_eq!(got.status, 502);
}

#[test]
fn files_outside_the_granted_dir_are_denied() {
    let origin = Origin::http();
    let data = tempfile::tempdir().unwrap();
    let extra = format!("dirs = {{ \"/data\" = {:?} }}", data.path());
    let (_dir, proxy) = sandbox_proxy("files", &extra, &[]);
    let got = curl(&proxy, &[&origin.url("/anything")]);
    assert_eq!(got.status, 200, "{got:?}");
    let report = got.text();
    assert!(report.contains("/etc/passwd: denied"), "{report}");
    assert!(report.contains("/data/../etc/passwd: denied"), "{report}");
    assert!(
        report.contains("/data/../../etc/passwd: denied"),
        "{report}"
    );
    assert!(report.contains("/data/own.txt: read"), "{report}");
    assert_eq!(std::fs::read(data.path().join("own.txt")).unwrap(), b"mine");
}

#[test]
fn panicking_plugin_is_handled_per_on_error() {
    let origin = Origin::http();
    let (_dir, proxy) = sandbox_proxy("panic", "", &[]);
    let got = curl(&proxy, &[&origin.url("/bytes/10")]);
    assert_eq!(got.status, 200, "fail-open: {got:?}");
    assert!(
        proxy.wait_for_log("boom from the sandbox plugin", Duration::from_secs(3)),
        "{}",
        proxy.log()
    );
    assert!(
        proxy.log().contains("plugin sandbox failed"),
        "{}",
        proxy.log()
    );

    let (_dir, closed) = sandbox_proxy("panic", "on_error = \"fail-closed\"", &[]);
    let got = curl(&closed, &[&origin.url("/bytes/10")]);
    assert_eq!(got.status, 502);
    assert!(
        got.text().contains("plugin sandbox failed"),
        "{}",
        got.text()
    );
}

#[test]
fn credentials_are_hidden_and_locked_without_the_grant() {
    let origin = https_origin();
    let ca = origin.ca_pem();
    let echo = |proxy: &Proxlet| {
        curl(
            proxy,
            &[
                "-H",
                "Authorization: Bearer client",
                "-H",
                "Cookie: a=1",
                &origin.url("/echo"),
            ],
        )
        .text()
    };
    // header, header-all, has-header and headers all hide them, and
    // set-header/append-header cannot touch them.
    let (_dir, plain) = sandbox_proxy("creds", "", &["--upstream-ca", &ca]);
    let seen = echo(&plain);
    assert!(seen.contains("x-saw-credentials: no"), "{seen}");
    assert!(seen.contains("authorization: Bearer client"), "{seen}");
    assert!(seen.contains("cookie: a=1"), "{seen}");
    assert!(!seen.contains("planted"), "{seen}");

    let (_dir, granted) = sandbox_proxy(
        "creds",
        "grants = [\"credentials\"]",
        &["--upstream-ca", &ca],
    );
    let seen = echo(&granted);
    assert!(seen.contains("x-saw-credentials: yes"), "{seen}");
    assert!(seen.contains("authorization: Bearer from-plugin"), "{seen}");
    assert!(seen.contains("planted=1"), "{seen}");
}

#[test]
fn framing_edits_are_ignored_with_a_debug_line() {
    let origin = https_origin();
    let (dir, config) = sandbox_config("framing", "");
    let env = [("RUST_LOG", "info,proxlet::plugin=debug".to_owned())];
    let args = [
        "--config",
        config.to_str().unwrap(),
        "--upstream-ca",
        &origin.ca_pem(),
    ];
    let proxy = Proxlet::start_with_env(dir.path(), &env, &args).unwrap();
    let got = curl(&proxy, &["-D", "-", &origin.url("/bytes/100")]);
    assert_eq!(got.status, 200, "{}", proxy.log());
    let text = got.text().to_ascii_lowercase();
    assert!(text.contains("x-kept: 1"), "{text}");
    assert!(text.contains("content-length: 100"), "{text}");
    assert!(!text.contains("999") && !text.contains("chunked"), "{text}");
    for field in ["content-length", "transfer-encoding"] {
        let line = format!("plugin may not set {field}: ignored");
        assert!(proxy.log().contains(&line), "{line}\n{}", proxy.log());
    }
}

#[test]
fn check_reports_hooks_or_why_a_file_is_not_a_plugin() {
    let run = |path: &Path| proxlet::command().arg("check").arg(path).output().unwrap();
    let good = run(&guest("rust_hello.wasm"));
    assert!(good.status.success(), "{good:?}");
    assert!(
        String::from_utf8_lossy(&good.stdout).contains("hooks: on-response"),
        "{good:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"definitely not wasm").unwrap();
    let bad = run(&junk);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("is not a usable WebAssembly component"),
        "{bad:?}"
    );

    let wrong = run(&guest("wrong_world.wasm"));
    assert!(!wrong.status.success());
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        stderr.contains("does not fit the proxlet:plugin world")
            && stderr.contains("test:wrong/thing"),
        "{stderr}"
    );

    let missing = run(&dir.path().join("missing.wasm"));
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("cannot read plugin"),
        "{missing:?}"
    );
}

#[test]
fn respond_with_file_serves_ranges_head_and_a_gib_with_bounded_memory() {
    let origin = Origin::http();
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("small.txt"), proxlet_tests::pattern(1000)).unwrap();
    let big = std::fs::File::create(data.path().join("big.bin")).unwrap();
    big.set_len(1 << 30).unwrap();
    let extra = format!("dirs = {{ \"/data\" = {:?} }}", data.path());
    let (_dir, proxy) = sandbox_proxy("serve", &extra, &[]);

    let got = curl(
        &proxy,
        &["-D", "/dev/stderr", &origin.url("/files/small.txt")],
    );
    assert_eq!(got.status, 200, "{got:?}");
    assert_eq!(got.body, proxlet_tests::pattern(1000));
    assert!(
        got.stderr.contains("content-type: text/plain"),
        "{}",
        got.stderr
    );
    assert!(
        got.stderr.contains("x-served-by: sandbox"),
        "{}",
        got.stderr
    );
    assert_eq!(
        origin.hits("/files/small.txt"),
        0,
        "the upstream was not contacted"
    );

    let range = curl(&proxy, &["-r", "10-19", &origin.url("/files/small.txt")]);
    assert_eq!(range.status, 206);
    assert_eq!(range.body, &proxlet_tests::pattern(1000)[10..20]);
    let head = curl(&proxy, &["-I", &origin.url("/files/small.txt")]);
    assert_eq!(head.status, 200);
    assert!(
        head.text().contains("content-length: 1000"),
        "{}",
        head.text()
    );

    let missing = curl(&proxy, &[&origin.url("/files/missing.bin")]);
    assert_eq!(
        missing.status, 404,
        "fail-open falls through to the origin: {missing:?}"
    );

    let got = curl(&proxy, &["-o", "/dev/null", &origin.url("/files/big.bin")]);
    assert_eq!(got.size_download, 1 << 30);
    let peak = proxy.peak_rss_kib();
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB");
}

#[test]
fn store_writes_exactly_the_body_and_an_abort_leaves_no_file() {
    use std::io::{Read, Write};
    let origin = Origin::http();
    let data = tempfile::tempdir().unwrap();
    let extra = format!("dirs = {{ \"/data\" = {:?} }}", data.path());
    let (_dir, proxy) = sandbox_proxy("store", &extra, &[]);

    let got = curl(&proxy, &[&origin.url("/bytes/300000")]);
    assert_eq!(got.body, proxlet_tests::pattern(300_000));
    assert_eq!(
        std::fs::read(data.path().join("300000")).unwrap(),
        proxlet_tests::pattern(300_000)
    );
    let chunked = curl(&proxy, &[&origin.url("/chunked/70000")]);
    assert_eq!(chunked.body, proxlet_tests::pattern(70_000));
    assert_eq!(
        std::fs::read(data.path().join("70000")).unwrap(),
        proxlet_tests::pattern(70_000)
    );

    // A client that leaves mid-body.
    let mut stream = std::net::TcpStream::connect(proxy.addr).unwrap();
    let head = format!(
        "GET {} HTTP/1.1\r\nHost: x\r\n\r\n",
        origin.url("/bytes/200000000")
    );
    stream.write_all(head.as_bytes()).unwrap();
    let mut some = [0u8; 65536];
    stream.read_exact(&mut some).unwrap();
    drop(stream);
    assert!(
        proxy.wait_for_log("client-aborted", Duration::from_secs(10)),
        "{}",
        proxy.log()
    );
    std::thread::sleep(Duration::from_millis(200));
    let names: Vec<String> = std::fs::read_dir(data.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.contains("200000000")),
        "partial file left: {names:?}"
    );
}

#[test]
fn body_hooks_see_decoded_bodies_and_replace_them() {
    let origin = https_origin();
    let ca = origin.ca_pem();
    let (_dir, proxy) = sandbox_proxy("teh", "", &["--upstream-ca", &ca]);
    // Without --compressed curl would show the raw bytes: the host must have
    // decoded the gzip body and dropped Content-Encoding.
    let got = curl(&proxy, &["-D", "/dev/stderr", &origin.url("/gzip")]);
    assert_eq!(got.status, 200, "{got:?}");
    let want = proxlet_tests::origin::GZIP_TEXT
        .repeat(100)
        .replace("the", "teh");
    assert_eq!(got.text(), want);
    assert!(!got.stderr.contains("content-encoding"), "{}", got.stderr);
    assert!(
        got.stderr
            .contains(&format!("content-length: {}", want.len())),
        "{}",
        got.stderr
    );

    let (_dir, proxy) = sandbox_proxy(
        "upper",
        "limits = { max_body_mb = 1 }",
        &["--upstream-ca", &ca],
    );
    let got = curl(
        &proxy,
        &["--data-binary", "quiet body", &origin.url("/echo")],
    );
    assert!(got.text().ends_with("\n\nQUIET BODY"), "{}", got.text());
    // Over max_body_mb: 413, and the origin is not bothered.
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big");
    std::fs::write(&big, vec![b'x'; 2 << 20]).unwrap();
    let got = curl(
        &proxy,
        &[
            "--data-binary",
            &format!("@{}", big.display()),
            &origin.url("/count"),
        ],
    );
    assert_eq!(got.status, 413, "{got:?}");
    assert_eq!(origin.hits("/count"), 0);
}

#[test]
fn editing_the_config_swaps_the_chain_and_a_broken_edit_keeps_it() {
    let origin = https_origin();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxlet.toml");
    let hello = |greeting: &str| {
        format!(
            "[[plugin]]\nname = \"hello\"\npath = {:?}\nconfig = {{ greeting = \"{greeting}\" }}\n",
            guest("rust_hello.wasm")
        )
    };
    std::fs::write(&path, hello("first")).unwrap();
    let proxy = Proxlet::start(&[
        "--config",
        path.to_str().unwrap(),
        "--upstream-ca",
        &origin.ca_pem(),
    ]);
    let url = origin.url("/bytes/8");
    assert_eq!(hello_header(&proxy, &url).1.as_deref(), Some("first"));

    std::fs::write(&path, hello("second")).unwrap();
    assert!(
        wait_for_header(&proxy, &url, "second", Duration::from_secs(3)).is_some(),
        "{}",
        proxy.log()
    );

    std::fs::write(&path, format!("{}\nsurprise = 1\n", hello("third"))).unwrap();
    assert!(
        proxy.wait_for_log("cannot reload the plugin chain", Duration::from_secs(3)),
        "{}",
        proxy.log()
    );
    assert!(proxy.log().contains("surprise"), "{}", proxy.log());
    assert_eq!(hello_header(&proxy, &url).1.as_deref(), Some("second"));

    std::fs::write(&path, "# no plugins any more\n").unwrap();
    let started = Instant::now();
    // The new chain is built and swapped in off the request path: seconds
    // when a debug build compiles on a busy machine.
    while hello_header(&proxy, &url).1.is_some() && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(hello_header(&proxy, &url), (200, None));
}

#[test]
fn plugins_get_no_network_and_no_environment() {
    let origin = Origin::http();
    let extra = format!(
        "config = {{ mode = \"net\", target = \"{}\" }}",
        origin.addr
    );
    let (_dir, path) = config_file(&format!(
        "[[plugin]]\nname = \"sandbox\"\npath = {:?}\n{extra}\n",
        guest("sandbox.wasm")
    ));
    let proxy = Proxlet::start(&["--config", path.to_str().unwrap()]);
    let got = curl(&proxy, &[&Origin::http().url("/x")]);
    assert_eq!(got.status, 200, "{got:?}");
    let report = got.text();
    assert!(report.contains("connect: denied"), "{report}");
    assert!(report.contains("env: empty"), "{report}");
}

#[test]
fn a_restart_reuses_compiled_code_from_the_cache() {
    let home = tempfile::tempdir().unwrap();
    let hello = guest("rust_hello.wasm");
    let args = ["--plugin", hello.to_str().unwrap()];
    let first = Proxlet::start_with_home(home.path(), &args).unwrap();
    assert!(
        first.log().contains("(sha256 ") && first.log().contains(", compiled)"),
        "{}",
        first.log()
    );
    drop(first);
    let cached: Vec<_> = std::fs::read_dir(home.path().join("cache"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    let second = Proxlet::start_with_home(home.path(), &args).unwrap();
    assert!(
        second.log().contains("compiled code from cache"),
        "{}",
        second.log()
    );
}

#[test]
fn an_edited_plugin_reuses_the_code_of_its_unchanged_functions_and_serves_the_edit() {
    let origin = https_origin();
    let home = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("hello.wasm");
    std::fs::copy(guest("rust_hello.wasm"), &plugin).unwrap();
    let env = [("RUST_LOG", "info,proxlet::plugin::engine=debug".to_owned())];
    let ca = origin.ca_pem();
    let args = ["--upstream-ca", &ca, "--plugin", plugin.to_str().unwrap()];
    let proxy = Proxlet::start_with_env(home.path(), &env, &args).unwrap();
    let url = origin.url("/bytes/8");
    assert_eq!(hello_header(&proxy, &url).1.as_deref(), Some("world"));

    replace_by_rename(&plugin, &guest("rust_hello_reloaded.wasm"));
    assert!(
        wait_for_header(&proxy, &url, "reloaded", Duration::from_secs(60)).is_some(),
        "{}",
        proxy.log()
    );
    let log = proxy.log();
    let reuse = log
        .lines()
        .filter_map(|line| line.split("reusing the code of ").nth(1))
        .next_back()
        .unwrap_or_else(|| panic!("no compile line:\n{log}"));
    let (reused, total) = reuse
        .split_once(" of ")
        .map(|(r, t)| (r.parse::<u64>().unwrap(), t.trim_end_matches(" functions")))
        .unwrap();
    let total: u64 = total.split(' ').next().unwrap().parse().unwrap();
    assert!(reused > 0 && reused < total, "{reuse}");

    // The function code is kept on disk, private, for the next process.
    let functions = home.path().join("cache").join("functions");
    let packs: Vec<_> = std::fs::read_dir(&functions)
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    assert!(!packs.is_empty());
    for pack in packs {
        let mode = pack.metadata().unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{:?}", pack.path());
    }
}

#[test]
fn a_plugin_dir_loads_new_files_reloads_changed_ones_and_unloads_deleted_ones() {
    let origin = Origin::http();
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    let proxy = Proxlet::start(&[
        "--plugin",
        "none",
        "--plugin-dir",
        plugins.to_str().unwrap(),
    ]);
    let url = origin.url("/bytes/8");
    assert_eq!(hello_header(&proxy, &url), (200, None));

    let file = plugins.join("hello.wasm");
    replace_by_rename(&file, &guest("rust_hello.wasm"));
    let limit = Duration::from_secs(10);
    assert!(
        wait_for_header(&proxy, &url, "world", limit).is_some(),
        "{}",
        proxy.log()
    );

    replace_by_rename(&file, &guest("rust_hello_reloaded.wasm"));
    assert!(
        wait_for_header(&proxy, &url, "reloaded", limit).is_some(),
        "{}",
        proxy.log()
    );

    // A broken file is refused with a message; the chain keeps serving.
    std::fs::write(plugins.join("broken.wasm"), b"not a component").unwrap();
    assert!(proxy.wait_for_log("broken.wasm", limit), "{}", proxy.log());
    assert_eq!(hello_header(&proxy, &url).1.as_deref(), Some("reloaded"));
    std::fs::remove_file(plugins.join("broken.wasm")).unwrap();

    std::fs::remove_file(&file).unwrap();
    let started = Instant::now();
    while hello_header(&proxy, &url).1.is_some() && started.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(hello_header(&proxy, &url), (200, None), "{}", proxy.log());
}

/// The lines of `log` that contain `needle`.
fn lines_with<'a>(log: &'a str, needle: &str) -> Vec<&'a str> {
    log.lines().filter(|l| l.contains(needle)).collect()
}

#[test]
fn an_uncached_large_plugin_serves_baseline_code_first_then_optimised_code() {
    let origin = https_origin();
    let home = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("hello.wasm");
    std::fs::copy(guest("rust_hello.wasm"), &plugin).unwrap();
    // Every component counts as large: the small test plugin goes through
    // Winch as an 18 MB Python one does.
    let env = [("PROXLET_WINCH_MIN_BYTES", "0".to_owned())];
    let ca = origin.ca_pem();
    let args = ["--upstream-ca", &ca, "--plugin", plugin.to_str().unwrap()];
    let proxy = Proxlet::start_with_env(home.path(), &env, &args).unwrap();
    let url = origin.url("/bytes/8");
    let optimised = "plugin hello: optimised code in use (";
    let limit = Duration::from_secs(60);

    // First load: nothing cached, so Winch's code serves, then cranelift's.
    let log = proxy.log();
    let loaded = lines_with(&log, "loaded plugin hello from");
    assert_eq!(loaded.len(), 1, "{log}");
    assert!(
        loaded[0].contains(", baseline compiler; optimising) in "),
        "{log}"
    );
    assert_eq!(hello_header(&proxy, &url).1.as_deref(), Some("world"));
    assert!(proxy.wait_for_log(optimised, limit), "{}", proxy.log());
    assert_eq!(hello_header(&proxy, &url).1.as_deref(), Some("world"));

    // An edit: the new version serves at once with Winch's code, then with
    // cranelift's; each step answers with the new version.
    replace_by_rename(&plugin, &guest("rust_hello_reloaded.wasm"));
    assert!(
        proxy.wait_for_log("reloaded plugin hello from", limit),
        "{}",
        proxy.log()
    );
    assert_eq!(hello_header(&proxy, &url).1.as_deref(), Some("reloaded"));
    let twice = || lines_with(&proxy.log(), optimised).len() == 2;
    assert!(proxlet_tests::wait_until(limit, twice), "{}", proxy.log());
    assert_eq!(hello_header(&proxy, &url).1.as_deref(), Some("reloaded"));
    let log = proxy.log();
    let reloaded = lines_with(&log, "reloaded plugin hello from");
    assert_eq!(reloaded.len(), 1, "one reload for the one edit:\n{log}");
    assert!(
        reloaded[0].contains(", baseline compiler; optimising) in "),
        "{log}"
    );
    let at = |needle: &str| log.rfind(needle).unwrap();
    assert!(at("reloaded plugin hello from") < at(optimised), "{log}");

    // Cranelift's code of both versions went to the cache: going back to
    // the first is a cached load, with no Winch step.
    let cached = std::fs::read_dir(home.path().join("cache"))
        .unwrap()
        .filter(|e| {
            let path = e.as_ref().unwrap().path();
            path.extension().is_some_and(|e| e == "cwasm")
        })
        .count();
    assert_eq!(cached, 2, "{log}");
    replace_by_rename(&plugin, &guest("rust_hello.wasm"));
    assert!(
        wait_for_header(&proxy, &url, "world", limit).is_some(),
        "{}",
        proxy.log()
    );
    let log = proxy.log();
    let reloaded = lines_with(&log, "reloaded plugin hello from");
    assert_eq!(reloaded.len(), 2, "{log}");
    assert!(reloaded[1].contains("compiled code from cache"), "{log}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(lines_with(&proxy.log(), optimised).len(), 2);
}

/// proxlet running the stdio guest (no filesystem or socket imports) in `mode`.
fn stdio_proxy(mode: &str) -> (tempfile::TempDir, Proxlet) {
    let (dir, path) = config_file(&format!(
        "[[plugin]]\nname = \"stdio\"\npath = {:?}\nconfig = {{ mode = \"{mode}\" }}\n",
        guest("stdio.wasm")
    ));
    let proxy = Proxlet::start(&["--config", path.to_str().unwrap()]);
    (dir, proxy)
}

/// The `x-stdio` header of a response and its status.
fn stdio_header(proxy: &Proxlet, url: &str) -> (u16, Option<String>) {
    status_and_header(proxy, url, "x-stdio")
}

#[test]
fn a_plugin_without_file_or_socket_imports_is_called_directly_and_keeps_its_stderr() {
    let origin = Origin::http();
    let (_dir, proxy) = stdio_proxy("stderr");
    assert!(
        proxy.log().contains("hooks called directly"),
        "the load line says how hooks are called:\n{}",
        proxy.log()
    );
    let url = origin.url("/bytes/10");
    for _ in 0..3 {
        assert_eq!(stdio_header(&proxy, &url), (200, Some("stderr".into())));
    }
    // What the guest wrote to stderr from both hooks reached proxlet's.
    assert!(
        proxy.wait_for_log(&format!("stdio plugin saw {url}"), Duration::from_secs(3)),
        "{}",
        proxy.log()
    );
    assert!(proxy.log().contains("stdio plugin got status 200"));

    // A plugin with filesystem imports keeps the async calls.
    let (_dir, sandbox) = sandbox_proxy("url", "", &[]);
    assert!(
        sandbox.log().contains("loaded plugin sandbox")
            && !sandbox.log().contains("called directly"),
        "{}",
        sandbox.log()
    );
}

#[test]
fn a_directly_called_plugin_that_blocks_or_panics_fails_alone() {
    let origin = Origin::http();
    let url = origin.url("/bytes/10");
    // A sleep in a hook would hold the flow's worker: the call traps
    // instead, the flow goes on (fail-open), and so does the next.
    let (_dir, sleeper) = stdio_proxy("sleep");
    for _ in 0..2 {
        assert_eq!(stdio_header(&sleeper, &url).0, 200, "{}", sleeper.log());
    }
    assert!(
        sleeper.wait_for_log("hooks must not block", Duration::from_secs(3)),
        "{}",
        sleeper.log()
    );
    // A panic: its message reaches the log, the proxy keeps serving.
    let (_dir, panicker) = stdio_proxy("panic");
    for _ in 0..2 {
        assert_eq!(stdio_header(&panicker, &url).0, 200);
    }
    assert!(
        panicker.wait_for_log("boom from the stdio plugin", Duration::from_secs(3)),
        "{}",
        panicker.log()
    );
    assert!(panicker.log().contains("plugin stdio failed"));
}
