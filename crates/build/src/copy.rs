//! COPY and ADD of local files: selects what a source pattern names (in the
//! build context, honouring .dockerignore, or in a flattened stage or image
//! for `--from`) and writes it into a staging directory laid out like the
//! image root, which then becomes the step's layer.
//!
//! BuildKit's rules followed here: a directory source copies its contents,
//! not itself; a file goes to `DEST/name` when DEST ends in `/` or is an
//! existing directory, else to DEST; missing parent directories are created
//! 0755 and owned by the `--chown` owner (root otherwise); context files are
//! owned by root unless `--chown` says otherwise, while `--from` keeps the
//! source owners; `--chmod` replaces the permission bits of what is copied.
//! Parent directories that already exist in the image keep their metadata
//! (they are copied into the layer as they are); a destination under an
//! existing file, or a directory onto one, is an error. ADD unpacks local
//! archives (`archive.rs`); heredocs and URL downloads (`fetch.rs`) are
//! generated files with their own root. `--parents` keeps each source's
//! path after its `/./` pivot; `--link` copies as onto an empty image.
//!
//! Checked against BuildKit by `crates/cli/tests/build_differential_copy.rs`.

use std::ffi::{CString, OsStr};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::context::{Context, ContextError, Entry, EntryKind};
use crate::dockerignore::{clean_path, glob_match};
use crate::engine::{BuildError, io_error};
use crate::fsview::{LayerView, LinkProbe, LinkWalk, components, resolve_links};

/// Where COPY reads from.
pub enum CopySource {
    /// The build context (only the entries the scan kept).
    Context,
    /// A directory: a flattened stage or image root (`--from`).
    Dir(PathBuf),
}

/// One selected source path, relative to the source root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceItem {
    pub rel: Vec<u8>,
    pub is_dir: bool,
    /// How many leading components of `rel` `COPY --parents` drops: those
    /// before a `/./` pivot in the source pattern (0 without one).
    pub pivot: usize,
    /// Read from this directory instead of the step's source: a file kiln
    /// generated (a heredoc, a URL download), owned as written, never unpacked.
    pub root: Option<PathBuf>,
}

impl SourceItem {
    /// A file kiln wrote into `dir` (a heredoc or a download).
    pub fn generated(dir: &Path, name: &str) -> SourceItem {
        SourceItem {
            rel: name.as_bytes().to_vec(),
            is_dir: false,
            pivot: 0,
            root: Some(dir.to_path_buf()),
        }
    }
}

/// The number of path components before the last `/./` of a source pattern
/// (`COPY --parents`' pivot; a leading `./` is not one).
pub fn pivot_of(pattern: &str) -> usize {
    let trimmed = pattern.trim_start_matches("./");
    match trimmed.rfind("/./") {
        Some(at) => crate::fsview::components(trimmed.get(..at).unwrap_or_default()).len(),
        None => 0,
    }
}

/// Entries of the context a source pattern selects.
pub fn select_context(context: &Context, pattern: &str) -> Result<Vec<SourceItem>, ContextError> {
    let cleaned = clean_path(pattern.as_bytes());
    let cleaned = cleaned.strip_prefix(b"/").unwrap_or(&cleaned).to_vec();
    if cleaned.is_empty() || cleaned == b"." {
        return Ok(vec![SourceItem {
            rel: Vec::new(),
            is_dir: true,
            pivot: 0,
            root: None,
        }]);
    }
    let pivot = pivot_of(pattern);
    Ok(context
        .select(pattern.as_bytes())?
        .into_iter()
        .map(|e| SourceItem {
            rel: e.path.clone(),
            is_dir: e.kind == EntryKind::Dir,
            pivot,
            root: None,
        })
        .collect())
}

fn has_wildcard(part: &[u8]) -> bool {
    part.iter().any(|b| b"*?[\\".contains(b))
}

