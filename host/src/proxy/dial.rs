//! Opening upstream connections, for the pooled clients and for relayed
//! tunnels alike: straight to the origin over TCP, or through a parent
//! proxy (upstream mode: absolute-form for http, CONNECT for the rest).
//! Every TCP connection proxlet opens is checked against the web UI's
//! address and carries `--upstream-mark` when set.

use std::{
    future::Future,
    io,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{
    uri::{Authority, Scheme},
    HeaderValue,
};
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::{
    client::legacy::connect::{Connected, Connection, HttpConnector},
    rt::TokioIo,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};

use super::{body::BoxError, io::Prefixed, upstream::Failure};

/// A byte stream to an upstream: TCP, or TLS to a parent proxy.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

tokio::task_local! {
    /// The address a transparent client's connection was redirected from:
    /// connections opened while its flows are served go there, whatever
    /// the name in the URL resolves to (or whether it resolves at all).
    pub(crate) static PINNED: SocketAddr;
}

/// The largest response head a parent proxy may answer CONNECT with.
const MAX_CONNECT_HEAD: usize = 16 * 1024;

/// A parent proxy (`--mode upstream:URL`, `--upstream-auth`).
pub(crate) struct Parent {
    pub scheme: Scheme,
    pub authority: Authority,
    /// `Proxy-Authorization` for every request and CONNECT sent to it.
    pub auth: Option<HeaderValue>,
}

/// Where and how upstream connections go.
#[derive(Default)]
pub(crate) struct Route {
    /// The web UI's address, which no upstream connection reaches.
    pub web: Option<std::net::SocketAddr>,
    /// `--upstream-mark`: SO_MARK on every upstream socket.
    pub mark: Option<u32>,
    /// A parent proxy every connection goes through (upstream mode).
    pub parent: Option<Parent>,
    /// Where proxlet's own sockets are listed (with a transparent listener).
    pub own: Option<Arc<OwnSockets>>,
}

/// How upstream connections are opened; cheap to clone.
#[derive(Clone)]
pub(crate) struct Dial {
    inner: Arc<Dialing>,
}

struct Dialing {
    http: HttpConnector,
    timeout: Duration,
    route: Route,
    /// TLS towards an https parent.
    tls: tokio_rustls::TlsConnector,
}

/// Why a parent proxy gave no connection: its kind and the one line the
/// client sees.
#[derive(Debug)]
pub(crate) struct ParentError {
    pub kind: Failure,
    pub message: String,
}

impl std::fmt::Display for ParentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ParentError {}

impl Dial {
    pub fn new(tls: rustls::ClientConfig, timeout: Duration, route: Route) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeout));
        Self {
            inner: Arc::new(Dialing {
                http,
                timeout,
                route,
                tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
            }),
        }
    }

    /// Whether connections go through a parent proxy.
    pub fn parent(&self) -> Option<&Parent> {
        self.inner.route.parent.as_ref()
    }

    /// A byte stream to `host:port` (or to `pinned`) for a relayed
    /// tunnel: TCP, or CONNECT through the parent proxy.
    pub async fn tunnel(
        &self,
        host: &str,
        port: u16,
        pinned: Option<SocketAddr>,
    ) -> Result<Box<dyn Io>, BoxError> {
        match &self.inner.route.parent {
            None => Ok(self.inner.tcp(host, port, pinned).await?.0),
            Some(parent) => Ok(self.inner.through(parent, host, port).await?.0),
        }
    }
}

impl Dialing {
    /// TCP to `host:port` (or to `pinned`), marked, never to the web UI;
    /// the stream and the server's address.
    async fn tcp(
        &self,
        host: &str,
        port: u16,
        pinned: Option<SocketAddr>,
    ) -> io::Result<(Box<dyn Io>, SocketAddr)> {
        let (stream, listed) = match (pinned, self.route.mark, &self.route.own) {
            (None, None, None) => {
                let uri = format!("http://{host}:{port}/");
                let uri: http::Uri = uri.parse().map_err(io::Error::other)?;
                let mut http = self.http.clone();
                let stream = tower_service::Service::call(&mut http, uri)
                    .await
                    .map_err(|e| io::Error::other(BoxError::from(e)))?
                    .into_inner();
                (stream, None)
            }
            (pinned, mark, own) => {
                let connecting = connect_marked(host, port, pinned, mark, own.as_ref());
                tokio::time::timeout(self.timeout, connecting)
                    .await
                    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??
            }
        };
        let peer = stream.peer_addr()?;
        super::refuse_web_ui(self.route.web, peer)?;
        stream.set_nodelay(true)?;
        match listed {
            Some(listed) => Ok((
                Box::new(Owned {
                    stream,
                    _listed: listed,
                }),
                peer,
            )),
            None => Ok((Box::new(stream), peer)),
        }
    }

