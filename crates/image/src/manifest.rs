//! Manifests, indexes and configs: OCI and Docker schema2 parsed into one model.
//!
//! Docker schema2 manifests and manifest lists have the same JSON shape as OCI
//! manifests and indexes; only the media types differ. Both parse into the
//! `oci-spec` types, and every parsed document keeps the exact bytes it was read
//! from, because digests are over bytes and re-serialising would change them.

use std::fmt;
use std::str::FromStr;

use oci_spec::image::{Arch, Descriptor, ImageConfiguration, ImageIndex, ImageManifest, Os};
use serde::Deserialize;

use crate::digest::{Digest, sha256_digest};
use crate::error::{ImageError, Result};

/// Media types kiln reads and writes.
pub mod media_types {
    /// OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// OCI image config.
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// OCI uncompressed layer.
    pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
    /// OCI gzip layer.
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    /// OCI zstd layer.
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    /// OCI non-distributable layers (deprecated, still readable).
    pub const OCI_LAYER_NONDIST_TAR: &str =
        "application/vnd.oci.image.layer.nondistributable.v1.tar";
    /// OCI non-distributable gzip layer.
    pub const OCI_LAYER_NONDIST_GZIP: &str =
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
    /// OCI non-distributable zstd layer.
    pub const OCI_LAYER_NONDIST_ZSTD: &str =
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";
    /// Docker schema2 manifest.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker manifest list.
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    /// Docker image config.
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    /// Docker gzip layer.
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    /// Docker uncompressed layer (seen in some tools' output).
    pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
    /// Docker foreign (non-distributable) gzip layer.
    pub const DOCKER_LAYER_FOREIGN_GZIP: &str =
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
    /// Docker schema1 (unsupported; named for the error message).
    pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
    /// Docker schema1 signed (unsupported).
    pub const DOCKER_SCHEMA1_SIGNED: &str =
        "application/vnd.docker.distribution.manifest.v1+prettyjws";
}

/// Which family a manifest or index belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ManifestFlavor {
    /// OCI image-spec media types.
    Oci,
    /// Docker schema2 media types.
    Docker,
}

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LayerCompression {
    /// A plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

impl LayerCompression {
    /// The compression a layer media type declares; `None` for a media type that
    /// is not a layer type kiln knows.
    pub fn from_media_type(media_type: &str) -> Option<Self> {
        use media_types::*;
        match media_type {
            OCI_LAYER_TAR | OCI_LAYER_NONDIST_TAR | DOCKER_LAYER_TAR => Some(Self::None),
            OCI_LAYER_GZIP
            | OCI_LAYER_NONDIST_GZIP
            | DOCKER_LAYER_GZIP
            | DOCKER_LAYER_FOREIGN_GZIP => Some(Self::Gzip),
            OCI_LAYER_ZSTD | OCI_LAYER_NONDIST_ZSTD => Some(Self::Zstd),
            _ => None,
        }
    }

    /// Detects compression from a blob's first bytes (gzip `1f 8b`, zstd
    /// `28 b5 2f fd`); anything else is taken as a plain tar.
    pub fn sniff(first_bytes: &[u8]) -> Self {
        if first_bytes.starts_with(&[0x1f, 0x8b]) {
            Self::Gzip
        } else if first_bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Self::Zstd
        } else {
            Self::None
        }
    }

    /// The OCI layer media type for this compression.
    pub fn oci_media_type(self) -> &'static str {
        match self {
            Self::None => media_types::OCI_LAYER_TAR,
            Self::Gzip => media_types::OCI_LAYER_GZIP,
            Self::Zstd => media_types::OCI_LAYER_ZSTD,
        }
    }

    /// Wraps a reader of the (possibly compressed) blob into a reader of the tar.
    pub fn decompress<'a>(
        self,
        reader: Box<dyn std::io::Read + 'a>,
    ) -> std::io::Result<Box<dyn std::io::Read + 'a>> {
        Ok(match self {
            Self::None => reader,
            Self::Gzip => Box::new(flate2::read::MultiGzDecoder::new(std::io::BufReader::new(
                reader,
            ))),
            Self::Zstd => Box::new(zstd::stream::read::Decoder::new(reader)?),
        })
    }
}

