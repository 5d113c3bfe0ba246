//! Self-tests of the S3 servers in `tekflux_testkit::s3`, through the real `aws-sdk-s3` client.
//!
//! Each check is written once against `&TestS3` and run against both servers: the in-process
//! `s3s-fs` in `cargo test`, SeaweedFS in the integration tier (`--ignored`, after
//! `eval "$(.ci/seaweedfs start DIR)"`).

use std::time::Duration;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use sha2::{Digest, Sha256};
use tekflux_testkit::s3::{ACCESS_KEY_ENV, ENDPOINT_ENV, SECRET_KEY_ENV, TestS3};

const MIB: usize = 1024 * 1024;

/// One part of the multipart object: a 4 KiB block repeated, different for every part so that a
/// server that reorders or drops parts changes the hash.
fn part_data(part_number: i32, len: usize) -> Vec<u8> {
    let block: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(31) ^ (part_number as u32).wrapping_mul(0x9e)) as u8)
        .collect();
    block.repeat(len / block.len())
}

fn status<E>(err: &SdkError<E, HttpResponse>) -> Option<u16> {
    err.raw_response()
        .map(|response| response.status().as_u16())
}

async fn put(s3: &TestS3, bucket: &str, key: &str, body: &'static [u8]) {
    s3.client()
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from_static(body))
        .send()
        .await
        .expect("put object");
}

/// `None` when the in-process server does not implement ListMultipartUploads (s3s-fs does not);
/// a real store that does not is a failure.
async fn listed_uploads(s3: &TestS3, bucket: &str) -> Option<Vec<String>> {
    match s3
        .client()
        .list_multipart_uploads()
        .bucket(bucket)
        .send()
        .await
    {
        Ok(out) => Some(
            out.uploads()
                .iter()
                .filter_map(|upload| upload.upload_id().map(str::to_owned))
                .collect(),
        ),
        // Only the in-process server may lack it; a real store must list its uploads.
        Err(err) if err.code() == Some("NotImplemented") && s3.is_in_process() => None,
        Err(err) => panic!(
            "list multipart uploads: {}",
            aws_sdk_s3::error::DisplayErrorContext(&err)
        ),
    }
}

