//! The container verbs: `kiln run`, `ps`, `logs`, `stop`, `kill`, `rm`,
//! `wait`, `exec` (and the hidden `__monitor` a detached run re-execs), with
//! docker's flags, output shapes and exit codes (125 kiln's own error, 126
//! command not executable, 127 command not found, else the container's code).
//! The work is done by kiln-run; this module parses arguments and renders.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use kiln_run::container::Container;
use kiln_run::control::{self, ExecOptions};
use kiln_run::logs::{LogEntry, read_entries};
use kiln_run::monitor::{self, Attach};
use kiln_run::net::PortBinding;
use kiln_run::{Containers, NetworkMode, Observed, RunError, RunOptions};

use super::output::{ellipsis, human_duration, human_size4, table, time_ago};

/// Container verbs (flattened into `kiln <verb>`).
#[derive(Subcommand)]
pub enum ContainerVerb {
    /// Create and run a new container from an image
    Run(Box<RunArgs>),
    /// List containers
    Ps(PsArgs),
    /// Fetch the logs of a container
    Logs(LogsArgs),
    /// Start one or more stopped containers (in the background)
    Start(StartArgs),
    /// Stop one or more running containers (stop signal, then SIGKILL)
    Stop(StopArgs),
    /// Kill one or more running containers
    Kill(KillArgs),
    /// Remove one or more containers
    Rm(RmArgs),
    /// Block until one or more containers stop, then print their exit codes
    Wait(WaitArgs),
    /// Execute a command in a running container
    Exec(ExecArgs),
    /// Manage containers (`kiln container inspect|ls|rm|stop|kill|wait|logs|exec`)
    #[command(subcommand)]
    Container(ContainerCommand),
    /// (internal) the per-container monitor of `kiln run -d`
    #[command(name = "__monitor", hide = true)]
    Monitor { id: String },
}

/// `kiln container ...`
#[derive(Subcommand)]
pub enum ContainerCommand {
    /// Display detailed information on one or more containers as JSON
    Inspect(InspectArgs),
    /// List containers
    #[command(alias = "list", alias = "ps")]
    Ls(PsArgs),
    /// Remove one or more containers
    Rm(RmArgs),
    /// Stop one or more running containers
    Stop(StopArgs),
    /// Kill one or more running containers
    Kill(KillArgs),
    /// Block until one or more containers stop, then print their exit codes
    Wait(WaitArgs),
    /// Fetch the logs of a container
    Logs(LogsArgs),
    /// Execute a command in a running container
    Exec(ExecArgs),
    /// Create and run a new container from an image
    Run(Box<RunArgs>),
    /// Remove all stopped containers
    Prune(ContainerPruneArgs),
}

#[derive(Args)]
pub struct ContainerPruneArgs {
    /// Do not prompt for confirmation
    #[arg(short, long)]
    force: bool,
}