/// One layer of an image manifest, with its compression resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// The descriptor exactly as the manifest has it.
    pub descriptor: Descriptor,
    /// Compression, from the media type.
    pub compression: LayerCompression,
}

/// An image manifest (OCI or Docker schema2) and the bytes it was parsed from.
#[derive(Debug, Clone, PartialEq)]
pub struct ManifestDoc {
    /// sha256 of `bytes`.
    pub digest: Digest,
    /// The exact bytes read.
    pub bytes: Vec<u8>,
    /// OCI or Docker media types.
    pub flavor: ManifestFlavor,
    /// The parsed manifest.
    pub manifest: ImageManifest,
    /// Layers in order, base first.
    pub layers: Vec<Layer>,
}

impl ManifestDoc {
    /// The config descriptor.
    pub fn config(&self) -> &Descriptor {
        self.manifest.config()
    }

    /// Media type of the manifest itself.
    pub fn media_type(&self) -> &'static str {
        match self.flavor {
            ManifestFlavor::Oci => media_types::OCI_MANIFEST,
            ManifestFlavor::Docker => media_types::DOCKER_MANIFEST,
        }
    }
}

/// An image index (OCI) or manifest list (Docker) and its bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexDoc {
    /// sha256 of `bytes`.
    pub digest: Digest,
    /// The exact bytes read.
    pub bytes: Vec<u8>,
    /// OCI or Docker media types.
    pub flavor: ManifestFlavor,
    /// The parsed index.
    pub index: ImageIndex,
}

impl IndexDoc {
    /// Media type of the index itself.
    pub fn media_type(&self) -> &'static str {
        match self.flavor {
            ManifestFlavor::Oci => media_types::OCI_INDEX,
            ManifestFlavor::Docker => media_types::DOCKER_MANIFEST_LIST,
        }
    }

    /// The entry for `platform` (see [`select_platform`]).
    pub fn select(&self, platform: &Platform) -> Result<&Descriptor> {
        select_platform(&self.index, self.digest.as_ref(), platform)
    }
}

/// Either kind of manifest document.
// Not boxed: documents are few and short-lived, and callers match on them.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Manifest {
    /// A single-platform image.
    Image(ManifestDoc),
    /// An index of images.
    Index(IndexDoc),
}

impl Manifest {
    /// Digest of the document bytes.
    pub fn digest(&self) -> &Digest {
        match self {
            Manifest::Image(doc) => &doc.digest,
            Manifest::Index(doc) => &doc.digest,
        }
    }

    /// The exact bytes.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Manifest::Image(doc) => &doc.bytes,
            Manifest::Index(doc) => &doc.bytes,
        }
    }

    /// Media type of the document.
    pub fn media_type(&self) -> &'static str {
        match self {
            Manifest::Image(doc) => doc.media_type(),
            Manifest::Index(doc) => doc.media_type(),
        }
    }
}

/// The few fields needed to tell what a JSON document is before parsing it fully.
#[derive(Deserialize)]
struct Probe {
    #[serde(rename = "schemaVersion")]
    schema_version: Option<serde_json::Value>,
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    manifests: Option<serde_json::Value>,
    config: Option<serde_json::Value>,
    layers: Option<serde_json::Value>,
}

fn is_index_type(media_type: &str) -> bool {
    matches!(
        media_type,
        media_types::OCI_INDEX | media_types::DOCKER_MANIFEST_LIST
    )
}

fn is_known_manifest_type(media_type: &str) -> bool {
    matches!(
        media_type,
        media_types::OCI_INDEX
            | media_types::DOCKER_MANIFEST_LIST
            | media_types::OCI_MANIFEST
            | media_types::DOCKER_MANIFEST
    )
}

