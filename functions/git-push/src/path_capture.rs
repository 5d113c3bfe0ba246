//! Path globs that capture a segment: `apis/*/{api}/**` matches `apis/async/launcher/pom.xml`
//! and captures `api = launcher`. A rule whose `paths` capture starts one run per distinct set of
//! captured values among the changed paths (monorepo fan-out); its params use them as
//! `{{ paths.api }}`.
//!
//! A capture is a whole path segment `{name}` (the syntax of
//! [`tekflux_common::config::capture`]); it matches one non-empty segment, like `*`. Every other segment is a glob as
//! in a plain `paths` entry (`*`, `?`, `[...]`, `{a,b}` within the segment), and a segment `**`
//! matches any number of segments. `{a,b}` with a comma stays globset's alternation, so a
//! capture never changes what an existing pattern means unless it is a lone `{name}`.
//!
//! Captured values are text from the push: they reach runs only as param values and in the
//! `tekflux.dev/paths` annotation (JSON), never unescaped in names or labels.

use globset::{GlobBuilder, GlobMatcher};
use tekflux_common::config::capture::{capture_name, has_embedded_capture};

pub use tekflux_common::config::capture::Captures;

/// A `paths` glob with at least one `{name}` capture.
#[derive(Debug, Clone)]
pub struct CapturePattern {
    source: String,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone)]
enum Segment {
    /// `**`: any number of segments, none included.
    AnyDepth,
    /// `{name}`: one non-empty segment, captured.
    Capture(String),
    /// A glob within one segment.
    Glob(GlobMatcher),
}

impl CapturePattern {
    /// Parses `source`: `Ok(None)` when it captures nothing (a plain glob), an error naming the
    /// problem when a capture is misplaced, repeated or a segment is not a valid glob.
    pub fn parse(source: &str) -> Result<Option<CapturePattern>, String> {
        // A plain glob is left to the rule's glob set (and its errors reported there, once).
        if !source
            .split('/')
            .any(|segment| capture_name(segment).is_some() || has_embedded_capture(segment))
        {
            return Ok(None);
        }
        let mut segments = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        for segment in source.split('/') {
            if let Some(name) = capture_name(segment) {
                if names.contains(&name) {
                    return Err(format!("capture {{{name}}} appears twice"));
                }
                names.push(name);
                segments.push(Segment::Capture(name.to_owned()));
            } else if has_embedded_capture(segment) {
                return Err(format!(
                    "segment {segment:?}: a capture must be a whole path segment, like \
                     `apis/{{api}}/**`"
                ));
            } else if segment == "**" {
                segments.push(Segment::AnyDepth);
            } else {
                let glob = GlobBuilder::new(segment)
                    .literal_separator(true)
                    .backslash_escape(true)
                    .build()
                    .map_err(|error| format!("invalid glob {segment:?}: {}", error.kind()))?;
                segments.push(Segment::Glob(glob.compile_matcher()));
            }
        }
        Ok(Some(CapturePattern {
            source: source.to_owned(),
            segments,
        }))
    }

    /// The capture names, in order.
    pub fn names(&self) -> Vec<&str> {
        self.segments
            .iter()
            .filter_map(|segment| match segment {
                Segment::Capture(name) => Some(name.as_str()),
                _ => None,
            })
            .collect()
    }

    /// The pattern as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The captures when `path` matches.
    pub fn captures(&self, path: &str) -> Option<Captures> {
        let parts: Vec<&str> = path.split('/').collect();
        let mut captures = Captures::new();
        match_from(&self.segments, &parts, &mut captures).then_some(captures)
    }
}

/// Matches `segments` against `parts`, filling `captures` on success. `**` tries the fewest
/// segments first, so the captures of the first match found are kept.
fn match_from(segments: &[Segment], parts: &[&str], captures: &mut Captures) -> bool {
    let Some((segment, rest)) = segments.split_first() else {
        return parts.is_empty();
    };
    match segment {
        Segment::AnyDepth => (0..=parts.len()).any(|skip| {
            let mut attempt = captures.clone();
            let matched = match_from(rest, &parts[skip..], &mut attempt);
            if matched {
                *captures = attempt;
            }
            matched
        }),
        Segment::Capture(name) => match parts.split_first() {
            Some((part, tail)) if !part.is_empty() => {
                captures.insert(name.clone(), (*part).to_owned());
                match_from(rest, tail, captures)
            }
            _ => false,
        },
        Segment::Glob(glob) => match parts.split_first() {
            Some((part, tail)) if glob.is_match(part) => match_from(rest, tail, captures),
            _ => false,
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap; a failure is the point
mod tests {
    use super::*;

    fn pattern(source: &str) -> CapturePattern {
        CapturePattern::parse(source).unwrap().unwrap()
    }

    fn captured(source: &str, path: &str) -> Option<Vec<(String, String)>> {
        pattern(source)
            .captures(path)
            .map(|captures| captures.into_iter().collect())
    }

    fn pair(name: &str, value: &str) -> (String, String) {
        (name.to_owned(), value.to_owned())
    }

    #[test]
    fn a_segment_is_captured_where_it_stands() {
        let source = "apis/*/{api}/**";
        assert_eq!(
            captured(source, "apis/apis-async/api-launcher/pom.xml"),
            Some(vec![pair("api", "api-launcher")])
        );
        assert_eq!(
            captured(source, "apis/apis-async/api-launcher/src/main/App.java"),
            Some(vec![pair("api", "api-launcher")])
        );
        // `**` matches no segment too: a file directly in the API's directory.
        assert_eq!(
            captured(source, "apis/sync/gateway"),
            Some(vec![pair("api", "gateway")])
        );
        assert_eq!(captured(source, "apis/async"), None);
        assert_eq!(captured(source, "docs/apis/async/x/y"), None);
        assert_eq!(
            captured(source, "apis/async//pom.xml"),
            None,
            "empty segment"
        );
    }

    #[test]
    fn several_captures_and_globs_around_them() {
        let source = "{team}/services/{service}/*.yaml";
        assert_eq!(
            captured(source, "payments/services/ledger/deploy.yaml"),
            Some(vec![pair("service", "ledger"), pair("team", "payments")])
        );
        assert_eq!(
            captured(source, "payments/services/ledger/deploy.json"),
            None
        );
        assert_eq!(
            captured("apis/{api}/{src,test}/**", "apis/x/test/a"),
            Some(vec![pair("api", "x")])
        );
    }

    #[test]
    fn hostile_segments_are_captured_as_text() {
        let value = "a$(curl${IFS}x|sh) b";
        assert_eq!(
            captured("apis/{api}/**", &format!("apis/{value}/pom.xml")),
            Some(vec![pair("api", value)])
        );
    }

    #[test]
    fn plain_globs_capture_nothing_and_misplaced_captures_are_refused() {
        assert!(CapturePattern::parse("docs/**").unwrap().is_none());
        assert!(CapturePattern::parse("{a,b}/**").unwrap().is_none());
        for bad in ["apis/api-{api}/**", "apis/{api}/{api}", "apis/[/{api}"] {
            assert!(CapturePattern::parse(bad).is_err(), "{bad}");
        }
        // Not a capture name: stays a glob (a one-branch alternation).
        assert!(CapturePattern::parse("apis/{Api}/**").unwrap().is_none());
        assert_eq!(pattern("x/{api}/{team}").names(), vec!["api", "team"]);
    }
}
