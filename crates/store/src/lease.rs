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

/// The holder prefix of owned holds: rows whose holder contains a `/` are
/// never reaped by [`Store::reap_dead_holders`] (no process lock backs them).
const OWNER_PREFIX: &str = "owner/";

impl Store {
    /// Protects an image for an owner that outlives any process (a container
    /// record, `"container/<id>"`): prune and `rmi` without `-f` keep it, and
    /// its blobs and snapshots stay, until [`Store::release_holds`] for that
    /// owner. Idempotent.
    pub fn hold_image(&self, owner: &str, manifest: &Digest) -> Result<()> {
        let holder = format!("{OWNER_PREFIX}{owner}");
        let target = manifest.to_string();
        let db = self.db();
        let exists: i64 = db.query_row(
            "SELECT COUNT(*) FROM leases WHERE holder = ?1 AND kind = 'image' AND target = ?2",
            params![holder, target],
            |r| r.get(0),
        )?;
        if exists == 0 {
            db.execute(
                "INSERT INTO leases(lease_id, holder, kind, target, created_at) VALUES (?1, ?1, ?2, ?3, ?4)",
                params![holder, LeaseKind::Image.as_str(), target, now_unix()],
            )?;
        }
        Ok(())
    }

    /// Drops every hold of `owner` (see [`Store::hold_image`]).
    pub fn release_holds(&self, owner: &str) -> Result<()> {
        self.db().execute(
            "DELETE FROM leases WHERE holder = ?1",
            [format!("{OWNER_PREFIX}{owner}")],
        )?;
        // An image `rmi -f` hid while this owner held it goes now, and its
        // content with it (as docker frees it with the last container).
        if self.delete_released_hidden_images()? > 0 {
            self.gc()?;
        }
        Ok(())
    }

    /// The owners holding `manifest` (see [`Store::hold_image`]), sorted.
    pub fn image_owners(&self, manifest: &Digest) -> Result<Vec<String>> {
        let db = self.db();
        let mut stmt = db.prepare(
            "SELECT DISTINCT holder FROM leases WHERE kind = 'image' AND target = ?1 AND holder LIKE 'owner/%' ORDER BY holder",
        )?;
        let rows = stmt.query_map([manifest.to_string()], |r| r.get::<_, String>(0))?;
        let mut owners = Vec::new();
        for holder in rows {
            if let Some(owner) = holder?.strip_prefix(OWNER_PREFIX) {
                owners.push(owner.to_string());
            }
        }
        Ok(owners)
    }
}
