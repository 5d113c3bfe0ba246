//! Field paths (`repositories[0].workspaces.shared-data.claim`) and finding their line in the
//! YAML text, so that problems found after parsing point at the file like parse errors do.
//!
//! The position comes from serde_norway itself: a second pass walks the document down the path
//! and fails on purpose at the deepest node that exists; serde_norway stamps a visitor's error
//! with the position of the node being visited. Using the same parser as the real load means
//! anchors, aliases, flow and block styles are located exactly as they were read.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// The path of a field in the config file, printed as `repositories[0].url`.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct FieldPath(Vec<Segment>);

/// One step of a [`FieldPath`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Segment {
    Key(String),
    Index(usize),
}

impl FieldPath {
    /// The document root.
    pub fn root() -> Self {
        Self::default()
    }

    /// This path followed by the mapping key `key`.
    pub fn key(&self, key: &str) -> Self {
        let mut path = self.clone();
        path.0.push(Segment::Key(key.to_owned()));
        path
    }

    /// This path followed by the sequence index `index`.
    pub fn index(&self, index: usize) -> Self {
        let mut path = self.clone();
        path.0.push(Segment::Index(index));
        path
    }

    /// A path as [`FieldPath`]'s `Display` prints it (`repositories[2].branches[0]`), for
    /// checks that name fields as text. A key holding `.` or `[` cannot be told apart from
    /// nesting: it is read as nesting, which still locates its nearest ancestor.
    pub fn parse(text: &str) -> Self {
        let mut path = Self::root();
        for part in text.split('.').filter(|part| !part.is_empty()) {
            let (key, mut rest) = part.split_at(part.find('[').unwrap_or(part.len()));
            if !key.is_empty() {
                path = path.key(key);
            }
            while let Some(inner) = rest.strip_prefix('[') {
                let Some((index, after)) = inner.split_once(']') else {
                    path = path.key(rest);
                    break;
                };
                path = match index.parse() {
                    Ok(index) => path.index(index),
                    Err(_) => path.key(index),
                };
                rest = after;
            }
        }
        path
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) if n == 0 => f.write_str(key)?,
                Segment::Key(key) => write!(f, ".{key}")?,
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// Line and column (both from 1) of the node at `path` in `text`, or of its deepest ancestor
/// present in the text when the field itself is absent (a missing key points at its mapping).
pub fn locate(text: &str, path: &FieldPath) -> (usize, usize) {
    let deserializer = serde_norway::Deserializer::from_str(text);
    match Locate(&path.0).deserialize(deserializer) {
        Ok(()) => (1, 1),
        Err(error) => error
            .location()
            .map_or((1, 1), |location| (location.line(), location.column())),
    }
}

/// The error that stops the walk; its text is never shown, only its position is read.
const FOUND: &str = "located";

fn found<E: de::Error>() -> E {
    E::custom(FOUND)
}

struct Locate<'a>(&'a [Segment]);

impl<'de> DeserializeSeed<'de> for Locate<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        // `deserialize_any` for the target too: `deserialize_ignored_any` skips a node without
        // visiting it, and the error would then carry the parent's position.
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Locate<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML node")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((Segment::Key(wanted), rest)) = self.0.split_first() else {
            return Err(found());
        };
        while let Some(key) = map.next_key::<String>()? {
            if key == *wanted {
                map.next_value_seed(Locate(rest))?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Err(found())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((Segment::Index(wanted), rest)) = self.0.split_first() else {
            return Err(found());
        };
        let mut index = 0;
        loop {
            let more = if index == *wanted {
                seq.next_element_seed(Locate(rest))?.is_some()
            } else {
                seq.next_element::<IgnoredAny>()?.is_some()
            };
            if !more {
                return Err(found());
            }
            index += 1;
        }
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(found())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(found())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(found())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(found())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(found())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(found())
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Err(found())
    }
    fn visit_some<D: Deserializer<'de>>(self, _: D) -> Result<(), D::Error> {
        Err(found())
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(found())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap; a failure is the point
mod tests {
    use super::*;

    const TEXT: &str = "\
namespace: cicd
base: &base
  url: https://example.com/a
repositories:
  - url: https://example.com/b
    branches: [main, \"release/*\"]
  - task: t
    workspaces:
      w: { claim: c }
  - *base
";

    fn at(path: FieldPath) -> (usize, usize) {
        locate(TEXT, &path)
    }

    #[test]
    fn scalars_sequences_and_flow_mappings_are_found() {
        let rules = FieldPath::root().key("repositories");
        assert_eq!(at(FieldPath::root().key("namespace")), (1, 12));
        assert_eq!(at(rules.index(0)), (5, 5));
        assert_eq!(at(rules.index(0).key("branches").index(1)), (6, 22));
        assert_eq!(
            at(rules.index(1).key("workspaces").key("w").key("claim")),
            (9, 19)
        );
    }

    #[test]
    fn absent_fields_point_at_their_nearest_ancestor() {
        let rules = FieldPath::root().key("repositories");
        assert_eq!(at(rules.index(1).key("pipeline")), (7, 5));
        assert_eq!(at(rules.index(7)), (5, 3));
        assert_eq!(at(FieldPath::root().key("server").key("port")), (1, 1));
    }

    #[test]
    fn aliases_point_at_their_anchor() {
        let rules = FieldPath::root().key("repositories");
        assert_eq!(at(rules.index(2).key("url")), (3, 8));
    }

    #[test]
    fn printed_paths_parse_back() {
        for text in [
            "repositories",
            "repositories[2].branches[0]",
            "repositories[0].workspaces.shared-data.claim",
            "a[1][2].b",
        ] {
            assert_eq!(FieldPath::parse(text).to_string(), text);
        }
        assert_eq!(FieldPath::parse(""), FieldPath::root());
        assert_eq!(
            FieldPath::parse("repositories[1].url"),
            FieldPath::root().key("repositories").index(1).key("url")
        );
    }

    #[test]
    fn paths_print_like_serde_paths() {
        let path = FieldPath::root()
            .key("repositories")
            .index(0)
            .key("workspaces")
            .key("shared-data");
        assert_eq!(path.to_string(), "repositories[0].workspaces.shared-data");
    }
}
