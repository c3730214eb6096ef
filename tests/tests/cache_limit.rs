//! The cache's size limit (`max_size`) through the real binary: least
//! recently used entries are evicted whole (body, variants, metadata, error
//! link) and fetched again when asked for, hand-dropped files count, files
//! being sent or stored while eviction runs arrive whole, and bad values
//! are refused at start.

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use proxlet_tests::{curl, origin::pattern, wait_until, Origin, Proxlet, TestCa};

/// Long enough for an eviction round on a loaded machine; the tests poll.
const EVICTION: Duration = Duration::from_secs(30);

/// The caching stack with `cache_config` for the cache plugin, caching into
/// `<dir>/cache`, trusting `origin`.
fn start(dir: &Path, origin: &Origin, cache_config: &str) -> Result<Proxlet, String> {
    let upstream_ca: Vec<String> = origin.ca.iter().map(|_| origin.ca_pem()).collect();
    let config = format!(
        "upstream_ca = {upstream_ca:?}\n\
         [[plugin]]\nname = \"pypi-slash\"\n\
         [[plugin]]\nname = \"error-links\"\n\
         [[plugin]]\nname = \"cache\"\nconfig = {cache_config}\n"
    );
    Proxlet::start_configured(dir, &config, &[])
}

/// Whether anything (a file, a link) is at `path`.
fn present(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

#[test]
fn least_recently_used_entries_are_evicted_whole_and_fetched_again() {
    let origin = Origin::https(Arc::new(TestCa::new("cache limit test origin CA")));
    let body = |byte: u8| vec![byte; 256 << 10];
    origin.put("/a", vec![("application/octet-stream", body(b'a'))]);
    origin.put(
        "/b",
        vec![
            ("application/json", body(b'b')),
            ("text/html", b"<p>b</p>".to_vec()),
        ],
    );
    origin.put("/c", vec![("application/octet-stream", body(b'c'))]);
    origin.put("/d", vec![("application/octet-stream", body(b'd'))]);
    let dir = tempfile::tempdir().unwrap();
    // Each entry takes 256 KiB and a 4 KiB block of metadata: three fit
    // in 1 MiB, a fourth does not.
    let proxy = start(
        dir.path(),
        &origin,
        "{ max_size = \"1M\", rescan = \"100ms\" }",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let cache = dir.path().join("cache");
    let host = cache.join(format!("127.0.0.1_{}", origin.addr.port()));
    let meta = |name: &str| {
        cache
            .join(".proxlet-meta")
            .join(format!("127.0.0.1_{}/{name}#meta.json", origin.addr.port()))
    };
    let get = |path: &str, accept: &str| {
        curl(
            &proxy,
            &["-H", &format!("Accept: {accept}"), &origin.url(path)],
        )
    };

    let a = get("/a", "*/*");
    assert_eq!(
        (a.status, a.x_proxlet.as_str()),
        (200, "cache;miss"),
        "{a:?}"
    );
    // `b`: its JSON variant, then (the HTML gone upstream) an error link
    // beside it; all of it is one entry.
    let b = get("/b", "application/json");
    assert_eq!(
        (b.status, b.x_proxlet.as_str()),
        (200, "cache;miss"),
        "{b:?}"
    );
    origin.remove("/b");
    assert_eq!(get("/b", "text/html").status, 404);
    let (b_json, b_link) = (host.join("b#json"), host.join("b"));
    assert_eq!(std::fs::read(&b_json).unwrap(), body(b'b'));
    assert_eq!(std::fs::read_link(&b_link).unwrap(), Path::new("404"));
    assert!(present(&meta("b")));
    assert_eq!(get("/c", "*/*").x_proxlet, "cache;miss");
    // `a` is used again: now `b` is the least recently used.
    let a = get("/a", "*/*");
    assert_eq!(
        (a.x_proxlet.as_str(), a.body.len()),
        ("cache;hit", 256 << 10)
    );
    for name in ["a", "b#json", "c"] {
        assert!(present(&host.join(name)), "{name} under the limit");
    }

    // A file dropped by hand counts: the next scan finds the total over.
    let dropped = host.join("hand/dropped.bin");
    std::fs::create_dir_all(dropped.parent().unwrap()).unwrap();
    std::fs::write(&dropped, vec![b'h'; 300_000]).unwrap();
    // An entry's files go one by one, its metadata last: wait for all.
    assert!(
        wait_until(EVICTION, || !present(&b_json)
            && !present(&b_link)
            && !present(&meta("b"))),
        "b evicted whole (body, error link, metadata) once the dropped file is counted:\n{}",
        proxy.log()
    );
    for name in ["a", "c", "hand/dropped.bin"] {
        assert!(present(&host.join(name)), "{name} kept");
    }
    assert!(present(&meta("a")) && present(&meta("c")));

    // A fourth entry: `c` is the least recently used now.
    assert_eq!(get("/d", "*/*").x_proxlet, "cache;miss");
    assert!(
        wait_until(EVICTION, || !present(&host.join("c"))
            && !present(&meta("c"))),
        "c evicted with its metadata:\n{}",
        proxy.log()
    );
    for name in ["a", "d", "hand/dropped.bin"] {
        assert!(present(&host.join(name)), "{name} kept");
    }
    // The round's summary is logged once its last file is gone.
    assert!(
        proxy.wait_for_log("evicted the 1 least recently used entry", EVICTION),
        "{}",
        proxy.log()
    );

    // The entry used recently was never fetched again; evicted ones are.
    let a = get("/a", "*/*");
    assert!(
        a.x_proxlet == "cache;hit" && a.body == body(b'a'),
        "{}",
        a.x_proxlet
    );
    assert_eq!(origin.hits("/a"), 1);
    let c = get("/c", "*/*");
    assert!(
        c.x_proxlet == "cache;miss" && c.body == body(b'c'),
        "{}",
        c.x_proxlet
    );
    assert_eq!(origin.hits("/c"), 2);
    origin.put("/b", vec![("application/json", body(b'B'))]);
    let b = get("/b", "application/json");
    assert!(
        b.x_proxlet == "cache;miss" && b.body == body(b'B'),
        "{}",
        b.x_proxlet
    );
}

#[test]
fn a_max_size_saved_in_the_watched_config_applies_at_once() {
    let origin = Origin::http();
    let dir = tempfile::tempdir().unwrap();
    let proxy =
        start(dir.path(), &origin, "{ max_size = \"10M\" }").unwrap_or_else(|e| panic!("{e}"));
    let bytes = dir
        .path()
        .join(format!("cache/http+127.0.0.1_{}/bytes", origin.addr.port()));
    for size in [1_000_000, 1_000_001, 1_000_002] {
        let url = origin.url(&format!("/bytes/{size}"));
        assert_eq!(curl(&proxy, &[&url]).x_proxlet, "cache;miss");
    }
    let config = dir.path().join("proxlet.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    // A bad value is refused like any broken edit: the limit stays.
    std::fs::write(&config, text.replace("\"10M\"", "\"2 lots\"")).unwrap();
    assert!(
        proxy.wait_for_log("max_size = \"2 lots\" is not a size", EVICTION),
        "{}",
        proxy.log()
    );
    assert!(bytes.join("1000000").exists());
    // Two of the three entries fit in 2.5 MB: the oldest goes.
    std::fs::write(&config, text.replace("\"10M\"", "\"2.5M\"")).unwrap();
    assert!(
        wait_until(EVICTION, || !bytes.join("1000000").exists()),
        "{}",
        proxy.log()
    );
    assert!(
        proxy.log().contains("max_size now 2.5 MiB"),
        "{}",
        proxy.log()
    );
    assert!(bytes.join("1000001").exists() && bytes.join("1000002").exists());
}

/// A download over a raw HTTP/1.1 connection through the proxy that stops
/// reading after the head and its first bytes, until `finish`.
struct PausedDownload {
    stream: TcpStream,
    head: String,
    body: Vec<u8>,
}

impl PausedDownload {
    fn start(proxy: &Proxlet, origin: &Origin, path: &str) -> Self {
        let mut stream = TcpStream::connect(proxy.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        write!(
            stream,
            "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            origin.url(path),
            origin.addr
        )
        .unwrap();
        let mut received = Vec::new();
        let mut chunk = vec![0; 64 << 10];
        loop {
            let n = stream.read(&mut chunk).unwrap();
            assert!(n > 0, "the proxy closed early: {received:?}");
            received.extend_from_slice(&chunk[..n]);
            if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
                if received.len() >= end + 4 + (64 << 10) {
                    let body = received.split_off(end + 4);
                    let head = String::from_utf8(received).unwrap();
                    return Self { stream, head, body };
                }
            }
        }
    }

    /// Reads the rest; the whole body.
    fn finish(mut self) -> Vec<u8> {
        self.stream.read_to_end(&mut self.body).unwrap();
        self.body
    }
}

#[test]
fn downloads_in_flight_while_eviction_runs_arrive_whole() {
    let origin = Origin::http();
    let dir = tempfile::tempdir().unwrap();
    let proxy =
        start(dir.path(), &origin, "{ max_size = \"40M\" }").unwrap_or_else(|e| panic!("{e}"));
    let bytes = dir
        .path()
        .join(format!("cache/http+127.0.0.1_{}/bytes", origin.addr.port()));
    let big = 32 << 20;
    let served_path = format!("/bytes/{big}");
    let stored_path = format!("/bytes/{}", big + 1);

    assert_eq!(
        curl(&proxy, &[&origin.url(&served_path)]).x_proxlet,
        "cache;miss"
    );
    let served_file = bytes.join(big.to_string());
    assert!(present(&served_file));
    // One client is sent the cached file, another fills a new one; both
    // stop reading with most of it to come.
    let served = PausedDownload::start(&proxy, &origin, &served_path);
    assert!(served.head.contains("cache;hit"), "{}", served.head);
    let stored = PausedDownload::start(&proxy, &origin, &stored_path);
    assert!(stored.head.contains("cache;miss"), "{}", stored.head);
    let in_progress = || {
        std::fs::read_dir(&bytes).unwrap().any(|f| {
            let name = f.unwrap().file_name();
            let name = name.to_string_lossy();
            name.starts_with(&format!(".{}.proxlet-", big + 1)) && name.ends_with(".tmp")
        })
    };
    assert!(in_progress(), "the second download is being stored");

    // 32 + 6 + 3 MiB is over 40: the file being sent is the least recently
    // used entry and goes; the one being stored is not an entry yet.
    for size in [6 << 20, 3 << 20] {
        let url = origin.url(&format!("/bytes/{size}"));
        assert_eq!(curl(&proxy, &[&url]).x_proxlet, "cache;miss");
    }
    assert!(
        wait_until(EVICTION, || !present(&served_file)),
        "the file being sent is evicted:\n{}",
        proxy.log()
    );
    assert!(in_progress(), "the store in progress is left alone");

    assert!(
        served.finish() == pattern(big),
        "the evicted file arrives whole"
    );
    assert!(stored.finish() == pattern(big + 1), "the stored one too");
    let stored_file = bytes.join((big + 1).to_string());
    assert!(
        wait_until(EVICTION, || std::fs::metadata(&stored_file)
            .is_ok_and(|m| m.len() == big as u64 + 1)),
        "the stored download is in place"
    );
    // Now 6 + 3 + 32 MiB: the 6 MiB entry is the least recently used.
    assert!(
        wait_until(EVICTION, || !present(&bytes.join((6 << 20).to_string()))),
        "{}",
        proxy.log()
    );
    assert!(std::fs::read(&stored_file).unwrap() == pattern(big + 1));
    assert!(present(&bytes.join((3 << 20).to_string())));
}

#[test]
fn bad_max_size_values_are_refused_at_start_with_what_is_expected() {
    let origin = Origin::http();
    for (value, shown) in [
        ("\"20X\"", "max_size = \"20X\""),
        ("\"0\"", "max_size = \"0\""),
        ("\"1.5\"", "max_size = \"1.5\""),
        ("\"-1G\"", "max_size = \"-1G\""),
        ("-5", "max_size = -5"),
        ("true", "max_size = true"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let error = start(dir.path(), &origin, &format!("{{ max_size = {value} }}"))
            .map(|_| ())
            .expect_err(value);
        assert!(
            error.contains(&format!(
                "invalid plugin configuration: [[plugin]] \"cache\": {shown} is not a size"
            )) && error.contains("\"500M\", \"20G\", \"1.5G\" or a number of bytes"),
            "{value}: {error}"
        );
        assert!(!error.contains("panicked"), "{error}");
        assert!(
            !PathBuf::from(dir.path()).join("cache").exists(),
            "nothing started"
        );
    }
}
