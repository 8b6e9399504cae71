//! The Dockerfile syntax tree: what [`crate::parser::parse`] produces.
//!
//! The tree mirrors BuildKit's parser (`frontend/dockerfile/parser`): one
//! [`Instruction`] per logical line, its raw flags, and its arguments in the
//! shape BuildKit's per-instruction line parsers give them (shell text, JSON
//! exec array, whitespace-separated words, ENV/LABEL key-value pairs,
//! HEALTHCHECK type plus command, ONBUILD nested instruction). Nothing is
//! expanded or validated here beyond what BuildKit's parser itself rejects:
//! quotes stay in ENV values, unknown instructions and unknown flags are kept
//! (see [`crate::validate`] for those checks).
//!
//! Every node carries a [`Span`]: start and end [`Position`]s (1-based line,
//! 1-based byte column, 0-based byte offset into the source). Spans of text
//! that BuildKit joins from several physical lines (line continuations) start
//! and end where the text starts and ends in the source.

use std::fmt;

use serde::Serialize;

/// A place in the source text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
pub struct Position {
    /// 1-based line number.
    pub line: u32,
    /// 1-based column, counted in bytes from the start of the line (like
    /// BuildKit's `Position.Character` and most compilers).
    pub column: u32,
    /// 0-based byte offset from the start of the source.
    pub offset: usize,
}

/// A half-open range `[start, end)` of the source text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub struct Span {
    pub start: Position,
    pub end: Position,
}

impl Span {
    /// The byte range of this span in the source, for slicing and for
    /// diagnostics renderers.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.start.offset..self.end.offset
    }

    /// The smallest span covering both `self` and `other`.
    pub fn to(&self, other: Span) -> Span {
        Span {
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.start.line, self.start.column)
    }
}

/// A piece of text from the source with where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Text {
    /// The text as BuildKit's parser gives it (continuations joined, JSON
    /// strings decoded, quotes otherwise kept).
    pub value: String,
    pub span: Span,
}

/// The known Dockerfile instructions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Keyword {
    Add,
    Arg,
    Cmd,
    Copy,
    Entrypoint,
    Env,
    Expose,
    From,
    Healthcheck,
    Label,
    Maintainer,
    Onbuild,
    Run,
    Shell,
    Stopsignal,
    User,
    Volume,
    Workdir,
}

impl Keyword {
    /// Every keyword, in alphabetical order.
    pub const ALL: [Keyword; 18] = [
        Keyword::Add,
        Keyword::Arg,
        Keyword::Cmd,
        Keyword::Copy,
        Keyword::Entrypoint,
        Keyword::Env,
        Keyword::Expose,
        Keyword::From,
        Keyword::Healthcheck,
        Keyword::Label,
        Keyword::Maintainer,
        Keyword::Onbuild,
        Keyword::Run,
        Keyword::Shell,
        Keyword::Stopsignal,
        Keyword::User,
        Keyword::Volume,
        Keyword::Workdir,
    ];

    /// The keyword for a lowercase instruction name, `None` if unknown.
    pub fn from_lowercase(name: &str) -> Option<Keyword> {
        Some(match name {
            "add" => Keyword::Add,
            "arg" => Keyword::Arg,
            "cmd" => Keyword::Cmd,
            "copy" => Keyword::Copy,
            "entrypoint" => Keyword::Entrypoint,
            "env" => Keyword::Env,
            "expose" => Keyword::Expose,
            "from" => Keyword::From,
            "healthcheck" => Keyword::Healthcheck,
            "label" => Keyword::Label,
            "maintainer" => Keyword::Maintainer,
            "onbuild" => Keyword::Onbuild,
            "run" => Keyword::Run,
            "shell" => Keyword::Shell,
            "stopsignal" => Keyword::Stopsignal,
            "user" => Keyword::User,
            "volume" => Keyword::Volume,
            "workdir" => Keyword::Workdir,
            _ => return None,
        })
    }

