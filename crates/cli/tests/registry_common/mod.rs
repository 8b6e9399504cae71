//! Helpers for the `registry_*` end-to-end tests: start Debian's
//! `docker-registry` on 127.0.0.1 with a random port and a temporary config
//! (filesystem storage in a tempdir), optionally with TLS and htpasswd or
//! token auth; make a CA and certificates with openssl; a TCP proxy that
//! corrupts blob downloads.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../image_common/mod.rs"]
pub mod image_common;

pub use image_common::{assert_success, busybox_rootfs_tar, have_tool, kiln_bin, require_busybox};

/// A free TCP port on 127.0.0.1 (bound and released: racy but fine in tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding a free port")
}

/// Whether every tool the registry tests need is present (skip / CI rule).
pub fn have_registry_tools() -> bool {
    have_tool("docker-registry", &["--version"]) && have_tool("skopeo", &["--version"])
}

/// How the test registry authenticates.
pub enum Auth {
    None,
    /// htpasswd file path.
    Htpasswd(PathBuf),
    /// Token auth: realm URL, service, issuer, root cert bundle.
    Token {
        realm: String,
        service: String,
        issuer: String,
        root_cert: PathBuf,
    },
}

/// A running docker-registry, killed on drop.
pub struct TestRegistry {
    child: Child,
    pub ip: String,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl TestRegistry {
    /// Starts a registry; `tls` is (certificate, key).
    pub fn start(auth: Auth, tls: Option<(PathBuf, PathBuf)>) -> TestRegistry {
        Self::start_with(auth, tls, None, "127.0.0.1")
    }

    /// Starts a registry listening on `ip`; with `client_ca`, TLS clients
    /// must present a certificate signed by it.
    pub fn start_with(
        auth: Auth,
        tls: Option<(PathBuf, PathBuf)>,
        client_ca: Option<PathBuf>,
        ip: &str,
    ) -> TestRegistry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {ip}:{port}\n",
            dir.path().join("data").display()
        );
        if let Some((cert, key)) = &tls {
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            ));
            if let Some(ca) = &client_ca {
                config.push_str(&format!("    clientcas:\n      - {}\n", ca.display()));
            }
        }
        match &auth {
            Auth::None => {}
            Auth::Htpasswd(path) => config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: kiln-test\n    path: {}\n",
                path.display()
            )),
            Auth::Token {
                realm,
                service,
                issuer,
                root_cert,
            } => config.push_str(&format!(
                "auth:\n  token:\n    realm: {realm}\n    service: {service}\n    issuer: {issuer}\n    rootcertbundle: {}\n",
                root_cert.display()
            )),
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting docker-registry");
        let registry = TestRegistry {
            child,
            ip: ip.to_string(),
            port,
            dir,
        };
        wait_for_port(ip, port, &registry.dir.path().join("registry.log"));
        registry
    }

    pub fn host(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for_port(ip: &str, port: u16, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect((ip, port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "docker-registry did not listen on {port}; its log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// A kiln command with its own store, docker config dir and certs dir.
pub struct Env {
    pub root: PathBuf,
    pub docker_config: PathBuf,
    pub certs_dir: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let env = Env {
            root: dir.path().join("root"),
            docker_config: dir.path().join("docker"),
            certs_dir: dir.path().join("certs.d"),
            dir,
        };
        std::fs::create_dir_all(&env.docker_config).unwrap();
        std::fs::create_dir_all(&env.certs_dir).unwrap();
        env
    }

    /// Another store sharing this one's credentials and certificates.
    pub fn fresh_root(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn kiln_in(&self, root: &Path) -> Command {
        let mut cmd = Command::new(kiln_bin());
        cmd.arg("--root")
            .arg(root)
            .env_remove("KILN_ROOT")
            .env_remove("KILN_INSECURE_REGISTRIES")
            .env("KILN_DOCKER_DAEMON_JSON", "")
            .env("DOCKER_CONFIG", &self.docker_config)
            .env("KILN_CERTS_DIR", &self.certs_dir)
            .stdin(Stdio::null());
        cmd
    }

    pub fn kiln(&self) -> Command {
        self.kiln_in(&self.root)
    }

    /// Runs kiln with `args` in `root`, asserts success, returns stdout.
    pub fn ok_in(&self, root: &Path, args: &[&str]) -> String {
        let out = self.kiln_in(root).args(args).output().unwrap();
        assert_success(&format!("kiln {}", args.join(" ")), &out);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        self.ok_in(&self.root.clone(), args)
    }

    /// Runs kiln expecting failure; returns stderr.
    pub fn fails_in(&self, root: &Path, args: &[&str]) -> String {
        let out = self.kiln_in(root).args(args).output().unwrap();
        assert!(
            !out.status.success(),
            "kiln {} should have failed:\nstdout:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Imports a busybox rootfs as `reference` (with `extra` random bytes to make it unique).
    pub fn import_busybox(&self, reference: &str, extra: usize) -> bool {
        let Some(busybox) = require_busybox() else {
            return false;
        };
        let work = tempfile::tempdir_in(self.dir.path()).unwrap();
        let tar = busybox_rootfs_tar(&busybox, work.path(), extra);
        self.ok(&["import", tar.to_str().unwrap(), reference]);
        true
    }
}

/// The digest `kiln push` printed (`TAG: digest: sha256:... size: N`).
pub fn pushed_digest(output: &str) -> String {
    output
        .lines()
        .find_map(|l| l.split("digest: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no digest in push output:\n{output}"))
        .to_string()
}

/// Runs a command, asserting success; returns stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert_success(&format!("{cmd:?}"), &out);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A CA and a server certificate for 127.0.0.1 signed by it, made with openssl.
/// Returns (ca.crt, server.crt, server.key).
pub fn make_certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = dir.join("ca.key");
    let ca_crt = dir.join("ca.crt");
    let key = dir.join("server.key");
    let csr = dir.join("server.csr");
    let crt = dir.join("server.crt");
    let ext = dir.join("ext.cnf");
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let openssl = |args: &[&str]| {
        run_ok(
            Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .stderr(Stdio::piped()),
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=kiln test CA",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    let _ = (ca_key, csr);
    (ca_crt, crt, key)
}

/// A client certificate `client.cert` / `client.key` signed by the CA that
/// [`make_certificates`] made in `dir`.
pub fn make_client_certificate(dir: &Path) -> (PathBuf, PathBuf) {
    std::fs::write(
        dir.join("client-ext.cnf"),
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    let openssl = |args: &[&str]| {
        run_ok(
            Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .stderr(Stdio::piped()),
        );
    };
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "client.key",
        "-out",
        "client.csr",
        "-subj",
        "/CN=kiln test client",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        "client.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "client.cert",
        "-days",
        "2",
        "-extfile",
        "client-ext.cnf",
    ]);
    (dir.join("client.cert"), dir.join("client.key"))
}

/// A proxy on 127.0.0.1 that forwards each HTTP request to `target_port`
/// (one request per connection) and flips one byte in the body of every
/// `GET .../blobs/<corrupt_digest>` response. Runs until the process ends.
pub fn start_corrupting_proxy(target_port: u16, corrupt_digest: String) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let digest = corrupt_digest.clone();
            std::thread::spawn(move || {
                let _ = proxy_one(client, target_port, &digest);
            });
        }
    });
    port
}

/// A proxy like [`start_corrupting_proxy`] that corrupts nothing but answers
/// the first `failures` blob GETs with `503 Service Unavailable` (a
/// transient error a client should retry). Returns (port, blob GETs seen).
pub fn start_flaky_proxy(
    target_port: u16,
    failures: usize,
) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    std::thread::spawn(move || {
        for mut client in listener.incoming().flatten() {
            let mut peek = [0u8; 512];
            let n = client.peek(&mut peek).unwrap_or(0);
            let start = String::from_utf8_lossy(&peek[..n]).into_owned();
            if start.starts_with("GET ") && start.contains("/blobs/sha256:") {
                let index = counter.fetch_add(1, Ordering::SeqCst);
                if index < failures {
                    let mut sink = [0u8; 4096];
                    let _ = client.read(&mut sink);
                    let _ = client.write_all(
                        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                    continue;
                }
            }
            std::thread::spawn(move || {
                let _ = proxy_one(client, target_port, "none");
            });
        }
    });
    (port, seen)
}

/// Reads one HTTP request head (up to the blank line) from a test proxy's
/// client. None: the client hung up, or did not speak HTTP (a TLS
/// ClientHello starts with 0x16), and the proxy hangs up at once as a plain
/// HTTP server would.
fn read_request_head(client: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte)? == 0 {
            return Ok(None);
        }
        if head.is_empty() && !byte[0].is_ascii_uppercase() {
            return Ok(None);
        }
        head.push(byte[0]);
    }
    Ok(Some(String::from_utf8_lossy(&head).into_owned()))
}

