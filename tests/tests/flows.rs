//! Flow capture through the real binary: `--save` files listed, filtered and
//! shown by `proxlet flows`, bodies bounded, appending, saving filters,
//! plugin decisions, and a proxy killed mid-capture.

use std::{path::Path, process::Output, sync::Arc, time::Duration};

use proxlet_tests::{
    curl,
    packages::{assert_ok, pip_install, registry},
    wait_until, Origin, Proxlet, TestCa,
};

/// `proxlet flows ARGS`, which must succeed.
fn flows(args: &[&str]) -> String {
    let output = flows_output(args);
    assert!(
        output.status.success(),
        "proxlet flows {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn flows_output(args: &[&str]) -> Output {
    let all: Vec<&str> = ["flows"].iter().chain(args).copied().collect();
    proxlet_tests::proxlet::run(&all)
}

/// The listing of `file` once it holds `count` flows (waiting up to 30 s:
/// the file is written by the proxy's save thread).
fn wait_for_flows(file: &Path, count: usize) -> Vec<String> {
    let mut lines = Vec::new();
    wait_until(Duration::from_secs(30), || {
        if file.exists() {
            lines = flows(&[file.to_str().unwrap()])
                .lines()
                .map(str::to_owned)
                .collect();
        }
        lines.len() >= count
    });
    lines
}

fn id_of(line: &str) -> &str {
    line.split_whitespace()
        .next()
        .unwrap()
        .trim_start_matches('#')
}

#[test]
fn pip_install_with_save_lists_every_request_and_filters_the_index_pages() {
    let (origin, packages) = registry("127.0.0.1");
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("pip.flows");
    let proxy = Proxlet::start(&[
        "--plugin",
        "none",
        "--save",
        file.to_str().unwrap(),
        "--upstream-ca",
        &origin.ca_pem(),
    ]);
    assert_ok(
        "pip install",
        &pip_install(&proxy, &origin, &work.path().join("target")),
        &proxy,
    );
    let index_a = "/simple/pkg-a/";
    let wheel_a = "/packages/pkg_a-1.0-py3-none-any.whl";
    let paths = [
        index_a,
        "/simple/pkg-b/",
        wheel_a,
        "/packages/pkg_b-1.0-py3-none-any.whl",
    ];
    // Every request pip made has an access-log line (CONNECT aside).
    let log = proxy.log();
    let made = log
        .lines()
        .filter(|l| l.contains("proxlet::access") && !l.contains(" CONNECT "))
        .count();
    assert!(made >= 4, "pip made {made} requests:\n{log}");
    let listing = wait_for_flows(&file, made);
    assert_eq!(listing.len(), made, "one flow per request:\n{listing:#?}");
    for path in paths {
        let url = origin.url(path);
        let n = listing.iter().filter(|l| l.contains(&url)).count();
        assert_eq!(n, origin.hits(path), "{path} in\n{listing:#?}");
    }

    // The index pages, exactly.
    let file_arg = file.to_str().unwrap();
    let pages = flows(&[file_arg, "~u /simple/ & ~c 200"]);
    let pages: Vec<&str> = pages.lines().collect();
    assert_eq!(
        pages.len(),
        origin.hits(index_a) + origin.hits("/simple/pkg-b/"),
        "{pages:#?}"
    );
    assert!(pages
        .iter()
        .all(|l| l.contains("/simple/") && l.contains(" 200 ")));

    // The wheel in full, with its true size.
    let wheel = listing.iter().find(|l| l.contains(wheel_a)).unwrap();
    let shown = flows(&[file_arg, "--show", id_of(wheel)]);
    let manifest = std::fs::read_to_string(packages.path().join("manifest")).unwrap();
    let doc = manifest
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{wheel_a}\t")))
        .and_then(|rest| rest.split('\t').nth(1))
        .unwrap();
    let size = std::fs::metadata(packages.path().join(doc)).unwrap().len();
    assert!(
        shown.contains(&format!("GET {}", origin.url(wheel_a))),
        "{shown}"
    );
    assert!(shown.contains("HTTP/1.1 200"), "{shown}");
    assert!(
        shown.contains(&format!("[body: {size} bytes")),
        "wheel of {size} bytes:\n{shown}"
    );
    assert!(
        shown.contains("sni=127.0.0.1") || shown.contains("TLS"),
        "{shown}"
    );

    // A bad filter names the position.
    let bad = flows_output(&[file_arg, "~u a & ~zz"]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("position 7") && err.contains("unknown filter ~zz"),
        "{err}"
    );
}

#[test]
fn bodies_are_bounded_with_their_true_size_and_plugin_calls_are_recorded() {
    let origin = Origin::http();
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("t.flows");
    let proxy = Proxlet::start(&[
        "--plugin",
        "error-links,cache",
        "--cache-dir",
        work.path().join("cache").to_str().unwrap(),
        "--save",
        file.to_str().unwrap(),
        "--flow-body-max",
        "1K",
    ]);
    let big = curl(&proxy, &[&origin.url("/bytes/100000")]);
    assert_eq!(big.body.len(), 100_000);
    let posted = curl(
        &proxy,
        &["--data-binary", "hello upload", &origin.url("/echo")],
    );
    assert_eq!(posted.status, 200);
    let listing = wait_for_flows(&file, 2);
    assert_eq!(listing.len(), 2, "{listing:#?}");
    assert!(listing[0].contains(" 200 100000B"), "{listing:#?}");

    let shown = flows(&[file.to_str().unwrap(), "--show", id_of(&listing[0])]);
    assert!(
        shown.contains("[body: 100000 bytes, truncated: 1024 bytes kept]"),
        "{shown}"
    );
    // Each plugin call: plugin, hook, decision, time.
    assert!(shown.contains("cache on-request fill"), "{shown}");
    assert!(shown.contains("cache on-response store"), "{shown}");
    assert!(shown.contains("upstream connect"), "{shown}");
    let post = flows(&[file.to_str().unwrap(), "--show", id_of(&listing[1])]);
    assert!(post.contains("POST "), "{post}");
    assert!(post.contains("hello upload"), "request body kept:\n{post}");
    // Filters see bodies (decoded) when asked.
    let matched = flows(&[file.to_str().unwrap(), "~bq upload"]);
    assert_eq!(matched.lines().count(), 1, "{matched}");
}

#[test]
fn save_filter_selects_and_plus_file_appends() {
    let origin = Origin::http();
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("t.flows");
    let file_arg = file.to_str().unwrap();
    {
        let proxy = Proxlet::start(&["--save", file_arg, "--save-filter", "~c 404"]);
        assert_eq!(curl(&proxy, &[&origin.url("/status/404")]).status, 404);
        assert_eq!(curl(&proxy, &[&origin.url("/bytes/10")]).status, 200);
        assert_eq!(
            curl(&proxy, &[&origin.url("/status/404?again")]).status,
            404
        );
        let listing = wait_for_flows(&file, 2);
        assert_eq!(listing.len(), 2, "{listing:#?}");
        assert!(listing.iter().all(|l| l.contains(" 404 ")));
    }
    let appended = format!("+{file_arg}");
    let proxy = Proxlet::start(&["--save", &appended]);
    assert_eq!(curl(&proxy, &[&origin.url("/bytes/7")]).status, 200);
    let listing = wait_for_flows(&file, 3);
    assert_eq!(listing.len(), 3, "{listing:#?}");
    assert!(listing[2].contains("/bytes/7 200 7B"), "{listing:#?}");

    // Without the +, the file starts over.
    drop(proxy);
    let proxy = Proxlet::start(&["--save", file_arg]);
    assert_eq!(curl(&proxy, &[&origin.url("/bytes/8")]).status, 200);
    let listing = wait_for_flows(&file, 1);
    assert_eq!(listing.len(), 1, "{listing:#?}");
}

#[test]
fn a_killed_proxy_leaves_every_completed_flow_readable() {
    let origin = Origin::https(Arc::new(TestCa::new("origin CA")));
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("t.flows");
    let proxy = Proxlet::start(&[
        "--save",
        file.to_str().unwrap(),
        "--upstream-ca",
        &origin.ca_pem(),
    ]);
    let completed = 40;
    for i in 0..completed {
        let got = curl(&proxy, &[&origin.url(&format!("/bytes/{}", 1000 + i))]);
        assert_eq!(got.status, 200);
    }
    assert_eq!(wait_for_flows(&file, completed).len(), completed);
    // One flow still streaming when the proxy dies.
    let url = origin.url("/slow/20000");
    let ca = proxy.ca_path();
    let proxy_url = proxy.url();
    let pending = std::thread::spawn(move || {
        std::process::Command::new("curl")
            .args(["-sS", "--max-time", "30", "--cacert"])
            .arg(&ca)
            .args(["-x", &proxy_url, &url])
            .output()
    });
    wait_until(Duration::from_secs(10), || origin.hits("/slow/20000") > 0);
    assert_eq!(origin.hits("/slow/20000"), 1);
    assert!(proxy
        .signal_and_wait("KILL", Duration::from_secs(10))
        .is_some());
    let _ = pending.join();

    let listing = flows(&[file.to_str().unwrap()]);
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), completed, "{listing}");
    for (i, line) in lines.iter().enumerate() {
        let n = 1000 + i;
        assert!(line.contains(&format!("/bytes/{n} 200 {n}B")), "{line}");
    }
    // The intercepted TLS is recorded.
    let shown = flows(&[file.to_str().unwrap(), "--show", id_of(lines[0])]);
    assert!(shown.contains("(intercepted)"), "{shown}");
}

