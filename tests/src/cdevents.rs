//! Whether a reply other CDEvents tools can consume: the CDEvents CloudEvents binding and the
//! published JSON schemas of the spec release in the corpus (`cdevents-spec-v0.5.1/`).
//!
//! [`CdeventsSpec::check_binary`] reads a reply as it leaves a function, in HTTP binary mode
//! (`ce-*` headers, percent-decoded, and the JSON body), and returns every rule it breaks:
//!
//! - `dev.cdevents.*` types (CDEvents): `ce-specversion` is `1.0`; `ce-id`, `ce-source`,
//!   `ce-type`, `ce-subject` and `ce-time` are the CDEvent's `context.id`, `context.source`,
//!   `context.type`, `subject.id` and `context.timestamp` (the same instant); `Content-Type` is
//!   `application/json`; `context.specversion` is the release's; `dataschema`, when set, is the
//!   type's schema; and the data validates against the release's schema for that type, with its
//!   `$ref`s to `links/` resolved from the corpus (never fetched) and `format`s asserted.
//! - `dev.tekflux.*` types are tekflux's own, not CDEvents: they need only be valid CloudEvents
//!   (`specversion` 1.0, non-empty `id`, a URI-reference `source`, an RFC 3339 `time` when set, a
//!   `dev.tekflux.<noun>.<verb>.v<n>` type) with JSON data.
//! - Any other type is not one tekflux emits.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;
use chrono::DateTime;
use http::HeaderMap;
use serde_json::{Value, json};

use crate::corpus::require_corpus;

/// The corpus folder of the spec release the replies follow.
pub const SPEC_DIR: &str = "cdevents-spec-v0.5.1";

/// The schema of one CDEvents type.
#[derive(Debug)]
struct TypeSchema {
    /// The schema's `$id`, what a `dataschema` attribute names.
    id: String,
    validator: jsonschema::Validator,
}

/// The event schemas of one CDEvents spec release, by event type.
#[derive(Debug)]
pub struct CdeventsSpec {
    /// The release, e.g. `0.5.1`, as the schemas' `$id`s name it.
    version: String,
    schemas: BTreeMap<String, TypeSchema>,
    uri_reference: jsonschema::Validator,
}

/// What kind of event a reply that keeps every rule is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    /// A CDEvent of this type, valid against its schema.
    CdEvent(String),
    /// A tekflux event of this type (`dev.tekflux.*`), a valid CloudEvent.
    Tekflux(String),
}

impl CdeventsSpec {
    /// The release in the corpus ([`SPEC_DIR`]); panics when the corpus is missing or broken.
    pub fn from_corpus() -> Self {
        let dir = require_corpus().join(SPEC_DIR);
        Self::load_dir(&dir).unwrap_or_else(|e| panic!("loading {}: {e:#}", dir.display()))
    }

    /// Loads `schemas/*.json` and `schemas/links/*.json` of a spec release folder.
    ///
    /// # Errors
    /// When a file cannot be read or parsed, a schema has no `$id` or a schema does not compile
    /// offline.
    pub fn load_dir(dir: &Path) -> anyhow::Result<Self> {
        let mut documents = Vec::new();
        for sub in ["schemas", "schemas/links"] {
            let folder = dir.join(sub);
            let mut paths: Vec<_> = std::fs::read_dir(&folder)
                .with_context(|| format!("reading {}", folder.display()))?
                .map(|entry| entry.map(|e| e.path()))
                .collect::<Result<_, _>>()?;
            paths.sort();
            for path in paths
                .into_iter()
                .filter(|p| p.extension() == Some("json".as_ref()))
            {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let schema: Value = serde_json::from_str(&text)
                    .with_context(|| format!("parsing {}", path.display()))?;
                let id = schema["$id"]
                    .as_str()
                    .with_context(|| format!("{} has no $id", path.display()))?
                    .to_owned();
                documents.push((id, schema, sub == "schemas"));
            }
        }
        // Every schema under its `$id`, so that `links/embeddedlinksarray` resolves against the
        // referring schema's `$id` to a document held here, with no network.
        let registry = jsonschema::Registry::new()
            .extend(
                documents
                    .iter()
                    .map(|(id, schema, _)| (id.as_str(), schema.clone())),
            )?
            .prepare()?;
        let mut schemas = BTreeMap::new();
        let mut version = None;
        for (id, schema, is_event) in &documents {
            let Some(ty) = schema.pointer("/properties/context/properties/type/enum/0") else {
                anyhow::ensure!(!is_event, "{id} names no event type");
                continue;
            };
            let ty = ty.as_str().context("an event type that is not a string")?;
            let validator = jsonschema::options()
                .with_registry(&registry)
                .offline()
                .should_validate_formats(true)
                .build(schema)
                .map_err(|e| anyhow::anyhow!("compiling {id}: {e}"))?;
            let release = id
                .strip_prefix("https://cdevents.dev/")
                .and_then(|rest| rest.split('/').next())
                .with_context(|| format!("{id} names no release"))?;
            anyhow::ensure!(
                version.get_or_insert_with(|| release.to_owned()) == release,
                "{id} is not of the release the others are"
            );
            schemas.insert(
                ty.to_owned(),
                TypeSchema {
                    id: id.clone(),
                    validator,
                },
            );
        }
        let uri_reference = jsonschema::options()
            .should_validate_formats(true)
            .build(&json!({"type": "string", "format": "uri-reference"}))
            .map_err(|e| anyhow::anyhow!("compiling the uri-reference check: {e}"))?;
        Ok(Self {
            version: version.context("no event schemas")?,
            schemas,
            uri_reference,
        })
    }