fn proxy_one(mut client: TcpStream, target_port: u16, corrupt_digest: &str) -> std::io::Result<()> {
    let Some(text) = read_request_head(&mut client)? else {
        return Ok(());
    };
    let request_line = text.lines().next().unwrap_or_default().to_string();
    let mut upstream = TcpStream::connect(("127.0.0.1", target_port))?;
    upstream.write_all(with_connection_close(&text).as_bytes())?;
    let mut response = Vec::new();
    upstream.read_to_end(&mut response)?;
    let head_end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
        .unwrap_or(response.len());
    let corrupt = request_line.starts_with("GET ")
        && request_line.contains(&format!("/blobs/{corrupt_digest}"));
    if corrupt && head_end < response.len() {
        let last = response.len() - 1;
        response[last] ^= 0x01;
    }
    // One request per connection: the registry closed its side, so do we.
    let head_text = String::from_utf8_lossy(&response[..head_end]).into_owned();
    client.write_all(with_connection_close(&head_text).as_bytes())?;
    client.write_all(&response[head_end..])?;
    client.flush()
}

/// An HTTP head with its `Connection` header replaced by `Connection: close`.
fn with_connection_close(head: &str) -> String {
    let mut out: String = head
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .take_while(|l| !l.is_empty())
        .map(|l| format!("{l}\r\n"))
        .collect();
    out.push_str("Connection: close\r\n\r\n");
    out
}

