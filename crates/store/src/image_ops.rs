//! Image-level operations that join the store to kiln-image's formats:
//! importing a rootfs tarball as a one-layer image, recording images read from
//! archives, and giving archive writers and readers access to the store's blobs.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, Write};

use kiln_image::{BlobRead, BlobWrite, ImageError};
use serde_json::{Map, Value, json};

use crate::{BlobWriter, Digest, ImageRecord, LayerRecord, Lease, NewImage, Store, StoreError};

/// OCI media types kiln writes for imported images.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// Errors of image-level operations.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("--change {instruction:?}: {why}")]
    Change { instruction: String, why: String },
    #[error(
        "{source_name} is not a tar archive ({why}); give a tarball of a root filesystem (plain, gzip or zstd)"
    )]
    NotATar { source_name: String, why: String },
    #[error("reading {source_name}: {source}")]
    Read {
        source_name: String,
        #[source]
        source: io::Error,
    },
    #[error("layer {blob}: {why}")]
    BadLayer { blob: Digest, why: String },
}

/// Converts between the image crate's digest type and the store's.
pub fn to_store_digest(digest: &kiln_image::Digest) -> Result<Digest, StoreError> {
    Digest::parse(digest.as_ref())
}

/// Converts a store digest to the image crate's digest type.
pub fn to_image_digest(digest: &Digest) -> Result<kiln_image::Digest, ImageError> {
    kiln_image::digest::parse_sha256(&digest.to_string())
}

impl BlobRead for Store {
    fn open_blob(&self, digest: &kiln_image::Digest) -> io::Result<Box<dyn Read + '_>> {
        let digest = to_store_digest(digest).map_err(io::Error::other)?;
        Ok(Box::new(File::open(self.blob_path(&digest))?))
    }

    fn blob_size(&self, digest: &kiln_image::Digest) -> io::Result<u64> {
        let digest = to_store_digest(digest).map_err(io::Error::other)?;
        Ok(std::fs::metadata(self.blob_path(&digest))?.len())
    }
}

/// A [`BlobWrite`] sink into the store whose blobs stay leased (safe from a
/// concurrent prune) until the images using them are recorded.
pub struct LeasedBlobs<'a, 's> {
    pub store: &'s Store,
    pub lease: &'a Lease<'s>,
}

impl BlobWrite for LeasedBlobs<'_, '_> {
    fn put_blob(
        &mut self,
        reader: &mut dyn Read,
        expected: Option<&kiln_image::Digest>,
    ) -> kiln_image::Result<(kiln_image::Digest, u64)> {
        let expected = expected
            .map(to_store_digest)
            .transpose()
            .map_err(|e| ImageError::io("storing blob", io::Error::other(e)))?;
        let info = self
            .store
            .copy_blob(self.lease, reader, expected.as_ref())
            .map_err(|e| match e {
                StoreError::DigestMismatch {
                    expected, actual, ..
                } => ImageError::io(
                    "storing blob",
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("content has digest {actual}, expected {expected}"),
                    ),
                ),
                other => ImageError::io("storing blob", io::Error::other(other)),
            })?;
        Ok((to_image_digest(&info.digest)?, info.size))
    }
}

/// Options of `kiln import`.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Dockerfile instructions applied to the config (`--change`).
    pub changes: Vec<String>,
    /// The history comment (`--message`); docker's default is "Imported from -".
    pub message: Option<String>,
}

/// Copies everything read into a blob writer: the tar is parsed (to measure
/// its content) and stored in the same single pass.
struct Tee<'w, 's, R> {
    inner: R,
    out: &'w mut BlobWriter<'s>,
}

impl<R: Read> Read for Tee<'_, '_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.out.write_all(buf.get(..n).unwrap_or_default())?;
        Ok(n)
    }
}

