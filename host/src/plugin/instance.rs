//! One loaded plugin version: its compiled component, `InstancePre`, and a
//! small pool of initialised instances reused across flows. Every call runs
//! under the plugin's epoch deadline and memory cap; an instance that trapped
//! is dropped, never reused, and instances are recycled after many calls.

use std::{borrow::Cow, net::SocketAddr, path::Path, sync::Arc, time::Instant};

use crossbeam_queue::ArrayQueue;
use wasmtime::{
    component::{InstancePre, Resource, ResourceTable},
    Engine, Store, StoreLimitsBuilder, Trap,
};
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use super::{
    bindings::{
        direct, error_hooks, lifecycle, request_hooks, response_hooks,
        types::{
            Hooks, RequestAction, RequestBodyAction, Response, ResponseAction, ResponseBodyAction,
            UpstreamError,
        },
        websocket_hooks::{self, Message, MessageAction, MessageDecision},
    },
    chain::Flow,
    direct_io::direct_imports,
    engine::{content_hash, describe, Compiled, Compiler, PluginEngine, State, TICK},
    heads::{Lend, Lent, NoHead, RequestHandle, RequestView, ResponseHandle},
    spec::PluginSpec,
};

/// The guest's handles on the heads a call lends: one of each kind per
/// call, so their number carries nothing.
fn request_handle() -> Resource<RequestHandle> {
    Resource::new_borrow(0)
}

fn response_handle() -> Resource<ResponseHandle> {
    Resource::new_borrow(0)
}

/// Idle instances kept per plugin version.
const POOL_SIZE: usize = 32;
/// Calls after which an instance is replaced, so a leaky guest cannot grow forever.
const RECYCLE_AFTER: u32 = 10_000;

/// The typed exports of one instance.
pub struct Guests {
    pub request: Option<request_hooks::Guest>,
    pub response: Option<response_hooks::Guest>,
    /// `on-request` and `on-response` called without a fiber, when the
    /// version's imports allow it (`direct_io.rs`).
    pub direct_request: Option<direct::request_hooks::Guest>,
    pub direct_response: Option<direct::response_hooks::Guest>,
    pub error: Option<error_hooks::Guest>,
    pub websocket: Option<websocket_hooks::Guest>,
}

struct Pooled {
    store: Store<State>,
    guests: Guests,
    calls: u32,
}

struct Indices {
    lifecycle: lifecycle::GuestIndices,
    request: Option<request_hooks::GuestIndices>,
    response: Option<response_hooks::GuestIndices>,
    error: Option<error_hooks::GuestIndices>,
    websocket: Option<websocket_hooks::GuestIndices>,
    /// The hot hooks as plain functions: `Some` for a component linked
    /// with the direct linker whose instances need no fiber.
    direct: Option<DirectIndices>,
}

struct DirectIndices {
    request: Option<direct::request_hooks::GuestIndices>,
    response: Option<direct::response_hooks::GuestIndices>,
}

pub struct LoadedPlugin {
    pub spec: Arc<PluginSpec>,
    /// sha256 of the component, hex.
    pub hash: String,
    /// The compiled code came from the on-disk cache.
    pub from_cache: bool,
    /// Which compiler made the code.
    pub compiler: Compiler,
    /// The hooks `init` declared and the component exports.
    pub hooks: Hooks,
    /// The component exports the WebSocket hooks (0.2.1).
    pub websocket: bool,
    /// The engine that compiled the code: its stores run it.
    engine: Engine,
    pre: InstancePre<State>,
    indices: Indices,
    /// Idle instances: a lock-free queue, so flows on different workers
    /// never wait on each other to get one.
    pool: ArrayQueue<Pooled>,
    /// Call times and traps, when metrics are on.
    metrics: Option<crate::metrics::PluginMetrics>,
    /// Answers the plugin let the host reuse.
    pub memo: super::memo::Memo,
    /// When this version was loaded (µs since the epoch) and how long its
    /// load took.
    pub loaded_at: i64,
    pub load_ms: u64,
}

/// A plugin's component as read from its file (or the binary, for a
/// built-in), with its sha256.
pub struct Source {
    bytes: Cow<'static, [u8]>,
    pub hash: String,
    /// When reading began: a load's time counts from there.
    read_at: Instant,
}

