//! Archive writers: docker-archive tar, OCI layout tar and OCI layout directory.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;

use serde_json::json;

use super::{ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, ExportImage, WriteOptions};
use crate::blob::{BlobDir, BlobRead, BlobWrite, MAX_METADATA_BLOB, read_blob_bytes};
use crate::digest::{Digest, DigestingReader, sha256_digest, sha256_hex, verify_digest};
use crate::error::{ImageError, Result};
use crate::manifest::{
    ConfigDoc, LayerCompression, Manifest, ManifestDoc, media_types, parse_config, parse_manifest,
};
use crate::reference::Reference;

/// Where layout files and blobs go: a tar stream or a directory.
trait LayoutOut {
    /// Adds `blobs/sha256/<hex>` with exactly `size` bytes from `content`.
    fn blob(&mut self, digest: &Digest, size: u64, content: &mut dyn Read) -> Result<()>;
    /// Adds a small file at the layout root.
    fn file(&mut self, name: &str, bytes: &[u8]) -> Result<()>;
}

struct TarOut<W: Write> {
    builder: tar::Builder<W>,
    wrote_dirs: bool,
}

impl<W: Write> TarOut<W> {
    fn new(out: W) -> Self {
        TarOut {
            builder: tar::Builder::new(out),
            wrote_dirs: false,
        }
    }

    fn append(
        &mut self,
        path: &str,
        size: u64,
        mode: u32,
        kind: tar::EntryType,
        content: &mut dyn Read,
    ) -> Result<()> {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(kind);
        header.set_size(size);
        header.set_mode(mode);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        self.builder
            .append_data(&mut header, path, content)
            .map_err(|err| ImageError::io(format!("writing archive member {path}"), err))
    }

    fn ensure_dirs(&mut self) -> Result<()> {
        if !self.wrote_dirs {
            self.wrote_dirs = true;
            self.append(
                "blobs/",
                0,
                0o755,
                tar::EntryType::Directory,
                &mut io::empty(),
            )?;
            self.append(
                "blobs/sha256/",
                0,
                0o755,
                tar::EntryType::Directory,
                &mut io::empty(),
            )?;
        }
        Ok(())
    }

    fn finish(self) -> Result<W> {
        self.builder
            .into_inner()
            .map_err(|err| ImageError::io("finishing the archive", err))
    }
}

/// Yields exactly `size` bytes of `inner` or fails: a short or long source would
/// otherwise corrupt the tar stream silently.
struct ExactReader<'a> {
    inner: &'a mut dyn Read,
    remaining: u64,
    what: String,
}

impl Read for ExactReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} is longer than its recorded size", self.what),
                )),
            };
        }
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let count = self.inner.read(&mut buf[..want])?;
        if count == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} ended {} bytes early", self.what, self.remaining),
            ));
        }
        self.remaining -= count as u64;
        Ok(count)
    }
}

impl<W: Write> LayoutOut for TarOut<W> {
    fn blob(&mut self, digest: &Digest, size: u64, content: &mut dyn Read) -> Result<()> {
        self.ensure_dirs()?;
        let path = format!("blobs/sha256/{}", sha256_hex(digest)?);
        let mut exact = ExactReader {
            inner: content,
            remaining: size,
            what: format!("blob {digest}"),
        };
        self.append(&path, size, 0o644, tar::EntryType::Regular, &mut exact)
    }

    fn file(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        self.append(
            name,
            bytes.len() as u64,
            0o644,
            tar::EntryType::Regular,
            &mut &bytes[..],
        )
    }
}

struct DirOut {
    blobs: BlobDir,
}

impl LayoutOut for DirOut {
    fn blob(&mut self, digest: &Digest, size: u64, content: &mut dyn Read) -> Result<()> {
        let (_, written) = self.blobs.put_blob(content, Some(digest))?;
        if written != size {
            return Err(ImageError::SizeMismatch {
                what: format!("blob {digest}"),
                expected: size,
                actual: written,
            });
        }
        Ok(())
    }

    fn file(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        let root = self.blobs.root();
        let mut temp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(root)
            .map_err(|err| ImageError::io(format!("creating a file in {}", root.display()), err))?;
        temp.write_all(bytes)
            .and_then(|()| temp.as_file().sync_all())
            .map_err(|err| ImageError::io(format!("writing {name} in {}", root.display()), err))?;
        let path = root.join(name);
        temp.persist(&path)
            .map_err(|err| ImageError::io(format!("writing {}", path.display()), err.error))?;
        Ok(())
    }
}

