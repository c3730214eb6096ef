//! A plugin that misbehaves on purpose, as its config `{"mode": …}` says:
//! - `loop`: never returns from `on-request`
//! - `alloc`: allocates until something stops it
//! - `files`: tries files inside and outside its granted `/data`, answers with what happened
//! - `panic`: panics in `on-request`
//! - `creds`: reports whether it saw credentials and tries to set `authorization`
//! - `serve`: answers with the file `/data/<last URL segment>`
//! - `store`: stores every response body as `/data/<last URL segment>`
//! - `net`: tries to connect to `target` and to read the environment, answers with what happened
//! - `teh`: asks for response bodies and replaces "the" with "teh"
//! - `framing`: edits the response's framing fields (which the host keeps)
//!   and adds `x-kept: 1`
//! - `upper`: asks for request bodies and sends them upper-cased
//! - `url`: answers with the URL it was shown
//! - `plant`: plants `/data/dirlink -> TARGET` and `/data/filelink ->
//!   TARGET/secret.txt` (TARGET from config, relative, leading out of the
//!   grant), then by the URL's last segment: `serve-file` answers with
//!   `/data/filelink`, `serve-below` with `/data/dirlink/secret.txt`,
//!   `store-below` stores the response as `/data/dirlink/stored.txt`,
//!   `sidecar-below` stores it as `/data/ok.txt` with a sidecar
//!   `/data/dirlink/side.txt`
//! - `websocket`: wants the messages of every WebSocket whose path does not
//!   contain "ignore"; the client's text messages go on upper-cased, those
//!   containing "drop" not at all, one containing "inject" is followed by
//!   "injected by plugin" to the client, and one containing "panic" panics

use proxlet_plugin::{
    serde::Deserialize, Body, Edit, FlowInfo, Hooks, Message, MessageDecision, Payload, Plugin,
    RequestAction, RequestBodyAction, RequestHead, Response, ResponseAction, ResponseBodyAction,
    ResponseHead, Sidecar, Store,
};

/// The last segment of a path, without the query.
fn last_segment(path: &str) -> &str {
    let path = path.split('?').next().unwrap_or_default();
    path.rsplit('/').next().unwrap_or_default()
}

impl Sandbox {
    /// Links out of the grant, made through WASI as any guest can.
    fn plant(&self) {
        #[allow(deprecated)] // the portable spelling; WASI has no `unix` module
        {
            let _ = std::fs::soft_link(&self.target, "/data/dirlink");
            let _ = std::fs::soft_link(format!("{}/secret.txt", self.target), "/data/filelink");
        }
    }
}

/// `/data/` + the last segment of the request's path.
fn data_path(request: &RequestHead) -> String {
    format!("/data/{}", last_segment(&request.path()))
}

/// The plugin is its config: `{"mode": "…", "target": "…"}`.
#[derive(Deserialize, Default)]
#[serde(crate = "proxlet_plugin::serde", default)]
struct Sandbox {
    /// What to do (see the list above); none or another does nothing.
    mode: String,
    /// `net`: the address to connect to; `plant`: where the links lead.
    target: String,
}

fn text_response(text: String) -> RequestAction {
    RequestAction::Respond(Response {
        status: 200,
        headers: vec![("content-type".into(), b"text/plain".to_vec())],
        body: Body::Bytes(text.into_bytes()),
    })
}

impl Plugin for Sandbox {
    const HOOKS: Hooks = Hooks::all();

    fn new(config: &str) -> Result<Self, String> {
        proxlet_plugin::config(config)
    }

