//! WebSocket messages through the relay (RFC 6455 §5), for WebSockets that
//! someone looks at: plugins that export the WebSocket hooks, or flow
//! capture. A WebSocket nobody looks at stays a byte relay (`upgrade.rs`).
//!
//! Each direction reads frames as they come and, without plugins, forwards
//! each one as it arrives (its bytes as read, chunk by chunk: a frame of any
//! size costs a bounded buffer) while keeping a copy of each message's first
//! bytes for the flow record. With plugins, a message is held until its last
//! fragment, handed to the plugins in order and sent on as one frame, or
//! replaced, dropped, or followed by messages the plugins inject; a message
//! longer than [`MESSAGE_MAX`] is forwarded as it comes and the plugins see
//! its start afterwards. Control frames (ping, pong, close) are forwarded
//! at once, between the fragments of a held message. Frames proxlet writes
//! to the server are masked with a fresh key; frames it forwards unchanged
//! keep the client's.

use std::sync::Mutex;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::{
    flows::sink::Recording,
    plugin::{Flow, MessagePlugins, WsPayload},
};

/// Longest message plugins get whole (and can replace or drop), and the
/// most of any message kept for the flow record.
pub const MESSAGE_MAX: usize = 1 << 20;
/// Most bytes read from a peer at once.
const CHUNK: usize = 64 * 1024;

const CONTINUATION: u8 = 0;
const TEXT: u8 = 1;
const BINARY: u8 = 2;
const CLOSE: u8 = 8;
const PING: u8 = 9;
const PONG: u8 = 10;

/// Close codes proxlet sends (RFC 6455 §7.4.1).
const PROTOCOL_ERROR: u16 = 1002;
const INTERNAL_ERROR: u16 = 1011;

/// Who looks at one WebSocket's messages.
pub struct Watch {
    pub flow: Flow,
    pub plugins: Option<MessagePlugins>,
    pub recording: Option<Box<Recording>>,
    /// permessage-deflate was negotiated (only without plugins): messages
    /// are inflated for the record, never on the wire.
    pub deflate: bool,
}

/// One frame's head as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Head {
    fin: bool,
    /// RSV1–3 as in the first byte (bits 6–4).
    rsv: u8,
    opcode: u8,
    mask: Option<[u8; 4]>,
    len: u64,
    /// The head's bytes as they came, to forward it unchanged.
    raw: [u8; 14],
    raw_len: usize,
}

/// Why a direction stopped.
#[derive(Debug)]
enum Stop {
    /// The peer broke the protocol: close both sides with this code.
    Protocol(String),
    /// A fail-closed plugin failed.
    Plugin(String),
    Io(std::io::Error),
}

impl From<std::io::Error> for Stop {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

/// Frames from one peer.
struct Reader<R> {
    io: R,
    buf: BytesMut,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    fn new(io: R) -> Self {
        Self {
            io,
            buf: BytesMut::new(),
        }
    }

