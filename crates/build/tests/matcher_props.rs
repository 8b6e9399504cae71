//! Property tests: no pattern list, ignore file or path makes the matcher,
//! the ignore-file reader or the glob matcher panic, and results are stable.

use kiln_build::dockerignore::{
    MatchInfo, PatternMatcher, clean_path, glob_match, parse_ignore_file,
};
use proptest::prelude::*;

/// Bytes biased towards the characters patterns care about.
fn pattern_bytes() -> impl Strategy<Value = Vec<u8>> {
    let special = prop::sample::select(b"*?[]^!\\/.-{}|()$+:, \n\ta".to_vec());
    prop::collection::vec(prop_oneof![3 => special, 1 => any::<u8>()], 0..24)
}

fn path_bytes() -> impl Strategy<Value = Vec<u8>> {
    let chars = prop::sample::select(b"ab/.*[]\\\n{}|x".to_vec());
    prop::collection::vec(prop_oneof![4 => chars, 1 => any::<u8>()], 0..24)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn matcher_never_panics(
        patterns in prop::collection::vec(pattern_bytes(), 0..5),
        path in path_bytes(),
    ) {
        if let Ok(m) = PatternMatcher::new(&patterns, "prop") {
            let first = m.matches_or_parent_matches(&path).ok();
            // Deterministic.
            prop_assert_eq!(first, m.matches_or_parent_matches(&path).ok());
            let _ = m.matches_exact(&path);
            let mut info = MatchInfo::default();
            for depth in 1..=path.split(|&b| b == b'/').count() {
                let prefix: Vec<u8> = path
                    .split(|&b| b == b'/')
                    .take(depth)
                    .collect::<Vec<_>>()
                    .join(&b'/');
                match m.matches_using_parent_results(&prefix, &info) {
                    Ok((_, next)) => info = next,
                    Err(_) => break,
                }
            }
            let _ = m.must_descend_into_ignored_dir(&path);
        }
    }

    #[test]
    fn ignore_file_reader_never_panics(content in prop::collection::vec(any::<u8>(), 0..200)) {
        let lines = parse_ignore_file(&content);
        for line in &lines {
            prop_assert!(!line.pattern.is_empty());
            prop_assert!(line.line >= 1);
        }
        let _ = PatternMatcher::from_lines(&lines, ".dockerignore");
    }

    #[test]
    fn glob_and_clean_never_panic(pattern in pattern_bytes(), name in path_bytes()) {
        let _ = glob_match(&pattern, &name);
        let cleaned = clean_path(&name);
        // Clean is idempotent, as in Go.
        prop_assert_eq!(clean_path(&cleaned), cleaned.clone());
    }
}
