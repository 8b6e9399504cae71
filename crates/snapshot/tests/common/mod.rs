//! Helpers shared by the integration tests: a full description of a directory tree (to
//! compare trees and to prove nothing outside a target changed) and a raw tar builder
//! that writes exactly the (possibly hostile) names it is given.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Everything kiln promises to preserve about one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub content: Vec<u8>,
    pub link_target: Option<Vec<u8>>,
    pub rdev: u64,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// For multiply-linked files: the first path (in sorted order) of the same inode.
    pub hardlink_of: Option<String>,
}

fn xattrs_of(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut list = vec![0u8; 64 * 1024];
    let Ok(len) = rustix::fs::llistxattr(path, &mut list[..]) else {
        return Vec::new();
    };
    list.truncate(len);
    let mut xattrs = Vec::new();
    for name in list.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if name.starts_with(b"security.selinux") {
            continue;
        }
        let mut value = vec![0u8; 64 * 1024];
        if let Ok(len) =
            rustix::fs::lgetxattr(path, std::ffi::OsStr::from_bytes(name), &mut value[..])
        {
            value.truncate(len);
            xattrs.push((name.to_vec(), value));
        }
    }
    xattrs.sort();
    xattrs
}

/// Describes every entry below `root` (not `root` itself), keyed by relative path.
pub fn tree(root: &Path) -> BTreeMap<String, Node> {
    let mut nodes = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), String> = BTreeMap::new();
    walk(root, "", &mut nodes, &mut inodes);
    nodes
}

fn walk(
    dir: &Path,
    prefix: &str,
    nodes: &mut BTreeMap<String, Node>,
    inodes: &mut BTreeMap<(u64, u64), String>,
) {
    let Ok(read) = std::fs::read_dir(dir) else {
        return;
    };
    let mut names: Vec<_> = read.filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let rel = format!("{prefix}{}", name.to_string_lossy());
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let file_type = meta.file_type();
        use std::os::unix::fs::FileTypeExt;
        let kind = if file_type.is_dir() {
            "dir"
        } else if file_type.is_symlink() {
            "symlink"
        } else if file_type.is_file() {
            "file"
        } else if file_type.is_char_device() {
            "char"
        } else if file_type.is_block_device() {
            "block"
        } else if file_type.is_fifo() {
            "fifo"
        } else {
            "other"
        };
        let hardlink_of = if !file_type.is_dir() && meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            match inodes.get(&key) {
                Some(first) => Some(first.clone()),
                None => {
                    inodes.insert(key, rel.clone());
                    None
                }
            }
        } else {
            None
        };
        let node = Node {
            kind,
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            mtime: meta.mtime(),
            content: if file_type.is_file() {
                std::fs::read(&path).unwrap_or_default()
            } else {
                Vec::new()
            },
            link_target: if file_type.is_symlink() {
                std::fs::read_link(&path)
                    .ok()
                    .map(|t| t.as_os_str().as_bytes().to_vec())
            } else {
                None
            },
            rdev: meta.rdev(),
            xattrs: xattrs_of(&path),
            hardlink_of,
        };
        nodes.insert(rel.clone(), node);
        if file_type.is_dir() {
            walk(&path, &format!("{rel}/"), nodes, inodes);
        }
    }
}

/// Builds tars entry by entry with raw names, as an attacker would.
pub struct RawTar {
    builder: tar::Builder<Vec<u8>>,
}

impl RawTar {
    pub fn new() -> Self {
        RawTar {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    pub fn header(
        name: &[u8],
        kind: tar::EntryType,
        size: u64,
        mode: u32,
        link: Option<&[u8]>,
    ) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        assert!(name.len() <= 100, "raw names must fit the header");
        header.as_mut_bytes()[..name.len()].copy_from_slice(name);
        if let Some(link) = link {
            assert!(link.len() <= 100);
            header.as_mut_bytes()[157..157 + link.len()].copy_from_slice(link);
        }
        header.set_entry_type(kind);
        header.set_size(size);
        header.set_mode(mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1_600_000_000);
        header.set_cksum();
        header
    }

    pub fn file(mut self, name: &str, data: &[u8]) -> Self {
        let header = Self::header(
            name.as_bytes(),
            tar::EntryType::Regular,
            data.len() as u64,
            0o644,
            None,
        );
        self.builder
            .append(&header, data)
            .expect("append to memory");
        self
    }

    pub fn dir(mut self, name: &str) -> Self {
        let header = Self::header(name.as_bytes(), tar::EntryType::Directory, 0, 0o755, None);
        self.builder
            .append(&header, &[][..])
            .expect("append to memory");
        self
    }

    pub fn symlink(mut self, name: &str, target: &str) -> Self {
        let header = Self::header(
            name.as_bytes(),
            tar::EntryType::Symlink,
            0,
            0o777,
            Some(target.as_bytes()),
        );
        self.builder
            .append(&header, &[][..])
            .expect("append to memory");
        self
    }

    pub fn hardlink(mut self, name: &str, target: &str) -> Self {
        let header = Self::header(
            name.as_bytes(),
            tar::EntryType::Link,
            0,
            0o644,
            Some(target.as_bytes()),
        );
        self.builder
            .append(&header, &[][..])
            .expect("append to memory");
        self
    }

    pub fn raw(mut self, header: &tar::Header, data: &[u8]) -> Self {
        self.builder.append(header, data).expect("append to memory");
        self
    }

    pub fn finish(self) -> Vec<u8> {
        self.builder.into_inner().expect("finish in memory")
    }
}

/// True when running as root (device nodes, chown, overlay mounts).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Skips (or, under CI=true, fails) a test that needs root.
pub fn require_root(test: &str) -> bool {
    if is_root() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test} needs root and CI=true: run the suite as root");
    }
    eprintln!("skipping {test}: needs root");
    false
}
