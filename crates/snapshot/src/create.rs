//! Layer creation: a deterministic tar of a directory, or of an overlayfs upper directory
//! with overlay whiteouts and opaque directories turned into OCI whiteout entries.
//!
//! Headers follow what docker (moby `pkg/archive`) and BuildKit (containerd `archive`)
//! write with Go's `archive/tar`: USTAR with the name split into prefix/name when it fits,
//! a PAX record for anything that does not (long or non-ASCII names and link targets,
//! big ids, sizes and times, xattrs as `SCHILY.xattr.*`), directories named with a
//! trailing `/`, numeric owners only (no user/group names), whole-second mtimes and no
//! atime/ctime, a second hard link to an inode written as a tar hard link. Entries are in
//! depth-first order with each directory's names sorted bytewise, so the same tree always
//! gives the same bytes; `source_date_epoch` clamps mtimes for reproducible digests.

use crate::compress::{CompressError, CompressWriter, CompressedBlob, Compression};
use crate::digest::{Digest, HashingWriter};
use crate::fsutil::{open_root_dir, proc_fd_path, read_xattrs, read_xattrs_fd, sorted_names};
use crate::{WHITEOUT_OPAQUE, WHITEOUT_PREFIX};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// What the source directory is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiffKind {
    /// A plain directory: every entry goes into the layer as it is.
    Directory,
    /// An overlayfs upper directory: 0/0 character devices are whiteouts, directories with
    /// `trusted.overlay.opaque=y` (or `user.overlay.opaque=y`) are opaque.
    OverlayUpper,
}

/// Which extended attributes go into the layer. overlayfs' own (`trusted.overlay.*`,
/// `user.overlay.*`) never do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum XattrPolicy {
    /// Every readable xattr.
    #[default]
    All,
    /// Only `security.capability` (file capabilities), exactly what docker and BuildKit
    /// put in layers.
    CapabilitiesOnly,
    /// None.
    None,
}

/// Options for [`create_layer`].
#[derive(Clone, Debug, Default)]
pub struct CreateOptions {
    /// Clamp every mtime to at most this Unix time (callers set it from the
    /// `SOURCE_DATE_EPOCH` environment variable) so the same content gives the same digest.
    pub source_date_epoch: Option<i64>,
    /// Which xattrs to record.
    pub xattrs: XattrPolicy,
}

impl CreateOptions {
    /// Options with `source_date_epoch` read from the `SOURCE_DATE_EPOCH` environment
    /// variable (ignored when unset or not an integer).
    pub fn from_env() -> Self {
        let source_date_epoch = std::env::var("SOURCE_DATE_EPOCH")
            .ok()
            .and_then(|v| v.trim().parse().ok());
        CreateOptions {
            source_date_epoch,
            ..CreateOptions::default()
        }
    }
}

/// What [`create_layer`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerStats {
    /// sha256 of the uncompressed tar (the diff_id).
    pub diff_id: Digest,
    /// Bytes of the uncompressed tar.
    pub size: u64,
    /// Tar entries written (whiteouts included, PAX headers not).
    pub entries: u64,
    /// Sum of the sizes of the regular files written (hard links counted once): what
    /// docker reports as a layer's size.
    pub file_bytes: u64,
    /// [`file_bytes`](Self::file_bytes) plus symlink target lengths: the size
    /// [`entry_content_size`](crate::entry_content_size) sums over the tar.
    pub content_size: u64,
}

/// What [`write_layer_tar`] wrote (it does not hash).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TarCounts {
    /// Tar entries written (whiteouts included, PAX headers not).
    pub entries: u64,
    /// Sum of the sizes of the regular files written (hard links counted once).
    pub file_bytes: u64,
    /// `file_bytes` plus symlink target lengths (see [`LayerStats::content_size`]).
    pub content_size: u64,
}

