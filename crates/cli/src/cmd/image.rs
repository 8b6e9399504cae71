//! The image verbs: `kiln import`, `images`, `inspect`, `history`, `tag`,
//! `rmi`, `save`, `load` and `image prune`, with docker's flags and output
//! shapes. The work is done by kiln-store (and kiln-image for archives); this
//! module parses arguments, resolves names and renders.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand, ValueEnum};
use kiln_image::Reference;
use kiln_store::image_ops::{self, ImportOptions, LeasedBlobs};
use kiln_store::{Digest, ImageRecord, Store};
use serde::Serialize;
use serde_json::{Value, json};

use super::output::{ellipsis, human_size, table, time_ago};

/// Top-level image verbs (flattened into `kiln <verb>`).
#[derive(Subcommand)]
pub enum ImageVerb {
    /// Import a root filesystem tarball (FILE or - for stdin) as a one-layer image
    Import(ImportArgs),
    /// List images
    Images(ImagesArgs),
    /// Show low-level information on images as JSON
    Inspect(InspectArgs),
    /// Show the history of an image
    History(HistoryArgs),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE
    Tag(TagArgs),
    /// Remove one or more images
    Rmi(RmiArgs),
    /// Save one or more images to a tar archive (docker-archive by default)
    Save(SaveArgs),
    /// Load images from a tar archive (docker-archive or OCI layout) or stdin
    Load(LoadArgs),
    /// Manage images
    #[command(subcommand)]
    Image(ImageCommand),
}

/// `kiln image ...`
#[derive(Subcommand)]
pub enum ImageCommand {
    /// Remove unused images
    Prune(PruneArgs),
    /// List images
    #[command(alias = "list")]
    Ls(ImagesArgs),
    /// Remove one or more images
    #[command(alias = "remove")]
    Rm(RmiArgs),
    /// Display detailed information on one or more images
    Inspect(InspectArgs),
    /// Show the history of an image
    History(HistoryArgs),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE
    Tag(TagArgs),
    /// Import a root filesystem tarball as an image
    Import(ImportArgs),
    /// Save images to a tar archive
    Save(SaveArgs),
    /// Load images from a tar archive or stdin
    Load(LoadArgs),
}

#[derive(Args)]
pub struct ImportArgs {
    /// Tarball of a root filesystem (plain, gzip or zstd), or - for stdin
    pub file: String,
    /// Name for the image, e.g. `busybox` or `registry:5000/team/app:1`
    pub reference: Option<String>,
    /// Apply a Dockerfile instruction to the image config (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, USER, VOLUME, WORKDIR)
    #[arg(short = 'c', long = "change")]
    pub changes: Vec<String>,
    /// Commit message recorded in the image's history
    #[arg(short = 'm', long)]
    pub message: Option<String>,
}

#[derive(Clone, Copy, ValueEnum, Default)]
pub enum ListFormat {
    #[default]
    Table,
    Json,
}

#[derive(Args)]
pub struct ImagesArgs {
    /// Only images of this repository (and tag)
    pub repository: Option<String>,
    /// Show all images (kiln keeps no intermediate images, so the same as without)
    #[arg(short, long)]
    pub all: bool,
    /// Filter: dangling=true|false, reference=PATTERN (e.g. 'busy*:*'), label=KEY[=VALUE]
    #[arg(short, long = "filter")]
    pub filters: Vec<String>,
    /// Only show image IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// Show digests
    #[arg(long)]
    pub digests: bool,
    /// Don't truncate output
    #[arg(long)]
    pub no_trunc: bool,
    /// Output format: table, json, or a Go-style template such as
    /// '{{.Repository}}:{{.Tag}}' ('table ...' adds headers and aligns columns)
    #[arg(long, default_value = "table")]
    pub format: String,
}

#[derive(Args)]
pub struct InspectArgs {
    /// Containers or images (names or IDs)
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Only this kind of object: container or image (`kiln inspect`; docker
    /// looks at containers first, then images)
    #[arg(long = "type", value_name = "TYPE")]
    pub kind: Option<String>,
}

#[derive(Args)]
pub struct HistoryArgs {
    /// Image (name or ID)
    pub image: String,
    /// Don't truncate output
    #[arg(long)]
    pub no_trunc: bool,
    /// Only show image IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// Print sizes and dates in human readable format
    #[arg(short = 'H', long, default_value_t = true, action = clap::ArgAction::Set)]
    pub human: bool,
}

#[derive(Args)]
pub struct TagArgs {
    pub source: String,
    pub target: String,
}

#[derive(Args)]
pub struct RmiArgs {
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Force removal: untag an image with several names, remove one in use
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Clone, Copy, ValueEnum, Default, PartialEq, Eq)]
pub enum SaveFormat {
    /// `docker save` format (also an OCI layout)
    #[default]
    Docker,
    /// OCI image layout tar
    Oci,
}

#[derive(Args)]
pub struct SaveArgs {
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Write to a file instead of stdout
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Archive format
    #[arg(long, value_enum, default_value = "docker")]
    pub format: SaveFormat,
}

