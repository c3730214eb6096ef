//! Files plugins name as bodies: serving one (Content-Length, HEAD, single
//! byte ranges) and teeing a streamed response into one atomically (a temp
//! file beside it, renamed only when the whole body arrived).

use std::{
    ffi::OsString,
    io::Write,
    os::fd::OwnedFd,
    path::{Path, PathBuf},
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use super::{
    body::{boxed, text_response, Body, BoxError},
    grant::{self, GrantError, GrantedPath},
};
use crate::flow::FillLease;

const CHUNK: usize = 256 * 1024;
/// Files up to this size are read inline in one go.
const INLINE_READ: u64 = 256 * 1024;

/// A type for well-known extensions, for files served without one.
pub fn content_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "xml" => "application/xml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "wasm" => "application/wasm",
        "gz" | "tgz" => "application/gzip",
        "zip" | "whl" | "jar" => "application/zip",
        "deb" => "application/vnd.debian.binary-package",
        _ => "application/octet-stream",
    }
}

/// Parses a single `bytes=` range against a length (RFC 9110 §14.1.2).
/// `Ok(None)` means "serve it all" (no or unsupported range); `Err` is 416.
pub fn byte_range(value: &str, len: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None); // multiple ranges: serve the whole file
    }
    let (start, end) = spec.split_once('-').ok_or(())?;
    let (start, end) = match (start.trim(), end.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().map_err(|_| ())?;
            if n == 0 {
                return Err(());
            }
            (len.saturating_sub(n), len.checked_sub(1).ok_or(())?)
        }
        (start, "") => (
            start.parse().map_err(|_| ())?,
            len.checked_sub(1).ok_or(())?,
        ),
        (start, end) => {
            let (s, e): (u64, u64) = (start.parse().map_err(|_| ())?, end.parse().map_err(|_| ())?);
            (s, e.min(len.saturating_sub(1)))
        }
    };
    if start > end || start >= len {
        return Err(());
    }
    Ok(Some((start, end)))
}

/// Serves the file a plugin named, opened beneath its grant, with `status`
/// and `headers` from the plugin, honouring HEAD and a single Range. What is
/// served is the file that was opened: swapping it afterwards changes nothing.
pub async fn serve_file(
    granted: &GrantedPath,
    method: &Method,
    request_headers: &HeaderMap,
    status: StatusCode,
    mut headers: HeaderMap,
) -> Result<Response<Body>, GrantError> {
    let path = &granted.display();
    let (file, meta) = open_file(granted)?;
    let io_err = |e: std::io::Error| GrantError::Io(path.clone(), e);
    let len = meta.len();
    file_headers(&mut headers, path);
    let (status, start, count) = match framing(len, request_headers, status, &mut headers) {
        Ok(framed) => framed,
        Err(refusal) => return Ok(refusal.response()),
    };
    let body = if *method == Method::HEAD {
        boxed(http_body_util::Empty::new())
    } else if count <= INLINE_READ {
        // Small files (most cache hits): one read, one frame.
        let mut buf = vec![0; count as usize];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut buf, start).map_err(io_err)?;
        boxed(http_body_util::Full::new(Bytes::from(buf)))
    } else {
        boxed(FileBody::new(file, start, count))
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(response)
}

/// Opens a file to serve, beneath its grant: a regular file and its
/// metadata. Counts as an access for the cache size limit.
fn open_file(granted: &GrantedPath) -> Result<(std::fs::File, std::fs::Metadata), GrantError> {
    // open + fstat of a page-cached inode take microseconds: done inline,
    // as nginx does, rather than through the blocking pool.
    let file = granted.open_read()?;
    let io_err = |e: std::io::Error| GrantError::Io(granted.display(), e);
    let meta = file.metadata().map_err(io_err)?;
    if !meta.is_file() {
        let e = std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file");
        return Err(io_err(e));
    }
    crate::cache_limit::served(granted);
    Ok((file, meta))
}

