//! `GET /metrics`: what the server did and holds, in the Prometheus
//! (OpenMetrics) text format. No key id is ever a label: the labels are a
//! method name (from the method table, or `-` for a request that named
//! none) and a wire code.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    method: String,
    code: i32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: String,
}

fn latency_histogram() -> Histogram {
    // 100 us to about 105 s.
    Histogram::new(exponential_buckets(0.0001, 4.0, 11))
}

/// The server's metrics and the sources of its gauges.
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<CallLabels, Counter>,
    latency: Family<MethodLabels, Histogram, fn() -> Histogram>,
    keys: Gauge,
    kek_pool: Gauge,
    generate_running: Gauge,
    generate_waiting: Gauge,
    connections: Gauge,
    request_bytes: Gauge,
    audit_lines: Counter,
    audit_lines_seen: AtomicU64,
    audit_sync: Histogram,
    audit_healthy: Gauge,
    /// Serialises scrapes (each updates the gauges, then encodes).
    scrape: Mutex<()>,
    /// The success counter and latency histogram of each method of the
    /// table (by its index there), looked up once: a call then costs no
    /// label allocation, hashing or lock.
    ok: Vec<OnceLock<(Counter, Histogram)>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// Where the gauges are read at each scrape.
pub(crate) struct Sources {
    pub(crate) dispatch: Arc<super::dispatch::Dispatch>,
    pub(crate) connections: super::conn::Limit,
    pub(crate) audit: Option<Arc<super::audit::AuditLog>>,
}

impl Metrics {
    pub(crate) fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("keyserver");
        let requests = Family::<CallLabels, Counter>::default();
        registry.register(
            "calls",
            "Calls answered, by method and outcome code (0: success)",
            requests.clone(),
        );
        let latency: Family<MethodLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "call_duration",
            "Time to answer a call, by method",
            Unit::Seconds,
            latency.clone(),
        );
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let keys = gauge(&mut registry, "keys_stored", "Keys in storage");
        let kek_pool = gauge(
            &mut registry,
            "kek_pool_ready",
            "Pre-generated KEKs ready in the pool",
        );
        let generate_running = gauge(
            &mut registry,
            "generate_running",
            "Key generations running on the workers",
        );
        let generate_waiting = gauge(
            &mut registry,
            "generate_waiting",
            "generate calls queued for a worker",
        );
        let connections = gauge(&mut registry, "connections_open", "Connections open");
        let request_bytes = gauge(
            &mut registry,
            "request_bytes_held",
            "Bytes of request bodies held in memory",
        );
        let audit_lines = Counter::default();
        registry.register(
            "audit_lines",
            "Audit log lines written by this process",
            audit_lines.clone(),
        );
        let audit_sync = Histogram::new(exponential_buckets(0.00005, 4.0, 10));
        registry.register_with_unit(
            "audit_sync_duration",
            "Time of each audit log fsync",
            Unit::Seconds,
            audit_sync.clone(),
        );
        let audit_healthy = gauge(
            &mut registry,
            "audit_writable",
            "1 while the audit log can be written (0: every call is refused)",
        );
        Arc::new(Metrics {
            registry,
            requests,
            latency,
            keys,
            kek_pool,
            generate_running,
            generate_waiting,
            connections,
            request_bytes,
            audit_lines,
            audit_lines_seen: AtomicU64::new(0),
            audit_sync,
            audit_healthy,
            scrape: Mutex::new(()),
            ok: crate::api::METHODS
                .iter()
                .map(|_| OnceLock::new())
                .collect(),
        })
    }

    /// Counts a call of `method` answered with `code` after `seconds`.
    pub(crate) fn call(&self, method: &str, code: i32, seconds: f64) {
        if code == 0 {
            let index = crate::api::METHODS.iter().position(|m| {
                // The name is nearly always the table's own string.
                std::ptr::eq(m.name, method) || m.name == method
            });
            if let Some(handles) = index.and_then(|i| self.ok.get(i)) {
                let (count, latency) = handles.get_or_init(|| {
                    (
                        self.requests
                            .get_or_create(&CallLabels {
                                method: method.to_owned(),
                                code: 0,
                            })
                            .clone(),
                        self.latency
                            .get_or_create(&MethodLabels {
                                method: method.to_owned(),
                            })
                            .clone(),
                    )
                });
                count.inc();
                latency.observe(seconds);
                return;
            }
        }
        self.requests
            .get_or_create(&CallLabels {
                method: method.to_owned(),
                code,
            })
            .inc();
        self.latency
            .get_or_create(&MethodLabels {
                method: method.to_owned(),
            })
            .observe(seconds);
    }

    /// The text of a scrape: the gauges read now.
    pub(crate) fn render(&self, sources: &Sources) -> String {
        let _one = self.scrape.lock().unwrap_or_else(PoisonError::into_inner);
        let gauges = sources.dispatch.service().gauges();
        let set = |gauge: &Gauge, value: u64| {
            gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
        };
        set(&self.keys, gauges.keys);
        set(&self.kek_pool, gauges.kek_pool_ready);
        set(&self.generate_running, gauges.generate_running);
        set(&self.generate_waiting, gauges.generate_waiting);
        set(&self.connections, sources.connections.open() as u64);
        set(
            &self.request_bytes,
            sources.dispatch.request_bytes_held() as u64,
        );
        if let Some(audit) = &sources.audit {
            let stats = audit.stats();
            let lines = stats.lines.load(Ordering::Relaxed);
            let seen = self.audit_lines_seen.swap(lines, Ordering::Relaxed);
            self.audit_lines.inc_by(lines.saturating_sub(seen));
            let syncs = std::mem::take(
                &mut *stats
                    .recent_syncs
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner),
            );
            for s in syncs {
                self.audit_sync.observe(s);
            }
            set(&self.audit_healthy, u64::from(audit.is_healthy()));
        }
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_counted_by_method_and_code_whichever_way_they_are_looked_up() {
        let metrics = Metrics::new();
        let table_name = crate::api::METHODS[2].name;
        let copied = String::from(table_name);
        for _ in 0..3 {
            metrics.call(table_name, 0, 0.001);
        }
        metrics.call(&copied, 0, 0.001);
        metrics.call(table_name, 4, 0.002);
        metrics.call("-", 0, 0.003);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &metrics.registry).unwrap();
        let line = |prefix: &str| {
            text.lines()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("no {prefix} in {text}"))
                .to_owned()
        };
        assert_eq!(
            line(&format!(
                "keyserver_calls_total{{method=\"{table_name}\",code=\"0\"}}"
            ))
            .rsplit(' ')
            .next(),
            Some("4")
        );
        assert_eq!(
            line(&format!(
                "keyserver_calls_total{{method=\"{table_name}\",code=\"4\"}}"
            ))
            .rsplit(' ')
            .next(),
            Some("1")
        );
        assert_eq!(
            line("keyserver_calls_total{method=\"-\",code=\"0\"}")
                .rsplit(' ')
                .next(),
            Some("1")
        );
        assert_eq!(
            line(&format!(
                "keyserver_call_duration_seconds_count{{method=\"{table_name}\"}}"
            ))
            .rsplit(' ')
            .next(),
            Some("5")
        );
        // A method never called has no series.
        let unused = crate::api::METHODS[0].name;
        assert!(!text.contains(&format!("method=\"{unused}\"")), "{text}");
    }
}
