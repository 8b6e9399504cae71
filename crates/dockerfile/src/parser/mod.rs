//! The Dockerfile parser: source text to [`Dockerfile`] syntax tree, with
//! BuildKit's exact rules (`frontend/dockerfile/parser`).
//!
//! The source is read physical line by physical line. Parser directives are
//! recognised until the first line that is not one. A logical line starts at
//! a line that is not empty and not a comment, and goes on while lines end
//! with the escape character (optionally followed by spaces or tabs); comment
//! lines inside a continuation are skipped, empty ones are skipped with a
//! warning. The joined line is split into name, flags and arguments, and the
//! arguments are shaped by the instruction's line parser. RUN, COPY and ADD
//! lines (also under ONBUILD) that are not in JSON form may name heredocs,
//! whose bodies are the physical lines that follow.
//!
//! The parser works on `&str` slices of the source; a logical line is only
//! copied when it spans several physical lines. A table of the pieces a
//! joined line was made of maps every byte of it back to the source, which
//! is how every node gets its [`Span`].

mod json;
mod words;

use std::borrow::Cow;

use crate::ast::{
    Arguments, Directive, Dockerfile, Flag, Heredoc, Instruction, KeyValue, KeyValueForm, Keyword,
    Position, Span, Text,
};
use crate::diagnostics::{Diagnostic, Severity};
use crate::heredoc;

/// A Dockerfile that BuildKit's parser rejects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {}: {kind}", span.start.line)]
pub struct ParseError {
    pub kind: ParseErrorKind,
    /// The culprit.
    pub span: Span,
}

/// What is wrong (messages follow BuildKit's where it has one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseErrorKind {
    #[error("file with no instructions")]
    NoInstructions,
    #[error("invalid escape token '{0}' does not match ` or \\")]
    InvalidEscapeToken(String),
    #[error("only one {0} parser directive can be used")]
    DuplicateDirective(String),
    #[error("{0} must have two arguments")]
    MissingValue(String),
    #[error("Syntax error - can't find = in {0:?}. Must be of the form: name=value")]
    MissingEquals(String),
    #[error("when using JSON array syntax, arrays must be comprised of strings only")]
    NotStringArray,
    #[error("unterminated heredoc {0}")]
    UnterminatedHeredoc(String),
    #[error("invalid heredoc {0}")]
    InvalidHeredoc(String),
    #[error("dockerfile line greater than max allowed size of {}", MAX_LINE_LENGTH - 1)]
    LineTooLong,
}

/// BuildKit reads Dockerfiles with a Go `bufio.Scanner`, whose default
/// buffer holds 64 KiB: a physical line (with its newline) longer than that
/// is an error (checked against docker).
pub const MAX_LINE_LENGTH: usize = 64 * 1024;

impl ParseError {
    /// The error as a [`Diagnostic`] with a hint on how to fix it.
    pub fn to_diagnostic(&self) -> Diagnostic {
        let diagnostic = Diagnostic::new(Severity::Error, self.kind.to_string(), Some(self.span));
        match &self.kind {
            ParseErrorKind::NoInstructions => diagnostic.with_hint(
                "a Dockerfile needs at least one instruction, usually starting with FROM <image>",
            ),
            ParseErrorKind::InvalidEscapeToken(_) => {
                diagnostic.with_hint("write `# escape=\\` or `# escape=`` ` (backtick)")
            }
            ParseErrorKind::DuplicateDirective(name) => diagnostic
                .with_label("repeated here")
                .with_hint(format!("keep a single `# {name}=` line")),
            ParseErrorKind::MissingValue(name) => diagnostic
                .with_label("no value")
                .with_hint(format!("write `{name} key=value` or `{name} key value`")),
            ParseErrorKind::MissingEquals(_) => diagnostic
                .with_label("expected name=value")
                .with_hint("in the `key=value` form every word needs a `=`; quote values that contain spaces"),
            ParseErrorKind::NotStringArray => diagnostic
                .with_label("not a string")
                .with_hint("in exec form every element must be a double-quoted string, e.g. [\"sh\", \"-c\", \"echo hi\"]"),
            ParseErrorKind::UnterminatedHeredoc(name) => diagnostic
                .with_label("heredoc starts here")
                .with_hint(format!("end the heredoc with a line containing only `{name}`")),
            ParseErrorKind::InvalidHeredoc(_) => diagnostic,
            ParseErrorKind::LineTooLong => diagnostic
                .with_label("this line")
                .with_hint("split the line with line continuations (a trailing `\\`)"),
        }
    }
}

