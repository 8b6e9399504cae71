//! Archives kiln writes, read back by kiln: names, digests and layers survive;
//! members in any order; hostile or corrupt archives are refused.

mod common;

use std::io::Read;

use common::{make_test_image, member_names};
use kiln_image::{
    ArchiveFormat, BlobRead, ImageError, MemoryBlobs, ReadOptions, WriteOptions, read_archive,
    read_oci_dir, sha256_digest, sniff_archive_file, write_docker_archive, write_oci_archive,
    write_oci_dir,
};

fn docker_archive_bytes() -> (common::TestImage, Vec<u8>) {
    let image = make_test_image();
    let out = write_docker_archive(
        Vec::new(),
        &image.blobs,
        &[image.export(&["kiln-test/app:1.0", "localhost:5000/app:latest"])],
        &WriteOptions::default(),
    )
    .unwrap();
    (image, out)
}

#[test]
fn docker_archive_round_trips_with_uncompressed_layers() {
    let (image, bytes) = docker_archive_bytes();
    let names = member_names(bytes.as_slice());
    for required in ["manifest.json", "index.json", "oci-layout", "repositories"] {
        assert!(
            names.iter().any(|name| name == required),
            "{required} missing from {names:?}"
        );
    }
    let mut sink = MemoryBlobs::new();
    let loaded = read_archive(&bytes[..], &mut sink, &ReadOptions::default()).unwrap();
    assert_eq!(loaded.format, ArchiveFormat::DockerArchive);
    assert_eq!(loaded.images.len(), 1);
    let found = &loaded.images[0];
    let shown: Vec<String> = found.names.iter().map(|name| name.familiar()).collect();
    assert_eq!(shown, ["kiln-test/app:1.0", "localhost:5000/app:latest"]);
    assert_eq!(
        found.config.digest, image.config_digest,
        "config bytes kept exactly"
    );
    assert_eq!(found.config.diff_ids().unwrap(), image.diff_ids);
    // docker-archive layers are the uncompressed tars: their digests are the diff IDs.
    let layer_digests: Vec<_> = found
        .manifest
        .layers
        .iter()
        .map(|l| l.descriptor.digest().clone())
        .collect();
    assert_eq!(layer_digests, image.diff_ids);
    for digest in &image.diff_ids {
        let mut content = Vec::new();
        sink.open_blob(digest)
            .unwrap()
            .read_to_end(&mut content)
            .unwrap();
        assert_eq!(&sha256_digest(&content), digest);
    }
    assert!(
        sink.get(&found.manifest.digest).is_some(),
        "manifest written to the sink"
    );
    let cmd = found
        .config
        .config
        .config()
        .as_ref()
        .and_then(|c| c.cmd().clone())
        .unwrap();
    assert_eq!(cmd[0], "/bin/sh");
}

#[test]
fn members_in_any_order_are_resolved_at_the_end() {
    let (image, bytes) = docker_archive_bytes();
    // Rebuild the tar with its members reversed: manifest.json comes first, layers last.
    let mut members = Vec::new();
    let mut tar = tar::Archive::new(&bytes[..]);
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let header = entry.header().clone();
        let path = entry.path().unwrap().into_owned();
        let mut content = Vec::new();
        entry.read_to_end(&mut content).unwrap();
        members.push((header, path, content));
    }
    members.reverse();
    // Also name members `./x` as `tar -C dir -cf out.tar .` does.
    let mut builder = tar::Builder::new(Vec::new());
    for (mut header, path, content) in members {
        // The tar crate drops `./` from paths it is given: write the raw name.
        let dotted = format!("./{}", path.display());
        let name = &mut header.as_old_mut().name;
        name.fill(0);
        name[..dotted.len()].copy_from_slice(dotted.as_bytes());
        header.set_cksum();
        builder.append(&header, &content[..]).unwrap();
    }
    let reversed = builder.into_inner().unwrap();
    let names = member_names(reversed.as_slice());
    assert!(
        names.first().is_some_and(|name| name.starts_with("./")),
        "{names:?}"
    );
    let mut sink = MemoryBlobs::new();
    let loaded = read_archive(&reversed[..], &mut sink, &ReadOptions::default()).unwrap();
    assert_eq!(loaded.images[0].config.digest, image.config_digest);
}

#[test]
fn gzip_or_zstd_compressed_archive_is_accepted() {
    use std::io::Write;
    let (image, bytes) = docker_archive_bytes();
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gzip.write_all(&bytes).unwrap();
    let gzipped = gzip.finish().unwrap();
    let zstded = zstd::encode_all(&bytes[..], 3).unwrap();
    for compressed in [gzipped, zstded] {
        let mut sink = MemoryBlobs::new();
        let loaded = read_archive(&compressed[..], &mut sink, &ReadOptions::default()).unwrap();
        assert_eq!(loaded.images[0].config.digest, image.config_digest);
    }
}

