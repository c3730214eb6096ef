//! Intercepting (the web UI's): a filter expression pauses the flows it
//! matches before the upstream (request phase) or before the client
//! (response phase), as mitmproxy's `intercept` option does. A paused flow
//! waits on its own oneshot channel: nothing else waits with it. The user
//! resumes it, edited or not, or kills it.
//!
//! With no filter set, the pipeline pays one relaxed atomic load a flow.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use tokio::sync::{broadcast, oneshot};

use super::{filter::Filter, now_micros, Flow, Header};
use crate::proxy::body::{collect_limited, full, version_str, Body, Collected};

/// Bodies up to this size are held and editable; a larger one passes.
pub const MAX_BODY: usize = 8 << 20;
/// Flows paused at once, at most; beyond, flows pass (with a warning).
const MAX_PAUSED: usize = 1000;
/// Longest a flow stays paused: then it goes on unchanged.
const MAX_PAUSE: Duration = Duration::from_secs(30 * 60);

/// Which side of the upstream a flow is paused on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Request,
    Response,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Request => "request",
            Phase::Response => "response",
        }
    }
}

/// The user's edits of a paused flow; `None` leaves a part as it was.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Edits {
    pub method: Option<String>,
    pub url: Option<String>,
    pub status: Option<u16>,
    /// All the fields, replacing the old ones.
    pub headers: Option<Vec<(String, String)>>,
    pub body: Option<String>,
}

/// What the user decided.
#[derive(Debug)]
pub enum Verdict {
    Resume(Edits),
    Kill,
}

/// A paused flow as the UI shows it.
#[derive(Clone)]
pub struct PausedFlow {
    pub flow: Arc<Flow>,
    pub phase: Phase,
}

struct Paused {
    shown: PausedFlow,
    resume: oneshot::Sender<Verdict>,
}

/// Told when a flow pauses or goes on (id, and the phase while paused).
pub type Notify = broadcast::Sender<(u64, Option<Phase>)>;

pub struct Intercept {
    /// Whether a filter is set: the pipeline's only check when none is.
    on: AtomicBool,
    filter: Mutex<Option<(String, Arc<Filter>)>>,
    paused: Mutex<BTreeMap<u64, Paused>>,
    notify: Notify,
}

/// The request as the client sent it (after plugins), for matching and
/// showing in the response phase.
pub struct SeenRequest {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
}

impl SeenRequest {
    pub fn of(parts: &http::request::Parts) -> Self {
        Self {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
        }
    }
}

impl Intercept {
    pub fn new(notify: Notify) -> Self {
        Self {
            on: AtomicBool::new(false),
            filter: Mutex::new(None),
            paused: Mutex::default(),
            notify,
        }
    }

    /// Whether flows are being matched at all.
    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// Sets the filter (`""`: off). A bad expression changes nothing.
    pub fn set_filter(&self, text: &str) -> Result<(), super::filter::FilterError> {
        let parsed = match text.trim() {
            "" => None,
            text => Some((text.to_owned(), Arc::new(Filter::parse(text)?))),
        };
        let mut filter = self.filter.lock().unwrap_or_else(|e| e.into_inner());
        self.on.store(parsed.is_some(), Ordering::Relaxed);
        *filter = parsed;
        Ok(())
    }

    pub fn filter_text(&self) -> String {
        let filter = self.filter.lock().unwrap_or_else(|e| e.into_inner());
        filter.as_ref().map(|(t, _)| t.clone()).unwrap_or_default()
    }

    fn filter(&self) -> Option<Arc<Filter>> {
        let filter = self.filter.lock().unwrap_or_else(|e| e.into_inner());
        filter.as_ref().map(|(_, f)| f.clone())
    }

    /// The paused flows, oldest first.
    pub fn paused(&self) -> Vec<(u64, PausedFlow)> {
        let paused = self.paused.lock().unwrap_or_else(|e| e.into_inner());
        paused
            .iter()
            .map(|(id, p)| (*id, p.shown.clone()))
            .collect()
    }

    pub fn get(&self, id: u64) -> Option<PausedFlow> {
        let paused = self.paused.lock().unwrap_or_else(|e| e.into_inner());
        paused.get(&id).map(|p| p.shown.clone())
    }

    /// Hands `verdict` to paused flow `id`; false when it is not paused.
    pub fn decide(&self, id: u64, verdict: Verdict) -> bool {
        let paused = self
            .paused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        match paused {
            Some(paused) => {
                let _ = paused.resume.send(verdict);
                true
            }
            None => false,
        }
    }

