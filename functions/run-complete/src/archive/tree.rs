//! Directory trees held by file descriptor, so that a tree which changes while it is archived or
//! removed cannot lead either anywhere else.
//!
//! A path-based walk stats a path, finds a directory and opens the same path again; whoever
//! writes the tree can swap a symlink in between, and the open follows it (to the pod's
//! service-account token, another run's workspace). Here nothing below a [`Tree`] is reached by
//! a path of more than one component: each entry is stat'ed with
//! `statat(dirfd, name, AT_SYMLINK_NOFOLLOW)`, opened with `openat(dirfd, name, O_NOFOLLOW |
//! O_CLOEXEC …)`, and the opened object is compared with what was stat'ed (type, device and
//! inode) before anything is read from it. A mismatch, or an entry that vanished, is
//! [`ArchiveError::Changed`]: the walk stops there, since a tree that is still being written
//! (or is being tampered with) gives no archive worth keeping, and a later retry may find it
//! settled. Symlinks are read with `readlinkat` and never opened.
//!
//! Only trusted paths are resolved the ordinary way: the directory given to [`Tree::open`] (a
//! configured mount, or the path an operator gives the CLI) may be, or pass through, a symlink.
//! A run's `subPath` is opened below it with [`Tree::open_below`], one component at a time, and
//! a symlink in any component is refused ([`ArchiveError::Symlink`]).

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

use super::ArchiveError;

/// How every directory below a trusted root is opened: never through a symlink.
const DIR_BELOW: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// How a regular file is opened for reading. `NONBLOCK` because the entry may have been swapped
/// for a FIFO since it was stat'ed, whose open would otherwise wait for a writer; it is cleared
/// again once the open file is known to be a regular file. `NOCTTY` for the same reason with
/// terminals.
const FILE_BELOW: OFlags = OFlags::RDONLY
    .union(OFlags::NOFOLLOW)
    .union(OFlags::NONBLOCK)
    .union(OFlags::NOCTTY)
    .union(OFlags::CLOEXEC);

/// Longest part of a removed directory's own name kept in the name it is renamed to, so the
/// new name stays within `NAME_MAX` (255 bytes).
const ASIDE_NAME_KEPT: usize = 64;

/// A directory opened by descriptor, for [`super::write_archive`] and [`Tree::remove_below`].
#[derive(Debug)]
pub struct Tree {
    fd: OwnedFd,
    /// Where it was opened, for messages only: nothing is opened through this path again.
    path: PathBuf,
}

