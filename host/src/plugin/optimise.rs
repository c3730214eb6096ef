//! Swapping cranelift's code in for Winch's. A large component that is not
//! in the compiled-code cache first serves with code from Winch, the
//! baseline compiler (seconds sooner); cranelift then compiles it in the
//! background and the optimised version takes the slot, unless a newer
//! version got there first. One background compile per slot at a time; a
//! newer edit's request replaces an older one still waiting.

use std::{
    sync::{Arc, Mutex, Weak},
    time::Instant,
};

use super::{
    chain::Slot,
    instance::{LoadedPlugin, Source},
    PluginEngine,
};

/// A slot's background compiles: the one running and the one next.
#[derive(Default)]
pub struct Optimiser {
    queue: Mutex<Queue<Job>>,
}

/// One request to optimise: the version running Winch's code, and its
/// component.
struct Job {
    /// Held weakly: a version swapped out is dropped when its flows end,
    /// and then is not worth optimising.
    baseline: Weak<LoadedPlugin>,
    source: Source,
}

/// At most one job running; of those asked for meanwhile, the newest.
struct Queue<J> {
    running: bool,
    next: Option<J>,
}

impl<J> Default for Queue<J> {
    fn default() -> Self {
        Self {
            running: false,
            next: None,
        }
    }
}

impl<J> Queue<J> {
    /// Queues `job` (replacing a job not started yet); true when nothing
    /// runs, so the caller must start a runner.
    fn push(&mut self, job: J) -> bool {
        self.next = Some(job);
        !std::mem::replace(&mut self.running, true)
    }

    /// The job a runner does next; `None` ends the runner.
    fn pop(&mut self) -> Option<J> {
        let job = self.next.take();
        self.running = job.is_some();
        job
    }
}

impl Optimiser {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue<Job>> {
        // A panic while holding the lock leaves a consistent queue.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Has cranelift compile `source` in the background and swaps the result
/// in for `baseline` (the version `slot` serves, with Winch's code) if the
/// slot still holds it then.
pub fn start(
    slot: &Arc<Slot>,
    engine: &Arc<PluginEngine>,
    baseline: &Arc<LoadedPlugin>,
    source: Source,
) {
    let job = Job {
        baseline: Arc::downgrade(baseline),
        source,
    };
    if slot.optimiser.lock().push(job) {
        tokio::spawn(run(Arc::downgrade(slot), engine.clone()));
    }
}

/// Does the slot's jobs one after the other. The slot is held weakly: one
/// the chain has dropped (its plugin unloaded) is not worth a compile.
async fn run(slot: Weak<Slot>, engine: Arc<PluginEngine>) {
    while let Some((job, name)) = slot.upgrade().and_then(|slot| next(&slot)) {
        // A task of its own: a panic in there ends this job, not the queue.
        let work = tokio::spawn(optimise(slot.clone(), engine.clone(), job));
        if let Err(e) = work.await {
            tracing::error!("plugin {name}: optimising failed: {e}");
        }
    }
}

/// The slot's next job whose version still serves (older ones were
/// superseded before their turn came), and the plugin's name.
fn next(slot: &Slot) -> Option<(Job, Arc<str>)> {
    loop {
        let job = slot.optimiser.lock().pop()?;
        if job.baseline.upgrade().is_some_and(|b| serves(slot, &b)) {
            return Some((job, slot.spec.name.clone()));
        }
    }
}

/// Compiles the job's component with cranelift and swaps the result in for
/// its baseline version, if that still serves.
async fn optimise(slot: Weak<Slot>, engine: Arc<PluginEngine>, job: Job) {
    let hash = job.source.hash[..12].to_owned();
    // Only what the new version takes over; the baseline version itself is
    // not held while cranelift works (a newer one may replace it).
    let Some((spec, loaded_at, load_ms)) = job
        .baseline
        .upgrade()
        .map(|b| (b.spec.clone(), b.loaded_at, b.load_ms))
    else {
        return;
    };
    let name = spec.name.clone();
    let started = Instant::now();
    let optimised = LoadedPlugin::optimised(&engine, spec, job.source).await;
    match optimised {
        Ok(mut optimised) => {
            // The reload users saw is the baseline version's.
            optimised.loaded_at = loaded_at;
            optimised.load_ms = load_ms;
            let swapped = match (slot.upgrade(), job.baseline.upgrade()) {
                (Some(slot), Some(baseline)) => swap(&slot, &baseline, Arc::new(optimised)),
                _ => false,
            };
            if swapped {
                let message = format!(
                    "optimised code in use ({} ms)",
                    started.elapsed().as_millis()
                );
                tracing::info!("plugin {name}: {message}");
                if let Some(events) = crate::web::events() {
                    events.log("info", &name, &message);
                    events.plugins_changed();
                }
            } else {
                tracing::debug!(
                    "plugin {name}: optimised code of sha256 {hash} not used: a newer version \
                     serves, or the plugin was unloaded"
                );
            }
        }
        Err(reason) => {
            let message =
                format!("cannot optimise sha256 {hash}: {reason}; its baseline code keeps serving");
            tracing::warn!("plugin {name}: {message}");
            if let Some(events) = crate::web::events() {
                events.log("warn", &name, &message);
            }
        }
    }
}

/// Whether `slot` serves `version` right now.
fn serves(slot: &Slot, version: &Arc<LoadedPlugin>) -> bool {
    Arc::ptr_eq(&slot.current.load(), version)
}

/// Puts `optimised` in `slot` if and only if the slot still serves
/// `baseline`: a version stored since (a newer edit, a reload) stays.
/// Flows that took `baseline` finish with it.
fn swap(slot: &Slot, baseline: &Arc<LoadedPlugin>, optimised: Arc<LoadedPlugin>) -> bool {
    let previous = slot.current.compare_and_swap(baseline, optimised);
    Arc::ptr_eq(&previous, baseline)
}

#[cfg(test)]
mod tests {
    use std::{path::Path, time::Duration};

