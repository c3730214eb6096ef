//! The admin listener (`--admin ADDR`): `/metrics` in the Prometheus text
//! exposition, for an operator's scraper, on its own address so the proxy
//! port never answers it.

use std::{convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::metrics::Metrics;

/// Scrapers and browsers open a few; more than this at once is refused.
const MAX_CONNECTIONS: usize = 64;
/// A request head must arrive within this, and an idle keep-alive
/// connection is closed after it.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves the admin endpoints on `listener` until the process ends.
pub async fn serve(listener: TcpListener, metrics: &'static Metrics) {
    serve_local(listener, "admin", move |request| async move {
        answer(metrics, &request)
    })
    .await
}

/// Serves `handler` over HTTP/1.1 on `listener` until the process ends:
/// proxlet's own small listeners (admin, web UI), with a bounded number of
/// connections and a deadline for request heads.
pub(crate) async fn serve_local<H, F, B>(listener: TcpListener, label: &'static str, handler: H)
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("{label} listener: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!("{label} listener: {MAX_CONNECTIONS} connections open, closing {peer}");
            continue;
        };
        let handler = handler.clone();
        let service = hyper::service::service_fn(move |request| {
            let answer = handler(request);
            async move { Ok::<_, Infallible>(answer.await) }
        });
        let connection = http1.serve_connection(TokioIo::new(stream), service);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("{label} connection from {peer}: {e}");
            }
            drop(slot);
        });
    }
}

fn answer(metrics: &Metrics, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let respond = |status, kind: &'static str, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, header::HeaderValue::from_static(kind));
        response
    };
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "proxlet admin: only GET\n".into(),
        );
    }
    match request.uri().path() {
        "/metrics" => respond(StatusCode::OK, OPENMETRICS, metrics.encode()),
        _ => respond(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "proxlet admin: see /metrics\n".into(),
        ),
    }
}