#[derive(Args)]
pub struct LoadArgs {
    /// Read from a tar archive file instead of stdin
    #[arg(short, long)]
    pub input: Option<PathBuf>,
    /// Suppress the load output
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Args)]
pub struct PruneArgs {
    /// Remove all images not in use, not just dangling ones
    #[arg(short, long)]
    pub all: bool,
    /// Do not prompt for confirmation
    #[arg(short, long)]
    pub force: bool,
}

/// Opens the store at `root`, saying where and what to do on failure.
pub fn open_store(root: &Path) -> Result<Store> {
    Store::open(root).with_context(|| {
        format!(
            "opening the kiln store at {} (choose another with --root or KILN_ROOT)",
            root.display()
        )
    })
}

pub fn run(root: &Path, verb: ImageVerb) -> Result<ExitCode> {
    quiet_broken_pipe(dispatch(root, verb))
}

/// `kiln images | head -1` closing the pipe early is not an error.
pub fn quiet_broken_pipe(result: Result<ExitCode>) -> Result<ExitCode> {
    match result {
        Err(err)
            if err.chain().any(|cause| {
                cause
                    .downcast_ref::<io::Error>()
                    .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
            }) =>
        {
            Ok(ExitCode::SUCCESS)
        }
        other => other,
    }
}

fn dispatch(root: &Path, verb: ImageVerb) -> Result<ExitCode> {
    match verb {
        ImageVerb::Import(a) => import(root, a),
        ImageVerb::Images(a) => images(root, a),
        ImageVerb::Inspect(a) => inspect(root, a, false),
        ImageVerb::History(a) => history(root, a),
        ImageVerb::Tag(a) => tag(root, a),
        ImageVerb::Rmi(a) => rmi(root, a),
        ImageVerb::Save(a) => save(root, a),
        ImageVerb::Load(a) => load(root, a),
        ImageVerb::Image(c) => match c {
            ImageCommand::Prune(a) => prune(root, a),
            ImageCommand::Ls(a) => images(root, a),
            ImageCommand::Rm(a) => rmi(root, a),
            ImageCommand::Inspect(a) => inspect(root, a, true),
            ImageCommand::History(a) => history(root, a),
            ImageCommand::Tag(a) => tag(root, a),
            ImageCommand::Import(a) => import(root, a),
            ImageCommand::Save(a) => save(root, a),
            ImageCommand::Load(a) => load(root, a),
        },
    }
}

/// Parses a name for an image being created (tag/import target).
fn parse_target(text: &str) -> Result<Reference> {
    let reference =
        Reference::parse(text).with_context(|| format!("invalid reference format {text:?}"))?;
    if reference.digest().is_some() {
        bail!("refusing to create a reference with a digest: {text:?}; give NAME[:TAG]");
    }
    Ok(reference)
}

/// What an argument naming an image resolved to.
struct Resolved {
    image: ImageRecord,
    /// The name used, when the argument was a name (not an ID).
    name: Option<Reference>,
}

/// Resolves a name (`busybox`, `busybox:1`, `name@sha256:...`) or an ID
/// (full or short, with or without `sha256:`) as docker does.
fn resolve(store: &Store, text: &str) -> Result<Resolved> {
    if let Ok(reference) = Reference::parse(text) {
        if let Some(manifest) = store.resolve_ref(&reference.to_string())?
            && let Some(image) = store.image(&manifest)?
        {
            return Ok(Resolved {
                image,
                name: Some(reference),
            });
        }
        if let Some(digest) = reference.digest() {
            let digest = Digest::parse(digest.as_ref())?;
            if let Some(image) = store.image(&digest)?
                && image
                    .refs
                    .iter()
                    .any(|r| Reference::parse(r).is_ok_and(|r| r.name() == reference.name()))
            {
                return Ok(Resolved { image, name: None });
            }
        }
    }
    let id = text.strip_prefix("sha256:").unwrap_or(text);
    if !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        let mut found = store.find_images_by_id_prefix(id)?;
        // Prefer config-id matches (docker's image ID) over manifest matches.
        let by_config: Vec<ImageRecord> = found
            .iter()
            .filter(|i| i.config.hex().starts_with(id))
            .cloned()
            .collect();
        if !by_config.is_empty() {
            found = by_config;
        }
        let configs: HashSet<&Digest> = found.iter().map(|i| &i.config).collect();
        match (found.len(), configs.len()) {
            (0, _) => {}
            (1, _) | (_, 1) => {
                if let Some(image) = found.into_iter().next() {
                    return Ok(Resolved { image, name: None });
                }
            }
            _ => bail!(
                "image ID {text:?} is ambiguous: it matches {} images; give more characters",
                found.len()
            ),
        }
    }
    bail!("No such image: {text} (see `kiln images`; import one with `kiln import` or `kiln load`)")
}

fn familiar(name: &str) -> String {
    Reference::parse(name)
        .map(|r| r.familiar())
        .unwrap_or_else(|_| name.to_string())
}

fn created_secs(image: &ImageRecord) -> Option<i64> {
    image
        .created
        .as_deref()
        .and_then(kiln_store::time::parse_rfc3339)
}

