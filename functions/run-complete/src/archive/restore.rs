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
    #[error("cannot write {}: {}", path.display(), super::without_os_error(&source.to_string()))]
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

/// Unpacks a zstd-compressed tar stream into `target`, which must not exist or be empty.
/// Blocking.
///
/// # Errors
/// See [`RestoreError`]; the target is left as it was.
pub fn restore_archive<R: Read>(
    reader: R,
    target: &Path,
    options: &RestoreOptions,
) -> Result<RestoreReport, RestoreError> {
    restore_with_source_check(reader, target, options, &|| None)
}

/// [`restore_archive`], where `source_failure` tells whether a read error came from the source
/// (the store) rather than from the archive's content.
fn restore_with_source_check<R: Read>(
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

/// Directories below a root, with the mode and modification time each gets last.
type DirectoryTimes = Vec<(PathBuf, u32, u64)>;

/// Unpacks into `staging`, and returns the report with the top-level directories whose mode and
/// time are set only once they are in the target: renaming a directory to another parent
/// rewrites its `..`, which needs write permission on it, so a read-only one (Go's module cache
/// has many) set in staging could not be moved by an unprivileged restore.
fn unpack<R: Read>(
    reader: R,
    staging: &Path,
    options: &RestoreOptions,
) -> Result<(RestoreReport, DirectoryTimes), RestoreError> {
    let limits = &options.limits;
    let hashing = HashingReader {
        inner: reader,
        hasher: Sha256::new(),
        bytes: 0,
        progress: options.progress.clone(),
    };
    let mut decoder = zstd::stream::read::Decoder::new(hashing).map_err(|e| corrupt(&e))?;
    decoder
        .window_log_max(limits.max_window_log)
        .map_err(|e| corrupt(&e))?;
    let mut archive = tar::Archive::new(decoder);
    let mut entries = 0u64;
    let mut written = 0u64;
    // Directory times are set last: writing their contents changes them.
    let mut directories = Directories::default();
    let mut links = Links::default();
    // Raw entries: long names and PAX headers come as entries of their own, so their size is
    // checked before they are read (see the module docs).
    let mut names = PendingNames::default();
    let mut last_path = String::new();

    for entry in archive.entries().map_err(|e| corrupt(&e))?.raw(true) {
        let mut entry = entry.map_err(|e| corrupt(&e))?;
        let entry_type = entry.header().entry_type();
        if let Some(kind) = PendingNames::header_kind(entry_type) {
            let size = entry.size();
            if size > limits.max_header_bytes {
                return Err(RestoreError::HeaderTooLarge {
                    kind,
                    size,
                    limit: limits.max_header_bytes,
                    after: last_path,
                });
            }
            let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or_default());
            entry.read_to_end(&mut data).map_err(|e| corrupt(&e))?;
            names
                .take(entry_type, data)
                .map_err(|reason| RestoreError::Hostile {
                    entry: format!("(a {kind} after {last_path:?})"),
                    reason,
                })?;
            continue;
        }
        entries += 1;
        if entries > limits.max_entries {
            return Err(RestoreError::TooManyEntries {
                limit: limits.max_entries,
            });
        }
        let (path_bytes, link_bytes) = names.apply(&entry);
        let raw_path = String::from_utf8_lossy(&path_bytes).into_owned();
        last_path.clone_from(&raw_path);
        let hostile = |reason: &str| RestoreError::Hostile {
            entry: raw_path.clone(),
            reason: reason.to_owned(),
        };
        let relative = safe_relative_path(&raw_path).ok_or_else(|| {
            hostile("absolute paths, `..` and empty names could write outside the target")
        })?;
        let destination = staging.join(&relative);
        let header = entry.header();
        let mode = header.mode().map_err(|e| corrupt(&e))? & MODE_MASK;
        let mtime = header.mtime().unwrap_or(0);
        let entry_type = header.entry_type();
        ensure_parents(staging, &relative).map_err(|reason| hostile(&reason))?;
        let write_error = |source| RestoreError::Write {
            path: destination.clone(),
            source,
        };

        match entry_type {
            tar::EntryType::Directory => {
                match fs::symlink_metadata(&destination) {
                    Ok(meta) if meta.is_dir() => {}
                    Ok(_) => return Err(hostile("a directory over an entry restored earlier")),
                    Err(_) => fs::create_dir(&destination).map_err(write_error)?,
                }
                directories
                    .add(relative.clone(), mode, mtime)
                    .map_err(|reason| hostile(&reason))?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                // create_new (O_EXCL) never opens an existing path, so a symlink restored
                // earlier under this name cannot redirect the write.
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&destination)
                    .map_err(|source| match source.kind() {
                        io::ErrorKind::AlreadyExists => {
                            hostile("a second entry with the same name (or through a link)")
                        }
                        _ => RestoreError::Write {
                            path: destination.clone(),
                            source,
                        },
                    })?;
                let room = limits.max_bytes - written;
                let copied = io::copy(&mut (&mut entry).take(room + 1), &mut file)
                    .map_err(|e| corrupt(&e))?;
                if copied > room {
                    return Err(RestoreError::TooManyBytes {
                        limit: limits.max_bytes,
                    });
                }
                written += copied;
                file.set_permissions(fs::Permissions::from_mode(mode))
                    .map_err(write_error)?;
                set_mtime(&file, mtime).map_err(write_error)?;
            }
            tar::EntryType::Symlink => {
                let link = link_bytes
                    .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                    .ok_or_else(|| hostile("a symlink without a target"))?;
                // Where a relative link leads is known only once every link is restored.
                if link.is_empty() || Path::new(&link).has_root() {
                    return Err(hostile(&format!(
                        "the symlink points to {link:?}, outside the target"
                    )));
                }
                if link.len() > MAX_LINK_TARGET {
                    return Err(hostile(&format!(
                        "the symlink's target is longer than {MAX_LINK_TARGET} bytes"
                    )));
                }
                links
                    .add(&relative, &link)
                    .map_err(|reason| hostile(&reason))?;
                std::os::unix::fs::symlink(&link, &destination).map_err(|source| {
                    match source.kind() {
                        io::ErrorKind::AlreadyExists => {
                            hostile("a second entry with the same name")
                        }
                        _ => RestoreError::Write {
                            path: destination.clone(),
                            source,
                        },
                    }
                })?;
            }
            tar::EntryType::Link => {
                return Err(hostile(
                    "hard links are not restored (tekflux archives store files, never hard links)",
                ));
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                return Err(hostile("device files are not restored"));
            }
            tar::EntryType::Fifo => return Err(hostile("FIFOs are not restored")),
            other => {
                return Err(hostile(&format!("entry type {other:?} is not restored")));
            }
        }
    }

    if let Some(kind) = names.dangling() {
        return Err(RestoreError::Corrupt(format!(
            "the archive ends with a {kind} that no entry follows"
        )));
    }
    links.check().map_err(|refusal| RestoreError::Hostile {
        entry: refusal.link.display().to_string(),
        reason: refusal.reason,
    })?;

    // Read to the end of the stream so the sha256 covers the whole object.
    let mut decoder = archive.into_inner();
    io::copy(&mut decoder, &mut io::sink()).map_err(|e| corrupt(&e))?;
    // Bytes after the last zstd frame still belong to the object and its sha256; those in the
    // decoder's buffer were hashed when they were read.
    let mut rest = decoder.finish();
    io::copy(&mut rest, &mut io::sink()).map_err(|e| corrupt(&e))?;
    let mut hashing = rest.into_inner();
    let sha256 = hex::encode(hashing.hasher.finalize_reset());
    if let Some(expected) = &options.expected_sha256
        && !expected.eq_ignore_ascii_case(&sha256)
    {
        return Err(RestoreError::ShaMismatch {
            expected: expected.clone(),
            found: sha256,
        });
    }

    let (top_level, nested): (Vec<_>, Vec<_>) = directories
        .list
        .into_iter()
        .partition(|(relative, _, _)| relative.components().count() == 1);
    finish_directories(staging, nested)?;

    Ok((
        RestoreReport {
            entries,
            bytes: written,
            archive_bytes: hashing.bytes,
            sha256,
        },
        top_level,
    ))
}

