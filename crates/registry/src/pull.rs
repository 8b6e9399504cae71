//! `pull`: tag → manifest (HEAD, then GET by digest) → the platform's manifest
//! from an index → config and layers downloaded in parallel, each streamed into
//! the store's blob writer while hashed, committed only when its digest matches
//! → the image and its name recorded. Blobs the store already has are not
//! downloaded again, so an interrupted pull resumes where it stopped. Layers
//! are not decompressed: their sizes are measured when first unpacked or
//! listed.

use std::io::Read;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use kiln_image::manifest::media_types;
use kiln_image::{
    Manifest, ManifestDoc, Platform, Reference, parse_config, parse_manifest, sha256_digest,
};
use kiln_store::image_ops::{record_image_unmeasured, to_store_digest};
use kiln_store::{Lease, Store};

use crate::client::{RegistryClient, Request, error_body, repository_scope};
use crate::download::{BlobRequest, download_blob};
use crate::error::{RegistryError, Result};
use crate::progress::{Progress, ProgressEvent};
use crate::sources::remember_source;

/// Manifests larger than this are refused (the distribution spec's limit is 4 MiB).
const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// Parallel blob downloads.
const DOWNLOAD_WORKERS: usize = 6;

/// The `Accept` header for manifests: every kind kiln reads.
pub const MANIFEST_ACCEPT: &str = concat!(
    "application/vnd.oci.image.index.v1+json, ",
    "application/vnd.docker.distribution.manifest.list.v2+json, ",
    "application/vnd.oci.image.manifest.v1+json, ",
    "application/vnd.docker.distribution.manifest.v2+json"
);

/// What `pull` should fetch.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// The platform to pick from an index.
    pub platform: Platform,
}

/// What a pull did.
#[derive(Debug, Clone)]
pub struct PullOutcome {
    /// The image's (platform) manifest digest, its id in the store.
    pub manifest: kiln_store::Digest,
    /// The digest the reference resolved to (the index's, for multi-platform images).
    pub resolved: kiln_store::Digest,
    /// The config digest (docker's image id).
    pub config: kiln_store::Digest,
    /// Blobs downloaded (the rest were already in the store).
    pub downloaded_blobs: usize,
    /// Bytes downloaded.
    pub downloaded_bytes: u64,
    /// Whether the name pointed at another image (or nothing) before.
    pub name_changed: bool,
}

/// Pulls `reference` into `store` through `client` (which must be for
/// `reference.domain()`), recording the image and its name.
pub fn pull(
    store: &Store,
    client: &RegistryClient,
    reference: &Reference,
    options: &PullOptions,
    progress: &dyn Progress,
) -> Result<PullOutcome> {
    let repository = reference.path();
    let scopes = vec![repository_scope(repository, "pull")];
    let lease = store.lease();

    let (resolved_digest, declared_type) = match reference.digest() {
        Some(digest) => (digest.clone(), None),
        None => {
            let tag = reference.tag().unwrap_or("latest");
            resolve_tag(client, repository, tag, &scopes)?
        }
    };
    let top = fetch_manifest(
        store,
        client,
        repository,
        &resolved_digest,
        declared_type.as_deref(),
        &scopes,
    )?;
    let image_doc: ManifestDoc = match top {
        Manifest::Image(doc) => doc,
        Manifest::Index(index) => {
            // Kept so the next pull of this name resolves without the network
            // when nothing changed (it is garbage once no image needs it).
            store.put_blob(&lease, &index.bytes)?;
            let descriptor = index.select(&options.platform)?;
            progress.event(ProgressEvent::PlatformSelected {
                index: index.digest.as_ref(),
                manifest: descriptor.digest().as_ref(),
                platform: &options.platform.to_string(),
            });
            match fetch_manifest(
                store,
                client,
                repository,
                descriptor.digest(),
                Some(descriptor.media_type().to_string().as_str()),
                &scopes,
            )? {
                Manifest::Image(doc) => doc,
                Manifest::Index(nested) => {
                    return Err(RegistryError::Protocol {
                        what: format!("{reference}"),
                        why: format!(
                            "index {} points at another index {} for {}; nested indexes are not supported",
                            index.digest, nested.digest, options.platform
                        ),
                    });
                }
            }
        }
    };

    // Config first in the list: it is small and tells early if the image is usable.
    let mut blobs = vec![BlobToFetch {
        digest: image_doc.config().digest().clone(),
        size: image_doc.config().size(),
    }];
    for layer in &image_doc.layers {
        blobs.push(BlobToFetch {
            digest: layer.descriptor.digest().clone(),
            size: layer.descriptor.size(),
        });
    }
    let source_name = format!("{}/{}", reference.domain(), repository);
    let fetched = download_all(
        store,
        &lease,
        client,
        repository,
        &source_name,
        &blobs,
        &scopes,
        progress,
    )?;

    let config_digest = to_store_digest(image_doc.config().digest())?;
    let config_bytes = store.read_blob(&config_digest)?;
    let config = parse_config(&config_bytes)?;
    store.put_blob(&lease, &image_doc.bytes)?;
    // Layer sizes are measured later, once, when first needed.
    let manifest_digest = record_image_unmeasured(store, &lease, &image_doc, &config)?;
    let resolved = to_store_digest(&resolved_digest)?;
    let name = reference.to_string();
    let previous = store.resolve_ref(&name)?;
    store.set_ref(&name, &manifest_digest)?;
    for blob in &blobs {
        if let Ok(digest) = to_store_digest(&blob.digest) {
            remember_source(store, &digest, reference.domain(), repository);
        }
    }
    Ok(PullOutcome {
        name_changed: previous.as_ref() != Some(&manifest_digest),
        manifest: manifest_digest,
        resolved,
        config: config_digest,
        downloaded_blobs: fetched.blobs,
        downloaded_bytes: fetched.bytes,
    })
}

