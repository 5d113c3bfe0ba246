//! What the server checks and sets on every object it stores: its identity (group, version,
//! namespace, name), metadata validity, its CRD schema, and the server-set metadata fields.

use super::*;

pub(super) fn group_version(object: &Value) -> (String, String) {
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    match api_version.rsplit_once('/') {
        Some((g, v)) => (g.to_owned(), v.to_owned()),
        None => (String::new(), api_version.to_owned()),
    }
}

pub(super) fn meta_str<'a>(object: &'a Value, key: &str) -> &'a str {
    object
        .get("metadata")
        .and_then(|m| m.get(key))
        .and_then(Value::as_str)
        .unwrap_or("")
}

pub(super) fn next_rv(inner: &mut Inner) -> u64 {
    inner.resource_version += 1;
    inner.resource_version
}

pub(super) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub(super) fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.is_object() {
        *object = json!({});
    }
    let Value::Object(map) = object else {
        unreachable!("made an object above")
    };
    let meta = map.entry("metadata").or_insert_with(|| json!({}));
    if !meta.is_object() {
        *meta = json!({});
    }
    match meta {
        Value::Object(m) => m,
        _ => unreachable!("made an object above"),
    }
}

/// Sets uid, creationTimestamp (kept from `old`), resourceVersion and generation.
pub(super) fn fill_server_metadata(
    object: &mut Value,
    old: Option<&Value>,
    rv: u64,
    generation: u64,
) {
    let old_meta = old.and_then(|o| o.get("metadata"));
    let keep = |k: &str| old_meta.and_then(|m| m.get(k)).cloned();
    let uid = keep("uid").unwrap_or_else(|| json!(uuid::Uuid::new_v4().to_string()));
    let created = keep("creationTimestamp").unwrap_or_else(|| json!(now()));
    let meta = metadata_mut(object);
    meta.insert("uid".into(), uid);
    meta.insert("creationTimestamp".into(), created);
    meta.insert("resourceVersion".into(), json!(rv.to_string()));
    meta.insert("generation".into(), json!(generation));
}

pub(super) fn status_subresource(shared: &Shared, target: &Target, object: &Value) -> bool {
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or(&target.plural);
    shared.schemas().is_some_and(|s| {
        s.lookup(&target.group, &target.version, &target.plural)
            .or_else(|| s.lookup(&target.group, &target.version, kind))
            .is_some_and(|r| r.status_subresource)
    })
}

pub(super) fn validate(shared: &Shared, object: &Value) -> Result<(), Vec<FieldError>> {
    let mut errors = match object.get("metadata") {
        Some(m) => validate_metadata(m),
        None => vec![FieldError {
            path: "metadata".into(),
            message: "Required value".into(),
        }],
    };
    if let Some(schemas) = shared.schemas()
        && let Err(e) = schemas.validate(object)
    {
        for err in e {
            if !errors.contains(&err) {
                errors.push(err);
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

pub(super) fn invalid(target: &Target, object: &Value, errors: &[FieldError]) -> Response {
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or(&target.plural);
    let name = meta_str(object, "name");
    let what = if target.group.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}.{}", target.group)
    };
    let listed: Vec<String> = errors.iter().map(ToString::to_string).collect();
    let joined = if listed.len() == 1 {
        listed.join("")
    } else {
        format!("[{}]", listed.join(", "))
    };
    let mut details = status::details(name, &target.group, kind);
    details["causes"] = errors
        .iter()
        .map(|e| json!({"reason": "FieldValueInvalid", "message": e.to_string(), "field": e.path}))
        .collect();
    status::failure(
        422,
        "Invalid",
        format!("{what} \"{name}\" is invalid: {joined}"),
        Some(details),
    )
}

/// Checks apiVersion/kind/namespace of a body against the URL, filling what the URL implies.
pub(super) fn check_identity(call: &Call, object: &mut Value) -> Result<(), Response> {
    let t = &call.target;
    for key in ["apiVersion", "kind"] {
        if object
            .get(key)
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(status::failure(
                400,
                "BadRequest",
                format!(
                    "Object '{}' is missing in '{object}'",
                    if key == "kind" { "Kind" } else { key }
                ),
                None,
            ));
        }
    }
    let ns = t.ns();
    let meta = metadata_mut(object);
    match meta.get("namespace").and_then(Value::as_str) {
        Some(body_ns) if !body_ns.is_empty() && body_ns != ns => {
            return Err(status::failure(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on the request",
                None,
            ));
        }
        _ if !ns.is_empty() => {
            meta.insert("namespace".into(), json!(ns));
        }
        _ => {}
    }
    if let Some(name) = &t.name {
        match meta.get("name").and_then(Value::as_str) {
            Some(n) if !n.is_empty() && n != name => {
                return Err(status::failure(
                    400,
                    "BadRequest",
                    format!(
                        "the name of the object ({n}) does not match the name on the URL ({name})"
                    ),
                    None,
                ));
            }
            _ => {
                meta.insert("name".into(), json!(name));
            }
        }
    }
    Ok(())
}

pub(super) fn generated_name(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let random = uuid::Uuid::new_v4();
    let suffix: String = random.as_bytes()[..5]
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect();
    format!("{prefix}{suffix}")
}
