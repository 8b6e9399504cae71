//! Archive readers: docker-archive and OCI layout tars (members in any order,
//! optionally gzip- or zstd-compressed as a whole) and OCI layout directories.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Component, Path};

use oci_spec::image::{Descriptor, ImageIndex};
use serde::Deserialize;
use serde_json::json;

use super::{
    ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, ArchiveFormat, LoadedArchive, LoadedImage,
    ReadOptions,
};
use crate::blob::{BlobDir, BlobRead, BlobWrite, MAX_METADATA_BLOB, read_blob_bytes};
use crate::digest::{Digest, parse_sha256, sha256_digest};
use crate::error::{ImageError, Result};
use crate::manifest::{
    LayerCompression, Manifest, ManifestDoc, media_types, parse_config, parse_manifest,
};
use crate::reference::Reference;

/// Members up to this size are read into memory (then written to the sink), so
/// JSON documents among them can be kept for resolving the images.
const SMALL_MEMBER: u64 = 16 * 1024 * 1024;
/// Total bytes of JSON documents kept in memory while reading one archive.
const MAX_RETAINED_JSON: usize = 256 * 1024 * 1024;
/// Symlink chains followed when resolving `manifest.json` paths.
const MAX_LINK_DEPTH: usize = 16;

/// A regular member spooled to the blob sink.
#[derive(Debug, Clone)]
struct Member {
    digest: Digest,
    size: u64,
    compression: LayerCompression,
}

/// Everything learned while streaming a tar.
#[derive(Default)]
struct Spool {
    /// Archive path → spooled blob.
    members: HashMap<String, Member>,
    /// Archive path → archive path it links to (symlinks resolved relative to
    /// their directory, hard links relative to the root).
    links: HashMap<String, String>,
    /// Digests of every blob written to the sink.
    seen: HashSet<Digest>,
    /// Small JSON documents by digest.
    json: HashMap<Digest, Vec<u8>>,
    json_bytes: usize,
    /// Layout metadata files kept by name (manifest.json, index.json, ...).
    metadata: HashMap<String, Vec<u8>>,
}

/// Normalises a member path: no absolute paths, no `..`, `.` dropped.
fn clean_member_path(path: &Path) -> Result<String> {
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => match part.to_str() {
                Some(text) => parts.push(text),
                None => {
                    return Err(ImageError::InvalidArchive {
                        what: path.display().to_string(),
                        why: "member name is not UTF-8".into(),
                    });
                }
            },
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(ImageError::InvalidArchive {
                    what: path.display().to_string(),
                    why: "member path leaves the archive root (absolute or `..`); refusing it"
                        .into(),
                });
            }
        }
    }
    Ok(parts.join("/"))
}

/// Joins a relative link target to the directory of `from`, refusing escapes.
fn resolve_relative(from_dir: &str, target: &str) -> Option<String> {
    let mut parts: Vec<&str> = if target.starts_with('/') {
        Vec::new()
    } else {
        from_dir
            .split('/')
            .filter(|part| !part.is_empty())
            .collect()
    };
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            other => parts.push(other),
        }
    }
    Some(parts.join("/"))
}

fn is_layout_metadata(path: &str) -> bool {
    matches!(
        path,
        "manifest.json" | "index.json" | "oci-layout" | "repositories"
    )
}

/// Legacy per-layer files of classic `docker save` that kiln does not need.
fn is_legacy_layer_metadata(path: &str) -> bool {
    path.ends_with("/json") || path.ends_with("/VERSION")
}

fn read_bounded(reader: &mut dyn Read, limit: u64, what: &str) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    reader
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| ImageError::io(format!("reading {what}"), err))?;
    if bytes.len() as u64 > limit {
        return Err(ImageError::TooLarge {
            what: what.to_string(),
            limit,
        });
    }
    Ok(bytes)
}

/// Remembers the first bytes that pass through, for compression sniffing.
struct HeadCapture<'a> {
    inner: &'a mut dyn Read,
    head: Vec<u8>,
}

