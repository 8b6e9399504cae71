//! ADD's local archives, as BuildKit treats them: a source file is an
//! archive when, after decompression (gzip, bzip2, xz or zstd, recognised by
//! their magic numbers as docker's `archive.DetectCompression` does, never by
//! the file name), its first block is a valid tar header (Go's
//! `tar.Reader.Next` succeeding: the header checksum matches). Archives are
//! unpacked into the destination through `kiln-snapshot`'s safe apply (every
//! entry created relative to the destination with `openat2`, `..` refused),
//! everything else is copied as is.

use std::fs;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

/// A compression recognised by its leading bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Bzip2,
    Xz,
    Zstd,
}

/// docker's `DetectCompression` magic numbers (zstd since docker 23 / BuildKit 0.11).
pub fn detect(head: &[u8]) -> Compression {
    if head.starts_with(&[0x42, 0x5a, 0x68]) {
        Compression::Bzip2
    } else if head.starts_with(&[0x1f, 0x8b, 0x08]) {
        Compression::Gzip
    } else if head.starts_with(&[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]) {
        Compression::Xz
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// Why an ADD archive could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("reading archive {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "unpacking archive {path} into {dest}: {source} (ADD unpacks local tar archives; to copy the file as it is use COPY)"
    )]
    Unpack {
        path: PathBuf,
        dest: String,
        source: kiln_snapshot::ApplyError,
    },
}

/// The decompressed contents of the file at `path`.
pub fn open_decompressed(path: &Path) -> io::Result<Box<dyn Read + Send>> {
    let mut file = fs::File::open(path)?;
    let mut head = [0u8; 6];
    let mut filled = 0;
    while filled < head.len() {
        match file.read(head.get_mut(filled..).unwrap_or_default()) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let format = detect(head.get(..filled).unwrap_or_default());
    let raw = io::Cursor::new(head.get(..filled).unwrap_or_default().to_vec()).chain(file);
    let reader = BufReader::with_capacity(256 << 10, raw);
    Ok(match format {
        Compression::None => Box::new(reader),
        // kiln-snapshot's decompressor handles gzip (zlib-rs) and zstd.
        Compression::Gzip | Compression::Zstd => kiln_snapshot::decompress(reader)?,
        Compression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(reader)),
        Compression::Xz => Box::new(xz2::read::XzDecoder::new_multi_decoder(reader)),
    })
}

/// Whether a tar header block is valid: its checksum field matches the sum
/// of its bytes (the field itself counted as spaces), signed or unsigned,
/// which is what Go's archive/tar checks before anything else.
fn valid_tar_header(block: &[u8; 512]) -> bool {
    let Some(field) = block.get(148..156) else {
        return false;
    };
    let text: String = field
        .iter()
        .map(|&b| b as char)
        .take_while(|c| *c != '\0')
        .collect();
    let text = text.trim_matches(' ');
    let Ok(recorded) = i64::from_str_radix(text, 8) else {
        return false;
    };
    let mut unsigned: i64 = 0;
    let mut signed: i64 = 0;
    for (i, &b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += i64::from(b);
        signed += i64::from(b as i8);
    }
    recorded == unsigned || recorded == signed
}

/// Whether the regular file at `path` is a (possibly compressed) tar archive.
pub fn is_archive(path: &Path) -> bool {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_file() => {}
        _ => return false,
    }
    let Ok(mut reader) = open_decompressed(path) else {
        return false;
    };
    let mut block = [0u8; 512];
    // An archive may start with one all-zero block before its first header
    // only if the second is not zero too (two zero blocks end the archive).
    for _ in 0..2 {
        if reader.read_exact(&mut block).is_err() {
            return false;
        }
        if block.iter().any(|&b| b != 0) {
            return valid_tar_header(&block);
        }
    }
    false
}

/// The paths of the entries of the archive at `path` (relative, cleaned),
/// in archive order.
pub fn entry_paths(path: &Path) -> Result<Vec<Vec<String>>, ArchiveError> {
    let read_error = |source| ArchiveError::Read {
        path: path.to_path_buf(),
        source,
    };
    let reader = open_decompressed(path).map_err(read_error)?;
    let mut archive = tar::Archive::new(reader);
    let mut paths = Vec::new();
    for entry in archive.entries().map_err(read_error)? {
        let entry = entry.map_err(read_error)?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let parts = crate::fsview::components(&name);
        if !parts.is_empty() {
            paths.push(parts);
        }
    }
    Ok(paths)
}

