//! Typed instructions, stage rules and the stage graph, end to end from
//! Dockerfile text: each rule with a positive and a negative case, asserting
//! messages, hints and spans.

use std::time::Duration;

use kiln_dockerfile::diagnostics::{Diagnostic, Severity};
use kiln_dockerfile::instructions::{
    Command, CommandLine, Healthcheck, NetworkMode, SecurityMode, Source,
};
use kiln_dockerfile::mounts::{CacheSharing, MountType};
use kiln_dockerfile::shell::Lexer;
use kiln_dockerfile::stages::{Base, DependencyKind, Reference, Stages};

fn load(source: &str) -> Result<Stages, Vec<Diagnostic>> {
    let dockerfile = kiln_dockerfile::parse(source).map_err(|e| vec![e.to_diagnostic()])?;
    Stages::from_dockerfile(&dockerfile)
}

fn ok(source: &str) -> Stages {
    match load(source) {
        Ok(stages) => stages,
        Err(errors) => panic!("unexpected errors for {source:?}: {errors:#?}"),
    }
}

/// The single error for `source`, checked to be at `line:column`.
fn error_at(source: &str, line: u32, column: u32) -> Diagnostic {
    let errors = load(source).expect_err(source);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let error = errors.into_iter().next().unwrap();
    assert_eq!(error.severity, Severity::Error);
    let span = error.span.expect("error has a span");
    assert_eq!(
        (span.start.line, span.start.column),
        (line, column),
        "{error:#?}"
    );
    error
}

/// The only command of the only stage.
fn command(source: &str) -> Command {
    let stages = ok(source);
    assert_eq!(stages.stages.len(), 1);
    stages.stages[0]
        .commands
        .last()
        .cloned()
        .expect("a command")
}

#[test]
fn from_with_platform_and_name() {
    let stages = ok("FROM --platform=$BUILDPLATFORM golang:1.22 AS Build\n");
    let from = &stages.stages[0].from;
    assert_eq!(from.image.value, "golang:1.22");
    assert_eq!(from.platform.as_ref().unwrap().value, "$BUILDPLATFORM");
    let name = from.name.as_ref().unwrap();
    assert_eq!(name.name, "build");
    assert_eq!(name.written.value, "Build");
    assert_eq!(
        (name.written.span.start.line, name.written.span.start.column),
        (1, 47)
    );
}

#[test]
fn from_argument_count_and_stage_name_rules() {
    let e = error_at("FROM a b\n", 1, 1);
    assert_eq!(e.message, "FROM requires either one or three arguments");
    let e = error_at("FROM a is b\n", 1, 8);
    assert_eq!(e.message, "FROM requires either one or three arguments");
    let e = error_at("FROM a AS 1st\n", 1, 11);
    assert_eq!(
        e.message,
        "invalid name for build stage: \"1st\", name can't start with a number or contain symbols"
    );
    assert!(e.hint.unwrap().contains("start with a letter"));
    let e = error_at("FROM a AS x\nFROM b AS X\n", 2, 11);
    assert_eq!(
        e.message,
        "Duplicate stage name \"x\", stage names should be unique"
    );
    assert!(e.hint.unwrap().contains("first used at line 1"));
    let e = error_at("FROM a AS scratch\n", 1, 11);
    assert_eq!(
        e.message,
        "Stage name should not use the same name as reserved stage \"scratch\""
    );
    let e = error_at("FROM a AS Context\n", 1, 11);
    assert_eq!(
        e.message,
        "Stage name should not use the same name as reserved stage \"context\""
    );
    ok("FROM a AS go-1.21_build.x\n");
}

#[test]
fn only_arg_before_first_from() {
    let e = error_at("ARG A\nRUN true\nFROM x\n", 2, 1);
    assert_eq!(e.message, "no build stage in current context");
    assert!(e.hint.unwrap().contains("only ARG may come before"));
    let errors = load("ARG A=1\n").unwrap_err();
    assert_eq!(errors[0].message, "dockerfile contains no stages to build");
}

#[test]
fn unknown_instruction_and_unknown_flags() {
    let e = error_at("FROM a\nRUNN true\n", 2, 1);
    assert_eq!(e.message, "unknown instruction: RUNN");
    assert_eq!(e.hint.as_deref(), Some("did you mean RUN?"));
    let e = error_at("FROM a\nCOPY --chmodd=755 a /a\n", 2, 6);
    assert_eq!(e.message, "unknown flag: --chmodd");
    let hint = e.hint.unwrap();
    assert!(hint.starts_with("did you mean --chmod?"), "{hint}");
    assert!(
        hint.contains("--from, --chown, --chmod, --link, --parents, --exclude"),
        "{hint}"
    );
    let e = error_at("FROM a\nWORKDIR --x=1 /a\n", 2, 9);
    assert_eq!(e.hint.as_deref(), Some("WORKDIR takes no flags"));
}

