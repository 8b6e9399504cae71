//! `push`: for each blob of the image (layers and config), HEAD whether the
//! repository has it; else mount it from another repository of the same
//! registry it is known to be in; else upload it (POST a session, then one
//! PUT, or PATCH chunks and a closing PUT for large blobs). Then PUT the
//! manifest under the tag (or digest) and check the registry's digest.

use kiln_image::Reference;
use kiln_store::{Digest, Store};

use crate::client::{Body, RegistryClient, Request, error_body, repository_scope};
use crate::error::{RegistryError, Result};
use crate::progress::{Progress, ProgressEvent};
use crate::sources::{mount_source, remember_source};

/// Parallel blob uploads.
const UPLOAD_WORKERS: usize = 3;

/// What a push did.
#[derive(Debug, Clone)]
pub struct PushOutcome {
    /// The manifest digest as the registry stores it.
    pub digest: Digest,
    /// Manifest size in bytes.
    pub size: u64,
    /// Blobs uploaded, mounted, and already present.
    pub uploaded: usize,
    pub mounted: usize,
    pub existing: usize,
}

enum BlobResult {
    Uploaded,
    Mounted,
    Existing,
}

/// Pushes the image `reference` names in `store` to its registry through
/// `client` (which must be for `reference.domain()`).
pub fn push(
    store: &Store,
    client: &RegistryClient,
    reference: &Reference,
    progress: &dyn Progress,
) -> Result<PushOutcome> {
    let name = reference.to_string();
    let manifest_digest = store
        .resolve_ref(&name)?
        .ok_or_else(|| RegistryError::NoLocalImage(reference.familiar()))?;
    // Pushing needs no layer sizes: a pulled image's stay unmeasured.
    let image = store
        .image_as_recorded(&manifest_digest)?
        .ok_or_else(|| RegistryError::NoLocalImage(reference.familiar()))?;
    let manifest_bytes = store.read_blob(&manifest_digest)?;
    let repository = reference.path();

    let mut blobs: Vec<(Digest, u64)> = image
        .layers
        .iter()
        .map(|l| (l.layer.blob.clone(), l.layer.compressed_size))
        .collect();
    blobs.push((image.config.clone(), store.blob_size(&image.config)?));
    blobs.dedup_by(|a, b| a.0 == b.0);

    let counts = std::sync::Mutex::new((0usize, 0usize, 0usize));
    crate::parallel::for_each(&blobs, UPLOAD_WORKERS, |(digest, size)| {
        let result = push_blob_with_retries(store, client, reference, digest, *size, progress)?;
        remember_source(store, digest, reference.domain(), repository);
        let mut counts = counts.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            BlobResult::Uploaded => counts.0 += 1,
            BlobResult::Mounted => counts.1 += 1,
            BlobResult::Existing => counts.2 += 1,
        }
        Ok(())
    })?;

    let target = match (reference.tag(), reference.digest()) {
        (Some(tag), _) => tag.to_string(),
        (None, Some(digest)) => digest.to_string(),
        (None, None) => "latest".to_string(),
    };
    let path = format!("/v2/{repository}/manifests/{target}");
    let response = client.send(
        &Request::new(
            "PUT",
            path.as_str(),
            vec![repository_scope(repository, "pull,push")],
        )
        .header("Content-Type", image.manifest_media_type.clone())
        .body(Body::Bytes(&manifest_bytes)),
    )?;
    let url = response.get_url().to_string();
    if response.status() != 201 && response.status() != 200 {
        return Err(RegistryError::Status {
            url,
            status: response.status(),
            what: "storing the manifest".into(),
            body: error_body(response),
        });
    }
    if let Some(registry_digest) = response.header("Docker-Content-Digest")
        && registry_digest.trim() != manifest_digest.to_string()
    {
        return Err(RegistryError::Protocol {
            what: url,
            why: format!(
                "the registry stored the manifest as {} but its content is {manifest_digest}",
                registry_digest.trim()
            ),
        });
    }
    let (uploaded, mounted, existing) = counts.into_inner().unwrap_or_else(|p| p.into_inner());
    Ok(PushOutcome {
        digest: manifest_digest,
        size: manifest_bytes.len() as u64,
        uploaded,
        mounted,
        existing,
    })
}

/// Attempts per blob when the registry or the connection fails transiently.
const PUSH_ATTEMPTS: u32 = 3;

/// Whether an upload failure is worth another attempt: the connection broke,
/// or the registry answered 429 or 5xx.
fn is_transient(error: &RegistryError) -> bool {
    match error {
        RegistryError::Transport { .. } => true,
        RegistryError::Status { status, .. } => *status == 429 || *status >= 500,
        _ => false,
    }
}

/// [`push_blob`], started over in a new upload session after a transient
/// failure (an upload session cannot be resumed portably), with backoff.
fn push_blob_with_retries(
    store: &Store,
    client: &RegistryClient,
    reference: &Reference,
    digest: &Digest,
    size: u64,
    progress: &dyn Progress,
) -> Result<BlobResult> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match push_blob(store, client, reference, digest, size, progress) {
            Err(e) if attempt < PUSH_ATTEMPTS && is_transient(&e) => {
                let why = e.to_string();
                tracing::debug!("pushing {digest} again after: {why}");
                progress.event(ProgressEvent::BlobRetry {
                    digest: &digest.to_string(),
                    done: 0,
                    why: &why,
                });
                std::thread::sleep(std::time::Duration::from_millis(500 << attempt));
            }
            other => return other,
        }
    }
}

