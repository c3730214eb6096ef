//! Replay: `--server-replay` answering real clients (pip, curl) from
//! recordings made through proxlet, with the origin stopped or changed, and
//! `proxlet replay` re-sending recorded requests and naming what differs.

use std::{
    path::{Path, PathBuf},
    process::Output,
    time::Duration,
};

use proxlet_tests::{
    curl,
    packages::{assert_ok, pip_install, registry},
    Origin, Proxlet,
};

/// Runs `clients` through a proxlet saving flows to `file`, then stops it
/// (SIGTERM writes out what is queued) and checks `count` flows were saved.
fn record(file: &Path, args: &[&str], count: usize, clients: impl FnOnce(&Proxlet)) {
    let mut all = vec!["--save", file.to_str().unwrap()];
    all.extend_from_slice(args);
    let proxy = Proxlet::start(&all);
    clients(&proxy);
    let log = proxy.log();
    let status = proxy
        .signal_and_wait("TERM", Duration::from_secs(30))
        .expect("proxlet stops on SIGTERM");
    assert!(status.success(), "recording proxlet failed: {log}");
    let listed = proxlet(&["flows", file.to_str().unwrap()]);
    let lines = String::from_utf8_lossy(&listed.stdout).lines().count();
    assert_eq!(lines, count, "flows saved:\n{}", show(&listed));
}

use proxlet_tests::proxlet::run as proxlet;