#[test]
fn flag_types() {
    let e = error_at("FROM a\nCOPY --link=maybe a /a\n", 2, 6);
    assert_eq!(
        e.message,
        "expecting boolean value for flag --link, not: maybe"
    );
    let e = error_at("FROM a\nCOPY --chown a /a\n", 2, 6);
    assert_eq!(e.message, "missing a value on flag: --chown");
    let e = error_at("FROM a\nCOPY --from=x --from=y a /a\n", 2, 15);
    assert_eq!(e.message, "duplicate flag specified: --from");
    match command("FROM a\nCOPY --link=FALSE --parents a /a\n") {
        Command::Copy(copy) => assert!(!copy.link && copy.parents),
        other => panic!("{other:?}"),
    }
}

#[test]
fn run_shell_exec_mounts_network_security_device() {
    let Command::Run(run) = command(
        "FROM a\nRUN --mount=type=cache,target=/root/.cache,sharing=locked --mount=type=secret,id=tok,env=TOKEN \\\n    --network=none --security=insecure --device=gpu,required go build ./...\n",
    ) else {
        panic!()
    };
    assert!(matches!(&run.command, CommandLine::Shell(t) if t.value.trim() == "go build ./..."));
    assert_eq!(run.mounts.len(), 2);
    assert_eq!(run.mounts[0].mount.kind, MountType::Cache);
    assert_eq!(run.mounts[0].mount.sharing, Some(CacheSharing::Locked));
    assert_eq!(run.mounts[1].mount.kind, MountType::Secret);
    assert_eq!(run.mounts[1].mount.env.as_deref(), Some("TOKEN"));
    assert_eq!(run.network, Some(NetworkMode::None));
    assert_eq!(run.security, Some(SecurityMode::Insecure));
    assert_eq!(run.devices[0].name, "gpu");
    assert!(run.devices[0].required);
    let Command::Run(run) = command("FROM a\nRUN [\"echo\", \"$HOME\"]\n") else {
        panic!()
    };
    assert_eq!(run.command.args(), ["echo", "$HOME"]);
}

#[test]
fn run_flag_errors() {
    let e = error_at("FROM a\nRUN --mount=type=cach,target=/x true\n", 2, 13);
    assert_eq!(
        e.message,
        "invalid --mount: unsupported mount type \"cach\""
    );
    assert!(e.hint.unwrap().contains("did you mean type=cache"));
    let e = error_at("FROM a\nRUN --network=bridge true\n", 2, 15);
    assert_eq!(e.message, "network mode \"bridge\" not supported");
    let e = error_at("FROM a\nRUN --security=privileged true\n", 2, 16);
    assert_eq!(e.message, "security \"privileged\" is not valid");
    let e = error_at("FROM a\nRUN --mount=from=$X,target=/x true\n", 2, 13);
    assert!(
        e.message
            .contains("'from' doesn't support variable expansion"),
        "{}",
        e.message
    );
}

#[test]
fn run_mounts_expand_at_build_time() {
    let Command::Run(run) =
        command("FROM a\nRUN --mount=type=cache,target=$HOME/.cache,uid=$UID true\n")
    else {
        panic!()
    };
    assert_eq!(run.mounts[0].mount.target.as_deref(), Some("$HOME/.cache"));
    let env = [("HOME", "/root"), ("UID", "1000")];
    let mount = run.mounts[0].expand(&Lexer::default(), &env).unwrap();
    assert_eq!(mount.target.as_deref(), Some("/root/.cache"));
    assert_eq!(mount.uid, Some(1000));
    let err = run.mounts[0]
        .expand(&Lexer::default(), &[("HOME", "/root"), ("UID", "x")])
        .unwrap_err();
    assert_eq!(err.message, "invalid --mount: invalid value x for uid");
}

#[test]
fn cmd_entrypoint_shell_forms() {
    assert!(
        matches!(command("FROM a\nCMD [\"a\", \"b\"]\n"), Command::Cmd(c) if c.command.is_exec())
    );
    assert!(matches!(command("FROM a\nCMD echo $HOME\n"), Command::Cmd(c) if !c.command.is_exec()));
    assert!(
        matches!(command("FROM a\nENTRYPOINT [\"/app\"]\n"), Command::Entrypoint(c) if c.command.args() == ["/app"])
    );
    // BuildKit falls back to shell form when the text is not a JSON array.
    assert!(matches!(command("FROM a\nCMD [not json]\n"), Command::Cmd(c) if !c.command.is_exec()));
}

