//! `--admin`'s `/metrics`, scraped over HTTP and parsed by the reference
//! Prometheus client's parser (`prometheus_client` from PyPI, installed by
//! `./test.sh`): the counters move as requests hit, miss and bypass the
//! cache, connections and tunnels are counted while open, plugin calls,
//! traps and reloads are counted per plugin.

use std::{
    collections::BTreeMap,
    io::Write,
    path::Path,
    process::{Command, Stdio},
    sync::Arc,
    time::Duration,
};

use proxlet_tests::{curl, test_tools, wait_until, Origin, Proxlet, TestCa};

/// Parses the exposition on stdin with the OpenMetrics parser (strict: it
/// rejects anything a scraper would), checks the classic Prometheus text
/// parser reads it too, and prints one `name{label=value,…} value` line per
/// sample, labels sorted.
const PARSE: &str = r#"
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
from prometheus_client.parser import text_string_to_metric_families as classic

text = sys.stdin.read()
classic_names = {s.name for f in classic(text) for s in f.samples}
for family in openmetrics(text):
    for s in family.samples:
        assert s.name in classic_names, f"classic parser lost {s.name}"
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        print(f"{s.name}{{{labels}}} {s.value}")
"#;

struct Scrape(BTreeMap<String, f64>);

impl Scrape {
    /// The value of `name{labels}` (labels sorted, `k=v` joined by commas).
    fn get(&self, sample: &str) -> f64 {
        *self
            .0
            .get(sample)
            .unwrap_or_else(|| panic!("no sample {sample} in {:#?}", self.0))
    }
}

fn scrape(admin: &str) -> Scrape {
    let response = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-D", "-", "--noproxy", "*"])
        .arg(format!("{admin}/metrics"))
        .output()
        .expect("curl runs");
    assert!(response.status.success(), "{response:?}");
    let text = String::from_utf8(response.stdout).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{head}"
    );
    let mut parser = Command::new(test_tools().join("py/bin/python"))
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the prometheus_client venv exists: run ./test.sh");
    parser
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let parsed = parser.wait_with_output().unwrap();
    assert!(
        parsed.status.success(),
        "the exposition does not parse: {}\n{body}",
        String::from_utf8_lossy(&parsed.stderr)
    );
    Scrape(
        String::from_utf8(parsed.stdout)
            .unwrap()
            .lines()
            .map(|line| {
                let (name, value) = line.rsplit_once(' ').unwrap();
                (name.to_owned(), value.parse().unwrap())
            })
            .collect(),
    )
}

/// The admin URL proxlet printed.
fn admin_url(proxy: &Proxlet) -> String {
    let log = proxy.log();
    let addr = log
        .lines()
        .find_map(|l| l.strip_prefix("proxlet admin on "))
        .unwrap_or_else(|| panic!("no admin line in\n{log}"));
    addr.to_owned()
}

fn start(dir: &Path, origin: &Origin, extra: &str) -> Proxlet {
    let config = format!(
        "admin = \"127.0.0.1:0\"\n[[plugin]]\nname = \"error-links\"\n[[plugin]]\nname = \"cache\"\n{extra}"
    );
    Proxlet::start_configured(dir, &config, &["--upstream-ca", &origin.ca_pem()])
        .unwrap_or_else(|e| panic!("{e}"))
}

const MISS: &str = "proxlet_cache_outcomes_total{outcome=miss}";
const HIT: &str = "proxlet_cache_outcomes_total{outcome=hit}";
const BYPASS: &str = "proxlet_cache_outcomes_total{outcome=bypass}";
const ERROR_LINK: &str = "proxlet_cache_outcomes_total{outcome=error_link}";
const OK: &str = "proxlet_requests_total{mode=regular,status_class=2xx}";
const NOT_FOUND: &str = "proxlet_requests_total{mode=regular,status_class=4xx}";
const FROM_CACHE: &str = "proxlet_bytes_sent_total{source=cache}";
const FROM_UPSTREAM: &str = "proxlet_bytes_sent_total{source=upstream}";
const CLIENTS: &str = "proxlet_connections_active{kind=client}";
const TUNNELS: &str = "proxlet_connections_active{kind=tunnel}";

