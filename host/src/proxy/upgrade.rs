//! Protocol upgrades through the proxy (RFC 9110 §7.8), WebSocket (RFC 6455)
//! first among them. The client's upgrade request goes upstream with its
//! `Upgrade` (on an HTTP/1.1 connection of its own); the upstream's answer
//! reaches the client as it is: a `101 Switching Protocols` with the
//! upstream's `Sec-WebSocket-Accept/Protocol/Extensions`, or a refusal.
//! After a 101 both connections carry the new protocol and their bytes are
//! relayed as they come, with backpressure, until either side closes or
//! nothing moves for `--idle-timeout`.
//!
//! An HTTP/2 client asks with an extended CONNECT instead (RFC 8441,
//! `:protocol websocket`, offered in the SETTINGS of intercepted HTTP/2
//! connections): it goes upstream as the HTTP/1.1 upgrade it stands for,
//! and the upstream's 101 reaches the client as a 200 on its stream.

use std::time::Duration;

use http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::copy_bidirectional;

use super::io::{Activity, Tracked};

/// The protocol a request asks to switch to: an HTTP/1.1 request with an
/// `Upgrade` field named in `Connection`.
pub fn requested<B>(request: &Request<B>) -> Option<HeaderValue> {
    if request.version() != Version::HTTP_11 {
        return None;
    }
    let asked = request
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    asked
        .then(|| request.headers().get(header::UPGRADE).cloned())
        .flatten()
}

/// RFC 8441: turns an HTTP/2 extended CONNECT into the HTTP/1.1 upgrade
/// request it stands for (a GET; for WebSocket with a fresh
/// `Sec-WebSocket-Key`, which HTTP/2 clients do not send) and returns the
/// protocol; `None` for any other request.
pub fn from_extended_connect<B>(request: &mut Request<B>) -> Option<HeaderValue> {
    if request.method() != Method::CONNECT || request.version() != Version::HTTP_2 {
        return None;
    }
    let protocol = request.extensions().get::<hyper::ext::Protocol>()?;
    let protocol = HeaderValue::from_str(protocol.as_str()).ok()?;
    *request.method_mut() = Method::GET;
    if protocol.as_bytes().eq_ignore_ascii_case(b"websocket") {
        let mut nonce = [0u8; 16];
        let random = rustls::crypto::ring::default_provider().secure_random;
        random.fill(&mut nonce).ok()?;
        use base64::Engine;
        let key = base64::engine::general_purpose::STANDARD.encode(nonce);
        let key = HeaderValue::from_str(&key).ok()?;
        request.headers_mut().insert(header::SEC_WEBSOCKET_KEY, key);
    }
    Some(protocol)
}

/// The upstream's 101 as an HTTP/2 client expects it (RFC 8441 §5): a 200
/// on the stream, without the HTTP/1.1 handshake's accept value.
pub fn accepted_over_h2(status: &mut StatusCode, headers: &mut HeaderMap) {
    *status = StatusCode::OK;
    headers.remove(header::SEC_WEBSOCKET_ACCEPT);
}

/// Puts the upgrade back into a head whose hop-by-hop fields were removed.
pub fn restore(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol);
}

/// Once both sides have switched, relays their bytes until either closes
/// or none moves for `idle`; a WebSocket that plugins or capture look at
/// goes message by message (`websocket.rs`).
pub fn relay(
    flow: u64,
    client: OnUpgrade,
    upstream: OnUpgrade,
    idle: Duration,
    watch: Option<super::websocket::Watch>,
) {
    tokio::spawn(async move {
        let (client, upstream) = match tokio::join!(client, upstream) {
            (Ok(client), Ok(upstream)) => (client, upstream),
            (Err(e), _) | (_, Err(e)) => {
                return tracing::debug!(flow, "upgrade did not complete: {e}");
            }
        };
        let _active = crate::metrics::Active::new(crate::metrics::Conn::Tunnel);
        if let Some(watch) = watch {
            let (client, upstream) = (TokioIo::new(client), TokioIo::new(upstream));
            return super::websocket::relay(client, upstream, watch, idle).await;
        }
        let activity = Activity::new();
        let mut client = Tracked::new(TokioIo::new(client), activity.clone());
        let mut upstream = TokioIo::new(upstream);
        tokio::select! {
            copied = copy_bidirectional(&mut client, &mut upstream) => match copied {
                Ok((up, down)) => tracing::debug!(flow, "upgraded connection closed: {up} bytes up, {down} down"),
                Err(e) => tracing::debug!(flow, "upgraded connection ended: {e}"),
            },
            () = activity.idle(idle, idle) => {
                tracing::info!(flow, "upgraded connection closed after {idle:?} without a byte moving (--idle-timeout)");
            }
        }
    });
}
