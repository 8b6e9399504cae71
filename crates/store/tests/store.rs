//! Integration tests of the store: atomic verified blobs, image records and
//! names, leases against gc, reaping of dead processes, check/repair, and
//! snapshot creation under concurrency.

use std::fs;
use std::io::Write;

use kiln_store::{Digest, LayerRecord, NewImage, Store, StoreError};

fn manifest_json(config: &Digest, layers: &[Digest]) -> Vec<u8> {
    let layers: Vec<serde_json::Value> = layers
        .iter()
        .map(|d| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d.to_string(), "size": 1}))
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.to_string(), "size": 1},
        "layers": layers,
    }))
    .unwrap()
}

/// Stores a one-layer image whose layer content is `content`; returns its manifest digest.
fn put_test_image(store: &Store, content: &[u8], name: Option<&str>) -> Digest {
    let lease = store.lease();
    let layer = store.put_blob(&lease, content).unwrap();
    let config = store
        .put_blob(
            &lease,
            format!("{{\"rootfs\":{{\"diff_ids\":[\"{}\"]}}}}", layer.digest).as_bytes(),
        )
        .unwrap();
    let manifest = store
        .put_blob(
            &lease,
            &manifest_json(&config.digest, std::slice::from_ref(&layer.digest)),
        )
        .unwrap();
    lease.add_image(&manifest.digest).unwrap();
    store
        .put_image(&NewImage {
            manifest: manifest.digest.clone(),
            manifest_media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            config: config.digest,
            created: None,
            layers: vec![LayerRecord {
                blob: layer.digest.clone(),
                media_type: "application/vnd.oci.image.layer.v1.tar".into(),
                compressed_size: layer.size,
                diff_id: layer.digest,
                size: content.len() as u64,
            }],
        })
        .unwrap();
    if let Some(name) = name {
        store.set_ref(name, &manifest.digest).unwrap();
    }
    manifest.digest
}

#[test]
fn blob_is_verified_and_lands_under_its_digest() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let lease = store.lease();
    let info = store.put_blob(&lease, b"hello").unwrap();
    assert_eq!(info.digest, Digest::of_bytes(b"hello"));
    assert_eq!(fs::read(store.blob_path(&info.digest)).unwrap(), b"hello");
    assert_eq!(store.read_blob(&info.digest).unwrap(), b"hello");

    let mut writer = store.blob_writer().unwrap();
    writer.write_all(b"not what was promised").unwrap();
    let wrong = Digest::of_bytes(b"something else");
    match writer.commit(&lease, Some(&wrong)) {
        Err(StoreError::DigestMismatch { expected, .. }) => assert_eq!(expected, wrong),
        other => panic!("expected a digest mismatch, got {other:?}"),
    }
    assert!(!store.has_blob(&wrong));
    assert!(!store.has_blob(&Digest::of_bytes(b"not what was promised")));
    // Nothing half-written is left behind in the temp dir either.
    assert_eq!(fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
}

