//! Unit tests of the parser: one group per syntax rule of the Dockerfile
//! reference, each checked against what BuildKit's parser gives.

use super::*;
use crate::dump::dump;

fn parsed(source: &str) -> Dockerfile {
    match parse(source) {
        Ok(file) => file,
        Err(error) => panic!("parse failed: {error}\n{source}"),
    }
}

fn dumped(source: &str) -> String {
    dump(&parsed(source))
}

fn error(source: &str) -> ParseError {
    match parse(source) {
        Ok(file) => panic!("accepted: {}", dump(&file)),
        Err(error) => error,
    }
}

/// Line, column and the source text of a span.
fn at(source: &str, span: Span) -> (u32, u32, &str) {
    (span.start.line, span.start.column, &source[span.range()])
}

// ---- parser directives ----

#[test]
fn directives_are_recorded_with_lowercase_names() {
    let source = "# syntax=docker/dockerfile:1\n#ESCAPE = `\n# Check=skip=all\nFROM a\n";
    let file = parsed(source);
    let names: Vec<_> = file
        .directives
        .iter()
        .map(|d| (d.name.as_str(), d.value.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("syntax", "docker/dockerfile:1"),
            ("escape", "`"),
            ("check", "skip=all")
        ]
    );
    assert_eq!(file.escape, '`');
    let syntax = file.directive("syntax").unwrap();
    assert_eq!(
        at(source, syntax.value_span),
        (1, 10, "docker/dockerfile:1")
    );
}

#[test]
fn backtick_escape_changes_line_continuation() {
    let source = "# escape=`\nFROM a\nRUN dir c:\\ `\n  /w\n";
    assert_eq!(dumped(source), "(from \"a\")\n(run \"dir c:\\\\   /w\")\n");
    // With the default escape a trailing backslash continues instead.
    assert_eq!(
        dumped("FROM a\nRUN dir c:\\\n  /w\n"),
        "(from \"a\")\n(run \"dir c:  /w\")\n"
    );
}

#[test]
fn directives_stop_after_any_other_line() {
    // After a comment, an empty line, an instruction, or an unknown
    // directive, `# escape=` is an ordinary comment.
    for prefix in [
        "# comment\n",
        "\n",
        "FROM a\n",
        "# unknown=x\n",
        "#!/bin/shebang\n",
    ] {
        let source = format!("{prefix}# escape=`\nFROM a\nRUN a \\\n b\n");
        let file = parsed(&source);
        assert_eq!(file.escape, '\\', "prefix {prefix:?}");
        assert!(file.directive("escape").is_none(), "prefix {prefix:?}");
        assert!(
            dump(&file).ends_with("(run \"a  b\")\n"),
            "prefix {prefix:?}"
        );
    }
}

#[test]
fn directive_with_leading_whitespace_and_bom_is_recognised() {
    let file = parsed("\u{feff}  # escape=`\nFROM a `\n  b\n");
    assert_eq!(file.escape, '`');
    assert_eq!(dump(&file), "(from \"a\" \"b\")\n");
}

#[test]
fn duplicate_and_invalid_directives_are_errors() {
    let err = error("# escape=`\n# escape=\\\nFROM a\n");
    assert_eq!(
        err.kind,
        ParseErrorKind::DuplicateDirective("escape".into())
    );
    assert_eq!(err.span.start.line, 2);
    let err = error("# syntax=a\n# SYNTAX=b\nFROM a\n");
    assert_eq!(
        err.kind,
        ParseErrorKind::DuplicateDirective("syntax".into())
    );
    let err = error("# escape=x\nFROM a\n");
    assert_eq!(err.kind, ParseErrorKind::InvalidEscapeToken("x".into()));
    assert_eq!((err.span.start.line, err.span.start.column), (1, 10));
}

// ---- comments, empty lines, continuations ----

#[test]
fn comments_and_empty_lines_are_skipped_and_collected() {
    let file = parsed("# first\n\n  # second  \nFROM a\n# third\nRUN b\n");
    assert_eq!(file.instructions.len(), 2);
    assert_eq!(file.instructions[0].comments, ["first", "second"]);
    assert_eq!(file.instructions[1].comments, ["third"]);
}

