//! Real consumers accept kiln's images and kiln accepts theirs:
//! kiln import -> kiln save -> docker load -> docker run; skopeo inspect of the
//! docker-archive and the OCI tar; umoci unpack of the OCI layout; and
//! docker save -> kiln load gives the same config and files.

mod image_common;

use std::path::Path;
use std::process::Command;

use image_common::*;

fn docker_ready() -> bool {
    have_tool("/usr/bin/docker", &["info"])
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("/usr/bin/docker")
        .args(args)
        .output()
        .expect("running docker");
    assert_success(&format!("docker {}", args.join(" ")), &out);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn kiln_save_is_loaded_and_run_by_docker() {
    let Some(busybox) = require_busybox() else {
        return;
    };
    if !docker_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let tar = busybox_rootfs_tar(&busybox, dir.path(), 0);
    let tag = format!("kiln-e2e/busybox:{}", std::process::id());
    let id = kiln_ok(
        &root,
        &[
            "import",
            "--change",
            "CMD [\"sh\"]",
            tar.to_str().unwrap(),
            &tag,
        ],
    );
    assert!(id.trim().starts_with("sha256:"), "{id}");
    let archive = dir.path().join("image.tar");
    kiln_ok(&root, &["save", &tag, "-o", archive.to_str().unwrap()]);

    let loaded = docker(&["load", "-i", archive.to_str().unwrap()]);
    assert!(loaded.contains(&format!("Loaded image: {tag}")), "{loaded}");
    let hi = docker(&["run", "--rm", &tag, "echo", "hi"]);
    assert_eq!(hi, "hi\n");
    // Same image ID (config digest) in docker as in kiln, same Cmd.
    let docker_id = docker(&["inspect", "--format", "{{.Id}} {{json .Config.Cmd}}", &tag]);
    assert_eq!(docker_id.trim(), format!("{} [\"sh\"]", id.trim()));
    docker(&["rmi", &tag]);
}

#[test]
fn skopeo_and_umoci_accept_kiln_archives() {
    let Some(busybox) = require_busybox() else {
        return;
    };
    if !have_tool("skopeo", &["--version"]) || !have_tool("umoci", &["--version"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let tar = busybox_rootfs_tar(&busybox, dir.path(), 0);
    let id = kiln_ok(
        &root,
        &["import", tar.to_str().unwrap(), "kiln-e2e/skopeo:1"],
    );
    let docker_archive = dir.path().join("docker.tar");
    let oci_archive = dir.path().join("oci.tar");
    kiln_ok(
        &root,
        &[
            "save",
            "kiln-e2e/skopeo:1",
            "-o",
            docker_archive.to_str().unwrap(),
        ],
    );
    kiln_ok(
        &root,
        &[
            "save",
            "--format",
            "oci",
            "kiln-e2e/skopeo:1",
            "-o",
            oci_archive.to_str().unwrap(),
        ],
    );

    let inspect = kiln_ok(&root, &["inspect", "kiln-e2e/skopeo:1"]);
    let inspect: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    let diff_id = inspect[0]["RootFS"]["Layers"][0]
        .as_str()
        .unwrap()
        .to_string();

    for transport in [
        format!("docker-archive:{}", docker_archive.display()),
        format!("oci-archive:{}", oci_archive.display()),
    ] {
        let out = Command::new("skopeo")
            .args(["inspect", &transport])
            .output()
            .unwrap();
        assert_success(&format!("skopeo inspect {transport}"), &out);
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(json["Os"], "linux", "{transport}");
        assert_eq!(json["Layers"][0].as_str().unwrap(), diff_id, "{transport}");
        let raw = Command::new("skopeo")
            .args(["inspect", "--raw", &transport])
            .output()
            .unwrap();
        assert_success("skopeo inspect --raw", &raw);
        let manifest: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
        assert_eq!(
            manifest["config"]["digest"].as_str().unwrap(),
            id.trim(),
            "{transport}"
        );
    }

    // umoci unpacks the OCI layout into exactly the rootfs we imported.
    let layout = dir.path().join("layout");
    std::fs::create_dir_all(&layout).unwrap();
    let status = Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-xf")
        .arg(&oci_archive)
        .status()
        .unwrap();
    assert!(status.success());
    let bundle = dir.path().join("bundle");
    let out = Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:1", layout.display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert_success("umoci unpack", &out);
    let unpacked = bundle.join("rootfs");
    assert_eq!(
        std::fs::read(unpacked.join("bin/busybox")).unwrap(),
        std::fs::read(&busybox).unwrap()
    );
    assert_eq!(
        std::fs::read_link(unpacked.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    assert_eq!(
        std::fs::read(unpacked.join("etc/hostname")).unwrap(),
        b"kiln-test\n"
    );
    assert!(unpacked.join("tmp").is_dir());
}

#[test]
fn docker_save_is_loaded_by_kiln_with_same_config_and_files() {
    if !docker_ready() {
        return;
    }
    let images = docker(&["images", "-q", "busybox:local"]);
    if images.trim().is_empty() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("busybox:local missing from docker (run ../shared/tools/docker-oracle.sh)");
        }
        eprintln!("SKIP: docker has no busybox:local");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let archive = dir.path().join("busybox.tar");
    docker(&["save", "busybox:local", "-o", archive.to_str().unwrap()]);
    let loaded = kiln_ok(&root, &["load", "-i", archive.to_str().unwrap()]);
    assert_eq!(loaded, "Loaded image: busybox:local\n");

    let docker_view = docker(&[
        "inspect",
        "--format",
        "{{.Id}} {{json .RootFS.Layers}} {{json .Config}} {{.Size}}",
        "busybox:local",
    ]);
    let kiln_json: serde_json::Value =
        serde_json::from_str(&kiln_ok(&root, &["inspect", "busybox:local"])).unwrap();
    let kiln_view = format!(
        "{} {} {} {}",
        kiln_json[0]["Id"].as_str().unwrap(),
        serde_json::to_string(&kiln_json[0]["RootFS"]["Layers"]).unwrap(),
        serde_json::to_string(&kiln_json[0]["Config"]).unwrap(),
        kiln_json[0]["Size"]
    );
    assert_eq!(kiln_view, docker_view.trim());

    // Files: the layer kiln re-exports is byte-for-byte the layer docker exported.
    let resaved = dir.path().join("resaved.tar");
    kiln_ok(
        &root,
        &["save", "busybox:local", "-o", resaved.to_str().unwrap()],
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&tar_member(&archive, "manifest.json")).unwrap();
    let kiln_manifest: serde_json::Value =
        serde_json::from_slice(&tar_member(&resaved, "manifest.json")).unwrap();
    let docker_layers = manifest[0]["Layers"].as_array().unwrap();
    let kiln_layers = kiln_manifest[0]["Layers"].as_array().unwrap();
    assert_eq!(docker_layers.len(), kiln_layers.len());
    for (docker_layer, kiln_layer) in docker_layers.iter().zip(kiln_layers) {
        let docker_bytes = tar_member(&archive, docker_layer.as_str().unwrap());
        let kiln_bytes = tar_member(&resaved, kiln_layer.as_str().unwrap());
        assert!(docker_bytes.len() > 1_000_000);
        assert!(
            docker_bytes == kiln_bytes,
            "layer {docker_layer} differs from kiln's {kiln_layer}"
        );
    }
    let check = kiln_ok(&root, &["system", "check"]);
    assert!(check.contains("store is clean"), "{check}");
}

/// One member of a tar archive, following docker-archive's symlinked layers.
fn tar_member(archive: &Path, name: &str) -> Vec<u8> {
    let out = Command::new("tar")
        .arg("-xOf")
        .arg(archive)
        .arg(name)
        .output()
        .unwrap();
    assert_success(&format!("tar -xOf {} {name}", archive.display()), &out);
    out.stdout
}

/// A multi-step BuildKit image: kiln's `history` and `inspect` of it (after
/// `docker save | kiln load`) print what docker's do.
#[test]
fn history_and_inspect_match_docker_for_a_buildkit_image() {
    if !docker_ready() {
        return;
    }
    if docker(&["images", "-q", "busybox:local"]).trim().is_empty() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("busybox:local missing from docker (run ../shared/tools/docker-oracle.sh)");
        }
        eprintln!("SKIP: docker has no busybox:local");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let context = dir.path().join("context");
    std::fs::create_dir_all(&context).unwrap();
    // A per-run ENV keeps the image unique, so RepoTags holds only our tag.
    std::fs::write(
        context.join("Dockerfile"),
        format!(
            "FROM busybox:local\n\
         RUN echo hello > /hello && mkdir -p /data\n\
         ENV FOO=bar RUN_ID={}\n\
         COPY Dockerfile /df\n\
         RUN rm /hello\n\
         CMD [\"sh\", \"-c\", \"echo a command line long enough to be truncated by docker history\"]\n",
            std::process::id()
        ),
    )
    .unwrap();
    let tag = format!("kiln-e2e/history:{}", std::process::id());
    let out = Command::new("/usr/bin/docker")
        .env("DOCKER_BUILDKIT", "1")
        .args(["build", "-q", "-t", &tag])
        .arg(&context)
        .output()
        .unwrap();
    assert_success("docker build", &out);
    let archive = dir.path().join("built.tar");
    docker(&["save", &tag, "-o", archive.to_str().unwrap()]);
    let root = dir.path().join("store");
    kiln_ok(&root, &["load", "-i", archive.to_str().unwrap()]);

    for flags in [&["-H=false"][..], &["--no-trunc", "-H=false"][..]] {
        let mut args = vec!["history"];
        args.extend_from_slice(flags);
        args.push(&tag);
        assert_eq!(
            kiln_ok(&root, &args),
            docker(&args),
            "kiln {}",
            args.join(" ")
        );
    }
    let kiln_inspect: serde_json::Value =
        serde_json::from_str(&kiln_ok(&root, &["inspect", &tag])).unwrap();
    let docker_inspect: serde_json::Value =
        serde_json::from_str(&docker(&["inspect", &tag])).unwrap();
    for key in [
        "Id",
        "RepoTags",
        "Comment",
        "Created",
        "Author",
        "Config",
        "Architecture",
        "Os",
        "Size",
        "RootFS",
    ] {
        assert_eq!(
            kiln_inspect[0][key], docker_inspect[0][key],
            "inspect field {key}"
        );
    }
    let format = "{{.ID}} {{.Repository}} {{.Tag}} {{.Size}}";
    assert_eq!(
        kiln_ok(&root, &["images", "--format", format, &tag]),
        docker(&["images", "--format", format, &tag])
    );
    docker(&["rmi", &tag]);
}
