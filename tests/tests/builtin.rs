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
        let dir = tempfile::tempdir().unwrap();
        let proxy = Self::start(dir.path(), origin, plugins).unwrap_or_else(|e| panic!("{e}"));
        Self { dir, proxy }
    }

    fn start(dir: &Path, origin: &Origin, plugins: &str) -> Result<Proxlet, String> {
        let config = dir.join("proxlet.toml");
        let ca = origin.ca.as_ref().map(|ca| ca.path().to_owned());
        std::fs::write(
            &config,
            format!(
                "upstream_ca = {:?}\n{plugins}\n",
                ca.into_iter().collect::<Vec<_>>()
            ),
        )
        .unwrap();
        let home = dir.join("home");
        let cache = dir.join("cache");
        Proxlet::start_with_home(
            &home,
            &[
                "--config",
                config.to_str().unwrap(),
                "--cache-dir",
                cache.to_str().unwrap(),
            ],
        )
    }

    /// The cache dir of `origin`'s host.
    fn host_dir(&self, origin: &Origin) -> PathBuf {
        self.dir
            .path()
            .join("cache")
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
    assert!(proxy.log().contains("stale copy"), "{}", proxy.log());
}

#[test]
fn negotiated_documents_are_stored_per_type_and_never_crossed() {
    let origin = https_origin();
    let json = br#"{"meta":{"api-version":"1.0"},"name":"pkg","files":[]}"#.to_vec();
    let html = b"<html><a href=\"x\">x</a></html>".to_vec();
    origin.put(
        "/simple/pkg/",
        vec![
            ("application/vnd.pypi.simple.v1+json", json.clone()),
            ("text/html", html.clone()),
        ],
    );
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
        assert_eq!(got.x_proxlet, "", "{path}");
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
    let ca = origin
        .ca
        .as_ref()
        .unwrap()
        .path()
        .to_str()
        .unwrap()
        .to_owned();
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
        assert_eq!((got.status, got.x_proxlet.as_str()), (200, ""));
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
