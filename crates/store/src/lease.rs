//! Leases: "this process is using these blobs / snapshots / images, do not
//! collect them". A lease is rows in the `leases` table tagged with the
//! process's holder id; the holder keeps `locks/<holder>.lock` flocked for its
//! whole life, so when it dies (even by SIGKILL) the kernel drops the lock and
//! the next gc knows the lease is stale.

use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::params;

use crate::{Digest, Result, Store, now_unix};

static LEASE_COUNTER: AtomicU64 = AtomicU64::new(0);

/// What a lease row protects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LeaseKind {
    Blob,
    Snapshot,
    Image,
}

impl LeaseKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            LeaseKind::Blob => "blob",
            LeaseKind::Snapshot => "snapshot",
            LeaseKind::Image => "image",
        }
    }
}

/// A set of resources protected from gc until the lease is dropped (or the
/// process dies).
pub struct Lease<'s> {
    store: &'s Store,
    id: String,
}

impl Store {
    /// Starts a new, empty lease.
    pub fn lease(&self) -> Lease<'_> {
        let n = LEASE_COUNTER.fetch_add(1, Ordering::Relaxed);
        Lease {
            store: self,
            id: format!("{}/{n}", self.holder),
        }
    }
}

impl Lease<'_> {
    /// Protects a blob.
    pub fn add_blob(&self, digest: &Digest) -> Result<()> {
        self.add(LeaseKind::Blob, &digest.to_string())
    }

    /// Protects a snapshot directory.
    pub fn add_snapshot(&self, chain_id: &Digest) -> Result<()> {
        self.add(LeaseKind::Snapshot, &chain_id.to_string())
    }

    /// Protects an image (its manifest, config, layers and snapshots) from
    /// prune and from `rmi` without `-f`: what a running build or container holds.
    pub fn add_image(&self, manifest: &Digest) -> Result<()> {
        self.add(LeaseKind::Image, &manifest.to_string())
    }

    fn add(&self, kind: LeaseKind, target: &str) -> Result<()> {
        self.store.db().execute(
            "INSERT INTO leases(lease_id, holder, kind, target, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![self.id, self.store.holder, kind.as_str(), target, now_unix()],
        )?;
        Ok(())
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        // Best effort: if this fails the rows die with the process's lock.
        let _ = self
            .store
            .db()
            .execute("DELETE FROM leases WHERE lease_id = ?1", [&self.id]);
    }
}