    use super::*;
    use crate::plugin::{builtin, engine::Compiler, PluginSpec};

    fn spec() -> Arc<PluginSpec> {
        let nowhere = Path::new("/nonexistent");
        Arc::new(builtin::spec("pypi-slash", None, nowhere, nowhere).unwrap())
    }

    #[tokio::test]
    async fn an_optimised_build_replaces_only_the_version_it_was_made_for() {
        let engine = PluginEngine::with_winch_threshold(None, 0).unwrap();
        let spec = spec();
        let first = LoadedPlugin::load(&engine, spec.clone()).await.unwrap();
        assert_eq!(first.plugin.compiler, Compiler::Winch);
        let source = first.optimise.expect("Winch's code is to be optimised");
        let first = Arc::new(first.plugin);
        let slot = Slot::new(spec.clone(), first.clone(), true);
        // A newer version is stored while cranelift works on the first.
        let newer = Arc::new(
            LoadedPlugin::load(&engine, spec.clone())
                .await
                .unwrap()
                .plugin,
        );
        slot.current.store(newer.clone());
        let optimised = LoadedPlugin::optimised(&engine, spec, source).await;
        let optimised = Arc::new(optimised.unwrap());
        assert_eq!(optimised.compiler, Compiler::Cranelift);
        assert!(!swap(&slot, &first, optimised.clone()));
        assert!(serves(&slot, &newer), "the newer version stays");
        assert!(swap(&slot, &newer, optimised.clone()));
        assert!(serves(&slot, &optimised));
    }

    #[tokio::test]
    async fn a_slot_serving_winch_code_gets_cranelift_code_in_the_background() {
        let engine = PluginEngine::with_winch_threshold(None, 0).unwrap();
        let spec = spec();
        let loaded = LoadedPlugin::load(&engine, spec.clone()).await.unwrap();
        let baseline = Arc::new(loaded.plugin);
        let slot = Arc::new(Slot::new(spec, baseline.clone(), true));
        start(&slot, &engine, &baseline, loaded.optimise.unwrap());
        let deadline = Instant::now() + Duration::from_secs(120);
        while slot.current.load().compiler == Compiler::Winch && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let optimised = slot.current.load_full();
        assert_eq!(optimised.compiler, Compiler::Cranelift);
        assert_eq!(optimised.hash, baseline.hash);
        assert_eq!(optimised.loaded_at, baseline.loaded_at);
        while slot.optimiser.lock().running && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!slot.optimiser.lock().running, "the runner ends");
    }

    #[test]
    fn one_job_runs_at_a_time_and_a_newer_request_replaces_a_waiting_one() {
        let mut queue = Queue::default();
        assert!(queue.push("v1"), "the first request starts a runner");
        assert_eq!(queue.pop(), Some("v1"));
        // v1 compiles; two edits arrive meanwhile: no second runner, and
        // only the newest waits.
        assert!(!queue.push("v2"));
        assert!(!queue.push("v3"));
        assert_eq!(queue.pop(), Some("v3"));
        assert_eq!(queue.pop(), None, "the runner ends");
        assert!(queue.push("v4"), "a later request starts a runner again");
    }
}
