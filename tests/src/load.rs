//! The loopback benchmarks' plumbing: the server under test as a child process of the bench
//! binary ([`ChildServer`] in the parent, [`serve_child`] in the child), so that its `VmHWM` is
//! its own and it shares no runtime with the load generator; and the load generator itself
//! ([`run_measured`]): N keep-alive HTTP/1.1 connections, each sending requests back to back,
//! with latency percentiles and the CPU time both processes spent per request.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

use crate::kube_api::TestApiServer;
use crate::machine::{median, status_kib};

/// What a child server writes first on stderr, followed by its address.
const LISTENING: &str = "listening ";

/// A benchmark run (`cargo bench` passes `--bench`) or, without `--bench` (`cargo test
/// --benches` or `--all-targets`, unoptimised), a smoke run: every step once, briefly, so the
/// benchmark keeps working without slowing the test suite, and failing on a wrong result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunKind {
    /// Full durations; wrong results are reported with the figures.
    Bench,
    /// Short durations; a wrong result fails the run.
    Smoke,
}

impl RunKind {
    /// [`RunKind::Bench`] when the arguments hold `--bench`, else [`RunKind::Smoke`].
    pub fn from_args(args: &[String]) -> Self {
        if args.iter().any(|arg| arg == "--bench") {
            Self::Bench
        } else {
            Self::Smoke
        }
    }

    /// `full` in a benchmark run, `smoke` in a smoke run.
    pub fn scaled(self, full: Duration, smoke: Duration) -> Duration {
        match self {
            Self::Bench => full,
            Self::Smoke => smoke,
        }
    }

    pub fn is_smoke(self) -> bool {
        self == Self::Smoke
    }
}

/// A bench binary's arguments: a serve mode (with a kubeconfig, for [`ChildServer`]) or the
/// orchestrating run, which `cargo bench` starts with `--bench` (and any filter).
#[derive(Debug)]
pub struct BenchArgs(Vec<String>);

impl BenchArgs {
    /// This process's arguments, without the program name.
    pub fn from_env() -> Self {
        Self(std::env::args().skip(1).collect())
    }

    /// The first argument, which names the serve mode in a child server.
    pub fn mode(&self) -> Option<&str> {
        self.0.first().map(String::as_str)
    }

    /// The serve mode's kubeconfig, the second argument ([`ChildServer::spawn_with_cluster`]).
    pub fn kubeconfig(&self) -> anyhow::Result<PathBuf> {
        let path = self
            .0
            .get(1)
            .context("this serve mode needs a kubeconfig")?;
        Ok(PathBuf::from(path))
    }

    /// The orchestrating run's kind ([`RunKind::from_args`]).
    pub fn run_kind(&self) -> RunKind {
        RunKind::from_args(&self.0)
    }
}

/// How long one level of load runs, and how many requests it sends at most.
#[derive(Debug, Clone, Copy)]
pub struct LoadPlan {
    /// Requests sent before this are not measured: connection set-up, first allocations, lazy
    /// statics.
    pub warmup: Duration,
    /// How long requests are measured after the warm-up.
    pub measure: Duration,
    /// Upper bound on measured requests per level (shared by the connections), so that a test
    /// API server that keeps every object it is sent stays bounded however fast the machine is.
    pub max_requests: usize,
    /// Whether a non-2xx answer in the warm-up counts as a failure ([`Load::failures`],
    /// [`Load::first_failure`]) or is ignored like the rest of the warm-up.
    pub count_warmup_failures: bool,
}

impl LoadPlan {
    /// The loopback benchmarks' plan: 500 ms warm-up then 3 s measured in a benchmark run, 50 ms
    /// then 200 ms in a smoke run; at most 60 000 measured requests; warm-up failures ignored.
    pub fn loopback(run: RunKind) -> Self {
        Self {
            warmup: run.scaled(Duration::from_millis(500), Duration::from_millis(50)),
            measure: run.scaled(Duration::from_secs(3), Duration::from_millis(200)),
            max_requests: 60_000,
            count_warmup_failures: false,
        }
    }
}

/// As the benchmarks' reports say it: `500 ms warm-up, then 3 s per level (at most 60000
/// requests)`.
impl std::fmt::Display for LoadPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ms warm-up, then {} s per level (at most {} requests)",
            self.warmup.as_millis(),
            self.measure.as_secs_f64(),
            self.max_requests
        )
    }
}

/// Builds a connection's `sequence`-th request (both counted from 0).
pub type MakeRequest = Arc<dyn Fn(usize, u64) -> Request<Full<Bytes>> + Send + Sync>;

/// What one level of load measured.
#[derive(Debug, Default)]
pub struct Load {
    /// Latency of each successful measured request, in nanoseconds, sorted.
    pub latencies: Vec<u64>,
    /// Measured requests answered with a non-2xx status (and warm-up ones, when the plan counts
    /// them).
    pub failures: usize,
    /// Every answered request, warm-up included (what CPU time is divided by).
    pub answered: usize,
    /// CPU time per answered request, in µs: the server process, and this process (load
    /// generator, plus the test API server where the bench runs one).
    pub server_cpu_us: f64,
    pub client_cpu_us: f64,
    /// The first failure, for the report.
    pub first_failure: Option<String>,
    /// From the end of the warm-up to the last measured answer.
    pub window: Duration,
}

