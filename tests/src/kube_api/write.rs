//! The writing verbs but apply: create, replace (PUT), JSON merge and JSON patch, delete, and
//! the storing, `status` confinement and field ownership they share.

use super::*;

pub(super) fn create(shared: &Shared, call: &Call) -> Response {
    let mut object = match call.object_body() {
        Ok(o) => o,
        Err(r) => return r,
    };
    if let Err(r) = check_identity(call, &mut object) {
        return r;
    }
    let t = &call.target;
    if status_subresource(shared, t, &object)
        && let Value::Object(map) = &mut object
    {
        map.remove("status");
    }
    let mut inner = shared.lock();
    if meta_str(&object, "name").is_empty() {
        let prefix = meta_str(&object, "generateName").to_owned();
        if !prefix.is_empty() {
            let existing = inner.objects.get(&t.key());
            let name = loop {
                let candidate = generated_name(&prefix);
                if existing.is_none_or(|o| !o.contains_key(&(t.ns(), candidate.clone()))) {
                    break candidate;
                }
            };
            metadata_mut(&mut object).insert("name".into(), json!(name));
        }
    }
    if let Err(errors) = validate(shared, &object) {
        return invalid(t, &object, &errors);
    }
    let name = meta_str(&object, "name").to_owned();
    if inner
        .objects
        .get(&t.key())
        .is_some_and(|o| o.contains_key(&(t.ns(), name.clone())))
    {
        return status::failure(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", t.resource()),
            Some(t.details(&name)),
        );
    }
    let mut managers = Managers::new();
    managers.insert(
        (call.update_manager(), Operation::Update),
        fields::leaf_paths(&object),
    );
    store(shared, &mut inner, call, None, object, managers, 201)
}

/// Stores (unless dry run) the new state of an object and answers with it.
pub(super) fn store(
    shared: &Shared,
    inner: &mut Inner,
    call: &Call,
    old: Option<&Stored>,
    mut object: Value,
    mut managers: Managers,
    code: u16,
) -> Response {
    let t = &call.target;
    managers.retain(|_, paths| !paths.is_empty());
    let strip = |o: &Value| {
        let mut o = o.clone();
        if let Value::Object(map) = &mut o {
            map.remove("metadata");
            map.remove("status");
        }
        o
    };
    let unchanged = old.is_some_and(|old| {
        let mut a = old.object.clone();
        let mut b = object.clone();
        for v in [&mut a, &mut b] {
            let meta = metadata_mut(v);
            for k in [
                "resourceVersion",
                "managedFields",
                "generation",
                "uid",
                "creationTimestamp",
            ] {
                meta.remove(k);
            }
        }
        a == b && old.managers == managers
    });
    if unchanged && let Some(old) = old {
        return status::json_response(code, &old.object);
    }
    let generation = match old {
        None => 1,
        Some(old) => {
            let g = old
                .object
                .pointer("/metadata/generation")
                .and_then(Value::as_u64)
                .unwrap_or(1);
            if strip(&old.object) == strip(&object) {
                g
            } else {
                g + 1
            }
        }
    };
    let rv = if call.dry_run() {
        inner.resource_version
    } else {
        next_rv(inner)
    };
    fill_server_metadata(&mut object, old.map(|s| &s.object), rv, generation);
    let api_version = t.api_version();
    let time = now();
    let managed: Vec<Value> = managers
        .iter()
        .map(|((m, op), paths)| {
            json!({"manager": m, "operation": op.as_str(), "apiVersion": api_version, "time": time,
                "fieldsType": "FieldsV1", "fieldsV1": fields::fields_v1(paths)})
        })
        .collect();
    metadata_mut(&mut object).insert("managedFields".into(), Value::Array(managed));
    if !call.dry_run() {
        let name = meta_str(&object, "name").to_owned();
        inner.objects.entry(t.key()).or_default().insert(
            (t.ns(), name),
            Stored {
                object: object.clone(),
                managers,
            },
        );
        let _ = shared.events.send(Event {
            group: t.group.clone(),
            plural: t.plural.clone(),
            namespace: t.ns(),
            kind: if old.is_some() { "MODIFIED" } else { "ADDED" },
            object: object.clone(),
        });
    }
    status::json_response(code, &object)
}

/// Keeps the parts of `new` that the addressed endpoint may not change: identity metadata always,
/// `.status` on the main resource of kinds with a status subresource, everything but `.status` on
/// the status subresource.
pub(super) fn confine(shared: &Shared, call: &Call, old: &Value, mut new: Value) -> Value {
    let t = &call.target;
    if t.subresource.as_deref() == Some("status") {
        let mut confined = old.clone();
        if let (Value::Object(c), Some(status)) = (&mut confined, new.get("status")) {
            c.insert("status".into(), status.clone());
        }
        return confined;
    }
    if status_subresource(shared, t, old)
        && let Value::Object(map) = &mut new
    {
        match old.get("status") {
            Some(s) => map.insert("status".into(), s.clone()),
            None => map.remove("status"),
        };
    }
    let old_meta = old.get("metadata").cloned().unwrap_or_default();
    let meta = metadata_mut(&mut new);
    for k in [
        "name",
        "namespace",
        "generateName",
        "uid",
        "creationTimestamp",
    ] {
        match old_meta.get(k) {
            Some(v) => meta.insert(k.into(), v.clone()),
            None => meta.remove(k),
        };
    }
    new
}