fn import(root: &Path, args: ImportArgs) -> Result<ExitCode> {
    let target = args.reference.as_deref().map(parse_target).transpose()?;
    let store = open_store(root)?;
    let lease = store.lease();
    let options = ImportOptions {
        changes: args.changes,
        message: args.message,
    };
    let manifest = if args.file == "-" {
        image_ops::import_rootfs(
            &store,
            &lease,
            BufReader::with_capacity(1 << 20, io::stdin()),
            "stdin",
            &options,
        )
        .context("importing from stdin")?
    } else {
        let file = File::open(&args.file).with_context(|| {
            format!(
                "opening {} to import (give a rootfs tarball or -)",
                args.file
            )
        })?;
        image_ops::import_rootfs(
            &store,
            &lease,
            BufReader::with_capacity(1 << 20, file),
            &args.file,
            &options,
        )
        .with_context(|| format!("importing {}", args.file))?
    };
    if let Some(target) = &target {
        store.set_ref(&target.to_string(), &manifest)?;
    }
    let image = store
        .image(&manifest)?
        .ok_or_else(|| anyhow!("imported image {manifest} vanished from the store"))?;
    println!("{}", image.config);
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ImageListJson {
    containers: String,
    created_at: String,
    created_since: String,
    digest: String,
    #[serde(rename = "ID")]
    id: String,
    repository: String,
    shared_size: String,
    size: String,
    tag: String,
    unique_size: String,
    virtual_size: String,
}

fn images(root: &Path, args: ImagesArgs) -> Result<ExitCode> {
    let store = open_store(root)?;
    let filter = args
        .repository
        .as_deref()
        .map(|text| {
            Reference::parse_named(text)
                .with_context(|| format!("invalid reference format {text:?}"))
        })
        .transpose()?;
    let mut list = store.list_images()?;
    list.sort_by_key(|i| std::cmp::Reverse(created_secs(i).unwrap_or(i.added_at)));
    // (repository, tag, image)
    let mut rows: Vec<(String, String, &ImageRecord)> = Vec::new();
    for image in &list {
        let mut named = false;
        for name in &image.refs {
            let Ok(reference) = Reference::parse(name) else {
                continue;
            };
            if let Some(filter) = &filter
                && (filter.name() != reference.name()
                    || filter.tag().is_some_and(|t| Some(t) != reference.tag()))
            {
                continue;
            }
            named = true;
            rows.push((
                reference.familiar_name(),
                reference.tag().unwrap_or("<none>").to_string(),
                image,
            ));
        }
        if !named && image.refs.is_empty() && filter.is_none() {
            rows.push(("<none>".into(), "<none>".into(), image));
        }
    }
    for spec in &args.filters {
        let (key, value) = spec.split_once('=').unwrap_or((spec.as_str(), ""));
        match key {
            "dangling" => {
                let dangling = match value {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => bail!("invalid filter {spec:?}: dangling takes true or false"),
                };
                rows.retain(|(repository, _, _)| (repository == "<none>") == dangling);
            }
            "reference" => rows.retain(|(repository, tag, _)| {
                repository != "<none>"
                    && (glob_match(value, &format!("{repository}:{tag}"))
                        || glob_match(value, repository))
            }),
            "label" => {
                let (label, wanted) = match value.split_once('=') {
                    Some((k, v)) => (k, Some(v)),
                    None => (value, None),
                };
                let mut keep = HashSet::new();
                for (_, _, image) in &rows {
                    let config = read_config(&store, image)?;
                    let found = config
                        .get("config")
                        .and_then(|c| c.get("Labels"))
                        .and_then(|l| l.get(label));
                    if found.is_some_and(|v| wanted.is_none_or(|w| v.as_str() == Some(w))) {
                        keep.insert(image.manifest.clone());
                    }
                }
                rows.retain(|(_, _, image)| keep.contains(&image.manifest));
            }
            _ => bail!("invalid filter {key:?}: kiln supports dangling, reference and label"),
        }
    }
    let id_of = |image: &ImageRecord| {
        if args.no_trunc {
            image.config.to_string()
        } else {
            image.config.short().to_string()
        }
    };
    let mut out = io::stdout().lock();
    if args.quiet {
        let mut seen = HashSet::new();
        for (_, _, image) in &rows {
            if seen.insert(&image.config) {
                writeln!(out, "{}", id_of(image))?;
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let list_json = |repository: &String, tag: &String, image: &ImageRecord| {
        let created = created_secs(image);
        ImageListJson {
            containers: "N/A".into(),
            created_at: image.created.clone().unwrap_or_default(),
            created_since: created.map(time_ago).unwrap_or_else(|| "N/A".into()),
            digest: "<none>".into(),
            id: id_of(image),
            repository: repository.clone(),
            shared_size: "N/A".into(),
            size: human_size(image.size),
            tag: tag.clone(),
            unique_size: "N/A".into(),
            virtual_size: human_size(image.size),
        }
    };
    let format = match args.format.as_str() {
        "table" => ListFormat::Table,
        "json" => ListFormat::Json,
        template => {
            let (with_header, body) = match template.strip_prefix("table") {
                Some(rest) if rest.is_empty() || rest.starts_with(char::is_whitespace) => {
                    (true, rest.trim())
                }
                _ => (false, template),
            };
            let mut lines = Vec::new();
            if with_header {
                lines.push(render_template(body, &json!({}), true)?);
            }
            for (repository, tag, image) in &rows {
                let value = serde_json::to_value(list_json(repository, tag, image))?;
                lines.push(render_template(body, &value, false)?);
            }
            if with_header {
                let cells: Vec<Vec<String>> = lines
                    .iter()
                    .map(|l| l.split('\t').map(String::from).collect())
                    .collect();
                write!(out, "{}", table(&cells))?;
            } else {
                for line in lines {
                    writeln!(out, "{line}")?;
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
    };
    match format {
        ListFormat::Json => {
            for (repository, tag, image) in &rows {
                let created = created_secs(image);
                let line = ImageListJson {
                    containers: "N/A".into(),
                    created_at: image.created.clone().unwrap_or_default(),
                    created_since: created.map(time_ago).unwrap_or_else(|| "N/A".into()),
                    digest: "<none>".into(),
                    id: id_of(image),
                    repository: repository.clone(),
                    shared_size: "N/A".into(),
                    size: human_size(image.size),
                    tag: tag.clone(),
                    unique_size: "N/A".into(),
                    virtual_size: human_size(image.size),
                };
                writeln!(out, "{}", serde_json::to_string(&line)?)?;
            }
        }
        ListFormat::Table => {
            let mut header = vec!["REPOSITORY", "TAG"];
            if args.digests {
                header.push("DIGEST");
            }
            header.extend(["IMAGE ID", "CREATED", "SIZE"]);
            let mut table_rows = vec![header.into_iter().map(String::from).collect::<Vec<_>>()];
            for (repository, tag, image) in &rows {
                let mut row = vec![repository.clone(), tag.clone()];
                if args.digests {
                    row.push("<none>".into());
                }
                row.push(id_of(image));
                row.push(
                    created_secs(image)
                        .map(time_ago)
                        .unwrap_or_else(|| "N/A".into()),
                );
                row.push(human_size(image.size));
                table_rows.push(row);
            }
            write!(out, "{}", table(&table_rows))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Go's `path.Match` subset docker uses for `reference=` filters: `*` matches
/// any run of characters except `/`, `?` one such character.
fn glob_match(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    // matches[i][j]: pattern[..i] matches text[..j]
    let mut matches = vec![vec![false; text.len() + 1]; pattern.len() + 1];
    matches[0][0] = true;
    for (i, p) in pattern.iter().enumerate() {
        for j in 0..=text.len() {
            let here = match p {
                '*' => matches[i][j] || (j > 0 && matches[i + 1][j - 1] && text[j - 1] != '/'),
                '?' => j > 0 && matches[i][j - 1] && text[j - 1] != '/',
                c => j > 0 && matches[i][j - 1] && text[j - 1] == *c,
            };
            matches[i + 1][j] = here;
        }
    }
    matches[pattern.len()][text.len()]
}

/// Renders docker's `--format` templates for one row: `{{.Field}}`,
/// `{{json .}}`, `{{json .Field}}`, with `\t`/`\n` escapes as the docker CLI
/// replaces them. With `header`, each field renders as its column title.
fn render_template(template: &str, row: &Value, header: bool) -> Result<String> {
    let template = template.replace("\\t", "\t").replace("\\n", "\n");
    let mut out = String::new();
    let mut rest = template.as_str();
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| anyhow!("template {template:?}: unclosed action (missing }}}})"))?;
        let action = after[..end].trim();
        rest = &after[end + 2..];
        let (json_wanted, path) = match action.strip_prefix("json") {
            Some(p) if p.starts_with(char::is_whitespace) => (true, p.trim()),
            _ => (false, action),
        };
        let field = path
            .strip_prefix('.')
            .ok_or_else(|| anyhow!("template {template:?}: unsupported action {{{{{action}}}}}; use {{{{.Field}}}} or {{{{json .}}}}"))?;
        if header {
            out.push_str(&column_title(field));
            continue;
        }
        let value = if field.is_empty() {
            row.clone()
        } else {
            row.get(field).cloned().ok_or_else(|| {
                anyhow!("template {template:?}: can't evaluate field {field} (fields: ID, Repository, Tag, Digest, CreatedAt, CreatedSince, Size)")
            })?
        };
        match (&value, json_wanted) {
            (Value::String(text), false) => out.push_str(text),
            (other, _) => out.push_str(&serde_json::to_string(other)?),
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// docker's column titles for `--format 'table ...'`.
fn column_title(field: &str) -> String {
    match field {
        "ID" => "IMAGE ID".into(),
        "CreatedSince" => "CREATED".into(),
        "CreatedAt" => "CREATED AT".into(),
        "VirtualSize" => "VIRTUAL SIZE".into(),
        "SharedSize" => "SHARED SIZE".into(),
        "UniqueSize" => "UNIQUE SIZE".into(),
        other => other.to_ascii_uppercase(),
    }
}

/// docker's container `Config` shape: every field present, in docker's order.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DockerConfig {
    hostname: Value,
    domainname: Value,
    user: Value,
    attach_stdin: bool,
    attach_stdout: bool,
    attach_stderr: bool,
    #[serde(skip_serializing_if = "Value::is_null")]
    exposed_ports: Value,
    tty: bool,
    open_stdin: bool,
    stdin_once: bool,
    env: Value,
    cmd: Value,
    #[serde(skip_serializing_if = "Value::is_null")]
    healthcheck: Value,
    #[serde(skip_serializing_if = "Value::is_null")]
    args_escaped: Value,
    image: Value,
    volumes: Value,
    working_dir: Value,
    entrypoint: Value,
    on_build: Value,
    labels: Value,
    #[serde(skip_serializing_if = "Value::is_null")]
    stop_signal: Value,
    #[serde(skip_serializing_if = "Value::is_null")]
    shell: Value,
}

impl DockerConfig {
    fn from_json(config: Option<&Value>) -> Self {
        let get = |key: &str| {
            config
                .and_then(|c| c.get(key))
                .cloned()
                .unwrap_or(Value::Null)
        };
        let text = |key: &str| match get(key) {
            Value::Null => json!(""),
            other => other,
        };
        let flag = |key: &str| get(key).as_bool().unwrap_or(false);
        DockerConfig {
            hostname: text("Hostname"),
            domainname: text("Domainname"),
            user: text("User"),
            attach_stdin: flag("AttachStdin"),
            attach_stdout: flag("AttachStdout"),
            attach_stderr: flag("AttachStderr"),
            exposed_ports: get("ExposedPorts"),
            tty: flag("Tty"),
            open_stdin: flag("OpenStdin"),
            stdin_once: flag("StdinOnce"),
            env: get("Env"),
            cmd: get("Cmd"),
            healthcheck: get("Healthcheck"),
            args_escaped: get("ArgsEscaped"),
            image: text("Image"),
            volumes: get("Volumes"),
            working_dir: text("WorkingDir"),
            entrypoint: get("Entrypoint"),
            on_build: get("OnBuild"),
            labels: get("Labels"),
            stop_signal: get("StopSignal"),
            shell: get("Shell"),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct GraphDriver {
    data: Value,
    name: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RootFs {
    #[serde(rename = "Type")]
    kind: String,
    layers: Vec<String>,
}

/// `docker image inspect` shape.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DockerInspect {
    id: String,
    repo_tags: Vec<String>,
    repo_digests: Vec<String>,
    parent: String,
    comment: String,
    created: String,
    container: String,
    container_config: DockerConfig,
    docker_version: String,
    author: String,
    config: DockerConfig,
    architecture: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    variant: String,
    os: String,
    size: u64,
    virtual_size: u64,
    graph_driver: GraphDriver,
    #[serde(rename = "RootFS")]
    rootfs: RootFs,
    metadata: Value,
}

fn read_config(store: &Store, image: &ImageRecord) -> Result<Value> {
    let bytes = store
        .read_blob(&image.config)
        .with_context(|| format!("reading the config of image {}", image.config))?;
    serde_json::from_slice(&bytes)
        .with_context(|| format!("image config {} is not JSON", image.config))
}

fn inspect_one(store: &Store, image: &ImageRecord) -> Result<DockerInspect> {
    let config = read_config(store, image)?;
    let text = |key: &str| {
        config
            .get(key)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    let layers = image
        .layers
        .iter()
        .map(|l| l.layer.diff_id.to_string())
        .collect();
    let lowers: Vec<String> = image
        .layers
        .iter()
        .rev()
        .map(|l| store.snapshot_path(&l.chain_id).display().to_string())
        .collect();
    Ok(DockerInspect {
        id: image.config.to_string(),
        repo_tags: image.refs.iter().map(|r| familiar(r)).collect(),
        repo_digests: Vec::new(),
        parent: String::new(),
        // As moby: an image without its own comment shows its last history entry's.
        comment: match text("comment") {
            own if !own.is_empty() => own,
            _ => config
                .get("history")
                .and_then(|h| h.as_array())
                .and_then(|h| h.last())
                .and_then(|e| e.get("comment"))
                .and_then(|c| c.as_str())
                .unwrap_or("")
                .to_string(),
        },
        created: text("created"),
        container: text("container"),
        container_config: DockerConfig::from_json(config.get("container_config")),
        docker_version: text("docker_version"),
        author: text("author"),
        config: DockerConfig::from_json(config.get("config")),
        architecture: text("architecture"),
        variant: text("variant"),
        os: text("os"),
        size: image.size,
        virtual_size: image.size,
        graph_driver: GraphDriver {
            data: json!({ "LowerDir": lowers.join(":") }),
            name: "overlay".into(),
        },
        rootfs: RootFs {
            kind: "layers".into(),
            layers,
        },
        metadata: json!({ "LastTagTime": "0001-01-01T00:00:00Z" }),
    })
}

fn print_json_docker<T: Serialize>(value: &T) -> Result<()> {
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    value.serialize(&mut serializer)?;
    out.push(b'\n');
    io::stdout().lock().write_all(&out)?;
    Ok(())
}

/// One `kiln inspect` result: a container or an image.
#[derive(Serialize)]
#[serde(untagged)]
enum Inspected {
    Image(Box<DockerInspect>),
    Container(Value),
}

/// `kiln inspect` (containers first, then images, as docker's autodetect)
/// or, with `images_only`, `kiln image inspect`.
fn inspect(root: &Path, args: InspectArgs, images_only: bool) -> Result<ExitCode> {
    let (containers, images) = match (images_only, args.kind.as_deref()) {
        (true, None) => (false, true),
        (true, Some(_)) => bail!("unknown flag: --type (only `kiln inspect` takes it)"),
        (false, None) => (true, true),
        (false, Some("container")) => (true, false),
        (false, Some("image")) => (false, true),
        (false, Some(other)) => {
            bail!("\"{other}\" is not a valid value for --type: use container or image")
        }
    };
    let store = open_store(root)?;
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for text in &args.images {
        if containers && let Some(container) = super::run::inspect_container(root, text) {
            found.push(Inspected::Container(container));
            continue;
        }
        match resolve(&store, text) {
            Ok(resolved) if images => found.push(Inspected::Image(Box::new(inspect_one(
                &store,
                &resolved.image,
            )?))),
            _ => missing.push(text.clone()),
        }
    }
    print_json_docker(&found)?;
    for text in &missing {
        if images_only {
            eprintln!("Error: No such image: {text}");
        } else {
            eprintln!("Error: No such object: {text}");
        }
    }
    Ok(if missing.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn history(root: &Path, args: HistoryArgs) -> Result<ExitCode> {
    let store = open_store(root)?;
    let resolved = resolve(&store, &args.image)?;
    let image = &resolved.image;
    let config = read_config(&store, image)?;
    let entries: Vec<Value> = config
        .get("history")
        .and_then(|h| h.as_array())
        .cloned()
        .unwrap_or_default();
    // Each non-empty history entry owns the next layer, base first.
    let mut layer_sizes = image.layers.iter().map(|l| l.layer.size);
    let mut rows = Vec::new();
    for entry in &entries {
        let empty = entry
            .get("empty_layer")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        let size = if empty {
            0
        } else {
            layer_sizes.next().unwrap_or(0)
        };
        rows.push((entry, size));
    }
    rows.reverse();
    let id = if args.no_trunc {
        image.config.to_string()
    } else {
        image.config.short().to_string()
    };
    let mut out = io::stdout().lock();
    if args.quiet {
        for (i, _) in rows.iter().enumerate() {
            writeln!(out, "{}", if i == 0 { id.as_str() } else { "<missing>" })?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut table_rows = vec![vec![
        "IMAGE".to_string(),
        if args.human { "CREATED" } else { "CREATED AT" }.into(),
        "CREATED BY".into(),
        "SIZE".into(),
        "COMMENT".into(),
    ]];
    for (i, (entry, size)) in rows.iter().enumerate() {
        let field = |key: &str| {
            entry
                .get(key)
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string()
        };
        let created = field("created");
        let created = if args.human {
            kiln_store::time::parse_rfc3339(&created)
                .map(time_ago)
                .unwrap_or_else(|| "N/A".into())
        } else {
            // Go's time.RFC3339 (whole seconds), in UTC.
            kiln_store::time::parse_rfc3339(&created)
                .map(|secs| kiln_store::time::format_rfc3339(secs, 0))
                .unwrap_or(created)
        };
        let created_by = field("created_by").replace('\t', " ");
        let created_by = if args.no_trunc {
            created_by
        } else {
            ellipsis(&created_by, 45)
        };
        table_rows.push(vec![
            if i == 0 {
                id.clone()
            } else {
                "<missing>".into()
            },
            created,
            created_by,
            if args.human {
                human_size(*size)
            } else {
                size.to_string()
            },
            field("comment"),
        ]);
    }
    write!(out, "{}", table(&table_rows))?;
    Ok(ExitCode::SUCCESS)
}

fn tag(root: &Path, args: TagArgs) -> Result<ExitCode> {
    let target = parse_target(&args.target)?;
    let store = open_store(root)?;
    let source = resolve(&store, &args.source)?;
    // Lease so a concurrent prune cannot remove the image between resolve and tag.
    let lease = store.lease();
    lease.add_image(&source.image.manifest)?;
    if store.image(&source.image.manifest)?.is_none() {
        bail!("image {} was removed while tagging; try again", args.source);
    }
    store.set_ref(&target.to_string(), &source.image.manifest)?;
    Ok(ExitCode::SUCCESS)
}

/// Deletes an image record and frees its unreferenced content; returns the
/// `Deleted:` lines docker prints (image ID, then layer chain IDs freed).
fn delete_image(store: &Store, image: &ImageRecord) -> Result<Vec<String>> {
    let shared: HashSet<Digest> = store
        .chain_ids_used_elsewhere(&image.manifest)?
        .into_iter()
        .collect();
    store.delete_image(&image.manifest)?;
    store.gc().context("freeing the removed image's content")?;
    let mut lines = vec![format!("Deleted: {}", image.config)];
    for layer in image.layers.iter().rev() {
        if !shared.contains(&layer.chain_id) {
            lines.push(format!("Deleted: {}", layer.chain_id));
        }
    }
    Ok(lines)
}

fn rmi(root: &Path, args: RmiArgs) -> Result<ExitCode> {
    let store = open_store(root)?;
    let mut failed = false;
    for text in &args.images {
        match rmi_one(&store, text, args.force) {
            Ok(lines) => {
                for line in lines {
                    println!("{line}");
                }
            }
            Err(err) => {
                eprintln!("Error: {err:#}");
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn rmi_one(store: &Store, text: &str, force: bool) -> Result<Vec<String>> {
    let resolved = resolve(store, text)?;
    let image = resolved.image;
    let in_use = store.image_in_use(&image.manifest)?;
    // Containers, running or stopped, hold their image: docker's conflicts name them.
    let users = super::run::containers_using(store, &image.manifest);
    let running_user = users.iter().find(|(_, running)| *running).map(|(id, _)| id);
    let any_user = users.first().map(|(id, _)| id);
    let mut lines = Vec::new();
    match resolved.name {
        Some(name)
            if image.refs.len() > 1 || (in_use && !force) || (running_user.is_some() && force) =>
        {
            if image.refs.len() <= 1 && !force {
                if let Some(user) = any_user {
                    bail!(
                        "conflict: unable to remove repository reference {text:?} (must force) - container {user} is using its referenced image {}",
                        image.config.short()
                    );
                }
                bail!(
                    "conflict: unable to remove repository reference {text:?} (must force) - image {} is in use by a running kiln process",
                    image.config.short()
                );
            }
            store.remove_ref(&name.to_string())?;
            lines.push(format!("Untagged: {}", name.familiar()));
        }
        _ => {
            if image.refs.len() > 1 && !force {
                bail!(
                    "conflict: unable to delete {} (must be forced) - image is referenced in multiple repositories",
                    image.config.short()
                );
            }
            if let Some(user) = running_user {
                bail!(
                    "conflict: unable to delete {} (cannot be forced) - image is being used by running container {user}",
                    image.config.short()
                );
            }
            if in_use && !force {
                if let Some(user) = any_user {
                    bail!(
                        "conflict: unable to delete {} (must be forced) - image is being used by stopped container {user}",
                        image.config.short()
                    );
                }
                bail!(
                    "conflict: unable to delete {} (must be forced) - image is in use by a running kiln process",
                    image.config.short()
                );
            }
            for name in &image.refs {
                lines.push(format!("Untagged: {}", familiar(name)));
            }
            if any_user.is_some() {
                // Forced past stopped containers: as docker, the image is
                // gone by name and id, but they keep what they run on until
                // the last of them is removed.
                store.hide_image(&image.manifest)?;
                lines.push(format!("Deleted: {}", image.config));
            } else {
                lines.extend(delete_image(store, &image)?);
            }
        }
    }
    Ok(lines)
}

/// Asks docker's confirmation question on stderr; true if the user said y.
pub fn confirm(warning: &str) -> Result<bool> {
    eprint!("{warning}\nAre you sure you want to continue? [y/N] ");
    io::stderr().flush()?;
    let mut answer = String::new();
    io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "Yes"))
}

/// Prunes images and prints docker's "Deleted Images:" block; returns bytes freed.
pub fn prune_images(store: &Store, all: bool) -> Result<u64> {
    let removed = store.prune_images(all)?;
    let report = store.gc().context("freeing pruned content")?;
    if let Some(first) = removed.first() {
        // Chain ids still used by a remaining image are not deleted.
        let remaining: HashSet<Digest> = store
            .chain_ids_used_elsewhere(&first.manifest)?
            .into_iter()
            .collect();
        let mut printed = HashSet::new();
        let mut out = io::stdout().lock();
        writeln!(out, "Deleted Images:")?;
        for image in &removed {
            for name in &image.refs {
                writeln!(out, "untagged: {}", familiar(name))?;
            }
            writeln!(out, "deleted: {}", image.config)?;
            for layer in image.layers.iter().rev() {
                if !remaining.contains(&layer.chain_id) && printed.insert(layer.chain_id.clone()) {
                    writeln!(out, "deleted: {}", layer.chain_id)?;
                }
            }
        }
        writeln!(out)?;
    }
    Ok(report.reclaimed_bytes)
}

fn prune(root: &Path, args: PruneArgs) -> Result<ExitCode> {
    let warning = if args.all {
        "WARNING! This will remove all images without at least one container associated to them."
    } else {
        "WARNING! This will remove all dangling images."
    };
    if !args.force && !confirm(warning)? {
        return Ok(ExitCode::SUCCESS);
    }
    let store = open_store(root)?;
    let reclaimed = prune_images(&store, args.all)?;
    println!(
        "Total reclaimed space: {}",
        super::output::human_size4(reclaimed)
    );
    Ok(ExitCode::SUCCESS)
}

fn save(root: &Path, args: SaveArgs) -> Result<ExitCode> {
    if args.output.is_none() && io::stdout().is_terminal() {
        bail!("cowardly refusing to save to a terminal. Use the -o flag or redirect");
    }
    let store = open_store(root)?;
    let lease = store.lease();
    let mut exports = Vec::new();
    for text in &args.images {
        let resolved = resolve(&store, text)?;
        lease.add_image(&resolved.image.manifest)?;
        // Re-check under the lease: a prune may have removed it meanwhile.
        if store.image(&resolved.image.manifest)?.is_none() {
            bail!("image {text} was removed while saving; try again");
        }
        let manifest_digest = image_ops::to_image_digest(&resolved.image.manifest)?;
        // Several names of one image become one entry with all of them, as
        // `docker save a b` writes when a and b are the same image.
        let existing = exports
            .iter_mut()
            .find(|e: &&mut kiln_image::archive::ExportImage| e.manifest_digest == manifest_digest);
        match existing {
            Some(entry) => {
                if let Some(name) = resolved.name
                    && !entry.names.contains(&name)
                {
                    entry.names.push(name);
                }
            }
            None => exports.push(kiln_image::archive::ExportImage {
                manifest_digest,
                names: resolved.name.into_iter().collect(),
            }),
        }
    }
    let write = |out: &mut dyn Write| -> Result<()> {
        match args.format {
            SaveFormat::Docker => {
                kiln_image::archive::write_docker_archive(
                    out,
                    &store,
                    &exports,
                    &Default::default(),
                )?;
            }
            SaveFormat::Oci => {
                kiln_image::archive::write_oci_archive(out, &store, &exports)?;
            }
        }
        Ok(())
    };
    match &args.output {
        Some(path) => {
            // Write beside the target and rename: a crash never leaves a
            // truncated archive under the requested name.
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let temp = tempfile_in(dir, path)?;
            let result = (|| -> Result<()> {
                let file =
                    File::create(&temp).with_context(|| format!("creating {}", temp.display()))?;
                let mut out = BufWriter::with_capacity(1 << 20, file);
                write(&mut out)?;
                let file = out.into_inner().map_err(|e| e.into_error())?;
                file.sync_all()?;
                std::fs::rename(&temp, path)
                    .with_context(|| format!("renaming to {}", path.display()))?;
                Ok(())
            })();
            if result.is_err() {
                let _ = std::fs::remove_file(&temp);
            }
            result.with_context(|| format!("saving to {}", path.display()))?;
        }
        None => {
            let mut out = BufWriter::with_capacity(1 << 20, io::stdout().lock());
            write(&mut out).context("saving to stdout")?;
            out.flush()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn tempfile_in(dir: &Path, target: &Path) -> Result<PathBuf> {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "archive".into());
    Ok(dir.join(format!(".{name}.kiln-{}.tmp", std::process::id())))
}

fn load(root: &Path, args: LoadArgs) -> Result<ExitCode> {
    let store = open_store(root)?;
    let lease = store.lease();
    let (reader, source): (Box<dyn Read>, String) = match &args.input {
        Some(path) => (
            Box::new(BufReader::with_capacity(
                1 << 20,
                File::open(path).with_context(|| format!("opening {} to load", path.display()))?,
            )),
            path.display().to_string(),
        ),
        None => {
            if io::stdin().is_terminal() {
                bail!(
                    "requested load from stdin, but stdin is empty; use -i FILE or pipe an archive"
                );
            }
            (Box::new(io::stdin().lock()), "stdin".to_string())
        }
    };
    let mut sink = LeasedBlobs {
        store: &store,
        lease: &lease,
    };
    let archive = kiln_image::archive::read_archive(reader, &mut sink, &Default::default())
        .with_context(|| {
            format!("loading {source} (expected a docker-archive or OCI layout tar)")
        })?;
    let mut out = io::stdout().lock();
    for loaded in &archive.images {
        let manifest =
            image_ops::record_loaded_image(&store, &lease, &loaded.manifest, &loaded.config)
                .with_context(|| format!("recording an image from {source}"))?;
        let config = image_ops::to_store_digest(&loaded.config.digest)?;
        if loaded.names.is_empty() && !args.quiet {
            writeln!(out, "Loaded image ID: {config}")?;
        }
        for name in &loaded.names {
            let previous = store.set_ref(&name.to_string(), &manifest)?;
            if let Some(previous) = previous.and_then(|p| store.image(&p).ok().flatten())
                && previous.config != config
                && !args.quiet
            {
                writeln!(
                    out,
                    "The image {} already exists, renaming the old one with ID {} to empty string",
                    name.familiar(),
                    previous.config
                )?;
            }
            if !args.quiet {
                writeln!(out, "Loaded image: {}", name.familiar())?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
