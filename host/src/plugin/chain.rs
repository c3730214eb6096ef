//! The plugin chain and what it does to one flow. Plugins run in order; the
//! first `respond`/`replace` wins; head edits compose. Each slot holds the
//! current version of its plugin; a flow takes the versions it starts with.

use std::{net::SocketAddr, sync::Arc, time::Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderMap, Method, Response, StatusCode, Uri};
use http_body_util::Full;

use super::{
    bindings::types::{
        self, Edit, FlowInfo, Hooks, RequestAction, RequestBodyAction, ResponseAction,
        ResponseBodyAction, UpstreamError,
    },
    engine::PluginEngine,
    heads::{self, RequestView},
    instance::LoadedPlugin,
    memo, optimise,
    spec::PluginSpec,
};
use crate::flow::{self as fill, Fill, FillLease};
use crate::proxy::{
    body::{boxed, collect_limited, full, text_response, Body, Collected},
    encoding, files,
    grant::GrantedPath,
};

/// How often a flow waits for other flows filling the same key before it
/// fetches on its own.
const MAX_FILL_WAITS: u32 = 3;

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
                "loaded plugin {} from {} (sha256 {}, {}) in {} ms",
                spec.name,
                spec.path.display(),
                &plugin.hash[..12],
                compiled(&plugin, loaded.optimise.is_some()),
                plugin.load_ms
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

/// What `on-request` decided for the flow.
pub enum RequestDecision {
    Continue,
    Respond(Response<Body>),
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

/// What a flow's plugins did: short notes for its access-log line and, when
/// the flow is recorded, every call with its decision and time.
#[derive(Default)]
pub struct Notes {
    pub text: Vec<String>,
    /// `Some` when the flow is recorded.
    pub steps: Option<Vec<crate::flows::PluginStep>>,
}

impl Notes {
    pub fn new(record_steps: bool) -> Self {
        Self {
            text: Vec::new(),
            steps: record_steps.then(Vec::new),
        }
    }

    pub fn push(&mut self, note: String) {
        self.text.push(note);
    }

    /// Notes a call that began at `started`; `decision` is only formatted
    /// when the flow is recorded.
    fn step(
        &mut self,
        plugin: &str,
        hook: &str,
        started: Instant,
        decision: impl FnOnce() -> String,
    ) {
        if let Some(steps) = &mut self.steps {
            steps.push(crate::flows::PluginStep {
                plugin: plugin.to_owned(),
                hook: hook.to_owned(),
                decision: decision(),
                micros: started.elapsed().as_micros() as u64,
            });
        }
    }
}

/// The plugin versions one flow runs with, and the notes for its log line.
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