impl Source {
    /// Reads the component of `spec` (creating the dirs of a built-in).
    /// The error is one sentence naming the file.
    pub async fn read(spec: &PluginSpec) -> Result<Self, String> {
        let read_at = Instant::now();
        let path = spec.path.clone();
        let builtin = spec.builtin;
        let dirs = spec.dirs.clone();
        // 18 MB of Python component take a while to read and hash.
        tokio::task::spawn_blocking(move || {
            if builtin.is_some() {
                // The cache dir of built-in plugins is theirs to create.
                for (_, dir) in &dirs {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
                }
            }
            let bytes = match builtin {
                Some(bytes) => Cow::Borrowed(bytes),
                None => Cow::Owned(std::fs::read(&path).map_err(|e| {
                    format!("cannot read plugin {path:?}: {e} (check --plugin or [[plugin]].path)")
                })?),
            };
            let hash = content_hash(&bytes);
            Ok(Self {
                bytes,
                hash,
                read_at,
            })
        })
        .await
        .map_err(|e| format!("plugin load aborted: {e}"))?
    }
}

/// A version just loaded.
pub struct Loaded {
    pub plugin: LoadedPlugin,
    /// When the version runs Winch's code: its component, for cranelift to
    /// compile in the background (`optimise.rs`).
    pub optimise: Option<Source>,
}

impl LoadedPlugin {
    /// Reads, compiles (or loads from cache), links and initialises the
    /// plugin of `spec`. The error is one sentence naming the file.
    pub async fn load(engine: &Arc<PluginEngine>, spec: Arc<PluginSpec>) -> Result<Loaded, String> {
        let source = Source::read(&spec).await?;
        Self::from_source(engine, spec, source).await
    }

    /// Compiles (or loads from cache), links and initialises `source` as
    /// the plugin of `spec`, with the code that can serve soonest.
    pub async fn from_source(
        engine: &Arc<PluginEngine>,
        spec: Arc<PluginSpec>,
        source: Source,
    ) -> Result<Loaded, String> {
        let started = source.read_at;
        let path = spec.path.clone();
        let compiler = engine.clone();
        // Compiling is heavy (seconds for large components): off the async
        // workers.
        let (linked, source) = tokio::task::spawn_blocking(move || {
            let compiled = compiler.compile_soonest(&source.bytes, &source.hash);
            let linked = link(compiled, &source.hash, &path);
            (linked, source)
        })
        .await
        .map_err(|e| format!("plugin load aborted: {e}"))?;
        let linked = linked?;
        let winch = linked.compiler == Compiler::Winch;
        let mut plugin = Self::from_linked(spec, linked).await?;
        plugin.load_ms = elapsed_ms(started);
        Ok(Loaded {
            plugin,
            optimise: winch.then_some(source),
        })
    }

    /// The plugin of `spec` with cranelift's code for `source`, compiled in
    /// the background (for a version first served with Winch's code).
    pub async fn optimised(
        engine: &Arc<PluginEngine>,
        spec: Arc<PluginSpec>,
        source: Source,
    ) -> Result<Self, String> {
        let path = spec.path.clone();
        let compiler = engine.clone();
        let linked = tokio::task::spawn_blocking(move || {
            compiler.in_background(|| {
                let compiled = compiler.compile_optimised(&source.bytes, &source.hash);
                link(compiled, &source.hash, &path)
            })
        })
        .await
        .map_err(|e| format!("plugin load aborted: {e}"))??;
        Self::from_linked(spec, linked).await
    }

    /// Whether `on-request` and `on-response` are called without a fiber
    /// (the component imports nothing that waits: `direct_io.rs`).
    pub fn direct(&self) -> bool {
        self.indices.direct.is_some()
    }

