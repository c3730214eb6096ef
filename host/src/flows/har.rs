//! HAR 1.2 (the HTTP Archive format, <http://www.softwareishard.com/blog/har-12-spec/>):
//! writing flows as a HAR log and reading HAR entries back into flows.
//!
//! HAR holds bodies decoded (section "content": the text is decoded from
//! any compression), so a flow's content-coded body is decoded on export.
//! On import the decoded body is what a flow gets: `content-encoding` is
//! dropped from the imported headers and a `content-length` is set to the
//! decoded length, so the flow stays consistent and re-exports the same.
//! proxlet's facts without a HAR field travel as `_`-prefixed custom fields
//! (section "Custom Fields"): `_proxlet_id`, `_plugins`, `_truncated`,
//! `_error`, `_note`, `_marked`, `_mode`, `_client`, `_server`,
//! `_client_tls`, `_server_tls`.
//!
//! A WebSocket's messages are Chrome's `_webSocketMessages` on the entry:
//! `[{"type": "send"|"receive", "time": seconds, "opcode": 1|2, "data": …}]`,
//! binary data in base64 as Chrome writes it. What Chrome has no field for
//! is added: a message's `_size` and `_truncated` when only its first bytes
//! were kept, `_dropped`, `_injected`; the entry's `_websocket` (how it
//! closed, when, how many messages were only counted).

use std::io::{self, Write};

use base64::Engine;
use bytes::Bytes;
use serde_json::{json, Value};

use super::{
    filter::decoded, Body, Flow, Header, PluginStep, Request, Response, Timings, WebSocket,
    WebSocketMessage,
};

