//! `tekflux archive DIR s3://bucket/key` and `tekflux restore s3://bucket/key DIR`: the
//! run-complete archive code as a command, so a Tekton step can seed a fresh `emptyDir` from
//! the object store and save it back (see `infra/tekton/`).
//!
//! S3 settings (endpoint, region, path style, compression level, part size) come from the same
//! config and environment as the functions. The result is one JSON line on stdout; progress
//! goes to stderr, redrawn in place on a terminal and as a plain line every few seconds
//! otherwise (a Tekton step log). Exit codes follow sysexits so a Task or script can tell
//! "retry later" (69) from "this archive is refused" (65) and "nothing there" (66).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde_json::json;
use tekflux_common::config::{self, Env, Sections};
use tekflux_common::error::without_os_error;
use tekflux_run_complete::s3_client::S3Setup;
mod output;
mod s3_url;

use output::{ProgressLine, Sha256File, discard, print_result};
pub use s3_url::{MetadataPair, S3Url};

use tekflux_run_complete::archive::{
    ArchiveError, ArchiveOptions, MIN_PART_SIZE, RestoreError, RestoreLimits, RestoreOptions,
    S3ErrorKind, S3Failure, Tree, check_target, restore_from_s3, upload_archive, verify_archive,
};

/// Bad arguments or configuration, S3 settings and credentials included: no region, no or
/// wrong credentials, access denied, an endpoint that is not a URL (sysexits `EX_USAGE`).
pub const EXIT_USAGE: u8 = 64;
/// The archive or target was refused: hostile entry, over a limit, corrupt, sha256 mismatch,
/// target not empty (`EX_DATAERR`).
pub const EXIT_REFUSED: u8 = 65;
/// The object, its bucket or the directory to archive does not exist (`EX_NOINPUT`).
pub const EXIT_NOT_FOUND: u8 = 66;
/// The store is unreachable, too slow, overloaded or failing (connection failures, timeouts,
/// 5xx, throttling); retrying later may succeed (`EX_UNAVAILABLE`).
pub const EXIT_UNAVAILABLE: u8 = 69;
/// Writing the restored tree or the `--sha256-file` failed (`EX_CANTCREAT`).
pub const EXIT_CANNOT_WRITE: u8 = 73;
/// The receiver refused the credentials (401/403): `tekflux send` (`EX_NOPERM`).
pub const EXIT_NO_PERMISSION: u8 = 77;

/// S3 allows at most 10,000 parts of at most 5 GiB each.
const MAX_PART_SIZE_MIB: u64 = 5 * 1024;

/// Arguments of `tekflux archive`.
#[derive(Debug, Args)]
pub struct ArchiveArgs {
    /// The directory to archive (followed if it is itself a symlink); symlinks inside are
    /// stored as links and never followed, special files are skipped.
    pub source: PathBuf,
    /// Where to store the archive, s3://bucket/key.
    pub url: S3Url,
    /// zstd level, 1 (fastest) to 22; default: the config's storage.compressionLevel, else 3.
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..=22))]
    pub level: Option<i32>,
    /// Multipart part size in MiB (5 to 5120); default: storage.partSizeMib, else 8.
    #[arg(long, value_parser = clap::value_parser!(u64).range(5..=MAX_PART_SIZE_MIB))]
    pub part_size_mib: Option<u64>,
    /// Parts uploaded at the same time (1 to 16).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=16))]
    pub concurrency: Option<u16>,
    /// Most bytes of file content to archive; a larger tree is refused (exit 65) before the
    /// file that crosses it is read. Default: storage.maxArchiveBytes, else 64 GiB.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_bytes: Option<u64>,
    /// Most entries (files, directories, links) to archive; a larger tree is refused (exit 65).
    /// Default: storage.maxArchiveEntries, else 1,000,000 (what restore accepts).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_entries: Option<u64>,
    /// Skip reading the object back to check its sha256.
    #[arg(long)]
    pub no_verify: bool,
    /// Object metadata, name=value (repeatable); stored as x-amz-meta-<name>.
    #[arg(long = "metadata", value_name = "NAME=VALUE")]
    pub metadata: Vec<MetadataPair>,
    /// Also write the archive's sha256 (hex, no newline) to this file, e.g. a Tekton result.
    #[arg(long, value_name = "PATH")]
    pub sha256_file: Option<PathBuf>,
}

