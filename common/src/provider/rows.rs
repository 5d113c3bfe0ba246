//! The rows of the provider table: one per provider, all that tekflux knows about it.

use super::{
    CredentialVars, GitProvider, ProviderSpec, SecretKind, Verification, WebhookHeaders, header,
};

/// 25 MiB: GitHub caps payloads at 25 MB (its webhook docs), GitLab at 25 MB since 13.3
/// (gitlab-org/gitlab!38687); Gitea and Forgejo publish no cap (their commit lists are short,
/// `PAYLOAD_COMMIT_LIMIT`), so the same.
const MIB_25: usize = 25 * 1024 * 1024;

/// The git providers, in [`GitProvider`] declaration order.
pub const GIT: [ProviderSpec; 5] = [
    ProviderSpec {
        key: "github",
        title: "GitHub",
        git: Some(GitProvider::Github),
        secret: SecretKind::Secret,
        vars: CredentialVars {
            value: "TEKFLUX_GITHUB_SECRET",
            file: "TEKFLUX_GITHUB_SECRET_FILE",
            misnamed: ["TEKFLUX_GITHUB_TOKEN", "TEKFLUX_GITHUB_TOKEN_FILE"],
            status_token: Some([
                "TEKFLUX_GITHUB_STATUS_TOKEN",
                "TEKFLUX_GITHUB_STATUS_TOKEN_FILE",
            ]),
        },
        // SHA-1 `X-Hub-Signature` is not accepted: SHA-256 has been sent next to it since 2020.
        verification: Verification::Hmac {
            headers: &[header("x-hub-signature-256", "X-Hub-Signature-256")],
            prefix: "sha256=",
        },
        webhook: Some(WebhookHeaders {
            event: &[header("x-github-event", "X-GitHub-Event")],
            event_display: "X-GitHub-Event",
            delivery: &[header("x-github-delivery", "X-GitHub-Delivery")],
            delivery_display: "X-GitHub-Delivery",
            push_event: "push",
            identified_by: &["x-github-event"],
            imitates: &[],
        }),
        max_webhook_bytes: MIB_25,
        hosts: &["github.com"],
        status_api: Some("https://api.github.com"),
    },
    ProviderSpec {
        key: "gitlab",
        title: "GitLab",
        git: Some(GitProvider::Gitlab),
        secret: SecretKind::Token,
        vars: CredentialVars {
            value: "TEKFLUX_GITLAB_TOKEN",
            file: "TEKFLUX_GITLAB_TOKEN_FILE",
            misnamed: ["TEKFLUX_GITLAB_SECRET", "TEKFLUX_GITLAB_SECRET_FILE"],
            status_token: Some([
                "TEKFLUX_GITLAB_STATUS_TOKEN",
                "TEKFLUX_GITLAB_STATUS_TOKEN_FILE",
            ]),
        },
        verification: Verification::Token {
            header: header("x-gitlab-token", "X-Gitlab-Token"),
        },
        webhook: Some(WebhookHeaders {
            event: &[header("x-gitlab-event", "X-Gitlab-Event")],
            event_display: "X-Gitlab-Event",
            // `Idempotency-Key` (17.4+) stays the same across retries, while
            // `X-Gitlab-Event-UUID` is only unique per event, so the first is preferred.
            delivery: &[
                header("idempotency-key", "Idempotency-Key"),
                header("x-gitlab-event-uuid", "X-Gitlab-Event-UUID"),
            ],
            delivery_display: "Idempotency-Key or X-Gitlab-Event-UUID",
            push_event: "Push Hook",
            identified_by: &["x-gitlab-event"],
            imitates: &[],
        }),
        max_webhook_bytes: MIB_25,
        hosts: &["gitlab.com"],
        status_api: Some("https://gitlab.com/api/v4"),
    },
    ProviderSpec {
        key: "gitea",
        title: "Gitea",
        git: Some(GitProvider::Gitea),
        secret: SecretKind::Secret,
        vars: CredentialVars {
            value: "TEKFLUX_GITEA_SECRET",
            file: "TEKFLUX_GITEA_SECRET_FILE",
            misnamed: ["TEKFLUX_GITEA_TOKEN", "TEKFLUX_GITEA_TOKEN_FILE"],
            status_token: Some([
                "TEKFLUX_GITEA_STATUS_TOKEN",
                "TEKFLUX_GITEA_STATUS_TOKEN_FILE",
            ]),
        },
        verification: Verification::Hmac {
            headers: &[header("x-gitea-signature", "X-Gitea-Signature")],
            prefix: "",
        },
        webhook: Some(WebhookHeaders {
            // Gogs' headers too: Gitea still sends them.
            event: &[
                header("x-gitea-event", "X-Gitea-Event"),
                header("x-gogs-event", "X-Gogs-Event"),
            ],
            event_display: "X-Gitea-Event",
            delivery: &[
                header("x-gitea-delivery", "X-Gitea-Delivery"),
                header("x-gogs-delivery", "X-Gogs-Delivery"),
            ],
            delivery_display: "X-Gitea-Delivery",
            push_event: "push",
            identified_by: &["x-gitea-event", "x-gogs-event"],
            imitates: &[GitProvider::Github],
        }),
        max_webhook_bytes: MIB_25,
        hosts: &["gitea.com"],
        status_api: None,
    },
    ProviderSpec {
        key: "forgejo",
        title: "Forgejo",
        git: Some(GitProvider::Forgejo),
        secret: SecretKind::Secret,
        vars: CredentialVars {
            value: "TEKFLUX_FORGEJO_SECRET",
            file: "TEKFLUX_FORGEJO_SECRET_FILE",
            misnamed: ["TEKFLUX_FORGEJO_TOKEN", "TEKFLUX_FORGEJO_TOKEN_FILE"],
            status_token: Some([
                "TEKFLUX_FORGEJO_STATUS_TOKEN",
                "TEKFLUX_FORGEJO_STATUS_TOKEN_FILE",
            ]),
        },
        // Forgejo signs in its own header and in Gitea's.
        verification: Verification::Hmac {
            headers: &[
                header("x-forgejo-signature", "X-Forgejo-Signature"),
                header("x-gitea-signature", "X-Gitea-Signature"),
            ],
            prefix: "",
        },
        webhook: Some(WebhookHeaders {
            event: &[
                header("x-forgejo-event", "X-Forgejo-Event"),
                header("x-gitea-event", "X-Gitea-Event"),
            ],
            event_display: "X-Forgejo-Event",
            delivery: &[
                header("x-forgejo-delivery", "X-Forgejo-Delivery"),
                header("x-gitea-delivery", "X-Gitea-Delivery"),
            ],
            delivery_display: "X-Forgejo-Delivery or X-Gitea-Delivery",
            push_event: "push",
            identified_by: &["x-forgejo-event"],
            imitates: &[GitProvider::Gitea, GitProvider::Github],
        }),
        max_webhook_bytes: MIB_25,
        hosts: &["codeberg.org"],
        status_api: None,
    },
    ProviderSpec {
        key: "bitbucket",
        title: "Bitbucket Cloud",
        git: Some(GitProvider::Bitbucket),
        secret: SecretKind::Secret,
        vars: CredentialVars {
            value: "TEKFLUX_BITBUCKET_SECRET",
            file: "TEKFLUX_BITBUCKET_SECRET_FILE",
            misnamed: ["TEKFLUX_BITBUCKET_TOKEN", "TEKFLUX_BITBUCKET_TOKEN_FILE"],
            status_token: Some([
                "TEKFLUX_BITBUCKET_STATUS_TOKEN",
                "TEKFLUX_BITBUCKET_STATUS_TOKEN_FILE",
            ]),
        },
        // SHA-256 despite the header's name.
        verification: Verification::Hmac {
            headers: &[header("x-hub-signature", "X-Hub-Signature")],
            prefix: "sha256=",
        },
        webhook: Some(WebhookHeaders {
            event: &[header("x-event-key", "X-Event-Key")],
            event_display: "X-Event-Key",
            delivery: &[header("x-request-uuid", "X-Request-UUID")],
            delivery_display: "X-Request-UUID",
            push_event: "repo:push",
            identified_by: &["x-event-key"],
            imitates: &[],
        }),
        // 256 KB: larger webhooks fail on Bitbucket's side (BCLOUD-22312); 1 MiB leaves room.
        max_webhook_bytes: 1024 * 1024,
        hosts: &["bitbucket.org"],
        status_api: Some("https://api.bitbucket.org/2.0"),
    },
];

