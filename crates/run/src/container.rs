//! Container records under the store root:
//!
//! ```text
//! <root>/containers/<id>/config.json     what to run (ContainerConfig), written once
//! <root>/containers/<id>/state.json      status, pid, times, exit code (ContainerState), replaced atomically
//! <root>/containers/<id>/monitor.lock    flocked by the live monitor for its whole life
//! <root>/containers/<id>/<id>-json.log   output, docker's json-file format
//! <root>/containers/<id>/monitor.log     the detached monitor's own errors
//! <root>/containers/<id>/upper, work     the overlay's writable layer
//! <root>/containers/<id>/ephemeral       present for `--rm`: its files are not fsynced
//! <root>/containers/.names.lock          serialises name allocation
//! ```
//!
//! The state file alone is never trusted for "running": the monitor's lock
//! must be held too. A monitor that died (even by SIGKILL) drops its lock, and
//! its container (whose lifeline it was) died with it, so such a container is
//! reported exited.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::NetworkMode;
use crate::net::PortBinding;
use crate::{Result, RunError, ids, io_err, sys};

/// What a container runs, fixed at creation (docker's `Config` + `HostConfig`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerConfig {
    pub id: String,
    pub name: String,
    /// The image as the user named it (shown by `ps`).
    pub image: String,
    /// The image's config digest (docker's image ID).
    pub image_id: String,
    /// The image's manifest digest (what the store leases).
    pub image_manifest: String,
    /// RFC 3339 creation time and the same as Unix seconds.
    pub created: String,
    pub created_unix: i64,
    /// Entrypoint + Cmd after docker's override rules.
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    pub hostname: String,
    pub network: NetworkMode,
    pub ports: Vec<PortBinding>,
    pub tty: bool,
    pub open_stdin: bool,
    pub auto_remove: bool,
    /// Signal name or number for `stop` (image StopSignal, default SIGTERM).
    pub stop_signal: String,
    /// Seconds `stop` waits before SIGKILL when `-t` is not given.
    pub stop_timeout: u64,
    /// The HEALTHCHECK the monitor runs, if any.
    #[serde(default)]
    pub health: Option<crate::health::HealthCheck>,
    /// `-v HOST:CTR[:ro]` bind mounts.
    #[serde(default)]
    pub volumes: Vec<crate::config::VolumeMount>,
    /// `--read-only`.
    #[serde(default)]
    pub read_only: bool,
    /// `--init`.
    #[serde(default)]
    pub init: bool,
    /// Entrypoint and Cmd as docker's `Config` shows them (after the flags),
    /// for `inspect`; `argv` is what runs.
    #[serde(default)]
    pub entrypoint: Vec<String>,
    #[serde(default)]
    pub cmd: Vec<String>,
    /// The image's `ExposedPorts` keys (`8080/tcp`), for `inspect`.
    #[serde(default)]
    pub exposed_ports: Vec<String>,
}

/// The lifecycle state as the monitor records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Created,
    Running,
    Exited,
}

/// What the monitor wrote last.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerState {
    pub status: Status,
    /// Host pid of the container's PID 1 while running.
    pub pid: i32,
    pub monitor_pid: i32,
    pub started_at: Option<String>,
    pub started_unix: Option<i64>,
    pub finished_at: Option<String>,
    pub finished_unix: Option<i64>,
    pub exit_code: Option<i32>,
    /// Why it failed to start or why the monitor was lost.
    pub error: Option<String>,
    /// The published ports as bound (random host ports resolved).
    #[serde(default)]
    pub ports: Vec<PortBinding>,
}

impl ContainerState {
    pub fn created() -> ContainerState {
        ContainerState {
            status: Status::Created,
            pid: 0,
            monitor_pid: 0,
            started_at: None,
            started_unix: None,
            finished_at: None,
            finished_unix: None,
            exit_code: None,
            error: None,
            ports: Vec::new(),
        }
    }
}

/// The status as others must see it: the recorded state checked against the
/// monitor's lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    Created,
    Running { pid: i32, started_unix: i64 },
    Exited { code: i32, finished_unix: i64 },
}

/// Exit code reported for a container whose monitor disappeared: it was
/// killed with it (SIGKILL through PDEATHSIG), as 128 + 9.
pub const MONITOR_LOST_EXIT_CODE: i32 = 137;

/// Prefix of the store owner names of containers' image holds
/// (`container/<id>`).
pub const CONTAINER_OWNER_PREFIX: &str = "container/";

/// The containers of one store root.
#[derive(Debug, Clone)]
pub struct Containers {
    dir: PathBuf,
}

