//! The `error-links` plugin: an upstream answer with a status in the
//! configured set is remembered as a symlink at the URL's cache path pointing
//! to a file named by the code (`path -> 404`, which does not exist), and
//! replayed without contacting the upstream. Deleting the link forgets it.

use proxlet_plugin::{
    cachepath, log, text_response, FlowInfo, Hooks, Level, Plugin, RequestAction, RequestHead,
    ResponseAction, ResponseHead,
};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    /// The cache directory as the plugin sees it.
    dir: String,
    /// Statuses remembered. 5xx and 429 are transient: storing them would
    /// let an outage poison an offline cache, so they are not by default.
    statuses: Vec<u16>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            dir: "/cache".into(),
            statuses: vec![404, 410],
        }
    }
}

struct ErrorLinks {
    config: Config,
}

impl Plugin for ErrorLinks {
    const HOOKS: Hooks = Hooks::ON_REQUEST.union(Hooks::ON_RESPONSE);

    fn new(config: &str) -> Result<Self, String> {
        let config: Config =
            serde_json::from_str(config).map_err(|e| format!("error-links config: {e}"))?;
        if let Some(bad) = config.statuses.iter().find(|s| !(100..=999).contains(*s)) {
            return Err(format!("error-links config: {bad} is not an HTTP status"));
        }
        Ok(Self { config })
    }

    fn on_request(&mut self, _: &FlowInfo, head: &RequestHead) -> RequestAction {
        let Some(path) = self.path(head) else {
            return RequestAction::Continue(None);
        };
        let Ok(target) = std::fs::read_link(&path) else {
            return RequestAction::Continue(None);
        };
        let code = target.to_str().and_then(|t| t.parse::<u16>().ok());
        match code {
            Some(status) if (100..=999).contains(&status) => RequestAction::Respond(text_response(
                status,
                vec![("x-proxlet".into(), b"error-links;hit".to_vec())],
                &format!(
                    "proxlet error-links: {} answered {status} (stored as {path})\n",
                    head.url
                ),
            )),
            _ => RequestAction::Continue(None),
        }
    }

    fn on_response(
        &mut self,
        _: &FlowInfo,
        request: &RequestHead,
        response: &ResponseHead,
    ) -> ResponseAction {
        if request.method != "GET" || !self.config.statuses.contains(&response.status) {
            return ResponseAction::Continue(None);
        }
        let Some(path) = self.path(request) else {
            return ResponseAction::Continue(None);
        };
        // Only where nothing is: a cached file or directory stays.
        if std::fs::symlink_metadata(&path).is_err() {
            let linked = std::path::Path::new(&path)
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| {
                    #[allow(deprecated)] // the portable spelling; WASI has no `unix` module
                    std::fs::soft_link(response.status.to_string(), &path)
                });
            match linked {
                Ok(()) => log(
                    Level::Info,
                    &format!("stored {} as {path} -> {}", request.url, response.status),
                ),
                Err(e) => log(
                    Level::Error,
                    &format!("cannot link {path} -> {}: {e}", response.status),
                ),
            }
        }
        ResponseAction::Continue(None)
    }
}

impl ErrorLinks {
    fn path(&self, head: &RequestHead) -> Option<String> {
        if !matches!(head.method.as_str(), "GET" | "HEAD") {
            return None;
        }
        let rel = cachepath::url_to_path(&head.url).ok()?;
        Some(format!("{}/{rel}", self.config.dir))
    }
}

proxlet_plugin::export!(ErrorLinks);
