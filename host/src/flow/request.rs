//! On-request: each plugin whose prefilter matched decides in chain order,
//! and its decision is carried out here — a kept answer served (memo), a
//! `fill` turned into the flow's lease on its key (or a wait for another
//! flow's fill, or a hit in the shared store), a delay slept, a body
//! buffered for `on-request-body`, a plugin's response built (a granted file
//! streamed), head edits applied. The first answer wins; edits compose.

use http::{Response, StatusCode};

use super::{
    answer::{edited, failure, plugin_response},
    buffer::{buffer, busy, drain, replaced_body, Buffered, DRAIN_LIMIT},
    fill::{self, Fill, FillLease},
    Notes,
};
use crate::{
    plugin::{Edits, Flow, FlowPlugins, LoadedPlugin, RequestBodyStep, RequestStep},
    proxy::body::{text_response, Body},
};

/// How often a flow waits for other flows filling the same key before it
/// fetches on its own.
const MAX_FILL_WAITS: u32 = 3;

/// What `on-request` decided for the flow.
pub enum RequestDecision {
    Continue,
    Respond(Response<Body>),
}

/// Runs `on-request` of each plugin in order. Leases of `fill` go to
/// `leases`, to be held until the response is done.
pub async fn on_request(
    plugins: &FlowPlugins,
    flow: &Flow,
    parts: &mut http::request::Parts,
    body: &mut Body,
    notes: &mut Notes,
    leases: &mut Vec<FillLease>,
) -> RequestDecision {
    for plugin in plugins.with_request_hook() {
        let name = &plugin.spec.name;
        if let Some(response) = plugin.memo.answer(parts) {
            notes.step(name, "on-request", notes.clock(), || {
                "respond (memo)".into()
            });
            notes.plugin(name, "respond");
            return RequestDecision::Respond(response);
        }
        let mut waits = 0;
        let mut looked_in_shared_store = false;
        let step = loop {
            let started = notes.clock();
            let step = plugin.request_step(flow, parts).await;
            notes.step(name, "on-request", started, || match &step {
                Ok(RequestStep::Continue(edits)) if edits.is_empty() => "continue".into(),
                Ok(RequestStep::Continue(_)) => "edit".into(),
                Ok(RequestStep::Respond(r)) => format!("respond {}", r.status()),
                Ok(RequestStep::Delay { ms, .. }) => format!("delay {ms}ms"),
                Ok(RequestStep::NeedBody(_)) => "need-body".into(),
                Ok(RequestStep::Fill { .. }) => "fill".into(),
                Err(reason) => format!("failed: {reason}"),
            });
            match step {
                Ok(RequestStep::Fill { key, edits }) if waits < MAX_FILL_WAITS => {
                    match fill::acquire(name, &key).await {
                        Fill::Lease(lease) => {
                            // The shared cache store (--cache-store) may
                            // hold it: then the lease goes and the plugin,
                            // asked again, finds it on disk.
                            if !looked_in_shared_store {
                                looked_in_shared_store = true;
                                if crate::store::fill(&plugin.spec.dirs, &key, &lease).await {
                                    notes.plugin(name, "shared");
                                    continue;
                                }
                            }
                            leases.push(lease);
                            break Ok(RequestStep::Continue(edits));
                        }
                        Fill::Ended => {
                            waits += 1;
                            notes.plugin(name, "waited");
                        }
                        Fill::GaveUp => {
                            notes.plugin(name, "fill-stalled");
                            break Ok(RequestStep::Continue(edits));
                        }
                    }
                }
                // Still busy after several waits: fetch without a lease.
                Ok(RequestStep::Fill { edits, .. }) => break Ok(RequestStep::Continue(edits)),
                other => break other,
            }
        };
        let edits = match step {
            Err(reason) => match failure(plugin, reason, notes) {
                Some(response) => return RequestDecision::Respond(response),
                None => continue,
            },
            Ok(RequestStep::Continue(edits)) => edits,
            Ok(RequestStep::Respond(response)) => {
                notes.plugin(name, "respond");
                return match plugin_response(
                    plugin,
                    response,
                    &parts.method,
                    &parts.headers,
                    Some(parts),
                )
                .await
                {
                    Ok(response) => RequestDecision::Respond(response),
                    Err(reason) => match failure(plugin, reason, notes) {
                        Some(response) => RequestDecision::Respond(response),
                        None => continue,
                    },
                };
            }
            Ok(RequestStep::Delay { ms, edits }) => {
                let max = plugin.spec.limits.max_delay;
                let asked = std::time::Duration::from_millis(ms.into());
                if asked > max {
                    tracing::debug!(
                        "plugin {name}: delay of {ms} ms capped at limits.max_delay_ms = {}",
                        max.as_millis()
                    );
                }
                let wait = asked.min(max);
                notes.plugin(name, &format!("delay:{}ms", wait.as_millis()));
                tokio::time::sleep(wait).await;
                edits
            }
            Ok(RequestStep::NeedBody(edits)) => {
                if let Some(response) = edit_request(plugin, parts, edits, notes) {
                    return RequestDecision::Respond(response);
                }
                if let Some(response) = request_body(plugin, flow, parts, body, notes).await {
                    return RequestDecision::Respond(response);
                }
                Edits::default()
            }
            Ok(RequestStep::Fill { .. }) => unreachable!("fill is resolved above"),
        };
        if let Some(response) = edit_request(plugin, parts, edits, notes) {
            return RequestDecision::Respond(response);
        }
    }
    RequestDecision::Continue
}

