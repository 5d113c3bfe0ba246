//! Real S3 servers that enforce SigV4, reached through the real `aws-sdk-s3` client.
//!
//! Two servers stand behind one [`TestS3`] handle, so each check is written once and run against
//! both:
//!
//! - [`TestS3::in_process`]: `s3s` + `s3s-fs` over a temporary directory, served by hyper on
//!   `127.0.0.1:0`, with a generated access key and secret. Zero install, for `cargo test`. It can be
//!   stopped mid-test ([`TestS3::shutdown`]) to exercise "the store went away" paths.
//! - [`TestS3::seaweedfs_from_env`]: the SeaweedFS that `.ci/seaweedfs start` runs for the
//!   integration tier; a real object store like the MinIO users run. Tests against it are
//!   `#[ignore]`d and share one instance, so every test works in its own [`TestS3::fresh_bucket`].
//!
//! Both check signatures: a client with the wrong secret, or a presigned URL that was altered, gets
//! 403. `moto` was not used because it does not check signatures by default.
//!
//! The in-process server also answers as S3 does where `s3s-fs` alone would not: an object
//! request for a bucket that does not exist gets `NoSuchBucket` (s3s-fs would create the bucket's
//! directory on upload), and a second, read-only key ([`TestS3::read_only_credentials`]) gets
//! `AccessDenied` for anything but reads, as a key with a read-only policy does on MinIO or AWS.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::SimpleAuth;
use s3s::path::S3Path;
use s3s::service::S3ServiceBuilder;
use s3s::{S3Result, s3_error};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Env var holding the SeaweedFS S3 endpoint URL (`http://127.0.0.1:PORT`).
pub const ENDPOINT_ENV: &str = "TEKFLUX_TEST_S3_ENDPOINT";
/// Env var holding the SeaweedFS access key.
pub const ACCESS_KEY_ENV: &str = "TEKFLUX_TEST_S3_ACCESS_KEY";
/// Env var holding the SeaweedFS secret key.
pub const SECRET_KEY_ENV: &str = "TEKFLUX_TEST_S3_SECRET_KEY";

/// The region every test client signs for; both servers accept it.
pub const REGION: &str = "us-east-1";

/// A running S3 server and the credentials it accepts.
pub struct TestS3 {
    endpoint: String,
    access_key: String,
    secret_key: String,
    /// A key pair that may only read (in-process server only).
    read_only: Option<(String, String)>,
    kind: Kind,
}

enum Kind {
    InProcess(InProcess),
    SeaweedFs,
}

/// The in-process server: its accept loop and connections stop when `stop` is flipped.
struct InProcess {
    stop: watch::Sender<bool>,
    // Owned here so the stored objects disappear with the handle.
    _root: tempfile::TempDir,
}

impl fmt::Debug for TestS3 {
    // The secret stays out of test output, as it would in production logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestS3")
            .field("endpoint", &self.endpoint)
            .field("access_key", &self.access_key)
            .field(
                "kind",
                &match self.kind {
                    Kind::InProcess(_) => "in-process s3s-fs",
                    Kind::SeaweedFs => "seaweedfs",
                },
            )
            .finish_non_exhaustive()
    }
}

impl TestS3 {
    /// Starts an `s3s-fs` server over a fresh temporary directory on `127.0.0.1:0`, with SigV4
    /// enforced for a generated access key and secret. Must be called inside a tokio runtime; the
    /// server runs until [`TestS3::shutdown`] or until the handle is dropped.
    ///
    /// # Panics
    /// When the temporary directory or the loopback listener cannot be created.
    pub async fn in_process() -> Self {
        let root = tempfile::tempdir().expect("create a temporary directory for s3s-fs");
        let fs = s3s_fs::FileSystem::new(root.path()).expect("open the s3s-fs root directory");

        let access_key = format!("AK{}", uuid::Uuid::new_v4().simple()).to_uppercase();
        let secret_key = uuid::Uuid::new_v4().simple().to_string();
        let read_only_key = format!("RO{}", uuid::Uuid::new_v4().simple()).to_uppercase();
        let read_only_secret = uuid::Uuid::new_v4().simple().to_string();
        let service = {
            let mut builder = S3ServiceBuilder::new(fs);
            let mut auth = SimpleAuth::from_single(access_key.clone(), secret_key.clone());
            auth.register(read_only_key.clone(), read_only_secret.clone().into());
            builder.set_auth(auth);
            builder.set_access(AsS3Does {
                root: root.path().to_owned(),
                read_only_key: read_only_key.clone(),
            });
            builder.build()
        };

        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind a loopback port for the S3 server");
        let addr = listener.local_addr().expect("read the S3 server's address");
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(serve(listener, service, stopped));

        Self {
            endpoint: format!("http://{addr}"),
            access_key,
            secret_key,
            read_only: Some((read_only_key, read_only_secret)),
            kind: Kind::InProcess(InProcess { stop, _root: root }),
        }
    }

