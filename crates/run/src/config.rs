//! Docker's rules for what a container runs: the image config (Entrypoint,
//! Cmd, Env, WorkingDir, User, StopSignal) overridden by `kiln run` flags.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::container::ContainerConfig;
use crate::net::PortBinding;
use crate::{Result, RunError, ids};

/// `--network`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Own network namespace with loopback; `-p` ports proxied into it.
    Default,
    /// Own network namespace with loopback only.
    None,
    /// The host's network namespace.
    Host,
}

impl NetworkMode {
    /// Parses `--network` (docker's `bridge` is kiln's `default`).
    pub fn parse(text: &str) -> Result<NetworkMode> {
        match text {
            "default" | "bridge" => Ok(NetworkMode::Default),
            "none" => Ok(NetworkMode::None),
            "host" => Ok(NetworkMode::Host),
            other => Err(RunError::InvalidArgument(format!(
                "network {other:?} not found: kiln knows default (bridge), none and host"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::Default => "default",
            NetworkMode::None => "none",
            NetworkMode::Host => "host",
        }
    }
}

/// The flags of `kiln run` that shape the container.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The image as the user named it.
    pub image: String,
    /// CMD override (arguments after the image).
    pub cmd: Vec<String>,
    /// `--entrypoint`; `Some("")` clears the image's entrypoint.
    pub entrypoint: Option<String>,
    /// `-e K=V` or `-e K` (taken from kiln's environment if set there).
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub hostname: Option<String>,
    pub name: Option<String>,
    pub network: NetworkMode,
    pub ports: Vec<PortBinding>,
    pub tty: bool,
    pub interactive: bool,
    pub auto_remove: bool,
    pub stop_signal: Option<String>,
    pub stop_timeout: Option<u64>,
    pub health: crate::health::HealthFlags,
    pub volumes: Vec<VolumeMount>,
    pub read_only: bool,
    pub init: bool,
    /// `-P`: publish every port the image EXPOSEs on a random host port.
    pub publish_all: bool,
}

/// One `-v /host/dir:/container/dir[:ro|:rw]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMount {
    pub source: std::path::PathBuf,
    pub target: String,
    pub readonly: bool,
}

impl VolumeMount {
    /// Parses docker's bind form; named volumes are not supported yet.
    pub fn parse(text: &str) -> Result<VolumeMount> {
        let bad = |why: &str| {
            RunError::InvalidArgument(format!(
                "invalid volume {text:?}: {why} (expected /HOST/PATH:/CONTAINER/PATH[:ro])"
            ))
        };
        let parts: Vec<&str> = text.split(':').collect();
        let (source, target, mode) = match parts.as_slice() {
            [s, t] => (*s, *t, "rw"),
            [s, t, m] => (*s, *t, *m),
            _ => return Err(bad("wrong number of ':'")),
        };
        if !source.starts_with('/') {
            return Err(bad(
                "kiln supports bind mounts of absolute host paths only (no named volumes yet)",
            ));
        }
        if !target.starts_with('/') {
            return Err(bad("the container path must be absolute"));
        }
        let readonly = match mode {
            "ro" => true,
            "rw" | "" => false,
            other => return Err(bad(&format!("unknown mode {other:?}"))),
        };
        Ok(VolumeMount {
            source: source.into(),
            target: target.to_string(),
            readonly,
        })
    }
}

/// Reads docker's `--env-file`: `KEY=VALUE` or `KEY` lines, `#` comments and
/// blank lines skipped, no quoting or expansion (as docker).
pub fn read_env_file(path: &std::path::Path) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).map_err(crate::io_err("reading the env file", path))?;
    Ok(text
        .lines()
        .map(|l| l.trim_start())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect())
}

