//! The build context: a directory walked with `.dockerignore` rules into a
//! deterministic list of entries with their metadata and content checksums.
//!
//! * The walk never follows symlinks (a symlink is an entry with a target),
//!   visits children in byte order of their names, and applies the ignore
//!   rules as BuildKit's context walker (tonistiigi/fsutil) does: an ignored
//!   directory is skipped without being read unless an exception could
//!   re-include something inside it; then it is walked, and it appears in
//!   the result only if something inside it does.
//! * Regular files are hashed (blake3) in parallel; a persistent
//!   [`StatCache`] keyed by (path, size, mtime, ctime, inode, device) lets a
//!   rescan skip reading unchanged files entirely.
//! * Each entry gets a digest over what matters in an image: its name, type,
//!   permission bits, owner, link target, device number and contents (not
//!   timestamps). A directory's digest is a Merkle hash over its own
//!   metadata and its children's digests; [`Context::digest_of_selection`]
//!   digests the set of paths a COPY source pattern reads.

mod stat_cache;

pub use stat_cache::{StatCache, StatKey};

use std::ffi::OsStr;
use std::fs::Metadata;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::dockerignore::{
    IgnoreError, MatchError, MatchInfo, PatternMatcher, clean_path, glob_match, locate_ignore_file,
};

/// Errors while scanning a context or selecting paths in it.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// The context directory does not exist or cannot be opened.
    #[error("cannot open build context {path}: {source}; check the path given as the context")]
    ContextUnreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The context path is not a directory.
    #[error(
        "build context {path} is not a directory; pass a directory (or `-` for a tar stream) as the context"
    )]
    NotADirectory { path: PathBuf },
    /// A file-system operation failed on a path inside the context.
    #[error(
        "cannot {action} {path}: {source}; check that it exists and is readable, or exclude it in .dockerignore"
    )]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A path longer than the system allows.
    #[error(
        "path {path} in the build context is too long for the system to open ({len} bytes); shorten the directory nesting or exclude it in .dockerignore"
    )]
    PathTooLong { path: PathBuf, len: usize },
    /// An ignore pattern that cannot be evaluated.
    #[error(transparent)]
    Ignore(#[from] MatchError),
    /// The ignore file could not be read or compiled.
    #[error(transparent)]
    IgnoreFile(#[from] IgnoreError),
    /// A COPY/ADD source pattern with bad glob syntax.
    #[error(
        "source pattern {pattern:?} is malformed (unterminated `[`, trailing `\\` or bad range); escape literal `[` as `\\[`"
    )]
    BadSourcePattern { pattern: String },
}

/// A 32-byte blake3 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "blake3:{}", self.to_hex())
    }
}

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Digest({})", &self.to_hex()[..16])
    }
}

/// What kind of file an entry is.
///
/// Named pipes never appear: BuildKit does not send them. Sockets and
/// devices do appear, but COPY materialises them as empty regular files with
/// the same permission bits (observed with Docker's BuildKit), and their
/// digest is that of such a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

impl EntryKind {
    fn tag(self) -> u8 {
        match self {
            EntryKind::File => b'f',
            EntryKind::Dir => b'd',
            EntryKind::Symlink => b'l',
            EntryKind::Fifo => b'p',
            EntryKind::Socket => b's',
            EntryKind::CharDevice => b'c',
            EntryKind::BlockDevice => b'b',
        }
    }

    fn of(meta: &Metadata) -> EntryKind {
        let ft = meta.file_type();
        if ft.is_symlink() {
            EntryKind::Symlink
        } else if ft.is_dir() {
            EntryKind::Dir
        } else if ft.is_fifo() {
            EntryKind::Fifo
        } else if ft.is_socket() {
            EntryKind::Socket
        } else if ft.is_char_device() {
            EntryKind::CharDevice
        } else if ft.is_block_device() {
            EntryKind::BlockDevice
        } else {
            EntryKind::File
        }
    }
}

