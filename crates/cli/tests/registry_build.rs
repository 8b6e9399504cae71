//! End-to-end tests of `kiln build` pulling base images the store lacks
//! (FROM, COPY --from=image) and `--pull` re-resolving a tag, against Debian's
//! docker-registry on 127.0.0.1 seeded by `kiln push` from another store.
//! Needs root (RUN and `kiln run`), docker-registry, skopeo, busybox-static.

mod registry_common;

use std::path::{Path, PathBuf};

use registry_common::*;

/// A build context directory holding `Dockerfile` with `text`.
fn context_with(env: &Env, name: &str, text: &str) -> PathBuf {
    let dir = env.dir.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("Dockerfile"), text).unwrap();
    dir
}

/// Runs `kiln build` in `root`; returns (success, stderr).
fn build_in(env: &Env, root: &Path, context: &Path, extra: &[&str]) -> (bool, String) {
    let out = env
        .kiln_in(root)
        .arg("build")
        .args(["--progress", "plain"])
        .args(extra)
        .arg(context)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Skips (or, under CI, fails inside the helpers) when tools or root are missing.
fn prerequisites() -> bool {
    if !have_registry_tools() {
        return false;
    }
    if !image_common::is_root() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "registry_build tests need root (RUN steps and kiln run)"
        );
        eprintln!("SKIP: kiln build RUN steps need root");
        return false;
    }
    true
}

/// FROM, COPY --from and RUN --mount from= name images only the registry
/// has: an empty store pulls them, builds, and the result runs.
#[test]
fn build_pulls_missing_from_and_copy_from_images() {
    if !prerequisites() {
        return;
    }
    let registry = TestRegistry::start(Auth::None, None);
    let env = Env::new();
    let base = format!("{}/base/busybox:1", registry.host());
    if !env.import_busybox(&base, 0) {
        return;
    }
    env.ok(&["push", &base]);
    // Used only by RUN --mount, so that path pulls on its own.
    let mounted = format!("{}/mnt/busybox:1", registry.host());
    env.ok(&["tag", &base, &mounted]);
    env.ok(&["push", &mounted]);

    let empty = env.fresh_root("store-b");
    let context = context_with(
        &env,
        "ctx",
        &format!(
            "FROM {base}\nRUN echo built > /built\nCOPY --from={base} /bin/busybox /bb\n\
             RUN --mount=type=bind,from={mounted},target=/m cat /m/etc/hostname > /hostname\n"
        ),
    );
    let (ok, stderr) = build_in(&env, &empty, &context, &["-t", "built:1"]);
    assert!(ok, "build failed:\n{stderr}");
    assert!(
        stderr.contains(&format!("[internal] pulling {base}")),
        "no pull step shown:\n{stderr}"
    );
    assert!(
        stderr.contains(&format!("[internal] pulling {mounted}")),
        "no pull step for the mount:\n{stderr}"
    );
    // Each image pulled once, though FROM and COPY --from share one.
    assert_eq!(
        stderr.matches("[internal] pulling").count(),
        2,
        "pulled more than once:\n{stderr}"
    );

    let images = env.ok_in(&empty, &["images"]);
    assert!(images.contains("built"), "{images}");
    env.ok_in(&empty, &["inspect", &base]);
    let out = env.ok_in(
        &empty,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "built:1",
            "cat",
            "/built",
        ],
    );
    assert_eq!(out.trim(), "built");
    let size = env.ok_in(
        &empty,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "built:1",
            "ls",
            "-l",
            "/bb",
        ],
    );
    assert!(size.contains("/bb"), "{size}");
    let hostname = env.ok_in(
        &empty,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "built:1",
            "cat",
            "/hostname",
        ],
    );
    assert_eq!(hostname.trim(), "kiln-test");

    // A second build finds the image in the store: no pull.
    let (ok, stderr) = build_in(&env, &empty, &context, &["-t", "built:1"]);
    assert!(ok, "rebuild failed:\n{stderr}");
    assert!(!stderr.contains("[internal] pulling"), "{stderr}");
}

/// FROM a repository the registry does not have: the build fails naming the
/// image, the registry's answer and what to do.
#[test]
fn build_from_missing_repository_fails_naming_the_image() {
    if !prerequisites() {
        return;
    }
    let registry = TestRegistry::start(Auth::None, None);
    let env = Env::new();
    let missing = format!("{}/nothing/here:1", registry.host());
    let context = context_with(&env, "ctx", &format!("FROM {missing}\nRUN true\n"));
    let (ok, stderr) = build_in(&env, &env.root.clone(), &context, &[]);
    assert!(!ok, "build of a missing base should fail:\n{stderr}");
    assert!(stderr.contains(&missing), "image not named:\n{stderr}");
    assert!(stderr.contains("kiln pull"), "no hint:\n{stderr}");
    assert!(stderr.contains("kiln import"), "no hint:\n{stderr}");
    assert!(
        stderr.to_lowercase().contains("not found") || stderr.contains("404"),
        "registry error missing:\n{stderr}"
    );
}

