//! The built-in plugins (cache, error-links, pypi-slash, replace) through
//! the real binary with curl and loopback origins; files checked on disk.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use proxlet_tests::{curl, origin::pattern, Origin, Proxlet, TestCa};

fn https_origin() -> Origin {
    Origin::https(Arc::new(TestCa::new("builtin test origin CA")))
}

/// A proxlet whose config is the caching stack plus `extra` TOML, caching
/// into `<dir>/cache`.
struct Setup {
    dir: tempfile::TempDir,
    proxy: Proxlet,
}

impl Setup {
    fn new(origin: &Origin, plugins: &str) -> Self {
        Self::trusting(origin.ca.as_ref().map(|ca| ca.path()), plugins)
    }

    /// A proxlet trusting upstream certificates of `ca`.
    fn trusting(ca: Option<&Path>, plugins: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let proxy = Self::start_trusting(dir.path(), ca, plugins).unwrap_or_else(|e| panic!("{e}"));
        Self { dir, proxy }
    }

    fn start(dir: &Path, origin: &Origin, plugins: &str) -> Result<Proxlet, String> {
        Self::start_trusting(dir, origin.ca.as_ref().map(|ca| ca.path()), plugins)
    }

    fn start_trusting(dir: &Path, ca: Option<&Path>, plugins: &str) -> Result<Proxlet, String> {
        let config = format!(
            "upstream_ca = {:?}\n{plugins}\n",
            ca.into_iter().collect::<Vec<_>>()
        );
        Proxlet::start_configured(dir, &config, &[])
    }

    /// The cache dir.
    fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    /// The cache dir of `origin`'s host (an https origin's).
    fn host_dir(&self, origin: &Origin) -> PathBuf {
        self.cache()
            .join(format!("127.0.0.1_{}", origin.addr.port()))
    }
}

const STACK: &str = "[[plugin]]\nname = \"pypi-slash\"\n[[plugin]]\nname = \"error-links\"\n[[plugin]]\nname = \"cache\"\n";

#[test]
fn cache_fills_once_then_serves_files_with_range_and_head() {
    let origin = https_origin();
    let setup = Setup::new(&origin, STACK);
    let proxy = &setup.proxy;
    let url = origin.url("/bytes/100000");

    let miss = curl(proxy, &[&url]);
    assert_eq!(
        (miss.status, miss.x_proxlet.as_str()),
        (200, "cache;miss"),
        "{miss:?}"
    );
    assert_eq!(miss.body, pattern(100_000));
    let file = setup.host_dir(&origin).join("bytes/100000");
    assert_eq!(std::fs::read(&file).unwrap(), pattern(100_000));

    let hit = curl(proxy, &[&url]);
    assert_eq!((hit.status, hit.x_proxlet.as_str()), (200, "cache;hit"));
    assert_eq!(hit.body, pattern(100_000));
    assert_eq!(origin.hits("/bytes/100000"), 1);

    let range = curl(proxy, &["-r", "10-19", &url]);
    assert_eq!(range.status, 206, "{range:?}");
    assert_eq!(range.body, pattern(20)[10..]);
    let head = curl(proxy, &["-I", &url]);
    assert_eq!((head.status, head.x_proxlet.as_str()), (200, "cache;hit"));
    assert!(
        head.text().contains("content-length: 100000"),
        "{}",
        head.text()
    );

    // A hand-dropped file is served as it is, typed by its extension.
    let hand = setup.host_dir(&origin).join("hand/made.txt");
    std::fs::create_dir_all(hand.parent().unwrap()).unwrap();
    std::fs::write(&hand, "dropped by hand\n").unwrap();
    let got = curl(proxy, &["-D", "-", &origin.url("/hand/made.txt")]);
    assert_eq!(got.status, 200);
    assert!(got.text().contains("text/plain"), "{}", got.text());
    assert!(got.text().ends_with("dropped by hand\n"));
    assert_eq!(origin.hits("/hand/made.txt"), 0);

    // Deleting the file forces a fetch.
    std::fs::remove_file(&file).unwrap();
    let again = curl(proxy, &[&url]);
    assert_eq!(
        (again.status, again.x_proxlet.as_str()),
        (200, "cache;miss")
    );
    assert_eq!(origin.hits("/bytes/100000"), 2);
}

