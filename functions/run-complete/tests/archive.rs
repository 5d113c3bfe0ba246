//! The archive core against a real S3 server: streamed multipart upload, verification,
//! determinism, abort on failure, and a restore that refuses a corpus of hostile archives
//! (generated here) without writing anything outside its target.

#![allow(clippy::unwrap_used)] // tests may unwrap; a failure is the point

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use tekflux_run_complete::archive::{
    ArchiveOptions, MIN_PART_SIZE, RestoreError, RestoreLimits, RestoreOptions, Tree,
    restore_archive, restore_from_s3, upload_archive, verify_archive,
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
    assert!(stored.is_err(), "no object after a failed upload");
    assert_eq!(snapshot(work.path()), before);
}

#[tokio::test]
async fn a_missing_object_and_an_unreachable_store_are_told_apart() {
    let s3 = TestS3::in_process().await;
    let bucket = s3.fresh_bucket().await;
    let target = tempfile::tempdir().unwrap().path().join("t");
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
/// naming `expect`, no target left behind, and the sentinel beside it untouched.
fn assert_refused(archive: &[u8], options: &RestoreOptions, expect: &str) {
    let work = tempfile::tempdir().unwrap();
    let sentinel = work.path().join("sentinel");
    std::fs::create_dir(&sentinel).unwrap();
    std::fs::write(sentinel.join("keep"), "keep").unwrap();
    let target = work.path().join("target");

    let error = restore_archive(archive, &target, options).unwrap_err();
    assert!(
        error.to_string().contains(expect),
        "expected {expect:?} in: {error}"
    );
    assert!(!target.exists(), "{expect}: the target is left as it was");
    let mut names: Vec<_> = std::fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["sentinel"],
        "{expect}: nothing written beside the target"
    );
    let inside: Vec<_> = std::fs::read_dir(&sentinel)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        inside,
        ["keep"],
        "{expect}: nothing written into the sentinel"
    );

    // The same archive into an existing empty directory leaves it empty.
    std::fs::create_dir(&target).unwrap();
    restore_archive(archive, &target, options).unwrap_err();
    assert_eq!(std::fs::read_dir(&target).unwrap().count(), 0, "{expect}");
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
