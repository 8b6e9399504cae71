//! `kiln check` and `kiln build --check`: BuildKit's build checks without a
//! build, as `docker build --check` (rule, link, lines; exit 1 when any),
//! the `# check=skip=` directive; and the top-level `kiln prune`.

mod image_common;

use std::io::Write;
use std::process::Stdio;

use image_common::*;

const LINTED: &str = "FROM busybox:local as Builder\nRUN echo hi\nCMD echo hello\nFROM scratch\nCOPY --from=Builder /bin/sh /sh\n";

#[test]
fn check_reports_rules_with_links_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Dockerfile"), LINTED).unwrap();
    let store = dir.path().join("store");
    let out = kiln(&store)
        .args(["check", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    for (rule, page) in [
        ("FromAsCasing", "from-as-casing"),
        ("StageNameCasing", "stage-name-casing"),
        ("JSONArgsRecommended", "json-args-recommended"),
    ] {
        assert!(
            text.contains(&format!(
                "{rule} - https://docs.docker.com/go/dockerfile/rule/{page}/"
            )),
            "{rule}: {text}"
        );
    }
    assert!(text.contains("Dockerfile:3:1"), "the line is shown: {text}");
    assert!(
        text.contains("Check complete, 3 warnings have been found!"),
        "{text}"
    );

    // The directive skips rules, or all of them.
    let skipped = format!("# check=skip=FromAsCasing,StageNameCasing;error=true\n{LINTED}");
    std::fs::write(dir.path().join("Skipped"), skipped).unwrap();
    let out = kiln(&store)
        .args(["check", "-f", dir.path().join("Skipped").to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("JSONArgsRecommended") && !text.contains("FromAsCasing"),
        "{text}"
    );
    assert!(text.contains("1 warning has been found!"), "{text}");
    std::fs::write(
        dir.path().join("All"),
        format!("# check=skip=all\n{LINTED}"),
    )
    .unwrap();
    let out = kiln(&store)
        .args(["check", "-f", dir.path().join("All").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("no warnings found"));
}

#[test]
fn build_check_reads_the_dockerfile_as_build_does() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut child = kiln(&store)
        .args(["build", "--check", "-f", "-", dir.path().to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"FROM scratch AS base\nCOPY a /a\nCMD [\"/a\"]\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("Check complete, no warnings found."));
    // A syntax error is an error, with its location.
    std::fs::write(dir.path().join("Dockerfile"), "FRUM scratch\n").unwrap();
    let out = kiln(&store)
        .args(["check", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("FROM"));
}

#[test]
fn top_level_prune_is_system_prune() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let out = kiln_ok(&store, &["prune", "-f"]);
    assert!(out.contains("Total reclaimed space"), "{out}");
}

#[test]
fn builds_report_violations_and_fail_on_them_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    std::fs::write(dir.path().join("a"), "a\n").unwrap();
    let ctx = dir.path().to_str().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        "FROM scratch as base\nCOPY a /a\n",
    )
    .unwrap();
    // As docker: the build succeeds and lists the violations at the end.
    let out = kiln(&store)
        .args(["build", "-t", "warned", ctx])
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("1 warning found")
            && err.contains("- FromAsCasing:")
            && err.contains("(line 1)"),
        "{err}"
    );
    // `# check=error=true`: the build fails before it starts.
    std::fs::write(
        dir.path().join("Dockerfile"),
        "# check=error=true\nFROM scratch as base\nCOPY a /b\n",
    )
    .unwrap();
    let out = kiln(&store)
        .args(["build", "-t", "failed", ctx])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("lint violation found for rules: FromAsCasing"),
        "{err}"
    );
    assert!(!kiln_ok(&store, &["images"]).contains("failed"));
    // The build argument takes the directive's place.
    kiln_ok(
        &store,
        &[
            "build",
            "-q",
            "-t",
            "failed",
            "--build-arg",
            "BUILDKIT_DOCKERFILE_CHECK=skip=FromAsCasing;error=true",
            ctx,
        ],
    );
}
