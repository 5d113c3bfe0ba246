//! The archive core against a real S3 server: streamed multipart upload, verification,
//! determinism, abort on failure, and a restore that refuses a corpus of hostile archives
//! (generated here) without writing anything outside its target, including links that lead out
//! through other links, checked on random trees against the kernel's own resolution.

#![allow(clippy::unwrap_used)] // tests may unwrap; a failure is the point

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use tekflux_run_complete::archive::{
    ArchiveOptions, MIN_PART_SIZE, RestoreError, RestoreLimits, RestoreOptions, Tree,
    restore_archive, restore_from_s3, upload_archive, verify_archive, write_archive,
};
use tekflux_testkit::fault_proxy::{FaultProxy, ProxyFault};
use tekflux_testkit::s3::TestS3;
use tekflux_testkit::tree::{pseudo_random, snapshot};

/// A tree with everything the archive must keep, a FIFO it must skip, and a 12 MiB
/// incompressible file so the upload needs several 5 MiB parts.
fn write_tree(dir: &Path) {
    std::fs::create_dir_all(dir.join("src/deep/er")).unwrap();
    std::fs::create_dir_all(dir.join("empty")).unwrap();
    std::fs::write(dir.join("src/lib.rs"), "pub fn f() {}\n".repeat(500)).unwrap();
    std::fs::write(
        dir.join("src/deep/er/blob"),
        pseudo_random(12 * 1024 * 1024, 11),
    )
    .unwrap();
    std::fs::write(dir.join("run.sh"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(dir.join("run.sh"), std::fs::Permissions::from_mode(0o750)).unwrap();
    std::os::unix::fs::symlink("src/lib.rs", dir.join("lib")).unwrap();
    std::os::unix::fs::symlink("src/deep", dir.join("deep")).unwrap();
    std::os::unix::fs::symlink("nowhere", dir.join("dangling")).unwrap();
    let status = std::process::Command::new("mkfifo")
        .arg(dir.join("pipe"))
        .status()
        .unwrap();
    assert!(status.success());
}

fn small_parts() -> ArchiveOptions {
    ArchiveOptions {
        level: 1,
        part_size: MIN_PART_SIZE,
        concurrency: 3,
        ..ArchiveOptions::default()
    }
}

#[tokio::test]
async fn a_tree_goes_up_in_parts_verifies_and_comes_back_identical() {
    let s3 = TestS3::in_process().await;
    archive_round_trip(&s3).await;
}

#[tokio::test]
#[ignore = "integration tier: needs SeaweedFS started by .ci/seaweedfs"]
async fn seaweedfs_a_tree_goes_up_in_parts_verifies_and_comes_back_identical() {
    let s3 = TestS3::seaweedfs_from_env().expect("TEKFLUX_TEST_S3_ENDPOINT is set by .ci/run");
    archive_round_trip(&s3).await;
}

async fn archive_round_trip(s3: &TestS3) {
    let bucket = s3.fresh_bucket().await;
    let client = s3.client();
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("source");
    write_tree(&source);
    let before = snapshot(&source);

    let metadata = BTreeMap::from([("tekflux-sha".to_owned(), "abc".to_owned())]);
    let report = upload_archive(
        &client,
        &bucket,
        "a.tar.zst",
        &Tree::open(&source).unwrap(),
        &small_parts(),
        metadata,
    )
    .await
    .unwrap();
    assert!(report.parts >= 3, "{report:?}");
    assert_eq!(report.skipped_special, 1, "the FIFO is skipped and counted");
    assert_eq!(report.entries, before.len() as u64);
    let verified = verify_archive(&client, &bucket, "a.tar.zst", &report.sha256)
        .await
        .unwrap();
    assert_eq!(verified.bytes, report.bytes);

    // The same tree always gives the same bytes.
    let again = upload_archive(
        &client,
        &bucket,
        "b.tar.zst",
        &Tree::open(&source).unwrap(),
        &small_parts(),
        BTreeMap::new(),
    )
    .await
    .unwrap();
    assert_eq!(again.sha256, report.sha256);

    // A wrong sha256 is caught by verification.
    let wrong = verify_archive(&client, &bucket, "a.tar.zst", &"0".repeat(64))
        .await
        .unwrap_err();
    assert!(wrong.to_string().contains("does not match"), "{wrong}");

    // Restore into an existing empty directory, checking the manifest's sha256.
    let target = work.path().join("target");
    std::fs::create_dir(&target).unwrap();
    let options = RestoreOptions {
        expected_sha256: Some(report.sha256.to_uppercase()),
        ..RestoreOptions::default()
    };
    let restored = restore_from_s3(&client, &bucket, "a.tar.zst", &target, &options)
        .await
        .unwrap();
    assert_eq!(restored.sha256, report.sha256);
    assert_eq!(restored.entries, report.entries);
    assert_eq!(snapshot(&target), before);
    assert_eq!(
        snapshot(&source),
        before,
        "archiving leaves the source as it was"
    );
}

#[tokio::test]
async fn a_failing_upload_is_aborted_and_reported_as_transient() {
    let s3 = TestS3::in_process().await;
    let bucket = s3.fresh_bucket().await;
    let proxy = FaultProxy::start(&s3.endpoint()).await;
    proxy.fail_when(
        |line| line.contains("partNumber=2&"),
        ProxyFault::ServiceUnavailable,
    );
    let work = tempfile::tempdir().unwrap();
    write_tree(work.path());
    let before = snapshot(work.path());

    let error = upload_archive(
        &s3.client_via(&proxy.url()),
        &bucket,
        "a.tar.zst",
        &Tree::open(work.path()).unwrap(),
        &small_parts(),
        BTreeMap::new(),
    )
    .await
    .unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert!(
        proxy
            .requests()
            .iter()
            .any(|line| line.starts_with("DELETE ") && line.contains("uploadId=")),
        "AbortMultipartUpload was sent: {:?}",
        proxy.requests()
    );
    let stored = s3
        .client()
        .head_object()
        .bucket(&bucket)
        .key("a.tar.zst")
        .send()
        .await;
    assert!(
        stored
            .as_ref()
            .err()
            .and_then(|err| err.as_service_error())
            .is_some_and(|err| err.is_not_found()),
        "no object after a failed upload: {stored:?}"
    );
    assert_eq!(snapshot(work.path()), before);
}

#[tokio::test]
async fn a_missing_object_and_an_unreachable_store_are_told_apart() {
    let s3 = TestS3::in_process().await;
    let bucket = s3.fresh_bucket().await;
    // The scratch folder lives for the whole test, so that "no target" means the restore
    // created none, not that the folder around it was already gone.
    let scratch = tempfile::tempdir().unwrap();
    let target = scratch.path().join("t");
    let missing = restore_from_s3(
        &s3.client(),
        &bucket,
        "nope",
        &target,
        &RestoreOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(missing, RestoreError::NotFound { .. }),
        "{missing}"
    );
    s3.shutdown();
    let gone = restore_from_s3(
        &s3.client(),
        &bucket,
        "nope",
        &target,
        &RestoreOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(gone.is_transient(), "{gone}");
    assert!(!target.exists());
}

// ---- the hostile corpus ----

/// One tar entry, written with raw header bytes so that names the `tar` crate's safe setters
/// refuse (`..`, absolute) can be produced.
#[derive(Clone, Copy)]
struct Raw<'a> {
    name: &'a [u8],
    kind: tar::EntryType,
    link: &'a [u8],
    data: &'a [u8],
}

fn entry<'a>(name: &'a str, kind: tar::EntryType) -> Raw<'a> {
    Raw {
        name: name.as_bytes(),
        kind,
        link: b"",
        data: b"",
    }
}

