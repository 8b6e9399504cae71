//! File descriptor helpers of the parent: every fd meant for the child is
//! kept at 3 or above and close-on-exec.

use crate::SandboxError;
use crate::process::io_err;
use crate::sys::Errno;
use libc::c_int;
use std::os::fd::{FromRawFd, OwnedFd};

/// Takes ownership of a fresh fd, moving it to 3 or above: a caller whose
/// stdin/stdout/stderr are closed (a daemonized monitor) would otherwise get
/// pipes at 0-2, which the child's dup2 onto 0, 1, 2 would clobber.
pub(crate) fn owned(fd: c_int) -> OwnedFd {
    if (0..3).contains(&fd) {
        // SAFETY: fd is ours; F_DUPFD_CLOEXEC returns the lowest free fd >= 3.
        let moved = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
        if moved >= 0 {
            // SAFETY: closing our original after duplicating it.
            unsafe { libc::close(fd) };
            // SAFETY: moved is a fresh fd owned by us.
            return unsafe { OwnedFd::from_raw_fd(moved) };
        }
    }
    // SAFETY: fd was just returned by a successful syscall and is owned by us.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

pub(crate) fn pipe() -> Result<(OwnedFd, OwnedFd), SandboxError> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: fds is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io_err("creating a pipe", "pipe2")(Errno::last()));
    }
    Ok((owned(fds[0]), owned(fds[1])))
}

pub(crate) fn dev_null(flags: c_int) -> Result<OwnedFd, SandboxError> {
    // SAFETY: plain syscall with a static path.
    let fd = unsafe { libc::open(c"/dev/null".as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io_err("opening", "/dev/null")(Errno::last()));
    }
    Ok(owned(fd))
}

pub(crate) fn socketpair() -> Result<(OwnedFd, OwnedFd), SandboxError> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: fds is a valid array of two ints.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if r != 0 {
        return Err(io_err("creating a socket pair", "socketpair")(Errno::last()));
    }
    Ok((owned(fds[0]), owned(fds[1])))
}

/// Receives one fd sent with SCM_RIGHTS; None on EOF (the child failed first).
pub(crate) fn recv_fd(socket: c_int) -> Option<OwnedFd> {
    let mut control = [0u64; 4];
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: msghdr over valid stack buffers; the kernel fills the cmsg.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control);
        loop {
            let n = libc::recvmsg(socket, &mut msg, libc::MSG_CMSG_CLOEXEC);
            if n < 0 && Errno::last().0 == libc::EINTR {
                continue;
            }
            if n <= 0 {
                return None;
            }
            break;
        }
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null()
            || (*cmsg).cmsg_level != libc::SOL_SOCKET
            || (*cmsg).cmsg_type != libc::SCM_RIGHTS
        {
            return None;
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<c_int>());
        Some(owned(fd))
    }
}