impl Tree {
    /// Opens `dir`, a path the caller trusts: symlinks in it, the last component included, are
    /// followed (a mount point seen through a link, a workspace the operator names).
    ///
    /// # Errors
    /// [`ArchiveError::SourceMissing`], [`ArchiveError::NotADirectory`], or
    /// [`ArchiveError::Source`] for anything else the OS says.
    pub fn open(dir: &Path) -> Result<Self, ArchiveError> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd = rustix::fs::open(dir, flags, Mode::empty()).map_err(|errno| match errno {
            Errno::NOENT => ArchiveError::SourceMissing {
                path: dir.to_owned(),
            },
            Errno::NOTDIR => ArchiveError::NotADirectory {
                path: dir.to_owned(),
            },
            errno => ArchiveError::Source {
                path: dir.to_owned(),
                source: errno.into(),
            },
        })?;
        Ok(Self {
            fd,
            path: dir.to_owned(),
        })
    }

    /// Opens the directory `relative` below this one, one component at a time, following no
    /// symlink: a run's `subPath` must not lead anywhere through a link, not even to another
    /// directory on the same claim. An empty `relative` opens this directory again.
    ///
    /// # Errors
    /// [`ArchiveError::Symlink`] when a component is a symlink, [`ArchiveError::SourceMissing`]
    /// or [`ArchiveError::NotADirectory`] when one is missing or not a directory, and
    /// [`ArchiveError::Source`] for a component that is not a plain name (`..`, a root) or any
    /// other failure.
    pub fn open_below(&self, relative: &Path) -> Result<Self, ArchiveError> {
        let mut opened: Option<Tree> = None;
        for name in plain_names(relative, &self.path)? {
            let parent = opened.as_ref().unwrap_or(self);
            let path = parent.path.join(name);
            let fd = rustix::fs::openat(&parent.fd, name, DIR_BELOW, Mode::empty())
                .map_err(|errno| component_error(&parent.fd, name, path.clone(), errno))?;
            opened = Some(Tree { fd, path });
        }
        match opened {
            Some(tree) => Ok(tree),
            None => self.try_clone(),
        }
    }

    /// Where the tree was opened, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A second handle on the same open directory (`dup`), e.g. for another thread.
    ///
    /// # Errors
    /// [`ArchiveError::Source`] when the process is out of descriptors.
    pub fn try_clone(&self) -> Result<Self, ArchiveError> {
        let fd = self.fd.try_clone().map_err(|source| ArchiveError::Source {
            path: self.path.clone(),
            source,
        })?;
        Ok(Self {
            fd,
            path: self.path.clone(),
        })
    }

    pub(super) fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// Deletes the directory `relative` below this one, which must be a directory reached
    /// without any symlink (as [`Tree::open_below`]).
    ///
    /// It is first renamed aside in its parent (`renameat`), in one step, so that an archiver
    /// of the same run elsewhere sees either the whole tree or none of it, never a half-deleted
    /// tree it would store over the good archive; then its contents are unlinked entry by entry
    /// through descriptors (`unlinkat`, `AT_REMOVEDIR` for directories). A symlink anywhere in
    /// the tree is removed as a link: nothing it points to is touched.
    ///
    /// # Errors
    /// [`ArchiveError::SourceMissing`] when there is nothing to delete (also fine for a
    /// caller retrying); [`ArchiveError::Symlink`] or [`ArchiveError::NotADirectory`] when a
    /// component, or the directory itself, is not a real directory (nothing is deleted);
    /// [`ArchiveError::Changed`] when a directory in the tree is swapped while it is removed
    /// (the removal stops, leaving the rest under its aside name);
    /// [`ArchiveError::Remove`] when the OS refuses to unlink something.
    pub fn remove_below(&self, relative: &Path) -> Result<(), ArchiveError> {
        let names = plain_names(relative, &self.path)?;
        let Some((name, parents)) = names.split_last() else {
            return Err(ArchiveError::Source {
                path: self.path.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "only a directory below the tree's root can be removed, never the root",
                ),
            });
        };
        let parent = self.open_below(&parents.iter().collect::<PathBuf>())?;
        let path = parent.path.join(name);
        let stat = match rustix::fs::statat(&parent.fd, *name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            Err(Errno::NOENT) => return Err(ArchiveError::SourceMissing { path }),
            Err(errno) => return Err(removal_error(path, errno)),
        };
        match FileType::from_raw_mode(stat.st_mode) {
            FileType::Directory => {}
            FileType::Symlink => return Err(ArchiveError::Symlink { path }),
            _ => return Err(ArchiveError::NotADirectory { path }),
        }
        let aside = aside_name(name);
        rustix::fs::renameat(&parent.fd, *name, &parent.fd, &aside).map_err(|errno| {
            if errno == Errno::NOENT {
                ArchiveError::SourceMissing { path: path.clone() }
            } else {
                removal_error(path.clone(), errno)
            }
        })?;
        // Whatever now lies under the aside name is what was renamed: removing it never
        // follows a link, so even an entry swapped in just before the rename harms nothing
        // outside the run's own directory.
        remove_entry(&parent.fd, &aside, &parent.path.join(&aside))
    }
}

/// What a directory entry turned out to be, opened where it is read from.
pub(super) enum Entry {
    /// A directory, opened and checked to be the one stat'ed.
    Directory { fd: OwnedFd, stat: Stat },
    /// A regular file, opened for reading and checked to be the one stat'ed.
    File { file: std::fs::File, stat: Stat },
    /// A symlink and its target, as stored in the link: never followed.
    Symlink { stat: Stat, target: PathBuf },
    /// A socket, FIFO or device: never opened.
    Special,
}