#[test]
fn bad_capture_options_are_refused_with_the_reason() {
    let start = |args: &[&str]| {
        let home = tempfile::tempdir().unwrap();
        Proxlet::start_with_home(home.path(), args)
            .err()
            .unwrap_or_default()
    };
    let err = start(&["--save-filter", "~c", "--save", "/tmp/x.flows"]);
    assert!(
        err.contains("--save-filter") && err.contains("position"),
        "{err}"
    );
    let err = start(&["--flow-body-max", "lots"]);
    assert!(err.contains("--flow-body-max"), "{err}");
    let err = start(&["--save", "/nonexistent-dir/x.flows"]);
    assert!(err.contains("cannot open flow file"), "{err}");
    let not_flows = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(not_flows.path(), "hello").unwrap();
    let err = flows_output(&[not_flows.path().to_str().unwrap()]);
    assert!(!err.status.success());
    assert!(
        String::from_utf8_lossy(&err.stderr).contains("not a proxlet flow file"),
        "{err:?}"
    );
}

#[test]
fn har_exports_list_and_replay_like_the_flow_file_they_came_from() {
    let mut origin = Origin::https(Arc::new(TestCa::new("origin CA")));
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("t.flows");
    let ca = origin.ca_pem();
    let proxy = Proxlet::start(&["--save", file.to_str().unwrap(), "--upstream-ca", &ca]);
    let mut bodies = Vec::new();
    for path in ["/bytes/100", "/gzip", "/status/404"] {
        let got = curl(&proxy, &["--compressed", &origin.url(path)]);
        assert!(got.success);
        bodies.push(got.body);
    }
    let listing = wait_for_flows(&file, 3);
    drop(proxy);

    // --har writes HAR 1.2 that lists the same flows, in order.
    let har = work.path().join("t.har");
    let file_arg = file.to_str().unwrap();
    flows(&[file_arg, "--har", har.to_str().unwrap()]);
    let text = std::fs::read_to_string(&har).unwrap();
    assert!(text.contains("\"version\": \"1.2\"") || text.contains("\"version\":\"1.2\""));
    let from_har = flows(&[har.to_str().unwrap()]);
    let urls = |listing: &[String]| -> Vec<String> {
        listing
            .iter()
            .map(|l| l.split_whitespace().nth(3).unwrap().to_owned())
            .collect()
    };
    let har_lines: Vec<String> = from_har.lines().map(str::to_owned).collect();
    assert_eq!(urls(&har_lines), urls(&listing), "{from_har}");
    // A filter applies to the export.
    let only = work.path().join("404.har");
    flows(&[file_arg, "~c 404", "--har", only.to_str().unwrap()]);
    assert_eq!(flows(&[only.to_str().unwrap()]).lines().count(), 1);
    // To standard output with `-`.
    assert!(flows(&[file_arg, "--har", "-"]).contains("\"entries\""));

    // The HAR serves as a recording with the origin gone.
    origin.stop();
    let replaying = Proxlet::start(&[
        "--server-replay",
        har.to_str().unwrap(),
        "--server-replay-extra",
        "404",
    ]);
    let replayed = curl(&replaying, &["--compressed", &origin.url("/gzip")]);
    assert_eq!(replayed.status, 200, "{}", replaying.log());
    assert_eq!(replayed.body, bodies[1]);
    assert!(replayed
        .text()
        .starts_with(proxlet_tests::origin::GZIP_TEXT));
}

