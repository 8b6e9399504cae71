//! Real consumers read kiln's archives (docker load + run, skopeo, umoci), and
//! kiln reads theirs (docker save, skopeo copy). Tools missing: skipped locally,
//! a failure in CI (see `common::tool_available`).

mod common;

use std::io::Read;
use std::path::Path;
use std::process::Command;

use common::{make_test_image, member_names, run, tool_available, tree};
use kiln_image::{
    ArchiveFormat, BlobRead, Digest, MemoryBlobs, ReadOptions, WriteOptions, read_archive,
    read_oci_dir, sha256_digest, write_docker_archive, write_oci_archive, write_oci_dir,
};

const DOCKER: &str = "/usr/bin/docker";

fn docker_available() -> bool {
    tool_available(DOCKER, &["version", "--format", "{{.Server.Version}}"])
        && common::busybox_available()
}

fn unique_tag(what: &str) -> String {
    format!("kiln-image-test/{what}:{}", std::process::id())
}

/// Removes a docker image when dropped, so a failing test leaves nothing behind.
struct DockerImageGuard(String);

impl Drop for DockerImageGuard {
    fn drop(&mut self) {
        let _ = Command::new(DOCKER).args(["rmi", "-f", &self.0]).output();
    }
}

#[test]
fn docker_loads_and_runs_kiln_docker_archive() {
    if !docker_available() {
        return;
    }
    let image = make_test_image();
    let tag = unique_tag("docker-load");
    let _guard = DockerImageGuard(tag.clone());
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("image.tar");
    let file = std::fs::File::create(&archive).unwrap();
    write_docker_archive(
        file,
        &image.blobs,
        &[image.export(&[&tag])],
        &WriteOptions::default(),
    )
    .unwrap();

    let loaded = run(Command::new(DOCKER).args(["load", "-i"]).arg(&archive));
    assert!(loaded.contains(&tag), "docker load output: {loaded}");
    let id = run(Command::new(DOCKER).args(["inspect", "--format", "{{.Id}}", &tag]));
    assert_eq!(
        id.trim(),
        image.config_digest.to_string(),
        "docker's image ID is kiln's config digest"
    );
    let output = run(Command::new(DOCKER).args(["run", "--rm", "--network", "none", &tag]));
    assert_eq!(output, format!("{}env=from-config\n", image.greeting));
}

#[test]
fn docker_loads_two_images_sharing_layers_from_one_archive() {
    if !docker_available() {
        return;
    }
    let base = make_test_image();
    let derived = common::make_derived_image(&base);
    let base_tag = unique_tag("shared-base");
    let derived_tag = unique_tag("shared-derived");
    let _guards = (
        DockerImageGuard(base_tag.clone()),
        DockerImageGuard(derived_tag.clone()),
    );
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("two.tar");
    // `derived.blobs` holds both images' blobs.
    let exports = [base.export(&[&base_tag]), derived.export(&[&derived_tag])];
    write_docker_archive(
        std::fs::File::create(&archive).unwrap(),
        &derived.blobs,
        &exports,
        &WriteOptions::default(),
    )
    .unwrap();
    let layer_members = member_names(std::fs::File::open(&archive).unwrap())
        .into_iter()
        .filter(|name| name.starts_with("blobs/sha256/") && name.len() > "blobs/sha256/".len())
        .count();
    assert_eq!(
        layer_members,
        3 + 2 + 2,
        "3 distinct layers, 2 configs, 2 manifests: shared layers written once"
    );
    run(Command::new(DOCKER).args(["load", "-i"]).arg(&archive));
    for (tag, image) in [(&base_tag, &base), (&derived_tag, &derived)] {
        let output = run(Command::new(DOCKER).args(["run", "--rm", "--network", "none", tag]));
        assert_eq!(
            output,
            format!("{}env=from-config\n", image.greeting),
            "{tag}"
        );
    }
    if skopeo_available() {
        let reference = format!("docker-archive:{}:{}", archive.display(), derived_tag);
        let config = skopeo_config(&reference);
        assert_eq!(
            config["rootfs"]["diff_ids"].as_array().map(Vec::len),
            Some(3)
        );
    }
}

fn skopeo_available() -> bool {
    tool_available("skopeo", &["--version"])
}

fn skopeo_config(transport_ref: &str) -> serde_json::Value {
    let text = run(Command::new("skopeo").args(["inspect", "--config", transport_ref]));
    serde_json::from_str(&text)
        .unwrap_or_else(|err| panic!("skopeo output is not JSON ({err}): {text}"))
}

