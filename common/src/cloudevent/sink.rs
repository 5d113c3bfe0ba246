//! Knative SinkBinding: `K_SINK` set means "send replies there" instead of answering with them.

use super::outgoing::{respond, to_binary};
use crate::error::{Error, Result};
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cloudevents::{AttributesReader, Event};
use std::time::Duration;
use url::Url;

/// Why a `K_SINK` value cannot be used; a configuration error at start-up.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// `K_SINK` is not an absolute http(s) URL.
    #[error("K_SINK is not an absolute http(s) URL: {0}")]
    InvalidUrl(String),
    /// The HTTP client for the sink could not be built.
    #[error("could not build the HTTP client for K_SINK: {0}")]
    Client(String),
}

/// Where reply events go: the sink named by `K_SINK`, or the HTTP response when it is unset.
#[derive(Debug, Clone)]
pub struct ReplySink {
    target: Option<Url>,
    client: reqwest::Client,
    timeout: Duration,
}

impl ReplySink {
    /// How long a POST to the sink may take, unless set with [`ReplySink::timeout`]. Shorter
    /// than Knative's default delivery timeout, so the sender sees our 503 rather than its own.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

    /// From the value of `K_SINK` (injected, so tests need no environment); empty means unset.
    pub fn new(k_sink: Option<String>) -> Result<Self, SinkError> {
        let client = reqwest::Client::builder()
            .build()
            .map_err(|err| SinkError::Client(err.to_string()))?;
        Self::with_client(k_sink, client)
    }

    /// Like [`ReplySink::new`] with a given HTTP client.
    pub fn with_client(k_sink: Option<String>, client: reqwest::Client) -> Result<Self, SinkError> {
        let target = match k_sink.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(value) => {
                let url =
                    Url::parse(value).map_err(|err| SinkError::InvalidUrl(err.to_string()))?;
                if !matches!(url.scheme(), "http" | "https") {
                    return Err(SinkError::InvalidUrl(format!(
                        "scheme {:?} is not http or https",
                        url.scheme()
                    )));
                }
                Some(url)
            }
        };
        Ok(ReplySink {
            target,
            client,
            timeout: Self::DEFAULT_TIMEOUT,
        })
    }

    /// Sets the bound on each POST to the sink.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The sink, when `K_SINK` is set.
    pub fn target(&self) -> Option<&Url> {
        self.target.as_ref()
    }

    /// Delivers `reply`: POSTed to the sink in binary mode and answered 202 with a JSON summary,
    /// or, without a sink, answered in the response with status 200. A sink that fails or does
    /// not answer 2xx makes this an [`Error::Unavailable`] (503), so the sender retries.
    pub async fn deliver(&self, reply: Event) -> Result<Response> {
        let Some(target) = &self.target else {
            return Ok(respond(reply));
        };
        let (headers, body) = to_binary(&reply)?;
        let answer = self
            .client
            .post(target.clone())
            .headers(headers)
            .body(body)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|err| {
                // Without the URL: it is in the summary already and may carry credentials.
                Error::unavailable(
                    "could not deliver the reply to the sink (K_SINK)",
                    err.without_url(),
                )
            })?;
        let status = answer.status();
        if !status.is_success() {
            return Err(Error::Unavailable(format!(
                "the sink (K_SINK) answered {status} to the reply event"
            )));
        }
        let summary = serde_json::json!({
            "delivered": "sink",
            "sink": redacted(target),
            "sinkStatus": status.as_u16(),
            "reply": {
                "id": reply.id(),
                "type": reply.ty(),
                "source": reply.source(),
            },
        });
        Ok((StatusCode::ACCEPTED, Json(summary)).into_response())
    }
}

fn redacted(url: &Url) -> String {
    let mut url = url.clone();
    // Both only fail for URLs that cannot have credentials, which is fine to ignore.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.to_string()
}
