//! One registry's HTTP client: endpoint and TLS choice, authentication
//! (anonymous, basic, bearer tokens per scope), retries of idempotent requests.
//!
//! Built on `ureq` (blocking, rustls): kiln's stages are threads, not async
//! tasks, and every body is streamed through kiln's own digest check into the
//! store (see README.md for why not `oci-client`).

use std::collections::HashMap;
use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::challenge::{Challenge, parse_challenges};
use crate::credentials::{Credentials, DockerConfig};
use crate::error::{RegistryError, Result};

/// Environment variable: registries (`host` or `host:port`, comma or space
/// separated) that may be spoken to over plain HTTP, like docker's `insecure-registries`.
pub const INSECURE_ENV: &str = "KILN_INSECURE_REGISTRIES";
/// Environment variable: directory of per-registry CA certificates
/// (default `/etc/docker/certs.d`, laid out as docker's: `HOST[:PORT]/*.crt`).
pub const CERTS_DIR_ENV: &str = "KILN_CERTS_DIR";
/// Environment variable: a docker `daemon.json` whose `insecure-registries`
/// kiln honours too (default `/etc/docker/daemon.json`; empty: none).
pub const DAEMON_JSON_ENV: &str = "KILN_DOCKER_DAEMON_JSON";
/// Environment variable: upload blobs larger than this many bytes in PATCH
/// chunks of this size (default 64 MiB); smaller ones in one PUT.
pub const CHUNK_SIZE_ENV: &str = "KILN_PUSH_CHUNK_SIZE";

const USER_AGENT: &str = concat!("kiln/", env!("CARGO_PKG_VERSION"));

/// How kiln reaches registries: where credentials and CA certificates are.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Where credentials come from (None: anonymous only).
    pub docker_config: Option<DockerConfig>,
    /// Per-registry CA directory (docker's `/etc/docker/certs.d`).
    pub certs_dir: PathBuf,
    /// Registries allowed over plain HTTP besides localhost and 127.0.0.0/8.
    pub insecure: Vec<String>,
    /// Chunk size for chunked uploads (blobs up to this size go in one PUT).
    pub chunk_size: u64,
}

impl ClientOptions {
    /// Options from the environment: the docker config (`DOCKER_CONFIG`),
    /// `KILN_CERTS_DIR`, `KILN_INSECURE_REGISTRIES`, `KILN_PUSH_CHUNK_SIZE`.
    pub fn from_env() -> Result<Self> {
        let certs_dir = std::env::var_os(CERTS_DIR_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/etc/docker/certs.d"));
        let mut insecure: Vec<String> = std::env::var(INSECURE_ENV)
            .unwrap_or_default()
            .split([',', ' '])
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        let daemon_json = std::env::var_os(DAEMON_JSON_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/etc/docker/daemon.json"));
        if !daemon_json.as_os_str().is_empty() {
            insecure.extend(daemon_insecure_registries(&daemon_json)?);
        }
        let chunk_size = std::env::var(CHUNK_SIZE_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|&n| n > 0)
            .unwrap_or(64 << 20);
        Ok(ClientOptions {
            docker_config: Some(DockerConfig::load_default()?),
            certs_dir,
            insecure,
            chunk_size,
        })
    }
}

/// The `insecure-registries` of a docker `daemon.json` (none when the file
/// does not exist).
pub fn daemon_insecure_registries(path: &Path) -> Result<Vec<String>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(RegistryError::Io {
                action: "reading docker daemon config",
                path: path.to_path_buf(),
                source,
            });
        }
    };
    #[derive(serde::Deserialize)]
    struct Daemon {
        #[serde(default, rename = "insecure-registries")]
        insecure_registries: Vec<String>,
    }
    let daemon: Daemon = serde_json::from_str(&text).map_err(|e| RegistryError::Config {
        path: path.to_path_buf(),
        why: format!(
            "not a docker daemon.json ({e}); fix it or point {DAEMON_JSON_ENV} elsewhere (empty: ignore it)"
        ),
    })?;
    Ok(daemon.insecure_registries)
}