/// Looks `name` up in the directory `dir` without following it, and opens it if it is a
/// directory or regular file. `path` names it in errors.
pub(super) fn look_up(dir: &OwnedFd, name: &OsStr, path: &Path) -> Result<Entry, ArchiveError> {
    let stat = stat_entry(dir, name, path)?;
    match FileType::from_raw_mode(stat.st_mode) {
        FileType::Directory => {
            let fd = open_checked(dir, name, path, DIR_BELOW, &stat)?;
            Ok(Entry::Directory { fd, stat })
        }
        FileType::RegularFile => {
            let fd = open_checked(dir, name, path, FILE_BELOW, &stat)?;
            rustix::fs::fcntl_setfl(&fd, OFlags::empty()).map_err(|errno| {
                ArchiveError::Source {
                    path: path.to_owned(),
                    source: errno.into(),
                }
            })?;
            Ok(Entry::File {
                file: fd.into(),
                stat,
            })
        }
        FileType::Symlink => match rustix::fs::readlinkat(dir, name, Vec::new()) {
            Ok(target) => Ok(Entry::Symlink {
                stat,
                target: PathBuf::from(OsStr::from_bytes(target.as_bytes())),
            }),
            // EINVAL: no longer a symlink.
            Err(Errno::NOENT | Errno::INVAL) => Err(changed(path, "it was replaced while read")),
            Err(errno) => Err(ArchiveError::Source {
                path: path.to_owned(),
                source: errno.into(),
            }),
        },
        _ => Ok(Entry::Special),
    }
}

/// The names in the open directory `dir`, without `.` and `..`, in the directory's own order.
pub(super) fn names(dir: &OwnedFd, path: &Path) -> Result<Vec<OsString>, ArchiveError> {
    let source = |errno: Errno| ArchiveError::Source {
        path: path.to_owned(),
        source: errno.into(),
    };
    // `read_from` reads through its own descriptor of `.`, so `dir` stays usable for `*at`.
    let mut entries = Dir::read_from(dir).map_err(source)?;
    let mut names = Vec::new();
    while let Some(entry) = entries.read() {
        let entry = entry.map_err(source)?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_owned());
        }
    }
    Ok(names)
}

/// `statat` without following: an entry that vanished since it was listed means the tree
/// changed.
fn stat_entry(dir: &OwnedFd, name: &OsStr, path: &Path) -> Result<Stat, ArchiveError> {
    rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).map_err(|errno| match errno {
        Errno::NOENT => changed(path, "it vanished while the tree was read"),
        errno => ArchiveError::Source {
            path: path.to_owned(),
            source: errno.into(),
        },
    })
}

/// Opens `name` with `flags` (which include `O_NOFOLLOW`) and checks that what was opened is
/// what `expected` describes: the same type, device and inode.
fn open_checked(
    dir: &OwnedFd,
    name: &OsStr,
    path: &Path,
    flags: OFlags,
    expected: &Stat,
) -> Result<OwnedFd, ArchiveError> {
    let fd = rustix::fs::openat(dir, name, flags, Mode::empty()).map_err(|errno| match errno {
        // ELOOP: now a symlink; ENOTDIR: no longer a directory; ENXIO: now a socket; ENOENT:
        // gone.
        Errno::LOOP | Errno::NOTDIR | Errno::NXIO | Errno::NOENT => {
            changed(path, "it was replaced between being looked at and opened")
        }
        errno => ArchiveError::Source {
            path: path.to_owned(),
            source: errno.into(),
        },
    })?;
    let opened = rustix::fs::fstat(&fd).map_err(|errno| ArchiveError::Source {
        path: path.to_owned(),
        source: errno.into(),
    })?;
    if !same_object(expected, &opened) {
        return Err(changed(
            path,
            "what was opened is not what was looked at (another type, device or inode)",
        ));
    }
    Ok(fd)
}

fn same_object(a: &Stat, b: &Stat) -> bool {
    a.st_dev == b.st_dev
        && a.st_ino == b.st_ino
        && FileType::from_raw_mode(a.st_mode) == FileType::from_raw_mode(b.st_mode)
}

fn changed(path: &Path, detail: &'static str) -> ArchiveError {
    ArchiveError::Changed {
        path: path.to_owned(),
        detail,
    }
}

