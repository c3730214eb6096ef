//! `proxlet flows`: list the flows of a file one line each (like the access
//! log), show one in full, or export them as HAR. Listing reads only the
//! records' heads unless the filter tests bodies, so a large file lists in
//! one pass without being held in memory.

use std::{
    fmt::Write as _,
    io::{self, Write},
    path::Path,
};

use super::{
    file::{FlowFileError, FlowReader},
    filter::{content_coding, decoded, matches, Filter},
    Flow, Header,
};
use crate::error::{Error, Result};

/// `proxlet flows FILE [FILTER] [--show ID] [--har OUT]`.
pub fn flows(
    file: &Path,
    filter: Option<&str>,
    show: Option<u64>,
    har: Option<&Path>,
) -> Result<()> {
    let filter = parse_filter(filter)?;
    if let Some(id) = show {
        let flow = find(file, id)?;
        let mut out = io::stdout().lock();
        out.write_all(render(&flow).as_bytes())?;
        return Ok(());
    }
    if let Some(out) = har {
        return export_har(file, filter.as_ref(), out);
    }
    let mut out = io::BufWriter::new(io::stdout().lock());
    each(file, false, filter.as_ref(), &mut |flow| {
        writeln!(out, "{}", line(flow))?;
        Ok(true)
    })?;
    out.flush()?;
    Ok(())
}

/// Parses a filter argument, naming the position of a mistake.
pub fn parse_filter(filter: Option<&str>) -> Result<Option<Filter>> {
    filter
        .map(|text| {
            Filter::parse(text).map_err(|e| {
                Error::Flows(format!(
                    "bad filter {text:?} {e}\n  {text}\n  {}^",
                    " ".repeat(e.position)
                ))
            })
        })
        .transpose()
}

/// Calls `visit` with each flow of `path` (a proxlet flow file, a HAR or a
/// mitmproxy dump) that matches `filter`; of a flow file, bodies are read
/// only when `bodies` is set or the filter needs them. `visit` returns
/// whether to go on.
pub fn each(
    path: &Path,
    bodies: bool,
    filter: Option<&Filter>,
    visit: &mut dyn FnMut(&Flow) -> io::Result<bool>,
) -> Result<()> {
    // Of a flow file only the heads are read unless bodies are needed.
    let flows: super::convert::Flows = if super::file::is_flow_file(path) {
        let bodies = bodies || filter.is_some_and(Filter::uses_bodies);
        let reader = FlowReader::open(path).map_err(flow_error)?;
        Box::new(reader.flows(bodies).map(|flow| flow.map_err(flow_error)))
    } else {
        super::convert::open_any(path)?
    };
    for flow in flows {
        let flow = flow?;
        if filter.is_none_or(|f| matches(f, &flow)) && !visit(&flow)? {
            break;
        }
    }
    Ok(())
}

/// Writes the flows of `path` matching `filter` as HAR 1.2 to `out` (`-`:
/// standard output), one flow in memory at a time.
fn export_har(path: &Path, filter: Option<&Filter>, out: &Path) -> Result<()> {
    let mut failed = None;
    let flows = super::convert::open_any(path)?
        .map_while(|flow| flow.map_err(|e| failed = Some(e)).ok())
        .filter(|flow| filter.is_none_or(|f| matches(f, flow)));
    let written = if out == Path::new("-") {
        super::har::write(flows, io::BufWriter::new(io::stdout().lock()))?
    } else {
        let file = super::file::create_private(out)
            .map_err(|e| Error::Flows(format!("cannot write {}: {e}", out.display())))?;
        super::har::write(flows, io::BufWriter::new(file))?
    };
    if let Some(e) = failed {
        return Err(e);
    }
    if out != Path::new("-") {
        eprintln!("wrote {written} flows to {} (HAR 1.2)", out.display());
    }
    Ok(())
}

/// The flow `id` of `path`, bodies included.
fn find(path: &Path, id: u64) -> Result<Flow> {
    let mut found = None;
    each(path, true, None, &mut |flow| {
        if flow.id == id {
            found = Some(flow.clone());
            return Ok(false);
        }
        Ok(true)
    })?;
    found.ok_or_else(|| Error::Flows(format!("{} has no flow #{id}", path.display())))
}

fn flow_error(e: FlowFileError) -> Error {
    Error::Flows(e.to_string())
}

