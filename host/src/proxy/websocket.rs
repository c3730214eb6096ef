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
    let mut key = [0u8; 4];
    let random = rustls::crypto::ring::default_provider().secure_random;
    if random.fill(&mut key).is_err() {
        key = (crate::flows::now_micros() as u32).to_ne_bytes();
    }
    key
}

/// One peer's sending side, shared by both directions (injected messages
/// and close frames cross over). Frames are written whole under the lock.
struct Out<W> {
    io: tokio::sync::Mutex<W>,
    /// Frames to this peer are masked (it is the server).
    masked: bool,
}

impl<W: AsyncWrite + Unpin> Out<W> {
    /// Writes one whole frame proxlet made.
    async fn frame(&self, fin: bool, opcode: u8, payload: &[u8]) -> std::io::Result<()> {
        let mut io = self.io.lock().await;
        write_made(&mut *io, self.masked, fin, opcode, payload).await
    }

    async fn close(&self, code: u16, reason: &str) {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(&reason.as_bytes()[..reason.len().min(123)]);
        let _ = self.frame(true, CLOSE, &payload).await;
        let _ = self.io.lock().await.shutdown().await;
    }
}

async fn write_made<W: AsyncWrite + Unpin>(
    io: &mut W,
    masked: bool,
    fin: bool,
    opcode: u8,
    payload: &[u8],
) -> std::io::Result<()> {
    let mask = masked.then(new_mask);
    let mut frame = head_bytes(fin, 0, opcode, payload.len(), mask);
    let start = frame.len();
    frame.extend_from_slice(payload);
    if let Some(mask) = mask {
        xor_mask(&mut frame[start..], mask, 0);
    }
    io.write_all(&frame).await
}

/// A message being read: its kind, its first bytes (unmasked), and whether
/// it has been forwarded already (streamed).
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
}

/// What the two directions share.
struct Shared {
    flow: Flow,
    plugins: Option<MessagePlugins>,
    recording: Mutex<Option<Box<Recording>>>,
    closing: Mutex<Closing>,
}

impl Shared {
    fn record(&self, from_client: bool, text: bool, data: &[u8], dropped: bool, injected: bool) {
        let mut recording = self.recording.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(recording) = recording.as_mut() {
            recording.websocket_message(from_client, text, data, dropped, injected);
        }
    }

    fn closed(&self, from_client: bool, payload: &[u8]) {
        let mut closing = self.closing.lock().unwrap_or_else(|e| e.into_inner());
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
    while let Some(head) = reader.head().await? {
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
            streamed: false,
        });
        let mut offset = 0u64;
        if hold && !assembly.streamed {
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
                // Too long to hold: what was held goes now, the rest as it
                // comes; the plugins see the first MESSAGE_MAX bytes.
                let room = MESSAGE_MAX - assembly.data.len();
                let held = std::mem::take(&mut assembly.data);
                let mut io = to.io.lock().await;
                write_made(&mut *io, to.masked, false, assembly.opcode, &held).await?;
                assembly.data = held;
                assembly.data.extend_from_slice(&chunk[..room]);
                stream_rest(&mut *io, to.masked, &head, chunk, offset, &mut reader).await?;
                assembly.size += head.len - offset;
                assembly.streamed = true;
                offset = head.len;
            }
        } else {
            // Streamed: the frame goes on as it came.
            let mut io = to.io.lock().await;
            io.write_all(&head.raw[..head.raw_len]).await?;
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
                io.write_all(&chunk).await?;
            }
            assembly.streamed = true;
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
            let data = match (&mut inflate, done.compressed) {
                (Some(inflater), true) if !truncated => match inflated(inflater, &done.data) {
                    Some(data) => data,
                    None => {
                        inflate = None;
                        done.data
                    }
                },
                (Some(_), true) => {
                    inflate = None;
                    done.data
                }
                _ => done.data,
            };
            shared.record(from_client, text, &data, false, false);
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
        if !done.streamed {
            match &outcome.forward {
                Some(sent) => {
                    let opcode = if sent.text { TEXT } else { BINARY };
                    to.frame(true, opcode, &sent.data).await?;
                    shared.record(from_client, sent.text, &sent.data, false, false);
                }
                None => shared.record(from_client, text, &payload.data, true, false),
            }
        } else {
            shared.record(from_client, text, &payload.data, false, false);
        }
        for (to_client, injected) in outcome.inject {
            let opcode = if injected.text { TEXT } else { BINARY };
            // Towards the sender of this message, or on with it.
            if to_client == from_client {
                back.frame(true, opcode, &injected.data).await?;
            } else {
                to.frame(true, opcode, &injected.data).await?;
            }
            shared.record(!to_client, injected.text, &injected.data, false, true);
        }
    }
    Ok(())
}