/// Sets each directory's mode and time, deepest last-listed first (a directory's contents are
/// written before its own time is set).
fn finish_directories(root: &Path, list: DirectoryTimes) -> Result<(), RestoreError> {
    for (relative, mode, mtime) in list.into_iter().rev() {
        let dir = root.join(relative);
        let write_error = |source| RestoreError::Write {
            path: dir.clone(),
            source,
        };
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode | 0o700)).map_err(write_error)?;
        let file = File::open(&dir).map_err(write_error)?;
        set_mtime(&file, mtime).map_err(write_error)?;
        if mode & 0o700 != 0o700 {
            fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).map_err(write_error)?;
        }
    }
    Ok(())
}

fn set_mtime(file: &File, mtime: u64) -> io::Result<()> {
    let time = UNIX_EPOCH + Duration::from_secs(mtime);
    file.set_times(FileTimes::new().set_modified(time).set_accessed(time))
}

/// The entry path as plain components below the root, or `None` when it is absolute, climbs
/// with `..`, or names nothing.
fn safe_relative_path(raw: &str) -> Option<PathBuf> {
    let mut relative = PathBuf::new();
    for component in Path::new(raw).components() {
        match component {
            Component::Normal(part) => relative.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (!relative.as_os_str().is_empty()).then_some(relative)
}

/// Creates the missing parents of `relative` below `root` as real directories, and refuses a
/// parent that is anything else (a symlink restored earlier, or a file).
fn ensure_parents(root: &Path, relative: &Path) -> Result<(), String> {
    let Some(parent) = relative.parent() else {
        return Ok(());
    };
    let mut current = root.to_owned();
    for component in parent.components() {
        current.push(component);
        match fs::symlink_metadata(&current) {
            Ok(meta) if meta.is_dir() => {}
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err("the entry would be written through a symlink".to_owned());
            }
            Ok(_) => return Err("a parent of the entry is not a directory".to_owned()),
            Err(_) => fs::create_dir(&current)
                .map_err(|error| format!("cannot create {}: {error}", current.display()))?,
        }
    }
    Ok(())
}

/// GNU long names and PAX records waiting for the entry they describe.
#[derive(Debug, Default)]
struct PendingNames {
    long_path: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax: Option<Vec<u8>>,
}

impl PendingNames {
    /// What an entry of this type is, when it describes the next entry instead of being one.
    fn header_kind(entry_type: tar::EntryType) -> Option<&'static str> {
        match entry_type {
            tar::EntryType::GNULongName => Some("GNU long name"),
            tar::EntryType::GNULongLink => Some("GNU long link name"),
            tar::EntryType::XHeader => Some("PAX extended header"),
            tar::EntryType::XGlobalHeader => Some("PAX global header"),
            _ => None,
        }
    }

    /// Keeps what a header entry says for the next entry.
    fn take(&mut self, entry_type: tar::EntryType, data: Vec<u8>) -> Result<(), String> {
        let slot = match entry_type {
            tar::EntryType::GNULongName => &mut self.long_path,
            tar::EntryType::GNULongLink => &mut self.long_link,
            tar::EntryType::XHeader => {
                for record in tar::PaxExtensions::new(&data) {
                    let record = record.map_err(|_| "a malformed PAX record".to_owned())?;
                    let key = record.key_bytes();
                    // A size other than the header's would frame the stream differently
                    // than the header says (and than the `tar` crate reads it raw).
                    if key == b"size" {
                        return Err(
                            "PAX size records are not restored (tekflux writes sizes in \
                                    the header)"
                                .to_owned(),
                        );
                    }
                    if key.starts_with(b"GNU.sparse.") {
                        return Err("sparse files are not restored".to_owned());
                    }
                }
                &mut self.pax
            }
            // Global headers set defaults (owners, times) that restore does not use.
            _ => return Ok(()),
        };
        if slot.is_some() {
            return Err("two headers of the same kind describe one entry".to_owned());
        }
        *slot = Some(data);
        Ok(())
    }

    /// The path and link name of `entry`, with what the headers before it said; resets.
    /// A PAX record wins over a GNU long name, which wins over the entry's own header.
    fn apply<R: Read>(&mut self, entry: &tar::Entry<'_, R>) -> (Vec<u8>, Option<Vec<u8>>) {
        let pax = self.pax.take();
        let pax_value = |key: &[u8]| {
            pax.as_deref().and_then(|data| {
                tar::PaxExtensions::new(data)
                    .flatten()
                    .find(|record| record.key_bytes() == key)
                    .map(|record| record.value_bytes().to_vec())
            })
        };
        let long_path = self.long_path.take().map(without_trailing_nuls);
        let long_link = self.long_link.take().map(without_trailing_nuls);
        let path = pax_value(b"path")
            .or(long_path)
            .unwrap_or_else(|| entry.path_bytes().into_owned());
        let link = pax_value(b"linkpath")
            .or(long_link)
            .or_else(|| entry.link_name_bytes().map(|bytes| bytes.into_owned()));
        (path, link)
    }

    /// The kind of a header still waiting for its entry.
    fn dangling(&self) -> Option<&'static str> {
        if self.long_path.is_some() {
            Some("GNU long name")
        } else if self.long_link.is_some() {
            Some("GNU long link name")
        } else if self.pax.is_some() {
            Some("PAX extended header")
        } else {
            None
        }
    }
}