/// Why a layer could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// The source directory cannot be opened.
    #[error(
        "cannot open layer source directory {source_dir}: {error}; check that it exists and is readable"
    )]
    Source {
        /// The source directory.
        source_dir: PathBuf,
        /// The OS error.
        error: io::Error,
    },
    /// Reading an entry of the source failed.
    #[error("creating layer: cannot {op} {path:?}: {error}")]
    Read {
        /// Path relative to the source.
        path: String,
        /// What was being done.
        op: &'static str,
        /// The OS error.
        error: io::Error,
    },
    /// A file changed size while it was being archived.
    #[error(
        "creating layer: file {path:?} changed while it was archived (expected {expected} bytes, read {read}); stop whatever writes to the source and retry"
    )]
    Changed {
        /// Path relative to the source.
        path: String,
        /// Size when the header was written.
        expected: u64,
        /// Bytes actually read.
        read: u64,
    },
    /// Writing the layer failed.
    #[error("creating layer: cannot write the layer: {0}")]
    Write(#[source] io::Error),
    /// The upper dir uses an overlayfs feature whose data is not all in the upper dir.
    #[error(
        "creating layer: {path:?} carries overlayfs xattr {xattr}: its content is partly in a lower dir; mount overlays for builds with redirect_dir=off,metacopy=off"
    )]
    OverlayFeature {
        /// Path relative to the source.
        path: String,
        /// The overlay xattr found.
        xattr: String,
    },
    /// Compressing the layer failed.
    #[error(transparent)]
    Compress(#[from] CompressError),
}

/// Writes a layer tar of `source` to `out` and returns its diff_id, size and entry count.
/// `out` receives the uncompressed tar; wrap it in a [`CompressWriter`] (or use
/// [`create_layer_compressed`]) for a compressed blob.
pub fn create_layer(
    source: &Path,
    kind: DiffKind,
    out: impl Write,
    opts: &CreateOptions,
) -> Result<LayerStats, CreateError> {
    let (hashed, counts) = write_layer(source, kind, HashingWriter::new(out), opts)?;
    let (mut out, diff_id, size) = hashed.finish();
    out.flush().map_err(CreateError::Write)?;
    Ok(LayerStats {
        diff_id,
        size,
        entries: counts.entries,
        file_bytes: counts.file_bytes,
        content_size: counts.content_size,
    })
}

/// [`create_layer`] without hashing, for a writer that hashes anyway (a
/// content-addressed store's): sha256 is the costliest part of writing a tar
/// of files already in the page cache, so it should run once.
pub fn write_layer_tar(
    source: &Path,
    kind: DiffKind,
    out: impl Write,
    opts: &CreateOptions,
) -> Result<TarCounts, CreateError> {
    let (mut out, counts) = write_layer(source, kind, out, opts)?;
    out.flush().map_err(CreateError::Write)?;
    Ok(counts)
}

/// [`create_layer`] into a compressed blob: returns the layer stats and the blob's
/// digest/size (whose `diff_id` equals the stats' one). The tar is hashed once, by the
/// compressing writer.
pub fn create_layer_compressed<W: Write>(
    source: &Path,
    kind: DiffKind,
    compression: Compression,
    out: W,
    opts: &CreateOptions,
) -> Result<(LayerStats, CompressedBlob), CreateError> {
    let compressed = CompressWriter::new(out, compression)?;
    let (compressed, counts) = write_layer(source, kind, compressed, opts)?;
    let (_, blob) = compressed.finish()?;
    let stats = LayerStats {
        diff_id: blob.diff_id.clone(),
        size: blob.uncompressed_size,
        entries: counts.entries,
        file_bytes: counts.file_bytes,
        content_size: counts.content_size,
    };
    Ok((stats, blob))
}

/// Writes the tar of `source` into `out`; returns `out`, the entry count and file bytes.
fn write_layer<W: Write>(
    source: &Path,
    kind: DiffKind,
    out: W,
    opts: &CreateOptions,
) -> Result<(W, TarCounts), CreateError> {
    let root = open_root_dir(source).map_err(|error| CreateError::Source {
        source_dir: source.into(),
        error,
    })?;
    let mut writer = LayerWriter {
        out: BufWriter::with_capacity(256 * 1024, out),
        kind,
        opts,
        entries: 0,
        file_bytes: 0,
        link_bytes: 0,
        first_link: HashMap::new(),
        buffer: vec![0u8; 256 * 1024],
    };
    writer.walk(root.as_fd(), Path::new(""))?;
    writer
        .out
        .write_all(&[0u8; 1024])
        .map_err(CreateError::Write)?;
    let counts = TarCounts {
        entries: writer.entries,
        file_bytes: writer.file_bytes,
        content_size: writer.file_bytes + writer.link_bytes,
    };
    let out = writer
        .out
        .into_inner()
        .map_err(|e| CreateError::Write(e.into_error()))?;
    Ok((out, counts))
}

