//! `tekflux send`: one CloudEvent from a Tekton step or a shell, to the Broker's ingress or a
//! function, in binary mode, with the bearer token the receivers accept.
//!
//! The id is derived from what the event says (type, source, subject, content type, data)
//! unless `--id` names one, so a step that Tekton retries, or a script run twice, sends the
//! same event again and the receivers' idempotency (source + id) holds. Transient failures
//! (unreachable, timeouts, 408, 429, 5xx) are retried with exponential backoff, waiting at
//! least what `Retry-After` asks; exit codes follow `archive`'s (sysexits).

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use clap::Args;
use cloudevents::{EventBuilder, EventBuilderV10};
use serde_json::json;
use tekflux_common::error::plain_chain;
use uuid::Uuid;

use crate::sender::{EventSender, Failure, Token};
use crate::transfer::{EXIT_NOT_FOUND, EXIT_REFUSED, EXIT_UNAVAILABLE, EXIT_USAGE};

/// Namespace of the ids `send` derives, apart from every other v5 id tekflux makes.
const SEND_ID_NAMESPACE: Uuid = Uuid::from_u128(0x2b8e_0f43_7d5a_4c61_b1e9_58c3_a04d_96f2);
/// The most data read: the functions' default `server.bodyLimit`, so what is sent fits.
pub const MAX_DATA_BYTES: u64 = 25 * 1024 * 1024;
/// The first wait between attempts; each later one doubles, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// The longest wait the backoff itself reaches.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The longest `Retry-After` honoured; a receiver asking for more is given up on (exit 69),
/// rather than holding a Task's step for longer.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// The content type of data sent without `--data-content-type`.
const JSON: &str = "application/json";

/// Arguments of `tekflux send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// Where to send it: the Broker's ingress URL (as `kubectl get broker` shows it),
    /// `tekflux up`'s `http://HOST/broker`, or a function's own URL.
    #[arg(long, value_name = "URL")]
    pub to: url::Url,
    /// The event's type, e.g. `dev.tekflux.release.changed.v1`.
    #[arg(long = "type", value_name = "TYPE")]
    pub event_type: String,
    /// The event's source (a URI reference), e.g. the repository's URL.
    #[arg(long, value_name = "URI")]
    pub source: String,
    /// The event's subject.
    #[arg(long)]
    pub subject: Option<String>,
    /// The event's id. Default: derived from type, source, subject, content type and data,
    /// so sending the same event again (a retried step) repeats the id and the receivers do
    /// nothing twice.
    #[arg(long)]
    pub id: Option<String>,
    /// A file holding the event's data; `-` reads standard input. JSON (sent as
    /// `application/json`) unless `--data-content-type` says otherwise.
    #[arg(long, value_name = "FILE")]
    pub data: Option<PathBuf>,
    /// The data's media type, for data that is not JSON (`text/plain`, ...); the data is then
    /// sent as it is.
    #[arg(long, value_name = "MEDIA-TYPE", requires = "data")]
    pub data_content_type: Option<String>,
    /// An extension attribute (repeatable), e.g. `tekfluxsha=<commit>` so that the release
    /// it causes names the commit (`tekflux trace`). Not part of the derived id.
    #[arg(long = "extension", value_name = "NAME=VALUE")]
    pub extensions: Vec<Extension>,
    /// A file holding the bearer token to send (`events.token`, or a token for the Broker's
    /// audience); it is never printed.
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// Attempts after the first when the receiver is unreachable, times out, or answers 408,
    /// 429 or 5xx; the waits double from 0.5 s (at most 30 s), at least what `Retry-After` asks.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(0..=20))]
    pub retries: u32,
    /// Seconds one attempt may take.
    #[arg(long, value_name = "SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=600))]
    pub timeout: u64,
}

/// `--extension name=value`: a name the spec allows (lowercase letters and digits) that is
/// not a context attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    name: String,
    value: String,
}

