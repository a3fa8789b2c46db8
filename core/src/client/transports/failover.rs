//! [`Failover`]: one transport over several key servers that share a
//! storage, riding out the loss of any of them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::api::{Call, Reply};
use crate::{Error, ErrorCode, Result, Transport};

/// How long an endpoint that failed is tried last (default 10 s).
pub const DEFAULT_QUARANTINE: Duration = Duration::from_secs(10);

/// A [`Transport`] over several endpoints (each a transport to one key
/// server; all of them serving one shared storage, such as PostgreSQL).
///
/// Calls are spread round-robin over the endpoints that have not failed
/// lately. When a call fails:
///
/// - a call that changes nothing (`get_key`, `get_wrapped`, `contains`,
///   `status`, `describe`, `list_keys`) goes to the next endpoint on a
///   connection failure, a time-out, an HTTP error, or a server that
///   answers that its storage failed (code 5) or that it is busy (code 12);
/// - a call that changes something (`generate`, `rotate`, the state
///   changes) goes to the next endpoint only when the request certainly did
///   not reach the server (the connection was refused or never made), or
///   the server answered that it did nothing (code 12, busy: at a limit,
///   or cut off from its storage):
///   otherwise the server may have done it, and doing it twice is not the
///   same (a second `generate` makes a second key). The error is returned
///   and the caller decides; docs/OPERATIONS.md says what a retried
///   `generate` can leave behind.
///
/// An endpoint that failed is remembered for [`DEFAULT_QUARANTINE`] and
/// tried after the others; when every endpoint has failed, each is tried
/// once more after a short backoff (50 ms, then 100 ms...), so a server
/// that comes back is used again without a restart.
///
/// # Example
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use keyserver::{KeyServer, KeyService, KeyStorage};
/// use keyserver::backends::{MemoryStorage, RustCrypto};
/// use keyserver::transports::{Failover, InProcess};
///
/// // Two servers over one storage.
/// let store = Arc::new(MemoryStorage::new());
/// let a = InProcess::new(Arc::new(KeyServer::new(RustCrypto::new(), Arc::clone(&store))));
/// let b = InProcess::new(Arc::new(KeyServer::new(RustCrypto::new(), Arc::clone(&store))));
/// let both = Failover::new(vec![a, b])?;
/// let kek = both.generate(None).await?;
/// assert!(both.contains(&kek.id()).await?);
/// # Ok::<(), keyserver::Error>(())
/// # }).unwrap();
/// ```
pub struct Failover<T> {
    endpoints: Vec<Endpoint<T>>,
    next: AtomicUsize,
    quarantine: Duration,
    rounds: usize,
}

struct Endpoint<T> {
    transport: T,
    failed_at: Mutex<Option<Instant>>,
}

impl<T> Endpoint<T> {
    fn failed_at(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.failed_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl<T> std::fmt::Debug for Failover<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Failover")
            .field("endpoints", &self.endpoints.len())
            .finish_non_exhaustive()
    }
}

impl<T: Transport> Failover<T> {
    /// Over `endpoints`, in the order given (the first call goes to the
    /// first).
    ///
    /// # Errors
    /// [`Error::Policy`] for an empty list.
    pub fn new(endpoints: Vec<T>) -> Result<Self> {
        if endpoints.is_empty() {
            return Err(Error::policy(
                "a failover transport needs at least one endpoint",
            ));
        }
        Ok(Failover {
            endpoints: endpoints
                .into_iter()
                .map(|transport| Endpoint {
                    transport,
                    failed_at: Mutex::new(None),
                })
                .collect(),
            next: AtomicUsize::new(0),
            quarantine: DEFAULT_QUARANTINE,
            rounds: 2,
        })
    }

    /// Remembers a failed endpoint for `quarantine` (0 forgets at once).
    pub fn with_quarantine(mut self, quarantine: Duration) -> Self {
        self.quarantine = quarantine;
        self
    }

    /// The endpoints, in order.
    pub fn endpoints(&self) -> impl Iterator<Item = &T> {
        self.endpoints.iter().map(|e| &e.transport)
    }

