//! Transparent mode (Linux): connections the kernel redirected to proxlet
//! (iptables `REDIRECT`), whose clients know nothing of a proxy. Each
//! connection goes to the address it was originally for
//! (`SO_ORIGINAL_DST`). TLS is intercepted as in a CONNECT tunnel, named by
//! its SNI (the upstream certificate is verified for that name, so the
//! name may be one proxlet cannot resolve). Plain HTTP is served with the
//! URL built from `Host`, which must resolve to the original address: a
//! client could otherwise have another site's content stored under a
//! name it does not serve (cache poisoning), so a mismatch gets 409, as in
//! Squid's `host_verify_strict`. Anything else is relayed as bytes.

use std::{net::SocketAddr, sync::Arc};

use bytes::Bytes;
use http::{header, uri::Authority, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::{
    body::{text_response, FlowRecord, Logged},
    connect::{self, TLS_HANDSHAKE},
    io::{Activity, Prefixed, Tracked},
    ConnInfo, Proxy,
};

/// Serves one redirected connection, headed for `conn.original`.
pub(crate) async fn serve(stream: TcpStream, proxy: Arc<Proxy>, conn: Arc<ConnInfo>) {
    let Some(original) = conn.original else {
        return;
    };
    let authority = match original {
        SocketAddr::V4(a) => Authority::try_from(a.to_string()),
        SocketAddr::V6(a) => Authority::try_from(format!("[{}]:{}", a.ip(), a.port())),
    };
    let Ok(authority) = authority else {
        return;
    };
    let stream = Prefixed::new(Bytes::new(), stream);
    let first = connect::opening_byte(&stream, &authority, &proxy).await;
    match first {
        // A request line starts with a method: letters.
        Some(b) if b != TLS_HANDSHAKE && b.is_ascii_uppercase() => {
            let (_, stream) = stream.into_parts();
            serve_http(stream, original, proxy, conn).await;
        }
        _ => connect::tunnel_with(stream, first, authority, proxy, conn).await,
    }
}

/// Plain HTTP/1.1 from a client that believes it talks to the origin.
async fn serve_http(
    stream: TcpStream,
    original: SocketAddr,
    proxy: Arc<Proxy>,
    conn: Arc<ConnInfo>,
) {
    let settings = &proxy.settings;
    let (client, timeout, idle) = (conn.client, settings.client_timeout, settings.idle_timeout);
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(timeout)
        .half_close(true);
    let activity = Activity::new();
    let stream = Tracked::new(stream, activity.clone());
    // The last Host checked on this connection, and whether it matched.
    let checked = Arc::new(tokio::sync::Mutex::new(None::<(Authority, bool)>));
    let service = hyper::service::service_fn({
        let (proxy, conn) = (proxy.clone(), conn.clone());
        move |request| {
            handle(
                proxy.clone(),
                conn.clone(),
                checked.clone(),
                original,
                request,
            )
        }
    });
    let connection = http1
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    let _active = crate::metrics::Active::new(crate::metrics::Conn::Client);
    let stop = conn.stop.clone();
    let driven = super::listener::drive(connection, stop, &activity, idle, client, |c| {
        c.graceful_shutdown()
    });
    if let Some(Err(e)) = driven.await {
        super::listener::log_client_error(client, &e, timeout);
    }
}

/// One plain request: served when its `Host` is where the connection was
/// headed.
async fn handle(
    proxy: Arc<Proxy>,
    conn: Arc<ConnInfo>,
    checked: Arc<tokio::sync::Mutex<Option<(Authority, bool)>>>,
    original: SocketAddr,
    request: Request<Incoming>,
) -> Result<Response<Logged<super::body::Body>>, crate::flows::replay::Killed> {
    // A client that does not know of a proxy has no tunnel to ask for.
    if request.method() == http::Method::CONNECT {
        let reason = "proxlet: CONNECT is not served on a transparent connection".to_owned();
        let status = StatusCode::METHOD_NOT_ALLOWED;
        return Ok(refused(&proxy, &conn, &request, status, reason));
    }
    let Some(authority) = named(&request) else {
        let reason = "proxlet: a request needs a Host field".to_owned();
        return Ok(refused(
            &proxy,
            &conn,
            &request,
            StatusCode::BAD_REQUEST,
            reason,
        ));
    };
    let mut last = checked.lock().await;
    let matches = match &*last {
        Some((host, matches)) if *host == authority => *matches,
        _ => {
            let matches = resolves_to(&authority, original, &proxy).await;
            *last = Some((authority.clone(), matches));
            matches
        }
    };
    drop(last);
    if !matches {
        let reason = format!(
            "proxlet: Host {authority} does not resolve to {original}, where this connection was headed"
        );
        return Ok(refused(
            &proxy,
            &conn,
            &request,
            StatusCode::CONFLICT,
            reason,
        ));
    }
    let request = absolute(request, &authority);
    crate::flow::handle(proxy, conn, request).await
}

/// The authority a plain request names: its absolute-form target's, else
/// its `Host`.
fn named(request: &Request<Incoming>) -> Option<Authority> {
    if let Some(authority) = request.uri().authority() {
        return Some(authority.clone());
    }
    let host = request.headers().get(header::HOST)?.to_str().ok()?;
    host.parse().ok()
}

/// Whether `authority` (port 80 when none) is `original`: the same
/// address, or a name proxlet resolves to it.
async fn resolves_to(authority: &Authority, original: SocketAddr, proxy: &Proxy) -> bool {
    let port = authority.port_u16().unwrap_or(80);
    if port != original.port() {
        return false;
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return ip == original.ip();
    }
    let lookup = tokio::net::lookup_host((host, port));
    match tokio::time::timeout(proxy.settings.upstream_timeout, lookup).await {
        Ok(Ok(mut addrs)) => addrs.any(|a| a == original),
        _ => false,
    }
}

/// `request` with the absolute URI `http://AUTHORITY/PATH` the pipeline
/// expects of a proxy request.
fn absolute(mut request: Request<Incoming>, authority: &Authority) -> Request<Incoming> {
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    if let Ok(uri) = Uri::builder()
        .scheme("http")
        .authority(authority.as_str())
        .path_and_query(path)
        .build()
    {
        *request.uri_mut() = uri;
    }
    request
}

/// A request proxlet answers itself, logged like any flow.
fn refused(
    proxy: &Proxy,
    conn: &ConnInfo,
    request: &Request<Incoming>,
    status: StatusCode,
    reason: String,
) -> Response<Logged<super::body::Body>> {
    let id = proxy.next_flow_id();
    let mut record = FlowRecord::new(id, conn.client, request);
    record.mode = conn.mode.name();
    record.url = super::headers::redacted(request.uri());
    record.status = status;
    record.note = Some(reason.clone());
    text_response(status, reason).map(|b| Logged::new(b, record))
}
