//! mitmproxy flow dumps (`mitmdump -w`, `.mitm`): a stream of tnetstrings,
//! one dict per flow, the `get_state()` of mitmproxy's flow objects. This
//! module reads the HTTP flows of flow format versions up to 21 into
//! [`Flow`]s and writes version 21 dumps that mitmproxy 11 and 12 load.
//!
//! Reading follows the field moves of mitmproxy's `io/compat.py` instead of
//! replaying its upgrades: each fact is looked up under its current name and
//! then under the names older versions used (noted at each lookup). Flows of
//! other types (`tcp`, `udp`, `dns`, pre-12 `websocket`) are skipped and
//! counted. A WebSocket's messages are the HTTP flow's `websocket` (since
//! version 12): `{messages: [[opcode, from_client, content, timestamp,
//! dropped, injected]…], closed_by_client, close_code, close_reason,
//! timestamp_end}`, each message a 5-tuple (no `injected`) before 15.
//!
//! Writing fills every field mitmproxy's `set_state` pops, with the Python
//! types its dataclass checks demand (`host` text, `method` bytes, `alpn`
//! bytes, timestamps floats). proxlet facts without a mitmproxy field go into
//! `metadata` under `proxlet_*` keys and come back on reading.

use std::{
    collections::BTreeMap,
    io::{self, BufRead, Write},
    net::{IpAddr, SocketAddr},
};

use bytes::Bytes;

use super::{
    tnetstring::{self, Value},
    Body, Flow, Header, PluginStep, Request, Response, Tls, WebSocket, WebSocketMessage,
};

/// The flow format version written, and the newest read (mitmproxy's
/// `version.FLOW_FORMAT_VERSION`, unchanged from mitmproxy 10 to 12).
pub const FORMAT_VERSION: i64 = 21;

/// `tls_version` values mitmproxy accepts (its `connection.TlsVersion`).
const TLS_VERSIONS: [&str; 9] = [
    "SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3", "DTLSv0.9", "DTLSv1", "DTLSv1.2", "QUICv1",
];

/// Reads the HTTP flows of a dump one at a time.
pub struct Reader<R> {
    input: R,
    /// Flows read so far, of any type (numbers flows without a proxlet id).
    position: u64,
    /// Flows of other types passed over, by type.
    pub skipped: BTreeMap<String, usize>,
    failed: bool,
}

impl<R: BufRead> Reader<R> {
    pub fn new(input: R) -> Self {
        Self {
            input,
            position: 0,
            skipped: BTreeMap::new(),
            failed: false,
        }
    }
}

impl<R: BufRead> Iterator for Reader<R> {
    type Item = Result<Flow, String>;

    /// The next HTTP flow; after an error, nothing more (the stream has no
    /// frame to resynchronise on).
    fn next(&mut self) -> Option<Self::Item> {
        while !self.failed {
            let value = match tnetstring::read_one(&mut self.input) {
                Ok(Some(value)) => value,
                Ok(None) => return None,
                Err(e) => {
                    self.failed = true;
                    return Some(Err(format!("flow {}: {e}", self.position + 1)));
                }
            };
            self.position += 1;
            match from_state(&value, self.position) {
                Ok(Decoded::Http(flow)) => return Some(Ok(*flow)),
                Ok(Decoded::Other(kind)) => *self.skipped.entry(kind).or_default() += 1,
                Err(e) => {
                    self.failed = true;
                    return Some(Err(format!("flow {}: {e}", self.position)));
                }
            }
        }
        None
    }
}

/// What one dump entry is.
enum Decoded {
    Http(Box<Flow>),
    /// A flow of another type, skipped.
    Other(String),
}

/// Writes `flows` as a version 21 dump; returns how many were written.
pub fn write(flows: impl IntoIterator<Item = Flow>, mut out: impl Write) -> io::Result<usize> {
    let mut buf = Vec::new();
    let mut count = 0;
    for flow in flows {
        buf.clear();
        tnetstring::encode(&to_state(&flow), &mut buf);
        out.write_all(&buf)?;
        count += 1;
    }
    out.flush()?;
    Ok(count)
}

/// A deterministic UUID for proxlet's flow `id`: RFC 9562 §5.8 (version 8,
/// custom content) with `kind` (0 flow, 1 client connection, 2 server
/// connection) in the first group and the id in the last 64 bits.
pub fn uuid(kind: u32, id: u64) -> String {
    format!(
        "{kind:08x}-7078-8{:03x}-8{:03x}-{:012x}",
        (id >> 52) & 0xfff,
        (id >> 48) & 0xf,
        id & 0xffff_ffff_ffff
    )
}

