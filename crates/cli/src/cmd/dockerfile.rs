//! `kiln dockerfile ...`: parse trees and stage graphs.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use kiln_dockerfile::{Diagnostic, Dockerfile};

mod stages;

#[derive(Subcommand)]
pub enum DockerfileCommand {
    /// Parse a Dockerfile and print its syntax tree
    Parse(ParseArgs),
    /// List the stages, their bases and dependencies, and what a target needs
    Stages(stages::StagesArgs),
}

pub fn run(command: DockerfileCommand) -> anyhow::Result<ExitCode> {
    match command {
        DockerfileCommand::Parse(args) => parse(args),
        DockerfileCommand::Stages(args) => stages::stages(args),
    }
}

/// Arguments of `kiln dockerfile parse`.
#[derive(Args)]
pub struct ParseArgs {
    /// The Dockerfile (`-` for standard input)
    #[arg(value_name = "FILE", conflicts_with = "file")]
    path: Option<PathBuf>,
    /// The Dockerfile (`-` for standard input) [default: Dockerfile]
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Option<PathBuf>,
    /// Print BuildKit's s-expression dump (same as --format dump)
    #[arg(long)]
    dump: bool,
    /// Output format: BuildKit's s-expression dump, or the tree with source
    /// spans as JSON
    #[arg(long, value_enum, default_value_t = ParseFormat::Dump)]
    format: ParseFormat,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ParseFormat {
    Dump,
    Json,
}

/// A Dockerfile read into memory with the name to show in messages.
pub struct SourceFile {
    pub name: String,
    pub text: String,
}

/// Reads `path` (`-` = standard input) as UTF-8 text.
pub fn read_dockerfile(path: &Path) -> anyhow::Result<SourceFile> {
    let (name, bytes) = if path == Path::new("-") {
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("cannot read the Dockerfile from standard input")?;
        ("<stdin>".to_owned(), bytes)
    } else {
        let bytes = std::fs::read(path).with_context(|| {
            format!(
                "cannot read {}: pass the Dockerfile as an argument or with -f",
                path.display()
            )
        })?;
        (path.display().to_string(), bytes)
    };
    match String::from_utf8(bytes) {
        Ok(text) => Ok(SourceFile { name, text }),
        Err(error) => {
            let valid = &error.as_bytes()[..error.utf8_error().valid_up_to()];
            let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
            let column =
                valid.len() - valid.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1) + 1;
            anyhow::bail!(
                "{name}:{line}:{column}: the Dockerfile is not valid UTF-8; save it as UTF-8"
            )
        }
    }
}

/// Prints diagnostics to standard error, coloured when it is a terminal.
pub fn print_diagnostics(diagnostics: &[Diagnostic], source: &SourceFile) {
    use kiln_dockerfile::diagnostics::termcolor::{ColorChoice, StandardStream};
    let choice = if std::io::stderr().is_terminal() {
        ColorChoice::Auto
    } else {
        ColorChoice::Never
    };
    let mut stderr = StandardStream::stderr(choice);
    for diagnostic in diagnostics {
        diagnostic.emit(&mut stderr, &source.name, &source.text);
    }
}

/// Reads the Dockerfile named by `path` (the positional argument) or `file`
/// (`-f`), `./Dockerfile` when neither is given, parses it and prints its
/// parse warnings. A syntax error is printed with its location and gives
/// `None`: the command should then exit with failure.
pub fn read_and_parse(
    path: Option<PathBuf>,
    file: Option<PathBuf>,
) -> anyhow::Result<Option<(SourceFile, Dockerfile)>> {
    let path = path.or(file).unwrap_or_else(|| PathBuf::from("Dockerfile"));
    let source = read_dockerfile(&path)?;
    let dockerfile = match kiln_dockerfile::parse(&source.text) {
        Ok(dockerfile) => dockerfile,
        Err(error) => {
            print_diagnostics(&[error.to_diagnostic()], &source);
            return Ok(None);
        }
    };
    print_diagnostics(&dockerfile.warnings, &source);
    Ok(Some((source, dockerfile)))
}

fn parse(args: ParseArgs) -> anyhow::Result<ExitCode> {
    let Some((source, dockerfile)) = read_and_parse(args.path, args.file)? else {
        return Ok(ExitCode::FAILURE);
    };
    let problems = kiln_dockerfile::validate(&dockerfile);
    if !problems.is_empty() {
        print_diagnostics(&problems, &source);
        return Ok(ExitCode::FAILURE);
    }
    let format = if args.dump {
        ParseFormat::Dump
    } else {
        args.format
    };
    let output = match format {
        ParseFormat::Dump => kiln_dockerfile::dump(&dockerfile),
        ParseFormat::Json => {
            let mut json = serde_json::to_string_pretty(&dockerfile)
                .context("cannot serialise the syntax tree")?;
            json.push('\n');
            json
        }
    };
    write_stdout(&output)?;
    Ok(ExitCode::SUCCESS)
}

/// Writes to standard output; a closed pipe (`kiln ... | head`) is not an
/// error.
pub fn write_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(error).context("cannot write to standard output")
        }
        _ => Ok(()),
    }
}
