//! `proxlet convert IN OUT`, and reading any flow source (proxlet flow
//! file, HAR, mitmproxy dump) recognised by its content.

use std::path::Path;

use crate::error::{Error, Result};

/// `proxlet convert IN OUT [--filter EXPR]`.
pub fn convert(input: &Path, output: &Path, filter: Option<&str>) -> Result<()> {
    let _ = (input, output, filter);
    Err(Error::Flows("proxlet convert: not built yet".into()))
}
