//! The cache plugin's default freshness rules (`plugins/cache/src/rules.rs`,
//! compiled natively) against the URLs real package managers ask for: the
//! documents they change in place are revalidated, published files never.

#[path = "../../plugins/cache/src/rules.rs"]
mod rules;

use rules::{parse_duration, Rule, DEFAULT_RULES, DEFAULT_TTL};

fn defaults() -> Vec<Rule> {
    DEFAULT_RULES
        .iter()
        .map(|r| Rule::new(Some(r.url), r.content_type, DEFAULT_TTL).unwrap())
        .collect()
}

fn revalidated(url: &str, kind: &str) -> bool {
    defaults().iter().any(|r| r.matches(url, kind))
}

/// `(url, content type)` pairs that change in place.
const MUTABLE: &[(&str, &str)] = &[
    ("https://pypi.org/simple/requests/", "text/html"),
    ("https://registry.npmjs.org/left-pad", "application/json"),
    (
        "https://registry.npmjs.org/@types%2Fnode",
        "application/json",
    ),
    ("https://deb.debian.org/debian/dists/bookworm/InRelease", ""),
    (
        "https://deb.debian.org/debian/dists/bookworm/main/binary-amd64/Packages.xz",
        "",
    ),
    // Cargo sparse index: root config and every prefix layout.
    ("https://index.crates.io/config.json", "application/json"),
    ("https://index.crates.io/1/a", "text/plain"),
    ("https://index.crates.io/2/io", "text/plain"),
    ("https://index.crates.io/3/s/syn", "text/plain"),
    ("https://index.crates.io/se/rd/serde", "text/plain"),
    ("https://index.crates.io/se/rd/serde_json", "text/plain"),
    ("https://index.crates.io/wa/sm/wasm-bindgen", "text/plain"),
    (
        "https://127.0.0.1:8443/index/config.json",
        "application/json",
    ),
    ("https://127.0.0.1:8443/index/he/ll/hello", "text/plain"),
    ("https://cargo.example.com/api/cargo/team/index/3/a/abc", ""),
    // Go module proxy.
    (
        "https://proxy.golang.org/golang.org/x/text/@v/list",
        "text/plain",
    ),
    (
        "https://proxy.golang.org/github.com/!burnt!sushi/toml/@latest",
        "application/json",
    ),
    (
        "https://proxy.golang.org/github.com/!burnt!sushi/toml/@v/master.info",
        "application/json",
    ),
    // Maven.
    (
        "https://repo.maven.apache.org/maven2/org/slf4j/slf4j-api/maven-metadata.xml",
        "text/xml",
    ),
    (
        "https://repo.maven.apache.org/maven2/org/slf4j/slf4j-api/maven-metadata.xml.sha1",
        "text/plain",
    ),
    (
        "https://repo.example.com/snapshots/com/example/app/1.0-SNAPSHOT/app-1.0-SNAPSHOT.jar",
        "application/java-archive",
    ),
    (
        "https://repo.example.com/snapshots/com/example/app/1.0-SNAPSHOT/maven-metadata.xml",
        "text/xml",
    ),
];

/// Published once, never changed.
const IMMUTABLE: &[(&str, &str)] = &[
    (
        "https://files.pythonhosted.org/packages/ab/cd/requests-2.32.3-py3-none-any.whl",
        "application/octet-stream",
    ),
    (
        "https://registry.npmjs.org/left-pad/-/left-pad-1.3.0.tgz",
        "application/octet-stream",
    ),
    (
        "https://deb.debian.org/debian/pool/main/c/curl/curl_7.88.1-10_amd64.deb",
        "",
    ),
    // Cargo downloads, in crates.io's and the default `dl` layouts.
    (
        "https://static.crates.io/crates/serde/serde-1.0.210.crate",
        "application/gzip",
    ),
    (
        "https://static.crates.io/crates/serde/1.0.210/download",
        "application/gzip",
    ),
    (
        "https://127.0.0.1:8443/api/v1/crates/hello/1.0.0/download",
        "application/gzip",
    ),
    // Go: a version's files.
    (
        "https://proxy.golang.org/golang.org/x/text/@v/v0.14.0.info",
        "application/json",
    ),
    (
        "https://proxy.golang.org/golang.org/x/text/@v/v0.14.0.mod",
        "text/plain",
    ),
    (
        "https://proxy.golang.org/golang.org/x/text/@v/v0.14.0.zip",
        "application/zip",
    ),
    (
        "https://proxy.golang.org/github.com/!burnt!sushi/toml/@v/v1.3.2.zip",
        "application/zip",
    ),
    // Maven: released artifacts and their checksums, timestamped snapshots.
    (
        "https://repo.maven.apache.org/maven2/org/slf4j/slf4j-api/2.0.9/slf4j-api-2.0.9.jar",
        "application/java-archive",
    ),
    (
        "https://repo.maven.apache.org/maven2/org/slf4j/slf4j-api/2.0.9/slf4j-api-2.0.9.pom",
        "text/xml",
    ),
    (
        "https://repo.maven.apache.org/maven2/org/slf4j/slf4j-api/2.0.9/slf4j-api-2.0.9.jar.sha1",
        "text/plain",
    ),
    (
        "https://repo.maven.apache.org/maven2/org/ow2/asm/asm/9.6/asm-9.6.pom.md5",
        "text/plain",
    ),
    (
        "https://repo.example.com/snapshots/com/example/app/1.0-SNAPSHOT/app-1.0-20240101.120000-1.jar",
        "application/java-archive",
    ),
];

#[test]
fn documents_changed_in_place_are_revalidated() {
    for (url, kind) in MUTABLE {
        assert!(revalidated(url, kind), "{url} ({kind}) must be revalidated");
    }
}

#[test]
fn published_files_are_fresh_forever() {
    for (url, kind) in IMMUTABLE {
        assert!(!revalidated(url, kind), "{url} ({kind}) must stay fresh");
    }
}

#[test]
fn a_rule_matches_only_when_everything_it_names_does() {
    let typed = Rule::new(Some("^https://r/"), Some("json"), "1h").unwrap();
    assert!(typed.matches("https://r/pkg", "application/json"));
    assert!(!typed.matches("https://r/pkg", "text/html"));
    assert!(!typed.matches("https://other/pkg", "application/json"));
    let any = Rule::new(None, None, "0").unwrap();
    assert!(any.matches("https://anything/", ""));
    assert_eq!(any.ttl.as_secs(), 0);
    assert!(Rule::new(Some("("), None, "1m").is_err());
    assert!(Rule::new(None, None, "soon").is_err());
}

#[test]
fn durations_read_with_units() {
    for (text, seconds) in [
        ("90", 90),
        ("90s", 90),
        ("10m", 600),
        ("2h", 7200),
        ("1d", 86400),
    ] {
        assert_eq!(parse_duration(text).map(|d| d.as_secs()), Some(seconds));
    }
    for text in ["", "m", "1w", "-1m", "1.5h"] {
        assert_eq!(parse_duration(text), None, "{text:?}");
    }
}