#[test]
fn counters_move_as_the_cache_hits_misses_and_bypasses() {
    let origin = Origin::https(Arc::new(TestCa::new("metrics origin CA")));
    let dir = tempfile::tempdir().unwrap();
    let proxy = start(dir.path(), &origin, "");
    let admin = admin_url(&proxy);
    let before = scrape(&admin);
    assert_eq!(before.get(MISS), 0.0);
    assert_eq!(before.get(OK), 0.0);
    assert_eq!(before.get("proxlet_upstream_ttfb_seconds_count{}"), 0.0);

    let url = origin.url("/bytes/1000");
    let miss = curl(&proxy, &[&url]);
    assert_eq!((miss.status, miss.x_proxlet.as_str()), (200, "cache;miss"));
    // Counted when the response is done, just after curl has it all.
    let wait = |sample: &str, at_least: f64| {
        let mut last = 0.0;
        let held = wait_until(Duration::from_secs(5), || {
            last = scrape(&admin).get(sample);
            last >= at_least
        });
        assert!(held, "{sample} = {last}, expected ≥ {at_least}");
    };
    wait(FROM_UPSTREAM, 1000.0);
    let after_miss = scrape(&admin);
    assert_eq!(after_miss.get(MISS), 1.0);
    assert_eq!(after_miss.get(HIT), 0.0);
    assert_eq!(after_miss.get(FROM_CACHE), 0.0);
    assert!(after_miss.get(OK) >= 1.0);
    assert_eq!(after_miss.get("proxlet_upstream_ttfb_seconds_count{}"), 1.0);
    assert_eq!(
        after_miss.get("proxlet_upstream_connect_seconds_count{}"),
        1.0
    );
    let inf = "proxlet_upstream_connect_seconds_bucket{le=+Inf}";
    assert_eq!(after_miss.get(inf), 1.0);
    let cache_calls = "proxlet_plugin_call_seconds_count{hook=on-request,plugin=cache}";
    assert_eq!(after_miss.get(cache_calls), 1.0);
    let response_calls = "proxlet_plugin_call_seconds_count{hook=on-response,plugin=cache}";
    assert_eq!(after_miss.get(response_calls), 1.0);

    for _ in 0..3 {
        let hit = curl(&proxy, &[&url]);
        assert_eq!((hit.status, hit.x_proxlet.as_str()), (200, "cache;hit"));
    }
    wait(FROM_CACHE, 3000.0);
    let after_hits = scrape(&admin);
    assert_eq!(after_hits.get(HIT), 3.0);
    assert_eq!(after_hits.get(MISS), 1.0);
    assert_eq!(after_hits.get(FROM_UPSTREAM), 1000.0);
    // The first hit let the host keep the answer; the next two reused it
    // without calling the plugin.
    assert_eq!(after_hits.get(cache_calls), 2.0);
    // Hits never go upstream.
    assert_eq!(after_hits.get("proxlet_upstream_ttfb_seconds_count{}"), 1.0);

    let post = curl(&proxy, &["-d", "x=1", &origin.url("/echo")]);
    assert_eq!(
        (post.status, post.x_proxlet.as_str()),
        (200, "cache;bypass")
    );
    wait(BYPASS, 1.0);

    // A 404 is remembered as an error link, then answered from it.
    let gone = origin.url("/status/404");
    assert_eq!(curl(&proxy, &[&gone]).x_proxlet, "cache;miss");
    let linked = curl(&proxy, &[&gone]);
    assert_eq!(
        (linked.status, linked.x_proxlet.as_str()),
        (404, "error-links;hit")
    );
    wait(ERROR_LINK, 1.0);
    let end = scrape(&admin);
    assert_eq!(end.get(MISS), 2.0);
    assert_eq!(end.get(NOT_FOUND), 2.0);
    assert_eq!(end.get(ERROR_LINK), 1.0);
    assert_eq!(end.get(HIT), 3.0);
    assert_eq!(origin.hits("/bytes/1000"), 1);

    // The proxy's own port does not serve the metrics.
    let through = curl(&proxy, &[&format!("{}/metrics", proxy.url())]);
    assert_ne!(through.status, 200, "{}", through.text());
}

#[test]
fn open_connections_and_tunnels_are_counted_until_they_close() {
    let https = Origin::https(Arc::new(TestCa::new("metrics tunnel CA")));
    let http = Origin::http();
    let dir = tempfile::tempdir().unwrap();
    let proxy = start(dir.path(), &https, "");
    let admin = admin_url(&proxy);
    let slow = |url: String| {
        let (ca, proxy_url) = (proxy.ca_path(), proxy.url());
        std::thread::spawn(move || {
            Command::new("curl")
                .args(["-sS", "--max-time", "30", "--cacert"])
                .arg(ca)
                .args(["-x", &proxy_url, &url])
                .output()
                .unwrap()
        })
    };
    let plain = slow(http.url("/slow/1500"));
    let tunnelled = slow(https.url("/slow/1500"));
    assert!(
        wait_until(Duration::from_secs(10), || {
            let now = scrape(&admin);
            now.get(CLIENTS) >= 1.0 && now.get(TUNNELS) >= 1.0
        }),
        "{:#?}",
        scrape(&admin).0
    );
    assert!(plain.join().unwrap().status.success());
    assert!(tunnelled.join().unwrap().status.success());
    assert!(
        wait_until(Duration::from_secs(10), || {
            let now = scrape(&admin);
            now.get(CLIENTS) == 0.0 && now.get(TUNNELS) == 0.0
        }),
        "{:#?}",
        scrape(&admin).0
    );
}

