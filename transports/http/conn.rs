//! Connections: a cap on how many are served at once, and an idle timeout
//! that closes a connection on which no byte has moved in either direction
//! for a while (HTTP/2 connections included, which hyper's header timeout
//! does not cover).

use std::future::{ready, Future, Ready};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// Accepts a connection only while fewer than the cap are open, and wraps it
/// in [`Guarded`]. Used directly for plain HTTP, and under the TLS acceptor.
#[derive(Clone)]
pub(crate) struct Limit {
    slots: Arc<Semaphore>,
    idle: Duration,
    refused: Arc<AtomicU64>,
}

impl Limit {
    pub(crate) fn new(max_connections: usize, idle: Duration) -> Self {
        Limit {
            slots: Arc::new(Semaphore::new(max_connections.max(1))),
            idle,
            refused: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl<I, S> axum_server::accept::Accept<I, S> for Limit {
    type Stream = Guarded<I>;
    type Service = S;
    type Future = Ready<io::Result<(Guarded<I>, S)>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() else {
            // Dropping the stream closes it at once. One log line per 1024
            // refusals at most: a flood must not flood the log too.
            let refused = self.refused.fetch_add(1, Ordering::Relaxed);
            if refused.is_multiple_of(1024) {
                tracing::warn!(
                    target: "keyserver::server",
                    refused = refused + 1,
                    "connection limit reached: closing new connections"
                );
            }
            return ready(Err(io::Error::other("connection limit reached")));
        };
        ready(Ok((Guarded::new(stream, self.idle, slot), service)))
    }
}

/// A connection holding one of the cap's slots until it is dropped, and
/// failing with `TimedOut` once no byte has moved for the idle time.
pub(crate) struct Guarded<I> {
    inner: I,
    idle: Duration,
    last: Instant,
    timer: Pin<Box<Sleep>>,
    _slot: OwnedSemaphorePermit,
}

impl<I> Guarded<I> {
    fn new(inner: I, idle: Duration, slot: OwnedSemaphorePermit) -> Self {
        let now = Instant::now();
        Guarded {
            inner,
            idle,
            last: now,
            timer: Box::pin(tokio::time::sleep_until(now + idle)),
            _slot: slot,
        }
    }

    /// Whether the connection has been idle too long; re-arms the timer
    /// for the remaining time otherwise (activity only records a time, so
    /// the hot path never touches the timer wheel).
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            let deadline = self.last + self.idle;
            if Instant::now() >= deadline {
                return true;
            }
            self.timer.as_mut().reset(deadline);
        }
    }
}

fn idle_error() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "connection idle too long")
}

impl<I: AsyncRead + Unpin> AsyncRead for Guarded<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    self.last = Instant::now();
                }
                Poll::Ready(result)
            }
            Poll::Pending if self.poll_idle(cx) => Poll::Ready(Err(idle_error())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Guarded<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.last = Instant::now();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Pending if self.poll_idle(cx) => Poll::Ready(Err(idle_error())),
            other => other,
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.last = Instant::now();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Pending if self.poll_idle(cx) => Poll::Ready(Err(idle_error())),
            other => other,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Raises the soft limit on open descriptors to the hard limit, and returns
/// how many connections the result leaves room for (descriptors for files,
/// the listener and the runtime are kept aside).
#[allow(unsafe_code)]
pub(crate) fn connection_room() -> usize {
    const RESERVED: u64 = 64;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    let soft = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return usize::MAX;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
        limit.rlim_cur
    };
    if soft == libc::RLIM_INFINITY {
        return usize::MAX;
    }
    usize::try_from(soft.saturating_sub(RESERVED).max(1)).unwrap_or(usize::MAX)
}
