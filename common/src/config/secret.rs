//! Secret references (`env:NAME`, `file:/path`) and their resolved values.
//!
//! The config file is a ConfigMap, which anyone who can read the namespace can read, so it names
//! where a secret is rather than holding it: literal values are refused on purpose.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

use super::env::Env;

/// Prefix of a reference to an environment variable.
pub const ENV_PREFIX: &str = "env:";
/// Prefix of a reference to a file (a mounted Kubernetes Secret, Vault Agent or CSI volume).
pub const FILE_PREFIX: &str = "file:";

/// Where a secret's value comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable, by name.
    Env(String),
    /// A file, by path.
    File(PathBuf),
    /// A value given in code (tests); the string is a label, not the value.
    Literal(String),
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Env(name) => write!(f, "{ENV_PREFIX}{name}"),
            SecretSource::File(path) => write!(f, "{FILE_PREFIX}{}", path.display()),
            SecretSource::Literal(label) => write!(f, "literal:{label}"),
        }
    }
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A secret named in the config file and resolved at load time; never printed.
///
/// `Debug` and `Display` show only where it comes from (`Secret(env:NAME)`).
#[derive(Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct Secret {
    source: SecretSource,
    /// `None` until resolved; a loaded config has every secret resolved.
    value: Option<Vec<u8>>,
}

impl Secret {
    /// Parses a reference (`env:NAME` or `file:/path`) without resolving it.
    ///
    /// The error never repeats `reference`, because a user who wrote a literal secret where a
    /// reference belongs would otherwise see it echoed into logs.
    pub fn parse(reference: &str) -> Result<Self, String> {
        let source = if let Some(name) = reference.strip_prefix(ENV_PREFIX) {
            if !is_env_name(name) {
                return Err(format!(
                    "`{ENV_PREFIX}` must be followed by an environment variable name \
                     (letters, digits and `_`, not starting with a digit)"
                ));
            }
            SecretSource::Env(name.to_owned())
        } else if let Some(path) = reference.strip_prefix(FILE_PREFIX) {
            if path.is_empty() {
                return Err(format!("`{FILE_PREFIX}` must be followed by a file path"));
            }
            SecretSource::File(PathBuf::from(path))
        } else {
            return Err(format!(
                "a secret must be a reference: `{ENV_PREFIX}NAME` (an environment variable) or \
                 `{FILE_PREFIX}/path` (a mounted file); literal secrets are refused because the \
                 config file is a ConfigMap that is not secret"
            ));
        };
        Ok(Self {
            source,
            value: None,
        })
    }

    /// A resolved secret from an environment variable's value, for overrides such as
    /// `TEKFLUX_GITHUB_SECRET` where the variable itself is the reference.
    pub fn from_env_value(variable: &str, value: &str) -> Self {
        Self {
            source: SecretSource::Env(variable.to_owned()),
            value: Some(value.as_bytes().to_vec()),
        }
    }

    /// A resolved secret holding `value`, shown as `literal:<label>`; for tests of other crates.
    pub fn literal(label: &str, value: impl Into<Vec<u8>>) -> Self {
        Self {
            source: SecretSource::Literal(label.to_owned()),
            value: Some(value.into()),
        }
    }

    /// Where the value comes from.
    pub fn source(&self) -> &SecretSource {
        &self.source
    }

    /// The value. Empty for a secret that was never resolved, which a loaded config never has.
    pub fn expose(&self) -> &[u8] {
        self.value.as_deref().unwrap_or_default()
    }

    /// Whether the value has been read.
    pub fn is_resolved(&self) -> bool {
        self.value.is_some()
    }

    /// Reads the value from `env` or the file. Trailing newlines are trimmed, since Secret
    /// files made with `echo` or `kubectl create secret --from-file` often end in one and no
    /// webhook secret does. The error names the variable or path but never the value.
    pub fn resolve(&mut self, env: &Env) -> Result<(), String> {
        if self.value.is_some() {
            return Ok(());
        }
        let mut value = match &self.source {
            SecretSource::Env(name) => match env.get(name) {
                Some(value) => value.as_bytes().to_vec(),
                None => return Err(format!("environment variable {name} is not set")),
            },
            SecretSource::File(path) => std::fs::read(path)
                .map_err(|error| format!("cannot read secret file {}: {error}", path.display()))?,
            SecretSource::Literal(label) => {
                return Err(format!("literal secret {label} has no value"));
            }
        };
        while value.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            value.pop();
        }
        if value.is_empty() {
            return Err(format!("secret {} is empty", self.source));
        }
        self.value = Some(value);
        Ok(())
    }
}

impl TryFrom<String> for Secret {
    type Error = String;
    fn try_from(reference: String) -> Result<Self, Self::Error> {
        Self::parse(&reference)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({})", self.source)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap; a failure is the point
mod tests {
    use super::*;

    #[test]
    fn references_parse() {
        assert_eq!(
            Secret::parse("env:GITHUB_SECRET").unwrap().source(),
            &SecretSource::Env("GITHUB_SECRET".into())
        );
        assert_eq!(
            Secret::parse("file:/etc/tekflux/token").unwrap().source(),
            &SecretSource::File("/etc/tekflux/token".into())
        );
    }

    #[test]
    fn literals_are_refused_without_echoing_them() {
        let error = Secret::parse("s3cr3t-value").err().unwrap();
        assert!(!error.contains("s3cr3t"), "{error}");
        assert!(
            error.contains("env:NAME") && error.contains("file:/path"),
            "{error}"
        );
        for bad in ["env:", "env:1X", "env:A B", "file:", "ENV:X"] {
            assert!(Secret::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn debug_and_display_hide_the_value() {
        let mut secret = Secret::parse("env:HOOK").unwrap();
        secret
            .resolve(&Env::new().with("HOOK", "hunter2\n"))
            .unwrap();
        assert_eq!(secret.expose(), b"hunter2");
        assert_eq!(format!("{secret:?}"), "Secret(env:HOOK)");
        assert_eq!(secret.to_string(), "Secret(env:HOOK)");
    }

    #[test]
    fn missing_variable_is_named() {
        let mut secret = Secret::parse("env:HOOK").unwrap();
        let error = secret.resolve(&Env::new()).unwrap_err();
        assert!(error.contains("HOOK"), "{error}");
        assert!(!secret.is_resolved());
        assert_eq!(secret.expose(), b"");
    }

    #[test]
    fn empty_secret_is_an_error() {
        let mut secret = Secret::parse("env:HOOK").unwrap();
        assert!(secret.resolve(&Env::new().with("HOOK", "\n")).is_err());
    }
}
