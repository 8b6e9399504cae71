//! Lint: BuildKit's Dockerfile checks (`frontend/dockerfile/linter`) that
//! need only the Dockerfile, as warnings with BuildKit's rule names as
//! [`Diagnostic::code`] — the start of `kiln check`.
//!
//! Rules: `StageNameCasing`, `FromAsCasing`, `ConsistentInstructionCasing`,
//! `JSONArgsRecommended`, `LegacyKeyValueFormat`,
//! `MultipleInstructionsDisallowed`, `WorkdirRelativePath`,
//! `UndefinedArgInFrom`, `SecretsUsedInArgOrEnv`, `RedundantTargetPlatform`,
//! `FromPlatformFlagConstDisallowed`. `MaintainerDeprecated` and
//! meta-ARG scoping come with [`Stages::warnings`]; `NoEmptyContinuation`
//! with the parser's warnings; duplicate and reserved stage names are errors
//! in [`Stages::from_dockerfile`].

// `Diagnostic` is the frontend's single error type: large, but errors are rare.
#![allow(clippy::result_large_err)]

use std::collections::HashSet;

use crate::ast::{self, Arguments, KeyValueForm, Keyword};
use crate::diagnostics::{Diagnostic, closest_match};
use crate::instructions::Command;
use crate::shell::EmptyEnv;
use crate::stages::{Stages, default_platform_args};

fn warning(code: &str, message: String, span: ast::Span, hint: &str) -> Diagnostic {
    Diagnostic::warning(message, span)
        .with_code(code)
        .with_hint(hint)
}

/// The keyword as written in the source (`run`, `RUN`, `Run`).
fn written_keyword(instruction: &ast::Instruction) -> &str {
    let original = instruction.original.trim_start();
    original
        .get(..instruction.name.len())
        .unwrap_or(&instruction.name)
}

fn is_lower(text: &str) -> bool {
    !text.chars().any(char::is_uppercase)
}

fn is_upper(text: &str) -> bool {
    !text.chars().any(char::is_lowercase)
}

/// Names that look like they hold secrets (BuildKit's heuristic: a token of
/// the name, split on `_`, is a secret word; a few are allowed).
fn looks_secret(name: &str) -> bool {
    const SECRET: [&str; 7] = [
        "apikey",
        "auth",
        "credential",
        "credentials",
        "key",
        "password",
        "pword",
    ];
    const ALSO: [&str; 3] = ["passwd", "secret", "token"];
    const ALLOWED: [&str; 1] = ["public"];
    let lower = name.to_ascii_lowercase();
    let tokens: Vec<&str> = lower.split(['_', '-']).collect();
    if tokens.iter().any(|t| ALLOWED.contains(t)) {
        return false;
    }
    tokens
        .iter()
        .any(|t| SECRET.contains(t) || ALSO.contains(t))
}

