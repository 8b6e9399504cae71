//! Where archive readers put blobs and archive writers take them from.
//!
//! The store implements [`BlobRead`] and [`BlobWrite`] over its own directory; this
//! module also has [`MemoryBlobs`] (tests, small tools) and [`BlobDir`], an OCI
//! image-layout `blobs/` tree that writes through a temporary file, verifies the
//! digest and renames, so a crash never leaves a half blob under a digest name.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::digest::{Digest, DigestingReader, sha256_hex, verify_digest};
use crate::error::{ImageError, Result};

/// Largest manifest, index or config read into memory (docker's limit is 4 MiB for
/// manifests; configs of images with long histories are larger, so allow more).
pub const MAX_METADATA_BLOB: u64 = 64 * 1024 * 1024;

/// Read access to blobs by digest.
pub trait BlobRead {
    /// Opens a blob for streaming. A missing blob is `io::ErrorKind::NotFound`.
    fn open_blob(&self, digest: &Digest) -> io::Result<Box<dyn Read + '_>>;
    /// Size in bytes of a blob.
    fn blob_size(&self, digest: &Digest) -> io::Result<u64>;
    /// Size of the uncompressed tar inside a compressed layer blob, when the
    /// source already knows it. Writing a docker-archive (whose layers are
    /// uncompressed) then decompresses once instead of twice. Default: unknown.
    fn uncompressed_size(&self, _layer_blob: &Digest) -> Option<u64> {
        None
    }
}

/// Write access to blobs: content goes in, its digest comes out.
pub trait BlobWrite {
    /// Stores everything `reader` yields as one blob and returns its sha256 digest
    /// and size. With `expected`, an implementation must verify the content hashes
    /// to it and store nothing (returning [`ImageError::DigestMismatch`]) if not.
    fn put_blob(
        &mut self,
        reader: &mut dyn Read,
        expected: Option<&Digest>,
    ) -> Result<(Digest, u64)>;
}

impl<T: BlobRead + ?Sized> BlobRead for &T {
    fn open_blob(&self, digest: &Digest) -> io::Result<Box<dyn Read + '_>> {
        (**self).open_blob(digest)
    }
    fn blob_size(&self, digest: &Digest) -> io::Result<u64> {
        (**self).blob_size(digest)
    }
    fn uncompressed_size(&self, layer_blob: &Digest) -> Option<u64> {
        (**self).uncompressed_size(layer_blob)
    }
}

impl<T: BlobWrite + ?Sized> BlobWrite for &mut T {
    fn put_blob(
        &mut self,
        reader: &mut dyn Read,
        expected: Option<&Digest>,
    ) -> Result<(Digest, u64)> {
        (**self).put_blob(reader, expected)
    }
}

/// Reads a whole small blob (manifest, config, index), verifying its digest and
/// refusing anything larger than `limit`.
pub fn read_blob_bytes(
    blobs: &dyn BlobRead,
    digest: &Digest,
    what: &str,
    limit: u64,
) -> Result<Vec<u8>> {
    let reader = blobs.open_blob(digest).map_err(|err| {
        if err.kind() == io::ErrorKind::NotFound {
            ImageError::MissingBlob {
                digest: digest.clone(),
                what: what.to_string(),
            }
        } else {
            ImageError::io(format!("opening {what} {digest}"), err)
        }
    })?;
    let mut hashing = DigestingReader::new(reader.take(limit + 1));
    let mut bytes = Vec::new();
    hashing
        .read_to_end(&mut bytes)
        .map_err(|err| ImageError::io(format!("reading {what} {digest}"), err))?;
    if bytes.len() as u64 > limit {
        return Err(ImageError::TooLarge {
            what: format!("{what} {digest}"),
            limit,
        });
    }
    let (actual, _) = hashing.finish();
    verify_digest(&format!("{what} {digest}"), digest, &actual)?;
    Ok(bytes)
}

/// Blobs held in memory. For tests and small images only.
#[derive(Debug, Default, Clone)]
pub struct MemoryBlobs {
    blobs: HashMap<Digest, Vec<u8>>,
}

impl MemoryBlobs {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bytes, returning their digest.
    pub fn insert(&mut self, bytes: Vec<u8>) -> Digest {
        let digest = crate::digest::sha256_digest(&bytes);
        self.blobs.insert(digest.clone(), bytes);
        digest
    }

    /// The bytes of a blob, if present.
    pub fn get(&self, digest: &Digest) -> Option<&[u8]> {
        self.blobs.get(digest).map(Vec::as_slice)
    }

    /// Number of blobs held.
    pub fn len(&self) -> usize {
        self.blobs.len()
    }

    /// True when no blob is held.
    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }
}

impl BlobRead for MemoryBlobs {
    fn open_blob(&self, digest: &Digest) -> io::Result<Box<dyn Read + '_>> {
        match self.blobs.get(digest) {
            Some(bytes) => Ok(Box::new(&bytes[..])),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("blob {digest} not found"),
            )),
        }
    }

    fn blob_size(&self, digest: &Digest) -> io::Result<u64> {
        match self.blobs.get(digest) {
            Some(bytes) => Ok(bytes.len() as u64),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("blob {digest} not found"),
            )),
        }
    }
}