fn open_source<'a>(
    blobs: &'a dyn BlobRead,
    digest: &Digest,
    what: &str,
) -> Result<(Box<dyn Read + 'a>, u64)> {
    let missing = |err: io::Error| {
        if err.kind() == io::ErrorKind::NotFound {
            ImageError::MissingBlob {
                digest: digest.clone(),
                what: what.to_string(),
            }
        } else {
            ImageError::io(format!("opening {what} {digest}"), err)
        }
    };
    let size = blobs.blob_size(digest).map_err(missing)?;
    let reader = blobs.open_blob(digest).map_err(missing)?;
    Ok((reader, size))
}

/// Copies a blob as stored, verifying its digest as it streams; returns its size.
fn copy_blob(
    out: &mut dyn LayoutOut,
    blobs: &dyn BlobRead,
    digest: &Digest,
    what: &str,
) -> Result<u64> {
    let (reader, size) = open_source(blobs, digest, what)?;
    let mut hashing = DigestingReader::new(reader);
    out.blob(digest, size, &mut hashing)?;
    let (actual, _) = hashing.finish();
    verify_digest(&format!("{what} in the blob source"), digest, &actual)?;
    Ok(size)
}

fn load_manifest(
    blobs: &dyn BlobRead,
    digest: &Digest,
    media_type: Option<&str>,
    what: &str,
) -> Result<Manifest> {
    let bytes = read_blob_bytes(blobs, digest, what, MAX_METADATA_BLOB)?;
    parse_manifest(&bytes, media_type)
}

fn load_config(blobs: &dyn BlobRead, manifest: &ManifestDoc) -> Result<ConfigDoc> {
    let digest = manifest.config().digest();
    let bytes = read_blob_bytes(blobs, digest, "image config", MAX_METADATA_BLOB)?;
    parse_config(&bytes)
}

/// The single-platform manifest of an export entry.
fn resolve_image(
    blobs: &dyn BlobRead,
    image: &ExportImage,
    options: &WriteOptions,
) -> Result<ManifestDoc> {
    let mut current = load_manifest(blobs, &image.manifest_digest, None, "manifest")?;
    for _ in 0..4 {
        match current {
            Manifest::Image(doc) => return Ok(doc),
            Manifest::Index(index) => {
                let chosen = index.select(&options.platform)?;
                current = load_manifest(
                    blobs,
                    chosen.digest(),
                    Some(chosen.media_type().as_ref()),
                    "platform manifest",
                )?;
            }
        }
    }
    Err(ImageError::InvalidManifest {
        what: image.manifest_digest.to_string(),
        why: "indexes nested more than 4 deep".into(),
    })
}

/// `name:tag` as docker prints it in `RepoTags`, for references with a tag.
fn repo_tag(reference: &Reference) -> Option<String> {
    reference
        .tag()
        .map(|tag| format!("{}:{tag}", reference.familiar_name()))
}

fn index_entries(
    media_type: &str,
    digest: &Digest,
    size: u64,
    names: &[Reference],
) -> Vec<serde_json::Value> {
    let base = json!({"mediaType": media_type, "digest": digest.to_string(), "size": size});
    if names.is_empty() {
        return vec![base];
    }
    names
        .iter()
        .map(|name| {
            let mut entry = base.clone();
            let ref_name = name
                .tag()
                .map(str::to_string)
                .unwrap_or_else(|| name.to_string());
            entry["annotations"] = json!({
                ANNOTATION_IMAGE_NAME: name.to_string(),
                ANNOTATION_REF_NAME: ref_name,
            });
            entry
        })
        .collect()
}

