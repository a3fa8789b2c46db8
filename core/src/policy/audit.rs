//! The audit layer: one line in the audit log ([`AuditLog`]) for every call
//! that reaches it, whoever made it and however it ends.
//!
//! A state-changing call (`generate`, `rotate`, the lifecycle changes) runs
//! to its end in a task of its own, and its line is on disk (for a
//! `generate`, its new key's `begun` line; its own line is queued) before
//! that task finishes, so a client that goes away before the answer (a reset
//! socket, a time-out) cannot leave a key stored without its line, or
//! without its owner: the call is finished and recorded, and only the
//! answer is lost. While the log cannot be written every call is refused
//! (code 5); a call that ran while the log failed (a state change under
//! way) is recorded once it can be written again, marked `late`.
//!
//! Callers that did not authenticate (no credentials, credentials of
//! nobody) cannot fill the disk through the log: their lines are written
//! at most [`UNAUTHENTICATED_LINES_PER_SECOND`] a second (bursts of
//! [`UNAUTHENTICATED_BURST`]), and the next line written says how many were
//! left out (`suppressed`); a call of theirs that changed a key or handed
//! out a DEK is always written.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

/// Lines a second written for calls of callers that did not authenticate.
pub const UNAUTHENTICATED_LINES_PER_SECOND: f64 = 100.0;
/// How many such lines may be written at once.
pub const UNAUTHENTICATED_BURST: f64 = 1000.0;

/// The token bucket of lines of callers that did not authenticate.
struct Flood {
    tokens: f64,
    at: Instant,
    /// Lines left out since the last one written.
    suppressed: u64,
    /// Lines left out since start.
    total: u64,
}

/// Shared by the layer and the tasks of its state changes.
type FloodLimit = Arc<Mutex<Flood>>;

/// Whether the line of a call by `caller` is written, and with how many
/// left out before it: always for a caller that authenticated, or a call
/// that `ran` (a change made, a DEK handed out); within the bucket
/// otherwise.
fn admit(flood: &Mutex<Flood>, caller: &Caller, ran: bool) -> Option<u64> {
    if ran || caller.identity.is_authenticated() {
        return Some(0);
    }
    let mut f = flood.lock().unwrap_or_else(PoisonError::into_inner);
    let now = Instant::now();
    let refill = now.duration_since(f.at).as_secs_f64() * UNAUTHENTICATED_LINES_PER_SECOND;
    f.tokens = (f.tokens + refill).min(UNAUTHENTICATED_BURST);
    f.at = now;
    if f.tokens >= 1.0 {
        f.tokens -= 1.0;
        Some(std::mem::take(&mut f.suppressed))
    } else {
        f.suppressed += 1;
        f.total += 1;
        None
    }
}

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use super::audit_log::{AuditLog, Entry};
use crate::api::{Call, Caller, KeyService, Reply};
use crate::server::witness::{witnessed, Noted, Witness};
use crate::{Error, KeyId, Result};

/// The audit layer around `inner` (see the module docs). Without a log it
/// records nothing, but state changes still run to their end when their
/// caller goes away.
///
/// ```
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use keyserver::backends::{MemoryStorage, RustCrypto};
/// use keyserver::policy::{Audit, AuditConfig, AuditKey, AuditLog, DEFAULT_AUDIT_ROTATE};
/// use keyserver::{KeyServer, KeyService};
///
/// let dir = tempfile::tempdir().unwrap();
/// let key = AuditKey::new(vec![7; 32])?;
/// let log = AuditLog::open(AuditConfig {
///     path: dir.path().join("audit.log"),
///     key,
///     rotate_bytes: DEFAULT_AUDIT_ROTATE,
/// })?;
/// let keys = Arc::new(KeyServer::new(RustCrypto::new(), MemoryStorage::new()));
/// let audited = Audit::new(keys, Some(Arc::clone(&log)));
/// let kek = audited.generate(None).await?; // recorded as the principal "local"
/// # drop(kek);
/// # Ok::<(), keyserver::Error>(())
/// # }).unwrap();
/// ```
pub struct Audit {
    inner: Arc<dyn KeyService>,
    log: Option<Arc<AuditLog>>,
    metrics: AuditMetrics,
    flood: FloodLimit,
}

impl fmt::Debug for Audit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Audit")
            .field("log", &self.log)
            .finish_non_exhaustive()
    }
}

/// The audit log's own metrics.
struct AuditMetrics {
    registry: Registry,
    lines: Counter,
    lines_seen: AtomicU64,
    sync: Histogram,
    writable: Gauge,
    suppressed: Counter,
    suppressed_seen: AtomicU64,
    scrape: Mutex<()>,
}

