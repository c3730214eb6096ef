//! What a plugin answers with, carried out: its own response — bytes, or a
//! file under its granted dirs streamed by the host (and kept for reuse
//! when it asked, `plugin::memo`) — or its failure, which fail-open skips
//! and fail-closed turns into a 502.

use bytes::Bytes;
use http::{HeaderMap, Method, Response, StatusCode};
use http_body_util::Full;

use super::Notes;
use crate::{
    plugin::{memo, LoadedPlugin, PluginBody, PluginResponse},
    proxy::{
        body::{boxed, text_response, Body},
        files,
        grant::GrantedPath,
    },
};

/// Notes a plugin's head edits once applied; a bad one (`applied` is its
/// error, `head` "request" or "response") is a plugin failure.
pub(super) fn edited(
    plugin: &LoadedPlugin,
    applied: Result<(), String>,
    head: &str,
    notes: &mut Notes,
) -> Option<Response<Body>> {
    let name = &plugin.spec.name;
    match applied {
        Ok(()) => {
            notes.plugin(name, "edit");
            None
        }
        Err(reason) => failure(
            plugin,
            format!("plugin {name} returned a bad {head} edit: {reason}"),
            notes,
        ),
    }
}

/// A plugin failed: fail-open logs and skips it, fail-closed answers 502.
pub(super) fn failure(
    plugin: &LoadedPlugin,
    reason: String,
    notes: &mut Notes,
) -> Option<Response<Body>> {
    let name = &plugin.spec.name;
    notes.plugin(name, "failed");
    if plugin.spec.fail_closed {
        tracing::error!("{reason} (fail-closed: answering 502)");
        Some(text_response(
            StatusCode::BAD_GATEWAY,
            format!("proxlet: {reason}"),
        ))
    } else {
        tracing::warn!("{reason} (fail-open: skipping the plugin for this flow)");
        None
    }
}

/// Builds the response a plugin made: bytes, or a file under its granted
/// dirs. `request` is given for an `on-request` answer, which alone may be
/// kept for reuse.
pub(super) async fn plugin_response(
    plugin: &LoadedPlugin,
    response: PluginResponse,
    method: &Method,
    request_headers: &HeaderMap,
    request: Option<&http::request::Parts>,
) -> Result<Response<Body>, String> {
    let name = &plugin.spec.name;
    let (mut parts, body) = response
        .into_parts(plugin.spec.credentials)
        .map_err(|e| format!("plugin {name} returned a bad response: {e}"))?;
    // Only an on-request answer with a file may be reused (memo.rs).
    let directive = match memo::Directive::take(&mut parts.headers) {
        Some(Err(reason)) => {
            tracing::debug!("plugin {name}: ignoring its {}: {reason}", memo::MEMO);
            None
        }
        Some(Ok(directive)) => request.zip(Some(directive)),
        None => None,
    };
    match body {
        PluginBody::Bytes(bytes) => Ok(Response::from_parts(
            parts,
            boxed(Full::new(Bytes::from(bytes))),
        )),
        PluginBody::File(path) => {
            let granted = GrantedPath::locate(&plugin.spec.dirs, &path).ok_or_else(|| {
                format!("plugin {name} answered with file {path:?}, outside its granted dirs")
            })?;
            if let Some((request, directive)) = directive {
                let dirs = &plugin.spec.dirs;
                let (status, headers) = (parts.status, parts.headers.clone());
                let kept = plugin
                    .memo
                    .keep(request, directive, dirs, &granted, status, headers);
                if let Some(response) = kept {
                    return Ok(response);
                }
            }
            files::serve_file(
                &granted,
                method,
                request_headers,
                parts.status,
                parts.headers,
            )
            .await
            .map_err(|e| format!("plugin {name} answered with file {path:?}: {e}"))
        }
    }
}