/// Parses a Dockerfile. Accepts what BuildKit's parser accepts (unknown
/// instructions and flags included, see [`crate::validate`]) and rejects
/// what it rejects.
pub fn parse(source: &str) -> Result<Dockerfile, ParseError> {
    Parser::new(source).run()
}

/// One physical line: its text without the line terminator and where it is.
#[derive(Clone, Copy)]
struct PhysicalLine<'s> {
    /// The line without trailing `\r`/`\n` characters (Go's `trimNewline`).
    text: &'s str,
    /// The whole line including its terminator.
    full: &'s str,
    /// Byte offset of the line start.
    start: usize,
    /// 1-based line number.
    number: u32,
}

struct Lines<'s> {
    source: &'s str,
    pos: usize,
    number: u32,
    /// The first line over [`MAX_LINE_LENGTH`]: reading stops there, as
    /// Go's scanner does.
    too_long: Option<PhysicalLine<'s>>,
}

impl<'s> Iterator for Lines<'s> {
    type Item = PhysicalLine<'s>;

    fn next(&mut self) -> Option<PhysicalLine<'s>> {
        if self.pos >= self.source.len() {
            return None;
        }
        let start = self.pos;
        let rest = &self.source[start..];
        let end = match memchr::memchr(b'\n', rest.as_bytes()) {
            Some(i) => start + i + 1,
            None => self.source.len(),
        };
        self.pos = end;
        self.number = self.number.saturating_add(1);
        let full = &self.source[start..end];
        let line = PhysicalLine {
            text: full.trim_end_matches(['\r', '\n']),
            full,
            start,
            number: self.number,
        };
        if full.len() > MAX_LINE_LENGTH {
            self.too_long = Some(line);
            self.pos = self.source.len();
            return None;
        }
        Some(line)
    }
}

/// A piece of a joined logical line: `len` bytes starting at `joined` in the
/// joined text come from `offset` in the source.
#[derive(Clone, Copy)]
struct Piece {
    joined: usize,
    offset: usize,
    line: u32,
    line_start: usize,
}

/// A logical line: the joined text and where its pieces came from.
struct Logical<'s> {
    text: Cow<'s, str>,
    pieces: Vec<Piece>,
}

impl Logical<'_> {
    /// The source position of a byte offset of the joined text. `is_end`
    /// picks the piece a range ends in when the offset is at a seam.
    fn position(&self, joined: usize, is_end: bool) -> Position {
        let probe = if is_end && joined > 0 {
            joined - 1
        } else {
            joined
        };
        let index = self
            .pieces
            .partition_point(|p| p.joined <= probe)
            .saturating_sub(1);
        let Some(piece) = self.pieces.get(index) else {
            return Position::default();
        };
        let offset = piece
            .offset
            .saturating_add(joined.saturating_sub(piece.joined));
        Position {
            line: piece.line,
            column: u32::try_from(offset.saturating_sub(piece.line_start) + 1).unwrap_or(u32::MAX),
            offset,
        }
    }

    fn span(&self, range: std::ops::Range<usize>) -> Span {
        if range.is_empty() {
            let at = self.position(range.start, false);
            return Span { start: at, end: at };
        }
        Span {
            start: self.position(range.start, false),
            end: self.position(range.end, true),
        }
    }

    /// The byte offset of `part` (a slice of `self.text`) in the joined text.
    fn offset_of(&self, part: &str) -> usize {
        (part.as_ptr() as usize).saturating_sub(self.text.as_ptr() as usize)
    }

    /// The span of `part` (a slice of `self.text`).
    fn span_of(&self, part: &str) -> Span {
        let start = self.offset_of(part);
        self.span(start..start + part.len())
    }

    fn text(&self, part: &str) -> Text {
        let start = self.offset_of(part);
        Text {
            value: part.to_owned(),
            span: self.span(start..start + part.len()),
        }
    }
}

