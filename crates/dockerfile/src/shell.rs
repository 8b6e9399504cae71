//! Shell-word expansion with BuildKit's semantics (`frontend/dockerfile/shell`).
//!
//! A Dockerfile word such as `"$HOME"/app` or `${VERSION:-1.0}` is expanded the
//! way BuildKit's `shell.Lex` does it, quirks included, because the same
//! Dockerfile must produce the same image: quotes are removed, the escape
//! character (backslash, or backtick after `# escape=`) escapes the next
//! character, `$NAME` / `${NAME}` and the modifiers `:-` `-` `:+` `+` `:?` `?`
//! `#` `##` `%` `%%` `/` `//` are applied, and unknown variables expand to the
//! empty string. The result is either one word ([`Lexer::process_word`]) or
//! a list of words split on unquoted whitespace that came from the input or
//! from variable values ([`Lexer::process_words`]). [`Lexer::expand`] also
//! reports which variables were looked up and found (for cache keys) and
//! which were looked up and not set (for lint).
//!
//! The scanner works on `char`s with a byte cursor; there is no regular
//! expression anywhere (the glob patterns of `#`, `%` and `/` are matched by a
//! small backtracking matcher with BuildKit's leftmost-first preferences).

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Where variable values come from during expansion.
///
/// Implemented for maps and for slices of `(name, value)` pairs (the last
/// pair for a name wins, as with Docker's `KEY=VALUE` lists).
pub trait Env {
    /// The value of `name`, or `None` when it is not set. A variable set to the
    /// empty string is `Some("")`, which `${NAME-x}` and `${NAME:-x}` treat
    /// differently.
    fn lookup(&self, name: &str) -> Option<&str>;
}

impl<E: Env + ?Sized> Env for &E {
    fn lookup(&self, name: &str) -> Option<&str> {
        (**self).lookup(name)
    }
}

impl<S: std::hash::BuildHasher> Env for HashMap<String, String, S> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

impl Env for BTreeMap<String, String> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

impl<K: AsRef<str>, V: AsRef<str>> Env for [(K, V)] {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.iter()
            .rev()
            .find(|(key, _)| key.as_ref() == name)
            .map(|(_, value)| value.as_ref())
    }
}

impl<K: AsRef<str>, V: AsRef<str>> Env for Vec<(K, V)> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.as_slice().lookup(name)
    }
}

impl<K: AsRef<str>, V: AsRef<str>, const N: usize> Env for [(K, V); N] {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.as_slice().lookup(name)
    }
}

/// An environment with no variables at all.
#[derive(Debug, Clone, Copy, Default)]
pub struct EmptyEnv;

impl Env for EmptyEnv {
    fn lookup(&self, _name: &str) -> Option<&str> {
        None
    }
}

/// Parses Docker-style `KEY=VALUE` strings into pairs; an entry without `=`
/// is a variable set to the empty string (BuildKit's `BuildEnvs`).
pub fn env_pairs_from_strings<'a>(
    entries: impl IntoIterator<Item = &'a str>,
) -> Vec<(String, String)> {
    entries
        .into_iter()
        .map(|entry| match entry.split_once('=') {
            Some((key, value)) => (key.to_string(), value.to_string()),
            None => (entry.to_string(), String::new()),
        })
        .collect()
}

/// What went wrong while expanding a word.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandErrorKind {
    #[error("unexpected end of statement while looking for matching {0}")]
    UnexpectedEnd(char),
    #[error("unexpected end of statement while looking for matching single-quote")]
    UnterminatedSingleQuote,
    #[error("unexpected end of statement while looking for matching double-quote")]
    UnterminatedDoubleQuote,
    #[error("syntax error: missing '}}'")]
    MissingBrace,
    #[error("syntax error: missing '/' in ${{}}")]
    MissingSlash,
    #[error("syntax error: bad substitution")]
    BadSubstitution,
    #[error("unsupported modifier ({0}) in substitution")]
    UnsupportedModifier(String),
    /// `${NAME?message}` / `${NAME:?message}` with the variable unset (or empty).
    #[error("{name}: {message}")]
    Required { name: String, message: String },
    #[error("variable references nested more than {0} deep")]
    TooDeep(usize),
    #[error("invalid pattern ({pattern}) in substitution: invalid escape '\\{escaped}'")]
    InvalidPattern { pattern: String, escaped: char },
}

/// A word that could not be expanded: the word, the byte offset in it where
/// the problem was found, and what the problem is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to process {word:?}: {kind}")]
pub struct ExpandError {
    pub word: String,
    /// Byte offset into `word` where scanning stopped.
    pub offset: usize,
    pub kind: ExpandErrorKind,
}

impl ExpandError {
    /// A suggestion for the user, when an obvious fix exists.
    pub fn hint(&self) -> Option<String> {
        match &self.kind {
            ExpandErrorKind::UnterminatedSingleQuote => {
                Some("close the single quote, or escape it with the escape character".into())
            }
            ExpandErrorKind::UnterminatedDoubleQuote => {
                Some("close the double quote, or escape it with the escape character".into())
            }
            ExpandErrorKind::MissingBrace | ExpandErrorKind::UnexpectedEnd('}') => {
                Some("close the variable reference with '}'".into())
            }
            ExpandErrorKind::BadSubstitution => Some(
                "a variable reference is ${NAME} where NAME is letters, digits and '_'; write \\$ for a literal dollar sign".into(),
            ),
            ExpandErrorKind::UnsupportedModifier(_) => Some(
                "supported forms: ${NAME} ${NAME:-word} ${NAME-word} ${NAME:+word} ${NAME+word} ${NAME:?msg} ${NAME?msg} ${NAME#pat} ${NAME##pat} ${NAME%pat} ${NAME%%pat} ${NAME/pat/repl} ${NAME//pat/repl}".into(),
            ),
            ExpandErrorKind::Required { name, .. } => {
                Some(format!("set {name}, e.g. with --build-arg {name}=VALUE"))
            }
            ExpandErrorKind::InvalidPattern { .. } => {
                Some("in patterns only \\*, \\? and \\\\ are valid escapes".into())
            }
            ExpandErrorKind::MissingSlash => Some("write ${NAME/pattern/replacement}".into()),
            ExpandErrorKind::TooDeep(_) => Some("simplify the word; nesting this deep is not supported".into()),
            ExpandErrorKind::UnexpectedEnd(_) => None,
        }
    }
}

