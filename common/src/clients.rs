//! Construction of the Kubernetes client every function injects into its state, from the
//! environment its platform already defines, as DESIGN.md asks: `KUBECONFIG` (or
//! `~/.kube/config`), else the pod's service account, through [`kube::Config::infer`]. Connect,
//! read and write timeouts come from `kubernetes.timeoutSeconds`, so a hung API server fails a
//! call (and the delivery is retried) instead of holding a request until Knative gives up on it.
//!
//! The S3 client is built where S3 is used: run-complete's `s3_client` module.
//!
//! The `*_from_*` variants take an already-built configuration, for tests and the CLI.
//!
//! [`get_text`] reads one object as the API server's text, for callers that parse only what
//! they read.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::KubernetesSettings;

/// Why a client could not be built. Messages name the file or variable involved and say what
/// to do; show them with their causes through [`crate::error::plain_chain`].
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `KUBECONFIG` is not set, `~/.kube/config` does not exist, and this is not a pod with a
    /// service account.
    #[error(
        "no Kubernetes configuration (set KUBECONFIG to a kubeconfig file): KUBECONFIG is not \
         set, {} does not exist, and the in-cluster service account is not usable",
        default_kubeconfig.display()
    )]
    NoConfig {
        /// Where a kubeconfig was looked for.
        default_kubeconfig: PathBuf,
        /// Why the in-cluster configuration is not usable.
        #[source]
        in_cluster: kube::config::InClusterError,
    },
    /// The kubeconfig file at `path` could not be read or does not describe a usable cluster.
    #[error("the kubeconfig {} cannot be used", path.display())]
    Kubeconfig {
        /// The kubeconfig file (or `KUBECONFIG`'s list of files).
        path: PathBuf,
        /// What was wrong with it.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// The configuration was read but the client could not be built from it (TLS material,
    /// credentials plugin, proxy).
    #[error("cannot build a Kubernetes client for {server}")]
    Kube {
        /// The API server's URL.
        server: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
}

impl ClientError {
    /// A short, stable name for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientError::NoConfig { .. } => "kube_config_missing",
            ClientError::Kubeconfig { .. } => "kubeconfig_invalid",
            ClientError::Kube { .. } => "kube_client",
        }
    }
}

/// A Kubernetes client and what it talks to, for the startup log line.
#[derive(Clone)]
pub struct KubeConnection {
    /// The client.
    pub client: kube::Client,
    /// The API server's URL.
    pub server: String,
    /// Where the configuration came from: `kubeconfig PATH, context NAME` or
    /// `in-cluster service account`.
    pub origin: String,
    /// The configuration the client was made from, for a client of another kind to the same
    /// cluster ([`kube_watch_client_from_config`]).
    pub config: kube::Config,
}

impl std::fmt::Debug for KubeConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeConnection")
            .field("server", &self.server)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// A Kubernetes client from `KUBECONFIG` or the in-cluster service account, with every call
/// bounded by `settings.timeout_seconds`.
///
/// The read timeout also applies to watches: a watch needs a client built with a longer timeout
/// than the server's bookmark interval.
pub async fn kube_client(settings: &KubernetesSettings) -> Result<kube::Client, ClientError> {
    kube_connection(settings).await.map(|c| c.client)
}

/// Like [`kube_client`], saying where the configuration came from.
///
/// The order is kubectl's and kube's: `KUBECONFIG` when set, else `~/.kube/config` when it
/// exists, else the pod's service account. Unlike [`kube::Config::infer`], a `KUBECONFIG` that
/// is set but unusable is an error naming it, not a silent fall-back to the service account.
pub async fn kube_connection(settings: &KubernetesSettings) -> Result<KubeConnection, ClientError> {
    let from_env = std::env::var_os("KUBECONFIG").filter(|value| !value.is_empty());
    let default_kubeconfig = std::env::home_dir()
        .unwrap_or_default()
        .join(".kube")
        .join("config");
    if let Some(paths) = from_env {
        // `read` merges KUBECONFIG's list of files, as kubectl does.
        let path = PathBuf::from(&paths);
        let kubeconfig =
            kube::config::Kubeconfig::read().map_err(|source| kubeconfig_error(&path, source))?;
        connection_from_kubeconfig(&path, kubeconfig, settings).await
    } else if default_kubeconfig.exists() {
        let kubeconfig = kube::config::Kubeconfig::read_from(&default_kubeconfig)
            .map_err(|source| kubeconfig_error(&default_kubeconfig, source))?;
        connection_from_kubeconfig(&default_kubeconfig, kubeconfig, settings).await
    } else {
        let config = kube::Config::incluster().map_err(|in_cluster| ClientError::NoConfig {
            default_kubeconfig,
            in_cluster,
        })?;
        let server = config.cluster_url.to_string();
        Ok(KubeConnection {
            client: kube_client_from_config(config.clone(), settings)?,
            server,
            origin: "in-cluster service account".to_owned(),
            config,
        })
    }
}

fn kubeconfig_error(path: &Path, source: kube::config::KubeconfigError) -> ClientError {
    ClientError::Kubeconfig {
        path: path.to_owned(),
        source,
    }
}

