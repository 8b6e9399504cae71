//! Credentials where docker keeps them: `$DOCKER_CONFIG/config.json` (default
//! `~/.docker/config.json`) with `auths` (base64 `user:password` in `auth`,
//! or `identitytoken`), `credsStore` (one helper for everything) and
//! `credHelpers` (a helper per registry). Helpers are `docker-credential-NAME`
//! programs speaking docker's protocol: the action (`get`, `store`, `erase`)
//! as argument, the server URL or a JSON document on stdin, JSON on stdout.
//!
//! Writing keeps every other field of the file as it was, and replaces the
//! file atomically with mode 0600 as docker does.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value, json};

use crate::error::{RegistryError, Result};

/// The key docker uses for Docker Hub in `auths` and helpers.
pub const DOCKER_HUB_SERVER: &str = "https://index.docker.io/v1/";

/// A username and a secret for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    /// The password, or the identity (refresh) token when `identity_token`.
    pub secret: String,
    /// `secret` is an OAuth2 refresh token (docker's `identitytoken`,
    /// a helper's `<token>` username), not a password.
    pub identity_token: bool,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("identity_token", &self.identity_token)
            .finish_non_exhaustive()
    }
}

/// The server key docker uses for a registry host: Docker Hub's legacy URL for
/// `docker.io`, the host itself otherwise.
pub fn server_key(registry: &str) -> String {
    match registry {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB_SERVER.to_string(),
        other => other.to_string(),
    }
}

/// docker's `ConvertToHostname`: `https://host:5000/v2/` → `host:5000`.
fn hostname_of(key: &str) -> &str {
    let without_scheme = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    without_scheme.split('/').next().unwrap_or(without_scheme)
}

/// The docker client config file.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    path: PathBuf,
    document: Map<String, Value>,
    /// `PATH` for finding `docker-credential-*` helpers (None: the process's).
    helper_path: Option<std::ffi::OsString>,
}

