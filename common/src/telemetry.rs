//! Tracing set up one way for every function: `RUST_LOG` filter, text or JSON output.
//!
//! The environment is passed in rather than read here, so `main` decides where values come from
//! and tests can choose them without touching the process environment.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Environment variable holding the filter directives (`info`, `tekflux=debug,kube=warn`, …).
pub const RUST_LOG: &str = "RUST_LOG";
/// Environment variable choosing the output format: `json`, or `text` (the default).
pub const LOG_FORMAT: &str = "TEKFLUX_LOG_FORMAT";
/// Environment variable that turns colours off when set to anything (<https://no-color.org>).
pub const NO_COLOR: &str = "NO_COLOR";
/// Filter used when `RUST_LOG` is unset or invalid. kube's request tracing logs every failed
/// API call at `error`, which the request's own line already reports with its cause.
pub const DEFAULT_FILTER: &str = "info,kube_client::client::builder=off";

/// Whether text logs get ANSI colours: only on a terminal, and never with `NO_COLOR` set.
pub fn colour_wanted(no_color: Option<&str>) -> bool {
    use std::io::IsTerminal;
    no_color.is_none_or(str::is_empty) && std::io::stdout().is_terminal()
}

/// Installs the global tracing subscriber.
///
/// `rust_log` is the value of [`RUST_LOG`] and `log_format` that of [`LOG_FORMAT`]; `colour`
/// says whether text lines get ANSI colours (see [`colour_wanted`]). JSON output
/// puts the fields of the current span (`span`) and of every span around it (`spans`, outermost
/// first) on every line, so a line logged inside a handler's or an archive step's own span
/// (`#[instrument]`) still carries the request span's CloudEvent id, type, source and delivery
/// id, and log pipelines can join on them. Returns `false` when a subscriber was already installed (a second
/// call, as happens across tests in one binary); that is not an error.
pub fn init(rust_log: Option<&str>, log_format: Option<&str>, colour: bool) -> bool {
    let requested = rust_log.map(str::trim).filter(|value| !value.is_empty());
    let (filter, bad_filter) = match requested.map(EnvFilter::try_new) {
        None => (EnvFilter::new(DEFAULT_FILTER), None),
        Some(Ok(filter)) => (filter, None),
        // Falling back keeps the service up; the warning below says why logs look different.
        Some(Err(err)) => (EnvFilter::new(DEFAULT_FILTER), Some(err.to_string())),
    };
    let json = log_format.is_some_and(|format| format.trim().eq_ignore_ascii_case("json"));
    let unknown_format = log_format.map(str::trim).filter(|format| {
        !format.eq_ignore_ascii_case("json") && !format.eq_ignore_ascii_case("text")
    });

    let registry = tracing_subscriber::registry().with(filter);
    let installed = if json {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(true),
            )
            .try_init()
            .is_ok()
    } else {
        registry
            .with(tracing_subscriber::fmt::layer().with_ansi(colour))
            .try_init()
            .is_ok()
    };

    if installed {
        if let Some(err) = bad_filter {
            tracing::warn!(
                error = %err,
                fallback = DEFAULT_FILTER,
                "invalid {RUST_LOG}, using the default filter"
            );
        }
        if let Some(format) = unknown_format {
            tracing::warn!(
                format,
                "unknown {LOG_FORMAT}, expected `json` or `text`; using text"
            );
        }
    }
    installed
}

#[cfg(test)]
mod tests {
    #[test]
    fn second_init_is_harmless() {
        // Whichever call comes first in this process installs; any later one must not panic.
        let _ = super::init(Some("not a [valid filter"), Some("json"), false);
        assert!(!super::init(None, None, false));
    }
}
