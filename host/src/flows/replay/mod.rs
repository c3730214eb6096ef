//! Replay: `proxlet replay` re-sends recorded requests and reports what
//! changed (client replay); `--server-replay` answers requests from recorded
//! responses (server replay). Both read recordings through [`read_flows`].

mod client;
pub mod matcher;
pub mod server;

use std::path::Path;

pub use client::client_replay;
pub(crate) use server::{send, Answer};
pub use server::{Killed, ServerReplay};

use super::{
    file::{FlowFileError, FlowReader},
    Flow,
};

/// Hands each flow of the recording at `path` (a proxlet flow file, a HAR
/// or a mitmproxy dump) to `each`, in recorded order. A flow file is read
/// like every flow file reader does: up to its first incomplete or corrupt
/// record (what a killed writer leaves), keeping the flows before it, with a
/// warning. The error says what failed on which file.
pub(crate) fn read_flows(path: &Path, mut each: impl FnMut(Flow)) -> Result<(), String> {
    if !super::file::is_flow_file(path) {
        for flow in super::convert::open_any(path).map_err(|e| e.to_string())? {
            each(flow.map_err(|e| e.to_string())?);
        }
        return Ok(());
    }
    let mut reader = FlowReader::open(path).map_err(|e| e.to_string())?;
    while let Some(flow) = reader.next_flow() {
        match flow {
            Ok(flow) => each(flow),
            Err(e @ FlowFileError::Corrupt { .. }) => {
                tracing::warn!("{}: {e}; using the flows before it", path.display());
                return Ok(());
            }
            Err(e @ FlowFileError::Io(_)) => return Err(format!("{}: {e}", path.display())),
            // The other errors name the file themselves.
            Err(e) => return Err(e.to_string()),
        }
    }
    if reader.torn {
        tracing::warn!(
            "{}: the last record is incomplete (was proxlet stopped while saving?); using the flows before it",
            path.display()
        );
    }
    Ok(())
}