/// Imports a root filesystem tarball (plain, gzip or zstd) as a one-layer image
/// and returns its manifest digest. The layer is stored uncompressed, as
/// `docker import` keeps it; the image is leased in `lease` and recorded.
pub fn import_rootfs<'s>(
    store: &'s Store,
    lease: &Lease<'s>,
    input: impl Read + Send,
    source_name: &str,
    options: &ImportOptions,
) -> Result<Digest, OpsError> {
    let mut config_section = Map::new();
    for change in &options.changes {
        apply_change(&mut config_section, change)?;
    }
    let read_err = |source| OpsError::Read {
        source_name: source_name.to_string(),
        source,
    };
    let decompressed = kiln_snapshot::decompress(input).map_err(read_err)?;
    let mut writer = store.blob_writer()?;
    let content_size = {
        let tee = Tee {
            inner: decompressed,
            out: &mut writer,
        };
        let mut archive = tar::Archive::new(tee);
        let size = tar_content_size(&mut archive).map_err(|e| OpsError::NotATar {
            source_name: source_name.to_string(),
            why: e.to_string(),
        })?;
        // Whatever follows the end-of-archive marker belongs to the layer too.
        let mut rest = archive.into_inner();
        io::copy(&mut rest, &mut io::sink()).map_err(read_err)?;
        size
    };
    let layer = writer.commit(lease, None)?;

    let created = crate::time::rfc3339_now();
    let comment = options
        .message
        .clone()
        .unwrap_or_else(|| "Imported from -".to_string());
    let mut config = Map::new();
    config.insert("architecture".into(), json!(go_arch()));
    config.insert("comment".into(), json!(comment));
    config.insert("config".into(), Value::Object(config_section));
    config.insert("created".into(), json!(created));
    config.insert(
        "history".into(),
        json!([{"created": created, "comment": comment}]),
    );
    config.insert("os".into(), json!("linux"));
    config.insert(
        "rootfs".into(),
        json!({"type": "layers", "diff_ids": [layer.digest.to_string()]}),
    );
    let config_bytes = serde_json::to_vec(&Value::Object(config)).unwrap_or_default();
    let config_blob = store.put_blob(lease, &config_bytes)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_blob.digest.to_string(), "size": config_blob.size},
        "layers": [{"mediaType": OCI_LAYER_TAR, "digest": layer.digest.to_string(), "size": layer.size}],
    });
    let manifest_bytes = serde_json::to_vec(&manifest).unwrap_or_default();
    let manifest_blob = store.put_blob(lease, &manifest_bytes)?;
    lease.add_image(&manifest_blob.digest)?;
    store.put_image(&NewImage {
        manifest: manifest_blob.digest.clone(),
        manifest_media_type: OCI_MANIFEST.to_string(),
        config: config_blob.digest,
        created: Some(created),
        layers: vec![LayerRecord {
            blob: layer.digest.clone(),
            media_type: OCI_LAYER_TAR.to_string(),
            compressed_size: layer.size,
            diff_id: layer.digest,
            size: content_size,
        }],
    })?;
    Ok(manifest_blob.digest)
}

/// Records an image an archive reader has put into the store (all its blobs
/// leased in `lease`) and returns its manifest digest.
pub fn record_loaded_image<'s>(
    store: &'s Store,
    lease: &Lease<'s>,
    manifest: &kiln_image::ManifestDoc,
    config: &kiln_image::ConfigDoc,
) -> Result<Digest, OpsError> {
    record_image_with_sizes(store, lease, manifest, config, &HashMap::new())
}

/// As [`record_loaded_image`], for a caller that already measured some layers'
/// uncompressed sizes while the blobs streamed in: those layers are not
/// decompressed again to count them.
pub fn record_image_with_sizes<'s>(
    store: &'s Store,
    lease: &Lease<'s>,
    manifest: &kiln_image::ManifestDoc,
    config: &kiln_image::ConfigDoc,
    known_sizes: &HashMap<Digest, u64>,
) -> Result<Digest, OpsError> {
    record_image(
        store,
        lease,
        manifest,
        config,
        &mut |blob| match known_sizes.get(blob) {
            Some(size) => Ok(*size),
            None => layer_content_size(store, blob),
        },
    )
}

