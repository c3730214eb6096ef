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
    cachepath, log, text_response, tree, FlowInfo, Hooks, Level, Plugin, RequestAction,
    RequestHead, ResponseAction, ResponseHead,
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
        let config: Config = proxlet_plugin::config(config)?;
        if let Some(bad) = config.statuses.iter().find(|s| !(100..=999).contains(*s)) {
            return Err(format!("statuses: {bad} is not an HTTP status"));
        }
        Ok(Self { config })
    }

    fn on_request(&mut self, _: &FlowInfo, request: &RequestHead) -> RequestAction {
        if !matches!(request.method().as_str(), "GET" | "HEAD") {
            return RequestAction::Continue(Vec::new());
        }
        let url = request.url();
        let Ok(rel) = cachepath::url_to_path(&url) else {
            return RequestAction::Continue(Vec::new());
        };
        let path = self.guest(&rel);
        let Ok(target) = std::fs::read_link(&path) else {
            return RequestAction::Continue(Vec::new());
        };
        let code = target.to_str().and_then(|t| t.parse::<u16>().ok());
        // Credentials are asked for only now: most paths hold no link.
        match code {
            Some(status)
                if (100..=999).contains(&status)
                    && !credentialed(request)
                    && !self.below_a_link(&url, &rel) =>
            {
                RequestAction::Respond(text_response(
                    status,
                    vec![("x-proxlet".into(), b"error-links;hit".to_vec())],
                    &format!("proxlet error-links: {url} answered {status} (stored as {path})\n"),
                ))
            }
            _ => RequestAction::Continue(Vec::new()),
        }
    }

    fn on_response(
        &mut self,
        _: &FlowInfo,
        request: &RequestHead,
        response: &ResponseHead,
    ) -> ResponseAction {
        let status = response.status();
        if !self.config.statuses.contains(&status)
            || request.method() != "GET"
            || credentialed(request)
        {
            return ResponseAction::Continue(Vec::new());
        }
        let url = request.url();
        let Ok(rel) = cachepath::url_to_path(&url) else {
            return ResponseAction::Continue(Vec::new());
        };
        let path = self.guest(&rel);
        // Only where nothing is (a cached file or directory stays), and
        // only through real directories.
        if std::fs::symlink_metadata(&path).is_err() && !self.below_a_link(&url, &rel) {
            let linked = std::path::Path::new(&path)
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| {
                    #[allow(deprecated)] // the portable spelling; WASI has no `unix` module
                    std::fs::soft_link(status.to_string(), &path)
                });
            match linked {
                Ok(()) => log(Level::Info, &format!("stored {url} as {path} -> {status}")),
                Err(e) => log(
                    Level::Error,
                    &format!("cannot link {path} -> {status}: {e}"),
                ),
            }
        }
        ResponseAction::Continue(Vec::new())
    }
}

impl ErrorLinks {
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

/// Whether a request carries credentials (`Authorization`, `Cookie`): a link
/// stored from an anonymous answer says nothing about what a signed-in
/// client gets. Up to three host calls, so asked after cheaper checks.
fn credentialed(request: &RequestHead) -> bool {
    ["authorization", "proxy-authorization", "cookie"]
        .iter()
        .any(|name| request.has_header(name))
}

proxlet_plugin::export!(ErrorLinks);
