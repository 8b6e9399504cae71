//! One `.dockerignore` pattern, interpreted as moby/patternmatcher does, plus
//! the two Go standard-library helpers Docker's behaviour depends on:
//! `path/filepath.Clean` (lexical path cleaning) and `path/filepath.Match`
//! (shell globbing, which Docker uses to reject malformed patterns and
//! BuildKit uses for COPY source wildcards).
//!
//! A pattern is classified the way patternmatcher classifies it: an exact
//! string, a prefix (`dir/**`), a suffix (`**/name`), or else a regular
//! expression generated from the pattern and interpreted with Go's regex
//! rules (see [`super::goregex`]).

use super::goregex::{GoRegex, RegexError};

/// Decodes bytes into characters the way Go does when it ranges over a
/// string: each byte of an invalid UTF-8 sequence becomes U+FFFD.
pub(crate) fn decode_lossy(bytes: &[u8]) -> Vec<char> {
    let mut out = Vec::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.extend(chunk.valid().chars());
        out.extend(std::iter::repeat_n('\u{FFFD}', chunk.invalid().len()));
    }
    out
}

/// Go's `filepath.Clean` on Unix, on bytes: the shortest lexically equivalent
/// path (no `//`, no `.` elements, `..` resolved where possible; "" -> ".").
pub fn clean_path(path: &[u8]) -> Vec<u8> {
    let rooted = path.first() == Some(&b'/');
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in path.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                if parts.last().is_some_and(|last| *last != b"..") {
                    parts.pop();
                } else if !rooted {
                    parts.push(part);
                }
            }
            _ => parts.push(part),
        }
    }
    let mut out = Vec::with_capacity(path.len());
    if rooted {
        out.push(b'/');
    }
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(part);
    }
    if out.is_empty() {
        out.push(b'.');
    }
    out
}

/// Go's `filepath.Dir`: everything before the last `/`, cleaned.
pub fn dir_of(path: &[u8]) -> Vec<u8> {
    match path.iter().rposition(|&b| b == b'/') {
        Some(slash) => clean_path(&path[..=slash]),
        None => b".".to_vec(),
    }
}

/// A malformed shell pattern (Go's `filepath.ErrBadPattern`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadGlob;

/// Go's `filepath.Match` (Unix): whether `name` matches the shell pattern
/// `pattern`, where `*` and `?` never match `/`, `[...]` / `[^...]` are
/// character ranges and `\` escapes. Like Go, a syntax error is only
/// reported when the matcher reaches the bad part of the pattern.
pub fn glob_match(pattern: &[u8], name: &[u8]) -> Result<bool, BadGlob> {
    let mut pattern = pattern;
    let mut name = name;
    'chunks: while !pattern.is_empty() {
        let (star, chunk, rest) = scan_chunk(pattern);
        pattern = rest;
        if star && chunk.is_empty() {
            return Ok(!name.contains(&b'/'));
        }
        let attempt = match_chunk(chunk, name)?;
        if let Some(left) = attempt
            && (left.is_empty() || !pattern.is_empty())
        {
            name = left;
            continue;
        }
        if star {
            let mut skip = 0;
            while skip < name.len() && name[skip] != b'/' {
                if let Some(left) = match_chunk(chunk, &name[skip + 1..])?
                    && (!pattern.is_empty() || left.is_empty())
                {
                    name = left;
                    continue 'chunks;
                }
                skip += 1;
            }
        }
        return Ok(false);
    }
    Ok(name.is_empty())
}

/// Splits off the next run of stars and the non-star chunk after it.
fn scan_chunk(pattern: &[u8]) -> (bool, &[u8], &[u8]) {
    let stars = pattern.iter().take_while(|&&b| b == b'*').count();
    let pattern = &pattern[stars..];
    let mut in_range = false;
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            b'\\' if i + 1 < pattern.len() => {
                i += 1;
            }
            b'[' => in_range = true,
            b']' => in_range = false,
            b'*' if !in_range => break,
            _ => {}
        }
        i += 1;
    }
    (stars > 0, &pattern[..i], &pattern[i..])
}

/// Decodes one UTF-8 character at the start of `s` as Go does: invalid bytes
/// decode to U+FFFD with a width of one.
fn decode_first(s: &[u8]) -> (char, usize) {
    let take = s.len().min(4);
    for width in 1..=take {
        if let Ok(text) = std::str::from_utf8(&s[..width])
            && let Some(ch) = text.chars().next()
        {
            return (ch, width);
        }
    }
    ('\u{FFFD}', 1)
}