impl AuditMetrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("keyserver");
        let lines = Counter::default();
        registry.register(
            "audit_lines",
            "Audit log lines written by this process",
            lines.clone(),
        );
        let sync = Histogram::new(exponential_buckets(0.00005, 4.0, 10));
        registry.register_with_unit(
            "audit_sync_duration",
            "Time of each audit log fsync",
            Unit::Seconds,
            sync.clone(),
        );
        let writable = Gauge::default();
        registry.register(
            "audit_writable",
            "1 while the audit log can be written (0: every call is refused)",
            writable.clone(),
        );
        let suppressed = Counter::default();
        registry.register(
            "audit_lines_suppressed",
            "Audit lines of callers that did not authenticate left out over their rate",
            suppressed.clone(),
        );
        AuditMetrics {
            registry,
            lines,
            lines_seen: AtomicU64::new(0),
            sync,
            writable,
            suppressed,
            suppressed_seen: AtomicU64::new(0),
            scrape: Mutex::new(()),
        }
    }

    fn encode(&self, log: &AuditLog, flood: &Mutex<Flood>, out: &mut String) {
        let _one = self.scrape.lock().unwrap_or_else(PoisonError::into_inner);
        let total = flood.lock().unwrap_or_else(PoisonError::into_inner).total;
        let seen = self.suppressed_seen.swap(total, Ordering::Relaxed);
        self.suppressed.inc_by(total.saturating_sub(seen));
        let stats = log.stats();
        let lines = stats.lines.load(Ordering::Relaxed);
        let seen = self.lines_seen.swap(lines, Ordering::Relaxed);
        self.lines.inc_by(lines.saturating_sub(seen));
        let syncs = std::mem::take(
            &mut *stats
                .recent_syncs
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for s in syncs {
            self.sync.observe(s);
        }
        self.writable.set(i64::from(log.is_healthy()));
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode_registry(out, &self.registry);
    }
}

/// The entry of a call by `caller` of `method`.
fn entry(
    caller: &Caller,
    method: &str,
    key_id: Option<KeyId>,
    new_key_id: Option<KeyId>,
    code: i32,
    start: Instant,
) -> Entry {
    Entry {
        principal: caller.name().to_owned(),
        peer: caller.peer,
        tls_subject: caller.tls_subject.clone(),
        protocol: caller.protocol,
        method: method.to_owned(),
        key_id,
        new_key_id,
        code,
        latency_ms: start.elapsed().as_secs_f64() * 1000.0,
        suppressed: 0,
        begun: false,
    }
}

impl Audit {
    /// `inner`, with every call recorded in `log` (`None`: none).
    pub fn new(inner: Arc<dyn KeyService>, log: Option<Arc<AuditLog>>) -> Self {
        Audit {
            inner,
            log,
            metrics: AuditMetrics::new(),
            flood: Arc::new(Mutex::new(Flood {
                tokens: UNAUTHENTICATED_BURST,
                at: Instant::now(),
                suppressed: 0,
                total: 0,
            })),
        }
    }

    /// Runs `call` and records it: the whole of a call's work, moved into
    /// its own task for a state change.
    ///
    /// A `generate` has a [`Witness`]: the new key's `begun` line is
    /// written durably while the storage writes the key (two syncs at
    /// once), and the call is answered only once both are on disk; its own
    /// line then follows without a sync of its own (on disk within a
    /// second; never refused as busy; kept through an outage). Any other
    /// state change (`rotate` included), and `get_key`, waits for its own
    /// line's sync.
    async fn run(
        inner: &dyn KeyService,
        log: Option<&Arc<AuditLog>>,
        flood: &Mutex<Flood>,
        caller: &Caller,
        call: Call,
    ) -> Result<Reply> {
        let start = Instant::now();
        let method = call.method();
        let mut key_id = call.key_id();
        // generate only: a rotate's own line also records the old key's
        // deactivation, which comes after the new key is stored, so it is
        // synced itself (and its begun line would sit inside the key's
        // change lock).
        let witness = match log {
            Some(log) if method.name == "generate" => Some(Arc::new(Begun {
                log: Arc::clone(log),
                line: entry(caller, method.name, key_id, None, 0, start),
                told: AtomicBool::new(false),
            })),
            _ => None,
        };
        let result = match &witness {
            Some(w) => {
                let told: Arc<dyn Witness> = Arc::clone(w) as _;
                witnessed(told, inner.call_as(caller, call)).await
            }
            None => inner.call_as(caller, call).await,
        };
        let Some(log) = log else {
            return result;
        };
        // generate: the new key; rotate: the key rotated, and the new one.
        let mut new_key_id = None;
        if let Ok(Reply::Kek(kek)) = &result {
            if key_id.is_some() {
                new_key_id = Some(kek.id());
            } else {
                key_id = Some(kek.id());
            }
        }
        let code = result.as_ref().map_or_else(Error::code, |_| 0);
        let ran = code == 0 && method.audited_durably();
        let Some(suppressed) = admit(flood, caller, ran) else {
            return result;
        };
        let mut line = entry(caller, method.name, key_id, new_key_id, code, start);
        line.suppressed = suppressed;
        // A state-changing call (and get_key) is answered once its line is
        // on disk, or its new key's begun line; if that cannot be written,
        // the caller hears so (and a new key's KEK is dropped: nothing was
        // encrypted under it yet).
        let told = witness.is_some_and(|w| w.told.load(Ordering::Acquire));
        if told {
            // The key's begun line is on disk: this one is queued (never
            // refused as busy, kept through an outage), not synced.
            log.record_kept(line).await?;
        } else {
            log.record(line, method.audited_durably()).await?;
        }
        result
    }
}

