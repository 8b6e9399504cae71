//! BuildKit's own word-expansion vectors (`shell/envVarTest`, `shell/wordsTest`)
//! run against [`kiln_dockerfile::shell::Lexer`], plus property tests.
//!
//! The vectors live in `$KILN_CONFORMANCE_DIR` (default
//! `<repo>/../shared/conformance/buildkit`). When they are missing the tests
//! fail under `CI=true` and are skipped with a message otherwise.

use std::path::PathBuf;

use kiln_dockerfile::shell::{Lexer, env_pairs_from_strings};
use proptest::prelude::*;

fn conformance_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("KILN_CONFORMANCE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance/buildkit")
        }
    };
    if dir.join("shell").is_dir() {
        return Some(dir);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "conformance data missing at {} (set KILN_CONFORMANCE_DIR to BuildKit's test vectors)",
            dir.display()
        );
    }
    eprintln!(
        "skipping: conformance data not found at {} (set KILN_CONFORMANCE_DIR)",
        dir.display()
    );
    None
}

#[test]
fn env_var_test_vectors() {
    let Some(dir) = conformance_dir() else { return };
    let text = std::fs::read_to_string(dir.join("shell/envVarTest")).expect("read envVarTest");
    let env = env_pairs_from_strings(["PWD=/home", "SHELL=bash", "KOREAN=한국어", "NULL="]);
    let lexer = Lexer::new('\\');
    let (mut expected_cases, mut passed) = (0usize, 0usize);
    let mut failures = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.trim().split('|').collect();
        assert_eq!(
            fields.len(),
            3,
            "line {}: expected P|input|expected",
            index + 1
        );
        let (platform, input, expected) = (fields[0].trim(), fields[1].trim(), fields[2].trim());
        if platform == "W" {
            continue;
        }
        assert!(
            platform == "A" || platform == "U",
            "line {}: bad platform {platform}",
            index + 1
        );
        expected_cases += 1;
        let got = lexer.process_word(input, &env);
        let ok = match (&got, expected) {
            (Err(_), "error") => true,
            (Ok(word), expected) => expected != "error" && word == expected,
            (Err(_), _) => false,
        };
        if ok {
            passed += 1;
        } else {
            failures.push(format!(
                "line {}: {input:?} expected {expected:?}, got {got:?}",
                index + 1
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Count check: a loop that silently ran over nothing must not pass.
    assert_eq!(expected_cases, 228, "number of A and U lines in envVarTest");
    assert_eq!(passed, expected_cases);
}

#[test]
fn words_test_vectors() {
    let Some(dir) = conformance_dir() else { return };
    let text = std::fs::read_to_string(dir.join("shell/wordsTest")).expect("read wordsTest");
    let lexer = Lexer::new('\\');
    let mut env_lines: Vec<String> = Vec::new();
    let (mut cases, mut passed) = (0usize, 0usize);
    let mut failures = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix("ENV ") {
            env_lines.push(rest.trim_start_matches(' ').to_string());
            continue;
        }
        let fields: Vec<&str> = line.split('|').collect();
        assert_eq!(
            fields.len(),
            2,
            "line {}: expected input | words",
            index + 1
        );
        let input = fields[0].trim();
        let expected: Vec<&str> = fields[1].trim_start_matches(' ').split(',').collect();
        cases += 1;
        let env = env_pairs_from_strings(env_lines.iter().map(String::as_str));
        let got = match lexer.process_words(input, &env) {
            Ok(words) => words,
            Err(_) => vec!["error".to_string()],
        };
        if got == expected {
            passed += 1;
        } else {
            failures.push(format!(
                "line {}: {input:?} expected {expected:?}, got {got:?}",
                index + 1
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(cases, 24, "number of test lines in wordsTest");
    assert_eq!(passed, cases);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn expansion_never_panics(word in "[-a-zA-Z0-9_${}:?+#%/\\\\`'\" *.@!\u{feff}한]{0,40}") {
        let env = env_pairs_from_strings(["A=x y", "EMPTY=", "P=*/"]);
        for escape in ['\\', '`'] {
            let lexer = Lexer::new(escape);
            let _ = lexer.process_word(&word, &env);
            let _ = lexer.process_words(&word, &env);
            let _ = lexer.with_skip_unset(true).with_raw_quotes(true).expand(&word, &env);
        }
    }

    #[test]
    fn words_without_specials_are_unchanged(word in "[^$'\"\\\\`\u{feff}]{0,60}") {
        let env = env_pairs_from_strings(["A=1"]);
        prop_assert_eq!(Lexer::new('\\').process_word(&word, &env).unwrap(), word.clone());
        // The slow path must agree with the fast path.
        let expansion = Lexer::new('\\').expand(&word, &env).unwrap();
        prop_assert_eq!(expansion.word, word.clone());
        let split: Vec<String> = word.split(char::is_whitespace).filter(|w| !w.is_empty()).map(String::from).collect();
        prop_assert_eq!(expansion.words, split);
    }

    #[test]
    fn escaped_text_is_literal(text in "[a-z$'\" {}]{0,30}") {
        // Escaping every character makes the word literal.
        let escaped: String = text.chars().flat_map(|c| ['\\', c]).collect();
        let env = env_pairs_from_strings(["a=1"]);
        prop_assert_eq!(Lexer::new('\\').process_word(&escaped, &env).unwrap(), text);
    }
}
