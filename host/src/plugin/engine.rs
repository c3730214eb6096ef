//! The one wasmtime engine of the process, its linker (WASI p2 subset and the
//! `host` interface), the epoch ticker behind call deadlines, and the on-disk
//! cache of compiled components keyed by content hash (with, below it, the
//! per-function cache that makes recompiling an edited component cheap).

use std::{
    fs,
    os::unix::fs::{DirBuilderExt, MetadataExt},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use sha2::{Digest, Sha256};
use wasmtime::{
    component::{Component, HasSelf, Linker, Resource, ResourceTable},
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, StoreLimits,
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

/// Instance slots of the pooling allocator, across all plugins.
const POOL_INSTANCES: u32 = 512;

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

pub struct PluginEngine {
    pub engine: Engine,
    pub linker: Linker<State>,
    cache_dir: Option<PathBuf>,
    /// The WARN about an unsafe cache dir has been logged.
    cache_warned: AtomicBool,
    /// Code of single functions, when compiled code is cached at all.
    functions: Option<Arc<FunctionCache>>,
}

impl PluginEngine {
    /// The engine; compiled code is cached in `cache_dir` when given.
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Arc<Self>, PluginError> {
        let mut config = Config::new();
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
        // An edit of a Python or JavaScript plugin changes its script, not
        // the interpreter that makes up nearly all of the component: with
        // the code of unchanged functions reused, a reload compiles only
        // what changed.
        let functions = cache_dir
            .as_ref()
            .map(|_| Arc::new(FunctionCache::default()));
        if let Some(functions) = &functions {
            config
                .enable_incremental_compilation(functions.clone())
                .map_err(PluginError::engine)?;
        }
        let engine = match Engine::new(&config) {
            Ok(engine) => engine,
            Err(e) => {
                // E.g. a small address-space limit: fall back to on-demand.
                tracing::warn!(
                    "pooling allocator unavailable ({}); allocating on demand",
                    describe(&e)
                );
                config.allocation_strategy(InstanceAllocationStrategy::OnDemand);
                Engine::new(&config).map_err(PluginError::engine)?
            }
        };
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(PluginError::engine)?;
        bindings::PluginWebsocket::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)
            .map_err(PluginError::engine)?;

        let ticker = engine.weak();
        std::thread::Builder::new()
            .name("proxlet-epoch".into())
            .spawn(move || loop {
                std::thread::sleep(TICK);
                match ticker.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            })
            .map_err(|e| PluginError::engine(e.into()))?;
        if let Some(dir) = &cache_dir {
            let _ = fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir);
        }
        Ok(Arc::new(Self {
            engine,
            linker,
            cache_dir,
            cache_warned: AtomicBool::new(false),
            functions,
        }))
    }

    /// Compiles `bytes`, or loads the compiled code cached for its hash.
    /// Returns the component, its sha256 (hex) and whether the cache served it.
    pub fn compile(&self, bytes: &[u8]) -> Result<(Component, String, bool), String> {
        let hash = hex(&Sha256::digest(bytes));
        let trusted = self.trusted_cache_dir();
        let cached = trusted.map(|dir| {
            dir.join(format!(
                "{hash}-wasmtime{}.cwasm",
                env!("CARGO_PKG_VERSION")
            ))
        });
        if let Some(path) = cached.as_deref() {
            match fs::metadata(path) {
                Ok(meta) if private_to_us(&meta) => {
                    // SAFETY: wasmtime runs this machine code as is. It was
                    // written by `serialize` below: the file and its dir are
                    // ours and no other user can write them (checked just
                    // now); wasmtime checks engine compatibility.
                    match unsafe { Component::deserialize_file(&self.engine, path) } {
                        Ok(component) => return Ok((component, hash, true)),
                        Err(e) => tracing::debug!("compiled cache {path:?} unusable: {e}"),
                    }
                }
                Ok(_) => tracing::warn!(
                    "ignoring compiled code {path:?}: another user owns it or can write it; \
                     compiling instead and replacing it"
                ),
                Err(_) => {}
            }
        }
        if let Some(functions) = &self.functions {
            functions.load(trusted);
            functions.take_reuse();
        }
        let started = Instant::now();
        let compiled = Component::from_binary(&self.engine, bytes).map_err(|e| describe(&e));
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
        if let Some(path) = cached {
            if let Ok(compiled) = component.serialize() {
                if let Err(e) = crate::proxy::files::write_atomically(&path, &compiled, 0o600) {
                    tracing::debug!("cannot cache compiled code in {path:?}: {e}");
                }
            }
        }
        Ok((component, hash, false))
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

/// Owned by the user running proxlet and not writable by group or others.
pub(super) fn private_to_us(meta: &fs::Metadata) -> bool {
    meta.uid() == crate::tls::current_uid() && meta.mode() & 0o022 == 0
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
