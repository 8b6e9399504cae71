//! Docker's default seccomp policy as a classic-BPF program (x86_64), written
//! out by hand so kiln needs no libseccomp.
//!
//! The policy is what moby's `profiles/seccomp/default.json` resolves to for a
//! container with docker's default capabilities on x86_64: an allowlist of
//! ordinary syscalls; `socket` except AF_VSOCK; `personality` only for the five
//! values docker allows; `clone` without namespace flags; `clone3` fails with
//! ENOSYS (so libcs fall back to `clone`, which can be checked); `chroot`
//! (CAP_SYS_CHROOT is a default cap); `ptrace`/`process_vm_*` (kernel >= 4.8).
//! Everything else — mount, unshare, setns, keyctl, bpf, perf_event_open,
//! kexec, modules, clock setting, reboot, ... — fails with EPERM. Other
//! architectures' calls (i386, x32) also fail with EPERM: unlike docker, 32-bit
//! binaries are not supported inside the sandbox.

use std::sync::OnceLock;

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;

// Offsets in struct seccomp_data.
const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;
const OFFSET_ARG0_LOW: u32 = 16;
const OFFSET_ARG0_HIGH: u32 = 20;

// Classic BPF opcodes.
const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD (0) | BPF_W (0) | BPF_ABS (0x20)
const BPF_JEQ_K: u16 = 0x05 | 0x10; // BPF_JMP | BPF_JEQ | BPF_K
const BPF_JGE_K: u16 = 0x05 | 0x30; // BPF_JMP | BPF_JGE | BPF_K
const BPF_JSET_K: u16 = 0x05 | 0x40; // BPF_JMP | BPF_JSET | BPF_K
const BPF_RET_K: u16 = 0x06; // BPF_RET | BPF_K