/// The full outcome of expanding one word.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expansion {
    /// The word as one string (BuildKit `ProcessWord`).
    pub word: String,
    /// The word split into fields (BuildKit `ProcessWords`).
    pub words: Vec<String>,
    /// Variables that were looked up and set.
    pub matched: BTreeSet<String>,
    /// Variables that were looked up and not set (including positional and
    /// special parameters like `$1` and `$@`, which are never set).
    pub unmatched: BTreeSet<String>,
}

/// Expands shell words; cheap to construct and to copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lexer {
    escape: char,
    raw_quotes: bool,
    raw_escapes: bool,
    skip_process_quotes: bool,
    skip_unset: bool,
}

impl Default for Lexer {
    fn default() -> Self {
        Lexer::new('\\')
    }
}

impl Lexer {
    /// A lexer whose escape character is `escape` (`\\` by default, `` ` `` after
    /// `# escape=\``).
    pub fn new(escape: char) -> Self {
        Lexer {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_process_quotes: false,
            skip_unset: false,
        }
    }

    /// The escape character.
    pub fn escape(&self) -> char {
        self.escape
    }

    /// Keep quote characters in the output (BuildKit `RawQuotes`).
    pub fn with_raw_quotes(mut self, raw: bool) -> Self {
        self.raw_quotes = raw;
        self
    }

    /// Keep escape characters in the output (BuildKit `RawEscapes`).
    pub fn with_raw_escapes(mut self, raw: bool) -> Self {
        self.raw_escapes = raw;
        self
    }

    /// Treat quotes as ordinary characters (BuildKit `SkipProcessQuotes`).
    pub fn with_skip_process_quotes(mut self, skip: bool) -> Self {
        self.skip_process_quotes = skip;
        self
    }

    /// Leave references to unset variables as written, e.g. `${A:-x}` stays
    /// `${A:-x}` when `A` is unset (BuildKit `SkipUnsetEnv`).
    pub fn with_skip_unset(mut self, skip: bool) -> Self {
        self.skip_unset = skip;
        self
    }

    /// Expands `word` into a single string (BuildKit `ProcessWord`).
    pub fn process_word(
        &self,
        word: &str,
        env: &(impl Env + ?Sized),
    ) -> Result<String, ExpandError> {
        if self.is_plain(word) {
            return Ok(word.to_string());
        }
        self.run(word, env, false, false).map(|state| state.result)
    }

    /// Expands `word` and splits it into fields on whitespace that is neither
    /// quoted nor escaped (BuildKit `ProcessWords`).
    pub fn process_words(
        &self,
        word: &str,
        env: &(impl Env + ?Sized),
    ) -> Result<Vec<String>, ExpandError> {
        if self.is_plain(word) {
            return Ok(word
                .split(char::is_whitespace)
                .filter(|w| !w.is_empty())
                .map(str::to_string)
                .collect());
        }
        self.run(word, env, true, false)
            .map(|mut state| state.words.finish())
    }

    /// Like [`Lexer::expand`], but computes [`Expansion::words`] only when
    /// `split` is true (it is left empty otherwise), which saves work for
    /// single-word expansion.
    pub fn expand_with(
        &self,
        word: &str,
        env: &(impl Env + ?Sized),
        split: bool,
    ) -> Result<Expansion, ExpandError> {
        let mut state = self.run(word, env, split, true)?;
        Ok(Expansion {
            words: state.words.finish(),
            word: state.result,
            matched: state.matched,
            unmatched: state.unmatched,
        })
    }

    /// Expands `word`, returning the single-string and the split results and
    /// the variables that were used and missing.
    pub fn expand(&self, word: &str, env: &(impl Env + ?Sized)) -> Result<Expansion, ExpandError> {
        let mut state = self.run(word, env, true, true)?;
        Ok(Expansion {
            words: state.words.finish(),
            word: state.result,
            matched: state.matched,
            unmatched: state.unmatched,
        })
    }

    /// True when `word` contains nothing this lexer would change, so that it
    /// can be returned as is.
    fn is_plain(&self, word: &str) -> bool {
        let special_ascii =
            |b: u8| b == b'$' || (!self.skip_process_quotes && (b == b'\'' || b == b'"'));
        if word.starts_with('\u{feff}') {
            return false;
        }
        if self.escape.is_ascii() {
            let escape = self.escape as u8;
            word.bytes().all(|b| !special_ascii(b) && b != escape)
        } else {
            word.bytes().all(|b| !special_ascii(b)) && !word.contains(self.escape)
        }
    }

    fn run<E: Env + ?Sized>(
        &self,
        word: &str,
        env: &E,
        track_words: bool,
        track: bool,
    ) -> Result<Outcome, ExpandError> {
        let mut scanner = Scanner {
            lexer: *self,
            src: word,
            pos: 0,
            env,
            track,
            depth: 0,
            matched: BTreeSet::new(),
            unmatched: BTreeSet::new(),
        };
        // Go's text/scanner drops a byte order mark at the start of its input.
        if word.starts_with('\u{feff}') {
            scanner.pos = '\u{feff}'.len_utf8();
        }
        let mut words = Words::new(track_words);
        let result = scanner
            .process_stop_on(None, self.raw_escapes, &mut words)
            .map_err(|kind| ExpandError {
                word: word.to_string(),
                offset: scanner.pos,
                kind,
            })?;
        Ok(Outcome {
            result,
            words,
            matched: scanner.matched,
            unmatched: scanner.unmatched,
        })
    }
}