impl RunOptions {
    pub fn new(image: impl Into<String>) -> RunOptions {
        RunOptions {
            image: image.into(),
            cmd: Vec::new(),
            entrypoint: None,
            env: Vec::new(),
            workdir: None,
            user: None,
            hostname: None,
            name: None,
            network: NetworkMode::Default,
            ports: Vec::new(),
            tty: false,
            interactive: false,
            auto_remove: false,
            stop_signal: None,
            stop_timeout: None,
            health: crate::health::HealthFlags::default(),
            volumes: Vec::new(),
            read_only: false,
            init: false,
            publish_all: false,
        }
    }
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn string(value: Option<&Value>) -> Option<String> {
    value
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Sets `KEY=VALUE` in `env`, replacing an earlier entry of the same key.
pub fn set_env(env: &mut Vec<String>, entry: String) {
    let key = entry.split('=').next().unwrap_or("").to_string();
    env.retain(|e| e.split('=').next() != Some(key.as_str()));
    env.push(entry);
}

/// Applies docker's `-e` semantics to `env`: `K=V` sets, `K` copies kiln's own
/// environment value if there is one (and is dropped otherwise).
pub fn apply_env_flags(env: &mut Vec<String>, flags: &[String]) -> Result<()> {
    for flag in flags {
        if flag.is_empty() || flag.starts_with('=') {
            return Err(RunError::InvalidArgument(format!(
                "invalid environment variable {flag:?}: expected KEY=VALUE or KEY"
            )));
        }
        if flag.contains('=') {
            set_env(env, flag.clone());
        } else if let Ok(value) = std::env::var(flag) {
            set_env(env, format!("{flag}={value}"));
        }
    }
    Ok(())
}

/// The container config docker would create from `image_config` (the image's
/// config JSON document) and the run flags.
pub fn container_config(
    id: &str,
    image_id: &str,
    image_manifest: &str,
    image_config: &Value,
    options: &RunOptions,
) -> Result<ContainerConfig> {
    let config = image_config.get("config").unwrap_or(&Value::Null);
    let (entrypoint, image_cmd) = match &options.entrypoint {
        // --entrypoint resets the image's Cmd too, as docker does.
        Some(e) if e.is_empty() => (Vec::new(), Vec::new()),
        Some(e) => (vec![e.clone()], Vec::new()),
        None => (
            strings(config.get("Entrypoint")),
            strings(config.get("Cmd")),
        ),
    };
    let cmd = if options.cmd.is_empty() {
        image_cmd
    } else {
        options.cmd.clone()
    };
    let argv: Vec<String> = entrypoint.iter().chain(&cmd).cloned().collect();
    if argv.is_empty() {
        return Err(RunError::InvalidArgument(format!(
            "no command specified: image {} has no Cmd or Entrypoint; give one after the image name",
            options.image
        )));
    }
    let mut env = strings(config.get("Env"));
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(
            0,
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        );
    }
    apply_env_flags(&mut env, &options.env)?;
    if options.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    let working_dir = options
        .workdir
        .clone()
        .or_else(|| string(config.get("WorkingDir")))
        .unwrap_or_else(|| "/".into());
    if !working_dir.starts_with('/') {
        return Err(RunError::InvalidArgument(format!(
            "the working directory {working_dir:?} is invalid: it needs to be an absolute path"
        )));
    }
    let hostname = match (&options.hostname, options.network) {
        (Some(h), _) => h.clone(),
        (None, NetworkMode::Host) => host_hostname(),
        (None, _) => ids::short_id(id).to_string(),
    };
    let (created, created_unix) = crate::container::timestamp();
    Ok(ContainerConfig {
        id: id.to_string(),
        name: options.name.clone().unwrap_or_default(),
        image: options.image.clone(),
        image_id: image_id.to_string(),
        image_manifest: image_manifest.to_string(),
        created,
        created_unix,
        argv,
        env,
        working_dir,
        user: options
            .user
            .clone()
            .or_else(|| string(config.get("User")))
            .unwrap_or_default(),
        hostname,
        network: options.network,
        ports: if options.network == NetworkMode::Default {
            let mut ports = options.ports.clone();
            if options.publish_all {
                for (exposed, proto) in exposed_ports(config) {
                    if !ports
                        .iter()
                        .any(|b| b.container_port == exposed && b.protocol == proto)
                        && let Ok(binding) = PortBinding::parse(&format!("{exposed}/{proto}"))
                    {
                        ports.push(binding);
                    }
                }
            }
            ports
        } else {
            Vec::new()
        },
        tty: options.tty,
        open_stdin: options.interactive,
        auto_remove: options.auto_remove,
        stop_signal: options
            .stop_signal
            .clone()
            .or_else(|| string(config.get("StopSignal")))
            .unwrap_or_else(|| "SIGTERM".into()),
        stop_timeout: options.stop_timeout.unwrap_or(10),
        health: crate::health::resolve(image_config, &options.health),
        volumes: options.volumes.clone(),
        read_only: options.read_only,
        init: options.init,
        entrypoint,
        cmd,
        exposed_ports: exposed_ports(config)
            .into_iter()
            .map(|(port, proto)| format!("{port}/{proto}"))
            .collect(),
    })
}

/// The image's `ExposedPorts` that kiln can publish (`"8080/tcp": {}`,
/// `"53/udp": {}` or `"8080": {}` for tcp), as (port, protocol), sorted.
fn exposed_ports(config: &Value) -> Vec<(u16, String)> {
    let mut ports: Vec<(u16, String)> = config
        .get("ExposedPorts")
        .and_then(Value::as_object)
        .map(|map| {
            map.keys()
                .filter_map(|key| {
                    let (port, proto) = key.split_once('/').unwrap_or((key, "tcp"));
                    let proto = proto.to_ascii_lowercase();
                    if proto != "tcp" && proto != "udp" {
                        return None;
                    }
                    Some((port.parse().ok()?, proto))
                })
                .collect()
        })
        .unwrap_or_default();
    ports.sort_unstable();
    ports
}

fn host_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn image() -> Value {
        json!({"config": {
            "Entrypoint": ["/bin/app"], "Cmd": ["--serve"],
            "Env": ["PATH=/bin", "A=1"], "WorkingDir": "/srv", "User": "app",
            "StopSignal": "SIGQUIT"
        }})
    }