#[test]
fn env_label_maintainer_expose_volume_user_workdir_stopsignal() {
    let Command::Env { pairs, .. } = command("FROM a\nENV A=1 B=\"two words\"\n") else {
        panic!()
    };
    assert_eq!(pairs.len(), 2);
    assert_eq!(
        (pairs[1].key.value.as_str(), pairs[1].value.value.as_str()),
        ("B", "\"two words\"")
    );
    let Command::Env { pairs, .. } = command("FROM a\nENV LEGACY some value\n") else {
        panic!()
    };
    assert_eq!(pairs[0].value.value, "some value");
    let Command::Label { pairs, .. } =
        command("FROM a\nLABEL org.opencontainers.image.title=kiln\n")
    else {
        panic!()
    };
    assert_eq!(pairs[0].key.value, "org.opencontainers.image.title");
    assert!(
        matches!(command("FROM a\nMAINTAINER Jane <j@x>\n"), Command::Maintainer { name, .. } if name.value == "Jane <j@x>")
    );
    let Command::Expose { ports, .. } = command("FROM a\nEXPOSE 80/tcp 443\n") else {
        panic!()
    };
    assert_eq!(
        ports.iter().map(|p| p.value.as_str()).collect::<Vec<_>>(),
        ["80/tcp", "443"]
    );
    let Command::Volume { paths, .. } = command("FROM a\nVOLUME [\"/data\", \"/logs\"]\n") else {
        panic!()
    };
    assert_eq!(paths.len(), 2);
    let Command::Volume { paths, .. } = command("FROM a\nVOLUME /data /logs\n") else {
        panic!()
    };
    assert_eq!(paths.len(), 2);
    assert!(
        matches!(command("FROM a\nUSER app:app\n"), Command::User { user, .. } if user.value == "app:app")
    );
    assert!(
        matches!(command("FROM a\nWORKDIR /src\n"), Command::Workdir { path, .. } if path.value == "/src")
    );
    assert!(
        matches!(command("FROM a\nSTOPSIGNAL SIGTERM\n"), Command::Stopsignal { signal, .. } if signal.value == "SIGTERM")
    );
}

#[test]
fn missing_arguments() {
    assert_eq!(
        error_at("FROM a\nEXPOSE\n", 2, 1).message,
        "EXPOSE requires at least one argument"
    );
    assert_eq!(
        error_at("FROM a\nUSER\n", 2, 1).message,
        "USER requires exactly one argument"
    );
    assert_eq!(
        error_at("FROM a\nWORKDIR\n", 2, 1).message,
        "WORKDIR requires exactly one argument"
    );
    assert_eq!(
        error_at("FROM a\nARG\n", 2, 1).message,
        "ARG requires at least one argument"
    );
    assert_eq!(
        error_at("FROM a\nARG =x\n", 2, 5).message,
        "ARG names can not be blank"
    );
    let e = error_at("FROM a\nCOPY onlyone\n", 2, 1);
    assert!(
        e.message
            .starts_with("COPY requires at least two arguments"),
        "{}",
        e.message
    );
    assert!(e.hint.unwrap().starts_with("usage: COPY"));
    assert_eq!(
        error_at("FROM a\nVOLUME [\"\"]\n", 2, 9).message,
        "VOLUME specified can not be an empty string"
    );
    assert_eq!(
        error_at("FROM a\nSHELL /bin/sh -c\n", 2, 1).message,
        "SHELL requires the arguments to be in JSON form"
    );
    assert_eq!(
        error_at("FROM a\nSHELL []\n", 2, 1).message,
        "SHELL requires at least one argument"
    );
}

#[test]
fn add_and_copy_flags() {
    let Command::Add(add) = command(
        "FROM a\nADD --chown=1:1 --chmod=644 --link --checksum=sha256:abc --keep-git-dir --exclude=*.md --exclude=x --unpack=false https://x/y.tar /d/\n",
    ) else {
        panic!()
    };
    assert_eq!(add.chown.unwrap().value, "1:1");
    assert_eq!(add.chmod.unwrap().value, "644");
    assert!(add.link && add.keep_git_dir);
    assert_eq!(add.checksum.unwrap().value, "sha256:abc");
    assert_eq!(add.exclude.len(), 2);
    assert_eq!(add.unpack, Some(false));
    assert_eq!(add.dest.value, "/d/");
    let Command::Copy(copy) = command("FROM a\nCOPY --from=build --exclude=*.tmp a b /dst/\n")
    else {
        panic!()
    };
    assert_eq!(copy.from.unwrap().value, "build");
    assert_eq!(copy.sources.len(), 2);
    let Command::Copy(copy) = command("FROM a\nCOPY [\"a b\", \"/dst\"]\n") else {
        panic!()
    };
    assert!(matches!(&copy.sources[0], Source::Path(p) if p.value == "a b"));
}

