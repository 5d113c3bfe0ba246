//! Writing a directory as a reproducible tar stream compressed with zstd (blocking I/O).
//!
//! The walk goes through directory descriptors ([`super::tree`]): every entry is stat'ed and
//! opened relative to its parent without following symlinks, and checked to be what was
//! stat'ed before it is read, so a tree rewritten during the walk cannot lead it outside.

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::Stat;

use super::ArchiveError;
use super::tree::{Entry, Tree, look_up, names};

/// What writing one archive counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TarSummary {
    /// Tar entries written: directories, regular files and symlinks (the root is not one).
    pub entries: u64,
    /// Sockets, FIFOs and device files left out: they cannot be restored meaningfully.
    pub skipped_special: u64,
}

/// Writes the tree into `out` as a tar stream compressed with zstd at `level`, and returns
/// `out` once the zstd frame is finished.
///
/// Entries are relative to the tree's root and come in a fixed order (siblings sorted by name
/// bytes, each directory before its contents), with uid/gid 0 and empty owner names, so the
/// same tree always produces the same bytes. Symlinks are stored as links and never followed;
/// hard links are stored as separate regular files; sockets, FIFOs and devices are skipped and
/// counted. At most `max_bytes` of file content is archived: the file that would cross it is
/// refused before it is read, so a sparse terabyte costs nothing. At most `max_entries` entries
/// are written, so a tree of millions of empty files is refused rather than stored unrestorable.
///
/// # Errors
/// [`ArchiveError::Changed`] when an entry is swapped, vanishes or shrinks while the tree is
/// read (transient: the tree is still being written, or tampered with),
/// [`ArchiveError::TooLarge`] over `max_bytes`, [`ArchiveError::TooManyEntries`] over
/// `max_entries`, [`ArchiveError::Source`] when an entry cannot
/// be read, and [`ArchiveError::Output`] when `out` refuses bytes.
pub fn write_archive<W: Write>(
    tree: &Tree,
    level: i32,
    max_bytes: u64,
    max_entries: u64,
    out: W,
) -> Result<(TarSummary, W), ArchiveError> {
    let mut encoder =
        zstd::stream::write::Encoder::new(out, level).map_err(ArchiveError::Output)?;
    // Levels 20 to 22 use windows of 2^25 to 2^27; restore accepts at most 2^25.
    if level >= 20 {
        encoder
            .window_log(super::restore::WINDOW_LOG_MAX)
            .map_err(ArchiveError::Output)?;
    }
    let mut builder = tar::Builder::new(encoder);
    let summary = walk(&mut builder, tree, max_bytes, max_entries)?;
    let encoder = builder.into_inner().map_err(ArchiveError::Output)?;
    let out = encoder.finish().map_err(ArchiveError::Output)?;
    Ok((summary, out))
}

/// A directory being archived: its descriptor, its path in the archive, and its entries still
/// to write, sorted.
struct Level {
    fd: OwnedFd,
    relative: PathBuf,
    names: std::vec::IntoIter<OsString>,
}

impl Level {
    fn new(fd: OwnedFd, relative: PathBuf, path: &Path) -> Result<Self, ArchiveError> {
        let mut names = names(&fd, path)?;
        // OsString orders by bytes on Unix, independent of locale and of the directory's order.
        names.sort();
        Ok(Self {
            fd,
            relative,
            names: names.into_iter(),
        })
    }
}

