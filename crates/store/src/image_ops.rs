//! Image-level operations that join the store to kiln-image's formats:
//! importing a rootfs tarball as a one-layer image, recording images read from
//! archives, and giving archive writers and readers access to the store's blobs.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, Write};

use kiln_image::{BlobRead, BlobWrite, ImageError};
use serde_json::{Map, Value, json};

use crate::{BlobWriter, Digest, LayerRecord, Lease, NewImage, Store, StoreError};

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
/// uncompressed sizes while the blobs streamed in (a registry pull): those
/// layers are not decompressed again to count them.
pub fn record_image_with_sizes<'s>(
    store: &'s Store,
    lease: &Lease<'s>,
    manifest: &kiln_image::ManifestDoc,
    config: &kiln_image::ConfigDoc,
    known_sizes: &HashMap<Digest, u64>,
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
        let size = match known_sizes.get(&blob) {
            Some(size) => *size,
            None => layer_content_size(store, &blob)?,
        };
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
            Ok::<(), OpsError>(())
        })?;
        dirs.push(dir);
        parent = Some(layer.chain_id.clone());
    }
    Ok(dirs)
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

/// [`layer_content_size`] of a layer read as a stream (plain, gzip or zstd),
/// for callers that measure a blob while it arrives (a registry pull).
pub fn layer_stream_content_size(reader: impl Read + Send) -> io::Result<u64> {
    let mut archive = tar::Archive::new(kiln_snapshot::decompress(reader)?);
    tar_content_size(&mut archive)
}

/// [`layer_content_size`] of an uncompressed layer tar read as a stream.
pub fn tar_stream_content_size(tar: impl Read) -> io::Result<u64> {
    tar_content_size(&mut tar::Archive::new(tar))
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
/// directories and hard links (counted at their first name) nothing.
fn entry_content_size<R: Read>(entry: &tar::Entry<'_, R>) -> u64 {
    let kind = entry.header().entry_type();
    if kind.is_file() {
        entry.size()
    } else if kind.is_symlink() {
        entry.link_name_bytes().map(|l| l.len() as u64).unwrap_or(0)
    } else {
        0
    }
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