/// The audit layer's [`Witness`]: the `begun` line of a key being stored.
struct Begun {
    log: Arc<AuditLog>,
    /// The call's line so far (who, what, which key it names).
    line: Entry,
    /// A begun line was asked for.
    told: AtomicBool,
}

impl Witness for Begun {
    fn storing(&self, key_id: KeyId) -> Noted {
        self.told.store(true, Ordering::Release);
        let mut line = self.line.clone();
        // generate: the new key; rotate: the key rotated, and the new one.
        if line.key_id.is_some() {
            line.new_key_id = Some(key_id);
        } else {
            line.key_id = Some(key_id);
        }
        line.begun = true;
        let log = Arc::clone(&self.log);
        Box::pin(async move { log.record(line, true).await })
    }
}

super::layer! {
    Audit,

    async fn call_as(&self, caller: &Caller, call: Call) -> Result<Reply> {
        if let Some(log) = &self.log {
            if let Err(e) = log.check() {
                // Refused without running: a line is tried all the same
                // (the log may be back by then).
                if let Some(suppressed) = admit(&self.flood, caller, false) {
                    let mut line = entry(caller, call.method().name, call.key_id(), None, e.code(), Instant::now());
                    line.suppressed = suppressed;
                    let log = Arc::clone(log);
                    spawn_or_drop(async move {
                        let _ = log.record(line, false).await;
                    });
                }
                return Err(e);
            }
        }
        if !call.method().changes_state() {
            return Audit::run(&*self.inner, self.log.as_ref(), &self.flood, caller, call).await;
        }
        // A state change runs to its end, and is recorded, even if this
        // future is dropped (the client went away, the request timed out).
        let (inner, log, caller) = (Arc::clone(&self.inner), self.log.clone(), caller.clone());
        let flood = Arc::clone(&self.flood);
        let work =
            async move { Audit::run(&*inner, log.as_ref(), &flood, &caller, call).await };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => runtime.spawn(work).await.unwrap_or_else(|e| {
                Err(Error::Internal(
                    format!("a state change stopped before its end: {e}").into(),
                ))
            }),
            Err(_) => work.await,
        }
    }
}

#[async_trait::async_trait]
impl super::Layer for Audit {
    fn inner(&self) -> &dyn KeyService {
        &*self.inner
    }

    fn encode_metrics(&self, out: &mut String) {
        if let Some(log) = &self.log {
            self.metrics.encode(log, &self.flood, out);
        }
        self.inner.encode_metrics(out);
    }

    fn refused(&self, caller: &Caller, method: &str, error: &Error) {
        let admitted = self
            .log
            .as_ref()
            .and_then(|log| Some((log, admit(&self.flood, caller, false)?)));
        if let Some((log, suppressed)) = admitted {
            let mut line = entry(caller, method, None, None, error.code(), Instant::now());
            line.suppressed = suppressed;
            let log = Arc::clone(log);
            // Not awaited beyond the hand-over: the writer owns it from here.
            spawn_or_drop(async move {
                let _ = log.record(line, false).await;
            });
        }
        self.inner.refused(caller, method, error);
    }

    async fn ready(&self) -> Result<()> {
        if let Some(log) = &self.log {
            log.check()?;
        }
        self.inner.ready().await
    }

    /// The server's own work, one line per key destroyed (method
    /// `destroyed`), each on disk before the sweep returns.
    async fn sweep(&self, caller: &Caller) -> Result<Vec<KeyId>> {
        let start = Instant::now();
        let destroyed = self.inner.sweep(caller).await;
        if let Some(log) = &self.log {
            match &destroyed {
                Ok(ids) => {
                    for id in ids {
                        log.record(entry(caller, "destroyed", Some(*id), None, 0, start), true)
                            .await?;
                    }
                }
                Err(e) => {
                    log.record(entry(caller, "sweep", None, None, e.code(), start), true)
                        .await?;
                }
            }
        }
        destroyed
    }
}