#[test]
fn sixteen_clients_on_one_cold_url_cause_one_upstream_request() {
    let origin = https_origin();
    let setup = Setup::new(&origin, STACK);
    let url = origin.url("/slow/400");
    let results: Vec<_> = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..16)
            .map(|_| scope.spawn(|| curl(&setup.proxy, &[&url])))
            .collect();
        clients.into_iter().map(|c| c.join().unwrap()).collect()
    });
    for got in &results {
        assert_eq!((got.status, got.text().as_str()), (200, "slow"), "{got:?}");
    }
    assert_eq!(origin.hits("/slow/400"), 1, "{}", setup.proxy.log());
    let hits = results
        .iter()
        .filter(|r| r.x_proxlet == "cache;hit")
        .count();
    assert_eq!(hits, 15);
}

#[test]
fn error_links_keep_404_as_a_symlink_and_replay_it_with_the_origin_down() {
    let mut origin = https_origin();
    let setup = Setup::new(&origin, STACK);
    let proxy = &setup.proxy;
    let link = setup.host_dir(&origin).join("status/404");

    assert_eq!(curl(proxy, &[&origin.url("/status/404")]).status, 404);
    assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("404"));
    // 5xx is transient: never stored.
    assert_eq!(curl(proxy, &[&origin.url("/status/503")]).status, 503);
    assert!(std::fs::symlink_metadata(setup.host_dir(&origin).join("status/503")).is_err());

    origin.stop();
    let replay = curl(proxy, &[&origin.url("/status/404")]);
    assert_eq!(
        (replay.status, replay.x_proxlet.as_str()),
        (404, "error-links;hit")
    );
    assert_eq!(curl(proxy, &[&origin.url("/status/503")]).status, 502);

    origin.restart();
    std::fs::remove_file(&link).unwrap();
    assert_eq!(curl(proxy, &[&origin.url("/status/404")]).status, 404);
    assert_eq!(origin.hits("/status/404"), 2);
}

#[test]
fn offline_serves_the_cache_and_names_what_is_missing() {
    let mut origin = https_origin();
    let setup = Setup::new(&origin, STACK);
    assert_eq!(curl(&setup.proxy, &[&origin.url("/bytes/10")]).status, 200);
    origin.stop();

    let offline = Setup::start(
        setup.dir.path(),
        &origin,
        "[[plugin]]\nname = \"cache\"\nconfig = { offline = true }\n",
    )
    .unwrap();
    let hit = curl(&offline, &[&origin.url("/bytes/10")]);
    assert_eq!((hit.status, hit.body), (200, pattern(10)));
    let miss = curl(&offline, &[&origin.url("/bytes/11")]);
    assert_eq!(miss.status, 504, "{miss:?}");
    assert!(miss.text().contains("bytes/11"), "{}", miss.text());
}

#[test]
fn stale_entries_are_revalidated_and_served_stale_when_the_upstream_is_down() {
    let mut origin = https_origin();
    origin.put(
        "/simple/pkg/",
        vec![("text/html", b"<a>pkg-1.0</a>".to_vec())],
    );
    let setup = Setup::new(
        &origin,
        "[[plugin]]\nname = \"cache\"\nconfig = { revalidate = [{ url = \"/simple/\", ttl = \"0\" }] }\n",
    );
    let url = origin.url("/simple/pkg/");
    let proxy = &setup.proxy;
    assert_eq!(curl(proxy, &[&url]).x_proxlet, "cache;miss");
    let again = curl(proxy, &[&url]);
    assert_eq!(
        (
            again.status,
            again.x_proxlet.as_str(),
            again.text().as_str()
        ),
        (200, "cache;revalidated", "<a>pkg-1.0</a>")
    );
    assert_eq!(origin.hits("/simple/pkg/"), 2);

    origin.stop();
    let stale = curl(proxy, &[&url]);
    assert_eq!(
        (stale.status, stale.x_proxlet.as_str()),
        (200, "cache;stale")
    );
    assert_eq!(stale.text(), "<a>pkg-1.0</a>");
    // The log is read as proxlet writes it: wait for the line.
    assert!(
        proxy.wait_for_log("stale copy", std::time::Duration::from_secs(20)),
        "{}",
        proxy.log()
    );
}

/// Serves a PyPI simple page at `/simple/pkg/` in its two types (PEP 691
/// JSON and HTML), negotiated by Accept; their bodies.
fn simple_page(origin: &Origin) -> (Vec<u8>, Vec<u8>) {
    let json = br#"{"meta":{"api-version":"1.0"},"name":"pkg","files":[]}"#.to_vec();
    let html = b"<html><a href=\"x\">x</a></html>".to_vec();
    origin.put(
        "/simple/pkg/",
        vec![
            ("application/vnd.pypi.simple.v1+json", json.clone()),
            ("text/html", html.clone()),
        ],
    );
    (json, html)
}