/// One line per flow, like the access log: id, client, method, URL,
/// status, response size, duration, error or note.
pub fn line(flow: &Flow) -> String {
    let mut line = format!("#{} ", flow.id);
    match flow.client {
        Some(client) => write!(line, "{client} "),
        None => write!(line, "- "),
    }
    .unwrap_or_default();
    write!(line, "{} {}", flow.request.method, flow.request.url).unwrap_or_default();
    match &flow.response {
        Some(r) => write!(line, " {} {}B", r.status, r.body.size),
        None => write!(line, " -"),
    }
    .unwrap_or_default();
    if let Some(ms) = duration_ms(flow) {
        write!(line, " {ms}ms").unwrap_or_default();
    }
    if let Some(ws) = &flow.websocket {
        let count = ws.messages.len() as u64 + ws.messages_omitted;
        write!(line, " websocket {count} messages").unwrap_or_default();
    }
    for extra in [&flow.error, &flow.note].into_iter().flatten() {
        write!(line, " {extra}").unwrap_or_default();
    }
    line
}

fn duration_ms(flow: &Flow) -> Option<i64> {
    let t = &flow.timings;
    Some((t.response_end? - t.request_start?) / 1000)
}

/// A flow in full: connection facts, heads, decoded bodies, timings and
/// what each plugin did.
pub fn render(flow: &Flow) -> String {
    let mut out = String::new();
    let w = &mut out;
    let started = flow.timings.request_start.map(iso_time).unwrap_or_default();
    let _ = writeln!(w, "flow #{} ({}) {started}", flow.id, flow.mode);
    if let Some(client) = flow.client {
        let _ = write!(w, "client {client}");
        if let Some(tls) = &flow.client_tls {
            let _ = write!(w, "  {}", tls_line(tls));
        }
        let _ = writeln!(w);
    }
    if let Some(server) = flow.server {
        let _ = write!(w, "server {server}");
        if let Some(tls) = &flow.server_tls {
            let _ = write!(w, "  {}", tls_line(tls));
        }
        let _ = writeln!(w);
    }
    let request = &flow.request;
    let _ = writeln!(
        w,
        "\n{} {} {}",
        request.method, request.url, request.version
    );
    heads(w, &request.headers);
    body(w, &request.headers, &request.body);
    match &flow.response {
        Some(response) => {
            let _ = writeln!(w, "\n{} {}", response.version, response.status);
            heads(w, &response.headers);
            body(w, &response.headers, &response.body);
        }
        None => {
            let _ = writeln!(w, "\n(no response)");
        }
    }
    if let Some(ws) = &flow.websocket {
        websocket(w, ws, flow.timings.request_start);
    }
    let _ = writeln!(w, "\ntimings (ms after the request head):");
    let t = &flow.timings;
    let origin = t.request_start;
    for (name, at) in [
        ("client connected", t.client_connect),
        ("client TLS done", t.client_tls),
        ("request head", t.request_start),
        ("request end", t.request_end),
        ("upstream connect", t.server_connect),
        ("upstream TCP done", t.server_tcp),
        ("upstream TLS done", t.server_tls),
        ("response head", t.response_start),
        ("response end", t.response_end),
    ] {
        if let (Some(at), Some(origin)) = (at, origin) {
            let _ = writeln!(w, "  {name:<18} {:+.3}", (at - origin) as f64 / 1000.0);
        }
    }
    if !flow.plugins.is_empty() {
        let _ = writeln!(w, "\nplugins:");
        for step in &flow.plugins {
            let _ = writeln!(
                w,
                "  {} {} {} {}µs",
                step.plugin, step.hook, step.decision, step.micros
            );
        }
    }
    if let Some(error) = &flow.error {
        let _ = writeln!(w, "\nerror: {error}");
    }
    if let Some(note) = &flow.note {
        let _ = writeln!(w, "note: {note}");
    }
    out
}

/// Characters of a text message shown, at most.
const TEXT_SHOWN: usize = 120;
/// Bytes of a binary message shown as hex, at most.
const MESSAGE_HEX_SHOWN: usize = 32;

