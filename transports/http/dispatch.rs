//! Runs parsed calls against the service with a time limit, and writes one
//! access-log line each. Shared by the protocol endpoints.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::api::{Call, KeyService, Reply};
use crate::{Error, KeyId, Result};

/// Largest number of calls in one JSON-RPC batch or XML-RPC
/// `system.multicall`.
pub(crate) const MAX_BATCH: usize = 64;

/// The service behind a listener, with its per-request time limit.
pub(crate) struct Dispatch {
    service: Arc<dyn KeyService>,
    timeout: Duration,
}

impl Dispatch {
    pub(crate) fn new(service: Arc<dyn KeyService>, timeout: Duration) -> Self {
        Dispatch { service, timeout }
    }

    /// Runs one call with the time limit and logs it.
    pub(crate) async fn run(&self, protocol: &'static str, call: Call) -> Result<Reply> {
        let start = Instant::now();
        let method = call.method().name;
        let mut key_id = call.key_id();
        let result = match tokio::time::timeout(self.timeout, self.service.call(call)).await {
            Ok(result) => result,
            Err(_) => Err(Error::Internal("the request timed out".into())),
        };
        if let Ok(Reply::Kek(kek)) = &result {
            key_id = Some(kek.id());
        }
        log_request(protocol, method, key_id.as_ref(), &result, start);
        result
    }
}

/// One access-log line: protocol, method, key id, outcome, latency. Never a key.
pub(crate) fn log_request<T>(
    protocol: &str,
    method: &str,
    key_id: Option<&KeyId>,
    result: &Result<T>,
    start: Instant,
) {
    let latency_ms = start.elapsed().as_secs_f64() * 1000.0;
    let key_id = key_id.map(|k| k.to_string()).unwrap_or_else(|| "-".into());
    match result {
        Ok(_) => tracing::info!(
            target: "keyserver::access",
            protocol, method, key_id = %key_id, outcome = "ok", latency_ms,
            "{protocol} {method} {key_id} ok {latency_ms:.2}ms"
        ),
        Err(e) => tracing::warn!(
            target: "keyserver::access",
            protocol, method, key_id = %key_id, outcome = "error", code = e.code(), latency_ms,
            "{protocol} {method} {key_id} error {} ({e}) {latency_ms:.2}ms", e.code()
        ),
    }
}

/// Logs a request refused before it became a call (unreadable, too large,
/// not a call of a known method): `method` is `-` when unknown.
pub(crate) fn log_refused(protocol: &str, method: &str, error: &Error, start: Instant) {
    log_request::<()>(
        protocol,
        method,
        None,
        &Err(Error::Remote {
            code: error.code(),
            message: error.to_string(),
        }),
        start,
    );
}
