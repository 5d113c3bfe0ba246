//! The environment variables each command reads, for `--help`: one list, so the help cannot
//! drift from what the code reads. `docs/configuration.md` explains each override.

use crate::config::vars;
use crate::startup::K_SINK;
use crate::telemetry::{LOG_FORMAT, NO_COLOR, RUST_LOG};

/// What a command reads, by group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    /// `serve` and the per-function binaries: everything.
    Serve,
    /// `check-config` and `render`: the config and its overrides.
    Config,
    /// `archive` and `restore`: the config's storage section and the AWS SDK.
    Transfer,
    /// `send`: no config; the proxy variables of its HTTP client.
    Send,
    /// `trace`: the config (no secrets), the kubeconfig and the AWS SDK.
    Trace,
}

/// Overrides of the config file's server and Kubernetes settings.
const SERVER_OVERRIDES: &[(&str, &str)] = &[
    (vars::PORT, "server.port (Knative sets it)"),
    (vars::NAMESPACE, "namespace"),
    (vars::BODY_LIMIT, "server.bodyLimit"),
    (
        vars::REQUEST_TIMEOUT_SECONDS,
        "server.requestTimeoutSeconds",
    ),
    (
        vars::SHUTDOWN_TIMEOUT_SECONDS,
        "server.shutdownTimeoutSeconds",
    ),
    (vars::KUBE_TIMEOUT_SECONDS, "kubernetes.timeoutSeconds"),
];

/// The overrides `trace` reads besides the storage section's: where runs are, and how long
/// an API call may take.
const TRACE_OVERRIDES: &[(&str, &str)] = &[
    (vars::NAMESPACE, "namespace"),
    (vars::KUBE_TIMEOUT_SECONDS, "kubernetes.timeoutSeconds"),
];

/// Overrides of the config file's storage section.
const STORAGE_OVERRIDES: &[(&str, &str)] = &[
    (vars::S3_BUCKET, "storage.bucket"),
    (vars::S3_PREFIX, "storage.prefix"),
    (vars::S3_ENDPOINT, "storage.endpoint"),
    (vars::S3_REGION, "storage.region"),
    (vars::S3_FORCE_PATH_STYLE, "storage.forcePathStyle"),
    (vars::S3_COMPRESSION_LEVEL, "storage.compressionLevel"),
    (vars::S3_PART_SIZE_MIB, "storage.partSizeMib"),
    (vars::S3_MAX_ARCHIVE_BYTES, "storage.maxArchiveBytes"),
    (vars::S3_CLEANUP, "storage.cleanup"),
];

/// The senders' credential (also as `<NAME>_FILE`, a file holding it) and switch; the
/// providers' credentials come from the provider table.
const CREDENTIAL_OVERRIDES: &[(&str, &str)] = &[
    (vars::EVENTS_TOKEN, "events.token"),
    (vars::EVENTS_INSECURE, "events.insecure"),
];

/// The `Environment:` section of a command's `--help`.
pub fn help(reader: Reader) -> String {
    if reader == Reader::Send {
        return [
            "Environment:".to_owned(),
            row(
                "HTTPS_PROXY, HTTP_PROXY, NO_PROXY",
                "the proxy to send through (no config file is read)",
            ),
        ]
        .join("\n");
    }
    let mut lines = vec![
        "Environment:".to_owned(),
        row(
            vars::TEKFLUX_CONFIG,
            "config file (`tekflux --config` wins; default ./tekflux.yaml, else built-in defaults)",
        ),
    ];
    let provider_credentials = crate::provider::all().map(|spec| {
        let key = format!("providers.{}.{}", spec.key, spec.secret.key());
        (spec.vars.value, key)
    });
    let owned = |(name, key): &(&'static str, &str)| (*name, (*key).to_owned());
    let overrides: Vec<(&str, String)> = match reader {
        Reader::Serve | Reader::Config => SERVER_OVERRIDES
            .iter()
            .chain(STORAGE_OVERRIDES)
            .map(owned)
            .chain(provider_credentials)
            .chain(CREDENTIAL_OVERRIDES.iter().map(owned))
            .collect(),
        Reader::Transfer | Reader::Send => STORAGE_OVERRIDES.iter().map(owned).collect(),
        Reader::Trace => TRACE_OVERRIDES
            .iter()
            .chain(STORAGE_OVERRIDES)
            .map(owned)
            .collect(),
    };
    for (name, key) in overrides {
        let key = if key.ends_with(".secret") || key.ends_with(".token") {
            format!("{key} (or {name}_FILE, a file holding it)")
        } else {
            key
        };
        lines.push(row(name, &format!("overrides {key}")));
    }
    if matches!(reader, Reader::Serve | Reader::Transfer | Reader::Trace) {
        lines.push(row(
            "AWS_ENDPOINT_URL_S3, AWS_REGION, AWS_ACCESS_KEY_ID, ...",
            "the AWS SDK's S3 endpoint, region and credentials",
        ));
        lines.push(row(
            "AWS_EC2_METADATA_DISABLED",
            "true: never ask the EC2 instance metadata service; false: ask it even with a \
             custom endpoint (by default it is asked only for AWS S3 itself)",
        ));
    }
    if reader == Reader::Trace {
        lines.push(row(
            "KUBECONFIG",
            "kubeconfig file (else ~/.kube/config, else the in-cluster service account)",
        ));
    }
    if reader == Reader::Serve {
        lines.extend([
            row(
                "KUBECONFIG",
                "kubeconfig file (else ~/.kube/config, else the in-cluster service account)",
            ),
            row(K_SINK, "where reply events go (Knative's SinkBinding)"),
            row(
                "AWS_LAMBDA_RUNTIME_API",
                "serve through AWS Lambda's Runtime API",
            ),
            row(RUST_LOG, "log filter (default info)"),
            row(LOG_FORMAT, "text (default) or json"),
            row(
                NO_COLOR,
                "no colours in text logs (only a terminal gets them anyway)",
            ),
        ]);
    }
    lines.join("\n")
}

fn row(name: &str, meaning: &str) -> String {
    if name.len() < 34 {
        format!("  {name:<34}{meaning}")
    } else {
        format!("  {name}\n  {:<34}{meaning}", "")
    }
}