#[test]
fn a_plugin_that_reads_no_head_is_given_no_header_field() {
    let origin = Origin::https(Arc::new(TestCa::new("metrics fields CA")));
    let dir = tempfile::tempdir().unwrap();
    let hello = proxlet_tests::guest("rust_hello.wasm");
    let proxy = start(
        dir.path(),
        &origin,
        &format!("[[plugin]]\nname = \"hello\"\npath = {hello:?}\n"),
    );
    let admin = admin_url(&proxy);
    for n in 0..3 {
        let got = curl(
            &proxy,
            &[
                "-D",
                "-",
                "-H",
                "X-Many: 1",
                "-H",
                "Accept-Language: en",
                &origin.url(&format!("/bytes/{n}")),
            ],
        );
        assert!(got.text().contains("x-hello: world"), "{got:?}");
    }
    let now = scrape(&admin);
    assert_eq!(
        now.get("proxlet_plugin_call_seconds_count{hook=on-response,plugin=hello}"),
        3.0
    );
    // The example only adds a header: nothing of either head was copied in.
    assert_eq!(
        now.get("proxlet_plugin_header_fields_total{plugin=hello}"),
        0.0
    );
    // The cache reads fields (Cache-Control, Vary…): the counter counts.
    assert!(now.get("proxlet_plugin_header_fields_total{plugin=cache}") > 0.0);
}

#[test]
fn plugin_traps_and_reloads_are_counted_per_plugin() {
    let origin = Origin::https(Arc::new(TestCa::new("metrics plugin CA")));
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("sandbox.wasm");
    std::fs::copy(proxlet_tests::guest("sandbox.wasm"), &plugin).unwrap();
    let proxy = start(
        dir.path(),
        &origin,
        &format!(
            "[[plugin]]\nname = \"sandbox\"\npath = {plugin:?}\nmatch = {{ url = \"/trap\" }}\non_error = \"fail-closed\"\nconfig = {{ mode = \"panic\" }}\n"
        ),
    );
    let admin = admin_url(&proxy);
    let traps = "proxlet_plugin_traps_total{plugin=sandbox}";
    assert_eq!(scrape(&admin).get(traps), 0.0);
    let trapped = curl(&proxy, &[&origin.url("/trap")]);
    assert!(trapped.status >= 500, "{trapped:?}");
    // Other URLs do not reach the plugin, and the proxy keeps serving.
    assert_eq!(curl(&proxy, &[&origin.url("/bytes/10")]).status, 200);
    let now = scrape(&admin);
    assert_eq!(now.get(traps), 1.0);
    assert_eq!(
        now.get("proxlet_plugin_call_seconds_count{hook=on-request,plugin=sandbox}"),
        1.0
    );
    assert_eq!(now.get("proxlet_plugin_traps_total{plugin=cache}"), 0.0);

    // A broken file is a failed reload; the component again is a good one.
    let failed = "proxlet_plugin_reloads_total{plugin=sandbox,result=failed}";
    let ok = "proxlet_plugin_reloads_total{plugin=sandbox,result=ok}";
    std::fs::write(&plugin, b"\0asm not a component").unwrap();
    let counted = |sample: &str| {
        wait_until(Duration::from_secs(10), || {
            scrape(&admin).0.get(sample).copied() == Some(1.0)
        })
    };
    assert!(counted(failed), "{}", proxy.log());
    let rebuilt = dir.path().join("other.wasm");
    std::fs::copy(proxlet_tests::guest("rust_hello.wasm"), &rebuilt).unwrap();
    std::fs::rename(&rebuilt, &plugin).unwrap();
    assert!(counted(ok), "{}", proxy.log());
}

#[test]
fn admin_outside_loopback_needs_allow_remote() {
    let out = proxlet_tests::proxlet::run(&["--admin", "0.0.0.0:0", "--plugin", "none"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--allow-remote"), "{stderr}");
    let out = proxlet_tests::proxlet::run(&["--admin", "nowhere", "--plugin", "none"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--admin") && stderr.contains("HOST:PORT"),
        "{stderr}"
    );
}