/// The API host behind a reference's domain (Docker Hub's names differ).
pub fn api_host(registry: &str) -> &str {
    match registry {
        "docker.io" | "index.docker.io" => "registry-1.docker.io",
        other => other,
    }
}

/// Whether `registry` may be used over plain HTTP: localhost, 127.0.0.0/8,
/// ::1, or listed in `insecure`.
pub fn allows_plain_http(registry: &str, insecure: &[String]) -> bool {
    let host = host_without_port(registry);
    if insecure
        .iter()
        .any(|entry| entry == registry || entry == host)
    {
        return true;
    }
    if host == "localhost" {
        return true;
    }
    let ip = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>();
    match ip {
        Ok(ip) if ip.is_loopback() => true,
        // docker's insecure-registries also takes CIDR ranges (10.0.0.0/8).
        Ok(ip) => insecure.iter().any(|entry| cidr_contains(entry, ip)),
        Err(_) => false,
    }
}

/// Whether `entry` is a CIDR range (`10.0.0.0/8`, `fd00::/8`) holding `ip`.
fn cidr_contains(entry: &str, ip: IpAddr) -> bool {
    let Some((network, bits)) = entry.split_once('/') else {
        return false;
    };
    let (Ok(network), Ok(bits)) = (network.parse::<IpAddr>(), bits.parse::<u32>()) else {
        return false;
    };
    match (network, ip) {
        (IpAddr::V4(network), IpAddr::V4(ip)) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(network) & mask == u32::from(ip) & mask
        }
        (IpAddr::V6(network), IpAddr::V6(ip)) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(network) & mask == u128::from(ip) & mask
        }
        _ => false,
    }
}

fn host_without_port(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        // [::1]:5000
        return rest.split(']').next().unwrap_or(rest);
    }
    match registry.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => registry,
    }
}

fn system_roots() -> &'static [rustls::pki_types::CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<rustls::pki_types::CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| rustls_native_certs::load_native_certs().certs)
}

