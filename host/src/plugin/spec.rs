//! What a plugin entry asks for — source, config, granted dirs, limits,
//! failure policy, credentials, match prefilter — validated at config load.

use std::{path::PathBuf, sync::Arc, time::Duration};

use crate::config::{HostPattern, PluginEntry};

/// Defaults of `limits`.
pub const DEFAULT_MEMORY_MB: u64 = 64;
pub const DEFAULT_CALL_MS: u64 = 100;
pub const DEFAULT_MAX_BODY_MB: u64 = 16;
pub const DEFAULT_MAX_DELAY_MS: u64 = 60_000;
/// Upper bounds of `limits`: a 32-bit guest cannot use more than 4 GiB, and
/// a delay is for debugging, not for holding connections for days.
const MAX_MEMORY_MB: u64 = 4096;
const MAX_BODY_MB: u64 = 4096;
const MAX_CALL_MS: u64 = 3_600_000;
const MAX_DELAY_MS: u64 = 3_600_000;

#[derive(Debug, Clone)]
pub struct PluginSpec {
    pub name: Arc<str>,
    /// The component file; `builtin:NAME` for embedded plugins.
    pub path: PathBuf,
    /// The component of an embedded plugin (no file, never reloaded).
    pub builtin: Option<&'static [u8]>,
    /// The `config` table as JSON, passed to `init`.
    pub config_json: String,
    /// Granted directories: guest path, host path.
    pub dirs: Vec<(String, PathBuf)>,
    pub limits: Limits,
    /// `on_error = "fail-closed"`: a failing plugin answers 502.
    pub fail_closed: bool,
    /// The `credentials` grant.
    pub credentials: bool,
    pub matcher: Matcher,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub memory_bytes: usize,
    pub call: Duration,
    pub max_body_bytes: usize,
    /// Longest `delay` the plugin may ask for; longer ones are cut to it.
    pub max_delay: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: (DEFAULT_MEMORY_MB << 20) as usize,
            call: Duration::from_millis(DEFAULT_CALL_MS),
            max_body_bytes: (DEFAULT_MAX_BODY_MB << 20) as usize,
            max_delay: Duration::from_millis(DEFAULT_MAX_DELAY_MS),
        }
    }
}

/// The host-side prefilter: flows that do not match never enter WebAssembly.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    hosts: Vec<HostPattern>,
    methods: Vec<String>,
    url: Option<regex::Regex>,
}

impl Matcher {
    /// The prefilter in words (`""` when it lets every flow through).
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.hosts.is_empty() {
            parts.push(format!("hosts {:?}", self.hosts));
        }
        if !self.methods.is_empty() {
            parts.push(format!("methods {}", self.methods.join(",")));
        }
        if let Some(url) = &self.url {
            parts.push(format!("url ~ {}", url.as_str()));
        }
        parts.join("; ")
    }

    /// `url` is the request's URL as text, formatted at most once per flow
    /// and only when some plugin matches on it.
    pub fn matches(
        &self,
        method: &str,
        host: &str,
        port: u16,
        url: &std::cell::OnceCell<String>,
        uri: &http::Uri,
    ) -> bool {
        (self.hosts.is_empty() || self.hosts.iter().any(|h| h.matches(host, port)))
            && (self.methods.is_empty() || self.methods.iter().any(|m| m == method))
            && self
                .url
                .as_ref()
                .is_none_or(|re| re.is_match(url.get_or_init(|| uri.to_string())))
    }
}

