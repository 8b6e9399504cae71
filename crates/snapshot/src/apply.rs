//! Safe application of a layer tar to a directory.
//!
//! Every file-system operation is made relative to a directory file descriptor: parent
//! directories are opened with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` so a
//! symlink in the tree (even one planted by an earlier entry of the same layer) resolves
//! as if the target directory were `/`; the final component is then created with
//! `O_CREAT|O_EXCL|O_NOFOLLOW`, `mkdirat`, `symlinkat`, `mknodat` or `linkat`, after the
//! old entry has been removed with `unlinkat` — never by following it. Hard-link targets
//! must be literal paths inside the root (`RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`).

use crate::compress::{Format, decompress, sniff};
use crate::digest::{Digest, HashingReader};
use crate::fsutil::{
    is_dir_mode, lstat_at, open_child_dir, open_dir_beneath_no_symlinks, open_dir_in_root,
    open_root_dir, proc_fd_path, remove_all_at, sorted_names,
};
use crate::{WHITEOUT_OPAQUE, WHITEOUT_PREFIX};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Timestamps, Uid, XattrFlags};
use std::cell::Cell;
use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::mpsc;

/// How whiteouts in the layer are represented in the target directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ApplyMode {
    /// The target holds the lower layers' files: whiteouts delete them (a flattened rootfs).
    #[default]
    Flatten,
    /// The target is an empty directory that will be an overlayfs lower dir stacked on the
    /// lower layers' dirs: whiteouts become 0/0 character devices and opaque markers set
    /// `trusted.overlay.opaque=y` on their directory. Needs root.
    Overlay,
}

/// Options and limits for [`apply_layer`].
#[derive(Clone, Debug)]
pub struct ApplyOptions {
    /// Whiteout representation.
    pub mode: ApplyMode,
    /// Maximum bytes of the uncompressed tar stream (protects against compression bombs).
    pub max_stream_bytes: u64,
    /// Maximum sum of the sizes of all files (sparse files count at their full size).
    pub max_unpacked_bytes: u64,
    /// Maximum number of entries.
    pub max_entries: u64,
    /// Maximum length in bytes of an entry path or hard-link target.
    pub max_path_len: usize,
    /// Maximum bytes of metadata records (PAX headers, GNU long names) before one entry;
    /// the tar reader holds them in memory.
    pub max_entry_metadata_bytes: u64,
    /// Set owners from the tar's numeric uid/gid. Defaults to true when running as root;
    /// without root, `chown` to other users fails, so owners are left as the caller.
    pub preserve_owners: bool,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            mode: ApplyMode::Flatten,
            max_stream_bytes: 256 << 30,
            max_unpacked_bytes: 256 << 30,
            max_entries: 4_000_000,
            max_path_len: 4096,
            max_entry_metadata_bytes: 16 << 20,
            preserve_owners: rustix::process::geteuid().is_root(),
        }
    }
}

/// What [`apply_layer`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyStats {
    /// Compression found by sniffing.
    pub format: Format,
    /// sha256 of the uncompressed tar: compare with the image config's diff_id.
    pub diff_id: Digest,
    /// Size of the uncompressed tar stream.
    pub uncompressed_size: u64,
    /// Tar entries processed (including whiteouts).
    pub entries: u64,
    /// Sum of regular file sizes written.
    pub file_bytes: u64,
    /// docker's size of the layer (moby's `directory.Size` of it unpacked),
    /// counted over every tar entry as read: regular files by size, symlinks
    /// by target length, the rest (directories, hard links, devices) nothing.
    pub content_size: u64,
    /// Whiteout and opaque entries honoured.
    pub whiteouts: u64,
    /// Device nodes skipped because the process is not root.
    pub skipped_devices: u64,
    /// Extended attributes the target file system or our privileges did not allow.
    pub skipped_xattrs: u64,
}

/// Why a layer could not be applied. Applying stops at the first error; the target
/// directory may then hold part of the layer and should be discarded by the caller.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The target directory cannot be opened.
    #[error(
        "cannot open layer target directory {root}: {source}; create it first and check its permissions"
    )]
    Root {
        /// The target directory.
        root: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The stream is not a valid (compressed) tar.
    #[error(
        "layer is not a readable tar after {entries} entries: {source}; the blob is corrupt, truncated or not a layer"
    )]
    Tar {
        /// Entries read before the error.
        entries: u64,
        /// The reader's error.
        source: io::Error,
    },
    /// An entry path leaves the target with `..`.
    #[error(
        "layer entry {path:?} climbs out of the target directory with `..`; refusing the layer (it is malformed or hostile)"
    )]
    PathEscapes {
        /// The entry path as written in the tar.
        path: String,
    },
    /// A hard link points outside the root, through a symlink, or at nothing.
    #[error(
        "layer entry {path:?} is a hard link to {target:?}, which {reason}; refusing the layer"
    )]
    BadHardlink {
        /// The entry path.
        path: String,
        /// The link target as written in the tar.
        target: String,
        /// What is wrong with the target.
        reason: String,
    },
    /// A whiteout entry is malformed.
    #[error("layer entry {path:?} is an invalid whiteout: {reason}; refusing the layer")]
    BadWhiteout {
        /// The entry path.
        path: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A limit of [`ApplyOptions`] was exceeded.
    #[error(
        "layer exceeds the limit on {what} ({limit}); refusing it as a possible bomb — if the layer is legitimate raise ApplyOptions::{field}"
    )]
    LimitExceeded {
        /// The limited quantity.
        what: &'static str,
        /// The limit.
        limit: u64,
        /// The option that sets it.
        field: &'static str,
    },
    /// An entry's parent directory cannot be created (a non-directory or a symlink loop
    /// is in the way).
    #[error(
        "layer entry {path:?}: cannot create its parent directory at {parent:?}: the name is taken by something that is not a directory, or symlinks loop; refusing the layer"
    )]
    DanglingParent {
        /// The entry path.
        path: String,
        /// The parent path.
        parent: String,
    },
    /// A tar entry type kiln does not apply.
    #[error(
        "layer entry {path:?} has unsupported tar type {kind}; only files, dirs, links, devices and fifos are allowed in layers"
    )]
    Unsupported {
        /// The entry path.
        path: String,
        /// The tar type flag.
        kind: String,
    },
    /// Overlay whiteouts need CAP_MKNOD.
    #[error(
        "layer entry {path:?}: writing an overlay whiteout needs root (CAP_MKNOD); run as root or apply in ApplyMode::Flatten"
    )]
    NeedRoot {
        /// The entry path.
        path: String,
    },
    /// A file-system operation failed.
    #[error("layer entry {path:?}: cannot {op}: {source}")]
    Io {
        /// The entry path.
        path: String,
        /// What was being done.
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
}

