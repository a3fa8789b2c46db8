//! The metrics layer: what the server did and holds, for `GET /metrics` in
//! the Prometheus (OpenMetrics) text format. No key id is ever a label: the
//! labels are a method name (from the method table, or `-` for a request
//! that named none) and a wire code.

use std::fmt;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::api::{Call, Caller, KeyService, Reply};
use crate::{Error, Result};

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

/// The metrics layer around `inner`: counts every call by method and
/// outcome, times it, and reads the inner service's gauges at each scrape.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use keyserver::backends::{MemoryStorage, RustCrypto};
/// use keyserver::policy::Metrics;
/// use keyserver::{KeyServer, KeyService};
///
/// let keys = Arc::new(KeyServer::new(RustCrypto::new(), MemoryStorage::new()));
/// let metered = Metrics::new(keys);
/// metered.status().await?;
/// let mut text = String::new();
/// metered.encode_metrics(&mut text);
/// assert!(text.contains(r#"keyserver_calls_total{method="status",code="0"} 1"#), "{text}");
/// # Ok::<(), keyserver::Error>(())
/// # }).unwrap();
/// ```
pub struct Metrics {
    inner: Arc<dyn KeyService>,
    registry: Registry,
    requests: Family<CallLabels, Counter>,
    latency: Family<MethodLabels, Histogram, fn() -> Histogram>,
    keys: Gauge,
    kek_pool: Gauge,
    generate_running: Gauge,
    generate_waiting: Gauge,
    records_unreadable: Counter,
    /// Serialises scrapes (each updates the gauges, then encodes).
    scrape: Mutex<()>,
    /// The success counter and latency histogram of each method of the
    /// table (by its index there), looked up once: a call then costs no
    /// label allocation, hashing or lock.
    ok: Vec<OnceLock<(Counter, Histogram)>>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// `inner`, measured.
    pub fn new(inner: Arc<dyn KeyService>) -> Self {
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
        let records_unreadable = Counter::default();
        registry.register(
            "records_unreadable",
            "Records a listing could not read (damaged, or of a newer format) and left out",
            records_unreadable.clone(),
        );
        Metrics {
            inner,
            records_unreadable,
            registry,
            requests,
            latency,
            keys,
            kek_pool,
            generate_running,
            generate_waiting,
            scrape: Mutex::new(()),
            ok: crate::api::METHODS
                .iter()
                .map(|_| OnceLock::new())
                .collect(),
        }
    }

    /// Counts a call of `method` answered with `code` after `seconds`
    /// (`None`: refused before it ran, not timed).
    fn call_done(&self, method: &str, code: i32, seconds: Option<f64>) {
        if let (0, Some(seconds)) = (code, seconds) {
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
        if let Some(seconds) = seconds {
            self.latency
                .get_or_create(&MethodLabels {
                    method: method.to_owned(),
                })
                .observe(seconds);
        }
    }
}

super::layer! {
    Metrics,

    async fn call_as(&self, caller: &Caller, call: Call) -> Result<Reply> {
        let start = Instant::now();
        let method = call.method().name;
        let result = self.inner.call_as(caller, call).await;
        self.call_done(
            method,
            result.as_ref().map_or_else(Error::code, |_| 0),
            Some(start.elapsed().as_secs_f64()),
        );
        result
    }
}

#[async_trait::async_trait]
impl super::Layer for Metrics {
    fn inner(&self) -> &dyn KeyService {
        &*self.inner
    }

    /// The calls, latencies and the inner service's gauges, read now.
    fn encode_metrics(&self, out: &mut String) {
        {
            let _one = self.scrape.lock().unwrap_or_else(PoisonError::into_inner);
            let gauges = self.inner.gauges();
            let set = |gauge: &Gauge, value: u64| {
                gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
            };
            set(&self.keys, gauges.keys);
            set(&self.kek_pool, gauges.kek_pool_ready);
            set(&self.generate_running, gauges.generate_running);
            set(&self.generate_waiting, gauges.generate_waiting);
            self.records_unreadable.inner().store(
                gauges.records_unreadable,
                std::sync::atomic::Ordering::Relaxed,
            );
            // Writing to a String cannot fail.
            let _ = prometheus_client::encoding::text::encode_registry(out, &self.registry);
        }
        self.inner.encode_metrics(out);
    }

    fn refused(&self, caller: &Caller, method: &str, error: &Error) {
        self.call_done(method, error.code(), None);
        self.inner.refused(caller, method, error);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_counted_by_method_and_code_whichever_way_they_are_looked_up() {
        let metrics = Metrics::new(Arc::new(crate::api::MockKeyService::new()));
        let table_name = crate::api::METHODS[2].name;
        let copied = String::from(table_name);
        for _ in 0..3 {
            metrics.call_done(table_name, 0, Some(0.001));
        }
        metrics.call_done(&copied, 0, Some(0.001));
        metrics.call_done(table_name, 4, Some(0.002));
        metrics.call_done("-", 0, Some(0.003));
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