impl PluginSpec {
    /// A `--plugin PATH` entry: defaults for everything but the path.
    pub fn from_path(path: PathBuf) -> Self {
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "plugin".into());
        Self {
            name: name.into(),
            path,
            builtin: None,
            config_json: "{}".into(),
            dirs: Vec::new(),
            limits: Limits::default(),
            fail_closed: false,
            credentials: false,
            matcher: Matcher::default(),
        }
    }

    /// A `[[plugin]]` entry; relative paths are relative to `base`.
    pub fn from_entry(entry: &PluginEntry, base: &std::path::Path) -> Result<Self, String> {
        let name = entry.name.as_str();
        let path = entry.path.as_ref().ok_or_else(|| {
            format!(
                "[[plugin]] \"{name}\" has no path and is not a built-in plugin ({})",
                super::builtin::NAMES.join(", ")
            )
        })?;
        let mut spec = Self::from_path(base.join(path));
        spec.name = name.into();
        spec.configure(entry, base)?;
        Ok(spec)
    }

    /// Applies the settings of a `[[plugin]]` entry (all but the source).
    pub fn configure(&mut self, entry: &PluginEntry, base: &std::path::Path) -> Result<(), String> {
        let spec = self;
        let name = entry.name.as_str();
        if let Some(config) = &entry.config {
            spec.config_json = serde_json::to_string(config).map_err(|e| e.to_string())?;
        }
        if let Some(dirs) = &entry.dirs {
            spec.dirs
                .retain(|(guest, _)| !dirs.contains_key(guest.as_str()));
            spec.dirs.extend(
                dirs.iter()
                    .map(|(guest, host)| (guest.clone(), base.join(host))),
            );
        }
        if let Some(limits) = &entry.limits {
            for (key, value) in limits {
                let max = match key.as_str() {
                    "memory_mb" => MAX_MEMORY_MB,
                    "call_ms" => MAX_CALL_MS,
                    "max_body_mb" => MAX_BODY_MB,
                    "max_delay_ms" => MAX_DELAY_MS,
                    other => {
                        return Err(format!(
                            "[[plugin]] \"{name}\": unknown limit {other:?} (expected memory_mb, call_ms, max_body_mb, max_delay_ms)"
                        ))
                    }
                };
                let n = value
                    .as_integer()
                    .and_then(|n| u64::try_from(n).ok())
                    .filter(|n| (1..=max).contains(n))
                    .ok_or_else(|| {
                        format!("[[plugin]] \"{name}\": limits.{key} must be an integer from 1 to {max}")
                    })?;
                // In range, so these cannot overflow (usize is 64-bit here).
                let mib = usize::try_from(n << 20).unwrap_or(usize::MAX);
                match key.as_str() {
                    "memory_mb" => spec.limits.memory_bytes = mib,
                    "call_ms" => spec.limits.call = Duration::from_millis(n),
                    "max_body_mb" => spec.limits.max_body_bytes = mib,
                    _ => spec.limits.max_delay = Duration::from_millis(n),
                }
            }
        }
        spec.fail_closed = match entry.on_error.as_deref() {
            None | Some("fail-open") => false,
            Some("fail-closed") => true,
            Some(other) => {
                return Err(format!(
                    "[[plugin]] \"{name}\": on_error = {other:?}, expected \"fail-open\" or \"fail-closed\""
                ))
            }
        };
        for grant in entry.grants.iter().flatten() {
            match grant.as_str() {
                "credentials" => spec.credentials = true,
                other => {
                    return Err(format!(
                        "[[plugin]] \"{name}\": unknown grant {other:?} (expected \"credentials\")"
                    ))
                }
            }
        }
        if let Some(table) = &entry.matcher {
            spec.matcher = matcher(name, table)?;
        }
        Ok(())
    }
}

fn matcher(name: &str, table: &toml::Table) -> Result<Matcher, String> {
    let strings = |key: &str, value: &toml::Value| -> Result<Vec<String>, String> {
        value
            .as_array()
            .and_then(|a| a.iter().map(|v| v.as_str().map(str::to_owned)).collect())
            .ok_or_else(|| format!("[[plugin]] \"{name}\": match.{key} must be a list of strings"))
    };
    let mut matcher = Matcher::default();
    for (key, value) in table {
        match key.as_str() {
            "hosts" => {
                matcher.hosts = strings(key, value)?
                    .iter()
                    .map(|h| HostPattern::parse(h).map_err(|e| e.to_string()))
                    .collect::<Result<_, _>>()?
            }
            "methods" => {
                matcher.methods = strings(key, value)?
                    .into_iter()
                    .map(|m| m.to_ascii_uppercase())
                    .collect()
            }
            "url" => {
                let pattern = value
                    .as_str()
                    .ok_or_else(|| format!("[[plugin]] \"{name}\": match.url must be a string"))?;
                matcher.url = Some(regex::Regex::new(pattern).map_err(|e| {
                    format!("[[plugin]] \"{name}\": match.url is not a valid regex: {e}")
                })?);
            }
            other => {
                return Err(format!(
                "[[plugin]] \"{name}\": unknown match key {other:?} (expected hosts, methods, url)"
            ))
            }
        }
    }
    Ok(matcher)
}
