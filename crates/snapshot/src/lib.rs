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

mod apply;
mod compress;
mod create;
mod digest;
mod fsutil;

pub use apply::{ApplyError, ApplyMode, ApplyOptions, ApplyStats, apply_layer};
pub use compress::{
    CompressError, CompressWriter, CompressedBlob, Compression, Format, compress, decompress, sniff,
};
pub use create::{
    CreateError, CreateOptions, DiffKind, LayerStats, XattrPolicy, create_layer,
    create_layer_compressed,
};
pub use digest::{Digest, DigestParseError, HashingReader, HashingWriter};

/// Prefix of an OCI whiteout entry: `dir/.wh.name` deletes `dir/name` from lower layers.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// Name of the OCI opaque-directory marker: `dir/.wh..wh..opq` hides everything lower
/// layers had in `dir`.
pub const WHITEOUT_OPAQUE: &str = ".wh..wh..opq";
