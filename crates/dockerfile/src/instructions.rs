//! Typed instructions: the syntax tree's instructions turned into one
//! [`Command`] per instruction with typed, validated fields, following
//! BuildKit's `frontend/dockerfile/instructions` (argument counts, flags and
//! their types, RUN mounts, HEALTHCHECK durations, ONBUILD triggers...).
//!
//! Words are kept **raw** (quotes and `$VAR`s as written): BuildKit expands
//! them only when the instruction is dispatched, with the environment the
//! stage has accumulated by then (ARGs with their `--build-arg` values, ENV).
//! [`Command::expand`] does that expansion for the build engine, for exactly
//! the arguments BuildKit expands:
//!
//! | instruction | expanded (one word each unless noted) | left alone |
//! |---|---|---|
//! | ENV, LABEL | keys and values | |
//! | ARG | default values, and only when no `--build-arg` is given (see [`crate::stages::StageScope::dispatch`]) | names |
//! | ADD | sources, destination, `--chown`, `--chmod`, `--checksum`; heredoc bodies unless the delimiter is quoted | `--exclude`, `--keep-git-dir`, `--link`, `--unpack` |
//! | COPY | sources, destination, `--chown`, `--chmod` (BuildKit 0.16+); heredoc bodies likewise | `--from` (a stage name or image), `--exclude`, `--link`, `--parents` |
//! | WORKDIR, USER, STOPSIGNAL, VOLUME | the argument(s) | |
//! | EXPOSE | each argument, split into several words | |
//! | RUN | every `--mount` value | the command (the shell expands it), `--network`, `--security` |
//! | FROM | image and `--platform`, with the meta ARGs only (see [`crate::stages`]) | |
//! | CMD, ENTRYPOINT, SHELL, HEALTHCHECK, ONBUILD, MAINTAINER | | everything |

// `Diagnostic` is the frontend's single error type: large, but errors are rare.
#![allow(clippy::result_large_err)]

use std::collections::BTreeSet;
use std::time::Duration;

use crate::ast::{self, Arguments, Heredoc, Keyword, Span, Text};
use crate::diagnostics::{Diagnostic, closest_match};
use crate::mounts::{self, Mount};
use crate::shell::{Env, ExpandError, Lexer};

/// A shell-form or exec-form command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandLine {
    /// `RUN echo $HOME`: the text is handed to the stage's SHELL.
    Shell(Text),
    /// `RUN ["echo", "hi"]`: run as is, no shell, no expansion.
    Exec(Vec<Text>),
}

impl CommandLine {
    pub fn is_exec(&self) -> bool {
        matches!(self, CommandLine::Exec(_))
    }

    /// The arguments as BuildKit's `CmdLine` (the shell text as one element
    /// for shell form).
    pub fn args(&self) -> Vec<String> {
        match self {
            CommandLine::Shell(text) => vec![text.value.clone()],
            CommandLine::Exec(words) => words.iter().map(|w| w.value.clone()).collect(),
        }
    }
}

/// `FROM [--platform=P] IMAGE [AS NAME]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct From {
    /// The image or stage name, raw (expanded with meta ARGs by the stage graph).
    pub image: Text,
    pub platform: Option<Text>,
    pub name: Option<StageName>,
    pub span: Span,
}

/// A stage name from `AS name`: lowercased, as BuildKit compares them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageName {
    /// Lowercase name.
    pub name: String,
    /// The name as written.
    pub written: Text,
}

/// A `key=value` pair of ENV or LABEL, raw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    pub key: Text,
    pub value: Text,
    pub span: Span,
}

/// One `name[=default]` of an ARG.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDecl {
    pub name: Text,
    pub default: Option<Text>,
    pub span: Span,
}

/// A source of COPY or ADD: a path (or URL) or an inline heredoc file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Path(Text),
    Heredoc(Heredoc),
}

/// `RUN --network=...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkMode {
    Default,
    None,
    Host,
}

/// `RUN --security=...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityMode {
    Sandbox,
    Insecure,
}

/// `RUN --device=name[,required[=bool]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub name: String,
    pub required: bool,
    pub span: Span,
}

/// One `RUN --mount=...` flag: the raw spec and what it says before
/// expansion (values with variables are in [`Mount::deferred`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunMount {
    /// The flag value as written (`type=cache,target=/root/.cache`).
    pub spec: Text,
    pub mount: Mount,
}

impl RunMount {
    /// Parses the spec again with every value expanded in `env`, as
    /// BuildKit does when it dispatches the RUN.
    pub fn expand(&self, lexer: &Lexer, env: &dyn Env) -> Result<Mount, Diagnostic> {
        let mut used = BTreeSet::new();
        let mut unset = BTreeSet::new();
        self.expand_tracking(lexer, env, &mut used, &mut unset)
    }

    fn expand_tracking(
        &self,
        lexer: &Lexer,
        env: &dyn Env,
        used: &mut BTreeSet<String>,
        unset: &mut BTreeSet<String>,
    ) -> Result<Mount, Diagnostic> {
        let mut expand = |word: &str| -> Result<String, ExpandError> {
            let expansion = lexer.expand_with(word, env, false)?;
            used.extend(expansion.matched);
            unset.extend(expansion.unmatched);
            Ok(expansion.word)
        };
        mounts::parse_mount(&self.spec.value, Some(&mut expand))
            .map_err(|err| mount_diagnostic(&err, self.spec.span))
    }
}

fn mount_diagnostic(err: &mounts::MountError, span: Span) -> Diagnostic {
    let mut diagnostic = Diagnostic::error(format!("invalid --mount: {err}"), span);
    if let Some(hint) = err.hint() {
        diagnostic = diagnostic.with_hint(hint);
    }
    diagnostic
}

/// `RUN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub command: CommandLine,
    /// Heredocs of the instruction (`RUN <<EOF`); the shell gets them.
    pub heredocs: Vec<Heredoc>,
    pub mounts: Vec<RunMount>,
    pub network: Option<NetworkMode>,
    pub security: Option<SecurityMode>,
    pub devices: Vec<Device>,
    pub span: Span,
}

/// What a RUN executes, after BuildKit's heredoc handling
/// (`dockerfile2llb` `dispatchRun`). Heredoc bodies of RUN are never
/// expanded by the frontend: the shell sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunInvocation {
    /// Exec form: run this argv as is.
    Exec(Vec<String>),
    /// Run the stage's SHELL (default `/bin/sh -c`) with this script.
    Shell(String),
    /// `RUN <<EOF` whose body starts with `#!`: write `content` as an
    /// executable (0755) file `/dev/pipes/<name>` on a read-only mount and run
    /// the SHELL with the script `/dev/pipes/<name>`.
    ScriptFile { name: String, content: String },
}

impl Run {
    /// What this RUN executes (see [`RunInvocation`]).
    pub fn invocation(&self) -> RunInvocation {
        let text = match &self.command {
            CommandLine::Exec(words) => {
                return RunInvocation::Exec(words.iter().map(|w| w.value.clone()).collect());
            }
            CommandLine::Shell(text) => text.value.as_str(),
        };
        let Some(first) = self.heredocs.first() else {
            return RunInvocation::Shell(text.to_string());
        };
        if heredoc_marker_name(text.trim()).is_some() && !text.trim().contains(char::is_whitespace)
        {
            // The whole command is one heredoc.
            let body = first.text();
            if body.starts_with("#!") {
                return RunInvocation::ScriptFile {
                    name: first.name.clone(),
                    content: body,
                };
            }
            return RunInvocation::Shell(body);
        }
        // Anything else: rebuild the here-documents for the shell to read.
        let mut script = text.to_string();
        for heredoc in &self.heredocs {
            script.push('\n');
            script.push_str(&heredoc.content);
            script.push_str(&heredoc.name);
        }
        RunInvocation::Shell(script)
    }
}