#[test]
fn oci_archive_and_dir_keep_manifest_digest_and_compression() {
    let image = make_test_image();
    let export = [image.export(&["kiln-test/app:1.0"])];
    let bytes = write_oci_archive(Vec::new(), &image.blobs, &export).unwrap();
    let mut sink = MemoryBlobs::new();
    let loaded = read_archive(&bytes[..], &mut sink, &ReadOptions::default()).unwrap();
    assert_eq!(loaded.format, ArchiveFormat::OciLayout);
    let found = &loaded.images[0];
    assert_eq!(
        found.manifest.digest, image.manifest_digest,
        "manifest bytes kept exactly"
    );
    assert_eq!(found.names[0].to_string(), "docker.io/kiln-test/app:1.0");
    assert_eq!(
        found.manifest.layers[0].compression,
        kiln_image::LayerCompression::Gzip
    );

    let dir = tempfile::tempdir().unwrap();
    write_oci_dir(dir.path(), &image.blobs, &export).unwrap();
    assert_eq!(
        sniff_archive_file(dir.path()).unwrap(),
        ArchiveFormat::OciLayout
    );
    let mut sink = MemoryBlobs::new();
    let loaded = read_oci_dir(dir.path(), &mut sink, &ReadOptions::default()).unwrap();
    assert_eq!(loaded.images[0].manifest.digest, image.manifest_digest);
    assert_eq!(sink.len(), 4, "manifest, config and two layers copied");

    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &bytes).unwrap();
    assert_eq!(
        sniff_archive_file(file.path()).unwrap(),
        ArchiveFormat::OciLayout
    );
    let (_, docker) = docker_archive_bytes();
    std::fs::write(file.path(), &docker).unwrap();
    assert_eq!(
        sniff_archive_file(file.path()).unwrap(),
        ArchiveFormat::DockerArchive
    );
}

fn tar_of(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, content) in members {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        // set_path refuses `..`; write the raw name as a hostile tool would.
        let name = header.as_old_mut().name.as_mut();
        name[..path.len()].copy_from_slice(path.as_bytes());
        header.set_cksum();
        builder.append(&header, *content).unwrap();
    }
    builder.into_inner().unwrap()
}

#[test]
fn hostile_and_corrupt_archives_are_refused_with_clear_errors() {
    let mut sink = MemoryBlobs::new();
    let traversal = tar_of(&[("../evil", b"x")]);
    let err = read_archive(&traversal[..], &mut sink, &ReadOptions::default()).unwrap_err();
    assert!(err.to_string().contains("leaves the archive root"), "{err}");

    let wrong_name = format!("blobs/sha256/{}", "0".repeat(64));
    let lying = tar_of(&[(&wrong_name, b"not that content")]);
    let err = read_archive(&lying[..], &mut sink, &ReadOptions::default()).unwrap_err();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
    assert!(sink.is_empty(), "nothing stored from a lying archive");

    let empty = tar_of(&[("hello.txt", b"hi")]);
    let err = read_archive(&empty[..], &mut sink, &ReadOptions::default()).unwrap_err();
    assert!(err.to_string().contains("neither manifest.json"), "{err}");

    let missing_layer = tar_of(&[(
        "manifest.json",
        br#"[{"Config":"c.json","RepoTags":["a:b"],"Layers":["x/layer.tar"]}]"#,
    )]);
    let err = read_archive(&missing_layer[..], &mut sink, &ReadOptions::default()).unwrap_err();
    assert!(err.to_string().contains("c.json"), "{err}");

    let not_tar = b"this is not a tar file at all, just text".repeat(20);
    assert!(read_archive(&not_tar[..], &mut sink, &ReadOptions::default()).is_err());
}

#[test]
fn corrupt_source_blob_is_detected_on_write() {
    let image = make_test_image();
    // A blob source that returns different bytes than its digest says.
    struct Lying(MemoryBlobs, kiln_image::Digest);
    impl BlobRead for Lying {
        fn open_blob(&self, digest: &kiln_image::Digest) -> std::io::Result<Box<dyn Read + '_>> {
            if *digest == self.1 {
                Ok(Box::new(&b"tampered"[..]))
            } else {
                self.0.open_blob(digest)
            }
        }
        fn blob_size(&self, digest: &kiln_image::Digest) -> std::io::Result<u64> {
            if *digest == self.1 {
                Ok(8)
            } else {
                self.0.blob_size(digest)
            }
        }
    }
    let source = Lying(image.blobs.clone(), image.diff_ids[1].clone());
    let err = write_oci_archive(Vec::new(), &source, &[image.export(&["x:y"])]).unwrap_err();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
    let err = write_docker_archive(
        Vec::new(),
        &source,
        &[image.export(&["x:y"])],
        &WriteOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
}

