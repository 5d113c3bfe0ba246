//! CloudEvent sender authentication over a real socket: Knative sender identities (service-account
//! JWTs) verified against keys the test API server publishes as a cluster's issuer does, through
//! the real `kube::Client`; the static token; `insecure`; and what each refusal is answered and
//! counted as.

#![allow(clippy::unwrap_used)] // tests may unwrap; a failure is the point

use std::net::SocketAddr;

use axum::Router;
use axum::middleware;
use axum::routing::post;
use serde_json::{Value, json};
use tekflux_common::clients::kube_client_from_config;
use tekflux_common::config::{Config, Env, KubernetesSettings, ServerSettings};
use tekflux_common::sender::{Receiver, SenderAuth, require_sender};
use tekflux_common::server::{self, ServerState};
use tekflux_testkit::kube_api::TestApiServer;
use tekflux_testkit::oidc::{SigningKey, TestIssuer};

const AUDIENCE: &str = "tekflux/git-push";
const TRIGGER: &str =
    "system:serviceaccount:cicd:git-push-github-oidc-eventing.knative.dev-trigger";
const TOKEN: &str = "static-events-token-for-tests";

const CONFIG: &str = r#"
events:
  token: env:EVENTS_TOKEN
  oidc:
    gitPush:
      senders:
        - system:serviceaccount:cicd:git-push-github-oidc-eventing.knative.dev-trigger
        - system:serviceaccount:tools:ci-*
"#;

struct Harness {
    api: TestApiServer,
    issuer: TestIssuer,
    url: String,
    metrics_url: String,
    http: reqwest::Client,
}

impl Harness {
    async fn new(config: &str) -> Self {
        let api = TestApiServer::start().await;
        let issuer = TestIssuer::new();
        issuer.publish(&api);
        let kube =
            kube_client_from_config(api.config(), &KubernetesSettings { timeout_seconds: 5 })
                .unwrap();
        let env = Env::new().with("EVENTS_TOKEN", TOKEN);
        let config = Config::from_yaml(config, "test.yaml", &env).unwrap();
        let state = ServerState::new(ServerSettings::default());
        let auth = SenderAuth::new(
            Receiver::GitPush,
            &config.events,
            Some(kube),
            &state.metrics,
        );
        let routes = Router::new().route(
            "/",
            post(|| async { "accepted" })
                .layer(middleware::from_fn_with_state(auth, require_sender)),
        );
        let app = server::router(routes, state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Harness {
            api,
            issuer,
            url: format!("http://{addr}/"),
            metrics_url: format!("http://{addr}/metrics"),
            http: reqwest::Client::new(),
        }
    }

    /// Sends a CloudEvent with `authorization` (if any) and returns the status and JSON body.
    async fn send(&self, authorization: Option<String>) -> (u16, Value) {
        let mut request = self
            .http
            .post(&self.url)
            .header("ce-specversion", "1.0")
            .header("ce-id", "1")
            .header("ce-type", "dev.tekflux.git.pushed.v1")
            .header("ce-source", "https://example.com")
            .header("content-type", "application/json")
            .body("{}");
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(json!(text)))
    }

    async fn bearer(&self, token: String) -> (u16, Value) {
        self.send(Some(format!("Bearer {token}"))).await
    }

