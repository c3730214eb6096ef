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

use super::{chain::Slot, Chain, LoadedPlugin, PluginEngine, PluginSpec};

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
                    reload_slot(&slot, &engine).await;
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
            tracing::error!(
                "cannot reload the plugin chain after {} changed: {e}; the previous chain keeps serving",
                path.display()
            );
            counted("config", false);
            return None;
        }
    };
    let old = chain.load_full();
    let mut slots = Vec::with_capacity(specs.len());
    for spec in specs {
        let fingerprint = format!("{spec:?}");
        let reusable = old.slots.iter().find(|slot| {
            format!("{:?}", slot.spec) == fingerprint
                && !changed.contains(&absolute(&slot.spec.path))
        });
        let plugin = match reusable {
            Some(slot) => slot.current.load_full(),
            None => match LoadedPlugin::load(engine, Arc::new(spec.clone())).await {
                Ok(plugin) => {
                    counted(&spec.name, true);
                    Arc::new(plugin)
                }
                Err(e) => {
                    tracing::error!(
                        "cannot reload the plugin chain after {} changed: {e}; the previous chain keeps serving",
                        path.display()
                    );
                    counted(&spec.name, false);
                    return None;
                }
            },
        };
        slots.push(Arc::new(Slot {
            spec: Arc::new(spec),
            current: ArcSwap::new(plugin),
        }));
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
    chain.store(Arc::new(Chain { slots }));
    Some(files)
}

async fn reload_slot(slot: &Slot, engine: &Arc<PluginEngine>) {
    let started = Instant::now();
    let spec = slot.spec.clone();
    let name = spec.name.clone();
    let path = spec.path.clone();
    match LoadedPlugin::load(engine, spec).await {
        Ok(plugin) => {
            if plugin.hash == slot.current.load().hash {
                tracing::debug!(
                    "plugin {name}: {} changed but its content did not",
                    path.display()
                );
                return;
            }
            let hash = plugin.hash[..12].to_owned();
            let compiled = super::chain::compiled(&plugin);
            slot.current.store(Arc::new(plugin));
            counted(&name, true);
            tracing::info!(
                "reloaded plugin {name} from {} (sha256 {hash}, {}) in {} ms",
                path.display(),
                compiled,
                started.elapsed().as_millis()
            );
        }
        Err(reason) => {
            tracing::error!(
                "cannot reload plugin {name}: {reason}; the previous version keeps serving"
            );
            counted(&name, false);
        }
    }
}

/// Counts a reload of `plugin` (`config` for a config file that no longer
/// resolves) in the metrics, when they are on.
fn counted(plugin: &str, ok: bool) {
    if let Some(metrics) = crate::metrics::get() {
        metrics.reloaded(plugin, ok);
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
