//! What a flow's plugins did: short notes for its access-log line and, when
//! the flow is recorded, every call with its decision and time.

use std::time::Instant;

/// A flow's notes, written into its access-log line and record when the
/// response has been streamed back.
#[derive(Default)]
pub struct Notes {
    pub text: Vec<String>,
    /// `Some` when the flow is recorded.
    pub steps: Option<Vec<crate::flows::PluginStep>>,
}

impl Notes {
    pub fn new(record_steps: bool) -> Self {
        Self {
            text: Vec::new(),
            steps: record_steps.then(Vec::new),
        }
    }

    pub fn push(&mut self, note: String) {
        self.text.push(note);
    }

    /// Notes a call that began at `started`; `decision` is only formatted
    /// when the flow is recorded.
    pub(crate) fn step(
        &mut self,
        plugin: &str,
        hook: &str,
        started: Instant,
        decision: impl FnOnce() -> String,
    ) {
        if let Some(steps) = &mut self.steps {
            steps.push(crate::flows::PluginStep {
                plugin: plugin.to_owned(),
                hook: hook.to_owned(),
                decision: decision(),
                micros: started.elapsed().as_micros() as u64,
            });
        }
    }
}
