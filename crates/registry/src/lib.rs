//! Registry client: pull, push and authentication against OCI distribution
//! registries, verifying every byte against its digest.
//!
//! - [`client::RegistryClient`]: one registry's endpoint (HTTPS with the system
//!   roots plus `/etc/docker/certs.d/HOST/*.crt`; plain HTTP only for loopback
//!   and listed insecure registries), authentication (anonymous, basic, bearer
//!   tokens per scope) and retries.
//! - [`credentials::DockerConfig`]: docker's `config.json` and credential helpers.
//! - [`pull::pull`] and [`push::push`]: whole images between a registry and the store.
//!
//! Blocking and thread based; see README.md for why it is not built on `oci-client`.

pub mod challenge;
pub mod client;
pub mod credentials;
mod download;
pub mod error;
mod parallel;
pub mod progress;
pub mod pull;
pub mod push;
pub mod sources;

pub use client::{ClientOptions, RegistryClient};
pub use credentials::{Credentials, DockerConfig};
pub use error::{RegistryError, Result};
pub use progress::{NoProgress, Progress, ProgressEvent};
pub use pull::{PullOptions, PullOutcome, pull};
pub use push::{PushOutcome, push};

/// Verifies `credentials` against `registry` and stores them in `config` as
/// `docker login` does.
pub fn login(
    registry: &str,
    credentials: Credentials,
    options: &ClientOptions,
    config: &mut DockerConfig,
) -> Result<()> {
    let client = RegistryClient::with_credentials(registry, options, Some(credentials.clone()))?;
    client.verify_login()?;
    config.store(registry, &credentials)
}
