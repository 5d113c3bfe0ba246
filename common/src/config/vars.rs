//! Environment variables read by the config, applied after the file (see
//! `docs/configuration.md`).

/// Path of the config file; `tekflux.yaml` in the working directory when unset.
pub const TEKFLUX_CONFIG: &str = "TEKFLUX_CONFIG";
/// Listen port, set by Knative; overrides `server.port`.
pub const PORT: &str = "PORT";
/// Overrides `namespace`.
pub const NAMESPACE: &str = "TEKFLUX_NAMESPACE";
/// Overrides `server.bodyLimit` (bytes).
pub const BODY_LIMIT: &str = "TEKFLUX_BODY_LIMIT";
/// Overrides `server.requestTimeoutSeconds`.
pub const REQUEST_TIMEOUT_SECONDS: &str = "TEKFLUX_REQUEST_TIMEOUT_SECONDS";
/// Overrides `server.shutdownTimeoutSeconds`.
pub const SHUTDOWN_TIMEOUT_SECONDS: &str = "TEKFLUX_SHUTDOWN_TIMEOUT_SECONDS";
/// Overrides `kubernetes.timeoutSeconds`.
pub const KUBE_TIMEOUT_SECONDS: &str = "TEKFLUX_KUBE_TIMEOUT_SECONDS";
/// Overrides `storage.bucket`.
pub const S3_BUCKET: &str = "TEKFLUX_S3_BUCKET";
/// Overrides `storage.prefix`.
pub const S3_PREFIX: &str = "TEKFLUX_S3_PREFIX";
/// Overrides `storage.endpoint`.
pub const S3_ENDPOINT: &str = "TEKFLUX_S3_ENDPOINT";
/// Overrides `storage.region`.
pub const S3_REGION: &str = "TEKFLUX_S3_REGION";
/// Overrides `storage.forcePathStyle` (`true`/`false`/`1`/`0`).
pub const S3_FORCE_PATH_STYLE: &str = "TEKFLUX_S3_FORCE_PATH_STYLE";
/// Overrides `storage.compressionLevel`.
pub const S3_COMPRESSION_LEVEL: &str = "TEKFLUX_S3_COMPRESSION_LEVEL";
/// Overrides `storage.partSizeMib`.
pub const S3_PART_SIZE_MIB: &str = "TEKFLUX_S3_PART_SIZE_MIB";
/// Overrides `storage.maxArchiveBytes`.
pub const S3_MAX_ARCHIVE_BYTES: &str = "TEKFLUX_S3_MAX_ARCHIVE_BYTES";
/// Overrides `storage.cleanup` (`true`/`false`/`1`/`0`).
pub const S3_CLEANUP: &str = "TEKFLUX_S3_CLEANUP";

/// GitHub webhook secret, the value itself (a `secretKeyRef` puts it there).
pub const GITHUB_SECRET: &str = "TEKFLUX_GITHUB_SECRET";
/// Path of a file holding the GitHub webhook secret.
pub const GITHUB_SECRET_FILE: &str = "TEKFLUX_GITHUB_SECRET_FILE";
/// GitLab webhook token, the value itself.
pub const GITLAB_TOKEN: &str = "TEKFLUX_GITLAB_TOKEN";
/// Path of a file holding the GitLab webhook token.
pub const GITLAB_TOKEN_FILE: &str = "TEKFLUX_GITLAB_TOKEN_FILE";
/// Gitea webhook secret, the value itself.
pub const GITEA_SECRET: &str = "TEKFLUX_GITEA_SECRET";
/// Path of a file holding the Gitea webhook secret.
pub const GITEA_SECRET_FILE: &str = "TEKFLUX_GITEA_SECRET_FILE";
/// Forgejo webhook secret, the value itself.
pub const FORGEJO_SECRET: &str = "TEKFLUX_FORGEJO_SECRET";
/// Path of a file holding the Forgejo webhook secret.
pub const FORGEJO_SECRET_FILE: &str = "TEKFLUX_FORGEJO_SECRET_FILE";
/// Bitbucket webhook secret, the value itself.
pub const BITBUCKET_SECRET: &str = "TEKFLUX_BITBUCKET_SECRET";
/// Path of a file holding the Bitbucket webhook secret.
pub const BITBUCKET_SECRET_FILE: &str = "TEKFLUX_BITBUCKET_SECRET_FILE";
/// Flux notification-controller HMAC key (its Provider secret's `token`), the value itself.
pub const FLUX_SECRET: &str = "TEKFLUX_FLUX_SECRET";
/// Path of a file holding the Flux notification-controller HMAC key.
pub const FLUX_SECRET_FILE: &str = "TEKFLUX_FLUX_SECRET_FILE";
/// Container registry notification token (the `Authorization` header it sends), the value.
pub const REGISTRY_TOKEN: &str = "TEKFLUX_REGISTRY_TOKEN";
/// Path of a file holding the container registry notification token.
pub const REGISTRY_TOKEN_FILE: &str = "TEKFLUX_REGISTRY_TOKEN_FILE";
/// Bearer token for CloudEvent senders (`events.token`), the value itself.
pub const EVENTS_TOKEN: &str = "TEKFLUX_EVENTS_TOKEN";
/// Path of a file holding the CloudEvent senders' bearer token.
pub const EVENTS_TOKEN_FILE: &str = "TEKFLUX_EVENTS_TOKEN_FILE";
/// Overrides `events.insecure` (`true`/`false`/`1`/`0`).
pub const EVENTS_INSECURE: &str = "TEKFLUX_EVENTS_INSECURE";

/// Commit-status API tokens (`providers.<provider>.status.token`), the value itself; each has a
/// `_FILE` form holding a path. Setting one turns reporting on for that provider.
pub const GITHUB_STATUS_TOKEN: &str = "TEKFLUX_GITHUB_STATUS_TOKEN";
/// Path of a file holding the GitHub status token.
pub const GITHUB_STATUS_TOKEN_FILE: &str = "TEKFLUX_GITHUB_STATUS_TOKEN_FILE";
/// GitLab status token.
pub const GITLAB_STATUS_TOKEN: &str = "TEKFLUX_GITLAB_STATUS_TOKEN";
/// Path of a file holding the GitLab status token.
pub const GITLAB_STATUS_TOKEN_FILE: &str = "TEKFLUX_GITLAB_STATUS_TOKEN_FILE";
/// Gitea status token.
pub const GITEA_STATUS_TOKEN: &str = "TEKFLUX_GITEA_STATUS_TOKEN";
/// Path of a file holding the Gitea status token.
pub const GITEA_STATUS_TOKEN_FILE: &str = "TEKFLUX_GITEA_STATUS_TOKEN_FILE";
/// Forgejo status token.
pub const FORGEJO_STATUS_TOKEN: &str = "TEKFLUX_FORGEJO_STATUS_TOKEN";
/// Path of a file holding the Forgejo status token.
pub const FORGEJO_STATUS_TOKEN_FILE: &str = "TEKFLUX_FORGEJO_STATUS_TOKEN_FILE";
/// Bitbucket status token.
pub const BITBUCKET_STATUS_TOKEN: &str = "TEKFLUX_BITBUCKET_STATUS_TOKEN";
/// Path of a file holding the Bitbucket status token.
pub const BITBUCKET_STATUS_TOKEN_FILE: &str = "TEKFLUX_BITBUCKET_STATUS_TOKEN_FILE";