/// Every lint warning for a parsed Dockerfile and its typed stages.
pub fn lint(dockerfile: &ast::Dockerfile, stages: &Stages) -> Vec<Diagnostic> {
    let mut warnings = Vec::new();
    casing(dockerfile, &mut warnings);
    for instruction in &dockerfile.instructions {
        match (instruction.keyword, &instruction.args) {
            (
                Some(k @ (Keyword::Cmd | Keyword::Entrypoint)),
                Arguments::Shell(_) | Arguments::Words(_),
            ) => {
                warnings.push(warning(
                    "JSONArgsRecommended",
                    format!("JSON arguments recommended for {k} to prevent unintended behavior related to OS signals"),
                    instruction.span,
                    "write the command as a JSON array, e.g. CMD [\"executable\", \"arg\"]",
                ));
            }
            (Some(k @ (Keyword::Env | Keyword::Label)), Arguments::KeyValues(pairs)) => {
                for pair in pairs.iter().filter(|p| p.form == KeyValueForm::Legacy) {
                    warnings.push(warning(
                        "LegacyKeyValueFormat",
                        format!("\"{k} key=value\" should be used instead of legacy \"{k} key value\" format"),
                        pair.span,
                        "write KEY=VALUE (quote the value if it has spaces)",
                    ));
                }
            }
            _ => {}
        }
    }
    let meta_names: HashSet<&str> = stages
        .meta_args
        .iter()
        .map(|a| a.name.value.as_str())
        .collect();
    let automatic: Vec<String> = default_platform_args()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let lexer = stages.lexer();
    for stage in &stages.stages {
        // FROM may only use meta ARGs and the automatic platform ARGs.
        for word in std::iter::once(&stage.from.image).chain(stage.from.platform.as_ref()) {
            let Ok(expansion) = lexer.expand_with(&word.value, &EmptyEnv, false) else {
                continue;
            };
            for name in &expansion.unmatched {
                if !meta_names.contains(name.as_str())
                    && !automatic.contains(name)
                    && name != "TARGETSTAGE"
                {
                    let mut message = format!("FROM argument '{name}' is not declared");
                    if let Some(close) = closest_match(name, meta_names.iter().copied()) {
                        message.push_str(&format!(" (did you mean {close}?)"));
                    }
                    warnings.push(warning(
                        "UndefinedArgInFrom",
                        message,
                        word.span,
                        "declare it with ARG before the first FROM",
                    ));
                }
            }
        }
        if let Some(platform) = &stage.from.platform {
            let value = platform.value.as_str();
            if value == "$TARGETPLATFORM" || value == "${TARGETPLATFORM}" {
                warnings.push(warning(
                    "RedundantTargetPlatform",
                    format!("Setting platform to predefined {value} in FROM is redundant as this is the default behavior"),
                    platform.span,
                    "remove --platform",
                ));
            } else if !value.contains('$') {
                warnings.push(warning(
                    "FromPlatformFlagConstDisallowed",
                    format!("FROM --platform flag should not use constant value {value:?}"),
                    platform.span,
                    "use --platform=$BUILDPLATFORM for build stages, or pass --platform to the build",
                ));
            }
        }
        if let Some(name) = stage
            .from
            .name
            .as_ref()
            .filter(|n| !is_lower(&n.written.value))
        {
            warnings.push(warning(
                "StageNameCasing",
                format!("Stage name '{}' should be lowercase", name.written.value),
                name.written.span,
                "stage names are case-insensitive; write them in lowercase",
            ));
        }
        let mut seen: Vec<Keyword> = Vec::new();
        for command in &stage.commands {
            let keyword = command.keyword();
            if matches!(
                keyword,
                Keyword::Cmd | Keyword::Entrypoint | Keyword::Healthcheck
            ) {
                if seen.contains(&keyword) {
                    warnings.push(warning(
                        "MultipleInstructionsDisallowed",
                        format!(
                            "Multiple {keyword} instructions should not be used in the same stage because only the last one will be used"
                        ),
                        command.span(),
                        "keep only the last one",
                    ));
                }
                seen.push(keyword);
            }
            match command {
                Command::Workdir { path, .. } => {
                    let value = path.value.as_str();
                    if !value.starts_with('/')
                        && !value.starts_with('$')
                        && !seen.contains(&Keyword::Workdir)
                    {
                        warnings.push(warning(
                            "WorkdirRelativePath",
                            format!("Relative workdir {value:?} can have unexpected results if the base image changes"),
                            path.span,
                            "use an absolute path, or set an absolute WORKDIR first",
                        ));
                    }
                    seen.push(Keyword::Workdir);
                }
                Command::Arg { args, .. } => {
                    for arg in args.iter().filter(|a| looks_secret(&a.name.value)) {
                        warnings.push(secret_warning("ARG", &arg.name));
                    }
                }
                Command::Env { pairs, .. } => {
                    for pair in pairs.iter().filter(|p| looks_secret(&p.key.value)) {
                        warnings.push(secret_warning("ENV", &pair.key));
                    }
                }
                _ => {}
            }
        }
    }
    warnings
}

fn secret_warning(keyword: &str, name: &ast::Text) -> Diagnostic {
    warning(
        "SecretsUsedInArgOrEnv",
        format!(
            "Do not use ARG or ENV instructions for sensitive data ({keyword} {:?})",
            name.value
        ),
        name.span,
        "pass secrets with RUN --mount=type=secret; ARG and ENV values end up in the image",
    )
}

/// `FromAsCasing` and `ConsistentInstructionCasing`.
fn casing(dockerfile: &ast::Dockerfile, warnings: &mut Vec<Diagnostic>) {
    let written: Vec<&str> = dockerfile
        .instructions
        .iter()
        .map(written_keyword)
        .collect();
    let lower = written.iter().filter(|w| is_lower(w)).count();
    let majority_lower = lower * 2 > written.len();
    for (instruction, keyword) in dockerfile.instructions.iter().zip(&written) {
        let consistent = if majority_lower {
            is_lower(keyword)
        } else {
            is_upper(keyword)
        };
        if !consistent {
            warnings.push(warning(
                "ConsistentInstructionCasing",
                format!(
                    "Command '{keyword}' should match the case of the command majority ({})",
                    if majority_lower {
                        "lowercase"
                    } else {
                        "uppercase"
                    }
                ),
                instruction.name_span,
                "write every instruction in the same case",
            ));
        }
        let as_word = match (&instruction.keyword, &instruction.args) {
            (Some(Keyword::From), Arguments::Words(words)) if words.len() == 3 => words.get(1),
            _ => None,
        };
        if let Some(as_word) = as_word {
            let from_upper = is_upper(keyword);
            let as_upper = is_upper(&as_word.value);
            if from_upper != as_upper && (is_lower(keyword) || from_upper) {
                warnings.push(warning(
                    "FromAsCasing",
                    format!(
                        "'{}' and '{}' keywords' casing do not match",
                        as_word.value, keyword
                    ),
                    as_word.span,
                    "write FROM ... AS ... or from ... as ...",
                ));
            }
        }
    }
}