#[test]
fn names_images_prune_and_gc() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let tagged = put_test_image(&store, b"layer one", Some("docker.io/library/a:latest"));
    let dangling = put_test_image(&store, b"layer two", None);
    assert_eq!(
        store.resolve_ref("docker.io/library/a:latest").unwrap(),
        Some(tagged.clone())
    );
    assert_eq!(store.list_images().unwrap().len(), 2);

    // Retagging returns the image the name used to point at.
    assert_eq!(
        store
            .set_ref("docker.io/library/a:latest", &dangling)
            .unwrap(),
        Some(tagged.clone())
    );
    store
        .set_ref("docker.io/library/a:latest", &tagged)
        .unwrap();

    let removed = store.prune_images(false).unwrap();
    assert_eq!(
        removed
            .iter()
            .map(|i| i.manifest.clone())
            .collect::<Vec<_>>(),
        vec![dangling.clone()]
    );
    let report = store.gc().unwrap();
    assert!(report.removed_blobs.contains(&dangling));
    assert!(
        report
            .removed_blobs
            .contains(&Digest::of_bytes(b"layer two"))
    );
    assert!(store.has_blob(&Digest::of_bytes(b"layer one")));
    assert!(store.check(false).unwrap().is_clean());

    let removed = store.prune_images(true).unwrap();
    assert_eq!(removed.len(), 1);
    store.gc().unwrap();
    assert_eq!(
        fs::read_dir(dir.path().join("blobs/sha256"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn leases_protect_blobs_and_images_until_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let other = Store::open(dir.path()).unwrap();
    let lease = store.lease();
    let blob = store.put_blob(&lease, b"in use").unwrap();
    let image = put_test_image(&store, b"image in use", None);
    lease.add_image(&image).unwrap();

    // Another process's prune and gc leave leased things alone.
    assert!(other.prune_images(true).unwrap().is_empty());
    other.gc().unwrap();
    assert!(store.has_blob(&blob.digest));
    assert!(other.image_in_use(&image).unwrap());

    drop(lease);
    assert!(!other.image_in_use(&image).unwrap());
    assert_eq!(other.prune_images(true).unwrap().len(), 1);
    other.gc().unwrap();
    assert!(!store.has_blob(&blob.digest));
}

#[test]
fn leases_of_dead_processes_are_reaped() {
    let dir = tempfile::tempdir().unwrap();
    // A process that is killed: its store is leaked so no Drop runs, then its
    // lock is released by closing the file as the kernel would on death.
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_that_leases_and_dies", "--nocapture"])
        .env("KILN_TEST_CHILD_ROOT", dir.path())
        .output()
        .unwrap();
    assert!(
        child.status.success(),
        "{}",
        String::from_utf8_lossy(&child.stderr)
    );
    let leaked = Digest::of_bytes(b"leased by a dead process");
    let store = Store::open(dir.path()).unwrap();
    assert!(store.has_blob(&leaked));
    let report = store.gc().unwrap();
    assert_eq!(report.reaped_holders.len(), 1, "{report:?}");
    assert!(report.removed_blobs.contains(&leaked));
    assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 1); // only ours
}

#[test]
fn child_that_leases_and_dies() {
    let Some(root) = std::env::var_os("KILN_TEST_CHILD_ROOT") else {
        return; // only meaningful when spawned by leases_of_dead_processes_are_reaped
    };
    let store = Store::open(root).unwrap();
    let lease = store.lease();
    store.put_blob(&lease, b"leased by a dead process").unwrap();
    let mut half = store.blob_writer().unwrap();
    half.write_all(b"half a blob").unwrap();
    // Simulate SIGKILL: no destructors run.
    std::process::exit(0);
}

#[test]
fn check_finds_and_repairs_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let image = put_test_image(
        &store,
        b"precious layer",
        Some("docker.io/library/p:latest"),
    );
    assert!(store.check(false).unwrap().is_clean());

    let layer_path = store.blob_path(&Digest::of_bytes(b"precious layer"));
    fs::write(&layer_path, b"bit rot").unwrap();
    let report = store.check(false).unwrap();
    assert!(!report.is_clean());
    assert_eq!(report.problems.len(), 2, "{:?}", report.problems); // the blob and the image using it

    let report = store.check(true).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert!(store.image(&image).unwrap().is_none());
    assert!(
        store
            .resolve_ref("docker.io/library/p:latest")
            .unwrap()
            .is_none()
    );
    assert!(store.check(false).unwrap().problems.is_empty());
}

#[test]
fn snapshots_are_created_once_even_concurrently() {
    let dir = tempfile::tempdir().unwrap();
    let chain = Digest::of_bytes(b"chain");
    let stores: Vec<Store> = (0..4).map(|_| Store::open(dir.path()).unwrap()).collect();
    let fills = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for store in &stores {
            let chain = chain.clone();
            let fills = &fills;
            scope.spawn(move || {
                let lease = store.lease();
                let path = store
                    .ensure_snapshot(&lease, &chain, None, &chain, |tmp| {
                        fills.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        fs::write(tmp.join("file"), b"content")
                    })
                    .unwrap();
                assert_eq!(fs::read(path.join("file")).unwrap(), b"content");
            });
        }
    });
    assert!(fills.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    let snapshot = stores[0].snapshot(&chain).unwrap().unwrap();
    assert_eq!(snapshot.state, "ready");
    // A failing fill leaves nothing behind.
    let other = Digest::of_bytes(b"other");
    let lease = stores[0].lease();
    let err = stores[0]
        .ensure_snapshot(&lease, &other, Some(&chain), &other, |_| {
            Err(std::io::Error::other("bad layer"))
        })
        .unwrap_err();
    assert!(err.to_string().contains("bad layer"));
    assert!(!stores[0].snapshot_path(&other).exists());
    // Unreferenced snapshots are collected once unleased.
    drop(lease);
    drop(stores);
    let store = Store::open(dir.path()).unwrap();
    let report = store.gc().unwrap();
    assert_eq!(report.removed_snapshots, vec![chain]);
}

