//! Where finished flows go: the bounded in-memory store and the `--save`
//! file (written by its own thread), and the [`Recording`] the pipeline fills
//! while a flow is under way. None of it exists when capture is off, so an
//! uncaptured flow pays nothing.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        mpsc, Arc, Mutex,
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, Version};
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use super::{
    filter::Filter,
    now_micros,
    record::{self, BodyRef, Parts, Record},
    Flow, PluginStep, Timings, Tls,
};
use crate::{
    config::CaptureSettings,
    error::{Error, Result},
    proxy::body::{version_str, BoxError},
};

/// Flows waiting for the save thread; beyond this the newest are dropped
/// (and counted) rather than holding the proxy back.
const SAVE_QUEUE: usize = 16 * 1024;
/// Bytes of flows waiting for the save thread, at most.
const SAVE_QUEUE_BYTES: usize = 256 << 20;
/// Longest a saved flow waits in the writer's buffer before it is written
/// to the file.
const FLUSH_AFTER: Duration = Duration::from_millis(100);

/// Receives every finished flow when capture is on.
pub struct Sink {
    body_max: usize,
    store: Option<Store>,
    saver: Option<Saver>,
}

impl Sink {
    /// The sink `settings` ask for; `None` when capture is off.
    pub fn new(settings: &CaptureSettings) -> Result<Option<Arc<Self>>> {
        if !settings.enabled() {
            return Ok(None);
        }
        let saver = match &settings.save {
            Some((path, append)) => {
                let filter = match &settings.save_filter {
                    Some(expr) => Some(Filter::parse(expr).map_err(|e| Error::InvalidOption {
                        option: "--save-filter",
                        value: expr.clone(),
                        reason: e.to_string(),
                    })?),
                    None => None,
                };
                let writer = super::file::FlowWriter::create(path, *append)
                    .map_err(|e| Error::Flows(format!("{e} (check --save)")))?;
                tracing::info!(
                    "saving flows to {}{}",
                    path.display(),
                    if *append { " (appending)" } else { "" }
                );
                Some(Saver::start(writer, filter)?)
            }
            None => None,
        };
        let store = (settings.store_count > 0)
            .then(|| Store::new(settings.store_count, settings.store_bytes));
        Ok(Some(Arc::new(Self {
            body_max: settings.body_max,
            store,
            saver,
        })))
    }

    /// The in-memory store, when `--flows-max` asks for one.
    pub fn store(&self) -> Option<&Store> {
        self.store.as_ref()
    }

    fn finish(&self, id: u64, record: Record) {
        if let Some(saver) = &self.saver {
            saver.send(&record);
        }
        if let Some(store) = &self.store {
            store.push(id, record);
        }
    }

    /// Writes out what is queued for the file and closes it (at shutdown).
    pub fn close(&self) {
        if let Some(saver) = &self.saver {
            saver.close();
        }
    }
}

/// The newest flows, bounded by count and by bytes, held as their encoded
/// records (decoded when read).
pub struct Store {
    max_count: usize,
    max_bytes: usize,
    inner: Mutex<StoreInner>,
}

#[derive(Default)]
struct StoreInner {
    flows: VecDeque<(u64, Record)>,
    bytes: usize,
}

