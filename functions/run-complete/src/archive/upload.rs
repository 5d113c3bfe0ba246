//! Streaming an archive to S3 (multipart, bounded memory) and checking what the store holds.

use std::collections::BTreeMap;

use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::Progress;
use super::chunk_sink::ChunkSink;
pub use super::error::ArchiveError;
use super::s3_error::S3Failure;
use super::tar_stream::{TarSummary, write_archive};
use super::tree::Tree;

/// S3's smallest part size for every part but the last.
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;

/// How long the clean-up of a failed upload may take: the caller is already failing, and a
/// store that does not answer must not hold the request beyond this.
const ABORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Content type of the stored archives.
const CONTENT_TYPE: &str = "application/zstd";

/// Most bytes of file content an archive holds unless configured otherwise
/// (`storage.maxArchiveBytes`): 64 GiB, what `tekflux restore` accepts by default, so every
/// archive made with the defaults can be restored with them.
pub const DEFAULT_MAX_ARCHIVE_BYTES: u64 = 64 * 1024 * 1024 * 1024;
/// Default bound on an archive's entries: what restore accepts by default.
pub const DEFAULT_MAX_ARCHIVE_ENTRIES: u64 = 1_000_000;

/// How an archive is compressed and uploaded.
#[derive(Debug, Clone)]
pub struct ArchiveOptions {
    /// zstd compression level (1 = fastest; 3 is zstd's own default).
    pub level: i32,
    /// Bytes per multipart part, at least [`MIN_PART_SIZE`]; archives smaller than one part are
    /// sent with a single PutObject.
    pub part_size: usize,
    /// Parts uploaded at the same time. Memory is about `part_size × (concurrency + 2)`.
    pub concurrency: usize,
    /// Most bytes of file content the archive may hold (see [`write_archive`]).
    pub max_bytes: u64,
    /// Most entries the archive may hold (see [`write_archive`]).
    pub max_entries: u64,
    /// Told the number of compressed bytes produced, as they are produced.
    pub progress: Progress,
}

impl Default for ArchiveOptions {
    fn default() -> Self {
        Self {
            level: 3,
            part_size: 8 * 1024 * 1024,
            // Two uploads in flight keep up with one core of zstd -1 on loopback (more gave no
            // throughput in the archive benchmark), and 8 MiB × (2 + 2) leaves the archiver
            // well under its 64 MiB goal; see functions/run-complete/BENCHMARKS.md.
            concurrency: 2,
            max_bytes: DEFAULT_MAX_ARCHIVE_BYTES,
            max_entries: DEFAULT_MAX_ARCHIVE_ENTRIES,
            progress: Progress::default(),
        }
    }
}

impl ArchiveOptions {
    /// The defaults with the config's `storage.compressionLevel`, `storage.partSizeMib` and
    /// `storage.maxArchiveBytes` applied; a part size below S3's minimum is raised to it.
    pub fn from_storage(storage: &tekflux_common::config::Storage) -> Self {
        let mut options = Self::default();
        if let Some(level) = storage.compression_level {
            options.level = level;
        }
        if let Some(mib) = storage.part_size_mib {
            let bytes = usize::try_from(mib.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX);
            options.part_size = bytes.max(MIN_PART_SIZE);
        }
        if let Some(max_bytes) = storage.max_archive_bytes {
            options.max_bytes = max_bytes;
        }
        if let Some(max_entries) = storage.max_archive_entries {
            options.max_entries = max_entries;
        }
        options
    }
}

/// What was uploaded, as counted while streaming.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveReport {
    /// The object key.
    pub key: String,
    /// Size of the compressed archive, equal to what the store reports.
    pub bytes: u64,
    /// sha256 of the compressed archive, lowercase hex.
    pub sha256: String,
    /// Tar entries (directories, files, symlinks).
    pub entries: u64,
    /// Sockets, FIFOs and devices left out.
    pub skipped_special: u64,
    /// Upload requests that carried data: 1 for a single PutObject, else the multipart parts.
    pub parts: u32,
}

/// An object read back from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedObject {
    /// Bytes read.
    pub bytes: u64,
    /// Their sha256, lowercase hex.
    pub sha256: String,
}

