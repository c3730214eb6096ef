//! CONNECT tunnels (RFC 9110 §9.3.6): a TLS ClientHello is intercepted with a
//! leaf certificate from the proxlet CA; anything else, and ignored hosts,
//! are relayed byte for byte.

use std::{sync::Arc, time::Duration};

use http::{uri::Authority, Request, Response, StatusCode};
use hyper::{body::Incoming, upgrade::Upgraded};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::{
    io::{copy_bidirectional, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::LazyConfigAcceptor;

use super::{
    body::{boxed, text_response, Body, BoxError},
    io::{Activity, Prefixed, Tracked},
    ConnInfo, Proxy,
};

/// First byte of a TLS record carrying a handshake message (RFC 8446 §5.1).
pub(crate) const TLS_HANDSHAKE: u8 = 0x16;
/// How long a client may stay silent after CONNECT before we stop waiting
/// for a ClientHello and relay (server-speaks-first protocols); shorter when
/// `--client-timeout` is.
const FIRST_BYTE_WAIT: Duration = Duration::from_secs(3);

pub(crate) fn handle_connect(
    proxy: Arc<Proxy>,
    conn: Arc<ConnInfo>,
    request: Request<Incoming>,
) -> Response<Body> {
    let Some(authority) = request.uri().authority().cloned() else {
        return text_response(
            StatusCode::BAD_REQUEST,
            "proxlet: CONNECT needs a host:port target",
        );
    };
    let Some(port) = authority.port_u16() else {
        return text_response(
            StatusCode::BAD_REQUEST,
            format!("proxlet: CONNECT target {authority} has no port"),
        );
    };
    if proxy.names_web_ui(authority.host(), port) {
        return text_response(
            StatusCode::FORBIDDEN,
            "proxlet: the web UI is not reachable through the proxy",
        );
    }
    let on_upgrade = hyper::upgrade::on(request);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => return tracing::debug!("CONNECT {authority}: upgrade failed: {e}"),
        };
        let Some(stream) = into_tcp(upgraded) else {
            return tracing::error!("CONNECT {authority}: unexpected connection type");
        };
        tunnel(stream, authority, proxy, conn).await;
    });
    let mut response = Response::new(boxed(http_body_util::Empty::new()));
    *response.status_mut() = StatusCode::OK;
    response
}

/// Serves an open tunnel to `authority` (after CONNECT, or SOCKS5's): TLS
/// is intercepted, anything else (and `--ignore-hosts`) relayed. `conn`
/// (and with it the connection's --max-connections slot) lives until the
/// tunnel ends.
pub(crate) async fn tunnel(
    stream: Prefixed<TcpStream>,
    authority: Authority,
    proxy: Arc<Proxy>,
    conn: Arc<ConnInfo>,
) {
    let first = opening_byte(&stream, &authority, &proxy).await;
    tunnel_with(stream, first, authority, proxy, conn).await;
}

/// The client's first byte on a connection to `authority`, if it sends
/// one in time; `None` for `--ignore-hosts`, which are relayed unread.
pub(crate) async fn opening_byte(
    stream: &Prefixed<TcpStream>,
    authority: &Authority,
    proxy: &Proxy,
) -> Option<u8> {
    let port = authority.port_u16().unwrap_or(443);
    if proxy.is_ignored(authority.host(), port) {
        return None;
    }
    first_byte(stream, FIRST_BYTE_WAIT.min(proxy.settings.client_timeout)).await
}

/// [`tunnel`] once the client's first byte is known (`None`: it sent none
/// in time, or the host is ignored): a TLS ClientHello is intercepted,
/// anything else relayed.
pub(crate) async fn tunnel_with(
    stream: Prefixed<TcpStream>,
    first: Option<u8>,
    authority: Authority,
    proxy: Arc<Proxy>,
    conn: Arc<ConnInfo>,
) {
    let (client, timeout) = (conn.client, proxy.settings.client_timeout);
    let _active = crate::metrics::Active::new(crate::metrics::Conn::Tunnel);
    let result = match first {
        Some(TLS_HANDSHAKE) => intercept(stream, authority, proxy, conn).await,
        _ => relay(stream, &authority, &proxy, &conn).await,
    };
    if let Err(e) = result {
        super::listener::log_client_error(client, e.as_ref(), timeout);
    }
}

/// The client's TCP stream behind the upgrade, with whatever hyper already
/// read past the CONNECT head.
fn into_tcp(upgraded: Upgraded) -> Option<Prefixed<TcpStream>> {
    let parts = upgraded.downcast::<TokioIo<Tracked<TcpStream>>>().ok()?;
    Some(Prefixed::new(
        parts.read_buf,
        parts.io.into_inner().into_inner(),
    ))
}