    async fn metrics(&self) -> String {
        self.http
            .get(&self.metrics_url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    fn jwks_fetches(&self) -> usize {
        self.api
            .requests()
            .iter()
            .filter(|request| request.path == "/openid/v1/jwks")
            .count()
    }

    async fn assert_refused(&self, token: String, status: u16, reason: &str) {
        let (got, body) = self.bearer(token).await;
        assert_eq!(got, status, "{body}");
        let metrics = self.metrics().await;
        let line =
            format!(r#"tekflux_events_refused_total{{function="git-push",reason="{reason}"}} 1"#);
        assert!(metrics.contains(&line), "{line} not in\n{metrics}");
    }
}

#[tokio::test]
async fn a_knative_sender_identity_is_accepted() {
    let h = Harness::new(CONFIG).await;
    let token = h.issuer.token(AUDIENCE, TRIGGER).sign();
    let (status, body) = h.bearer(token.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!("accepted"));
    // The keys are cached: a second request fetches nothing.
    assert_eq!(h.bearer(token).await.0, 200);
    assert_eq!(h.jwks_fetches(), 1);
    let metrics = h.metrics().await;
    assert!(
        metrics
            .contains(r#"tekflux_events_authenticated_total{function="git-push",method="oidc"} 2"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn ecdsa_keys_and_trailing_star_senders_are_accepted() {
    let h = Harness::new(CONFIG).await;
    let token = h
        .issuer
        .token(AUDIENCE, "system:serviceaccount:tools:ci-nightly")
        .signed_with(h.issuer.key("ec-1"))
        .sign();
    let (status, body) = h.bearer(token).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn the_static_token_is_accepted_and_a_wrong_one_refused() {
    let h = Harness::new(CONFIG).await;
    assert_eq!(h.bearer(TOKEN.to_owned()).await.0, 200);
    h.assert_refused("not-the-token".to_owned(), 401, "wrong_token")
        .await;
    // Static tokens never reach the issuer.
    assert_eq!(h.jwks_fetches(), 0);
}

/// Senders that can put credentials only in a URL (Tekton's `config-events` sink,
/// `http://tekflux:<token>@host/broker`) send Basic: the static token is accepted as its
/// password, and only there; a Basic password never reaches the OIDC issuer.
#[tokio::test]
async fn the_static_token_is_accepted_as_a_basic_password() {
    use base64::Engine as _;
    let basic = |text: &str| {
        Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(text)
        ))
    };
    let h = Harness::new(CONFIG).await;
    assert_eq!(h.send(basic(&format!("tekflux:{TOKEN}"))).await.0, 200);
    assert_eq!(h.send(basic(&format!("any-user:{TOKEN}"))).await.0, 200);
    for refused in ["tekflux:not-the-token", &format!("{TOKEN}:"), TOKEN] {
        assert_eq!(h.send(basic(refused)).await.0, 401, "{refused}");
    }
    assert_eq!(h.jwks_fetches(), 0);
}

#[tokio::test]
async fn no_credentials_are_refused_with_a_hint() {
    let h = Harness::new(CONFIG).await;
    let (status, body) = h.send(None).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "unauthorized");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("Authorization: Bearer"),
        "{body}"
    );
    let (status, _) = h.send(Some(format!("Basic {TOKEN}"))).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn another_audience_is_refused() {
    let h = Harness::new(CONFIG).await;
    let token = h.issuer.token("tekflux/release-changed", TRIGGER).sign();
    h.assert_refused(token, 401, "wrong_audience").await;
}

#[tokio::test]
async fn another_issuer_is_refused() {
    let h = Harness::new(CONFIG).await;
    let token = h
        .issuer
        .token(AUDIENCE, TRIGGER)
        .claim("iss", json!("https://evil.example.com"))
        .sign();
    h.assert_refused(token, 401, "wrong_issuer").await;
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let h = Harness::new(CONFIG).await;
    // Past the 60 s leeway.
    let token = h.issuer.token(AUDIENCE, TRIGGER).expires_in(-120).sign();
    h.assert_refused(token, 401, "expired").await;
}

#[tokio::test]
async fn a_token_not_valid_yet_is_refused() {
    let h = Harness::new(CONFIG).await;
    let later = chrono::Utc::now().timestamp() + 600;
    let token = h
        .issuer
        .token(AUDIENCE, TRIGGER)
        .claim("nbf", json!(later))
        .sign();
    h.assert_refused(token, 401, "not_yet_valid").await;
}

#[tokio::test]
async fn a_bad_signature_is_refused() {
    let h = Harness::new(CONFIG).await;
    // Signed with a key the issuer does not publish, under the id of one it does.
    let token = h
        .issuer
        .token(AUDIENCE, TRIGGER)
        .signed_with(SigningKey::rsa("rsa-1", 2))
        .sign();
    h.assert_refused(token, 401, "bad_signature").await;
}

#[tokio::test]
async fn a_tampered_payload_is_refused() {
    let h = Harness::new(CONFIG).await;
    let token = h
        .issuer
        .token(AUDIENCE, "system:serviceaccount:cicd:builder")
        .sign();
    let other = h.issuer.token(AUDIENCE, TRIGGER).sign();
    // The allowed subject's payload under the other token's signature.
    let parts: Vec<&str> = token.split('.').collect();
    let payload = other.split('.').nth(1).unwrap();
    let forged = format!("{}.{}.{}", parts[0], payload, parts[2]);
    h.assert_refused(forged, 401, "bad_signature").await;
}

#[tokio::test]
async fn an_unknown_key_id_is_refused_after_one_refresh() {
    let h = Harness::new(CONFIG).await;
    assert_eq!(
        h.bearer(h.issuer.token(AUDIENCE, TRIGGER).sign()).await.0,
        200
    );
    assert_eq!(h.jwks_fetches(), 1);
    let token = h
        .issuer
        .token(AUDIENCE, TRIGGER)
        .signed_with(SigningKey::rsa("rsa-unpublished", 2))
        .sign();
    h.assert_refused(token.clone(), 401, "unknown_key").await;
    assert_eq!(h.jwks_fetches(), 2, "one refresh for the unknown key id");
    // Made-up key ids do not turn into a flood of API calls.
    for _ in 0..5 {
        assert_eq!(h.bearer(token.clone()).await.0, 401);
    }
    assert_eq!(h.jwks_fetches(), 2);
}

#[tokio::test]
async fn a_rotated_key_is_fetched_and_accepted() {
    let h = Harness::new(CONFIG).await;
    assert_eq!(
        h.bearer(h.issuer.token(AUDIENCE, TRIGGER).sign()).await.0,
        200
    );
    let rotated = h.issuer.with_keys(vec![SigningKey::rsa("rsa-2", 2)]);
    rotated.publish(&h.api);
    let (status, body) = h.bearer(rotated.token(AUDIENCE, TRIGGER).sign()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(h.jwks_fetches(), 2);
}

#[tokio::test]
async fn a_disallowed_subject_is_forbidden() {
    let h = Harness::new(CONFIG).await;
    // A build pod's own service account, with a token minted for git-push's audience.
    let token = h
        .issuer
        .token(AUDIENCE, "system:serviceaccount:cicd:pipeline-runner")
        .sign();
    h.assert_refused(token, 403, "sender_not_allowed").await;
}

#[tokio::test]
async fn alg_none_is_refused() {
    let h = Harness::new(CONFIG).await;
    let token = h.issuer.token(AUDIENCE, TRIGGER).unsigned();
    // `none` is no algorithm a verifier knows: the header itself is refused.
    h.assert_refused(token, 401, "malformed_token").await;
    assert_eq!(h.jwks_fetches(), 0, "refused before any key is looked up");
}

#[tokio::test]
async fn a_token_without_a_subject_is_refused() {
    let h = Harness::new(CONFIG).await;
    let token = h
        .issuer
        .token(AUDIENCE, TRIGGER)
        .claim("sub", Value::Null)
        .sign();
    h.assert_refused(token, 401, "missing_claim").await;
}

#[tokio::test]
async fn an_issuer_that_cannot_be_reached_is_answered_503() {
    let h = Harness::new(CONFIG).await;
    h.api
        .fail_next(1, tekflux_testkit::kube_api::Fault::Status(500));
    let token = h.issuer.token(AUDIENCE, TRIGGER).sign();
    h.assert_refused(token.clone(), 503, "issuer_unavailable")
        .await;
    // The sender's retry goes through.
    assert_eq!(h.bearer(token).await.0, 200);
}

#[tokio::test]
async fn without_any_method_everything_is_refused_unless_insecure() {
    let h = Harness::new("namespace: cicd\n").await;
    assert_eq!(h.send(None).await.0, 401);
    let token = h.issuer.token(AUDIENCE, TRIGGER).sign();
    assert_eq!(h.bearer(token).await.0, 401);

    let open = Harness::new("events:\n  insecure: true\n").await;
    assert_eq!(open.send(None).await.0, 200);
    let metrics = open.metrics().await;
    assert!(
        metrics.contains(
            r#"tekflux_events_authenticated_total{function="git-push",method="insecure"} 1"#
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_pinned_issuer_is_the_only_one_accepted() {
    let config = format!("{CONFIG}    issuer: https://issuer.example.com\n");
    let h = Harness::new(&config).await;
    // The API server announces another issuer; the config's wins.
    let token = h.issuer.token(AUDIENCE, TRIGGER).sign();
    h.assert_refused(token, 401, "wrong_issuer").await;
    let token = h
        .issuer
        .token(AUDIENCE, TRIGGER)
        .claim("iss", json!("https://issuer.example.com"))
        .sign();
    assert_eq!(h.bearer(token).await.0, 200);
    let discovery = h
        .api
        .requests()
        .iter()
        .filter(|request| request.path.starts_with("/.well-known"))
        .count();
    assert_eq!(discovery, 0, "a pinned issuer needs no discovery");
}

#[tokio::test]
async fn an_hmac_token_keyed_with_public_material_is_refused() {
    let h = Harness::new(CONFIG).await;
    // The classic algorithm confusion: HS256 under a "secret" an attacker can know.
    let claims = json!({"iss": tekflux_testkit::oidc::ISSUER, "aud": [AUDIENCE], "sub": TRIGGER,
        "exp": chrono::Utc::now().timestamp() + 600});
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("rsa-1".to_owned());
    let key =
        jsonwebtoken::EncodingKey::from_secret(h.issuer.jwks().to_string().as_bytes()).unwrap();
    let token = jsonwebtoken::encode(&header, &claims, &key).unwrap();
    h.assert_refused(token, 401, "algorithm").await;
}
