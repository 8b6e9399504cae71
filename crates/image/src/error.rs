//! The error type of the image crate: every variant says what failed, on which
//! blob, file or reference, and (where there is one) what to do about it.

use std::io;

use crate::digest::Digest;
use crate::reference::ReferenceError;

/// Errors from manifests, configs, blobs and archives.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// An I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, and on what path or blob.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Text that should be a digest is not one kiln can use.
    #[error("invalid digest `{digest}`: {why}")]
    InvalidDigest {
        /// The text or digest given.
        digest: String,
        /// Why it was refused.
        why: String,
    },
    /// Content does not hash to the digest that names it.
    #[error(
        "digest mismatch for {what}: expected {expected}, content hashes to {actual}; the source is corrupt or was modified"
    )]
    DigestMismatch {
        /// Which blob or file.
        what: String,
        /// The digest it was named by.
        expected: Digest,
        /// The digest of the bytes actually read.
        actual: Digest,
    },
    /// Content is not the size its descriptor says.
    #[error("size mismatch for {what}: descriptor says {expected} bytes, content has {actual}")]
    SizeMismatch {
        /// Which blob.
        what: String,
        /// Size in the descriptor.
        expected: u64,
        /// Size actually read.
        actual: u64,
    },
    /// A manifest or index could not be understood.
    #[error("invalid manifest {what}: {why}")]
    InvalidManifest {
        /// Digest or path of the manifest.
        what: String,
        /// What is wrong.
        why: String,
    },
    /// An image config could not be understood.
    #[error("invalid image config {what}: {why}")]
    InvalidConfig {
        /// Digest or path of the config.
        what: String,
        /// What is wrong.
        why: String,
    },
    /// A media type kiln does not handle.
    #[error("unsupported media type `{media_type}` for {what}")]
    UnsupportedMediaType {
        /// The media type found.
        media_type: String,
        /// Where it was found.
        what: String,
    },
    /// An index has no manifest for the wanted platform.
    #[error("no image for platform {wanted} in index {index}; it has: {available}")]
    NoMatchingPlatform {
        /// Platform asked for (`linux/amd64`).
        wanted: String,
        /// Digest of the index.
        index: String,
        /// Platforms the index offers.
        available: String,
    },
    /// A blob an image needs is not available.
    #[error("blob {digest} ({what}) is missing")]
    MissingBlob {
        /// The digest.
        digest: Digest,
        /// What it is (config, layer 2 of busybox:latest, ...).
        what: String,
    },
    /// An archive is malformed (missing `manifest.json`, unsafe member path, ...).
    #[error("invalid archive {what}: {why}")]
    InvalidArchive {
        /// Which archive or member.
        what: String,
        /// What is wrong and, when possible, what to do.
        why: String,
    },
    /// A bounded in-memory read (manifest, config, index) exceeded its limit.
    #[error("{what} is larger than {limit} bytes; refusing to read it into memory")]
    TooLarge {
        /// What was being read.
        what: String,
        /// The limit in bytes.
        limit: u64,
    },
    /// The blob store behind a [`BlobRead`](crate::blob::BlobRead) or
    /// [`BlobWrite`](crate::blob::BlobWrite) failed; its own error is the source.
    #[error("blob store: {context}: {source}")]
    BlobStore {
        /// What the store was doing (storing blob sha256:..., ...).
        context: String,
        /// The store's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A reference in an archive or given by the caller is invalid.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
}

impl ImageError {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        ImageError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Shorthand used throughout the crate.
pub type Result<T, E = ImageError> = std::result::Result<T, E>;
