//! Provider webhooks: the body is the fuzzer's input, the headers are those each provider sends
//! (event name and delivery id), in the variants that take different paths through the parser.

use http::{HeaderMap, HeaderName, HeaderValue};
use tekflux_git_push::providers::{self, Webhook};
use tekflux_git_push::{Provider, Push};

const DELIVERY: &str = "0b4fa8d2-6a5e-11ef-8c1a-0242ac120002";

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    pairs
        .iter()
        .map(|(name, value)| {
            (
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            )
        })
        .collect()
}

/// The header sets `provider`'s parser is called with, one call each.
fn requests(provider: Provider) -> Vec<HeaderMap> {
    match provider {
        Provider::Github => vec![
            headers(&[("x-github-event", "push"), ("x-github-delivery", DELIVERY)]),
            headers(&[("x-github-event", "ping"), ("x-github-delivery", DELIVERY)]),
        ],
        Provider::Gitlab => vec![
            headers(&[
                ("x-gitlab-event", "Push Hook"),
                ("x-gitlab-event-uuid", DELIVERY),
            ]),
            headers(&[
                ("x-gitlab-event", "Tag Push Hook"),
                ("idempotency-key", DELIVERY),
            ]),
            headers(&[
                ("x-gitlab-event", "System Hook"),
                ("x-gitlab-event-uuid", DELIVERY),
            ]),
        ],
        Provider::Gitea => vec![
            headers(&[("x-gitea-event", "push"), ("x-gitea-delivery", DELIVERY)]),
            headers(&[("x-gogs-event", "push"), ("x-gogs-delivery", DELIVERY)]),
        ],
        Provider::Forgejo => vec![headers(&[
            ("x-forgejo-event", "push"),
            ("x-forgejo-delivery", DELIVERY),
            ("x-gitea-event", "push"),
            ("x-gitea-delivery", DELIVERY),
        ])],
        Provider::Bitbucket => vec![
            headers(&[("x-event-key", "repo:push"), ("x-request-uuid", DELIVERY)]),
            // A proxy dropped X-Request-UUID: the delivery id is derived from the hook and body.
            headers(&[
                ("x-event-key", "repo:push"),
                ("x-hook-uuid", "{7d5b1c6a-2f44-4c1e-9d6b-0e2a1f3c4b5d}"),
            ]),
        ],
    }
}

/// Parses `body` as every request of `provider`; panics only on a broken property.
pub fn check(provider: Provider, body: &[u8]) {
    for headers in requests(provider) {
        assert_eq!(providers::detect(&headers), Some(provider));
        if let Ok(webhook) = providers::parse(provider, &headers, body) {
            check_webhook(&webhook, Some(provider), false);
        }
    }
}

/// The properties of a parsed webhook; `provider` when the parser was told which one sent it,
/// `sender_vouches` when the sender states `pathsComplete` itself (tekflux's own push event).
pub fn check_webhook(webhook: &Webhook, provider: Option<Provider>, sender_vouches: bool) {
    if let Webhook::Pushes(pushes) = webhook {
        assert!(!pushes.is_empty(), "a webhook with no pushes: {webhook:?}");
        for push in pushes {
            check_push(push, provider, sender_vouches);
        }
    }
}

/// What the module docs of `tekflux_git_push::providers` promise about every push.
pub fn check_push(push: &Push, provider: Option<Provider>, sender_vouches: bool) {
    if let Some(provider) = provider {
        assert_eq!(push.provider, provider);
    }
    // A canonical URL is its own canonical form: rules and pushes are compared by it.
    assert_eq!(
        tekflux_git_push::repo_url::canonical(&push.repo_url).as_deref(),
        Some(push.repo_url.as_str()),
        "repo_url is not canonical: {push:?}"
    );
    let lower = push.clone_url.to_ascii_lowercase();
    if let Some(rest) = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
    {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        assert!(
            !authority.contains('@'),
            "credentials left in clone_url: {push:?}"
        );
    }
    assert!(!push.delivery_id.is_empty(), "no delivery id: {push:?}");
    assert!(!push.before.trim().is_empty() && !push.after.trim().is_empty());
    assert_eq!(push.ref_kind, providers::ref_kind(&push.git_ref));
    assert!(
        push.changed_paths.windows(2).all(|w| w[0] < w[1]),
        "changed_paths not sorted and deduplicated: {push:?}"
    );
    if push.deleted {
        assert!(
            push.changed_paths.is_empty() && push.paths_complete,
            "{push:?}"
        );
    } else if (push.created || push.forced) && !sender_vouches {
        assert!(!push.paths_complete, "{push:?}");
    }
}
