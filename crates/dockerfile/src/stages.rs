//! Stages and the stage graph: a parsed Dockerfile split into its build
//! stages, with BuildKit's semantic rules checked, and the dependencies
//! between stages resolved.
//!
//! Rules (BuildKit's `instructions.Parse` and `dockerfile2llb`):
//! - only ARG may come before the first FROM; those *meta* ARGs are in scope
//!   for FROM lines only, and inside a stage only after `ARG NAME` re-declares
//!   them (a use without re-declaration expands to nothing and is warned
//!   about);
//! - stage names match `^[a-z][a-z0-9-_.]*$` after lowercasing, compare
//!   case-insensitively, must be unique, and may not be `scratch` or
//!   `context` (BuildKit lints both; kiln rejects them);
//! - `FROM x` refers to an *earlier* stage named `x` if there is one, else
//!   to an image (`scratch` is the empty image);
//! - `COPY --from=x` refers to an earlier stage by name or index (a later one
//!   is an error, a cycle too), else to an image (or the build context for
//!   `context`); `RUN --mount=from=x` likewise by name (kiln also accepts an
//!   index there); `--from` is never expanded; ONBUILD triggers of a base
//!   stage add their dependencies to the stages built on it;
//! - a `--target` that names no stage is an error listing the stage names.
//!
//! [`Stages::from_dockerfile`] builds the typed model; [`Stages::resolve`]
//! expands the FROM lines with the meta ARGs (and `--build-arg` values) and
//! returns the [`Graph`] ([`Graph::target`], [`Graph::required_stages`]);
//! [`StageScope`] gives the build engine BuildKit's ARG/ENV scoping while it
//! dispatches a stage, and [`parse_onbuild_triggers`] reads a base image's
//! ONBUILD triggers.

// `Diagnostic` is the frontend's single error type: large, but errors are rare.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::ast::{self, Span, Text};
use crate::diagnostics::{Diagnostic, closest_match};
use crate::instructions::{self, ArgDecl, Command, From};
use crate::shell::{EmptyEnv, Lexer};

/// Stage names BuildKit reserves.
pub const RESERVED_STAGE_NAMES: [&str; 2] = ["context", "scratch"];

/// One build stage: its FROM and the instructions after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// Position in the Dockerfile, from 0 (usable as `--from=N`).
    pub index: usize,
    pub from: From,
    pub commands: Vec<Command>,
}

impl Stage {
    /// The lowercase stage name, if the stage has one.
    pub fn name(&self) -> Option<&str> {
        self.from.name.as_ref().map(|n| n.name.as_str())
    }

    /// The name, or `stage-N` like BuildKit's progress output.
    pub fn display_name(&self) -> String {
        self.name()
            .map_or_else(|| format!("stage-{}", self.index), str::to_string)
    }

    /// From the FROM line to the end of the last instruction.
    pub fn span(&self) -> Span {
        self.commands
            .last()
            .map_or(self.from.span, |last| self.from.span.to(last.span()))
    }
}

/// A Dockerfile as typed stages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stages {
    /// The escape character in effect (`\` or `` ` ``).
    pub escape: char,
    /// ARGs declared before the first FROM, in order.
    pub meta_args: Vec<ArgDecl>,
    pub stages: Vec<Stage>,
    /// Problems that do not stop a build (meta ARGs used without
    /// re-declaration, ...).
    pub warnings: Vec<Diagnostic>,
}

/// What a stage starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// `FROM scratch`: an empty filesystem.
    Scratch,
    /// An image reference, expanded.
    Image(String),
    /// An earlier stage, by index.
    Stage(usize),
}

/// What a `--from` refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Stage(usize),
    Image(String),
    /// `--from=context`: the build context (when no stage has that name).
    Context,
}

/// Why one stage needs something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DependencyKind {
    From,
    CopyFrom,
    MountFrom,
}

