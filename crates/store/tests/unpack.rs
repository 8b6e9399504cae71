//! Unpacking images into shared per-layer snapshots: overlay-mode content,
//! diff-id verification, sharing between images, and gc once unused.

use std::fs;
use std::os::unix::fs::FileTypeExt;

use kiln_store::image_ops::{OCI_LAYER_TAR, unpack_image};
use kiln_store::{Digest, LayerRecord, NewImage, Store};

fn layer_tar(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, data) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, path, *data).unwrap();
    }
    builder.into_inner().unwrap()
}

fn put_image(
    store: &Store,
    layers: &[Vec<u8>],
    name: &str,
    diff_id_override: Option<Digest>,
) -> Digest {
    let lease = store.lease();
    let mut records = Vec::new();
    for bytes in layers {
        let blob = store.put_blob(&lease, bytes).unwrap();
        records.push(LayerRecord {
            blob: blob.digest.clone(),
            media_type: OCI_LAYER_TAR.into(),
            compressed_size: blob.size,
            diff_id: diff_id_override.clone().unwrap_or(blob.digest),
            size: 0,
        });
    }
    let config = store.put_blob(&lease, name.as_bytes()).unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "config": {"digest": config.digest.to_string()},
        "layers": records.iter().map(|r| serde_json::json!({"digest": r.blob.to_string()})).collect::<Vec<_>>(),
    });
    let manifest = store
        .put_blob(&lease, &serde_json::to_vec(&manifest).unwrap())
        .unwrap();
    lease.add_image(&manifest.digest).unwrap();
    store
        .put_image(&NewImage {
            manifest: manifest.digest.clone(),
            manifest_media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            config: config.digest,
            created: None,
            layers: records,
        })
        .unwrap();
    store.set_ref(name, &manifest.digest).unwrap();
    manifest.digest
}

#[test]
fn layers_unpack_once_into_shared_overlay_snapshots() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIP: overlay-mode snapshots (whiteout devices) need root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let base = layer_tar(&[("etc/a", b"a"), ("etc/b", b"b")]);
    let top = layer_tar(&[("etc/.wh.a", b""), ("etc/c", b"c")]);
    let first = put_image(&store, &[base.clone(), top], "first", None);
    let second = put_image(&store, &[base, layer_tar(&[("x", b"x")])], "second", None);

    let lease = store.lease();
    let image = store.image(&first).unwrap().unwrap();
    let dirs = unpack_image(&store, &lease, &image).unwrap();
    assert_eq!(dirs.len(), 2);
    assert_eq!(fs::read(dirs[0].join("etc/a")).unwrap(), b"a");
    assert!(
        !dirs[1].join("etc/b").exists(),
        "a snapshot holds only its own layer"
    );
    let whiteout = fs::symlink_metadata(dirs[1].join("etc/a")).unwrap();
    assert!(
        whiteout.file_type().is_char_device(),
        "whiteout is an overlayfs 0/0 device"
    );
    assert_eq!(fs::read(dirs[1].join("etc/c")).unwrap(), b"c");

    // The second image shares the base snapshot: same directory, not unpacked again.
    let marker = dirs[0].join("etc/marker");
    fs::write(&marker, b"same dir").unwrap();
    let other = store.image(&second).unwrap().unwrap();
    let other_dirs = unpack_image(&store, &lease, &other).unwrap();
    assert_eq!(other_dirs[0], dirs[0]);
    fs::remove_file(&marker).unwrap();
    assert!(store.check(false).unwrap().is_clean());

    // Removing the first image frees only its own top snapshot.
    drop(lease);
    store.delete_image(&first).unwrap();
    let report = store.gc().unwrap();
    assert_eq!(
        report.removed_snapshots,
        vec![image.layers[1].chain_id.clone()]
    );
    assert!(dirs[0].is_dir() && !dirs[1].exists());
    assert!(store.check(false).unwrap().is_clean());
}

#[test]
fn a_layer_that_does_not_match_its_diff_id_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let liar = put_image(
        &store,
        &[layer_tar(&[("f", b"f")])],
        "liar",
        Some(Digest::of_bytes(b"something else")),
    );
    let lease = store.lease();
    let image = store.image(&liar).unwrap().unwrap();
    let err = unpack_image(&store, &lease, &image).unwrap_err();
    assert!(err.to_string().contains("image config says"), "{err}");
    assert!(!store.snapshot_path(&image.layers[0].chain_id).exists());
}