/// The directories `entries` live in, each once, parents first.
pub fn parents_of(entries: &[Vec<String>]) -> Vec<Vec<String>> {
    let mut parents: std::collections::BTreeSet<Vec<String>> = Default::default();
    for entry in entries {
        let mut parts = entry.clone();
        parts.pop();
        while !parts.is_empty() && parents.insert(parts.clone()) {
            parts.pop();
        }
    }
    parents.into_iter().collect()
}

/// Unpacks the archive at `path` into the directory `into` (`dest` names it
/// in messages), never writing outside `into`. Entries keep the archive's
/// numeric owners and modes, even under `ADD --chown` (BuildKit applies
/// `--chown` to the destination directories it creates, not to what an
/// archive holds; checked against it).
pub fn unpack(path: &Path, into: &Path, dest: &str) -> Result<(), ArchiveError> {
    let reader = open_decompressed(path).map_err(|source| ArchiveError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let options = kiln_snapshot::ApplyOptions::default();
    kiln_snapshot::apply_layer(reader, into, &options).map_err(|source| ArchiveError::Unpack {
        path: path.to_path_buf(),
        dest: dest.to_string(),
        source,
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn tar_of(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, content) in members {
            let mut header = tar::Header::new_gnu();
            header.set_size(content.len() as u64);
            header.set_mode(0o640);
            header.set_uid(3);
            header.set_gid(4);
            header.set_entry_type(tar::EntryType::Regular);
            builder
                .append_data(&mut header, name, *content)
                .unwrap_or_else(|e| panic!("append: {e}"));
        }
        builder
            .into_inner()
            .unwrap_or_else(|e| panic!("finish: {e}"))
    }

    fn compressed(kind: Compression, data: &[u8]) -> Vec<u8> {
        match kind {
            Compression::None => data.to_vec(),
            Compression::Gzip => {
                snapshot_compressed(data, kiln_snapshot::Compression::GZIP_DEFAULT)
            }
            Compression::Zstd => {
                snapshot_compressed(data, kiln_snapshot::Compression::ZSTD_DEFAULT)
            }
            Compression::Bzip2 => {
                let mut encoder =
                    bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
                encoder.write_all(data).unwrap_or_default();
                encoder.finish().unwrap_or_default()
            }
            Compression::Xz => {
                let mut encoder = xz2::write::XzEncoder::new(Vec::new(), 6);
                encoder.write_all(data).unwrap_or_default();
                encoder.finish().unwrap_or_default()
            }
        }
    }

    fn snapshot_compressed(data: &[u8], compression: kiln_snapshot::Compression) -> Vec<u8> {
        let mut out = Vec::new();
        kiln_snapshot::compress(data, compression, &mut out)
            .unwrap_or_else(|e| panic!("compress: {e}"));
        out
    }

    #[test]
    fn archives_are_recognised_by_content_in_every_compression() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let tar = tar_of(&[("a/b.txt", b"b\n")]);
        for kind in [
            Compression::None,
            Compression::Gzip,
            Compression::Bzip2,
            Compression::Xz,
            Compression::Zstd,
        ] {
            let bytes = compressed(kind, &tar);
            assert_eq!(detect(&bytes), kind);
            let path = dir.path().join(format!("{kind:?}.bin"));
            fs::write(&path, &bytes).unwrap_or_default();
            assert!(is_archive(&path), "{kind:?} tar not recognised");
            let not_tar = dir.path().join(format!("{kind:?}.txt"));
            fs::write(&not_tar, compressed(kind, &[b'x'; 2048])).unwrap_or_default();
            assert!(!is_archive(&not_tar), "{kind:?} of text taken for a tar");
            let into = dir.path().join(format!("{kind:?}-out"));
            fs::create_dir(&into).unwrap_or_default();
            unpack(&path, &into, "/out").unwrap_or_else(|e| panic!("{kind:?}: {e}"));
            assert_eq!(
                fs::read_to_string(into.join("a/b.txt")).unwrap_or_default(),
                "b\n"
            );
            let entries = entry_paths(&path).unwrap_or_default();
            assert_eq!(entries, vec![vec!["a".to_string(), "b.txt".to_string()]]);
            assert_eq!(parents_of(&entries), vec![vec!["a".to_string()]]);
        }
        // A short file, an empty file and a block of zeros are not archives.
        for (name, bytes) in [("short", b"ustar".to_vec()), ("empty", Vec::new())] {
            let path = dir.path().join(name);
            fs::write(&path, bytes).unwrap_or_default();
            assert!(!is_archive(&path));
        }
        let zeros = dir.path().join("zeros");
        fs::write(&zeros, [0u8; 2048]).unwrap_or_default();
        assert!(!is_archive(&zeros));
    }

    proptest::proptest! {
        /// ADD sources are untrusted: any bytes are either an archive or not, never a panic.
        #[test]
        fn any_file_is_classified_without_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..2048)) {
            let _ = detect(&bytes);
            let mut block = [0u8; 512];
            for (slot, b) in block.iter_mut().zip(bytes.iter()) {
                *slot = *b;
            }
            let _ = valid_tar_header(&block);
            let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
            let path = dir.path().join("f");
            fs::write(&path, &bytes).unwrap_or_default();
            let _ = is_archive(&path);
        }
    }

    #[test]
    fn symlinks_in_an_archive_never_lead_outside() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let mut builder = tar::Builder::new(Vec::new());
        for (name, target) in [("abs", "/"), ("up", "../../.."), ("etc", "/etc")] {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            header.set_mode(0o777);
            builder
                .append_link(&mut header, name, target)
                .unwrap_or_else(|e| panic!("link: {e}"));
        }
        for name in ["abs/escaped-abs", "up/escaped-up", "etc/escaped-etc"] {
            let mut header = tar::Header::new_gnu();
            header.set_size(2);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            builder
                .append_data(&mut header, name, b"x\n".as_slice())
                .unwrap_or_else(|e| panic!("append: {e}"));
        }
        let bytes = builder
            .into_inner()
            .unwrap_or_else(|e| panic!("finish: {e}"));
        let path = dir.path().join("links.tar");
        fs::write(&path, bytes).unwrap_or_default();
        let into = dir.path().join("a/b/c/out");
        fs::create_dir_all(&into).unwrap_or_default();
        // Whether the apply refuses the archive or keeps the files inside
        // `into`, nothing may appear outside it.
        let _ = unpack(&path, &into, "/out");
        for outside in [
            dir.path().join("escaped-up"),
            dir.path().join("a/escaped-up"),
            PathBuf::from("/escaped-abs"),
            PathBuf::from("/etc/escaped-etc"),
        ] {
            assert!(!outside.exists(), "{} was written", outside.display());
        }
    }

    #[test]
    fn unpacking_never_leaves_the_destination() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let mut tar = tar_of(&[("ok", b"fine")]);
        // Rewrite the member name to climb out with `..` (the tar crate refuses to write it).
        let mut header = [0u8; 512];
        header.copy_from_slice(tar.get(..512).unwrap_or(&[0; 512]));
        let name = b"../escaped";
        header.iter_mut().take(100).for_each(|b| *b = 0);
        header
            .get_mut(..name.len())
            .unwrap_or_default()
            .copy_from_slice(name);
        header.get_mut(148..156).unwrap_or_default().fill(b' ');
        let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
        let field = format!("{sum:06o}\0 ");
        header
            .get_mut(148..156)
            .unwrap_or_default()
            .copy_from_slice(field.as_bytes());
        tar.get_mut(..512)
            .unwrap_or_default()
            .copy_from_slice(&header);
        let path = dir.path().join("evil.tar");
        fs::write(&path, &tar).unwrap_or_default();
        assert!(is_archive(&path));
        let into = dir.path().join("inner/out");
        fs::create_dir_all(&into).unwrap_or_default();
        let err = unpack(&path, &into, "/out");
        assert!(matches!(err, Err(ArchiveError::Unpack { .. })), "{err:?}");
        assert!(!dir.path().join("inner/escaped").exists());
    }
}