    /// A connection to the parent proxy (TLS for an https parent), and
    /// its address.
    async fn parent(&self, parent: &Parent) -> Result<(Box<dyn Io>, SocketAddr), ParentError> {
        let name = &parent.authority;
        let failed = |kind: Failure, why: String| ParentError {
            kind,
            message: format!("parent proxy {name}: {why}"),
        };
        let port = parent.authority.port_u16().unwrap_or(8080);
        let (tcp, peer) = self
            .tcp(parent.authority.host(), port, None)
            .await
            .map_err(|e| failed(Failure::of_io(&e), describe_io(&e)))?;
        if parent.scheme != Scheme::HTTPS {
            return Ok((tcp, peer));
        }
        let host = parent
            .authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let server = rustls::pki_types::ServerName::try_from(host.to_owned())
            .map_err(|e| failed(Failure::Other, e.to_string()))?;
        let tls = self
            .tls
            .connect(server, tcp)
            .await
            .map_err(|e| failed(Failure::Tls, format!("TLS: {e}")))?;
        Ok((Box::new(tls), peer))
    }

    /// A tunnel to `host:port` through the parent proxy (CONNECT).
    async fn through(
        &self,
        parent: &Parent,
        host: &str,
        port: u16,
    ) -> Result<(Box<dyn Io>, SocketAddr), ParentError> {
        let (mut io, peer) = self.parent(parent).await?;
        let name = &parent.authority;
        let failed = |kind: Failure, why: String| ParentError {
            kind,
            message: format!("parent proxy {name}: {why}"),
        };
        // `host` comes from a URI or authority: an IPv6 one is bracketed.
        let target = format!("{host}:{port}");
        let mut head = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n").into_bytes();
        if let Some(auth) = &parent.auth {
            head.extend_from_slice(b"Proxy-Authorization: ");
            head.extend_from_slice(auth.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"\r\n");
        let exchange = async {
            io.write_all(&head).await?;
            io.flush().await?;
            let mut buf = Vec::with_capacity(1024);
            loop {
                if buf.len() >= MAX_CONNECT_HEAD {
                    return Ok(Err("answered CONNECT with a head over 16 KiB".to_owned()));
                }
                let mut chunk = [0u8; 2048];
                let n = io.read(&mut chunk).await?;
                if n == 0 {
                    return Ok(Err(format!("closed the connection on CONNECT {target}")));
                }
                buf.extend_from_slice(&chunk[..n]);
                let mut fields = [httparse::EMPTY_HEADER; 64];
                let mut response = httparse::Response::new(&mut fields);
                match response.parse(&buf) {
                    Ok(httparse::Status::Complete(end)) => {
                        return Ok(match response.code {
                            Some(200..=299) => Ok(Bytes::copy_from_slice(&buf[end..])),
                            Some(407) => Err(format!(
                                "requires authentication for CONNECT {target} (407; see --upstream-auth)"
                            )),
                            Some(code) => Err(format!("answered {code} to CONNECT {target}")),
                            None => Err("sent no status".to_owned()),
                        })
                    }
                    Ok(httparse::Status::Partial) => {}
                    Err(e) => return Ok(Err(format!("sent a bad response to CONNECT: {e}"))),
                }
            }
        };
        let answered: io::Result<Result<Bytes, String>> =
            match tokio::time::timeout(self.timeout, exchange).await {
                Ok(result) => result,
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no answer to CONNECT in time",
                )),
            };
        match answered {
            Ok(Ok(rest)) if rest.is_empty() => Ok((io, peer)),
            Ok(Ok(rest)) => Ok((Box::new(Prefixed::new(rest, io)), peer)),
            Ok(Err(why)) => Err(failed(Failure::Other, why)),
            Err(e) => Err(failed(Failure::of_io(&e), describe_io(&e))),
        }
    }
}

/// An I/O failure in the words of the upstream errors (`refused`, …).
fn describe_io(error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        io::ErrorKind::TimedOut => "timed out".to_owned(),
        _ => error.to_string(),
    }
}