/// One header's worth of metadata.
struct TarEntry<'a> {
    name: Vec<u8>,
    entry_type: tar::EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    mtime: i64,
    link_name: Option<&'a [u8]>,
    device: (u32, u32),
    xattrs: Vec<(std::ffi::OsString, Vec<u8>)>,
}

struct LayerWriter<'o, W: Write> {
    out: BufWriter<W>,
    kind: DiffKind,
    opts: &'o CreateOptions,
    entries: u64,
    file_bytes: u64,
    /// Symlink target lengths written.
    link_bytes: u64,
    /// (device, inode) of multiply-linked files already written → their tar name.
    first_link: HashMap<(u64, u64), Vec<u8>>,
    buffer: Vec<u8>,
}

fn display(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

const USTAR_NAME_LEN: usize = 100;
const USTAR_PREFIX_LEN: usize = 155;
/// Largest value of an 8-byte octal field (7 digits + NUL).
const MAX_OCTAL_8: u64 = 0o7777777;
/// Largest value of a 12-byte octal field (11 digits + NUL).
const MAX_OCTAL_12: u64 = 0o77777777777;

/// Splits a long ASCII name into USTAR prefix and name the way Go's `archive/tar` does.
fn split_ustar_name(name: &[u8]) -> Option<(&[u8], &[u8])> {
    if name.len() <= USTAR_NAME_LEN || !name.is_ascii() {
        return None;
    }
    let mut search_len = name.len().min(USTAR_PREFIX_LEN + 1);
    if name.len() <= USTAR_PREFIX_LEN + 1 && name.last() == Some(&b'/') {
        search_len -= 1;
    }
    let slash = name.get(..search_len)?.iter().rposition(|&b| b == b'/')?;
    let (prefix, rest) = (name.get(..slash)?, name.get(slash + 1..)?);
    if slash == 0
        || rest.is_empty()
        || rest.len() > USTAR_NAME_LEN
        || prefix.len() > USTAR_PREFIX_LEN
    {
        return None;
    }
    Some((prefix, rest))
}

fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    // "<len> <key>=<value>\n" where <len> counts its own digits.
    let body = key.len() + value.len() + 3;
    let mut len = body + body.to_string().len();
    if len.to_string().len() != body.to_string().len() {
        len = body + len.to_string().len();
    }
    let mut record = Vec::with_capacity(len);
    record.extend_from_slice(len.to_string().as_bytes());
    record.push(b' ');
    record.extend_from_slice(key);
    record.push(b'=');
    record.extend_from_slice(value);
    record.push(b'\n');
    record
}