struct Outcome {
    result: String,
    words: Words,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
}

/// Field splitting state (BuildKit `wordsStruct`).
struct Words {
    enabled: bool,
    current: String,
    in_word: bool,
    done: Vec<String>,
}

impl Words {
    fn new(enabled: bool) -> Self {
        Words {
            enabled,
            current: String::new(),
            in_word: false,
            done: Vec::new(),
        }
    }

    /// A character subject to splitting.
    fn add_char(&mut self, ch: char) {
        if !self.enabled {
            return;
        }
        if ch.is_whitespace() {
            if self.in_word && !self.current.is_empty() {
                self.done.push(std::mem::take(&mut self.current));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(ch);
        }
    }

    fn add_raw_char(&mut self, ch: char) {
        if self.enabled {
            self.current.push(ch);
            self.in_word = true;
        }
    }

    fn add_str(&mut self, text: &str) {
        for ch in text.chars() {
            self.add_char(ch);
        }
    }

    fn add_raw_str(&mut self, text: &str) {
        if self.enabled {
            self.current.push_str(text);
            self.in_word = true;
        }
    }

    fn finish(&mut self) -> Vec<String> {
        if !self.current.is_empty() {
            self.done.push(std::mem::take(&mut self.current));
            self.in_word = false;
        }
        std::mem::take(&mut self.done)
    }
}

/// How deeply `${...}` may nest inside one word.
const MAX_NESTING: usize = 128;

struct Scanner<'w, 'e, E: Env + ?Sized> {
    lexer: Lexer,
    src: &'w str,
    pos: usize,
    env: &'e E,
    /// Whether to record variable names (only [`Lexer::expand`] reports them).
    track: bool,
    /// How many `$` expansions enclose the current position.
    depth: usize,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
}

impl<'w, E: Env + ?Sized> Scanner<'w, '_, E> {
    fn peek(&self) -> Option<char> {
        self.src
            .get(self.pos..)
            .and_then(|rest| rest.chars().next())
    }

    fn next(&mut self) -> Option<char> {
        let ch = self.peek()?;
        self.pos += ch.len_utf8();
        Some(ch)
    }

    fn lookup(&mut self, name: &str) -> Option<String> {
        match self.env.lookup(name) {
            Some(value) => {
                if self.track && !self.matched.contains(name) {
                    self.matched.insert(name.to_string());
                }
                Some(value.to_string())
            }
            None => {
                if self.track && !self.unmatched.contains(name) {
                    self.unmatched.insert(name.to_string());
                }
                None
            }
        }
    }

