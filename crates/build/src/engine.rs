//! The build engine: solves the stages a target needs, instruction by
//! instruction, into layers and an image config, with a content-derived cache.
//!
//! Each stage's state is its layer list, its image config and a *cache key*
//! chained over everything that determines the stage's content: the base
//! (image manifest digest or source stage key), then every instruction after
//! expansion together with the values it depends on (ARG values for RUN,
//! context-selection digests for COPY/ADD, the source stage's key for
//! `COPY --from`). Filesystem steps (RUN, COPY, ADD, WORKDIR) look their key up
//! in the store's build cache; a hit reuses the recorded layer blob without
//! running anything. Config-only steps are recomputed (they cost nothing) and
//! reuse the previous step's timestamp, so a no-op rebuild yields the very
//! same image config and ID.

use std::collections::HashMap;
use std::fs;
use std::io::BufReader;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Instant;

use kiln_dockerfile::instructions::{
    Add, Command, CommandLine, Copy, Expanded, Healthcheck, Source, exposed_ports,
};
use kiln_dockerfile::stages::{Base, Graph, StageScope, Stages};
use kiln_dockerfile::{Diagnostic, ast::Span};
use kiln_sandbox::{InjectedFile, Network, RootFs, SandboxSpec, Stream};
use kiln_store::image_ops::{self, OCI_CONFIG, OCI_LAYER_TAR, OCI_MANIFEST};
use kiln_store::{Digest, LayerRecord, Lease, NewImage, Store};
use serde_json::{Map, Value, json};

use crate::context::Context;
use crate::copy::{CopyPlan, CopySource, SourceItem};
use crate::fsview::{LayerView, components, resolve_chown};
use crate::progress::ProgressSink;

/// Default PATH BuildKit gives stages whose image has none.
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The history comment BuildKit's Dockerfile frontend writes.
const HISTORY_COMMENT: &str = "buildkit.dockerfile.v0";
/// Where a `#!` heredoc's script file is mounted for its RUN.
const HEREDOC_SCRIPT_DIR: &str = "/run/kiln-pipes";
/// Bumped when the meaning of cached results changes.
const CACHE_VERSION: &str = "kiln-build-cache-v1";

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The build context directory.
    pub context_dir: PathBuf,
    /// The Dockerfile's path (for messages and `<Dockerfile>.dockerignore`).
    pub dockerfile_path: PathBuf,
    /// The Dockerfile's text.
    pub dockerfile_text: String,
    /// `--target`: the stage to stop at (default: the last one).
    pub target: Option<String>,
    /// `--build-arg` values, in command-line order.
    pub build_args: Vec<(String, String)>,
    /// `--no-cache`: run every step, but record the results.
    pub no_cache: bool,
    /// `--no-cache-filter`: stages (by name) whose steps always run.
    pub no_cache_stages: Vec<String>,
    /// Normalised references to point at the result (`-t`).
    pub tags: Vec<String>,
    /// `--label` values added to the final image's config.
    pub labels: Vec<(String, String)>,
    /// `--network none`: RUN steps without `--network` get only loopback.
    pub network_none: bool,
    /// `--pull`: resolve every base image's tag against its registry again,
    /// even when the store has it (images missing from the store are always pulled).
    pub pull: bool,
    /// `--secret` values, for `RUN --mount=type=secret`.
    pub secrets: Vec<Secret>,
    /// `--build-context NAME=...`: what `FROM NAME`, `COPY --from=NAME` and
    /// `RUN --mount=from=NAME` use instead of the image NAME (stage names
    /// still refer to stages).
    pub build_contexts: Vec<(String, NamedContext)>,
}

/// A named build context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedContext {
    /// A local directory (`NAME=PATH`).
    Dir(PathBuf),
    /// An image (`NAME=docker-image://REF`).
    Image(String),
}

/// A `--secret`: given to the RUN steps that mount it, and never written
/// into an image, a layer, a cache key, the history or a log by kiln.
#[derive(Clone)]
pub struct Secret {
    pub id: String,
    pub value: Vec<u8>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secret")
            .field("id", &self.id)
            .field("value", &"<redacted>")
            .finish()
    }
}

/// One `RUN --mount=type=secret` to provide while the step runs.
struct SecretMount {
    /// Where the file appears (none for an `env=`-only secret).
    file_target: Option<String>,
    env: Option<String>,
    mode: u32,
    uid: u32,
    gid: u32,
    value: Vec<u8>,
}

/// The secret files of one RUN, in a directory on a memory filesystem
/// (`/dev/shm`, else the store's temp dir), removed when dropped.
struct SecretFiles {
    dir: Option<PathBuf>,
}

impl SecretFiles {
    /// Writes the secrets' files and returns the mounts and environment
    /// entries that give them to the process.
    fn create(
        store: &Store,
        secrets: &[SecretMount],
    ) -> Result<(SecretFiles, Vec<kiln_sandbox::Mount>, Vec<String>), BuildError> {
        let mut files = SecretFiles { dir: None };
        let mut mounts = Vec::new();
        let mut env = Vec::new();
        for (n, secret) in secrets.iter().enumerate() {
            if let Some(name) = &secret.env {
                env.push(format!("{name}={}", String::from_utf8_lossy(&secret.value)));
            }
            let Some(target) = &secret.file_target else {
                continue;
            };
            let dir = match &files.dir {
                Some(dir) => dir.clone(),
                None => {
                    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
                    let name = format!("kiln-secrets-{}-{n}", std::process::id());
                    let shm = Path::new("/dev/shm");
                    remove_stale_secrets(shm);
                    let dir = if shm.is_dir() {
                        shm.join(name)
                    } else {
                        store.tmp_dir().join(name)
                    };
                    fs::create_dir(&dir).map_err(io_error("creating secrets dir", &dir))?;
                    files.dir = Some(dir.clone());
                    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
                        .map_err(io_error("setting the mode of", &dir))?;
                    dir
                }
            };
            let path = dir.join(format!("secret-{n}"));
            let mut options = fs::OpenOptions::new();
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(io_error("writing secret file", &path))?;
            std::io::Write::write_all(&mut file, &secret.value)
                .map_err(io_error("writing secret file", &path))?;
            drop(file);
            std::os::unix::fs::chown(&path, Some(secret.uid), Some(secret.gid))
                .map_err(io_error("changing the owner of", &path))?;
            fs::set_permissions(&path, fs::Permissions::from_mode(secret.mode & 0o7777))
                .map_err(io_error("setting the mode of", &path))?;
            mounts.push(kiln_sandbox::Mount {
                target: target.clone(),
                kind: kiln_sandbox::MountKind::Bind {
                    source_root: dir,
                    source_path: format!("secret-{n}"),
                    readonly: true,
                },
            });
        }
        Ok((files, mounts, env))
    }
}

/// Removes the secret directories of kiln processes that died mid-step
/// (killed before their `SecretFiles` were dropped).
fn remove_stale_secrets(shm: &Path) {
    let Ok(entries) = fs::read_dir(shm) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("kiln-secrets-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        // SAFETY: signal 0 only checks whether the process exists.
        let alive = pid > 0
            && (unsafe { libc::kill(pid, 0) } == 0
                || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH));
        if !alive {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

impl Drop for SecretFiles {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

/// A cache mount whose users must coordinate, through a lock file next to it.
struct CacheLock {
    lock: PathBuf,
    /// `private`: a step that finds the cache in use gets a fresh one.
    private: bool,
    mount_index: usize,
    mode: u32,
    uid: u32,
    gid: u32,
}

/// A `type=bind,rw` mount: `source` (a real path) is copied for the step.
struct RwCopy {
    mount_index: usize,
    source: PathBuf,
}

/// Copies a file or a directory tree (not following symlinks), keeping
/// modes, owners and link targets.
fn copy_tree(src: &Path, dst: &Path) -> std::io::Result<()> {
    let meta = fs::symlink_metadata(src)?;
    let kind = meta.file_type();
    if kind.is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(src)?, dst)?;
    } else if kind.is_dir() {
        fs::create_dir(dst)?;
        for entry in fs::read_dir(src)? {
            let entry = entry?;
            copy_tree(&entry.path(), &dst.join(entry.file_name()))?;
        }
        fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    } else if kind.is_file() {
        fs::copy(src, dst)?;
        fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    } else {
        // Devices, fifos and sockets are not copied into a mount.
        return Ok(());
    }
    std::os::unix::fs::lchown(dst, Some(meta.uid()), Some(meta.gid()))
}

/// A new cache directory with the mount's mode and owner.
fn make_cache_dir(dir: &Path, mode: u32, uid: u32, gid: u32) -> Result<(), BuildError> {
    fs::create_dir_all(dir).map_err(io_error("creating cache mount", dir))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))
        .map_err(io_error("setting the mode of", dir))?;
    std::os::unix::fs::chown(dir, Some(uid), Some(gid))
        .map_err(io_error("changing the owner of", dir))
}

/// The real path of `path` inside the directory tree `root`, with symlinks
/// resolved inside it (never outside).
fn resolve_in_root(root: &Path, path: &str) -> Option<PathBuf> {
    let view = LayerView {
        lowers_top_first: vec![root.to_path_buf()],
    };
    let parts = view.resolve(&components(path));
    view.lookup(&parts).map(|(real, _)| real)
}

/// What a RUN's `--mount` flags give the sandbox and the cache key.
struct RunMounts {
    mounts: Vec<kiln_sandbox::Mount>,
    /// Cache mounts with `sharing=locked` or `private`.
    cache_locks: Vec<CacheLock>,
    /// `type=bind,rw` mounts, given a throw-away copy when the step runs.
    rw_copies: Vec<RwCopy>,
    key: Vec<Vec<u8>>,
    /// Made only when the step runs; their contents never enter the key.
    secrets: Vec<SecretMount>,
}

/// Size of one stage that was built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageSize {
    pub name: String,
    /// Sum of its layers' content sizes, base image included.
    pub size: u64,
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct BuildOutcome {
    pub manifest: Digest,
    /// The config digest: docker's image ID.
    pub config: Digest,
    /// Content size of the final image.
    pub size: u64,
    /// Every stage built, in the order they finished.
    pub stages: Vec<StageSize>,
    /// Steps whose result came from the cache, and steps run.
    pub cached_steps: usize,
    pub executed_steps: usize,
    /// The stages the final image copies files from (`COPY --from` in the
    /// target stage or the stages it is built `FROM`), by name: what a
    /// multi-stage build saved is measured against the largest of them.
    pub copied_from: Vec<String>,
}