/// A limit the guarded reader hit, remembered so the error can be reported precisely even
/// after the tar reader wrapped it.
#[derive(Clone, Copy, Debug)]
enum StreamLimit {
    Stream,
    Metadata,
}

/// Counts uncompressed bytes, enforces the stream limit and, while the tar reader is
/// looking for the next entry, the per-entry metadata limit.
struct GuardedReader<R> {
    inner: HashingReader<R>,
    max_stream_bytes: u64,
    metadata_budget: Rc<Cell<Option<u64>>>,
    limit_hit: Rc<Cell<Option<StreamLimit>>>,
}

impl<R: Read> Read for GuardedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf)?;
        if self.inner.byte_count() > self.max_stream_bytes {
            self.limit_hit.set(Some(StreamLimit::Stream));
            return Err(io::Error::other("layer stream exceeds the size limit"));
        }
        if let Some(budget) = self.metadata_budget.get() {
            let left = budget.checked_sub(read as u64);
            if left.is_none() {
                self.limit_hit.set(Some(StreamLimit::Metadata));
                return Err(io::Error::other("entry metadata exceeds the size limit"));
            }
            self.metadata_budget.set(left);
        }
        Ok(read)
    }
}

/// Applies the layer read from `layer` (gzip, zstd or plain tar, sniffed) to the
/// directory `root`, which must exist. See the module docs for the safety rules.
pub fn apply_layer(
    layer: impl Read + Send,
    root: &Path,
    opts: &ApplyOptions,
) -> Result<ApplyStats, ApplyError> {
    let root_fd = open_root_dir(root).map_err(|source| ApplyError::Root {
        root: root.into(),
        source,
    })?;
    let mut layer = layer;
    let mut head = [0u8; 4];
    let head_len = read_up_to(&mut layer, &mut head)
        .map_err(|source| ApplyError::Tar { entries: 0, source })?;
    let head = head.get(..head_len).unwrap_or(&[]);
    let format = sniff(head);
    let uncompressed = decompress(io::Cursor::new(head.to_vec()).chain(layer))
        .map_err(|source| ApplyError::Tar { entries: 0, source })?;
    if format == Format::Uncompressed {
        return apply_stream(uncompressed, root_fd, format, opts);
    }
    // Decompress on a second thread so inflating overlaps with writing files.
    std::thread::scope(|scope| {
        let (sender, receiver) = mpsc::sync_channel(PIPE_DEPTH);
        scope.spawn(move || pump(uncompressed, sender));
        // The receiver is dropped when apply_stream returns, which stops the pump early
        // on errors before the scope joins it.
        apply_stream(
            ChannelReader {
                receiver,
                chunk: Vec::new(),
                position: 0,
            },
            root_fd,
            format,
            opts,
        )
    })
}

/// Chunks in flight between the decompressing thread and the applier.
const PIPE_DEPTH: usize = 8;
const PIPE_CHUNK: usize = 256 * 1024;

