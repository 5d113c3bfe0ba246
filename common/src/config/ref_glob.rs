//! Branch and tag globs of `releases[].from`, matched against the exact branch or tag a run was
//! created for (git-push's `tekflux.dev/ref` annotation, not the sanitised label).
//!
//! `*` matches any characters within one `/`-separated segment, `**` any characters across
//! segments, `?` one character other than `/`; everything else is literal, as in
//! `repositories[].branches`. Character classes and `{a,b}` alternatives are refused rather
//! than half-supported: git ref names cannot hold `[`, and a list says `{a,b}` as plainly.

use std::fmt;

/// Characters refused in a glob: git forbids them in ref names (`git check-ref-format`), so a
/// glob holding one is a mistake (or a character class, which these globs do not have).
const REFUSED: &[char] = &['[', ']', '{', '}', '\\', '~', '^', ':'];

/// One compiled branch or tag glob.
#[derive(Clone, PartialEq, Eq)]
pub struct RefGlob {
    source: String,
    tokens: Vec<Token>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Literal(char),
    /// `?`: one character, not `/`.
    One,
    /// `*`: any characters within a segment.
    Star,
    /// `**`: any characters, `/` included.
    Stars,
}

impl fmt::Debug for RefGlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RefGlob({:?})", self.source)
    }
}

impl RefGlob {
    /// Compiles `pattern`.
    ///
    /// # Errors
    /// A message saying what is wrong with it (empty, whitespace, a character git refuses in
    /// refs, `***`, or a `refs/` prefix, since globs name branches and tags, not refs).
    pub fn parse(pattern: &str) -> Result<Self, String> {
        if pattern.is_empty() {
            return Err("an empty glob matches nothing".to_owned());
        }
        if pattern.starts_with("refs/") {
            return Err(format!(
                "{pattern:?} names a ref; name the branch or tag itself (`main`, not \
                 `refs/heads/main`)"
            ));
        }
        let mut tokens = Vec::with_capacity(pattern.len());
        let mut chars = pattern.chars().peekable();
        while let Some(c) = chars.next() {
            if c.is_whitespace() || c.is_control() || REFUSED.contains(&c) {
                return Err(format!(
                    "{c:?} in {pattern:?} is not allowed: git refs cannot hold it, and the only \
                     wildcards are `*`, `**` and `?`"
                ));
            }
            let token = match c {
                '*' => {
                    let mut stars = 1;
                    while chars.next_if_eq(&'*').is_some() {
                        stars += 1;
                    }
                    match stars {
                        1 => Token::Star,
                        2 => Token::Stars,
                        _ => {
                            return Err(format!(
                                "{pattern:?} has `{}`; use `*` (within a segment) or `**` \
                                 (across `/`)",
                                "*".repeat(stars)
                            ));
                        }
                    }
                }
                '?' => Token::One,
                c => Token::Literal(c),
            };
            tokens.push(token);
        }
        Ok(Self {
            source: pattern.to_owned(),
            tokens,
        })
    }

    /// The glob as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether `name` (a branch or tag name) matches. Linear in the glob times the name.
    pub fn matches(&self, name: &str) -> bool {
        let name: Vec<char> = name.chars().collect();
        // matched[j]: the tokens seen so far match name[..j].
        let mut matched = vec![false; name.len() + 1];
        matched[0] = true;
        for token in &self.tokens {
            let mut next = vec![false; name.len() + 1];
            match token {
                Token::Star | Token::Stars => {
                    let crosses = *token == Token::Stars;
                    let mut reachable = false;
                    for j in 0..=name.len() {
                        // A star may start where the previous tokens ended, and extends over
                        // every following character it may swallow.
                        reachable = matched[j] || (reachable && (crosses || name[j - 1] != '/'));
                        next[j] = reachable;
                    }
                }
                Token::One | Token::Literal(_) => {
                    for j in 1..=name.len() {
                        let fits = match token {
                            Token::One => name[j - 1] != '/',
                            Token::Literal(c) => name[j - 1] == *c,
                            Token::Star | Token::Stars => false,
                        };
                        next[j] = matched[j - 1] && fits;
                    }
                }
            }
            matched = next;
        }
        matched[name.len()]
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn matches(pattern: &str, name: &str) -> bool {
        RefGlob::parse(pattern).unwrap().matches(name)
    }

    #[test]
    fn stars_stay_within_segments_and_double_stars_cross_them() {
        assert!(matches("main", "main"));
        assert!(!matches("main", "main2"));
        assert!(!matches("main", "mai"));
        assert!(matches("release/*", "release/1.0"));
        assert!(!matches("release/*", "release/1.0/hotfix"));
        assert!(!matches("release/*", "release"));
        assert!(matches("release/**", "release/1.0/hotfix"));
        assert!(matches("v*", "v1.2.3"));
        assert!(!matches("v*", "x/v1"));
        assert!(matches("**", "feature/a/b"));
        assert!(matches("*", "feature"));
        assert!(!matches("*", "feature/a"));
        assert!(matches("v?.*", "v1.2"));
        assert!(!matches("v?", "v/"));
        assert!(matches("*-rc*", "1.0-rc1"));
        assert!(matches("a*b*c", "abxbc"));
        assert!(!matches("a*b*c", "abxbd"));
    }

    #[test]
    fn globs_that_cannot_name_a_branch_or_tag_are_refused() {
        for bad in [
            "",
            "refs/heads/main",
            "release/[0-9]*",
            "{main,develop}",
            "main branch",
            "a\\b",
            "v***",
            "HEAD~1",
        ] {
            assert!(RefGlob::parse(bad).is_err(), "{bad:?}");
        }
    }
}