impl Read for HeadCapture<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let count = self.inner.read(buf)?;
        if self.head.len() < 8 {
            let take = (8 - self.head.len()).min(count);
            self.head
                .extend_from_slice(buf.get(..take).unwrap_or_default());
        }
        Ok(count)
    }
}

impl Spool {
    fn add_member(
        &mut self,
        path: String,
        size: u64,
        content: &mut dyn Read,
        sink: &mut dyn BlobWrite,
    ) -> Result<()> {
        if is_layout_metadata(&path) {
            let bytes = read_bounded(content, MAX_METADATA_BLOB, &path)?;
            self.metadata.insert(path, bytes);
            return Ok(());
        }
        if is_legacy_layer_metadata(&path) {
            return Ok(());
        }
        let expected = match path.strip_prefix("blobs/sha256/") {
            Some(hex) => Some(parse_sha256(&format!("sha256:{hex}")).map_err(|err| {
                ImageError::InvalidArchive {
                    what: path.clone(),
                    why: format!("blob file name is not a sha256 digest: {err}"),
                }
            })?),
            None => None,
        };
        let (digest, written, compression) = if size <= SMALL_MEMBER {
            let bytes = read_bounded(content, SMALL_MEMBER, &path)?;
            let (digest, written) =
                sink.put_blob(&mut &bytes[..], expected.as_ref())
                    .map_err(|err| match err {
                        ImageError::DigestMismatch {
                            expected, actual, ..
                        } => ImageError::DigestMismatch {
                            what: format!("archive member {path}"),
                            expected,
                            actual,
                        },
                        other => other,
                    })?;
            let compression = LayerCompression::sniff(&bytes);
            let looks_like_json = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
            if looks_like_json && self.json_bytes + bytes.len() <= MAX_RETAINED_JSON {
                self.json_bytes += bytes.len();
                self.json.insert(digest.clone(), bytes);
            }
            (digest, written, compression)
        } else {
            let mut capture = HeadCapture {
                inner: content,
                head: Vec::with_capacity(8),
            };
            let (digest, written) = sink.put_blob(&mut capture, expected.as_ref())?;
            (digest, written, LayerCompression::sniff(&capture.head))
        };
        if written != size {
            return Err(ImageError::SizeMismatch {
                what: format!("archive member {path}"),
                expected: size,
                actual: written,
            });
        }
        self.seen.insert(digest.clone());
        self.members.insert(
            path,
            Member {
                digest,
                size,
                compression,
            },
        );
        Ok(())
    }

    /// The spooled member at `path`, following links.
    fn member(&self, path: &str, what: &str) -> Result<&Member> {
        let mut current = clean_member_path(Path::new(path))?;
        for _ in 0..MAX_LINK_DEPTH {
            if let Some(member) = self.members.get(&current) {
                return Ok(member);
            }
            match self.links.get(&current) {
                Some(target) => current = target.clone(),
                None => break,
            }
        }
        Err(ImageError::InvalidArchive {
            what: path.to_string(),
            why: format!("{what} names a file that is not in the archive (or is a link loop)"),
        })
    }

    fn json_blob(&self, digest: &Digest, what: &str) -> Result<&[u8]> {
        if let Some(bytes) = self.json.get(digest) {
            return Ok(bytes);
        }
        if self.seen.contains(digest) {
            return Err(ImageError::InvalidArchive {
                what: format!("{what} {digest}"),
                why: format!(
                    "it is in the archive but is not a JSON document of at most {SMALL_MEMBER} bytes"
                ),
            });
        }
        Err(ImageError::MissingBlob {
            digest: digest.clone(),
            what: format!("{what}, named in the archive but not in it"),
        })
    }
}

/// `manifest.json` entry of a docker-archive.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerArchiveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    #[serde(default)]
    layers: Vec<String>,
}

