//! Splitting an instruction line into its name, flags and words, with the
//! quirks of BuildKit's `split_command.go` and `parseWords`.
//!
//! All functions return byte ranges into the text they are given, so that
//! the caller can attach source spans; none of them allocate per character.

use std::ops::Range;

/// ASCII whitespace as Go's `[\t\v\f\r ]` class (and `\n`, which cannot
/// occur inside a line).
pub(crate) fn is_ascii_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// Splits a logical line into the instruction name and the rest, like
/// BuildKit: the line is trimmed of Unicode whitespace, the name ends at the
/// first run of ASCII whitespace. Returns (name range, rest start) where the
/// rest is `None` when there is nothing after the name.
pub(crate) fn split_name(line: &str) -> (Range<usize>, Option<usize>) {
    let trimmed_start = line.len() - line.trim_start().len();
    let trimmed_end = line.trim_end().len().max(trimmed_start);
    let bytes = line.as_bytes();
    let mut name_end = trimmed_start;
    while name_end < trimmed_end && !is_ascii_space(bytes[name_end]) {
        name_end += 1;
    }
    if name_end == trimmed_end {
        return (trimmed_start..name_end, None);
    }
    let mut rest_start = name_end;
    while rest_start < trimmed_end && is_ascii_space(bytes[rest_start]) {
        rest_start += 1;
    }
    (trimmed_start..name_end, Some(rest_start))
}

/// A flag word as BuildKit extracts it: quotes and backslashes removed.
pub(crate) struct RawFlag {
    pub text: String,
    pub range: Range<usize>,
}

/// BuildKit's `extractBuilderFlags`: reads `--words` from the start of
/// `line` until a word that does not start with `--`, or a lone `--`.
/// Returns the flags and where the remaining text starts.
///
/// Deviation: BuildKit scans bytes and treats the bytes 0x85 and 0xA0 as
/// spaces even inside a UTF-8 sequence (splitting characters in half); here
/// only ASCII whitespace separates flags, so text stays valid UTF-8.
pub(crate) fn extract_flags(line: &str) -> (Vec<RawFlag>, usize) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let bytes = line.as_bytes();
    let mut flags = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word: Vec<u8> = Vec::new();
    let mut blank_ok = false;
    let mut quote = 0u8;
    let mut start = 0;
    let mut pos = 0;
    let finish = |word: &mut Vec<u8>, flags: &mut Vec<RawFlag>, range: Range<usize>| {
        let text = String::from_utf8_lossy(word).into_owned();
        word.clear();
        flags.push(RawFlag { text, range });
    };
    loop {
        let at_end = pos >= bytes.len();
        let ch = bytes.get(pos).copied().unwrap_or(0);
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if is_ascii_space(ch) {
                pos += 1;
                continue;
            }
            if ch != b'-' || bytes.get(pos + 1) != Some(&b'-') {
                return (flags, pos);
            }
            phase = Phase::Word;
            start = pos;
        }
        if at_end {
            if word.as_slice() != b"--" && (blank_ok || !word.is_empty()) {
                finish(&mut word, &mut flags, start..pos);
            }
            break;
        }
        if phase == Phase::Word {
            if is_ascii_space(ch) {
                phase = Phase::Spaces;
                if word.as_slice() == b"--" {
                    return (flags, pos);
                }
                if blank_ok || !word.is_empty() {
                    finish(&mut word, &mut flags, start..pos);
                }
                word.clear();
                blank_ok = false;
                pos += 1;
                continue;
            }
            if ch == b'\'' || ch == b'"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
                pos += 1;
                continue;
            }
            let mut byte = ch;
            if ch == b'\\' {
                if pos + 1 == bytes.len() {
                    pos += 1;
                    continue;
                }
                pos += 1;
                byte = bytes[pos];
            }
            word.push(byte);
            pos += 1;
            continue;
        }
        // Phase::Quote
        if ch == quote {
            phase = Phase::Word;
            pos += 1;
            continue;
        }
        let mut byte = ch;
        if ch == b'\\' {
            if pos + 1 == bytes.len() {
                phase = Phase::Word;
                pos += 1;
                continue;
            }
            pos += 1;
            byte = bytes[pos];
        }
        word.push(byte);
        pos += 1;
    }
    (flags, bytes.len())
}

