//! The two-way mapping between URLs and cache paths (pure functions, no I/O).
//!
//! `https://host[:port]/a/b%20c/?q=1` ↔ `host[_port]/a/b c/index.html?q=1`
//! and `http://host/…` ↔ `http+host/…`:
//! - plain-HTTP entries live in their own host directory, marked `http+`, so
//!   bytes fetched over (tamperable) plain HTTP are never served to an https
//!   client; `+` cannot occur in a host name, so the marker is unambiguous;
//! - the port is kept (`_8443`) unless it is the scheme's default;
//! - each path segment is percent-decoded once; in the file name `%`, `/`,
//!   `?`, `#` and control characters are escaped as `%XX`, so a decoded
//!   `%2F` (npm's `@scope%2fname`) stays one file name, never a directory;
//! - a URL ending in `/` maps to `index.html` in that directory;
//! - the query is appended to the last name after a literal `?`, with `%`,
//!   `/` and `#` escaped, so it maps back exactly;
//! - `.`/`..` segments, empty segments (`a//b`), NUL, malformed escapes,
//!   non-UTF-8 and names over 255 bytes are refused.
//!
//! `#` never appears in a mapped name, so `NAME#…` is free for the files a
//! cache keeps beside `NAME` (type variants), `NAME/#file` holds the file of
//! a URL whose path is also a directory (npm's `/pkg` beside `/pkg/-/…`),
//! and [`META_DIR`] (a name no host has) holds metadata without disturbing
//! the hand-editable tree.

use std::fmt;

/// Longest file name on common file systems.
pub const MAX_NAME: usize = 255;
/// Longest relative path accepted.
pub const MAX_PATH: usize = 3072;
/// The name a URL ending in `/` stores under.
pub const INDEX: &str = "index.html";
/// Top-level directory of the metadata tree (hosts never start with `.`).
pub const META_DIR: &str = ".proxlet-meta";
/// What starts the host directory of a plain-HTTP URL (`http+example.com`);
/// an https URL's host directory is the bare host.
pub const HTTP_MARKER: &str = "http+";
/// The name, inside a directory, of the file for the URL that names the
/// directory itself: `/pkg` when `/pkg/-/pkg-1.0.tgz` made `pkg` a directory.
pub const DIR_FILE: &str = "#file";

/// Why a URL has no cache path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    /// Not an absolute http or https URL.
    NotHttp,
    /// The host is empty or not usable as a directory name.
    BadHost,
    /// A `.` or `..` segment.
    DotSegment,
    /// An empty segment inside the path (`a//b`).
    EmptySegment,
    /// A NUL byte, malformed `%` escape, or a segment that is not UTF-8.
    BadEscape,
    /// A name over [`MAX_NAME`] bytes or a path over [`MAX_PATH`].
    TooLong,
    /// A path no URL maps to (e.g. a `?` inside a directory name).
    NotCanonical,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotHttp => "not an absolute http(s) URL",
            Self::BadHost => "the host cannot be a directory name",
            Self::DotSegment => "the path has a . or .. segment",
            Self::EmptySegment => "the path has an empty segment",
            Self::BadEscape => "the path has NUL, a malformed %-escape or non-UTF-8 bytes",
            Self::TooLong => "a path component is too long",
            Self::NotCanonical => "no URL maps to this path",
        })
    }
}

impl std::error::Error for PathError {}

/// The relative cache path of an absolute http(s) URL.
pub fn url_to_path(url: &str) -> Result<String, PathError> {
    let (scheme, rest) = url.split_once("://").ok_or(PathError::NotHttp)?;
    let (marker, default_port) = match scheme.to_ascii_lowercase().as_str() {
        "http" => (HTTP_MARKER, 80),
        "https" => ("", 443),
        _ => return Err(PathError::NotHttp),
    };
    let rest = rest.split('#').next().unwrap_or_default();
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, rest) = rest.split_at(end);
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    };

    let mut out = marker.to_owned();
    out.push_str(&host_dir(authority, default_port)?);
    let path = if path.is_empty() { "/" } else { path };
    let segments: Vec<&str> = path[1..].split('/').collect();
    let last = segments.len() - 1;
    for (i, segment) in segments.iter().enumerate() {
        out.push('/');
        let start = out.len();
        if i == last && segment.is_empty() {
            out.push_str(INDEX);
        } else {
            let decoded = percent_decode(segment)?;
            match decoded.as_str() {
                "" => return Err(PathError::EmptySegment),
                "." | ".." => return Err(PathError::DotSegment),
                _ => escape_name(&decoded, &mut out),
            }
        }
        if i == last {
            if let Some(query) = query {
                out.push('?');
                escape_query(query, &mut out)?;
            }
        }
        if out.len() - start > MAX_NAME {
            return Err(PathError::TooLong);
        }
    }
    if out.len() > MAX_PATH {
        return Err(PathError::TooLong);
    }
    Ok(out)
}