/// Directive scanning state (BuildKit's `DirectiveParser`).
struct Directives {
    done: bool,
    escape: char,
    found: Vec<Directive>,
}

struct Parser<'s> {
    source: &'s str,
    lines: Lines<'s>,
    directives: Directives,
    instructions: Vec<Instruction>,
    warnings: Vec<Diagnostic>,
    /// The piece table of the previous logical line, kept to reuse its
    /// allocation.
    spare_pieces: Vec<Piece>,
}

fn is_go_space(ch: char) -> bool {
    ch.is_whitespace()
}

/// Go's `\s` in RE2: `[\t\n\f\r ]`.
fn is_re_space(byte: u8) -> bool {
    matches!(byte, b'\t' | b'\n' | 0x0c | b'\r' | b' ')
}

/// Matches `^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$`, returning the
/// key range and value range.
fn match_directive(line: &str) -> Option<(std::ops::Range<usize>, std::ops::Range<usize>)> {
    let bytes = line.as_bytes();
    if bytes.first() != Some(&b'#') {
        return None;
    }
    let mut pos = 1;
    while pos < bytes.len() && is_re_space(bytes[pos]) {
        pos += 1;
    }
    let key_start = pos;
    if !bytes.get(pos).is_some_and(u8::is_ascii_alphabetic) {
        return None;
    }
    while bytes.get(pos).is_some_and(u8::is_ascii_alphanumeric) {
        pos += 1;
    }
    let key_end = pos;
    while pos < bytes.len() && is_re_space(bytes[pos]) {
        pos += 1;
    }
    if bytes.get(pos) != Some(&b'=') {
        return None;
    }
    pos += 1;
    while pos < bytes.len() && is_re_space(bytes[pos]) {
        pos += 1;
    }
    let mut value_end = bytes.len();
    while value_end > pos && is_re_space(bytes[value_end - 1]) {
        value_end -= 1;
    }
    if value_end <= pos {
        return None;
    }
    Some((key_start..key_end, pos..value_end))
}

/// Go's `isComment`: the line, left-trimmed, starts with `#`.
fn is_comment(text: &str) -> bool {
    text.trim_start_matches(is_go_space).starts_with('#')
}

/// Removes the continuation escape at the end of a line (BuildKit's
/// `([^\\])\\[ \t]*$|^\\[ \t]*$`): returns the text without it and whether
/// the logical line ends here.
fn trim_continuation(text: &str, escape: char) -> (&str, bool) {
    let trimmed = text.trim_end_matches([' ', '\t']);
    let Some(before) = trimmed.strip_suffix(escape) else {
        return (text, true);
    };
    // An escaped escape character (`\\`) does not continue the line.
    if before.ends_with(escape) {
        return (text, true);
    }
    (before, false)
}

/// Go's `strings.ToLower` rune by rune (one char out per char in).
pub(crate) fn go_lowercase(text: &str) -> String {
    if text.is_ascii() {
        return text.to_ascii_lowercase();
    }
    text.chars()
        .map(|c| c.to_lowercase().next().unwrap_or(c))
        .collect()
}

impl<'s> Parser<'s> {
    fn new(source: &'s str) -> Self {
        Parser {
            source,
            lines: Lines {
                source,
                pos: 0,
                number: 0,
                too_long: None,
            },
            directives: Directives {
                done: false,
                escape: '\\',
                found: Vec::new(),
            },
            // Real Dockerfiles average 40-80 bytes per instruction.
            instructions: Vec::with_capacity(source.len() / 64),
            warnings: Vec::new(),
            spare_pieces: Vec::new(),
        }
    }

    fn offset_of(&self, part: &str) -> usize {
        (part.as_ptr() as usize).saturating_sub(self.source.as_ptr() as usize)
    }

    fn line_span(&self, line: PhysicalLine<'_>, part: &str) -> Span {
        let start = self.offset_of(part);
        let position = |offset: usize| Position {
            line: line.number,
            column: u32::try_from(offset - line.start + 1).unwrap_or(u32::MAX),
            offset,
        };
        Span {
            start: position(start),
            end: position(start + part.len()),
        }
    }

