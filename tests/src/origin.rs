//! A loopback origin server (HTTP/1.1 and HTTP/2, plain or TLS) with the
//! endpoints the tests need; it counts the requests it receives per path.
//!
//! - `/bytes/N`: N bytes of [`pattern`] with Content-Length, streamed
//! - `/chunked/N`: the same without Content-Length (chunked in HTTP/1.1)
//! - `/slow/MS`: answers "slow" after MS milliseconds
//! - `/status/CODE`: that status
//! - `/redirect`: 302 to `/bytes/5`
//! - `/echo`: the request head and body as text
//! - `/count`: the number of request body bytes received
//! - `/version`: the HTTP version the origin saw
//! - `/gzip`: a gzip-encoded English text ([`GZIP_TEXT`])
//! - `/headers/NAME?Field=value&…`: 200 `headers NAME` with each query pair
//!   (percent-decoded) as a response field, e.g. `Set-Cookie`, `Vary`
//! - documents added with [`Origin::put`] (negotiated by `Accept`, with
//!   ETag/If-None-Match and 301s to the slashed path)

use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::net::TcpListener;

use crate::TestCa;

/// What `/gzip` sends, before compression.
pub const GZIP_TEXT: &str = "the quick brown fox jumps over the lazy dog\n";

/// The byte at offset `i` of every generated body.
pub fn pattern_byte(i: u64) -> u8 {
    b"abcdefghijklmnopqrstuvwxyz0123456789\n"[(i % 37) as usize]
}

/// The first `n` bytes of the body `/bytes/N` serves.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n as u64).map(pattern_byte).collect()
}

/// Documents served at exact paths (compared percent-decoded), each with
/// one or more representations chosen by `Accept`.
pub type Documents = Arc<Mutex<HashMap<String, Vec<(String, Bytes)>>>>;

pub struct Origin {
    pub addr: SocketAddr,
    pub ca: Option<Arc<TestCa>>,
    hits: Arc<Mutex<HashMap<String, usize>>>,
    docs: Documents,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Origin {
    /// A plain-HTTP origin on 127.0.0.1.
    pub fn http() -> Self {
        Self::start(None)
    }

    /// An HTTPS origin on 127.0.0.1 with a certificate from `ca`.
    pub fn https(ca: Arc<TestCa>) -> Self {
        Self::start(Some(ca))
    }

    /// An origin at `addr` (HTTPS with `ca`'s certificate when given), bound
    /// in the calling thread's network namespace.
    pub fn at(addr: std::net::SocketAddr, ca: Option<Arc<TestCa>>) -> Self {
        let mut origin = Self {
            addr,
            ca,
            hits: Default::default(),
            docs: Default::default(),
            runtime: None,
        };
        origin.serve();
        origin
    }

    /// An HTTPS origin with a throwaway CA of its own, named `ca_name`.
    pub fn https_with_ca(ca_name: &str) -> Self {
        Self::https(Arc::new(TestCa::new(ca_name)))
    }

    /// The path of the origin's CA certificate, for `--upstream-ca`.
    pub fn ca_pem(&self) -> String {
        let ca = self.ca.as_ref().expect("an HTTPS origin");
        ca.path().to_str().expect("a UTF-8 temp path").to_owned()
    }

    fn start(ca: Option<Arc<TestCa>>) -> Self {
        Self::at("127.0.0.1:0".parse().unwrap(), ca)
    }

    /// Serves `representations` (content type, body) at `path`: with more
    /// than one, `Accept` picks and the response says `Vary: Accept`. A
    /// request for `path` without its trailing `/` is redirected (301).
    pub fn put(&self, path: &str, representations: Vec<(&str, Vec<u8>)>) {
        let representations = representations
            .into_iter()
            .map(|(kind, body)| (kind.to_owned(), Bytes::from(body)))
            .collect();
        self.docs
            .lock()
            .unwrap()
            .insert(path.to_owned(), representations);
    }

    /// Stops serving the document at `path` (it is a 404 again).
    pub fn remove(&self, path: &str) {
        self.docs.lock().unwrap().remove(path);
    }

    /// Stops serving: the port refuses connections until [`Origin::restart`].
    pub fn stop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
        // Let the runtime's threads close the listener.
        std::thread::sleep(Duration::from_millis(50));
    }