impl Store {
    pub fn new(max_count: usize, max_bytes: usize) -> Self {
        Self {
            max_count,
            max_bytes,
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StoreInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds flow `id`'s record, dropping the oldest ones beyond the bounds.
    pub fn push(&self, id: u64, record: Record) {
        if let Some(events) = crate::web::events() {
            events.stored(id, &record);
        }
        let mut inner = self.lock();
        inner.bytes += record.weight();
        inner.flows.push_back((id, record));
        while inner.flows.len() > self.max_count || inner.bytes > self.max_bytes {
            let Some((_, old)) = inner.flows.pop_front() else {
                break;
            };
            inner.bytes -= old.weight();
        }
    }

    /// The flow with this id, if still held.
    pub fn get(&self, id: u64) -> Option<Flow> {
        decoded(&self.record(id)?, true)
    }

    /// The flows held that match `filter` (all without one), oldest first,
    /// with their bodies.
    pub fn matching(&self, filter: Option<&Filter>) -> Vec<Flow> {
        let records: Vec<Record> = self.lock().flows.iter().map(|(_, r)| r.clone()).collect();
        records
            .iter()
            .filter_map(|r| decoded(r, true))
            .filter(|f| filter.is_none_or(|filter| super::filter::matches(filter, f)))
            .collect()
    }

    /// The records held, oldest first (they share the store's memory).
    pub fn records(&self) -> Vec<(u64, Record)> {
        self.lock().flows.iter().cloned().collect()
    }

    /// The record of flow `id`, if still held.
    pub fn record(&self, id: u64) -> Option<Record> {
        // Flows join when they finish, not in id order.
        let inner = self.lock();
        inner
            .flows
            .iter()
            .rev()
            .find(|(i, _)| *i == id)
            .map(|(_, r)| r.clone())
    }

    /// Replaces flow `id`'s record by `change` of its flow; false when the
    /// flow is no longer held.
    pub fn update(&self, id: u64, change: impl FnOnce(&mut Flow)) -> bool {
        let Some(mut flow) = self.record(id).and_then(|r| decoded(&r, true)) else {
            return false;
        };
        change(&mut flow);
        let mut out = Vec::new();
        super::file::encode(&flow, &mut out);
        let record = Record::new(&[&out]);
        let mut inner = self.lock();
        let Some((_, old)) = inner.flows.iter_mut().rev().find(|(i, _)| *i == id) else {
            return false;
        };
        let (old_weight, new_weight) = (old.weight(), record.weight());
        *old = record;
        inner.bytes = inner.bytes + new_weight - old_weight;
        true
    }

    /// Drops every flow held.
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.flows.clear();
        inner.bytes = 0;
    }

    /// Flows held and the bytes they are counted as.
    pub fn size(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.flows.len(), inner.bytes)
    }
}

/// A record this process encoded decodes; if one ever did not, it is
/// skipped with the reason rather than failing its reader.
fn decoded(record: &Record, bodies: bool) -> Option<Flow> {
    record
        .flow(bodies)
        .inspect_err(|e| tracing::error!("a stored flow record does not decode: {e}"))
        .ok()
}

/// A flow on its way to the save thread.
type Queued = Record;

/// The `--save` writer thread and its queue.
struct Saver {
    queue: Mutex<Option<mpsc::SyncSender<Queued>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Bytes of the records queued, bounded by SAVE_QUEUE_BYTES.
    queued: Arc<AtomicUsize>,
    dropped: AtomicU64,
}

impl Saver {
    fn start(mut writer: super::file::FlowWriter, filter: Option<Filter>) -> Result<Self> {
        let (queue, flows) = mpsc::sync_channel::<Queued>(SAVE_QUEUE);
        let queued = Arc::new(AtomicUsize::new(0));
        let taken = queued.clone();
        let thread = std::thread::Builder::new()
            .name("proxlet-save".into())
            .spawn(move || {
                let mut failed = false;
                // The filter runs here, off the proxy's workers: `~b` decodes
                // bodies, which may take a while.
                let mut write = |writer: &mut super::file::FlowWriter, record: Queued| {
                    taken.fetch_sub(record.weight(), Ordering::Relaxed);
                    let unwanted = |filter: &Filter| {
                        decoded(&record, true).is_none_or(|f| !super::filter::matches(filter, &f))
                    };
                    if failed || filter.as_ref().is_some_and(unwanted) {
                        return;
                    }
                    match writer.write_record(record.bytes()) {
                        Ok(()) => {}
                        // One flow too large for a record: skipped, saving goes on.
                        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                            tracing::warn!("--save: {e}; not saved");
                        }
                        // The file is in doubt from here (a partial record may
                        // follow): stop, so what is in it stays readable.
                        Err(e) => {
                            failed = true;
                            tracing::error!(
                                "cannot write to the --save file: {e}; flows are no longer saved"
                            );
                        }
                    }
                };
                // Flows are taken in batches: after the first of a busy
                // spell the thread sleeps FLUSH_AFTER, then writes all that
                // queued meanwhile and flushes. A finished flow is in the
                // file within about FLUSH_AFTER, and a busy proxy wakes this
                // thread ten times a second, not once a flow (on a proxy
                // pinned to one core each wake-up is a context switch taken
                // from serving).
                while let Ok(first) = flows.recv() {
                    write(&mut writer, first);
                    loop {
                        std::thread::sleep(FLUSH_AFTER);
                        let mut taken = 0;
                        let mut closed = false;
                        loop {
                            match flows.try_recv() {
                                Ok(flow) => {
                                    write(&mut writer, flow);
                                    taken += 1;
                                }
                                Err(mpsc::TryRecvError::Empty) => break,
                                Err(mpsc::TryRecvError::Disconnected) => {
                                    closed = true;
                                    break;
                                }
                            }
                        }
                        if let Err(e) = writer.flush() {
                            tracing::error!("cannot write to the --save file: {e}");
                        }
                        if taken == 0 || closed {
                            break;
                        }
                    }
                }
                let _ = writer.flush();
            })?;
        Ok(Self {
            queue: Mutex::new(Some(queue)),
            thread: Mutex::new(Some(thread)),
            queued,
            dropped: AtomicU64::new(0),
        })
    }

    fn send(&self, record: &Record) {
        let queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let Some(queue) = queue.as_ref() else {
            return;
        };
        let weight = record.weight();
        let full = self.queued.fetch_add(weight, Ordering::Relaxed) + weight > SAVE_QUEUE_BYTES;
        if full || queue.try_send(record.clone()).is_err() {
            self.queued.fetch_sub(weight, Ordering::Relaxed);
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed);
            if dropped.is_power_of_two() || dropped == 0 {
                tracing::warn!(
                    "the --save file cannot keep up: {} flows not saved so far",
                    dropped + 1
                );
            }
        }
    }

    fn close(&self) {
        drop(self.queue.lock().unwrap_or_else(|e| e.into_inner()).take());
        if let Some(thread) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = thread.join();
        }
    }
}