fn assert_test_config(config: &serde_json::Value, source: &str) {
    assert_eq!(
        config["config"]["Env"],
        serde_json::json!(["PATH=/bin", "KILN_ENV=from-config"]),
        "{source}: {config}"
    );
    assert_eq!(config["config"]["Cmd"][0], "/bin/sh", "{source}: {config}");
    assert_eq!(
        config["rootfs"]["diff_ids"].as_array().map(Vec::len),
        Some(2),
        "{source}"
    );
}

#[test]
fn skopeo_inspects_docker_archive_and_oci_outputs() {
    if !skopeo_available() {
        return;
    }
    let image = make_test_image();
    let export = [image.export(&["kiln-test/app:1.0"])];
    let dir = tempfile::tempdir().unwrap();

    let docker_tar = dir.path().join("docker.tar");
    write_docker_archive(
        std::fs::File::create(&docker_tar).unwrap(),
        &image.blobs,
        &export,
        &WriteOptions::default(),
    )
    .unwrap();
    let docker_ref = format!("docker-archive:{}", docker_tar.display());
    assert_test_config(&skopeo_config(&docker_ref), "docker-archive");
    let inspect: serde_json::Value =
        serde_json::from_str(&run(Command::new("skopeo").args(["inspect", &docker_ref]))).unwrap();
    assert_eq!(inspect["Labels"]["org.kiln.test"], "yes");
    // The docker-archive kiln writes is also an OCI layout.
    assert_test_config(
        &skopeo_config(&format!("oci-archive:{}", docker_tar.display())),
        "docker-archive as oci-archive",
    );

    let oci_tar = dir.path().join("oci.tar");
    write_oci_archive(
        std::fs::File::create(&oci_tar).unwrap(),
        &image.blobs,
        &export,
    )
    .unwrap();
    assert_test_config(
        &skopeo_config(&format!("oci-archive:{}:1.0", oci_tar.display())),
        "oci-archive",
    );
    let raw = run(Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci-archive:{}", oci_tar.display())));
    assert_eq!(
        sha256_digest(raw.as_bytes()),
        image.manifest_digest,
        "OCI output keeps the stored manifest bytes"
    );

    let oci_dir = dir.path().join("layout");
    write_oci_dir(&oci_dir, &image.blobs, &export).unwrap();
    assert_test_config(
        &skopeo_config(&format!("oci:{}:1.0", oci_dir.display())),
        "oci dir",
    );
}

#[test]
fn umoci_unpacks_kiln_oci_layout_to_the_expected_rootfs() {
    if !tool_available("umoci", &["--version"]) || !common::busybox_available() {
        return;
    }
    let image = make_test_image();
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    write_oci_dir(
        &layout,
        &image.blobs,
        &[image.export(&["kiln-test/app:1.0"])],
    )
    .unwrap();
    let bundle = dir.path().join("bundle");
    let mut command = Command::new("umoci");
    command
        .args(["unpack", "--image"])
        .arg(format!("{}:1.0", layout.display()))
        .arg(&bundle);
    if !rustix_is_root() {
        command.arg("--rootless");
    }
    run(&mut command);
    let rootfs = bundle.join("rootfs");
    assert_eq!(
        tree(&rootfs),
        ["bin/busybox", "bin/cat", "bin/sh", "etc/greeting"]
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("etc/greeting")).unwrap(),
        image.greeting
    );
    assert_eq!(
        std::fs::read_link(rootfs.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    assert_eq!(
        std::fs::read(rootfs.join("bin/busybox")).unwrap(),
        std::fs::read("/bin/busybox").unwrap()
    );
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join("config.json")).unwrap())
            .unwrap();
    let env = config["process"]["env"].as_array().unwrap();
    assert!(
        env.iter().any(|value| value == "KILN_ENV=from-config"),
        "{env:?}"
    );
}