/// Matches a star-free chunk at the start of `s`; returns what is left of `s`
/// on success. Keeps checking the chunk's syntax after a mismatch, as Go does.
fn match_chunk<'a>(chunk: &[u8], s: &'a [u8]) -> Result<Option<&'a [u8]>, BadGlob> {
    let mut chunk = chunk;
    let mut s = s;
    let mut failed = false;
    while let Some(&first) = chunk.first() {
        if !failed && s.is_empty() {
            failed = true;
        }
        match first {
            b'[' => {
                let mut ch = '\0';
                if !failed {
                    let (c, width) = decode_first(s);
                    ch = c;
                    s = &s[width..];
                }
                chunk = &chunk[1..];
                let negated = chunk.first() == Some(&b'^');
                if negated {
                    chunk = &chunk[1..];
                }
                let mut matched = false;
                let mut ranges = 0;
                loop {
                    if chunk.first() == Some(&b']') && ranges > 0 {
                        chunk = &chunk[1..];
                        break;
                    }
                    let (lo, rest) = class_char(chunk)?;
                    chunk = rest;
                    let mut hi = lo;
                    if chunk.first() == Some(&b'-') {
                        let (h, rest) = class_char(&chunk[1..])?;
                        hi = h;
                        chunk = rest;
                    }
                    if lo <= ch && ch <= hi {
                        matched = true;
                    }
                    ranges += 1;
                }
                if matched == negated {
                    failed = true;
                }
            }
            b'?' => {
                if !failed {
                    if s[0] == b'/' {
                        failed = true;
                    }
                    let (_, width) = decode_first(s);
                    s = &s[width..];
                }
                chunk = &chunk[1..];
            }
            _ => {
                if first == b'\\' {
                    chunk = &chunk[1..];
                    if chunk.is_empty() {
                        return Err(BadGlob);
                    }
                }
                if !failed {
                    if chunk[0] != s[0] {
                        failed = true;
                    }
                    s = &s[1..];
                }
                chunk = &chunk[1..];
            }
        }
    }
    Ok(if failed { None } else { Some(s) })
}

/// One possibly escaped character inside `[...]`; what follows it must not
/// be empty (an unterminated class is malformed).
fn class_char(chunk: &[u8]) -> Result<(char, &[u8]), BadGlob> {
    let mut chunk = chunk;
    match chunk.first() {
        None | Some(b'-') | Some(b']') => return Err(BadGlob),
        Some(b'\\') => {
            chunk = &chunk[1..];
            if chunk.is_empty() {
                return Err(BadGlob);
            }
        }
        _ => {}
    }
    let (ch, width) = decode_first(chunk);
    let invalid = ch == '\u{FFFD}' && width == 1 && !chunk.starts_with("\u{FFFD}".as_bytes());
    let rest = &chunk[width..];
    if invalid || rest.is_empty() {
        return Err(BadGlob);
    }
    Ok((ch, rest))
}

/// How a pattern is matched (moby/patternmatcher's match types).
#[derive(Debug, Clone)]
pub(crate) enum MatchKind {
    /// The path equals the pattern.
    Exact,
    /// `foo/**`: the path starts with the pattern minus its trailing `**`.
    Prefix,
    /// `**/foo` with a literal rest: the path ends with the pattern minus its
    /// leading `**` (or equals it minus `**/`).
    Suffix,
    /// Everything else: a generated Go regular expression, or the reason it
    /// does not compile (reported when the pattern is first used, as Docker
    /// does).
    Regex(Result<GoRegex, RegexError>),
}

/// Go regex metacharacters that patternmatcher escapes. It means to escape
/// `.+()|{}$`, but its bitmap lookup overflows for characters from 64 up, so
/// `{`, `|` and `}` reach the regex unescaped (alternation, counted
/// repetition); Docker behaves that way, so kiln does too.
fn needs_regex_escape(ch: char) -> bool {
    matches!(ch, '.' | '+' | '(' | ')' | '$')
}