#[test]
fn continuation_skips_comment_lines_and_warns_on_empty_lines() {
    let source = "FROM a\nRUN echo \\\n# comment\n  # indented comment\n\none\n";
    let file = parsed(source);
    assert_eq!(dump(&file), "(from \"a\")\n(run \"echo one\")\n");
    assert_eq!(file.warnings.len(), 1);
    let warning = &file.warnings[0];
    assert_eq!(warning.severity, Severity::Warning);
    assert!(
        warning
            .message
            .starts_with("Empty continuation line found in: RUN echo one")
    );
    assert_eq!(warning.span.unwrap().start.line, 5);
}

#[test]
fn whitespace_after_the_escape_still_continues() {
    assert_eq!(
        dumped("FROM a\nRUN a \\ \t\n  b\n"),
        "(from \"a\")\n(run \"a   b\")\n"
    );
}

#[test]
fn escaped_escape_at_end_does_not_continue() {
    assert_eq!(
        dumped("FROM a\nENV C x\\\\\nENV D y\n"),
        "(from \"a\")\n(env \"C\" \"x\\\\\\\\\" \"\")\n(env \"D\" \"y\" \"\")\n"
    );
}

#[test]
fn continuation_at_end_of_file() {
    assert_eq!(dumped("FROM a\nRUN x \\"), "(from \"a\")\n(run \"x\")\n");
    assert_eq!(dumped("FROM a\nRUN x \\\n"), "(from \"a\")\n(run \"x\")\n");
}

#[test]
fn crlf_line_endings() {
    let source = "FROM a\r\nRUN a \\\r\n  b\r\nCMD [\"x\"]\r\n";
    assert_eq!(
        dumped(source),
        "(from \"a\")\n(run \"a   b\")\n(cmd \"x\")\n"
    );
}

#[test]
fn leading_whitespace_and_case_insensitive_names() {
    let file = parsed("  \tfrom a\n\tRuN b\n");
    assert_eq!(dump(&file), "(from \"a\")\n(run \"b\")\n");
    assert_eq!(file.instructions[1].keyword, Some(Keyword::Run));
    assert_eq!(file.instructions[1].name_span.start.column, 2);
}

// ---- flags ----

#[test]
fn flags_with_values_booleans_repeats_and_double_dash() {
    let source = "FROM a\nRUN --mount=type=cache,target=/c --mount=type=tmpfs,target=/t --network=none echo\nCOPY --link -- --weird /dst\n";
    let file = parsed(source);
    let run = &file.instructions[1];
    let mounts: Vec<_> = run
        .flags_named("mount")
        .map(|f| f.value.as_deref().unwrap())
        .collect();
    assert_eq!(mounts, ["type=cache,target=/c", "type=tmpfs,target=/t"]);
    assert_eq!(run.flags[2].raw, "--network=none");
    assert_eq!(
        at(source, run.flags[1].span),
        (2, 34, "--mount=type=tmpfs,target=/t")
    );
    let copy = &file.instructions[2];
    assert_eq!(copy.flags.len(), 1);
    assert_eq!(
        (copy.flags[0].name.as_str(), copy.flags[0].value.as_deref()),
        ("link", None)
    );
    assert_eq!(
        dump(&file).lines().nth(2),
        Some("(copy [\"--link\"] \"--weird\" \"/dst\")")
    );
}

#[test]
fn flag_quotes_are_removed() {
    let file = parsed("FROM a\nCOPY --chown=\"a b\" x y\n");
    assert_eq!(file.instructions[1].flags[0].value.as_deref(), Some("a b"));
}

// ---- shell and exec form ----