    /// Processes characters until `stop` (consumed) or the end of input;
    /// reaching the end while looking for `stop` is an error.
    fn process_stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
        words: &mut Words,
    ) -> Result<String, ExpandErrorKind> {
        let mut result = String::new();
        let escape = self.lexer.escape;
        let quotes = !self.lexer.skip_process_quotes;
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.pos += ch.len_utf8();
                return Ok(result);
            }
            if ch == '$' {
                let value = self.process_dollar()?;
                result.push_str(&value);
                words.add_str(&value);
            } else if quotes && ch == '\'' {
                let value = self.process_single_quote()?;
                result.push_str(&value);
                words.add_raw_str(&value);
            } else if quotes && ch == '"' {
                let value = self.process_double_quote(raw_escapes)?;
                result.push_str(&value);
                words.add_raw_str(&value);
            } else {
                self.pos += ch.len_utf8();
                if ch == escape {
                    if raw_escapes {
                        words.add_raw_char(ch);
                        result.push(ch);
                    }
                    // The escape character escapes the next character; at the
                    // end of the word it is dropped.
                    let Some(escaped) = self.next() else { break };
                    words.add_raw_char(escaped);
                    result.push(escaped);
                } else {
                    words.add_char(ch);
                    result.push(ch);
                }
            }
        }
        match stop {
            Some(stop) => Err(ExpandErrorKind::UnexpectedEnd(stop)),
            None => Ok(result),
        }
    }

    fn process_single_quote(&mut self) -> Result<String, ExpandErrorKind> {
        // Everything up to the next single quote is literal; a single quote
        // cannot be escaped inside single quotes.
        let mut result = String::new();
        let raw_quotes = self.lexer.raw_quotes;
        self.next();
        if raw_quotes {
            result.push('\'');
        }
        loop {
            match self.next() {
                None => return Err(ExpandErrorKind::UnterminatedSingleQuote),
                Some('\'') => {
                    if raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(ch) => result.push(ch),
            }
        }
    }

    fn process_double_quote(&mut self, raw_escapes: bool) -> Result<String, ExpandErrorKind> {
        // Literal except `$`, and the escape character, which escapes only
        // `"`, `$` and itself (other escapes stay as written).
        let mut result = String::new();
        let raw_quotes = self.lexer.raw_quotes;
        let escape = self.lexer.escape;
        self.next();
        if raw_quotes {
            result.push('"');
        }
        loop {
            match self.peek() {
                None => return Err(ExpandErrorKind::UnterminatedDoubleQuote),
                Some('"') => {
                    self.next();
                    if raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let value = self.process_dollar()?;
                    result.push_str(&value);
                }
                Some(mut ch) => {
                    self.pos += ch.len_utf8();
                    if ch == escape {
                        if raw_escapes {
                            result.push(ch);
                        }
                        match self.peek() {
                            // An escape at the very end is ignored; the loop
                            // then reports the missing closing quote.
                            None => continue,
                            Some(next) if next == '"' || next == '$' || next == escape => {
                                self.pos += next.len_utf8();
                                ch = next;
                            }
                            Some(_) => {}
                        }
                    }
                    result.push(ch);
                }
            }
        }
    }

    /// `$...` with a bound on `${...}` nesting, so that hostile input cannot
    /// exhaust the stack (BuildKit's Go stack grows; ours does not).
    fn process_dollar(&mut self) -> Result<String, ExpandErrorKind> {
        if self.depth >= MAX_NESTING {
            return Err(ExpandErrorKind::TooDeep(MAX_NESTING));
        }
        self.depth += 1;
        let result = self.process_dollar_unbounded();
        self.depth -= 1;
        result
    }

    fn process_dollar_unbounded(&mut self) -> Result<String, ExpandErrorKind> {
        self.next(); // the '$'
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".to_string());
            }
            return Ok(match self.lookup(name) {
                Some(value) => value,
                None if self.lexer.skip_unset => format!("${name}"),
                None => String::new(),
            });
        }
        self.next(); // the '{'
        match self.peek() {
            None => return Err(ExpandErrorKind::MissingBrace),
            Some('{' | '}' | ':') => return Err(ExpandErrorKind::BadSubstitution),
            Some(_) => {}
        }
        let name = self.process_name();
        let modifier = self.next();
        let mut modifier_text: String = modifier.map_or('\u{fffd}', |c| c).to_string();
        match modifier {
            Some('}') => Ok(match self.lookup(name) {
                Some(value) => value,
                None if self.lexer.skip_unset => format!("${{{name}}}"),
                None => String::new(),
            }),
            Some(first @ (':' | '+' | '-' | '?' | '#' | '%')) => {
                let mut op = first;
                let null_is_unset = first == ':';
                if null_is_unset {
                    let after_colon = self.next();
                    modifier_text.push(after_colon.map_or('\u{fffd}', |c| c));
                    op = after_colon.unwrap_or('\u{fffd}');
                }
                let raw = op == '#' || op == '%';
                let mut ignored = Words::new(false);
                let operand = match self.process_stop_on(Some('}'), raw, &mut ignored) {
                    Ok(operand) => operand,
                    Err(_) if self.peek().is_none() => return Err(ExpandErrorKind::MissingBrace),
                    Err(err) => return Err(err),
                };
                let value = self.lookup(name);
                if self.lexer.skip_unset && value.is_none() {
                    return Ok(format!("${{{name}{modifier_text}{operand}}}"));
                }
                let empty_or_unset = match &value {
                    None => true,
                    Some(v) => null_is_unset && v.is_empty(),
                };
                match op {
                    '-' => Ok(if empty_or_unset {
                        operand
                    } else {
                        value.unwrap_or_default()
                    }),
                    '+' => Ok(if empty_or_unset {
                        String::new()
                    } else {
                        operand
                    }),
                    '?' => match value {
                        None => Err(ExpandErrorKind::Required {
                            name: name.to_string(),
                            message: if operand.is_empty() {
                                "is not allowed to be unset".into()
                            } else {
                                operand
                            },
                        }),
                        Some(v) if null_is_unset && v.is_empty() => {
                            Err(ExpandErrorKind::Required {
                                name: name.to_string(),
                                message: if operand.is_empty() {
                                    "is not allowed to be empty".into()
                                } else {
                                    operand
                                },
                            })
                        }
                        Some(v) => Ok(v),
                    },
                    '#' | '%' => {
                        // `#`/`%` remove the shortest match, `##`/`%%` the longest.
                        let (greedy, pattern) = match operand.strip_prefix(op) {
                            Some(rest) => (true, rest),
                            None => (false, operand.as_str()),
                        };
                        let value = value.unwrap_or_default();
                        if op == '%' {
                            trim_suffix(pattern, &value, greedy)
                        } else {
                            trim_prefix(pattern, &value, greedy)
                        }
                    }
                    _ => Err(ExpandErrorKind::UnsupportedModifier(modifier_text)),
                }
            }
            Some('/') => {
                let replace_all = self.peek() == Some('/');
                if replace_all {
                    self.next();
                }
                let mut ignored = Words::new(false);
                let pattern = match self.process_stop_on(Some('/'), true, &mut ignored) {
                    Ok(p) => p,
                    Err(_) if self.peek().is_none() => return Err(ExpandErrorKind::MissingSlash),
                    Err(err) => return Err(err),
                };
                let replacement = match self.process_stop_on(Some('}'), true, &mut ignored) {
                    Ok(r) => r,
                    Err(_) if self.peek().is_none() => return Err(ExpandErrorKind::MissingBrace),
                    Err(err) => return Err(err),
                };
                let value = self.lookup(name);
                let Some(value) = value else {
                    if self.lexer.skip_unset {
                        return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
                    }
                    return replace(&pattern, "", &replacement, replace_all);
                };
                replace(&pattern, &value, &replacement, replace_all)
            }
            _ => Err(ExpandErrorKind::UnsupportedModifier(modifier_text)),
        }
    }

    /// Reads a variable name: a run of digits (positional parameter), one
    /// special parameter character, or letters, digits and underscores.
    fn process_name(&mut self) -> &'w str {
        let src: &'w str = self.src;
        let start = self.pos;
        while let Some(ch) = self.peek() {
            let empty = self.pos == start;
            if empty && is_go_digit(ch) {
                while let Some(digit) = self.peek().filter(|c| is_go_digit(*c)) {
                    self.pos += digit.len_utf8();
                }
                break;
            }
            if empty && is_special_param(ch) {
                self.pos += ch.len_utf8();
                break;
            }
            if !is_go_letter(ch) && !is_go_digit(ch) && ch != '_' {
                break;
            }
            self.pos += ch.len_utf8();
        }
        // A name is a run of whole chars, so this slice is on boundaries.
        src.get(start..self.pos).unwrap_or("")
    }
}

