//! How each provider answers a request: its checks of path, method, auth and body, the
//! GitHub App token exchange and check runs, and the scripted failures.

use super::*;

pub(super) fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "message": message }))).into_response()
}

pub(super) fn answer(
    shared: &Shared,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: &Value,
) -> Response {
    let flavor = shared.flavor;
    {
        let mut log = shared.log.lock().unwrap_or_else(PoisonError::into_inner);
        if log.down {
            return error(StatusCode::SERVICE_UNAVAILABLE, "down for maintenance");
        }
        if let Some(scripted) = log.script.pop_front() {
            return scripted_answer(flavor, scripted);
        }
    }
    if method != Method::POST {
        return error(StatusCode::METHOD_NOT_ALLOWED, "POST only");
    }
    let Some(rest) = path.strip_prefix(flavor.base_path()) else {
        return error(StatusCode::NOT_FOUND, "Not Found");
    };
    let auth = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(app) = &shared.app {
        return app_answer(shared, app, rest, auth("authorization"), body);
    }
    // Auth first, as the providers do: a bad token never learns whether a repository exists.
    let authorized = match flavor {
        StatusFlavor::Github | StatusFlavor::GithubEnterprise | StatusFlavor::Bitbucket => {
            auth("authorization") == Some(&format!("Bearer {}", shared.token))
        }
        StatusFlavor::Gitlab => {
            auth("private-token") == Some(shared.token.as_str())
                || auth("authorization") == Some(&format!("Bearer {}", shared.token))
        }
        StatusFlavor::Gitea => auth("authorization") == Some(&format!("token {}", shared.token)),
    };
    if !authorized {
        return error(StatusCode::UNAUTHORIZED, "Bad credentials");
    }
    if matches!(
        flavor,
        StatusFlavor::Github | StatusFlavor::GithubEnterprise
    ) && auth("user-agent").is_none()
    {
        return error(
            StatusCode::FORBIDDEN,
            "Request forbidden by administrative rules. Please make sure your request has a User-Agent header",
        );
    }
    let segments: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    let (repository, sha) = match (flavor, segments.as_slice()) {
        (
            StatusFlavor::Github | StatusFlavor::GithubEnterprise | StatusFlavor::Gitea,
            ["repos", owner, name, "statuses", sha],
        ) => (format!("{owner}/{name}"), *sha),
        (StatusFlavor::Gitlab, ["projects", project, "statuses", sha]) => {
            (project.replace("%2F", "/").replace("%2f", "/"), *sha)
        }
        (
            StatusFlavor::Bitbucket,
            [
                "repositories",
                workspace,
                slug,
                "commit",
                sha,
                "statuses",
                "build",
            ],
        ) => (format!("{workspace}/{slug}"), *sha),
        _ => return error(StatusCode::NOT_FOUND, "Not Found"),
    };
    if !shared.repositories.contains(&repository) {
        return error(StatusCode::NOT_FOUND, "Not Found");
    }
    if sha.len() != 40 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "No commit found for SHA");
    }
    let text = |key: &str| body.get(key).and_then(Value::as_str).map(str::to_owned);
    let description = text("description").unwrap_or_default();
    let (context, state, target_url) = match flavor {
        StatusFlavor::Github | StatusFlavor::GithubEnterprise | StatusFlavor::Gitea => {
            let states: &[&str] = if flavor == StatusFlavor::Gitea {
                &[
                    "pending", "success", "error", "failure", "warning", "skipped",
                ]
            } else {
                &["error", "failure", "pending", "success"]
            };
            let Some(state) = text("state").filter(|s| states.contains(&s.as_str())) else {
                return error(StatusCode::UNPROCESSABLE_ENTITY, "Validation Failed: state");
            };
            if description.chars().count() > 140 {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Validation Failed: description is too long (maximum is 140 characters)",
                );
            }
            if description.chars().any(|c| c.len_utf8() == 4) {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Validation Failed: description",
                );
            }
            let context = text("context").unwrap_or_else(|| "default".to_owned());
            (context, state, text("target_url"))
        }
        StatusFlavor::Gitlab => {
            let states = ["pending", "running", "success", "failed", "canceled"];
            let Some(state) = text("state").filter(|s| states.contains(&s.as_str())) else {
                return error(StatusCode::BAD_REQUEST, "state does not have a valid value");
            };
            let context = text("name")
                .or_else(|| text("context"))
                .unwrap_or_else(|| "default".to_owned());
            (context, state, text("target_url"))
        }
        StatusFlavor::Bitbucket => {
            let states = ["INPROGRESS", "SUCCESSFUL", "FAILED", "STOPPED"];
            let Some(state) = text("state").filter(|s| states.contains(&s.as_str())) else {
                return error(StatusCode::BAD_REQUEST, "state: invalid");
            };
            let Some(key) = text("key").filter(|k| !k.is_empty() && k.chars().count() <= 40) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "key: Ensure this value has at most 40 characters",
                );
            };
            let Some(url) = text("url").filter(|u| u.len() < 450) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "url: required, under 450 characters",
                );
            };
            if text("name").is_some_and(|n| n.chars().count() >= 255) {
                return error(StatusCode::BAD_REQUEST, "name: too long");
            }
            (key, state, Some(url))
        }
    };
    let mut log = shared.log.lock().unwrap_or_else(PoisonError::into_inner);
    let same =
        |s: &&AcceptedStatus| s.repository == repository && s.sha == sha && s.context == context;
    if flavor == StatusFlavor::Gitlab
        && log
            .accepted
            .iter()
            .rev()
            .find(same)
            .is_some_and(|s| s.state == state)
    {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("Cannot transition status via :run from :{state}"),
        );
    }
    if log.accepted.iter().filter(same).count() >= 1000 {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "This SHA and context has reached the maximum number of statuses.",
        );
    }
    let accepted = AcceptedStatus {
        repository,
        sha: sha.to_owned(),
        context: context.clone(),
        state: state.clone(),
        description: description.clone(),
        target_url: target_url.clone(),
    };
    log.accepted.push(accepted);
    (
        StatusCode::CREATED,
        axum::Json(json!({
            "id": log.accepted.len(), "state": state, "context": context,
            "description": description, "target_url": target_url,
        })),
    )
        .into_response()
}