/// Source of blobs while resolving images: the spooled tar or a layout directory.
trait ResolveSource {
    /// A small JSON blob (manifest, index, config).
    fn json(&mut self, digest: &Digest, what: &str) -> Result<Vec<u8>>;
    /// Makes sure a blob is in the sink (tar: it was spooled; dir: copy it).
    fn ensure(&mut self, digest: &Digest, what: &str) -> Result<()>;
}

struct SpoolSource<'a> {
    spool: &'a Spool,
}

impl ResolveSource for SpoolSource<'_> {
    fn json(&mut self, digest: &Digest, what: &str) -> Result<Vec<u8>> {
        self.spool.json_blob(digest, what).map(<[u8]>::to_vec)
    }

    fn ensure(&mut self, digest: &Digest, what: &str) -> Result<()> {
        if self.spool.seen.contains(digest) {
            Ok(())
        } else {
            Err(ImageError::MissingBlob {
                digest: digest.clone(),
                what: format!("{what}, named by the archive but not in it"),
            })
        }
    }
}

struct DirSource<'a> {
    blobs: BlobDir,
    sink: &'a mut dyn BlobWrite,
    copied: HashSet<Digest>,
}

impl ResolveSource for DirSource<'_> {
    fn json(&mut self, digest: &Digest, what: &str) -> Result<Vec<u8>> {
        let bytes = read_blob_bytes(&self.blobs, digest, what, MAX_METADATA_BLOB)?;
        self.ensure(digest, what)?;
        Ok(bytes)
    }

    fn ensure(&mut self, digest: &Digest, what: &str) -> Result<()> {
        if self.copied.contains(digest) {
            return Ok(());
        }
        let mut reader = self.blobs.open_blob(digest).map_err(|err| {
            if err.kind() == io::ErrorKind::NotFound {
                ImageError::MissingBlob {
                    digest: digest.clone(),
                    what: format!(
                        "{what}, named by the layout but not in {}",
                        self.blobs.root().display()
                    ),
                }
            } else {
                ImageError::io(format!("opening {what} {digest}"), err)
            }
        })?;
        self.sink.put_blob(&mut reader, Some(digest))?;
        self.copied.insert(digest.clone());
        Ok(())
    }
}

fn names_from_annotations(descriptor: &Descriptor) -> Result<(Vec<Reference>, Option<String>)> {
    let mut names = Vec::new();
    let mut bare = None;
    if let Some(annotations) = descriptor.annotations() {
        if let Some(full) = annotations.get(ANNOTATION_IMAGE_NAME) {
            names.push(Reference::parse(full)?);
        }
        if let Some(ref_name) = annotations.get(ANNOTATION_REF_NAME) {
            if ref_name.contains(['/', ':', '@']) {
                let parsed = Reference::parse(ref_name)?;
                if !names.contains(&parsed) {
                    names.push(parsed);
                }
            } else if names.is_empty() {
                bare = Some(ref_name.clone());
            }
        }
    }
    Ok((names, bare))
}

/// Resolves one `index.json` entry to an image, following indexes by platform.
fn resolve_oci_entry(
    source: &mut dyn ResolveSource,
    entry: &Descriptor,
    options: &ReadOptions,
) -> Result<LoadedImage> {
    let (names, bare_ref_name) = names_from_annotations(entry)?;
    let entry_type = entry.media_type().to_string();
    let bytes = source.json(entry.digest(), "manifest")?;
    let top = parse_manifest(&bytes, Some(&entry_type))?;
    let mut current = top.clone();
    let mut depth = 0;
    let manifest = loop {
        match current {
            Manifest::Image(doc) => break doc,
            Manifest::Index(index) => {
                depth += 1;
                if depth > 4 {
                    return Err(ImageError::InvalidManifest {
                        what: index.digest.to_string(),
                        why: "indexes nested more than 4 deep".into(),
                    });
                }
                let chosen = index.select(&options.platform)?;
                let child_type = chosen.media_type().to_string();
                let bytes = source.json(chosen.digest(), "platform manifest")?;
                current = parse_manifest(&bytes, Some(&child_type))?;
            }
        }
    };
    let config_bytes = source.json(manifest.config().digest(), "image config")?;
    let config = parse_config(&config_bytes)?;
    for (position, layer) in manifest.layers.iter().enumerate() {
        source.ensure(
            layer.descriptor.digest(),
            &format!("layer {} of {}", position + 1, manifest.digest),
        )?;
    }
    Ok(LoadedImage {
        names,
        bare_ref_name,
        top,
        manifest,
        config,
    })
}

