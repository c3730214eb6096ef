//! A finished flow as the bytes of its flow-file record (frame, JSON head,
//! bodies; `docs/flow-file.md`). Capture encodes each flow once, when it
//! finishes, on the worker that finished it: the in-memory store holds
//! these bytes and the save thread writes them as they are, and they are
//! decoded into a [`Flow`] only when someone reads them.
//!
//! Nothing here allocates per flow in the steady state: heads and bodies are
//! written into buffers a worker thread reuses ([`buffer`]), and finished
//! records are copied into 2 MiB blocks shared by hundreds of neighbours
//! ([`Record::new`]) instead of an allocation each. The JSON is the same
//! serde writes for a [`Flow`] (a test holds them equal), written by hand so
//! that a head goes straight from the proxy's `HeaderMap` into the record,
//! and a WebSocket's messages straight from the buffer they were kept in.

use std::{alloc::Layout, cell::RefCell, net::SocketAddr, ptr::NonNull, sync::Arc};

use bytes::{Bytes, BytesMut};
use serde::Serialize;

use super::{Flow, PluginStep, Timings, Tls};

/// Record frame: head length, request body length, response body length
/// (u32 LE each), CRC-32 of the head (u32 LE).
pub const FRAME_LEN: usize = 16;
/// Finished records are copied into blocks of this size (one huge page)...
const BLOCK: usize = 2 << 20;
/// ...unless larger than this: then a record has its own allocation.
const OWN_ALLOCATION: usize = 256 * 1024;

/// A reused buffer larger than this is freed rather than kept.
const SPARE_MAX_CAPACITY: usize = 64 * 1024;
/// Buffers a thread keeps for reuse, at most.
const SPARE_MAX_COUNT: usize = 256;

thread_local! {
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    static BLOCKS: RefCell<Blocks> = RefCell::new(Blocks::default());
}

/// An empty buffer, reused from this thread's spares when there is one.
pub fn buffer() -> Vec<u8> {
    SPARE
        .try_with(|spare| spare.borrow_mut().pop())
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Gives `buf` back for reuse by this thread.
pub fn reuse(mut buf: Vec<u8>) {
    if buf.capacity() == 0 || buf.capacity() > SPARE_MAX_CAPACITY {
        return;
    }
    buf.clear();
    let _ = SPARE.try_with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.len() < SPARE_MAX_COUNT {
            spare.push(buf);
        }
    });
}

/// A block of records: [`BLOCK`] bytes, aligned so that the system can
/// back it with one huge page. A store holds hundreds of megabytes of
/// records, and a new record goes where the oldest was: memory last touched
/// seconds ago. With small pages every such write pays page walks and TLB
/// misses (under virtualisation, microseconds per record); one huge page
/// per block keeps the whole store within the TLB's reach.
struct Block {
    start: NonNull<u8>,
}

// SAFETY: a Block is plain memory; who writes where is governed by Blocks
// (one thread writes past the records it handed out, never before).
unsafe impl Send for Block {}
unsafe impl Sync for Block {}

impl Block {
    fn layout() -> Layout {
        // BLOCK is a power of two: a valid size and alignment.
        Layout::from_size_align(BLOCK, BLOCK).unwrap_or(Layout::new::<u8>())
    }

    fn new() -> Self {
        // SAFETY: the layout has a non-zero size.
        let memory = unsafe { std::alloc::alloc(Self::layout()) };
        let Some(start) = NonNull::new(memory) else {
            std::alloc::handle_alloc_error(Self::layout());
        };
        #[cfg(target_os = "linux")]
        // SAFETY: advice about memory this block owns; failure (no
        // transparent huge pages) only leaves it on small pages.
        unsafe {
            libc::madvise(memory.cast(), BLOCK, libc::MADV_HUGEPAGE);
        }
        Self { start }
    }