/// GitHub as an App sees it: installation tokens for a signed JWT, check runs for those tokens.
pub(super) fn app_answer(
    shared: &Shared,
    app: &App,
    rest: &str,
    authorization: Option<&str>,
    body: &Value,
) -> Response {
    let bearer = authorization.and_then(|value| value.strip_prefix("Bearer "));
    let segments: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["app", "installations", installation, "access_tokens"] => {
            let Some(jwt) = bearer else {
                return error(
                    StatusCode::UNAUTHORIZED,
                    "A JSON web token could not be decoded",
                );
            };
            // GitHub's checks: RS256 by the App's key, issued by the App, not expired.
            let now = chrono::Utc::now().timestamp();
            let claims = crate::jwt::verified_rs256_claims(jwt, &app.public_der).filter(|claims| {
                claims["iss"].as_str().and_then(|iss| iss.parse().ok()) == Some(app.id)
                    && claims["iat"].is_u64()
                    && claims["exp"].as_i64().is_some_and(|exp| exp > now)
            });
            let Some(claims) = claims else {
                return error(
                    StatusCode::UNAUTHORIZED,
                    "A JSON web token could not be decoded",
                );
            };
            let (iat, exp) = (claims["iat"].as_u64(), claims["exp"].as_u64());
            if !matches!((iat, exp), (Some(iat), Some(exp)) if exp > iat && exp - iat <= 660) {
                return error(
                    StatusCode::UNAUTHORIZED,
                    "'Expiration time' claim ('exp') is too far in the future",
                );
            }
            if *installation != app.installation.to_string() {
                return error(StatusCode::NOT_FOUND, "Not Found");
            }
            let token = format!("ghs_{}", uuid::Uuid::new_v4().simple());
            let mut log = shared.log.lock().unwrap_or_else(PoisonError::into_inner);
            log.issued.push(token.clone());
            let expires = chrono::Utc::now() + chrono::Duration::hours(1);
            (
                StatusCode::CREATED,
                axum::Json(json!({"token": token, "expires_at": expires.to_rfc3339()})),
            )
                .into_response()
        }
        ["repos", owner, name, "check-runs"] => {
            let issued = {
                let log = shared.log.lock().unwrap_or_else(PoisonError::into_inner);
                bearer.is_some_and(|token| log.issued.iter().any(|t| t == token))
            };
            if !issued {
                return error(StatusCode::UNAUTHORIZED, "Bad credentials");
            }
            let repository = format!("{owner}/{name}");
            if !shared.repositories.contains(&repository) {
                return error(StatusCode::NOT_FOUND, "Not Found");
            }
            let text = |key: &str| body.get(key).and_then(Value::as_str).map(str::to_owned);
            let invalid = |what: &str| {
                error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &format!("Invalid request: {what}"),
                )
            };
            let Some(check) = text("name").filter(|n| !n.is_empty()) else {
                return invalid("name");
            };
            let Some(sha) = text("head_sha")
                .filter(|s| s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit()))
            else {
                return invalid("head_sha");
            };
            let status = text("status").unwrap_or_else(|| "queued".to_owned());
            let conclusions = [
                "action_required",
                "cancelled",
                "failure",
                "neutral",
                "success",
                "skipped",
                "timed_out",
            ];
            let conclusion = text("conclusion");
            let state = match (status.as_str(), conclusion) {
                ("queued" | "in_progress", None) => status.clone(),
                ("completed", Some(c)) if conclusions.contains(&c.as_str()) => c,
                _ => return invalid("status and conclusion"),
            };
            let output = body.get("output");
            let summary = output
                .and_then(|o| o.get("summary"))
                .and_then(Value::as_str);
            if output.is_some() && summary.is_none_or(|s| s.chars().count() > 65535) {
                return invalid("output.summary");
            }
            let mut log = shared.log.lock().unwrap_or_else(PoisonError::into_inner);
            log.accepted.push(AcceptedStatus {
                repository,
                sha,
                context: check,
                state,
                description: output
                    .and_then(|o| o.get("title"))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                target_url: text("details_url"),
            });
            (
                StatusCode::CREATED,
                axum::Json(json!({"id": log.accepted.len(), "status": status})),
            )
                .into_response()
        }
        _ => error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