    /// The release, e.g. `0.5.1`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Whether the release has a schema for `event_type`.
    pub fn knows(&self, event_type: &str) -> bool {
        self.schemas.contains_key(event_type)
    }

    /// Every rule the binary-mode reply (`headers`, `body`) breaks, or what it is.
    ///
    /// # Errors
    /// The broken rules, each a sentence naming the attribute or field.
    pub fn check_binary(&self, headers: &HeaderMap, body: &Value) -> Result<Checked, Vec<String>> {
        let mut problems = Vec::new();
        let ce = |name: &str| -> Option<String> {
            headers
                .get(format!("ce-{name}"))
                .map(|v| percent_decode(v.to_str().unwrap_or("\u{fffd}")))
        };
        if ce("specversion").as_deref() != Some("1.0") {
            problems.push(format!(
                "ce-specversion is {:?}, not 1.0",
                ce("specversion")
            ));
        }
        let media_type = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_ascii_lowercase()
            });
        if media_type.as_deref() != Some("application/json") {
            problems.push(format!(
                "Content-Type is {media_type:?}, not application/json"
            ));
        }
        if ce("id").is_none_or(|id| id.is_empty()) {
            problems.push("ce-id is missing or empty".to_owned());
        }
        match ce("source") {
            Some(source) if self.uri_reference.is_valid(&json!(source)) && !source.is_empty() => {}
            other => problems.push(format!("ce-source {other:?} is not a URI-reference")),
        }
        if let Some(time) = ce("time")
            && DateTime::parse_from_rfc3339(&time).is_err()
        {
            problems.push(format!("ce-time {time:?} is not RFC 3339"));
        }
        let ty = ce("type").unwrap_or_default();
        let checked = if ty.starts_with("dev.cdevents.") {
            self.check_cdevent(&ty, &ce, body, &mut problems);
            Checked::CdEvent(ty)
        } else if ty.starts_with("dev.tekflux.") {
            let parts: Vec<&str> = ty.split('.').collect();
            let well_formed = parts.len() == 5
                && parts[2..4]
                    .iter()
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
                && parts[4]
                    .strip_prefix('v')
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            if !well_formed {
                problems.push(format!("{ty} is not dev.tekflux.<noun>.<verb>.v<n>"));
            }
            if !body.is_object() {
                problems.push("the data is not a JSON object".to_owned());
            }
            Checked::Tekflux(ty)
        } else {
            problems.push(format!("{ty:?} is neither a CDEvents nor a tekflux type"));
            Checked::Tekflux(ty)
        };
        if problems.is_empty() {
            Ok(checked)
        } else {
            Err(problems)
        }
    }

    fn check_cdevent(
        &self,
        ty: &str,
        ce: &dyn Fn(&str) -> Option<String>,
        body: &Value,
        problems: &mut Vec<String>,
    ) {
        let Some(schema) = self.schemas.get(ty) else {
            problems.push(format!(
                "{ty} is not an event type of CDEvents {}",
                self.version
            ));
            return;
        };
        for error in schema.validator.iter_errors(body) {
            problems.push(format!(
                "data at {:?} breaks {}: {error}",
                error.instance_path().to_string(),
                schema.id
            ));
        }
        let field = |pointer: &str| {
            body.pointer(pointer)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        for (attribute, pointer) in [
            ("id", "/context/id"),
            ("source", "/context/source"),
            ("type", "/context/type"),
            ("subject", "/subject/id"),
        ] {
            let (wire, own) = (ce(attribute), field(pointer));
            if wire.is_none() || wire != own {
                problems.push(format!(
                    "ce-{attribute} is {wire:?} but the CDEvent's {pointer} is {own:?}"
                ));
            }
        }
        let instant =
            |text: Option<String>| text.and_then(|t| DateTime::parse_from_rfc3339(&t).ok());
        let (wire, own) = (ce("time"), field("/context/timestamp"));
        if instant(wire.clone()).is_none() || instant(wire.clone()) != instant(own.clone()) {
            problems.push(format!(
                "ce-time is {wire:?} but the CDEvent's /context/timestamp is {own:?}"
            ));
        }
        if field("/context/specversion").as_deref() != Some(self.version.as_str()) {
            problems.push(format!(
                "the CDEvent claims spec version {:?}, checked against {}",
                field("/context/specversion"),
                self.version
            ));
        }
        if let Some(dataschema) = ce("dataschema")
            && dataschema != schema.id
        {
            problems.push(format!(
                "ce-dataschema is {dataschema}, not the type's schema {}",
                schema.id
            ));
        }
    }

    /// Panics with every broken rule unless the binary-mode reply keeps them all; returns what
    /// it is.
    pub fn assert_binary(&self, headers: &HeaderMap, body: &Value) -> Checked {
        match self.check_binary(headers, body) {
            Ok(checked) => checked,
            Err(problems) => panic!(
                "the reply {} breaks the CDEvents {} binding or schemas:\n- {}\nheaders: \
                 {headers:?}\nbody: {body:#}",
                headers
                    .get("ce-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("(no type)"),
                self.version,
                problems.join("\n- ")
            ),
        }
    }
}

/// Undoes the HTTP binding's percent-encoding of a `ce-*` header value.
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(u8::try_from(hi * 16 + lo).unwrap_or(b'?'));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    /// The binding document's own example, in binary mode, as a CDEvents 0.5.1 pipelinerun
    /// queued event (the example's taskrun type is of an older release).
    fn example() -> (HeaderMap, Value) {
        let body = json!({
            "context": {
                "specversion": "0.5.1",
                "id": "A234-1234-1234",
                "source": "/staging/tekton/",
                "type": "dev.cdevents.pipelinerun.queued.0.3.0",
                "timestamp": "2018-04-05T17:31:00Z",
            },
            "subject": {
                "id": "/namespace/pipelinerun-123",
                "content": {"pipelineName": "my-pipeline"},
            },
        });
        let headers = headers(&[
            ("ce-specversion", "1.0"),
            ("ce-type", "dev.cdevents.pipelinerun.queued.0.3.0"),
            ("ce-time", "2018-04-05T17:31:00.000Z"),
            ("ce-id", "A234-1234-1234"),
            ("ce-source", "/staging/tekton/"),
            ("ce-subject", "%2Fnamespace%2Fpipelinerun-123"),
            ("content-type", "application/json; charset=utf-8"),
        ]);
        (headers, body)
    }

    #[test]
    fn the_binding_examples_shape_passes_and_each_broken_rule_is_named() {
        let spec = CdeventsSpec::from_corpus();
        assert_eq!(spec.version(), "0.5.1");
        assert!(spec.knows("dev.cdevents.artifact.published.0.3.0"));
        let (good, body) = example();
        assert_eq!(
            spec.check_binary(&good, &body),
            Ok(Checked::CdEvent(
                "dev.cdevents.pipelinerun.queued.0.3.0".to_owned()
            ))
        );

        let broken = |name: &str, value: &str| {
            let mut headers = good.clone();
            headers.insert(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
            spec.check_binary(&headers, &body).unwrap_err().join("\n")
        };
        assert!(broken("ce-subject", "run-123").contains("ce-subject"));
        assert!(broken("ce-id", "other").contains("ce-id"));
        assert!(broken("ce-time", "2018-04-05T17:31:01Z").contains("ce-time"));
        assert!(broken("ce-specversion", "0.3").contains("ce-specversion"));
        assert!(broken("content-type", "text/plain").contains("Content-Type"));
        assert!(broken("ce-dataschema", "https://example.com/s").contains("dataschema"));

        let mut bad_data = body.clone();
        bad_data["subject"]["content"]["pipelineName"] = json!(7);
        bad_data["context"]["extra"] = json!(true);
        let problems = spec.check_binary(&good, &bad_data).unwrap_err().join("\n");
        assert!(
            problems.contains("/subject/content/pipelineName"),
            "{problems}"
        );
        assert!(problems.contains("extra"), "{problems}");

        let mut old = body.clone();
        old["context"]["specversion"] = json!("0.5.0");
        let problems = spec.check_binary(&good, &old).unwrap_err().join("\n");
        assert!(problems.contains("spec version"), "{problems}");

        // links/ are resolved from the corpus: a malformed link is caught by the linked schema.
        let mut linked = body;
        linked["context"]["links"] = json!([{"linkType": "PATH", "from": {"contextId": "x"}}]);
        assert!(spec.check_binary(&good, &linked).is_ok());
        linked["context"]["links"] = json!([{"linkType": "PATH", "from": {}}]);
        assert!(spec.check_binary(&good, &linked).is_err());
    }

    #[test]
    fn tekflux_types_need_only_be_cloudevents() {
        let spec = CdeventsSpec::from_corpus();
        let ok = headers(&[
            ("ce-specversion", "1.0"),
            ("ce-type", "dev.tekflux.run.finished.v1"),
            ("ce-id", "1"),
            ("ce-source", "https://github.com/acme/shop"),
            ("ce-subject", "build-1"),
            ("ce-time", "2026-11-24T06:00:00Z"),
            ("content-type", "application/json"),
        ]);
        assert_eq!(
            spec.check_binary(&ok, &json!({"outcome": "succeeded"})),
            Ok(Checked::Tekflux("dev.tekflux.run.finished.v1".to_owned()))
        );
        let mut odd = ok.clone();
        odd.insert("ce-type", "dev.tekflux.Run-Finished".parse().unwrap());
        assert!(spec.check_binary(&odd, &json!({})).is_err());
        let mut foreign = ok;
        foreign.insert("ce-type", "com.example.thing".parse().unwrap());
        assert!(spec.check_binary(&foreign, &json!({})).is_err());
    }
}