fn read_if_present(store: &Store, digest: &kiln_store::Digest) -> Result<Option<Vec<u8>>> {
    if store.has_blob(digest) {
        Ok(Some(store.read_blob(digest)?))
    } else {
        Ok(None)
    }
}

/// HEAD the tag for its digest (cheap, and what Docker Hub does not count as
/// a pull); falls back to GET when the registry gives no digest on HEAD.
fn resolve_tag(
    client: &RegistryClient,
    repository: &str,
    tag: &str,
    scopes: &[String],
) -> Result<(kiln_image::Digest, Option<String>)> {
    let path = format!("/v2/{repository}/manifests/{tag}");
    let head = client.send(
        &Request::new("HEAD", path.as_str(), scopes.to_vec()).header("Accept", MANIFEST_ACCEPT),
    )?;
    match head.status() {
        200 => {
            if let Some(digest) = head
                .header("Docker-Content-Digest")
                .and_then(|d| kiln_image::digest::parse_sha256(d.trim()).ok())
            {
                let media_type = head.header("Content-Type").map(str::to_string);
                return Ok((digest, media_type));
            }
        }
        404 => {
            return Err(RegistryError::NotFound {
                what: format!("manifest for {repository}:{tag}"),
                url: format!("{}{path}", client.base()?),
            });
        }
        _ => {}
    }
    // GET by tag: the digest is that of the exact bytes received.
    let (bytes, media_type) = get_manifest_bytes(client, repository, tag, scopes)?;
    Ok((sha256_digest(&bytes), media_type))
}

fn get_manifest_bytes(
    client: &RegistryClient,
    repository: &str,
    reference: &str,
    scopes: &[String],
) -> Result<(Vec<u8>, Option<String>)> {
    let path = format!("/v2/{repository}/manifests/{reference}");
    let response = client.send(
        &Request::new("GET", path.as_str(), scopes.to_vec()).header("Accept", MANIFEST_ACCEPT),
    )?;
    let url = response.get_url().to_string();
    match response.status() {
        200 => {}
        404 => {
            return Err(RegistryError::NotFound {
                what: format!("manifest {repository}:{reference}"),
                url,
            });
        }
        status => {
            return Err(RegistryError::Status {
                url,
                status,
                what: "fetching manifest".into(),
                body: error_body(response),
            });
        }
    }
    let media_type = response.header("Content-Type").map(str::to_string);
    let mut bytes = Vec::new();
    response
        .into_reader()
        .take(MAX_MANIFEST_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| RegistryError::Transport {
            url: url.clone(),
            why: format!("reading manifest: {e}"),
        })?;
    if bytes.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(RegistryError::Protocol {
            what: url,
            why: format!("manifest larger than {MAX_MANIFEST_BYTES} bytes; refusing it"),
        });
    }
    Ok((bytes, media_type))
}

