//! Why an archive could not be written, uploaded or verified, and how the function answers it.

use std::io;
use std::path::PathBuf;

use super::s3_error::S3Failure;

/// Why an archive could not be written, uploaded or verified.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The directory to archive does not exist.
    #[error("the directory to archive, {}, does not exist", path.display())]
    SourceMissing {
        /// The missing directory.
        path: PathBuf,
    },
    /// The path to archive exists but is not a directory.
    #[error("{} is not a directory", path.display())]
    NotADirectory {
        /// The path given.
        path: PathBuf,
    },
    /// A component of a run's directory is a symbolic link, which is never followed.
    #[error(
        "{} is a symbolic link; a run's directory is never reached through one",
        path.display()
    )]
    Symlink {
        /// The link.
        path: PathBuf,
    },
    /// A file or directory inside the tree could not be read.
    #[error("reading {} failed", path.display())]
    Source {
        /// The entry that failed.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The tree changed while it was read: an entry was swapped for another (a symlink, say)
    /// between being looked at and opened, vanished, or shrank. Nothing outside the tree was
    /// read; the archive is abandoned and may succeed once the tree is settled.
    #[error(
        "the tree changed while it was read: {} {detail}; the archive is abandoned",
        path.display()
    )]
    Changed {
        /// The entry that changed.
        path: PathBuf,
        /// How.
        detail: &'static str,
    },
    /// The tree holds more file content than the archive may (`storage.maxArchiveBytes`).
    #[error(
        "the tree holds more than {limit} bytes of file content (storage.maxArchiveBytes), \
         found at {}; it is not archived",
        path.display()
    )]
    TooLarge {
        /// The file that crossed the limit, not read.
        path: PathBuf,
        /// The limit, in bytes.
        limit: u64,
    },
    /// The tree holds more entries than the archive may (`storage.maxArchiveEntries`).
    #[error(
        "the tree holds more than {limit} entries (storage.maxArchiveEntries), the last at {}; \
         it is not archived",
        path.display()
    )]
    TooManyEntries {
        /// The entry that crossed the limit.
        path: PathBuf,
        /// The limit.
        limit: u64,
    },
    /// Removing a tree failed part way: the OS refused to unlink an entry.
    #[error("removing {} failed", path.display())]
    Remove {
        /// The entry that could not be removed.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// Writing the compressed stream failed (in the uploader, this means it stopped listening).
    #[error("writing the archive stream failed")]
    Output(#[source] io::Error),
    /// The options cannot produce a valid upload.
    #[error("invalid archive options: {0}")]
    InvalidOptions(String),
    /// An S3 request failed (see [`S3Failure::kind`]).
    #[error("{0}")]
    S3(Box<S3Failure>),
    /// The store holds a different size or sha256 than what was streamed.
    #[error("{key} in the store does not match the archive: {detail}")]
    Mismatch {
        /// The object key.
        key: String,
        /// Expected against found.
        detail: String,
    },
    /// The thread producing the archive panicked or was cancelled.
    #[error("the archive producer stopped unexpectedly: {0}")]
    Producer(String),
}

impl ArchiveError {
    /// Whether the same request may succeed later (the handler answers 503): the store was
    /// unreachable, overloaded or failing, what it stored does not match what was sent, or
    /// the tree changed while it was read.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::S3(failure) => failure.is_transient(),
            // The tree was read in full and the store kept something else: a new upload is the
            // remedy, not a different request.
            Self::Mismatch { .. } => true,
            // A step still writing settles; a tamperer keeps failing until dead-lettered, and
            // nothing outside the tree is read either way.
            Self::Changed { .. } => true,
            Self::SourceMissing { .. }
            | Self::NotADirectory { .. }
            | Self::Symlink { .. }
            | Self::Source { .. }
            | Self::TooLarge { .. }
            | Self::TooManyEntries { .. }
            | Self::Remove { .. }
            | Self::Output(_)
            | Self::InvalidOptions(_)
            | Self::Producer(_) => false,
        }
    }

    /// A short stable name for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::SourceMissing { .. } => "source_missing",
            Self::NotADirectory { .. } => "not_a_directory",
            Self::Symlink { .. } => "symlink",
            Self::Source { .. } => "source",
            Self::Changed { .. } => "changed",
            Self::TooLarge { .. } => "too_large",
            Self::TooManyEntries { .. } => "too_many_entries",
            Self::Remove { .. } => "remove",
            Self::Output(_) => "output",
            Self::InvalidOptions(_) => "invalid_options",
            Self::S3(_) => "s3",
            Self::Mismatch { .. } => "mismatch",
            Self::Producer(_) => "producer",
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

    pub(super) fn s3<E>(
        operation: &'static str,
        bucket: &str,
        key: &str,
        error: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> Self
    where
        E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
    {
        Self::S3(Box::new(S3Failure::from_sdk(operation, bucket, key, error)))
    }
}

/// How the function answers an archive failure: the store failing or holding something else, or
/// the tree changing while it was read, is retried (503); a tree that cannot be read or a store
/// refusing the configuration (credentials, permissions, a missing bucket) is a 500, which the
/// Broker also retries before dead-lettering, since answering 2xx would lose the workspace. The
/// OS's error stays the cause, for the log.
impl From<ArchiveError> for tekflux_common::Error {
    fn from(error: ArchiveError) -> Self {
        let message = error.to_string();
        let answer = if error.is_transient() {
            Self::Unavailable(message)
        } else {
            Self::Internal(message)
        };
        if std::error::Error::source(&error).is_some() {
            answer.because(error)
        } else {
            answer
        }
    }
}
