//! End-to-end tests of `kiln pull/push/login/logout` against a real registry
//! (Debian's docker-registry on 127.0.0.1), read back by skopeo.
//! Needs: docker-registry, skopeo, busybox-static, openssl, apache2-utils.

mod registry_common;

use std::io::Write;
use std::process::{Command, Stdio};

use registry_common::*;

fn inspect_field(
    env: &Env,
    root: &std::path::Path,
    reference: &str,
    field: &str,
) -> serde_json::Value {
    let text = env.ok_in(root, &["inspect", reference]);
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    value[0][field].clone()
}

/// (a) Plain HTTP, no auth: push read back identical by skopeo (inspect and
/// copy to an OCI dir), mounts between repositories, chunked uploads, and a
/// skopeo-written (gzip, Docker schema2) image pulled by kiln.
#[test]
fn plain_http_push_and_pull_agree_with_skopeo() {
    if !have_registry_tools() {
        return;
    }
    let registry = TestRegistry::start(Auth::None, None);
    let env = Env::new();
    let host = registry.host();
    let name = format!("{host}/test/busybox:1");
    if !env.import_busybox(&name, 0) {
        return;
    }
    let pushed = env.ok(&["push", &name]);
    assert!(pushed.contains("Pushed"), "{pushed}");
    let digest = pushed_digest(&pushed);

    let inspected = run_ok(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        &format!("docker://{name}"),
    ]));
    let inspected: serde_json::Value = serde_json::from_str(&inspected).unwrap();
    assert_eq!(inspected["Digest"], digest.as_str());

    // skopeo copies it to an OCI layout with the same manifest, config and layer.
    let oci = env.dir.path().join("oci");
    run_ok(Command::new("skopeo").args([
        "copy",
        "--src-tls-verify=false",
        "--preserve-digests",
        "--dest-oci-accept-uncompressed-layers",
        &format!("docker://{name}"),
        &format!("oci:{}:copy", oci.display()),
    ]));
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(oci.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], digest.as_str());
    let hex = digest.trim_start_matches("sha256:");
    let copied_manifest = std::fs::read(oci.join("blobs/sha256").join(hex)).unwrap();
    let local_manifest = std::fs::read(env.root.join("blobs/sha256").join(hex)).unwrap();
    assert_eq!(copied_manifest, local_manifest, "manifest bytes differ");

    // Pushing the same image again: every blob already exists.
    let again = env.ok(&["push", &name]);
    assert!(again.contains("Layer already exists"), "{again}");
    // Another repository of the same registry: blobs are mounted, not uploaded.
    let other = format!("{host}/other/busybox:2");
    env.ok(&["tag", &name, &other]);
    let mounted = env.ok(&["push", &other]);
    assert!(mounted.contains("Mounted from test/busybox"), "{mounted}");
    assert_eq!(pushed_digest(&mounted), digest);

    // A new, larger layer uploaded in PATCH chunks.
    let chunked_name = format!("{host}/chunked/busybox:1");
    env.import_busybox(&chunked_name, 700_000);
    let out = env
        .kiln()
        .env("KILN_PUSH_CHUNK_SIZE", "262144")
        .args(["push", &chunked_name])
        .output()
        .unwrap();
    assert_success("chunked push", &out);
    let chunked_digest = pushed_digest(&String::from_utf8_lossy(&out.stdout));
    let inspected = run_ok(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        &format!("docker://{chunked_name}"),
    ]));
    assert!(inspected.contains(&chunked_digest), "{inspected}");

    // skopeo writes a gzip Docker schema2 image; kiln pulls it into a fresh store.
    let copied = format!("{host}/copied/busybox:gz");
    run_ok(Command::new("skopeo").args([
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--format",
        "v2s2",
        "--dest-compress",
        &format!("docker://{name}"),
        &format!("docker://{copied}"),
    ]));
    let fresh = env.fresh_root("fresh");
    let pulled = env.ok_in(&fresh, &["pull", &copied]);
    assert!(pulled.contains("Pull complete"), "{pulled}");
    assert!(
        pulled.contains("Status: Downloaded newer image"),
        "{pulled}"
    );
    // Same config (image id) as the image pushed; the layer was recompressed.
    let pushed_id = inspect_field(&env, &env.root.clone(), &name, "Id");
    assert_eq!(inspect_field(&env, &fresh, &copied, "Id"), pushed_id);
    let saved = env.dir.path().join("saved.tar");
    env.ok_in(&fresh, &["save", &copied, "-o", saved.to_str().unwrap()]);
    assert!(std::fs::metadata(&saved).unwrap().len() > 1_000_000);

    // Pulling again downloads nothing.
    let again = env.ok_in(&fresh, &["pull", &copied]);
    assert!(again.contains("Already exists"), "{again}");
    assert!(again.contains("Status: Image is up to date"), "{again}");
    // -q prints only the name.
    assert_eq!(env.ok_in(&fresh, &["pull", "-q", &copied]).trim(), copied);
    let check = env.ok_in(&fresh, &["system", "check"]);
    assert!(check.contains("store is clean"), "{check}");

    // A missing tag is a clear error.
    let err = env.fails_in(&fresh, &["pull", &format!("{host}/test/busybox:nope")]);
    assert!(err.contains("not found"), "{err}");
}

