//! Runs parsed calls against the service with a time limit, and writes one
//! access-log line each. Shared by the protocol endpoints.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::server::body::{timed_out, within, Budget, Limits};
use keyserver_core::api::{Call, Caller, Identity, KeyService, Reply, Value};
use keyserver_core::{Error, ErrorCode, KeyId, Result};

/// Largest number of calls in one JSON-RPC batch or XML-RPC
/// `system.multicall`.
pub const MAX_BATCH: usize = 64;

/// The service behind a listener, with the limits every request is held to.
struct Shared {
    service: Arc<dyn KeyService>,
    timeout: Duration,
    max_body: usize,
    budget: Budget,
    /// The small budget of requests that did not authenticate, when the
    /// service controls access (without access control nobody does, and
    /// every request draws on `budget`).
    preauth: Option<Budget>,
    max_expensive: usize,
}

/// The service behind a listener, as one request's caller sees it: the
/// listener's limits, and the caller its credentials made (which goes with
/// each of the request's calls to [`KeyService::call_as`]).
pub struct Dispatch {
    shared: Arc<Shared>,
    caller: Caller,
}

impl Dispatch {
    /// `service` with a per-request time limit and the listener's default
    /// limits otherwise, called in process (an endpoint's unit tests).
    pub fn new(service: Arc<dyn KeyService>, timeout: Duration) -> Self {
        let defaults = crate::server::ServerConfig::default();
        Dispatch {
            shared: Arc::new(Shared {
                service,
                timeout,
                max_body: defaults.max_body,
                budget: Budget::new(defaults.max_request_memory, defaults.max_body),
                preauth: None,
                max_expensive: defaults.max_batch_expensive,
            }),
            caller: Caller::local(),
        }
    }

    /// `service` with the limits of `config`; its caller, until a request
    /// binds its own ([`Dispatch::bind`]), has bad credentials (it may do
    /// nothing).
    pub fn with_config(
        service: Arc<dyn KeyService>,
        config: &crate::server::ServerConfig,
        controls_access: bool,
    ) -> Self {
        Dispatch {
            shared: Arc::new(Shared {
                service,
                timeout: config.request_timeout,
                max_body: config.max_body,
                budget: Budget::new(config.max_request_memory, config.max_body),
                preauth: controls_access
                    .then(|| Budget::new(config.max_preauth_memory, config.max_body)),
                max_expensive: config.max_batch_expensive,
            }),
            caller: Caller::with_identity(Identity::BadCredentials),
        }
    }

    /// The same service and limits, for a request of `caller`.
    pub fn bind(&self, caller: Option<Caller>) -> Dispatch {
        Dispatch {
            shared: Arc::clone(&self.shared),
            caller: caller.unwrap_or_else(|| Caller::with_identity(Identity::BadCredentials)),
        }
    }

    /// The service served.
    pub fn service(&self) -> &dyn KeyService {
        &*self.shared.service
    }

    /// The service served, shared.
    pub fn shared_service(&self) -> Arc<dyn KeyService> {
        Arc::clone(&self.shared.service)
    }

    /// Who calls.
    pub fn caller(&self) -> &Caller {
        &self.caller
    }

    /// Bytes of request bodies held in memory now.
    pub fn request_bytes_held(&self) -> usize {
        self.shared.budget.held() + self.shared.preauth.as_ref().map_or(0, Budget::held)
    }

    /// Whether the service can answer ([`KeyService::ready`]), within the
    /// request time limit.
    pub async fn ready(&self) -> Result<()> {
        let deadline = self.deadline();
        tokio::time::timeout_at(deadline, self.shared.service.ready())
            .await
            .unwrap_or_else(|_| Err(timed_out()))
    }

    /// When a request that starts now must be answered: its body, its
    /// parsing and all its calls share this one deadline.
    pub fn deadline(&self) -> tokio::time::Instant {
        tokio::time::Instant::now() + self.shared.timeout
    }

