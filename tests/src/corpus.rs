//! Where the shared corpus of real payloads and upstream schemas is.
//!
//! CI exports `TEKFLUX_CORPUS`; a developer checkout finds the corpus beside the workspace. A test
//! that needs the corpus never passes without it: a corpus that is missing, or asked for but
//! unreadable, is a broken test set-up and panics with the way to provide it. The one way to run
//! without it is to say so, `TEKFLUX_CORPUS=skip` (docs/decisions.md, "Tests without the
//! corpus"): tests that can leave their corpus part out say on stderr what they skipped, and the
//! test API server says it validates no CRD schema; tests that cannot run at all without the
//! corpus still fail, naming the switch.

use std::ffi::OsString;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Environment variable naming the corpus folder (or [`SKIP`]).
pub const CORPUS_ENV: &str = "TEKFLUX_CORPUS";

/// The value of [`CORPUS_ENV`] that runs the tests knowingly without the corpus.
pub const SKIP: &str = "skip";

/// Where the corpus is, as [`resolve`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Located {
    /// The corpus folder.
    Dir(PathBuf),
    /// `TEKFLUX_CORPUS=skip`: the run goes on without the corpus, knowingly.
    Skipped,
}

/// The corpus folder: `$TEKFLUX_CORPUS` when set (panics when it is set but unreadable),
/// `None` when it is [`SKIP`] (and says on stderr what `what` leaves out), else
/// `<workspace root>/../shared/corpus`; panics when that is missing too.
pub fn corpus_dir(what: &str) -> Option<PathBuf> {
    match locate() {
        Located::Dir(dir) => Some(dir),
        Located::Skipped => {
            // Straight to the process' stderr: libtest captures `eprintln!` of passing tests,
            // and a skip must show in every run.
            let _ = writeln!(std::io::stderr(), "SKIPPED {what}: {CORPUS_ENV}={SKIP}");
            None
        }
    }
}

/// Where the corpus is for this process (see [`resolve`]).
pub fn locate() -> Located {
    resolve(std::env::var_os(CORPUS_ENV), &default_dir())
}

/// `<workspace root>/../shared/corpus`, where a developer checkout keeps the corpus.
pub fn default_dir() -> PathBuf {
    // The testkit crate lives at <root>/tests, so the workspace root is its parent.
    let testkit = Path::new(env!("CARGO_MANIFEST_DIR"));
    match testkit.parent().and_then(Path::parent) {
        Some(beside_root) => beside_root.join("shared/corpus"),
        None => testkit.join("../../shared/corpus"),
    }
}

/// The rule, with the environment value and the fallback folder passed in (so it is testable
/// without touching the process environment): a set value must be a readable folder or
/// [`SKIP`]; unset (or empty), the fallback must exist. Anything else panics, saying how to
/// provide the corpus or opt out.
pub fn resolve(from_env: Option<OsString>, fallback: &Path) -> Located {
    match from_env.filter(|value| !value.is_empty()) {
        Some(value) if value == SKIP => Located::Skipped,
        Some(value) => {
            let dir = PathBuf::from(value);
            if let Err(e) = std::fs::read_dir(&dir) {
                panic!(
                    "{CORPUS_ENV} is set to {} but that folder cannot be read: {e}",
                    dir.display()
                );
            }
            Located::Dir(dir)
        }
        None if fallback.is_dir() => Located::Dir(fallback.to_path_buf()),
        None => panic!(
            "the shared corpus was not found at {}: set {CORPUS_ENV} to its folder (as .ci/run \
             does), or {CORPUS_ENV}={SKIP} to run knowingly without it",
            fallback.display()
        ),
    }
}

/// The corpus folder, or a panic explaining how to provide it (also under [`SKIP`]: the test
/// calling this cannot run without the corpus).
pub fn require_corpus() -> PathBuf {
    match locate() {
        Located::Dir(dir) => dir,
        Located::Skipped => panic!(
            "this test reads the shared corpus, which {CORPUS_ENV}={SKIP} leaves out: \
             set {CORPUS_ENV} to the corpus folder to run it"
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