    /// The order to try the endpoints in for one call: round-robin from
    /// the next one, those that failed lately last.
    fn order(&self) -> Vec<usize> {
        let n = self.endpoints.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let (mut healthy, mut failed) = (Vec::with_capacity(n), Vec::new());
        for i in (0..n).map(|k| (start + k) % n) {
            let lately = self.endpoints[i]
                .failed_at()
                .is_some_and(|at| at.elapsed() < self.quarantine);
            if lately {
                failed.push(i);
            } else {
                healthy.push(i);
            }
        }
        healthy.append(&mut failed);
        healthy
    }
}

/// Whether `error` proves that the request never reached a server: the
/// connection was refused, or could not be made at all.
pub(crate) fn certainly_unsent(error: &Error) -> bool {
    let Error::Transport {
        source: Some(source),
        ..
    } = error
    else {
        return false;
    };
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(source.as_ref());
    while let Some(e) = next {
        if e.is::<crate::error::NotSent>() {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::AddrNotAvailable
            ) {
                return true;
            }
        }
        next = e.source();
    }
    false
}

/// Whether a call that failed with `error` may go to another endpoint.
fn may_retry(call: &Call, error: &Error) -> bool {
    if call.method().changes_state() {
        // "Busy" says the server did nothing (code 12's promise).
        return certainly_unsent(error) || matches!(error.kind(), Some(ErrorCode::Busy));
    }
    matches!(
        error.kind(),
        Some(ErrorCode::Transport | ErrorCode::Storage | ErrorCode::Busy)
    )
}

#[async_trait]
impl<T: Transport> Transport for Failover<T> {
    fn endpoint(&self) -> String {
        self.endpoints
            .iter()
            .map(|e| e.transport.endpoint())
            .collect::<Vec<_>>()
            .join(",")
    }

