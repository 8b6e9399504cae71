//! Store: content-addressed blobs, metadata database, references, garbage
//! collection and locks under the kiln root.
//!
//! Layout of a store root (see `README.md` in this crate for the reasons):
//!
//! ```text
//! <root>/kiln.db                  SQLite (WAL): refs, images, layers, snapshots, leases, cache
//! <root>/blobs/sha256/<hex>       blobs in OCI image-layout form, written atomically
//! <root>/snapshots/<chain hex>/   one unpacked layer per chain id (an overlayfs lower dir)
//! <root>/tmp/<holder>/            a process's in-progress blobs and snapshots
//! <root>/locks/<holder>.lock      flocked by the live process <holder> for its whole life
//! ```
//!
//! Several kiln processes share one root. Metadata changes are SQLite
//! transactions; files are made visible by `rename` only once complete and
//! fsynced; and anything a process is still working with is protected from
//! garbage collection by a [`Lease`] that dies with the process.

mod blob;
mod check;
mod digest;
mod error;
mod gc;
pub mod image_ops;
mod lease;
mod meta;
mod snapshots;
pub mod time;

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::Connection;

pub use blob::{BlobInfo, BlobWriter};
pub use check::CheckReport;
pub use digest::Digest;
pub use error::{Result, StoreError};
pub use gc::GcReport;
pub use lease::Lease;
pub use meta::{ImageLayer, ImageRecord, LayerRecord, NewImage, SnapshotRecord, Usage};
pub use snapshots::SnapshotToAdopt;

/// Environment variable naming the store root (overridden by `--root`).
pub const ROOT_ENV: &str = "KILN_ROOT";

/// The default store root: `$KILN_ROOT`, else `/var/lib/kiln` for root, else
/// `$XDG_DATA_HOME/kiln` (`~/.local/share/kiln`).
pub fn default_root() -> PathBuf {
    if let Some(root) = std::env::var_os(ROOT_ENV).filter(|v| !v.is_empty()) {
        return PathBuf::from(root);
    }
    if rustix::process::geteuid().is_root() {
        return PathBuf::from("/var/lib/kiln");
    }
    if let Some(data) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(data).join("kiln");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
    PathBuf::from(home).join(".local/share/kiln")
}

/// An open store. Cheap to share between threads (`&Store` is `Sync`).
pub struct Store {
    root: PathBuf,
    conn: Mutex<Connection>,
    /// This process's identity in `leases.holder` and under `tmp/` and `locks/`.
    holder: String,
    /// Held (flocked) for as long as the store is open: while this lock is held,
    /// our leases are alive; once the process dies, the kernel drops it and any
    /// other kiln process may reap our leases and temp files.
    _holder_lock: File,
}

impl Store {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: impl AsRef<Path>) -> Result<Store> {
        let root = root.as_ref().to_path_buf();
        for dir in ["blobs/sha256", "snapshots", "tmp", "locks"] {
            let path = root.join(dir);
            fs::create_dir_all(&path).map_err(StoreError::io("creating store directory", &path))?;
        }
        let holder = format!(
            "{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        );
        // Lock under a name gc ignores, then rename: gc must never see our lock
        // file unlocked and take us for a dead process.
        let lock_path = root.join("locks").join(format!("{holder}.lock"));
        let new_lock_path = root.join("locks").join(format!(".{holder}.new"));
        let holder_lock = File::create(&new_lock_path)
            .map_err(StoreError::io("creating process lock", &new_lock_path))?;
        holder_lock
            .lock()
            .map_err(StoreError::io("locking process lock", &new_lock_path))?;
        fs::rename(&new_lock_path, &lock_path)
            .map_err(StoreError::io("renaming process lock", &lock_path))?;
        let tmp = root.join("tmp").join(&holder);
        fs::create_dir_all(&tmp).map_err(StoreError::io("creating temp directory", &tmp))?;

        let db_path = root.join("kiln.db");
        let conn = Connection::open(&db_path)?;
        meta::init(&conn)?;
        Ok(Store {
            root,
            conn: Mutex::new(conn),
            holder,
            _holder_lock: holder_lock,
        })
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// This process's lease-holder id.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Where the blob with `digest` lives (whether or not it exists).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    /// Where the snapshot directory for `chain_id` lives (whether or not it exists).
    pub fn snapshot_path(&self, chain_id: &Digest) -> PathBuf {
        self.root.join("snapshots").join(chain_id.hex())
    }

    /// This process's private temp directory inside the store (same filesystem
    /// as blobs and snapshots, so finished files can be renamed into place).
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp").join(&self.holder)
    }

    pub(crate) fn db(&self) -> MutexGuard<'_, Connection> {
        // A poisoned mutex only means another thread panicked mid-call; SQLite
        // rolled back its transaction, so the connection is still usable.
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // Best effort: a crash skips this, and the next gc reaps what is left.
        let _ = self
            .db()
            .execute("DELETE FROM leases WHERE holder = ?1", [&self.holder]);
        let _ = fs::remove_dir_all(self.tmp_dir());
        let _ = fs::remove_file(
            self.root
                .join("locks")
                .join(format!("{}.lock", self.holder)),
        );
    }
}

pub(crate) fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// fsyncs a directory so that a rename or unlink inside it is durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StoreError::io("syncing directory", dir))
}