/// Paths under `root` a source pattern selects (wildcards per component,
/// symlinks not followed).
pub fn select_dir(root: &Path, pattern: &str) -> Result<Vec<SourceItem>, String> {
    let cleaned = clean_path(pattern.as_bytes());
    let parts: Vec<&[u8]> = cleaned
        .split(|&b| b == b'/')
        .filter(|p| !p.is_empty() && *p != b".")
        .collect();
    let mut current: Vec<Vec<u8>> = vec![Vec::new()];
    for part in parts {
        let mut next = Vec::new();
        for base in &current {
            let join = |name: &[u8]| {
                let mut path = base.clone();
                if !path.is_empty() {
                    path.push(b'/');
                }
                path.extend_from_slice(name);
                path
            };
            if has_wildcard(part) {
                let dir = root.join(OsStr::from_bytes(&follow_in_root(root, base)));
                let Ok(listing) = fs::read_dir(&dir) else {
                    continue;
                };
                let mut names: Vec<Vec<u8>> = listing
                    .filter_map(Result::ok)
                    .map(|e| e.file_name().as_bytes().to_vec())
                    .collect();
                names.sort();
                for name in names {
                    match glob_match(part, &name) {
                        Ok(true) => next.push(join(&name)),
                        Ok(false) => {}
                        Err(_) => return Err(format!("source pattern {pattern:?} is malformed")),
                    }
                }
            } else {
                next.push(join(part));
            }
        }
        current = next;
    }
    Ok(current
        .into_iter()
        .filter_map(|rel| {
            // Parents resolved inside the root: never through a host symlink.
            let name = rel.rsplit(|&b| b == b'/').next().unwrap_or(&rel).to_vec();
            let parent = rel
                .get(..rel.len().saturating_sub(name.len() + 1))
                .unwrap_or_default();
            let mut rel = follow_in_root(root, parent);
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(&name);
            let meta = fs::symlink_metadata(root.join(OsStr::from_bytes(&rel))).ok()?;
            Some(SourceItem {
                rel,
                is_dir: meta.is_dir(),
                pivot: pivot_of(pattern),
                root: None,
            })
        })
        .collect())
}

fn lchown(path: &Path, uid: u32, gid: u32) -> Result<(), BuildError> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .map_err(io_error("changing the owner of", path))
}

/// Sets a path's modification (and access) time without following symlinks.
fn set_mtime(path: &Path, seconds: i64, nanos: i64) {
    let Ok(c_path) = CString::new(path.as_os_str().as_bytes()) else {
        return;
    };
    let time = libc::timespec {
        tv_sec: seconds,
        tv_nsec: nanos,
    };
    let times = [time, time];
    // SAFETY: valid NUL-terminated path and a two-element timespec array.
    unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c_path.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        );
    }
}

/// Builds one COPY layer in `staging`.
pub struct CopyPlan<'a> {
    view: &'a LayerView,
    staging: &'a Path,
    /// ADD: local tar archives (plain, gzip, bzip2, xz, zstd) are unpacked into DEST.
    extract_archives: bool,
    /// `--exclude` patterns (.dockerignore syntax), matched against paths
    /// relative to each source (a file source: its name).
    exclude: Option<crate::dockerignore::PatternMatcher>,
    /// `--link`: the copy is made on an empty filesystem (BuildKit's linked
    /// layer): the destination is not resolved through the image's
    /// symlinks and created directories get default metadata.
    link: bool,
    /// `--parents`: each source keeps its path (after its pivot) under DEST.
    parents: bool,
    /// The same step's layer from an earlier build: files identical to what
    /// this copy would write are hard-linked from it instead of copied.
    reuse: Option<Reuse>,
    /// `staging`, opened (O_PATH) when there is something to reuse.
    staging_fd: Option<std::os::fd::OwnedFd>,
    /// What this copy wrote from the context: the next build's [`Reuse`] index.
    written: std::sync::Mutex<Vec<(Vec<u8>, [u8; 32])>>,
}

/// A layer directory an earlier build of the same COPY step left in the store
/// (a snapshot: immutable, never written in place), with the content hashes
/// of the context files it holds (`index`: path in the layer -> blake3).
///
/// Why: creating a file is what a COPY of many small files costs (on ext4 an
/// inode allocation, ~100-300 us here), and after one file of a big context
/// changed, all the others would be created again with the same bytes and
/// metadata. A hard link to the earlier layer's file costs no inode and no
/// data; the layer's tar is still written from the tree, so the result is
/// the same bytes either way. A file is linked only when its content hash
/// and every piece of metadata COPY sets (size, mode, owner, mtime) match,
/// and nothing is ever changed through the link.
pub struct Reuse {
    /// The earlier layer's directory, opened (O_PATH): lookups start here.
    root: std::os::fd::OwnedFd,
    index: std::collections::HashMap<Vec<u8>, [u8; 32]>,
}

impl Reuse {
    /// The layer in `root` with the index [`Reuse::parse_index`] read.
    pub fn open(root: &Path, index: std::collections::HashMap<Vec<u8>, [u8; 32]>) -> Option<Reuse> {
        Some(Reuse {
            root: open_dir_path(root)?,
            index,
        })
    }

    /// Parses an index written by [`CopyPlan::index_bytes`]; None if damaged.
    pub fn parse_index(bytes: &[u8]) -> Option<std::collections::HashMap<Vec<u8>, [u8; 32]>> {
        let mut index = std::collections::HashMap::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let (len, tail) = rest.split_first_chunk::<4>()?;
            let len = u32::from_le_bytes(*len) as usize;
            let path = tail.get(..len)?;
            let hash: [u8; 32] = tail.get(len..len + 32)?.try_into().ok()?;
            index.insert(path.to_vec(), hash);
            rest = tail.get(len + 32..)?;
        }
        Some(index)
    }
}