#[test]
fn cut_short_flows_are_recorded_as_such_and_never_replayed() {
    let origin = Origin::http();
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("t.flows");
    let file_arg = file.to_str().unwrap();
    // Every byte that passes is kept: only the abort makes the body partial.
    let proxy = Proxlet::start(&["--save", file_arg, "--flow-body-max", "1G"]);
    // The client leaves mid-body (more than socket buffers hold).
    let url = origin.url("/bytes/200000000");
    let aborted = curl(&proxy, &["--limit-rate", "20K", "--max-time", "1", &url]);
    assert!(!aborted.success);
    let listing = wait_for_flows(&file, 1);
    assert_eq!(listing.len(), 1, "{listing:#?}");
    assert!(listing[0].contains("client-aborted"), "{listing:#?}");
    let shown = flows(&[file_arg, "--show", id_of(&listing[0])]);
    assert!(
        shown.contains(", truncated:"),
        "a cut-short body is truncated:\n{shown}"
    );
    drop(proxy);

    // Server replay does not serve a body it only has part of.
    let replaying = Proxlet::start(&["--server-replay", file_arg, "--server-replay-extra", "404"]);
    let replayed = curl(&replaying, &["--max-time", "5", &url]);
    assert_eq!(replayed.status, 404, "{}", replaying.log());
}

