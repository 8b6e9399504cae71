//! The image verbs end to end on a throwaway store, without docker: import
//! with --change/--message, images (table, -q, json), inspect, history, tag,
//! rmi semantics, load of kiln's own archives (both formats), prune, check.

mod image_common;

use image_common::*;

#[test]
fn image_verbs_behave_like_docker() {
    let Some(busybox) = require_busybox() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let tar = busybox_rootfs_tar(&busybox, dir.path(), 0);
    let tar = tar.to_str().unwrap();

    let id = kiln_ok(
        &root,
        &[
            "import",
            "-c",
            "ENV A=1",
            "-c",
            "CMD [\"sh\"]",
            "-m",
            "first",
            tar,
            "one",
        ],
    );
    let id = id.trim().to_string();
    let short = &id[7..19];

    // images: docker's columns, familiar names, human sizes.
    let images = kiln_ok(&root, &["images"]);
    let mut lines = images.lines();
    assert_eq!(
        lines.next().unwrap(),
        "REPOSITORY   TAG       IMAGE ID       CREATED                  SIZE"
    );
    let row: Vec<&str> = lines
        .next()
        .unwrap()
        .split("   ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        row,
        vec!["one", "latest", short, "Less than a second ago", "1.98MB"]
    );
    assert_eq!(kiln_ok(&root, &["images", "-q"]).trim(), short);
    let json: serde_json::Value =
        serde_json::from_str(kiln_ok(&root, &["images", "--format", "json"]).trim()).unwrap();
    assert_eq!(json["Repository"], "one");
    assert_eq!(json["ID"], short);

    // Go-style templates, with and without a header.
    assert_eq!(
        kiln_ok(
            &root,
            &["images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"]
        ),
        format!("one:latest {short}\n")
    );
    assert_eq!(
        kiln_ok(
            &root,
            &["images", "--format", "table {{.ID}}\\t{{.Repository}}"]
        ),
        format!("IMAGE ID       REPOSITORY\n{short}   one\n")
    );

    // inspect: docker's shape, the --change and --message applied.
    let inspect: serde_json::Value =
        serde_json::from_str(&kiln_ok(&root, &["inspect", "one"])).unwrap();
    let image = &inspect[0];
    assert_eq!(image["Id"], id.as_str());
    assert_eq!(image["RepoTags"], serde_json::json!(["one:latest"]));
    assert_eq!(image["Comment"], "first");
    assert_eq!(image["Config"]["Env"], serde_json::json!(["A=1"]));
    assert_eq!(image["Config"]["Cmd"], serde_json::json!(["sh"]));
    assert_eq!(image["Os"], "linux");
    // Like docker: file sizes plus symlink target lengths (5 applets -> "busybox").
    assert_eq!(
        image["Size"],
        std::fs::metadata(&busybox).unwrap().len() + b"kiln-test\n".len() as u64 + 5 * 7
    );
    assert_eq!(image["RootFS"]["Layers"].as_array().unwrap().len(), 1);
    // Short ID and sha256: forms resolve too.
    let by_id: serde_json::Value =
        serde_json::from_str(&kiln_ok(&root, &["inspect", short])).unwrap();
    assert_eq!(by_id[0]["Id"], id.as_str());

    let history = kiln_ok(&root, &["history", "one"]);
    assert!(
        history.starts_with(
            "IMAGE          CREATED                  CREATED BY   SIZE      COMMENT\n"
        ),
        "{history}"
    );
    assert!(
        history.lines().nth(1).unwrap().contains("first"),
        "{history}"
    );

    // tag, then rmi by name only untags while another name remains.
    kiln_ok(&root, &["tag", "one", "registry.local:5000/team/two:v2"]);
    let images = kiln_ok(&root, &["images"]);
    assert!(
        images.contains("registry.local:5000/team/two   v2"),
        "{images}"
    );
    let out = kiln(&root).args(["rmi", short]).output().unwrap();
    assert!(
        !out.status.success(),
        "rmi of an ID with two names must need -f"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be forced"));
    assert_eq!(kiln_ok(&root, &["rmi", "one"]), "Untagged: one:latest\n");

    // save both formats, rmi -f, load them back: same image ID.
    let docker_tar = dir.path().join("d.tar");
    let oci_tar = dir.path().join("o.tar");
    kiln_ok(
        &root,
        &[
            "save",
            "registry.local:5000/team/two:v2",
            "-o",
            docker_tar.to_str().unwrap(),
        ],
    );
    kiln_ok(
        &root,
        &[
            "save",
            "--format",
            "oci",
            "registry.local:5000/team/two:v2",
            "-o",
            oci_tar.to_str().unwrap(),
        ],
    );
    let removed = kiln_ok(&root, &["rmi", "-f", short]);
    assert!(
        removed.starts_with("Untagged: registry.local:5000/team/two:v2\nDeleted: "),
        "{removed}"
    );
    assert_eq!(kiln_ok(&root, &["images", "-q"]), "");
    assert_eq!(
        kiln_ok(&root, &["load", "-i", docker_tar.to_str().unwrap()]),
        "Loaded image: registry.local:5000/team/two:v2\n"
    );
    assert_eq!(kiln_ok(&root, &["images", "-q"]).trim(), short);
    kiln_ok(&root, &["rmi", "registry.local:5000/team/two:v2"]);
    let loaded = kiln_ok(&root, &["load", "-i", oci_tar.to_str().unwrap()]);
    assert!(loaded.starts_with("Loaded image"), "{loaded}");
    let inspect: serde_json::Value =
        serde_json::from_str(&kiln_ok(&root, &["inspect", short])).unwrap();
    assert_eq!(inspect[0]["Id"], id.as_str());

    // A second untagged import is dangling: image prune removes it, not tagged ones.
    kiln_ok(&root, &["tag", short, "keep"]);
    let dangling = kiln_ok(&root, &["import", tar]);
    assert_eq!(dangling.trim().len(), 71);
    assert_eq!(
        kiln_ok(&root, &["images", "-q", "-f", "dangling=true"]).trim(),
        &dangling.trim()[7..19]
    );
    assert_eq!(
        kiln_ok(&root, &["images", "-q", "-f", "reference=k*"]).trim(),
        short
    );
    assert_eq!(kiln_ok(&root, &["images", "-q", "-f", "label=none"]), "");
    let pruned = kiln_ok(&root, &["image", "prune", "-f"]);
    assert!(
        pruned.contains("Deleted Images:") && pruned.contains("Total reclaimed space:"),
        "{pruned}"
    );
    assert!(kiln_ok(&root, &["images"]).contains("keep"));
    let pruned = kiln_ok(&root, &["system", "prune", "-a", "-f"]);
    assert!(pruned.contains("untagged: keep:latest"), "{pruned}");
    assert_eq!(kiln_ok(&root, &["images", "-q"]), "");
    let df = kiln_ok(&root, &["system", "df"]);
    assert!(df.starts_with("TYPE"), "{df}");
    assert!(df.contains("Images        0         0         0B"), "{df}");
    assert!(kiln_ok(&root, &["system", "check"]).contains("store is clean"));
}

#[test]
fn errors_say_what_and_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let out = kiln(&root)
        .args(["inspect", "nothing-here"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
    assert!(String::from_utf8_lossy(&out.stderr).contains("No such object: nothing-here"));

    let out = kiln(&root)
        .args(["tag", "nothing-here", "x"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("No such image: nothing-here"));

    let not_tar = dir.path().join("not.tar");
    std::fs::write(&not_tar, vec![b'x'; 4096]).unwrap();
    let out = kiln(&root)
        .args(["import", not_tar.to_str().unwrap(), "Bad:Name"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("invalid reference format"),
        "{out:?}"
    );
    let out = kiln(&root)
        .args(["import", not_tar.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not a tar archive"), "{stderr}");
    assert!(kiln_ok(&root, &["system", "check"]).contains("store is clean"));

    // Corruption is found and repaired.
    let Some(busybox) = busybox() else { return };
    let tar = busybox_rootfs_tar(&busybox, dir.path(), 0);
    kiln_ok(&root, &["import", tar.to_str().unwrap(), "victim"]);
    let inspect: serde_json::Value =
        serde_json::from_str(&kiln_ok(&root, &["inspect", "victim"])).unwrap();
    let layer = inspect[0]["RootFS"]["Layers"][0].as_str().unwrap();
    let blob = root.join("blobs/sha256").join(&layer["sha256:".len()..]);
    std::fs::write(&blob, b"bit rot").unwrap();
    let out = kiln(&root).args(["system", "check"]).output().unwrap();
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("problem: blob {layer}")),
        "{stdout}"
    );
    let repaired = kiln_ok(&root, &["system", "check", "--repair"]);
    assert!(repaired.contains("removed image"), "{repaired}");
    assert!(kiln_ok(&root, &["system", "check"]).contains("store is clean"));
    assert_eq!(kiln_ok(&root, &["images", "-q"]), "");
}

#[test]
fn save_to_stdout_and_load_from_stdin_pipe() {
    use std::io::Write;
    use std::process::Stdio;
    let Some(busybox) = require_busybox() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    let target = dir.path().join("target");
    let tar = busybox_rootfs_tar(&busybox, dir.path(), 0);
    // import from stdin too
    let mut import = kiln(&source)
        .args(["import", "-", "piped:1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    import
        .stdin
        .take()
        .unwrap()
        .write_all(&std::fs::read(&tar).unwrap())
        .unwrap();
    let imported = import.wait_with_output().unwrap();
    assert_success("kiln import -", &imported);
    let id = String::from_utf8_lossy(&imported.stdout).trim().to_string();

    let saved = kiln(&source)
        .args(["save", "piped:1"])
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert_success("kiln save to stdout", &saved);
    let mut load = kiln(&target)
        .args(["load"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    load.stdin.take().unwrap().write_all(&saved.stdout).unwrap();
    let loaded = load.wait_with_output().unwrap();
    assert_success("kiln load from stdin", &loaded);
    assert_eq!(
        String::from_utf8_lossy(&loaded.stdout),
        "Loaded image: piped:1\n"
    );
    let inspect: serde_json::Value =
        serde_json::from_str(&kiln_ok(&target, &["inspect", "piped:1"])).unwrap();
    assert_eq!(inspect[0]["Id"], id.as_str());
}