#[derive(Args)]
pub struct InspectArgs {
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Args)]
pub struct RunArgs {
    /// Run in the background and print the container ID
    #[arg(short, long)]
    detach: bool,
    /// Remove the container when it exits
    #[arg(long)]
    rm: bool,
    /// Assign a name to the container
    #[arg(long)]
    name: Option<String>,
    /// Set environment variables (KEY=VALUE, or KEY to copy kiln's value)
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Working directory inside the container
    #[arg(short, long = "workdir")]
    workdir: Option<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>])
    #[arg(short, long)]
    user: Option<String>,
    /// Overwrite the default ENTRYPOINT of the image
    #[arg(long)]
    entrypoint: Option<String>,
    /// Keep STDIN open and forward it
    #[arg(short, long)]
    interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short, long)]
    tty: bool,
    /// Network: default (own namespace, -p publishes ports), none, host
    #[arg(long, default_value = "default")]
    network: String,
    /// Publish a container's port to the host ([IP:]HOST_PORT:CONTAINER_PORT[/tcp])
    #[arg(short, long = "publish")]
    publish: Vec<String>,
    /// Publish all exposed ports to random host ports
    #[arg(short = 'P', long)]
    publish_all: bool,
    /// Container host name
    #[arg(long)]
    hostname: Option<String>,
    /// Signal to stop the container
    #[arg(long)]
    stop_signal: Option<String>,
    /// Seconds to wait before killing the container on stop
    #[arg(long)]
    stop_timeout: Option<u64>,
    /// Command to run to check health (overrides the image's HEALTHCHECK)
    #[arg(long)]
    health_cmd: Option<String>,
    /// Time between running the check (ms|s|m|h)
    #[arg(long)]
    health_interval: Option<String>,
    /// Maximum time to allow one check to run (ms|s|m|h)
    #[arg(long)]
    health_timeout: Option<String>,
    /// Start period for the container to initialize before counting failures
    #[arg(long)]
    health_start_period: Option<String>,
    /// Consecutive failures needed to report unhealthy
    #[arg(long)]
    health_retries: Option<u32>,
    /// Disable any container-specified HEALTHCHECK
    #[arg(long)]
    no_healthcheck: bool,
    /// Bind mount a host directory (/HOST:/CONTAINER[:ro])
    #[arg(short, long = "volume")]
    volume: Vec<String>,
    /// Read in a file of environment variables
    #[arg(long)]
    env_file: Vec<PathBuf>,
    /// Mount the container's root filesystem as read only
    #[arg(long)]
    read_only: bool,
    /// Run an init inside the container that forwards signals and reaps processes
    #[arg(long)]
    init: bool,
    /// The image to run
    image: String,
    /// Command and arguments (override the image's CMD)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

#[derive(Args)]
pub struct PsArgs {
    /// Show all containers (default shows just running)
    #[arg(short, long)]
    all: bool,
    /// Only display container IDs
    #[arg(short, long)]
    quiet: bool,
    /// Don't truncate output
    #[arg(long)]
    no_trunc: bool,
    /// Output format: table (default) or json (one object per line, as docker)
    #[arg(long, default_value = "table")]
    format: String,
}

#[derive(Args)]
pub struct LogsArgs {
    /// Follow log output
    #[arg(short, long)]
    follow: bool,
    /// Number of lines to show from the end of the logs ("all" for every line)
    #[arg(short = 'n', long, default_value = "all")]
    tail: String,
    /// Show timestamps
    #[arg(short, long)]
    timestamps: bool,
    /// Show logs since a timestamp (RFC 3339 or Unix seconds) or a relative time (e.g. 42m)
    #[arg(long)]
    since: Option<String>,
    container: String,
}

#[derive(Args)]
pub struct StartArgs {
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Args)]
pub struct StopArgs {
    /// Seconds to wait before killing the container
    #[arg(short, long = "time")]
    time: Option<u64>,
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Args)]
pub struct KillArgs {
    /// Signal to send to the container
    #[arg(short, long, default_value = "KILL")]
    signal: String,
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Args)]
pub struct RmArgs {
    /// Force the removal of a running container (uses SIGKILL)
    #[arg(short, long)]
    force: bool,
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Args)]
pub struct WaitArgs {
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Args)]
pub struct ExecArgs {
    /// Keep STDIN open and forward it
    #[arg(short, long)]
    interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short, long)]
    tty: bool,
    /// Username or UID (format: <name|uid>[:<group|gid>])
    #[arg(short, long)]
    user: Option<String>,
    /// Working directory inside the container
    #[arg(short, long = "workdir")]
    workdir: Option<String>,
    /// Set environment variables
    #[arg(short, long = "env")]
    env: Vec<String>,
    container: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    command: Vec<String>,
}

