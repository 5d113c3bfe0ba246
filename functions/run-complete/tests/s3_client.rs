//! The S3 client constructor, against a real S3 server on loopback.

use aws_sdk_s3::config::{
    BehaviorVersion, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    SharedCredentialsProvider,
};
use aws_sdk_s3::primitives::ByteStream;
use tekflux_common::config::{Env, Storage};
use tekflux_run_complete::s3_client::{
    S3Setup, S3SetupError, asks_instance_metadata, s3_client_from_sdk_config,
};
use tekflux_testkit::s3::TestS3;

fn sdk_config(s3: &TestS3, endpoint: &str, region: &str) -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .credentials_provider(SharedCredentialsProvider::new(s3.credentials()))
        .endpoint_url(endpoint)
        .region(Region::new(region.to_owned()))
        .build()
}

#[tokio::test]
async fn s3_client_round_trips_through_a_signing_server() {
    let s3 = TestS3::in_process().await;
    let bucket = s3.fresh_bucket().await;
    // The SDK-level endpoint is a dead port: only the config file's endpoint can make this work.
    let sdk = sdk_config(&s3, "http://127.0.0.1:9", "eu-central-1");
    let storage = Storage {
        bucket: Some(bucket.clone()),
        endpoint: Some(s3.endpoint()),
        region: Some("us-east-1".to_owned()),
        force_path_style: true,
        ..Storage::default()
    };
    let client = s3_client_from_sdk_config(&sdk, &storage);

    let config = client.config();
    assert_eq!(config.region(), Some(&Region::new("us-east-1")));
    assert_eq!(
        config.request_checksum_calculation(),
        Some(&RequestChecksumCalculation::WhenRequired)
    );
    assert_eq!(
        config.response_checksum_validation(),
        Some(&ResponseChecksumValidation::WhenRequired)
    );

    client
        .put_object()
        .bucket(&bucket)
        .key("runs/r1/manifest.json")
        .body(ByteStream::from_static(br#"{"run":"r1"}"#))
        .send()
        .await
        .expect("put through the production client");
    let object = client
        .get_object()
        .bucket(&bucket)
        .key("runs/r1/manifest.json")
        .send()
        .await
        .expect("get through the production client");
    let body = object.body.collect().await.expect("read body").into_bytes();
    assert_eq!(body.as_ref(), br#"{"run":"r1"}"#);
}

#[tokio::test]
async fn s3_client_keeps_the_sdk_endpoint_when_the_config_has_none() {
    let s3 = TestS3::in_process().await;
    let bucket = s3.fresh_bucket().await;
    let sdk = sdk_config(&s3, &s3.endpoint(), "us-east-1");
    let storage = Storage {
        endpoint: Some(String::new()),
        force_path_style: true,
        ..Storage::default()
    };
    let client = s3_client_from_sdk_config(&sdk, &storage);

    let listed = client
        .list_objects_v2()
        .bucket(&bucket)
        .send()
        .await
        .expect("list through the SDK-level endpoint");
    assert!(listed.contents().is_empty());
}

/// The instance metadata service is asked only when requests go to AWS S3 itself, unless
/// `AWS_EC2_METADATA_DISABLED` says otherwise either way.
#[test]
fn instance_metadata_is_asked_only_for_aws_itself() {
    let aws = Storage::default();
    let minio = Storage {
        endpoint: Some("http://minio:9000".to_owned()),
        ..Storage::default()
    };
    assert!(asks_instance_metadata(&aws, &Env::new()));
    assert!(!asks_instance_metadata(&minio, &Env::new()));
    for variable in ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"] {
        let env = Env::new().with(variable, "http://seaweedfs:8333");
        assert!(!asks_instance_metadata(&aws, &env), "{variable}");
    }
    let off = Env::new().with("AWS_EC2_METADATA_DISABLED", "true");
    assert!(!asks_instance_metadata(&aws, &off));
    let on = Env::new().with("AWS_EC2_METADATA_DISABLED", "False");
    assert!(asks_instance_metadata(&minio, &on));
}

#[test]
fn s3_setup_checks_region_and_endpoint_before_any_request() {
    let sdk = |region: Option<&str>, endpoint: Option<&str>| {
        let mut builder =
            aws_config::SdkConfig::builder().behavior_version(BehaviorVersion::latest());
        if let Some(region) = region {
            builder = builder.region(Region::new(region.to_owned()));
        }
        if let Some(endpoint) = endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        builder.build()
    };
    let storage = |endpoint: Option<&str>, region: Option<&str>| Storage {
        endpoint: endpoint.map(str::to_owned),
        region: region.map(str::to_owned),
        ..Storage::default()
    };

    let setup = S3Setup::from_sdk_config(sdk(None, None), &storage(None, None));
    assert_eq!(setup.check(), Err(S3SetupError::NoRegion));
    assert_eq!(setup.describe_endpoint(), "AWS S3");
    // The config's region stands in for the SDK's.
    let setup = S3Setup::from_sdk_config(sdk(None, None), &storage(None, Some("eu-west-1")));
    assert_eq!(setup.check(), Ok(()));
    assert_eq!(setup.describe_endpoint(), "AWS S3 in eu-west-1");

    let setup = S3Setup::from_sdk_config(
        sdk(Some("us-east-1"), Some("http://sdk:9000")),
        &storage(None, None),
    );
    assert_eq!(setup.check(), Ok(()));
    assert_eq!(setup.describe_endpoint(), "http://sdk:9000");
    let setup = S3Setup::from_sdk_config(
        sdk(Some("us-east-1"), Some("http://sdk:9000")),
        &storage(Some("http://config:9000"), None),
    );
    assert_eq!(setup.describe_endpoint(), "http://config:9000");

    for bad in ["minio:9000", "not a url", "ftp://minio"] {
        let setup =
            S3Setup::from_sdk_config(sdk(Some("us-east-1"), Some(bad)), &storage(None, None));
        let error = setup.check().expect_err("a bad endpoint is refused");
        assert!(matches!(error, S3SetupError::BadEndpoint { .. }), "{bad}");
        let message = error.to_string();
        assert!(
            message.contains(bad) && message.contains("http(s)://"),
            "{message}"
        );
    }
    let message = S3SetupError::NoRegion.to_string();
    assert!(message.contains("AWS_REGION"), "{message}");
}

/// An `https://` endpoint is reached over TLS through the client's own connector (rustls on
/// ring, the binary's one crypto library): the server sees a TLS ClientHello. This server
/// speaks no TLS back, so the request fails, as a request and not as a panic.
#[tokio::test]
async fn https_endpoints_are_reached_over_tls() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    let (first_bytes, mut seen) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut connection, _)) = listener.accept().await {
            let mut record = [0u8; 3];
            if tokio::io::AsyncReadExt::read_exact(&mut connection, &mut record)
                .await
                .is_ok()
            {
                let _ = first_bytes.send(record);
            }
        }
    });
    let s3 = TestS3::in_process().await;
    // A server without TLS cannot answer.
    failed_listing(client_for(&s3, &format!("https://127.0.0.1:{port}"))).await;
    let record = seen.recv().await.expect("the client connected");
    // A TLS handshake record (type 22) of a TLS 1.x ClientHello.
    assert_eq!(record[0], 0x16, "not a TLS record: {record:?}");
    assert_eq!(record[1], 0x03, "not TLS 1.x: {record:?}");
}

