//! Where blobs came from: for each blob, the repositories (on which
//! registries) it was pulled from or pushed to. A push uses this to mount a
//! blob from another repository of the same registry instead of uploading it
//! (containerd keeps the same as `distribution.source` labels). Kept in the
//! store's key-value cache: losing it only costs an upload.

use kiln_store::{Digest, Store};

const KEY_PREFIX: &str = "registry-source:";
/// Repositories remembered per blob (the most recent ones).
const MAX_SOURCES: usize = 8;

/// The `registry/repository` names `digest` is known to be in.
pub fn sources(store: &Store, digest: &Digest) -> Vec<String> {
    match store.cache_get(&format!("{KEY_PREFIX}{digest}")) {
        Ok(Some(text)) => serde_json::from_str(&text).unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// Records that `digest` is in `repository` on `registry`. Best effort: a
/// failure to record is logged, never an error of the pull or push.
pub fn remember_source(store: &Store, digest: &Digest, registry: &str, repository: &str) {
    let name = format!("{registry}/{repository}");
    let mut known = sources(store, digest);
    known.retain(|existing| *existing != name);
    known.insert(0, name);
    known.truncate(MAX_SOURCES);
    let text = serde_json::to_string(&known).unwrap_or_default();
    if let Err(e) = store.cache_put(&format!("{KEY_PREFIX}{digest}"), &text) {
        tracing::debug!("recording the source of {digest}: {e}");
    }
}

/// A repository on `registry` other than `repository` that has `digest`.
pub fn mount_source(
    store: &Store,
    digest: &Digest,
    registry: &str,
    repository: &str,
) -> Option<String> {
    let prefix = format!("{registry}/");
    sources(store, digest)
        .into_iter()
        .filter_map(|name| name.strip_prefix(&prefix).map(str::to_string))
        .find(|other| other != repository)
}