fn without_trailing_nuls(mut bytes: Vec<u8>) -> Vec<u8> {
    while bytes.last() == Some(&0) {
        bytes.pop();
    }
    bytes
}

/// Directories restored, below the staging directory, with the mode and time to set last.
#[derive(Debug, Default)]
struct Directories {
    list: DirectoryTimes,
    /// Bytes counted against [`DIRECTORIES_MEMORY`].
    memory: usize,
}

impl Directories {
    fn add(&mut self, relative: PathBuf, mode: u32, mtime: u64) -> Result<(), String> {
        self.memory += relative.as_os_str().len() + DIRECTORY_OVERHEAD;
        if self.memory > DIRECTORIES_MEMORY {
            return Err(format!(
                "the archive has more directories than can be kept in {} MiB (limit)",
                DIRECTORIES_MEMORY >> 20
            ));
        }
        self.list.push((relative, mode, mtime));
        Ok(())
    }
}

/// The symlinks of an archive: path below the root (whose parents are real directories) →
/// target as stored. Checked as a whole by [`Links::check`], so the order of the entries does
/// not matter.
#[derive(Debug, Default)]
struct Links {
    targets: BTreeMap<PathBuf, PathBuf>,
    /// Bytes counted against [`LINKS_MEMORY`].
    memory: usize,
}

