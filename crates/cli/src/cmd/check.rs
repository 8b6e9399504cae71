//! `kiln check` (and `kiln build --check`): BuildKit's build checks on a
//! Dockerfile without building it, as `docker build --check`: every
//! violation with its rule, a link to the rule's documentation and the
//! Dockerfile lines; a non-zero exit when there is any. Honours the
//! `# check=skip=RULE,...|all` parser directive.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use kiln_dockerfile::Diagnostic;
use kiln_dockerfile::stages::Stages;

use super::dockerfile::{SourceFile, print_diagnostics, read_dockerfile};

/// Arguments of `kiln check`.
#[derive(Args)]
pub struct CheckArgs {
    /// The build context (where `Dockerfile` is looked for)
    #[arg(value_name = "CONTEXT", default_value = ".")]
    context: PathBuf,
    /// The Dockerfile (`-` for standard input) [default: CONTEXT/Dockerfile]
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Option<PathBuf>,
}

pub fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let path = args.file.unwrap_or_else(|| args.context.join("Dockerfile"));
    let source = read_dockerfile(&path)?;
    Ok(check(&source, None))
}

/// The value of a `BUILDKIT_DOCKERFILE_CHECK` build argument, which takes
/// the place of the `# check=` directive.
pub fn config_build_arg(build_args: &[String]) -> Option<&str> {
    build_args
        .iter()
        .rev()
        .find_map(|a| a.strip_prefix("BUILDKIT_DOCKERFILE_CHECK="))
}

/// The build checks' violations for `text` and whether they fail a build
/// (`error=true`); `Err` with the errors when the Dockerfile does not parse
/// or resolve into stages.
fn run_checks(
    text: &str,
    build_arg: Option<&str>,
) -> Result<(Vec<Diagnostic>, bool), Vec<Diagnostic>> {
    let dockerfile = kiln_dockerfile::parse(text).map_err(|e| vec![e.to_diagnostic()])?;
    let problems = kiln_dockerfile::validate(&dockerfile);
    if !problems.is_empty() {
        return Err(problems);
    }
    let stages = Stages::from_dockerfile(&dockerfile)?;
    let config = kiln_dockerfile::check::CheckConfig::of(&dockerfile, build_arg);
    let found = kiln_dockerfile::check::build_checks(&dockerfile, &stages, &config);
    Ok((found, config.error))
}

/// The violations a build of `text` reports, and whether they fail it
/// (`error=true`); nothing when the Dockerfile is broken (the build says why).
pub fn build_warnings(text: &str, build_arg: Option<&str>) -> (Vec<Diagnostic>, bool) {
    run_checks(text, build_arg).unwrap_or_default()
}

/// docker's summary of a build's check violations, one line each.
pub fn summary(found: &[Diagnostic]) -> String {
    let mut out = match found.len() {
        1 => " 1 warning found (use kiln check to expand):\n".to_string(),
        n => format!(" {n} warnings found (use kiln check to expand):\n"),
    };
    for d in found {
        let line = d
            .span
            .map(|s| format!(" (line {})", s.start.line))
            .unwrap_or_default();
        out.push_str(&format!(
            " - {}: {}{line}\n",
            d.code.as_deref().unwrap_or("warning"),
            d.message
        ));
    }
    out
}

/// Checks `source`; prints what it finds and returns the exit code.
/// `build_arg`: a `BUILDKIT_DOCKERFILE_CHECK` value replacing the directive.
pub fn check(source: &SourceFile, build_arg: Option<&str>) -> ExitCode {
    let found = match run_checks(&source.text, build_arg) {
        Ok((found, _)) => found,
        Err(errors) => {
            print_diagnostics(&errors, source);
            return ExitCode::FAILURE;
        }
    };
    for diagnostic in &found {
        if let Some(code) = &diagnostic.code {
            println!("{code} - {}", kiln_dockerfile::check::rule_url(code));
        }
        print!("{}", diagnostic.render(&source.name, &source.text));
    }
    match found.len() {
        0 => {
            println!("Check complete, no warnings found.");
            ExitCode::SUCCESS
        }
        1 => {
            println!("Check complete, 1 warning has been found!");
            ExitCode::FAILURE
        }
        n => {
            println!("Check complete, {n} warnings have been found!");
            ExitCode::FAILURE
        }
    }
}
