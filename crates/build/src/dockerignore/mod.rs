//! `.dockerignore`: reading ignore files and matching context paths exactly
//! as Docker and BuildKit do.
//!
//! * [`parse_ignore_file`] reads a file the way moby/patternmatcher's
//!   `ignorefile.ReadAll` does: a UTF-8 BOM is dropped, lines starting with
//!   `#` are comments, the rest are trimmed, `filepath.Clean`ed and stripped of
//!   a leading `/` (a `!` exception keeps its `!`).
//! * [`PatternMatcher`] evaluates patterns like patternmatcher: the last
//!   matching pattern wins, `!` re-includes, a pattern that matches a
//!   directory matches everything under it, `*`, `?`, `[...]`, `\` escapes
//!   and `**` (any number of directories).
//! * [`locate_ignore_file`] picks `<Dockerfile>.dockerignore` next to the
//!   Dockerfile over the context's `.dockerignore`, as BuildKit does.
//!
//! BuildKit applies no special case to the Dockerfile or the `.dockerignore`
//! itself: the Dockerfile reaches the frontend separately, so listing either
//! in `.dockerignore` hides it from COPY and ADD while the build still reads
//! it (checked against Docker 20.10's BuildKit).

mod goregex;
mod pattern;

use std::path::{Path, PathBuf};

pub use pattern::{BadGlob, clean_path, dir_of, glob_match};

/// Errors from reading or compiling ignore patterns.
#[derive(Debug, thiserror::Error)]
pub enum IgnoreError {
    /// A line that is only `!`.
    #[error(
        "{source_name}:{line}: illegal exclusion pattern \"!\": a `!` must be followed by the pattern to re-include"
    )]
    LoneExclamation { source_name: String, line: usize },
    /// A pattern that Go's `filepath.Match` rejects.
    #[error(
        "{source_name}:{line}: bad pattern `{pattern}`: unterminated `[...]`, a `\\` at the end, or a bad range; escape literal `[` as `\\[`"
    )]
    BadPattern {
        source_name: String,
        line: usize,
        pattern: String,
    },
    /// A pattern whose generated regular expression does not compile; Docker
    /// fails the build the first time such a pattern is evaluated.
    #[error(
        "{source_name}:{line}: pattern `{pattern}` cannot be matched: {why}; escape special characters with `\\`"
    )]
    BadRegex {
        source_name: String,
        line: usize,
        pattern: String,
        why: String,
    },
    /// An ignore file that is a symlink to somewhere outside its directory.
    #[error(
        "ignore file {path} is a symlink pointing outside its directory; replace it with a regular file"
    )]
    SymlinkOutside { path: PathBuf },
    /// An ignore file that could not be read.
    #[error("cannot read ignore file {path}: {source}; check that it is a readable file")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One pattern line as written in an ignore file, after Docker's cleaning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnoreLine {
    /// The pattern text handed to the matcher (with a leading `!` for
    /// exceptions).
    pub pattern: Vec<u8>,
    /// 1-based line number in the file, for error messages.
    pub line: usize,
}

/// Reads ignore-file text into patterns, with `ignorefile.ReadAll`'s rules.
pub fn parse_ignore_file(content: &[u8]) -> Vec<IgnoreLine> {
    let mut out = Vec::new();
    let content = content.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(content);
    for (index, raw) in split_lines(content).enumerate() {
        if raw.first() == Some(&b'#') {
            continue;
        }
        let mut text = trim_go_space(raw);
        if text.is_empty() {
            continue;
        }
        let invert = text[0] == b'!';
        if invert {
            text = trim_go_space(&text[1..]);
        }
        let mut pattern = Vec::with_capacity(text.len() + 1);
        if invert {
            pattern.push(b'!');
        }
        if !text.is_empty() {
            let cleaned = clean_path(text);
            let body = if cleaned.len() > 1 && cleaned[0] == b'/' {
                &cleaned[1..]
            } else {
                &cleaned[..]
            };
            pattern.extend_from_slice(body);
        }
        out.push(IgnoreLine {
            pattern,
            line: index + 1,
        });
    }
    out
}

