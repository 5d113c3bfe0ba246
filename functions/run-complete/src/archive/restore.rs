//! Unpacking an archive into a directory without trusting it.
//!
//! The archive is unpacked into a private staging directory inside the target (so the final
//! moves are renames on one filesystem, which also works when the target is a mount point such
//! as a Tekton `emptyDir`), checked against its sha256, and only then moved into place. Any
//! refusal or failure removes the staging directory, leaving the target as it was.
//!
//! Refused: absolute paths and `..`, writes through a symlink restored earlier, symlinks that
//! lead outside the target, hard links, device files and FIFOs, more entries or content bytes
//! than the limits. Content bytes are counted as they are written, so a decompression bomb
//! stops at the limit, and the zstd window is bounded so memory is too.
//!
//! # Where symlinks lead
//!
//! Every entry is written below real directories only (parents are checked with `lstat`, files
//! are created `O_EXCL`), so only symlinks can make the restored tree reach outside. A link's
//! text alone does not tell where it leads: `a/b/c/d/e/f/l1 -> ../../../../../..` is the
//! target's root, so `esc -> a/b/c/d/e/f/l1/../../../../../../../etc/hostname` is
//! `/etc/hostname` although the text never climbs above the root. So links are checked once the
//! whole archive is unpacked (before anything moves into place), against the final set of
//! links and in no particular order, by walking each link's target the way the kernel does:
//!
//! - from the link's directory, component by component; `..` goes to the parent;
//! - a component that is a link of the archive is replaced by where that link leads (worked out
//!   the same way, once per link), so links through links are followed;
//! - a component that is not a link (a directory, a file, or nothing yet) is taken as a
//!   directory, so a dangling link is judged by where it would lead once the missing part is
//!   created;
//! - the link is refused when the walk leaves the root at any point (`..` from the root, or an
//!   absolute target), when it comes back to a link still being resolved (a loop), when it
//!   follows more than [`MAX_FOLLOWS`] links (the kernel's own bound), or when it reaches a path
//!   longer than [`MAX_RESOLVED_LEN`].
//!
//! What is accepted therefore resolves inside the target, and still does once a later step
//! creates the directories a dangling link goes through. Some links a lexical check refused
//! are now accepted:
//! `up -> l1/../../x` with `l1 -> a/b` is `x`, inside. The links and where they lead are held
//! in memory, within [`LINKS_MEMORY`].
//!
//! # What is held in memory
//!
//! Restore's memory is bounded whatever the archive holds: the zstd window
//! ([`RestoreLimits::max_window_log`]), one GNU long name, long link name or PAX extension
//! header at a time ([`RestoreLimits::max_header_bytes`], checked against the header's size
//! before a byte of it is read; the `tar` crate would read them whole, so entries are taken raw
//! and these headers applied here), the links and where they lead ([`LINKS_MEMORY`]) and the
//! directories whose times are set last ([`DIRECTORIES_MEMORY`]).

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, FileTimes, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, UNIX_EPOCH};

use aws_sdk_s3::Client;
use sha2::{Digest, Sha256};

use super::Progress;
use super::s3_error::{S3ErrorKind, S3Failure};

mod decode;
mod error;
mod links;
mod unpack;

pub use error::RestoreError;
use unpack::{finish_directories, unpack};

/// Default largest zstd window accepted, and the largest written, 2^25 = 32 MiB: with the decoder's buffers and the
/// link model ([`LINKS_MEMORY`]) it fits the restore Task's 128 MiB memory limit. zstd levels
/// up to 19 use at most 2^23 (8 MiB); levels 20 to 22 use 2^25 to 2^27, so the archiver caps
/// them at this window and tekflux can always restore what it wrote.
pub(super) const WINDOW_LOG_MAX: u32 = 25;

/// Most symlinks followed to resolve one link, Linux's `MAXSYMLINKS`: a longer chain (or a
/// loop) is refused, as the kernel would refuse to follow it.
const MAX_FOLLOWS: u32 = 40;

/// Longest path below the target, in bytes, that a link may lead to (Linux's `PATH_MAX`). It
/// also keeps each step of a walk cheap.
const MAX_RESOLVED_LEN: usize = 4096;

/// Longest symlink target restored, in bytes: Linux refuses to create longer ones.
const MAX_LINK_TARGET: usize = 4095;

/// Memory, in bytes, for the symlinks of one archive and where they lead (see [`Links`]):
/// about 60,000 links of pnpm's `node_modules` kind. With the zstd window and the process
/// itself it stays well under the restore Task's 128 MiB.
const LINKS_MEMORY: usize = 32 * 1024 * 1024;

/// Memory, in bytes, for the directories whose mode and times are set once their contents are
/// written: about 170,000 directories with paths of 100 bytes.
const DIRECTORIES_MEMORY: usize = 32 * 1024 * 1024;