/// The whole of a file to serve, if it is at most `max` bytes, with the
/// metadata of what was read (the file opened, not whatever the path names
/// by the time it is checked again).
pub fn read_whole(
    granted: &GrantedPath,
    max: u64,
) -> Result<Option<(Bytes, std::fs::Metadata)>, GrantError> {
    let (file, meta) = open_file(granted)?;
    if meta.len() > max {
        return Ok(None);
    }
    let mut buf = vec![0; meta.len() as usize];
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut buf, 0)
        .map_err(|e| GrantError::Io(granted.display(), e))?;
    Ok(Some((Bytes::from(buf), meta)))
}

/// The fields every served file carries: its type (from the extension when
/// the plugin named none) and `Accept-Ranges`.
pub fn file_headers(headers: &mut HeaderMap, path: &Path) {
    if !headers.contains_key(header::CONTENT_TYPE) {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(content_type(path)),
        );
    }
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
}

/// Serves `body`, a file's contents held in memory, as [`serve_file`]
/// serves the file (`headers` already carry [`file_headers`]).
pub fn serve_bytes(
    body: &Bytes,
    method: &Method,
    request_headers: &HeaderMap,
    status: StatusCode,
    mut headers: HeaderMap,
) -> Response<Body> {
    let (status, start, count) =
        match framing(body.len() as u64, request_headers, status, &mut headers) {
            Ok(framed) => framed,
            Err(refusal) => return refusal.response(),
        };
    let body = if *method == Method::HEAD {
        boxed(http_body_util::Empty::new())
    } else {
        let (start, count) = (start as usize, count as usize);
        boxed(http_body_util::Full::new(body.slice(start..start + count)))
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// Frames a file of `len` bytes for a request: the status, where the bytes
/// sent start and how many (a single Range of a 200 gets 206 and
/// Content-Range), Content-Length set in `headers`; or why it gets 416.
fn framing(
    len: u64,
    request_headers: &HeaderMap,
    status: StatusCode,
    headers: &mut HeaderMap,
) -> Result<(StatusCode, u64, u64), Unsatisfiable> {
    let range = match request_headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
    {
        Some(value) if status == StatusCode::OK => byte_range(value, len),
        _ => Ok(None),
    };
    let (status, start, count) = match range {
        Ok(None) => (status, 0, len),
        Ok(Some((start, end))) => {
            let value = format!("bytes {start}-{end}/{len}");
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(header::CONTENT_RANGE, value);
            }
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        Err(()) => return Err(Unsatisfiable(len)),
    };
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    Ok((status, start, count))
}

/// A Range request a file of this length cannot satisfy.
struct Unsatisfiable(u64);

impl Unsatisfiable {
    fn response(self) -> Response<Body> {
        let mut response = text_response(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "proxlet: range not satisfiable",
        );
        if let Ok(value) = HeaderValue::from_str(&format!("bytes */{}", self.0)) {
            response.headers_mut().insert(header::CONTENT_RANGE, value);
        }
        response
    }
}

/// A file streamed in 256 KiB reads with a known length. A read is tried
/// on the worker first with `RWF_NOWAIT`, which the kernel answers only from
/// the page cache (where a cache hit's file almost always is) and refuses
/// rather than wait for the disk; a refused read goes to tokio's blocking
/// pool. No buffer is zeroed before it is read into.
struct FileBody {
    file: std::sync::Arc<std::fs::File>,
    offset: u64,
    remaining: u64,
    /// A read on the blocking pool, when the page cache did not have it.
    pending: Option<tokio::task::JoinHandle<std::io::Result<Bytes>>>,
}

impl FileBody {
    fn new(file: std::fs::File, offset: u64, remaining: u64) -> Self {
        Self {
            file: std::sync::Arc::new(file),
            offset,
            remaining,
            pending: None,
        }
    }

    /// Up to `want` bytes at `offset`, or `WouldBlock` when they are not
    /// all in the page cache.
    fn read_cached(&self, want: usize) -> std::io::Result<Bytes> {
        read_at(&self.file, self.offset, want, libc::RWF_NOWAIT)
    }
}

/// Reads up to `want` bytes of `file` at `offset` with `preadv2` `flags`,
/// into a buffer that is not zeroed first.
fn read_at(file: &std::fs::File, offset: u64, want: usize, flags: i32) -> std::io::Result<Bytes> {
    use std::os::fd::AsRawFd;
    let mut buf: Vec<u8> = Vec::with_capacity(want);
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: want,
    };
    let offset = libc::off_t::try_from(offset)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "offset too large"))?;
    // SAFETY: the iovec spans the vector's spare capacity, which the kernel
    // writes at most `want` bytes into; `set_len` then covers only what it
    // reported written.
    let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, offset, flags) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    unsafe { buf.set_len(n as usize) };
    Ok(Bytes::from(buf))
}

