//! Progress events of pulls and pushes, for the CLI to render (lines like
//! docker's, or progress bars on a terminal). Called from several download
//! threads at once.

/// What a pull or push is doing.
#[derive(Debug, Clone, Copy)]
pub enum ProgressEvent<'a> {
    /// An index was resolved to the platform's manifest.
    PlatformSelected {
        index: &'a str,
        manifest: &'a str,
        platform: &'a str,
    },
    /// The store already had this blob (pull) or the registry did (push).
    BlobExists { digest: &'a str },
    /// A blob transfer starts.
    BlobStart { digest: &'a str, size: u64 },
    /// `done` bytes of the blob transferred so far.
    BlobBytes { digest: &'a str, done: u64 },
    /// The blob is verified and stored (pull) or uploaded (push).
    BlobDone { digest: &'a str },
    /// A transfer was cut short after `done` bytes and is tried again from there.
    BlobRetry {
        digest: &'a str,
        done: u64,
        why: &'a str,
    },
    /// The blob was mounted from another repository of the same registry.
    BlobMounted { digest: &'a str, from: &'a str },
}

/// Receives progress events (from several threads).
pub trait Progress: Sync {
    fn event(&self, event: ProgressEvent<'_>);
}

/// Ignores all events.
pub struct NoProgress;

impl Progress for NoProgress {
    fn event(&self, _event: ProgressEvent<'_>) {}
}