/// Records an image whose layers' content sizes are not measured yet (a
/// registry pull, which then reads each layer only to hash it): they are
/// [`LayerRecord::UNKNOWN_SIZE`] until the layer is first unpacked
/// ([`unpack_image`]) or its size is asked for ([`Store::image`],
/// [`Store::list_images`]), which measures and records it once. Sizes the
/// store already knows (the layer came with another image) are kept.
pub fn record_image_unmeasured<'s>(
    store: &'s Store,
    lease: &Lease<'s>,
    manifest: &kiln_image::ManifestDoc,
    config: &kiln_image::ConfigDoc,
) -> Result<Digest, OpsError> {
    record_image(store, lease, manifest, config, &mut |_| {
        Ok(LayerRecord::UNKNOWN_SIZE)
    })
}

fn record_image<'s>(
    store: &'s Store,
    lease: &Lease<'s>,
    manifest: &kiln_image::ManifestDoc,
    config: &kiln_image::ConfigDoc,
    size_of: &mut dyn FnMut(&Digest) -> Result<u64, OpsError>,
) -> Result<Digest, OpsError> {
    let manifest_digest = to_store_digest(&manifest.digest)?;
    let diff_ids = config.diff_ids()?;
    if diff_ids.len() != manifest.layers.len() {
        return Err(OpsError::Image(ImageError::InvalidConfig {
            what: config.digest.to_string(),
            why: format!(
                "{} diff_ids for {} layers in manifest {}",
                diff_ids.len(),
                manifest.layers.len(),
                manifest.digest
            ),
        }));
    }
    let mut layers = Vec::with_capacity(diff_ids.len());
    for (layer, diff_id) in manifest.layers.iter().zip(&diff_ids) {
        let blob = to_store_digest(layer.descriptor.digest())?;
        let diff_id = to_store_digest(diff_id)?;
        // An uncompressed layer's blob digest is its diff id (the blob itself
        // was verified on the way in); compressed ones are verified on unpack.
        if layer.compression == kiln_image::LayerCompression::None && blob != diff_id {
            return Err(OpsError::BadLayer {
                blob,
                why: format!(
                    "is an uncompressed layer but the image config gives diff id {diff_id}"
                ),
            });
        }
        let size = size_of(&blob)?;
        layers.push(LayerRecord {
            blob,
            media_type: layer.descriptor.media_type().to_string(),
            compressed_size: layer.descriptor.size(),
            diff_id,
            size,
        });
    }
    lease.add_image(&manifest_digest)?;
    store.put_image(&NewImage {
        manifest: manifest_digest.clone(),
        manifest_media_type: manifest.media_type().to_string(),
        config: to_store_digest(&config.digest)?,
        created: config.config.created().clone(),
        layers,
    })?;
    Ok(manifest_digest)
}

/// Makes sure every layer of `image` is unpacked as a snapshot (each holding
/// only its own layer, applied in overlay mode so whiteouts become overlayfs
/// whiteouts), holds them in `lease`, and returns their directories base
/// first. overlayfs wants `lowerdir=` top first: reverse the list for mounting.
/// Each layer's content is checked against its diff id while it is applied.
pub fn unpack_image<'s>(
    store: &'s Store,
    lease: &Lease<'s>,
    image: &crate::ImageRecord,
) -> Result<Vec<std::path::PathBuf>, OpsError> {
    lease.add_image(&image.manifest)?;
    let mut dirs = Vec::with_capacity(image.layers.len());
    let mut parent: Option<Digest> = None;
    // Sizes not measured yet, counted while the layers are applied.
    let mut measured = Vec::new();
    for layer in &image.layers {
        let blob = &layer.layer.blob;
        let diff_id = &layer.layer.diff_id;
        let dir = store.ensure_snapshot(lease, &layer.chain_id, parent.as_ref(), diff_id, |tmp| {
            let file = store.open_blob(blob)?;
            let options = kiln_snapshot::ApplyOptions {
                mode: kiln_snapshot::ApplyMode::Overlay,
                ..Default::default()
            };
            let stats = kiln_snapshot::apply_layer(io::BufReader::with_capacity(1 << 20, file), tmp, &options)
                .map_err(|e| OpsError::BadLayer {
                    blob: blob.clone(),
                    why: e.to_string(),
                })?;
            if stats.diff_id.as_str() != diff_id.to_string() {
                return Err(OpsError::BadLayer {
                    blob: blob.clone(),
                    why: format!(
                        "uncompressed content has digest {}, but the image config says {diff_id}",
                        stats.diff_id.as_str()
                    ),
                });
            }
            if !layer.layer.size_known() {
                measured.push((blob.clone(), stats.content_size));
            }
            Ok::<(), OpsError>(())
        })?;
        dirs.push(dir);
        parent = Some(layer.chain_id.clone());
    }
    // The layers are unpacked: a size that cannot be recorded is measured
    // again when next asked for, so this is no reason to fail.
    if let Err(e) = store.record_layer_sizes(&measured) {
        eprintln!("warning: could not record the sizes of unpacked layers: {e}");
    }
    Ok(dirs)
}

