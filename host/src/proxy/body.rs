//! Body types of the pipeline, short text responses proxlet makes itself, and
//! the access log, written when a response body has been fully sent (or not).

use std::{
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, StatusCode, Version};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};
use hyper::body::{Body as HttpBody, Frame, SizeHint};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Any body the pipeline forwards: bodies differ per source (client,
/// upstream, proxlet itself), so they travel boxed.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

pub fn boxed<B>(body: B) -> Body
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// A response proxlet makes itself: `status` with a one-line text body.
pub fn text_response(status: StatusCode, text: impl Into<String>) -> Response<Body> {
    let mut text = text.into();
    text.push('\n');
    let mut response = Response::new(boxed(Full::new(Bytes::from(text))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// What the access-log line says about a flow.
pub struct FlowRecord {
    pub id: u64,
    pub client: SocketAddr,
    /// The listener's mode; named in the access log unless `regular`.
    pub mode: &'static str,
    pub method: Method,
    pub url: String,
    pub client_version: Version,
    pub upstream_version: Option<Version>,
    pub status: StatusCode,
    pub started: Instant,
    /// Why proxlet answered itself, if it did.
    pub note: Option<String>,
    /// `fill` leases, released when the flow's response is done.
    pub leases: Vec<crate::flow::FillLease>,
    /// The flow's record when capture is on.
    pub recording: Option<Box<crate::flows::sink::Recording>>,
    /// Where the response body comes from, for the metrics.
    pub source: crate::metrics::Source,
}

impl FlowRecord {
    /// The record of a flow that starts now with `request` (its URL is
    /// set once the target is known).
    pub fn new<B>(id: u64, client: SocketAddr, request: &http::Request<B>) -> Self {
        Self {
            id,
            client,
            mode: "regular",
            method: request.method().clone(),
            url: String::new(),
            client_version: request.version(),
            upstream_version: None,
            status: StatusCode::OK,
            started: Instant::now(),
            source: crate::metrics::Source::Proxy,
            note: None,
            leases: Vec::new(),
            recording: None,
        }
    }

    fn log(mut self, bytes: u64, outcome: &str) {
        let upstream = match self.upstream_version {
            Some(v) => version_str(v),
            None => "-",
        };
        tracing::info!(
            target: "proxlet::access",
            "#{} {}{} {} {} {}->{} {} {}B {}ms{}{}{}",
            self.id,
            self.client,
            match self.mode {
                "regular" => String::new(),
                mode => format!(" ({mode})"),
            },
            self.method,
            self.url,
            version_str(self.client_version),
            upstream,
            self.status.as_u16(),
            bytes,
            self.started.elapsed().as_millis(),
            outcome,
            if self.note.is_some() { " " } else { "" },
            self.note.as_deref().unwrap_or(""),
        );
        if let Some(metrics) = crate::metrics::get() {
            metrics.response(self.status, self.source, bytes, self.mode);
        }
        if let Some(recording) = self.recording.take() {
            let error = outcome.trim();
            let error = (!error.is_empty()).then(|| error.to_owned());
            recording.finish(error, self.note.take());
        }
    }
}

pub fn version_str(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/?",
    }
}

/// Counts the bytes of a response body on their way to the client and logs
/// the flow once: at the end of the body, on error, or when dropped early.
pub struct Logged<B: HttpBody> {
    inner: B,
    record: Option<FlowRecord>,
    bytes: u64,
}

impl<B: HttpBody> Logged<B> {
    pub fn new(inner: B, record: FlowRecord) -> Self {
        Self {
            inner,
            record: Some(record),
            bytes: 0,
        }
    }

    fn finish(&mut self, outcome: &str) {
        if let Some(record) = self.record.take() {
            record.log(self.bytes, outcome);
        }
    }
}

impl<B> HttpBody for Logged<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                    if let Some(recording) = self.record.as_mut().and_then(|r| r.recording.as_mut())
                    {
                        recording.response_data(data);
                    }
                }
                if self.inner.is_end_stream() {
                    self.finish("");
                }
            }
            Poll::Ready(Some(Err(e))) => {
                let outcome = format!(" upstream-body-error: {e}");
                self.finish(&outcome);
            }
            Poll::Ready(None) => self.finish(""),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: HttpBody> Drop for Logged<B> {
    fn drop(&mut self) {
        // Dropped before the end is normal for empty bodies (HEAD, 204, 304,
        // Content-Length: 0); otherwise the client left early.
        let complete = self.inner.is_end_stream();
        let outcome = if complete
            || self.bytes == 0
                && self.record.as_ref().is_some_and(|r| {
                    r.method == Method::HEAD
                        || r.status == StatusCode::NO_CONTENT
                        || r.status == StatusCode::NOT_MODIFIED
                }) {
            ""
        } else {
            " client-aborted"
        };
        self.finish(outcome);
    }
}

/// The outcome of reading a body into memory up to a limit.
pub enum Collected {
    /// The whole body.
    Complete(Bytes),
    /// Longer than the limit: the body again, as it was (frames read so far
    /// are replayed before the rest).
    TooLarge(Body),
    /// The body failed mid-way.
    Failed(String),
}

/// Reads `body` into memory, giving up (without losing data) past `limit`.
pub async fn collect_limited(mut body: Body, limit: usize) -> Collected {
    let mut frames: Vec<Bytes> = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                total += data.len();
                frames.push(data);
                if total > limit {
                    return Collected::TooLarge(boxed(Replay {
                        frames: frames.into(),
                        rest: body,
                    }));
                }
            }
            Err(e) => return Collected::Failed(e.to_string()),
        }
    }
    let mut all = bytes::BytesMut::with_capacity(total);
    for frame in frames {
        all.extend_from_slice(&frame);
    }
    Collected::Complete(all.freeze())
}

/// Frames already read, then the rest of the body.
struct Replay {
    frames: std::collections::VecDeque<Bytes>,
    rest: Body,
}

impl HttpBody for Replay {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(frame) = self.frames.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(frame))));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty() && self.rest.is_end_stream()
    }
}

/// A body of these bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    boxed(Full::new(bytes.into()))
}