    /// Resumes every paused flow unchanged; returns how many.
    pub fn resume_all(&self) -> usize {
        let all = std::mem::take(&mut *self.paused.lock().unwrap_or_else(|e| e.into_inner()));
        let count = all.len();
        for paused in all.into_values() {
            let _ = paused.resume.send(Verdict::Resume(Edits::default()));
        }
        count
    }

    /// The request phase: pauses the request when the filter matches it,
    /// and applies the user's edits. `Err(())` when the user killed it.
    pub async fn request(
        &self,
        id: u64,
        client: SocketAddr,
        mode: &'static str,
        parts: &mut http::request::Parts,
        body: &mut Body,
    ) -> Result<(), ()> {
        let Some(filter) = self.filter() else {
            return Ok(());
        };
        let mut flow = shown(id, client, mode);
        flow.timings.request_start = Some(now_micros());
        flow.request.method = parts.method.to_string();
        flow.request.url = parts.uri.to_string();
        flow.request.version = version_str(parts.version).into();
        flow.request.headers = headers_of(&parts.headers);
        if !filter.uses_bodies() && !super::filter::matches(&filter, &flow) {
            return Ok(());
        }
        let data = match held(std::mem::replace(body, full(Bytes::new())), id).await {
            Ok(data) => data,
            Err(whole) => {
                *body = whole;
                return Ok(());
            }
        };
        flow.request.body = super::Body::whole(data.clone());
        let Some(edits) = self.decided(id, &filter, flow, Phase::Request).await? else {
            *body = full(data);
            return Ok(());
        };
        if let Some(method) = edits.method.as_deref() {
            match Method::from_bytes(method.trim().as_bytes()) {
                Ok(method) => parts.method = method,
                Err(_) => tracing::warn!(flow = id, "intercept: bad method {method:?} ignored"),
            }
        }
        if let Some(url) = edits.url.as_deref() {
            match url.trim().parse::<Uri>() {
                Ok(uri)
                    if matches!(uri.scheme_str(), Some("http" | "https"))
                        && uri.host().is_some() =>
                {
                    parts.uri = uri
                }
                _ => tracing::warn!(
                    flow = id,
                    "intercept: {url:?} is not an absolute http(s) URL; ignored"
                ),
            }
        }
        if let Some(headers) = &edits.headers {
            parts.headers = header_map(id, headers);
        }
        if edits.url.is_some() {
            // Host follows the URL (RFC 9112 §3.2.2), as the pipeline sets it.
            if let Some(host) = parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            {
                parts.headers.insert(header::HOST, host);
            }
        }
        *body = match edits.body {
            Some(text) => {
                reframe(&mut parts.headers, text.len());
                full(Bytes::from(text))
            }
            None => full(data),
        };
        Ok(())
    }

    /// The response phase: pauses the response when the filter matches the
    /// flow, and applies the user's edits. `Err(())` when killed.
    pub async fn response(
        &self,
        id: u64,
        client: SocketAddr,
        mode: &'static str,
        request: &SeenRequest,
        response: &mut http::Response<Body>,
    ) -> Result<(), ()> {
        let Some(filter) = self.filter() else {
            return Ok(());
        };
        let mut flow = shown(id, client, mode);
        flow.request.method = request.method.to_string();
        flow.request.url = request.uri.to_string();
        flow.request.headers = headers_of(&request.headers);
        flow.response = Some(super::Response {
            status: response.status().as_u16(),
            version: version_str(response.version()).into(),
            headers: headers_of(response.headers()),
            body: super::Body::default(),
        });
        flow.timings.response_start = Some(now_micros());
        if !filter.uses_bodies() && !super::filter::matches(&filter, &flow) {
            return Ok(());
        }
        let body = std::mem::replace(response.body_mut(), full(Bytes::new()));
        let data = match held(body, id).await {
            Ok(data) => data,
            Err(whole) => {
                *response.body_mut() = whole;
                return Ok(());
            }
        };
        if let Some(r) = flow.response.as_mut() {
            r.body = super::Body::whole(data.clone());
        }
        let Some(edits) = self.decided(id, &filter, flow, Phase::Response).await? else {
            *response.body_mut() = full(data);
            return Ok(());
        };
        if let Some(status) = edits.status {
            match StatusCode::from_u16(status) {
                Ok(status) => *response.status_mut() = status,
                Err(_) => tracing::warn!(flow = id, "intercept: bad status {status} ignored"),
            }
        }
        if let Some(headers) = &edits.headers {
            *response.headers_mut() = header_map(id, headers);
        }
        *response.body_mut() = match edits.body {
            Some(text) => {
                // The text is what the user sees and wrote: sent as is.
                response.headers_mut().remove(header::CONTENT_ENCODING);
                reframe(response.headers_mut(), text.len());
                full(Bytes::from(text))
            }
            None => full(data),
        };
        Ok(())
    }