#[test]
fn negotiated_documents_are_stored_per_type_and_never_crossed() {
    let origin = https_origin();
    let (json, html) = simple_page(&origin);
    let setup = Setup::new(&origin, STACK);
    let url = origin.url("/simple/pkg/");
    let ask = |accept: &str| curl(&setup.proxy, &["-H", &format!("Accept: {accept}"), &url]);
    let pip = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.1, text/html;q=0.01";

    let first = ask(pip);
    assert_eq!(
        (first.body.clone(), first.x_proxlet.as_str()),
        (json.clone(), "cache;miss")
    );
    let browser = ask("text/html");
    assert_eq!(
        (browser.body.clone(), browser.x_proxlet.as_str()),
        (html.clone(), "cache;miss")
    );
    assert_eq!(ask(pip).body, json);
    assert_eq!(ask("text/html").body, html);
    assert_eq!(origin.hits("/simple/pkg/"), 2);

    let dir = setup.host_dir(&origin).join("simple/pkg");
    assert_eq!(std::fs::read(dir.join("index.html")).unwrap(), html);
    assert_eq!(
        std::fs::read(dir.join("index.html#vnd.pypi.simple.v1.json")).unwrap(),
        json
    );
}

#[test]
fn repeated_hits_follow_hand_edits_and_deletes_at_once() {
    let origin = https_origin();
    let setup = Setup::new(&origin, STACK);
    let proxy = &setup.proxy;
    let url = origin.url("/bytes/100");
    assert_eq!(curl(proxy, &[&url]).x_proxlet, "cache;miss");
    let file = setup.host_dir(&origin).join("bytes/100");
    let head = setup.dir.path().join("head.txt");
    // Hits: the first lets the host keep the answer, the others reuse it.
    for _ in 0..3 {
        let hit = curl(proxy, &["-D", head.to_str().unwrap(), &url]);
        assert_eq!(
            (hit.x_proxlet.as_str(), hit.body),
            ("cache;hit", pattern(100))
        );
        let fields = std::fs::read_to_string(&head).unwrap().to_ascii_lowercase();
        assert!(!fields.contains("x-proxlet-memo"), "{fields}");
        assert!(fields.contains("content-length: 100"), "{fields}");
    }
    // Edited by hand, same size: the very next request gets the new bytes.
    std::fs::write(&file, [b'e'; 100]).unwrap();
    assert_eq!(curl(proxy, &[&url]).body, [b'e'; 100]);
    assert_eq!(curl(proxy, &[&url]).body, [b'e'; 100]);
    // Replaced by a longer file: ranges and HEAD follow it too.
    std::fs::write(&file, b"edited by hand, and longer than before").unwrap();
    assert_eq!(curl(proxy, &["-r", "0-5", &url]).text(), "edited");
    let head_only = curl(proxy, &["-I", &url]);
    assert!(
        head_only.text().contains("content-length: 38"),
        "{}",
        head_only.text()
    );
    // Metadata deleted by hand: still served, as a hand-dropped file.
    let meta = setup.cache().join(".proxlet-meta");
    std::fs::remove_dir_all(&meta).unwrap();
    let dropped = curl(proxy, &[&url]);
    assert_eq!(
        (dropped.x_proxlet.as_str(), dropped.text().as_str()),
        ("cache;hit", "edited by hand, and longer than before")
    );
    // Deleted: fetched again, once.
    std::fs::remove_file(&file).unwrap();
    assert_eq!(curl(proxy, &[&url]).x_proxlet, "cache;miss");
    assert_eq!(curl(proxy, &[&url]).body, pattern(100));
    assert_eq!(origin.hits("/bytes/100"), 2);
    // A file dropped by hand where nothing was asked for yet is served.
    let new = setup.host_dir(&origin).join("bytes/dropped.txt");
    std::fs::write(&new, b"dropped").unwrap();
    let served = curl(proxy, &[&origin.url("/bytes/dropped.txt")]);
    assert_eq!(
        (served.x_proxlet.as_str(), served.text().as_str()),
        ("cache;hit", "dropped")
    );
    assert_eq!(origin.hits("/bytes/dropped.txt"), 0);
}

#[test]
fn a_reused_hit_still_tells_negotiated_and_authorized_requests_apart() {
    let origin = https_origin();
    let (json, html) = simple_page(&origin);
    let setup = Setup::new(&origin, STACK);
    let url = origin.url("/simple/pkg/");
    let ask = |accept: &str| curl(&setup.proxy, &["-H", &format!("Accept: {accept}"), &url]);
    let json_type = "application/vnd.pypi.simple.v1+json";
    ask(json_type);
    ask("text/html");
    for _ in 0..3 {
        assert_eq!(ask(json_type).body, json);
        assert_eq!(ask("text/html").body, html);
    }
    assert_eq!(origin.hits("/simple/pkg/"), 2);
    // An authorized request is never answered from the kept hit.
    let authorized = curl(
        &setup.proxy,
        &[
            "-H",
            "Authorization: Bearer x",
            "-H",
            &format!("Accept: {json_type}"),
            &url,
        ],
    );
    assert_eq!(authorized.x_proxlet, "cache;bypass");
    assert_eq!(origin.hits("/simple/pkg/"), 3);
}

