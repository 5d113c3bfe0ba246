//! run-complete's workspace archiver on loopback, in one run, against the shell pipeline it
//! replaces: `tar -cf - DIR | zstd -1 | aws s3 cp - s3://bucket/key` to archive and
//! `aws s3 cp s3://bucket/key - | zstd -d | tar -xf - -C DIR` to restore, both against the same
//! S3 server as `upload_archive` (zstd level 1, then `verify_archive`, as the function does before
//! it deletes anything) and `restore_from_s3`; the archiver's peak RSS per workspace size; and
//! the pipelines' stages timed alone, to say where the time goes.
//!
//! `cargo bench -p tekflux-run-complete --bench archive` prints Markdown tables (BENCHMARKS.md
//! explains them). Every tekflux measurement runs in a child process of this binary (it
//! re-executes itself with `--archive-child …`, `--restore-child …`, `--write-child …` or
//! `--idle-child …`) that does only that and prints its own `VmHWM` from `/proc/self/status`
//! just before it exits, so the peak RSS is exact and the archiver's own. The S3 server is a
//! separate process too: the SeaweedFS named by `TEKFLUX_TEST_S3_ENDPOINT` (and its two key
//! variables), else one this binary starts with `.ci/seaweedfs`, else, saying so in the output,
//! the in-process `s3s-fs` server run in a child (`--serve-s3`).
//!
//! Workspaces are generated from a seed: about 50,000 text files per GiB (source code, JSON,
//! YAML, Markdown) plus four large, partly compressible binaries (random blocks, repeats of
//! recent blocks, padding and tables). Everything is on loopback and reads the workspace from
//! the page cache; every timing is the median of at least three runs, shell and tekflux
//! alternating, and nothing asserts on time.
//!
//! Environment (all optional):
//!
//! | variable | meaning |
//! |---|---|
//! | `TEKFLUX_BENCH_QUICK=1` | small sizes only (10 MiB and 40 MiB), under a minute |
//! | `TEKFLUX_BENCH_SIZES` | workspace sizes, e.g. `10MiB,100MiB,1GiB` (the default) |
//! | `TEKFLUX_BENCH_RUNS` | runs per measurement, at least 3 (default 3) |
//! | `TEKFLUX_BENCH_STAGES=0` | skip the per-stage timings |
//! | `TEKFLUX_BENCH_PART_MIB`, `TEKFLUX_BENCH_CONCURRENCY` | override `ArchiveOptions`' defaults |
//! | `TEKFLUX_BENCH_SEED` | the workspace generator's seed |
//! | `TEKFLUX_BENCH_RESTORE_DIR` | where restores write (default `/dev/shm` where it has room, else `TMPDIR`) |
//! | `TMPDIR` | where workspaces are generated (deleted afterwards) |

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use aws_sdk_s3::presigning::PresigningConfig;
use serde_json::{Value, json};
use tekflux_run_complete::archive::{
    ArchiveOptions, DEFAULT_MAX_ARCHIVE_BYTES, MIN_PART_SIZE, Progress, RestoreOptions, Tree,
    restore_from_s3, upload_archive, verify_archive, write_archive,
};
use tekflux_testkit::machine::{machine_load, median, status_kib};
use tekflux_testkit::s3::{ACCESS_KEY_ENV, ENDPOINT_ENV, REGION, SECRET_KEY_ENV, TestS3};
use tokio::runtime::Runtime;

/// zstd level of both pipelines: `zstd -1` is what the shell baseline uses.
const LEVEL: i32 = 1;
const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;
/// The shape of a 1 GiB workspace: this many small text files, the rest in a few binaries.
const FILES_PER_GIB: u64 = 50_000;
const DEFAULT_SEED: u64 = 0x7e4f_1c5a_2024_0601;
const FULL_SIZES: [u64; 3] = [10 * MIB, 100 * MIB, GIB];
const QUICK_SIZES: [u64; 2] = [10 * MIB, 40 * MIB];
/// Goals (issue 4): throughput at least the shell pipeline's, peak RSS under this at 1 GiB.
const RSS_GOAL_MIB: f64 = 64.0;
/// Restore's goal: this many times the shell pipeline's throughput (issue 16).
const RESTORE_GOAL: f64 = 1.3;
/// Most a restore's peak may grow from the smallest workspace to the largest, in MiB: its
/// memory is the zstd window (512 KiB at level 1), the decoded blocks in flight (1.5 MiB) and
/// the directories and links it keeps, which grow with their number, not with bytes.
const RESTORE_GROWTH_MIB: f64 = 8.0;

