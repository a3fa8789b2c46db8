//! Connections: a cap on how many are served at once, and on how many one
//! peer address holds, and an idle timeout that closes a connection on
//! which no byte has moved in either direction for a while (HTTP/2
//! connections included, which hyper's header timeout does not cover).
//!
//! At the cap, a new connection takes the place of another, chosen in this
//! order: a connection whose requests all come from callers that did not
//! authenticate (no credentials, credentials of nobody, no verified client
//! certificate) and are still receiving their bodies, the one whose last
//! byte came longest ago first; then the connection quiet longest with no
//! request in flight (unless a request starts arriving on it first). A
//! request of a caller that authenticated, or one past its body (being
//! answered), is never cut off. Only when no connection qualifies is the new one closed at
//! once: sockets that trickle bodies cannot lock everyone else out.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// How long a new connection waits for the slot of one it evicted.
const EVICT_WAIT: Duration = Duration::from_secs(2);

/// What the listener knows of one connection. Shared by the stream wrapper
/// (bytes moved) and the request middleware (requests in flight).
pub struct ConnState {
    /// Milliseconds since the listener's epoch of the last byte moved, and
    /// of the last byte read.
    last: AtomicU64,
    last_read: AtomicU64,
    in_flight: AtomicUsize,
    /// Requests in flight from callers that did not authenticate, still
    /// receiving their bodies.
    receiving_unauthenticated: AtomicUsize,
    /// Asked to close once idle; asked to close while receiving bodies
    /// (of callers that did not authenticate).
    evict: AtomicBool,
    evict_receiving: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl ConnState {
    /// Counts a request in flight on this connection until the guard drops.
    pub fn request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(Arc::clone(self))
    }

    /// Counts a request of a caller that did not authenticate as
    /// receiving its body until the guard drops (with the body).
    pub fn receiving_unauthenticated(self: &Arc<Self>) -> Receiving {
        self.receiving_unauthenticated
            .fetch_add(1, Ordering::AcqRel);
        Receiving(Arc::clone(self))
    }

    /// Whether every request in flight comes from a caller that did not
    /// authenticate and is still receiving its body.
    fn unauthenticated_receiving(&self) -> bool {
        let in_flight = self.in_flight.load(Ordering::Acquire);
        in_flight > 0 && self.receiving_unauthenticated.load(Ordering::Acquire) >= in_flight
    }

    fn wake(&self) {
        if let Some(waker) = self
            .waker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            waker.wake();
        }
    }
}

/// A request in flight (see [`ConnState::request`]).
pub struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A request receiving its body (see
/// [`ConnState::receiving_unauthenticated`]).
pub struct Receiving(Arc<ConnState>);

impl Drop for Receiving {
    fn drop(&mut self) {
        self.0
            .receiving_unauthenticated
            .fetch_sub(1, Ordering::AcqRel);
    }
}

/// The address a connection comes from.
pub trait PeerIp {
    /// The peer's IP address, if the stream knows it.
    fn peer_ip(&self) -> Option<IpAddr>;
}

impl PeerIp for tokio::net::TcpStream {
    fn peer_ip(&self) -> Option<IpAddr> {
        self.peer_addr()
            .ok()
            .map(|a| super::peer::address_group(a.ip()))
    }
}

/// Connections open per peer address.
type PeerCounts = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// A connection's place in its peer's count, given back when it closes.
struct PeerSlot {
    peers: PeerCounts,
    ip: IpAddr,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = peers.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                peers.remove(&self.ip);
            }
        }
    }
}

/// Accepts a connection while fewer than the cap are open (evicting the
/// quietest idle one at the cap), and wraps it in [`Guarded`]. Used directly
/// for plain HTTP, and under the TLS acceptor.
#[derive(Clone)]
pub struct Limit {
    slots: Arc<Semaphore>,
    cap: usize,
    per_peer: usize,
    peers: PeerCounts,
    idle: Duration,
    epoch: Instant,
    open: Arc<Mutex<Vec<Weak<ConnState>>>>,
    refused: Arc<AtomicU64>,
}