/// Arguments of `tekflux restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The archive, s3://bucket/key.
    pub url: S3Url,
    /// The directory to fill; it must not exist or be empty.
    pub target: PathBuf,
    /// The sha256 the archive must have (from the run's manifest.json); empty means unchecked.
    #[arg(long, value_name = "HEX")]
    pub sha256: Option<String>,
    /// Most tar entries accepted.
    #[arg(long, default_value_t = RestoreLimits::default().max_entries)]
    pub max_entries: u64,
    /// Most bytes of file content written, in total.
    #[arg(long, default_value_t = RestoreLimits::default().max_bytes)]
    pub max_bytes: u64,
    /// Largest GNU long name, long link name or PAX header read, in bytes.
    #[arg(long, default_value_t = RestoreLimits::default().max_header_bytes)]
    pub max_header_bytes: u64,
    /// Base-2 log of the largest zstd window accepted (25 = 32 MiB, 27 = 128 MiB); the
    /// decoder holds one window in memory.
    #[arg(long, default_value_t = RestoreLimits::default().max_window_log,
          value_parser = clap::value_parser!(u32).range(10..=31))]
    pub max_window_log: u32,
    /// A missing object is a success that restores nothing (the first build of a branch).
    /// Also takes `=true`/`=false`, so a Tekton param can switch it.
    #[arg(long, num_args = 0..=1, require_equals = true, default_value_t = false, default_missing_value = "true",
          action = clap::ArgAction::Set)]
    pub missing_ok: bool,
}

/// Runs `tekflux archive`.
///
/// Everything local is checked before the first request: the config, the directory, and that
/// `--sha256-file` can be written; then the S3 settings (region, endpoint).
pub fn archive(env: &Env, args: ArchiveArgs) -> ExitCode {
    // Only `storage` is read: a Task's step has S3 credentials, not the webhook secrets.
    let config = match crate::load_config(env, Sections::STORAGE) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let mut options = ArchiveOptions::from_storage(&config.storage);
    if let Some(level) = args.level {
        options.level = level;
    }
    if let Some(mib) = args.part_size_mib {
        // Within range by the parser; the max() only documents the floor.
        options.part_size = usize::try_from(mib * 1024 * 1024)
            .unwrap_or(usize::MAX)
            .max(MIN_PART_SIZE);
    }
    if let Some(concurrency) = args.concurrency {
        options.concurrency = usize::from(concurrency);
    }
    if let Some(max_bytes) = args.max_bytes {
        options.max_bytes = max_bytes;
    }
    if let Some(max_entries) = args.max_entries {
        options.max_entries = max_entries;
    }
    let metadata: BTreeMap<String, String> = args
        .metadata
        .into_iter()
        .map(|pair| (pair.name, pair.value))
        .collect();
    let url = args.url;

    // The operator names the directory: it may be reached through a symlink.
    let tree = match Tree::open(&args.source) {
        Ok(tree) => tree,
        Err(error) => return fail("archive", &error, archive_exit_code(&error)),
    };
    let sha256_file = match args
        .sha256_file
        .as_deref()
        .map(Sha256File::open)
        .transpose()
    {
        Ok(file) => file,
        Err((path, error)) => {
            eprintln!(
                "tekflux archive: cannot write the sha256 to {}: {}; nothing was uploaded",
                path.display(),
                without_os_error(&error.to_string())
            );
            return ExitCode::from(EXIT_CANNOT_WRITE);
        }
    };
    let Store {
        runtime,
        client,
        endpoint,
    } = match Store::connect("archive", &config, env, |endpoint| {
        format!("cannot store {url} at {endpoint}")
    }) {
        Ok(store) => store,
        Err(code) => {
            discard(sha256_file);
            return code;
        }
    };

    let progress = ProgressLine::to_stderr("archive", None);
    options.progress = progress.callback();
    let result = runtime.block_on(async {
        let report =
            upload_archive(&client, &url.bucket, &url.key, &tree, &options, metadata).await;
        // The line's rate is the upload's, not diluted by the read-back.
        progress.finish();
        let report = report?;
        let verified = if args.no_verify {
            false
        } else {
            verify_archive(&client, &url.bucket, &url.key, &report.sha256).await?;
            true
        };
        Ok::<_, ArchiveError>((report, verified))
    });
    let (report, verified) = match result {
        Ok(done) => done,
        Err(error) => {
            discard(sha256_file);
            let code = archive_exit_code(&error);
            return fail("archive", &error.at(&endpoint), code);
        }
    };
    if let Some(file) = sha256_file
        && let Err((path, error)) = file.write(&report.sha256)
    {
        // The archive is stored; only the note of its sha256 is missing.
        eprintln!(
            "tekflux archive: stored {url} but cannot write the sha256 to {}: {}",
            path.display(),
            without_os_error(&error.to_string())
        );
        return ExitCode::from(EXIT_CANNOT_WRITE);
    }
    print_result(&json!({
        "url": url.to_string(),
        "bytes": report.bytes,
        "sha256": report.sha256,
        "entries": report.entries,
        "skippedSpecial": report.skipped_special,
        "parts": report.parts,
        "verified": verified,
    }));
    ExitCode::SUCCESS
}

