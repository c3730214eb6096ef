//! Proxy authentication (RFC 9110 §11.7, Basic per RFC 7617): with
//! `--proxy-auth`, proxy requests and CONNECT must carry one of the
//! configured credentials in `Proxy-Authorization`, or get `407`.

use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};

use super::body::{text_response, Body};
use crate::config::ProxyCredential;

/// The realm named in `Proxy-Authenticate`.
const CHALLENGE: &str = "Basic realm=\"proxlet\"";

/// The accepted credentials, kept as the base64 tokens clients send, so a
/// check neither decodes nor allocates.
pub struct ProxyAuth {
    tokens: Vec<Vec<u8>>,
}

impl ProxyAuth {
    /// `None` when no credentials are configured: the proxy is open.
    pub fn new(credentials: &[ProxyCredential]) -> Option<Self> {
        (!credentials.is_empty()).then(|| Self {
            tokens: credentials
                .iter()
                .map(|c| base64(format!("{}:{}", c.user, c.password).as_bytes()))
                .collect(),
        })
    }

    /// Whether `request` must authenticate: requests through the proxy
    /// (absolute-form) and CONNECT. Requests to proxlet itself (`/ca.pem`)
    /// carry no credentials in browsers and reveal nothing secret.
    pub fn applies_to<B>(request: &Request<B>) -> bool {
        request.method() == Method::CONNECT || request.uri().authority().is_some()
    }

    /// Whether `headers` carry one of the accepted credentials.
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers.get(header::PROXY_AUTHORIZATION) else {
            return false;
        };
        let value = value.as_bytes();
        let Some(space) = value.iter().position(|b| *b == b' ') else {
            return false;
        };
        let (scheme, token) = value.split_at(space);
        if !scheme.eq_ignore_ascii_case(b"basic") {
            return false;
        }
        let token = token.trim_ascii();
        // Every configured token is compared, each in time independent of
        // where the guess differs.
        self.tokens
            .iter()
            .fold(false, |found, expected| found | same_bytes(expected, token))
    }

    /// Whether `user` and `password` (SOCKS5's RFC 1929 sub-negotiation)
    /// are accepted credentials.
    pub fn allows_user(&self, user: &[u8], password: &[u8]) -> bool {
        let mut pair = user.to_vec();
        pair.push(b':');
        pair.extend_from_slice(password);
        let token = base64(&pair);
        self.tokens.iter().fold(false, |found, expected| {
            found | same_bytes(expected, &token)
        })
    }

    /// The `407` a client without valid credentials gets.
    pub fn required() -> Response<Body> {
        let mut response = text_response(
            StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            "proxlet: proxy authentication required (e.g. curl --proxy-user USER:PASS)",
        );
        response.headers_mut().insert(
            header::PROXY_AUTHENTICATE,
            HeaderValue::from_static(CHALLENGE),
        );
        response
    }
}

/// Compares `guess` with `expected` in time that depends only on their
/// lengths, never on their contents.
fn same_bytes(expected: &[u8], guess: &[u8]) -> bool {
    let mut diff = expected.len() ^ guess.len();
    for (i, e) in expected.iter().enumerate() {
        diff |= usize::from(e ^ guess.get(i).copied().unwrap_or(0));
    }
    std::hint::black_box(diff) == 0
}

/// Standard base64 with padding (RFC 4648 §4), as clients encode Basic
/// credentials.
fn base64(input: &[u8]) -> Vec<u8> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]);
            } else {
                out.push(b'=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::PROXY_AUTHORIZATION, value.parse().unwrap());
        headers
    }

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("Aladdin:open sesame", "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded.as_bytes(), "{plain}");
        }
    }

    #[test]
    fn only_configured_basic_credentials_are_allowed() {
        let auth = ProxyAuth::new(&[
            ProxyCredential::parse("Aladdin:open sesame").unwrap(),
            ProxyCredential::parse("ci:x").unwrap(),
        ])
        .unwrap();
        assert!(auth.allows(&headers("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==")));
        assert!(auth.allows(&headers("basic  Y2k6eA== ")));
        assert!(!auth.allows(&headers("Basic Y2k6eQ==")));
        assert!(!auth.allows(&headers("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ")));
        assert!(!auth.allows(&headers("Bearer Y2k6eA==")));
        assert!(!auth.allows(&headers("Basic")));
        assert!(!auth.allows(&HeaderMap::new()));
        assert!(ProxyAuth::new(&[]).is_none());
    }
}
