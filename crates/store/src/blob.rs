//! Writing and reading blobs. A blob is first written to this process's temp
//! directory while being hashed; only when complete, verified and fsynced is it
//! renamed to `blobs/sha256/<hex>`, so a crash at any moment leaves either no
//! blob or the whole blob under its digest name, never half of one.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest as _, Sha256};

use crate::{Digest, Lease, Result, Store, StoreError, sync_dir};

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A blob in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    pub digest: Digest,
    pub size: u64,
}

/// An in-progress blob: write its bytes, then [`BlobWriter::commit`].
/// Dropping it without committing deletes the temp file.
pub struct BlobWriter<'s> {
    store: &'s Store,
    temp_path: PathBuf,
    out: Option<BufWriter<File>>,
    hasher: Sha256,
    size: u64,
}

impl Write for BlobWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| io::Error::other("blob writer already finished"))?;
        let written = out.write(buf)?;
        let done = buf.get(..written).unwrap_or(buf);
        self.hasher.update(done);
        self.size += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.out.as_mut() {
            Some(out) => out.flush(),
            None => Ok(()),
        }
    }
}

impl BlobWriter<'_> {
    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Verifies the content against `expected` (when given), fsyncs it, records
    /// it in `lease` (so no concurrent gc can remove it before an image refers
    /// to it) and renames it to its digest name.
    pub fn commit(mut self, lease: &Lease<'_>, expected: Option<&Digest>) -> Result<BlobInfo> {
        let out = self
            .out
            .take()
            .ok_or_else(|| StoreError::Corrupt("blob writer committed twice".into()))?;
        let file = out.into_inner().map_err(|e| StoreError::Io {
            action: "writing blob",
            path: self.temp_path.clone(),
            source: e.into_error(),
        })?;
        let digest = Digest::from_sha256_bytes(&self.hasher.clone().finalize());
        if let Some(expected) = expected
            && *expected != digest
        {
            let _ = fs::remove_file(&self.temp_path);
            return Err(StoreError::DigestMismatch {
                expected: expected.clone(),
                actual: digest,
                size: self.size,
            });
        }
        // The lease goes in before the blob becomes visible: gc lists files
        // first and reads leases after, so it can never see this blob unleased.
        lease.add_blob(&digest)?;
        let final_path = self.store.blob_path(&digest);
        if final_path.exists() {
            let _ = fs::remove_file(&self.temp_path);
        } else {
            file.sync_all()
                .map_err(StoreError::io("syncing blob", &self.temp_path))?;
            drop(file);
            fs::rename(&self.temp_path, &final_path)
                .map_err(StoreError::io("renaming blob into place", &final_path))?;
            sync_dir(final_path.parent().unwrap_or(self.store.root()))?;
        }
        Ok(BlobInfo {
            digest,
            size: self.size,
        })
    }
}

impl Drop for BlobWriter<'_> {
    fn drop(&mut self) {
        if self.out.is_some() {
            let _ = fs::remove_file(&self.temp_path);
        }
    }
}

impl Store {
    /// Starts writing a new blob.
    pub fn blob_writer(&self) -> Result<BlobWriter<'_>> {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let temp_path = self.tmp_dir().join(format!("blob-{n}"));
        let file =
            File::create(&temp_path).map_err(StoreError::io("creating temp blob", &temp_path))?;
        Ok(BlobWriter {
            store: self,
            temp_path,
            out: Some(BufWriter::with_capacity(1 << 20, file)),
            hasher: Sha256::new(),
            size: 0,
        })
    }

    /// Stores `data` as a blob.
    pub fn put_blob(&self, lease: &Lease<'_>, data: &[u8]) -> Result<BlobInfo> {
        let digest = Digest::of_bytes(data);
        if self.has_blob(&digest) {
            lease.add_blob(&digest)?;
            // Re-check after leasing: a gc that ran between the two checks
            // may have removed it, and then we write it again.
            if self.has_blob(&digest) {
                return Ok(BlobInfo {
                    digest,
                    size: data.len() as u64,
                });
            }
        }
        let mut writer = self.blob_writer()?;
        let temp = writer.temp_path.clone();
        writer
            .write_all(data)
            .map_err(StoreError::io("writing blob", temp))?;
        writer.commit(lease, Some(&digest))
    }

    /// Copies `reader` into a blob, verifying it against `expected` if given.
    pub fn copy_blob(
        &self,
        lease: &Lease<'_>,
        reader: &mut dyn Read,
        expected: Option<&Digest>,
    ) -> Result<BlobInfo> {
        let mut writer = self.blob_writer()?;
        let temp = writer.temp_path.clone();
        io::copy(reader, &mut writer).map_err(StoreError::io("writing blob", temp))?;
        writer.commit(lease, expected)
    }

    /// Whether the blob file exists.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Opens a blob for reading.
    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        File::open(self.blob_path(digest)).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                StoreError::BlobMissing {
                    digest: digest.clone(),
                    root: self.root.clone(),
                }
            } else {
                StoreError::Io {
                    action: "opening blob",
                    path: self.blob_path(digest),
                    source: e,
                }
            }
        })
    }

    /// Reads a whole (small) blob, verifying its digest: manifests and configs
    /// are read this way so that a damaged one is never trusted.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let mut data = Vec::new();
        self.open_blob(digest)?
            .read_to_end(&mut data)
            .map_err(StoreError::io("reading blob", self.blob_path(digest)))?;
        let actual = Digest::of_bytes(&data);
        if actual != *digest {
            return Err(StoreError::DigestMismatch {
                expected: digest.clone(),
                actual,
                size: data.len() as u64,
            });
        }
        Ok(data)
    }

    /// Size in bytes of a stored blob.
    pub fn blob_size(&self, digest: &Digest) -> Result<u64> {
        fs::metadata(self.blob_path(digest))
            .map(|m| m.len())
            .map_err(StoreError::io("reading blob size", self.blob_path(digest)))
    }
}

/// Hashes a file's content.
pub(crate) fn hash_file(path: &std::path::Path) -> io::Result<(Digest, u64)> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(buf.get(..n).unwrap_or(&buf));
        size += n as u64;
    }
    Ok((Digest::from_sha256_bytes(&hasher.finalize()), size))
}
