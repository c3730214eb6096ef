//! On-response and on-error: each plugin decides in chain order, and its
//! decision is carried out here — a replacement built, the body teed into
//! the file a `store` names (beneath the plugin's grant, taking over the
//! flow's `fill` leases), a body buffered for `on-response-body`, head edits
//! applied; after an upstream failure, the first plugin answer is served.

use http::{HeaderMap, Method, Response, StatusCode};

use super::{
    answer::{edited, failure, plugin_response},
    buffer::{buffer, busy, replaced_body, Buffered},
    fill::FillLease,
    Notes,
};
use crate::{
    plugin::{
        Edits, FailedUpstream, Flow, FlowPlugins, LoadedPlugin, RequestView, ResponseBodyStep,
        ResponseStep, Sidecar,
    },
    proxy::{
        body::{boxed, text_response, Body},
        files,
        grant::GrantedPath,
    },
};

/// Runs `on-response` of each plugin in order. The flow's `fill`
/// leases move into the first store it makes, which releases them when
/// the file is complete; without a store they are released here.
pub async fn on_response(
    plugins: &FlowPlugins,
    flow: &Flow,
    request: &mut RequestView,
    response: Response<Body>,
    notes: &mut Notes,
    leases: Vec<FillLease>,
) -> Response<Body> {
    let mut leases = leases;
    let (mut parts, mut body) = response.into_parts();
    for plugin in plugins.with_response_hook() {
        let started = notes.clock();
        let step = plugin.response_step(flow, request, &mut parts).await;
        let name = &plugin.spec.name;
        notes.step(name, "on-response", started, || match &step {
            Ok(ResponseStep::Continue(edits)) if edits.is_empty() => "continue".into(),
            Ok(ResponseStep::Continue(_)) => "edit".into(),
            Ok(ResponseStep::Replace(r)) => format!("replace {}", r.status()),
            Ok(ResponseStep::Store { .. }) => "store".into(),
            Ok(ResponseStep::NeedBody(_)) => "need-body".into(),
            Err(reason) => format!("failed: {reason}"),
        });
        let edits = match step {
            Err(reason) => match failure(plugin, reason, notes) {
                Some(response) => return response,
                None => continue,
            },
            Ok(ResponseStep::Continue(edits)) => edits,
            Ok(ResponseStep::Replace(replacement)) => {
                notes.plugin(name, "replace");
                match plugin_response(plugin, replacement, &request.method, &request.headers, None)
                    .await
                {
                    Ok(response) => return response,
                    Err(reason) => match failure(plugin, reason, notes) {
                        Some(response) => return response,
                        None => continue,
                    },
                }
            }
            Ok(ResponseStep::Store {
                path,
                sidecar,
                edits,
            }) => {
                if request.method != Method::HEAD {
                    let held = std::mem::take(&mut leases);
                    match store_body(plugin, request, &parts.headers, &path, sidecar, body, held) {
                        Stored::Teed(teed) => {
                            notes.plugin(name, "store");
                            body = teed;
                        }
                        Stored::Not(untouched) => body = untouched,
                        Stored::Refused(untouched, reason) => {
                            body = untouched;
                            if let Some(response) = failure(plugin, reason, notes) {
                                return response;
                            }
                        }
                    }
                }
                edits
            }
            Ok(ResponseStep::NeedBody(edits)) => {
                if let Some(response) = edit_response(plugin, &mut parts, edits, notes) {
                    return response;
                }
                let outcome = response_body(plugin, flow, request, &mut parts, &mut body, notes);
                if let Some(response) = outcome.await {
                    return response;
                }
                Edits::default()
            }
        };
        if let Some(response) = edit_response(plugin, &mut parts, edits, notes) {
            return response;
        }
    }
    Response::from_parts(parts, body)
}

/// Lets `on-error` plugins answer for a failed upstream.
pub async fn on_error(
    plugins: &FlowPlugins,
    flow: &Flow,
    request: &mut RequestView,
    failed: &crate::proxy::upstream::UpstreamError,
    notes: &mut Notes,
) -> Option<Response<Body>> {
    let error = &FailedUpstream::from(failed);
    for plugin in plugins.with_error_hook() {
        let started = notes.clock();
        let answer = plugin.error_answer(flow, request, error).await;
        notes.step(&plugin.spec.name, "on-error", started, || match &answer {
            Ok(Some(r)) => format!("respond {}", r.status()),
            Ok(None) => "continue".into(),
            Err(reason) => format!("failed: {reason}"),
        });
        match answer {
            Ok(Some(response)) => {
                notes.plugin(&plugin.spec.name, "answered-error");
                match plugin_response(plugin, response, &request.method, &request.headers, None)
                    .await
                {
                    Ok(response) => return Some(response),
                    Err(reason) => {
                        if let Some(response) = failure(plugin, reason, notes) {
                            return Some(response);
                        }
                    }
                }
            }
            Ok(None) => {}
            Err(reason) => {
                if let Some(response) = failure(plugin, reason, notes) {
                    return Some(response);
                }
            }
        }
    }
    None
}