fn to_json(value: &serde_json::Value) -> Vec<u8> {
    // Serialising a Value built from strings and numbers cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// Writes a `docker save`-format tar of `images` to `out` and returns `out`.
///
/// Accepted by `docker load` (20.10 and later), `skopeo` (`docker-archive:` and,
/// since the file is also an OCI layout, `oci-archive:`) and `kiln load`. Layers
/// are written uncompressed (as `docker save` does). A compressed stored layer is
/// decompressed as it is written; when the source cannot tell its uncompressed
/// size ([`BlobRead::uncompressed_size`]) it is decompressed twice (once to learn
/// the size the tar header needs), so memory stays constant whatever the size.
pub fn write_docker_archive<W: Write>(
    out: W,
    blobs: &dyn BlobRead,
    images: &[ExportImage],
    options: &WriteOptions,
) -> Result<W> {
    let mut tar = TarOut::new(out);
    let mut written: HashSet<Digest> = HashSet::new();
    let mut manifest_json = Vec::new();
    let mut index_json = Vec::new();
    let mut repositories = serde_json::Map::new();
    for image in images {
        let manifest = resolve_image(blobs, image, options)?;
        let config = load_config(blobs, &manifest)?;
        let diff_ids = config.diff_ids()?;
        if diff_ids.len() != manifest.layers.len() {
            return Err(ImageError::InvalidManifest {
                what: manifest.digest.to_string(),
                why: format!(
                    "{} layers but the config lists {} diff IDs",
                    manifest.layers.len(),
                    diff_ids.len()
                ),
            });
        }
        let mut layer_paths = Vec::new();
        let mut layer_descriptors = Vec::new();
        for (position, (layer, diff_id)) in manifest.layers.iter().zip(&diff_ids).enumerate() {
            let what = format!("layer {} of {}", position + 1, image.manifest_digest);
            let blob = layer.descriptor.digest();
            let size =
                if layer.compression == LayerCompression::None {
                    verify_digest(
                        &format!("{what} (uncompressed, so digest = diff ID)"),
                        diff_id,
                        blob,
                    )?;
                    if written.contains(diff_id) {
                        layer.descriptor.size()
                    } else {
                        copy_blob(&mut tar, blobs, blob, &what)?
                    }
                } else if let Some(size) = blobs.uncompressed_size(blob) {
                    // The source knows the tar's size: decompress once, verifying the
                    // diff ID as the tar is written.
                    if !written.contains(diff_id) {
                        let (reader, _) = open_source(blobs, blob, &what)?;
                        let mut hashing =
                            DigestingReader::new(layer.compression.decompress(reader).map_err(
                                |err| ImageError::io(format!("decompressing {what}"), err),
                            )?);
                        tar.blob(diff_id, size, &mut hashing)?;
                        let (actual, _) = hashing.finish();
                        verify_digest(
                            &format!("{what} (decompressed) against its diff ID"),
                            diff_id,
                            &actual,
                        )?;
                    }
                    size
                } else {
                    let (reader, _) = open_source(blobs, blob, &what)?;
                    let mut hashing = DigestingReader::new(
                        layer
                            .compression
                            .decompress(reader)
                            .map_err(|err| ImageError::io(format!("decompressing {what}"), err))?,
                    );
                    io::copy(&mut hashing, &mut io::sink())
                        .map_err(|err| ImageError::io(format!("decompressing {what}"), err))?;
                    let (actual, size) = hashing.finish();
                    verify_digest(
                        &format!("{what} (decompressed) against its diff ID"),
                        diff_id,
                        &actual,
                    )?;
                    if !written.contains(diff_id) {
                        let (reader, _) = open_source(blobs, blob, &what)?;
                        let mut tar_stream = layer
                            .compression
                            .decompress(reader)
                            .map_err(|err| ImageError::io(format!("decompressing {what}"), err))?;
                        tar.blob(diff_id, size, &mut tar_stream)?;
                    }
                    size
                };
            written.insert(diff_id.clone());
            layer_paths.push(format!("blobs/sha256/{}", sha256_hex(diff_id)?));
            layer_descriptors.push(json!({
                "mediaType": media_types::OCI_LAYER_TAR,
                "digest": diff_id.to_string(),
                "size": size,
            }));
        }
        if written.insert(config.digest.clone()) {
            tar.blob(
                &config.digest,
                config.bytes.len() as u64,
                &mut &config.bytes[..],
            )?;
        }
        // Keep the stored manifest when its layers already are the plain tars;
        // otherwise describe the uncompressed layers in a new OCI manifest.
        let (manifest_bytes, manifest_type) = if manifest
            .layers
            .iter()
            .all(|layer| layer.compression == LayerCompression::None)
        {
            (manifest.bytes.clone(), manifest.media_type())
        } else {
            let generated = json!({
                "schemaVersion": 2,
                "mediaType": media_types::OCI_MANIFEST,
                "config": {
                    "mediaType": media_types::OCI_CONFIG,
                    "digest": config.digest.to_string(),
                    "size": config.bytes.len(),
                },
                "layers": layer_descriptors,
            });
            (to_json(&generated), media_types::OCI_MANIFEST)
        };
        let manifest_digest = sha256_digest(&manifest_bytes);
        if written.insert(manifest_digest.clone()) {
            tar.blob(
                &manifest_digest,
                manifest_bytes.len() as u64,
                &mut &manifest_bytes[..],
            )?;
        }
        let tagged: Vec<&Reference> = image
            .names
            .iter()
            .filter(|name| name.tag().is_some())
            .collect();
        let repo_tags: Vec<String> = tagged.iter().filter_map(|name| repo_tag(name)).collect();
        // `repositories` maps each tag to the top layer, as classic `docker save` does.
        if let Some(top_layer) = diff_ids.last() {
            let top_hex = sha256_hex(top_layer)?;
            for name in &tagged {
                if let Some(tag) = name.tag() {
                    let entry = repositories
                        .entry(name.familiar_name())
                        .or_insert_with(|| json!({}));
                    entry[tag] = json!(top_hex);
                }
            }
        }
        manifest_json.push(json!({
            "Config": format!("blobs/sha256/{}", sha256_hex(&config.digest)?),
            "RepoTags": if repo_tags.is_empty() { serde_json::Value::Null } else { json!(repo_tags) },
            "Layers": layer_paths,
        }));
        let owned_tagged: Vec<Reference> = tagged.into_iter().cloned().collect();
        index_json.extend(index_entries(
            manifest_type,
            &manifest_digest,
            manifest_bytes.len() as u64,
            &owned_tagged,
        ));
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": media_types::OCI_INDEX,
        "manifests": index_json,
    });
    tar.file("index.json", &to_json(&index))?;
    tar.file(
        "manifest.json",
        &to_json(&serde_json::Value::Array(manifest_json)),
    )?;
    tar.file("oci-layout", OCI_LAYOUT)?;
    if !repositories.is_empty() {
        tar.file(
            "repositories",
            &to_json(&serde_json::Value::Object(repositories)),
        )?;
    }
    tar.finish()
}