impl Load {
    pub fn per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.window.as_secs_f64()
    }

    /// Nearest-rank percentile in milliseconds.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * self.latencies.len() as f64).ceil() as usize;
        self.latencies[rank.clamp(1, self.latencies.len()) - 1] as f64 / 1e6
    }
}

/// One measurement of one server at one level, as [`Rounds`] keeps it.
pub trait Round {
    /// The load it carried.
    fn load(&self) -> &Load;
    /// Its process's peak RSS, in KiB.
    fn peak_kib(&self) -> u64;
}

/// One server at one concurrency level, measured in one or more rounds (round-robin with the
/// servers it is compared with, so a burst of other work on the machine lands on one round
/// rather than on all of one server's figures). Each figure is the median over the rounds.
#[derive(Debug)]
pub struct Rounds<T> {
    pub runs: Vec<T>,
}

impl<T> Default for Rounds<T> {
    fn default() -> Self {
        Self { runs: Vec::new() }
    }
}

impl<T: Round> Rounds<T> {
    /// The median of `figure` over the rounds.
    pub fn median(&self, figure: impl Fn(&T) -> f64) -> f64 {
        median(&self.runs.iter().map(figure).collect::<Vec<_>>())
    }

    pub fn per_second(&self) -> f64 {
        self.median(|run| run.load().per_second())
    }

    pub fn percentile_ms(&self, p: f64) -> f64 {
        self.median(|run| run.load().percentile_ms(p))
    }

    pub fn server_cpu_us(&self) -> f64 {
        self.median(|run| run.load().server_cpu_us)
    }

    pub fn client_cpu_us(&self) -> f64 {
        self.median(|run| run.load().client_cpu_us)
    }

    /// The highest peak of any round.
    pub fn peak_kib(&self) -> u64 {
        self.runs.iter().map(Round::peak_kib).max().unwrap_or(0)
    }

    /// Over every round.
    pub fn failures(&self) -> usize {
        self.runs.iter().map(|run| run.load().failures).sum()
    }

    /// The first failure of the first round that had one.
    pub fn first_failure(&self) -> Option<&String> {
        self.runs
            .iter()
            .find_map(|run| run.load().first_failure.as_ref())
    }
}

/// Measures each server of `modes` (its serve-mode argument, `--serve-…`) `rounds` times at
/// `concurrency` with `measure`, round-robin, each round starting with the next server, so a
/// burst of other work on the machine lands on one round of one server rather than on all of
/// its figures. Each round's req/s and CPU go to stderr.
///
/// # Errors
/// The first error of `measure`.
pub async fn measure_rounds<const N: usize, T: Round, Fut>(
    modes: [&'static str; N],
    concurrency: usize,
    rounds: usize,
    mut measure: impl FnMut(&'static str) -> Fut,
) -> anyhow::Result<[Rounds<T>; N]>
where
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let mut servers: [Rounds<T>; N] = std::array::from_fn(|_| Rounds::default());
    for round in 0..rounds {
        for turn in 0..N {
            let index = (round + turn) % N;
            eprintln!(
                "{}, {concurrency} connections, round {} of {rounds} …",
                modes[index].trim_start_matches("--serve-"),
                round + 1
            );
            let measured = measure(modes[index]).await?;
            eprintln!(
                "  {:.0} req/s, {:.0} µs CPU/request",
                measured.load().per_second(),
                measured.load().server_cpu_us
            );
            servers[index].runs.push(measured);
        }
    }
    Ok(servers)
}

/// Serves `routes` on `127.0.0.1:0`, writes `listening <addr>` to stderr for
/// [`ChildServer::spawn`], and stops when stdin closes (so it never outlives the parent).
pub async fn serve_child(routes: axum::Router) -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    eprintln!("{LISTENING}{}", listener.local_addr()?);
    axum::serve(listener, routes)
        .with_graceful_shutdown(async {
            let mut sink = Vec::new();
            let _ = tokio::io::stdin().read_to_end(&mut sink).await;
        })
        .await?;
    Ok(())
}

/// A running child server: this binary re-executed with serve-mode arguments.
#[derive(Debug)]
pub struct ChildServer {
    child: Child,
    addr: SocketAddr,
    /// The kubeconfig's directory, for as long as the child may read it.
    _kubeconfig: Option<tempfile::TempDir>,
}