fn pump(mut reader: impl Read, sender: mpsc::SyncSender<io::Result<Vec<u8>>>) {
    loop {
        let mut chunk = vec![0u8; PIPE_CHUNK];
        match reader.read(&mut chunk) {
            Ok(0) => return,
            Ok(read) => {
                chunk.truncate(read);
                if sender.send(Ok(chunk)).is_err() {
                    return; // The applier stopped.
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                let _ = sender.send(Err(e));
                return;
            }
        }
    }
}

/// Reads the chunks `pump` sends; the end of the channel is the end of the stream.
struct ChannelReader {
    receiver: mpsc::Receiver<io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    position: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.position >= self.chunk.len() {
            match self.receiver.recv() {
                Ok(Ok(chunk)) => {
                    self.chunk = chunk;
                    self.position = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let available = self.chunk.get(self.position..).unwrap_or(&[]);
        let count = available.len().min(buf.len());
        buf[..count].copy_from_slice(&available[..count]);
        self.position += count;
        Ok(count)
    }
}

/// What one tar entry adds to [`ApplyStats::content_size`].
pub fn entry_content_size<R: Read>(entry: &tar::Entry<'_, R>) -> u64 {
    let kind = entry.header().entry_type();
    if kind.is_file() {
        entry.size()
    } else if kind.is_symlink() {
        entry.link_name_bytes().map(|l| l.len() as u64).unwrap_or(0)
    } else {
        0
    }
}

/// Applies an uncompressed tar stream.
fn apply_stream(
    uncompressed: impl Read,
    root_fd: OwnedFd,
    format: Format,
    opts: &ApplyOptions,
) -> Result<ApplyStats, ApplyError> {
    let metadata_budget = Rc::new(Cell::new(None));
    let limit_hit = Rc::new(Cell::new(None));
    let guarded = GuardedReader {
        inner: HashingReader::new(uncompressed),
        max_stream_bytes: opts.max_stream_bytes,
        metadata_budget: Rc::clone(&metadata_budget),
        limit_hit: Rc::clone(&limit_hit),
    };
    let mut archive = tar::Archive::new(guarded);
    let mut applier = Applier {
        root: root_fd,
        opts,
        is_root: rustix::process::geteuid().is_root(),
        written: HashSet::new(),
        dir_times: Vec::new(),
        unpacked_bytes: 0,
        parent_cache: None,
        stats: ApplyStats {
            format,
            diff_id: Digest::of_bytes(b""),
            uncompressed_size: 0,
            entries: 0,
            file_bytes: 0,
            content_size: 0,
            whiteouts: 0,
            skipped_devices: 0,
            skipped_xattrs: 0,
        },
    };
    let stream_error = |source: io::Error, entries: u64| match limit_hit.get() {
        Some(StreamLimit::Stream) => ApplyError::LimitExceeded {
            what: "uncompressed layer bytes",
            limit: opts.max_stream_bytes,
            field: "max_stream_bytes",
        },
        Some(StreamLimit::Metadata) => ApplyError::LimitExceeded {
            what: "metadata bytes (PAX headers, long names) of one entry",
            limit: opts.max_entry_metadata_bytes,
            field: "max_entry_metadata_bytes",
        },
        None => ApplyError::Tar { entries, source },
    };
    {
        let mut entries = archive
            .entries()
            .map_err(|source| stream_error(source, 0))?;
        loop {
            metadata_budget.set(Some(opts.max_entry_metadata_bytes));
            let next = entries.next();
            metadata_budget.set(None);
            let Some(entry) = next else { break };
            let entry = entry.map_err(|source| stream_error(source, applier.stats.entries))?;
            applier.stats.entries += 1;
            applier.stats.content_size += entry_content_size(&entry);
            if applier.stats.entries > opts.max_entries {
                return Err(ApplyError::LimitExceeded {
                    what: "number of entries",
                    limit: opts.max_entries,
                    field: "max_entries",
                });
            }
            let entries_so_far = applier.stats.entries;
            applier.apply_entry(entry).map_err(|error| match error {
                ApplyError::Io { ref source, .. } | ApplyError::Tar { ref source, .. }
                    if limit_hit.get().is_some() =>
                {
                    stream_error(
                        io::Error::new(source.kind(), source.to_string()),
                        entries_so_far,
                    )
                }
                other => other,
            })?;
        }
    }
    applier.finish_dir_times()?;
    // Read to the real end so the diff_id covers the whole stream (tar padding included).
    let mut guarded = archive.into_inner();
    io::copy(&mut guarded, &mut io::sink())
        .map_err(|source| stream_error(source, applier.stats.entries))?;
    let (_, diff_id, uncompressed_size) = guarded.inner.finish();
    applier.stats.diff_id = diff_id;
    applier.stats.uncompressed_size = uncompressed_size;
    Ok(applier.stats)
}

fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Splits a tar path into clean components: `.` and empty parts dropped, a leading `/`
/// ignored (absolute names are taken relative to the root, as docker does), `..` popping a
/// component and refused if it would climb above the root.
pub(crate) fn clean_components(raw: &[u8]) -> Option<Vec<OsString>> {
    let mut components: Vec<OsString> = Vec::new();
    for part in raw.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                components.pop()?;
            }
            name => components.push(OsStr::from_bytes(name).to_os_string()),
        }
    }
    Some(components)
}

fn display(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).into_owned()
}

/// Metadata of one entry, with PAX overrides applied.
struct EntryMeta {
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: i64,
    xattrs: Vec<(OsString, Vec<u8>)>,
}

struct Applier<'o> {
    root: OwnedFd,
    opts: &'o ApplyOptions,
    is_root: bool,
    /// Clean paths this layer created, so an opaque marker keeps them.
    written: HashSet<PathBuf>,
    /// Directory mtimes, set at the end because adding children changes them.
    dir_times: Vec<(PathBuf, i64)>,
    unpacked_bytes: u64,
    /// The parent directory of the previous entry, by clean path.
    parent_cache: Option<(PathBuf, OwnedFd)>,
    stats: ApplyStats,
}

fn is_overlay_private_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.")
}