#[test]
fn exec_form_and_fallback_to_shell_form() {
    let source =
        "FROM a\nCMD [\"a\", \"b c\"]\nCMD [\"a\", 'b']\nCMD [\"unterminated\"\nENTRYPOINT []\n";
    let file = parsed(source);
    assert!(file.instructions[1].is_exec_form());
    assert!(!file.instructions[2].is_exec_form());
    assert_eq!(
        dump(&file),
        "(from \"a\")\n(cmd \"a\" \"b c\")\n(cmd \"[\\\"a\\\", 'b']\")\n(cmd \"[\\\"unterminated\\\"\")\n(entrypoint)\n"
    );
    let Arguments::Exec(items) = &file.instructions[1].args else {
        panic!("not exec")
    };
    assert_eq!(at(source, items[1].span), (2, 11, "\"b c\""));
}

#[test]
fn text_after_the_json_array_is_ignored_like_docker_does() {
    // Checked against docker 20.10 with BuildKit: Config.Cmd is ["echo","hi"];
    // BuildKit reads the array with a json.Decoder, which stops after it.
    assert_eq!(
        dumped("CMD [\"echo\", \"hi\"] trailing\nENTRYPOINT [\"a\"]]\n"),
        "(cmd \"echo\" \"hi\")\n(entrypoint \"a\")\n"
    );
}

#[test]
fn json_with_non_strings_is_an_error() {
    let source = "FROM a\nCMD [\"echo\", 1]\n";
    let err = error(source);
    assert_eq!(err.kind, ParseErrorKind::NotStringArray);
    assert_eq!(at(source, err.span), (2, 14, "1"));
    assert_eq!(
        error("CMD [ \"echo\", [ \"nested json\" ] ]").kind,
        ParseErrorKind::NotStringArray
    );
}

#[test]
fn shell_and_volume_and_copy_forms() {
    assert_eq!(
        dumped("SHELL [\"bash\", \"-c\"]\nVOLUME /a /b\nVOLUME [\"/c\"]\nCOPY [\"a b\", \"/c\"]\n"),
        "(shell \"bash\" \"-c\")\n(volume \"/a\" \"/b\")\n(volume \"/c\")\n(copy \"a b\" \"/c\")\n"
    );
}

// ---- instructions ----

#[test]
fn from_with_platform_and_alias() {
    let source = "FROM --platform=$BUILDPLATFORM golang:1.22 AS build\n";
    let file = parsed(source);
    assert_eq!(
        dump(&file),
        "(from [\"--platform=$BUILDPLATFORM\"] \"golang:1.22\" \"AS\" \"build\")\n"
    );
    let Arguments::Words(words) = &file.instructions[0].args else {
        panic!()
    };
    assert_eq!(at(source, words[2].span), (1, 47, "build"));
}

#[test]
fn env_and_label_forms() {
    let source = "ENV A=1 B=\"two words\" C=\nENV D the rest of the line\nLABEL \"com.x\"=\"y\" version=1.0\n";
    let file = parsed(source);
    assert_eq!(
        dump(&file),
        concat!(
            "(env \"A\" \"1\" \"=\" \"B\" \"\\\"two words\\\"\" \"=\" \"C\" \"\" \"=\")\n",
            "(env \"D\" \"the rest of the line\" \"\")\n",
            "(label \"\\\"com.x\\\"\" \"\\\"y\\\"\" \"=\" \"version\" \"1.0\" \"=\")\n",
        )
    );
    let Arguments::KeyValues(pairs) = &file.instructions[0].args else {
        panic!()
    };
    assert_eq!(pairs[1].form, KeyValueForm::Equals);
    assert_eq!(at(source, pairs[1].value.span), (1, 11, "\"two words\""));
    let Arguments::KeyValues(pairs) = &file.instructions[1].args else {
        panic!()
    };
    assert_eq!(pairs[0].form, KeyValueForm::Legacy);
}

#[test]
fn env_errors() {
    let err = error("FROM a\nENV PATH\n");
    assert_eq!(err.kind, ParseErrorKind::MissingValue("ENV".into()));
    assert_eq!(err.span.start.line, 2);
    let err = error("FROM a\nLABEL a=b c\n");
    assert_eq!(err.kind, ParseErrorKind::MissingEquals("c".into()));
    assert_eq!((err.span.start.line, err.span.start.column), (2, 11));
}

