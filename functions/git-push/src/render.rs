//! `tekflux render`: the plan of a payload file, shown as a dry run without a cluster shows it.

use axum::http::{HeaderMap, HeaderValue};
use serde_json::{Value, json};
use tekflux_common::Result;
use tekflux_common::commit_status::{RetryPolicy, StatusReporter};
use tekflux_common::config::Config;
use tekflux_common::metrics::Metrics;

use crate::error::DeliveryError;
use crate::plan::Planner;
use crate::providers::{self, Webhook};
use crate::push::Provider;
use crate::routing::RoutingTable;
use crate::run::RunContext;

/// What `tekflux render` shows for a payload file: the runs the webhook would create and why
/// each rule matched or not, computed offline. Signatures are not checked (the file is the
/// user's own) and nothing touches a cluster.
///
/// `event` and `delivery` stand in for the provider's event and delivery headers; by default the
/// provider's push event and a delivery id of `render`.
pub async fn render(
    config: Config,
    provider: Provider,
    event: Option<&str>,
    delivery: Option<&str>,
    body: &[u8],
) -> Result<Value> {
    let routing = RoutingTable::compile(&config).map_err(DeliveryError::InvalidRules)?;
    // Read for the rules' commit-status contexts only; nothing is reported.
    let status = StatusReporter::with_policy(&config, &Metrics::new(), RetryPolicy::default());
    let context = RunContext::for_config(&config);
    let headers = render_headers(provider, event, delivery.unwrap_or("render"))?;
    match providers::parse(provider, &headers, body)? {
        Webhook::Pushes(pushes) => {
            let planner = Planner {
                routing: &routing,
                config: &config,
                status: &status,
                context: &context,
            };
            let summary = planner.plan(&pushes)?.summary();
            Ok(serde_json::to_value(&summary).map_err(DeliveryError::Summary)?)
        }
        Webhook::Ping(_) => Ok(json!({ "ping": "pong" })),
        Webhook::Ignored { event, reason } => Ok(json!({ "ignored": event, "reason": reason })),
    }
}

/// The event and delivery headers a provider would send with a push (its own, from the provider
/// table).
fn render_headers(
    provider: Provider,
    event: Option<&str>,
    delivery: &str,
) -> Result<HeaderMap, DeliveryError> {
    let spec = provider.headers();
    let value = |text: &str| {
        HeaderValue::from_str(text).map_err(|_| DeliveryError::HeaderValue(text.to_owned()))
    };
    let mut headers = HeaderMap::new();
    if let Some(header) = spec.event.first() {
        headers.insert(header.name, value(event.unwrap_or(spec.push_event))?);
    }
    if let Some(header) = spec.delivery.first() {
        headers.insert(header.name, value(delivery)?);
    }
    Ok(headers)
}