#[test]
fn heredoc_sources() {
    let Command::Copy(copy) =
        command("FROM a\nCOPY <<EOF <<-'RAW' /etc/\nhello $NAME\nEOF\n\tliteral $X\n\tRAW\n")
    else {
        panic!()
    };
    assert_eq!(copy.sources.len(), 2);
    let Source::Heredoc(first) = &copy.sources[0] else {
        panic!("{:?}", copy.sources)
    };
    assert_eq!((first.name.as_str(), first.expand), ("EOF", true));
    let Source::Heredoc(second) = &copy.sources[1] else {
        panic!()
    };
    assert!(!second.expand && second.chomp);
    let expanded = Command::Copy(copy)
        .expand(&Lexer::default(), &[("NAME", "kiln"), ("X", "no")])
        .unwrap();
    let Command::Copy(copy) = expanded.command else {
        panic!()
    };
    let Source::Heredoc(first) = &copy.sources[0] else {
        panic!()
    };
    assert_eq!(first.content, "hello kiln\n");
    let Source::Heredoc(second) = &copy.sources[1] else {
        panic!()
    };
    assert_eq!(second.text(), "literal $X\n");
    let e = error_at("FROM a\nCOPY a <<EOF\nx\nEOF\n", 2, 8);
    assert_eq!(e.message, "COPY cannot accept a heredoc as a destination");
}

#[test]
fn arg_declarations() {
    let Command::Arg { args, .. } = command("FROM a\nARG A B=2 C=\"x y\"\n") else {
        panic!()
    };
    assert_eq!(args.len(), 3);
    assert_eq!(args[0].name.value, "A");
    assert!(args[0].default.is_none());
    assert_eq!(args[1].default.as_ref().unwrap().value, "2");
    assert_eq!(
        (
            args[1].name.span.start.column,
            args[1].default.as_ref().unwrap().span.start.column
        ),
        (7, 9)
    );
    assert_eq!(args[2].default.as_ref().unwrap().value, "\"x y\"");
}

#[test]
fn onbuild_triggers() {
    let Command::Onbuild(onbuild) = command("FROM a\nONBUILD RUN echo hi\n") else {
        panic!()
    };
    assert!(matches!(*onbuild.trigger, Command::Run(_)));
    assert_eq!(onbuild.expression, "RUN echo hi");
    assert_eq!(
        error_at("FROM a\nONBUILD ONBUILD RUN x\n", 2, 9).message,
        "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"
    );
    assert_eq!(
        error_at("FROM a\nONBUILD FROM x\n", 2, 9).message,
        "FROM isn't allowed as an ONBUILD trigger"
    );
    assert_eq!(
        error_at("FROM a\nONBUILD MAINTAINER x\n", 2, 9).message,
        "MAINTAINER isn't allowed as an ONBUILD trigger"
    );
}

#[test]
fn healthcheck() {
    let Command::Healthcheck(Healthcheck::Check(check)) = command(
        "FROM a\nHEALTHCHECK --interval=1m30s --timeout=5s --start-period=0s --start-interval=500ms --retries=3 CMD curl -f http://localhost/\n",
    ) else {
        panic!()
    };
    assert_eq!(check.interval, Some(Duration::from_secs(90)));
    assert_eq!(check.timeout, Some(Duration::from_secs(5)));
    assert_eq!(check.start_period, None);
    assert_eq!(check.start_interval, Some(Duration::from_millis(500)));
    assert_eq!(check.retries, Some(3));
    assert!(!check.command.is_exec());
    assert!(matches!(
        command("FROM a\nHEALTHCHECK NONE\n"),
        Command::Healthcheck(Healthcheck::None { .. })
    ));
    assert!(
        matches!(command("FROM a\nHEALTHCHECK CMD [\"/ok\"]\n"), Command::Healthcheck(Healthcheck::Check(c)) if c.command.is_exec())
    );
    let e = error_at("FROM a\nHEALTHCHECK --interval=10 CMD x\n", 2, 24);
    assert_eq!(
        e.message,
        "--interval: time: missing unit in duration \"10\""
    );
    let e = error_at("FROM a\nHEALTHCHECK --timeout=10us CMD x\n", 2, 23);
    assert_eq!(e.message, "Interval \"timeout\" cannot be less than 1ms");
    assert_eq!(
        error_at("FROM a\nHEALTHCHECK --retries=-1 CMD x\n", 2, 23).message,
        "--retries cannot be negative (-1)"
    );
    assert_eq!(
        error_at("FROM a\nHEALTHCHECK FOO x\n", 2, 13).message,
        "Unknown type \"FOO\" in HEALTHCHECK (try CMD)"
    );
    assert_eq!(
        error_at("FROM a\nHEALTHCHECK NONE x\n", 2, 1).message,
        "HEALTHCHECK NONE takes no arguments"
    );
}