/// Archives `tree` (see [`write_archive`]) straight into `s3://bucket/key`, with
/// `metadata` as the object's `x-amz-meta-*`, and checks that the stored size is the streamed
/// size.
///
/// The tar and zstd work runs on a blocking thread that hands `part_size` chunks through a
/// one-slot channel to at most `concurrency` concurrent UploadPart requests, so memory does not
/// grow with the tree. Any failure after CreateMultipartUpload aborts the upload (best effort,
/// bounded by a timeout) before the error is returned: no parts are left behind and nothing is
/// reported as done that is not.
///
/// # Errors
/// See [`ArchiveError`]; [`ArchiveError::is_transient`] tells retryable failures apart.
#[tracing::instrument(skip(client, tree, options, metadata))]
pub async fn upload_archive(
    client: &Client,
    bucket: &str,
    key: &str,
    tree: &Tree,
    options: &ArchiveOptions,
    metadata: BTreeMap<String, String>,
) -> Result<ArchiveReport, ArchiveError> {
    if options.part_size < MIN_PART_SIZE {
        return Err(ArchiveError::InvalidOptions(format!(
            "part size {} is below S3's minimum of {MIN_PART_SIZE} bytes",
            options.part_size
        )));
    }
    if options.concurrency == 0 {
        return Err(ArchiveError::InvalidOptions(
            "concurrency must be at least 1".to_owned(),
        ));
    }

    // One slot: the producer may fill one part ahead while the uploaders send theirs.
    let (sender, mut receiver) = mpsc::channel::<Bytes>(1);
    // Uploaded parts' buffers go back to the producer, so the same `concurrency + 2` buffers
    // serve the whole archive. A fresh buffer per part left glibc's heap fragmented by
    // part-sized holes and the peak RSS growing with the archive (BENCHMARKS.md).
    let (recycle, recycled) = std::sync::mpsc::channel::<BytesMut>();
    let tree = tree.try_clone()?;
    let (level, part_size, max_bytes, max_entries) = (
        options.level,
        options.part_size,
        options.max_bytes,
        options.max_entries,
    );
    let progress = options.progress.clone();
    // The producer thread logs under the caller's span (the request's, or the CLI's).
    let span = tracing::Span::current();
    let producer = tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        let sink = ChunkSink::new(sender, recycled, part_size, progress);
        let (summary, sink) = write_archive(&tree, level, max_bytes, max_entries, sink)?;
        let (bytes, sha256) = sink.finish().map_err(ArchiveError::Output)?;
        Ok::<_, ArchiveError>(Streamed {
            summary,
            bytes,
            sha256,
        })
    });

    let first = receiver.recv().await;
    let second = match first {
        Some(_) => receiver.recv().await,
        None => None,
    };
    let Some(second) = second else {
        // The whole archive fits in one part (or the producer failed early).
        drop(receiver);
        let streamed = join_producer(producer).await?;
        let body = first.unwrap_or_default();
        client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type(CONTENT_TYPE)
            .set_metadata(Some(metadata.into_iter().collect()))
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|err| ArchiveError::s3("PutObject", bucket, key, &err))?;
        check_stored_size(client, bucket, key, streamed.bytes).await?;
        return Ok(streamed.into_report(key, 1));
    };

    let upload_id = client
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .content_type(CONTENT_TYPE)
        .set_metadata(Some(metadata.into_iter().collect()))
        .send()
        .await
        .map_err(|err| ArchiveError::s3("CreateMultipartUpload", bucket, key, &err))?
        .upload_id
        .ok_or_else(|| {
            ArchiveError::S3(Box::new(S3Failure::unavailable(
                "CreateMultipartUpload",
                bucket,
                key,
                "the answer carries no upload id".to_owned(),
            )))
        })?;

    let first = first.unwrap_or_default();
    let target = Target {
        client,
        bucket,
        key,
        upload_id: &upload_id,
    };
    let outcome = async {
        // `receiver` moves in and is dropped when sending stops, which stops the producer.
        let sent = send_parts(
            &target,
            [first, second],
            receiver,
            &recycle,
            options.concurrency,
        )
        .await;
        // The producer is always joined so no thread keeps reading the tree after we return;
        // its error matters only when sending succeeded (it then explains the short stream).
        let streamed = join_producer(producer).await;
        let (parts, streamed) = (sent?, streamed?);
        let part_count = u32::try_from(parts.len()).unwrap_or(u32::MAX);
        client
            .complete_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(&upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|err| ArchiveError::s3("CompleteMultipartUpload", bucket, key, &err))?;
        Ok::<_, ArchiveError>((streamed, part_count))
    }
    .await;

    match outcome {
        Ok((streamed, part_count)) => {
            check_stored_size(client, bucket, key, streamed.bytes).await?;
            Ok(streamed.into_report(key, part_count))
        }
        Err(err) => {
            abort(&target).await;
            Err(err)
        }
    }
}

/// Reads `s3://bucket/key` back and checks its sha256 against `expected_sha256` (hex, any
/// case), for callers that delete the source only once the store is known to hold it.
///
/// # Errors
/// [`ArchiveError::S3`] when the object cannot be read, [`ArchiveError::Mismatch`] when it
/// differs.
#[tracing::instrument(skip(client))]
pub async fn verify_archive(
    client: &Client,
    bucket: &str,
    key: &str,
    expected_sha256: &str,
) -> Result<VerifiedObject, ArchiveError> {
    let object = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|err| ArchiveError::s3("GetObject", bucket, key, &err))?;
    let mut body = object.body;
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|err| {
            ArchiveError::S3(Box::new(S3Failure::unavailable(
                "GetObject",
                bucket,
                key,
                format!(
                    "reading the body failed: {}",
                    super::without_os_error(&err.to_string())
                ),
            )))
        })?;
        hasher.update(&chunk);
        bytes += chunk.len() as u64;
    }
    let sha256 = hex::encode(hasher.finalize());
    if !sha256.eq_ignore_ascii_case(expected_sha256) {
        return Err(ArchiveError::Mismatch {
            key: key.to_owned(),
            detail: format!("expected sha256 {expected_sha256}, found {sha256} ({bytes} bytes)"),
        });
    }
    Ok(VerifiedObject { bytes, sha256 })
}