    /// Go's `processLine`: trims, looks for a directive, strips a comment.
    fn process_line(
        &mut self,
        line: PhysicalLine<'s>,
        text: &'s str,
        strip_left: bool,
    ) -> Result<&'s str, ParseError> {
        let token = if strip_left {
            text.trim_start_matches(is_go_space)
        } else {
            text
        };
        self.possible_directive(line, token)?;
        if token.starts_with('#') {
            return Ok(&token[token.len()..]);
        }
        Ok(token)
    }

    fn possible_directive(
        &mut self,
        line: PhysicalLine<'s>,
        token: &'s str,
    ) -> Result<(), ParseError> {
        if self.directives.done {
            return Ok(());
        }
        let Some((key, value)) = match_directive(token) else {
            self.directives.done = true;
            return Ok(());
        };
        let name = token[key].to_ascii_lowercase();
        if !matches!(name.as_str(), "syntax" | "escape" | "check") {
            self.directives.done = true;
            return Ok(());
        }
        let span = self.line_span(line, token);
        let value_text = &token[value];
        let value_span = self.line_span(line, value_text);
        if self.directives.found.iter().any(|d| d.name == name) {
            return Err(ParseError {
                kind: ParseErrorKind::DuplicateDirective(name),
                span,
            });
        }
        if name == "escape" {
            self.directives.escape = match value_text {
                "\\" => '\\',
                "`" => '`',
                other => {
                    return Err(ParseError {
                        kind: ParseErrorKind::InvalidEscapeToken(other.to_owned()),
                        span: value_span,
                    });
                }
            };
        }
        self.directives.found.push(Directive {
            name,
            value: value_text.to_owned(),
            span,
            value_span,
        });
        Ok(())
    }

    fn run(mut self) -> Result<Dockerfile, ParseError> {
        let mut comments: Vec<String> = Vec::new();
        let mut first = true;
        while let Some(line) = self.lines.next() {
            let mut text = line.text;
            if first {
                text = text.strip_prefix('\u{feff}').unwrap_or(text);
                first = false;
            }
            if is_comment(text) {
                let comment = text.trim_start_matches(is_go_space)[1..].trim();
                comments.push(comment.to_owned());
            }
            let processed = self.process_line(line, text, true)?;
            let escape = self.directives.escape;
            let (first_text, mut ended) = trim_continuation(processed, escape);
            if ended && first_text.is_empty() {
                continue;
            }
            let mut pieces = std::mem::take(&mut self.spare_pieces);
            pieces.clear();
            pieces.push(Piece {
                joined: 0,
                offset: self.offset_of(first_text),
                line: line.number,
                line_start: line.start,
            });
            let mut joined: Option<String> = None;
            let mut last_line = line;
            let mut empty_continuation: Option<PhysicalLine<'s>> = None;
            while !ended {
                let Some(next) = self.lines.next() else {
                    break;
                };
                last_line = next;
                let processed = self.process_line(next, next.text, false)?;
                if is_comment(next.text) {
                    continue;
                }
                if processed.trim_start_matches(is_go_space).is_empty() {
                    empty_continuation.get_or_insert(next);
                    continue;
                }
                let (piece_text, piece_ended) = trim_continuation(processed, escape);
                ended = piece_ended;
                let buffer = joined.get_or_insert_with(|| first_text.to_owned());
                pieces.push(Piece {
                    joined: buffer.len(),
                    offset: self.offset_of(piece_text),
                    line: next.number,
                    line_start: next.start,
                });
                buffer.push_str(piece_text);
            }
            let logical = Logical {
                text: match joined {
                    Some(text) => Cow::Owned(text),
                    None => Cow::Borrowed(first_text),
                },
                pieces,
            };
            let end_of_line = self.line_span(last_line, last_line.text).end;
            if let Some(empty) = empty_continuation {
                let span = self.line_span(empty, empty.text);
                self.warnings.push(
                    Diagnostic::warning(
                        format!("Empty continuation line found in: {}", logical.text),
                        span,
                    )
                    .with_code("NoEmptyContinuation")
                    .with_hint(
                        "empty continuation lines will become errors in a future release; remove the empty line or the escape character before it",
                    ),
                );
            }
            let whole = logical.text.as_ref();
            let mut instruction = parse_instruction(&logical, whole, escape, end_of_line)?;
            instruction.comments = std::mem::take(&mut comments);
            if can_contain_heredoc(&instruction) && whole.contains("<<") {
                self.read_heredocs(&logical, &mut instruction)?;
            }
            self.instructions.push(instruction);
            self.spare_pieces = logical.pieces;
        }
        if self.instructions.is_empty() {
            let end = self.end_position();
            return Err(ParseError {
                kind: ParseErrorKind::NoInstructions,
                span: Span { start: end, end },
            });
        }
        if let Some(line) = self.lines.too_long {
            let mut cut = line.text.len().min(80);
            while !line.text.is_char_boundary(cut) {
                cut -= 1;
            }
            let head = &line.text[..cut];
            return Err(ParseError {
                kind: ParseErrorKind::LineTooLong,
                span: self.line_span(line, head),
            });
        }
        Ok(Dockerfile {
            directives: self.directives.found,
            escape: self.directives.escape,
            instructions: self.instructions,
            warnings: self.warnings,
        })
    }

    fn end_position(&self) -> Position {
        let line_start = self.source.rfind('\n').map_or(0, |i| i + 1);
        let line = self.source.bytes().filter(|b| *b == b'\n').count() + 1;
        Position {
            line: u32::try_from(line).unwrap_or(u32::MAX),
            column: u32::try_from(self.source.len() - line_start + 1).unwrap_or(u32::MAX),
            offset: self.source.len(),
        }
    }

    /// Reads the bodies of the heredocs named in the instruction line.
    fn read_heredocs(
        &mut self,
        logical: &Logical<'_>,
        instruction: &mut Instruction,
    ) -> Result<(), ParseError> {
        let line = logical.text.as_ref();
        let markers = heredoc::markers(line).map_err(|error| ParseError {
            kind: ParseErrorKind::InvalidHeredoc(error.word),
            span: logical.span(error.range),
        })?;
        for marker in markers {
            let marker_span = logical.span(marker.range.clone());
            let mut content_start: Option<usize> = None;
            let mut content_end = 0;
            let mut terminated = None;
            for body_line in self.lines.by_ref() {
                let candidate = if marker.chomp {
                    body_line.text.trim_start_matches('\t')
                } else {
                    body_line.text
                };
                if candidate == marker.name {
                    terminated = Some(body_line);
                    break;
                }
                content_start.get_or_insert(body_line.start);
                content_end = body_line.start + body_line.full.len();
            }
            let Some(terminator) = terminated else {
                return Err(ParseError {
                    kind: ParseErrorKind::UnterminatedHeredoc(marker.name),
                    span: marker_span,
                });
            };
            let terminator_span = self.line_span(terminator, terminator.text);
            let content_range = match content_start {
                Some(start) => start..content_end,
                None => terminator.start..terminator.start,
            };
            let content_span = self.source_span(content_range.clone(), terminator);
            instruction.heredocs.push(Heredoc {
                name: marker.name,
                file_descriptor: marker.file_descriptor,
                expand: marker.expand,
                chomp: marker.chomp,
                content: self.source[content_range].to_owned(),
                marker_span,
                content_span,
                span: Span {
                    start: content_span.start,
                    end: terminator_span.end,
                },
            });
            instruction.span.end = terminator_span.end;
        }
        Ok(())
    }

    /// A span for a range of whole lines ending right before `terminator`.
    fn source_span(&self, range: std::ops::Range<usize>, terminator: PhysicalLine<'_>) -> Span {
        let start_line_start = self.source[..range.start].rfind('\n').map_or(0, |i| i + 1);
        let start_line = if range.start == terminator.start {
            terminator.number
        } else {
            let lines_in = self.source[range.clone()]
                .bytes()
                .filter(|b| *b == b'\n')
                .count();
            terminator
                .number
                .saturating_sub(u32::try_from(lines_in).unwrap_or(u32::MAX))
        };
        Span {
            start: Position {
                line: start_line,
                column: u32::try_from(range.start - start_line_start + 1).unwrap_or(u32::MAX),
                offset: range.start,
            },
            end: Position {
                line: terminator.number,
                column: 1,
                offset: range.end,
            },
        }
    }
}