#[test]
fn pypi_slash_puts_every_spelling_in_one_directory_and_redirects_stay_metadata() {
    let mut origin = https_origin();
    origin.put(
        "/simple/foo-bar/",
        vec![("text/html", b"<a>foo</a>".to_vec())],
    );
    let setup = Setup::new(&origin, STACK);
    for spelling in ["/simple/Foo_Bar", "/simple/foo.bar/", "/simple/foo-bar/"] {
        let got = curl(&setup.proxy, &[&origin.url(spelling)]);
        assert_eq!(
            (got.status, got.text().as_str()),
            (200, "<a>foo</a>"),
            "{spelling}"
        );
    }
    assert_eq!(origin.hits("/simple/foo-bar/"), 1);
    assert_eq!(origin.hits("/simple/Foo_Bar"), 0);
    let simple = setup.host_dir(&origin).join("simple");
    let names: Vec<_> = std::fs::read_dir(&simple)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["foo-bar"]);
    assert!(simple.join("foo-bar/index.html").is_file());

    // Without pypi-slash the origin's redirect is recorded, not stored as
    // a file that would collide with the directory.
    let cache_only = Setup::new(&origin, "[[plugin]]\nname = \"cache\"\n");
    let url = origin.url("/simple/foo-bar");
    assert_eq!(curl(&cache_only.proxy, &[&url]).status, 301);
    assert!(!cache_only.host_dir(&origin).join("simple/foo-bar").exists());
    origin.stop();
    let replay = curl(&cache_only.proxy, &["-D", "-", &url]);
    assert_eq!(replay.status, 301);
    assert!(
        replay.text().contains("location: /simple/foo-bar/"),
        "{}",
        replay.text()
    );
}

#[test]
fn hostile_paths_are_never_cached_outside_the_cache_dir() {
    let origin = https_origin();
    let setup = Setup::new(&origin, STACK);
    for path in [
        "/a/../../../../tmp/escaped",
        "/a/%2e%2e/%2e%2e/escaped",
        "/a%00b",
        "/a//b",
    ] {
        let got = curl(&setup.proxy, &["--path-as-is", &origin.url(path)]);
        assert_eq!(got.status, 404, "{path}: {got:?}");
        assert_eq!(got.x_proxlet, "cache;bypass", "{path}");
    }
    assert!(
        setup.proxy.log().contains("not caching"),
        "{}",
        setup.proxy.log()
    );
    let outside: Vec<_> = std::fs::read_dir(setup.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        !outside.iter().any(|n| n.contains("escaped") || n == "tmp"),
        "{outside:?}"
    );
    assert!(!Path::new("/tmp/escaped").exists());
}

#[test]
fn replace_maps_files_rewrites_bodies_and_headers_delays_and_injects_errors() {
    let origin = https_origin();
    let local = tempfile::tempdir().unwrap();
    std::fs::write(local.path().join("app.js"), "console.log('local');\n").unwrap();
    let plugins = format!(
        r#"[[plugin]]
name = "replace"
dirs = {{ "/local" = {local:?} }}
[[plugin.config.rules]]
filter = '~d 127.0.0.1 & ~u "/static/app\.js$"'
map_local = "/local/app.js"
[[plugin.config.rules]]
path = "/gzip"
replace = [{{ pattern = "the", with = "teh" }}]
[[plugin.config.rules]]
path = "/bytes/5"
delay_ms = 400
[[plugin.config.rules]]
filter = "~u /inject & ~m GET"
status = 503
body = "injected"
[[plugin.config.rules]]
path = "/echo"
set_request_headers = {{ "x-injected" = "yes" }}
anticomp = true
anticache = true
set_response_headers = {{ "x-proxlet" = "replaced" }}
"#,
        local = local.path()
    );
    let setup = Setup::new(&origin, &plugins);
    let proxy = &setup.proxy;

    let mapped = curl(proxy, &["-D", "-", &origin.url("/static/app.js")]);
    assert_eq!(mapped.status, 200);
    assert!(
        mapped.text().contains("text/javascript"),
        "{}",
        mapped.text()
    );
    assert!(mapped.text().ends_with("console.log('local');\n"));
    assert_eq!(origin.hits("/static/app.js"), 0);

    let teh = curl(proxy, &["--compressed", &origin.url("/gzip")]);
    assert!(teh.text().starts_with("teh quick brown fox"), "{teh:?}");
    assert!(!teh.text().contains("the "));

    let delayed = curl(proxy, &[&origin.url("/bytes/5")]);
    let prompt = curl(proxy, &[&origin.url("/bytes/6")]);
    assert!(delayed.time_total >= 0.4, "{delayed:?}");
    assert!(prompt.time_total < 0.4, "{prompt:?}");

    let injected = curl(proxy, &[&origin.url("/inject")]);
    assert_eq!(
        (injected.status, injected.text().as_str()),
        (503, "injected")
    );
    assert_eq!(origin.hits("/inject"), 0);

    let echo = curl(
        proxy,
        &[
            "-H",
            "If-None-Match: \"x\"",
            "-H",
            "Accept-Encoding: gzip",
            &origin.url("/echo"),
        ],
    );
    let seen = echo.text().to_ascii_lowercase();
    assert!(seen.contains("x-injected: yes"), "{seen}");
    assert!(seen.contains("accept-encoding: identity"), "{seen}");
    assert!(!seen.contains("if-none-match"), "{seen}");
    assert_eq!(echo.x_proxlet, "replaced");
}

