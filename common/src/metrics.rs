//! Prometheus metrics: the request metrics every function gets, and the counters functions add.
//!
//! One [`Metrics`] handle per process, cloned into every function's state. Request metrics are
//! labelled by the route *template* (`/webhooks/{provider}`), never the raw path, so a scanner
//! probing random URLs cannot grow the number of series without bound.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Content type of [`Metrics::encode`]'s output (OpenMetrics text, which Prometheus scrapes).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Route label for requests that matched no route (404s), so unknown paths share one series.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Latency buckets in seconds: webhook handling is milliseconds, archiving can take minutes.
const LATENCY_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Labels of the HTTP request metrics.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    status: u16,
}

/// The process-wide metrics registry. Cheap to clone; clones share the same series.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RequestLabels, Histogram, fn() -> Histogram>,
    // Kept so that registering the same counter twice (two routers sharing one handle in the
    // all-in-one binary, or tests) hands back the same family instead of a duplicate series.
    counters: Mutex<HashMap<String, CounterFamily>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// A poisoned lock only means another thread panicked mid-update of a counter map; the data is
/// still usable, and losing /metrics over it would hide the very incident.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Metrics {
    /// A fresh registry with the HTTP request metrics registered.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RequestLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(LATENCY_BUCKETS)) as fn() -> Histogram,
        );
        registry.register(
            "tekflux_http_requests",
            "HTTP requests answered, by route template, method and status",
            requests.clone(),
        );
        registry.register(
            "tekflux_http_request_duration_seconds",
            "Time to answer HTTP requests, by route template, method and status",
            latency.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                registry: Mutex::new(registry),
                requests,
                latency,
                counters: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Records one answered HTTP request.
    ///
    /// `route` must be a route template or [`UNMATCHED_ROUTE`], never a raw path.
    pub fn observe_request(&self, route: &str, method: &http::Method, status: u16, took: Duration) {
        let labels = RequestLabels {
            route: route.to_owned(),
            method: method_label(method).to_owned(),
            status,
        };
        self.inner.requests.get_or_create(&labels).inc();
        self.inner
            .latency
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// A counter with the given label names, registered once under `name`.
    ///
    /// `name` may end in `_total` or not; the OpenMetrics encoder appends `_total` itself, so the
    /// suffix is dropped here to avoid `_total_total`. Registering the same name again returns the
    /// family registered first.
    pub fn counter_family(&self, name: &str, help: &str, label_names: &[&str]) -> CounterFamily {
        let base = name.strip_suffix("_total").unwrap_or(name);
        let mut counters = lock(&self.inner.counters);
        if let Some(existing) = counters.get(base) {
            return existing.clone();
        }
        let family = CounterFamily {
            label_names: label_names.iter().map(|n| (*n).to_owned()).collect(),
            family: Family::default(),
        };
        lock(&self.inner.registry).register(base, help, family.family.clone());
        counters.insert(base.to_owned(), family.clone());
        family
    }

    /// Registers any prometheus-client metric (typed label sets, gauges, histograms).
    ///
    /// Keep a clone of `metric` to update it; clones share their values. Unlike
    /// [`Metrics::counter_family`], registering the same name twice yields two series.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        lock(&self.inner.registry).register(name, help, metric);
    }

    /// The registry in OpenMetrics text format (see [`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = lock(&self.inner.registry);
        // Writing into a String cannot fail; an encoder error would be a bug in a metric's
        // label encoding, and a partial scrape is still better than none.
        if let Err(err) = prometheus_client::encoding::text::encode(&mut out, &registry) {
            tracing::error!(error = %err, "encoding metrics failed");
        }
        out
    }
}

/// Known methods keep their name; anything else shares one label value so that made-up methods
/// cannot create series.
fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// A counter family registered by a function, with label names fixed at registration.
#[derive(Clone)]
pub struct CounterFamily {
    label_names: Arc<[String]>,
    family: Family<Vec<(String, String)>, Counter>,
}

impl std::fmt::Debug for CounterFamily {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CounterFamily")
            .field("label_names", &self.label_names)
            .finish_non_exhaustive()
    }
}

impl CounterFamily {
    /// Adds one to the series with these label values, given in the order of the label names.
    ///
    /// Missing values are recorded as empty strings and extra ones are ignored, so a mistake
    /// shows up in the scrape instead of panicking a request.
    pub fn inc(&self, values: &[&str]) {
        self.inc_by(values, 1);
    }

    /// Adds `n` to the series with these label values (see [`CounterFamily::inc`]).
    pub fn inc_by(&self, values: &[&str], n: u64) {
        let labels: Vec<(String, String)> = self
            .label_names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                (
                    name.clone(),
                    values.get(i).copied().unwrap_or("").to_owned(),
                )
            })
            .collect();
        self.family.get_or_create(&labels).inc_by(n);
    }

    /// The current value of the series with these label values (for tests and diagnostics).
    pub fn get(&self, values: &[&str]) -> u64 {
        let labels: Vec<(String, String)> = self
            .label_names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                (
                    name.clone(),
                    values.get(i).copied().unwrap_or("").to_owned(),
                )
            })
            .collect();
        self.family.get_or_create(&labels).get()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn request_metrics_are_labelled_by_route_method_and_status() {
        let metrics = Metrics::new();
        metrics.observe_request(
            "/hooks/{provider}",
            &http::Method::POST,
            202,
            Duration::from_millis(3),
        );
        let text = metrics.encode();
        assert!(
            text.contains(
                r#"tekflux_http_requests_total{route="/hooks/{provider}",method="POST",status="202"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains("tekflux_http_request_duration_seconds_count{"),
            "{text}"
        );
    }

    #[test]
    fn counter_family_drops_total_suffix_and_is_registered_once() {
        let metrics = Metrics::new();
        let a = metrics.counter_family("tekflux_runs_created_total", "Runs", &["provider"]);
        let b = metrics.counter_family("tekflux_runs_created_total", "Runs", &["provider"]);
        a.inc(&["github"]);
        b.inc(&["github"]);
        assert_eq!(a.get(&["github"]), 2);
        let text = metrics.encode();
        assert!(
            text.contains(r#"tekflux_runs_created_total{provider="github"} 2"#),
            "{text}"
        );
        assert!(!text.contains("_total_total"), "{text}");
        assert_eq!(
            text.matches("# TYPE tekflux_runs_created counter").count(),
            1
        );
    }

    #[test]
    fn unknown_methods_share_one_label() {
        let method = http::Method::from_bytes(b"PROBE").unwrap();
        assert_eq!(method_label(&method), "other");
    }
}
