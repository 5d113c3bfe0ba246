//! Secret references (`env:NAME`, `file:/path`) and their resolved values. Owned by the config work.

use serde::Deserialize;

/// A secret named in the config file and resolved at start; never printed.
#[derive(Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct Secret {
    reference: String,
}

impl TryFrom<String> for Secret {
    type Error = String;
    fn try_from(reference: String) -> Result<Self, Self::Error> {
        Ok(Self { reference })
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({})", self.reference)
    }
}