pub fn run(root: &Path, verb: ContainerVerb) -> Result<ExitCode> {
    // The monitor re-execs kiln from `/`: give it an absolute root.
    let root = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
    let root = root.as_path();
    match verb {
        ContainerVerb::Run(a) => Ok(run_container(root, *a)),
        ContainerVerb::Ps(a) => ps(root, a),
        ContainerVerb::Logs(a) => logs(root, a),
        ContainerVerb::Start(a) => {
            let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
            each(root, &a.containers, |c| {
                if matches!(c.observe()?, Observed::Running { .. }) || c.monitor_alive()? {
                    return Ok(()); // docker: starting a running container is a no-op
                }
                monitor::spawn_detached(&exe, root, c)
            })
        }
        ContainerVerb::Stop(a) => each(root, &a.containers, |c| {
            control::stop(c, a.time.map(Duration::from_secs))
        }),
        ContainerVerb::Kill(a) => {
            let signal = kiln_run::signal::parse_signal(&a.signal)?;
            each(root, &a.containers, |c| control::kill(c, signal))
        }
        ContainerVerb::Rm(a) => each(root, &a.containers, |c| control::remove(c, a.force)),
        ContainerVerb::Wait(a) => wait(root, a),
        ContainerVerb::Exec(a) => Ok(exec(root, a)),
        ContainerVerb::Container(c) => match c {
            ContainerCommand::Inspect(a) => inspect(root, a),
            ContainerCommand::Ls(a) => run(root, ContainerVerb::Ps(a)),
            ContainerCommand::Rm(a) => run(root, ContainerVerb::Rm(a)),
            ContainerCommand::Stop(a) => run(root, ContainerVerb::Stop(a)),
            ContainerCommand::Kill(a) => run(root, ContainerVerb::Kill(a)),
            ContainerCommand::Wait(a) => run(root, ContainerVerb::Wait(a)),
            ContainerCommand::Logs(a) => run(root, ContainerVerb::Logs(a)),
            ContainerCommand::Exec(a) => run(root, ContainerVerb::Exec(a)),
            ContainerCommand::Run(a) => run(root, ContainerVerb::Run(a)),
            ContainerCommand::Prune(a) => container_prune(root, a),
        },
        ContainerVerb::Monitor { id } => {
            let containers = Containers::open(root)?;
            let container = containers.find(&id)?;
            Ok(exit_code(monitor::detached_main(root, &container)))
        }
    }
}

fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code & 0xff).unwrap_or(1))
}

/// Prints a kiln error docker-style and returns docker's exit code for it.
fn fail(err: &RunError) -> ExitCode {
    eprintln!("kiln: {err}");
    exit_code(monitor::start_failure_exit_code(err))
}

/// docker's refusal of `-it` when kiln's stdin is no terminal (a pipe or a
/// file cannot drive a terminal's line discipline: the shell would never see
/// its end of input).
fn stdin_is_not_a_tty(interactive: bool, tty: bool) -> bool {
    use std::io::IsTerminal;
    if interactive && tty && !std::io::stdin().is_terminal() {
        eprintln!("the input device is not a TTY");
        return true;
    }
    false
}