#[test]
fn classic_docker_save_layout_with_symlinked_layers_is_read() {
    // The layout of `docker save` before docker 25: <v1id>/layer.tar (a symlink
    // when the layer repeats), <config hex>.json, manifest.json last.
    let image = make_test_image();
    let mut layer_tars = Vec::new();
    for (position, layer) in [image.diff_ids[0].clone(), image.diff_ids[1].clone()]
        .iter()
        .enumerate()
    {
        let stored = image.blobs.get(layer);
        let tar_bytes = match stored {
            Some(bytes) => bytes.to_vec(),
            None => {
                // Layer 1 is stored gzip-compressed; decompress it as docker save would.
                let manifest_blob = image.blobs.get(&image.manifest_digest).unwrap();
                let kiln_image::Manifest::Image(doc) =
                    kiln_image::parse_manifest(manifest_blob, None).unwrap()
                else {
                    panic!("test image is a manifest")
                };
                let digest = doc.layers[position].descriptor.digest();
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(image.blobs.get(digest).unwrap())
                    .read_to_end(&mut out)
                    .unwrap();
                out
            }
        };
        assert_eq!(&sha256_digest(&tar_bytes), layer);
        layer_tars.push(tar_bytes);
    }
    let config = image.blobs.get(&image.config_digest).unwrap().to_vec();
    let config_name = format!("{}.json", image.config_digest.digest());
    let manifest = serde_json::json!([{
        "Config": config_name,
        "RepoTags": ["old/style:v1"],
        "Layers": ["aaa/layer.tar", "bbb/layer.tar", "ccc/layer.tar"]
    }]);
    // A third layer that repeats the second, stored as a symlink like docker does.
    let mut config_json: serde_json::Value = serde_json::from_slice(&config).unwrap();
    let second = config_json["rootfs"]["diff_ids"][1].clone();
    config_json["rootfs"]["diff_ids"]
        .as_array_mut()
        .unwrap()
        .push(second);
    let config = serde_json::to_vec(&config_json).unwrap();
    let config_name = format!("{}.json", sha256_digest(&config).digest());
    let mut manifest = manifest;
    manifest[0]["Config"] = serde_json::json!(config_name);

    let mut builder = tar::Builder::new(Vec::new());
    let mut add = |path: &str, bytes: &[u8]| {
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, path, bytes).unwrap();
    };
    add("aaa/VERSION", b"1.0");
    add("aaa/json", b"{}");
    add("aaa/layer.tar", &layer_tars[0]);
    add("bbb/layer.tar", &layer_tars[1]);
    add(&config_name, &config);
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Symlink);
    header.set_size(0);
    header.set_mode(0o777);
    builder
        .append_link(&mut header, "ccc/layer.tar", "../bbb/layer.tar")
        .unwrap();
    let manifest_bytes = serde_json::to_vec(&manifest).unwrap();
    let mut header = tar::Header::new_ustar();
    header.set_size(manifest_bytes.len() as u64);
    header.set_mode(0o644);
    builder
        .append_data(&mut header, "manifest.json", &manifest_bytes[..])
        .unwrap();
    let archive = builder.into_inner().unwrap();

    let mut sink = MemoryBlobs::new();
    let loaded = read_archive(&archive[..], &mut sink, &ReadOptions::default()).unwrap();
    let found = &loaded.images[0];
    assert_eq!(found.names[0].to_string(), "docker.io/old/style:v1");
    assert_eq!(found.manifest.layers.len(), 3);
    assert_eq!(
        found.manifest.layers[2].descriptor.digest(),
        &image.diff_ids[1]
    );
    assert_eq!(
        found.manifest.layers[0].compression,
        kiln_image::LayerCompression::None
    );
    assert!(
        sink.get(&found.manifest.digest).is_some(),
        "generated manifest stored"
    );
    assert_eq!(
        sink.len(),
        4,
        "two layers, config, generated manifest; legacy json/VERSION skipped"
    );
}