    /// The bytes at `range`, which a record holds.
    fn bytes(&self, start: u32, len: u32) -> &[u8] {
        // SAFETY: records only name ranges within the block that were
        // written before the record was made, and are never written again
        // while any record of the block lives.
        unsafe { std::slice::from_raw_parts(self.start.as_ptr().add(start as usize), len as usize) }
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.start.as_ptr(), Self::layout()) }
    }
}

/// A thread's block being filled and the ones it filled before, oldest
/// first. Records are dropped roughly in the order they were made (the
/// store evicts its oldest, the save thread writes in order), so the oldest
/// block is the first to be free again: it is taken back rather than a new
/// one allocated (fresh memory costs page faults).
#[derive(Default)]
struct Blocks {
    /// The block being filled and how much of it is used; `None` before
    /// the thread's first record.
    current: Option<(Arc<Block>, usize)>,
    filled: std::collections::VecDeque<Arc<Block>>,
}

impl Blocks {
    /// A record of `pieces` (`len` bytes) copied into the current block,
    /// moving on to a free or new block when it is full.
    fn copy(&mut self, len: usize, pieces: &[&[u8]]) -> Record {
        let room = self.current.as_ref().map_or(0, |(_, used)| BLOCK - used);
        if room < len {
            let fresh = (self.free_block(), 0);
            if let Some((full, _)) = self.current.replace(fresh) {
                self.filled.push_back(full);
            }
        }
        let Some((block, used)) = self.current.as_mut() else {
            unreachable!("a block was just put in place");
        };
        let start = *used;
        for piece in pieces {
            // SAFETY: within the block (`room` was checked), past every
            // record handed out from it, and only this thread writes to it.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    piece.as_ptr(),
                    block.start.as_ptr().add(*used),
                    piece.len(),
                );
            }
            *used += piece.len();
        }
        Record(Repr::Block {
            block: block.clone(),
            start: start as u32,
            len: len as u32,
        })
    }

    /// The oldest filled block when none of its records is held any more,
    /// or a new one. A second free block behind it is let go, so that the
    /// blocks kept shrink back after a burst.
    fn free_block(&mut self) -> Arc<Block> {
        let free = |blocks: &mut std::collections::VecDeque<Arc<Block>>| {
            // `get_mut` succeeds only for the last handle: no record left.
            Arc::get_mut(blocks.front_mut()?)?;
            blocks.pop_front()
        };
        let block = free(&mut self.filled);
        if block.is_some() {
            drop(free(&mut self.filled));
        }
        block.unwrap_or_else(|| Arc::new(Block::new()))
    }
}

/// One encoded flow: a whole flow-file record.
#[derive(Clone)]
pub struct Record(Repr);

#[derive(Clone)]
enum Repr {
    /// In a block shared with its neighbours.
    Block {
        block: Arc<Block>,
        start: u32,
        len: u32,
    },
    /// A large record, on its own.
    Own(Bytes),
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Record({} bytes)", self.bytes().len())
    }
}

impl AsRef<[u8]> for Record {
    fn as_ref(&self) -> &[u8] {
        self.bytes()
    }
}

impl Record {
    /// A record holding a copy of `pieces` one after the other, in this
    /// thread's current block when it is small (the block is taken back
    /// for new records, or freed, once all its records are dropped).
    pub fn new(pieces: &[&[u8]]) -> Self {
        let len = pieces.iter().map(|p| p.len()).sum();
        if len <= OWN_ALLOCATION {
            if let Ok(record) = BLOCKS.try_with(|blocks| blocks.borrow_mut().copy(len, pieces)) {
                return record;
            }
        }
        let mut own = BytesMut::with_capacity(len);
        for piece in pieces {
            own.extend_from_slice(piece);
        }
        Self(Repr::Own(own.freeze()))
    }

    /// The record of `parts`, its head encoded in `scratch`.
    pub fn encode(parts: &Parts, scratch: &mut Vec<u8>) -> Self {
        scratch.clear();
        head(parts, scratch);
        let (request, response) = parts.bodies();
        Self::new(&[
            &Frame::of(scratch, request, response).bytes(),
            scratch,
            request,
            response,
        ])
    }

