//! The config file's keys, as written in YAML; error paths are built from these.

/// Top-level `namespace`.
pub const NAMESPACE: &str = "namespace";
/// Top-level `providers`.
pub const PROVIDERS: &str = "providers";
/// Top-level `storage`.
pub const STORAGE: &str = "storage";
/// Top-level `server`.
pub const SERVER: &str = "server";
/// Top-level `kubernetes`.
pub const KUBERNETES: &str = "kubernetes";
/// Top-level `repositories`.
pub const REPOSITORIES: &str = "repositories";
/// Top-level `releases`.
pub const RELEASES: &str = "releases";
/// Top-level `events`.
pub const EVENTS: &str = "events";
/// `events.oidc`.
pub const OIDC: &str = "oidc";
/// `events.oidc.issuer`.
pub const ISSUER: &str = "issuer";
/// `events.oidc.gitPush`.
pub const GIT_PUSH: &str = "gitPush";
/// `events.oidc.runComplete`.
pub const RUN_COMPLETE: &str = "runComplete";
/// `events.oidc.releaseChanged`.
pub const RELEASE_CHANGED: &str = "releaseChanged";
/// `events.oidc.deadLetters`.
pub const DEAD_LETTERS: &str = "deadLetters";
/// `events.oidc.*.audience`.
pub const AUDIENCE: &str = "audience";
/// `events.oidc.*.senders`.
pub const SENDERS: &str = "senders";

/// `providers.*.secret`.
pub const SECRET: &str = "secret";
/// `providers.gitlab.token`.
pub const TOKEN: &str = "token";
/// `providers.*.status` and `repositories[].status`.
pub const STATUS: &str = "status";
/// `providers.*.status.api`.
pub const API: &str = "api";
/// `providers.github.status.app`.
pub const APP: &str = "app";
/// `providers.github.status.app.privateKey`.
pub const PRIVATE_KEY: &str = "privateKey";
/// `providers.*.status.caBundle`.
pub const CA_BUNDLE: &str = "caBundle";
/// `providers.*.status.context` and `repositories[].status.context`.
pub const CONTEXT: &str = "context";
/// `providers.*.status.targetUrl`.
pub const TARGET_URL: &str = "targetUrl";
/// `providers.*.insecure`.
pub const INSECURE: &str = "insecure";

/// `storage.bucket`.
pub const BUCKET: &str = "bucket";
/// `storage.prefix`.
pub const PREFIX: &str = "prefix";
/// `storage.endpoint`.
pub const ENDPOINT: &str = "endpoint";
/// `storage.region`.
pub const REGION: &str = "region";
/// `storage.forcePathStyle`.
pub const FORCE_PATH_STYLE: &str = "forcePathStyle";
/// `storage.mounts`.
pub const MOUNTS: &str = "mounts";
/// `storage.compressionLevel`.
pub const COMPRESSION_LEVEL: &str = "compressionLevel";
/// `storage.partSizeMib`.
pub const PART_SIZE_MIB: &str = "partSizeMib";
/// `storage.maxArchiveBytes`.
pub const MAX_ARCHIVE_BYTES: &str = "maxArchiveBytes";
/// `storage.maxArchiveEntries`.
pub const MAX_ARCHIVE_ENTRIES: &str = "maxArchiveEntries";
/// `storage.maxLogBytes`.
pub const MAX_LOG_BYTES: &str = "maxLogBytes";
/// `storage.cleanup`.
pub const CLEANUP: &str = "cleanup";

/// `server.port`.
pub const PORT: &str = "port";
/// `server.bodyLimit`.
pub const BODY_LIMIT: &str = "bodyLimit";
/// `server.requestTimeoutSeconds`.
pub const REQUEST_TIMEOUT_SECONDS: &str = "requestTimeoutSeconds";
/// `server.shutdownTimeoutSeconds`.
pub const SHUTDOWN_TIMEOUT_SECONDS: &str = "shutdownTimeoutSeconds";
/// `server.maxConcurrentRequests`.
pub const MAX_CONCURRENT_REQUESTS: &str = "maxConcurrentRequests";
/// `server.maxBodyBytesInFlight`.
pub const MAX_BODY_BYTES_IN_FLIGHT: &str = "maxBodyBytesInFlight";
/// `kubernetes.timeoutSeconds`.
pub const TIMEOUT_SECONDS: &str = "timeoutSeconds";

/// `repositories[].name`.
pub const NAME: &str = "name";
/// `repositories[].url`.
pub const URL: &str = "url";
/// `repositories[].provider`.
pub const PROVIDER: &str = "provider";
/// `repositories[].pipeline`.
pub const PIPELINE: &str = "pipeline";
/// `repositories[].task`.
pub const TASK: &str = "task";
/// `repositories[].workspaces`.
pub const WORKSPACES: &str = "workspaces";
/// `repositories[].timeout`.
pub const TIMEOUT: &str = "timeout";
/// `repositories[].workspaces.*.claim`.
pub const CLAIM: &str = "claim";
/// `repositories[].workspaces.*.archive`.
pub const ARCHIVE: &str = "archive";

/// `releases[].image`.
pub const IMAGE: &str = "image";
/// `releases[].chart`.
pub const CHART: &str = "chart";
/// `releases[].helmRelease`.
pub const HELM_RELEASE: &str = "helmRelease";
/// `releases[].set`.
pub const SET: &str = "set";
/// `releases[].from`.
pub const FROM: &str = "from";
/// `releases[].from.rules`.
pub const RULES: &str = "rules";
/// `releases[].from.branches` (and `repositories[].branches`).
pub const BRANCHES: &str = "branches";
/// `releases[].from.tags` (and `repositories[].tags`).
pub const TAGS: &str = "tags";
/// `releases[].values`.
pub const VALUES: &str = "values";
/// `releases[].from.registry`.
pub const REGISTRY: &str = "registry";