/// Writes every blob reachable from `top` that the source has (an index's
/// platform manifests that were never pulled are skipped), children first.
fn write_oci_tree(
    out: &mut dyn LayoutOut,
    blobs: &dyn BlobRead,
    digest: &Digest,
    media_type: Option<&str>,
    written: &mut HashSet<Digest>,
    depth: usize,
) -> Result<Manifest> {
    let manifest = load_manifest(blobs, digest, media_type, "manifest")?;
    if written.contains(digest) {
        return Ok(manifest);
    }
    match &manifest {
        Manifest::Image(doc) => {
            for (position, layer) in doc.layers.iter().enumerate() {
                let layer_digest = layer.descriptor.digest();
                if written.insert(layer_digest.clone()) {
                    copy_blob(
                        out,
                        blobs,
                        layer_digest,
                        &format!("layer {} of {digest}", position + 1),
                    )?;
                }
            }
            let config_digest = doc.config().digest();
            if written.insert(config_digest.clone()) {
                copy_blob(out, blobs, config_digest, &format!("config of {digest}"))?;
            }
        }
        Manifest::Index(index) => {
            if depth >= 4 {
                return Err(ImageError::InvalidManifest {
                    what: digest.to_string(),
                    why: "indexes nested more than 4 deep".into(),
                });
            }
            let mut present = 0;
            for child in index.index.manifests() {
                if blobs.blob_size(child.digest()).is_err() {
                    continue;
                }
                present += 1;
                write_oci_tree(
                    out,
                    blobs,
                    child.digest(),
                    Some(child.media_type().as_ref()),
                    written,
                    depth + 1,
                )?;
            }
            if present == 0 {
                return Err(ImageError::InvalidManifest {
                    what: digest.to_string(),
                    why: "none of the index's manifests is in the store".into(),
                });
            }
        }
    }
    written.insert(digest.clone());
    out.blob(digest, manifest.bytes().len() as u64, &mut manifest.bytes())?;
    Ok(manifest)
}

fn write_oci_layout(
    out: &mut dyn LayoutOut,
    blobs: &dyn BlobRead,
    images: &[ExportImage],
) -> Result<()> {
    let mut written = HashSet::new();
    let mut entries = Vec::new();
    for image in images {
        let top = write_oci_tree(out, blobs, &image.manifest_digest, None, &mut written, 0)?;
        entries.extend(index_entries(
            top.media_type(),
            top.digest(),
            top.bytes().len() as u64,
            &image.names,
        ));
    }
    out.file("oci-layout", OCI_LAYOUT)?;
    let index = json!({
        "schemaVersion": 2,
        "mediaType": media_types::OCI_INDEX,
        "manifests": entries,
    });
    out.file("index.json", &to_json(&index))
}

/// Writes an OCI image layout tar (`skopeo oci-archive:`) of `images` to `out`.
/// Manifests, indexes and layers are written exactly as stored (same digests,
/// compression kept); each name becomes an `index.json` entry annotated with the
/// full name and, as `org.opencontainers.image.ref.name`, its tag.
pub fn write_oci_archive<W: Write>(
    out: W,
    blobs: &dyn BlobRead,
    images: &[ExportImage],
) -> Result<W> {
    let mut tar = TarOut::new(out);
    write_oci_layout(&mut tar, blobs, images)?;
    tar.finish()
}

/// Writes an OCI image layout directory (`skopeo oci:DIR`, `umoci --image DIR:tag`).
/// `dir` is created if needed; blobs already there are kept, and `index.json`
/// is replaced by one naming exactly `images`.
pub fn write_oci_dir(dir: &Path, blobs: &dyn BlobRead, images: &[ExportImage]) -> Result<()> {
    fs::create_dir_all(dir)
        .map_err(|err| ImageError::io(format!("creating {}", dir.display()), err))?;
    let mut out = DirOut {
        blobs: BlobDir::new(dir),
    };
    write_oci_layout(&mut out, blobs, images)
}
