//! Peak memory of `tekflux serve` under hostile bodies: for every route, 8 concurrent bodies of
//! the largest allowed size, unauthenticated and shaped to hurt a parser (deep nesting, one
//! huge array, one long string), against the real binary on loopback. Reports each process's
//! peak RSS (`VmHWM`), for `serve` with every function and for each function alone, next to the
//! 128 MiB memory limit `knative/base` gives git-push and release-changed.
//!
//! `cargo bench -p tekflux --bench hostile_bodies` (build in release for figures that match a
//! deployment: `cargo bench` does).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tekflux_testkit::machine::{machine_load, status_kib};

/// What `knative/base/services.yaml` gives git-push and release-changed.
const MEMORY_LIMIT_MIB: u64 = 128;
/// The default `server.bodyLimit`.
const BODY_LIMIT: usize = 25 * 1024 * 1024;
/// How many hostile bodies are in flight at once.
const CONCURRENCY: usize = 8;

/// Routes of `serve` (all functions) and the function each belongs to.
const ROUTES: [(&str, &str); 6] = [
    ("git-push", "/webhooks/github"),
    ("git-push", "/webhooks"),
    ("git-push", "/"),
    ("run-complete", "/"),
    ("release-changed", "/"),
    ("release-changed", "/webhooks/registry"),
];

fn main() {
    let bodies = [
        ("deep nesting", deep_nesting()),
        ("huge array", huge_array()),
        ("long string", long_string()),
    ];
    println!(
        "# hostile bodies: {CONCURRENCY} concurrent bodies of {} MiB per route",
        bodies[0].1.len() >> 20
    );
    println!("# {}", machine_load());
    println!(
        "| process | routes | peak RSS (MiB) | of the {MEMORY_LIMIT_MIB} MiB limit | answers |"
    );
    println!("|---|---|---|---|---|");
    let mut processes: Vec<(&str, Vec<(&str, &str)>)> = vec![("serve (all)", ROUTES.to_vec())];
    for function in ["git-push", "run-complete", "release-changed"] {
        processes.push((
            function,
            ROUTES
                .iter()
                .copied()
                .filter(|(f, _)| *f == function)
                .collect(),
        ));
    }
    for (process, routes) in processes {
        let server = Server::start(if process == "serve (all)" {
            None
        } else {
            Some(process)
        });
        let mut answers = std::collections::BTreeMap::<u16, usize>::new();
        for (function, route) in &routes {
            // All functions nest under `/<function>`, whose root has no trailing slash.
            let path = match (&server.function, *route) {
                (Some(_), route) => route.to_owned(),
                (None, "/") => format!("/{function}"),
                (None, route) => format!("/{function}{route}"),
            };
            for (_, body) in &bodies {
                for status in server.blast(&path, body) {
                    *answers.entry(status).or_default() += 1;
                }
            }
        }
        let peak = server.peak_rss_mib();
        // 0: the server answered (401, 503) and closed before the whole body was sent.
        let answers: Vec<String> = answers
            .iter()
            .map(|(status, n)| match status {
                0 => format!("{n}×closed early"),
                status => format!("{n}×{status}"),
            })
            .collect();
        println!(
            "| {process} | {} | {peak:.1} | {:.0}% | {} |",
            routes.len(),
            peak / MEMORY_LIMIT_MIB as f64 * 100.0,
            answers.join(", ")
        );
    }
}

/// `[[[[…]]]]`, as deep as the size allows.
fn deep_nesting() -> Vec<u8> {
    let depth = (BODY_LIMIT - 1024) / 2;
    let mut body = vec![b'['; depth];
    body.extend(std::iter::repeat_n(b']', depth));
    body
}

/// `[0,0,0,…]`: about 16 bytes of `serde_json::Value` per 2 bytes of input.
fn huge_array() -> Vec<u8> {
    let mut body = b"[0".to_vec();
    while body.len() < BODY_LIMIT - 1024 {
        body.extend_from_slice(b",0");
    }
    body.push(b']');
    body
}

/// `{"a":"xxxx…"}`.
fn long_string() -> Vec<u8> {
    let mut body = br#"{"a":""#.to_vec();
    body.extend(std::iter::repeat_n(b'x', BODY_LIMIT - 1024));
    body.extend_from_slice(br#""}"#);
    body
}

struct Server {
    child: Child,
    port: u16,
    function: Option<String>,
}

impl Server {
    /// Starts the binary on a free port. The port is picked by binding and releasing it, so an
    /// outgoing connection may take it first; then the server exits and another port is tried.
    fn start(function: Option<&str>) -> Self {
        for _ in 0..3 {
            if let Some(server) = Self::try_start(function) {
                return server;
            }
        }
        panic!("tekflux did not become ready");
    }

    fn try_start(function: Option<&str>) -> Option<Self> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .expect("a free port");
        let mut command = Command::new(env!("CARGO_BIN_EXE_tekflux"));
        command.arg("serve");
        if let Some(function) = function {
            command.args(["--function", function]);
        }
        let child = command
            .env("PORT", port.to_string())
            .env("TEKFLUX_GITHUB_SECRET", "bench-secret")
            .env("TEKFLUX_REGISTRY_TOKEN", "bench-token")
            .env("TEKFLUX_EVENTS_TOKEN", "bench-events-token")
            .env("TEKFLUX_CONFIG", "")
            .env("KUBECONFIG", "/nonexistent")
            // As the image sets it (infra/container/Containerfile): large buffers always
            // mmap(2)ed, so freed bodies return to the system.
            .env("MALLOC_MMAP_THRESHOLD_", "131072")
            .current_dir(std::env::temp_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tekflux starts");
        let mut server = Self {
            child,
            port,
            function: function.map(str::to_owned),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if server.request("GET", "/readyz", &[]) == Some(200) {
                return Some(server);
            }
            if matches!(server.child.try_wait(), Ok(Some(_))) {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Sends `CONCURRENCY` copies of `body` to `path` at once; the statuses answered.
    fn blast(&self, path: &str, body: &[u8]) -> Vec<u16> {
        std::thread::scope(|scope| {
            let senders: Vec<_> = (0..CONCURRENCY)
                .map(|_| scope.spawn(|| self.request("POST", path, body).unwrap_or(0)))
                .collect();
            senders
                .into_iter()
                .map(|sender| sender.join().unwrap_or(0))
                .collect()
        })
    }

    /// One request as a hostile sender makes it: CloudEvent headers, a wrong signature and
    /// token, JSON content; the status, or `None` when the connection failed.
    fn request(&self, method: &str, path: &str, body: &[u8]) -> Option<u16> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .ok()?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nX-GitHub-Event: push\r\nX-GitHub-Delivery: d-1\r\n\
             X-Hub-Signature-256: sha256=00\r\nAuthorization: Bearer wrong\r\n\
             ce-specversion: 1.0\r\nce-id: x\r\nce-type: dev.tekflux.git.pushed.v1\r\n\
             ce-source: /x\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).ok()?;
        // The server may answer (401, 503) before the body is sent; a failed write is fine.
        let _ = stream.write_all(body);
        let _ = stream.shutdown(Shutdown::Write);
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        let line = String::from_utf8_lossy(&answer[..answer.len().min(32)]).into_owned();
        line.split(' ').nth(1)?.parse().ok()
    }

    fn peak_rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status_kib(&status, "VmHWM:").unwrap_or(0) as f64 / 1024.0
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
