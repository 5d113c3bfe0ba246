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

mod metadata;
mod schema;

pub use metadata::{
    dns1123_label, dns1123_subdomain, label_value, qualified_name, validate_metadata,
};
use schema::Schema;

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