/// POSIX special parameters; never set in a Dockerfile.
fn is_special_param(ch: char) -> bool {
    matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0')
}

/// Go's `unicode.IsLetter`: general category L.
fn is_go_letter(ch: char) -> bool {
    if ch.is_ascii() {
        return ch.is_ascii_alphabetic();
    }
    use unicode_properties::{GeneralCategoryGroup, UnicodeGeneralCategory};
    ch.general_category_group() == GeneralCategoryGroup::Letter
}

/// Go's `unicode.IsDigit`: general category Nd.
fn is_go_digit(ch: char) -> bool {
    if ch.is_ascii() {
        return ch.is_ascii_digit();
    }
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    ch.general_category() == GeneralCategory::DecimalNumber
}

/// One element of a `${NAME#pattern}`-style glob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PatternToken {
    /// `*`: any run of characters.
    Star,
    /// `?`: any one character.
    Any,
    Literal(char),
}

/// Compiles a shell glob (`*`, `?`, `\` escapes; no bracket expressions) as
/// BuildKit does: `\}` and `\/` mean `}` and `/`, and only `\*`, `\?`, `\\`
/// are other valid escapes.
fn compile_pattern(pattern: &str) -> Result<Vec<PatternToken>, ExpandErrorKind> {
    let mut tokens = Vec::with_capacity(pattern.len());
    let mut chars = pattern.chars().peekable();
    while let Some(ch) = chars.next() {
        match ch {
            '*' => tokens.push(PatternToken::Star),
            '?' => tokens.push(PatternToken::Any),
            '\\' => {
                if matches!(chars.peek(), Some('}' | '/')) {
                    continue;
                }
                match chars.next() {
                    Some(escaped @ ('*' | '?' | '\\')) => {
                        tokens.push(PatternToken::Literal(escaped))
                    }
                    other => {
                        return Err(ExpandErrorKind::InvalidPattern {
                            pattern: pattern.to_string(),
                            escaped: other.unwrap_or('\u{fffd}'),
                        });
                    }
                }
            }
            other => tokens.push(PatternToken::Literal(other)),
        }
    }
    Ok(tokens)
}

/// Work items of [`add_thread`]'s explicit stack (no recursion, so a
/// hostile pattern cannot exhaust the call stack).
#[derive(Clone, Copy)]
enum Work {
    /// Follow the epsilon moves from this state.
    Visit(usize),
    /// Add a thread that will consume a character at this state.
    Emit(usize),
}

/// Adds a thread at `state` and everything reachable without consuming a
/// character, in priority order: a greedy star prefers consuming over
/// skipping, a lazy one the reverse.
#[allow(clippy::too_many_arguments)]
fn add_thread(
    tokens: &[PatternToken],
    greedy: bool,
    list: &mut Vec<(usize, usize)>,
    seen: &mut [u32],
    generation: u32,
    stack: &mut Vec<Work>,
    state: usize,
    start: usize,
) {
    stack.push(Work::Visit(state));
    while let Some(work) = stack.pop() {
        match work {
            Work::Emit(s) => list.push((s, start)),
            Work::Visit(s) => {
                match seen.get_mut(s) {
                    Some(mark) if *mark == generation => continue,
                    Some(mark) => *mark = generation,
                    None => continue,
                }
                match tokens.get(s) {
                    Some(PatternToken::Star) if greedy => {
                        stack.push(Work::Visit(s + 1));
                        stack.push(Work::Emit(s));
                    }
                    Some(PatternToken::Star) => {
                        stack.push(Work::Emit(s));
                        stack.push(Work::Visit(s + 1));
                    }
                    _ => list.push((s, start)),
                }
            }
        }
    }
}

/// Finds the first match of `tokens` in `text` at byte `from` (`anchored`)
/// or at any position from there on, with leftmost-first (Go regexp / RE2)
/// preferences: greedy stars take the longest run first, lazy ones the
/// shortest. A Pike VM: O(pattern x text) time, O(pattern) memory.
fn find_match(
    tokens: &[PatternToken],
    text: &str,
    from: usize,
    anchored: bool,
    greedy: bool,
) -> Option<(usize, usize)> {
    let mut seen = vec![0u32; tokens.len() + 1];
    let mut generation = 1u32;
    let mut stack = Vec::new();
    let mut current: Vec<(usize, usize)> = Vec::new();
    let mut next: Vec<(usize, usize)> = Vec::new();
    let mut matched = None;
    add_thread(
        tokens,
        greedy,
        &mut current,
        &mut seen,
        generation,
        &mut stack,
        0,
        from,
    );
    let mut pos = from;
    loop {
        let next_char = text.get(pos..).and_then(|rest| rest.chars().next());
        generation = generation.wrapping_add(1);
        next.clear();
        for &(state, start) in &current {
            let Some(token) = tokens.get(state) else {
                // Reached the end of the pattern: lower-priority threads lose.
                matched = Some((start, pos));
                break;
            };
            let Some(ch) = next_char else { continue };
            let advance = match token {
                PatternToken::Star => Some(state),
                PatternToken::Any => Some(state + 1),
                PatternToken::Literal(lit) => (ch == *lit).then_some(state + 1),
            };
            if let Some(target) = advance {
                add_thread(
                    tokens, greedy, &mut next, &mut seen, generation, &mut stack, target, start,
                );
            }
        }
        let Some(ch) = next_char else { break };
        pos += ch.len_utf8();
        if matched.is_none() && !anchored {
            add_thread(
                tokens, greedy, &mut next, &mut seen, generation, &mut stack, 0, pos,
            );
        }
        if next.is_empty() {
            break;
        }
        std::mem::swap(&mut current, &mut next);
    }
    matched
}

