//! Image archives: `docker save` tars (docker-archive) and OCI image layouts, as a
//! directory or a tar, written and read in constant memory.
//!
//! Writing takes blobs from a [`BlobRead`](crate::blob::BlobRead) and streams a tar
//! sequentially. Reading streams a tar whose members may come in any order: every
//! blob-like member is spooled into a [`BlobWrite`](crate::blob::BlobWrite) as it
//! passes (verified against its name when the name is a digest), small JSON
//! documents are also kept in memory, and the images are resolved at the end.
//!
//! The docker-archive kiln writes is the layout of docker 25+: `manifest.json`
//! (Config/RepoTags/Layers) and `repositories` for classic `docker load` and
//! skopeo, plus `oci-layout`, `index.json` and `blobs/sha256/` so the same file is
//! also an OCI layout. Layers in it are uncompressed tars (as every `docker save`
//! writes them), so their blob digests are the config's diff IDs.

mod read;
mod write;

use crate::digest::Digest;
use crate::manifest::{ConfigDoc, Manifest, ManifestDoc, Platform};
use crate::reference::Reference;

pub use read::{read_archive, read_oci_dir, sniff_archive_file};
pub use write::{write_docker_archive, write_oci_archive, write_oci_dir};

/// `index.json` annotation for a reference's tag (or full name), read by skopeo
/// and umoci (`oci:DIR:tag`).
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// `index.json` annotation for a full image name, written by docker 25+/containerd.
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";

/// Which kind of archive a tar or directory holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArchiveFormat {
    /// `docker save` output: `manifest.json` names the images (docker 25+ output is
    /// also an OCI layout, and is read through its `manifest.json`).
    DockerArchive,
    /// OCI image layout: `oci-layout`, `index.json`, `blobs/`.
    OciLayout,
}

/// One image to write into an archive.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportImage {
    /// Digest of its manifest or index in the blob source.
    pub manifest_digest: Digest,
    /// Names to record (`RepoTags` / `index.json` annotations). May be empty.
    pub names: Vec<Reference>,
}

/// Options for writing archives.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteOptions {
    /// For an image whose manifest is an index: the platform a docker-archive
    /// holds (docker-archive is single-platform). OCI output keeps the whole index.
    pub platform: Platform,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            platform: Platform::host(),
        }
    }
}

/// Options for reading archives.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadOptions {
    /// For an entry that is an index: which platform's image to resolve.
    pub platform: Platform,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            platform: Platform::host(),
        }
    }
}

/// One image found in an archive. All of its blobs (the manifest, the index if
/// any, the config and the layers) have been written to the blob sink.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedImage {
    /// Names the archive gives it (RepoTags, or index.json annotations that are
    /// full references). May be empty (an untagged `docker save` of an ID).
    pub names: Vec<Reference>,
    /// `org.opencontainers.image.ref.name` when it is a bare tag, not a full
    /// reference (skopeo's `oci:DIR:latest`); the caller decides what repository
    /// it belongs to.
    pub bare_ref_name: Option<String>,
    /// The top document the archive names: the image manifest itself or an index.
    /// For a classic docker-archive (no manifest in it) this is an OCI manifest
    /// kiln generated, also written to the sink.
    pub top: Manifest,
    /// The image manifest for the chosen platform (same as `top` when no index).
    pub manifest: ManifestDoc,
    /// Its config.
    pub config: ConfigDoc,
}

/// What an archive held.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedArchive {
    /// Its format.
    pub format: ArchiveFormat,
    /// Its images, in the archive's order.
    pub images: Vec<LoadedImage>,
}