impl Applier<'_> {
    fn io_error<'a>(path: &'a [u8], op: &'static str) -> impl FnOnce(io::Error) -> ApplyError + 'a {
        move |source| ApplyError::Io {
            path: display(path),
            op,
            source,
        }
    }

    fn entry_meta<R: Read>(
        entry: &mut tar::Entry<'_, R>,
        raw_path: &[u8],
    ) -> Result<EntryMeta, ApplyError> {
        let header = entry.header();
        let bad = |source: io::Error| ApplyError::Tar {
            entries: 0,
            source: io::Error::new(
                source.kind(),
                format!("entry {:?}: {source}", display(raw_path)),
            ),
        };
        let mut meta = EntryMeta {
            mode: header.mode().map_err(bad)? & 0o7777,
            uid: header.uid().map_err(bad)?,
            gid: header.gid().map_err(bad)?,
            mtime: i64::try_from(header.mtime().map_err(bad)?).unwrap_or(i64::MAX),
            xattrs: Vec::new(),
        };
        if let Some(extensions) = entry.pax_extensions().map_err(bad)? {
            for extension in extensions {
                let extension = extension.map_err(bad)?;
                let key = extension.key_bytes();
                let value = extension.value_bytes();
                let as_number = || {
                    std::str::from_utf8(value)
                        .ok()
                        .and_then(|v| v.trim().parse::<u64>().ok())
                };
                match key {
                    b"uid" => meta.uid = as_number().unwrap_or(meta.uid),
                    b"gid" => meta.gid = as_number().unwrap_or(meta.gid),
                    b"mtime" => {
                        // PAX times may carry a fraction; kiln keeps whole seconds, as docker does.
                        let whole = std::str::from_utf8(value).ok().and_then(|v| {
                            v.split('.')
                                .next()
                                .and_then(|s| s.trim().parse::<i64>().ok())
                        });
                        meta.mtime = whole.unwrap_or(meta.mtime);
                    }
                    _ => {
                        if let Some(name) = key.strip_prefix(b"SCHILY.xattr.")
                            && !name.is_empty()
                            && !is_overlay_private_xattr(name)
                        {
                            meta.xattrs
                                .push((OsStr::from_bytes(name).to_os_string(), value.to_vec()));
                        }
                    }
                }
            }
        }
        Ok(meta)
    }

    fn apply_entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), ApplyError> {
        let raw_path = entry.path_bytes().into_owned();
        if raw_path.len() > self.opts.max_path_len {
            return Err(ApplyError::LimitExceeded {
                what: "entry path length",
                limit: self.opts.max_path_len as u64,
                field: "max_path_len",
            });
        }
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            return drain(&mut entry, &raw_path);
        }
        let components = clean_components(&raw_path).ok_or_else(|| ApplyError::PathEscapes {
            path: display(&raw_path),
        })?;
        let Some((name, parents)) = components.split_last() else {
            // The root itself ("./"): the caller owns the target directory's metadata.
            return drain(&mut entry, &raw_path);
        };
        for parent in parents {
            if parent.as_bytes().starts_with(WHITEOUT_PREFIX.as_bytes()) {
                if parent.as_bytes() == b".wh..wh..plnk" {
                    // AUFS hard-link store: never part of the image's file system.
                    return drain(&mut entry, &raw_path);
                }
                return Err(ApplyError::BadWhiteout {
                    path: display(&raw_path),
                    reason: "a whiteout name is used as a directory",
                });
            }
        }
        let parent_path: PathBuf = parents.iter().collect();
        let meta = Self::entry_meta(&mut entry, &raw_path)?;
        if let Some(hidden) = name.as_bytes().strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            self.parent_cache = None;
            drain(&mut entry, &raw_path)?;
            self.stats.whiteouts += 1;
            if name.as_bytes() == WHITEOUT_OPAQUE.as_bytes() {
                return self.opaque(&parent_path, &raw_path);
            }
            if hidden.starts_with(WHITEOUT_PREFIX.as_bytes()) {
                // Other AUFS metadata (`.wh..wh.*`): not a file of the image.
                return Ok(());
            }
            if hidden.is_empty() || hidden == b"." || hidden == b".." {
                return Err(ApplyError::BadWhiteout {
                    path: display(&raw_path),
                    reason: "it names no file, `.` or `..`",
                });
            }
            return self.whiteout(
                &parent_path,
                OsStr::from_bytes(hidden),
                meta.mtime,
                &raw_path,
            );
        }

        // Consecutive entries of one directory reuse its fd. Only entries of that same
        // directory run while it is cached, and they change its children, never the
        // directory itself; whiteouts drop the cache.
        let parent = match self.parent_cache.take() {
            Some((cached_path, fd)) if cached_path == parent_path => fd,
            _ => self.ensure_parent(&parent_path, &raw_path)?,
        };
        let relative: PathBuf = components.iter().collect();
        match kind {
            tar::EntryType::Directory => {
                self.make_dir(parent.as_fd(), name, &relative, &meta, &raw_path)?
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let size = entry.size();
                self.unpacked_bytes = self.unpacked_bytes.saturating_add(size);
                if self.unpacked_bytes > self.opts.max_unpacked_bytes {
                    return Err(ApplyError::LimitExceeded {
                        what: "total unpacked file bytes",
                        limit: self.opts.max_unpacked_bytes,
                        field: "max_unpacked_bytes",
                    });
                }
                self.make_file(
                    parent.as_fd(),
                    name,
                    &mut entry,
                    kind.is_gnu_sparse(),
                    size,
                    &meta,
                    &raw_path,
                )?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                self.replace_existing(parent.as_fd(), name, false, &raw_path)?;
                rustix::fs::symlinkat(OsStr::from_bytes(&target), parent.as_fd(), name.as_os_str())
                    .map_err(|e| Self::io_error(&raw_path, "create symlink")(e.into()))?;
                self.set_metadata_at(parent.as_fd(), name, &meta, false, &raw_path)?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                self.make_hardlink(parent.as_fd(), name, &target, &relative, &raw_path)?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let file_type = match kind {
                    tar::EntryType::Char => FileType::CharacterDevice,
                    tar::EntryType::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                if file_type != FileType::Fifo && !self.is_root {
                    self.stats.skipped_devices += 1;
                    return drain(&mut entry, &raw_path);
                }
                let (major, minor) = if file_type == FileType::Fifo {
                    // Fifos have no device number; some writers leave the fields empty.
                    (0, 0)
                } else {
                    let bad = |source: io::Error| ApplyError::Tar {
                        entries: 0,
                        source: io::Error::new(
                            source.kind(),
                            format!(
                                "entry {:?}: bad device number: {source}",
                                display(&raw_path)
                            ),
                        ),
                    };
                    let header = entry.header();
                    let major = header.device_major().map_err(bad)?.unwrap_or(0);
                    let minor = header.device_minor().map_err(bad)?.unwrap_or(0);
                    (major, minor)
                };
                self.replace_existing(parent.as_fd(), name, false, &raw_path)?;
                rustix::fs::mknodat(
                    parent.as_fd(),
                    name.as_os_str(),
                    file_type,
                    Mode::from_raw_mode(0o600),
                    rustix::fs::makedev(major, minor),
                )
                .map_err(|e| Self::io_error(&raw_path, "create device node or fifo")(e.into()))?;
                self.set_metadata_at(parent.as_fd(), name, &meta, true, &raw_path)?;
            }
            other => {
                return Err(ApplyError::Unsupported {
                    path: display(&raw_path),
                    kind: format!("{other:?}"),
                });
            }
        }
        // Data attached to entries that carry none (a directory or link with a size) is
        // read here, so the tar reader does not count it as the next entry's metadata.
        drain(&mut entry, &raw_path)?;
        self.written.insert(relative);
        self.parent_cache = Some((parent_path, parent));
        Ok(())
    }

    /// Opens the parent directory, creating missing directories (mode 0755, as docker
    /// does). A missing directory behind a symlink is created where the symlink points,
    /// resolved as the kernel would with the root as `/` (docker's `FollowSymlinkInScope`
    /// plus `MkdirAll`). Every `mkdirat` runs in a directory fd opened with
    /// `RESOLVE_IN_ROOT`, so nothing can be created outside the root.
    fn ensure_parent(&self, parent: &Path, raw_path: &[u8]) -> Result<OwnedFd, ApplyError> {
        match open_dir_in_root(self.root.as_fd(), parent) {
            Ok(fd) => return Ok(fd),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Self::io_error(raw_path, "open parent directory")(e)),
        }
        let cannot = |prefix: &Path| ApplyError::DanglingParent {
            path: display(raw_path),
            parent: prefix.to_string_lossy().into_owned(),
        };
        // Components still to walk, last first.
        let mut pending: Vec<OsString> = parent.iter().rev().map(OsStr::to_os_string).collect();
        let mut prefix = PathBuf::new();
        let mut current = open_dir_in_root(self.root.as_fd(), &prefix)
            .map_err(Self::io_error(raw_path, "open root directory"))?;
        let mut symlinks_followed = 0;
        while let Some(component) = pending.pop() {
            let candidate = prefix.join(&component);
            match open_dir_in_root(self.root.as_fd(), &candidate) {
                Ok(fd) => {
                    current = fd;
                    prefix = candidate;
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Self::io_error(raw_path, "open parent directory")(e)),
            }
            match rustix::fs::mkdirat(current.as_fd(), &component, Mode::from_raw_mode(0o755)) {
                Ok(()) => {
                    current = open_dir_in_root(self.root.as_fd(), &candidate)
                        .map_err(Self::io_error(raw_path, "open parent directory"))?;
                    prefix = candidate;
                }
                Err(rustix::io::Errno::EXIST) => {
                    // The name exists but resolves to nothing: a dangling symlink. Walk on
                    // from its target, as path resolution would.
                    let target = rustix::fs::readlinkat(current.as_fd(), &component, Vec::new())
                        .map_err(|_| cannot(&candidate))?;
                    symlinks_followed += 1;
                    if symlinks_followed > 40 {
                        return Err(cannot(&candidate));
                    }
                    let target = Path::new(OsStr::from_bytes(target.as_bytes()));
                    if target.is_absolute() {
                        prefix = PathBuf::new();
                        current = open_dir_in_root(self.root.as_fd(), &prefix)
                            .map_err(Self::io_error(raw_path, "open root directory"))?;
                    }
                    let target_components = target
                        .iter()
                        .filter(|c| *c != OsStr::new("/"))
                        .map(OsStr::to_os_string);
                    let rest: Vec<OsString> = target_components.collect();
                    pending.extend(rest.into_iter().rev());
                }
                Err(e) => {
                    return Err(Self::io_error(raw_path, "create parent directory")(
                        e.into(),
                    ));
                }
            }
        }
        Ok(current)
    }

    /// Removes what is at `name` unless both it and the new entry are directories.
    /// Returns true if an existing directory is kept.
    fn replace_existing(
        &self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        new_is_dir: bool,
        raw_path: &[u8],
    ) -> Result<bool, ApplyError> {
        let existing =
            lstat_at(parent, name).map_err(Self::io_error(raw_path, "inspect existing entry"))?;
        match existing {
            None => Ok(false),
            Some(stat) if new_is_dir && is_dir_mode(stat.st_mode) => Ok(true),
            Some(_) => {
                remove_all_at(parent, name)
                    .map_err(Self::io_error(raw_path, "remove existing entry"))?;
                Ok(false)
            }
        }
    }

    fn make_dir(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        relative: &Path,
        meta: &EntryMeta,
        raw_path: &[u8],
    ) -> Result<(), ApplyError> {
        if !self.replace_existing(parent, name, true, raw_path)? {
            rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o700))
                .map_err(|e| Self::io_error(raw_path, "create directory")(e.into()))?;
        }
        let dir =
            open_child_dir(parent, name).map_err(Self::io_error(raw_path, "open directory"))?;
        self.set_metadata_fd(dir.as_fd(), meta, raw_path)?;
        self.dir_times.push((relative.to_path_buf(), meta.mtime));
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn make_file<R: Read>(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        data: &mut R,
        sparse: bool,
        size: u64,
        meta: &EntryMeta,
        raw_path: &[u8],
    ) -> Result<(), ApplyError> {
        self.replace_existing(parent, name, false, raw_path)?;
        let fd = rustix::fs::openat(
            parent,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| Self::io_error(raw_path, "create file")(e.into()))?;
        let mut file = File::from(fd);
        let written = copy_file_data(data, &mut file, sparse)
            .map_err(Self::io_error(raw_path, "write file data"))?;
        if sparse {
            // Trailing holes are not written; the length must still be the logical size.
            file.set_len(size)
                .map_err(Self::io_error(raw_path, "set sparse file length"))?;
        }
        self.stats.file_bytes += written;
        self.set_metadata_fd(file.as_fd(), meta, raw_path)?;
        let times = timestamps(meta.mtime);
        rustix::fs::futimens(&file, &times)
            .map_err(|e| Self::io_error(raw_path, "set modification time")(e.into()))?;
        Ok(())
    }

    fn make_hardlink(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        raw_target: &[u8],
        relative: &Path,
        raw_path: &[u8],
    ) -> Result<(), ApplyError> {
        let bad = |reason: &str| ApplyError::BadHardlink {
            path: display(raw_path),
            target: display(raw_target),
            reason: reason.to_string(),
        };
        if raw_target.len() > self.opts.max_path_len {
            return Err(ApplyError::LimitExceeded {
                what: "hard link target length",
                limit: self.opts.max_path_len as u64,
                field: "max_path_len",
            });
        }
        let target = clean_components(raw_target)
            .ok_or_else(|| bad("climbs out of the target directory with `..`"))?;
        let Some((target_name, target_parents)) = target.split_last() else {
            return Err(bad("is the root directory"));
        };
        let target_relative: PathBuf = target.iter().collect();
        if target_relative == relative {
            return Ok(()); // A link to itself: the file is already there.
        }
        let target_parent_path: PathBuf = target_parents.iter().collect();
        let target_parent = open_dir_beneath_no_symlinks(self.root.as_fd(), &target_parent_path)
            .map_err(|e| {
                if e.kind() == io::ErrorKind::NotFound {
                    return bad("does not exist in the layer or below it");
                }
                if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error())
                    || e.raw_os_error() == Some(rustix::io::Errno::XDEV.raw_os_error())
                {
                    bad("goes through a symlink")
                } else {
                    bad(&format!("cannot be opened ({e})"))
                }
            })?;
        match lstat_at(target_parent.as_fd(), target_name) {
            Ok(Some(stat)) if is_dir_mode(stat.st_mode) => return Err(bad("is a directory")),
            Ok(Some(_)) => {}
            Ok(None) => return Err(bad("does not exist in the layer or below it")),
            Err(e) => return Err(bad(&format!("cannot be inspected ({e})"))),
        }
        self.replace_existing(parent, name, false, raw_path)?;
        rustix::fs::linkat(
            target_parent.as_fd(),
            target_name.as_os_str(),
            parent,
            name,
            AtFlags::empty(),
        )
        .map_err(|e| Self::io_error(raw_path, "create hard link")(e.into()))?;
        Ok(())
    }

    fn set_xattrs(
        &mut self,
        result: impl Fn(&OsStr, &[u8]) -> rustix::io::Result<()>,
        meta: &EntryMeta,
        raw_path: &[u8],
    ) -> Result<(), ApplyError> {
        for (name, value) in &meta.xattrs {
            match result(name, value) {
                Ok(()) => {}
                // Unsupported by the file system, or a namespace we may not write (trusted.*
                // without root, user.* on a symlink or device): skip, as containerd does.
                Err(rustix::io::Errno::NOTSUP) | Err(rustix::io::Errno::PERM) => {
                    self.stats.skipped_xattrs += 1
                }
                Err(e) => return Err(Self::io_error(raw_path, "set extended attribute")(e.into())),
            }
        }
        Ok(())
    }

    /// Owner, xattrs, then mode: chown clears setuid/setgid, so the mode comes after it.
    fn set_metadata_fd(
        &mut self,
        fd: BorrowedFd<'_>,
        meta: &EntryMeta,
        raw_path: &[u8],
    ) -> Result<(), ApplyError> {
        if self.opts.preserve_owners {
            let (uid, gid) = owner_ids(meta, raw_path)?;
            rustix::fs::fchown(fd, Some(uid), Some(gid))
                .map_err(|e| Self::io_error(raw_path, "change owner")(e.into()))?;
        }
        self.set_xattrs(
            |name, value| rustix::fs::fsetxattr(fd, name, value, XattrFlags::empty()),
            meta,
            raw_path,
        )?;
        rustix::fs::fchmod(fd, Mode::from_raw_mode(meta.mode))
            .map_err(|e| Self::io_error(raw_path, "change mode")(e.into()))?;
        Ok(())
    }

    /// Metadata for entries that cannot be opened (symlinks, devices, fifos).
    fn set_metadata_at(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        meta: &EntryMeta,
        set_mode: bool,
        raw_path: &[u8],
    ) -> Result<(), ApplyError> {
        if self.opts.preserve_owners {
            let (uid, gid) = owner_ids(meta, raw_path)?;
            rustix::fs::chownat(
                parent,
                name,
                Some(uid),
                Some(gid),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| Self::io_error(raw_path, "change owner")(e.into()))?;
        }
        let proc_path = proc_fd_path(parent, name);
        self.set_xattrs(
            |xname, value| rustix::fs::lsetxattr(&proc_path, xname, value, XattrFlags::empty()),
            meta,
            raw_path,
        )?;
        if set_mode {
            // The node was just created by name in a directory only this process writes;
            // Linux has no lchmod, and device nodes and fifos are not symlinks.
            rustix::fs::chmodat(
                parent,
                name,
                Mode::from_raw_mode(meta.mode),
                AtFlags::empty(),
            )
            .map_err(|e| Self::io_error(raw_path, "change mode")(e.into()))?;
        }
        rustix::fs::utimensat(
            parent,
            name,
            &timestamps(meta.mtime),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| Self::io_error(raw_path, "set modification time")(e.into()))?;
        Ok(())
    }

    fn whiteout(
        &mut self,
        parent_path: &Path,
        hidden: &OsStr,
        mtime: i64,
        raw_path: &[u8],
    ) -> Result<(), ApplyError> {
        match self.opts.mode {
            ApplyMode::Flatten => {
                let parent = match open_dir_in_root(self.root.as_fd(), parent_path) {
                    Ok(fd) => fd,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                    Err(e) => return Err(Self::io_error(raw_path, "open whiteout's directory")(e)),
                };
                remove_all_at(parent.as_fd(), hidden)
                    .map_err(Self::io_error(raw_path, "remove whited-out entry"))
            }
            ApplyMode::Overlay => {
                if !self.is_root {
                    return Err(ApplyError::NeedRoot {
                        path: display(raw_path),
                    });
                }
                let parent = self.ensure_parent(parent_path, raw_path)?;
                self.replace_existing(parent.as_fd(), hidden, false, raw_path)?;
                rustix::fs::mknodat(
                    parent.as_fd(),
                    hidden,
                    FileType::CharacterDevice,
                    Mode::empty(),
                    rustix::fs::makedev(0, 0),
                )
                .map_err(|e| Self::io_error(raw_path, "create overlay whiteout")(e.into()))?;
                // Keep the whiteout's time so re-diffing this dir reproduces the layer.
                rustix::fs::utimensat(
                    parent.as_fd(),
                    hidden,
                    &timestamps(mtime),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(|e| Self::io_error(raw_path, "set whiteout time")(e.into()))?;
                self.written.insert(parent_path.join(hidden));
                Ok(())
            }
        }
    }

    fn opaque(&mut self, dir_path: &Path, raw_path: &[u8]) -> Result<(), ApplyError> {
        match self.opts.mode {
            ApplyMode::Flatten => {
                let dir = match open_dir_in_root(self.root.as_fd(), dir_path) {
                    Ok(fd) => fd,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                    Err(e) => return Err(Self::io_error(raw_path, "open opaque directory")(e)),
                };
                self.clear_lower_entries(dir.as_fd(), dir_path, raw_path)
            }
            ApplyMode::Overlay => {
                if !self.is_root {
                    return Err(ApplyError::NeedRoot {
                        path: display(raw_path),
                    });
                }
                let dir = if dir_path.as_os_str().is_empty() {
                    open_dir_in_root(self.root.as_fd(), dir_path)
                        .map_err(Self::io_error(raw_path, "open opaque directory"))?
                } else {
                    let parent_path = dir_path.parent().unwrap_or(Path::new(""));
                    let parent = self.ensure_parent(parent_path, raw_path)?;
                    let name = dir_path.file_name().unwrap_or(OsStr::new("."));
                    if lstat_at(parent.as_fd(), name)
                        .map_err(Self::io_error(raw_path, "inspect opaque directory"))?
                        .is_none()
                    {
                        rustix::fs::mkdirat(parent.as_fd(), name, Mode::from_raw_mode(0o755))
                            .map_err(|e| {
                                Self::io_error(raw_path, "create opaque directory")(e.into())
                            })?;
                    }
                    open_child_dir(parent.as_fd(), name)
                        .map_err(Self::io_error(raw_path, "open opaque directory"))?
                };
                // An O_PATH fd cannot carry xattrs; reopen the directory for reading.
                let readable = rustix::fs::openat(
                    &dir,
                    ".",
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| Self::io_error(raw_path, "open opaque directory")(e.into()))?;
                rustix::fs::fsetxattr(
                    &readable,
                    "trusted.overlay.opaque",
                    b"y",
                    XattrFlags::empty(),
                )
                .map_err(|e| Self::io_error(raw_path, "mark directory opaque")(e.into()))
            }
        }
    }

    /// Removes everything below `dir` that this layer did not create itself.
    fn clear_lower_entries(
        &self,
        dir: BorrowedFd<'_>,
        dir_path: &Path,
        raw_path: &[u8],
    ) -> Result<(), ApplyError> {
        for name in sorted_names(dir).map_err(Self::io_error(raw_path, "list opaque directory"))? {
            let child_path = dir_path.join(&name);
            if !self.written.contains(&child_path) {
                remove_all_at(dir, &name)
                    .map_err(Self::io_error(raw_path, "clear opaque directory"))?;
                continue;
            }
            let is_dir = lstat_at(dir, &name)
                .map_err(Self::io_error(raw_path, "inspect entry"))?
                .is_some_and(|s| is_dir_mode(s.st_mode));
            if is_dir {
                let child = open_child_dir(dir, &name)
                    .map_err(Self::io_error(raw_path, "open directory"))?;
                self.clear_lower_entries(child.as_fd(), &child_path, raw_path)?;
            }
        }
        Ok(())
    }

    fn finish_dir_times(&mut self) -> Result<(), ApplyError> {
        // Deepest first is not needed for correctness (setting a dir's time does not touch
        // its parent), but later entries of the same dir win, as in the tar.
        for (path, mtime) in std::mem::take(&mut self.dir_times) {
            let raw = path.as_os_str().as_bytes();
            let dir = match rustix::fs::openat2(
                &self.root,
                &path,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
                rustix::fs::ResolveFlags::IN_ROOT | rustix::fs::ResolveFlags::NO_MAGICLINKS,
            ) {
                Ok(fd) => fd,
                // Removed or replaced by a later entry of the layer.
                Err(rustix::io::Errno::NOENT)
                | Err(rustix::io::Errno::NOTDIR)
                | Err(rustix::io::Errno::LOOP) => continue,
                Err(e) => return Err(Self::io_error(raw, "open directory")(e.into())),
            };
            rustix::fs::futimens(&dir, &timestamps(mtime))
                .map_err(|e| Self::io_error(raw, "set directory modification time")(e.into()))?;
        }
        Ok(())
    }
}

