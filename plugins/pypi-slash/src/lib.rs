//! The `pypi-slash` plugin: a PyPI simple-index page asked for without its
//! trailing slash or with an unnormalised name (`/simple/Foo_Bar`) is
//! rewritten to `/simple/foo-bar/` (PEP 503) before later plugins — the
//! cache — see it, so every spelling lands in one directory and no file
//! named like the directory is ever created. With `redirect = true` the
//! client gets a 301 to the canonical URL instead (no upstream contact).

use proxlet_plugin::{text_response, Edit, FlowInfo, Hooks, Plugin, RequestAction, RequestHead};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    /// Path prefixes of simple indexes (e.g. devpi's "/root/pypi/+simple/").
    prefixes: Vec<String>,
    /// Answer 301 to the canonical URL instead of rewriting the request.
    redirect: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            prefixes: vec!["/simple/".into()],
            redirect: false,
        }
    }
}

struct PypiSlash {
    config: Config,
}

impl Plugin for PypiSlash {
    const HOOKS: Hooks = Hooks::ON_REQUEST;

    fn new(config: &str) -> Result<Self, String> {
        let config: Config = proxlet_plugin::config(config)?;
        if let Some(bad) = config
            .prefixes
            .iter()
            .find(|p| !p.starts_with('/') || !p.ends_with('/'))
        {
            return Err(format!("prefix {bad:?} must start and end with /"));
        }
        Ok(Self { config })
    }

    fn on_request(&mut self, _: &FlowInfo, request: &RequestHead) -> RequestAction {
        if !matches!(request.method().as_str(), "GET" | "HEAD") {
            return RequestAction::Continue(Vec::new());
        }
        let Some(path) = self.canonical(&request.path()) else {
            return RequestAction::Continue(Vec::new());
        };
        if self.config.redirect {
            let location = format!("{}://{}{path}", request.scheme(), request.authority());
            return RequestAction::Respond(text_response(
                301,
                vec![
                    ("location".into(), location.into_bytes()),
                    ("x-proxlet".into(), b"pypi-slash;redirect".to_vec()),
                ],
                "",
            ));
        }
        RequestAction::Continue(vec![Edit::SetPath(path)])
    }
}

impl PypiSlash {
    /// The canonical path and query when `path_and_query` is a simple page
    /// spelled otherwise.
    fn canonical(&self, path_and_query: &str) -> Option<String> {
        let (path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path_and_query, None),
        };
        let prefix = self
            .config
            .prefixes
            .iter()
            .find(|p| path.starts_with(p.as_str()))?;
        let rest = &path[prefix.len()..];
        let name = rest.strip_suffix('/').unwrap_or(rest);
        if name.is_empty() || name.contains('/') {
            return None;
        }
        let canonical = format!("{prefix}{}/", normalize(name));
        if canonical == path {
            return None;
        }
        Some(match query {
            Some(query) => format!("{canonical}?{query}"),
            None => canonical,
        })
    }
}

/// PEP 503: runs of `-`, `_`, `.` become one `-`; lowercase.
fn normalize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut in_run = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !in_run {
                out.push('-');
            }
            in_run = true;
        } else {
            out.extend(c.to_lowercase());
            in_run = false;
        }
    }
    out
}

proxlet_plugin::export!(PypiSlash);