    /// Pauses `flow` (its body held) when `filter` matches it: the user's
    /// edits, `None` when it goes on as it was, `Err` when killed.
    async fn decided(
        &self,
        id: u64,
        filter: &Filter,
        flow: Flow,
        phase: Phase,
    ) -> Result<Option<Edits>, ()> {
        if filter.uses_bodies() && !super::filter::matches(filter, &flow) {
            return Ok(None);
        }
        match self.pause(id, flow, phase).await {
            None => Ok(None),
            Some(Verdict::Resume(edits)) => Ok(Some(edits)),
            Some(Verdict::Kill) => Err(()),
        }
    }

    /// Holds the flow until the user decides (or [`MAX_PAUSE`] passes:
    /// `None`, as when too many flows are paused already).
    async fn pause(&self, id: u64, flow: Flow, phase: Phase) -> Option<Verdict> {
        let (resume, decided) = oneshot::channel();
        {
            let mut paused = self.paused.lock().unwrap_or_else(|e| e.into_inner());
            if paused.len() >= MAX_PAUSED {
                tracing::warn!(
                    flow = id,
                    "intercept: {MAX_PAUSED} flows are paused already; this one goes on"
                );
                return None;
            }
            let shown = PausedFlow {
                flow: Arc::new(flow),
                phase,
            };
            paused.insert(id, Paused { shown, resume });
        }
        let _ = self.notify.send((id, Some(phase)));
        tracing::info!(flow = id, "intercepted ({})", phase.as_str());
        // Removed however this ends, the flow's future dropped included.
        let _unlisted = Unlist {
            intercept: self,
            id,
        };
        match tokio::time::timeout(MAX_PAUSE, decided).await {
            Ok(Ok(verdict)) => Some(verdict),
            Ok(Err(_)) => None,
            Err(_) => {
                tracing::warn!(
                    flow = id,
                    "intercept: paused for {MAX_PAUSE:?}; it goes on unchanged"
                );
                None
            }
        }
    }
}

/// The start of a paused flow as the UI shows it.
fn shown(id: u64, client: SocketAddr, mode: &'static str) -> Flow {
    Flow {
        id,
        mode: mode.into(),
        client: Some(client),
        ..Flow::default()
    }
}

/// Takes a flow off the paused list when its wait ends.
struct Unlist<'a> {
    intercept: &'a Intercept,
    id: u64,
}

impl Drop for Unlist<'_> {
    fn drop(&mut self) {
        self.intercept
            .paused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
        let _ = self.intercept.notify.send((self.id, None));
    }
}

/// The body in memory, or (past [`MAX_BODY`], or failed) the body to pass on.
async fn held(body: Body, id: u64) -> Result<Bytes, Body> {
    match collect_limited(body, MAX_BODY).await {
        Collected::Complete(data) => Ok(data),
        Collected::TooLarge(body) => {
            tracing::info!(
                flow = id,
                "intercept: body over {MAX_BODY} bytes; not paused"
            );
            Err(body)
        }
        Collected::Failed(reason) => {
            tracing::debug!(flow = id, "intercept: body failed: {reason}");
            Err(full(Bytes::new()))
        }
    }
}

fn headers_of(map: &HeaderMap) -> Vec<Header> {
    map.iter()
        .map(|(n, v)| Header::new(n.as_str(), Bytes::copy_from_slice(v.as_bytes())))
        .collect()
}

/// The user's header lines as fields; a line that is not a valid field is
/// dropped with a warning.
fn header_map(id: u64, headers: &[(String, String)]) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        match (
            HeaderName::from_bytes(name.trim().as_bytes()),
            HeaderValue::from_str(value.trim()),
        ) {
            (Ok(name), Ok(value)) => {
                map.append(name, value);
            }
            _ => tracing::warn!(
                flow = id,
                "intercept: header {name:?} ignored (not a valid field)"
            ),
        }
    }
    map
}

/// Framing for a body of `len` bytes sent whole.
fn reframe(headers: &mut HeaderMap, len: usize) {
    headers.remove(header::TRANSFER_ENCODING);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
}
