//! Fuzz target: any bytes through the Dockerfile parser, the dump, the
//! name/flag checks, the diagnostic renderer, and BuildKit word expansion of
//! every argument (single word and word list, with the file's escape
//! character). Nothing may panic, and every span must lie inside the input.

#![no_main]

use kiln_dockerfile::ast::{Arguments, Instruction, Span};
use kiln_dockerfile::shell::Lexer;
use libfuzzer_sys::fuzz_target;

fn check_span(source: &str, span: Span) {
    assert!(
        span.start.offset <= span.end.offset,
        "span starts after it ends: {span:?}"
    );
    assert!(
        span.end.offset <= source.len(),
        "span past the end: {span:?}"
    );
    assert!(source.is_char_boundary(span.start.offset) && source.is_char_boundary(span.end.offset));
}

fn expand(lexer: &Lexer, word: &str) {
    let env = [("PWD", "/home"), ("EMPTY", "")];
    let _ = lexer.process_word(word, &env);
    let _ = lexer.process_words(word, &env);
}

fn visit_arguments(source: &str, lexer: &Lexer, args: &Arguments) {
    match args {
        Arguments::None => {}
        Arguments::Shell(text) | Arguments::Unknown(text) => {
            check_span(source, text.span);
            expand(lexer, &text.value);
        }
        Arguments::Exec(items) | Arguments::Words(items) => {
            for item in items {
                check_span(source, item.span);
                expand(lexer, &item.value);
            }
        }
        Arguments::KeyValues(pairs) => {
            for pair in pairs {
                check_span(source, pair.span);
                expand(lexer, &pair.key.value);
                expand(lexer, &pair.value.value);
            }
        }
        Arguments::Healthcheck { kind, command } => {
            check_span(source, kind.span);
            visit_arguments(source, lexer, command);
        }
        Arguments::Onbuild(child) => visit_instruction(source, lexer, child),
    }
}

fn visit_instruction(source: &str, lexer: &Lexer, instruction: &Instruction) {
    check_span(source, instruction.span);
    check_span(source, instruction.name_span);
    for flag in &instruction.flags {
        check_span(source, flag.span);
        if let Some(value) = &flag.value {
            expand(lexer, value);
        }
    }
    for heredoc in &instruction.heredocs {
        check_span(source, heredoc.span);
        assert_eq!(&source[heredoc.content_span.range()], heredoc.content);
        if heredoc.expand {
            expand(lexer, &heredoc.text());
        }
    }
    visit_arguments(source, lexer, &instruction.args);
}

fuzz_target!(|data: &[u8]| {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    match kiln_dockerfile::parse(source) {
        Ok(file) => {
            let dumped = kiln_dockerfile::dump(&file);
            assert_eq!(dumped.lines().count(), file.instructions.len());
            // Rendering indexes the whole source each time: one is enough to
            // exercise it without making long inputs quadratic.
            if let Some(problem) = kiln_dockerfile::validate(&file).first() {
                let _ = problem.render("Dockerfile", source);
            }
            let lexer = Lexer::new(file.escape);
            for instruction in &file.instructions {
                visit_instruction(source, &lexer, instruction);
            }
        }
        Err(error) => {
            check_span(source, error.span);
            let _ = error.to_diagnostic().render("Dockerfile", source);
        }
    }
});