/// Fills in the layer sizes of `images` not measured yet: each distinct layer
/// is decompressed once (on all cores) and its size recorded in the store, so
/// it is never measured again. A layer that cannot be read counts as 0 and a
/// warning is printed (the image stays listed, so it can still be removed).
pub(crate) fn measure_unknown_sizes(store: &Store, images: &mut [ImageRecord]) {
    let mut wanted: Vec<Digest> = images
        .iter()
        .flat_map(|image| image.layers.iter())
        .filter(|layer| !layer.layer.size_known())
        .map(|layer| layer.layer.blob.clone())
        .collect();
    if wanted.is_empty() {
        return;
    }
    wanted.sort();
    wanted.dedup();
    let results = measure_layers(store, &wanted);
    let mut sizes = HashMap::with_capacity(results.len());
    let mut measured = Vec::with_capacity(results.len());
    for (blob, result) in wanted.into_iter().zip(results) {
        match result {
            Ok(size) => {
                measured.push((blob.clone(), size));
                sizes.insert(blob, size);
            }
            Err(e) => {
                let why = match e {
                    OpsError::BadLayer { why, .. } => why,
                    other => other.to_string(),
                };
                eprintln!(
                    "warning: cannot measure the size of layer {blob}: {why}; it counts as 0 (`kiln system check` checks the store, `kiln rmi` removes an image)"
                );
                sizes.insert(blob, 0);
            }
        }
    }
    if let Err(e) = store.record_layer_sizes(&measured) {
        eprintln!("warning: could not record measured layer sizes: {e}");
    }
    for image in images {
        for layer in &mut image.layers {
            if !layer.layer.size_known()
                && let Some(size) = sizes.get(&layer.layer.blob)
            {
                layer.layer.size = *size;
            }
        }
        image.size = image.layers.iter().map(|l| l.layer.size).sum();
    }
}

/// [`layer_content_size`] of each blob, several at a time (one per core).
fn measure_layers(store: &Store, blobs: &[Digest]) -> Vec<Result<u64, OpsError>> {
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(blobs.len());
    if workers <= 1 {
        return blobs
            .iter()
            .map(|blob| layer_content_size(store, blob))
            .collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<Result<u64, OpsError>>>> =
        blobs.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let (Some(blob), Some(slot)) = (blobs.get(i), results.get(i)) else {
                        break;
                    };
                    let result = layer_content_size(store, blob);
                    *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
                }
            });
        }
    });
    results
        .into_iter()
        .zip(blobs)
        .map(|(slot, blob)| {
            slot.into_inner()
                .unwrap_or_else(|p| p.into_inner())
                .unwrap_or_else(|| {
                    Err(OpsError::BadLayer {
                        blob: blob.clone(),
                        why: "the thread measuring it stopped (a kiln bug; please report it)"
                            .into(),
                    })
                })
        })
        .collect()
}