#[test]
fn a_bad_filter_is_refused_at_startup_with_its_position() {
    let origin = https_origin();
    let dir = tempfile::tempdir().unwrap();
    let error = Setup::start(
        dir.path(),
        &origin,
        "[[plugin]]\nname = \"replace\"\n[[plugin.config.rules]]\nfilter = \"~u a & ~zz b\"\nstatus = 500\n",
    )
    .err()
    .expect("proxlet refuses the config");
    assert!(error.contains("rules[0]"), "{error}");
    assert!(
        error.contains("at position 7: unknown filter ~zz"),
        "{error}"
    );
}

#[test]
fn one_gib_fills_the_cache_and_is_served_from_it_with_bounded_memory() {
    let origin = https_origin();
    let setup = Setup::new(&origin, STACK);
    const GIB: u64 = 1 << 30;
    let url = origin.url(&format!("/bytes/{GIB}"));
    for expected in ["cache;miss", "cache;hit"] {
        let got = curl(&setup.proxy, &["-o", "/dev/null", &url]);
        assert_eq!((got.status, got.size_download), (200, GIB), "{got:?}");
        assert_eq!(got.x_proxlet, expected);
    }
    let file = setup.host_dir(&origin).join(format!("bytes/{GIB}"));
    assert_eq!(std::fs::metadata(&file).unwrap().len(), GIB);
    assert_eq!(origin.hits(&format!("/bytes/{GIB}")), 1);
    let peak = setup.proxy.peak_rss_kib();
    assert!(peak < 64 * 1024, "proxlet peak RSS {peak} KiB");
}

#[test]
fn the_default_run_caches_into_proxlet_cache_in_the_working_directory() {
    let origin = https_origin();
    let dir = tempfile::tempdir().unwrap();
    let ca = origin.ca_pem();
    let proxy = Proxlet::start_in(dir.path(), &["--upstream-ca", &ca]);
    assert!(proxy.wait_for_log("loaded plugin cache", Duration::from_secs(1)));
    let got = curl(&proxy, &[&origin.url("/bytes/1000")]);
    assert_eq!((got.status, got.x_proxlet.as_str()), (200, "cache;miss"));
    let file = dir.path().join(format!(
        "proxlet-cache/127.0.0.1_{}/bytes/1000",
        origin.addr.port()
    ));
    assert_eq!(std::fs::read(file).unwrap(), pattern(1000));
}

#[test]
fn a_url_that_is_also_a_directory_keeps_both_files() {
    let origin = https_origin();
    origin.put(
        "/pkg",
        vec![("application/json", b"{\"name\":\"pkg\"}".to_vec())],
    );
    origin.put(
        "/pkg/-/pkg-1.0.tgz",
        vec![("application/octet-stream", b"tarball".to_vec())],
    );
    let setup = Setup::new(&origin, STACK);
    let get = |path: &str| curl(&setup.proxy, &[&origin.url(path)]);
    assert_eq!(get("/pkg").x_proxlet, "cache;miss");
    assert_eq!(get("/pkg/-/pkg-1.0.tgz").x_proxlet, "cache;miss");
    let packument = get("/pkg");
    assert_eq!(
        (packument.x_proxlet.as_str(), packument.text().as_str()),
        ("cache;hit", "{\"name\":\"pkg\"}")
    );
    assert_eq!(get("/pkg/-/pkg-1.0.tgz").text(), "tarball");
    let dir = setup.host_dir(&origin);
    assert!(dir.join("pkg/#file").is_file());
    assert!(dir.join("pkg/-/pkg-1.0.tgz").is_file());
    assert_eq!(
        (origin.hits("/pkg"), origin.hits("/pkg/-/pkg-1.0.tgz")),
        (1, 1)
    );
}

