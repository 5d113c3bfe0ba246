//! ObjectMeta checks, as the API server makes them on every object: names, namespaces, labels
//! and annotations.

use super::*;

/// Checks ObjectMeta basics: `name` (or `generateName`) present and a DNS-1123 subdomain of at most
/// 253 characters, `namespace` a DNS-1123 label, label keys and values well formed (values at most
/// 63 characters), annotations string-valued.
pub fn validate_metadata(meta: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let Some(meta) = meta.as_object() else {
        return vec![FieldError::new("metadata", "must be an object")];
    };
    let name = meta.get("name").and_then(Value::as_str).unwrap_or("");
    let generate = meta
        .get("generateName")
        .and_then(Value::as_str)
        .unwrap_or("");
    if name.is_empty() {
        if generate.is_empty() {
            errors.push(FieldError::new(
                "metadata.name",
                "Required value: name or generateName is required",
            ));
        } else if let Some(msg) = dns1123_subdomain(&format!("{generate}a")) {
            errors.push(FieldError::new("metadata.generateName", msg));
        }
    } else if let Some(msg) = dns1123_subdomain(name) {
        errors.push(FieldError::new("metadata.name", msg));
    }
    if let Some(ns) = meta.get("namespace").and_then(Value::as_str)
        && !ns.is_empty()
        && let Some(msg) = dns1123_label(ns)
    {
        errors.push(FieldError::new("metadata.namespace", msg));
    }
    match meta.get("labels") {
        None | Some(Value::Null) => {}
        Some(Value::Object(labels)) => {
            for (k, v) in labels {
                let path = format!("metadata.labels[{k}]");
                if let Some(msg) = qualified_name(k) {
                    errors.push(FieldError::new(&path, format!("invalid label key: {msg}")));
                }
                match v.as_str() {
                    Some(v) => {
                        if let Some(msg) = label_value(v) {
                            errors.push(FieldError::new(&path, msg));
                        }
                    }
                    None => errors.push(FieldError::new(&path, "must be a string")),
                }
            }
        }
        Some(_) => errors.push(FieldError::new("metadata.labels", "must be an object")),
    }
    match meta.get("annotations") {
        None | Some(Value::Null) => {}
        Some(Value::Object(annotations)) => {
            for (k, v) in annotations {
                let path = format!("metadata.annotations[{k}]");
                if let Some(msg) = qualified_name(k) {
                    errors.push(FieldError::new(&path, format!("invalid key: {msg}")));
                }
                if !v.is_string() {
                    errors.push(FieldError::new(&path, "must be a string"));
                }
            }
        }
        Some(_) => errors.push(FieldError::new("metadata.annotations", "must be an object")),
    }
    errors
}

pub(super) fn is_alnum_lower(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// `None` when `s` is a DNS-1123 label (≤63, lowercase alphanumerics and '-', alphanumeric ends).
pub fn dns1123_label(s: &str) -> Option<String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| is_alnum_lower(c) || c == '-')
        && s.starts_with(is_alnum_lower)
        && s.ends_with(is_alnum_lower);
    (!ok).then(|| {
        format!(
            "Invalid value: {s:?}: a lowercase RFC 1123 label must consist of at most 63 lower case \
             alphanumeric characters or '-', and must start and end with an alphanumeric character"
        )
    })
}

/// `None` when `s` is a DNS-1123 subdomain (≤253, dot-separated DNS-1123 labels).
pub fn dns1123_subdomain(s: &str) -> Option<String> {
    let ok =
        !s.is_empty() && s.len() <= 253 && s.split('.').all(|part| dns1123_label(part).is_none());
    (!ok).then(|| {
        format!(
            "Invalid value: {s:?}: a lowercase RFC 1123 subdomain must consist of at most 253 lower \
             case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric \
             character"
        )
    })
}

/// `None` when `s` is a valid label value (empty, or ≤63 of `[A-Za-z0-9_.-]` with alphanumeric
/// ends).
pub fn label_value(s: &str) -> Option<String> {
    let alnum = |c: char| c.is_ascii_alphanumeric();
    let ok = s.is_empty()
        || (s.len() <= 63
            && s.chars().all(|c| alnum(c) || matches!(c, '-' | '_' | '.'))
            && s.starts_with(alnum)
            && s.ends_with(alnum));
    (!ok).then(|| {
        format!(
            "Invalid value: {s:?}: a valid label must be an empty string or consist of at most 63 \
             alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric \
             character"
        )
    })
}

/// `None` when `s` is a qualified name (`[prefix/]name`, prefix a DNS subdomain, name like a
/// non-empty label value).
pub fn qualified_name(s: &str) -> Option<String> {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(p) = prefix
        && let Some(msg) = dns1123_subdomain(p)
    {
        return Some(format!("prefix part {msg}"));
    }
    if name.is_empty() {
        return Some(format!("Invalid value: {s:?}: name part must be non-empty"));
    }
    label_value(name)
}