/// A link refused by [`Links::check`].
#[derive(Debug, PartialEq, Eq)]
struct LinkRefusal {
    link: PathBuf,
    reason: String,
}

impl Links {
    /// Records the link at `path` (relative, already created on disk) to `target`.
    fn add(&mut self, path: &Path, target: &str) -> Result<(), String> {
        self.memory += path.as_os_str().len() + target.len() + LINK_OVERHEAD;
        if self.memory > LINKS_MEMORY {
            return Err(too_many_links());
        }
        self.targets.insert(path.to_owned(), PathBuf::from(target));
        Ok(())
    }

    /// Resolves every link (see the module docs) and returns the first one refused.
    fn check(&self) -> Result<(), LinkRefusal> {
        let mut walk = Walk {
            targets: &self.targets,
            resolved: HashMap::new(),
            memory: self.memory,
        };
        for link in self.targets.keys() {
            walk.resolve(link)?;
        }
        Ok(())
    }
}

fn too_many_links() -> String {
    format!(
        "the archive has more symlinks than can be checked in {} MiB (limit)",
        LINKS_MEMORY >> 20
    )
}

/// What is known of a link during [`Links::check`].
#[derive(Debug)]
enum Resolution {
    /// Its target is being walked; meeting it again is a loop.
    InProgress,
    /// It leads to `path` (below the root, through no link) by following `follows` links,
    /// itself included.
    Inside { path: PathBuf, follows: u32 },
}