/// base64url without padding (JWT encoding).
pub fn base64url(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// Standard base64 with padding (x5c entries).
pub fn base64_std(bytes: &[u8]) -> String {
    let mut text = base64url(bytes).replace('-', "+").replace('_', "/");
    while !text.len().is_multiple_of(4) {
        text.push('=');
    }
    text
}

/// A token server for docker-registry's `token` auth: issues RS256 JWTs
/// (signed with openssl, the certificate in `x5c`) granting the requested
/// scopes to `user:password` and only `pull` to anonymous clients; answers
/// 401 to wrong credentials. Returns (port, certificate PEM path).
pub struct TokenServer {
    pub port: u16,
    pub cert: PathBuf,
    pub issuer: String,
    pub service: String,
}

pub fn start_token_server(dir: &Path, user: &'static str, password: &'static str) -> TokenServer {
    run_ok(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "token.key",
                "-out",
                "token.crt",
                "-days",
                "2",
                "-subj",
                "/CN=kiln token issuer",
            ])
            .current_dir(dir)
            .stderr(Stdio::piped()),
    );
    let der = Command::new("openssl")
        .args(["x509", "-in", "token.crt", "-outform", "der"])
        .current_dir(dir)
        .output()
        .unwrap()
        .stdout;
    let x5c = base64_std(&der);
    let key = dir.join("token.key");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let issuer = "kiln-test-issuer".to_string();
    let service = "kiln-test-registry".to_string();
    let (issuer_c, service_c) = (issuer.clone(), service.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = serve_token(stream, &key, &x5c, &issuer_c, &service_c, user, password);
        }
    });
    TokenServer {
        port,
        cert: dir.join("token.crt"),
        issuer,
        service,
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("00");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn serve_token(
    mut stream: TcpStream,
    key: &Path,
    x5c: &str,
    issuer: &str,
    service: &str,
    user: &str,
    password: &str,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let target = text
        .lines()
        .next()
        .unwrap_or_default()
        .split(' ')
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or_default();
    let scopes: Vec<String> = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(k, _)| *k == "scope")
        .map(|(_, v)| percent_decode(v))
        .collect();
    let authorization = text
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("authorization:"))
        .map(|l| {
            l.split_once(':')
                .map(|(_, v)| v.trim().to_string())
                .unwrap_or_default()
        });
    let expected = format!(
        "Basic {}",
        base64_std(format!("{user}:{password}").as_bytes())
    );
    let authenticated = match &authorization {
        Some(value) if *value == expected => true,
        Some(_) => {
            stream.write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 27\r\nConnection: close\r\n\r\n{\"details\":\"bad password\"}\n")?;
            return Ok(());
        }
        None => false,
    };
    let mut access = Vec::new();
    for scope in &scopes {
        let mut parts = scope.splitn(3, ':');
        let (kind, name, actions) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        let granted: Vec<&str> = actions
            .split(',')
            .filter(|a| authenticated || *a == "pull")
            .collect();
        access.push(serde_json::json!({"type": kind, "name": name, "actions": granted}));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "x5c": [x5c]});
    let claims = serde_json::json!({
        "iss": issuer, "sub": if authenticated { user } else { "" }, "aud": service,
        "exp": now + 600, "nbf": now - 60, "iat": now, "jti": format!("{now}-{}", scopes.len()),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        base64url(header.to_string().as_bytes()),
        base64url(claims.to_string().as_bytes())
    );
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(signing_input.as_bytes())?;
    let signature = child.wait_with_output()?.stdout;
    let token = format!("{signing_input}.{}", base64url(&signature));
    let body =
        serde_json::json!({"token": token, "access_token": token, "expires_in": 600}).to_string();
    stream.write_all(
        format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
            .as_bytes(),
    )?;
    Ok(())
}