impl<W: Write> LayerWriter<'_, W> {
    fn read_error<'a>(
        path: &'a Path,
        op: &'static str,
    ) -> impl FnOnce(io::Error) -> CreateError + 'a {
        move |error| CreateError::Read {
            path: display(path),
            op,
            error,
        }
    }

    fn clamp(&self, mtime: i64) -> i64 {
        match self.opts.source_date_epoch {
            Some(epoch) => mtime.min(epoch),
            None => mtime,
        }
    }

    fn keep_xattr(&self, name: &[u8]) -> bool {
        if name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.") {
            return false;
        }
        match self.opts.xattrs {
            XattrPolicy::All => true,
            XattrPolicy::CapabilitiesOnly => name == b"security.capability",
            XattrPolicy::None => false,
        }
    }

    /// Writes every entry below the directory `dir` (whose path in the layer is `dir_path`).
    fn walk(&mut self, dir: BorrowedFd<'_>, dir_path: &Path) -> Result<(), CreateError> {
        let names = sorted_names(dir).map_err(Self::read_error(dir_path, "list directory"))?;
        for name in names {
            let path = dir_path.join(&name);
            let stat = rustix::fs::statat(dir, &name, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| Self::read_error(&path, "stat")(e.into()))?;
            let file_type = FileType::from_raw_mode(stat.st_mode);
            let mut tar_name = path.as_os_str().as_bytes().to_vec();
            let mut entry = TarEntry {
                name: Vec::new(),
                entry_type: tar::EntryType::Regular,
                // Go's archive/tar (docker, BuildKit) keeps the file type bits in the mode.
                mode: stat.st_mode & 0o177777,
                uid: u64::from(stat.st_uid),
                gid: u64::from(stat.st_gid),
                size: 0,
                mtime: self.clamp(stat.st_mtime),
                link_name: None,
                device: (0, 0),
                xattrs: Vec::new(),
            };
            if self.kind == DiffKind::OverlayUpper
                && file_type == FileType::CharacterDevice
                && stat.st_rdev == 0
            {
                let mut whiteout = dir_path.as_os_str().as_bytes().to_vec();
                if !whiteout.is_empty() {
                    whiteout.push(b'/');
                }
                whiteout.extend_from_slice(WHITEOUT_PREFIX.as_bytes());
                whiteout.extend_from_slice(name.as_bytes());
                entry.name = whiteout;
                // What BuildKit writes for a whiteout: an empty 0600 file owned by root.
                entry.mode = 0o600;
                entry.uid = 0;
                entry.gid = 0;
                self.write_entry(&entry)?;
                continue;
            }
            // A regular file is opened here, and its xattrs read through the
            // fd: cheaper than a /proc/self/fd path walk per file.
            let mut opened: Option<OwnedFd> = None;
            if file_type == FileType::RegularFile {
                let file = rustix::fs::openat(
                    dir,
                    &name,
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| Self::read_error(&path, "open file")(e.into()))?;
                entry.xattrs = read_xattrs_fd(file.as_fd())
                    .map_err(Self::read_error(&path, "read extended attributes"))?;
                opened = Some(file);
            } else if file_type != FileType::Directory {
                entry.xattrs = self.xattrs_of(dir, &name, &path)?;
            }
            if self.kind == DiffKind::OverlayUpper && file_type != FileType::Directory {
                self.refuse_partial_copy_up(&entry.xattrs, &path)?;
            }
            if file_type != FileType::Directory && stat.st_nlink > 1 {
                let key = (stat.st_dev, stat.st_ino);
                if let Some(first) = self.first_link.get(&key) {
                    entry.name = tar_name;
                    entry.entry_type = tar::EntryType::Link;
                    let first = first.clone();
                    entry.link_name = Some(&first);
                    self.write_entry(&entry)?;
                    continue;
                }
                self.first_link.insert(key, tar_name.clone());
            }
            match file_type {
                FileType::Directory => {
                    tar_name.push(b'/');
                    let child = rustix::fs::openat(
                        dir,
                        &name,
                        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(|e| Self::read_error(&path, "open directory")(e.into()))?;
                    let readable_xattrs = self.xattrs_of(dir, &name, &path)?;
                    let opaque = self.kind == DiffKind::OverlayUpper
                        && readable_xattrs.iter().any(|(k, v)| {
                            (k.as_bytes() == b"trusted.overlay.opaque"
                                || k.as_bytes() == b"user.overlay.opaque")
                                && v.as_slice() == b"y"
                        });
                    if self.kind == DiffKind::OverlayUpper {
                        self.refuse_partial_copy_up(&readable_xattrs, &path)?;
                    }
                    entry.xattrs = readable_xattrs;
                    entry.name = tar_name;
                    entry.entry_type = tar::EntryType::Directory;
                    self.write_entry(&entry)?;
                    if opaque {
                        let mut marker = entry.name.clone();
                        marker.extend_from_slice(WHITEOUT_OPAQUE.as_bytes());
                        // BuildKit's opaque marker: the directory's permission bits, zero time.
                        let opaque_entry = TarEntry {
                            name: marker,
                            entry_type: tar::EntryType::Regular,
                            mode: entry.mode & 0o7777,
                            uid: 0,
                            gid: 0,
                            size: 0,
                            mtime: 0,
                            link_name: None,
                            device: (0, 0),
                            xattrs: Vec::new(),
                        };
                        self.write_entry(&opaque_entry)?;
                    }
                    self.walk(child.as_fd(), &path)?;
                }
                FileType::RegularFile => {
                    let Some(file) = opened.take() else {
                        return Err(Self::read_error(&path, "open file")(io::Error::other(
                            "not opened",
                        )));
                    };
                    entry.name = tar_name;
                    entry.size = stat.st_size as u64;
                    self.file_bytes += entry.size;
                    self.write_entry(&entry)?;
                    self.copy_file(file, entry.size, &path)?;
                }
                FileType::Symlink => {
                    let target = rustix::fs::readlinkat(dir, &name, Vec::new())
                        .map_err(|e| Self::read_error(&path, "read symlink")(e.into()))?;
                    entry.name = tar_name;
                    entry.entry_type = tar::EntryType::Symlink;
                    self.link_bytes += target.as_bytes().len() as u64;
                    entry.link_name = Some(target.as_bytes());
                    self.write_entry(&entry)?;
                }
                FileType::CharacterDevice | FileType::BlockDevice | FileType::Fifo => {
                    entry.name = tar_name;
                    entry.entry_type = match file_type {
                        FileType::CharacterDevice => tar::EntryType::Char,
                        FileType::BlockDevice => tar::EntryType::Block,
                        _ => tar::EntryType::Fifo,
                    };
                    if file_type != FileType::Fifo {
                        entry.device = (
                            rustix::fs::major(stat.st_rdev),
                            rustix::fs::minor(stat.st_rdev),
                        );
                    }
                    self.write_entry(&entry)?;
                }
                // Sockets (and anything unknown) cannot be represented in a tar: docker skips them too.
                _ => {}
            }
        }
        Ok(())
    }

    /// A metacopy file (data still in a lower layer) or a redirected directory (renamed,
    /// children still in a lower layer) cannot be turned into a layer from the upper dir
    /// alone; refuse instead of writing an incomplete layer.
    fn refuse_partial_copy_up(
        &self,
        xattrs: &[(std::ffi::OsString, Vec<u8>)],
        path: &Path,
    ) -> Result<(), CreateError> {
        for (name, _) in xattrs {
            let name = name.as_bytes();
            let feature = [b"metacopy".as_slice(), b"redirect"].iter().any(|feature| {
                [b"trusted.overlay.".as_slice(), b"user.overlay."]
                    .iter()
                    .any(|prefix| name.strip_prefix(*prefix) == Some(*feature))
            });
            if feature {
                return Err(CreateError::OverlayFeature {
                    path: display(path),
                    xattr: String::from_utf8_lossy(name).into_owned(),
                });
            }
        }
        Ok(())
    }

    fn xattrs_of(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        path: &Path,
    ) -> Result<Vec<(std::ffi::OsString, Vec<u8>)>, CreateError> {
        let all = read_xattrs(&proc_fd_path(dir, name))
            .map_err(Self::read_error(path, "read extended attributes"))?;
        // Filtered at write time: opaque detection needs the overlay xattrs first.
        Ok(all)
    }

    fn copy_file(&mut self, file: OwnedFd, size: u64, path: &Path) -> Result<(), CreateError> {
        let mut file = File::from(file);
        let mut remaining = size;
        while remaining > 0 {
            let want = remaining.min(self.buffer.len() as u64) as usize;
            let chunk = self.buffer.get_mut(..want).unwrap_or(&mut []);
            let read = match file.read(chunk) {
                Ok(0) => {
                    return Err(CreateError::Changed {
                        path: display(path),
                        expected: size,
                        read: size - remaining,
                    });
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Self::read_error(path, "read file")(e)),
            };
            self.out
                .write_all(self.buffer.get(..read).unwrap_or(&[]))
                .map_err(CreateError::Write)?;
            remaining -= read as u64;
        }
        let padding = (512 - (size % 512) as usize) % 512;
        self.out
            .write_all(&[0u8; 512][..padding])
            .map_err(CreateError::Write)?;
        Ok(())
    }

    fn write_entry(&mut self, entry: &TarEntry<'_>) -> Result<(), CreateError> {
        // Decide the PAX records first: like Go's archive/tar, a name that does not fit
        // is split into USTAR prefix/name only when nothing else forces PAX.
        let mut pax: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let uid_field = if entry.uid > MAX_OCTAL_8 {
            pax.push((b"uid".to_vec(), entry.uid.to_string().into_bytes()));
            0
        } else {
            entry.uid
        };
        let gid_field = if entry.gid > MAX_OCTAL_8 {
            pax.push((b"gid".to_vec(), entry.gid.to_string().into_bytes()));
            0
        } else {
            entry.gid
        };
        let size_field = if entry.size > MAX_OCTAL_12 {
            pax.push((b"size".to_vec(), entry.size.to_string().into_bytes()));
            0
        } else {
            entry.size
        };
        let mtime_field = match u64::try_from(entry.mtime) {
            Ok(mtime) if mtime <= MAX_OCTAL_12 => mtime,
            _ => {
                pax.push((b"mtime".to_vec(), entry.mtime.to_string().into_bytes()));
                0
            }
        };
        for (name, value) in &entry.xattrs {
            if self.keep_xattr(name.as_bytes()) {
                let mut key = b"SCHILY.xattr.".to_vec();
                key.extend_from_slice(name.as_bytes());
                pax.push((key, value.clone()));
            }
        }
        if let Some(link) = entry.link_name
            && (link.len() > USTAR_NAME_LEN || !link.is_ascii())
        {
            pax.push((b"linkpath".to_vec(), link.to_vec()));
        }
        let name_fits = entry.name.len() <= USTAR_NAME_LEN && entry.name.is_ascii();
        let split = if name_fits || !pax.is_empty() {
            None
        } else {
            split_ustar_name(&entry.name)
        };
        if !name_fits && split.is_none() {
            pax.push((b"path".to_vec(), entry.name.clone()));
        }

        let mut header = [0u8; 512];
        match split {
            Some((prefix, name)) => {
                put_string(&mut header[HEADER_NAME], name);
                put_string(&mut header[HEADER_PREFIX], prefix);
            }
            None => put_v7_name(&mut header[HEADER_NAME], &entry.name),
        }
        put_octal(&mut header[HEADER_MODE], u64::from(entry.mode));
        put_octal(&mut header[HEADER_UID], uid_field);
        put_octal(&mut header[HEADER_GID], gid_field);
        put_octal(&mut header[HEADER_SIZE], size_field);
        put_octal(&mut header[HEADER_MTIME], mtime_field);
        header[HEADER_TYPE] = entry.entry_type.as_byte();
        if let Some(link) = entry.link_name {
            put_v7_name(&mut header[HEADER_LINKNAME], link);
        }
        header[HEADER_MAGIC].copy_from_slice(b"ustar\x0000");
        // BuildKit's tar writer names uid/gid 0 "root" (from the build host's user database);
        // other ids get no name, which keeps layers independent of the host.
        if entry.uid == 0 {
            put_string(&mut header[HEADER_UNAME], b"root");
        }
        if entry.gid == 0 {
            put_string(&mut header[HEADER_GNAME], b"root");
        }
        put_octal(&mut header[HEADER_DEVMAJOR], u64::from(entry.device.0));
        put_octal(&mut header[HEADER_DEVMINOR], u64::from(entry.device.1));
        put_checksum(&mut header);

        if !pax.is_empty() {
            pax.sort();
            let records: Vec<u8> = pax.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
            let mut pax_header = [0u8; 512];
            put_v7_name(&mut pax_header[HEADER_NAME], &pax_header_name(&entry.name));
            put_octal(&mut pax_header[HEADER_MODE], 0);
            put_octal(&mut pax_header[HEADER_UID], 0);
            put_octal(&mut pax_header[HEADER_GID], 0);
            put_octal(&mut pax_header[HEADER_SIZE], records.len() as u64);
            put_octal(&mut pax_header[HEADER_MTIME], 0);
            pax_header[HEADER_TYPE] = b'x';
            pax_header[HEADER_MAGIC].copy_from_slice(b"ustar\x0000");
            put_checksum(&mut pax_header);
            self.out
                .write_all(&pax_header)
                .map_err(CreateError::Write)?;
            self.out.write_all(&records).map_err(CreateError::Write)?;
            let padding = (512 - records.len() % 512) % 512;
            self.out
                .write_all(&[0u8; 512][..padding])
                .map_err(CreateError::Write)?;
        }
        self.out.write_all(&header).map_err(CreateError::Write)?;
        self.entries += 1;
        Ok(())
    }
}

