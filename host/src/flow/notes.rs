//! What a flow's plugins did: short notes for its access-log line and, when
//! the flow is recorded, every call with its decision and time.

use std::time::Instant;

/// A flow's notes, written into its access-log line and record when the
/// response has been streamed back.
#[derive(Default)]
pub struct Notes {
    /// The notes so far, separated by spaces: one string a flow, written
    /// in place (a plugin's note is on most flows' path).
    text: String,
    /// `Some` when the flow is recorded.
    pub steps: Option<Vec<crate::flows::PluginStep>>,
}

impl Notes {
    pub fn new(record_steps: bool) -> Self {
        Self {
            text: String::new(),
            steps: record_steps.then(Vec::new),
        }
    }

    /// Adds a note of the flow's own, e.g. an upstream failure.
    pub fn push(&mut self, note: &str) {
        self.separate();
        self.text.push_str(note);
    }

    /// Adds `plugin=what`, what a plugin's decision did.
    pub(crate) fn plugin(&mut self, plugin: &str, what: &str) {
        self.separate();
        self.text.push_str(plugin);
        self.text.push('=');
        self.text.push_str(what);
    }

    fn separate(&mut self) {
        if !self.text.is_empty() {
            self.text.push(' ');
        }
    }

    /// The notes as one line, if there are any.
    pub(crate) fn take_text(&mut self) -> Option<String> {
        Some(std::mem::take(&mut self.text)).filter(|t| !t.is_empty())
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
