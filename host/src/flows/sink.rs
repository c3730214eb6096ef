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
    record::{self, BodyRef, MessageInfo, Parts, Record, WebSocketParts},
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
/// Messages a WebSocket's record lists, at most; later ones are counted.
pub const WEBSOCKET_MESSAGES_MAX: usize = 100_000;
/// Payload bytes a WebSocket's record keeps in all: 4 × `--flow-body-max`
/// within these bounds. The payloads are inline in the record's JSON head
/// (up to 6 × their size for text of control characters), which readers
/// take up to 64 MiB, messages' facts included: 8 MiB keeps within that.
const WEBSOCKET_KEPT_MIN: usize = 1 << 20;
const WEBSOCKET_KEPT_MAX: usize = 8 << 20;

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

    /// A WebSocket that just opened: shown by the store, saved once it ends.
    fn opened(&self, id: u64, record: Record) {
        if let Some(store) = &self.store {
            store.push(id, record);
        }
    }

    /// A WebSocket that ended: its record takes the place of the one shown
    /// while it was open, and is saved.
    fn ended(&self, id: u64, record: Record) {
        if let Some(saver) = &self.saver {
            saver.send(&record);
        }
        if let Some(store) = &self.store {
            store.replace(id, record);
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
        self.evict(&mut inner);
    }

    /// Puts `record` in the place of flow `id`'s (a WebSocket's, shown
    /// while it was open), or adds it when that is no longer held. A mark
    /// or comment the user set on the one held stays.
    pub fn replace(&self, id: u64, mut record: Record) {
        let held = self.record(id).and_then(|r| r.flow(false).ok());
        if let Some(held) = held.filter(|f| f.marked || !f.comment.is_empty()) {
            if let Some(mut flow) = decoded(&record, true) {
                flow.marked = held.marked;
                flow.comment = held.comment;
                let mut out = Vec::new();
                super::file::encode(&flow, &mut out);
                record = Record::new(&[&out]);
            }
        }
        let shown = record.clone();
        {
            let mut guard = self.lock();
            let inner = &mut *guard;
            let weight = record.weight();
            match inner.flows.iter_mut().rev().find(|(i, _)| *i == id) {
                Some((_, old)) => {
                    inner.bytes = inner.bytes + weight - old.weight();
                    *old = record;
                }
                None => {
                    inner.bytes += weight;
                    inner.flows.push_back((id, record));
                }
            }
            self.evict(inner);
        }
        // After the change, so that a page reading the flow on this event
        // reads the new record.
        if let Some(events) = crate::web::events() {
            events.stored(id, &shown);
        }
    }

    /// Drops the oldest flows beyond the bounds.
    fn evict(&self, inner: &mut StoreInner) {
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
    /// The request body while it is read (teed), then as it was read.
    request_body: Option<Arc<Mutex<Captured>>>,
    request_read: Option<Captured>,
    /// The response head's fields, once there is a response.
    response: Option<Vec<u8>>,
    response_body: Captured,
    error: Option<String>,
    plugins: Vec<PluginStep>,
    /// The messages of a flow upgraded to WebSocket.
    websocket: Option<Box<Messages>>,
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
            request_read: None,
            response: None,
            response_body: Captured::new(body_max),
            error: None,
            plugins: Vec::new(),
            websocket: None,
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

    /// The `101` went to the client: the connection is a WebSocket now.
    /// The store shows the flow from here on, without messages; the
    /// `--save` file gets it when it ends ([`websocket_closed`](Self::websocket_closed)).
    pub fn websocket_opened(&mut self) {
        // The 101 has no body: the response is done.
        self.timings.response_end.get_or_insert_with(now_micros);
        let body_max = self.response_body.max;
        self.websocket
            .get_or_insert_with(|| Box::new(Messages::new(body_max)));
        let Some(sink) = self.sink.clone() else {
            return;
        };
        if sink.store.is_some() {
            let record = self.encode(None);
            sink.opened(self.id, record);
        }
    }

    /// Keeps one WebSocket message, as it is seen. Its payload is kept up
    /// to `--flow-body-max` and while the WebSocket's budget lasts (then
    /// the message is listed with its size only); beyond
    /// [`WEBSOCKET_MESSAGES_MAX`] messages are only counted.
    pub fn websocket_message(
        &mut self,
        from_client: bool,
        text: bool,
        payload: &[u8],
        size: u64,
        dropped: bool,
        injected: bool,
    ) {
        let body_max = self.response_body.max;
        self.websocket
            .get_or_insert_with(|| Box::new(Messages::new(body_max)))
            .push(from_client, text, payload, size, dropped, injected);
    }

    /// Shows the messages so far in the store, in place of what it showed
    /// (a WebSocket still open; the relay asks at most once a second).
    pub fn websocket_refresh(&mut self) {
        let Some(sink) = self.sink.clone() else {
            return;
        };
        if let Some(store) = &sink.store {
            let record = self.encode(None);
            store.replace(self.id, record);
        }
    }

    /// The WebSocket ended: hands the flow, messages and all, to the sink,
    /// in place of the one the store showed while it was open. `error` is
    /// why it ended without a close handshake, if it did.
    pub fn websocket_closed(
        mut self: Box<Self>,
        closed_by_client: Option<bool>,
        close_code: Option<u16>,
        close_reason: Option<String>,
        error: Option<String>,
    ) {
        let body_max = self.response_body.max;
        let ws = self
            .websocket
            .get_or_insert_with(|| Box::new(Messages::new(body_max)));
        ws.closed_by_client = closed_by_client;
        ws.close_code = close_code;
        ws.close_reason = close_reason;
        self.complete(error, None);
    }

    fn complete(&mut self, error: Option<String>, note: Option<String>) {
        let Some(sink) = self.sink.take() else {
            return;
        };
        let now = now_micros();
        self.timings.response_end.get_or_insert(now);
        if let Some(ws) = self.websocket.as_mut() {
            ws.end.get_or_insert(now);
        }
        if error.is_some() {
            self.error = error;
        }
        let encoded = self.encode(note.as_deref());
        match self.websocket.take() {
            Some(_) => sink.ended(self.id, encoded),
            None => sink.finish(self.id, encoded),
        }
        record::reuse(std::mem::take(&mut self.request));
        if let Some(head) = self.response.take() {
            record::reuse(head);
        }
        record::reuse(std::mem::take(&mut self.response_body.kept));
        if let Some(captured) = self.request_read.take() {
            record::reuse(captured.kept);
        }
    }

    /// The flow's record as it stands.
    fn encode(&mut self, note: Option<&str>) -> Record {
        // The request body, when one was teed: whatever its reader got.
        if let Some(captured) = self.request_body.take() {
            let mut captured = captured.lock().unwrap_or_else(|e| e.into_inner());
            self.request_read = Some(std::mem::replace(&mut *captured, Captured::new(0)));
        }
        if let Some(captured) = &self.request_read {
            self.timings.request_end = captured.ended.or(self.timings.request_end);
        }
        if self.timings.request_end.is_none() {
            self.timings.request_end = self.timings.request_start;
        }
        let request = self
            .request_read
            .as_ref()
            .map_or(BodyRef::default(), |c| c.as_body_ref(c.ended.is_some()));
        // A 101's body is whole (it has none), however the WebSocket ended.
        let response_whole = self.error.is_none() || self.websocket.is_some();
        let response_body = self.response_body.as_body_ref(response_whole);
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
                websocket: self.websocket.as_deref().map(Messages::parts),
                error: self.error.as_deref(),
                note,
                plugins: &self.plugins,
            },
            &mut scratch,
        );
        record::reuse(scratch);
        encoded
    }
}

