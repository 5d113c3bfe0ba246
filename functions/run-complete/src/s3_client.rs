//! The S3 client run-complete archives to and restores from (and the CLI's `archive`, `restore`
//! and `trace` use): the AWS SDK's own chain (`AWS_ENDPOINT_URL_S3`, `AWS_REGION`, the
//! credential chain: env, profile, web identity/IRSA, container credentials, and the EC2
//! instance metadata service only when requests go to AWS itself, see
//! [`asks_instance_metadata`]), then `storage.endpoint` and `storage.region` from the config
//! file on top ([`S3Setup`]). Checksums are computed and validated only when an operation
//! requires them, because MinIO and other S3-compatible stores reject some of the SDK's default
//! checksums.
//!
//! It lives here, not in `tekflux-common`, so that the functions that never touch S3 (git-push,
//! release-changed) do not link the AWS SDK.

use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use tekflux_common::config::{Env, Storage};

/// An S3 client from an already-loaded SDK configuration (static credentials in tests, say) with
/// `storage`'s endpoint, region, path-style addressing and the "when required" checksum modes.
pub fn s3_client_from_sdk_config(
    sdk: &aws_config::SdkConfig,
    storage: &Storage,
) -> aws_sdk_s3::Client {
    S3Setup::from_sdk_config(sdk.clone(), storage).client()
}

/// The HTTP client for S3 requests and for the credential providers (STS, the container
/// credentials endpoint, instance metadata): reqwest on rustls and ring, trusting the system's
/// certificates, proxies from the environment (see `s3_http.rs`).
pub fn https_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    crate::s3_http::reqwest_http_client()
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
        // Every provider that can make a request (IMDS, STS, the container endpoint) is given
        // tekflux's HTTP client: the SDK has none of its own compiled in.
        let http = https_client();
        let base = ProviderConfig::default().with_http_client(http.clone());
        let mut regions = RegionProviderChain::first_try(
            non_empty(&storage.region).map(|region| Region::new(region.to_owned())),
        )
        .or_else(EnvironmentVariableRegionProvider::new())
        .or_else(
            ProfileFileRegionProvider::builder()
                .configure(&base)
                .build(),
        );
        if imds {
            regions = regions.or_else(
                aws_config::imds::region::ImdsRegionProvider::builder()
                    .configure(&base)
                    .build(),
            );
        }
        let region = regions.region().await;

        // Profiles and web identity ask STS, which needs the region.
        let provider = base.with_region(region.clone());
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
            .http_client(http)
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
        // A configuration loaded elsewhere (tests' static credentials) may have no HTTP client.
        if self.sdk.http_client().is_none() {
            builder = builder.http_client(https_client());
        }
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