#[test]
fn expansion_follows_buildkit_per_instruction() {
    let stages = ok(concat!(
        "FROM a\n",
        "ENV $K=\"$V x\"\n",
        "COPY --from=nginx$ --chown=$U a$V /d$V/\n",
        "RUN echo $V\n",
        "CMD [\"$V\"]\n",
        "EXPOSE $PORTS\n",
        "WORKDIR /w/$V\n",
        "LABEL l=${MISSING:-dflt}\n",
    ));
    let lexer = Lexer::default();
    let env = [
        ("K", "KEY"),
        ("V", "1"),
        ("U", "app"),
        ("PORTS", "80 443/udp"),
    ];
    let expand = |c: &Command| c.expand(&lexer, &env).unwrap();
    let commands = &stages.stages[0].commands;
    let Command::Env { pairs, .. } = expand(&commands[0]).command else {
        panic!()
    };
    assert_eq!(
        (pairs[0].key.value.as_str(), pairs[0].value.value.as_str()),
        ("KEY", "1 x")
    );
    let expanded = expand(&commands[1]);
    let Command::Copy(copy) = &expanded.command else {
        panic!()
    };
    assert_eq!(
        copy.from.as_ref().unwrap().value,
        "nginx$",
        "--from is never expanded"
    );
    assert_eq!(copy.chown.as_ref().unwrap().value, "app");
    assert!(matches!(&copy.sources[0], Source::Path(p) if p.value == "a1"));
    assert_eq!(copy.dest.value, "/d1/");
    assert_eq!(expanded.used.iter().collect::<Vec<_>>(), ["U", "V"]);
    assert_eq!(
        expand(&commands[2]).command,
        commands[2],
        "RUN shell form is left to the shell"
    );
    assert_eq!(
        expand(&commands[3]).command,
        commands[3],
        "exec-form CMD is not expanded"
    );
    let Command::Expose { ports, .. } = expand(&commands[4]).command else {
        panic!()
    };
    assert_eq!(
        ports.iter().map(|p| p.value.as_str()).collect::<Vec<_>>(),
        ["80", "443/udp"]
    );
    let Command::Workdir { path, .. } = expand(&commands[5]).command else {
        panic!()
    };
    assert_eq!(path.value, "/w/1");
    let expanded = expand(&commands[6]);
    assert_eq!(expanded.unset.iter().collect::<Vec<_>>(), ["MISSING"]);
    let err = commands[5].expand(&lexer, &[("V", "")]).map(|_| ());
    assert!(err.is_ok());
    let Command::Workdir { .. } = &commands[5] else {
        panic!()
    };
    let bad = ok("FROM a\nWORKDIR ${V:?must be set}\n");
    let err = bad.stages[0].commands[0]
        .expand(&lexer, &[("X", "1")])
        .unwrap_err();
    assert_eq!(
        err.message,
        "failed to process \"${V:?must be set}\": V: must be set"
    );
    assert_eq!(err.span.unwrap().start.column, 9);
    assert!(err.hint.unwrap().contains("--build-arg V="));
}

#[test]
fn meta_args_are_scoped_to_from_lines() {
    let stages =
        ok("ARG BASE=alpine V=3\nFROM $BASE:$V\nRUN echo hi\nWORKDIR /$V\nARG V\nWORKDIR /$V\n");
    let graph = stages.resolve(&[]).unwrap();
    assert_eq!(graph.stages[0].base, Base::Image("alpine:3".into()));
    // The first WORKDIR uses V before `ARG V` re-declares it: a warning.
    assert_eq!(stages.warnings.len(), 1, "{:#?}", stages.warnings);
    let warning = &stages.warnings[0];
    assert_eq!(warning.severity, Severity::Warning);
    assert_eq!(warning.span.unwrap().start.line, 4);
    assert!(
        warning
            .message
            .starts_with("ARG V is declared before the first FROM"),
        "{}",
        warning.message
    );
    assert_eq!(
        warning.hint.as_deref(),
        Some("re-declare it inside this stage with `ARG V` before using it")
    );
    // --build-arg overrides a meta ARG default.
    let graph = stages.resolve(&[("V".into(), "3.20".into())]).unwrap();
    assert_eq!(graph.stages[0].base, Base::Image("alpine:3.20".into()));
    let errors = ok("ARG BASE\nFROM $BASE\n").resolve(&[]).unwrap_err();
    assert_eq!(errors[0].message, "base name ($BASE) should not be blank");
}

#[test]
fn stage_graph_and_references() {
    let stages = ok(concat!(
        "FROM golang AS build\n",
        "FROM build AS test\n",
        "RUN --mount=type=bind,from=build,target=/src go test\n",
        "FROM scratch AS prod\n",
        "COPY --from=0 /app /app\n",
        "COPY --from=nginx:latest /etc/nginx /etc/nginx\n",
        "COPY --from=context a /a\n",
    ));
    let graph = stages.resolve(&[]).unwrap();
    assert_eq!(graph.stages[0].base, Base::Image("golang".into()));
    assert_eq!(graph.stages[1].base, Base::Stage(0));
    assert_eq!(graph.stages[2].base, Base::Scratch);
    let kinds: Vec<DependencyKind> = graph.stages[1]
        .dependencies
        .iter()
        .map(|d| d.kind)
        .collect();
    assert_eq!(kinds, [DependencyKind::From, DependencyKind::MountFrom]);
    let refs: Vec<&Reference> = graph.stages[2]
        .dependencies
        .iter()
        .map(|d| &d.reference)
        .collect();
    assert_eq!(
        refs,
        [
            &Reference::Stage(0),
            &Reference::Image("nginx:latest".into()),
            &Reference::Context
        ]
    );
    assert_eq!(
        graph.required_stages(graph.target(Some("PROD")).unwrap()),
        [0, 2]
    );
    assert_eq!(
        graph.required_stages(graph.target(Some("test")).unwrap()),
        [0, 1]
    );
    assert_eq!(graph.target(None).unwrap(), 2);
    let e = graph.target(Some("tset")).unwrap_err();
    assert_eq!(e.message, "target stage \"tset\" could not be found");
    assert_eq!(
        e.hint.as_deref(),
        Some("did you mean test? stages are: build, test, prod")
    );
}