fn parse_index_json(bytes: &[u8], what: &str) -> Result<ImageIndex> {
    serde_json::from_slice(bytes).map_err(|err| ImageError::InvalidArchive {
        what: what.to_string(),
        why: format!("index.json is not an OCI index: {err}"),
    })
}

fn resolve_oci(spool: &Spool, options: &ReadOptions) -> Result<Vec<LoadedImage>> {
    let index_bytes =
        spool
            .metadata
            .get("index.json")
            .ok_or_else(|| ImageError::InvalidArchive {
                what: "OCI layout".into(),
                why: "no index.json".into(),
            })?;
    let index = parse_index_json(index_bytes, "index.json")?;
    let mut source = SpoolSource { spool };
    index
        .manifests()
        .iter()
        .map(|entry| resolve_oci_entry(&mut source, entry, options))
        .collect()
}

fn resolve_docker(spool: &Spool, sink: &mut dyn BlobWrite) -> Result<Vec<LoadedImage>> {
    let bytes = spool
        .metadata
        .get("manifest.json")
        .ok_or_else(|| ImageError::InvalidArchive {
            what: "docker archive".into(),
            why: "no manifest.json".into(),
        })?;
    let entries: Vec<DockerArchiveEntry> =
        serde_json::from_slice(bytes).map_err(|err| ImageError::InvalidArchive {
            what: "manifest.json".into(),
            why: format!("not a docker-archive manifest list: {err}"),
        })?;
    // Manifests the archive carries (docker 25+ writes them), to keep their digests.
    let carried: Vec<ManifestDoc> = spool
        .json
        .values()
        .filter_map(|bytes| match parse_manifest(bytes, None) {
            Ok(Manifest::Image(doc)) => Some(doc),
            _ => None,
        })
        .collect();
    let mut images = Vec::new();
    for (position, entry) in entries.iter().enumerate() {
        let what = format!("manifest.json entry {}", position + 1);
        let config_member = spool.member(&entry.config, &format!("{what} Config"))?;
        let config_bytes = spool.json_blob(&config_member.digest, "image config")?;
        let config = parse_config(config_bytes)?;
        let diff_ids = config.diff_ids()?;
        if diff_ids.len() != entry.layers.len() {
            return Err(ImageError::InvalidArchive {
                what,
                why: format!(
                    "{} layers listed but the config has {} diff IDs",
                    entry.layers.len(),
                    diff_ids.len()
                ),
            });
        }
        let mut layers = Vec::new();
        for (index, (layer_path, diff_id)) in entry.layers.iter().zip(&diff_ids).enumerate() {
            let member = spool.member(layer_path, &format!("{what} layer {}", index + 1))?;
            if member.compression == LayerCompression::None && &member.digest != diff_id {
                return Err(ImageError::DigestMismatch {
                    what: format!(
                        "layer {layer_path} against diff ID {} in the config",
                        index + 1
                    ),
                    expected: diff_id.clone(),
                    actual: member.digest.clone(),
                });
            }
            layers.push(member.clone());
        }
        let existing = carried.iter().find(|doc| {
            doc.config().digest() == &config.digest
                && doc.layers.len() == layers.len()
                && doc
                    .layers
                    .iter()
                    .zip(&layers)
                    .all(|(layer, member)| layer.descriptor.digest() == &member.digest)
        });
        let manifest = match existing {
            Some(doc) => doc.clone(),
            None => {
                let generated = json!({
                    "schemaVersion": 2,
                    "mediaType": media_types::OCI_MANIFEST,
                    "config": {
                        "mediaType": media_types::OCI_CONFIG,
                        "digest": config.digest.to_string(),
                        "size": config.bytes.len(),
                    },
                    "layers": layers.iter().map(|member| json!({
                        "mediaType": member.compression.oci_media_type(),
                        "digest": member.digest.to_string(),
                        "size": member.size,
                    })).collect::<Vec<_>>(),
                });
                let bytes =
                    serde_json::to_vec(&generated).map_err(|err| ImageError::InvalidArchive {
                        what: what.clone(),
                        why: format!("cannot describe it as an OCI manifest: {err}"),
                    })?;
                sink.put_blob(&mut &bytes[..], Some(&sha256_digest(&bytes)))?;
                match parse_manifest(&bytes, Some(media_types::OCI_MANIFEST))? {
                    Manifest::Image(doc) => doc,
                    Manifest::Index(_) => {
                        return Err(ImageError::InvalidArchive {
                            what,
                            why: "generated manifest parsed as an index".into(),
                        });
                    }
                }
            }
        };
        let names = entry
            .repo_tags
            .iter()
            .flatten()
            .map(|tag| Reference::parse(tag))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        images.push(LoadedImage {
            names,
            bare_ref_name: None,
            top: Manifest::Image(manifest.clone()),
            manifest,
            config,
        });
    }
    Ok(images)
}

