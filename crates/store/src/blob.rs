//! Writing and reading blobs. A blob is first written to this process's temp
//! directory while being hashed; only when complete, verified and fsynced is it
//! renamed to `blobs/sha256/<hex>`, so a crash at any moment leaves either no
//! blob or the whole blob under its digest name, never half of one.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest as _, Sha256};

use crate::{Digest, Lease, Result, Store, StoreError, sync_dir};

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A blob in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    pub digest: Digest,
    pub size: u64,
}

/// An in-progress blob: write its bytes, then [`BlobWriter::commit`].
/// Dropping it without committing deletes the temp file.
///
/// Big blobs are written and hashed by a worker thread while the caller
/// produces the next bytes (a layer tar read from files, a download): sha256
/// and the copy into the page cache are most of what storing a layer costs,
/// and this way they overlap with the reading. The worker also starts the
/// disk writeback of each chunk as it goes, so the fsync at commit waits
/// only for the tail. A blob that fits in one chunk never starts a thread.
pub struct BlobWriter<'s> {
    store: &'s Store,
    temp_path: PathBuf,
    /// Bytes not yet handed to the worker (or written, without one).
    pending: Vec<u8>,
    /// The file and hasher, until the worker takes them; None once committed.
    sink: Option<Sink>,
    worker: Option<Worker>,
    size: u64,
    /// Bytes gathered before they are handed on ([`CHUNK`], or less for a
    /// resumable download, whose bytes should reach the file soon).
    chunk: usize,
    /// A resumable download's partial file stays when the writer is dropped
    /// uncommitted (see [`Store::resumable_blob_writer`]).
    keep_on_drop: bool,
}

/// Where bytes go: the temp file, through the hasher.
struct Sink {
    file: File,
    hasher: Sha256,
    written: u64,
    /// Bytes up to here have had their writeback started.
    flushed: u64,
}

impl Sink {
    fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.file.write_all(chunk)?;
        self.hasher.update(chunk);
        self.written += chunk.len() as u64;
        if self.written - self.flushed >= WRITEBACK_STEP {
            start_writeback(&self.file, self.flushed, self.written - self.flushed);
            self.flushed = self.written;
        }
        Ok(())
    }
}

struct Worker {
    chunks: std::sync::mpsc::SyncSender<Vec<u8>>,
    /// Emptied buffers coming back for reuse.
    spare: std::sync::mpsc::Receiver<Vec<u8>>,
    done: std::thread::JoinHandle<io::Result<Sink>>,
}

/// Chunk handed to the worker.
const CHUNK: usize = 1 << 20;
/// How much written data may wait before its writeback is started.
const WRITEBACK_STEP: u64 = 8 << 20;

/// Starts (does not wait for) the disk writeback of a range of `file`:
/// `sync_file_range(SYNC_FILE_RANGE_WRITE)`. Only a hint; errors show at fsync.
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: a plain syscall on an open fd; no memory is passed.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

impl BlobWriter<'_> {
    /// Hands `pending` to the worker (starting it if needed).
    fn ship(&mut self) -> io::Result<()> {
        if self.worker.is_none() {
            let mut sink = self
                .sink
                .take()
                .ok_or_else(|| io::Error::other("blob writer already finished"))?;
            let (chunks, receive) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
            let (give_back, spare) = std::sync::mpsc::channel::<Vec<u8>>();
            let done = std::thread::Builder::new()
                .name("kiln-blob".into())
                .spawn(move || {
                    for mut chunk in receive {
                        sink.write(&chunk)?;
                        chunk.clear();
                        let _ = give_back.send(chunk);
                    }
                    Ok(sink)
                })?;
            self.worker = Some(Worker {
                chunks,
                spare,
                done,
            });
        }
        let Some(worker) = self.worker.as_ref() else {
            return Err(io::Error::other("blob writer already finished"));
        };
        let next = worker
            .spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(self.chunk));
        let chunk = std::mem::replace(&mut self.pending, next);
        if worker.chunks.send(chunk).is_err() {
            // The worker stopped on an error: report it now.
            return match self.worker.take().map(|w| w.done.join()) {
                Some(Ok(Err(e))) => Err(e),
                _ => Err(io::Error::other("blob writer thread failed")),
            };
        }
        Ok(())
    }

    /// Writes what is pending and returns the sink (joining the worker).
    fn finish_sink(&mut self) -> io::Result<Sink> {
        let pending = std::mem::take(&mut self.pending);
        match self.worker.take() {
            Some(worker) => {
                let sent = pending.is_empty() || worker.chunks.send(pending).is_ok();
                drop(worker.chunks);
                let sink = worker
                    .done
                    .join()
                    .map_err(|_| io::Error::other("blob writer thread panicked"))??;
                if !sent {
                    return Err(io::Error::other("blob writer thread stopped early"));
                }
                Ok(sink)
            }
            None => {
                let mut sink = self
                    .sink
                    .take()
                    .ok_or_else(|| io::Error::other("blob writer already finished"))?;
                sink.write(&pending)?;
                Ok(sink)
            }
        }
    }
}

