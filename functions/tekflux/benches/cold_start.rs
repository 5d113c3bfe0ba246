//! Cold start: from `exec` to the first 200, for `tekflux serve --function git-push` with a
//! config of 100 repository rules and with the quickstart config, against a hello-world server
//! started the same way in the same run (this binary re-executed with `--serve-hello`: a tokio
//! runtime and an axum router answering `/healthz`, nothing else).
//!
//! Each start is a fresh process: the clock starts before `spawn` and stops when a `GET /healthz`
//! on the port it was told to listen on is answered 200. Starts of the three servers are
//! interleaved, so a busy moment of the machine touches all of them alike. With the `lambda`
//! feature the same is measured through AWS Lambda's Runtime API (the testkit's emulator): from
//! `exec` to the answer of one queued `GET /healthz` invocation.
//!
//! `cargo bench -p tekflux --bench cold_start` (add `--features lambda` for the Lambda rows)
//! prints a Markdown table; BENCHMARKS.md explains the figures. Without `--bench` (a smoke run
//! under `cargo test --benches`) each server is started a few times and every start must answer
//! 200, or the run fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tekflux_testkit::machine::machine_load;

const SERVE_HELLO: &str = "--serve-hello";
/// Starts per server in a benchmark run; the goal is stated as the median over 20.
const STARTS: usize = 20;
const SMOKE_STARTS: usize = 2;
/// A start that has not answered by then failed (a hang guard, not a measurement).
const START_GUARD: Duration = Duration::from_secs(30);
const RULES: usize = 100;
const SECRET: &str = "bench-webhook-secret";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(SERVE_HELLO) {
        let address: SocketAddr = args
            .get(1)
            .context("--serve-hello needs an address")?
            .parse()?;
        return serve_hello(address);
    }
    let smoke = !args.iter().any(|arg| arg == "--bench");
    orchestrate(smoke)
}

/// The baseline: what any tokio + axum server costs to start and answer once.
fn serve_hello(address: SocketAddr) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let routes =
                axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));
            let listener = tokio::net::TcpListener::bind(address).await?;
            axum::serve(listener, routes).await?;
            Ok(())
        })
}

/// One kind of start under measurement.
struct Subject {
    name: String,
    command: Box<dyn Fn(SocketAddr) -> Command>,
}

fn tekflux(config: &Path) -> impl Fn(SocketAddr) -> Command + 'static {
    let config = config.to_owned();
    move |address| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tekflux"));
        command
            .env_clear()
            .env("TEKFLUX_CONFIG", &config)
            .env("GITHUB_WEBHOOK_SECRET", SECRET)
            .env("NO_COLOR", "1")
            .args(["serve", "--function", "git-push", "--listen"])
            .arg(address.to_string());
        command
    }
}

fn hello(address: SocketAddr) -> Command {
    let mut command = Command::new(std::env::current_exe().expect("this benchmark's path"));
    command
        .env_clear()
        .arg(SERVE_HELLO)
        .arg(address.to_string());
    command
}

/// A config with `rules` repository rules, each with params, a workspace and a branch filter, as
/// a platform team's config grows.
fn config_with_rules(rules: usize) -> String {
    let mut yaml = String::from(
        "namespace: cicd\nproviders:\n  github: { secret: env:GITHUB_WEBHOOK_SECRET }\nrepositories:\n",
    );
    for index in 0..rules {
        yaml.push_str(&format!(
            "  - url: https://github.com/acme/service-{index}\n    branches: [main, \"release/*\"]\n    pipeline: build-and-push\n    params:\n      git-url: \"{{{{ clone_url }}}}\"\n      git-revision: \"{{{{ sha }}}}\"\n      image: registry.example.com/acme/service-{index}:{{{{ short_sha }}}}\n    workspaces:\n      source: {{ claim: tekton-workspace, archive: true }}\n"
        ));
    }
    yaml
}

fn free_address() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
}

/// `GET /healthz` once; `Some(status)` when something answered.
fn healthz(address: SocketAddr) -> Option<u16> {
    let mut stream = TcpStream::connect(address).ok()?;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).ok()?;
    let status_line = answer.split(|byte| *byte == b'\r').next()?;
    std::str::from_utf8(status_line)
        .ok()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Exec to first 200 of one fresh process.
fn start_once(subject: &Subject) -> anyhow::Result<Duration> {
    let address = free_address();
    let mut command = (subject.command)(address);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let started = Instant::now();
    let mut child: Child = command.spawn().context("spawn")?;
    let outcome = loop {
        match healthz(address) {
            Some(200) => break Ok(started.elapsed()),
            Some(status) => break Err(anyhow::anyhow!("/healthz answered {status}")),
            None => {}
        }
        if let Some(status) = child.try_wait()? {
            break Err(anyhow::anyhow!("exited with {status} before answering"));
        }
        if started.elapsed() > START_GUARD {
            break Err(anyhow::anyhow!("no answer within {START_GUARD:?}"));
        }
        // Short enough not to hide the start, long enough not to take a core from it.
        std::thread::sleep(Duration::from_micros(50));
    };
    child.kill().ok();
    child.wait().ok();
    outcome.with_context(|| format!("{} did not start", subject.name))
}