/// Senders of other webhooks, to release-changed.
pub const OTHER: [ProviderSpec; 2] = [
    ProviderSpec {
        key: "flux",
        title: "Flux notification-controller",
        git: None,
        secret: SecretKind::Secret,
        vars: CredentialVars {
            // The HMAC key is the `token` of Flux's generic-hmac Provider secret.
            value: "TEKFLUX_FLUX_SECRET",
            file: "TEKFLUX_FLUX_SECRET_FILE",
            misnamed: ["TEKFLUX_FLUX_TOKEN", "TEKFLUX_FLUX_TOKEN_FILE"],
            status_token: None,
        },
        verification: Verification::Hmac {
            headers: &[header("x-signature", "X-Signature")],
            prefix: "sha256=",
        },
        webhook: None,
        max_webhook_bytes: MIB_25,
        hosts: &[],
        status_api: None,
    },
    ProviderSpec {
        key: "registry",
        title: "container registry",
        git: None,
        secret: SecretKind::Token,
        vars: CredentialVars {
            value: "TEKFLUX_REGISTRY_TOKEN",
            file: "TEKFLUX_REGISTRY_TOKEN_FILE",
            misnamed: ["TEKFLUX_REGISTRY_SECRET", "TEKFLUX_REGISTRY_SECRET_FILE"],
            status_token: None,
        },
        verification: Verification::Token {
            header: header("authorization", "Authorization"),
        },
        webhook: None,
        max_webhook_bytes: MIB_25,
        hosts: &[],
        status_api: None,
    },
];

/// Flux's row: its `X-Signature` header, for release-changed.
pub const FLUX: &ProviderSpec = &OTHER[0];
/// The container registries' row: their `Authorization` header, for release-changed.
pub const REGISTRY: &ProviderSpec = &OTHER[1];
