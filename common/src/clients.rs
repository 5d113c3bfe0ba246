//! Construction of the Kubernetes and S3 clients every function injects into its state.
//!
//! Both come from the environment their platform already defines, as DESIGN.md asks:
//!
//! - Kubernetes: `KUBECONFIG` (or `~/.kube/config`), else the pod's service account, through
//!   [`kube::Config::infer`]. Connect, read and write timeouts come from `kubernetes.timeoutSeconds`,
//!   so a hung API server fails a call (and the delivery is retried) instead of holding a
//!   request until Knative gives up on it.
//! - S3: the AWS SDK's own chain (`AWS_ENDPOINT_URL_S3`, `AWS_REGION`, the credential chain: env,
//!   profile, web identity/IRSA, container credentials, and the EC2 instance metadata service only
//!   when requests go to AWS itself, see [`asks_instance_metadata`]), then `storage.endpoint` and
//!   `storage.region` from the config file on top ([`S3Setup`]). Checksums are computed and
//!   validated only when an operation requires them, because MinIO and other S3-compatible
//!   stores reject some of the SDK's default checksums.
//!
//! The `*_from_*` variants take an already-built configuration, for tests and the CLI.

use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};

use crate::config::{Env, KubernetesSettings, Storage};

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
            client: kube_client_from_config(config, settings)?,
            server,
            origin: "in-cluster service account".to_owned(),
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
        client: kube_client_from_config(config, settings)?,
        server,
        origin: format!("kubeconfig {}, context {context}", path.display()),
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
    mut config: kube::Config,
    settings: &KubernetesSettings,
) -> Result<kube::Client, ClientError> {
    // Zero would mean "fail at once" to the connector; treat it as the smallest useful bound.
    let timeout = Duration::from_secs(settings.timeout_seconds.max(1));
    config.connect_timeout = Some(timeout);
    config.read_timeout = Some(timeout);
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
/// kube enables rustls with `ring` and aws-sdk-s3 with `aws-lc-rs`, so rustls cannot choose a
/// default on its own and kube's TLS setup panics without one. `ring` is the provider kube is
/// built for here. A provider installed earlier by `main` is kept.
pub fn install_crypto_provider() {
    // The only error is "already installed", which is the outcome wanted.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// An S3 client from an already-loaded SDK configuration (static credentials in tests, say) with
/// `storage`'s endpoint, region, path-style addressing and the "when required" checksum modes.
pub fn s3_client_from_sdk_config(
    sdk: &aws_config::SdkConfig,
    storage: &Storage,
) -> aws_sdk_s3::Client {
    S3Setup::from_sdk_config(sdk.clone(), storage).client()
}

/// The SDK's switch for the EC2 instance metadata service: `true` never asks it; tekflux also
/// reads `false` as "ask it even with a custom endpoint" (see [`asks_instance_metadata`]).
pub const AWS_EC2_METADATA_DISABLED: &str = "AWS_EC2_METADATA_DISABLED";
/// The SDK's S3 endpoint variable.
pub const AWS_ENDPOINT_URL_S3: &str = "AWS_ENDPOINT_URL_S3";
/// The SDK's endpoint variable for every service.
pub const AWS_ENDPOINT_URL: &str = "AWS_ENDPOINT_URL";

/// Whether the EC2 instance metadata service (IMDS) is asked for the region and credentials.
///
/// IMDS can only give credentials for AWS itself, so it is asked only when requests go to AWS
/// S3: not when a custom endpoint (`storage.endpoint`, `AWS_ENDPOINT_URL_S3`,
/// `AWS_ENDPOINT_URL`) points at MinIO, SeaweedFS or another store. Off AWS the lookup can only
/// fail, slowly, and the SDK logs each failure as a warning (`FailedToLoadToken(…)`) on every
/// start. `AWS_EC2_METADATA_DISABLED=true` never asks it (the SDK's own meaning);
/// `AWS_EC2_METADATA_DISABLED=false` asks it even with a custom endpoint (an S3 VPC endpoint
/// reached by its own URL from an EC2 instance role).
pub fn asks_instance_metadata(storage: &Storage, env: &Env) -> bool {
    let switch = env
        .get_non_empty(AWS_EC2_METADATA_DISABLED)
        .map(|value| value.trim().to_ascii_lowercase());
    match switch.as_deref() {
        Some("true") => false,
        Some("false") => true,
        _ => {
            non_empty(&storage.endpoint).is_none()
                && env.get_non_empty(AWS_ENDPOINT_URL_S3).is_none()
                && env.get_non_empty(AWS_ENDPOINT_URL).is_none()
        }
    }
}

/// Where S3 requests go and how they are signed: the SDK's configuration with `storage`'s
/// overrides, loaded before any request so that a missing region or a malformed endpoint can be
/// reported as a configuration problem ([`S3Setup::check`]) instead of surfacing from the first
/// request.
#[derive(Debug, Clone)]
pub struct S3Setup {
    sdk: aws_config::SdkConfig,
    endpoint: Option<S3Endpoint>,
    region: Option<String>,
    force_path_style: bool,
}

/// The endpoint URL requests go to and the setting it came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Endpoint {
    /// The URL as configured.
    pub url: String,
    /// The setting that chose it, e.g. `storage.endpoint`.
    pub origin: &'static str,
}

/// Why S3 requests cannot be made with the configured settings: fixed by configuration, never
/// by retrying.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum S3SetupError {
    /// No region anywhere: requests cannot be signed (SigV4 signs the region).
    #[error(
        "no S3 region is set: set AWS_REGION (or storage.region, TEKFLUX_S3_REGION); for MinIO \
         and other S3-compatible stores any name the store accepts, usually us-east-1"
    )]
    NoRegion,
    /// The endpoint is not an http(s) URL with a host.
    #[error(
        "the S3 endpoint {url:?} (from {origin}) is not a URL: write it as \
         http(s)://host[:port], e.g. http://minio.minio.svc:9000"
    )]
    BadEndpoint {
        /// The endpoint as configured.
        url: String,
        /// The setting it came from.
        origin: &'static str,
    },
}

