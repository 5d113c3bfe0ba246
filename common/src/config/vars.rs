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

// The providers' credential variables (`TEKFLUX_GITHUB_SECRET`, `TEKFLUX_GITLAB_TOKEN`, each
// with a `_FILE` form, and `TEKFLUX_<PROVIDER>_STATUS_TOKEN`) are in the provider table,
// `crate::provider`.

/// Bearer token for CloudEvent senders (`events.token`), the value itself.
pub const EVENTS_TOKEN: &str = "TEKFLUX_EVENTS_TOKEN";
/// Path of a file holding the CloudEvent senders' bearer token.
pub const EVENTS_TOKEN_FILE: &str = "TEKFLUX_EVENTS_TOKEN_FILE";
/// Overrides `events.insecure` (`true`/`false`/`1`/`0`).
pub const EVENTS_INSECURE: &str = "TEKFLUX_EVENTS_INSECURE";
