//! The syntax of the names and labels tekflux writes on runs: label values and keys, rule
//! names, and the keys tekflux keeps for itself.
//!
//! Shared by rule compilation ([`crate::rule`], which refuses what a run could not carry) and
//! the run builder ([`crate::run`], which sanitises what a push brings).

use sha2::{Digest, Sha256};

/// A DNS-1123 label: 1–63 of `[a-z0-9-]`, starting and ending alphanumeric (the config's check).
pub use tekflux_common::config::is_dns1123_label;
use tekflux_common::run_contract::MANAGED_BY_LABEL;

const RESERVED_PREFIX: &str = "tekflux.dev/";

/// `value` as a label value: characters outside `[A-Za-z0-9._-]` become `-`, leading and trailing
/// non-alphanumerics are dropped, and values longer than 63 characters are cut and given a hash
/// suffix so distinct long values stay distinct. Empty when nothing is left.
pub fn sanitize_label_value(value: &str) -> String {
    let replaced: String = value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = replaced.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if trimmed.len() <= 63 {
        return trimmed.to_owned();
    }
    let hash = hex::encode(Sha256::digest(value.as_bytes()));
    let head = trimmed[..63 - 9].trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    format!("{head}-{}", &hash[..8])
}

/// A valid label value: empty, or at most 63 of `[A-Za-z0-9._-]` starting and ending
/// alphanumeric.
pub fn is_label_value(value: &str) -> bool {
    value.is_empty()
        || (value.len() <= 63
            && value.starts_with(|c: char| c.is_ascii_alphanumeric())
            && value.ends_with(|c: char| c.is_ascii_alphanumeric())
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
}

/// A valid label key: an optional DNS-1123 subdomain prefix and `/`, then a non-empty name with
/// the value syntax.
pub fn is_label_key(key: &str) -> bool {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let prefix_ok = prefix
        .is_none_or(|p| !p.is_empty() && p.len() <= 253 && p.split('.').all(is_dns1123_label));
    prefix_ok && !name.is_empty() && is_label_value(name)
}

/// Keys tekflux sets itself, which rules may not set.
pub fn is_reserved_label(key: &str) -> bool {
    key.starts_with(RESERVED_PREFIX) || key == MANAGED_BY_LABEL
}

/// A rule name: at most 63 of `[a-z0-9.-]`, starting and ending alphanumeric, so it is a valid
/// label value and Pipeline or Task names (DNS-1123 subdomains) can serve as rule names.
pub fn is_rule_name(value: &str) -> bool {
    !value.is_empty() && value.len() <= 63 && value.split('.').all(is_dns1123_label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_sanitised() {
        assert_eq!(sanitize_label_value("feature/x"), "feature-x");
        assert_eq!(sanitize_label_value("/-ü-"), "");
        assert_eq!(sanitize_label_value("$(rm -rf /)"), "rm--rf");
        let long = "a".repeat(100);
        let cut = sanitize_label_value(&long);
        assert_eq!(cut.len(), 63);
        assert!(is_label_value(&cut));
        assert_ne!(cut, sanitize_label_value(&"a".repeat(101)));
    }

    #[test]
    fn label_keys() {
        assert!(is_label_key("team"));
        assert!(is_label_key("example.com/team"));
        assert!(!is_label_key("/team"));
        assert!(!is_label_key("Example_com/team"));
        assert!(!is_label_key("a/b/c"));
    }
}
