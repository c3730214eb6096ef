//! `fill`: one upstream fetch per key. The first flow to fill a key holds a
//! lease until its response body ended; flows filling the same key meanwhile
//! wait for the lease to go, then ask their plugin again (which now finds
//! what the first flow stored).

use std::{
    collections::HashMap,
    sync::{Arc, LazyLock, Mutex},
    time::Duration,
};

use tokio::sync::watch;

/// Keys being filled: plugin name + key → a receiver that closes when the
/// lease is dropped.
type Fills = Mutex<HashMap<(Arc<str>, String), watch::Receiver<()>>>;

static FILLS: LazyLock<Fills> = LazyLock::new(Default::default);

/// Longest wait for another flow's fill; after it the flow fetches itself.
const WAIT_LIMIT: Duration = Duration::from_secs(300);

/// Held by the filling flow until its response is done.
pub struct FillLease {
    key: (Arc<str>, String),
    _done: watch::Sender<()>,
}

impl Drop for FillLease {
    fn drop(&mut self) {
        FILLS.lock().unwrap().remove(&self.key);
        // `_done` drops after this: waiters wake to a key no one holds.
    }
}

/// Takes the lease for `key`, or returns the receiver of the flow that holds it.
fn take(plugin: &Arc<str>, key: &str) -> Result<FillLease, watch::Receiver<()>> {
    let key = (plugin.clone(), key.to_owned());
    let mut fills = FILLS.lock().unwrap();
    if let Some(held) = fills.get(&key) {
        return Err(held.clone());
    }
    let (done, watching) = watch::channel(());
    fills.insert(key.clone(), watching);
    Ok(FillLease { key, _done: done })
}

/// Takes the lease for `key`; when another flow holds it, waits for that
/// flow to finish (`None`: ask the plugin again) or, past the wait limit,
/// takes no lease and lets this flow fetch too.
pub async fn acquire(plugin: &Arc<str>, key: &str) -> Option<FillLease> {
    match take(plugin, key) {
        Ok(lease) => Some(lease),
        Err(mut held) => {
            let ended = tokio::time::timeout(WAIT_LIMIT, held.changed()).await;
            if ended.is_err() {
                tracing::warn!("plugin {plugin}: waited {WAIT_LIMIT:?} for another fetch of {key:?}; fetching again");
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn second_filler_waits_for_the_first() {
        let plugin: Arc<str> = "p".into();
        let lease = acquire(&plugin, "k").await.expect("first flow fills");
        let waiter = tokio::spawn({
            let plugin = plugin.clone();
            async move { acquire(&plugin, "k").await.is_none() }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "the second flow waits");
        drop(lease);
        assert!(waiter.await.unwrap(), "woken without a lease, to ask again");
        assert!(
            acquire(&plugin, "k").await.is_some(),
            "the key is free again"
        );
    }
}