#[test]
fn proxy_credentials_never_reach_a_flow_file() {
    let origin = Origin::http();
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("t.flows");
    let file_arg = file.to_str().unwrap();
    let proxy = Proxlet::start(&[
        "--plugin",
        "cache",
        "--cache-dir",
        work.path().join("cache").to_str().unwrap(),
        "--save",
        file_arg,
    ]);
    // Fetched (upstream), then answered by the cache plugin (no upstream).
    for _ in 0..2 {
        let got = curl(
            &proxy,
            &["--proxy-user", "ci:s3cret", &origin.url("/bytes/10")],
        );
        assert_eq!(got.status, 200);
    }
    let listing = wait_for_flows(&file, 2);
    assert_eq!(listing.len(), 2);
    let raw = std::fs::read(&file).unwrap();
    let needle = b"czNjcmV0"; // base64 of "s3cret", as Basic carries it
    assert!(
        !raw.windows(needle.len()).any(|w| w == needle)
            && !raw
                .windows(19)
                .any(|w| w.eq_ignore_ascii_case(b"proxy-authorization")),
        "credentials saved:\n{}",
        String::from_utf8_lossy(&raw)
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "flow files are private");
}

/// A WebSocket as Chrome exports it (`_webSocketMessages`), with proxlet's
/// extras: a binary message, a dropped one, a truncated injected one, the
/// close and a count of messages past the bound.
const WEBSOCKET_HAR: &str = r#"{"log": {"version": "1.2", "creator": {"name": "test", "version": "1"}, "entries": [{
 "startedDateTime": "2023-11-14T22:13:20.000Z",
 "request": {"method": "GET", "url": "https://ws.example/chat", "httpVersion": "HTTP/1.1",
             "headers": [{"name": "upgrade", "value": "websocket"}]},
 "response": {"status": 101, "httpVersion": "HTTP/1.1",
              "headers": [{"name": "upgrade", "value": "websocket"}], "content": {"size": 0}},
 "timings": {"send": 0, "wait": 1, "receive": 0},
 "_webSocketMessages": [
   {"type": "send", "time": 1700000000.5, "opcode": 1, "data": "hello"},
   {"type": "receive", "time": 1700000000.75, "opcode": 2, "data": "AP+A", "_dropped": true},
   {"type": "receive", "time": 1700000000.8, "opcode": 1, "data": "cut", "_size": 1000,
    "_truncated": true, "_injected": true}
 ],
 "_websocket": {"closed_by_client": false, "close_code": 1001, "close_reason": "going away",
                "end": 1700000002.25, "messages_omitted": 4}
}]}}"#;

#[test]
fn websocket_messages_survive_conversion_through_flow_files_mitm_dumps_and_har() {
    let work = tempfile::tempdir().unwrap();
    let path = |name: &str| work.path().join(name).to_str().unwrap().to_owned();
    std::fs::write(path("in.har"), WEBSOCKET_HAR).unwrap();
    let convert = |from: &str, to: &str| {
        let output = proxlet_tests::proxlet::run(&["convert", &path(from), &path(to)]);
        assert!(
            output.status.success(),
            "proxlet convert {from} {to}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    convert("in.har", "a.flows");
    let listing = flows(&[&path("a.flows")]);
    assert!(
        listing.contains("GET https://ws.example/chat 101 0B 1ms websocket 7 messages"),
        "{listing}"
    );
    let shown = flows(&[&path("a.flows"), "--show", "1"]);
    for line in [
        "websocket: 7 messages, closed by the server (1001 \"going away\")\n",
        "  +500.000 → text 5B \"hello\"\n",
        "  +750.000 ← binary 3B 00 ff 80 [dropped]\n",
        "  +800.000 ← text 1000B \"cut\" [truncated] [injected]\n",
        "  … 4 more not kept\n",
    ] {
        assert!(shown.contains(line), "{line:?} in\n{shown}");
    }

    // Through a mitmproxy dump and back, then out as HAR: the same.
    convert("a.flows", "b.mitm");
    convert("b.mitm", "c.flows");
    let messages = |shown: &str| -> String {
        let start = shown.find("websocket:").unwrap();
        let end = shown[start..].find("\n\n").unwrap();
        shown[start..start + end].to_owned()
    };
    let again = flows(&[&path("c.flows"), "--show", "1"]);
    assert_eq!(messages(&again), messages(&shown));
    convert("c.flows", "d.har");
    let entry = |file: &str| -> serde_json::Value {
        let har: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path(file)).unwrap()).unwrap();
        har["log"]["entries"][0].clone()
    };
    let (original, again) = (entry("in.har"), entry("d.har"));
    assert_eq!(again["_webSocketMessages"], original["_webSocketMessages"]);
    assert_eq!(again["_websocket"], original["_websocket"]);
}