fn shrank() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "file shrank while being served",
    )
}

impl HttpBody for FileBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let want = CHUNK.min(self.remaining as usize);
        let read = match self.pending.as_mut() {
            Some(pending) => match std::future::Future::poll(Pin::new(pending), cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(joined) => {
                    self.pending = None;
                    joined.unwrap_or_else(|e| Err(std::io::Error::other(e)))
                }
            },
            None => match self.read_cached(want) {
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.raw_os_error() == Some(libc::EOPNOTSUPP) =>
                {
                    let (file, offset) = (self.file.clone(), self.offset);
                    self.pending = Some(tokio::task::spawn_blocking(move || {
                        read_at(&file, offset, want, 0)
                    }));
                    return self.poll_frame(cx);
                }
                read => read,
            },
        };
        match read {
            Err(e) => Poll::Ready(Some(Err(e))),
            Ok(chunk) if chunk.is_empty() => Poll::Ready(Some(Err(shrank()))),
            Ok(chunk) => {
                self.offset += chunk.len() as u64;
                self.remaining -= chunk.len() as u64;
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// Tees a body into a file beneath a plugin's grant: written to a temp file
/// in the same directory and renamed over the destination only after the
/// last byte (and, when the length was announced, only if it matches).
/// Anything else removes the temp file.
pub struct Tee<B> {
    inner: B,
    file: Option<std::fs::File>,
    /// The destination's directory, opened beneath the grant.
    dir: OwnedFd,
    temp: OsString,
    name: OsString,
    dest: PathBuf,
    written: u64,
    expected: Option<u64>,
    /// Written after the body was stored, only then.
    sidecar: Option<(GrantedPath, Vec<u8>)>,
    /// Came from a request with credentials: files are 0600.
    private: bool,
    /// `fill` leases of the flow: released when the file is complete or
    /// abandoned, and told of every byte stored meanwhile.
    leases: Vec<FillLease>,
    /// Told when the file is in place, if its dir has a size limit.
    size_limit: Option<crate::cache_limit::Storing>,
    /// Called once the body and its sidecar are in place (the shared
    /// cache store's upload), never for an abandoned or failed store.
    on_stored: Option<Box<dyn FnOnce() + Send>>,
}

impl<B> Tee<B> {
    /// Starts a tee; `Err` means the body streams untouched.
    pub fn new(
        inner: B,
        dest: &GrantedPath,
        expected: Option<u64>,
        sidecar: Option<(GrantedPath, Vec<u8>)>,
        private: bool,
        leases: Vec<FillLease>,
    ) -> Result<Self, (B, GrantError)> {
        let opened = dest.create_parent().and_then(|(dir, name)| {
            let temp = grant::temp_name(&name);
            match grant::create_new(&dir, &temp, private) {
                Ok(file) => Ok((dir, name, temp, file)),
                Err(e) => Err(GrantError::Io(dest.display(), e.into())),
            }
        });
        match opened {
            Ok((dir, name, temp, file)) => Ok(Self {
                leases: leases.into_iter().inspect(FillLease::storing).collect(),
                size_limit: crate::cache_limit::storing(
                    dest,
                    sidecar
                        .as_ref()
                        .map(|(path, contents)| (path, contents.len())),
                ),
                inner,
                file: Some(file),
                dir,
                temp,
                name,
                dest: dest.display(),
                written: 0,
                expected,
                sidecar,
                private,
                on_stored: None,
            }),
            Err(e) => Err((inner, e)),
        }
    }

    /// Runs `hook` once the file and its sidecar are both in place.
    pub fn on_stored(mut self, hook: Option<Box<dyn FnOnce() + Send>>) -> Self {
        self.on_stored = hook;
        self
    }

    fn remove_temp(&self) {
        let _ = rustix::fs::unlinkat(&self.dir, &self.temp, rustix::fs::AtFlags::empty());
    }

    fn abandon(&mut self, why: &str) {
        if self.file.take().is_some() {
            self.remove_temp();
            tracing::debug!("not stored {}: {why}", self.dest.display());
        }
        self.leases.clear();
    }

    fn complete(&mut self) {
        let Some(file) = self.file.take() else { return };
        drop(file);
        // Waiters may go once the file is in place (or known not to be).
        let _leases = std::mem::take(&mut self.leases);
        if self.expected.is_some_and(|n| n != self.written) {
            self.remove_temp();
            tracing::warn!("not stored {}: body ended early", self.dest.display());
            return;
        }
        if let Err(e) = rustix::fs::renameat(&self.dir, &self.temp, &self.dir, &self.name) {
            self.remove_temp();
            tracing::error!("cannot store {}: {e}", self.dest.display());
            return;
        }
        if let Some((path, contents)) = self.sidecar.take() {
            if let Err(e) = path.write_atomically(&contents, self.private) {
                tracing::warn!("cannot write sidecar: {e}");
                return;
            }
        }
        if let Some(size_limit) = self.size_limit.take() {
            size_limit.done(self.written);
        }
        if let Some(hook) = self.on_stored.take() {
            hook();
        }
    }
}

/// Writes `contents` to a fresh temp file (created with `mode`, whatever
/// the umask allows) beside `path`, then renames it over `path`: a reader
/// sees the whole file or none. For proxlet's own files (not a plugin's:
/// see `GrantedPath`).
pub fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let temp = dir.join(grant::temp_name(path.file_name().unwrap_or_default()));
    let write = || {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)?;
        file.write_all(contents)?;
        std::fs::rename(&temp, path)
    };
    write().inspect_err(|_| {
        let _ = std::fs::remove_file(&temp);
    })
}

