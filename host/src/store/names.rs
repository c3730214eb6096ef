//! Names in the shared store: the `s3://BUCKET/PREFIX` URL, the object of a
//! cache path, and which names read back from the bucket may stand for a
//! fill key's files. Pure functions; every name that comes from the bucket
//! is checked here before it reaches the disk.

use object_store::path::Path as ObjectPath;

// The cache plugin's layout (`NAME#type`, `NAME/#file`, `.proxlet-meta/`),
// compiled in from the SDK so both sides agree on it.
#[path = "../../../plugins/sdk/src/cachepath.rs"]
#[allow(dead_code)] // the URL mapping and the SDK's unit tests
mod cachepath;

/// User metadata on a body object: the hex SHA-256 of its bytes.
pub const SHA256: &str = "proxlet-sha256";
/// User metadata on a body object: the cache path of its sidecar.
pub const SIDECAR: &str = "proxlet-sidecar";
/// User metadata on a sidecar object: the cache path of the body it
/// describes (its SHA-256 rides along as [`SHA256`]).
pub const BODY: &str = "proxlet-body";

/// Longest file name and path the cache writes (as the SDK's mapping).
const MAX_NAME: usize = cachepath::MAX_NAME;
const MAX_PATH: usize = 4096;

/// `s3://BUCKET/PREFIX`: where the shared store lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreUrl {
    bucket: String,
    /// Without leading or trailing `/`; empty for the bucket's root.
    prefix: String,
}

impl StoreUrl {
    /// Parses `s3://BUCKET[/PREFIX]`; the reason is a sentence for the
    /// `--cache-store` error.
    pub fn parse(text: &str) -> Result<Self, String> {
        let rest = text
            .strip_prefix("s3://")
            .ok_or("expected s3://BUCKET/PREFIX (only S3-compatible stores are supported)")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        // S3's rules are stricter today (3 to 63 of a-z, 0-9, `.`, `-`);
        // older buckets and other stores also have capitals and `_`.
        let bucket_ok = (1..=255).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
        if !bucket_ok {
            return Err(format!(
                "{bucket:?} is not a bucket name (letters, digits, dots, hyphens and underscores)"
            ));
        }
        let prefix = prefix.trim_matches('/');
        if !prefix.is_empty() && !relative(prefix) {
            return Err(format!(
                "the prefix {prefix:?} has an empty, `.` or `..` segment or a control character"
            ));
        }
        Ok(Self {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
        })
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The object holding the cache path `rel`: `PREFIX/rel`.
    pub fn object(&self, rel: &str) -> Option<ObjectPath> {
        if !relative(rel) {
            return None;
        }
        let full = match self.prefix.as_str() {
            "" => rel.to_owned(),
            prefix => format!("{prefix}/{rel}"),
        };
        ObjectPath::parse(full).ok()
    }
}

impl std::fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.prefix.as_str() {
            "" => write!(f, "s3://{}", self.bucket),
            prefix => write!(f, "s3://{}/{prefix}", self.bucket),
        }
    }
}

/// Whether `rel` is a path proxlet may write beneath the cache dir: `/`
/// separated names, none empty, `.` or `..`, none over 255 bytes, no
/// control character (NUL included) and not absolute.
pub fn relative(rel: &str) -> bool {
    !rel.is_empty()
        && rel.len() <= MAX_PATH
        && !rel.chars().any(char::is_control)
        && rel
            .split('/')
            .all(|name| !matches!(name, "" | "." | "..") && name.len() <= MAX_NAME)
}

/// The names of one fill key (the cache plugin's path of a URL): its own
/// file, and its sidecar in the metadata tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyNames {
    pub key: String,
    pub sidecar: String,
}

impl KeyNames {
    /// The names of `key`, if it is a cache path (not one inside the
    /// metadata tree).
    pub fn new(key: &str) -> Option<Self> {
        let in_meta = key.split('/').next() == Some(cachepath::META_DIR);
        let sidecar = cachepath::meta_path(key);
        (relative(key) && !in_meta && relative(&sidecar)).then(|| Self {
            key: key.to_owned(),
            sidecar,
        })
    }

    /// Whether `body` may hold the key's response: the key's own file, a
    /// type variant of it (`KEY#type`), or its file once the key's path
    /// became a directory (`KEY/#file`). A sidecar naming anything else is
    /// not believed.
    pub fn may_hold(&self, body: &str) -> bool {
        let Some(rest) = body.strip_prefix(self.key.as_str()) else {
            return false;
        };
        let variant = rest
            .strip_prefix('#')
            .is_some_and(|kind| !kind.is_empty() && !kind.contains('/'));
        relative(body)
            && (rest.is_empty() || variant || rest.strip_prefix('/') == Some(cachepath::DIR_FILE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_name_a_bucket_and_a_prefix() {
        let url = StoreUrl::parse("s3://ci-cache/proxlet/pypi/").unwrap();
        assert_eq!(url.bucket(), "ci-cache");
        assert_eq!(url.to_string(), "s3://ci-cache/proxlet/pypi");
        assert_eq!(
            url.object("h/a#b").unwrap().as_ref(),
            "proxlet/pypi/h/a#b",
            "names are kept as they are on disk"
        );
        let root = StoreUrl::parse("s3://bucket").unwrap();
        assert_eq!(root.to_string(), "s3://bucket");
        assert_eq!(root.object("h/x").unwrap().as_ref(), "h/x");
        for bad in [
            "https://bucket/x",
            "s3://",
            "s3:///x",
            "s3://my bucket/x",
            "s3://host:9000/x",
            "s3://bucket/a//b",
            "s3://bucket/a/../b",
        ] {
            assert!(StoreUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_plain_relative_paths_are_written() {
        for good in [
            "h/a",
            "h_8443/simple/x/index.html#vnd.pypi.simple.v1+json",
            "h/a?b=c",
        ] {
            assert!(relative(good), "{good}");
        }
        let long = "x".repeat(256);
        for bad in [
            "",
            "/etc/passwd",
            "h/../etc",
            "h/./a",
            "h//a",
            "h/a/",
            "h/a\0b",
            "h/a\nb",
            long.as_str(),
        ] {
            assert!(!relative(bad), "{bad:?}");
        }
        assert!(StoreUrl::parse("s3://bucket/p")
            .unwrap()
            .object("../x")
            .is_none());
    }

    #[test]
    fn a_key_holds_its_file_its_variants_and_its_dir_file_only() {
        let names = KeyNames::new("h/simple/a/index.html").unwrap();
        assert_eq!(
            names.sidecar,
            ".proxlet-meta/h/simple/a/index.html#meta.json"
        );
        for held in [
            "h/simple/a/index.html",
            "h/simple/a/index.html#vnd.pypi.simple.v1+json",
            "h/simple/a/index.html/#file",
        ] {
            assert!(names.may_hold(held), "{held}");
        }
        for other in [
            "h/simple/a/index.htmlx",
            "h/simple/a/index.html#",
            "h/simple/a/index.html#a/b",
            "h/simple/a/index.html/x",
            "h/simple/b/index.html",
            "h/simple/a/index.html#../../../etc",
            ".proxlet-meta/h/simple/a/index.html#meta.json",
            "/h/simple/a/index.html",
        ] {
            assert!(!names.may_hold(other), "{other}");
        }
        assert!(KeyNames::new(".proxlet-meta/h/a").is_none());
        assert!(KeyNames::new("../a").is_none());
        assert!(KeyNames::new("/h/a").is_none());
    }
}
