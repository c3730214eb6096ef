//! Client replay (`proxlet replay FILE [FILTER]`): each recorded request is
//! sent again to its origin, one at a time in recorded order, and the answer
//! is compared with the recorded one. One line per flow, like the access log;
//! a changed status, body or size says `differs` and exits 1.

use std::{io::Write, time::Duration};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version};
use http_body_util::BodyExt;

use super::read_flows;
use crate::{
    cli::ReplayArgs,
    config::parse_duration,
    error::{Error, Result},
    flows::{filter, Flow},
    proxy::{
        body::{full, Body},
        headers::remove_hop_by_hop,
        upstream::Upstream,
    },
};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// `proxlet replay FILE [FILTER]`.
pub fn client_replay(args: &ReplayArgs) -> Result<()> {
    let filter = args
        .filter
        .as_deref()
        .map(|expr| {
            filter::Filter::parse(expr).map_err(|e| Error::InvalidOption {
                option: "FILTER",
                value: expr.to_owned(),
                reason: e.to_string(),
            })
        })
        .transpose()?;
    let timeout = match &args.upstream_timeout {
        Some(text) => parse_duration(text).ok_or_else(|| Error::InvalidOption {
            option: "--upstream-timeout",
            value: text.clone(),
            reason: "expected a duration such as 30s, 500ms or 2m".into(),
        })?,
        None => DEFAULT_TIMEOUT,
    };
    let tls = crate::tls::client_config(&args.upstream_ca, args.insecure_upstream)?;
    if args.insecure_upstream {
        tracing::warn!("--insecure-upstream: server certificates are NOT verified");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let upstream = {
        let _context = runtime.enter();
        Upstream::new(tls, timeout, timeout, Default::default())
    };
    let mut tally = Tally::default();
    let mut stdout = std::io::stdout().lock();
    read_flows(&args.file, |flow| {
        if filter.as_ref().is_some_and(|f| !filter::matches(f, &flow)) {
            return;
        }
        let outcome = runtime.block_on(replay_one(&upstream, &flow, timeout));
        tally.count(&outcome);
        // A closed stdout (`| head`) must not stop the replay midway.
        let _ = writeln!(stdout, "{}", outcome.line).and_then(|()| stdout.flush());
    })
    .map_err(|e| Error::Flows(format!("proxlet replay: {e}")))?;
    eprintln!("proxlet replay: {}", tally.summary());
    match tally.differ {
        0 => Ok(()),
        n => Err(Error::ReplayDiffers(n)),
    }
}

#[derive(Debug, Default)]
struct Tally {
    replayed: usize,
    differ: usize,
    skipped: usize,
}

impl Tally {
    fn count(&mut self, outcome: &Outcome) {
        match outcome.verdict {
            Verdict::Same => self.replayed += 1,
            Verdict::Differs => {
                self.replayed += 1;
                self.differ += 1;
            }
            Verdict::Skipped => self.skipped += 1,
        }
    }

    fn summary(&self) -> String {
        let skipped = match self.skipped {
            0 => String::new(),
            n => format!(", {n} skipped"),
        };
        format!(
            "{} replayed, {} differ{skipped}",
            self.replayed, self.differ
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Same,
    Differs,
    Skipped,
}

/// What replaying one flow printed and found.
#[derive(Debug)]
struct Outcome {
    line: String,
    verdict: Verdict,
}

/// Sends `flow`'s request again and compares the answer with the recording.
async fn replay_one(upstream: &Upstream, flow: &Flow, timeout: Duration) -> Outcome {
    let label = format!("#{} {} {}", flow.id, flow.request.method, flow.request.url);
    let recorded = flow.response.as_ref();
    let old_status = recorded.map_or("-".to_owned(), |r| r.status.to_string());
    let skipped = |why: String| Outcome {
        line: format!("{label} skipped: {why}"),
        verdict: Verdict::Skipped,
    };
    let failed = |why: String| Outcome {
        line: format!("{label} differs {old_status} → error: {why}"),
        verdict: Verdict::Differs,
    };
    if flow.request.method.eq_ignore_ascii_case("CONNECT") {
        return skipped(
            "a CONNECT opens a tunnel; the requests inside it are replayed on their own".into(),
        );
    }
    let body = &flow.request.body;
    if body.truncated {
        return skipped(format!(
            "its request body was recorded cut short ({} of {} bytes) and cannot be sent again (raise --flow-body-max when recording)",
            body.data.len(),
            body.size
        ));
    }
    let request = match request_of(flow) {
        Ok(request) => request,
        Err(why) => return failed(why),
    };
    let response = match upstream.send(request).await {
        Ok(response) => response,
        Err(error) => return failed(error.reason),
    };
    let status = response.status().as_u16();
    // The recorded bytes to compare with, when the recording holds them all.
    let whole = recorded
        .map(|r| &r.body)
        .filter(|b| !b.truncated && b.data.len() as u64 == b.size)
        .map(|b| &b.data);
    let mut received = Received::default();
    let mut body = response.into_body();
    loop {
        let frame = match tokio::time::timeout(timeout, body.frame()).await {
            Err(_) => {
                return failed(format!(
                    "the response body stalled for {} ms (--upstream-timeout)",
                    timeout.as_millis()
                ))
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => return failed(format!("reading the response body failed: {e}")),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            received.add(&data, whole);
        }
    }
    let new = format!("{status} {}", human_size(received.size));
    let Some(recorded) = recorded else {
        return Outcome {
            line: format!("{label} differs - → {new} (the recording has no response)"),
            verdict: Verdict::Differs,
        };
    };
    let body_changed = whole.is_some_and(|w| received.size != w.len() as u64 || !received.same);
    if recorded.status == status && !body_changed {
        return Outcome {
            line: format!("{label} {new}"),
            verdict: Verdict::Same,
        };
    }
    let same_size_other_bytes = body_changed && received.size == recorded.body.size;
    Outcome {
        line: format!(
            "{label} differs {} → {status}, {} → {}{}",
            recorded.status,
            human_size(recorded.body.size),
            human_size(received.size),
            if same_size_other_bytes {
                " (same size, other bytes)"
            } else {
                ""
            }
        ),
        verdict: Verdict::Differs,
    }
}

/// A response body as it arrives, compared with the recorded one on the way.
#[derive(Debug)]
struct Received {
    size: u64,
    /// Every byte so far equals the recorded one at its offset.
    same: bool,
}

impl Default for Received {
    fn default() -> Self {
        Self {
            size: 0,
            same: true,
        }
    }
}

impl Received {
    fn add(&mut self, data: &[u8], recorded: Option<&Bytes>) {
        if let Some(recorded) = recorded {
            let start = self.size as usize;
            self.same &= recorded
                .get(start..start + data.len())
                .is_some_and(|r| r == data);
        }
        self.size += data.len() as u64;
    }
}

/// The recorded request as it is sent again: its method, URL, fields and
/// body. Hop-by-hop fields (RFC 9110 §7.6.1) belonged to the recorded hop;
/// `Host` comes from the URL and `Content-Length` from the body.
pub(crate) fn request_of(flow: &Flow) -> Result<Request<Body>, String> {
    let recorded = &flow.request;
    let method = Method::from_bytes(recorded.method.as_bytes())
        .map_err(|_| format!("{:?} is not an HTTP method", recorded.method))?;
    let uri: Uri = recorded
        .url
        .parse()
        .map_err(|e| format!("the recorded URL is not valid: {e}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
        return Err("the recorded URL is not an absolute http(s) URL".into());
    }
    let mut headers = HeaderMap::with_capacity(recorded.headers.len());
    for field in &recorded.headers {
        // HTTP/2 pseudo-fields are the URL and method again.
        if field.name.starts_with(':') {
            continue;
        }
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| format!("the recorded field name {:?} is not valid", field.name))?;
        let value = HeaderValue::from_bytes(&field.value)
            .map_err(|_| format!("the recorded {} value is not valid", field.name))?;
        headers.append(name, value);
    }
    remove_hop_by_hop(&mut headers);
    headers.remove(header::HOST);
    headers.remove(header::CONTENT_LENGTH);
    let mut request = Request::new(full(recorded.body.data.clone()));
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    // hyper-util uses HTTP/2 where the origin offers it (ALPN), else 1.1.
    *request.version_mut() = Version::HTTP_11;
    Ok(request)
}

/// `17B`, `1.2KiB`, `3.4MiB`, `1.0GiB`.
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes}B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1}{}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::{Body as FlowBody, Header, Request as FlowRequest};

    #[test]
    fn sizes_read_like_the_access_log() {
        assert_eq!(human_size(17), "17B");
        assert_eq!(human_size(1023), "1023B");
        assert_eq!(human_size(1229), "1.2KiB");
        assert_eq!(human_size(5 << 20), "5.0MiB");
        assert_eq!(human_size(3 << 30), "3.0GiB");
    }

    #[test]
    fn received_bodies_compare_byte_for_byte() {
        let recorded = Bytes::from_static(b"hello world");
        let mut same = Received::default();
        same.add(b"hello ", Some(&recorded));
        same.add(b"world", Some(&recorded));
        assert!(same.same && same.size == 11);
        let mut other = Received::default();
        other.add(b"hello there", Some(&recorded));
        assert!(!other.same);
        let mut longer = Received::default();
        longer.add(b"hello world!", Some(&recorded));
        assert!(!longer.same && longer.size == 12);
    }

    #[test]
    fn resent_requests_drop_hop_by_hop_host_and_length() {
        let flow = Flow {
            request: FlowRequest {
                method: "POST".into(),
                url: "https://a.example/x?q=1".into(),
                headers: vec![
                    Header::new(":authority", "a.example"),
                    Header::new("Host", "a.example"),
                    Header::new("Connection", "keep-alive, x-hop"),
                    Header::new("X-Hop", "1"),
                    Header::new("Content-Length", "2"),
                    Header::new("Accept-Encoding", "gzip"),
                    Header::new("Cookie", "a=1"),
                ],
                body: FlowBody::whole(&b"hi"[..]),
                ..FlowRequest::default()
            },
            ..Flow::default()
        };
        let request = request_of(&flow).unwrap();
        assert_eq!(request.method(), Method::POST);
        assert_eq!(request.uri(), "https://a.example/x?q=1");
        let mut names: Vec<&str> = request.headers().keys().map(|n| n.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["accept-encoding", "cookie"]);

        let mut relative = flow.clone();
        relative.request.url = "/x".into();
        assert!(request_of(&relative).unwrap_err().contains("absolute"));
    }
}
