//! The few raw syscalls this crate needs (pidfds, flock, poll), wrapped to
//! return `io::Result`.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// `pidfd_open(pid)`: a handle that keeps meaning this process even if the pid
/// is reused after it is reaped.
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Sends `signal` through a pidfd; signalling a process that already exited
/// (a zombie) is not an error.
pub fn pidfd_send_signal(pidfd: &OwnedFd, signal: i32) -> io::Result<()> {
    // SAFETY: plain syscall; null siginfo means "as kill(2)".
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ESRCH) {
            return Ok(());
        }
        return Err(err);
    }
    Ok(())
}

/// Waits until `fd` is readable (a pidfd: the process exited) or `timeout`
/// passes (`None`: forever). Returns true if readable.
pub fn wait_readable(fd: &impl AsRawFd, timeout: Option<Duration>) -> io::Result<bool> {
    let timeout_ms = timeout
        .map(|t| t.as_millis().min(i32::MAX as u128) as i32)
        .unwrap_or(-1);
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        return Ok(n > 0);
    }
}

/// `flock(LOCK_EX|LOCK_NB)`: Ok(false) if another open file holds it.
pub fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    flock(file, libc::LOCK_EX | libc::LOCK_NB)
}

/// `flock(LOCK_SH|LOCK_NB)`: Ok(false) if someone holds it exclusively.
pub fn try_lock_shared(file: &File) -> io::Result<bool> {
    flock(file, libc::LOCK_SH | libc::LOCK_NB)
}

/// Blocking `flock(LOCK_SH)`.
pub fn lock_shared(file: &File) -> io::Result<()> {
    flock(file, libc::LOCK_SH).map(|_| ())
}

fn flock(file: &File, op: i32) -> io::Result<bool> {
    loop {
        // SAFETY: valid fd.
        let r = unsafe { libc::flock(file.as_raw_fd(), op) };
        if r == 0 {
            return Ok(true);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) => return Ok(false),
            _ => return Err(err),
        }
    }
}