    /// Reads until `n` bytes are buffered; `false` at a clean end before
    /// any byte of them.
    async fn fill(&mut self, n: usize) -> Result<bool, Stop> {
        while self.buf.len() < n {
            self.buf.reserve(CHUNK.max(n - self.buf.len()));
            if self.io.read_buf(&mut self.buf).await? == 0 {
                if self.buf.is_empty() {
                    return Ok(false);
                }
                return Err(Stop::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
        }
        Ok(true)
    }

    /// The next frame's head; `None` when the peer closed between frames.
    async fn head(&mut self) -> Result<Option<Head>, Stop> {
        if !self.fill(2).await? {
            return Ok(None);
        }
        let (b0, b1) = (self.buf[0], self.buf[1]);
        let masked = b1 & 0x80 != 0;
        let extended = match b1 & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let raw_len = 2 + extended + if masked { 4 } else { 0 };
        if !self.fill(raw_len).await? {
            return Err(Stop::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        let len = match extended {
            2 => u64::from(u16::from_be_bytes([self.buf[2], self.buf[3]])),
            8 => u64::from_be_bytes(self.buf[2..10].try_into().unwrap_or_default()),
            _ => u64::from(b1 & 0x7f),
        };
        let mask = masked.then(|| {
            let at = 2 + extended;
            [
                self.buf[at],
                self.buf[at + 1],
                self.buf[at + 2],
                self.buf[at + 3],
            ]
        });
        let mut raw = [0u8; 14];
        raw[..raw_len].copy_from_slice(&self.buf[..raw_len]);
        self.buf.advance(raw_len);
        let head = Head {
            fin: b0 & 0x80 != 0,
            rsv: b0 & 0x70,
            opcode: b0 & 0x0f,
            mask,
            len,
            raw,
            raw_len,
        };
        if len >> 63 != 0 {
            return Err(Stop::Protocol("a frame length with its top bit set".into()));
        }
        match head.opcode {
            CONTINUATION | TEXT | BINARY => {}
            CLOSE | PING | PONG if head.fin && len <= 125 => {}
            CLOSE | PING | PONG => {
                return Err(Stop::Protocol("a fragmented or long control frame".into()))
            }
            other => return Err(Stop::Protocol(format!("unknown opcode {other}"))),
        }
        Ok(Some(head))
    }

    /// Up to `left` bytes of the current frame's payload, as they come
    /// (still masked).
    async fn chunk(&mut self, left: u64) -> Result<BytesMut, Stop> {
        if self.buf.is_empty() && !self.fill(1).await? {
            return Err(Stop::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        let n = (self.buf.len() as u64).min(left).min(CHUNK as u64) as usize;
        Ok(self.buf.split_to(n))
    }
}

/// XORs `data` with `key` as if it began `offset` bytes into a payload.
fn xor_mask(data: &mut [u8], key: [u8; 4], offset: u64) {
    let shift = (offset % 4) as usize;
    let key = [
        key[shift % 4],
        key[(shift + 1) % 4],
        key[(shift + 2) % 4],
        key[(shift + 3) % 4],
    ];
    let word = u64::from(u32::from_ne_bytes(key)) * 0x1_0000_0001;
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let value = u64::from_ne_bytes(chunk.try_into().unwrap_or_default()) ^ word;
        chunk.copy_from_slice(&value.to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= key[i % 4];
    }
}

/// A frame head for `len` payload bytes, masked with `mask` when given.
fn head_bytes(fin: bool, rsv: u8, opcode: u8, len: usize, mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut head = Vec::with_capacity(14);
    head.push(if fin { 0x80 } else { 0 } | rsv | opcode);
    let bit = if mask.is_some() { 0x80 } else { 0 };
    match len {
        0..=125 => head.push(bit | len as u8),
        126..=0xffff => {
            head.push(bit | 126);
            head.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            head.push(bit | 127);
            head.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    if let Some(mask) = mask {
        head.extend_from_slice(&mask);
    }
    head
}

/// A fresh masking key (RFC 6455 §5.3: unpredictable).
fn new_mask() -> [u8; 4] {
    static RANDOM: std::sync::LazyLock<&'static dyn rustls::crypto::SecureRandom> =
        std::sync::LazyLock::new(|| rustls::crypto::ring::default_provider().secure_random);
    let mut key = [0u8; 4];
    if RANDOM.fill(&mut key).is_err() {
        // The system's generator failed (it does not): still a key.
        key = (crate::flows::now_micros() as u32 ^ 0x5a5a_a5a5).to_ne_bytes();
    }
    key
}

/// A whole frame proxlet makes, masked afresh when `masked`.
fn made_frame(masked: bool, fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = masked.then(new_mask);
    let mut frame = head_bytes(fin, 0, opcode, payload.len(), mask);
    let start = frame.len();
    frame.extend_from_slice(payload);
    if let Some(mask) = mask {
        xor_mask(&mut frame[start..], mask, 0);
    }
    frame
}

/// A peer's connection as the relay writes to it.
struct Sink<W> {
    io: W,
    /// A message the forwarding direction streams is partly written: data
    /// frames proxlet makes wait in `pending` (none may land among its
    /// fragments); control frames may.
    in_message: bool,
    /// A frame is partly written: nothing else may be written.
    mid_frame: bool,
    pending: Vec<Vec<u8>>,
}

/// One peer's sending side, shared by both directions (messages a plugin
/// injects towards the sender cross over). The lock is held for one write,
/// never across a read.
struct Out<W> {
    sink: tokio::sync::Mutex<Sink<W>>,
    /// Frames to this peer are masked (it is the server).
    masked: bool,
}

impl<W: AsyncWrite + Unpin> Out<W> {
    fn new(io: W, masked: bool) -> Self {
        Self {
            sink: tokio::sync::Mutex::new(Sink {
                io,
                in_message: false,
                mid_frame: false,
                pending: Vec::new(),
            }),
            masked,
        }
    }

    /// Writes one whole frame proxlet made; a data frame waits while a
    /// streamed message is open.
    async fn frame(&self, fin: bool, opcode: u8, payload: &[u8]) -> std::io::Result<()> {
        let frame = made_frame(self.masked, fin, opcode, payload);
        let mut sink = self.sink.lock().await;
        if opcode < CLOSE && sink.in_message {
            sink.pending.push(frame);
            return Ok(());
        }
        sink.io.write_all(&frame).await
    }

    /// Writes bytes of the forwarding direction's own stream (a frame head
    /// or payload), noting where that leaves the frame and the message; at
    /// a message's end, the frames that waited for it go out.
    async fn forward(
        &self,
        bytes: &[u8],
        mid_frame: bool,
        in_message: bool,
    ) -> std::io::Result<()> {
        let mut sink = self.sink.lock().await;
        sink.io.write_all(bytes).await?;
        sink.mid_frame = mid_frame;
        sink.in_message = in_message;
        if !in_message {
            for frame in std::mem::take(&mut sink.pending) {
                sink.io.write_all(&frame).await?;
            }
        }
        Ok(())
    }

    /// Sends a close frame (unless a frame is half written) and ends the
    /// connection.
    async fn close(&self, code: u16, reason: &str) {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(&reason.as_bytes()[..reason.len().min(123)]);
        let frame = made_frame(self.masked, true, CLOSE, &payload);
        let mut sink = self.sink.lock().await;
        if !sink.mid_frame {
            let _ = sink.io.write_all(&frame).await;
        }
        let _ = sink.io.shutdown().await;
    }
}

/// A message being read: its kind, its first bytes (unmasked), its true
/// size, and whether it is forwarded as it comes (streamed).
struct Assembly {
    opcode: u8,
    compressed: bool,
    data: Vec<u8>,
    size: u64,
    streamed: bool,
}

/// How a WebSocket ended, as the record notes it.
#[derive(Default)]
struct Closing {
    closed_by_client: Option<bool>,
    code: Option<u16>,
    reason: Option<String>,
    /// Close frames seen (one each way completes the handshake).
    seen: u8,
}

/// What the two directions share.
struct Shared {
    flow: Flow,
    plugins: Option<MessagePlugins>,
    recording: Mutex<Option<Box<Recording>>>,
    /// Messages were recorded since the store last showed them.
    unshown: std::sync::atomic::AtomicBool,
    closing: Mutex<Closing>,
}

/// How often an open WebSocket's messages so far are shown in the store
/// (web UI), at most.
const SHOW_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

impl Shared {
    /// Notes a message for the record: `data` its first bytes, `size` its
    /// true length.
    fn record(&self, from_client: bool, text: bool, data: &[u8], size: u64, marks: (bool, bool)) {
        let mut recording = self.recording.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(recording) = recording.as_mut() {
            let (dropped, injected) = marks;
            recording.websocket_message(from_client, text, data, size, dropped, injected);
            self.unshown
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Shows the messages recorded since the last time in the store.
    fn show(&self) {
        if self
            .unshown
            .swap(false, std::sync::atomic::Ordering::Relaxed)
        {
            let mut recording = self.recording.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(recording) = recording.as_mut() {
                recording.websocket_refresh();
            }
        }
    }

    fn closed(&self, from_client: bool, payload: &[u8]) {
        let mut closing = self.closing.lock().unwrap_or_else(|e| e.into_inner());
        closing.seen = closing.seen.saturating_add(1);
        if closing.closed_by_client.is_some() {
            return;
        }
        closing.closed_by_client = Some(from_client);
        if payload.len() >= 2 {
            closing.code = Some(u16::from_be_bytes([payload[0], payload[1]]));
            closing.reason = Some(String::from_utf8_lossy(&payload[2..]).into_owned());
        }
    }
}

const PASSED: (bool, bool) = (false, false);
const DROPPED: (bool, bool) = (true, false);
const INJECTED: (bool, bool) = (false, true);

/// One direction: frames from `reader` to `to`; `back` is the sender's own
/// side (for messages injected towards it).
async fn direction<R, W1, W2>(
    from_client: bool,
    mut reader: Reader<R>,
    to: &Out<W1>,
    back: &Out<W2>,
    shared: &Shared,
    mut inflate: Option<flate2::Decompress>,
) -> Result<(), Stop>
where
    R: AsyncRead + Unpin,
    W1: AsyncWrite + Unpin,
    W2: AsyncWrite + Unpin,
{
    let hold = shared.plugins.is_some();
    let keep = shared
        .recording
        .lock()
        .map(|r| r.is_some())
        .unwrap_or(false);
    let mut message: Option<Assembly> = None;
    loop {
        let Some(head) = reader.head().await? else {
            return match message {
                // The peer left in the middle of a message.
                Some(_) => Err(Stop::Io(std::io::ErrorKind::UnexpectedEof.into())),
                None => Ok(()),
            };
        };
        if head.opcode >= CLOSE {
            let mut payload = BytesMut::new();
            while (payload.len() as u64) < head.len {
                let chunk = reader.chunk(head.len - payload.len() as u64).await?;
                payload.extend_from_slice(&chunk);
            }
            if let Some(mask) = head.mask {
                xor_mask(&mut payload, mask, 0);
            }
            if head.opcode == CLOSE {
                shared.closed(from_client, &payload);
            }
            to.frame(true, head.opcode, &payload).await?;
            continue;
        }
        match (head.opcode, &message) {
            (CONTINUATION, None) => {
                return Err(Stop::Protocol(
                    "a continuation frame with no message".into(),
                ))
            }
            (TEXT | BINARY, Some(_)) => {
                return Err(Stop::Protocol(
                    "a new message inside a fragmented one".into(),
                ))
            }
            _ => {}
        }
        if hold && head.rsv != 0 {
            return Err(Stop::Protocol(
                "RSV bits set, but no extension was negotiated".into(),
            ));
        }
        let assembly = message.get_or_insert_with(|| Assembly {
            opcode: head.opcode,
            compressed: head.rsv & 0x40 != 0,
            data: Vec::new(),
            size: 0,
            streamed: !hold,
        });
        let mut offset = 0u64;
        if !assembly.streamed {
            // Held: buffered until the message ends or outgrows the limit.
            while offset < head.len {
                let mut chunk = reader.chunk(head.len - offset).await?;
                if let Some(mask) = head.mask {
                    xor_mask(&mut chunk, mask, offset);
                }
                offset += chunk.len() as u64;
                assembly.size += chunk.len() as u64;
                if assembly.data.len() + chunk.len() <= MESSAGE_MAX {
                    assembly.data.extend_from_slice(&chunk);
                    continue;
                }
                // Too long to hold: what was held goes now as a first
                // fragment, the rest as it comes; the plugins see the first
                // MESSAGE_MAX bytes.
                let room = MESSAGE_MAX - assembly.data.len();
                let first = made_frame(to.masked, false, assembly.opcode, &assembly.data);
                to.forward(&first, false, true).await?;
                assembly.data.extend_from_slice(&chunk[..room]);
                assembly.streamed = true;
                stream_rest(to, &head, chunk, offset, &mut reader).await?;
                assembly.size += head.len - offset;
                offset = head.len;
            }
        } else {
            // Streamed: the frame goes on as it came.
            let ends = head.fin;
            to.forward(
                &head.raw[..head.raw_len],
                head.len > 0,
                !(ends && head.len == 0),
            )
            .await?;
            while offset < head.len {
                let chunk = reader.chunk(head.len - offset).await?;
                if keep && assembly.data.len() < MESSAGE_MAX {
                    let take = chunk.len().min(MESSAGE_MAX - assembly.data.len());
                    let start = assembly.data.len();
                    assembly.data.extend_from_slice(&chunk[..take]);
                    if let Some(mask) = head.mask {
                        xor_mask(&mut assembly.data[start..], mask, offset);
                    }
                }
                offset += chunk.len() as u64;
                assembly.size += chunk.len() as u64;
                let done = offset == head.len;
                to.forward(&chunk, !done, !(ends && done)).await?;
            }
        }
        if !head.fin {
            continue;
        }
        let Some(done) = message.take() else {
            continue;
        };
        let text = done.opcode == TEXT;
        let truncated = done.size > done.data.len() as u64;
        let Some(plugins) = &shared.plugins else {
            // Recorded as it went, inflated when it was compressed.
            let inflater = inflate.as_mut().filter(|_| done.compressed);
            match inflater.map(|i| (truncated, inflated(i, &done.data))) {
                Some((false, Inflated::Whole(data))) => {
                    shared.record(from_client, text, &data, data.len() as u64, PASSED);
                }
                Some((false, Inflated::Last(data))) => {
                    inflate = None;
                    shared.record(from_client, text, &data, data.len() as u64, PASSED);
                }
                Some(_) => {
                    // Cut short or beyond the bound: the inflater's window is
                    // lost; later messages are recorded compressed.
                    inflate = None;
                    shared.record(from_client, false, &done.data, done.size, PASSED);
                }
                None => shared.record(from_client, text, &done.data, done.size, PASSED),
            }
            continue;
        };
        let payload = WsPayload {
            text,
            data: Bytes::from(done.data),
        };
        let outcome = plugins
            .on_message(&shared.flow, from_client, payload.clone(), truncated)
            .await;
        if let Some(reason) = outcome.close {
            return Err(Stop::Plugin(reason));
        }
        let size = done.size;
        match (&outcome.forward, done.streamed) {
            (_, true) => shared.record(from_client, text, &payload.data, size, PASSED),
            (Some(sent), false) => {
                let opcode = if sent.text { TEXT } else { BINARY };
                to.frame(true, opcode, &sent.data).await?;
                let len = sent.data.len() as u64;
                shared.record(from_client, sent.text, &sent.data, len, PASSED);
            }
            (None, false) => shared.record(from_client, text, &payload.data, size, DROPPED),
        }
        for (to_client, injected) in outcome.inject {
            let opcode = if injected.text { TEXT } else { BINARY };
            // Towards the sender of this message, or on with it.
            if to_client == from_client {
                back.frame(true, opcode, &injected.data).await?;
            } else {
                to.frame(true, opcode, &injected.data).await?;
            }
            let len = injected.data.len() as u64;
            shared.record(!to_client, injected.text, &injected.data, len, INJECTED);
        }
    }
}

/// Writes the rest of a held frame as a continuation frame of its own:
/// `first` (unmasked bytes already read, ending `offset` bytes into the
/// frame), then the frame's remaining bytes as they come, masked afresh
/// towards the server.
async fn stream_rest<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    to: &Out<W>,
    head: &Head,
    mut first: BytesMut,
    mut offset: u64,
    reader: &mut Reader<R>,
) -> Result<(), Stop> {
    let mask = to.masked.then(new_mask);
    let len = first.len() as u64 + head.len - offset;
    let ends = head.fin;
    let frame_head = head_bytes(ends, 0, CONTINUATION, len as usize, mask);
    to.forward(&frame_head, true, true).await?;
    if let Some(mask) = mask {
        xor_mask(&mut first, mask, 0);
    }
    let mut written = first.len() as u64;
    let done = offset == head.len;
    to.forward(&first, !done, !(ends && done)).await?;
    while offset < head.len {
        let mut chunk = reader.chunk(head.len - offset).await?;
        if let Some(original) = head.mask {
            xor_mask(&mut chunk, original, offset);
        }
        if let Some(mask) = mask {
            xor_mask(&mut chunk, mask, written);
        }
        offset += chunk.len() as u64;
        written += chunk.len() as u64;
        let done = offset == head.len;
        to.forward(&chunk, !done, !(ends && done)).await?;
    }
    Ok(())
}

/// What inflating one message gave.
#[derive(Debug, PartialEq, Eq)]
enum Inflated {
    /// The message, and the inflater goes on with the next one.
    Whole(Vec<u8>),
    /// The message, which ended the deflate stream (a final block): the
    /// inflater is done.
    Last(Vec<u8>),
    /// Not inflatable within [`MESSAGE_MAX`], or not deflate at all.
    Failed,
}

/// A compressed message inflated (RFC 7692 §7.2.2), up to [`MESSAGE_MAX`]
/// of output whatever the input claims.
fn inflated(inflater: &mut flate2::Decompress, data: &[u8]) -> Inflated {
    let tail = [0u8, 0, 0xff, 0xff];
    let mut out = Vec::with_capacity(data.len().saturating_mul(2).min(MESSAGE_MAX));
    let mut scratch = vec![0u8; 16 * 1024];
    let mut read = 0usize;
    let total = data.len() + tail.len();
    loop {
        let input: &[u8] = if read < data.len() {
            &data[read..]
        } else {
            &tail[read - data.len()..]
        };
        let (before_in, before_out) = (inflater.total_in(), inflater.total_out());
        let status = match inflater.decompress(input, &mut scratch, flate2::FlushDecompress::Sync) {
            Ok(status) => status,
            Err(_) => return Inflated::Failed,
        };
        let used = (inflater.total_in() - before_in) as usize;
        let made = (inflater.total_out() - before_out) as usize;
        read += used;
        if out.len() + made > MESSAGE_MAX {
            return Inflated::Failed;
        }
        out.extend_from_slice(&scratch[..made]);
        if status == flate2::Status::StreamEnd {
            return Inflated::Last(out);
        }
        if read >= total && made < scratch.len() {
            return Inflated::Whole(out);
        }
        if used == 0 && made == 0 {
            return Inflated::Failed;
        }
    }
}

/// Relays a WebSocket both ways with `watch` looking at its messages,
/// until both sides closed, one broke the protocol, a fail-closed plugin
/// failed, or nothing moved for `idle`.
pub async fn relay<C, U>(client: C, upstream: U, watch: Watch, idle: std::time::Duration)
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    U: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// Longest proxlet waits to say why it closes a WebSocket.
    const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
    let id = watch.flow.id();
    // Bytes moving either way keep the WebSocket alive.
    let activity = super::io::Activity::new();
    let client = super::io::Tracked::new(client, activity.clone());
    let upstream = super::io::Tracked::new(upstream, activity.clone());
    let (client_read, client_write) = tokio::io::split(client);
    let (upstream_read, upstream_write) = tokio::io::split(upstream);
    let to_client = Out::new(client_write, false);
    let to_server = Out::new(upstream_write, true);
    let inflater = || watch.deflate.then(|| flate2::Decompress::new(false));
    let (up_inflate, down_inflate) = (inflater(), inflater());
    let shared = Shared {
        flow: watch.flow,
        plugins: watch.plugins,
        recording: Mutex::new(watch.recording),
        unshown: false.into(),
        closing: Mutex::new(Closing::default()),
    };
    let up = async {
        let reader = Reader::new(client_read);
        let done = direction(true, reader, &to_server, &to_client, &shared, up_inflate).await;
        if done.is_ok() {
            let _ = to_server.sink.lock().await.io.shutdown().await;
        }
        done
    };
    let down = async {
        let reader = Reader::new(upstream_read);
        let done = direction(false, reader, &to_client, &to_server, &shared, down_inflate).await;
        if done.is_ok() {
            let _ = to_client.sink.lock().await.io.shutdown().await;
        }
        done
    };
    let both = async { tokio::try_join!(up, down).map(|_| ()) };
    let idled = activity.idle(idle, idle);
    tokio::pin!(both, idled);
    let mut show = tokio::time::interval_at(tokio::time::Instant::now() + SHOW_EVERY, SHOW_EVERY);
    show.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let ended = loop {
        tokio::select! {
            ended = &mut both => break ended,
            () = &mut idled => {
                tracing::info!(flow = id, "WebSocket closed after {idle:?} without a byte moving (--idle-timeout)");
                break Err(Stop::Io(std::io::ErrorKind::TimedOut.into()));
            }
            _ = show.tick() => shared.show(),
        }
    };
    // Both sides told why, at once and within a bound (a peer that does
    // not read cannot hold the relay).
    let close_both = async |code: u16, reason: &str| {
        let both =
            async { tokio::join!(to_client.close(code, reason), to_server.close(code, reason)) };
        let _ = tokio::time::timeout(CLOSE_WAIT, both).await;
    };
    let error = match ended {
        Ok(()) => None,
        Err(Stop::Protocol(reason)) => {
            tracing::info!(flow = id, "WebSocket closed: protocol error: {reason}");
            close_both(PROTOCOL_ERROR, &format!("proxlet: {reason}")).await;
            Some(format!("protocol error: {reason}"))
        }
        Err(Stop::Plugin(reason)) => {
            close_both(INTERNAL_ERROR, "proxlet: plugin failed").await;
            Some(reason)
        }
        Err(Stop::Io(e)) => {
            tracing::debug!(flow = id, "WebSocket ended: {e}");
            Some(e.to_string())
        }
    };
    let closing = std::mem::take(&mut *shared.closing.lock().unwrap_or_else(|e| e.into_inner()));
    // After a close each way, how the sockets went down is no error.
    let error = error.filter(|_| closing.seen < 2);
    let recording = shared
        .recording
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    if let Some(recording) = recording {
        recording.websocket_closed(
            closing.closed_by_client,
            closing.code,
            closing.reason,
            error,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masking_matches_the_byte_rule_at_any_offset() {
        let key = [0x12, 0x34, 0x56, 0x78];
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        for offset in 0..8u64 {
            let mut masked = data.clone();
            xor_mask(&mut masked, key, offset);
            for (i, (m, d)) in masked.iter().zip(&data).enumerate() {
                assert_eq!(
                    *m,
                    d ^ key[(offset as usize + i) % 4],
                    "offset {offset} byte {i}"
                );
            }
        }
    }

    #[tokio::test]
    async fn heads_parse_every_length_form_and_refuse_bad_control_frames() {
        for len in [0usize, 125, 126, 65535, 65536] {
            let mut bytes = head_bytes(true, 0, BINARY, len, Some([1, 2, 3, 4]));
            let head_len = bytes.len();
            bytes.resize(head_len + len, 0);
            let mut reader = Reader {
                io: &bytes[..],
                buf: BytesMut::new(),
            };
            let head = reader.head().await.unwrap().unwrap();
            assert_eq!(
                (head.len, head.mask, head.raw_len),
                (len as u64, Some([1, 2, 3, 4]), head_len)
            );
            assert_eq!(&head.raw[..head.raw_len], &bytes[..head_len]);
        }
        for bad in [
            head_bytes(false, 0, PING, 0, None),
            head_bytes(true, 0, CLOSE, 126, None),
            head_bytes(true, 0, 3, 0, None),
        ] {
            let mut reader = Reader {
                io: &bad[..],
                buf: BytesMut::new(),
            };
            assert!(matches!(reader.head().await, Err(Stop::Protocol(_))));
        }
    }

    #[test]
    fn inflating_follows_the_sliding_window_across_messages() {
        use flate2::{Compress, Compression, FlushCompress};
        let mut compress = Compress::new(Compression::default(), false);
        let mut inflater = flate2::Decompress::new(false);
        for text in ["hello hello hello", "hello again, hello"] {
            let mut out = Vec::with_capacity(256);
            compress
                .compress_vec(text.as_bytes(), &mut out, FlushCompress::Sync)
                .unwrap();
            assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
            out.truncate(out.len() - 4);
            assert_eq!(
                inflated(&mut inflater, &out),
                Inflated::Whole(text.as_bytes().to_vec())
            );
        }
    }

    #[test]
    fn inflating_stops_at_a_final_block_and_at_the_bound() {
        // `03 00`: an empty final block. The inflater is done after it
        // (it must not spin on the appended tail).
        let mut inflater = flate2::Decompress::new(false);
        assert_eq!(
            inflated(&mut inflater, &[0x03, 0x00]),
            Inflated::Last(Vec::new())
        );
        // A message that inflates past the bound fails, whatever its size
        // compressed (here ~1 KiB for 4 MiB of zeros).
        use flate2::{Compress, Compression, FlushCompress};
        let mut compress = Compress::new(Compression::best(), false);
        let mut bomb = Vec::with_capacity(64 << 10);
        compress
            .compress_vec(&vec![0u8; 4 << 20], &mut bomb, FlushCompress::Sync)
            .unwrap();
        bomb.truncate(bomb.len() - 4);
        let mut inflater = flate2::Decompress::new(false);
        assert_eq!(inflated(&mut inflater, &bomb), Inflated::Failed);
        // Just under the bound is whole.
        let mut compress = Compress::new(Compression::best(), false);
        let mut fits = Vec::with_capacity(64 << 10);
        let near = vec![b'x'; MESSAGE_MAX - 100];
        compress
            .compress_vec(&near, &mut fits, FlushCompress::Sync)
            .unwrap();
        fits.truncate(fits.len() - 4);
        let mut inflater = flate2::Decompress::new(false);
        assert_eq!(inflated(&mut inflater, &fits), Inflated::Whole(near));
    }
}
