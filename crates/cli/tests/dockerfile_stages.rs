//! `kiln dockerfile stages` driven as a user would: the real binary on
//! Dockerfiles, checking the table, JSON and dot outputs, `--target`,
//! `--build-arg`, and that errors go to stderr with a location and a
//! non-zero exit.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn kiln(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run kiln")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

const MULTI: &str = "\
ARG GO=1.22
FROM golang:${GO} AS build
RUN go build -o /app .
FROM build AS test
RUN --mount=type=cache,target=/root/.cache go test ./...
FROM scratch AS prod
COPY --from=build /app /app
COPY --from=nginx:alpine /etc/nginx /etc/nginx
";

#[test]
fn text_table_marks_what_the_target_needs() {
    let tmp = temp_dir();
    let dir = tmp.path();
    std::fs::write(dir.join("Dockerfile"), MULTI).unwrap();
    let out = kiln(&["dockerfile", "stages"], dir);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("#  NAME"), "{text}");
    assert!(
        lines[1].starts_with("0  build  image golang:1.22"),
        "{text}"
    );
    assert!(lines[1].ends_with('*'), "build is needed by prod: {text}");
    assert!(lines[2].starts_with("1  test   stage build"), "{text}");
    assert!(
        !lines[2].ends_with('*'),
        "test is not needed by prod: {text}"
    );
    assert!(
        lines[3].contains("scratch")
            && lines[3].contains("build (COPY --from), image nginx:alpine (COPY --from)"),
        "{text}"
    );
    assert!(
        lines[4].ends_with("target prod needs 2 of 3 stages: build, prod"),
        "{text}"
    );

    let out = kiln(
        &[
            "dockerfile",
            "stages",
            "-f",
            "Dockerfile",
            "--target",
            "TEST",
            "--build-arg",
            "GO=1.23",
        ],
        dir,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("image golang:1.23"), "{text}");
    assert!(
        text.contains("target test needs 2 of 3 stages: build, test"),
        "{text}"
    );
}

#[test]
fn json_and_dot_outputs() {
    let tmp = temp_dir();
    let dir = tmp.path();
    std::fs::write(dir.join("Dockerfile"), MULTI).unwrap();
    let out = kiln(
        &[
            "dockerfile",
            "stages",
            "Dockerfile",
            "--format",
            "json",
            "--target",
            "test",
        ],
        dir,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("valid JSON");
    assert_eq!(json["target"]["name"], "test");
    assert_eq!(json["needed"], serde_json::json!([0, 1]));
    assert_eq!(json["stages"][1]["base"]["stage"], 0);
    assert_eq!(json["stages"][1]["dependencies"][0]["kind"], "FROM");
    assert_eq!(json["stages"][2]["base"]["scratch"], true);
    assert_eq!(
        json["stages"][2]["dependencies"][1]["image"],
        "nginx:alpine"
    );
    assert_eq!(json["stages"][2]["needed"], false);

    let out = kiln(
        &["dockerfile", "stages", "Dockerfile", "--format", "dot"],
        dir,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let dot = stdout(&out);
    assert!(dot.starts_with("digraph stages {"), "{dot}");
    assert!(dot.contains("s0 -> s1 [label=\"FROM\"];"), "{dot}");
    assert!(dot.contains("s0 -> s2 [label=\"COPY --from\"];"), "{dot}");
    assert!(dot.contains("\"image:nginx:alpine\" -> s2"), "{dot}");
    assert!(dot.trim_end().ends_with('}'), "{dot}");
}

#[test]
fn errors_have_locations_and_fail() {
    let tmp = temp_dir();
    let dir = tmp.path();
    std::fs::write(dir.join("Dockerfile"), MULTI).unwrap();
    let out = kiln(&["dockerfile", "stages", "--target", "prd"], dir);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("target stage \"prd\" could not be found"),
        "{err}"
    );
    assert!(err.contains("did you mean prod?"), "{err}");

    std::fs::write(
        dir.join("Bad.Dockerfile"),
        "FROM a AS x\nFROM b AS X\nCOPY --from=9 a /a\n",
    )
    .unwrap();
    let out = kiln(&["dockerfile", "stages", "Bad.Dockerfile"], dir);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(
            "error[DuplicateStageName]: Duplicate stage name \"x\", stage names should be unique"
        ),
        "{err}"
    );
    assert!(err.contains("Bad.Dockerfile:2:11"), "{err}");
    assert!(err.contains("^ already used"), "{err}");
    assert!(stdout(&out).is_empty());
}

#[test]
fn seed_dockerfiles() {
    // The tutorials' multi-target example (seed 003).
    let seeds = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../dockerfile/tests/seeds");
    let out = kiln(
        &[
            "dockerfile",
            "stages",
            "003_bd9c9442b771737f-10.Dockerfile",
            "--target",
            "development",
        ],
        &seeds,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("target development needs 2 of 4 stages: base, development"),
        "{text}"
    );
}
