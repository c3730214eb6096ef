//! Server replay (`--server-replay`): recorded responses answer the requests
//! that match them, and `--server-replay-extra` decides for the rest. The
//! recordings are loaded once at start; the pipeline asks [`send`] where it
//! would ask the upstream, so on-response plugins see replayed responses too.

use std::{
    sync::Mutex,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::{Body as _, Incoming};

use super::matcher::{joined, MatchRules, Miss, Recording, Recordings};
use crate::{
    config::{ReplayExtra, Settings},
    error::{Error, Result},
    flow::Notes,
    proxy::{
        body::{collect_limited, full, text_response, Body, Collected, FlowRecord},
        upstream::{Failure, Upstream, UpstreamError},
    },
};

/// The recordings server replay answers from, and what it does otherwise.
pub struct ServerReplay {
    recordings: Mutex<Recordings>,
    extra: ReplayExtra,
    /// Longest wait for the rest of a request body that matching needs.
    body_timeout: Duration,
}

/// Server replay closes the client's connection (HTTP/1.1) or resets its
/// stream (HTTP/2) without a response, as mitmproxy's `kill` does: the
/// pipeline returns this as its service error and hyper does the closing.
#[derive(Debug, thiserror::Error)]
#[error("server replay has no recording for this request: closing the connection (--server-replay-extra kill)")]
pub struct Killed;

impl ServerReplay {
    /// Loads `--server-replay` files, or `None` when none are given. A file
    /// that cannot be read stops start-up; a recording that cannot answer
    /// (no response, a body cut short) is left out with a warning saying why.
    pub fn load(settings: &Settings) -> Result<Option<Self>> {
        let Some(replay) = &settings.server_replay else {
            return Ok(None);
        };
        let mut recordings = Recordings::new(MatchRules::new(replay), replay.reuse);
        let mut unusable = 0usize;
        for path in &replay.files {
            super::read_flows(path, |flow| {
                let source = format!("{} #{}", path.display(), flow.id);
                if let Err(why) = recordings.add(flow, source.clone()) {
                    unusable += 1;
                    tracing::warn!("server replay: not using {source}: {why}");
                }
            })
            .map_err(|e| Error::Flows(format!("--server-replay: {e}")))?;
        }
        let files = replay
            .files
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        if recordings.is_empty() {
            tracing::warn!("server replay: no usable recordings in {files}: every request gets --server-replay-extra");
        } else {
            tracing::info!(
                "server replay: {} recorded responses from {files}{}",
                recordings.len(),
                match unusable {
                    0 => String::new(),
                    n => format!(" ({n} unusable, see above)"),
                }
            );
        }
        Ok(Some(Self {
            recordings: Mutex::new(recordings),
            extra: replay.extra,
            body_timeout: settings.idle_timeout,
        }))
    }

    fn recordings(&self) -> std::sync::MutexGuard<'_, Recordings> {
        // The store stays consistent even if a holder panicked: each
        // operation is a single push or remove.
        self.recordings
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Who answers a request at the pipeline's upstream step.
pub(crate) enum Answer {
    /// The upstream, as usual.
    Upstream(Response<Incoming>),
    /// Server replay: a recording, or `--server-replay-extra STATUS`.
    Replayed(Response<Body>),
}

/// Step 4 of the pipeline: the recorded response for `request` under server
/// replay, or the upstream's. `Err(Killed)` when the client's connection
/// must be closed instead. Notes `server-replay` on the flow when a
/// recording (or `--server-replay-extra STATUS`) answered.
pub(crate) async fn send(
    upstream: &Upstream,
    replay: Option<&ServerReplay>,
    request: Request<Body>,
    record: &mut FlowRecord,
    notes: &mut Notes,
) -> Result<Result<Answer, UpstreamError>, Killed> {
    let Some(replay) = replay else {
        return Ok(upstream.send(request).await.map(Answer::Upstream));
    };
    let (parts, mut body) = request.into_parts();
    let url = parts.uri.to_string();
    let (key, needs_body, limit) = {
        let recordings = replay.recordings();
        let rules = recordings.rules();
        let key = rules.key(parts.method.as_str(), &url, |name| {
            // By now the pipeline has taken Host out: the URL's authority
            // is what it said (RFC 9112 §3.2.2), and what was recorded.
            if name == "host" {
                return parts
                    .uri
                    .authority()
                    .map(|a| a.as_str().as_bytes().to_vec());
            }
            joined(
                parts
                    .headers
                    .get_all(name)
                    .iter()
                    .map(HeaderValue::as_bytes),
            )
        });
        let candidates = key.as_ref().is_some_and(|k| recordings.has_candidates(k));
        (
            key,
            candidates && !rules.ignore_body,
            recordings.longest_body(),
        )
    };
    // The body is read only when it decides between recordings, and at most
    // as far as the longest recorded one: a longer body cannot match and is
    // forwarded as it is, frames already read first.
    let mut request_body = Bytes::new();
    let mut comparable = true;
    if needs_body && !body.is_end_stream() {
        match tokio::time::timeout(replay.body_timeout, collect_limited(body, limit)).await {
            Ok(Collected::Complete(data)) => {
                request_body = data.clone();
                body = full(data);
            }
            Ok(Collected::TooLarge(rest)) => {
                comparable = false;
                body = rest;
            }
            Ok(Collected::Failed(reason)) => {
                return Ok(Err(UpstreamError::new(
                    Failure::Client,
                    StatusCode::BAD_REQUEST,
                    format!("reading the request body for server replay failed: {reason}"),
                )))
            }
            Err(_) => {
                return Ok(Err(UpstreamError::new(
                    Failure::Client,
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the client sent no complete request body within {} ms (--idle-timeout)",
                        replay.body_timeout.as_millis()
                    ),
                )))
            }
        }
    }
    let found = match &key {
        Some(key) if comparable => replay.recordings().take(key, &request_body),
        _ => Err(Miss::NotRecorded),
    };
    let miss = match found {
        Ok(recording) => {
            tracing::debug!(
                flow = record.id,
                "server replay: answered from {}",
                recording.source
            );
            notes.push("server-replay");
            let response = replayed_response(&recording, &parts.method, SystemTime::now());
            return Ok(Ok(Answer::Replayed(response)));
        }
        Err(miss) => miss,
    };
    let why = match miss {
        Miss::NotRecorded => "no recording for this request",
        Miss::UsedUp => {
            "the recordings for this request are used up (--server-replay-reuse keeps them)"
        }
    };
    // mitmproxy stops replaying once every recording is used; here the
    // extra behaviour holds for the whole run, so a run that asks more than
    // was recorded is noticed.
    match replay.extra {
        ReplayExtra::Forward => {
            tracing::debug!(flow = record.id, "server replay: {why}: forwarding");
            let request = Request::from_parts(parts, body);
            Ok(upstream.send(request).await.map(Answer::Upstream))
        }
        ReplayExtra::Kill => {
            // Recorded like mitmproxy's killed flows: a request, no response.
            if let Some(recording) = record.recording.take() {
                let note = format!("server-replay: {why}");
                recording.finish(Some("killed by server replay".into()), Some(note));
            }
            tracing::info!(
                target: "proxlet::access",
                "#{} {} {} {} killed: server-replay: {why} (--server-replay-extra kill)",
                record.id,
                record.client,
                record.method,
                record.url,
            );
            Err(Killed)
        }
        ReplayExtra::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::NOT_FOUND);
            notes.push(&format!("server-replay: {why}"));
            let text = format!("proxlet: server replay: {why}");
            Ok(Ok(Answer::Replayed(text_response(status, text))))
        }
    }
}

