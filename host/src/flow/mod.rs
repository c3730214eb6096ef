//! The per-flow pipeline: one request followed from the listener to the
//! upstream and back, in the order of DESIGN §1, and the carrying out of
//! what plugins decide. `proxy/` accepts connections, opens tunnels and
//! fetches; `plugin/` runs the hooks and returns their decisions; this
//! module is the rest.
//!
//! The steps of [`handle`], and where each lives:
//!
//! 1. CONNECT opens a tunnel, intercepted or not (`proxy::connect`).
//! 2. Target: where the request goes, decided once (`target.rs`); requests
//!    to proxlet itself are answered there.
//! 3. On-request (`request.rs`): each plugin's decision carried out — kept
//!    answers (memo), `fill` leases and the shared store (`fill.rs`), delay,
//!    body buffering (`buffer.rs`), a plugin's response or a granted file
//!    (`answer.rs`), head edits. A WebSocket asks its plugins whether they
//!    want its messages (`websocket.rs`).
//! 4. Upstream: the request goes out (`proxy::upstream`, or a recorded
//!    response under `--server-replay`).
//! 5. On-response (`response.rs`): replace, `store` (the body teed into a
//!    file), body buffering, head edits; on-error when the upstream failed.
//! 6. Stream back, and log: the access-log line and the flow record are
//!    written when the body is done (`proxy::body::Logged`); a WebSocket is
//!    relayed (`proxy::upgrade`, `proxy::websocket`). What the plugins did
//!    goes into the line as notes (`notes.rs`).

mod answer;
mod buffer;
mod fill;
mod notes;
mod request;
mod response;
mod target;
mod websocket;

use std::sync::Arc;