impl Write for BlobWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.sink.is_none() && self.worker.is_none() {
            return Err(io::Error::other("blob writer already finished"));
        }
        let room = self.chunk.saturating_sub(self.pending.len());
        let take = buf.get(..room.min(buf.len())).unwrap_or(buf);
        self.pending.extend_from_slice(take);
        self.size += take.len() as u64;
        if self.pending.len() >= self.chunk {
            self.ship()?;
        }
        Ok(take.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl BlobWriter<'_> {
    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Verifies the content against `expected` (when given), fsyncs it, records
    /// it in `lease` (so no concurrent gc can remove it before an image refers
    /// to it) and renames it to its digest name.
    pub fn commit(mut self, lease: &Lease<'_>, expected: Option<&Digest>) -> Result<BlobInfo> {
        if self.sink.is_none() && self.worker.is_none() {
            return Err(StoreError::Corrupt("blob writer committed twice".into()));
        }
        let sink = self.finish_sink().map_err(|e| StoreError::Io {
            action: "writing blob",
            path: self.temp_path.clone(),
            source: e,
        })?;
        let file = sink.file;
        let digest = Digest::from_sha256_bytes(&sink.hasher.finalize());
        if let Some(expected) = expected
            && *expected != digest
        {
            let _ = fs::remove_file(&self.temp_path);
            return Err(StoreError::DigestMismatch {
                expected: expected.clone(),
                actual: digest,
                size: self.size,
            });
        }
        // The lease goes in before the blob becomes visible: gc lists files
        // first and reads leases after, so it can never see this blob unleased.
        lease.add_blob(&digest)?;
        let final_path = self.store.blob_path(&digest);
        if final_path.exists() {
            let _ = fs::remove_file(&self.temp_path);
        } else {
            file.sync_all()
                .map_err(StoreError::io("syncing blob", &self.temp_path))?;
            drop(file);
            fs::rename(&self.temp_path, &final_path)
                .map_err(StoreError::io("renaming blob into place", &final_path))?;
            sync_dir(final_path.parent().unwrap_or(self.store.root()))?;
        }
        Ok(BlobInfo {
            digest,
            size: self.size,
        })
    }
}

impl Drop for BlobWriter<'_> {
    fn drop(&mut self) {
        let unfinished = self.sink.is_some() || self.worker.is_some();
        if self.keep_on_drop && unfinished {
            // What arrived is kept for the next attempt.
            let _ = self.finish_sink();
            return;
        }
        if let Some(worker) = self.worker.take() {
            drop(worker.chunks);
            let _ = worker.done.join();
            let _ = fs::remove_file(&self.temp_path);
        } else if self.sink.is_some() {
            let _ = fs::remove_file(&self.temp_path);
        }
    }
}

