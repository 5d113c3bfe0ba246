//! The Knative wiring `tekflux up` applies without Knative: the Broker's delivery policy, its
//! dead-letter sink and the Triggers, read from the same manifests a cluster applies.
//!
//! By default these are the shipped `knative/base/broker.yaml` and `triggers.yaml`, built into
//! the binary so `up` runs from an empty directory; `--triggers DIR` reads every `*.yaml` file of
//! a directory instead (other kinds, such as Services, are skipped). What `up` cannot honour is
//! refused at start, naming the Trigger and field, never ignored: a subscriber that is not one of
//! the three functions, a filter dialect or CESQL construct outside the supported subset.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::filter::Filter;

/// The shipped Broker, as `kubectl apply -k knative/base` creates it.
const SHIPPED_BROKER: &str = include_str!("../../../../knative/base/broker.yaml");
/// The shipped Triggers.
const SHIPPED_TRIGGERS: &str = include_str!("../../../../knative/base/triggers.yaml");

/// Where the wiring comes from, for messages.
pub const SHIPPED_ORIGIN: &str = "the built-in knative/base Broker and Triggers";

/// The Broker's wiring: how it delivers, where undeliverable events go, and the Triggers.
#[derive(Debug, Clone)]
pub struct Wiring {
    /// The Broker's name (each Trigger must name it).
    pub broker: String,
    /// The Broker's delivery policy; a Trigger's own `spec.delivery` replaces it for that Trigger.
    pub delivery: Delivery,
    /// Where events go that could not be delivered (`spec.delivery.deadLetterSink`).
    pub dead_letter_sink: Option<Subscriber>,
    /// The Triggers, in file order.
    pub triggers: Vec<Trigger>,
}

/// `spec.delivery`: how often and how patiently a delivery is retried.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Retries after the first attempt (`retry`).
    pub retry: u32,
    /// `backoffPolicy`.
    pub backoff: Backoff,
    /// `backoffDelay`, the base of the backoff.
    pub backoff_delay: Duration,
    /// `retryAfterMax`: when set, a 429/503 `Retry-After` is honoured up to this long.
    pub retry_after_max: Option<Duration>,
}

impl Default for Delivery {
    /// Knative's defaults when a Broker sets no `delivery`: no retry.
    fn default() -> Self {
        Self {
            retry: 0,
            backoff: Backoff::Exponential,
            backoff_delay: Duration::from_secs(1),
            retry_after_max: None,
        }
    }
}

impl Delivery {
    /// The wait before retry number `retry` (from 0), as Knative computes it: exponential is
    /// `backoffDelay·2^retry`, linear `backoffDelay·(retry+1)`.
    pub fn backoff(&self, retry: u32) -> Duration {
        match self.backoff {
            Backoff::Exponential => self
                .backoff_delay
                .saturating_mul(2u32.saturating_pow(retry)),
            Backoff::Linear => self.backoff_delay.saturating_mul(retry.saturating_add(1)),
        }
    }

    /// The wait before retry `retry` given the answer's `Retry-After` (seconds), which counts
    /// only with `retryAfterMax` set, and then up to it.
    pub fn wait(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        let backoff = self.backoff(retry);
        match (self.retry_after_max, retry_after) {
            (Some(max), Some(asked)) => backoff.max(asked.min(max)),
            _ => backoff,
        }
    }
}

/// `backoffPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backoff {
    /// `exponential` (Knative's default).
    Exponential,
    /// `linear`.
    Linear,
}

/// One Trigger: which events, and where they go.
#[derive(Debug, Clone)]
pub struct Trigger {
    /// `metadata.name`.
    pub name: String,
    /// `spec.filters` (all must hold), else `spec.filter.attributes`, else everything.
    pub filter: Filter,
    /// `spec.subscriber`.
    pub subscriber: Subscriber,
    /// `spec.delivery`, when the Trigger sets its own.
    pub delivery: Option<Delivery>,
}

/// A subscriber: one of the three functions, and the path under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscriber {
    /// The function's name, which is also its path prefix under `up` (`/git-push`).
    pub function: &'static str,
    /// The subscriber's `uri` (`/dead-letters`), or empty for the function's `POST /`.
    pub uri: String,
}

impl Subscriber {
    /// The path `up` serves this subscriber at: `/<function><uri>`.
    pub fn path(&self) -> String {
        format!("/{}{}", self.function, self.uri)
    }
}

/// The functions a subscriber may name (the Knative Service names in `knative/base`).
const FUNCTIONS: [&str; 3] = ["git-push", "run-complete", "release-changed"];

/// Why the wiring cannot be loaded.
#[derive(Debug, thiserror::Error)]
#[error("{origin}: {message}")]
pub struct WiringError {
    origin: String,
    message: String,
}

