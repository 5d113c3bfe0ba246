//! Whether the function is ready for traffic, and the state the scaffolding routes share.

use crate::config::ServerSettings;
use crate::metrics::Metrics;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether the function is ready for traffic; `/readyz` answers 503 until [`Readiness::set_ready`].
///
/// Cheap to clone; clones share the flag.
///
/// Ready means the process has loaded its config and built its clients; `/readyz` does not call
/// the cluster or the bucket, because a probe that did would take every pod out of service during
/// a short outage, leaving the Broker's retries nowhere to go. What the process cannot do with
/// the configuration it has (no cluster, no bucket) is said once at startup and listed in
/// `/readyz`'s `limited`.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    ready: Arc<AtomicBool>,
    limits: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Readiness {
    /// A flag that starts not ready.
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks the function ready, once its Kubernetes and S3 clients are built.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Marks the function not ready again, e.g. while it drains.
    pub fn set_not_ready(&self) {
        self.ready.store(false, Ordering::Release);
    }

    /// True after [`Readiness::set_ready`].
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Records, and logs, something the process cannot do with the configuration it has
    /// (`function` is its name, `what` says what is missing and what is answered instead).
    pub fn limit(&self, function: &str, what: &str) {
        tracing::warn!(function, "{what}");
        self.limits
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(format!("{function}: {what}"));
    }

    /// What [`Readiness::limit`] recorded, in order.
    pub fn limits(&self) -> Vec<String> {
        self.limits
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// What the scaffolding needs: the metrics registry, the readiness flag and the server settings.
#[derive(Debug, Clone)]
pub struct ServerState {
    /// The process-wide metrics registry, also handed to the function for its own counters.
    pub metrics: Metrics,
    /// The readiness flag that `main` sets once the clients are built.
    pub readiness: Readiness,
    /// Body limit, timeouts and port.
    pub settings: ServerSettings,
}

impl ServerState {
    /// Fresh metrics, not ready yet.
    pub fn new(settings: ServerSettings) -> Self {
        Self {
            metrics: Metrics::new(),
            readiness: Readiness::new(),
            settings,
        }
    }
}