/// A loopback server that answers every connection with `answer` (or, if empty, reads the
/// request and says nothing); its address.
async fn scripted_server(answer: &'static str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((mut connection, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = connection.read(&mut request).await;
                if answer.is_empty() {
                    tokio::time::sleep(std::time::Duration::from_secs(30)).await;
                } else {
                    let _ = connection.write_all(answer.as_bytes()).await;
                }
            });
        }
    });
    format!("http://{address}")
}

fn client_for(s3: &TestS3, endpoint: &str) -> aws_sdk_s3::Client {
    client_from(&sdk_config(s3, endpoint, "us-east-1"))
}

fn client_from(sdk: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    let storage = Storage {
        force_path_style: true,
        ..Storage::default()
    };
    s3_client_from_sdk_config(sdk, &storage)
}

/// The error of a listing that cannot succeed.
async fn failed_listing(
    client: aws_sdk_s3::Client,
) -> aws_sdk_s3::error::SdkError<
    aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Error,
    aws_sdk_s3::config::http::HttpResponse,
> {
    match client.list_objects_v2().bucket("b").send().await {
        Ok(listing) => panic!("the listing succeeded: {listing:?}"),
        Err(error) => error,
    }
}

/// S3 answers 301 for a bucket in another region; the SDK must see that answer (its region
/// header says where to go), so the HTTP client follows no redirect itself.
#[tokio::test]
async fn redirects_reach_the_sdk_unfollowed() {
    let s3 = TestS3::in_process().await;
    let endpoint = scripted_server(
        "HTTP/1.1 301 Moved Permanently\r\nlocation: http://127.0.0.1:9/\r\n\
         x-amz-bucket-region: eu-west-1\r\ncontent-length: 0\r\n\r\n",
    )
    .await;
    let error = failed_listing(client_for(&s3, &endpoint)).await;
    let status = error.raw_response().map(|answer| answer.status().as_u16());
    assert_eq!(status, Some(301), "{error:?}");
}

