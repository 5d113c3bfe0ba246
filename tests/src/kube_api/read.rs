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
    let kind = items
        .first()
        .and_then(|o| o.get("kind"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| {
            shared.schemas().and_then(|s| {
                s.lookup(&t.group, &t.version, &t.plural)
                    .map(|r| r.kind.clone())
            })
        });
    let list_kind = kind.map_or_else(|| "List".to_owned(), |k| format!("{k}List"));
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
    // Subscribing under the lock that also guards the snapshot means no change falls in between.
    let (initial, receiver) = {
        let inner = shared.lock();
        let receiver = shared.events.subscribe();
        let initial: VecDeque<Value> = matching(&inner, call, &filter)
            .into_iter()
            .filter(|o| {
                since == 0
                    || meta_str(o, "resourceVersion")
                        .parse::<u64>()
                        .is_ok_and(|rv| rv > since)
            })
            .map(|o| json!({"type": "ADDED", "object": o}))
            .collect();
        (initial, receiver)
    };
    let key = call.target.key();
    let deadline = tokio::time::Instant::now() + timeout;
    let stream = futures::stream::unfold(
        (initial, receiver, filter, key),
        move |(mut initial, mut receiver, filter, key)| async move {
            if let Some(event) = initial.pop_front() {
                return Some((line(&event), (initial, receiver, filter, key)));
            }
            loop {
                let event = tokio::select! {
                    e = receiver.recv() => e,
                    () = tokio::time::sleep_until(deadline) => return None,
                };
                match event {
                    Ok(e) => {
                        let name = meta_str(&e.object, "name");
                        if (e.group.clone(), e.plural.clone()) == key
                            && filter.matches(&e.namespace, name, &e.object)
                        {
                            let value = json!({"type": e.kind, "object": e.object});
                            return Some((line(&value), (initial, receiver, filter, key)));
                        }
                    }
                    // A test that floods 4096 events has bigger problems than a lost one.
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        },
    );
    let mut response = Body::from_stream(stream).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
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