const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Writes `flows` as one HAR 1.2 log, entry by entry (the whole log is
/// never held in memory); returns how many entries were written.
pub fn write(flows: impl IntoIterator<Item = Flow>, out: impl Write) -> io::Result<usize> {
    let mut out = io::BufWriter::new(out);
    let creator = json!({"name": "proxlet", "version": env!("CARGO_PKG_VERSION")});
    write!(
        out,
        "{{\"log\":{{\"version\":\"1.2\",\"creator\":{creator},\"pages\":[],\"entries\":["
    )?;
    let mut count = 0;
    for flow in flows {
        if count > 0 {
            out.write_all(b",\n")?;
        }
        serde_json::to_writer(&mut out, &entry(&flow))?;
        count += 1;
    }
    out.write_all(b"]}}\n")?;
    out.flush()?;
    Ok(count)
}

/// A HAR `timings` object in milliseconds (section "timings").
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HarTimings {
    pub blocked: f64,
    pub dns: f64,
    pub connect: f64,
    pub send: f64,
    pub wait: f64,
    pub receive: f64,
    pub ssl: f64,
}

impl HarTimings {
    /// The entry's `time`: the sum of the timings that apply (not -1).
    pub fn total(&self) -> f64 {
        let parts = [
            self.blocked,
            self.dns,
            self.connect,
            self.send,
            self.wait,
            self.receive,
        ];
        // `ssl` is already inside `connect`.
        round_ms(parts.iter().filter(|t| **t >= 0.0).sum())
    }
}

/// Milliseconds with microsecond precision.
fn round_ms(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}

/// HAR timings from a flow's moments. `send`, `wait` and `receive` are
/// required: missing or negative (clock steps) ones are 0. `blocked`,
/// `dns`, `connect` and `ssl` are -1 when they did not happen (a reused
/// connection has no connect); proxlet does not time queueing or DNS apart
/// (DNS is inside `connect`). `ssl` is included in `connect` (section
/// "timings": "If this field is defined then the time is also included in
/// the connect field"), so `ssl <= connect`.
pub fn timings(t: &Timings) -> HarTimings {
    let span = |from: Option<i64>, to: Option<i64>| match (from, to) {
        (Some(from), Some(to)) => Some((to.saturating_sub(from) as f64 / 1000.0).max(0.0)),
        _ => None,
    };
    // Sending and waiting begin once the connection made for this flow is
    // up, so the connect is not counted in them again.
    let connected = t.server_tls.or(t.server_tcp);
    let after_connect = |at: Option<i64>| match (at, connected) {
        (Some(at), Some(c)) => Some(at.max(c)),
        (at, _) => at,
    };
    let required = |d: Option<f64>| round_ms(d.unwrap_or(0.0));
    let optional = |d: Option<f64>| d.map_or(-1.0, round_ms);
    let ssl = optional(span(t.server_tcp, t.server_tls));
    let mut connect = optional(span(t.server_connect, t.server_tls.or(t.server_tcp)));
    if ssl > connect {
        connect = ssl;
    }
    HarTimings {
        blocked: -1.0,
        dns: -1.0,
        connect,
        send: required(span(
            after_connect(t.request_start),
            after_connect(t.request_end),
        )),
        wait: required(span(
            after_connect(t.request_end.or(t.request_start)),
            t.response_start,
        )),
        receive: required(span(t.response_start, t.response_end)),
        ssl,
    }
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` for microseconds since the epoch (ISO 8601,
/// section "entries": `startedDateTime`).
pub fn iso8601(micros: i64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.microsecond()
    )
}

/// Microseconds since the epoch of an ISO 8601 date-time with an offset
/// (`2009-04-16T12:07:25.123+01:00`, `…Z`).
pub fn parse_iso8601(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let digits = text.get(from..from + len)?;
        digits
            .bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| digits.parse().ok())?
    };
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let date = time::Date::from_calendar_date(
        num(0, 4)? as i32,
        time::Month::try_from(num(5, 2)? as u8).ok()?,
        num(8, 2)? as u8,
    )
    .ok()?;
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    let mut at = 19;
    let mut micros = 0;
    if b.get(at) == Some(&b'.') {
        let digits = b[at + 1..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        let fraction = &text[at + 1..at + 1 + digits];
        let padded: String = fraction.chars().chain("000000".chars()).take(6).collect();
        micros = padded.parse().ok()?;
        at += 1 + digits;
    }
    let offset_seconds = match b.get(at) {
        None | Some(b'Z' | b'z') => 0,
        Some(sign @ (b'+' | b'-')) => {
            let rest = text[at + 1..].replace(':', "");
            let (h, m): (i64, i64) = (
                rest.get(0..2)?.parse().ok()?,
                rest.get(2..4).map_or(Some(0), |m| m.parse().ok())?,
            );
            let seconds = h * 3600 + m * 60;
            if *sign == b'-' {
                -seconds
            } else {
                seconds
            }
        }
        _ => return None,
    };
    let time = time::Time::from_hms(hour as u8, minute as u8, second as u8).ok()?;
    let local = time::PrimitiveDateTime::new(date, time).assume_utc();
    Some((local.unix_timestamp() - offset_seconds) * 1_000_000 + micros)
}

fn header_value(headers: &[Header], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| String::from_utf8_lossy(&h.value).into_owned())
}

fn headers_json(headers: &[Header]) -> Value {
    Value::Array(
        headers
            .iter()
            .map(|h| json!({"name": h.name, "value": String::from_utf8_lossy(&h.value)}))
            .collect(),
    )
}

/// HAR 1.2 "headersSize": the bytes of an HTTP/1 head as proxlet writes it
/// (`name: value` lines); -1 for HTTP/2 and 3, whose compressed heads have
/// no such size.
fn headers_size(version: &str, first_line: &str, headers: &[Header]) -> i64 {
    if !version.starts_with("HTTP/1") {
        return -1;
    }
    let fields: usize = headers
        .iter()
        .map(|h| h.name.len() + 2 + h.value.len() + 2)
        .sum();
    (first_line.len() + 2 + fields + 2) as i64
}

/// A body as HAR text: decoded, UTF-8 as is, anything else base64.
fn body_text(headers: &[Header], body: &Body) -> (Bytes, Value, Option<&'static str>) {
    let plain = Bytes::from(decoded(headers, &body.data).into_owned());
    match std::str::from_utf8(&plain) {
        Ok(text) => {
            let text = Value::String(text.to_owned());
            (plain, text, None)
        }
        Err(_) => {
            let text = Value::String(BASE64.encode(&plain));
            (plain, text, Some("base64"))
        }
    }
}

fn is_encoded(headers: &[Header]) -> bool {
    super::filter::content_coding(headers).is_some()
}

fn cookies(headers: &[Header], response: bool) -> Value {
    let mut cookies = Vec::new();
    let name = if response { "set-cookie" } else { "cookie" };
    for header in headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name)) {
        let value = String::from_utf8_lossy(&header.value);
        if response {
            let mut parts = value.split(';');
            let Some((name, value)) = parts.next().and_then(|p| p.split_once('=')) else {
                continue;
            };
            let mut cookie = json!({"name": name.trim(), "value": value.trim()});
            for attribute in parts {
                let (key, val) = attribute.split_once('=').unwrap_or((attribute, ""));
                match key.trim().to_ascii_lowercase().as_str() {
                    "path" => cookie["path"] = json!(val.trim()),
                    "domain" => cookie["domain"] = json!(val.trim()),
                    "httponly" => cookie["httpOnly"] = json!(true),
                    "secure" => cookie["secure"] = json!(true),
                    _ => {}
                }
            }
            cookies.push(cookie);
        } else {
            for pair in value.split(';') {
                if let Some((name, value)) = pair.split_once('=') {
                    cookies.push(json!({"name": name.trim(), "value": value.trim()}));
                }
            }
        }
    }
    Value::Array(cookies)
}

fn query_string(url: &str) -> Value {
    let query = url
        .split_once('?')
        .map_or("", |(_, q)| q.split('#').next().unwrap_or(""));
    Value::Array(
        query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|pair| {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                json!({"name": name, "value": value})
            })
            .collect(),
    )
}

/// The request target of an HTTP/1 request line for `url`.
fn request_target(url: &str) -> String {
    match url.split_once("://") {
        Some((_, rest)) => match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => rest[i..].to_owned(),
            Some(i) => format!("/{}", &rest[i..]),
            None => "/".into(),
        },
        None => url.to_owned(),
    }
}

/// One HAR entry (section "entries") for `flow`.
pub fn entry(flow: &Flow) -> Value {
    let t = timings(&flow.timings);
    let started = flow
        .timings
        .request_start
        .or(flow.timings.client_connect)
        .or(flow.timings.response_start)
        .unwrap_or(0);
    let request = &flow.request;
    let (_, text, encoding) = body_text(&request.headers, &request.body);
    let mut post_data = json!({
        "mimeType": header_value(&request.headers, "content-type").unwrap_or_default(),
        "text": text,
    });
    if let Some(encoding) = encoding {
        // HAR 1.2 gives postData no encoding field; this custom one says
        // the text is base64 of a body that is not UTF-8.
        post_data["_encoding"] = json!(encoding);
    }
    let first_line = format!(
        "{} {} {}",
        request.method,
        request_target(&request.url),
        request.version
    );
    let har_request = json!({
        "method": request.method,
        "url": request.url,
        "httpVersion": request.version,
        "cookies": cookies(&request.headers, false),
        "headers": headers_json(&request.headers),
        "queryString": query_string(&request.url),
        "postData": post_data,
        "headersSize": headers_size(&request.version, &first_line, &request.headers),
        "bodySize": request.body.size,
    });
    let mut truncated = Vec::new();
    if request.body.truncated {
        truncated.push("request");
    }
    let har_response = match &flow.response {
        Some(response) => {
            if response.body.truncated {
                truncated.push("response");
            }
            response_json(response)
        }
        // A flow without a response (it failed): HAR still needs one;
        // status 0 is what browsers write for requests that got none.
        None => json!({
            "status": 0,
            "statusText": "",
            "httpVersion": "",
            "cookies": [],
            "headers": [],
            "content": {"size": 0, "mimeType": "x-unknown"},
            "redirectURL": "",
            "headersSize": -1,
            "bodySize": -1,
        }),
    };
    let mut entry = json!({
        "startedDateTime": iso8601(started),
        "time": t.total(),
        "request": har_request,
        "response": har_response,
        "cache": {},
        "timings": {
            "blocked": t.blocked,
            "dns": t.dns,
            "connect": t.connect,
            "send": t.send,
            "wait": t.wait,
            "receive": t.receive,
            "ssl": t.ssl,
        },
        "_proxlet_id": flow.id,
        "_plugins": flow.plugins,
    });
    let fields = entry.as_object_mut().expect("an entry is an object");
    if let Some(server) = flow.server {
        fields.insert("serverIPAddress".into(), json!(server.ip().to_string()));
        fields.insert("_server".into(), json!(server.to_string()));
    }
    if let Some(client) = flow.client {
        // "connection": the id of the TCP connection; the client's port
        // tells apart the connections requests came in on (browsers use
        // their local port the same way).
        fields.insert("connection".into(), json!(client.port().to_string()));
        fields.insert("_client".into(), json!(client.to_string()));
    }
    if !flow.comment.is_empty() {
        fields.insert("comment".into(), json!(flow.comment));
    }
    if !truncated.is_empty() {
        fields.insert("_truncated".into(), json!(truncated));
    }
    let optional = [
        ("_error", flow.error.as_ref().map(|e| json!(e))),
        ("_note", flow.note.as_ref().map(|n| json!(n))),
        ("_marked", flow.marked.then_some(Value::Bool(true))),
        ("_mode", (!flow.mode.is_empty()).then(|| json!(flow.mode))),
        ("_client_tls", flow.client_tls.as_ref().map(|t| json!(t))),
        ("_server_tls", flow.server_tls.as_ref().map(|t| json!(t))),
    ];
    for (name, value) in optional {
        if let Some(value) = value {
            fields.insert(name.into(), value);
        }
    }
    if let Some(ws) = &flow.websocket {
        fields.insert("_resourceType".into(), json!("websocket"));
        fields.insert(
            "_webSocketMessages".into(),
            ws.messages.iter().map(websocket_message_json).collect(),
        );
        fields.insert(
            "_websocket".into(),
            json!({
                "closed_by_client": ws.closed_by_client,
                "close_code": ws.close_code,
                "close_reason": ws.close_reason,
                "end": ws.end.map(seconds),
                "messages_omitted": ws.messages_omitted,
            }),
        );
    }
    entry
}

/// Microseconds since the epoch as seconds (Chrome's message `time`).
fn seconds(micros: i64) -> f64 {
    micros as f64 / 1e6
}

/// One of Chrome's `_webSocketMessages`, with proxlet's extras when set.
fn websocket_message_json(m: &WebSocketMessage) -> Value {
    let data = &m.content.data;
    let text = m.text.then(|| std::str::from_utf8(data).ok()).flatten();
    let mut message = json!({
        "type": if m.from_client { "send" } else { "receive" },
        "time": seconds(m.time),
        "opcode": if m.text { 1 } else { 2 },
        "data": text.map_or_else(|| BASE64.encode(data), str::to_owned),
    });
    let fields = message.as_object_mut().expect("a message is an object");
    if m.text && text.is_none() {
        // A text message that is not UTF-8 (a peer broke RFC 6455 §8.1).
        fields.insert("_encoding".into(), json!("base64"));
    }
    if m.content.truncated {
        fields.insert("_size".into(), json!(m.content.size));
        fields.insert("_truncated".into(), json!(true));
    }
    if m.dropped {
        fields.insert("_dropped".into(), json!(true));
    }
    if m.injected {
        fields.insert("_injected".into(), json!(true));
    }
    message
}

/// A WebSocket from Chrome's `_webSocketMessages` and proxlet's `_websocket`.
fn websocket_from_json(messages: &[Value], facts: Option<&Value>) -> Result<WebSocket, String> {
    let flag = |m: &Value, key: &str| m.get(key).and_then(Value::as_bool).unwrap_or(false);
    let mut ws = WebSocket::default();
    for m in messages {
        let from_client = match str_field(m, "type") {
            "send" => true,
            "receive" => false,
            // Chrome also lists errors; they are not messages.
            _ => continue,
        };
        let text = match m.get("opcode").and_then(Value::as_u64) {
            Some(1) => true,
            Some(2) => false,
            // Control frames, if a producer lists them.
            _ => continue,
        };
        let data = str_field(m, "data");
        let data: Bytes = if !text || str_field(m, "_encoding") == "base64" {
            BASE64
                .decode(data)
                .map_err(|e| format!("WebSocket message data is not base64: {e}"))?
                .into()
        } else {
            Bytes::from(data.to_owned())
        };
        let mut content = Body::whole(data);
        if flag(m, "_truncated") {
            content.truncated = true;
            content.size = m
                .get("_size")
                .and_then(Value::as_u64)
                .unwrap_or(content.size);
        }
        ws.messages.push(WebSocketMessage {
            from_client,
            text,
            time: m
                .get("time")
                .and_then(Value::as_f64)
                .map_or(0, |s| (s * 1e6).round() as i64),
            content,
            dropped: flag(m, "_dropped"),
            injected: flag(m, "_injected"),
        });
    }
    if let Some(facts) = facts {
        ws.closed_by_client = facts.get("closed_by_client").and_then(Value::as_bool);
        ws.close_code = facts
            .get("close_code")
            .and_then(Value::as_u64)
            .and_then(|c| u16::try_from(c).ok());
        ws.close_reason = facts
            .get("close_reason")
            .and_then(Value::as_str)
            .map(str::to_owned);
        ws.end = facts
            .get("end")
            .and_then(Value::as_f64)
            .map(|s| (s * 1e6).round() as i64);
        ws.messages_omitted = facts
            .get("messages_omitted")
            .and_then(Value::as_u64)
            .unwrap_or(0);
    }
    Ok(ws)
}

fn response_json(response: &Response) -> Value {
    let (plain, text, encoding) = body_text(&response.headers, &response.body);
    // "content.size": the decoded length; of a truncated body that is only
    // known when it was not content-coded.
    let encoded = is_encoded(&response.headers);
    let size = if response.body.truncated && !encoded {
        response.body.size
    } else {
        plain.len() as u64
    };
    let mut content = json!({
        "size": size,
        "mimeType": header_value(&response.headers, "content-type").unwrap_or_default(),
        "text": text,
    });
    if let Some(encoding) = encoding {
        content["encoding"] = json!(encoding);
    }
    if encoded && !response.body.truncated {
        // "compression": bytes saved by the content coding.
        content["compression"] = json!(size as i64 - response.body.size as i64);
    }
    let reason = http::StatusCode::from_u16(response.status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let first_line = format!("{} {} {reason}", response.version, response.status);
    json!({
        "status": response.status,
        "statusText": reason,
        "httpVersion": response.version,
        "cookies": cookies(&response.headers, true),
        "headers": headers_json(&response.headers),
        "content": content,
        "redirectURL": header_value(&response.headers, "location").unwrap_or_default(),
        "headersSize": headers_size(&response.version, &first_line, &response.headers),
        "bodySize": response.body.size,
    })
}

/// Reads the entries of a HAR log (any HAR 1.1/1.2 producer) into flows.
pub fn read(bytes: &[u8]) -> Result<Vec<Flow>, String> {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let har: Value = serde_json::from_slice(bytes).map_err(|e| format!("invalid JSON: {e}"))?;
    let entries = har
        .get("log")
        .ok_or("no \"log\" object (not a HAR file)")?
        .get("entries")
        .and_then(Value::as_array)
        .ok_or("log has no \"entries\" array")?;
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            from_entry(e, i as u64 + 1).map_err(|reason| format!("entry {}: {reason}", i + 1))
        })
        .collect()
}

fn str_field<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or("")
}

fn headers_from_json(value: Option<&Value>) -> Result<Vec<Header>, String> {
    let Some(list) = value.and_then(Value::as_array) else {
        return Ok(Vec::new());
    };
    list.iter()
        .map(
            |h| match (h.get("name").and_then(Value::as_str), h.get("value")) {
                (Some(name), Some(Value::String(value))) => Ok(Header::new(name, value.clone())),
                _ => Err("a header without a name or text value".to_owned()),
            },
        )
        .collect()
}

/// HAR's spellings of HTTP versions as proxlet writes them.
fn version_from_har(version: &str) -> String {
    match version.to_ascii_lowercase().as_str() {
        "h2" | "http/2" | "http/2.0" => "HTTP/2".into(),
        "h3" | "http/3" | "http/3.0" => "HTTP/3".into(),
        "http/1.0" => "HTTP/1.0".into(),
        "" | "http/1.1" => "HTTP/1.1".into(),
        _ => version.to_owned(),
    }
}

/// A decoded HAR body (`text` with an optional base64 `encoding`) and the
/// headers it now goes with (see the module doc).
fn body_from_json(
    container: Option<&Value>,
    encoding_key: &str,
    headers: &mut Vec<Header>,
) -> Result<Body, String> {
    let Some(container) = container else {
        return Ok(Body::default());
    };
    // Browsers leave out the text of binary or large bodies: such a body is
    // known by its size only, and must not pass for an empty one.
    let size = container.get("size").and_then(Value::as_u64).unwrap_or(0);
    if container.get("text").is_none() && size > 0 {
        return Ok(Body {
            data: Bytes::new(),
            size,
            truncated: true,
        });
    }
    let text = str_field(container, "text");
    let data: Bytes = match container.get(encoding_key).and_then(Value::as_str) {
        Some("base64") => BASE64
            .decode(text)
            .map_err(|e| format!("body text is not base64: {e}"))?
            .into(),
        _ => Bytes::from(text.to_owned()),
    };
    if is_encoded(headers) {
        headers.retain(|h| !h.name.eq_ignore_ascii_case("content-encoding"));
        for h in headers
            .iter_mut()
            .filter(|h| h.name.eq_ignore_ascii_case("content-length"))
        {
            h.value = Bytes::from(data.len().to_string());
        }
    }
    Ok(Body::whole(data))
}

fn from_entry(entry: &Value, position: u64) -> Result<Flow, String> {
    let request = entry.get("request").ok_or("no request")?;
    let method = str_field(request, "method");
    if method.is_empty() {
        return Err("request without a method".into());
    }
    let mut request_headers = headers_from_json(request.get("headers"))?;
    let post_data = request.get("postData");
    let encoding_key = if post_data.is_some_and(|p| p.get("_encoding").is_some()) {
        "_encoding"
    } else {
        "encoding"
    };
    let request_body = body_from_json(post_data, encoding_key, &mut request_headers)?;
    let truncated: Vec<&str> = entry
        .get("_truncated")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let true_size = |message: &Value| message.get("bodySize").and_then(Value::as_u64);
    let mut flow = Flow {
        id: entry
            .get("_proxlet_id")
            .and_then(Value::as_u64)
            .unwrap_or(position),
        mode: str_field(entry, "_mode").to_owned(),
        request: Request {
            method: method.to_owned(),
            url: str_field(request, "url").to_owned(),
            version: version_from_har(str_field(request, "httpVersion")),
            headers: request_headers,
            body: request_body,
        },
        error: entry
            .get("_error")
            .and_then(Value::as_str)
            .map(str::to_owned),
        note: entry
            .get("_note")
            .and_then(Value::as_str)
            .map(str::to_owned),
        marked: entry
            .get("_marked")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        comment: str_field(entry, "comment").to_owned(),
        client: str_field(entry, "_client").parse().ok(),
        server: str_field(entry, "_server").parse().ok(),
        client_tls: entry
            .get("_client_tls")
            .and_then(|t| serde_json::from_value(t.clone()).ok()),
        server_tls: entry
            .get("_server_tls")
            .and_then(|t| serde_json::from_value(t.clone()).ok()),
        plugins: entry
            .get("_plugins")
            .and_then(|p| serde_json::from_value::<Vec<PluginStep>>(p.clone()).ok())
            .unwrap_or_default(),
        ..Flow::default()
    };
    if flow.server.is_none() {
        // Only the IP is standard; the port comes from the URL.
        if let Ok(ip) = str_field(entry, "serverIPAddress").parse() {
            let port = super::mitm::split_url(&flow.request.url).port;
            flow.server = Some(std::net::SocketAddr::new(ip, port));
        }
    }
    if truncated.contains(&"request") {
        flow.request.body.truncated = true;
        flow.request.body.size = true_size(request).unwrap_or(flow.request.body.size);
    }
    let response = entry.get("response").ok_or("no response")?;
    let status = response.get("status").and_then(Value::as_u64).unwrap_or(0);
    if status > 0 {
        let mut headers = headers_from_json(response.get("headers"))?;
        let mut body = body_from_json(response.get("content"), "encoding", &mut headers)?;
        if truncated.contains(&"response") {
            body.truncated = true;
            body.size = true_size(response).unwrap_or(body.size);
        }
        flow.response = Some(Response {
            status: u16::try_from(status).map_err(|_| format!("status {status}"))?,
            version: version_from_har(str_field(response, "httpVersion")),
            headers,
            body,
        });
    }
    flow.timings = timings_from_json(entry);
    if let Some(messages) = entry.get("_webSocketMessages").and_then(Value::as_array) {
        flow.websocket = Some(websocket_from_json(messages, entry.get("_websocket"))?);
    }
    Ok(flow)
}

/// Moments from `startedDateTime` and the durations: the request starts at
/// `startedDateTime`, an upstream connect (when there was one) begins then,
/// and send, wait and receive follow one another; exporting them again gives
/// the same durations.
fn timings_from_json(entry: &Value) -> Timings {
    let Some(start) = parse_iso8601(str_field(entry, "startedDateTime")) else {
        return Timings::default();
    };
    let timings = entry.get("timings");
    let ms = |key: &str| {
        timings
            .and_then(|t| t.get(key))
            .and_then(Value::as_f64)
            // Negative means "not applicable"; beyond a year is not a timing.
            .filter(|v| (0.0..=3.2e10).contains(v))
            .map(|v| (v * 1000.0).round() as i64)
    };
    let mut t = Timings {
        request_start: Some(start),
        ..Timings::default()
    };
    if let Some(connect) = ms("connect") {
        let ssl = ms("ssl");
        t.server_connect = Some(start);
        t.server_tcp = Some(start + connect - ssl.unwrap_or(0));
        t.server_tls = ssl.map(|_| start + connect);
    }
    let sending = t.server_tls.or(t.server_tcp).unwrap_or(start);
    let request_end = sending + ms("send").unwrap_or(0);
    let response_start = request_end + ms("wait").unwrap_or(0);
    t.request_end = Some(request_end);
    if entry
        .get("response")
        .and_then(|r| r.get("status"))
        .and_then(Value::as_u64)
        .unwrap_or(0)
        > 0
    {
        t.response_start = Some(response_start);
        t.response_end = Some(response_start + ms("receive").unwrap_or(0));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::Tls;

    fn timed(t: Timings) -> HarTimings {
        timings(&t)
    }

    #[test]
    fn required_timings_are_never_negative_and_missing_optional_ones_are_minus_one() {
        let t = timed(Timings::default());
        assert_eq!((t.send, t.wait, t.receive), (0.0, 0.0, 0.0));
        assert_eq!(
            (t.blocked, t.dns, t.connect, t.ssl),
            (-1.0, -1.0, -1.0, -1.0)
        );
        assert_eq!(t.total(), 0.0);
        // A clock step backwards gives 0, not a negative duration.
        let t = timed(Timings {
            request_start: Some(10_000),
            request_end: Some(5_000),
            response_start: Some(4_000),
            response_end: Some(3_000),
            server_connect: Some(9_000),
            server_tcp: Some(8_000),
            ..Timings::default()
        });
        assert_eq!((t.send, t.wait, t.receive, t.connect), (0.0, 0.0, 0.0, 0.0));
        assert_eq!(t.ssl, -1.0);
    }

    #[test]
    fn ssl_is_inside_connect_and_time_is_the_sum() {
        let t = timed(Timings {
            request_start: Some(1_000_000),
            request_end: Some(1_000_500),
            server_connect: Some(1_001_000),
            server_tcp: Some(1_003_000),
            server_tls: Some(1_010_250),
            response_start: Some(1_020_000),
            response_end: Some(1_021_001),
            ..Timings::default()
        });
        assert_eq!(t.connect, 9.25);
        assert_eq!(t.ssl, 7.25);
        assert!(t.ssl <= t.connect);
        // Sending and waiting start once connected: the connect is not
        // counted twice (the request head was read before connecting).
        assert_eq!((t.send, t.wait, t.receive), (0.0, 9.75, 1.001));
        assert_eq!(t.total(), 20.001);
        // A plain connection: connect is the TCP handshake, no ssl.
        let t = timed(Timings {
            server_connect: Some(0),
            server_tcp: Some(2_000),
            ..Timings::default()
        });
        assert_eq!((t.connect, t.ssl), (2.0, -1.0));
    }

    #[test]
    fn dates_are_iso_8601_both_ways() {
        let micros = 1_700_000_000_123_456;
        assert_eq!(iso8601(micros), "2023-11-14T22:13:20.123456Z");
        assert_eq!(parse_iso8601("2023-11-14T22:13:20.123456Z"), Some(micros));
        assert_eq!(
            parse_iso8601("2023-11-14T23:13:20.123456+01:00"),
            Some(micros)
        );
        assert_eq!(
            parse_iso8601("2009-04-16T12:07:25.123+01:00"),
            Some(1_239_880_045_123_000)
        );
        assert_eq!(
            parse_iso8601("2009-04-16T11:07:25Z"),
            Some(1_239_880_045_000_000)
        );
        for bad in [
            "",
            "yesterday",
            "2009-13-16T12:07:25Z",
            "2009-04-16T12:07:25Q",
        ] {
            assert_eq!(parse_iso8601(bad), None, "{bad}");
        }
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn flow() -> Flow {
        let text = b"hello hello hello hello".repeat(10);
        let gz = gzip(&text);
        Flow {
            id: 9,
            mode: "regular".into(),
            client: Some("127.0.0.1:5000".parse().unwrap()),
            server: Some("127.0.0.1:8443".parse().unwrap()),
            server_tls: Some(Tls {
                version: Some("TLSv1.3".into()),
                ..Tls::default()
            }),
            timings: Timings {
                request_start: Some(1_700_000_000_000_000),
                request_end: Some(1_700_000_000_001_000),
                server_connect: Some(1_700_000_000_000_000),
                server_tcp: Some(1_700_000_000_000_400),
                server_tls: Some(1_700_000_000_000_900),
                response_start: Some(1_700_000_000_005_000),
                response_end: Some(1_700_000_000_006_000),
                ..Timings::default()
            },
            request: Request {
                method: "POST".into(),
                url: "https://example.com:8443/up?a=1&b".into(),
                version: "HTTP/1.1".into(),
                headers: vec![
                    Header::new("host", "example.com:8443"),
                    Header::new("cookie", "s=1; t=2"),
                ],
                body: Body::whole(&b"\x00\xff binary"[..]),
            },
            response: Some(Response {
                status: 200,
                version: "HTTP/1.1".into(),
                headers: vec![
                    Header::new("content-encoding", "gzip"),
                    Header::new("content-length", gz.len().to_string()),
                    Header::new("content-type", "text/plain"),
                ],
                body: Body::whole(gz),
            }),
            plugins: vec![PluginStep {
                plugin: "p".into(),
                hook: "on-request".into(),
                decision: "continue".into(),
                micros: 3,
            }],
            comment: "c".into(),
            ..Flow::default()
        }
    }

    #[test]
    fn an_entry_follows_har_1_2() {
        let entry = entry(&flow());
        assert_eq!(entry["startedDateTime"], "2023-11-14T22:13:20.000000Z");
        let request = &entry["request"];
        assert_eq!(
            request["postData"]["text"],
            BASE64.encode(b"\x00\xff binary")
        );
        assert_eq!(request["postData"]["_encoding"], "base64");
        assert_eq!(request["bodySize"], 9);
        assert_eq!(request["cookies"][1]["name"], "t");
        assert_eq!(request["queryString"][1], json!({"name": "b", "value": ""}));
        assert_eq!(
            request["headersSize"],
            json!(
                "POST /up?a=1&b HTTP/1.1\r\nhost: example.com:8443\r\ncookie: s=1; t=2\r\n\r\n"
                    .len()
            )
        );
        let content = &entry["response"]["content"];
        let text = "hello hello hello hello".repeat(10);
        assert_eq!(content["text"], text);
        assert_eq!(content["size"], text.len());
        assert!(content.get("encoding").is_none());
        assert_eq!(
            content["compression"].as_i64().unwrap(),
            text.len() as i64 - entry["response"]["bodySize"].as_i64().unwrap()
        );
        assert_eq!(entry["timings"]["connect"], 0.9);
        assert_eq!(entry["timings"]["ssl"], 0.5);
        // The upload overlapped the connect: send counts from connected.
        assert_eq!(entry["timings"]["send"], 0.1);
        assert_eq!(entry["time"], 0.9 + 0.1 + 4.0 + 1.0);
        assert_eq!(entry["serverIPAddress"], "127.0.0.1");
        assert_eq!(entry["_proxlet_id"], 9);
        assert_eq!(entry["_plugins"][0]["plugin"], "p");
        // A GET without a body still has postData, with empty text.
        let mut get = flow();
        get.request.body = Body::default();
        assert_eq!(super::entry(&get)["request"]["postData"]["text"], "");
    }

    #[test]
    fn flows_round_trip_through_har_with_decoded_bodies() {
        let mut har = Vec::new();
        assert_eq!(write([flow()], &mut har).unwrap(), 1);
        let back = read(&har).unwrap();
        let original = flow();
        let got = &back[0];
        assert_eq!(got.id, 9);
        assert_eq!(got.request, original.request);
        assert_eq!(got.client, original.client);
        assert_eq!(got.server, original.server);
        assert_eq!(got.server_tls, original.server_tls);
        assert_eq!(got.plugins, original.plugins);
        assert_eq!(got.comment, "c");
        let response = got.response.as_ref().unwrap();
        assert_eq!(
            response.body.data,
            "hello hello hello hello".repeat(10).as_bytes()
        );
        assert!(response
            .headers
            .iter()
            .all(|h| h.name != "content-encoding"));
        assert_eq!(
            header_value(&response.headers, "content-length").unwrap(),
            response.body.data.len().to_string()
        );
        // Durations survive: exporting the import gives the same timings.
        assert_eq!(timings(&got.timings), timings(&original.timings));
        let again: Value = serde_json::from_slice(&{
            let mut out = Vec::new();
            write(back, &mut out).unwrap();
            out
        })
        .unwrap();
        let first: Value = serde_json::from_slice(&har).unwrap();
        assert_eq!(
            again["log"]["entries"][0]["timings"],
            first["log"]["entries"][0]["timings"]
        );
        assert_eq!(
            again["log"]["entries"][0]["response"]["content"]["text"],
            first["log"]["entries"][0]["response"]["content"]["text"]
        );
    }

    #[test]
    fn failed_and_truncated_flows_keep_what_they_lost() {
        let mut f = flow();
        f.response = None;
        f.error = Some("upstream refused".into());
        f.request.body = Body {
            data: Bytes::from_static(b"abc"),
            size: 10,
            truncated: true,
        };
        let mut har = Vec::new();
        write([f], &mut har).unwrap();
        let back = read(&har).unwrap();
        assert!(back[0].response.is_none());
        assert_eq!(back[0].error.as_deref(), Some("upstream refused"));
        assert!(back[0].request.body.truncated);
        assert_eq!(back[0].request.body.size, 10);
        let err = read(b"{\"log\": {\"entries\": [{\"request\": {}}]}}").unwrap_err();
        assert!(err.starts_with("entry 1:"), "{err}");
        assert!(read(b"{}").unwrap_err().contains("not a HAR"));
    }

    #[test]
    fn websocket_messages_are_chromes_and_round_trip() {
        let flow = crate::flows::sample();
        let entry = entry(&flow);
        assert_eq!(entry["_resourceType"], "websocket");
        let messages = &entry["_webSocketMessages"];
        assert_eq!(
            messages[0],
            json!({"type": "send", "time": 1_700_000_000.02, "opcode": 1, "data": "hello \"ws\"\n"})
        );
        assert_eq!(
            messages[1],
            json!({"type": "receive", "time": 1_700_000_000.021, "opcode": 2,
                   "data": BASE64.encode(b"\x00\xff\x80bin"), "_dropped": true})
        );
        assert_eq!(messages[2]["_size"], 100_000);
        assert_eq!(messages[2]["_truncated"], true);
        assert_eq!(messages[2]["_injected"], true);
        assert_eq!(entry["_websocket"]["close_code"], 1001);

        let mut har = Vec::new();
        write([flow.clone()], &mut har).unwrap();
        let back = read(&har).unwrap();
        assert_eq!(back[0].websocket, flow.websocket);
    }

    #[test]
    fn chrome_websocket_messages_import_without_proxlets_fields() {
        let har = json!({"log": {"entries": [{
            "startedDateTime": "2023-11-14T22:13:20.000Z",
            "request": {"method": "GET", "url": "wss://example.com/socket", "httpVersion": "HTTP/1.1", "headers": []},
            "response": {"status": 101, "httpVersion": "HTTP/1.1", "headers": [], "content": {"size": 0}},
            "timings": {"send": 0, "wait": 1, "receive": 0},
            "_resourceType": "websocket",
            "_webSocketMessages": [
                {"type": "send", "time": 1700000000.5, "opcode": 1, "data": "hi"},
                {"type": "receive", "time": 1700000000.75, "opcode": 2, "data": "AAE="},
                {"type": "receive", "time": 1700000001.0, "opcode": 9, "data": ""},
            ],
        }]}});
        let flows = read(har.to_string().as_bytes()).unwrap();
        let ws = flows[0].websocket.as_ref().unwrap();
        assert_eq!(ws.messages.len(), 2, "control frames are not messages");
        assert!(ws.messages[0].from_client && ws.messages[0].text);
        assert_eq!(ws.messages[0].time, 1_700_000_000_500_000);
        assert_eq!(&ws.messages[1].content.data[..], b"\x00\x01");
        assert!(!ws.messages[1].from_client && !ws.messages[1].text);
        assert_eq!((ws.closed_by_client, ws.end), (None, None));
    }
}