/// Bytes counted for each directory beyond its path: the list's slot (twice, as the list grows
/// by doubling) and the path's heap block.
const DIRECTORY_OVERHEAD: usize = 96;

/// Bytes counted for each link, and again for where it leads, beyond the bytes of its paths:
/// map nodes, path headers and allocator rounding (measured at 190 and 100 on x86-64 glibc).
const LINK_OVERHEAD: usize = 192;

/// Mode bits restored: permissions and the sticky bit. setuid/setgid are dropped: a workspace
/// has no business creating them.
const MODE_MASK: u32 = 0o1777;

/// Bounds a restore refuses to exceed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreLimits {
    /// Most tar entries accepted.
    pub max_entries: u64,
    /// Most bytes of file content written, in total.
    pub max_bytes: u64,
    /// Largest GNU long name, long link name or PAX extension header read, in bytes. tekflux
    /// writes long names of at most 4 KiB (Linux's `PATH_MAX`).
    pub max_header_bytes: u64,
    /// Base-2 log of the largest zstd window accepted (25 is 32 MiB, the largest tekflux
    /// writes; zstd's own default limit is 27). The decoder holds one window.
    pub max_window_log: u32,
}

impl Default for RestoreLimits {
    fn default() -> Self {
        Self {
            max_entries: 1_000_000,
            max_bytes: 64 * 1024 * 1024 * 1024,
            max_header_bytes: 1024 * 1024,
            max_window_log: WINDOW_LOG_MAX,
        }
    }
}

impl RestoreLimits {
    /// The window logs zstd can decode with: 2^10 (1 KiB) to 2^31 (2 GiB).
    pub const WINDOW_LOG_RANGE: std::ops::RangeInclusive<u32> = 10..=31;
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
    pub progress: Progress,
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

/// Unpacks a zstd-compressed tar stream into `target`, which must not exist or be empty.
/// Blocking.
///
/// # Errors
/// See [`RestoreError`]; the target is left as it was.
#[tracing::instrument(skip(reader, options), fields(target = %target.display()))]
pub fn restore_archive<R: Read + Send>(
    reader: R,
    target: &Path,
    options: &RestoreOptions,
) -> Result<RestoreReport, RestoreError> {
    restore_with_source_check(reader, target, options, &|| None)
}

/// [`restore_archive`], where `source_failure` tells whether a read error came from the source
/// (the store) rather than from the archive's content.
fn restore_with_source_check<R: Read + Send>(
    reader: R,
    target: &Path,
    options: &RestoreOptions,
    source_failure: &dyn Fn() -> Option<RestoreError>,
) -> Result<RestoreReport, RestoreError> {
    check_target(target)?;
    let created_target = prepare_target(target)?;
    let staging = target.join(format!(
        ".tekflux-restore-{}-{}",
        std::process::id(),
        UNIX_EPOCH
            .elapsed()
            .map(|d| d.subsec_nanos())
            .unwrap_or_default()
    ));
    let result = fs::create_dir(&staging)
        .map_err(|source| RestoreError::Write {
            path: staging.clone(),
            source,
        })
        .and_then(|()| unpack(reader, &staging, options))
        .map_err(|error| source_failure().unwrap_or(error))
        .and_then(|(report, top_level)| {
            move_into_place(&staging, target)?;
            finish_directories(target, top_level)?;
            Ok(report)
        });
    if result.is_err() {
        let _ = fs::remove_dir_all(&staging);
        if created_target {
            let _ = fs::remove_dir(target);
        }
    }
    result
}

/// Checks, without changing anything, that a restore can fill `target`: it is an empty
/// directory this process may write to, or it does not exist and its nearest existing ancestor
/// is a directory this process may create entries in.
///
/// [`restore_archive`] and [`restore_from_s3`] make this check first; callers that do more
/// before a restore (ask the store for the size, say) call it themselves, so that a target that
/// cannot be filled is refused before anything else happens.
///
/// # Errors
/// [`RestoreError::TargetNotEmpty`] when it exists and is not an empty directory,
/// [`RestoreError::Write`] when it or its ancestor cannot be written.
pub fn check_target(target: &Path) -> Result<(), RestoreError> {
    use rustix::fs::{Access, access};
    let write_error = |path: &Path, source: io::Error| RestoreError::Write {
        path: path.to_owned(),
        source,
    };
    let writable = |dir: &Path| {
        access(dir, Access::WRITE_OK | Access::EXEC_OK)
            .map_err(|errno| write_error(dir, io::Error::from(errno)))
    };
    match fs::symlink_metadata(target) {
        Ok(meta) if meta.is_dir() => {
            let mut entries = fs::read_dir(target).map_err(|error| write_error(target, error))?;
            if entries.next().is_some() {
                return Err(RestoreError::TargetNotEmpty {
                    path: target.to_owned(),
                });
            }
            writable(target)
        }
        Ok(_) => Err(RestoreError::TargetNotEmpty {
            path: target.to_owned(),
        }),
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            // `create_dir_all` will create the missing part below the nearest existing ancestor.
            for ancestor in target.ancestors().skip(1) {
                let ancestor = if ancestor.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    ancestor
                };
                match fs::metadata(ancestor) {
                    Ok(meta) if meta.is_dir() => return writable(ancestor),
                    Ok(_) => {
                        return Err(write_error(
                            ancestor,
                            io::Error::from(io::ErrorKind::NotADirectory),
                        ));
                    }
                    Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                    Err(error) => return Err(write_error(ancestor, error)),
                }
            }
            Ok(())
        }
        Err(error) => Err(write_error(target, error)),
    }
}