/// One file, directory, symlink or special file of the context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path relative to the context root, `/`-separated, as raw bytes (names
    /// need not be UTF-8).
    pub path: Vec<u8>,
    pub kind: EntryKind,
    /// Permission bits including setuid, setgid and sticky (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub inode: u64,
    pub dev: u64,
    pub nlink: u64,
    /// Device number of a character or block device.
    pub rdev: u64,
    /// Target of a symlink, as stored (never resolved).
    pub link_target: Option<Vec<u8>>,
    /// blake3 of a regular file's contents.
    pub content_hash: Option<Digest>,
    /// The entry's digest: metadata and contents; for a directory, a Merkle
    /// hash over its metadata and its (non-ignored) children.
    pub digest: Digest,
}

impl Entry {
    /// The relative path as a `Path`.
    pub fn rel_path(&self) -> &Path {
        Path::new(OsStr::from_bytes(&self.path))
    }

    /// The last path component.
    pub fn name(&self) -> &[u8] {
        match self.path.iter().rposition(|&b| b == b'/') {
            Some(slash) => &self.path[slash + 1..],
            None => &self.path,
        }
    }

    fn stat_key(&self) -> StatKey {
        StatKey {
            size: self.size,
            mtime_ns: self.mtime_ns,
            ctime_ns: self.ctime_ns,
            inode: self.inode,
            dev: self.dev,
        }
    }
}

/// Counters describing a scan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanStats {
    /// Entries in the result.
    pub entries: usize,
    /// Regular files in the result.
    pub files: usize,
    /// Files whose contents were read and hashed in this scan.
    pub files_hashed: usize,
    /// Bytes read for hashing.
    pub bytes_hashed: u64,
    /// Files whose hash came from the stat cache (not read).
    pub cache_hits: usize,
    /// Ignored directories skipped without being read.
    pub dirs_skipped: usize,
    /// Whether the stat cache file was rewritten.
    pub cache_written: bool,
    /// A stat-cache problem that did not stop the scan (damaged or
    /// unwritable cache file).
    pub cache_warning: Option<String>,
}

/// How to scan.
#[derive(Debug, Clone, Default)]
pub struct ScanOptions<'a> {
    /// Ignore rules (see [`crate::dockerignore::locate_ignore_file`]).
    pub ignore: Option<&'a PatternMatcher>,
    /// Directory for the persistent stat cache; none disables it.
    pub cache_dir: Option<PathBuf>,
    /// Hashing threads; 0 means the number of CPUs.
    pub threads: usize,
}

/// A scanned context.
#[derive(Debug, Clone)]
pub struct Context {
    root: PathBuf,
    /// In walk order, which is also sorted by [`stat_cache::walk_order`]
    /// (so lookups are binary searches).
    entries: Vec<Entry>,
    root_digest: Digest,
    stats: ScanStats,
}

fn system_time_ns(secs: i64, nsec: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nsec)
}

fn now_ns() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