fn run_container(root: &Path, args: RunArgs) -> ExitCode {
    if !args.detach && stdin_is_not_a_tty(args.interactive, args.tty) {
        return ExitCode::FAILURE;
    }
    let store = match super::image::open_store(root) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kiln: {e:#}");
            return exit_code(125);
        }
    };
    let result = (|| -> Result<Container, RunError> {
        let containers = Containers::open(root)?;
        let mut options = RunOptions::new(&args.image);
        options.cmd = args.command.clone();
        options.entrypoint = args.entrypoint.clone();
        options.env = Vec::new();
        for file in &args.env_file {
            options.env.extend(kiln_run::config::read_env_file(file)?);
        }
        options.env.extend(args.env.iter().cloned());
        options.volumes = args
            .volume
            .iter()
            .map(|v| kiln_run::config::VolumeMount::parse(v))
            .collect::<Result<_, _>>()?;
        options.read_only = args.read_only;
        options.publish_all = args.publish_all;
        options.init = args.init;
        options.workdir = args.workdir.clone();
        options.user = args.user.clone();
        options.hostname = args.hostname.clone();
        options.name = args.name.clone();
        options.network = NetworkMode::parse(&args.network)?;
        options.ports = args
            .publish
            .iter()
            .map(|p| PortBinding::parse(p))
            .collect::<Result<_, _>>()?;
        options.tty = args.tty;
        options.interactive = args.interactive;
        options.auto_remove = args.rm;
        options.stop_signal = args.stop_signal.clone();
        options.stop_timeout = args.stop_timeout;
        let duration = |d: &Option<String>| {
            d.as_deref()
                .map(kiln_run::health::parse_duration)
                .transpose()
        };
        options.health = kiln_run::health::HealthFlags {
            cmd: args.health_cmd.clone(),
            interval: duration(&args.health_interval)?,
            timeout: duration(&args.health_timeout)?,
            start_period: duration(&args.health_start_period)?,
            retries: args.health_retries,
            disabled: args.no_healthcheck,
        };
        if let Some(signal) = &options.stop_signal {
            kiln_run::signal::parse_signal(signal)?;
        }
        control::create(&store, &containers, &options)
    })();
    drop(store);
    let container = match result {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    if args.detach {
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
        return match monitor::spawn_detached(&exe, root, &container) {
            Ok(()) => {
                println!("{}", container.id);
                ExitCode::SUCCESS
            }
            Err(e) => {
                if args.rm {
                    let _ = container.remove_files();
                }
                fail(&e)
            }
        };
    }
    let attach = Attach {
        stdin: args.interactive,
        tty: args.tty,
    };
    let finished = monitor::supervise(root, &container, Some(attach), |_| {});
    if args.rm {
        let _ = container.remove_files();
    }
    match finished {
        Ok(f) => exit_code(f.exit_code),
        Err(e) => fail(&e),
    }
}

/// Bytes under `dir`, not following symlinks (a container's writable layer).
fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|e| Some((e.path(), e.file_type().ok()?, e.metadata().ok()?)))
        .map(|(path, kind, meta)| {
            if kind.is_dir() {
                dir_size(&path)
            } else {
                meta.len()
            }
        })
        .sum()
}

/// `kiln container prune`: removes every container that is not running (and
/// with it, its hold on its image), as docker's.
fn container_prune(root: &Path, args: ContainerPruneArgs) -> Result<ExitCode> {
    if !args.force && !super::image::confirm("WARNING! This will remove all stopped containers.")? {
        return Ok(ExitCode::SUCCESS);
    }
    let reclaimed = prune_stopped_containers(root)?;
    println!("Total reclaimed space: {}", human_size4(reclaimed));
    Ok(ExitCode::SUCCESS)
}

/// Removes every stopped container (`container prune`, and the first part
/// of `system prune`), printing docker's "Deleted Containers:" block;
/// returns the bytes their writable layers held.
pub fn prune_stopped_containers(root: &Path) -> Result<u64> {
    let containers = Containers::open(root)?;
    let mut deleted = Vec::new();
    let mut reclaimed = 0;
    for container in containers.list()? {
        let stopped = match container.observe() {
            Ok(Observed::Exited { .. }) => true,
            Ok(Observed::Created) => !container.monitor_alive().unwrap_or(true),
            _ => false,
        };
        if !stopped {
            continue;
        }
        let size = dir_size(&container.upper_dir());
        // A container started meanwhile is refused by remove (not forced).
        if control::remove(&container, false).is_ok() {
            reclaimed += size;
            deleted.push(container.id.clone());
        }
    }
    if !deleted.is_empty() {
        println!("Deleted Containers:");
        for id in &deleted {
            println!("{id}");
        }
        println!();
    }
    Ok(reclaimed)
}