/// Runs `work` on the current runtime, or not at all outside one.
fn spawn_or_drop(work: impl std::future::Future<Output = ()> + Send + 'static) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(work);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Identity;
    use crate::policy::{AuditConfig, AuditKey, DEFAULT_AUDIT_ROTATE};
    use crate::test_backends::{MemoryStorage, RustCrypto};
    use crate::KeyServer;

    /// An audit log in `dir`, and the audit layer over a key server that
    /// writes to it.
    fn audited(dir: &std::path::Path) -> (std::path::PathBuf, Arc<AuditLog>, Audit) {
        let path = dir.join("audit.log");
        let log = AuditLog::open(AuditConfig {
            path: path.clone(),
            key: AuditKey::new(vec![7; 32]).unwrap(),
            rotate_bytes: DEFAULT_AUDIT_ROTATE,
        })
        .unwrap();
        let keys = Arc::new(KeyServer::new(RustCrypto::new(), MemoryStorage::new()));
        let audit = Audit::new(keys, Some(Arc::clone(&log)));
        (path, log, audit)
    }

    /// A `generate` is answered once its key's begun line is on disk (in
    /// the file the moment the answer comes, before the log is closed), and
    /// its own line with the outcome follows; a `rotate` (whose line also
    /// records the old key's deactivation) has no begun line: its own line
    /// is in the file when it is answered, naming both keys.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_new_key_is_answered_once_its_begun_line_is_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let (path, log, audit) = audited(dir.path());
        let app = Caller::with_identity(Identity::Principal("app".into()));
        let read = || -> Vec<serde_json::Value> {
            std::fs::read_to_string(&path)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        };
        let Reply::Kek(kek) = audit
            .call_as(&app, Call::Generate(None, None))
            .await
            .unwrap()
        else {
            panic!("generate gives a KEK")
        };
        let id = kek.id().to_string();
        let now = read();
        let begun: Vec<_> = now.iter().filter(|l| l["begun"] == true).collect();
        assert_eq!(begun.len(), 1, "{now:?}");
        assert_eq!(begun[0]["key_id"], id.as_str());
        assert_eq!(begun[0]["method"], "generate");
        assert_eq!(begun[0]["principal"], "app");
        assert!(begun[0]["code"].is_null());
        let Reply::Kek(new) = audit
            .call_as(&app, Call::Rotate(kek.clone(), None))
            .await
            .unwrap()
        else {
            panic!("rotate gives a KEK")
        };
        let now = read();
        let last = now.last().unwrap();
        assert_eq!(last["method"], "rotate");
        assert_eq!(last["code"], 0);
        assert_eq!(last["key_id"], id.as_str());
        assert_eq!(last["new_key_id"], new.id().to_string().as_str());
        log.close();
        let all = read();
        let calls: Vec<_> = all.iter().filter(|l| l["event"].is_null()).collect();
        assert_eq!(calls.len(), 3, "{calls:?}");
        assert_eq!(calls[1]["method"], "generate");
        assert_eq!(calls[1]["code"], 0);
        assert_eq!(calls[1]["key_id"], id.as_str());
        assert_eq!(calls.iter().filter(|l| l["begun"] == true).count(), 1);
    }

    /// A flood of calls by callers that did not authenticate writes at most
    /// the burst and the rate of lines; the next line says how many were
    /// left out, the metric counts them, and a principal's calls are all
    /// written.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unauthenticated_callers_cannot_flood_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let (path, log, audit) = audited(dir.path());
        let nobody = Caller::with_identity(Identity::BadCredentials);
        let app = Caller::with_identity(Identity::Principal("app".into()));
        let start = Instant::now();
        for _ in 0..3000 {
            let _ = audit.call_as(&nobody, Call::Status).await;
        }
        let took = start.elapsed().as_secs_f64();
        for _ in 0..5 {
            audit.call_as(&app, Call::Status).await.unwrap();
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let _ = audit.call_as(&nobody, Call::Status).await;
        let mut metrics = String::new();
        audit.encode_metrics(&mut metrics);
        log.close();
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let of = |who: &str| lines.iter().filter(|l| l["principal"] == who).count();
        let allowed = UNAUTHENTICATED_BURST + took * UNAUTHENTICATED_LINES_PER_SECOND + 1.0;
        let written = of("(bad credentials)");
        assert!(
            (1000..=allowed as usize + 1).contains(&written),
            "{written} lines of 3001 (at most {allowed})"
        );
        assert_eq!(of("app"), 5, "a principal's calls are all written");
        let suppressed: u64 = lines.iter().filter_map(|l| l["suppressed"].as_u64()).sum();
        assert_eq!(suppressed as usize + written, 3001, "every call counted");
        assert!(
            metrics.contains(&format!(
                "keyserver_audit_lines_suppressed_total {suppressed}"
            )),
            "{metrics}"
        );
    }
}
