//! Differential test against the real Docker engine (BuildKit): the same
//! Dockerfiles and `--build-arg`s go through `docker build` and through
//! kiln's typed model + [`Command::expand`], replayed here with BuildKit's
//! environment rules (ARG values from `--build-arg` or the default, ENV
//! accumulating, meta ARGs only in FROM). The image configs must agree on
//! Env, Labels, WorkingDir, User, Volumes, ExposedPorts, StopSignal and Cmd.
//!
//! Needs `/usr/bin/docker` with BuildKit and the `busybox:local` image
//! (`scripts/setup.sh` starts both). Missing: fails under `CI=true`, else
//! skips with a message. The engine here is Docker 20.10, whose BuildKit
//! predates `${A-x}`, `${A#p}`, `${A/p/r}` and heredocs, so the cases stick
//! to what it supports; those forms are covered by BuildKit's own vectors in
//! `conformance_shell.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command as Process;

use kiln_dockerfile::instructions::{Command, CommandLine, exposed_ports};
use kiln_dockerfile::stages::{Base, StageScope, Stages};
use serde_json::Value;

const DOCKER: &str = "/usr/bin/docker";
const BASE_IMAGE: &str = "busybox:local";

fn docker_available() -> bool {
    let ok = Process::new(DOCKER)
        .args(["image", "inspect", BASE_IMAGE])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "{DOCKER} with image {BASE_IMAGE} is required (run scripts/setup.sh, which starts the reference engine)"
        );
    }
    eprintln!("skipping: {DOCKER} or image {BASE_IMAGE} not available (run scripts/setup.sh)");
    false
}

/// The parts of an image config this test compares.
#[derive(Debug, Default, PartialEq, Eq)]
struct Config {
    env: Vec<String>,
    labels: BTreeMap<String, String>,
    working_dir: String,
    user: String,
    volumes: BTreeSet<String>,
    exposed_ports: BTreeSet<String>,
    stop_signal: String,
    cmd: Vec<String>,
}

fn docker_config(dockerfile: &str, build_args: &[(&str, &str)]) -> Config {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("Dockerfile"), dockerfile).expect("write Dockerfile");
    let mut build = Process::new(DOCKER);
    build.env("DOCKER_BUILDKIT", "1").args(["build", "-q"]);
    for (key, value) in build_args {
        build.args(["--build-arg", &format!("{key}={value}")]);
    }
    let output = build.arg(dir.path()).output().expect("run docker build");
    assert!(
        output.status.success(),
        "docker build failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let id = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let config = inspect_config(&id);
    // Remove the test's image, never the shared base image.
    if id != inspect_id(BASE_IMAGE) {
        let _ = Process::new(DOCKER).args(["image", "rm", &id]).output();
    }
    config
}

fn inspect_id(image: &str) -> String {
    let output = Process::new(DOCKER)
        .args(["image", "inspect", "--format", "{{.Id}}", image])
        .output();
    output
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn inspect_config(image: &str) -> Config {
    let inspect = Process::new(DOCKER)
        .args(["image", "inspect", image])
        .output()
        .expect("docker inspect");
    assert!(
        inspect.status.success(),
        "docker image inspect {image}: {}",
        String::from_utf8_lossy(&inspect.stderr)
    );
    let json: Value = serde_json::from_slice(&inspect.stdout).expect("inspect JSON");
    let config = &json[0]["Config"];
    let strings = |value: &Value| -> Vec<String> {
        value
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let keys = |value: &Value| -> BTreeSet<String> {
        value
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    };
    Config {
        env: strings(&config["Env"]),
        labels: config["Labels"]
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                    .collect()
            })
            .unwrap_or_default(),
        working_dir: config["WorkingDir"].as_str().unwrap_or("").to_string(),
        user: config["User"].as_str().unwrap_or("").to_string(),
        volumes: keys(&config["Volumes"]),
        exposed_ports: keys(&config["ExposedPorts"]),
        stop_signal: config["StopSignal"].as_str().unwrap_or("").to_string(),
        cmd: strings(&config["Cmd"]),
    }
}

