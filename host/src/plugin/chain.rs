//! The plugin chain: one slot per plugin, each holding its plugin's current
//! version (swapped by a reload), and the versions one flow runs with
//! ([`FlowPlugins`]) — those whose prefilter matches it, in chain order. What
//! a flow does with their decisions is `crate::flow`'s.

use std::{net::SocketAddr, sync::Arc};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Method, Uri};

use super::{
    bindings::types::{FlowInfo, Hooks},
    engine::PluginEngine,
    instance::LoadedPlugin,
    optimise,
    spec::PluginSpec,
};

/// One position of the chain; its plugin can be swapped by a reload.
pub struct Slot {
    pub spec: Arc<PluginSpec>,
    pub current: ArcSwap<LoadedPlugin>,
    /// Cleared by the web UI's "disable": the plugin sees no flows.
    pub enabled: std::sync::atomic::AtomicBool,
    /// Cranelift compiling what the slot serves with Winch's code.
    pub optimiser: optimise::Optimiser,
}

impl Slot {
    pub fn new(spec: Arc<PluginSpec>, plugin: Arc<LoadedPlugin>, enabled: bool) -> Self {
        Self {
            spec,
            current: ArcSwap::new(plugin),
            enabled: enabled.into(),
            optimiser: Default::default(),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[derive(Default)]
pub struct Chain {
    pub slots: Vec<Arc<Slot>>,
}

impl Chain {
    /// Loads every plugin of `specs`; the first failure stops the load.
    pub async fn load(engine: &Arc<PluginEngine>, specs: &[PluginSpec]) -> Result<Self, String> {
        let mut slots = Vec::with_capacity(specs.len());
        for spec in specs {
            let spec = Arc::new(spec.clone());
            let loaded = LoadedPlugin::load(engine, spec.clone()).await?;
            let plugin = Arc::new(loaded.plugin);
            let message = format!(
                "loaded plugin {} from {} (sha256 {}, {}) in {} ms{}",
                spec.name,
                spec.path.display(),
                &plugin.hash[..12],
                compiled(&plugin, loaded.optimise.is_some()),
                plugin.load_ms,
                calls(&plugin),
            );
            tracing::info!("{message}");
            if let Some(events) = crate::web::events() {
                events.reloaded(&spec.name, true, Some(&plugin.hash), &message);
            }
            let slot = Arc::new(Slot::new(spec, plugin.clone(), true));
            if let Some(source) = loaded.optimise {
                optimise::start(&slot, engine, &plugin, source);
            }
            slots.push(slot);
        }
        Ok(Self { slots })
    }

    /// The plugins whose prefilter matches this request, at their current version.
    pub fn for_flow(&self, method: &Method, uri: &Uri) -> FlowPlugins {
        if self.slots.is_empty() {
            return FlowPlugins::default();
        }
        let host = uri.host().unwrap_or_default();
        let port = crate::proxy::headers::port_of(uri);
        let url = std::cell::OnceCell::new();
        FlowPlugins {
            plugins: self
                .slots
                .iter()
                .filter(|slot| {
                    let method = method.as_str();
                    slot.is_enabled() && slot.spec.matcher.matches(method, host, port, &url, uri)
                })
                .map(|slot| slot.current.load_full())
                .collect(),
        }
    }
}

/// What hooks are told about their flow; the client address is formatted
/// only when a plugin asks for it (`request-head.client`).
#[derive(Clone, Copy)]
pub struct Flow {
    pub info: FlowInfo,
    pub client: SocketAddr,
}

impl Flow {
    /// Flow `id` from `client`; `intercepted_tls` when it came inside an
    /// intercepted tunnel.
    pub fn new(id: u64, intercepted_tls: bool, client: SocketAddr) -> Self {
        Self {
            info: FlowInfo {
                id,
                intercepted_tls,
            },
            client,
        }
    }

    pub fn id(&self) -> u64 {
        self.info.id
    }
}

/// The plugin versions one flow runs with: those whose prefilter matched,
/// in chain order.
#[derive(Default)]
pub struct FlowPlugins {
    plugins: Vec<Arc<LoadedPlugin>>,
}

impl FlowPlugins {
    pub fn is_empty(&self) -> bool {
        self.plugins.is_empty()
    }

    fn with_hook(&self, hook: Hooks) -> impl Iterator<Item = &Arc<LoadedPlugin>> {
        self.plugins.iter().filter(move |p| p.hooks.contains(hook))
    }

    fn wants(&self, hook: Hooks) -> bool {
        self.with_hook(hook).next().is_some()
    }

    /// Whether a plugin has `on-response` (or its body hook).
    pub fn wants_response(&self) -> bool {
        self.wants(Hooks::ON_RESPONSE)
    }

    /// Whether a plugin has `on-error`.
    pub fn wants_error(&self) -> bool {
        self.wants(Hooks::ON_ERROR)
    }

    /// The plugins with `on-request`, in chain order.
    pub fn with_request_hook(&self) -> impl Iterator<Item = &Arc<LoadedPlugin>> {
        self.with_hook(Hooks::ON_REQUEST)
    }

    /// The plugins with `on-response`, in chain order.
    pub fn with_response_hook(&self) -> impl Iterator<Item = &Arc<LoadedPlugin>> {
        self.with_hook(Hooks::ON_RESPONSE)
    }

    /// The plugins with `on-error`, in chain order.
    pub fn with_error_hook(&self) -> impl Iterator<Item = &Arc<LoadedPlugin>> {
        self.with_hook(Hooks::ON_ERROR)
    }

    /// The plugins that export the WebSocket hooks, in chain order.
    pub fn with_websocket_hooks(&self) -> impl Iterator<Item = &Arc<LoadedPlugin>> {
        self.plugins.iter().filter(|p| p.websocket)
    }
}

/// The plugins that see one WebSocket's messages, at the versions it began
/// with.
pub struct MessagePlugins {
    plugins: Vec<Arc<LoadedPlugin>>,
}

/// A message going through plugins, and what it became.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsPayload {
    pub text: bool,
    pub data: Bytes,
}

/// What a WebSocket's plugins made of one message.
#[derive(Debug, Default)]
pub struct MessageOutcome {
    /// What goes on in the message's direction; `None`: dropped.
    pub forward: Option<WsPayload>,
    /// Messages plugins sent of their own: (to the client, payload).
    pub inject: Vec<(bool, WsPayload)>,
    /// A fail-closed plugin failed: the WebSocket is to be closed, why.
    pub close: Option<String>,
}

impl MessagePlugins {
    /// The plugins that wanted the messages (`on-websocket-open`).
    pub fn new(plugins: Vec<Arc<LoadedPlugin>>) -> Self {
        Self { plugins }
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.plugins.iter().map(|p| &*p.spec.name)
    }

    /// Runs each plugin on the message in order: a replacement is what the
    /// next one sees, a drop ends the round. For a `truncated` message
    /// (relayed already) only injections count.
    pub async fn on_message(
        &self,
        flow: &Flow,
        from_client: bool,
        payload: WsPayload,
        truncated: bool,
    ) -> MessageOutcome {
        use super::bindings::websocket_hooks::{Message, MessageAction, Payload};
        let mut outcome = MessageOutcome {
            forward: Some(payload),
            ..MessageOutcome::default()
        };
        for plugin in &self.plugins {
            let Some(current) = &outcome.forward else {
                break;
            };
            let name = &plugin.spec.name;
            let message = Message {
                from_client,
                payload: Payload {
                    text: current.text,
                    data: current.data.to_vec(),
                },
                truncated,
            };
            let decision = match plugin.on_websocket_message(flow, &message).await {
                Ok(decision) => decision,
                Err(reason) if plugin.spec.fail_closed => {
                    tracing::error!(
                        flow = flow.info.id,
                        "{reason} (fail-closed: closing the WebSocket)"
                    );
                    outcome.close = Some(reason);
                    return outcome;
                }
                Err(reason) => {
                    tracing::warn!(
                        flow = flow.info.id,
                        "{reason} (fail-open: the message goes on)"
                    );
                    continue;
                }
            };
            let checked = |payload: Payload| -> Result<WsPayload, String> {
                if payload.text && std::str::from_utf8(&payload.data).is_err() {
                    return Err(format!(
                        "plugin {name} returned a text WebSocket message that is not UTF-8"
                    ));
                }
                Ok(WsPayload {
                    text: payload.text,
                    data: Bytes::from(payload.data),
                })
            };
            let mut made = Vec::with_capacity(decision.inject.len());
            let mut bad = None;
            for injected in decision.inject {
                match checked(injected.payload) {
                    Ok(payload) => made.push((injected.to_client, payload)),
                    Err(reason) => bad = Some(reason),
                }
            }
            let action = match decision.action {
                _ if truncated => Ok(None),
                MessageAction::Pass => Ok(None),
                MessageAction::Drop => Ok(Some(None)),
                MessageAction::Replace(payload) => checked(payload).map(|p| Some(Some(p))),
            };
            let action = match (action, bad) {
                (Ok(action), None) => action,
                (Err(reason), _) | (_, Some(reason)) if plugin.spec.fail_closed => {
                    tracing::error!(
                        flow = flow.info.id,
                        "{reason} (fail-closed: closing the WebSocket)"
                    );
                    outcome.close = Some(reason);
                    return outcome;
                }
                (Err(reason), _) | (_, Some(reason)) => {
                    tracing::warn!(
                        flow = flow.info.id,
                        "{reason} (fail-open: the message goes on)"
                    );
                    continue;
                }
            };
            if let Some(forward) = action {
                outcome.forward = forward;
            }
            outcome.inject.extend(made);
        }
        outcome
    }
}

/// How a plugin's code was obtained, for load logs; `optimising` when
/// cranelift's code is being made in the background.
pub(crate) fn compiled(plugin: &LoadedPlugin, optimising: bool) -> &'static str {
    match (plugin.compiler, plugin.from_cache, optimising) {
        (_, true, _) => "compiled code from cache",
        (super::engine::Compiler::Winch, _, true) => "baseline compiler; optimising",
        (super::engine::Compiler::Winch, _, false) => "baseline compiler",
        (super::engine::Compiler::Cranelift, false, _) => "compiled",
    }
}

/// The end of a load line: whether hooks are called without a fiber
/// (`direct_io.rs`).
pub(crate) fn calls(plugin: &LoadedPlugin) -> &'static str {
    match plugin.direct() {
        true => "; hooks called directly",
        false => "",
    }
}
