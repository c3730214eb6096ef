//! The first-party plugins embedded in the binary (built by `host/build.rs`
//! from `plugins/`): usable by name, with the cache dir granted as `/cache`.

use std::path::Path;

use super::spec::PluginSpec;
use crate::config::PluginEntry;

// `COMPONENTS: [(&str, &[u8]); N]`, name and component bytes.
include!(concat!(env!("OUT_DIR"), "/builtin.rs"));

/// Names of the embedded plugins.
pub const NAMES: [&str; 4] = ["cache", "error-links", "pypi-slash", "replace"];

/// Where the cache directory appears inside the sandbox of built-in plugins.
pub const CACHE_GUEST_DIR: &str = "/cache";

/// The component of built-in plugin `name`.
pub fn component(name: &str) -> Option<&'static [u8]> {
    COMPONENTS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, bytes)| *bytes)
}

/// The spec of built-in `name`: the cache dir granted as `/cache` (cache and
/// error-links see credentials so they can refuse to share what a signed-in
/// client got, or to answer one with what an anonymous one got), then
/// whatever the `[[plugin]]` entry sets.
pub fn spec(
    name: &str,
    entry: Option<&PluginEntry>,
    base: &Path,
    cache_dir: &Path,
) -> Result<PluginSpec, String> {
    let bytes = component(name).ok_or_else(|| format!("no built-in plugin {name:?}"))?;
    let mut spec = PluginSpec::from_path(format!("builtin:{name}").into());
    spec.name = name.into();
    spec.builtin = Some(bytes);
    if matches!(name, "cache" | "error-links") {
        spec.dirs = vec![(CACHE_GUEST_DIR.to_owned(), cache_dir.to_owned())];
    }
    spec.credentials = matches!(name, "cache" | "error-links");
    if let Some(entry) = entry {
        spec.configure(entry, base)?;
    }
    // The cache's `max_size` is carried out by the host: checked here, so a
    // bad one refuses the config like any other bad key.
    crate::cache_limit::limit_of(&spec)?;
    Ok(spec)
}