    #[test]
    fn image_config_is_the_default() {
        let cfg =
            container_config(ID, "i", "m", &image(), &RunOptions::new("img")).expect("config");
        assert_eq!(cfg.argv, ["/bin/app", "--serve"]);
        assert_eq!(cfg.env, ["PATH=/bin", "A=1"]);
        assert_eq!(cfg.working_dir, "/srv");
        assert_eq!(cfg.user, "app");
        assert_eq!(cfg.stop_signal, "SIGQUIT");
        assert_eq!(cfg.hostname, "0123456789ab");
    }

    #[test]
    fn flags_override_as_docker() {
        let mut options = RunOptions::new("img");
        options.cmd = vec!["x".into()];
        options.env = vec!["A=2".into(), "B=3".into()];
        options.workdir = Some("/w".into());
        options.user = Some("1000".into());
        let cfg = container_config(ID, "i", "m", &image(), &options).expect("config");
        assert_eq!(cfg.argv, ["/bin/app", "x"], "CMD args keep the entrypoint");
        assert_eq!(cfg.env, ["PATH=/bin", "A=2", "B=3"]);
        assert_eq!(cfg.working_dir, "/w");
        assert_eq!(cfg.user, "1000");

        options.entrypoint = Some("sh".into());
        options.cmd = vec![];
        let cfg = container_config(ID, "i", "m", &image(), &options).expect("config");
        assert_eq!(cfg.argv, ["sh"], "--entrypoint drops the image Cmd");

        options.entrypoint = Some(String::new());
        let err = container_config(ID, "i", "m", &image(), &options);
        assert!(matches!(err, Err(RunError::InvalidArgument(_))));
    }

    #[test]
    fn publish_all_uses_exposed_tcp_and_udp_ports() {
        let image = json!({"config": {"Cmd": ["x"], "ExposedPorts": {"8080/tcp": {}, "53/udp": {}, "9000": {}}}});
        let mut options = RunOptions::new("img");
        options.publish_all = true;
        options.ports = vec![PortBinding::parse("1234:9000").expect("parse")];
        let cfg = container_config(ID, "i", "m", &image, &options).expect("config");
        let got: Vec<(u16, u16, &str)> = cfg
            .ports
            .iter()
            .map(|p| (p.host_port, p.container_port, p.protocol.as_str()))
            .collect();
        assert_eq!(got, [(1234, 9000, "tcp"), (0, 53, "udp"), (0, 8080, "tcp")]);
        assert_eq!(cfg.exposed_ports, ["53/udp", "8080/tcp", "9000/tcp"]);
    }

    #[test]
    fn volumes_and_env_files() {
        let v = VolumeMount::parse("/data:/srv/data:ro").expect("parse");
        assert_eq!(
            (v.source.to_str(), v.target.as_str(), v.readonly),
            (Some("/data"), "/srv/data", true)
        );
        assert!(!VolumeMount::parse("/a:/b").expect("parse").readonly);
        assert!(VolumeMount::parse("named:/b").is_err());
        assert!(VolumeMount::parse("/a:b").is_err());
        assert!(VolumeMount::parse("/a:/b:zz").is_err());
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = tmp.path().join("env");
        std::fs::write(&file, "# comment\nA=1\n\n  B=two words\nC\n").expect("write");
        assert_eq!(
            read_env_file(&file).expect("read"),
            ["A=1", "B=two words", "C"]
        );
    }

    #[test]
    fn empty_image_gets_default_path() {
        let mut options = RunOptions::new("img");
        options.cmd = vec!["true".into()];
        options.tty = true;
        let cfg = container_config(ID, "i", "m", &json!({}), &options).expect("config");
        assert!(cfg.env[0].starts_with("PATH=/usr/local/sbin"));
        assert!(cfg.env.contains(&"TERM=xterm".to_string()));
        assert_eq!(cfg.working_dir, "/");
    }
}
