//! A ~1 GB image goes through docker-archive write and read in constant memory:
//! layers are streamed, never held whole. Runs as its own test binary so the
//! peak-RSS measurement sees only this test.

use std::io::{self, Read};

use kiln_image::{
    BlobRead, BlobWrite, Digest, ExportImage, ImageError, ReadOptions, Reference, WriteOptions,
    digest::{DigestingReader, verify_digest},
    read_archive, sha256_digest, write_docker_archive,
};

const PLAIN_LAYER: u64 = 768 << 20;
const GZIP_LAYER_TAR: u64 = 256 << 20;

/// Deterministic bytes of a given length, generated on the fly.
struct Pattern {
    remaining: u64,
    block: Vec<u8>,
    offset: usize,
}

impl Pattern {
    fn new(len: u64, seed: u8) -> Self {
        let block = (0..65_536u32)
            .map(|i| (i.wrapping_mul(31) as u8) ^ seed)
            .collect();
        Pattern {
            remaining: len,
            block,
            offset: 0,
        }
    }
}

impl Read for Pattern {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let count = buf
            .len()
            .min(self.block.len() - self.offset)
            .min(self.remaining as usize);
        buf[..count].copy_from_slice(&self.block[self.offset..self.offset + count]);
        self.offset = (self.offset + count) % self.block.len();
        self.remaining -= count as u64;
        Ok(count)
    }
}

fn gzip_layer() -> flate2::read::GzEncoder<Pattern> {
    flate2::read::GzEncoder::new(Pattern::new(GZIP_LAYER_TAR, 7), flate2::Compression::fast())
}

fn digest_of(reader: impl Read) -> (Digest, u64) {
    let mut hashing = DigestingReader::new(reader);
    io::copy(&mut hashing, &mut io::sink()).unwrap();
    hashing.finish()
}

/// A blob source whose two layers are generated, not stored.
struct Generated {
    plain: (Digest, u64),
    gzip: (Digest, u64),
    small: kiln_image::MemoryBlobs,
}

impl BlobRead for Generated {
    fn open_blob(&self, digest: &Digest) -> io::Result<Box<dyn Read + '_>> {
        if *digest == self.plain.0 {
            Ok(Box::new(Pattern::new(PLAIN_LAYER, 1)))
        } else if *digest == self.gzip.0 {
            Ok(Box::new(gzip_layer()))
        } else {
            self.small.open_blob(digest)
        }
    }

    fn blob_size(&self, digest: &Digest) -> io::Result<u64> {
        if *digest == self.plain.0 {
            Ok(self.plain.1)
        } else if *digest == self.gzip.0 {
            Ok(self.gzip.1)
        } else {
            self.small.blob_size(digest)
        }
    }
}

/// A sink that verifies and discards.
#[derive(Default)]
struct Discard {
    blobs: u64,
    bytes: u64,
}

impl BlobWrite for Discard {
    fn put_blob(
        &mut self,
        reader: &mut dyn Read,
        expected: Option<&Digest>,
    ) -> Result<(Digest, u64), ImageError> {
        let (digest, size) = digest_of(reader);
        if let Some(expected) = expected {
            verify_digest("blob", expected, &digest)?;
        }
        self.blobs += 1;
        self.bytes += size;
        Ok((digest, size))
    }
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn one_gigabyte_image_round_trips_in_constant_memory() {
    let plain = digest_of(Pattern::new(PLAIN_LAYER, 1));
    let gzip = digest_of(gzip_layer());
    let gzip_diff_id = digest_of(Pattern::new(GZIP_LAYER_TAR, 7)).0;
    let mut small = kiln_image::MemoryBlobs::new();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [gzip_diff_id.to_string(), plain.0.to_string()]}
    }))
    .unwrap();
    let config_digest = small.insert(config.clone());
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest.to_string(), "size": config.len()},
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": gzip.0.to_string(), "size": gzip.1},
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": plain.0.to_string(), "size": plain.1}
        ]
    }))
    .unwrap();
    let manifest_digest = small.insert(manifest);
    let source = Generated {
        plain: plain.clone(),
        gzip,
        small,
    };
    let before = peak_rss_kib();

    let (reader, writer) = io::pipe().unwrap();
    let export = ExportImage {
        manifest_digest,
        names: vec![Reference::parse("big/image:1").unwrap()],
    };
    let loaded = std::thread::scope(|scope| {
        let source = &source;
        let writing = scope.spawn(move || {
            write_docker_archive(writer, source, &[export], &WriteOptions::default()).map(drop)
        });
        let mut sink = Discard::default();
        let loaded = read_archive(reader, &mut sink, &ReadOptions::default()).unwrap();
        writing.join().unwrap().unwrap();
        assert!(
            sink.bytes >= PLAIN_LAYER + GZIP_LAYER_TAR,
            "{} bytes spooled",
            sink.bytes
        );
        loaded
    });
    let growth_mib = (peak_rss_kib().saturating_sub(before)) / 1024;
    let image = &loaded.images[0];
    let layers: Vec<_> = image
        .manifest
        .layers
        .iter()
        .map(|layer| layer.descriptor.digest().clone())
        .collect();
    assert_eq!(
        layers,
        [gzip_diff_id, plain.0],
        "docker-archive layers are the diff IDs"
    );
    assert_eq!(image.config.digest, sha256_digest(&config));
    eprintln!("peak RSS grew by {growth_mib} MiB while writing and reading a 1 GiB image");
    assert!(
        growth_mib < 100,
        "peak RSS grew by {growth_mib} MiB: layers are being buffered"
    );

    // Control: the measurement does see a buffered layer-sized allocation.
    let buffered = vec![1u8; 200 << 20];
    let control_mib = (peak_rss_kib().saturating_sub(before)) / 1024;
    assert!(
        control_mib >= 150,
        "VmHWM did not register a 200 MiB buffer ({control_mib} MiB)"
    );
    drop(std::hint::black_box(buffered));
}