#[test]
fn check_verifies_snapshot_chain_ids_and_directories() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let lease = store.lease();
    let diff_id = Digest::of_bytes(b"layer");
    // A snapshot recorded under a chain id that does not follow from its diff id.
    let wrong = Digest::of_bytes(b"not the chain id");
    store
        .ensure_snapshot(&lease, &wrong, None, &diff_id, |tmp| {
            fs::write(tmp.join("f"), b"f")
        })
        .unwrap();
    // And a correct one whose directory then disappears.
    let right = store
        .ensure_snapshot(&lease, &diff_id, None, &diff_id, |tmp| {
            fs::write(tmp.join("f"), b"f")
        })
        .unwrap();
    fs::remove_dir_all(&right).unwrap();

    let report = store.check(false).unwrap();
    assert_eq!(report.problems.len(), 2, "{:?}", report.problems);
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("chain id does not follow"))
    );
    assert!(report.problems.iter().any(|p| p.contains("missing")));
    let report = store.check(true).unwrap();
    assert!(report.is_clean());
    assert!(!store.snapshot_path(&wrong).exists());
    assert!(store.check(false).unwrap().problems.is_empty());
}

#[test]
fn owned_holds_outlive_their_process_until_released() {
    let dir = tempfile::tempdir().unwrap();
    let image = {
        // The store that took the hold is gone (as `kiln run` exits while its
        // stopped container stays).
        let store = Store::open(dir.path()).unwrap();
        let image = put_test_image(&store, b"held by a container", None);
        store.hold_image("container/abc", &image).unwrap();
        store.hold_image("container/abc", &image).unwrap();
        image
    };
    let other = Store::open(dir.path()).unwrap();
    other.reap_dead_holders().unwrap();
    assert!(other.image_in_use(&image).unwrap());
    assert_eq!(other.image_owners(&image).unwrap(), ["container/abc"]);
    assert!(other.prune_images(true).unwrap().is_empty());
    other.gc().unwrap();
    assert!(other.image(&image).unwrap().is_some());

    other.release_holds("container/abc").unwrap();
    assert!(other.image_owners(&image).unwrap().is_empty());
    assert!(!other.image_in_use(&image).unwrap());
    assert_eq!(other.prune_images(true).unwrap().len(), 1);
}

