//! Checks of the syntax tree that BuildKit makes right after parsing, before
//! anything is built: every instruction name is a known instruction and
//! every flag is one that instruction accepts. Each problem comes back as a
//! [`Diagnostic`] with a hint (the nearest instruction name, the list of
//! valid flags).

use crate::ast::{Arguments, Dockerfile, Instruction, Keyword};
use crate::diagnostics::{Diagnostic, closest_match};

/// All unknown-instruction and unknown-flag errors, in source order.
pub fn validate(dockerfile: &Dockerfile) -> Vec<Diagnostic> {
    let mut problems = Vec::new();
    for instruction in &dockerfile.instructions {
        check_instruction(instruction, &mut problems);
    }
    problems
}

fn check_instruction(instruction: &Instruction, problems: &mut Vec<Diagnostic>) {
    let Some(keyword) = instruction.keyword else {
        let written = instruction.name.to_uppercase();
        let mut diagnostic = Diagnostic::error(
            format!("unknown instruction: {written}"),
            instruction.name_span,
        )
        .with_label("not a Dockerfile instruction");
        if let Some(near) =
            closest_match(&instruction.name, Keyword::ALL.iter().map(|k| k.as_str()))
        {
            diagnostic = diagnostic.with_hint(format!("did you mean {}?", near.to_uppercase()));
        }
        problems.push(diagnostic);
        return;
    };
    let valid = keyword.valid_flags();
    for flag in &instruction.flags {
        if valid.contains(&flag.name.as_str()) {
            continue;
        }
        let upper = keyword.to_string();
        let mut diagnostic = Diagnostic::error(format!("unknown flag: --{}", flag.name), flag.span)
            .with_label(format!("not a flag of {upper}"));
        diagnostic = if valid.is_empty() {
            diagnostic.with_hint(format!("{upper} takes no flags"))
        } else {
            let list: Vec<String> = valid.iter().map(|f| format!("--{f}")).collect();
            let near = closest_match(&flag.name, valid.iter().copied())
                .map(|n| format!("did you mean --{n}? "))
                .unwrap_or_default();
            diagnostic.with_hint(format!(
                "{near}valid flags for {upper} are {}",
                list.join(", ")
            ))
        };
        problems.push(diagnostic);
    }
    if let Arguments::Onbuild(child) = &instruction.args {
        check_instruction(child, problems);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_instruction_gets_nearest_name() {
        let file = crate::parse("FORM busybox\nRUN true\n").unwrap();
        let problems = validate(&file);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].message, "unknown instruction: FORM");
        assert_eq!(problems[0].hint.as_deref(), Some("did you mean FROM?"));
        let span = problems[0].span.unwrap();
        assert_eq!(
            (span.start.line, span.start.column, span.end.column),
            (1, 1, 5)
        );
    }

    #[test]
    fn unknown_flag_lists_valid_ones() {
        let file =
            crate::parse("FROM a\nCOPY --chmodd=755 a /a\nRUN --mount=type=cache,target=/x true\n")
                .unwrap();
        let problems = validate(&file);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].message, "unknown flag: --chmodd");
        let hint = problems[0].hint.as_deref().unwrap();
        assert!(hint.starts_with("did you mean --chmod?"), "{hint}");
        assert!(
            hint.contains("--from, --chown, --chmod, --link, --parents, --exclude"),
            "{hint}"
        );
        let span = problems[0].span.unwrap();
        assert_eq!(
            (span.start.line, span.start.column, span.end.column),
            (2, 6, 18)
        );
    }

    #[test]
    fn flags_of_instructions_without_flags_are_rejected() {
        let file = crate::parse("FROM a\nWORKDIR --x=1 /a\nONBUILD COPY --nope a b\n").unwrap();
        let messages: Vec<_> = validate(&file).into_iter().map(|d| d.message).collect();
        assert_eq!(messages, ["unknown flag: --x", "unknown flag: --nope"]);
    }
}