/// How checks are configured: the `# check=` directive, or the
/// `BUILDKIT_DOCKERFILE_CHECK` build argument in its place
/// (`skip=A,B|all;error=true`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CheckConfig {
    /// Rules not reported; `None`: none skipped.
    skip: Option<Skip>,
    /// Violations fail the build (`error=true`).
    pub error: bool,
}

impl CheckConfig {
    /// The configuration `dockerfile` asks for, unless `build_arg` (the
    /// value of `BUILDKIT_DOCKERFILE_CHECK`) replaces it.
    pub fn of(dockerfile: &ast::Dockerfile, build_arg: Option<&str>) -> CheckConfig {
        let text = build_arg.or_else(|| dockerfile.directive("check").map(|d| d.value.as_str()));
        let mut config = CheckConfig {
            skip: Some(skipped_rules(text)),
            error: false,
        };
        for part in text.unwrap_or_default().split(';') {
            if let Some((key, value)) = part.split_once('=')
                && key.trim() == "error"
            {
                config.error = value.trim().eq_ignore_ascii_case("true");
            }
        }
        config
    }

    fn reports(&self, rule: Option<&str>) -> bool {
        match (&self.skip, rule) {
            (Some(Skip::All), _) => false,
            (Some(Skip::Rules(rules)), Some(code)) => !rules.iter().any(|r| r == code),
            _ => true,
        }
    }
}

/// Every build check BuildKit runs on `dockerfile` (the parser's warnings,
/// the stage graph's and [`lint`]'s), minus the rules `config` skips, in
/// source order: what `docker build --check` reports.
pub fn build_checks(
    dockerfile: &ast::Dockerfile,
    stages: &Stages,
    config: &CheckConfig,
) -> Vec<Diagnostic> {
    let mut found: Vec<Diagnostic> = dockerfile
        .warnings
        .iter()
        .chain(&stages.warnings)
        .cloned()
        .chain(lint(dockerfile, stages))
        .filter(|d| config.reports(d.code.as_deref()))
        .collect();
    found.sort_by_key(|d| d.span.map(|s| (s.start.line, s.start.column)));
    found
}

/// The documentation page of a rule (`JSONArgsRecommended` ->
/// `https://docs.docker.com/go/dockerfile/rule/json-args-recommended/`).
pub fn rule_url(rule: &str) -> String {
    format!(
        "https://docs.docker.com/go/dockerfile/rule/{}/",
        kebab_case(rule)
    )
}

/// What a `# check=` directive skips.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Skip {
    All,
    Rules(Vec<String>),
}

/// `skip=A,B;error=true` -> the rules A and B; `skip=all` -> all.
fn skipped_rules(directive: Option<&str>) -> Skip {
    let mut rules = Vec::new();
    for part in directive.unwrap_or_default().split(';') {
        let Some((key, value)) = part.split_once('=') else {
            continue;
        };
        if key.trim() != "skip" {
            continue;
        }
        for rule in value.split(',').map(str::trim).filter(|r| !r.is_empty()) {
            if rule.eq_ignore_ascii_case("all") {
                return Skip::All;
            }
            rules.push(rule.to_string());
        }
    }
    Skip::Rules(rules)
}