/// What a connection knows for the flows on it: when it was accepted and,
/// inside an intercepted tunnel, its TLS.
#[derive(Debug, Clone, Default)]
pub struct ConnFacts {
    pub accepted: i64,
    /// Shared by the flows of the connection.
    pub tls: Option<Arc<Tls>>,
    pub tls_done: Option<i64>,
}

/// A flow being recorded, filled by the pipeline step by step and encoded
/// into its record when its response is done. Heads are encoded as they
/// are recorded (into buffers the worker reuses), not copied into a
/// [`Flow`]: recording costs no allocation per flow in the steady state.
pub struct Recording {
    id: u64,
    mode: &'static str,
    client: SocketAddr,
    client_tls: Option<Arc<Tls>>,
    server: Option<SocketAddr>,
    server_alpn: Option<&'static str>,
    /// Whether the request is for an https URL (TLS upstream).
    https: bool,
    timings: Timings,
    /// The request head's fields as [`record::request_head`] writes them.
    request: Vec<u8>,
    request_body: Option<Arc<Mutex<Captured>>>,
    /// The response head's fields, once there is a response.
    response: Option<Vec<u8>>,
    response_body: Captured,
    error: Option<String>,
    plugins: Vec<PluginStep>,
    /// `None` once the flow went to the sink.
    sink: Option<Arc<Sink>>,
}

/// The fields of `headers` as a record's head lists them.
fn field_list(headers: &HeaderMap) -> impl Iterator<Item = (&str, &[u8])> {
    headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes()))
}

impl Recording {
    /// `mode`: the listener's (`regular`, `reverse`, `socks5`).
    pub fn new(
        sink: Arc<Sink>,
        id: u64,
        mode: &'static str,
        client: SocketAddr,
        conn: &ConnFacts,
    ) -> Box<Self> {
        let body_max = sink.body_max;
        Box::new(Self {
            id,
            client,
            client_tls: conn.tls.clone(),
            mode,
            server: None,
            server_alpn: None,
            https: false,
            timings: Timings {
                client_connect: Some(conn.accepted),
                client_tls: conn.tls_done,
                request_start: Some(now_micros()),
                ..Default::default()
            },
            request: record::buffer(),
            request_body: None,
            response: None,
            response_body: Captured::new(body_max),
            error: None,
            plugins: Vec::new(),
            sink: Some(sink),
        })
    }

    /// Records the request head as it goes on (to the upstream, or to the
    /// plugin that answers it).
    pub fn request(
        &mut self,
        method: &http::Method,
        url: &http::Uri,
        version: Version,
        headers: &HeaderMap,
    ) {
        self.https = url.scheme() == Some(&http::uri::Scheme::HTTPS);
        self.request.clear();
        record::request_head(
            &mut self.request,
            method.as_str(),
            &record::Url::Uri(url),
            version_str(version),
            field_list(headers),
        );
    }

