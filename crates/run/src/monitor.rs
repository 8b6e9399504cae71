//! The per-container monitor: what conmon / containerd-shim are for docker.
//!
//! It holds the container's `monitor.lock` for its whole life, leases the
//! image in the store, builds the overlay root (the image's snapshots under the
//! container's own `upper/`), the network namespace and the published ports,
//! spawns the container through `kiln-sandbox` (so it is the container's
//! lifeline: if the monitor dies, the container dies), copies its output into
//! the json-file log (and, attached, to the terminal), records `running`, and
//! at the end records the exit code *before* reaping the process — so a pidfd
//! opened while the state says `running` always names the container, never a
//! recycled pid.
//!
//! `kiln run -d` starts it with [`spawn_detached`], which re-execs kiln with
//! the hidden `__monitor` subcommand; that process calls [`detached_main`],
//! which forks again (the parent exits, so the monitor is re-parented and is
//! nobody's child), after `setsid` in the first child (no controlling
//! terminal). Attached `kiln run` calls [`supervise`] itself.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use kiln_sandbox::{
    InjectedFile, Network, Output, RootFs, Running, SandboxError, SandboxSpec, Stdin, WinSize,
};

use crate::config::NetworkMode;
use crate::container::{Container, ContainerState, Status, timestamp};
use crate::logs::LogWriter;
use crate::net::{NetNs, bind_ports, start_proxies};
use crate::{Result, RunError, io_err, sys};

/// How an attached `kiln run` / `kiln exec` is connected to the terminal.
#[derive(Debug, Clone, Copy)]
pub struct Attach {
    /// Forward kiln's stdin to the container (`-i`).
    pub stdin: bool,
    /// The container has a pseudo-terminal (`-t`).
    pub tty: bool,
}

/// How the container ended, as docker reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finished {
    pub exit_code: i32,
}

/// The name of the hidden subcommand `spawn_detached` runs.
pub const MONITOR_SUBCOMMAND: &str = "__monitor";

/// Starts the container of `container` and supervises it until it exits.
/// `on_started` is called once: with `Ok` when it runs, or with the error
/// that kept it from starting (the record then stays `created` with that
/// error, as docker leaves a container that failed to start).
pub fn supervise(
    store_root: &Path,
    container: &Container,
    attach: Option<Attach>,
    on_started: impl FnOnce(std::result::Result<(), &RunError>),
) -> Result<Finished> {
    let lock = container.open_lock()?;
    if !sys::try_lock_exclusive(&lock).map_err(io_err("locking", container.lock_path()))? {
        let err = RunError::InvalidArgument(format!(
            "container {} already has a monitor (it is running or starting)",
            container.short_id()
        ));
        on_started(Err(&err));
        return Err(err);
    }
    // Signals for an attached container are forwarded to it: block them in
    // this thread before any other thread (spawner, proxies) exists, so they
    // inherit the mask and the signalfd below receives them.
    let signals = match attach {
        Some(a) => {
            Some(SignalForwarder::install(a.tty).map_err(io_err("blocking signals", "signalfd"))?)
        }
        None => None,
    };
    let mut started = Some(on_started);
    let result = start_and_pump(
        store_root,
        container,
        attach,
        signals.as_ref(),
        &mut started,
    );
    if let Err(err) = &result
        && let Some(report) = started.take()
    {
        let mut state = container
            .state()
            .unwrap_or_else(|_| ContainerState::created());
        state.error = Some(err.to_string());
        let _ = container.write_state(&state);
        report(Err(err));
    }
    drop(lock);
    result
}