/// Parses a manifest, index or manifest list from its exact bytes.
///
/// `declared_media_type` is the type its descriptor (or registry) gave. When the
/// document also has a `mediaType` field the two must agree (an OCI/Docker
/// mix-up of the same kind is tolerated, the document's word wins); when neither says,
/// the shape decides (`manifests` → index, `config` and `layers` → manifest).
/// Never panics, whatever the bytes.
pub fn parse_manifest(bytes: &[u8], declared_media_type: Option<&str>) -> Result<Manifest> {
    let digest = sha256_digest(bytes);
    let what = digest.to_string();
    let bad = |why: String| ImageError::InvalidManifest {
        what: what.clone(),
        why,
    };
    let probe: Probe =
        serde_json::from_slice(bytes).map_err(|err| bad(format!("not a JSON manifest: {err}")))?;
    let media_type = probe
        .media_type
        .as_deref()
        .or(declared_media_type)
        .map(str::to_string);
    // Some tools label a Docker schema2 manifest with the OCI type in the
    // descriptor (or the reverse); tolerate that, but never an index described
    // as a manifest or the other way round.
    if let (Some(declared), Some(inner)) = (declared_media_type, probe.media_type.as_deref())
        && declared != inner
        && (is_index_type(declared) != is_index_type(inner)
            || !is_known_manifest_type(declared)
            || !is_known_manifest_type(inner))
    {
        return Err(bad(format!(
            "descriptor says media type `{declared}` but the document says `{inner}`"
        )));
    }
    let schema_version = probe
        .schema_version
        .as_ref()
        .and_then(serde_json::Value::as_u64);
    if schema_version == Some(1)
        || matches!(
            media_type.as_deref(),
            Some(media_types::DOCKER_SCHEMA1 | media_types::DOCKER_SCHEMA1_SIGNED)
        )
    {
        return Err(bad(
            "Docker schema1 manifests are not supported; re-push the image with a current docker or skopeo".into(),
        ));
    }
    if schema_version != Some(2) {
        return Err(bad(format!(
            "schemaVersion must be 2, found {}",
            probe
                .schema_version
                .map_or_else(|| "none".to_string(), |value| value.to_string())
        )));
    }
    let is_index = match media_type.as_deref() {
        Some(media_types::OCI_INDEX | media_types::DOCKER_MANIFEST_LIST) => true,
        Some(media_types::OCI_MANIFEST | media_types::DOCKER_MANIFEST) => false,
        Some(other) => {
            return Err(ImageError::UnsupportedMediaType {
                media_type: other.to_string(),
                what: format!("manifest {what}"),
            });
        }
        None if probe.manifests.is_some() => true,
        None if probe.config.is_some() && probe.layers.is_some() => false,
        None => {
            return Err(bad(
                "neither an index (no `manifests`) nor an image manifest (no `config` and `layers`)".into(),
            ));
        }
    };
    let flavor = match media_type.as_deref() {
        Some(media_types::DOCKER_MANIFEST | media_types::DOCKER_MANIFEST_LIST) => {
            ManifestFlavor::Docker
        }
        _ => ManifestFlavor::Oci,
    };
    if is_index {
        let index: ImageIndex =
            serde_json::from_slice(bytes).map_err(|err| bad(format!("bad index: {err}")))?;
        return Ok(Manifest::Index(IndexDoc {
            digest,
            bytes: bytes.to_vec(),
            flavor,
            index,
        }));
    }
    let manifest: ImageManifest =
        serde_json::from_slice(bytes).map_err(|err| bad(format!("bad image manifest: {err}")))?;
    let config_type = manifest.config().media_type().to_string();
    if !matches!(
        config_type.as_str(),
        media_types::OCI_CONFIG | media_types::DOCKER_CONFIG
    ) {
        return Err(ImageError::UnsupportedMediaType {
            media_type: config_type,
            what: format!("config of manifest {what} (not a container image; an artifact?)"),
        });
    }
    let mut layers = Vec::with_capacity(manifest.layers().len());
    for (position, descriptor) in manifest.layers().iter().enumerate() {
        let layer_type = descriptor.media_type().to_string();
        let compression = LayerCompression::from_media_type(&layer_type).ok_or_else(|| {
            ImageError::UnsupportedMediaType {
                media_type: layer_type.clone(),
                what: format!("layer {} of manifest {what}", position + 1),
            }
        })?;
        layers.push(Layer {
            descriptor: descriptor.clone(),
            compression,
        });
    }
    Ok(Manifest::Image(ManifestDoc {
        digest,
        bytes: bytes.to_vec(),
        flavor,
        manifest,
        layers,
    }))
}