impl DependencyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DependencyKind::From => "FROM",
            DependencyKind::CopyFrom => "COPY --from",
            DependencyKind::MountFrom => "RUN --mount from",
        }
    }
}

/// One edge of the stage graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    pub kind: DependencyKind,
    pub reference: Reference,
    /// The instruction that creates the dependency.
    pub span: Span,
}

/// A stage with its base and dependencies resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageNode {
    pub index: usize,
    pub name: Option<String>,
    pub base: Base,
    /// `--platform`, expanded with the meta ARGs.
    pub platform: Option<String>,
    /// Every dependency, FROM first, then in instruction order.
    pub dependencies: Vec<Dependency>,
}

impl StageNode {
    /// The stages this stage needs directly.
    pub fn stage_dependencies(&self) -> BTreeSet<usize> {
        self.dependencies
            .iter()
            .filter_map(|d| match d.reference {
                Reference::Stage(index) => Some(index),
                _ => None,
            })
            .collect()
    }

    pub fn display_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("stage-{}", self.index))
    }
}

/// The resolved stage graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Graph {
    pub stages: Vec<StageNode>,
    /// The meta ARG values used for FROM lines.
    pub meta_env: Vec<(String, String)>,
}

impl Graph {
    /// The stage a build of `target` ends at: the named stage
    /// (case-insensitive), or the last stage when `target` is `None`.
    pub fn target(&self, target: Option<&str>) -> Result<usize, Diagnostic> {
        match target {
            None => self.stages.len().checked_sub(1).ok_or_else(|| {
                Diagnostic::new(
                    crate::diagnostics::Severity::Error,
                    "the Dockerfile has no stages",
                    None,
                )
            }),
            Some(name) => {
                let lower = name.to_lowercase();
                if let Some(node) = self
                    .stages
                    .iter()
                    .find(|s| s.name.as_deref() == Some(lower.as_str()))
                {
                    return Ok(node.index);
                }
                let names: Vec<&str> = self
                    .stages
                    .iter()
                    .filter_map(|s| s.name.as_deref())
                    .collect();
                let mut hint = if names.is_empty() {
                    "the Dockerfile has no named stages; name one with FROM IMAGE AS NAME"
                        .to_string()
                } else {
                    format!("stages are: {}", names.join(", "))
                };
                if let Some(close) = closest_match(&lower, names.iter().copied()) {
                    hint = format!("did you mean {close}? {hint}");
                }
                Err(Diagnostic::new(
                    crate::diagnostics::Severity::Error,
                    format!("target stage {name:?} could not be found"),
                    None,
                )
                .with_hint(hint))
            }
        }
    }

    /// Every stage a build of stage `target` needs (itself included), in
    /// Dockerfile order.
    pub fn required_stages(&self, target: usize) -> Vec<usize> {
        let mut needed = BTreeSet::new();
        let mut queue = vec![target];
        while let Some(index) = queue.pop() {
            if !needed.insert(index) {
                continue;
            }
            if let Some(node) = self.stages.get(index) {
                queue.extend(node.stage_dependencies());
            }
        }
        needed.into_iter().collect()
    }
}

