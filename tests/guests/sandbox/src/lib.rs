//! A plugin that misbehaves on purpose, as its config `{"mode": …}` says:
//! - `loop`: never returns from `on-request`
//! - `alloc`: allocates until something stops it
//! - `files`: tries files inside and outside its granted `/data`, answers with what happened
//! - `panic`: panics in `on-request`
//! - `creds`: reports whether it saw credentials and tries to set `authorization`

use proxlet_plugin::{
    set_header, Body, FlowInfo, Hooks, Plugin, RequestAction, RequestHead, Response, ResponseHead,
};

struct Sandbox {
    mode: String,
}

impl Plugin for Sandbox {
    const HOOKS: Hooks = Hooks::ON_REQUEST;

    fn new(config: &str) -> Result<Self, String> {
        let mode = config
            .split_once("\"mode\"")
            .and_then(|(_, rest)| rest.split('"').nth(1))
            .unwrap_or("ok")
            .to_owned();
        Ok(Sandbox { mode })
    }

    fn on_request(&mut self, _: &FlowInfo, head: &RequestHead) -> RequestAction {
        match self.mode.as_str() {
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "alloc" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "panic" => panic!("boom from the sandbox plugin"),
            "files" => {
                let probe = |path: &str| match std::fs::read(path) {
                    Ok(_) => format!("{path}: read"),
                    Err(e) => format!("{path}: denied ({e})"),
                };
                let _ = std::fs::write("/data/own.txt", b"mine");
                let report = [
                    probe("/etc/passwd"),
                    probe("/data/../etc/passwd"),
                    probe("/data/../../etc/passwd"),
                    probe("/data/own.txt"),
                ]
                .join("\n");
                RequestAction::Respond(Response {
                    head: ResponseHead {
                        status: 200,
                        headers: vec![("content-type".into(), b"text/plain".to_vec())],
                    },
                    body: Body::Bytes(report.into_bytes()),
                })
            }
            "creds" => {
                let mut edited = head.clone();
                let saw = head
                    .headers
                    .iter()
                    .any(|(n, _)| n == "authorization" || n == "cookie");
                set_header(&mut edited.headers, "x-saw-credentials", if saw { "yes" } else { "no" });
                set_header(&mut edited.headers, "authorization", "Bearer from-plugin");
                RequestAction::Continue(Some(edited))
            }
            _ => RequestAction::Continue(None),
        }
    }
}

proxlet_plugin::export!(Sandbox);