/// `CMD` or `ENTRYPOINT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerCommand {
    pub command: CommandLine,
    pub span: Span,
}

/// `ADD`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Add {
    pub sources: Vec<Source>,
    pub dest: Text,
    pub chown: Option<Text>,
    pub chmod: Option<Text>,
    pub link: bool,
    pub checksum: Option<Text>,
    pub keep_git_dir: bool,
    pub exclude: Vec<Text>,
    /// `--unpack[=bool]`: `None` keeps the default (unpack local archives).
    pub unpack: Option<bool>,
    pub span: Span,
}

/// `COPY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    pub sources: Vec<Source>,
    pub dest: Text,
    /// `--from`: a stage name or index, an image, or a named context. Never
    /// expanded.
    pub from: Option<Text>,
    pub chown: Option<Text>,
    pub chmod: Option<Text>,
    pub link: bool,
    pub parents: bool,
    pub exclude: Vec<Text>,
    pub span: Span,
}

/// `ONBUILD` and the instruction it registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Onbuild {
    pub trigger: Box<Command>,
    /// The trigger as text, as stored in the image config (`RUN echo hi`).
    pub expression: String,
    pub span: Span,
}

/// `HEALTHCHECK`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Healthcheck {
    /// `HEALTHCHECK NONE`: disable the base image's check.
    None {
        span: Span,
    },
    Check(HealthcheckCommand),
}

/// `HEALTHCHECK [flags] CMD ...`. Durations of zero mean "inherit/default",
/// as in BuildKit, and are `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthcheckCommand {
    pub command: CommandLine,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub start_period: Option<Duration>,
    pub start_interval: Option<Duration>,
    pub retries: Option<u32>,
    pub span: Span,
}

impl Healthcheck {
    /// The image config's `Healthcheck.Test`: `["NONE"]`, `["CMD", args...]`
    /// for exec form, `["CMD-SHELL", text]` for shell form.
    pub fn test(&self) -> Vec<String> {
        match self {
            Healthcheck::None { .. } => vec!["NONE".to_string()],
            Healthcheck::Check(check) => match &check.command {
                CommandLine::Exec(words) => std::iter::once("CMD".to_string())
                    .chain(words.iter().map(|w| w.value.clone()))
                    .collect(),
                CommandLine::Shell(text) => vec!["CMD-SHELL".to_string(), text.value.clone()],
            },
        }
    }
}

/// One typed instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    From(From),
    Run(Run),
    Cmd(ContainerCommand),
    Entrypoint(ContainerCommand),
    Label {
        pairs: Vec<Pair>,
        span: Span,
    },
    /// Deprecated; accepted and recorded as the image author.
    Maintainer {
        name: Text,
        span: Span,
    },
    Expose {
        ports: Vec<Text>,
        span: Span,
    },
    Env {
        pairs: Vec<Pair>,
        span: Span,
    },
    Add(Add),
    Copy(Copy),
    Volume {
        paths: Vec<Text>,
        span: Span,
    },
    User {
        user: Text,
        span: Span,
    },
    Workdir {
        path: Text,
        span: Span,
    },
    Arg {
        args: Vec<ArgDecl>,
        span: Span,
    },
    Onbuild(Onbuild),
    Stopsignal {
        signal: Text,
        span: Span,
    },
    Healthcheck(Healthcheck),
    /// `SHELL ["executable", "params"]` (JSON form only).
    Shell {
        shell: Vec<Text>,
        span: Span,
    },
}

impl Command {
    /// The instruction keyword.
    pub fn keyword(&self) -> Keyword {
        match self {
            Command::From(_) => Keyword::From,
            Command::Run(_) => Keyword::Run,
            Command::Cmd(_) => Keyword::Cmd,
            Command::Entrypoint(_) => Keyword::Entrypoint,
            Command::Label { .. } => Keyword::Label,
            Command::Maintainer { .. } => Keyword::Maintainer,
            Command::Expose { .. } => Keyword::Expose,
            Command::Env { .. } => Keyword::Env,
            Command::Add(_) => Keyword::Add,
            Command::Copy(_) => Keyword::Copy,
            Command::Volume { .. } => Keyword::Volume,
            Command::User { .. } => Keyword::User,
            Command::Workdir { .. } => Keyword::Workdir,
            Command::Arg { .. } => Keyword::Arg,
            Command::Onbuild(_) => Keyword::Onbuild,
            Command::Stopsignal { .. } => Keyword::Stopsignal,
            Command::Healthcheck(_) => Keyword::Healthcheck,
            Command::Shell { .. } => Keyword::Shell,
        }
    }

    /// Where the whole instruction is.
    pub fn span(&self) -> Span {
        match self {
            Command::From(c) => c.span,
            Command::Run(c) => c.span,
            Command::Cmd(c) | Command::Entrypoint(c) => c.span,
            Command::Add(c) => c.span,
            Command::Copy(c) => c.span,
            Command::Onbuild(c) => c.span,
            Command::Healthcheck(Healthcheck::None { span }) => *span,
            Command::Healthcheck(Healthcheck::Check(c)) => c.span,
            Command::Label { span, .. }
            | Command::Maintainer { span, .. }
            | Command::Expose { span, .. }
            | Command::Env { span, .. }
            | Command::Volume { span, .. }
            | Command::User { span, .. }
            | Command::Workdir { span, .. }
            | Command::Arg { span, .. }
            | Command::Stopsignal { span, .. }
            | Command::Shell { span, .. } => *span,
        }
    }

    /// Every raw word that BuildKit expands for this instruction, with
    /// whether it is split into several words (EXPOSE). FROM's words are
    /// listed too although they are expanded with the meta ARGs only.
    pub fn expandable_words(&self) -> Vec<&Text> {
        let mut words: Vec<&Text> = Vec::new();
        match self {
            Command::From(from) => {
                words.push(&from.image);
                words.extend(from.platform.as_ref());
            }
            Command::Env { pairs, .. } | Command::Label { pairs, .. } => {
                for pair in pairs {
                    words.push(&pair.key);
                    words.push(&pair.value);
                }
            }
            Command::Arg { args, .. } => {
                for arg in args {
                    words.extend(arg.default.as_ref());
                }
            }
            Command::Add(add) => {
                words.extend(add.chown.as_ref());
                words.extend(add.chmod.as_ref());
                words.extend(add.checksum.as_ref());
                words.extend(add.sources.iter().filter_map(|s| match s {
                    Source::Path(p) => Some(p),
                    Source::Heredoc(_) => None,
                }));
                words.push(&add.dest);
            }
            Command::Copy(copy) => {
                words.extend(copy.chown.as_ref());
                words.extend(copy.chmod.as_ref());
                words.extend(copy.sources.iter().filter_map(|s| match s {
                    Source::Path(p) => Some(p),
                    Source::Heredoc(_) => None,
                }));
                words.push(&copy.dest);
            }
            Command::Workdir { path: word, .. }
            | Command::User { user: word, .. }
            | Command::Stopsignal { signal: word, .. } => words.push(word),
            Command::Volume { paths, .. } => words.extend(paths.iter()),
            Command::Expose { ports, .. } => words.extend(ports.iter()),
            Command::Run(run) => words.extend(run.mounts.iter().map(|m| &m.spec)),
            Command::Cmd(_)
            | Command::Entrypoint(_)
            | Command::Maintainer { .. }
            | Command::Onbuild(_)
            | Command::Healthcheck(_)
            | Command::Shell { .. } => {}
        }
        words
    }