/// An image config and the bytes it was parsed from.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigDoc {
    /// sha256 of `bytes` (docker's image ID).
    pub digest: Digest,
    /// The exact bytes read.
    pub bytes: Vec<u8>,
    /// The parsed config.
    pub config: ImageConfiguration,
}

impl ConfigDoc {
    /// The layer diff IDs (digests of the uncompressed layer tars), base first.
    pub fn diff_ids(&self) -> Result<Vec<Digest>> {
        self.config
            .rootfs()
            .diff_ids()
            .iter()
            .map(|text| {
                Digest::from_str(text).map_err(|err| ImageError::InvalidConfig {
                    what: self.digest.to_string(),
                    why: format!("rootfs.diff_ids has `{text}`: {err}"),
                })
            })
            .collect()
    }
}

/// Parses an image config (OCI or Docker; they are the same JSON). Never panics.
pub fn parse_config(bytes: &[u8]) -> Result<ConfigDoc> {
    let digest = sha256_digest(bytes);
    let config: ImageConfiguration =
        serde_json::from_slice(bytes).map_err(|err| ImageError::InvalidConfig {
            what: digest.to_string(),
            why: err.to_string(),
        })?;
    Ok(ConfigDoc {
        digest,
        bytes: bytes.to_vec(),
        config,
    })
}

/// A platform to select from an index: `os/arch[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// GOARCH spelling: `amd64`, `arm64`, `arm`.
    pub architecture: String,
    /// `v7`, `v8`; None matches any (with arm64 `v8` preferred as docker does).
    pub variant: Option<String>,
}

impl Platform {
    /// The platform this binary runs on, in GOOS/GOARCH spelling.
    pub fn host() -> Self {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "arm" => "arm",
            "powerpc64" => "ppc64le",
            "s390x" => "s390x",
            "riscv64" => "riscv64",
            other => other,
        };
        Platform {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: None,
        }
    }

    /// Parses `linux/amd64`, `linux/arm64/v8`, `linux/arm/v7`.
    pub fn parse(text: &str) -> Result<Self> {
        let parts: Vec<&str> = text.split('/').collect();
        let valid = |part: &&str| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
        };
        match parts.as_slice() {
            [os, arch] if valid(os) && valid(arch) => Ok(Platform {
                os: os.to_lowercase(),
                architecture: normalize_arch(arch),
                variant: None,
            }),
            [os, arch, variant] if valid(os) && valid(arch) && valid(variant) => Ok(Platform {
                os: os.to_lowercase(),
                architecture: normalize_arch(arch),
                variant: Some(variant.to_lowercase()),
            }),
            _ => Err(ImageError::InvalidManifest {
                what: "platform".into(),
                why: format!(
                    "`{text}` is not os/arch[/variant], e.g. linux/amd64 or linux/arm64/v8"
                ),
            }),
        }
    }
}

