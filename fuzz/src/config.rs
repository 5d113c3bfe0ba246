//! The config file: any text must load or be refused with problems that print.

use tekflux_common::config::{Config, Env};

/// Loads `text` with a fixed environment that resolves the example's `env:` secrets.
pub fn check(text: &str) {
    // `file:` secrets are read whole, as they should be from a mounted Secret; a fuzzer that
    // names /dev/zero or /dev/stdin would only find that out of memory or hang, so such inputs
    // are skipped.
    if ["dev/", "proc/", "sys/"]
        .iter()
        .any(|special| text.contains(special))
    {
        return;
    }
    let env = Env::new()
        .with("GITHUB_WEBHOOK_SECRET", "fuzz-secret")
        .with("GITLAB_WEBHOOK_TOKEN", "fuzz-token")
        .with("GITEA_WEBHOOK_SECRET", "fuzz-secret");
    match Config::from_yaml(text, "fuzz.yaml", &env) {
        Ok(_) => {}
        Err(error) => {
            let _ = error.to_string();
            assert!(!error.problems().is_empty(), "a refusal without a problem");
        }
    }
}
