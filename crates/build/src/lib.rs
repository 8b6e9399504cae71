//! kiln's build engine: turns the frontend's typed stages into an image in
//! the store (stage graph, `--target` pruning, content-derived cache keys),
//! driving the sandbox (RUN) and snapshot (layers) crates.
//!
//! * [`engine`] — [`engine::build`]: solve the stages a target needs (a
//!   thread per stage, each waiting for the stages it uses, so independent
//!   stages run in parallel; the first failure cancels the rest), step by
//!   step, with the build cache, and write and tag the image;
//! * [`progress`] — progress events and BuildKit's `--progress=plain` output;
//! * [`copy`], [`fsview`] — COPY/ADD into a staging tree, and read-only
//!   lookups through a stack of layer directories;
//! * [`dockerignore`] reads `.dockerignore` / `<Dockerfile>.dockerignore`
//!   and matches paths exactly as Docker and BuildKit do;
//! * [`context`] walks a context directory with those rules (never following
//!   symlinks), records each entry's metadata, checksums contents with a
//!   persistent stat cache, and gives Merkle digests of subtrees and of the
//!   paths a COPY source pattern selects, for cache keys.
//!
//! It does not parse Dockerfiles itself (that is `kiln-dockerfile`), and uses
//! the sandbox and the store only through their public APIs.

pub mod archive;
pub mod context;
pub mod copy;
pub mod dockerignore;
pub mod engine;
pub mod fetch;
pub mod fsview;
pub mod progress;

pub use engine::{
    BuildError, BuildOptions, BuildOutcome, NamedContext, Secret, StageSize, build,
    export_filesystem,
};
pub use progress::{JsonProgress, PlainProgress, ProgressSink, QuietProgress};
