//! Writing a directory as a reproducible tar stream compressed with zstd (blocking I/O).

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::ArchiveError;

/// What writing one archive counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TarSummary {
    /// Tar entries written: directories, regular files and symlinks (the root is not one).
    pub entries: u64,
    /// Sockets, FIFOs and device files left out: they cannot be restored meaningfully.
    pub skipped_special: u64,
}

/// Writes `dir` into `out` as a tar stream compressed with zstd at `level`, and returns `out`
/// once the zstd frame is finished.
///
/// Entries are relative to `dir` and come in a fixed order (siblings sorted by name bytes, each
/// directory before its contents), with uid/gid 0 and empty owner names, so the same tree always
/// produces the same bytes. Symlinks are stored as links and never followed; hard links are
/// stored as separate regular files; sockets, FIFOs and devices are skipped and counted.
///
/// # Errors
/// [`ArchiveError::SourceMissing`] / [`ArchiveError::NotADirectory`] for a bad `dir`,
/// [`ArchiveError::Source`] when a file cannot be read or changes size while read, and
/// [`ArchiveError::Output`] when `out` refuses bytes.
pub fn write_archive<W: Write>(
    dir: &Path,
    level: i32,
    out: W,
) -> Result<(TarSummary, W), ArchiveError> {
    // The root itself may be a symlink (a mount point seen through a link); only entries below
    // it are never followed.
    let meta = fs::metadata(dir).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            ArchiveError::SourceMissing {
                path: dir.to_owned(),
            }
        } else {
            ArchiveError::Source {
                path: dir.to_owned(),
                source,
            }
        }
    })?;
    if !meta.is_dir() {
        return Err(ArchiveError::NotADirectory {
            path: dir.to_owned(),
        });
    }
    let mut encoder =
        zstd::stream::write::Encoder::new(out, level).map_err(ArchiveError::Output)?;
    // Levels 20 to 22 use windows of 2^25 to 2^27; restore accepts at most 2^25.
    if level >= 20 {
        encoder
            .window_log(super::restore::WINDOW_LOG_MAX)
            .map_err(ArchiveError::Output)?;
    }
    let mut builder = tar::Builder::new(encoder);
    let mut summary = TarSummary::default();
    walk(&mut builder, dir, Path::new(""), &mut summary)?;
    let encoder = builder.into_inner().map_err(ArchiveError::Output)?;
    let out = encoder.finish().map_err(ArchiveError::Output)?;
    Ok((summary, out))
}

fn walk<W: Write>(
    builder: &mut tar::Builder<W>,
    root: &Path,
    relative: &Path,
    summary: &mut TarSummary,
) -> Result<(), ArchiveError> {
    let dir = root.join(relative);
    let source_error = |path: &Path| {
        let path = path.to_owned();
        move |source| ArchiveError::Source { path, source }
    };
    let mut names = fs::read_dir(&dir)
        .and_then(|entries| {
            entries
                .map(|entry| entry.map(|entry| entry.file_name()))
                .collect::<io::Result<Vec<OsString>>>()
        })
        .map_err(source_error(&dir))?;
    // OsString orders by bytes on Unix, independent of locale and of the directory's own order.
    names.sort();

    for name in names {
        let entry_path = relative.join(&name);
        let absolute = root.join(&entry_path);
        let meta = fs::symlink_metadata(&absolute).map_err(source_error(&absolute))?;
        let file_type = meta.file_type();

        let mut header = tar::Header::new_gnu();
        header.set_mode(meta.mode() & 0o7777);
        header.set_mtime(u64::try_from(meta.mtime()).unwrap_or(0));
        header.set_uid(0);
        header.set_gid(0);
        header.set_size(0);

        if file_type.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            builder
                .append_data(&mut header, &entry_path, io::empty())
                .map_err(ArchiveError::Output)?;
            summary.entries += 1;
            walk(builder, root, &entry_path, summary)?;
        } else if file_type.is_file() {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(meta.len());
            let file = File::open(&absolute).map_err(source_error(&absolute))?;
            let mut reader = ExactReader {
                inner: file,
                remaining: meta.len(),
                failure: None,
            };
            if let Err(err) = builder.append_data(&mut header, &entry_path, &mut reader) {
                // Telling a read failure from a refusing sink matters: the first names a file.
                return Err(match reader.failure.take() {
                    Some(source) => ArchiveError::Source {
                        path: absolute,
                        source,
                    },
                    None => ArchiveError::Output(err),
                });
            }
            summary.entries += 1;
        } else if file_type.is_symlink() {
            let target = fs::read_link(&absolute).map_err(source_error(&absolute))?;
            header.set_entry_type(tar::EntryType::Symlink);
            builder
                .append_link(&mut header, &entry_path, &target)
                .map_err(ArchiveError::Output)?;
            summary.entries += 1;
        } else {
            // Sockets, FIFOs and devices: their "content" is a live endpoint, not data.
            summary.skipped_special += 1;
        }
    }
    Ok(())
}

/// Yields exactly the size announced in the tar header: a file that shrinks while read would
/// otherwise leave a header promising bytes that never come, corrupting every later entry.
struct ExactReader {
    inner: File,
    remaining: u64,
    failure: Option<io::Error>,
}

impl Read for ExactReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let limit = usize::try_from(self.remaining)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let result = self.inner.read(&mut buf[..limit]).and_then(|read| {
            if read == 0 {
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "the file shrank while it was archived ({} bytes missing)",
                        self.remaining
                    ),
                ))
            } else {
                Ok(read)
            }
        });
        match result {
            Ok(read) => {
                self.remaining -= read as u64;
                Ok(read)
            }
            Err(err) => {
                let copy = io::Error::new(err.kind(), err.to_string());
                self.failure = Some(err);
                Err(copy)
            }
        }
    }
}
