//! `kubectl kustomize` for the tests that check the shipped manifests as a cluster receives them.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

/// The objects `kubectl kustomize <dir>` renders, or `None` (with a SKIPPED message) when kubectl
/// is not installed: `.ci/run` requires it, a newcomer's `cargo test` may lack it.
///
/// # Panics
/// When kubectl cannot run for another reason, or the kustomization does not render.
pub fn kustomize(dir: &Path) -> Option<Vec<Value>> {
    let output = match std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
    {
        Ok(output) => output,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            eprintln!(
                "SKIPPED: kubectl is not installed, so {} cannot be rendered",
                dir.display()
            );
            return None;
        }
        Err(error) => panic!("kubectl kustomize {}: {error}", dir.display()),
    };
    assert!(
        output.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("kubectl prints UTF-8");
    Some(
        serde_norway::Deserializer::from_str(&text)
            .map(|document| Value::deserialize(document).expect("kubectl prints YAML"))
            .filter(|value| !value.is_null())
            .collect(),
    )
}
