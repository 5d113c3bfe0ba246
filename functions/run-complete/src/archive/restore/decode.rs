//! Hashing and decompressing the archive on a thread of its own, beside the thread that creates
//! the files, so that a restore uses two cores as the shell pipeline `zstd -d | tar -x` does
//! with two processes. The threads are joined by a channel of a few blocks: memory stays
//! bounded whatever the archive's size.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use super::*;

/// Bytes of decoded tar stream per block sent to the unpacking thread.
const BLOCK_BYTES: usize = 256 * 1024;
/// Blocks decoded ahead of the unpacking thread (with the one each side holds, at most 1.5 MiB).
const BLOCKS_AHEAD: usize = 4;

/// What the decoding thread saw of the object: the sha256 of every byte and their count.
pub(super) struct Decoded {
    pub(super) sha256: String,
    pub(super) bytes: u64,
}

/// Runs `unpack` over the decoded tar stream of `source` while another thread reads, hashes and
/// decodes it. Once `unpack` is done, the rest of the stream is read, so that the sha256 covers
/// the whole object; when `unpack` fails, the decoding stops at the next block.
pub(super) fn unpack_beside_decoder<R: Read + Send, T>(
    source: R,
    limits: &RestoreLimits,
    progress: Progress,
    unpack: impl FnOnce(&mut Blocks) -> Result<T, RestoreError>,
) -> Result<(T, Decoded), RestoreError> {
    let max_window_log = limits.max_window_log;
    std::thread::scope(|scope| {
        let (sender, receiver) = sync_channel(BLOCKS_AHEAD);
        // The decoding thread logs under the restore's span too.
        let span = tracing::Span::current();
        let decoder = scope.spawn(move || {
            let _entered = span.enter();
            decode(source, max_window_log, progress, &sender)
        });
        let mut blocks = Blocks {
            receiver,
            block: Vec::new(),
            at: 0,
        };
        let unpacked = unpack(&mut blocks);
        let drained = match unpacked {
            Ok(_) => io::copy(&mut blocks, &mut io::sink()).map(drop),
            Err(_) => Ok(()),
        };
        // Hanging up stops a decoder that is still sending after a refusal.
        drop(blocks);
        let decoded = decoder
            .join()
            .map_err(|_| RestoreError::Stopped("the decoding thread panicked".to_owned()))?;
        let unpacked = unpacked?;
        drained.map_err(|error| corrupt(&error))?;
        let decoded = decoded.map_err(|error| corrupt(&error))?;
        Ok((unpacked, decoded))
    })
}

/// Reads, hashes and decodes `source` to its end, sending the decoded stream in blocks. An
/// error is both sent (the unpacking thread stops where it would have) and returned.
fn decode<R: Read>(
    source: R,
    max_window_log: u32,
    progress: Progress,
    sender: &SyncSender<io::Result<Vec<u8>>>,
) -> io::Result<Decoded> {
    let failed = |error: io::Error| {
        let _ = sender.send(Err(io::Error::new(error.kind(), error.to_string())));
        error
    };
    let hashing = HashingReader {
        inner: source,
        hasher: Sha256::new(),
        bytes: 0,
        progress,
    };
    let mut decoder = zstd::stream::read::Decoder::new(hashing).map_err(failed)?;
    decoder.window_log_max(max_window_log).map_err(failed)?;
    loop {
        let mut block = vec![0; BLOCK_BYTES];
        let filled = fill(&mut decoder, &mut block).map_err(failed)?;
        if filled == 0 {
            break;
        }
        block.truncate(filled);
        if sender.send(Ok(block)).is_err() {
            return Err(io::Error::other("the unpacking stopped"));
        }
    }
    // Bytes after the last zstd frame still belong to the object and its sha256; those in the
    // decoder's buffer were hashed when they were read.
    let mut rest = decoder.finish();
    io::copy(&mut rest, &mut io::sink())?;
    let hashing = rest.into_inner();
    Ok(Decoded {
        sha256: hex::encode(hashing.hasher.finalize()),
        bytes: hashing.bytes,
    })
}

/// Reads into `block` until it is full or the stream ends; the bytes read.
fn fill(reader: &mut impl Read, block: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < block.len() {
        match reader.read(&mut block[filled..]) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

/// The decoded tar stream, as the unpacking thread reads it.
pub(super) struct Blocks {
    receiver: Receiver<io::Result<Vec<u8>>>,
    block: Vec<u8>,
    at: usize,
}

impl Read for Blocks {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.block.len() {
            match self.receiver.recv() {
                Ok(block) => {
                    self.block = block?;
                    self.at = 0;
                }
                // The decoder hung up: the stream ended (an error was sent before).
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.block.len() - self.at);
        buf[..n].copy_from_slice(&self.block[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