    /// Connects to the SeaweedFS that `.ci/seaweedfs start` runs, from `TEKFLUX_TEST_S3_ENDPOINT`,
    /// `TEKFLUX_TEST_S3_ACCESS_KEY` and `TEKFLUX_TEST_S3_SECRET_KEY`. `None` when the endpoint is
    /// unset.
    ///
    /// # Panics
    /// When the endpoint is set but a key is missing: a half-configured tier is a CI bug.
    pub fn seaweedfs_from_env() -> Option<Self> {
        Self::seaweedfs_from(|name| std::env::var(name).ok())
    }

    /// [`TestS3::seaweedfs_from_env`] with the variables looked up by `lookup`, so tests of the
    /// harness itself need not touch the process environment.
    ///
    /// # Panics
    /// When the endpoint is set but a key is missing.
    pub fn seaweedfs_from(lookup: impl Fn(&str) -> Option<String>) -> Option<Self> {
        let endpoint = lookup(ENDPOINT_ENV).filter(|value| !value.is_empty())?;
        let key = |name: &str| {
            lookup(name)
                .filter(|value| !value.is_empty())
                .unwrap_or_else(|| panic!("{ENDPOINT_ENV} is set but {name} is not"))
        };
        Some(Self {
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            access_key: key(ACCESS_KEY_ENV),
            secret_key: key(SECRET_KEY_ENV),
            read_only: None,
            kind: Kind::SeaweedFs,
        })
    }

    /// The integration tier's SeaweedFS.
    ///
    /// # Panics
    /// When `TEKFLUX_TEST_S3_ENDPOINT` is unset: the ignored tests that call this are meant to fail,
    /// not pass vacuously, when run without `.ci/seaweedfs`.
    pub fn seaweedfs() -> Self {
        Self::seaweedfs_from_env().unwrap_or_else(|| {
            panic!(
                "{ENDPOINT_ENV} is not set: start SeaweedFS first with \
                 `eval \"$(.ci/seaweedfs start DIR)\"`"
            )
        })
    }

