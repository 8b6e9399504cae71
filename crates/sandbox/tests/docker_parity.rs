//! Differential test against the real thing: the same probe script as a RUN
//! step under docker BuildKit (`busybox:local`, see shared/tools/docker-oracle.sh)
//! and in kiln's sandbox; what the process sees must match: capabilities,
//! no_new_privs, seccomp mode, mount points and their options, /dev contents,
//! identity, umask, HOME. Only the cgroup mounts (kiln does not mount cgroups yet)
//! are left out.

mod common;

use common::{Fixture, environment_ready, sh_ok};
use kiln_sandbox::InjectedFile;

const PROBE: &str = r#"grep -E '^(Cap|NoNewPrivs|Seccomp:)' /proc/self/status; awk '$5 !~ "^/sys/fs/cgroup" {print $5, $6}' /proc/self/mountinfo | sort; ls -l /dev | awk 'NR > 1 {print $1, $NF}'; id; umask; echo "HOME=$HOME"; hostname"#;

fn docker_ready() -> bool {
    let ok = std::process::Command::new("/usr/bin/docker")
        .args(["image", "inspect", "busybox:local"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok {
        return true;
    }
    let message =
        "docker engine with busybox:local not available (run shared/tools/docker-oracle.sh)";
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{message}");
    }
    eprintln!("skipping: {message}");
    false
}

/// Runs PROBE as a BuildKit RUN step and returns its output lines.
fn buildkit_output(user: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let script = PROBE.replace('\\', "\\\\");
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!("FROM busybox:local\nUSER {user}\nRUN {script}\n"),
    )
    .unwrap();
    let out = std::process::Command::new("/usr/bin/docker")
        .env("DOCKER_BUILDKIT", "1")
        .args(["build", "--no-cache", "--progress=plain", "."])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let log =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "docker build failed:\n{log}");
    // RUN output lines look like "#5 0.176 text".
    let mut lines = Vec::new();
    for line in log.lines() {
        let mut parts = line.splitn(3, ' ');
        let (Some(step), Some(time), Some(text)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if step.starts_with('#') && time.parse::<f64>().is_ok() {
            lines.push(text.to_string());
        }
    }
    lines.join("\n") + "\n"
}

fn compare(user: &str) {
    let expected = buildkit_output(user);
    let fx = Fixture::busybox();
    let mut spec = fx.spec(PROBE);
    spec.user = user.into();
    spec.hostname = "buildkitsandbox".into();
    for target in ["/etc/hosts", "/etc/resolv.conf"] {
        spec.files.push(InjectedFile {
            target: target.into(),
            contents: b"# generated\n".to_vec(),
            mode: 0o644,
            readonly: true,
        });
    }
    let actual = sh_ok(&spec);
    let expected_lines: Vec<&str> = expected.lines().collect();
    let actual_lines: Vec<&str> = actual.lines().collect();
    assert_eq!(
        actual_lines, expected_lines,
        "USER {user}: kiln sandbox (left) vs BuildKit RUN (right)"
    );
}

#[test]
fn run_step_environment_matches_buildkit() {
    if !environment_ready() || !docker_ready() {
        return;
    }
    compare("root");
    // A uid listed in neither image: HOME falls back to "/" in both.
    compare("4242:4242");
}

/// The file lists of the layers BuildKit made for `steps` (one RUN each) on
/// busybox:local.
fn buildkit_layers(steps: &[&str]) -> Vec<Vec<String>> {
    let dir = tempfile::tempdir().unwrap();
    let mut dockerfile = String::from("FROM busybox:local\n");
    for step in steps {
        dockerfile.push_str(&format!("RUN {step}\n"));
    }
    std::fs::write(dir.path().join("Dockerfile"), dockerfile).unwrap();
    let tag = format!("kiln-sandbox-parity:{}", std::process::id());
    let docker = |args: &[&str]| {
        let out = std::process::Command::new("/usr/bin/docker")
            .env("DOCKER_BUILDKIT", "1")
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    docker(&["build", "-q", "--no-cache", "-t", &tag, "."]);
    let saved = dir.path().join("image");
    std::fs::create_dir_all(&saved).unwrap();
    let tar = docker(&["save", &tag]);
    docker(&["rmi", &tag]);
    let mut archive = std::process::Command::new("tar")
        .args(["-x", "-C"])
        .arg(&saved)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(archive.stdin.as_mut().unwrap(), &tar).unwrap();
    drop(archive.stdin.take());
    assert!(archive.wait().unwrap().success());
    let manifest = std::fs::read_to_string(saved.join("manifest.json")).unwrap();
    // "Layers":["<id>/layer.tar",...] without a JSON dependency.
    let layers_part = manifest
        .split("\"Layers\":[")
        .nth(1)
        .unwrap()
        .split(']')
        .next()
        .unwrap();
    let layers: Vec<&str> = layers_part
        .split(',')
        .map(|l| l.trim_matches('"'))
        .collect();
    layers
        .iter()
        .skip(1) // the base image
        .map(|layer| {
            let out = std::process::Command::new("tar")
                .arg("-tf")
                .arg(saved.join(layer))
                .output()
                .unwrap();
            let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|l| l.trim_start_matches("./").to_string())
                .filter(|l| !l.is_empty())
                .collect();
            names.sort();
            names
        })
        .collect()
}

#[test]
fn upper_dirs_hold_the_same_changes_as_buildkit_layers() {
    if !environment_ready() || !docker_ready() {
        return;
    }
    let steps = [
        "true",
        "echo x > /newfile && rm /etc/group && mkdir -p /a/b && echo 2>/dev/null",
    ];
    let expected = buildkit_layers(&steps);
    let mut fx = Fixture::docker_oracle_like();
    let mut actual = Vec::new();
    for (index, step) in steps.iter().enumerate() {
        let mut spec = fx.spec(step);
        spec.hostname = "buildkitsandbox".into();
        for target in ["/etc/hosts", "/etc/resolv.conf"] {
            spec.files.push(InjectedFile {
                target: target.into(),
                contents: b"# generated\n".to_vec(),
                mode: 0o644,
                readonly: true,
            });
        }
        sh_ok(&spec);
        actual.push(fx.upper_as_layer_listing());
        fx.commit_layer(&format!("layer-{}", index + 1));
    }
    assert_eq!(
        actual, expected,
        "kiln upper dirs (left) vs BuildKit layers (right)"
    );
}
