//! Flow files (`.flows`): a header, then one length-framed record per flow,
//! appended as flows finish. The format is specified in `docs/flow-file.md`;
//! this module is its reference implementation.
//!
//! A record's frame says how long its JSON head and its two bodies are, so a
//! reader lists and filters flows by reading the heads and seeking past the
//! bodies. A record is written with one `write` and a reader stops at the
//! first incomplete or corrupt one: a killed writer leaves a file readable
//! up to its last complete flow.

use std::{
    fs::{File, OpenOptions},
    io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
};

use super::Flow;

/// The first bytes of every flow file. The high byte and the CR/LF catch
/// transfers that mangle binary files, as PNG's signature does.
pub const MAGIC: [u8; 8] = *b"\x89PXFLW\r\n";
/// The format version this code writes and the newest it reads.
pub const VERSION: u32 = 1;
/// File header: magic, version (u32 LE), reserved (u32 LE, zero).
const HEADER_LEN: u64 = 16;
use super::record::{Frame, FRAME_LEN};
/// Longest head a reader accepts: a head is JSON of the heads and timings.
const MAX_HEAD: u32 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum FlowFileError {
    #[error("cannot open flow file {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("{path} is not a proxlet flow file (it does not start with the flow file signature)")]
    NotAFlowFile { path: PathBuf },
    #[error("{path} is flow file format version {found}; this proxlet reads up to {VERSION} (upgrade proxlet)")]
    Version { path: PathBuf, found: u32 },
    #[error("reading flow file: {0}")]
    Io(#[from] io::Error),
    #[error("flow record at byte {offset} is corrupt: {reason}")]
    Corrupt { offset: u64, reason: String },
}

/// Creates (or truncates) `path` readable by its owner only: flows hold
/// what clients sent, credentials and cookies included.
pub fn create_private(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

/// Whether `path` starts like a proxlet flow file.
pub fn is_flow_file(path: &Path) -> bool {
    let mut magic = [0; 8];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok_and(|()| magic == MAGIC)
}

/// Encodes `flow` as one record (frame, head, bodies) at the end of `out`.
pub fn encode(flow: &Flow, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_LEN]);
    // Serialising plain data into a Vec cannot fail.
    serde_json::to_writer(&mut *out, flow).unwrap_or_default();
    let request = &flow.request.body.data;
    let response = flow.response.as_ref().map_or(&[][..], |r| &r.body.data[..]);
    let frame = Frame::of(&out[start + FRAME_LEN..], request, response);
    out[start..start + FRAME_LEN].copy_from_slice(&frame.bytes());
    out.extend_from_slice(request);
    out.extend_from_slice(response);
}

/// The file header of format [`VERSION`].
pub fn file_header() -> [u8; HEADER_LEN as usize] {
    let mut header = [0; HEADER_LEN as usize];
    header[..8].copy_from_slice(&MAGIC);
    header[8..12].copy_from_slice(&VERSION.to_le_bytes());
    header
}

/// Appends flows to a file, one record per `write` call.
pub struct FlowWriter {
    out: BufWriter<File>,
    record: Vec<u8>,
    behind: DropBehind,
}

impl FlowWriter {
    /// Creates (or truncates) `path`, or with `append` adds to the flow file
    /// there — cutting off an incomplete last record a killed writer left.
    pub fn create(path: &Path, append: bool) -> Result<Self, FlowFileError> {
        let open_error = |source| FlowFileError::Open {
            path: path.to_owned(),
            source,
        };
        let existing = append && path.metadata().is_ok_and(|m| m.len() > 0);
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = OpenOptions::new()
            .mode(0o600)
            .read(true)
            .write(true)
            .create(true)
            .truncate(!append)
            .open(path)
            .map_err(open_error)?;
        let start = if existing {
            let end = {
                let mut reader = FlowReader::new(path, file.try_clone()?)?;
                while let Some(entry) = reader.next_head() {
                    match entry {
                        Ok(_) => {}
                        // What a crash left (zeros, a torn record) is cut off.
                        Err(FlowFileError::Corrupt { offset, reason }) => {
                            tracing::warn!(
                                "{}: cutting off a corrupt record at byte {offset} ({reason}) before appending",
                                path.display()
                            );
                            break;
                        }
                        Err(e) => return Err(e),
                    }
                }
                reader.position
            };
            file.set_len(end)?;
            file.seek(SeekFrom::Start(end))?;
            end
        } else {
            file.write_all(&file_header())?;
            HEADER_LEN
        };
        Ok(Self {
            out: BufWriter::with_capacity(256 * 1024, file),
            record: Vec::new(),
            behind: DropBehind {
                end: start,
                started: [start; 2],
                dropped: 0,
            },
        })
    }

