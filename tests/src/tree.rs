//! Directory trees in tests: deterministic content to fill them with, and a snapshot that
//! tells whether two trees (a workspace and its restored copy, or one before and after a
//! failure) are the same.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// One entry of a [`snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A directory and its permission bits.
    Dir {
        /// `mode & 0o7777`.
        mode: u32,
    },
    /// A regular file: permission bits, mtime (seconds) and content.
    File {
        /// `mode & 0o7777`.
        mode: u32,
        /// Seconds since the epoch.
        mtime: i64,
        /// The bytes.
        content: Vec<u8>,
    },
    /// A symbolic link and where it points (never followed).
    Link {
        /// The link's target as stored.
        target: PathBuf,
    },
}

/// Every entry below `dir` by relative path. Sockets, FIFOs and devices are left out, as
/// archives leave them out.
///
/// # Panics
/// When the tree cannot be read.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Entry> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Entry>) {
        for entry in std::fs::read_dir(dir).expect("read a directory of the tree") {
            let path = entry.expect("read a directory entry").path();
            let meta = std::fs::symlink_metadata(&path).expect("stat an entry");
            let relative = path.strip_prefix(root).unwrap_or(&path).to_owned();
            let kind = meta.file_type();
            let mode = meta.mode() & 0o7777;
            if kind.is_symlink() {
                let target = std::fs::read_link(&path).expect("read a link");
                out.insert(relative, Entry::Link { target });
            } else if kind.is_dir() {
                out.insert(relative, Entry::Dir { mode });
                walk(root, &path, out);
            } else if kind.is_file() {
                let content = std::fs::read(&path).expect("read a file");
                out.insert(
                    relative,
                    Entry::File {
                        mode,
                        mtime: meta.mtime(),
                        content,
                    },
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// `len` bytes that do not compress (xorshift), the same for the same `seed`.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // The top byte of the low 32 bits: truncation is the point.
            #[allow(clippy::cast_possible_truncation)]
            let byte = (state >> 24) as u8;
            byte
        })
        .collect()
}
