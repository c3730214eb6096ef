//! Freshness rules: which stored entries are asked about again, and when.
//!
//! A package registry publishes most files once and never changes them
//! (wheels, tarballs, `.crate`s, module zips, jars): those are fresh
//! forever. What changes in place is the small set of documents that list
//! what exists — indexes, version lists, repository metadata — and only
//! those are revalidated by default, so a new release is seen within the
//! TTL while every artifact is served without asking the upstream.
//!
//! Pure (no I/O, no host calls), so the tests compile it natively and check
//! the default rules against the URLs real clients ask for.

use std::time::Duration;

/// A default rule: a regex on the URL and, optionally, a substring the
/// stored Content-Type must contain.
pub struct DefaultRule {
    pub url: &'static str,
    pub content_type: Option<&'static str>,
}

/// How long an entry matching a default rule stays fresh.
pub const DEFAULT_TTL: &str = "10m";

const fn rule(url: &'static str) -> DefaultRule {
    DefaultRule {
        url,
        content_type: None,
    }
}

/// The documents package managers change in place. A rule that also
/// matches an immutable file costs one conditional request per TTL, never
/// a wrong answer, so the patterns stay simple rather than exact.
pub const DEFAULT_RULES: &[DefaultRule] = &[
    // PyPI simple pages (PEP 503/691).
    rule("/simple/"),
    // npm packuments: a JSON document at /name or /@scope%2fname.
    DefaultRule {
        url: r"^https?://[^/]+/(@[^/]+%2[fF])?[^/@?][^/?]*$",
        content_type: Some("json"),
    },
    // apt indexes; by-hash and pool files never change.
    rule(r"/dists/[^/]+/(InRelease|Release|Release\.gpg)$"),
    rule(r"/dists/.+/(Packages|Sources|Contents-[^/]+|Translation-[^/]+)(\.(gz|xz|bz2|lz4|zst))?$"),
    // Cargo sparse registries: `config.json` at the index root, and one
    // file per crate listing its versions, under a prefix made of the
    // (lowercased) name: `1/a`, `2/ab`, `3/a/abc`, `ab/cd/abcd…`. Crate
    // names have no `.`, so neither `.crate` files nor
    // `…/{crate}/{version}/download` URLs match.
    rule(r"/config\.json$"),
    rule(
        r"/(1/[a-z0-9_-]|2/[a-z0-9_-]{2}|3/[a-z0-9_-]/[a-z0-9_-]{3}|[a-z0-9_-]{2}/[a-z0-9_-]{2}/[a-z0-9_-]{4,64})$",
    ),
    // Go module proxies (GOPROXY protocol): the version list, the latest
    // version, and a query by branch or commit (`@v/main.info`); `.info`,
    // `.mod` and `.zip` of a version (`@v/v1.2.3.zip`) never change.
    rule(r"/@v/list$"),
    rule(r"/@latest$"),
    rule(r"/@v/[^v/][^/]*\.info$"),
    // Maven repositories: the metadata listing an artifact's versions
    // (and its checksums, which change with it), and snapshots deployed
    // under the fixed name `-SNAPSHOT` rather than a timestamp. Released
    // jars, poms and their checksums never change.
    rule(r"/maven-metadata\.xml(\.(md5|sha1|sha256|sha512|asc))?$"),
    rule(r"-SNAPSHOT/[^/]*-SNAPSHOT[^/]*$"),
];

/// A compiled `revalidate` rule.
pub struct Rule {
    url: Option<regex_lite::Regex>,
    content_type: Option<String>,
    pub ttl: Duration,
}

impl Rule {
    /// A rule from its config: a URL regex, a Content-Type substring and a
    /// TTL like "10m" (every one given must match).
    pub fn new(url: Option<&str>, content_type: Option<&str>, ttl: &str) -> Result<Self, String> {
        Ok(Self {
            url: url
                .map(regex_lite::Regex::new)
                .transpose()
                .map_err(|e| format!("revalidate.url: {e}"))?,
            content_type: content_type.map(str::to_owned),
            ttl: parse_duration(ttl)
                .ok_or_else(|| format!("revalidate.ttl {ttl:?} is not a duration like 10m"))?,
        })
    }

    /// Whether an entry of `url`, stored with type `kind`, falls under it.
    pub fn matches(&self, url: &str, kind: &str) -> bool {
        self.url.as_ref().is_none_or(|re| re.is_match(url))
            && self
                .content_type
                .as_deref()
                .is_none_or(|t| kind.contains(t))
    }
}

/// "90", "90s", "10m", "2h", "1d".
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let seconds = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => return None,
    };
    Some(Duration::from_secs(seconds))
}
