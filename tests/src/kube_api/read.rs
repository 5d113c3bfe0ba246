//! The reading verbs: get, list (with label and field selectors), watch and pod logs.

use super::*;

pub(super) fn get(shared: &Shared, call: &Call) -> Response {
    let t = &call.target;
    let name = t.name.clone().unwrap_or_default();
    let inner = shared.lock();
    match inner
        .objects
        .get(&t.key())
        .and_then(|o| o.get(&(t.ns(), name.clone())))
    {
        Some(s) => status::json_response(200, &s.object),
        None => t.not_found(&name),
    }
}

pub(super) struct Filter {
    pub(super) namespace: Option<String>,
    pub(super) labels: LabelSelector,
    pub(super) name: Option<String>,
}

impl Filter {
    pub(super) fn from_call(call: &Call) -> Result<Self, Response> {
        let labels =
            LabelSelector::parse(call.query.get("labelSelector").map_or("", String::as_str))
                .map_err(|e| status::failure(400, "BadRequest", e, None))?;
        let mut namespace = call.target.namespace.clone();
        let mut name = None;
        if let Some(fs) = call.query.get("fieldSelector") {
            for part in fs.split(',').filter(|p| !p.is_empty()) {
                match part.split_once("==").or_else(|| part.split_once('=')) {
                    Some(("metadata.name", v)) => name = Some(v.to_owned()),
                    Some(("metadata.namespace", v)) => namespace = Some(v.to_owned()),
                    _ => {
                        return Err(status::failure(
                            400,
                            "BadRequest",
                            format!("field label not supported: {part}"),
                            None,
                        ));
                    }
                }
            }
        }
        Ok(Self {
            namespace,
            labels,
            name,
        })
    }

    pub(super) fn matches(&self, namespace: &str, name: &str, object: &Value) -> bool {
        self.namespace.as_deref().is_none_or(|n| n == namespace)
            && self.name.as_deref().is_none_or(|n| n == name)
            && self.labels.matches(object)
    }
}