#[test]
fn docker_archive_reader_keeps_the_manifest_the_archive_carries() {
    let (_, bytes) = docker_archive_bytes();
    let mut tar = tar::Archive::new(&bytes[..]);
    let mut index_json = Vec::new();
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().to_str() == Some("index.json") {
            entry.read_to_end(&mut index_json).unwrap();
        }
    }
    let index: serde_json::Value = serde_json::from_slice(&index_json).unwrap();
    let carried = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
        "1.0"
    );
    assert_eq!(
        index["manifests"][0]["annotations"]["io.containerd.image.name"],
        "docker.io/kiln-test/app:1.0"
    );
    let mut sink = MemoryBlobs::new();
    let loaded = read_archive(&bytes[..], &mut sink, &ReadOptions::default()).unwrap();
    assert_eq!(loaded.images[0].manifest.digest.to_string(), carried);
}

#[test]
fn multi_platform_index_exports_present_platforms_and_selects_the_host() {
    let image = make_test_image();
    let mut blobs = image.blobs.clone();
    let manifest_size = blobs.get(&image.manifest_digest).unwrap().len();
    let absent = sha256_digest(b"an arm64 manifest that was never pulled");
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": absent.to_string(), "size": 10,
             "platform": {"os": "linux", "architecture": "arm64"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": image.manifest_digest.to_string(),
             "size": manifest_size, "platform": {"os": "linux", "architecture": "amd64"}}
        ]
    });
    let index_digest = blobs.insert(serde_json::to_vec(&index).unwrap());
    let export = [kiln_image::ExportImage {
        manifest_digest: index_digest.clone(),
        names: vec![kiln_image::Reference::parse("multi:1").unwrap()],
    }];

    let oci = write_oci_archive(Vec::new(), &blobs, &export).unwrap();
    let mut sink = MemoryBlobs::new();
    let loaded = read_archive(&oci[..], &mut sink, &ReadOptions::default()).unwrap();
    let found = &loaded.images[0];
    assert_eq!(
        found.top.digest(),
        &index_digest,
        "the index itself is kept"
    );
    assert_eq!(
        found.manifest.digest, image.manifest_digest,
        "amd64 selected"
    );
    let arm = ReadOptions {
        platform: kiln_image::Platform::parse("linux/arm64").unwrap(),
    };
    let err = read_archive(&oci[..], &mut MemoryBlobs::new(), &arm).unwrap_err();
    assert!(matches!(err, ImageError::MissingBlob { .. }), "{err}");

    let docker =
        write_docker_archive(Vec::new(), &blobs, &export, &WriteOptions::default()).unwrap();
    let loaded = read_archive(
        &docker[..],
        &mut MemoryBlobs::new(),
        &ReadOptions::default(),
    )
    .unwrap();
    assert_eq!(loaded.images[0].config.digest, image.config_digest);
}

#[test]
fn uncompressed_size_hint_gives_the_same_archive_in_one_pass() {
    let image = make_test_image();
    struct Hinted<'a>(&'a MemoryBlobs, u64, std::cell::Cell<u32>);
    impl BlobRead for Hinted<'_> {
        fn open_blob(&self, digest: &kiln_image::Digest) -> std::io::Result<Box<dyn Read + '_>> {
            self.2.set(self.2.get() + 1);
            self.0.open_blob(digest)
        }
        fn blob_size(&self, digest: &kiln_image::Digest) -> std::io::Result<u64> {
            self.0.blob_size(digest)
        }
        fn uncompressed_size(&self, _: &kiln_image::Digest) -> Option<u64> {
            Some(self.1)
        }
    }
    let base_tar_size = {
        let (_, bytes) = docker_archive_bytes();
        let mut tar = tar::Archive::new(&bytes[..]);
        let wanted = format!("blobs/sha256/{}", image.diff_ids[0].digest());
        tar.entries()
            .unwrap()
            .map(|entry| entry.unwrap())
            .find(|entry| entry.path().unwrap().to_str() == Some(wanted.as_str()))
            .map(|entry| entry.size())
            .unwrap()
    };
    let export = [image.export(&["kiln-test/app:1.0", "localhost:5000/app:latest"])];
    let plain =
        write_docker_archive(Vec::new(), &image.blobs, &export, &WriteOptions::default()).unwrap();
    let hinted_source = Hinted(&image.blobs, base_tar_size, std::cell::Cell::new(0));
    let hinted = write_docker_archive(
        Vec::new(),
        &hinted_source,
        &export,
        &WriteOptions::default(),
    )
    .unwrap();
    assert!(plain == hinted, "the hint must not change the archive");
    // manifest, config, gzip layer once, plain layer once.
    assert_eq!(
        hinted_source.2.get(),
        4,
        "gzip layer opened once with the hint"
    );

    let lying = Hinted(&image.blobs, base_tar_size - 1, std::cell::Cell::new(0));
    let err =
        write_docker_archive(Vec::new(), &lying, &export, &WriteOptions::default()).unwrap_err();
    assert!(
        err.to_string().contains("longer than its recorded size"),
        "{err}"
    );
}