    /// The lowercase name (`"run"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Keyword::Add => "add",
            Keyword::Arg => "arg",
            Keyword::Cmd => "cmd",
            Keyword::Copy => "copy",
            Keyword::Entrypoint => "entrypoint",
            Keyword::Env => "env",
            Keyword::Expose => "expose",
            Keyword::From => "from",
            Keyword::Healthcheck => "healthcheck",
            Keyword::Label => "label",
            Keyword::Maintainer => "maintainer",
            Keyword::Onbuild => "onbuild",
            Keyword::Run => "run",
            Keyword::Shell => "shell",
            Keyword::Stopsignal => "stopsignal",
            Keyword::User => "user",
            Keyword::Volume => "volume",
            Keyword::Workdir => "workdir",
        }
    }

    /// The flags BuildKit's dockerfile:1 frontend accepts for this
    /// instruction (without the leading `--`).
    pub fn valid_flags(self) -> &'static [&'static str] {
        match self {
            Keyword::From => &["platform"],
            Keyword::Run => &["mount", "network", "security", "device"],
            Keyword::Add => &[
                "chown",
                "chmod",
                "link",
                "checksum",
                "keep-git-dir",
                "exclude",
                "unpack",
            ],
            Keyword::Copy => &["from", "chown", "chmod", "link", "parents", "exclude"],
            Keyword::Healthcheck => &[
                "interval",
                "timeout",
                "start-period",
                "start-interval",
                "retries",
            ],
            _ => &[],
        }
    }

    /// Whether RUN/COPY/ADD-style heredocs (`<<EOF`) are recognised.
    pub fn allows_heredocs(self) -> bool {
        matches!(self, Keyword::Run | Keyword::Copy | Keyword::Add)
    }
}

impl fmt::Display for Keyword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_str().to_ascii_uppercase())
    }
}

/// A parser directive (`# syntax=...`, `# escape=...`, `# check=...`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Directive {
    /// Lowercase directive name: `syntax`, `escape` or `check`.
    pub name: String,
    /// The value, trimmed of surrounding whitespace.
    pub value: String,
    /// The whole directive line.
    pub span: Span,
    /// Where the value is.
    pub value_span: Span,
}

/// A raw instruction flag as written: `--name=value` or `--name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Flag {
    /// The flag with quotes and backslash escapes removed, as BuildKit's parser
    /// gives it (`--mount=type=cache,target=/root/.cache`).
    pub raw: String,
    /// The name without the leading `--` (`mount`).
    pub name: String,
    /// The value after the first `=`, `None` for a boolean `--name`.
    pub value: Option<String>,
    pub span: Span,
}

/// Which spelling an ENV or LABEL pair used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyValueForm {
    /// `ENV key=value ...`
    Equals,
    /// `ENV key value` (legacy, one pair; the value is the rest of the line).
    Legacy,
}

/// One ENV or LABEL pair. The value keeps its quotes and escapes: BuildKit
/// removes them at word-expansion time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyValue {
    pub key: Text,
    pub value: Text,
    pub form: KeyValueForm,
    pub span: Span,
}

/// The arguments of an instruction, in the shape BuildKit's parser gives them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "form", content = "value", rename_all = "lowercase")]
pub enum Arguments {
    /// Nothing after the instruction name (and flags).
    None,
    /// Shell form: the raw text (RUN/CMD/ENTRYPOINT/SHELL when not a JSON
    /// string array; MAINTAINER, USER, WORKDIR, STOPSIGNAL always).
    Shell(Text),
    /// Exec form: a JSON string array, decoded.
    Exec(Vec<Text>),
    /// Whitespace-separated words (FROM, EXPOSE, ARG, and ADD/COPY/VOLUME when
    /// not JSON). ARG words keep quotes (`name="a b"` is one word).
    Words(Vec<Text>),
    /// ENV and LABEL pairs.
    KeyValues(Vec<KeyValue>),
    /// HEALTHCHECK: the type word (`CMD`, `NONE`, anything else as written)
    /// and, for a type followed by more text, the command (shell or exec).
    Healthcheck { kind: Text, command: Box<Arguments> },
    /// ONBUILD: the triggered instruction.
    Onbuild(Box<Instruction>),
    /// An unknown instruction: BuildKit's parser keeps it with no arguments;
    /// the raw text after the name is kept here for diagnostics.
    Unknown(Text),
}

