//! `proxlet flows`: list the flows of a file one line each, show one in
//! full, or export them as HAR.

use std::path::Path;

use crate::error::{Error, Result};

/// `proxlet flows FILE [FILTER] [--show ID] [--har OUT]`.
pub fn flows(
    file: &Path,
    filter: Option<&str>,
    show: Option<u64>,
    har: Option<&Path>,
) -> Result<()> {
    let _ = (file, filter, show, har);
    Err(Error::Flows("proxlet flows: not built yet".into()))
}
