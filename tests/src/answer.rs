//! Reading a function's answer in tests: status, headers (where a binary-mode reply's `ce-*`
//! attributes are) and the body as JSON.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::Value;

/// Splits `response` into status, headers and body; the body is `Value::Null` when it is not
/// JSON.
///
/// # Panics
/// When the body cannot be read or exceeds 16 MiB.
pub async fn answer(response: Response<Body>) -> (StatusCode, HeaderMap, Value) {
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), 16 << 20)
        .await
        .expect("read the response body");
    (
        status,
        headers,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    )
}
