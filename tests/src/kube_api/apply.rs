//! Server-side apply: creation when missing, leaf-field ownership per manager, conflicts and
//! `force`, and removal of the fields a manager stops applying.

use super::*;

pub(super) fn apply(shared: &Shared, call: &Call) -> Response {
    let t = &call.target;
    let Some(manager) = call
        .query
        .get("fieldManager")
        .filter(|m| !m.is_empty())
        .cloned()
    else {
        return status::failure(
            400,
            "BadRequest",
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
            None,
        );
    };
    let mut patch = match call.object_body() {
        Ok(o) => o,
        Err(r) => return r,
    };
    if let Err(r) = check_identity(call, &mut patch) {
        return r;
    }
    // A resourceVersion or uid in the applied object is a precondition, never a field anyone
    // owns.
    let mut precondition = |field: &str| {
        patch
            .get_mut("metadata")
            .and_then(Value::as_object_mut)
            .and_then(|metadata| metadata.remove(field))
            .and_then(|value| value.as_str().map(str::to_owned))
            .filter(|value| !value.is_empty())
    };
    let sent_version = precondition("resourceVersion");
    let sent_uid = precondition("uid");
    let on_status = t.subresource.as_deref() == Some("status");
    let confined_status = status_subresource(shared, t, &patch);
    let applied: BTreeSet<FieldPath> = fields::leaf_paths(&patch)
        .into_iter()
        .filter(|p| {
            let is_status = p.first().is_some_and(|s| s == "status");
            if on_status {
                is_status
            } else {
                !(is_status && confined_status)
            }
        })
        .collect();
    let me = (manager.clone(), Operation::Apply);
    let mut inner = shared.lock();
    let found = existing(&inner, t);
    let current = |field: &str| found.as_ref().map(|old| meta_str(&old.object, field));
    // As on a real server: a uid must match an existing object, while a resourceVersion is only
    // checked against one (an apply to a missing object creates it, whatever version it names).
    if let Some(sent) = &sent_uid
        && current("uid") != Some(sent.as_str())
    {
        return t.outdated();
    }
    if let Some(sent) = &sent_version
        && current("resourceVersion").is_some_and(|version| version != sent)
    {
        return t.outdated();
    }
    let Some(old) = found else {
        if on_status {
            return t.not_found(t.name.as_deref().unwrap_or_default());
        }
        let mut object = patch;
        if confined_status && let Value::Object(map) = &mut object {
            map.remove("status");
        }
        if let Err(errors) = validate(shared, &object) {
            return invalid(t, &object, &errors);
        }
        let managers = Managers::from([(me, applied)]);
        return store(shared, &mut inner, call, None, object, managers, 201);
    };
    let mut conflicts: Vec<(String, FieldPath)> = Vec::new();
    for (owner, paths) in &old.managers {
        if *owner == me {
            continue;
        }
        for p in paths.intersection(&applied) {
            if fields::get(&old.object, p) != fields::get(&patch, p) {
                conflicts.push((owner.0.clone(), p.clone()));
            }
        }
    }
    let force = call.flag("force");
    if !conflicts.is_empty() && !force {
        let name = t.name.clone().unwrap_or_default();
        let listed: Vec<String> = conflicts
            .iter()
            .map(|(m, p)| format!("conflict with \"{m}\": {}", fields::dotted(p)))
            .collect();
        let mut details = t.details(&name);
        details["causes"] = conflicts
            .iter()
            .map(|(m, p)| {
                json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{m}\""),
                    "field": fields::dotted(p)})
            })
            .collect();
        return status::failure(
            409,
            "Conflict",
            format!(
                "Apply failed with {} conflict{}: {}",
                conflicts.len(),
                if conflicts.len() == 1 { "" } else { "s" },
                listed.join(", ")
            ),
            Some(details),
        );
    }
    let mut object = old.object.clone();
    fields::apply_merge(&mut object, &patch);
    let mut managers = old.managers.clone();
    let previously = managers.remove(&me).unwrap_or_default();
    for dropped in previously.difference(&applied) {
        if !managers.values().any(|paths| paths.contains(dropped)) {
            fields::remove(&mut object, dropped);
        }
    }
    let object = confine(shared, call, &old.object, object);
    let leaves = fields::leaf_paths(&object);
    for (owner, paths) in managers.iter_mut() {
        paths.retain(|p| leaves.contains(p));
        if force {
            paths.retain(|p| !conflicts.iter().any(|(m, c)| *m == owner.0 && c == p));
        }
    }
    managers.insert(me, applied);
    if let Err(errors) = validate(shared, &object) {
        return invalid(t, &object, &errors);
    }
    store(shared, &mut inner, call, Some(&old), object, managers, 200)
}
