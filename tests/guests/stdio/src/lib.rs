//! A plugin that imports no filesystem and no sockets, so proxlet calls its
//! hooks without a fiber, and uses what WASI still gives it, as its config
//! `{"mode": …}` says:
//! - `stderr`: writes a line to stderr in `on-request` and `on-response`
//! - `sleep`: sleeps 200 ms in `on-request` (a blocking wait)
//! - `panic`: panics in `on-response`
//!
//! Responses it lets through get `x-stdio: <mode>`.

use proxlet_plugin::{
    serde::Deserialize, Edit, FlowInfo, Hooks, Plugin, RequestAction, RequestHead,
    ResponseAction, ResponseHead,
};

#[derive(Deserialize, Default)]
#[serde(crate = "proxlet_plugin::serde", default)]
struct Stdio {
    mode: String,
}

impl Plugin for Stdio {
    const HOOKS: Hooks = Hooks::ON_REQUEST.union(Hooks::ON_RESPONSE);

    fn new(config: &str) -> Result<Self, String> {
        proxlet_plugin::config(config)
    }

    fn on_request(&mut self, _: &FlowInfo, request: &RequestHead) -> RequestAction {
        match self.mode.as_str() {
            "stderr" => eprintln!("stdio plugin saw {}", request.url()),
            "sleep" => std::thread::sleep(std::time::Duration::from_millis(200)),
            _ => {}
        }
        RequestAction::Continue(Vec::new())
    }

    fn on_response(&mut self, _: &FlowInfo, _: &RequestHead, response: &ResponseHead) -> ResponseAction {
        match self.mode.as_str() {
            "stderr" => eprintln!("stdio plugin got status {}", response.status()),
            "panic" => panic!("boom from the stdio plugin"),
            _ => {}
        }
        ResponseAction::Continue(vec![Edit::set_header("x-stdio", self.mode.clone())])
    }
}

proxlet_plugin::export!(Stdio);