impl S3Setup {
    /// Loads the SDK's configuration from the environment (`AWS_*` variables, the AWS profile
    /// files) with `storage`'s endpoint and region on top. The region is taken from
    /// `storage.region`, else `AWS_REGION`/`AWS_DEFAULT_REGION`, else the profile; credentials
    /// from the environment, the profile, a web identity token (IRSA) or the container
    /// credentials endpoint (EKS Pod Identity, ECS). The instance metadata service comes last
    /// for both, only when [`asks_instance_metadata`] says so.
    ///
    /// `env` decides what tekflux itself reads (the IMDS switch); the SDK reads the process
    /// environment.
    pub async fn load(storage: &Storage, env: &Env) -> Self {
        use aws_config::environment::{
            EnvironmentVariableCredentialsProvider, EnvironmentVariableRegionProvider,
        };
        use aws_config::meta::credentials::CredentialsProviderChain;
        use aws_config::meta::region::RegionProviderChain;
        use aws_config::profile::{ProfileFileCredentialsProvider, ProfileFileRegionProvider};
        use aws_config::provider_config::ProviderConfig;

        let imds = asks_instance_metadata(storage, env);
        let mut regions = RegionProviderChain::first_try(
            non_empty(&storage.region).map(|region| Region::new(region.to_owned())),
        )
        .or_else(EnvironmentVariableRegionProvider::new())
        .or_else(ProfileFileRegionProvider::new());
        if imds {
            regions =
                regions.or_else(aws_config::imds::region::ImdsRegionProvider::builder().build());
        }
        let region = regions.region().await;

        // Profiles and web identity ask STS, which needs the region.
        let provider = ProviderConfig::default().with_region(region.clone());
        let mut credentials = CredentialsProviderChain::first_try(
            "Environment",
            EnvironmentVariableCredentialsProvider::new(),
        )
        .or_else(
            "Profile",
            ProfileFileCredentialsProvider::builder()
                .configure(&provider)
                .build(),
        )
        .or_else(
            "WebIdentityToken",
            aws_config::web_identity_token::WebIdentityTokenCredentialsProvider::builder()
                .configure(&provider)
                .build(),
        )
        .or_else(
            "EcsContainer",
            aws_config::ecs::EcsCredentialsProvider::builder()
                .configure(&provider)
                .build(),
        );
        if imds {
            credentials = credentials.or_else(
                "Ec2InstanceMetadata",
                aws_config::imds::credentials::ImdsCredentialsProvider::builder()
                    .configure(&provider)
                    .build(),
            );
        }
        // Both given, even an absent region: otherwise the loader runs its own default chains,
        // instance metadata included.
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(region)
            .credentials_provider(credentials)
            .load()
            .await;
        Self::from_sdk_config(sdk, storage)
    }

