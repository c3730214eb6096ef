//! The wasmtime engines of the process and their linkers (WASI p2 subset and
//! the `host` interface), the epoch ticker behind call deadlines, and the
//! on-disk cache of compiled components keyed by content hash (with, below
//! it, the per-function cache that makes recompiling an edited component
//! cheap). Cranelift makes the code that serves and is cached; Winch,
//! wasmtime's baseline compiler, makes code for large components that are
//! not cached yet, to serve within a second or two while cranelift works.

use std::{
    fs,
    os::unix::fs::{DirBuilderExt, MetadataExt},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, OnceLock,
    },
    time::{Duration, Instant},
};

use sha2::{Digest, Sha256};
use wasmtime::{
    component::{Component, HasSelf, Linker, Resource, ResourceTable},
    Config, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig, StoreLimits,
    Strategy,
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::{
    bindings,
    function_cache::FunctionCache,
    heads::{Lent, RequestHandle, ResponseHandle},
    PluginError,
};

/// Epoch granularity: call deadlines are whole ticks.
pub const TICK: Duration = Duration::from_millis(2);

/// Instance slots of the pooling allocator, across all plugins (per engine).
const POOL_INSTANCES: u32 = 512;

/// The nice value of background compile threads.
const BACKGROUND_NICE: i32 = 10;

/// What a store of a plugin instance carries.
pub struct State {
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    pub limits: StoreLimits,
    pub plugin: Arc<str>,
    /// The flow's heads while a hook runs.
    pub heads: Lent,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl bindings::types::Host for State {}

/// The accessors of `request-head`: the guest's handle names the request
/// this call lent (there is one), so its value is not looked at.
impl bindings::types::HostRequestHead for State {
    fn method(&mut self, _: Resource<RequestHandle>) -> String {
        self.heads.request.method.as_str().to_owned()
    }

    fn url(&mut self, _: Resource<RequestHandle>) -> String {
        self.heads.request.uri.to_string()
    }

    fn scheme(&mut self, _: Resource<RequestHandle>) -> String {
        self.heads
            .request
            .uri
            .scheme_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn authority(&mut self, _: Resource<RequestHandle>) -> String {
        let authority = self.heads.request.uri.authority();
        authority.map(|a| a.as_str().to_owned()).unwrap_or_default()
    }

    fn path(&mut self, _: Resource<RequestHandle>) -> String {
        let path = self.heads.request.uri.path_and_query();
        path.map_or("/", |p| p.as_str()).to_owned()
    }

    fn header(&mut self, _: Resource<RequestHandle>, name: String) -> Option<Vec<u8>> {
        self.heads.header(false, &name)
    }

    fn header_all(&mut self, _: Resource<RequestHandle>, name: String) -> Vec<Vec<u8>> {
        self.heads.header_all(false, &name)
    }

    fn has_header(&mut self, _: Resource<RequestHandle>, name: String) -> bool {
        self.heads.has_header(false, &name)
    }

    fn headers(&mut self, _: Resource<RequestHandle>) -> bindings::types::Headers {
        self.heads.headers(false)
    }

    fn client(&mut self, _: Resource<RequestHandle>) -> String {
        self.heads.client.map(|c| c.to_string()).unwrap_or_default()
    }

    fn drop(&mut self, _: Resource<RequestHandle>) -> wasmtime::Result<()> {
        // Only borrows are handed out; the heads go back after the call.
        Ok(())
    }
}

impl bindings::types::HostResponseHead for State {
    fn status(&mut self, _: Resource<ResponseHandle>) -> u16 {
        self.heads.status.as_u16()
    }

    fn header(&mut self, _: Resource<ResponseHandle>, name: String) -> Option<Vec<u8>> {
        self.heads.header(true, &name)
    }

    fn header_all(&mut self, _: Resource<ResponseHandle>, name: String) -> Vec<Vec<u8>> {
        self.heads.header_all(true, &name)
    }

    fn has_header(&mut self, _: Resource<ResponseHandle>, name: String) -> bool {
        self.heads.has_header(true, &name)
    }

    fn headers(&mut self, _: Resource<ResponseHandle>) -> bindings::types::Headers {
        self.heads.headers(true)
    }

    fn drop(&mut self, _: Resource<ResponseHandle>) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl bindings::proxlet::plugin::host::Host for State {
    fn log(&mut self, level: bindings::types::Level, message: String) {
        use bindings::types::Level;
        let plugin = &*self.plugin;
        let message = log_safe(&message);
        if let Some(events) = crate::web::events() {
            let name = match level {
                Level::Trace => "trace",
                Level::Debug => "debug",
                Level::Info => "info",
                Level::Warn => "warn",
                Level::Error => "error",
            };
            events.log(name, plugin, &message);
        }
        match level {
            Level::Trace => tracing::trace!(target: "proxlet::plugin", plugin, "{message}"),
            Level::Debug => tracing::debug!(target: "proxlet::plugin", plugin, "{message}"),
            Level::Info => tracing::info!(target: "proxlet::plugin", plugin, "{message}"),
            Level::Warn => tracing::warn!(target: "proxlet::plugin", plugin, "{message}"),
            Level::Error => tracing::error!(target: "proxlet::plugin", plugin, "{message}"),
        }
    }
}

/// The longest plugin log message kept whole.
const LOG_MESSAGE_MAX: usize = 8 * 1024;

/// A plugin's log message as one log line: trailing whitespace dropped,
/// control characters (a forged second line, terminal escapes) escaped,
/// and cut at [`LOG_MESSAGE_MAX`] bytes.
fn log_safe(message: &str) -> std::borrow::Cow<'_, str> {
    let message = message.trim_end();
    let clean =
        message.len() <= LOG_MESSAGE_MAX && !message.chars().any(|c| c.is_control() && c != '\t');
    if clean {
        return message.into();
    }
    let mut end = message.len().min(LOG_MESSAGE_MAX);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let mut line = String::with_capacity(end + 32);
    for c in message[..end].chars() {
        if c.is_control() && c != '\t' {
            line.extend(c.escape_default());
        } else {
            line.push(c);
        }
    }
    if end < message.len() {
        line.push_str(&format!(" …({} bytes more)", message.len() - end));
    }
    line.into()
}

/// Which compiler made a plugin version's machine code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compiler {
    /// Cranelift: optimised code, the kind that is cached on disk.
    Cranelift,
    /// Winch, wasmtime's baseline compiler: compiles several times faster,
    /// runs slower; serves only until cranelift's code is ready.
    Winch,
}

/// An engine and the linker holding the host functions for it (a component
/// is linked and run with the engine that compiled it).
pub struct Runtime {
    pub engine: Engine,
    pub linker: Linker<State>,
    /// The same with `wasi:io`'s blocking functions as plain functions
    /// (`direct_io.rs`), for components called without a fiber.
    pub direct_linker: Linker<State>,
}

/// Code for a component, and where it came from.
pub struct Compiled<'a> {
    pub component: Component,
    /// The runtime whose engine made (or loaded) the code.
    pub runtime: &'a Runtime,
    pub compiler: Compiler,
    /// The code came from the on-disk cache.
    pub from_cache: bool,
}

/// Components this size or larger that are not in the cache are compiled
/// with Winch first. Below it cranelift takes under a second (about 1 ms
/// per KB on two cores) and Winch's fixed costs (its engine, trampolines)
/// leave little to gain: a second compile would be waste.
pub const WINCH_MIN_BYTES: usize = 1 << 20;

/// Overrides [`WINCH_MIN_BYTES`] (a byte count; 0 sends every uncached
/// component through Winch, a huge one none).
pub const WINCH_MIN_BYTES_ENV: &str = "PROXLET_WINCH_MIN_BYTES";

/// Set to 1, plugins' machine code is listed for `perf` (a perf map).
pub const PERF_MAP_ENV: &str = "PROXLET_PERF_MAP";

pub struct PluginEngine {
    /// Cranelift's engine: the code that keeps serving.
    pub main: Runtime,
    /// Winch's engine, made on first use; `None` if it cannot be.
    winch: OnceLock<Option<Runtime>>,
    /// Components smaller than this skip Winch.
    winch_min_bytes: usize,
    /// Threads of lowered priority for compiles nobody waits for.
    background: OnceLock<Option<rayon::ThreadPool>>,
    cache_dir: Option<PathBuf>,
    /// The WARN about an unsafe cache dir has been logged.
    cache_warned: AtomicBool,
    /// Code of single functions, when compiled code is cached at all.
    functions: Option<Arc<FunctionCache>>,
}

/// The settings both engines share: epoch deadlines, the component model,
/// and the pooling allocator (memory caps are the stores' `StoreLimits`).
fn config(strategy: Strategy) -> Config {
    let mut config = Config::new();
    config.strategy(strategy);
    config.epoch_interruption(true);
    config.wasm_component_model(true);
    // Pooling keeps memories, tables and the fiber stacks of async calls
    // warm: a hook call then costs no mmap, and instantiation ~10 µs.
    // Limits are generous for interpreter-based guests (Python, JS);
    // per-plugin memory caps are StoreLimits.
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(POOL_INSTANCES)
        .total_core_instances(POOL_INSTANCES * 4)
        .total_memories(POOL_INSTANCES * 2)
        .total_tables(POOL_INSTANCES * 4)
        .total_stacks(POOL_INSTANCES)
        .max_memories_per_module(2)
        .max_tables_per_module(4)
        .table_elements(200_000)
        .max_component_instance_size(16 << 20)
        .max_core_instance_size(16 << 20);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    // `PROXLET_PERF_MAP=1` writes /tmp/perf-PID.map, so `perf` names the
    // guests' functions (bench/profile.sh).
    if std::env::var_os(PERF_MAP_ENV).is_some_and(|v| v == "1") {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    config
}

/// Winch's settings: [`config`]'s, with cranelift (which makes the
/// trampolines between host and guest for Winch) not optimising either:
/// the Python example then compiles in 20 % less time.
fn winch_config() -> Config {
    let mut config = config(Strategy::Winch);
    config.cranelift_opt_level(OptLevel::None);
    config
}

impl Runtime {
    /// The engine of `config` with its linker, and a thread advancing its
    /// epoch every [`TICK`] for as long as the engine lives.
    fn new(mut config: Config, what: &str) -> Result<Self, wasmtime::Error> {
        let engine = match Engine::new(&config) {
            Ok(engine) => engine,
            Err(e) => {
                // E.g. a small address-space limit: fall back to on-demand.
                tracing::warn!(
                    "pooling allocator unavailable for the {what} engine ({}); allocating on demand",
                    describe(&e)
                );
                config.allocation_strategy(InstanceAllocationStrategy::OnDemand);
                Engine::new(&config)?
            }
        };
        let mut linker = Linker::new(&engine);
        add_host_functions(&mut linker)?;
        let mut direct_linker = linker.clone();
        super::direct_io::shadow(&mut direct_linker)?;
        let ticker = engine.weak();
        std::thread::Builder::new()
            .name(format!("proxlet-epoch-{what}"))
            .spawn(move || loop {
                std::thread::sleep(TICK);
                match ticker.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            })?;
        Ok(Self {
            engine,
            linker,
            direct_linker,
        })
    }
}

/// What a plugin may import: WASI p2 (as `State` limits it) and the
/// `proxlet:plugin/host` interface. Both engines' linkers get exactly this.
fn add_host_functions(linker: &mut Linker<State>) -> Result<(), wasmtime::Error> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    bindings::PluginWebsocket::add_to_linker::<State, HasSelf<State>>(linker, |s| s)
}

/// The size threshold for Winch: [`WINCH_MIN_BYTES_ENV`] when set to a
/// number, else [`WINCH_MIN_BYTES`].
fn winch_min_bytes(setting: Option<&str>) -> usize {
    let Some(setting) = setting else {
        return WINCH_MIN_BYTES;
    };
    match setting.trim().parse() {
        Ok(bytes) => bytes,
        Err(_) => {
            tracing::warn!(
                "ignoring {WINCH_MIN_BYTES_ENV}={setting:?}: not a number of bytes; \
                 using {WINCH_MIN_BYTES}"
            );
            WINCH_MIN_BYTES
        }
    }
}

impl PluginEngine {
    /// The engine; compiled code is cached in `cache_dir` when given.
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Arc<Self>, PluginError> {
        let threshold = winch_min_bytes(std::env::var(WINCH_MIN_BYTES_ENV).ok().as_deref());
        Self::with_winch_threshold(cache_dir, threshold)
    }

    /// [`PluginEngine::new`], with components of `winch_min_bytes` or more
    /// compiled with Winch first.
    pub(super) fn with_winch_threshold(
        cache_dir: Option<PathBuf>,
        winch_min_bytes: usize,
    ) -> Result<Arc<Self>, PluginError> {
        let mut main = config(Strategy::Cranelift);
        // An edit of a Python or JavaScript plugin changes its script, not
        // the interpreter that makes up nearly all of the component: with
        // the code of unchanged functions reused, a reload compiles only
        // what changed.
        let functions = cache_dir
            .as_ref()
            .map(|_| Arc::new(FunctionCache::default()));
        if let Some(functions) = &functions {
            main.enable_incremental_compilation(functions.clone())
                .map_err(PluginError::engine)?;
        }
        let main = Runtime::new(main, "cranelift").map_err(PluginError::engine)?;
        if let Some(dir) = &cache_dir {
            let _ = fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir);
        }
        Ok(Arc::new(Self {
            main,
            winch: OnceLock::new(),
            winch_min_bytes,
            background: OnceLock::new(),
            cache_dir,
            cache_warned: AtomicBool::new(false),
            functions,
        }))
    }

    /// Winch's runtime, made on first use (the pool and the epoch thread
    /// cost nothing to a process that never needs them).
    pub(super) fn winch(&self) -> Option<&Runtime> {
        self.winch
            .get_or_init(|| match Runtime::new(winch_config(), "winch") {
                Ok(runtime) => Some(runtime),
                Err(e) => {
                    tracing::warn!(
                        "the baseline compiler (Winch) is unavailable ({}): large plugins are \
                         compiled with cranelift only",
                        describe(&e)
                    );
                    None
                }
            })
            .as_ref()
    }

    /// Code for `bytes` (sha256 `hash`) that can serve soonest: cached
    /// cranelift code; else, for a component of at least the Winch size
    /// threshold, Winch's; else cranelift's, compiled now and cached.
    pub fn compile_soonest(&self, bytes: &[u8], hash: &str) -> Result<Compiled<'_>, String> {
        if let Some(component) = self.cached(hash) {
            return Ok(self.optimised(component, true));
        }
        if bytes.len() >= self.winch_min_bytes {
            if let Some(runtime) = self.winch() {
                let started = Instant::now();
                match Component::from_binary(&runtime.engine, bytes) {
                    Ok(component) => {
                        tracing::debug!(
                            "Winch compiled component {} in {} ms",
                            &hash[..12],
                            started.elapsed().as_millis()
                        );
                        return Ok(Compiled {
                            component,
                            runtime,
                            compiler: Compiler::Winch,
                            from_cache: false,
                        });
                    }
                    // A feature Winch lacks (tail calls, exceptions, GC…),
                    // or a broken file: cranelift says which.
                    Err(e) => tracing::debug!(
                        "Winch cannot compile component {}: {}; using cranelift",
                        &hash[..12],
                        describe(&e)
                    ),
                }
            }
        }
        self.compile_optimised(bytes, hash)
    }

    /// Cranelift's code for `bytes` (sha256 `hash`): from the cache, or
    /// compiled now and stored in it.
    pub fn compile_optimised(&self, bytes: &[u8], hash: &str) -> Result<Compiled<'_>, String> {
        if let Some(component) = self.cached(hash) {
            return Ok(self.optimised(component, true));
        }
        let trusted = self.trusted_cache_dir();
        if let Some(functions) = &self.functions {
            functions.load(trusted);
            functions.take_reuse();
        }
        let started = Instant::now();
        let compiled = Component::from_binary(&self.main.engine, bytes).map_err(|e| describe(&e));
        if let Some(functions) = &self.functions {
            let reuse = functions.take_reuse();
            functions.save(trusted);
            let (held, bytes) = functions.held();
            tracing::debug!(
                "compiled component {} in {} ms, reusing the code of {} of {} functions \
                 ({held} functions, {} KiB of code kept)",
                &hash[..12],
                started.elapsed().as_millis(),
                reuse.hits,
                reuse.hits + reuse.misses,
                bytes >> 10,
            );
        }
        let component = compiled?;
        if let Some(path) = trusted.map(|dir| cache_file(dir, hash)) {
            if let Ok(compiled) = component.serialize() {
                if let Err(e) = crate::proxy::files::write_atomically(&path, &compiled, 0o600) {
                    tracing::debug!("cannot cache compiled code in {path:?}: {e}");
                }
            }
        }
        Ok(self.optimised(component, false))
    }

    fn optimised(&self, component: Component, from_cache: bool) -> Compiled<'_> {
        Compiled {
            component,
            runtime: &self.main,
            compiler: Compiler::Cranelift,
            from_cache,
        }
    }

    /// The compiled code cached for `hash`, if the cache is ours and holds it.
    fn cached(&self, hash: &str) -> Option<Component> {
        let path = cache_file(self.trusted_cache_dir()?, hash);
        match fs::metadata(&path) {
            Ok(meta) if private_to_us(&meta) => {
                // SAFETY: wasmtime runs this machine code as is. It was
                // written by `compile_optimised`: the file and its dir are
                // ours and no other user can write them (checked just now);
                // wasmtime checks engine compatibility.
                match unsafe { Component::deserialize_file(&self.main.engine, &path) } {
                    Ok(component) => return Some(component),
                    Err(e) => tracing::debug!("compiled cache {path:?} unusable: {e}"),
                }
            }
            Ok(_) => tracing::warn!(
                "ignoring compiled code {path:?}: another user owns it or can write it; \
                 compiling instead and replacing it"
            ),
            Err(_) => {}
        }
        None
    }

    /// Runs `work` (a compile nobody is waiting for) with its parallel
    /// compilation on threads of lowered priority (nice 10): a Winch
    /// compile of a newer edit, and the flows being served, come first.
    pub fn in_background<R: Send>(&self, work: impl FnOnce() -> R + Send) -> R {
        let pool = self.background.get_or_init(|| {
            let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|i| format!("proxlet-optimise-{i}"))
                // Linux: the nice value is per thread; this one only.
                .start_handler(|_| {
                    let _ = rustix::process::setpriority_process(None, BACKGROUND_NICE);
                })
                .build()
                .inspect_err(|e| tracing::debug!("no background compile threads: {e}"))
                .ok()
        });
        match pool {
            // wasmtime's parallel compilation runs on the pool it is called from.
            Some(pool) => pool.install(work),
            None => work(),
        }
    }

    /// The cache dir, if only we can write it: the code in it is run
    /// unchecked, so a dir another user can write is ignored (WARN once).
    fn trusted_cache_dir(&self) -> Option<&Path> {
        let dir = self.cache_dir.as_deref()?;
        let meta = fs::metadata(dir).ok()?;
        if private_to_us(&meta) {
            return Some(dir);
        }
        if !self.cache_warned.swap(true, Ordering::Relaxed) {
            let fix = if meta.uid() == crate::tls::current_uid() {
                format!("chmod 700 {}", dir.display())
            } else {
                format!(
                    "remove {} or chown it to uid {}",
                    dir.display(),
                    crate::tls::current_uid()
                )
            };
            tracing::warn!(
                "not using the compiled-code cache {dir:?}: it has mode {:04o} and owner uid {}, \
                 so another user could plant code in it; plugins are compiled at each load \
                 instead (fix: {fix})",
                meta.mode() & 0o7777,
                meta.uid(),
            );
        }
        None
    }
}