    /// Base URL of the server, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        self.endpoint.clone()
    }

    /// The static credentials the server accepts.
    pub fn credentials(&self) -> Credentials {
        Credentials::new(
            &self.access_key,
            &self.secret_key,
            None,
            None,
            "tekflux-testkit",
        )
    }

    /// A second key pair the in-process server accepts for reads only: writes get 403
    /// `AccessDenied`, as under a read-only policy. `None` for SeaweedFS.
    pub fn read_only_credentials(&self) -> Option<Credentials> {
        self.read_only.as_ref().map(|(key, secret)| {
            Credentials::new(key, secret, None, None, "tekflux-testkit-read-only")
        })
    }

    /// A real `aws-sdk-s3` client for this server, configured as production configures one for
    /// MinIO: path-style addressing, region `us-east-1`, checksums only when an operation requires
    /// them.
    pub fn client(&self) -> aws_sdk_s3::Client {
        self.client_with_secret(&self.secret_key)
    }

    /// Like [`TestS3::client`] but signing with `secret`, to check that the server rejects it.
    pub fn client_with_secret(&self, secret: &str) -> aws_sdk_s3::Client {
        self.client_with(&self.endpoint, secret)
    }

    /// Like [`TestS3::client`] but sending to `endpoint`, e.g. a
    /// [`FaultProxy`](crate::fault_proxy::FaultProxy) in front of this server.
    pub fn client_via(&self, endpoint: &str) -> aws_sdk_s3::Client {
        self.client_with(endpoint, &self.secret_key)
    }

    fn client_with(&self, endpoint: &str, secret: &str) -> aws_sdk_s3::Client {
        let credentials = Credentials::new(&self.access_key, secret, None, None, "tekflux-testkit");
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(endpoint)
            .region(Region::new(REGION))
            .credentials_provider(credentials)
            .force_path_style(true)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            // Plain HTTP on loopback (the SDK's TLS client is run-complete's to choose).
            .http_client(aws_smithy_http_client::Builder::new().build_http())
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// Creates bucket `name` (3 to 63 lowercase characters, as S3 requires).
    ///
    /// # Panics
    /// When the server refuses.
    pub async fn create_bucket(&self, name: &str) {
        if let Err(err) = self.client().create_bucket().bucket(name).send().await {
            panic!(
                "create bucket {name} on {}: {}",
                self.endpoint,
                aws_sdk_s3::error::DisplayErrorContext(&err)
            );
        }
    }

    /// The keys in `bucket` under `prefix` (the first thousand, which is all a test stores),
    /// sorted.
    pub async fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let listed = self
            .client()
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .send()
            .await
            .expect("list the bucket");
        let mut keys: Vec<String> = listed
            .contents()
            .iter()
            .filter_map(|object| object.key().map(str::to_owned))
            .collect();
        keys.sort();
        keys
    }

    /// Creates a bucket with a name no other test uses and returns the name, so tests can share
    /// one server.
    ///
    /// # Panics
    /// When the server refuses.
    pub async fn fresh_bucket(&self) -> String {
        let name = format!("tekflux-{}", uuid::Uuid::new_v4().simple());
        self.create_bucket(&name).await;
        name
    }

    /// Stops the in-process server as if it died: the listener is closed (new connections are
    /// refused) and live connections are dropped mid-request. Does nothing for SeaweedFS, which
    /// the tests share.
    pub fn shutdown(&self) {
        if let Kind::InProcess(server) = &self.kind {
            server.stop.send_replace(true);
        }
    }

    /// Whether this handle runs the in-process server (and so [`TestS3::shutdown`] stops it).
    pub fn is_in_process(&self) -> bool {
        matches!(self.kind, Kind::InProcess(_))
    }
}

impl Drop for TestS3 {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// What the in-process server checks before `s3s-fs` sees a request, so that it answers as S3
/// does: signed requests only, `NoSuchBucket` for objects of a missing bucket, and writes
/// refused to the read-only key.
struct AsS3Does {
    root: PathBuf,
    read_only_key: String,
}

/// Operations the read-only key may call.
const READS: [&str; 6] = [
    "GetObject",
    "HeadObject",
    "HeadBucket",
    "ListObjects",
    "ListObjectsV2",
    "ListBuckets",
];

#[async_trait::async_trait]
impl S3Access for AsS3Does {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let Some(credentials) = cx.credentials() else {
            return Err(s3_error!(AccessDenied, "Signature is required"));
        };
        if credentials.access_key == self.read_only_key && !READS.contains(&cx.s3_op().name()) {
            return Err(s3_error!(AccessDenied, "Access Denied"));
        }
        if let S3Path::Object { bucket, .. } = cx.s3_path()
            && !self.root.join(&**bucket).is_dir()
        {
            return Err(s3_error!(
                NoSuchBucket,
                "The specified bucket does not exist"
            ));
        }
        Ok(())
    }
}

async fn serve(
    listener: TcpListener,
    service: s3s::service::S3Service,
    stopped: watch::Receiver<bool>,
) {
    let mut accept_stopped = stopped.clone();
    loop {
        let stream = tokio::select! {
            _ = accept_stopped.wait_for(|stop| *stop) => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // A failed accept (say, too many open files) affects one client, not the server.
                Err(_) => continue,
            },
        };
        let service = service.clone();
        let mut connection_stopped = stopped.clone();
        tokio::spawn(async move {
            let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            // Dropping the connection closes its socket, which is what a crashed server does.
            tokio::select! {
                _ = connection => {}
                _ = connection_stopped.wait_for(|stop| *stop) => {}
            }
        });
    }
}