/// The platform ARGs BuildKit defines automatically for FROM lines, for
/// the machine kiln runs on (build and target platform alike).
pub fn default_platform_args() -> Vec<(String, String)> {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    };
    let os = std::env::consts::OS;
    let platform = format!("{os}/{arch}");
    [
        ("BUILDPLATFORM", platform.as_str()),
        ("BUILDOS", os),
        ("BUILDOSVERSION", ""),
        ("BUILDARCH", arch),
        ("BUILDVARIANT", ""),
        ("TARGETPLATFORM", platform.as_str()),
        ("TARGETOS", os),
        ("TARGETOSVERSION", ""),
        ("TARGETARCH", arch),
        ("TARGETVARIANT", ""),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

impl Stages {
    /// Types every instruction and checks the rules in the module docs.
    /// All errors found are returned, not only the first.
    pub fn from_dockerfile(dockerfile: &ast::Dockerfile) -> Result<Stages, Vec<Diagnostic>> {
        let mut errors = Vec::new();
        let mut meta_args = Vec::new();
        let mut stages: Vec<Stage> = Vec::new();
        for instruction in &dockerfile.instructions {
            let command = match instructions::convert(instruction) {
                Ok(command) => command,
                Err(diagnostic) => {
                    errors.push(diagnostic);
                    continue;
                }
            };
            match command {
                Command::From(from) => stages.push(Stage {
                    index: stages.len(),
                    from,
                    commands: Vec::new(),
                }),
                Command::Arg { args, .. } if stages.is_empty() => meta_args.extend(args),
                other => match stages.last_mut() {
                    Some(stage) => stage.commands.push(other),
                    None => errors.push(
                        Diagnostic::error(
                            "no build stage in current context",
                            instruction.name_span,
                        )
                        .with_label(format!("{} before the first FROM", other.keyword()))
                        .with_hint("a Dockerfile starts with FROM; only ARG may come before it"),
                    ),
                },
            }
        }
        if stages.is_empty() && errors.is_empty() {
            let diagnostic = match dockerfile.instructions.first() {
                Some(first) => {
                    Diagnostic::error("dockerfile contains no stages to build", first.span)
                        .with_hint("add a FROM instruction, e.g. FROM busybox")
                }
                None => Diagnostic::new(
                    crate::diagnostics::Severity::Error,
                    "the Dockerfile has no instructions",
                    None,
                )
                .with_hint("add a FROM instruction, e.g. FROM busybox"),
            };
            errors.push(diagnostic);
        }
        check_stage_names(&stages, &mut errors);
        let mut result = Stages {
            escape: dockerfile.escape,
            meta_args,
            stages,
            warnings: Vec::new(),
        };
        result.check_from_references(&mut errors);
        result.warnings = result.meta_arg_scope_warnings();
        // MAINTAINER is accepted (it sets the image's author) but deprecated.
        for command in result.stages.iter().flat_map(|s| &s.commands) {
            if let Command::Maintainer { span, .. } = command {
                result.warnings.push(
                    Diagnostic::warning(
                        "Maintainer instruction is deprecated in favor of using label",
                        *span,
                    )
                    .with_code("MaintainerDeprecated")
                    .with_hint("write LABEL org.opencontainers.image.authors=\"NAME\" instead"),
                );
            }
        }
        if errors.is_empty() {
            Ok(result)
        } else {
            Err(errors)
        }
    }

    /// The index of the stage named `name` (case-insensitive).
    pub fn find(&self, name: &str) -> Option<usize> {
        let lower = name.to_lowercase();
        self.stages
            .iter()
            .position(|s| s.name() == Some(lower.as_str()))
    }

    /// The lexer for this Dockerfile's escape character.
    pub fn lexer(&self) -> Lexer {
        Lexer::new(self.escape)
    }

    /// The values of the meta ARGs for FROM lines: the automatic platform
    /// ARGs, then each meta ARG's `--build-arg` value or its default
    /// (expanded with the meta ARGs before it). `build_args` values for names
    /// that no meta ARG declares are not visible, as in BuildKit.
    pub fn meta_env(
        &self,
        build_args: &[(String, String)],
    ) -> Result<Vec<(String, String)>, Diagnostic> {
        let lexer = self.lexer();
        let mut env: Vec<(String, String)> = default_platform_args();
        // The stage being built: kiln's build engine passes the --target
        // name as TARGETSTAGE; without it, the last stage's name.
        let last_stage = self
            .stages
            .last()
            .and_then(Stage::name)
            .unwrap_or("default");
        env.push(("TARGETSTAGE".to_string(), last_stage.to_string()));
        for (key, value) in build_args {
            if let Some(slot) = env.iter_mut().find(|(k, _)| k == key) {
                slot.1 = value.clone();
            }
        }
        for arg in &self.meta_args {
            // ARG names are never expanded.
            let name = arg.name.value.clone();
            let provided = build_args
                .iter()
                .rev()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone());
            let value = match (provided, &arg.default) {
                (Some(value), _) => Some(value),
                (None, Some(default)) => Some(
                    lexer
                        .process_word(&default.value, &env)
                        .map_err(|err| instructions::expand_diagnostic(&err, default.span))?,
                ),
                (None, None) => None,
            };
            // An ARG without a value and without a --build-arg is declared
            // but unset: `${NAME-x}` sees it as unset.
            if let Some(value) = value {
                env.push((name, value));
            }
        }
        Ok(env)
    }

    /// Expands every FROM with the meta ARGs and resolves bases, `--from`
    /// references and mount sources into the stage [`Graph`]; rejects cycles.
    pub fn resolve(&self, build_args: &[(String, String)]) -> Result<Graph, Vec<Diagnostic>> {
        let meta_env = self.meta_env(build_args).map_err(|d| vec![d])?;
        let lexer = self.lexer();
        let mut errors = Vec::new();
        let mut nodes: Vec<StageNode> = Vec::with_capacity(self.stages.len());
        for stage in &self.stages {
            let from = &stage.from;
            let image = match lexer.process_word(&from.image.value, &meta_env) {
                Ok(image) => image,
                Err(err) => {
                    errors.push(instructions::expand_diagnostic(&err, from.image.span));
                    String::new()
                }
            };
            if image.is_empty() && errors.is_empty() {
                errors.push(
                    Diagnostic::error(
                        format!("base name ({}) should not be blank", from.image.value),
                        from.image.span,
                    )
                    .with_label("expands to nothing")
                    .with_hint("give the ARG a default before the first FROM, or pass --build-arg"),
                );
            }
            let platform = match &from.platform {
                Some(platform) => match lexer.process_word(&platform.value, &meta_env) {
                    Ok(value) => Some(value),
                    Err(err) => {
                        errors.push(instructions::expand_diagnostic(&err, platform.span));
                        None
                    }
                },
                None => None,
            };
            let lower = image.to_lowercase();
            let base = if image == "scratch" {
                Base::Scratch
            } else if let Some(earlier) = nodes
                .iter()
                .position(|n| n.name.as_deref() == Some(lower.as_str()))
            {
                Base::Stage(earlier)
            } else {
                Base::Image(image)
            };
            let mut dependencies = Vec::new();
            if let Base::Stage(index) = base {
                dependencies.push(Dependency {
                    kind: DependencyKind::From,
                    reference: Reference::Stage(index),
                    span: from.span,
                });
            }
            // ONBUILD triggers of a base stage run first in this stage.
            let inherited_triggers = match base {
                Base::Stage(index) => self.stages.get(index).map_or(&[][..], |s| &s.commands[..]),
                _ => &[],
            };
            let triggers = inherited_triggers.iter().filter_map(|c| match c {
                Command::Onbuild(onbuild) => Some(&*onbuild.trigger),
                _ => None,
            });
            for command in triggers.chain(stage.commands.iter()) {
                self.command_dependencies(command, &mut dependencies, &mut errors);
            }
            nodes.push(StageNode {
                index: stage.index,
                name: stage.name().map(str::to_string),
                base,
                platform,
                dependencies,
            });
        }
        if let (true, Some(diagnostic)) = (errors.is_empty(), find_cycle(&nodes)) {
            errors.push(diagnostic);
        }
        if errors.is_empty() {
            errors.extend(forward_copies(&nodes));
        }
        if errors.is_empty() {
            Ok(Graph {
                stages: nodes,
                meta_env,
            })
        } else {
            Err(errors)
        }
    }

    /// The dependencies one instruction creates (COPY --from, RUN --mount from=).
    fn command_dependencies(
        &self,
        command: &Command,
        dependencies: &mut Vec<Dependency>,
        errors: &mut Vec<Diagnostic>,
    ) {
        match command {
            Command::Copy(copy) => {
                let Some(source) = &copy.from else { return };
                match self.resolve_reference(&source.value, true) {
                    Ok(reference) => dependencies.push(Dependency {
                        kind: DependencyKind::CopyFrom,
                        reference,
                        span: copy.span,
                    }),
                    Err(message) => {
                        errors.push(Diagnostic::error(message, source.span).with_hint(format!(
                            "stages are numbered 0 to {}",
                            self.stages.len().saturating_sub(1)
                        )))
                    }
                }
            }
            Command::Run(run) => {
                for mount in &run.mounts {
                    let Some(source) = &mount.mount.from else {
                        continue;
                    };
                    match self.resolve_reference(source, true) {
                        Ok(reference) => dependencies.push(Dependency {
                            kind: DependencyKind::MountFrom,
                            reference,
                            span: mount.spec.span,
                        }),
                        Err(message) => errors.push(Diagnostic::error(message, mount.spec.span)),
                    }
                }
            }
            _ => {}
        }
    }

    /// A `--from` value: a stage name, a stage index (when `allow_index`), the
    /// build context, or else an image.
    fn resolve_reference(&self, value: &str, allow_index: bool) -> Result<Reference, String> {
        if let Some(index) = self.find(value) {
            return Ok(Reference::Stage(index));
        }
        if allow_index && !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
            return match value.parse::<usize>() {
                Ok(index) if index < self.stages.len() => Ok(Reference::Stage(index)),
                _ => Err(format!("invalid stage index {value}")),
            };
        }
        if value == "context" {
            return Ok(Reference::Context);
        }
        Ok(Reference::Image(value.to_string()))
    }

    /// `COPY --from` is never expanded: a `$` in it is a mistake.
    fn check_from_references(&self, errors: &mut Vec<Diagnostic>) {
        let froms = self
            .stages
            .iter()
            .flat_map(|stage| &stage.commands)
            .filter_map(|command| match command {
                Command::Copy(copy) => copy.from.as_ref(),
                _ => None,
            });
        for from in froms {
            // As BuildKit's check for mounts: a `$` followed by anything.
            if from
                .value
                .find('$')
                .is_some_and(|i| i + 1 != from.value.len())
            {
                errors.push(
                    Diagnostic::error(
                    "variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround",
                    from.span,
                )
                        .with_label("not expanded")
                        .with_hint("declare `FROM ${VAR} AS alias` and use --from=alias"),
                );
            }
        }
    }

    /// Warnings for meta ARGs used in a stage without re-declaration.
    fn meta_arg_scope_warnings(&self) -> Vec<Diagnostic> {
        let lexer = self.lexer();
        let meta_names: HashSet<&str> = self
            .meta_args
            .iter()
            .map(|a| a.name.value.as_str())
            .collect();
        let mut warnings = Vec::new();
        if meta_names.is_empty() {
            return warnings;
        }
        // ARG and ENV names each stage defines, inherited by stages built on it.
        let mut stage_env: Vec<HashSet<String>> = Vec::with_capacity(self.stages.len());
        for stage in &self.stages {
            let mut declared: HashSet<String> = HashSet::new();
            let base_lower = stage.from.image.value.to_lowercase();
            let base = self
                .stages
                .iter()
                .take(stage.index)
                .rposition(|s| s.name() == Some(base_lower.as_str()));
            if let Some(inherited) = base.and_then(|base| stage_env.get(base)) {
                declared.extend(inherited.iter().cloned());
            }
            let mut env_names: HashSet<String> = declared.clone();
            for command in &stage.commands {
                for word in command.expandable_words() {
                    let Ok(expansion) = lexer.expand_with(&word.value, &EmptyEnv, false) else {
                        continue;
                    };
                    for name in expansion.unmatched {
                        if meta_names.contains(name.as_str()) && !declared.contains(&name) {
                            warnings.push(
                                Diagnostic::warning(
                                    format!("ARG {name} is declared before the first FROM and is not in scope here; it expands to an empty string"),
                                    word.span,
                                )
                                .with_code("UndefinedArgInStage")
                                .with_hint(format!("re-declare it inside this stage with `ARG {name}` before using it")),
                            );
                        }
                    }
                }
                match command {
                    Command::Arg { args, .. } => {
                        for arg in args {
                            declared.insert(arg.name.value.clone());
                            // Child stages inherit a stage's ARGs too.
                            env_names.insert(arg.name.value.clone());
                        }
                    }
                    Command::Env { pairs, .. } => {
                        for pair in pairs {
                            declared.insert(pair.key.value.clone());
                            env_names.insert(pair.key.value.clone());
                        }
                    }
                    _ => {}
                }
            }
            stage_env.push(env_names);
        }
        warnings
    }
}

