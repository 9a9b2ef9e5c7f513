//! One client connection's transport, watched: [`Watched`] records when
//! bytes last moved either way and can be cut from outside, which fails
//! (and wakes) every read and write parked on it. That is how an idle
//! session ends even while the tasks that own its halves (SPDY reader and
//! writer, WebSocket tunnel) are waiting on the peer.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

const READ: usize = 0;
const WRITE: usize = 1;

/// When the connection last carried a byte, and the switch that ends it.
pub(crate) struct Activity {
    epoch: Instant,
    /// Milliseconds after `epoch` of the last byte read or written.
    last_ms: AtomicU64,
    cut: AtomicBool,
    /// The tasks parked on a read and on a write.
    wakers: Mutex<[Option<Waker>; 2]>,
}

impl Activity {
    pub(crate) fn new() -> Arc<Activity> {
        Arc::new(Activity {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
            cut: AtomicBool::new(false),
            wakers: Mutex::new([None, None]),
        })
    }

    fn touch(&self) {
        let now = self.epoch.elapsed().as_millis();
        self.last_ms
            .store(u64::try_from(now).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(last)
    }

    /// Resolves once no byte has moved either way for `timeout`.
    pub(crate) async fn idle(&self, timeout: Duration) {
        loop {
            let idle = self.idle_for();
            if idle >= timeout {
                return;
            }
            tokio::time::sleep(timeout - idle).await;
        }
    }

    /// Ends the connection: every read and write fails from now on, and
    /// the tasks waiting on one are woken to see it.
    pub(crate) fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for waker in self.lock().iter_mut() {
            if let Some(w) = waker.take() {
                w.wake();
            }
        }
    }

    fn is_cut(&self) -> bool {
        self.cut.load(Ordering::SeqCst)
    }

    /// Registers the waker of a pending operation, then reports whether the
    /// connection was cut meanwhile (a cut after this wakes the task).
    fn park(&self, slot: usize, cx: &Context<'_>) -> bool {
        if let Some(w) = self.lock().get_mut(slot) {
            *w = Some(cx.waker().clone());
        }
        self.is_cut()
    }

    fn lock(&self) -> MutexGuard<'_, [Option<Waker>; 2]> {
        self.wakers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn cut_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "streaming connection closed by the server (idle)",
    )
}

/// A transport whose traffic is recorded in an [`Activity`].
pub(crate) struct Watched<IO> {
    io: IO,
    activity: Arc<Activity>,
}

impl<IO> Watched<IO> {
    pub(crate) fn new(io: IO, activity: Arc<Activity>) -> Watched<IO> {
        activity.touch();
        Watched { io, activity }
    }

    /// Maps the inner result: counts progress, parks on `Pending`.
    fn track<T>(
        &self,
        slot: usize,
        cx: &Context<'_>,
        poll: Poll<io::Result<T>>,
        moved: impl Fn(&T) -> bool,
    ) -> Poll<io::Result<T>> {
        match poll {
            Poll::Ready(Ok(v)) => {
                if moved(&v) {
                    self.activity.touch();
                }
                Poll::Ready(Ok(v))
            }
            Poll::Pending if self.activity.park(slot, cx) => Poll::Ready(Err(cut_error())),
            other => other,
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.activity.is_cut() {
            return Poll::Ready(Err(cut_error()));
        }
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.io).poll_read(cx, buf);
        let grew = buf.filled().len() > before;
        this.track(READ, cx, poll, |()| grew)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.activity.is_cut() {
            return Poll::Ready(Err(cut_error()));
        }
        let poll = Pin::new(&mut this.io).poll_write(cx, buf);
        this.track(WRITE, cx, poll, |n| *n > 0)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.activity.is_cut() {
            return Poll::Ready(Err(cut_error()));
        }
        let poll = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.track(WRITE, cx, poll, |n| *n > 0)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.activity.is_cut() {
            return Poll::Ready(Err(cut_error()));
        }
        let poll = Pin::new(&mut this.io).poll_flush(cx);
        this.track(WRITE, cx, poll, |()| false)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_cut_fails_a_parked_read_and_later_writes() {
        let (ours, mut theirs) = tokio::io::duplex(64);
        let activity = Activity::new();
        let mut watched = Watched::new(ours, activity.clone());
        theirs.write_all(b"hi").await.unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(watched.read(&mut buf).await.unwrap(), 2);
        // Nothing more comes: the read parks until the cut wakes it.
        let reader = tokio::spawn(async move {
            let r = watched.read(&mut buf).await;
            (r.map_err(|e| e.kind()), watched)
        });
        tokio::task::yield_now().await;
        activity.cut();
        let (read, mut watched) = tokio::time::timeout(Duration::from_secs(10), reader)
            .await
            .expect("the cut wakes the parked read")
            .unwrap();
        assert_eq!(read, Err(io::ErrorKind::TimedOut));
        let write = watched.write_all(b"x").await.map_err(|e| e.kind());
        assert_eq!(write, Err(io::ErrorKind::TimedOut));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_resolves_only_after_a_quiet_period() {
        let (ours, mut theirs) = tokio::io::duplex(64);
        let activity = Activity::new();
        let mut watched = Watched::new(ours, activity.clone());
        let timeout = Duration::from_secs(60);
        tokio::time::advance(Duration::from_secs(50)).await;
        theirs.write_all(b"x").await.unwrap();
        let mut buf = [0u8; 1];
        watched.read_exact(&mut buf).await.unwrap();
        let start = Instant::now();
        activity.idle(timeout).await;
        // Counted from the byte at 50 s, not from the start.
        assert!(
            start.elapsed() >= Duration::from_secs(59),
            "{:?}",
            start.elapsed()
        );
    }
}
