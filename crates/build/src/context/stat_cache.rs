//! The persistent stat cache: for each regular file of a context, the stat
//! fields that change whenever its contents can have changed (size, mtime,
//! ctime, inode, device) and the content hash computed for them. A rescan
//! whose stat fields all match reuses the hash without opening the file.
//!
//! File format (little endian), written to a temporary file and renamed into
//! place so readers never see half a file:
//! `MAGIC`, scan start (ns since the epoch, i64), record count (u64), then per
//! record: path length (u32), path bytes, size (u64), mtime ns (i64), ctime
//! ns (i64), inode (u64), device (u64), content hash (32 bytes); finally a
//! blake3 hash of everything before it. A file that fails any check is
//! discarded (everything is rehashed) rather than trusted.
//!
//! Racy entries: a file modified within the same timestamp tick as a scan
//! could change again without its mtime/ctime moving (git's "racily clean"
//! problem). Records whose ctime is not safely older than the scan that
//! hashed them are never trusted; they are rehashed next time.

use std::cell::Cell;
use std::cmp::Ordering;
use std::io::Write;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"KILNSC01";

/// How close (ns) to a scan's start a ctime may be before the record is
/// considered racy. Linux timestamps come from a coarse clock (one tick is
/// up to 10 ms), so 50 ms is a safe margin.
const RACY_MARGIN_NS: i64 = 50_000_000;

/// The stat fields a content hash is valid for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatKey {
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub inode: u64,
    pub dev: u64,
}

/// One record; its path is a range of the loaded file.
#[derive(Debug, Clone, Copy)]
struct Record {
    path_start: usize,
    path_len: usize,
    key: StatKey,
    hash: [u8; 32],
}

/// Compares `/`-separated paths component by component: the order of a
/// depth-first walk that visits siblings by name (how scans list entries
/// and how records are stored).
pub(crate) fn walk_order(a: &[u8], b: &[u8]) -> Ordering {
    let mut left = a.split(|&c| c == b'/');
    let mut right = b.split(|&c| c == b'/');
    loop {
        match (left.next(), right.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => match x.cmp(y) {
                Ordering::Equal => continue,
                other => return other,
            },
        }
    }
}

/// An in-memory stat cache, loaded from and saved to one file.
///
/// Lookups are allocation-free: records are kept in walk order inside the
/// loaded file's buffer, a cursor makes the common case (a rescan visiting
/// the same paths in the same order) O(1), and anything else is a binary
/// search.
#[derive(Debug)]
pub struct StatCache {
    file: PathBuf,
    /// When the scan that produced the loaded records started.
    previous_scan_ns: i64,
    buf: Vec<u8>,
    records: Vec<Record>,
    cursor: Cell<usize>,
    /// Why an existing cache file was not used, if it was not.
    pub discarded: Option<String>,
}

/// Whether a timestamp is too close to `scan_ns` to prove the contents were
/// stable when hashed. Whole-second timestamps (coarse filesystems) need a
/// wider margin.
fn is_racy(ctime_ns: i64, mtime_ns: i64, scan_ns: i64) -> bool {
    let newest = ctime_ns.max(mtime_ns);
    if newest.rem_euclid(1_000_000_000) == 0 {
        return newest.saturating_add(2_000_000_000) > scan_ns;
    }
    newest.saturating_add(RACY_MARGIN_NS) > scan_ns
}

impl StatCache {
    /// The cache file for a context directory under `cache_dir` (one file per
    /// context path).
    pub fn file_for(cache_dir: &Path, context_root: &Path) -> PathBuf {
        use std::os::unix::ffi::OsStrExt;
        let id = blake3::hash(context_root.as_os_str().as_bytes());
        let hex = id.to_hex();
        cache_dir.join(format!("context-{}.statcache", &hex.as_str()[..32]))
    }