pub(super) fn matching(inner: &Inner, call: &Call, filter: &Filter) -> Vec<Value> {
    inner
        .objects
        .get(&call.target.key())
        .map(|objs| {
            objs.iter()
                .filter(|((ns, name), s)| filter.matches(ns, name, &s.object))
                .map(|(_, s)| s.object.clone())
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn list(shared: &Shared, call: &Call) -> Response {
    let filter = match Filter::from_call(call) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let inner = shared.lock();
    let items = matching(&inner, call, &filter);
    let t = &call.target;
    let list_kind =
        kind_of(shared, call, &items).map_or_else(|| "List".to_owned(), |k| format!("{k}List"));
    status::json_response(
        200,
        &json!({
            "apiVersion": t.api_version(),
            "kind": list_kind,
            "metadata": {"resourceVersion": inner.resource_version.to_string()},
            "items": items,
        }),
    )
}

pub(super) fn watch(shared: &Shared, call: &Call) -> Response {
    let filter = match Filter::from_call(call) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let since: u64 = call
        .query
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let timeout = call
        .query
        .get("timeoutSeconds")
        .and_then(|v| v.parse().ok())
        .map_or(Duration::from_secs(1800), Duration::from_secs);
    let bookmarks = call
        .query
        .get("allowWatchBookmarks")
        .is_some_and(|v| v == "true");
    // Subscribing under the lock that also guards the snapshot means no change falls in between.
    let (initial, receiver, kind) = {
        let inner = shared.lock();
        let receiver = shared.events.subscribe();
        let objects = matching(&inner, call, &filter);
        let kind = kind_of(shared, call, &objects);
        // As a real server does for a version etcd compacted away: 200, then one ERROR line.
        let initial: VecDeque<Value> = if since != 0 && since < inner.compacted {
            VecDeque::from([expired(since)])
        } else {
            objects
                .into_iter()
                .filter(|o| {
                    since == 0
                        || meta_str(o, "resourceVersion")
                            .parse::<u64>()
                            .is_ok_and(|rv| rv > since)
                })
                .map(|o| json!({"type": "ADDED", "object": o}))
                .collect()
        };
        (initial, receiver, kind)
    };
    let watch = Watch {
        initial,
        receiver,
        filter,
        key: call.target.key(),
        deadline: tokio::time::Instant::now() + timeout,
        bookmarks,
        api_version: call.target.api_version(),
        kind,
        ended: false,
    };
    let stream = futures::stream::unfold(watch, |mut watch| async move {
        let event = watch.next().await?;
        Some((line(&event), watch))
    });
    let mut response = Body::from_stream(stream).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// One open watch: the lines it still owes, then the changes it is told of, until its
/// deadline or an ERROR line.
struct Watch {
    initial: VecDeque<Value>,
    receiver: broadcast::Receiver<Event>,
    filter: Filter,
    key: (String, String),
    deadline: tokio::time::Instant,
    /// Whether the client asked for BOOKMARK lines (`allowWatchBookmarks=true`).
    bookmarks: bool,
    api_version: String,
    kind: Option<String>,
    /// An ERROR line was sent: a real server ends the watch with it.
    ended: bool,
}

impl Watch {
    /// The next line's event, or `None` when the watch is over.
    async fn next(&mut self) -> Option<Value> {
        if self.ended {
            return None;
        }
        if let Some(event) = self.initial.pop_front() {
            self.ended = event["type"] == "ERROR";
            return Some(event);
        }
        loop {
            let event = tokio::select! {
                e = self.receiver.recv() => e,
                () = tokio::time::sleep_until(self.deadline) => return None,
            };
            match event {
                Ok(e) if e.kind == "ERROR" => {
                    self.ended = true;
                    return Some(json!({"type": "ERROR", "object": e.object}));
                }
                Ok(e) if e.kind == "BOOKMARK" => {
                    if self.bookmarks {
                        return Some(json!({"type": "BOOKMARK", "object": {
                            "apiVersion": self.api_version,
                            "kind": self.kind.as_deref().unwrap_or_default(),
                            "metadata": e.object["metadata"],
                        }}));
                    }
                }
                Ok(e) => {
                    let name = meta_str(&e.object, "name");
                    if (e.group.clone(), e.plural.clone()) == self.key
                        && self.filter.matches(&e.namespace, name, &e.object)
                    {
                        return Some(json!({"type": e.kind, "object": e.object}));
                    }
                }
                // A test that floods 4096 events has bigger problems than a lost one.
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

/// The ERROR line of a watch from a version older than the oldest one kept.
pub(super) fn expired(since: u64) -> Value {
    let message = format!("too old resource version: {since}");
    json!({"type": "ERROR", "object": status::body(410, "Expired", &message, None)})
}

/// The kind of the objects a call reads: from one of them, else from the loaded schemas.
fn kind_of(shared: &Shared, call: &Call, objects: &[Value]) -> Option<String> {
    let t = &call.target;
    objects
        .first()
        .and_then(|o| o.get("kind"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| {
            shared.schemas().and_then(|s| {
                s.lookup(&t.group, &t.version, &t.plural)
                    .map(|r| r.kind.clone())
            })
        })
}

pub(super) fn line(value: &Value) -> Result<String, std::convert::Infallible> {
    Ok(format!("{value}\n"))
}

pub(super) fn pod_log(shared: &Shared, call: &Call) -> Response {
    let t = &call.target;
    let pod = t.name.clone().unwrap_or_default();
    let ns = t.ns();
    let inner = shared.lock();
    let seeded: Vec<(&String, &String)> = inner
        .logs
        .iter()
        .filter(|((n, p, _), _)| *n == ns && *p == pod)
        .map(|((_, _, c), text)| (c, text))
        .collect();
    let text = match call.query.get("container") {
        Some(c) => seeded.iter().find(|(name, _)| *name == c).map(|(_, t)| *t),
        None if seeded.len() > 1 => {
            return status::failure(
                400,
                "BadRequest",
                format!("a container name must be specified for pod {pod}"),
                None,
            );
        }
        None => seeded.first().map(|(_, t)| *t),
    };
    match text {
        Some(text) => {
            let mut r = text.clone().into_response();
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            r
        }
        None => t.not_found(&pod),
    }
}
