//! kiln's build engine: it will turn the frontend's typed stages into solved
//! results (stage graph, `--target` pruning, content-derived cache keys,
//! parallel solve), driving the sandbox and snapshot crates.
//!
//! **For now only the build-context part exists**:
//! * [`dockerignore`] reads `.dockerignore` / `<Dockerfile>.dockerignore`
//!   and matches paths exactly as Docker and BuildKit do;
//! * [`context`] walks a context directory with those rules (never following
//!   symlinks), records each entry's metadata, checksums contents with a
//!   persistent stat cache, and gives Merkle digests of subtrees and of the
//!   paths a COPY source pattern selects, for cache keys.
//!
//! It does not parse Dockerfiles (that is `kiln-dockerfile`) and will not know
//! how a sandbox or the store are implemented.

pub mod context;
pub mod dockerignore;
