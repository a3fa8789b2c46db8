//! Request bodies: read with a size limit, within the request's deadline and
//! the listener's memory budget, into memory that is wiped on drop.

use std::collections::HashMap;
use std::net::IpAddr;
use std::ops::Deref;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use zeroize::{Zeroize, Zeroizing};

use keyserver_core::{Error, Result};

/// How long a request waits for room in the memory budget before it is
/// answered "busy".
const BUDGET_WAIT: Duration = Duration::from_secs(2);

/// The budget is counted in KiB, so that a semaphore's permits cover it.
const UNIT: usize = 1024;

/// Bodies larger than this are parsed on the blocking pool, so that parsing
/// them never holds up the async workers that serve everyone else.
pub const LARGE_BODY: usize = 64 * 1024;

/// Bytes of request bodies held in memory at once, all requests together,
/// and by the requests of any one peer address (so that one host cannot
/// take all of it).
pub struct Budget {
    units: Arc<Semaphore>,
    total: usize,
    per_peer: usize,
    peers: PeerShares,
}

/// KiB held per peer address.
type PeerShares = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// What a body holds of a [`Budget`]: given back when dropped.
pub struct Held {
    permit: Option<OwnedSemaphorePermit>,
    peer: Option<(PeerShares, IpAddr, usize)>,
}

impl Held {
    fn merge(&mut self, mut more: Held) {
        if let Some(permit) = more.permit.take() {
            match self.permit.as_mut() {
                Some(mine) => mine.merge(permit),
                None => self.permit = Some(permit),
            }
        }
        if let (Some((_, _, units)), Some((_, _, more_units))) =
            (self.peer.as_mut(), more.peer.as_mut())
        {
            *units += std::mem::take(more_units);
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some((peers, ip, units)) = self.peer.take() {
            if units == 0 {
                return;
            }
            let mut peers = peers.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(held) = peers.get_mut(&ip) {
                *held = held.saturating_sub(units);
                if *held == 0 {
                    peers.remove(&ip);
                }
            }
        }
    }
}

impl Budget {
    /// A budget of `bytes`, of which one peer address may hold a quarter
    /// (or one body of `max_body`, if that is more).
    pub fn new(bytes: usize, max_body: usize) -> Self {
        let total = bytes.div_ceil(UNIT).clamp(1, Semaphore::MAX_PERMITS);
        let per_peer = (total / 4).max(max_body.div_ceil(UNIT)).min(total);
        Budget {
            units: Arc::new(Semaphore::new(total)),
            total,
            per_peer,
            peers: Arc::default(),
        }
    }

    /// Bytes not held by any request now.
    #[cfg(test)]
    pub fn available(&self) -> usize {
        self.units.available_permits() * UNIT
    }

    /// Bytes held by requests now (in whole KiB).
    pub fn held(&self) -> usize {
        self.total.saturating_sub(self.units.available_permits()) * UNIT
    }

    /// Room for `units` more KiB for a request of `peer`, waiting briefly
    /// for it. A peer over its share is refused at once.
    async fn reserve(&self, units: usize, peer: Option<IpAddr>) -> Result<Held> {
        let busy = || Error::Busy {
            reason: "the server's memory budget for requests is in use".into(),
        };
        if units > self.total {
            return Err(busy());
        }
        let count = u32::try_from(units).map_err(|_| busy())?;
        // The peer's share first (a hold given back if the budget has no
        // room).
        let peer = match peer {
            Some(ip) => {
                let mut peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
                let held = peers.entry(ip).or_default();
                if *held + units > self.per_peer {
                    return Err(Error::Busy {
                        reason: "this address holds its share of the server's memory for \
                                 requests"
                            .into(),
                    });
                }
                *held += units;
                Some((Arc::clone(&self.peers), ip, units))
            }
            None => None,
        };
        let permit = within(
            Instant::now() + BUDGET_WAIT,
            Arc::clone(&self.units).acquire_many_owned(count),
        )
        .await;
        let mut held = Held { permit: None, peer };
        match permit {
            Some(Ok(permit)) => {
                held.permit = Some(permit);
                Ok(held)
            }
            // `held` gives the peer's share back as it drops.
            _ => Err(busy()),
        }
    }
}

/// A request body: wiped when dropped, and holding its share of the memory
/// budget until then.
pub struct RequestBody {
    bytes: Zeroizing<Vec<u8>>,
    _held: Option<Held>,
}

impl std::fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RequestBody({} bytes)", self.bytes.len())
    }
}