/// A flow dropped unfinished (the client left before its response head)
/// is recorded too, as mitmproxy records killed flows.
impl Drop for Recording {
    fn drop(&mut self) {
        let reason = match self.websocket {
            // Opened but never closed: whatever ended the relay.
            Some(_) => "websocket-aborted",
            None => "client-aborted",
        };
        self.complete(Some(reason.into()), None);
    }
}

/// A WebSocket's messages as they are seen: each one's facts, and the
/// payload bytes kept, one message's after another's in one buffer (no
/// allocation per message).
struct Messages {
    list: Vec<MessageInfo>,
    payloads: Vec<u8>,
    omitted: u64,
    /// Payload bytes kept of one message, at most (`--flow-body-max`).
    message_max: usize,
    /// Payload bytes kept in all, at most.
    budget: usize,
    closed_by_client: Option<bool>,
    close_code: Option<u16>,
    close_reason: Option<String>,
    end: Option<i64>,
}

impl Messages {
    fn new(body_max: usize) -> Self {
        Self {
            list: Vec::new(),
            payloads: Vec::new(),
            omitted: 0,
            message_max: body_max,
            budget: body_max
                .saturating_mul(4)
                .clamp(WEBSOCKET_KEPT_MIN, WEBSOCKET_KEPT_MAX),
            closed_by_client: None,
            close_code: None,
            close_reason: None,
            end: None,
        }
    }