fn tar_of(entries: &[Raw<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for raw in entries {
        let mut header = tar::Header::new_gnu();
        {
            let gnu = header.as_gnu_mut().unwrap();
            gnu.name[..raw.name.len()].copy_from_slice(raw.name);
            gnu.linkname[..raw.link.len()].copy_from_slice(raw.link);
        }
        header.set_entry_type(raw.kind);
        header.set_mode(0o644);
        header.set_size(raw.data.len() as u64);
        header.set_cksum();
        builder.append(&header, raw.data).unwrap();
    }
    builder.into_inner().unwrap()
}

fn zst(tar: &[u8]) -> Vec<u8> {
    zstd::encode_all(tar, 3).unwrap()
}

/// Restores `archive` into `<work>/target` with `options` and checks the refusal: an error
/// naming `expect`, and the whole of `<work>` (a sentinel directory beside the target, no target)
/// exactly as before. Then the same into an existing empty target, which stays empty.
fn assert_refused(archive: &[u8], options: &RestoreOptions, expect: &str) {
    let work = tempfile::tempdir().unwrap();
    let sentinel = work.path().join("sentinel");
    std::fs::create_dir(&sentinel).unwrap();
    std::fs::write(sentinel.join("keep"), "keep").unwrap();
    let target = work.path().join("target");
    let before = snapshot(work.path());

    let error = restore_archive(archive, &target, options).unwrap_err();
    assert!(
        error.to_string().contains(expect),
        "expected {expect:?} in: {error}"
    );
    assert!(error.is_refusal(), "{expect}: a refusal (exit 65): {error}");
    assert_eq!(
        snapshot(work.path()),
        before,
        "{expect}: no target left behind, nothing written beside it"
    );

    std::fs::create_dir(&target).unwrap();
    let before = snapshot(work.path());
    restore_archive(archive, &target, options).unwrap_err();
    assert_eq!(
        snapshot(work.path()),
        before,
        "{expect}: the empty target stays empty"
    );
}

#[test]
fn hostile_paths_and_links_are_refused() {
    use tar::EntryType::{Directory, Link, Regular, Symlink};
    let work = tempfile::tempdir().unwrap();
    let absolute = format!("{}/sentinel/escaped", work.path().display());
    let with_link = |name, link: &'static str| Raw {
        link: link.as_bytes(),
        ..entry(name, Symlink)
    };
    let cases: Vec<(Vec<Raw<'_>>, &str)> = vec![
        (vec![entry(&absolute, Regular)], "absolute paths"),
        (
            vec![entry("../sentinel/escaped", Regular)],
            "absolute paths, `..`",
        ),
        (vec![entry("a/../../sentinel/x", Regular)], "`..`"),
        (vec![with_link("etc", "/etc")], "outside the target"),
        (vec![with_link("up", "..")], "outside the target"),
        (
            vec![with_link("a/up", "../../sentinel")],
            "outside the target",
        ),
        (
            vec![with_link("here", "."), entry("here/x", Regular)],
            "through a symlink",
        ),
        (vec![with_link("f", "g"), entry("f", Regular)], "same name"),
        (
            vec![with_link("d", "e"), entry("d", Directory)],
            "over an entry restored earlier",
        ),
        (
            vec![Raw {
                link: b"/etc/passwd",
                ..entry("passwd", Link)
            }],
            "hard links",
        ),
        (vec![entry("tty", tar::EntryType::Char)], "device files"),
        (vec![entry("sda", tar::EntryType::Block)], "device files"),
        (vec![entry("pipe", tar::EntryType::Fifo)], "FIFOs"),
    ];
    for (entries, expect) in cases {
        // A harmless first entry, so refusals happen after something was already unpacked.
        let mut all = vec![Raw {
            data: b"fine",
            ..entry("fine.txt", Regular)
        }];
        all.extend(entries);
        assert_refused(&zst(&tar_of(&all)), &RestoreOptions::default(), expect);
    }
}

