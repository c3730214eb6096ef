//! The `error-links` plugin: an upstream answer with a status in the
//! configured set is remembered as a symlink at the URL's cache path pointing
//! to a file named by the code (`path -> 404`, which does not exist), and
//! replayed without contacting the upstream. Deleting the link forgets it.
//!
//! A link is an answer, never a directory: a request below one
//! (`t/bob/x` with `t/bob -> 404`) is a miss, and nothing is linked through
//! it. Requests with credentials neither replay nor store links: the
//! upstream may answer a signed-in client differently.

use proxlet_plugin::{
    cachepath, has_header, log, text_response, tree, FlowInfo, Headers, Hooks, Level, Plugin,
    RequestAction, RequestHead, ResponseAction, ResponseHead,
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
        let Some(rel) = self.rel(head) else {
            return RequestAction::Continue(None);
        };
        let path = self.guest(&rel);
        let Ok(target) = std::fs::read_link(&path) else {
            return RequestAction::Continue(None);
        };
        let code = target.to_str().and_then(|t| t.parse::<u16>().ok());
        match code {
            Some(status)
                if (100..=999).contains(&status) && !self.below_a_link(&head.url, &rel) =>
            {
                RequestAction::Respond(text_response(
                    status,
                    vec![("x-proxlet".into(), b"error-links;hit".to_vec())],
                    &format!(
                        "proxlet error-links: {} answered {status} (stored as {path})\n",
                        head.url
                    ),
                ))
            }
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
        let Some(rel) = self.rel(request) else {
            return ResponseAction::Continue(None);
        };
        let path = self.guest(&rel);
        // Only where nothing is (a cached file or directory stays), and
        // only through real directories.
        if std::fs::symlink_metadata(&path).is_err() && !self.below_a_link(&request.url, &rel) {
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
    /// The cache path of a request this plugin handles: an anonymous `GET`
    /// or `HEAD` (a link stored from an anonymous answer says nothing about
    /// what a signed-in client gets).
    fn rel(&self, head: &RequestHead) -> Option<String> {
        if !matches!(head.method.as_str(), "GET" | "HEAD") || credentialed(&head.headers) {
            return None;
        }
        cachepath::url_to_path(&head.url).ok()
    }

    fn guest(&self, rel: &str) -> String {
        format!("{}/{rel}", self.config.dir)
    }

    /// Whether a directory on the way to `rel` is a symlink (an error link),
    /// which would make `rel` an alias of a path beside it.
    fn below_a_link(&self, url: &str, rel: &str) -> bool {
        let Some(link) = tree::symlinked_ancestor(&self.config.dir, rel) else {
            return false;
        };
        log(
            Level::Debug,
            &format!("{url} is below the symlink {link}: not an error link"),
        );
        true
    }
}

/// Whether a request carries credentials (`Authorization`, `Cookie`).
fn credentialed(headers: &Headers) -> bool {
    ["authorization", "proxy-authorization", "cookie"]
        .iter()
        .any(|name| has_header(headers, name))
}

proxlet_plugin::export!(ErrorLinks);
