//! Replay: `proxlet replay` re-sends recorded requests and reports what
//! changed (client replay); `--server-replay` answers requests from recorded
//! responses (server replay). Both read recordings through [`read_flows`].

mod client;
pub mod matcher;
pub mod server;

use std::path::Path;

pub use client::client_replay;
pub(crate) use client::request_of;
pub(crate) use server::{send, Answer};
pub use server::{Killed, ServerReplay};

use super::Flow;

/// Hands each flow of the recording at `path` (a proxlet flow file, a HAR
/// or a mitmproxy dump) to `each`, in recorded order. A flow file is read
/// as every reader reads it: up to its first incomplete or corrupt record
/// (what a killed writer leaves), with a warning. The error says what
/// failed on which file.
pub(crate) fn read_flows(path: &Path, mut each: impl FnMut(Flow)) -> Result<(), String> {
    for flow in super::convert::open_any(path).map_err(|e| e.to_string())? {
        each(flow.map_err(|e| e.to_string())?);
    }
    Ok(())
}