/// Depth first with an explicit stack, so a hostile tree deeper than the thread's stack is
/// only as costly as one descriptor per level.
fn walk<W: Write>(
    builder: &mut tar::Builder<W>,
    tree: &Tree,
    max_bytes: u64,
    max_entries: u64,
) -> Result<TarSummary, ArchiveError> {
    let mut summary = TarSummary::default();
    let mut content_bytes = 0u64;
    let root = tree.try_clone()?.into_fd();
    let mut stack = vec![Level::new(root, PathBuf::new(), tree.path())?];
    while let Some(level) = stack.last_mut() {
        let Some(name) = level.names.next() else {
            stack.pop();
            continue;
        };
        let entry_path = level.relative.join(&name);
        let absolute = tree.path().join(&entry_path);
        // Counted before the entry is looked at: skipped entries count too, as each costs a
        // lookup.
        if summary.entries + summary.skipped_special >= max_entries {
            return Err(ArchiveError::TooManyEntries {
                path: absolute,
                limit: max_entries,
            });
        }
        match look_up(&level.fd, &name, &absolute)? {
            Entry::Directory { fd, stat } => {
                let mut header = header(&stat, tar::EntryType::Directory);
                builder
                    .append_data(&mut header, &entry_path, io::empty())
                    .map_err(ArchiveError::Output)?;
                summary.entries += 1;
                stack.push(Level::new(fd, entry_path, &absolute)?);
            }
            Entry::File { file, stat } => {
                let size = u64::try_from(stat.st_size).unwrap_or(0);
                content_bytes = content_bytes.saturating_add(size);
                if content_bytes > max_bytes {
                    return Err(ArchiveError::TooLarge {
                        path: absolute,
                        limit: max_bytes,
                    });
                }
                let mut header = header(&stat, tar::EntryType::Regular);
                header.set_size(size);
                let mut reader = ExactReader {
                    inner: file,
                    remaining: size,
                    failure: None,
                };
                if let Err(err) = builder.append_data(&mut header, &entry_path, &mut reader) {
                    // Telling a read failure from a refusing sink matters: the first names a file.
                    return Err(match reader.failure.take() {
                        Some(Failure::Shrank) => ArchiveError::Changed {
                            path: absolute,
                            detail: "it shrank while it was read",
                        },
                        Some(Failure::Read(source)) => ArchiveError::Source {
                            path: absolute,
                            source,
                        },
                        None => ArchiveError::Output(err),
                    });
                }
                summary.entries += 1;
            }
            Entry::Symlink { stat, target } => {
                let mut header = header(&stat, tar::EntryType::Symlink);
                builder
                    .append_link(&mut header, &entry_path, &target)
                    .map_err(ArchiveError::Output)?;
                summary.entries += 1;
            }
            // Sockets, FIFOs and devices: their "content" is a live endpoint, not data.
            Entry::Special => summary.skipped_special += 1,
        }
    }
    Ok(summary)
}

/// A header with the fields every entry shares: permission bits and mtime from `stat`, owner 0,
/// size 0 (set by the caller for files).
fn header(stat: &Stat, kind: tar::EntryType) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_mode(stat.st_mode & 0o7777);
    header.set_mtime(u64::try_from(stat.st_mtime).unwrap_or(0));
    header.set_uid(0);
    header.set_gid(0);
    header.set_size(0);
    header.set_entry_type(kind);
    header
}

/// Why reading a file for the archive stopped.
enum Failure {
    /// It ended before the size in its header: the tree changed.
    Shrank,
    /// The OS refused the read.
    Read(io::Error),
}

/// Yields exactly the size announced in the tar header: a file that shrinks while read would
/// otherwise leave a header promising bytes that never come, corrupting every later entry.
struct ExactReader {
    inner: std::fs::File,
    remaining: u64,
    failure: Option<Failure>,
}

impl Read for ExactReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let limit = usize::try_from(self.remaining)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        match self.inner.read(&mut buf[..limit]) {
            Ok(0) => {
                self.failure = Some(Failure::Shrank);
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "the file shrank while it was archived ({} bytes missing)",
                        self.remaining
                    ),
                ))
            }
            Ok(read) => {
                self.remaining -= read as u64;
                Ok(read)
            }
            Err(err) => {
                let copy = io::Error::new(err.kind(), err.to_string());
                self.failure = Some(Failure::Read(err));
                Err(copy)
            }
        }
    }
}