    /// `baseline` for Winch's code, `optimised` for cranelift's (web UI).
    pub fn code(&self) -> &'static str {
        match self.compiler {
            Compiler::Winch => "baseline",
            Compiler::Cranelift => "optimised",
        }
    }

    /// Calls by hook: (hook, count, total µs), when metrics are on.
    pub fn call_totals(&self) -> Option<Vec<(&'static str, u64, u64)>> {
        let metrics = self.metrics.as_ref()?;
        Some(
            crate::metrics::HOOKS
                .iter()
                .zip(&metrics.calls)
                .map(|(hook, histogram)| {
                    let (count, nanos) = histogram.totals();
                    (*hook, count, nanos / 1000)
                })
                .collect(),
        )
    }

    async fn from_linked(
        spec: Arc<PluginSpec>,
        Linked {
            engine,
            pre,
            indices,
            hash,
            cached,
            compiler,
        }: Linked,
    ) -> Result<Self, String> {
        let path = spec.path.clone();
        let spec_name = spec.name.clone();
        let mut plugin = Self {
            spec,
            hash,
            from_cache: cached,
            compiler,
            hooks: Hooks::empty(),
            websocket: false,
            engine,
            pre,
            indices,
            pool: ArrayQueue::new(POOL_SIZE),
            metrics: crate::metrics::get().map(|m| m.plugin(&spec_name)),
            memo: Default::default(),
            loaded_at: crate::flows::now_micros(),
            load_ms: 0,
        };
        // Imports that never wait are not proof enough: an instance made
        // synchronously is (wasmtime refuses one that needs async).
        if plugin.indices.direct.is_some() {
            let mut store = plugin.new_store()?;
            store.set_epoch_deadline(plugin.init_deadline());
            if let Err(e) = plugin.pre.instantiate(&mut store) {
                tracing::debug!(
                    "plugin {spec_name} is called through a fiber: {}",
                    describe(&e)
                );
                plugin.indices.direct = None;
            }
        }
        let (first, declared) = plugin
            .instantiate()
            .await
            .map_err(|e| format!("{path:?}: {e}"))?;
        let mut available = Hooks::empty();
        if first.guests.request.is_some() {
            available |= Hooks::ON_REQUEST | Hooks::ON_REQUEST_BODY;
        }
        if first.guests.response.is_some() {
            available |= Hooks::ON_RESPONSE | Hooks::ON_RESPONSE_BODY;
        }
        if first.guests.error.is_some() {
            available |= Hooks::ON_ERROR;
        }
        plugin.hooks = declared & available;
        plugin.websocket = first.guests.websocket.is_some();
        let _ = plugin.pool.push(first);
        Ok(plugin)
    }

    fn new_store(&self) -> Result<Store<State>, String> {
        let spec = &self.spec;
        let mut wasi = WasiCtxBuilder::new();
        // No environment, arguments, sockets or name lookups: only the
        // granted directories, clocks, random and stderr (guest panics).
        wasi.inherit_stderr();
        // Plugin file access is small reads and stats of page-cached files:
        // run it on the calling worker instead of a blocking-pool round trip.
        wasi.allow_blocking_current_thread(true);
        for (guest, host) in &spec.dirs {
            wasi.preopened_dir(host, guest, FsPerms::ReadWrite)
                .map_err(|e| format!("cannot grant directory {host:?} as {guest:?}: {e}"))?;
        }
        let state = State {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(spec.limits.memory_bytes)
                .trap_on_grow_failure(true)
                .build(),
            plugin: spec.name.clone(),
            heads: Lent {
                credentials: spec.credentials,
                ..Lent::default()
            },
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limits);
        store.epoch_deadline_trap();
        Ok(store)
    }

    /// The epoch deadline of instantiation and `init`, which may do real
    /// work (interpreters start up): more than a hook call, but not forever.
    fn init_deadline(&self) -> u64 {
        ticks((self.spec.limits.call * 50).max(std::time::Duration::from_secs(10)))
    }

    /// A new instance, initialised with the plugin's config.
    async fn instantiate(&self) -> Result<(Pooled, Hooks), String> {
        let mut store = self.new_store()?;
        store.set_epoch_deadline(self.init_deadline());
        let fail = |e: wasmtime::Error, what: &str| self.explain(e, what);
        let instance = self
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| fail(e, "instantiation"))?;
        let lifecycle = self
            .indices
            .lifecycle
            .load(&mut store, &instance)
            .map_err(|e| fail(e, "init"))?;
        let hooks = lifecycle
            .call_init(&mut store, &self.spec.config_json)
            .await
            .map_err(|e| fail(e, "init"))?
            .map_err(|e| format!("plugin {} refused its config: {e}", self.spec.name))?;
        let direct = self.indices.direct.as_ref();
        let guests = Guests {
            request: self
                .indices
                .request
                .as_ref()
                .and_then(|i| i.load(&mut store, &instance).ok()),
            response: self
                .indices
                .response
                .as_ref()
                .and_then(|i| i.load(&mut store, &instance).ok()),
            error: self
                .indices
                .error
                .as_ref()
                .and_then(|i| i.load(&mut store, &instance).ok()),
            websocket: self
                .indices
                .websocket
                .as_ref()
                .and_then(|i| i.load(&mut store, &instance).ok()),
            direct_request: direct
                .and_then(|d| d.request.as_ref())
                .and_then(|i| i.load(&mut store, &instance).ok()),
            direct_response: direct
                .and_then(|d| d.response.as_ref())
                .and_then(|i| i.load(&mut store, &instance).ok()),
        };
        Ok((
            Pooled {
                store,
                guests,
                calls: 0,
            },
            hooks,
        ))
    }

    /// An instance for one call, with the call deadline armed.
    async fn checkout(&self) -> Result<Pooled, String> {
        let pooled = self.pool.pop();
        let mut pooled = match pooled {
            Some(pooled) => pooled,
            None => self.instantiate().await?.0,
        };
        pooled
            .store
            .set_epoch_deadline(ticks(self.spec.limits.call));
        Ok(pooled)
    }

    /// Returns an instance after a call: kept if it succeeded, dropped (with
    /// the reason) if it trapped, timed out or hit its memory cap.
    /// `call` is the hook's index in [`crate::metrics::HOOKS`] and when the
    /// call began (metrics only).
    fn checkin<R>(
        &self,
        mut pooled: Pooled,
        result: wasmtime::Result<R>,
        call: (usize, Option<Instant>),
    ) -> Result<R, String> {
        if let (Some(metrics), (hook, Some(started))) = (&self.metrics, call) {
            metrics.calls[hook].observe(started.elapsed());
            if result.is_err() {
                metrics.traps.inc();
            }
        }
        match result {
            Ok(value) => {
                pooled.calls += 1;
                if pooled.calls < RECYCLE_AFTER {
                    // A full pool drops the instance.
                    let _ = self.pool.push(pooled);
                }
                Ok(value)
            }
            Err(error) => Err(self.explain(error, "call")),
        }
    }

    /// One hook call: an instance checked out, the flow's heads lent to it
    /// for the call and taken back, the instance checked in. `hook` is the
    /// index in [`crate::metrics::HOOKS`].
    async fn call<R>(
        &self,
        hook: usize,
        client: SocketAddr,
        request: &mut impl Lend,
        mut response: Option<&mut http::response::Parts>,
        call: impl AsyncFnOnce(&Guests, &mut Store<State>) -> wasmtime::Result<R>,
    ) -> Result<R, String> {
        let started = self.metrics.as_ref().map(|_| Instant::now());
        let mut pooled = self.checkout().await?;
        let lent = &mut pooled.store.data_mut().heads;
        lent.client = Some(client);
        request.swap(lent);
        if let Some(response) = response.as_deref_mut() {
            response.swap(lent);
        }
        let result = call(&pooled.guests, &mut pooled.store).await;
        let lent = &mut pooled.store.data_mut().heads;
        request.swap(lent);
        if let Some(response) = response {
            response.swap(lent);
        }
        let fields = lent.take_fields();
        if let (Some(metrics), 1..) = (&self.metrics, fields) {
            metrics.fields.inc_by(fields);
        }
        self.checkin(pooled, result, (hook, started))
    }

    pub async fn on_request(
        &self,
        flow: &Flow,
        request: &mut impl Lend,
    ) -> Result<RequestAction, String> {
        let info = flow.info;
        self.call(0, flow.client, request, None, async |guests, store| match (
            &guests.direct_request,
            &guests.request,
        ) {
            (Some(g), _) => g.call_on_request(store, info, request_handle()),
            (None, Some(g)) => g.call_on_request(store, info, request_handle()).await,
            (None, None) => Ok(RequestAction::Continue(Vec::new())),
        })
        .await
    }

    pub async fn on_request_body(
        &self,
        flow: &Flow,
        request: &mut impl Lend,
        body: &[u8],
    ) -> Result<RequestBodyAction, String> {
        let info = flow.info;
        self.call(
            1,
            flow.client,
            request,
            None,
            async |guests, store| match &guests.request {
                Some(g) => {
                    g.call_on_request_body(store, info, request_handle(), body)
                        .await
                }
                None => Ok(RequestBodyAction::Continue),
            },
        )
        .await
    }

    pub async fn on_response(
        &self,
        flow: &Flow,
        request: &mut RequestView,
        response: &mut http::response::Parts,
    ) -> Result<ResponseAction, String> {
        let info = flow.info;
        self.call(
            2,
            flow.client,
            request,
            Some(response),
            async |guests, store| match (&guests.direct_response, &guests.response) {
                (Some(g), _) => {
                    g.call_on_response(store, info, request_handle(), response_handle())
                }
                (None, Some(g)) => {
                    g.call_on_response(store, info, request_handle(), response_handle())
                        .await
                }
                (None, None) => Ok(ResponseAction::Continue(Vec::new())),
            },
        )
        .await
    }

    pub async fn on_response_body(
        &self,
        flow: &Flow,
        request: &mut RequestView,
        response: &mut http::response::Parts,
        body: &[u8],
    ) -> Result<ResponseBodyAction, String> {
        let info = flow.info;
        self.call(
            3,
            flow.client,
            request,
            Some(response),
            async |guests, store| match &guests.response {
                Some(g) => {
                    g.call_on_response_body(store, info, request_handle(), response_handle(), body)
                        .await
                }
                None => Ok(ResponseBodyAction::Continue),
            },
        )
        .await
    }

    pub async fn on_error(
        &self,
        flow: &Flow,
        request: &mut RequestView,
        error: &UpstreamError,
    ) -> Result<Option<Response>, String> {
        let info = flow.info;
        self.call(
            4,
            flow.client,
            request,
            None,
            async |guests, store| match &guests.error {
                Some(g) => g.call_on_error(store, info, request_handle(), error).await,
                None => Ok(None),
            },
        )
        .await
    }

    /// Whether this plugin wants the messages of the WebSocket `request`
    /// asks for.
    pub async fn on_websocket_open(
        &self,
        flow: &Flow,
        request: &mut impl Lend,
    ) -> Result<bool, String> {
        let info = flow.info;
        self.call(
            5,
            flow.client,
            request,
            None,
            async |guests, store| match &guests.websocket {
                Some(g) => {
                    g.call_on_websocket_open(store, info, request_handle())
                        .await
                }
                None => Ok(false),
            },
        )
        .await
    }

    /// What becomes of one message of a WebSocket this plugin wanted.
    pub async fn on_websocket_message(
        &self,
        flow: &Flow,
        message: &Message,
    ) -> Result<MessageDecision, String> {
        let info = flow.info;
        self.call(
            6,
            flow.client,
            &mut NoHead,
            None,
            async |guests, store| match &guests.websocket {
                Some(g) => g.call_on_websocket_message(store, info, message).await,
                None => Ok(MessageDecision {
                    action: MessageAction::Pass,
                    inject: Vec::new(),
                }),
            },
        )
        .await
    }

    fn explain(&self, error: wasmtime::Error, what: &str) -> String {
        let name = &self.spec.name;
        if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
            return format!(
                "plugin {name} exceeded its time limit of {} ms ({what})",
                self.spec.limits.call.as_millis()
            );
        }
        let text = describe(&error);
        if text.contains("growing memory") || text.contains("memory allocation") {
            return format!(
                "plugin {name} exceeded its memory limit of {} MiB ({what}): {text}",
                self.spec.limits.memory_bytes >> 20
            );
        }
        format!("plugin {name} failed ({what}): {text}")
    }
}

