//! Why a restore was refused or failed.

use std::io;
use std::path::PathBuf;

use crate::archive::s3_error::S3Failure;

/// Why a restore was refused or failed. In every case the target is left as it was.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The target exists and is not an empty directory.
    #[error("the target {} is not an empty directory; restore only fills an empty or new one", path.display())]
    TargetNotEmpty {
        /// The target.
        path: PathBuf,
    },
    /// Writing into the target failed.
    #[error("cannot write {}", path.display())]
    Write {
        /// What was being written.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// An entry that could write outside the target or is not a plain file, directory or link.
    #[error("refused archive entry {entry:?}: {reason}")]
    Hostile {
        /// The entry's path as stored.
        entry: String,
        /// Why it is refused.
        reason: String,
    },
    /// More entries than [`RestoreLimits::max_entries`].
    #[error("the archive has more than {limit} entries (limit)")]
    TooManyEntries {
        /// The limit.
        limit: u64,
    },
    /// A zstd frame whose window is larger than [`RestoreLimits::max_window_log`] allows.
    #[error(
        "the archive was compressed with a zstd window larger than the limit \
         (--max-window-log); refused before the window is allocated"
    )]
    WindowTooLarge,
    /// A long name, long link name or PAX header larger than
    /// [`RestoreLimits::max_header_bytes`].
    #[error(
        "the archive has a {kind} of {size} bytes before entry {after:?}, more than the limit of {limit} bytes"
    )]
    HeaderTooLarge {
        /// Which header.
        kind: &'static str,
        /// Its size as declared.
        size: u64,
        /// The limit.
        limit: u64,
        /// The last entry restored before it (empty at the start).
        after: String,
    },
    /// More content than [`RestoreLimits::max_bytes`].
    #[error(
        "the archive unpacks to more than {limit} bytes (limit); refused as a possible decompression bomb"
    )]
    TooManyBytes {
        /// The limit.
        limit: u64,
    },
    /// Not a zstd-compressed tar stream, or cut short.
    #[error("the archive is corrupt: {0}")]
    Corrupt(String),
    /// The compressed archive's sha256 differs from the expected one.
    #[error("the archive's sha256 is {found}, expected {expected}")]
    ShaMismatch {
        /// What the manifest says.
        expected: String,
        /// What was read.
        found: String,
    },
    /// The object does not exist.
    #[error("s3://{bucket}/{key} does not exist")]
    NotFound {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
    },
    /// Reading the object from S3 failed (see [`S3Failure::kind`]); a missing object is
    /// [`RestoreError::NotFound`].
    #[error("{0}")]
    S3(Box<S3Failure>),
    /// The unpacking thread panicked or was cancelled.
    #[error("the restore stopped unexpectedly: {0}")]
    Stopped(String),
}

impl RestoreError {
    /// Whether the same restore may succeed later: only the store failing.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::S3(failure) => failure.is_transient(),
            _ => false,
        }
    }

    /// The S3 failure behind this error, if it is one.
    pub fn s3_failure(&self) -> Option<&S3Failure> {
        match self {
            Self::S3(failure) => Some(failure),
            _ => None,
        }
    }

    /// Names `endpoint` in an S3 failure's message.
    #[must_use]
    pub fn at(self, endpoint: &str) -> Self {
        match self {
            Self::S3(failure) => Self::S3(Box::new(failure.at(endpoint))),
            other => other,
        }
    }

    /// Whether the archive itself was refused (hostile, over a limit, corrupt or mismatching).
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Self::Hostile { .. }
                | Self::TooManyEntries { .. }
                | Self::TooManyBytes { .. }
                | Self::HeaderTooLarge { .. }
                | Self::WindowTooLarge
                | Self::Corrupt(_)
                | Self::ShaMismatch { .. }
        )
    }

    /// A short stable name for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::TargetNotEmpty { .. } => "target_not_empty",
            Self::Write { .. } => "write",
            Self::Hostile { .. } => "hostile",
            Self::TooManyEntries { .. } => "too_many_entries",
            Self::TooManyBytes { .. } => "too_many_bytes",
            Self::HeaderTooLarge { .. } => "header_too_large",
            Self::WindowTooLarge => "window_too_large",
            Self::Corrupt(_) => "corrupt",
            Self::ShaMismatch { .. } => "sha_mismatch",
            Self::NotFound { .. } => "not_found",
            Self::S3(_) => "s3",
            Self::Stopped(_) => "stopped",
        }
    }
}