impl ChildServer {
    /// Runs this binary with `args` and waits for its [`serve_child`] to listen.
    pub async fn spawn(args: &[&str]) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stderr = child.stderr.take().context("child stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .context("child server did not start in 30 s")??
            .context("child server exited before listening")?;
        let addr = first
            .strip_prefix(LISTENING)
            .with_context(|| format!("unexpected child output: {first}"))?
            .parse()?;
        // Anything else the child says (a panic) goes to our stderr.
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[server] {line}");
            }
        });
        Ok(Self {
            child,
            addr,
            _kubeconfig: None,
        })
    }

    /// Runs this binary with `mode` and the path of a kubeconfig for `api`.
    pub async fn spawn_with_cluster(mode: &str, api: &TestApiServer) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let kubeconfig = api.write_kubeconfig(dir.path());
        let kubeconfig = kubeconfig
            .to_str()
            .context("kubeconfig path is not UTF-8")?;
        let mut server = Self::spawn(&[mode, kubeconfig]).await?;
        server._kubeconfig = Some(dir);
        Ok(server)
    }

    /// Peak resident set size (`VmHWM`) of the child so far, in KiB.
    pub fn peak_rss_kib(&self) -> anyhow::Result<u64> {
        let pid = self.child.id().context("child already exited")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        status_kib(&status, "VmHWM:").context("no VmHWM in /proc/<pid>/status")
    }

    /// Closes the child's stdin and waits for it to stop (killing it after 10 s).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        drop(self.child.stdin.take());
        match tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await {
            Ok(status) => {
                status?;
            }
            Err(_) => self.child.kill().await?,
        }
        Ok(())
    }
}

/// [`run_load`] against `server`, with the CPU time both processes spent on it.
pub async fn run_measured(
    server: &ChildServer,
    connections: usize,
    make: MakeRequest,
    plan: &LoadPlan,
) -> anyhow::Result<Load> {
    let pid = server.child.id().context("child already exited")?;
    let (server_before, client_before) = (cpu_ticks(&pid.to_string())?, cpu_ticks("self")?);
    let mut load = run_load(server.addr, connections, make, plan).await?;
    let (server_after, client_after) = (cpu_ticks(&pid.to_string())?, cpu_ticks("self")?);
    let per_request = |ticks: u64| ticks as f64 * 1e6 / TICKS_PER_SECOND / load.answered as f64;
    load.server_cpu_us = per_request(server_after - server_before);
    load.client_cpu_us = per_request(client_after - client_before);
    Ok(load)
}

/// `USER_HZ`, the unit of `/proc/<pid>/stat` times; 100 on every Linux architecture in use.
const TICKS_PER_SECOND: f64 = 100.0;

/// User plus system CPU time of a process (`self` or a pid) so far, in clock ticks.
fn cpu_ticks(pid: &str) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name start at field 3 (`state`); utime and stime
    // are fields 14 and 15.
    let rest = stat.rsplit_once(')').context("malformed stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field =
        |n: usize| -> anyhow::Result<u64> { Ok(fields.get(n - 3).context("short stat")?.parse()?) };
    Ok(field(14)? + field(15)?)
}

/// `connections` keep-alive HTTP/1.1 connections to `addr`, each sending `make`'s requests back
/// to back for the plan's warm-up and measured time, or until the request cap.
pub async fn run_load(
    addr: SocketAddr,
    connections: usize,
    make: MakeRequest,
    plan: &LoadPlan,
) -> anyhow::Result<Load> {
    let started = Instant::now();
    let measure_from = started + plan.warmup;
    let until = measure_from + plan.measure;
    let cap = plan.max_requests.div_ceil(connections);
    let count_warmup_failures = plan.count_warmup_failures;
    let mut tasks = Vec::with_capacity(connections);
    for connection in 0..connections {
        let make = make.clone();
        tasks.push(tokio::spawn(async move {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let (mut sender, driver) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(driver);
            let mut load = Load::default();
            let mut last_answer = measure_from;
            let mut sequence = 0;
            while Instant::now() < until && load.latencies.len() + load.failures < cap {
                sender.ready().await?;
                let request = make(connection, sequence);
                sequence += 1;
                let sent = Instant::now();
                let response = sender.send_request(request).await?;
                let status = response.status();
                let body = response.into_body().collect().await?.to_bytes();
                let answered = Instant::now();
                load.answered += 1;
                let warming_up = sent < measure_from;
                if warming_up && !count_warmup_failures {
                    continue;
                }
                if !status.is_success() {
                    load.failures += 1;
                    load.first_failure.get_or_insert_with(|| {
                        format!("{status}: {}", String::from_utf8_lossy(&body))
                    });
                }
                if warming_up {
                    continue;
                }
                last_answer = answered;
                if status.is_success() {
                    load.latencies.push((answered - sent).as_nanos() as u64);
                }
            }
            load.window = last_answer.saturating_duration_since(measure_from);
            anyhow::Ok(load)
        }));
    }
    let mut total = Load::default();
    for task in tasks {
        let load = task.await??;
        total.latencies.extend(load.latencies);
        total.failures += load.failures;
        total.answered += load.answered;
        total.first_failure = total.first_failure.or(load.first_failure);
        total.window = total.window.max(load.window);
    }
    total.latencies.sort_unstable();
    Ok(total)
}