/// TLS config as docker's `certs.d`: the system roots plus every `*.crt` in
/// `certs_dir/HOST[:PORT]/` as CAs, and a client certificate `NAME.cert`
/// with its key `NAME.key` (the first by name when there are several).
/// `skip_verify`: accept any server certificate (docker's behaviour for an
/// insecure registry, loopback included: "not using TLS, or using TLS with a
/// certificate not trusted"); the handshake's signatures are still checked,
/// and a client certificate from certs.d is still offered.
fn tls_config(
    registry: &str,
    certs_dir: &Path,
    skip_verify: bool,
) -> Result<Arc<rustls::ClientConfig>> {
    let tls_err = |why: String| RegistryError::Tls {
        registry: registry.to_string(),
        why,
    };
    let mut roots = rustls::RootCertStore::empty();
    let (_added, _ignored) = roots.add_parsable_certificates(system_roots().iter().cloned());
    let dir = certs_dir.join(registry);
    let mut client_identity = None;
    if let Ok(entries) = std::fs::read_dir(&dir) {
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for path in paths
            .iter()
            .filter(|p| p.extension().is_some_and(|x| x == "key"))
        {
            if !path.with_extension("cert").exists() {
                return Err(tls_err(format!(
                    "{}: a client key without its certificate {}",
                    path.display(),
                    path.with_extension("cert").display()
                )));
            }
        }
        for path in paths
            .iter()
            .filter(|p| p.extension().is_some_and(|x| x == "cert"))
        {
            if client_identity.is_none() {
                client_identity = Some(client_certificate(path, &tls_err)?);
            }
        }
        for path in paths
            .iter()
            .filter(|p| p.extension().is_some_and(|x| x == "crt"))
        {
            let bytes = std::fs::read(path)
                .map_err(|e| tls_err(format!("reading {}: {e}", path.display())))?;
            let mut found = 0;
            for cert in rustls_pemfile::certs(&mut bytes.as_slice()) {
                let cert = cert.map_err(|e| {
                    tls_err(format!("{}: not a PEM certificate ({e})", path.display()))
                })?;
                roots.add(cert).map_err(|e| {
                    tls_err(format!("{}: unusable CA certificate ({e})", path.display()))
                })?;
                found += 1;
            }
            if found == 0 {
                return Err(tls_err(format!(
                    "{}: no PEM certificate in it",
                    path.display()
                )));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(e.to_string()))?;
    let config = if skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServerCertificate(provider)))
    } else {
        builder.with_root_certificates(roots)
    };
    let config = match client_identity {
        Some((chain, key)) => config
            .with_client_auth_cert(chain, key)
            .map_err(|e| tls_err(format!("client certificate in {}: {e}", dir.display())))?,
        None => config.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The verifier of an insecure registry: any certificate, any name; the
/// signatures of the handshake itself are verified as usual.
#[derive(Debug)]
struct AnyServerCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServerCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

type ClientIdentity = (
    Vec<rustls::pki_types::CertificateDer<'static>>,
    rustls::pki_types::PrivateKeyDer<'static>,
);

/// A client certificate chain `NAME.cert` and its key `NAME.key`, as docker
/// reads them from certs.d.
fn client_certificate(
    cert_path: &Path,
    tls_err: &dyn Fn(String) -> RegistryError,
) -> Result<ClientIdentity> {
    let key_path = cert_path.with_extension("key");
    let read = |path: &Path| {
        std::fs::read(path).map_err(|e| tls_err(format!("reading {}: {e}", path.display())))
    };
    let cert_bytes = read(cert_path)?;
    let chain = rustls_pemfile::certs(&mut cert_bytes.as_slice())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| {
            tls_err(format!(
                "{}: not a PEM certificate ({e})",
                cert_path.display()
            ))
        })?;
    if chain.is_empty() {
        return Err(tls_err(format!(
            "{}: no PEM certificate in it",
            cert_path.display()
        )));
    }
    if !key_path.exists() {
        return Err(tls_err(format!(
            "client certificate {} has no key {} beside it",
            cert_path.display(),
            key_path.display()
        )));
    }
    let key_bytes = read(&key_path)?;
    let key = rustls_pemfile::private_key(&mut key_bytes.as_slice())
        .map_err(|e| {
            tls_err(format!(
                "{}: not a PEM private key ({e})",
                key_path.display()
            ))
        })?
        .ok_or_else(|| tls_err(format!("{}: no PEM private key in it", key_path.display())))?;
    Ok((chain, key))
}

/// A request body that can be sent again (after a 401 or a transient error).
#[derive(Clone, Copy)]
pub enum Body<'a> {
    Empty,
    Bytes(&'a [u8]),
    /// `len` bytes of the file at `path` from `offset`; `sent` (when given)
    /// is told the bytes of the file sent so far (from `offset`'s start).
    File {
        path: &'a Path,
        offset: u64,
        len: u64,
        sent: Option<&'a (dyn Fn(u64) + Sync)>,
    },
}

/// A reader that reports the bytes read so far (starting at `done`).
struct Reporting<'a, R> {
    inner: R,
    done: u64,
    report: &'a (dyn Fn(u64) + Sync),
}

impl<R: Read> Read for Reporting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        (self.report)(self.done);
        Ok(n)
    }
}

/// One registry host, its endpoint and its authentication state.
pub struct RegistryClient {
    /// The registry as references name it (`docker.io`, `127.0.0.1:5000`).
    registry: String,
    agent: ureq::Agent,
    allow_http: bool,
    /// Registries allowed over plain HTTP (also checked for token realms).
    insecure: Vec<String>,
    credentials: Option<Credentials>,
    /// Set by [`RegistryClient::ping`]: `https://host` or `http://host`.
    base: Mutex<Option<String>>,
    auth: Mutex<AuthState>,
    chunk_size: u64,
}

#[derive(Default)]
struct AuthState {
    challenge: Option<Challenge>,
    /// Bearer tokens by their sorted scope list.
    tokens: HashMap<String, String>,
}