fn refuse(origin: &str, message: impl Into<String>) -> WiringError {
    WiringError {
        origin: origin.to_owned(),
        message: message.into(),
    }
}

impl Wiring {
    /// The shipped Broker and Triggers.
    pub fn shipped() -> Result<Self, WiringError> {
        let mut documents = parse_documents(SHIPPED_BROKER, "knative/base/broker.yaml")?;
        documents.extend(parse_documents(
            SHIPPED_TRIGGERS,
            "knative/base/triggers.yaml",
        )?);
        Self::from_documents(&documents, SHIPPED_ORIGIN)
    }

    /// Every `*.yaml`/`*.yml` file of `dir` (kustomization files and other kinds skipped).
    pub fn from_dir(dir: &Path) -> Result<Self, WiringError> {
        let origin = dir.display().to_string();
        let entries = std::fs::read_dir(dir).map_err(|error| {
            refuse(
                &origin,
                format!(
                    "cannot read the Trigger directory: {}",
                    tekflux_common::error::plain_chain(&error)
                ),
            )
        })?;
        let mut files: Vec<_> = entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| {
                matches!(
                    path.extension().and_then(|e| e.to_str()),
                    Some("yaml" | "yml")
                ) && path.file_stem().and_then(|s| s.to_str()) != Some("kustomization")
            })
            .collect();
        files.sort();
        let mut documents = Vec::new();
        for file in &files {
            let name = file.display().to_string();
            let text = std::fs::read_to_string(file).map_err(|error| {
                refuse(
                    &name,
                    format!(
                        "cannot read: {}",
                        tekflux_common::error::plain_chain(&error)
                    ),
                )
            })?;
            documents.extend(parse_documents(&text, &name)?);
        }
        Self::from_documents(&documents, &origin)
    }

    fn from_documents(documents: &[Value], origin: &str) -> Result<Self, WiringError> {
        let brokers: Vec<&Value> = documents
            .iter()
            .filter(|document| is_kind(document, "Broker"))
            .collect();
        let [broker] = brokers.as_slice() else {
            return Err(refuse(
                origin,
                format!(
                    "expected exactly one eventing.knative.dev Broker, found {}",
                    brokers.len()
                ),
            ));
        };
        let broker_name = name_of(broker, origin)?;
        let at = format!("Broker {broker_name}");
        let delivery = match broker.pointer("/spec/delivery") {
            Some(delivery) => parse_delivery(delivery, origin, &at)?,
            None => Delivery::default(),
        };
        let dead_letter_sink = broker
            .pointer("/spec/delivery/deadLetterSink")
            .map(|sink| parse_subscriber(sink, origin, &format!("{at}: deadLetterSink")))
            .transpose()?;
        let mut triggers = Vec::new();
        for document in documents.iter().filter(|d| is_kind(d, "Trigger")) {
            let name = name_of(document, origin)?;
            let at = format!("Trigger {name}");
            let spec = &document["spec"];
            if spec["broker"].as_str() != Some(broker_name.as_str()) {
                return Err(refuse(
                    origin,
                    format!(
                        "{at}: spec.broker is {}, not the Broker {broker_name}",
                        spec["broker"]
                    ),
                ));
            }
            let filter = match (spec.get("filters"), spec.pointer("/filter/attributes")) {
                // Knative: `filters` replaces `filter` when both are set.
                (Some(filters), _) => Filter::from_filters(filters)
                    .map_err(|message| refuse(origin, format!("{at}: spec.filters: {message}")))?,
                (None, Some(attributes)) => {
                    Filter::from_attributes(attributes).map_err(|message| {
                        refuse(origin, format!("{at}: spec.filter.attributes: {message}"))
                    })?
                }
                (None, None) => Filter::All(Vec::new()),
            };
            let subscriber = parse_subscriber(
                spec.get("subscriber").unwrap_or(&Value::Null),
                origin,
                &format!("{at}: spec.subscriber"),
            )?;
            let delivery = spec
                .get("delivery")
                .map(|delivery| parse_delivery(delivery, origin, &at))
                .transpose()?;
            triggers.push(Trigger {
                name,
                filter,
                subscriber,
                delivery,
            });
        }
        if triggers.is_empty() {
            return Err(refuse(origin, "no Trigger: nothing would be delivered"));
        }
        Ok(Self {
            broker: broker_name,
            delivery,
            dead_letter_sink,
            triggers,
        })
    }
}

fn parse_documents(text: &str, origin: &str) -> Result<Vec<Value>, WiringError> {
    let mut documents = Vec::new();
    for document in serde_norway::Deserializer::from_str(text) {
        let value: Value = serde::Deserialize::deserialize(document)
            .map_err(|error| refuse(origin, format!("not YAML: {error}")))?;
        if !value.is_null() {
            documents.push(value);
        }
    }
    Ok(documents)
}