use http::{header, HeaderValue, Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;

pub use fill::FillLease;
pub use notes::Notes;
pub use request::{on_request, RequestDecision};
pub use response::{on_error, on_response};

use self::{
    target::{local_response, target_uri},
    websocket::{is_websocket, no_extensions, offers_deflate, on_websocket_open},
};
use crate::{
    flows::{
        intercept::SeenRequest,
        replay::{self, Answer, Killed},
        sink::Recording,
    },
    metrics::{Outcome, Source},
    plugin::{Flow, RequestView},
    proxy::{
        body::{boxed, text_response, Body, FlowRecord, Logged},
        headers,
        mode::Mode,
        upgrade, ConnInfo, Proxy,
    },
};

/// Handles one request from a client connection: the pipeline of DESIGN §1.
pub(crate) async fn handle(
    proxy: Arc<Proxy>,
    conn: Arc<ConnInfo>,
    mut request: Request<Incoming>,
) -> Result<Response<Logged<Body>>, Killed> {
    let id = proxy.next_flow_id();
    // An HTTP/2 WebSocket (extended CONNECT) is an upgrade like HTTP/1.1's.
    let extended = upgrade::from_extended_connect(&mut request);
    let mut record = FlowRecord::new(id, conn.client, &request);
    record.mode = conn.mode.name();

    // 1. CONNECT opens a tunnel, intercepted or not (`proxy::connect`); a reverse
    // proxy has no tunnels to open.
    if request.method() == Method::CONNECT && conn.tunnel.is_none() {
        record.url = headers::redacted(request.uri());
        if let Mode::Reverse { .. } = *conn.mode {
            let response = text_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "proxlet: this is a reverse proxy; CONNECT is not served here",
            );
            return Ok(answered(record, request.version(), response));
        }
        let response = crate::proxy::connect::handle_connect(proxy, conn, request);
        record.status = response.status();
        return Ok(response.map(|b| Logged::new(b, record)));
    }

    // Flows are recorded when capture is on (CONNECT itself is not a flow).
    record.recording = proxy
        .sink
        .as_ref()
        .map(|sink| Recording::new(sink.clone(), id, record.mode, conn.client, &conn.facts));

    // A protocol upgrade (WebSocket) the upstream may accept.
    let upgrade = extended.clone().or_else(|| upgrade::requested(&request));
    let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut request));
    let mut upstream_upgrade = None;

    // 2. Where the request goes, decided once: the URL plugins see, the
    // authority fetched and every cache key are this one.
    let target = match target_uri(&request, &conn) {
        Ok(uri) => uri,
        Err((status, reason)) => {
            let response = text_response(status, format!("proxlet: {reason}"));
            record.url = headers::redacted(request.uri());
            return Ok(answered(record, request.version(), response));
        }
    };
    record.url = target.to_string();

    // Requests to the proxy itself (not through it) get the CA to install.
    if target.authority().is_none() {
        let response = local_response(&proxy, &target);
        return Ok(answered(record, request.version(), response));
    }
    // The web UI is never reached through the proxy (its token would be
    // the only guard left against a page that makes the browser ask).
    if proxy.names_web_ui(target.host().unwrap_or_default(), headers::port_of(&target)) {
        let response = text_response(
            StatusCode::FORBIDDEN,
            "proxlet: the web UI is not reachable through the proxy",
        );
        return Ok(answered(record, request.version(), response));
    }

    let (mut parts, body) = request.into_parts();
    // An extended CONNECT's stream is the WebSocket's, not a request body.
    let mut body = match extended {
        Some(_) => boxed(http_body_util::Empty::new()),
        None => boxed(body),
    };
    // RFC 9112 §3.2.2: a proxy replaces Host with the target's authority
    // (most clients already sent exactly that: then nothing is allocated).
    if let Some(authority) = target.authority() {
        let same = parts.headers.get(header::HOST).map(HeaderValue::as_bytes)
            == Some(authority.as_str().as_bytes());
        if let (false, Ok(host)) = (same, HeaderValue::from_str(authority.as_str())) {
            parts.headers.insert(header::HOST, host);
        }
    }
    parts.uri = target;
    let mut notes = Notes::new(record.recording.is_some());
    // Intercepting (web UI): one relaxed load when no filter is set.
    let intercept = proxy.intercept.as_deref().filter(|i| i.is_on());
    // As in mitmproxy, a request is paused before any plugin sees it (so a
    // request the cache would answer pauses too); the plugins see the
    // edited request.
    if let Some(intercept) = intercept {
        let paused = intercept.request(record.id, conn.client, record.mode, &mut parts, &mut body);
        if paused.await.is_err() {
            return Err(killed(record, Some(&parts)));
        }
    }

    // 3. on-request: plugins whose prefilter matches decide first.
    let plugins = proxy.plugins.load().for_flow(&parts.method, &parts.uri);
    // Built only when a plugin will see the flow: no per-request cost otherwise.
    let this_flow = Flow::new(record.id, conn.tunnel.is_some(), conn.client);
    let flow = (!plugins.is_empty()).then_some(this_flow);
    let decision = match &flow {
        Some(flow) => {
            let leases = &mut record.leases;
            on_request(&plugins, flow, &mut parts, &mut body, &mut notes, leases).await
        }
        None => RequestDecision::Continue,
    };

    // A WebSocket: plugins say whether they want its messages.
    let mut watchers = None;
    let decision = match (decision, &flow) {
        (RequestDecision::Continue, Some(flow)) if is_websocket(upgrade.as_ref()) => {
            match on_websocket_open(&plugins, flow, &mut parts, &mut notes).await {
                Ok(wanted) => {
                    watchers = wanted;
                    RequestDecision::Continue
                }
                Err(refused) => RequestDecision::Respond(refused),
            }
        }
        (decision, _) => decision,
    };
    let seen: Option<SeenRequest>;
    let response = match decision {
        RequestDecision::Respond(response) => {
            if let Some(recording) = record.recording.as_mut() {
                // As the Continue path records it: without hop-by-hop
                // fields (Proxy-Authorization among them).
                headers::remove_hop_by_hop(&mut parts.headers);
                recording.request(&parts.method, &parts.uri, parts.version, &parts.headers);
            }
            seen = intercept.map(|_| SeenRequest::of(&parts));
            response
        }
        RequestDecision::Continue => {
            if let Some(watchers) = &watchers {
                no_extensions(record.id, &mut parts.headers, watchers);
            }
            // What on-response and on-error plugins see of the request.
            // Copied only for plugins that will look at it again.
            let later = plugins.wants_response() || plugins.wants_error();
            let mut sent = flow.filter(|_| later).map(|flow| {
                let request = RequestView {
                    method: parts.method.clone(),
                    uri: parts.uri.clone(),
                    headers: parts.headers.clone(),
                };
                (flow, request)
            });
            // 4. Upstream.
            headers::remove_hop_by_hop(&mut parts.headers);
            if let Some(protocol) = upgrade.clone() {
                upgrade::restore(&mut parts.headers, protocol);
            }
            seen = intercept.map(|_| SeenRequest::of(&parts));
            if let Some(recording) = record.recording.as_mut() {
                recording.request(&parts.method, &parts.uri, parts.version, &parts.headers);
                body = recording.tee_request(body);
            }
            // The upstream client derives Host (HTTP/1.1) or `:authority`
            // (HTTP/2) from the URI: whatever Host a client or plugin set
            // cannot make the fetch differ from the URL it is keyed on.
            parts.headers.remove(header::HOST);
            // hyper-util picks HTTP/1.1 or HTTP/2 per pooled connection from 1.1.
            parts.version = Version::HTTP_11;
            // Under --server-replay a recorded response may answer instead.
            let request = Request::from_parts(parts, body);
            let replay = proxy.server_replay.as_ref();
            let sending = replay::send(&conn.upstream, replay, request, &mut record, &mut notes);
            // A transparent connection's flows go to where it was headed.
            let answered = match conn.original {
                Some(original) => crate::proxy::dial::PINNED.scope(original, sending).await,
                None => sending.await,
            };
            match answered? {
                // 5. on-response.
                Ok(answer) => {
                    let response = match answer {
                        Answer::Replayed(response) => {
                            if let Some(recording) = record.recording.as_mut() {
                                recording.response_started();
                            }
                            response
                        }
                        Answer::Upstream(mut response) => {
                            if response.status() == StatusCode::SWITCHING_PROTOCOLS
                                && client_upgrade.is_some()
                            {
                                let protocol = response.headers().get(header::UPGRADE).cloned();
                                upstream_upgrade = protocol
                                    .map(|protocol| (protocol, hyper::upgrade::on(&mut response)));
                            }
                            record.source = Source::Upstream;
                            record.upstream_version = Some(response.version());
                            if let Some(recording) = record.recording.as_mut() {
                                recording.response_started();
                                recording.upstream(response.extensions(), response.version());
                            }
                            response.map(boxed)
                        }
                    };
                    match &mut sent {
                        // A switch of protocols has no response to change.
                        Some((flow, sent))
                            if plugins.wants_response() && upstream_upgrade.is_none() =>
                        {
                            let leases = std::mem::take(&mut record.leases);
                            on_response(&plugins, flow, sent, response, &mut notes, leases).await
                        }
                        _ => response,
                    }
                }
                Err(error) => {
                    tracing::debug!(flow = record.id, "upstream failed: {}", error.reason);
                    if let Some(recording) = record.recording.as_mut() {
                        recording.failed(&error.reason);
                    }
                    notes.push(&error.reason);
                    let answered = match &mut sent {
                        Some((flow, sent)) if plugins.wants_error() => {
                            on_error(&plugins, flow, sent, &error, &mut notes).await
                        }
                        _ => None,
                    };
                    answered.unwrap_or_else(|| {
                        text_response(error.status, format!("proxlet: {}", error.reason))
                    })
                }
            }
        }
    };

    // The response phase of intercepting.
    let mut response = response;
    if let (Some(intercept), Some(seen), None) = (intercept, &seen, &upstream_upgrade) {
        let paused = intercept.response(record.id, conn.client, record.mode, seen, &mut response);
        if paused.await.is_err() {
            if let Some(recording) = record.recording.as_mut() {
                let head = response.headers();
                recording.response(response.status(), record.client_version, head);
            }
            return Err(killed(record, None));
        }
    }

    // 6. Stream back; the access log is written when the body is done.
    let (mut parts, body) = response.into_parts();
    headers::remove_hop_by_hop(&mut parts.headers);
    record.status = parts.status;
    let mut switched = None;
    if let (Some((protocol, upstream)), Some(client)) = (upstream_upgrade, client_upgrade) {
        // Without plugins on its messages a WebSocket keeps what the
        // upstream accepted (permessage-deflate): the record inflates.
        let deflate = watchers.is_none() && offers_deflate(&parts.headers);
        let websocket = is_websocket(Some(&protocol));
        match extended {
            Some(_) => upgrade::accepted_over_h2(&mut parts.status, &mut parts.headers),
            None => upgrade::restore(&mut parts.headers, protocol),
        }
        record.status = parts.status;
        switched = Some((client, upstream, websocket, deflate));
    }
    if let Some(metrics) = crate::metrics::get() {
        if let Some(outcome) = Outcome::of(&parts.headers) {
            metrics.outcome(outcome);
            if outcome.from_cache() {
                record.source = Source::Cache;
            }
        }
    }
    if let Some(text) = notes.take_text() {
        record.note = Some(text);
    }
    if let Some(recording) = record.recording.as_mut() {
        recording.steps().extend(notes.steps.unwrap_or_default());
        recording.response(parts.status, record.client_version, &parts.headers);
    }
    if let Some((client, upstream, websocket, deflate)) = switched {
        // A WebSocket someone looks at is relayed message by message, and
        // recorded when it ends.
        let recording = match websocket {
            true => record.recording.take(),
            false => None,
        };
        // (A 101 to another protocol than the one asked is relayed as bytes.)
        let watchers = watchers.filter(|_| websocket);
        let watch = (recording.is_some() || watchers.is_some()).then(|| {
            let mut recording = recording;
            if let Some(recording) = recording.as_mut() {
                recording.websocket_opened();
            }
            crate::proxy::websocket::Watch {
                flow: this_flow,
                plugins: watchers,
                recording,
                deflate,
            }
        });
        upgrade::relay(
            record.id,
            client,
            upstream,
            proxy.settings.idle_timeout,
            watch,
        );
    }
    Ok(Response::from_parts(parts, Logged::new(body, record)))
}

/// A flow the user killed while it was intercepted: recorded with that
/// error (and `unrecorded`, the request, when it was killed before it was
/// recorded), logged, and the client's connection is closed.
fn killed(mut record: FlowRecord, unrecorded: Option<&http::request::Parts>) -> Killed {
    tracing::info!(
        target: "proxlet::access",
        "#{} {} {} {} killed: by the user (intercept)",
        record.id,
        record.client,
        record.method,
        record.url,
    );
    if let Some(mut recording) = record.recording.take() {
        if let Some(request) = unrecorded {
            recording.request(
                &request.method,
                &request.uri,
                request.version,
                &request.headers,
            );
        }
        recording.finish(Some("killed by the user".into()), None);
    }
    Killed
}

/// A response proxlet makes itself before the pipeline runs (a bad target,
/// a request to proxlet), logged and recorded like any other.
fn answered(
    mut record: FlowRecord,
    version: Version,
    response: Response<Body>,
) -> Response<Logged<Body>> {
    record.status = response.status();
    if let Some(recording) = record.recording.as_mut() {
        recording.request_line(&record.method, &record.url, version);
        recording.response(response.status(), version, response.headers());
    }
    response.map(|b| Logged::new(b, record))
}
