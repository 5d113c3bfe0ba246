//! `tekflux dead-letters` and `tekflux replay`: what the Broker could not deliver (kept by
//! run-complete's dead-letter route, see `tekflux_run_complete::dead_letters`), and sending it
//! again once the cause is fixed.

use std::process::ExitCode;

use clap::Args;
use cloudevents::AttributesReader;
use tekflux_common::config::{Env, Sections};
use tekflux_run_complete::dead_letters::{self, DeadLetter, ERROR_EXTENSIONS};

use crate::sender::{EventSender, Token};
use crate::transfer::{EXIT_UNAVAILABLE, EXIT_USAGE, Store};

/// How long one replayed event may take to be answered.
const REPLAY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Arguments of `tekflux dead-letters`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// `text`: one line per dead letter; `json`: the stored events, one per line.
    #[arg(short, long, value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

/// How `dead-letters` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One line per dead letter.
    Text,
    /// The stored events, one JSON object per line.
    Json,
}

/// Arguments of `tekflux replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Where to send them: the Broker's ingress URL (as `kubectl get broker` shows it), or a
    /// function's own URL.
    #[arg(long, value_name = "URL")]
    pub to: url::Url,
    /// A file holding a bearer token to send (the Broker's audience, when it checks senders).
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<std::path::PathBuf>,
    /// Keys (as `tekflux dead-letters` lists them) to replay; all when none are named.
    pub keys: Vec<String>,
}

/// Runs `tekflux dead-letters`.
pub fn list(env: &Env, args: &ListArgs) -> ExitCode {
    let config = match crate::load_config(env, Sections::STORAGE) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let Some(bucket) = config.storage.bucket.clone() else {
        eprintln!("tekflux dead-letters: storage.bucket is not set: there is no store to read");
        return ExitCode::from(EXIT_USAGE);
    };
    let store = match Store::connect("dead-letters", &config, env, |endpoint| {
        format!("cannot read s3://{bucket} at {endpoint}")
    }) {
        Ok(store) => store,
        Err(code) => return code,
    };
    let s3 = &store.client;
    store.runtime.block_on(async {
        match dead_letters::list(s3, &bucket, &config.storage.prefix).await {
            Ok(letters) => {
                for letter in &letters {
                    print_letter(letter, args.output);
                }
                if letters.is_empty() && args.output == Format::Text {
                    eprintln!(
                        "no dead letters in s3://{bucket}/{}",
                        dead_letters::folder(&config.storage.prefix)
                    );
                }
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("tekflux dead-letters: {error}");
                ExitCode::from(EXIT_UNAVAILABLE)
            }
        }
    })
}

fn print_letter(letter: &DeadLetter, format: Format) {
    let event = &letter.event;
    match format {
        Format::Json => match serde_json::to_string(event) {
            Ok(json) => println!("{json}"),
            Err(error) => eprintln!("{}: cannot print as JSON: {error}", letter.key),
        },
        Format::Text => {
            let ext = |name| dead_letters::extension(event, name).unwrap_or_else(|| "-".to_owned());
            println!(
                "{key}  {stored}  {ty}  id={id}  source={source}  failed at {dest} with {code}",
                key = letter.key,
                stored = letter
                    .stored_at
                    .map_or_else(|| "-".to_owned(), |time| time.to_rfc3339()),
                ty = event.ty(),
                id = event.id(),
                source = event.source(),
                dest = ext(ERROR_EXTENSIONS[0]),
                code = ext(ERROR_EXTENSIONS[1]),
            );
        }
    }
}

/// Runs `tekflux replay`: sends each dead letter (in binary mode, without Knative's error
/// extensions, with its own id and source) and removes it from the store once it was accepted
/// (2xx). Exits 0 when every one was, 69 when any was refused or failed (they stay stored).
pub fn replay(env: &Env, args: &ReplayArgs) -> ExitCode {
    let config = match crate::load_config(env, Sections::STORAGE) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let Some(bucket) = config.storage.bucket.clone() else {
        eprintln!("tekflux replay: storage.bucket is not set: there is no store to read");
        return ExitCode::from(EXIT_USAGE);
    };
    let token = match args.token_file.as_deref().map(Token::read).transpose() {
        Ok(token) => token,
        Err(reason) => {
            eprintln!("tekflux replay: --token-file: {reason}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let sender = match EventSender::new(args.to.clone(), token, REPLAY_TIMEOUT) {
        Ok(sender) => sender,
        Err(reason) => {
            eprintln!("tekflux replay: {reason}");
            return ExitCode::FAILURE;
        }
    };
    let store = match Store::connect("replay", &config, env, |endpoint| {
        format!("cannot read s3://{bucket} at {endpoint}")
    }) {
        Ok(store) => store,
        Err(code) => return code,
    };
    let s3 = &store.client;
    store.runtime.block_on(async {
        let letters = match dead_letters::list(s3, &bucket, &config.storage.prefix).await {
            Ok(letters) => letters,
            Err(error) => {
                eprintln!("tekflux replay: {error}");
                return ExitCode::from(EXIT_UNAVAILABLE);
            }
        };
        for key in &args.keys {
            if !letters.iter().any(|letter| &letter.key == key) {
                eprintln!(
                    "tekflux replay: no dead letter {key}; `tekflux dead-letters` lists them"
                );
                return ExitCode::from(EXIT_USAGE);
            }
        }
        let (mut replayed, mut kept) = (0, 0);
        for letter in letters
            .iter()
            .filter(|letter| args.keys.is_empty() || args.keys.contains(&letter.key))
        {
            // One attempt each: what fails stays stored for the next replay.
            match sender.post(&letter.original()).await {
                Ok(_) => match dead_letters::remove(s3, &bucket, &letter.key).await {
                    Ok(()) => {
                        replayed += 1;
                        println!(
                            "replayed {} ({} {})",
                            letter.key,
                            letter.event.ty(),
                            letter.event.id()
                        );
                    }
                    Err(error) => {
                        kept += 1;
                        eprintln!(
                            "{}: accepted, but {error}; a second replay is harmless",
                            letter.key
                        );
                    }
                },
                Err(reason) => {
                    kept += 1;
                    eprintln!(
                        "{}: not replayed: {} {reason}; it stays stored",
                        letter.key,
                        sender.shown_url()
                    );
                }
            }
        }
        eprintln!("{replayed} replayed, {kept} kept");
        if kept == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(EXIT_UNAVAILABLE)
        }
    })
}
