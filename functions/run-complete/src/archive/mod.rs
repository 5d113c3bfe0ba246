//! Workspace archives: a directory becomes a zstd-compressed tar stream uploaded to S3 with
//! bounded memory, and an archive becomes a directory again without trusting its contents.
//!
//! - [`Tree`] holds a directory by descriptor: [`Tree::open`] for a trusted path (a configured
//!   mount, the CLI's argument), [`Tree::open_below`] for a run's `subPath`, whose components
//!   are never followed through a symlink. Everything below is reached `openat`-style, never
//!   through a symlink, and checked after opening to be what was looked at, so a tree that is
//!   rewritten during the walk cannot lead it outside ([`ArchiveError::Changed`] instead).
//! - [`upload_archive`] walks the tree in sorted order, so the same tree always gives the
//!   same bytes and sha256, and streams tar → zstd → S3 multipart from a blocking thread through
//!   a bounded channel. A failed multipart upload is aborted, never left to accumulate parts.
//!   At most [`ArchiveOptions::max_bytes`] of file content is archived.
//! - [`Tree::remove_below`] deletes a run's directory the same way: renamed aside, then
//!   unlinked entry by entry, never following a link.
//! - [`verify_archive`] reads an object back and recomputes its sha256, for callers that must
//!   be sure before deleting the source.
//! - [`restore_archive`] and [`restore_from_s3`] unpack into a private directory, refuse
//!   anything that could write outside the target, and only then move the result into place.
//!   [`check_target`] is the first check they make, for callers that want it done before
//!   anything else (the CLI checks it before any request).
//! - [`S3Failure`] says what an S3 request's failure means in plain words and whether it is
//!   worth a retry ([`S3ErrorKind`]).

mod chunk_sink;
mod error;
mod restore;
mod s3_error;
mod tar_stream;
mod tree;
mod upload;

pub use restore::{
    RestoreError, RestoreLimits, RestoreOptions, RestoreReport, check_target, restore_archive,
    restore_from_s3,
};
pub use s3_error::{S3ErrorKind, S3Failure};
pub use tar_stream::{TarSummary, write_archive};
pub use tree::Tree;
pub use upload::{
    ArchiveError, ArchiveOptions, ArchiveReport, DEFAULT_MAX_ARCHIVE_BYTES,
    DEFAULT_MAX_ARCHIVE_ENTRIES, MIN_PART_SIZE, VerifiedObject, upload_archive, verify_archive,
};

use std::sync::Arc;

pub(crate) use tekflux_common::error::without_os_error;

/// A callback told how many bytes were just processed, for progress bars; does nothing when
/// empty (the default).
#[derive(Clone, Default)]
pub struct Progress(Option<Arc<dyn Fn(u64) + Send + Sync>>);

impl Progress {
    /// Calls `report` with each increment.
    pub fn new(report: impl Fn(u64) + Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(report)))
    }

    /// Reports `bytes` more processed.
    pub fn advance(&self, bytes: u64) {
        if let Some(report) = &self.0 {
            report(bytes);
        }
    }
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Progress(on)"
        } else {
            "Progress(off)"
        })
    }
}
