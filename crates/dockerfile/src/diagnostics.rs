//! Diagnostics: an error or warning about a place in a Dockerfile, and a
//! renderer that shows it the way a compiler would.
//!
//! ```text
//! error: unknown flag: --chmodd
//!   ┌─ Dockerfile:3:6
//!   │
//! 3 │ COPY --chmodd=755 app /app
//!   │      ^^^^^^^^^^^^ not a flag of COPY
//!   │
//!   = hint: valid flags for COPY are --from, --chown, --chmod, --link, --parents, --exclude
//! ```
//!
//! Every stage of the frontend (parser, word expansion, typed instructions,
//! lint) reports through [`Diagnostic`] so that all of them look alike.

use std::fmt;

use codespan_reporting::diagnostic as cs;
use codespan_reporting::files::SimpleFile;
use codespan_reporting::term;
use codespan_reporting::term::termcolor::{Buffer, WriteColor};

/// The terminal colour types [`Diagnostic::emit`] writes to.
pub use codespan_reporting::term::termcolor;

use crate::ast::Span;

/// How bad a [`Diagnostic`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Note,
    Warning,
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Note => "note",
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

/// A message about a place in a Dockerfile: what is wrong (`message`), where
/// (`span`, with an optional `label` printed under the caret), and what to do
/// (`hint`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    /// One sentence saying what is wrong.
    pub message: String,
    /// The culprit; `None` for problems of the whole file.
    pub span: Option<Span>,
    /// A short text shown next to the caret.
    pub label: Option<String>,
    /// How to fix it, when that is obvious.
    pub hint: Option<String>,
    /// A stable identifier for lint rules (`"NoEmptyContinuation"`).
    pub code: Option<String>,
}

impl Diagnostic {
    /// A diagnostic of the given severity.
    pub fn new(severity: Severity, message: impl Into<String>, span: Option<Span>) -> Self {
        Diagnostic {
            severity,
            message: message.into(),
            span,
            label: None,
            hint: None,
            code: None,
        }
    }

    /// An error at `span`.
    pub fn error(message: impl Into<String>, span: Span) -> Self {
        Self::new(Severity::Error, message, Some(span))
    }

    /// A warning at `span`.
    pub fn warning(message: impl Into<String>, span: Span) -> Self {
        Self::new(Severity::Warning, message, Some(span))
    }

    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    /// `file:line:col: severity: message` on one line (for logs and tests).
    pub fn short(&self, file_name: &str) -> String {
        match self.span {
            Some(span) => format!(
                "{file_name}:{}:{}: {}: {}",
                span.start.line, span.start.column, self.severity, self.message
            ),
            None => format!("{file_name}: {}: {}", self.severity, self.message),
        }
    }

    /// Renders the diagnostic with the source line and a caret under the
    /// culprit, without colours.
    pub fn render(&self, file_name: &str, source: &str) -> String {
        let mut buffer = Buffer::no_color();
        self.emit(&mut buffer, file_name, source);
        String::from_utf8_lossy(buffer.as_slice()).into_owned()
    }

    /// Renders the diagnostic into a terminal writer (coloured if the writer
    /// supports it).
    pub fn emit(&self, writer: &mut dyn WriteColor, file_name: &str, source: &str) {
        let file = SimpleFile::new(file_name, source);
        let mut diagnostic = match self.severity {
            Severity::Error => cs::Diagnostic::error(),
            Severity::Warning => cs::Diagnostic::warning(),
            Severity::Note => cs::Diagnostic::note(),
        }
        .with_message(&self.message);
        if let Some(code) = &self.code {
            diagnostic = diagnostic.with_code(code);
        }
        if let Some(span) = self.span {
            let range = clamp_range(span, source);
            let mut label = cs::Label::primary((), range);
            if let Some(text) = &self.label {
                label = label.with_message(text);
            }
            diagnostic = diagnostic.with_labels(vec![label]);
        }
        if let Some(hint) = &self.hint {
            diagnostic = diagnostic.with_notes(vec![format!("hint: {hint}")]);
        }
        let config = term::Config::default();
        if term::emit(writer, &config, &file, &diagnostic).is_err() {
            // The renderer only fails on I/O errors of the writer or on a
            // span outside the file; fall back to the one-line form.
            let _ = writeln!(writer, "{}", self.short(file_name));
        }
    }
}

