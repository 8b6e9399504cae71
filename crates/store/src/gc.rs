//! Garbage collection: reaping what dead processes left behind, pruning
//! images, and deleting blobs and snapshots nothing refers to.
//!
//! Why this is safe against concurrent writers: a writer records its lease in
//! the database *before* it renames a new blob or snapshot into place, and gc
//! lists the directories *before* it reads references and leases inside one
//! write transaction, during which no new lease can be committed. So every file
//! gc sees was either leased/referenced by the time gc reads the database, or
//! is truly garbage; and a writer that finds an existing file re-checks it
//! after taking its lease.

use std::collections::HashSet;
use std::fs::{self, File};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::{TransactionBehavior, params};

use crate::{Digest, ImageRecord, Result, Store, StoreError, sync_dir};

static TRASH_COUNTER: AtomicU64 = AtomicU64::new(0);

/// What a gc run removed.
#[derive(Debug, Clone, Default)]
pub struct GcReport {
    pub removed_blobs: Vec<Digest>,
    pub removed_snapshots: Vec<Digest>,
    pub reclaimed_bytes: u64,
    /// Dead processes whose leases and temp files were reaped.
    pub reaped_holders: Vec<String>,
}

impl Store {
    /// Finds processes that held leases or temp files and are gone (their
    /// lock is no longer held) and removes their leases and temp files.
    pub fn reap_dead_holders(&self) -> Result<Vec<String>> {
        let mut holders: HashSet<String> = HashSet::new();
        {
            let db = self.db();
            let mut stmt = db.prepare("SELECT DISTINCT holder FROM leases")?;
            for holder in stmt.query_map([], |r| r.get::<_, String>(0))? {
                holders.insert(holder?);
            }
        }
        for dir in ["tmp", "locks"] {
            if let Ok(entries) = fs::read_dir(self.root.join(dir)) {
                for entry in entries.flatten() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if dir == "tmp" {
                        holders.insert(name);
                    } else if let Some(holder) = name.strip_suffix(".lock") {
                        holders.insert(holder.to_string());
                    } else if name.starts_with('.') && name.ends_with(".new") {
                        remove_stale_new_lock(&entry.path());
                    }
                }
            }
        }
        let mut reaped = Vec::new();
        for holder in holders {
            // A '/' marks an owned hold (`Store::hold_image`): no process backs it.
            if holder == self.holder || holder.contains('/') || holder.starts_with('.') {
                continue;
            }
            let lock_path = self.root.join("locks").join(format!("{holder}.lock"));
            // Keep the lock while cleaning so a (theoretical) same-named
            // holder cannot start in between.
            let lock = match File::open(&lock_path) {
                Ok(file) => match file.try_lock() {
                    Ok(()) => Some(file),
                    Err(_) => continue, // alive
                },
                Err(_) => None,
            };
            self.db()
                .execute("DELETE FROM leases WHERE holder = ?1", [&holder])?;
            let tmp = self.root.join("tmp").join(&holder);
            if tmp.exists() {
                fs::remove_dir_all(&tmp)
                    .map_err(StoreError::io("removing dead process's temp files", &tmp))?;
            }
            if lock.is_some() {
                let _ = fs::remove_file(&lock_path);
            }
            reaped.push(holder);
        }
        Ok(reaped)
    }

    /// Removes images: the dangling ones (no name), or with `all` every image
    /// not leased by a live process. Returns what was removed. Blobs and
    /// snapshots are freed by a following [`Store::gc`].
    pub fn prune_images(&self, all: bool) -> Result<Vec<ImageRecord>> {
        self.reap_dead_holders()?;
        // Hidden images nothing holds any more go first (see hide_image).
        self.delete_released_hidden_images()?;
        let candidates: Vec<ImageRecord> = self
            .list_images_as_recorded()?
            .into_iter()
            .filter(|image| all || image.refs.is_empty())
            .collect();
        let mut removed = Vec::new();
        let mut db = self.db();
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for image in candidates {
            let manifest = image.manifest.to_string();
            // Re-check inside the transaction: a name or lease may have arrived.
            let leased: i64 = tx.query_row(
                "SELECT COUNT(*) FROM leases WHERE kind = 'image' AND target = ?1",
                [&manifest],
                |r| r.get(0),
            )?;
            let named: i64 = tx.query_row(
                "SELECT COUNT(*) FROM refs WHERE manifest_digest = ?1",
                [&manifest],
                |r| r.get(0),
            )?;
            if leased > 0 || (!all && named > 0) {
                continue;
            }
            tx.execute("DELETE FROM refs WHERE manifest_digest = ?1", [&manifest])?;
            tx.execute(
                "DELETE FROM image_layers WHERE manifest_digest = ?1",
                [&manifest],
            )?;
            tx.execute("DELETE FROM images WHERE manifest_digest = ?1", [&manifest])?;
            removed.push(image);
        }
        tx.commit()?;
        Ok(removed)
    }

    /// Deletes every blob and snapshot that no image refers to and no live
    /// lease holds, plus what dead processes left in `tmp/`.
    pub fn gc(&self) -> Result<GcReport> {
        let mut report = GcReport {
            reaped_holders: self.reap_dead_holders()?,
            ..GcReport::default()
        };
        // 1. List first (see the module docs for why the order matters).
        let blob_dir = self.root.join("blobs/sha256");
        let snap_dir = self.root.join("snapshots");
        let blob_names = list_names(&blob_dir)?;
        let snap_names = list_names(&snap_dir)?;

        // 2. Read references and delete under one write transaction.
        let mut trash = Vec::new();
        {
            let mut db = self.db();
            let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut live_blobs: HashSet<String> = HashSet::new();
            let mut live_snaps: HashSet<String> = HashSet::new();
            {
                let mut stmt = tx.prepare(
                    "SELECT manifest_digest FROM images UNION SELECT config_digest FROM images
                     UNION SELECT blob_digest FROM image_layers
                     UNION SELECT target FROM leases WHERE kind = 'blob'",
                )?;
                for digest in stmt.query_map([], |r| r.get::<_, String>(0))? {
                    live_blobs.insert(digest?);
                }
                let mut stmt = tx.prepare(
                    "SELECT chain_id FROM image_layers UNION SELECT target FROM leases WHERE kind = 'snapshot'",
                )?;
                for digest in stmt.query_map([], |r| r.get::<_, String>(0))? {
                    live_snaps.insert(digest?);
                }
            }
            for name in blob_names {
                let key = format!("sha256:{name}");
                if live_blobs.contains(&key) {
                    continue;
                }
                let path = blob_dir.join(&name);
                let size = fs::symlink_metadata(&path).map(|m| m.len()).unwrap_or(0);
                match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(StoreError::io("removing unused blob", &path)(e)),
                }
                report.reclaimed_bytes += size;
                if let Ok(digest) = Digest::parse(&key) {
                    report.removed_blobs.push(digest);
                }
            }
            for name in snap_names {
                let key = format!("sha256:{name}");
                if live_snaps.contains(&key) {
                    continue;
                }
                let path = snap_dir.join(&name);
                let n = TRASH_COUNTER.fetch_add(1, Ordering::Relaxed);
                let target = self.tmp_dir().join(format!("trash-{n}"));
                // Renaming is instant; the slow recursive delete happens after
                // the transaction so other processes are not kept waiting.
                match fs::rename(&path, &target) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => {
                        return Err(StoreError::io("moving unused snapshot to trash", &path)(e));
                    }
                }
                tx.execute("DELETE FROM snapshots WHERE chain_id = ?1", params![key])?;
                trash.push(target);
                if let Ok(digest) = Digest::parse(&key) {
                    report.removed_snapshots.push(digest);
                }
            }
            tx.execute(
                "DELETE FROM layers WHERE blob_digest NOT IN (SELECT blob_digest FROM image_layers)",
                [],
            )?;
            tx.execute(
                "DELETE FROM snapshots WHERE chain_id NOT IN (SELECT chain_id FROM image_layers)
                 AND chain_id NOT IN (SELECT target FROM leases WHERE kind = 'snapshot')",
                [],
            )?;
            tx.commit()?;
        }
        sync_dir(&blob_dir)?;
        sync_dir(&snap_dir)?;
        // Partial downloads (Store::resumable_blob_writer) nobody is writing
        // and nobody touched for a day: an abandoned pull's leftovers.
        let partial = self.root.join("partial");
        for name in list_names(&partial).unwrap_or_default() {
            let path = partial.join(&name);
            let stale = fs::metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age.as_secs() > 24 * 3600);
            if stale
                && let Ok(file) = File::open(&path)
                && file.try_lock().is_ok()
            {
                let _ = fs::remove_file(&path);
            }
        }
        // Sidecars go with their blobs (see blob.rs).
        let sidecars = self.root.join("sidecars");
        for kind in list_names(&sidecars).unwrap_or_default() {
            let dir = sidecars.join(&kind);
            for name in list_names(&dir).unwrap_or_default() {
                if !blob_dir.join(&name).exists() {
                    let _ = fs::remove_file(dir.join(&name));
                }
            }
        }
        for dir in trash {
            report.reclaimed_bytes += crate::meta::dir_size(&dir);
            make_removable(&dir);
            fs::remove_dir_all(&dir).map_err(StoreError::io("removing unused snapshot", &dir))?;
        }
        Ok(report)
    }
}

/// A `.<holder>.new` lock file is renamed to `<holder>.lock` right after it is
/// locked; one that is old and unlocked belongs to a process killed in between.
fn remove_stale_new_lock(path: &Path) {
    let old = fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age.as_secs() > 60);
    if old
        && let Ok(file) = File::open(path)
        && file.try_lock().is_ok()
    {
        let _ = fs::remove_file(path);
    }
}

/// Names in a directory (skips entries that are not valid UTF-8: nothing kiln
/// writes has such names).
pub(crate) fn list_names(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(StoreError::io("listing", dir))? {
        let entry = entry.map_err(StoreError::io("listing", dir))?;
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_string());
        }
    }
    Ok(names)
}

/// Layer content may contain read-only directories (mode 0555): make them
/// writable so their entries can be removed.
pub(crate) fn make_removable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_dir() {
            continue;
        }
        let mode = meta.permissions().mode();
        if mode & 0o700 != 0o700 {
            let _ = fs::set_permissions(&path, fs::Permissions::from_mode(mode | 0o700));
        }
        if let Ok(entries) = fs::read_dir(&path) {
            for entry in entries.flatten() {
                if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    stack.push(entry.path());
                }
            }
        }
    }
}
