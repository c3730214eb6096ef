//! Header rules a proxy must apply on every hop, as pure functions.

use http::{header, HeaderMap, HeaderName};

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

/// Drops `Host` when it names the request URI's authority: the upstream
/// client derives Host (HTTP/1.1) or `:authority` (HTTP/2) from the URI, and
/// HTTP/2 servers such as nginx refuse a request carrying both (RFC 9113
/// §8.3.1 lets a client send Host only when identical).
pub fn remove_redundant_host(headers: &mut HeaderMap, uri: &http::Uri) {
    let Some(authority) = uri.authority() else {
        return;
    };
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return;
    };
    let default_port = if uri.scheme_str() == Some("https") {
        443
    } else {
        80
    };
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) if !port.contains(']') => (name, port.parse().ok()),
        _ => (host, Some(default_port)),
    };
    if name.eq_ignore_ascii_case(authority.host())
        && port == Some(authority.port_u16().unwrap_or(default_port))
    {
        headers.remove(header::HOST);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_matching_the_uri_is_dropped_and_a_different_one_kept() {
        let cases = [
            ("https://example.com/", "example.com", true),
            ("https://example.com/", "EXAMPLE.com:443", true),
            ("https://127.0.0.1:8443/x", "127.0.0.1:8443", true),
            ("http://example.com/", "example.com:8080", false),
            ("https://example.com/", "other.example", false),
        ];
        for (uri, host, dropped) in cases {
            let mut headers = HeaderMap::new();
            headers.insert(header::HOST, host.parse().unwrap());
            remove_redundant_host(&mut headers, &uri.parse().unwrap());
            assert_eq!(!headers.contains_key(header::HOST), dropped, "{uri} {host}");
        }
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
