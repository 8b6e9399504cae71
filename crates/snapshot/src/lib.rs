//! kiln-snapshot: turns directories into layer tars and layer tars into directories.
//!
//! - [`apply_layer`] unpacks a (gzip, zstd or plain) layer tar into a directory without
//!   ever creating, changing or following anything outside it, honouring OCI whiteouts
//!   either by deleting (flattened rootfs) or by writing overlayfs whiteouts (a lower dir
//!   for overlay mounts).
//! - [`create_layer`] writes a deterministic layer tar from a directory or from an
//!   overlayfs upper dir (overlay whiteouts and opaque dirs become OCI whiteouts).
//! - [`compress`] / [`CompressWriter`] compress layers on all cores (pigz-style parallel
//!   gzip, multi-threaded zstd) computing the blob digest and the diff_id in one pass;
//!   [`decompress`] sniffs the format.
//!
//! It knows nothing of registries, manifests, image configs or Dockerfiles.
//!
//! ```no_run
//! use kiln_snapshot::{
//!     apply_layer, create_layer_compressed, ApplyMode, ApplyOptions, Compression,
//!     CreateOptions, DiffKind,
//! };
//! use std::path::Path;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A RUN step's overlay upper dir -> a gzip layer blob (digest for the manifest,
//! // diff_id for the image config), reproducible when SOURCE_DATE_EPOCH is set.
//! let blob_file = std::fs::File::create("/tmp/layer.tar.gz")?;
//! let (stats, blob) = create_layer_compressed(
//!     Path::new("/var/lib/kiln/tmp/upper"),
//!     DiffKind::OverlayUpper,
//!     Compression::GZIP_DEFAULT,
//!     blob_file,
//!     &CreateOptions::from_env(),
//! )?;
//! println!("{} entries, blob {} ({} bytes), diff_id {}", stats.entries, blob.digest, blob.size, blob.diff_id);
//!
//! // A pulled layer -> a snapshot dir usable as an overlayfs lower dir; check its diff_id.
//! let layer = std::fs::File::open("/tmp/layer.tar.gz")?;
//! let applied = apply_layer(
//!     std::io::BufReader::new(layer),
//!     Path::new("/var/lib/kiln/snapshots/1"),
//!     &ApplyOptions { mode: ApplyMode::Overlay, ..ApplyOptions::default() },
//! )?;
//! assert_eq!(applied.diff_id, blob.diff_id);
//! # Ok(())
//! # }
//! ```

mod apply;
mod compress;
mod create;
mod digest;
mod fsutil;

pub use apply::{ApplyError, ApplyMode, ApplyOptions, ApplyStats, apply_layer, entry_content_size};
pub use compress::{
    CompressError, CompressWriter, CompressedBlob, Compression, CompressionParseError, Format,
    compress, decompress, sniff,
};
pub use create::{
    CreateError, CreateOptions, DiffKind, LayerStats, TarCounts, XattrPolicy, create_layer,
    create_layer_compressed, write_layer_tar,
};
pub use digest::{Digest, DigestParseError, HashingReader, HashingWriter};

/// Prefix of an OCI whiteout entry: `dir/.wh.name` deletes `dir/name` from lower layers.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// Name of the OCI opaque-directory marker: `dir/.wh..wh..opq` hides everything lower
/// layers had in `dir`.
pub const WHITEOUT_OPAQUE: &str = ".wh..wh..opq";