/// Replays the last stage the way BuildKit dispatches it, using kiln's model.
fn kiln_config(
    dockerfile: &str,
    build_args: &[(&str, &str)],
    base_env: &[String],
    base_cmd: &[String],
) -> Config {
    let ast = kiln_dockerfile::parse(dockerfile).expect("parse");
    let stages = Stages::from_dockerfile(&ast).expect("typed model");
    let args: Vec<(String, String)> = build_args
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let graph = stages.resolve(&args).expect("stage graph");
    let stage = stages.stages.last().expect("a stage");
    let node = graph.stages.last().expect("a node");
    assert_eq!(
        node.base,
        Base::Image(BASE_IMAGE.into()),
        "FROM expanded with the meta ARGs"
    );
    let lexer = stages.lexer();
    let mut config = Config {
        env: base_env.to_vec(),
        cmd: base_cmd.to_vec(),
        working_dir: String::new(),
        ..Config::default()
    };
    let base_pairs: Vec<(String, String)> = base_env
        .iter()
        .filter_map(|e| e.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut scope = StageScope::new(&graph.meta_env, &args, &base_pairs);
    for command in &stage.commands {
        let expanded = scope.dispatch(&lexer, command).expect("expand").command;
        config.env = scope
            .image_env()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        match expanded {
            Command::Label { pairs, .. } => {
                for pair in pairs {
                    config.labels.insert(pair.key.value, pair.value.value);
                }
            }
            Command::Workdir { path, .. } => {
                config.working_dir = if path.value.starts_with('/') {
                    path.value
                } else {
                    format!(
                        "{}/{}",
                        config.working_dir.trim_end_matches('/'),
                        path.value
                    )
                };
            }
            Command::User { user, .. } => config.user = user.value,
            Command::Volume { paths, .. } => {
                config.volumes.extend(paths.into_iter().map(|p| p.value))
            }
            Command::Expose { ports, .. } => {
                for port in ports {
                    config
                        .exposed_ports
                        .extend(exposed_ports(&port.value).expect("valid port"));
                }
            }
            Command::Stopsignal { signal, .. } => config.stop_signal = signal.value,
            Command::Cmd(cmd) => {
                config.cmd = match cmd.command {
                    CommandLine::Exec(words) => words.into_iter().map(|w| w.value).collect(),
                    CommandLine::Shell(text) => vec!["/bin/sh".into(), "-c".into(), text.value],
                };
            }
            _ => {}
        }
    }
    config
}

fn check(dockerfile: &str, build_args: &[(&str, &str)]) {
    let base = inspect_config(BASE_IMAGE);
    let expected = docker_config(dockerfile, build_args);
    let actual = kiln_config(dockerfile, build_args, &base.env, &base.cmd);
    assert_eq!(
        actual, expected,
        "kiln (left) and BuildKit (right) differ for:\n{dockerfile}"
    );
}

#[test]
fn quotes_escapes_env_and_label_forms() {
    if !docker_available() {
        return;
    }
    check(
        concat!(
            "FROM busybox:local\n",
            "ARG A=hello B=\"two words\" C\n",
            "ENV X=\"$A world\" Y='$A single' Z=a\\ b\\$c\n",
            "ENV LEGACY this is $A legacy\n",
            "ENV E1=${C:-dflt} E2=${A:+set} E4=\"${B}\" E5=pre${A}post E6=${C:+never}\n",
            "LABEL \"com.x.y\"=\"v $A\" l2=${B} l3=\"a\\\"b\" l4='q\"q'\n",
            "ENV KOREAN=한국어 ESC=\"a\\\\b\" Q=\"it's\" DOLLAR='$' MIX=\"$A\"'$A'$A\n",
            "ENV X=\"replaced $X\"\n",
        ),
        &[],
    );
}

#[test]
fn build_args_meta_args_and_path_like_instructions() {
    if !docker_available() {
        return;
    }
    check(
        concat!(
            "ARG BASE=busybox TAG=local V=meta\n",
            "FROM ${BASE}:${TAG}\n",
            "ARG V\n",
            "ARG W=w-default\n",
            "ENV FROM_META=$V W=$W\n",
            "WORKDIR /w/$W\n",
            "WORKDIR sub${NOPE:-x}\n",
            "ENV PORTS=\"80 443/udp\"\n",
            "EXPOSE $PORTS 8000-8002/tcp\n",
            "USER ${W}:1000\n",
            "VOLUME [\"/data/$W\", \"/v2\"]\n",
            "VOLUME /v3 /v4$W\n",
            "STOPSIGNAL SIG${W:+TERM}\n",
            "CMD echo $W \"$HOME\"\n",
        ),
        &[("V", "from-cli"), ("W", "cli")],
    );
}

#[test]
fn backtick_escape_directive() {
    if !docker_available() {
        return;
    }
    check(
        concat!(
            "# escape=`\n",
            "FROM busybox:local\n",
            "ARG P=x\n",
            "ENV WIN=C:\\dir\\$P TICK=a`$P BS=\"a\\$P\"\n",
            "WORKDIR /a`$P/\n",
            "CMD [\"$P\"]\n",
        ),
        &[],
    );
}

#[test]
fn arg_scoping_meta_defaults_and_env_precedence() {
    if !docker_available() {
        return;
    }
    check(
        concat!(
            "ARG V=meta-default ONLY_META=m\n",
            "FROM busybox:local\n",
            "ARG V\n",
            "ARG TARGETARCH\n",
            "ARG NOVALUE\n",
            "ARG X=from-arg\n",
            "ENV X=from-env\n",
            "ENV GOT_V=$V ARCH=$TARGETARCH NV=${NOVALUE:-unset} XV=$X META=${ONLY_META:-not-in-scope}\n",
            "ARG X=arg-again\n",
            "ENV X2=$X\n",
        ),
        &[],
    );
}