impl Store {
    /// Starts writing a new blob.
    pub fn blob_writer(&self) -> Result<BlobWriter<'_>> {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let temp_path = self.tmp_dir().join(format!("blob-{n}"));
        let file =
            File::create(&temp_path).map_err(StoreError::io("creating temp blob", &temp_path))?;
        Ok(BlobWriter {
            store: self,
            temp_path,
            pending: Vec::with_capacity(CHUNK),
            sink: Some(Sink {
                file,
                hasher: Sha256::new(),
                written: 0,
                flushed: 0,
            }),
            worker: None,
            size: 0,
            chunk: CHUNK,
            keep_on_drop: false,
        })
    }

    /// A writer for a download of the blob `digest` that outlives the
    /// process: its bytes go to `partial/<hex>` (flocked while written), and
    /// a later call continues where a killed or failed one stopped (the bytes
    /// already there are hashed again first; [`BlobWriter::size`] says how
    /// many, so the caller asks only for the rest). Commit verifies the whole
    /// as usual; on a mismatch the partial file is deleted. When another
    /// process is writing the same blob, a plain [`Store::blob_writer`].
    pub fn resumable_blob_writer(&self, digest: &Digest) -> Result<BlobWriter<'_>> {
        let dir = self.root.join("partial");
        fs::create_dir_all(&dir).map_err(StoreError::io("creating partial directory", &dir))?;
        let path = dir.join(digest.hex());
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(StoreError::io("opening partial blob", &path))?;
        if file.try_lock().is_err() {
            return self.blob_writer();
        }
        let mut hasher = Sha256::new();
        let mut held = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let part = buf.get(..n).unwrap_or_default();
                    hasher.update(part);
                    held += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    // Unreadable: start over.
                    file.set_len(0)
                        .map_err(StoreError::io("truncating partial blob", &path))?;
                    hasher = Sha256::new();
                    held = 0;
                    break;
                }
            }
        }
        use std::io::Seek;
        file.seek(io::SeekFrom::Start(held))
            .map_err(StoreError::io("opening partial blob", &path))?;
        const RESUMABLE_CHUNK: usize = 64 * 1024;
        Ok(BlobWriter {
            store: self,
            temp_path: path,
            pending: Vec::with_capacity(RESUMABLE_CHUNK),
            sink: Some(Sink {
                file,
                hasher,
                written: held,
                flushed: held,
            }),
            worker: None,
            size: held,
            chunk: RESUMABLE_CHUNK,
            keep_on_drop: true,
        })
    }

    /// Stores `data` as a blob.
    pub fn put_blob(&self, lease: &Lease<'_>, data: &[u8]) -> Result<BlobInfo> {
        let digest = Digest::of_bytes(data);
        if self.has_blob(&digest) {
            lease.add_blob(&digest)?;
            // Re-check after leasing: a gc that ran between the two checks
            // may have removed it, and then we write it again.
            if self.has_blob(&digest) {
                return Ok(BlobInfo {
                    digest,
                    size: data.len() as u64,
                });
            }
        }
        let mut writer = self.blob_writer()?;
        let temp = writer.temp_path.clone();
        writer
            .write_all(data)
            .map_err(StoreError::io("writing blob", temp))?;
        writer.commit(lease, Some(&digest))
    }

    /// Copies `reader` into a blob, verifying it against `expected` if given.
    pub fn copy_blob(
        &self,
        lease: &Lease<'_>,
        reader: &mut dyn Read,
        expected: Option<&Digest>,
    ) -> Result<BlobInfo> {
        let mut writer = self.blob_writer()?;
        let temp = writer.temp_path.clone();
        io::copy(reader, &mut writer).map_err(StoreError::io("writing blob", temp))?;
        writer.commit(lease, expected)
    }

    /// Whether the blob file exists.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Opens a blob for reading.
    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        File::open(self.blob_path(digest)).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                StoreError::BlobMissing {
                    digest: digest.clone(),
                    root: self.root.clone(),
                }
            } else {
                StoreError::Io {
                    action: "opening blob",
                    path: self.blob_path(digest),
                    source: e,
                }
            }
        })
    }

    /// Reads a whole (small) blob, verifying its digest: manifests and configs
    /// are read this way so that a damaged one is never trusted.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let mut data = Vec::new();
        self.open_blob(digest)?
            .read_to_end(&mut data)
            .map_err(StoreError::io("reading blob", self.blob_path(digest)))?;
        let actual = Digest::of_bytes(&data);
        if actual != *digest {
            return Err(StoreError::DigestMismatch {
                expected: digest.clone(),
                actual,
                size: data.len() as u64,
            });
        }
        Ok(data)
    }

    /// Size in bytes of a stored blob.
    pub fn blob_size(&self, digest: &Digest) -> Result<u64> {
        fs::metadata(self.blob_path(digest))
            .map(|m| m.len())
            .map_err(StoreError::io("reading blob size", self.blob_path(digest)))
    }
}

/// Hashes a file's content.
pub(crate) fn hash_file(path: &std::path::Path) -> io::Result<(Digest, u64)> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(buf.get(..n).unwrap_or(&buf));
        size += n as u64;
    }
    Ok((Digest::from_sha256_bytes(&hasher.finalize()), size))
}

/// Sidecars: small files of data derived from a blob (an index of what a
/// layer holds, say) that its users would otherwise recompute by reading the
/// blob. Kept under `sidecars/<kind>/<hex>` while the blob lives; gc removes
/// them with it. Optional by nature: a missing or unreadable sidecar only
/// means the work is done the slow way, so they are written without fsync.
impl Store {
    fn sidecar_path(&self, digest: &Digest, kind: &str) -> PathBuf {
        self.root.join("sidecars").join(kind).join(digest.hex())
    }

    /// Stores `bytes` as the `kind` sidecar of blob `digest` (replacing any).
    pub fn put_sidecar(&self, digest: &Digest, kind: &str, bytes: &[u8]) -> Result<()> {
        let path = self.sidecar_path(digest, kind);
        let dir = self.root.join("sidecars").join(kind);
        fs::create_dir_all(&dir).map_err(StoreError::io("creating sidecar directory", &dir))?;
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let temp = self.tmp_dir().join(format!("sidecar-{n}"));
        fs::write(&temp, bytes).map_err(StoreError::io("writing sidecar", &temp))?;
        fs::rename(&temp, &path).map_err(StoreError::io("publishing sidecar", &path))
    }

    /// The `kind` sidecar of blob `digest`, if there is one.
    pub fn read_sidecar(&self, digest: &Digest, kind: &str) -> Option<Vec<u8>> {
        fs::read(self.sidecar_path(digest, kind)).ok()
    }
}
