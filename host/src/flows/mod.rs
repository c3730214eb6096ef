//! Flows: the record of one HTTP exchange (heads, bodies up to a bound,
//! timings, connection and TLS facts, what each plugin did, the messages of
//! a WebSocket it opened), the bounded in-memory store, flow files, and
//! their conversions (HAR, mitmproxy dumps).
//!
//! A [`Flow`] is plain data, what readers work with. When capture is on
//! (`--save`, `--flows-max`) the pipeline records each exchange straight
//! into its encoded [`record::Record`] (no `Flow` is built on the proxy's
//! hot path); the store and flow files hold records, and readers (the
//! store's lookups, `proxlet flows`, `convert`, `replay`) decode them.

pub mod cli;
pub mod convert;
pub mod file;
pub mod filter;
pub mod har;
pub mod intercept;
pub mod mitm;
pub mod record;
pub mod replay;
pub mod sink;
pub mod tnetstring;

use std::net::SocketAddr;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// One HTTP exchange as proxlet saw it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Flow {
    /// The access-log id (`#7`), unique within one proxlet run.
    pub id: u64,
    /// The listener's mode (`regular` today).
    pub mode: String,
    /// The client's address.
    pub client: Option<SocketAddr>,
    /// The upstream's address, when a connection was made.
    pub server: Option<SocketAddr>,
    /// TLS between the client and proxlet (inside an intercepted CONNECT).
    pub client_tls: Option<Tls>,
    /// TLS between proxlet and the upstream.
    pub server_tls: Option<Tls>,
    pub timings: Timings,
    /// The request as it was sent upstream (after plugins), or as the client
    /// sent it when no upstream request was made.
    pub request: Request,
    /// The response as it was sent to the client (after plugins).
    pub response: Option<Response>,
    /// The messages, when the response upgraded the connection to a
    /// WebSocket (`101 Switching Protocols`); left out of JSON otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub websocket: Option<WebSocket>,
    /// Why the exchange failed, when it did (upstream error, client abort).
    pub error: Option<String>,
    /// The access log's note (who answered, why).
    pub note: Option<String>,
    /// Each plugin call, in order.
    pub plugins: Vec<PluginStep>,
    /// Set by a user (web UI, `marked` in files from elsewhere).
    pub marked: bool,
    pub comment: String,
}

/// Facts of one TLS session.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Tls {
    /// Server name the client asked for (SNI).
    pub sni: Option<String>,
    /// Negotiated application protocol (`h2`, `http/1.1`).
    pub alpn: Option<String>,
    /// `TLSv1.3`, `TLSv1.2`.
    pub version: Option<String>,
    /// Whether proxlet terminated this TLS itself (an intercepted tunnel).
    pub intercepted: bool,
}

/// Moments of a flow in microseconds since the Unix epoch; `None` when the
/// step did not happen in this flow (a reused connection has no connect).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Timings {
    /// The client's TCP connection was accepted.
    pub client_connect: Option<i64>,
    /// The client's TLS handshake finished (intercepted tunnels).
    pub client_tls: Option<i64>,
    /// The request head was read.
    pub request_start: Option<i64>,
    /// The request body was read to its end.
    pub request_end: Option<i64>,
    /// proxlet began connecting upstream.
    pub server_connect: Option<i64>,
    /// The upstream TCP connection was established.
    pub server_tcp: Option<i64>,
    /// The upstream TLS handshake finished.
    pub server_tls: Option<i64>,
    /// The response head was received (or made).
    pub response_start: Option<i64>,
    /// The response body was sent to its end.
    pub response_end: Option<i64>,
}

/// A request head and its captured body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Request {
    pub method: String,
    /// Absolute URL without userinfo.
    pub url: String,
    /// `HTTP/1.1`, `HTTP/2`.
    pub version: String,
    pub headers: Vec<Header>,
    pub body: Body,
}

/// A response head and its captured body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Response {
    pub status: u16,
    pub version: String,
    pub headers: Vec<Header>,
    pub body: Body,
}