/// Namespace flags `clone` may not use (CLONE_NEWNS | NEWCGROUP | NEWUTS |
/// NEWIPC | NEWUSER | NEWPID | NEWNET), the mask docker's profile checks.
const CLONE_NAMESPACE_FLAGS: u32 = 0x7E02_0000;
const AF_VSOCK: u32 = 40;
const PERSONALITY_ALLOWED: [u32; 5] = [0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// Allowed without conditions. The most frequent calls come first: the filter
/// is a linear scan.
const ALLOWED: &[libc::c_long] = &[
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_openat,
    libc::SYS_close,
    libc::SYS_newfstatat,
    libc::SYS_fstat,
    libc::SYS_statx,
    libc::SYS_lseek,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mprotect,
    libc::SYS_brk,
    libc::SYS_futex,
    libc::SYS_getdents64,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_ioctl,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_access,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    libc::SYS_fcntl,
    libc::SYS_stat,
    libc::SYS_lstat,
    libc::SYS_readlink,
    libc::SYS_readlinkat,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_wait4,
    libc::SYS_waitid,
    libc::SYS_execve,
    libc::SYS_execveat,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_fork,
    libc::SYS_vfork,
    libc::SYS_accept,
    libc::SYS_accept4,
    libc::SYS_adjtimex,
    libc::SYS_alarm,
    libc::SYS_bind,
    libc::SYS_capget,
    libc::SYS_capset,
    libc::SYS_chdir,
    libc::SYS_chmod,
    libc::SYS_chown,
    libc::SYS_clock_adjtime,
    libc::SYS_clock_getres,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_close_range,
    libc::SYS_connect,
    libc::SYS_copy_file_range,
    libc::SYS_creat,
    libc::SYS_dup,
    libc::SYS_dup2,
    libc::SYS_dup3,
    libc::SYS_epoll_create,
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_pwait2,
    libc::SYS_epoll_wait,
    libc::SYS_eventfd,
    libc::SYS_eventfd2,
    libc::SYS_fadvise64,
    libc::SYS_fallocate,
    libc::SYS_fanotify_mark,
    libc::SYS_fchdir,
    libc::SYS_fchmod,
    libc::SYS_fchmodat,
    libc::SYS_fchown,
    libc::SYS_fchownat,
    libc::SYS_fdatasync,
    libc::SYS_fgetxattr,
    libc::SYS_flistxattr,
    libc::SYS_flock,
    libc::SYS_fremovexattr,
    libc::SYS_fsetxattr,
    libc::SYS_fstatfs,
    libc::SYS_fsync,
    libc::SYS_ftruncate,
    libc::SYS_futex_waitv,
    libc::SYS_futimesat,
    libc::SYS_getcpu,
    libc::SYS_getcwd,
    libc::SYS_getdents,
    libc::SYS_getegid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getgroups,
    libc::SYS_getitimer,
    libc::SYS_getpeername,
    libc::SYS_getpgid,
    libc::SYS_getpgrp,
    libc::SYS_getppid,
    libc::SYS_getpriority,
    libc::SYS_getrandom,
    libc::SYS_getresgid,
    libc::SYS_getresuid,
    libc::SYS_getrlimit,
    libc::SYS_get_robust_list,
    libc::SYS_getrusage,
    libc::SYS_getsid,
    libc::SYS_getsockname,
    libc::SYS_getsockopt,
    libc::SYS_get_thread_area,
    libc::SYS_gettimeofday,
    libc::SYS_getuid,
    libc::SYS_getxattr,
    libc::SYS_inotify_add_watch,
    libc::SYS_inotify_init,
    libc::SYS_inotify_init1,
    libc::SYS_inotify_rm_watch,
    libc::SYS_io_cancel,
    libc::SYS_io_destroy,
    libc::SYS_io_getevents,
    333, // io_pgetevents (not exported by libc)
    libc::SYS_ioprio_get,
    libc::SYS_ioprio_set,
    libc::SYS_io_setup,
    libc::SYS_io_submit,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_io_uring_setup,
    libc::SYS_kill,
    libc::SYS_landlock_add_rule,
    libc::SYS_landlock_create_ruleset,
    libc::SYS_landlock_restrict_self,
    libc::SYS_lchown,
    libc::SYS_lgetxattr,
    libc::SYS_link,
    libc::SYS_linkat,
    libc::SYS_listen,
    libc::SYS_listxattr,
    libc::SYS_llistxattr,
    libc::SYS_lremovexattr,
    libc::SYS_lsetxattr,
    libc::SYS_madvise,
    libc::SYS_membarrier,
    libc::SYS_memfd_create,
    libc::SYS_memfd_secret,
    libc::SYS_mincore,
    libc::SYS_mkdir,
    libc::SYS_mkdirat,
    libc::SYS_mknod,
    libc::SYS_mknodat,
    libc::SYS_mlock,
    libc::SYS_mlock2,
    libc::SYS_mlockall,
    libc::SYS_mq_getsetattr,
    libc::SYS_mq_notify,
    libc::SYS_mq_open,
    libc::SYS_mq_timedreceive,
    libc::SYS_mq_timedsend,
    libc::SYS_mq_unlink,
    libc::SYS_mremap,
    libc::SYS_msgctl,
    libc::SYS_msgget,
    libc::SYS_msgrcv,
    libc::SYS_msgsnd,
    libc::SYS_msync,
    libc::SYS_munlock,
    libc::SYS_munlockall,
    libc::SYS_name_to_handle_at,
    libc::SYS_nanosleep,
    libc::SYS_open,
    libc::SYS_openat2,
    libc::SYS_pause,
    libc::SYS_pidfd_open,
    libc::SYS_pidfd_send_signal,
    libc::SYS_pipe,
    libc::SYS_pipe2,
    libc::SYS_pkey_alloc,
    libc::SYS_pkey_free,
    libc::SYS_pkey_mprotect,
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_prctl,
    libc::SYS_preadv,
    libc::SYS_preadv2,
    libc::SYS_prlimit64,
    libc::SYS_process_mrelease,
    libc::SYS_pselect6,
    libc::SYS_pwritev,
    libc::SYS_pwritev2,
    libc::SYS_readahead,
    libc::SYS_recvfrom,
    libc::SYS_recvmmsg,
    libc::SYS_recvmsg,
    libc::SYS_remap_file_pages,
    libc::SYS_removexattr,
    libc::SYS_rename,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_restart_syscall,
    libc::SYS_rmdir,
    libc::SYS_rseq,
    libc::SYS_rt_sigpending,
    libc::SYS_rt_sigqueueinfo,
    libc::SYS_rt_sigsuspend,
    libc::SYS_rt_sigtimedwait,
    libc::SYS_rt_tgsigqueueinfo,
    libc::SYS_sched_getaffinity,
    libc::SYS_sched_getattr,
    libc::SYS_sched_getparam,
    libc::SYS_sched_get_priority_max,
    libc::SYS_sched_get_priority_min,
    libc::SYS_sched_getscheduler,
    libc::SYS_sched_rr_get_interval,
    libc::SYS_sched_setaffinity,
    libc::SYS_sched_setattr,
    libc::SYS_sched_setparam,
    libc::SYS_sched_setscheduler,
    libc::SYS_sched_yield,
    libc::SYS_seccomp,
    libc::SYS_select,
    libc::SYS_semctl,
    libc::SYS_semget,
    libc::SYS_semop,
    libc::SYS_semtimedop,
    libc::SYS_sendfile,
    libc::SYS_sendmmsg,
    libc::SYS_sendmsg,
    libc::SYS_sendto,
    libc::SYS_setfsgid,
    libc::SYS_setfsuid,
    libc::SYS_setgid,
    libc::SYS_setgroups,
    libc::SYS_setitimer,
    libc::SYS_setpgid,
    libc::SYS_setpriority,
    libc::SYS_setregid,
    libc::SYS_setresgid,
    libc::SYS_setresuid,
    libc::SYS_setreuid,
    libc::SYS_setrlimit,
    libc::SYS_set_robust_list,
    libc::SYS_setsid,
    libc::SYS_setsockopt,
    libc::SYS_set_thread_area,
    libc::SYS_set_tid_address,
    libc::SYS_setuid,
    libc::SYS_setxattr,
    libc::SYS_shmat,
    libc::SYS_shmctl,
    libc::SYS_shmdt,
    libc::SYS_shmget,
    libc::SYS_shutdown,
    libc::SYS_sigaltstack,
    libc::SYS_signalfd,
    libc::SYS_signalfd4,
    libc::SYS_socketpair,
    libc::SYS_splice,
    libc::SYS_statfs,
    libc::SYS_symlink,
    libc::SYS_symlinkat,
    libc::SYS_sync,
    libc::SYS_sync_file_range,
    libc::SYS_syncfs,
    libc::SYS_sysinfo,
    libc::SYS_tee,
    libc::SYS_tgkill,
    libc::SYS_time,
    libc::SYS_timer_create,
    libc::SYS_timer_delete,
    libc::SYS_timer_getoverrun,
    libc::SYS_timer_gettime,
    libc::SYS_timer_settime,
    libc::SYS_timerfd_create,
    libc::SYS_timerfd_gettime,
    libc::SYS_timerfd_settime,
    libc::SYS_times,
    libc::SYS_tkill,
    libc::SYS_truncate,
    libc::SYS_umask,
    libc::SYS_uname,
    libc::SYS_unlink,
    libc::SYS_unlinkat,
    libc::SYS_utime,
    libc::SYS_utimensat,
    libc::SYS_utimes,
    libc::SYS_vmsplice,
    // Conditional in docker's profile, true for docker's default caps/kernels:
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_arch_prctl,
    libc::SYS_modify_ldt,
    libc::SYS_chroot,
];

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

fn errno(value: i32) -> u32 {
    SECCOMP_RET_ERRNO | (value as u32 & 0xffff)
}

fn build() -> Vec<libc::sock_filter> {
    let deny = errno(libc::EPERM);
    let mut prog = vec![
        // Only native x86_64 calls; x32 numbers carry bit 30.
        stmt(BPF_LD_W_ABS, OFFSET_ARCH),
        jump(BPF_JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
        stmt(BPF_RET_K, deny),
        stmt(BPF_LD_W_ABS, OFFSET_NR),
        jump(BPF_JGE_K, X32_SYSCALL_BIT, 0, 1),
        stmt(BPF_RET_K, deny),
    ];
    // Unconditional allowlist: "nr == X -> allow", two instructions each.
    for &nr in ALLOWED {
        prog.push(jump(BPF_JEQ_K, nr as u32, 0, 1));
        prog.push(stmt(BPF_RET_K, SECCOMP_RET_ALLOW));
    }
    // clone3 -> ENOSYS so that libc falls back to clone.
    prog.push(jump(BPF_JEQ_K, libc::SYS_clone3 as u32, 0, 1));
    prog.push(stmt(BPF_RET_K, errno(libc::ENOSYS)));
    // clone without namespace flags.
    prog.push(jump(BPF_JEQ_K, libc::SYS_clone as u32, 0, 4));
    prog.push(stmt(BPF_LD_W_ABS, OFFSET_ARG0_LOW));
    prog.push(jump(BPF_JSET_K, CLONE_NAMESPACE_FLAGS, 0, 1));
    prog.push(stmt(BPF_RET_K, deny));
    prog.push(stmt(BPF_RET_K, SECCOMP_RET_ALLOW));
    // socket except AF_VSOCK. The accumulator is reloaded after each branch,
    // so every block starts from the syscall number.
    prog.push(stmt(BPF_LD_W_ABS, OFFSET_NR));
    prog.push(jump(BPF_JEQ_K, libc::SYS_socket as u32, 0, 4));
    prog.push(stmt(BPF_LD_W_ABS, OFFSET_ARG0_LOW));
    prog.push(jump(BPF_JEQ_K, AF_VSOCK, 0, 1));
    prog.push(stmt(BPF_RET_K, deny));
    prog.push(stmt(BPF_RET_K, SECCOMP_RET_ALLOW));
    // personality with one of docker's values (upper 32 bits zero).
    prog.push(stmt(BPF_LD_W_ABS, OFFSET_NR));
    let count = PERSONALITY_ALLOWED.len() as u8;
    // Skip: high-word load + check, low-word load, the value checks, deny, allow.
    prog.push(jump(
        BPF_JEQ_K,
        libc::SYS_personality as u32,
        0,
        2 + 1 + count + 2,
    ));
    prog.push(stmt(BPF_LD_W_ABS, OFFSET_ARG0_HIGH));
    prog.push(jump(BPF_JEQ_K, 0, 0, 1 + count)); // high word nonzero -> deny
    prog.push(stmt(BPF_LD_W_ABS, OFFSET_ARG0_LOW));
    for (index, value) in PERSONALITY_ALLOWED.iter().enumerate() {
        // On a match jump over the remaining checks and the deny to the allow.
        let remaining = count - 1 - index as u8;
        prog.push(jump(BPF_JEQ_K, *value, remaining + 1, 0));
    }
    prog.push(stmt(BPF_RET_K, deny));
    prog.push(stmt(BPF_RET_K, SECCOMP_RET_ALLOW));
    prog.push(stmt(BPF_RET_K, deny));
    prog
}

/// The docker-default filter program, built once.
pub fn docker_default() -> &'static [libc::sock_filter] {
    static PROGRAM: OnceLock<Vec<libc::sock_filter>> = OnceLock::new();
    PROGRAM.get_or_init(build)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny classic-BPF interpreter for the subset the filter uses, to check
    /// decisions without installing the filter.
    fn decide(prog: &[libc::sock_filter], arch: u32, nr: u32, arg0: u64) -> u32 {
        let load = |offset: u32| match offset {
            OFFSET_NR => nr,
            OFFSET_ARCH => arch,
            OFFSET_ARG0_LOW => arg0 as u32,
            OFFSET_ARG0_HIGH => (arg0 >> 32) as u32,
            other => panic!("unexpected load offset {other}"),
        };
        let mut acc = 0u32;
        let mut pc = 0usize;
        loop {
            let ins = prog[pc];
            pc += 1;
            match ins.code {
                BPF_LD_W_ABS => acc = load(ins.k),
                BPF_RET_K => return ins.k,
                BPF_JEQ_K | BPF_JGE_K | BPF_JSET_K => {
                    let taken = match ins.code {
                        BPF_JEQ_K => acc == ins.k,
                        BPF_JGE_K => acc >= ins.k,
                        _ => acc & ins.k != 0,
                    };
                    pc += if taken { ins.jt } else { ins.jf } as usize;
                }
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    }

    fn check(nr: libc::c_long, arg0: u64) -> u32 {
        decide(docker_default(), AUDIT_ARCH_X86_64, nr as u32, arg0)
    }

    #[test]
    fn ordinary_calls_are_allowed() {
        for nr in [
            libc::SYS_read,
            libc::SYS_execve,
            libc::SYS_vmsplice,
            libc::SYS_chroot,
        ] {
            assert_eq!(check(nr, 0), SECCOMP_RET_ALLOW, "syscall {nr}");
        }
    }

    #[test]
    fn dangerous_calls_are_denied() {
        for nr in [
            libc::SYS_mount,
            libc::SYS_unshare,
            libc::SYS_setns,
            libc::SYS_keyctl,
            libc::SYS_bpf,
            libc::SYS_kexec_load,
            libc::SYS_init_module,
            libc::SYS_open_by_handle_at,
            libc::SYS_fsopen,
            libc::SYS_clock_settime,
        ] {
            assert_eq!(check(nr, 0), errno(libc::EPERM), "syscall {nr}");
        }
    }

    #[test]
    fn conditional_rules_follow_docker() {
        assert_eq!(check(libc::SYS_clone3, 0), errno(libc::ENOSYS));
        assert_eq!(
            check(libc::SYS_clone, libc::SIGCHLD as u64),
            SECCOMP_RET_ALLOW
        );
        assert_eq!(
            check(libc::SYS_clone, libc::CLONE_NEWUSER as u64),
            errno(libc::EPERM)
        );
        assert_eq!(
            check(libc::SYS_socket, libc::AF_INET as u64),
            SECCOMP_RET_ALLOW
        );
        assert_eq!(check(libc::SYS_socket, AF_VSOCK as u64), errno(libc::EPERM));
        for value in PERSONALITY_ALLOWED {
            assert_eq!(
                check(libc::SYS_personality, value as u64),
                SECCOMP_RET_ALLOW
            );
        }
        assert_eq!(check(libc::SYS_personality, 0x0040000), errno(libc::EPERM));
        assert_eq!(check(libc::SYS_personality, 1 << 32), errno(libc::EPERM));
    }

    #[test]
    fn foreign_architectures_and_x32_are_denied() {
        let prog = docker_default();
        assert_eq!(decide(prog, 0x4000_0003, 3, 0), errno(libc::EPERM)); // i386
        assert_eq!(
            decide(prog, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT, 0),
            errno(libc::EPERM)
        );
        assert!(prog.len() < 4096, "BPF program limit");
    }
}