/// What a request asks the registry for: method, URL (absolute, or a path
/// under the endpoint), scopes for a bearer token, headers, body.
pub struct Request<'a> {
    pub method: &'static str,
    pub url: String,
    pub scopes: Vec<String>,
    pub headers: Vec<(&'static str, String)>,
    pub body: Body<'a>,
}

impl<'a> Request<'a> {
    pub fn new(method: &'static str, url: impl Into<String>, scopes: Vec<String>) -> Self {
        Request {
            method,
            url: url.into(),
            scopes,
            headers: Vec::new(),
            body: Body::Empty,
        }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn body(mut self, body: Body<'a>) -> Self {
        self.body = body;
        self
    }
}

/// The `repository:NAME:ACTIONS` scope of a bearer token.
pub fn repository_scope(path: &str, actions: &str) -> String {
    format!("repository:{path}:{actions}")
}

impl RegistryClient {
    /// A client for `registry` (a reference's domain), with credentials from
    /// the options' docker config.
    pub fn new(registry: &str, options: &ClientOptions) -> Result<Self> {
        let credentials = match &options.docker_config {
            Some(config) => config.credentials(registry)?,
            None => None,
        };
        Self::with_credentials(registry, options, credentials)
    }

    /// A client for `registry` using exactly `credentials` (what `login` verifies).
    pub fn with_credentials(
        registry: &str,
        options: &ClientOptions,
        credentials: Option<Credentials>,
    ) -> Result<Self> {
        let agent = ureq::AgentBuilder::new()
            .tls_config(tls_config(
                registry,
                &options.certs_dir,
                allows_plain_http(registry, &options.insecure),
            )?)
            .timeout_connect(Duration::from_secs(30))
            .timeout_read(Duration::from_secs(120))
            .user_agent(USER_AGENT)
            .redirects(5)
            .build();
        Ok(RegistryClient {
            registry: registry.to_string(),
            agent,
            allow_http: allows_plain_http(registry, &options.insecure),
            insecure: options.insecure.clone(),
            credentials,
            base: Mutex::new(None),
            auth: Mutex::new(AuthState::default()),
            chunk_size: options.chunk_size,
        })
    }

    /// The registry as references name it.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// Chunk size for uploads.
    pub fn chunk_size(&self) -> u64 {
        self.chunk_size
    }

    /// Whether credentials are configured.
    pub fn has_credentials(&self) -> bool {
        self.credentials.is_some()
    }

    fn lock_auth(&self) -> std::sync::MutexGuard<'_, AuthState> {
        self.auth
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The endpoint, finding it first (`GET /v2/`) if not yet known: HTTPS,
    /// or plain HTTP for registries that allow it when HTTPS fails, as docker
    /// does. Also learns the authentication challenge.
    pub fn base(&self) -> Result<String> {
        let mut base = self.base.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(known) = base.as_ref() {
            return Ok(known.clone());
        }
        let host = api_host(&self.registry);
        let https = format!("https://{host}");
        let found = match self.ping(&https) {
            Ok(()) => https,
            Err(https_err) if self.allow_http => {
                let http = format!("http://{host}");
                match self.ping(&http) {
                    Ok(()) => http,
                    Err(http_err) => {
                        return Err(RegistryError::Transport {
                            url: format!("{host}/v2/"),
                            why: format!("over HTTPS: {https_err}; over HTTP: {http_err}"),
                        });
                    }
                }
            }
            Err(RegistryError::Transport { url, why }) => {
                return Err(RegistryError::Transport {
                    url,
                    why: format!(
                        "{why} (if {} only speaks plain HTTP, list it in {INSECURE_ENV} or in the insecure-registries of /etc/docker/daemon.json)",
                        self.registry
                    ),
                });
            }
            Err(e) => return Err(e),
        };
        *base = Some(found.clone());
        Ok(found)
    }