/// A heredoc attached to a RUN, COPY or ADD instruction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Heredoc {
    /// The delimiter word with quotes removed (`EOF`).
    pub name: String,
    /// File descriptor before `<<` (`3<<EOF`), 0 when absent.
    pub file_descriptor: u32,
    /// False when any part of the delimiter was quoted (`<<'EOF'`,
    /// `<<"EOF"`): the content is then not expanded.
    pub expand: bool,
    /// `<<-EOF`: leading tabs are stripped from the content lines and the
    /// delimiter line.
    pub chomp: bool,
    /// The content exactly as in the source, every line with its newline, not
    /// tab-stripped (use [`Heredoc::text`]).
    pub content: String,
    /// Where `<<EOF` is written in the instruction line.
    pub marker_span: Span,
    /// Where the content is (empty span at the start of the delimiter line
    /// when the content is empty).
    pub content_span: Span,
    /// From the start of the content to the end of the delimiter line.
    pub span: Span,
}

impl Heredoc {
    /// The content with leading tabs removed from every line when
    /// [`Heredoc::chomp`] is set (BuildKit's `ChompHeredocContent`).
    pub fn text(&self) -> String {
        if !self.chomp {
            return self.content.clone();
        }
        let mut out = String::with_capacity(self.content.len());
        for line in self.content.split_inclusive('\n') {
            out.push_str(line.trim_start_matches('\t'));
        }
        out
    }
}

/// One Dockerfile instruction (one logical line plus its heredocs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Instruction {
    /// The instruction name in lowercase (`run`), as BuildKit dumps it, even
    /// when unknown.
    pub name: String,
    /// The instruction, `None` when the name is not a known instruction.
    pub keyword: Option<Keyword>,
    pub name_span: Span,
    pub flags: Vec<Flag>,
    pub args: Arguments,
    pub heredocs: Vec<Heredoc>,
    /// The logical line as BuildKit sees it: continuations joined, comment
    /// lines inside continuations removed (BuildKit's `Node.Original`).
    pub original: String,
    /// Comment lines directly above the instruction, `#` and surrounding
    /// whitespace removed (BuildKit's `PrevComment`).
    pub comments: Vec<String>,
    /// From the first character of the name to the end of the last line of
    /// the instruction (including heredoc bodies).
    pub span: Span,
}

impl Instruction {
    /// The flags named `name` (without `--`), in order.
    pub fn flags_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Flag> + 'a {
        self.flags.iter().filter(move |flag| flag.name == name)
    }

    /// Whether the arguments are in exec (JSON) form.
    pub fn is_exec_form(&self) -> bool {
        match &self.args {
            Arguments::Exec(_) => true,
            Arguments::Healthcheck { command, .. } => matches!(**command, Arguments::Exec(_)),
            _ => false,
        }
    }
}

/// The severity of a [`crate::diagnostics::Diagnostic`].
pub use crate::diagnostics::Severity;

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dockerfile {
    /// Parser directives found at the top of the file, in order.
    pub directives: Vec<Directive>,
    /// The escape character in effect (`\` or `` ` ``).
    pub escape: char,
    pub instructions: Vec<Instruction>,
    /// Things BuildKit's parser warns about (empty continuation lines).
    pub warnings: Vec<crate::diagnostics::Diagnostic>,
}

impl Dockerfile {
    /// The value of a parser directive by lowercase name (`"syntax"`).
    pub fn directive(&self, name: &str) -> Option<&Directive> {
        self.directives.iter().find(|d| d.name == name)
    }
}