    /// Buffers one flow; it reaches the file at the next [`flush`](Self::flush)
    /// or when the buffer fills.
    pub fn write(&mut self, flow: &Flow) -> io::Result<()> {
        let mut record = std::mem::take(&mut self.record);
        record.clear();
        encode(flow, &mut record);
        let written = self.write_record(&record);
        self.record = record;
        written
    }

    /// Buffers one encoded record (as [`encode`] or the capture's
    /// [`super::record`] make them).
    pub fn write_record(&mut self, record: &[u8]) -> io::Result<()> {
        let head_len = Frame::read(record).map_or(0, |f| f.head);
        if head_len > MAX_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a flow does not fit a record (head of {head_len} bytes)"),
            ));
        }
        // A record bigger than the buffer goes straight out in one write.
        self.out.write_all(record)?;
        self.behind.end += record.len() as u64;
        Ok(())
    }

    /// Writes out what is buffered; then the written part of the file is
    /// sent on to the disk and dropped from the page cache behind it.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()?;
        self.behind.advance(self.out.get_ref());
        Ok(())
    }
}

/// The page cache behind a flow file being written. A capture writes tens
/// of megabytes a second that nobody reads back soon: left in the cache they
/// would crowd out what is read (the cache dir's files), and each new page
/// costs the kernel a fresh allocation. So each flush starts the disk write
/// of what was just written, and drops from the cache what the flush before
/// the last one started (pages still being written are left; nothing waits
/// on the disk).
struct DropBehind {
    /// Bytes handed to the file.
    end: u64,
    /// Bytes whose disk write was started, as of the last two flushes.
    started: [u64; 2],
    /// Bytes dropped from the page cache (whole pages before this).
    dropped: u64,
}

impl DropBehind {
    fn advance(&mut self, file: &File) {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let fd = file.as_raw_fd();
            let to_drop = self.started[0];
            if to_drop > self.dropped {
                // Advisory: failure only means the pages stay cached.
                // SAFETY: plain syscalls on an open descriptor.
                unsafe {
                    libc::posix_fadvise(
                        fd,
                        self.dropped as i64,
                        (to_drop - self.dropped) as i64,
                        libc::POSIX_FADV_DONTNEED,
                    );
                }
                // The last page may be partly written: it goes next time.
                self.dropped = to_drop & !4095;
            }
            let started = self.started[1];
            if self.end > started {
                // SAFETY: as above.
                unsafe {
                    libc::sync_file_range(
                        fd,
                        started as i64,
                        (self.end - started) as i64,
                        libc::SYNC_FILE_RANGE_WRITE,
                    );
                }
            }
            self.started = [started, self.end];
        }
        #[cfg(not(target_os = "linux"))]
        let _ = file;
    }
}

/// Reads a flow file record by record.
pub struct FlowReader<R> {
    input: BufReader<R>,
    /// Offset of the next record.
    position: u64,
    /// Body lengths of the record whose head was read last.
    pending: Option<(u32, u32)>,
    /// The input's length when last looked at (a file being written grows).
    len: u64,
    /// Set when the file ends in an incomplete record.
    pub torn: bool,
    /// The file's name, for warnings.
    path: PathBuf,
}