    /// Loads the cache from `file`; a missing file gives an empty cache and a
    /// damaged one an empty cache with [`StatCache::discarded`] set.
    pub fn load(file: PathBuf) -> StatCache {
        let mut cache = StatCache {
            file,
            previous_scan_ns: i64::MAX,
            buf: Vec::new(),
            records: Vec::new(),
            cursor: Cell::new(0),
            discarded: None,
        };
        match std::fs::read(&cache.file) {
            Ok(bytes) => match parse(&bytes) {
                Ok((scan_ns, records)) => {
                    cache.previous_scan_ns = scan_ns;
                    cache.records = records;
                    cache.buf = bytes;
                }
                Err(why) => {
                    cache.discarded = Some(format!(
                        "stat cache {} is damaged ({why}); rehashing everything",
                        cache.file.display()
                    ));
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                cache.discarded = Some(format!(
                    "stat cache {} is unreadable ({e}); rehashing everything",
                    cache.file.display()
                ));
            }
        }
        cache
    }

    fn record_path(&self, record: &Record) -> &[u8] {
        self.buf
            .get(record.path_start..record.path_start + record.path_len)
            .unwrap_or_default()
    }

    fn find(&self, path: &[u8]) -> Option<&Record> {
        let hint = self.cursor.get();
        if let Some(record) = self.records.get(hint)
            && self.record_path(record) == path
        {
            self.cursor.set(hint + 1);
            return Some(record);
        }
        let at = self
            .records
            .binary_search_by(|r| walk_order(self.record_path(r), path))
            .ok()?;
        self.cursor.set(at + 1);
        self.records.get(at)
    }

    /// The cached content hash for `path` if its stat fields are unchanged
    /// and the record is not racy.
    pub fn lookup(&self, path: &[u8], key: &StatKey) -> Option<[u8; 32]> {
        let record = self.find(path)?;
        if record.key != *key || is_racy(key.ctime_ns, key.mtime_ns, self.previous_scan_ns) {
            return None;
        }
        Some(record.hash)
    }

    /// Replaces the file with `items` (path, stat, hash) from a scan that
    /// started at `scan_ns`, unless they equal what was loaded and none is
    /// racy. `items` must be in walk order. Returns whether it wrote.
    pub fn save(
        &mut self,
        scan_ns: i64,
        items: &[(&[u8], StatKey, [u8; 32])],
    ) -> std::io::Result<bool> {
        let unchanged = items.len() == self.records.len()
            && items
                .iter()
                .zip(&self.records)
                .all(|((path, key, hash), r)| {
                    self.record_path(r) == *path
                        && r.key == *key
                        && r.hash == *hash
                        && !is_racy(key.ctime_ns, key.mtime_ns, self.previous_scan_ns)
                });
        if unchanged {
            return Ok(false);
        }
        let mut out = Vec::with_capacity(64 + items.len() * 96);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&scan_ns.to_le_bytes());
        out.extend_from_slice(&(items.len() as u64).to_le_bytes());
        for (path, key, hash) in items {
            out.extend_from_slice(&(path.len() as u32).to_le_bytes());
            out.extend_from_slice(path);
            out.extend_from_slice(&key.size.to_le_bytes());
            out.extend_from_slice(&key.mtime_ns.to_le_bytes());
            out.extend_from_slice(&key.ctime_ns.to_le_bytes());
            out.extend_from_slice(&key.inode.to_le_bytes());
            out.extend_from_slice(&key.dev.to_le_bytes());
            out.extend_from_slice(hash);
        }
        let checksum = blake3::hash(&out);
        out.extend_from_slice(checksum.as_bytes());
        if let Some(dir) = self.file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = self
            .file
            .with_extension(format!("tmp.{}", std::process::id()));
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&out)?;
        }
        std::fs::rename(&tmp, &self.file)?;
        if let Ok((scan, records)) = parse(&out) {
            self.previous_scan_ns = scan;
            self.records = records;
            self.buf = out;
            self.cursor.set(0);
        }
        Ok(true)
    }

    /// The file this cache lives in.
    pub fn path(&self) -> &Path {
        &self.file
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if self.bytes.len() < n {
            return Err("truncated");
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        self.offset += n;
        Ok(head)
    }
    fn u64(&mut self) -> Result<u64, &'static str> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn i64(&mut self) -> Result<i64, &'static str> {
        Ok(self.u64()? as i64)
    }
    fn u32(&mut self) -> Result<u32, &'static str> {
        let b = self.take(4)?;
        let mut a = [0u8; 4];
        a.copy_from_slice(b);
        Ok(u32::from_le_bytes(a))
    }
}

