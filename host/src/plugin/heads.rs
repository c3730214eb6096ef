//! The heads a hook call lends its guest, read through the `request-head`
//! and `response-head` resources, and the edits a guest returns, applied in
//! place. The rules that protect the host live here: credentials stay hidden
//! without the grant, and framing and hop-by-hop fields stay the host's
//! whatever a plugin asks.

use std::net::SocketAddr;

use http::{header, uri, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};

use super::bindings::types::{Edit, Field, Headers};

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

/// The guest's handle on the request a call lends it.
pub struct RequestHandle;

/// The guest's handle on the response head a call lends it.
pub struct ResponseHandle;

/// A request head as the plugins see and edit it.
#[derive(Default)]
pub struct RequestView {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
}

/// What a store holds of the flow while one of its hooks runs: the heads
/// are swapped in before the call and back out after it (moves, no copies),
/// so the accessors read the host's own values.
#[derive(Default)]
pub struct Lent {
    pub request: RequestView,
    pub status: StatusCode,
    pub response: HeaderMap,
    pub client: Option<SocketAddr>,
    /// The plugin holds the `credentials` grant.
    pub credentials: bool,
    /// Header fields copied into the guest since the last call ended.
    pub fields: u64,
}

/// Heads that can be lent: their fields swap with a [`Lent`]'s.
pub trait Lend {
    fn swap(&mut self, lent: &mut Lent);
}

/// A call that lends no head (`on-websocket-message`).
pub struct NoHead;

impl Lend for NoHead {
    fn swap(&mut self, _lent: &mut Lent) {}
}

impl Lend for RequestView {
    fn swap(&mut self, lent: &mut Lent) {
        std::mem::swap(self, &mut lent.request);
    }
}

impl Lend for http::request::Parts {
    fn swap(&mut self, lent: &mut Lent) {
        std::mem::swap(&mut self.method, &mut lent.request.method);
        std::mem::swap(&mut self.uri, &mut lent.request.uri);
        std::mem::swap(&mut self.headers, &mut lent.request.headers);
    }
}

impl Lend for http::response::Parts {
    fn swap(&mut self, lent: &mut Lent) {
        std::mem::swap(&mut self.status, &mut lent.status);
        std::mem::swap(&mut self.headers, &mut lent.response);
    }
}

impl Lent {
    /// The head's fields when `name` may be shown.
    fn visible(&self, response: bool, name: &str) -> Option<&HeaderMap> {
        if !self.credentials
            && CREDENTIALS
                .iter()
                .any(|c| c.as_str().eq_ignore_ascii_case(name))
        {
            return None;
        }
        Some(if response {
            &self.response
        } else {
            &self.request.headers
        })
    }

    /// The first visible value of `name`.
    pub fn header(&mut self, response: bool, name: &str) -> Option<Vec<u8>> {
        let value = self.visible(response, name)?.get(name)?.as_bytes().to_vec();
        self.fields += 1;
        Some(value)
    }

    /// Every visible value of `name`.
    pub fn header_all(&mut self, response: bool, name: &str) -> Vec<Vec<u8>> {
        let Some(headers) = self.visible(response, name) else {
            return Vec::new();
        };
        let values: Vec<Vec<u8>> = headers
            .get_all(name)
            .iter()
            .map(|v| v.as_bytes().to_vec())
            .collect();
        self.fields += values.len() as u64;
        values
    }

    /// Whether `name` is present and visible.
    pub fn has_header(&self, response: bool, name: &str) -> bool {
        self.visible(response, name)
            .is_some_and(|headers| headers.contains_key(name))
    }

    /// Every visible field, in order.
    pub fn headers(&mut self, response: bool) -> Headers {
        let headers = if response {
            &self.response
        } else {
            &self.request.headers
        };
        let list: Headers = headers
            .iter()
            .filter(|(name, _)| !hidden(name, self.credentials))
            .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
            .collect();
        self.fields += list.len() as u64;
        list
    }

    /// Takes the count of fields copied out, for metrics.
    pub fn take_fields(&mut self) -> u64 {
        std::mem::take(&mut self.fields)
    }
}

/// Headers a plugin made (its own response): every valid field but the
/// framing ones and, without the grant, credentials.
pub fn made(list: Headers, credentials: bool) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(list.len());
    for (name, value) in list {
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
        headers.append(name, value);
    }
    headers
}

/// A header edit's name and value, or `None` when the host keeps that field.
fn field(
    name: &str,
    value: &[u8],
    credentials: bool,
) -> Result<Option<(HeaderName, HeaderValue)>, String> {
    let value = HeaderValue::from_bytes(value).map_err(|_| {
        let value = String::from_utf8_lossy(value);
        format!("invalid value for header {name:?}: {value:?}")
    })?;
    Ok(header_name(name, credentials)?.map(|name| (name, value)))
}

fn header_name(name: &str, credentials: bool) -> Result<Option<HeaderName>, String> {
    let name = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("invalid header name {name:?}"))?;
    if hidden(&name, credentials) || FRAMING.contains(&name) {
        tracing::debug!("plugin may not set {name}: ignored");
        return Ok(None);
    }
    Ok(Some(name))
}