fn is_kind(document: &Value, kind: &str) -> bool {
    document["kind"].as_str() == Some(kind)
        && document["apiVersion"]
            .as_str()
            .is_some_and(|version| version.starts_with("eventing.knative.dev/"))
}

fn name_of(document: &Value, origin: &str) -> Result<String, WiringError> {
    document
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| {
            refuse(
                origin,
                format!("a {} has no metadata.name", document["kind"]),
            )
        })
}

fn parse_subscriber(value: &Value, origin: &str, at: &str) -> Result<Subscriber, WiringError> {
    let service = value.pointer("/ref/name").and_then(Value::as_str);
    let kind = value.pointer("/ref/kind").and_then(Value::as_str);
    let function = match (kind, service) {
        (Some("Service"), Some(service)) => FUNCTIONS.into_iter().find(|f| *f == service),
        _ => None,
    };
    let Some(function) = function else {
        return Err(refuse(
            origin,
            format!(
                "{at}: `tekflux up` delivers only to its own functions: ref must be the Service \
                 git-push, run-complete or release-changed, not {}",
                value.get("ref").unwrap_or(&Value::Null)
            ),
        ));
    };
    let uri = value.get("uri").and_then(Value::as_str).unwrap_or_default();
    if !(uri.is_empty() || uri.starts_with('/')) || uri.contains("..") {
        return Err(refuse(
            origin,
            format!("{at}: uri {uri:?} must be a path beginning with /"),
        ));
    }
    Ok(Subscriber {
        function,
        uri: uri.trim_end_matches('/').to_owned(),
    })
}

fn parse_delivery(value: &Value, origin: &str, at: &str) -> Result<Delivery, WiringError> {
    let mut delivery = Delivery::default();
    if let Some(retry) = value.get("retry") {
        delivery.retry = retry
            .as_u64()
            .and_then(|retry| u32::try_from(retry).ok())
            .ok_or_else(|| {
                refuse(
                    origin,
                    format!("{at}: delivery.retry must be a whole number, not {retry}"),
                )
            })?;
    }
    match value.get("backoffPolicy").and_then(Value::as_str) {
        None | Some("exponential") => {}
        Some("linear") => delivery.backoff = Backoff::Linear,
        Some(other) => {
            return Err(refuse(
                origin,
                format!("{at}: delivery.backoffPolicy {other:?} is neither exponential nor linear"),
            ));
        }
    }
    let duration = |field: &str| -> Result<Option<Duration>, WiringError> {
        value
            .get(field)
            .map(|text| {
                text.as_str().and_then(parse_iso8601_duration).ok_or_else(|| {
                    refuse(
                        origin,
                        format!(
                            "{at}: delivery.{field} {text} is not an ISO 8601 duration like PT2S"
                        ),
                    )
                })
            })
            .transpose()
    };
    if let Some(delay) = duration("backoffDelay")? {
        delivery.backoff_delay = delay;
    }
    delivery.retry_after_max = duration("retryAfterMax")?;
    Ok(delivery)
}

