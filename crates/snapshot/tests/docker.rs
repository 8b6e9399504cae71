//! Differential test against the real Docker engine: a layer docker saved is applied by
//! kiln (its diff_id must match docker's config), the tree is turned back into a
//! parallel-gzip layer by kiln, `docker load` accepts it and `docker run` works from it.

mod common;

use kiln_snapshot::{
    ApplyOptions, Compression, CreateOptions, DiffKind, apply_layer, create_layer_compressed,
};
use std::path::Path;
use std::process::Command;

const BASE_IMAGE: &str = "busybox:local";

fn docker_available() -> bool {
    let ok = Command::new("docker")
        .args(["image", "inspect", BASE_IMAGE])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!(
                "docker with image {BASE_IMAGE} is required when CI=true (run ../shared/tools/docker-oracle.sh)"
            );
        }
        eprintln!("skipping: docker or {BASE_IMAGE} not available");
    }
    ok
}

fn run(command: &mut Command) -> Vec<u8> {
    let output = command.output().expect("spawn");
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

fn unpack_with_tar(archive: &Path, into: &Path) {
    run(Command::new("tar")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(into));
}

#[test]
fn docker_layers_apply_and_kiln_layers_load_and_run() {
    if !docker_available() {
        return;
    }
    let work = tempfile::tempdir().expect("temp");
    let saved = work.path().join("saved.tar");
    run(Command::new("docker")
        .args(["save", "-o"])
        .arg(&saved)
        .arg(BASE_IMAGE));
    let saved_dir = work.path().join("saved");
    std::fs::create_dir(&saved_dir).expect("mkdir");
    unpack_with_tar(&saved, &saved_dir);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(saved_dir.join("manifest.json")).expect("manifest"))
            .expect("json");
    let config_path = manifest[0]["Config"].as_str().expect("config path");
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(saved_dir.join(config_path)).expect("config"))
            .expect("json");
    let layers = manifest[0]["Layers"].as_array().expect("layers");
    let rootfs = work.path().join("rootfs");
    std::fs::create_dir(&rootfs).expect("mkdir");
    for (index, layer) in layers.iter().enumerate() {
        let file = std::fs::File::open(saved_dir.join(layer.as_str().expect("layer path")))
            .expect("layer");
        let stats =
            apply_layer(file, &rootfs, &ApplyOptions::default()).expect("apply docker's layer");
        assert_eq!(
            stats.diff_id.as_str(),
            config["rootfs"]["diff_ids"][index]
                .as_str()
                .expect("diff_id"),
            "kiln's diff_id differs from docker's for layer {index}"
        );
    }
    assert!(
        rootfs.join("bin/busybox").exists() || rootfs.join("bin/sh").exists(),
        "busybox rootfs applied"
    );
    std::fs::write(rootfs.join("kiln-was-here"), b"made by kiln-snapshot\n").expect("write");

    // Re-layer the tree with kiln's parallel gzip and load it as a new image.
    let archive_dir = work.path().join("archive");
    std::fs::create_dir(&archive_dir).expect("mkdir");
    let layer_file = std::fs::File::create(archive_dir.join("layer.tar.gz")).expect("create");
    let (_, blob) = create_layer_compressed(
        &rootfs,
        DiffKind::Directory,
        Compression::GZIP_DEFAULT,
        layer_file,
        &CreateOptions::default(),
    )
    .expect("create layer");
    assert!(
        Command::new("gzip")
            .arg("-t")
            .arg(archive_dir.join("layer.tar.gz"))
            .status()
            .expect("gzip")
            .success()
    );
    let tag = format!("kiln-snapshot-test:{}", std::process::id());
    let image_config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Cmd": ["/bin/sh", "-c", "cat /kiln-was-here"] },
        "rootfs": { "type": "layers", "diff_ids": [blob.diff_id.as_str()] },
        "history": [{ "created_by": "kiln-snapshot test" }],
    });
    std::fs::write(
        archive_dir.join("config.json"),
        serde_json::to_vec(&image_config).expect("json"),
    )
    .expect("write");
    let manifest = serde_json::json!([{ "Config": "config.json", "RepoTags": [tag], "Layers": ["layer.tar.gz"] }]);
    std::fs::write(
        archive_dir.join("manifest.json"),
        serde_json::to_vec(&manifest).expect("json"),
    )
    .expect("write");
    let archive = work.path().join("kiln-image.tar");
    run(Command::new("tar")
        .arg("-cf")
        .arg(&archive)
        .arg("-C")
        .arg(&archive_dir)
        .args(["manifest.json", "config.json", "layer.tar.gz"]));
    run(Command::new("docker").args(["load", "-i"]).arg(&archive));
    let output = Command::new("docker")
        .args(["run", "--rm", "--network=none", &tag])
        .output()
        .expect("docker run");
    let _ = Command::new("docker").args(["rmi", "-f", &tag]).output();
    assert!(
        output.status.success(),
        "docker run failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.stdout, b"made by kiln-snapshot\n");
}
