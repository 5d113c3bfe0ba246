//! The facts that follow a change through the whole chain of events.

use axum::http::HeaderMap;
use cloudevents::event::ExtensionValue;
use cloudevents::{Event, EventBuilderV10};

/// Extension carrying the delivery id of the webhook or event that started the chain.
pub const EXT_DELIVERY: &str = "tekfluxdelivery";
/// Extension carrying the commit sha the work is about.
pub const EXT_SHA: &str = "tekfluxsha";
/// Extension carrying the repository clone URL.
pub const EXT_REPO: &str = "tekfluxrepo";
/// Extension carrying the Kubernetes namespace the work runs in.
pub const EXT_NAMESPACE: &str = "tekfluxnamespace";
/// W3C trace context, as the CloudEvents distributed-tracing extension names it.
pub const EXT_TRACEPARENT: &str = "traceparent";
/// W3C vendor trace state, as the CloudEvents distributed-tracing extension names it.
pub const EXT_TRACESTATE: &str = "tracestate";

/// Correlation facts read from an input event and stamped on its replies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Correlation {
    /// Delivery id of the webhook or event that started the chain (`tekfluxdelivery`).
    pub delivery_id: Option<String>,
    /// Commit sha (`tekfluxsha`).
    pub sha: Option<String>,
    /// Repository clone URL (`tekfluxrepo`).
    pub repo: Option<String>,
    /// Kubernetes namespace (`tekfluxnamespace`).
    pub namespace: Option<String>,
    /// W3C `traceparent`, propagated unchanged.
    pub traceparent: Option<String>,
    /// W3C `tracestate`, propagated unchanged (only together with its `traceparent`).
    pub tracestate: Option<String>,
}

impl Correlation {
    /// Reads the correlation extensions of `event`; missing ones stay `None`.
    pub fn from_event(event: &Event) -> Self {
        let ext = |name: &str| event.extension(name).map(extension_string);
        Correlation {
            delivery_id: ext(EXT_DELIVERY),
            sha: ext(EXT_SHA),
            repo: ext(EXT_REPO),
            namespace: ext(EXT_NAMESPACE),
            traceparent: ext(EXT_TRACEPARENT),
            tracestate: ext(EXT_TRACESTATE),
        }
    }

    /// Like [`Correlation::from_event`], but takes the trace context from the plain W3C HTTP
    /// headers when the event carries none: Knative's broker sets those headers, and a sender
    /// may not repeat them as extensions.
    pub fn from_request(event: &Event, headers: &HeaderMap) -> Self {
        let mut correlation = Self::from_event(event);
        if correlation.traceparent.is_none() {
            let header = |name: &str| {
                headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .map(str::to_owned)
            };
            correlation.traceparent = header(EXT_TRACEPARENT);
            // A tracestate without its traceparent means nothing, so they travel as a pair.
            correlation.tracestate = correlation
                .traceparent
                .as_ref()
                .and_then(|_| header(EXT_TRACESTATE));
        }
        correlation
    }

    /// Sets the delivery id.
    pub fn with_delivery_id(mut self, delivery_id: impl Into<String>) -> Self {
        self.delivery_id = Some(delivery_id.into());
        self
    }

    /// Sets the commit sha.
    pub fn with_sha(mut self, sha: impl Into<String>) -> Self {
        self.sha = Some(sha.into());
        self
    }

    /// Sets the repository clone URL.
    pub fn with_repo(mut self, repo: impl Into<String>) -> Self {
        self.repo = Some(repo.into());
        self
    }

    /// Sets the Kubernetes namespace.
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// Writes the known facts as extensions of `event`; extensions already there are
    /// overwritten only by facts that are known.
    pub fn stamp(&self, event: &mut Event) {
        for (name, value) in self.pairs() {
            event.set_extension(name, value);
        }
    }

    /// Writes the known facts as extensions on a builder.
    pub fn stamp_builder(&self, mut builder: EventBuilderV10) -> EventBuilderV10 {
        for (name, value) in self.pairs() {
            builder = builder.extension(name, value);
        }
        builder
    }

    fn pairs(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            (EXT_DELIVERY, &self.delivery_id),
            (EXT_SHA, &self.sha),
            (EXT_REPO, &self.repo),
            (EXT_NAMESPACE, &self.namespace),
            (EXT_TRACEPARENT, &self.traceparent),
            (EXT_TRACESTATE, &self.tracestate),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.as_deref().map(|v| (name, v)))
    }
}

fn extension_string(value: &ExtensionValue) -> String {
    match value {
        ExtensionValue::String(s) => s.clone(),
        other => other.to_string(),
    }
}