#[test]
fn limits_and_damage_are_refused() {
    let files: Vec<String> = (0..11).map(|i| format!("f{i}")).collect();
    let many: Vec<_> = files
        .iter()
        .map(|name| entry(name, tar::EntryType::Regular))
        .collect();
    let limited = |max_entries, max_bytes| RestoreOptions {
        limits: RestoreLimits {
            max_entries,
            max_bytes,
            ..RestoreLimits::default()
        },
        ..RestoreOptions::default()
    };
    assert_refused(
        &zst(&tar_of(&many)),
        &limited(10, 1 << 20),
        "more than 10 entries",
    );

    let big = vec![b'x'; 2000];
    let one_big = [Raw {
        data: &big,
        ..entry("big", tar::EntryType::Regular)
    }];
    assert_refused(
        &zst(&tar_of(&one_big)),
        &limited(10, 1000),
        "more than 1000 bytes",
    );

    // A bomb: 256 MiB of zeros compress to a few KiB; the limit stops it after 16 MiB.
    let bomb = bomb(256 << 20);
    assert!(bomb.len() < 256 << 10, "{} bytes", bomb.len());
    assert_refused(&bomb, &limited(10, 16 << 20), "decompression bomb");

    let good = zst(&tar_of(&[Raw {
        data: b"hello",
        ..entry("hello", tar::EntryType::Regular)
    }]));
    let wrong_sha = RestoreOptions {
        expected_sha256: Some("ab".repeat(32)),
        ..RestoreOptions::default()
    };
    assert_refused(&good, &wrong_sha, "sha256");
    assert_refused(
        &good[..good.len() / 2],
        &RestoreOptions::default(),
        "corrupt",
    );
    assert_refused(b"not zstd at all", &RestoreOptions::default(), "corrupt");
}

/// A tar with one file of `size` zeros, compressed as it is generated (never held whole).
fn bomb(size: u64) -> Vec<u8> {
    let encoder = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
    let mut builder = tar::Builder::new(encoder);
    let mut header = tar::Header::new_gnu();
    header.set_path("zeros").unwrap();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_cksum();
    builder.append(&header, io::repeat(0).take(size)).unwrap();
    let mut encoder = builder.into_inner().unwrap();
    encoder.flush().unwrap();
    encoder.finish().unwrap()
}