/// What a [`start_faulty_proxy`] does to blob downloads.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Pass everything through (only log).
    None,
    /// Send the first `after` body bytes of a blob GET, then close the connection.
    Cut { after: usize },
    /// Send the first `after` body bytes of a blob GET, then hold the connection open.
    Stall { after: usize },
}

/// One blob GET a faulty proxy saw.
#[derive(Clone, Debug)]
pub struct BlobGet {
    /// `sha256:...` of the blob.
    pub digest: String,
    /// The request's `Range` header, if any.
    pub range: Option<String>,
    /// The response status code.
    pub status: u16,
    /// Body bytes passed on to the client.
    pub body_sent: usize,
}

/// A logging proxy in front of a plain HTTP registry that applies `fault`
/// to the first `faults` blob GETs whose body is longer than the fault's
/// byte count. Returns the port and the log of blob GETs.
pub fn start_faulty_proxy(
    target_port: u16,
    fault: Fault,
    faults: usize,
) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<BlobGet>>>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let log = Arc::new(Mutex::new(Vec::new()));
    let shared_log = log.clone();
    let remaining = Arc::new(AtomicUsize::new(faults));
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let log = shared_log.clone();
            let remaining = remaining.clone();
            std::thread::spawn(move || {
                let _ = faulty_one(client, target_port, fault, &remaining, &log);
            });
        }
    });
    fn faulty_one(
        mut client: TcpStream,
        target_port: u16,
        fault: Fault,
        remaining: &AtomicUsize,
        log: &Mutex<Vec<BlobGet>>,
    ) -> std::io::Result<()> {
        let Some(text) = read_request_head(&mut client)? else {
            return Ok(());
        };
        let request_line = text.lines().next().unwrap_or_default().to_string();
        let range = text
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("range:"))
            .map(|l| l[6..].trim().to_string());
        let mut upstream = TcpStream::connect(("127.0.0.1", target_port))?;
        upstream.write_all(with_connection_close(&text).as_bytes())?;
        let mut response = Vec::new();
        upstream.read_to_end(&mut response)?;
        let head_end = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|p| p + 4)
            .unwrap_or(response.len());
        let head_text = String::from_utf8_lossy(&response[..head_end]).into_owned();
        let status = head_text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = &response[head_end..];
        let blob_get = request_line.starts_with("GET ") && request_line.contains("/blobs/sha256:");
        let limit = match fault {
            Fault::Cut { after } | Fault::Stall { after } => Some(after),
            Fault::None => None,
        };
        let faulted = blob_get
            && limit.is_some_and(|after| body.len() > after)
            && remaining
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        let sent = if faulted {
            limit.unwrap_or(0)
        } else {
            body.len()
        };
        if blob_get {
            let digest = request_line
                .split("/blobs/")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .unwrap_or_default()
                .to_string();
            log.lock().unwrap().push(BlobGet {
                digest,
                range,
                status,
                body_sent: sent,
            });
        }
        client.write_all(with_connection_close(&head_text).as_bytes())?;
        client.write_all(&body[..sent])?;
        client.flush()?;
        if faulted && matches!(fault, Fault::Stall { .. }) {
            // Hold the connection until the client goes away.
            let mut sink = [0u8; 64];
            while client.read(&mut sink).map(|n| n > 0).unwrap_or(false) {}
        }
        Ok(())
    }
    (port, log)
}

