//! Hot reload: a `notify` watcher on the directories of the plugin files and
//! of the config file (so editors that save by rename are seen too),
//! debounced. A changed plugin is compiled and initialised in the background
//! and swapped into its slot; a changed config re-reads the whole chain,
//! reusing the plugins it still names. Anything broken logs one error and
//! what was serving keeps serving.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use notify::{RecursiveMode, Watcher};

use super::{
    chain::{calls, compiled, Slot},
    instance::Source,
    optimise, Chain, LoadedPlugin, PluginEngine, PluginSpec,
};

/// Quiet time after the last file event before a reload starts.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// Re-reads the plugin specs from the config file.
pub type Resolver = Box<dyn Fn() -> Result<Vec<PluginSpec>, String> + Send + Sync>;

/// What makes the whole chain be re-read (by the resolver) rather than one
/// plugin reloaded.
pub struct Triggers {
    /// The config file whose `[[plugin]]` entries define the chain.
    pub config: Option<PathBuf>,
    /// The `--plugin-dir` whose `*.wasm` files join the chain.
    pub dir: Option<PathBuf>,
}

impl Triggers {
    fn fire<'a>(&self, changed: &'a BTreeSet<PathBuf>) -> Option<&'a Path> {
        changed.iter().find_map(|path| {
            let in_dir = self.dir.as_deref().is_some_and(|dir| {
                path.parent() == Some(dir) && path.extension().is_some_and(|e| e == "wasm")
            });
            (self.config.as_deref() == Some(path.as_path()) || in_dir).then_some(path.as_path())
        })
    }
}

/// Watches the plugin files of `chain` and the `triggers`, on which the
/// chain `resolve` gives replaces it. Runs until the process ends.
pub fn watch(
    chain: Arc<ArcSwap<Chain>>,
    engine: Arc<PluginEngine>,
    triggers: Triggers,
    resolve: Resolver,
) -> Result<(), String> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<PathBuf>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if event.kind.is_access() {
            return;
        }
        for path in event.paths {
            let _ = tx.send(path);
        }
    })
    .map_err(|e| format!("cannot watch plugin files: {e}"))?;
    let triggers = Triggers {
        config: triggers.config.map(|p| absolute(&p)),
        dir: triggers.dir.map(|d| d.canonicalize().unwrap_or(d)),
    };
    let mut watched = BTreeSet::new();
    let mut files: Vec<PathBuf> = chain
        .load()
        .slots
        .iter()
        .filter(|s| s.spec.builtin.is_none())
        .map(|s| absolute(&s.spec.path))
        .collect();
    files.extend(triggers.config.clone());
    files.extend(triggers.dir.as_ref().map(|d| d.join("*.wasm")));
    watch_dirs(&mut watcher, &mut watched, &files)?;

    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut changed = BTreeSet::from([first]);
            loop {
                match tokio::time::timeout(DEBOUNCE, rx.recv()).await {
                    Ok(Some(path)) => {
                        changed.insert(path);
                    }
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            if let Some(path) = triggers.fire(&changed) {
                if let Some(files) = reload_config(&chain, &engine, path, &resolve, &changed).await
                {
                    if let Err(e) = watch_dirs(&mut watcher, &mut watched, &files) {
                        tracing::error!("{e}");
                    }
                }
                continue;
            }
            let slots: Vec<Arc<Slot>> = chain.load().slots.clone();
            for slot in slots {
                if changed.contains(&absolute(&slot.spec.path)) {
                    reload_slot(&slot, &engine, false).await;
                }
            }
        }
    });
    Ok(())
}

fn watch_dirs(
    watcher: &mut notify::RecommendedWatcher,
    watched: &mut BTreeSet<PathBuf>,
    files: &[PathBuf],
) -> Result<(), String> {
    for dir in files.iter().filter_map(|f| f.parent()) {
        if watched.insert(dir.to_owned()) {
            watcher
                .watch(dir, RecursiveMode::NonRecursive)
                .map_err(|e| format!("cannot watch {dir:?}: {e}"))?;
        }
    }
    Ok(())
}

