//! `kiln build`: docker build's flags, turned into a `kiln_build::build` call,
//! with progress on stderr and the image ID (and a size report) at the end.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use kiln_build::{
    BuildError, BuildOptions, JsonProgress, NamedContext, PlainProgress, ProgressSink,
    QuietProgress, Secret,
};
use kiln_image::Reference;
use kiln_store::Store;

use super::output::human_size;

/// Arguments of `kiln build`.
#[derive(Args)]
pub struct BuildArgs {
    /// The build context directory (`-`: a tar of it, or only a Dockerfile, on stdin)
    #[arg(value_name = "CONTEXT")]
    context: PathBuf,
    /// The Dockerfile (default: CONTEXT/Dockerfile; `-` reads it from stdin)
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Option<PathBuf>,
    /// Name (and optionally tag) the image, `name:tag`; may be repeated
    #[arg(short = 't', long = "tag", value_name = "REF")]
    tags: Vec<String>,
    /// The stage to build (default: the last one)
    #[arg(long)]
    target: Option<String>,
    /// A build-time variable, `KEY=VALUE` (or `KEY` to take it from the environment)
    #[arg(long = "build-arg", value_name = "KEY[=VALUE]")]
    build_args: Vec<String>,
    /// Do not use the cache (results are still recorded)
    #[arg(long)]
    no_cache: bool,
    /// Do not use the cache for these stages (by name); may be repeated
    #[arg(long = "no-cache-filter", value_name = "STAGE")]
    no_cache_filter: Vec<String>,
    /// Progress output
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    progress: ProgressMode,
    /// Print only the image ID
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Write the image ID to this file
    #[arg(long, value_name = "FILE")]
    iidfile: Option<PathBuf>,
    /// Set metadata on the image, `KEY=VALUE`; may be repeated
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Network for RUN steps: default (the host's, as BuildKit), host, none
    #[arg(long, value_name = "MODE", default_value = "default")]
    network: String,
    /// Target platform; only the machine's own is supported yet
    #[arg(long, value_name = "PLATFORM")]
    platform: Option<String>,
    /// Always pull base images again from their registries (missing ones are pulled anyway)
    #[arg(long)]
    pull: bool,
    /// A secret for `RUN --mount=type=secret`: `id=ID,src=PATH` (a file) or
    /// `id=ID,env=VAR` (an environment variable); may be repeated
    #[arg(long = "secret", value_name = "id=ID,src=PATH|env=VAR")]
    secrets: Vec<String>,
    /// An extra named context, `NAME=PATH` or `NAME=docker-image://REF`, for
    /// `FROM NAME`, `COPY --from=NAME` and `RUN --mount=from=NAME`; may be repeated
    #[arg(long = "build-context", value_name = "NAME=PATH|docker-image://REF")]
    build_contexts: Vec<String>,
    /// Output: `type=image` (the store, default), `type=local,dest=DIR` (the
    /// final filesystem), `type=tar,dest=FILE` (the filesystem as a tar),
    /// `type=docker,dest=FILE` (docker-archive), `type=oci,dest=FILE` (OCI archive)
    #[arg(short = 'o', long = "output", value_name = "SPEC")]
    output: Option<String>,
    /// Push the image to its registry under every -t name after the build
    /// (also `-o type=image,name=REF,push=true` or `-o type=registry`)
    #[arg(long)]
    push: bool,
    /// Only run BuildKit's build checks on the Dockerfile (`kiln check`)
    #[arg(long)]
    check: bool,
}

/// Where `-o` sends the result.
enum OutputSpec {
    Image,
    Local(PathBuf),
    Tar(PathBuf),
    /// `type=docker` (docker-archive, `docker load`able) or `type=oci` (OCI archive).
    Archive {
        path: PathBuf,
        oci: bool,
    },
}

fn parse_output(spec: &str) -> Result<OutputSpec> {
    let mut kind = None;
    let mut dest = None;
    for field in spec.split(',') {
        match field.split_once('=') {
            Some(("type", value)) => kind = Some(value.to_string()),
            Some(("dest", value)) => dest = Some(PathBuf::from(value)),
            // docker's shorthand: `-o DIR` means type=local,dest=DIR.
            None if !spec.contains('=') => {
                kind = Some("local".into());
                dest = Some(PathBuf::from(field));
            }
            _ => bail!(
                "-o {spec:?}: unknown field {field:?}; use type=local,dest=DIR or type=tar,dest=FILE"
            ),
        }
    }
    match (kind.as_deref(), dest) {
        (Some("image") | None, None) => Ok(OutputSpec::Image),
        (Some("local"), Some(dest)) => Ok(OutputSpec::Local(dest)),
        (Some("tar"), Some(dest)) => Ok(OutputSpec::Tar(dest)),
        (Some("docker"), Some(path)) => Ok(OutputSpec::Archive { path, oci: false }),
        (Some("oci"), Some(path)) => Ok(OutputSpec::Archive { path, oci: true }),
        (Some(other @ ("local" | "tar" | "docker" | "oci")), None) => {
            bail!("-o type={other} needs dest=PATH")
        }
        (Some(other), _) => {
            bail!("-o type={other} is not supported; use type=image, local, tar, docker or oci")
        }
        (None, Some(_)) => bail!("-o {spec:?}: give type=local or type=tar"),
    }
}

/// `--build-context NAME=PATH` (a local directory) or
/// `NAME=docker-image://REF` (an image).
fn parse_build_context(spec: &str) -> Result<(String, NamedContext)> {
    let Some((name, value)) = spec
        .split_once('=')
        .filter(|(n, v)| !n.is_empty() && !v.is_empty())
    else {
        bail!("--build-context {spec:?}: use NAME=PATH or NAME=docker-image://REF");
    };
    if let Some(image) = value.strip_prefix("docker-image://") {
        let reference = Reference::parse(image).with_context(|| {
            format!("--build-context {name}: {image:?} is not an image reference")
        })?;
        return Ok((name.to_string(), NamedContext::Image(reference.to_string())));
    }
    if let Some((scheme, _)) = value.split_once("://") {
        bail!(
            "--build-context {name}: {scheme}:// contexts are not supported by kiln yet; use a local directory or docker-image://REF"
        );
    }
    let path = std::path::absolute(value)
        .with_context(|| format!("--build-context {name}: invalid path {value:?}"))?;
    if !path.is_dir() {
        bail!(
            "--build-context {name}: {} is not a directory",
            path.display()
        );
    }
    Ok((name.to_string(), NamedContext::Dir(path)))
}

/// `--secret` as docker build reads it: `id=ID` with `src=`/`source=PATH`
/// (type=file) or `env=VAR` (type=env); with neither, the environment
/// variable named ID if set, else the file ID.
fn parse_secret(spec: &str) -> Result<Secret> {
    let mut id = None;
    let mut kind = None;
    let mut src = None;
    let mut env = None;
    for field in spec.split(',') {
        match field.split_once('=') {
            Some(("id", value)) => id = Some(value.to_string()),
            Some(("type", value)) => kind = Some(value.to_string()),
            Some(("src" | "source", value)) => src = Some(value.to_string()),
            Some(("env", value)) => env = Some(value.to_string()),
            _ => bail!(
                "--secret {spec:?}: unknown field {field:?}; use id=ID,src=PATH or id=ID,env=VAR"
            ),
        }
    }
    let Some(id) = id.filter(|i| !i.is_empty()) else {
        bail!("--secret {spec:?}: no id; use id=ID,src=PATH or id=ID,env=VAR");
    };
    let from_env = |name: &str| -> Result<Vec<u8>> {
        std::env::var_os(name)
            .map(|v| std::os::unix::ffi::OsStrExt::as_bytes(v.as_os_str()).to_vec())
            .with_context(|| format!("--secret id={id}: environment variable {name} is not set"))
    };
    let from_file = |path: &str| -> Result<Vec<u8>> {
        std::fs::read(path).with_context(|| format!("--secret id={id}: cannot read {path}"))
    };
    let value = match (kind.as_deref(), src, env) {
        (Some("env"), src, env) => from_env(&env.or(src).unwrap_or_else(|| id.clone()))?,
        (Some("file") | None, Some(path), _) => from_file(&path)?,
        (Some("file"), None, _) => from_file(&id)?,
        (None, None, Some(name)) => from_env(&name)?,
        (None, None, None) if std::env::var_os(&id).is_some() => from_env(&id)?,
        (None, None, None) => from_file(&id)?,
        (Some(other), _, _) => {
            bail!("--secret {spec:?}: type={other} is not supported; use type=file or type=env")
        }
    };
    Ok(Secret { id, value })
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ProgressMode {
    Auto,
    Plain,
    Tty,
    Quiet,
    Rawjson,
}

pub fn run(root: &Path, mut args: BuildArgs) -> Result<ExitCode> {
    let store =
        Store::open(root).with_context(|| format!("opening the store at {}", root.display()))?;
    // `kiln build -`: standard input is a tar of the context, or else the
    // Dockerfile itself with an empty context (as `docker build -`).
    let mut stdin_context: Option<ScratchDir> = None;
    let mut stdin_dockerfile: Option<String> = None;
    if args.context.as_os_str() == "-" {
        if args.file.as_deref().is_some_and(|f| f.as_os_str() == "-") {
            bail!("the context and the Dockerfile cannot both come from standard input");
        }
        let mut input = Vec::new();
        std::io::stdin()
            .read_to_end(&mut input)
            .context("reading the build context from standard input")?;
        let dir = tempfile_dir(&store, "stdin-context")?;
        if input.get(257..262) == Some(b"ustar".as_slice()) {
            tar::Archive::new(input.as_slice())
                .unpack(&dir.0)
                .context("unpacking the build context tar from standard input")?;
        } else {
            stdin_dockerfile = Some(
                String::from_utf8(input)
                    .context("standard input is neither a tar nor a UTF-8 Dockerfile")?,
            );
        }
        args.context = dir.0.clone();
        stdin_context = Some(dir);
    }
    let dockerfile_path = args
        .file
        .clone()
        .unwrap_or_else(|| args.context.join("Dockerfile"));
    let dockerfile_text = if let Some(text) = stdin_dockerfile.take() {
        text
    } else if dockerfile_path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the Dockerfile from standard input")?;
        text
    } else {
        std::fs::read_to_string(&dockerfile_path).with_context(|| {
            format!(
                "cannot read the Dockerfile {}; give its path with -f",
                dockerfile_path.display()
            )
        })?
    };
    if args.check {
        let name = if dockerfile_path.as_os_str() == "-" {
            "<stdin>".to_string()
        } else {
            dockerfile_path.display().to_string()
        };
        return Ok(super::check::check(
            &super::dockerfile::SourceFile {
                name,
                text: dockerfile_text,
            },
            super::check::config_build_arg(&args.build_args),
        ));
    }
    // Build checks, as docker runs them with every build: reported at the
    // end, or (`# check=error=true`) failing the build before it starts.
    let (lint_warnings, lint_fails) = super::check::build_warnings(
        &dockerfile_text,
        super::check::config_build_arg(&args.build_args),
    );
    if lint_fails && !lint_warnings.is_empty() {
        eprint!("{}", super::check::summary(&lint_warnings));
        let mut rules: Vec<&str> = lint_warnings
            .iter()
            .filter_map(|d| d.code.as_deref())
            .collect();
        rules.dedup();
        eprintln!(
            "error: lint violation found for rules: {}",
            rules.join(", ")
        );
        return Ok(ExitCode::FAILURE);
    }
    let image_output = super::registry::ImageOutput::parse(args.output.as_deref(), args.push)?;
    let mut tags = Vec::new();
    for tag in args.tags.iter().chain(&image_output.names) {
        let reference = Reference::parse(tag)
            .with_context(|| format!("invalid tag {tag:?}: use name[:tag], e.g. app:1"))?;
        if reference.digest().is_some() {
            bail!("invalid tag {tag:?}: a tag cannot contain a digest");
        }
        tags.push(reference.to_string());
    }
    let build_args = args
        .build_args
        .iter()
        .filter_map(|arg| match arg.split_once('=') {
            Some((key, value)) => Some((key.to_string(), value.to_string())),
            // `--build-arg NAME` takes the value from the environment; unset means not given.
            None => std::env::var(arg).ok().map(|v| (arg.clone(), v)),
        })
        .collect();
    let network_none = match args.network.as_str() {
        "default" | "host" => false,
        "none" => true,
        other => bail!("--network {other:?}: use default, host or none"),
    };
    if let Some(platform) = &args.platform {
        let host = format!("linux/{}", kiln_store::image_ops::go_arch());
        if platform != &host {
            bail!("--platform {platform}: only this machine's platform ({host}) is supported yet");
        }
    }
    let output = match &image_output.rest {
        Some(spec) => parse_output(spec)?,
        None => OutputSpec::Image,
    };
    image_output.check(&tags, matches!(output, OutputSpec::Image))?;
    let mut labels = Vec::new();
    for label in &args.labels {
        match label.split_once('=') {
            Some((key, value)) => labels.push((key.to_string(), value.to_string())),
            None => labels.push((label.clone(), String::new())),
        }
    }
    let options = BuildOptions {
        context_dir: args.context.clone(),
        dockerfile_path,
        dockerfile_text,
        target: args.target.clone(),
        build_args,
        no_cache: args.no_cache,
        no_cache_stages: args
            .no_cache_filter
            .iter()
            .flat_map(|s| s.split(','))
            .map(str::to_string)
            .collect(),
        tags,
        labels,
        network_none,
        pull: args.pull,
        secrets: args
            .secrets
            .iter()
            .map(|spec| parse_secret(spec))
            .collect::<Result<_>>()?,
        build_contexts: args
            .build_contexts
            .iter()
            .map(|spec| parse_build_context(spec))
            .collect::<Result<_>>()?,
    };
    let quiet = args.quiet || args.progress == ProgressMode::Quiet;
    let mut plain;
    let mut silent;
    let mut json;
    let mut tty: Option<TtyProgress> = None;
    let terminal = std::io::stderr().is_terminal();
    let progress: &mut dyn ProgressSink = if quiet {
        silent = QuietProgress::new();
        &mut silent
    } else if args.progress == ProgressMode::Rawjson {
        json = JsonProgress::new(std::io::stderr());
        &mut json
    } else if terminal && matches!(args.progress, ProgressMode::Auto | ProgressMode::Tty) {
        tty.insert(TtyProgress::new())
    } else {
        // Not a terminal (or --progress=plain): BuildKit's plain lines.
        plain = PlainProgress::new(std::io::stderr());
        &mut plain
    };
    let started = std::time::Instant::now();
    let result = kiln_build::build(&store, &options, progress);
    // The live view ends before the report and errors are printed below it.
    if let Some(view) = &tty {
        view.header.finish();
    }
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(BuildError::Step {
            rendered,
            exit_code,
        }) => {
            eprintln!("{rendered}");
            eprintln!(
                "error: build failed{}",
                exit_code.map_or(String::new(), |c| format!(" (exit code {c})"))
            );
            return Ok(ExitCode::FAILURE);
        }
        Err(BuildError::Dockerfile { rendered }) => {
            eprintln!("{rendered}");
            return Ok(ExitCode::FAILURE);
        }
        Err(other) => return Err(other.into()),
    };
    match &output {
        OutputSpec::Image | OutputSpec::Archive { .. } => {}
        OutputSpec::Local(dir) => kiln_build::export_filesystem(&store, &outcome.manifest, dir)
            .with_context(|| format!("exporting the filesystem to {}", dir.display()))?,
        OutputSpec::Tar(file) => {
            let staging = tempfile_dir(&store, "export")?;
            kiln_build::export_filesystem(&store, &outcome.manifest, &staging.0)?;
            let out = std::fs::File::create(file)
                .with_context(|| format!("creating {}", file.display()))?;
            kiln_snapshot::create_layer(
                &staging.0,
                kiln_snapshot::DiffKind::Directory,
                std::io::BufWriter::new(out),
                &kiln_snapshot::CreateOptions::default(),
            )
            .with_context(|| format!("writing {}", file.display()))?;
        }
    }
    if let OutputSpec::Archive { path, oci } = &output {
        let manifest_digest = kiln_image::digest::parse_sha256(&outcome.manifest.to_string())?;
        let names = options
            .tags
            .iter()
            .filter_map(|t| Reference::parse(t).ok())
            .collect();
        let exports = [kiln_image::archive::ExportImage {
            manifest_digest,
            names,
        }];
        let file =
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let out = std::io::BufWriter::new(file);
        let mut out = if *oci {
            kiln_image::archive::write_oci_archive(out, &store, &exports)?
        } else {
            kiln_image::archive::write_docker_archive(out, &store, &exports, &Default::default())?
        };
        out.flush()
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let id = outcome.config.to_string();
    if let Some(path) = &args.iidfile {
        std::fs::write(path, &id)
            .with_context(|| format!("writing --iidfile {}", path.display()))?;
    }
    if image_output.push {
        super::registry::push_built(&store, &options.tags, quiet)?;
    }
    if quiet {
        println!("{id}");
        return Ok(ExitCode::SUCCESS);
    }
    let mut err = std::io::stderr().lock();
    if !lint_warnings.is_empty() {
        let _ = write!(err, "{}", super::check::summary(&lint_warnings));
    }
    let _ = writeln!(err, "writing image {id} done");
    for tag in &options.tags {
        let _ = writeln!(err, "naming to {tag} done");
    }
    let _ = writeln!(
        err,
        "built in {:.2}s: {} steps run, {} cached",
        started.elapsed().as_secs_f64(),
        outcome.executed_steps,
        outcome.cached_steps
    );
    let _ = writeln!(err, "image size: {}", human_size(outcome.size));
    for stage in &outcome.stages {
        let _ = writeln!(err, "  stage {}: {}", stage.name, human_size(stage.size));
    }
    // What multi-stage saved: the final image against the largest stage it
    // copies from (as the seeds' "812 MB -> 18 MB (97.8% saved)").
    if let Some(largest) = outcome
        .stages
        .iter()
        .filter(|s| outcome.copied_from.contains(&s.name))
        .map(|s| s.size)
        .max()
        && largest > outcome.size
        && largest > 0
    {
        let saved = 100.0 * (largest - outcome.size) as f64 / largest as f64;
        let _ = writeln!(
            err,
            "multi-stage: {} -> {} ({saved:.1}% saved)",
            human_size(largest),
            human_size(outcome.size)
        );
    }
    println!("{id}");
    drop(stdin_context);
    Ok(ExitCode::SUCCESS)
}

/// `--progress=tty`: a live view on the terminal like BuildKit's: a header
/// with the elapsed time and the steps done, a line per step (a spinner and
/// the command's latest output line while it runs; its time, CACHED or ERROR
/// once finished).
struct TtyProgress {
    multi: indicatif::MultiProgress,
    header: indicatif::ProgressBar,
    steps: std::collections::HashMap<usize, (String, indicatif::ProgressBar)>,
    next: usize,
    finished: usize,
}

impl TtyProgress {
    fn new() -> Self {
        let multi = indicatif::MultiProgress::with_draw_target(
            indicatif::ProgressDrawTarget::stderr_with_hz(10),
        );
        let header = multi.add(indicatif::ProgressBar::new_spinner());
        header.set_style(Self::style("[+] Building {elapsed_precise} {msg}"));
        header.enable_steady_tick(std::time::Duration::from_millis(100));
        TtyProgress {
            multi,
            header,
            steps: std::collections::HashMap::new(),
            next: 0,
            finished: 0,
        }
    }

