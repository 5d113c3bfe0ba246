//! What a provider's answer means ([`classify`]) and how long it asks to wait
//! ([`rate_limit_wait`]); nothing here does I/O.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, StatusCode};

use crate::config::GitProvider;

/// How a report ended (also the `outcome` metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reported {
    /// The provider accepted it.
    Posted,
    /// The provider already had this state (GitLab's "Cannot transition status").
    Unchanged,
    /// Reporting is off for this provider.
    NotConfigured,
    /// The provider refused the token (401/403).
    Unauthorized,
    /// No such repository or commit, or the token cannot see it (404).
    NotFound,
    /// The request was refused as invalid (400/409/422), e.g. GitHub's 1000-per-context cap.
    Rejected,
    /// Still rate-limited when the retries or the deadline ran out.
    RateLimited,
    /// Server errors or network failures until the retries ran out.
    Unavailable,
    /// The report could not be built (a run without a repository path or sha).
    Invalid,
}

impl Reported {
    /// The metric label.
    pub fn kind(self) -> &'static str {
        match self {
            Reported::Posted => "posted",
            Reported::Unchanged => "unchanged",
            Reported::NotConfigured => "not_configured",
            Reported::Unauthorized => "unauthorized",
            Reported::NotFound => "not_found",
            Reported::Rejected => "rejected",
            Reported::RateLimited => "rate_limited",
            Reported::Unavailable => "unavailable",
            Reported::Invalid => "invalid",
        }
    }
}

/// What an answer means. GitHub signals secondary rate limits with 403 and `Retry-After` or
/// `X-RateLimit-Remaining: 0`; GitLab answers a repeated state with 400 "Cannot transition".
pub(super) fn classify(
    provider: GitProvider,
    status: StatusCode,
    headers: &HeaderMap,
    text: &str,
) -> Reported {
    if status.is_success() {
        return Reported::Posted;
    }
    let rate_limited_403 = status == StatusCode::FORBIDDEN
        && (headers.contains_key("retry-after")
            || headers
                .get("x-ratelimit-remaining")
                .is_some_and(|value| value.as_bytes() == b"0"));
    match status {
        StatusCode::TOO_MANY_REQUESTS => Reported::RateLimited,
        _ if rate_limited_403 => Reported::RateLimited,
        StatusCode::BAD_REQUEST
            if provider == GitProvider::Gitlab && text.contains("Cannot transition status") =>
        {
            Reported::Unchanged
        }
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Reported::Unauthorized,
        StatusCode::NOT_FOUND => Reported::NotFound,
        _ if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT => {
            Reported::Unavailable
        }
        _ => Reported::Rejected,
    }
}

/// How long the provider asks to wait: `Retry-After` seconds, else the epoch-seconds reset of
/// GitHub (`X-RateLimit-Reset`) or GitLab (`RateLimit-Reset`).
pub fn rate_limit_wait(headers: &HeaderMap) -> Option<Duration> {
    let number = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok())
    };
    if let Some(seconds) = number("retry-after") {
        return Some(Duration::from_secs(seconds));
    }
    let reset = number("x-ratelimit-reset").or_else(|| number("ratelimit-reset"))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Some(Duration::from_secs(reset.saturating_sub(now)))
}

pub(super) fn redact(text: &str, token: &str) -> String {
    if token.len() >= 4 {
        text.replace(token, "***")
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap; a failure is the point
mod tests {
    use super::*;

    #[test]
    fn reset_headers() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", "7".parse().unwrap());
        assert_eq!(rate_limit_wait(&headers), Some(Duration::from_secs(7)));
        let mut headers = HeaderMap::new();
        let reset = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 30;
        headers.insert("ratelimit-reset", reset.to_string().parse().unwrap());
        let wait = rate_limit_wait(&headers).unwrap();
        assert!(wait <= Duration::from_secs(30) && wait >= Duration::from_secs(28));
    }
}
