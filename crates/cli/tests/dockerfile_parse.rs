//! End-to-end tests of `kiln dockerfile parse`: the real binary on real
//! files, standard input, and broken input.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn kiln() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
}

fn temp_dockerfile(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-parse-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("Dockerfile");
    std::fs::write(&path, text).expect("write Dockerfile");
    path
}

#[test]
fn dump_prints_buildkit_s_expressions() {
    let path = temp_dockerfile(
        "dump",
        "FROM busybox AS b\nCOPY --from=b /a /b\nHEALTHCHECK CMD [\"true\"]\n",
    );
    let output = kiln()
        .args(["dockerfile", "parse", "--dump"])
        .arg(&path)
        .output()
        .expect("run kiln");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "(from \"busybox\" \"AS\" \"b\")\n(copy [\"--from=b\"] \"/a\" \"/b\")\n(healthcheck \"CMD\" \"true\")\n"
    );
}

#[test]
fn default_file_is_dockerfile_in_the_current_directory() {
    let path = temp_dockerfile("default", "FROM scratch\n");
    let output = kiln()
        .args(["dockerfile", "parse", "--dump"])
        .current_dir(path.parent().expect("dir"))
        .output()
        .expect("run kiln");
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "(from \"scratch\")\n"
    );
}

#[test]
fn reads_standard_input_and_prints_json_with_spans() {
    let mut child = kiln()
        .args(["dockerfile", "parse", "-f", "-", "--format", "json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run kiln");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"FROM a\nRUN echo \\\n  hi\n")
        .expect("write stdin");
    let output = child.wait_with_output().expect("wait");
    assert!(output.status.success());
    let tree: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let run = &tree["instructions"][1];
    assert_eq!(run["name"], "run");
    assert_eq!(run["args"]["form"], "shell");
    assert_eq!(run["args"]["value"]["value"], "echo   hi");
    assert_eq!(run["span"]["start"]["line"], 2);
    assert_eq!(run["span"]["end"]["line"], 3);
}

#[test]
fn invalid_input_prints_a_located_error_and_fails() {
    let path = temp_dockerfile("invalid", "FROM a\nENV PATH\n");
    let output = kiln()
        .args(["dockerfile", "parse"])
        .arg(&path)
        .output()
        .expect("run kiln");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("ENV must have two arguments"), "{stderr}");
    assert!(
        stderr.contains(&format!("{}:2:5", path.display())),
        "{stderr}"
    );
    assert!(stderr.contains("^^^^"), "{stderr}");
    assert!(output.stdout.is_empty());
}

#[test]
fn unknown_instruction_fails_with_a_suggestion() {
    let path = temp_dockerfile("unknown", "FROM a\nCOPPY a b\n");
    let output = kiln()
        .args(["dockerfile", "parse", "--dump"])
        .arg(&path)
        .output()
        .expect("run kiln");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown instruction: COPPY"), "{stderr}");
    assert!(stderr.contains("did you mean COPY?"), "{stderr}");
}

#[test]
fn missing_file_is_a_clear_error() {
    let output = kiln()
        .args(["dockerfile", "parse", "/nonexistent/Dockerfile"])
        .output()
        .expect("run kiln");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot read /nonexistent/Dockerfile"),
        "{stderr}"
    );
}