// Byte ranges of the USTAR header fields.
const HEADER_NAME: std::ops::Range<usize> = 0..100;
const HEADER_MODE: std::ops::Range<usize> = 100..108;
const HEADER_UID: std::ops::Range<usize> = 108..116;
const HEADER_GID: std::ops::Range<usize> = 116..124;
const HEADER_SIZE: std::ops::Range<usize> = 124..136;
const HEADER_MTIME: std::ops::Range<usize> = 136..148;
const HEADER_CHECKSUM: std::ops::Range<usize> = 148..156;
const HEADER_TYPE: usize = 156;
const HEADER_LINKNAME: std::ops::Range<usize> = 157..257;
const HEADER_MAGIC: std::ops::Range<usize> = 257..265;
const HEADER_UNAME: std::ops::Range<usize> = 265..297;
const HEADER_GNAME: std::ops::Range<usize> = 297..329;
const HEADER_DEVMAJOR: std::ops::Range<usize> = 329..337;
const HEADER_DEVMINOR: std::ops::Range<usize> = 337..345;
const HEADER_PREFIX: std::ops::Range<usize> = 345..500;

/// Zero-padded octal digits filling all but the last byte, then NUL (Go's format).
/// Callers check the value fits; an oversized value is written as 0, as Go does.
fn put_octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    let text = if text.len() > digits {
        "0".repeat(digits)
    } else {
        text
    };
    field[..digits].copy_from_slice(text.as_bytes());
    field[digits] = 0;
}

