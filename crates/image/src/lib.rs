//! Image model: OCI config, manifest and index, image references, docker-archive
//! and OCI layout read/write. Knows nothing of how blobs are stored on disk: the
//! store plugs in through [`blob::BlobRead`] and [`blob::BlobWrite`].
//!
//! Start with [`reference::Reference`] (names as docker parses them),
//! [`manifest::parse_manifest`] and [`manifest::parse_config`] (OCI and Docker
//! schema2 into one model, exact bytes kept), and the [`archive`] module
//! (`docker save`/`docker load` and OCI image layout, streamed in constant memory).

pub mod archive;
pub mod blob;
pub mod digest;
pub mod error;
pub mod manifest;
pub mod reference;

pub use archive::{
    ArchiveFormat, ExportImage, LoadedArchive, LoadedImage, ReadOptions, WriteOptions,
    read_archive, read_oci_dir, sniff_archive_file, write_docker_archive, write_oci_archive,
    write_oci_dir,
};
pub use blob::{BlobDir, BlobRead, BlobWrite, MemoryBlobs};
pub use digest::{Digest, sha256_digest};
pub use error::{ImageError, Result};
pub use manifest::{
    ConfigDoc, IndexDoc, Layer, LayerCompression, Manifest, ManifestDoc, ManifestFlavor, Platform,
    parse_config, parse_manifest, select_platform,
};
pub use reference::{Reference, ReferenceError};

/// The OCI image-spec types this crate builds on.
pub use oci_spec::image as oci;
