//! Property tests of the parser: no input makes it panic, and every span it
//! reports lies inside the source, on character boundaries, with line and
//! column numbers that agree with the byte offset.

use kiln_dockerfile::ast::{Arguments, Instruction, Position, Span};
use proptest::prelude::*;

/// Line and column of a byte offset, computed the slow obvious way.
fn expected_position(source: &str, offset: usize) -> (u32, u32) {
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line as u32, (offset - line_start + 1) as u32)
}

fn check_position(source: &str, position: Position, what: &str) -> Result<(), TestCaseError> {
    prop_assert!(
        position.offset <= source.len(),
        "{what}: offset {} past end",
        position.offset
    );
    prop_assert!(
        source.is_char_boundary(position.offset),
        "{what}: offset {} not on a char boundary",
        position.offset
    );
    let (line, column) = expected_position(source, position.offset);
    prop_assert_eq!(
        (position.line, position.column),
        (line, column),
        "{}: offset {}",
        what,
        position.offset
    );
    Ok(())
}

fn check_span(source: &str, span: Span, what: &str) -> Result<(), TestCaseError> {
    prop_assert!(
        span.start.offset <= span.end.offset,
        "{what}: start after end"
    );
    check_position(source, span.start, what)?;
    check_position(source, span.end, what)
}

fn check_arguments(source: &str, args: &Arguments) -> Result<(), TestCaseError> {
    match args {
        Arguments::None => {}
        Arguments::Shell(text) | Arguments::Unknown(text) => {
            check_span(source, text.span, "shell")?
        }
        Arguments::Exec(items) | Arguments::Words(items) => {
            for item in items {
                check_span(source, item.span, "word")?;
            }
        }
        Arguments::KeyValues(pairs) => {
            for pair in pairs {
                check_span(source, pair.span, "pair")?;
                check_span(source, pair.key.span, "key")?;
                check_span(source, pair.value.span, "value")?;
            }
        }
        Arguments::Healthcheck { kind, command } => {
            check_span(source, kind.span, "healthcheck kind")?;
            check_arguments(source, command)?;
        }
        Arguments::Onbuild(child) => check_instruction(source, child)?,
    }
    Ok(())
}

fn check_instruction(source: &str, instruction: &Instruction) -> Result<(), TestCaseError> {
    check_span(source, instruction.span, "instruction")?;
    check_span(source, instruction.name_span, "name")?;
    for flag in &instruction.flags {
        check_span(source, flag.span, "flag")?;
    }
    for heredoc in &instruction.heredocs {
        check_span(source, heredoc.span, "heredoc")?;
        check_span(source, heredoc.marker_span, "heredoc marker")?;
        check_span(source, heredoc.content_span, "heredoc content")?;
        prop_assert_eq!(
            &source[heredoc.content_span.range()],
            heredoc.content.as_str()
        );
    }
    check_arguments(source, &instruction.args)
}

fn check_source(source: &str) -> Result<(), TestCaseError> {
    match kiln_dockerfile::parse(source) {
        Ok(file) => {
            let dumped = kiln_dockerfile::dump(&file);
            prop_assert_eq!(dumped.lines().count(), file.instructions.len());
            for directive in &file.directives {
                check_span(source, directive.span, "directive")?;
                check_span(source, directive.value_span, "directive value")?;
            }
            for warning in &file.warnings {
                check_span(source, warning.span.unwrap_or_default(), "warning")?;
            }
            for instruction in &file.instructions {
                check_instruction(source, instruction)?;
            }
            let _ = kiln_dockerfile::validate(&file);
        }
        Err(error) => {
            check_span(source, error.span, "error")?;
            let rendered = error.to_diagnostic().render("Dockerfile", source);
            prop_assert!(rendered.contains("error"));
        }
    }
    Ok(())
}

/// Pieces Dockerfiles are made of, so random files hit the interesting paths.
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("FROM ".to_owned()),
        Just("RUN ".to_owned()),
        Just("COPY ".to_owned()),
        Just("ENV ".to_owned()),
        Just("LABEL ".to_owned()),
        Just("ARG ".to_owned()),
        Just("ONBUILD ".to_owned()),
        Just("HEALTHCHECK ".to_owned()),
        Just("CMD ".to_owned()),
        Just("# escape=`\n".to_owned()),
        Just("# syntax=x\n".to_owned()),
        Just("<<EOF".to_owned()),
        Just("<<-'EOF'".to_owned()),
        Just("\nEOF\n".to_owned()),
        Just("\tEOF".to_owned()),
        Just("--mount=type=cache ".to_owned()),
        Just("-- ".to_owned()),
        Just("[\"a\", \"b\"]".to_owned()),
        Just("[1]".to_owned()),
        Just("a=b ".to_owned()),
        Just("\\\n".to_owned()),
        Just("`\n".to_owned()),
        Just("\r\n".to_owned()),
        Just("\n".to_owned()),
        Just("\n\n".to_owned()),
        Just("# c\n".to_owned()),
        Just("${A:-b c}".to_owned()),
        Just("\"q".to_owned()),
        Just("'".to_owned()),
        Just("é ".to_owned()),
        Just("\u{a0}".to_owned()),
        Just("\u{feff}".to_owned()),
        "[ -~]{0,12}",
        any::<String>().prop_map(|s| s.chars().take(8).collect()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(source in any::<String>()) {
        check_source(&source)?;
    }

    #[test]
    fn dockerfile_like_text_has_consistent_spans(parts in prop::collection::vec(fragment(), 0..40)) {
        let source: String = parts.concat();
        check_source(&source)?;
    }
}

#[test]
fn empty_continuation_warning_span_is_checked_too() {
    let source = "FROM a\nRUN a \\\n\n b\n";
    let file = kiln_dockerfile::parse(source).expect("parses");
    assert_eq!(file.warnings.len(), 1);
    check_source(source).expect("spans are consistent");
}
