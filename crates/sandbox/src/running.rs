//! A started sandbox: waiting, signalling, stdio, and `run` which streams its
//! output to a callback.

use crate::SandboxError;
use crate::process::{io_err, spawn};
use crate::rootfs::remove_stubs;
use crate::spec::{ExitStatus, SandboxSpec, Stream};
use crate::sys::{self, Errno};
use libc::c_int;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A started sandbox. Dropping it without `wait` kills (SIGKILL) and reaps it.
#[derive(Debug)]
pub struct Running {
    pub(crate) pid: libc::pid_t,
    pub(crate) pidfd: OwnedFd,
    pub(crate) stdin: Option<File>,
    pub(crate) stdout: Option<File>,
    pub(crate) stderr: Option<File>,
    pub(crate) pty: Option<File>,
    pub(crate) stubs: Vec<String>,
    pub(crate) stub_base: Option<PathBuf>,
    pub(crate) status: Option<ExitStatus>,
}

impl Running {
    /// The host pid of the container's PID 1.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// A pidfd for the process: becomes readable when it exits (for poll/epoll).
    pub fn pidfd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.pidfd.as_fd()
    }

    /// The write end of stdin (with `Stdin::Pipe`).
    pub fn take_stdin(&mut self) -> Option<File> {
        self.stdin.take()
    }

    /// The read end of stdout (with `Output::Pipe`).
    pub fn take_stdout(&mut self) -> Option<File> {
        self.stdout.take()
    }

    /// The read end of stderr (with `Output::Pipe`).
    pub fn take_stderr(&mut self) -> Option<File> {
        self.stderr.take()
    }

    /// The pseudo-terminal master (with `tty`).
    pub fn take_pty(&mut self) -> Option<File> {
        self.pty.take()
    }

    /// Sends `signal` to the container's PID 1 (through the pidfd, so never to a
    /// recycled pid). Signalling an exited process is not an error.
    pub fn kill(&self, signal: i32) -> Result<(), SandboxError> {
        match sys::pidfd_send_signal(self.pidfd.as_raw_fd(), signal) {
            Ok(()) | Err(Errno(libc::ESRCH)) => Ok(()),
            Err(e) => Err(SandboxError::Io {
                what: "signalling the sandbox process",
                path: format!("pid {}", self.pid).into(),
                source: e.io(),
            }),
        }
    }

    fn wait_flags(&mut self, flags: c_int) -> Result<Option<ExitStatus>, SandboxError> {
        if let Some(status) = self.status {
            return Ok(Some(status));
        }
        loop {
            // SAFETY: info is plain old data filled by waitid.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: valid pointer; P_PIDFD waits for exactly our child.
            let r = unsafe {
                libc::waitid(
                    libc::P_PIDFD,
                    self.pidfd.as_raw_fd() as libc::id_t,
                    &mut info,
                    libc::WEXITED | flags,
                )
            };
            if r < 0 {
                let errno = Errno::last();
                if errno.0 == libc::EINTR {
                    continue;
                }
                return Err(SandboxError::Io {
                    what: "waiting for the sandbox process",
                    path: format!("pid {}", self.pid).into(),
                    source: errno.io(),
                });
            }
            // SAFETY: reading the fields waitid filled.
            let (pid, code, status) = unsafe { (info.si_pid(), info.si_code, info.si_status()) };
            if pid == 0 {
                return Ok(None);
            }
            let status = if code == libc::CLD_EXITED {
                ExitStatus::Exited(status)
            } else {
                ExitStatus::Signaled(status)
            };
            self.status = Some(status);
            // The namespace is gone with PID 1, so the stubs are no longer mount
            // points: remove the ones the process left empty.
            if let Some(base) = &self.stub_base {
                remove_stubs(base, &std::mem::take(&mut self.stubs));
            }
            return Ok(Some(status));
        }
    }

    /// Waits for PID 1 to exit (every other process of the sandbox dies with it)
    /// and removes the mount stubs it created.
    pub fn wait(&mut self) -> Result<ExitStatus, SandboxError> {
        self.wait_flags(0)?.ok_or_else(|| SandboxError::Io {
            what: "waiting for the sandbox process",
            path: format!("pid {}", self.pid).into(),
            source: std::io::Error::other("waitid returned no status"),
        })
    }

    /// The exit status if the process has exited, without blocking.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>, SandboxError> {
        self.wait_flags(libc::WNOHANG)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.kill(libc::SIGKILL);
            let _ = self.wait();
        }
    }
}

/// Runs the spec to completion, calling `sink` with each chunk of stdout/stderr
/// as it arrives (requires `Output::Pipe` for the streams to see; with `tty`
/// the terminal's output arrives as `Stream::Stdout`). Kills the
/// process and returns `SandboxError::Timeout` when `spec.timeout` passes.
pub fn run(
    spec: &SandboxSpec,
    mut sink: impl FnMut(Stream, &[u8]),
) -> Result<ExitStatus, SandboxError> {
    let deadline = spec.timeout.map(|t| Instant::now() + t);
    let mut running = spawn(spec)?;
    let mut streams: Vec<(Stream, File)> = Vec::new();
    if let Some(out) = running.take_stdout() {
        streams.push((Stream::Stdout, out));
    }
    if let Some(err) = running.take_stderr() {
        streams.push((Stream::Stderr, err));
    }
    // On a terminal both streams are one: report it as stdout. (EIO once the
    // last slave fd closes ends it like EOF.)
    if let Some(pty) = running.take_pty() {
        streams.push((Stream::Stdout, pty));
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut timed_out = false;
    loop {
        let mut pollfds: Vec<libc::pollfd> = streams
            .iter()
            .map(|(_, f)| libc::pollfd {
                fd: f.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        if streams.is_empty() {
            pollfds.push(libc::pollfd {
                fd: running.pidfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let timeout_ms = match deadline {
            Some(d) if !timed_out => {
                let left = d.saturating_duration_since(Instant::now());
                left.as_millis().min(i32::MAX as u128) as c_int
            }
            _ => -1,
        };
        // SAFETY: pollfds is a valid array.
        let n = unsafe {
            libc::poll(
                pollfds.as_mut_ptr(),
                pollfds.len() as libc::nfds_t,
                timeout_ms,
            )
        };
        if n < 0 {
            if Errno::last().0 == libc::EINTR {
                continue;
            }
            return Err(io_err("polling sandbox output", "poll")(Errno::last()));
        }
        if n == 0 {
            if deadline.is_some_and(|d| Instant::now() >= d) && !timed_out {
                timed_out = true;
                running.kill(libc::SIGKILL)?;
            }
            continue;
        }
        if streams.is_empty() {
            break;
        }
        let mut closed = Vec::new();
        for (index, pfd) in pollfds.iter().enumerate() {
            if pfd.revents == 0 {
                continue;
            }
            let Some((stream, file)) = streams.get_mut(index) else {
                continue;
            };
            match file.read(&mut buf) {
                Ok(0) => closed.push(index),
                Ok(n) => sink(*stream, &buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => closed.push(index),
            }
        }
        for index in closed.into_iter().rev() {
            streams.remove(index);
        }
        if streams.is_empty() {
            break;
        }
    }
    let status = running.wait()?;
    if timed_out {
        return Err(SandboxError::Timeout(
            spec.timeout.unwrap_or(Duration::ZERO),
        ));
    }
    Ok(status)
}