/// What the producer thread counted.
struct Streamed {
    summary: TarSummary,
    bytes: u64,
    sha256: String,
}

impl Streamed {
    fn into_report(self, key: &str, parts: u32) -> ArchiveReport {
        ArchiveReport {
            key: key.to_owned(),
            bytes: self.bytes,
            sha256: self.sha256,
            entries: self.summary.entries,
            skipped_special: self.summary.skipped_special,
            parts,
        }
    }
}

/// The multipart upload being written.
struct Target<'a> {
    client: &'a Client,
    bucket: &'a str,
    key: &'a str,
    upload_id: &'a str,
}

async fn join_producer(
    producer: tokio::task::JoinHandle<Result<Streamed, ArchiveError>>,
) -> Result<Streamed, ArchiveError> {
    producer
        .await
        .map_err(|err| ArchiveError::Producer(err.to_string()))?
}

async fn send_parts(
    target: &Target<'_>,
    first_two: [Bytes; 2],
    mut receiver: mpsc::Receiver<Bytes>,
    recycle: &std::sync::mpsc::Sender<BytesMut>,
    concurrency: usize,
) -> Result<Vec<CompletedPart>, ArchiveError> {
    let mut in_flight = JoinSet::new();
    let mut done = Vec::new();
    let mut pending = first_two.into_iter();
    let mut part_number = 0i32;
    loop {
        // Wait for a free upload slot before taking the next part off the channel: a part held
        // here while waiting would be one more part in memory without being uploaded sooner.
        while in_flight.len() >= concurrency {
            if let Some(result) = in_flight.join_next().await {
                done.push(part_result(target, result)?);
            }
        }
        let chunk = match pending.next() {
            Some(chunk) => chunk,
            None => match receiver.recv().await {
                Some(chunk) => chunk,
                None => break,
            },
        };
        part_number += 1;
        // A second handle on the buffer (a reference count, not a copy), to hand it back to
        // the producer once the SDK has dropped the request's.
        let buffer = chunk.clone();
        let recycle = recycle.clone();
        let request = target
            .client
            .upload_part()
            .bucket(target.bucket)
            .key(target.key)
            .upload_id(target.upload_id)
            .part_number(part_number)
            .body(ByteStream::from(chunk));
        in_flight.spawn(async move {
            let output = request.send().await?;
            // Unique again once the request is gone; if anything still holds the body, the
            // producer simply allocates a new buffer.
            if let Ok(buffer) = buffer.try_into_mut() {
                let _ = recycle.send(buffer);
            }
            Ok(CompletedPart::builder()
                .part_number(part_number)
                .set_e_tag(output.e_tag)
                .build())
        });
    }
    while let Some(result) = in_flight.join_next().await {
        done.push(part_result(target, result)?);
    }
    done.sort_by_key(|part| part.part_number);
    Ok(done)
}

type PartResult = Result<
    CompletedPart,
    aws_sdk_s3::error::SdkError<
        aws_sdk_s3::operation::upload_part::UploadPartError,
        aws_sdk_s3::config::http::HttpResponse,
    >,
>;

fn part_result(
    target: &Target<'_>,
    joined: Result<PartResult, tokio::task::JoinError>,
) -> Result<CompletedPart, ArchiveError> {
    joined
        .map_err(|err| ArchiveError::Producer(err.to_string()))?
        .map_err(|err| ArchiveError::s3("UploadPart", target.bucket, target.key, &err))
}

async fn abort(target: &Target<'_>) {
    let request = target
        .client
        .abort_multipart_upload()
        .bucket(target.bucket)
        .key(target.key)
        .upload_id(target.upload_id)
        .send();
    match tokio::time::timeout(ABORT_TIMEOUT, request).await {
        Ok(Ok(_)) => {}
        Ok(Err(err)) => tracing::warn!(
            key = target.key,
            upload_id = target.upload_id,
            error = %S3Failure::from_sdk("AbortMultipartUpload", target.bucket, target.key, &err),
            "aborting the failed multipart upload failed; a bucket lifecycle rule must remove its parts"
        ),
        Err(_) => tracing::warn!(
            key = target.key,
            upload_id = target.upload_id,
            "aborting the failed multipart upload timed out; a bucket lifecycle rule must remove its parts"
        ),
    }
}

async fn check_stored_size(
    client: &Client,
    bucket: &str,
    key: &str,
    expected: u64,
) -> Result<(), ArchiveError> {
    let head = client
        .head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|err| ArchiveError::s3("HeadObject", bucket, key, &err))?;
    let stored = head.content_length.and_then(|len| u64::try_from(len).ok());
    if stored != Some(expected) {
        return Err(ArchiveError::Mismatch {
            key: key.to_owned(),
            detail: match stored {
                Some(stored) => format!("streamed {expected} bytes, the store reports {stored}"),
                None => format!("streamed {expected} bytes, the store reports no size"),
            },
        });
    }
    Ok(())
}
