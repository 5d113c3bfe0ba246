//! Restoring a workspace archive: a tar.zst stream unpacked into `<tmp>/outer/target`, with the
//! "nothing outside" invariant as the oracle.
//!
//! Beside `outer` lie a sentinel file and an empty directory, and archive names are drawn from a
//! small set that includes their names, so that climbing out of the target hits them.

use std::collections::BTreeSet;
use std::fs;
use std::io::Cursor;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use arbitrary::Arbitrary;
use sha2::{Digest, Sha256};
use tekflux_run_complete::archive::{RestoreLimits, RestoreOptions, restore_archive};

const SENTINEL: &[u8] = b"must not change\n";

/// Names archive paths are built from.
const NAMES: &[&str] = &[
    "a", "b", "c", "l", "x", "target", "outer", "sentinel", "victim", "etc", "hostname",
];

/// Most bytes of file content an entry gets (bigger files add nothing here).
const MAX_CONTENT: usize = 64;

/// A temporary directory laid out for one restore.
pub struct Scene {
    dir: tempfile::TempDir,
    target_existed: bool,
}

impl Scene {
    /// `<tmp>/{outer/, sentinel, victim/}`, and `outer/target/` (empty) when `target_exists`.
    pub fn new(target_exists: bool) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        fs::create_dir(dir.path().join("outer")).expect("outer");
        fs::create_dir(dir.path().join("victim")).expect("victim");
        fs::write(dir.path().join("sentinel"), SENTINEL).expect("sentinel");
        let scene = Scene {
            dir,
            target_existed: target_exists,
        };
        if target_exists {
            fs::create_dir(scene.target()).expect("target");
        }
        scene
    }

    /// The temporary directory, canonical.
    pub fn root(&self) -> PathBuf {
        fs::canonicalize(self.dir.path()).expect("canonical temporary directory")
    }

    /// Where the archive is restored.
    pub fn target(&self) -> PathBuf {
        self.root().join("outer").join("target")
    }

    /// Restores `compressed` into the target and checks the oracle, whatever the outcome.
    pub fn restore(&self, compressed: &[u8], options: &RestoreOptions) {
        let target = self.target();
        let result = restore_archive(Cursor::new(compressed), &target, options);
        let root = self.root();

        // Nothing outside the target was touched.
        assert_eq!(
            names(&root),
            ["outer", "sentinel", "victim"].map(String::from).into(),
            "something was written beside outer ({result:?})"
        );
        assert_eq!(
            fs::read(root.join("sentinel")).ok().as_deref(),
            Some(SENTINEL),
            "the sentinel changed ({result:?})"
        );
        assert!(
            names(&root.join("victim")).is_empty(),
            "something was written into the directory beside outer ({result:?})"
        );
        let outer = names(&root.join("outer"));
        assert!(
            outer.iter().all(|name| name == "target"),
            "something besides target in outer: {outer:?} ({result:?})"
        );

        match result {
            Err(error) => {
                // The target is left as it was.
                if self.target_existed {
                    assert!(
                        fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir()),
                        "the target is gone after {error}"
                    );
                    let left = names(&target);
                    assert!(left.is_empty(), "{left:?} left in the target after {error}");
                } else {
                    assert!(
                        fs::symlink_metadata(&target).is_err(),
                        "the target was created and kept after {error}"
                    );
                }
            }
            Ok(_) => check_tree(&target, &target),
        }
    }
}

