//! What every per-function binary does with its arguments, checked on the real binary.

use std::process::{Command, Stdio};

/// `--help` prints the usage and the environment it reads and exits 0, `--version` exits 0,
/// and any other argument exits 64; none of them reads a config or starts a server (they run
/// with no config, no port and a closed stdin, and must end on their own). An invalid config
/// exits 64 naming its position, before anything starts.
///
/// # Panics
/// When the binary behaves otherwise.
pub fn assert_function_arguments(binary: &str, name: &str) {
    let run = |argument: &str| {
        Command::new(binary)
            .arg(argument)
            .env_clear()
            .env("PORT", "1")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|error| panic!("{binary} runs: {error}"))
    };
    let help = run("--help");
    assert_eq!(help.status.code(), Some(0), "{help:?}");
    let text = String::from_utf8_lossy(&help.stdout);
    for expected in [
        &format!("Usage: {name}") as &str,
        "TEKFLUX_CONFIG",
        "KUBECONFIG",
        "TEKFLUX_EVENTS_TOKEN",
        "RUST_LOG",
    ] {
        assert!(text.contains(expected), "{expected:?} not in {text}");
    }
    let version = run("--version");
    assert_eq!(version.status.code(), Some(0), "{version:?}");
    assert!(String::from_utf8_lossy(&version.stdout).starts_with(name));
    let wrong = run("--port=9");
    assert_eq!(wrong.status.code(), Some(64), "{wrong:?}");
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("unexpected argument \"--port=9\""));

    // An invalid config is refused before anything starts: exit 64, the file, line and field.
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("a temporary folder: {error}"));
    let config = dir.path().join("tekflux.yaml");
    std::fs::write(&config, "namespace: cicd\nserver:\n  prot: 8080\n")
        .unwrap_or_else(|error| panic!("writing {}: {error}", config.display()));
    let refused = Command::new(binary)
        .env_clear()
        .env("TEKFLUX_CONFIG", &config)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|error| panic!("{binary} runs: {error}"));
    assert_eq!(refused.status.code(), Some(64), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("tekflux.yaml:3:3: server.prot: unknown key `prot`"),
        "{stderr}"
    );
}
