//! A WebSocket asked for by a flow: whether its plugins want its messages
//! (`on-websocket-open`), and the extension (permessage-deflate) rules that
//! follow. The messages themselves are relayed by `proxy::websocket`.

use http::{header, HeaderValue, Response};

use super::{answer::failure, Notes};
use crate::{
    plugin::{Flow, FlowPlugins, MessagePlugins},
    proxy::body::Body,
};

/// Asks each plugin that exports the WebSocket hooks whether it wants the
/// messages of the WebSocket `parts` asks for: `Ok(None)` when none does;
/// `Err` with the answer when a fail-closed plugin failed (a plugin that
/// must see every message cannot be skipped).
pub(super) async fn on_websocket_open(
    plugins: &FlowPlugins,
    flow: &Flow,
    parts: &mut http::request::Parts,
    notes: &mut Notes,
) -> Result<Option<MessagePlugins>, Response<Body>> {
    let mut wanted = Vec::new();
    for plugin in plugins.with_websocket_hooks() {
        let started = notes.clock();
        let answer = plugin.on_websocket_open(flow, parts).await;
        match answer {
            Ok(true) => {
                notes.step(&plugin.spec.name, "on-websocket-open", started, || {
                    "watch".into()
                });
                wanted.push(plugin.clone());
            }
            // Most plugins ignore WebSockets: no step noted.
            Ok(false) => {}
            Err(reason) => {
                notes.step(&plugin.spec.name, "on-websocket-open", started, || {
                    format!("failed: {reason}")
                });
                if let Some(response) = failure(plugin, reason, notes) {
                    return Err(response);
                }
            }
        }
    }
    Ok((!wanted.is_empty()).then(|| MessagePlugins::new(wanted)))
}

/// Whether an upgrade is to WebSocket.
pub(super) fn is_websocket(protocol: Option<&HeaderValue>) -> bool {
    protocol.is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"websocket"))
}

/// Whether a 101's `Sec-WebSocket-Extensions` accepted permessage-deflate.
pub(super) fn offers_deflate(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|ext| {
            ext.split(';')
                .next()
                .is_some_and(|name| name.trim().eq_ignore_ascii_case("permessage-deflate"))
        })
}

/// Plugins see messages as sent: no extension (permessage-deflate) is
/// offered upstream, so none is negotiated. Said once per WebSocket.
pub(super) fn no_extensions(id: u64, headers: &mut http::HeaderMap, watchers: &MessagePlugins) {
    if headers.remove(header::SEC_WEBSOCKET_EXTENSIONS).is_some() {
        let names: Vec<&str> = watchers.names().collect();
        tracing::info!(
            flow = id,
            "WebSocket extensions (permessage-deflate) not offered upstream: plugin {} reads its messages",
            names.join(", ")
        );
    }
}