/// A header field; the value is bytes (fields need not be UTF-8). In JSON a
/// field is `["name", "value"]`, or `["name", {"base64": "…"}]` when the
/// value is not UTF-8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: FieldName,
    pub value: Bytes,
}

impl Header {
    pub fn new(name: impl Into<FieldName>, value: impl Into<Bytes>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// A header field name: text in shared bytes. Reads as a `&str`.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct FieldName(Bytes);

impl std::ops::Deref for FieldName {
    type Target = str;
    fn deref(&self) -> &str {
        // Only made from UTF-8 (`From<&str>`, `From<String>`).
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl From<&str> for FieldName {
    fn from(text: &str) -> Self {
        Self(Bytes::copy_from_slice(text.as_bytes()))
    }
}

impl From<String> for FieldName {
    fn from(text: String) -> Self {
        Self(Bytes::from(text))
    }
}

impl PartialEq<&str> for FieldName {
    fn eq(&self, other: &&str) -> bool {
        &**self == *other
    }
}

impl PartialEq<str> for FieldName {
    fn eq(&self, other: &str) -> bool {
        &**self == other
    }
}

impl std::fmt::Debug for FieldName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&**self, f)
    }
}

impl std::fmt::Display for FieldName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self)
    }
}

impl Serialize for FieldName {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self)
    }
}

/// A body as captured: the bytes as they went over the wire (content-coded
/// when the message says so), up to `--flow-body-max`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Body {
    /// The bytes kept (in files, stored raw after the record's JSON).
    #[serde(skip)]
    pub data: Bytes,
    /// The body's true length in bytes, kept or not.
    pub size: u64,
    /// Whether `data` holds only the first bytes of the body.
    pub truncated: bool,
}

impl Body {
    /// A body held whole.
    pub fn whole(data: impl Into<Bytes>) -> Self {
        let data = data.into();
        Self {
            size: data.len() as u64,
            truncated: false,
            data,
        }
    }
}

/// A WebSocket's messages (RFC 6455), for flows upgraded to WebSocket.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WebSocket {
    /// The messages in the order they were seen, up to the record's bound.
    pub messages: Vec<WebSocketMessage>,
    /// Messages beyond the record's bound: counted, not listed.
    pub messages_omitted: u64,
    /// Who sent the first close frame; `None` when the connection ended
    /// without one (or has not ended).
    pub closed_by_client: Option<bool>,
    /// The close frame's status code (RFC 6455 §7.4).
    pub close_code: Option<u16>,
    pub close_reason: Option<String>,
    /// When the WebSocket ended (µs since the Unix epoch); `None` while
    /// it is open.
    pub end: Option<i64>,
}

/// One WebSocket message (its frames reassembled).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WebSocketMessage {
    pub from_client: bool,
    /// Text (opcode 1) or binary (opcode 2).
    pub text: bool,
    /// When it was seen (µs since the Unix epoch).
    pub time: i64,
    /// Its payload (decompressed when permessage-deflate was on), up to
    /// the bound: data, size, truncated like a body. In JSON the data is
    /// inline, as a header value is: `{"size": 5, "truncated": false,
    /// "data": "hello"}`, or `"data": {"base64": "…"}` when not UTF-8.
    #[serde(with = "payload")]
    pub content: Body,
    /// Not relayed: a plugin dropped it.
    pub dropped: bool,
    /// Made by a plugin, not by either peer.
    pub injected: bool,
}

/// A WebSocket message's payload in JSON: a body's size and truncated,
/// and its bytes inline as text or base64.
mod payload {
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::{Body, BytesValue, HeaderValueRepr};

    #[derive(Serialize)]
    struct Out<'a> {
        size: u64,
        truncated: bool,
        data: BytesValue<'a>,
    }

    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct In {
        size: Option<u64>,
        truncated: bool,
        data: Option<HeaderValueRepr>,
    }

    pub fn serialize<S: Serializer>(body: &Body, serializer: S) -> Result<S::Ok, S::Error> {
        Out {
            size: body.size,
            truncated: body.truncated,
            data: BytesValue(&body.data),
        }
        .serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Body, D::Error> {
        let read = In::deserialize(deserializer)?;
        let data = match read.data {
            Some(value) => value.into_bytes().map_err(serde::de::Error::custom)?,
            None => Bytes::new(),
        };
        Ok(Body {
            // A hand-written record may leave the size out.
            size: read.size.unwrap_or(data.len() as u64),
            truncated: read.truncated,
            data,
        })
    }
}