/// The proxlet id inside a UUID made by [`uuid`] for a flow.
fn id_from_uuid(uuid: &str) -> Option<u64> {
    let parts: Vec<&str> = uuid.split('-').collect();
    let [kind, "7078", high, mid, low] = parts[..] else {
        return None;
    };
    if kind != "00000000" || !high.starts_with('8') || !mid.starts_with('8') {
        return None;
    }
    let hex = |s: &str| u64::from_str_radix(s, 16).ok();
    Some((hex(&high[1..])? << 52) | (hex(&mid[1..])? << 48) | hex(low)?)
}

fn float_to_micros(seconds: f64) -> Option<i64> {
    seconds.is_finite().then(|| (seconds * 1e6).round() as i64)
}

fn micros_to_float(micros: i64) -> Value {
    Value::Float(micros as f64 / 1e6)
}

fn optional_time(micros: Option<i64>) -> Value {
    micros.map_or(Value::Null, micros_to_float)
}

/// mitmproxy spells HTTP/2 and HTTP/3 with a minor version.
fn version_to_mitm(version: &str) -> Vec<u8> {
    match version {
        "HTTP/2" => b"HTTP/2.0".to_vec(),
        "HTTP/3" => b"HTTP/3.0".to_vec(),
        "" => b"HTTP/1.1".to_vec(),
        other => other.as_bytes().to_vec(),
    }
}

fn version_from_mitm(version: &str) -> String {
    match version {
        "HTTP/2.0" => "HTTP/2".into(),
        "HTTP/3.0" => "HTTP/3".into(),
        other => other.into(),
    }
}

/// The parts of an absolute URL mitmproxy stores apart: scheme, host
/// (without brackets), port, path with query. An authority-form target
/// (`host:port`, a CONNECT) has no scheme and an empty path.
pub(crate) struct UrlParts {
    pub scheme: String,
    pub host: String,
    pub port: u16,
    pub path: String,
}

pub(crate) fn split_url(url: &str) -> UrlParts {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
        None => (String::new(), url),
    };
    let cut = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(cut);
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let default_port = if scheme == "https" { 443 } else { 80 };
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6.split_once(']').unwrap_or((v6, ""));
            (host, after.strip_prefix(':'))
        }
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    let port = port.and_then(|p| p.parse().ok()).unwrap_or(default_port);
    let path = match path {
        "" if scheme.is_empty() => String::new(),
        "" => "/".into(),
        p if p.starts_with('/') => p.into(),
        p => format!("/{p}"),
    };
    UrlParts {
        scheme,
        host: host.to_owned(),
        port,
        path,
    }
}