struct Walk<'a> {
    targets: &'a BTreeMap<PathBuf, PathBuf>,
    resolved: HashMap<&'a Path, Resolution>,
    memory: usize,
}

impl<'a> Walk<'a> {
    /// Where `link` leads, and through how many links, worked out once.
    fn resolve(&mut self, link: &'a Path) -> Result<(PathBuf, u32), LinkRefusal> {
        match self.resolved.get(link) {
            Some(Resolution::Inside { path, follows }) => return Ok((path.clone(), *follows)),
            Some(Resolution::InProgress) => {
                return Err(refuse(link, "the symlink is part of a loop"));
            }
            None => {}
        }
        self.resolved.insert(link, Resolution::InProgress);
        let targets = self.targets;
        let from = link.parent().unwrap_or(Path::new("")).to_owned();
        let (path, follows) = self.walk(link, from, &targets[link])?;
        let follows = follows + 1;
        if follows > MAX_FOLLOWS {
            return Err(too_many_follows(link));
        }
        self.memory += path.as_os_str().len() + LINK_OVERHEAD;
        if self.memory > LINKS_MEMORY {
            return Err(refuse(link, &too_many_links()));
        }
        self.resolved.insert(
            link,
            Resolution::Inside {
                path: path.clone(),
                follows,
            },
        );
        Ok((path, follows))
    }

    /// Walks `target` from the directory `at`, for the link `link`.
    fn walk(
        &mut self,
        link: &'a Path,
        mut at: PathBuf,
        target: &Path,
    ) -> Result<(PathBuf, u32), LinkRefusal> {
        let mut follows = 0;
        for component in target.components() {
            match component {
                Component::CurDir => {}
                Component::ParentDir => {
                    if !at.pop() {
                        return Err(refuse(
                            link,
                            &format!(
                                "the symlink points to {target:?}, which leads outside the target"
                            ),
                        ));
                    }
                }
                Component::Normal(name) => {
                    at.push(name);
                    if at.as_os_str().len() > MAX_RESOLVED_LEN {
                        return Err(refuse(
                            link,
                            &format!(
                                "the symlink leads to a path longer than {MAX_RESOLVED_LEN} bytes"
                            ),
                        ));
                    }
                    if let Some((through, _)) = self.targets.get_key_value(at.as_path()) {
                        let (leads_to, more) = self.resolve(through)?;
                        follows += more;
                        if follows > MAX_FOLLOWS {
                            return Err(too_many_follows(link));
                        }
                        at = leads_to;
                    }
                }
                Component::RootDir | Component::Prefix(_) => {
                    return Err(refuse(
                        link,
                        &format!("the symlink points to {target:?}, outside the target"),
                    ));
                }
            }
        }
        Ok((at, follows))
    }
}

fn too_many_follows(link: &Path) -> LinkRefusal {
    refuse(
        link,
        &format!("the symlink leads through more than {MAX_FOLLOWS} symlinks"),
    )
}

fn refuse(link: &Path, reason: &str) -> LinkRefusal {
    LinkRefusal {
        link: link.to_owned(),
        reason: reason.to_owned(),
    }
}