impl DockerConfig {
    /// Where docker keeps its config: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
    pub fn default_path() -> PathBuf {
        if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|v| !v.is_empty()) {
            return PathBuf::from(dir).join("config.json");
        }
        let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
        PathBuf::from(home).join(".docker/config.json")
    }

    /// Loads the default config file (an absent file is an empty config).
    pub fn load_default() -> Result<Self> {
        Self::load(Self::default_path())
    }

    /// Loads `path` (an absent file is an empty config).
    pub fn load(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let document = match std::fs::read(&path) {
            Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Map::new(),
            Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
                Ok(Value::Object(map)) => map,
                Ok(_) => {
                    return Err(RegistryError::Config {
                        path,
                        why: "not a JSON object; fix or remove the file".into(),
                    });
                }
                Err(e) => {
                    return Err(RegistryError::Config {
                        path,
                        why: format!("invalid JSON ({e}); fix or remove the file"),
                    });
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Map::new(),
            Err(source) => {
                return Err(RegistryError::Io {
                    action: "reading docker config",
                    path,
                    source,
                });
            }
        };
        Ok(DockerConfig {
            path,
            document,
            helper_path: None,
        })
    }

    /// Looks for credential helpers in `path` (a `PATH`-style list) instead
    /// of the process's `PATH`.
    pub fn with_helper_path(mut self, path: impl Into<std::ffi::OsString>) -> Self {
        self.helper_path = Some(path.into());
        self
    }

    /// The file this config was read from and is written to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The credential helper for `registry` (`credHelpers` first, then `credsStore`).
    pub fn helper_for(&self, registry: &str) -> Option<String> {
        let key = server_key(registry);
        let per_registry = self
            .document
            .get("credHelpers")
            .and_then(Value::as_object)
            .and_then(|helpers| {
                helpers
                    .get(&key)
                    .or_else(|| helpers.get(registry))
                    .and_then(Value::as_str)
            });
        per_registry
            .or_else(|| self.document.get("credsStore").and_then(Value::as_str))
            .filter(|name| !name.is_empty())
            .map(str::to_string)
    }

    /// Credentials for `registry` (a host as in a reference: `docker.io`, `host:5000`).
    pub fn credentials(&self, registry: &str) -> Result<Option<Credentials>> {
        let key = server_key(registry);
        if let Some(helper) = self.helper_for(registry) {
            return helper_get(self.helper_command(&helper), &helper, &key);
        }
        let Some(auths) = self.document.get("auths").and_then(Value::as_object) else {
            return Ok(None);
        };
        let wanted_host = hostname_of(&key);
        let entry = auths.get(&key).or_else(|| {
            auths
                .iter()
                .find(|(stored, _)| hostname_of(stored) == wanted_host)
                .map(|(_, value)| value)
        });
        let Some(entry) = entry.and_then(Value::as_object) else {
            return Ok(None);
        };
        self.decode_entry(&key, entry)
    }

    fn decode_entry(&self, key: &str, entry: &Map<String, Value>) -> Result<Option<Credentials>> {
        let bad = |why: String| RegistryError::Config {
            path: self.path.clone(),
            why: format!("auths[{key:?}]: {why}"),
        };
        let mut username = entry
            .get("username")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let mut password = entry
            .get("password")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if let Some(auth) = entry
            .get("auth")
            .and_then(Value::as_str)
            .filter(|a| !a.is_empty())
        {
            let decoded = BASE64.decode(auth.trim()).map_err(|e| {
                bad(format!(
                    "`auth` is not base64 ({e}); run `kiln login` again"
                ))
            })?;
            let decoded = String::from_utf8(decoded)
                .map_err(|_| bad("`auth` is not UTF-8; run `kiln login` again".into()))?;
            let (user, pass) = decoded
                .split_once(':')
                .ok_or_else(|| bad("`auth` is not user:password; run `kiln login` again".into()))?;
            username = user.to_string();
            password = pass.to_string();
        }
        if let Some(token) = entry
            .get("identitytoken")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            return Ok(Some(Credentials {
                username,
                secret: token.to_string(),
                identity_token: true,
            }));
        }
        if username.is_empty() && password.is_empty() {
            return Ok(None);
        }
        Ok(Some(Credentials {
            username,
            secret: password,
            identity_token: false,
        }))
    }

    /// Stores credentials for `registry` as `docker login` does: in the
    /// configured helper if there is one, else base64 in `auths`; then writes the file.
    pub fn store(&mut self, registry: &str, credentials: &Credentials) -> Result<()> {
        let key = server_key(registry);
        if let Some(helper) = self.helper_for(registry) {
            return helper_store(self.helper_command(&helper), &helper, &key, credentials);
        }
        let auths = self
            .document
            .entry("auths")
            .or_insert_with(|| Value::Object(Map::new()));
        if !auths.is_object() {
            *auths = Value::Object(Map::new());
        }
        let entry = if credentials.identity_token {
            json!({"identitytoken": credentials.secret})
        } else {
            let pair = format!("{}:{}", credentials.username, credentials.secret);
            json!({"auth": BASE64.encode(pair)})
        };
        if let Some(map) = auths.as_object_mut() {
            map.insert(key, entry);
        }
        self.save()
    }

    /// Removes the credentials for `registry`; returns whether there were any.
    pub fn erase(&mut self, registry: &str) -> Result<bool> {
        let key = server_key(registry);
        if let Some(helper) = self.helper_for(registry) {
            return helper_erase(self.helper_command(&helper), &helper, &key);
        }
        let wanted_host = hostname_of(&key).to_string();
        let Some(auths) = self
            .document
            .get_mut("auths")
            .and_then(Value::as_object_mut)
        else {
            return Ok(false);
        };
        let keys: Vec<String> = auths
            .keys()
            .filter(|stored| **stored == key || hostname_of(stored) == wanted_host)
            .cloned()
            .collect();
        for stored in &keys {
            auths.remove(stored);
        }
        if keys.is_empty() {
            return Ok(false);
        }
        self.save()?;
        Ok(true)
    }

    fn helper_command(&self, helper: &str) -> Command {
        let mut command = Command::new(format!("docker-credential-{helper}"));
        if let Some(path) = &self.helper_path {
            // std resolves the program with the child's PATH when it is set.
            command.env("PATH", path);
        }
        command
    }

    /// Writes the file atomically with mode 0600 (it holds secrets).
    pub fn save(&self) -> Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let io_err = |action, path: &Path| {
            let path = path.to_path_buf();
            move |source| RegistryError::Io {
                action,
                path,
                source,
            }
        };
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
        let mut text =
            serde_json::to_vec_pretty(&Value::Object(self.document.clone())).map_err(|e| {
                RegistryError::Config {
                    path: self.path.clone(),
                    why: e.to_string(),
                }
            })?;
        text.push(b'\n');
        let temp = dir.join(format!(".config.json.kiln-{}", std::process::id()));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)
            .map_err(io_err("creating", &temp))?;
        file.write_all(&text).map_err(io_err("writing", &temp))?;
        file.sync_all().map_err(io_err("syncing", &temp))?;
        drop(file);
        std::fs::rename(&temp, &self.path).map_err(io_err("replacing", &self.path))
    }
}