const ARCHIVE_CHILD: &str = "--archive-child";
const RESTORE_CHILD: &str = "--restore-child";
const WRITE_CHILD: &str = "--write-child";
const IDLE_CHILD: &str = "--idle-child";
const SERVE_S3: &str = "--serve-s3";
const GENERATE: &str = "--generate";

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench` (and any filter); only the child modes take arguments.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest = args.get(1..).unwrap_or_default();
    match args.first().map(String::as_str) {
        Some(ARCHIVE_CHILD) => archive_child(rest),
        Some(RESTORE_CHILD) => restore_child(rest),
        Some(WRITE_CHILD) => write_child(rest),
        Some(IDLE_CHILD) => idle_child(rest),
        Some(SERVE_S3) => serve_s3(),
        Some(GENERATE) => generate_only(rest),
        _ => {
            let smoke = !args.iter().any(|arg| arg == "--bench");
            orchestrate(Settings::from_env(smoke)?)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Child processes: each does one thing and prints one JSON line with its figures and VmHWM.

/// A multi-threaded runtime (one worker per core) and an S3 client configured as the function
/// configures one for MinIO, from the `TEKFLUX_TEST_S3_*` variables the parent sets.
fn child_setup() -> anyhow::Result<(Runtime, aws_sdk_s3::Client)> {
    tekflux_common::clients::install_crypto_provider();
    let runtime = Runtime::new()?;
    let s3 = TestS3::seaweedfs_from_env()
        .with_context(|| format!("the parent passes the S3 server in {ENDPOINT_ENV}"))?;
    Ok((runtime, s3.client()))
}

/// This process's peak resident set size so far, in KiB.
fn own_peak_kib() -> anyhow::Result<u64> {
    let status = fs::read_to_string("/proc/self/status")?;
    status_kib(&status, "VmHWM:").context("no VmHWM in /proc/self/status")
}

/// `--archive-child DIR BUCKET KEY PART_SIZE CONCURRENCY`: `upload_archive`, then
/// `verify_archive`, as the function does before it deletes the workspace.
fn archive_child(args: &[String]) -> anyhow::Result<()> {
    let [dir, bucket, key, part_size, concurrency] = args else {
        bail!("usage: {ARCHIVE_CHILD} DIR BUCKET KEY PART_SIZE CONCURRENCY");
    };
    let (runtime, client) = child_setup()?;
    let options = ArchiveOptions {
        level: LEVEL,
        part_size: part_size.parse()?,
        concurrency: concurrency.parse()?,
        max_bytes: DEFAULT_MAX_ARCHIVE_BYTES,
        max_entries: u64::MAX,
        progress: Progress::default(),
    };
    runtime.block_on(async {
        let metadata = BTreeMap::from([("tekflux-run".to_owned(), "bench".to_owned())]);
        let started = Instant::now();
        let tree = Tree::open(Path::new(dir))?;
        let report = upload_archive(&client, bucket, key, &tree, &options, metadata).await?;
        let upload_s = started.elapsed().as_secs_f64();
        let upload_peak_kib = own_peak_kib()?;
        let started = Instant::now();
        let verified = verify_archive(&client, bucket, key, &report.sha256).await?;
        let verify_s = started.elapsed().as_secs_f64();
        println!(
            "{}",
            json!({
                "upload_s": upload_s,
                "verify_s": verify_s,
                "bytes": report.bytes,
                "verified_bytes": verified.bytes,
                "sha256": report.sha256,
                "entries": report.entries,
                "parts": report.parts,
                "upload_peak_kib": upload_peak_kib,
                "peak_kib": own_peak_kib()?,
            })
        );
        Ok(())
    })
}

/// `--restore-child BUCKET KEY TARGET SHA256`: `restore_from_s3` into `TARGET` (which does not
/// exist yet). A restore that fails is reported as `{"unavailable": "<error>"}`, not as a
/// crash: `restore_from_s3` may not be finished.
fn restore_child(args: &[String]) -> anyhow::Result<()> {
    let [bucket, key, target, sha256] = args else {
        bail!("usage: {RESTORE_CHILD} BUCKET KEY TARGET SHA256");
    };
    let (runtime, client) = child_setup()?;
    let options = RestoreOptions {
        expected_sha256: Some(sha256.clone()),
        ..RestoreOptions::default()
    };
    runtime.block_on(async {
        let started = Instant::now();
        let outcome = restore_from_s3(&client, bucket, key, Path::new(target), &options).await;
        let restore_s = started.elapsed().as_secs_f64();
        let line = match outcome {
            Ok(report) => json!({
                "restore_s": restore_s,
                "report": format!("{report:?}"),
                "peak_kib": own_peak_kib()?,
            }),
            Err(err) => json!({ "unavailable": err.to_string() }),
        };
        println!("{line}");
        Ok(())
    })
}

/// `--write-child DIR`: `write_archive` into a sink that only counts, i.e. tar + zstd without
/// S3, for the stage timings.
fn write_child(args: &[String]) -> anyhow::Result<()> {
    let [dir] = args else {
        bail!("usage: {WRITE_CHILD} DIR");
    };
    let started = Instant::now();
    let tree = Tree::open(Path::new(dir))?;
    let (summary, sink) = write_archive(
        &tree,
        LEVEL,
        DEFAULT_MAX_ARCHIVE_BYTES,
        u64::MAX,
        CountingSink::default(),
    )?;
    println!(
        "{}",
        json!({
            "write_s": started.elapsed().as_secs_f64(),
            "bytes": sink.0,
            "entries": summary.entries,
            "peak_kib": own_peak_kib()?,
        })
    );
    Ok(())
}

/// Counts what is written and drops it.
#[derive(Default)]
struct CountingSink(u64);

impl Write for CountingSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.0 += data.len() as u64;
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `--idle-child BUCKET`: the runtime, the client and one HeadBucket; the floor under the
/// archiver's peak RSS.
fn idle_child(args: &[String]) -> anyhow::Result<()> {
    let [bucket] = args else {
        bail!("usage: {IDLE_CHILD} BUCKET");
    };
    let (runtime, client) = child_setup()?;
    runtime.block_on(async {
        client
            .head_bucket()
            .bucket(bucket)
            .send()
            .await
            .map_err(|err| {
                anyhow::anyhow!(aws_sdk_s3::error::DisplayErrorContext(&err).to_string())
            })?;
        println!("{}", json!({ "peak_kib": own_peak_kib()? }));
        Ok(())
    })
}

/// `--generate DIR SIZE`: only writes the workspace of `SIZE` (e.g. `1GiB`) into `DIR`, with
/// the seed from `TEKFLUX_BENCH_SEED` or the default, to profile one stage by hand.
fn generate_only(args: &[String]) -> anyhow::Result<()> {
    let [dir, size] = args else {
        bail!("usage: {GENERATE} DIR SIZE");
    };
    let seed = match std::env::var("TEKFLUX_BENCH_SEED") {
        Ok(seed) => seed.parse().context("TEKFLUX_BENCH_SEED")?,
        Err(_) => DEFAULT_SEED,
    };
    let workspace = generate(Path::new(dir), parse_size(size)?, seed)?;
    println!(
        "{} files, {} directories, {} bytes in {:.1} s",
        workspace.files, workspace.dirs, workspace.bytes, workspace.generate_s
    );
    Ok(())
}

/// `--serve-s3`: the in-process `s3s-fs` server, in its own process so its memory and CPU are
/// not the archiver's. Prints `s3 ENDPOINT ACCESS_KEY SECRET_KEY` and serves until stdin closes.
fn serve_s3() -> anyhow::Result<()> {
    let runtime = Runtime::new()?;
    runtime.block_on(async {
        use tokio::io::AsyncReadExt;
        let s3 = TestS3::in_process().await;
        let credentials = s3.credentials();
        println!(
            "s3 {} {} {}",
            s3.endpoint(),
            credentials.access_key_id(),
            credentials.secret_access_key()
        );
        io::stdout().flush()?;
        let mut sink = Vec::new();
        let _ = tokio::io::stdin().read_to_end(&mut sink).await;
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// Settings.

struct Settings {
    sizes: Vec<u64>,
    runs: usize,
    stages: bool,
    part_size: usize,
    concurrency: usize,
    seed: u64,
    /// `full`, `quick` or `smoke` (without `--bench`: one tiny run of every step, no SeaweedFS
    /// start-up, so `cargo test --benches` stays fast).
    mode: &'static str,
}

impl Settings {
    fn from_env(smoke: bool) -> anyhow::Result<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        let quick = var("TEKFLUX_BENCH_QUICK").is_some_and(|value| value != "0");
        let mode = if smoke {
            "smoke"
        } else if quick {
            "quick"
        } else {
            "full"
        };
        let sizes = match (var("TEKFLUX_BENCH_SIZES"), mode) {
            (Some(list), _) => list
                .split(',')
                .map(parse_size)
                .collect::<anyhow::Result<Vec<u64>>>()?,
            (None, "smoke") => vec![MIB],
            (None, "quick") => QUICK_SIZES.to_vec(),
            (None, _) => FULL_SIZES.to_vec(),
        };
        let runs = match var("TEKFLUX_BENCH_RUNS") {
            Some(runs) => runs.parse::<usize>().context("TEKFLUX_BENCH_RUNS")?.max(3),
            None if smoke => 1,
            None => 3,
        };
        let defaults = ArchiveOptions::default();
        let part_size = match var("TEKFLUX_BENCH_PART_MIB") {
            Some(mib) => mib.parse::<usize>().context("TEKFLUX_BENCH_PART_MIB")? * MIB as usize,
            None => defaults.part_size,
        };
        if part_size < MIN_PART_SIZE {
            bail!("TEKFLUX_BENCH_PART_MIB must be at least 5");
        }
        let concurrency = match var("TEKFLUX_BENCH_CONCURRENCY") {
            Some(n) => n.parse().context("TEKFLUX_BENCH_CONCURRENCY")?,
            None => defaults.concurrency,
        };
        let seed = match var("TEKFLUX_BENCH_SEED") {
            Some(seed) => seed.parse().context("TEKFLUX_BENCH_SEED")?,
            None => DEFAULT_SEED,
        };
        Ok(Self {
            sizes,
            runs,
            stages: !smoke && var("TEKFLUX_BENCH_STAGES").is_none_or(|value| value != "0"),
            part_size,
            concurrency,
            seed,
            mode,
        })
    }
}

/// `10MiB`, `1GiB`, `512K`, `2G` (binary units) or a plain byte count.
fn parse_size(text: &str) -> anyhow::Result<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .with_context(|| format!("workspace size {text:?}"))?;
    let unit = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1024,
        "m" | "mib" => MIB,
        "g" | "gib" => GIB,
        other => bail!("unknown size unit {other:?} in {text:?} (use KiB, MiB or GiB)"),
    };
    Ok(number * unit)
}

fn human(bytes: u64) -> String {
    if bytes >= GIB && bytes.is_multiple_of(GIB) {
        format!("{} GiB", bytes / GIB)
    } else if bytes >= MIB {
        format!("{:.0} MiB", bytes as f64 / MIB as f64)
    } else {
        format!("{:.0} KiB", bytes as f64 / 1024.0)
    }
}

// ---------------------------------------------------------------------------------------------
// The S3 server, in its own process.

struct Server {
    endpoint: String,
    access_key: String,
    secret_key: String,
    description: String,
    owned: Owned,
}

enum Owned {
    /// Started by someone else; only our bucket is removed.
    Nothing,
    /// Started here with `.ci/seaweedfs start DIR`; stopped and its data removed on drop.
    SeaweedFs(PathBuf),
    /// `--serve-s3`; stops when its stdin closes.
    Child(Child, Option<ChildStdin>),
}

impl Server {
    fn start(smoke: bool) -> anyhow::Result<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        if let Some(endpoint) = var(ENDPOINT_ENV) {
            return Ok(Self {
                endpoint,
                access_key: var(ACCESS_KEY_ENV).context(ACCESS_KEY_ENV)?,
                secret_key: var(SECRET_KEY_ENV).context(SECRET_KEY_ENV)?,
                description: format!("SeaweedFS from {ENDPOINT_ENV}"),
                owned: Owned::Nothing,
            });
        }
        let why = if smoke {
            "smoke run".to_owned()
        } else {
            match Self::start_seaweedfs() {
                Ok(server) => return Ok(server),
                Err(err) => format!("SeaweedFS could not be started: {err:#}"),
            }
        };
        eprintln!("falling back to the in-process s3s-fs server ({why})");
        let mut child = Command::new(std::env::current_exe()?)
            .arg(SERVE_S3)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take();
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("server stdout")?).read_line(&mut line)?;
        let fields: Vec<&str> = line.split_whitespace().collect();
        let ["s3", endpoint, access_key, secret_key] = fields.as_slice() else {
            bail!("unexpected output from {SERVE_S3}: {line:?}");
        };
        Ok(Self {
            endpoint: (*endpoint).to_owned(),
            access_key: (*access_key).to_owned(),
            secret_key: (*secret_key).to_owned(),
            description: format!(
                "**in-process s3s-fs** (in a child process; not SeaweedFS: {why})"
            ),
            owned: Owned::Child(child, stdin),
        })
    }

    /// `.ci/seaweedfs start` into the target directory, so the venv it installs is kept for the
    /// next run.
    fn start_seaweedfs() -> anyhow::Result<Self> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.ci/seaweedfs");
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("archive-bench-seaweedfs");
        eprintln!("starting SeaweedFS in {} …", dir.display());
        let output = Command::new("bash")
            .arg(&script)
            .arg("start")
            .arg(&dir)
            .stderr(Stdio::inherit())
            .output()?;
        if !output.status.success() {
            bail!("{} start exited with {}", script.display(), output.status);
        }
        let exports = String::from_utf8(output.stdout)?;
        let value = |name: &str| {
            exports
                .lines()
                .find_map(|line| line.strip_prefix(&format!("export {name}=")))
                .map(str::to_owned)
                .with_context(|| format!("{name} missing from the script's output"))
        };
        Ok(Self {
            endpoint: value(ENDPOINT_ENV)?,
            access_key: value(ACCESS_KEY_ENV)?,
            secret_key: value(SECRET_KEY_ENV)?,
            description: "SeaweedFS started by `.ci/seaweedfs` for this run".to_owned(),
            owned: Owned::SeaweedFs(dir),
        })
    }

    /// A client for the orchestrator's own requests (buckets, sizes, clean-up, presigning).
    fn client(&self) -> anyhow::Result<aws_sdk_s3::Client> {
        tekflux_common::clients::install_crypto_provider();
        let s3 = TestS3::seaweedfs_from(|name| match name {
            ENDPOINT_ENV => Some(self.endpoint.clone()),
            ACCESS_KEY_ENV => Some(self.access_key.clone()),
            SECRET_KEY_ENV => Some(self.secret_key.clone()),
            _ => None,
        })
        .context("server endpoint")?;
        Ok(s3.client())
    }

    /// What every child process and shell command gets: the testkit's variables for the tekflux
    /// children, the aws CLI's for the shell (a private config file: path-style addressing, and
    /// checksums only when required, as the SDK client is configured).
    fn env(&self, aws_config: &Path) -> Vec<(String, String)> {
        [
            (ENDPOINT_ENV, self.endpoint.as_str()),
            (ACCESS_KEY_ENV, &self.access_key),
            (SECRET_KEY_ENV, &self.secret_key),
            ("AWS_ACCESS_KEY_ID", &self.access_key),
            ("AWS_SECRET_ACCESS_KEY", &self.secret_key),
            ("AWS_DEFAULT_REGION", REGION),
            ("AWS_CONFIG_FILE", &aws_config.to_string_lossy()),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        match &mut self.owned {
            Owned::Nothing => {}
            Owned::SeaweedFs(dir) => {
                let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.ci/seaweedfs");
                let _ = Command::new("bash")
                    .arg(script)
                    .arg("stop")
                    .arg(&*dir)
                    .status();
                // The venv stays for the next run; the stored archives do not.
                let _ = fs::remove_dir_all(dir.join("data"));
            }
            Owned::Child(child, stdin) => {
                drop(stdin.take());
                let _ = child.wait();
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The shell baseline's tools.

/// How the shell baseline moves bytes to and from S3.
enum Transfer {
    /// `aws s3 cp -` (the aws CLI on PATH, or installed into a venv here).
    AwsCli(PathBuf),
    /// Presigned URLs with `curl -T -` / `curl`, when the aws CLI cannot be had.
    Curl,
    Unavailable(String),
}

impl Transfer {
    fn detect() -> Self {
        for tool in ["tar", "zstd"] {
            if !runs_ok(Command::new(tool).arg("--version")) {
                return Self::Unavailable(format!("`{tool}` is not installed"));
            }
        }
        if runs_ok(Command::new("aws").arg("--version")) {
            return Self::AwsCli(PathBuf::from("aws"));
        }
        let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("archive-bench-awscli");
        let aws = venv.join("bin/aws");
        if !aws.exists() {
            eprintln!("installing the aws CLI into {} …", venv.display());
            let installed = runs_ok(Command::new("python3").arg("-m").arg("venv").arg(&venv))
                && runs_ok(Command::new(venv.join("bin/pip")).args([
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "awscli",
                ]));
            if !installed {
                eprintln!("could not install the aws CLI");
            }
        }
        if runs_ok(Command::new(&aws).arg("--version")) {
            return Self::AwsCli(aws);
        }
        if runs_ok(Command::new("curl").arg("--version")) {
            return Self::Curl;
        }
        Self::Unavailable("neither the aws CLI nor curl is available".to_owned())
    }

    fn describe(&self) -> String {
        match self {
            Self::AwsCli(aws) => {
                let version = Command::new(aws)
                    .arg("--version")
                    .output()
                    .map(|out| {
                        let text = [out.stdout, out.stderr].concat();
                        String::from_utf8_lossy(&text)
                            .split_whitespace()
                            .next()
                            .unwrap_or("")
                            .to_owned()
                    })
                    .unwrap_or_default();
                format!("aws CLI ({version})")
            }
            Self::Curl => {
                "curl with presigned URLs (the aws CLI could not be installed)".to_owned()
            }
            Self::Unavailable(why) => format!("unavailable: {why}"),
        }
    }

    /// A shell command that uploads its stdin to `s3://bucket/key`.
    fn put(&self, bench: &Bench, key: &str) -> anyhow::Result<String> {
        match self {
            Self::AwsCli(aws) => Ok(format!(
                "{} s3 cp - {} --endpoint-url {} --only-show-errors",
                quote(&aws.to_string_lossy()),
                quote(&format!("s3://{}/{key}", bench.bucket)),
                quote(&bench.server.endpoint),
            )),
            Self::Curl => {
                let presigned = bench.runtime.block_on(
                    bench
                        .client
                        .put_object()
                        .bucket(&bench.bucket)
                        .key(key)
                        .presigned(PresigningConfig::expires_in(Duration::from_secs(3600))?),
                )?;
                Ok(format!("curl -sS -f -T - {}", quote(presigned.uri())))
            }
            Self::Unavailable(why) => bail!("{why}"),
        }
    }

    /// A shell command that writes `s3://bucket/key` to its stdout.
    fn get(&self, bench: &Bench, key: &str) -> anyhow::Result<String> {
        match self {
            Self::AwsCli(aws) => Ok(format!(
                "{} s3 cp {} - --endpoint-url {} --only-show-errors",
                quote(&aws.to_string_lossy()),
                quote(&format!("s3://{}/{key}", bench.bucket)),
                quote(&bench.server.endpoint),
            )),
            Self::Curl => {
                let presigned = bench.runtime.block_on(
                    bench
                        .client
                        .get_object()
                        .bucket(&bench.bucket)
                        .key(key)
                        .presigned(PresigningConfig::expires_in(Duration::from_secs(3600))?),
                )?;
                Ok(format!("curl -sS -f {}", quote(presigned.uri())))
            }
            Self::Unavailable(why) => bail!("{why}"),
        }
    }

    fn available(&self) -> bool {
        !matches!(self, Self::Unavailable(_))
    }
}