/// One container's directory.
#[derive(Debug, Clone)]
pub struct Container {
    pub id: String,
    pub dir: PathBuf,
}

fn now_unix() -> (i64, u32) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (now.as_secs() as i64, now.subsec_nanos())
}

/// Now as (RFC 3339 with nanoseconds, Unix seconds).
pub fn timestamp() -> (String, i64) {
    let (secs, nanos) = now_unix();
    (kiln_store::time::format_rfc3339(secs, nanos), secs)
}

impl Containers {
    /// The container directory of the store at `store_root` (created if missing).
    pub fn open(store_root: &Path) -> Result<Containers> {
        let dir = store_root.join("containers");
        fs::create_dir_all(&dir).map_err(io_err("creating the containers directory", &dir))?;
        Ok(Containers { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates a container record (config + state `created`), choosing a
    /// random name when `config.name` is empty. Names are unique: the check and
    /// the creation happen under one lock.
    pub fn create(&self, mut config: ContainerConfig) -> Result<Container> {
        let lock_path = self.dir.join(".names.lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err("opening", &lock_path))?;
        lock.lock().map_err(io_err("locking", &lock_path))?;
        let taken: Vec<String> = self
            .list()?
            .into_iter()
            .filter_map(|c| c.config().ok().map(|cfg| cfg.name))
            .collect();
        if config.name.is_empty() {
            let mut retry = 0;
            loop {
                let name = ids::random_name(retry);
                if !taken.contains(&name) {
                    config.name = name;
                    break;
                }
                retry += 1;
            }
        } else {
            let name = config.name.trim_start_matches('/').to_string();
            if !ids::valid_name(&name) {
                return Err(RunError::InvalidName(name));
            }
            if taken.contains(&name) {
                return Err(RunError::NameInUse(name));
            }
            config.name = name;
        }
        let dir = self.dir.join(&config.id);
        fs::create_dir(&dir).map_err(io_err("creating the container directory", &dir))?;
        let container = Container {
            id: config.id.clone(),
            dir,
        };
        let json = serde_json::to_vec_pretty(&config).map_err(|e| RunError::Corrupt {
            id: config.id.clone(),
            file: "config.json",
            why: e.to_string(),
        })?;
        if config.auto_remove {
            // Deleted when it exits: a crash can only leave garbage behind,
            // so its files are not fsynced (see `Container::durable`).
            File::create(container.dir.join(EPHEMERAL_MARK))
                .map_err(io_err("creating", container.dir.join(EPHEMERAL_MARK)))?;
        }
        write_file(
            &container.dir.join("config.json"),
            &json,
            !config.auto_remove,
        )?;
        container.write_state(&ContainerState::created())?;
        Ok(container)
    }

    /// Every container, newest first.
    pub fn list(&self) -> Result<Vec<Container>> {
        let mut found = Vec::new();
        let entries = fs::read_dir(&self.dir).map_err(io_err("listing", &self.dir))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
                found.push(Container {
                    id: name,
                    dir: entry.path(),
                });
            }
        }
        let mut with_time: Vec<(i64, Container)> = found
            .into_iter()
            .map(|c| (c.config().map(|cfg| cfg.created_unix).unwrap_or(0), c))
            .collect();
        with_time.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.id.cmp(&b.1.id)));
        Ok(with_time.into_iter().map(|(_, c)| c).collect())
    }

    /// Finds a container as docker does: full ID, then exact name, then a
    /// unique ID prefix.
    pub fn find(&self, text: &str) -> Result<Container> {
        let all = self.list()?;
        let wanted = text.trim_start_matches('/');
        if let Some(c) = all.iter().find(|c| c.id == wanted) {
            return Ok(c.clone());
        }
        if let Some(c) = all
            .iter()
            .find(|c| c.config().is_ok_and(|cfg| cfg.name == wanted))
        {
            return Ok(c.clone());
        }
        if !wanted.is_empty() && wanted.bytes().all(|b| b.is_ascii_hexdigit()) {
            let matches: Vec<&Container> =
                all.iter().filter(|c| c.id.starts_with(wanted)).collect();
            match matches.as_slice() {
                [one] => return Ok((*one).clone()),
                [] => {}
                many => {
                    return Err(RunError::Ambiguous {
                        prefix: text.to_string(),
                        count: many.len(),
                    });
                }
            }
        }
        Err(RunError::NoSuchContainer(text.to_string()))
    }
}

impl Container {
    pub fn short_id(&self) -> &str {
        ids::short_id(&self.id)
    }