    /// `payload`: the message's first bytes (all of it, unless `size`, its
    /// true length, is larger).
    fn push(
        &mut self,
        from_client: bool,
        text: bool,
        payload: &[u8],
        size: u64,
        dropped: bool,
        injected: bool,
    ) {
        if self.list.len() >= WEBSOCKET_MESSAGES_MAX {
            self.omitted += 1;
            return;
        }
        let room = self.budget.saturating_sub(self.payloads.len());
        let mut kept = payload.len().min(self.message_max).min(room);
        if text && (kept as u64) < size {
            // A text cut short keeps whole characters: back off a
            // character the cut fell into.
            if let Err(e) = std::str::from_utf8(&payload[..kept]) {
                if e.error_len().is_none() {
                    kept = e.valid_up_to();
                }
            }
        }
        self.payloads.extend_from_slice(&payload[..kept]);
        self.list.push(MessageInfo {
            time: now_micros(),
            size: size.max(payload.len() as u64),
            // At most WEBSOCKET_KEPT_MAX.
            kept: kept as u32,
            from_client,
            text,
            dropped,
            injected,
        });
    }

    fn parts(&self) -> WebSocketParts<'_> {
        WebSocketParts {
            messages: &self.list,
            payloads: &self.payloads,
            omitted: self.omitted,
            closed_by_client: self.closed_by_client,
            close_code: self.close_code,
            close_reason: self.close_reason.as_deref(),
            end: self.end,
        }
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
    use crate::flows::Body;

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

    /// A sink with a store and a `--save` file in `dir`, bodies kept up
    /// to `body_max`.
    fn sink(dir: &std::path::Path, body_max: usize) -> Arc<Sink> {
        let settings = CaptureSettings {
            save: Some((dir.join("t.flows"), false)),
            body_max,
            store_count: 100,
            store_bytes: 64 << 20,
            ..CaptureSettings::default()
        };
        Sink::new(&settings).unwrap().unwrap()
    }

    /// A recording of `GET ws://example.com/chat` answered 101.
    fn upgraded(sink: &Arc<Sink>, id: u64) -> Box<Recording> {
        let mut recording = Recording::new(
            sink.clone(),
            id,
            "regular",
            "127.0.0.1:40000".parse().unwrap(),
            &ConnFacts::default(),
        );
        let mut headers = HeaderMap::new();
        headers.insert(http::header::UPGRADE, "websocket".parse().unwrap());
        recording.request(
            &http::Method::GET,
            &"http://example.com/chat".parse().unwrap(),
            Version::HTTP_11,
            &headers,
        );
        recording.response(
            http::StatusCode::SWITCHING_PROTOCOLS,
            Version::HTTP_11,
            &headers,
        );
        recording
    }

