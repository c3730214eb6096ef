//! The pooled client towards origin servers (HTTP/1.1 and HTTP/2 by ALPN),
//! and the translation of its failures into what the client should see.

use std::{error::Error as StdError, time::Duration};

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::{TokioExecutor, TokioTimer},
};

use super::body::Body;

pub struct Upstream {
    client: Client<HttpsConnector<HttpConnector>, Body>,
    timeout: Duration,
}

/// Why no upstream response came: the status and the one-line reason the
/// client gets.
#[derive(Debug)]
pub struct UpstreamError {
    pub status: StatusCode,
    pub reason: String,
}

impl UpstreamError {
    /// The failure as plugins see it in `on-error`.
    pub fn to_plugin(&self) -> crate::plugin::UpstreamError {
        use crate::plugin::ErrorKind;
        let kind = if self.status == StatusCode::GATEWAY_TIMEOUT {
            ErrorKind::Timeout
        } else if self.reason.starts_with("DNS") {
            ErrorKind::Dns
        } else if self.reason.starts_with("TLS") {
            ErrorKind::Tls
        } else if self.reason.contains("refused") || self.reason.contains("closed the connection") {
            ErrorKind::Refused
        } else {
            ErrorKind::Other
        };
        crate::plugin::UpstreamError {
            kind,
            message: self.reason.clone(),
        }
    }
}

impl Upstream {
    pub fn new(tls: rustls::ClientConfig, timeout: Duration) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeout));
        let https = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            // Fixed HTTP/2 windows bound what an upstream may send ahead of a
            // slower client: 1 MiB per stream (adaptive windows grow to
            // 16 MiB, all of it buffered here), 8 MiB per connection so
            // parallel downloads from one registry still fill a fast link.
            .http2_initial_stream_window_size(1024 * 1024)
            .http2_initial_connection_window_size(8 * 1024 * 1024)
            .build(https);
        Self { client, timeout }
    }

    /// Sends `request` (absolute URI) and waits for the response head.
    pub async fn send(&self, request: Request<Body>) -> Result<Response<Incoming>, UpstreamError> {
        let authority = request
            .uri()
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_default();
        match tokio::time::timeout(self.timeout, self.client.request(request)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(error)) => Err(classify(&error, &authority)),
            Err(_) => Err(UpstreamError {
                status: StatusCode::GATEWAY_TIMEOUT,
                reason: format!(
                    "upstream {authority} did not answer within {} ms",
                    self.timeout.as_millis()
                ),
            }),
        }
    }
}

/// Names the cause of an upstream failure: DNS, refused, TLS, timeout…
fn classify(error: &(dyn StdError + 'static), authority: &str) -> UpstreamError {
    let host = authority
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(authority);
    let bad_gateway = |reason: String| UpstreamError {
        status: StatusCode::BAD_GATEWAY,
        reason,
    };
    let mut chain = Vec::new();
    let mut next: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(e) = next {
        chain.push(e.to_string());
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return bad_gateway(match tls {
                rustls::Error::InvalidCertificate(why) => {
                    format!("TLS verification of {host} failed: {why:?}")
                }
                other => format!("TLS handshake with {host} failed: {other}"),
            });
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            match io.kind() {
                ConnectionRefused => {
                    return bad_gateway(format!("connection to {authority} refused"))
                }
                ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof => {
                    return bad_gateway(format!("upstream {authority} closed the connection: {io}"))
                }
                TimedOut => {
                    return UpstreamError {
                        status: StatusCode::GATEWAY_TIMEOUT,
                        reason: format!("connecting to {authority} timed out"),
                    }
                }
                _ => {}
            }
        }
        next = inner(e);
    }
    let all = chain.join(": ");
    if all.contains("dns error") {
        return bad_gateway(format!("DNS lookup of {host} failed"));
    }
    bad_gateway(format!("upstream {authority} failed: {all}"))
}

/// The next error in the chain. rustls errors reach us wrapped in
/// `io::Error`, whose `source()` skips the wrapped error itself, so step into
/// it explicitly.
fn inner<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a (dyn StdError + 'static)> {
    match e
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
    {
        Some(wrapped) => Some(wrapped),
        None => e.source(),
    }
}