/// An ISO 8601 duration as Knative writes them: `PT2S`, `PT0.5S`, `PT1M30S`, `P1DT2H`.
fn parse_iso8601_duration(text: &str) -> Option<Duration> {
    let rest = text.strip_prefix('P')?;
    let (days, time) = match rest.split_once('T') {
        Some((days, time)) => (days, Some(time)),
        None => (rest, None),
    };
    let mut seconds = 0f64;
    let mut any = false;
    let mut add = |part: &str, units: &[(char, f64)]| -> Option<()> {
        let mut number = String::new();
        let mut allowed = units.iter();
        for c in part.chars() {
            if c.is_ascii_digit() || c == '.' {
                number.push(c);
                continue;
            }
            // Units must come in order, each at most once.
            let (_, scale) = allowed.by_ref().find(|(unit, _)| *unit == c)?;
            seconds += number.parse::<f64>().ok()? * scale;
            number.clear();
            any = true;
        }
        number.is_empty().then_some(())
    };
    add(days, &[('D', 86_400.0)])?;
    if let Some(time) = time {
        if time.is_empty() {
            return None;
        }
        add(time, &[('H', 3_600.0), ('M', 60.0), ('S', 1.0)])?;
    }
    (any && seconds.is_finite()).then(|| Duration::from_secs_f64(seconds))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap; a failure is the point
mod tests {
    use super::*;

    #[test]
    fn the_shipped_wiring_loads_with_its_dead_letter_sink_and_policy() {
        let wiring = Wiring::shipped().unwrap();
        assert_eq!(wiring.broker, "tekflux");
        assert_eq!(wiring.delivery.retry, 10);
        assert_eq!(wiring.delivery.backoff_delay, Duration::from_secs(2));
        assert_eq!(
            wiring.delivery.retry_after_max,
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            wiring.dead_letter_sink.unwrap().path(),
            "/run-complete/dead-letters"
        );
        assert!(
            wiring
                .triggers
                .iter()
                .any(|t| t.subscriber.path() == "/release-changed")
        );
    }

    #[test]
    fn backoff_follows_knative() {
        let delivery = Delivery {
            retry: 10,
            backoff: Backoff::Exponential,
            backoff_delay: Duration::from_secs(2),
            retry_after_max: Some(Duration::from_secs(60)),
        };
        assert_eq!(delivery.backoff(0), Duration::from_secs(2));
        assert_eq!(delivery.backoff(9), Duration::from_secs(1024));
        let total: Duration = (0..10).map(|n| delivery.backoff(n)).sum();
        assert_eq!(total, Duration::from_secs(2046), "about 34 minutes");
        assert_eq!(
            delivery.wait(0, Some(Duration::from_secs(30))),
            Duration::from_secs(30)
        );
        assert_eq!(
            delivery.wait(0, Some(Duration::from_secs(600))),
            Duration::from_secs(60)
        );
        let linear = Delivery {
            backoff: Backoff::Linear,
            retry_after_max: None,
            ..delivery
        };
        assert_eq!(linear.backoff(2), Duration::from_secs(6));
        assert_eq!(
            linear.wait(0, Some(Duration::from_secs(30))),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn iso8601_durations() {
        assert_eq!(parse_iso8601_duration("PT2S"), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_iso8601_duration("PT0.1S"),
            Some(Duration::from_millis(100))
        );
        assert_eq!(
            parse_iso8601_duration("P1DT1H1M1S"),
            Some(Duration::from_secs(90_061))
        );
        for bad in ["", "P", "PT", "2S", "PT2", "PTS2", "PT2S1M", "PT1X"] {
            assert_eq!(parse_iso8601_duration(bad), None, "{bad}");
        }
    }

    fn load(yaml: &str) -> Result<Wiring, WiringError> {
        let documents = parse_documents(yaml, "test.yaml").unwrap();
        Wiring::from_documents(&documents, "test.yaml")
    }

    const BROKER: &str = "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: b}\n";

    #[test]
    fn what_up_cannot_honour_is_refused_with_its_place() {
        let trigger = |spec: &str| {
            format!(
                "{BROKER}---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\n\
                 metadata: {{name: t}}\nspec:\n  broker: b\n{spec}"
            )
        };
        let foreign = trigger(
            "  subscriber:\n    ref: {apiVersion: serving.knative.dev/v1, kind: Service, name: other}\n",
        );
        let error = load(&foreign).unwrap_err().to_string();
        assert!(error.contains("Trigger t: spec.subscriber"), "{error}");
        let dialect = trigger(
            "  filters:\n    - regex: {type: x}\n  subscriber:\n    ref: {kind: Service, name: git-push}\n",
        );
        let error = load(&dialect).unwrap_err().to_string();
        assert!(error.contains("Trigger t: spec.filters"), "{error}");
        assert!(error.contains("regex"), "{error}");
        let other_broker = trigger("  subscriber:\n    ref: {kind: Service, name: git-push}\n")
            .replace("broker: b", "broker: c");
        assert!(
            load(&other_broker)
                .unwrap_err()
                .to_string()
                .contains("spec.broker")
        );
        assert!(load(BROKER).unwrap_err().to_string().contains("no Trigger"));
    }

    #[test]
    fn filters_win_over_filter_and_trigger_delivery_overrides() {
        let wiring = load(&format!(
            "{BROKER}spec:\n  delivery: {{retry: 3, backoffPolicy: linear, backoffDelay: PT1S}}\n---\n\
             apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: t}}\nspec:\n  broker: b\n  \
             filter: {{attributes: {{type: a}}}}\n  filters:\n    - exact: {{type: b}}\n  \
             delivery: {{retry: 1}}\n  subscriber:\n    ref: {{kind: Service, name: git-push}}\n    uri: /x/\n"
        ))
        .unwrap();
        assert_eq!(wiring.delivery.retry, 3);
        assert_eq!(wiring.delivery.backoff, Backoff::Linear);
        let trigger = &wiring.triggers[0];
        assert_eq!(trigger.delivery.as_ref().unwrap().retry, 1);
        assert_eq!(trigger.subscriber.path(), "/git-push/x");
        let attributes =
            |ty: &str| std::collections::BTreeMap::from([("type".to_owned(), ty.to_owned())]);
        assert!(trigger.filter.matches(&attributes("b")));
        assert!(!trigger.filter.matches(&attributes("a")));
    }
}