    /// The CRC-32 of the record's head: tells whether two records of one
    /// flow say the same (a WebSocket's record is replaced when it ends).
    pub fn head_crc(&self) -> u32 {
        Frame::read(self.bytes()).map_or(0, |f| f.crc)
    }

    /// The record's bytes, as a flow file holds them.
    pub fn bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Block { block, start, len } => block.bytes(*start, *len),
            Repr::Own(bytes) => bytes,
        }
    }

    /// Memory the record takes, for a store's bound: its bytes and the
    /// handle (blocks are shared, so no allocator overhead per record).
    pub fn weight(&self) -> usize {
        self.bytes().len() + std::mem::size_of::<Self>()
    }

    /// The flow, with its bodies when `bodies` is set (they share the
    /// record's memory).
    pub fn flow(&self, bodies: bool) -> Result<Flow, String> {
        let bytes = self.bytes();
        let frame = Frame::read(bytes).ok_or("record shorter than its frame")?;
        let (head, request, response) = (
            frame.head as usize,
            frame.request as usize,
            frame.response as usize,
        );
        let head_end = FRAME_LEN + head;
        if bytes.len() != head_end + request + response {
            return Err("record length differs from its frame".into());
        }
        let head_bytes = &bytes[FRAME_LEN..head_end];
        if !frame.checks(head_bytes) {
            return Err("checksum mismatch".into());
        }
        let mut flow: Flow = serde_json::from_slice(head_bytes).map_err(|e| e.to_string())?;
        if bodies {
            // The bodies share the record's memory.
            let shared = Bytes::from_owner(self.clone());
            flow.request.body.data = shared.slice(head_end..head_end + request);
            if let Some(r) = flow.response.as_mut() {
                r.body.data = shared.slice(head_end + request..);
            }
        }
        Ok(flow)
    }
}

/// A body as a record holds it: the bytes kept, the true size, whether
/// the bytes are only its beginning.
#[derive(Clone, Copy, Default)]
pub struct BodyRef<'a> {
    pub data: &'a [u8],
    pub size: u64,
    pub truncated: bool,
}

/// Everything a record holds, borrowed: heads arrive already encoded by
/// [`request_head`] and [`response_head`].
pub struct Parts<'a> {
    pub id: u64,
    pub mode: &'a str,
    pub client: Option<SocketAddr>,
    pub server: Option<SocketAddr>,
    pub client_tls: Option<&'a Tls>,
    pub server_alpn: Option<&'a str>,
    pub timings: &'a Timings,
    /// The request head's fields, from [`request_head`].
    pub request: &'a [u8],
    pub request_body: BodyRef<'a>,
    /// The response head's fields, from [`response_head`], and its body.
    pub response: Option<(&'a [u8], BodyRef<'a>)>,
    /// The messages of a flow upgraded to WebSocket.
    pub websocket: Option<WebSocketParts<'a>>,
    pub error: Option<&'a str>,
    pub note: Option<&'a str>,
    pub plugins: &'a [PluginStep],
}

/// A WebSocket as a record holds it: its messages, whose kept bytes lie
/// one after another in `payloads`, and how it ended.
pub struct WebSocketParts<'a> {
    pub messages: &'a [MessageInfo],
    pub payloads: &'a [u8],
    pub omitted: u64,
    pub closed_by_client: Option<bool>,
    pub close_code: Option<u16>,
    pub close_reason: Option<&'a str>,
    pub end: Option<i64>,
}

/// One WebSocket message as a record lists it; its `kept` bytes follow
/// those of the messages before it in [`WebSocketParts::payloads`].
#[derive(Clone, Copy, Debug, Default)]
pub struct MessageInfo {
    pub time: i64,
    /// The payload's true length.
    pub size: u64,
    pub kept: u32,
    pub from_client: bool,
    pub text: bool,
    pub dropped: bool,
    pub injected: bool,
}