/// What a `--link` copy sees of the image: nothing.
static EMPTY_VIEW: LayerView = LayerView {
    lowers_top_first: Vec::new(),
};

impl<'a> CopyPlan<'a> {
    pub fn new(view: &'a LayerView, staging: &'a Path) -> Self {
        CopyPlan {
            view,
            staging,
            extract_archives: false,
            exclude: None,
            link: false,
            parents: false,
            reuse: None,
            staging_fd: None,
            written: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Hard-links unchanged files from an earlier build's layer (see [`Reuse`]).
    pub fn with_reuse(mut self, reuse: Option<Reuse>) -> Self {
        self.staging_fd = reuse.as_ref().and_then(|_| open_dir_path(self.staging));
        self.reuse = reuse.filter(|_| self.staging_fd.is_some());
        self
    }

    /// The index of the context files this copy wrote (see [`Reuse`]), in the
    /// form [`Reuse::parse_index`] reads; empty if there were none.
    pub fn index_bytes(&self) -> Vec<u8> {
        let written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        let mut bytes = Vec::new();
        for (path, hash) in written.iter() {
            let Ok(len) = u32::try_from(path.len()) else {
                continue;
            };
            bytes.extend_from_slice(&len.to_le_bytes());
            bytes.extend_from_slice(path);
            bytes.extend_from_slice(hash);
        }
        bytes
    }

    /// Links `target` to the earlier layer's copy of the same file if it is
    /// the same in content and in every piece of metadata COPY would set
    /// (`entry`: the context file; `mode`, `uid`, `gid`: what COPY sets).
    /// Records the file in this copy's index either way.
    fn link_unchanged(
        &self,
        target: &Path,
        entry: &Entry,
        hash: &[u8; 32],
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> bool {
        let Ok(rel) = target.strip_prefix(self.staging) else {
            return false;
        };
        let rel = rel.as_os_str().as_bytes();
        self.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((rel.to_vec(), *hash));
        let (Some(reuse), Some(staging)) = (&self.reuse, &self.staging_fd) else {
            return false;
        };
        if reuse.index.get(rel) != Some(hash) {
            return false;
        }
        let Ok(rel) = CString::new(rel) else {
            return false;
        };
        // Relative to the two roots: a short walk instead of two absolute paths.
        let Ok(old) = rustix::fs::statat(
            &reuse.root,
            rel.as_c_str(),
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        ) else {
            return false;
        };
        let mtime_ns = old
            .st_mtime
            .saturating_mul(1_000_000_000)
            .saturating_add(i64::try_from(old.st_mtime_nsec).unwrap_or(0));
        rustix::fs::FileType::from_raw_mode(old.st_mode) == rustix::fs::FileType::RegularFile
            && old.st_size as u64 == entry.size
            && old.st_mode & 0o7777 == mode
            && old.st_uid == uid
            && old.st_gid == gid
            && mtime_ns == entry.mtime_ns
            && rustix::fs::linkat(
                &reuse.root,
                rel.as_c_str(),
                staging,
                rel.as_c_str(),
                rustix::fs::AtFlags::empty(),
            )
            .is_ok()
    }

    /// `COPY --link` / `ADD --link`.
    pub fn with_link(mut self, link: bool) -> Self {
        self.link = link;
        self
    }

    /// `COPY --parents`.
    pub fn with_parents(mut self, parents: bool) -> Self {
        self.parents = parents;
        self
    }

    /// The image as this copy sees it.
    fn view(&self) -> &LayerView {
        if self.link { &EMPTY_VIEW } else { self.view }
    }

    /// `COPY --exclude=PATTERN...`.
    pub fn with_exclude(mut self, exclude: Option<crate::dockerignore::PatternMatcher>) -> Self {
        self.exclude = exclude;
        self
    }

    fn excluded(&self, rel: &[u8]) -> bool {
        self.exclude
            .as_ref()
            .is_some_and(|m| m.matches_or_parent_matches(rel).unwrap_or(false))
    }

    /// ADD's behaviour: a local tar archive source is unpacked into DEST.
    pub fn with_archive_extraction(mut self, extract: bool) -> Self {
        self.extract_archives = extract;
        self
    }

    fn staged(&self, parts: &[String]) -> PathBuf {
        let mut path = self.staging.to_path_buf();
        for part in parts {
            path.push(part);
        }
        path
    }

    /// Creates every directory of `parts` in the staging tree: existing ones
    /// with the image's metadata, new ones 0755 owned by `owner` (root when None).
    pub fn make_dirs(&self, parts: &[String], owner: Option<(u32, u32)>) -> Result<(), BuildError> {
        for depth in 1..=parts.len() {
            let prefix = parts.get(..depth).unwrap_or(parts);
            let staged = self.staged(prefix);
            if fs::symlink_metadata(&staged).is_ok() {
                continue;
            }
            if let Some((_, meta)) = self.view().lookup(prefix)
                && !meta.is_dir()
            {
                // As BuildKit: `mkdir /etc/passwd: not a directory`.
                return Err(not_a_directory("creating directory", prefix));
            }
            fs::create_dir(&staged).map_err(io_error("creating directory", &staged))?;
            match self.view().lookup(prefix) {
                Some((_, meta)) if meta.is_dir() => {
                    fs::set_permissions(&staged, fs::Permissions::from_mode(meta.mode() & 0o7777))
                        .map_err(io_error("setting the mode of", &staged))?;
                    lchown(&staged, meta.uid(), meta.gid())?;
                    set_mtime(&staged, meta.mtime(), meta.mtime_nsec());
                }
                _ => {
                    fs::set_permissions(&staged, fs::Permissions::from_mode(0o755))
                        .map_err(io_error("setting the mode of", &staged))?;
                    let (uid, gid) = owner.unwrap_or((0, 0));
                    lchown(&staged, uid, gid)?;
                }
            }
        }
        Ok(())
    }

    /// ADD of a local archive: its entries go under `dest_parts`; the
    /// directories they live in that already exist in the image keep the
    /// image's metadata in the layer (unless the archive has entries for them).
    fn unpack_archive(
        &self,
        archive: &Path,
        dest_parts: &[String],
        owner: Option<(u32, u32)>,
    ) -> Result<(), BuildError> {
        let dest_text = format!("/{}", dest_parts.join("/"));
        let archive_error = |e: crate::archive::ArchiveError| BuildError::Io {
            what: "unpacking ADD archive",
            path: archive.to_path_buf(),
            source: std::io::Error::other(e),
        };
        self.make_dirs(dest_parts, owner)?;
        let entries = crate::archive::entry_paths(archive).map_err(archive_error)?;
        for parent in crate::archive::parents_of(&entries) {
            let mut parts = dest_parts.to_vec();
            parts.extend(parent);
            if self.view().lookup(&parts).is_some_and(|(_, m)| m.is_dir()) {
                self.make_dirs(&parts, None)?;
            }
        }
        let into = self.staged(dest_parts);
        crate::archive::unpack(archive, &into, &dest_text).map_err(archive_error)?;
        // BuildKit writes an archive's `.wh.*` members as plain files, which
        // the layer then carries as whiteouts (hiding what the image had
        // there); kiln-snapshot's apply honoured them instead: put them back.
        for entry in &entries {
            if !entry.last().is_some_and(|name| name.starts_with(".wh.")) {
                continue;
            }
            let mut path = into.clone();
            let mut safe = true;
            for (i, part) in entry.iter().enumerate() {
                path.push(part);
                if i + 1 < entry.len() && !fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                    safe = false;
                    break;
                }
            }
            if safe && fs::symlink_metadata(&path).is_err() {
                fs::write(&path, b"").map_err(io_error("creating", &path))?;
            }
        }
        Ok(())
    }

    /// Copies every item to `dest` (an absolute path in the image).
    #[allow(clippy::too_many_arguments)]
    pub fn copy(
        &self,
        items: &[SourceItem],
        source: &CopySource,
        context: Option<&Context>,
        context_root: &Path,
        dest: &str,
        dest_is_dir_syntax: bool,
        owner: Option<(u32, u32)>,
        chmod: Option<&Chmod>,
    ) -> Result<(), BuildError> {
        let source_root = match source {
            CopySource::Context => context_root.to_path_buf(),
            CopySource::Dir(dir) => dir.clone(),
        };
        let dest_parts = self.view().resolve(&components(dest));
        let dest_exists_as_dir = self
            .view()
            .lookup(&dest_parts)
            .is_some_and(|(_, meta)| meta.is_dir());
        for item in items {
            let (root, from_context, generated) = match &item.root {
                Some(dir) => (dir.clone(), false, true),
                None => (
                    source_root.clone(),
                    matches!(source, CopySource::Context),
                    false,
                ),
            };
            // --parents: the source's own path (after the pivot) under DEST.
            let kept: Vec<String> = if self.parents {
                components(&String::from_utf8_lossy(&item.rel))
                    .into_iter()
                    .skip(item.pivot)
                    .collect()
            } else {
                Vec::new()
            };
            // A source path that is itself a symlink is followed (inside the
            // source root), as BuildKit does; links inside directories are kept.
            let resolved = follow_in_root(&root, &item.rel);
            let is_dir = item.is_dir
                || fs::symlink_metadata(root.join(OsStr::from_bytes(&resolved)))
                    .is_ok_and(|m| m.is_dir())
                    && fs::symlink_metadata(root.join(OsStr::from_bytes(&item.rel)))
                        .is_ok_and(|m| m.file_type().is_symlink());
            let item = &SourceItem {
                rel: if is_dir {
                    resolved.clone()
                } else {
                    item.rel.clone()
                },
                is_dir,
                pivot: item.pivot,
                root: None,
            };
            if item.is_dir {
                let mut dest_parts = dest_parts.clone();
                dest_parts.extend(kept.iter().cloned());
                if fs::symlink_metadata(self.staged(&dest_parts)).is_err()
                    && let Some((_, meta)) = self.view().lookup(&dest_parts)
                    && !meta.is_dir()
                {
                    // As BuildKit: `cannot copy to non-directory: /etc/passwd`.
                    return Err(not_a_directory("copying a directory to", &dest_parts));
                }
                self.make_dirs(&dest_parts, owner)?;
                let children = match (context, from_context) {
                    (Some(context), true) => context_children(context, &item.rel),
                    _ => dir_children(&root, &item.rel),
                };
                let mut dirs = Vec::new();
                for child in children {
                    if self.excluded(&child) {
                        continue;
                    }
                    let mut target = self.staged(&dest_parts);
                    target.push(OsStr::from_bytes(&child));
                    let mut source_rel = item.rel.clone();
                    if !source_rel.is_empty() {
                        source_rel.push(b'/');
                    }
                    source_rel.extend_from_slice(&child);
                    let real = root.join(OsStr::from_bytes(&source_rel));
                    let entry = context_entry(context, from_context, &source_rel);
                    if let Some(meta) =
                        self.copy_entry(&real, &target, from_context, owner, chmod, entry)?
                    {
                        dirs.push((target, meta));
                    }
                }
                // Directory times last: writing children changed them.
                for (dir, meta) in dirs.iter().rev() {
                    set_mtime(dir, meta.mtime(), meta.mtime_nsec());
                }
            } else {
                let name = item.rel.rsplit(|&b| b == b'/').next().unwrap_or(&item.rel);
                if self.excluded(name) {
                    continue;
                }
                let mut target_parts = dest_parts.clone();
                if self.parents && !kept.is_empty() {
                    target_parts.extend(kept.iter().cloned());
                } else if dest_is_dir_syntax || dest_exists_as_dir || dest_parts.is_empty() {
                    target_parts.push(String::from_utf8_lossy(name).into_owned());
                }
                let parent = target_parts
                    .get(..target_parts.len().saturating_sub(1))
                    .unwrap_or(&[]);
                self.make_dirs(parent, owner)?;
                let real = root.join(OsStr::from_bytes(&resolved));
                if self.extract_archives && !generated && crate::archive::is_archive(&real) {
                    self.unpack_archive(&real, &dest_parts, owner)?;
                    continue;
                }
                let target = self.staged(&target_parts);
                let entry = context_entry(context, from_context, &resolved);
                self.copy_entry(&real, &target, from_context, owner, chmod, entry)?;
            }
        }
        Ok(())
    }
}

/// A destination that must be a directory but is a file (or another
/// non-directory) in the image.
fn not_a_directory(what: &'static str, parts: &[String]) -> BuildError {
    BuildError::Io {
        what,
        path: PathBuf::from(format!("/{}", parts.join("/"))),
        source: std::io::Error::new(
            std::io::ErrorKind::NotADirectory,
            "it is not a directory in the image; choose a destination that is a directory or does not exist",
        ),
    }
}

/// A `--chmod` value: octal (replaces the permission bits) or symbolic
/// like chmod(1), applied to each copied file's own mode (`u+x,go-w`, `a=rX`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chmod {
    Octal(u32),
    Symbolic(Vec<ChmodClause>),
}

/// One `who op perms` clause of a symbolic mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChmodClause {
    /// Bits of the classes addressed (0o700 u, 0o070 g, 0o007 o; with their
    /// setuid/setgid/sticky bits).
    who: u32,
    op: char,
    perms: String,
}