/// The recorded response as it is served now: its body as recorded (still
/// content-coded when it was), `Content-Length` fixed to it, and its dates
/// moved forward by the time since recording (mitmproxy's
/// `server_replay_refresh`), so caches treat it as just received.
fn replayed_response(recording: &Recording, method: &Method, now: SystemTime) -> Response<Body> {
    let recorded = &recording.response;
    let status = StatusCode::from_u16(recorded.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut headers = HeaderMap::with_capacity(recorded.headers.len());
    for field in &recorded.headers {
        match (
            HeaderName::from_bytes(field.name.as_bytes()),
            HeaderValue::from_bytes(&field.value),
        ) {
            (Ok(name), Ok(value)) => {
                headers.append(name, value);
            }
            _ => tracing::debug!(
                "server replay: {}: skipping the recorded field {:?}, not valid in HTTP",
                recording.source,
                field.name
            ),
        }
    }
    // RFC 9112 §6.1: the recorded framing was the recording hop's; the body
    // is sent whole now, so its length is known.
    headers.remove(header::TRANSFER_ENCODING);
    // RFC 9110 §8.6: HEAD, 1xx, 204 and 304 have no content; their
    // Content-Length (if any) describes another response and stays.
    let bodiless = *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let data = if bodiless {
        Bytes::new()
    } else {
        headers.insert(
            header::CONTENT_LENGTH,
            HeaderValue::from(recorded.body.data.len()),
        );
        recorded.body.data.clone()
    };
    if let Some(at) = recording.recorded_at {
        refresh_dates(&mut headers, micros_to_time(at), now);
    }
    let mut response = Response::new(full(data));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

fn micros_to_time(micros: i64) -> SystemTime {
    let magnitude = Duration::from_micros(micros.unsigned_abs());
    if micros >= 0 {
        UNIX_EPOCH + magnitude
    } else {
        UNIX_EPOCH - magnitude
    }
}

/// Moves `Date`, `Expires` and `Last-Modified` by the time between
/// `recorded` and `now`, as mitmproxy's `Response.refresh` does. A value
/// that is not an HTTP-date (RFC 9110 §5.6.7; `Expires: 0` is common) or
/// would leave the years HTTP-dates can say is left as recorded.
pub(crate) fn refresh_dates(headers: &mut HeaderMap, recorded: SystemTime, now: SystemTime) {
    const LAST_HTTP_DATE: Duration = Duration::from_secs(253_402_300_799); // 9999-12-31T23:59:59Z
    let shift = |date: SystemTime| match now.duration_since(recorded) {
        Ok(ahead) => date.checked_add(ahead),
        Err(behind) => date.checked_sub(behind.duration()),
    };
    for name in [header::DATE, header::EXPIRES, header::LAST_MODIFIED] {
        let Some(value) = headers.get(&name).and_then(|v| v.to_str().ok()) else {
            continue;
        };
        let Ok(date) = httpdate::parse_http_date(value) else {
            continue;
        };
        let Some(moved) = shift(date).filter(|d| {
            d.duration_since(UNIX_EPOCH)
                .is_ok_and(|since| since <= LAST_HTTP_DATE)
        }) else {
            continue;
        };
        if let Ok(value) = HeaderValue::from_str(&httpdate::fmt_http_date(moved)) {
            headers.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::{Body as FlowBody, Header, Response as FlowResponse};
    use http_body_util::BodyExt;

    fn at(date: &str) -> SystemTime {
        httpdate::parse_http_date(date).unwrap()
    }

    #[test]
    fn dates_move_forward_by_the_time_since_recording() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::DATE,
            "Sun, 06 Nov 1994 08:49:37 GMT".parse().unwrap(),
        );
        headers.insert(
            header::EXPIRES,
            "Sun, 06 Nov 1994 09:49:37 GMT".parse().unwrap(),
        );
        // RFC 850 and asctime forms are read too; written back as IMF-fixdate.
        headers.insert(
            header::LAST_MODIFIED,
            "Saturday, 05-Nov-94 08:49:37 GMT".parse().unwrap(),
        );
        headers.insert(
            header::AGE,
            "Sun, 06 Nov 1994 08:49:37 GMT".parse().unwrap(),
        );
        let recorded = at("Sun, 06 Nov 1994 08:49:37 GMT");
        let now = recorded + Duration::from_secs(86_400 + 60);
        refresh_dates(&mut headers, recorded, now);
        assert_eq!(headers[header::DATE], "Mon, 07 Nov 1994 08:50:37 GMT");
        assert_eq!(headers[header::EXPIRES], "Mon, 07 Nov 1994 09:50:37 GMT");
        assert_eq!(
            headers[header::LAST_MODIFIED],
            "Sun, 06 Nov 1994 08:50:37 GMT"
        );
        assert_eq!(headers[header::AGE], "Sun, 06 Nov 1994 08:49:37 GMT");
    }

    #[test]
    fn values_that_are_not_dates_or_leave_the_range_stay() {
        let mut headers = HeaderMap::new();
        headers.insert(header::EXPIRES, "0".parse().unwrap());
        headers.insert(
            header::DATE,
            "Fri, 31 Dec 9999 23:00:00 GMT".parse().unwrap(),
        );
        headers.insert(
            header::LAST_MODIFIED,
            "Thu, 01 Jan 1970 00:00:10 GMT".parse().unwrap(),
        );
        let recorded = at("Sun, 06 Nov 1994 08:49:37 GMT");
        // Back in time by a day: before the epoch for Last-Modified.
        refresh_dates(
            &mut headers,
            recorded,
            recorded - Duration::from_secs(86_400),
        );
        assert_eq!(headers[header::EXPIRES], "0");
        assert_eq!(
            headers[header::LAST_MODIFIED],
            "Thu, 01 Jan 1970 00:00:10 GMT"
        );
        assert_eq!(headers[header::DATE], "Thu, 30 Dec 9999 23:00:00 GMT");
        refresh_dates(
            &mut headers,
            recorded,
            recorded + Duration::from_secs(2 * 86_400),
        );
        assert_eq!(headers[header::DATE], "Thu, 30 Dec 9999 23:00:00 GMT");
    }

    fn recording(status: u16, headers: Vec<Header>, body: &[u8]) -> Recording {
        Recording {
            source: "test #1".into(),
            request_body: Bytes::new(),
            response: FlowResponse {
                status,
                headers,
                body: FlowBody::whole(body.to_vec()),
                ..FlowResponse::default()
            },
            recorded_at: None,
        }
    }

    async fn body_of(response: Response<Body>) -> Bytes {
        response.into_body().collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn replayed_bodies_keep_their_coding_and_get_their_length() {
        let gzip = recording(
            200,
            vec![
                Header::new("Content-Encoding", "gzip"),
                Header::new("Transfer-Encoding", "chunked"),
                Header::new("Set-Cookie", "a=1"),
                Header::new("Set-Cookie", "b=2"),
            ],
            b"\x1f\x8b not really gzip",
        );
        let response = replayed_response(&gzip, &Method::GET, SystemTime::now());
        assert_eq!(response.status(), 200);
        let headers = response.headers();
        assert_eq!(headers[header::CONTENT_ENCODING], "gzip");
        assert_eq!(headers[header::CONTENT_LENGTH], "18");
        assert!(headers.get(header::TRANSFER_ENCODING).is_none());
        assert_eq!(headers.get_all(header::SET_COOKIE).iter().count(), 2);
        assert_eq!(&body_of(response).await[..], b"\x1f\x8b not really gzip");
    }

    #[tokio::test]
    async fn head_and_304_keep_their_recorded_length_and_send_nothing() {
        let head = recording(200, vec![Header::new("Content-Length", "1234")], b"");
        let response = replayed_response(&head, &Method::HEAD, SystemTime::now());
        assert_eq!(response.headers()[header::CONTENT_LENGTH], "1234");
        assert!(body_of(response).await.is_empty());

        let not_modified = recording(304, vec![Header::new("ETag", "\"x\"")], b"");
        let response = replayed_response(&not_modified, &Method::GET, SystemTime::now());
        assert_eq!(response.status(), 304);
        assert!(response.headers().get(header::CONTENT_LENGTH).is_none());
    }
}