impl Parts<'_> {
    fn bodies(&self) -> (&[u8], &[u8]) {
        let response = self.response.as_ref().map_or(&[][..], |(_, b)| b.data);
        (self.request_body.data, response)
    }
}

/// A record's frame: the lengths of its head and bodies, and the head's
/// CRC-32 (u32 LE each, in that order).
#[derive(Clone, Copy)]
pub struct Frame {
    pub head: u32,
    pub request: u32,
    pub response: u32,
    pub crc: u32,
}

impl Frame {
    /// The frame of a record with this head and these bodies.
    pub fn of(head: &[u8], request: &[u8], response: &[u8]) -> Self {
        Self {
            head: head.len() as u32,
            request: request.len() as u32,
            response: response.len() as u32,
            crc: crc32fast::hash(head),
        }
    }

    /// The frame at the start of `bytes`, if they are that long.
    pub fn read(bytes: &[u8]) -> Option<Self> {
        Some(Self::parse(bytes.get(..FRAME_LEN)?.try_into().ok()?))
    }

    pub fn parse(frame: &[u8; FRAME_LEN]) -> Self {
        let word =
            |i: usize| u32::from_le_bytes([frame[i], frame[i + 1], frame[i + 2], frame[i + 3]]);
        Self {
            head: word(0),
            request: word(4),
            response: word(8),
            crc: word(12),
        }
    }

    pub fn bytes(&self) -> [u8; FRAME_LEN] {
        let mut frame = [0; FRAME_LEN];
        for (i, word) in [self.head, self.request, self.response, self.crc]
            .into_iter()
            .enumerate()
        {
            frame[i * 4..i * 4 + 4].copy_from_slice(&word.to_le_bytes());
        }
        frame
    }

    /// Whether `head` is the head this frame was written for.
    pub fn checks(&self, head: &[u8]) -> bool {
        crc32fast::hash(head) == self.crc
    }
}

/// The JSON head of `parts`, as serde writes a [`Flow`]'s.
fn head(parts: &Parts, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"id\":");
    number(out, parts.id);
    out.extend_from_slice(b",\"mode\":");
    string(out, parts.mode);
    out.extend_from_slice(b",\"client\":");
    address(out, parts.client);
    out.extend_from_slice(b",\"server\":");
    address(out, parts.server);
    out.extend_from_slice(b",\"client_tls\":");
    match parts.client_tls {
        Some(tls) => self::tls(
            out,
            tls.sni.as_deref(),
            tls.alpn.as_deref(),
            tls.version.as_deref(),
            tls.intercepted,
        ),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"server_tls\":");
    match parts.server_alpn {
        Some(alpn) => tls(out, None, Some(alpn), None, false),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"timings\":");
    timings(out, parts.timings);
    out.extend_from_slice(b",\"request\":{");
    out.extend_from_slice(parts.request);
    body_info(out, &parts.request_body);
    out.extend_from_slice(b"},\"response\":");
    match &parts.response {
        Some((head, body)) => {
            out.push(b'{');
            out.extend_from_slice(head);
            body_info(out, body);
            out.push(b'}');
        }
        None => out.extend_from_slice(b"null"),
    }
    if let Some(ws) = &parts.websocket {
        out.extend_from_slice(b",\"websocket\":");
        websocket(out, ws);
    }
    out.extend_from_slice(b",\"error\":");
    optional_string(out, parts.error);
    out.extend_from_slice(b",\"note\":");
    optional_string(out, parts.note);
    out.extend_from_slice(b",\"plugins\":");
    if parts.plugins.is_empty() {
        out.extend_from_slice(b"[]");
    } else {
        value(out, parts.plugins);
    }
    out.extend_from_slice(b",\"marked\":false,\"comment\":\"\"}");
}