/// BuildKit's `canContainHeredoc`: RUN, COPY, ADD (directly or under
/// ONBUILD) not in JSON form.
fn can_contain_heredoc(instruction: &Instruction) -> bool {
    let target = match &instruction.args {
        Arguments::Onbuild(child) if instruction.keyword == Some(Keyword::Onbuild) => child,
        _ => instruction,
    };
    target.keyword.is_some_and(Keyword::allows_heredocs)
        && !matches!(target.args, Arguments::Exec(_))
}

/// BuildKit's `newNodeFromLine` on `line` (a slice of `logical.text`).
fn parse_instruction(
    logical: &Logical<'_>,
    line: &str,
    escape: char,
    end_of_line: Position,
) -> Result<Instruction, ParseError> {
    let (name_range, rest_start) = words::split_name(line);
    let name_text = &line[name_range.clone()];
    let name = go_lowercase(name_text);
    let keyword = Keyword::from_lowercase(&name);
    let name_span = logical.span_of(name_text);
    let mut flags = Vec::new();
    let mut args_text = &line[line.len()..];
    if let Some(rest_start) = rest_start {
        let rest_end = line.trim_end().len().max(rest_start);
        let rest = &line[rest_start..rest_end];
        let (raw_flags, args_start) = words::extract_flags(rest);
        for raw in raw_flags {
            let part = &rest[raw.range.clone()];
            let span = logical.span_of(part);
            let body = raw.text.strip_prefix("--").unwrap_or(&raw.text);
            let (flag_name, value) = match body.split_once('=') {
                Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
                None => (body.to_owned(), None),
            };
            flags.push(Flag {
                raw: raw.text,
                name: flag_name,
                value,
                span,
            });
        }
        args_text = rest[args_start..].trim();
    }
    let args = match keyword {
        Some(Keyword::Add | Keyword::Copy | Keyword::Volume) => {
            maybe_json_to_list(logical, args_text)?
        }
        Some(Keyword::Arg) => name_or_name_value(logical, args_text, escape),
        Some(Keyword::Cmd | Keyword::Entrypoint | Keyword::Run | Keyword::Shell) => {
            maybe_json(logical, args_text)?
        }
        Some(Keyword::Env) => name_value(logical, args_text, "ENV", escape)?,
        Some(Keyword::Label) => name_value(logical, args_text, "LABEL", escape)?,
        Some(Keyword::Expose | Keyword::From) => whitespace_delimited(logical, args_text),
        Some(Keyword::Healthcheck) => health_config(logical, args_text)?,
        Some(Keyword::Maintainer | Keyword::Stopsignal | Keyword::User | Keyword::Workdir) => {
            string_argument(logical, args_text)
        }
        Some(Keyword::Onbuild) => {
            if args_text.is_empty() {
                Arguments::None
            } else {
                let child = parse_instruction(logical, args_text, escape, end_of_line)?;
                Arguments::Onbuild(Box::new(child))
            }
        }
        None => Arguments::Unknown(logical.text(args_text)),
    };
    let start = name_span.start;
    Ok(Instruction {
        name,
        keyword,
        name_span,
        flags,
        args,
        heredocs: Vec::new(),
        original: line.to_owned(),
        comments: Vec::new(),
        span: Span {
            start,
            end: end_of_line.max(start),
        },
    })
}