/// TCP to `pinned`, or to `host:port` resolved, each socket carrying
/// `mark` (SO_MARK) when given; the addresses are tried in order. With
/// `own`, each socket is bound first and its local address listed there
/// before it connects (a redirect back into proxlet is then recognised
/// however soon it is accepted).
async fn connect_marked(
    host: &str,
    port: u16,
    pinned: Option<SocketAddr>,
    mark: Option<u32>,
    own: Option<&Arc<OwnSockets>>,
) -> io::Result<(TcpStream, Option<Listed>)> {
    let addrs: Vec<SocketAddr> = match pinned {
        Some(addr) => vec![addr],
        None => {
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            match bare.parse::<IpAddr>() {
                Ok(ip) => vec![SocketAddr::new(ip, port)],
                Err(_) => tokio::net::lookup_host((bare, port))
                    .await
                    .map_err(|e| io::Error::other(format!("dns error: {e}")))?
                    .collect(),
            }
        }
    };
    let mut last = io::Error::other(format!("dns error: no address for {host}"));
    for addr in addrs {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        if let Some(mark) = mark {
            socket.set_mark(mark)?;
        }
        socket.set_nonblocking(true)?;
        let socket = tokio::net::TcpSocket::from_std_stream(socket.into());
        let listed = match own {
            Some(own) => {
                let any = match addr {
                    SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
                    SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
                };
                socket.bind(any)?;
                Some(own.list(socket.local_addr()?))
            }
            None => None,
        };
        match socket.connect(addr).await {
            Ok(stream) => return Ok((stream, listed)),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The address a connection proxlet accepted was for before the kernel
/// redirected it (Linux `SO_ORIGINAL_DST`, IPv4 and IPv6).
pub(crate) fn original_destination(stream: &TcpStream) -> io::Result<SocketAddr> {
    let socket = socket2::SockRef::from(stream);
    let original = match stream.local_addr()? {
        SocketAddr::V4(_) => socket.original_dst_v4()?,
        SocketAddr::V6(_) => socket.original_dst_v6()?,
    };
    original
        .as_socket()
        .ok_or_else(|| io::Error::other("SO_ORIGINAL_DST gave no IP address"))
}

/// The local ports of proxlet's open upstream sockets (kept only when a
/// transparent listener could see them come back). Sockets are bound to
/// the unspecified address before they connect, so the port is what is
/// known when it must be listed.
#[derive(Default)]
pub(crate) struct OwnSockets {
    open: std::sync::Mutex<std::collections::HashSet<u16>>,
}

impl OwnSockets {
    /// Whether a connection from `addr` is one of proxlet's upstream
    /// sockets: its port is listed and its address is this host's.
    pub fn contains(&self, addr: SocketAddr) -> bool {
        let listed = self
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&addr.port());
        // Binding succeeds only to an address of this host.
        listed && std::net::UdpSocket::bind((addr.ip(), 0)).is_ok()
    }

    /// Lists `local`'s port until the returned guard is dropped.
    fn list(self: &Arc<Self>, local: SocketAddr) -> Listed {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(local.port());
        Listed {
            port: local.port(),
            own: self.clone(),
        }
    }
}

/// A local address listed in [`OwnSockets`] while this lives.
struct Listed {
    port: u16,
    own: Arc<OwnSockets>,
}

impl Drop for Listed {
    fn drop(&mut self) {
        let mut open = self.own.open.lock().unwrap_or_else(|e| e.into_inner());
        open.remove(&self.port);
    }
}

/// An upstream socket whose local address is listed while it is open.
struct Owned {
    stream: TcpStream,
    _listed: Listed,
}

impl AsyncRead for Owned {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Owned {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
}

/// The server's address, as a connection extra for flow records.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServerAddr(pub SocketAddr);

/// An upstream connection as hyper-util's client sees it.
pub(crate) struct Conn {
    io: TokioIo<Box<dyn Io>>,
    /// Requests go to a parent proxy in absolute-form.
    proxied: bool,
    peer: Option<SocketAddr>,
}

impl tower_service::Service<http::Uri> for Dial {
    type Response = Conn;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let dial = self.inner.clone();
        let pinned = PINNED.try_with(|addr| *addr).ok();
        Box::pin(async move {
            let host = uri.host().ok_or("the URL has no host")?;
            let port = super::headers::port_of(&uri);
            let Some(parent) = &dial.route.parent else {
                let (tcp, peer) = dial.tcp(host, port, pinned).await?;
                return Ok(Conn::new(tcp, false, Some(peer)));
            };
            // http goes to the parent as is, in absolute-form; https (TLS
            // to the origin, ours) through a tunnel.
            let (io, peer) = match uri.scheme() == Some(&Scheme::HTTPS) {
                true => dial.through(parent, host, port).await?,
                false => dial.parent(parent).await?,
            };
            Ok(Conn::new(
                io,
                uri.scheme() != Some(&Scheme::HTTPS),
                Some(peer),
            ))
        })
    }
}

impl Conn {
    fn new(io: Box<dyn Io>, proxied: bool, peer: Option<SocketAddr>) -> Self {
        Self {
            io: TokioIo::new(io),
            proxied,
            peer,
        }
    }
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        let connected = Connected::new().proxy(self.proxied);
        match self.peer {
            Some(peer) => connected.extra(ServerAddr(peer)),
            None => connected,
        }
    }
}

impl Read for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl Write for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}
