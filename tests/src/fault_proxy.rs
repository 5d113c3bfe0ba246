//! An HTTP/1.1 proxy on loopback that fails chosen requests, to put a real server (the S3 test
//! servers) into "failing mid-upload" states that stopping it cannot express: for example every
//! `UploadPart` of part 2 answered 503 while `AbortMultipartUpload` still goes through.
//!
//! It understands just enough HTTP/1.1 to find request boundaries on a keep-alive connection
//! (the request line and `Content-Length`); bodies and responses pass through unchanged.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};

/// What a matched request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyFault {
    /// `503 Service Unavailable`, then the connection is closed.
    ServiceUnavailable,
    /// The connection is cut without an answer.
    Drop,
}

type Rule = Arc<dyn Fn(&str) -> bool + Send + Sync>;

#[derive(Default)]
struct State {
    rule: Option<(Rule, ProxyFault)>,
    seen: Vec<String>,
    failed: Vec<String>,
}

/// The proxy; it stops when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    accept: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl FaultProxy {
    /// Starts a proxy on `127.0.0.1:0` in front of `upstream` (`http://host:port`).
    ///
    /// # Panics
    /// When `upstream` is not `http://host:port` or no loopback port can be bound.
    pub async fn start(upstream: &str) -> Self {
        let upstream = upstream
            .strip_prefix("http://")
            .expect("the proxy forwards plain http")
            .trim_end_matches('/')
            .to_owned();
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind a loopback port for the fault proxy");
        let addr = listener.local_addr().expect("read the proxy's address");
        let state = Arc::new(Mutex::new(State::default()));
        let shared = Arc::clone(&state);
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(&upstream).await {
                        proxy_connection(client, server, state).await;
                    }
                });
            }
        });
        Self {
            addr,
            state,
            accept,
        }
    }

    /// The URL to give clients instead of the upstream's.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// From now on, requests whose request line (`PUT /bucket/key?partNumber=2&uploadId=… HTTP/1.1`)
    /// satisfies `matches` get `fault`.
    pub fn fail_when(
        &self,
        matches: impl Fn(&str) -> bool + Send + Sync + 'static,
        fault: ProxyFault,
    ) {
        self.lock().rule = Some((Arc::new(matches), fault));
    }

    /// Lets every request through again.
    pub fn heal(&self) {
        self.lock().rule = None;
    }

    /// Request lines seen so far, in order.
    pub fn requests(&self) -> Vec<String> {
        self.lock().seen.clone()
    }

    /// Request lines that were failed on purpose.
    pub fn failed(&self) -> Vec<String> {
        self.lock().failed.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn proxy_connection(client: TcpStream, server: TcpStream, state: Arc<Mutex<State>>) {
    let (client_read, client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let client_write = Arc::new(tokio::sync::Mutex::new(client_write));
    let answers = {
        let client_write = Arc::clone(&client_write);
        tokio::spawn(async move {
            let mut buffer = vec![0u8; 64 * 1024];
            loop {
                let read = match server_read.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(read) => read,
                };
                if client_write
                    .lock()
                    .await
                    .write_all(&buffer[..read])
                    .await
                    .is_err()
                {
                    break;
                }
            }
            let _ = client_write.lock().await.shutdown().await;
        })
    };

    let mut client_read = BufReader::new(client_read);
    loop {
        let Some(head) = read_head(&mut client_read).await else {
            break;
        };
        let request_line = head.lines().next().unwrap_or_default().to_owned();
        let fault = {
            let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
            state.seen.push(request_line.clone());
            let fault = state
                .rule
                .as_ref()
                .filter(|(matches, _)| matches(&request_line))
                .map(|(_, fault)| *fault);
            if fault.is_some() {
                state.failed.push(request_line.clone());
            }
            fault
        };
        if let Some(fault) = fault {
            answers.abort();
            answer_fault(&client_write, fault).await;
            return;
        }
        if server_write.write_all(head.as_bytes()).await.is_err() {
            break;
        }
        let length = content_length(&head);
        let mut body = (&mut client_read).take(length);
        if tokio::io::copy(&mut body, &mut server_write).await.is_err() {
            break;
        }
    }
    let _ = server_write.shutdown().await;
    let _ = answers.await;
}

/// Reads one request head, up to and including the blank line; `None` at end of stream.
async fn read_head<R: AsyncBufReadExt + Unpin>(reader: &mut R) -> Option<String> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        let blank = line == "\r\n" || line == "\n";
        head.push_str(&line);
        if blank && head.len() > line.len() {
            return Some(head);
        }
    }
}

fn content_length(head: &str) -> u64 {
    head.lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0)
}

async fn answer_fault(client_write: &tokio::sync::Mutex<OwnedWriteHalf>, fault: ProxyFault) {
    let mut writer = client_write.lock().await;
    if fault == ProxyFault::ServiceUnavailable {
        let body = "<Error><Code>ServiceUnavailable</Code><Message>injected by the test proxy</Message></Error>";
        let answer = format!(
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = writer.write_all(answer.as_bytes()).await;
    }
    let _ = writer.shutdown().await;
}