#[test]
fn authorized_responses_are_not_shared() {
    let origin = https_origin();
    let setup = Setup::new(&origin, STACK);
    let url = origin.url("/bytes/64");
    for _ in 0..2 {
        let got = curl(&setup.proxy, &["-H", "Authorization: Bearer secret", &url]);
        assert_eq!((got.status, got.x_proxlet.as_str()), (200, "cache;bypass"));
    }
    assert_eq!(origin.hits("/bytes/64"), 2);
    assert!(!setup.host_dir(&origin).join("bytes/64").exists());
}

/// A 1 MiB tmpfs mounted at `dir` for the test's lifetime (needs root, as
/// CI runs).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a tmpfs at {} needs root",
            dir.display()
        );
        Self(dir.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_tmpfs_cache_works_and_a_full_one_degrades_to_pass_through() {
    let origin = https_origin();
    let dir = tempfile::tempdir().unwrap();
    let tmpfs = Tmpfs::mount(&dir.path().join("cache"));
    let proxy = Setup::start(dir.path(), &origin, STACK).unwrap();
    let setup = Setup { dir, proxy };
    let small = curl(&setup.proxy, &[&origin.url("/bytes/1000")]);
    assert_eq!(small.x_proxlet, "cache;miss");
    assert_eq!(
        curl(&setup.proxy, &[&origin.url("/bytes/1000")]).x_proxlet,
        "cache;hit"
    );

    let big = curl(&setup.proxy, &[&origin.url("/bytes/3000000")]);
    assert_eq!(
        (big.status, big.body.len()),
        (200, 3_000_000),
        "{}",
        big.stderr
    );
    assert_eq!(big.body, pattern(3_000_000));
    assert!(
        setup
            .proxy
            .wait_for_log("No space left on device", Duration::from_secs(2)),
        "{}",
        setup.proxy.log()
    );
    let host = setup.host_dir(&origin).join("bytes");
    let left: Vec<_> = std::fs::read_dir(&host)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(left, ["1000"], "no partial file stays");
    assert_eq!(
        curl(&setup.proxy, &[&origin.url("/bytes/1000")]).x_proxlet,
        "cache;hit"
    );
    // Unmount before the temporary dir goes.
    let Setup { dir, proxy } = setup;
    drop(proxy);
    drop(tmpfs);
    drop(dir);
}

#[test]
fn http_and_https_on_one_port_never_share_a_cache_file() {
    let ca = Arc::new(TestCa::new("builtin test origin CA"));
    let mut origin = Origin::http();
    let wheel = "/pkg-1.0-py3-none-any.whl";
    origin.put(
        wheel,
        vec![("application/zip", b"bytes sent in clear".to_vec())],
    );
    let setup = Setup::trusting(Some(ca.path()), STACK);
    let proxy = &setup.proxy;
    let plain_url = origin.url(wheel);
    let plain = curl(proxy, &[&plain_url]);
    assert_eq!(
        (
            plain.status,
            plain.x_proxlet.as_str(),
            plain.text().as_str()
        ),
        (200, "cache;miss", "bytes sent in clear"),
        "{plain:?}"
    );

    // The same port now speaks TLS and serves other bytes.
    origin.stop();
    origin.ca = Some(ca);
    origin.restart();
    origin.put(
        wheel,
        vec![("application/zip", b"bytes sent over TLS".to_vec())],
    );
    let tls_url = origin.url(wheel);
    assert!(tls_url.starts_with("https://"), "{tls_url}");
    let tls = curl(proxy, &[&tls_url]);
    assert_eq!(
        (tls.status, tls.x_proxlet.as_str(), tls.text().as_str()),
        (200, "cache;miss", "bytes sent over TLS"),
        "{tls:?}"
    );
    assert_eq!(origin.hits(wheel), 2);

    let port = origin.addr.port();
    let cache = setup.cache();
    assert_eq!(
        std::fs::read(cache.join(format!("http+127.0.0.1_{port}{wheel}"))).unwrap(),
        b"bytes sent in clear"
    );
    assert_eq!(
        std::fs::read(cache.join(format!("127.0.0.1_{port}{wheel}"))).unwrap(),
        b"bytes sent over TLS"
    );
    // Each scheme is served its own file.
    for (url, body) in [
        (&tls_url, "bytes sent over TLS"),
        (&plain_url, "bytes sent in clear"),
    ] {
        let hit = curl(proxy, &[url]);
        assert_eq!(
            (hit.x_proxlet.as_str(), hit.text().as_str()),
            ("cache;hit", body),
            "{url}"
        );
    }
    assert_eq!(origin.hits(wheel), 2);

    // An entry an older proxlet stored from plain HTTP under the bare host
    // is known by its metadata and fetched again over https.
    let legacy = "/legacy-1.0.tar.gz";
    let host = format!("127.0.0.1_{port}");
    std::fs::write(cache.join(&host).join(&legacy[1..]), "old clear bytes").unwrap();
    std::fs::write(
        cache.join(format!(".proxlet-meta/{host}{legacy}#meta.json")),
        format!(
            r#"{{"url":"http://127.0.0.1:{port}{legacy}","variants":[{{"file":"{host}{legacy}","stored":1}}]}}"#
        ),
    )
    .unwrap();
    origin.put(
        legacy,
        vec![("application/gzip", b"new TLS bytes".to_vec())],
    );
    let refetched = curl(proxy, &[&origin.url(legacy)]);
    assert_eq!(
        (refetched.x_proxlet.as_str(), refetched.text().as_str()),
        ("cache;miss", "new TLS bytes")
    );
    assert_eq!(origin.hits(legacy), 1);
}

/// Every file under `dir` (symlinks read as their target), recursively.
fn tree_contents(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let kind = std::fs::symlink_metadata(&path).unwrap().file_type();
        if kind.is_dir() {
            out.extend(tree_contents(&path));
        } else if kind.is_symlink() {
            let target = std::fs::read_link(&path).unwrap();
            out.push((path, target.into_os_string().into_encoded_bytes()));
        } else {
            let bytes = std::fs::read(&path).unwrap();
            out.push((path, bytes));
        }
    }
    out
}

