//! The metadata database: schema and the image / ref / layer records.
//!
//! SQLite in WAL mode: readers never block the writer, every change is one
//! transaction (all or nothing across a kill -9), and `busy_timeout` makes
//! concurrent kiln processes queue instead of failing.

use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::{Digest, Result, Store, StoreError, now_unix};

const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS images (
    manifest_digest TEXT PRIMARY KEY,
    media_type      TEXT NOT NULL,
    config_digest   TEXT NOT NULL,
    created         TEXT,
    size            INTEGER NOT NULL,
    added_at        INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS images_config ON images(config_digest);
CREATE TABLE IF NOT EXISTS layers (
    blob_digest     TEXT PRIMARY KEY,
    media_type      TEXT NOT NULL,
    compressed_size INTEGER NOT NULL,
    diff_id         TEXT NOT NULL,
    size            INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS layers_diff_id ON layers(diff_id);
CREATE TABLE IF NOT EXISTS image_layers (
    manifest_digest TEXT NOT NULL REFERENCES images(manifest_digest) ON DELETE CASCADE,
    position        INTEGER NOT NULL,
    blob_digest     TEXT NOT NULL REFERENCES layers(blob_digest),
    chain_id        TEXT NOT NULL,
    PRIMARY KEY (manifest_digest, position)
);
CREATE INDEX IF NOT EXISTS image_layers_chain ON image_layers(chain_id);
CREATE TABLE IF NOT EXISTS refs (
    name            TEXT PRIMARY KEY,
    manifest_digest TEXT NOT NULL REFERENCES images(manifest_digest) ON DELETE CASCADE,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS refs_manifest ON refs(manifest_digest);
CREATE TABLE IF NOT EXISTS snapshots (
    chain_id   TEXT PRIMARY KEY,
    parent     TEXT,
    diff_id    TEXT NOT NULL,
    state      TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS leases (
    lease_id   TEXT NOT NULL,
    holder     TEXT NOT NULL,
    kind       TEXT NOT NULL,
    target     TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS leases_target ON leases(kind, target);
CREATE INDEX IF NOT EXISTS leases_id ON leases(lease_id);
CREATE INDEX IF NOT EXISTS leases_holder ON leases(holder);
-- Room for the build cache: cache key -> result (JSON), with last use for eviction.
CREATE TABLE IF NOT EXISTS build_cache (
    cache_key  TEXT PRIMARY KEY,
    result     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_used  INTEGER NOT NULL
);
";

pub(crate) fn init(conn: &Connection) -> Result<()> {
    conn.busy_timeout(Duration::from_secs(120))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: a committed tag survives power loss, not only a process crash.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if version == 0 {
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; {SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
        ))?;
    } else if version > SCHEMA_VERSION {
        return Err(StoreError::Corrupt(format!(
            "database schema version {version} is newer than this kiln understands ({SCHEMA_VERSION}); upgrade kiln"
        )));
    }
    // Added after version 1, in a table of its own so that stores made
    // before (and kilns from before) keep working: images removed by name
    // and id while containers still hold them (see Store::hide_image).
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS hidden_images (manifest_digest TEXT PRIMARY KEY);",
    )?;
    Ok(())
}

/// One layer as an image's manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRecord {
    /// Digest of the (possibly compressed) layer blob.
    pub blob: Digest,
    /// The layer's media type as written in the manifest.
    pub media_type: String,
    /// Size of the blob.
    pub compressed_size: u64,
    /// Digest of the uncompressed tar (the config's `rootfs.diff_ids` entry).
    pub diff_id: Digest,
    /// Unpacked size of the layer's content (sum of file sizes), what docker
    /// reports; [`LayerRecord::UNKNOWN_SIZE`] while not measured yet.
    pub size: u64,
}

impl LayerRecord {
    /// The `size` of a layer not measured yet: a pull records its layers
    /// without decompressing them; the size is counted when the layer is first
    /// unpacked ([`crate::image_ops::unpack_image`]) or, failing that, when an
    /// image record is read with [`Store::image`] / [`Store::list_images`].
    /// Stored as -1 in the `layers.size` column (NOT NULL in existing stores).
    pub const UNKNOWN_SIZE: u64 = u64::MAX;

    /// Whether `size` has been measured.
    pub fn size_known(&self) -> bool {
        self.size != Self::UNKNOWN_SIZE
    }
}

/// A size as the database stores it: unknown is -1.
fn size_to_sql(size: u64) -> i64 {
    i64::try_from(size).unwrap_or(-1)
}

/// A stored size: a negative one is unknown.
fn size_from_sql(size: i64) -> u64 {
    u64::try_from(size).unwrap_or(LayerRecord::UNKNOWN_SIZE)
}

/// Recomputes `images.size` (sum of the layers' sizes, -1 while one is
/// unknown) of the images not fully measured that use layer blob `?1`.
const REFRESH_IMAGE_SIZES: &str = "
UPDATE images SET size = (
    SELECT CASE WHEN MIN(l.size) < 0 THEN -1 ELSE COALESCE(SUM(l.size), 0) END
    FROM image_layers il JOIN layers l ON l.blob_digest = il.blob_digest
    WHERE il.manifest_digest = images.manifest_digest)
WHERE size < 0
  AND manifest_digest IN (SELECT manifest_digest FROM image_layers WHERE blob_digest = ?1)";

/// What [`Store::put_image`] records.
#[derive(Debug, Clone)]
pub struct NewImage {
    pub manifest: Digest,
    pub manifest_media_type: String,
    pub config: Digest,
    /// The config's `created` (RFC 3339), if any.
    pub created: Option<String>,
    pub layers: Vec<LayerRecord>,
}

/// A layer of a stored image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageLayer {
    pub layer: LayerRecord,
    pub chain_id: Digest,
}

/// A stored image.
#[derive(Debug, Clone)]
pub struct ImageRecord {
    pub manifest: Digest,
    pub manifest_media_type: String,
    /// The config digest: docker's image id.
    pub config: Digest,
    pub created: Option<String>,
    /// Sum of the layers' unpacked sizes; [`LayerRecord::UNKNOWN_SIZE`] while
    /// one of them is not measured (only in [`Store::image_as_recorded`] and
    /// [`Store::list_images_as_recorded`] records).
    pub size: u64,
    /// Unix seconds when this store first recorded the image.
    pub added_at: i64,
    pub layers: Vec<ImageLayer>,
    /// Names (normalised references) that point at this image.
    pub refs: Vec<String>,
}

impl ImageRecord {
    /// Whether every layer's size (and so `size`) has been measured.
    pub fn size_known(&self) -> bool {
        self.size != LayerRecord::UNKNOWN_SIZE && self.layers.iter().all(|l| l.layer.size_known())
    }
}

/// A snapshot row.
#[derive(Debug, Clone)]
pub struct SnapshotRecord {
    pub chain_id: Digest,
    pub parent: Option<Digest>,
    pub diff_id: Digest,
    pub state: String,
}

/// Disk use, for `kiln system df`.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    pub images: u64,
    pub images_in_use: u64,
    pub blob_bytes: u64,
    /// Bytes of blobs no image in use (leased by a live build or container) needs.
    pub reclaimable_blob_bytes: u64,
    pub snapshots: u64,
    pub snapshots_in_use: u64,
    pub snapshot_bytes: u64,
    /// Bytes of snapshots no image in use needs.
    pub reclaimable_snapshot_bytes: u64,
    pub build_cache_entries: u64,
}