/// Applies `action` to each named container, printing each name as docker
/// does; errors are printed and make the exit code 1.
fn each(
    root: &Path,
    names: &[String],
    action: impl Fn(&Container) -> Result<(), RunError>,
) -> Result<ExitCode> {
    let containers = Containers::open(root)?;
    let mut failed = false;
    for name in names {
        match containers.find(name).and_then(|c| action(&c)) {
            Ok(()) => println!("{name}"),
            Err(e) => {
                eprintln!("Error response from kiln: {e}");
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

fn wait(root: &Path, args: WaitArgs) -> Result<ExitCode> {
    let containers = Containers::open(root)?;
    let mut failed = false;
    for name in &args.containers {
        match containers.find(name).and_then(|c| control::wait(&c)) {
            Ok(code) => println!("{code}"),
            Err(e) => {
                eprintln!("Error response from kiln: {e}");
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

fn exec(root: &Path, args: ExecArgs) -> ExitCode {
    if stdin_is_not_a_tty(args.interactive, args.tty) {
        return ExitCode::FAILURE;
    }
    let result = (|| -> Result<i32, RunError> {
        let containers = Containers::open(root)?;
        let container = containers.find(&args.container)?;
        control::exec(
            &container,
            &ExecOptions {
                argv: args.command.clone(),
                env: args.env.clone(),
                user: args.user.clone(),
                workdir: args.workdir.clone(),
                interactive: args.interactive,
                tty: args.tty,
            },
        )
    })();
    match result {
        Ok(code) => exit_code(code),
        Err(e) => fail(&e),
    }
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// docker's STATUS column.
fn status_text(container: &Container, observed: &Observed) -> String {
    match observed {
        Observed::Created => "Created".into(),
        Observed::Running { started_unix, .. } => {
            let up = format!(
                "Up {}",
                human_duration((now_secs() - started_unix).max(0) as f64)
            );
            match kiln_run::health::read(container) {
                Some(h) if h.status == "starting" => format!("{up} (health: starting)"),
                Some(h) => format!("{up} ({})", h.status),
                None => up,
            }
        }
        Observed::Exited {
            code,
            finished_unix,
        } => format!("Exited ({code}) {}", time_ago(*finished_unix)),
    }
}

fn ps(root: &Path, args: PsArgs) -> Result<ExitCode> {
    if args.format != "table" && args.format != "json" {
        anyhow::bail!(
            "unsupported --format {:?}: kiln ps knows \"table\" and \"json\"",
            args.format
        );
    }
    let containers = Containers::open(root)?;
    let mut rows = vec![
        [
            "CONTAINER ID",
            "IMAGE",
            "COMMAND",
            "CREATED",
            "STATUS",
            "PORTS",
            "NAMES",
        ]
        .map(String::from)
        .to_vec(),
    ];
    let mut out = String::new();
    for container in containers.list()? {
        // A record being created or removed concurrently: skip it.
        let (Ok(config), Ok(observed)) = (container.config(), container.observe()) else {
            continue;
        };
        let running = matches!(observed, Observed::Running { .. });
        if !args.all && !running {
            continue;
        }
        let id = if args.no_trunc {
            container.id.clone()
        } else {
            container.short_id().to_string()
        };
        if args.quiet {
            out.push_str(&id);
            out.push('\n');
            continue;
        }
        let command = config.argv.join(" ");
        let command = if args.no_trunc {
            command
        } else {
            ellipsis(&command, 20)
        };
        let ports = if running {
            // As bound by the monitor (random host ports resolved).
            let bound = container.state().map(|s| s.ports).unwrap_or_default();
            let shown = if bound.is_empty() {
                &config.ports
            } else {
                &bound
            };
            shown
                .iter()
                .map(PortBinding::display)
                .collect::<Vec<_>>()
                .join(", ")
        } else {
            String::new()
        };
        if args.format == "json" {
            let state = match observed {
                Observed::Created => "created",
                Observed::Running { .. } => "running",
                Observed::Exited { .. } => "exited",
            };
            // docker's Go time.Time form: "2026-11-25 17:50:45 +0000 UTC".
            let created_at = kiln_store::time::format_rfc3339(config.created_unix, 0)
                .trim_end_matches('Z')
                .replacen('T', " ", 1)
                + " +0000 UTC";
            let line = serde_json::json!({
                "ID": id,
                "Image": config.image,
                "Command": format!("{command:?}"),
                "CreatedAt": created_at,
                "Labels": "",
                "LocalVolumes": "0",
                "Mounts": config
                    .volumes
                    .iter()
                    .map(|v| v.source.display().to_string())
                    .collect::<Vec<_>>()
                    .join(","),
                "Size": "0B",
                "RunningFor": time_ago(config.created_unix),
                "State": state,
                "Status": status_text(&container, &observed),
                "Ports": ports,
                "Names": config.name,
                "Networks": config.network.as_str(),
            });
            out.push_str(&line.to_string());
            out.push('\n');
            continue;
        }
        rows.push(vec![
            id,
            config.image.clone(),
            format!("{command:?}"),
            time_ago(config.created_unix),
            status_text(&container, &observed),
            ports,
            config.name.clone(),
        ]);
    }
    if !args.quiet && args.format != "json" {
        out = table(&rows);
    }
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

fn print_entry(entry: &LogEntry, timestamps: bool) {
    let text = if timestamps {
        format!("{} {}", entry.time, entry.log)
    } else {
        entry.log.clone()
    };
    if entry.stream == "stderr" {
        let mut err = std::io::stderr();
        let _ = err.write_all(text.as_bytes());
        let _ = err.flush();
    } else {
        let mut out = std::io::stdout();
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }
}

fn logs(root: &Path, args: LogsArgs) -> Result<ExitCode> {
    let containers = Containers::open(root)?;
    let container = containers.find(&args.container)?;
    let tail: Option<usize> =
        if args.tail == "all" || args.tail.starts_with('-') {
            None
        } else {
            Some(args.tail.parse().with_context(|| {
                format!("invalid --tail {:?}: give a number or \"all\"", args.tail)
            })?)
        };
    let path = container.log_path();
    let mut file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Never started: no output yet.
            if !args.follow {
                return Ok(ExitCode::SUCCESS);
            }
            loop {
                if let Ok(f) = File::open(&path) {
                    break f;
                }
                if !container.monitor_alive()? {
                    return Ok(ExitCode::SUCCESS);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut data = Vec::new();
    file.read_to_end(&mut data)
        .with_context(|| format!("reading {}", path.display()))?;
    // Only complete lines; a torn last line is picked up by --follow.
    let complete = data.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
    let since = args.since.as_deref().map(parse_since).transpose()?;
    let entries: Vec<LogEntry> = read_entries(&data[..complete])
        .into_iter()
        .filter(|e| since.is_none_or(|s| entry_secs(e) >= s))
        .collect();
    let skip = tail.map_or(0, |n| entries.len().saturating_sub(n));
    for entry in entries.iter().skip(skip) {
        print_entry(entry, args.timestamps);
    }
    if !args.follow {
        return Ok(ExitCode::SUCCESS);
    }
    let mut offset = complete as u64;
    loop {
        let alive = container.monitor_alive().unwrap_or(false);
        file.seek(SeekFrom::Start(offset))?;
        let mut more = Vec::new();
        file.read_to_end(&mut more)?;
        let complete = more.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
        for entry in read_entries(&more[..complete]) {
            print_entry(&entry, args.timestamps);
        }
        offset += complete as u64;
        if !alive {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// docker's `{"8080/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]}` map.
fn port_map(
    ports: &[PortBinding],
    exposed: &[String],
) -> serde_json::Map<String, serde_json::Value> {
    let mut map = serde_json::Map::new();
    // Exposed but not published: listed with null, as docker does.
    for key in exposed {
        map.insert(key.clone(), serde_json::Value::Null);
    }
    for port in ports {
        let key = format!("{}/{}", port.container_port, port.protocol);
        let host_port = if port.host_port == 0 {
            String::new()
        } else {
            port.host_port.to_string()
        };
        let binding =
            serde_json::json!({"HostIp": port.host_ip.to_string(), "HostPort": host_port});
        match map.get_mut(&key).and_then(serde_json::Value::as_array_mut) {
            Some(list) => list.push(binding),
            None => {
                map.insert(key, serde_json::json!([binding]));
            }
        }
    }
    map
}

/// docker-inspect-shaped JSON of one container.
fn inspect_one(container: &Container) -> Result<serde_json::Value, RunError> {
    let config = container.config()?;
    let state = container.state()?;
    let observed = container.observe()?;
    let (status, running, pid, exit_code) = match &observed {
        Observed::Created => ("created", false, 0, 0),
        Observed::Running { pid, .. } => ("running", true, *pid, 0),
        Observed::Exited { code, .. } => ("exited", false, 0, *code),
    };
    let zero_time = "0001-01-01T00:00:00Z".to_string();
    // Docker keeps the last health after the container stops, its status
    // set to "unhealthy" ("unhealthy when the monitor has stopped").
    let health = kiln_run::health::read(container).map(|mut h| {
        if !running {
            h.status = "unhealthy".into();
        }
        h
    });
    let healthcheck = config.health.as_ref().map(|h| {
        let nanos = |ms: u64| ms * 1_000_000;
        serde_json::json!({
            "Test": if h.test.is_empty() {
                std::iter::once("CMD".to_string()).chain(h.argv.iter().cloned()).collect()
            } else {
                h.test.clone()
            },
            "Interval": nanos(h.interval_ms),
            "Timeout": nanos(h.timeout_ms),
            "StartPeriod": nanos(h.start_period_ms),
            "Retries": h.retries,
        })
    });
    // Published ports as bound while running (random host ports resolved).
    let network_ports = if running {
        port_map(&state.ports, &config.exposed_ports)
    } else {
        serde_json::Map::new()
    };
    let exposed: serde_json::Map<String, serde_json::Value> = config
        .exposed_ports
        .iter()
        .chain(
            config
                .ports
                .iter()
                .map(|p| format!("{}/{}", p.container_port, p.protocol))
                .collect::<Vec<_>>()
                .iter(),
        )
        .map(|k| (k.clone(), serde_json::json!({})))
        .collect();
    let nullable = |v: &Vec<String>| {
        if v.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::json!(v)
        }
    };
    let binds: Vec<String> = config
        .volumes
        .iter()
        .map(|v| {
            format!(
                "{}:{}{}",
                v.source.display(),
                v.target,
                if v.readonly { ":ro" } else { "" }
            )
        })
        .collect();
    let mounts: Vec<serde_json::Value> = config
        .volumes
        .iter()
        .map(|v| {
            serde_json::json!({
                "Type": "bind",
                "Source": v.source,
                "Destination": v.target,
                "Mode": if v.readonly { "ro" } else { "" },
                "RW": !v.readonly,
                "Propagation": "rprivate",
            })
        })
        .collect();
    Ok(serde_json::json!({
        "Id": config.id,
        "Created": config.created,
        "Path": config.argv.first().cloned().unwrap_or_default(),
        "Args": config.argv.iter().skip(1).collect::<Vec<_>>(),
        "State": {
            "Status": status,
            "Running": running,
            "Paused": false,
            "Restarting": false,
            "OOMKilled": false,
            "Dead": false,
            "Pid": pid,
            "ExitCode": exit_code,
            "Error": state.error.clone().unwrap_or_default(),
            "StartedAt": state.started_at.clone().unwrap_or_else(|| zero_time.clone()),
            "FinishedAt": state.finished_at.clone().unwrap_or(zero_time),
            "Health": health,
        },
        "Image": config.image_id,
        "LogPath": container.log_path(),
        "Name": format!("/{}", config.name),
        "Driver": "overlay2",
        "Mounts": mounts,
        "HostConfig": {
            "Binds": if binds.is_empty() { serde_json::Value::Null } else { serde_json::json!(binds) },
            "NetworkMode": config.network.as_str(),
            "PortBindings": port_map(&config.ports, &[]),
            "PublishAllPorts": false,
            "AutoRemove": config.auto_remove,
            "ReadonlyRootfs": config.read_only,
            "Init": config.init,
            "LogConfig": {"Type": "json-file", "Config": {}},
        },
        "Config": {
            "Hostname": config.hostname,
            "Domainname": "",
            "User": config.user,
            "AttachStdin": false,
            "AttachStdout": false,
            "AttachStderr": false,
            "ExposedPorts": if exposed.is_empty() { serde_json::Value::Null } else { serde_json::Value::Object(exposed) },
            "Tty": config.tty,
            "OpenStdin": config.open_stdin,
            "Env": config.env,
            "Cmd": nullable(&config.cmd),
            "Healthcheck": healthcheck,
            "Image": config.image,
            "WorkingDir": config.working_dir,
            "Entrypoint": nullable(&config.entrypoint),
            "StopSignal": config.stop_signal,
        },
        "NetworkSettings": {
            "Ports": network_ports,
        },
    }))
}

/// The containers holding an image (see `kiln_store::Store::hold_image`), as
/// (short ID, running), running first: what `kiln rmi` names in docker's
/// conflicts. A hold whose container record is gone is released here.
pub fn containers_using(
    store: &kiln_store::Store,
    manifest: &kiln_store::Digest,
) -> Vec<(String, bool)> {
    let Ok(owners) = store.image_owners(manifest) else {
        return Vec::new();
    };
    let Ok(containers) = Containers::open(store.root()) else {
        return Vec::new();
    };
    let mut users = Vec::new();
    for owner in owners {
        let Some(id) = owner.strip_prefix(kiln_run::container::CONTAINER_OWNER_PREFIX) else {
            continue;
        };
        let dir = containers.dir().join(id);
        if !dir.join("config.json").exists() {
            let _ = store.release_holds(&owner);
            continue;
        }
        let container = Container {
            id: id.to_string(),
            dir,
        };
        let running = matches!(container.observe(), Ok(Observed::Running { .. }));
        users.push((container.short_id().to_string(), running));
    }
    users.sort_by_key(|(_, running)| !running);
    users
}

/// `kiln inspect NAME` when NAME is no image: the container's JSON, or
/// `None` when there is no such container either.
pub fn inspect_container(root: &Path, name: &str) -> Option<serde_json::Value> {
    let root = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
    let containers = Containers::open(&root).ok()?;
    let container = containers.find(name).ok()?;
    inspect_one(&container).ok()
}

fn inspect(root: &Path, args: InspectArgs) -> Result<ExitCode> {
    let containers = Containers::open(root)?;
    let mut found = Vec::new();
    let mut failed = false;
    for name in &args.containers {
        match containers.find(name).and_then(|c| inspect_one(&c)) {
            Ok(value) => found.push(value),
            Err(e) => {
                eprintln!("Error: {e}");
                failed = true;
            }
        }
    }
    println!("{}", serde_json::to_string_pretty(&found)?);
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `--since`: RFC 3339, Unix seconds, or a Go duration before now; Unix seconds.
fn parse_since(text: &str) -> Result<i64> {
    if let Some(secs) = kiln_store::time::parse_rfc3339(text) {
        return Ok(secs);
    }
    if let Ok(secs) = text.split('.').next().unwrap_or(text).parse::<i64>() {
        return Ok(secs);
    }
    let ago = kiln_run::health::parse_duration(text).with_context(|| {
        format!("invalid --since {text:?}: give a timestamp or a duration like 10m")
    })?;
    Ok(now_secs() - ago.as_secs() as i64)
}

fn entry_secs(entry: &LogEntry) -> i64 {
    kiln_store::time::parse_rfc3339(&entry.time).unwrap_or(0)
}
