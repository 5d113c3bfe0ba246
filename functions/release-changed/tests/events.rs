//! release-changed's answers until applying releases lands: accepted types are kept for retry
//! (503), others refused.

#![allow(clippy::unwrap_used)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use tower::ServiceExt;

async fn send(event_type: &str) -> StatusCode {
    let request = Request::post("/")
        .header("ce-specversion", "1.0")
        .header("ce-id", "1")
        .header("ce-type", event_type)
        .header("ce-source", "https://github.com/acme/shop")
        .header("content-type", "application/json")
        .body(Body::from("{}"))
        .unwrap();
    tekflux_release_changed::app(tekflux_release_changed::AppState::default())
        .oneshot(request)
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn accepted_types_are_retried_and_others_refused() {
    for ty in tekflux_release_changed::ACCEPTED_TYPES {
        assert_eq!(send(ty).await, StatusCode::SERVICE_UNAVAILABLE, "{ty}");
    }
    assert_eq!(
        send("dev.tekton.event.taskrun.successful.v1").await,
        StatusCode::BAD_REQUEST
    );
}
