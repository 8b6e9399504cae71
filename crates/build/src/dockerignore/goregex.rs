//! A small engine for the subset of Go's RE2 regular-expression syntax that
//! moby/patternmatcher generates from a `.dockerignore` pattern.
//!
//! Docker turns each ignore pattern into a Go regular expression text and lets
//! Go's `regexp` package interpret it. Characters the user writes between `[`
//! and `]`, after a `\`, or a bare `^`, reach that regex parser unchanged, so
//! matching exactly as Docker does means interpreting the generated text with
//! Go's rules (character classes with POSIX and Perl classes, `^` as a
//! beginning-of-text anchor, `.` not matching a newline, negated classes that
//! do match one, octal and hex escapes, ...). No Rust crate parses Go's
//! dialect (Rust's `regex` differs on nested classes and several escapes), so
//! this module parses it and runs a Pike VM (linear in the path length, no
//! backtracking blow-up). Constructs the generator can only emit from exotic
//! escapes (`\p{..}`, `\Q..\E`, `\C`) are reported as unsupported.

use std::fmt;

/// Why a generated regular expression could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegexError {
    /// The text is not valid Go regex syntax (Go's `regexp.Compile` fails too).
    Syntax(String),
    /// Valid Go syntax that kiln does not implement.
    Unsupported(String),
}

impl fmt::Display for RegexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegexError::Syntax(why) => write!(f, "{why}"),
            RegexError::Unsupported(what) => write!(f, "{what} is not supported by kiln"),
        }
    }
}

/// A set of characters: sorted inclusive ranges, possibly negated.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CharSet {
    ranges: Vec<(u32, u32)>,
    negated: bool,
}

impl CharSet {
    fn contains(&self, ch: char) -> bool {
        let c = ch as u32;
        let inside = self.ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi);
        inside != self.negated
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Assertion {
    BeginText,
    EndText,
    WordBoundary,
    NotWordBoundary,
}

#[derive(Debug, Clone)]
enum Node {
    Literal(char),
    Set(CharSet),
    AnyExceptNewline,
    Assert(Assertion),
    Group(Vec<Node>),
    Alternation(Vec<Vec<Node>>),
    Repeat {
        body: Box<Node>,
        kind: RepeatKind,
    },
    Counted {
        body: Box<Node>,
        min: u32,
        max: Option<u32>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RepeatKind {
    ZeroOrMore,
    OneOrMore,
    ZeroOrOne,
}

#[derive(Debug, Clone)]
enum Inst {
    Char(CharTest),
    Assert(Assertion),
    Split(usize, usize),
    Jump(usize),
    Match,
}

#[derive(Debug, Clone)]
enum CharTest {
    Literal(char),
    Set(CharSet),
    AnyExceptNewline,
}

impl CharTest {
    fn accepts(&self, ch: char) -> bool {
        match self {
            CharTest::Literal(want) => *want == ch,
            CharTest::Set(set) => set.contains(ch),
            CharTest::AnyExceptNewline => ch != '\n',
        }
    }
}

/// A compiled regular expression, matched with Go's `MatchString` semantics
/// (unanchored unless the text anchors itself, which generated texts do).
#[derive(Debug, Clone)]
pub struct GoRegex {
    program: Vec<Inst>,
}

const POSIX_CLASSES: &[(&str, &[(u32, u32)])] = &[
    ("alnum", &[(0x30, 0x39), (0x41, 0x5a), (0x61, 0x7a)]),
    ("alpha", &[(0x41, 0x5a), (0x61, 0x7a)]),
    ("ascii", &[(0x00, 0x7f)]),
    ("blank", &[(0x09, 0x09), (0x20, 0x20)]),
    ("cntrl", &[(0x00, 0x1f), (0x7f, 0x7f)]),
    ("digit", &[(0x30, 0x39)]),
    ("graph", &[(0x21, 0x7e)]),
    ("lower", &[(0x61, 0x7a)]),
    ("print", &[(0x20, 0x7e)]),
    (
        "punct",
        &[(0x21, 0x2f), (0x3a, 0x40), (0x5b, 0x60), (0x7b, 0x7e)],
    ),
    ("space", &[(0x09, 0x0d), (0x20, 0x20)]),
    ("upper", &[(0x41, 0x5a)]),
    (
        "word",
        &[(0x30, 0x39), (0x41, 0x5a), (0x61, 0x7a), (0x5f, 0x5f)],
    ),
    ("xdigit", &[(0x30, 0x39), (0x41, 0x46), (0x61, 0x66)]),
];

const PERL_DIGIT: &[(u32, u32)] = &[(0x30, 0x39)];
const PERL_SPACE: &[(u32, u32)] = &[(0x09, 0x0a), (0x0c, 0x0d), (0x20, 0x20)];
const PERL_WORD: &[(u32, u32)] = &[(0x30, 0x39), (0x41, 0x5a), (0x5f, 0x5f), (0x61, 0x7a)];

fn complement(ranges: &[(u32, u32)]) -> Vec<(u32, u32)> {
    let mut sorted = ranges.to_vec();
    sorted.sort_unstable();
    let mut out = Vec::new();
    let mut next = 0u32;
    for (lo, hi) in sorted {
        if lo > next {
            out.push((next, lo - 1));
        }
        next = next.max(hi.saturating_add(1));
    }
    if next <= 0x10ffff {
        out.push((next, 0x10ffff));
    }
    out
}

fn perl_class(letter: char) -> Option<Vec<(u32, u32)>> {
    let (base, negated) = match letter {
        'd' => (PERL_DIGIT, false),
        'D' => (PERL_DIGIT, true),
        's' => (PERL_SPACE, false),
        'S' => (PERL_SPACE, true),
        'w' => (PERL_WORD, false),
        'W' => (PERL_WORD, true),
        _ => return None,
    };
    Some(if negated {
        complement(base)
    } else {
        base.to_vec()
    })
}

fn is_word_char(ch: Option<char>) -> bool {
    matches!(ch, Some(c) if c.is_ascii_alphanumeric() || c == '_')
}

struct Parser<'a> {
    text: &'a [char],
    pos: usize,
}

enum Escape {
    Char(char),
    Class(Vec<(u32, u32)>),
    Assert(Assertion),
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<char> {
        self.text.get(self.pos).copied()
    }