fn io_error(action: &'static str, path: &Path, source: std::io::Error) -> ContextError {
    if source.raw_os_error() == Some(36) {
        // ENAMETOOLONG
        return ContextError::PathTooLong {
            len: path.as_os_str().len(),
            path: path.to_path_buf(),
        };
    }
    ContextError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

fn join_rel(parent: &[u8], name: &[u8]) -> Vec<u8> {
    if parent.is_empty() {
        return name.to_vec();
    }
    let mut p = Vec::with_capacity(parent.len() + 1 + name.len());
    p.extend_from_slice(parent);
    p.push(b'/');
    p.extend_from_slice(name);
    p
}

/// A directory on the walk stack.
struct OpenDir {
    /// Its path relative to the root (empty for the root).
    rel: Vec<u8>,
    children: Vec<(Vec<u8>, Metadata)>,
    next: usize,
    info: MatchInfo,
    /// The directory is ignored and walked only for exceptions: emit it only
    /// when something inside it is kept.
    pending: Option<Entry>,
}

fn entry_from(rel: Vec<u8>, meta: &Metadata, link_target: Option<Vec<u8>>) -> Entry {
    Entry {
        path: rel,
        kind: EntryKind::of(meta),
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        size: meta.size(),
        mtime_ns: system_time_ns(meta.mtime(), meta.mtime_nsec()),
        ctime_ns: system_time_ns(meta.ctime(), meta.ctime_nsec()),
        inode: meta.ino(),
        dev: meta.dev(),
        nlink: meta.nlink(),
        rdev: meta.rdev(),
        link_target,
        content_hash: None,
        digest: Digest([0; 32]),
    }
}

fn read_children(path: &Path) -> std::io::Result<Vec<(Vec<u8>, Metadata)>> {
    let mut children = Vec::new();
    for item in std::fs::read_dir(path)? {
        let item = item?;
        // DirEntry::metadata is an fstatat relative to the directory, so it
        // works below PATH_MAX limits and never follows symlinks.
        let meta = match item.metadata() {
            Ok(meta) => meta,
            // Deleted between readdir and stat: it is simply not there, as
            // in fsutil's walker.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        children.push((item.file_name().as_bytes().to_vec(), meta));
    }
    children.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(children)
}

/// What the walk does with one directory entry.
enum Visit {
    /// Ignored; `skipped_dir` when it is a directory left unread.
    Skip { skipped_dir: bool },
    /// Kept, not a directory.
    Leaf(Entry),
    /// A directory to walk: kept, or ignored but walked for exceptions
    /// (`pending`: emit it only if something inside is kept).
    Dir {
        entry: Entry,
        info: MatchInfo,
        pending: bool,
    },
}

fn visit(
    root: &Path,
    ignore: Option<&PatternMatcher>,
    rel: Vec<u8>,
    meta: &Metadata,
    parent_info: &MatchInfo,
) -> Result<Visit, ContextError> {
    let is_dir = meta.is_dir();
    if meta.file_type().is_fifo() {
        // BuildKit does not transfer named pipes: COPY never sees them.
        return Ok(Visit::Skip { skipped_dir: false });
    }
    let (ignored, info) = match ignore {
        Some(m) if !m.is_empty() => m.matches_using_parent_results(&rel, parent_info)?,
        _ => (false, MatchInfo::default()),
    };
    if ignored {
        if !is_dir {
            return Ok(Visit::Skip { skipped_dir: false });
        }
        if !ignore.is_some_and(|m| m.must_descend_into_ignored_dir(&rel)) {
            return Ok(Visit::Skip { skipped_dir: true });
        }
        return Ok(Visit::Dir {
            entry: entry_from(rel, meta, None),
            info,
            pending: true,
        });
    }
    if is_dir {
        return Ok(Visit::Dir {
            entry: entry_from(rel, meta, None),
            info,
            pending: false,
        });
    }
    let link_target = if meta.file_type().is_symlink() {
        let full = root.join(OsStr::from_bytes(&rel));
        let target = std::fs::read_link(&full).map_err(|e| io_error("read symlink", &full, e))?;
        Some(target.into_os_string().as_bytes().to_vec())
    } else {
        None
    };
    Ok(Visit::Leaf(entry_from(rel, meta, link_target)))
}

/// Entries of one walk, with each entry's parent index (None: top level).
type Walked = (Vec<Entry>, Vec<Option<usize>>, usize);

/// Reads a directory to walk; an unreadable ignored directory counts as
/// empty, as in fsutil.
fn open_dir(
    root: &Path,
    entry: &Entry,
    info: MatchInfo,
    pending: bool,
) -> Result<OpenDir, ContextError> {
    let full = root.join(OsStr::from_bytes(&entry.path));
    let children = match read_children(&full) {
        Ok(c) => c,
        Err(e) if pending && e.kind() == std::io::ErrorKind::PermissionDenied => Vec::new(),
        Err(e) => return Err(io_error("read directory", &full, e)),
    };
    Ok(OpenDir {
        rel: entry.path.clone(),
        children,
        next: 0,
        info,
        pending: pending.then(|| entry.clone()),
    })
}

/// Walks below one directory (depth first, siblings by name). `start` is
/// emitted first unless it is pending. Returns entries, parent indices into
/// them (None for `start` itself) and the number of ignored directories
/// skipped unread.
fn walk_tree(
    root: &Path,
    ignore: Option<&PatternMatcher>,
    start: Entry,
    info: MatchInfo,
    pending: bool,
) -> Result<Walked, ContextError> {
    let mut entries: Vec<Entry> = Vec::new();
    let mut parents: Vec<Option<usize>> = Vec::new();
    let mut skipped = 0usize;
    let first = open_dir(root, &start, info, pending)?;
    // Index in `entries` of each open directory (None while pending).
    let mut emitted_at: Vec<Option<usize>> = Vec::new();
    if pending {
        emitted_at.push(None);
    } else {
        entries.push(start);
        parents.push(None);
        emitted_at.push(Some(0));
    }
    let mut stack = vec![first];

    while let Some(top) = stack.last_mut() {
        let Some(slot) = top.children.get_mut(top.next) else {
            stack.pop();
            emitted_at.pop();
            continue;
        };
        top.next += 1;
        let name = std::mem::take(&mut slot.0);
        let meta = slot.1.clone();
        let rel = join_rel(&top.rel, &name);
        let parent_info = top.info.clone();
        let visited = visit(root, ignore, rel, &meta, &parent_info)?;
        let (entry, dir) = match visited {
            Visit::Skip { skipped_dir } => {
                skipped += usize::from(skipped_dir);
                continue;
            }
            Visit::Dir {
                entry,
                info,
                pending: true,
            } => {
                stack.push(open_dir(root, &entry, info, true)?);
                emitted_at.push(None);
                continue;
            }
            Visit::Dir { entry, info, .. } => {
                let dir = open_dir(root, &entry, info, false)?;
                (entry, Some(dir))
            }
            Visit::Leaf(entry) => (entry, None),
        };
        // Kept: first emit any pending (ignored but walked) ancestors.
        if let Some(first_pending) = stack.iter().position(|d| d.pending.is_some()) {
            for depth in first_pending..stack.len() {
                if let Some(pending) = stack[depth].pending.take() {
                    let parent = depth
                        .checked_sub(1)
                        .and_then(|d| emitted_at.get(d).copied().flatten());
                    entries.push(pending);
                    parents.push(parent);
                    emitted_at[depth] = Some(entries.len() - 1);
                }
            }
        }
        let parent = emitted_at.last().copied().flatten();
        entries.push(entry);
        parents.push(parent);
        if let Some(dir) = dir {
            stack.push(dir);
            emitted_at.push(Some(entries.len() - 1));
        }
    }
    Ok((entries, parents, skipped))
}

/// Walks `root` applying `ignore`; returns entries in walk order (parents
/// before children, siblings by name) and per-entry parent indices. The
/// top-level directories are walked on `threads` threads (stat calls
/// dominate a rescan) and the results joined in order.
fn walk(
    root: &Path,
    ignore: Option<&PatternMatcher>,
    threads: usize,
    stats: &mut ScanStats,
) -> Result<(Vec<Entry>, Vec<Option<usize>>), ContextError> {
    enum Top {
        Leaf(Entry),
        Tree(usize),
    }
    let children = read_children(root).map_err(|e| io_error("read directory", root, e))?;
    let mut order = Vec::with_capacity(children.len());
    let mut trees: Vec<(Entry, MatchInfo, bool)> = Vec::new();
    for (name, meta) in children {
        match visit(root, ignore, name, &meta, &MatchInfo::default())? {
            Visit::Skip { skipped_dir } => stats.dirs_skipped += usize::from(skipped_dir),
            Visit::Leaf(entry) => order.push(Top::Leaf(entry)),
            Visit::Dir {
                entry,
                info,
                pending,
            } => {
                order.push(Top::Tree(trees.len()));
                trees.push((entry, info, pending));
            }
        }
    }
    let next = AtomicUsize::new(0);
    let results: Vec<Mutex<Option<Result<Walked, ContextError>>>> =
        trees.iter().map(|_| Mutex::new(None)).collect();
    let workers = threads.clamp(1, trees.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((entry, info, pending)) = trees.get(i) else {
                        break;
                    };
                    let walked = walk_tree(root, ignore, entry.clone(), info.clone(), *pending);
                    if let (Some(slot), failed) = (results.get(i), walked.is_err()) {
                        if let Ok(mut slot) = slot.lock() {
                            *slot = Some(walked);
                        }
                        if failed {
                            next.store(usize::MAX / 2, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
    });
    let mut results: Vec<Option<Result<Walked, ContextError>>> = results
        .into_iter()
        .map(|m| m.into_inner().ok().flatten())
        .collect();
    // Report the first failing subtree in walk order.
    if let Some(position) = results.iter().position(|r| matches!(r, Some(Err(_))))
        && let Some(Some(Err(e))) = results.get_mut(position).map(Option::take)
    {
        return Err(e);
    }
    let mut entries = Vec::new();
    let mut parents = Vec::new();
    for item in order {
        match item {
            Top::Leaf(entry) => {
                entries.push(entry);
                parents.push(None);
            }
            Top::Tree(i) => {
                let Some(Some(Ok((sub_entries, sub_parents, skipped)))) =
                    results.get_mut(i).map(Option::take)
                else {
                    continue;
                };
                stats.dirs_skipped += skipped;
                let base = entries.len();
                entries.extend(sub_entries);
                parents.extend(sub_parents.into_iter().map(|p| p.map(|i| i + base)));
            }
        }
    }
    Ok((entries, parents))
}

/// Hashes a file's contents, refusing to follow a symlink swapped in since
/// the walk. Returns the hash and the bytes read.
fn hash_file(path: &Path) -> Result<(Digest, u64), ContextError> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| io_error("open", path, e))?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_error("read", path, e)),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((Digest(*hasher.finalize().as_bytes()), total))
}

/// Hashes `jobs` (entry index, full path) on `threads` threads.
fn hash_in_parallel(
    jobs: &[(usize, PathBuf)],
    threads: usize,
) -> Result<Vec<(usize, Digest, u64)>, ContextError> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, Digest, u64)>> = Mutex::new(Vec::with_capacity(jobs.len()));
    let first_error: Mutex<Option<ContextError>> = Mutex::new(None);
    let workers = threads.clamp(1, jobs.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                let mut local = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((index, path)) = jobs.get(i) else {
                        break;
                    };
                    match hash_file(path) {
                        Ok((digest, bytes)) => local.push((*index, digest, bytes)),
                        Err(e) => {
                            if let Ok(mut slot) = first_error.lock() {
                                slot.get_or_insert(e);
                            }
                            // Stop everyone: no point hashing more.
                            next.store(usize::MAX / 2, Ordering::Relaxed);
                            break;
                        }
                    }
                }
                if let Ok(mut all) = results.lock() {
                    all.extend(local);
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().ok().flatten() {
        return Err(e);
    }
    Ok(results.into_inner().unwrap_or_default())
}