/// The variables in scope while one stage is dispatched, with BuildKit's
/// rules (checked against `docker build` in `tests/oracle_expansion.rs`),
/// for the build engine to expand words with ([`Command::expand`]) and to
/// give RUN its environment:
/// - `ARG NAME[=default]` takes the `--build-arg` value, else the default,
///   else the value of the meta ARG of the same name (including the automatic
///   platform ARGs); with none of these it is declared but unset;
/// - ARG and ENV set the same variables: the later one wins for expansion
///   and for RUN, but only ENV values are stored in the image;
/// - build args that no ARG declares are not visible.
#[derive(Debug, Clone, Default)]
pub struct StageScope {
    meta_env: Vec<(String, String)>,
    build_args: Vec<(String, String)>,
    /// Everything in scope (base image ENV, ARG, ENV), latest value per name.
    vars: Vec<(String, String)>,
    /// What goes into the image config: base image ENV plus ENV.
    image_env: Vec<(String, String)>,
}

fn set_var(list: &mut Vec<(String, String)>, key: &str, value: &str) {
    match list.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = value.to_string(),
        None => list.push((key.to_string(), value.to_string())),
    }
}

impl StageScope {
    /// A scope for a stage whose base image (or base stage) has `base_env`
    /// (`KEY=VALUE` pairs); `meta_env` is [`Graph::meta_env`].
    pub fn new(
        meta_env: &[(String, String)],
        build_args: &[(String, String)],
        base_env: &[(String, String)],
    ) -> Self {
        StageScope {
            meta_env: meta_env.to_vec(),
            build_args: build_args.to_vec(),
            vars: base_env.to_vec(),
            image_env: base_env.to_vec(),
        }
    }

