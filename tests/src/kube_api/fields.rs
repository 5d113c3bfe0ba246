//! Field paths and the three patch flavours: server-side apply merge, JSON merge patch (RFC 7386)
//! and JSON patch (RFC 6902).

use std::collections::BTreeSet;

use serde_json::{Map, Value};

/// A path to a leaf field, one segment per object key (lists are atomic, so never indexed).
pub type FieldPath = Vec<String>;

/// Leaf paths of `value`: scalars, lists and empty objects. Only the part of the object that field
/// management covers is walked (`spec`, `data`, labels and annotations…, not identity or
/// server-owned metadata).
pub fn leaf_paths(value: &Value) -> BTreeSet<FieldPath> {
    let mut out = BTreeSet::new();
    if let Value::Object(map) = value {
        for (k, v) in map {
            match k.as_str() {
                "apiVersion" | "kind" => {}
                "metadata" => {
                    for key in ["labels", "annotations", "finalizers", "ownerReferences"] {
                        if let Some(v) = v.get(key) {
                            walk(v, &mut vec!["metadata".into(), key.into()], &mut out);
                        }
                    }
                }
                _ => walk(v, &mut vec![k.clone()], &mut out),
            }
        }
    }
    out
}

fn walk(value: &Value, path: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                path.push(k.clone());
                walk(v, path, out);
                path.pop();
            }
        }
        _ => {
            out.insert(path.clone());
        }
    }
}

/// The value at `path`, if any.
pub fn get<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, k| v.get(k))
}

/// Dotted form used in conflict messages, e.g. `.spec.params`.
pub fn dotted(path: &[String]) -> String {
    path.iter().map(|s| format!(".{s}")).collect()
}

/// Removes the leaf at `path` and then any objects left empty by that (below the top level).
pub fn remove(value: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = &mut *value;
    for k in parents {
        match cur.get_mut(k) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let Value::Object(map) = cur {
        map.remove(last);
    }
    if parents.len() > 1
        && get(value, parents).is_some_and(|v| v.as_object().is_some_and(Map::is_empty))
    {
        remove(value, parents);
    }
}

/// Server-side apply merge: objects merge key by key, everything else (lists included) is
/// replaced; `null` removes the field.
pub fn apply_merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in patch {
            match v {
                Value::Null => {
                    t.remove(k);
                }
                Value::Object(_) => apply_merge(t.entry(k.clone()).or_insert(Value::Null), v),
                _ => {
                    t.insert(k.clone(), v.clone());
                }
            }
        }
    }
}

/// JSON merge patch (RFC 7386).
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in patch {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// JSON patch (RFC 6902): `add`, `remove`, `replace`, `move`, `copy`, `test`. `Err` carries a
/// message for the 422 answer.
pub fn json_patch(target: &mut Value, ops: &Value) -> Result<(), String> {
    let ops = ops.as_array().ok_or("a JSON patch must be an array")?;
    for op in ops {
        let name = op
            .get("op")
            .and_then(Value::as_str)
            .ok_or("operation without \"op\"")?;
        let path = op
            .get("path")
            .and_then(Value::as_str)
            .ok_or("operation without \"path\"")?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or(format!("{name} {path}: missing value"))
        };
        let from = || {
            op.get("from")
                .and_then(Value::as_str)
                .ok_or(format!("{name} {path}: missing from"))
        };
        match name {
            "add" => pointer_add(target, path, value()?)?,
            "remove" => {
                pointer_remove(target, path)?;
            }
            "replace" => {
                pointer_remove(target, path)?;
                pointer_add(target, path, value()?)?;
            }
            "move" => {
                let v = pointer_remove(target, from()?)?;
                pointer_add(target, path, v)?;
            }
            "copy" => {
                let v = target
                    .pointer(from()?)
                    .cloned()
                    .ok_or(format!("copy: {path}: no value at from"))?;
                pointer_add(target, path, v)?;
            }
            "test" => {
                if target.pointer(path) != Some(&value()?) {
                    return Err(format!("test failed at {path}"));
                }
            }
            other => return Err(format!("unknown JSON patch op {other:?}")),
        }
    }
    Ok(())
}

fn split_pointer(path: &str) -> Result<(String, String), String> {
    let (parent, last) = path
        .rsplit_once('/')
        .ok_or(format!("invalid pointer {path:?}"))?;
    Ok((
        parent.to_owned(),
        last.replace("~1", "/").replace("~0", "~"),
    ))
}

fn pointer_add(target: &mut Value, path: &str, value: Value) -> Result<(), String> {
    if path.is_empty() {
        *target = value;
        return Ok(());
    }
    let (parent, last) = split_pointer(path)?;
    match target.pointer_mut(&parent) {
        Some(Value::Object(map)) => {
            map.insert(last, value);
            Ok(())
        }
        Some(Value::Array(list)) => {
            let index = if last == "-" {
                list.len()
            } else {
                last.parse().map_err(|_| format!("bad index in {path}"))?
            };
            if index > list.len() {
                return Err(format!("index out of range in {path}"));
            }
            list.insert(index, value);
            Ok(())
        }
        _ => Err(format!("add: parent of {path} does not exist")),
    }
}

fn pointer_remove(target: &mut Value, path: &str) -> Result<Value, String> {
    let (parent, last) = split_pointer(path)?;
    let missing = || format!("{path}: no value to remove");
    match target.pointer_mut(&parent) {
        Some(Value::Object(map)) => map.remove(&last).ok_or_else(missing),
        Some(Value::Array(list)) => {
            let index: usize = last.parse().map_err(|_| missing())?;
            (index < list.len())
                .then(|| list.remove(index))
                .ok_or_else(missing)
        }
        _ => Err(missing()),
    }
}

/// `fieldsV1` rendering of a set of leaf paths: `{"f:spec": {"f:x": {}}}`.
pub fn fields_v1(paths: &BTreeSet<FieldPath>) -> Value {
    let mut root = Value::Object(Map::new());
    for path in paths {
        let mut cur = &mut root;
        for k in path {
            let Value::Object(map) = cur else { break };
            cur = map
                .entry(format!("f:{k}"))
                .or_insert_with(|| Value::Object(Map::new()));
        }
    }
    root
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut doc, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e"}}));
    }

    #[test]
    fn json_patch_ops() {
        let mut doc = json!({"spec": {"list": [1, 2]}});
        json_patch(
            &mut doc,
            &json!([
                {"op": "add", "path": "/spec/list/-", "value": 3},
                {"op": "replace", "path": "/spec/list/0", "value": 0},
                {"op": "add", "path": "/spec/x", "value": "y"},
                {"op": "remove", "path": "/spec/list/1"},
                {"op": "test", "path": "/spec/x", "value": "y"},
            ]),
        )
        .unwrap();
        assert_eq!(doc, json!({"spec": {"list": [0, 3], "x": "y"}}));
        assert!(
            json_patch(
                &mut doc,
                &json!([{"op": "test", "path": "/spec/x", "value": "n"}])
            )
            .is_err()
        );
    }

    #[test]
    fn leaves_and_removal() {
        let obj = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "n", "labels": {"a": "1"}}, "data": {"k": "v", "e": {}}, "l": [1]});
        let paths: Vec<String> = leaf_paths(&obj).iter().map(|p| dotted(p)).collect();
        assert_eq!(paths, [".data.e", ".data.k", ".l", ".metadata.labels.a"]);
        let mut obj = obj;
        remove(&mut obj, &["metadata".into(), "labels".into(), "a".into()]);
        assert_eq!(obj["metadata"], json!({"name": "n"}));
    }
}