    pub fn wants(&self, hook: Hooks) -> bool {
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

    /// Runs `on-request` of each plugin in order. Leases of `fill` go to
    /// `leases`, to be held until the response is done.
    pub async fn on_request(
        &self,
        flow: &Flow,
        parts: &mut http::request::Parts,
        body: &mut Body,
        notes: &mut Notes,
        leases: &mut Vec<FillLease>,
    ) -> RequestDecision {
        for plugin in self.with_hook(Hooks::ON_REQUEST) {
            let name = &plugin.spec.name;
            if let Some(response) = plugin.memo.answer(parts) {
                notes.step(name, "on-request", Instant::now(), || {
                    "respond (memo)".into()
                });
                notes.push(format!("{name}=respond"));
                return RequestDecision::Respond(response);
            }
            let mut waits = 0;
            let mut looked_in_shared_store = false;
            let action = loop {
                let started = Instant::now();
                let action = plugin.on_request(flow, parts).await;
                notes.step(name, "on-request", started, || match &action {
                    Ok(RequestAction::Continue(edits)) if edits.is_empty() => "continue".into(),
                    Ok(RequestAction::Continue(_)) => "edit".into(),
                    Ok(RequestAction::Respond(r)) => format!("respond {}", r.status),
                    Ok(RequestAction::Delay(d)) => format!("delay {}ms", d.ms),
                    Ok(RequestAction::NeedBody(_)) => "need-body".into(),
                    Ok(RequestAction::Fill(_)) => "fill".into(),
                    Err(reason) => format!("failed: {reason}"),
                });
                match action {
                    Ok(RequestAction::Fill(fill)) if waits < MAX_FILL_WAITS => {
                        match fill::acquire(name, &fill.key).await {
                            Fill::Lease(lease) => {
                                // The shared cache store (--cache-store) may
                                // hold it: then the lease goes and the plugin,
                                // asked again, finds it on disk.
                                if !looked_in_shared_store {
                                    looked_in_shared_store = true;
                                    if crate::store::fill(&plugin.spec.dirs, &fill.key, &lease)
                                        .await
                                    {
                                        notes.push(format!("{name}=shared"));
                                        continue;
                                    }
                                }
                                leases.push(lease);
                                break Ok(RequestAction::Continue(fill.edits));
                            }
                            Fill::Ended => {
                                waits += 1;
                                notes.push(format!("{name}=waited"));
                            }
                            Fill::GaveUp => {
                                notes.push(format!("{name}=fill-stalled"));
                                break Ok(RequestAction::Continue(fill.edits));
                            }
                        }
                    }
                    // Still busy after several waits: fetch without a lease.
                    Ok(RequestAction::Fill(fill)) => break Ok(RequestAction::Continue(fill.edits)),
                    other => break other,
                }
            };
            let edits = match action {
                Err(reason) => match failure(plugin, reason, notes) {
                    Some(response) => return RequestDecision::Respond(response),
                    None => continue,
                },
                Ok(RequestAction::Continue(edits)) => edits,
                Ok(RequestAction::Respond(response)) => {
                    notes.push(format!("{name}=respond"));
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
                Ok(RequestAction::Delay(delay)) => {
                    let max = plugin.spec.limits.max_delay;
                    let asked = std::time::Duration::from_millis(delay.ms.into());
                    if asked > max {
                        tracing::debug!(
                            "plugin {name}: delay of {} ms capped at limits.max_delay_ms = {}",
                            delay.ms,
                            max.as_millis()
                        );
                    }
                    let wait = asked.min(max);
                    notes.push(format!("{name}=delay:{}ms", wait.as_millis()));
                    tokio::time::sleep(wait).await;
                    delay.edits
                }
                Ok(RequestAction::NeedBody(edits)) => {
                    if let Some(response) = edit_request(plugin, parts, edits, notes) {
                        return RequestDecision::Respond(response);
                    }
                    if let Some(response) = request_body(plugin, flow, parts, body, notes).await {
                        return RequestDecision::Respond(response);
                    }
                    Vec::new()
                }
                Ok(RequestAction::Fill(_)) => unreachable!("fill is resolved above"),
            };
            if let Some(response) = edit_request(plugin, parts, edits, notes) {
                return RequestDecision::Respond(response);
            }
        }
        RequestDecision::Continue
    }

    /// Runs `on-response` of each plugin in order. The flow's `fill`
    /// leases move into the first store it makes, which releases them when
    /// the file is complete; without a store they are released here.
    pub async fn on_response(
        &self,
        flow: &Flow,
        request: &mut RequestView,
        response: Response<Body>,
        notes: &mut Notes,
        leases: Vec<FillLease>,
    ) -> Response<Body> {
        let mut leases = leases;
        let (mut parts, mut body) = response.into_parts();
        for plugin in self.with_hook(Hooks::ON_RESPONSE) {
            let started = Instant::now();
            let action = plugin.on_response(flow, request, &mut parts).await;
            let name = &plugin.spec.name;
            notes.step(name, "on-response", started, || match &action {
                Ok(ResponseAction::Continue(edits)) if edits.is_empty() => "continue".into(),
                Ok(ResponseAction::Continue(_)) => "edit".into(),
                Ok(ResponseAction::Replace(r)) => format!("replace {}", r.status),
                Ok(ResponseAction::Store(_)) => "store".into(),
                Ok(ResponseAction::NeedBody(_)) => "need-body".into(),
                Err(reason) => format!("failed: {reason}"),
            });
            let edits = match action {
                Err(reason) => match failure(plugin, reason, notes) {
                    Some(response) => return response,
                    None => continue,
                },
                Ok(ResponseAction::Continue(edits)) => edits,
                Ok(ResponseAction::Replace(replacement)) => {
                    notes.push(format!("{name}=replace"));
                    match plugin_response(
                        plugin,
                        replacement,
                        &request.method,
                        &request.headers,
                        None,
                    )
                    .await
                    {
                        Ok(response) => return response,
                        Err(reason) => match failure(plugin, reason, notes) {
                            Some(response) => return response,
                            None => continue,
                        },
                    }
                }
                Ok(ResponseAction::Store(store)) => {
                    if request.method != Method::HEAD {
                        let held = std::mem::take(&mut leases);
                        match store_body(plugin, request, &parts.headers, &store, body, held) {
                            Stored::Teed(teed) => {
                                notes.push(format!("{name}=store"));
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
                    store.edits
                }
                Ok(ResponseAction::NeedBody(edits)) => {
                    if let Some(response) = edit_response(plugin, &mut parts, edits, notes) {
                        return response;
                    }
                    let outcome =
                        response_body(plugin, flow, request, &mut parts, &mut body, notes);
                    if let Some(response) = outcome.await {
                        return response;
                    }
                    Vec::new()
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
        &self,
        flow: &Flow,
        request: &mut RequestView,
        failed: &crate::proxy::upstream::UpstreamError,
        notes: &mut Notes,
    ) -> Option<Response<Body>> {
        let error = &upstream_error(failed);
        for plugin in self.with_hook(Hooks::ON_ERROR) {
            let started = Instant::now();
            let answer = plugin.on_error(flow, request, error).await;
            notes.step(&plugin.spec.name, "on-error", started, || match &answer {
                Ok(Some(r)) => format!("respond {}", r.status),
                Ok(None) => "continue".into(),
                Err(reason) => format!("failed: {reason}"),
            });
            match answer {
                Ok(Some(response)) => {
                    notes.push(format!("{}=answered-error", plugin.spec.name));
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
}

impl FlowPlugins {
    /// Asks each plugin that exports the WebSocket hooks whether it wants
    /// the messages of the WebSocket `parts` asks for: `Ok(None)` when none
    /// does; `Err` with the answer when a fail-closed plugin failed (a
    /// plugin that must see every message cannot be skipped).
    pub async fn on_websocket_open(
        &self,
        flow: &Flow,
        parts: &mut http::request::Parts,
        notes: &mut Notes,
    ) -> Result<Option<MessagePlugins>, Response<Body>> {
        let mut wanted = Vec::new();
        for plugin in self.plugins.iter().filter(|p| p.websocket) {
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
        Ok((!wanted.is_empty()).then_some(MessagePlugins { plugins: wanted }))
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

/// An upstream failure as plugins see it in `on-error`.
fn upstream_error(failed: &crate::proxy::upstream::UpstreamError) -> UpstreamError {
    use crate::proxy::upstream::Failure;
    use types::ErrorKind;
    let kind = match failed.kind {
        Failure::Dns => ErrorKind::Dns,
        Failure::Refused => ErrorKind::Refused,
        Failure::Tls => ErrorKind::Tls,
        Failure::Timeout => ErrorKind::Timeout,
        Failure::Client | Failure::Other => ErrorKind::Other,
    };
    UpstreamError {
        kind,
        message: failed.reason.clone(),
    }
}

/// Applies a plugin's request edits; a bad one is a plugin failure.
fn edit_request(
    plugin: &LoadedPlugin,
    parts: &mut http::request::Parts,
    edits: Vec<Edit>,
    notes: &mut Notes,
) -> Option<Response<Body>> {
    if edits.is_empty() {
        return None;
    }
    let name = &plugin.spec.name;
    match heads::edit_request(parts, edits, plugin.spec.credentials) {
        Ok(()) => {
            notes.push(format!("{name}=edit"));
            None
        }
        Err(reason) => failure(
            plugin,
            format!("plugin {name} returned a bad request edit: {reason}"),
            notes,
        ),
    }
}

/// Applies a plugin's response edits; a bad one is a plugin failure.
fn edit_response(
    plugin: &LoadedPlugin,
    parts: &mut http::response::Parts,
    edits: Vec<Edit>,
    notes: &mut Notes,
) -> Option<Response<Body>> {
    if edits.is_empty() {
        return None;
    }
    let name = &plugin.spec.name;
    match heads::edit_response(parts, edits, plugin.spec.credentials) {
        Ok(()) => {
            notes.push(format!("{name}=edit"));
            None
        }
        Err(reason) => failure(
            plugin,
            format!("plugin {name} returned a bad response edit: {reason}"),
            notes,
        ),
    }
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
    if !plugin.hooks.contains(Hooks::ON_REQUEST_BODY) {
        tracing::warn!("plugin {name} asked for the request body but has no on-request-body hook");
        return None;
    }
    let decoded = match buffer(plugin, body, &parts.headers).await {
        Buffered::Decoded(decoded) => decoded,
        Buffered::TooLarge(rest) => {
            // Let the client finish sending (up to a bound) so it reads the
            // 413 instead of a reset stream.
            tokio::spawn(drain(rest, DRAIN_LIMIT));
            notes.push(format!("{name}=body-too-large"));
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
    match plugin.on_request_body(flow, parts, &decoded).await {
        Ok(RequestBodyAction::Continue) => None,
        Ok(RequestBodyAction::Replace(new)) => {
            notes.push(format!("{name}=body"));
            *body = replaced_body(&mut parts.headers, new);
            None
        }
        Ok(RequestBodyAction::Respond(response)) => {
            notes.push(format!("{name}=respond"));
            match plugin_response(plugin, response, &parts.method, &parts.headers, None).await {
                Ok(response) => Some(response),
                Err(reason) => failure(plugin, reason, notes),
            }
        }
        Err(reason) => failure(plugin, reason, notes),
    }
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
    if !plugin.hooks.contains(Hooks::ON_RESPONSE_BODY) {
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
        .on_response_body(flow, request, parts, &decoded)
        .await
    {
        Ok(ResponseBodyAction::Continue) => None,
        Ok(ResponseBodyAction::Replace(new)) => {
            notes.push(format!("{name}=body"));
            *body = replaced_body(&mut parts.headers, new);
            None
        }
        Err(reason) => failure(plugin, reason, notes),
    }
}

/// How much of a refused request body is read and discarded.
const DRAIN_LIMIT: u64 = 64 << 20;

async fn drain(mut body: Body, limit: u64) {
    use http_body_util::BodyExt;
    let mut seen = 0u64;
    let deadline = tokio::time::sleep(std::time::Duration::from_secs(30));
    tokio::pin!(deadline);
    while seen < limit {
        tokio::select! {
            frame = body.frame() => match frame {
                Some(Ok(frame)) => seen += frame.data_ref().map_or(0, |d| d.len() as u64),
                _ => return,
            },
            () = &mut deadline => return,
        }
    }
}

/// A body read into memory for a body hook.
enum Buffered {
    /// The decoded body; the message keeps the raw bytes as its body.
    Decoded(Vec<u8>),
    /// Over the plugin's limit: the body as it was.
    TooLarge(Body),
    /// The body failed while being read.
    Failed(String),
    /// Read, but its Content-Encoding could not be decoded within the limit.
    Undecodable(String),
    /// Too many bodies are buffered for plugins right now: not read.
    Busy,
}

/// Bytes all flows together may hold buffered for body hooks; a flow
/// reserves its plugin's whole limit before reading, and waits for room at
/// most `BODY_BUDGET_WAIT`.
const BODY_BUDGET_KIB: usize = 512 << 10;
const BODY_BUDGET_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
static BODY_BUDGET: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(BODY_BUDGET_KIB);

/// Reads `body` up to the plugin's `max_body_bytes`, puts the raw bytes back
/// as the message body, and decodes them per `headers`' Content-Encoding on
/// the blocking pool (decoding is CPU work; the async workers serve others).
async fn buffer(plugin: &LoadedPlugin, body: &mut Body, headers: &HeaderMap) -> Buffered {
    let limit = plugin.spec.limits.max_body_bytes;
    let kib = u32::try_from(limit.div_ceil(1024).clamp(1, BODY_BUDGET_KIB)).unwrap_or(u32::MAX);
    let Ok(Ok(_reserved)) =
        tokio::time::timeout(BODY_BUDGET_WAIT, BODY_BUDGET.acquire_many(kib)).await
    else {
        return Buffered::Busy;
    };
    match collect_limited(std::mem::replace(body, full(Bytes::new())), limit).await {
        Collected::Complete(raw) => {
            *body = full(raw.clone());
            let decoded = match content_encoding(headers) {
                None => Ok(raw.to_vec()),
                Some(coding) => {
                    let coding = coding.to_owned();
                    tokio::task::spawn_blocking(move || {
                        encoding::decode(Some(&coding), &raw, limit)
                    })
                    .await
                    .unwrap_or_else(|e| Err(format!("decoding failed: {e}")))
                }
            };
            match decoded {
                Ok(decoded) => Buffered::Decoded(decoded),
                Err(e) => Buffered::Undecodable(e),
            }
        }
        Collected::TooLarge(rest) => Buffered::TooLarge(rest),
        Collected::Failed(e) => Buffered::Failed(e),
    }
}

fn busy(name: &str) -> String {
    format!(
        "plugin {name}: no room to buffer the body ({} MiB are held for body hooks)",
        BODY_BUDGET_KIB >> 10
    )
}

fn content_encoding(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(http::header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
}

/// A plugin's new body is sent decoded: Content-Encoding goes, the length is new.
fn replaced_body(headers: &mut HeaderMap, new: Vec<u8>) -> Body {
    headers.remove(http::header::CONTENT_ENCODING);
    headers.insert(http::header::CONTENT_LENGTH, new.len().into());
    full(new)
}

/// A plugin failed: fail-open logs and skips it, fail-closed answers 502.
fn failure(plugin: &LoadedPlugin, reason: String, notes: &mut Notes) -> Option<Response<Body>> {
    let name = &plugin.spec.name;
    notes.push(format!("{name}=failed"));
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

/// Builds the response a plugin made: bytes, or a file under its granted dirs.
async fn plugin_response(
    plugin: &LoadedPlugin,
    response: types::Response,
    method: &Method,
    request_headers: &HeaderMap,
    request: Option<&http::request::Parts>,
) -> Result<Response<Body>, String> {
    let name = &plugin.spec.name;
    let mut parts = Response::new(()).into_parts().0;
    parts.status = heads::status_code(response.status)
        .map_err(|e| format!("plugin {name} returned a bad response: {e}"))?;
    // The host frames the bodies it builds (Content-Length is not taken).
    parts.headers = heads::made(response.headers, plugin.spec.credentials);
    // Only an on-request answer with a file may be reused (memo.rs).
    let directive = match memo::Directive::take(&mut parts.headers) {
        Some(Err(reason)) => {
            tracing::debug!("plugin {name}: ignoring its {}: {reason}", memo::MEMO);
            None
        }
        Some(Ok(directive)) => request.zip(Some(directive)),
        None => None,
    };
    match response.body {
        types::Body::Bytes(bytes) => Ok(Response::from_parts(
            parts,
            boxed(Full::new(Bytes::from(bytes))),
        )),
        types::Body::File(path) => {
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

/// What became of a `store`.
enum Stored {
    /// The body is teed into the file as it streams.
    Teed(Body),
    /// Not stored for a reason of the disk's (logged); the body streams on.
    Not(Body),
    /// The plugin asked for something it may not: its failure.
    Refused(Body, String),
}

/// `store`: tees `body` into the file the plugin named, beneath its grant.
fn store_body(
    plugin: &LoadedPlugin,
    request: &RequestView,
    response: &HeaderMap,
    store: &types::Store,
    body: Body,
    leases: Vec<FillLease>,
) -> Stored {
    let name = &plugin.spec.name;
    let Some(dest) = GrantedPath::locate(&plugin.spec.dirs, &store.path) else {
        let reason = format!(
            "plugin {name} asked to store {:?}, outside its granted dirs",
            store.path
        );
        return Stored::Refused(body, reason);
    };
    let sidecar = match &store.sidecar {
        None => None,
        Some(sidecar) => match GrantedPath::locate(&plugin.spec.dirs, &sidecar.path) {
            Some(path) => Some((path, sidecar.contents.clone())),
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
            let reason = format!("plugin {name} asked to store {:?}: {e}", store.path);
            Stored::Refused(body, reason)
        }
        Err((body, e)) => {
            // A full or read-only disk is not the plugin's failure: serve anyway.
            tracing::error!(
                "plugin {name}: cannot store {:?}: {e} (serving without storing)",
                store.path
            );
            Stored::Not(body)
        }
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