impl FlowReader<File> {
    /// Opens `path` and checks its header.
    pub fn open(path: &Path) -> Result<Self, FlowFileError> {
        let file = File::open(path).map_err(|source| FlowFileError::Open {
            path: path.to_owned(),
            source,
        })?;
        Self::new(path, file)
    }
}

impl<R: Read + Seek> FlowReader<R> {
    /// Reads the header of a flow file from `input` (named `path` in errors).
    pub fn new(path: &Path, input: R) -> Result<Self, FlowFileError> {
        let mut input = BufReader::with_capacity(256 * 1024, input);
        input.seek(SeekFrom::Start(0))?;
        let mut header = [0; HEADER_LEN as usize];
        let read = read_full(&mut input, &mut header)?;
        if read < HEADER_LEN as usize || header[..8] != MAGIC {
            return Err(FlowFileError::NotAFlowFile {
                path: path.to_owned(),
            });
        }
        let found = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
        if found > VERSION || found == 0 {
            return Err(FlowFileError::Version {
                path: path.to_owned(),
                found,
            });
        }
        let len = input.get_mut().seek(SeekFrom::End(0))?;
        input.seek(SeekFrom::Start(HEADER_LEN))?;
        Ok(Self {
            input,
            path: path.to_owned(),
            position: HEADER_LEN,
            pending: None,
            len,
            torn: false,
        })
    }

    /// The flows (with their bodies when `bodies` is set) up to the end of
    /// the file, or up to its first incomplete or corrupt record: that ends
    /// the file as a crash does, the flows before it are what there is, and
    /// a warning says so.
    pub fn flows(mut self, bodies: bool) -> impl Iterator<Item = Result<Flow, FlowFileError>> {
        let mut ended = false;
        std::iter::from_fn(move || {
            if ended {
                return None;
            }
            let next = if bodies {
                self.next_flow()
            } else {
                self.next_head()
            };
            match next {
                Some(Err(e @ FlowFileError::Corrupt { .. })) => {
                    tracing::warn!("{}: {e}; the flows after it are not read", self.path.display());
                }
                None if self.torn => tracing::warn!(
                    "{}: the last record is incomplete (the writer stopped mid-flow); it was skipped",
                    self.path.display()
                ),
                None => {}
                flow => return flow,
            }
            ended = true;
            None
        })
    }

    /// The next flow with its bodies.
    pub fn next_flow(&mut self) -> Option<Result<Flow, FlowFileError>> {
        let mut flow = match self.next_head()? {
            Ok(flow) => flow,
            Err(e) => return Some(Err(e)),
        };
        Some(self.bodies(&mut flow).map(|()| flow))
    }

    /// The next flow's head only (bodies empty, sizes set); its bodies can be
    /// read with [`bodies`](Self::bodies) before the next call, or are skipped.
    pub fn next_head(&mut self) -> Option<Result<Flow, FlowFileError>> {
        if let Err(e) = self.skip_bodies() {
            return Some(Err(e.into()));
        }
        let offset = self.position;
        let mut frame = [0; FRAME_LEN];
        match read_full(&mut self.input, &mut frame) {
            Ok(0) => return None,
            Ok(n) if n < FRAME_LEN => {
                self.torn = true;
                return None;
            }
            Ok(_) => {}
            Err(e) => return Some(Err(e.into())),
        }
        let frame = Frame::parse(&frame);
        let (head_len, request_len, response_len) = (frame.head, frame.request, frame.response);
        // No record has an empty head: zeros are what a crash can leave.
        if head_len == 0 {
            self.torn = true;
            return None;
        }
        if head_len > MAX_HEAD {
            self.torn = true;
            return Some(Err(FlowFileError::Corrupt {
                offset,
                reason: format!("head of {head_len} bytes"),
            }));
        }
        // A head that runs past the end was cut short by a crash: checked
        // before anything is allocated for it.
        let head_end = offset + (FRAME_LEN as u64) + u64::from(head_len);
        match self.len_at_least(head_end) {
            Ok(true) => {}
            Ok(false) => {
                self.torn = true;
                return None;
            }
            Err(e) => return Some(Err(e.into())),
        }
        let mut head = vec![0; head_len as usize];
        match read_full(&mut self.input, &mut head) {
            Ok(n) if n < head.len() => {
                self.torn = true;
                return None;
            }
            Ok(_) => {}
            Err(e) => return Some(Err(e.into())),
        }
        if !frame.checks(&head) {
            self.torn = true;
            return Some(Err(FlowFileError::Corrupt {
                offset,
                reason: "checksum mismatch".into(),
            }));
        }
        let flow: Flow = match serde_json::from_slice(&head) {
            Ok(flow) => flow,
            Err(e) => {
                return Some(Err(FlowFileError::Corrupt {
                    offset,
                    reason: e.to_string(),
                }))
            }
        };
        let end = offset + (FRAME_LEN as u64) + u64::from(head_len);
        let bodies_end = end + u64::from(request_len) + u64::from(response_len);
        // A record whose bodies run past the end was cut short by a crash.
        if self.len_at_least(bodies_end).is_ok_and(|ok| !ok) {
            self.torn = true;
            return None;
        }
        self.position = end;
        self.pending = Some((request_len, response_len));
        Some(Ok(flow))
    }