/// The manifest `digest` of `repository`: from the store when it has it, else
/// fetched and verified against the digest before it is parsed.
fn fetch_manifest(
    store: &Store,
    client: &RegistryClient,
    repository: &str,
    digest: &kiln_image::Digest,
    declared_type: Option<&str>,
    scopes: &[String],
) -> Result<Manifest> {
    let store_digest = to_store_digest(digest)?;
    let (bytes, media_type) = match read_if_present(store, &store_digest)? {
        Some(bytes) => (bytes, declared_type.map(str::to_string)),
        None => {
            let (bytes, media_type) =
                get_manifest_bytes(client, repository, digest.as_ref(), scopes)?;
            let actual = sha256_digest(&bytes);
            if actual != *digest {
                return Err(RegistryError::DigestMismatch {
                    source_name: format!("{}/{repository}", client.registry()),
                    expected: digest.to_string(),
                    actual: actual.to_string(),
                    size: bytes.len() as u64,
                });
            }
            (bytes, media_type.or(declared_type.map(str::to_string)))
        }
    };
    // A registry's Content-Type may carry parameters or be generic JSON: only
    // pass on a manifest media type.
    let media_type = media_type
        .as_deref()
        .map(|t| t.split(';').next().unwrap_or(t).trim())
        .filter(|t| {
            matches!(
                *t,
                media_types::OCI_INDEX
                    | media_types::OCI_MANIFEST
                    | media_types::DOCKER_MANIFEST
                    | media_types::DOCKER_MANIFEST_LIST
            )
        })
        .map(str::to_string);
    Ok(parse_manifest(&bytes, media_type.as_deref())?)
}

/// One blob of the image to have in the store.
struct BlobToFetch {
    digest: kiln_image::Digest,
    size: u64,
}

/// What [`download_all`] did.
struct Fetched {
    blobs: usize,
    bytes: u64,
}

/// Downloads the blobs the store lacks, `DOWNLOAD_WORKERS` at a time (the
/// first error stops the others).
#[allow(clippy::too_many_arguments)]
fn download_all(
    store: &Store,
    lease: &Lease<'_>,
    client: &RegistryClient,
    repository: &str,
    source_name: &str,
    blobs: &[BlobToFetch],
    scopes: &[String],
    progress: &dyn Progress,
) -> Result<Fetched> {
    let downloaded = AtomicUsize::new(0);
    let bytes = AtomicU64::new(0);
    crate::parallel::for_each(blobs, DOWNLOAD_WORKERS, |blob| {
        if fetch_blob(
            store,
            lease,
            client,
            repository,
            source_name,
            blob,
            scopes,
            progress,
        )? {
            downloaded.fetch_add(1, Ordering::Relaxed);
            bytes.fetch_add(blob.size, Ordering::Relaxed);
        }
        Ok(())
    })?;
    Ok(Fetched {
        blobs: downloaded.into_inner(),
        bytes: bytes.into_inner(),
    })
}

/// Downloads one blob into the store unless present. Returns whether it was
/// downloaded (false: the store had it).
#[allow(clippy::too_many_arguments)]
fn fetch_blob(
    store: &Store,
    lease: &Lease<'_>,
    client: &RegistryClient,
    repository: &str,
    source_name: &str,
    blob: &BlobToFetch,
    scopes: &[String],
    progress: &dyn Progress,
) -> Result<bool> {
    let store_digest = to_store_digest(&blob.digest)?;
    let digest_text = blob.digest.to_string();
    if store.has_blob(&store_digest) {
        // Lease first, then check again: a concurrent gc may have removed it.
        lease.add_blob(&store_digest)?;
        if store.has_blob(&store_digest) {
            progress.event(ProgressEvent::BlobExists {
                digest: &digest_text,
            });
            return Ok(false);
        }
    }
    progress.event(ProgressEvent::BlobStart {
        digest: &digest_text,
        size: blob.size,
    });
    let path = format!("/v2/{repository}/blobs/{}", blob.digest);
    let request = BlobRequest {
        path: &path,
        source_name,
        digest: &blob.digest,
        size: blob.size,
        scopes,
    };
    download_blob(store, lease, client, &request, progress)?;
    progress.event(ProgressEvent::BlobDone {
        digest: &digest_text,
    });
    Ok(true)
}
