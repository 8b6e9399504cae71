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

/// Builds `dockerfile` with BuildKit and returns the bytes of the image's last layer.
fn buildkit_last_layer(dockerfile: &str, work: &Path) -> Vec<u8> {
    let context = work.join("context");
    std::fs::create_dir_all(&context).expect("mkdir");
    std::fs::write(context.join("Dockerfile"), dockerfile).expect("write");
    let stdout = run(Command::new("/usr/bin/docker")
        .env("DOCKER_BUILDKIT", "1")
        .args(["build", "-q"])
        .arg(&context));
    let image = String::from_utf8_lossy(&stdout).trim().to_string();
    let saved = work.join("built.tar");
    run(Command::new("docker")
        .args(["save", "-o"])
        .arg(&saved)
        .arg(&image));
    let saved_dir = work.join("built");
    std::fs::create_dir_all(&saved_dir).expect("mkdir");
    unpack_with_tar(&saved, &saved_dir);
    let _ = Command::new("docker").args(["rmi", &image]).output();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(saved_dir.join("manifest.json")).expect("manifest"))
            .expect("json");
    let layers = manifest[0]["Layers"].as_array().expect("layers");
    let last = layers.last().and_then(|l| l.as_str()).expect("a layer");
    std::fs::read(saved_dir.join(last)).expect("layer")
}

#[test]
fn overlay_diff_is_byte_identical_to_buildkit() {
    if !docker_available() || !common::require_root("overlay_diff_is_byte_identical_to_buildkit") {
        return;
    }
    let long_dir = "d".repeat(120);
    let long_file = "f".repeat(110);
    let cases = [
        format!(
            "FROM {BASE_IMAGE}\nRUN mkdir -p /app/sub && echo hello > /app/sub/f && ln -s f /app/sub/l && ln /app/sub/f /app/sub/hard \
             && chmod 4755 /app/sub/f && mkdir -m 1777 /app/tmp && rm /bin/ls && mkfifo /app/fifo && chown -h 123:456 /app/sub/l \
             && mkdir -p /app/{long_dir}/x && touch /app/{long_dir}/x/{long_file}\n"
        ),
        format!(
            "FROM {BASE_IMAGE}\nRUN rm -rf /tmp && mkdir /tmp && touch /tmp/x && rm /etc/group\n"
        ),
    ];
    for (index, dockerfile) in cases.iter().enumerate() {
        let work = tempfile::tempdir().expect("temp");
        let buildkit_layer = buildkit_last_layer(dockerfile, work.path());
        // Apply BuildKit's layer as an overlay lower dir (whiteouts as 0/0 devices, opaque
        // xattrs), then diff that dir as an upper dir: kiln must write the same bytes.
        let upper = work.path().join("upper");
        std::fs::create_dir(&upper).expect("mkdir");
        let overlay = ApplyOptions {
            mode: kiln_snapshot::ApplyMode::Overlay,
            ..ApplyOptions::default()
        };
        apply_layer(buildkit_layer.as_slice(), &upper, &overlay).expect("apply BuildKit layer");
        let mut kiln_layer = Vec::new();
        kiln_snapshot::create_layer(
            &upper,
            DiffKind::OverlayUpper,
            &mut kiln_layer,
            &CreateOptions::default(),
        )
        .expect("create");
        if kiln_layer != buildkit_layer {
            let names = |layer: &[u8]| -> Vec<String> {
                let mut archive = tar::Archive::new(layer);
                archive
                    .entries()
                    .expect("entries")
                    .map(|e| String::from_utf8_lossy(&e.expect("entry").path_bytes()).into_owned())
                    .collect()
            };
            let first_difference = kiln_layer
                .iter()
                .zip(&buildkit_layer)
                .position(|(a, b)| a != b);
            panic!(
                "case {index}: kiln's layer differs from BuildKit's (first differing byte {first_difference:?}, sizes {} vs {})\nkiln:     {:?}\nbuildkit: {:?}",
                kiln_layer.len(),
                buildkit_layer.len(),
                names(&kiln_layer),
                names(&buildkit_layer)
            );
        }
    }
}
