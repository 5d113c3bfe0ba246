//! Unpacking an archive into a directory without trusting it (placeholder being written).

use std::io::Read;
use std::path::Path;

use aws_sdk_s3::Client;

/// Bounds a restore refuses to exceed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreLimits {
    /// Most tar entries accepted.
    pub max_entries: u64,
    /// Most bytes of file content written, in total.
    pub max_bytes: u64,
}

impl Default for RestoreLimits {
    fn default() -> Self {
        Self {
            max_entries: 1_000_000,
            max_bytes: 64 * 1024 * 1024 * 1024,
        }
    }
}

/// How a restore is checked and reported.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Bounds on what the archive may unpack to.
    pub limits: RestoreLimits,
    /// sha256 the compressed archive must have (lowercase or uppercase hex), e.g. from the
    /// run's manifest.
    pub expected_sha256: Option<String>,
    /// Told the number of compressed bytes read, as they are read.
    pub progress: super::Progress,
}

/// What a restore wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreReport {
    /// Tar entries restored.
    pub entries: u64,
    /// Bytes of file content written.
    pub bytes: u64,
    /// Size of the compressed archive read.
    pub archive_bytes: u64,
    /// sha256 of the compressed archive, lowercase hex.
    pub sha256: String,
}

/// Why a restore was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// Not written yet.
    #[error("restore is not available yet")]
    Unavailable,
}

/// Unpacks a zstd-compressed tar stream into `target`.
///
/// # Errors
/// See [`RestoreError`].
pub fn restore_archive<R: Read>(
    _reader: R,
    _target: &Path,
    _options: &RestoreOptions,
) -> Result<RestoreReport, RestoreError> {
    Err(RestoreError::Unavailable)
}

/// Downloads `s3://bucket/key` and unpacks it into `target`.
///
/// # Errors
/// See [`RestoreError`].
pub async fn restore_from_s3(
    _client: &Client,
    _bucket: &str,
    _key: &str,
    _target: &Path,
    _options: &RestoreOptions,
) -> Result<RestoreReport, RestoreError> {
    Err(RestoreError::Unavailable)
}