#[test]
fn big_blobs_are_hashed_by_the_writer_thread_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let lease = store.lease();
    // Several chunks, an odd tail, and writes of every size: the thread
    // must see the bytes in order, once each.
    let data: Vec<u8> = (0..(5 << 20) + 12_345u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut writer = store.blob_writer().unwrap();
    let mut rest = data.as_slice();
    let mut step = 1;
    while !rest.is_empty() {
        let n = step.min(rest.len());
        writer.write_all(&rest[..n]).unwrap();
        rest = &rest[n..];
        step = step * 7 % 1_500_001 + 1;
    }
    assert_eq!(writer.size(), data.len() as u64);
    let info = writer
        .commit(&lease, Some(&Digest::of_bytes(&data)))
        .unwrap();
    assert_eq!(info.size, data.len() as u64);
    assert_eq!(fs::read(store.blob_path(&info.digest)).unwrap(), data);

    // A mismatch found after the thread ran: refused, nothing left behind.
    let mut writer = store.blob_writer().unwrap();
    writer.write_all(&data).unwrap();
    let wrong = Digest::of_bytes(b"other");
    assert!(matches!(
        writer.commit(&lease, Some(&wrong)),
        Err(StoreError::DigestMismatch { .. })
    ));
    // Dropped mid-way: the thread stops and the temp file goes.
    let mut writer = store.blob_writer().unwrap();
    writer.write_all(&data).unwrap();
    drop(writer);
    assert_eq!(fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
}

#[test]
fn adopted_snapshots_are_published_once_and_sidecars_follow_their_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let lease = store.lease();
    let layer = store.put_blob(&lease, b"pretend layer").unwrap();
    let chain_id = layer.digest.clone();
    let made = store.tmp_dir().join("made");
    fs::create_dir_all(made.join("etc")).unwrap();
    fs::write(made.join("etc/hostname"), b"kiln\n").unwrap();
    let adopt = kiln_store::SnapshotToAdopt {
        chain_id: chain_id.clone(),
        parent: None,
        diff_id: layer.digest.clone(),
        dir: made.clone(),
    };
    let published = store
        .adopt_snapshots(&lease, std::slice::from_ref(&adopt))
        .unwrap();
    assert_eq!(published, vec![chain_id.clone()]);
    let path = store.snapshot_path(&chain_id);
    assert_eq!(fs::read(path.join("etc/hostname")).unwrap(), b"kiln\n");
    assert!(!made.exists(), "renamed, not copied");
    let record = store.snapshot(&chain_id).unwrap().expect("recorded");
    assert_eq!(record.diff_id, layer.digest);
    // A second tree for the same chain is left to its maker.
    fs::create_dir_all(&made).unwrap();
    assert!(store.adopt_snapshots(&lease, &[adopt]).unwrap().is_empty());
    assert!(made.is_dir());
    assert_eq!(fs::read(path.join("etc/hostname")).unwrap(), b"kiln\n");

    // Sidecars: read back while the blob lives, removed by gc with it.
    store.put_sidecar(&layer.digest, "index", b"side").unwrap();
    assert_eq!(store.read_sidecar(&layer.digest, "index").unwrap(), b"side");
    assert!(store.read_sidecar(&layer.digest, "other").is_none());
    store.gc().unwrap();
    assert!(
        store.read_sidecar(&layer.digest, "index").is_some(),
        "leased"
    );
    drop(lease);
    store.gc().unwrap();
    assert!(!store.has_blob(&layer.digest));
    assert!(store.read_sidecar(&layer.digest, "index").is_none());
    assert!(!path.exists(), "the unleased snapshot went too");
}

#[test]
fn resumable_writers_continue_a_dropped_download_and_drop_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let lease = store.lease();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let digest = Digest::of_bytes(&data);

    // A download that stops part way (dropped: the process gave up or died).
    let mut first = store.resumable_blob_writer(&digest).unwrap();
    first.write_all(&data[..200_000]).unwrap();
    // While it is being written, another writer of the same blob gets a
    // private temp file instead (nothing to continue).
    let other = store.resumable_blob_writer(&digest).unwrap();
    assert_eq!(other.size(), 0);
    drop(other);
    drop(first);

    let mut second = store.resumable_blob_writer(&digest).unwrap();
    assert_eq!(second.size(), 200_000, "what arrived was kept");
    second.write_all(&data[200_000..]).unwrap();
    let info = second.commit(&lease, Some(&digest)).unwrap();
    assert_eq!(info.size, data.len() as u64);
    assert_eq!(fs::read(store.blob_path(&digest)).unwrap(), data);
    assert_eq!(fs::read_dir(dir.path().join("partial")).unwrap().count(), 0);

    // A kept part that is wrong: the whole fails to verify and is deleted,
    // so the next attempt starts from nothing.
    let other_data = b"another blob entirely".repeat(10_000);
    let other_digest = Digest::of_bytes(&other_data);
    let mut bad = store.resumable_blob_writer(&other_digest).unwrap();
    bad.write_all(b"garbage").unwrap();
    drop(bad);
    let mut resumed = store.resumable_blob_writer(&other_digest).unwrap();
    assert_eq!(resumed.size(), 7);
    resumed.write_all(&other_data[7..]).unwrap();
    assert!(matches!(
        resumed.commit(&lease, Some(&other_digest)),
        Err(StoreError::DigestMismatch { .. })
    ));
    assert_eq!(
        store.resumable_blob_writer(&other_digest).unwrap().size(),
        0
    );
}