    fn peek_at(&self, offset: usize) -> Option<char> {
        self.text.get(self.pos + offset).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let ch = self.peek()?;
        self.pos += 1;
        Some(ch)
    }

    /// `{n}`, `{n,}` or `{n,m}` at the cursor: (min, max, length). Anything
    /// else is not a repetition, and Go reads the `{` as a literal.
    fn repeat_braces(&self) -> Option<(u32, Option<u32>, usize)> {
        let rest = &self.text[self.pos..];
        let close = rest.iter().position(|&c| c == '}')?;
        let inner: String = rest.get(1..close)?.iter().collect();
        let number = |s: &str| -> Option<u32> {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            // Go refuses leading zeros, which makes the `{` a literal.
            if s.len() >= 2 && s.starts_with('0') {
                return None;
            }
            // Go caps counts at 1000 later; huge numbers are still repeats.
            Some(s.parse::<u32>().unwrap_or(u32::MAX))
        };
        let (min, max) = match inner.split_once(',') {
            None => {
                let n = number(&inner)?;
                (n, Some(n))
            }
            Some((lo, "")) => (number(lo)?, None),
            Some((lo, hi)) => (number(lo)?, Some(number(hi)?)),
        };
        Some((min, max, close + 1))
    }

    /// Parses alternatives separated by `|` up to `)` or the end.
    fn parse_sequence(&mut self, depth: usize) -> Result<Vec<Node>, RegexError> {
        let mut alternatives: Vec<Vec<Node>> = Vec::new();
        let nodes = self.parse_branches(depth, &mut alternatives)?;
        if alternatives.is_empty() {
            return Ok(nodes);
        }
        alternatives.push(nodes);
        Ok(vec![Node::Alternation(alternatives)])
    }

