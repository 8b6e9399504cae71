//! Finding heredoc markers (`<<EOF`, `<<-EOF`, `3<<"EOF"`) in an
//! instruction line, as BuildKit does.
//!
//! BuildKit splits the whole logical line into shell words with its shell
//! lexer in "raw" mode (quotes and escapes kept, unset variables left as
//! written, escape character always `\`), then takes every word that matches
//! `^(\d*)<<(-?)([^<]*)$`. The delimiter is that word lexed again without raw
//! mode; if that changes the number of quote characters, part of it was
//! quoted and the heredoc content is not expanded. When the line cannot be
//! lexed at all (an unterminated quote) BuildKit finds no heredocs; this
//! module does the same. The small lexer here only needs word boundaries and
//! quote handling, not expansion, so it is separate from [`crate::shell`].

use std::ops::Range;

/// A heredoc marker found in a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Marker {
    pub name: String,
    pub file_descriptor: u32,
    pub expand: bool,
    pub chomp: bool,
    /// Byte range of the marker word in the line.
    pub range: Range<usize>,
}

/// Why a heredoc marker is invalid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MarkerError {
    pub word: String,
    pub range: Range<usize>,
}

/// The heredoc markers of `line`, in order.
pub(crate) fn markers(line: &str) -> Result<Vec<Marker>, MarkerError> {
    let Ok(words) = Lexer::new(line, true).words() else {
        return Ok(Vec::new());
    };
    let mut found = Vec::new();
    for (word, range) in words {
        let digits = word.bytes().take_while(u8::is_ascii_digit).count();
        let Some(after) = word[digits..].strip_prefix("<<") else {
            continue;
        };
        let (chomp, rest) = match after.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, after),
        };
        if rest.is_empty() || rest.contains('<') {
            continue;
        }
        // Go's ParseUint error (overflow) leaves 0.
        let file_descriptor = word[..digits].parse::<u32>().unwrap_or(0);
        let error = || MarkerError {
            word: word.clone(),
            range: range.clone(),
        };
        let cooked = Lexer::new(rest, false).words().map_err(|_| error())?;
        let [(name, _)] = cooked.as_slice() else {
            continue;
        };
        let raw = Lexer::new(rest, true).words().map_err(|_| error())?;
        let [(raw_name, _)] = raw.as_slice() else {
            return Err(error());
        };
        let quotes = |s: &str| s.bytes().filter(|b| *b == b'\'' || *b == b'"').count();
        found.push(Marker {
            name: name.clone(),
            file_descriptor,
            expand: quotes(name) == quotes(raw_name),
            chomp,
            range,
        });
    }
    Ok(found)
}

/// Lexing failed (unterminated quote, bad `${`): BuildKit then finds no
/// heredocs in the line.
#[derive(Debug)]
struct LexError;

/// Nesting limit for `${a:-${b:-...}}` so hostile input cannot exhaust the
/// stack.
const MAX_NESTING: usize = 64;

/// Word accumulator with BuildKit's `wordsStruct` rules.
#[derive(Default)]
struct Words {
    words: Vec<(String, Range<usize>)>,
    word: String,
    in_word: bool,
    start: usize,
    end: usize,
}

impl Words {
    fn add_raw_char(&mut self, ch: char, at: Range<usize>) {
        if self.word.is_empty() {
            self.start = at.start;
        }
        self.word.push(ch);
        self.end = at.end;
        self.in_word = true;
    }