    /// What reading a request's body is bound by.
    pub fn body_limits(&self, deadline: tokio::time::Instant) -> Limits<'_> {
        let budget = match &self.shared.preauth {
            Some(preauth) if !self.caller.identity.is_authenticated() => preauth,
            _ => &self.shared.budget,
        };
        Limits {
            max: self.shared.max_body,
            budget,
            peer: self.caller.peer.map(|p| super::peer::address_group(p.ip())),
            deadline,
        }
    }

    /// Refuses a batch (JSON-RPC) or multicall (XML-RPC) of these method
    /// names that holds more expensive calls than allowed.
    pub fn check_batch<'a>(&self, names: impl Iterator<Item = &'a str>) -> Result<()> {
        let expensive = names
            .filter(|name| keyserver_core::api::method(name).is_some_and(|m| m.is_expensive()))
            .count();
        if expensive > self.shared.max_expensive {
            return Err(Error::protocol(
                ErrorCode::InvalidRequest,
                format!(
                    "a batch holds at most {} expensive calls (generate, get_key, rotate, state \
                     changes, list_keys); send the others \
                     in another request",
                    self.shared.max_expensive
                ),
            ));
        }
        Ok(())
    }

    /// Parses a call of `name` from its `params` (already converted by the
    /// protocol's codec, or the codec's error) and runs it; a call that does
    /// not parse is logged and refused. `brackets` are the protocol's, for
    /// the "invalid parameters" message.
    pub async fn run_named(
        &self,
        protocol: &'static str,
        name: &str,
        params: Result<Vec<Value>>,
        brackets: (char, char),
        deadline: tokio::time::Instant,
    ) -> Result<Value> {
        self.run_named_reply(protocol, name, params, brackets, deadline)
            .await
            .map(Reply::into_value)
    }

    /// [`Dispatch::run_named`], answering with the reply itself (for a
    /// protocol that writes some replies without their neutral value).
    pub async fn run_named_reply(
        &self,
        protocol: &'static str,
        name: &str,
        params: Result<Vec<Value>>,
        brackets: (char, char),
        deadline: tokio::time::Instant,
    ) -> Result<Reply> {
        let start = Instant::now();
        match params.and_then(|params| Call::from_params(name, params, brackets)) {
            Ok(call) => self.run(protocol, call, deadline).await,
            Err(e) => {
                let shown = keyserver_core::api::method(name).map_or("(unknown)", |m| m.name);
                self.log_refused(protocol, shown, &e, start);
                Err(e)
            }
        }
    }

    /// Runs one call as the request's caller, cut off at the request's
    /// `deadline`, and logs it. A call of a batch whose deadline has passed
    /// is answered with the time-out error without running. (A state
    /// change cut off still runs to its end inside the service: see
    /// `keyserver::policy::Audit`.)
    pub async fn run(
        &self,
        protocol: &'static str,
        call: Call,
        deadline: tokio::time::Instant,
    ) -> Result<Reply> {
        let start = Instant::now();
        let method = call.method();
        let mut key_id = call.key_id();
        let result = if tokio::time::Instant::now() >= deadline {
            Err(timed_out())
        } else {
            match within(deadline, self.shared.service.call_as(&self.caller, call)).await {
                Some(result) => result,
                None => Err(timed_out()),
            }
        };
        // generate: the new key.
        if let (Ok(Reply::Kek(kek)), None) = (&result, &key_id) {
            key_id = Some(kek.id());
        }
        access_line(
            &self.caller,
            protocol,
            method.name,
            key_id.as_ref(),
            &result,
            start,
        );
        result
    }

    /// One access-log line for a request that is not a call of the wire
    /// API (XML-RPC's introspection), or was refused before it became one:
    /// protocol, method, key id, outcome, latency. Never a key. A refusal
    /// also reaches the service ([`KeyService::refused`]: the audit log and
    /// the metrics).
    pub fn log_request<T>(
        &self,
        protocol: &'static str,
        method: &str,
        key_id: Option<&KeyId>,
        result: &Result<T>,
        start: Instant,
    ) {
        if let Err(e) = result {
            self.shared.service.refused(&self.caller, method, e);
        }
        access_line(&self.caller, protocol, method, key_id, result, start);
    }

    /// Logs a request refused before it became a call (unreadable, too
    /// large, not a call of a known method): `method` is `-` when unknown.
    pub fn log_refused(&self, protocol: &'static str, method: &str, error: &Error, start: Instant) {
        self.log_request::<()>(
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
}

/// One access-log line: protocol, method, key id, principal, peer, outcome,
/// latency. Never a key.
fn access_line<T>(
    caller: &Caller,
    protocol: &str,
    method: &str,
    key_id: Option<&KeyId>,
    result: &Result<T>,
    start: Instant,
) {
    let elapsed = start.elapsed();
    let seconds = elapsed.as_secs_f64();
    let latency_ms = seconds * 1000.0;
    let millis = Millis(elapsed);
    let key_id = OrDash(key_id);
    let principal = caller.name();
    let peer = OrDash(caller.peer.as_ref());
    match result {
        Ok(_) => {
            let line = OkLine {
                protocol,
                method,
                key_id: &key_id,
                principal,
                millis: &millis,
                peer: &peer,
            };
            tracing::info!(
                target: "keyserver::access",
                protocol, method, key_id = %key_id, principal, peer = %peer, outcome = "ok",
                latency_ms,
                "{line}"
            );
        }
        Err(e) => {
            // The causes go to the log only (a client gets the error's own
            // text, which names no server path).
            let mut detail = e.to_string();
            let mut cause = std::error::Error::source(e);
            while let Some(c) = cause {
                detail.push_str(": ");
                detail.push_str(&c.to_string());
                cause = c.source();
            }
            tracing::warn!(
                target: "keyserver::access",
                protocol, method, key_id = %key_id, principal, peer = %peer, outcome = "error",
                code = e.code(), latency_ms,
                "{protocol} {method} {key_id} {principal} error {} ({detail}) \
                 {millis}ms from {peer}",
                e.code()
            )
        }
    }
}

thread_local! {
    /// The access line being written on this thread (no key is ever in it).
    static LINE: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// The message of a successful call's access line. Laid out, when (and
/// only if) the log writes it, in a reused per-thread buffer and handed to
/// the formatter as one piece: the formatter then checks and copies one
/// string, not each of the parts.
struct OkLine<'a> {
    protocol: &'a str,
    method: &'a str,
    key_id: &'a OrDash<&'a KeyId>,
    principal: &'a str,
    millis: &'a Millis,
    peer: &'a OrDash<&'a std::net::SocketAddr>,
}

impl std::fmt::Display for OkLine<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write;
        let OkLine {
            protocol,
            method,
            key_id,
            principal,
            millis,
            peer,
        } = self;
        let laid_out = LINE.try_with(|cell| {
            // Taken already (a log layer that logs while formatting): the
            // parts are written directly instead.
            let mut line = cell.try_borrow_mut().ok()?;
            line.clear();
            // Writing into a String cannot fail.
            let _ = write!(
                line,
                "{protocol} {method} {key_id} {principal} ok {millis}ms from {peer}"
            );
            Some(f.write_str(&line))
        });
        match laid_out {
            Ok(Some(written)) => written,
            _ => write!(
                f,
                "{protocol} {method} {key_id} {principal} ok {millis}ms from {peer}"
            ),
        }
    }
}