    /// Expands the arguments BuildKit expands (see the module docs) in `env`
    /// and returns the instruction with expanded words, plus the variables
    /// that were used (for cache keys) and that were not set (for lint).
    /// FROM is returned unchanged: use [`crate::stages::Stages::resolve`].
    pub fn expand(&self, lexer: &Lexer, env: &dyn Env) -> Result<Expanded, Diagnostic> {
        let mut expander = Expander {
            lexer,
            env,
            used: BTreeSet::new(),
            unset: BTreeSet::new(),
        };
        let command = expander.command(self)?;
        Ok(Expanded {
            command,
            used: expander.used,
            unset: expander.unset,
        })
    }
}

/// The result of [`Command::expand`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expanded {
    pub command: Command,
    /// Variables referenced and set.
    pub used: BTreeSet<String>,
    /// Variables referenced and not set (they expanded to nothing).
    pub unset: BTreeSet<String>,
}

struct Expander<'a> {
    lexer: &'a Lexer,
    env: &'a dyn Env,
    used: BTreeSet<String>,
    unset: BTreeSet<String>,
}

impl Expander<'_> {
    fn word_with(&mut self, lexer: &Lexer, text: &Text) -> Result<Text, Diagnostic> {
        let expansion = lexer
            .expand_with(&text.value, self.env, false)
            .map_err(|err| expand_diagnostic(&err, text.span))?;
        self.used.extend(expansion.matched);
        self.unset.extend(expansion.unmatched);
        Ok(Text {
            value: expansion.word,
            span: text.span,
        })
    }

    fn word(&mut self, text: &Text) -> Result<Text, Diagnostic> {
        let lexer = *self.lexer;
        self.word_with(&lexer, text)
    }

    fn opt(&mut self, text: &Option<Text>) -> Result<Option<Text>, Diagnostic> {
        text.as_ref().map(|t| self.word(t)).transpose()
    }

    /// `--chmod` is expanded (BuildKit 0.16+) and then must be a valid mode.
    fn chmod(&mut self, chmod: &Option<Text>) -> Result<Option<Text>, Diagnostic> {
        let expanded = self.opt(chmod)?;
        if let Some(mode) = &expanded {
            check_chmod(mode)?;
        }
        Ok(expanded)
    }

    fn all(&mut self, texts: &[Text]) -> Result<Vec<Text>, Diagnostic> {
        texts.iter().map(|t| self.word(t)).collect()
    }

    fn pairs(&mut self, pairs: &[Pair]) -> Result<Vec<Pair>, Diagnostic> {
        pairs
            .iter()
            .map(|p| {
                Ok(Pair {
                    key: self.word(&p.key)?,
                    value: self.word(&p.value)?,
                    span: p.span,
                })
            })
            .collect()
    }

    fn sources(&mut self, sources: &[Source]) -> Result<Vec<Source>, Diagnostic> {
        // Heredoc bodies are expanded with a backslash lexer that leaves
        // quotes alone (BuildKit's ExpandRaw), unless the delimiter was quoted.
        let raw_lexer = Lexer::new('\\').with_skip_process_quotes(true);
        sources
            .iter()
            .map(|source| match source {
                Source::Path(path) => Ok(Source::Path(self.word(path)?)),
                Source::Heredoc(heredoc) if heredoc.expand => {
                    let body = Text {
                        value: heredoc.text(),
                        span: heredoc.content_span,
                    };
                    let expanded = self.word_with(&raw_lexer, &body)?;
                    Ok(Source::Heredoc(Heredoc {
                        content: expanded.value,
                        chomp: false,
                        ..heredoc.clone()
                    }))
                }
                Source::Heredoc(heredoc) => Ok(Source::Heredoc(heredoc.clone())),
            })
            .collect()
    }

    fn command(&mut self, command: &Command) -> Result<Command, Diagnostic> {
        Ok(match command {
            Command::Env { pairs, span } => Command::Env {
                pairs: self.pairs(pairs)?,
                span: *span,
            },
            Command::Label { pairs, span } => Command::Label {
                pairs: self.pairs(pairs)?,
                span: *span,
            },
            Command::Arg { args, span } => Command::Arg {
                args: args
                    .iter()
                    .map(|a| {
                        Ok(ArgDecl {
                            name: a.name.clone(),
                            default: self.opt(&a.default)?,
                            span: a.span,
                        })
                    })
                    .collect::<Result<_, Diagnostic>>()?,
                span: *span,
            },
            Command::Add(add) => Command::Add(Add {
                chown: self.opt(&add.chown)?,
                chmod: self.chmod(&add.chmod)?,
                checksum: self.opt(&add.checksum)?,
                sources: self.sources(&add.sources)?,
                dest: self.word(&add.dest)?,
                ..add.clone()
            }),
            Command::Copy(copy) => Command::Copy(Copy {
                chown: self.opt(&copy.chown)?,
                chmod: self.chmod(&copy.chmod)?,
                sources: self.sources(&copy.sources)?,
                dest: self.word(&copy.dest)?,
                ..copy.clone()
            }),
            Command::Workdir { path, span } => Command::Workdir {
                path: self.word(path)?,
                span: *span,
            },
            Command::User { user, span } => Command::User {
                user: self.word(user)?,
                span: *span,
            },
            Command::Stopsignal { signal, span } => Command::Stopsignal {
                signal: self.word(signal)?,
                span: *span,
            },
            Command::Volume { paths, span } => Command::Volume {
                paths: self.all(paths)?,
                span: *span,
            },
            Command::Expose { ports, span } => {
                let mut expanded = Vec::new();
                for port in ports {
                    let expansion = self
                        .lexer
                        .expand_with(&port.value, self.env, true)
                        .map_err(|err| expand_diagnostic(&err, port.span))?;
                    self.used.extend(expansion.matched);
                    self.unset.extend(expansion.unmatched);
                    expanded.extend(expansion.words.into_iter().map(|value| Text {
                        value,
                        span: port.span,
                    }));
                }
                Command::Expose {
                    ports: expanded,
                    span: *span,
                }
            }
            Command::Run(run) => {
                let mut mounts = Vec::with_capacity(run.mounts.len());
                for mount in &run.mounts {
                    let expanded = mount.expand_tracking(
                        self.lexer,
                        self.env,
                        &mut self.used,
                        &mut self.unset,
                    )?;
                    mounts.push(RunMount {
                        spec: mount.spec.clone(),
                        mount: expanded,
                    });
                }
                Command::Run(Run {
                    mounts,
                    ..run.clone()
                })
            }
            other => other.clone(),
        })
    }
}

/// A word-expansion error as a diagnostic at the word.
pub fn expand_diagnostic(err: &ExpandError, span: Span) -> Diagnostic {
    let mut diagnostic = Diagnostic::error(err.to_string(), span).with_label(err.kind.to_string());
    if let Some(hint) = err.hint() {
        diagnostic = diagnostic.with_hint(hint);
    }
    diagnostic
}

/// How a flag is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FlagKind {
    /// `--name=value`, at most once.
    String,
    /// `--name` or `--name=true|false`, at most once.
    Bool,
    /// `--name=value`, any number of times.
    Strings,
}

/// The flags each instruction accepts, with BuildKit's flag types.
fn flag_specs(keyword: Keyword) -> &'static [(&'static str, FlagKind)] {
    use FlagKind::*;
    match keyword {
        Keyword::From => &[("platform", String)],
        Keyword::Run => &[
            ("mount", Strings),
            ("network", String),
            ("security", String),
            ("device", Strings),
        ],
        Keyword::Add => &[
            ("chown", String),
            ("chmod", String),
            ("link", Bool),
            ("checksum", String),
            ("keep-git-dir", Bool),
            ("exclude", Strings),
            ("unpack", Bool),
        ],
        Keyword::Copy => &[
            ("from", String),
            ("chown", String),
            ("chmod", String),
            ("link", Bool),
            ("parents", Bool),
            ("exclude", Strings),
        ],
        Keyword::Healthcheck => &[
            ("interval", String),
            ("timeout", String),
            ("start-period", String),
            ("start-interval", String),
            ("retries", String),
        ],
        _ => &[],
    }
}

