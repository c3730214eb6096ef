//! Converting heads between hyper and the WIT types, with the rules that
//! protect the host: credentials stay hidden without the grant, and framing
//! and hop-by-hop fields stay the host's whatever a plugin returns.

use http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};

use super::bindings::types::{Headers, RequestHead, ResponseHead};

/// Fields a plugin sees and sets only with the `credentials` grant.
const CREDENTIALS: [HeaderName; 4] = [
    header::AUTHORIZATION,
    header::PROXY_AUTHORIZATION,
    header::COOKIE,
    header::SET_COOKIE,
];

/// Fields that describe the message framing; the host owns them.
const FRAMING: [HeaderName; 5] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::CONTENT_LENGTH,
    header::UPGRADE,
    header::TE,
];

fn hidden(name: &HeaderName, credentials: bool) -> bool {
    !credentials && CREDENTIALS.contains(name)
}

pub fn to_wit(headers: &HeaderMap, credentials: bool) -> Headers {
    headers
        .iter()
        .filter(|(name, _)| !hidden(name, credentials))
        .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
        .collect()
}

/// Replaces `headers` with a plugin's `edited` list, keeping the fields the
/// plugin may not touch as they were.
pub fn apply(headers: &mut HeaderMap, edited: Headers, credentials: bool) {
    let mut next = HeaderMap::with_capacity(edited.len() + 2);
    for (name, value) in headers.iter() {
        if hidden(name, credentials) || FRAMING.contains(name) {
            next.append(name.clone(), value.clone());
        }
    }
    for (name, value) in edited {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(&value),
        ) else {
            tracing::debug!("plugin returned an invalid header {name:?}: ignored");
            continue;
        };
        if hidden(&name, credentials) || FRAMING.contains(&name) {
            tracing::debug!("plugin may not set {name}: ignored");
            continue;
        }
        next.append(name, value);
    }
    *headers = next;
}

pub fn request_head(parts: &http::request::Parts, credentials: bool) -> RequestHead {
    RequestHead {
        method: parts.method.as_str().to_owned(),
        url: parts.uri.to_string(),
        headers: to_wit(&parts.headers, credentials),
    }
}

/// Applies an edited request head; method and URL must stay valid and absolute.
pub fn apply_request(
    parts: &mut http::request::Parts,
    head: RequestHead,
    credentials: bool,
) -> Result<(), String> {
    let method = Method::from_bytes(head.method.as_bytes())
        .map_err(|_| format!("invalid method {:?}", head.method))?;
    let uri: Uri = head
        .url
        .parse()
        .map_err(|e| format!("invalid url {:?}: {e}", head.url))?;
    if uri.scheme().is_none() || uri.authority().is_none() {
        return Err(format!("url {:?} is not absolute", head.url));
    }
    // A new authority means a new Host (map-remote).
    let moved = uri.authority() != parts.uri.authority();
    parts.method = method;
    parts.uri = uri;
    apply(&mut parts.headers, head.headers, credentials);
    if moved {
        if let Some(host) = parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            if parts.headers.contains_key(header::HOST) {
                parts.headers.insert(header::HOST, host);
            }
        }
    }
    Ok(())
}

pub fn response_head(parts: &http::response::Parts, credentials: bool) -> ResponseHead {
    ResponseHead {
        status: parts.status.as_u16(),
        headers: to_wit(&parts.headers, credentials),
    }
}

pub fn apply_response(
    parts: &mut http::response::Parts,
    head: ResponseHead,
    credentials: bool,
) -> Result<(), String> {
    parts.status =
        StatusCode::from_u16(head.status).map_err(|_| format!("invalid status {}", head.status))?;
    apply(&mut parts.headers, head.headers, credentials);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(n, v)| {
                (
                    HeaderName::from_bytes(n.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn credentials_are_hidden_and_kept_without_the_grant() {
        let mut headers = map(&[
            ("authorization", "Bearer x"),
            ("cookie", "a=1"),
            ("accept", "*/*"),
        ]);
        let seen = to_wit(&headers, false);
        assert_eq!(seen, vec![("accept".to_owned(), b"*/*".to_vec())]);
        apply(
            &mut headers,
            vec![
                ("authorization".into(), b"Bearer forged".to_vec()),
                ("x-new".into(), b"1".to_vec()),
            ],
            false,
        );
        assert_eq!(headers["authorization"], "Bearer x");
        assert_eq!(headers["cookie"], "a=1");
        assert_eq!(headers["x-new"], "1");
        assert!(!headers.contains_key("accept"), "removed by the plugin");
    }

    #[test]
    fn credentials_are_visible_and_settable_with_the_grant() {
        let mut headers = map(&[("authorization", "Bearer x")]);
        assert_eq!(to_wit(&headers, true).len(), 1);
        apply(
            &mut headers,
            vec![("authorization".into(), b"Bearer y".to_vec())],
            true,
        );
        assert_eq!(headers["authorization"], "Bearer y");
    }

    #[test]
    fn framing_fields_stay_the_hosts() {
        let mut headers = map(&[("content-length", "5"), ("x-a", "1")]);
        apply(
            &mut headers,
            vec![
                ("content-length".into(), b"99".to_vec()),
                ("transfer-encoding".into(), b"chunked".to_vec()),
            ],
            false,
        );
        assert_eq!(headers["content-length"], "5");
        assert!(!headers.contains_key("transfer-encoding"));
    }
}