/// The URL a relative cache path stands for (`http` under an [`HTTP_MARKER`]
/// host directory, `https` otherwise); the inverse of [`url_to_path`] up to
/// URL normalisation: whenever it answers, `url_to_path(path_to_url(p)) == p`,
/// and a path that no URL maps to (a hand-made name the cache would never
/// write) is refused.
pub fn path_to_url(path: &str) -> Result<String, PathError> {
    let (host, rest) = path.split_once('/').ok_or(PathError::BadHost)?;
    let (scheme, host) = match host.strip_prefix(HTTP_MARKER) {
        Some(host) => ("http", host),
        None => ("https", host),
    };
    let authority = match host.rsplit_once('_') {
        Some((name, port))
            if !name.is_empty() && !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) =>
        {
            format!("{}:{port}", name.replace("%5F", "_"))
        }
        _ => host.replace("%5F", "_"),
    };
    let mut url = format!("{scheme}://{authority}");
    let segments: Vec<&str> = rest.split('/').collect();
    let last = segments.len() - 1;
    for (i, segment) in segments.iter().enumerate() {
        let (name, query) = match (i == last, segment.split_once('?')) {
            (true, Some((name, query))) => (name, Some(query)),
            _ => (*segment, None),
        };
        url.push('/');
        if !(i == last && name == INDEX) {
            let decoded = percent_decode(name)?;
            if matches!(decoded.as_str(), "" | "." | "..") {
                return Err(PathError::DotSegment);
            }
            encode_segment(&decoded, &mut url);
        }
        if let Some(query) = query {
            url.push('?');
            url.push_str(&percent_decode(query)?);
        }
    }
    if url_to_path(&url)? != path {
        return Err(PathError::NotCanonical);
    }
    Ok(url)
}

/// The file beside `path` holding the variant of type `token` (e.g. a JSON
/// answer at a URL that also answers HTML).
pub fn variant_path(path: &str, token: &str) -> String {
    format!("{path}#{token}")
}

/// Where the file of `path` lives once `path` is a directory.
pub fn dir_file_path(path: &str) -> String {
    format!("{path}/{DIR_FILE}")
}

/// The metadata file of `path` in the hidden tree.
pub fn meta_path(path: &str) -> String {
    format!("{META_DIR}/{path}#meta.json")
}