    /// Reads the bodies of the flow whose head was read last into `flow`.
    pub fn bodies(&mut self, flow: &mut Flow) -> Result<(), FlowFileError> {
        let Some((request_len, response_len)) = self.pending.take() else {
            return Ok(());
        };
        let mut read = |len: u32| -> io::Result<bytes::Bytes> {
            let mut data = vec![0; len as usize];
            self.input.read_exact(&mut data)?;
            Ok(data.into())
        };
        flow.request.body.data = read(request_len)?;
        let response = read(response_len)?;
        if let Some(r) = flow.response.as_mut() {
            r.body.data = response;
        }
        self.position += u64::from(request_len) + u64::from(response_len);
        Ok(())
    }

    fn skip_bodies(&mut self) -> io::Result<()> {
        if let Some((request_len, response_len)) = self.pending.take() {
            let skip = u64::from(request_len) + u64::from(response_len);
            self.input.seek_relative(skip as i64)?;
            self.position += skip;
        }
        Ok(())
    }

    /// Whether the input is at least `len` bytes long.
    fn len_at_least(&mut self, len: u64) -> io::Result<bool> {
        if len > self.len {
            let here = self.input.stream_position()?;
            self.len = self.input.get_mut().seek(SeekFrom::End(0))?;
            // Seeking the inner reader invalidates BufReader's buffer: seek
            // back through the BufReader so it discards and refills.
            self.input.seek(SeekFrom::Start(here))?;
        }
        Ok(self.len >= len)
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::{Body, Header, Request, Response};

    fn flow(id: u64, body: &'static [u8]) -> Flow {
        Flow {
            id,
            request: Request {
                method: "POST".into(),
                url: format!("https://example.com/{id}"),
                version: "HTTP/1.1".into(),
                headers: vec![Header::new("host", "example.com")],
                body: Body::whole(&b"up"[..]),
            },
            response: Some(Response {
                status: 200,
                version: "HTTP/1.1".into(),
                headers: vec![Header::new("content-type", "text/plain")],
                body: Body::whole(body),
            }),
            ..Flow::default()
        }
    }

    #[test]
    fn flows_round_trip_with_bodies_and_heads_skip_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.flows");
        let mut writer = FlowWriter::create(&path, false).unwrap();
        for id in 1..=3 {
            writer.write(&flow(id, b"\x00binary\xff body")).unwrap();
        }
        writer.flush().unwrap();
        let mut reader = FlowReader::open(&path).unwrap();
        let mut ids = Vec::new();
        while let Some(f) = reader.next_flow() {
            let f = f.unwrap();
            assert_eq!(f, flow(f.id, b"\x00binary\xff body"));
            ids.push(f.id);
        }
        assert_eq!(ids, [1, 2, 3]);
        let mut reader = FlowReader::open(&path).unwrap();
        let heads: Vec<_> = std::iter::from_fn(|| reader.next_head())
            .map(|f| f.unwrap())
            .collect();
        assert_eq!(heads.len(), 3);
        assert!(heads[2].response.as_ref().unwrap().body.data.is_empty());
        assert_eq!(heads[2].response.as_ref().unwrap().body.size, 13);
    }

