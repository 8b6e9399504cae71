//! Downloading one blob into the store in a single pass: the bytes go to the
//! store's blob writer, which hashes them and commits the blob only when its
//! digest is the one asked for. Layers are not decompressed here: their
//! content size (docker's image size) is measured when they are first
//! unpacked or listed (see `kiln_store::image_ops::record_image_unmeasured`),
//! which was most of a pull's CPU time.
//!
//! A transfer cut short (connection reset, timeout, a short body) is resumed
//! where it stopped with an HTTP `Range` request; a registry that ignores
//! `Range` answers 200 and the bytes already held are skipped. Attempts back
//! off exponentially; progress resets the count, so a long download over a
//! flaky link keeps going while a dead one gives up after a few tries.

use std::io::{self, Read, Write};
use std::time::Duration;

use kiln_store::{BlobWriter, Lease, Store, StoreError};

use crate::client::{Body, RegistryClient, Request, error_body};
use crate::error::{RegistryError, Result};
use crate::progress::{Progress, ProgressEvent};

/// Attempts in a row that received nothing before a download gives up.
const MAX_ATTEMPTS_WITHOUT_PROGRESS: u32 = 4;
/// Attempts in all for one blob.
const MAX_ATTEMPTS: u32 = 20;
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
}

/// Downloads `blob` into the store: verified against its digest, committed
/// under `lease`; on a mismatch nothing is kept.
pub fn download_blob(
    store: &Store,
    lease: &Lease<'_>,
    client: &RegistryClient,
    blob: &BlobRequest<'_>,
    progress: &dyn Progress,
) -> Result<()> {
    let store_digest = kiln_store::image_ops::to_store_digest(blob.digest)?;
    let digest_text = blob.digest.to_string();
    // One download into `writer`, committed (verified against the digest).
    let fetch_into = |writer: BlobWriter<'_>| -> Result<_> {
        let mut sink = Sink {
            writer,
            temp_dir: store.tmp_dir(),
            digest: &digest_text,
            progress,
        };
        transfer_with_retries(client, blob, &mut sink, progress)?;
        Ok(sink.writer.commit(lease, Some(&store_digest)))
    };
    // What a killed or failed earlier pull left of this blob is continued.
    let writer = store.resumable_blob_writer(&store_digest)?;
    let resumed = writer.size() > 0;
    let mut result = fetch_into(writer)?;
    if resumed && matches!(result, Err(StoreError::DigestMismatch { .. })) {
        // The kept part was bad (the commit deleted it): once more, whole.
        tracing::debug!("{digest_text}: the partial download did not verify; downloading it again");
        result = fetch_into(store.blob_writer()?)?;
    }
    match result {
        Ok(_) => Ok(()),
        Err(StoreError::DigestMismatch {
            expected,
            actual,
            size,
        }) => Err(RegistryError::DigestMismatch {
            source_name: blob.source_name.to_string(),
            expected: expected.to_string(),
            actual: actual.to_string(),
            size,
        }),
        Err(e) => Err(e.into()),
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

/// Where downloaded bytes go: the blob writer (hashing them) and progress.
struct Sink<'s, 'p> {
    writer: BlobWriter<'s>,
    /// For messages: where the writer's temp file is.
    temp_dir: std::path::PathBuf,
    digest: &'p str,
    progress: &'p dyn Progress,
}

impl Write for Sink<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.writer.write(buf)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(1) < backoff(2));
        assert_eq!(backoff(5), backoff(50));
    }
}