fn push_blob(
    store: &Store,
    client: &RegistryClient,
    reference: &Reference,
    digest: &Digest,
    size: u64,
    progress: &dyn Progress,
) -> Result<BlobResult> {
    let repository = reference.path();
    let digest_text = digest.to_string();
    let scopes = vec![repository_scope(repository, "pull,push")];
    let head = client.send(&Request::new(
        "HEAD",
        format!("/v2/{repository}/blobs/{digest}"),
        scopes.clone(),
    ))?;
    if head.status() == 200 {
        progress.event(ProgressEvent::BlobExists {
            digest: &digest_text,
        });
        return Ok(BlobResult::Existing);
    }

    let mut location = None;
    if let Some(from) = mount_source(store, digest, reference.domain(), repository) {
        let mut mount_scopes = scopes.clone();
        mount_scopes.push(repository_scope(&from, "pull"));
        let url = format!("/v2/{repository}/blobs/uploads/?mount={digest}&from={from}");
        let response =
            client.send(&Request::new("POST", url, mount_scopes).body(Body::Bytes(&[])))?;
        match response.status() {
            201 => {
                progress.event(ProgressEvent::BlobMounted {
                    digest: &digest_text,
                    from: &from,
                });
                return Ok(BlobResult::Mounted);
            }
            // The registry could not mount but opened an upload session instead.
            202 => location = Some(upload_location(client, &response)?),
            _ => {}
        }
    }
    let mut location = match location {
        Some(location) => location,
        None => {
            let response = client.send(
                &Request::new(
                    "POST",
                    format!("/v2/{repository}/blobs/uploads/"),
                    scopes.clone(),
                )
                .body(Body::Bytes(&[])),
            )?;
            if response.status() != 202 {
                return Err(RegistryError::Status {
                    url: response.get_url().to_string(),
                    status: response.status(),
                    what: format!("starting the upload of blob {digest}"),
                    body: error_body(response),
                });
            }
            upload_location(client, &response)?
        }
    };

    progress.event(ProgressEvent::BlobStart {
        digest: &digest_text,
        size,
    });
    let blob_path = store.blob_path(digest);
    let chunk = client.chunk_size();
    let sent = |done: u64| {
        progress.event(ProgressEvent::BlobBytes {
            digest: &digest_text,
            done,
        })
    };
    let final_body = if size <= chunk {
        Body::File {
            path: &blob_path,
            offset: 0,
            len: size,
            sent: Some(&sent),
        }
    } else {
        let mut offset = 0u64;
        while offset < size {
            let len = chunk.min(size - offset);
            let response = client.send(
                &Request::new("PATCH", location.as_str(), scopes.clone())
                    .header("Content-Type", "application/octet-stream")
                    .header("Content-Range", format!("{}-{}", offset, offset + len - 1))
                    .body(Body::File {
                        path: &blob_path,
                        offset,
                        len,
                        sent: Some(&sent),
                    }),
            )?;
            if response.status() != 202 {
                return Err(RegistryError::Status {
                    url: response.get_url().to_string(),
                    status: response.status(),
                    what: format!("uploading bytes {offset}+{len} of blob {digest}"),
                    body: error_body(response),
                });
            }
            location = upload_location(client, &response)?;
            offset += len;
            progress.event(ProgressEvent::BlobBytes {
                digest: &digest_text,
                done: offset,
            });
        }
        Body::Empty
    };
    let mut put_url = url::Url::parse(&location).map_err(|e| RegistryError::Protocol {
        what: format!("upload of blob {digest}"),
        why: format!("upload location {location:?} is not a URL ({e})"),
    })?;
    put_url
        .query_pairs_mut()
        .append_pair("digest", &digest_text);
    let mut request = Request::new("PUT", put_url.to_string(), scopes).body(final_body);
    if matches!(final_body, Body::File { .. }) {
        request = request.header("Content-Type", "application/octet-stream");
    }
    let response = client.send(&request)?;
    if response.status() != 201 {
        return Err(RegistryError::Status {
            url: response.get_url().to_string(),
            status: response.status(),
            what: format!("finishing the upload of blob {digest}"),
            body: error_body(response),
        });
    }
    progress.event(ProgressEvent::BlobDone {
        digest: &digest_text,
    });
    Ok(BlobResult::Uploaded)
}

/// The absolute URL of an upload session from a response's `Location`
/// (registries may send it relative to the endpoint).
fn upload_location(client: &RegistryClient, response: &ureq::Response) -> Result<String> {
    let location = response
        .header("Location")
        .ok_or_else(|| RegistryError::Protocol {
            what: response.get_url().to_string(),
            why: "upload response has no Location header".into(),
        })?;
    let base = url::Url::parse(response.get_url()).or_else(|_| {
        url::Url::parse(&client.base()?).map_err(|e| RegistryError::Protocol {
            what: client.registry().to_string(),
            why: e.to_string(),
        })
    })?;
    base.join(location)
        .map(|u| u.to_string())
        .map_err(|e| RegistryError::Protocol {
            what: response.get_url().to_string(),
            why: format!("upload Location {location:?} is not a URL ({e})"),
        })
}