/// A WebSocket as serde writes [`super::WebSocket`]: each payload inline,
/// text or base64 as a header value.
fn websocket(out: &mut Vec<u8>, ws: &WebSocketParts) {
    let flag = |out: &mut Vec<u8>, key: &[u8], on: bool| {
        out.extend_from_slice(key);
        out.extend_from_slice(if on { b"true" } else { b"false" });
    };
    out.extend_from_slice(b"{\"messages\":[");
    let mut payloads = ws.payloads;
    for (i, m) in ws.messages.iter().enumerate() {
        let (data, rest) = payloads.split_at((m.kept as usize).min(payloads.len()));
        payloads = rest;
        if i > 0 {
            out.push(b',');
        }
        flag(out, b"{\"from_client\":", m.from_client);
        flag(out, b",\"text\":", m.text);
        out.extend_from_slice(b",\"time\":");
        number(out, m.time);
        out.extend_from_slice(b",\"content\":{\"size\":");
        number(out, m.size);
        flag(out, b",\"truncated\":", (data.len() as u64) < m.size);
        out.extend_from_slice(b",\"data\":");
        bytes_value(out, data);
        flag(out, b"},\"dropped\":", m.dropped);
        flag(out, b",\"injected\":", m.injected);
        out.push(b'}');
    }
    out.extend_from_slice(b"],\"messages_omitted\":");
    number(out, ws.omitted);
    out.extend_from_slice(b",\"closed_by_client\":");
    match ws.closed_by_client {
        Some(by_client) => flag(out, b"", by_client),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"close_code\":");
    match ws.close_code {
        Some(code) => number(out, code),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"close_reason\":");
    optional_string(out, ws.close_reason);
    out.extend_from_slice(b",\"end\":");
    match ws.end {
        Some(end) => number(out, end),
        None => out.extend_from_slice(b"null"),
    }
    out.push(b'}');
}

fn tls(
    out: &mut Vec<u8>,
    sni: Option<&str>,
    alpn: Option<&str>,
    version: Option<&str>,
    intercepted: bool,
) {
    out.extend_from_slice(b"{\"sni\":");
    optional_string(out, sni);
    out.extend_from_slice(b",\"alpn\":");
    optional_string(out, alpn);
    out.extend_from_slice(b",\"version\":");
    optional_string(out, version);
    out.extend_from_slice(if intercepted {
        b",\"intercepted\":true}"
    } else {
        b",\"intercepted\":false}"
    });
}

fn timings(out: &mut Vec<u8>, t: &Timings) {
    let fields = [
        ("{\"client_connect\":", t.client_connect),
        (",\"client_tls\":", t.client_tls),
        (",\"request_start\":", t.request_start),
        (",\"request_end\":", t.request_end),
        (",\"server_connect\":", t.server_connect),
        (",\"server_tcp\":", t.server_tcp),
        (",\"server_tls\":", t.server_tls),
        (",\"response_start\":", t.response_start),
        (",\"response_end\":", t.response_end),
    ];
    for (key, moment) in fields {
        out.extend_from_slice(key.as_bytes());
        match moment {
            Some(micros) => number(out, micros),
            None => out.extend_from_slice(b"null"),
        }
    }
    out.push(b'}');
}

/// A socket address as serde writes it: `"1.2.3.4:5"`, `"[::1]:5"`.
fn address(out: &mut Vec<u8>, address: Option<SocketAddr>) {
    match address {
        Some(SocketAddr::V4(v4)) => {
            out.push(b'"');
            for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                number(out, octet);
            }
            out.push(b':');
            number(out, v4.port());
            out.push(b'"');
        }
        Some(v6) => value(out, &v6),
        None => out.extend_from_slice(b"null"),
    }
}

fn optional_string(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        Some(text) => string(out, text),
        None => out.extend_from_slice(b"null"),
    }
}