    fn parse_branches(
        &mut self,
        depth: usize,
        alternatives: &mut Vec<Vec<Node>>,
    ) -> Result<Vec<Node>, RegexError> {
        let mut nodes: Vec<Node> = Vec::new();
        // Whether the last node is a repetition (Go rejects `a**`).
        let mut last_was_repeat = false;
        while let Some(ch) = self.peek() {
            match ch {
                ')' => {
                    if depth == 0 {
                        return Err(RegexError::Syntax("unexpected )".into()));
                    }
                    return Ok(nodes);
                }
                '(' => {
                    self.pos += 1;
                    if self.peek() == Some('?') {
                        return Err(RegexError::Unsupported("a (?...) group".into()));
                    }
                    let inner = self.parse_sequence(depth + 1)?;
                    if self.bump() != Some(')') {
                        return Err(RegexError::Syntax("missing closing )".into()));
                    }
                    nodes.push(Node::Group(inner));
                }
                '|' => {
                    self.pos += 1;
                    alternatives.push(std::mem::take(&mut nodes));
                }
                '{' => {
                    let Some((min, max, len)) = self.repeat_braces() else {
                        self.pos += 1;
                        nodes.push(Node::Literal('{'));
                        last_was_repeat = false;
                        continue;
                    };
                    self.pos += len;
                    if last_was_repeat {
                        return Err(RegexError::Syntax(
                            "invalid nested repetition operator `{`".into(),
                        ));
                    }
                    if min > 1000 || max.is_some_and(|m| m > 1000 || m < min) {
                        return Err(RegexError::Syntax("invalid repeat count".into()));
                    }
                    let Some(body) = nodes.pop() else {
                        return Err(RegexError::Syntax(
                            "missing argument to repetition operator `{`".into(),
                        ));
                    };
                    if self.peek() == Some('?') {
                        self.pos += 1;
                    }
                    nodes.push(Node::Counted {
                        body: Box::new(body),
                        min,
                        max,
                    });
                    last_was_repeat = true;
                    continue;
                }
                '*' | '+' | '?' => {
                    self.pos += 1;
                    let kind = match ch {
                        '*' => RepeatKind::ZeroOrMore,
                        '+' => RepeatKind::OneOrMore,
                        _ => RepeatKind::ZeroOrOne,
                    };
                    if last_was_repeat {
                        return Err(RegexError::Syntax(format!(
                            "invalid nested repetition operator `{ch}`"
                        )));
                    }
                    let Some(body) = nodes.pop() else {
                        return Err(RegexError::Syntax(format!(
                            "missing argument to repetition operator `{ch}`"
                        )));
                    };
                    // A trailing `?` makes the repetition lazy, which does not
                    // change whether a match exists.
                    if self.peek() == Some('?') {
                        self.pos += 1;
                    }
                    nodes.push(Node::Repeat {
                        body: Box::new(body),
                        kind,
                    });
                    last_was_repeat = true;
                    continue;
                }
                '[' => {
                    self.pos += 1;
                    nodes.push(Node::Set(self.parse_class()?));
                }
                '.' => {
                    self.pos += 1;
                    nodes.push(Node::AnyExceptNewline);
                }
                '^' => {
                    self.pos += 1;
                    nodes.push(Node::Assert(Assertion::BeginText));
                }
                '$' => {
                    self.pos += 1;
                    nodes.push(Node::Assert(Assertion::EndText));
                }
                '\\' if self.peek_at(1) == Some('Q') => {
                    // \Q...\E: everything up to \E (or the end) is literal.
                    self.pos += 2;
                    while let Some(c) = self.bump() {
                        if c == '\\' && self.peek() == Some('E') {
                            self.pos += 1;
                            break;
                        }
                        nodes.push(Node::Literal(c));
                    }
                }
                '\\' => {
                    self.pos += 1;
                    match self.parse_escape(false)? {
                        Escape::Char(c) => nodes.push(Node::Literal(c)),
                        Escape::Class(ranges) => nodes.push(Node::Set(CharSet {
                            ranges,
                            negated: false,
                        })),
                        Escape::Assert(a) => nodes.push(Node::Assert(a)),
                    }
                }
                other => {
                    self.pos += 1;
                    nodes.push(Node::Literal(other));
                }
            }
            last_was_repeat = false;
        }
        if depth > 0 {
            return Err(RegexError::Syntax("missing closing )".into()));
        }
        Ok(nodes)
    }