/// `JSONArgsRecommended` -> `json-args-recommended` (the rule's page name).
fn kebab_case(rule: &str) -> String {
    let chars: Vec<char> = rule.chars().collect();
    let mut out = String::new();
    for (i, &c) in chars.iter().enumerate() {
        let previous = i.checked_sub(1).and_then(|p| chars.get(p));
        let next = chars.get(i + 1);
        let starts_word = c.is_uppercase()
            && previous.is_some_and(|p| {
                p.is_lowercase() || (p.is_uppercase() && next.is_some_and(|n| n.is_lowercase()))
            });
        if starts_word {
            out.push('-');
        }
        out.extend(c.to_lowercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(source: &str) -> Vec<(String, String, u32)> {
        let dockerfile = crate::parse(source).expect("parse");
        let stages = Stages::from_dockerfile(&dockerfile).expect("stages");
        lint(&dockerfile, &stages)
            .into_iter()
            .map(|d| {
                (
                    d.code.unwrap_or_default(),
                    d.message,
                    d.span.map_or(0, |s| s.start.line),
                )
            })
            .collect()
    }

    #[test]
    fn clean_dockerfile_has_no_warnings() {
        let source = "ARG V=1\nFROM --platform=$BUILDPLATFORM busybox:$V AS build\nWORKDIR /app\nENV A=1\nCMD [\"sh\"]\n";
        assert_eq!(codes(source), []);
    }

    #[test]
    fn each_rule_fires_with_buildkit_message() {
        let found = codes(concat!(
            "FROM --platform=linux/amd64 busybox:$NOPE as Build\n",
            "run true\n",
            "WORKDIR app\n",
            "ENV LEGACY value\n",
            "ARG DB_PASSWORD\n",
            "CMD echo one\n",
            "CMD [\"two\"]\n",
        ));
        let expect = [
            (
                "ConsistentInstructionCasing",
                "Command 'run' should match the case of the command majority (uppercase)",
                2,
            ),
            (
                "FromAsCasing",
                "'as' and 'FROM' keywords' casing do not match",
                1,
            ),
            (
                "JSONArgsRecommended",
                "JSON arguments recommended for CMD to prevent unintended behavior related to OS signals",
                6,
            ),
            (
                "LegacyKeyValueFormat",
                "\"ENV key=value\" should be used instead of legacy \"ENV key value\" format",
                4,
            ),
            (
                "UndefinedArgInFrom",
                "FROM argument 'NOPE' is not declared",
                1,
            ),
            (
                "StageNameCasing",
                "Stage name 'Build' should be lowercase",
                1,
            ),
            (
                "WorkdirRelativePath",
                "Relative workdir \"app\" can have unexpected results if the base image changes",
                3,
            ),
            (
                "SecretsUsedInArgOrEnv",
                "Do not use ARG or ENV instructions for sensitive data (ARG \"DB_PASSWORD\")",
                5,
            ),
            (
                "FromPlatformFlagConstDisallowed",
                "FROM --platform flag should not use constant value \"linux/amd64\"",
                1,
            ),
            (
                "MultipleInstructionsDisallowed",
                "Multiple CMD instructions should not be used in the same stage because only the last one will be used",
                7,
            ),
        ];
        for (code, message, line) in expect {
            assert!(
                found
                    .iter()
                    .any(|(c, m, l)| c == code && m == message && *l == line),
                "missing {code} at line {line}: {found:#?}"
            );
        }
        assert_eq!(found.len(), expect.len(), "{found:#?}");
    }

    #[test]
    fn from_argument_suggestions_and_redundant_platform() {
        let found = codes("ARG VERSION=1\nFROM --platform=$TARGETPLATFORM busybox:$VERSOIN\n");
        let messages: Vec<&str> = found.iter().map(|(_, m, _)| m.as_str()).collect();
        assert!(
            messages.contains(&"FROM argument 'VERSOIN' is not declared (did you mean VERSION?)"),
            "{found:#?}"
        );
        assert!(
            messages.contains(&"Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior"),
            "{found:#?}"
        );
    }

    #[test]
    fn secret_heuristic() {
        assert!(looks_secret("AWS_SECRET_ACCESS_KEY"));
        assert!(looks_secret("github_token"));
        assert!(!looks_secret("PUBLIC_KEY"));
        assert!(!looks_secret("KEYBOARD_LAYOUT"));
        assert!(!looks_secret("VERSION"));
    }

    #[test]
    fn rule_pages_are_kebab_case() {
        assert_eq!(kebab_case("JSONArgsRecommended"), "json-args-recommended");
        assert_eq!(kebab_case("FromAsCasing"), "from-as-casing");
        assert_eq!(kebab_case("UndefinedArgInFrom"), "undefined-arg-in-from");
        assert_eq!(
            kebab_case("SecretsUsedInArgOrEnv"),
            "secrets-used-in-arg-or-env"
        );
    }

    #[test]
    fn check_directive_skips() {
        assert_eq!(skipped_rules(None), Skip::Rules(vec![]));
        assert_eq!(
            skipped_rules(Some("skip=JSONArgsRecommended,StageNameCasing;error=true")),
            Skip::Rules(vec!["JSONArgsRecommended".into(), "StageNameCasing".into()])
        );
        assert_eq!(skipped_rules(Some("error=true;skip=all")), Skip::All);
        let dockerfile =
            crate::parse("# check=skip=JSONArgsRecommended;error=true\nFROM scratch\n").unwrap();
        let config = CheckConfig::of(&dockerfile, None);
        assert!(config.error);
        assert!(!config.reports(Some("JSONArgsRecommended")));
        assert!(config.reports(Some("FromAsCasing")));
        // The build argument replaces the directive.
        let config = CheckConfig::of(&dockerfile, Some("skip=all"));
        assert!(!config.error);
        assert!(!config.reports(Some("FromAsCasing")));
    }
}
