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

/// Sends `request` on a fresh HTTP/1 connection to `addr`, as a remote sender would, and reads
/// the answer like [`answer`].
///
/// # Panics
/// When the connection or the exchange fails.
pub async fn over_tcp(
    addr: std::net::SocketAddr,
    request: axum::http::Request<Body>,
) -> (StatusCode, HeaderMap, Value) {
    use http_body_util::BodyExt;
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the server");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("HTTP/1 handshake");
    tokio::spawn(connection);
    let (mut parts, body) = request.into_parts();
    if let Ok(host) = addr.to_string().parse() {
        parts.headers.insert("host", host);
    }
    let bytes = body
        .collect()
        .await
        .expect("read the request body")
        .to_bytes();
    let request = axum::http::Request::from_parts(parts, http_body_util::Full::new(bytes));
    let response = sender
        .send_request(request)
        .await
        .expect("send the request");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("read the response body")
        .to_bytes();
    (
        status,
        headers,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}