fn trim_prefix(pattern: &str, value: &str, greedy: bool) -> Result<String, ExpandErrorKind> {
    let tokens = compile_pattern(pattern)?;
    Ok(match find_match(&tokens, value, 0, true, greedy) {
        Some((_, end)) => value.get(end..).unwrap_or("").to_string(),
        None => value.to_string(),
    })
}

/// Reverses a pattern, keeping each `\x` escape pair in order (`a\*c` ->
/// `c\*a`), so that a suffix search becomes a prefix search.
fn reverse_pattern(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out: Vec<char> = Vec::with_capacity(chars.len());
    let mut i = 0;
    while let Some(&ch) = chars.get(i) {
        if ch == '\\' && i + 1 < chars.len() {
            if let Some(&next) = chars.get(i + 1) {
                out.push(next);
            }
            out.push('\\');
            i += 2;
        } else {
            out.push(ch);
            i += 1;
        }
    }
    out.reverse();
    out.into_iter().collect()
}

fn trim_suffix(pattern: &str, value: &str, greedy: bool) -> Result<String, ExpandErrorKind> {
    // Shortest-rightmost matching is done as BuildKit does it: reverse the
    // pattern and the value and trim a prefix.
    let reversed: String = value.chars().rev().collect();
    let trimmed = trim_prefix(&reverse_pattern(pattern), &reversed, greedy)?;
    Ok(trimmed.chars().rev().collect())
}

/// `${NAME/pattern/replacement}` and `${NAME//pattern/replacement}`, with Go's
/// `regexp` semantics: greedy stars, leftmost match, and for "all" no empty
/// match right after a previous match.
fn replace(
    pattern: &str,
    value: &str,
    replacement: &str,
    all: bool,
) -> Result<String, ExpandErrorKind> {
    let tokens = compile_pattern(pattern)?;
    let find_from = |from: usize| find_match(&tokens, value, from, false, true);
    let mut out = String::with_capacity(value.len());
    if !all {
        return Ok(match find_from(0) {
            Some((start, end)) => {
                out.push_str(value.get(..start).unwrap_or(""));
                expand_replacement(&mut out, replacement, value.get(start..end).unwrap_or(""));
                out.push_str(value.get(end..).unwrap_or(""));
                out
            }
            None => value.to_string(),
        });
    }
    let mut last_end = 0;
    let mut search = 0;
    while search <= value.len() {
        let Some((start, end)) = find_from(search) else {
            break;
        };
        out.push_str(value.get(last_end..start).unwrap_or(""));
        if end > last_end || start == 0 {
            expand_replacement(&mut out, replacement, value.get(start..end).unwrap_or(""));
        }
        last_end = end;
        let width = value
            .get(search..)
            .and_then(|r| r.chars().next())
            .map_or(1, char::len_utf8);
        if search + width > end {
            search += width;
        } else if search + 1 > end {
            search += 1;
        } else {
            search = end;
        }
    }
    out.push_str(value.get(last_end..).unwrap_or(""));
    Ok(out)
}