/// A flag's value with the span of the value (or of the whole flag).
#[derive(Debug, Clone)]
struct FlagValue {
    value: Option<String>,
    span: Span,
    flag_span: Span,
}

/// The validated flags of one instruction.
struct Flags {
    values: Vec<(&'static str, FlagValue)>,
}

impl Flags {
    fn parse(instruction: &ast::Instruction, keyword: Keyword) -> Result<Flags, Diagnostic> {
        let specs = flag_specs(keyword);
        let mut values: Vec<(&'static str, FlagValue)> = Vec::new();
        for flag in &instruction.flags {
            let Some(&(name, kind)) = specs.iter().find(|(name, _)| *name == flag.name) else {
                return Err(unknown_flag(flag, keyword, specs));
            };
            if kind != FlagKind::Strings && values.iter().any(|(seen, _)| *seen == name) {
                return Err(Diagnostic::error(
                    format!("duplicate flag specified: --{name}"),
                    flag.span,
                )
                .with_label("given more than once")
                .with_hint(format!("give --{name} only once")));
            }
            let value = match (kind, &flag.value) {
                (FlagKind::Bool, None) => Some("true".to_string()),
                (FlagKind::Bool, Some(value)) => {
                    let lower = value.to_ascii_lowercase();
                    if lower != "true" && lower != "false" {
                        return Err(Diagnostic::error(
                            format!("expecting boolean value for flag --{name}, not: {value}"),
                            flag.span,
                        )
                        .with_hint(format!("write --{name}, --{name}=true or --{name}=false")));
                    }
                    Some(lower)
                }
                (_, None) => {
                    return Err(Diagnostic::error(
                        format!("missing a value on flag: --{name}"),
                        flag.span,
                    )
                    .with_hint(format!("write --{name}=VALUE")));
                }
                (_, Some(value)) => Some(value.clone()),
            };
            let span = value_span(flag);
            values.push((
                name,
                FlagValue {
                    value,
                    span,
                    flag_span: flag.span,
                },
            ));
        }
        Ok(Flags { values })
    }

    fn text(&self, name: &str) -> Option<Text> {
        self.values
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| {
                v.value.clone().map(|value| Text {
                    value,
                    span: v.span,
                })
            })
    }

    fn texts(&self, name: &str) -> Vec<Text> {
        self.values
            .iter()
            .filter(|(n, _)| *n == name)
            .filter_map(|(_, v)| {
                v.value.clone().map(|value| Text {
                    value,
                    span: v.span,
                })
            })
            .collect()
    }

    fn bool(&self, name: &str) -> Option<bool> {
        self.values
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v.value.as_deref().map(|v| v == "true"))
    }

    fn flag_span(&self, name: &str) -> Option<Span> {
        self.values
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.flag_span)
    }
}