/// Wraps the input in a decompressor when the whole archive is gzip or zstd.
fn decompressed<'a, R: Read + 'a>(input: R) -> Result<Box<dyn Read + 'a>> {
    let mut buffered = BufReader::with_capacity(1 << 20, input);
    let head = buffered
        .fill_buf()
        .map_err(|err| ImageError::io("reading the archive", err))?;
    let compression = LayerCompression::sniff(head);
    compression
        .decompress(Box::new(buffered))
        .map_err(|err| ImageError::io("starting to decompress the archive", err))
}

/// Reads a docker-archive or OCI layout tar (detected from its contents; a
/// gzip/zstd-compressed tar is accepted as `docker load` accepts it), writing every
/// blob into `sink`. Members may come in any order; each is streamed to the sink
/// as it passes (verified against its name when that is a digest), so memory use
/// does not grow with layer size.
///
/// When `manifest.json` is present (any `docker save`, including docker 25+'s
/// OCI-shaped output) the images are those it lists; otherwise the `index.json`
/// entries of the OCI layout are. Blobs in the archive that no image uses are
/// still written to the sink (the store's garbage collection removes them).
pub fn read_archive<R: Read>(
    input: R,
    sink: &mut dyn BlobWrite,
    options: &ReadOptions,
) -> Result<LoadedArchive> {
    let mut archive = tar::Archive::new(decompressed(input)?);
    let mut spool = Spool::default();
    let entries = archive
        .entries()
        .map_err(|err| ImageError::io("reading the archive", err))?;
    for entry in entries {
        let mut entry =
            entry.map_err(|err| ImageError::io("reading the archive's next member", err))?;
        let raw_path = entry
            .path()
            .map_err(|err| ImageError::io("reading a member name", err))?
            .into_owned();
        let path = clean_member_path(&raw_path)?;
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            let target = entry
                .link_name()
                .map_err(|err| ImageError::io(format!("reading link target of {path}"), err))?
                .map(|target| target.to_string_lossy().into_owned())
                .unwrap_or_default();
            let base = if kind.is_symlink() {
                path.rsplit_once('/').map_or("", |(dir, _)| dir).to_string()
            } else {
                String::new()
            };
            if let Some(resolved) = resolve_relative(&base, &target) {
                spool.links.insert(path, resolved);
            }
            continue;
        }
        if !(kind.is_file() || kind == tar::EntryType::Continuous) {
            continue;
        }
        let size = entry.size();
        spool.add_member(path, size, &mut entry, sink)?;
    }
    let (format, images) = if spool.metadata.contains_key("manifest.json") {
        (ArchiveFormat::DockerArchive, resolve_docker(&spool, sink)?)
    } else if spool.metadata.contains_key("index.json") {
        (ArchiveFormat::OciLayout, resolve_oci(&spool, options)?)
    } else {
        return Err(ImageError::InvalidArchive {
            what: "input".into(),
            why: "it has neither manifest.json (docker save) nor index.json (OCI layout); is it an image archive?".into(),
        });
    };
    Ok(LoadedArchive { format, images })
}