impl Limit {
    /// At most `max_connections` at once, `per_peer` of them from one
    /// address (an IPv6 /64 counts as one), each closed after `idle`
    /// without a byte while no request on it is in flight.
    pub fn new(max_connections: usize, per_peer: usize, idle: Duration) -> Self {
        let cap = max_connections.max(1);
        Limit {
            slots: Arc::new(Semaphore::new(cap)),
            cap,
            per_peer: per_peer.max(1),
            peers: PeerCounts::default(),
            idle,
            epoch: Instant::now(),
            open: Arc::new(Mutex::new(Vec::new())),
            refused: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Asks one connection to close, in the order of the module's docs;
    /// false if none qualifies and none asked before is still closing (a
    /// slot is about to be free then: under a flood of new connections,
    /// each evicting one, the ones asked may all be closing at once).
    fn evict_one(&self) -> bool {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let mut closing = false;
        let candidates: Vec<Arc<ConnState>> = open
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|c| {
                let asked =
                    c.evict.load(Ordering::Acquire) || c.evict_receiving.load(Ordering::Acquire);
                closing |= asked;
                !asked
            })
            .collect();
        drop(open);
        let slowest = candidates
            .iter()
            .filter(|c| c.unauthenticated_receiving())
            .min_by_key(|c| c.last_read.load(Ordering::Acquire));
        let chosen = if let Some(conn) = slowest {
            conn.evict_receiving.store(true, Ordering::Release);
            conn
        } else if let Some(conn) = candidates
            .iter()
            .filter(|c| c.in_flight.load(Ordering::Acquire) == 0)
            .min_by_key(|c| c.last.load(Ordering::Acquire))
        {
            conn.evict.store(true, Ordering::Release);
            conn
        } else {
            return closing;
        };
        chosen.wake();
        true
    }

    /// A place in `ip`'s count, if it holds fewer connections than its cap.
    fn peer_slot(&self, ip: Option<IpAddr>) -> io::Result<Option<PeerSlot>> {
        let Some(ip) = ip else {
            return Ok(None);
        };
        let mut peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
        let n = peers.entry(ip).or_default();
        if *n >= self.per_peer {
            let refused = self.refused.fetch_add(1, Ordering::Relaxed);
            if refused.is_multiple_of(1024) {
                tracing::warn!(
                    target: "keyserver::server",
                    refused = refused + 1,
                    "{ip} holds its {} connections: closing its new ones",
                    self.per_peer
                );
            }
            return Err(io::Error::other("connection limit of the address reached"));
        }
        *n += 1;
        Ok(Some(PeerSlot {
            peers: Arc::clone(&self.peers),
            ip,
        }))
    }

    async fn slot(&self) -> io::Result<OwnedSemaphorePermit> {
        if let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() {
            return Ok(slot);
        }
        if self.evict_one() {
            if let Ok(Ok(slot)) =
                tokio::time::timeout(EVICT_WAIT, Arc::clone(&self.slots).acquire_owned()).await
            {
                return Ok(slot);
            }
        }
        // One log line per 1024 refusals at most: a flood must not flood
        // the log too.
        let refused = self.refused.fetch_add(1, Ordering::Relaxed);
        if refused.is_multiple_of(1024) {
            tracing::warn!(
                target: "keyserver::server",
                refused = refused + 1,
                "connection limit reached and every connection busy: closing new connections"
            );
        }
        Err(io::Error::other("connection limit reached"))
    }

    fn register(&self, state: &Arc<ConnState>) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.len() >= 2 * self.cap {
            open.retain(|c| c.strong_count() > 0);
        }
        open.push(Arc::downgrade(state));
    }
}

impl<I, S> axum_server::accept::Accept<I, S> for Limit
where
    I: PeerIp + Send + 'static,
    S: Send + 'static,
{
    type Stream = Guarded<I>;
    type Service = axum::middleware::AddExtension<S, Arc<ConnState>>;
    type Future = Pin<Box<dyn Future<Output = io::Result<(Self::Stream, Self::Service)>> + Send>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let limit = self.clone();
        let peer = stream.peer_ip();
        Box::pin(async move {
            // A refused stream is dropped here, which closes it.
            let peer_slot = limit.peer_slot(peer)?;
            let slot = limit.slot().await?;
            let now = limit.now_ms();
            let state = Arc::new(ConnState {
                last: AtomicU64::new(now),
                last_read: AtomicU64::new(now),
                in_flight: AtomicUsize::new(0),
                receiving_unauthenticated: AtomicUsize::new(0),
                evict: AtomicBool::new(false),
                evict_receiving: AtomicBool::new(false),
                waker: Mutex::new(None),
            });
            limit.register(&state);
            let service = tower_layer::Layer::layer(&axum::Extension(Arc::clone(&state)), service);
            Ok((
                Guarded::new(stream, &limit, slot, peer_slot, state),
                service,
            ))
        })
    }
}