fn owner_ids(meta: &EntryMeta, raw_path: &[u8]) -> Result<(Uid, Gid), ApplyError> {
    let too_big = || ApplyError::Tar {
        entries: 0,
        source: io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "entry {:?}: uid {} or gid {} does not fit 32 bits",
                display(raw_path),
                meta.uid,
                meta.gid
            ),
        ),
    };
    let uid = u32::try_from(meta.uid).map_err(|_| too_big())?;
    let gid = u32::try_from(meta.gid).map_err(|_| too_big())?;
    Ok((Uid::from_raw(uid), Gid::from_raw(gid)))
}

fn timestamps(mtime: i64) -> Timestamps {
    let time = rustix::fs::Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: time,
        last_modification: time,
    }
}

fn drain<R: Read>(entry: &mut R, raw_path: &[u8]) -> Result<(), ApplyError> {
    io::copy(entry, &mut io::sink())
        .map(|_| ())
        .map_err(|source| ApplyError::Io {
            path: display(raw_path),
            op: "read entry data",
            source,
        })
}

/// Copies file data; for sparse entries, all-zero blocks become holes instead of writes,
/// so a huge sparse file takes little disk.
fn copy_file_data<R: Read>(data: &mut R, file: &mut File, sparse: bool) -> io::Result<u64> {
    const HOLE_BLOCK: usize = 4096;
    let mut buffer = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let read = match data.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let chunk = buffer.get(..read).unwrap_or(&[]);
        total += read as u64;
        if !sparse {
            file.write_all(chunk)?;
            continue;
        }
        for block in chunk.chunks(HOLE_BLOCK) {
            if block.iter().all(|&b| b == 0) {
                file.seek(SeekFrom::Current(block.len() as i64))?;
            } else {
                file.write_all(block)?;
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean(raw: &str) -> Option<Vec<String>> {
        clean_components(raw.as_bytes())
            .map(|c| c.iter().map(|s| s.to_string_lossy().into_owned()).collect())
    }

    #[test]
    fn paths_are_cleaned_relative_to_root() {
        assert_eq!(clean("./a/b/"), Some(vec!["a".into(), "b".into()]));
        assert_eq!(
            clean("/etc/passwd"),
            Some(vec!["etc".into(), "passwd".into()])
        );
        assert_eq!(clean("a/../b"), Some(vec!["b".into()]));
        assert_eq!(clean("./"), Some(vec![]));
        assert_eq!(clean("../etc/passwd"), None);
        assert_eq!(clean("a/../../b"), None);
    }
}
