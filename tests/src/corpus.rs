//! Where the shared corpus of real payloads and upstream schemas is.
//!
//! CI exports `TEKFLUX_CORPUS`; a developer checkout finds the corpus beside the workspace. A corpus
//! that was asked for but cannot be read is a broken test set-up, so it panics instead of letting
//! tests skip silently.

use std::path::{Path, PathBuf};

/// Environment variable naming the corpus folder.
pub const CORPUS_ENV: &str = "TEKFLUX_CORPUS";

/// The corpus folder: `$TEKFLUX_CORPUS` when set (panics when it is set but unreadable), else
/// `<workspace root>/../shared/corpus` when that exists, else `None`.
pub fn corpus_dir() -> Option<PathBuf> {
    resolve(std::env::var_os(CORPUS_ENV).map(PathBuf::from))
}

/// Like [`corpus_dir`], with the environment value passed in (so the rule is testable without
/// touching the process environment).
pub fn resolve(from_env: Option<PathBuf>) -> Option<PathBuf> {
    if let Some(dir) = from_env.filter(|d| !d.as_os_str().is_empty()) {
        if let Err(e) = std::fs::read_dir(&dir) {
            panic!(
                "{CORPUS_ENV} is set to {} but that folder cannot be read: {e}",
                dir.display()
            );
        }
        return Some(dir);
    }
    // The testkit crate lives at <root>/tests, so the workspace root is its parent.
    let fallback = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus");
    fallback.is_dir().then_some(fallback)
}

/// The corpus folder, or a panic explaining how to provide it.
pub fn require_corpus() -> PathBuf {
    match corpus_dir() {
        Some(dir) => dir,
        None => panic!(
            "the shared corpus was not found: set {CORPUS_ENV} to its folder \
             (or place it at <workspace root>/../shared/corpus)"
        ),
    }
}

/// A file inside the corpus, e.g. `corpus_file("schemas/tekton-300-taskrun.yaml")`; panics when
/// the corpus is missing or the file does not exist.
pub fn corpus_file(rel: &str) -> PathBuf {
    let path = require_corpus().join(rel);
    assert!(
        path.is_file(),
        "corpus file {rel} not found at {}",
        path.display()
    );
    path
}

/// The bytes of a corpus file; panics when the corpus or the file is missing.
pub fn read_corpus(rel: &str) -> Vec<u8> {
    let path = corpus_file(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}