    /// The scope a stage built `FROM` this one starts with: BuildKit passes
    /// the parent stage's ARGs on to its children, with its ENV; the image's
    /// ENV is applied again on top, so a parent's `ENV A=1` then `ARG A=2`
    /// gives the child `A=1` (checked against `docker build`).
    pub fn child(&self) -> StageScope {
        let mut child = self.clone();
        for (key, value) in &self.image_env {
            set_var(&mut child.vars, key, value);
        }
        child
    }

    /// Expands `command` in this scope and applies it: the one call the build
    /// engine makes per instruction. An ARG's default is expanded only when
    /// no `--build-arg` overrides it (so `ARG V=${X:?}` fails only without
    /// one), as in BuildKit; ARG names are never expanded.
    pub fn dispatch(
        &mut self,
        lexer: &Lexer,
        command: &Command,
    ) -> Result<instructions::Expanded, Diagnostic> {
        let expanded = match command {
            Command::Arg { args, span } => {
                let mut used = BTreeSet::new();
                let mut unset = BTreeSet::new();
                let mut decls = Vec::with_capacity(args.len());
                for decl in args {
                    let overridden = self.build_args.iter().any(|(k, _)| *k == decl.name.value);
                    let default = match &decl.default {
                        Some(default) if !overridden => {
                            let expansion =
                                lexer.expand_with(&default.value, &*self, false).map_err(
                                    |err| instructions::expand_diagnostic(&err, default.span),
                                )?;
                            used.extend(expansion.matched);
                            unset.extend(expansion.unmatched);
                            Some(Text {
                                value: expansion.word,
                                span: default.span,
                            })
                        }
                        other => other.clone(),
                    };
                    decls.push(ArgDecl {
                        name: decl.name.clone(),
                        default,
                        span: decl.span,
                    });
                }
                // Like every instruction, one ARG line is expanded against the
                // scope before it: `ARG A=1 B=$A` does not see the new A.
                let command = Command::Arg {
                    args: decls,
                    span: *span,
                };
                self.apply(&command);
                instructions::Expanded {
                    command,
                    used,
                    unset,
                }
            }
            other => {
                let expanded = other.expand(lexer, &*self)?;
                self.apply(&expanded.command);
                expanded
            }
        };
        Ok(expanded)
    }

