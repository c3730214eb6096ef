//! Accepting proxy clients and shutting down gracefully: on SIGINT/SIGTERM
//! stop accepting and give in-flight flows a grace period to finish.

use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use http::{header, Request};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::{net::TcpListener, sync::watch};

use super::{
    auth::ProxyAuth,
    body::{FlowRecord, Logged},
    io::{Activity, Tracked},
    mode::Mode,
    ConnInfo, Proxy,
};

/// How long a connection closed for idleness gets to finish what it is
/// doing (an HTTP/2 GOAWAY) before its socket is dropped.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Serves proxy clients on `listeners` (each in its mode) until `shutdown`
/// completes.
pub async fn serve(
    listeners: Vec<(TcpListener, Mode)>,
    proxy: Arc<Proxy>,
    shutdown: impl Future<Output = ()>,
) {
    // Every connection and tunnel holds a receiver; shutdown is done when
    // all are dropped.
    let (stop, stopped) = watch::channel(());
    let slots = Arc::new(tokio::sync::Semaphore::new(proxy.settings.max_connections));
    let accepting: Vec<_> = listeners
        .into_iter()
        .map(|(listener, mode)| {
            let (proxy, stopped, slots) = (proxy.clone(), stopped.clone(), slots.clone());
            tokio::spawn(accept(listener, Arc::new(mode), proxy, stopped, slots))
        })
        .collect();
    shutdown.await;
    // Stops accepting: the listeners (and their receivers) are dropped.
    for task in &accepting {
        task.abort();
    }
    for task in accepting {
        let _ = task.await;
    }
    drop(stopped);
    let _ = stop.send(());
    let grace = proxy.settings.shutdown_grace;
    tracing::info!(
        "shutting down: waiting up to {} s for open flows",
        grace.as_secs()
    );
    if tokio::time::timeout(grace, stop.closed()).await.is_err() {
        tracing::warn!("grace period over: closing the remaining flows");
    }
}