    fn add_char(&mut self, ch: char, at: Range<usize>) {
        if ch.is_whitespace() {
            if self.in_word && !self.word.is_empty() {
                let word = std::mem::take(&mut self.word);
                self.words.push((word, self.start..self.end));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(ch, at);
        }
    }

    fn add_string(&mut self, text: &str, at: Range<usize>) {
        for ch in text.chars() {
            self.add_char(ch, at.clone());
        }
    }

    fn add_raw_string(&mut self, text: &str, at: Range<usize>) {
        if self.word.is_empty() {
            self.start = at.start;
        }
        self.word.push_str(text);
        self.end = at.end;
        self.in_word = true;
    }

    fn finish(mut self) -> Vec<(String, Range<usize>)> {
        if !self.word.is_empty() {
            let word = std::mem::take(&mut self.word);
            self.words.push((word, self.start..self.end));
        }
        self.words
    }
}

/// BuildKit's shell lexer with an empty environment and `SkipUnsetEnv`, so
/// `$` forms stay as written; `raw` keeps quotes and escapes.
struct Lexer<'a> {
    text: &'a str,
    pos: usize,
    raw: bool,
    depth: usize,
}

const ESCAPE: char = '\\';

impl<'a> Lexer<'a> {
    fn new(text: &'a str, raw: bool) -> Self {
        Lexer {
            text,
            pos: 0,
            raw,
            depth: 0,
        }
    }

    fn peek(&self) -> Option<char> {
        self.text.get(self.pos..)?.chars().next()
    }

    fn next_char(&mut self) -> Option<char> {
        let ch = self.peek()?;
        self.pos += ch.len_utf8();
        Some(ch)
    }

    fn words(mut self) -> Result<Vec<(String, Range<usize>)>, LexError> {
        let raw = self.raw;
        let (_, words) = self.process_stop_on(None, raw)?;
        Ok(words.finish())
    }