/// Checks that `target` is empty or absent, creating it in the latter case (returns true).
fn prepare_target(target: &Path) -> Result<bool, RestoreError> {
    let write_error = |source| RestoreError::Write {
        path: target.to_owned(),
        source,
    };
    match fs::symlink_metadata(target) {
        Ok(meta) if meta.is_dir() => {
            let mut entries = fs::read_dir(target).map_err(write_error)?;
            if entries.next().is_some() {
                return Err(RestoreError::TargetNotEmpty {
                    path: target.to_owned(),
                });
            }
            Ok(false)
        }
        Ok(_) => Err(RestoreError::TargetNotEmpty {
            path: target.to_owned(),
        }),
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(target).map_err(write_error)?;
            Ok(true)
        }
        Err(error) => Err(write_error(error)),
    }
}

fn move_into_place(staging: &Path, target: &Path) -> Result<(), RestoreError> {
    let write_error = |path: &Path| {
        let path = path.to_owned();
        move |source| RestoreError::Write { path, source }
    };
    for entry in fs::read_dir(staging).map_err(write_error(staging))? {
        let entry = entry.map_err(write_error(staging))?;
        let to = target.join(entry.file_name());
        fs::rename(entry.path(), &to).map_err(write_error(&to))?;
    }
    fs::remove_dir(staging).map_err(write_error(staging))
}

/// Counts and hashes the compressed bytes as the decoder pulls them.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
    progress: Progress,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.hasher.update(&buf[..read]);
        self.bytes += read as u64;
        self.progress.advance(read as u64);
        Ok(read)
    }
}

fn corrupt(error: &io::Error) -> RestoreError {
    // zstd refuses a frame whose window is over `window_log_max` with this message; it is the
    // one error that a limit, not damage, causes.
    if error.to_string().contains("requires too much memory") {
        RestoreError::WindowTooLarge
    } else {
        RestoreError::Corrupt(error.to_string())
    }
}

/// Downloads `s3://bucket/key` and unpacks it into `target` (see [`restore_archive`]),
/// streaming: the object is never held in memory.
///
/// # Errors
/// [`RestoreError::NotFound`] for a missing object, [`RestoreError::S3`] when the store fails,
/// and the refusals of [`restore_archive`].
#[tracing::instrument(skip(client, options), fields(target = %target.display()))]
pub async fn restore_from_s3(
    client: &Client,
    bucket: &str,
    key: &str,
    target: &Path,
    options: &RestoreOptions,
) -> Result<RestoreReport, RestoreError> {
    // Local first: a target that cannot be filled is refused before the store is asked.
    check_target(target)?;
    let object = match client.get_object().bucket(bucket).key(key).send().await {
        Ok(object) => object,
        Err(error) => {
            let failure = S3Failure::from_sdk("GetObject", bucket, key, &error);
            return Err(if failure.kind() == S3ErrorKind::NoSuchKey {
                RestoreError::NotFound {
                    bucket: bucket.to_owned(),
                    key: key.to_owned(),
                }
            } else {
                RestoreError::S3(Box::new(failure))
            });
        }
    };
    let body = tokio_util::io::SyncIoBridge::new(object.body.into_async_read());
    let source = SourceReader {
        inner: body,
        failure: Arc::new(Mutex::new(None)),
    };
    let failure = Arc::clone(&source.failure);
    let (target, options) = (target.to_owned(), options.clone());
    let (bucket, key) = (bucket.to_owned(), key.to_owned());
    // The unpacking thread logs under the caller's span (the request's, or the CLI's).
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        let source_failure = || {
            failure
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
                .map(|detail| {
                    RestoreError::S3(Box::new(S3Failure::unavailable(
                        "GetObject",
                        &bucket,
                        &key,
                        detail,
                    )))
                })
        };
        restore_with_source_check(source, &target, &options, &source_failure)
    })
    .await
    .map_err(|error| RestoreError::Stopped(error.to_string()))?
}

/// The object body, remembering a read failure so it is reported as the store's fault and
/// not as a corrupt archive.
struct SourceReader<R> {
    inner: R,
    failure: Arc<Mutex<Option<String>>>,
}

impl<R: Read> Read for SourceReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|error| {
            *self.failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(format!(
                "reading the body failed: {}",
                super::without_os_error(&error.to_string())
            ));
        })
    }
}
