//! The web UI's JSON API (docs/web.md): flows held in the store and paused
//! ones, intercepting, replay, import and export, and the plugin chain.

use std::sync::{atomic::Ordering, Arc};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};

use super::{error, json, Web};
use crate::{
    flows::{
        self,
        filter::{self, Filter},
        intercept::{Edits, Phase, Verdict},
        Flow, Header,
    },
    plugin::Hooks,
    proxy::body::{boxed, collect_limited, full, Body, Collected},
};

/// Largest JSON body a call takes.
const MAX_JSON: usize = 16 << 20;
/// Largest flow file `POST /api/load` takes.
const MAX_LOAD: usize = 512 << 20;

/// A row of the flow list.
#[derive(Serialize)]
pub struct Summary<'a> {
    id: u64,
    ts: Option<i64>,
    method: &'a str,
    scheme: &'a str,
    host: &'a str,
    port: u16,
    path: &'a str,
    status: Option<u16>,
    #[serde(rename = "type")]
    kind: &'a str,
    size: Option<u64>,
    /// Milliseconds.
    duration: Option<f64>,
    #[serde(skip_serializing_if = "str::is_empty")]
    cache: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    plugins: Vec<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    marked: bool,
    #[serde(skip_serializing_if = "str::is_empty")]
    comment: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    intercepted: Option<&'static str>,
    /// Of a flow upgraded to WebSocket.
    #[serde(skip_serializing_if = "Option::is_none")]
    websocket: Option<WebSocketRow>,
}

/// A WebSocket in the flow list: how many messages, and whether it is open.
#[derive(Serialize)]
struct WebSocketRow {
    messages: u64,
    open: bool,
}

impl<'a> Summary<'a> {
    pub fn of(id: u64, flow: &'a Flow, intercepted: Option<Phase>) -> Self {
        let url = flow.request.url.as_str();
        let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        let port = authority
            .rsplit_once(':')
            .filter(|(_, p)| !p.contains(']'))
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
        let response = flow.response.as_ref();
        let field = |name: &str| {
            response
                .and_then(|r| r.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)))
                .and_then(|h| std::str::from_utf8(&h.value).ok())
                .unwrap_or("")
        };
        let kind = field("content-type").split(';').next().unwrap_or("").trim();
        let tag = field("x-proxlet");
        let cache = tag.strip_prefix("cache;").unwrap_or(tag);
        let t = &flow.timings;
        let duration = match (t.request_start, t.response_end) {
            (Some(start), Some(end)) if response.is_some() => Some((end - start) as f64 / 1000.0),
            _ => None,
        };
        let mut plugins: Vec<&str> = flow
            .plugins
            .iter()
            .filter(|s| s.decision != "continue")
            .map(|s| s.plugin.as_str())
            .collect();
        plugins.dedup();
        Self {
            id,
            ts: t.request_start,
            method: &flow.request.method,
            scheme,
            host: flow.host(),
            port,
            path: if path.is_empty() { "/" } else { path },
            status: response.map(|r| r.status),
            kind,
            size: response.map(|r| r.body.size),
            duration,
            cache,
            plugins,
            marked: flow.marked,
            comment: &flow.comment,
            error: flow.error.as_deref(),
            intercepted: intercepted.map(Phase::as_str),
            websocket: flow.websocket.as_ref().map(|ws| WebSocketRow {
                messages: ws.messages.len() as u64 + ws.messages_omitted,
                open: ws.end.is_none(),
            }),
        }
    }
}

/// Flow `id`'s summary as JSON, paused or stored.
pub(super) fn summary_now(web: &Web, id: u64) -> Option<String> {
    let (flow, phase) = find(web, id, false)?;
    serde_json::to_string(&Summary::of(id, &flow, phase)).ok()
}

/// Flow `id`, paused (with its phase) or held in the store.
fn find(web: &Web, id: u64, bodies: bool) -> Option<(Arc<Flow>, Option<Phase>)> {
    if let Some(paused) = web.proxy.intercept.as_ref().and_then(|i| i.get(id)) {
        return Some((paused.flow, Some(paused.phase)));
    }
    let record = store(web)?.record(id)?;
    Some((Arc::new(record.flow(bodies).ok()?), None))
}

fn store(web: &Web) -> Option<&flows::sink::Store> {
    web.proxy.sink.as_ref()?.store()
}