    fn saved(dir: &std::path::Path) -> Vec<Flow> {
        super::super::file::FlowReader::open(&dir.join("t.flows"))
            .unwrap()
            .flows(true)
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn a_websocket_shows_in_the_store_when_it_opens_and_is_saved_with_its_messages_when_it_closes()
    {
        let dir = tempfile::tempdir().unwrap();
        let sink = sink(dir.path(), 1024);
        let mut recording = upgraded(&sink, 7);
        recording.websocket_opened();
        let store = sink.store().unwrap();
        let open = store.get(7).unwrap();
        assert_eq!(open.response.as_ref().unwrap().status, 101);
        let ws = open.websocket.as_ref().unwrap();
        assert!(ws.messages.is_empty() && ws.end.is_none());

        recording.websocket_message(
            true,
            true,
            "héllo".as_bytes(),
            "héllo".len() as u64,
            false,
            false,
        );
        recording.websocket_message(
            false,
            false,
            b"\x00\xff",
            b"\x00\xff".len() as u64,
            true,
            false,
        );
        recording.websocket_message(false, true, b"made", b"made".len() as u64, false, true);
        recording.websocket_closed(Some(true), Some(1000), Some("bye".into()), None);
        sink.close();

        let closed = store.get(7).unwrap();
        assert_eq!(store.size().0, 1, "the open flow's record was replaced");
        assert_eq!(saved(dir.path()), std::slice::from_ref(&closed));
        assert!(closed.error.is_none());
        assert!(!closed.response.as_ref().unwrap().body.truncated);
        let ws = closed.websocket.unwrap();
        let sent: Vec<(bool, bool, &[u8], bool, bool)> = ws
            .messages
            .iter()
            .map(|m| {
                (
                    m.from_client,
                    m.text,
                    &m.content.data[..],
                    m.dropped,
                    m.injected,
                )
            })
            .collect();
        assert_eq!(
            sent,
            [
                (true, true, "héllo".as_bytes(), false, false),
                (false, false, &b"\x00\xff"[..], true, false),
                (false, true, &b"made"[..], false, true),
            ]
        );
        assert!(ws.messages.windows(2).all(|w| w[0].time <= w[1].time));
        assert_eq!(
            (
                ws.closed_by_client,
                ws.close_code,
                ws.close_reason.as_deref()
            ),
            (Some(true), Some(1000), Some("bye"))
        );
        assert!(ws.end >= closed.timings.response_end);
    }

    #[test]
    fn a_mark_set_while_a_websocket_is_open_stays_when_it_closes() {
        let dir = tempfile::tempdir().unwrap();
        let sink = sink(dir.path(), 1024);
        let mut recording = upgraded(&sink, 5);
        recording.websocket_opened();
        let store = sink.store().unwrap();
        assert!(store.update(5, |f| {
            f.marked = true;
            f.comment = "watch".into();
        }));
        recording.websocket_message(true, true, b"hi", b"hi".len() as u64, false, false);
        recording.websocket_closed(Some(true), Some(1000), None, None);
        let flow = store.get(5).unwrap();
        assert!(flow.marked && flow.comment == "watch");
        assert_eq!(flow.websocket.unwrap().messages.len(), 1);
        assert_eq!(store.size().0, 1);
    }

    #[test]
    fn a_websocket_dropped_unclosed_is_recorded_with_what_it_had() {
        let dir = tempfile::tempdir().unwrap();
        let sink = sink(dir.path(), 1024);
        let mut recording = upgraded(&sink, 3);
        recording.websocket_opened();
        recording.websocket_message(true, true, b"one", b"one".len() as u64, false, false);
        drop(recording);
        sink.close();
        let flow = sink.store().unwrap().get(3).unwrap();
        assert_eq!(sink.store().unwrap().size().0, 1);
        assert_eq!(flow.error.as_deref(), Some("websocket-aborted"));
        let ws = flow.websocket.as_ref().unwrap();
        assert_eq!(ws.messages.len(), 1);
        assert!(ws.closed_by_client.is_none() && ws.end.is_some());
        assert_eq!(saved(dir.path()), [flow]);
    }

    #[test]
    fn websocket_messages_are_kept_within_their_bounds() {
        let mut ws = Messages::new(10);
        assert_eq!(ws.budget, WEBSOCKET_KEPT_MIN);
        ws.budget = 25;
        // Each message keeps at most body_max bytes, with its true size.
        ws.push(true, false, &[1; 30], 30, false, false);
        // A text cut keeps whole characters: "é" is two bytes.
        ws.push(true, true, "aaaaaaaaaé".as_bytes(), 11, false, false);
        // The budget (25) runs out: 6 bytes left, then none.
        ws.push(false, false, &[2; 8], 8, false, false);
        ws.push(false, true, b"late", 4, false, false);
        let kept: Vec<(u32, u64)> = ws.list.iter().map(|m| (m.kept, m.size)).collect();
        assert_eq!(kept, [(10, 30), (9, 11), (6, 8), (0, 4)]);
        assert_eq!(ws.payloads.len(), 25);
        // Given only its start (the relay's limit), a message keeps its
        // true size, and a start cut inside a character drops that part.
        let mut cut = Messages::new(10);
        cut.push(true, true, &"aé".as_bytes()[..2], 5_000_000, false, false);
        assert_eq!((cut.list[0].kept, cut.list[0].size), (1, 5_000_000));

        // Past the count bound, messages are only counted.
        let mut many = Messages::new(10);
        for _ in 0..WEBSOCKET_MESSAGES_MAX + 3 {
            many.push(true, true, b"x", 1, false, false);
        }
        assert_eq!(many.list.len(), WEBSOCKET_MESSAGES_MAX);
        assert_eq!(many.omitted, 3);
        assert_eq!(
            Messages::new(100 << 20).budget,
            WEBSOCKET_KEPT_MAX,
            "bounded by what a record head holds"
        );
    }

    #[test]
    fn websocket_messages_past_the_bounds_decode_as_listed_without_data_then_counted() {
        let dir = tempfile::tempdir().unwrap();
        let sink = sink(dir.path(), 4);
        let mut recording = upgraded(&sink, 9);
        recording.websocket_message(true, true, b"abcdef", b"abcdef".len() as u64, false, false);
        if let Some(ws) = recording.websocket.as_mut() {
            ws.budget = 4;
        }
        recording.websocket_message(true, true, b"gh", b"gh".len() as u64, false, false);
        recording.websocket_closed(None, None, None, Some("upstream reset".into()));
        sink.close();
        let flow = sink.store().unwrap().get(9).unwrap();
        assert_eq!(flow.error.as_deref(), Some("upstream reset"));
        let ws = flow.websocket.unwrap();
        let contents: Vec<&Body> = ws.messages.iter().map(|m| &m.content).collect();
        assert_eq!(
            contents,
            [
                &Body {
                    data: Bytes::from_static(b"abcd"),
                    size: 6,
                    truncated: true
                },
                &Body {
                    data: Bytes::new(),
                    size: 2,
                    truncated: true
                },
            ]
        );
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