/// Splits like Go's `bufio.ScanLines`: on `\n`, dropping one `\r` before it,
/// with no empty last line after a final newline.
fn split_lines(content: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = content;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let (line, next) = match rest.iter().position(|&b| b == b'\n') {
            Some(nl) => (&rest[..nl], &rest[nl + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        rest = next;
        Some(line.strip_suffix(b"\r").unwrap_or(line))
    })
}

/// Go's `strings.TrimSpace`: strips Unicode white space from both ends
/// (ASCII space, \t \n \v \f \r, U+0085, U+00A0 and the Unicode spaces).
pub(crate) fn trim_go_space(mut text: &[u8]) -> &[u8] {
    fn leading_space_len(text: &[u8]) -> usize {
        match text.first() {
            Some(b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r') => 1,
            Some(&b) if b >= 0x80 => {
                let end = text.len().min(4);
                for width in 2..=end {
                    if let Ok(s) = std::str::from_utf8(&text[..width]) {
                        return match s.chars().next() {
                            Some(c) if c.is_whitespace() => width,
                            _ => 0,
                        };
                    }
                }
                0
            }
            _ => 0,
        }
    }
    fn trailing_space_len(text: &[u8]) -> usize {
        match text.last() {
            Some(b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r') => 1,
            Some(&b) if b >= 0x80 => {
                for width in 2..=text.len().min(4) {
                    let start = text.len() - width;
                    if let Ok(s) = std::str::from_utf8(&text[start..]) {
                        return match s.chars().next() {
                            Some(c) if c.is_whitespace() => width,
                            _ => 0,
                        };
                    }
                }
                0
            }
            _ => 0,
        }
    }
    loop {
        let n = leading_space_len(text);
        if n == 0 {
            break;
        }
        text = &text[n..];
    }
    loop {
        let n = trailing_space_len(text);
        if n == 0 {
            break;
        }
        text = &text[..text.len() - n];
    }
    text
}

/// One compiled pattern.
#[derive(Debug, Clone)]
pub struct Pattern {
    cleaned: Vec<u8>,
    exclusion: bool,
    kind: pattern::MatchKind,
    line: usize,
}

impl Pattern {
    /// The cleaned pattern text, without its `!`.
    pub fn text(&self) -> &[u8] {
        &self.cleaned
    }

    /// Whether this is a `!` exception (re-inclusion).
    pub fn is_exclusion(&self) -> bool {
        self.exclusion
    }

    fn matches(&self, path: &[u8]) -> Result<bool, goregex::RegexError> {
        pattern::match_kind(&self.kind, &self.cleaned, path)
    }

    /// The pattern without a trailing `/**` or `/*` (fsutil's
    /// `patternWithoutTrailingGlob`), used to decide whether an exception
    /// can reach inside an excluded directory.
    fn without_trailing_glob(&self) -> &[u8] {
        let text = &self.cleaned[..];
        let text = text.strip_suffix(b"/**").unwrap_or(text);
        text.strip_suffix(b"/*").unwrap_or(text)
    }
}

/// Per-pattern results for a directory, handed to its children so that a
/// pattern matching a directory matches everything inside it
/// (patternmatcher's `MatchInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MatchInfo {
    parent_matched: Vec<bool>,
}

/// An error met while matching: the pattern whose regex cannot compile.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "{source_name}:{line}: pattern `{pattern}` cannot be matched: {why}; escape special characters with `\\`"
)]
pub struct MatchError {
    pub source_name: String,
    pub line: usize,
    pub pattern: String,
    pub why: String,
}

impl From<MatchError> for IgnoreError {
    fn from(e: MatchError) -> Self {
        IgnoreError::BadRegex {
            source_name: e.source_name,
            line: e.line,
            pattern: e.pattern,
            why: e.why,
        }
    }
}

/// A list of ignore patterns, evaluated as moby/patternmatcher does.
#[derive(Debug, Clone, Default)]
pub struct PatternMatcher {
    patterns: Vec<Pattern>,
    has_exclusions: bool,
    only_literal_exceptions: bool,
    source_name: String,
}