    #[test]
    fn a_torn_tail_is_ignored_by_readers_and_cut_by_appenders() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.flows");
        let mut writer = FlowWriter::create(&path, false).unwrap();
        writer.write(&flow(1, b"one")).unwrap();
        writer.write(&flow(2, b"two")).unwrap();
        writer.flush().unwrap();
        drop(writer);
        let full = std::fs::metadata(&path).unwrap().len();
        // Every cut inside the second record leaves exactly the first.
        let whole = std::fs::read(&path).unwrap();
        let second = {
            let mut record = Vec::new();
            encode(&flow(2, b"two"), &mut record);
            full as usize - record.len()
        };
        for cut in second + 1..full as usize {
            std::fs::write(&path, &whole[..cut]).unwrap();
            let mut reader = FlowReader::open(&path).unwrap();
            let first = reader.next_flow().unwrap().unwrap();
            assert_eq!(first.id, 1);
            assert!(reader.next_flow().is_none(), "cut at {cut}");
            assert!(reader.torn);
        }
        let mut writer = FlowWriter::create(&path, true).unwrap();
        writer.write(&flow(3, b"three")).unwrap();
        writer.flush().unwrap();
        let mut reader = FlowReader::open(&path).unwrap();
        let ids: Vec<_> = std::iter::from_fn(|| reader.next_flow())
            .map(|f| f.unwrap().id)
            .collect();
        assert_eq!(ids, [1, 3]);
        assert!(!reader.torn);
    }

    #[test]
    fn a_zero_filled_tail_ends_the_file_and_is_cut_before_appending() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.flows");
        let mut writer = FlowWriter::create(&path, false).unwrap();
        writer.write(&flow(1, b"one")).unwrap();
        writer.flush().unwrap();
        drop(writer);
        // What a crash can leave on some file systems: zeros past the end.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&[0; 100]);
        std::fs::write(&path, &bytes).unwrap();
        let mut reader = FlowReader::open(&path).unwrap();
        assert_eq!(reader.next_flow().unwrap().unwrap().id, 1);
        assert!(reader.next_flow().is_none());
        assert!(reader.torn);
        let mut writer = FlowWriter::create(&path, true).unwrap();
        writer.write(&flow(2, b"two")).unwrap();
        writer.flush().unwrap();
        let mut reader = FlowReader::open(&path).unwrap();
        let ids: Vec<_> = std::iter::from_fn(|| reader.next_flow())
            .map(|f| f.unwrap().id)
            .collect();
        assert_eq!(ids, [1, 2]);
    }

    #[test]
    fn a_head_length_past_the_end_allocates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.flows");
        let mut bytes = file_header().to_vec();
        // A frame claiming a 60 MiB head in a file of a few bytes.
        bytes.extend_from_slice(&(60u32 << 20).to_le_bytes());
        bytes.extend_from_slice(&[0; 12]);
        bytes.extend_from_slice(b"{}");
        std::fs::write(&path, &bytes).unwrap();
        let mut reader = FlowReader::open(&path).unwrap();
        assert!(reader.next_flow().is_none());
        assert!(reader.torn);
    }

    #[test]
    fn flow_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.flows");
        FlowWriter::create(&path, false).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn other_files_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.json");
        std::fs::write(&path, "{\"log\": {}}").unwrap();
        let err = FlowReader::open(&path).err().unwrap().to_string();
        assert!(err.contains("not a proxlet flow file"), "{err}");
        let mut future = file_header();
        future[8] = 9;
        std::fs::write(&path, future).unwrap();
        let err = FlowReader::open(&path).err().unwrap().to_string();
        assert!(err.contains("version 9"), "{err}");
    }
}
