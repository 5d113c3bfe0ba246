//! One structural schema (`openAPIV3Schema`) compiled, and an object checked against it.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Type {
    Object,
    Array,
    String,
    Integer,
    Number,
    Boolean,
}

#[derive(Debug, Clone)]
pub(super) enum Additional {
    /// Not given: unknown keys are errors unless `preserve_unknown`.
    Unset,
    /// `additionalProperties: true|false`.
    Bool(bool),
    /// `additionalProperties: {schema}`: a map.
    Schema(Box<Schema>),
}

#[derive(Debug, Clone)]
pub(super) struct Schema {
    pub(super) ty: Option<Type>,
    pub(super) properties: BTreeMap<String, Schema>,
    pub(super) required: Vec<String>,
    pub(super) items: Option<Box<Schema>>,
    pub(super) additional: Additional,
    pub(super) enumeration: Option<Vec<Value>>,
    pub(super) nullable: bool,
    pub(super) preserve_unknown: bool,
    pub(super) int_or_string: bool,
    pub(super) embedded_resource: bool,
    pub(super) min_length: Option<u64>,
    pub(super) max_length: Option<u64>,
    pub(super) pattern: Option<Regex>,
    pub(super) minimum: Option<f64>,
    pub(super) maximum: Option<f64>,
    pub(super) min_items: Option<u64>,
    pub(super) max_items: Option<u64>,
}

