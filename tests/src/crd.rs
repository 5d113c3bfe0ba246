//! A small validator of Kubernetes structural schemas (the `openAPIV3Schema` of a CRD version).
//!
//! It checks what catches mistakes in the objects our builders emit: `type`, `properties`,
//! `required`, `items`, `enum`, `additionalProperties`, `nullable`, `minLength`/`maxLength`,
//! `pattern`, `minimum`/`maximum`, `minItems`/`maxItems`, `x-kubernetes-int-or-string`,
//! `x-kubernetes-preserve-unknown-fields` and `x-kubernetes-embedded-resource`. Unlike a default
//! API server, which prunes unknown fields with only a warning, unknown fields are *rejected*
//! everywhere except below `x-kubernetes-preserve-unknown-fields`, as with
//! `fieldValidation=Strict`, so a typo in a builder fails a test. Not emulated: CEL rules
//! (`x-kubernetes-validations`), `format`, defaulting, list-type merge keys and `allOf`/`anyOf`/
//! `oneOf` value constraints.
//!
//! `metadata` is checked separately ([`validate_metadata`]): a DNS-1123 subdomain name (or a
//! `generateName`) and well-formed labels.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use anyhow::Context as _;
use regex::Regex;
use serde_json::Value;

/// One problem found in an object, named by its field path (`spec.params[0].value`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the offending field, e.g. `spec.params[0].value` or `metadata.labels[app]`.
    pub path: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    fn new(path: &str, message: impl Into<String>) -> Self {
        Self {
            path: path.to_owned(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// The schemas of every CRD version found in a folder, by group, version and kind.
#[derive(Debug, Default, Clone)]
pub struct CrdSchemas {
    resources: Vec<CrdResource>,
}

/// One served version of a CRD: its names, scope and compiled schema.
#[derive(Debug, Clone)]
pub struct CrdResource {
    /// API group, e.g. `tekton.dev`.
    pub group: String,
    /// Version, e.g. `v1`.
    pub version: String,
    /// Kind, e.g. `PipelineRun`.
    pub kind: String,
    /// Plural resource name used in URLs, e.g. `pipelineruns`.
    pub plural: String,
    /// Singular resource name, e.g. `pipelinerun`.
    pub singular: String,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Whether the version has a `status` subresource (then writes to the main resource leave
    /// `.status` alone).
    pub status_subresource: bool,
    schema: Schema,
}

impl CrdResource {
    /// Validates a whole object (apiVersion, kind, metadata, and the rest against the schema).
    pub fn validate(&self, object: &Value) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        match object.get("metadata") {
            Some(meta) => errors.extend(validate_metadata(meta)),
            None => errors.push(FieldError::new("metadata", "Required value")),
        }
        if let Some(map) = object.as_object() {
            let mut rest = map.clone();
            // The root schema only declares `metadata: {type: object}`; the real server validates
            // ObjectMeta on its own, as done above.
            rest.remove("metadata");
            self.schema
                .check(&Value::Object(rest), "", &mut errors, true);
        } else {
            errors.push(FieldError::new("", "must be an object"));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

impl CrdSchemas {
    /// Reads every `*.yaml`/`*.yml` file in `dir` (multi-document files included) and keeps each
    /// CustomResourceDefinition version that has an `openAPIV3Schema`. Other documents are skipped.
    pub fn load_dir(dir: &Path) -> anyhow::Result<Self> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect();
        files.sort();
        let mut out = Self::default();
        for file in files {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            out.add_yaml(&text)
                .with_context(|| format!("loading {}", file.display()))?;
        }
        Ok(out)
    }

    /// Loads the upstream schemas of the shared corpus (`<corpus>/schemas`); panics when the corpus
    /// is missing or a schema does not load.
    pub fn from_corpus() -> Self {
        let dir = crate::corpus::require_corpus().join("schemas");
        match Self::load_dir(&dir) {
            Ok(s) => s,
            Err(e) => panic!("cannot load CRD schemas from {}: {e:#}", dir.display()),
        }
    }

    /// Adds the CRDs of one YAML text (possibly several `---` documents).
    pub fn add_yaml(&mut self, text: &str) -> anyhow::Result<()> {
        for doc in serde_norway::Deserializer::from_str(text) {
            let value: Value = serde::Deserialize::deserialize(doc)?;
            if value.get("kind").and_then(Value::as_str) == Some("CustomResourceDefinition") {
                self.add_crd(&value)?;
            }
        }
        Ok(())
    }

    /// Adds one CustomResourceDefinition (as JSON).
    pub fn add_crd(&mut self, crd: &Value) -> anyhow::Result<()> {
        let spec = crd.get("spec").context("CRD without spec")?;
        let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_owned();
        let group = text(spec.get("group"));
        let names = spec.get("names").context("CRD without spec.names")?;
        let kind = text(names.get("kind"));
        let plural = text(names.get("plural"));
        let singular = match text(names.get("singular")) {
            s if s.is_empty() => kind.to_lowercase(),
            s => s,
        };
        let namespaced = text(spec.get("scope")) != "Cluster";
        let versions = spec
            .get("versions")
            .and_then(Value::as_array)
            .context("CRD without spec.versions")?;
        for v in versions {
            let version = text(v.get("name"));
            let Some(raw) = v.pointer("/schema/openAPIV3Schema") else {
                continue;
            };
            let schema = Schema::compile(raw)
                .with_context(|| format!("schema of {kind}.{group}/{version}"))?;
            let status_subresource = v.pointer("/subresources/status").is_some();
            self.resources
                .retain(|r| !(r.group == group && r.version == version && r.kind == kind));
            self.resources.push(CrdResource {
                group: group.clone(),
                version,
                kind: kind.clone(),
                plural: plural.clone(),
                singular: singular.clone(),
                namespaced,
                status_subresource,
                schema,
            });
        }
        Ok(())
    }

    /// The CRD version for `group`/`version` whose plural, singular or kind is `plural_or_kind`.
    pub fn lookup(&self, group: &str, version: &str, plural_or_kind: &str) -> Option<&CrdResource> {
        self.resources.iter().find(|r| {
            r.group == group
                && r.version == version
                && (r.plural == plural_or_kind
                    || r.kind == plural_or_kind
                    || r.singular == plural_or_kind)
        })
    }

    /// Every loaded CRD version.
    pub fn resources(&self) -> &[CrdResource] {
        &self.resources
    }

    /// Validates an object against the schema chosen by its `apiVersion` and `kind`. Objects of
    /// kinds without a loaded schema pass.
    pub fn validate(&self, object: &Value) -> Result<(), Vec<FieldError>> {
        let api_version = object
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        match self.lookup(group, version, kind) {
            Some(resource) if !kind.is_empty() => resource.validate(object),
            _ => Ok(()),
        }
    }
}

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

fn is_alnum_lower(c: char) -> bool {
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Type {
    Object,
    Array,
    String,
    Integer,
    Number,
    Boolean,
}

#[derive(Debug, Clone)]
enum Additional {
    /// Not given: unknown keys are errors unless `preserve_unknown`.
    Unset,
    /// `additionalProperties: true|false`.
    Bool(bool),
    /// `additionalProperties: {schema}`: a map.
    Schema(Box<Schema>),
}

#[derive(Debug, Clone)]
struct Schema {
    ty: Option<Type>,
    properties: BTreeMap<String, Schema>,
    required: Vec<String>,
    items: Option<Box<Schema>>,
    additional: Additional,
    enumeration: Option<Vec<Value>>,
    nullable: bool,
    preserve_unknown: bool,
    int_or_string: bool,
    embedded_resource: bool,
    min_length: Option<u64>,
    max_length: Option<u64>,
    pattern: Option<Regex>,
    minimum: Option<f64>,
    maximum: Option<f64>,
    min_items: Option<u64>,
    max_items: Option<u64>,
}

impl Schema {
    fn compile(raw: &Value) -> anyhow::Result<Self> {
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

    fn check(&self, value: &Value, path: &str, errors: &mut Vec<FieldError>, root: bool) {
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

    fn check_object(
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

    fn type_name(&self) -> &'static str {
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

fn json_type(v: &Value) -> &'static str {
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