pub(super) async fn answer(web: &Arc<Web>, request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path().trim_start_matches("/api/").to_owned();
    let segments: Vec<&str> = path.split('/').collect();
    let method = request.method().clone();
    let query = request.uri().query().map(str::to_owned);
    let param = |name| super::query_param(query.as_deref(), name);
    match (&method, segments.as_slice()) {
        (&Method::GET, ["flows"]) => list(web, param("filter").as_deref()).await,
        (&Method::DELETE, ["flows"]) => {
            if let Some(store) = store(web) {
                store.clear();
            }
            web.rows.lock().unwrap_or_else(|e| e.into_inner()).clear();
            web.events.cleared();
            json(StatusCode::OK, &serde_json::json!({}))
        }
        (&Method::GET, ["flows", id]) => with_id(id, |id| detail(web, id)),
        (&Method::PATCH, ["flows", id]) => {
            let Ok(id) = id.parse() else {
                return error(StatusCode::NOT_FOUND, "no such flow");
            };
            match read_json::<Mark>(request).await {
                Ok(mark) => mark_flow(web, id, mark),
                Err(refused) => refused,
            }
        }
        (&Method::GET, ["flows", id, side @ ("request" | "response"), "body"]) => {
            let decode = param("decode").is_some_and(|v| v == "1" || v == "true");
            with_id(id, |id| body(web, id, side, decode))
        }
        (&Method::POST, ["flows", id, "replay"]) => {
            let Ok(id) = id.parse() else {
                return error(StatusCode::NOT_FOUND, "no such flow");
            };
            let Some((flow, _)) = find(web, id, true) else {
                return error(StatusCode::NOT_FOUND, "no such flow");
            };
            resend(web, &flow).await
        }
        (&Method::POST, ["replay"]) => match read_json::<Resend>(request).await {
            Ok(edited) => resend(web, &edited.into_flow()).await,
            Err(refused) => refused,
        },
        (&Method::POST, ["flows", id, verb @ ("resume" | "kill")]) => {
            let Ok(id) = id.parse() else {
                return error(StatusCode::NOT_FOUND, "no such flow");
            };
            let verdict = if *verb == "kill" {
                Verdict::Kill
            } else {
                match read_json::<Option<Edits>>(request).await {
                    Ok(edits) => Verdict::Resume(edits.unwrap_or_default()),
                    Err(refused) => return refused,
                }
            };
            let decided = web
                .proxy
                .intercept
                .as_ref()
                .is_some_and(|i| i.decide(id, verdict));
            match decided {
                true => json(StatusCode::OK, &serde_json::json!({})),
                false => error(StatusCode::CONFLICT, "that flow is not paused"),
            }
        }
        (&Method::POST, ["resume-all"]) => {
            let resumed = web.proxy.intercept.as_ref().map_or(0, |i| i.resume_all());
            json(StatusCode::OK, &serde_json::json!({ "resumed": resumed }))
        }
        (&Method::GET, ["intercept"]) => {
            let filter = web.proxy.intercept.as_ref().map(|i| i.filter_text());
            json(
                StatusCode::OK,
                &serde_json::json!({ "filter": filter.unwrap_or_default() }),
            )
        }
        (&Method::PUT, ["intercept"]) => {
            let Some(intercept) = web.proxy.intercept.as_ref() else {
                return error(StatusCode::CONFLICT, "intercepting is off");
            };
            match read_json::<FilterBody>(request).await {
                Ok(body) => match intercept.set_filter(&body.filter) {
                    Ok(()) => {
                        tracing::info!("intercept filter: {:?}", body.filter);
                        json(
                            StatusCode::OK,
                            &serde_json::json!({ "filter": body.filter }),
                        )
                    }
                    Err(e) => bad_filter(&e),
                },
                Err(refused) => refused,
            }
        }
        (&Method::GET, ["export"]) => {
            // Encoding every flow takes a while: off the proxy's workers.
            let (web, format, ids) = (web.clone(), param("format"), param("ids"));
            tokio::task::spawn_blocking(move || export(&web, format.as_deref(), ids))
                .await
                .unwrap_or_else(|e| error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()))
        }
        (&Method::POST, ["load"]) => load(web, request).await,
        (&Method::GET, ["plugins"]) => json(StatusCode::OK, &plugins(web)),
        (&Method::POST, ["plugins", name, verb @ ("enable" | "disable" | "reload")]) => {
            plugin_action(web, name, verb).await
        }
        _ => error(StatusCode::NOT_FOUND, "no such call"),
    }
}