/// The plain names of `relative`, which must not leave the directory it is relative to.
fn plain_names<'a>(relative: &'a Path, root: &Path) -> Result<Vec<&'a OsStr>, ArchiveError> {
    relative
        .components()
        .filter(|component| *component != Component::CurDir)
        .map(|component| match component {
            Component::Normal(name) => Ok(name),
            _ => Err(ArchiveError::Source {
                path: root.join(relative),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "not a plain relative path below the tree",
                ),
            }),
        })
        .collect()
}

/// Tells apart why a component of a `subPath` could not be opened as a directory.
fn component_error(parent: &OwnedFd, name: &OsStr, path: PathBuf, errno: Errno) -> ArchiveError {
    match errno {
        Errno::NOENT => ArchiveError::SourceMissing { path },
        // Linux answers ELOOP or ENOTDIR for a symlink opened with O_DIRECTORY | O_NOFOLLOW;
        // look at the entry itself to name the cause.
        Errno::LOOP | Errno::NOTDIR => {
            match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::Symlink => {
                    ArchiveError::Symlink { path }
                }
                _ => ArchiveError::NotADirectory { path },
            }
        }
        errno => ArchiveError::Source {
            path,
            source: errno.into(),
        },
    }
}

fn removal_error(path: PathBuf, errno: Errno) -> ArchiveError {
    ArchiveError::Remove {
        path,
        source: errno.into(),
    }
}

/// `.tekflux-removing-<name>-<pid>-<nanos>`: unique, recognisable, and never a name a run's
/// `subPath` lookup would find.
fn aside_name(name: &OsStr) -> OsString {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.subsec_nanos())
        .unwrap_or_default();
    let kept = &name.as_bytes()[..name.len().min(ASIDE_NAME_KEPT)];
    let mut aside = OsString::from(".tekflux-removing-");
    aside.push(OsStr::from_bytes(kept));
    aside.push(format!("-{}-{nanos}", std::process::id()));
    aside
}

/// A directory being emptied: its descriptor, the names still to remove, and its own name in
/// the directory one level up.
struct Emptying {
    fd: OwnedFd,
    names: std::vec::IntoIter<OsString>,
    name: OsString,
    path: PathBuf,
}

/// Removes the entry `name` of `dir` and, if it is a directory, everything in it, depth first
/// with an explicit stack (a hostile tree may be deeper than any thread's stack). Entries that
/// vanish meanwhile are fine: they are gone either way.
fn remove_entry(dir: &OwnedFd, name: &OsStr, path: &Path) -> Result<(), ArchiveError> {
    let mut stack: Vec<Emptying> = Vec::new();
    match open_for_removal(dir, name, path)? {
        Some(fd) => stack.push(Emptying {
            names: names(&fd, path)?.into_iter(),
            fd,
            name: name.to_owned(),
            path: path.to_owned(),
        }),
        None => return Ok(()),
    }
    while let Some(top) = stack.last_mut() {
        if let Some(child) = top.names.next() {
            let child_path = top.path.join(&child);
            if let Some(fd) = open_for_removal(&top.fd, &child, &child_path)? {
                stack.push(Emptying {
                    names: names(&fd, &child_path)?.into_iter(),
                    fd,
                    name: child,
                    path: child_path,
                });
            }
            continue;
        }
        let Some(done) = stack.pop() else { break };
        let parent = stack.last().map_or(dir, |level| &level.fd);
        match rustix::fs::unlinkat(parent.as_fd(), &done.name, AtFlags::REMOVEDIR) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(errno) => return Err(removal_error(done.path, errno)),
        }
    }
    Ok(())
}

/// Opens the entry `name` of `dir` if it is a directory (checked as in [`look_up`]), or
/// unlinks it right away if it is anything else: unlinking a symlink removes the link only.
fn open_for_removal(
    dir: &OwnedFd,
    name: &OsStr,
    path: &Path,
) -> Result<Option<OwnedFd>, ArchiveError> {
    let stat = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => stat,
        Err(Errno::NOENT) => return Ok(None),
        Err(errno) => return Err(removal_error(path.to_owned(), errno)),
    };
    if FileType::from_raw_mode(stat.st_mode) == FileType::Directory {
        return open_checked(dir, name, path, DIR_BELOW, &stat).map(Some);
    }
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => Ok(None),
        Err(errno) => Err(removal_error(path.to_owned(), errno)),
    }
}