    /// Serves again on the same address.
    pub fn restart(&mut self) {
        self.stop();
        self.serve();
    }

    fn serve(&mut self) {
        let (runtime, listener) = crate::loopback_server(self.addr);
        self.addr = listener.local_addr().unwrap();
        let acceptor = self
            .ca
            .as_ref()
            .map(|ca| tokio_rustls::TlsAcceptor::from(Arc::new(ca.server_config())));
        let counter = self.hits.clone();
        let docs = self.docs.clone();
        runtime.spawn(async move {
            let listener = TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let acceptor = acceptor.clone();
                let hits = counter.clone();
                let docs = docs.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        route(req, hits.clone(), docs.clone())
                    });
                    let builder = auto::Builder::new(TokioExecutor::new());
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(tls) = acceptor.accept(stream).await {
                                let _ = builder.serve_connection(TokioIo::new(tls), service).await;
                            }
                        }
                        None => {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
            }
        });
        self.runtime = Some(runtime);
    }

    /// `scheme://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.ca.is_some() { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.addr)
    }

    /// How many requests reached `path`.
    pub fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

type OriginBody = BoxBody<Bytes, Infallible>;

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<OriginBody> {
    let mut response = Response::new(Full::new(body.into()).boxed());
    *response.status_mut() = status;
    response
}

/// `%XX` decoded (lossy), for matching document paths.
fn decode(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).and_then(|b| hex(*b)),
            bytes.get(i + 2).and_then(|b| hex(*b)),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The representation `accept` likes best (first listed wins ties).
fn negotiate<'a>(accept: &str, representations: &'a [(String, Bytes)]) -> &'a (String, Bytes) {
    let quality = |kind: &str| {
        accept
            .split(',')
            .filter_map(|range| {
                let mut parts = range.split(';');
                let name = parts.next()?.trim();
                let q = parts
                    .find_map(|p| p.trim().strip_prefix("q=")?.parse::<f32>().ok())
                    .unwrap_or(1.0);
                (name == kind || name == "*/*").then_some(q)
            })
            .fold(0.0f32, f32::max)
    };
    representations
        .iter()
        .rev()
        .max_by(|a, b| quality(&a.0).total_cmp(&quality(&b.0)))
        .unwrap()
}

fn document(req: &Request<Incoming>, docs: &Documents) -> Option<Response<OriginBody>> {
    let path = decode(req.uri().path());
    let docs = docs.lock().unwrap();
    let Some(representations) = docs.get(&path) else {
        let slashed = format!("{path}/");
        return docs.contains_key(&slashed).then(|| {
            let mut response = text(StatusCode::MOVED_PERMANENTLY, "");
            response
                .headers_mut()
                .insert(http::header::LOCATION, slashed.parse().unwrap());
            response
        });
    };
    let accept = req
        .headers()
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("*/*");
    let (kind, body) = negotiate(accept, representations);
    let etag = format!(
        "\"{:x}-{}\"",
        body.len(),
        body.iter().map(|b| *b as u64).sum::<u64>()
    );
    if req
        .headers()
        .get(http::header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        let mut response = text(StatusCode::NOT_MODIFIED, "");
        response
            .headers_mut()
            .insert(http::header::ETAG, etag.parse().unwrap());
        return Some(response);
    }
    let mut response = text(StatusCode::OK, body.clone());
    let headers = response.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, kind.parse().unwrap());
    headers.insert(http::header::ETAG, etag.parse().unwrap());
    if representations.len() > 1 {
        headers.insert(http::header::VARY, "Accept".parse().unwrap());
    }
    Some(response)
}