/// One plugin call in a flow.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PluginStep {
    pub plugin: String,
    /// `on-request`, `on-response`, `on-error`.
    pub hook: String,
    /// What it decided: `continue`, `respond 200`, `store`, `trap: …`.
    pub decision: String,
    /// Time spent in the call.
    pub micros: u64,
}

impl Flow {
    /// The host (without port) the request is for.
    pub fn host(&self) -> &str {
        let rest = self
            .request
            .url
            .split_once("://")
            .map_or(self.request.url.as_str(), |(_, r)| r);
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        match authority.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(""),
            None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
        }
    }
}

/// Microseconds since the Unix epoch, now.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

impl Serialize for Header {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut tuple = serializer.serialize_tuple(2)?;
        tuple.serialize_element(&self.name)?;
        tuple.serialize_element(&BytesValue(&self.value))?;
        tuple.end()
    }
}

/// Bytes in JSON: a string when they are UTF-8, else `{"base64": "…"}`
/// (header values, WebSocket payloads).
fn bytes_value<S: serde::Serializer>(value: &Bytes, serializer: S) -> Result<S::Ok, S::Error> {
    match std::str::from_utf8(value) {
        Ok(text) => serializer.serialize_str(text),
        Err(_) => {
            use base64::Engine;
            let encoded = base64::engine::general_purpose::STANDARD.encode(value);
            Base64Value { base64: encoded }.serialize(serializer)
        }
    }
}

struct BytesValue<'a>(&'a Bytes);

impl Serialize for BytesValue<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        bytes_value(self.0, serializer)
    }
}

#[derive(Serialize, Deserialize)]
struct Base64Value {
    base64: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum HeaderValueRepr {
    Text(String),
    Binary(Base64Value),
}

impl HeaderValueRepr {
    fn into_bytes(self) -> Result<Bytes, base64::DecodeError> {
        match self {
            Self::Text(text) => Ok(Bytes::from(text)),
            Self::Binary(b) => {
                use base64::Engine;
                Ok(base64::engine::general_purpose::STANDARD
                    .decode(b.base64)?
                    .into())
            }
        }
    }
}

impl<'de> Deserialize<'de> for Header {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (name, value): (String, HeaderValueRepr) = Deserialize::deserialize(deserializer)?;
        let name = FieldName::from(name);
        let value = value.into_bytes().map_err(serde::de::Error::custom)?;
        Ok(Self { name, value })
    }
}