/// Runs `tekflux restore`.
///
/// The target is checked (empty or absent, and writable) before the first request, then the
/// S3 settings (region, endpoint).
pub fn restore(env: &Env, args: RestoreArgs) -> ExitCode {
    // Only `storage` is read: a Task's step has S3 credentials, not the webhook secrets.
    let config = match crate::load_config(env, Sections::STORAGE) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let expected_sha256 = args
        .sha256
        .map(|sha| sha.trim().to_ascii_lowercase())
        .filter(|sha| !sha.is_empty());
    if let Some(sha) = &expected_sha256
        && !(sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        eprintln!("tekflux restore: --sha256 {sha:?} is not 64 hex digits");
        return ExitCode::from(EXIT_USAGE);
    }
    let url = args.url;
    let target = args.target;
    if let Err(error) = check_target(&target) {
        return fail("restore", &error, restore_exit_code(&error));
    }
    let Store {
        runtime,
        client,
        endpoint,
    } = match Store::connect("restore", &config, env, |endpoint| {
        format!("cannot read {url} from {endpoint}")
    }) {
        Ok(store) => store,
        Err(code) => return code,
    };

    let result = runtime.block_on(async {
        // Only for the progress bar's total: restore_from_s3 reports a missing object itself.
        let total = client
            .head_object()
            .bucket(&url.bucket)
            .key(&url.key)
            .send()
            .await
            .ok()
            .and_then(|head| head.content_length())
            .and_then(|length| u64::try_from(length).ok());
        let progress = ProgressLine::to_stderr("restore", total);
        let options = RestoreOptions {
            limits: RestoreLimits {
                max_entries: args.max_entries,
                max_bytes: args.max_bytes,
                max_header_bytes: args.max_header_bytes,
                max_window_log: args.max_window_log,
            },
            expected_sha256,
            progress: progress.callback(),
        };
        let result = restore_from_s3(&client, &url.bucket, &url.key, &target, &options).await;
        progress.finish();
        result
    });
    let report = match result {
        Ok(report) => report,
        Err(RestoreError::NotFound { .. }) if args.missing_ok => {
            eprintln!(
                "tekflux restore: {url} does not exist at {endpoint}; nothing restored \
                 (--missing-ok)"
            );
            print_result(&json!({
                "url": url.to_string(),
                "target": target.display().to_string(),
                "restored": false,
            }));
            return ExitCode::SUCCESS;
        }
        Err(error @ RestoreError::NotFound { .. }) => {
            eprintln!(
                "tekflux restore: {error} at {endpoint}; check the URL, or pass --missing-ok \
                 when a missing archive is expected (the first build of a branch)"
            );
            return ExitCode::from(EXIT_NOT_FOUND);
        }
        Err(error) => {
            let code = restore_exit_code(&error);
            return fail("restore", &error.at(&endpoint), code);
        }
    };
    print_result(&json!({
        "url": url.to_string(),
        "target": target.display().to_string(),
        "restored": true,
        "entries": report.entries,
        "bytes": report.bytes,
        "archiveBytes": report.archive_bytes,
        "sha256": report.sha256,
    }));
    ExitCode::SUCCESS
}