/// (d) A proxy flips one byte of a layer: the pull fails naming the blob and
/// the store keeps nothing unverified.
#[test]
fn corrupted_layer_is_refused_and_store_stays_clean() {
    if !have_registry_tools() {
        return;
    }
    let registry = TestRegistry::start(Auth::None, None);
    let env = Env::new();
    let name = format!("{}/test/busybox:1", registry.host());
    if !env.import_busybox(&name, 0) {
        return;
    }
    env.ok(&["push", &name]);
    let layer_digest = {
        let text = env.ok(&["inspect", &name]);
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        value[0]["RootFS"]["Layers"][0]
            .as_str()
            .unwrap()
            .to_string()
    };
    // The imported layer is uncompressed: its blob digest is its diff id.
    let proxy_port = start_corrupting_proxy(registry.port, layer_digest.clone());
    let fresh = env.fresh_root("fresh");
    let err = env.fails_in(
        &fresh,
        &["pull", &format!("127.0.0.1:{proxy_port}/test/busybox:1")],
    );
    assert!(
        err.contains(&layer_digest),
        "error should name the blob: {err}"
    );
    assert!(err.contains("digest"), "{err}");
    let check = env.ok_in(&fresh, &["system", "check"]);
    assert!(check.contains("store is clean"), "{check}");
    let images = env.ok_in(&fresh, &["images", "-q"]);
    assert!(
        images.trim().is_empty(),
        "no image may be recorded: {images}"
    );
    let blob_path = fresh
        .join("blobs/sha256")
        .join(layer_digest.trim_start_matches("sha256:"));
    assert!(!blob_path.exists(), "the corrupt layer must not be stored");
    // Straight from the registry the same pull works.
    env.ok_in(&fresh, &["pull", &name]);
}