    fn ping(&self, base: &str) -> Result<()> {
        let url = format!("{base}/v2/");
        // Short: a wrong guess (TLS to a plain HTTP port) must not stall a pull.
        let request = self.agent.get(&url).timeout(Duration::from_secs(20));
        let response = self.call(&request, Body::Empty, &url)?;
        match response.status() {
            401 => {
                let challenge = best_challenge(&response);
                self.lock_auth().challenge = challenge;
                Ok(())
            }
            // A registry answers the ping with 200; some proxies in front of
            // one with 403/404. Anything else (e.g. 400 from a TLS port spoken
            // to in plain HTTP) means this is not the registry's endpoint.
            200..=299 | 403 | 404 => Ok(()),
            status => Err(RegistryError::Status {
                url,
                status,
                what: "checking the registry endpoint".into(),
                body: error_body(response),
            }),
        }
    }

    /// Sends `call` (ureq's error for HTTP statuses folded back into a response).
    fn call(&self, request: &ureq::Request, body: Body<'_>, url: &str) -> Result<ureq::Response> {
        let result = match body {
            Body::Empty => request.clone().call(),
            Body::Bytes(bytes) => request
                .clone()
                .set("Content-Length", &bytes.len().to_string())
                .send_bytes(bytes),
            Body::File {
                path,
                offset,
                len,
                sent,
            } => {
                use std::io::Seek;
                let mut file = std::fs::File::open(path).map_err(|source| RegistryError::Io {
                    action: "opening blob",
                    path: path.to_path_buf(),
                    source,
                })?;
                file.seek(std::io::SeekFrom::Start(offset))
                    .map_err(|source| RegistryError::Io {
                        action: "seeking in blob",
                        path: path.to_path_buf(),
                        source,
                    })?;
                let request = request.clone().set("Content-Length", &len.to_string());
                match sent {
                    Some(report) => request.send(Reporting {
                        inner: file.take(len),
                        done: offset,
                        report,
                    }),
                    None => request.send(file.take(len)),
                }
            }
        };
        match result {
            Ok(response) => Ok(response),
            Err(ureq::Error::Status(_, response)) => Ok(response),
            Err(ureq::Error::Transport(transport)) => Err(RegistryError::Transport {
                url: url.to_string(),
                why: transport.to_string(),
            }),
        }
    }