#[test]
fn a_non_empty_target_is_refused_and_kept() {
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("mine"), "mine").unwrap();
    let archive = zst(&tar_of(&[entry("x", tar::EntryType::Regular)]));
    let error = restore_archive(&archive[..], work.path(), &RestoreOptions::default()).unwrap_err();
    assert!(
        matches!(error, RestoreError::TargetNotEmpty { .. }),
        "{error}"
    );
    let names: Vec<_> = std::fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["mine"]);
}

#[test]
fn links_inside_the_tree_are_restored() {
    use tar::EntryType::{Directory, Regular, Symlink};
    let archive = zst(&tar_of(&[
        entry("a", Directory),
        Raw {
            data: b"x",
            ..entry("a/file", Regular)
        },
        Raw {
            link: b"../a/file",
            ..entry("a/self", Symlink)
        },
        Raw {
            link: b"a",
            ..entry("dir-link", Symlink)
        },
    ]));
    let work = tempfile::tempdir().unwrap();
    let target = work.path().join("t");
    let report = restore_archive(&archive[..], &target, &RestoreOptions::default()).unwrap();
    assert_eq!(report.entries, 4);
    assert_eq!(std::fs::read(target.join("a/self")).unwrap(), b"x");
    assert_eq!(
        std::fs::read_link(target.join("dir-link")).unwrap(),
        Path::new("a")
    );
}

// ---- links that lead out through other links ----

fn link<'a>(name: &'a str, target: &'a str) -> Raw<'a> {
    Raw {
        link: target.as_bytes(),
        ..entry(name, tar::EntryType::Symlink)
    }
}

#[test]
fn link_chains_that_lead_out_are_refused_in_any_order() {
    use tar::EntryType::{Directory, Regular};
    const OUT: &str = "outside the target";
    let chain: Vec<(String, String)> = (0..41)
        .map(|i| (format!("l{i}"), format!("l{}", i + 1)))
        .collect();
    // (entries, the refusal in this order, the refusal with the entries reversed)
    let cases: Vec<(Vec<Raw<'_>>, &str, &str)> = vec![
        // The security review's chain: l1 is the root, esc climbs above it.
        (
            vec![
                link("a/b/c/d/e/f/l1", "../../../../../.."),
                link("esc", "a/b/c/d/e/f/l1/../../../../../../../etc/hostname"),
            ],
            OUT,
            OUT,
        ),
        // Into the sentinel beside the target: from the root, one `..` is the parent.
        (
            vec![
                link("a/b/l1", "../.."),
                link("esc", "a/b/l1/../sentinel/keep"),
            ],
            OUT,
            OUT,
        ),
        // A link through a link through a link.
        (
            vec![
                link("d1/d2/d3/up3", "../../.."),
                link("d1/d2/up2", "../../d1/d2/d3/up3"),
                link("d1/up1", "../d1/d2/up2"),
                link("esc", "d1/up1/.."),
            ],
            OUT,
            OUT,
        ),
        // Through a link to a file, taken as a directory.
        (
            vec![
                Raw {
                    data: b"x",
                    ..entry("a/file", Regular)
                },
                link("f", "a/file"),
                link("esc", "f/../../.."),
            ],
            OUT,
            OUT,
        ),
        // Dangling, through a directory a later step may create.
        (vec![link("later", "not-yet/../..")], OUT, OUT),
        (vec![link("a", "b"), link("b", "a")], "loop", "loop"),
        (
            vec![link("d/a", "../e/b"), link("e/b", "../d/a/x")],
            "loop",
            "loop",
        ),
        (vec![link("up", "..")], OUT, OUT),
        (vec![link("l1", "l2"), link("l2", "/etc")], OUT, OUT),
        (
            chain.iter().map(|(path, to)| link(path, to)).collect(),
            "more than 40 symlinks",
            "more than 40 symlinks",
        ),
        // A directory, then a link replacing it.
        (
            vec![entry("d", Directory), link("d", "..")],
            "same name",
            "over an entry restored earlier",
        ),
        // A file written through a link that leads into the sentinel.
        (
            vec![
                link("a/b/l1", "../.."),
                link("esc", "a/b/l1/../sentinel"),
                entry("esc/planted", Regular),
            ],
            "through a symlink",
            "same name",
        ),
    ];
    for (entries, forward, backward) in cases {
        assert_refused(&zst(&tar_of(&entries)), &RestoreOptions::default(), forward);
        let reversed: Vec<Raw<'_>> = entries.iter().rev().copied().collect();
        assert_refused(
            &zst(&tar_of(&reversed)),
            &RestoreOptions::default(),
            backward,
        );
    }
}