fn runs_ok(command: &mut Command) -> bool {
    command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// `text` as one shell word.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

// ---------------------------------------------------------------------------------------------
// Generated workspaces.

/// SplitMix64: small, fast and the same everywhere, which is all the generator needs.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

const WORDS: &[&str] = &[
    "account",
    "address",
    "archive",
    "batch",
    "branch",
    "buffer",
    "build",
    "bytes",
    "cache",
    "channel",
    "checksum",
    "claim",
    "client",
    "commit",
    "config",
    "context",
    "count",
    "delivery",
    "digest",
    "entry",
    "error",
    "event",
    "field",
    "filter",
    "handle",
    "header",
    "index",
    "item",
    "job",
    "key",
    "label",
    "layer",
    "limit",
    "list",
    "manifest",
    "message",
    "metric",
    "module",
    "name",
    "node",
    "offset",
    "option",
    "output",
    "owner",
    "page",
    "params",
    "parse",
    "part",
    "path",
    "payload",
    "pipeline",
    "policy",
    "pool",
    "query",
    "queue",
    "range",
    "reader",
    "record",
    "ref",
    "release",
    "repo",
    "request",
    "result",
    "retry",
    "route",
    "rule",
    "run",
    "schema",
    "secret",
    "server",
    "service",
    "session",
    "size",
    "source",
    "span",
    "spec",
    "state",
    "status",
    "step",
    "store",
    "stream",
    "table",
    "target",
    "task",
    "token",
    "tree",
    "update",
    "value",
    "version",
    "volume",
    "watch",
    "worker",
    "workspace",
    "writer",
];
const TYPES: &[&str] = &[
    "String",
    "u64",
    "usize",
    "bool",
    "Vec<u8>",
    "Option<String>",
    "Result<()>",
    "&str",
    "Duration",
    "PathBuf",
    "Bytes",
    "HashMap<String, Value>",
];
const PROSE: &[&str] = &[
    "the", "a", "is", "to", "of", "and", "when", "if", "it", "this", "that", "for", "with",
    "returns", "must", "should", "not", "be", "are", "on", "in", "each", "every", "once",
];
/// Extensions of the small files, weighted by how often they occur in a service monorepo.
const EXTENSIONS: &[&str] = &[
    "rs", "rs", "rs", "rs", "ts", "ts", "py", "py", "go", "json", "yaml", "yaml", "md", "toml",
    "txt", "lock",
];
/// The large binaries and their share of the bytes not in small files.
const BINARIES: &[(&str, f64)] = &[
    ("target/release/payments-server", 0.40),
    ("target/release/deps/libpayments_core-4f1c2a9e.rlib", 0.30),
    (".git/objects/pack/pack-3f2a9c1e07b45d68.pack", 0.20),
    ("dist/assets.tar", 0.10),
];
/// Every file and directory gets this mtime, so a workspace is the same bytes every time.
const MTIME_SECS: u64 = 1_717_200_000;

struct Workspace {
    root: PathBuf,
    files: u64,
    dirs: u64,
    bytes: u64,
    text_files: u64,
    text_bytes: u64,
    binary_bytes: u64,
    generate_s: f64,
}

/// Generates a workspace of about `target` bytes in `root` from `seed`.
fn generate(root: &Path, target: u64, seed: u64) -> io::Result<Workspace> {
    let started = Instant::now();
    let mut rng = Rng(seed ^ target);
    let text_files = (FILES_PER_GIB * target / GIB).max(20);
    let mut text_bytes = 0;
    let mut text = String::new();
    for i in 0..text_files {
        // 25 files a directory, 8 modules a package, packages spread over five top folders.
        let dir_index = i / 25;
        let top = ["crates", "services", "libs", "tools", "web"][(dir_index % 5) as usize];
        let dir = root.join(format!(
            "{top}/pkg-{:03}-{}/src/mod_{}",
            dir_index / 40,
            WORDS[(dir_index / 40) as usize % WORDS.len()],
            dir_index % 8
        ));
        if i % 25 == 0 {
            fs::create_dir_all(&dir)?;
        }
        let ext = *rng.pick(EXTENSIONS);
        let name = format!("{}_{}_{i}.{ext}", rng.pick(WORDS), rng.pick(WORDS));
        // Log-uniform between 128 bytes and 32 KiB: mostly small files, a tail of large ones.
        let size = (128.0 * 256f64.powf(rng.below(1 << 20) as f64 / (1 << 20) as f64)) as usize;
        text.clear();
        text_like(&mut rng, ext, size, &mut text);
        write_file(&dir.join(name), text.as_bytes())?;
        text_bytes += text.len() as u64;
    }
    let binary_total = target.saturating_sub(text_bytes);
    let mut binary_bytes = 0;
    for (path, share) in BINARIES {
        let path = root.join(path);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        let size = (binary_total as f64 * share) as u64;
        write_binary(&mut rng, &path, size)?;
        binary_bytes += size;
    }
    let (files, dirs) = set_mtimes(root)?;
    Ok(Workspace {
        root: root.to_owned(),
        files,
        dirs,
        bytes: text_bytes + binary_bytes,
        text_files,
        text_bytes,
        binary_bytes,
        generate_s: started.elapsed().as_secs_f64(),
    })
}

fn write_file(path: &Path, content: &[u8]) -> io::Result<()> {
    let mut file = File::create(path)?;
    file.write_all(content)?;
    file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(MTIME_SECS))
}

