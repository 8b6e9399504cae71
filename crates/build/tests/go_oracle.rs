//! Differential test: kiln's `.dockerignore` matcher against Go's
//! moby/patternmatcher (Debian's golang-github-moby-patternmatcher-dev),
//! run through the tiny Go program in `tests/go-oracle/main.go`.
//!
//! Compares, for several thousand (pattern list, path) pairs, both
//! `MatchesOrParentMatches` and the walker's chained
//! `MatchesUsingParentResults` (what BuildKit's context walker uses), and
//! whether the pattern list is rejected. Needs `go` and the Debian package;
//! without them the test is skipped, or fails when `CI=true`.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use kiln_build::dockerignore::{MatchInfo, PatternMatcher};

const GOPATH: &str = "/usr/share/gocode";

fn oracle_available() -> bool {
    let go = Command::new("go")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let package = Path::new(GOPATH)
        .join("src/github.com/moby/patternmatcher/patternmatcher.go")
        .exists();
    if go && package {
        return true;
    }
    let msg = "go-oracle: needs `go` (apt golang-go) and moby/patternmatcher \
               (apt golang-github-moby-patternmatcher-dev)";
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{msg}: missing under CI=true");
    }
    eprintln!("skipping: {msg}");
    false
}

struct Case {
    patterns: Vec<Vec<u8>>,
    paths: Vec<Vec<u8>>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn run_oracle(cases: &[Case]) -> Vec<String> {
    let main_go = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/go-oracle/main.go");
    let mut child = Command::new("go")
        .arg("run")
        .arg(&main_go)
        .env("GO111MODULE", "off")
        .env("GOPATH", GOPATH)
        .env("GOFLAGS", "")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start go run");
    let mut input = String::new();
    for case in cases {
        input.push_str(&format!(
            "case {} {}\n",
            case.patterns.len(),
            case.paths.len()
        ));
        for p in case.patterns.iter().chain(&case.paths) {
            input.push_str(&hex(p));
            input.push('\n');
        }
    }
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child.wait_with_output().expect("go run output");
    writer.join().expect("writer thread").expect("write to go");
    assert!(
        output.status.success(),
        "go-oracle failed: {:?}",
        output.status
    );
    String::from_utf8(output.stdout)
        .expect("oracle prints ASCII")
        .lines()
        .map(str::to_string)
        .collect()
}

fn verdict(r: Result<bool, kiln_build::dockerignore::MatchError>) -> char {
    match r {
        Ok(true) => 'T',
        Ok(false) => 'F',
        Err(_) => 'E',
    }
}

/// kiln's answers in the oracle's output format.
fn kiln_answers(case: &Case) -> Vec<String> {
    let Ok(matcher) = PatternMatcher::new(&case.patterns, "oracle") else {
        return vec!["newerr".to_string()];
    };
    case.paths
        .iter()
        .map(|path| {
            let direct = verdict(matcher.matches_or_parent_matches(path));
            let mut info = MatchInfo::default();
            let mut walked = 'F';
            let parts: Vec<&[u8]> = path.split(|&b| b == b'/').collect();
            for depth in 1..=parts.len() {
                let prefix = parts[..depth].join(&b'/');
                match matcher.matches_using_parent_results(&prefix, &info) {
                    Ok((hit, next)) => {
                        walked = if hit { 'T' } else { 'F' };
                        info = next;
                    }
                    Err(_) => {
                        walked = 'E';
                        break;
                    }
                }
            }
            format!("{direct}{walked}")
        })
        .collect()
}

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const PATTERN_SEGMENTS: &[&str] = &[
    "a",
    "b",
    "ab",
    "c",
    "x.y",
    "*",
    "**",
    "?",
    "a*",
    "*b",
    "?b",
    "[ab]",
    "[^a]",
    "[a-c]",
    "[!a]",
    "\\*",
    "\\a",
    ".",
    "..",
    "a?",
    "*.y",
    "[[:alpha:]]",
    "é",
    "a b",
    "a+b",
    "(a)",
    "{a}",
    "$a",
    "^a",
    "a|b",
    "[]a]",
    "\\.",
    "a\\",
    "[a",
    "**a",
    "a**",
    "a{2}",
    "b{1,}",
    "x|",
    "|a",
    "[a|b]",
    "\\{",
    "[\\d]",
    "\\d",
    "a{0,1}",
    "a{x}",
    "[a-]",
    "a\\b",
];
const PATH_SEGMENTS: &[&str] = &[
    "a", "b", "ab", "c", "x.y", "ba", "a b", "é", "x\ny", "*", "[ab]", "a+b", "(a)", "{a}", "$a",
    "^a", "a|b", "]", ".y", "aa", "abc", "\\a", "a\\", "x", "a{2}", "7", "_",
];

fn generated_cases(seed: u64, count: usize) -> Vec<Case> {
    let mut rng = Rng(seed);
    let mut cases = Vec::with_capacity(count);
    for _ in 0..count {
        let n_patterns = 1 + rng.below(4);
        let mut patterns = Vec::new();
        for _ in 0..n_patterns {
            let depth = 1 + rng.below(3);
            let mut p = String::new();
            if rng.below(4) == 0 {
                p.push('!');
            }
            if rng.below(6) == 0 {
                p.push('/');
            }
            for d in 0..depth {
                if d > 0 {
                    p.push('/');
                }
                p.push_str(rng.pick(PATTERN_SEGMENTS));
            }
            if rng.below(8) == 0 {
                p.push('/');
            }
            if rng.below(10) == 0 {
                p = format!("  {p} ");
            }
            patterns.push(p.into_bytes());
        }
        let mut paths = Vec::new();
        for _ in 0..12 {
            let depth = 1 + rng.below(4);
            let parts: Vec<&str> = (0..depth).map(|_| rng.pick(PATH_SEGMENTS)).collect();
            paths.push(parts.join("/").into_bytes());
        }
        cases.push(Case { patterns, paths });
    }
    cases
}

/// Patterns as random strings over the characters that mean something to
/// the glob or the generated regex, to stress the regex dialect itself.
fn character_soup_cases(seed: u64, count: usize) -> Vec<Case> {
    const PATTERN_CHARS: &[u8] = b"ab/*?[]^!\\-{},|()+.$:019dwsxpQE ";
    const PATH_CHARS: &[u8] = b"ab/*?[]^{},|()+.$:-019 \\";
    let mut rng = Rng(seed);
    let mut cases = Vec::with_capacity(count);
    for _ in 0..count {
        let n_patterns = 1 + rng.below(3);
        let patterns = (0..n_patterns)
            .map(|_| {
                let len = 1 + rng.below(10);
                (0..len)
                    .map(|_| PATTERN_CHARS[rng.below(PATTERN_CHARS.len())])
                    .collect()
            })
            .collect();
        let paths = (0..10)
            .map(|_| {
                let len = 1 + rng.below(8);
                let p: Vec<u8> = (0..len)
                    .map(|_| PATH_CHARS[rng.below(PATH_CHARS.len())])
                    .collect();
                // Paths as a walker produces them: no empty components.
                let cleaned: Vec<&[u8]> = p
                    .split(|&b| b == b'/')
                    .filter(|c| !c.is_empty() && *c != b"." && *c != b"..")
                    .collect();
                let joined = cleaned.join(&b'/');
                if joined.is_empty() {
                    b"a".to_vec()
                } else {
                    joined
                }
            })
            .collect();
        cases.push(Case { patterns, paths });
    }
    cases
}

fn hand_written_cases() -> Vec<Case> {
    let paths: Vec<Vec<u8>> = [
        "a",
        "a/b",
        "a/b/c",
        "b",
        "b/a",
        "node_modules",
        "node_modules/x/y.js",
        "src/main.go",
        "src/x/util.go",
        "README.md",
        "docs/README.md",
        "x.tmp",
        "deep/x.tmp",
        ".git",
        ".git/HEAD",
        "Dockerfile",
        ".dockerignore",
        "sub/keep/x",
        "sub/drop/y",
        "sub/z",
        "foo",
        "foobar",
        "foo/bar",
        "dir/file.txt",
        "a.b",
        "a+b",
        "a(b)",
        "a{b}",
        "a$",
        "x\ny",
        "é/ü",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    let pattern_sets: &[&[&str]] = &[
        &["a"],
        &["a/b"],
        &["*"],
        &["*", "!Dockerfile"],
        &["**"],
        &["**/*.go"],
        &["**/*.tmp", "!deep/x.tmp"],
        &["node_modules"],
        &["/node_modules/"],
        &["sub", "!sub/keep"],
        &["sub/**", "!sub/keep/**"],
        &["*.md", "!README.md"],
        &["*.md", "!README.md", "docs"],
        &[".git"],
        &["Dockerfile", ".dockerignore"],
        &["foo*"],
        &["foo**"],
        &["**foo"],
        &["**/foo"],
        &["foo/**"],
        &["a/**/c"],
        &["a/*/c"],
        &["?"],
        &["?/?"],
        &["[a-b]"],
        &["[^a]"],
        &["[!a]"],
        &["a\\.b"],
        &["a.b"],
        &["a+b", "a(b)", "a{b}", "a$"],
        &["x\ny"],
        &["é"],
        &["*", "!*/"],
        &["!a"],
        &["a", "!a", "a"],
        &["src", "!src/*.go"],
        &["src", "!**/*.go"],
        &["./a/../b"],
        &["a/"],
        &["!"],
        &["["],
        &["a\\"],
        &["x\\q"],
        &["[[:digit:]]"],
        &["[[:bogus:]]"],
        &["\\x41"],
        &["^a"],
    ];
    pattern_sets
        .iter()
        .map(|set| Case {
            patterns: set.iter().map(|p| p.as_bytes().to_vec()).collect(),
            paths: paths.clone(),
        })
        .collect()
}

#[test]
fn matcher_agrees_with_go_patternmatcher() {
    if !oracle_available() {
        return;
    }
    let mut cases = hand_written_cases();
    cases.extend(generated_cases(0x6b69_6c6e_2024_0005, 900));
    cases.extend(character_soup_cases(0x5eed_0000_0000_0042, 1500));
    let oracle = run_oracle(&cases);
    let mut oracle_lines = oracle.iter();
    let mut compared = 0usize;
    let mut mismatches = Vec::new();
    for case in &cases {
        let ours = kiln_answers(case);
        // The oracle prints one line for a rejected list, else one per path.
        let first = oracle_lines.next().cloned().unwrap_or_default();
        let theirs: Vec<String> = if first == "newerr" {
            vec![first]
        } else {
            let mut v = vec![first];
            for _ in 1..case.paths.len() {
                v.push(oracle_lines.next().cloned().unwrap_or_default());
            }
            v
        };
        if ours.len() != theirs.len() {
            mismatches.push(format!(
                "patterns {:?}: kiln {:?}, go {:?}",
                lossy(&case.patterns),
                ours,
                theirs
            ));
            continue;
        }
        for (i, (o, t)) in ours.iter().zip(&theirs).enumerate() {
            compared += 1;
            if o != t {
                let path = case
                    .paths
                    .get(i)
                    .map(|p| String::from_utf8_lossy(p).into_owned());
                mismatches.push(format!(
                    "patterns {:?} path {:?}: kiln {o}, go {t}",
                    lossy(&case.patterns),
                    path
                ));
            }
        }
    }
    assert!(oracle_lines.next().is_none(), "oracle printed extra lines");
    assert!(compared > 15000, "only {compared} comparisons");
    assert!(
        mismatches.is_empty(),
        "{} of {compared} answers differ from Go:\n{}",
        mismatches.len(),
        mismatches
            .iter()
            .take(40)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    eprintln!("go-oracle: {} cases, {compared} answers agree", cases.len());
}

fn lossy(items: &[Vec<u8>]) -> Vec<String> {
    items
        .iter()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect()
}