/// Context attribute names, which `--extension` cannot set.
const ATTRIBUTES: &[&str] = &[
    "id",
    "source",
    "specversion",
    "type",
    "datacontenttype",
    "dataschema",
    "subject",
    "time",
    "data",
    "data_base64",
];

impl FromStr for Extension {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (name, value) = text
            .split_once('=')
            .ok_or_else(|| format!("{text:?} is not name=value"))?;
        if name.is_empty()
            || name.len() > 20
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(format!(
                "extension name {name:?} must be 1 to 20 lowercase letters and digits"
            ));
        }
        if ATTRIBUTES.contains(&name) {
            return Err(format!(
                "{name} is a context attribute, not an extension: use its own flag"
            ));
        }
        Ok(Self {
            name: name.to_owned(),
            value: value.to_owned(),
        })
    }
}

/// The event's data, as it goes on the wire.
#[derive(Debug)]
enum Payload {
    Json(serde_json::Value),
    Other {
        content_type: String,
        bytes: Vec<u8>,
    },
}

impl Payload {
    fn content_type(&self) -> &str {
        match self {
            Payload::Json(_) => JSON,
            Payload::Other { content_type, .. } => content_type,
        }
    }

    /// The bytes the id is derived from: JSON in one canonical form (object keys sorted, no
    /// spaces), so reformatting the file does not change the id.
    fn id_bytes(&self) -> Vec<u8> {
        match self {
            Payload::Json(value) => serde_json::to_vec(value).unwrap_or_default(),
            Payload::Other { bytes, .. } => bytes.clone(),
        }
    }
}

/// Why `send` stopped before sending; each maps to an exit code.
#[derive(Debug)]
struct Stop {
    code: u8,
    message: String,
}

