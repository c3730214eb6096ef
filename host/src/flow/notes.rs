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

    /// When a call begins, read only when the flow is recorded (an
    /// unrecorded flow reads no clock per plugin call).
    pub(crate) fn clock(&self) -> Option<Instant> {
        self.steps.as_ref().map(|_| Instant::now())
    }

    /// Notes a call that began at `started` (from [`Notes::clock`]);
    /// `decision` is only formatted when the flow is recorded.
    pub(crate) fn step(
        &mut self,
        plugin: &str,
        hook: &str,
        started: Option<Instant>,
        decision: impl FnOnce() -> String,
    ) {
        if let (Some(steps), Some(started)) = (&mut self.steps, started) {
            steps.push(crate::flows::PluginStep {
                plugin: plugin.to_owned(),
                hook: hook.to_owned(),
                decision: decision(),
                micros: started.elapsed().as_micros() as u64,
            });
        }
    }
}