fn start_and_pump(
    store_root: &Path,
    container: &Container,
    attach: Option<Attach>,
    signals: Option<&SignalForwarder>,
    started: &mut Option<impl FnOnce(std::result::Result<(), &RunError>)>,
) -> Result<Finished> {
    let config = container.config()?;
    let mut netns = None;
    let mut slirp_starting = None;
    let mut listeners = Vec::new();
    let network = match config.network {
        NetworkMode::Host => Network::Host,
        NetworkMode::None => Network::None,
        NetworkMode::Default => {
            // Ports first: a port in use must fail before anything starts.
            listeners = bind_ports(&config.ports)?;
            let ns = NetNs::create()?;
            slirp_starting = ns.start_slirp()?;
            let path = ns.path();
            netns = Some(Arc::new(ns));
            Network::Join(path)
        }
    };
    let store = kiln_store::Store::open(store_root)?;
    let lease = store.lease();
    let manifest = kiln_store::Digest::parse(&config.image_manifest)?;
    // Records made before containers held their image get the hold now.
    if !config.auto_remove {
        store.hold_image(&container.image_owner(), &manifest)?;
    }
    let image = store
        .image_as_recorded(&manifest)?
        .ok_or_else(|| RunError::NoSuchImage(format!("{} ({})", config.image, config.image_id)))?;
    let mut lower_dirs =
        kiln_store::image_ops::unpack_image(&store, &lease, &image).map_err(|e| {
            RunError::Image {
                image: config.image.clone(),
                why: e.to_string(),
            }
        })?;
    lower_dirs.reverse();
    let upper = container.upper_dir();
    let work = container.work_dir();
    fs::create_dir_all(&upper).map_err(io_err("creating the container's upper dir", &upper))?;
    // overlayfs wants an empty work dir; a previous run may have left one.
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).map_err(io_err("creating the container's work dir", &work))?;

    // slirp4netns needs tens of ms to configure the namespace: let it work
    // while the store part above ran, and only wait for it here.
    let slirp = match slirp_starting {
        Some(starting) => Some(starting.wait_ready()?),
        None => None,
    };

    let mut spec = SandboxSpec::new(
        RootFs::Overlay {
            lower_dirs,
            upper_dir: upper,
            work_dir: work,
        },
        config.argv.clone(),
    );
    spec.env = config.env.clone();
    spec.cwd = config.working_dir.clone();
    spec.user = config.user.clone();
    spec.hostname = config.hostname.clone();
    spec.readonly_rootfs = config.read_only;
    spec.init = config.init;
    for volume in &config.volumes {
        // docker creates a missing host directory for -v.
        if !volume.source.exists() {
            fs::create_dir_all(&volume.source).map_err(io_err(
                "creating the volume's host directory",
                &volume.source,
            ))?;
        }
        spec.mounts.push(kiln_sandbox::Mount::bind(
            &volume.source,
            volume.target.clone(),
            volume.readonly,
        ));
    }
    spec.network = network;
    spec.files = generated_files(&config.hostname, config.network, slirp.is_some());
    spec.stdin = if config.open_stdin {
        Stdin::Pipe
    } else {
        Stdin::Null
    };
    spec.stdout = Output::Pipe;
    spec.stderr = Output::Pipe;
    if config.tty {
        spec.tty = Some(
            attach
                .filter(|a| a.tty)
                .and_then(|_| terminal_size())
                .unwrap_or(WinSize { rows: 24, cols: 80 }),
        );
    }

    let mut running = kiln_sandbox::spawn(&spec)?;
    let (started_at, started_unix) = timestamp();
    let mut state = container.state()?;
    state.status = Status::Running;
    state.pid = running.pid();
    state.monitor_pid = std::process::id() as i32;
    state.started_at = Some(started_at);
    state.started_unix = Some(started_unix);
    state.finished_at = None;
    state.finished_unix = None;
    state.exit_code = None;
    state.error = None;
    state.ports = listeners.iter().map(|(port, _)| port.clone()).collect();
    container.write_state(&state)?;
    // Health is "starting" before anyone is told the container runs.
    let stop_health = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let _ = fs::remove_file(container.dir.join("health.json"));
    if let Some(check) = config.health.clone() {
        crate::health::start(
            container.clone(),
            check,
            running.pid(),
            config.env.clone(),
            config.user.clone(),
            config.working_dir.clone(),
            Arc::clone(&stop_health),
        );
    }
    if let Some(report) = started.take() {
        report(Ok(()));
    }
    if let Some(ns) = &netns {
        start_proxies(Arc::clone(ns), listeners);
    }

    let mut log = LogWriter::create(&container.log_path())
        .map_err(io_err("opening the container log", container.log_path()))?;
    let _raw = match attach {
        Some(a) if a.tty && a.stdin => RawTerminal::enter(),
        _ => None,
    };
    let pumped = pump(&mut running, Some(&mut log), attach, signals);
    stop_health.store(true, std::sync::atomic::Ordering::Relaxed);
    pumped?;
    let _ = log.flush_partial();

    // Record the end before reaping: until the reap, the pid cannot be reused.
    let status = exit_status_without_reaping(&running)?;
    let (finished_at, finished_unix) = timestamp();
    let mut state = container.state()?;
    state.status = Status::Exited;
    state.exit_code = Some(status);
    state.finished_at = Some(finished_at);
    state.finished_unix = Some(finished_unix);
    state.pid = 0;
    container.write_state(&state)?;
    running.wait()?;
    drop(slirp);
    drop(netns);
    drop(lease);
    Ok(Finished { exit_code: status })
}