fn with_id(id: &str, then: impl FnOnce(u64) -> Response<Body>) -> Response<Body> {
    match id.parse() {
        Ok(id) => then(id),
        Err(_) => error(StatusCode::NOT_FOUND, "no such flow"),
    }
}

fn bad_filter(e: &filter::FilterError) -> Response<Body> {
    json(
        StatusCode::BAD_REQUEST,
        &serde_json::json!({ "error": e.to_string(), "position": e.position }),
    )
}

async fn read_body(request: Request<Incoming>, limit: usize) -> Result<Bytes, Response<Body>> {
    match collect_limited(boxed(request.into_body()), limit).await {
        Collected::Complete(data) => Ok(data),
        Collected::TooLarge(_) => Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the body is over {limit} bytes"),
        )),
        Collected::Failed(reason) => Err(error(StatusCode::BAD_REQUEST, &reason)),
    }
}

async fn read_json<T: for<'de> Deserialize<'de>>(
    request: Request<Incoming>,
) -> Result<T, Response<Body>> {
    let data = read_body(request, MAX_JSON).await?;
    let data: &[u8] = if data.is_empty() { b"null" } else { &data };
    serde_json::from_slice(data)
        .map_err(|e| error(StatusCode::BAD_REQUEST, &format!("bad JSON: {e}")))
}

#[derive(Deserialize)]
struct FilterBody {
    filter: String,
}

