//! Unpacking the tar stream into the staging directory: entry by entry, below real directories
//! only, with GNU and PAX headers applied here so that their size is bounded.

use super::decode::{Blocks, unpack_beside_decoder};
use super::links::Links;
use super::*;

/// Directories below a root, with the mode and modification time each gets last.
pub(super) type DirectoryTimes = Vec<(PathBuf, u32, u64)>;

/// Unpacks into `staging`, and returns the report with the top-level directories whose mode and
/// time are set only once they are in the target: renaming a directory to another parent
/// rewrites its `..`, which needs write permission on it, so a read-only one (Go's module cache
/// has many) set in staging could not be moved by an unprivileged restore.
pub(super) fn unpack<R: Read + Send>(
    reader: R,
    staging: &Path,
    options: &RestoreOptions,
) -> Result<(RestoreReport, DirectoryTimes), RestoreError> {
    let ((unpacked, directories), decoded) = unpack_beside_decoder(
        reader,
        &options.limits,
        options.progress.clone(),
        |stream| unpack_entries(stream, staging, &options.limits),
    )?;
    if let Some(expected) = &options.expected_sha256
        && !expected.eq_ignore_ascii_case(&decoded.sha256)
    {
        return Err(RestoreError::ShaMismatch {
            expected: expected.clone(),
            found: decoded.sha256,
        });
    }

    let (top_level, nested): (Vec<_>, Vec<_>) = directories
        .list
        .into_iter()
        .partition(|(relative, _, _)| relative.components().count() == 1);
    finish_directories(staging, nested)?;

    Ok((
        RestoreReport {
            entries: unpacked.entries,
            bytes: unpacked.written,
            archive_bytes: decoded.bytes,
            sha256: decoded.sha256,
        },
        top_level,
    ))
}

/// What unpacking the entries counted.
struct Unpacked {
    entries: u64,
    written: u64,
}

/// Unpacks the decoded tar `stream` into `staging`, entry by entry, with the directories whose
/// mode and time are still to be set.
fn unpack_entries(
    stream: &mut Blocks,
    staging: &Path,
    limits: &RestoreLimits,
) -> Result<(Unpacked, Directories), RestoreError> {
    let mut archive = tar::Archive::new(stream);
    let mut entries = 0u64;
    let mut written = 0u64;
    // Directory times are set last: writing their contents changes them.
    let mut directories = Directories::default();
    let mut links = Links::default();
    let mut parents = Parents::default();
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
        parents
            .ensure(staging, &relative)
            .map_err(|reason| hostile(&reason))?;
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

    Ok((Unpacked { entries, written }, directories))
}

/// Sets each directory's mode and time, deepest last-listed first (a directory's contents are
/// written before its own time is set).
pub(super) fn finish_directories(root: &Path, list: DirectoryTimes) -> Result<(), RestoreError> {
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

/// The parent of the last entry, known to be a real directory all the way down from the root,
/// so that the entries of one directory, which a tar stream lists together, need no system call
/// for their parents. What was verified stays true: nothing is removed during a restore, and files
/// and links are only created where nothing is (`O_EXCL`, `symlink`), so no later entry can turn
/// a directory into a link.
#[derive(Debug, Default)]
struct Parents {
    verified: PathBuf,
}

impl Parents {
    /// Creates the missing parents of `relative` below `root` as real directories, and refuses a
    /// parent that is anything else (a symlink restored earlier, or a file). Only the parents
    /// below what `relative` shares with the last verified parent are looked at.
    fn ensure(&mut self, root: &Path, relative: &Path) -> Result<(), String> {
        let Some(parent) = relative.parent() else {
            return Ok(());
        };
        let shared = self
            .verified
            .components()
            .zip(parent.components())
            .take_while(|(verified, wanted)| verified == wanted)
            .count();
        let mut current = root.to_owned();
        for (depth, component) in parent.components().enumerate() {
            current.push(component);
            if depth < shared {
                continue;
            }
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
        parent.clone_into(&mut self.verified);
        Ok(())
    }
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

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap; a failure is the point
mod tests {
    use super::*;

    #[test]
    fn parents_are_created_once_and_a_link_among_them_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        let mut parents = Parents::default();
        parents.ensure(root, Path::new("a/b/c/file")).unwrap();
        assert!(root.join("a/b/c").is_dir());
        // A sibling of the verified parent and a shallower entry need nothing new.
        parents.ensure(root, Path::new("a/b/d/file")).unwrap();
        parents.ensure(root, Path::new("top")).unwrap();
        assert!(root.join("a/b/d").is_dir());
        // A link restored beside them is refused as a parent, however near the verified path.
        std::os::unix::fs::symlink("c", root.join("a/b/link")).unwrap();
        let refused = parents
            .ensure(root, Path::new("a/b/link/file"))
            .unwrap_err();
        assert!(refused.contains("through a symlink"), "{refused}");
        File::create(root.join("a/plain")).unwrap();
        let refused = parents.ensure(root, Path::new("a/plain/file")).unwrap_err();
        assert!(refused.contains("not a directory"), "{refused}");
        // The last verified parent is still good after a refusal.
        parents.ensure(root, Path::new("a/b/d/other")).unwrap();
    }

    #[test]
    fn entry_paths_stay_below_the_root() {
        assert_eq!(safe_relative_path("./a/b"), Some(PathBuf::from("a/b")));
        for bad in ["/etc/passwd", "../x", "a/../../x", "a/..", "", ".", "./"] {
            assert_eq!(safe_relative_path(bad), None, "{bad}");
        }
    }
}