impl Chmod {
    /// Parses `0755`, `755` or a symbolic mode; `None` when it is neither.
    pub fn parse(text: &str) -> Option<Chmod> {
        if !text.is_empty() && text.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            return u32::from_str_radix(text, 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .map(Chmod::Octal);
        }
        let mut clauses = Vec::new();
        for clause in text.split(',') {
            let who_len = clause.find(['+', '-', '=']).unwrap_or(clause.len());
            let (who_text, mut rest) = clause.split_at(who_len);
            let mut who = 0;
            for c in who_text.chars() {
                who |= match c {
                    'u' => 0o4700,
                    'g' => 0o2070,
                    'o' => 0o1007,
                    'a' => 0o7777,
                    _ => return None,
                };
            }
            if who == 0 {
                who = 0o7777;
            }
            if rest.is_empty() {
                return None;
            }
            while let Some(op) = rest.chars().next().filter(|c| matches!(c, '+' | '-' | '=')) {
                let after = rest.get(1..).unwrap_or_default();
                let end = after.find(['+', '-', '=']).unwrap_or(after.len());
                let (perms, next) = after.split_at(end);
                if !perms.chars().all(|c| "rwxXst".contains(c)) {
                    return None;
                }
                clauses.push(ChmodClause {
                    who,
                    op,
                    perms: perms.to_string(),
                });
                rest = next;
            }
            if !rest.is_empty() {
                return None;
            }
        }
        Some(Chmod::Symbolic(clauses))
    }

