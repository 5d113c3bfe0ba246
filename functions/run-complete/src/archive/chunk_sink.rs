//! The writer at the end of the compressed stream: cuts it into multipart-upload parts.

use std::io::{self, Write};

use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::Progress;

/// The compressed stream's end: cuts it into parts for the uploader and counts and hashes it
/// on the way.
pub(super) struct ChunkSink {
    sender: mpsc::Sender<Bytes>,
    /// Buffers of parts already uploaded, to fill again.
    recycled: std::sync::mpsc::Receiver<BytesMut>,
    buffer: BytesMut,
    part_size: usize,
    hasher: Sha256,
    bytes: u64,
    progress: Progress,
}

impl ChunkSink {
    pub(super) fn new(
        sender: mpsc::Sender<Bytes>,
        recycled: std::sync::mpsc::Receiver<BytesMut>,
        part_size: usize,
        progress: Progress,
    ) -> Self {
        Self {
            progress,
            sender,
            recycled,
            buffer: BytesMut::with_capacity(part_size),
            part_size,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// Hands the full buffer to the uploader, then takes a buffer to fill: only afterwards, so
    /// that while the producer waits for the channel it holds no second one.
    fn send_buffer(&mut self) -> io::Result<()> {
        self.hand_over()?;
        self.buffer = match self.recycled.try_recv() {
            Ok(mut buffer) if buffer.capacity() >= self.part_size => {
                buffer.clear();
                buffer
            }
            _ => BytesMut::with_capacity(self.part_size),
        };
        Ok(())
    }

    fn hand_over(&mut self) -> io::Result<()> {
        let chunk = std::mem::take(&mut self.buffer).freeze();
        self.sender
            .blocking_send(chunk)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the uploader stopped"))
    }

    /// Sends the last, short part and returns the byte count and hex sha256.
    pub(super) fn finish(mut self) -> io::Result<(u64, String)> {
        if !self.buffer.is_empty() {
            self.hand_over()?;
        }
        Ok((self.bytes, hex::encode(self.hasher.finalize())))
    }
}

impl Write for ChunkSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = self.part_size - self.buffer.len();
        let taken = &data[..data.len().min(room)];
        self.buffer.extend_from_slice(taken);
        self.hasher.update(taken);
        self.bytes += taken.len() as u64;
        self.progress.advance(taken.len() as u64);
        if self.buffer.len() == self.part_size {
            self.send_buffer()?;
        }
        Ok(taken.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
