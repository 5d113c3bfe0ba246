//! Trees written by untrusted build steps: rewritten while they are archived, symlinks where a
//! run's directory should be, symlinks planted for the clean-up to follow, and files too big to
//! archive. Nothing outside the workspace may be read into an archive or changed.

#![allow(clippy::unwrap_used)] // tests may unwrap; a failure is the point

use std::io::Read;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustix::fs::{CWD, RenameFlags};
use rustix::io::Errno;
use tekflux_run_complete::archive::{ArchiveError, DEFAULT_MAX_ARCHIVE_BYTES, Tree, write_archive};
use tekflux_testkit::tree::snapshot;

/// What the outside secret holds: it must never appear in an archive.
const SECRET: &[u8] = b"eyJhbGciOiJSUzI1NiJ9.service-account-token-that-must-not-leak";

/// A directory outside the workspace, as a pod's service-account token directory would be.
fn outside_with_secrets(dir: &Path) {
    std::fs::create_dir_all(dir.join("nested")).unwrap();
    std::fs::write(dir.join("token"), SECRET).unwrap();
    std::fs::write(dir.join("nested/token"), SECRET).unwrap();
}

/// Every entry of a tar.zst as (path, kind, content or link target).
fn entries_of(archive: &[u8]) -> Vec<(PathBuf, tar::EntryType, Vec<u8>)> {
    let mut tar = tar::Archive::new(zstd::stream::read::Decoder::new(archive).unwrap());
    tar.entries()
        .unwrap()
        .map(|entry| {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().into_owned();
            let kind = entry.header().entry_type();
            let mut content = Vec::new();
            entry.read_to_end(&mut content).unwrap();
            if let Some(target) = entry.link_name().unwrap() {
                content = target.as_os_str().as_encoded_bytes().to_vec();
            }
            (path, kind, content)
        })
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// Swaps the entries at `a` and `b` (same filesystem) in one step where the kernel can, else
/// in two renames through `spare`.
fn exchange(a: &Path, b: &Path, spare: &Path) {
    match rustix::fs::renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE) {
        Ok(()) => {}
        Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {
            std::fs::rename(a, spare).unwrap();
            std::fs::rename(b, a).unwrap();
            std::fs::rename(spare, b).unwrap();
        }
        Err(errno) => panic!("exchanging {} and {}: {errno}", a.display(), b.display()),
    }
}

