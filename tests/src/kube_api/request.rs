//! From an HTTP request to a call: the path parsed into what it addresses, the query and body
//! read, faults injected, the request logged, and the call routed to its verb.

use super::*;

/// What a request addresses.
#[derive(Debug, Clone)]
pub(super) struct Target {
    pub(super) group: String,
    pub(super) version: String,
    pub(super) namespace: Option<String>,
    pub(super) plural: String,
    pub(super) name: Option<String>,
    pub(super) subresource: Option<String>,
}

impl Target {
    pub(super) fn parse(path: &str) -> Option<Self> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (group, version, rest) = match segments.as_slice() {
            ["api", version, rest @ ..] => ("", *version, rest),
            ["apis", group, version, rest @ ..] => (*group, *version, rest),
            _ => return None,
        };
        let (namespace, rest) = match rest {
            ["namespaces", ns, plural, tail @ ..]
                if !(tail.is_empty() && matches!(*plural, "status" | "finalize")) =>
            {
                (Some((*ns).to_owned()), {
                    let mut r = vec![*plural];
                    r.extend_from_slice(tail);
                    r
                })
            }
            other => (None, other.to_vec()),
        };
        let (plural, name, subresource) = match rest.as_slice() {
            [plural] => (*plural, None, None),
            [plural, name] => (*plural, Some(*name), None),
            [plural, name, sub] => (*plural, Some(*name), Some(*sub)),
            _ => return None,
        };
        if plural.is_empty() || name.is_some_and(str::is_empty) {
            return None;
        }
        Some(Self {
            group: group.to_owned(),
            version: version.to_owned(),
            namespace,
            plural: plural.to_owned(),
            name: name.map(str::to_owned),
            subresource: subresource.map(str::to_owned),
        })
    }

    pub(super) fn key(&self) -> (String, String) {
        (self.group.clone(), self.plural.clone())
    }

    pub(super) fn ns(&self) -> String {
        self.namespace.clone().unwrap_or_default()
    }

    /// `pipelineruns.tekton.dev` / `configmaps`, as in the real server's messages.
    pub(super) fn resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    pub(super) fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub(super) fn details(&self, name: &str) -> Value {
        status::details(name, &self.group, &self.plural)
    }

    pub(super) fn not_found(&self, name: &str) -> Response {
        status::failure(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", self.resource()),
            Some(self.details(name)),
        )
    }

    /// 409 for a write whose `resourceVersion` or `uid` precondition does not hold, in the API
    /// server's words.
    pub(super) fn outdated(&self) -> Response {
        let name = self.name.clone().unwrap_or_default();
        status::failure(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; \
                 please apply your changes to the latest version and try again",
                self.resource()
            ),
            Some(self.details(&name)),
        )
    }
}

/// The parts of a request every operation needs.
pub(super) struct Call {
    pub(super) target: Target,
    pub(super) query: BTreeMap<String, String>,
    pub(super) content_type: String,
    pub(super) body: Option<Value>,
    pub(super) body_error: Option<String>,
    pub(super) user_agent: String,
}

impl Call {
    pub(super) fn dry_run(&self) -> bool {
        self.query.get("dryRun").is_some_and(|v| v == "All")
    }

    pub(super) fn flag(&self, key: &str) -> bool {
        self.query.get(key).is_some_and(|v| v == "true" || v == "1")
    }

    /// The manager of a non-apply write: `fieldManager`, else the User-Agent's product name, as the
    /// real server derives it.
    pub(super) fn update_manager(&self) -> String {
        if let Some(m) = self.query.get("fieldManager").filter(|m| !m.is_empty()) {
            return m.clone();
        }
        let product = self.user_agent.split('/').next().unwrap_or("");
        if product.is_empty() {
            "unknown".into()
        } else {
            product.into()
        }
    }

    pub(super) fn object_body(&self) -> Result<Value, Response> {
        if let Some(e) = &self.body_error {
            return Err(status::failure(400, "BadRequest", e.clone(), None));
        }
        match &self.body {
            Some(v @ Value::Object(_)) => Ok(v.clone()),
            Some(_) => Err(status::failure(
                400,
                "BadRequest",
                "the body must be a JSON object",
                None,
            )),
            None => Err(status::failure(
                400,
                "BadRequest",
                "the request has no body",
                None,
            )),
        }
    }
}

pub(super) fn parse_query(query: Option<&str>) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

pub(super) fn parse_body(bytes: &[u8]) -> Result<Option<Value>, String> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    match serde_json::from_slice(bytes) {
        Ok(v) => Ok(Some(v)),
        // kubectl sends YAML apply patches; kube sends JSON under the same content type.
        Err(json_err) => serde_norway::from_slice(bytes)
            .map(Some)
            .map_err(|_| format!("the body is neither JSON nor YAML: {json_err}")),
    }
}

