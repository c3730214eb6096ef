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
//! - `upper`: asks for request bodies and sends them upper-cased
//! - `url`: answers with the URL it was shown
//! - `plant`: plants `/data/dirlink -> TARGET` and `/data/filelink ->
//!   TARGET/secret.txt` (TARGET from config, relative, leading out of the
//!   grant), then by the URL's last segment: `serve-file` answers with
//!   `/data/filelink`, `serve-below` with `/data/dirlink/secret.txt`,
//!   `store-below` stores the response as `/data/dirlink/stored.txt`,
//!   `sidecar-below` stores it as `/data/ok.txt` with a sidecar
//!   `/data/dirlink/side.txt`

use proxlet_plugin::{
    set_header, url_parts, Body, FlowInfo, Hooks, Plugin, RequestAction, RequestBodyAction,
    RequestHead, Response, ResponseAction, ResponseBodyAction, ResponseHead, Sidecar, Store,
};

/// The last segment of the URL path, without the query.
fn last_segment(url: &str) -> &str {
    let path = url_parts(url).map(|(_, _, _, p)| p).unwrap_or("/");
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

/// `/data/` + the last segment of the URL path.
fn data_path(url: &str) -> String {
    format!("/data/{}", last_segment(url))
}

struct Sandbox {
    mode: String,
    target: String,
}

/// The string value of `"key"` in a flat JSON object.
fn config_value(config: &str, key: &str) -> Option<String> {
    config
        .split_once(&format!("\"{key}\""))
        .and_then(|(_, rest)| rest.split('"').nth(1))
        .map(str::to_owned)
}

fn text_response(text: String) -> RequestAction {
    RequestAction::Respond(Response {
        head: ResponseHead {
            status: 200,
            headers: vec![("content-type".into(), b"text/plain".to_vec())],
        },
        body: Body::Bytes(text.into_bytes()),
    })
}

impl Plugin for Sandbox {
    const HOOKS: Hooks = Hooks::all();

    fn new(config: &str) -> Result<Self, String> {
        Ok(Sandbox {
            mode: config_value(config, "mode").unwrap_or_else(|| "ok".into()),
            target: config_value(config, "target").unwrap_or_default(),
        })
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
                set_header(
                    &mut edited.headers,
                    "x-saw-credentials",
                    if saw { "yes" } else { "no" },
                );
                set_header(&mut edited.headers, "authorization", "Bearer from-plugin");
                RequestAction::Continue(Some(edited))
            }
            "serve" => RequestAction::Respond(Response {
                head: ResponseHead {
                    status: 200,
                    headers: vec![("x-served-by".into(), b"sandbox".to_vec())],
                },
                body: Body::File(data_path(&head.url)),
            }),
            "upper" => RequestAction::NeedBody(None),
            "url" => text_response(head.url.clone()),
            "plant" => {
                self.plant();
                let file = match last_segment(&head.url) {
                    "serve-file" => "/data/filelink",
                    "serve-below" => "/data/dirlink/secret.txt",
                    _ => return RequestAction::Continue(None),
                };
                RequestAction::Respond(Response {
                    head: ResponseHead {
                        status: 200,
                        headers: vec![("x-served-by".into(), b"sandbox".to_vec())],
                    },
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
            _ => RequestAction::Continue(None),
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
            "teh" => ResponseAction::NeedBody(None),
            "store" => ResponseAction::Store(Store {
                path: data_path(&request.url),
                head: None,
                sidecar: None,
            }),
            "plant" => match last_segment(&request.url) {
                "store-below" => ResponseAction::Store(Store {
                    path: "/data/dirlink/stored.txt".into(),
                    head: None,
                    sidecar: None,
                }),
                "sidecar-below" => ResponseAction::Store(Store {
                    path: "/data/ok.txt".into(),
                    head: None,
                    sidecar: Some(Sidecar {
                        path: "/data/dirlink/side.txt".into(),
                        contents: b"side".to_vec(),
                    }),
                }),
                _ => ResponseAction::Continue(None),
            },
            _ => ResponseAction::Continue(None),
        }
    }
}

proxlet_plugin::export!(Sandbox);