#[test]
fn arg_words_keep_quotes() {
    assert_eq!(
        dumped("ARG A B=2 C=\"x y\"\n"),
        "(arg \"A\" \"B=2\" \"C=\\\"x y\\\"\")\n"
    );
}

#[test]
fn healthcheck_forms() {
    assert_eq!(
        dumped(
            "HEALTHCHECK NONE\nHEALTHCHECK --interval=5s CMD curl -f x\nHEALTHCHECK CMD [\"a\"]\n"
        ),
        "(healthcheck \"NONE\")\n(healthcheck [\"--interval=5s\"] \"CMD\" \"curl -f x\")\n(healthcheck \"CMD\" \"a\")\n"
    );
}

#[test]
fn onbuild_nests_an_instruction_with_its_own_flags() {
    let source = "ONBUILD COPY --from=x a b\n";
    let file = parsed(source);
    assert_eq!(dump(&file), "(onbuild (copy [\"--from=x\"] \"a\" \"b\"))\n");
    let Arguments::Onbuild(child) = &file.instructions[0].args else {
        panic!()
    };
    assert_eq!(child.keyword, Some(Keyword::Copy));
    assert_eq!(at(source, child.name_span), (1, 9, "COPY"));
    assert_eq!(at(source, child.flags[0].span), (1, 14, "--from=x"));
}

#[test]
fn remaining_instructions() {
    assert_eq!(
        dumped(
            "MAINTAINER Jo <jo@x>\nEXPOSE 80/tcp 443\nUSER a:b\nWORKDIR /a b\nSTOPSIGNAL SIGKILL\nUNKNOWN x y\n"
        ),
        "(maintainer \"Jo <jo@x>\")\n(expose \"80/tcp\" \"443\")\n(user \"a:b\")\n(workdir \"/a b\")\n(stopsignal \"SIGKILL\")\n(unknown \"\")\n"
    );
}

// ---- heredocs ----

#[test]
fn run_heredoc_content_and_spans() {
    let source = "FROM a\nRUN <<EOF\necho hi\necho there\nEOF\nRUN b\n";
    let file = parsed(source);
    assert_eq!(dump(&file), "(from \"a\")\n(run \"<<EOF\")\n(run \"b\")\n");
    let run = &file.instructions[1];
    let doc = &run.heredocs[0];
    assert_eq!(doc.name, "EOF");
    assert!(doc.expand && !doc.chomp);
    assert_eq!(doc.content, "echo hi\necho there\n");
    assert_eq!(at(source, doc.marker_span), (2, 5, "<<EOF"));
    assert_eq!(
        at(source, doc.content_span),
        (3, 1, "echo hi\necho there\n")
    );
    assert_eq!((doc.span.end.line, doc.span.end.column), (5, 4));
    assert_eq!((run.span.start.line, run.span.end.line), (2, 5));
}

#[test]
fn chomped_quoted_and_several_heredocs() {
    let source = "FROM a\nCOPY <<-\"A\" <<'B' /dst/\n\tone\n\tA\ntwo $X\nB\n";
    let file = parsed(source);
    let docs = &file.instructions[1].heredocs;
    assert_eq!(docs.len(), 2);
    assert_eq!(
        (docs[0].name.as_str(), docs[0].chomp, docs[0].expand),
        ("A", true, false)
    );
    assert_eq!(docs[0].content, "\tone\n");
    assert_eq!(docs[0].text(), "one\n");
    assert_eq!(
        (docs[1].name.as_str(), docs[1].chomp, docs[1].expand),
        ("B", false, false)
    );
    assert_eq!(docs[1].content, "two $X\n");
}

#[test]
fn heredoc_content_is_not_parsed_as_instructions() {
    let source = "FROM a\nRUN cat <<EOF > /x\nFROM b\n# not a comment\n\nEOF\n";
    let file = parsed(source);
    assert_eq!(file.instructions.len(), 2);
    assert_eq!(
        file.instructions[1].heredocs[0].content,
        "FROM b\n# not a comment\n\n"
    );
}

