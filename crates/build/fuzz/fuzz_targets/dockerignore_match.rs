//! Fuzzes the `.dockerignore` pipeline on untrusted bytes: the input up to
//! the first NUL is an ignore file, the rest is a list of paths (split on
//! NUL). Reading, compiling and every matching entry point must not panic.
#![no_main]

use kiln_build::dockerignore::{MatchInfo, PatternMatcher, glob_match, parse_ignore_file};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|&b| b == 0);
    let ignore_file = parts.next().unwrap_or_default();
    let lines = parse_ignore_file(ignore_file);
    let Ok(matcher) = PatternMatcher::from_lines(&lines, ".dockerignore") else {
        return;
    };
    for path in parts.take(8) {
        let _ = matcher.matches_or_parent_matches(path);
        let _ = matcher.matches_exact(path);
        let mut info = MatchInfo::default();
        let components: Vec<&[u8]> = path.split(|&b| b == b'/').collect();
        for depth in 1..=components.len() {
            let prefix = components[..depth].join(&b'/');
            match matcher.matches_using_parent_results(&prefix, &info) {
                Ok((_, next)) => info = next,
                Err(_) => break,
            }
        }
        let _ = matcher.must_descend_into_ignored_dir(path);
        for line in &lines {
            let _ = glob_match(&line.pattern, path);
        }
    }
});