fn put_string(field: &mut [u8], value: &[u8]) {
    let len = value.len().min(field.len());
    field[..len].copy_from_slice(&value[..len]);
}

/// The best-effort name in a fixed field, as Go writes it when the real name is in a
/// PAX record: non-ASCII bytes dropped, cut to the field, no trailing `/` left at the cut.
fn put_v7_name(field: &mut [u8], name: &[u8]) {
    let ascii: Vec<u8> = name
        .iter()
        .copied()
        .filter(|&b| b != 0 && b < 0x80)
        .collect();
    put_string(field, &ascii);
    if ascii.len() > field.len() {
        let kept = ascii[..field.len()]
            .iter()
            .rposition(|&b| b != b'/')
            .map_or(0, |i| i + 1);
        field[kept..].fill(0);
    }
}

/// Go's PAX header name: `dir/PaxHeaders.0/file` of the entry's name.
fn pax_header_name(name: &[u8]) -> Vec<u8> {
    let split_at = name.iter().rposition(|&b| b == b'/').map_or(0, |i| i + 1);
    let (dir, file) = name.split_at(split_at);
    let mut joined = dir.to_vec();
    joined.extend_from_slice(b"PaxHeaders.0");
    if !file.is_empty() {
        joined.push(b'/');
        joined.extend_from_slice(file);
    }
    joined
}