/// Digest of an entry's metadata (and contents for files); for directories
/// `children` are the children's digests in name order.
fn entry_digest(entry: &Entry, children: &[Digest]) -> Digest {
    let mut h = blake3::Hasher::new();
    h.update(b"kiln-context-entry-v1\0");
    // Sockets and devices reach COPY as empty regular files (what BuildKit
    // does), so they digest like one.
    let (tag, content) = match entry.kind {
        EntryKind::Socket | EntryKind::CharDevice | EntryKind::BlockDevice => (
            EntryKind::File.tag(),
            Some(Digest(*blake3::hash(b"").as_bytes())),
        ),
        kind => (kind.tag(), entry.content_hash),
    };
    h.update(&[tag]);
    let name = entry.name();
    h.update(&(name.len() as u64).to_le_bytes());
    h.update(name);
    h.update(&entry.mode.to_le_bytes());
    h.update(&entry.uid.to_le_bytes());
    h.update(&entry.gid.to_le_bytes());
    if let Some(target) = &entry.link_target {
        h.update(&(target.len() as u64).to_le_bytes());
        h.update(target);
    }
    if let Some(content) = &content {
        h.update(&content.0);
    }
    if entry.kind == EntryKind::Dir {
        h.update(&(children.len() as u64).to_le_bytes());
        for child in children {
            h.update(&child.0);
        }
    }
    Digest(*h.finalize().as_bytes())
}