    /// The new permission bits for a file whose current bits are `mode`.
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        match self {
            // BuildKit hands the octal value to Go's os.Chmod as a FileMode,
            // where 0o7000 are not the setuid/setgid/sticky flags: only the
            // permission bits apply (checked against it: 4755 gives 755).
            Chmod::Octal(bits) => *bits & 0o777,
            Chmod::Symbolic(clauses) => {
                let mut mode = mode;
                for clause in clauses {
                    let mut bits = 0;
                    for c in clause.perms.chars() {
                        bits |= match c {
                            'r' => 0o444,
                            'w' => 0o222,
                            'x' => 0o111,
                            'X' if is_dir || mode & 0o111 != 0 => 0o111,
                            's' => 0o6000,
                            't' => 0o1000,
                            _ => 0,
                        };
                    }
                    let bits = bits & clause.who;
                    mode = match clause.op {
                        '+' => mode | bits,
                        '-' => mode & !bits,
                        _ => (mode & !clause.who) | bits,
                    };
                }
                mode & 0o7777
            }
        }
    }
}

/// Resolves symlinks in `rel` (relative to `root`) lexically inside `root`:
/// absolute targets are taken from `root`, `..` never climbs above it. Gives
/// `rel` back when the chain is too long or broken.
fn follow_in_root(root: &Path, rel: &[u8]) -> Vec<u8> {
    // Component by component: each prefix checked is already free of
    // symlinks, so no host symlink is ever followed (an absolute link in a
    // stage must not reach the host's /etc).
    let mut links = 0;
    let walk = resolve_links(
        components(&String::from_utf8_lossy(rel)).into(),
        |resolved| {
            let path = resolved.iter().fold(root.to_path_buf(), |p, c| p.join(c));
            let Ok(meta) = fs::symlink_metadata(&path) else {
                return LinkProbe::NotALink;
            };
            if !meta.file_type().is_symlink() {
                return LinkProbe::NotALink;
            }
            links += 1;
            let Ok(target) = fs::read_link(&path) else {
                return LinkProbe::NotALink;
            };
            if links > 40 {
                // A loop or an absurd chain: keep the link itself (copied as a link).
                return LinkProbe::GiveUp;
            }
            LinkProbe::Link(target)
        },
    );
    match walk {
        LinkWalk::Resolved(resolved) => resolved.join("/").into_bytes(),
        LinkWalk::GaveUp { .. } => rel.to_vec(),
    }
}