/// A compiled and linked component, ready to instantiate.
struct Linked {
    /// The engine that compiled it.
    engine: Engine,
    pre: InstancePre<State>,
    /// The hook interfaces it exports.
    indices: Indices,
    hash: String,
    /// Whether the compiled code came from the on-disk cache.
    cached: bool,
    compiler: Compiler,
}

/// Links compiled code (or says why the file could not be compiled) with
/// the linker of the engine that compiled it.
fn link(compiled: Result<Compiled<'_>, String>, hash: &str, path: &Path) -> Result<Linked, String> {
    let Compiled {
        component,
        runtime,
        compiler,
        from_cache,
    } = compiled.map_err(|e| format!("{path:?} is not a usable WebAssembly component: {e}"))?;
    check_wit_version(&runtime.engine, &component, path)?;
    let misfit = |e: wasmtime::Error| {
        format!(
            "{path:?} does not fit the proxlet:plugin world: {}",
            describe(&e)
        )
    };
    // A component that imports no filesystem and no sockets is linked so
    // that its hot hooks can be called without a fiber.
    let world = component.component_type();
    let direct = direct_imports(world.imports(&runtime.engine).map(|(name, _)| name));
    let linker = match direct {
        true => &runtime.direct_linker,
        false => &runtime.linker,
    };
    let pre = linker.instantiate_pre(&component).map_err(misfit)?;
    let indices = Indices {
        lifecycle: lifecycle::GuestIndices::new(&pre).map_err(misfit)?,
        request: request_hooks::GuestIndices::new(&pre).ok(),
        response: response_hooks::GuestIndices::new(&pre).ok(),
        error: error_hooks::GuestIndices::new(&pre).ok(),
        websocket: websocket_hooks::GuestIndices::new(&pre).ok(),
        direct: direct.then(|| DirectIndices {
            request: direct::request_hooks::GuestIndices::new(&pre).ok(),
            response: direct::response_hooks::GuestIndices::new(&pre).ok(),
        }),
    };
    Ok(Linked {
        engine: runtime.engine.clone(),
        pre,
        indices,
        hash: hash.to_owned(),
        cached: from_cache,
        compiler,
    })
}