#[test]
fn a_tree_rewritten_while_it_is_archived_never_leaks_what_lies_outside() {
    let work = tempfile::tempdir().unwrap();
    let outside = work.path().join("outside");
    outside_with_secrets(&outside);
    let before_outside = snapshot(&outside);

    // The workspace: a subdirectory with many files (so a path-based walk spends long inside
    // it), a file, and plenty around them.
    let ws = work.path().join("ws");
    for dir in ["a", "sub/deeper", "z"] {
        std::fs::create_dir_all(ws.join(dir)).unwrap();
    }
    for i in 0..40 {
        std::fs::write(ws.join(format!("a/f{i:02}")), format!("a {i}\n")).unwrap();
        std::fs::write(ws.join(format!("sub/token{i:02}")), format!("public {i}\n")).unwrap();
        std::fs::write(ws.join(format!("z/f{i:02}")), format!("z {i}\n")).unwrap();
    }
    std::fs::write(ws.join("sub/deeper/token"), "public\n").unwrap();
    std::fs::write(ws.join("token"), "public\n").unwrap();
    let stable: std::collections::BTreeSet<PathBuf> = snapshot(&ws).into_keys().collect();

    // Decoys beside the workspace, on the same filesystem, that the attacker swaps in: a
    // symlink to the outside directory for `sub`, and a symlink to the outside token for the
    // file `token`.
    let dir_decoy = work.path().join("dir-decoy");
    let file_decoy = work.path().join("file-decoy");
    symlink(&outside, &dir_decoy).unwrap();
    symlink(outside.join("token"), &file_decoy).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicU64::new(0));
    let attacker = {
        let (stop, swaps) = (stop.clone(), swaps.clone());
        let (ws, spare) = (ws.clone(), work.path().join("spare"));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                exchange(&ws.join("sub"), &dir_decoy, &spare);
                exchange(&ws.join("token"), &file_decoy, &spare);
                swaps.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    let (mut archived, mut changed) = (0u32, 0u32);
    let started = Instant::now();
    while archived + changed < 400 || started.elapsed() < Duration::from_secs(2) {
        let tree = Tree::open(&ws).unwrap();
        match write_archive(&tree, 1, DEFAULT_MAX_ARCHIVE_BYTES, u64::MAX, Vec::new()) {
            Ok((_, archive)) => {
                archived += 1;
                assert!(!contains(&archive, SECRET), "the secret is in an archive");
                for (path, kind, content) in entries_of(&archive) {
                    assert!(
                        !contains(&content, SECRET),
                        "{} holds the secret",
                        path.display()
                    );
                    // Only what the workspace itself holds, or `sub`/`token` as the symlinks
                    // that were swapped in (stored as links, never followed).
                    if kind == tar::EntryType::Symlink {
                        assert!(
                            path == Path::new("sub") || path == Path::new("token"),
                            "{path:?}"
                        );
                    } else {
                        assert!(stable.contains(&path), "{path:?} is not in the workspace");
                    }
                }
            }
            Err(error @ ArchiveError::Changed { .. }) => {
                assert!(error.is_transient(), "{error}");
                changed += 1;
            }
            Err(error) => panic!("only a detected change may fail the archive: {error}"),
        }
        if started.elapsed() > Duration::from_secs(60) {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    attacker.join().unwrap();
    eprintln!(
        "{archived} archives, {changed} walks stopped by a detected swap, {} swaps",
        swaps.load(Ordering::Relaxed)
    );
    assert!(archived + changed >= 100, "too few walks ran");
    assert!(
        swaps.load(Ordering::Relaxed) > 0,
        "the tree was never rewritten"
    );
    assert_eq!(
        snapshot(&outside),
        before_outside,
        "the outside is untouched"
    );
}

#[test]
fn a_sub_path_is_never_followed_through_a_symlink() {
    let work = tempfile::tempdir().unwrap();
    let mount = work.path().join("mount");
    let outside = work.path().join("outside");
    outside_with_secrets(&outside);
    std::fs::create_dir_all(mount.join("real/run")).unwrap();
    std::fs::write(mount.join("real/run/file"), "mine").unwrap();
    symlink(&outside, mount.join("out")).unwrap();
    symlink("real", mount.join("in")).unwrap();
    std::fs::write(mount.join("plain"), "a file").unwrap();

    let root = Tree::open(&mount).unwrap();
    for (sub_path, link) in [
        ("out", "out"),
        ("out/nested", "out"),
        ("in", "in"),
        ("in/run", "in"),
    ] {
        match root.open_below(Path::new(sub_path)) {
            Err(ArchiveError::Symlink { path }) => assert_eq!(path, mount.join(link)),
            other => panic!("{sub_path}: {other:?}"),
        }
    }
    assert!(matches!(
        root.open_below(Path::new("plain/x")),
        Err(ArchiveError::NotADirectory { .. })
    ));
    assert!(matches!(
        root.open_below(Path::new("missing")),
        Err(ArchiveError::SourceMissing { .. })
    ));
    assert!(root.open_below(Path::new("../mount/real")).is_err());
    let run = root.open_below(Path::new("real/run")).unwrap();
    let (summary, _) =
        write_archive(&run, 1, DEFAULT_MAX_ARCHIVE_BYTES, u64::MAX, Vec::new()).unwrap();
    assert_eq!(summary.entries, 1);

    // The root itself is trusted (a configured mount, the CLI's argument): it may be reached
    // through a symlink.
    let link_to_mount = work.path().join("mount-link");
    symlink(&mount, &link_to_mount).unwrap();
    let through = Tree::open(&link_to_mount).unwrap();
    assert!(through.open_below(Path::new("real/run")).is_ok());
}

#[test]
fn the_clean_up_never_follows_a_symlink_in_any_component() {
    let work = tempfile::tempdir().unwrap();
    let mount = work.path().join("mount");
    let outside = work.path().join("outside");
    outside_with_secrets(&outside);
    std::fs::create_dir_all(outside.join("run/b")).unwrap();
    std::fs::write(outside.join("run/b/keep"), "keep").unwrap();
    std::fs::create_dir_all(&mount).unwrap();
    let before_outside = snapshot(&outside);

    // A symlink planted in an intermediate component, and one as the run's directory itself.
    symlink(outside.join("run"), mount.join("run-a")).unwrap();
    symlink(&outside, mount.join("run-b")).unwrap();
    let root = Tree::open(&mount).unwrap();
    assert!(matches!(
        root.remove_below(Path::new("run-a/b")),
        Err(ArchiveError::Symlink { .. })
    ));
    assert!(matches!(
        root.remove_below(Path::new("run-b")),
        Err(ArchiveError::Symlink { .. })
    ));
    assert!(std::fs::symlink_metadata(mount.join("run-b")).is_ok());

    // A real run directory with symlinks to the outside inside it, at several depths.
    let run = mount.join("run-c");
    std::fs::create_dir_all(run.join("x/y/z")).unwrap();
    std::fs::write(run.join("x/y/z/file"), "gone").unwrap();
    std::fs::write(run.join("file"), "gone").unwrap();
    symlink(&outside, run.join("link-out")).unwrap();
    symlink(outside.join("token"), run.join("x/token-link")).unwrap();
    symlink(outside.join("nested"), run.join("x/y/nested-link")).unwrap();
    std::fs::create_dir_all(mount.join("neighbour")).unwrap();
    std::fs::write(mount.join("neighbour/file"), "stays").unwrap();

    root.remove_below(Path::new("run-c")).unwrap();
    assert!(!run.exists() && std::fs::symlink_metadata(&run).is_err());
    let left: Vec<_> = std::fs::read_dir(&mount)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        left.iter()
            .all(|name| !name.starts_with(".tekflux-removing-")),
        "nothing is left aside: {left:?}"
    );
    assert_eq!(
        std::fs::read_to_string(mount.join("neighbour/file")).unwrap(),
        "stays"
    );
    assert_eq!(
        snapshot(&outside),
        before_outside,
        "the outside is untouched"
    );

    // Gone already, the root itself, or a path out of the tree: nothing to do or refused.
    assert!(matches!(
        root.remove_below(Path::new("run-c")),
        Err(ArchiveError::SourceMissing { .. })
    ));
    assert!(root.remove_below(Path::new("")).is_err());
    assert!(root.remove_below(Path::new("../outside")).is_err());
    assert!(mount.join("neighbour").exists() && outside.join("token").exists());
}

#[test]
fn a_tree_over_the_byte_limit_is_refused_before_the_file_that_crosses_it_is_read() {
    let work = tempfile::tempdir().unwrap();
    for name in ["a", "b", "c"] {
        std::fs::write(work.path().join(name), [b'x'; 1000]).unwrap();
    }
    let tree = Tree::open(work.path()).unwrap();
    assert!(write_archive(&tree, 1, 3000, u64::MAX, Vec::new()).is_ok());
    match write_archive(&tree, 1, 2999, u64::MAX, Vec::new()) {
        Err(error @ ArchiveError::TooLarge { .. }) => {
            assert!(!error.is_transient());
            assert!(error.to_string().contains("maxArchiveBytes"), "{error}");
        }
        other => panic!("{other:?}"),
    }

    // A sparse terabyte takes no disk and, refused up front, no time.
    let sparse = work.path().join("sparse");
    std::fs::File::create(&sparse)
        .unwrap()
        .set_len(1 << 40)
        .unwrap();
    let started = Instant::now();
    match write_archive(&tree, 1, DEFAULT_MAX_ARCHIVE_BYTES, u64::MAX, Vec::new()) {
        Err(ArchiveError::TooLarge { path, limit }) => {
            assert_eq!(path, sparse);
            assert_eq!(limit, DEFAULT_MAX_ARCHIVE_BYTES);
        }
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn a_tree_over_the_entry_limit_is_refused_when_it_crosses_it() {
    let work = tempfile::tempdir().unwrap();
    std::fs::create_dir(work.path().join("d")).unwrap();
    for name in ["d/a", "d/b", "e"] {
        std::fs::write(work.path().join(name), "x").unwrap();
    }
    let tree = Tree::open(work.path()).unwrap();
    // d, d/a, d/b, e: four entries.
    let (summary, _) = write_archive(&tree, 1, DEFAULT_MAX_ARCHIVE_BYTES, 4, Vec::new()).unwrap();
    assert_eq!(summary.entries, 4);
    match write_archive(&tree, 1, DEFAULT_MAX_ARCHIVE_BYTES, 3, Vec::new()) {
        Err(error @ ArchiveError::TooManyEntries { .. }) => {
            assert!(!error.is_transient());
            assert_eq!(error.kind(), "too_many_entries");
            assert!(error.to_string().contains("maxArchiveEntries"), "{error}");
        }
        other => panic!("{other:?}"),
    }
    // The default is what restore accepts by default, so what is archived comes back.
    assert_eq!(
        tekflux_run_complete::archive::DEFAULT_MAX_ARCHIVE_ENTRIES,
        tekflux_run_complete::archive::RestoreLimits::default().max_entries
    );
}
