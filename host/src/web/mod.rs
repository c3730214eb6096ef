//! The web UI (`--web ADDR`): the page (host/web/, embedded), its JSON API
//! (api.rs) and its event stream, on a listener of its own. Every request
//! needs the access token; the `Host` and `Origin` checks shut out
//! DNS-rebinding and cross-site pages. docs/web.md is the contract.

mod api;
mod events;
mod replay;
mod stream;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::net::TcpListener;

pub use events::{enable, events, Event, Events};

use crate::{
    plugin::{Chain, PluginEngine},
    proxy::{
        body::{full, Body},
        Proxy,
    },
};

const COOKIE: &str = "proxlet_web";
const TOKEN_FILE: &str = "web-token";

const INDEX: &str = include_str!("../../web/index.html");
const APP_JS: &str = include_str!("../../web/app.js");
const APP_CSS: &str = include_str!("../../web/app.css");

/// Everything the UI's handlers reach.
pub struct Web {
    token: String,
    home: PathBuf,
    addr: SocketAddr,
    proxy: Arc<Proxy>,
    chain: Arc<ArcSwap<Chain>>,
    engine: Option<Arc<PluginEngine>>,
    events: &'static Events,
    /// The flow list's rows as JSON, by flow id (api.rs), each with the
    /// head CRC of the record it was made from: a row is reused only for
    /// that record (a WebSocket's is replaced when it ends).
    rows: std::sync::Mutex<std::collections::HashMap<u64, (u32, Bytes)>>,
}

impl Web {
    pub fn new(
        home: &Path,
        addr: SocketAddr,
        proxy: Arc<Proxy>,
        chain: Arc<ArcSwap<Chain>>,
        engine: Option<Arc<PluginEngine>>,
    ) -> std::io::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            token: token(home)?,
            home: home.to_owned(),
            addr,
            proxy,
            chain,
            engine,
            events: enable(),
            rows: Default::default(),
        }))
    }

    /// The URL to print: it carries the token.
    pub fn url(&self) -> String {
        format!("http://{}/?token={}", self.addr, self.token)
    }
}

/// The token kept in `HOME/web-token` (0600), made on first use.
fn token(home: &Path) -> std::io::Result<String> {
    let path: PathBuf = home.join(TOKEN_FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let text = text.trim();
        if text.len() >= 32 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(text.to_owned());
        }
    }
    let mut random = [0u8; 16];
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(&mut random)?;
    let token: String = random.iter().map(|b| format!("{b:02x}")).collect();
    crate::proxy::files::write_atomically(&path, format!("{token}\n").as_bytes(), 0o600)?;
    Ok(token)
}

/// Serves the UI on `listener` until the process ends.
pub async fn serve(listener: TcpListener, web: Arc<Web>) {
    crate::admin::serve_local(listener, "web", move |request| {
        let web = web.clone();
        async move { secured(answer(&web, request).await) }
    })
    .await
}

async fn answer(web: &Arc<Web>, request: Request<Incoming>) -> Response<Body> {
    if let Err((status, why)) = web.check_origin(request.headers()) {
        return error(status, why);
    }
    let path = request.uri().path().to_owned();
    // The printed URL: sets the cookie and drops the token from the address.
    if path == "/" {
        if let Some(given) = query_param(request.uri().query(), "token") {
            if !same(&given, &web.token) {
                return error(StatusCode::FORBIDDEN, "wrong token");
            }
            let mut response = status(StatusCode::SEE_OTHER);
            let headers = response.headers_mut();
            headers.insert(header::LOCATION, HeaderValue::from_static("/"));
            let cookie = format!("{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/", web.token);
            if let Ok(cookie) = HeaderValue::from_str(&cookie) {
                headers.insert(header::SET_COOKIE, cookie);
            }
            return response;
        }
    }
    if let Err((status, why)) = web.check_token(request.headers()) {
        return error(status, why);
    }
    match (request.method(), path.as_str()) {
        (&Method::GET, "/") => asset(INDEX, "text/html; charset=utf-8"),
        (&Method::GET, "/app.js") => asset(APP_JS, "text/javascript; charset=utf-8"),
        (&Method::GET, "/app.css") => asset(APP_CSS, "text/css; charset=utf-8"),
        (&Method::GET, "/api/events") => stream::events(web),
        (_, p) if p.starts_with("/api/") => api::answer(web, request).await,
        _ => error(StatusCode::NOT_FOUND, "no such page"),
    }
}

impl Web {
    /// `Host` must name the UI (on loopback), and an `Origin` must be the
    /// UI's own.
    fn check_origin(&self, headers: &HeaderMap) -> Result<(), Refused> {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if self.addr.ip().is_loopback() && !self.names_me(host) {
            return Err((
                StatusCode::FORBIDDEN,
                "the Host header does not name this UI",
            ));
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            if origin.as_bytes() != format!("http://{host}").as_bytes() {
                return Err((StatusCode::FORBIDDEN, "cross-origin requests are refused"));
            }
        }
        Ok(())
    }

    fn names_me(&self, host: &str) -> bool {
        let port = self.addr.port();
        let Some((name, given)) = host.rsplit_once(':') else {
            return false;
        };
        given.parse() == Ok(port)
            && (name == "localhost"
                || name == "127.0.0.1"
                || name == "[::1]"
                || name.trim_start_matches('[').trim_end_matches(']') == self.addr.ip().to_string())
    }

    /// The token, from the cookie, `X-Proxlet-Token` or a bearer token.
    fn check_token(&self, headers: &HeaderMap) -> Result<(), Refused> {
        let given = headers
            .get("x-proxlet-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| {
                headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .map(str::to_owned)
            })
            .or_else(|| cookie(headers, COOKIE));
        match given {
            None => Err((
                StatusCode::UNAUTHORIZED,
                "open the URL proxlet printed (it carries the access token)",
            )),
            Some(given) if !same(&given, &self.token) => {
                Err((StatusCode::FORBIDDEN, "wrong token"))
            }
            Some(_) => Ok(()),
        }
    }
}

/// Why a request is refused.
type Refused = (StatusCode, &'static str);

/// Compares without stopping at the first difference.
fn same(given: &str, token: &str) -> bool {
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.to_owned())
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.into_owned())
}

fn status(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = status;
    response
}

fn asset(text: &'static str, kind: &'static str) -> Response<Body> {
    let mut response = Response::new(full(Bytes::from_static(text.as_bytes())));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    response
}

/// `{"error": message}` with `status`.
fn error(status: StatusCode, message: &str) -> Response<Body> {
    json(status, &serde_json::json!({ "error": message }))
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Headers every answer carries: the page runs only its own code, is
/// never framed, and nothing is cached or sniffed.
fn secured(mut response: Response<Body>) -> Response<Body> {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}
