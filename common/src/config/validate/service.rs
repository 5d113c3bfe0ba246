//! `storage`, `server`, `kubernetes` and `events`: the settings of the served functions.

use std::path::Path;

use super::{COMPRESSION_LEVELS, Findings, MAX_TIMEOUT_SECONDS, PART_SIZE_MIB};
use crate::config::keys;
use crate::config::locate::FieldPath;
use crate::config::model::Config;

/// `events.oidc`: an issuer that is a URL, and for each function named, allowed senders
/// whose only wildcard is a trailing `*`.
pub(super) fn events(config: &Config, path: &FieldPath, findings: &mut Findings) {
    let Some(oidc) = &config.events.oidc else {
        return;
    };
    let path = path.key(keys::OIDC);
    if let Some(issuer) = &oidc.issuer
        && url::Url::parse(issuer).is_err()
    {
        findings.push(
            path.key(keys::ISSUER),
            format!(
                "{issuer:?} is not a URL; use the cluster's service-account issuer, e.g. \
                 https://kubernetes.default.svc.cluster.local, or leave it out to take the \
                 one the API server announces"
            ),
        );
    }
    let receivers = [
        (keys::GIT_PUSH, &oidc.git_push),
        (keys::RUN_COMPLETE, &oidc.run_complete),
        (keys::RELEASE_CHANGED, &oidc.release_changed),
        (keys::DEAD_LETTERS, &oidc.dead_letters),
    ];
    if receivers.iter().all(|(_, receiver)| receiver.is_none()) {
        findings.push(
            path.clone(),
            format!(
                "names no function: add `{}`, `{}` or `{}` with the `{}` allowed to send to it",
                keys::GIT_PUSH,
                keys::RUN_COMPLETE,
                keys::RELEASE_CHANGED,
                keys::SENDERS
            ),
        );
    }
    for (name, receiver) in receivers {
        let Some(receiver) = receiver else { continue };
        let path = path.key(name);
        if receiver
            .audience
            .as_deref()
            .is_some_and(|a| a.trim().is_empty())
        {
            findings.push(
                path.key(keys::AUDIENCE),
                "must not be empty; leave it out for the default".to_owned(),
            );
        }
        if receiver.senders.is_empty() {
            findings.push(
                path.key(keys::SENDERS),
                "lists no sender: name the service accounts of the Triggers that deliver to \
                 this function (system:serviceaccount:<namespace>:<trigger>-oidc-eventing.knative.dev-trigger)"
                    .to_owned(),
            );
        }
        for (index, sender) in receiver.senders.iter().enumerate() {
            let star = sender.find('*');
            if sender.trim().is_empty()
                || star.is_some_and(|at| at + 1 != sender.len())
                || sender == "*"
            {
                findings.push(
                    path.key(keys::SENDERS).index(index),
                    format!(
                        "{sender:?} is not a sender: a token subject such as \
                         system:serviceaccount:<namespace>:<name>, with at most a trailing `*`"
                    ),
                );
            }
        }
    }
}

pub(super) fn storage(config: &Config, path: &FieldPath, findings: &mut Findings) {
    let storage = &config.storage;
    if storage.bucket.as_deref().is_some_and(str::is_empty) {
        findings.push(path.key(keys::BUCKET), "must not be empty".into());
    }
    if let Some(endpoint) = &storage.endpoint {
        let ok = url::Url::parse(endpoint)
            .is_ok_and(|url| matches!(url.scheme(), "http" | "https") && url.has_host());
        if !ok {
            findings.push(
                path.key(keys::ENDPOINT),
                format!("{endpoint:?} is not an http(s) URL"),
            );
        }
    }
    if let Some(level) = storage.compression_level
        && !COMPRESSION_LEVELS.contains(&level)
    {
        findings.push(
            path.key(keys::COMPRESSION_LEVEL),
            format!(
                "{level} is not a zstd level ({} to {})",
                COMPRESSION_LEVELS.start(),
                COMPRESSION_LEVELS.end()
            ),
        );
    }
    if let Some(size) = storage.part_size_mib
        && !PART_SIZE_MIB.contains(&size)
    {
        findings.push(
            path.key(keys::PART_SIZE_MIB),
            format!(
                "{size} MiB is outside S3's multipart part sizes ({} to {} MiB)",
                PART_SIZE_MIB.start(),
                PART_SIZE_MIB.end()
            ),
        );
    }
    if storage.max_archive_bytes == Some(0) {
        findings.push(
            path.key(keys::MAX_ARCHIVE_BYTES),
            "must be above 0 (leave it out for the default)".into(),
        );
    }
    if storage.max_archive_entries == Some(0) {
        findings.push(
            path.key(keys::MAX_ARCHIVE_ENTRIES),
            "must be above 0 (leave it out for the default)".into(),
        );
    }
    if storage.max_log_bytes == Some(0) {
        findings.push(
            path.key(keys::MAX_LOG_BYTES),
            "must be above 0 (leave it out for the default)".into(),
        );
    }
    for (claim, mount) in &storage.mounts {
        if !Path::new(mount).is_absolute() {
            findings.push(
                path.key(keys::MOUNTS).key(claim),
                format!("{mount:?} is not an absolute path"),
            );
        }
    }
}

pub(super) fn server(config: &Config, root: &FieldPath, findings: &mut Findings) {
    let server = &config.server;
    let path = root.key(keys::SERVER);
    if server.body_limit == 0 {
        findings.push(path.key(keys::BODY_LIMIT), "must be above 0".into());
    }
    if server.max_concurrent_requests == 0 {
        findings.push(
            path.key(keys::MAX_CONCURRENT_REQUESTS),
            "must be above 0".into(),
        );
    }
    if server.max_body_bytes_in_flight < server.body_limit {
        findings.push(
            path.key(keys::MAX_BODY_BYTES_IN_FLIGHT),
            format!(
                "{} is below bodyLimit ({}), so a body of the largest allowed size could never \
                 be read; raise it or lower bodyLimit",
                server.max_body_bytes_in_flight, server.body_limit
            ),
        );
    }
    let timeouts = [
        (
            keys::REQUEST_TIMEOUT_SECONDS,
            server.request_timeout_seconds,
        ),
        (
            keys::SHUTDOWN_TIMEOUT_SECONDS,
            server.shutdown_timeout_seconds,
        ),
    ];
    for (key, seconds) in timeouts {
        if !(1..=MAX_TIMEOUT_SECONDS).contains(&seconds) {
            findings.push(
                path.key(key),
                format!(
                    "{seconds} is outside 1 to {MAX_TIMEOUT_SECONDS}; keep it below the pod's \
                     termination grace period (Knative: the Service's timeoutSeconds)"
                ),
            );
        }
    }
    if config.kubernetes.timeout_seconds == 0 {
        findings.push(
            root.key(keys::KUBERNETES).key(keys::TIMEOUT_SECONDS),
            "must be above 0".into(),
        );
    }
}