/// A new image pushed under the same tag is used only with `--pull`.
#[test]
fn pull_flag_refreshes_a_stored_base() {
    if !prerequisites() {
        return;
    }
    let registry = TestRegistry::start(Auth::None, None);
    let env = Env::new();
    let base = format!("{}/base/busybox:1", registry.host());
    if !env.import_busybox(&base, 0) {
        return;
    }
    env.ok(&["push", &base]);
    let store_b = env.fresh_root("store-b");
    let context = context_with(
        &env,
        "ctx",
        &format!("FROM {base}\nRUN ls /etc > /listing\n"),
    );
    let (ok, stderr) = build_in(&env, &store_b, &context, &["-t", "listing:1"]);
    assert!(ok, "first build failed:\n{stderr}");
    let listing = env.ok_in(&store_b, &["run", "--rm", "listing:1", "cat", "/listing"]);
    assert!(!listing.contains("payload.bin"), "{listing}");

    // A new image (with /etc/payload.bin) under the same tag.
    if !env.import_busybox(&base, 4096) {
        return;
    }
    env.ok(&["push", &base]);

    // Without --pull the stored base is used.
    let (ok, stderr) = build_in(&env, &store_b, &context, &["-t", "listing:1"]);
    assert!(ok, "second build failed:\n{stderr}");
    assert!(!stderr.contains("[internal] pulling"), "{stderr}");
    let listing = env.ok_in(&store_b, &["run", "--rm", "listing:1", "cat", "/listing"]);
    assert!(!listing.contains("payload.bin"), "{listing}");

    // With --pull the tag is resolved again and the new content is built on.
    let (ok, stderr) = build_in(&env, &store_b, &context, &["--pull", "-t", "listing:1"]);
    assert!(ok, "--pull build failed:\n{stderr}");
    assert!(
        stderr.contains(&format!("[internal] pulling {base}")),
        "{stderr}"
    );
    let listing = env.ok_in(&store_b, &["run", "--rm", "listing:1", "cat", "/listing"]);
    assert!(listing.contains("payload.bin"), "{listing}");
}

/// `kiln build --push -t REF` and `-o type=image,name=REF,push=true`: the
/// built image is in the registry with the same manifest digest and config
/// as in the store (skopeo reads it back), and a fresh store pulls and runs it.
#[test]
fn build_push_sends_the_built_image() {
    if !prerequisites() {
        return;
    }
    let registry = TestRegistry::start(Auth::None, None);
    let env = Env::new();
    let base = format!("{}/base/busybox:1", registry.host());
    if !env.import_busybox(&base, 0) {
        return;
    }
    // The base is in another repository of the registry: its layer is mounted.
    env.ok(&["push", &base]);
    let context = context_with(
        &env,
        "push-ctx",
        &format!("FROM {base}\nRUN echo pushed > /pushed\nENV WHERE=registry\n"),
    );
    // No name: refused before anything is built.
    let (ok, stderr) = build_in(&env, &env.root.clone(), &context, &["--push"]);
    assert!(!ok && stderr.contains("--push needs a name"), "{stderr}");

    let app = format!("{}/app/built:1", registry.host());
    let (ok, stderr) = build_in(&env, &env.root.clone(), &context, &["--push", "-t", &app]);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("Pushed"), "{stderr}");
    assert!(stderr.contains("Mounted from base/busybox"), "{stderr}");
    let digest = stderr
        .lines()
        .find_map(|l| l.strip_prefix("1: digest: "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no pushed digest in:\n{stderr}"))
        .to_string();
    let local = env.ok(&["image", "inspect", &app]);
    let local: serde_json::Value = serde_json::from_str(&local).unwrap();
    let local = &local[0];
    let remote = run_ok(std::process::Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        &format!("docker://{app}"),
    ]));
    let remote: serde_json::Value = serde_json::from_str(&remote).unwrap();
    assert_eq!(remote["Digest"], digest);
    let config = run_ok(std::process::Command::new("skopeo").args([
        "inspect",
        "--config",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{app}"),
    ]));
    let config_id = format!("sha256:{}", sha256_hex(config.as_bytes()));
    assert_eq!(
        local["Id"], config_id,
        "registry config differs from the store's"
    );
    assert!(config.contains("WHERE=registry"), "{config}");

    // BuildKit's output form, with two names.
    let second = format!("{}/app/other:2", registry.host());
    let third = format!("{}/app/third:3", registry.host());
    let (ok, stderr) = build_in(
        &env,
        &env.root.clone(),
        &context,
        &[
            "-o",
            &format!("type=image,name={second},name={third},push=true"),
        ],
    );
    assert!(ok, "{stderr}");
    for name in [&second, &third] {
        let remote = run_ok(std::process::Command::new("skopeo").args([
            "inspect",
            "--tls-verify=false",
            &format!("docker://{name}"),
        ]));
        assert!(remote.contains(&digest), "{name}: {remote}");
    }

    // A fresh store pulls the pushed image and runs it.
    let fresh = env.fresh_root("fresh");
    env.ok_in(&fresh, &["pull", &app]);
    let out = env.ok_in(&fresh, &["run", "--rm", &app, "cat", "/pushed"]);
    assert_eq!(out.trim(), "pushed");
}

fn sha256_hex(data: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    std::fs::write(&path, data).unwrap();
    let out = run_ok(std::process::Command::new("sha256sum").arg(&path));
    out.split_whitespace().next().unwrap().to_string()
}