async fn multipart_round_trip(s3: &TestS3) {
    const PART: usize = 8 * MIB;
    const PARTS: i32 = 8;
    let client = s3.client();
    let bucket = s3.fresh_bucket().await;
    let key = "runs/build-1/workspace.tar.zst";

    let upload = client
        .create_multipart_upload()
        .bucket(&bucket)
        .key(key)
        .send()
        .await
        .expect("create multipart upload");
    let upload_id = upload.upload_id().expect("upload id");

    let mut sent = Sha256::new();
    let mut completed = CompletedMultipartUpload::builder();
    for part_number in 1..=PARTS {
        let data = part_data(part_number, PART);
        sent.update(&data);
        let part = client
            .upload_part()
            .bucket(&bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(part_number)
            .body(ByteStream::from(data))
            .send()
            .await
            .expect("upload part");
        completed = completed.parts(
            CompletedPart::builder()
                .part_number(part_number)
                .e_tag(part.e_tag().expect("part etag"))
                .build(),
        );
    }
    client
        .complete_multipart_upload()
        .bucket(&bucket)
        .key(key)
        .upload_id(upload_id)
        .multipart_upload(completed.build())
        .send()
        .await
        .expect("complete multipart upload");

    let object = client
        .get_object()
        .bucket(&bucket)
        .key(key)
        .send()
        .await
        .expect("get object");
    assert_eq!(
        object.content_length(),
        Some(PART as i64 * i64::from(PARTS))
    );
    let mut body = object.body;
    let mut received = Sha256::new();
    let mut received_len = 0;
    while let Some(chunk) = body.try_next().await.expect("read object body") {
        received_len += chunk.len();
        received.update(&chunk);
    }
    assert_eq!(received_len, PART * PARTS as usize);
    assert_eq!(received.finalize(), sent.finalize());
}

async fn abort_multipart_leaves_nothing(s3: &TestS3) {
    const PART: usize = 5 * MIB;
    let client = s3.client();
    let bucket = s3.fresh_bucket().await;
    let key = "aborted.tar.zst";

    let upload = client
        .create_multipart_upload()
        .bucket(&bucket)
        .key(key)
        .send()
        .await
        .expect("create multipart upload");
    let upload_id = upload.upload_id().expect("upload id").to_owned();
    let part = client
        .upload_part()
        .bucket(&bucket)
        .key(key)
        .upload_id(&upload_id)
        .part_number(1)
        .body(ByteStream::from(part_data(1, PART)))
        .send()
        .await
        .expect("upload part");

    // Before the abort the upload is visible, so the checks below can tell that it went away.
    let parts = client
        .list_parts()
        .bucket(&bucket)
        .key(key)
        .upload_id(&upload_id)
        .send()
        .await
        .expect("list parts");
    assert_eq!(parts.parts().len(), 1);
    if let Some(uploads) = listed_uploads(s3, &bucket).await {
        assert_eq!(uploads, std::slice::from_ref(&upload_id));
    }

    client
        .abort_multipart_upload()
        .bucket(&bucket)
        .key(key)
        .upload_id(&upload_id)
        .send()
        .await
        .expect("abort multipart upload");

    if let Some(uploads) = listed_uploads(s3, &bucket).await {
        assert!(uploads.is_empty(), "uploads still listed: {uploads:?}");
    }
    // S3 answers NoSuchUpload; s3s-fs lists no parts.
    match client
        .list_parts()
        .bucket(&bucket)
        .key(key)
        .upload_id(&upload_id)
        .send()
        .await
    {
        Ok(parts) => {
            assert!(s3.is_in_process(), "a real store listed an aborted upload");
            assert!(parts.parts().is_empty(), "parts left: {:?}", parts.parts());
        }
        Err(err) => assert_eq!(
            err.code(),
            Some("NoSuchUpload"),
            "{}",
            aws_sdk_s3::error::DisplayErrorContext(&err)
        ),
    }
    let completed = client
        .complete_multipart_upload()
        .bucket(&bucket)
        .key(key)
        .upload_id(&upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .parts(
                    CompletedPart::builder()
                        .part_number(1)
                        .e_tag(part.e_tag().expect("part etag"))
                        .build(),
                )
                .build(),
        )
        .send()
        .await;
    let err = completed.expect_err("an aborted upload could still be completed");
    // S3 (and SeaweedFS) answer NoSuchUpload; s3s-fs, which forgets the upload's owner with the
    // upload, AccessDenied.
    let expected = if s3.is_in_process() {
        "AccessDenied"
    } else {
        "NoSuchUpload"
    };
    assert_eq!(
        err.code(),
        Some(expected),
        "{}",
        aws_sdk_s3::error::DisplayErrorContext(&err)
    );
    let head = client.head_object().bucket(&bucket).key(key).send().await;
    let err = head.expect_err("no object after an abort");
    assert_eq!(status(&err), Some(404));
    let listed = client
        .list_objects_v2()
        .bucket(&bucket)
        .send()
        .await
        .expect("list objects");
    assert!(listed.contents().is_empty(), "{:?}", listed.contents());
}

async fn presign_get(s3: &TestS3, bucket: &str, key: &str) -> url::Url {
    let presigned = s3
        .client()
        .get_object()
        .bucket(bucket)
        .key(key)
        .presigned(PresigningConfig::expires_in(Duration::from_secs(600)).expect("presign config"))
        .await
        .expect("presign get object");
    url::Url::parse(presigned.uri()).expect("presigned URL")
}

async fn presigned_get_works(s3: &TestS3) {
    let bucket = s3.fresh_bucket().await;
    put(s3, &bucket, "logs/step-build.log", b"step output\n").await;
    let url = presign_get(s3, &bucket, "logs/step-build.log").await;

    let response = reqwest::get(url).await.expect("GET presigned URL");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.bytes().await.expect("read body").as_ref(),
        b"step output\n"
    );
}

async fn tampered_presigned_url_is_rejected(s3: &TestS3) {
    let bucket = s3.fresh_bucket().await;
    put(s3, &bucket, "public.txt", b"may be shared").await;
    put(s3, &bucket, "secret.txt", b"must not leak").await;
    let url = presign_get(s3, &bucket, "public.txt").await;

    // A forged signature.
    let mut forged = url.clone();
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(name, value)| {
            let value = if name == "X-Amz-Signature" {
                let mut flipped: Vec<char> = value.chars().collect();
                flipped[0] = if flipped[0] == '0' { '1' } else { '0' };
                flipped.into_iter().collect()
            } else {
                value.into_owned()
            };
            (name.into_owned(), value)
        })
        .collect();
    assert!(pairs.iter().any(|(name, _)| name == "X-Amz-Signature"));
    forged.query_pairs_mut().clear().extend_pairs(&pairs);

    // A valid signature reused for another object.
    let mut redirected = url.clone();
    redirected.set_path(&url.path().replace("public.txt", "secret.txt"));
    assert_ne!(redirected.path(), url.path());

    for tampered in [forged, redirected] {
        let response = reqwest::get(tampered.clone())
            .await
            .expect("GET tampered URL");
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        assert_eq!(status, 403, "{tampered} answered {status}: {body}");
        assert!(!body.contains("must not leak"));
    }
}