    /// An already-loaded SDK configuration (static credentials in tests, say) with `storage`'s
    /// endpoint, region and path-style addressing on top.
    pub fn from_sdk_config(sdk: aws_config::SdkConfig, storage: &Storage) -> Self {
        let endpoint = match non_empty(&storage.endpoint) {
            Some(url) => Some(S3Endpoint {
                url: url.to_owned(),
                origin: "storage.endpoint (or TEKFLUX_S3_ENDPOINT)",
            }),
            None => sdk_endpoint(&sdk).map(|url| S3Endpoint {
                url,
                origin: "AWS_ENDPOINT_URL_S3 (or AWS_ENDPOINT_URL, or the AWS profile)",
            }),
        };
        let region = non_empty(&storage.region)
            .map(str::to_owned)
            .or_else(|| sdk.region().map(ToString::to_string));
        Self {
            sdk,
            endpoint,
            region,
            force_path_style: storage.force_path_style,
        }
    }

    /// The custom endpoint requests go to; `None` means AWS S3 itself.
    pub fn endpoint(&self) -> Option<&S3Endpoint> {
        self.endpoint.as_ref()
    }

    /// The region requests are signed for.
    pub fn region(&self) -> Option<&str> {
        self.region.as_deref()
    }

    /// Where requests go, for messages: the endpoint URL, or AWS S3 and its region.
    pub fn describe_endpoint(&self) -> String {
        match (&self.endpoint, &self.region) {
            (Some(endpoint), _) => endpoint.url.clone(),
            (None, Some(region)) => format!("AWS S3 in {region}"),
            (None, None) => "AWS S3".to_owned(),
        }
    }

    /// Checks what can be checked without a request: a region is set and the endpoint is an
    /// http(s) URL.
    ///
    /// # Errors
    /// [`S3SetupError`], a configuration problem.
    pub fn check(&self) -> Result<(), S3SetupError> {
        if let Some(endpoint) = &self.endpoint {
            let ok = url::Url::parse(&endpoint.url)
                .is_ok_and(|url| matches!(url.scheme(), "http" | "https") && url.has_host());
            if !ok {
                return Err(S3SetupError::BadEndpoint {
                    url: endpoint.url.clone(),
                    origin: endpoint.origin,
                });
            }
        }
        if self.region.is_none() {
            return Err(S3SetupError::NoRegion);
        }
        Ok(())
    }

    /// The client: path-style addressing as configured, checksums computed and validated only
    /// when an operation requires them (MinIO and other stores reject some of the SDK's
    /// defaults).
    pub fn client(&self) -> aws_sdk_s3::Client {
        let mut builder = aws_sdk_s3::config::Builder::from(&self.sdk)
            .force_path_style(self.force_path_style)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(endpoint) = &self.endpoint {
            builder = builder.endpoint_url(&endpoint.url);
        }
        if let Some(region) = &self.region {
            builder = builder.region(Region::new(region.clone()));
        }
        aws_sdk_s3::Client::from_conf(builder.build())
    }
}

/// The endpoint the SDK itself would use for S3: `AWS_ENDPOINT_URL_S3`, the profile's `services`
/// section, `AWS_ENDPOINT_URL` (what `aws_sdk_s3::config::Builder::from` reads).
fn sdk_endpoint(sdk: &aws_config::SdkConfig) -> Option<String> {
    use aws_types::service_config::ServiceConfigKey;
    let key = ServiceConfigKey::builder()
        .service_id("S3")
        .env("AWS_ENDPOINT_URL")
        .profile("endpoint_url")
        .build()
        .ok()?;
    sdk.service_config()
        .and_then(|config| config.load_config(key))
        .or_else(|| sdk.endpoint_url().map(str::to_owned))
        .filter(|url| !url.trim().is_empty())
}

// An empty value (say, an env override set to "") means "not set", not "the empty endpoint".
fn non_empty(value: &Option<String>) -> Option<&str> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|value| !value.is_empty())
}