fn digest_col(row: &rusqlite::Row<'_>, idx: usize) -> rusqlite::Result<Digest> {
    let text: String = row.get(idx)?;
    Digest::parse(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(e))
    })
}

impl Store {
    /// Records an image whose manifest, config and layer blobs are already in
    /// the store (hold them in `lease` until this returns). Idempotent.
    pub fn put_image(&self, image: &NewImage) -> Result<()> {
        for digest in [&image.manifest, &image.config]
            .into_iter()
            .chain(image.layers.iter().map(|l| &l.blob))
        {
            if !self.has_blob(digest) {
                return Err(StoreError::BlobMissing {
                    digest: digest.clone(),
                    root: self.root.clone(),
                });
            }
        }
        let diff_ids: Vec<Digest> = image.layers.iter().map(|l| l.diff_id.clone()).collect();
        let chain_ids = Digest::chain_ids(&diff_ids);
        let size = if image.layers.iter().all(LayerRecord::size_known) {
            image.layers.iter().map(|l| l.size).sum()
        } else {
            LayerRecord::UNKNOWN_SIZE
        };
        let mut db = self.db();
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let exists: bool = tx
            .query_row(
                "SELECT 1 FROM images WHERE manifest_digest = ?1",
                [image.manifest.to_string()],
                |_| Ok(true),
            )
            .optional()?
            .unwrap_or(false);
        if !exists {
            tx.execute(
                "INSERT INTO images(manifest_digest, media_type, config_digest, created, size, added_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    image.manifest.to_string(),
                    image.manifest_media_type,
                    image.config.to_string(),
                    image.created,
                    size_to_sql(size),
                    now_unix()
                ],
            )?;
            for (position, (layer, chain_id)) in image.layers.iter().zip(&chain_ids).enumerate() {
                // A size measured before (another image with this layer) is
                // kept when this record does not know it.
                tx.execute(
                    "INSERT INTO layers(blob_digest, media_type, compressed_size, diff_id, size) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT(blob_digest) DO UPDATE SET media_type = excluded.media_type,
                        compressed_size = excluded.compressed_size, diff_id = excluded.diff_id,
                        size = CASE WHEN excluded.size < 0 THEN layers.size ELSE excluded.size END",
                    params![
                        layer.blob.to_string(),
                        layer.media_type,
                        layer.compressed_size as i64,
                        layer.diff_id.to_string(),
                        size_to_sql(layer.size)
                    ],
                )?;
                tx.execute(
                    "INSERT INTO image_layers(manifest_digest, position, blob_digest, chain_id) VALUES (?1, ?2, ?3, ?4)",
                    params![image.manifest.to_string(), position as i64, layer.blob.to_string(), chain_id.to_string()],
                )?;
            }
            // This image's own size too, when its layers were measured before.
            for layer in &image.layers {
                tx.execute(REFRESH_IMAGE_SIZES, [layer.blob.to_string()])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Records measured content sizes of layer blobs whose size was unknown
    /// (a size already known is kept), in one transaction, and the sizes of
    /// the images that are then fully measured.
    pub fn record_layer_sizes(&self, sizes: &[(Digest, u64)]) -> Result<()> {
        if sizes.is_empty() {
            return Ok(());
        }
        let mut db = self.db();
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for (blob, size) in sizes {
            if *size == LayerRecord::UNKNOWN_SIZE {
                continue;
            }
            tx.execute(
                "UPDATE layers SET size = ?2 WHERE blob_digest = ?1 AND size < 0",
                params![blob.to_string(), size_to_sql(*size)],
            )?;
            tx.execute(REFRESH_IMAGE_SIZES, [blob.to_string()])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Points `name` at an image; returns the image it pointed at before, if
    /// that was a different one (docker leaves it dangling).
    pub fn set_ref(&self, name: &str, manifest: &Digest) -> Result<Option<Digest>> {
        let mut db = self.db();
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let previous = stored_ref(&tx, name)?;
        tx.execute(
            "INSERT INTO refs(name, manifest_digest, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(name) DO UPDATE SET manifest_digest = excluded.manifest_digest, updated_at = excluded.updated_at",
            params![name, manifest.to_string(), now_unix()],
        )?;
        tx.commit()?;
        let previous = previous.map(|p| Digest::parse(&p)).transpose()?;
        Ok(previous.filter(|p| p != manifest))
    }

    /// Removes a name; returns the image it pointed at.
    pub fn remove_ref(&self, name: &str) -> Result<Option<Digest>> {
        let mut db = self.db();
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let previous = stored_ref(&tx, name)?;
        tx.execute("DELETE FROM refs WHERE name = ?1", [name])?;
        tx.commit()?;
        previous.map(|p| Digest::parse(&p)).transpose()
    }

    /// The image a name points at.
    pub fn resolve_ref(&self, name: &str) -> Result<Option<Digest>> {
        let db = self.db();
        let found = stored_ref(&db, name)?;
        found.map(|p| Digest::parse(&p)).transpose()
    }

    /// Every stored image, newest first, with every size known: layers not
    /// measured yet are measured now (each once, in parallel) and recorded.
    pub fn list_images(&self) -> Result<Vec<ImageRecord>> {
        let mut images = self.list_images_as_recorded()?;
        crate::image_ops::measure_unknown_sizes(self, &mut images);
        Ok(images)
    }

    /// Every stored image, newest first, as recorded: sizes not measured yet
    /// are [`LayerRecord::UNKNOWN_SIZE`]. For callers that need no sizes
    /// (gc, check, unpacking) and should not pay for measuring them.
    pub fn list_images_as_recorded(&self) -> Result<Vec<ImageRecord>> {
        let manifests: Vec<Digest> = {
            let db = self.db();
            let mut stmt = db.prepare(
                "SELECT manifest_digest FROM images
                 WHERE manifest_digest NOT IN (SELECT manifest_digest FROM hidden_images)
                 ORDER BY added_at DESC, manifest_digest",
            )?;
            let rows = stmt.query_map([], |r| digest_col(r, 0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let mut images = Vec::with_capacity(manifests.len());
        for manifest in manifests {
            if let Some(image) = self.image_as_recorded(&manifest)? {
                images.push(image);
            }
        }
        Ok(images)
    }

    /// One image by manifest digest, with every size known (layers not
    /// measured yet are measured now and recorded, once).
    pub fn image(&self, manifest: &Digest) -> Result<Option<ImageRecord>> {
        let Some(image) = self.image_as_recorded(manifest)? else {
            return Ok(None);
        };
        let mut images = [image];
        crate::image_ops::measure_unknown_sizes(self, &mut images);
        let [image] = images;
        Ok(Some(image))
    }

    /// One image by manifest digest, as recorded: sizes not measured yet are
    /// [`LayerRecord::UNKNOWN_SIZE`] (see [`Store::list_images_as_recorded`]).
    pub fn image_as_recorded(&self, manifest: &Digest) -> Result<Option<ImageRecord>> {
        let db = self.db();
        let head = db
            .query_row(
                "SELECT media_type, config_digest, created, size, added_at FROM images WHERE manifest_digest = ?1",
                [manifest.to_string()],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        digest_col(r, 1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, i64>(4)?,
                    ))
                },
            )
            .optional()?;
        let Some((media_type, config, created, size, added_at)) = head else {
            return Ok(None);
        };
        let mut stmt = db.prepare(
            "SELECT l.blob_digest, l.media_type, l.compressed_size, l.diff_id, l.size, il.chain_id
             FROM image_layers il JOIN layers l ON l.blob_digest = il.blob_digest
             WHERE il.manifest_digest = ?1 ORDER BY il.position",
        )?;
        let layers = stmt
            .query_map([manifest.to_string()], |r| {
                Ok(ImageLayer {
                    layer: LayerRecord {
                        blob: digest_col(r, 0)?,
                        media_type: r.get(1)?,
                        compressed_size: r.get::<_, i64>(2)? as u64,
                        diff_id: digest_col(r, 3)?,
                        size: size_from_sql(r.get::<_, i64>(4)?),
                    },
                    chain_id: digest_col(r, 5)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        // The column lags behind when a layer was measured through another
        // image's record: the layers say.
        let size = match size_from_sql(size) {
            LayerRecord::UNKNOWN_SIZE if layers.iter().all(|l| l.layer.size_known()) => {
                layers.iter().map(|l| l.layer.size).sum()
            }
            size => size,
        };
        let mut stmt =
            db.prepare("SELECT name FROM refs WHERE manifest_digest = ?1 ORDER BY name")?;
        let refs = stmt
            .query_map([manifest.to_string()], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(Some(ImageRecord {
            manifest: manifest.clone(),
            manifest_media_type: media_type,
            config,
            created,
            size,
            added_at,
            layers,
            refs,
        }))
    }

    /// Images whose id (config digest) or manifest digest starts with `prefix`
    /// (hex, with or without `sha256:`), as docker resolves short ids.
    pub fn find_images_by_id_prefix(&self, prefix: &str) -> Result<Vec<ImageRecord>> {
        let hex = prefix.strip_prefix("sha256:").unwrap_or(prefix);
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(Vec::new());
        }
        let pattern = format!("sha256:{}%", hex.to_ascii_lowercase());
        let manifests: Vec<Digest> = {
            let db = self.db();
            let mut stmt = db.prepare(
                "SELECT manifest_digest FROM images WHERE (config_digest LIKE ?1 OR manifest_digest LIKE ?1)
                 AND manifest_digest NOT IN (SELECT manifest_digest FROM hidden_images) ORDER BY added_at DESC",
            )?;
            let rows = stmt.query_map([pattern], |r| digest_col(r, 0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let mut images = Vec::new();
        for manifest in manifests {
            if let Some(image) = self.image_as_recorded(&manifest)? {
                images.push(image);
            }
        }
        crate::image_ops::measure_unknown_sizes(self, &mut images);
        Ok(images)
    }

    /// Removes an image record and every name pointing at it. Its blobs and
    /// snapshots stay until [`Store::gc`] finds them unreferenced.
    pub fn delete_image(&self, manifest: &Digest) -> Result<()> {
        let mut db = self.db();
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "DELETE FROM refs WHERE manifest_digest = ?1",
            [manifest.to_string()],
        )?;
        tx.execute(
            "DELETE FROM image_layers WHERE manifest_digest = ?1",
            [manifest.to_string()],
        )?;
        tx.execute(
            "DELETE FROM hidden_images WHERE manifest_digest = ?1",
            [manifest.to_string()],
        )?;
        let removed = tx.execute(
            "DELETE FROM images WHERE manifest_digest = ?1",
            [manifest.to_string()],
        )?;
        tx.commit()?;
        if removed == 0 {
            return Err(StoreError::ImageNotFound {
                manifest: manifest.clone(),
            });
        }
        Ok(())
    }

    /// docker's `rmi -f` of an image that stopped containers use: every name
    /// goes and the image disappears from listings and from lookups by id,
    /// but its record, layers and snapshots stay for the containers that
    /// hold it ([`Store::hold_image`]) and are deleted when the last of them
    /// releases it ([`Store::release_holds`]).
    pub fn hide_image(&self, manifest: &Digest) -> Result<()> {
        let mut db = self.db();
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "DELETE FROM refs WHERE manifest_digest = ?1",
            [manifest.to_string()],
        )?;
        tx.execute(
            "INSERT OR IGNORE INTO hidden_images(manifest_digest) VALUES (?1)",
            [manifest.to_string()],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Deletes the hidden images ([`Store::hide_image`]) nothing holds any
    /// more; returns how many.
    pub(crate) fn delete_released_hidden_images(&self) -> Result<usize> {
        let manifests: Vec<Digest> = {
            let db = self.db();
            let mut stmt = db.prepare(
                "SELECT manifest_digest FROM hidden_images WHERE manifest_digest NOT IN
                 (SELECT target FROM leases WHERE kind = 'image')",
            )?;
            let rows = stmt.query_map([], |r| digest_col(r, 0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let mut deleted = 0;
        for manifest in manifests {
            match self.delete_image(&manifest) {
                Ok(()) => deleted += 1,
                // Already gone: only the hidden row was left.
                Err(StoreError::ImageNotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(deleted)
    }

    /// Whether a live process holds a lease on the image.
    pub fn image_in_use(&self, manifest: &Digest) -> Result<bool> {
        self.reap_dead_holders()?;
        let db = self.db();
        let found: Option<i64> = db
            .query_row(
                "SELECT 1 FROM leases WHERE kind = 'image' AND target = ?1 LIMIT 1",
                [manifest.to_string()],
                |r| r.get(0),
            )
            .optional()?;
        Ok(found.is_some())
    }

    /// Chain ids used by any image other than `manifest`.
    pub fn chain_ids_used_elsewhere(&self, manifest: &Digest) -> Result<Vec<Digest>> {
        let db = self.db();
        let mut stmt =
            db.prepare("SELECT DISTINCT chain_id FROM image_layers WHERE manifest_digest != ?1")?;
        let rows = stmt.query_map([manifest.to_string()], |r| digest_col(r, 0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Looks up a build-cache entry (room for the build cache).
    pub fn cache_get(&self, key: &str) -> Result<Option<String>> {
        let db = self.db();
        let found: Option<String> = db
            .query_row(
                "SELECT result FROM build_cache WHERE cache_key = ?1",
                [key],
                |r| r.get(0),
            )
            .optional()?;
        if found.is_some() {
            db.execute(
                "UPDATE build_cache SET last_used = ?2 WHERE cache_key = ?1",
                params![key, now_unix()],
            )?;
        }
        Ok(found)
    }

    /// Records a build-cache entry.
    pub fn cache_put(&self, key: &str, result: &str) -> Result<()> {
        let now = now_unix();
        self.db().execute(
            "INSERT INTO build_cache(cache_key, result, created_at, last_used) VALUES (?1, ?2, ?3, ?3)
             ON CONFLICT(cache_key) DO UPDATE SET result = excluded.result, last_used = excluded.last_used",
            params![key, result, now],
        )?;
        Ok(())
    }

    /// Disk use summary.
    pub fn usage(&self) -> Result<Usage> {
        self.reap_dead_holders()?;
        let images = self.list_images_as_recorded()?;
        let mut usage = Usage {
            images: images.len() as u64,
            ..Usage::default()
        };
        let mut kept = std::collections::HashSet::new();
        let mut kept_snapshots = std::collections::HashSet::new();
        for image in &images {
            if self.image_in_use(&image.manifest)? {
                usage.images_in_use += 1;
                kept.insert(image.manifest.to_string());
                kept.insert(image.config.to_string());
                for layer in &image.layers {
                    kept.insert(layer.layer.blob.to_string());
                    kept_snapshots.insert(layer.chain_id.hex().to_string());
                }
            }
        }
        let blob_dir = self.root.join("blobs/sha256");
        if let Ok(entries) = std::fs::read_dir(&blob_dir) {
            for entry in entries.flatten() {
                let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                usage.blob_bytes += size;
                let name = format!("sha256:{}", entry.file_name().to_string_lossy());
                if !kept.contains(&name) {
                    usage.reclaimable_blob_bytes += size;
                }
            }
        }
        let snap_dir = self.root.join("snapshots");
        if let Ok(entries) = std::fs::read_dir(&snap_dir) {
            for entry in entries.flatten() {
                let size = dir_size(&entry.path());
                usage.snapshots += 1;
                usage.snapshot_bytes += size;
                if kept_snapshots.contains(entry.file_name().to_string_lossy().as_ref()) {
                    usage.snapshots_in_use += 1;
                } else {
                    usage.reclaimable_snapshot_bytes += size;
                }
            }
        }
        usage.build_cache_entries =
            self.db()
                .query_row("SELECT COUNT(*) FROM build_cache", [], |r| {
                    r.get::<_, i64>(0)
                })? as u64;
        Ok(usage)
    }
}

/// Apparent size of regular files under `dir` (no symlinks followed), a
/// multiply-linked file by its share.
pub(crate) fn dir_size(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&path) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(file_type) = entry.file_type() else {
                continue;
            };
            if file_type.is_dir() {
                stack.push(entry.path());
            } else if file_type.is_file() {
                // A file with several names (snapshots share unchanged files
                // by hard links, see kiln-build's COPY reuse) counts its share
                // under each, so summing over all of them counts it once.
                use std::os::unix::fs::MetadataExt;
                total += entry
                    .metadata()
                    .map(|m| m.len() / m.nlink().max(1))
                    .unwrap_or(0);
            }
        }
    }
    total
}

/// The manifest digest text stored for `name`, unparsed (callers decide when a
/// malformed row is an error).
fn stored_ref(conn: &Connection, name: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row(
        "SELECT manifest_digest FROM refs WHERE name = ?1",
        [name],
        |r| r.get(0),
    )
    .optional()
}