fn run_helper(
    mut command: Command,
    helper: &str,
    action: &'static str,
    server: &str,
    input: &[u8],
) -> Result<(bool, String)> {
    let program = format!("docker-credential-{helper}");
    let err = |why: String| RegistryError::Helper {
        helper: helper.to_string(),
        action,
        server: server.to_string(),
        why,
    };
    let mut child = command
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            err(format!(
                "cannot run {program} ({e}); install it or remove it from the docker config"
            ))
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input)
            .map_err(|e| err(format!("writing to it: {e}")))?;
    }
    let output = child
        .wait_with_output()
        .map_err(|e| err(format!("waiting for it: {e}")))?;
    let mut text = String::from_utf8_lossy(&output.stdout).trim().to_string();
    if text.is_empty() {
        text = String::from_utf8_lossy(&output.stderr).trim().to_string();
    }
    Ok((output.status.success(), text))
}

fn helper_get(command: Command, helper: &str, server: &str) -> Result<Option<Credentials>> {
    let (ok, text) = run_helper(command, helper, "get", server, server.as_bytes())?;
    if !ok {
        // docker-credential-helpers' "not found" answer means: anonymous.
        if text.contains("credentials not found") {
            return Ok(None);
        }
        return Err(RegistryError::Helper {
            helper: helper.to_string(),
            action: "get",
            server: server.to_string(),
            why: text,
        });
    }
    #[derive(serde::Deserialize)]
    struct HelperAnswer {
        #[serde(rename = "Username", default)]
        username: String,
        #[serde(rename = "Secret", default)]
        secret: String,
    }
    let answer: HelperAnswer = serde_json::from_str(&text).map_err(|e| RegistryError::Helper {
        helper: helper.to_string(),
        action: "get",
        server: server.to_string(),
        why: format!("answer is not the expected JSON ({e})"),
    })?;
    if answer.username.is_empty() && answer.secret.is_empty() {
        return Ok(None);
    }
    let identity_token = answer.username == "<token>";
    Ok(Some(Credentials {
        username: if identity_token {
            String::new()
        } else {
            answer.username
        },
        secret: answer.secret,
        identity_token,
    }))
}

fn helper_store(
    command: Command,
    helper: &str,
    server: &str,
    credentials: &Credentials,
) -> Result<()> {
    let username = if credentials.identity_token {
        "<token>"
    } else {
        credentials.username.as_str()
    };
    let input = json!({"ServerURL": server, "Username": username, "Secret": credentials.secret});
    let (ok, text) = run_helper(
        command,
        helper,
        "store",
        server,
        input.to_string().as_bytes(),
    )?;
    if ok {
        Ok(())
    } else {
        Err(RegistryError::Helper {
            helper: helper.to_string(),
            action: "store",
            server: server.to_string(),
            why: text,
        })
    }
}

