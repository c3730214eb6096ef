//! What the web UI's stream carries, gathered from the proxy as it runs:
//! stored flows, paused ones, plugin loads and reloads, plugin log lines.
//! It exists only with `--web`; without it each source pays one load of
//! an empty `OnceLock`.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Mutex, OnceLock},
};

use tokio::sync::broadcast;

use crate::flows::{intercept::Phase, record::Record};

/// Events a stream may fall behind by before it is told it lagged.
const STREAM_BACKLOG: usize = 4096;
/// Reloads remembered per plugin.
const HISTORY: usize = 20;

static EVENTS: OnceLock<Events> = OnceLock::new();

/// The hub, when the web UI is on.
pub fn events() -> Option<&'static Events> {
    EVENTS.get()
}

/// Turns the hub on (at start-up, before plugins load).
pub fn enable() -> &'static Events {
    EVENTS.get_or_init(Events::new)
}

#[derive(Clone, Debug)]
pub enum Event {
    /// A finished flow joined the store.
    Stored(u64, Record),
    /// The store was cleared.
    Cleared,
    /// The chain or a plugin's state changed.
    Plugins,
    /// A plugin log line or a load/reload message.
    Log(std::sync::Arc<LogLine>),
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct LogLine {
    pub ts: i64,
    pub level: &'static str,
    pub plugin: String,
    pub message: String,
}

/// One load or reload of a plugin.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Reload {
    pub at: i64,
    pub ok: bool,
    pub sha256: Option<String>,
    pub message: String,
}

#[derive(Debug, Default, Clone)]
pub struct History {
    pub reloads: VecDeque<Reload>,
    pub last_error: Option<String>,
}

pub struct Events {
    pub stream: broadcast::Sender<Event>,
    /// Flows pausing (`Some(phase)`) and going on (`None`).
    pub paused: broadcast::Sender<(u64, Option<Phase>)>,
    history: Mutex<HashMap<String, History>>,
}

impl Events {
    fn new() -> Self {
        Self {
            stream: broadcast::channel(STREAM_BACKLOG).0,
            paused: broadcast::channel(STREAM_BACKLOG).0,
            history: Mutex::default(),
        }
    }

    fn send(&self, event: Event) {
        // No receiver (no page open) is fine.
        let _ = self.stream.send(event);
    }

    pub fn stored(&self, id: u64, record: &Record) {
        if self.stream.receiver_count() > 0 {
            self.send(Event::Stored(id, record.clone()));
        }
    }

    pub fn cleared(&self) {
        self.send(Event::Cleared);
    }

    pub fn plugins_changed(&self) {
        self.send(Event::Plugins);
    }

    /// A plugin's log line.
    pub fn log(&self, level: &'static str, plugin: &str, message: &str) {
        if self.stream.receiver_count() == 0 {
            return;
        }
        self.send(Event::Log(std::sync::Arc::new(LogLine {
            ts: crate::flows::now_micros(),
            level,
            plugin: plugin.to_owned(),
            message: message.to_owned(),
        })));
    }

    /// A load or reload of `plugin`, good or failed.
    pub fn reloaded(&self, plugin: &str, ok: bool, sha256: Option<&str>, message: &str) {
        {
            let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
            let entry = history.entry(plugin.to_owned()).or_default();
            if entry.reloads.len() == HISTORY {
                entry.reloads.pop_front();
            }
            entry.reloads.push_back(Reload {
                at: crate::flows::now_micros(),
                ok,
                sha256: sha256.map(str::to_owned),
                message: message.to_owned(),
            });
            entry.last_error = (!ok).then(|| message.to_owned());
        }
        self.log(if ok { "info" } else { "error" }, plugin, message);
        self.plugins_changed();
    }

    pub fn history(&self, plugin: &str) -> History {
        let history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        history.get(plugin).cloned().unwrap_or_default()
    }
}