    async fn send(&self, call: Call) -> Result<Reply> {
        let mut last = None;
        let mut backoff = Duration::from_millis(50);
        for round in 0..self.rounds {
            if round > 0 {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            for i in self.order() {
                let endpoint = &self.endpoints[i];
                match endpoint.transport.send(call.clone()).await {
                    Ok(reply) => {
                        *endpoint.failed_at() = None;
                        return Ok(reply);
                    }
                    Err(error) => {
                        if !may_retry(&call, &error) {
                            return Err(error);
                        }
                        *endpoint.failed_at() = Some(Instant::now());
                        tracing::debug!(
                            target: "keyserver::client",
                            "{} failed ({}); trying the next endpoint",
                            endpoint.transport.endpoint(),
                            error.code()
                        );
                        last = Some(error);
                    }
                }
            }
        }
        Err(last.unwrap_or_else(|| Error::Internal("no endpoint was tried".into())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::MockTransport;

    fn refused() -> Error {
        Error::Transport {
            message: "cannot reach the key server".into(),
            source: Some(Box::new(std::io::Error::from(
                std::io::ErrorKind::ConnectionRefused,
            ))),
        }
    }

    fn reset() -> Error {
        Error::Transport {
            message: "cannot read the answer".into(),
            source: Some(Box::new(std::io::Error::from(
                std::io::ErrorKind::ConnectionReset,
            ))),
        }
    }

    fn endpoint(name: &'static str, answers: Vec<Result<Reply>>) -> MockTransport {
        let mut mock = MockTransport::new();
        mock.expect_endpoint().return_const(name.to_string());
        let mut answers = answers.into_iter();
        let n = answers.len();
        mock.expect_send()
            .times(n)
            .returning(move |_| answers.next().expect("an answer"));
        mock
    }

    #[tokio::test]
    async fn reads_go_to_the_next_endpoint_on_any_transport_or_storage_failure() {
        let id = crate::KeyId::from_bytes([1; 32]);
        let storage = Error::Storage {
            backend: "postgres".into(),
            message: "down".into(),
            source: None,
        };
        let f = Failover::new(vec![
            endpoint("a", vec![Err(reset())]),
            endpoint("b", vec![Err(storage)]),
            endpoint("c", vec![Ok(Reply::Bool(true))]),
        ])
        .unwrap();
        assert_eq!(f.send(Call::Contains(id)).await.unwrap(), Reply::Bool(true));
        assert_eq!(f.endpoint(), "a,b,c");
    }

    #[tokio::test]
    async fn a_server_error_that_is_an_answer_is_not_retried() {
        let id = crate::KeyId::from_bytes([1; 32]);
        let f = Failover::new(vec![
            endpoint("a", vec![Err(Error::NotFound { key_id: id })]),
            endpoint("b", vec![]),
        ])
        .unwrap();
        assert!(matches!(
            f.send(Call::GetWrapped(id)).await,
            Err(Error::NotFound { .. })
        ));
    }

    #[tokio::test]
    async fn a_change_is_retried_only_when_it_certainly_was_not_sent() {
        // Refused: never reached a: b makes the key.
        let f = Failover::new(vec![
            endpoint("a", vec![Err(refused())]),
            endpoint("b", vec![Ok(Reply::Bool(true))]),
        ])
        .unwrap();
        assert!(f.send(Call::Generate(None, None)).await.is_ok());
        // Reset after sending: a may have made a key; not retried.
        let f = Failover::new(vec![
            endpoint("a", vec![Err(reset())]),
            endpoint("b", vec![]),
        ])
        .unwrap();
        let err = f.send(Call::Generate(None, None)).await.unwrap_err();
        assert!(!certainly_unsent(&err), "{err:?}");
        // Busy: a did nothing (a server cut off from its storage says
        // so): b makes the key.
        let busy = Error::Busy {
            reason: "this server cannot reach its storage now".into(),
        };
        let f = Failover::new(vec![
            endpoint("a", vec![Err(busy)]),
            endpoint("b", vec![Ok(Reply::Bool(true))]),
        ])
        .unwrap();
        assert!(f.send(Call::Generate(None, None)).await.is_ok());
        // A storage failure during a change: a may have done it; not retried.
        let storage = Error::Storage {
            backend: "postgres".into(),
            message: "down".into(),
            source: None,
        };
        let f = Failover::new(vec![
            endpoint("a", vec![Err(storage)]),
            endpoint("b", vec![]),
        ])
        .unwrap();
        assert!(f.send(Call::Generate(None, None)).await.is_err());
    }

    #[tokio::test]
    async fn a_failed_endpoint_is_tried_last_and_used_again_when_back() {
        let id = crate::KeyId::from_bytes([1; 32]);
        // a fails once, then answers; b always answers.
        let f = Failover::new(vec![
            endpoint("a", vec![Err(refused()), Ok(Reply::Bool(true))]),
            endpoint("b", (0..3).map(|_| Ok(Reply::Bool(true))).collect()),
        ])
        .unwrap()
        .with_quarantine(Duration::from_millis(200));
        // Call 1 starts at a (fails) then b. Calls 2 and 3: a is
        // quarantined, so b first.
        for _ in 0..3 {
            f.send(Call::Contains(id)).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        // Quarantine over: round-robin reaches a again and it answers.
        f.next.store(0, Ordering::Relaxed);
        f.send(Call::Contains(id)).await.unwrap();
    }

    #[tokio::test]
    async fn when_every_endpoint_fails_each_is_tried_again_after_a_backoff() {
        let id = crate::KeyId::from_bytes([1; 32]);
        // Round one: a and b fail. Round two (after the backoff) starts
        // where the round-robin is, at b, which is back.
        let f = Failover::new(vec![
            endpoint("a", vec![Err(refused())]),
            endpoint("b", vec![Err(refused()), Ok(Reply::Bool(false))]),
        ])
        .unwrap();
        assert_eq!(
            f.send(Call::Contains(id)).await.unwrap(),
            Reply::Bool(false)
        );
        // Both down in both rounds: the last failure comes back.
        let f = Failover::new(vec![
            endpoint("a", vec![Err(refused()), Err(refused())]),
            endpoint("b", vec![Err(refused()), Err(refused())]),
        ])
        .unwrap();
        assert!(certainly_unsent(
            &f.send(Call::Contains(id)).await.unwrap_err()
        ));
        let none: Result<Failover<MockTransport>> = Failover::new(vec![]);
        assert!(none.unwrap_err().to_string().contains("at least one"));
    }
}
