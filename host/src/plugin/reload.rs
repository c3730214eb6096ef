//! Hot reload: a `notify` watcher on the directories of plugin files (so
//! editors that save by rename are seen too), debounced; the new version is
//! compiled and initialised on a blocking thread and swapped in atomically.
//! A broken file logs one error and the previous version keeps serving.

use std::{
    collections::BTreeSet,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use notify::{RecursiveMode, Watcher};

use super::{chain::Slot, Chain, LoadedPlugin, PluginEngine};

/// Quiet time after the last file event before a reload starts.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// Watches every plugin file of `chain`; keep the returned watcher alive.
pub fn watch(
    chain: &Chain,
    engine: Arc<PluginEngine>,
) -> Result<notify::RecommendedWatcher, String> {
    let files: Vec<(PathBuf, Arc<Slot>)> = chain
        .slots
        .iter()
        .map(|slot| (absolute(&slot.spec.path), slot.clone()))
        .collect();
    let paths: Vec<PathBuf> = files.iter().map(|(path, _)| path.clone()).collect();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<usize>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if event.kind.is_access() {
            return;
        }
        for path in &event.paths {
            for (i, watched) in paths.iter().enumerate() {
                if path == watched {
                    let _ = tx.send(i);
                }
            }
        }
    })
    .map_err(|e| format!("cannot watch plugin files: {e}"))?;
    let dirs: BTreeSet<PathBuf> = files
        .iter()
        .filter_map(|(path, _)| path.parent().map(PathBuf::from))
        .collect();
    for dir in dirs {
        watcher
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(|e| format!("cannot watch {dir:?}: {e}"))?;
    }

    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut pending = BTreeSet::from([first]);
            loop {
                match tokio::time::timeout(DEBOUNCE, rx.recv()).await {
                    Ok(Some(i)) => {
                        pending.insert(i);
                    }
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            for i in pending {
                reload(files[i].1.clone(), engine.clone()).await;
            }
        }
    });
    Ok(watcher)
}

async fn reload(slot: Arc<Slot>, engine: Arc<PluginEngine>) {
    let started = Instant::now();
    let spec = slot.spec.clone();
    let name = spec.name.clone();
    let path = spec.path.clone();
    match LoadedPlugin::load(&engine, spec).await {
        Ok(plugin) => {
            if plugin.hash == slot.current.load().hash {
                tracing::debug!(
                    "plugin {name}: {} changed but its content did not",
                    path.display()
                );
                return;
            }
            let hash = plugin.hash[..12].to_owned();
            slot.current.store(Arc::new(plugin));
            tracing::info!(
                "reloaded plugin {name} from {} (sha256 {hash}) in {} ms",
                path.display(),
                started.elapsed().as_millis()
            );
        }
        Err(reason) => {
            tracing::error!(
                "cannot reload plugin {name}: {reason}; the previous version keeps serving"
            )
        }
    }
}

/// `path` made absolute without requiring it to exist (it may be mid-save).
fn absolute(path: &std::path::Path) -> PathBuf {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(file)) => dir.canonicalize().map(|d| d.join(file)).unwrap_or(path),
        _ => path,
    }
}