fn check_context_dir(root: &Path) -> Result<(), ContextError> {
    let meta = std::fs::metadata(root).map_err(|source| ContextError::ContextUnreadable {
        path: root.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(ContextError::NotADirectory {
            path: root.to_path_buf(),
        });
    }
    Ok(())
}

impl Context {
    /// Scans a build context as `kiln build` does: reads
    /// `<Dockerfile>.dockerignore` or the context's `.dockerignore` (see
    /// [`locate_ignore_file`]), then scans with it, keeping the stat cache in
    /// `cache_dir` if given.
    pub fn scan_build_context(
        root: &Path,
        dockerfile: Option<&Path>,
        cache_dir: Option<PathBuf>,
    ) -> Result<Context, ContextError> {
        check_context_dir(root)?;
        let matcher = match locate_ignore_file(root, dockerfile)? {
            Some(file) => Some(PatternMatcher::from_lines(
                &file.lines,
                &file.path.display().to_string(),
            )?),
            None => None,
        };
        Context::scan(
            root,
            &ScanOptions {
                ignore: matcher.as_ref(),
                cache_dir,
                threads: 0,
            },
        )
    }

    /// Scans `root` (see the module docs).
    pub fn scan(root: &Path, options: &ScanOptions<'_>) -> Result<Context, ContextError> {
        let scan_started = now_ns();
        check_context_dir(root)?;
        let mut stats = ScanStats::default();
        let threads = if options.threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            options.threads
        };
        let (mut entries, parents) = walk(root, options.ignore, threads, &mut stats)?;

        let mut cache = options.cache_dir.as_ref().map(|dir| {
            let absolute = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
            StatCache::load(StatCache::file_for(dir, &absolute))
        });
        if let Some(c) = &cache {
            stats.cache_warning = c.discarded.clone();
        }

        let mut jobs = Vec::new();
        for (i, entry) in entries.iter_mut().enumerate() {
            if entry.kind != EntryKind::File {
                continue;
            }
            stats.files += 1;
            let hit = cache
                .as_ref()
                .and_then(|c| c.lookup(&entry.path, &entry.stat_key()));
            match hit {
                Some(hash) => {
                    entry.content_hash = Some(Digest(hash));
                    stats.cache_hits += 1;
                }
                None => jobs.push((i, root.join(OsStr::from_bytes(&entry.path)))),
            }
        }
        for (i, digest, bytes) in hash_in_parallel(&jobs, threads)? {
            if let Some(entry) = entries.get_mut(i) {
                entry.content_hash = Some(digest);
                stats.files_hashed += 1;
                stats.bytes_hashed += bytes;
            }
        }
        if let Some(c) = cache.as_mut() {
            let items: Vec<(&[u8], StatKey, [u8; 32])> = entries
                .iter()
                .filter_map(|e| Some((e.path.as_slice(), e.stat_key(), e.content_hash?.0)))
                .collect();
            match c.save(scan_started, &items) {
                Ok(written) => stats.cache_written = written,
                Err(e) => {
                    stats.cache_warning = Some(format!(
                        "cannot write stat cache {}: {e}; the next build will rehash the context",
                        c.path().display()
                    ))
                }
            }
        }

        // Merkle digests bottom-up: children come after their parent.
        let mut child_digests: Vec<Vec<Digest>> = vec![Vec::new(); entries.len()];
        let mut top_level: Vec<Digest> = Vec::new();
        for i in (0..entries.len()).rev() {
            let mut children = std::mem::take(&mut child_digests[i]);
            children.reverse();
            let digest = entry_digest(&entries[i], &children);
            entries[i].digest = digest;
            match parents.get(i).copied().flatten() {
                Some(p) => child_digests[p].push(digest),
                None => top_level.push(digest),
            }
        }
        top_level.reverse();
        let mut h = blake3::Hasher::new();
        h.update(b"kiln-context-root-v1\0");
        h.update(&(top_level.len() as u64).to_le_bytes());
        for d in &top_level {
            h.update(&d.0);
        }
        let root_digest = Digest(*h.finalize().as_bytes());

        stats.entries = entries.len();
        Ok(Context {
            root: root.to_path_buf(),
            entries,
            root_digest,
            stats,
        })
    }

    /// The context directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// All entries in walk order (parents first, siblings by name).
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// What the scan did.
    pub fn stats(&self) -> &ScanStats {
        &self.stats
    }

    /// Digest of the whole (filtered) context.
    pub fn root_digest(&self) -> Digest {
        self.root_digest
    }

    /// The entry at a relative path (cleaned first; `.` or empty is not an
    /// entry, use [`Context::root_digest`]).
    pub fn get(&self, path: &[u8]) -> Option<&Entry> {
        let cleaned = clean_path(path);
        let rel = cleaned.strip_prefix(b"/").unwrap_or(&cleaned);
        let at = self
            .entries
            .binary_search_by(|e| stat_cache::walk_order(&e.path, rel))
            .ok()?;
        self.entries.get(at)
    }

    /// Digest of one path: a file's entry digest, or a directory's subtree
    /// (Merkle) digest. `.` gives the whole context.
    pub fn digest_of_path(&self, path: &[u8]) -> Option<Digest> {
        let cleaned = clean_path(path);
        if cleaned == b"." || cleaned == b"/" {
            return Some(self.root_digest);
        }
        self.get(&cleaned).map(|e| e.digest)
    }

    /// Entries a COPY/ADD source selects: the cleaned pattern is matched
    /// against whole relative paths with Go's `filepath.Match` (as BuildKit
    /// does), so `src/*.go` selects `.go` entries directly in `src`. A
    /// pattern without wildcards selects that one path.
    pub fn select(&self, pattern: &[u8]) -> Result<Vec<&Entry>, ContextError> {
        let cleaned = clean_path(pattern);
        let cleaned = cleaned.strip_prefix(b"/").unwrap_or(&cleaned).to_vec();
        let bad = || ContextError::BadSourcePattern {
            pattern: String::from_utf8_lossy(pattern).into_owned(),
        };
        if glob_match(&cleaned, b".").is_err() {
            return Err(bad());
        }
        if cleaned == b"." || cleaned.is_empty() {
            return Ok(self
                .entries
                .iter()
                .filter(|e| !e.path.contains(&b'/'))
                .collect());
        }
        if !cleaned.iter().any(|b| b"*?[\\".contains(b)) {
            if let Some(entry) = self.get(&cleaned) {
                return Ok(vec![entry]);
            }
            // Through a symlinked directory (`COPY linkdir/f`), as BuildKit.
            let resolved = self.resolve_links_in(&cleaned, false);
            return Ok(self.get(&resolved).into_iter().collect());
        }
        let found = self.select_wildcard(&cleaned, pattern)?;
        if !found.is_empty() {
            return Ok(found);
        }
        // The directories before the first wildcard may be symlinks.
        let parts: Vec<&[u8]> = cleaned.split(|&b| b == b'/').collect();
        let fixed = parts
            .iter()
            .take_while(|p| !p.iter().any(|b| b"*?[\\".contains(b)))
            .count();
        if fixed == 0 {
            return Ok(found);
        }
        let mut rewritten =
            self.resolve_links_in(&parts.get(..fixed).unwrap_or_default().join(&b'/'), true);
        for part in parts.get(fixed..).unwrap_or_default() {
            if !rewritten.is_empty() {
                rewritten.push(b'/');
            }
            rewritten.extend_from_slice(part);
        }
        if rewritten == cleaned {
            return Ok(found);
        }
        self.select_wildcard(&rewritten, pattern)
    }

    /// `path` (cleaned, relative) with the symlinks among its components
    /// resolved inside the context, as the entries record them: absolute
    /// targets start at the context root, `..` stops there; the last
    /// component only when `include_last`. Gives the path back unchanged
    /// after 40 links or when it has no symlink.
    pub fn resolve_links_in(&self, path: &[u8], include_last: bool) -> Vec<u8> {
        let text = String::from_utf8_lossy(path).into_owned();
        let mut parts = crate::fsview::components(&text);
        let last = if include_last { None } else { parts.pop() };
        let mut links = 0;
        let walk = crate::fsview::resolve_links(parts.into(), |resolved| {
            let Some(entry) = self.get(resolved.join("/").as_bytes()) else {
                return crate::fsview::LinkProbe::NotALink;
            };
            match (&entry.kind, &entry.link_target) {
                (EntryKind::Symlink, Some(target)) => {
                    links += 1;
                    if links > 40 {
                        return crate::fsview::LinkProbe::GiveUp;
                    }
                    crate::fsview::LinkProbe::Link(PathBuf::from(OsStr::from_bytes(target)))
                }
                _ => crate::fsview::LinkProbe::NotALink,
            }
        });
        let mut resolved = match walk {
            crate::fsview::LinkWalk::Resolved(resolved) => resolved,
            crate::fsview::LinkWalk::GaveUp { .. } => return path.to_vec(),
        };
        resolved.extend(last);
        resolved.join("/").into_bytes()
    }

    fn select_wildcard(&self, cleaned: &[u8], pattern: &[u8]) -> Result<Vec<&Entry>, ContextError> {
        let bad = || ContextError::BadSourcePattern {
            pattern: String::from_utf8_lossy(pattern).into_owned(),
        };
        let depth = cleaned.iter().filter(|&&b| b == b'/').count();
        let mut out = Vec::new();
        for entry in &self.entries {
            if entry.path.iter().filter(|&&b| b == b'/').count() != depth {
                continue;
            }
            if glob_match(cleaned, &entry.path).map_err(|_| bad())? {
                out.push(entry);
            }
        }
        Ok(out)
    }

    /// Digest of what a COPY/ADD source pattern reads: every selected path
    /// with its (subtree) digest, in walk order. Empty selections have a
    /// digest too; the build engine decides whether that is an error.
    pub fn digest_of_selection(&self, pattern: &[u8]) -> Result<Digest, ContextError> {
        if clean_path(pattern) == b"." {
            return Ok(self.root_digest);
        }
        let selected = self.select(pattern)?;
        let digest = digest_of_entries(&selected);
        // COPY follows a selected symlink: what it points to is read too.
        let targets: Vec<Option<Digest>> = selected
            .iter()
            .filter(|e| e.kind == EntryKind::Symlink)
            .map(|e| self.digest_of_path(&self.resolve_links_in(&e.path, true)))
            .collect();
        if targets.is_empty() {
            return Ok(digest);
        }
        let mut h = blake3::Hasher::new();
        h.update(b"kiln-context-selection-links-v1\0");
        h.update(&digest.0);
        for target in targets {
            match target {
                Some(d) => h.update(&d.0),
                None => h.update(&[0]),
            };
        }
        Ok(Digest(*h.finalize().as_bytes()))
    }

    /// Digest of a set of relative paths (each a file or subtree); missing
    /// paths are recorded as missing.
    pub fn digest_of_paths<P: AsRef<[u8]>>(&self, paths: &[P]) -> Digest {
        let mut h = blake3::Hasher::new();
        h.update(b"kiln-context-paths-v1\0");
        let mut cleaned: Vec<Vec<u8>> = paths.iter().map(|p| clean_path(p.as_ref())).collect();
        cleaned.sort();
        cleaned.dedup();
        for path in &cleaned {
            h.update(&(path.len() as u64).to_le_bytes());
            h.update(path);
            match self.digest_of_path(path) {
                Some(d) => {
                    h.update(&[1]);
                    h.update(&d.0);
                }
                None => {
                    h.update(&[0]);
                }
            }
        }
        Digest(*h.finalize().as_bytes())
    }
}

fn digest_of_entries(entries: &[&Entry]) -> Digest {
    let mut h = blake3::Hasher::new();
    h.update(b"kiln-context-selection-v1\0");
    h.update(&(entries.len() as u64).to_le_bytes());
    for entry in entries {
        h.update(&(entry.path.len() as u64).to_le_bytes());
        h.update(&entry.path);
        h.update(&entry.digest.0);
    }
    Digest(*h.finalize().as_bytes())
}