    /// Parses what follows a backslash. `in_class` disables the assertions.
    fn parse_escape(&mut self, in_class: bool) -> Result<Escape, RegexError> {
        let Some(ch) = self.bump() else {
            return Err(RegexError::Syntax(
                "trailing backslash at end of expression".into(),
            ));
        };
        if ch.is_ascii() && !ch.is_ascii_alphanumeric() {
            return Ok(Escape::Char(ch));
        }
        if let Some(ranges) = perl_class(ch) {
            return Ok(Escape::Class(ranges));
        }
        if !in_class {
            match ch {
                'A' => return Ok(Escape::Assert(Assertion::BeginText)),
                'z' => return Ok(Escape::Assert(Assertion::EndText)),
                'b' => return Ok(Escape::Assert(Assertion::WordBoundary)),
                'B' => return Ok(Escape::Assert(Assertion::NotWordBoundary)),
                _ => {}
            }
        }
        match ch {
            '1'..='7' if !matches!(self.peek(), Some('0'..='7')) => Err(RegexError::Syntax(
                format!("invalid escape sequence `\\{ch}` (backreferences do not exist)"),
            )),
            '0'..='7' => {
                let mut value = ch as u32 - '0' as u32;
                for _ in 0..2 {
                    match self.peek() {
                        Some(d @ '0'..='7') => {
                            value = value * 8 + (d as u32 - '0' as u32);
                            self.pos += 1;
                        }
                        _ => break,
                    }
                }
                char::from_u32(value)
                    .map(Escape::Char)
                    .ok_or_else(|| RegexError::Syntax("invalid octal escape".into()))
            }
            'x' => self.parse_hex_escape().map(Escape::Char),
            'a' => Ok(Escape::Char('\x07')),
            'f' => Ok(Escape::Char('\x0c')),
            'n' => Ok(Escape::Char('\n')),
            'r' => Ok(Escape::Char('\r')),
            't' => Ok(Escape::Char('\t')),
            'v' => Ok(Escape::Char('\x0b')),
            'p' | 'P' => Err(RegexError::Unsupported(format!(
                "the Unicode class escape `\\{ch}`"
            ))),
            other => Err(RegexError::Syntax(format!(
                "invalid escape sequence `\\{other}`"
            ))),
        }
    }

    fn parse_hex_escape(&mut self) -> Result<char, RegexError> {
        let bad = || RegexError::Syntax("invalid hex escape after `\\x`".into());
        if self.peek() == Some('{') {
            self.pos += 1;
            let mut value: u32 = 0;
            let mut digits = 0;
            loop {
                let ch = self.bump().ok_or_else(bad)?;
                if ch == '}' {
                    break;
                }
                let d = ch.to_digit(16).ok_or_else(bad)?;
                value = value.checked_mul(16).ok_or_else(bad)? + d;
                if value > 0x10ffff {
                    return Err(bad());
                }
                digits += 1;
            }
            if digits == 0 {
                return Err(bad());
            }
            return char::from_u32(value).ok_or_else(bad);
        }
        let hi = self.bump().and_then(|c| c.to_digit(16)).ok_or_else(bad)?;
        let lo = self.bump().and_then(|c| c.to_digit(16)).ok_or_else(bad)?;
        char::from_u32(hi * 16 + lo).ok_or_else(bad)
    }