/// A flow with every field set, for tests.
#[cfg(test)]
pub(crate) fn sample() -> Flow {
    Flow {
        id: 42,
        mode: "regular".into(),
        client: Some("127.0.0.1:50000".parse().unwrap()),
        server: Some("[::1]:8443".parse().unwrap()),
        client_tls: Some(Tls {
            sni: Some("example.com".into()),
            alpn: Some("h2".into()),
            version: Some("TLSv1.3".into()),
            intercepted: true,
        }),
        server_tls: Some(Tls {
            sni: Some("example.com".into()),
            alpn: Some("http/1.1".into()),
            version: Some("TLSv1.2".into()),
            intercepted: false,
        }),
        timings: Timings {
            client_connect: Some(1_700_000_000_000_000),
            client_tls: Some(1_700_000_000_001_000),
            request_start: Some(1_700_000_000_002_000),
            request_end: Some(1_700_000_000_002_500),
            server_connect: Some(1_700_000_000_003_000),
            server_tcp: Some(1_700_000_000_004_000),
            server_tls: Some(1_700_000_000_006_000),
            response_start: Some(1_700_000_000_010_123),
            response_end: Some(1_700_000_000_011_456),
        },
        request: Request {
            method: "POST".into(),
            url: "https://example.com/up?x=1".into(),
            version: "HTTP/2".into(),
            headers: vec![
                Header::new("content-type", "application/octet-stream"),
                Header::new("x-bin", vec![0xff, 0x01]),
            ],
            body: Body::whole(&b"\x00\x01\xfe\xff"[..]),
        },
        response: Some(Response {
            status: 201,
            version: "HTTP/2".into(),
            headers: vec![Header::new("content-type", "text/plain")],
            body: Body {
                data: Bytes::from_static(b"first bytes"),
                size: 1000,
                truncated: true,
            },
        }),
        websocket: Some(WebSocket {
            messages: vec![
                WebSocketMessage {
                    from_client: true,
                    text: true,
                    time: 1_700_000_000_020_000,
                    content: Body::whole(&b"hello \"ws\"\n"[..]),
                    dropped: false,
                    injected: false,
                },
                WebSocketMessage {
                    from_client: false,
                    text: false,
                    time: 1_700_000_000_021_000,
                    content: Body::whole(&b"\x00\xff\x80bin"[..]),
                    dropped: true,
                    injected: false,
                },
                WebSocketMessage {
                    from_client: false,
                    text: true,
                    time: 1_700_000_000_022_000,
                    content: Body {
                        data: Bytes::from_static(b"first"),
                        size: 100_000,
                        truncated: true,
                    },
                    dropped: false,
                    injected: true,
                },
            ],
            messages_omitted: 2,
            closed_by_client: Some(false),
            close_code: Some(1001),
            close_reason: Some("going away".into()),
            end: Some(1_700_000_000_030_000),
        }),
        error: Some("client closed".into()),
        note: Some("upstream".into()),
        plugins: vec![PluginStep {
            plugin: "cache".into(),
            hook: "on-request".into(),
            decision: "continue".into(),
            micros: 17,
        }],
        marked: true,
        comment: "look".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_through_json_text_or_base64() {
        let headers = vec![Header::new("a", "text"), Header::new("b", vec![0xff, 0x00])];
        let json = serde_json::to_string(&headers).unwrap();
        assert_eq!(json, r#"[["a","text"],["b",{"base64":"/wA="}]]"#);
        let back: Vec<Header> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, headers);
    }

    #[test]
    fn host_is_the_url_host_without_port() {
        let flow = |url: &str| Flow {
            request: Request {
                url: url.into(),
                ..Request::default()
            },
            ..Flow::default()
        };
        assert_eq!(flow("https://a.example:8443/x").host(), "a.example");
        assert_eq!(flow("http://[::1]:80/").host(), "::1");
        assert_eq!(flow("https://b.example?q").host(), "b.example");
    }

    #[test]
    fn websocket_payloads_are_inline_text_or_base64_and_round_trip() {
        let websocket = sample().websocket.unwrap();
        let json = serde_json::to_value(&websocket).unwrap();
        let messages = &json["messages"];
        assert_eq!(
            messages[0]["content"],
            serde_json::json!({"size": 11, "truncated": false, "data": "hello \"ws\"\n"})
        );
        assert_eq!(
            messages[1]["content"]["data"],
            serde_json::json!({"base64": "AP+AYmlu"})
        );
        assert_eq!(messages[2]["content"]["size"], 100_000);
        let back: WebSocket = serde_json::from_value(json).unwrap();
        assert_eq!(back, websocket);
        // Members left out take their defaults; a size defaults to the data's.
        let brief: WebSocketMessage =
            serde_json::from_str(r#"{"text": true, "content": {"data": "hi"}}"#).unwrap();
        assert_eq!(brief.content, Body::whole(&b"hi"[..]));
        assert!(brief.text && !brief.from_client);
    }

    #[test]
    fn flows_without_a_websocket_leave_it_out_of_json() {
        let json = serde_json::to_value(Flow::default()).unwrap();
        assert!(json.get("websocket").is_none());
        let back: Flow = serde_json::from_value(json).unwrap();
        assert_eq!(back.websocket, None);
    }
}