fn string_argument(logical: &Logical<'_>, rest: &str) -> Arguments {
    if rest.is_empty() {
        Arguments::None
    } else {
        Arguments::Shell(logical.text(rest))
    }
}

fn whitespace_delimited(logical: &Logical<'_>, rest: &str) -> Arguments {
    if rest.is_empty() {
        return Arguments::None;
    }
    Arguments::Words(
        words::split_ascii_whitespace_ranges(rest)
            .into_iter()
            .map(|range| logical.text(&rest[range]))
            .collect(),
    )
}

/// The JSON form of `rest`: `Ok(None)` when it is not JSON (shell form).
fn json_array(logical: &Logical<'_>, rest: &str) -> Result<Option<Vec<Text>>, ParseError> {
    if !rest.starts_with('[') {
        return Ok(None);
    }
    match json::parse_string_array(rest) {
        Ok(elements) => {
            let base = logical.offset_of(rest);
            Ok(Some(
                elements
                    .into_iter()
                    .map(|element| Text {
                        value: element.value,
                        span: logical.span(base + element.range.start..base + element.range.end),
                    })
                    .collect(),
            ))
        }
        Err(json::JsonError::NotJson) => Ok(None),
        Err(json::JsonError::NotStringArray(range)) => {
            let base = logical.offset_of(rest);
            Err(ParseError {
                kind: ParseErrorKind::NotStringArray,
                span: logical.span(base + range.start..base + range.end),
            })
        }
    }
}