impl PatternMatcher {
    /// Compiles patterns (as in patternmatcher's `New`): each is trimmed and
    /// cleaned, empty ones are skipped, a leading `!` makes an exception, and
    /// malformed glob syntax is an error. `source_name` names the origin in
    /// error messages (e.g. the ignore file's path).
    pub fn new<P: AsRef<[u8]>>(patterns: &[P], source_name: &str) -> Result<Self, IgnoreError> {
        let lines: Vec<IgnoreLine> = patterns
            .iter()
            .enumerate()
            .map(|(i, p)| IgnoreLine {
                pattern: p.as_ref().to_vec(),
                line: i + 1,
            })
            .collect();
        Self::from_lines(&lines, source_name)
    }

    /// Compiles lines from [`parse_ignore_file`], keeping their line numbers.
    pub fn from_lines(lines: &[IgnoreLine], source_name: &str) -> Result<Self, IgnoreError> {
        let mut matcher = PatternMatcher {
            patterns: Vec::with_capacity(lines.len()),
            has_exclusions: false,
            only_literal_exceptions: true,
            source_name: source_name.to_string(),
        };
        for line in lines {
            let trimmed = trim_go_space(&line.pattern);
            if trimmed.is_empty() {
                continue;
            }
            let mut cleaned = clean_path(trimmed);
            let exclusion = cleaned[0] == b'!';
            if exclusion {
                if cleaned.len() == 1 {
                    return Err(IgnoreError::LoneExclamation {
                        source_name: source_name.to_string(),
                        line: line.line,
                    });
                }
                cleaned.remove(0);
                matcher.has_exclusions = true;
            }
            if glob_match(&cleaned, b".").is_err() {
                return Err(IgnoreError::BadPattern {
                    source_name: source_name.to_string(),
                    line: line.line,
                    pattern: String::from_utf8_lossy(&line.pattern).into_owned(),
                });
            }
            let kind = pattern::classify(&cleaned);
            let compiled = Pattern {
                cleaned,
                exclusion,
                kind,
                line: line.line,
            };
            if exclusion
                && compiled
                    .without_trailing_glob()
                    .iter()
                    .any(|b| b"*[]?^\\".contains(b))
            {
                matcher.only_literal_exceptions = false;
            }
            matcher.patterns.push(compiled);
        }
        Ok(matcher)
    }

    /// The compiled patterns, in order.
    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    /// Whether any pattern is a `!` exception.
    pub fn has_exclusions(&self) -> bool {
        self.has_exclusions
    }

