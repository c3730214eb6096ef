//! The pooled client towards origin servers (HTTP/1.1 and HTTP/2 by ALPN),
//! and the translation of its failures into what the client should see.

use std::{
    error::Error as StdError,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::{
    client::legacy::Client,
    rt::{TokioExecutor, TokioTimer},
};

use super::{
    body::{boxed, Body, BoxError},
    dial::{Dial, ParentError, Route},
    stamped::{self, Stamped},
};

/// The connector: TCP or a parent proxy, then TLS for https, each
/// stamped with its timing.
type Connector = Stamped<HttpsConnector<Stamped<Dial, stamped::Tcp>>, stamped::Tls>;

pub struct Upstream {
    dial: Dial,
    client: Client<Connector, Body>,
    /// For requests that ask for a protocol upgrade (WebSocket): HTTP/1.1.
    upgrades: Client<Connector, Body>,
    /// Connecting, and waiting for the response head once the request
    /// (body included) has been sent.
    timeout: Duration,
    /// Longest a request body may go without moving.
    idle: Duration,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.dial.parent() {
            Some(parent) => write!(f, "Upstream(via {})", parent.authority),
            None => f.write_str("Upstream(direct)"),
        }
    }
}

/// Why no upstream response came: its kind, the status and the one-line
/// reason the client gets.
#[derive(Debug)]
pub struct UpstreamError {
    pub kind: Failure,
    pub status: StatusCode,
    pub reason: String,
}

/// The kind of an upstream failure, decided where it happens (never read
/// back from its message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The host name did not resolve.
    Dns,
    /// The upstream (or the parent proxy) refused, reset or closed the
    /// connection.
    Refused,
    /// TLS towards the upstream (or an https parent) failed.
    Tls,
    /// No answer in time.
    Timeout,
    /// The client stalled or sent what cannot be forwarded.
    Client,
    /// Anything else.
    Other,
}

impl Failure {
    /// The kind of a failed connect or exchange.
    pub fn of_io(error: &std::io::Error) -> Self {
        use std::io::ErrorKind::*;
        match error.kind() {
            ConnectionRefused | ConnectionReset | ConnectionAborted | BrokenPipe
            | UnexpectedEof => Self::Refused,
            TimedOut => Self::Timeout,
            _ => Self::Other,
        }
    }
}

impl UpstreamError {
    pub fn new(kind: Failure, status: StatusCode, reason: String) -> Self {
        Self {
            kind,
            status,
            reason,
        }
    }
}

/// A pooled client; `http1_only` offers only HTTP/1.1 by ALPN (protocol
/// upgrades need an HTTP/1.1 connection of their own).
fn client(tls: rustls::ClientConfig, dial: Dial, http1_only: bool) -> Client<Connector, Body> {
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    let https = match http1_only {
        true => https.enable_http1().wrap_connector(Stamped::new(dial)),
        false => https
            .enable_all_versions()
            .wrap_connector(Stamped::new(dial)),
    };
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(90))
        // Fixed HTTP/2 windows bound what an upstream may send ahead of a
        // slower client: 1 MiB per stream (adaptive windows grow to
        // 16 MiB, all of it buffered here), 8 MiB per connection so
        // parallel downloads from one registry still fill a fast link.
        .http2_initial_stream_window_size(1024 * 1024)
        .http2_initial_connection_window_size(8 * 1024 * 1024)
        .build(Stamped::new(https))
}

impl Upstream {
    pub(crate) fn new(
        tls: rustls::ClientConfig,
        timeout: Duration,
        idle: Duration,
        route: Route,
    ) -> Self {
        let dial = Dial::new(tls.clone(), timeout, route);
        Self {
            client: client(tls.clone(), dial.clone(), false),
            upgrades: client(tls, dial.clone(), true),
            dial,
            timeout,
            idle,
        }
    }