#[test]
fn links_through_links_that_stay_inside_are_restored_in_any_order() {
    use tar::EntryType::Regular;
    let entries = [
        Raw {
            data: b"top",
            ..entry("top", Regular)
        },
        Raw {
            data: b"deep",
            ..entry("a/b/c/file", Regular)
        },
        link("l1", "a/b"),
        // Lexically `../x`; through l1 it is the root's `top`.
        link("up", "l1/../../top"),
        link("d1/d2/d3/up3", "../../.."),
        link("d1/d2/up2", "../../d1/d2/d3/up3"),
        link("d1/up1", "../d1/d2/up2"),
        link("via", "d1/up1/a/b/c/file"),
        link("dangling", "not/yet/there"),
    ];
    let reversed: Vec<Raw<'_>> = entries.iter().rev().copied().collect();
    for order in [&entries[..], &reversed[..]] {
        let work = tempfile::tempdir().unwrap();
        let target = work.path().join("t");
        let report = restore_archive(
            &zst(&tar_of(order))[..],
            &target,
            &RestoreOptions::default(),
        )
        .unwrap();
        assert_eq!(report.entries, 9);
        assert_eq!(std::fs::read(target.join("up")).unwrap(), b"top");
        assert_eq!(std::fs::read(target.join("via")).unwrap(), b"deep");
        assert_eq!(
            std::fs::read_link(target.join("dangling")).unwrap(),
            Path::new("not/yet/there")
        );
        assert_resolves_inside(&target);
    }
}

#[test]
fn the_zstd_window_is_bounded_and_level_22_archives_restore() {
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("source");
    std::fs::create_dir(&source).unwrap();
    std::fs::write(source.join("file"), "x".repeat(10_000)).unwrap();
    // Level 22 would use a 128 MiB window; the archiver caps it at what restore accepts.
    let (_, archive) = write_archive(
        &Tree::open(&source).unwrap(),
        22,
        u64::MAX,
        u64::MAX,
        Vec::new(),
    )
    .unwrap();
    let target = work.path().join("target");
    restore_archive(&archive[..], &target, &RestoreOptions::default()).unwrap();
    assert_eq!(snapshot(&target), snapshot(&source));

    // A frame that asks for a 64 MiB window is refused before the decoder allocates it.
    let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    encoder.window_log(26).unwrap();
    encoder
        .write_all(&tar_of(&[entry("x", tar::EntryType::Regular)]))
        .unwrap();
    let wide = encoder.finish().unwrap();
    assert_refused(&wide, &RestoreOptions::default(), "--max-window-log");
    // The limit is the restore's to set.
    let roomy = RestoreOptions {
        limits: RestoreLimits {
            max_window_log: 26,
            ..RestoreLimits::default()
        },
        ..RestoreOptions::default()
    };
    let target = work.path().join("roomy");
    restore_archive(&wide[..], &target, &roomy).unwrap();
    assert!(target.join("x").is_file());
}

/// Every entry below `target` resolves inside it: by `canonicalize` where the path exists, and
/// by [`walk_on_disk`] for every link (dangling ones included), which must agree with
/// `canonicalize` where both answer.
fn assert_resolves_inside(target: &Path) {
    let root = std::fs::canonicalize(target).unwrap();
    for (relative, entry) in snapshot(&root) {
        let path = root.join(&relative);
        let canonical = std::fs::canonicalize(&path).ok();
        if let Some(canonical) = &canonical {
            assert!(canonical.starts_with(&root), "{relative:?} → {canonical:?}");
        }
        if let tekflux_testkit::tree::Entry::Link { .. } = entry {
            let walked = walk_on_disk(&root, &root, &relative, &mut 0)
                .unwrap_or_else(|| panic!("{relative:?} leads outside or loops"));
            if let Some(canonical) = canonical {
                assert_eq!(
                    walked, canonical,
                    "{relative:?}: the walk agrees with the kernel"
                );
            }
        }
    }
}

/// Where `path` leads when walked from the directory `at` on disk as the kernel walks it
/// (links read with `readlink` and followed, at most 40), taking what does not exist as a
/// directory; `None` when the walk leaves `root` at any point or follows too many links.
fn walk_on_disk(root: &Path, at: &Path, path: &Path, follows: &mut u32) -> Option<PathBuf> {
    let mut at = at.to_owned();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if at == root {
                    return None;
                }
                at.pop();
            }
            Component::Normal(name) => {
                at.push(name);
                let is_link =
                    std::fs::symlink_metadata(&at).is_ok_and(|meta| meta.file_type().is_symlink());
                if is_link {
                    *follows += 1;
                    if *follows > 40 {
                        return None;
                    }
                    let target = std::fs::read_link(&at).unwrap();
                    at.pop();
                    at = walk_on_disk(root, &at, &target, follows)?;
                }
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(at)
}