impl Deref for RequestBody {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

/// A response body that wipes its bytes when the HTTP stack drops them
/// (after they are written): answers carry KEKs (`generate`) and DEKs
/// (`get_key`).
pub fn wiped_body(text: String) -> axum::body::Body {
    struct Wiped(Vec<u8>);
    impl AsRef<[u8]> for Wiped {
        fn as_ref(&self) -> &[u8] {
            &self.0
        }
    }
    impl Drop for Wiped {
        fn drop(&mut self) {
            self.0.zeroize();
        }
    }
    axum::body::Body::from(axum::body::Bytes::from_owner(Wiped(text.into_bytes())))
}

/// What a body read is bound by.
pub struct Limits<'a> {
    /// Largest body accepted.
    pub max: usize,
    /// The memory budget it draws on (the listener's, or the small one of
    /// callers that have not authenticated).
    pub budget: &'a Budget,
    /// The client's address, whose share of the budget it counts against.
    pub peer: Option<IpAddr>,
    /// When the request's time is up.
    pub deadline: Instant,
}

/// Reads a request body of at most `limits.max` bytes. A larger body is read
/// on and thrown away up to a cap (so the client, still sending, gets the
/// "too large" answer rather than a reset connection), then refused with
/// [`Error::TooLarge`]. Every byte kept is first reserved in the memory
/// budget ([`Error::Busy`] when there is no room); a body still arriving at
/// the deadline is refused with the time-out error.
pub async fn read_body(
    headers: &axum::http::HeaderMap,
    body: axum::body::Body,
    limits: Limits<'_>,
) -> Result<RequestBody> {
    match within(limits.deadline, read(headers, body, &limits)).await {
        Some(result) => result,
        None => Err(timed_out()),
    }
}

/// `future`'s output, or `None` once `deadline` passes (as
/// `tokio::time::timeout_at`), with the timer made only if the future has
/// to wait: a request answered in its first poll (a body already received,
/// a lookup in memory) never touches the timer wheel. With three
/// `timeout_at` per request, `strace -c` counted one `eventfd` write (a
/// wake-up of the parked runtime thread) per `get_wrapped`; with this, 0.02
/// (BENCHMARKS.md, issue 18). The timer is polled outside the task's
/// cooperative budget, so a future that spends the budget cannot starve
/// the deadline.
pub async fn within<F: std::future::Future>(deadline: Instant, future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    let mut timer: Option<std::pin::Pin<Box<tokio::task::Unconstrained<tokio::time::Sleep>>>> =
        None;
    std::future::poll_fn(|cx| {
        if let std::task::Poll::Ready(output) = future.as_mut().poll(cx) {
            return std::task::Poll::Ready(Some(output));
        }
        let timer = timer.get_or_insert_with(|| {
            Box::pin(tokio::task::unconstrained(tokio::time::sleep_until(
                deadline,
            )))
        });
        std::future::Future::poll(timer.as_mut(), cx).map(|()| None)
    })
    .await
}