async fn list(web: &Arc<Web>, filter: Option<&str>) -> Response<Body> {
    let filter = match filter.map(str::trim).filter(|f| !f.is_empty()) {
        None => None,
        Some(text) => match Filter::parse(text) {
            Ok(filter) => Some(filter),
            Err(e) => return bad_filter(&e),
        },
    };
    // Decoding every flow takes a while: off the proxy's workers.
    let web = web.clone();
    let listed = tokio::task::spawn_blocking(move || listed(&web, filter.as_ref())).await;
    let mut response = Response::new(full(listed.unwrap_or_default()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// `{"flows": [...], "total": N}` for the flows `filter` matches, decoded
/// on every core.
fn listed(web: &Web, filter: Option<&Filter>) -> Vec<u8> {
    let bodies = filter.is_some_and(Filter::uses_bodies);
    let records = store(web).map(|s| s.records()).unwrap_or_default();
    let total = records.len();
    // Rows already made are reused while their record is the same (a
    // flow's row changes when it is marked, which drops it, or when a
    // WebSocket's record is replaced); the cache keeps the flows still held.
    let cached = std::mem::take(&mut *web.rows.lock().unwrap_or_else(|e| e.into_inner()));
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    let chunk = records.len().div_ceil(threads).max(1024);
    let parts: Vec<(Vec<u8>, Rows)> = std::thread::scope(|scope| {
        let workers: Vec<_> = records
            .chunks(chunk)
            .map(|part| {
                let cached = &cached;
                scope.spawn(move || {
                    let mut out = Vec::with_capacity(part.len() * 160);
                    let mut made = Vec::with_capacity(part.len());
                    for (id, record) in part {
                        let crc = record.head_crc();
                        let known = cached
                            .get(id)
                            .filter(|(made_of, _)| *made_of == crc)
                            .map(|(_, row)| row);
                        let (row, matched) = match (known, filter) {
                            (Some(row), None) => (row.clone(), true),
                            _ => {
                                let Ok(flow) = record.flow(bodies) else {
                                    continue;
                                };
                                let matched = filter.is_none_or(|f| filter::matches(f, &flow));
                                let row =
                                    known.cloned().unwrap_or_else(|| row_of(*id, &flow, None));
                                (row, matched)
                            }
                        };
                        if matched {
                            out.extend_from_slice(&row);
                            out.push(b',');
                        }
                        made.push((*id, (crc, row)));
                    }
                    (out, made)
                })
            })
            .collect();
        workers.into_iter().filter_map(|w| w.join().ok()).collect()
    });
    let mut out = Vec::with_capacity(parts.iter().map(|(o, _)| o.len()).sum::<usize>() + 64);
    out.extend_from_slice(b"{\"flows\":[");
    let mut rows = std::collections::HashMap::with_capacity(total);
    for (part, made) in parts {
        out.extend_from_slice(&part);
        rows.extend(made);
    }
    *web.rows.lock().unwrap_or_else(|e| e.into_inner()) = rows;
    for (id, paused) in web
        .proxy
        .intercept
        .as_ref()
        .map(|i| i.paused())
        .unwrap_or_default()
    {
        if filter.is_none_or(|f| filter::matches(f, &paused.flow)) {
            out.extend_from_slice(&row_of(id, &paused.flow, Some(paused.phase)));
            out.push(b',');
        }
    }
    if out.last() == Some(&b',') {
        out.pop();
    }
    out.extend_from_slice(format!("],\"total\":{total}}}").as_bytes());
    out
}

/// Rows made by one worker: (flow id, (record's head CRC, row)).
type Rows = Vec<(u64, (u32, Bytes))>;

/// A flow's row as JSON.
pub(super) fn row_of(id: u64, flow: &Flow, phase: Option<Phase>) -> Bytes {
    serde_json::to_vec(&Summary::of(id, flow, phase))
        .unwrap_or_default()
        .into()
}

fn detail(web: &Web, id: u64) -> Response<Body> {
    let Some((flow, phase)) = find(web, id, false) else {
        return error(
            StatusCode::NOT_FOUND,
            "no such flow (it may have left the store)",
        );
    };
    let headers = |headers: &[Header]| -> Vec<(String, String)> {
        headers
            .iter()
            .map(|h| {
                (
                    h.name.to_string(),
                    String::from_utf8_lossy(&h.value).into_owned(),
                )
            })
            .collect()
    };
    let body = |b: &flows::Body| serde_json::json!({ "size": b.size, "truncated": b.truncated });
    let t = &flow.timings;
    let value = serde_json::json!({
        "summary": Summary::of(id, &flow, phase),
        "request": {
            "method": flow.request.method,
            "url": flow.request.url,
            "version": flow.request.version,
            "headers": headers(&flow.request.headers),
            "body": body(&flow.request.body),
        },
        "response": flow.response.as_ref().map(|r| serde_json::json!({
            "status": r.status,
            "version": r.version,
            "headers": headers(&r.headers),
            "body": body(&r.body),
        })),
        "timings": {
            "client_connect": t.client_connect,
            "client_tls": t.client_tls,
            "request_start": t.request_start,
            "request_end": t.request_end,
            "server_connect": t.server_connect,
            "server_tcp": t.server_tcp,
            "server_tls": t.server_tls,
            "response_start": t.response_start,
            "response_end": t.response_end,
        },
        "client": flow.client.map(|a| a.to_string()),
        "server": flow.server.map(|a| a.to_string()),
        "client_tls": flow.client_tls,
        "server_tls": flow.server_tls,
        "plugins": flow.plugins,
        "note": flow.note,
        "error": flow.error,
        // As the flow file has it: payloads inline, text or {"base64"}.
        "websocket": flow.websocket,
    });
    json(StatusCode::OK, &value)
}

fn body(web: &Web, id: u64, side: &str, decode: bool) -> Response<Body> {
    let Some((flow, _)) = find(web, id, true) else {
        return error(StatusCode::NOT_FOUND, "no such flow");
    };
    let (headers, data) = match side {
        "request" => (&flow.request.headers, &flow.request.body.data),
        _ => match &flow.response {
            Some(r) => (&r.headers, &r.body.data),
            None => return error(StatusCode::NOT_FOUND, "the flow has no response"),
        },
    };
    let data = match decode {
        true => Bytes::from(filter::decoded(headers, data).into_owned()),
        false => data.clone(),
    };
    let kind = headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-type"))
        .and_then(|h| HeaderValue::from_bytes(&h.value).ok());
    let mut response = Response::new(full(data));
    let out = response.headers_mut();
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Some(kind) = kind {
        out.insert("x-proxlet-content-type", kind);
    }
    response
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Mark {
    marked: Option<bool>,
    comment: Option<String>,
}

fn mark_flow(web: &Web, id: u64, mark: Mark) -> Response<Body> {
    let Some(store) = store(web) else {
        return error(StatusCode::NOT_FOUND, "no such flow");
    };
    web.rows
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&id);
    let changed = store.update(id, |flow| {
        if let Some(marked) = mark.marked {
            flow.marked = marked;
        }
        if let Some(comment) = mark.comment {
            flow.comment = comment;
        }
    });
    if !changed {
        return error(
            StatusCode::NOT_FOUND,
            "no such flow (it may have left the store)",
        );
    }
    match summary_now(web, id) {
        Some(summary) => {
            // Other pages see the change too.
            if let Some(record) = store.record(id) {
                web.events.stored(id, &record);
            }
            let mut response = Response::new(full(summary));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        None => error(StatusCode::NOT_FOUND, "no such flow"),
    }
}

/// A request the user wrote (duplicate-and-edit).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Resend {
    method: String,
    url: String,
    #[serde(default)]
    headers: Vec<(String, String)>,
    #[serde(default)]
    body: String,
}

impl Resend {
    /// As a recorded request, to be sent as replay sends one.
    fn into_flow(self) -> Flow {
        let mut flow = Flow::default();
        flow.request.method = self.method.trim().to_owned();
        flow.request.url = self.url.trim().to_owned();
        flow.request.headers = self
            .headers
            .iter()
            .map(|(name, value)| Header::new(name.trim(), value.trim().to_owned()))
            .collect();
        flow.request.body = flows::Body::whole(self.body);
        flow
    }
}

/// Sends `flow`'s request again through the proxy (replay's request, made
/// by `proxlet replay`'s rules).
async fn resend(web: &Web, flow: &Flow) -> Response<Body> {
    let sent = match flows::replay::request_of(flow) {
        Ok(request) => super::replay::send(&web.proxy, request).await,
        Err(reason) => Err(reason),
    };
    match sent {
        Ok(status) => json(StatusCode::OK, &serde_json::json!({ "status": status })),
        Err(reason) => error(StatusCode::BAD_GATEWAY, &reason),
    }
}

fn export(web: &Web, format: Option<&str>, ids: Option<String>) -> Response<Body> {
    let wanted: Option<Vec<u64>> = ids.map(|ids| {
        ids.split(',')
            .filter_map(|i| i.trim().parse().ok())
            .collect()
    });
    let records = store(web).map(|s| s.records()).unwrap_or_default();
    let flows = records
        .iter()
        .filter(|(id, _)| wanted.as_ref().is_none_or(|w| w.contains(id)))
        .filter_map(|(_, r)| r.flow(true).ok());
    let mut out = Vec::new();
    let (kind, name) = match format.unwrap_or("proxlet") {
        "har" => {
            let _ = flows::har::write(flows, &mut out);
            ("application/json", "flows.har")
        }
        "mitm" => {
            let _ = flows::mitm::write(flows, &mut out);
            ("application/octet-stream", "flows.mitm")
        }
        "proxlet" => {
            out.extend_from_slice(&flows::file::file_header());
            for flow in flows {
                flows::file::encode(&flow, &mut out);
            }
            ("application/octet-stream", "flows.proxlet")
        }
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("unknown format {other:?}: har, proxlet or mitm"),
            )
        }
    };
    let mut response = Response::new(full(out));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    if let Ok(disposition) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, disposition);
    }
    response
}