impl Stop {
    fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Runs `tekflux send`.
pub fn send(args: &SendArgs) -> ExitCode {
    match prepare(args).and_then(|(event, sender)| deliver(args, &event, &sender)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(stop) => {
            eprintln!("tekflux send: {}", stop.message);
            ExitCode::from(stop.code)
        }
    }
}

/// Everything local, before the first request: flags, data, token.
fn prepare(args: &SendArgs) -> Result<(cloudevents::Event, EventSender), Stop> {
    if !matches!(args.to.scheme(), "http" | "https") {
        return Err(Stop::new(
            EXIT_USAGE,
            format!(
                "--to must be an http or https URL, not {}:",
                args.to.scheme()
            ),
        ));
    }
    for (flag, value) in [("--type", &args.event_type), ("--source", &args.source)] {
        if value.trim().is_empty() {
            return Err(Stop::new(EXIT_USAGE, format!("{flag} must not be empty")));
        }
    }
    if args.id.as_deref().is_some_and(|id| id.trim().is_empty()) {
        return Err(Stop::new(EXIT_USAGE, "--id must not be empty"));
    }
    let payload = args
        .data
        .as_ref()
        .map(|path| read_payload(path, args.data_content_type.as_deref()))
        .transpose()?;
    let token = args
        .token_file
        .as_deref()
        .map(Token::read)
        .transpose()
        .map_err(|reason| Stop::new(EXIT_USAGE, format!("--token-file: {reason}")))?;
    let id = args.id.clone().unwrap_or_else(|| {
        derived_id(
            &args.event_type,
            &args.source,
            args.subject.as_deref(),
            payload.as_ref(),
        )
    });
    let mut builder = EventBuilderV10::new()
        .id(id)
        .ty(args.event_type.clone())
        .source(args.source.clone())
        .time(chrono::Utc::now());
    if let Some(subject) = &args.subject {
        builder = builder.subject(subject.clone());
    }
    for extension in &args.extensions {
        builder = builder.extension(&extension.name, extension.value.clone());
    }
    builder = match payload {
        Some(Payload::Json(value)) => builder.data(JSON, value),
        Some(Payload::Other {
            content_type,
            bytes,
        }) => builder.data(content_type, bytes),
        None => builder,
    };
    let event = builder
        .build()
        .map_err(|error| Stop::new(EXIT_USAGE, format!("not a valid CloudEvent: {error}")))?;
    let sender = EventSender::new(args.to.clone(), token, Duration::from_secs(args.timeout))
        .map_err(|reason| Stop::new(1, reason))?;
    Ok((event, sender))
}

/// Reads `--data` (a file, or standard input for `-`), bounded by [`MAX_DATA_BYTES`].
fn read_payload(path: &PathBuf, content_type: Option<&str>) -> Result<Payload, Stop> {
    let mut bytes = Vec::new();
    let read = if path.as_os_str() == "-" {
        std::io::stdin()
            .lock()
            .take(MAX_DATA_BYTES + 1)
            .read_to_end(&mut bytes)
    } else {
        match std::fs::File::open(path) {
            Ok(file) => file.take(MAX_DATA_BYTES + 1).read_to_end(&mut bytes),
            Err(error) => {
                let code = if error.kind() == std::io::ErrorKind::NotFound {
                    EXIT_NOT_FOUND
                } else {
                    EXIT_USAGE
                };
                return Err(Stop::new(
                    code,
                    format!(
                        "--data: cannot read {}: {}",
                        path.display(),
                        plain_chain(&error)
                    ),
                ));
            }
        }
    };
    let from = if path.as_os_str() == "-" {
        "standard input".to_owned()
    } else {
        path.display().to_string()
    };
    read.map_err(|error| {
        Stop::new(
            EXIT_USAGE,
            format!("--data: cannot read {from}: {}", plain_chain(&error)),
        )
    })?;
    if bytes.len() as u64 > MAX_DATA_BYTES {
        return Err(Stop::new(
            EXIT_REFUSED,
            format!(
                "--data: {from} is over {} MiB, more than the functions accept",
                MAX_DATA_BYTES / (1024 * 1024)
            ),
        ));
    }
    let is_json = content_type.is_none_or(is_json_media_type);
    if !is_json {
        let content_type = content_type.unwrap_or_default().to_owned();
        return Ok(Payload::Other {
            content_type,
            bytes,
        });
    }
    let value = serde_json::from_slice(&bytes).map_err(|error| {
        Stop::new(
            EXIT_REFUSED,
            format!(
                "--data: {from} is not JSON ({error}); pass --data-content-type with its media \
                 type to send other data"
            ),
        )
    })?;
    Ok(match content_type {
        Some(content_type) if content_type != JSON => Payload::Other {
            content_type: content_type.to_owned(),
            bytes,
        },
        _ => Payload::Json(value),
    })
}

/// `application/json`, `application/cloudevents+json`, `text/json`, with or without parameters.
fn is_json_media_type(media_type: &str) -> bool {
    let essence = media_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence == "text/json" || essence.ends_with("+json")
}

/// The id `send` gives an event without `--id`: a UUID (v5) of its type, source, subject,
/// content type and data, each length-prefixed so that no two different events share one.
/// Extensions and the time are left out: a retried step may carry another `traceparent`.
fn derived_id(
    event_type: &str,
    source: &str,
    subject: Option<&str>,
    payload: Option<&Payload>,
) -> String {
    let mut name = Vec::new();
    let content_type = payload.map(Payload::content_type);
    let data = payload.map(Payload::id_bytes);
    for field in [
        Some(event_type.as_bytes()),
        Some(source.as_bytes()),
        subject.map(str::as_bytes),
        content_type.map(str::as_bytes),
        data.as_deref(),
    ] {
        match field {
            // An absent field is told apart from an empty one.
            None => name.extend_from_slice(b"-;"),
            Some(bytes) => {
                name.extend_from_slice(format!("{}:", bytes.len()).as_bytes());
                name.extend_from_slice(bytes);
            }
        }
    }
    Uuid::new_v5(&SEND_ID_NAMESPACE, &name).to_string()
}

/// Sends with retries, and prints the result line.
fn deliver(args: &SendArgs, event: &cloudevents::Event, sender: &EventSender) -> Result<(), Stop> {
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|error| Stop::new(1, format!("cannot start the async runtime: {error}")))?;
    let to = sender.shown_url();
    let attempts = args.retries + 1;
    let mut attempt = 1;
    let status = runtime.block_on(async {
        loop {
            let failure = match sender.post(event).await {
                Ok(status) => return Ok(status),
                Err(failure) => failure,
            };
            if !failure.is_transient() || attempt == attempts {
                return Err(failure);
            }
            let wait = backoff(attempt).max(failure.retry_after().unwrap_or_default());
            if wait > MAX_RETRY_AFTER {
                return Err(Failure::Unavailable {
                    reason: format!(
                        "{failure}, and asks to wait {} s, longer than send waits ({} s); \
                         send it again later",
                        wait.as_secs(),
                        MAX_RETRY_AFTER.as_secs()
                    ),
                    retry_after: None,
                });
            }
            eprintln!(
                "tekflux send: attempt {attempt} of {attempts}: {to} {failure}; retrying in {:.1} s",
                wait.as_secs_f64()
            );
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    });
    match status {
        Ok(status) => {
            println!(
                "{}",
                json!({
                    "id": cloudevents::AttributesReader::id(event),
                    "type": args.event_type,
                    "source": args.source,
                    "subject": args.subject,
                    "to": to,
                    "status": status.as_u16(),
                    "attempts": attempt,
                })
            );
            Ok(())
        }
        Err(failure) => {
            let code = failure.exit_code();
            let after = if code == EXIT_UNAVAILABLE && attempt > 1 {
                format!(" (after {attempt} attempts)")
            } else {
                String::new()
            };
            Err(Stop::new(code, format!("{to} {failure}{after}")))
        }
    }
}

/// The wait before attempt `attempt + 1`: 0.5 s doubling up to [`MAX_BACKOFF`], plus up to a
/// quarter more, so steps that failed together do not all come back at once.
fn backoff(attempt: u32) -> Duration {
    let base = FIRST_BACKOFF
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(MAX_BACKOFF);
    // Jitter from the clock: spread is all that is needed, not unpredictability.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.subsec_nanos())
        .unwrap_or_default();
    base + base.mul_f64(f64::from(nanos % 250) / 1000.0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn derived_ids_follow_the_content_not_its_formatting() {
        let data = |text: &str| Payload::Json(serde_json::from_str(text).unwrap());
        let a = derived_id("t", "s", None, Some(&data(r#"{"b": 1, "a": 2}"#)));
        assert_eq!(
            a,
            derived_id("t", "s", None, Some(&data(r#"{"a":2,"b":1}"#)))
        );
        assert_ne!(
            a,
            derived_id("t", "s", Some(""), Some(&data(r#"{"a":2,"b":1}"#)))
        );
        assert_ne!(
            a,
            derived_id("t", "s", None, Some(&data(r#"{"a":3,"b":1}"#)))
        );
        assert_ne!(
            derived_id("ab", "c", None, None),
            derived_id("a", "bc", None, None)
        );
    }

    #[test]
    fn backoff_doubles_and_is_bounded() {
        let first = backoff(1);
        assert!(first >= FIRST_BACKOFF && first < FIRST_BACKOFF * 2);
        assert!(backoff(3) >= FIRST_BACKOFF * 4);
        assert!(backoff(30) <= MAX_BACKOFF + MAX_BACKOFF / 4);
    }

    #[test]
    fn extensions_are_names_the_spec_allows() {
        assert!("tekfluxsha=abc".parse::<Extension>().is_ok());
        assert!("TekfluxSha=abc".parse::<Extension>().is_err());
        assert!("id=abc".parse::<Extension>().is_err());
        assert!("noequals".parse::<Extension>().is_err());
    }

    #[test]
    fn json_media_types() {
        assert!(is_json_media_type("application/json; charset=utf-8"));
        assert!(is_json_media_type("application/vnd.cncf.helm.chart+json"));
        assert!(!is_json_media_type("text/plain"));
    }
}