impl Limit {
    /// Connections open now.
    pub fn open(&self) -> usize {
        self.cap.saturating_sub(self.slots.available_permits())
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// A connection holding one of the cap's slots until it is dropped, failing
/// with `TimedOut` once no byte has moved for the idle time, or once it is
/// evicted while idle.
pub struct Guarded<I> {
    inner: I,
    idle: Duration,
    epoch: Instant,
    timer: Pin<Box<Sleep>>,
    state: Arc<ConnState>,
    _slot: OwnedSemaphorePermit,
    _peer_slot: Option<PeerSlot>,
}

impl<I> Guarded<I> {
    fn new(
        inner: I,
        limit: &Limit,
        slot: OwnedSemaphorePermit,
        peer_slot: Option<PeerSlot>,
        state: Arc<ConnState>,
    ) -> Self {
        Guarded {
            inner,
            idle: limit.idle,
            epoch: limit.epoch,
            timer: Box::pin(tokio::time::sleep(limit.idle)),
            state,
            _slot: slot,
            _peer_slot: peer_slot,
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn touch(&self) {
        self.state.last.store(self.now_ms(), Ordering::Release);
    }

    fn touch_read(&self) {
        let now = self.now_ms();
        self.state.last.store(now, Ordering::Release);
        self.state.last_read.store(now, Ordering::Release);
        // Bytes arriving on an idle connection asked to close are a
        // request starting: it is served (the eviction chose a connection
        // that was idle; this one is not any more).
        if self.state.in_flight.load(Ordering::Acquire) == 0 {
            self.state.evict.store(false, Ordering::Release);
        }
    }

    /// Whether the connection must close: evicted, or idle too long. Re-arms
    /// the timer for the remaining time otherwise (activity only records a
    /// time, so the hot path never touches the timer wheel), and leaves the
    /// waker for an eviction.
    fn poll_closing(&mut self, cx: &mut Context<'_>) -> bool {
        let in_flight = self.state.in_flight.load(Ordering::Acquire);
        if in_flight > 0 {
            // Evicted as a slow sender, and every request still receiving
            // its body: close.
            if self.state.evict_receiving.load(Ordering::Acquire)
                && self.state.receiving_unauthenticated.load(Ordering::Acquire) >= in_flight
            {
                return true;
            }
            // A request is being answered: neither an eviction (decided
            // before it arrived, or before its body was in) nor the idle
            // time counts.
            self.state.evict.store(false, Ordering::Release);
            self.state.evict_receiving.store(false, Ordering::Release);
            self.touch();
        } else if self.state.evict.load(Ordering::Acquire)
            || self.state.evict_receiving.load(Ordering::Acquire)
        {
            return true;
        }
        *self
            .state
            .waker
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(cx.waker().clone());
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            let last = Duration::from_millis(self.state.last.load(Ordering::Acquire));
            let deadline = self.epoch + last + self.idle;
            if Instant::now() >= deadline {
                return true;
            }
            self.timer.as_mut().reset(deadline);
        }
    }
}

impl<I> Guarded<I> {
    /// Records a write's activity, or closes a connection whose write waits
    /// while it is evicted or idle.
    fn after_write(
        &mut self,
        cx: &mut Context<'_>,
        written: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match written {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.touch();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Pending if self.poll_closing(cx) => Poll::Ready(Err(closing_error())),
            other => other,
        }
    }
}

fn closing_error() -> io::Error {
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
                    self.touch_read();
                }
                Poll::Ready(result)
            }
            Poll::Pending if self.poll_closing(cx) => Poll::Ready(Err(closing_error())),
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
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.after_write(cx, written)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.after_write(cx, written)
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
pub fn connection_room() -> usize {
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