fn host_dir(authority: &str, default_port: u16) -> Result<String, PathError> {
    let authority = authority.rsplit('@').next().unwrap_or_default();
    let (host, port) = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => {
            let port: u16 = authority[i + 1..].parse().map_err(|_| PathError::BadHost)?;
            (&authority[..i], Some(port))
        }
        _ => (authority, None),
    };
    let host = host.to_ascii_lowercase();
    // A name, or an IPv6 literal in brackets: a `:` anywhere else (`z:6:80`)
    // would read back as a port.
    let valid = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(ip) => {
            !ip.is_empty()
                && ip
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b":.".contains(&b))
        }
        None => {
            !host.is_empty()
                && !host.starts_with('.')
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        }
    };
    if !valid || host.len() > MAX_NAME - 6 {
        return Err(PathError::BadHost);
    }
    // `_` separates the port, so one in the name is escaped: host `a_44`
    // and `a:44` must not share a directory.
    let host = host.replace('_', "%5F");
    Ok(match port {
        Some(port) if port != default_port => format!("{host}_{port}"),
        _ => host,
    })
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn percent_decode_to_bytes(text: &str) -> Result<Vec<u8>, PathError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = bytes.get(i + 1).copied().and_then(hex);
            let lo = bytes.get(i + 2).copied().and_then(hex);
            match (hi, lo) {
                (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
                _ => return Err(PathError::BadEscape),
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    if out.contains(&0) {
        return Err(PathError::BadEscape);
    }
    Ok(out)
}

/// Decodes `%XX` once; the result must be UTF-8 without NUL.
fn percent_decode(text: &str) -> Result<String, PathError> {
    String::from_utf8(percent_decode_to_bytes(text)?).map_err(|_| PathError::BadEscape)
}

fn push_escaped(b: u8, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(HEX[(b >> 4) as usize] as char);
    out.push(HEX[(b & 15) as usize] as char);
}

/// A decoded segment as a file name.
fn escape_name(decoded: &str, out: &mut String) {
    for c in decoded.chars() {
        match c {
            '%' | '/' | '?' | '#' | '\u{0}'..='\u{1f}' | '\u{7f}' => push_escaped(c as u8, out),
            c => out.push(c),
        }
    }
}

/// A raw query inside a file name.
/// A query as it is kept in a file name; control characters (never valid
/// in a URL, and not decodable back) are refused.
fn escape_query(query: &str, out: &mut String) -> Result<(), PathError> {
    for c in query.chars() {
        match c {
            '\u{0}'..='\u{1f}' | '\u{7f}' => return Err(PathError::BadEscape),
            '%' | '/' | '#' => push_escaped(c as u8, out),
            c => out.push(c),
        }
    }
    Ok(())
}

/// A decoded segment as it is written in a URL path (RFC 3986 pchar).
fn encode_segment(decoded: &str, out: &mut String) {
    for &b in decoded.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b) {
            out.push(b as char);
        } else {
            push_escaped(b, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_map_to_host_dirs_and_index_files() {
        assert_eq!(
            url_to_path("https://pypi.org/simple/foo/").unwrap(),
            "pypi.org/simple/foo/index.html"
        );
        assert_eq!(
            url_to_path("HTTPS://Example.COM").unwrap(),
            "example.com/index.html"
        );
        assert_eq!(url_to_path("https://h:443/a").unwrap(), "h/a");
        assert_eq!(url_to_path("https://h:8443/a").unwrap(), "h_8443/a");
        assert_eq!(url_to_path("http://h:80/a#frag").unwrap(), "http+h/a");
        assert_eq!(url_to_path("http://[::1]:81/a").unwrap(), "http+[::1]_81/a");
    }

    #[test]
    fn http_and_https_never_share_a_file() {
        assert_eq!(url_to_path("http://h/p.whl").unwrap(), "http+h/p.whl");
        assert_eq!(url_to_path("https://h/p.whl").unwrap(), "h/p.whl");
        assert_eq!(url_to_path("http://h:443/a").unwrap(), "http+h_443/a");
        assert_eq!(url_to_path("https://h:80/a").unwrap(), "h_80/a");
        assert_eq!(path_to_url("http+h/p.whl").unwrap(), "http://h/p.whl");
        assert_eq!(path_to_url("h/p.whl").unwrap(), "https://h/p.whl");
        assert_eq!(path_to_url("http+h_8080/a").unwrap(), "http://h:8080/a");
        // The marker is written once, in lowercase, before a host.
        for path in ["http+http+h/a", "HTTP+h/a", "http+/a", "https+h/a"] {
            assert!(path_to_url(path).is_err(), "{path}");
        }
        assert_eq!(url_to_path("http://http+h/a"), Err(PathError::BadHost));
    }

    #[test]
    fn scoped_npm_names_stay_one_file() {
        assert_eq!(
            url_to_path("https://r/@scope%2fname").unwrap(),
            "r/@scope%2Fname"
        );
        assert_eq!(
            url_to_path("https://r/@scope/name/-/name-1.0.0.tgz").unwrap(),
            "r/@scope/name/-/name-1.0.0.tgz"
        );
    }

    #[test]
    fn package_manager_urls_map_to_the_paths_they_name() {
        for (url, path) in [
            // Go: capitals `!`-escaped by GOPROXY, that `!` sent as %21.
            (
                "https://proxy.golang.org/github.com/%21burnt%21sushi/toml/@v/v1.3.2.zip",
                "proxy.golang.org/github.com/!burnt!sushi/toml/@v/v1.3.2.zip",
            ),
            (
                "https://proxy.golang.org/example.com/!world/@latest",
                "proxy.golang.org/example.com/!world/@latest",
            ),
            // cargo: the sparse index root's config and a prefixed file.
            (
                "https://index.crates.io/config.json",
                "index.crates.io/config.json",
            ),
            ("https://index.crates.io/3/s/syn", "index.crates.io/3/s/syn"),
            (
                "https://h:8443/api/v1/crates/hello/1.0.0/download",
                "h_8443/api/v1/crates/hello/1.0.0/download",
            ),
            // Maven: deep group paths, metadata beside the versions.
            (
                "https://repo.maven.apache.org/maven2/org/slf4j/slf4j-api/2.0.9/slf4j-api-2.0.9.jar.sha1",
                "repo.maven.apache.org/maven2/org/slf4j/slf4j-api/2.0.9/slf4j-api-2.0.9.jar.sha1",
            ),
        ] {
            assert_eq!(url_to_path(url).unwrap(), path, "{url}");
            assert_eq!(url_to_path(&path_to_url(path).unwrap()).unwrap(), path);
        }
    }

    #[test]
    fn queries_are_kept_reversibly() {
        let path = url_to_path("https://h/a/b?x=1/2&y=%2F").unwrap();
        assert_eq!(path, "h/a/b?x=1%2F2&y=%252F");
        assert_eq!(path_to_url(&path).unwrap(), "https://h/a/b?x=1/2&y=%2F");
        assert_eq!(url_to_path("https://h/d/?q").unwrap(), "h/d/index.html?q");
        assert_eq!(path_to_url("h/d/index.html?q").unwrap(), "https://h/d/?q");
    }

    #[test]
    fn escapes_decode_once() {
        assert_eq!(url_to_path("https://h/a%20b").unwrap(), "h/a b");
        assert_eq!(url_to_path("https://h/100%25").unwrap(), "h/100%25");
        assert_eq!(url_to_path("https://h/%3F%23").unwrap(), "h/%3F%23");
        assert_eq!(path_to_url("http+h/a b").unwrap(), "http://h/a%20b");
        // An `_` in a host is escaped: it would read as the port separator.
        assert_eq!(url_to_path("https://a_44/").unwrap(), "a%5F44/index.html");
        assert_eq!(url_to_path("https://a:44/").unwrap(), "a_44/index.html");
        assert_eq!(path_to_url("a%5F44/x").unwrap(), "https://a_44/x");
        assert_eq!(
            path_to_url("http+a%5Fb_8080/x").unwrap(),
            "http://a_b:8080/x"
        );
        // A `?` inside a directory name: no URL is cached there.
        assert_eq!(path_to_url("h/b?c/d"), Err(PathError::NotCanonical));
    }

    #[test]
    fn hostile_paths_are_refused() {
        for (url, error) in [
            ("https://h/../etc/passwd", PathError::DotSegment),
            ("https://h/a/%2e%2e/b", PathError::DotSegment),
            ("https://h/./a", PathError::DotSegment),
            ("https://h/a//b", PathError::EmptySegment),
            ("https://h/a%00b", PathError::BadEscape),
            ("https://h/a?q=\0", PathError::BadEscape),
            ("https://h/a%zz", PathError::BadEscape),
            ("https://h/%ff", PathError::BadEscape),
            ("ftp://h/a", PathError::NotHttp),
            ("/relative", PathError::NotHttp),
            ("https://.proxlet-meta/a", PathError::BadHost),
            ("https:///a", PathError::BadHost),
            ("http://z:6:80/", PathError::BadHost),
            ("http://[z]/", PathError::BadHost),
        ] {
            assert_eq!(url_to_path(url), Err(error), "{url}");
        }
        // A decoded `/` stays inside one name: `a%2F..` is harmless.
        assert_eq!(url_to_path("https://h/a%2f..").unwrap(), "h/a%2F..");
        let long = format!("https://h/{}", "a".repeat(256));
        assert_eq!(url_to_path(&long), Err(PathError::TooLong));
    }

    #[test]
    fn layout_names_do_not_collide() {
        assert_eq!(meta_path("h/a"), ".proxlet-meta/h/a#meta.json");
        assert_eq!(
            variant_path("h/a/index.html", "json"),
            "h/a/index.html#json"
        );
    }
}