fn names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| {
                    e.expect("directory entry")
                        .file_name()
                        .to_string_lossy()
                        .into_owned()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Every path below `dir` is a directory, a file or a link, without setuid/setgid or a second
/// hard link, and every link leads below `target`.
fn check_tree(target: &Path, dir: &Path) {
    for entry in fs::read_dir(dir).expect("read a restored directory") {
        let path = entry.expect("directory entry").path();
        let meta = fs::symlink_metadata(&path).expect("lstat a restored path");
        let kind = meta.file_type();
        assert_eq!(meta.mode() & 0o6000, 0, "setuid/setgid kept on {path:?}");
        if kind.is_dir() {
            check_tree(target, &path);
        } else if kind.is_file() {
            assert_eq!(meta.nlink(), 1, "{path:?} is hard-linked");
        } else if kind.is_symlink() {
            let leads_to = resolve_link(&path);
            if let Some(leads_to) = leads_to {
                assert!(
                    leads_to.starts_with(target),
                    "{path:?} -> {:?} leads to {leads_to:?}, outside {target:?}",
                    fs::read_link(&path)
                );
            }
        } else {
            panic!("{path:?} is a {kind:?}");
        }
    }
}

/// Where the link at `link` leads, walking its target the way the kernel does and taking a
/// missing component as a directory (a dangling link is judged by where it would lead once the
/// missing part is created). `None` when the walk follows more than 40 links, as the kernel
/// would refuse it.
fn resolve_link(link: &Path) -> Option<PathBuf> {
    let mut follows = 0;
    let from = link.parent().expect("a link has a parent").to_owned();
    walk(from, &fs::read_link(link).ok()?, &mut follows)
}

fn walk(mut at: PathBuf, target: &Path, follows: &mut u32) -> Option<PathBuf> {
    for component in target.components() {
        match component {
            Component::RootDir => at = PathBuf::from("/"),
            Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                at.pop();
            }
            Component::Normal(name) => {
                let next = at.join(name);
                match fs::symlink_metadata(&next) {
                    Ok(meta) if meta.file_type().is_symlink() => {
                        *follows += 1;
                        if *follows > 40 {
                            return None;
                        }
                        let link_target = fs::read_link(&next).ok()?;
                        at = walk(at, &link_target, follows)?;
                    }
                    _ => at = next,
                }
            }
        }
    }
    Some(at)
}

/// A structured archive: entries built from a small name set, written into a tar with raw
/// headers (so `..` and absolute names get through), compressed with zstd level 1.
#[derive(Arbitrary, Debug)]
pub struct ArchiveSpec {
    pub target_exists: bool,
    /// (most entries, most content bytes) instead of the defaults.
    pub limits: Option<(u8, u16)>,
    pub sha: ShaChoice,
    /// Cut the compressed stream to this many bytes.
    pub truncate: Option<u16>,
    pub entries: Vec<EntrySpec>,
}

#[derive(Arbitrary, Debug)]
pub enum ShaChoice {
    None,
    Right,
    Wrong,
}

#[derive(Arbitrary, Debug)]
pub struct EntrySpec {
    pub path: PathSpec,
    pub kind: KindSpec,
    pub mode: u16,
}

#[derive(Arbitrary, Debug)]
pub enum KindSpec {
    Dir,
    File(Vec<u8>),
    Symlink(PathSpec),
    HardLink(PathSpec),
    Fifo,
    CharDevice,
    /// Any type byte (GNU sparse, PAX headers, ...), with the path as content.
    Raw(u8),
}

#[derive(Arbitrary, Debug)]
pub struct PathSpec {
    pub absolute: bool,
    pub parts: Vec<Part>,
    pub trailing_slash: bool,
}

#[derive(Arbitrary, Debug)]
pub enum Part {
    Name(u8),
    Dot,
    DotDot,
    Empty,
    /// The path of an earlier entry (index modulo their number).
    Earlier(u8),
    /// The temporary directory's absolute path, so absolute names can aim at the sentinel.
    Scene,
    Raw(String),
}

impl PathSpec {
    fn render(&self, earlier: &[Vec<u8>], scene: &Path) -> Vec<u8> {
        let mut out = Vec::new();
        if self.absolute {
            out.push(b'/');
        }
        for (i, part) in self.parts.iter().enumerate() {
            if i > 0 {
                out.push(b'/');
            }
            match part {
                Part::Name(n) => out.extend(NAMES[usize::from(*n) % NAMES.len()].as_bytes()),
                Part::Dot => out.push(b'.'),
                Part::DotDot => out.extend(b".."),
                Part::Empty => {}
                Part::Earlier(n) if !earlier.is_empty() => {
                    out.extend(&earlier[usize::from(*n) % earlier.len()]);
                }
                Part::Earlier(_) => out.push(b'a'),
                Part::Scene => out.extend(scene.as_os_str().as_encoded_bytes()),
                Part::Raw(text) => out.extend(text.as_bytes()),
            }
        }
        if self.trailing_slash {
            out.push(b'/');
        }
        out
    }
}