/// The version of `wit/` this host implements.
pub const WIT_VERSION: &str = "0.2.1";

/// What must match for a plugin to fit: the major version, or `0.MINOR`
/// before 1.0 (semver: minor releases of 0.x may break).
fn compatibility(version: &str) -> &str {
    let mut parts = version.splitn(3, '.');
    let major = parts.next().unwrap_or_default();
    match (major, parts.next()) {
        ("0", Some(minor)) => &version[..major.len() + 1 + minor.len()],
        _ => major,
    }
}

/// Refuses a component whose `proxlet:plugin` imports or exports name an
/// incompatible version, naming both, before linking would fail obscurely.
fn check_wit_version(
    engine: &Engine,
    component: &wasmtime::component::Component,
    path: &Path,
) -> Result<(), String> {
    let ty = component.component_type();
    let names = ty
        .imports(engine)
        .map(|(name, _)| name)
        .chain(ty.exports(engine).map(|(name, _)| name));
    for name in names {
        let Some(version) = name
            .strip_prefix("proxlet:plugin/")
            .and_then(|rest| rest.split_once('@'))
            .map(|(_, version)| version)
        else {
            continue;
        };
        if compatibility(version) != compatibility(WIT_VERSION) {
            return Err(format!(
                "{path:?} was built for proxlet:plugin@{version}, but this proxlet implements proxlet:plugin@{WIT_VERSION}: rebuild the plugin against this proxlet's wit/ (compatible versions: {}.x)",
                compatibility(WIT_VERSION)
            ));
        }
    }
    Ok(())
}

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Epoch ticks for `limit`, at least one.
fn ticks(limit: std::time::Duration) -> u64 {
    (limit.as_micros() / TICK.as_micros()).max(1) as u64 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_version_is_the_wit_package_version() {
        let world = include_str!("../../../wit/world.wit");
        assert!(world.contains(&format!("package proxlet:plugin@{WIT_VERSION};")));
    }

    #[test]
    fn compatibility_follows_semver() {
        assert_eq!(compatibility("0.1.0"), "0.1");
        assert_eq!(compatibility("0.1.7"), "0.1");
        assert_eq!(compatibility("0.2.0"), "0.2");
        assert_eq!(compatibility("1.4.2"), "1");
        assert_eq!(compatibility("2.0.0"), "2");
    }
}
