//! What `archive` and `restore` write besides the archive: the `--sha256-file`, the JSON result
//! line on stdout and the progress line on stderr.

use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tekflux_run_complete::archive::Progress;

/// `--sha256-file`, opened before the upload so that a path that cannot be written is found
/// out before anything is stored, and written once the archive is verified.
pub(super) struct Sha256File {
    file: File,
    path: PathBuf,
    /// Whether this run created it (and so removes it when the archive fails).
    created: bool,
}

impl Sha256File {
    pub(super) fn open(path: &Path) -> Result<Self, (PathBuf, std::io::Error)> {
        let opened = match OpenOptions::new().write(true).create_new(true).open(path) {
            Ok(file) => Ok((file, true)),
            // Kept as it is until there is a sha256 to replace it with.
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => OpenOptions::new()
                .write(true)
                .open(path)
                .map(|file| (file, false)),
            Err(error) => Err(error),
        };
        match opened {
            Ok((file, created)) => Ok(Self {
                file,
                path: path.to_owned(),
                created,
            }),
            Err(error) => Err((path.to_owned(), error)),
        }
    }

    pub(super) fn write(mut self, sha256: &str) -> Result<(), (PathBuf, std::io::Error)> {
        self.file
            .set_len(0)
            .and_then(|()| self.file.write_all(sha256.as_bytes()))
            .map_err(|error| (self.path.clone(), error))
    }
}

/// Removes a `--sha256-file` this run created, when there is no sha256 to put in it.
pub(super) fn discard(file: Option<Sha256File>) {
    if let Some(file) = file
        && file.created
    {
        drop(file.file);
        let _ = std::fs::remove_file(&file.path);
    }
}

pub(super) fn print_result(result: &serde_json::Value) {
    println!("{result}");
}

/// Progress on stderr: redrawn in place (with a bar when the total is known) on a terminal,
/// a plain line at most every [`ProgressLine::PLAIN_EVERY`] otherwise, so step logs stay short.
pub(super) struct ProgressLine {
    label: &'static str,
    total: Option<u64>,
    terminal: bool,
    started: Instant,
    done: AtomicU64,
    last_drawn: Mutex<Instant>,
}

impl ProgressLine {
    const PLAIN_EVERY: Duration = Duration::from_secs(5);
    const REDRAW_EVERY: Duration = Duration::from_millis(200);

    pub(super) fn to_stderr(label: &'static str, total: Option<u64>) -> Arc<Self> {
        let now = Instant::now();
        Arc::new(Self {
            label,
            total,
            terminal: std::io::stderr().is_terminal(),
            started: now,
            done: AtomicU64::new(0),
            last_drawn: Mutex::new(now),
        })
    }

    pub(super) fn callback(self: &Arc<Self>) -> Progress {
        let line = Arc::clone(self);
        Progress::new(move |bytes| line.advance(bytes))
    }

    fn advance(&self, bytes: u64) {
        let done = self.done.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let every = if self.terminal {
            Self::REDRAW_EVERY
        } else {
            Self::PLAIN_EVERY
        };
        let Ok(mut last) = self.last_drawn.lock() else {
            return;
        };
        if last.elapsed() < every {
            return;
        }
        *last = Instant::now();
        drop(last);
        self.draw(done, false);
    }

    pub(super) fn finish(&self) {
        // A plain log gets no final progress line: the JSON result says it all.
        if self.terminal {
            self.draw(self.done.load(Ordering::Relaxed), true);
        }
    }

    fn draw(&self, done: u64, last: bool) {
        let seconds = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = mib(done) / seconds;
        let amount = match self.total {
            Some(total) if total > 0 => {
                let fraction = (done as f64 / total as f64).min(1.0);
                let filled = (fraction * 30.0).round() as usize;
                format!(
                    "[{}{}] {:>3.0}% {:.1}/{:.1} MiB",
                    "#".repeat(filled),
                    "-".repeat(30 - filled),
                    fraction * 100.0,
                    mib(done),
                    mib(total)
                )
            }
            _ => format!("{:.1} MiB", mib(done)),
        };
        let text = format!("{} {amount} at {rate:.1} MiB/s", self.label);
        let mut stderr = std::io::stderr().lock();
        // Errors writing progress are not worth failing the transfer for.
        let _ = if self.terminal {
            write!(stderr, "\r{text}\x1b[K{}", if last { "\n" } else { "" })
        } else {
            writeln!(stderr, "{text}")
        };
        let _ = stderr.flush();
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