/// Applies a plugin's response edits; a bad one is a plugin failure.
fn edit_response(
    plugin: &LoadedPlugin,
    parts: &mut http::response::Parts,
    edits: Edits,
    notes: &mut Notes,
) -> Option<Response<Body>> {
    if edits.is_empty() {
        return None;
    }
    let applied = edits.apply_to_response(parts, plugin.spec.credentials);
    edited(plugin, applied, "response", notes)
}

/// `need-body` on the response: buffer (up to the plugin's limit, else a
/// plugin failure), decode, call `on-response-body`, apply its decision.
async fn response_body(
    plugin: &LoadedPlugin,
    flow: &Flow,
    request: &mut RequestView,
    parts: &mut http::response::Parts,
    body: &mut Body,
    notes: &mut Notes,
) -> Option<Response<Body>> {
    let name = &plugin.spec.name;
    if !plugin.has_response_body_hook() {
        tracing::warn!(
            "plugin {name} asked for the response body but has no on-response-body hook"
        );
        return None;
    }
    let decoded = match buffer(plugin, body, &parts.headers).await {
        Buffered::Decoded(decoded) => decoded,
        Buffered::TooLarge(rest) => {
            *body = rest;
            let reason = format!(
                "the response body exceeds the {} MiB limit of plugin {name}",
                plugin.spec.limits.max_body_bytes >> 20
            );
            return failure(plugin, reason, notes);
        }
        Buffered::Failed(e) => {
            return Some(text_response(
                StatusCode::BAD_GATEWAY,
                format!("proxlet: reading the upstream body failed: {e}"),
            ))
        }
        Buffered::Undecodable(e) => {
            return failure(plugin, format!("plugin {name}: response body: {e}"), notes)
        }
        Buffered::Busy => return failure(plugin, busy(name), notes),
    };
    match plugin
        .response_body_step(flow, request, parts, &decoded)
        .await
    {
        Ok(ResponseBodyStep::Continue) => None,
        Ok(ResponseBodyStep::Replace(new)) => {
            notes.plugin(name, "body");
            *body = replaced_body(&mut parts.headers, new);
            None
        }
        Err(reason) => failure(plugin, reason, notes),
    }
}

/// What became of a `store`.
enum Stored {
    /// The body is teed into the file as it streams.
    Teed(Body),
    /// Not stored for a reason of the disk's (logged); the body streams on.
    Not(Body),
    /// The plugin asked for something it may not: its failure.
    Refused(Body, String),
}

/// `store`: tees `body` into the file the plugin named (guest `path`),
/// beneath its grant.
fn store_body(
    plugin: &LoadedPlugin,
    request: &RequestView,
    response: &HeaderMap,
    path: &str,
    sidecar: Option<Sidecar>,
    body: Body,
    leases: Vec<FillLease>,
) -> Stored {
    let name = &plugin.spec.name;
    let Some(dest) = GrantedPath::locate(&plugin.spec.dirs, path) else {
        let reason = format!("plugin {name} asked to store {path:?}, outside its granted dirs");
        return Stored::Refused(body, reason);
    };
    let sidecar = match sidecar {
        None => None,
        Some(sidecar) => match GrantedPath::locate(&plugin.spec.dirs, &sidecar.path) {
            Some(path) => Some((path, sidecar.contents)),
            None => {
                let reason = format!(
                    "plugin {name}: sidecar {:?} is outside its granted dirs",
                    sidecar.path
                );
                return Stored::Refused(body, reason);
            }
        },
    };
    let expected = response
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    // What was fetched with someone's credentials is readable by proxlet's
    // user only, whatever the plugin decided about sharing it.
    let private = [http::header::AUTHORIZATION, http::header::COOKIE]
        .iter()
        .any(|h| request.headers.contains_key(h));
    let upload = crate::store::upload_when_stored(&dest, sidecar.as_ref().map(|s| &s.0), private);
    match files::Tee::new(body, &dest, expected, sidecar, private, leases) {
        Ok(tee) => Stored::Teed(boxed(tee.on_stored(upload))),
        Err((body, e)) if e.is_refusal() => {
            let reason = format!("plugin {name} asked to store {path:?}: {e}");
            Stored::Refused(body, reason)
        }
        Err((body, e)) => {
            // A full or read-only disk is not the plugin's failure: serve anyway.
            tracing::error!("plugin {name}: cannot store {path:?}: {e} (serving without storing)");
            Stored::Not(body)
        }
    }
}