    /// Records the request URL and method of a flow that ends before its
    /// target is known (a bad request, CONNECT).
    pub fn request_line(&mut self, method: &http::Method, url: &str, version: Version) {
        self.https = url.starts_with("https://");
        self.request.clear();
        record::request_head(
            &mut self.request,
            method.as_str(),
            &record::Url::Text(url),
            version_str(version),
            std::iter::empty(),
        );
    }

    /// Copies the request body, up to the bound, as it is read.
    pub fn tee_request(&mut self, body: crate::proxy::body::Body) -> crate::proxy::body::Body {
        if body.is_end_stream() {
            self.timings.request_end = Some(now_micros());
            return body;
        }
        let body_max = self.response_body.max;
        let captured = Arc::new(Mutex::new(Captured::new(body_max)));
        self.request_body = Some(captured.clone());
        crate::proxy::body::boxed(Tee {
            inner: body,
            captured,
        })
    }

    /// The upstream's address and connection facts, from the response's
    /// connection extras. Connect timings count only for a connection made
    /// for this flow, not one reused from the pool. Call it after
    /// [`request`](Self::request): TLS is the URL's scheme.
    pub fn upstream(&mut self, extensions: &http::Extensions, version: Version) {
        use crate::proxy::{
            dial::ServerAddr,
            stamped::{self, Stamp},
        };
        let tls = self.https;
        self.server = extensions.get::<ServerAddr>().map(|a| a.0);
        let started = self.timings.request_start.unwrap_or(i64::MAX);
        if let Some(tcp) = extensions
            .get::<Stamp<stamped::Tcp>>()
            .filter(|s| s.begun >= started)
        {
            let t = &mut self.timings;
            t.server_connect = Some(tcp.begun);
            t.server_tcp = Some(tcp.ready);
            if tls {
                t.server_tls = extensions.get::<Stamp<stamped::Tls>>().map(|s| s.ready);
            }
        }
        if tls {
            self.server_alpn = Some(if version == Version::HTTP_2 {
                "h2"
            } else {
                "http/1.1"
            });
        }
    }

    /// Records why the upstream gave no response.
    pub fn failed(&mut self, reason: &str) {
        self.error = Some(reason.to_owned());
    }

    /// Records the response head as it goes to the client.
    pub fn response(&mut self, status: http::StatusCode, version: Version, headers: &HeaderMap) {
        self.timings.response_start.get_or_insert_with(now_micros);
        let mut head = self.response.take().unwrap_or_else(record::buffer);
        head.clear();
        record::response_head(
            &mut head,
            status.as_u16(),
            version_str(version),
            field_list(headers),
        );
        self.response = Some(head);
    }

    /// Marks when the upstream's response head arrived.
    pub fn response_started(&mut self) {
        self.timings.response_start = Some(now_micros());
    }

    /// Copies response bytes on their way to the client.
    pub fn response_data(&mut self, data: &Bytes) {
        self.response_body.push(data);
    }

    /// Where plugin calls are noted, when anything is recorded.
    pub fn steps(&mut self) -> &mut Vec<PluginStep> {
        &mut self.plugins
    }

    /// Hands the flow to the sink. `error` is why the response body did not
    /// reach its end (the client left, the upstream failed mid-body).
    pub fn finish(mut self: Box<Self>, error: Option<String>, note: Option<String>) {
        self.complete(error, note);
    }

    fn complete(&mut self, error: Option<String>, note: Option<String>) {
        let Some(sink) = self.sink.take() else {
            return;
        };
        self.timings.response_end = Some(now_micros());
        // The request body, when one was teed: whatever its reader got.
        let request_body = self.request_body.take().map(|captured| {
            let mut captured = captured.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::replace(&mut *captured, Captured::new(0))
        });
        if let Some(captured) = &request_body {
            self.timings.request_end = captured.ended.or(self.timings.request_end);
        }
        if self.timings.request_end.is_none() {
            self.timings.request_end = self.timings.request_start;
        }
        if error.is_some() {
            self.error = error;
        }
        let request = request_body
            .as_ref()
            .map_or(BodyRef::default(), |c| c.as_body_ref(c.ended.is_some()));
        let response_body = self.response_body.as_body_ref(self.error.is_none());
        let mut scratch = record::buffer();
        let encoded = Record::encode(
            &Parts {
                id: self.id,
                mode: self.mode,
                client: Some(self.client),
                server: self.server,
                client_tls: self.client_tls.as_deref(),
                server_alpn: self.server_alpn,
                timings: &self.timings,
                request: &self.request,
                request_body: request,
                response: self.response.as_deref().map(|head| (head, response_body)),
                error: self.error.as_deref(),
                note: note.as_deref(),
                plugins: &self.plugins,
            },
            &mut scratch,
        );
        sink.finish(self.id, encoded);
        record::reuse(scratch);
        record::reuse(std::mem::take(&mut self.request));
        if let Some(head) = self.response.take() {
            record::reuse(head);
        }
        record::reuse(std::mem::take(&mut self.response_body.kept));
        if let Some(captured) = request_body {
            record::reuse(captured.kept);
        }
    }
}