    fn on_request(&mut self, _: &FlowInfo, request: &RequestHead) -> RequestAction {
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
                text_response(report)
            }
            "creds" => {
                // Every accessor, each reported: "yes" only when all of
                // them showed the credentials, "no" when none did.
                let secret = |name: &str| name == "authorization" || name == "cookie";
                let seen = [
                    request.header("authorization").is_some(),
                    request.header("cookie").is_some(),
                    !request.header_all("cookie").is_empty(),
                    request.has_header("authorization"),
                    request.headers().iter().any(|(n, _)| secret(n)),
                ];
                let saw = match seen {
                    s if s.iter().all(|&x| x) => "yes".to_owned(),
                    s if !s.iter().any(|&x| x) => "no".to_owned(),
                    s => format!("partly {s:?}"),
                };
                RequestAction::Continue(vec![
                    Edit::set_header("x-saw-credentials", saw),
                    Edit::set_header("authorization", "Bearer from-plugin"),
                    Edit::append_header("cookie", "planted=1"),
                ])
            }
            "serve" => RequestAction::Respond(Response {
                status: 200,
                headers: vec![("x-served-by".into(), b"sandbox".to_vec())],
                body: Body::File(data_path(request)),
            }),
            "upper" => RequestAction::NeedBody(Vec::new()),
            "url" => text_response(request.url()),
            "plant" => {
                self.plant();
                let file = match last_segment(&request.path()) {
                    "serve-file" => "/data/filelink",
                    "serve-below" => "/data/dirlink/secret.txt",
                    _ => return RequestAction::Continue(Vec::new()),
                };
                RequestAction::Respond(Response {
                    status: 200,
                    headers: vec![("x-served-by".into(), b"sandbox".to_vec())],
                    body: Body::File(file.into()),
                })
            }
            "net" => {
                let connect = match std::net::TcpStream::connect(self.target.as_str()) {
                    Ok(_) => "connect: connected".to_owned(),
                    Err(e) => format!("connect: denied ({e})"),
                };
                let env = match std::env::vars().count() {
                    0 => "env: empty".to_owned(),
                    n => format!("env: {n} variables"),
                };
                text_response(format!("{connect}\n{env}"))
            }
            _ => RequestAction::Continue(Vec::new()),
        }
    }

    fn on_request_body(
        &mut self,
        _: &FlowInfo,
        _: &RequestHead,
        body: Vec<u8>,
    ) -> RequestBodyAction {
        RequestBodyAction::Replace(body.to_ascii_uppercase())
    }

    fn on_response_body(
        &mut self,
        _: &FlowInfo,
        _: &RequestHead,
        _: &ResponseHead,
        body: Vec<u8>,
    ) -> ResponseBodyAction {
        let text = String::from_utf8_lossy(&body).replace("the", "teh");
        ResponseBodyAction::Replace(text.into_bytes())
    }

    fn on_response(
        &mut self,
        _: &FlowInfo,
        request: &RequestHead,
        _: &ResponseHead,
    ) -> ResponseAction {
        match self.mode.as_str() {
            "teh" => ResponseAction::NeedBody(Vec::new()),
            "framing" => ResponseAction::Continue(vec![
                Edit::set_header("content-length", "999"),
                Edit::set_header("transfer-encoding", "chunked"),
                Edit::remove_header("Content-Length"),
                Edit::set_header("x-kept", "1"),
            ]),
            "store" => ResponseAction::Store(Store {
                path: data_path(request),
                edits: Vec::new(),
                sidecar: None,
            }),
            "plant" => match last_segment(&request.path()) {
                "store-below" => ResponseAction::Store(Store {
                    path: "/data/dirlink/stored.txt".into(),
                    edits: Vec::new(),
                    sidecar: None,
                }),
                "sidecar-below" => ResponseAction::Store(Store {
                    path: "/data/ok.txt".into(),
                    edits: Vec::new(),
                    sidecar: Some(Sidecar {
                        path: "/data/dirlink/side.txt".into(),
                        contents: b"side".to_vec(),
                    }),
                }),
                _ => ResponseAction::Continue(Vec::new()),
            },
            _ => ResponseAction::Continue(Vec::new()),
        }
    }

    fn on_websocket_open(&mut self, _: &FlowInfo, request: &RequestHead) -> bool {
        self.mode == "websocket" && !request.path().contains("ignore")
    }

    fn on_websocket_message(&mut self, _: &FlowInfo, message: Message) -> MessageDecision {
        let text = match (message.from_client, message.payload.text) {
            (true, true) => String::from_utf8_lossy(&message.payload.data).into_owned(),
            _ => return MessageDecision::pass(),
        };
        if text.contains("panic") {
            panic!("boom from the sandbox plugin's WebSocket hook");
        }
        if text.contains("drop") {
            return MessageDecision::drop();
        }
        let decision = MessageDecision::replace(Payload::text(text.to_uppercase()));
        match text.contains("inject") {
            true => decision.inject(true, Payload::text("injected by plugin")),
            false => decision,
        }
    }
}

proxlet_plugin::export!(Sandbox);