/// The header checksum in Go's format: six octal digits, NUL, space.
fn put_checksum(header: &mut [u8; 512]) {
    header[HEADER_CHECKSUM].fill(b' ');
    let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
    let text = format!("{:06o}\0 ", sum & 0o777777);
    header[HEADER_CHECKSUM].copy_from_slice(text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_length_counts_itself() {
        let record = pax_record(b"path", b"a");
        assert_eq!(record, b"9 path=a\n");
        let long_value = vec![b'x'; 95];
        let record = pax_record(b"path", &long_value);
        // 95 + "path" + " =\\n" = 102, plus 3 digits = 105.
        assert!(
            record.starts_with(b"105 path="),
            "{:?}",
            String::from_utf8_lossy(&record[..10])
        );
        assert_eq!(record.len(), 105);
    }

    #[test]
    fn ustar_split_matches_go() {
        let name = format!("{}/{}", "d".repeat(120), "f".repeat(50));
        let (prefix, rest) = split_ustar_name(name.as_bytes()).expect("splittable");
        assert_eq!(prefix.len(), 120);
        assert_eq!(rest.len(), 50);
        assert!(split_ustar_name("short".as_bytes()).is_none());
        assert!(
            split_ustar_name("x".repeat(200).as_bytes()).is_none(),
            "no slash: needs PAX"
        );
        let long_base = format!("d/{}", "f".repeat(150));
        assert!(
            split_ustar_name(long_base.as_bytes()).is_none(),
            "base > 100: needs PAX"
        );
    }
}