    /// Whether there are no patterns at all.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    fn error_for(&self, pattern: &Pattern, err: goregex::RegexError) -> MatchError {
        MatchError {
            source_name: self.source_name.clone(),
            line: pattern.line,
            pattern: String::from_utf8_lossy(&pattern.cleaned).into_owned(),
            why: err.to_string(),
        }
    }

    /// Whether `path` (slash-separated, relative to the context) or one of
    /// its parent directories is ignored (patternmatcher's
    /// `MatchesOrParentMatches`).
    pub fn matches_or_parent_matches(&self, path: &[u8]) -> Result<bool, MatchError> {
        let parent = dir_of(path);
        let parent_parts: Vec<&[u8]> = parent.split(|&b| b == b'/').collect();
        let mut matched = false;
        for pattern in &self.patterns {
            if pattern.exclusion != matched {
                continue;
            }
            let mut hit = pattern
                .matches(path)
                .map_err(|e| self.error_for(pattern, e))?;
            if !hit && parent != b"." {
                for depth in 1..=parent_parts.len() {
                    let prefix = parent_parts[..depth].join(&b'/');
                    if pattern.matches(&prefix).unwrap_or(false) {
                        hit = true;
                        break;
                    }
                }
            }
            if hit {
                matched = !pattern.exclusion;
            }
        }
        Ok(matched)
    }

    /// Whether exactly `path` is ignored, without looking at its parents
    /// (patternmatcher's `MatchesExact`).
    pub fn matches_exact(&self, path: &[u8]) -> Result<bool, MatchError> {
        let mut matched = false;
        for pattern in &self.patterns {
            if pattern.exclusion != matched {
                continue;
            }
            if pattern
                .matches(path)
                .map_err(|e| self.error_for(pattern, e))?
            {
                matched = !pattern.exclusion;
            }
        }
        Ok(matched)
    }

    /// Whether `path` is ignored, given its parent directory's [`MatchInfo`]
    /// (patternmatcher's `MatchesUsingParentResults`, which BuildKit's
    /// context walker uses). Pass `MatchInfo::default()` for a path whose
    /// parent was not evaluated; then parents are checked as in
    /// [`Self::matches_or_parent_matches`].
    pub fn matches_using_parent_results(
        &self,
        path: &[u8],
        parent_info: &MatchInfo,
    ) -> Result<(bool, MatchInfo), MatchError> {
        let parent_matched = &parent_info.parent_matched;
        let known_parent =
            parent_matched.len() == self.patterns.len() && !parent_matched.is_empty();
        let mut matched = false;
        let mut info = MatchInfo {
            parent_matched: vec![false; self.patterns.len()],
        };
        for (i, pattern) in self.patterns.iter().enumerate() {
            let mut hit = known_parent && parent_matched.get(i).copied().unwrap_or(false);
            if !hit {
                if pattern.exclusion != matched {
                    continue;
                }
                hit = pattern
                    .matches(path)
                    .map_err(|e| self.error_for(pattern, e))?;
                if !hit && !known_parent {
                    let parent = dir_of(path);
                    if parent != b"." {
                        let parts: Vec<&[u8]> = parent.split(|&b| b == b'/').collect();
                        for depth in 1..=parts.len() {
                            if pattern
                                .matches(&parts[..depth].join(&b'/'))
                                .unwrap_or(false)
                            {
                                hit = true;
                                break;
                            }
                        }
                    }
                }
            }
            if let Some(slot) = info.parent_matched.get_mut(i) {
                *slot = hit;
            }
            if hit {
                matched = !pattern.exclusion;
            }
        }
        Ok((matched, info))
    }

    /// For an ignored directory: whether the walk must still look inside it
    /// because an exception might re-include something there. Mirrors
    /// fsutil: with no exceptions, never; when every exception is a literal
    /// path (optionally ending in `/*` or `/**`), only if one lies under
    /// `dir`; otherwise (exceptions with wildcards) always.
    pub fn must_descend_into_ignored_dir(&self, dir: &[u8]) -> bool {
        if !self.has_exclusions {
            return false;
        }
        if !self.only_literal_exceptions {
            return true;
        }
        let mut dir_slash = dir.to_vec();
        dir_slash.push(b'/');
        self.patterns.iter().filter(|p| p.exclusion).any(|p| {
            let mut literal = p.without_trailing_glob().to_vec();
            literal.push(b'/');
            literal.starts_with(&dir_slash)
        })
    }
}

/// Where the ignore patterns for a build come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnoreFile {
    /// The file read.
    pub path: PathBuf,
    /// Its patterns.
    pub lines: Vec<IgnoreLine>,
}