#[test]
fn responses_to_cookies_and_setting_cookies_are_not_shared() {
    let origin = https_origin();
    origin.put(
        "/account",
        vec![("text/html", b"<p>alice's page</p>".to_vec())],
    );
    let setup = Setup::new(&origin, STACK);
    let proxy = &setup.proxy;
    let get = |url: &str, cookie: Option<&str>| match cookie {
        Some(cookie) => curl(proxy, &["-H", &format!("Cookie: {cookie}"), url]),
        None => curl(proxy, &[url]),
    };

    // A response to a request with a cookie is not stored...
    let account = origin.url("/account");
    let alice = get(&account, Some("session=alice-secret-4242"));
    assert_eq!(
        (alice.status, alice.x_proxlet.as_str()),
        (200, "cache;miss")
    );
    let anonymous = get(&account, None);
    assert_eq!(anonymous.x_proxlet, "cache;miss");
    assert_eq!(origin.hits("/account"), 2);

    // ... unless it says it is public.
    let logo = origin.url("/headers/logo?Cache-Control=public%2C%20max-age%3D60");
    assert_eq!(
        get(&logo, Some("session=alice-secret-4242")).x_proxlet,
        "cache;miss"
    );
    assert_eq!(get(&logo, None).x_proxlet, "cache;hit");
    assert_eq!(origin.hits("/headers/logo"), 1);

    // A response that sets a cookie is never stored, public or not.
    for name in ["login", "login-public"] {
        let public = if name == "login-public" {
            "&Cache-Control=public"
        } else {
            ""
        };
        let url = origin.url(&format!(
            "/headers/{name}?Set-Cookie=session%3Dbob-secret-4242{public}"
        ));
        for _ in 0..2 {
            let got = get(&url, None);
            assert_eq!(
                (got.status, got.x_proxlet.as_str()),
                (200, "cache;miss"),
                "{name}"
            );
        }
        assert_eq!(origin.hits(&format!("/headers/{name}")), 2, "{name}");
    }

    // Vary: Cookie tells sessions apart without writing a cookie down.
    let feed = origin.url("/headers/feed?Cache-Control=public&Vary=Cookie");
    let alice_cookie = Some("session=alice-secret-4242");
    assert_eq!(get(&feed, alice_cookie).x_proxlet, "cache;miss");
    assert_eq!(get(&feed, alice_cookie).x_proxlet, "cache;hit");
    assert_eq!(get(&feed, None).x_proxlet, "cache;miss");
    assert_eq!(
        get(&feed, Some("session=mallory-secret-4242")).x_proxlet,
        "cache;miss"
    );
    assert_eq!(origin.hits("/headers/feed"), 3);

    let files = tree_contents(&setup.cache());
    assert!(
        files
            .iter()
            .any(|(_, bytes)| bytes.windows(7).any(|w| w == b"sha256:")),
        "a Vary'd cookie is kept as a digest"
    );
    for (path, bytes) in &files {
        let text = format!("{}\n{}", path.display(), String::from_utf8_lossy(bytes));
        assert!(
            !text.contains("-secret-4242"),
            "a cookie in {}:\n{text}",
            path.display()
        );
    }
}