impl BlobWrite for MemoryBlobs {
    fn put_blob(
        &mut self,
        reader: &mut dyn Read,
        expected: Option<&Digest>,
    ) -> Result<(Digest, u64)> {
        let mut hashing = DigestingReader::new(reader);
        let mut bytes = Vec::new();
        hashing
            .read_to_end(&mut bytes)
            .map_err(|err| ImageError::io("reading blob content", err))?;
        let (digest, size) = hashing.finish();
        if let Some(expected) = expected {
            verify_digest("blob", expected, &digest)?;
        }
        self.blobs.insert(digest.clone(), bytes);
        Ok((digest, size))
    }
}

/// An OCI image-layout blob tree: `<root>/blobs/sha256/<hex>`.
#[derive(Debug, Clone)]
pub struct BlobDir {
    root: PathBuf,
}

impl BlobDir {
    /// Blobs under `root/blobs/sha256`; the directory is created on first write.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        BlobDir { root: root.into() }
    }

    /// The layout root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of a blob (whether or not it exists).
    pub fn blob_path(&self, digest: &Digest) -> Result<PathBuf> {
        let hex = sha256_hex(digest)?;
        Ok(self.root.join("blobs").join("sha256").join(hex))
    }

    fn io_path(&self, digest: &Digest) -> io::Result<PathBuf> {
        self.blob_path(digest)
            .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err.to_string()))
    }
}

impl BlobRead for BlobDir {
    fn open_blob(&self, digest: &Digest) -> io::Result<Box<dyn Read + '_>> {
        let path = self.io_path(digest)?;
        Ok(Box::new(io::BufReader::new(fs::File::open(path)?)))
    }

    fn blob_size(&self, digest: &Digest) -> io::Result<u64> {
        Ok(fs::metadata(self.io_path(digest)?)?.len())
    }
}

impl BlobWrite for BlobDir {
    fn put_blob(
        &mut self,
        reader: &mut dyn Read,
        expected: Option<&Digest>,
    ) -> Result<(Digest, u64)> {
        let dir = self.root.join("blobs").join("sha256");
        fs::create_dir_all(&dir)
            .map_err(|err| ImageError::io(format!("creating {}", dir.display()), err))?;
        let mut temp = tempfile::Builder::new()
            .prefix(".tmp-blob-")
            .tempfile_in(&dir)
            .map_err(|err| {
                ImageError::io(
                    format!("creating a temporary file in {}", dir.display()),
                    err,
                )
            })?;
        let mut hashing = DigestingReader::new(reader);
        {
            let mut out = io::BufWriter::with_capacity(1 << 20, temp.as_file_mut());
            io::copy(&mut hashing, &mut out).map_err(|err| {
                ImageError::io(format!("writing a blob into {}", dir.display()), err)
            })?;
            out.flush().map_err(|err| {
                ImageError::io(format!("writing a blob into {}", dir.display()), err)
            })?;
        }
        let (digest, size) = hashing.finish();
        if let Some(expected) = expected {
            verify_digest("blob", expected, &digest)?;
        }
        temp.as_file()
            .sync_all()
            .map_err(|err| ImageError::io(format!("syncing blob {digest}"), err))?;
        let path = self.blob_path(&digest)?;
        temp.persist(&path).map_err(|err| {
            ImageError::io(format!("renaming blob into {}", path.display()), err.error)
        })?;
        Ok((digest, size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::sha256_digest;

    #[test]
    fn blob_dir_round_trips_and_refuses_wrong_content() {
        let dir = tempfile::tempdir().unwrap();
        let mut blobs = BlobDir::new(dir.path());
        let (digest, size) = blobs.put_blob(&mut &b"hello"[..], None).unwrap();
        assert_eq!(digest, sha256_digest(b"hello"));
        assert_eq!(size, 5);
        assert_eq!(blobs.blob_size(&digest).unwrap(), 5);
        let bytes = read_blob_bytes(&blobs, &digest, "test blob", 100).unwrap();
        assert_eq!(bytes, b"hello");

        let wrong = sha256_digest(b"other");
        let err = blobs
            .put_blob(&mut &b"hello!"[..], Some(&wrong))
            .unwrap_err();
        assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
        assert!(blobs.open_blob(&wrong).is_err());
        let leftovers: Vec<_> = fs::read_dir(dir.path().join("blobs/sha256"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(
            leftovers.len(),
            1,
            "temporary files left behind: {leftovers:?}"
        );
    }

    #[test]
    fn read_blob_bytes_enforces_limit_and_digest() {
        let mut blobs = MemoryBlobs::new();
        let digest = blobs.insert(vec![1u8; 50]);
        let err = read_blob_bytes(&blobs, &digest, "config", 10).unwrap_err();
        assert!(matches!(err, ImageError::TooLarge { .. }), "{err}");
        let missing = sha256_digest(b"nope");
        let err = read_blob_bytes(&blobs, &missing, "config", 10).unwrap_err();
        assert!(matches!(err, ImageError::MissingBlob { .. }), "{err}");
    }
}