/// Runs `parse` on `body`: inline for a small body, on the blocking pool
/// for a large one (so the async workers keep serving), and never past the
/// request's `deadline`.
pub async fn parse_body<T, F>(body: RequestBody, deadline: Instant, parse: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(RequestBody) -> Result<T> + Send + 'static,
{
    if body.len() <= LARGE_BODY {
        return parse(body);
    }
    match within(
        deadline,
        keyserver_core::plugin::blocking(move || parse(body)),
    )
    .await
    {
        Some(parsed) => parsed.and_then(|r| r),
        None => Err(timed_out()),
    }
}

/// The error of a request past its time limit (code 7).
pub fn timed_out() -> Error {
    Error::Internal("the request timed out".into())
}

async fn read(
    headers: &axum::http::HeaderMap,
    body: axum::body::Body,
    limits: &Limits<'_>,
) -> Result<RequestBody> {
    use http_body_util::BodyExt;
    let limit = limits.max as u64;
    let cap = limit.saturating_mul(4).max(16 << 20);
    let too_large = |size| Error::TooLarge { size, limit };
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(size) = declared.filter(|&n| n > cap) {
        return Err(too_large(size));
    }
    let mut body = body;
    // Nothing is reserved for a declared size: a client that announces a
    // large body and sends nothing holds no memory. The buffer grows, in
    // reserved steps, as bytes arrive.
    let mut held: Option<Held> = None;
    let mut held_units = 0usize;
    let mut buf = Zeroizing::new(Vec::new());
    let mut total = 0u64;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return Err(Error::Transport {
                message: "the request body could not be read".into(),
                source: None,
            });
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total += data.len() as u64;
        if total <= limit {
            let needed = buf.len() + data.len();
            // Reserve for the capacity the vector will grow to, not only
            // for the bytes: what is allocated is what is counted.
            let capacity = if needed > buf.capacity() {
                needed.max(buf.capacity() * 2).min(limits.max)
            } else {
                buf.capacity()
            };
            let units = capacity.div_ceil(UNIT);
            if units > held_units {
                let more = limits
                    .budget
                    .reserve(units - held_units, limits.peer)
                    .await?;
                match held.as_mut() {
                    Some(permit) => permit.merge(more),
                    None => held = Some(more),
                }
                held_units = units;
            }
            if needed > buf.capacity() {
                // Grow by copying into a new allocation, so the old one is
                // wiped rather than freed with the bytes in it.
                let mut grown = Zeroizing::new(Vec::with_capacity(capacity));
                grown.extend_from_slice(&buf);
                buf = grown;
            }
            buf.extend_from_slice(&data);
        } else {
            buf.zeroize();
            if total > cap {
                break;
            }
        }
        if let Ok(mut owned) = data.try_into_mut() {
            owned.as_mut().zeroize();
        }
    }
    if total > limit {
        return Err(too_large(total));
    }
    Ok(RequestBody {
        bytes: buf,
        _held: held,
    })
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use super::*;

    fn limits(budget: &Budget, max: usize) -> Limits<'_> {
        Limits {
            max,
            budget,
            peer: None,
            deadline: Instant::now() + Duration::from_secs(30),
        }
    }

    #[tokio::test]
    async fn a_body_holds_its_share_of_the_budget_until_dropped() {
        let budget = Budget::new(64 * 1024, 1 << 20);
        let headers = axum::http::HeaderMap::new();
        let body = read_body(
            &headers,
            axum::body::Body::from(vec![7u8; 40_000]),
            limits(&budget, 1 << 20),
        )
        .await
        .unwrap();
        assert_eq!(body.len(), 40_000);
        assert!(
            budget.available() <= 64 * 1024 - 40_000,
            "{}",
            budget.available()
        );
        // No room for a second body of that size: busy, after a short wait.
        tokio::time::pause();
        let err = read_body(
            &headers,
            axum::body::Body::from(vec![7u8; 40_000]),
            limits(&budget, 1 << 20),
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), 12, "{err}");
        drop(body);
        assert_eq!(budget.available(), 64 * 1024);
    }

    /// One address holds at most a quarter of the budget (or one largest
    /// body): past it, its next body is refused at once, and others still
    /// find room.
    #[tokio::test]
    async fn one_address_holds_at_most_its_share() {
        let budget = Budget::new(64 * 1024, 8 * 1024);
        let headers = axum::http::HeaderMap::new();
        let from = |ip: &str| Limits {
            peer: Some(ip.parse().unwrap()),
            ..limits(&budget, 1 << 20)
        };
        let first = read_body(
            &headers,
            axum::body::Body::from(vec![7u8; 12_000]),
            from("10.0.0.1"),
        )
        .await
        .unwrap();
        let start = Instant::now();
        let err = read_body(
            &headers,
            axum::body::Body::from(vec![7u8; 8_000]),
            from("10.0.0.1"),
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), 12, "{err}");
        assert!(start.elapsed() < BUDGET_WAIT, "refused without waiting");
        let other = read_body(
            &headers,
            axum::body::Body::from(vec![7u8; 12_000]),
            from("10.0.0.2"),
        )
        .await
        .unwrap();
        drop((first, other));
        assert_eq!(budget.available(), 64 * 1024);
        assert!(
            budget.peers.lock().unwrap().is_empty(),
            "every share given back"
        );
    }

    /// Announcing a large body reserves nothing: only bytes that arrive
    /// count, so headers alone cannot fill the budget.
    #[tokio::test(start_paused = true)]
    async fn a_declared_length_alone_holds_no_budget() {
        let budget = Budget::new(8 * 1024, 1 << 20);
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(
            axum::http::header::CONTENT_LENGTH,
            "1000000".parse().unwrap(),
        );
        let silent = futures_util::stream::pending::<std::io::Result<axum::body::Bytes>>();
        let reading = read_body(
            &headers,
            axum::body::Body::from_stream(silent),
            limits(&budget, 1 << 20),
        );
        tokio::pin!(reading);
        let pending = std::future::poll_fn(|cx| {
            std::task::Poll::Ready(reading.as_mut().poll(cx).is_pending())
        })
        .await;
        assert!(pending, "still waiting for bytes");
        assert_eq!(
            budget.available(),
            8 * 1024,
            "nothing held while nothing arrives"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_still_arriving_at_the_deadline_is_refused() {
        use futures_util::StreamExt;
        let budget = Budget::new(1 << 20, 1 << 20);
        // One chunk, then nothing more, ever: a slow client.
        let trickle = futures_util::stream::once(async {
            Ok::<_, std::io::Error>(axum::body::Bytes::from_static(b"<?xml"))
        })
        .chain(futures_util::stream::pending());
        let headers = axum::http::HeaderMap::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        let err = read_body(
            &headers,
            axum::body::Body::from_stream(trickle),
            Limits {
                max: 1 << 20,
                budget: &budget,
                peer: None,
                deadline,
            },
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), 7);
        assert_eq!(Instant::now(), deadline);
        assert_eq!(budget.available(), 1 << 20, "given back");
    }
}
