//! Running WebAssembly plugins: one engine (and Winch's for large
//! components until cranelift's code is ready), compiled code cached on
//! disk, pooled instances under time and memory limits, the chain a flow
//! goes through, and hot reload when a plugin file changes. A hook call
//! returns the plugin's decision as a host type (`decision.rs`); the flow
//! pipeline (`crate::flow`) carries it out. WIT types stay in here.

mod bindings;
pub mod builtin;
mod chain;
mod decision;
mod direct_io;
mod engine;
mod function_cache;
mod heads;
mod instance;
pub(crate) mod memo;
mod optimise;
mod reload;
mod spec;

pub use bindings::types::Hooks;
pub use chain::{Chain, Flow, FlowPlugins, MessageOutcome, MessagePlugins, WsPayload};
pub use decision::{
    Edits, FailedUpstream, PluginBody, PluginResponse, RequestBodyStep, RequestStep,
    ResponseBodyStep, ResponseStep, Sidecar,
};
pub use engine::PluginEngine;
pub use heads::RequestView;
pub use instance::LoadedPlugin;
pub use instance::WIT_VERSION;
pub(crate) use reload::reload_slot;
pub use reload::{watch, Resolver, Triggers};
pub use spec::{Limits, Matcher, PluginSpec};

/// The plugin runtime could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the plugin runtime: {0}")]
pub struct PluginError(String);

impl PluginError {
    fn engine(error: wasmtime::Error) -> Self {
        Self(engine::describe(&error))
    }
}

/// `proxlet check`: loads `path` as a plugin and describes it.
pub fn check(path: &std::path::Path) -> Result<String, String> {
    let engine = PluginEngine::new(None).map_err(|e| e.to_string())?;
    let spec = std::sync::Arc::new(PluginSpec::from_path(path.to_owned()));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    // Winch's code (for a large component) says as much as cranelift's.
    let plugin = runtime.block_on(LoadedPlugin::load(&engine, spec))?.plugin;
    let names: Vec<&str> = [
        (Hooks::ON_REQUEST, "on-request"),
        (Hooks::ON_REQUEST_BODY, "on-request-body"),
        (Hooks::ON_RESPONSE, "on-response"),
        (Hooks::ON_RESPONSE_BODY, "on-response-body"),
        (Hooks::ON_ERROR, "on-error"),
    ]
    .iter()
    .filter(|(hook, _)| plugin.hooks.contains(*hook))
    .map(|(_, name)| *name)
    .collect();
    Ok(format!(
        "{}: a proxlet plugin (sha256 {}); hooks: {}",
        path.display(),
        &plugin.hash[..12],
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    ))
}