/// What the commands that use the bucket need: a runtime, the client, and the endpoint for
/// messages.
pub(crate) struct Store {
    pub(crate) runtime: tokio::runtime::Runtime,
    pub(crate) client: aws_sdk_s3::Client,
    pub(crate) endpoint: String,
}

impl Store {
    /// Loads the S3 settings and checks them locally (region, endpoint) before any request: a
    /// problem there is printed as `tekflux <command>: <doing(endpoint)>: <problem>` and exits
    /// 64 (`Err` carries the exit code).
    pub(crate) fn connect(
        command: &str,
        config: &config::Config,
        env: &Env,
        doing: impl FnOnce(&str) -> String,
    ) -> Result<Self, ExitCode> {
        let runtime = runtime()?;
        let setup = runtime.block_on(S3Setup::load(&config.storage, env));
        let endpoint = setup.describe_endpoint();
        if let Err(error) = setup.check() {
            eprintln!("tekflux {command}: {}: {error}", doing(&endpoint));
            return Err(ExitCode::from(EXIT_USAGE));
        }
        Ok(Self {
            client: setup.client(),
            runtime,
            endpoint,
        })
    }
}

/// A fresh async runtime; `Err` carries the exit code when none can start.
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Runtime::new().map_err(|error| {
        eprintln!(
            "tekflux: cannot start the async runtime: {}",
            without_os_error(&error.to_string())
        );
        ExitCode::FAILURE
    })
}

/// The exit code for an S3 failure: configuration (credentials, permissions, region,
/// endpoint) is 64, a missing bucket or object 66, and only a store that is unreachable,
/// overloaded or failing 69, the code that tells a script to retry.
fn s3_exit_code(failure: &S3Failure) -> u8 {
    match failure.kind() {
        S3ErrorKind::Config => EXIT_USAGE,
        S3ErrorKind::NoSuchBucket | S3ErrorKind::NoSuchKey => EXIT_NOT_FOUND,
        S3ErrorKind::Unavailable => EXIT_UNAVAILABLE,
        S3ErrorKind::Refused => 1,
    }
}

fn archive_exit_code(error: &ArchiveError) -> u8 {
    match error {
        ArchiveError::S3(failure) => s3_exit_code(failure),
        ArchiveError::SourceMissing { .. } | ArchiveError::NotADirectory { .. } => EXIT_NOT_FOUND,
        ArchiveError::InvalidOptions(_) => EXIT_USAGE,
        ArchiveError::TooLarge { .. }
        | ArchiveError::TooManyEntries { .. }
        | ArchiveError::Symlink { .. } => EXIT_REFUSED,
        error if error.is_transient() => EXIT_UNAVAILABLE,
        _ => 1,
    }
}

fn restore_exit_code(error: &RestoreError) -> u8 {
    match error {
        RestoreError::S3(failure) => s3_exit_code(failure),
        RestoreError::NotFound { .. } => EXIT_NOT_FOUND,
        RestoreError::TargetNotEmpty { .. } => EXIT_REFUSED,
        RestoreError::Write { .. } => EXIT_CANNOT_WRITE,
        error if error.is_refusal() => EXIT_REFUSED,
        error if error.is_transient() => EXIT_UNAVAILABLE,
        _ => 1,
    }
}

fn fail(command: &str, error: &(dyn std::error::Error + 'static), code: u8) -> ExitCode {
    // The whole chain: archive and restore errors keep the OS's error as their source.
    eprintln!(
        "tekflux {command}: {}",
        tekflux_common::error::plain_chain(error)
    );
    ExitCode::from(code)
}