/// Reads an OCI image layout directory, copying the blobs of the images its
/// `index.json` names (only those) into `sink`, each verified against its digest.
pub fn read_oci_dir(
    dir: &Path,
    sink: &mut dyn BlobWrite,
    options: &ReadOptions,
) -> Result<LoadedArchive> {
    let layout_path = dir.join("oci-layout");
    let layout = fs::read(&layout_path)
        .map_err(|err| ImageError::io(format!("reading {}", layout_path.display()), err))?;
    let layout: serde_json::Value =
        serde_json::from_slice(&layout).map_err(|err| ImageError::InvalidArchive {
            what: layout_path.display().to_string(),
            why: format!("not JSON: {err}"),
        })?;
    if layout
        .get("imageLayoutVersion")
        .and_then(|v| v.as_str())
        .is_none()
    {
        return Err(ImageError::InvalidArchive {
            what: layout_path.display().to_string(),
            why: "has no imageLayoutVersion".into(),
        });
    }
    let index_path = dir.join("index.json");
    let file = fs::File::open(&index_path)
        .map_err(|err| ImageError::io(format!("reading {}", index_path.display()), err))?;
    let bytes = read_bounded(
        &mut BufReader::new(file),
        MAX_METADATA_BLOB,
        &index_path.display().to_string(),
    )?;
    let index = parse_index_json(&bytes, &index_path.display().to_string())?;
    let mut source = DirSource {
        blobs: BlobDir::new(dir),
        sink,
        copied: HashSet::new(),
    };
    let images = index
        .manifests()
        .iter()
        .map(|entry| resolve_oci_entry(&mut source, entry, options))
        .collect::<Result<Vec<_>>>()?;
    Ok(LoadedArchive {
        format: ArchiveFormat::OciLayout,
        images,
    })
}

/// Tells which format a file or directory holds from its member names alone
/// (nothing is written anywhere). A directory must be an OCI layout.
pub fn sniff_archive_file(path: &Path) -> Result<ArchiveFormat> {
    let not_archive = |why: &str| ImageError::InvalidArchive {
        what: path.display().to_string(),
        why: why.to_string(),
    };
    if path.is_dir() {
        return if path.join("index.json").is_file() && path.join("oci-layout").is_file() {
            Ok(ArchiveFormat::OciLayout)
        } else {
            Err(not_archive("directory has no oci-layout and index.json"))
        };
    }
    let file = fs::File::open(path)
        .map_err(|err| ImageError::io(format!("opening {}", path.display()), err))?;
    let mut archive = tar::Archive::new(decompressed(file)?);
    let mut has_index = false;
    for entry in archive
        .entries()
        .map_err(|err| ImageError::io(format!("reading {}", path.display()), err))?
    {
        let entry =
            entry.map_err(|err| ImageError::io(format!("reading {}", path.display()), err))?;
        let name = entry
            .path()
            .map_err(|err| ImageError::io(format!("reading {}", path.display()), err))?
            .into_owned();
        match clean_member_path(&name)?.as_str() {
            "manifest.json" => return Ok(ArchiveFormat::DockerArchive),
            "index.json" => has_index = true,
            _ => {}
        }
    }
    if has_index {
        Ok(ArchiveFormat::OciLayout)
    } else {
        Err(not_archive("tar has neither manifest.json nor index.json"))
    }
}