#[test]
fn heredoc_with_fd_and_empty_content_and_crlf() {
    let file = parsed("FROM a\r\nRUN 3<<EOF cat\r\nEOF\r\n");
    let doc = &file.instructions[1].heredocs[0];
    assert_eq!((doc.file_descriptor, doc.content.as_str()), (3, ""));
}

#[test]
fn no_heredocs_in_json_form_or_other_instructions() {
    let file = parsed("FROM a\nRUN [\"cat\", \"<<EOF\"]\nCMD cat <<EOF\n");
    assert!(file.instructions.iter().all(|i| i.heredocs.is_empty()));
}

#[test]
fn onbuild_run_heredoc() {
    let file = parsed("FROM a\nONBUILD RUN <<EOF\nx\nEOF\n");
    assert_eq!(file.instructions[1].heredocs[0].content, "x\n");
}

#[test]
fn unterminated_heredoc_is_an_error() {
    let source = "FROM a\nRUN <<EOF\necho\n";
    let err = error(source);
    assert_eq!(err.kind, ParseErrorKind::UnterminatedHeredoc("EOF".into()));
    assert_eq!(at(source, err.span), (2, 5, "<<EOF"));
}

// ---- spans ----

#[test]
fn spans_follow_continuation_lines() {
    let source = "FROM a\nRUN echo one \\\n    # comment\n    two \\\n    three\n";
    let file = parsed(source);
    let run = &file.instructions[1];
    assert_eq!((run.span.start.line, run.span.start.column), (2, 1));
    assert_eq!((run.span.end.line, run.span.end.column), (5, 10));
    let Arguments::Shell(text) = &run.args else {
        panic!()
    };
    assert_eq!(text.value, "echo one     two     three");
    assert_eq!((text.span.start.line, text.span.start.column), (2, 5));
    assert_eq!((text.span.end.line, text.span.end.column), (5, 10));
    assert_eq!(run.original, "RUN echo one     two     three");
}

#[test]
fn word_spans_in_a_continued_env() {
    let source = "ENV A=1 \\\n    B=2\n";
    let file = parsed(source);
    let Arguments::KeyValues(pairs) = &file.instructions[0].args else {
        panic!()
    };
    assert_eq!(at(source, pairs[1].span), (2, 5, "B=2"));
    assert_eq!(at(source, pairs[1].value.span), (2, 7, "2"));
}

// ---- errors ----

#[test]
fn files_without_instructions_are_rejected() {
    for source in ["", "\n\n", "# only\n# comments\n", "# syntax=x\n"] {
        assert_eq!(
            error(source).kind,
            ParseErrorKind::NoInstructions,
            "{source:?}"
        );
    }
}

#[test]
fn parse_errors_render_with_location_caret_and_hint() {
    let source = "FROM a\nRUN ok\nENV PATH\n";
    let rendered = error(source).to_diagnostic().render("Dockerfile", source);
    assert!(
        rendered.contains("error: ENV must have two arguments"),
        "{rendered}"
    );
    assert!(rendered.contains("Dockerfile:3:5"), "{rendered}");
    assert!(rendered.contains("3 │ ENV PATH"), "{rendered}");
    assert!(rendered.contains("^^^^"), "{rendered}");
    assert!(
        rendered.contains("hint: write `ENV key=value`"),
        "{rendered}"
    );
}

#[test]
fn physical_lines_over_64_kib_are_rejected_like_buildkit() {
    // 65535 bytes plus the newline still fit Go's scanner buffer.
    let fits = format!("FROM a\nLABEL a={}\n", "x".repeat(65535 - "LABEL a=".len()));
    assert_eq!(parsed(&fits).instructions.len(), 2);
    let too_long = format!("FROM a\nLABEL a={}\nRUN b\n", "x".repeat(65536));
    let err = error(&too_long);
    assert_eq!(err.kind, ParseErrorKind::LineTooLong);
    assert_eq!(err.span.start.line, 2);
    assert_eq!(
        err.to_string(),
        "line 2: dockerfile line greater than max allowed size of 65535"
    );
    // Without instructions before it, the file has none.
    let err = error(&format!("# {}\n", "x".repeat(70000)));
    assert_eq!(err.kind, ParseErrorKind::NoInstructions);
}
