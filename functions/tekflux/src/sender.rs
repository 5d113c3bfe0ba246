//! Posting one CloudEvent to a Broker's ingress or a function, shared by `tekflux send` and
//! `tekflux replay`: binary mode (`ce-*` headers, as the functions reply), an optional bearer
//! token that is never printed, and what each answer means for the caller (retry, give up, fix
//! the credentials).

use std::fmt;
use std::path::Path;
use std::time::Duration;

use cloudevents::Event;
use http::StatusCode;
use tekflux_common::cloudevent::to_binary;
use tekflux_common::error::plain_chain;

use crate::transfer::{EXIT_NO_PERMISSION, EXIT_REFUSED, EXIT_UNAVAILABLE, EXIT_USAGE};

/// The most bytes of a receiver's error body quoted in a message.
const QUOTED_BODY_CHARS: usize = 300;

/// A bearer token read from a file. Its `Debug` shows no content.
pub(crate) struct Token(String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// The token in `path`, surrounding whitespace (a Secret's trailing newline) removed. The
    /// error names the file and the reason, never the content.
    pub(crate) fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| format!("cannot read {}: {}", path.display(), plain_chain(&error)))?;
        let token = text.trim();
        if token.is_empty() {
            return Err(format!(
                "{} is empty: there is no token in it",
                path.display()
            ));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "{} holds characters a bearer token cannot have (spaces or control characters \
                 inside it, or non-ASCII)",
                path.display()
            ));
        }
        Ok(Self(token.to_owned()))
    }
}

/// Why an event was not accepted.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The event cannot be put on the wire (an attribute that cannot be a header).
    Encode(String),
    /// 401 or 403: the receiver wants other credentials; retrying will not help.
    Refused { status: StatusCode, body: String },
    /// 404: nothing answers events at this URL.
    NotFound { body: String },
    /// Another 4xx: the receiver will never take this event.
    Rejected { status: StatusCode, body: String },
    /// Unreachable, timed out, 408, 429 or 5xx: later may work.
    Unavailable {
        reason: String,
        /// The receiver's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
    },
}

impl Failure {
    /// Whether trying again later may succeed.
    pub(crate) fn is_transient(&self) -> bool {
        matches!(self, Failure::Unavailable { .. })
    }

    /// The exit code of `tekflux send` for this failure (see `transfer`'s constants).
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Failure::Encode(_) | Failure::Rejected { .. } => EXIT_REFUSED,
            Failure::Refused { .. } => EXIT_NO_PERMISSION,
            Failure::NotFound { .. } => EXIT_USAGE,
            Failure::Unavailable { .. } => EXIT_UNAVAILABLE,
        }
    }

    /// The `Retry-After` the receiver asked for.
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        match self {
            Failure::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Encode(reason) => write!(f, "cannot encode the event: {reason}"),
            Failure::Refused { status, body } => write!(
                f,
                "answered {status}: the credentials are missing or not accepted (--token-file){}",
                quoted(body)
            ),
            Failure::NotFound { body } => write!(
                f,
                "answered 404 Not Found: nothing receives events at this URL; check --to{}",
                quoted(body)
            ),
            Failure::Rejected { status, body } => {
                write!(f, "answered {status}: the event is refused{}", quoted(body))
            }
            Failure::Unavailable { reason, .. } => f.write_str(reason),
        }
    }
}

fn quoted(body: &str) -> String {
    let body = body.trim();
    if body.is_empty() {
        String::new()
    } else {
        format!(
            ": {}",
            body.chars().take(QUOTED_BODY_CHARS).collect::<String>()
        )
    }
}

/// Posts events to one URL, with one token.
pub(crate) struct EventSender {
    http: reqwest::Client,
    to: url::Url,
    token: Option<Token>,
}

impl EventSender {
    /// A sender to `to`, each attempt bounded by `timeout`.
    pub(crate) fn new(
        to: url::Url,
        token: Option<Token>,
        timeout: Duration,
    ) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|error| {
                format!(
                    "cannot build an HTTP client: {}",
                    plain_chain(&error.without_url())
                )
            })?;
        Ok(Self { http, to, token })
    }

    /// The URL for messages, without a password it may carry (`http://user:token@host/`).
    pub(crate) fn shown_url(&self) -> String {
        shown_url(&self.to)
    }

    /// Posts `event` once; `Ok` carries the 2xx status.
    pub(crate) async fn post(&self, event: &Event) -> Result<StatusCode, Failure> {
        let (headers, body) =
            to_binary(event).map_err(|error| Failure::Encode(error.to_string()))?;
        let mut request = self.http.post(self.to.clone()).headers(headers).body(body);
        if let Some(Token(token)) = &self.token {
            request = request.bearer_auth(token);
        }
        let answer = request.send().await.map_err(|error| Failure::Unavailable {
            // reqwest's messages name the URL, which may carry a password: said here without.
            reason: format!("cannot be reached: {}", plain_chain(&error.without_url())),
            retry_after: None,
        })?;
        let status = answer.status();
        if status.is_success() {
            return Ok(status);
        }
        let retry_after = answer
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(parse_retry_after);
        let body = answer.text().await.unwrap_or_default();
        Err(match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Failure::Refused { status, body },
            StatusCode::NOT_FOUND => Failure::NotFound { body },
            StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS => Failure::Unavailable {
                reason: format!("answered {status}{}", quoted(&body)),
                retry_after,
            },
            status if status.is_server_error() => Failure::Unavailable {
                reason: format!("answered {status}{}", quoted(&body)),
                retry_after,
            },
            status => Failure::Rejected { status, body },
        })
    }
}

/// `url` without its password.
pub(crate) fn shown_url(url: &url::Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        // Only fails for URLs that cannot have one, which this one has.
        let _ = shown.set_password(Some("redacted"));
    }
    shown.to_string()
}

/// `Retry-After` as seconds or as an HTTP date (RFC 9110); a date in the past is zero.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = date.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn passwords_in_urls_are_not_shown() {
        let url = url::Url::parse("http://tekflux:s3cret@broker.example/broker").unwrap();
        assert_eq!(
            shown_url(&url),
            "http://tekflux:redacted@broker.example/broker"
        );
        let url = url::Url::parse("http://broker.example/broker").unwrap();
        assert_eq!(shown_url(&url), "http://broker.example/broker");
    }
}