/// The SDK retries I/O failures and timeouts; the HTTP client must report them as such.
#[tokio::test]
async fn failures_are_classified_for_the_sdks_retries() {
    use aws_sdk_s3::config::timeout::TimeoutConfig;
    use aws_sdk_s3::error::SdkError;
    let s3 = TestS3::in_process().await;

    // Nothing listens on port 9 (discard) on loopback: the connection is refused.
    let refused = failed_listing(client_for(&s3, "http://127.0.0.1:9")).await;
    match &refused {
        SdkError::DispatchFailure(failure) => assert!(failure.is_io(), "{refused:?}"),
        other => panic!("a refused connection is a dispatch failure: {other:?}"),
    }

    let silent = scripted_server("").await;
    let sdk = sdk_config(&s3, &silent, "us-east-1")
        .to_builder()
        .timeout_config(
            TimeoutConfig::builder()
                .read_timeout(std::time::Duration::from_millis(300))
                .build(),
        )
        .build();
    let timed_out = failed_listing(client_from(&sdk)).await;
    match &timed_out {
        SdkError::DispatchFailure(failure) => assert!(failure.is_timeout(), "{timed_out:?}"),
        other => panic!("a silent server is a timeout: {other:?}"),
    }
}

/// SigV4 signs the host as the endpoint spells it; the client must send that host, not a
/// normalised (lowercased) one, or the store refuses the signature.
#[tokio::test]
async fn the_host_is_sent_as_signed() {
    let s3 = TestS3::in_process().await;
    let bucket = s3.fresh_bucket().await;
    let endpoint = s3.endpoint().replace("127.0.0.1", "LocalHost");
    assert_ne!(endpoint, s3.endpoint(), "the test server is on 127.0.0.1");
    client_for(&s3, &endpoint)
        .put_object()
        .bucket(&bucket)
        .key("runs/r1/manifest.json")
        .body(ByteStream::from_static(b"{}"))
        .send()
        .await
        .expect("the store accepts the signature");
}

/// S3 keeps `.` and `..` in a key; a URL parser resolves them. Such a key is refused before it
/// is sent, never written somewhere else.
#[tokio::test]
async fn keys_with_dot_segments_are_refused_not_rewritten() {
    let s3 = TestS3::in_process().await;
    let bucket = s3.fresh_bucket().await;
    let client = client_for(&s3, &s3.endpoint());
    let error = client
        .put_object()
        .bucket(&bucket)
        .key("runs/../elsewhere")
        .body(ByteStream::from_static(b"{}"))
        .send()
        .await
        .expect_err("the key cannot be sent as it is");
    let message = format!("{error:?}");
    assert!(message.contains("cannot be reached"), "{message}");
    let listed = client
        .list_objects_v2()
        .bucket(&bucket)
        .send()
        .await
        .expect("list");
    assert!(listed.contents().is_empty(), "nothing was written");
}
