//! End-to-end: docker's TLS and plain-HTTP rules against Debian's
//! docker-registry. A registry that wants client certificates gets the
//! `client.cert`/`client.key` pair from certs.d (`KILN_CERTS_DIR` in tests);
//! a registry on a non-loopback address that speaks plain HTTP is refused
//! until it is listed in `KILN_INSECURE_REGISTRIES` or in a docker
//! `daemon.json`'s `insecure-registries` (`KILN_DOCKER_DAEMON_JSON`).

mod registry_common;

use std::process::Command;

use registry_common::*;

#[test]
fn client_certificate_from_certs_d() {
    if !have_registry_tools() || !have_tool("openssl", &["version"]) {
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_certificates(certs.path());
    let (client_cert, client_key) = make_client_certificate(certs.path());
    let registry =
        TestRegistry::start_with(Auth::None, Some((cert, key)), Some(ca.clone()), "127.0.0.1");
    let env = Env::new();
    let host = registry.host();
    let name = format!("{host}/mtls/busybox:1");
    if !env.import_busybox(&name, 0) {
        return;
    }
    let host_dir = env.certs_dir.join(&host);
    std::fs::create_dir_all(&host_dir).unwrap();
    std::fs::copy(&ca, host_dir.join("ca.crt")).unwrap();

    // The CA alone is not enough: the registry asks for a client certificate.
    let err = env.fails_in(&env.root.clone(), &["push", &name]);
    assert!(
        err.to_lowercase().contains("certificate") || err.to_lowercase().contains("alert"),
        "{err}"
    );

    std::fs::copy(&client_cert, host_dir.join("client.cert")).unwrap();
    std::fs::copy(&client_key, host_dir.join("client.key")).unwrap();
    let pushed = env.ok(&["push", &name]);
    let digest = pushed_digest(&pushed);
    // skopeo reads the same certs.d layout.
    let inspected = run_ok(Command::new("skopeo").args([
        "inspect",
        "--cert-dir",
        host_dir.to_str().unwrap(),
        &format!("docker://{name}"),
    ]));
    assert!(inspected.contains(&digest), "{inspected}");
    let fresh = env.fresh_root("fresh");
    let pulled = env.ok_in(&fresh, &["pull", &name]);
    assert!(pulled.contains(&digest), "{pulled}");
}

/// The host's first non-loopback IPv4 address.
fn outside_address() -> Option<String> {
    let out = Command::new("ip")
        .args(["-4", "-o", "addr"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().nth(3))
        .filter_map(|cidr| cidr.split('/').next())
        .find(|ip| !ip.starts_with("127."))
        .map(str::to_string)
}

#[test]
fn plain_http_only_for_listed_registries() {
    if !have_registry_tools() || !have_tool("ip", &["-V"]) {
        return;
    }
    let Some(ip) = outside_address() else {
        eprintln!("SKIP: no non-loopback IPv4 address to serve a registry on");
        return;
    };
    let registry = TestRegistry::start_with(Auth::None, None, None, &ip);
    let env = Env::new();
    let host = registry.host();
    let name = format!("{host}/plain/busybox:1");
    if !env.import_busybox(&name, 0) {
        return;
    }
    let err = env.fails_in(&env.root.clone(), &["push", &name]);
    assert!(err.contains("KILN_INSECURE_REGISTRIES"), "{err}");

    let out = env
        .kiln()
        .env("KILN_INSECURE_REGISTRIES", &host)
        .args(["push", &name])
        .output()
        .unwrap();
    assert_success("push to a listed insecure registry", &out);

    // docker's daemon.json, with the address as a CIDR range.
    let daemon_json = env.dir.path().join("daemon.json");
    std::fs::write(
        &daemon_json,
        format!(r#"{{"insecure-registries": ["{ip}/32"]}}"#),
    )
    .unwrap();
    let fresh = env.fresh_root("fresh");
    let out = env
        .kiln_in(&fresh)
        .env("KILN_DOCKER_DAEMON_JSON", &daemon_json)
        .args(["pull", &name])
        .output()
        .unwrap();
    assert_success("pull from a registry daemon.json lists", &out);
}

#[test]
fn insecure_registries_accept_an_untrusted_certificate_as_docker_does() {
    if !have_registry_tools() || !have_tool("ip", &["-V"]) || !have_tool("openssl", &["version"]) {
        return;
    }
    let Some(ip) = outside_address() else {
        eprintln!("SKIP: no non-loopback IPv4 address to serve a registry on");
        return;
    };
    // A certificate no CA the client knows signed, for another name (127.0.0.1).
    let certs = tempfile::tempdir().unwrap();
    let (_ca, cert, key) = make_certificates(certs.path());
    let registry = TestRegistry::start_with(Auth::None, Some((cert, key)), None, &ip);
    let env = Env::new();
    let host = registry.host();
    let name = format!("{host}/selfsigned/busybox:1");
    if !env.import_busybox(&name, 0) {
        return;
    }
    // A registry not listed as insecure: the certificate is refused.
    let err = env.fails_in(&env.root.clone(), &["push", &name]);
    assert!(
        err.to_lowercase().contains("certificate") && err.contains("KILN_INSECURE_REGISTRIES"),
        "{err}"
    );
    // Listed: docker's "TLS with a certificate not trusted" is accepted. The
    // port speaks only TLS, so this is not the plain-HTTP fallback.
    let out = env
        .kiln()
        .env("KILN_INSECURE_REGISTRIES", &host)
        .args(["push", &name])
        .output()
        .unwrap();
    assert_success(
        "push to an insecure registry with an untrusted certificate",
        &out,
    );
    let fresh = env.fresh_root("fresh");
    let out = env
        .kiln_in(&fresh)
        .env("KILN_INSECURE_REGISTRIES", &host)
        .args(["pull", &name])
        .output()
        .unwrap();
    assert_success("pull from it", &out);
}