/// (b) htpasswd basic auth over TLS with a self-signed CA in certs.d:
/// login verifies, push and pull work, logout removes the credentials.
#[test]
fn basic_auth_over_tls_login_push_pull_logout() {
    if !have_registry_tools()
        || !have_tool("openssl", &["version"])
        || !have_tool("htpasswd", &["-nbB", "a", "b"])
    {
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_certificates(certs.path());
    let htpasswd = certs.path().join("htpasswd");
    let line = run_ok(Command::new("htpasswd").args(["-nbB", "kiln", "s3cret"]));
    std::fs::write(&htpasswd, line.trim()).unwrap();
    let registry = TestRegistry::start(Auth::Htpasswd(htpasswd), Some((cert, key)));
    let env = Env::new();
    let host = registry.host();
    let name = format!("{host}/secure/busybox:1");
    if !env.import_busybox(&name, 0) {
        return;
    }

    // Loopback is an insecure registry by default, as in docker: its
    // certificate is not checked even without the CA, and the registry's
    // own answer (log in) is what stops an anonymous push. (An untrusted
    // certificate elsewhere is refused: registry_tls.rs.)
    let err = env.fails_in(&env.root.clone(), &["push", &name]);
    assert!(err.contains("kiln login"), "{err}");
    std::fs::create_dir_all(env.certs_dir.join(&host)).unwrap();
    std::fs::copy(&ca, env.certs_dir.join(&host).join("ca.crt")).unwrap();

    // Anonymous push is refused with a hint to log in.
    let err = env.fails_in(&env.root.clone(), &["push", &name]);
    assert!(err.contains("kiln login"), "{err}");

    let login = |password: &str| {
        let mut child = env
            .kiln()
            .args(["login", "-u", "kiln", "--password-stdin", &host])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{password}\n").as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let bad = login("wrong");
    assert!(
        !bad.status.success(),
        "login with a wrong password must fail"
    );
    assert!(
        !env.docker_config.join("config.json").exists()
            || !std::fs::read_to_string(env.docker_config.join("config.json"))
                .unwrap()
                .contains(&host)
    );
    let good = login("s3cret");
    assert_success("login", &good);
    assert!(String::from_utf8_lossy(&good.stdout).contains("Login Succeeded"));
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.docker_config.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(config["auths"][&host]["auth"], "a2lsbjpzM2NyZXQ=");

    let pushed = env.ok(&["push", &name]);
    let digest = pushed_digest(&pushed);
    let inspected = run_ok(Command::new("skopeo").args([
        "inspect",
        "--cert-dir",
        env.certs_dir.join(&host).to_str().unwrap(),
        "--creds",
        "kiln:s3cret",
        &format!("docker://{name}"),
    ]));
    assert!(inspected.contains(&digest), "{inspected}");
    let fresh = env.fresh_root("fresh");
    env.ok_in(&fresh, &["pull", &name]);
    assert_eq!(
        inspect_field(&env, &fresh, &name, "Id"),
        inspect_field(&env, &env.root.clone(), &name, "Id")
    );

    let out = env.ok(&["logout", &host]);
    assert!(out.contains("Removing login credentials"), "{out}");
    let err = env.fails_in(&env.fresh_root("other"), &["pull", &name]);
    assert!(err.contains("unauthorized") || err.contains("401"), "{err}");
}

/// (e) An index with two platforms: each platform gets its own image.
#[test]
fn index_resolves_to_the_requested_platform() {
    if !have_registry_tools() || !have_tool("sha256sum", &["--version"]) {
        return;
    }
    let registry = TestRegistry::start(Auth::None, None);
    let env = Env::new();
    let name = format!("{}/multi/app:1", registry.host());
    // An OCI layout with an index of two images (amd64 and arm64), each one
    // layer holding a file that says its platform; skopeo pushes it.
    let layout = env.dir.path().join("layout");
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| -> (String, usize) {
        let tmp = layout.join("tmp");
        std::fs::write(&tmp, bytes).unwrap();
        let sum = run_ok(Command::new("sha256sum").arg(&tmp));
        let hex = sum.split_whitespace().next().unwrap().to_string();
        std::fs::rename(&tmp, blobs.join(&hex)).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    };
    let mut entries = Vec::new();
    for arch in ["amd64", "arm64"] {
        let work = env.dir.path().join(format!("rootfs-{arch}"));
        std::fs::create_dir_all(&work).unwrap();
        std::fs::write(work.join("platform"), arch).unwrap();
        let tar = env.dir.path().join(format!("{arch}.tar"));
        run_ok(
            Command::new("tar")
                .arg("-C")
                .arg(&work)
                .arg("-cf")
                .arg(&tar)
                .arg("platform"),
        );
        let (layer, layer_size) = put(&std::fs::read(&tar).unwrap());
        let config = serde_json::json!({
            "architecture": arch, "os": "linux",
            "config": {"Env": [format!("PLATFORM={arch}")]},
            "rootfs": {"type": "layers", "diff_ids": [layer]},
        });
        let (config_digest, config_size) = put(config.to_string().as_bytes());
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": layer_size}],
        });
        let (manifest_digest, manifest_size) = put(manifest.to_string().as_bytes());
        entries.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": manifest_size,
            "platform": {"architecture": arch, "os": "linux"},
        }));
    }
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries});
    let (index_digest, index_size) = put(index.to_string().as_bytes());
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let top = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.index.v1+json", "digest": index_digest, "size": index_size,
        "annotations": {"org.opencontainers.image.ref.name": "multi"}}]});
    std::fs::write(layout.join("index.json"), top.to_string()).unwrap();
    run_ok(Command::new("skopeo").args([
        "copy",
        "--all",
        "--preserve-digests",
        "--dest-tls-verify=false",
        &format!("oci:{}:multi", layout.display()),
        &format!("docker://{name}"),
    ]));

    for arch in ["arm64", "amd64"] {
        let root = env.fresh_root(arch);
        let out = env.ok_in(
            &root,
            &["pull", "--platform", &format!("linux/{arch}"), &name],
        );
        assert!(out.contains(&format!("Digest: {index_digest}")), "{out}");
        assert_eq!(inspect_field(&env, &root, &name, "Architecture"), arch);
        let config = inspect_field(&env, &root, &name, "Config");
        assert_eq!(config["Env"][0], format!("PLATFORM={arch}"));
    }
    let err = env.fails_in(
        &env.fresh_root("s390x"),
        &["pull", "--platform", "linux/s390x", &name],
    );
    assert!(err.contains("linux/s390x"), "{err}");
}