fn parse(bytes: &[u8]) -> Result<(i64, Vec<Record>), &'static str> {
    if bytes.len() < MAGIC.len() + 16 + 32 {
        return Err("too short");
    }
    let (body, checksum) = bytes.split_at(bytes.len() - 32);
    if blake3::hash(body).as_bytes() != checksum {
        return Err("checksum mismatch");
    }
    let mut r = Reader {
        bytes: body,
        offset: 0,
    };
    if r.take(MAGIC.len())? != MAGIC {
        return Err("not a kiln stat cache, or another version");
    }
    let scan_ns = r.i64()?;
    let count = r.u64()?;
    // Each record takes at least 76 bytes: cap the allocation by the size.
    let mut records = Vec::with_capacity((count as usize).min(body.len() / 76));
    for _ in 0..count {
        let path_len = r.u32()? as usize;
        let path_start = r.offset;
        r.take(path_len)?;
        let key = StatKey {
            size: r.u64()?,
            mtime_ns: r.i64()?,
            ctime_ns: r.i64()?,
            inode: r.u64()?,
            dev: r.u64()?,
        };
        let mut hash = [0u8; 32];
        hash.copy_from_slice(r.take(32)?);
        records.push(Record {
            path_start,
            path_len,
            key,
            hash,
        });
    }
    if !r.bytes.is_empty() {
        return Err("trailing bytes");
    }
    Ok((scan_ns, records))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(size: u64) -> StatKey {
        StatKey {
            size,
            mtime_ns: 1_000_000_123,
            ctime_ns: 1_000_000_456,
            inode: 7,
            dev: 9,
        }
    }

    #[test]
    fn round_trip_and_lookup() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("c.statcache");
        let mut cache = StatCache::load(file.clone());
        assert!(cache.discarded.is_none());
        let items = [
            (&b"a/b"[..], key(3), [1; 32]),
            (&b"odd\nname\xff"[..], key(4), [2; 32]),
        ];
        assert!(cache.save(10_000_000_000, &items).expect("save"));
        let loaded = StatCache::load(file);
        assert_eq!(loaded.lookup(b"a/b", &key(3)), Some([1; 32]));
        assert_eq!(loaded.lookup(b"odd\nname\xff", &key(4)), Some([2; 32]));
        assert_eq!(loaded.lookup(b"a/b", &key(5)), None);
        assert_eq!(loaded.lookup(b"missing", &key(3)), None);
    }

    #[test]
    fn racy_records_are_not_trusted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("c.statcache");
        let mut cache = StatCache::load(file.clone());
        // The scan started 10 ms after the file's ctime.
        cache
            .save(1_000_000_456 + 10_000_000, &[(&b"a"[..], key(3), [1; 32])])
            .expect("save");
        assert_eq!(StatCache::load(file).lookup(b"a", &key(3)), None);
    }

    #[test]
    fn walk_order_compares_components() {
        assert_eq!(walk_order(b"a", b"a/b"), Ordering::Less);
        assert_eq!(walk_order(b"a/b", b"a.txt"), Ordering::Less);
        assert_eq!(walk_order(b"a/z", b"a.txt"), Ordering::Less);
        assert_eq!(walk_order(b"b", b"a/z"), Ordering::Greater);
        assert_eq!(walk_order(b"a/b", b"a/b"), Ordering::Equal);
    }

    #[test]
    fn lookup_out_of_order_uses_binary_search() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("c.statcache");
        let mut cache = StatCache::load(file.clone());
        let items = [
            (&b"a"[..], key(1), [1; 32]),
            (&b"a/b"[..], key(2), [2; 32]),
            (&b"a.txt"[..], key(3), [3; 32]),
        ];
        cache.save(10_000_000_000, &items).expect("save");
        let loaded = StatCache::load(file);
        assert_eq!(loaded.lookup(b"a.txt", &key(3)), Some([3; 32]));
        assert_eq!(loaded.lookup(b"a", &key(1)), Some([1; 32]));
        assert_eq!(loaded.lookup(b"a/b", &key(2)), Some([2; 32]));
        assert_eq!(loaded.lookup(b"a/c", &key(2)), None);
    }

    #[test]
    fn damaged_file_is_discarded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("c.statcache");
        let mut cache = StatCache::load(file.clone());
        cache
            .save(10_000_000_000, &[(&b"a"[..], key(3), [1; 32])])
            .expect("save");
        let mut bytes = std::fs::read(&file).expect("read");
        bytes[20] ^= 0xff;
        std::fs::write(&file, &bytes).expect("write");
        let loaded = StatCache::load(file.clone());
        assert!(loaded.discarded.is_some());
        assert_eq!(loaded.lookup(b"a", &key(3)), None);
        std::fs::write(&file, b"short").expect("write");
        assert!(StatCache::load(file).discarded.is_some());
    }

    #[test]
    fn unchanged_scan_does_not_rewrite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("c.statcache");
        let mut cache = StatCache::load(file.clone());
        let items = [(&b"a"[..], key(3), [1; 32])];
        assert!(cache.save(10_000_000_000, &items).expect("save"));
        let mut again = StatCache::load(file.clone());
        assert_eq!(again.lookup(b"a", &key(3)), Some([1; 32]));
        assert!(!again.save(11_000_000_000, &items).expect("save"));
        // A removed file is a change.
        assert!(again.save(11_000_000_000, &[]).expect("save"));
        assert_eq!(StatCache::load(file).lookup(b"a", &key(3)), None);
    }
}