/// Paths (relative to `dir`) of the context entries under `dir`, in walk order.
fn context_children(context: &Context, dir: &[u8]) -> Vec<Vec<u8>> {
    let mut prefix = dir.to_vec();
    if !prefix.is_empty() {
        prefix.push(b'/');
    }
    context
        .entries()
        .iter()
        .filter(|e| e.kind != EntryKind::Fifo)
        .filter_map(|e| e.path.strip_prefix(prefix.as_slice()).map(<[u8]>::to_vec))
        .filter(|p| !p.is_empty())
        .collect()
}

/// Every path under `root/dir`, parents first, siblings by name.
fn dir_children(root: &Path, dir: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut stack: Vec<Vec<u8>> = vec![Vec::new()];
    let base = root.join(OsStr::from_bytes(dir));
    while let Some(rel) = stack.pop() {
        let Ok(listing) = fs::read_dir(base.join(OsStr::from_bytes(&rel))) else {
            continue;
        };
        let mut names: Vec<(Vec<u8>, bool)> = listing
            .filter_map(Result::ok)
            .map(|e| {
                let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
                (e.file_name().as_bytes().to_vec(), is_dir)
            })
            .collect();
        names.sort();
        let mut subdirs = Vec::new();
        for (name, is_dir) in names {
            let mut path = rel.clone();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(&name);
            out.push(path.clone());
            if is_dir {
                subdirs.push(path);
            }
        }
        // Depth-first, in name order.
        stack.extend(subdirs.into_iter().rev());
    }
    // Keep parents before children: sort by path components.
    out.sort_by(|a, b| a.split(|&c| c == b'/').cmp(b.split(|&c| c == b'/')));
    out
}

/// The context's entry for `rel`, when copying from the context.
fn context_entry<'c>(
    context: Option<&'c Context>,
    from_context: bool,
    rel: &[u8],
) -> Option<&'c Entry> {
    if !from_context {
        return None;
    }
    context?.get(rel)
}