    /// A byte stream to `host:port` (or to `pinned`, a transparent
    /// connection's destination) for a relayed tunnel, the way this
    /// upstream's connections go.
    pub(crate) async fn tunnel(
        &self,
        host: &str,
        port: u16,
        pinned: Option<std::net::SocketAddr>,
    ) -> Result<Box<dyn super::dial::Io>, BoxError> {
        tokio::time::timeout(self.timeout, self.dial.tunnel(host, port, pinned))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))?
    }

    /// Sends `request` (absolute URI) and waits for the response head.
    ///
    /// `--upstream-timeout` covers connecting and, once the request body has
    /// been sent, the wait for the response head; it never cuts an upload
    /// that is moving, however long. While the body is being sent the limit
    /// is `--idle-timeout` without a byte of it moving.
    pub async fn send(
        &self,
        mut request: Request<Body>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        // A parent proxy gets plain-http requests whole: with its
        // credentials (CONNECT carries them for the rest).
        if let Some(auth) = self.dial.parent().and_then(|p| p.auth.as_ref()) {
            if request.uri().scheme() == Some(&http::uri::Scheme::HTTP) {
                request
                    .headers_mut()
                    .insert(http::header::PROXY_AUTHORIZATION, auth.clone());
            }
        }
        let authority = request
            .uri()
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let started = tokio::time::Instant::now();
        // Only requests with a body pay for watching it.
        let upload = (!request.body().is_end_stream()).then(|| Arc::new(Upload::new(started)));
        let request = match &upload {
            Some(upload) => request.map(|body| {
                boxed(Uploading {
                    body,
                    upload: upload.clone(),
                })
            }),
            None => request,
        };
        let client = match request.headers().contains_key(http::header::UPGRADE) {
            true => &self.upgrades,
            false => &self.client,
        };
        let response = client.request(request);
        tokio::pin!(response);
        loop {
            let deadline = self.deadline(upload.as_deref(), started, &authority)?;
            tokio::select! {
                result = &mut response => {
                    if let (Ok(_), Some(metrics)) = (&result, crate::metrics::get()) {
                        metrics.first_byte(started.elapsed());
                    }
                    let response = result.map_err(|e| classify(&e, &authority))?;
                    // The parent's demand for credentials is not the
                    // client's to answer: it never talked to the parent.
                    if let (Some(parent), StatusCode::PROXY_AUTHENTICATION_REQUIRED) =
                        (self.dial.parent(), response.status())
                    {
                        return Err(UpstreamError::new(
                            Failure::Other,
                            StatusCode::BAD_GATEWAY,
                            format!(
                                "parent proxy {}: requires authentication (407; see --upstream-auth)",
                                parent.authority
                            ),
                        ));
                    }
                    return Ok(response);
                }
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// When the wait for a response ends at the latest given how far the
    /// upload got, or the error if that moment has passed.
    fn deadline(
        &self,
        upload: Option<&Upload>,
        started: tokio::time::Instant,
        authority: &str,
    ) -> Result<tokio::time::Instant, UpstreamError> {
        let timeout = self.timeout.as_millis();
        let idle = self.idle.as_millis();
        let (deadline, stalled) = match upload.map(Upload::state) {
            None | Some(UploadState::NotStarted) => (started + self.timeout, None),
            Some(UploadState::Sent(at)) => (at + self.timeout, None),
            Some(UploadState::Sending { since, client }) => (since + self.idle, Some(client)),
        };
        if tokio::time::Instant::now() < deadline {
            return Ok(deadline);
        }
        Err(match stalled {
            None => UpstreamError::new(
                Failure::Timeout,
                StatusCode::GATEWAY_TIMEOUT,
                format!("upstream {authority} did not answer within {timeout} ms"),
            ),
            Some(true) => UpstreamError::new(
                Failure::Client,
                StatusCode::REQUEST_TIMEOUT,
                format!("the client sent no request-body bytes for {idle} ms (--idle-timeout)"),
            ),
            Some(false) => UpstreamError::new(
                Failure::Timeout,
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "upstream {authority} took no request-body bytes for {idle} ms (--idle-timeout)"
                ),
            ),
        })
    }
}

/// How far a request body has been sent, shared by the body on its way
/// upstream ([`Uploading`]) and the wait for the response.
struct Upload {
    start: tokio::time::Instant,
    phase: AtomicU8,
    /// Milliseconds after `start` when the body last moved (or ended).
    last: AtomicU64,
    /// The body waits for the client to send more (as opposed to the
    /// upstream connection not taking more).
    client: AtomicBool,
}

const NOT_STARTED: u8 = 0;
const SENDING: u8 = 1;
const SENT: u8 = 2;

enum UploadState {
    /// Not asked for yet: connecting, or queued for a pooled connection.
    NotStarted,
    /// Being sent; `client` when the client owes the next bytes.
    Sending {
        since: tokio::time::Instant,
        client: bool,
    },
    /// Completely sent at this moment.
    Sent(tokio::time::Instant),
}

impl Upload {
    fn new(start: tokio::time::Instant) -> Self {
        Self {
            start,
            phase: AtomicU8::new(NOT_STARTED),
            last: AtomicU64::new(0),
            client: AtomicBool::new(false),
        }
    }

    fn mark(&self, phase: u8) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last.store(ms, Ordering::Relaxed);
        self.phase.store(phase, Ordering::Relaxed);
    }

    fn state(&self) -> UploadState {
        let at = self.start + Duration::from_millis(self.last.load(Ordering::Relaxed));
        match self.phase.load(Ordering::Relaxed) {
            NOT_STARTED => UploadState::NotStarted,
            SENDING => UploadState::Sending {
                since: at,
                client: self.client.load(Ordering::Relaxed),
            },
            _ => UploadState::Sent(at),
        }
    }
}