    /// Applies an already expanded command (only ARG and ENV change the scope).
    pub fn apply(&mut self, expanded: &Command) {
        match expanded {
            Command::Arg { args, .. } => {
                for decl in args {
                    let name = decl.name.value.as_str();
                    let value = self
                        .build_args
                        .iter()
                        .rev()
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| v.clone())
                        .or_else(|| decl.default.as_ref().map(|d| d.value.clone()))
                        .or_else(|| {
                            self.meta_env
                                .iter()
                                .rev()
                                .find(|(k, _)| k == name)
                                .map(|(_, v)| v.clone())
                        });
                    if let Some(value) = value {
                        set_var(&mut self.vars, name, &value);
                    }
                }
            }
            Command::Env { pairs, .. } => {
                for pair in pairs {
                    set_var(&mut self.vars, &pair.key.value, &pair.value.value);
                    set_var(&mut self.image_env, &pair.key.value, &pair.value.value);
                }
            }
            _ => {}
        }
    }

    /// The image's environment: base image ENV plus this stage's ENV, in order.
    pub fn image_env(&self) -> &[(String, String)] {
        &self.image_env
    }

    /// The environment of a RUN: every variable in scope, ARGs included
    /// (they are not stored in the image).
    pub fn run_env(&self) -> &[(String, String)] {
        &self.vars
    }
}