    pub fn config(&self) -> Result<ContainerConfig> {
        let path = self.dir.join("config.json");
        let bytes = fs::read(&path).map_err(io_err("reading", &path))?;
        serde_json::from_slice(&bytes).map_err(|e| RunError::Corrupt {
            id: self.id.clone(),
            file: "config.json",
            why: e.to_string(),
        })
    }

    pub fn state(&self) -> Result<ContainerState> {
        let path = self.dir.join("state.json");
        let bytes = fs::read(&path).map_err(io_err("reading", &path))?;
        serde_json::from_slice(&bytes).map_err(|e| RunError::Corrupt {
            id: self.id.clone(),
            file: "state.json",
            why: e.to_string(),
        })
    }

    /// Replaces the state file atomically (readers see the old or the new one).
    pub fn write_state(&self, state: &ContainerState) -> Result<()> {
        let json = serde_json::to_vec_pretty(state).map_err(|e| RunError::Corrupt {
            id: self.id.clone(),
            file: "state.json",
            why: e.to_string(),
        })?;
        write_file(&self.dir.join("state.json"), &json, self.durable())
    }

    /// Whether the record must survive a crash: not for `--rm` containers,
    /// which are removed when they exit (their files skip the fsync).
    pub fn durable(&self) -> bool {
        !self.dir.join(EPHEMERAL_MARK).exists()
    }

    pub fn lock_path(&self) -> PathBuf {
        self.dir.join("monitor.lock")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join(format!("{}-json.log", self.id))
    }

    pub fn upper_dir(&self) -> PathBuf {
        self.dir.join("upper")
    }

    pub fn work_dir(&self) -> PathBuf {
        self.dir.join("work")
    }

    /// Opens the monitor lock file (created if missing).
    pub fn open_lock(&self) -> Result<File> {
        let path = self.lock_path();
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err("opening the monitor lock", &path))
    }

    /// True while a live monitor holds the lock.
    pub fn monitor_alive(&self) -> Result<bool> {
        let path = self.lock_path();
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io_err("opening the monitor lock", &path)(e)),
        };
        let free =
            sys::try_lock_shared(&file).map_err(io_err("testing the monitor lock", &path))?;
        Ok(!free)
    }

    /// Blocks until no monitor holds the lock (the container has finished and
    /// its state is final).
    pub fn wait_monitor_gone(&self) -> Result<()> {
        let path = self.lock_path();
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err("opening the monitor lock", &path)(e)),
        };
        sys::lock_shared(&file).map_err(io_err("waiting for the monitor lock", &path))
    }

    /// The status others should believe: "running" only while the monitor
    /// lives; a running record without a monitor is exited (the container
    /// died with its monitor).
    pub fn observe(&self) -> Result<Observed> {
        let state = self.state()?;
        Ok(match state.status {
            Status::Created => Observed::Created,
            Status::Exited => Observed::Exited {
                code: state.exit_code.unwrap_or(MONITOR_LOST_EXIT_CODE),
                finished_unix: state.finished_unix.unwrap_or(0),
            },
            Status::Running => {
                if self.monitor_alive()? {
                    Observed::Running {
                        pid: state.pid,
                        started_unix: state.started_unix.unwrap_or(0),
                    }
                } else {
                    // The monitor may have written "exited" just before dying.
                    let again = self.state()?;
                    match again.status {
                        Status::Exited => Observed::Exited {
                            code: again.exit_code.unwrap_or(MONITOR_LOST_EXIT_CODE),
                            finished_unix: again.finished_unix.unwrap_or(0),
                        },
                        _ => Observed::Exited {
                            code: MONITOR_LOST_EXIT_CODE,
                            finished_unix: file_mtime(&self.lock_path())
                                .unwrap_or(again.started_unix.unwrap_or(0)),
                        },
                    }
                }
            }
        })
    }

    /// Marks a container whose monitor died as exited, so its record is final.
    pub fn settle_lost_monitor(&self) -> Result<()> {
        let state = self.state()?;
        if state.status == Status::Running && !self.monitor_alive()? {
            let (at, unix) = timestamp();
            let mut state = self.state()?;
            if state.status == Status::Running {
                state.status = Status::Exited;
                state.exit_code = Some(MONITOR_LOST_EXIT_CODE);
                state.finished_at = Some(at);
                state.finished_unix = Some(unix);
                state.error = Some("the container's monitor process died".into());
                state.pid = 0;
                self.write_state(&state)?;
            }
        }
        Ok(())
    }

    /// The store's owner name for this container's hold on its image
    /// (`kiln_store::Store::hold_image`).
    pub fn image_owner(&self) -> String {
        format!("{CONTAINER_OWNER_PREFIX}{}", self.id)
    }

    /// The store root this container belongs to (`<root>/containers/<id>`).
    fn store_root(&self) -> Option<&Path> {
        self.dir.parent()?.parent()
    }

    /// Deletes the container's directory (upper dir, logs and all) after
    /// releasing its hold on its image (a `--rm` container takes none).
    pub fn remove_files(&self) -> Result<()> {
        let holds = self.config().map_or(true, |c| !c.auto_remove);
        if holds
            && let Some(root) = self.store_root()
            && root.join("kiln.db").exists()
        {
            kiln_store::Store::open(root)?.release_holds(&self.image_owner())?;
        }
        match fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("removing the container directory", &self.dir)(e)),
        }
    }
}

