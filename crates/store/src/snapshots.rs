//! Snapshots: each layer unpacked once into `snapshots/<chain id hex>`, holding
//! only that layer's own changes (applied in overlay mode, whiteouts kept as
//! overlayfs whiteouts), so an image's rootfs is the overlay of its layers'
//! snapshot directories and every image with the same layer stack shares them.
//!
//! Creation is atomic: the layer is applied into this process's temp
//! directory, synced, then renamed into place. Two processes creating the same
//! snapshot at once both do the work; the second rename fails because the
//! directory exists, and the loser discards its copy.

use std::fs;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::{OptionalExtension, params};

use crate::gc::make_removable;
use crate::{Digest, Lease, Result, SnapshotRecord, Store, StoreError, now_unix, sync_dir};

static SNAPSHOT_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Store {
    /// Returns the directory of the snapshot `chain_id`, creating it with
    /// `fill(temp_dir)` (which applies the layer with diff id `diff_id` on top
    /// of `parent`) if it does not exist yet. The snapshot is added to `lease`.
    pub fn ensure_snapshot<E>(
        &self,
        lease: &Lease<'_>,
        chain_id: &Digest,
        parent: Option<&Digest>,
        diff_id: &Digest,
        fill: impl FnOnce(&Path) -> std::result::Result<(), E>,
    ) -> Result<PathBuf>
    where
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        lease.add_snapshot(chain_id)?;
        let final_path = self.snapshot_path(chain_id);
        if !final_path.is_dir() {
            let n = SNAPSHOT_COUNTER.fetch_add(1, Ordering::Relaxed);
            let temp = self.tmp_dir().join(format!("snapshot-{n}"));
            fs::create_dir(&temp).map_err(StoreError::io("creating snapshot temp dir", &temp))?;
            if let Err(e) = fill(&temp) {
                make_removable(&temp);
                let _ = fs::remove_dir_all(&temp);
                return Err(StoreError::SnapshotFill {
                    chain_id: chain_id.clone(),
                    source: e.into(),
                });
            }
            // One syncfs flushes every file of the layer at once, far cheaper
            // than an fsync per file, before the rename publishes it.
            let dir = fs::File::open(&temp).map_err(StoreError::io("opening snapshot", &temp))?;
            rustix::fs::syncfs(dir.as_fd()).map_err(|e| StoreError::Io {
                action: "syncing snapshot",
                path: temp.clone(),
                source: e.into(),
            })?;
            drop(dir);
            if let Err(e) = fs::rename(&temp, &final_path) {
                // Another process published the same snapshot first: use theirs.
                if final_path.is_dir() {
                    make_removable(&temp);
                    let _ = fs::remove_dir_all(&temp);
                } else {
                    return Err(StoreError::io("publishing snapshot", &final_path)(e));
                }
            }
            sync_dir(&self.root.join("snapshots"))?;
        }
        self.db().execute(
            "INSERT OR IGNORE INTO snapshots(chain_id, parent, diff_id, state, created_at) VALUES (?1, ?2, ?3, 'ready', ?4)",
            params![chain_id.to_string(), parent.map(|p| p.to_string()), diff_id.to_string(), now_unix()],
        )?;
        Ok(final_path)
    }

    /// The snapshot row for `chain_id`, if its directory exists.
    pub fn snapshot(&self, chain_id: &Digest) -> Result<Option<SnapshotRecord>> {
        if !self.snapshot_path(chain_id).is_dir() {
            return Ok(None);
        }
        let db = self.db();
        let row = db
            .query_row(
                "SELECT parent, diff_id, state FROM snapshots WHERE chain_id = ?1",
                [chain_id.to_string()],
                |r| {
                    Ok((
                        r.get::<_, Option<String>>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                },
            )
            .optional()?;
        let Some((parent, diff_id, state)) = row else {
            return Ok(None);
        };
        Ok(Some(SnapshotRecord {
            chain_id: chain_id.clone(),
            parent: parent.map(|p| Digest::parse(&p)).transpose()?,
            diff_id: Digest::parse(&diff_id)?,
            state,
        }))
    }
}

/// A directory already in snapshot form (a layer's own changes, whiteouts as
/// overlayfs whiteouts), made on the store's filesystem by someone else: a
/// build's COPY staging tree, which is exactly what applying the layer's tar
/// would give. Publishing it spares the next user an unpack of the blob.
#[derive(Debug, Clone)]
pub struct SnapshotToAdopt {
    pub chain_id: Digest,
    pub parent: Option<Digest>,
    pub diff_id: Digest,
    /// Renamed into place: must be on the store's filesystem (under [`Store::tmp_dir`]).
    pub dir: PathBuf,
}

impl Store {
    /// Publishes `snapshots` (see [`SnapshotToAdopt`]) with one syncfs for all
    /// of them, and adds them to `lease`. A snapshot that already exists is
    /// left as it is and its `dir` untouched (the caller removes it). Returns
    /// the chain ids published.
    pub fn adopt_snapshots(
        &self,
        lease: &Lease<'_>,
        snapshots: &[SnapshotToAdopt],
    ) -> Result<Vec<Digest>> {
        let mut pending = Vec::new();
        for snapshot in snapshots {
            lease.add_snapshot(&snapshot.chain_id)?;
            if !self.snapshot_path(&snapshot.chain_id).is_dir() && snapshot.dir.is_dir() {
                pending.push(snapshot);
            }
        }
        if pending.is_empty() {
            return Ok(Vec::new());
        }
        // Durable before published, as ensure_snapshot: one syncfs flushes
        // every file of every tree at once.
        let tmp = self.tmp_dir();
        let dir = fs::File::open(&tmp).map_err(StoreError::io("opening temp dir", &tmp))?;
        rustix::fs::syncfs(dir.as_fd()).map_err(|e| StoreError::Io {
            action: "syncing snapshots",
            path: tmp.clone(),
            source: e.into(),
        })?;
        drop(dir);
        let mut published = Vec::new();
        for snapshot in pending {
            let final_path = self.snapshot_path(&snapshot.chain_id);
            // Another process may have published the same snapshot meanwhile:
            // then theirs stays and ours is the caller's to remove.
            if fs::rename(&snapshot.dir, &final_path).is_ok() {
                published.push(snapshot);
            }
        }
        sync_dir(&self.root.join("snapshots"))?;
        let db = self.db();
        for snapshot in &published {
            db.execute(
                "INSERT OR IGNORE INTO snapshots(chain_id, parent, diff_id, state, created_at) VALUES (?1, ?2, ?3, 'ready', ?4)",
                params![
                    snapshot.chain_id.to_string(),
                    snapshot.parent.as_ref().map(|p| p.to_string()),
                    snapshot.diff_id.to_string(),
                    now_unix()
                ],
            )?;
        }
        Ok(published.into_iter().map(|s| s.chain_id.clone()).collect())
    }
}