async fn load(web: &Web, request: Request<Incoming>) -> Response<Body> {
    let Some(store) = store(web) else {
        return error(StatusCode::CONFLICT, "no flow store (--flows-max 0)");
    };
    let data = match read_body(request, MAX_LOAD).await {
        Ok(data) => data,
        Err(refused) => return refused,
    };
    // The readers work on files: a private temp file under the home.
    let temp = web.home.join(format!(
        ".web-load-{}-{}",
        std::process::id(),
        web.proxy.next_flow_id()
    ));
    let parsed = tokio::task::spawn_blocking(move || {
        let read = || -> Result<Vec<Flow>, String> {
            use std::io::Write;
            let mut file = flows::file::create_private(&temp).map_err(|e| e.to_string())?;
            file.write_all(&data).map_err(|e| e.to_string())?;
            drop(file);
            let flows = flows::convert::open_any(&temp).map_err(|e| e.to_string())?;
            flows
                .collect::<Result<Vec<Flow>, _>>()
                .map_err(|e| e.to_string())
        };
        let flows = read();
        let _ = std::fs::remove_file(&temp);
        flows
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r);
    let flows = match parsed {
        Ok(flows) => flows,
        Err(reason) => return error(StatusCode::BAD_REQUEST, &reason),
    };
    let loaded = flows.len();
    let mut out = Vec::new();
    let mut rows = Vec::with_capacity(loaded);
    for mut flow in flows {
        let id = web.proxy.next_flow_id();
        flow.id = id;
        out.clear();
        flows::file::encode(&flow, &mut out);
        let record = flows::record::Record::new(&[&out]);
        rows.push((id, (record.head_crc(), row_of(id, &flow, None))));
        store.push(id, record);
    }
    web.rows
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .extend(rows);
    tracing::info!("web: loaded {loaded} flows");
    json(StatusCode::OK, &serde_json::json!({ "loaded": loaded }))
}

/// The plugin chain as the plugins page shows it.
pub(super) fn plugins(web: &Web) -> serde_json::Value {
    let chain = web.chain.load();
    let hooks = [
        (Hooks::ON_REQUEST, "on-request"),
        (Hooks::ON_REQUEST_BODY, "on-request-body"),
        (Hooks::ON_RESPONSE, "on-response"),
        (Hooks::ON_RESPONSE_BODY, "on-response-body"),
        (Hooks::ON_ERROR, "on-error"),
    ];
    let list: Vec<serde_json::Value> = chain
        .slots
        .iter()
        .map(|slot| {
            let plugin = slot.current.load();
            let spec = &slot.spec;
            let history = web.events.history(&spec.name);
            let calls: serde_json::Map<String, serde_json::Value> = plugin
                .call_totals()
                .unwrap_or_default()
                .into_iter()
                .filter(|(_, count, _)| *count > 0)
                .map(|(hook, count, micros)| {
                    let mean = micros as f64 / count as f64;
                    (hook.to_owned(), serde_json::json!({ "count": count, "micros": mean }))
                })
                .collect();
            serde_json::json!({
                "name": &*spec.name,
                "source": match spec.builtin {
                    Some(_) => format!("built-in ({})", spec.path.display()),
                    None => spec.path.display().to_string(),
                },
                "sha256": plugin.hash,
                "wit": format!("proxlet:plugin@{}", crate::plugin::WIT_VERSION),
                "hooks": hooks.iter().filter(|(h, _)| plugin.hooks.contains(*h)).map(|(_, n)| *n).collect::<Vec<_>>(),
                "limits": {
                    "memory_bytes": spec.limits.memory_bytes,
                    "call_ms": spec.limits.call.as_millis() as u64,
                    "max_body_bytes": spec.limits.max_body_bytes,
                    "max_delay_ms": spec.limits.max_delay.as_millis() as u64,
                },
                "grants": spec.dirs.iter().map(|(guest, host)| serde_json::json!({
                    "guest": guest,
                    "host": host.display().to_string(),
                })).collect::<Vec<_>>(),
                "credentials": spec.credentials,
                "fail_closed": spec.fail_closed,
                "matcher": spec.matcher.describe(),
                "loaded_at": plugin.loaded_at,
                "load_ms": plugin.load_ms,
                "code": plugin.code(),
                "enabled": slot.is_enabled(),
                "last_error": history.last_error,
                "calls": calls,
                "reloads": history.reloads,
            })
        })
        .collect();
    serde_json::Value::Array(list)
}

async fn plugin_action(web: &Web, name: &str, verb: &str) -> Response<Body> {
    let slot = web
        .chain
        .load()
        .slots
        .iter()
        .find(|s| &*s.spec.name == name)
        .cloned();
    let Some(slot) = slot else {
        return error(StatusCode::NOT_FOUND, "no such plugin in the chain");
    };
    match verb {
        "enable" | "disable" => {
            let enable = verb == "enable";
            slot.enabled.store(enable, Ordering::Relaxed);
            tracing::info!("plugin {name} {}d from the web UI", verb);
            web.events
                .log("info", name, &format!("{verb}d from the web UI"));
            web.events.plugins_changed();
        }
        _ => {
            let Some(engine) = &web.engine else {
                return error(StatusCode::CONFLICT, "no plugin engine");
            };
            crate::plugin::reload_slot(&slot, engine, true).await;
        }
    }
    let all = plugins(web);
    let entry = all
        .as_array()
        .and_then(|list| list.iter().find(|p| p["name"] == name))
        .cloned()
        .unwrap_or_default();
    json(StatusCode::OK, &entry)
}