pub(super) async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, 64 * 1024 * 1024).await {
        Ok(b) => b,
        Err(e) => return status::failure(413, "RequestEntityTooLarge", e.to_string(), None),
    };
    let query = parse_query(parts.uri.query());
    let header_str = |name: header::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let content_type = header_str(header::CONTENT_TYPE);
    let (body, body_error) = match parse_body(&bytes) {
        Ok(b) => (b, None),
        Err(e) => (None, Some(e)),
    };
    let (index, fault) = {
        let mut inner = shared.lock();
        inner.requests.push(RecordedRequest {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            query: query.clone(),
            content_type: content_type.clone(),
            body: body.clone(),
            status: None,
        });
        (inner.requests.len() - 1, inner.faults.pop_front())
    };
    let response = match fault {
        Some(Fault::TooManyRequests { retry_after_secs }) => {
            let mut r = status::failure(
                429,
                "TooManyRequests",
                "the server has received too many requests and has asked us to try again later",
                Some(json!({ "retryAfterSeconds": retry_after_secs })),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            r
        }
        Some(Fault::Status(code)) => status::failure(
            code,
            status::reason_for(code),
            format!("injected fault: HTTP {code}"),
            None,
        ),
        stall => {
            if let Some(Fault::Stall(d)) = stall {
                tokio::time::sleep(d).await;
            }
            route(
                &shared,
                &parts.method,
                parts.uri.path(),
                Call {
                    target: Target {
                        group: String::new(),
                        version: String::new(),
                        namespace: None,
                        plural: String::new(),
                        name: None,
                        subresource: None,
                    },
                    query,
                    content_type: content_type.clone().unwrap_or_default(),
                    body,
                    body_error,
                    user_agent: header_str(header::USER_AGENT).unwrap_or_default(),
                },
            )
        }
    };
    if let Some(r) = shared.lock().requests.get_mut(index) {
        r.status = Some(response.status().as_u16());
    }
    let is_setup = parts.headers.contains_key(SETUP_HEADER);
    // A request made as another user (a kubeconfig's `as:`, e.g. a person running `tekflux
    // trace`) is authorized as that user, never by a function's Role: not the Roles' business.
    let as_another_user = parts.headers.contains_key("impersonate-user");
    if let Some(file) = shared
        .log_file
        .as_ref()
        .filter(|_| !is_setup && !as_another_user)
    {
        crate::request_log::append(
            file,
            &crate::request_log::LoggedRequest {
                method: parts.method.to_string(),
                path: parts.uri.path().to_owned(),
                query: parts.uri.query().unwrap_or_default().to_owned(),
                content_type,
                status: response.status().as_u16(),
            },
        );
    }
    response
}

pub(super) fn route(shared: &Arc<Shared>, method: &Method, path: &str, mut call: Call) -> Response {
    if let ("GET", "/.well-known/openid-configuration" | "/openid/v1/jwks") =
        (method.as_str(), path)
    {
        let oidc = shared.lock().oidc.clone();
        return match oidc {
            Some((discovery, _)) if path.starts_with("/.well-known") => {
                status::json_response(200, &discovery)
            }
            Some((_, jwks)) => status::json_response(200, &jwks),
            None => status::failure(
                404,
                "NotFound",
                "the server could not find the requested resource",
                None,
            ),
        };
    }
    if path == "/version" {
        return status::json_response(
            200,
            &json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-tekflux-test",
                "platform": "linux/amd64"}),
        );
    }
    let Some(target) = Target::parse(path) else {
        return status::failure(
            404,
            "NotFound",
            "the server could not find the requested resource",
            None,
        );
    };
    call.target = target;
    let t = &call.target;
    match (method.as_str(), t.name.as_deref(), t.subresource.as_deref()) {
        ("GET", None, _) if call.flag("watch") => watch(shared, &call),
        ("GET", None, _) => list(shared, &call),
        ("POST", None, _) => create(shared, &call),
        ("GET", Some(_), None | Some("status")) => get(shared, &call),
        ("GET", Some(_), Some("log")) if t.plural == "pods" && t.group.is_empty() => {
            pod_log(shared, &call)
        }
        ("PUT", Some(_), None | Some("status")) => replace(shared, &call),
        ("PATCH", Some(_), None | Some("status")) => patch(shared, &call),
        ("DELETE", Some(_), None) => delete(shared, &call),
        _ => status::failure(
            405,
            "MethodNotAllowed",
            format!(
                "the server does not allow this method on the requested resource: {method} {path}"
            ),
            None,
        ),
    }
}
