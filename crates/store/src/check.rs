//! `kiln system check`: verifies every blob against its digest, that every
//! image's manifest, config and layers are present and agree with the
//! manifest, that names point at images, and that snapshot rows have their
//! directories. With `repair`, removes what is broken.

use std::collections::HashSet;
use std::fs;

use rusqlite::params;

use crate::blob::hash_file;
use crate::gc::list_names;
use crate::{Digest, Result, Store};

/// What a check found.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    /// Broken things (the store is not clean if this is non-empty).
    pub problems: Vec<String>,
    /// What `repair` removed.
    pub repaired: Vec<String>,
    pub blobs_checked: u64,
    pub bytes_checked: u64,
    pub images_checked: u64,
    pub snapshots_checked: u64,
    /// Blobs no image refers to (garbage, freed by prune; not a problem).
    pub unreferenced_blobs: u64,
    /// Snapshot directories no image refers to (garbage, not a problem).
    pub unreferenced_snapshots: u64,
}

impl CheckReport {
    /// No problems found (or all were repaired).
    pub fn is_clean(&self) -> bool {
        self.problems.len() == self.repaired.len()
    }
}

impl Store {
    /// Checks the whole store; with `repair`, removes broken blobs, images,
    /// names and snapshot rows.
    pub fn check(&self, repair: bool) -> Result<CheckReport> {
        let mut report = CheckReport::default();
        self.reap_dead_holders()?;

        let integrity: String = self
            .db()
            .query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        if integrity != "ok" {
            report.problems.push(format!(
                "database {}: {integrity}",
                self.root.join("kiln.db").display()
            ));
        }

        // Blobs: each file must hash to its name.
        let blob_dir = self.root.join("blobs/sha256");
        let mut good_blobs: HashSet<Digest> = HashSet::new();
        for name in list_names(&blob_dir)? {
            let path = blob_dir.join(&name);
            let Ok(expected) = Digest::parse(&format!("sha256:{name}")) else {
                report
                    .problems
                    .push(format!("{}: not a blob name", path.display()));
                if repair && fs::remove_file(&path).is_ok() {
                    report.repaired.push(format!("removed {}", path.display()));
                }
                continue;
            };
            match hash_file(&path) {
                Ok((actual, size)) => {
                    report.blobs_checked += 1;
                    report.bytes_checked += size;
                    if actual == expected {
                        good_blobs.insert(expected);
                    } else {
                        report.problems.push(format!(
                            "blob {expected}: content has digest {actual} ({size} bytes)"
                        ));
                        if repair && fs::remove_file(&path).is_ok() {
                            report
                                .repaired
                                .push(format!("removed corrupt blob {expected}"));
                        }
                    }
                }
                // Removed by a concurrent gc between listing and reading.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => report
                    .problems
                    .push(format!("blob {expected}: cannot read: {e}")),
            }
        }

        // Images: every blob present and good, manifest agreeing with the record.
        let mut referenced_blobs: HashSet<Digest> = HashSet::new();
        let mut referenced_chains: HashSet<Digest> = HashSet::new();
        for image in self.list_images_as_recorded()? {
            report.images_checked += 1;
            let mut broken = Vec::new();
            let mut wanted = vec![image.manifest.clone(), image.config.clone()];
            wanted.extend(image.layers.iter().map(|l| l.layer.blob.clone()));
            for digest in &wanted {
                referenced_blobs.insert(digest.clone());
                if !good_blobs.contains(digest) && !self.has_blob(digest) {
                    broken.push(format!("blob {digest} missing"));
                } else if !good_blobs.contains(digest) {
                    broken.push(format!("blob {digest} corrupt"));
                }
            }
            for layer in &image.layers {
                referenced_chains.insert(layer.chain_id.clone());
            }
            if broken.is_empty()
                && let Err(why) = manifest_agrees(self, &image)
            {
                broken.push(why);
            }
            if !broken.is_empty() {
                let names = if image.refs.is_empty() {
                    "<none>".to_string()
                } else {
                    image.refs.join(", ")
                };
                report.problems.push(format!(
                    "image {} ({names}): {}",
                    image.manifest,
                    broken.join("; ")
                ));
                if repair {
                    self.delete_image(&image.manifest)?;
                    report.repaired.push(format!(
                        "removed image {} and its names ({names})",
                        image.manifest
                    ));
                }
            }
        }
        for digest in &good_blobs {
            if !referenced_blobs.contains(digest) {
                report.unreferenced_blobs += 1;
            }
        }

        // Snapshots: each row's chain id must follow from its parent and diff
        // id, and its directory must exist; directories no image uses are garbage.
        let rows: Vec<(String, Option<String>, String)> = {
            let db = self.db();
            let mut stmt = db.prepare("SELECT chain_id, parent, diff_id FROM snapshots")?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<_>>()?
        };
        for (chain, parent, diff_id) in rows {
            report.snapshots_checked += 1;
            let mut broken = Vec::new();
            let parsed = (
                Digest::parse(&chain),
                parent.as_deref().map(Digest::parse).transpose(),
                Digest::parse(&diff_id),
            );
            match parsed {
                (Ok(chain_id), Ok(parent), Ok(diff_id)) => {
                    let expected = match &parent {
                        None => diff_id.clone(),
                        Some(parent) => Digest::of_bytes(format!("{parent} {diff_id}").as_bytes()),
                    };
                    if expected != chain_id {
                        broken.push(format!(
                            "chain id does not follow from parent {parent:?} and diff id {diff_id}"
                        ));
                    }
                    // Re-read the row: a concurrent gc removes row and directory together.
                    let still_there: bool = self
                        .db()
                        .query_row(
                            "SELECT COUNT(*) FROM snapshots WHERE chain_id = ?1",
                            [&chain],
                            |r| r.get::<_, i64>(0),
                        )
                        .map(|n| n > 0)?;
                    if still_there && !self.snapshot_path(&chain_id).is_dir() {
                        broken.push(format!(
                            "directory {} missing",
                            self.snapshot_path(&chain_id).display()
                        ));
                    }
                }
                _ => broken.push("row holds malformed digests".to_string()),
            }
            if !broken.is_empty() {
                report
                    .problems
                    .push(format!("snapshot {chain}: {}", broken.join("; ")));
                if repair {
                    self.db()
                        .execute("DELETE FROM snapshots WHERE chain_id = ?1", params![chain])?;
                    if let Ok(chain_id) = Digest::parse(&chain) {
                        let dir = self.snapshot_path(&chain_id);
                        if dir.is_dir() {
                            crate::gc::make_removable(&dir);
                            let _ = fs::remove_dir_all(&dir);
                        }
                    }
                    report.repaired.push(format!("removed snapshot {chain}"));
                }
            }
        }
        for name in list_names(&self.root.join("snapshots"))? {
            match Digest::parse(&format!("sha256:{name}")) {
                Ok(chain) if referenced_chains.contains(&chain) => {}
                _ => report.unreferenced_snapshots += 1,
            }
        }
        Ok(report)
    }
}

/// The manifest blob lists the config and layers the image record says.
fn manifest_agrees(store: &Store, image: &crate::ImageRecord) -> std::result::Result<(), String> {
    let bytes = store
        .read_blob(&image.manifest)
        .map_err(|e| format!("manifest unreadable: {e}"))?;
    let manifest: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("manifest is not JSON: {e}"))?;
    let config = manifest
        .get("config")
        .and_then(|c| c.get("digest"))
        .and_then(|d| d.as_str());
    if config != Some(image.config.to_string().as_str()) {
        return Err(format!(
            "manifest config {config:?} differs from recorded {}",
            image.config
        ));
    }
    let layers: Vec<&str> = manifest
        .get("layers")
        .and_then(|l| l.as_array())
        .map(|l| {
            l.iter()
                .filter_map(|e| e.get("digest").and_then(|d| d.as_str()))
                .collect()
        })
        .unwrap_or_default();
    let recorded: Vec<String> = image
        .layers
        .iter()
        .map(|l| l.layer.blob.to_string())
        .collect();
    if layers != recorded.iter().map(String::as_str).collect::<Vec<_>>() {
        return Err("manifest layers differ from the recorded layers".to_string());
    }
    Ok(())
}
