//! Bounded CPU work: a fixed number of workers with a bounded queue in front
//! of them, for the operations a caller can make expensive on purpose (RSA
//! key generation). A request that finds the workers busy and the queue full
//! is refused at once with [`Error::Busy`], rather than piling up threads.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{Error, Result};

/// Workers and queue of one kind of work.
pub(crate) struct Limiter {
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    workers: usize,
    queue: usize,
    what: &'static str,
}

/// Leaves the queue when dropped (granted, refused or abandoned).
struct Queued<'a>(&'a AtomicUsize);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Limiter {
    /// `workers` at once (at least one), and up to `queue` callers waiting.
    pub(crate) fn new(what: &'static str, workers: usize, queue: usize) -> Self {
        let workers = workers.max(1);
        Limiter {
            permits: Arc::new(Semaphore::new(workers)),
            waiting: AtomicUsize::new(0),
            workers,
            queue,
            what,
        }
    }

    pub(crate) fn workers(&self) -> usize {
        self.workers
    }

    pub(crate) fn queue(&self) -> usize {
        self.queue
    }

    /// Workers busy now.
    pub(crate) fn busy(&self) -> usize {
        self.workers
            .saturating_sub(self.permits.available_permits())
    }

    /// Callers waiting for a worker now.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// Workers free now.
    #[cfg(test)]
    pub(crate) fn idle(&self) -> usize {
        self.permits.available_permits()
    }

    /// A worker's permit. Move it into the work itself (the closure on the
    /// blocking pool), so that it is given back when the work ends, not when
    /// a caller who stopped waiting drops its future.
    ///
    /// # Errors
    /// [`Error::Busy`] when every worker is busy and the queue is full.
    pub(crate) async fn acquire(&self) -> Result<OwnedSemaphorePermit> {
        if let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() {
            return Ok(permit);
        }
        let before = self.waiting.fetch_add(1, Ordering::AcqRel);
        let _queued = Queued(&self.waiting);
        if before >= self.queue {
            return Err(Error::Busy {
                reason: format!(
                    "all {} {} workers are busy and {} requests are queued",
                    self.workers, self.what, self.queue
                )
                .into(),
            });
        }
        Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| Error::Internal("the work queue was closed".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn workers_then_queue_then_busy_and_permits_come_back() {
        let limiter = Arc::new(Limiter::new("test", 2, 1));
        let a = limiter.acquire().await.unwrap();
        let b = limiter.acquire().await.unwrap();
        // The third waits in the queue.
        let queued = tokio::spawn({
            let limiter = Arc::clone(&limiter);
            async move { limiter.acquire().await.map(drop) }
        });
        while limiter.waiting.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        // The fourth finds the queue full.
        let err = limiter.acquire().await.unwrap_err();
        assert_eq!(err.code(), 12);
        assert_eq!(
            err.to_string(),
            "busy, retry later: all 2 test workers are busy and 1 requests are queued"
        );
        // A permit given back goes to the queued caller.
        drop(a);
        queued.await.unwrap().unwrap();
        assert_eq!(limiter.waiting.load(Ordering::Acquire), 0);
        drop(b);
        assert_eq!(limiter.permits.available_permits(), 2);
        // A waiter that gives up leaves the queue.
        let held: Vec<_> = vec![
            limiter.acquire().await.unwrap(),
            limiter.acquire().await.unwrap(),
        ];
        {
            let waiting = limiter.acquire();
            tokio::pin!(waiting);
            assert!(futures_poll(waiting.as_mut()).await.is_none());
            assert_eq!(limiter.waiting.load(Ordering::Acquire), 1);
        }
        assert_eq!(limiter.waiting.load(Ordering::Acquire), 0);
        drop(held);
    }

    async fn futures_poll<F: std::future::Future + Unpin>(mut f: F) -> Option<F::Output> {
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut f).poll(cx) {
                std::task::Poll::Ready(v) => Some(v),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }
}