/// /etc/hostname, /etc/hosts and /etc/resolv.conf for the container, as docker
/// writes them (bind-mounted, never part of the container's layer).
fn generated_files(hostname: &str, network: NetworkMode, slirp: bool) -> Vec<InjectedFile> {
    let hosts = if network == NetworkMode::Host {
        fs::read_to_string("/etc/hosts").unwrap_or_default()
    } else {
        format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
             fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n\
             ff02::2\tip6-allrouters\n127.0.1.1\t{hostname}\n"
        )
    };
    // Through slirp4netns, DNS goes to its forwarder (the host's resolvers);
    // the host's own file may name a loopback resolver unreachable from here.
    let resolv = if slirp {
        format!("nameserver {}\n", crate::net::SLIRP_DNS)
    } else {
        fs::read_to_string("/etc/resolv.conf").unwrap_or_default()
    };
    [
        ("/etc/hostname", format!("{hostname}\n")),
        ("/etc/hosts", hosts),
        ("/etc/resolv.conf", resolv),
    ]
    .into_iter()
    .map(|(target, contents)| InjectedFile {
        target: target.into(),
        contents: contents.into_bytes(),
        mode: 0o644,
        readonly: false,
    })
    .collect()
}

/// The exit code (docker's: code, or 128 + signal) of an exited process,
/// leaving it a zombie (`WNOWAIT`).
fn exit_status_without_reaping(running: &Running) -> Result<i32> {
    loop {
        // SAFETY: zeroed siginfo is valid; waitid fills it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: valid pidfd and pointer.
        let r = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                running.pidfd().as_raw_fd() as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if r < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(io_err(
                "waiting for the container",
                format!("pid {}", running.pid()),
            )(err));
        }
        // SAFETY: waitid filled these fields.
        let (code, status) = unsafe { (info.si_code, info.si_status()) };
        return Ok(if code == libc::CLD_EXITED {
            status
        } else {
            128 + status
        });
    }
}

/// Blocks the signals an attached session forwards and reads them from a signalfd.
pub(crate) struct SignalForwarder {
    fd: OwnedFd,
}

impl SignalForwarder {
    pub(crate) fn install(tty: bool) -> io::Result<SignalForwarder> {
        // SAFETY: sigset manipulation on a local, then masking this thread.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for sig in [
                libc::SIGINT,
                libc::SIGTERM,
                libc::SIGHUP,
                libc::SIGQUIT,
                libc::SIGUSR1,
                libc::SIGUSR2,
            ] {
                libc::sigaddset(&mut set, sig);
            }
            if tty {
                libc::sigaddset(&mut set, libc::SIGWINCH);
            }
            if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
            let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(SignalForwarder {
                fd: OwnedFd::from_raw_fd(fd),
            })
        }
    }

    fn read_signal(&self) -> Option<i32> {
        // SAFETY: plain old data filled by read.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: buffer of the right size.
        let n = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                (&mut info as *mut libc::signalfd_siginfo).cast(),
                size,
            )
        };
        (n == size as isize).then_some(info.ssi_signo as i32)
    }
}

/// Kiln's terminal size, if its stdin or stdout is a terminal.
pub(crate) fn terminal_size() -> Option<WinSize> {
    for fd in [0, 1] {
        // SAFETY: zeroed winsize is valid; ioctl fills it.
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: TIOCGWINSZ on a valid fd with a valid pointer.
        if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_row > 0 {
            return Some(WinSize {
                rows: ws.ws_row,
                cols: ws.ws_col,
            });
        }
    }
    None
}

fn copy_winsize(to: &File) {
    if let Some(size) = terminal_size() {
        let ws = libc::winsize {
            ws_row: size.rows,
            ws_col: size.cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ on the pty master with a valid pointer.
        unsafe { libc::ioctl(to.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    }
}

/// Puts kiln's stdin terminal in raw mode (so keys reach the container's
/// terminal untouched) and restores it on drop.
pub(crate) struct RawTerminal {
    saved: libc::termios,
}

impl RawTerminal {
    pub(crate) fn enter() -> Option<RawTerminal> {
        // SAFETY: isatty/tcgetattr/tcsetattr on fd 0 with valid pointers.
        unsafe {
            if libc::isatty(0) != 1 {
                return None;
            }
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut saved) != 0 {
                return None;
            }
            let mut raw = saved;
            libc::cfmakeraw(&mut raw);
            // Keep output post-processing so "\n" from the container still
            // renders as docker's client does.
            raw.c_oflag = saved.c_oflag;
            if libc::tcsetattr(0, libc::TCSANOW, &raw) != 0 {
                return None;
            }
            Some(RawTerminal { saved })
        }
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        // SAFETY: restoring the attributes read in enter().
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &self.saved) };
    }
}