/// Sum of the sizes of the regular files in a stored layer (what docker calls
/// the layer's size). Uncompressed layers are scanned by seeking over file data.
pub fn layer_content_size(store: &Store, blob: &Digest) -> Result<u64, OpsError> {
    let bad = |e: io::Error| OpsError::BadLayer {
        blob: blob.clone(),
        why: e.to_string(),
    };
    let mut file = store.open_blob(blob)?;
    let mut head = [0u8; 4];
    let n = file.read(&mut head).map_err(bad)?;
    file.rewind().map_err(bad)?;
    let format = kiln_snapshot::sniff(head.get(..n).unwrap_or_default());
    if format == kiln_snapshot::Format::Uncompressed {
        let mut archive = tar::Archive::new(file);
        let mut size = 0;
        for entry in archive.entries_with_seek().map_err(bad)? {
            size += entry_content_size(&entry.map_err(bad)?);
        }
        Ok(size)
    } else {
        let mut archive = tar::Archive::new(kiln_snapshot::decompress(file).map_err(bad)?);
        tar_content_size(&mut archive).map_err(bad)
    }
}

fn tar_content_size<R: Read>(archive: &mut tar::Archive<R>) -> io::Result<u64> {
    let mut size = 0;
    for entry in archive.entries()? {
        size += entry_content_size(&entry?);
    }
    Ok(size)
}

/// What an entry adds to docker's layer size (moby's `directory.Size` of the
/// unpacked layer): regular files by size, symlinks by target length,
/// directories and hard links (counted at their first name) nothing. The one
/// definition [`kiln_snapshot::apply_layer`] also counts with, so a size
/// measured while unpacking equals one measured here.
fn entry_content_size<R: Read>(entry: &tar::Entry<'_, R>) -> u64 {
    kiln_snapshot::entry_content_size(entry)
}