/// Keeps a span inside the source and on character boundaries so the
/// renderer never fails on a span from another version of the file.
fn clamp_range(span: Span, source: &str) -> std::ops::Range<usize> {
    let mut start = span.start.offset.min(source.len());
    let mut end = span.end.offset.min(source.len()).max(start);
    while !source.is_char_boundary(start) {
        start -= 1;
    }
    while !source.is_char_boundary(end) {
        end += 1;
    }
    start..end
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.span {
            Some(span) => write!(
                f,
                "{}:{}: {}",
                span.start.line, span.start.column, self.message
            )?,
            None => f.write_str(&self.message)?,
        }
        if let Some(hint) = &self.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

/// The known word closest to `word` by edit distance, if it is close enough
/// to be a plausible typo (for "did you mean" hints).
pub fn closest_match<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    // A word this long is no typo of a keyword; skipping it also keeps the
    // quadratic distance computation cheap on hostile input.
    const LONGEST_TYPO: usize = 64;
    let word_len = word.chars().count();
    if word_len > LONGEST_TYPO {
        return None;
    }
    let word = word.to_ascii_lowercase();
    let mut best: Option<(usize, &str)> = None;
    for candidate in candidates {
        let candidate_len = candidate.chars().count();
        let limit = (word_len.max(candidate_len) / 3).max(1);
        // The distance is at least the difference in length.
        if word_len.abs_diff(candidate_len) > limit {
            continue;
        }
        let distance = edit_distance(&word, &candidate.to_ascii_lowercase());
        if distance <= limit && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, candidate)| candidate)
}

/// Edit distance over chars where swapping two neighbours counts as one
/// edit (optimal string alignment), so `FORM` is one typo from `FROM`.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let width = b.len() + 1;
    let mut table = vec![0usize; (a.len() + 1) * width];
    for (i, row) in table.chunks_mut(width).enumerate() {
        if let Some(first) = row.first_mut() {
            *first = i;
        }
    }
    for (j, cell) in table.iter_mut().take(width).enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (table[(i - 1) * width + j] + 1)
                .min(table[i * width + j - 1] + 1)
                .min(table[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(table[(i - 2) * width + j - 2] + 1);
            }
            table[i * width + j] = best;
        }
    }
    table[a.len() * width + b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ast::Position;

    fn span(line: u32, column: u32, offset: usize, len: usize) -> Span {
        Span {
            start: Position {
                line,
                column,
                offset,
            },
            end: Position {
                line,
                column: column + len as u32,
                offset: offset + len,
            },
        }
    }

    #[test]
    fn render_shows_location_source_line_caret_and_hint() {
        let source = "FROM busybox\nCOPY --chmodd=755 a /a\n";
        let diagnostic = Diagnostic::error("unknown flag: --chmodd", span(2, 6, 18, 12))
            .with_label("not a flag of COPY")
            .with_hint("valid flags for COPY are --chmod, --chown");
        let text = diagnostic.render("Dockerfile", source);
        assert!(text.contains("error: unknown flag: --chmodd"), "{text}");
        assert!(text.contains("Dockerfile:2:6"), "{text}");
        assert!(text.contains("COPY --chmodd=755 a /a"), "{text}");
        assert!(text.contains("^^^^^^^^^^^^ not a flag of COPY"), "{text}");
        assert!(text.contains("hint: valid flags for COPY"), "{text}");
    }

    #[test]
    fn render_survives_spans_outside_the_source() {
        let diagnostic = Diagnostic::error("x", span(9, 1, 1000, 5));
        let text = diagnostic.render("Dockerfile", "FROM a\n");
        assert!(text.contains("error: x"), "{text}");
    }

    #[test]
    fn closest_match_finds_typos_only() {
        let names = ["from", "run", "copy", "workdir"];
        assert_eq!(closest_match("FORM", names), Some("from"));
        assert_eq!(closest_match("wrkdir", names), Some("workdir"));
        assert_eq!(closest_match("banana", names), None);
    }
}