/// Copies the container's output to the log and/or kiln's stdout/stderr and
/// kiln's stdin to the container until the process has exited and its output
/// is drained. Forwards signals when attached.
pub(crate) fn pump(
    running: &mut Running,
    mut log: Option<&mut LogWriter>,
    attach: Option<Attach>,
    signals: Option<&SignalForwarder>,
) -> Result<()> {
    const OUT: usize = 0;
    const ERR: usize = 1;
    const PTY: usize = 2;
    const STDIN: usize = 3;
    const PIDFD: usize = 4;
    const SIG: usize = 5;
    let mut out = running.take_stdout();
    let mut err = running.take_stderr();
    let mut pty = running.take_pty();
    let mut container_stdin = running.take_stdin();
    // Kiln's own stdin, forwarded when attached with -i.
    let mut our_stdin = attach.filter(|a| a.stdin).map(|_| 0);
    let mut exited = false;
    let mut buf = vec![0u8; 64 * 1024];
    let mut stdout = io::stdout();
    let mut stderr = io::stderr();
    loop {
        if exited && out.is_none() && err.is_none() && pty.is_none() {
            return Ok(());
        }
        let mut fds: Vec<(usize, libc::pollfd)> = Vec::with_capacity(6);
        let mut add = |slot: usize, fd: i32| {
            fds.push((
                slot,
                libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                },
            ))
        };
        if let Some(f) = &out {
            add(OUT, f.as_raw_fd());
        }
        if let Some(f) = &err {
            add(ERR, f.as_raw_fd());
        }
        if let Some(f) = &pty {
            add(PTY, f.as_raw_fd());
        }
        if let Some(fd) = our_stdin {
            add(STDIN, fd);
        }
        if !exited {
            add(PIDFD, running.pidfd().as_raw_fd());
        }
        if let Some(s) = signals {
            add(SIG, s.fd.as_raw_fd());
        }
        let mut raw: Vec<libc::pollfd> = fds.iter().map(|(_, p)| *p).collect();
        // After the exit, do not wait forever for output that never closes
        // (a daemon in the container that kept a pipe is gone with PID 1, so
        // this only guards against surprises).
        let timeout = if exited { 2000 } else { -1 };
        // SAFETY: valid array of pollfds.
        let n = unsafe { libc::poll(raw.as_mut_ptr(), raw.len() as libc::nfds_t, timeout) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(io_err("polling the container's output", "poll")(e));
        }
        if n == 0 && exited {
            return Ok(());
        }
        for ((slot, _), polled) in fds.iter().zip(raw.iter()) {
            if polled.revents == 0 {
                continue;
            }
            match *slot {
                OUT | ERR | PTY => {
                    let (file, stream) = match *slot {
                        OUT => (&mut out, "stdout"),
                        ERR => (&mut err, "stderr"),
                        _ => (&mut pty, "stdout"),
                    };
                    let Some(f) = file.as_mut() else { continue };
                    match f.read(&mut buf) {
                        Ok(0) | Err(_) => {
                            // EOF, or EIO on a pty whose last slave closed.
                            *file = None;
                        }
                        Ok(n) => {
                            let chunk = &buf[..n];
                            if let Some(log) = log.as_deref_mut() {
                                let _ = log.write(stream, chunk);
                            }
                            if attach.is_some() {
                                let sink: &mut dyn Write = if stream == "stderr" {
                                    &mut stderr
                                } else {
                                    &mut stdout
                                };
                                let _ = sink.write_all(chunk);
                                let _ = sink.flush();
                            }
                        }
                    }
                }
                STDIN => {
                    // SAFETY: reading into a valid buffer from fd 0.
                    let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
                    if n <= 0 {
                        our_stdin = None;
                        // EOF on kiln's stdin: close the container's (pipe) stdin.
                        container_stdin = None;
                        continue;
                    }
                    let chunk = &buf[..n as usize];
                    let target = pty.as_mut().or(container_stdin.as_mut());
                    if let Some(t) = target
                        && t.write_all(chunk).is_err()
                    {
                        our_stdin = None;
                    }
                }
                PIDFD => exited = true,
                SIG => {
                    if let Some(sig) = signals.and_then(SignalForwarder::read_signal) {
                        if sig == libc::SIGWINCH {
                            if let Some(p) = &pty {
                                copy_winsize(p);
                            }
                        } else {
                            let _ = running.kill(sig);
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

/// `kiln run -d`: starts a daemonised monitor for `container` by re-executing
/// `kiln_exe` as `kiln --root ROOT __monitor ID`, and returns once the
/// container runs (or with the reason it could not start).
pub fn spawn_detached(kiln_exe: &Path, store_root: &Path, container: &Container) -> Result<()> {
    let mut fds = [0i32; 2];
    // SAFETY: valid array for pipe2.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io_err("creating a pipe", "pipe2")(
            io::Error::last_os_error(),
        ));
    }
    // SAFETY: pipe2 returned two fresh fds that we now own.
    let (read_end, write_end) =
        unsafe { (File::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let monitor_log = container.dir.join("monitor.log");
    let log = File::create(&monitor_log).map_err(io_err("creating", &monitor_log))?;
    let ready_fd = write_end.as_raw_fd();
    let mut command = Command::new(kiln_exe);
    command
        .arg("--root")
        .arg(store_root)
        .arg(MONITOR_SUBCOMMAND)
        .arg(&container.id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .current_dir("/");
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            // fd 3 carries the start report; dup2 clears its CLOEXEC.
            if libc::dup2(ready_fd, 3) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .map_err(io_err("starting the container monitor", kiln_exe))?;
    drop(write_end);
    // The first child forks the real monitor and exits at once.
    let _ = child.wait();
    let mut report = String::new();
    let _ = (&read_end).read_to_string(&mut report);
    let report = report.trim();
    if report == "ok" {
        return Ok(());
    }
    if report.is_empty() {
        let why = fs::read_to_string(&monitor_log).unwrap_or_default();
        return Err(RunError::MonitorStart {
            code: 125,
            message: format!(
                "it exited without a report{}",
                if why.trim().is_empty() {
                    String::new()
                } else {
                    format!(": {}", why.trim())
                }
            ),
        });
    }
    // "error CODE: message"
    let rest = report.strip_prefix("error ").unwrap_or(report);
    let (code, message) = rest
        .split_once(": ")
        .and_then(|(code, message)| Some((code.parse().ok()?, message)))
        .unwrap_or((125, rest));
    Err(RunError::MonitorStart {
        code,
        message: message.to_string(),
    })
}

/// The hidden `__monitor` subcommand. Must be called while the process is
/// single-threaded (it forks). Returns the process exit code for the
/// intermediate (parent) process only; the monitor itself exits from here.
pub fn detached_main(store_root: &Path, container: &Container) -> i32 {
    // SAFETY: single-threaded here (called first thing by the binary).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let err = io::Error::last_os_error();
        report_ready(Err(&io_err("forking the monitor", "fork")(err)));
        return 1;
    }
    if pid > 0 {
        // The intermediate process: exit so the monitor is orphaned and
        // adopted by init (never a zombie of the kiln that started it).
        // SAFETY: exiting without running destructors that share state with the child.
        unsafe { libc::_exit(0) };
    }
    // Whatever the caller of `kiln run -d` had open (beyond stdio and the
    // report fd) must not stay open for the container's whole life.
    // SAFETY: plain syscall; fds 0-3 are kept.
    unsafe { libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32) };
    let finished = supervise(store_root, container, None, report_ready);
    let code = match finished {
        Ok(f) => f.exit_code,
        Err(e) => {
            eprintln!("kiln monitor for {}: {e}", container.id);
            125
        }
    };
    if container.config().is_ok_and(|c| c.auto_remove) {
        let _ = container.remove_files();
    }
    code
}

/// Writes the start report to fd 3 (see `spawn_detached`) and closes it.
fn report_ready(result: std::result::Result<(), &RunError>) {
    // SAFETY: fd 3 was set up by spawn_detached for us; we take ownership once.
    let mut file = unsafe { File::from_raw_fd(3) };
    let text = match result {
        Ok(()) => "ok\n".to_string(),
        Err(e) => format!("error {}: {e}\n", start_failure_exit_code(e)),
    };
    let _ = file.write_all(text.as_bytes());
}

/// Why a container did not start, mapped to docker's exit codes: 127 when the
/// command was not found, 126 when it could not be executed, 125 otherwise.
pub fn start_failure_exit_code(err: &RunError) -> i32 {
    match err {
        RunError::Sandbox(SandboxError::ExecNotFound { .. }) => 127,
        RunError::Sandbox(SandboxError::Exec { .. }) => 126,
        RunError::MonitorStart { code, .. } => *code,
        _ => 125,
    }
}