/// A flow dropped unfinished (the client left before its response head)
/// is recorded too, as mitmproxy records killed flows.
impl Drop for Recording {
    fn drop(&mut self) {
        self.complete(Some("client-aborted".into()), None);
    }
}

/// A body's first bytes up to a bound, and its true size.
struct Captured {
    /// Copied, not sliced: a slice would keep the reader's whole buffer
    /// alive (many times the bound for a body sent in small frames).
    kept: Vec<u8>,
    size: u64,
    max: usize,
    ended: Option<i64>,
}

impl Captured {
    fn new(max: usize) -> Self {
        Self {
            kept: Vec::new(),
            size: 0,
            max,
            ended: None,
        }
    }

    fn push(&mut self, data: &Bytes) {
        self.size += data.len() as u64;
        let room = self.max - self.kept.len();
        if room > 0 && !data.is_empty() {
            if self.kept.capacity() == 0 {
                self.kept = record::buffer();
            }
            self.kept.extend_from_slice(&data[..data.len().min(room)]);
        }
    }

    /// The body as kept; `complete` says whether it was seen to its end (a
    /// body cut short by an abort is truncated whatever its length).
    fn as_body_ref(&self, complete: bool) -> BodyRef<'_> {
        BodyRef {
            data: &self.kept,
            size: self.size,
            truncated: (self.kept.len() as u64) < self.size || !complete,
        }
    }
}

/// A request body on its way upstream, copied into the recording.
struct Tee {
    inner: crate::proxy::body::Body,
    captured: Arc<Mutex<Captured>>,
}

impl HttpBody for Tee {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(ready) = &polled {
            let mut captured = self.captured.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(Ok(frame)) = ready {
                if let Some(data) = frame.data_ref() {
                    captured.push(data);
                }
            }
            if ready.is_none() || self.inner.is_end_stream() {
                captured.ended.get_or_insert_with(now_micros);
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: u64, body: usize) -> Record {
        let flow = Flow {
            id,
            response: Some(super::super::Response {
                body: super::super::Body::whole(vec![b'x'; body]),
                ..Default::default()
            }),
            ..Flow::default()
        };
        let mut encoded = Vec::new();
        super::super::file::encode(&flow, &mut encoded);
        Record::new(&[&encoded])
    }

    #[test]
    fn the_store_keeps_the_newest_within_count_and_bytes() {
        let store = Store::new(3, usize::MAX);
        for id in 1..=5 {
            store.push(id, record(id, 10));
        }
        let ids: Vec<_> = store.matching(None).iter().map(|f| f.id).collect();
        assert_eq!(ids, [3, 4, 5]);
        assert!(store.get(2).is_none() && store.get(4).is_some());

        let store = Store::new(1000, 10_000);
        for id in 1..=100 {
            store.push(id, record(id, 1000));
        }
        let (count, bytes) = store.size();
        assert!(bytes <= 10_000 && count > 0, "{count} flows, {bytes} bytes");
        assert_eq!(store.matching(None).last().unwrap().id, 100);
    }

    #[test]
    fn captured_bodies_keep_the_true_size_past_the_bound() {
        let mut captured = Captured::new(5);
        captured.push(&Bytes::from_static(b"abc"));
        captured.push(&Bytes::from_static(b"defgh"));
        let body = captured.as_body_ref(true);
        assert_eq!(body.data, b"abcde");
        assert_eq!(body.size, 8);
        assert!(body.truncated);
        let mut whole = Captured::new(5);
        whole.push(&Bytes::from_static(b"abc"));
        assert!(!whole.as_body_ref(true).truncated);
        let mut aborted = Captured::new(5);
        aborted.push(&Bytes::from_static(b"abc"));
        assert!(
            aborted.as_body_ref(false).truncated,
            "a body cut short is truncated"
        );
    }
}
