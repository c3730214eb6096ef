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

pub struct Origin {
    pub addr: SocketAddr,
    pub ca: Option<Arc<TestCa>>,
    hits: Arc<Mutex<HashMap<String, usize>>>,
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

    fn start(ca: Option<Arc<TestCa>>) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        // Bound with std so starting an origin works inside async tests too.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(Mutex::new(HashMap::new()));
        let acceptor = ca
            .as_ref()
            .map(|ca| tokio_rustls::TlsAcceptor::from(Arc::new(ca.server_config())));
        let counter = hits.clone();
        runtime.spawn(async move {
            let listener = TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let acceptor = acceptor.clone();
                let hits = counter.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| route(req, hits.clone()));
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
        Self {
            addr,
            ca,
            hits,
            runtime: Some(runtime),
        }
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

async fn route(
    req: Request<Incoming>,
    hits: Arc<Mutex<HashMap<String, usize>>>,
) -> Result<Response<OriginBody>, Infallible> {
    let path = req.uri().path().to_owned();
    *hits.lock().unwrap().entry(path.clone()).or_default() += 1;
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
