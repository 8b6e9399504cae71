//! The Dockerfiles of the tutorials kiln grew from (`../shared/seeds`) all
//! parse and pass the name/flag checks.
//!
//! The seeds are prose with fenced code blocks; every block whose info
//! string is `dockerfile` (any case) is a Dockerfile. They are committed as
//! fixtures under `tests/seeds/NAME-NN.Dockerfile` so the parse test runs
//! everywhere; a second test checks that the fixtures are still exactly what
//! the seeds contain (regenerate with
//! `KILN_UPDATE_SEED_FIXTURES=1 cargo test -p kiln-dockerfile --test seeds fixtures`).

use std::path::{Path, PathBuf};

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/seeds")
}

fn seeds_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("KILN_SEEDS_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/seeds"),
    };
    if dir.is_dir() {
        return Some(dir);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "seed documents not found at {} (set KILN_SEEDS_DIR)",
            dir.display()
        );
    }
    eprintln!(
        "skipping: seed documents not found at {} (set KILN_SEEDS_DIR)",
        dir.display()
    );
    None
}

/// The contents of the ```dockerfile fenced blocks of a document (other
/// blocks are skipped whole, so their closing fences are not openings).
fn extract(document: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut in_other = false;
    let mut current: Option<String> = None;
    for line in document.lines() {
        let trimmed = line.trim();
        if let Some(block) = current.as_mut() {
            if trimmed == "```" {
                blocks.push(std::mem::take(block));
                current = None;
            } else {
                block.push_str(line);
                block.push('\n');
            }
            continue;
        }
        if in_other {
            if trimmed == "```" {
                in_other = false;
            }
            continue;
        }
        if let Some(info) = trimmed.strip_prefix("```") {
            if info.trim().eq_ignore_ascii_case("dockerfile") {
                current = Some(String::new());
            } else {
                in_other = true;
            }
        }
    }
    blocks
}

fn expected_fixtures(seeds: &Path) -> Vec<(String, String)> {
    let mut documents: Vec<PathBuf> = std::fs::read_dir(seeds)
        .expect("read seeds dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_file())
        .collect();
    documents.sort();
    let mut fixtures = Vec::new();
    for document in documents {
        let text = std::fs::read_to_string(&document).expect("seed is UTF-8");
        let stem = document
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("seed name")
            .to_owned();
        for (index, block) in extract(&text).into_iter().enumerate() {
            fixtures.push((format!("{stem}-{:02}.Dockerfile", index + 1), block));
        }
    }
    fixtures
}

fn committed_fixtures() -> Vec<(String, String)> {
    let mut fixtures: Vec<(String, String)> = std::fs::read_dir(fixtures_dir())
        .expect("tests/seeds exists")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "Dockerfile"))
        .map(|p| {
            let name = p
                .file_name()
                .and_then(|n| n.to_str())
                .expect("name")
                .to_owned();
            (name, std::fs::read_to_string(&p).expect("fixture is UTF-8"))
        })
        .collect();
    fixtures.sort();
    fixtures
}

#[test]
fn fixtures_are_the_dockerfiles_of_the_seeds() {
    let Some(seeds) = seeds_dir() else { return };
    let expected = expected_fixtures(&seeds);
    assert!(
        expected.len() >= 20,
        "only {} Dockerfile blocks found in the seeds",
        expected.len()
    );
    if std::env::var_os("KILN_UPDATE_SEED_FIXTURES").is_some() {
        std::fs::create_dir_all(fixtures_dir()).expect("create tests/seeds");
        for (name, text) in &expected {
            std::fs::write(fixtures_dir().join(name), text).expect("write fixture");
        }
    }
    let committed = committed_fixtures();
    assert_eq!(
        committed
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>(),
        expected.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        "tests/seeds is out of date: run with KILN_UPDATE_SEED_FIXTURES=1"
    );
    assert_eq!(
        committed, expected,
        "tests/seeds is out of date: run with KILN_UPDATE_SEED_FIXTURES=1"
    );
}

#[test]
fn every_seed_dockerfile_parses_without_errors() {
    let fixtures = committed_fixtures();
    assert!(
        fixtures.len() >= 20,
        "only {} seed fixtures",
        fixtures.len()
    );
    for (name, text) in &fixtures {
        let file = kiln_dockerfile::parse(text).unwrap_or_else(|error| {
            panic!("{name}:\n{}", error.to_diagnostic().render(name, text))
        });
        let problems = kiln_dockerfile::validate(&file);
        assert!(
            problems.is_empty(),
            "{name}:\n{}",
            problems
                .iter()
                .map(|p| p.render(name, text))
                .collect::<String>()
        );
        assert!(
            file.instructions.iter().any(|i| i.keyword.is_some()),
            "{name} has no instructions"
        );
    }
}