fn show(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn https_origin() -> Origin {
    Origin::https_with_ca("replay origin CA")
}

#[test]
fn server_replay_answers_pip_with_the_origin_stopped() {
    let (mut origin, _packages) = registry("127.0.0.1");
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("pip.flows");
    let ca = origin.ca_pem();
    // pip asks for two index pages and two wheels.
    record(&file, &["--upstream-ca", &ca], 4, |proxy| {
        let output = pip_install(proxy, &origin, &work.path().join("recorded"));
        assert_ok("pip install while recording", &output, proxy);
    });
    let wheel = "/packages/pkg_a-1.0-py3-none-any.whl";
    assert_eq!(origin.hits(wheel), 1);
    origin.stop();

    // Unmatched requests would get 404: pip must not need any.
    let proxy = Proxlet::start(&[
        "--server-replay",
        file.to_str().unwrap(),
        "--server-replay-extra",
        "404",
    ]);
    let target = work.path().join("replayed");
    let output = pip_install(&proxy, &origin, &target);
    assert_ok("pip install from the recording", &output, &proxy);
    assert!(target.join("pkg_a/__init__.py").is_file());
    assert!(target.join("pkg_b/__init__.py").is_file());
    assert_eq!(origin.hits(wheel), 1, "the stopped origin was not asked");
    let log = proxy.log();
    assert_eq!(log.matches("server-replay").count(), 4, "{log}");
    assert!(log.contains("server replay: 4 recorded responses"), "{log}");
}

/// An HTTP origin whose `/doc` says `recorded`, a recording of one GET of it
/// and of `/bytes/7`, then `/doc` changed to say `live`: a replayed
/// response says `recorded`, a forwarded one `live`.
fn recorded_doc() -> (Origin, tempfile::TempDir, PathBuf) {
    let origin = Origin::http();
    origin.put("/doc", vec![("text/plain", b"recorded".to_vec())]);
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("doc.flows");
    record(&file, &[], 2, |proxy| {
        assert_eq!(curl(proxy, &[&origin.url("/doc")]).text(), "recorded");
        assert_eq!(curl(proxy, &[&origin.url("/bytes/7")]).status, 200);
    });
    origin.put("/doc", vec![("text/plain", b"live".to_vec())]);
    (origin, work, file)
}

fn replaying(file: &Path, args: &[&str]) -> Proxlet {
    let mut all = vec!["--server-replay", file.to_str().unwrap()];
    all.extend_from_slice(args);
    Proxlet::start(&all)
}

#[test]
fn extra_status_answers_unrecorded_and_used_up_requests() {
    let (origin, _work, file) = recorded_doc();
    let proxy = replaying(&file, &["--server-replay-extra", "404"]);

    let first = curl(&proxy, &[&origin.url("/doc")]);
    assert_eq!((first.status, first.text().as_str()), (200, "recorded"));
    // Consumed: the one recording has answered.
    let again = curl(&proxy, &[&origin.url("/doc")]);
    assert_eq!(again.status, 404, "{}", again.text());
    assert!(again.text().contains("used up"), "{}", again.text());
    let unrecorded = curl(&proxy, &[&origin.url("/bytes/9")]);
    assert_eq!(unrecorded.status, 404, "{}", unrecorded.text());
    assert!(unrecorded.text().contains("no recording"));
    // Another query string is another request (mitmproxy's key has it).
    assert_eq!(curl(&proxy, &[&origin.url("/bytes/7?x=1")]).status, 404);

    assert_eq!(
        origin.hits("/doc"),
        1,
        "only the recording reached the origin"
    );
    assert_eq!(origin.hits("/bytes/9"), 0);
    let log = proxy.log();
    assert!(
        log.contains(" 200 8B") && log.contains("server-replay"),
        "{log}"
    );
}

#[test]
fn reuse_answers_the_same_request_every_time() {
    let (origin, _work, file) = recorded_doc();
    let proxy = replaying(
        &file,
        &["--server-replay-reuse", "--server-replay-extra", "404"],
    );
    for _ in 0..3 {
        let got = curl(&proxy, &[&origin.url("/doc")]);
        assert_eq!((got.status, got.text().as_str()), (200, "recorded"));
    }
    let bytes = curl(&proxy, &[&origin.url("/bytes/7")]);
    assert_eq!(bytes.body, proxlet_tests::pattern(7));
    assert_eq!(origin.hits("/doc"), 1);
    assert_eq!(origin.hits("/bytes/7"), 1);
}

#[test]
fn forward_sends_unrecorded_and_used_up_requests_to_the_origin() {
    let (origin, _work, file) = recorded_doc();
    // `forward` is the default.
    let proxy = replaying(&file, &[]);
    assert_eq!(curl(&proxy, &[&origin.url("/doc")]).text(), "recorded");
    assert_eq!(origin.hits("/doc"), 1);
    assert_eq!(curl(&proxy, &[&origin.url("/doc")]).text(), "live");
    assert_eq!(origin.hits("/doc"), 2);
    let unrecorded = curl(&proxy, &[&origin.url("/bytes/9")]);
    assert_eq!(unrecorded.body, proxlet_tests::pattern(9));
    assert_eq!(origin.hits("/bytes/9"), 1);
}

#[test]
fn request_bodies_pick_the_recording_and_unmatched_ones_reach_the_origin_whole() {
    let origin = Origin::http();
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("post.flows");
    let url = origin.url("/count");
    record(&file, &[], 2, |proxy| {
        assert_eq!(curl(proxy, &["--data-binary", "abc", &url]).text(), "3");
        assert_eq!(curl(proxy, &["--data-binary", "abcdef", &url]).text(), "6");
    });
    assert_eq!(origin.hits("/count"), 2);
    let proxy = replaying(&file, &["--server-replay-reuse"]);
    assert_eq!(curl(&proxy, &["--data-binary", "abcdef", &url]).text(), "6");
    assert_eq!(curl(&proxy, &["--data-binary", "abc", &url]).text(), "3");
    assert_eq!(origin.hits("/count"), 2, "both answered from the recording");
    // Another body of a recorded length, and one longer than any recorded
    // body (not read whole), are forwarded intact.
    assert_eq!(curl(&proxy, &["--data-binary", "xyz", &url]).text(), "3");
    let big = work.path().join("big");
    std::fs::write(&big, proxlet_tests::pattern(300_000)).unwrap();
    let upload = format!("@{}", big.display());
    assert_eq!(
        curl(&proxy, &["--data-binary", &upload, &url]).text(),
        "300000"
    );
    assert_eq!(origin.hits("/count"), 4);
}

#[test]
fn kill_closes_the_connection_without_a_response() {
    let (origin, work, file) = recorded_doc();
    let saved = work.path().join("killed.flows");
    let proxy = replaying(
        &file,
        &[
            "--server-replay-extra",
            "kill",
            "--save",
            saved.to_str().unwrap(),
        ],
    );
    let killed = curl(&proxy, &[&origin.url("/bytes/9")]);
    assert!(!killed.success, "{killed:?}");
    assert_eq!(killed.status, 0, "{killed:?}");
    assert!(
        killed.stderr.contains("Empty reply from server"),
        "{}",
        killed.stderr
    );
    assert_eq!(origin.hits("/bytes/9"), 0);
    // The proxy goes on serving; the recording still answers.
    assert_eq!(curl(&proxy, &[&origin.url("/doc")]).text(), "recorded");
    assert!(
        proxy.log().contains("killed: server-replay"),
        "{}",
        proxy.log()
    );
    // Both flows are saved: the killed one without a response.
    proxy
        .signal_and_wait("TERM", Duration::from_secs(30))
        .expect("proxlet stops on SIGTERM");
    let listed = proxlet(&["flows", saved.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&listed.stdout).into_owned();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", show(&listed));
    assert!(
        lines[0].contains("/bytes/9 -") && lines[0].contains("killed by server replay"),
        "{stdout}"
    );
    assert!(
        lines[1].contains("/doc 200 8B") && lines[1].contains("server-replay"),
        "{stdout}"
    );
}

#[test]
fn https_replay_works_with_the_origin_unreachable_and_plugins_see_it() {
    let origin = https_origin();
    let ca = origin.ca_pem();
    let url = origin.url("/gzip");
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("https.flows");
    record(&file, &["--upstream-ca", &ca], 1, |proxy| {
        let got = curl(proxy, &["--compressed", &url]);
        assert_eq!(got.text(), proxlet_tests::origin::GZIP_TEXT.repeat(100));
    });
    drop(origin);

    let hello = proxlet_tests::guest("rust_hello.wasm");
    let proxy = replaying(
        &file,
        &[
            "--server-replay-extra",
            "404",
            "--plugin",
            hello.to_str().unwrap(),
        ],
    );
    // The recorded gzip bytes, served as recorded: curl decodes them.
    let replayed = curl(&proxy, &["--compressed", "-D", "-", &url]);
    let text = replayed.text();
    // The CONNECT response's head comes first, then the response's.
    let (head, body) = text.rsplit_once("\r\n\r\n").unwrap_or_default();
    assert_eq!(replayed.status, 200, "{text}");
    assert_eq!(body, proxlet_tests::origin::GZIP_TEXT.repeat(100));
    let head = head.to_ascii_lowercase();
    assert!(head.contains("content-encoding: gzip"), "{head}");
    // on-response plugins run on replayed responses.
    assert!(head.contains("x-hello: world"), "{head}");
    assert!(proxy.log().contains("server-replay"), "{}", proxy.log());
}

#[test]
fn client_replay_of_a_hundred_requests_names_the_one_that_changed() {
    let origin = https_origin();
    for i in 0..100 {
        origin.put(
            &format!("/doc/{i}"),
            vec![("text/plain", format!("document {i}\n").into_bytes())],
        );
    }
    let ca = origin.ca_pem();
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("hundred.flows");
    record(&file, &["--upstream-ca", &ca], 100, |proxy| {
        // One curl, one connection, 100 requests in order ([0-99] globbing).
        let out = work.path().join("doc_#1");
        let got = std::process::Command::new("curl")
            .args(["-sS", "--fail", "--max-time", "120", "-x", &proxy.url()])
            .arg("--cacert")
            .arg(proxy.ca_path())
            .arg("-o")
            .arg(&out)
            .arg(origin.url("/doc/[0-99]"))
            .env_remove("https_proxy")
            .env_remove("HTTPS_PROXY")
            .env_remove("all_proxy")
            .env_remove("ALL_PROXY")
            .output()
            .expect("curl is installed");
        assert!(got.status.success(), "{}", show(&got));
    });
    let replay = |filter: &[&str]| {
        let mut args = vec!["replay", file.to_str().unwrap(), "--upstream-ca", &ca];
        args.extend_from_slice(filter);
        proxlet(&args)
    };

    let same = replay(&[]);
    let stdout = String::from_utf8_lossy(&same.stdout).into_owned();
    assert_eq!(same.status.code(), Some(0), "{}", show(&same));
    assert_eq!(stdout.lines().count(), 100, "{}", show(&same));
    assert!(!stdout.contains("differs"), "{}", show(&same));
    let doc_7 = format!("GET {} 200 11B", origin.url("/doc/7"));
    assert!(stdout.lines().any(|l| l.ends_with(&doc_7)), "{stdout}");
    assert!(
        String::from_utf8_lossy(&same.stderr).contains("100 replayed, 0 differ"),
        "{}",
        show(&same)
    );

    origin.put("/doc/42", vec![("text/plain", b"gone\n".to_vec())]);
    let changed = replay(&[]);
    let stdout = String::from_utf8_lossy(&changed.stdout).into_owned();
    assert_eq!(changed.status.code(), Some(1), "{}", show(&changed));
    let differing: Vec<&str> = stdout.lines().filter(|l| l.contains("differs")).collect();
    let expected = format!("GET {} differs 200 → 200, 12B → 5B", origin.url("/doc/42"));
    assert_eq!(differing.len(), 1, "{stdout}");
    assert!(differing[0].ends_with(&expected), "{stdout}");
    assert!(
        String::from_utf8_lossy(&changed.stderr).contains("1 of the replayed responses differ"),
        "{}",
        show(&changed)
    );
    assert_eq!(origin.hits("/doc/42"), 3);

    // A filter picks flows; the unchanged ones still agree.
    let filtered = replay(&["~u /doc/1"]);
    let stdout = String::from_utf8_lossy(&filtered.stdout).into_owned();
    assert_eq!(filtered.status.code(), Some(0), "{}", show(&filtered));
    // /doc/1 and /doc/10 … /doc/19.
    assert_eq!(stdout.lines().count(), 11, "{stdout}");
}

#[test]
fn client_replay_counts_an_unreachable_origin_as_differing() {
    let mut origin = Origin::http();
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("gone.flows");
    record(&file, &[], 1, |proxy| {
        assert_eq!(curl(proxy, &[&origin.url("/bytes/3")]).status, 200);
    });
    origin.stop();
    let output = proxlet(&["replay", file.to_str().unwrap(), "--upstream-timeout", "5s"]);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(output.status.code(), Some(1), "{}", show(&output));
    assert!(
        stdout.contains("differs 200 → error: connection to") && stdout.contains("refused"),
        "{}",
        show(&output)
    );
}

#[test]
fn a_missing_recording_stops_start_up_with_the_reason() {
    let work = tempfile::tempdir().unwrap();
    let missing = work.path().join("missing.flows");
    let error =
        Proxlet::start_with_home(work.path(), &["--server-replay", missing.to_str().unwrap()])
            .err()
            .expect("proxlet refuses to start");
    assert!(
        error.contains("--server-replay") && error.contains("missing.flows"),
        "{error}"
    );
}

#[test]
fn a_recording_cut_short_is_not_served_and_the_log_says_why() {
    let origin = Origin::http();
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("cut.flows");
    record(&file, &["--flow-body-max", "1K"], 2, |proxy| {
        assert_eq!(
            curl(proxy, &[&origin.url("/bytes/5000")]).size_download,
            5000
        );
        assert_eq!(curl(proxy, &[&origin.url("/bytes/500")]).size_download, 500);
    });
    let proxy = replaying(&file, &["--server-replay-extra", "404"]);
    assert_eq!(curl(&proxy, &[&origin.url("/bytes/5000")]).status, 404);
    let whole = curl(&proxy, &[&origin.url("/bytes/500")]);
    assert_eq!(whole.body, proxlet_tests::pattern(500));
    let log = proxy.log();
    assert!(
        log.contains("not using") && log.contains("1024 of 5000 bytes"),
        "{log}"
    );
}