    /// Parses a class after its `[`, through the closing `]`.
    fn parse_class(&mut self) -> Result<CharSet, RegexError> {
        let mut set = CharSet {
            ranges: Vec::new(),
            negated: false,
        };
        if self.peek() == Some('^') {
            self.pos += 1;
            set.negated = true;
        }
        let mut first = true;
        loop {
            let Some(ch) = self.peek() else {
                return Err(RegexError::Syntax(
                    "missing closing ] of a character class".into(),
                ));
            };
            if ch == ']' && !first {
                self.pos += 1;
                return Ok(set);
            }
            first = false;
            if ch == '['
                && self.peek_at(1) == Some(':')
                && let Some(ranges) = self.parse_posix_class()?
            {
                set.ranges.extend(ranges);
                continue;
            }
            if ch == '\\'
                && let Some(letter) = self.peek_at(1)
                && let Some(ranges) = perl_class(letter)
            {
                self.pos += 2;
                set.ranges.extend(ranges);
                continue;
            }
            let lo = self.parse_class_char()?;
            let mut hi = lo;
            if self.peek() == Some('-') && matches!(self.peek_at(1), Some(c) if c != ']') {
                self.pos += 1;
                hi = self.parse_class_char()?;
                if hi < lo {
                    return Err(RegexError::Syntax(format!(
                        "invalid character class range `{lo}-{hi}`"
                    )));
                }
            }
            set.ranges.push((lo as u32, hi as u32));
        }
    }

    fn parse_class_char(&mut self) -> Result<char, RegexError> {
        match self.bump() {
            None => Err(RegexError::Syntax(
                "missing closing ] of a character class".into(),
            )),
            Some('\\') => match self.parse_escape(true)? {
                Escape::Char(c) => Ok(c),
                _ => Err(RegexError::Syntax(
                    "invalid escape in a character class range".into(),
                )),
            },
            Some(c) => Ok(c),
        }
    }

    /// `[:name:]` or `[:^name:]` at the cursor. Go looks for the closing `:]`
    /// anywhere later in the text; without one the `[` is an ordinary char.
    fn parse_posix_class(&mut self) -> Result<Option<Vec<(u32, u32)>>, RegexError> {
        let rest = &self.text[self.pos + 2..];
        let Some(close) = rest.windows(2).position(|w| w[0] == ':' && w[1] == ']') else {
            return Ok(None);
        };
        let name: String = rest[..close].iter().collect();
        let (negated, bare) = match name.strip_prefix('^') {
            Some(bare) => (true, bare),
            None => (false, name.as_str()),
        };
        let Some((_, ranges)) = POSIX_CLASSES.iter().find(|(n, _)| *n == bare) else {
            return Err(RegexError::Syntax(format!(
                "invalid character class range `[:{name}:]`"
            )));
        };
        self.pos += 2 + close + 2;
        Ok(Some(if negated {
            complement(ranges)
        } else {
            ranges.to_vec()
        }))
    }
}

fn compile_nodes(nodes: &[Node], program: &mut Vec<Inst>) {
    for node in nodes {
        compile_node(node, program);
    }
}

fn compile_node(node: &Node, program: &mut Vec<Inst>) {
    match node {
        Node::Literal(c) => program.push(Inst::Char(CharTest::Literal(*c))),
        Node::Set(set) => program.push(Inst::Char(CharTest::Set(set.clone()))),
        Node::AnyExceptNewline => program.push(Inst::Char(CharTest::AnyExceptNewline)),
        Node::Assert(a) => program.push(Inst::Assert(*a)),
        Node::Group(inner) => compile_nodes(inner, program),
        Node::Alternation(branches) => {
            // split(b1, split(b2, ... bn)); each branch jumps to the end.
            let mut jumps = Vec::new();
            for (i, branch) in branches.iter().enumerate() {
                let last = i + 1 == branches.len();
                let split_at = program.len();
                if !last {
                    program.push(Inst::Split(0, 0));
                }
                compile_nodes(branch, program);
                if !last {
                    jumps.push(program.len());
                    program.push(Inst::Jump(0));
                    let next_branch = program.len();
                    program[split_at] = Inst::Split(split_at + 1, next_branch);
                }
            }
            let end = program.len();
            for j in jumps {
                program[j] = Inst::Jump(end);
            }
        }
        Node::Counted { body, min, max } => {
            for _ in 0..*min {
                compile_node(body, program);
            }
            match max {
                None => compile_node(
                    &Node::Repeat {
                        body: body.clone(),
                        kind: RepeatKind::ZeroOrMore,
                    },
                    program,
                ),
                Some(max) => {
                    for _ in *min..*max {
                        compile_node(
                            &Node::Repeat {
                                body: body.clone(),
                                kind: RepeatKind::ZeroOrOne,
                            },
                            program,
                        );
                    }
                }
            }
        }
        Node::Repeat { body, kind } => match kind {
            RepeatKind::ZeroOrMore => {
                let split_at = program.len();
                program.push(Inst::Split(0, 0));
                compile_node(body, program);
                program.push(Inst::Jump(split_at));
                let after = program.len();
                program[split_at] = Inst::Split(split_at + 1, after);
            }
            RepeatKind::OneOrMore => {
                let start = program.len();
                compile_node(body, program);
                let after = program.len() + 1;
                program.push(Inst::Split(start, after));
            }
            RepeatKind::ZeroOrOne => {
                let split_at = program.len();
                program.push(Inst::Split(0, 0));
                compile_node(body, program);
                let after = program.len();
                program[split_at] = Inst::Split(split_at + 1, after);
            }
        },
    }
}

impl GoRegex {
    /// Compiles a Go regular expression text (given as characters).
    pub fn compile(text: &[char]) -> Result<GoRegex, RegexError> {
        let mut parser = Parser { text, pos: 0 };
        let nodes = parser.parse_sequence(0)?;
        let mut program = Vec::new();
        compile_nodes(&nodes, &mut program);
        program.push(Inst::Match);
        Ok(GoRegex { program })
    }