fn unknown_flag(
    flag: &ast::Flag,
    keyword: Keyword,
    specs: &[(&'static str, FlagKind)],
) -> Diagnostic {
    let valid: Vec<String> = specs.iter().map(|(name, _)| format!("--{name}")).collect();
    let mut hint = if valid.is_empty() {
        format!("{keyword} takes no flags")
    } else {
        format!("valid flags for {keyword} are {}", valid.join(", "))
    };
    if let Some(close) = closest_match(&flag.name, specs.iter().map(|(name, _)| *name)) {
        hint = format!("did you mean --{close}? {hint}");
    }
    Diagnostic::error(format!("unknown flag: --{}", flag.name), flag.span)
        .with_label(format!("not a flag of {keyword}"))
        .with_hint(hint)
}

/// The span of the part after `=` of a flag, when the flag is written on
/// one line exactly as its raw text (otherwise the whole flag).
fn value_span(flag: &ast::Flag) -> Span {
    let Some(eq) = flag.raw.find('=') else {
        return flag.span;
    };
    sub_span(flag.span, flag.raw.len(), eq + 1, flag.raw.len())
}

/// The span of bytes `start..end` of a text whose span is `span`, if the
/// text sits in the source as is (same length, one line); else `span`.
pub(crate) fn sub_span(span: Span, text_len: usize, start: usize, end: usize) -> Span {
    let source_len = span.end.offset.saturating_sub(span.start.offset);
    if source_len != text_len || span.start.line != span.end.line || start > end || end > text_len {
        return span;
    }
    let mut result = span;
    result.start.offset = span.start.offset + start;
    result.start.column = span.start.column + start as u32;
    result.end.offset = span.start.offset + end;
    result.end.column = span.start.column + end as u32;
    result
}

fn error(message: impl Into<String>, span: Span) -> Diagnostic {
    Diagnostic::error(message, span)
}

fn at_least_one(keyword: Keyword, span: Span) -> Diagnostic {
    error(format!("{keyword} requires at least one argument"), span).with_hint(usage(keyword))
}

fn exactly_one(keyword: Keyword, span: Span) -> Diagnostic {
    error(format!("{keyword} requires exactly one argument"), span).with_hint(usage(keyword))
}

/// The instruction's syntax, for hints.
fn usage(keyword: Keyword) -> String {
    let syntax = match keyword {
        Keyword::Add => {
            "ADD [--chown=U:G] [--chmod=M] [--link] [--checksum=D] [--keep-git-dir] [--exclude=P] [--unpack] SRC... DEST"
        }
        Keyword::Arg => "ARG NAME[=DEFAULT] ...",
        Keyword::Cmd => "CMD [\"executable\", \"arg\"] or CMD command arg",
        Keyword::Copy => {
            "COPY [--from=STAGE] [--chown=U:G] [--chmod=M] [--link] [--parents] [--exclude=P] SRC... DEST"
        }
        Keyword::Entrypoint => "ENTRYPOINT [\"executable\", \"arg\"] or ENTRYPOINT command arg",
        Keyword::Env => "ENV KEY=VALUE ...",
        Keyword::Expose => "EXPOSE PORT[/PROTOCOL] ...",
        Keyword::From => "FROM [--platform=P] IMAGE [AS NAME]",
        Keyword::Healthcheck => {
            "HEALTHCHECK [--interval=D] [--timeout=D] [--start-period=D] [--start-interval=D] [--retries=N] CMD command, or HEALTHCHECK NONE"
        }
        Keyword::Label => "LABEL KEY=VALUE ...",
        Keyword::Maintainer => "MAINTAINER NAME (deprecated: use LABEL maintainer=NAME)",
        Keyword::Onbuild => "ONBUILD INSTRUCTION",
        Keyword::Run => "RUN [--mount=...] [--network=...] [--security=...] command",
        Keyword::Shell => "SHELL [\"executable\", \"param\"]",
        Keyword::Stopsignal => "STOPSIGNAL SIGNAL",
        Keyword::User => "USER NAME[:GROUP]",
        Keyword::Volume => "VOLUME PATH ... or VOLUME [\"PATH\", ...]",
        Keyword::Workdir => "WORKDIR PATH",
    };
    format!("usage: {syntax}")
}

/// Converts one syntax-tree instruction into a typed [`Command`].
pub fn convert(instruction: &ast::Instruction) -> Result<Command, Diagnostic> {
    let span = instruction.span;
    let Some(keyword) = instruction.keyword else {
        let mut diagnostic = error(
            format!(
                "unknown instruction: {}",
                instruction.name.to_ascii_uppercase()
            ),
            instruction.name_span,
        )
        .with_label("not a Dockerfile instruction");
        if let Some(close) =
            closest_match(&instruction.name, Keyword::ALL.iter().map(|k| k.as_str()))
        {
            diagnostic =
                diagnostic.with_hint(format!("did you mean {}?", close.to_ascii_uppercase()));
        }
        return Err(diagnostic);
    };
    // HEALTHCHECK NONE ignores flags in BuildKit; every other instruction
    // validates them first.
    let healthcheck_none = keyword == Keyword::Healthcheck
        && matches!(&instruction.args, Arguments::Healthcheck { kind, .. } if kind.value.eq_ignore_ascii_case("none"));
    let flags = if healthcheck_none {
        Flags { values: Vec::new() }
    } else {
        Flags::parse(instruction, keyword)?
    };
    let args = &instruction.args;
    Ok(match keyword {
        Keyword::From => Command::From(convert_from(instruction, &flags)?),
        Keyword::Run => Command::Run(convert_run(instruction, &flags)?),
        Keyword::Cmd => Command::Cmd(ContainerCommand {
            command: command_line(args, span),
            span,
        }),
        Keyword::Entrypoint => Command::Entrypoint(ContainerCommand {
            command: command_line(args, span),
            span,
        }),
        Keyword::Env | Keyword::Label => {
            let Arguments::KeyValues(kvs) = args else {
                return Err(at_least_one(keyword, span));
            };
            if kvs.is_empty() {
                return Err(at_least_one(keyword, span));
            }
            let mut pairs = Vec::with_capacity(kvs.len());
            for kv in kvs {
                if kv.key.value.is_empty() {
                    return Err(error(format!("{keyword} names can not be blank"), kv.span)
                        .with_hint(usage(keyword)));
                }
                pairs.push(Pair {
                    key: kv.key.clone(),
                    value: kv.value.clone(),
                    span: kv.span,
                });
            }
            if keyword == Keyword::Env {
                Command::Env { pairs, span }
            } else {
                Command::Label { pairs, span }
            }
        }
        Keyword::Maintainer => Command::Maintainer {
            name: single(args, keyword, span)?,
            span,
        },
        Keyword::User => Command::User {
            user: single(args, keyword, span)?,
            span,
        },
        Keyword::Workdir => Command::Workdir {
            path: single(args, keyword, span)?,
            span,
        },
        Keyword::Stopsignal => Command::Stopsignal {
            signal: single(args, keyword, span)?,
            span,
        },
        Keyword::Expose => {
            let ports = words(args);
            if ports.is_empty() {
                return Err(at_least_one(keyword, span));
            }
            // Ports without variables or quotes are checked now rather than
            // when the build reaches them.
            for port in ports
                .iter()
                .filter(|p| !p.value.contains(['$', '\'', '"', '\\', '`']))
            {
                if let Err(message) = exposed_ports(&port.value) {
                    return Err(error(message, port.span)
                        .with_label("not a port")
                        .with_hint(
                            "write PORT, PORT/PROTOCOL or START-END/PROTOCOL (tcp, udp, sctp)",
                        ));
                }
            }
            Command::Expose { ports, span }
        }
        Keyword::Volume => {
            let paths = words(args);
            if paths.is_empty() {
                return Err(at_least_one(keyword, span));
            }
            let mut trimmed = Vec::with_capacity(paths.len());
            for path in paths {
                let value = path.value.trim();
                if value.is_empty() {
                    return Err(
                        error("VOLUME specified can not be an empty string", path.span)
                            .with_hint("give a path such as /data"),
                    );
                }
                trimmed.push(Text {
                    value: value.to_string(),
                    span: path.span,
                });
            }
            Command::Volume {
                paths: trimmed,
                span,
            }
        }
        Keyword::Arg => {
            let words = words(args);
            if words.is_empty() {
                return Err(at_least_one(keyword, span));
            }
            let mut decls = Vec::with_capacity(words.len());
            for word in words {
                let decl = match word.value.split_once('=') {
                    Some((name, default)) => {
                        if name.is_empty() {
                            return Err(error("ARG names can not be blank", word.span)
                                .with_hint(usage(keyword)));
                        }
                        let len = word.value.len();
                        ArgDecl {
                            name: Text {
                                value: name.to_string(),
                                span: sub_span(word.span, len, 0, name.len()),
                            },
                            default: Some(Text {
                                value: default.to_string(),
                                span: sub_span(word.span, len, name.len() + 1, len),
                            }),
                            span: word.span,
                        }
                    }
                    None => ArgDecl {
                        name: word.clone(),
                        default: None,
                        span: word.span,
                    },
                };
                decls.push(decl);
            }
            Command::Arg { args: decls, span }
        }
        Keyword::Add | Keyword::Copy => convert_copy(instruction, keyword, &flags)?,
        Keyword::Onbuild => {
            let Arguments::Onbuild(trigger) = args else {
                return Err(at_least_one(keyword, span));
            };
            match trigger.keyword {
                Some(Keyword::Onbuild) => {
                    return Err(error(
                        "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
                        trigger.name_span,
                    )
                    .with_hint("an ONBUILD trigger cannot itself be ONBUILD"));
                }
                Some(k @ (Keyword::From | Keyword::Maintainer)) => {
                    return Err(error(format!("{k} isn't allowed as an ONBUILD trigger"), trigger.name_span)
                        .with_hint("ONBUILD triggers may be any instruction except ONBUILD, FROM and MAINTAINER"));
                }
                _ => {}
            }
            let command = convert(trigger)?;
            Command::Onbuild(Onbuild {
                trigger: Box::new(command),
                expression: onbuild_expression(instruction, trigger),
                span,
            })
        }
        Keyword::Healthcheck => Command::Healthcheck(convert_healthcheck(instruction, &flags)?),
        Keyword::Shell => match args {
            Arguments::Exec(items) if !items.is_empty() => Command::Shell {
                shell: items.clone(),
                span,
            },
            Arguments::Exec(_) | Arguments::None => return Err(at_least_one(keyword, span)),
            _ => {
                return Err(
                    error("SHELL requires the arguments to be in JSON form", span)
                        .with_hint("write SHELL [\"/bin/bash\", \"-c\"]"),
                );
            }
        },
    })
}

/// The text BuildKit stores for an ONBUILD trigger: the line without the
/// ONBUILD keyword, plus any heredoc bodies.
fn onbuild_expression(instruction: &ast::Instruction, trigger: &ast::Instruction) -> String {
    let original = instruction.original.trim_start();
    let mut expression = match original.get(..7) {
        Some(head) if head.eq_ignore_ascii_case("onbuild") => {
            original.get(7..).unwrap_or("").trim_start().to_string()
        }
        _ => trigger.original.clone(),
    };
    for heredoc in instruction.heredocs.iter().chain(trigger.heredocs.iter()) {
        expression.push('\n');
        expression.push_str(&heredoc.content);
        expression.push_str(&heredoc.name);
    }
    expression
}

fn command_line(args: &Arguments, span: Span) -> CommandLine {
    match args {
        Arguments::Exec(items) => CommandLine::Exec(items.clone()),
        Arguments::Shell(text) => CommandLine::Shell(text.clone()),
        Arguments::Words(words) => {
            let value = words
                .iter()
                .map(|w| w.value.as_str())
                .collect::<Vec<_>>()
                .join(" ");
            let span = match (words.first(), words.last()) {
                (Some(first), Some(last)) => first.span.to(last.span),
                _ => span,
            };
            CommandLine::Shell(Text { value, span })
        }
        _ => CommandLine::Shell(Text {
            value: String::new(),
            span,
        }),
    }
}

/// The argument words of instructions that take a list (shell words or JSON).
fn words(args: &Arguments) -> Vec<Text> {
    match args {
        Arguments::Words(words) | Arguments::Exec(words) => words.clone(),
        Arguments::Shell(text) if !text.value.trim().is_empty() => vec![text.clone()],
        _ => Vec::new(),
    }
}

fn single(args: &Arguments, keyword: Keyword, span: Span) -> Result<Text, Diagnostic> {
    match args {
        Arguments::Shell(text) if !text.value.is_empty() => Ok(text.clone()),
        Arguments::Words(words) | Arguments::Exec(words) => match words.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(exactly_one(keyword, span)),
            [_, second, ..] => Err(exactly_one(keyword, span)
                .with_label("unexpected extra argument")
                .with_hint(format!(
                    "{}; quote the value if it contains spaces (second argument at {})",
                    usage(keyword),
                    second.span
                ))),
        },
        _ => Err(exactly_one(keyword, span)),
    }
}

/// BuildKit's stage-name rule: `^[a-z][a-z0-9-_.]*$` after lowercasing.
pub fn is_valid_stage_name(lowercase: &str) -> bool {
    let mut chars = lowercase.chars();
    matches!(chars.next(), Some('a'..='z'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '-' | '_' | '.'))
}

fn convert_from(instruction: &ast::Instruction, flags: &Flags) -> Result<From, Diagnostic> {
    let span = instruction.span;
    let words = words(&instruction.args);
    let (image, name) = match words.as_slice() {
        [image] => (image.clone(), None),
        [image, as_word, name] if as_word.value.eq_ignore_ascii_case("as") => {
            let lower = name.value.to_lowercase();
            if !is_valid_stage_name(&lower) {
                return Err(error(
                    format!(
                        "invalid name for build stage: {:?}, name can't start with a number or contain symbols",
                        name.value
                    ),
                    name.span,
                )
                .with_label("invalid stage name")
                .with_hint("stage names start with a letter and contain only letters, digits, '-', '_' and '.'"));
            }
            (
                image.clone(),
                Some(StageName {
                    name: lower,
                    written: name.clone(),
                }),
            )
        }
        [_, second, _] => {
            return Err(
                error("FROM requires either one or three arguments", second.span)
                    .with_label("expected AS")
                    .with_hint(usage(Keyword::From)),
            );
        }
        _ => {
            return Err(error("FROM requires either one or three arguments", span)
                .with_hint(usage(Keyword::From)));
        }
    };
    Ok(From {
        image,
        platform: flags.text("platform"),
        name,
        span,
    })
}

fn convert_run(instruction: &ast::Instruction, flags: &Flags) -> Result<Run, Diagnostic> {
    let mut mounts = Vec::new();
    for spec in flags.texts("mount") {
        let mount = mounts::parse_mount(&spec.value, None)
            .map_err(|err| mount_diagnostic(&err, spec.span))?;
        mounts.push(RunMount { spec, mount });
    }
    let network = match flags.text("network") {
        None => None,
        Some(text) => Some(match text.value.as_str() {
            "default" => NetworkMode::Default,
            "none" => NetworkMode::None,
            "host" => NetworkMode::Host,
            other => {
                return Err(
                    error(format!("network mode {other:?} not supported"), text.span)
                        .with_hint("valid values are default, none, host"),
                );
            }
        }),
    };
    let security = match flags.text("security") {
        None => None,
        Some(text) => Some(match text.value.as_str() {
            "sandbox" => SecurityMode::Sandbox,
            "insecure" => SecurityMode::Insecure,
            other => {
                return Err(error(format!("security {other:?} is not valid"), text.span)
                    .with_hint("valid values are sandbox, insecure"));
            }
        }),
    };
    let mut devices = Vec::new();
    for text in flags.texts("device") {
        devices.push(parse_device(&text)?);
    }
    Ok(Run {
        command: command_line(&instruction.args, instruction.span),
        heredocs: instruction.heredocs.clone(),
        mounts,
        network,
        security,
        devices,
        span: instruction.span,
    })
}

fn parse_device(text: &Text) -> Result<Device, Diagnostic> {
    let fields = mounts::split_csv(&text.value)
        .map_err(|err| error(format!("invalid --device: {err}"), text.span))?;
    let mut name = String::new();
    let mut required = false;
    for (index, field) in fields.iter().enumerate() {
        match field.split_once('=') {
            None if index == 0 => name = field.clone(),
            None if field.eq_ignore_ascii_case("required") => required = true,
            Some((key, value)) if key.eq_ignore_ascii_case("name") => name = value.to_string(),
            Some((key, value)) if key.eq_ignore_ascii_case("required") => {
                required = match value.to_ascii_lowercase().as_str() {
                    "1" | "t" | "true" => true,
                    "0" | "f" | "false" => false,
                    _ => {
                        return Err(error(
                            format!("invalid value for required: {value}"),
                            text.span,
                        )
                        .with_hint("write required, required=true or required=false"));
                    }
                }
            }
            _ => {
                return Err(
                    error(format!("unexpected key '{field}' in --device"), text.span)
                        .with_hint("write --device=NAME[,required]"),
                );
            }
        }
    }
    if name.is_empty() {
        return Err(
            error("device name is required", text.span).with_hint("write --device=NAME[,required]")
        );
    }
    Ok(Device {
        name,
        required,
        span: text.span,
    })
}

/// BuildKit accepts an octal mode up to 07777
/// or (dockerfile 1.14+) a symbolic mode such as `u+x,go-w`.
fn check_chmod(chmod: &Text) -> Result<(), Diagnostic> {
    let value = chmod.value.as_str();
    let octal_ok = !value.is_empty()
        && value.bytes().all(|b| (b'0'..=b'7').contains(&b))
        && u32::from_str_radix(value, 8).is_ok_and(|mode| mode <= 0o7777);
    let symbolic_ok = !value.is_empty()
        && value.split(',').all(|clause| {
            let who_len = clause.bytes().take_while(|b| b"ugoa".contains(b)).count();
            let rest = clause.get(who_len..).unwrap_or("");
            let mut chars = rest.chars();
            matches!(chars.next(), Some('+' | '-' | '='))
                && chars.all(|c| "rwxXstugo+-=".contains(c))
        });
    if octal_ok || symbolic_ok {
        return Ok(());
    }
    Err(error(
        format!(
            "invalid chmod parameter: '{value}'. it should be octal string and between 0 and 07777"
        ),
        chmod.span,
    )
    .with_hint("write an octal mode such as --chmod=755, or a symbolic one such as --chmod=u+x"))
}

/// Parses a heredoc marker word (`<<EOF`, `<<-"EOF"`, `3<<EOF`) into the
/// delimiter name, or `None` when the word is not one.
fn heredoc_marker_name(word: &str) -> Option<String> {
    let rest = word.trim_start_matches(|c: char| c.is_ascii_digit());
    let rest = rest.strip_prefix("<<")?;
    let rest = rest.strip_prefix('-').unwrap_or(rest);
    let name: String = rest.chars().filter(|c| *c != '"' && *c != '\'').collect();
    (!name.is_empty() && !name.contains('<')).then_some(name)
}

fn convert_copy(
    instruction: &ast::Instruction,
    keyword: Keyword,
    flags: &Flags,
) -> Result<Command, Diagnostic> {
    let span = instruction.span;
    let words = words(&instruction.args);
    let Some((dest, sources)) = words
        .split_last()
        .filter(|(_, sources)| !sources.is_empty())
    else {
        return Err(error(
            format!(
                "{keyword} requires at least two arguments, but only one was provided. Destination could not be determined"
            ),
            span,
        )
        .with_hint(usage(keyword)));
    };
    let allows_heredoc_sources = !instruction.heredocs.is_empty();
    if allows_heredoc_sources && heredoc_marker_name(&dest.value).is_some() {
        return Err(error(
            format!("{keyword} cannot accept a heredoc as a destination"),
            dest.span,
        )
        .with_hint("the last argument must be a path"));
    }
    let mut typed_sources = Vec::with_capacity(sources.len());
    for source in sources {
        let heredoc = if allows_heredoc_sources {
            heredoc_marker_name(&source.value)
                .and_then(|name| instruction.heredocs.iter().find(|h| h.name == name))
        } else {
            None
        };
        typed_sources.push(match heredoc {
            Some(heredoc) => Source::Heredoc(heredoc.clone()),
            None => Source::Path(source.clone()),
        });
    }
    let chown = flags.text("chown");
    let chmod = flags.text("chmod");
    // A mode with variables is checked once expanded.
    if let Some(chmod) = chmod.as_ref().filter(|c| !c.value.contains('$')) {
        check_chmod(chmod)?;
    }
    let exclude = flags.texts("exclude");
    let link = flags.bool("link").unwrap_or(false);
    if keyword == Keyword::Add {
        return Ok(Command::Add(Add {
            sources: typed_sources,
            dest: dest.clone(),
            chown,
            chmod,
            link,
            checksum: flags.text("checksum"),
            keep_git_dir: flags.bool("keep-git-dir").unwrap_or(false),
            exclude,
            unpack: flags.bool("unpack"),
            span,
        }));
    }
    let from = flags.text("from");
    if from.as_ref().is_some_and(|from| from.value.is_empty()) {
        return Err(error(
            "COPY --from requires a stage name, index or image",
            flags.flag_span("from").unwrap_or(span),
        )
        .with_hint("write --from=STAGE"));
    }
    Ok(Command::Copy(Copy {
        sources: typed_sources,
        dest: dest.clone(),
        from,
        chown,
        chmod,
        link,
        parents: flags.bool("parents").unwrap_or(false),
        exclude,
        span,
    }))
}

fn convert_healthcheck(
    instruction: &ast::Instruction,
    flags: &Flags,
) -> Result<Healthcheck, Diagnostic> {
    let span = instruction.span;
    let Arguments::Healthcheck { kind, command } = &instruction.args else {
        return Err(at_least_one(Keyword::Healthcheck, span));
    };
    let kind_upper = kind.value.to_ascii_uppercase();
    if kind_upper == "NONE" {
        if !matches!(**command, Arguments::None) {
            return Err(error("HEALTHCHECK NONE takes no arguments", span)
                .with_hint("write just HEALTHCHECK NONE"));
        }
        return Ok(Healthcheck::None { span });
    }
    if kind_upper != "CMD" {
        return Err(error(
            format!("Unknown type {kind_upper:?} in HEALTHCHECK (try CMD)"),
            kind.span,
        )
        .with_hint(usage(Keyword::Healthcheck)));
    }
    let command_line = match &**command {
        Arguments::Exec(items) if !items.is_empty() => CommandLine::Exec(items.clone()),
        Arguments::Shell(text) if !text.value.is_empty() => CommandLine::Shell(text.clone()),
        Arguments::Words(words) if !words.is_empty() => command_line(command, span),
        _ => {
            return Err(error("Missing command after HEALTHCHECK CMD", span)
                .with_hint(usage(Keyword::Healthcheck)));
        }
    };
    let duration = |name: &str| -> Result<Option<Duration>, Diagnostic> {
        let Some(text) = flags.text(name) else {
            return Ok(None);
        };
        if text.value.is_empty() {
            return Ok(None);
        }
        match parse_go_duration(&text.value) {
            Ok(0) => Ok(None),
            Ok(nanos) if nanos < 1_000_000 => Err(error(
                format!("Interval {name:?} cannot be less than 1ms"),
                text.span,
            )
            .with_hint("use a duration of at least 1ms, e.g. 30s")),
            Ok(nanos) => Ok(Some(Duration::from_nanos(nanos.unsigned_abs()))),
            Err(message) => Err(error(format!("--{name}: {message}"), text.span)
                .with_hint("durations look like 30s, 1m30s, 500ms or 2h")),
        }
    };
    let retries = match flags.text("retries") {
        None => None,
        Some(text) if text.value.is_empty() => None,
        Some(text) => match text.value.parse::<i64>() {
            Ok(n) if n < 0 => {
                return Err(
                    error(format!("--retries cannot be negative ({n})"), text.span)
                        .with_hint("use 0 or more"),
                );
            }
            Ok(n) if n > i64::from(i32::MAX) => {
                return Err(
                    error(format!("--retries: value out of range: {n}"), text.span)
                        .with_hint("use a smaller number"),
                );
            }
            Ok(n) => Some(n as u32),
            Err(_) => {
                return Err(error(
                    format!("--retries: invalid number {:?}", text.value),
                    text.span,
                )
                .with_hint("write a whole number, e.g. --retries=3"));
            }
        },
    };
    Ok(Healthcheck::Check(HealthcheckCommand {
        command: command_line,
        interval: duration("interval")?,
        timeout: duration("timeout")?,
        start_period: duration("start-period")?,
        start_interval: duration("start-interval")?,
        retries,
        span,
    }))
}

/// Turns one expanded EXPOSE argument into the image-config keys it stands
/// for, as BuildKit's `parsePortSpec`: `80` -> `80/tcp`, `53/UDP` ->
/// `53/udp`, `8000-8002` -> three ports; a `[ip:]host:` prefix is accepted
/// and dropped. Protocols are tcp, udp and sctp.
pub fn exposed_ports(spec: &str) -> Result<Vec<String>, String> {
    // [ip:]hostPort:containerPort, where ip may itself contain ':' (IPv6).
    let parts: Vec<&str> = spec.split(':').collect();
    let (ip, host_port, container) = match parts.as_slice() {
        [container] => ("".to_string(), "", *container),
        [host, container] => ("".to_string(), *host, *container),
        [init @ .., host, container] => (init.join(":"), *host, *container),
        [] => return Err(format!("no port specified: {spec}<empty>")),
    };
    let (port, protocol) = container.split_once('/').unwrap_or((container, ""));
    if port.is_empty() {
        return Err(format!("no port specified: {container}<empty>"));
    }
    let protocol = match protocol.to_ascii_lowercase().as_str() {
        "" | "tcp" => "tcp",
        "udp" => "udp",
        "sctp" => "sctp",
        other => return Err(format!("invalid proto: {other}")),
    };
    if !ip.is_empty() {
        let bare = ip
            .strip_prefix('[')
            .and_then(|i| i.strip_suffix(']'))
            .unwrap_or(&ip);
        if bare.parse::<std::net::IpAddr>().is_err() {
            return Err(format!("invalid IP address: {ip}"));
        }
    }
    let (start, end) = port_range(port).ok_or_else(|| format!("invalid containerPort: {port}"))?;
    if !host_port.is_empty() {
        let (host_start, host_end) =
            port_range(host_port).ok_or_else(|| format!("invalid hostPort: {host_port}"))?;
        if end - start != host_end - host_start && end != start {
            return Err(format!(
                "invalid ranges specified for container and host Ports: {port} and {host_port}"
            ));
        }
    }
    Ok((start..=end).map(|p| format!("{p}/{protocol}")).collect())
}

/// `80` or `8000-9000` as an inclusive range of valid port numbers.
fn port_range(ports: &str) -> Option<(u16, u16)> {
    let number = |text: &str| {
        if text.starts_with('+') {
            None
        } else {
            text.parse::<u16>().ok()
        }
    };
    match ports.split_once('-') {
        None => number(ports).map(|p| (p, p)),
        Some((start, end)) if !end.contains('-') => {
            let (start, end) = (number(start)?, number(end)?);
            (start <= end).then_some((start, end))
        }
        Some(_) => None,
    }
}

/// Linux signal names (without `SIG`) and numbers, as moby's signal map.
const SIGNALS: [(&str, i32); 31] = [
    ("ABRT", 6),
    ("ALRM", 14),
    ("BUS", 7),
    ("CHLD", 17),
    ("CLD", 17),
    ("CONT", 18),
    ("FPE", 8),
    ("HUP", 1),
    ("ILL", 4),
    ("INT", 2),
    ("IO", 29),
    ("IOT", 6),
    ("KILL", 9),
    ("PIPE", 13),
    ("POLL", 29),
    ("PROF", 27),
    ("PWR", 30),
    ("QUIT", 3),
    ("SEGV", 11),
    ("STKFLT", 16),
    ("STOP", 19),
    ("SYS", 31),
    ("TERM", 15),
    ("TRAP", 5),
    ("TSTP", 20),
    ("TTIN", 21),
    ("TTOU", 22),
    ("URG", 23),
    ("USR1", 10),
    ("USR2", 12),
    ("VTALRM", 26),
];

/// Checks an expanded STOPSIGNAL as BuildKit does (moby's `ParseSignal`): a
/// nonzero number, or a signal name with or without `SIG`, in any case
/// (`RTMIN+n`/`RTMAX-n` included). Returns the signal number.
pub fn parse_signal(raw: &str) -> Result<i32, String> {
    let invalid = || format!("invalid signal: {raw}");
    if let Ok(number) = raw.parse::<i32>() {
        return if number == 0 {
            Err(invalid())
        } else {
            Ok(number)
        };
    }
    let upper = raw.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(&(_, number)) = SIGNALS.iter().find(|(n, _)| *n == name) {
        return Ok(number);
    }
    let extra = [
        ("WINCH", 28),
        ("XCPU", 24),
        ("XFSZ", 25),
        ("RTMIN", 34),
        ("RTMAX", 64),
    ];
    if let Some(&(_, number)) = extra.iter().find(|(n, _)| *n == name) {
        return Ok(number);
    }
    // Only the spellings moby's map has: RTMIN+1..15 and RTMAX-14..1.
    let rt_min = name.strip_prefix("RTMIN+").filter(|n| !n.starts_with('0'));
    if let Some(offset) = rt_min
        .and_then(|n| n.parse::<i32>().ok())
        .filter(|o| (1..=15).contains(o))
    {
        return Ok(34 + offset);
    }
    let rt_max = name.strip_prefix("RTMAX-").filter(|n| !n.starts_with('0'));
    if let Some(offset) = rt_max
        .and_then(|n| n.parse::<i32>().ok())
        .filter(|o| (1..=14).contains(o))
    {
        return Ok(64 - offset);
    }
    Err(invalid())
}

/// Go's `time.ParseDuration`, in nanoseconds: a signed sequence of decimal
/// numbers each with a unit (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`), or `0`.
pub fn parse_go_duration(input: &str) -> Result<i64, String> {
    let invalid = || format!("time: invalid duration {input:?}");
    let (negative, mut rest) = match input.as_bytes().first() {
        Some(b'-') => (true, input.get(1..).unwrap_or("")),
        Some(b'+') => (false, input.get(1..).unwrap_or("")),
        _ => (false, input),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = rest.get(..number_len).unwrap_or("");
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(invalid());
        }
        rest = rest.get(number_len..).unwrap_or("");
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = rest.get(..unit_len).unwrap_or("");
        rest = rest.get(unit_len..).unwrap_or("");
        let scale: f64 = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(format!("time: missing unit in duration {input:?}")),
            other => {
                return Err(format!(
                    "time: unknown unit {other:?} in duration {input:?}"
                ));
            }
        };
        let value: f64 = number.parse().map_err(|_| invalid())?;
        total += value * scale;
    }
    if total > i64::MAX as f64 {
        return Err(invalid());
    }
    let nanos = total.round() as i64;
    Ok(if negative { -nanos } else { nanos })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("30s"), Ok(30_000_000_000));
        assert_eq!(parse_go_duration("1m30s"), Ok(90_000_000_000));
        assert_eq!(parse_go_duration("1.5h"), Ok(5_400_000_000_000));
        assert_eq!(parse_go_duration("500ms"), Ok(500_000_000));
        assert_eq!(parse_go_duration("0"), Ok(0));
        assert_eq!(parse_go_duration("-1s"), Ok(-1_000_000_000));
        assert_eq!(
            parse_go_duration("10"),
            Err("time: missing unit in duration \"10\"".into())
        );
        assert_eq!(
            parse_go_duration("3d"),
            Err("time: unknown unit \"d\" in duration \"3d\"".into())
        );
        assert!(parse_go_duration("").is_err());
        assert!(parse_go_duration("s").is_err());
    }

    #[test]
    fn exposed_port_specs() {
        assert_eq!(exposed_ports("80"), Ok(vec!["80/tcp".to_string()]));
        assert_eq!(exposed_ports("53/UDP"), Ok(vec!["53/udp".to_string()]));
        assert_eq!(
            exposed_ports("8000-8002/sctp").unwrap(),
            ["8000/sctp", "8001/sctp", "8002/sctp"]
        );
        assert_eq!(exposed_ports("127.0.0.1:8080:80").unwrap(), ["80/tcp"]);
        assert_eq!(exposed_ports("[::1]:8080:80").unwrap(), ["80/tcp"]);
        assert_eq!(exposed_ports("80/icmp"), Err("invalid proto: icmp".into()));
        assert_eq!(
            exposed_ports("http"),
            Err("invalid containerPort: http".into())
        );
        assert_eq!(
            exposed_ports("9-8"),
            Err("invalid containerPort: 9-8".into())
        );
        assert_eq!(
            exposed_ports("70000"),
            Err("invalid containerPort: 70000".into())
        );
        assert_eq!(
            exposed_ports("/tcp"),
            Err("no port specified: /tcp<empty>".into())
        );
        assert_eq!(
            exposed_ports("x.y:1:80"),
            Err("invalid IP address: x.y".into())
        );
    }

    #[test]
    fn stage_name_rule() {
        for ok in ["a", "build", "go-1.21_x", "z9"] {
            assert!(is_valid_stage_name(ok), "{ok}");
        }
        for bad in ["", "1a", "-a", "a b", "a/b", "a:b", "É", "_x"] {
            assert!(!is_valid_stage_name(bad), "{bad}");
        }
    }

    #[test]
    fn signals() {
        assert_eq!(parse_signal("SIGTERM"), Ok(15));
        assert_eq!(parse_signal("term"), Ok(15));
        assert_eq!(parse_signal("SigKill"), Ok(9));
        assert_eq!(parse_signal("9"), Ok(9));
        assert_eq!(parse_signal("SIGRTMIN+3"), Ok(37));
        assert_eq!(parse_signal("RTMAX-1"), Ok(63));
        assert_eq!(parse_signal("WINCH"), Ok(28));
        assert_eq!(parse_signal("0"), Err("invalid signal: 0".into()));
        assert_eq!(parse_signal("SIGFOO"), Err("invalid signal: SIGFOO".into()));
        assert_eq!(
            parse_signal("RTMIN+16"),
            Err("invalid signal: RTMIN+16".into())
        );
    }

    #[test]
    fn chmod_values() {
        let text = |value: &str| Text {
            value: value.into(),
            span: Span::default(),
        };
        for ok in [
            "755",
            "0644",
            "7777",
            "u+x",
            "go-w",
            "a+rX,go-w",
            "u=rwx,g=rx",
        ] {
            assert!(check_chmod(&text(ok)).is_ok(), "{ok}");
        }
        for bad in ["64a", "10000", "", "$MODE", "u", "rwx"] {
            let err = check_chmod(&text(bad)).expect_err(bad);
            assert!(
                err.message.starts_with("invalid chmod parameter"),
                "{bad}: {}",
                err.message
            );
        }
    }

    #[test]
    fn heredoc_markers() {
        assert_eq!(heredoc_marker_name("<<EOF").as_deref(), Some("EOF"));
        assert_eq!(heredoc_marker_name("<<-\"EOT\"").as_deref(), Some("EOT"));
        assert_eq!(heredoc_marker_name("3<<'X'").as_deref(), Some("X"));
        assert_eq!(heredoc_marker_name("file.txt"), None);
        assert_eq!(heredoc_marker_name("<<"), None);
    }
}
