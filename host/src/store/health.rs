//! Whether the shared store is worth asking: a circuit breaker. After a
//! failure (an error, or no answer in time) the store is left alone for a
//! while, so a dead store costs one slow miss, not one on every miss; then
//! a single caller tries it again.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

pub struct Health {
    /// The store, for log lines.
    name: String,
    retry_after: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Set while the store is out of use: not asked before this.
    resting_until: Option<Instant>,
}

impl Health {
    pub fn new(name: String, retry_after: Duration) -> Self {
        Self {
            name,
            retry_after,
            state: Mutex::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether to use the store now. While it rests, no; once its rest is
    /// over, yes for one caller, whose outcome decides (the others keep
    /// away meanwhile).
    pub fn try_use(&self) -> bool {
        let mut state = self.state();
        match state.resting_until {
            None => true,
            Some(until) if Instant::now() >= until => {
                state.resting_until = Some(Instant::now() + self.retry_after);
                true
            }
            Some(_) => false,
        }
    }

    /// `what` failed with `error`: the store rests.
    pub fn failed(&self, what: &str, error: &dyn std::fmt::Display) {
        let was_resting = self
            .state()
            .resting_until
            .replace(Instant::now() + self.retry_after)
            .is_some();
        if was_resting {
            tracing::debug!("shared cache store {}: {what} failed: {error}", self.name);
        } else {
            tracing::warn!(
                "shared cache store {}: {what} failed: {error}; serving from the local cache and origins only, trying the store again in {}s",
                self.name,
                self.retry_after.as_secs()
            );
        }
    }

    /// The store answered.
    pub fn worked(&self) {
        if self.state().resting_until.take().is_some() {
            tracing::info!("shared cache store {} answers again", self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_store_rests_then_one_caller_tries_it() {
        let health = Health::new("s3://b".into(), Duration::from_millis(50));
        assert!(health.try_use());
        health.failed("a lookup", &"refused");
        assert!(!health.try_use(), "resting");
        std::thread::sleep(Duration::from_millis(60));
        assert!(health.try_use(), "one caller tries again");
        assert!(!health.try_use(), "the others keep away meanwhile");
        health.worked();
        assert!(health.try_use() && health.try_use(), "in use again");
    }
}