async fn route(
    req: Request<Incoming>,
    hits: Arc<Mutex<HashMap<String, usize>>>,
    docs: Documents,
) -> Result<Response<OriginBody>, Infallible> {
    let path = req.uri().path().to_owned();
    *hits.lock().unwrap().entry(path.clone()).or_default() += 1;
    if let Some(response) = document(&req, &docs) {
        return Ok(response);
    }
    let mut segments = path.trim_start_matches('/').splitn(2, '/');
    let first = segments.next().unwrap_or("");
    let arg = segments.next().unwrap_or("");
    Ok(match first {
        "bytes" | "chunked" => {
            let n: u64 = arg.parse().unwrap_or(0);
            let body = Pattern::new(n, first == "bytes");
            Response::new(body.boxed())
        }
        "slow" => {
            tokio::time::sleep(Duration::from_millis(arg.parse().unwrap_or(1000))).await;
            text(StatusCode::OK, "slow")
        }
        "status" => {
            let code = arg.parse().ok().and_then(|c| StatusCode::from_u16(c).ok());
            let code = code.unwrap_or(StatusCode::BAD_REQUEST);
            text(code, format!("status {}", code.as_u16()))
        }
        "redirect" => {
            let mut response = text(StatusCode::FOUND, "");
            response
                .headers_mut()
                .insert(http::header::LOCATION, "/bytes/5".parse().unwrap());
            response
        }
        "version" => text(StatusCode::OK, format!("{:?}", req.version())),
        "headers" => {
            let mut response = text(StatusCode::OK, format!("headers {arg}"));
            for pair in req.uri().query().unwrap_or_default().split('&') {
                let Some((name, value)) = pair.split_once('=') else {
                    continue;
                };
                if let (Ok(name), Ok(value)) = (
                    http::HeaderName::from_bytes(decode(name).as_bytes()),
                    http::HeaderValue::from_str(&decode(value)),
                ) {
                    response.headers_mut().append(name, value);
                }
            }
            response
        }
        "gzip" => {
            use std::io::Write;
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            gz.write_all(GZIP_TEXT.repeat(100).as_bytes()).unwrap();
            let mut response = text(StatusCode::OK, gz.finish().unwrap());
            response
                .headers_mut()
                .insert(http::header::CONTENT_ENCODING, "gzip".parse().unwrap());
            response
        }
        "echo" => {
            let mut head = format!("{} {} {:?}\n", req.method(), req.uri(), req.version());
            for (name, value) in req.headers() {
                head.push_str(&format!(
                    "{name}: {}\n",
                    String::from_utf8_lossy(value.as_bytes())
                ));
            }
            head.push('\n');
            let body = req.into_body().collect().await.map(|b| b.to_bytes());
            let mut out = head.into_bytes();
            out.extend_from_slice(&body.unwrap_or_default());
            text(StatusCode::OK, out)
        }
        "count" => {
            let mut body = req.into_body();
            let mut n = 0u64;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(frame) => n += frame.data_ref().map_or(0, |d| d.len() as u64),
                    Err(_) => return Ok(text(StatusCode::BAD_REQUEST, "body error")),
                }
            }
            text(StatusCode::OK, n.to_string())
        }
        _ => text(StatusCode::NOT_FOUND, "no such endpoint"),
    })
}

/// A generated body of `remaining` pattern bytes, sent in 64 KiB frames.
struct Pattern {
    offset: u64,
    len: u64,
    sized: bool,
}

const CHUNK: u64 = 64 * 1024;

impl Pattern {
    fn new(len: u64, sized: bool) -> Self {
        Self {
            offset: 0,
            len,
            sized,
        }
    }
}

impl Body for Pattern {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.offset >= self.len {
            return Poll::Ready(None);
        }
        let n = CHUNK.min(self.len - self.offset);
        // One pre-made buffer, sliced at the pattern phase: no per-byte work.
        static BUFFER: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
        let buffer = BUFFER.get_or_init(|| Bytes::from(pattern(CHUNK as usize + 37)));
        let phase = (self.offset % 37) as usize;
        self.offset += n;
        Poll::Ready(Some(Ok(Frame::data(
            buffer.slice(phase..phase + n as usize),
        ))))
    }

    fn is_end_stream(&self) -> bool {
        self.offset >= self.len
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        if self.sized {
            hyper::body::SizeHint::with_exact(self.len - self.offset)
        } else {
            hyper::body::SizeHint::default()
        }
    }
}