/// Finds the ignore file for a build as BuildKit does:
/// `<Dockerfile>.dockerignore` next to the Dockerfile if it exists (it
/// replaces, not extends, the context's), else `<context>/.dockerignore`,
/// else none.
pub fn locate_ignore_file(
    context_dir: &Path,
    dockerfile: Option<&Path>,
) -> Result<Option<IgnoreFile>, IgnoreError> {
    let mut candidates = Vec::new();
    if let Some(dockerfile) = dockerfile
        && let Some(name) = dockerfile.file_name()
    {
        let mut ignore_name = name.to_os_string();
        ignore_name.push(".dockerignore");
        candidates.push(dockerfile.with_file_name(ignore_name));
    }
    candidates.push(context_dir.join(".dockerignore"));
    for path in candidates {
        // BuildKit resolves a symlinked ignore file inside its directory
        // only; never read one that points elsewhere (its lines could end up
        // in error messages).
        if let Ok(meta) = std::fs::symlink_metadata(&path)
            && meta.file_type().is_symlink()
        {
            let base = path.parent().unwrap_or(Path::new("."));
            let base = std::fs::canonicalize(base).unwrap_or_else(|_| base.to_path_buf());
            match std::fs::canonicalize(&path) {
                Ok(target) if target.starts_with(&base) => {}
                Ok(_) => return Err(IgnoreError::SymlinkOutside { path }),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(IgnoreError::Read { path, source }),
            }
        }
        match std::fs::read(&path) {
            Ok(content) => {
                return Ok(Some(IgnoreFile {
                    lines: parse_ignore_file(&content),
                    path,
                }));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(IgnoreError::Read { path, source }),
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(patterns: &[&str]) -> PatternMatcher {
        PatternMatcher::new(patterns, "test").expect("test patterns compile")
    }

    /// Evaluates `path` the way BuildKit's walker does: each ancestor in
    /// turn, feeding its MatchInfo to the next.
    fn walk_match(m: &PatternMatcher, path: &str) -> bool {
        let mut info = MatchInfo::default();
        let mut result = false;
        let parts: Vec<&str> = path.split('/').collect();
        for depth in 1..=parts.len() {
            let prefix = parts[..depth].join("/");
            let (hit, next) = m
                .matches_using_parent_results(prefix.as_bytes(), &info)
                .expect("match succeeds");
            result = hit;
            info = next;
        }
        result
    }

    #[test]
    fn ignore_file_reading_follows_readall() {
        let text = "\u{FEFF}test1\n/test2\n/a/file/here\n\nlastfile\n# this is a comment\n! /inverted/abs/path\n!\n! \r\n  #not comment\n./x/../y/\n";
        let got: Vec<String> = parse_ignore_file(text.as_bytes())
            .into_iter()
            .map(|l| String::from_utf8(l.pattern).expect("utf8"))
            .collect();
        assert_eq!(
            got,
            vec![
                "test1",
                "test2",
                "a/file/here",
                "lastfile",
                "!inverted/abs/path",
                "!",
                "!",
                "#not comment",
                "y"
            ]
        );
    }

    #[test]
    fn ignore_file_line_numbers_are_kept() {
        let lines = parse_ignore_file(b"# c\n\na\n  \nb");
        assert_eq!(lines.iter().map(|l| l.line).collect::<Vec<_>>(), vec![3, 5]);
    }

    #[test]
    fn lone_exclamation_is_an_error_with_line() {
        let lines = parse_ignore_file(b"a\n!\n");
        let err = PatternMatcher::from_lines(&lines, ".dockerignore").expect_err("must fail");
        assert!(err.to_string().starts_with(".dockerignore:2:"), "{err}");
    }

    #[test]
    fn bad_glob_is_an_error() {
        let err = PatternMatcher::new(&["ok", "a["], ".dockerignore").expect_err("must fail");
        assert!(
            matches!(err, IgnoreError::BadPattern { line: 2, .. }),
            "{err}"
        );
    }

    #[test]
    fn last_match_wins_and_exceptions_reinclude() {
        let m = matcher(&["*.md", "!README.md", "README*"]);
        assert!(m.matches_or_parent_matches(b"x.md").expect("ok"));
        assert!(m.matches_or_parent_matches(b"README.md").expect("ok"));
        let m = matcher(&["*.md", "!README.md"]);
        assert!(!m.matches_or_parent_matches(b"README.md").expect("ok"));
    }

    #[test]
    fn directory_pattern_covers_contents() {
        let m = matcher(&["node_modules"]);
        assert!(walk_match(&m, "node_modules/a/b.js"));
        assert!(
            m.matches_or_parent_matches(b"node_modules/a/b.js")
                .expect("ok")
        );
        assert!(!walk_match(&m, "src/node_modules_x"));
    }

    #[test]
    fn exception_inside_excluded_dir() {
        let m = matcher(&["sub", "!sub/keep"]);
        assert!(walk_match(&m, "sub"));
        assert!(!walk_match(&m, "sub/keep"));
        assert!(!walk_match(&m, "sub/keep/x"));
        assert!(walk_match(&m, "sub/drop/y"));
        assert!(m.must_descend_into_ignored_dir(b"sub"));
        assert!(!m.must_descend_into_ignored_dir(b"sub/drop"));
        assert!(!m.must_descend_into_ignored_dir(b"other"));
    }

    #[test]
    fn wildcard_exception_forces_descent() {
        let m = matcher(&["*", "!**/*.go"]);
        assert!(m.must_descend_into_ignored_dir(b"anything"));
        assert!(!walk_match(&m, "a/b/c.go"));
        assert!(walk_match(&m, "a/b/c.txt"));
        let m = matcher(&["a"]);
        assert!(!m.must_descend_into_ignored_dir(b"a"));
    }

    #[test]
    fn star_question_class_escape() {
        let m = matcher(&["a?c", "[x-z]*.log", "lit\\*"]);
        assert!(walk_match(&m, "abc"));
        assert!(!walk_match(&m, "a/c"));
        assert!(walk_match(&m, "y1.log"));
        assert!(!walk_match(&m, "a1.log"));
        assert!(walk_match(&m, "lit*"));
        assert!(!walk_match(&m, "litx"));
    }

    #[test]
    fn double_star_any_depth() {
        let m = matcher(&["**/*.tmp"]);
        assert!(walk_match(&m, "x.tmp"));
        assert!(walk_match(&m, "a/b/c/x.tmp"));
        let m = matcher(&["a/**/z"]);
        assert!(walk_match(&m, "a/z"));
        assert!(walk_match(&m, "a/b/c/z"));
        assert!(!walk_match(&m, "b/z"));
    }

    #[test]
    fn leading_slash_and_clean() {
        let lines = parse_ignore_file(b"/build/\n./dist//x\n");
        let m = PatternMatcher::from_lines(&lines, "t").expect("ok");
        assert!(walk_match(&m, "build/out"));
        assert!(walk_match(&m, "dist/x"));
    }

    #[test]
    fn bad_regex_errors_only_when_evaluated() {
        // `\q` passes filepath.Match but is not valid Go regex: Docker fails
        // when the pattern is used.
        let m = matcher(&["x\\q"]);
        assert!(m.matches_exact(b"x").is_err());
        // An exception is not evaluated while nothing is excluded.
        let m = matcher(&["!x\\q"]);
        assert_eq!(m.matches_exact(b"x").ok(), Some(false));
    }

    #[test]
    fn locate_prefers_dockerfile_specific_ignore() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(".dockerignore"), "general\n").expect("write");
        let dockerfile = dir.path().join("build.Dockerfile");
        std::fs::write(&dockerfile, "FROM scratch\n").expect("write");
        let found = locate_ignore_file(dir.path(), Some(&dockerfile))
            .expect("ok")
            .expect("some");
        assert_eq!(found.path, dir.path().join(".dockerignore"));
        std::fs::write(
            dir.path().join("build.Dockerfile.dockerignore"),
            "specific\n",
        )
        .expect("write");
        let found = locate_ignore_file(dir.path(), Some(&dockerfile))
            .expect("ok")
            .expect("some");
        assert_eq!(found.path, dir.path().join("build.Dockerfile.dockerignore"));
        assert_eq!(found.lines[0].pattern, b"specific");
        let empty = tempfile::tempdir().expect("tempdir");
        assert_eq!(locate_ignore_file(empty.path(), None).expect("ok"), None);
    }

    #[test]
    fn symlinked_ignore_file_must_stay_inside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(outside.path().join("secret"), "s3cr3t[\n").expect("write");
        std::os::unix::fs::symlink(
            outside.path().join("secret"),
            dir.path().join(".dockerignore"),
        )
        .expect("symlink");
        let err = locate_ignore_file(dir.path(), None).expect_err("must refuse");
        assert!(matches!(err, IgnoreError::SymlinkOutside { .. }), "{err}");
        std::fs::remove_file(dir.path().join(".dockerignore")).expect("rm");
        std::fs::write(dir.path().join("ignore.txt"), "inside\n").expect("write");
        std::os::unix::fs::symlink("ignore.txt", dir.path().join(".dockerignore"))
            .expect("symlink");
        let found = locate_ignore_file(dir.path(), None)
            .expect("ok")
            .expect("some");
        assert_eq!(found.lines[0].pattern, b"inside");
    }
}