#[test]
fn from_refers_to_earlier_stages_only() {
    // `FROM app` before a stage named app is an image named app.
    let graph = ok("FROM app\nFROM busybox AS app\n").resolve(&[]).unwrap();
    assert_eq!(graph.stages[0].base, Base::Image("app".into()));
}

#[test]
fn bad_references_and_cycles() {
    let errors = ok("FROM a\nCOPY --from=3 x /x\n").resolve(&[]).unwrap_err();
    assert_eq!(errors[0].message, "invalid stage index 3");
    assert_eq!(errors[0].span.unwrap().start.column, 13);
    let errors = ok("FROM a AS s0\nCOPY --from=s0 x /x\n")
        .resolve(&[])
        .unwrap_err();
    assert_eq!(
        errors[0].message,
        "circular dependency detected on stage: s0"
    );
    assert_eq!(errors[0].span.unwrap().start.line, 2);
    let errors = ok("FROM a AS s0\nCOPY --from=s1 f /\nFROM a AS s1\nCOPY --from=s0 f /\n")
        .resolve(&[])
        .unwrap_err();
    assert!(
        errors[0]
            .message
            .starts_with("circular dependency detected on stage: s"),
        "{}",
        errors[0].message
    );
    // A forward reference without a cycle is refused, as in BuildKit.
    let errors = ok("FROM a AS s0\nCOPY --from=s1 f /\nFROM a AS s1\n")
        .resolve(&[])
        .unwrap_err();
    assert_eq!(
        errors[0].message,
        "cannot copy from stage \"s1\", it needs to be defined before current stage \"s0\""
    );
    assert_eq!(errors[0].span.unwrap().start.line, 2);
    let errors = ok("FROM a\nCOPY --from=1 f /\nFROM b\n")
        .resolve(&[])
        .unwrap_err();
    assert_eq!(
        errors[0].message,
        "cannot copy from stage \"stage-1\", it needs to be defined before current stage \"stage-0\""
    );
    let e = error_at("FROM a\nCOPY --from=$X f /\n", 2, 13);
    assert!(
        e.message
            .starts_with("variable expansion is not supported for --from"),
        "{}",
        e.message
    );
}

#[test]
fn escape_directive_is_used_for_expansion() {
    let stages = ok("# escape=`\nARG V=1\nFROM a:$V\nWORKDIR C:\\x`$V\n");
    assert_eq!(stages.escape, '`');
    let Command::Workdir { path, .. } = &stages.stages[0].commands[0] else {
        panic!()
    };
    let expanded = stages.stages[0].commands[0]
        .expand(&stages.lexer(), &[("V", "2")])
        .unwrap();
    let Command::Workdir { path: out, .. } = expanded.command else {
        panic!()
    };
    assert_eq!(
        (path.value.as_str(), out.value.as_str()),
        ("C:\\x`$V", "C:\\x$V")
    );
}

#[test]
fn all_errors_are_reported_not_only_the_first() {
    let errors = load("FROM a AS 9x\nRUNN x\nCOPY a\n").unwrap_err();
    assert_eq!(errors.len(), 3, "{errors:#?}");
    let lines: Vec<u32> = errors.iter().map(|e| e.span.unwrap().start.line).collect();
    assert_eq!(lines, [1, 2, 3]);
}

