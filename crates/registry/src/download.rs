//! Downloading one blob into the store in a single pass: the bytes go to the
//! store's blob writer (which hashes them) and, for layers, at the same time
//! to a second thread that decompresses the tar stream and measures its
//! content (docker's layer size), so no layer is read twice.
//!
//! A transfer cut short (connection reset, timeout, a short body) is resumed
//! where it stopped with an HTTP `Range` request; a registry that ignores
//! `Range` answers 200 and the bytes already held are skipped. Attempts back
//! off exponentially; progress resets the count, so a long download over a
//! flaky link keeps going while a dead one gives up after a few tries.

use std::io::{self, BufRead, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::Duration;

use kiln_store::image_ops::{OpsError, layer_stream_content_size, tar_stream_content_size};
use kiln_store::{BlobWriter, Lease, Store, StoreError};

use crate::client::{Body, RegistryClient, Request, error_body};
use crate::error::{RegistryError, Result};
use crate::gunzip::VerifiedGzip;
use crate::progress::{Progress, ProgressEvent};

/// Attempts in a row that received nothing before a download gives up.
const MAX_ATTEMPTS_WITHOUT_PROGRESS: u32 = 4;
/// Attempts in all for one blob.
const MAX_ATTEMPTS: u32 = 20;
/// Buffered chunks between the download and the measuring thread.
const MEASURE_QUEUE: usize = 32;
/// Read size from the network.
const READ_BUFFER: usize = 256 * 1024;

/// One blob to download.
pub struct BlobRequest<'a> {
    /// `/v2/<repository>/blobs/<digest>`.
    pub path: &'a str,
    /// `registry/repository`, for messages.
    pub source_name: &'a str,
    pub digest: &'a kiln_image::Digest,
    pub size: u64,
    pub scopes: &'a [String],
    /// Whether to measure the layer's content while it streams.
    pub is_layer: bool,
}

/// Downloads `blob` into the store (verified, committed under `lease`).
/// Returns the layer's content size when `is_layer`.
pub fn download_blob(
    store: &Store,
    lease: &Lease<'_>,
    client: &RegistryClient,
    blob: &BlobRequest<'_>,
    progress: &dyn Progress,
) -> Result<Option<u64>> {
    let store_digest = kiln_store::image_ops::to_store_digest(blob.digest)?;
    let digest_text = blob.digest.to_string();
    let writer = store.blob_writer()?;
    std::thread::scope(|scope| {
        let (side, measurer) = if blob.is_layer {
            let (tx, rx) = sync_channel::<Vec<u8>>(MEASURE_QUEUE);
            let handle = scope.spawn(move || measure_layer(ChannelReader::new(rx)));
            (Some(tx), Some(handle))
        } else {
            (None, None)
        };
        let mut sink = Sink {
            writer,
            temp_dir: store.tmp_dir(),
            side,
            digest: &digest_text,
            progress,
        };
        let transferred = transfer_with_retries(client, blob, &mut sink, progress);
        // Closing the channel ends the measurer's stream.
        let Sink { writer, side, .. } = sink;
        drop(side);
        let measured = measurer.map(|handle| handle.join());
        transferred?;
        match writer.commit(lease, Some(&store_digest)) {
            Ok(_) => {}
            Err(StoreError::DigestMismatch {
                expected,
                actual,
                size,
            }) => {
                return Err(RegistryError::DigestMismatch {
                    source_name: blob.source_name.to_string(),
                    expected: expected.to_string(),
                    actual: actual.to_string(),
                    size,
                });
            }
            Err(e) => return Err(e.into()),
        }
        // The blob is what the manifest names; a layer that is not a readable
        // tar is still an error of this image, as it was before streaming.
        match measured {
            None => Ok(None),
            Some(Ok(Ok(size))) => Ok(Some(size)),
            Some(Ok(Err(e))) => Err(OpsError::BadLayer {
                blob: store_digest.clone(),
                why: format!("not a readable layer tar: {e}"),
            }
            .into()),
            Some(Err(_)) => Err(RegistryError::Protocol {
                what: format!("layer {digest_text}"),
                why: "the thread measuring it panicked (a kiln bug; please report it)".into(),
            }),
        }
    })
}

/// The content size of a layer arriving through `reader`; gzip (nearly every
/// layer) through [`VerifiedGzip`], the rest as the store reads them.
fn measure_layer(reader: ChannelReader) -> io::Result<u64> {
    let mut reader = io::BufReader::with_capacity(READ_BUFFER, reader);
    if reader.fill_buf()?.starts_with(&[0x1f, 0x8b]) {
        tar_stream_content_size(VerifiedGzip::new(reader)?)
    } else {
        layer_stream_content_size(reader)
    }
}

fn transfer_with_retries(
    client: &RegistryClient,
    blob: &BlobRequest<'_>,
    sink: &mut Sink<'_, '_>,
    progress: &dyn Progress,
) -> Result<()> {
    let mut attempts = 0u32;
    let mut without_progress = 0u32;
    loop {
        attempts += 1;
        let before = sink.writer.size();
        match transfer_once(client, blob, sink) {
            Ok(()) => return Ok(()),
            Err(RegistryError::Transport { url, why }) => {
                let after = sink.writer.size();
                if after > before {
                    without_progress = 0;
                } else {
                    without_progress += 1;
                }
                if without_progress >= MAX_ATTEMPTS_WITHOUT_PROGRESS || attempts >= MAX_ATTEMPTS {
                    return Err(RegistryError::Transport {
                        url,
                        why: format!("{why} (gave up after {attempts} attempts)"),
                    });
                }
                tracing::debug!("resuming {url} at byte {after} after: {why}");
                progress.event(ProgressEvent::BlobRetry {
                    digest: sink.digest,
                    done: after,
                    why: &why,
                });
                std::thread::sleep(backoff(without_progress));
            }
            Err(e) => return Err(e),
        }
    }
}