/// Why a build failed. Messages name the stage, the step and the Dockerfile line.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The Dockerfile is invalid; the text holds every rendered diagnostic.
    #[error("{rendered}")]
    Dockerfile { rendered: String },
    /// A step failed; `rendered` shows the Dockerfile excerpt with the line marked.
    #[error("{rendered}")]
    Step {
        rendered: String,
        /// The RUN command's exit code, when a RUN failed.
        exit_code: Option<i32>,
    },
    #[error(transparent)]
    Context(#[from] crate::context::ContextError),
    #[error(transparent)]
    Store(#[from] kiln_store::StoreError),
    #[error(transparent)]
    Ops(#[from] kiln_store::image_ops::OpsError),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub(crate) fn io_error<'p>(
    what: &'static str,
    path: &'p Path,
) -> impl FnOnce(std::io::Error) -> BuildError + 'p {
    move |source| BuildError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// One layer of a stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layer {
    blob: Digest,
    media_type: String,
    compressed_size: u64,
    diff_id: Digest,
    size: u64,
}

impl Layer {
    fn to_json(&self, created: &str) -> Value {
        json!({
            "blob": self.blob.to_string(),
            "media_type": self.media_type,
            "compressed_size": self.compressed_size,
            "diff_id": self.diff_id.to_string(),
            "size": self.size,
            "created": created,
        })
    }

    fn from_json(value: &Value) -> Option<(Layer, String)> {
        let text = |k: &str| value.get(k).and_then(Value::as_str);
        let number = |k: &str| value.get(k).and_then(Value::as_u64);
        Some((
            Layer {
                blob: Digest::parse(text("blob")?).ok()?,
                media_type: text("media_type")?.to_string(),
                compressed_size: number("compressed_size")?,
                diff_id: Digest::parse(text("diff_id")?).ok()?,
                size: number("size")?,
            },
            text("created")?.to_string(),
        ))
    }
}

/// A stage's result so far.
#[derive(Debug, Clone)]
struct StageState {
    layers: Vec<Layer>,
    /// The image config without `rootfs` (added when the image is written).
    image: Map<String, Value>,
    key: blake3::Hash,
    /// Timestamp of the last history entry, reused by config-only steps.
    created: String,
    /// The variables in scope (BuildKit's ARG/ENV rules); a child stage
    /// starts from its parent's.
    scope: StageScope,
}

impl StageState {
    fn config(&mut self) -> &mut Map<String, Value> {
        let entry = self
            .image
            .entry("config")
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        match entry {
            Value::Object(map) => map,
            _ => unreachable_config(),
        }
    }

    fn config_ref(&self) -> Option<&Map<String, Value>> {
        self.image.get("config").and_then(Value::as_object)
    }

    fn config_str(&self, key: &str) -> Option<String> {
        self.config_ref()?
            .get(key)
            .and_then(Value::as_str)
            .map(str::to_string)
    }

    fn env(&self) -> Vec<String> {
        self.config_ref()
            .and_then(|c| c.get("Env"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn set_env(&mut self, key: &str, value: &str) {
        let mut env = self.env();
        let entry = format!("{key}={value}");
        match env
            .iter_mut()
            .find(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key)
        {
            Some(slot) => *slot = entry,
            None => env.push(entry),
        }
        self.config().insert("Env".into(), json!(env));
    }

    fn shell(&self) -> Vec<String> {
        self.config_ref()
            .and_then(|c| c.get("Shell"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect::<Vec<_>>()
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()])
    }

    fn workdir(&self) -> String {
        self.config_str("WorkingDir")
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into())
    }

    fn add_history(&mut self, created_by: String, empty_layer: bool, created: &str) {
        let mut entry = Map::new();
        entry.insert("created".into(), json!(created));
        entry.insert("created_by".into(), json!(created_by));
        entry.insert("comment".into(), json!(HISTORY_COMMENT));
        if empty_layer {
            entry.insert("empty_layer".into(), json!(true));
        }
        let history = self
            .image
            .entry("history")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = history {
            list.push(Value::Object(entry));
        } else {
            *history = Value::Array(vec![Value::Object(entry)]);
        }
    }

    fn size(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum()
    }

    /// Gives an image (or scratch) its default PATH when it has none, as
    /// BuildKit does, and a fresh scope holding its ENV.
    fn reset_scope(&mut self, graph: &Graph, build_args: &[(String, String)]) {
        if !self.env().iter().any(|e| e.starts_with("PATH=")) {
            let mut env = self.env();
            env.insert(0, DEFAULT_PATH.to_string());
            self.config().insert("Env".into(), json!(env));
        }
        let pairs: Vec<(String, String)> = self
            .env()
            .iter()
            .map(|e| match e.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (e.clone(), String::new()),
            })
            .collect();
        self.scope = StageScope::new(&graph.meta_env, build_args, &pairs);
    }
}

/// `config` was just made an object; this is never reached.
fn unreachable_config() -> ! {
    unreachable!("image config section was just replaced by an object")
}

fn chain(key: &blake3::Hash, parts: &[&[u8]]) -> blake3::Hash {
    let mut hasher = blake3::Hasher::new();
    hasher.update(CACHE_VERSION.as_bytes());
    hasher.update(key.as_bytes());
    for part in parts {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hasher.finalize()
}

/// Pulls one image for the host platform into the store (registry settings
/// and credentials from the environment, as `kiln pull` reads them).
fn pull_image(
    store: &Store,
    reference: &kiln_image::Reference,
) -> Result<(), Box<kiln_registry::RegistryError>> {
    let client_options = kiln_registry::ClientOptions::from_env().map_err(Box::new)?;
    let client = kiln_registry::RegistryClient::new(reference.domain(), &client_options)
        .map_err(Box::new)?;
    let options = kiln_registry::PullOptions {
        platform: kiln_image::Platform::host(),
    };
    kiln_registry::pull(
        store,
        &client,
        reference,
        &options,
        &kiln_registry::NoProgress,
    )
    .map_err(Box::new)?;
    Ok(())
}

/// Where `COPY --from` / `FROM` points.
enum SourceRef {
    Stage(usize),
    Image(String),
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A stage's root filesystem for `COPY --from`: a read-only overlay mount
/// of its layers (reached through the mount's descriptor) or, where that
/// fails, the layers unpacked into a temp dir.
struct Flattened {
    root: PathBuf,
    /// Declared before `_dir`: the mount goes before its bottom dir.
    _mount: Option<std::os::fd::OwnedFd>,
    _dir: TempDir,
}

/// A directory under the store's temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(store: &Store, what: &str) -> Result<TempDir, BuildError> {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = store.tmp_dir().join(format!("build-{what}-{n}"));
        fs::create_dir_all(&path).map_err(io_error("creating temp dir", &path))?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Sidecar kind of a COPY layer's index of context files (copy::Reuse).
const COPY_INDEX: &str = "copy-index";

/// Runs a build: parses the Dockerfile, solves the stages the target needs,
/// writes the final image into the store and tags it.
pub fn build(
    store: &Store,
    options: &BuildOptions,
    progress: &mut dyn ProgressSink,
) -> Result<BuildOutcome, BuildError> {
    let file_name = options.dockerfile_path.display().to_string();
    let render = |diagnostics: &[Diagnostic]| BuildError::Dockerfile {
        rendered: diagnostics
            .iter()
            .map(|d| d.render(&file_name, &options.dockerfile_text))
            .collect::<Vec<_>>()
            .join("\n"),
    };
    let dockerfile = kiln_dockerfile::parse(&options.dockerfile_text)
        .map_err(|e| render(&[e.to_diagnostic()]))?;
    let stages = Stages::from_dockerfile(&dockerfile).map_err(|e| render(&e))?;
    let graph = stages
        .resolve(&options.build_args)
        .map_err(|e| render(&e))?;
    let target = graph
        .target(options.target.as_deref())
        .map_err(|e| render(&[e]))?;
    let lease = store.lease();
    let engine = Engine {
        store,
        lease: &lease,
        options,
        stages: &stages,
        graph: &graph,
        progress: Progress(Mutex::new(progress)),
        context: OnceLock::new(),
        context_loading: Mutex::new(()),
        results: Mutex::new(HashMap::new()),
        stage_done: Condvar::new(),
        required: graph.required_stages(target),
        failed: AtomicBool::new(false),
        first_error: Mutex::new(None),
        flattened: Mutex::new(HashMap::new()),
        stage_sizes: Mutex::new(Vec::new()),
        cached_steps: AtomicUsize::new(0),
        executed_steps: AtomicUsize::new(0),
        file_name,
        local_layers: Mutex::new(HashMap::new()),
        layer_dirs: TempDir::new(store, "layers")?,
        to_adopt: Mutex::new(Vec::new()),
        snapshot_dirs: Mutex::new(HashMap::new()),
        pulled: Mutex::new(std::collections::HashSet::new()),
    };
    // One thread per stage the target needs; each waits for the stages it
    // uses, so independent stages are built at the same time.
    std::thread::scope(|scope| {
        for &index in &engine.required {
            let engine = &engine;
            scope.spawn(move || engine.stage_thread(index));
        }
    });
    // Layers made by COPY become store snapshots (renamed, not copied), in
    // failed builds too: they are complete. No COPY --from mount may still
    // stack them.
    lock(&engine.flattened).clear();
    let adopt = std::mem::take(&mut *lock(&engine.to_adopt));
    if !adopt.is_empty() {
        let _ = store.adopt_snapshots(&lease, &adopt);
    }
    if let Some(error) = lock(&engine.first_error).take() {
        return Err(error);
    }
    let mut final_state =
        lock(&engine.results)
            .get(&target)
            .cloned()
            .ok_or_else(|| BuildError::Dockerfile {
                rendered: format!("the target stage {target} was not built"),
            })?;
    if !options.labels.is_empty() {
        let config = final_state.config();
        let labels = config.entry("Labels").or_insert_with(|| json!({}));
        if !labels.is_object() {
            *labels = json!({});
        }
        if let Value::Object(map) = labels {
            for (key, value) in &options.labels {
                map.insert(key.clone(), json!(value));
            }
        }
    }
    let (manifest, config) = engine.write_image(&final_state)?;
    for tag in &options.tags {
        if store.resolve_ref(tag)?.as_ref() != Some(&manifest) {
            store.set_ref(tag, &manifest)?;
        }
    }
    Ok(BuildOutcome {
        manifest,
        config,
        size: final_state.size(),
        stages: lock(&engine.stage_sizes).clone(),
        cached_steps: engine.cached_steps.load(Ordering::Relaxed),
        executed_steps: engine.executed_steps.load(Ordering::Relaxed),
        copied_from: copied_from(&graph, target),
    })
}

/// The stages that `target` (or a stage it is built FROM) copies from.
fn copied_from(graph: &Graph, target: usize) -> Vec<String> {
    let mut names = Vec::new();
    let mut next = Some(target);
    let mut seen = std::collections::HashSet::new();
    while let Some(index) = next.take() {
        let Some(node) = graph.stages.get(index) else {
            break;
        };
        if !seen.insert(index) {
            break;
        }
        for dependency in &node.dependencies {
            if dependency.kind == kiln_dockerfile::stages::DependencyKind::CopyFrom
                && let kiln_dockerfile::stages::Reference::Stage(source) = dependency.reference
                && let Some(source) = graph.stages.get(source)
                && !names.contains(&source.display_name())
            {
                names.push(source.display_name());
            }
        }
        if let Base::Stage(base) = node.base {
            next = Some(base);
        }
    }
    names
}

struct Engine<'a, 's> {
    store: &'s Store,
    lease: &'a Lease<'s>,
    options: &'a BuildOptions,
    stages: &'a Stages,
    graph: &'a Graph,
    progress: Progress<'a>,
    /// The build context, scanned when a step first reads it.
    context: OnceLock<Context>,
    /// Held while the context is scanned, so it is scanned once.
    context_loading: Mutex<()>,
    /// Finished stages; `stage_done` is signalled when one is added or the
    /// build fails.
    results: Mutex<HashMap<usize, StageState>>,
    stage_done: Condvar,
    /// The stages this build needs (each gets a thread).
    required: Vec<usize>,
    /// Set by the first failure: the other stages stop before their next step.
    failed: AtomicBool,
    first_error: Mutex<Option<BuildError>>,
    /// Flattened root filesystems of stages and images used by `COPY --from`.
    flattened: Mutex<HashMap<String, Flattened>>,
    stage_sizes: Mutex<Vec<StageSize>>,
    cached_steps: AtomicUsize,
    executed_steps: AtomicUsize,
    file_name: String,
    /// Directories holding the diffs of layers made by this build (RUN upper
    /// dirs, COPY staging trees), by diff id: already in overlayfs lower-dir
    /// form, so later steps stack them directly instead of unpacking the blob
    /// into a store snapshot (an apply plus a syncfs per step).
    local_layers: Mutex<HashMap<String, PathBuf>>,
    /// Owns the directories in `local_layers`; removed when the build ends.
    layer_dirs: TempDir,
    /// COPY layer directories that become store snapshots when the build
    /// ends (so the next build neither unpacks nor recopies them).
    to_adopt: Mutex<Vec<kiln_store::SnapshotToAdopt>>,
    /// Store snapshots already ensured (and leased) in this build, by chain id:
    /// asking the store again costs two database writes per layer per step.
    snapshot_dirs: Mutex<HashMap<String, PathBuf>>,
    /// Image references already pulled by this build, so `--pull` and a base
    /// used by several steps fetch each one once; held during a pull.
    pulled: Mutex<std::collections::HashSet<String>>,
}

/// Locks `mutex`; a panic in another stage's thread does not poison the build.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The progress sink, shared by the stages' threads: each event is written
/// whole under the lock, so lines of concurrent steps never mix.
struct Progress<'a>(Mutex<&'a mut dyn ProgressSink>);

impl Progress<'_> {
    fn start(&self, name: &str) -> usize {
        lock(&self.0).start(name)
    }
    fn log(&self, id: usize, bytes: &[u8]) {
        lock(&self.0).log(id, bytes)
    }
    fn cached(&self, id: usize) {
        lock(&self.0).cached(id)
    }
    fn done(&self, id: usize, elapsed: std::time::Duration) {
        lock(&self.0).done(id, elapsed)
    }
    fn error(&self, id: usize, message: &str) {
        lock(&self.0).error(id, message)
    }
}

/// Where a step is, for progress labels and errors.
struct StepInfo {
    label: String,
    span: Span,
    stage_name: String,
}

impl<'s> Engine<'_, 's> {
    fn source_text(&self, span: Span) -> String {
        let text = self
            .options
            .dockerfile_text
            .get(span.range())
            .unwrap_or_default();
        // One line, as BuildKit shows multi-line instructions.
        let escape = self.stages.escape;
        let joined = text.replace(&format!("{escape}\n"), " ");
        joined.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    fn step_error(
        &self,
        step: &StepInfo,
        message: String,
        exit_code: Option<i32>,
        output: &[u8],
    ) -> BuildError {
        let mut rendered = format!(" > {}:\n", step.label);
        let tail = String::from_utf8_lossy(output);
        let lines: Vec<&str> = tail.lines().collect();
        for line in lines.iter().skip(lines.len().saturating_sub(10)) {
            rendered.push_str(&format!("{line}\n"));
        }
        let diagnostic = Diagnostic::error(message.clone(), step.span)
            .with_label(format!("stage {}", step.stage_name));
        rendered.push_str(&diagnostic.render(&self.file_name, &self.options.dockerfile_text));
        if let Some(code) = exit_code {
            rendered.push_str(&format!("\nexit code: {code}"));
        }
        BuildError::Step {
            rendered,
            exit_code,
        }
    }

    fn resolve_from(&self, name: &str) -> SourceRef {
        if let Ok(index) = name.parse::<usize>()
            && index < self.stages.stages.len()
        {
            return SourceRef::Stage(index);
        }
        match self.stages.find(name) {
            Some(index) => SourceRef::Stage(index),
            None => SourceRef::Image(name.to_string()),
        }
    }

    /// Pulls `name` from its registry when the store lacks it (or, with
    /// `--pull`, always, once per build), showing an `[internal] pulling` step.
    /// A name that is not a valid reference is left to `image_state` to report.
    fn ensure_image(&self, name: &str, step: &StepInfo) -> Result<(), BuildError> {
        let name = match self.named_context(name) {
            Some(NamedContext::Image(reference)) => reference.as_str(),
            Some(NamedContext::Dir(_)) => return Ok(()),
            None => name,
        };
        let Ok(reference) = kiln_image::Reference::parse(name) else {
            return Ok(());
        };
        let key = reference.to_string();
        // One pull at a time: two stages on the same missing base pull it once.
        let mut pulled = lock(&self.pulled);
        if pulled.contains(&key) {
            return Ok(());
        }
        if !self.options.pull && self.store.resolve_ref(&key)?.is_some() {
            return Ok(());
        }
        let started = Instant::now();
        let id = self.progress.start(&format!("[internal] pulling {key}"));
        match pull_image(self.store, &reference) {
            Ok(()) => {
                self.progress.done(id, started.elapsed());
                pulled.insert(key);
                Ok(())
            }
            Err(error) => {
                self.progress.error(id, "pull failed");
                Err(self.step_error(
                    step,
                    format!(
                        "image {name:?} is not in kiln's store and pulling {key} failed: {error}; pull it with `kiln pull {key}`, or create it with `kiln import ROOTFS.tar {name}` or `kiln load -i IMAGE.tar`"
                    ),
                    None,
                    &[],
                ))
            }
        }
    }

    /// Loads an image as a starting state, pulling it first when needed.
    /// The `--build-context` named `name`, if any.
    fn named_context(&self, name: &str) -> Option<&NamedContext> {
        self.options
            .build_contexts
            .iter()
            .rev()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, context)| context)
    }

    /// A local named context as an image: one layer with the directory's
    /// contents (cached under the digest of those contents).
    fn dir_state(&self, name: &str, dir: &Path, step: &StepInfo) -> Result<StageState, BuildError> {
        let digest = Context::scan_build_context(
            dir,
            None,
            Some(self.store.root().join("context-stat-cache")),
        )?
        .root_digest();
        let mut state = self.scratch_state();
        let key = chain(&blake3::hash(b"named-context"), &[digest.0.as_slice()]);
        let created_by = format!("named context {name}");
        let load = StepInfo {
            label: format!("[context {name}] load {}", dir.display()),
            span: step.span,
            stage_name: step.stage_name.clone(),
        };
        self.fs_step(&mut state, &load, key, created_by, |engine, _, _| {
            engine.commit_dir(dir, kiln_snapshot::DiffKind::Directory)
        })?;
        // Its key is its content's, whichever step asked for it.
        state.key = chain(&key, &[b"named-context-result"]);
        Ok(state)
    }

    fn image_state(&self, name: &str, step: &StepInfo) -> Result<StageState, BuildError> {
        let name = match self.named_context(name) {
            Some(NamedContext::Image(reference)) => reference.as_str(),
            Some(NamedContext::Dir(dir)) => return self.dir_state(name, dir, step),
            None => name,
        };
        self.ensure_image(name, step)?;
        let not_found = || {
            self.step_error(
                step,
                format!(
                    "image {name:?} is not in kiln's store; create it with `kiln import ROOTFS.tar {name}` or `kiln load -i IMAGE.tar`"
                ),
                None,
                &[],
            )
        };
        let reference = kiln_image::Reference::parse(name).map_err(|_| not_found())?;
        let Some(manifest) = self.store.resolve_ref(&reference.to_string())? else {
            return Err(not_found());
        };
        let Some(record) = self.store.image(&manifest)? else {
            return Err(not_found());
        };
        let config_bytes = self.store.read_blob(&record.config)?;
        let image: Map<String, Value> = serde_json::from_slice(&config_bytes).map_err(|e| {
            self.step_error(
                step,
                format!("image {name}: its config is not valid JSON: {e}"),
                None,
                &[],
            )
        })?;
        let mut image = image;
        image.remove("rootfs");
        let created = image
            .get("created")
            .and_then(Value::as_str)
            .unwrap_or("1970-01-01T00:00:00Z")
            .to_string();
        let layers = record
            .layers
            .iter()
            .map(|l| Layer {
                blob: l.layer.blob.clone(),
                media_type: l.layer.media_type.clone(),
                compressed_size: l.layer.compressed_size,
                diff_id: l.layer.diff_id.clone(),
                size: l.layer.size,
            })
            .collect();
        self.lease.add_image(&manifest)?;
        let mut state = StageState {
            layers,
            image,
            key: chain(&blake3::hash(b"image"), &[manifest.to_string().as_bytes()]),
            created,
            scope: StageScope::default(),
        };
        state.reset_scope(self.graph, &self.options.build_args);
        Ok(state)
    }

    fn scratch_state(&self) -> StageState {
        let mut image = Map::new();
        image.insert("architecture".into(), json!(image_ops::go_arch()));
        image.insert("os".into(), json!("linux"));
        // BuildKit gives scratch stages `/` as their working directory.
        image.insert("config".into(), json!({"WorkingDir": "/"}));
        let mut state = StageState {
            layers: Vec::new(),
            image,
            key: blake3::hash(b"scratch"),
            created: "1970-01-01T00:00:00Z".into(),
            scope: StageScope::default(),
        };
        state.reset_scope(self.graph, &self.options.build_args);
        state
    }

    /// One stage's thread: waits until the stages it uses are built (or the
    /// build failed), builds it, and publishes the result or the error.
    /// Stages start at once and wait for another stage only when a step
    /// needs its result (FROM, COPY --from, RUN --mount from=), so the steps
    /// before that run meanwhile, as in BuildKit.
    fn stage_thread(&self, index: usize) {
        match self.build_stage(index) {
            Ok(state) => {
                lock(&self.results).insert(index, state);
            }
            Err(error) => {
                // The first failure is the one reported; the stages it
                // cancels fail after it with nothing to add.
                let mut first = lock(&self.first_error);
                if first.is_none() {
                    *first = Some(error);
                }
                self.failed.store(true, Ordering::SeqCst);
            }
        }
        // Under the results lock, so no waiting thread misses the signal.
        let _results = lock(&self.results);
        self.stage_done.notify_all();
    }

    /// The result of stage `index`, waiting until its thread has built it.
    fn wait_for_stage(&self, index: usize, user: &str) -> Result<StageState, BuildError> {
        if !self.required.contains(&index) {
            let name = self
                .graph
                .stages
                .get(index)
                .map_or_else(|| index.to_string(), |n| n.display_name());
            return Err(BuildError::Dockerfile {
                rendered: format!(
                    "stage {name} used by {user} is not part of this build (an ONBUILD trigger of a base image cannot name a stage of this Dockerfile)"
                ),
            });
        }
        let mut results = lock(&self.results);
        loop {
            if let Some(state) = results.get(&index) {
                return Ok(state.clone());
            }
            self.check_cancelled()?;
            results = self
                .stage_done
                .wait(results)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// The error a stage stops with when another stage failed first.
    fn check_cancelled(&self) -> Result<(), BuildError> {
        if self.failed.load(Ordering::SeqCst) {
            return Err(BuildError::Dockerfile {
                rendered: "cancelled: another stage failed".into(),
            });
        }
        Ok(())
    }

    /// Builds one stage whose dependencies are all built.
    fn build_stage(&self, index: usize) -> Result<StageState, BuildError> {
        let node = self
            .graph
            .stages
            .get(index)
            .cloned()
            .ok_or_else(|| BuildError::Dockerfile {
                rendered: format!("no stage {index} in the Dockerfile"),
            })?;
        let stage =
            self.stages
                .stages
                .get(index)
                .cloned()
                .ok_or_else(|| BuildError::Dockerfile {
                    rendered: format!("no stage {index} in the Dockerfile"),
                })?;
        let multi = self.stages.stages.len() > 1;
        let stage_name = node.display_name();
        let prefix = if multi {
            format!("{stage_name} ")
        } else {
            String::new()
        };
        let total = stage.commands.len() + 1;
        let from_step = StepInfo {
            label: format!("[{prefix}1/{total}] {}", self.source_text(stage.from.span)),
            span: stage.from.span,
            stage_name: stage_name.clone(),
        };
        if let Base::Image(name) = &node.base {
            // Pull before the FROM step starts, so the pull shows as its own step.
            self.ensure_image(name, &from_step)?;
        }
        // A base stage is waited for before the FROM step starts.
        let mut base_stage = match &node.base {
            Base::Stage(base) => Some(self.wait_for_stage(*base, "FROM")?),
            _ => None,
        };
        let started = Instant::now();
        let id = self.progress.start(&from_step.label);
        let mut state = match &node.base {
            Base::Scratch => self.scratch_state(),
            Base::Image(name) => match self.image_state(name, &from_step) {
                Ok(state) => state,
                Err(e) => {
                    self.progress.error(id, "image not found");
                    return Err(e);
                }
            },
            Base::Stage(_) => {
                let mut state = match base_stage.take() {
                    Some(state) => state,
                    None => self.scratch_state(),
                };
                // A child stage inherits its parent's ARGs, then its ENV again.
                state.scope = state.scope.child();
                state
            }
        };
        self.progress.done(id, started.elapsed());

        // The ARGs declared in this stage, in order (a re-declaration is
        // listed again), for the `RUN |N K=V ...` history text.
        let mut args: Vec<String> = Vec::new();
        let mut cmd_set = false;
        let lexer = self.stages.lexer();
        // ONBUILD triggers of the base run first, as if written after FROM;
        // the new image does not inherit them.
        let triggers = self.onbuild_triggers(&mut state, &from_step)?;
        let mut commands: Vec<(Command, Option<String>)> = triggers;
        commands.extend(stage.commands.iter().cloned().map(|c| (c, None)));
        let mut position = 0;
        for (command, trigger_text) in &commands {
            self.check_cancelled()?;
            let step = match trigger_text {
                Some(text) => StepInfo {
                    label: format!("[{prefix}1/{total}] ONBUILD {text}"),
                    span: stage.from.span,
                    stage_name: stage_name.clone(),
                },
                None => {
                    position += 1;
                    StepInfo {
                        label: format!(
                            "[{prefix}{}/{total}] {}",
                            position + 1,
                            self.source_text(command.span())
                        ),
                        span: command.span(),
                        stage_name: stage_name.clone(),
                    }
                }
            };
            // BuildKit's history shows ARG defaults expanded even when a
            // build arg overrides them (the scope skips that expansion).
            let arg_history = match command {
                Command::Arg { args: decls, .. } => {
                    let expanded = command.expand(&lexer, &state.scope).ok();
                    let decls = match expanded.as_ref().map(|e| &e.command) {
                        Some(Command::Arg { args: expanded, .. }) => expanded,
                        _ => decls,
                    };
                    let shown: Vec<String> = decls
                        .iter()
                        .map(|decl| match &decl.default {
                            Some(default) => format!("{}={}", decl.name.value, default.value),
                            None => decl.name.value.clone(),
                        })
                        .collect();
                    Some(format!("ARG {}", shown.join(" ")))
                }
                _ => None,
            };
            // Expands the instruction with the variables in scope and applies
            // ARG/ENV to the scope, with BuildKit's rules.
            let Expanded { command, .. } =
                state
                    .scope
                    .dispatch(&lexer, command)
                    .map_err(|d| BuildError::Dockerfile {
                        rendered: d.render(&self.file_name, &self.options.dockerfile_text),
                    })?;
            let canonical = canonical(&command);
            match &command {
                Command::Arg { args: decls, .. } => {
                    // An ARG changes no cache key by itself: the steps that
                    // use its value (RUN's environment, expanded words) do.
                    args.extend(decls.iter().map(|decl| decl.name.value.clone()));
                    let created = state.created.clone();
                    state.add_history(arg_history.unwrap_or_default(), true, &created);
                }
                Command::Env { pairs, .. } => {
                    for pair in pairs {
                        state.set_env(&pair.key.value, &pair.value.value);
                    }
                    self.config_step(&mut state, &canonical, &step_created_by_pairs("ENV", pairs));
                }
                Command::Label { pairs, .. } => {
                    let config = state.config();
                    let labels = config.entry("Labels").or_insert_with(|| json!({}));
                    if !labels.is_object() {
                        *labels = json!({});
                    }
                    if let Value::Object(map) = labels {
                        for pair in pairs {
                            map.insert(pair.key.value.clone(), json!(pair.value.value));
                        }
                    }
                    self.config_step(
                        &mut state,
                        &canonical,
                        &step_created_by_pairs("LABEL", pairs),
                    );
                }
                Command::Maintainer { name, .. } => {
                    state.image.insert("author".into(), json!(name.value));
                    self.config_step(
                        &mut state,
                        &canonical,
                        &format!("MAINTAINER {}", name.value),
                    );
                }
                Command::Expose { ports, .. } => {
                    let mut keys = Vec::new();
                    for port in ports {
                        let expanded = exposed_ports(&port.value).map_err(|why| {
                            self.step_error(
                                &step,
                                format!("invalid EXPOSE {}: {why}", port.value),
                                None,
                                &[],
                            )
                        })?;
                        keys.extend(expanded);
                    }
                    let config = state.config();
                    let exposed = config.entry("ExposedPorts").or_insert_with(|| json!({}));
                    if !exposed.is_object() {
                        *exposed = json!({});
                    }
                    if let Value::Object(map) = exposed {
                        for key in &keys {
                            map.insert(key.clone(), json!({}));
                        }
                    }
                    self.config_step(&mut state, &canonical, &expose_history(&keys));
                }
                Command::Volume { paths, .. } => {
                    let config = state.config();
                    let volumes = config.entry("Volumes").or_insert_with(|| json!({}));
                    if !volumes.is_object() {
                        *volumes = json!({});
                    }
                    if let Value::Object(map) = volumes {
                        for path in paths {
                            map.insert(path.value.clone(), json!({}));
                        }
                    }
                    let list: Vec<&str> = paths.iter().map(|p| p.value.as_str()).collect();
                    self.config_step(
                        &mut state,
                        &canonical,
                        &format!("VOLUME [{}]", list.join(" ")),
                    );
                }
                Command::User { user, .. } => {
                    state.config().insert("User".into(), json!(user.value));
                    self.config_step(&mut state, &canonical, &format!("USER {}", user.value));
                }
                Command::Stopsignal { signal, .. } => {
                    state
                        .config()
                        .insert("StopSignal".into(), json!(signal.value));
                    self.config_step(
                        &mut state,
                        &canonical,
                        &format!("STOPSIGNAL {}", signal.value),
                    );
                }
                Command::Shell { shell, .. } => {
                    let list: Vec<String> = shell.iter().map(|w| w.value.clone()).collect();
                    state.config().insert("Shell".into(), json!(list));
                    self.config_step(
                        &mut state,
                        &canonical,
                        &format!("SHELL [{}]", list.join(" ")),
                    );
                }
                Command::Onbuild(onbuild) => {
                    let config = state.config();
                    let list = config.entry("OnBuild").or_insert_with(|| json!([]));
                    if !list.is_array() {
                        *list = json!([]);
                    }
                    if let Value::Array(items) = list {
                        items.push(json!(onbuild.expression));
                    }
                    // BuildKit records no history entry for ONBUILD.
                    state.key = chain(&state.key, &[canonical.as_bytes()]);
                }
                Command::Cmd(cmd) => {
                    let argv = command_argv(&cmd.command, &state.shell());
                    state.config().insert("Cmd".into(), json!(argv));
                    cmd_set = true;
                    self.config_step(&mut state, &canonical, &format!("CMD {}", go_list(&argv)));
                }
                Command::Entrypoint(entrypoint) => {
                    let argv = command_argv(&entrypoint.command, &state.shell());
                    let config = state.config();
                    config.insert("Entrypoint".into(), json!(argv));
                    if !cmd_set {
                        config.insert("Cmd".into(), Value::Null);
                    }
                    self.config_step(
                        &mut state,
                        &canonical,
                        &format!("ENTRYPOINT {}", go_list(&argv)),
                    );
                }
                Command::Healthcheck(health) => {
                    let value = healthcheck_json(health);
                    state.config().insert("Healthcheck".into(), value);
                    self.config_step(&mut state, &canonical, &healthcheck_history(health));
                }
                Command::Workdir { path, .. } => {
                    let target = join_in_image(&state.workdir(), &path.value);
                    // BuildKit keeps an absolute WORKDIR as written ("/root/"
                    // stays "/root/" in the config); a relative one is joined
                    // onto the current one and cleaned.
                    let configured = if path.value.starts_with('/') {
                        path.value.clone()
                    } else {
                        target.clone()
                    };
                    state
                        .config()
                        .insert("WorkingDir".into(), json!(configured));
                    let key = chain(&state.key, &[canonical.as_bytes(), target.as_bytes()]);
                    let created_by = format!("WORKDIR {configured}");
                    self.fs_step(&mut state, &step, key, created_by, |engine, state, _id| {
                        engine.workdir_layer(state, &target)
                    })?;
                }
                Command::Run(run) => {
                    let mut heredoc_command = run_heredoc_command(run);
                    // A heredoc starting with `#!` runs as a script file, as
                    // BuildKit does (there at /dev/pipes/NAME; kiln mounts it at
                    // /run/kiln-pipes/NAME, since the sandbox's /dev is its own).
                    let mut script: Option<(String, String)> = None;
                    if let (Some(text), Some(heredoc)) = (&heredoc_command, run.heredocs.first())
                        && text.starts_with("#!")
                    {
                        if heredoc.name.is_empty() || heredoc.name.contains('/') {
                            return Err(self.step_error(
                                &step,
                                format!("heredoc name {:?} cannot be a file name", heredoc.name),
                                None,
                                &[],
                            ));
                        }
                        script = Some((heredoc.name.clone(), text.clone()));
                        heredoc_command = None;
                    }
                    let RunMounts {
                        mounts,
                        cache_locks,
                        rw_copies,
                        key: mount_key,
                        secrets,
                    } = self.run_mounts(&step, run)?;
                    let network = match run.network {
                        Some(kiln_dockerfile::instructions::NetworkMode::None) => Network::None,
                        Some(kiln_dockerfile::instructions::NetworkMode::Host) => Network::Host,
                        _ if self.options.network_none => Network::None,
                        _ => Network::Host,
                    };
                    let argv = match (&script, heredoc_command) {
                        (Some((name, _)), _) => vec![format!("{HEREDOC_SCRIPT_DIR}/{name}")],
                        (None, Some(script)) => {
                            let mut argv = state.shell();
                            argv.push(script);
                            argv
                        }
                        (None, None) => command_argv(&run.command, &state.shell()),
                    };
                    // Every variable in scope, ARGs included (BuildKit's
                    // exec environment); so they are all in the cache key.
                    let env: Vec<String> = state
                        .scope
                        .run_env()
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    let user = state.config_str("User").unwrap_or_default();
                    let cwd = state.workdir();
                    let mut key_parts: Vec<Vec<u8>> = vec![
                        canonical.clone().into_bytes(),
                        user.clone().into_bytes(),
                        cwd.clone().into_bytes(),
                    ];
                    key_parts.extend(env.iter().map(|e| e.clone().into_bytes()));
                    key_parts.extend(mount_key);
                    key_parts.push(format!("network={network:?}").into_bytes());
                    let parts: Vec<&[u8]> = key_parts.iter().map(Vec::as_slice).collect();
                    let key = chain(&state.key, &parts);
                    // BuildKit's `|N K=V` prefix: each ARG declared in this
                    // stage with its current value (an ENV of the same name
                    // included), empty when unset.
                    let arg_prefix = if args.is_empty() {
                        String::new()
                    } else {
                        let list: Vec<String> = args
                            .iter()
                            .map(|name| {
                                let value = state
                                    .scope
                                    .run_env()
                                    .iter()
                                    .find(|(k, _)| k == name)
                                    .map_or("", |(_, v)| v.as_str());
                                format!("{name}={value}")
                            })
                            .collect();
                        format!("|{} {} ", args.len(), list.join(" "))
                    };
                    let created_by = format!("RUN {arg_prefix}{} # buildkit", argv.join(" "));
                    self.fs_step(&mut state, &step, key, created_by, |engine, state, id| {
                        let mut mounts = mounts.clone();
                        // Cache sharing: `locked` waits for the other users,
                        // `private` gets a fresh cache when one is in use.
                        let (_held, _private_dirs) =
                            engine.lock_caches(&cache_locks, &mut mounts)?;
                        // `rw` binds write to a copy that is thrown away.
                        let mut _rw_dirs = Vec::new();
                        for copy in &rw_copies {
                            let dir = TempDir::new(engine.store, "bind-rw")?;
                            let dest = dir.0.join("src");
                            copy_tree(&copy.source, &dest)
                                .map_err(io_error("copying the rw bind source", &copy.source))?;
                            if let Some(mount) = mounts.get_mut(copy.mount_index) {
                                mount.kind = kiln_sandbox::MountKind::Bind {
                                    source_root: dir.0.clone(),
                                    source_path: "src".into(),
                                    readonly: false,
                                };
                            }
                            _rw_dirs.push(dir);
                        }
                        let mut _script_dir = None;
                        if let Some((name, text)) = &script {
                            let dir = TempDir::new(engine.store, "heredoc-script")?;
                            let path = dir.0.join(name);
                            fs::write(&path, text).map_err(io_error("writing heredoc", &path))?;
                            fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
                                .map_err(io_error("setting the mode of", &path))?;
                            mounts.push(kiln_sandbox::Mount {
                                target: format!("{HEREDOC_SCRIPT_DIR}/{name}"),
                                kind: kiln_sandbox::MountKind::Bind {
                                    source_root: dir.0.clone(),
                                    source_path: name.clone(),
                                    readonly: true,
                                },
                            });
                            _script_dir = Some(dir);
                        }
                        // Secrets exist only while the step runs, added after
                        // the cache key was computed.
                        let (_secret_files, secret_mounts, secret_env) =
                            SecretFiles::create(engine.store, &secrets)?;
                        mounts.extend(secret_mounts);
                        let mut env = env.clone();
                        env.extend(secret_env);
                        engine.run_layer(
                            state,
                            &step,
                            id,
                            RunSpec {
                                argv: argv.clone(),
                                env,
                                user: user.clone(),
                                cwd: cwd.clone(),
                                mounts,
                                network: network.clone(),
                            },
                        )
                    })?;
                }
                Command::Copy(copy) => {
                    self.copy_step(&mut state, &step, &canonical, CopyKind::Copy(copy))?
                }
                Command::Add(add) => {
                    self.copy_step(&mut state, &step, &canonical, CopyKind::Add(add))?
                }
                Command::From(_) => {}
            }
        }
        lock(&self.stage_sizes).push(StageSize {
            name: stage_name,
            size: state.size(),
        });
        Ok(state)
    }

    /// The base's ONBUILD triggers as commands (with their text), removed
    /// from the state's config.
    fn onbuild_triggers(
        &self,
        state: &mut StageState,
        from_step: &StepInfo,
    ) -> Result<Vec<(Command, Option<String>)>, BuildError> {
        let triggers: Vec<String> = state
            .config_ref()
            .and_then(|c| c.get("OnBuild"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if let Some(config) = state.image.get_mut("config").and_then(Value::as_object_mut) {
            config.remove("OnBuild");
        }
        let mut commands = Vec::new();
        for trigger in triggers {
            let text = format!("{trigger}\n");
            let bad = |why: String| {
                self.step_error(
                    from_step,
                    format!("the base image's ONBUILD trigger {trigger:?} is invalid: {why}"),
                    None,
                    &[],
                )
            };
            let parsed = kiln_dockerfile::parse(&text)
                .map_err(|e| bad(e.to_diagnostic().short("ONBUILD")))?;
            for instruction in &parsed.instructions {
                let command = kiln_dockerfile::instructions::convert(instruction)
                    .map_err(|d| bad(d.short("ONBUILD")))?;
                commands.push((command, Some(trigger.clone())));
            }
        }
        Ok(commands)
    }

    fn config_step(&self, state: &mut StageState, canonical: &str, created_by: &str) {
        state.key = chain(&state.key, &[canonical.as_bytes()]);
        let created = state.created.clone();
        state.add_history(created_by.to_string(), true, &created);
    }

    /// A step that makes a layer: looked up in the cache under `key`, else
    /// `make` runs and its layer is recorded.
    fn fs_step(
        &self,
        state: &mut StageState,
        step: &StepInfo,
        key: blake3::Hash,
        created_by: String,
        make: impl FnOnce(&Self, &StageState, usize) -> Result<Layer, BuildError>,
    ) -> Result<(), BuildError> {
        let started = Instant::now();
        let id = self.progress.start(&step.label);
        let key_text = key.to_hex().to_string();
        let skip_cache = self.options.no_cache
            || self
                .options
                .no_cache_stages
                .iter()
                .any(|s| s.eq_ignore_ascii_case(&step.stage_name));
        if !skip_cache && let Some(found) = self.store.cache_get(&key_text)? {
            let parsed = serde_json::from_str::<Value>(&found).ok();
            if let Some((layer, created)) = parsed.as_ref().and_then(Layer::from_json)
                && self.store.has_blob(&layer.blob)
                // Lease, then look again: a concurrent prune may have removed
                // the blob between the check and the lease.
                && self.lease.add_blob(&layer.blob).is_ok()
                && self.store.has_blob(&layer.blob)
            {
                self.progress.cached(id);
                self.cached_steps.fetch_add(1, Ordering::Relaxed);
                // Later keys chain through this step's *result*: a step that
                // re-ran (--no-cache-filter) and produced other content
                // invalidates everything built on it, here and in later builds.
                state.key = chain(&key, &[layer.diff_id.to_string().as_bytes()]);
                state.layers.push(layer);
                state.created = created.clone();
                state.add_history(created_by, false, &created);
                return Ok(());
            }
        }
        let layer = match make(self, state, id) {
            Ok(layer) => layer,
            Err(e) => {
                let short = match &e {
                    BuildError::Step {
                        exit_code: Some(code),
                        ..
                    } => format!("exit code: {code}"),
                    _ => "failed".to_string(),
                };
                self.progress.error(id, &short);
                return Err(e);
            }
        };
        let created = kiln_store::time::rfc3339_now();
        self.store
            .cache_put(&key_text, &layer.to_json(&created).to_string())?;
        self.executed_steps.fetch_add(1, Ordering::Relaxed);
        self.progress.done(id, started.elapsed());
        state.key = chain(&key, &[layer.diff_id.to_string().as_bytes()]);
        state.layers.push(layer);
        state.created = created.clone();
        state.add_history(created_by, false, &created);
        Ok(())
    }

    /// Writes `dir` as a layer blob into the store.
    fn commit_dir(&self, dir: &Path, kind: kiln_snapshot::DiffKind) -> Result<Layer, BuildError> {
        let mut writer = self.store.blob_writer()?;
        let options = kiln_snapshot::CreateOptions {
            xattrs: kiln_snapshot::XattrPolicy::CapabilitiesOnly,
            ..kiln_snapshot::CreateOptions::from_env()
        };
        // The store's writer hashes what it stores: the tar is hashed once.
        let counts =
            kiln_snapshot::write_layer_tar(dir, kind, &mut writer, &options).map_err(|e| {
                BuildError::Io {
                    what: "creating a layer from",
                    path: dir.to_path_buf(),
                    source: std::io::Error::other(e),
                }
            })?;
        let info = writer.commit(self.lease, None)?;
        let size = counts.content_size;
        Ok(Layer {
            blob: info.digest.clone(),
            media_type: OCI_LAYER_TAR.to_string(),
            compressed_size: info.size,
            diff_id: info.digest,
            size,
        })
    }

    /// Keeps `dir` (the diff a layer was made from) as that layer's lower dir
    /// for the rest of the build.
    fn keep_layer_dir(&self, dir: &Path, layer: &Layer) {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let kept = self.layer_dirs.0.join(format!("layer-{n}"));
        if fs::rename(dir, &kept).is_ok() {
            lock(&self.local_layers).insert(layer.diff_id.to_string(), kept);
        }
    }

    /// The snapshot directories of `layers`, top-most first (overlayfs order).
    fn lowers(&self, layers: &[Layer]) -> Result<Vec<PathBuf>, BuildError> {
        let diff_ids: Vec<Digest> = layers.iter().map(|l| l.diff_id.clone()).collect();
        let chain_ids = Digest::chain_ids(&diff_ids);
        let mut dirs = Vec::with_capacity(layers.len());
        let mut parent: Option<Digest> = None;
        for (layer, chain_id) in layers.iter().zip(chain_ids) {
            if let Some(local) = lock(&self.local_layers).get(&layer.diff_id.to_string()) {
                dirs.push(local.clone());
                parent = Some(chain_id);
                continue;
            }
            if let Some(known) = lock(&self.snapshot_dirs).get(&chain_id.to_string()) {
                dirs.push(known.clone());
                parent = Some(chain_id);
                continue;
            }
            let blob = layer.blob.clone();
            let store = self.store;
            let dir = self.store.ensure_snapshot(
                self.lease,
                &chain_id,
                parent.as_ref(),
                &layer.diff_id,
                |tmp| {
                    let file = store.open_blob(&blob)?;
                    let options = kiln_snapshot::ApplyOptions {
                        mode: kiln_snapshot::ApplyMode::Overlay,
                        ..Default::default()
                    };
                    kiln_snapshot::apply_layer(
                        BufReader::with_capacity(1 << 20, file),
                        tmp,
                        &options,
                    )
                    .map(|_| ())
                    .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
                },
            )?;
            lock(&self.snapshot_dirs).insert(chain_id.to_string(), dir.clone());
            dirs.push(dir);
            parent = Some(chain_id);
        }
        dirs.reverse();
        // Layers with the same diff (two RUN steps that changed nothing, say)
        // share one local directory, and overlayfs refuses a lower dir given
        // twice (ELOOP, "conflicting lowerdir path"). The top-most copy alone
        // gives the same view: everything the lower copy holds is shadowed
        // by the identical entries above it.
        let mut seen = std::collections::HashSet::new();
        dirs.retain(|dir| seen.insert(dir.clone()));
        Ok(dirs)
    }

    fn view(&self, state: &StageState) -> Result<LayerView, BuildError> {
        Ok(LayerView {
            lowers_top_first: self.lowers(&state.layers)?,
        })
    }

    fn workdir_layer(&self, state: &StageState, target: &str) -> Result<Layer, BuildError> {
        let view = self.view(state)?;
        let staging = TempDir::new(self.store, "workdir")?;
        let parts = view.resolve(&components(target));
        // An existing directory gives an empty layer, as BuildKit's mkdir -p does.
        if !view.lookup(&parts).is_some_and(|(_, meta)| meta.is_dir()) {
            // BuildKit creates the missing directories as the current USER.
            let user = state.config_str("User").unwrap_or_default();
            let owner = if user.is_empty() {
                None
            } else {
                let passwd = view.read_small_file("/etc/passwd");
                let group = view.read_small_file("/etc/group");
                // An unknown user fails the next RUN with a clear error; the
                // directory itself is then left to root.
                kiln_sandbox::resolve_user(&user, passwd.as_deref(), group.as_deref())
                    .ok()
                    .map(|u| (u.uid, u.gid))
            };
            CopyPlan::new(&view, &staging.0).make_dirs(&parts, owner)?;
        }
        let layer = self.commit_dir(&staging.0, kiln_snapshot::DiffKind::Directory)?;
        self.keep_layer_dir(&staging.0, &layer);
        Ok(layer)
    }

    /// The sandbox mounts of a RUN's `--mount` flags, the lock files of
    /// `sharing=locked` caches, and what the mounts add to the cache key (the
    /// content of bind sources; cache mounts' contents never enter it, as in
    /// BuildKit).
    fn run_mounts(
        &self,
        step: &StepInfo,
        run: &kiln_dockerfile::instructions::Run,
    ) -> Result<RunMounts, BuildError> {
        use kiln_dockerfile::mounts::{CacheSharing, MountType};
        let mut mounts = Vec::new();
        let mut cache_locks = Vec::new();
        let mut rw_copies = Vec::new();
        let mut key = Vec::new();
        let mut secrets = Vec::new();
        for run_mount in &run.mounts {
            let mount = &run_mount.mount;
            // The mount's options (for a secret: its id, target and mode,
            // never its value).
            key.push(format!("{mount:?}").into_bytes());
            if mount.kind == MountType::Ssh {
                return Err(self.step_error(
                    step,
                    "--mount=type=ssh is not supported by kiln yet: kiln has no --ssh agent forwarding; fetch private sources in an earlier step or pass a deploy key with --secret".into(),
                    None,
                    &[],
                ));
            }
            if mount.kind == MountType::Secret {
                // BuildKit: the id defaults to the target's file name, the
                // target to /run/secrets/ID (none when only env= is given).
                let id = mount.id.clone().or_else(|| {
                    mount
                        .target
                        .as_deref()
                        .and_then(|t| t.rsplit('/').find(|p| !p.is_empty()))
                        .map(str::to_string)
                });
                let Some(id) = id else {
                    return Err(self.step_error(
                        step,
                        format!(
                            "--mount={}: a secret mount needs id=ID (or a target= to name it)",
                            run_mount.spec.value
                        ),
                        None,
                        &[],
                    ));
                };
                let Some(secret) = self.options.secrets.iter().rev().find(|s| s.id == id) else {
                    if mount.required {
                        return Err(self.step_error(
                            step,
                            format!(
                                "secret {id} not found: it is required; pass it with --secret id={id},src=PATH (or env=VAR)"
                            ),
                            None,
                            &[],
                        ));
                    }
                    // Not given and not required: the step runs without it.
                    continue;
                };
                let file_target = match (&mount.target, &mount.env) {
                    (Some(target), _) => Some(join_in_image("/", target)),
                    (None, Some(_)) => None,
                    (None, None) => Some(format!("/run/secrets/{id}")),
                };
                secrets.push(SecretMount {
                    file_target,
                    env: mount.env.clone(),
                    mode: mount.mode.unwrap_or(0o400),
                    uid: mount.uid.unwrap_or(0),
                    gid: mount.gid.unwrap_or(0),
                    value: secret.value.clone(),
                });
                continue;
            }
            let Some(target) = mount.target.clone() else {
                return Err(self.step_error(
                    step,
                    format!("--mount={}: no target given", run_mount.spec.value),
                    None,
                    &[],
                ));
            };
            let target = join_in_image("/", &target);
            match mount.kind {
                MountType::Cache => {
                    let id = mount.id.clone().unwrap_or_else(|| target.clone());
                    let (mode, uid, gid) = (
                        mount.mode.unwrap_or(0o755),
                        mount.uid.unwrap_or(0),
                        mount.gid.unwrap_or(0),
                    );
                    // `from=`: the cache starts as a copy of that stage's or
                    // image's `source`; it is a cache of its own per base.
                    let (name, seed) = match mount.from.as_deref() {
                        Some(from) => {
                            let state = self.mount_source_state(from, step)?;
                            let root = self.flattened(&state)?;
                            let source = mount.source.clone().unwrap_or_else(|| "/".into());
                            let Some(real) = resolve_in_root(&root, &source) else {
                                return Err(self.step_error(
                                    step,
                                    format!(
                                        "--mount={}: {source} not found in {from}",
                                        run_mount.spec.value
                                    ),
                                    None,
                                    &[],
                                ));
                            };
                            (
                                format!("{id}\u{0}{}\u{0}{source}", state.key.to_hex()),
                                Some(real),
                            )
                        }
                        None => (id, None),
                    };
                    let caches = self.store.root().join("cache-mounts");
                    let dir = caches.join(blake3::hash(name.as_bytes()).to_hex().as_str());
                    if !dir.is_dir() {
                        // Made aside and renamed, so a concurrent build never
                        // sees a half-seeded cache.
                        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
                        let fresh = caches.join(format!("new-{}-{n}", std::process::id()));
                        match &seed {
                            Some(real) => {
                                fs::create_dir_all(&caches)
                                    .map_err(io_error("creating cache mount", &caches))?;
                                copy_tree(real, &fresh)
                                    .map_err(io_error("seeding cache mount from", real))?;
                            }
                            None => make_cache_dir(&fresh, mode, uid, gid)?,
                        }
                        if fs::rename(&fresh, &dir).is_err() {
                            let _ = fs::remove_dir_all(&fresh);
                        }
                    }
                    match mount.sharing {
                        Some(CacheSharing::Locked) | Some(CacheSharing::Private) => {
                            let mut lock = dir.clone().into_os_string();
                            lock.push(".lock");
                            cache_locks.push(CacheLock {
                                lock: PathBuf::from(lock),
                                private: mount.sharing == Some(CacheSharing::Private),
                                mount_index: mounts.len(),
                                mode,
                                uid,
                                gid,
                            });
                        }
                        _ => {}
                    }
                    mounts.push(kiln_sandbox::Mount::bind(dir, target, mount.read_only));
                }
                MountType::Tmpfs => mounts.push(kiln_sandbox::Mount::tmpfs(target, mount.size)),
                MountType::Bind => {
                    let source_path = mount.source.clone().unwrap_or_else(|| ".".into());
                    let source_root = match mount.from.as_deref() {
                        None | Some("context") => {
                            let digest = self
                                .context()?
                                .digest_of_selection(source_path.as_bytes())?;
                            key.push(digest.0.to_vec());
                            self.context_mount_root()?
                        }
                        Some(from) => {
                            let state = self.mount_source_state(from, step)?;
                            key.push(state.key.as_bytes().to_vec());
                            self.flattened(&state)?
                        }
                    };
                    let readonly = mount.read_only;
                    if !readonly {
                        // BuildKit discards what the step writes to an rw bind.
                        let Some(real) = resolve_in_root(&source_root, &source_path) else {
                            return Err(self.step_error(
                                step,
                                format!(
                                    "--mount={}: {source_path} not found",
                                    run_mount.spec.value
                                ),
                                None,
                                &[],
                            ));
                        };
                        rw_copies.push(RwCopy {
                            mount_index: mounts.len(),
                            source: real,
                        });
                    }
                    mounts.push(kiln_sandbox::Mount {
                        target,
                        kind: kiln_sandbox::MountKind::Bind {
                            source_root,
                            source_path,
                            readonly,
                        },
                    });
                }
                // Handled above.
                MountType::Secret | MountType::Ssh => {}
            }
        }
        Ok(RunMounts {
            mounts,
            cache_locks,
            rw_copies,
            key,
            secrets,
        })
    }

    /// The stage or image a RUN mount's `from=` names.
    fn mount_source_state(&self, from: &str, step: &StepInfo) -> Result<StageState, BuildError> {
        match self.resolve_from(from) {
            SourceRef::Stage(index) => self.wait_for_stage(index, "RUN --mount"),
            SourceRef::Image(name) => self.image_state(&name, step),
        }
    }

    /// Takes the locks of `locked` and `private` cache mounts for one step;
    /// a `private` cache in use is replaced in `mounts` by a fresh empty one.
    fn lock_caches(
        &self,
        caches: &[CacheLock],
        mounts: &mut [kiln_sandbox::Mount],
    ) -> Result<(Vec<fs::File>, Vec<TempDir>), BuildError> {
        let mut held = Vec::new();
        let mut fresh_dirs = Vec::new();
        for cache in caches {
            let file = fs::File::create(&cache.lock)
                .map_err(io_error("creating cache mount lock", &cache.lock))?;
            if !cache.private {
                file.lock()
                    .map_err(io_error("locking cache mount lock", &cache.lock))?;
                held.push(file);
                continue;
            }
            match file.try_lock() {
                Ok(()) => held.push(file),
                Err(fs::TryLockError::WouldBlock) => {
                    let fresh = TempDir::new(self.store, "cache-private")?;
                    make_cache_dir(&fresh.0, cache.mode, cache.uid, cache.gid)?;
                    if let Some(mount) = mounts.get_mut(cache.mount_index) {
                        let readonly = match &mount.kind {
                            kiln_sandbox::MountKind::Bind { readonly, .. } => *readonly,
                            kiln_sandbox::MountKind::Tmpfs { .. } => false,
                        };
                        *mount = kiln_sandbox::Mount::bind(
                            fresh.0.clone(),
                            mount.target.clone(),
                            readonly,
                        );
                    }
                    fresh_dirs.push(fresh);
                }
                Err(fs::TryLockError::Error(e)) => {
                    return Err(io_error("locking cache mount lock", &cache.lock)(e));
                }
            }
        }
        Ok((held, fresh_dirs))
    }

    fn run_layer(
        &self,
        state: &StageState,
        step: &StepInfo,
        step_id: usize,
        run: RunSpec,
    ) -> Result<Layer, BuildError> {
        let RunSpec {
            argv,
            env,
            user,
            cwd,
            mounts,
            network,
        } = run;
        let run_dir = TempDir::new(self.store, "run")?;
        let mut lower_dirs = self.lowers(&state.layers)?;
        if lower_dirs.is_empty() {
            let empty = run_dir.0.join("empty");
            fs::create_dir(&empty).map_err(io_error("creating", &empty))?;
            lower_dirs.push(empty);
        }
        let upper = run_dir.0.join("upper");
        let work = run_dir.0.join("work");
        for dir in [&upper, &work] {
            fs::create_dir(dir).map_err(io_error("creating", dir))?;
        }
        // The upper dir's own mode and owner become those of `/`.
        if let Some(root) = lower_dirs.last().and_then(|d| fs::metadata(d).ok()) {
            let _ = fs::set_permissions(&upper, fs::Permissions::from_mode(root.mode() & 0o7777));
            let _ = std::os::unix::fs::chown(&upper, Some(root.uid()), Some(root.gid()));
        }
        let mut spec = SandboxSpec::new(
            RootFs::Overlay {
                lower_dirs,
                upper_dir: upper.clone(),
                work_dir: work,
            },
            argv.clone(),
        );
        spec.env = env;
        spec.user = user;
        spec.cwd = cwd;
        spec.hostname = "buildkitsandbox".into();
        spec.network = network;
        spec.mounts = mounts;
        spec.files = vec![
            InjectedFile {
                target: "/etc/hosts".into(),
                contents: b"127.0.0.1\tlocalhost buildkitsandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n".to_vec(),
                mode: 0o644,
                readonly: true,
            },
            InjectedFile {
                target: "/etc/resolv.conf".into(),
                contents: fs::read("/etc/resolv.conf").unwrap_or_default(),
                mode: 0o644,
                readonly: true,
            },
        ];
        let mut tail: Vec<u8> = Vec::new();
        let status = {
            let mut sink = |_stream: Stream, bytes: &[u8]| {
                self.progress.log(step_id, bytes);
                tail.extend_from_slice(bytes);
                if tail.len() > 16 * 1024 {
                    let cut = tail.len() - 8 * 1024;
                    tail.drain(..cut);
                }
            };
            self.run_sandbox(&spec, &mut sink)
        };
        let status = status
            .map_err(|e| self.step_error(step, format!("cannot run {argv:?}: {e}"), None, &[]))?;
        let Some(status) = status else {
            return Err(BuildError::Dockerfile {
                rendered: format!("{}: cancelled: another stage failed", step.label),
            });
        };
        if !status.success() {
            let code = status.code();
            return Err(self.step_error(
                step,
                format!(
                    "process \"{}\" did not complete successfully: exit code: {code}",
                    argv.join(" ")
                ),
                Some(code),
                &tail,
            ));
        }
        let layer = self.commit_dir(&upper, kiln_snapshot::DiffKind::OverlayUpper)?;
        self.keep_layer_dir(&upper, &layer);
        Ok(layer)
    }

    /// Runs a sandbox to the end, streaming its output to `sink`; kills it
    /// and returns `None` when another stage fails meanwhile.
    fn run_sandbox(
        &self,
        spec: &SandboxSpec,
        sink: &mut dyn FnMut(Stream, &[u8]),
    ) -> Result<Option<kiln_sandbox::ExitStatus>, kiln_sandbox::SandboxError> {
        use std::io::Read;
        use std::os::fd::AsRawFd;
        let mut running = kiln_sandbox::spawn(spec)?;
        let mut streams: Vec<(Stream, fs::File)> = Vec::new();
        if let Some(out) = running.take_stdout() {
            streams.push((Stream::Stdout, out));
        }
        if let Some(err) = running.take_stderr() {
            streams.push((Stream::Stderr, err));
        }
        let mut buf = vec![0u8; 64 * 1024];
        let mut killed = false;
        // Every process of the sandbox dies with its PID 1, closing the pipes.
        while !streams.is_empty() {
            let mut pollfds: Vec<libc::pollfd> = streams
                .iter()
                .map(|(_, f)| libc::pollfd {
                    fd: f.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            // SAFETY: pollfds is a valid array of pollfd for its length; the
            // timeout lets a failure elsewhere be noticed.
            let n = unsafe { libc::poll(pollfds.as_mut_ptr(), pollfds.len() as libc::nfds_t, 100) };
            if !killed && self.failed.load(Ordering::SeqCst) {
                running.kill(libc::SIGKILL)?;
                killed = true;
            }
            if n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                // Cannot watch the pipes: just wait for the process.
                break;
            }
            if n <= 0 {
                // Timeout, or EINTR: poll again.
                continue;
            }
            let mut closed = Vec::new();
            for (index, pollfd) in pollfds.iter().enumerate() {
                if pollfd.revents == 0 {
                    continue;
                }
                let Some((stream, file)) = streams.get_mut(index) else {
                    continue;
                };
                match file.read(&mut buf) {
                    Ok(0) => closed.push(index),
                    Ok(n) => sink(*stream, buf.get(..n).unwrap_or_default()),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => closed.push(index),
                }
            }
            for index in closed.into_iter().rev() {
                streams.remove(index);
            }
        }
        let status = running.wait()?;
        Ok((!killed).then_some(status))
    }

    fn context(&self) -> Result<&Context, BuildError> {
        if let Some(context) = self.context.get() {
            return Ok(context);
        }
        let _loading = lock(&self.context_loading);
        if self.context.get().is_none() {
            let started = Instant::now();
            let id = self.progress.start("[internal] load build context");
            let cache_dir = self.store.root().join("context-stat-cache");
            let context = Context::scan_build_context(
                &self.options.context_dir,
                Some(&self.options.dockerfile_path),
                Some(cache_dir),
            )?;
            self.progress.done(id, started.elapsed());
            let _ = self.context.set(context);
        }
        match self.context.get() {
            Some(context) => Ok(context),
            None => Err(BuildError::Dockerfile {
                rendered: "build context was not loaded".into(),
            }),
        }
    }

    /// The build context as a RUN bind mount sees it: what the context scan
    /// kept, nothing .dockerignore excludes (BuildKit mounts its filtered
    /// local source). When nothing is excluded, the context directory itself;
    /// otherwise a read-only overlay of it under a layer of whiteouts, one
    /// per excluded path (directories holding excluded paths keep their
    /// metadata), made once per build. Where overlayfs refuses the context's
    /// filesystem as a lower dir, the context directory, unfiltered.
    fn context_mount_root(&self) -> Result<PathBuf, BuildError> {
        const KEY: &str = "context-mount";
        let context = self.context()?;
        let context_dir = self.options.context_dir.clone();
        let mut flattened = lock(&self.flattened);
        if let Some(found) = flattened.get(KEY) {
            return Ok(found.root.clone());
        }
        let hidden = excluded_paths(context, &context_dir);
        let layer = TempDir::new(self.store, "context-hide")?;
        if hidden.is_empty() {
            // Remembered too: the walk is not repeated for the next mount.
            flattened.insert(
                KEY.to_string(),
                Flattened {
                    root: context_dir.clone(),
                    _mount: None,
                    _dir: layer,
                },
            );
            return Ok(context_dir);
        }
        // Directories of the whiteout layer, the root included: they take the
        // context's own metadata at the end, so the merged view shows them
        // as they are.
        let mut made_dirs = vec![PathBuf::new()];
        for rel in &hidden {
            let rel_path = Path::new(std::ffi::OsStr::from_bytes(rel));
            let mut parent = PathBuf::new();
            let components: Vec<_> = rel_path.components().collect();
            for component in components.iter().take(components.len().saturating_sub(1)) {
                parent.push(component);
                let made = layer.0.join(&parent);
                if fs::symlink_metadata(&made).is_err() {
                    fs::create_dir(&made).map_err(io_error("creating", &made))?;
                    made_dirs.push(parent.clone());
                }
            }
            let whiteout = layer.0.join(rel_path);
            rustix::fs::mknodat(
                rustix::fs::CWD,
                &whiteout,
                rustix::fs::FileType::CharacterDevice,
                rustix::fs::Mode::empty(),
                0,
            )
            .map_err(|e| BuildError::Io {
                what: "creating a whiteout in",
                path: whiteout.clone(),
                source: e.into(),
            })?;
        }
        // Deepest first: setting a directory's time must follow every change
        // inside it.
        made_dirs.sort();
        for rel in made_dirs.iter().rev() {
            let (made, real) = (layer.0.join(rel), context_dir.join(rel));
            let meta = fs::symlink_metadata(&real).map_err(io_error("reading", &real))?;
            fs::set_permissions(&made, fs::Permissions::from_mode(meta.mode() & 0o7777))
                .map_err(io_error("setting the mode of", &made))?;
            std::os::unix::fs::chown(&made, Some(meta.uid()), Some(meta.gid()))
                .map_err(io_error("setting the owner of", &made))?;
            let times = fs::FileTimes::new()
                .set_modified(meta.modified().map_err(io_error("reading", &real))?)
                .set_accessed(meta.accessed().map_err(io_error("reading", &real))?);
            fs::File::open(&made)
                .and_then(|f| f.set_times(times))
                .map_err(io_error("setting the times of", &made))?;
        }
        let mount = match kiln_sandbox::read_only_overlay(&[layer.0.clone(), context_dir.clone()]) {
            Ok(mount) => mount,
            Err(_) => return Ok(context_dir),
        };
        use std::os::fd::AsRawFd;
        let root = PathBuf::from(format!("/proc/self/fd/{}/.", mount.as_raw_fd()));
        flattened.insert(
            KEY.to_string(),
            Flattened {
                root: root.clone(),
                _mount: Some(mount),
                _dir: layer,
            },
        );
        Ok(root)
    }

    /// The root filesystem of a stage or image for `COPY --from` to read:
    /// its layers as a read-only overlay (a detached mount, reached through
    /// its descriptor; nothing is copied), the same merged view a RUN step
    /// gets. Ready in milliseconds where unpacking a toolchain stage took
    /// seconds and its size in disk. Where overlayfs refuses (an old kernel,
    /// say), the layers are unpacked as for mounts.
    fn copy_source_root(&self, state: &StageState) -> Result<PathBuf, BuildError> {
        let key = format!("overlay-{}", state.key.to_hex());
        let mut flattened = lock(&self.flattened);
        if let Some(found) = flattened.get(&key) {
            return Ok(found.root.clone());
        }
        let empty = TempDir::new(self.store, "from-bottom")?;
        let mut lowers = self.lowers(&state.layers)?;
        lowers.push(empty.0.clone());
        if let Ok(mount) = kiln_sandbox::read_only_overlay(&lowers) {
            // "/." so the path names the mount's root directory, not
            // the /proc magic link itself (lstat of the bare link).
            use std::os::fd::AsRawFd;
            let root = PathBuf::from(format!("/proc/self/fd/{}/.", mount.as_raw_fd()));
            flattened.insert(
                key,
                Flattened {
                    root: root.clone(),
                    _mount: Some(mount),
                    _dir: empty,
                },
            );
            return Ok(root);
        }
        drop(flattened);
        self.flattened(state)
    }

    /// The flattened root filesystem of a stage or image, unpacked into a
    /// temp dir: a real path RUN `--mount from=` can bind into a sandbox.
    fn flattened(&self, state: &StageState) -> Result<PathBuf, BuildError> {
        let key = state.key.to_hex().to_string();
        // Held while unpacking: two stages copying from one source share it.
        let mut flattened = lock(&self.flattened);
        if let Some(found) = flattened.get(&key) {
            return Ok(found.root.clone());
        }
        let dir = TempDir::new(self.store, "from")?;
        for layer in &state.layers {
            let file = self.store.open_blob(&layer.blob)?;
            kiln_snapshot::apply_layer(
                BufReader::with_capacity(1 << 20, file),
                &dir.0,
                &kiln_snapshot::ApplyOptions::default(),
            )
            .map_err(|e| BuildError::Io {
                what: "unpacking layer for COPY --from into",
                path: dir.0.clone(),
                source: std::io::Error::other(e),
            })?;
        }
        let path = dir.0.clone();
        flattened.insert(
            key,
            Flattened {
                root: path.clone(),
                _mount: None,
                _dir: dir,
            },
        );
        Ok(path)
    }

    fn copy_step(
        &self,
        state: &mut StageState,
        step: &StepInfo,
        canonical: &str,
        kind: CopyKind<'_>,
    ) -> Result<(), BuildError> {
        let (sources, dest, chown, chmod, from, keyword) = match kind {
            CopyKind::Copy(copy) => (
                &copy.sources,
                &copy.dest,
                &copy.chown,
                &copy.chmod,
                copy.from.as_ref(),
                "COPY",
            ),
            CopyKind::Add(add) => (&add.sources, &add.dest, &add.chown, &add.chmod, None, "ADD"),
        };
        let exclude_patterns: Vec<String> = match kind {
            CopyKind::Copy(copy) => copy.exclude.iter().map(|e| e.value.clone()).collect(),
            CopyKind::Add(add) => add.exclude.iter().map(|e| e.value.clone()).collect(),
        };
        let exclude = if exclude_patterns.is_empty() {
            None
        } else {
            Some(
                crate::dockerignore::PatternMatcher::new(&exclude_patterns, "--exclude").map_err(
                    |e| self.step_error(step, format!("invalid --exclude: {e}"), None, &[]),
                )?,
            )
        };
        let mut patterns = Vec::new();
        let mut heredocs: Vec<kiln_dockerfile::ast::Heredoc> = Vec::new();
        let mut urls: Vec<String> = Vec::new();
        for source in sources {
            match source {
                Source::Path(path)
                    if keyword == "ADD"
                        && (crate::fetch::is_http_url(&path.value)
                            || crate::fetch::is_git_url(&path.value)) =>
                {
                    urls.push(path.value.clone());
                }
                Source::Path(path) => patterns.push(path.value.clone()),
                Source::Heredoc(heredoc) => heredocs.push(heredoc.clone()),
            }
        }
        // What the sources are, and the digest of what they read.
        let mut key_parts: Vec<Vec<u8>> =
            vec![canonical.as_bytes().to_vec(), state.workdir().into_bytes()];
        // Heredoc sources become files named after their delimiter (0644, root).
        // They and URL downloads are copied from temp dirs beside the
        // context files (`generated`: dir and name of each).
        let mut generated: Vec<(PathBuf, String)> = Vec::new();
        let heredoc_dir = if heredocs.is_empty() {
            None
        } else {
            if from.is_some() {
                return Err(self.step_error(
                    step,
                    format!("{keyword} --from with heredoc sources is not supported by kiln yet"),
                    None,
                    &[],
                ));
            }
            let dir = TempDir::new(self.store, "heredoc")?;
            for heredoc in &heredocs {
                let path = dir.0.join(&heredoc.name);
                if heredoc.name.contains('/') || heredoc.name.is_empty() {
                    return Err(self.step_error(
                        step,
                        format!("heredoc name {:?} cannot be a file name", heredoc.name),
                        None,
                        &[],
                    ));
                }
                fs::write(&path, heredoc.text()).map_err(io_error("writing heredoc", &path))?;
                fs::set_permissions(&path, fs::Permissions::from_mode(0o644))
                    .map_err(io_error("setting the mode of", &path))?;
                generated.push((dir.0.clone(), heredoc.name.clone()));
            }
            Some(dir)
        };
        // ADD <url>: downloaded (fetch.rs) and copied from a temp dir; the
        // content digests join the key. Never unpacked.
        let (checksum, unpack) = match kind {
            CopyKind::Add(add) => (add.checksum.as_ref().map(|c| c.value.clone()), add.unpack),
            CopyKind::Copy(_) => (None, None),
        };
        // Downloads the copy itself makes, on a cache miss: (url, expected digest, dir).
        let mut deferred_fetch: Vec<(String, Option<String>, PathBuf)> = Vec::new();
        let url_dir = if urls.is_empty() && checksum.is_none() {
            None
        } else {
            let dir = TempDir::new(self.store, "http")?;
            let others = !patterns.is_empty() || heredoc_dir.is_some();
            let known = crate::fetch::known_digest(&urls, checksum.as_deref(), others)
                .map_err(|e| self.step_error(step, e.to_string(), None, &[]))?;
            if let (Some(digest), Some(url)) = (known, urls.first()) {
                // --checksum: the key is known, the download waits for a miss.
                key_parts.push(digest.into_bytes());
                generated.push((dir.0.clone(), crate::fetch::file_name(url)));
                deferred_fetch.push((url.clone(), checksum.clone(), dir.0.clone()));
            } else {
                // Revalidated with the ETag of the last download (fetch.rs).
                let validators = self.store.root().join("http-validators");
                let fetched = crate::fetch::fetch_or_revalidate(&urls, &dir.0, &validators)
                    .map_err(|e| self.step_error(step, e.to_string(), None, &[]))?;
                for file in fetched {
                    if !file.downloaded {
                        deferred_fetch.push((file.url, Some(file.digest.clone()), dir.0.clone()));
                    }
                    key_parts.push(file.digest.into_bytes());
                    generated.push((dir.0.clone(), file.name));
                }
            }
            Some(dir)
        };
        let unpack = keyword == "ADD" && unpack != Some(false);
        let (link, parents) = match kind {
            CopyKind::Copy(copy) => (copy.link, copy.parents),
            CopyKind::Add(add) => (add.link, false),
        };
        // `--from` a stage or image: its state, flattened when the step runs.
        let mut from_state: Option<StageState> = None;
        let source = match from.map(|f| self.resolve_from(&f.value)) {
            None if patterns.is_empty() && (heredoc_dir.is_some() || url_dir.is_some()) => {
                match heredoc_dir.as_ref().or(url_dir.as_ref()) {
                    Some(dir) => CopySource::Dir(dir.0.clone()),
                    None => CopySource::Context,
                }
            }
            None => {
                let context = self.context()?;
                for pattern in &patterns {
                    let digest = context.digest_of_selection(pattern.as_bytes())?;
                    key_parts.push(digest.0.to_vec());
                }
                CopySource::Context
            }
            Some(SourceRef::Image(name))
                if let Some(NamedContext::Dir(dir)) = self.named_context(&name) =>
            {
                // A local named context is read like the build context: the
                // key covers what each source pattern selects in it.
                let named = Context::scan_build_context(
                    dir,
                    None,
                    Some(self.store.root().join("context-stat-cache")),
                )?;
                for pattern in &patterns {
                    let digest = named.digest_of_selection(pattern.as_bytes())?;
                    key_parts.push(digest.0.to_vec());
                }
                CopySource::Dir(dir.clone())
            }
            Some(reference) => {
                let source_state = match reference {
                    SourceRef::Stage(index) => self.wait_for_stage(index, "COPY --from")?,
                    SourceRef::Image(name) => self.image_state(&name, step)?,
                };
                key_parts.push(source_state.key.as_bytes().to_vec());
                // Flattened only if the step runs: on a cache hit the key
                // (the source stage's key) is all that is needed, and
                // flattening a big stage costs seconds.
                from_state = Some(source_state);
                CopySource::Context
            }
        };
        let parts: Vec<&[u8]> = key_parts.iter().map(Vec::as_slice).collect();
        let key = chain(&state.key, &parts);
        let dest_text = dest.value.clone();
        let dest_path = join_in_image(&state.workdir(), &dest_text);
        // BuildKit: only `.` or a trailing `/` make DEST a directory; `/t/.`
        // names the file `/t` (checked against it).
        let dest_is_dir_syntax = dest_text.ends_with('/') || dest_text == ".";
        let chown = chown.as_ref().map(|c| c.value.clone());
        let chmod_text = chmod.as_ref().map(|c| c.value.clone());
        // BuildKit's history shows sources and destination, not the flags.
        // Sources in the order written, whatever their kind, then DEST.
        let mut shown: Vec<String> = sources
            .iter()
            .map(|source| match source {
                Source::Path(path) => path.value.clone(),
                Source::Heredoc(heredoc) => heredoc.name.clone(),
            })
            .collect();
        shown.push(dest_text.clone());
        // As BuildKit: sources and destination only, `--from` included.
        let created_by = format!("{keyword} {} # buildkit", shown.join(" "));
        let step_clone = StepInfo {
            label: step.label.clone(),
            span: step.span,
            stage_name: step.stage_name.clone(),
        };
        // The same step whatever its sources and the layers below it hold:
        // where an earlier build of it left a layer whose unchanged files
        // this one can link (copy.rs checks every file it links, so a stale
        // or foreign entry costs speed, never correctness).
        let reuse_key = format!(
            "copy-reuse:{}",
            chain(
                &blake3::hash(self.options.context_dir.as_os_str().as_encoded_bytes()),
                &[
                    step.stage_name.as_bytes(),
                    canonical.as_bytes(),
                    state.workdir().as_bytes()
                ]
            )
            .to_hex()
        );
        self.fs_step(state, step, key, created_by, move |engine, state, _id| {
            let chmod = match &chmod_text {
                Some(text) => Some(crate::copy::Chmod::parse(text).ok_or_else(|| {
                    engine.step_error(&step_clone, format!("invalid --chmod={text}: use an octal mode like 0755 or a symbolic one like u+x,go-w"), None, &[])
                })?),
                None => None,
            };
            let view = engine.view(state)?;
            let owner = match &chown {
                Some(spec) => Some(resolve_chown(spec, &view).map_err(|e| engine.step_error(&step_clone, e.to_string(), None, &[]))?),
                None => None,
            };
            let source = match &from_state {
                Some(source_state) => CopySource::Dir(engine.copy_source_root(source_state)?),
                None => source,
            };
            for (url, checksum, dir) in &deferred_fetch {
                crate::fetch::fetch_sources(std::slice::from_ref(url), checksum.as_deref(), false, dir)
                    .map_err(|e| engine.step_error(&step_clone, e.to_string(), None, &[]))?;
            }
            // Resolve every pattern to the items it selects.
            let mut items: Vec<SourceItem> = Vec::new();
            for pattern in &patterns {
                let found = match &source {
                    CopySource::Context => {
                        let context = engine.context()?;
                        crate::copy::select_context(context, pattern)?
                    }
                    CopySource::Dir(root) => crate::copy::select_dir(root, pattern)
                        .map_err(|e| engine.step_error(&step_clone, e, None, &[]))?,
                };
                if found.is_empty() {
                    return Err(engine.step_error(
                        &step_clone,
                        format!("failed to compute cache key: \"{}\": not found", pattern),
                        None,
                        &[],
                    ));
                }
                items.extend(found);
            }
            items.extend(
                generated
                    .iter()
                    .map(|(dir, name)| SourceItem::generated(dir, name)),
            );
            if items.len() > 1 && !dest_is_dir_syntax {
                return Err(engine.step_error(
                    &step_clone,
                    format!("when using {keyword} with more than one source file, the destination must be a directory and end with a /"),
                    None,
                    &[],
                ));
            }
            let staging = TempDir::new(engine.store, "copy")?;
            let plan = CopyPlan::new(&view, &staging.0)
                .with_archive_extraction(unpack)
                .with_exclude(exclude.clone())
                .with_link(link)
                .with_parents(parents)
                .with_reuse(engine.reuse_for(&reuse_key));
            let context_root = engine.options.context_dir.clone();
            let context = match &source {
                CopySource::Context => Some(engine.context()?),
                CopySource::Dir(_) => None,
            };
            // What went wrong while copying is shown with the step and its line.
            plan.copy(&items, &source, context, &context_root, &dest_path, dest_is_dir_syntax, owner, chmod.as_ref())
                .map_err(|e| match e {
                    BuildError::Io { .. } => engine.step_error(&step_clone, e.to_string(), None, &[]),
                    other => other,
                })?;
            let layer = engine.commit_dir(&staging.0, kiln_snapshot::DiffKind::Directory)?;
            engine.keep_layer_dir(&staging.0, &layer);
            if let Some(chain_id) = engine.adopt_later(state, &layer) {
                engine.remember_for_reuse(&reuse_key, &layer, &chain_id, &plan.index_bytes());
            }
            Ok(layer)
        })
    }

    /// The layer an earlier build of this COPY step (`reuse_key`) left, if
    /// its snapshot and index are still in the store (see copy::Reuse).
    fn reuse_for(&self, reuse_key: &str) -> Option<crate::copy::Reuse> {
        let found = self.store.cache_get(reuse_key).ok()??;
        let (diff_id, chain_id) = found.split_once(' ')?;
        let (diff_id, chain_id) = (Digest::parse(diff_id).ok()?, Digest::parse(chain_id).ok()?);
        let index =
            crate::copy::Reuse::parse_index(&self.store.read_sidecar(&diff_id, COPY_INDEX)?)?;
        let root = match lock(&self.local_layers).get(&diff_id.to_string()) {
            Some(local) => local.clone(),
            None => {
                // Leased before use so a concurrent gc keeps it; a link that
                // fails anyway falls back to a copy.
                self.lease.add_snapshot(&chain_id).ok()?;
                self.store.snapshot_path(&chain_id)
            }
        };
        crate::copy::Reuse::open(&root, index)
    }

    /// Records `layer` as the latest result of the COPY step `reuse_key`,
    /// with the index of the context files in it. Best effort: without it
    /// the next build copies every file.
    fn remember_for_reuse(&self, reuse_key: &str, layer: &Layer, chain_id: &Digest, index: &[u8]) {
        if index.is_empty() {
            return;
        }
        if self
            .store
            .put_sidecar(&layer.diff_id, COPY_INDEX, index)
            .is_ok()
        {
            let _ = self
                .store
                .cache_put(reuse_key, &format!("{} {chain_id}", layer.diff_id));
        }
    }

    /// Marks the kept directory of `layer` (made on top of `state`) to become
    /// the store's snapshot of its chain when the build ends.
    /// Returns the chain id it will have.
    fn adopt_later(&self, state: &StageState, layer: &Layer) -> Option<Digest> {
        let dir = lock(&self.local_layers)
            .get(&layer.diff_id.to_string())
            .cloned()?;
        let mut diff_ids: Vec<Digest> = state.layers.iter().map(|l| l.diff_id.clone()).collect();
        diff_ids.push(layer.diff_id.clone());
        let mut chain_ids = Digest::chain_ids(&diff_ids);
        let chain_id = chain_ids.pop()?;
        lock(&self.to_adopt).push(kiln_store::SnapshotToAdopt {
            chain_id: chain_id.clone(),
            parent: chain_ids.pop(),
            diff_id: layer.diff_id.clone(),
            dir,
        });
        Some(chain_id)
    }

    /// Stores `bytes` unless a blob with their digest is already there (a
    /// no-op rebuild writes the same config and manifest: skip the fsyncs).
    fn put_blob_once(&self, bytes: &[u8]) -> Result<kiln_store::BlobInfo, BuildError> {
        let digest = Digest::of_bytes(bytes);
        if self.store.has_blob(&digest) {
            self.lease.add_blob(&digest)?;
            // Re-check after taking the lease: a concurrent gc may have removed it.
            if self.store.has_blob(&digest) {
                return Ok(kiln_store::BlobInfo {
                    digest,
                    size: bytes.len() as u64,
                });
            }
        }
        Ok(self.store.put_blob(self.lease, bytes)?)
    }

    /// Writes the final config and manifest and records the image.
    fn write_image(&self, state: &StageState) -> Result<(Digest, Digest), BuildError> {
        let mut image = state.image.clone();
        let diff_ids: Vec<String> = state.layers.iter().map(|l| l.diff_id.to_string()).collect();
        image.insert(
            "rootfs".into(),
            json!({"type": "layers", "diff_ids": diff_ids}),
        );
        image.insert("created".into(), json!(state.created));
        let config_bytes =
            serde_json::to_vec(&Value::Object(image)).map_err(|e| BuildError::Io {
                what: "serialising the image config for",
                path: self.options.dockerfile_path.clone(),
                source: std::io::Error::other(e),
            })?;
        let config_blob = self.put_blob_once(&config_bytes)?;
        let layers: Vec<Value> = state
            .layers
            .iter()
            .map(|l| json!({"mediaType": l.media_type, "digest": l.blob.to_string(), "size": l.compressed_size}))
            .collect();
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_blob.digest.to_string(), "size": config_blob.size},
            "layers": layers,
        });
        let manifest_bytes = serde_json::to_vec(&manifest).unwrap_or_default();
        let manifest_blob = self.put_blob_once(&manifest_bytes)?;
        self.lease.add_image(&manifest_blob.digest)?;
        // A no-op rebuild yields the same manifest: nothing to record again.
        if self.store.image(&manifest_blob.digest)?.is_some() {
            return Ok((manifest_blob.digest, config_blob.digest));
        }
        self.store.put_image(&NewImage {
            manifest: manifest_blob.digest.clone(),
            manifest_media_type: OCI_MANIFEST.to_string(),
            config: config_blob.digest.clone(),
            created: Some(state.created.clone()),
            layers: state
                .layers
                .iter()
                .map(|l| LayerRecord {
                    blob: l.blob.clone(),
                    media_type: l.media_type.clone(),
                    compressed_size: l.compressed_size,
                    diff_id: l.diff_id.clone(),
                    size: l.size,
                })
                .collect(),
        })?;
        Ok((manifest_blob.digest, config_blob.digest))
    }
}

/// What one RUN step executes.
struct RunSpec {
    argv: Vec<String>,
    env: Vec<String>,
    user: String,
    cwd: String,
    mounts: Vec<kiln_sandbox::Mount>,
    network: Network,
}

#[derive(Clone, Copy)]
enum CopyKind<'a> {
    Copy(&'a Copy),
    Add(&'a Add),
}

/// `ENV a=1 b=2` as BuildKit writes it into the history.
/// Paths under `dir` (relative, `/`-separated) that the context scan left
/// out: the top-most of each excluded subtree. Directories the scan kept
/// are looked into; what they hold that the scan does not list was excluded.
fn excluded_paths(context: &Context, dir: &Path) -> Vec<Vec<u8>> {
    let mut excluded = Vec::new();
    let mut kept_dirs: Vec<Vec<u8>> = vec![Vec::new()];
    kept_dirs.extend(
        context
            .entries()
            .iter()
            .filter(|e| e.kind == crate::context::EntryKind::Dir)
            .map(|e| e.path.clone()),
    );
    for kept in kept_dirs {
        let real = dir.join(std::ffi::OsStr::from_bytes(&kept));
        let Ok(children) = fs::read_dir(&real) else {
            continue;
        };
        for child in children.flatten() {
            let mut rel = kept.clone();
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(child.file_name().as_bytes());
            if context.get(&rel).is_none() {
                excluded.push(rel);
            }
        }
    }
    excluded.sort();
    excluded
}

fn step_created_by_pairs(keyword: &str, pairs: &[kiln_dockerfile::instructions::Pair]) -> String {
    let list: Vec<String> = pairs
        .iter()
        .map(|p| format!("{}={}", p.key.value, p.value.value))
        .collect();
    format!("{keyword} {}", list.join(" "))
}

/// A path in the image: absolute as is, else relative to the working directory.
fn join_in_image(workdir: &str, path: &str) -> String {
    let joined = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{}/{}", workdir.trim_end_matches('/'), path)
    };
    format!("/{}", components(&joined).join("/"))
}

/// The shell script of a RUN with heredocs, as BuildKit runs it: a RUN that
/// is only `<<EOF` runs the heredoc's text; otherwise the command line is
/// followed by every heredoc body and terminator, and the shell itself feeds
/// them to the commands (and expands unquoted ones at run time).
fn run_heredoc_command(run: &kiln_dockerfile::instructions::Run) -> Option<String> {
    let CommandLine::Shell(text) = &run.command else {
        return None;
    };
    let first = run.heredocs.first()?;
    let line = text.value.trim();
    let marker = line.strip_prefix("<<").map(|rest| {
        rest.trim_start_matches('-')
            .trim_matches(|c| c == '"' || c == '\'')
    });
    if run.heredocs.len() == 1 && marker == Some(first.name.as_str()) {
        return Some(first.text());
    }
    let mut script = text.value.clone();
    for heredoc in &run.heredocs {
        script.push('\n');
        script.push_str(&heredoc.content);
        if !heredoc.content.is_empty() && !heredoc.content.ends_with('\n') {
            script.push('\n');
        }
        script.push_str(&heredoc.name);
    }
    Some(script)
}

/// Shell form through the stage's SHELL, exec form as written.
fn command_argv(command: &CommandLine, shell: &[String]) -> Vec<String> {
    match command {
        CommandLine::Shell(text) => {
            let mut argv = shell.to_vec();
            argv.push(text.value.clone());
            argv
        }
        CommandLine::Exec(words) => words.iter().map(|w| w.value.clone()).collect(),
    }
}

/// `EXPOSE` in the history as BuildKit writes it: Go's `%v` of the port
/// set, `map[53/udp:{} 80/tcp:{}]` (sorted).
fn expose_history(keys: &[String]) -> String {
    let mut sorted: Vec<&String> = keys.iter().collect();
    sorted.sort();
    sorted.dedup();
    let list: Vec<String> = sorted.iter().map(|k| format!("{k}:{{}}")).collect();
    format!("EXPOSE map[{}]", list.join(" "))
}

/// `HEALTHCHECK` in the history as BuildKit (Docker 20.10) writes it: Go's
/// `%q` of the health config, `&{["CMD-SHELL" "curl x"] "5s" "0s" "0s" '\x03'}`.
fn healthcheck_history(health: &Healthcheck) -> String {
    let (test, durations, retries) = match health {
        Healthcheck::None { .. } => (vec!["NONE".to_string()], [None; 3], 0),
        Healthcheck::Check(check) => {
            let mut test = Vec::new();
            match &check.command {
                CommandLine::Shell(text) => {
                    test.push("CMD-SHELL".to_string());
                    test.push(text.value.clone());
                }
                CommandLine::Exec(words) => {
                    test.push("CMD".to_string());
                    test.extend(words.iter().map(|w| w.value.clone()));
                }
            }
            (
                test,
                [check.interval, check.timeout, check.start_period],
                check.retries.unwrap_or(0),
            )
        }
    };
    let test: Vec<String> = test.iter().map(|t| go_quote(t)).collect();
    let durations: Vec<String> = durations
        .iter()
        .map(|d| format!("\"{}\"", go_duration(d.unwrap_or_default())))
        .collect();
    format!(
        "HEALTHCHECK &{{[{}] {} {}}}",
        test.join(" "),
        durations.join(" "),
        go_quote_rune(u64::from(retries))
    )
}

/// Go's `%q` of a string list, as BuildKit writes CMD and ENTRYPOINT into
/// the history: `["sh" "-c" "echo hi"]`.
fn go_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| go_quote(i)).collect();
    format!("[{}]", quoted.join(" "))
}