// ---- random trees ----

/// The testkit's deterministic bytes, read as dice.
struct Dice {
    bytes: Vec<u8>,
    at: usize,
}

impl Dice {
    fn new(seed: u64) -> Self {
        Self {
            bytes: pseudo_random(1024, seed),
            at: 0,
        }
    }

    fn below(&mut self, n: usize) -> usize {
        let byte = self.bytes[self.at % self.bytes.len()];
        self.at += 1;
        usize::from(byte) % n
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Dir,
    File(Vec<u8>),
    Link(String),
}

/// A consistent random tree over a small alphabet, so links often name each other: every
/// parent is a directory (or left implicit), and links and files have nothing below them.
fn random_tree(dice: &mut Dice) -> BTreeMap<String, Node> {
    const NAMES: [&str; 3] = ["a", "b", "c"];
    let wanted = 3 + dice.below(8);
    let mut tree = BTreeMap::new();
    for _ in 0..wanted * 4 {
        if tree.len() == wanted {
            break;
        }
        let depth = 1 + dice.below(3);
        let path = (0..depth)
            .map(|_| NAMES[dice.below(NAMES.len())])
            .collect::<Vec<_>>()
            .join("/");
        let node = match dice.below(10) {
            0..=2 => Node::Dir,
            3..=4 => Node::File(path.as_bytes().to_vec()),
            _ => {
                let len = 1 + dice.below(4);
                let target = (0..len)
                    .map(|_| match dice.below(10) {
                        0..=1 => "..",
                        2 => ".",
                        _ => NAMES[dice.below(NAMES.len())],
                    })
                    .collect::<Vec<_>>()
                    .join("/");
                Node::Link(target)
            }
        };
        let parents_are_dirs = path
            .match_indices('/')
            .all(|(end, _)| matches!(tree.get(&path[..end]), None | Some(Node::Dir)));
        let below = format!("{path}/");
        let leaf_over_children =
            node != Node::Dir && tree.keys().any(|key: &String| key.starts_with(&below));
        if !tree.contains_key(&path) && parents_are_dirs && !leaf_over_children {
            tree.insert(path, node);
        }
    }
    tree
}

/// The tree as a tar archive, entries in a random order.
fn random_archive(tree: &BTreeMap<String, Node>, dice: &mut Dice) -> Vec<u8> {
    let mut entries: Vec<Raw<'_>> = tree
        .iter()
        .map(|(path, node)| match node {
            Node::Dir => entry(path, tar::EntryType::Directory),
            Node::File(data) => Raw {
                data,
                ..entry(path, tar::EntryType::Regular)
            },
            Node::Link(target) => link(path, target),
        })
        .collect();
    for i in (1..entries.len()).rev() {
        entries.swap(i, dice.below(i + 1));
    }
    zst(&tar_of(&entries))
}

/// The tree written to disk directly (no checks), under `root`; files are left empty, which is
/// all that resolving links needs.
fn write_on_disk(tree: &BTreeMap<String, Node>, root: &Path) {
    for (path, node) in tree {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        match node {
            Node::Dir => std::fs::create_dir_all(&path).unwrap(),
            Node::File(_) => drop(std::fs::File::create(&path).unwrap()),
            Node::Link(target) => std::os::unix::fs::symlink(target, &path).unwrap(),
        }
    }
}

/// Whether every link of the tree on disk below `root` resolves inside it.
fn every_link_inside(root: &Path) -> bool {
    snapshot(root).iter().all(|(relative, entry)| {
        !matches!(entry, tekflux_testkit::tree::Entry::Link { .. })
            || walk_on_disk(root, root, relative, &mut 0).is_some()
    })
}

/// Random trees of directories, files and relative links, restored with their entries in a
/// random order: an accepted tree is restored as generated and every entry resolves inside the
/// target; a refused one leaves everything as it was, and the same tree written to disk by hand
/// does have a link that leads out or loops. So restore refuses exactly what leads out.
#[test]
fn random_trees_are_restored_inside_or_refused_unchanged() {
    const CASES: u64 = 300;
    let started = std::time::Instant::now();
    let (mut accepted, mut refused) = (0, 0);
    // One directory for every case (creating and removing files is most of the time): the
    // sentinel beside the targets, and the hand-written copies of refused trees elsewhere.
    let work = tempfile::tempdir().unwrap();
    let work_root = std::fs::canonicalize(work.path()).unwrap();
    std::fs::create_dir(work_root.join("sentinel")).unwrap();
    std::fs::write(work_root.join("sentinel/keep"), "keep").unwrap();
    let before = snapshot(&work_root);
    let by_hand = tempfile::tempdir().unwrap();
    let by_hand_root = std::fs::canonicalize(by_hand.path()).unwrap();

    for seed in 0..CASES {
        let mut dice = Dice::new(seed);
        let tree = random_tree(&mut dice);
        let archive = random_archive(&tree, &mut dice);
        let target = work_root.join(format!("target-{seed}"));

        match restore_archive(&archive[..], &target, &RestoreOptions::default()) {
            Ok(_) => {
                accepted += 1;
                let restored = snapshot(&target);
                for (path, node) in &tree {
                    let found = &restored[Path::new(path)];
                    let same = match (node, found) {
                        (Node::Dir, tekflux_testkit::tree::Entry::Dir { .. }) => true,
                        (Node::File(data), tekflux_testkit::tree::Entry::File { content, .. }) => {
                            data == content
                        }
                        (Node::Link(to), tekflux_testkit::tree::Entry::Link { target }) => {
                            Path::new(to) == target
                        }
                        _ => false,
                    };
                    assert!(same, "seed {seed}: {path} restored as {found:?}");
                }
                assert_resolves_inside(&target);
                std::fs::remove_dir_all(&target).unwrap();
                assert_eq!(
                    snapshot(&work_root),
                    before,
                    "seed {seed}: nothing written beside the target"
                );
            }
            Err(error) => {
                refused += 1;
                assert!(
                    matches!(error, RestoreError::Hostile { .. })
                        && error.to_string().contains("symlink"),
                    "seed {seed}: {error}"
                );
                assert_eq!(snapshot(&work_root), before, "seed {seed}: {error}");
                let root = by_hand_root.join(seed.to_string());
                write_on_disk(&tree, &root);
                assert!(
                    !every_link_inside(&root),
                    "seed {seed}: refused ({error}) although every link stays inside: {tree:?}"
                );
            }
        }
    }
    let elapsed = started.elapsed();
    eprintln!("{CASES} random trees: {accepted} restored, {refused} refused, in {elapsed:?}");
    // Both outcomes well represented. No bound on the time: the checks take about half a second,
    // the rest is the file system creating and removing a few thousand entries.
    assert!(
        accepted >= CASES / 5 && refused >= CASES / 5,
        "{accepted} / {refused}"
    );
}

/// A header entry of `kind` that declares `size` bytes but carries only a few: a restore that
/// read it before checking its size would fail on the truncated stream, not on the limit.
fn header_claiming(kind: tar::EntryType, size: u64) -> Vec<u8> {
    let mut header = tar::Header::new_gnu();
    header.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
    header.set_entry_type(kind);
    header.set_mode(0o644);
    header.set_size(size);
    header.set_cksum();
    let mut tar = header.as_bytes().to_vec();
    tar.extend_from_slice(&[b'a'; 512]);
    tar
}

#[test]
fn long_names_and_pax_headers_are_bounded_before_they_are_read() {
    for (kind, name) in [
        (tar::EntryType::GNULongName, "GNU long name"),
        (tar::EntryType::GNULongLink, "GNU long link name"),
        (tar::EntryType::XHeader, "PAX extended header"),
        (tar::EntryType::XGlobalHeader, "PAX global header"),
    ] {
        // 4 GiB declared, 512 bytes sent: refused on the declaration.
        let archive = zst(&header_claiming(kind, 4 << 30));
        assert_refused(
            &archive,
            &RestoreOptions::default(),
            &format!("{name} of 4294967296 bytes"),
        );
    }

    // A whole 2 MiB long name (a few KiB compressed) is over the default 1 MiB.
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_mode(0o644);
    header.set_size(0);
    let long = "d/".repeat(1 << 20);
    builder
        .append_data(&mut header, format!("{long}f"), io::empty())
        .unwrap();
    let archive = zst(&builder.into_inner().unwrap());
    assert_refused(
        &archive,
        &RestoreOptions::default(),
        "more than the limit of 1048576 bytes",
    );
    let small_limit = RestoreOptions {
        limits: RestoreLimits {
            max_header_bytes: 64,
            ..RestoreLimits::default()
        },
        ..RestoreOptions::default()
    };
    let mut builder = tar::Builder::new(Vec::new());
    builder
        .append_data(&mut header, "n".repeat(200), io::empty())
        .unwrap();
    assert_refused(
        &zst(&builder.into_inner().unwrap()),
        &small_limit,
        "GNU long name of 201 bytes",
    );
}

#[test]
fn long_names_and_pax_records_name_the_entry_they_precede() {
    let long_dir = "directory-with-a-long-name-".repeat(8);
    let long_file = format!("{long_dir}/{}", "f".repeat(150));
    let long_link = format!("{}/../{}", "x".repeat(120), "f".repeat(150));

    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_mode(0o755);
    header.set_entry_type(tar::EntryType::Directory);
    header.set_size(0);
    builder
        .append_data(&mut header, &long_dir, io::empty())
        .unwrap();
    let mut header = tar::Header::new_gnu();
    header.set_mode(0o644);
    header.set_size(5);
    builder
        .append_data(&mut header, &long_file, &b"long\n"[..])
        .unwrap();
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Symlink);
    header.set_mode(0o777);
    header.set_size(0);
    builder
        .append_link(&mut header, format!("{long_dir}/link"), &long_link)
        .unwrap();
    // PAX names, as `tar --format=posix` writes them, win over the header's.
    builder
        .append_pax_extensions([("path", &b"pax-name"[..])])
        .unwrap();
    let mut header = tar::Header::new_gnu();
    header.set_mode(0o644);
    header.set_size(3);
    builder
        .append_data(&mut header, "header-name", &b"pax"[..])
        .unwrap();
    builder
        .append_pax_extensions([("linkpath", &b"pax-name"[..])])
        .unwrap();
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Symlink);
    header.set_mode(0o777);
    header.set_size(0);
    builder
        .append_link(&mut header, "to-pax", "header-target")
        .unwrap();
    let archive = zst(&builder.into_inner().unwrap());

    let work = tempfile::tempdir().unwrap();
    let target = work.path().join("target");
    let report = restore_archive(&archive[..], &target, &RestoreOptions::default()).unwrap();
    assert_eq!(
        report.entries, 5,
        "header entries are not counted as entries"
    );
    assert_eq!(std::fs::read(target.join(&long_file)).unwrap(), b"long\n");
    assert_eq!(
        std::fs::read_link(target.join(&long_dir).join("link")).unwrap(),
        Path::new(&long_link)
    );
    assert_eq!(std::fs::read(target.join("pax-name")).unwrap(), b"pax");
    assert!(!target.join("header-name").exists());
    assert_eq!(
        std::fs::read_link(target.join("to-pax")).unwrap(),
        Path::new("pax-name")
    );
    assert_resolves_inside(&target);
}