    /// Sends a request with authentication, retrying once on 401 (with the
    /// scope the registry asked for) and, for GET/HEAD, up to 3 times with
    /// backoff on transport errors, 429 and 5xx. Returns any final status.
    pub fn send(&self, request: &Request<'_>) -> Result<ureq::Response> {
        let base = self.base()?;
        let url = if request.url.starts_with("http://") || request.url.starts_with("https://") {
            request.url.clone()
        } else {
            format!("{base}{}", request.url)
        };
        let idempotent = matches!(request.method, "GET" | "HEAD");
        let mut scopes = request.scopes.clone();
        let mut refreshed_auth = false;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let authorization = self.authorization(&scopes, false)?;
            let mut http = self.agent.request(request.method, &url);
            for (name, value) in &request.headers {
                http = http.set(name, value);
            }
            if let Some(value) = &authorization {
                http = http.set("Authorization", value);
            }
            let outcome = self.call(&http, request.body, &url);
            match outcome {
                Ok(response) if response.status() == 401 && !refreshed_auth => {
                    refreshed_auth = true;
                    let challenge = best_challenge(&response);
                    if let Some(scope) = challenge.as_ref().and_then(|c| c.param("scope")) {
                        for wanted in scope.split(' ') {
                            if !scopes.iter().any(|s| s == wanted) {
                                scopes.push(wanted.to_string());
                            }
                        }
                    }
                    {
                        let mut auth = self.lock_auth();
                        if challenge.is_some() {
                            auth.challenge = challenge;
                        }
                        auth.tokens.remove(&scope_key(&scopes));
                    }
                    continue;
                }
                Ok(response)
                    if idempotent
                        && attempt < 3
                        && (response.status() == 429 || response.status() >= 500) =>
                {
                    std::thread::sleep(backoff(attempt));
                }
                Ok(response) => {
                    if response.status() == 401 || response.status() == 403 {
                        return Err(self.unauthorized(&url, response));
                    }
                    return Ok(response);
                }
                Err(e) if idempotent && attempt < 3 => {
                    tracing::debug!("retrying {url} after {e}");
                    std::thread::sleep(backoff(attempt));
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn unauthorized(&self, url: &str, response: ureq::Response) -> RegistryError {
        let status = response.status();
        RegistryError::Unauthorized {
            url: url.to_string(),
            registry: self.registry.clone(),
            status,
            body: error_body(response),
            hint: crate::credentials::DockerConfig::default_path()
                .display()
                .to_string(),
        }
    }

    /// The Authorization header for `scopes`: basic credentials when the
    /// registry asked for basic, a (cached) bearer token when it asked for one.
    /// `verify`: fail when a token endpoint refuses the credentials (login).
    fn authorization(&self, scopes: &[String], verify: bool) -> Result<Option<String>> {
        let challenge = {
            let auth = self.lock_auth();
            let Some(challenge) = auth.challenge.clone() else {
                return Ok(None);
            };
            if challenge.scheme == "bearer"
                && let Some(token) = auth.tokens.get(&scope_key(scopes))
            {
                return Ok(Some(format!("Bearer {token}")));
            }
            challenge
        };
        match challenge.scheme.as_str() {
            "basic" => Ok(self.credentials.as_ref().map(|c| {
                format!(
                    "Basic {}",
                    BASE64.encode(format!("{}:{}", c.username, c.secret))
                )
            })),
            "bearer" => {
                let token = self.fetch_token(&challenge, scopes, verify)?;
                if let Some(token) = &token {
                    self.lock_auth()
                        .tokens
                        .insert(scope_key(scopes), token.clone());
                }
                Ok(token.map(|t| format!("Bearer {t}")))
            }
            _ => Ok(None),
        }
    }

    /// Fetches a bearer token from the challenge's realm for `scopes`, with
    /// the credentials when there are some (an identity token via OAuth2 POST,
    /// a password via basic auth on GET), anonymously otherwise.
    fn fetch_token(
        &self,
        challenge: &Challenge,
        scopes: &[String],
        verify: bool,
    ) -> Result<Option<String>> {
        let auth_err = |why: String| RegistryError::Auth {
            registry: self.registry.clone(),
            why,
        };
        let realm = challenge
            .param("realm")
            .ok_or_else(|| auth_err("the registry's bearer challenge has no realm".into()))?;
        let realm_url = url::Url::parse(realm)
            .map_err(|e| auth_err(format!("token realm {realm:?} is not a URL ({e})")))?;
        let realm_host = match (realm_url.host_str(), realm_url.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_string(),
            (None, _) => String::new(),
        };
        let plain_http_ok = allows_plain_http(&realm_host, &self.insecure);
        if realm_url.scheme() != "https" && !(realm_url.scheme() == "http" && plain_http_ok) {
            return Err(auth_err(format!(
                "token realm {realm} is not HTTPS; refusing to send credentials there (plain HTTP only for localhost and KILN_INSECURE_REGISTRIES)"
            )));
        }
        let service = challenge.param("service").unwrap_or_default();
        let response = match &self.credentials {
            Some(credentials) if credentials.identity_token => {
                let mut form: Vec<(&str, &str)> = vec![
                    ("grant_type", "refresh_token"),
                    ("refresh_token", credentials.secret.as_str()),
                    ("service", service),
                    ("client_id", "kiln"),
                ];
                for scope in scopes {
                    form.push(("scope", scope.as_str()));
                }
                match self.agent.post(realm).send_form(&form) {
                    Ok(r) => r,
                    Err(ureq::Error::Status(_, r)) => r,
                    Err(ureq::Error::Transport(t)) => {
                        return Err(auth_err(format!("{realm}: {t}")));
                    }
                }
            }
            credentials => {
                let mut request = self.agent.get(realm);
                if !service.is_empty() {
                    request = request.query("service", service);
                }
                for scope in scopes {
                    request = request.query("scope", scope);
                }
                if let Some(c) = credentials {
                    request = request.set(
                        "Authorization",
                        &format!(
                            "Basic {}",
                            BASE64.encode(format!("{}:{}", c.username, c.secret))
                        ),
                    );
                }
                match request.call() {
                    Ok(r) => r,
                    Err(ureq::Error::Status(_, r)) => r,
                    Err(ureq::Error::Transport(t)) => {
                        return Err(auth_err(format!("{realm}: {t}")));
                    }
                }
            }
        };
        let status = response.status();
        if status == 401 || status == 403 {
            if verify || self.credentials.is_some() {
                return Err(auth_err(format!(
                    "the token service {realm} refused the credentials ({status}: {}); check them or run `kiln login {}`",
                    error_body(response),
                    self.registry
                )));
            }
            return Ok(None);
        }
        if status != 200 {
            return Err(auth_err(format!(
                "the token service {realm} answered {status}: {}",
                error_body(response)
            )));
        }
        #[derive(serde::Deserialize)]
        struct TokenAnswer {
            token: Option<String>,
            access_token: Option<String>,
        }
        let mut text = String::new();
        response
            .into_reader()
            .take(1 << 20)
            .read_to_string(&mut text)
            .map_err(|e| auth_err(format!("reading the answer of {realm}: {e}")))?;
        let answer: TokenAnswer = serde_json::from_str(&text).map_err(|e| {
            auth_err(format!(
                "the answer of {realm} is not a token document ({e})"
            ))
        })?;
        let token = answer
            .token
            .filter(|t| !t.is_empty())
            .or(answer.access_token.filter(|t| !t.is_empty()))
            .ok_or_else(|| auth_err(format!("the answer of {realm} has no token")))?;
        Ok(Some(token))
    }

    /// Checks the client's credentials against the registry as `docker login`
    /// does: `GET /v2/` must succeed with them (through a token for bearer registries).
    pub fn verify_login(&self) -> Result<()> {
        let base = self.base()?;
        let challenge = self.lock_auth().challenge.clone();
        let Some(challenge) = challenge else {
            // The registry needs no authentication at all: docker accepts that too.
            return Ok(());
        };
        if challenge.scheme == "basic" && self.credentials.is_none() {
            return Err(RegistryError::Auth {
                registry: self.registry.clone(),
                why: "the registry wants credentials and none were given".into(),
            });
        }
        // For bearer registries this fetches a token with the credentials:
        // the token service refusing them is the login failure.
        let authorization = self.authorization(&[], true)?;
        let url = format!("{base}/v2/");
        let mut request = self.agent.get(&url);
        if let Some(value) = &authorization {
            request = request.set("Authorization", value);
        }
        let response = self.call(&request, Body::Empty, &url)?;
        match response.status() {
            200..=299 => Ok(()),
            401 | 403 => Err(RegistryError::Auth {
                registry: self.registry.clone(),
                why: format!(
                    "the registry refused the credentials ({}: {})",
                    response.status(),
                    error_body(response)
                ),
            }),
            status => Err(RegistryError::Status {
                url,
                status,
                what: "checking credentials".into(),
                body: error_body(response),
            }),
        }
    }
}

fn scope_key(scopes: &[String]) -> String {
    let mut sorted: Vec<&str> = scopes.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    sorted.dedup();
    sorted.join(" ")
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(250 * 4u64.pow(attempt.saturating_sub(1).min(4)))
}

/// The challenge kiln answers: bearer when offered, else basic.
fn best_challenge(response: &ureq::Response) -> Option<Challenge> {
    let mut all: Vec<Challenge> = response
        .all("www-authenticate")
        .into_iter()
        .flat_map(parse_challenges)
        .collect();
    all.sort_by_key(|c| match c.scheme.as_str() {
        "bearer" => 0,
        "basic" => 1,
        _ => 2,
    });
    all.into_iter()
        .find(|c| c.scheme == "bearer" || c.scheme == "basic")
}

/// The start of an error response's body, for messages.
pub fn error_body(response: ureq::Response) -> String {
    let mut text = String::new();
    let _ = response.into_reader().take(2048).read_to_string(&mut text);
    let text = text.trim().replace('\n', " ");
    if text.is_empty() {
        "(no body)".into()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_for_loopback_and_listed() {
        let none: Vec<String> = Vec::new();
        assert!(allows_plain_http("localhost:5000", &none));
        assert!(allows_plain_http("127.0.0.1:5000", &none));
        assert!(allows_plain_http("127.3.2.1", &none));
        assert!(allows_plain_http("[::1]:5000", &none));
        assert!(!allows_plain_http("docker.io", &none));
        assert!(!allows_plain_http("10.0.0.1:5000", &none));
        assert!(!allows_plain_http("localhost.evil.example", &none));
        let listed = vec!["reg.lan:5000".to_string(), "other.lan".to_string()];
        assert!(allows_plain_http("reg.lan:5000", &listed));
        assert!(!allows_plain_http("reg.lan:6000", &listed));
        assert!(allows_plain_http("other.lan:7000", &listed));
    }

    #[test]
    fn insecure_cidr_ranges_and_daemon_json() {
        let ranges = vec!["10.1.0.0/16".to_string(), "fd00::/8".to_string()];
        assert!(allows_plain_http("10.1.2.3:5000", &ranges));
        assert!(!allows_plain_http("10.2.0.1:5000", &ranges));
        assert!(allows_plain_http("[fd12::1]:5000", &ranges));
        assert!(!allows_plain_http("reg.lan", &ranges));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("daemon.json");
        assert!(daemon_insecure_registries(&path).unwrap().is_empty());
        std::fs::write(
            &path,
            r#"{"insecure-registries": ["reg.lan:5000", "10.0.0.0/8"], "debug": true}"#,
        )
        .unwrap();
        assert_eq!(
            daemon_insecure_registries(&path).unwrap(),
            vec!["reg.lan:5000".to_string(), "10.0.0.0/8".to_string()]
        );
        std::fs::write(&path, "{not json").unwrap();
        let err = daemon_insecure_registries(&path).unwrap_err();
        assert!(err.to_string().contains(DAEMON_JSON_ENV), "{err}");
    }

    #[test]
    fn docker_hub_endpoint() {
        assert_eq!(api_host("docker.io"), "registry-1.docker.io");
        assert_eq!(api_host("ghcr.io"), "ghcr.io");
    }

    #[test]
    fn scope_keys_ignore_order_and_duplicates() {
        let a = vec![
            "repository:a:pull".to_string(),
            "repository:b:pull,push".to_string(),
        ];
        let b = vec![a[1].clone(), a[0].clone(), a[0].clone()];
        assert_eq!(scope_key(&a), scope_key(&b));
    }

    #[test]
    fn certs_dir_ca_is_loaded_and_bad_ones_rejected() {
        let dir = tempfile::tempdir().unwrap();
        assert!(tls_config("none.example", dir.path(), false).is_ok());
        std::fs::create_dir_all(dir.path().join("bad.example:5000")).unwrap();
        std::fs::write(dir.path().join("bad.example:5000/ca.crt"), "not pem").unwrap();
        let err = tls_config("bad.example:5000", dir.path(), false).unwrap_err();
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
        std::fs::create_dir_all(dir.path().join("keyless.example")).unwrap();
        std::fs::write(dir.path().join("keyless.example/client.cert"), "x").unwrap();
        let err = tls_config("keyless.example", dir.path(), false).unwrap_err();
        assert!(err.to_string().contains("PEM"), "{err}");
        std::fs::create_dir_all(dir.path().join("certless.example")).unwrap();
        std::fs::write(dir.path().join("certless.example/client.key"), "x").unwrap();
        let err = tls_config("certless.example", dir.path(), false).unwrap_err();
        assert!(err.to_string().contains("without its certificate"), "{err}");
    }
}