    fn style(template: &str) -> indicatif::ProgressStyle {
        indicatif::ProgressStyle::with_template(template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner())
    }

    fn update_header(&self) {
        self.header
            .set_message(format!("({}/{})", self.finished, self.next));
    }

    fn finish(&mut self, id: usize, line: String) {
        if let Some((_, bar)) = self.steps.remove(&id) {
            bar.set_style(Self::style("{wide_msg}"));
            bar.finish_with_message(line);
        }
        self.finished += 1;
        self.update_header();
    }
}

impl ProgressSink for TtyProgress {
    fn start(&mut self, name: &str) -> usize {
        self.next += 1;
        let bar = self.multi.add(indicatif::ProgressBar::new_spinner());
        bar.set_style(Self::style(" {spinner} {wide_msg} {elapsed:>4}"));
        bar.set_message(name.to_string());
        bar.enable_steady_tick(std::time::Duration::from_millis(100));
        self.steps.insert(self.next, (name.to_string(), bar));
        self.update_header();
        self.next
    }

    fn log(&mut self, id: usize, bytes: &[u8]) {
        let text = String::from_utf8_lossy(bytes);
        let Some(last) = text.lines().rev().find(|l| !l.trim().is_empty()) else {
            return;
        };
        if let Some((name, bar)) = self.steps.get(&id) {
            bar.set_message(format!("{name}  | {}", last.trim_end()));
        }
    }

    fn cached(&mut self, id: usize) {
        let name = self
            .steps
            .get(&id)
            .map(|(n, _)| n.clone())
            .unwrap_or_default();
        self.finish(id, format!(" => CACHED {name}"));
    }

    fn done(&mut self, id: usize, elapsed: std::time::Duration) {
        let name = self
            .steps
            .get(&id)
            .map(|(n, _)| n.clone())
            .unwrap_or_default();
        self.finish(id, format!(" => {name}  {:.1}s", elapsed.as_secs_f64()));
    }

    fn error(&mut self, id: usize, message: &str) {
        let name = self
            .steps
            .get(&id)
            .map(|(n, _)| n.clone())
            .unwrap_or_default();
        self.finish(id, format!(" => ERROR {name}: {message}"));
    }

    fn note(&mut self, line: &str) {
        let _ = self.multi.println(line);
    }
}

/// A scratch directory under the store root, removed when dropped.
struct ScratchDir(PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Under this process's own temp dir in the store, which gc leaves alone
/// while the process lives.
fn tempfile_dir(store: &Store, what: &str) -> Result<ScratchDir> {
    let path = store.tmp_dir().join(format!("build-{what}"));
    std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
    Ok(ScratchDir(path))
}