/// A WebSocket's messages one a line: when (ms after the request head),
/// which way (→ to the server, ← to the client), kind, size and a preview.
fn websocket(w: &mut String, ws: &super::WebSocket, origin: Option<i64>) {
    let count = ws.messages.len() as u64 + ws.messages_omitted;
    let _ = write!(w, "\nwebsocket: {count} messages");
    match (ws.closed_by_client, ws.end) {
        (_, None) => {
            let _ = write!(w, ", open");
        }
        (Some(by_client), Some(_)) => {
            let who = if by_client {
                "the client"
            } else {
                "the server"
            };
            let _ = write!(w, ", closed by {who}");
        }
        (None, Some(_)) => {
            let _ = write!(w, ", ended without a close");
        }
    }
    if let Some(code) = ws.close_code {
        let _ = write!(w, " ({code}");
        if let Some(reason) = ws.close_reason.as_deref().filter(|r| !r.is_empty()) {
            let _ = write!(w, " {reason:?}");
        }
        let _ = write!(w, ")");
    }
    let _ = writeln!(w);
    let offset = |at: i64| origin.map_or(0.0, |o| (at - o) as f64 / 1000.0);
    for m in &ws.messages {
        let arrow = if m.from_client { '→' } else { '←' };
        let kind = if m.text { "text" } else { "binary" };
        let _ = write!(
            w,
            "  {:+.3} {arrow} {kind} {}B",
            offset(m.time),
            m.content.size
        );
        let data = &m.content.data;
        match std::str::from_utf8(data).ok().filter(|_| m.text) {
            Some(text) => {
                let shown: String = text.chars().take(TEXT_SHOWN).collect();
                let more = if shown.len() < text.len() { "…" } else { "" };
                let _ = write!(w, " {shown:?}{more}");
            }
            None => {
                let hex: Vec<String> = data
                    .iter()
                    .take(MESSAGE_HEX_SHOWN)
                    .map(|b| format!("{b:02x}"))
                    .collect();
                let more = if data.len() > MESSAGE_HEX_SHOWN {
                    " …"
                } else {
                    ""
                };
                let _ = write!(w, " {}{more}", hex.join(" "));
            }
        }
        for (set, mark) in [
            (m.content.truncated, "truncated"),
            (m.dropped, "dropped"),
            (m.injected, "injected"),
        ] {
            if set {
                let _ = write!(w, " [{mark}]");
            }
        }
        let _ = writeln!(w);
    }
    if ws.messages_omitted > 0 {
        let _ = writeln!(w, "  … {} more not kept", ws.messages_omitted);
    }
}

fn tls_line(tls: &super::Tls) -> String {
    let mut parts = vec!["TLS".to_owned()];
    parts.extend(tls.version.clone());
    parts.extend(tls.alpn.clone());
    parts.extend(tls.sni.as_ref().map(|s| format!("sni={s}")));
    if tls.intercepted {
        parts.push("(intercepted)".into());
    }
    parts.join(" ")
}

fn heads(w: &mut String, headers: &[Header]) {
    for h in headers {
        let _ = writeln!(w, "{}: {}", h.name, String::from_utf8_lossy(&h.value));
    }
}

/// Most bytes of a binary body shown as hex.
const HEX_SHOWN: usize = 256;

fn body(w: &mut String, headers: &[Header], body: &super::Body) {
    if body.size == 0 {
        return;
    }
    let plain = decoded(headers, &body.data);
    let coding = content_coding(headers)
        .map(|c| format!(", {c} decoded"))
        .unwrap_or_default();
    let kept = if body.truncated {
        format!(", truncated: {} bytes kept", body.data.len())
    } else {
        String::new()
    };
    let _ = writeln!(w, "\n[body: {} bytes{coding}{kept}]", body.size);
    match std::str::from_utf8(&plain) {
        Ok(text) => {
            let _ = writeln!(w, "{text}");
        }
        Err(_) => {
            for (i, row) in plain[..plain.len().min(HEX_SHOWN)].chunks(16).enumerate() {
                let hex: Vec<String> = row.iter().map(|b| format!("{b:02x}")).collect();
                let text: String = row
                    .iter()
                    .map(|&b| if b.is_ascii_graphic() { b as char } else { '.' })
                    .collect();
                let _ = writeln!(w, "{:08x}  {:<47}  {text}", i * 16, hex.join(" "));
            }
            if plain.len() > HEX_SHOWN {
                let _ = writeln!(w, "… {} more bytes", plain.len() - HEX_SHOWN);
            }
        }
    }
}

/// `2026-11-29T10:03:51.123456Z` for microseconds since the epoch.
pub fn iso_time(micros: i64) -> String {
    let Ok(at) = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000) else {
        return String::new();
    };
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    at.format(&format).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_flows_show_their_messages() {
        let flow = crate::flows::sample();
        assert!(
            line(&flow).contains(" websocket 5 messages"),
            "{}",
            line(&flow)
        );
        let shown = render(&flow);
        assert!(
            shown.contains("websocket: 5 messages, closed by the server (1001 \"going away\")"),
            "{shown}"
        );
        assert!(
            shown.contains("  +18.000 → text 11B \"hello \\\"ws\\\"\\n\"\n"),
            "{shown}"
        );
        assert!(
            shown.contains("← binary 6B 00 ff 80 62 69 6e [dropped]\n"),
            "{shown}"
        );
        assert!(
            shown.contains("← text 100000B \"first\" [truncated] [injected]\n"),
            "{shown}"
        );
        assert!(shown.contains("… 2 more not kept"), "{shown}");
    }
}