/// A request's URL: text, or the URI it displays as.
pub enum Url<'a> {
    Text(&'a str),
    Uri(&'a http::Uri),
}

/// The fields of a request head inside its JSON object (no braces).
pub fn request_head<'a>(
    out: &mut Vec<u8>,
    method: &str,
    url: &Url,
    version: &str,
    headers: impl Iterator<Item = (&'a str, &'a [u8])>,
) {
    out.extend_from_slice(b"\"method\":");
    string(out, method);
    out.extend_from_slice(b",\"url\":");
    match url {
        Url::Text(text) => string(out, text),
        // As the URI displays, without building the text first.
        Url::Uri(uri) => {
            let scheme = uri.scheme_str().unwrap_or_default();
            let parts = [
                scheme,
                if scheme.is_empty() { "" } else { "://" },
                uri.authority().map_or("", |a| a.as_str()),
                uri.path(),
                if uri.query().is_some() { "?" } else { "" },
                uri.query().unwrap_or_default(),
            ];
            if parts.iter().all(plain) {
                quoted(out, parts.map(str::as_bytes));
            } else {
                value(out, &parts.concat());
            }
        }
    }
    out.extend_from_slice(b",\"version\":");
    string(out, version);
    header_list(out, headers);
}

/// The fields of a response head inside its JSON object (no braces).
pub fn response_head<'a>(
    out: &mut Vec<u8>,
    status: u16,
    version: &str,
    headers: impl Iterator<Item = (&'a str, &'a [u8])>,
) {
    out.extend_from_slice(b"\"status\":");
    number(out, status);
    out.extend_from_slice(b",\"version\":");
    string(out, version);
    header_list(out, headers);
}

/// `,"headers":[["name","value"],…]`, a value that is not UTF-8 as
/// `{"base64":"…"}` (as [`super::Header`] serialises).
fn header_list<'a>(out: &mut Vec<u8>, headers: impl Iterator<Item = (&'a str, &'a [u8])>) {
    out.extend_from_slice(b",\"headers\":[");
    for (i, (name, value)) in headers.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'[');
        string(out, name);
        out.push(b',');
        bytes_value(out, value);
        out.push(b']');
    }
    out.push(b']');
}

/// Bytes as a JSON string when they are UTF-8, else `{"base64":"…"}` (as
/// [`super::Header`] serialises its value).
fn bytes_value(out: &mut Vec<u8>, value: &[u8]) {
    if plain(value) {
        quoted(out, [value]);
    } else if let Ok(text) = std::str::from_utf8(value) {
        self::value(out, text);
    } else {
        use base64::Engine;
        out.extend_from_slice(b"{\"base64\":\"");
        // Straight into `out`: a binary WebSocket payload may be large.
        let start = out.len();
        out.resize(
            start + base64::encoded_len(value.len(), true).unwrap_or(0),
            0,
        );
        let written = base64::engine::general_purpose::STANDARD
            .encode_slice(value, &mut out[start..])
            .unwrap_or(0);
        out.truncate(start + written);
        out.extend_from_slice(b"\"}");
    }
}

/// `,"body":{"size":…,"truncated":…}` (the bytes follow the head).
fn body_info(out: &mut Vec<u8>, body: &BodyRef) {
    out.extend_from_slice(b",\"body\":{\"size\":");
    number(out, body.size);
    out.extend_from_slice(if body.truncated {
        b",\"truncated\":true}"
    } else {
        b",\"truncated\":false}"
    });
}

/// A JSON string: copied as it is when nothing in it needs escaping (the
/// common case for heads), through serde_json otherwise.
fn string(out: &mut Vec<u8>, text: &str) {
    if plain(text) {
        quoted(out, [text.as_bytes()]);
    } else {
        value(out, text);
    }
}

/// A JSON string of `parts` one after the other, which are [`plain`].
fn quoted<'a>(out: &mut Vec<u8>, parts: impl IntoIterator<Item = &'a [u8]>) {
    out.push(b'"');
    for part in parts {
        out.extend_from_slice(part);
    }
    out.push(b'"');
}