    fn process_stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Words), LexError> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(LexError);
        }
        let mut result = String::new();
        let mut words = Words::default();
        while let Some(ch) = self.peek() {
            let start = self.pos;
            if Some(ch) == stop {
                self.next_char();
                self.depth -= 1;
                return Ok((result, words));
            }
            match ch {
                '\'' => {
                    let text = self.single_quote()?;
                    result.push_str(&text);
                    words.add_raw_string(&text, start..self.pos);
                }
                '"' => {
                    let text = self.double_quote()?;
                    result.push_str(&text);
                    words.add_raw_string(&text, start..self.pos);
                }
                '$' => {
                    let text = self.dollar()?;
                    result.push_str(&text);
                    words.add_string(&text, start..self.pos);
                }
                _ => {
                    self.next_char();
                    if ch == ESCAPE {
                        if raw_escapes {
                            words.add_raw_char(ch, start..self.pos);
                            result.push(ch);
                        }
                        let escaped_start = self.pos;
                        let Some(escaped) = self.next_char() else {
                            break;
                        };
                        words.add_raw_char(escaped, escaped_start..self.pos);
                        result.push(escaped);
                    } else {
                        words.add_char(ch, start..self.pos);
                        result.push(ch);
                    }
                }
            }
        }
        if stop.is_some() {
            return Err(LexError);
        }
        self.depth -= 1;
        Ok((result, words))
    }

    fn single_quote(&mut self) -> Result<String, LexError> {
        let mut result = String::new();
        let quote = self.next_char().ok_or(LexError)?;
        if self.raw {
            result.push(quote);
        }
        loop {
            match self.next_char() {
                None => return Err(LexError),
                Some('\'') => {
                    if self.raw {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(ch) => result.push(ch),
            }
        }
    }

    fn double_quote(&mut self) -> Result<String, LexError> {
        let mut result = String::new();
        let quote = self.next_char().ok_or(LexError)?;
        if self.raw {
            result.push(quote);
        }
        loop {
            let ch = self.peek().ok_or(LexError)?;
            if ch == '"' {
                self.next_char();
                if self.raw {
                    result.push(ch);
                }
                return Ok(result);
            }
            if ch == '$' {
                let value = self.dollar()?;
                result.push_str(&value);
                continue;
            }
            self.next_char();
            let mut out = ch;
            if ch == ESCAPE {
                if self.raw {
                    result.push(ch);
                }
                match self.peek() {
                    None => continue,
                    Some('"' | '$' | ESCAPE) => {
                        out = self.next_char().ok_or(LexError)?;
                    }
                    Some(_) => {}
                }
            }
            result.push(out);
        }
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && ch.is_ascii_digit() {
                while let Some(digit) = self.peek().filter(char::is_ascii_digit) {
                    self.next_char();
                    name.push(digit);
                }
                return name;
            }
            if name.is_empty() && matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.next_char();
                name.push(ch);
                return name;
            }
            if !ch.is_alphanumeric() && ch != '_' {
                break;
            }
            self.next_char();
            name.push(ch);
        }
        name
    }

    fn dollar(&mut self) -> Result<String, LexError> {
        self.next_char();
        if self.peek() != Some('{') {
            let name = self.name();
            return Ok(format!("${name}"));
        }
        self.next_char();
        match self.peek() {
            None | Some('{' | '}' | ':') => return Err(LexError),
            Some(_) => {}
        }
        let name = self.name();
        let modifier = self.next_char().ok_or(LexError)?;
        match modifier {
            '}' => Ok(format!("${{{name}}}")),
            ':' => {
                let second = self.next_char().ok_or(LexError)?;
                if second == '#' || second == '%' {
                    return Err(LexError);
                }
                let (word, _) = self.process_stop_on(Some('}'), false)?;
                Ok(format!("${{{name}:{second}{word}}}"))
            }
            '+' | '-' | '?' | '#' | '%' => {
                let raw_escapes = modifier == '#' || modifier == '%';
                let (word, _) = self.process_stop_on(Some('}'), raw_escapes)?;
                Ok(format!("${{{name}{modifier}{word}}}"))
            }
            '/' => {
                if self.peek() == Some('/') {
                    self.next_char();
                }
                let (pattern, _) = self.process_stop_on(Some('/'), true)?;
                let (replacement, _) = self.process_stop_on(Some('}'), true)?;
                Ok(format!("${{{name}/{pattern}/{replacement}}}"))
            }
            _ => Err(LexError),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(line: &str) -> Vec<(String, bool, bool, u32)> {
        markers(line)
            .unwrap()
            .into_iter()
            .map(|m| (m.name, m.expand, m.chomp, m.file_descriptor))
            .collect()
    }

    #[test]
    fn finds_plain_quoted_chomped_and_fd_markers() {
        assert_eq!(names("RUN <<EOF"), [("EOF".into(), true, false, 0)]);
        assert_eq!(names("RUN <<-EOT bash"), [("EOT".into(), true, true, 0)]);
        assert_eq!(names(r#"RUN <<"EOF""#), [("EOF".into(), false, false, 0)]);
        assert_eq!(names("RUN <<'EOF'"), [("EOF".into(), false, false, 0)]);
        assert_eq!(names(r#"RUN <<E"O"F"#), [("EOF".into(), false, false, 0)]);
        assert_eq!(
            names("RUN 3<<EOF cat /proc/self/fd/3"),
            [("EOF".into(), true, false, 3)]
        );
        assert_eq!(
            names("COPY <<FILE1 <<FILE2 /dest/"),
            [
                ("FILE1".into(), true, false, 0),
                ("FILE2".into(), true, false, 0)
            ]
        );
    }

    #[test]
    fn not_markers() {
        assert!(names("RUN echo '<<EOF'").is_empty());
        assert!(names("RUN cat <<").is_empty());
        assert!(names("RUN a<<EOF").is_empty());
        assert!(names("RUN <<EOF 'unterminated").is_empty());
        assert!(names("RUN <<E<F").is_empty());
    }

    #[test]
    fn marker_range_points_at_the_word() {
        let line = "RUN python3 <<EOF";
        let found = markers(line).unwrap();
        assert_eq!(&line[found[0].range.clone()], "<<EOF");
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let line = format!("RUN {}x <<EOF", "${a:-".repeat(10_000));
        assert!(markers(&line).unwrap().is_empty());
    }
}
