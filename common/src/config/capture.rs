//! `{name}` captures, one syntax for the whole config: git-push's `paths` globs capture a path
//! segment (`apis/{api}/**`, monorepo fan-out), and a release rule's `image:` captures a segment
//! of the repository that its `helmRelease:` reuses (`registry.example.com/{api}` →
//! `helmRelease: {api}`), so one rule releases an image per API.
//!
//! A capture is always a whole `/`-separated segment: a lowercase letter, then lowercase
//! letters, digits or `_`, at most 32 characters, between braces.

use std::collections::BTreeMap;

/// Captured values by name.
pub type Captures = BTreeMap<String, String>;

/// The longest capture name.
const NAME_MAX: usize = 32;

/// The name when `segment` is a capture, `{name}`.
pub fn capture_name(segment: &str) -> Option<&str> {
    let name = segment.strip_prefix('{')?.strip_suffix('}')?;
    let valid = name.len() <= NAME_MAX
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    valid.then_some(name)
}

/// Whether `segment` holds a capture that is not the whole segment (`api-{name}`).
pub fn has_embedded_capture(segment: &str) -> bool {
    capture_name(segment).is_none()
        && segment.match_indices('{').any(|(start, _)| {
            segment[start..]
                .find('}')
                .is_some_and(|end| capture_name(&segment[start..=start + end]).is_some())
        })
}

/// The capture names of `pattern`'s segments, in order.
pub fn capture_names(pattern: &str) -> Vec<&str> {
    pattern.split('/').filter_map(capture_name).collect()
}

/// Matches `value` against `pattern` segment by segment: the same number of segments, literal
/// segments equal, capture segments non-empty (and captured). `None` when it does not match.
pub fn match_segments(pattern: &str, value: &str) -> Option<Captures> {
    let mut captures = Captures::new();
    // No capture: segment by segment is the same as whole (release-changed tries every rule).
    if !pattern.contains('{') {
        return (pattern == value).then_some(captures);
    }
    let mut wanted = pattern.split('/');
    let mut given = value.split('/');
    loop {
        match (wanted.next(), given.next()) {
            (None, None) => return Some(captures),
            (Some(segment), Some(part)) => match capture_name(segment) {
                Some(name) if !part.is_empty() => {
                    captures.insert(name.to_owned(), part.to_owned());
                }
                Some(_) => return None,
                None if segment == part => {}
                None => return None,
            },
            _ => return None,
        }
    }
}

/// `pattern` with each capture segment replaced by its value (a missing one stays as written).
pub fn substitute(pattern: &str, captures: &Captures) -> String {
    pattern
        .split('/')
        .map(|segment| {
            capture_name(segment)
                .and_then(|name| captures.get(name))
                .map_or(segment, String::as_str)
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap; a failure is the point
mod tests {
    use super::*;

    #[test]
    fn names_and_placement() {
        assert_eq!(capture_name("{api}"), Some("api"));
        assert_eq!(capture_name("{api_2}"), Some("api_2"));
        for not in ["{Api}", "{2api}", "{a,b}", "{}", "api", "{api"] {
            assert_eq!(capture_name(not), None, "{not}");
        }
        assert!(has_embedded_capture("api-{api}"));
        assert!(!has_embedded_capture("{api}"));
        assert!(!has_embedded_capture("{a,b}"));
        assert_eq!(
            capture_names("r.example.com/{team}/x/{api}"),
            ["team", "api"]
        );
    }

    #[test]
    fn segments_match_and_substitute() {
        let captures = match_segments(
            "registry.example.com/{team}/{api}",
            "registry.example.com/payments/ledger",
        )
        .unwrap();
        assert_eq!(captures["team"], "payments");
        assert_eq!(captures["api"], "ledger");
        assert_eq!(substitute("{team}/{api}", &captures), "payments/ledger");
        assert_eq!(substitute("apps/{api}", &captures), "apps/ledger");
        for other in [
            "registry.example.com/payments",
            "registry.example.com/payments/ledger/v2",
            "other.example.com/payments/ledger",
            "registry.example.com//ledger",
        ] {
            assert_eq!(
                match_segments("registry.example.com/{team}/{api}", other),
                None,
                "{other}"
            );
        }
    }
}