/// Whether `text` goes into a JSON string as it is: printable ASCII other
/// than `"` and `\\` (valid UTF-8, nothing to escape). Eight bytes at a time.
fn plain(text: impl AsRef<[u8]>) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // A high bit set in a lane whose byte is below `n` (for bytes < 0x80).
    let below = |v: u64, n: u8| v.wrapping_sub(ONES * u64::from(n)) & !v & HIGH;
    let bad = |v: u64| {
        (v & HIGH)
            | below(v, 0x20)
            | below(v ^ (ONES * u64::from(b'"')), 1)
            | below(v ^ (ONES * u64::from(b'\\')), 1)
    };
    let bytes = text.as_ref();
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let v = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
        if bad(v) != 0 {
            return false;
        }
    }
    chunks
        .remainder()
        .iter()
        .all(|&b| (0x20..0x80).contains(&b) && b != b'"' && b != b'\\')
}

fn number(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn value<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // Writing plain data into a Vec cannot fail.
    serde_json::to_writer(&mut *out, value).unwrap_or_default();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::{Body, Header};

    /// A flow with every field set that a recording sets, odd header
    /// values included.
    fn full_flow() -> Flow {
        let mut flow = crate::flows::sample();
        // A recording knows only the upstream's ALPN, and nothing of what
        // a user adds later.
        flow.server_tls = Some(Tls {
            alpn: Some("http/1.1".into()),
            ..Tls::default()
        });
        flow.marked = false;
        flow.comment.clear();
        flow.request.url = "https://example.com/a?q=\"x\"".into();
        flow.request
            .headers
            .push(Header::new("x-quote", "a\"b\\c\u{7f}é"));
        flow.note = Some("cache;miss\tnote".into());
        if let Some(ws) = flow.websocket.as_mut() {
            ws.close_reason = Some("bye \"now\"\u{1}".into());
        }
        flow
    }

    fn encoded(flow: &Flow) -> Vec<u8> {
        let mut request = Vec::new();
        fn fields(h: &[Header]) -> Vec<(&str, &[u8])> {
            h.iter().map(|h| (&*h.name, &h.value[..])).collect()
        }
        request_head(
            &mut request,
            &flow.request.method,
            &Url::Text(&flow.request.url),
            &flow.request.version,
            fields(&flow.request.headers).into_iter(),
        );
        let response = flow.response.as_ref().unwrap();
        let mut response_fields = Vec::new();
        response_head(
            &mut response_fields,
            response.status,
            &response.version,
            fields(&response.headers).into_iter(),
        );
        fn body(b: &Body) -> BodyRef<'_> {
            BodyRef {
                data: &b.data,
                size: b.size,
                truncated: b.truncated,
            }
        }
        let ws = flow.websocket.as_ref();
        let messages: Vec<MessageInfo> = ws
            .iter()
            .flat_map(|ws| &ws.messages)
            .map(|m| MessageInfo {
                time: m.time,
                size: m.content.size,
                kept: m.content.data.len() as u32,
                from_client: m.from_client,
                text: m.text,
                dropped: m.dropped,
                injected: m.injected,
            })
            .collect();
        let payloads: Vec<u8> = ws
            .iter()
            .flat_map(|ws| &ws.messages)
            .flat_map(|m| m.content.data.iter().copied())
            .collect();
        let mut scratch = Vec::new();
        let record = Record::encode(
            &Parts {
                id: flow.id,
                mode: &flow.mode,
                client: flow.client,
                server: flow.server,
                client_tls: flow.client_tls.as_ref(),
                server_alpn: flow.server_tls.as_ref().and_then(|t| t.alpn.as_deref()),
                timings: &flow.timings,
                request: &request,
                request_body: body(&flow.request.body),
                response: Some((&response_fields, body(&response.body))),
                websocket: ws.map(|ws| WebSocketParts {
                    messages: &messages,
                    payloads: &payloads,
                    omitted: ws.messages_omitted,
                    closed_by_client: ws.closed_by_client,
                    close_code: ws.close_code,
                    close_reason: ws.close_reason.as_deref(),
                    end: ws.end,
                }),
                error: flow.error.as_deref(),
                note: flow.note.as_deref(),
                plugins: &flow.plugins,
            },
            &mut scratch,
        );
        record.bytes().to_vec()
    }

    #[test]
    fn the_hand_written_head_is_what_serde_writes_for_the_flow() {
        let mut flow = full_flow();
        for websocket in [true, false] {
            if !websocket {
                flow.websocket = None;
            }
            let mut expected = Vec::new();
            super::super::file::encode(&flow, &mut expected);
            let ours = encoded(&flow);
            assert_eq!(
                String::from_utf8_lossy(&ours),
                String::from_utf8_lossy(&expected)
            );
        }
    }

    #[test]
    fn plain_text_is_exactly_what_needs_no_escaping() {
        let naive = |t: &[u8]| {
            t.iter()
                .all(|&b| (0x20..0x80).contains(&b) && b != b'"' && b != b'\\')
        };
        let mut cases: Vec<Vec<u8>> = vec![b"".to_vec(), b"abcdefghijklmnop".to_vec()];
        for bad in [0u8, 0x1f, b'"', b'\\', 0x80, 0xff, 0xc3] {
            for at in 0..17 {
                let mut text = b"abcdefgh12345678x".to_vec();
                text[at] = bad;
                cases.push(text);
            }
        }
        cases.push(b" ~!#$%&'()*+,-./0123456789:;<=>?@[]^_`{|}\x7f".to_vec());
        for case in cases {
            assert_eq!(plain(&case), naive(&case), "{case:?}");
        }
    }

    #[test]
    fn records_decode_to_their_flow_and_refuse_damage() {
        let flow = full_flow();
        let record = Record::new(&[&encoded(&flow)]);
        assert_eq!(record.flow(true).unwrap(), flow);
        let head = record.flow(false).unwrap();
        assert!(
            head.request.body.data.is_empty() && head.request.body.size == flow.request.body.size
        );

        let mut damaged = record.bytes().to_vec();
        damaged[FRAME_LEN + 3] ^= 1;
        assert_eq!(
            Record::new(&[&damaged]).flow(false).unwrap_err(),
            "checksum mismatch"
        );
        assert!(Record::new(&[&damaged[..10]]).flow(false).is_err());
        assert!(Record::new(&[&damaged[..damaged.len() - 1]])
            .flow(false)
            .is_err());
    }

    #[test]
    fn small_records_share_blocks_and_large_ones_do_not() {
        let a = Record::new(&[b"first"]);
        let b = Record::new(&[b"sec", b"ond"]);
        let follows = |a: &Record, b: &Record| {
            a.bytes().as_ptr() as usize + a.bytes().len() == b.bytes().as_ptr() as usize
        };
        // Neighbours in one block.
        assert!(follows(&a, &b));
        let big = vec![7; OWN_ALLOCATION + 1];
        let c = Record::new(&[&big]);
        assert_eq!(c.bytes(), &big[..]);
        let d = Record::new(&[b"third"]);
        assert!(follows(&b, &d));
    }

    #[test]
    fn a_block_is_reused_once_its_records_are_dropped() {
        // On a thread of its own, with blocks of its own.
        std::thread::spawn(|| {
            let record = vec![1; OWN_ALLOCATION];
            let per_block = BLOCK / OWN_ALLOCATION;
            let first: Vec<Record> = (0..per_block).map(|_| Record::new(&[&record])).collect();
            let block = first[0].bytes().as_ptr();
            // The next does not fit: a new block, the first kept aside.
            let next = Record::new(&[&record]);
            assert_ne!(next.bytes().as_ptr(), block);
            drop(first);
            // Whatever memory the allocator has free goes elsewhere.
            let squatter = Block::new();
            let more: Vec<Record> = (0..per_block).map(|_| Record::new(&[&record])).collect();
            assert_eq!(
                more.last().unwrap().bytes().as_ptr(),
                block,
                "the freed block is taken back"
            );
            drop(squatter);
        })
        .join()
        .unwrap();
    }
}