/// Go's `strconv.Quote` for the printable-ASCII-or-escaped cases.
fn go_quote(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `%q` of a small integer: a quoted rune literal (`'\x03'`, `'A'`).
fn go_quote_rune(value: u64) -> String {
    let named = match value {
        7 => Some("\\a"),
        8 => Some("\\b"),
        9 => Some("\\t"),
        10 => Some("\\n"),
        11 => Some("\\v"),
        12 => Some("\\f"),
        13 => Some("\\r"),
        39 => Some("\\'"),
        92 => Some("\\\\"),
        _ => None,
    };
    match (named, u8::try_from(value)) {
        (Some(text), _) => format!("'{text}'"),
        (None, Ok(byte)) if (0x20..0x7f).contains(&byte) => format!("'{}'", byte as char),
        (None, Ok(byte)) if byte < 0x80 => format!("'\\x{byte:02x}'"),
        _ => match char::from_u32(u32::try_from(value).unwrap_or(0xfffd)) {
            Some(c) if !c.is_control() => format!("'{c}'"),
            _ => format!("'\\u{value:04x}'"),
        },
    }
}

/// Go's `time.Duration.String()`: `0s`, `500ms`, `1.5s`, `1m30s`, `1h0m0s`.
fn go_duration(duration: std::time::Duration) -> String {
    let ns = duration.as_nanos();
    let fraction = |value: u128, unit: u128| -> String {
        let whole = value / unit;
        let rest = value % unit;
        if rest == 0 {
            return whole.to_string();
        }
        let digits = unit.ilog10() as usize;
        let text = format!("{rest:0digits$}");
        format!("{whole}.{}", text.trim_end_matches('0'))
    };
    if ns == 0 {
        "0s".to_string()
    } else if ns < 1_000 {
        format!("{ns}ns")
    } else if ns < 1_000_000 {
        format!("{}µs", fraction(ns, 1_000))
    } else if ns < 1_000_000_000 {
        format!("{}ms", fraction(ns, 1_000_000))
    } else {
        let hours = ns / 3_600_000_000_000;
        let minutes = (ns / 60_000_000_000) % 60;
        let seconds = fraction(ns % 60_000_000_000, 1_000_000_000);
        if hours > 0 {
            format!("{hours}h{minutes}m{seconds}s")
        } else if minutes > 0 {
            format!("{minutes}m{seconds}s")
        } else {
            format!("{seconds}s")
        }
    }
}

fn healthcheck_json(health: &Healthcheck) -> Value {
    match health {
        Healthcheck::None { .. } => json!({"Test": ["NONE"]}),
        Healthcheck::Check(check) => {
            let test: Vec<String> = match &check.command {
                CommandLine::Shell(text) => vec!["CMD-SHELL".into(), text.value.clone()],
                CommandLine::Exec(words) => {
                    let mut test = vec!["CMD".to_string()];
                    test.extend(words.iter().map(|w| w.value.clone()));
                    test
                }
            };
            let mut map = Map::new();
            map.insert("Test".into(), json!(test));
            for (key, value) in [
                ("Interval", check.interval),
                ("Timeout", check.timeout),
                ("StartPeriod", check.start_period),
                ("StartInterval", check.start_interval),
            ] {
                if let Some(duration) = value.filter(|d| !d.is_zero()) {
                    map.insert(key.into(), json!(duration.as_nanos() as u64));
                }
            }
            if let Some(retries) = check.retries.filter(|r| *r != 0) {
                map.insert("Retries".into(), json!(retries));
            }
            Value::Object(map)
        }
    }
}

/// The instruction after expansion as a stable string (no source positions),
/// for cache keys: moving an instruction to another line keeps its key.
fn canonical(command: &Command) -> String {
    let mut parts: Vec<String> = vec![command.keyword().to_string()];
    let text = |t: &kiln_dockerfile::ast::Text| t.value.clone();
    let opt = |t: &Option<kiln_dockerfile::ast::Text>| {
        t.as_ref()
            .map_or("\u{0}none".to_string(), |t| t.value.clone())
    };
    match command {
        Command::Run(run) => {
            parts.push(format!("exec={}", run.command.is_exec()));
            parts.extend(run.command.args());
            parts.push(format!("{:?}", run.network));
            parts.push(format!("{:?}", run.security));
            parts.extend(run.mounts.iter().map(|m| format!("{:?}", m.mount)));
            parts.extend(run.heredocs.iter().map(|h| h.content.clone()));
        }
        Command::Cmd(c) | Command::Entrypoint(c) => {
            parts.push(format!("exec={}", c.command.is_exec()));
            parts.extend(c.command.args());
        }
        Command::Copy(copy) => {
            parts.push(format!("from={}", opt(&copy.from)));
            parts.push(format!("chown={}", opt(&copy.chown)));
            parts.push(format!("chmod={}", opt(&copy.chmod)));
            parts.push(format!("link={} parents={}", copy.link, copy.parents));
            parts.extend(copy.exclude.iter().map(|e| format!("exclude={}", e.value)));
            for source in &copy.sources {
                parts.push(match source {
                    Source::Path(p) => format!("src={}", p.value),
                    Source::Heredoc(h) => format!("heredoc={}\n{}", h.name, h.content),
                });
            }
            parts.push(format!("dest={}", text(&copy.dest)));
        }
        Command::Add(add) => {
            parts.push(format!("chown={}", opt(&add.chown)));
            parts.push(format!("chmod={}", opt(&add.chmod)));
            parts.push(format!("checksum={}", opt(&add.checksum)));
            parts.push(format!(
                "link={} unpack={:?} keep_git_dir={}",
                add.link, add.unpack, add.keep_git_dir
            ));
            parts.extend(add.exclude.iter().map(|e| format!("exclude={}", e.value)));
            for source in &add.sources {
                parts.push(match source {
                    Source::Path(p) => format!("src={}", p.value),
                    Source::Heredoc(h) => format!("heredoc={}\n{}", h.name, h.content),
                });
            }
            parts.push(format!("dest={}", text(&add.dest)));
        }
        Command::Shell { shell, .. } => parts.extend(shell.iter().map(text)),
        Command::Healthcheck(health) => parts.push(healthcheck_json(health).to_string()),
        Command::Onbuild(onbuild) => parts.push(onbuild.expression.clone()),
        Command::Maintainer { name, .. } => parts.push(text(name)),
        other => parts.extend(other.expandable_words().into_iter().map(text)),
    }
    parts
        .iter()
        .map(|p| format!("{}:{p}", p.len()))
        .collect::<Vec<_>>()
        .join("\u{0}")
}

/// Writes the flattened root filesystem of a stored image into `dest` (an
/// empty or missing directory): `kiln build -o type=local,dest=DIR`.
pub fn export_filesystem(store: &Store, manifest: &Digest, dest: &Path) -> Result<(), BuildError> {
    let record = store.image(manifest)?.ok_or_else(|| BuildError::Io {
        what: "exporting image",
        path: dest.to_path_buf(),
        source: std::io::Error::other(format!("image {manifest} is not in the store")),
    })?;
    fs::create_dir_all(dest).map_err(io_error("creating export directory", dest))?;
    for layer in &record.layers {
        let file = store.open_blob(&layer.layer.blob)?;
        kiln_snapshot::apply_layer(
            BufReader::with_capacity(1 << 20, file),
            dest,
            &kiln_snapshot::ApplyOptions::default(),
        )
        .map_err(|e| BuildError::Io {
            what: "unpacking a layer into",
            path: dest.to_path_buf(),
            source: std::io::Error::other(e),
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_joined_under_the_workdir() {
        assert_eq!(join_in_image("/app", "x/y"), "/app/x/y");
        assert_eq!(join_in_image("/app", "/abs"), "/abs");
        assert_eq!(join_in_image("/", "."), "/");
        assert_eq!(join_in_image("/a/b", "../c/"), "/a/c");
    }

    #[test]
    fn history_texts_are_gos() {
        use std::time::Duration;
        assert_eq!(go_duration(Duration::ZERO), "0s");
        assert_eq!(go_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(go_duration(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(go_duration(Duration::from_micros(2)), "2µs");
        assert_eq!(go_quote_rune(0), "'\\x00'");
        assert_eq!(go_quote_rune(3), "'\\x03'");
        assert_eq!(go_quote_rune(65), "'A'");
        assert_eq!(go_quote_rune(10), "'\\n'");
        assert_eq!(go_quote("a \"b\"\\"), "\"a \\\"b\\\"\\\\\"");
        assert_eq!(
            expose_history(&["80/tcp".into(), "53/udp".into()]),
            "EXPOSE map[53/udp:{} 80/tcp:{}]"
        );
    }

    #[test]
    fn shell_form_goes_through_the_shell() {
        let shell = vec!["/bin/sh".to_string(), "-c".to_string()];
        let text = kiln_dockerfile::ast::Text {
            value: "echo hi".into(),
            span: Span::default(),
        };
        assert_eq!(
            command_argv(&CommandLine::Shell(text), &shell),
            vec!["/bin/sh", "-c", "echo hi"]
        );
    }
}