/// The client's first byte, if it sends one within `wait`.
async fn first_byte(stream: &Prefixed<TcpStream>, wait: Duration) -> Option<u8> {
    if let Some(&b) = stream.prefix().first() {
        return Some(b);
    }
    let mut byte = [0u8; 1];
    match tokio::time::timeout(wait, stream.get_ref().peek(&mut byte)).await {
        Ok(Ok(1)) => Some(byte[0]),
        _ => None,
    }
}

/// Relays bytes between the client and `authority` untouched, until either
/// side closes, no byte has moved at all within `--client-timeout` (a TLS
/// client that never says hello to a server that waits for it), or none has
/// moved for `--idle-timeout`.
async fn relay(
    stream: Prefixed<TcpStream>,
    authority: &Authority,
    proxy: &Proxy,
    conn: &ConnInfo,
) -> Result<(), BoxError> {
    let port = authority.port_u16().unwrap_or(443);
    let mut upstream = conn
        .upstream
        .tunnel(authority.host(), port, conn.original)
        .await?;
    let (prefix, client) = stream.into_parts();
    client.set_nodelay(true)?;
    let activity = Activity::new();
    if !prefix.is_empty() {
        upstream.write_all(&prefix).await?;
        activity.touch();
    }
    let mut client = Tracked::new(client, activity.clone());
    let settings = &proxy.settings;
    tokio::select! {
        copied = copy_bidirectional(&mut client, &mut upstream) => {
            copied?;
        }
        () = activity.idle(settings.client_timeout, settings.idle_timeout) => {
            let (limit, option) = if activity.has_moved() {
                (settings.idle_timeout, "--idle-timeout")
            } else {
                (settings.client_timeout, "--client-timeout")
            };
            tracing::info!(
                "client {}: tunnel to {authority} closed after {limit:?} without a byte moving ({option})",
                conn.client
            );
        }
    }
    Ok(())
}

/// Terminates TLS with a certificate for the SNI (or the CONNECT host when
/// the client sends none, as for IP literals) and serves HTTP/1.1 or HTTP/2
/// inside, each request going through the pipeline.
async fn intercept(
    stream: Prefixed<TcpStream>,
    authority: Authority,
    proxy: Arc<Proxy>,
    conn: Arc<ConnInfo>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let _ = stream.get_ref().set_nodelay(true);
    let activity = Activity::new();
    let stream = Tracked::new(stream, activity.clone());
    let handshake = async {
        let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream).await?;
        let sni = start.client_hello().server_name().map(str::to_owned);
        let host = sni.clone().unwrap_or_else(|| authority.host().to_owned());
        let config = proxy.leaf_certs.server_config(&host)?;
        let tls = start.into_stream(config).await?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>((tls, sni))
    };
    // A partial ClientHello is a slow request head too.
    let (client_timeout, idle) = (proxy.settings.client_timeout, proxy.settings.idle_timeout);
    let Ok(tls) = tokio::time::timeout(client_timeout, handshake).await else {
        tracing::info!(
            "client {}: TLS handshake for {authority} not completed within {client_timeout:?} (--client-timeout)",
            conn.client
        );
        return Ok(());
    };
    let (tls, sni) = tls.map_err(|e| format!("TLS handshake with client failed: {e}"))?;
    // A transparent connection names its server only by SNI: the tunnel
    // (and every URL in it) is for that name, on the redirected port; the
    // upstream certificate is verified for it. Without SNI the address.
    let authority = match (conn.original, sni) {
        (Some(original), Some(name)) => {
            Authority::try_from(format!("{name}:{}", original.port())).unwrap_or(authority)
        }
        _ => authority,
    };

    let client = conn.client;
    let mut facts = conn.facts.clone();
    if proxy.sink.is_some() {
        let session = tls.get_ref().1;
        facts.tls_done = Some(crate::flows::now_micros());
        facts.tls = Some(Arc::new(crate::flows::Tls {
            sni: session.server_name().map(str::to_owned),
            alpn: session
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
            version: session.protocol_version().map(tls_version),
            intercepted: true,
        }));
    }
    let inner = Arc::new(ConnInfo {
        client,
        mode: conn.mode.clone(),
        upstream: conn.upstream.clone(),
        original: conn.original,
        tunnel: Some(authority),
        stop: conn.stop.clone(),
        slot: conn.slot.clone(),
        facts,
    });
    let service = hyper::service::service_fn(move |request| {
        crate::flow::handle(proxy.clone(), inner.clone(), request)
    });
    let stop = conn.stop.clone();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(client_timeout);
    // WebSocket over HTTP/2 (RFC 8441).
    builder.http2().enable_connect_protocol();
    // Upgrades (WebSocket) inside the tunnel, as on the listener.
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
    let driven = super::listener::drive(connection, stop, &activity, idle, client, |c| {
        c.graceful_shutdown()
    });
    if let Some(result) = driven.await {
        result?;
    }
    Ok(())
}

/// A TLS version as flow records (and mitmproxy) name it.
fn tls_version(version: rustls::ProtocolVersion) -> String {
    match version {
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".into(),
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".into(),
        other => format!("{other:?}"),
    }
}