/// (c) Token auth: the registry sends a bearer challenge; kiln fetches a
/// token from the (test) token service with the logged-in credentials for
/// push and anonymously for pull.
#[test]
fn bearer_token_auth_login_push_pull() {
    if !have_registry_tools() || !have_tool("openssl", &["version"]) {
        return;
    }
    let keys = tempfile::tempdir().unwrap();
    let tokens = start_token_server(keys.path(), "kiln", "t0ken");
    let registry = TestRegistry::start(
        Auth::Token {
            realm: format!("http://127.0.0.1:{}/token", tokens.port),
            service: tokens.service.clone(),
            issuer: tokens.issuer.clone(),
            root_cert: tokens.cert.clone(),
        },
        None,
    );
    let env = Env::new();
    let host = registry.host();
    let name = format!("{host}/token/busybox:1");
    if !env.import_busybox(&name, 0) {
        return;
    }
    // Anonymous tokens only grant pull: the push is refused.
    let err = env.fails_in(&env.root.clone(), &["push", &name]);
    assert!(err.contains("unauthorized") || err.contains("401"), "{err}");

    let login = |password: &str| {
        let mut child = env
            .kiln()
            .args(["login", "-u", "kiln", "--password-stdin", &host])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(password.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let bad = login("nope");
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("refused the credentials"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    assert_success("login", &login("t0ken"));

    let pushed = env.ok(&["push", &name]);
    let digest = pushed_digest(&pushed);
    // Anonymous pull (a fresh docker config) works with a pull-only token.
    let fresh = env.fresh_root("fresh");
    let out = env
        .kiln_in(&fresh)
        .env("DOCKER_CONFIG", env.dir.path().join("nobody"))
        .args(["pull", &name])
        .output()
        .unwrap();
    assert_success("anonymous pull", &out);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&digest));
    env.ok(&["logout", &host]);
}

/// An image skopeo put into the registry (gzip, Docker schema2) is pulled by
/// kiln and runs.
#[test]
fn image_copied_in_by_skopeo_is_pulled_and_runs() {
    if !have_registry_tools() {
        return;
    }
    if !image_common::is_root() {
        eprintln!("SKIP: kiln run needs root");
        return;
    }
    let registry = TestRegistry::start(Auth::None, None);
    let env = Env::new();
    let host = registry.host();
    let local = format!("{host}/src/busybox:1");
    if !env.import_busybox(&local, 0) {
        return;
    }
    env.ok(&["push", &local]);
    let copied = format!("{host}/copied/busybox:gz");
    run_ok(Command::new("skopeo").args([
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--format",
        "v2s2",
        "--dest-compress",
        &format!("docker://{local}"),
        &format!("docker://{copied}"),
    ]));
    let fresh = env.fresh_root("fresh");
    env.ok_in(&fresh, &["pull", "-q", &copied]);
    let out = env.ok_in(
        &fresh,
        &[
            "run",
            "--rm",
            &copied,
            "/bin/busybox",
            "echo",
            "hello from the registry",
        ],
    );
    assert_eq!(out.trim(), "hello from the registry");
}

/// Transient registry errors (503 on blob downloads) are retried with backoff.
#[test]
fn transient_blob_errors_are_retried() {
    if !have_registry_tools() {
        return;
    }
    let registry = TestRegistry::start(Auth::None, None);
    let env = Env::new();
    let name = format!("{}/test/busybox:1", registry.host());
    if !env.import_busybox(&name, 0) {
        return;
    }
    env.ok(&["push", &name]);
    // Two blobs (config, layer); the first two blob GETs fail.
    let (proxy_port, seen) = start_flaky_proxy(registry.port, 2);
    let fresh = env.fresh_root("fresh");
    let out = env.ok_in(
        &fresh,
        &["pull", &format!("127.0.0.1:{proxy_port}/test/busybox:1")],
    );
    assert!(out.contains("Pull complete"), "{out}");
    assert!(
        seen.load(std::sync::atomic::Ordering::SeqCst) >= 4,
        "both blobs were asked for again"
    );
    let check = env.ok_in(&fresh, &["system", "check"]);
    assert!(check.contains("store is clean"), "{check}");
}

/// A pull does not decompress layers: their sizes are measured once, when
/// first needed. `kiln images` and `inspect` after a pull show what a load of
/// the same image shows; in a store whose first use of the image is
/// `kiln run`, the sizes counted while unpacking are the ones listed (the
/// layer blobs are deleted before listing, so nothing is measured again).
#[test]
fn pulled_image_sizes_equal_a_loaded_copys() {
    if !have_registry_tools() {
        return;
    }
    let registry = TestRegistry::start(Auth::None, None);
    let env = Env::new();
    let host = registry.host();
    let local = format!("{host}/src/busybox:sizes");
    if !env.import_busybox(&local, 300_000) {
        return;
    }
    env.ok(&["push", &local]);
    let copied = format!("{host}/copied/busybox:sizes");
    run_ok(Command::new("skopeo").args([
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--format",
        "v2s2",
        "--dest-compress",
        &format!("docker://{local}"),
        &format!("docker://{copied}"),
    ]));
    let sizes = |root: &std::path::Path| {
        let listed = env.ok_in(root, &["images", "--format", "{{.Size}}"]);
        (
            listed.trim().to_string(),
            inspect_field(&env, root, &copied, "Size"),
        )
    };

    let pulled = env.fresh_root("pulled");
    env.ok_in(&pulled, &["pull", "-q", &copied]);
    let pulled_sizes = sizes(&pulled);
    let saved = env.dir.path().join("sizes.tar");
    env.ok_in(&pulled, &["save", &copied, "-o", saved.to_str().unwrap()]);
    let loaded = env.fresh_root("loaded");
    env.ok_in(&loaded, &["load", "-i", saved.to_str().unwrap()]);
    let loaded_sizes = sizes(&loaded);
    assert_eq!(pulled_sizes, loaded_sizes, "pulled vs loaded (SIZE, Size)");
    assert!(
        loaded_sizes.1.as_u64().unwrap_or(0) > 300_000,
        "{loaded_sizes:?}"
    );
    let check = env.ok_in(&pulled, &["system", "check"]);
    assert!(check.contains("store is clean"), "{check}");

    if !image_common::is_root() {
        eprintln!("SKIP: the kiln run part needs root");
        return;
    }
    let ran = env.fresh_root("ran");
    env.ok_in(&ran, &["pull", "-q", &copied]);
    env.ok_in(&ran, &["run", "--rm", &copied, "/bin/busybox", "true"]);
    let mut removed = 0;
    for entry in std::fs::read_dir(ran.join("blobs/sha256")).unwrap() {
        let path = entry.unwrap().path();
        let mut head = [0u8; 2];
        let is_gzip = std::fs::File::open(&path)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
            .is_ok()
            && head == [0x1f, 0x8b];
        if is_gzip {
            std::fs::remove_file(&path).unwrap();
            removed += 1;
        }
    }
    assert!(removed > 0, "no gzip layer blob in the store");
    let out = env.kiln_in(&ran).args(["images"]).output().unwrap();
    assert_success("kiln images", &out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("warning"), "{stderr}");
    assert_eq!(
        sizes(&ran),
        loaded_sizes,
        "sizes counted by kiln run's unpack"
    );
}