fn rustix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|status| {
            status
                .lines()
                .any(|line| line.starts_with("Uid:") && line.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

fn docker_inspect(reference: &str) -> (String, Vec<String>) {
    let id = run(Command::new(DOCKER).args(["inspect", "--format", "{{.Id}}", reference]));
    let layers = run(Command::new(DOCKER).args([
        "inspect",
        "--format",
        "{{json .RootFS.Layers}}",
        reference,
    ]));
    (
        id.trim().to_string(),
        serde_json::from_str(&layers).unwrap(),
    )
}

/// Hashes each layer blob after decompressing it: the diff IDs.
fn decompressed_layer_digests(
    blobs: &MemoryBlobs,
    manifest: &kiln_image::ManifestDoc,
) -> Vec<String> {
    manifest
        .layers
        .iter()
        .map(|layer| {
            let reader = blobs.open_blob(layer.descriptor.digest()).unwrap();
            let mut content = Vec::new();
            layer
                .compression
                .decompress(reader)
                .unwrap()
                .read_to_end(&mut content)
                .unwrap();
            sha256_digest(&content).to_string()
        })
        .collect()
}

#[test]
fn kiln_reads_docker_save_from_the_engine() {
    if !docker_available() {
        return;
    }
    let base = "busybox:local";
    let present = Command::new(DOCKER)
        .args(["image", "inspect", base])
        .output()
        .map(|o| o.status.success());
    if !present.unwrap_or(false) {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{base} must be imported in CI (shared/tools/docker-oracle.sh does it)");
        }
        eprintln!("SKIP: {base} is not in the docker engine");
        return;
    }
    let (id, diff_ids) = docker_inspect(base);
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("saved.tar");
    run(Command::new(DOCKER)
        .args(["save", "-o"])
        .arg(&saved)
        .arg(base));
    let mut sink = MemoryBlobs::new();
    let loaded = read_archive(
        std::fs::File::open(&saved).unwrap(),
        &mut sink,
        &ReadOptions::default(),
    )
    .unwrap();
    assert_eq!(loaded.format, ArchiveFormat::DockerArchive);
    let found = &loaded.images[0];
    assert_eq!(
        found.names.iter().map(|n| n.familiar()).collect::<Vec<_>>(),
        [base]
    );
    assert_eq!(
        found.config.digest.to_string(),
        id,
        "config bytes are docker's (its ID is their digest)"
    );
    let config_diff_ids: Vec<String> = found
        .config
        .diff_ids()
        .unwrap()
        .iter()
        .map(Digest::to_string)
        .collect();
    assert_eq!(config_diff_ids, diff_ids);
    assert_eq!(decompressed_layer_digests(&sink, &found.manifest), diff_ids);

    // And the same image through skopeo into an OCI layout (gzip layers, new manifest).
    if !skopeo_available() {
        return;
    }
    let layout = dir.path().join("layout");
    run(Command::new("skopeo")
        .arg("copy")
        .arg(format!("docker-archive:{}", saved.display()))
        .arg(format!("oci:{}:local", layout.display())));
    let mut sink = MemoryBlobs::new();
    let loaded = read_oci_dir(&layout, &mut sink, &ReadOptions::default()).unwrap();
    let found = &loaded.images[0];
    assert_eq!(found.bare_ref_name.as_deref(), Some("local"));
    // skopeo rewrites docker's config as an OCI config, so its digest changes;
    // the layers it describes must not.
    let config_diff_ids: Vec<String> = found
        .config
        .diff_ids()
        .unwrap()
        .iter()
        .map(Digest::to_string)
        .collect();
    assert_eq!(config_diff_ids, diff_ids);
    assert_eq!(decompressed_layer_digests(&sink, &found.manifest), diff_ids);

    // Archives skopeo writes: its docker-archive (<hex>.tar layers) and oci-archive.
    for (transport, format) in [
        ("docker-archive", ArchiveFormat::DockerArchive),
        ("oci-archive", ArchiveFormat::OciLayout),
    ] {
        let written = dir.path().join(format!("skopeo-{transport}.tar"));
        let name = if transport == "docker-archive" {
            "skopeo/written:1"
        } else {
            "1"
        };
        run(Command::new("skopeo")
            .arg("copy")
            .arg(format!("oci:{}:local", layout.display()))
            .arg(format!("{transport}:{}:{name}", written.display())));
        let mut sink = MemoryBlobs::new();
        let loaded = read_archive(
            std::fs::File::open(&written).unwrap(),
            &mut sink,
            &ReadOptions::default(),
        )
        .unwrap_or_else(|err| panic!("reading skopeo's {transport}: {err}"));
        assert_eq!(loaded.format, format, "{transport}");
        let found = &loaded.images[0];
        if transport == "docker-archive" {
            assert_eq!(found.names[0].familiar(), "skopeo/written:1");
        } else {
            assert_eq!(found.bare_ref_name.as_deref(), Some("1"));
        }
        assert_eq!(
            decompressed_layer_digests(&sink, &found.manifest),
            diff_ids,
            "{transport}"
        );
    }
}
