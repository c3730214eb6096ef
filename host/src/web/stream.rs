//! `GET /api/events`: Server-Sent Events of stored and paused flows,
//! plugin changes and plugin log lines. Each stream is a task feeding a
//! small bounded channel; a stream that falls behind is told it lagged.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use hyper::body::{Body as HttpBody, Frame};
use tokio::sync::{broadcast::error::RecvError, mpsc};

use super::{api, Event, Web};
use crate::proxy::body::{boxed, Body, BoxError};

/// A comment line this often keeps idle connections open and finds
/// closed ones.
const PING: Duration = Duration::from_secs(15);
/// Events queued for a slow reader before the stream task waits.
const QUEUE: usize = 256;

pub(super) fn events(web: &Arc<Web>) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Bytes>(QUEUE);
    let mut stream = web.events.stream.subscribe();
    let mut paused = web.events.paused.subscribe();
    let web = web.clone();
    tokio::spawn(async move {
        let mut ping = tokio::time::interval(PING);
        ping.tick().await;
        loop {
            let message = tokio::select! {
                event = stream.recv() => match event {
                    Ok(event) => message_of(&web, event),
                    Err(RecvError::Lagged(_)) => Some(sse("lagged", "{}")),
                    Err(RecvError::Closed) => return,
                },
                change = paused.recv() => match change {
                    Ok((id, _)) => api::summary_now(&web, id).map(|s| sse("flow", &s)),
                    Err(RecvError::Lagged(_)) => Some(sse("lagged", "{}")),
                    Err(RecvError::Closed) => return,
                },
                _ = ping.tick() => Some(Bytes::from_static(b": ping\n\n")),
            };
            if let Some(message) = message {
                if tx.send(message).await.is_err() {
                    return;
                }
            }
        }
    });
    let mut response = Response::new(boxed(Events(rx)));
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    response
}

fn message_of(web: &Web, event: Event) -> Option<Bytes> {
    match event {
        Event::Stored(id, record) => {
            let flow = record.flow(false).ok()?;
            let row = api::row_of(id, &flow, None);
            // The list reuses it.
            let mut rows = web.rows.lock().unwrap_or_else(|e| e.into_inner());
            rows.insert(id, (record.head_crc(), row.clone()));
            drop(rows);
            let mut message = Vec::with_capacity(row.len() + 24);
            message.extend_from_slice(b"event: flow\ndata: ");
            message.extend_from_slice(&row);
            message.extend_from_slice(b"\n\n");
            Some(message.into())
        }
        Event::Cleared => Some(sse("cleared", "{}")),
        Event::Plugins => Some(sse(
            "plugins",
            &serde_json::to_string(&api::plugins(web)).ok()?,
        )),
        Event::Log(line) => Some(sse("log", &serde_json::to_string(&*line).ok()?)),
    }
}

/// One event; `data` is one line of JSON.
fn sse(event: &str, data: &str) -> Bytes {
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

struct Events(mpsc::Receiver<Bytes>);

impl HttpBody for Events {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.0.poll_recv(cx).map(|m| m.map(|b| Ok(Frame::data(b))))
    }
}