async fn wrong_secret_is_rejected(s3: &TestS3) {
    let bucket = s3.fresh_bucket().await;
    let err = s3
        .client_with_secret("not-the-secret")
        .put_object()
        .bucket(&bucket)
        .key("forged.txt")
        .body(ByteStream::from_static(b"forged"))
        .send()
        .await
        .expect_err("a wrong secret must be rejected");
    assert_eq!(status(&err), Some(403), "{err:?}");
    assert_eq!(err.code(), Some("SignatureDoesNotMatch"), "{err:?}");

    let head = s3
        .client()
        .head_object()
        .bucket(&bucket)
        .key("forged.txt")
        .send()
        .await;
    assert_eq!(status(&head.expect_err("nothing stored")), Some(404));
}

#[tokio::test]
async fn in_process_multipart_round_trip() {
    multipart_round_trip(&TestS3::in_process().await).await;
}

#[tokio::test]
async fn in_process_abort_multipart_leaves_nothing() {
    abort_multipart_leaves_nothing(&TestS3::in_process().await).await;
}

#[tokio::test]
async fn in_process_presigned_get_works() {
    presigned_get_works(&TestS3::in_process().await).await;
}

#[tokio::test]
async fn in_process_tampered_presigned_url_is_rejected() {
    tampered_presigned_url_is_rejected(&TestS3::in_process().await).await;
}

#[tokio::test]
async fn in_process_wrong_secret_is_rejected() {
    wrong_secret_is_rejected(&TestS3::in_process().await).await;
}

#[tokio::test]
async fn in_process_shutdown_refuses_requests() {
    let s3 = TestS3::in_process().await;
    let bucket = s3.fresh_bucket().await;
    let client = s3.client();
    s3.shutdown();

    let err = client
        .list_objects_v2()
        .bucket(&bucket)
        .send()
        .await
        .expect_err("a stopped server answers nothing");
    assert!(
        matches!(err, SdkError::DispatchFailure(_)),
        "expected a connection failure, got {err:?}"
    );
}

#[tokio::test]
#[ignore = "integration tier: needs SeaweedFS started by .ci/seaweedfs"]
async fn seaweedfs_multipart_round_trip() {
    multipart_round_trip(&TestS3::seaweedfs()).await;
}

#[tokio::test]
#[ignore = "integration tier: needs SeaweedFS started by .ci/seaweedfs"]
async fn seaweedfs_abort_multipart_leaves_nothing() {
    abort_multipart_leaves_nothing(&TestS3::seaweedfs()).await;
}

#[tokio::test]
#[ignore = "integration tier: needs SeaweedFS started by .ci/seaweedfs"]
async fn seaweedfs_presigned_get_works() {
    presigned_get_works(&TestS3::seaweedfs()).await;
}

#[tokio::test]
#[ignore = "integration tier: needs SeaweedFS started by .ci/seaweedfs"]
async fn seaweedfs_tampered_presigned_url_is_rejected() {
    tampered_presigned_url_is_rejected(&TestS3::seaweedfs()).await;
}

#[tokio::test]
#[ignore = "integration tier: needs SeaweedFS started by .ci/seaweedfs"]
async fn seaweedfs_wrong_secret_is_rejected() {
    wrong_secret_is_rejected(&TestS3::seaweedfs()).await;
}

#[test]
fn seaweedfs_is_absent_without_an_endpoint() {
    assert!(TestS3::seaweedfs_from(|_| None).is_none());
}

#[test]
fn seaweedfs_reads_its_variables() {
    let s3 = TestS3::seaweedfs_from(|name| match name {
        ENDPOINT_ENV => Some("http://127.0.0.1:8333/".to_owned()),
        ACCESS_KEY_ENV => Some("access".to_owned()),
        SECRET_KEY_ENV => Some("secret".to_owned()),
        _ => None,
    })
    .expect("configured");
    assert_eq!(s3.endpoint(), "http://127.0.0.1:8333");
    assert!(!s3.is_in_process());
    let credentials = s3.credentials();
    assert_eq!(credentials.access_key_id(), "access");
    assert_eq!(credentials.secret_access_key(), "secret");
}

#[test]
#[should_panic(expected = "TEKFLUX_TEST_S3_SECRET_KEY")]
fn seaweedfs_half_configured_panics() {
    TestS3::seaweedfs_from(|name| match name {
        ENDPOINT_ENV => Some("http://127.0.0.1:8333".to_owned()),
        ACCESS_KEY_ENV => Some("access".to_owned()),
        _ => None,
    });
}