/// A latency in milliseconds with two decimals (`0.05`), formatted from
/// integers: float formatting was a visible share of an access line.
struct Millis(Duration);

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hundredths = (self.0.as_nanos() + 5_000) / 10_000;
        write!(f, "{}.{:02}", hundredths / 100, hundredths % 100)
    }
}

/// A value in an access-log line, `-` when there is none (formatted only
/// if the line is written).
struct OrDash<T>(Option<T>);

impl<T: std::fmt::Display> std::fmt::Display for OrDash<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(value) => value.fmt(f),
            None => f.write_str("-"),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The dispatcher against a mocked service: no sockets, no sleeps.

    use super::*;
    use keyserver_core::api::MockKeyService;
    use keyserver_core::api::Status;
    use keyserver_core::{async_trait, Dek, Kek, Strength, WrappedDek};

    fn status() -> Status {
        Status {
            keys: 1,
            version: "v".into(),
            suite: "s".into(),
            storage: "m".into(),
            strength: 128,
            kek_alg: "rsa".into(),
            fips: false,
        }
    }

    #[test]
    fn latencies_are_written_in_milliseconds_with_two_decimals() {
        for (nanos, text) in [
            (0, "0.00"),
            (4_999, "0.00"),
            (5_000, "0.01"),
            (123_456, "0.12"),
            (1_995_000, "2.00"),
            (12_345_678_901, "12345.68"),
        ] {
            assert_eq!(Millis(Duration::from_nanos(nanos)).to_string(), text);
        }
    }

    #[test]
    fn ok_lines_read_the_same_however_they_are_laid_out() {
        let id = KeyId::from_bytes([0xab; 32]);
        let peer: std::net::SocketAddr = "127.0.0.1:4242".parse().unwrap();
        let (key_id, no_key) = (OrDash(Some(&id)), OrDash(None));
        let peer = OrDash(Some(&peer));
        let millis = Millis(Duration::from_micros(1_234));
        let line = |key_id| OkLine {
            protocol: "jsonrpc",
            method: "get_wrapped",
            key_id,
            principal: "app",
            millis: &millis,
            peer: &peer,
        };
        let expected = format!("jsonrpc get_wrapped {id} app ok 1.23ms from 127.0.0.1:4242");
        assert_eq!(line(&key_id).to_string(), expected);
        assert_eq!(
            line(&no_key).to_string(),
            "jsonrpc get_wrapped - app ok 1.23ms from 127.0.0.1:4242"
        );
        // With the per-thread buffer taken (a log layer logging while it
        // formats), the parts are written directly: the same text.
        LINE.with_borrow_mut(|_taken| {
            assert_eq!(line(&key_id).to_string(), expected);
        });
    }

    #[tokio::test]
    async fn a_call_reaches_the_service_and_its_reply_comes_back() {
        let mut service = MockKeyService::new();
        let id = KeyId::from_bytes([3; 32]);
        service
            .expect_call_as()
            .withf(move |_, call| *call == Call::Contains(id))
            .times(1)
            .returning(|_, _| Ok(Reply::Bool(true)));
        let dispatch = Dispatch::new(Arc::new(service), Duration::from_secs(5));
        let reply = dispatch
            .run("test", Call::Contains(id), dispatch.deadline())
            .await;
        assert!(matches!(reply, Ok(Reply::Bool(true))));
    }

    #[tokio::test]
    async fn the_service_error_is_returned_as_it_is() {
        let mut service = MockKeyService::new();
        let id = KeyId::from_bytes([4; 32]);
        service
            .expect_call_as()
            .returning(move |_, _| Err(Error::NotFound { key_id: id }));
        let dispatch = Dispatch::new(Arc::new(service), Duration::from_secs(5));
        let err = dispatch
            .run("test", Call::GetWrapped(id), dispatch.deadline())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::NotFound { key_id } if key_id == id));
    }

    /// A call that never finishes is answered with code 7 at the time limit
    /// (Tokio's paused clock jumps to it: the test does not wait).
    #[tokio::test(start_paused = true)]
    async fn a_call_past_the_time_limit_is_an_internal_error() {
        struct Stuck;
        #[async_trait]
        impl KeyService for Stuck {
            async fn generate(&self, _: Option<Strength>) -> Result<Kek> {
                std::future::pending().await
            }
            async fn get_key(&self, _: &Kek) -> Result<Dek> {
                std::future::pending().await
            }
            async fn get_wrapped(&self, _: &KeyId) -> Result<WrappedDek> {
                std::future::pending().await
            }
            async fn contains(&self, _: &KeyId) -> Result<bool> {
                std::future::pending().await
            }
            async fn status(&self) -> Result<Status> {
                std::future::pending().await
            }
        }
        let dispatch = Dispatch::new(Arc::new(Stuck), Duration::from_secs(30));
        let before = tokio::time::Instant::now();
        let err = dispatch
            .run("test", Call::Status, dispatch.deadline())
            .await
            .unwrap_err();
        assert_eq!(err.code(), 7);
        assert_eq!(err.to_string(), "internal error: the request timed out");
        assert_eq!(before.elapsed(), Duration::from_secs(30));
        // A service that answers in time is not cut off.
        let mut quick = MockKeyService::new();
        quick
            .expect_call_as()
            .returning(|_, _| Ok(Reply::Status(status())));
        let dispatch = Dispatch::new(Arc::new(quick), Duration::from_secs(30));
        assert!(dispatch
            .run("test", Call::Status, dispatch.deadline())
            .await
            .is_ok());
    }
}