/// Field ownership after a non-apply write by `manager`: it takes every leaf whose value it
/// changed; leaves that disappeared are owned by nobody.
pub(super) fn update_ownership(old: &Stored, new: &Value, manager: String) -> Managers {
    let new_leaves = fields::leaf_paths(new);
    let changed: BTreeSet<FieldPath> = new_leaves
        .iter()
        .filter(|p| fields::get(&old.object, p) != fields::get(new, p))
        .cloned()
        .collect();
    let mut managers = old.managers.clone();
    for paths in managers.values_mut() {
        paths.retain(|p| new_leaves.contains(p) && !changed.contains(p));
    }
    managers
        .entry((manager, Operation::Update))
        .or_default()
        .extend(changed);
    managers
}

pub(super) fn existing(inner: &Inner, t: &Target) -> Option<Stored> {
    inner
        .objects
        .get(&t.key())
        .and_then(|o| o.get(&(t.ns(), t.name.clone().unwrap_or_default())))
        .cloned()
}

/// Removes a stored object and tells watchers (DELETED); `None` when there was none.
pub(super) fn remove_stored(
    shared: &Shared,
    inner: &mut Inner,
    key: (String, String),
    namespace: String,
    name: String,
) -> Option<Stored> {
    let removed = inner
        .objects
        .get_mut(&key)?
        .remove(&(namespace.clone(), name))?;
    next_rv(inner);
    let (group, plural) = key;
    let _ = shared.events.send(Event {
        group,
        plural,
        namespace,
        kind: "DELETED",
        object: removed.object.clone(),
    });
    Some(removed)
}

pub(super) fn replace(shared: &Shared, call: &Call) -> Response {
    let mut object = match call.object_body() {
        Ok(o) => o,
        Err(r) => return r,
    };
    if let Err(r) = check_identity(call, &mut object) {
        return r;
    }
    let t = &call.target;
    let mut inner = shared.lock();
    let Some(old) = existing(&inner, t) else {
        return t.not_found(t.name.as_deref().unwrap_or_default());
    };
    let sent_rv = meta_str(&object, "resourceVersion");
    if !sent_rv.is_empty() && sent_rv != meta_str(&old.object, "resourceVersion") {
        return t.outdated();
    }
    let object = confine(shared, call, &old.object, object);
    if let Err(errors) = validate(shared, &object) {
        return invalid(t, &object, &errors);
    }
    let managers = update_ownership(&old, &object, call.update_manager());
    store(shared, &mut inner, call, Some(&old), object, managers, 200)
}

pub(super) fn patch(shared: &Shared, call: &Call) -> Response {
    let media = call
        .content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match media.as_str() {
        "application/apply-patch+yaml" => apply(shared, call),
        "application/merge-patch+json"
        | "application/strategic-merge-patch+json"
        | "application/json-patch+json" => {
            if let Some(e) = &call.body_error {
                return status::failure(400, "BadRequest", e.clone(), None);
            }
            let Some(body) = &call.body else {
                return status::failure(400, "BadRequest", "the patch has no body", None);
            };
            let t = &call.target;
            let mut inner = shared.lock();
            let Some(old) = existing(&inner, t) else {
                return t.not_found(t.name.as_deref().unwrap_or_default());
            };
            let mut object = old.object.clone();
            if media == "application/json-patch+json" {
                if let Err(e) = fields::json_patch(&mut object, body) {
                    return status::failure(
                        422,
                        "Invalid",
                        e,
                        Some(t.details(t.name.as_deref().unwrap_or_default())),
                    );
                }
            } else {
                fields::merge_patch(&mut object, body);
            }
            let object = confine(shared, call, &old.object, object);
            if let Err(errors) = validate(shared, &object) {
                return invalid(t, &object, &errors);
            }
            let managers = update_ownership(&old, &object, call.update_manager());
            store(shared, &mut inner, call, Some(&old), object, managers, 200)
        }
        other => status::failure(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {other:?})"
            ),
            None,
        ),
    }
}

pub(super) fn delete(shared: &Shared, call: &Call) -> Response {
    let t = &call.target;
    let name = t.name.clone().unwrap_or_default();
    let mut inner = shared.lock();
    let Some(old) = existing(&inner, t) else {
        return t.not_found(&name);
    };
    // kube sends DeleteOptions in the body (`{"dryRun": ["All"], "preconditions": …}`).
    let options = call.body.clone().unwrap_or_default();
    let dry_run = call.dry_run()
        || options
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|d| d.iter().any(|v| v == "All"));
    for (key, field) in [("uid", "uid"), ("resourceVersion", "resourceVersion")] {
        if let Some(wanted) = options
            .pointer(&format!("/preconditions/{key}"))
            .and_then(Value::as_str)
            && wanted != meta_str(&old.object, field)
        {
            return status::failure(
                409,
                "Conflict",
                format!(
                    "Precondition failed: {key}: {wanted}, object {key}: {}",
                    meta_str(&old.object, field)
                ),
                Some(t.details(&name)),
            );
        }
    }
    if !dry_run {
        remove_stored(shared, &mut inner, t.key(), t.ns(), name);
    }
    status::json_response(200, &old.object)
}