/// Appends about `size` bytes of text shaped like a file with extension `ext`.
fn text_like(rng: &mut Rng, ext: &str, size: usize, out: &mut String) {
    use std::fmt::Write as _;
    let ident = |rng: &mut Rng| format!("{}_{}", rng.pick(WORDS), rng.pick(WORDS));
    let mut depth = 0usize;
    while out.len() < size {
        let indent = " ".repeat(4 * depth);
        let roll = rng.below(100);
        // `write!` into a String cannot fail.
        let _ = match ext {
            "rs" | "go" | "ts" | "py" => match roll {
                0..=9 => writeln!(out, "{indent}// {}", sentence(rng, 6..14)),
                10..=19 if depth < 4 => {
                    depth += 1;
                    writeln!(
                        out,
                        "{indent}pub fn {}({}: {}, {}: {}) -> {} {{",
                        ident(rng),
                        rng.pick(WORDS),
                        rng.pick(TYPES),
                        rng.pick(WORDS),
                        rng.pick(TYPES),
                        rng.pick(TYPES)
                    )
                }
                20..=29 if depth > 0 => {
                    depth -= 1;
                    writeln!(out, "{}}}", " ".repeat(4 * depth))
                }
                30..=39 => writeln!(
                    out,
                    "{indent}use crate::{}::{{{}, {}}};",
                    rng.pick(WORDS),
                    ident(rng),
                    rng.pick(TYPES)
                ),
                40..=44 => writeln!(
                    out,
                    "{indent}const {}: u64 = {};",
                    ident(rng).to_uppercase(),
                    rng.below(100_000)
                ),
                45..=69 => writeln!(
                    out,
                    "{indent}let {} = {}.{}(&{})?;",
                    ident(rng),
                    rng.pick(WORDS),
                    ident(rng),
                    rng.pick(WORDS)
                ),
                70..=84 => writeln!(
                    out,
                    "{indent}if {}.{} > {} {{ return Err(Error::{}); }}",
                    rng.pick(WORDS),
                    rng.pick(WORDS),
                    rng.below(4096),
                    rng.pick(WORDS)
                ),
                _ => writeln!(
                    out,
                    "{indent}{}.{}(\"{}\", {});",
                    rng.pick(WORDS),
                    ident(rng),
                    sentence(rng, 3..4),
                    rng.below(1 << 16)
                ),
            },
            "json" => writeln!(
                out,
                "  \"{}\": {{ \"{}\": \"{}\", \"{}\": {} }},",
                ident(rng),
                rng.pick(WORDS),
                ident(rng),
                rng.pick(WORDS),
                rng.below(1 << 20)
            ),
            "lock" => writeln!(
                out,
                "[[package]]\nname = \"{}\"\nversion = \"{}.{}.{}\"\nchecksum = \"{:016x}{:016x}{:016x}{:016x}\"\n",
                ident(rng),
                rng.below(3),
                rng.below(40),
                rng.below(20),
                rng.next_u64(),
                rng.next_u64(),
                rng.next_u64(),
                rng.next_u64()
            ),
            "yaml" | "toml" => writeln!(
                out,
                "{}{}: {}",
                "  ".repeat(rng.below(3) as usize),
                ident(rng),
                if roll < 50 {
                    ident(rng)
                } else {
                    rng.below(10_000).to_string()
                }
            ),
            _ => writeln!(out, "{}.", sentence(rng, 8..20)),
        };
    }
}

