//! BuildKit's parser conformance vectors: every `parser/testfiles/*/Dockerfile`
//! must dump exactly as its `result`, every `parser/testfiles-negative/*`
//! must be rejected.
//!
//! The vectors live in `$KILN_CONFORMANCE_DIR` (default
//! `<repo>/../shared/conformance/buildkit`). When they are missing the test
//! fails under `CI=true` and is skipped with a message otherwise.

use std::path::PathBuf;

fn conformance_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("KILN_CONFORMANCE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance/buildkit")
        }
    };
    if dir.join("parser").is_dir() {
        return Some(dir);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "conformance vectors not found at {} (set KILN_CONFORMANCE_DIR)",
            dir.display()
        );
    }
    eprintln!(
        "skipping: conformance vectors not found at {} (set KILN_CONFORMANCE_DIR)",
        dir.display()
    );
    None
}

fn subdirs(dir: PathBuf) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.is_dir())
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn every_testfile_dumps_exactly_its_result() {
    let Some(dir) = conformance_dir() else { return };
    let cases = subdirs(dir.join("parser/testfiles"));
    assert_eq!(cases.len(), 33, "expected BuildKit's 33 parser testfiles");
    let mut failures = Vec::new();
    for case in &cases {
        let source = std::fs::read_to_string(case.join("Dockerfile")).expect("Dockerfile");
        let expected = std::fs::read_to_string(case.join("result")).expect("result");
        match kiln_dockerfile::parse(&source) {
            Ok(file) => {
                let actual = kiln_dockerfile::dump(&file);
                if actual != expected {
                    failures.push(format!(
                        "{}:\n--- expected\n{expected}--- actual\n{actual}",
                        case.display()
                    ));
                }
            }
            Err(error) => failures.push(format!("{}: rejected: {error}", case.display())),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn every_negative_testfile_is_rejected() {
    let Some(dir) = conformance_dir() else { return };
    let cases = subdirs(dir.join("parser/testfiles-negative"));
    assert_eq!(
        cases.len(),
        4,
        "expected BuildKit's 4 negative parser testfiles"
    );
    for case in &cases {
        let source = std::fs::read_to_string(case.join("Dockerfile")).expect("Dockerfile");
        let result = kiln_dockerfile::parse(&source);
        assert!(
            result.is_err(),
            "{} was accepted: {result:?}",
            case.display()
        );
    }
}