#[test]
fn stage_scope_follows_buildkit_arg_and_env_rules() {
    use kiln_dockerfile::shell::Env;
    use kiln_dockerfile::stages::StageScope;
    let stages = ok(concat!(
        "ARG V=meta\n",
        "FROM a\n",
        "ARG V\n",
        "ARG CLI NOVALUE\n",
        "ENV E=$V-$CLI\n",
        "ARG E=arg-wins\n",
    ));
    let build_args = vec![
        ("CLI".to_string(), "cli".to_string()),
        ("UNDECLARED".to_string(), "x".to_string()),
    ];
    let graph = stages.resolve(&build_args).unwrap();
    let base = vec![("PATH".to_string(), "/bin".to_string())];
    let mut scope = StageScope::new(&graph.meta_env, &build_args, &base);
    let lexer = stages.lexer();
    for command in &stages.stages[0].commands {
        scope.dispatch(&lexer, command).unwrap();
    }
    assert_eq!(
        scope.lookup("V"),
        Some("meta"),
        "ARG without default takes the meta ARG's value"
    );
    assert_eq!(scope.lookup("CLI"), Some("cli"));
    assert_eq!(
        scope.lookup("NOVALUE"),
        None,
        "declared without any value: unset"
    );
    assert_eq!(
        scope.lookup("UNDECLARED"),
        None,
        "build args need an ARG to be visible"
    );
    assert_eq!(
        scope.lookup("E"),
        Some("arg-wins"),
        "a later ARG overrides ENV for expansion"
    );
    let image: Vec<(&str, &str)> = scope
        .image_env()
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        image,
        [("PATH", "/bin"), ("E", "meta-cli")],
        "only ENV goes into the image"
    );
    assert!(
        scope
            .run_env()
            .iter()
            .any(|(k, v)| k == "CLI" && v == "cli"),
        "RUN sees ARGs"
    );
}

#[test]
fn onbuild_triggers_from_an_image_config() {
    use kiln_dockerfile::stages::parse_onbuild_triggers;
    let commands =
        parse_onbuild_triggers(&["RUN echo hi".to_string(), "COPY . /app".to_string()]).unwrap();
    assert!(matches!(commands[0], Command::Run(_)));
    assert!(matches!(commands[1], Command::Copy(_)));
    let err = parse_onbuild_triggers(&["FROM busybox".to_string()]).unwrap_err();
    assert_eq!(err.message, "FROM isn't allowed as an ONBUILD trigger");
    let err = parse_onbuild_triggers(&["RUN a\nRUN b".to_string()]).unwrap_err();
    assert!(
        err.message
            .starts_with("onbuild trigger should be a single expression"),
        "{}",
        err.message
    );
}

#[test]
fn chmod_is_expanded_exclude_is_not() {
    let stages = ok("FROM a\nCOPY --chmod=$MODE --exclude=$X* --chown=$U a /b\n");
    let env = [("X", "x"), ("U", "me"), ("MODE", "0755")];
    let expanded = stages.stages[0].commands[0]
        .expand(&Lexer::default(), &env)
        .unwrap();
    let Command::Copy(copy) = expanded.command else {
        panic!()
    };
    assert_eq!(copy.chown.unwrap().value, "me");
    assert_eq!(copy.exclude[0].value, "$X*");
    assert_eq!(copy.chmod.unwrap().value, "0755");
    let err = stages.stages[0].commands[0]
        .expand(&Lexer::default(), &[("MODE", "9")])
        .unwrap_err();
    assert_eq!(
        err.message,
        "invalid chmod parameter: '9'. it should be octal string and between 0 and 07777"
    );
    let e = error_at("FROM a\nCOPY --chmod=64a a /b\n", 2, 14);
    assert_eq!(
        e.message,
        "invalid chmod parameter: '64a'. it should be octal string and between 0 and 07777"
    );
}

#[test]
fn onbuild_triggers_of_a_base_stage_add_dependencies() {
    let stages = ok(concat!(
        "FROM a AS assets\n",
        "FROM a AS template\n",
        "ONBUILD COPY --from=assets /x /x\n",
        "FROM template AS app\n",
    ));
    let graph = stages.resolve(&[]).unwrap();
    // `template` itself does not run its trigger; `app` does.
    assert_eq!(graph.stages[1].stage_dependencies().len(), 0);
    let deps: Vec<(DependencyKind, &Reference)> = graph.stages[2]
        .dependencies
        .iter()
        .map(|d| (d.kind, &d.reference))
        .collect();
    assert_eq!(
        deps,
        [
            (DependencyKind::From, &Reference::Stage(1)),
            (DependencyKind::CopyFrom, &Reference::Stage(0))
        ]
    );
    assert_eq!(graph.required_stages(2), [0, 1, 2]);
}

#[test]
fn arg_defaults_are_evaluated_only_without_a_build_arg() {
    use kiln_dockerfile::shell::Env;
    use kiln_dockerfile::stages::StageScope;
    let stages = ok("FROM a\nARG REQUIRED=${MISSING:?set-REQUIRED} $NAME=1\nARG A=1 B=x$A\n");
    let lexer = stages.lexer();
    let commands = &stages.stages[0].commands;
    // Without --build-arg the default is evaluated and fails.
    let mut scope = StageScope::new(&[], &[], &[]);
    let err = scope.dispatch(&lexer, &commands[0]).unwrap_err();
    assert!(
        err.message.ends_with("MISSING: set-REQUIRED"),
        "{}",
        err.message
    );
    // With one it is not.
    let build_args = vec![("REQUIRED".to_string(), "given".to_string())];
    let mut scope = StageScope::new(&[], &build_args, &[]);
    let expanded = scope.dispatch(&lexer, &commands[0]).unwrap();
    let Command::Arg { args, .. } = &expanded.command else {
        panic!()
    };
    assert_eq!(args[1].name.value, "$NAME", "ARG names are never expanded");
    assert_eq!(scope.lookup("REQUIRED"), Some("given"));
    // One line is expanded against the scope before it.
    scope.dispatch(&lexer, &commands[1]).unwrap();
    assert_eq!(scope.lookup("B"), Some("x"));
    assert_eq!(scope.lookup("A"), Some("1"));
}

