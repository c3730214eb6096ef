//! A WebSocket asked for by a flow: whether its plugins want its messages
//! (`on-websocket-open`). The messages themselves are relayed by
//! `proxy::websocket`.

use std::time::Instant;

use http::Response;

use super::{answer::failure, Notes};
use crate::{
    plugin::{Flow, FlowPlugins, MessagePlugins},
    proxy::body::Body,
};

/// Asks each plugin that exports the WebSocket hooks whether it wants the
/// messages of the WebSocket `parts` asks for: `Ok(None)` when none does;
/// `Err` with the answer when a fail-closed plugin failed (a plugin that
/// must see every message cannot be skipped).
pub(crate) async fn on_websocket_open(
    plugins: &FlowPlugins,
    flow: &Flow,
    parts: &mut http::request::Parts,
    notes: &mut Notes,
) -> Result<Option<MessagePlugins>, Response<Body>> {
    let mut wanted = Vec::new();
    for plugin in plugins.with_websocket_hooks() {
        let started = Instant::now();
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