/// Go's `Regexp.Expand` template rules for the replacement: `$$` is `$`,
/// `$0`/`${0}` the match, other `$name`/`${name}` references are empty (the
/// pattern has no groups), and a malformed `$` is kept literally.
fn expand_replacement(out: &mut String, template: &str, matched: &str) {
    let mut rest = template;
    while let Some(dollar) = rest.find('$') {
        out.push_str(rest.get(..dollar).unwrap_or(""));
        rest = rest.get(dollar + 1..).unwrap_or("");
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
            continue;
        }
        let (braced, body) = match rest.strip_prefix('{') {
            Some(body) => (true, body),
            None => (false, rest),
        };
        let name_len: usize = body
            .chars()
            .take_while(|c| is_go_letter(*c) || is_go_digit(*c) || *c == '_')
            .map(char::len_utf8)
            .sum();
        let name = body.get(..name_len).unwrap_or("");
        let after_name = body.get(name_len..).unwrap_or("");
        let remainder = if name.is_empty() {
            None
        } else if braced {
            after_name.strip_prefix('}')
        } else {
            Some(after_name)
        };
        let Some(remainder) = remainder else {
            out.push('$');
            continue;
        };
        rest = remainder;
        let is_number = name.bytes().all(|b| b.is_ascii_digit());
        if is_number && name.parse::<u64>().ok() == Some(0) {
            out.push_str(matched);
        }
    }
    out.push_str(rest);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Vec<(&'static str, &'static str)> {
        vec![("PWD", "/home"), ("NULL", ""), ("V", "1.2.3")]
    }

    fn word(input: &str) -> Result<String, ExpandError> {
        Lexer::new('\\').process_word(input, &env())
    }

    #[test]
    fn plain_words_are_returned_unchanged() {
        assert_eq!(word("hello/world.txt").unwrap(), "hello/world.txt");
        assert_eq!(
            Lexer::new('\\').process_words("  a b\tc ", &env()).unwrap(),
            ["a", "b", "c"]
        );
    }

    #[test]
    fn quotes_and_escapes() {
        assert_eq!(word(r#""a b"'c d'\ e"#).unwrap(), "a bc d e");
        assert_eq!(word(r#""\x\"\$\\""#).unwrap(), r#"\x"$\"#);
        assert_eq!(word("trailing\\").unwrap(), "trailing");
    }

    #[test]
    fn backtick_escape() {
        let lexer = Lexer::new('`');
        assert_eq!(
            lexer.process_word("a`$PWD`b\\c", &env()).unwrap(),
            "a$PWDb\\c"
        );
        assert_eq!(lexer.process_word("\"`\"x\"", &env()).unwrap(), "\"x");
    }

    #[test]
    fn default_alternative_and_required() {
        assert_eq!(word("${NULL-x}${NULL:-y}${MISSING-z}").unwrap(), "yz");
        assert_eq!(
            word("${PWD+a}${NULL+b}${NULL:+c}${MISSING+d}").unwrap(),
            "ab"
        );
        let err = word("${MISSING?need it}").unwrap_err();
        assert_eq!(
            err.kind,
            ExpandErrorKind::Required {
                name: "MISSING".into(),
                message: "need it".into()
            }
        );
        assert_eq!(
            err.to_string(),
            "failed to process \"${MISSING?need it}\": MISSING: need it"
        );
        assert!(err.hint().unwrap().contains("--build-arg MISSING="));
        let err = word("${NULL:?}").unwrap_err();
        assert_eq!(
            err.kind,
            ExpandErrorKind::Required {
                name: "NULL".into(),
                message: "is not allowed to be empty".into()
            }
        );
        let err = word("${MISSING:?}").unwrap_err();
        assert_eq!(
            err.kind,
            ExpandErrorKind::Required {
                name: "MISSING".into(),
                message: "is not allowed to be unset".into()
            }
        );
    }

    #[test]
    fn prefix_and_suffix_removal() {
        let e = [("F", "xxyy"), ("P", "a/b/c.tar.gz"), ("S", "a***yy*")];
        let lx = Lexer::default();
        assert_eq!(lx.process_word("${F#*x}", &e).unwrap(), "xyy");
        assert_eq!(lx.process_word("${F##*x}", &e).unwrap(), "yy");
        assert_eq!(lx.process_word("${F#*x*y}", &e).unwrap(), "y");
        assert_eq!(lx.process_word("${F#*}", &e).unwrap(), "xxyy");
        assert_eq!(lx.process_word("${P%.*}", &e).unwrap(), "a/b/c.tar");
        assert_eq!(lx.process_word("${P%%.*}", &e).unwrap(), "a/b/c");
        assert_eq!(lx.process_word("${P##*/}", &e).unwrap(), "c.tar.gz");
        assert_eq!(lx.process_word("${P#*/}", &e).unwrap(), "b/c.tar.gz");
        assert_eq!(lx.process_word("${S%%\\**\\*}", &e).unwrap(), "a");
        assert_eq!(lx.process_word("${F%}", &e).unwrap(), "xxyy");
        assert_eq!(
            lx.process_word("${F#?\\?}", &[("F", "???y")]).unwrap(),
            "?y"
        );
    }

    #[test]
    fn regex_metacharacters_are_literal_in_patterns() {
        let e = [("FOO", "()[]{}^$.*?|\\x")];
        let out = Lexer::default()
            .process_word(r"${FOO#()[]{\}^$.\*\?|\\}", &e)
            .unwrap();
        assert_eq!(out, "x");
    }

    #[test]
    fn invalid_pattern_escape() {
        let err = Lexer::default()
            .process_word(r"${F#\x}", &[("F", "a")])
            .unwrap_err();
        assert_eq!(
            err.kind,
            ExpandErrorKind::InvalidPattern {
                pattern: r"\x".into(),
                escaped: 'x'
            }
        );
    }

    #[test]
    fn substitution() {
        let lx = Lexer::default();
        let e = [("FOO", "/foo*/*/*.txt"), ("NEEDLE", "\\*/")];
        assert_eq!(
            lx.process_word("${FOO/$NEEDLE/.} - ${FOO//$NEEDLE/.}", &e)
                .unwrap(),
            "/foo.*/*.txt - /foo..*.txt"
        );
        let e = [("FOO", "/tmp/tmp/bar.txt"), ("NEEDLE", "/tmp")];
        assert_eq!(
            lx.process_word("${FOO/$NEEDLE/} - ${FOO//$NEEDLE/}", &e)
                .unwrap(),
            "/tmp/bar.txt - /bar.txt"
        );
        let e = [("FOO", "/a/foo/b/c.txt"), ("NEEDLE", "/?/"), ("R", "/")];
        assert_eq!(
            lx.process_word("${FOO/$NEEDLE/$R} - ${FOO//$NEEDLE/$R}", &e)
                .unwrap(),
            "/foo/b/c.txt - /foo/c.txt"
        );
        let e = [("FOO", "/tmp/foo.txt")];
        assert_eq!(
            lx.process_word(r"${FOO//\//\/}", &e).unwrap(),
            r"\/tmp\/foo.txt"
        );
        let e = [("FOO", "xxyy"), ("BAR", "")];
        assert_eq!(lx.process_word("${FOO/$BAR/ww}", &e).unwrap(), "wwxxyy");
        assert_eq!(lx.process_word("${FOO//$BAR/-}", &e).unwrap(), "-x-x-y-y-");
        assert_eq!(lx.process_word("${FOO///}", &e).unwrap(), "xxyy");
        assert!(lx.process_word("${FOO//ww}", &e).is_err());
        assert!(lx.process_word("${FOO//}", &e).is_err());
        // Go's replacement templates: `$0` is the match, `$$` a dollar.
        let e = [("FOO", "xxyy"), ("R", "[$0$$]")];
        assert_eq!(lx.process_word("${FOO/x*/$R}", &e).unwrap(), "[xxyy$]");
    }

    #[test]
    fn matched_and_unmatched_variables() {
        let lx = Lexer::default();
        let e = [("FOO", "xxx"), ("BAR", "")];
        let out = lx
            .expand("${FOO-aaa} ${BAR-bbb} ${BAZ-ccc} $1", &e)
            .unwrap();
        assert_eq!(out.word, "xxx  ccc ");
        assert_eq!(out.words, ["xxx", "ccc"]);
        assert_eq!(out.matched.iter().collect::<Vec<_>>(), ["BAR", "FOO"]);
        assert_eq!(out.unmatched.iter().collect::<Vec<_>>(), ["1", "BAZ"]);
    }

    #[test]
    fn skip_unset_keeps_references() {
        let lx = Lexer::default().with_skip_unset(true);
        let e = [("A", "1")];
        assert_eq!(
            lx.process_word("$A $B ${B} ${B:-x} ${B/a/b}", &e).unwrap(),
            "1 $B ${B} ${B:-x} ${B/a/b}"
        );
    }

    #[test]
    fn raw_quotes_keep_quotes() {
        let lx = Lexer::default().with_raw_quotes(true);
        assert_eq!(
            lx.process_word(r#"'a'"$V""#, &env()).unwrap(),
            r#"'a'"1.2.3""#
        );
    }

    #[test]
    fn errors_report_kind_and_offset() {
        let err = word("ab'cd").unwrap_err();
        assert_eq!(err.kind, ExpandErrorKind::UnterminatedSingleQuote);
        assert_eq!(err.offset, 5);
        let err = word("x${}").unwrap_err();
        assert_eq!(err.kind, ExpandErrorKind::BadSubstitution);
        assert_eq!(err.offset, 3);
        assert_eq!(
            word("${A").unwrap_err().kind,
            ExpandErrorKind::UnsupportedModifier("\u{fffd}".into())
        );
        assert_eq!(
            word("${A:-x").unwrap_err().kind,
            ExpandErrorKind::MissingBrace
        );
        assert_eq!(
            word("${A/x").unwrap_err().kind,
            ExpandErrorKind::MissingSlash
        );
        assert_eq!(
            word("${A:=x}").unwrap_err().kind,
            ExpandErrorKind::UnsupportedModifier(":=".into())
        );
    }

    #[test]
    fn names_follow_go_unicode_classes() {
        let e = [("안녕", "hi"), ("x١", "arabic-digit")];
        assert_eq!(Lexer::default().process_word("$안녕!", &e).unwrap(), "hi!");
        assert_eq!(
            Lexer::default().process_word("${x١}", &e).unwrap(),
            "arabic-digit"
        );
    }

    #[test]
    fn leading_byte_order_mark_is_dropped() {
        assert_eq!(word("\u{feff}$PWD").unwrap(), "/home");
    }

    /// Reference: leftmost-first backtracking, as a regex engine's preference
    /// order defines it (exponential, tests only).
    fn backtrack(
        tokens: &[PatternToken],
        text: &[char],
        t: usize,
        i: usize,
        greedy: bool,
    ) -> Option<usize> {
        match tokens.get(t) {
            None => Some(i),
            Some(PatternToken::Star) => {
                let mut order: Vec<usize> = (i..=text.len()).collect();
                if greedy {
                    order.reverse();
                }
                order
                    .into_iter()
                    .find_map(|j| backtrack(tokens, text, t + 1, j, greedy))
            }
            Some(PatternToken::Any) => (i < text.len())
                .then(|| backtrack(tokens, text, t + 1, i + 1, greedy))
                .flatten(),
            Some(PatternToken::Literal(c)) => (text.get(i) == Some(c))
                .then(|| backtrack(tokens, text, t + 1, i + 1, greedy))
                .flatten(),
        }
    }

    proptest::proptest! {
        #[test]
        fn pike_vm_agrees_with_backtracking(pattern in "[ab*?]{0,6}", text in "[ab]{0,8}", greedy: bool, anchored: bool) {
            let tokens = compile_pattern(&pattern).unwrap();
            let chars: Vec<char> = text.chars().collect();
            let expected = if anchored {
                backtrack(&tokens, &chars, 0, 0, greedy).map(|end| (0, end))
            } else {
                (0..=chars.len()).find_map(|start| backtrack(&tokens, &chars, 0, start, greedy).map(|end| (start, end)))
            };
            proptest::prop_assert_eq!(find_match(&tokens, &text, 0, anchored, greedy), expected);
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let word = format!("{}x{}", "${A:-".repeat(100_000), "}".repeat(100_000));
        let err = Lexer::default().process_word(&word, &EmptyEnv).unwrap_err();
        assert_eq!(err.kind, ExpandErrorKind::TooDeep(MAX_NESTING));
        let word = format!("{}x{}", "${A:-".repeat(100), "}".repeat(100));
        assert_eq!(
            Lexer::default().process_word(&word, &EmptyEnv).unwrap(),
            "x"
        );
    }

    #[test]
    fn huge_patterns_and_values_do_not_blow_the_stack() {
        let value = "ab".repeat(5_000);
        let pattern = "*a".repeat(500);
        let env = [("V", value.as_str()), ("P", pattern.as_str())];
        let out = Lexer::default().process_word("${V#$P}", &env).unwrap();
        assert!(out.len() < value.len());
        let out = Lexer::default().process_word("${V//a/}", &env).unwrap();
        assert_eq!(out.len(), 5_000);
    }

    #[test]
    fn reverse_pattern_keeps_escape_pairs() {
        assert_eq!(reverse_pattern(r"a\*c"), r"c\*a");
        assert_eq!(reverse_pattern(r"\\\ab"), r"b\a\\");
        assert_eq!(reverse_pattern("ab\\"), "\\ba");
        assert_eq!(reverse_pattern(r"\\b"), r"b\\");
    }
}
