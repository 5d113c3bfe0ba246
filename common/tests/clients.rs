//! The production Kubernetes client constructors, against real servers on loopback.

use std::error::Error as _;
use std::io::Write as _;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use tekflux_common::clients::{
    ClientError, kube_client_from_config, kube_client_from_kubeconfig,
    kube_watch_client_from_config,
};
use tekflux_common::config::KubernetesSettings;
use tokio::net::TcpListener;

/// Far above the 1 s client timeout, only so a regression fails instead of hanging the suite.
const HANG_GUARD: Duration = Duration::from_secs(60);

/// A loopback "API server" that accepts connections and never answers.
async fn silent_server() -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    (url, task)
}

fn is_timeout(err: &kube::Error) -> bool {
    let mut cause: Option<&dyn std::error::Error> = Some(err);
    while let Some(current) = cause {
        if let Some(io) = current.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return true;
        }
        cause = current.source();
    }
    false
}

async fn get_bounded(client: kube::Client) -> kube::Error {
    let api: kube::Api<ConfigMap> = kube::Api::namespaced(client, "cicd");
    let outcome = tokio::time::timeout(HANG_GUARD, api.get("anything"))
        .await
        .expect("the client's own timeout must end the call");
    outcome.expect_err("a server that never answers cannot succeed")
}

#[tokio::test]
async fn kube_client_times_out_against_a_silent_server() {
    let (url, server) = silent_server().await;
    let config = kube::Config::new(url.parse().expect("cluster URL"));
    let client = kube_client_from_config(config, &KubernetesSettings { timeout_seconds: 1 })
        .expect("build the client");

    let err = get_bounded(client).await;
    assert!(is_timeout(&err), "expected a timeout, got {err:?}");
    server.abort();
}

#[tokio::test]
async fn a_quiet_watch_outlasts_the_request_timeout_only_through_the_watch_client() {
    use futures::TryStreamExt as _;
    use kube::api::WatchParams;
    let api_server = tekflux_testkit::kube_api::TestApiServer::start().await;
    let settings = KubernetesSettings { timeout_seconds: 1 };
    // Nothing to watch: the test server sends no line until it ends the watch after 3 s.
    let watch = |client: kube::Client| async move {
        let api: kube::Api<ConfigMap> = kube::Api::namespaced(client, "cicd");
        let events = api.watch(&WatchParams::default().timeout(3), "0").await?;
        let mut events = std::pin::pin!(events);
        tokio::time::timeout(HANG_GUARD, events.try_next())
            .await
            .expect("the watch must end by itself")
    };

    // Requests of a test of the constructors, not of a function: kept out of the RBAC check.
    let requests = kube_client_from_config(api_server.setup_config(), &settings).expect("client");
    let err = watch(requests)
        .await
        .expect_err("quiet for longer than the read timeout");
    assert!(is_timeout(&err), "expected a timeout, got {err:?}");

    let watcher =
        kube_watch_client_from_config(api_server.setup_config(), &settings).expect("client");
    let ended = watch(watcher)
        .await
        .expect("the watch ends at its own timeout");
    assert!(ended.is_none(), "{ended:?}");
}

#[tokio::test]
async fn kube_client_from_kubeconfig_applies_the_timeout() {
    let (url, server) = silent_server().await;
    let mut kubeconfig = tempfile::NamedTempFile::new().expect("temp file");
    write!(
        kubeconfig,
        "apiVersion: v1
kind: Config
clusters:
- name: test
  cluster: {{ server: '{url}' }}
users:
- name: test
  user: {{ token: not-a-secret }}
contexts:
- name: test
  context: {{ cluster: test, user: test, namespace: cicd }}
current-context: test
"
    )
    .expect("write kubeconfig");

    let client = kube_client_from_kubeconfig(
        kubeconfig.path(),
        &KubernetesSettings { timeout_seconds: 1 },
    )
    .await
    .expect("build the client");
    assert_eq!(client.default_namespace(), "cicd");

    let err = get_bounded(client).await;
    assert!(is_timeout(&err), "expected a timeout, got {err:?}");
    server.abort();
}

#[tokio::test]
async fn kube_client_from_a_missing_kubeconfig_names_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("absent-kubeconfig");
    let Err(err) = kube_client_from_kubeconfig(&path, &KubernetesSettings::default()).await else {
        panic!("no file, no client");
    };
    assert!(matches!(err, ClientError::Kubeconfig { .. }), "{err:?}");
    assert_eq!(err.kind(), "kubeconfig_invalid");
    assert!(err.to_string().contains("absent-kubeconfig"), "{err}");
    assert!(err.source().is_some());
}

#[tokio::test]
async fn an_unreachable_api_server_is_named_in_plain_words() {
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port")
        .local_addr()
        .expect("its address")
        .port();
    let url = format!("http://127.0.0.1:{port}").parse().expect("a URL");
    let client = kube_client_from_config(kube::Config::new(url), &KubernetesSettings::default())
        .expect("build the client");
    let api: kube::Api<ConfigMap> = kube::Api::namespaced(client, "cicd");
    let error = api
        .get("anything")
        .await
        .expect_err("nothing listens there");
    let answered = tekflux_common::Error::from(error);
    assert_eq!(answered.kind(), "unavailable");
    let message = answered.to_string();
    assert!(
        message.starts_with(&format!(
            "cannot reach the Kubernetes API server http://127.0.0.1:{port}/: "
        )) && message.ends_with("Connection refused"),
        "{message}"
    );
}