impl ArchiveSpec {
    /// The tar stream for `scene` (absolute names aim at its directory).
    pub fn tar(&self, scene: &Path) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut earlier: Vec<Vec<u8>> = Vec::new();
        for entry in &self.entries {
            let name = entry.path.render(&earlier, scene);
            let mode = u32::from(entry.mode) & 0o7777;
            let (kind, link, data): (tar::EntryType, Option<Vec<u8>>, Vec<u8>) = match &entry.kind {
                KindSpec::Dir => (tar::EntryType::Directory, None, Vec::new()),
                KindSpec::File(content) => (
                    tar::EntryType::Regular,
                    None,
                    content[..content.len().min(MAX_CONTENT)].to_vec(),
                ),
                KindSpec::Symlink(to) => (
                    tar::EntryType::Symlink,
                    Some(to.render(&earlier, scene)),
                    Vec::new(),
                ),
                KindSpec::HardLink(to) => (
                    tar::EntryType::Link,
                    Some(to.render(&earlier, scene)),
                    Vec::new(),
                ),
                KindSpec::Fifo => (tar::EntryType::Fifo, None, Vec::new()),
                KindSpec::CharDevice => (tar::EntryType::Char, None, Vec::new()),
                KindSpec::Raw(byte) => (tar::EntryType::new(*byte), None, name.clone()),
            };
            append_raw(&mut builder, kind, &name, link.as_deref(), mode, &data);
            earlier.push(name);
        }
        builder.into_inner().expect("tar into a Vec")
    }

    /// Builds the archive for a fresh scene, restores it and checks the oracle.
    pub fn run(&self) {
        let scene = Scene::new(self.target_exists);
        let tar = self.tar(&scene.root());
        let mut compressed = compress(&tar);
        if let Some(len) = self.truncate {
            compressed.truncate(usize::from(len));
        }
        let mut options = RestoreOptions::default();
        if let Some((entries, bytes)) = self.limits {
            options.limits = RestoreLimits {
                max_entries: u64::from(entries),
                max_bytes: u64::from(bytes),
                ..RestoreLimits::default()
            };
        }
        options.expected_sha256 = match self.sha {
            ShaChoice::None => None,
            ShaChoice::Right => Some(hex::encode(Sha256::digest(&compressed))),
            ShaChoice::Wrong => Some(hex::encode([0u8; 32])),
        };
        scene.restore(&compressed, &options);
    }
}

/// Appends an entry whose header says exactly `name` and `link`, which `tar::Builder`'s own
/// path setters refuse for `..` and absolute paths; names over 100 bytes go into GNU long-name
/// entries first, as GNU tar writes them.
pub fn append_raw(
    builder: &mut tar::Builder<Vec<u8>>,
    kind: tar::EntryType,
    name: &[u8],
    link: Option<&[u8]>,
    mode: u32,
    data: &[u8],
) {
    let long = |builder: &mut tar::Builder<Vec<u8>>, kind, bytes: &[u8]| {
        let mut content = bytes.to_vec();
        content.push(0);
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        set_bytes(&mut header.as_old_mut().name, b"././@LongLink");
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append(&header, &content[..])
            .expect("append to a Vec");
    };
    if name.len() > 100 {
        long(builder, tar::EntryType::GNULongName, name);
    }
    if let Some(link) = link.filter(|link| link.len() > 100) {
        long(builder, tar::EntryType::GNULongLink, link);
    }
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    set_bytes(&mut header.as_old_mut().name, name);
    if let Some(link) = link {
        set_bytes(&mut header.as_old_mut().linkname, link);
    }
    header.set_size(data.len() as u64);
    header.set_mode(mode);
    header.set_mtime(1_700_000_000);
    header.set_cksum();
    builder.append(&header, data).expect("append to a Vec");
}

fn set_bytes(field: &mut [u8], bytes: &[u8]) {
    let n = bytes.len().min(field.len());
    field[..n].copy_from_slice(&bytes[..n]);
}

/// zstd level 1, with one compressor per thread: setting one up costs more than compressing a
/// fuzz input.
fn compress(tar: &[u8]) -> Vec<u8> {
    thread_local! {
        static COMPRESSOR: std::cell::RefCell<zstd::bulk::Compressor<'static>> =
            std::cell::RefCell::new(zstd::bulk::Compressor::new(1).expect("zstd level 1"));
    }
    COMPRESSOR.with_borrow_mut(|c| c.compress(tar).expect("zstd into a Vec"))
}

/// The raw variant: `tar` is any byte string, compressed here.
pub fn run_raw(tar: &[u8]) {
    let scene = Scene::new(false);
    let compressed = compress(tar);
    scene.restore(&compressed, &RestoreOptions::default());
}