/// Loads the chain the config now names; plugins whose entry and file are
/// unchanged keep their loaded version. Returns the plugin files to watch.
async fn reload_config(
    chain: &ArcSwap<Chain>,
    engine: &Arc<PluginEngine>,
    path: &Path,
    resolve: &Resolver,
    changed: &BTreeSet<PathBuf>,
) -> Option<Vec<PathBuf>> {
    let started = Instant::now();
    let specs = match resolve() {
        Ok(specs) => specs,
        Err(e) => {
            let message = format!(
                "cannot reload the plugin chain after {} changed: {e}; the previous chain keeps serving",
                path.display()
            );
            tracing::error!("{message}");
            counted("config", false, None, &message);
            return None;
        }
    };
    let old = chain.load_full();
    let mut slots = Vec::with_capacity(specs.len());
    // Versions serving Winch's code, optimised once the chain is in place.
    let mut to_optimise = Vec::new();
    for spec in specs {
        let fingerprint = format!("{spec:?}");
        let reusable = old.slots.iter().find(|slot| {
            format!("{:?}", slot.spec) == fingerprint
                && !changed.contains(&absolute(&slot.spec.path))
        });
        // The same slot, so an optimised version on its way still lands in it.
        if let Some(slot) = reusable {
            slots.push(slot.clone());
            continue;
        }
        let plugin = match LoadedPlugin::load(engine, Arc::new(spec.clone())).await {
            Ok(loaded) => {
                let plugin = Arc::new(loaded.plugin);
                let message = format!(
                    "loaded plugin {} from {} (sha256 {}, {}){}",
                    spec.name,
                    spec.path.display(),
                    &plugin.hash[..12],
                    compiled(&plugin, loaded.optimise.is_some()),
                    calls(&plugin),
                );
                counted(&spec.name, true, Some(&plugin.hash), &message);
                if let Some(source) = loaded.optimise {
                    to_optimise.push((slots.len(), plugin.clone(), source));
                }
                plugin
            }
            Err(e) => {
                let message = format!(
                    "cannot reload the plugin chain after {} changed: {e}; the previous chain keeps serving",
                    path.display()
                );
                tracing::error!("{message}");
                counted(&spec.name, false, None, &message);
                return None;
            }
        };
        // A plugin the user disabled stays disabled across config reloads.
        let enabled = old
            .slots
            .iter()
            .find(|slot| slot.spec.name == spec.name)
            .is_none_or(|slot| slot.is_enabled());
        slots.push(Arc::new(Slot::new(Arc::new(spec), plugin, enabled)));
    }
    let names: Vec<&str> = slots.iter().map(|s| &*s.spec.name).collect();
    tracing::info!(
        "reloaded the plugin chain after {} changed: [{}] in {} ms",
        path.display(),
        names.join(", "),
        started.elapsed().as_millis()
    );
    let files = slots
        .iter()
        .filter(|s| s.spec.builtin.is_none())
        .map(|s| absolute(&s.spec.path))
        .collect();
    chain.store(Arc::new(Chain {
        slots: slots.clone(),
    }));
    for (at, plugin, source) in to_optimise {
        optimise::start(&slots[at], engine, &plugin, source);
    }
    Some(files)
}

/// Loads `slot`'s file again and swaps it in; an unchanged file is kept
/// unless `force` (a reload the user asked for). A version served with
/// Winch's code gets cranelift's in the background.
pub(crate) async fn reload_slot(slot: &Arc<Slot>, engine: &Arc<PluginEngine>, force: bool) {
    let spec = slot.spec.clone();
    let name = spec.name.clone();
    let path = spec.path.clone();
    let loaded = match Source::read(&spec).await {
        Ok(source) if !force && source.hash == slot.current.load().hash => {
            tracing::debug!(
                "plugin {name}: {} changed but its content did not",
                path.display()
            );
            return;
        }
        Ok(source) => LoadedPlugin::from_source(engine, spec, source).await,
        Err(reason) => Err(reason),
    };
    match loaded {
        Ok(loaded) => {
            let plugin = Arc::new(loaded.plugin);
            slot.current.store(plugin.clone());
            let message = format!(
                "reloaded plugin {name} from {} (sha256 {}, {}) in {} ms{}",
                path.display(),
                &plugin.hash[..12],
                compiled(&plugin, loaded.optimise.is_some()),
                plugin.load_ms,
                calls(&plugin),
            );
            tracing::info!("{message}");
            counted(&name, true, Some(&plugin.hash), &message);
            if let Some(source) = loaded.optimise {
                optimise::start(slot, engine, &plugin, source);
            }
        }
        Err(reason) => {
            let message = format!(
                "cannot reload plugin {name}: {reason}; the previous version keeps serving"
            );
            tracing::error!("{message}");
            counted(&name, false, None, &message);
        }
    }
}

/// Counts a reload of `plugin` (`config` for a config file that no longer
/// resolves) in the metrics, when they are on.
fn counted(plugin: &str, ok: bool, sha256: Option<&str>, message: &str) {
    if let Some(metrics) = crate::metrics::get() {
        metrics.reloaded(plugin, ok);
    }
    if let Some(events) = crate::web::events() {
        events.reloaded(plugin, ok, sha256, message);
    }
}

/// `path` made absolute without requiring it to exist (it may be mid-save).
fn absolute(path: &Path) -> PathBuf {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(file)) => dir.canonicalize().map(|d| d.join(file)).unwrap_or(path),
        _ => path,
    }
}