fn normalize_arch(arch: &str) -> String {
    match arch.to_lowercase().as_str() {
        "x86_64" | "x86-64" => "amd64".into(),
        "aarch64" => "arm64".into(),
        "i386" => "386".into(),
        other => other.into(),
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

fn os_name(os: &Os) -> String {
    os.to_string()
}

fn arch_name(arch: &Arch) -> String {
    arch.to_string()
}

/// Picks the manifest for `wanted` from an index, as containerd's platform
/// matcher does for the common cases: os and architecture must match; a wanted
/// variant must match (arm64's `v8` also matches an entry without variant); with
/// no wanted variant the first entry of that os/arch wins. Entries without a
/// platform (attestations, unknown) are skipped.
pub fn select_platform<'a>(
    index: &'a ImageIndex,
    index_name: &str,
    wanted: &Platform,
) -> Result<&'a Descriptor> {
    let mut fallback = None;
    for descriptor in index.manifests() {
        let Some(platform) = descriptor.platform() else {
            continue;
        };
        if os_name(platform.os()) != wanted.os
            || normalize_arch(&arch_name(platform.architecture())) != wanted.architecture
        {
            continue;
        }
        let variant = platform.variant().as_deref();
        match (&wanted.variant, variant) {
            (None, _) => return Ok(descriptor),
            (Some(want), Some(have)) if want == have => return Ok(descriptor),
            (Some(want), None) if wanted.architecture == "arm64" && want == "v8" => {
                fallback.get_or_insert(descriptor);
            }
            _ => {}
        }
    }
    fallback.ok_or_else(|| ImageError::NoMatchingPlatform {
        wanted: wanted.to_string(),
        index: index_name.to_string(),
        available: index
            .manifests()
            .iter()
            .filter_map(|descriptor| descriptor.platform().as_ref())
            .map(|platform| {
                let mut text = format!(
                    "{}/{}",
                    os_name(platform.os()),
                    arch_name(platform.architecture())
                );
                if let Some(variant) = platform.variant() {
                    text.push('/');
                    text.push_str(variant);
                }
                text
            })
            .collect::<Vec<_>>()
            .join(", "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
    const D3: &str = "sha256:3333333333333333333333333333333333333333333333333333333333333333";

    fn docker_manifest() -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
            "config":{{"mediaType":"application/vnd.docker.container.image.v1+json","size":1469,"digest":"{D1}"}},
            "layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":2,"digest":"{D2}"}},
                      {{"mediaType":"application/vnd.oci.image.layer.v1.tar+zstd","size":3,"digest":"{D3}"}},
                      {{"mediaType":"application/vnd.oci.image.layer.v1.tar","size":4,"digest":"{D3}"}}]}}"#
        )
    }

    #[test]
    fn docker_schema2_manifest_normalises_with_exact_bytes() {
        let text = docker_manifest();
        let Manifest::Image(doc) = parse_manifest(text.as_bytes(), None).unwrap() else {
            panic!("expected an image manifest");
        };
        assert_eq!(doc.flavor, ManifestFlavor::Docker);
        assert_eq!(doc.bytes, text.as_bytes());
        assert_eq!(doc.digest, sha256_digest(text.as_bytes()));
        assert_eq!(doc.config().digest().to_string(), D1);
        let kinds: Vec<_> = doc.layers.iter().map(|layer| layer.compression).collect();
        assert_eq!(
            kinds,
            [
                LayerCompression::Gzip,
                LayerCompression::Zstd,
                LayerCompression::None
            ]
        );
        assert_eq!(doc.media_type(), media_types::DOCKER_MANIFEST);
    }

    #[test]
    fn oci_manifest_without_media_type_is_recognised_by_shape() {
        let text = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","size":1,"digest":"{D1}"}},"layers":[]}}"#
        );
        let manifest = parse_manifest(text.as_bytes(), None).unwrap();
        assert!(matches!(manifest, Manifest::Image(ref doc) if doc.flavor == ManifestFlavor::Oci));
        let err = parse_manifest(text.as_bytes(), Some(media_types::OCI_INDEX));
        assert!(err.is_err(), "an image manifest is not an index");
        let docker = docker_manifest();
        let mislabelled = parse_manifest(docker.as_bytes(), Some(media_types::OCI_MANIFEST));
        assert!(
            matches!(mislabelled, Ok(Manifest::Image(ref doc)) if doc.flavor == ManifestFlavor::Docker),
            "a Docker manifest labelled OCI by its descriptor is still read"
        );
        let as_index = parse_manifest(docker.as_bytes(), Some(media_types::DOCKER_MANIFEST_LIST));
        assert!(
            as_index.is_err(),
            "a manifest labelled as a list is refused"
        );
    }

    fn manifest_list() -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[
              {{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","size":10,"digest":"{D1}","platform":{{"architecture":"arm","os":"linux","variant":"v7"}}}},
              {{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","size":10,"digest":"{D2}","platform":{{"architecture":"arm64","os":"linux"}}}},
              {{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","size":10,"digest":"{D3}","platform":{{"architecture":"amd64","os":"linux"}}}},
              {{"mediaType":"application/vnd.oci.image.manifest.v1+json","size":10,"digest":"{D1}","platform":{{"architecture":"unknown","os":"unknown"}}}}
            ]}}"#
        )
    }

    #[test]
    fn manifest_list_selects_platform() {
        let Manifest::Index(index) = parse_manifest(manifest_list().as_bytes(), None).unwrap()
        else {
            panic!("expected an index");
        };
        assert_eq!(index.flavor, ManifestFlavor::Docker);
        let pick = |text: &str| {
            index
                .select(&Platform::parse(text).unwrap())
                .map(|d| d.digest().to_string())
        };
        assert_eq!(pick("linux/amd64").unwrap(), D3);
        assert_eq!(pick("linux/x86_64").unwrap(), D3);
        assert_eq!(pick("linux/arm/v7").unwrap(), D1);
        assert_eq!(
            pick("linux/arm64/v8").unwrap(),
            D2,
            "arm64 v8 matches an entry without variant"
        );
        let err = pick("linux/s390x").unwrap_err().to_string();
        assert!(
            err.contains("linux/s390x") && err.contains("linux/arm/v7"),
            "{err}"
        );
        assert_eq!(Platform::host().to_string(), "linux/amd64");
    }

    #[test]
    fn schema1_and_unknown_types_are_refused_with_reasons() {
        let schema1 = br#"{"schemaVersion":1,"name":"x","tag":"y","fsLayers":[]}"#;
        let err = parse_manifest(schema1, None).unwrap_err().to_string();
        assert!(err.contains("schema1"), "{err}");
        let helm = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.cncf.helm.config.v1+json","size":1,"digest":"{D1}"}},"layers":[]}}"#
        );
        let err = parse_manifest(helm.as_bytes(), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("helm"), "{err}");
        let odd_layer = docker_manifest().replace("diff.tar.gzip", "diff.tar.brotli");
        let err = parse_manifest(odd_layer.as_bytes(), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("layer 1") && err.contains("brotli"), "{err}");
        assert!(parse_manifest(b"", None).is_err());
        assert!(parse_manifest(b"[]", None).is_err());
    }

    #[test]
    fn docker_config_with_nulls_parses() {
        let config = br#"{"architecture":"amd64","config":{"Hostname":"","Env":["PATH=/bin"],"Cmd":null,"Entrypoint":null,"Volumes":null,"ExposedPorts":{"80/tcp":{}},"OnBuild":null,"Labels":null},"container_config":{"Cmd":["/bin/sh"]},"created":"2024-01-01T00:00:00Z","docker_version":"20.10.24","history":[{"created":"2024-01-01T00:00:00Z","created_by":"x","empty_layer":true}],"os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:2222222222222222222222222222222222222222222222222222222222222222"]}}"#;
        let doc = parse_config(config).unwrap();
        assert_eq!(doc.diff_ids().unwrap()[0].to_string(), D2);
        assert_eq!(doc.digest, sha256_digest(config));
        let ports = doc
            .config
            .config()
            .as_ref()
            .and_then(|c| c.exposed_ports().clone());
        assert_eq!(ports, Some(vec!["80/tcp".to_string()]));
    }

    #[test]
    fn compression_sniffing_and_decompression() {
        use std::io::{Read, Write};
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gzip.write_all(b"tar bytes").unwrap();
        let gz = gzip.finish().unwrap();
        let zst = zstd::encode_all(&b"tar bytes"[..], 1).unwrap();
        for (bytes, kind) in [
            (gz, LayerCompression::Gzip),
            (zst, LayerCompression::Zstd),
            (b"tar bytes".to_vec(), LayerCompression::None),
        ] {
            assert_eq!(LayerCompression::sniff(&bytes), kind);
            let mut out = Vec::new();
            kind.decompress(Box::new(&bytes[..]))
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, b"tar bytes");
        }
    }
}