fn file_mtime(path: &Path) -> Option<i64> {
    let modified = fs::metadata(path).ok()?.modified().ok()?;
    Some(
        modified
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_secs() as i64,
    )
}

/// Writes `bytes` to a temp file next to `path`, fsyncs, renames over `path`.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_file(path, bytes, true)
}

/// Replaces `path` atomically (readers see the old or the new bytes), and
/// durably (fsynced before the rename) when `durable`.
fn write_file(path: &Path, bytes: &[u8], durable: bool) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut file = File::create(&tmp).map_err(io_err("creating", &tmp))?;
    file.write_all(bytes).map_err(io_err("writing", &tmp))?;
    if durable {
        file.sync_all().map_err(io_err("syncing", &tmp))?;
    }
    fs::rename(&tmp, path).map_err(io_err("renaming into place", path))
}

/// Marks the directory of a `--rm` container (see `Container::durable`).
const EPHEMERAL_MARK: &str = "ephemeral";

#[cfg(test)]
mod tests {
    use super::*;

    fn config(id: &str, name: &str) -> ContainerConfig {
        ContainerConfig {
            id: id.into(),
            name: name.into(),
            image: "busybox".into(),
            image_id: "sha256:00".into(),
            image_manifest: "sha256:00".into(),
            created: "2026-01-01T00:00:00Z".into(),
            created_unix: 1,
            argv: vec!["sh".into()],
            env: vec![],
            working_dir: "/".into(),
            user: String::new(),
            hostname: "h".into(),
            network: NetworkMode::None,
            ports: vec![],
            tty: false,
            open_stdin: false,
            auto_remove: false,
            stop_signal: "SIGTERM".into(),
            stop_timeout: 10,
            health: None,
            volumes: vec![],
            read_only: false,
            init: false,
            entrypoint: vec![],
            cmd: vec!["sh".into()],
            exposed_ports: vec![],
        }
    }

    #[test]
    fn create_find_by_id_prefix_and_name() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let containers = Containers::open(tmp.path()).expect("open");
        let a = containers
            .create(config(&"ab".repeat(32), "web"))
            .expect("create a");
        let b = containers
            .create(config(&"ac".repeat(32), ""))
            .expect("create b");
        assert_eq!(containers.find("web").expect("by name").id, a.id);
        assert_eq!(containers.find("/web").expect("by /name").id, a.id);
        assert_eq!(containers.find("aba").expect("by prefix").id, a.id);
        assert_eq!(containers.find(&b.id).expect("by id").id, b.id);
        assert!(ids::valid_name(&b.config().expect("config").name));
        assert!(matches!(
            containers.find("a"),
            Err(RunError::Ambiguous { count: 2, .. })
        ));
        assert!(matches!(
            containers.find("ffff"),
            Err(RunError::NoSuchContainer(_))
        ));
        assert!(matches!(
            containers.create(config(&"ad".repeat(32), "web")),
            Err(RunError::NameInUse(_))
        ));
        assert_eq!(a.observe().expect("observe"), Observed::Created);
    }

    #[test]
    fn running_without_monitor_is_observed_exited() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let containers = Containers::open(tmp.path()).expect("open");
        let c = containers
            .create(config(&"cd".repeat(32), "x"))
            .expect("create");
        let lock = c.open_lock().expect("lock");
        assert!(sys::try_lock_exclusive(&lock).expect("flock"));
        let mut state = ContainerState::created();
        state.status = Status::Running;
        state.pid = 12345;
        state.started_unix = Some(5);
        c.write_state(&state).expect("write");
        assert!(matches!(
            c.observe().expect("observe"),
            Observed::Running { pid: 12345, .. }
        ));
        drop(lock);
        assert!(matches!(
            c.observe().expect("observe"),
            Observed::Exited {
                code: MONITOR_LOST_EXIT_CODE,
                ..
            }
        ));
        c.settle_lost_monitor().expect("settle");
        assert_eq!(c.state().expect("state").status, Status::Exited);
    }
}