fn maybe_json(logical: &Logical<'_>, rest: &str) -> Result<Arguments, ParseError> {
    if rest.is_empty() {
        return Ok(Arguments::None);
    }
    Ok(match json_array(logical, rest)? {
        Some(elements) => Arguments::Exec(elements),
        None => Arguments::Shell(logical.text(rest)),
    })
}

fn maybe_json_to_list(logical: &Logical<'_>, rest: &str) -> Result<Arguments, ParseError> {
    Ok(match json_array(logical, rest)? {
        Some(elements) => Arguments::Exec(elements),
        None => whitespace_delimited(logical, rest),
    })
}

fn name_or_name_value(logical: &Logical<'_>, rest: &str, escape: char) -> Arguments {
    let ranges = words::split_words(rest, escape);
    if ranges.is_empty() {
        return Arguments::None;
    }
    Arguments::Words(ranges.into_iter().map(|r| logical.text(&rest[r])).collect())
}

fn name_value(
    logical: &Logical<'_>,
    rest: &str,
    instruction: &str,
    escape: char,
) -> Result<Arguments, ParseError> {
    let ranges = words::split_words(rest, escape);
    let Some(first) = ranges.first() else {
        return Ok(Arguments::None);
    };
    if !rest[first.clone()].contains('=') {
        // Legacy `KEY name value`: the value is the rest of the line after
        // the first run of ASCII whitespace.
        let pieces = words::split_ascii_whitespace_ranges(rest);
        let key = pieces.first().map(|r| &rest[r.clone()]).unwrap_or(rest);
        let Some(value_start) = pieces.get(1).map(|r| r.start) else {
            return Err(ParseError {
                kind: ParseErrorKind::MissingValue(instruction.to_owned()),
                span: logical.span_of(key),
            });
        };
        let key = logical.text(key);
        let value = logical.text(&rest[value_start..]);
        let span = key.span.to(value.span);
        return Ok(Arguments::KeyValues(vec![KeyValue {
            key,
            value,
            form: KeyValueForm::Legacy,
            span,
        }]));
    }
    let mut pairs = Vec::with_capacity(ranges.len());
    for range in ranges {
        let word = &rest[range];
        let Some(equals) = word.find('=') else {
            return Err(ParseError {
                kind: ParseErrorKind::MissingEquals(word.to_owned()),
                span: logical.span_of(word),
            });
        };
        let key = logical.text(&word[..equals]);
        let value = logical.text(&word[equals + 1..]);
        let span = logical.span_of(word);
        pairs.push(KeyValue {
            key,
            value,
            form: KeyValueForm::Equals,
            span,
        });
    }
    Ok(Arguments::KeyValues(pairs))
}

fn health_config(logical: &Logical<'_>, rest: &str) -> Result<Arguments, ParseError> {
    let separator = rest.find(is_go_space).unwrap_or(rest.len());
    if separator == 0 {
        return Ok(Arguments::None);
    }
    let kind = logical.text(&rest[..separator]);
    let command_text = rest[separator..].trim_start_matches(is_go_space);
    let command = maybe_json(logical, command_text)?;
    Ok(Arguments::Healthcheck {
        kind,
        command: Box::new(command),
    })
}

#[cfg(test)]
mod tests;
