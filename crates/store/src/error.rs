//! The store's error type: every message names the thing (digest, ref, path)
//! and, where there is one, what the user can do about it.

use std::path::PathBuf;

use crate::Digest;

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid digest {text:?}: expected sha256:<64 lowercase hex characters>")]
    BadDigest { text: String },

    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("store database: {0}; if the store is damaged run `kiln system check --repair`")]
    Db(#[from] rusqlite::Error),

    #[error(
        "content does not match its digest: expected {expected}, got {actual} ({size} bytes); the input is corrupt or truncated"
    )]
    DigestMismatch {
        expected: Digest,
        actual: Digest,
        size: u64,
    },

    #[error(
        "blob {digest} is missing from the store at {root}; run `kiln system check` and re-import or re-load the image"
    )]
    BlobMissing { digest: Digest, root: PathBuf },

    #[error("image {manifest} is not in the store")]
    ImageNotFound { manifest: Digest },

    #[error("filling snapshot {chain_id} failed: {source}")]
    SnapshotFill {
        chain_id: Digest,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    #[error("store metadata is inconsistent: {0}; run `kiln system check --repair`")]
    Corrupt(String),
}

impl StoreError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> StoreError {
        let path = path.into();
        move |source| StoreError::Io {
            action,
            path,
            source,
        }
    }
}

/// Shorthand for results of store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