/// Classifies a cleaned pattern (without its `!`) and builds its regex text
/// exactly as patternmatcher's `compile` does.
pub(crate) fn classify(cleaned: &[u8]) -> MatchKind {
    let mut chars = decode_lossy(cleaned);
    // Go's text/scanner drops a byte-order mark at the very start.
    if chars.first() == Some(&'\u{FEFF}') {
        chars.remove(0);
    }
    let mut regex: Vec<char> = vec!['^'];
    let mut kind = Kind::Exact;
    let mut i = 0usize;
    let mut index = 0usize;
    while let Some(&ch) = chars.get(i) {
        i += 1;
        if ch == '*' {
            if chars.get(i) == Some(&'*') {
                i += 1;
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                if i >= chars.len() {
                    if kind == Kind::Exact {
                        kind = Kind::Prefix;
                    } else {
                        regex.extend(".*".chars());
                        kind = Kind::Regex;
                    }
                } else {
                    regex.extend("(.*/)?".chars());
                    kind = Kind::Regex;
                }
                if index == 0 {
                    kind = Kind::Suffix;
                }
            } else {
                regex.extend("[^/]*".chars());
                kind = Kind::Regex;
            }
        } else if ch == '?' {
            regex.extend("[^/]".chars());
            kind = Kind::Regex;
        } else if needs_regex_escape(ch) {
            regex.push('\\');
            regex.push(ch);
        } else if ch == '\\' {
            if let Some(&next) = chars.get(i) {
                i += 1;
                regex.push('\\');
                regex.push(next);
                kind = Kind::Regex;
            } else {
                regex.push('\\');
            }
        } else if ch == '[' || ch == ']' {
            regex.push(ch);
            kind = Kind::Regex;
        } else {
            regex.push(ch);
        }
        index += 1;
    }
    match kind {
        Kind::Exact => MatchKind::Exact,
        Kind::Prefix => MatchKind::Prefix,
        Kind::Suffix => MatchKind::Suffix,
        Kind::Regex => {
            regex.push('$');
            MatchKind::Regex(GoRegex::compile(&regex))
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Exact,
    Prefix,
    Suffix,
    Regex,
}

/// Matches `path` against a classified pattern. `Err` carries the regex
/// error for a pattern that cannot be compiled.
pub(crate) fn match_kind(
    kind: &MatchKind,
    cleaned: &[u8],
    path: &[u8],
) -> Result<bool, RegexError> {
    match kind {
        MatchKind::Exact => Ok(path == cleaned),
        MatchKind::Prefix => Ok(path.starts_with(&cleaned[..cleaned.len().saturating_sub(2)])),
        MatchKind::Suffix => {
            let suffix = cleaned.get(2..).unwrap_or_default();
            if path.ends_with(suffix) {
                return Ok(true);
            }
            Ok(suffix.first() == Some(&b'/') && path == &suffix[1..])
        }
        MatchKind::Regex(compiled) => match compiled {
            Ok(regex) => Ok(regex.is_match(&decode_lossy(path))),
            Err(err) => Err(err.clone()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_matches_go() {
        let cases: &[(&str, &str)] = &[
            ("", "."),
            ("a//b/./c/", "a/b/c"),
            ("/../a", "/a"),
            ("../../a/..", "../.."),
            ("a/../..", ".."),
            ("/", "/"),
            ("./", "."),
            ("!a/../b", "b"),
        ];
        for (input, want) in cases {
            assert_eq!(
                String::from_utf8_lossy(&clean_path(input.as_bytes())),
                *want,
                "clean({input:?})"
            );
        }
    }

    #[test]
    fn dir_matches_go() {
        assert_eq!(dir_of(b"a/b/c"), b"a/b");
        assert_eq!(dir_of(b"a"), b".");
        assert_eq!(dir_of(b"/a"), b"/");
        assert_eq!(dir_of(b"a//b"), b"a");
    }

    #[test]
    fn glob_match_basics() {
        assert_eq!(glob_match(b"*.go", b"main.go"), Ok(true));
        assert_eq!(glob_match(b"*.go", b"src/main.go"), Ok(false));
        assert_eq!(glob_match(b"src/*.go", b"src/main.go"), Ok(true));
        assert_eq!(glob_match(b"a?c", b"abc"), Ok(true));
        assert_eq!(glob_match(b"a?c", b"a/c"), Ok(false));
        assert_eq!(glob_match(b"[a-c]x", b"bx"), Ok(true));
        assert_eq!(glob_match(b"[^a-c]x", b"bx"), Ok(false));
        assert_eq!(glob_match(b"\\*", b"*"), Ok(true));
        assert_eq!(glob_match(b"[", b"."), Err(BadGlob));
        assert_eq!(glob_match(b"a\\", b"."), Err(BadGlob));
        assert_eq!(glob_match(b"[a-]", b"."), Err(BadGlob));
        // Like Go 1.19, a trailing star returns before the rest is checked.
        assert_eq!(glob_match(b"*", b"."), Ok(true));
    }

    fn kind_name(pattern: &str) -> &'static str {
        match classify(pattern.as_bytes()) {
            MatchKind::Exact => "exact",
            MatchKind::Prefix => "prefix",
            MatchKind::Suffix => "suffix",
            MatchKind::Regex(_) => "regex",
        }
    }

    #[test]
    fn classification_matches_patternmatcher() {
        assert_eq!(kind_name("a/b.txt"), "exact");
        assert_eq!(kind_name("a/**"), "prefix");
        assert_eq!(kind_name("**"), "suffix");
        assert_eq!(kind_name("**/a.txt"), "suffix");
        assert_eq!(kind_name("**/*.txt"), "regex");
        assert_eq!(kind_name("a/**/b"), "regex");
        assert_eq!(kind_name("a\\b"), "regex");
    }

    fn matches(pattern: &str, path: &str) -> bool {
        let kind = classify(pattern.as_bytes());
        match_kind(&kind, pattern.as_bytes(), path.as_bytes()).expect("pattern compiles")
    }

    #[test]
    fn double_star_forms() {
        assert!(matches("**/a", "a"));
        assert!(matches("**/a", "x/y/a"));
        // The suffix form compares bytes: `**a` matches any path ending in a.
        assert!(matches("**a", "xa"));
        assert!(matches("a/**", "a/b/c"));
        assert!(!matches("a/**", "a"));
        assert!(matches("a/**/b", "a/b"));
        assert!(matches("a/**/b", "a/x/y/b"));
        assert!(matches("*/**", "x/y"));
        assert!(matches("**/*.go", "main.go"));
        assert!(matches("**/*.go", "a/b/main.go"));
    }
}
