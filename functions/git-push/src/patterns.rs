//! The branch, tag and path globs of one rule, where `*` stays within a `/`-separated segment.
//!
//! Plain names (`main`) and a plain name followed by one `*` (`release/*`, `v*`) are matched as
//! strings; only the other globs go into a `GlobSet`. Building a set's regex is most of what a
//! config of many rules costs at start (BENCHMARKS.md, "Cold start"), and most branch and tag
//! globs are of the two simple shapes. Both ways answer alike: a test holds the string matching
//! to globset's answers on the same globs and candidates.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

/// What makes a glob more than a plain name: wildcards, classes, alternatives and the escape
/// (globs are built with `backslash_escape`).
const GLOB_SYNTAX: &[char] = &['*', '?', '[', ']', '{', '}', '\\'];

/// A glob matched without a regex.
#[derive(Debug, Clone)]
enum Simple {
    /// No glob syntax: the candidate is the name.
    Exact(String),
    /// A name and one `*`: the candidate starts with the name, and the rest holds no `/`.
    SegmentPrefix(String),
}

impl Simple {
    fn of(source: &str) -> Option<Simple> {
        if !source.contains(GLOB_SYNTAX) {
            return Some(Simple::Exact(source.to_owned()));
        }
        let prefix = source.strip_suffix('*')?;
        (!prefix.contains(GLOB_SYNTAX)).then(|| Simple::SegmentPrefix(prefix.to_owned()))
    }

    fn matches(&self, candidate: &str) -> bool {
        match self {
            Simple::Exact(name) => candidate == name,
            Simple::SegmentPrefix(prefix) => candidate
                .strip_prefix(prefix.as_str())
                .is_some_and(|rest| !rest.contains('/')),
        }
    }
}

/// A list of globs and their source text (for explanations).
#[derive(Debug, Clone, Default)]
pub(crate) struct Patterns {
    simple: Vec<Simple>,
    /// The globs of other shapes; `None` when there are none.
    set: Option<GlobSet>,
    source: Vec<String>,
}

/// A glob that does not compile: its index in the list (`None` when the list as a whole does
/// not) and why.
pub(crate) type PatternError = (Option<usize>, String);

impl Patterns {
    /// Compiles `sources`, reporting every glob that does not compile.
    pub(crate) fn compile(sources: &[String]) -> Result<Patterns, Vec<PatternError>> {
        let mut simple = Vec::new();
        let mut set = GlobSetBuilder::new();
        let mut in_set = 0;
        let mut errors = Vec::new();
        for (index, source) in sources.iter().enumerate() {
            // Parsed for every glob, simple or not, so that what is refused never depends on
            // how it is matched.
            match GlobBuilder::new(source)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
            {
                Ok(glob) => match Simple::of(source) {
                    Some(matcher) => simple.push(matcher),
                    None => {
                        set.add(glob);
                        in_set += 1;
                    }
                },
                Err(e) => errors.push((
                    Some(index),
                    format!("invalid glob {source:?}: {}", e.kind()),
                )),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let set = if in_set == 0 {
            None
        } else {
            let built = set
                .build()
                .map_err(|e| vec![(None, format!("the globs do not compile together: {e}"))])?;
            Some(built)
        };
        Ok(Patterns {
            simple,
            set,
            source: sources.to_vec(),
        })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.source.is_empty()
    }

    pub(crate) fn matches(&self, candidate: &str) -> bool {
        self.simple.iter().any(|glob| glob.matches(candidate))
            || self.set.as_ref().is_some_and(|set| set.is_match(candidate))
    }

    pub(crate) fn listed(&self) -> String {
        format!("[{}]", self.source.join(", "))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap; a failure is the point
mod tests {
    use super::*;

    const GLOBS: &[&str] = &[
        "main",
        "",
        "release/*",
        "release/",
        "v*",
        "*",
        "**",
        "feature/**",
        "re?ease/*",
        "{main,dev}",
        "[mr]ain",
        "a\\*",
        "x/*/y",
        "src/**/*.rs",
        "docs/*.md",
        "release/*-rc",
        "*/stable",
    ];

    const CANDIDATES: &[&str] = &[
        "",
        "main",
        "mai",
        "mainline",
        "Main",
        "dev",
        "rain",
        "release",
        "release/",
        "release/1.0",
        "release/1.0/hotfix",
        "release/2-rc",
        "relase/1",
        "v",
        "v1.2.3",
        "v1/x",
        "feature/a",
        "feature/a/b",
        "feature",
        "a*",
        "ab",
        "x/1/y",
        "x/y",
        "src/lib.rs",
        "src/a/b/c.rs",
        "docs/readme.md",
        "docs/a/readme.md",
        "1.0/stable",
        "/",
        "a/",
    ];

    fn globset_answer(glob: &str, candidate: &str) -> bool {
        GlobBuilder::new(glob)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .unwrap()
            .compile_matcher()
            .is_match(candidate)
    }

    #[test]
    fn every_glob_answers_as_globset_does() {
        for glob in GLOBS {
            let patterns = Patterns::compile(&[(*glob).to_owned()]).unwrap();
            for candidate in CANDIDATES {
                assert_eq!(
                    patterns.matches(candidate),
                    globset_answer(glob, candidate),
                    "glob {glob:?}, candidate {candidate:?}"
                );
            }
        }
    }

    #[test]
    fn a_list_matches_when_any_glob_does_whichever_way_it_is_matched() {
        let list: Vec<String> = ["main", "release/*", "{hot,cold}fix/*", "src/**"]
            .map(str::to_owned)
            .to_vec();
        let patterns = Patterns::compile(&list).unwrap();
        assert_eq!(patterns.simple.len(), 2, "main and release/* need no regex");
        assert!(patterns.set.is_some());
        for candidate in CANDIDATES
            .iter()
            .chain(&["hotfix/1", "coldfix/x/y", "src/a/b"])
        {
            let expected = list.iter().any(|glob| globset_answer(glob, candidate));
            assert_eq!(patterns.matches(candidate), expected, "{candidate:?}");
        }
        assert_eq!(
            patterns.listed(),
            "[main, release/*, {hot,cold}fix/*, src/**]"
        );
    }

    #[test]
    fn simple_globs_build_no_set() {
        let patterns = Patterns::compile(&["main".to_owned(), "v*".to_owned()]).unwrap();
        assert!(patterns.set.is_none());
        assert!(Patterns::compile(&[]).unwrap().is_empty());
    }

    #[test]
    fn every_invalid_glob_is_named_by_its_index() {
        let list = ["main", "{unclosed", "ok/*", "[z-a]"].map(str::to_owned);
        let errors = Patterns::compile(&list).unwrap_err();
        let indices: Vec<_> = errors.iter().map(|(index, _)| *index).collect();
        assert_eq!(indices, [Some(1), Some(3)]);
        assert!(
            errors[0].1.starts_with("invalid glob \"{unclosed\""),
            "{errors:?}"
        );
    }
}