/// Applies one header edit; `Ok(false)` when `edit` is not a header edit.
fn edit_headers(headers: &mut HeaderMap, edit: &Edit, credentials: bool) -> Result<bool, String> {
    match edit {
        Edit::SetHeader(Field { name, value }) => {
            if let Some((name, value)) = field(name, value, credentials)? {
                headers.insert(name, value);
            }
        }
        Edit::AppendHeader(Field { name, value }) => {
            if let Some((name, value)) = field(name, value, credentials)? {
                headers.append(name, value);
            }
        }
        Edit::RemoveHeader(name) => {
            if let Some(name) = header_name(name, credentials)? {
                headers.remove(name);
            }
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// Applies a plugin's edits to a request in order; the URL stays absolute,
/// and a new authority also becomes `Host` when the request has one.
pub fn edit_request(
    request: &mut impl Lend,
    edits: Vec<Edit>,
    credentials: bool,
) -> Result<(), String> {
    let mut lent = Lent::default();
    request.swap(&mut lent);
    let result = edit_view(&mut lent.request, edits, credentials);
    request.swap(&mut lent);
    result
}

fn edit_view(request: &mut RequestView, edits: Vec<Edit>, credentials: bool) -> Result<(), String> {
    let authority = request.uri.authority().cloned();
    for edit in edits {
        if edit_headers(&mut request.headers, &edit, credentials)? {
            continue;
        }
        match edit {
            Edit::SetMethod(method) => {
                request.method = Method::from_bytes(method.as_bytes())
                    .map_err(|_| format!("invalid method {method:?}"))?;
            }
            Edit::SetUrl(url) => {
                let uri: Uri = url
                    .parse()
                    .map_err(|e| format!("invalid url {url:?}: {e}"))?;
                if uri.scheme().is_none() || uri.authority().is_none() {
                    return Err(format!("url {url:?} is not absolute"));
                }
                request.uri = uri;
            }
            Edit::SetAuthority(value) => {
                let authority: uri::Authority = value
                    .parse()
                    .map_err(|e| format!("invalid authority {value:?}: {e}"))?;
                request.uri = rebuilt(&request.uri, |parts| parts.authority = Some(authority))?;
            }
            Edit::SetPath(value) => {
                if !value.starts_with('/') {
                    return Err(format!("path {value:?} does not start with /"));
                }
                let path: uri::PathAndQuery = value
                    .parse()
                    .map_err(|e| format!("invalid path {value:?}: {e}"))?;
                request.uri = rebuilt(&request.uri, |parts| parts.path_and_query = Some(path))?;
            }
            Edit::SetStatus(status) => {
                return Err(format!("set-status {status} is a response edit"));
            }
            Edit::SetHeader(_) | Edit::AppendHeader(_) | Edit::RemoveHeader(_) => {
                unreachable!("header edits are applied above")
            }
        }
    }
    // A new authority means a new Host (map-remote).
    if request.uri.authority() != authority.as_ref() && request.headers.contains_key(header::HOST) {
        if let Some(host) = request
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            request.headers.insert(header::HOST, host);
        }
    }
    Ok(())
}

fn rebuilt(uri: &Uri, change: impl FnOnce(&mut uri::Parts)) -> Result<Uri, String> {
    let mut parts = uri.clone().into_parts();
    change(&mut parts);
    Uri::from_parts(parts).map_err(|e| format!("invalid url: {e}"))
}

/// Applies a plugin's edits to a response head in order.
pub fn edit_response(
    response: &mut http::response::Parts,
    edits: Vec<Edit>,
    credentials: bool,
) -> Result<(), String> {
    for edit in edits {
        if edit_headers(&mut response.headers, &edit, credentials)? {
            continue;
        }
        match edit {
            Edit::SetStatus(status) => response.status = status_code(status)?,
            other => return Err(format!("{} is a request edit", edit_name(&other))),
        }
    }
    Ok(())
}

pub fn status_code(status: u16) -> Result<StatusCode, String> {
    StatusCode::from_u16(status).map_err(|_| format!("invalid status {status}"))
}

fn edit_name(edit: &Edit) -> &'static str {
    match edit {
        Edit::SetHeader(_) => "set-header",
        Edit::AppendHeader(_) => "append-header",
        Edit::RemoveHeader(_) => "remove-header",
        Edit::SetMethod(_) => "set-method",
        Edit::SetUrl(_) => "set-url",
        Edit::SetAuthority(_) => "set-authority",
        Edit::SetPath(_) => "set-path",
        Edit::SetStatus(_) => "set-status",
    }
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

    fn set(name: &str, value: &str) -> Edit {
        Edit::SetHeader(Field {
            name: name.into(),
            value: value.as_bytes().to_vec(),
        })
    }

    fn lent(headers: HeaderMap, credentials: bool) -> Lent {
        Lent {
            request: RequestView {
                headers,
                ..Default::default()
            },
            credentials,
            ..Default::default()
        }
    }

    fn request(url: &str, headers: &[(&str, &str)]) -> RequestView {
        RequestView {
            method: Method::GET,
            uri: url.parse().unwrap(),
            headers: map(headers),
        }
    }

    #[test]
    fn credentials_are_hidden_and_kept_without_the_grant() {
        let headers = map(&[
            ("authorization", "Bearer x"),
            ("cookie", "a=1"),
            ("accept", "*/*"),
        ]);
        let mut seen = lent(headers, false);
        assert_eq!(
            seen.headers(false),
            vec![("accept".to_owned(), b"*/*".to_vec())]
        );
        assert_eq!(seen.header(false, "Authorization"), None);
        assert_eq!(seen.header(false, "COOKIE"), None);
        assert_eq!(seen.header(false, "Accept"), Some(b"*/*".to_vec()));
        assert!(seen.header_all(false, "cookie").is_empty());
        assert!(!seen.has_header(false, "authorization"));
        assert!(seen.has_header(false, "accept"));
        assert_eq!(seen.header_all(false, "accept"), vec![b"*/*".to_vec()]);
        assert_eq!(seen.take_fields(), 3, "one field listed, two read");

        let mut sent = request(
            "http://a/",
            &[("authorization", "Bearer x"), ("accept", "*/*")],
        );
        let edits = vec![
            set("authorization", "Bearer forged"),
            Edit::RemoveHeader("cookie".into()),
            Edit::RemoveHeader("accept".into()),
            set("x-new", "1"),
        ];
        edit_request(&mut sent, edits, false).unwrap();
        assert_eq!(sent.headers["authorization"], "Bearer x");
        assert_eq!(sent.headers["x-new"], "1");
        assert!(
            !sent.headers.contains_key("accept"),
            "removed by the plugin"
        );
    }

    #[test]
    fn credentials_are_visible_and_settable_with_the_grant() {
        let mut seen = lent(map(&[("authorization", "Bearer x")]), true);
        assert_eq!(seen.headers(false).len(), 1);
        assert_eq!(
            seen.header(false, "authorization"),
            Some(b"Bearer x".to_vec())
        );
        let mut sent = request("http://a/", &[("authorization", "Bearer x")]);
        edit_request(&mut sent, vec![set("authorization", "Bearer y")], true).unwrap();
        assert_eq!(sent.headers["authorization"], "Bearer y");
    }

    #[test]
    fn framing_fields_stay_the_hosts() {
        let mut response = http::Response::new(()).into_parts().0;
        response.headers = map(&[("content-length", "5"), ("x-a", "1")]);
        let edits = vec![
            set("content-length", "99"),
            set("transfer-encoding", "chunked"),
            Edit::RemoveHeader("content-length".into()),
            Edit::AppendHeader(Field {
                name: "X-A".into(),
                value: b"2".to_vec(),
            }),
            Edit::SetStatus(404),
        ];
        edit_response(&mut response, edits, false).unwrap();
        assert_eq!(response.headers["content-length"], "5");
        assert!(!response.headers.contains_key("transfer-encoding"));
        assert_eq!(response.headers.get_all("x-a").iter().count(), 2);
        assert_eq!(response.status, 404);
        let made = made(
            vec![
                ("content-length".into(), b"1".to_vec()),
                ("x-b".into(), b"1".to_vec()),
            ],
            false,
        );
        assert_eq!(made.len(), 1);
    }

    #[test]
    fn url_edits_keep_it_absolute_and_move_host() {
        let mut sent = request("https://a.test/x?q=1", &[("host", "a.test")]);
        edit_request(&mut sent, vec![Edit::SetPath("/y?z=2".into())], false).unwrap();
        assert_eq!(sent.uri, "https://a.test/y?z=2");
        assert_eq!(sent.headers["host"], "a.test");
        edit_request(
            &mut sent,
            vec![Edit::SetAuthority("b.test:8443".into())],
            false,
        )
        .unwrap();
        assert_eq!(sent.uri, "https://b.test:8443/y?z=2");
        assert_eq!(sent.headers["host"], "b.test:8443");
        edit_request(
            &mut sent,
            vec![Edit::SetUrl("http://c.test/".into())],
            false,
        )
        .unwrap();
        assert_eq!(sent.headers["host"], "c.test");
        for bad in [
            Edit::SetUrl("/relative".into()),
            Edit::SetPath("no-slash".into()),
            Edit::SetMethod("GE T".into()),
            Edit::SetStatus(200),
            set("bad name", "1"),
            set("x-ok", "line\nbreak"),
        ] {
            assert!(edit_request(&mut sent, vec![bad], false).is_err());
        }
        let mut response = http::Response::new(()).into_parts().0;
        assert!(edit_response(&mut response, vec![Edit::SetPath("/".into())], false).is_err());
        assert!(edit_response(&mut response, vec![Edit::SetStatus(1000)], false).is_err());
    }
}