#[test]
fn names_from_headers_are_checked_like_any_other() {
    let pax_then = |records: &[(&str, &[u8])], name: &str, kind: tar::EntryType, link: &str| {
        let mut builder = tar::Builder::new(Vec::new());
        builder
            .append_pax_extensions(records.iter().copied())
            .unwrap();
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(0o644);
        header.set_size(0);
        if kind == tar::EntryType::Symlink {
            builder.append_link(&mut header, name, link).unwrap();
        } else {
            builder.append_data(&mut header, name, io::empty()).unwrap();
        }
        zst(&builder.into_inner().unwrap())
    };
    let defaults = RestoreOptions::default();
    let regular = tar::EntryType::Regular;
    assert_refused(
        &pax_then(&[("path", b"../escape")], "inside", regular, ""),
        &defaults,
        "absolute paths, `..`",
    );
    assert_refused(
        &pax_then(&[("path", b"/etc/cron.d/x")], "inside", regular, ""),
        &defaults,
        "absolute paths, `..`",
    );
    assert_refused(
        &pax_then(
            &[("linkpath", b"../../etc/hostname")],
            "l",
            tar::EntryType::Symlink,
            "harmless",
        ),
        &defaults,
        "outside the target",
    );
    assert_refused(
        &pax_then(&[("size", b"100")], "inside", regular, ""),
        &defaults,
        "PAX size records are not restored",
    );
    assert_refused(
        &pax_then(&[("GNU.sparse.map", b"0,10")], "inside", regular, ""),
        &defaults,
        "sparse files are not restored",
    );

    // A long name must describe an entry: two in a row, or one at the end, are refused.
    let long_name = |name: &str| {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
        header.set_entry_type(tar::EntryType::GNULongName);
        header.set_mode(0o644);
        header.set_size(name.len() as u64 + 1);
        header.set_cksum();
        builder
            .append(&header, format!("{name}\0").as_bytes())
            .unwrap();
        builder.into_inner().unwrap()
    };
    let mut twice = long_name(&"a".repeat(120));
    twice.truncate(twice.len() - 1024); // the end-of-archive blocks
    twice.extend(long_name(&"b".repeat(120)));
    assert_refused(
        &zst(&twice),
        &defaults,
        "two headers of the same kind describe one entry",
    );
    assert_refused(
        &zst(&long_name(&"c".repeat(120))),
        &defaults,
        "no entry follows",
    );
}