impl Schema {
    pub(super) fn compile(raw: &Value) -> anyhow::Result<Self> {
        let ty = match raw.get("type").and_then(Value::as_str) {
            None => None,
            Some("object") => Some(Type::Object),
            Some("array") => Some(Type::Array),
            Some("string") => Some(Type::String),
            Some("integer") => Some(Type::Integer),
            Some("number") => Some(Type::Number),
            Some("boolean") => Some(Type::Boolean),
            Some(other) => anyhow::bail!("unsupported type {other:?}"),
        };
        let mut properties = BTreeMap::new();
        if let Some(props) = raw.get("properties").and_then(Value::as_object) {
            for (k, v) in props {
                properties.insert(
                    k.clone(),
                    Self::compile(v).with_context(|| format!("property {k}"))?,
                );
            }
        }
        let items = match raw.get("items") {
            Some(v) => Some(Box::new(Self::compile(v).context("items")?)),
            None => None,
        };
        let additional = match raw.get("additionalProperties") {
            None => Additional::Unset,
            Some(Value::Bool(b)) => Additional::Bool(*b),
            Some(v) => {
                Additional::Schema(Box::new(Self::compile(v).context("additionalProperties")?))
            }
        };
        let flag = |k: &str| raw.get(k).and_then(Value::as_bool).unwrap_or(false);
        let pattern = match raw.get("pattern").and_then(Value::as_str) {
            Some(p) => Some(Regex::new(p).with_context(|| format!("pattern {p:?}"))?),
            None => None,
        };
        Ok(Self {
            ty,
            properties,
            required: raw
                .get("required")
                .and_then(Value::as_array)
                .map(|r| {
                    r.iter()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            items,
            additional,
            enumeration: raw.get("enum").and_then(Value::as_array).cloned(),
            nullable: flag("nullable"),
            preserve_unknown: flag("x-kubernetes-preserve-unknown-fields"),
            int_or_string: flag("x-kubernetes-int-or-string"),
            embedded_resource: flag("x-kubernetes-embedded-resource"),
            min_length: raw.get("minLength").and_then(Value::as_u64),
            max_length: raw.get("maxLength").and_then(Value::as_u64),
            pattern,
            minimum: raw.get("minimum").and_then(Value::as_f64),
            maximum: raw.get("maximum").and_then(Value::as_f64),
            min_items: raw.get("minItems").and_then(Value::as_u64),
            max_items: raw.get("maxItems").and_then(Value::as_u64),
        })
    }

    pub(super) fn check(
        &self,
        value: &Value,
        path: &str,
        errors: &mut Vec<FieldError>,
        root: bool,
    ) {
        let here = if path.is_empty() { "<root>" } else { path };
        if value.is_null() {
            if !self.nullable {
                errors.push(FieldError::new(
                    here,
                    format!("Invalid value: null: must be of type {}", self.type_name()),
                ));
            }
            return;
        }
        if self.int_or_string {
            if !(value.is_string() || value.is_i64() || value.is_u64()) {
                errors.push(FieldError::new(
                    here,
                    format!(
                        "Invalid value: {}: must be an integer or a string",
                        json_type(value)
                    ),
                ));
                return;
            }
            // A string still has to match the field's `pattern` (quantities, durations).
            if !value.is_string() {
                return;
            }
        }
        if let Some(ty) = self.ty.filter(|_| !self.int_or_string) {
            let ok = match ty {
                Type::Object => value.is_object(),
                Type::Array => value.is_array(),
                Type::String => value.is_string(),
                Type::Integer => value.is_i64() || value.is_u64(),
                Type::Number => value.is_number(),
                Type::Boolean => value.is_boolean(),
            };
            if !ok {
                errors.push(FieldError::new(
                    here,
                    format!(
                        "Invalid value: {:?}: {here} in body must be of type {}: {:?}",
                        json_type(value),
                        self.type_name(),
                        json_type(value)
                    ),
                ));
                return;
            }
        }
        if let Some(allowed) = &self.enumeration
            && !allowed.contains(value)
        {
            let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
            errors.push(FieldError::new(
                here,
                format!(
                    "Unsupported value: {value}: supported values: {}",
                    list.join(", ")
                ),
            ));
        }
        match value {
            Value::String(s) => {
                let len = s.chars().count() as u64;
                if self.max_length.is_some_and(|m| len > m) {
                    errors.push(FieldError::new(
                        here,
                        format!(
                            "Too long: may not be more than {} bytes",
                            self.max_length.unwrap_or(0)
                        ),
                    ));
                }
                if self.min_length.is_some_and(|m| len < m) {
                    errors.push(FieldError::new(
                        here,
                        format!(
                            "Invalid value: {s:?}: should be at least {} chars long",
                            self.min_length.unwrap_or(0)
                        ),
                    ));
                }
                if let Some(re) = &self.pattern
                    && !re.is_match(s)
                {
                    errors.push(FieldError::new(
                        here,
                        format!("Invalid value: {s:?}: should match '{}'", re.as_str()),
                    ));
                }
            }
            Value::Number(n) => {
                let n = n.as_f64().unwrap_or(0.0);
                if self.minimum.is_some_and(|m| n < m) {
                    errors.push(FieldError::new(
                        here,
                        format!(
                            "Invalid value: {n}: should be greater than or equal to {}",
                            self.minimum.unwrap_or(0.0)
                        ),
                    ));
                }
                if self.maximum.is_some_and(|m| n > m) {
                    errors.push(FieldError::new(
                        here,
                        format!(
                            "Invalid value: {n}: should be less than or equal to {}",
                            self.maximum.unwrap_or(0.0)
                        ),
                    ));
                }
            }
            Value::Array(items) => {
                let len = items.len() as u64;
                if self.max_items.is_some_and(|m| len > m) {
                    errors.push(FieldError::new(
                        here,
                        format!(
                            "Too many: {len}: must have at most {} items",
                            self.max_items.unwrap_or(0)
                        ),
                    ));
                }
                if self.min_items.is_some_and(|m| len < m) {
                    errors.push(FieldError::new(
                        here,
                        format!(
                            "Invalid value: {len}: should have at least {} items",
                            self.min_items.unwrap_or(0)
                        ),
                    ));
                }
                if let Some(item_schema) = &self.items {
                    for (i, item) in items.iter().enumerate() {
                        item_schema.check(item, &format!("{path}[{i}]"), errors, false);
                    }
                }
            }
            Value::Object(map) => self.check_object(map, path, errors, root),
            Value::Bool(_) | Value::Null => {}
        }
    }

    pub(super) fn check_object(
        &self,
        map: &serde_json::Map<String, Value>,
        path: &str,
        errors: &mut Vec<FieldError>,
        root: bool,
    ) {
        let join = |k: &str| {
            if path.is_empty() {
                k.to_owned()
            } else {
                format!("{path}.{k}")
            }
        };
        for name in &self.required {
            if !map.contains_key(name) {
                errors.push(FieldError::new(&join(name), "Required value"));
            }
        }
        for (k, v) in map {
            if let Some(prop) = self.properties.get(k) {
                prop.check(v, &join(k), errors, false);
                continue;
            }
            // Every object may carry its own type information; embedded resources also metadata.
            let type_meta = matches!(k.as_str(), "apiVersion" | "kind");
            if (root || self.embedded_resource) && (type_meta || k == "metadata") {
                if !v.is_string() && type_meta {
                    errors.push(FieldError::new(&join(k), "must be a string"));
                }
                continue;
            }
            match &self.additional {
                Additional::Schema(s) => {
                    s.check(v, &format!("{path}[{k}]"), errors, false);
                }
                Additional::Bool(true) => {}
                Additional::Bool(false) | Additional::Unset => {
                    if !self.preserve_unknown {
                        errors.push(FieldError::new(&join(k), "field not declared in schema"));
                    }
                }
            }
        }
    }

    pub(super) fn type_name(&self) -> &'static str {
        if self.int_or_string {
            return "integer or string";
        }
        match self.ty {
            None => "any",
            Some(Type::Object) => "object",
            Some(Type::Array) => "array",
            Some(Type::String) => "string",
            Some(Type::Integer) => "integer",
            Some(Type::Number) => "number",
            Some(Type::Boolean) => "boolean",
        }
    }
}

pub(super) fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}