/// A proxy that forwards every request (bodies included, one request per
/// connection) but answers the first `failures` blob upload PUTs with
/// `503 Service Unavailable` after reading them. Returns (port, such PUTs seen).
pub fn start_upload_failing_proxy(
    target_port: u16,
    failures: usize,
) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let counter = counter.clone();
            std::thread::spawn(move || {
                let _ = forward_with_body(client, target_port, failures, &counter);
            });
        }
    });
    fn forward_with_body(
        mut client: TcpStream,
        target_port: u16,
        failures: usize,
        counter: &AtomicUsize,
    ) -> std::io::Result<()> {
        let Some(text) = read_request_head(&mut client)? else {
            return Ok(());
        };
        let length: usize = text
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        client.read_exact(&mut body)?;
        let request_line = text.lines().next().unwrap_or_default();
        if request_line.starts_with("PUT ")
            && request_line.contains("/blobs/uploads/")
            && counter.fetch_add(1, Ordering::SeqCst) < failures
        {
            client.write_all(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )?;
            return client.flush();
        }
        let mut upstream = TcpStream::connect(("127.0.0.1", target_port))?;
        upstream.write_all(with_connection_close(&text).as_bytes())?;
        upstream.write_all(&body)?;
        let mut response = Vec::new();
        upstream.read_to_end(&mut response)?;
        let head_end = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|p| p + 4)
            .unwrap_or(response.len());
        let head_text = String::from_utf8_lossy(&response[..head_end]).into_owned();
        // Upload Locations name the registry's own host: point them at the proxy.
        let head_text = head_text.replace(
            &format!("127.0.0.1:{target_port}"),
            &format!("127.0.0.1:{}", client.local_addr()?.port()),
        );
        client.write_all(with_connection_close(&head_text).as_bytes())?;
        client.write_all(&response[head_end..])?;
        client.flush()
    }
    (port, seen)
}