#[test]
fn error_links_are_not_replayed_to_nor_stored_from_credentialed_requests() {
    let origin = https_origin();
    let setup = Setup::new(&origin, STACK);
    let proxy = &setup.proxy;
    let url = origin.url("/status/404");
    assert_eq!(curl(proxy, &[&url]).status, 404);
    let link = setup.host_dir(&origin).join("status/404");
    assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("404"));

    let credentials = ["Authorization: Bearer secret", "Cookie: session=secret"];
    // Not from the link: the cache passes an authorized request by and
    // looks a cookie-carrying one up (a miss here).
    for (credential, cache) in credentials.into_iter().zip(["cache;bypass", "cache;miss"]) {
        let got = curl(proxy, &["-H", credential, &url]);
        assert_eq!(
            (got.status, got.x_proxlet.as_str(), got.text().as_str()),
            (404, cache, "status 404"),
            "{credential}"
        );
    }
    assert_eq!(origin.hits("/status/404"), 3);
    assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("404"));
    let anonymous = curl(proxy, &[&url]);
    assert_eq!(
        (anonymous.status, anonymous.x_proxlet.as_str()),
        (404, "error-links;hit")
    );
    assert_eq!(origin.hits("/status/404"), 3);

    for credential in credentials {
        assert_eq!(
            curl(proxy, &["-H", credential, &origin.url("/status/410")]).status,
            410
        );
    }
    assert!(std::fs::symlink_metadata(setup.host_dir(&origin).join("status/410")).is_err());
}

#[test]
fn an_error_link_is_never_a_directory_to_serve_from_or_store_through() {
    let origin = https_origin();
    origin.put(
        "/t/bob/tool.sh",
        vec![("text/plain", b"echo from the origin\n".to_vec())],
    );
    origin.put(
        "/t/bob/other.txt",
        vec![("text/plain", b"other\n".to_vec())],
    );
    let setup = Setup::new(&origin, STACK);
    let proxy = &setup.proxy;
    // `t/bob -> 404` as error-links makes it, beside a real `t/404/`.
    let t = setup.host_dir(&origin).join("t");
    std::fs::create_dir_all(t.join("404")).unwrap();
    std::fs::write(t.join("404/tool.sh"), "echo planted\n").unwrap();
    std::os::unix::fs::symlink("404", t.join("bob")).unwrap();
    std::os::unix::fs::symlink("404/tool.sh", t.join("alias.sh")).unwrap();

    let tool = curl(proxy, &[&origin.url("/t/bob/tool.sh")]);
    assert_eq!(
        (tool.status, tool.text().as_str()),
        (200, "echo from the origin\n"),
        "{tool:?}"
    );
    assert_eq!(origin.hits("/t/bob/tool.sh"), 1);
    // A symlink that is not an error link is not served either.
    let alias = curl(proxy, &[&origin.url("/t/alias.sh")]);
    assert_eq!(
        (alias.status, alias.text().as_str()),
        (404, "no such endpoint")
    );
    assert_eq!(origin.hits("/t/alias.sh"), 1);

    // Nothing is stored through the link: neither a body nor a new link.
    let other = curl(proxy, &[&origin.url("/t/bob/other.txt")]);
    assert_eq!((other.status, other.text().as_str()), (200, "other\n"));
    assert_eq!(
        curl(proxy, &[&origin.url("/t/bob/other.txt")]).text(),
        "other\n"
    );
    assert_eq!(origin.hits("/t/bob/other.txt"), 2);
    assert_eq!(curl(proxy, &[&origin.url("/t/bob/gone.txt")]).status, 404);
    assert_eq!(curl(proxy, &[&origin.url("/t/bob/gone.txt")]).status, 404);
    assert_eq!(origin.hits("/t/bob/gone.txt"), 2);
    let mut planted: Vec<_> = std::fs::read_dir(t.join("404"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    planted.sort();
    assert_eq!(planted, ["tool.sh"]);

    // The link itself still answers for its own URL.
    let bob = curl(proxy, &[&origin.url("/t/bob")]);
    assert_eq!(
        (bob.status, bob.x_proxlet.as_str()),
        (404, "error-links;hit")
    );
    assert_eq!(origin.hits("/t/bob"), 0);
    assert_eq!(std::fs::read_link(t.join("bob")).unwrap(), Path::new("404"));
}