fn helper_erase(command: Command, helper: &str, server: &str) -> Result<bool> {
    let (ok, text) = run_helper(command, helper, "erase", server, server.as_bytes())?;
    if ok {
        Ok(true)
    } else if text.contains("credentials not found") {
        Ok(false)
    } else {
        Err(RegistryError::Helper {
            helper: helper.to_string(),
            action: "erase",
            server: server.to_string(),
            why: text,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_auths_by_key_and_by_hostname() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dXNlcjpwYTpzcw=="},
               "https://reg.example:5000/v2/":{"auth":"YTpi"},
               "tok.example":{"identitytoken":"refresh"}},"other":1}"#,
        )
        .unwrap();
        let config = DockerConfig::load(&path).unwrap();
        let hub = config.credentials("docker.io").unwrap().unwrap();
        assert_eq!(
            (hub.username.as_str(), hub.secret.as_str()),
            ("user", "pa:ss")
        );
        let other = config.credentials("reg.example:5000").unwrap().unwrap();
        assert_eq!((other.username.as_str(), other.secret.as_str()), ("a", "b"));
        let token = config.credentials("tok.example").unwrap().unwrap();
        assert!(token.identity_token);
        assert_eq!(token.secret, "refresh");
        assert!(config.credentials("nothing.example").unwrap().is_none());
    }

    #[test]
    fn store_and_erase_keep_other_fields_and_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/config.json");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, r#"{"psFormat":"table {{.ID}}"}"#).unwrap();
        let mut config = DockerConfig::load(&path).unwrap();
        let credentials = Credentials {
            username: "u".into(),
            secret: "p".into(),
            identity_token: false,
        };
        config.store("127.0.0.1:5000", &credentials).unwrap();
        let written: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(written["psFormat"], "table {{.ID}}");
        assert_eq!(written["auths"]["127.0.0.1:5000"]["auth"], "dTpw");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let reread = DockerConfig::load(&path).unwrap();
        assert_eq!(
            reread.credentials("127.0.0.1:5000").unwrap(),
            Some(credentials)
        );
        let mut config = reread;
        assert!(config.erase("127.0.0.1:5000").unwrap());
        assert!(!config.erase("127.0.0.1:5000").unwrap());
        assert!(
            DockerConfig::load(&path)
                .unwrap()
                .credentials("127.0.0.1:5000")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn broken_files_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, "[1]").unwrap();
        assert!(DockerConfig::load(&path).is_err());
        std::fs::write(&path, r#"{"auths":{"h":{"auth":"!!"}}}"#).unwrap();
        let err = DockerConfig::load(&path)
            .unwrap()
            .credentials("h")
            .unwrap_err();
        assert!(err.to_string().contains("not base64"), "{err}");
        assert!(
            DockerConfig::load(dir.path().join("absent.json"))
                .unwrap()
                .credentials("h")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn credential_helper_protocol() {
        // A fake helper script: answers `get` for one server, records `store`.
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("docker-credential-fake");
        let log = dir.path().join("stored");
        std::fs::write(
            &bin,
            format!(
                "#!/bin/sh\nread -r input\ncase \"$1\" in\n get) if [ \"$input\" = \"h.example\" ]; then echo '{{\"ServerURL\":\"h.example\",\"Username\":\"hu\",\"Secret\":\"hs\"}}'; else echo 'credentials not found in native keychain'; exit 1; fi;;\n store) echo \"$input\" > {log};;\n erase) exit 0;;\nesac\n",
                log = log.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path_var = format!("{}:/usr/bin:/bin", dir.path().display());
        let config_path = dir.path().join("config.json");
        std::fs::write(
            &config_path,
            r#"{"credHelpers":{"h.example":"fake","o.example":"fake"}}"#,
        )
        .unwrap();
        let mut config = DockerConfig::load(&config_path)
            .unwrap()
            .with_helper_path(path_var);
        let found = config.credentials("h.example").unwrap().unwrap();
        assert_eq!(
            (found.username.as_str(), found.secret.as_str()),
            ("hu", "hs")
        );
        assert!(config.credentials("o.example").unwrap().is_none());
        assert!(config.credentials("plain.example").unwrap().is_none());
        config
            .store(
                "o.example",
                &Credentials {
                    username: "ou".into(),
                    secret: "os".into(),
                    identity_token: false,
                },
            )
            .unwrap();
        let stored: Value = serde_json::from_slice(&std::fs::read(&log).unwrap()).unwrap();
        assert_eq!(
            stored,
            json!({"ServerURL":"o.example","Username":"ou","Secret":"os"})
        );
        assert!(config.erase("o.example").unwrap());
    }
}