impl<B> HttpBody for Tee<B>
where
    B: HttpBody<Data = Bytes, Error = BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(file)) = (frame.data_ref(), self.file.as_mut()) {
                    // Page-cache writes of one frame: microseconds, and they
                    // keep the client's backpressure on the upstream.
                    if let Err(e) = file.write_all(data) {
                        tracing::error!(
                            "cannot store {}: {e} (serving without storing)",
                            self.dest.display()
                        );
                        self.abandon("write failed");
                    } else {
                        self.written += data.len() as u64;
                        for lease in &self.leases {
                            lease.stored(data.len() as u64);
                        }
                    }
                }
                // The file is put in place before its last bytes go on to
                // the client: a client that asks again as soon as it has
                // them (pip, back-to-back) finds it. An upstream's body may
                // report its end only on the next poll (HTTP/2's END_STREAM
                // in a frame of its own); the announced length says sooner.
                if self.inner.is_end_stream() || self.expected == Some(self.written) {
                    self.complete();
                }
            }
            Poll::Ready(Some(Err(_))) => self.abandon("upstream body failed"),
            Poll::Ready(None) => self.complete(),
            Poll::Pending => {}
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

impl<B> Drop for Tee<B> {
    fn drop(&mut self) {
        self.abandon("the flow ended before the body did");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_ranges_follow_rfc_9110() {
        assert_eq!(byte_range("bytes=0-9", 100), Ok(Some((0, 9))));
        assert_eq!(byte_range("bytes=90-", 100), Ok(Some((90, 99))));
        assert_eq!(byte_range("bytes=-10", 100), Ok(Some((90, 99))));
        assert_eq!(byte_range("bytes=50-500", 100), Ok(Some((50, 99))));
        assert_eq!(byte_range("bytes=100-", 100), Err(()));
        assert_eq!(byte_range("bytes=9-3", 100), Err(()));
        assert_eq!(byte_range("bytes=0-1,5-6", 100), Ok(None));
        assert_eq!(byte_range("items=0-1", 100), Ok(None));
    }
}
