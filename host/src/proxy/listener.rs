//! Accepting proxy clients and shutting down gracefully: on SIGINT/SIGTERM
//! stop accepting and give in-flight flows a grace period to finish.

use std::{future::Future, pin::Pin, sync::Arc};

use hyper_util::rt::TokioIo;
use tokio::{net::TcpListener, sync::watch};

use super::{ConnInfo, Proxy};

/// Serves proxy clients on `listener` until `shutdown` completes.
pub async fn serve(listener: TcpListener, proxy: Arc<Proxy>, shutdown: impl Future<Output = ()>) {
    // Every connection and tunnel holds a receiver; shutdown is done when
    // all are dropped.
    let (stop, stopped) = watch::channel(());
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
    let slots = Arc::new(tokio::sync::Semaphore::new(settings.max_connections));
    let mut last_refusal: Option<std::time::Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // One line a second at most: a flood must not flood the log too.
            if last_refusal.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(1)) {
                tracing::warn!(
                    "connection limit reached ({} open, --max-connections): closing new connections such as {client}",
                    settings.max_connections
                );
                last_refusal = Some(std::time::Instant::now());
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = Arc::new(ConnInfo {
            client,
            tunnel: None,
            stop: stopped.clone(),
        });
        let proxy = proxy.clone();
        let service = hyper::service::service_fn({
            let conn = conn.clone();
            move |request| super::service::handle(proxy.clone(), conn.clone(), request)
        });
        // Proxy clients speak HTTP/1.1 to the proxy; CONNECT needs upgrades.
        let connection = http1
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let watched = until_stopped(connection, stopped.clone(), |c| c.graceful_shutdown());
        let timeout = settings.client_timeout;
        tokio::spawn(async move {
            if let Err(e) = watched.await {
                log_client_error(client, &e, timeout);
            }
            drop(slot);
        });
    }
    drop(listener);
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

/// Drives `connection` to its end; once shutdown is signalled on `stop`,
/// asks it to finish gracefully (no new requests, in-flight ones complete).
pub(crate) async fn until_stopped<C: Future>(
    connection: C,
    mut stop: watch::Receiver<()>,
    graceful_shutdown: impl FnOnce(Pin<&mut C>),
) -> C::Output {
    tokio::pin!(connection);
    tokio::select! {
        output = connection.as_mut() => return output,
        _ = stop.changed() => graceful_shutdown(connection.as_mut()),
    }
    connection.await
}