/// Applies a plugin's request edits; a bad one is a plugin failure.
fn edit_request(
    plugin: &LoadedPlugin,
    parts: &mut http::request::Parts,
    edits: Edits,
    notes: &mut Notes,
) -> Option<Response<Body>> {
    if edits.is_empty() {
        return None;
    }
    let applied = edits.apply_to_request(parts, plugin.spec.credentials);
    edited(plugin, applied, "request", notes)
}

/// `need-body` on the request: buffer (up to the plugin's limit, else 413),
/// decode, call `on-request-body`, apply its decision.
async fn request_body(
    plugin: &LoadedPlugin,
    flow: &Flow,
    parts: &mut http::request::Parts,
    body: &mut Body,
    notes: &mut Notes,
) -> Option<Response<Body>> {
    let name = &plugin.spec.name;
    if !plugin.has_request_body_hook() {
        tracing::warn!("plugin {name} asked for the request body but has no on-request-body hook");
        return None;
    }
    let decoded = match buffer(plugin, body, &parts.headers).await {
        Buffered::Decoded(decoded) => decoded,
        Buffered::TooLarge(rest) => {
            // Let the client finish sending (up to a bound) so it reads the
            // 413 instead of a reset stream.
            tokio::spawn(drain(rest, DRAIN_LIMIT));
            notes.plugin(name, "body-too-large");
            let limit = plugin.spec.limits.max_body_bytes;
            tracing::warn!(
                "request body is over the {limit} byte limit of plugin {name}: answering 413"
            );
            return Some(text_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "proxlet: the request body exceeds the {} MiB limit of plugin {name}",
                    limit >> 20
                ),
            ));
        }
        Buffered::Failed(e) => {
            return Some(text_response(
                StatusCode::BAD_REQUEST,
                format!("proxlet: reading the request body failed: {e}"),
            ))
        }
        Buffered::Undecodable(e) => {
            return failure(plugin, format!("plugin {name}: request body: {e}"), notes)
        }
        Buffered::Busy => return failure(plugin, busy(name), notes),
    };
    match plugin.request_body_step(flow, parts, &decoded).await {
        Ok(RequestBodyStep::Continue) => None,
        Ok(RequestBodyStep::Replace(new)) => {
            notes.plugin(name, "body");
            *body = replaced_body(&mut parts.headers, new);
            None
        }
        Ok(RequestBodyStep::Respond(response)) => {
            notes.plugin(name, "respond");
            match plugin_response(plugin, response, &parts.method, &parts.headers, None).await {
                Ok(response) => Some(response),
                Err(reason) => failure(plugin, reason, notes),
            }
        }
        Err(reason) => failure(plugin, reason, notes),
    }
}