/// Accepts clients on one listener, each served in its own task.
async fn accept(
    listener: TcpListener,
    mode: Arc<Mode>,
    proxy: Arc<Proxy>,
    stopped: watch::Receiver<()>,
    slots: Arc<tokio::sync::Semaphore>,
) {
    let settings = &proxy.settings;
    let mut http1 = hyper::server::conn::http1::Builder::new();
    // Bounds both the time to send a request head (slowloris) and the idle
    // time between keep-alive requests.
    http1
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(settings.client_timeout)
        // A client may shut down its sending side after the request
        // (`nc -N`, scripts) and still gets its response.
        .half_close(true);
    let upstream = proxy.upstream_for(&mode);
    let mut last_refusal: Option<Instant> = None;
    let mut accept_errors = AcceptErrors::default();
    loop {
        let (stream, client) = match listener.accept().await {
            Ok(accepted) => {
                accept_errors.pause = Duration::ZERO;
                accepted
            }
            Err(e) => {
                tokio::time::sleep(accept_errors.failed(&e)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // One line a second at most: a flood must not flood the log too.
            if last_refusal.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                tracing::warn!(
                    "connection limit reached ({} open, --max-connections): closing new connections such as {client}",
                    settings.max_connections
                );
                last_refusal = Some(Instant::now());
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let original = match *mode {
            Mode::Transparent => match redirected_from(&stream, client, &proxy) {
                Ok(original) => Some(original),
                Err(why) => {
                    tracing::info!("transparent client {client}: {why}; closing");
                    continue;
                }
            },
            _ => None,
        };
        // The slot lives in the connection's info, which the CONNECT tunnel
        // task inherits: a tunnel counts until its socket closes.
        let conn = Arc::new(ConnInfo {
            client,
            tunnel: None,
            stop: stopped.clone(),
            slot: Arc::new(slot),
            facts: crate::flows::sink::ConnFacts {
                accepted: crate::flows::now_micros(),
                ..Default::default()
            },
            mode: mode.clone(),
            upstream: upstream.clone(),
            original,
        });
        match *mode {
            Mode::Socks5 => {
                tokio::spawn(super::socks::serve(stream, proxy.clone(), conn));
                continue;
            }
            Mode::Transparent => {
                tokio::spawn(super::transparent::serve(stream, proxy.clone(), conn));
                continue;
            }
            _ => {}
        }
        let activity = Activity::new();
        let stream = Tracked::new(stream, activity.clone());
        let proxy = proxy.clone();
        let service = hyper::service::service_fn({
            let conn = conn.clone();
            move |request| authorized(proxy.clone(), conn.clone(), request)
        });
        // Proxy clients speak HTTP/1.1 to the proxy; CONNECT needs upgrades.
        let connection = http1
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let (timeout, idle) = (settings.client_timeout, settings.idle_timeout);
        let stop = stopped.clone();
        tokio::spawn(async move {
            let _active = crate::metrics::Active::new(crate::metrics::Conn::Client);
            let watched = drive(connection, stop, &activity, idle, client, |c| {
                c.graceful_shutdown()
            });
            if let Some(Err(e)) = watched.await {
                log_client_error(client, &e, timeout);
            }
            drop(conn);
        });
    }
}

/// Where a transparent client's connection was headed; an error when it
/// was not redirected at all (it would loop back into proxlet).
fn redirected_from(
    stream: &tokio::net::TcpStream,
    client: SocketAddr,
    proxy: &Proxy,
) -> Result<SocketAddr, String> {
    if proxy
        .own_sockets
        .as_ref()
        .is_some_and(|own| own.contains(client))
    {
        return Err(
            "this is proxlet's own upstream connection, redirected back into it (a loop: \
             exempt proxlet's sockets, e.g. --upstream-mark N with iptables `-m mark ! --mark N`)"
                .into(),
        );
    }
    let original = super::dial::original_destination(stream)
        .map_err(|e| format!("no original destination (SO_ORIGINAL_DST: {e})"))?;
    match stream.local_addr() {
        Ok(local) if local == original => {
            Err("connected to the transparent listener directly, not redirected".into())
        }
        _ => Ok(original),
    }
}

/// Checks `--proxy-auth` at the entry, before the pipeline: a request
/// without valid credentials gets `407` and never reaches a plugin or an
/// upstream; a valid `Proxy-Authorization` is removed, so no plugin sees it.
/// Requests inside an authorized CONNECT tunnel do not come through here.
async fn authorized(
    proxy: Arc<Proxy>,
    conn: Arc<ConnInfo>,
    mut request: Request<Incoming>,
) -> Result<http::Response<Logged<super::body::Body>>, crate::flows::replay::Killed> {
    if let Some(auth) = &proxy.auth {
        if ProxyAuth::applies_to(&request) {
            if !auth.allows(request.headers()) {
                let id = proxy.next_flow.fetch_add(1, Ordering::Relaxed);
                let mut record = FlowRecord::new(id, conn.client, &request);
                record.url = super::headers::redacted(request.uri());
                record.status = http::StatusCode::PROXY_AUTHENTICATION_REQUIRED;
                record.note = Some("proxy authentication required (--proxy-auth)".into());
                return Ok(ProxyAuth::required().map(|b| Logged::new(b, record)));
            }
            request.headers_mut().remove(header::PROXY_AUTHORIZATION);
        }
    }
    crate::flow::handle(proxy, conn, request).await
}

/// Accept failures (EMFILE when out of file descriptors, ENOBUFS…): each
/// pauses accepting a little longer, up to a second, so the loop does not
/// spin, and they are logged at most once a second with a count.
#[derive(Default)]
struct AcceptErrors {
    pause: Duration,
    unreported: u64,
    last_report: Option<Instant>,
}

impl AcceptErrors {
    const MAX_PAUSE: Duration = Duration::from_secs(1);

    /// Records `error`; how long to pause before accepting again.
    fn failed(&mut self, error: &std::io::Error) -> Duration {
        self.unreported += 1;
        if self
            .last_report
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            tracing::warn!(
                "accept failed: {error} ({} times since the last report; raise the open-file limit (ulimit -n) or lower --max-connections)",
                self.unreported
            );
            self.unreported = 0;
            self.last_report = Some(Instant::now());
        }
        self.pause = (self.pause * 2).clamp(Duration::from_millis(10), Self::MAX_PAUSE);
        self.pause
    }
}

/// Logs why a client connection ended badly: a timeout gets a line saying
/// which limit, anything else (resets, garbage) is debug noise.
pub(crate) fn log_client_error(
    client: std::net::SocketAddr,
    error: &(dyn std::error::Error + 'static),
    timeout: std::time::Duration,
) {
    let timed_out = error
        .downcast_ref::<hyper::Error>()
        .is_some_and(hyper::Error::is_timeout);
    if timed_out {
        tracing::info!(
            "client {client}: closed after {timeout:?} without a complete request head or a new request (--client-timeout)"
        );
    } else {
        tracing::debug!("client {client}: {error}");
    }
}

/// Drives `connection` to its end. Once shutdown is signalled on `stop`,
/// asks it to finish gracefully (no new requests, in-flight ones complete).
/// Once no byte has moved on it for `idle` (`activity`), asks the same but
/// gives it only [`IDLE_CLOSE_GRACE`]; `None` when it was cut then.
pub(crate) async fn drive<C: Future>(
    connection: C,
    mut stop: watch::Receiver<()>,
    activity: &Activity,
    idle: Duration,
    client: SocketAddr,
    graceful_shutdown: impl FnOnce(Pin<&mut C>),
) -> Option<C::Output> {
    tokio::pin!(connection);
    let stopping = tokio::select! {
        output = connection.as_mut() => return Some(output),
        _ = stop.changed() => true,
        () = activity.idle(idle, idle) => false,
    };
    graceful_shutdown(connection.as_mut());
    if stopping {
        return Some(connection.await);
    }
    tracing::info!("client {client}: closed after {idle:?} without a byte moving (--idle-timeout)");
    tokio::time::timeout(IDLE_CLOSE_GRACE, connection)
        .await
        .ok()
}