#[cfg(feature = "lambda")]
fn lambda_start_once(runtime: &tokio::runtime::Runtime, config: &Path) -> anyhow::Result<Duration> {
    use serde_json::json;
    use tekflux_testkit::lambda_runtime::LambdaRuntimeEmulator;
    runtime.block_on(async {
        // A fresh emulator per start: a killed function's pending poll never takes the next
        // start's invocation.
        let emulator = LambdaRuntimeEmulator::start().await?;
        let started = Instant::now();
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tekflux"))
            .env_clear()
            .env("TEKFLUX_CONFIG", config)
            .env("GITHUB_WEBHOOK_SECRET", SECRET)
            .env("NO_COLOR", "1")
            .env("AWS_LAMBDA_RUNTIME_API", emulator.address())
            // What Lambda sets for every function; the runtime client refuses to start without.
            .env("AWS_LAMBDA_FUNCTION_NAME", "tekflux-bench")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .args(["serve", "--function", "git-push"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let event = json!({
            "version": "2.0",
            "routeKey": "$default",
            "rawPath": "/healthz",
            "rawQueryString": "",
            "headers": { "host": "bench.lambda-url.eu-west-1.on.aws" },
            "requestContext": {
                "accountId": "123456789012",
                "apiId": "bench",
                "domainName": "bench.lambda-url.eu-west-1.on.aws",
                "domainPrefix": "bench",
                "http": {
                    "method": "GET",
                    "path": "/healthz",
                    "protocol": "HTTP/1.1",
                    "sourceIp": "127.0.0.1",
                    "userAgent": "tekflux-bench"
                },
                "requestId": "cold-start",
                "routeKey": "$default",
                "stage": "$default",
                "time": "01/Jan/2025:00:00:00 +0000",
                "timeEpoch": 1735689600000u64
            },
            "isBase64Encoded": false
        });
        let answer = emulator
            .invoke_with_timeout(event, START_GUARD)
            .await
            .map_err(|error| anyhow::anyhow!("the Lambda invocation failed: {error:?}"))?;
        let elapsed = started.elapsed();
        child.kill().await.ok();
        if answer["statusCode"] != 200 {
            bail!("the Lambda invocation answered {answer}");
        }
        Ok(elapsed)
    })
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(duration: Duration) -> String {
    format!("{:.2}", duration.as_secs_f64() * 1000.0)
}

fn orchestrate(smoke: bool) -> anyhow::Result<()> {
    let starts = if smoke { SMOKE_STARTS } else { STARTS };
    let dir = tempfile::tempdir()?;
    let hundred = dir.path().join("hundred-rules.yaml");
    std::fs::write(&hundred, config_with_rules(RULES))?;
    let quickstart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/quickstart.yaml");
    if !quickstart.is_file() {
        bail!("{} is missing", quickstart.display());
    }
    let subjects = [
        Subject {
            name: "hello-world (axum)".to_owned(),
            command: Box::new(hello),
        },
        Subject {
            name: "git-push, quickstart config (2 rules)".to_owned(),
            command: Box::new(tekflux(&quickstart)),
        },
        Subject {
            name: format!("git-push, {RULES} rules"),
            command: Box::new(tekflux(&hundred)),
        },
    ];
    let load_at_start = machine_load();
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); subjects.len()];
    // One start of each first, unmeasured: the page cache holds the binaries afterwards.
    for subject in &subjects {
        start_once(subject)?;
    }
    for _ in 0..starts {
        for (subject, taken) in subjects.iter().zip(samples.iter_mut()) {
            taken.push(start_once(subject)?);
        }
    }
    #[cfg(feature = "lambda")]
    let lambda = {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        lambda_start_once(&runtime, &hundred)?;
        let mut taken = Vec::new();
        for _ in 0..starts {
            taken.push(lambda_start_once(&runtime, &hundred)?);
        }
        taken
    };
    let load_at_end = machine_load();
    if smoke {
        eprintln!("cold_start smoke run: every start answered 200");
        return Ok(());
    }

    let mut rows = Vec::new();
    for (subject, mut taken) in subjects.iter().map(|s| s.name.clone()).zip(samples) {
        taken.sort();
        rows.push((subject, taken));
    }
    #[cfg(feature = "lambda")]
    {
        let mut taken = lambda;
        taken.sort();
        rows.push((
            format!("git-push, {RULES} rules, Lambda Runtime API"),
            taken,
        ));
    }
    let hello_median = percentile(&rows[0].1, 0.5);
    println!("\n## Cold start: exec to the first 200 ({starts} starts each, interleaved)\n");
    println!("Machine load at start: {load_at_start}; at end: {load_at_end}\n");
    println!("| server | median ms | p90 ms | min ms | median ÷ hello-world |");
    println!("|---|---:|---:|---:|---:|");
    for (name, taken) in &rows {
        let median = percentile(taken, 0.5);
        println!(
            "| {name} | {} | {} | {} | {:.2} |",
            ms(median),
            ms(percentile(taken, 0.9)),
            ms(taken[0]),
            median.as_secs_f64() / hello_median.as_secs_f64()
        );
    }
    Ok(())
}