impl crate::shell::Env for StageScope {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses ONBUILD triggers stored in a base image's config (one instruction
/// each, as BuildKit's `dispatchOnBuildTriggers`) into commands to run
/// first in the stage built on that image.
pub fn parse_onbuild_triggers(triggers: &[String]) -> Result<Vec<Command>, Diagnostic> {
    let mut commands = Vec::with_capacity(triggers.len());
    for trigger in triggers {
        let dockerfile = crate::parse(trigger).map_err(|e| e.to_diagnostic())?;
        let [instruction] = dockerfile.instructions.as_slice() else {
            return Err(Diagnostic::new(
                crate::diagnostics::Severity::Error,
                format!("onbuild trigger should be a single expression: {trigger:?}"),
                None,
            )
            .with_hint("the base image's ONBUILD triggers are corrupt; rebuild the base image"));
        };
        match instructions::convert(instruction)? {
            Command::From(_) | Command::Onbuild(_) | Command::Maintainer { .. } => {
                return Err(Diagnostic::error(
                    format!(
                        "{} isn't allowed as an ONBUILD trigger",
                        instruction.name.to_ascii_uppercase()
                    ),
                    instruction.span,
                ));
            }
            command => commands.push(command),
        }
    }
    Ok(commands)
}

fn check_stage_names(stages: &[Stage], errors: &mut Vec<Diagnostic>) {
    let mut seen: HashMap<&str, &Text> = HashMap::new();
    for stage in stages {
        let Some(name) = &stage.from.name else {
            continue;
        };
        if RESERVED_STAGE_NAMES.contains(&name.name.as_str()) {
            errors.push(
                Diagnostic::error(
                    format!(
                        "Stage name should not use the same name as reserved stage {:?}",
                        name.name
                    ),
                    name.written.span,
                )
                .with_code("ReservedStageName")
                .with_label("reserved name")
                .with_hint(format!("rename the stage, e.g. AS {}-stage", name.name)),
            );
        }
        if let Some(first) = seen.get(name.name.as_str()) {
            errors.push(
                Diagnostic::error(
                    format!("Duplicate stage name {:?}, stage names should be unique", name.name),
                    name.written.span,
                )
                .with_code("DuplicateStageName")
                .with_label("already used")
                    .with_hint(format!(
                        "stage names are case-insensitive and must be unique; {:?} is first used at line {}",
                        first.value, first.span.start.line
                    )),
            );
        } else {
            seen.insert(name.name.as_str(), &name.written);
        }
    }
}

/// `COPY --from` a stage defined later in the file, which BuildKit refuses
/// (a cycle is reported first, by [`find_cycle`]).
fn forward_copies(nodes: &[StageNode]) -> Vec<Diagnostic> {
    let mut errors = Vec::new();
    for node in nodes {
        for dependency in &node.dependencies {
            let Reference::Stage(source) = dependency.reference else {
                continue;
            };
            if dependency.kind == DependencyKind::CopyFrom && source > node.index {
                let source_name = nodes
                    .get(source)
                    .map_or_else(|| source.to_string(), StageNode::display_name);
                errors.push(
                    Diagnostic::error(
                        format!(
                            "cannot copy from stage {source_name:?}, it needs to be defined before current stage {:?}",
                            node.display_name()
                        ),
                        dependency.span,
                    )
                    .with_label("defined later in the file")
                    .with_hint(format!("move stage {source_name:?} above stage {:?}", node.display_name())),
                );
            }
        }
    }
    errors
}

/// The first cycle among stage dependencies, as BuildKit reports it.
fn find_cycle(nodes: &[StageNode]) -> Option<Diagnostic> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let mut marks = vec![Mark::New; nodes.len()];
    // Iterative DFS; the stack holds (node, dependency cursor).
    for start in 0..nodes.len() {
        if marks.get(start) != Some(&Mark::New) {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        if let Some(mark) = marks.get_mut(start) {
            *mark = Mark::Active;
        }
        while let Some(&mut (node, ref mut cursor)) = stack.last_mut() {
            let deps = nodes.get(node).map(|n| &n.dependencies[..]).unwrap_or(&[]);
            let Some(dependency) = deps.get(*cursor) else {
                if let Some(mark) = marks.get_mut(node) {
                    *mark = Mark::Done;
                }
                stack.pop();
                continue;
            };
            *cursor += 1;
            let Reference::Stage(next) = dependency.reference else {
                continue;
            };
            match marks.get(next) {
                Some(Mark::Active) => {
                    let name = nodes
                        .get(next)
                        .map_or_else(String::new, StageNode::display_name);
                    return Some(
                        Diagnostic::error(
                            format!("circular dependency detected on stage: {name}"),
                            dependency.span,
                        )
                        .with_label(format!(
                            "{} refers back to {name}",
                            dependency.kind.as_str()
                        ))
                        .with_hint("a stage cannot use itself or a stage that depends on it"),
                    );
                }
                Some(Mark::New) => {
                    if let Some(mark) = marks.get_mut(next) {
                        *mark = Mark::Active;
                    }
                    stack.push((next, 0));
                }
                _ => {}
            }
        }
    }
    None
}

/// Renders a stage's base for humans: `image busybox`, `stage build`, `scratch`.
pub fn describe_base(graph: &Graph, base: &Base) -> String {
    match base {
        Base::Scratch => "scratch".to_string(),
        Base::Image(image) => format!("image {image}"),
        Base::Stage(index) => format!(
            "stage {}",
            graph
                .stages
                .get(*index)
                .map_or_else(|| index.to_string(), StageNode::display_name)
        ),
    }
}