async fn connection_from_kubeconfig(
    path: &Path,
    kubeconfig: kube::config::Kubeconfig,
    settings: &KubernetesSettings,
) -> Result<KubeConnection, ClientError> {
    let context = kubeconfig.current_context.clone().unwrap_or_default();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(|source| kubeconfig_error(path, source))?;
    let server = config.cluster_url.to_string();
    Ok(KubeConnection {
        client: kube_client_from_config(config.clone(), settings)?,
        server,
        origin: format!("kubeconfig {}, context {context}", path.display()),
        config,
    })
}

/// A Kubernetes client from the kubeconfig file at `path` (its current context), with the same
/// timeouts as [`kube_client`].
pub async fn kube_client_from_kubeconfig(
    path: &Path,
    settings: &KubernetesSettings,
) -> Result<kube::Client, ClientError> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .map_err(|source| kubeconfig_error(path, source))?;
    connection_from_kubeconfig(path, kubeconfig, settings)
        .await
        .map(|c| c.client)
}

/// A Kubernetes client from an already-loaded `config`, with its timeouts replaced by
/// `settings.timeout_seconds`. A request that cannot reach the API server fails with
/// [`ApiServerUnreachable`], which names the server.
pub fn kube_client_from_config(
    config: kube::Config,
    settings: &KubernetesSettings,
) -> Result<kube::Client, ClientError> {
    client_with_read_timeout(config, settings, request_timeout(settings))
}

/// How long a watch may stay quiet before its client gives up: longer than the longest watch
/// the functions ask for (290 s, which kube allows), as kube-runtime's watcher does.
pub const WATCH_READ_TIMEOUT: Duration = Duration::from_secs(295);

/// A client for watches, from an already-loaded `config`: like [`kube_client_from_config`],
/// but a response may stay quiet for [`WATCH_READ_TIMEOUT`], so a watch is renewed every few
/// minutes rather than every `settings.timeout_seconds`. Only for watches: a request through
/// it waits that long for an API server that stops answering.
pub fn kube_watch_client_from_config(
    config: kube::Config,
    settings: &KubernetesSettings,
) -> Result<kube::Client, ClientError> {
    client_with_read_timeout(config, settings, WATCH_READ_TIMEOUT)
}

fn request_timeout(settings: &KubernetesSettings) -> Duration {
    // Zero would mean "fail at once" to the connector; treat it as the smallest useful bound.
    Duration::from_secs(settings.timeout_seconds.max(1))
}

fn client_with_read_timeout(
    mut config: kube::Config,
    settings: &KubernetesSettings,
    read_timeout: Duration,
) -> Result<kube::Client, ClientError> {
    let timeout = request_timeout(settings);
    config.connect_timeout = Some(timeout);
    config.read_timeout = Some(read_timeout);
    config.write_timeout = Some(timeout);
    // Otherwise the time a pooled connection sat idle counts against the next response's timeout.
    config.reset_reader_on_write = true;
    // kube would retry 429/503/504 itself, up to 15 times, while the sender waits; answering
    // 429/503 at once lets Knative's (or the provider's) own backoff retry the whole delivery.
    config.default_retry = false;
    install_crypto_provider();
    let server: std::sync::Arc<str> = config.cluster_url.to_string().into();
    let builder =
        kube::client::ClientBuilder::try_from(config).map_err(|source| ClientError::Kube {
            server: server.to_string(),
            source,
        })?;
    let name_the_server = tower::util::MapErrLayer::new(move |error: tower::BoxError| {
        // kube's own errors (credentials, request building) keep their meaning.
        if error.is::<kube::Error>() {
            error
        } else {
            Box::new(ApiServerUnreachable {
                server: server.to_string(),
                source: error,
            }) as tower::BoxError
        }
    });
    Ok(builder.with_layer(&name_the_server).build())
}

/// The API server could not be reached or did not answer in time (a connection refused, a
/// name that does not resolve, TLS, a timeout).
#[derive(Debug, thiserror::Error)]
#[error("cannot reach the Kubernetes API server {server}")]
pub struct ApiServerUnreachable {
    /// The API server's URL.
    pub server: String,
    /// What the connection said.
    #[source]
    pub source: tower::BoxError,
}

/// Installs rustls' `ring` provider as the process default, once; later calls do nothing.
///
/// `ring` is the only provider compiled in (kube, reqwest and the S3 client all use it), so
/// rustls would pick it by itself; installing it explicitly keeps kube's TLS setup from
/// panicking should a dependency ever enable a second provider. A provider installed earlier by
/// `main` is kept.
pub fn install_crypto_provider() {
    // The only error is "already installed", which is the outcome wanted.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// `GET` of the object `name` that `api` addresses, its answer kept as the API server's text:
/// `Api::get` would take the whole object through `K` (a `DynamicObject`, for the functions)
/// before the caller parses the part it reads. A missing object is the usual
/// `kube::Error::Api` with a 404 status.
///
/// # Errors
/// What [`kube::Client::request_text`] returns.
pub async fn get_text<K: kube::Resource>(
    client: &kube::Client,
    api: &kube::Api<K>,
    name: &str,
) -> kube::Result<String> {
    let mut request = kube::core::Request::new(api.resource_url())
        .get(name, &kube::api::GetParams::default())
        .map_err(kube::Error::BuildRequest)?;
    // The verb kube's own `Api` methods tag their requests with.
    request.extensions_mut().insert("get");
    client.request_text(request).await
}