/// `path` opened as a directory handle (O_PATH), for *at() lookups.
fn open_dir_path(path: &Path) -> Option<std::os::fd::OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    rustix::fs::open(
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()
}

impl CopyPlan<'_> {
    /// Copies one file, symlink or directory (not its contents) from `real`
    /// to `target`; `entry` is its scan when it comes from the context.
    /// Returns the source metadata of directories (their times are set once
    /// their contents are written).
    fn copy_entry(
        &self,
        real: &Path,
        target: &Path,
        from_context: bool,
        owner: Option<(u32, u32)>,
        chmod: Option<&Chmod>,
        entry: Option<&Entry>,
    ) -> Result<Option<fs::Metadata>, BuildError> {
        // A regular file from the context: linked from the earlier layer when
        // unchanged (judged on the scan, whose hash is what the cache key holds).
        if let Some(entry) = entry
            && entry.kind == EntryKind::File
            && let Some(hash) = &entry.content_hash
        {
            let mode = match chmod {
                Some(chmod) => chmod.apply(entry.mode, false),
                None => entry.mode,
            };
            let (uid, gid) = owner.unwrap_or((0, 0));
            if self.link_unchanged(target, entry, &hash.0, mode, uid, gid) {
                return Ok(None);
            }
        }
        let meta = fs::symlink_metadata(real).map_err(io_error("reading", real))?;
        let (uid, gid) = owner.unwrap_or(if from_context {
            (0, 0)
        } else {
            (meta.uid(), meta.gid())
        });
        let file_type = meta.file_type();
        let mode = match chmod {
            Some(chmod) => chmod.apply(meta.mode() & 0o7777, file_type.is_dir()),
            None => meta.mode() & 0o7777,
        };
        if let Ok(existing) = fs::symlink_metadata(target)
            && !(existing.is_dir() && file_type.is_dir())
        {
            if existing.is_dir() {
                fs::remove_dir_all(target).map_err(io_error("replacing", target))?;
            } else {
                fs::remove_file(target).map_err(io_error("replacing", target))?;
            }
        }
        if file_type.is_symlink() {
            let link = fs::read_link(real).map_err(io_error("reading the link", real))?;
            std::os::unix::fs::symlink(&link, target)
                .map_err(io_error("creating the link", target))?;
            lchown(target, uid, gid)?;
            set_mtime(target, meta.mtime(), meta.mtime_nsec());
            return Ok(None);
        }
        if file_type.is_dir() {
            if fs::symlink_metadata(target).is_err() {
                fs::create_dir(target).map_err(io_error("creating directory", target))?;
            }
            fs::set_permissions(target, fs::Permissions::from_mode(mode))
                .map_err(io_error("setting the mode of", target))?;
            lchown(target, uid, gid)?;
            return Ok(Some(meta));
        }
        if file_type.is_file() {
            fs::copy(real, target).map_err(io_error("copying", real))?;
        } else {
            // Sockets and devices from the context become empty files, as BuildKit copies them.
            fs::write(target, b"").map_err(io_error("creating", target))?;
        }
        lchown(target, uid, gid)?;
        // chmod after chown: chown clears setuid/setgid bits.
        fs::set_permissions(target, fs::Permissions::from_mode(mode))
            .map_err(io_error("setting the mode of", target))?;
        set_mtime(target, meta.mtime(), meta.mtime_nsec());
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_paths_never_follow_symlinks_out_of_the_root() {
        let root = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        fs::create_dir_all(root.path().join("etc")).unwrap_or_default();
        fs::write(root.path().join("etc/passwd"), "image passwd\n").unwrap_or_default();
        let _ = std::os::unix::fs::symlink("/etc", root.path().join("abs"));
        let _ = std::os::unix::fs::symlink("../../../../etc", root.path().join("up"));
        let _ = std::os::unix::fs::symlink("loop", root.path().join("loop"));
        // Resolved inside the root, not the host's /etc.
        assert_eq!(
            follow_in_root(root.path(), b"abs/passwd"),
            b"etc/passwd".to_vec()
        );
        assert_eq!(
            follow_in_root(root.path(), b"up/passwd"),
            b"etc/passwd".to_vec()
        );
        assert_eq!(follow_in_root(root.path(), b"loop"), b"loop".to_vec());
        let found = select_dir(root.path(), "/abs/passwd").unwrap_or_default();
        assert_eq!(found.len(), 1);
        assert_eq!(
            found.first().map(|i| i.rel.clone()),
            Some(b"etc/passwd".to_vec())
        );
        assert!(
            select_dir(root.path(), "/abs/shadow")
                .unwrap_or_default()
                .is_empty()
        );
        let wild = select_dir(root.path(), "/abs/pass*").unwrap_or_default();
        assert_eq!(
            wild.first().map(|i| i.rel.clone()),
            Some(b"etc/passwd".to_vec())
        );
    }

    #[test]
    fn parents_pivot_is_the_last_dot_component() {
        assert_eq!(pivot_of("a/b/c.txt"), 0);
        assert_eq!(pivot_of("./a/b/c.txt"), 0);
        assert_eq!(pivot_of("./src/./pkg/*.go"), 1);
        assert_eq!(pivot_of("x/y/./z"), 2);
    }

    proptest::proptest! {
        /// `--chmod` comes from the Dockerfile: any text parses or not, and a
        /// parsed mode only ever yields permission bits.
        #[test]
        fn chmod_never_panics_and_stays_in_range(text in ".{0,24}", mode in 0u32..0o10000, dir in proptest::bool::ANY) {
            if let Some(chmod) = Chmod::parse(&text) {
                proptest::prop_assert!(chmod.apply(mode, dir) <= 0o7777);
            }
            let _ = pivot_of(&text);
        }
    }

    #[test]
    fn chmod_octal_and_symbolic() {
        assert_eq!(Chmod::parse("0755"), Some(Chmod::Octal(0o755)));
        assert_eq!(
            Chmod::parse("644").map(|c| c.apply(0o777, false)),
            Some(0o644)
        );
        let apply =
            |spec: &str, mode: u32, dir: bool| Chmod::parse(spec).map(|c| c.apply(mode, dir));
        assert_eq!(apply("u+x", 0o644, false), Some(0o744));
        assert_eq!(apply("go-w", 0o666, false), Some(0o644));
        assert_eq!(apply("a=rX", 0o640, false), Some(0o444));
        assert_eq!(apply("a=rX", 0o700, true), Some(0o555));
        assert_eq!(apply("u=rwx,g=rx,o=", 0o000, false), Some(0o750));
        assert_eq!(apply("+x", 0o644, false), Some(0o755));
        assert_eq!(apply("u+s", 0o755, false), Some(0o4755));
        assert_eq!(Chmod::parse("9"), None);
        assert_eq!(Chmod::parse("u*x"), None);
        assert_eq!(Chmod::parse("z+x"), None);
    }

    #[test]
    fn reuse_index_round_trips_and_damage_is_refused() {
        let view = LayerView {
            lowers_top_first: Vec::new(),
        };
        let staging = tempfile::tempdir().unwrap();
        let plan = CopyPlan::new(&view, staging.path());
        plan.written.lock().unwrap().extend([
            (b"a/b".to_vec(), [1u8; 32]),
            (b"\xff odd".to_vec(), [2u8; 32]),
        ]);
        let bytes = plan.index_bytes();
        let index = Reuse::parse_index(&bytes).expect("parses");
        assert_eq!(index.len(), 2);
        assert_eq!(index.get(b"a/b".as_slice()), Some(&[1u8; 32]));
        assert_eq!(index.get(b"\xff odd".as_slice()), Some(&[2u8; 32]));
        for cut in 1..bytes.len() {
            // Every truncation is refused, never misread.
            assert!(Reuse::parse_index(&bytes[..cut]).is_none() || cut == 4 + 3 + 32);
        }
        assert_eq!(Reuse::parse_index(&[]).map(|i| i.len()), Some(0));
        assert!(Reuse::parse_index(&[255, 255, 255, 255, 0]).is_none());
    }

    proptest::proptest! {
        #[test]
        fn reuse_index_parser_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = Reuse::parse_index(&bytes);
        }
    }

    #[test]
    fn select_dir_expands_wildcards_per_component() {
        let root = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        for path in ["a/x.go", "a/y.go", "a/z.txt", "b/x.go"] {
            let full = root.path().join(path);
            if let Some(parent) = full.parent() {
                fs::create_dir_all(parent).unwrap_or_default();
            }
            fs::write(full, path).unwrap_or_default();
        }
        let found = select_dir(root.path(), "/a/*.go").unwrap_or_default();
        let rels: Vec<String> = found
            .iter()
            .map(|i| String::from_utf8_lossy(&i.rel).into_owned())
            .collect();
        assert_eq!(rels, vec!["a/x.go", "a/y.go"]);
        let found = select_dir(root.path(), "*/x.go").unwrap_or_default();
        assert_eq!(found.len(), 2);
        assert!(
            select_dir(root.path(), "/missing")
                .unwrap_or_default()
                .is_empty()
        );
        let dirs = select_dir(root.path(), "a").unwrap_or_default();
        assert_eq!(
            dirs,
            vec![SourceItem {
                rel: b"a".to_vec(),
                is_dir: true,
                pivot: 0,
                root: None,
            }]
        );
        let children = dir_children(root.path(), b"");
        let names: Vec<String> = children
            .iter()
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect();
        assert_eq!(
            names,
            vec!["a", "a/x.go", "a/y.go", "a/z.txt", "b", "b/x.go"]
        );
    }
}
