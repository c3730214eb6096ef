//! Header rules a proxy must apply on every hop, as pure functions.

use http::{header, uri::Authority, HeaderMap, HeaderName, Uri};

/// Hop-by-hop fields that never travel past this proxy, besides the ones the
/// `Connection` field names (RFC 9110 §7.6.1). `Proxy-Authorization` is
/// addressed to us and `Proxy-Connection` is its pre-standard twin.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Removes hop-by-hop fields. `Upgrade` is removed too: protocol upgrades
/// are not relayed, so the peer must not think one was offered.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

/// Whether `name` (a `Host` value or a URI authority, userinfo aside)
/// names `authority`: hosts compared case-insensitively, a missing port
/// being `default_port`.
pub fn names_authority(name: &str, authority: &Authority, default_port: u16) -> bool {
    let name = name.rsplit_once('@').map_or(name, |(_, host)| host);
    let (host, port) = match name.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => (host, port.parse().ok()),
        _ => (name, Some(default_port)),
    };
    host.eq_ignore_ascii_case(authority.host())
        && port == Some(authority.port_u16().unwrap_or(default_port))
}

/// `uri` without userinfo (`http://user:pass@host/` → `http://host/`).
pub fn without_userinfo(uri: &Uri) -> Result<Uri, http::Error> {
    let Some(authority) = uri.authority().filter(|a| a.as_str().contains('@')) else {
        return Ok(uri.clone());
    };
    let (_, host) = authority.as_str().rsplit_once('@').unwrap_or_default();
    let mut parts = uri.clone().into_parts();
    parts.authority = Some(host.parse()?);
    Ok(Uri::from_parts(parts)?)
}

/// The port `uri` addresses: given, or its scheme's (443 for https, else 80).
pub fn port_of(uri: &Uri) -> u16 {
    uri.port_u16().unwrap_or(match uri.scheme_str() {
        Some("https") => 443,
        _ => 80,
    })
}

/// `uri` as the access log shows it: userinfo never appears.
pub fn redacted(uri: &Uri) -> String {
    match without_userinfo(uri) {
        Ok(uri) => uri.to_string(),
        Err(_) => "(unparsable target)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_the_authority_with_default_ports() {
        let cases = [
            ("example.com:443", "example.com", true),
            ("example.com:443", "EXAMPLE.com:443", true),
            ("127.0.0.1:8443", "127.0.0.1:8443", true),
            ("[::1]:8443", "[::1]:8443", true),
            ("[::1]:443", "[::1]", true),
            ("example.com:8443", "example.com", false),
            ("example.com:443", "other.example", false),
            ("example.com:443", "example.com:80", false),
            ("example.com:443", "example.com:x", false),
        ];
        for (authority, name, named) in cases {
            let authority: Authority = authority.parse().unwrap();
            assert_eq!(
                names_authority(name, &authority, 443),
                named,
                "{authority} {name}"
            );
        }
    }

    #[test]
    fn userinfo_is_removed() {
        let uri: Uri = "http://user:secret@example.com:8080/a?b".parse().unwrap();
        assert_eq!(redacted(&uri), "http://example.com:8080/a?b");
        let plain: Uri = "http://example.com/".parse().unwrap();
        assert_eq!(without_userinfo(&plain).unwrap(), plain);
    }

    #[test]
    fn hop_by_hop_and_connection_named_fields_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, "keep-alive, X-Secret".parse().unwrap());
        headers.insert("x-secret", "1".parse().unwrap());
        headers.insert("keep-alive", "timeout=5".parse().unwrap());
        headers.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        headers.insert(header::PROXY_AUTHORIZATION, "Basic x".parse().unwrap());
        headers.insert(header::ACCEPT, "*/*".parse().unwrap());
        headers.insert(header::CONTENT_LENGTH, "3".parse().unwrap());
        remove_hop_by_hop(&mut headers);
        let mut left: Vec<_> = headers.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, ["accept", "content-length"]);
    }
}