/// Between `words.start` and `words.end` (excluded) words, mostly short ones.
fn sentence(rng: &mut Rng, words: std::ops::Range<u64>) -> String {
    let words = words.start + rng.below(words.end - words.start);
    let mut text = String::new();
    for i in 0..words {
        if i > 0 {
            text.push(' ');
        }
        let list = if rng.below(3) == 0 { WORDS } else { PROSE };
        let word: &&str = rng.pick(list);
        text.push_str(word);
    }
    text
}

/// Writes `size` bytes that compress partly, like real build output: in 4 KiB blocks, 45% fresh
/// random bytes, 35% a repeat of one of the previous 64 blocks (within zstd -1's window), 20%
/// padding or a table of small integers.
fn write_binary(rng: &mut Rng, path: &Path, size: u64) -> io::Result<()> {
    const BLOCK: usize = 4096;
    const HISTORY: usize = 64;
    const CHUNK: usize = 256;
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    // The last HISTORY blocks, then the CHUNK blocks being made.
    let mut buf = vec![0u8; (HISTORY + CHUNK) * BLOCK];
    rng.fill(&mut buf[..HISTORY * BLOCK]);
    let mut left = size;
    while left > 0 {
        for block in HISTORY..HISTORY + CHUNK {
            let roll = rng.below(100);
            let (before, current) = buf.split_at_mut(block * BLOCK);
            let current = &mut current[..BLOCK];
            match roll {
                0..=44 => rng.fill(current),
                45..=79 => {
                    let from = block - 1 - rng.below(HISTORY as u64) as usize;
                    current.copy_from_slice(&before[from * BLOCK..(from + 1) * BLOCK]);
                }
                80..=89 => current.fill(0),
                _ => {
                    let base = rng.below(200) as u8;
                    for (i, byte) in current.iter_mut().enumerate() {
                        *byte = base.wrapping_add((i % 37) as u8);
                    }
                }
            }
        }
        let made = &buf[HISTORY * BLOCK..];
        let take = usize::try_from(left).unwrap_or(usize::MAX).min(made.len());
        out.write_all(&made[..take])?;
        left -= take as u64;
        buf.copy_within(CHUNK * BLOCK.., 0);
    }
    let file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
    file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(MTIME_SECS))
}

/// Gives every directory the fixed mtime (files already have it), children first; returns the
/// number of files and directories below `root`.
fn set_mtimes(root: &Path) -> io::Result<(u64, u64)> {
    let (mut files, mut dirs) = (0, 0);
    for entry in fs::read_dir(root)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            let (f, d) = set_mtimes(&entry.path())?;
            files += f;
            dirs += d + 1;
        } else {
            files += 1;
        }
    }
    File::open(root)?.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(MTIME_SECS))?;
    Ok((files, dirs))
}

/// Regular files and their bytes below `root`, to check a restore.
fn count_tree(root: &Path) -> io::Result<(u64, u64)> {
    let (mut files, mut bytes) = (0, 0);
    for entry in fs::read_dir(root)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            let (f, b) = count_tree(&entry.path())?;
            files += f;
            bytes += b;
        } else if kind.is_file() {
            files += 1;
            bytes += entry.metadata()?.len();
        }
    }
    Ok((files, bytes))
}

// ---------------------------------------------------------------------------------------------
// Measuring.

/// What the orchestrator holds for the whole run.
struct Bench {
    settings: Settings,
    server: Server,
    runtime: Runtime,
    client: aws_sdk_s3::Client,
    bucket: String,
    env: Vec<(String, String)>,
    transfer: Transfer,
    /// `/usr/bin/time`, to read the shell pipeline's largest process's peak RSS.
    gnu_time: bool,
    scratch: tempfile::TempDir,
}

/// One shell command's wall time and its largest process's peak RSS.
struct ShellRun {
    seconds: f64,
    peak_kib: Option<u64>,
}

