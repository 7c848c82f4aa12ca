//! Which metrics connection to close when every slot is taken.
//!
//! Any local user can open connections to the metrics port and hold them
//! silent. Closing simply the oldest connection lets an attacker who
//! reconnects faster than the daemon reads evict a scraper before its
//! request is read. So every connection's stream reports what the daemon
//! last saw on it ([`Watched`]), and [`Slots::admit`] closes the oldest
//! connection that was read and found silent; only when none is silent
//! does the oldest go, whatever it is doing.

use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

/// Not read yet: its request may be waiting in the socket.
const UNREAD: u8 = 0;
/// Read and found with nothing to say.
const SILENT: u8 = 1;
/// Bytes arrived and have not all been answered.
const TALKING: u8 = 2;

/// One open connection.
struct Slot {
    /// Held only to be dropped: that closes the connection.
    _close: oneshot::Sender<()>,
    seen: Arc<AtomicU8>,
}

/// Open connections by age, at most `limit` of them.
pub struct Slots {
    limit: usize,
    next: u64,
    by_age: BTreeMap<u64, Slot>,
}

/// What [`Slots::admit`] hands the new connection's task.
pub struct Admitted {
    /// The key to [`Slots::release`] when the connection ends.
    pub id: u64,
    /// Fires when the connection is closed for a newer one.
    pub evicted: oneshot::Receiver<()>,
    /// What the daemon last saw on the stream; give it to [`Watched::new`].
    pub seen: Arc<AtomicU8>,
}

impl Slots {
    /// Room for `limit` connections (at least one).
    pub fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            next: 0,
            by_age: BTreeMap::new(),
        }
    }

    /// Registers a new connection, closing another if none is free.
    pub fn admit(&mut self) -> Admitted {
        while self.by_age.len() >= self.limit {
            let silent = self
                .by_age
                .iter()
                .find(|(_, s)| s.seen.load(Ordering::Relaxed) == SILENT)
                .map(|(id, _)| *id);
            let victim = silent.or_else(|| self.by_age.keys().next().copied());
            match victim {
                Some(id) => drop(self.by_age.remove(&id)),
                None => break,
            }
        }
        let (close, evicted) = oneshot::channel();
        let seen = Arc::new(AtomicU8::new(UNREAD));
        let id = self.next;
        self.next += 1;
        self.by_age.insert(
            id,
            Slot {
                _close: close,
                seen: seen.clone(),
            },
        );
        Admitted { id, evicted, seen }
    }

    /// Forgets a connection that has ended.
    pub fn release(&mut self, id: u64) {
        self.by_age.remove(&id);
    }

    /// Connections open now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_age.len()
    }
}

/// A stream that records, for [`Slots::admit`], whether its peer is silent.
pub struct Watched<S> {
    inner: S,
    seen: Arc<AtomicU8>,
}

impl<S> Watched<S> {
    /// Wraps `inner`, reporting to `seen` (from [`Admitted`]).
    pub fn new(inner: S, seen: Arc<AtomicU8>) -> Self {
        Self { inner, seen }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let seen = match &polled {
            Poll::Ready(Ok(())) if buf.filled().len() > before => TALKING,
            Poll::Ready(_) => SILENT,
            // A peer in the middle of a request keeps the daemon's attention
            // only while its bytes keep coming.
            Poll::Pending => SILENT,
        };
        self.seen.store(seen, Ordering::Relaxed);
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_table_closes_the_oldest_silent_connection_first() {
        let mut slots = Slots::new(3);
        let mut a = slots.admit();
        let mut b = slots.admit();
        let mut c = slots.admit();
        // `a` is talking, `b` was read and is silent, `c` is not read yet.
        a.seen.store(TALKING, Ordering::Relaxed);
        b.seen.store(SILENT, Ordering::Relaxed);
        let _d = slots.admit();
        assert_eq!(
            b.evicted.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        );
        assert_eq!(
            a.evicted.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        );
        assert_eq!(
            c.evicted.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        );
        assert_eq!(slots.len(), 3);
    }

    #[test]
    fn with_no_silent_connection_the_oldest_goes() {
        let mut slots = Slots::new(2);
        let mut a = slots.admit();
        let b = slots.admit();
        a.seen.store(TALKING, Ordering::Relaxed);
        b.seen.store(TALKING, Ordering::Relaxed);
        let _c = slots.admit();
        assert_eq!(
            a.evicted.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        );
        slots.release(b.id);
        assert_eq!(slots.len(), 1);
    }

    #[tokio::test]
    async fn the_stream_reports_silence_and_talk() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (client, server) = tokio::io::duplex(64);
        let seen = Arc::new(AtomicU8::new(UNREAD));
        let mut watched = Watched::new(server, seen.clone());
        let mut buf = [0u8; 8];
        let read =
            tokio::time::timeout(std::time::Duration::from_millis(20), watched.read(&mut buf))
                .await;
        assert!(read.is_err(), "nothing was sent");
        assert_eq!(seen.load(Ordering::Relaxed), SILENT);
        let mut client = client;
        client.write_all(b"GET").await.expect("write");
        let n = watched.read(&mut buf).await.expect("read");
        assert_eq!(&buf[..n], b"GET");
        assert_eq!(seen.load(Ordering::Relaxed), TALKING);
    }
}