#[test]
fn automatic_platform_args_and_child_stage_args() {
    use kiln_dockerfile::shell::Env;
    use kiln_dockerfile::stages::StageScope;
    let stages =
        ok("FROM a:$TARGETOS-$TARGETARCH AS first\nARG P=parent\nFROM first AS second\nENV C=$P\n");
    let graph = stages
        .resolve(&[("TARGETARCH".into(), "arm64".into())])
        .unwrap();
    assert_eq!(
        graph.stages[0].base,
        Base::Image(format!("a:{}-arm64", std::env::consts::OS))
    );
    assert!(
        graph
            .meta_env
            .contains(&("TARGETSTAGE".to_string(), "second".to_string()))
    );
    // A child stage inherits its parent's ARGs: no warning, and P is set.
    assert!(stages.warnings.is_empty(), "{:#?}", stages.warnings);
    let lexer = stages.lexer();
    let mut parent = StageScope::new(&graph.meta_env, &[], &[]);
    for command in &stages.stages[0].commands {
        parent.dispatch(&lexer, command).unwrap();
    }
    let mut child = parent.child();
    for command in &stages.stages[1].commands {
        child.dispatch(&lexer, command).unwrap();
    }
    assert_eq!(child.lookup("C"), Some("parent"));
}

#[test]
fn healthcheck_test_arrays() {
    let test = |source: &str| match command(source) {
        Command::Healthcheck(check) => check.test(),
        other => panic!("{other:?}"),
    };
    assert_eq!(test("FROM a\nHEALTHCHECK NONE\n"), ["NONE"]);
    assert_eq!(
        test("FROM a\nHEALTHCHECK CMD [\"/ok\", \"-v\"]\n"),
        ["CMD", "/ok", "-v"]
    );
    assert_eq!(
        test("FROM a\nHEALTHCHECK --retries=2 CMD curl -f http://x/ || exit 1\n"),
        ["CMD-SHELL", "curl -f http://x/ || exit 1"]
    );
}

#[test]
fn maintainer_is_accepted_with_a_deprecation_warning() {
    let stages = ok("FROM a\nMAINTAINER Jane <j@example.com>\n");
    assert!(
        matches!(&stages.stages[0].commands[0], Command::Maintainer { name, .. } if name.value == "Jane <j@example.com>")
    );
    assert_eq!(stages.warnings.len(), 1);
    let warning = &stages.warnings[0];
    assert_eq!(warning.severity, Severity::Warning);
    assert_eq!(warning.code.as_deref(), Some("MaintainerDeprecated"));
    assert_eq!(warning.span.unwrap().start.line, 2);
}

#[test]
fn run_heredocs_become_what_buildkit_runs() {
    use kiln_dockerfile::instructions::RunInvocation;
    let run = |source: &str| match command(source) {
        Command::Run(run) => run.invocation(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        run("FROM a\nRUN echo $HOME\n"),
        RunInvocation::Shell("echo $HOME".into())
    );
    assert_eq!(
        run("FROM a\nRUN [\"a\", \"b\"]\n"),
        RunInvocation::Exec(vec!["a".into(), "b".into()])
    );
    assert_eq!(
        run("FROM a\nRUN <<EOF\necho $V\nEOF\n"),
        RunInvocation::Shell("echo $V\n".into())
    );
    assert_eq!(
        run("FROM a\nRUN <<-EOF\n\techo hi\n\tEOF\n"),
        RunInvocation::Shell("echo hi\n".into())
    );
    assert_eq!(
        run("FROM a\nRUN <<EOF\n#!/usr/bin/env python3\nprint(1)\nEOF\n"),
        RunInvocation::ScriptFile {
            name: "EOF".into(),
            content: "#!/usr/bin/env python3\nprint(1)\n".into()
        }
    );
    assert_eq!(
        run("FROM a\nRUN python3 <<EOF\nprint(1)\nEOF\n"),
        RunInvocation::Shell("python3 <<EOF\nprint(1)\nEOF".into())
    );
}

#[test]
fn expose_ports_are_checked_when_literal() {
    let e = error_at("FROM a\nEXPOSE 80 http\n", 2, 11);
    assert_eq!(e.message, "invalid containerPort: http");
    let e = error_at("FROM a\nEXPOSE 53/icmp\n", 2, 8);
    assert_eq!(e.message, "invalid proto: icmp");
    ok("FROM a\nEXPOSE 80/tcp 8000-8010/udp $PORT\n");
}