impl Bench {
    /// Runs `script` under `bash -o pipefail`, timing it from spawn to exit.
    fn shell(&self, script: &str) -> anyhow::Result<ShellRun> {
        let rss_file = self.scratch.path().join("time.out");
        let mut command = if self.gnu_time {
            let mut command = Command::new("/usr/bin/time");
            command
                .args(["-f", "%M", "-o"])
                .arg(&rss_file)
                .args(["bash", "-o", "pipefail", "-c", script]);
            command
        } else {
            let mut command = Command::new("bash");
            command.args(["-o", "pipefail", "-c", script]);
            command
        };
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        let started = Instant::now();
        let output = command.stdin(Stdio::null()).output()?;
        let seconds = started.elapsed().as_secs_f64();
        if !output.status.success() {
            bail!(
                "`{script}` failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        // GNU time reports the largest of the waited-for processes, in KiB.
        let peak_kib = fs::read_to_string(&rss_file)
            .ok()
            .and_then(|text| text.lines().last()?.trim().parse().ok());
        Ok(ShellRun { seconds, peak_kib })
    }

    /// Runs this binary in `mode`, timing it from spawn to exit, and parses its JSON line.
    fn child(&self, mode: &str, args: &[&str]) -> anyhow::Result<(f64, Value)> {
        let started = Instant::now();
        let output = Command::new(std::env::current_exe()?)
            .arg(mode)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .output()?;
        let seconds = started.elapsed().as_secs_f64();
        if !output.status.success() {
            bail!(
                "{mode} failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let stdout = String::from_utf8(output.stdout)?;
        let line = stdout.lines().last().context("the child printed nothing")?;
        Ok((seconds, serde_json::from_str(line)?))
    }

    fn delete(&self, key: &str) -> anyhow::Result<()> {
        self.runtime
            .block_on(
                self.client
                    .delete_object()
                    .bucket(&self.bucket)
                    .key(key)
                    .send(),
            )
            .map_err(|err| {
                anyhow::anyhow!(aws_sdk_s3::error::DisplayErrorContext(&err).to_string())
            })?;
        Ok(())
    }

    fn stored_size(&self, key: &str) -> anyhow::Result<u64> {
        let head = self
            .runtime
            .block_on(
                self.client
                    .head_object()
                    .bucket(&self.bucket)
                    .key(key)
                    .send(),
            )
            .map_err(|err| {
                anyhow::anyhow!(aws_sdk_s3::error::DisplayErrorContext(&err).to_string())
            })?;
        Ok(head
            .content_length
            .and_then(|len| u64::try_from(len).ok())
            .unwrap_or(0))
    }
}

fn kib(value: &Value, field: &str) -> u64 {
    value[field].as_u64().unwrap_or(0)
}

fn secs(value: &Value, field: &str) -> f64 {
    value[field].as_f64().unwrap_or(f64::NAN)
}

/// Everything measured for one workspace size; times in seconds, one entry per run.
#[derive(Default)]
struct SizeFigures {
    size: u64,
    files: u64,
    dirs: u64,
    bytes: u64,
    text_files: u64,
    text_bytes: u64,
    binary_bytes: u64,
    generate_s: f64,
    shell_archive: Vec<f64>,
    shell_archive_peak_kib: Option<u64>,
    shell_bytes: u64,
    shell_error: Option<String>,
    /// The tekflux child from spawn to exit, verify included.
    tekflux_wall: Vec<f64>,
    tekflux_upload: Vec<f64>,
    tekflux_verify: Vec<f64>,
    tekflux_bytes: u64,
    tekflux_parts: u64,
    tekflux_sha256: Vec<String>,
    upload_peak_kib: u64,
    archive_peak_kib: u64,
    shell_restore: Vec<f64>,
    shell_restore_peak_kib: Option<u64>,
    tekflux_restore: Vec<f64>,
    tekflux_restore_peak_kib: u64,
    restore_unavailable: Option<String>,
    restore_problems: Vec<String>,
    /// The directory the restores wrote below ([`restore_root`]).
    restored_into: PathBuf,
    stage_tar: Vec<f64>,
    stage_tar_zstd: Vec<f64>,
    stage_zstd: Vec<f64>,
    stage_write: Vec<f64>,
    stage_write_peak_kib: u64,
    stage_upload: Vec<f64>,
    stage_download: Vec<f64>,
}

impl SizeFigures {
    /// The tekflux archive without the verify step: the child's wall time less the verify it
    /// did last.
    fn tekflux_no_verify(&self) -> Vec<f64> {
        self.tekflux_wall
            .iter()
            .zip(&self.tekflux_verify)
            .map(|(wall, verify)| wall - verify)
            .collect()
    }

    fn mib_per_s(&self, seconds: f64) -> f64 {
        self.bytes as f64 / MIB as f64 / seconds
    }
}

fn orchestrate(settings: Settings) -> anyhow::Result<()> {
    let machine_before = machine_load();
    let scratch = tempfile::Builder::new()
        .prefix("tekflux-archive-bench-")
        .tempdir()?;
    let server = Server::start(settings.mode == "smoke")?;
    let aws_config = scratch.path().join("aws-config");
    fs::write(
        &aws_config,
        "[default]\ns3 =\n    addressing_style = path\n\
         request_checksum_calculation = when_required\n\
         response_checksum_validation = when_required\n",
    )?;
    let env = server.env(&aws_config);
    let client = server.client()?;
    let runtime = Runtime::new()?;
    let bucket = format!("tekflux-bench-{}", std::process::id());
    runtime
        .block_on(client.create_bucket().bucket(&bucket).send())
        .map_err(|err| anyhow::anyhow!(aws_sdk_s3::error::DisplayErrorContext(&err).to_string()))
        .with_context(|| format!("create bucket {bucket} on {}", server.endpoint))?;
    let transfer = Transfer::detect();
    let bench = Bench {
        settings,
        server,
        runtime,
        client,
        bucket,
        env,
        transfer,
        gnu_time: runs_ok(Command::new("/usr/bin/time").args(["-f", "%M", "true"])),
        scratch,
    };
    let outcome = run_all(&bench);
    // The bucket goes whatever happened; its objects were deleted as the run went.
    let _ = bench.runtime.block_on(async {
        let listed = bench
            .client
            .list_objects_v2()
            .bucket(&bench.bucket)
            .send()
            .await;
        if let Ok(listed) = listed {
            for object in listed.contents() {
                if let Some(key) = object.key() {
                    let _ = bench
                        .client
                        .delete_object()
                        .bucket(&bench.bucket)
                        .key(key)
                        .send()
                        .await;
                }
            }
        }
        bench
            .client
            .delete_bucket()
            .bucket(&bench.bucket)
            .send()
            .await
    });
    let (idle_peak_kib, figures) = outcome?;
    report(
        &bench,
        idle_peak_kib,
        &figures,
        &machine_before,
        &machine_load(),
    );
    // A smoke run stands in for a test, so a wrong result fails it; a benchmark run reports it
    // with its figures (above).
    let wrong = wrong_results(&figures);
    if bench.settings.mode == "smoke" && !wrong.is_empty() {
        panic!("smoke run of the archive benchmark:\n{}", wrong.join("\n"));
    }
    Ok(())
}

/// Archives of one workspace that differ between runs, restores that failed, and restores that
/// wrote other than the workspace.
fn wrong_results(all: &[SizeFigures]) -> Vec<String> {
    let mut wrong = Vec::new();
    for f in all {
        let distinct: std::collections::BTreeSet<&String> = f.tekflux_sha256.iter().collect();
        if distinct.len() > 1 {
            wrong.push(format!(
                "tekflux archives of the same {} workspace differ between runs",
                human(f.size)
            ));
        }
        if let Some(why) = &f.restore_unavailable {
            wrong.push(format!("restore_from_s3 failed: {why}"));
        }
        wrong.extend(f.restore_problems.iter().cloned());
    }
    wrong
}

fn run_all(bench: &Bench) -> anyhow::Result<(u64, Vec<SizeFigures>)> {
    let (_, idle) = bench.child(IDLE_CHILD, &[&bench.bucket])?;
    let mut all = Vec::new();
    for &size in &bench.settings.sizes {
        all.push(measure_size(bench, size)?);
    }
    Ok((kib(&idle, "peak_kib"), all))
}

fn measure_size(bench: &Bench, size: u64) -> anyhow::Result<SizeFigures> {
    let settings = &bench.settings;
    let dir = tempfile::Builder::new()
        .prefix("tekflux-archive-bench-ws-")
        .tempdir()?;
    eprintln!(
        "{}: generating the workspace in {} …",
        human(size),
        dir.path().display()
    );
    let workspace = generate(&dir.path().join("workspace"), size, settings.seed)?;
    let root = workspace.root.to_string_lossy().into_owned();
    let mut figures = SizeFigures {
        size,
        files: workspace.files,
        dirs: workspace.dirs,
        bytes: workspace.bytes,
        text_files: workspace.text_files,
        text_bytes: workspace.text_bytes,
        binary_bytes: workspace.binary_bytes,
        generate_s: workspace.generate_s,
        ..SizeFigures::default()
    };
    let tag = human(size).replace(' ', "");
    let part_size = settings.part_size.to_string();
    let concurrency = settings.concurrency.to_string();

    // Archive: shell and tekflux alternating, each to its own key.
    let restore_key = format!("tekflux-{tag}");
    for run in 0..settings.runs {
        eprintln!(
            "{}: archive run {}/{} …",
            human(size),
            run + 1,
            settings.runs
        );
        if bench.transfer.available() && figures.shell_error.is_none() {
            let key = format!("shell-{tag}-{run}");
            let outcome = bench.transfer.put(bench, &key).and_then(|put| {
                bench.shell(&format!(
                    "tar -cf - -C {} . | zstd -1 -q -c | {put}",
                    quote(&root)
                ))
            });
            match outcome {
                Ok(run) => {
                    figures.shell_archive.push(run.seconds);
                    figures.shell_archive_peak_kib =
                        figures.shell_archive_peak_kib.max(run.peak_kib);
                    figures.shell_bytes = bench.stored_size(&key)?;
                    bench.delete(&key)?;
                }
                Err(err) => figures.shell_error = Some(format!("{err:#}")),
            }
        }
        // The last run's object stays for the restores.
        let key = if run + 1 == settings.runs {
            restore_key.clone()
        } else {
            format!("tekflux-{tag}-{run}")
        };
        let (wall, out) = bench.child(
            ARCHIVE_CHILD,
            &[&root, &bench.bucket, &key, &part_size, &concurrency],
        )?;
        figures.tekflux_wall.push(wall);
        figures.tekflux_upload.push(secs(&out, "upload_s"));
        figures.tekflux_verify.push(secs(&out, "verify_s"));
        figures.tekflux_bytes = kib(&out, "bytes");
        figures.tekflux_parts = kib(&out, "parts");
        figures
            .tekflux_sha256
            .push(out["sha256"].as_str().unwrap_or("").to_owned());
        figures.upload_peak_kib = figures.upload_peak_kib.max(kib(&out, "upload_peak_kib"));
        figures.archive_peak_kib = figures.archive_peak_kib.max(kib(&out, "peak_kib"));
        if key != restore_key {
            bench.delete(&key)?;
        }
    }
    let sha256 = figures.tekflux_sha256.last().cloned().unwrap_or_default();

    // Restore the same object both ways, each into a directory that does not exist yet.
    figures.restored_into = restore_root(size);
    let restores = tempfile::Builder::new()
        .prefix("tekflux-archive-bench-restore-")
        .tempdir_in(&figures.restored_into)?;
    for run in 0..settings.runs {
        eprintln!(
            "{}: restore run {}/{} …",
            human(size),
            run + 1,
            settings.runs
        );
        if bench.transfer.available() {
            let target = restores.path().join("restored-shell");
            fs::create_dir(&target)?;
            let outcome = bench.transfer.get(bench, &restore_key).and_then(|get| {
                bench.shell(&format!(
                    "{get} | zstd -d -q -c | tar -xf - -C {}",
                    quote(&target.to_string_lossy())
                ))
            });
            match outcome {
                Ok(run) => {
                    figures.shell_restore.push(run.seconds);
                    figures.shell_restore_peak_kib =
                        figures.shell_restore_peak_kib.max(run.peak_kib);
                    check_restore(&target, &workspace, "shell", &mut figures.restore_problems)?;
                }
                Err(err) => figures
                    .restore_problems
                    .push(format!("shell restore: {err:#}")),
            }
            fs::remove_dir_all(&target)?;
        }
        if figures.restore_unavailable.is_none() {
            let target = restores.path().join("restored-tekflux");
            let target_text = target.to_string_lossy().into_owned();
            let (_, out) = bench.child(
                RESTORE_CHILD,
                &[&bench.bucket, &restore_key, &target_text, &sha256],
            )?;
            if let Some(why) = out["unavailable"].as_str() {
                figures.restore_unavailable = Some(why.to_owned());
            } else {
                figures.tekflux_restore.push(secs(&out, "restore_s"));
                figures.tekflux_restore_peak_kib =
                    figures.tekflux_restore_peak_kib.max(kib(&out, "peak_kib"));
                check_restore(
                    &target,
                    &workspace,
                    "tekflux",
                    &mut figures.restore_problems,
                )?;
            }
            if target.exists() {
                fs::remove_dir_all(&target)?;
            }
        }
    }

    if settings.stages {
        measure_stages(bench, &workspace, dir.path(), &restore_key, &mut figures)?;
    }
    bench.delete(&restore_key)?;
    Ok(figures)
}

/// Where restores of a `size` workspace write: `TEKFLUX_BENCH_RESTORE_DIR`, else `/dev/shm`
/// (memory, like the page cache the workspaces are read from) when it has room for twice the
/// workspace, else the temporary directory. On a disk, a restore's time is the file system's:
/// ext4 mounted with `discard` took 5 to 41 s of kernel time for the same `tar -x` of 1 GiB,
/// depending on what had been freed shortly before (BENCHMARKS.md, "Restore on a disk").
fn restore_root(size: u64) -> PathBuf {
    if let Some(dir) = std::env::var_os("TEKFLUX_BENCH_RESTORE_DIR").filter(|dir| !dir.is_empty()) {
        return PathBuf::from(dir);
    }
    let shm = Path::new("/dev/shm");
    match rustix::fs::statvfs(shm) {
        Ok(stats) if stats.f_bavail.saturating_mul(stats.f_frsize) >= 2 * size => shm.to_owned(),
        _ => std::env::temp_dir(),
    }
}

fn check_restore(
    target: &Path,
    workspace: &Workspace,
    who: &str,
    problems: &mut Vec<String>,
) -> anyhow::Result<()> {
    let (files, bytes) = count_tree(target)?;
    if (files, bytes) != (workspace.files, workspace.bytes) {
        problems.push(format!(
            "{who} restore wrote {files} files / {bytes} bytes, expected {} / {}",
            workspace.files, workspace.bytes
        ));
    }
    Ok(())
}

/// Each stage of the pipelines alone: tar, tar | zstd, zstd from a tar file, tekflux's
/// tar + zstd into a counting sink, the aws CLI's upload of a ready .zst and its download.
fn measure_stages(
    bench: &Bench,
    workspace: &Workspace,
    scratch: &Path,
    key: &str,
    figures: &mut SizeFigures,
) -> anyhow::Result<()> {
    let root = quote(&workspace.root.to_string_lossy());
    let tar_file = scratch.join("workspace.tar");
    let zst_file = scratch.join("workspace.tar.zst");
    let (tar_q, zst_q) = (
        quote(&tar_file.to_string_lossy()),
        quote(&zst_file.to_string_lossy()),
    );
    let shell_ok = bench.transfer.available();
    if shell_ok {
        bench.shell(&format!(
            "tar -cf {tar_q} -C {root} . && zstd -1 -q -c {tar_q} > {zst_q}"
        ))?;
    }
    let root_text = workspace.root.to_string_lossy().into_owned();
    for run in 0..bench.settings.runs {
        eprintln!(
            "{}: stages run {}/{} …",
            human(figures.size),
            run + 1,
            bench.settings.runs
        );
        if shell_ok {
            // Through a pipe: GNU tar skips reading the files when its output is /dev/null.
            figures.stage_tar.push(
                bench
                    .shell(&format!("tar -cf - -C {root} . | cat > /dev/null"))?
                    .seconds,
            );
            figures.stage_tar_zstd.push(
                bench
                    .shell(&format!(
                        "tar -cf - -C {root} . | zstd -1 -q -c > /dev/null"
                    ))?
                    .seconds,
            );
            figures.stage_zstd.push(
                bench
                    .shell(&format!("zstd -1 -q -c {tar_q} > /dev/null"))?
                    .seconds,
            );
            let stage_key = format!("stage-upload-{run}");
            let put = bench.transfer.put(bench, &stage_key)?;
            figures
                .stage_upload
                .push(bench.shell(&format!("{put} < {zst_q}"))?.seconds);
            bench.delete(&stage_key)?;
            let get = bench.transfer.get(bench, key)?;
            figures
                .stage_download
                .push(bench.shell(&format!("{get} > /dev/null"))?.seconds);
        }
        let (_, out) = bench.child(WRITE_CHILD, &[&root_text])?;
        figures.stage_write.push(secs(&out, "write_s"));
        figures.stage_write_peak_kib = figures.stage_write_peak_kib.max(kib(&out, "peak_kib"));
    }
    let _ = fs::remove_file(&tar_file);
    let _ = fs::remove_file(&zst_file);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The report.

fn report(bench: &Bench, idle_peak_kib: u64, all: &[SizeFigures], before: &str, after: &str) {
    let settings = &bench.settings;
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let mib = |kib: u64| kib as f64 / 1024.0;
    let opt_mib = |kib: Option<u64>| kib.map_or("–".to_owned(), |kib| format!("{:.1}", mib(kib)));
    let fmt_s = |s: f64| {
        if s.is_finite() {
            format!("{s:.2}")
        } else {
            "–".to_owned()
        }
    };
    let fmt_rate = |rate: f64| {
        if rate.is_finite() {
            format!("{rate:.0}")
        } else {
            "–".to_owned()
        }
    };
    let fmt_ratio = |ratio: f64| {
        if ratio.is_finite() {
            format!("{ratio:.2}×")
        } else {
            "–".to_owned()
        }
    };

    println!("## run-complete archive benchmark\n");
    println!(
        "{cores} cores; at start: {before}; at end: {after}. Mode {}, {} runs per measurement \
         (medians), zstd level {LEVEL}, part size {} MiB, concurrency {}, seed {:#x}.\n",
        settings.mode,
        settings.runs,
        settings.part_size as u64 / MIB,
        settings.concurrency,
        settings.seed
    );
    println!("- S3 server: {}", bench.server.description);
    println!("- Shell baseline transfer: {}", bench.transfer.describe());
    println!(
        "- Workspaces in {} (page cache), generated from the seed; the largest workspace restored into {}.\n",
        std::env::temp_dir().display(),
        all.iter()
            .max_by_key(|figures| figures.size)
            .map_or_else(String::new, |figures| figures
                .restored_into
                .display()
                .to_string())
    );

    println!("### Workspaces\n");
    println!(
        "| size | files | directories | text files | text MiB | binaries MiB | generated in s |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for f in all {
        println!(
            "| {} | {} | {} | {} | {:.1} | {:.1} | {:.1} |",
            human(f.size),
            f.files,
            f.dirs,
            f.text_files,
            f.text_bytes as f64 / MIB as f64,
            f.binary_bytes as f64 / MIB as f64,
            f.generate_s
        );
    }

    println!("\n### Archive (wall time, median; MiB/s of workspace content)\n");
    println!(
        "| workspace | shell `tar \\| zstd -1 \\| aws s3 cp -` s | MiB/s | tekflux upload_archive s | MiB/s | vs shell | tekflux + verify_archive s | MiB/s | vs shell | compressed MiB shell / tekflux | parts |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for f in all {
        let shell = median(&f.shell_archive);
        let plain = median(&f.tekflux_no_verify());
        let verified = median(&f.tekflux_wall);
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} / {:.1} | {} |",
            human(f.size),
            fmt_s(shell),
            fmt_rate(f.mib_per_s(shell)),
            fmt_s(plain),
            fmt_rate(f.mib_per_s(plain)),
            fmt_ratio(shell / plain),
            fmt_s(verified),
            fmt_rate(f.mib_per_s(verified)),
            fmt_ratio(shell / verified),
            f.shell_bytes as f64 / MIB as f64,
            f.tekflux_bytes as f64 / MIB as f64,
            f.tekflux_parts,
        );
    }
    println!(
        "\n\"vs shell\" is the shell pipeline's time over tekflux's (above 1.00× tekflux is faster). \
         Both are wall times from spawn to exit (the aws CLI's Python start-up, the tekflux \
         process's runtime and client set-up included); tekflux without verify is its process's \
         time less the `verify_archive` it ran last."
    );
    for f in all {
        if let Some(err) = &f.shell_error {
            println!("\nshell baseline at {}: unavailable: {err}", human(f.size));
        }
        let distinct: std::collections::BTreeSet<&String> = f.tekflux_sha256.iter().collect();
        if distinct.len() > 1 {
            println!(
                "\nWARNING: tekflux archives of the same {} workspace differ between runs",
                human(f.size)
            );
        }
    }

    println!("\n### Peak RSS (VmHWM, MiB)\n");
    println!(
        "| workspace | tekflux archiver after upload | after verify | tekflux write_archive to a sink (no S3) | tekflux restore | shell archive, largest process | shell restore, largest process |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for f in all {
        println!(
            "| {} | {:.1} | {:.1} | {} | {} | {} | {} |",
            human(f.size),
            mib(f.upload_peak_kib),
            mib(f.archive_peak_kib),
            if f.stage_write_peak_kib > 0 {
                format!("{:.1}", mib(f.stage_write_peak_kib))
            } else {
                "–".to_owned()
            },
            if f.tekflux_restore.is_empty() {
                "–".to_owned()
            } else {
                format!("{:.1}", mib(f.tekflux_restore_peak_kib))
            },
            opt_mib(f.shell_archive_peak_kib),
            opt_mib(f.shell_restore_peak_kib),
        );
    }
    println!(
        "\nFloor: the same binary with a runtime, an S3 client and one HeadBucket peaks at {:.1} MiB.",
        mib(idle_peak_kib)
    );

    println!("\n### Restore (wall time, median; MiB/s of workspace content)\n");
    println!(
        "| workspace | shell `aws s3 cp - \\| zstd -d \\| tar -x` s | MiB/s | tekflux restore_from_s3 s | MiB/s | vs shell |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for f in all {
        let shell = median(&f.shell_restore);
        let (tekflux, rate, ratio) = match &f.restore_unavailable {
            Some(_) => ("not available".to_owned(), "–".to_owned(), "–".to_owned()),
            None => {
                let t = median(&f.tekflux_restore);
                (fmt_s(t), fmt_rate(f.mib_per_s(t)), fmt_ratio(shell / t))
            }
        };
        println!(
            "| {} | {} | {} | {tekflux} | {rate} | {ratio} |",
            human(f.size),
            fmt_s(shell),
            fmt_rate(f.mib_per_s(shell)),
        );
    }
    if let Some(why) = all.iter().find_map(|f| f.restore_unavailable.as_ref()) {
        println!("\nrestore: not available (`restore_from_s3` answered: {why})");
    }
    for problem in all.iter().flat_map(|f| &f.restore_problems) {
        println!("\nWARNING: {problem}");
    }

    if all.iter().any(|f| !f.stage_write.is_empty()) {
        println!("\n### Stages alone (wall time, median s)\n");
        println!(
            "| workspace | `tar` to a pipe | `tar \\| zstd -1` | `zstd -1` of a tar file | tekflux tar + zstd to a sink | `aws s3 cp -` of the .zst | `aws s3 cp … -` download | tekflux upload_archive (in process) | tekflux verify_archive |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for f in all {
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                human(f.size),
                fmt_s(median(&f.stage_tar)),
                fmt_s(median(&f.stage_tar_zstd)),
                fmt_s(median(&f.stage_zstd)),
                fmt_s(median(&f.stage_write)),
                fmt_s(median(&f.stage_upload)),
                fmt_s(median(&f.stage_download)),
                fmt_s(median(&f.tekflux_upload)),
                fmt_s(median(&f.tekflux_verify)),
            );
        }
    }

    println!("\n### Goals\n");
    println!("| goal | measured | met |");
    println!("|---|---:|:---:|");
    let yes = |met: bool| if met { "yes" } else { "no" };
    if let (Some(small), Some(large)) = (all.first(), all.last()) {
        let shell = median(&large.shell_archive);
        let plain = shell / median(&large.tekflux_no_verify());
        let verified = shell / median(&large.tekflux_wall);
        if shell.is_finite() {
            println!(
                "| archive throughput ≥ 1.0× the shell pipeline ({}) | {} | {} |",
                human(large.size),
                fmt_ratio(plain),
                yes(plain >= 1.0)
            );
            println!(
                "| … with verify_archive ({}) | {} | {} |",
                human(large.size),
                fmt_ratio(verified),
                yes(verified >= 1.0)
            );
        } else {
            println!(
                "| archive throughput ≥ 1.0× the shell pipeline | shell baseline unavailable | – |"
            );
        }
        let peak = mib(large.archive_peak_kib);
        println!(
            "| archiver peak RSS < {RSS_GOAL_MIB:.0} MiB ({}) | {peak:.1} MiB | {} |",
            human(large.size),
            yes(peak < RSS_GOAL_MIB)
        );
        if all.len() > 1 {
            // Bounded means it does not depend on the size: at most the buffers the options
            // allow (`part_size × (concurrency + 2)`) above the smallest workspace's peak.
            let bound = (settings.part_size * (settings.concurrency + 2)) as f64 / MIB as f64;
            let growth = peak - mib(small.archive_peak_kib);
            println!(
                "| peak RSS not growing with size ({} vs {}) | {:+.1} MiB ({:.1} → {peak:.1}; buffer bound {bound:.0} MiB) | {} |",
                human(small.size),
                human(large.size),
                growth,
                mib(small.archive_peak_kib),
                yes(growth <= bound)
            );
            if all.len() > 2 {
                let middle = &all[all.len() - 2];
                let growth = peak - mib(middle.archive_peak_kib);
                println!(
                    "| … multipart sizes only ({} vs {}) | {:+.1} MiB | {} |",
                    human(middle.size),
                    human(large.size),
                    growth,
                    yes(growth <= 4.0)
                );
            }
        }
        match &large.restore_unavailable {
            Some(_) => println!(
                "| restore throughput ({}) | restore: not available | – |",
                human(large.size)
            ),
            None if large.shell_restore.is_empty() => println!(
                "| restore throughput ≥ {RESTORE_GOAL:.1}× the shell pipeline | shell baseline unavailable | – |"
            ),
            None => {
                let ratio = median(&large.shell_restore) / median(&large.tekflux_restore);
                println!(
                    "| restore throughput ≥ {RESTORE_GOAL:.1}× the shell pipeline ({}) | {} MiB/s ({}) | {} |",
                    human(large.size),
                    fmt_rate(large.mib_per_s(median(&large.tekflux_restore))),
                    fmt_ratio(ratio),
                    yes(ratio >= RESTORE_GOAL)
                );
            }
        }
        if all.len() > 1 && large.restore_unavailable.is_none() {
            let (small_peak, large_peak) = (
                mib(small.tekflux_restore_peak_kib),
                mib(large.tekflux_restore_peak_kib),
            );
            println!(
                "| restore peak RSS not growing with size ({} vs {}) | {:+.1} MiB ({small_peak:.1} → {large_peak:.1}) | {} |",
                human(small.size),
                human(large.size),
                large_peak - small_peak,
                yes(large_peak - small_peak <= RESTORE_GROWTH_MIB)
            );
        }
    }
}