/// Where the compiled code of the component with sha256 `hash` is cached.
fn cache_file(dir: &Path, hash: &str) -> PathBuf {
    dir.join(format!(
        "{hash}-wasmtime{}.cwasm",
        env!("CARGO_PKG_VERSION")
    ))
}

/// Owned by the user running proxlet and not writable by group or others.
pub(super) fn private_to_us(meta: &fs::Metadata) -> bool {
    meta.uid() == crate::tls::current_uid() && meta.mode() & 0o022 == 0
}

/// The sha256 of a component, hex: the key of its compiled code.
pub fn content_hash(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One line for an error from wasmtime: its causes, without backtraces.
pub fn describe(error: &wasmtime::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in error.chain() {
        let line = cause.to_string();
        let line = line.lines().next().unwrap_or_default().trim();
        if line.is_empty() || line.contains("wasm backtrace") {
            continue;
        }
        if !parts.iter().any(|p| p.contains(line)) {
            parts.push(line.to_owned());
        }
    }
    if parts.is_empty() {
        return "unknown failure".to_owned();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_winch_threshold_is_a_byte_count_or_the_default() {
        assert_eq!(winch_min_bytes(None), WINCH_MIN_BYTES);
        assert_eq!(winch_min_bytes(Some("0")), 0);
        assert_eq!(winch_min_bytes(Some(" 1048576 ")), 1 << 20);
        assert_eq!(winch_min_bytes(Some("1M")), WINCH_MIN_BYTES);
    }

    /// `(module (func (export "spin") (loop (br 0))))`
    const SPIN: &[u8] = &[
        0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
        0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type: () -> ()
        0x03, 0x02, 0x01, 0x00, // function 0 of type 0
        0x07, 0x08, 0x01, 0x04, b's', b'p', b'i', b'n', 0x00, 0x00, // export "spin"
        0x0a, 0x09, 0x01, 0x07, 0x00, 0x03, 0x40, 0x0c, 0x00, 0x0b, 0x0b, // loop { br 0 }
    ];

    #[test]
    fn winch_code_is_cut_at_its_epoch_deadline_like_cranelift_code() {
        // Call deadlines (`limits.call_ms`) rest on epoch checks in loops
        // and function entries: Winch must emit them too.
        let engine = PluginEngine::with_winch_threshold(None, 0).unwrap();
        let winch = engine.winch().expect("Winch is available on this target");
        for runtime in [&engine.main, winch] {
            let module = wasmtime::Module::new(&runtime.engine, SPIN).unwrap();
            let mut store = wasmtime::Store::new(&runtime.engine, ());
            store.epoch_deadline_trap();
            store.set_epoch_deadline(5);
            let instance = wasmtime::Instance::new(&mut store, &module, &[]).unwrap();
            let spin = instance
                .get_typed_func::<(), ()>(&mut store, "spin")
                .unwrap();
            let started = Instant::now();
            let error = spin.call(&mut store, ()).unwrap_err();
            assert_eq!(
                error.downcast_ref::<wasmtime::Trap>(),
                Some(&wasmtime::Trap::Interrupt)
            );
            assert!(started.elapsed() < Duration::from_secs(5));
        }
    }

    #[test]
    fn plugin_log_messages_stay_one_line() {
        assert_eq!(log_safe("plain\tline\n"), "plain\tline");
        assert_eq!(
            log_safe("a\n2026-01-01 INFO forged\x1b[2J"),
            "a\\n2026-01-01 INFO forged\\u{1b}[2J"
        );
        let long = "é".repeat(LOG_MESSAGE_MAX);
        let cut = log_safe(&long);
        assert!(cut.starts_with("éé"));
        assert!(cut.ends_with(&format!(" …({} bytes more)", LOG_MESSAGE_MAX)));
    }
}