/// Writes the rest of a held frame as a continuation frame of its own:
/// `first` (unmasked bytes already read, ending `offset` bytes into the
/// frame), then the frame's remaining bytes as they come, masked afresh
/// when `masked`.
async fn stream_rest<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    io: &mut W,
    masked: bool,
    head: &Head,
    mut first: BytesMut,
    mut offset: u64,
    reader: &mut Reader<R>,
) -> Result<(), Stop> {
    let mask = masked.then(new_mask);
    let len = first.len() as u64 + head.len - offset;
    io.write_all(&head_bytes(head.fin, 0, CONTINUATION, len as usize, mask))
        .await?;
    if let Some(mask) = mask {
        xor_mask(&mut first, mask, 0);
    }
    let mut written = first.len() as u64;
    io.write_all(&first).await?;
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
        io.write_all(&chunk).await?;
    }
    Ok(())
}

/// A compressed message inflated (RFC 7692 §7.2.2), up to [`MESSAGE_MAX`];
/// `None` when it cannot be (the inflater is then of no further use).
fn inflated(inflater: &mut flate2::Decompress, data: &[u8]) -> Option<Vec<u8>> {
    let mut input = data.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::with_capacity((data.len() * 3).min(MESSAGE_MAX));
    let mut read = 0;
    loop {
        if out.len() == out.capacity() {
            if out.len() >= MESSAGE_MAX {
                return None;
            }
            out.reserve((out.len()).clamp(4096, MESSAGE_MAX - out.len()));
        }
        let before = inflater.total_in();
        inflater
            .decompress_vec(&input[read..], &mut out, flate2::FlushDecompress::Sync)
            .ok()?;
        read += (inflater.total_in() - before) as usize;
        if read == input.len() && out.len() < out.capacity() {
            return Some(out);
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
    let id = watch.flow.info.id;
    let activity = super::io::Activity::new();
    let client = super::io::Tracked::new(client, activity.clone());
    let (client_read, client_write) = tokio::io::split(client);
    let (upstream_read, upstream_write) = tokio::io::split(upstream);
    let to_client = Out {
        io: tokio::sync::Mutex::new(client_write),
        masked: false,
    };
    let to_server = Out {
        io: tokio::sync::Mutex::new(upstream_write),
        masked: true,
    };
    let inflater = || watch.deflate.then(|| flate2::Decompress::new(false));
    let (up_inflate, down_inflate) = (inflater(), inflater());
    let shared = Shared {
        flow: watch.flow,
        plugins: watch.plugins,
        recording: Mutex::new(watch.recording),
        closing: Mutex::new(Closing::default()),
    };
    let up = async {
        let done = direction(
            true,
            Reader::new(client_read),
            &to_server,
            &to_client,
            &shared,
            up_inflate,
        )
        .await;
        if done.is_ok() {
            let _ = to_server.io.lock().await.shutdown().await;
        }
        done
    };
    let down = async {
        let done = direction(
            false,
            Reader::new(upstream_read),
            &to_client,
            &to_server,
            &shared,
            down_inflate,
        )
        .await;
        if done.is_ok() {
            let _ = to_client.io.lock().await.shutdown().await;
        }
        done
    };
    let ended = tokio::select! {
        ended = async { tokio::try_join!(up, down).map(|_| ()) } => ended,
        () = activity.idle(idle, idle) => {
            tracing::info!(flow = id, "WebSocket closed after {idle:?} without a byte moving (--idle-timeout)");
            Err(Stop::Io(std::io::ErrorKind::TimedOut.into()))
        }
    };
    let error = match ended {
        Ok(()) => None,
        Err(Stop::Protocol(reason)) => {
            tracing::info!(flow = id, "WebSocket closed: protocol error: {reason}");
            let reason = format!("proxlet: {reason}");
            to_client.close(PROTOCOL_ERROR, &reason).await;
            to_server.close(PROTOCOL_ERROR, &reason).await;
            Some(format!("protocol error: {reason}"))
        }
        Err(Stop::Plugin(reason)) => {
            to_client
                .close(INTERNAL_ERROR, "proxlet: plugin failed")
                .await;
            to_server
                .close(INTERNAL_ERROR, "proxlet: plugin failed")
                .await;
            Some(reason)
        }
        Err(Stop::Io(e)) => {
            tracing::debug!(flow = id, "WebSocket ended: {e}");
            Some(e.to_string())
        }
    };
    let closing = std::mem::take(&mut *shared.closing.lock().unwrap_or_else(|e| e.into_inner()));
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
            assert_eq!(inflated(&mut inflater, &out).unwrap(), text.as_bytes());
        }
    }
}
