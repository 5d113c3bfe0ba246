//! The environment, as an injectable map: the process's in `main`, a literal map in tests.

use std::collections::BTreeMap;

/// Environment variables the config reads (overrides, `env:` secrets, `TEKFLUX_CONFIG`).
///
/// Tests build one from a map instead of mutating the process environment, which is racy
/// (and `unsafe` in edition 2024). Debug prints names only: values are often secrets.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Env {
    vars: BTreeMap<String, String>,
}

impl Env {
    /// An empty environment.
    pub fn new() -> Self {
        Self::default()
    }

    /// The process's environment. Variables whose name or value is not UTF-8 are left out:
    /// none of tekflux's variables can be such, and a secret that is must come from a `file:`.
    pub fn from_process() -> Self {
        std::env::vars_os()
            .filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)))
            .collect()
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    /// The value of `name` if it is set and not empty: Kubernetes manifests often carry
    /// `value: ""` for "not set", so an empty override counts as none.
    pub fn get_non_empty(&self, name: &str) -> Option<&str> {
        self.get(name).filter(|value| !value.is_empty())
    }

    /// The names of every variable set, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.vars.keys().map(String::as_str)
    }

    /// Returns this environment with `name` set to `value` (for tests and the CLI).
    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.vars.insert(name.into(), value.into());
        self
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Env {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self {
            vars: iter
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }
}

impl From<BTreeMap<String, String>> for Env {
    fn from(vars: BTreeMap<String, String>) -> Self {
        Self { vars }
    }
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.vars.keys()).finish()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap; a failure is the point
mod tests {
    use super::*;

    #[test]
    fn debug_shows_names_not_values() {
        let env = Env::new().with("TOKEN", "hunter2");
        let debug = format!("{env:?}");
        assert!(debug.contains("TOKEN"));
        assert!(!debug.contains("hunter2"));
    }

    #[test]
    fn empty_values_count_as_unset_for_overrides() {
        let env = Env::new().with("A", "").with("B", "x");
        assert_eq!(env.get("A"), Some(""));
        assert_eq!(env.get_non_empty("A"), None);
        assert_eq!(env.get_non_empty("B"), Some("x"));
    }
}
