//! Content digests: the OCI `Digest` type (re-exported from `oci-spec`) plus the
//! sha256 helpers kiln needs to compute and verify digests while streaming.

use std::io::{self, Read, Write};

use sha2::{Digest as _, Sha256};

pub use oci_spec::image::{Digest, DigestAlgorithm};

use crate::error::ImageError;

/// sha256 digest of a byte slice.
pub fn sha256_digest(bytes: &[u8]) -> Digest {
    digest_from_hasher(Sha256::new_with_prefix(bytes))
}

fn digest_from_hasher(hasher: Sha256) -> Digest {
    let hex = format!("{:x}", hasher.finalize());
    // A lowercase 64-hex sha256 is always a valid digest.
    match Digest::try_from(format!("sha256:{hex}")) {
        Ok(digest) => digest,
        Err(err) => unreachable!("sha256 hex is a valid digest: {err}"),
    }
}

/// Parses `sha256:<64 lowercase hex>`; other algorithms are refused because kiln
/// stores blobs by sha256 only.
pub fn parse_sha256(text: &str) -> Result<Digest, ImageError> {
    let digest = Digest::try_from(text).map_err(|err| ImageError::InvalidDigest {
        digest: text.to_string(),
        why: err.to_string(),
    })?;
    sha256_hex(&digest)?;
    Ok(digest)
}

/// The hex part of a sha256 digest, or an error naming the unsupported algorithm.
/// Safe to use as a file name: 64 lowercase hex characters.
pub fn sha256_hex(digest: &Digest) -> Result<&str, ImageError> {
    let hex = digest.digest();
    if *digest.algorithm() != DigestAlgorithm::Sha256
        || hex.len() != 64
        || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(ImageError::InvalidDigest {
            digest: digest.to_string(),
            why: "only sha256 digests (64 lowercase hex digits) are supported".into(),
        });
    }
    Ok(hex)
}

/// Checks that `actual` is `expected`, naming `what` in the error.
pub fn verify_digest(what: &str, expected: &Digest, actual: &Digest) -> Result<(), ImageError> {
    if expected == actual {
        Ok(())
    } else {
        Err(ImageError::DigestMismatch {
            what: what.to_string(),
            expected: expected.clone(),
            actual: actual.clone(),
        })
    }
}

/// A reader that hashes (sha256) and counts every byte read through it.
pub struct DigestingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> DigestingReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        DigestingReader {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes
    }

    /// Digest and length of everything read so far.
    pub fn finish(self) -> (Digest, u64) {
        (digest_from_hasher(self.hasher), self.bytes)
    }
}

impl<R: Read> Read for DigestingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let count = self.inner.read(buf)?;
        let read = buf.get(..count).unwrap_or_default();
        self.hasher.update(read);
        self.bytes += count as u64;
        Ok(count)
    }
}

/// A writer that hashes (sha256) and counts every byte written through it.
pub struct DigestingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> DigestingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        DigestingWriter {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// Digest, length, and the inner writer.
    pub fn finish(self) -> (Digest, u64, W) {
        (digest_from_hasher(self.hasher), self.bytes, self.inner)
    }
}

impl<W: Write> Write for DigestingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let count = self.inner.write(buf)?;
        let written = buf.get(..count).unwrap_or_default();
        self.hasher.update(written);
        self.bytes += count as u64;
        Ok(count)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_empty_input_is_the_well_known_value() {
        assert_eq!(
            sha256_digest(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn streaming_reader_and_writer_agree_with_one_shot_digest() {
        let data = vec![7u8; 100_000];
        let mut reader = DigestingReader::new(&data[..]);
        let mut sink = Vec::new();
        io::copy(&mut reader, &mut sink).unwrap();
        let (read_digest, read_len) = reader.finish();
        let mut writer = DigestingWriter::new(Vec::new());
        writer.write_all(&data).unwrap();
        let (write_digest, write_len, written) = writer.finish();
        assert_eq!(read_digest, sha256_digest(&data));
        assert_eq!(write_digest, read_digest);
        assert_eq!((read_len, write_len), (100_000, 100_000));
        assert_eq!(written, data);
    }

    #[test]
    fn only_sha256_is_accepted_for_storage() {
        assert!(parse_sha256(&format!("sha256:{}", "a".repeat(64))).is_ok());
        let err = parse_sha256(&format!("sha512:{}", "a".repeat(128))).unwrap_err();
        assert!(err.to_string().contains("only sha256"), "{err}");
        assert!(parse_sha256("sha256:abc").is_err());
        assert!(parse_sha256("sha256:../../etc/passwd").is_err());
    }

    #[test]
    fn mismatch_names_what_and_both_digests() {
        let a = sha256_digest(b"a");
        let b = sha256_digest(b"b");
        let err = verify_digest("layer 1", &a, &b).unwrap_err().to_string();
        assert!(err.contains("layer 1") && err.contains(a.digest()) && err.contains(b.digest()));
    }
}