/// A request body on its way upstream, reporting its progress to [`Upload`].
struct Uploading {
    body: Body,
    upload: Arc<Upload>,
}

impl HttpBody for Uploading {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        let upload = &self.upload;
        match &polled {
            Poll::Pending => {
                if upload.phase.load(Ordering::Relaxed) == NOT_STARTED {
                    upload.mark(SENDING);
                }
                upload.client.store(true, Ordering::Relaxed);
            }
            Poll::Ready(Some(Ok(_))) if !self.body.is_end_stream() => {
                upload.client.store(false, Ordering::Relaxed);
                upload.mark(SENDING);
            }
            Poll::Ready(_) => {
                upload.client.store(false, Ordering::Relaxed);
                upload.mark(SENT);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Names the cause of an upstream failure: DNS, refused, TLS, timeout…
fn classify(error: &(dyn StdError + 'static), authority: &str) -> UpstreamError {
    let host = authority
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(authority);
    let bad_gateway = |kind: Failure, reason: String| UpstreamError {
        kind,
        status: StatusCode::BAD_GATEWAY,
        reason,
    };
    let mut chain = Vec::new();
    let mut next: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(e) = next {
        chain.push(e.to_string());
        if let Some(parent) = e.downcast_ref::<ParentError>() {
            return bad_gateway(parent.kind, parent.message.clone());
        }
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return bad_gateway(
                Failure::Tls,
                match tls {
                    rustls::Error::InvalidCertificate(why) => {
                        format!("TLS verification of {host} failed: {why:?}")
                    }
                    other => format!("TLS handshake with {host} failed: {other}"),
                },
            );
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            let kind = Failure::of_io(io);
            match io.kind() {
                ConnectionRefused => {
                    return bad_gateway(kind, format!("connection to {authority} refused"))
                }
                ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof => {
                    return bad_gateway(
                        kind,
                        format!("upstream {authority} closed the connection: {io}"),
                    )
                }
                TimedOut => {
                    return UpstreamError::new(
                        kind,
                        StatusCode::GATEWAY_TIMEOUT,
                        format!("connecting to {authority} timed out"),
                    )
                }
                _ => {}
            }
        }
        if e.to_string().contains("dns error") {
            return bad_gateway(Failure::Dns, format!("DNS lookup of {host} failed"));
        }
        next = inner(e);
    }
    let all = chain.join(": ");
    bad_gateway(
        Failure::Other,
        format!("upstream {authority} failed: {all}"),
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_classified_by_their_error_types_not_their_words() {
        let io = |kind| std::io::Error::new(kind, "words that say nothing");
        let refused = classify(&io(std::io::ErrorKind::ConnectionRefused), "a.test:443");
        assert_eq!(
            (refused.kind, refused.status),
            (Failure::Refused, StatusCode::BAD_GATEWAY)
        );
        assert_eq!(refused.reason, "connection to a.test:443 refused");
        let reset = classify(&io(std::io::ErrorKind::ConnectionReset), "a.test:443");
        assert_eq!(reset.kind, Failure::Refused);
        let slow = classify(&io(std::io::ErrorKind::TimedOut), "a.test:443");
        assert_eq!(
            (slow.kind, slow.status),
            (Failure::Timeout, StatusCode::GATEWAY_TIMEOUT)
        );
        // A parent proxy's failure keeps the kind it was given, whatever
        // its message says ("refused" here is only words).
        let parent = ParentError {
            kind: Failure::Tls,
            message: "parent proxy p:3128: refused to talk TLS".into(),
        };
        let wrapped = std::io::Error::other(parent);
        let failed = classify(&wrapped, "a.test:443");
        assert_eq!(failed.kind, Failure::Tls);
        assert_eq!(failed.reason, "parent proxy p:3128: refused to talk TLS");
        let tls = std::io::Error::other(rustls::Error::DecryptError);
        assert_eq!(classify(&tls, "a.test:443").kind, Failure::Tls);
        let odd = classify(&io(std::io::ErrorKind::InvalidData), "a.test:443");
        assert_eq!(odd.kind, Failure::Other);
    }
}