pub(super) fn scripted_answer(flavor: StatusFlavor, scripted: Scripted) -> Response {
    match scripted {
        Scripted::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            error(status, status.canonical_reason().unwrap_or("error"))
        }
        Scripted::RetryAfter(seconds) => {
            let mut response = error(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests");
            if let Ok(value) = seconds.to_string().parse() {
                response.headers_mut().insert("retry-after", value);
            }
            response
        }
        Scripted::ResetIn(seconds) => {
            let reset = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
                + seconds;
            let (status, header) = match flavor {
                // GitHub's primary limit is a 403 with the remaining count at 0.
                StatusFlavor::Github | StatusFlavor::GithubEnterprise => {
                    (StatusCode::FORBIDDEN, "x-ratelimit-reset")
                }
                StatusFlavor::Gitlab => (StatusCode::TOO_MANY_REQUESTS, "ratelimit-reset"),
                _ => (StatusCode::TOO_MANY_REQUESTS, "x-ratelimit-reset"),
            };
            let mut response = error(status, "API rate limit exceeded");
            let headers = response.headers_mut();
            if let Ok(value) = reset.to_string().parse() {
                headers.insert(header, value);
            }
            headers.insert("x-ratelimit-remaining", http::HeaderValue::from_static("0"));
            response
        }
    }
}