/// Downloads `s3://bucket/key` and unpacks it into `target` (see [`restore_archive`]),
/// streaming: the object is never held in memory.
///
/// # Errors
/// [`RestoreError::NotFound`] for a missing object, [`RestoreError::S3`] when the store fails,
/// and the refusals of [`restore_archive`].
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
    tokio::task::spawn_blocking(move || {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_paths_stay_below_the_root() {
        assert_eq!(safe_relative_path("./a/b"), Some(PathBuf::from("a/b")));
        for bad in ["/etc/passwd", "../x", "a/../../x", "a/..", "", ".", "./"] {
            assert_eq!(safe_relative_path(bad), None, "{bad}");
        }
    }

    /// Checks the links `(path, target)`, added in the given order and reversed; the answer
    /// must not depend on the order.
    fn check(links: &[(&str, &str)]) -> Result<(), String> {
        let answers: Vec<_> = [links.to_vec(), links.iter().rev().copied().collect()]
            .into_iter()
            .map(|order| {
                let mut model = Links::default();
                for (path, target) in order {
                    model.add(Path::new(path), target)?;
                }
                model.check().map_err(|refusal| refusal.reason)
            })
            .collect();
        assert_eq!(answers[0], answers[1], "{links:?}");
        answers[0].clone()
    }

    fn refused(links: &[(&str, &str)], expect: &str) {
        let reason = check(links).expect_err("refused");
        assert!(reason.contains(expect), "{links:?}: {reason}");
    }

    #[test]
    fn single_links_are_resolved_against_their_directory() {
        assert_eq!(check(&[("a/link", "../b")]), Ok(()));
        assert_eq!(check(&[("link", "a/../b")]), Ok(()));
        assert_eq!(check(&[("link", ".")]), Ok(()));
        refused(&[("link", "..")], "outside the target");
        refused(&[("a/link", "../../x")], "outside the target");
        refused(&[("link", "a/../../x")], "outside the target");
        // Leaving and coming back is refused too: the walk may not leave the root at all.
        refused(&[("a/link", "../../a/x")], "outside the target");
        // A dangling link is judged as if the missing part existed.
        refused(&[("link", "missing/../..")], "outside the target");
    }

    #[test]
    fn links_through_links_are_followed() {
        // The review's chain: l1 is the root, so esc climbs seven levels above it.
        refused(
            &[
                ("a/b/c/d/e/f/l1", "../../../../../.."),
                ("esc", "a/b/c/d/e/f/l1/../../../../../../../etc/hostname"),
            ],
            "outside the target",
        );
        // A link through a link through a link, each inside, the last step out.
        let chain = [
            ("d1/d2/d3/up3", "../../.."),
            ("d1/d2/up2", "../../d1/d2/d3/up3"),
            ("d1/up1", "../d1/d2/up2"),
        ];
        assert_eq!(check(&chain), Ok(()));
        let mut out = chain.to_vec();
        out.push(("esc", "d1/up1/.."));
        refused(&out, "outside the target");
        // `..` after a link leaves where the link leads, not where its text is.
        assert_eq!(check(&[("l1", "a/b"), ("up", "l1/../../x")]), Ok(()));
        refused(&[("l1", "a"), ("up", "l1/../../x")], "outside the target");
        // A link to a file, used as a directory, is taken as one.
        refused(
            &[("f", "a/file"), ("esc", "f/../../..")],
            "outside the target",
        );
    }

    #[test]
    fn loops_and_long_chains_are_refused() {
        refused(&[("a", "b"), ("b", "a")], "loop");
        refused(&[("self", "self")], "loop");
        refused(&[("self", "self/..")], "loop");
        refused(&[("d/a", "../e/b"), ("e/b", "../d/a/x")], "loop");
        let chain = |len: usize| -> Vec<(String, String)> {
            (0..len)
                .map(|i| (format!("l{i}"), format!("l{}", i + 1)))
                .collect()
        };
        fn as_refs(links: &[(String, String)]) -> Vec<(&str, &str)> {
            links
                .iter()
                .map(|(p, t)| (p.as_str(), t.as_str()))
                .collect()
        }
        // l0 → l1 → … → l39 → l40 (not a link): 40 links followed, as many as Linux does.
        assert_eq!(check(&as_refs(&chain(40))), Ok(()));
        refused(&as_refs(&chain(41)), "more than 40 symlinks");
    }

    #[test]
    fn long_paths_and_many_links_are_bounded() {
        let deep = "a/".repeat(2100);
        refused(&[("link", &deep)], "longer than 4096 bytes");
        // Each link's resolution stays short, but their sum is bounded.
        let target = "t".repeat(4000);
        let mut model = Links::default();
        let added = (0..10_000)
            .map(|i| model.add(&PathBuf::from(format!("l{i}")), &target))
            .position(|result| result.is_err())
            .expect("refused before 10,000 links of 4 KB");
        assert!(added > 3000, "{added}");
    }
}
