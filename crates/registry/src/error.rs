//! The registry client's error type: every variant says what failed, against
//! which registry or blob, and what the user can do about it.

use std::io;
use std::path::PathBuf;

/// Errors of registry operations.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{url}: {why}")]
    Transport { url: String, why: String },
    #[error(
        "{url}: unauthorized ({status}): {body}; log in with `kiln login {registry}` or check the credentials in {hint}"
    )]
    Unauthorized {
        url: String,
        registry: String,
        status: u16,
        body: String,
        hint: String,
    },
    #[error("{url}: HTTP {status} {what}: {body}")]
    Status {
        url: String,
        status: u16,
        what: String,
        body: String,
    },
    #[error("{what} not found at {url} (does the name or tag exist on the registry?)")]
    NotFound { what: String, url: String },
    #[error(
        "blob {expected} from {source_name}: content has digest {actual} ({size} bytes); the registry or something between it and kiln sent wrong data, nothing was stored"
    )]
    DigestMismatch {
        source_name: String,
        expected: String,
        actual: String,
        size: u64,
    },
    #[error(
        "blob {digest} from {source_name}: expected {expected} bytes, got {actual}{more}; nothing was stored"
    )]
    SizeMismatch {
        source_name: String,
        digest: String,
        expected: u64,
        actual: u64,
        more: &'static str,
    },
    #[error("{what}: {why}")]
    Protocol { what: String, why: String },
    #[error("authentication with {registry} failed: {why}")]
    Auth { registry: String, why: String },
    #[error("docker config {path}: {why}")]
    Config { path: PathBuf, why: String },
    #[error("credential helper docker-credential-{helper} ({action} for {server}): {why}")]
    Helper {
        helper: String,
        action: &'static str,
        server: String,
        why: String,
    },
    #[error("TLS setup for {registry}: {why}")]
    Tls { registry: String, why: String },
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Image(#[from] kiln_image::ImageError),
    #[error("{0}")]
    Store(#[from] kiln_store::StoreError),
    #[error("{0}")]
    Ops(#[from] kiln_store::image_ops::OpsError),
    #[error("An image does not exist locally with the tag: {0} (see `kiln images`)")]
    NoLocalImage(String),
}

/// Result with [`RegistryError`].
pub type Result<T, E = RegistryError> = std::result::Result<T, E>;