/// The Go name of this machine's architecture, as image configs spell it.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// Applies one `--change` Dockerfile instruction to an image config's
/// `config` section. Accepts what `docker import --change` accepts.
pub fn apply_change(config: &mut Map<String, Value>, instruction: &str) -> Result<(), OpsError> {
    let err = |why: &str| OpsError::Change {
        instruction: instruction.to_string(),
        why: why.to_string(),
    };
    let trimmed = instruction.trim();
    let (keyword, rest) = trimmed
        .split_once(char::is_whitespace)
        .map(|(k, r)| (k, r.trim()))
        .unwrap_or((trimmed, ""));
    let keyword = keyword.to_ascii_uppercase();
    if rest.is_empty() {
        return Err(err(&format!("{keyword} needs an argument")));
    }
    match keyword.as_str() {
        "CMD" | "ENTRYPOINT" => {
            let args = if rest.starts_with('[') {
                json_string_array(rest).ok_or_else(|| err("not a JSON array of strings"))?
            } else {
                vec!["/bin/sh".into(), "-c".into(), rest.to_string()]
            };
            let key = if keyword == "CMD" {
                "Cmd"
            } else {
                "Entrypoint"
            };
            config.insert(key.into(), json!(args));
        }
        "ENV" => {
            let pairs = key_values(rest).ok_or_else(|| err("expected NAME=VALUE or NAME VALUE"))?;
            let mut env: Vec<String> = config
                .get("Env")
                .and_then(|v| v.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            for (name, value) in pairs {
                env.retain(|e| e.split('=').next() != Some(name.as_str()));
                env.push(format!("{name}={value}"));
            }
            config.insert("Env".into(), json!(env));
        }
        "LABEL" => {
            let pairs = key_values(rest).ok_or_else(|| err("expected NAME=VALUE"))?;
            let labels = config
                .entry("Labels")
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .ok_or_else(|| err("Labels is not an object"))?;
            for (name, value) in pairs {
                labels.insert(name, json!(value));
            }
        }
        "EXPOSE" => {
            let ports = config
                .entry("ExposedPorts")
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .ok_or_else(|| err("ExposedPorts is not an object"))?;
            for port in rest.split_whitespace() {
                let (number, proto) = port.split_once('/').unwrap_or((port, "tcp"));
                if number.is_empty() || !number.split('-').all(|p| p.parse::<u16>().is_ok()) {
                    return Err(err(&format!("invalid port {port:?}")));
                }
                ports.insert(
                    format!("{number}/{}", proto.to_ascii_lowercase()),
                    json!({}),
                );
            }
        }
        "VOLUME" => {
            let paths = if rest.starts_with('[') {
                json_string_array(rest).ok_or_else(|| err("not a JSON array of strings"))?
            } else {
                rest.split_whitespace().map(String::from).collect()
            };
            let volumes = config
                .entry("Volumes")
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .ok_or_else(|| err("Volumes is not an object"))?;
            for path in paths {
                volumes.insert(path, json!({}));
            }
        }
        "USER" => {
            config.insert("User".into(), json!(rest));
        }
        "WORKDIR" => {
            config.insert("WorkingDir".into(), json!(rest));
        }
        "ONBUILD" => {
            let onbuild = config
                .entry("OnBuild")
                .or_insert_with(|| json!([]))
                .as_array_mut()
                .ok_or_else(|| err("OnBuild is not an array"))?;
            onbuild.push(json!(rest));
        }
        other => {
            return Err(err(&format!(
                "{} is not a valid change command (use CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, USER, VOLUME or WORKDIR)",
                other.to_ascii_lowercase()
            )));
        }
    }
    Ok(())
}

fn json_string_array(text: &str) -> Option<Vec<String>> {
    let value: Value = serde_json::from_str(text).ok()?;
    value
        .as_array()?
        .iter()
        .map(|v| v.as_str().map(String::from))
        .collect()
}

/// `A=1 B="two words"` or `A one two` (legacy single pair).
fn key_values(text: &str) -> Option<Vec<(String, String)>> {
    let first = text.split_whitespace().next()?;
    if !first.contains('=') {
        let (name, value) = text.split_once(char::is_whitespace)?;
        return Some(vec![(name.to_string(), value.trim().to_string())]);
    }
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut word = String::new();
        let mut quote: Option<char> = None;
        while let Some(&c) = chars.peek() {
            match quote {
                Some(q) if c == q => quote = None,
                Some(_) => word.push(c),
                None if c == '"' || c == '\'' => quote = Some(c),
                None if c == '\\' => {
                    chars.next();
                    if let Some(next) = chars.peek() {
                        word.push(*next);
                    }
                }
                None if c.is_whitespace() => break,
                None => word.push(c),
            }
            chars.next();
        }
        let (name, value) = word.split_once('=')?;
        if name.is_empty() {
            return None;
        }
        pairs.push((name.to_string(), value.to_string()));
    }
    Some(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A layer tar with every kind of entry the size counts differently:
    /// directory, file, symlink, hard link, whiteout, a file given twice, a
    /// PAX long name.
    fn layer_tar(tag: &str) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut entry = |kind: tar::EntryType, path: &str, data: &[u8], link: Option<&str>| {
            let mut header = tar::Header::new_ustar();
            header.set_entry_type(kind);
            header.set_size(data.len() as u64);
            header.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
            header.set_mtime(0);
            header.set_uid(0);
            header.set_gid(0);
            match link {
                Some(target) => builder.append_link(&mut header, path, target).unwrap(),
                None => builder.append_data(&mut header, path, data).unwrap(),
            }
        };
        entry(tar::EntryType::Directory, "etc/", b"", None);
        entry(tar::EntryType::Regular, "etc/a", tag.as_bytes(), None);
        entry(tar::EntryType::Symlink, "etc/link", b"", Some("a/b/c"));
        entry(tar::EntryType::Link, "etc/hard", b"", Some("etc/a"));
        entry(tar::EntryType::Regular, "etc/.wh.gone", b"", None);
        entry(tar::EntryType::Regular, "etc/a", b"four", None);
        let long = format!("etc/{}", "n".repeat(150));
        entry(tar::EntryType::Regular, &long, &[7u8; 1000], None);
        builder.into_inner().unwrap()
    }

    fn gzip(tar: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        kiln_snapshot::compress(tar, kiln_snapshot::Compression::Gzip { level: 1 }, &mut out)
            .unwrap();
        out
    }

    /// Puts an image of `layers` (plain tars, gzipped when `compressed`)
    /// into `store` the way a pull leaves its blobs, and returns its manifest
    /// and config documents.
    fn put_blobs(
        store: &Store,
        lease: &Lease<'_>,
        layers: &[(Vec<u8>, bool)],
        tag: &str,
    ) -> (kiln_image::ManifestDoc, kiln_image::ConfigDoc) {
        let mut descriptors = Vec::new();
        let mut diff_ids = Vec::new();
        for (tar, compressed) in layers {
            diff_ids.push(kiln_image::sha256_digest(tar).to_string());
            let (bytes, media_type) = if *compressed {
                (gzip(tar), "application/vnd.oci.image.layer.v1.tar+gzip")
            } else {
                (tar.clone(), OCI_LAYER_TAR)
            };
            let blob = store.put_blob(lease, &bytes).unwrap();
            descriptors.push(json!({"mediaType": media_type, "digest": blob.digest.to_string(), "size": blob.size}));
        }
        let config = json!({"architecture": "amd64", "os": "linux", "config": {}, "comment": tag,
            "rootfs": {"type": "layers", "diff_ids": diff_ids}});
        let config_bytes = serde_json::to_vec(&config).unwrap();
        let config_blob = store.put_blob(lease, &config_bytes).unwrap();
        let manifest = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_blob.digest.to_string(), "size": config_blob.size},
            "layers": descriptors});
        let manifest_bytes = serde_json::to_vec(&manifest).unwrap();
        store.put_blob(lease, &manifest_bytes).unwrap();
        let kiln_image::Manifest::Image(doc) =
            kiln_image::parse_manifest(&manifest_bytes, None).unwrap()
        else {
            panic!("not an image manifest");
        };
        (doc, kiln_image::parse_config(&config_bytes).unwrap())
    }

    const LAYER_SIZE: u64 = 3 + 5 + 4 + 1000;

    #[test]
    fn pulled_sizes_are_unknown_until_asked_for_then_measured_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let lease = store.lease();
        let layers = [(layer_tar("abc"), true), (layer_tar("xyz"), false)];
        let (manifest, config) = put_blobs(&store, &lease, &layers, "pulled");
        let pulled = record_image_unmeasured(&store, &lease, &manifest, &config).unwrap();

        let recorded = store.image_as_recorded(&pulled).unwrap().unwrap();
        assert!(!recorded.size_known());
        assert_eq!(recorded.size, LayerRecord::UNKNOWN_SIZE);
        assert!(recorded.layers.iter().all(|l| !l.layer.size_known()));

        // The same image measured the old way (as `kiln load` does).
        let other_dir = tempfile::tempdir().unwrap();
        let other = Store::open(other_dir.path()).unwrap();
        let other_lease = other.lease();
        let (m, c) = put_blobs(&other, &other_lease, &layers, "pulled");
        let loaded = record_loaded_image(&other, &other_lease, &m, &c).unwrap();
        let loaded = other.image(&loaded).unwrap().unwrap();
        assert_eq!(loaded.size, 2 * LAYER_SIZE);

        let listed = store.list_images().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].size, loaded.size);
        let sizes = |image: &ImageRecord| {
            image
                .layers
                .iter()
                .map(|l| l.layer.size)
                .collect::<Vec<_>>()
        };
        assert_eq!(sizes(&listed[0]), sizes(&loaded));

        // Recorded: with the blobs gone, another process still knows the sizes
        // (nothing is measured again).
        for layer in &listed[0].layers {
            std::fs::remove_file(store.blob_path(&layer.layer.blob)).unwrap();
        }
        drop(lease);
        drop(store);
        let reopened = Store::open(dir.path()).unwrap();
        let again = reopened.image_as_recorded(&pulled).unwrap().unwrap();
        assert!(again.size_known());
        assert_eq!(again.size, loaded.size);
        assert_eq!(reopened.image(&pulled).unwrap().unwrap().size, loaded.size);
    }

    #[test]
    fn a_size_known_from_another_image_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let lease = store.lease();
        let shared = (layer_tar("abc"), true);
        let (m, c) = put_blobs(&store, &lease, std::slice::from_ref(&shared), "loaded");
        record_loaded_image(&store, &lease, &m, &c).unwrap();
        let (m, c) = put_blobs(&store, &lease, &[shared], "pulled");
        let pulled = record_image_unmeasured(&store, &lease, &m, &c).unwrap();
        let recorded = store.image_as_recorded(&pulled).unwrap().unwrap();
        assert!(recorded.size_known());
        assert_eq!(recorded.size, LAYER_SIZE);
    }

    #[test]
    fn unpacking_records_the_size_it_counted() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("SKIP: overlay-mode snapshots (whiteout devices) need root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let lease = store.lease();
        let layers = [(layer_tar("abc"), true), (layer_tar("xyz"), false)];
        let (manifest, config) = put_blobs(&store, &lease, &layers, "pulled");
        let pulled = record_image_unmeasured(&store, &lease, &manifest, &config).unwrap();
        let recorded = store.image_as_recorded(&pulled).unwrap().unwrap();
        unpack_image(&store, &lease, &recorded).unwrap();
        let after = store.image_as_recorded(&pulled).unwrap().unwrap();
        assert!(after.size_known());
        assert_eq!(after.size, 2 * LAYER_SIZE);
        for layer in &after.layers {
            assert_eq!(
                layer.layer.size,
                layer_content_size(&store, &layer.layer.blob).unwrap()
            );
        }
    }

    #[test]
    fn an_unreadable_layer_counts_as_zero_and_stays_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let lease = store.lease();
        let (manifest, config) = put_blobs(&store, &lease, &[(layer_tar("abc"), true)], "broken");
        let pulled = record_image_unmeasured(&store, &lease, &manifest, &config).unwrap();
        let blob = to_store_digest(manifest.layers[0].descriptor.digest()).unwrap();
        std::fs::remove_file(store.blob_path(&blob)).unwrap();
        let image = store.image(&pulled).unwrap().unwrap();
        assert_eq!(image.size, 0);
        assert!(
            !store
                .image_as_recorded(&pulled)
                .unwrap()
                .unwrap()
                .size_known()
        );
    }

    #[test]
    fn changes_follow_docker_import() {
        let mut config = Map::new();
        for change in [
            "CMD [\"sh\"]",
            "ENTRYPOINT /bin/run --flag",
            "ENV A=1 B=\"two words\"",
            "ENV A 3",
            "EXPOSE 80 53/udp",
            "LABEL org.x=y",
            "USER 1:2",
            "WORKDIR /srv",
            "VOLUME /data",
        ] {
            apply_change(&mut config, change).unwrap();
        }
        assert_eq!(config["Cmd"], json!(["sh"]));
        assert_eq!(
            config["Entrypoint"],
            json!(["/bin/sh", "-c", "/bin/run --flag"])
        );
        assert_eq!(config["Env"], json!(["B=two words", "A=3"]));
        assert_eq!(config["ExposedPorts"], json!({"80/tcp": {}, "53/udp": {}}));
        assert_eq!(config["Labels"], json!({"org.x": "y"}));
        assert_eq!(config["User"], json!("1:2"));
        assert_eq!(config["WorkingDir"], json!("/srv"));
        assert_eq!(config["Volumes"], json!({"/data": {}}));
        for bad in ["STOPSIGNAL 9", "CMD", "EXPOSE http", "CMD [1]"] {
            assert!(apply_change(&mut config, bad).is_err(), "{bad} accepted");
        }
    }
}
