//! Replay: `proxlet replay` re-sends recorded requests and reports what
//! changed (client replay); `--server-replay` answers requests from recorded
//! responses (server replay).

use crate::{
    cli::ReplayArgs,
    error::{Error, Result},
};

/// `proxlet replay FILE [FILTER]`.
pub fn client_replay(args: &ReplayArgs) -> Result<()> {
    let _ = args;
    Err(Error::Flows("proxlet replay: not built yet".into()))
}
