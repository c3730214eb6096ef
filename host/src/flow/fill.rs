//! `fill`: one upstream fetch per key. The first flow to fill a key holds a
//! lease; when its plugin stores the response, the lease moves into the
//! store and goes when the file is complete (or abandoned), otherwise it goes
//! once `on-response` is done. Flows filling the same key meanwhile wait for
//! the lease to go, then ask their plugin again (which now finds what the
//! first flow stored). A store that stops moving — its client stopped
//! reading, its upstream stalled — holds them at most `STALL_LIMIT`: then
//! they fetch on their own.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, LazyLock, Mutex,
    },
    time::Duration,
};

use tokio::sync::watch;

/// What waiters watch of a fill: a receiver that closes when the lease is
/// dropped, and the bytes stored so far.
#[derive(Clone)]
struct Watched {
    done: watch::Receiver<()>,
    progress: Arc<AtomicU64>,
}

/// Keys being filled: plugin name + key.
type Fills = Mutex<HashMap<(Arc<str>, String), Watched>>;

static FILLS: LazyLock<Fills> = LazyLock::new(Default::default);

/// Longest wait for another flow's fill, even while it moves.
const WAIT_LIMIT: Duration = Duration::from_secs(300);
/// Longest a fill may store nothing before its waiters stop waiting.
pub const STALL_LIMIT: Duration = Duration::from_secs(5);

/// Held by the filling flow until its response is stored or not stored.
pub struct FillLease {
    key: (Arc<str>, String),
    progress: Arc<AtomicU64>,
    _done: watch::Sender<()>,
}

impl FillLease {
    /// Marks the start of the store this lease moved into: from now on its
    /// waiters expect it to move.
    pub fn storing(&self) {
        self.progress.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts bytes written by the store this lease moved into.
    pub fn stored(&self, bytes: u64) {
        self.progress.fetch_add(bytes, Ordering::Relaxed);
    }
}

impl Drop for FillLease {
    fn drop(&mut self) {
        if let Ok(mut fills) = FILLS.lock() {
            fills.remove(&self.key);
        }
        // `_done` drops after this: waiters wake to a key no one holds.
    }
}

/// What a flow asking to fill a key gets.
pub enum Fill {
    /// It is the one to fetch.
    Lease(FillLease),
    /// Another flow's fill ended: ask the plugin again.
    Ended,
    /// Another flow's fill stalled or took too long: fetch without a lease.
    GaveUp,
}

/// Takes the lease for `key`, or returns what to watch of the flow that holds it.
fn take(plugin: &Arc<str>, key: &str) -> Result<FillLease, Watched> {
    let key = (plugin.clone(), key.to_owned());
    let mut fills = FILLS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(held) = fills.get(&key) {
        return Err(held.clone());
    }
    let (done, watching) = watch::channel(());
    let progress = Arc::new(AtomicU64::new(0));
    fills.insert(
        key.clone(),
        Watched {
            done: watching,
            progress: progress.clone(),
        },
    );
    Ok(FillLease {
        key,
        progress,
        _done: done,
    })
}

/// Takes the lease for `key`; when another flow holds it, waits for that
/// flow's fill to end while it makes progress.
pub async fn acquire(plugin: &Arc<str>, key: &str) -> Fill {
    acquire_within(plugin, key, STALL_LIMIT).await
}

async fn acquire_within(plugin: &Arc<str>, key: &str, stall: Duration) -> Fill {
    let mut held = match take(plugin, key) {
        Ok(lease) => return Fill::Lease(lease),
        Err(held) => held,
    };
    let started = tokio::time::Instant::now();
    let mut seen = held.progress.load(Ordering::Relaxed);
    loop {
        if tokio::time::timeout(stall, held.done.changed())
            .await
            .is_ok()
        {
            return Fill::Ended;
        }
        let now = held.progress.load(Ordering::Relaxed);
        // Before its store starts the fill waits for a response head, which
        // `--upstream-timeout` bounds: a slow origin is not a stall.
        if now == seen && now > 0 {
            tracing::warn!(
                "plugin {plugin}: the fetch of {key:?} by another flow stored nothing for {stall:?}; fetching without waiting"
            );
            return Fill::GaveUp;
        }
        if started.elapsed() >= WAIT_LIMIT {
            tracing::warn!("plugin {plugin}: waited {WAIT_LIMIT:?} for another fetch of {key:?}; fetching without waiting");
            return Fill::GaveUp;
        }
        seen = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn second_filler_waits_for_the_first() {
        let plugin: Arc<str> = "p".into();
        let Fill::Lease(lease) = acquire(&plugin, "k").await else {
            panic!("first flow fills")
        };
        let waiter = tokio::spawn({
            let plugin = plugin.clone();
            async move { matches!(acquire(&plugin, "k").await, Fill::Ended) }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "the second flow waits");
        drop(lease);
        assert!(waiter.await.unwrap(), "woken without a lease, to ask again");
        assert!(
            matches!(acquire(&plugin, "k").await, Fill::Lease(_)),
            "the key is free again"
        );
    }

    #[tokio::test]
    async fn a_stalled_fill_holds_waiters_only_while_it_moves() {
        let plugin: Arc<str> = "p".into();
        let Fill::Lease(lease) = acquire(&plugin, "stall").await else {
            panic!("first flow fills")
        };
        let stall = Duration::from_millis(100);
        let waiter = tokio::spawn({
            let plugin = plugin.clone();
            async move { acquire_within(&plugin, "stall", stall).await }
        });
        // Waiting for the response head is not a stall.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !waiter.is_finished(),
            "a fill before its store is waited for"
        );
        lease.storing();
        // Progress keeps the waiter waiting past several stall periods.
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(60)).await;
            lease.stored(1);
        }
        assert!(!waiter.is_finished(), "a moving fill is waited for");
        let gave_up = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("a stalled fill stops holding its waiter")
            .unwrap();
        assert!(matches!(gave_up, Fill::GaveUp));
        drop(lease);
    }
}