    /// Whether the expression matches somewhere in `text` (Go's
    /// `MatchString`). Runs a Pike VM: one pass over the text.
    pub fn is_match(&self, text: &[char]) -> bool {
        let n = self.program.len();
        let mut current: Vec<usize> = Vec::with_capacity(n);
        let mut next: Vec<usize> = Vec::with_capacity(n);
        let mut on_list = vec![usize::MAX; n];
        let mut stack: Vec<usize> = Vec::with_capacity(n);
        for pos in 0..=text.len() {
            // Seed a new thread at every position: Go's search is unanchored
            // and the `^` assertion restricts generated texts to position 0.
            if self.add_thread(0, pos, text, &mut current, &mut on_list, &mut stack) {
                return true;
            }
            if current.is_empty() && pos > 0 && !self.may_start_later() {
                return false;
            }
            let Some(&ch) = text.get(pos) else {
                break;
            };
            next.clear();
            for &pc in &current {
                if let Some(Inst::Char(test)) = self.program.get(pc)
                    && test.accepts(ch)
                    && self.add_thread(pc + 1, pos + 1, text, &mut next, &mut on_list, &mut stack)
                {
                    return true;
                }
            }
            std::mem::swap(&mut current, &mut next);
        }
        false
    }

    /// Generated texts start with `^`, so threads seeded after position 0
    /// die at once; this lets the search stop early.
    fn may_start_later(&self) -> bool {
        !matches!(
            self.program.first(),
            Some(Inst::Assert(Assertion::BeginText))
        )
    }