fn backoff(failures_in_a_row: u32) -> Duration {
    Duration::from_millis(200 * 2u64.pow(failures_in_a_row.min(5)))
}

/// One GET of the rest of the blob (from what `sink` already holds).
fn transfer_once(
    client: &RegistryClient,
    blob: &BlobRequest<'_>,
    sink: &mut Sink<'_, '_>,
) -> Result<()> {
    let offset = sink.writer.size();
    if offset > 0 && offset == blob.size {
        // Everything arrived before the error: the digest check decides.
        return Ok(());
    }
    let mut request = Request::new("GET", blob.path, blob.scopes.to_vec()).body(Body::Empty);
    if offset > 0 {
        request = request.header("Range", format!("bytes={offset}-"));
    }
    let response = client.send(&request)?;
    let url = response.get_url().to_string();
    let digest = blob.digest;
    let mut skip = 0u64;
    match response.status() {
        200 => skip = offset,
        206 if offset > 0 => {
            let range = response.header("Content-Range").unwrap_or_default();
            let start = range
                .trim()
                .strip_prefix("bytes ")
                .and_then(|r| r.split('-').next())
                .and_then(|s| s.trim().parse::<u64>().ok());
            if start != Some(offset) {
                return Err(RegistryError::Protocol {
                    what: url,
                    why: format!(
                        "asked for blob {digest} from byte {offset}, got Content-Range {range:?}"
                    ),
                });
            }
        }
        404 => {
            return Err(RegistryError::NotFound {
                what: format!("blob {digest}"),
                url,
            });
        }
        status => {
            return Err(RegistryError::Status {
                url,
                status,
                what: format!("fetching blob {digest}"),
                body: error_body(response),
            });
        }
    }
    let declared_length = response
        .header("Content-Length")
        .and_then(|v| v.trim().parse::<u64>().ok());
    let transport = |e: io::Error| RegistryError::Transport {
        url: url.clone(),
        why: format!("downloading blob {digest}: {e}"),
    };
    let mut body = response.into_reader();
    if skip > 0 {
        // The registry ignored Range: the bytes already held come again.
        let skipped = io::copy(&mut (&mut body).take(skip), &mut io::sink()).map_err(transport)?;
        if skipped < skip {
            return Err(transport(io::ErrorKind::UnexpectedEof.into()));
        }
    }
    // One byte more than declared, to notice a registry sending too much.
    let remaining = blob.size.saturating_sub(offset);
    let mut body = body.take(remaining.saturating_add(1));
    let mut buffer = vec![0u8; READ_BUFFER];
    let mut received = 0u64;
    loop {
        let n = match body.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(transport(e)),
        };
        let chunk = buffer.get(..n).unwrap_or_default();
        sink.write_all(chunk).map_err(|source| RegistryError::Io {
            action: "writing downloaded blob",
            path: sink.temp_dir.clone(),
            source,
        })?;
        received += n as u64;
    }
    let total = sink.writer.size();
    if total > blob.size || (total < blob.size && declared_length == Some(received + skip)) {
        // The registry sent a complete body of the wrong length: not a
        // cut connection, so not worth another attempt.
        return Err(RegistryError::SizeMismatch {
            source_name: blob.source_name.to_string(),
            digest: digest.to_string(),
            expected: blob.size,
            actual: total,
            more: if total > blob.size { " or more" } else { "" },
        });
    }
    if total < blob.size {
        return Err(transport(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("connection ended after {total} of {} bytes", blob.size),
        )));
    }
    Ok(())
}

/// Where downloaded bytes go: the blob writer, progress, and (for layers) a
/// copy to the measuring thread.
struct Sink<'s, 'p> {
    writer: BlobWriter<'s>,
    /// For messages: where the writer's temp file is.
    temp_dir: std::path::PathBuf,
    side: Option<SyncSender<Vec<u8>>>,
    digest: &'p str,
    progress: &'p dyn Progress,
}

impl Write for Sink<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.writer.write(buf)?;
        if let Some(side) = &self.side {
            let done = buf.get(..n).unwrap_or_default().to_vec();
            if side.send(done).is_err() {
                // The measurer stopped (end of the tar, or an error it will
                // report when joined): the download goes on without it.
                self.side = None;
            }
        }
        self.progress.event(ProgressEvent::BlobBytes {
            digest: self.digest,
            done: self.writer.size(),
        });
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }
}

/// Reads the chunks sent over a channel until the sender is dropped.
struct ChannelReader {
    rx: Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl ChannelReader {
    fn new(rx: Receiver<Vec<u8>>) -> Self {
        ChannelReader {
            rx,
            chunk: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.chunk.len() {
            match self.rx.recv() {
                Ok(chunk) => {
                    self.chunk = chunk;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let available = self.chunk.get(self.pos..).unwrap_or_default();
        let n = available.len().min(buf.len());
        buf.get_mut(..n)
            .unwrap_or_default()
            .copy_from_slice(available.get(..n).unwrap_or_default());
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_reader_joins_chunks_and_ends_when_the_sender_goes() {
        let (tx, rx) = sync_channel(4);
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            ChannelReader::new(rx).read_to_end(&mut all).unwrap();
            all
        });
        for chunk in [b"ab".to_vec(), Vec::new(), b"cde".to_vec()] {
            tx.send(chunk).unwrap();
        }
        drop(tx);
        assert_eq!(reader.join().unwrap(), b"abcde");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(1) < backoff(2));
        assert_eq!(backoff(5), backoff(50));
    }
}