/// BuildKit's `parseWords`: words separated by Unicode whitespace, quotes
/// and escapes kept (so each word is a contiguous piece of `text`), an
/// escape character at the very end dropped.
pub(crate) fn split_words(text: &str, escape: char) -> Vec<Range<usize>> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut start = 0;
    let mut end = 0;
    let mut blank_ok = false;
    let mut quote = '\0';
    let mut chars = text.char_indices();
    while let Some((pos, ch)) = chars.next() {
        let next_pos = pos + ch.len_utf8();
        let at_last = next_pos == text.len();
        if phase == Phase::Spaces {
            if ch.is_whitespace() {
                continue;
            }
            phase = Phase::Word;
            start = pos;
            end = pos;
        }
        if phase == Phase::Word {
            if ch.is_whitespace() {
                phase = Phase::Spaces;
                if blank_ok || end > start {
                    words.push(start..end);
                }
                blank_ok = false;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
            }
            if ch == escape {
                if at_last {
                    continue;
                }
                if let Some((escaped_pos, escaped)) = chars.next() {
                    end = escaped_pos + escaped.len_utf8();
                }
                continue;
            }
            end = next_pos;
            continue;
        }
        // Phase::Quote
        if ch == quote {
            phase = Phase::Word;
        }
        if ch == escape && quote != '\'' {
            if at_last {
                phase = Phase::Word;
                continue;
            }
            if let Some((escaped_pos, escaped)) = chars.next() {
                end = escaped_pos + escaped.len_utf8();
            }
            continue;
        }
        end = next_pos;
    }
    if phase != Phase::Spaces && (blank_ok || end > start) {
        words.push(start..end);
    }
    words
}

/// Splits on runs of ASCII whitespace like Go's `reWhitespace.Split(s, -1)`
/// (`s` is already trimmed, so there are no empty pieces at the ends).
pub(crate) fn split_ascii_whitespace_ranges(text: &str) -> Vec<Range<usize>> {
    let bytes = text.as_bytes();
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut pos = 0;
    while pos < bytes.len() {
        if is_ascii_space(bytes[pos]) {
            pieces.push(start..pos);
            while pos < bytes.len() && is_ascii_space(bytes[pos]) {
                pos += 1;
            }
            start = pos;
        } else {
            pos += 1;
        }
    }
    pieces.push(start..bytes.len());
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<&str> {
        split_words(text, '\\')
            .into_iter()
            .map(|r| &text[r])
            .collect()
    }

    fn flags(line: &str) -> (Vec<String>, &str) {
        let (flags, rest) = extract_flags(line);
        (flags.into_iter().map(|f| f.text).collect(), &line[rest..])
    }

    #[test]
    fn words_keep_quotes_and_escapes() {
        assert_eq!(
            words(r#"a="b c" d\ e 'f g'"#),
            [r#"a="b c""#, r"d\ e", "'f g'"]
        );
        assert_eq!(words("a ''"), ["a", "''"]);
        assert_eq!(words(r"a\"), ["a"]);
        assert_eq!(words("  "), Vec::<&str>::new());
    }

    #[test]
    fn flags_stop_at_first_non_flag_or_double_dash() {
        assert_eq!(
            flags("--a=1 --b x y"),
            (vec!["--a=1".into(), "--b".into()], "x y")
        );
        assert_eq!(flags("--a=1 -- --b"), (vec!["--a=1".into()], " --b"));
        assert_eq!(flags(r#"--a="x y" z"#), (vec!["--a=x y".into()], "z"));
        assert_eq!(flags("--a"), (vec!["--a".into()], ""));
        assert_eq!(flags("-a"), (vec![], "-a"));
    }

    #[test]
    fn name_split_uses_ascii_whitespace() {
        assert_eq!(split_name("  RUN  echo "), (2..5, Some(7)));
        assert_eq!(split_name("RUN"), (0..3, None));
        assert_eq!(split_name(""), (0..0, None));
    }
}