    /// Adds `start` and everything reachable from it without consuming a
    /// character at `pos`. Returns true when `Match` is reachable.
    fn add_thread(
        &self,
        start: usize,
        pos: usize,
        text: &[char],
        list: &mut Vec<usize>,
        on_list: &mut [usize],
        stack: &mut Vec<usize>,
    ) -> bool {
        // `on_list[pc] == pos` marks pc as visited for this position; list
        // entries are only char-consuming instructions.
        stack.clear();
        stack.push(start);
        let mut matched = false;
        while let Some(pc) = stack.pop() {
            let Some(slot) = on_list.get_mut(pc) else {
                continue;
            };
            if *slot == pos {
                continue;
            }
            *slot = pos;
            match &self.program[pc] {
                Inst::Char(_) => list.push(pc),
                Inst::Match => matched = true,
                Inst::Jump(to) => stack.push(*to),
                Inst::Split(a, b) => {
                    stack.push(*b);
                    stack.push(*a);
                }
                Inst::Assert(assertion) => {
                    let before = pos.checked_sub(1).and_then(|p| text.get(p)).copied();
                    let after = text.get(pos).copied();
                    let holds = match assertion {
                        Assertion::BeginText => pos == 0,
                        Assertion::EndText => pos == text.len(),
                        Assertion::WordBoundary => is_word_char(before) != is_word_char(after),
                        Assertion::NotWordBoundary => is_word_char(before) == is_word_char(after),
                    };
                    if holds {
                        stack.push(pc + 1);
                    }
                }
            }
        }
        matched
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(re: &str, text: &str) -> bool {
        let re: Vec<char> = re.chars().collect();
        let text: Vec<char> = text.chars().collect();
        GoRegex::compile(&re)
            .expect("test regex compiles")
            .is_match(&text)
    }

    fn compile_err(re: &str) -> RegexError {
        let re: Vec<char> = re.chars().collect();
        GoRegex::compile(&re).expect_err("test regex must not compile")
    }

    #[test]
    fn star_and_optional_group() {
        assert!(matches("^(.*/)?a$", "a"));
        assert!(matches("^(.*/)?a$", "x/y/a"));
        assert!(!matches("^(.*/)?a$", "x/ya"));
        assert!(matches("^[^/]*\\.go$", "main.go"));
        assert!(!matches("^[^/]*\\.go$", "x/main.go"));
    }

    #[test]
    fn dot_skips_newline_but_negated_class_does_not() {
        assert!(!matches("^(.*/)?a$", "x\ny/a"));
        assert!(matches("^[^/]*$", "x\ny"));
    }

    #[test]
    fn classes_posix_perl_ranges_and_leading_bracket() {
        assert!(matches("^[[:digit:]]x$", "7x"));
        assert!(!matches("^[[:^digit:]]x$", "7x"));
        assert!(matches("^[\\d]$", "4"));
        assert!(matches("^[]a]$", "]"));
        assert!(matches("^[^]a]$", "b"));
        assert!(matches("^[a-c-]$", "-"));
        assert!(matches("^[[^/]*]$", "[^/]"));
        assert!(!matches("^[[^/]*]$", "x]"));
    }

    #[test]
    fn unanchored_end_without_dollar() {
        assert!(matches("^ab", "abc"));
        assert!(!matches("^ab", "xab"));
    }

    #[test]
    fn escapes() {
        assert!(matches("^\\x41$", "A"));
        assert!(matches("^\\101$", "A"));
        assert!(matches("^a\\b$", "a"));
        assert!(matches("^\\t$", "\t"));
        assert!(matches("^\\*$", "*"));
        assert!(matches("^a\\Q*.\\Eb$", "a*.b"));
        assert!(matches("^a\\Qb$", "ab$"));
    }

    #[test]
    fn alternation_and_counted_repeats() {
        assert!(matches("^a|b$", "ax"));
        assert!(matches("^a|b$", "xb"));
        assert!(!matches("^a|b$", "xa"));
        assert!(matches("^(a|bc)$", "bc"));
        assert!(matches("^a{2}$", "aa"));
        assert!(!matches("^a{2}$", "a"));
        assert!(matches("^a{1,}$", "aaa"));
        assert!(matches("^a{0,1}b$", "b"));
        assert!(matches("^a{x}$", "a{x}"));
        assert!(matches("^a{01}$", "a{01}"));
    }

    #[test]
    fn syntax_errors() {
        assert!(matches!(compile_err("^a|{2}"), RegexError::Syntax(_)));
        assert!(matches!(compile_err("^a{3,2}"), RegexError::Syntax(_)));
        assert!(matches!(compile_err("^a{1001}"), RegexError::Syntax(_)));
        assert!(matches!(compile_err("^[a"), RegexError::Syntax(_)));
        assert!(matches!(compile_err("^[b-a]"), RegexError::Syntax(_)));
        assert!(matches!(compile_err("^\\q"), RegexError::Syntax(_)));
        assert!(matches!(compile_err("^\\1"), RegexError::Syntax(_)));
        assert!(matches!(compile_err("^[[:foo:]]"), RegexError::Syntax(_)));
        assert!(matches!(compile_err("^a**"), RegexError::Syntax(_)));
        assert!(matches!(compile_err("^\\pL"), RegexError::Unsupported(_)));
    }
}
