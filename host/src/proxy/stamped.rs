//! Connect timings for flow records: a connector wrapper that notes when a
//! connection was begun and established, carried to every response on that
//! connection as a hyper-util connection extra. Wrapped around the TCP
//! connector it times TCP; around the TLS connector, the TLS handshake.

use std::{
    future::Future,
    marker::PhantomData,
    pin::Pin,
    task::{Context, Poll},
};

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use tower_service::Service;

/// When a connection was begun and when it was ready, in microseconds since
/// the epoch; `K` says which layer ([`Tcp`] or [`Tls`]).
#[derive(Debug)]
pub struct Stamp<K> {
    pub begun: i64,
    pub ready: i64,
    kind: PhantomData<fn() -> K>,
}

impl<K> Clone for Stamp<K> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K> Copy for Stamp<K> {}

/// The TCP layer.
#[derive(Debug)]
pub enum Tcp {}
/// The TLS layer (for plain HTTP, the same moment as TCP).
#[derive(Debug)]
pub enum Tls {}

/// A connector whose connections carry a [`Stamp<K>`].
#[derive(Debug)]
pub struct Stamped<C, K> {
    inner: C,
    kind: PhantomData<fn() -> K>,
}

impl<C: Clone, K> Clone for Stamped<C, K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            kind: PhantomData,
        }
    }
}

impl<C, K> Stamped<C, K> {
    pub fn new(inner: C) -> Self {
        Self {
            inner,
            kind: PhantomData,
        }
    }
}

impl<C, K> Service<http::Uri> for Stamped<C, K>
where
    C: Service<http::Uri>,
    C::Future: Send + 'static,
    K: 'static,
{
    type Response = StampedIo<C::Response, K>;
    type Error = C::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, C::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), C::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let begun = crate::flows::now_micros();
        let connecting = self.inner.call(uri);
        Box::pin(async move {
            let io = connecting.await?;
            let ready = crate::flows::now_micros();
            // The TLS layer wraps the TCP one: its stamp spans the connect.
            if std::any::TypeId::of::<K>() == std::any::TypeId::of::<Tls>() {
                if let Some(metrics) = crate::metrics::get() {
                    let took = u64::try_from(ready - begun).unwrap_or(0);
                    metrics.connected(std::time::Duration::from_micros(took));
                }
            }
            Ok(StampedIo {
                io,
                stamp: Stamp {
                    begun,
                    ready,
                    kind: PhantomData,
                },
            })
        })
    }
}

/// A connection and its stamp.
pub struct StampedIo<T, K> {
    io: T,
    stamp: Stamp<K>,
}

impl<T: Connection, K: 'static> Connection for StampedIo<T, K> {
    fn connected(&self) -> Connected {
        self.io.connected().extra(self.stamp)
    }
}

impl<T: Read + Unpin, K> Read for StampedIo<T, K> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: Write + Unpin, K> Write for StampedIo<T, K> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}