/// `host` as it goes into a URL authority (IPv6 in brackets).
fn url_host(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

fn headers_to_state(headers: &[Header]) -> Value {
    Value::List(
        headers
            .iter()
            .map(|h| {
                Value::List(vec![
                    Value::Bytes(h.name.as_bytes().to_vec()),
                    Value::Bytes(h.value.to_vec()),
                ])
            })
            .collect(),
    )
}

fn address(addr: Option<SocketAddr>) -> Value {
    addr.map_or(Value::Null, |a| {
        Value::List(vec![
            Value::Str(a.ip().to_string()),
            Value::Int(a.port().into()),
        ])
    })
}

fn text_or_null(text: Option<&str>) -> Value {
    text.map_or(Value::Null, |t| Value::Str(t.to_owned()))
}

/// The TLS fields both connection kinds share.
fn tls_fields(tls: Option<&Tls>) -> Vec<(&'static str, Value)> {
    let version = tls
        .and_then(|t| t.version.as_deref())
        .filter(|v| TLS_VERSIONS.contains(v));
    vec![
        ("tls", Value::Bool(tls.is_some())),
        ("certificate_list", Value::List(vec![])),
        (
            "alpn",
            tls.and_then(|t| t.alpn.as_deref())
                .map_or(Value::Null, |a| Value::Bytes(a.as_bytes().to_vec())),
        ),
        ("alpn_offers", Value::List(vec![])),
        ("cipher", Value::Null),
        ("cipher_list", Value::List(vec![])),
        ("tls_version", text_or_null(version)),
        ("sni", text_or_null(tls.and_then(|t| t.sni.as_deref()))),
    ]
}

fn dict(entries: Vec<(&str, Value)>) -> Value {
    Value::Dict(
        entries
            .into_iter()
            .map(|(k, v)| (Value::Str(k.to_owned()), v))
            .collect(),
    )
}

/// The version 21 state of `flow` (mitmproxy's `HTTPFlow.get_state()`).
fn to_state(flow: &Flow) -> Value {
    let t = &flow.timings;
    let created = [t.client_connect, t.request_start, t.response_start]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(0);
    let url = split_url(&flow.request.url);
    let http2 = matches!(flow.request.version.as_str(), "HTTP/2" | "HTTP/3");
    // HTTP/2 carries the authority as a pseudo-header; for HTTP/1 mitmproxy
    // keeps it only for authority-form (CONNECT) targets.
    let authority = if http2 || url.scheme.is_empty() {
        format!("{}:{}", url_host(&url.host), url.port)
    } else {
        String::new()
    };
    let request = dict(vec![
        ("host", Value::Str(url.host.clone())),
        ("port", Value::Int(url.port.into())),
        (
            "method",
            Value::Bytes(flow.request.method.as_bytes().to_vec()),
        ),
        ("scheme", Value::Bytes(url.scheme.as_bytes().to_vec())),
        ("authority", Value::Bytes(authority.into_bytes())),
        ("path", Value::Bytes(url.path.as_bytes().to_vec())),
        (
            "http_version",
            Value::Bytes(version_to_mitm(&flow.request.version)),
        ),
        ("headers", headers_to_state(&flow.request.headers)),
        ("content", Value::Bytes(flow.request.body.data.to_vec())),
        ("trailers", Value::Null),
        (
            "timestamp_start",
            micros_to_float(t.request_start.unwrap_or(created)),
        ),
        ("timestamp_end", optional_time(t.request_end)),
    ]);
    let response = flow.response.as_ref().map_or(Value::Null, |r| {
        let reason = http::StatusCode::from_u16(r.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        dict(vec![
            ("http_version", Value::Bytes(version_to_mitm(&r.version))),
            ("headers", headers_to_state(&r.headers)),
            ("content", Value::Bytes(r.body.data.to_vec())),
            ("trailers", Value::Null),
            (
                "timestamp_start",
                micros_to_float(t.response_start.or(t.request_end).unwrap_or(created)),
            ),
            ("timestamp_end", optional_time(t.response_end)),
            ("status_code", Value::Int(r.status.into())),
            ("reason", Value::Bytes(reason.as_bytes().to_vec())),
        ])
    });
    let proxy_mode = match flow.mode.as_str() {
        mode @ ("regular" | "transparent" | "socks5") => mode,
        _ => "regular",
    };
    let mut client_conn = vec![
        ("id", Value::Str(uuid(1, flow.id))),
        // Required by mitmproxy's Client; ("", 0) is its own "unknown".
        (
            "peername",
            match flow.client {
                Some(_) => address(flow.client),
                None => Value::List(vec![Value::Str(String::new()), Value::Int(0)]),
            },
        ),
        (
            "sockname",
            Value::List(vec![Value::Str(String::new()), Value::Int(0)]),
        ),
        ("error", Value::Null),
    ];
    client_conn.extend(tls_fields(flow.client_tls.as_ref()));
    client_conn.extend([
        (
            "timestamp_start",
            micros_to_float(t.client_connect.unwrap_or(created)),
        ),
        ("timestamp_end", Value::Null),
        ("timestamp_tls_setup", optional_time(t.client_tls)),
        ("transport_protocol", Value::Str("tcp".into())),
        ("mitmcert", Value::Null),
        ("proxy_mode", Value::Str(proxy_mode.into())),
    ]);
    let mut server_conn = vec![
        ("id", Value::Str(uuid(2, flow.id))),
        ("peername", address(flow.server)),
        ("sockname", Value::Null),
        ("error", Value::Null),
    ];
    server_conn.extend(tls_fields(flow.server_tls.as_ref()));
    server_conn.extend([
        ("timestamp_start", optional_time(t.server_connect)),
        ("timestamp_end", Value::Null),
        ("timestamp_tls_setup", optional_time(t.server_tls)),
        ("transport_protocol", Value::Str("tcp".into())),
        (
            "address",
            if url.host.is_empty() {
                Value::Null
            } else {
                Value::List(vec![
                    Value::Str(url.host.clone()),
                    Value::Int(url.port.into()),
                ])
            },
        ),
        ("timestamp_tcp_setup", optional_time(t.server_tcp)),
        ("via", Value::Null),
    ]);
    let error = flow.error.as_ref().map_or(Value::Null, |msg| {
        dict(vec![
            ("msg", Value::Str(msg.clone())),
            (
                "timestamp",
                micros_to_float(t.response_end.or(t.response_start).unwrap_or(created)),
            ),
        ])
    });
    dict(vec![
        ("version", Value::Int(FORMAT_VERSION)),
        ("type", Value::Str("http".into())),
        ("id", Value::Str(uuid(0, flow.id))),
        ("error", error),
        ("client_conn", dict(client_conn)),
        ("server_conn", dict(server_conn)),
        ("intercepted", Value::Bool(false)),
        ("is_replay", Value::Null),
        // mitmproxy 7+ marks with an emoji name; ":default:" is its plain mark.
        (
            "marked",
            Value::Str(if flow.marked { ":default:" } else { "" }.into()),
        ),
        ("metadata", metadata(flow)),
        ("comment", Value::Str(flow.comment.clone())),
        ("timestamp_created", micros_to_float(created)),
        ("backup", Value::Null),
        ("request", request),
        ("response", response),
        (
            "websocket",
            flow.websocket
                .as_ref()
                .map_or(Value::Null, websocket_to_state),
        ),
    ])
}

/// mitmproxy's `WebSocketData.get_state()`.
fn websocket_to_state(ws: &WebSocket) -> Value {
    let messages = ws
        .messages
        .iter()
        .map(|m| {
            // `WebSocketMessage.get_state()`: RFC 6455 opcode 1 text, 2 binary.
            Value::List(vec![
                Value::Int(if m.text { 1 } else { 2 }),
                Value::Bool(m.from_client),
                Value::Bytes(m.content.data.to_vec()),
                micros_to_float(m.time),
                Value::Bool(m.dropped),
                Value::Bool(m.injected),
            ])
        })
        .collect();
    dict(vec![
        ("messages", Value::List(messages)),
        (
            "closed_by_client",
            ws.closed_by_client.map_or(Value::Null, Value::Bool),
        ),
        (
            "close_code",
            ws.close_code.map_or(Value::Null, |c| Value::Int(c.into())),
        ),
        ("close_reason", text_or_null(ws.close_reason.as_deref())),
        ("timestamp_end", optional_time(ws.end)),
    ])
}

/// A WebSocket from mitmproxy's state (format 12 on).
fn websocket_from_state(state: &Value) -> Result<WebSocket, String> {
    let messages = state
        .get("messages")
        .and_then(Value::list)
        .unwrap_or_default();
    let flag = |v: Option<&Value>| matches!(v, Some(Value::Bool(true)));
    let messages = messages
        .iter()
        .map(|m| {
            let parts = m.list().unwrap_or_default();
            let content = parts
                .get(2)
                .and_then(Value::bytes)
                .ok_or("a WebSocket message without content")?;
            Ok(WebSocketMessage {
                // Opcodes other than text are binary to mitmproxy too.
                text: parts.first().and_then(Value::int) == Some(1),
                from_client: flag(parts.get(1)),
                content: Body::whole(Bytes::copy_from_slice(content)),
                time: parts
                    .get(3)
                    .and_then(Value::float)
                    .and_then(float_to_micros)
                    .unwrap_or(0),
                // `killed` before version 12.
                dropped: flag(parts.get(4)),
                // Since version 15.
                injected: flag(parts.get(5)),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(WebSocket {
        messages,
        messages_omitted: 0,
        closed_by_client: match state.get("closed_by_client") {
            Some(Value::Bool(b)) => Some(*b),
            _ => None,
        },
        close_code: state
            .get("close_code")
            .and_then(Value::int)
            .and_then(|c| u16::try_from(c).ok()),
        close_reason: state
            .get("close_reason")
            .filter(|r| !r.is_null())
            .and_then(Value::text),
        end: state
            .get("timestamp_end")
            .and_then(Value::float)
            .and_then(float_to_micros),
    })
}

/// proxlet's facts that mitmproxy has no field for.
fn metadata(flow: &Flow) -> Value {
    let mut entries = vec![("proxlet_id", Value::Int(flow.id as i64))];
    if !flow.plugins.is_empty() {
        let steps = flow
            .plugins
            .iter()
            .map(|s| {
                dict(vec![
                    ("plugin", Value::Str(s.plugin.clone())),
                    ("hook", Value::Str(s.hook.clone())),
                    ("decision", Value::Str(s.decision.clone())),
                    ("micros", Value::Int(s.micros as i64)),
                ])
            })
            .collect();
        entries.push(("proxlet_plugins", Value::List(steps)));
    }
    if let Some(note) = &flow.note {
        entries.push(("proxlet_note", Value::Str(note.clone())));
    }
    // A truncated body's true length (the content holds its first bytes).
    let mut truncated = Vec::new();
    if flow.request.body.truncated {
        truncated.push(("request", Value::Int(flow.request.body.size as i64)));
    }
    if let Some(r) = flow.response.as_ref().filter(|r| r.body.truncated) {
        truncated.push(("response", Value::Int(r.body.size as i64)));
    }
    if !truncated.is_empty() {
        entries.push(("proxlet_truncated", dict(truncated)));
    }
    // Of a WebSocket: the messages only counted, and the true sizes of
    // those whose content holds only their first bytes, by index.
    if let Some(ws) = &flow.websocket {
        let cut: Vec<Value> = ws
            .messages
            .iter()
            .enumerate()
            .filter(|(_, m)| m.content.truncated)
            .map(|(i, m)| {
                Value::List(vec![
                    Value::Int(i as i64),
                    Value::Int(m.content.size as i64),
                ])
            })
            .collect();
        if ws.messages_omitted > 0 || !cut.is_empty() {
            entries.push((
                "proxlet_websocket",
                dict(vec![
                    ("omitted", Value::Int(ws.messages_omitted as i64)),
                    ("truncated", Value::List(cut)),
                ]),
            ));
        }
    }
    dict(entries)
}

/// Reads one dump entry; `position` (1-based) numbers flows that carry no
/// proxlet id.
fn from_state(state: &Value, position: u64) -> Result<Decoded, String> {
    if !matches!(state, Value::Dict(_)) {
        return Err("not a flow (a dump entry must be a dict)".into());
    }
    // Versions before 4 were (major, minor[, patch]) tuples.
    match state.get("version") {
        Some(Value::Int(v)) if *v > FORMAT_VERSION => {
            return Err(format!(
                "flow format version {v} is newer than this proxlet reads (up to {FORMAT_VERSION})"
            ))
        }
        Some(Value::Int(_) | Value::List(_)) => {}
        _ => return Err("no flow format version".into()),
    }
    let kind = state
        .get("type")
        .and_then(Value::text)
        .ok_or("no flow type")?;
    if kind != "http" {
        return Ok(Decoded::Other(kind));
    }
    let metadata = state.get("metadata");
    let meta = |key: &str| metadata.and_then(|m| m.get(key));
    let id = meta("proxlet_id")
        .and_then(Value::int)
        .map(|id| id as u64)
        .or_else(|| {
            state
                .get("id")
                .and_then(Value::text)
                .and_then(|u| id_from_uuid(&u))
        })
        .unwrap_or(position);
    let client_conn = state.get("client_conn").unwrap_or(&Value::Null);
    let server_conn = state.get("server_conn").unwrap_or(&Value::Null);
    let request = state
        .get("request")
        .filter(|r| matches!(r, Value::Dict(_)))
        .ok_or("no request")?;

    let mut flow = Flow {
        id,
        // `client_conn.proxy_mode` since version 18, the flow's `mode` before 17.
        mode: client_conn
            .get("proxy_mode")
            .or_else(|| state.get("mode"))
            .and_then(Value::text)
            .unwrap_or_else(|| "regular".into()),
        // `peername` since version 19, `address` before.
        client: socket_addr(client_conn.get("peername").or(client_conn.get("address"))),
        // `peername` since 19, `ip_address` before; `address` is what was asked for.
        server: socket_addr(
            server_conn
                .get("peername")
                .or(server_conn.get("ip_address")),
        )
        .or_else(|| socket_addr(server_conn.get("address"))),
        client_tls: tls_from_state(client_conn, true),
        server_tls: tls_from_state(server_conn, false),
        request: request_from_state(request)?,
        error: state
            .get("error")
            .and_then(|e| e.get("msg"))
            .and_then(Value::text),
        note: meta("proxlet_note").and_then(Value::text),
        // A bool before version 13, the mark's name (or "") since.
        marked: match state.get("marked") {
            Some(Value::Bool(b)) => *b,
            Some(Value::Str(s)) => !s.is_empty(),
            Some(Value::Bytes(b)) => !b.is_empty(),
            _ => false,
        },
        comment: state
            .get("comment")
            .and_then(Value::text)
            .unwrap_or_default(),
        ..Flow::default()
    };
    if let Some(response) = state.get("response").filter(|r| !r.is_null()) {
        flow.response = Some(response_from_state(response)?);
    }
    if let Some(ws) = state.get("websocket").filter(|w| !w.is_null()) {
        let mut ws = websocket_from_state(ws)?;
        if let Some(extra) = meta("proxlet_websocket") {
            ws.messages_omitted = extra
                .get("omitted")
                .and_then(Value::int)
                .unwrap_or(0)
                .max(0) as u64;
            for cut in extra
                .get("truncated")
                .and_then(Value::list)
                .unwrap_or_default()
            {
                let pair = cut.list().unwrap_or_default();
                let (Some(i), Some(size)) = (
                    pair.first().and_then(Value::int),
                    pair.get(1).and_then(Value::int),
                ) else {
                    continue;
                };
                if let Some(m) = usize::try_from(i).ok().and_then(|i| ws.messages.get_mut(i)) {
                    m.content.size = size.max(0) as u64;
                    m.content.truncated = true;
                }
            }
        }
        flow.websocket = Some(ws);
    }
    let time = |v: Option<&Value>| v.and_then(Value::float).and_then(float_to_micros);
    let timings = &mut flow.timings;
    timings.client_connect = time(client_conn.get("timestamp_start"));
    // `timestamp_ssl_setup` before version 6.
    timings.client_tls = time(
        client_conn
            .get("timestamp_tls_setup")
            .or(client_conn.get("timestamp_ssl_setup")),
    );
    timings.request_start = time(request.get("timestamp_start"));
    timings.request_end = time(request.get("timestamp_end"));
    timings.server_connect = time(server_conn.get("timestamp_start"));
    timings.server_tcp = time(server_conn.get("timestamp_tcp_setup"));
    timings.server_tls = time(
        server_conn
            .get("timestamp_tls_setup")
            .or(server_conn.get("timestamp_ssl_setup")),
    );
    if let Some(response) = state.get("response") {
        timings.response_start = time(response.get("timestamp_start"));
        timings.response_end = time(response.get("timestamp_end"));
    }
    if let Some(steps) = meta("proxlet_plugins").and_then(Value::list) {
        flow.plugins = steps
            .iter()
            .map(|s| PluginStep {
                plugin: s.get("plugin").and_then(Value::text).unwrap_or_default(),
                hook: s.get("hook").and_then(Value::text).unwrap_or_default(),
                decision: s.get("decision").and_then(Value::text).unwrap_or_default(),
                micros: s.get("micros").and_then(Value::int).unwrap_or(0).max(0) as u64,
            })
            .collect();
    }
    if let Some(truncated) = meta("proxlet_truncated") {
        let size = |part: &str| {
            truncated
                .get(part)
                .and_then(Value::int)
                .map(|s| s.max(0) as u64)
        };
        if let Some(size) = size("request") {
            flow.request.body.size = size;
            flow.request.body.truncated = true;
        }
        if let (Some(size), Some(r)) = (size("response"), flow.response.as_mut()) {
            r.body.size = size;
            r.body.truncated = true;
        }
    }
    Ok(Decoded::Http(Box::new(flow)))
}

/// `(host, port, …)` as a socket address, when the host is an IP address
/// (older dumps may hold bytes hosts).
fn socket_addr(value: Option<&Value>) -> Option<SocketAddr> {
    let parts = value?.list()?;
    let ip: IpAddr = parts.first()?.text()?.parse().ok()?;
    let port = u16::try_from(parts.get(1)?.int()?).ok()?;
    Some(SocketAddr::new(ip, port))
}

fn tls_from_state(conn: &Value, client: bool) -> Option<Tls> {
    // `tls` since version 10, `tls_established` until 18, `ssl_established` before 6.
    let established = ["tls", "tls_established", "ssl_established"]
        .iter()
        .find_map(|k| match conn.get(k) {
            Some(Value::Bool(b)) => Some(*b),
            _ => None,
        })
        .unwrap_or(false);
    if !established {
        return None;
    }
    let text = |v: Option<&Value>| v.filter(|v| !v.is_null()).and_then(Value::text);
    Some(Tls {
        // `sni` was `True` for "the address" on servers before version 19.
        sni: match conn.get("sni") {
            Some(Value::Bool(true)) => conn
                .get("address")
                .and_then(Value::list)
                .and_then(|a| a.first())
                .and_then(Value::text),
            other => text(other),
        },
        // `alpn` since version 11, `alpn_proto_negotiated` before.
        alpn: text(conn.get("alpn").or(conn.get("alpn_proto_negotiated"))),
        version: text(conn.get("tls_version")),
        intercepted: client,
    })
}

fn headers_from_state(value: Option<&Value>) -> Result<Vec<Header>, String> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let fields = value.list().ok_or("headers are not a list")?;
    fields
        .iter()
        .map(|field| match field.list() {
            Some([name, value]) => match (name.bytes(), value.bytes()) {
                (Some(name), Some(value)) => Ok(Header::new(
                    String::from_utf8_lossy(name).into_owned(),
                    Bytes::copy_from_slice(value),
                )),
                _ => Err("a header field is not a pair of byte strings".to_owned()),
            },
            _ => Err("a header field is not a [name, value] pair".to_owned()),
        })
        .collect()
}

/// `content` is the body as it went over the wire; `None` when mitmproxy
/// streamed it without keeping it. `body` before version 0.16.
fn body_from_state(message: &Value) -> Body {
    match message
        .get("content")
        .or(message.get("body"))
        .and_then(Value::bytes)
    {
        Some(data) => Body::whole(Bytes::copy_from_slice(data)),
        // Streamed: the body went through but was not kept.
        None => Body {
            truncated: true,
            ..Body::default()
        },
    }
}

fn request_from_state(request: &Value) -> Result<Request, String> {
    let text = |key: &str| request.get(key).and_then(Value::text).unwrap_or_default();
    let method = text("method");
    if method.is_empty() {
        return Err("request without a method".into());
    }
    let (scheme, host, path) = (text("scheme"), text("host"), text("path"));
    let port = request.get("port").and_then(Value::int);
    let authority = text("authority");
    // An authority-form request (CONNECT) has neither scheme nor path;
    // `first_line_format` said so before version 9.
    let url = if scheme.is_empty() && path.is_empty() {
        if authority.is_empty() {
            format!("{}:{}", url_host(&host), port.unwrap_or(0))
        } else {
            authority
        }
    } else {
        let default = if scheme == "https" { 443 } else { 80 };
        let port = match port {
            Some(p) if p != default => format!(":{p}"),
            _ => String::new(),
        };
        format!("{scheme}://{}{port}{path}", url_host(&host))
    };
    Ok(Request {
        method,
        url,
        version: version_from_mitm(&text("http_version")),
        headers: headers_from_state(request.get("headers"))?,
        body: body_from_state(request),
    })
}

fn response_from_state(response: &Value) -> Result<Response, String> {
    // `status_code` since 0.14, `code` before.
    let status = response
        .get("status_code")
        .or(response.get("code"))
        .and_then(Value::int)
        .and_then(|s| u16::try_from(s).ok())
        .ok_or("response without a status code")?;
    Ok(Response {
        status,
        version: version_from_mitm(
            &response
                .get("http_version")
                .and_then(Value::text)
                .unwrap_or_default(),
        ),
        headers: headers_from_state(response.get("headers"))?,
        body: body_from_state(response),
    })
}

/// Reads every HTTP flow of a whole dump held in memory (tests, small files).
pub fn read(bytes: &[u8]) -> Result<Vec<Flow>, String> {
    Reader::new(bytes).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Flow {
        crate::flows::sample()
    }

    #[test]
    fn a_flow_round_trips_through_a_version_21_dump() {
        let flow = sample();
        let mut dump = Vec::new();
        assert_eq!(
            write(
                [
                    flow.clone(),
                    Flow {
                        id: 7,
                        ..flow.clone()
                    }
                ],
                &mut dump
            )
            .unwrap(),
            2
        );
        let back = read(&dump).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0], flow);
        assert_eq!(back[1].id, 7);
    }

    #[test]
    fn uuids_are_deterministic_and_give_the_id_back() {
        for id in [0, 1, 42, u64::from(u32::MAX) + 5, u64::MAX] {
            let u = uuid(0, id);
            assert_eq!(u.len(), 36, "{u}");
            assert_eq!(id_from_uuid(&u), Some(id), "{u}");
        }
        assert_eq!(uuid(1, 42), "00000001-7078-8000-8000-00000000002a");
        assert_eq!(id_from_uuid("e0f267ee-dcdb-42fa-b4c7-fb25cd8f4c3f"), None);
    }

    /// A flow as mitmproxy 5 wrote it (format 7): `address` and
    /// `ip_address`, `tls_established`, `alpn_proto_negotiated`, bool
    /// `marked`, no comment, `first_line_format`, bytes sni.
    fn version_7() -> Value {
        let s = |t: &str| Value::Str(t.into());
        let b = |t: &[u8]| Value::Bytes(t.to_vec());
        let addr = |h: &str, p: i64| Value::List(vec![s(h), Value::Int(p)]);
        Value::dict([
            ("version", Value::Int(7)),
            ("type", s("http")),
            ("id", s("4f0b8a3e-0000-4000-8000-000000000001")),
            ("mode", s("regular")),
            ("marked", Value::Bool(true)),
            ("error", Value::Null),
            (
                "client_conn",
                Value::dict([
                    ("address", addr("10.0.0.2", 41000)),
                    ("tls_established", Value::Bool(true)),
                    ("sni", b(b"old.example")),
                    ("alpn_proto_negotiated", b(b"http/1.1")),
                    ("tls_version", s("TLSv1.2")),
                    ("timestamp_start", Value::Float(1_500_000_000.25)),
                    ("timestamp_ssl_setup", Value::Null),
                ]),
            ),
            (
                "server_conn",
                Value::dict([
                    ("address", addr("old.example", 443)),
                    ("ip_address", addr("93.184.216.34", 443)),
                    ("tls_established", Value::Bool(false)),
                    ("timestamp_start", Value::Null),
                ]),
            ),
            (
                "request",
                Value::dict([
                    ("first_line_format", s("absolute")),
                    ("method", b(b"GET")),
                    ("scheme", b(b"https")),
                    ("host", s("old.example")),
                    ("port", Value::Int(443)),
                    ("path", b(b"/a?b=c")),
                    ("http_version", b(b"HTTP/1.1")),
                    (
                        "headers",
                        Value::List(vec![Value::List(vec![b(b"accept"), b(b"*/*")])]),
                    ),
                    ("content", b(b"")),
                    ("timestamp_start", Value::Int(1_500_000_000)),
                    ("timestamp_end", Value::Float(1_500_000_000.5)),
                ]),
            ),
            (
                "response",
                Value::dict([
                    ("http_version", b(b"HTTP/1.1")),
                    ("status_code", Value::Int(404)),
                    ("reason", b(b"Not Found")),
                    ("headers", Value::List(vec![])),
                    ("content", b(b"gone")),
                    ("timestamp_start", Value::Float(1_500_000_001.0)),
                    ("timestamp_end", Value::Null),
                ]),
            ),
        ])
    }

    #[test]
    fn an_old_version_7_flow_imports() {
        let mut dump = Vec::new();
        tnetstring::encode(&version_7(), &mut dump);
        let flows = read(&dump).unwrap();
        let flow = &flows[0];
        assert_eq!(flow.id, 1, "numbered by position without a proxlet id");
        assert_eq!(flow.request.method, "GET");
        assert_eq!(flow.request.url, "https://old.example/a?b=c");
        assert_eq!(flow.request.headers, [Header::new("accept", "*/*")]);
        assert_eq!(flow.client, Some("10.0.0.2:41000".parse().unwrap()));
        assert_eq!(flow.server, Some("93.184.216.34:443".parse().unwrap()));
        let tls = flow.client_tls.as_ref().unwrap();
        assert_eq!(tls.sni.as_deref(), Some("old.example"));
        assert_eq!(tls.alpn.as_deref(), Some("http/1.1"));
        assert!(flow.server_tls.is_none());
        assert!(flow.marked);
        assert_eq!(flow.timings.client_connect, Some(1_500_000_000_250_000));
        assert_eq!(flow.timings.request_end, Some(1_500_000_000_500_000));
        let response = flow.response.as_ref().unwrap();
        assert_eq!(
            (response.status, &response.body.data[..]),
            (404, &b"gone"[..])
        );
    }

    #[test]
    fn other_flow_types_are_skipped_and_counted_and_newer_versions_refused() {
        let mut dump = Vec::new();
        for kind in ["tcp", "http", "dns", "tcp"] {
            let mut state = version_7();
            if let Value::Dict(entries) = &mut state {
                entries[1].1 = Value::Str(kind.into());
            }
            tnetstring::encode(&state, &mut dump);
        }
        let mut reader = Reader::new(&dump[..]);
        let flows: Vec<_> = reader.by_ref().collect::<Result<_, _>>().unwrap();
        assert_eq!(flows.len(), 1);
        assert_eq!(flows[0].id, 2);
        assert_eq!(
            reader.skipped,
            BTreeMap::from([("dns".into(), 1), ("tcp".into(), 2)])
        );

        let mut state = version_7();
        if let Value::Dict(entries) = &mut state {
            entries[0].1 = Value::Int(22);
        }
        let mut dump = Vec::new();
        tnetstring::encode(&state, &mut dump);
        let err = read(&dump).unwrap_err();
        assert!(err.contains("version 22"), "{err}");
    }

    #[test]
    fn broken_dumps_are_errors_naming_the_flow() {
        let mut dump = Vec::new();
        write([sample()], &mut dump).unwrap();
        dump.truncate(dump.len() - 10);
        let err = read(&dump).unwrap_err();
        assert!(err.starts_with("flow 1: "), "{err}");
        tnetstring::encode(&Value::Int(3), &mut dump);
        assert!(read(b"3:abc,").unwrap_err().contains("not a flow"));
    }

    #[test]
    fn websocket_messages_are_mitmproxys_and_old_five_field_ones_read() {
        let flow = sample();
        let state = to_state(&flow);
        let ws = state.get("websocket").unwrap();
        let first = ws.get("messages").and_then(Value::list).unwrap()[1].clone();
        assert_eq!(
            first,
            Value::List(vec![
                Value::Int(2),
                Value::Bool(false),
                Value::Bytes(b"\x00\xff\x80bin".to_vec()),
                Value::Float(1_700_000_000.021),
                Value::Bool(true),
                Value::Bool(false),
            ])
        );
        assert_eq!(ws.get("close_code"), Some(&Value::Int(1001)));
        assert_eq!(ws.get("closed_by_client"), Some(&Value::Bool(false)));

        // Version 14 (mitmproxy 7): no `injected`, no proxlet metadata.
        let mut old = version_7();
        if let Value::Dict(entries) = &mut old {
            entries[0].1 = Value::Int(14);
            entries.push((
                Value::Str("websocket".into()),
                Value::dict([
                    (
                        "messages",
                        Value::List(vec![Value::List(vec![
                            Value::Int(1),
                            Value::Bool(true),
                            Value::Bytes(b"ping".to_vec()),
                            Value::Float(1_500_000_002.5),
                            Value::Bool(false),
                        ])]),
                    ),
                    ("closed_by_client", Value::Null),
                    ("close_code", Value::Null),
                    ("close_reason", Value::Null),
                    ("timestamp_end", Value::Null),
                ]),
            ));
        }
        let mut dump = Vec::new();
        tnetstring::encode(&old, &mut dump);
        let flows = read(&dump).unwrap();
        let ws = flows[0].websocket.as_ref().unwrap();
        assert_eq!(
            ws.messages,
            [WebSocketMessage {
                from_client: true,
                text: true,
                time: 1_500_000_002_500_000,
                content: Body::whole(&b"ping"[..]),
                dropped: false,
                injected: false,
            }]
        );
        assert_eq!(
            (ws.closed_by_client, ws.close_code, ws.end),
            (None, None, None)
        );
    }
}
