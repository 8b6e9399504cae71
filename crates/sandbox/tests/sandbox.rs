//! End-to-end tests of the sandbox on a real overlayfs with real namespaces.
//! They need root and /bin/busybox (busybox-static); see common::environment_ready.

mod common;

use common::{Fixture, capture, environment_ready, sh_ok};
use kiln_sandbox::{
    ExecSpec, ExitStatus, InjectedFile, Mount, Network, RootFs, SandboxError, SandboxSpec, Stdin,
    Stream, WinSize, exec_in, run, spawn,
};
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::time::{Duration, Instant};

macro_rules! require_env {
    () => {
        if !environment_ready() {
            return;
        }
    };
}

#[test]
fn no_host_processes_or_mounts_are_visible() {
    require_env!();
    let fx = Fixture::busybox();
    let out = sh_ok(&fx.spec("ps -o pid,comm; echo ---; cut -d' ' -f2 /proc/mounts"));
    let (ps, mounts) = out.split_once("---\n").unwrap();
    let pids: Vec<&str> = ps
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(pids.len(), 2, "only sh and ps may be visible: {ps}");
    assert_eq!(pids[0], "1", "the command is PID 1: {ps}");
    let allowed = [
        "/",
        "/proc",
        "/dev",
        "/dev/pts",
        "/dev/shm",
        "/dev/mqueue",
        "/sys",
        "/proc/acpi",
        "/proc/keys",
        "/proc/timer_list",
        "/proc/kcore",
        "/proc/latency_stats",
        "/proc/timer_stats",
        "/proc/sched_debug",
        "/proc/scsi",
        "/proc/asound",
        "/sys/firmware",
        "/sys/devices/virtual/powercap",
        "/proc/bus",
        "/proc/fs",
        "/proc/irq",
        "/proc/sys",
        "/proc/sysrq-trigger",
    ];
    for mount in mounts.lines() {
        assert!(
            allowed.contains(&mount),
            "host mount {mount} visible inside:\n{mounts}"
        );
    }
    // The host's own mounts (e.g. /work, /run) must not appear.
    assert!(
        !mounts
            .lines()
            .any(|m| m.starts_with("/run") || m.starts_with("/work"))
    );
}

#[test]
fn writes_land_only_in_upper() {
    require_env!();
    let fx = Fixture::busybox();
    sh_ok(&fx.spec("echo new > /newfile && echo more >> /data/keep && mkdir -p /a/b && echo x 2>/dev/null >/dev/null"));
    assert_eq!(
        std::fs::read_to_string(fx.upper.join("newfile")).unwrap(),
        "new\n"
    );
    assert_eq!(
        std::fs::read_to_string(fx.upper.join("data/keep")).unwrap(),
        "keep\nmore\n"
    );
    assert!(fx.upper.join("a/b").is_dir());
    // The lower layer is untouched.
    assert_eq!(
        std::fs::read_to_string(fx.lowers[0].join("data/keep")).unwrap(),
        "keep\n"
    );
    // Exactly the changes: no /dev/null file from the redirect, no stubs.
    assert_eq!(
        fx.upper_entries(),
        vec!["a", "a/b", "data", "data/keep", "newfile"],
        "upper dir holds exactly the changes"
    );
}

#[test]
fn deleting_a_lower_file_leaves_a_whiteout() {
    require_env!();
    let fx = Fixture::busybox();
    sh_ok(&fx.spec("rm /data/del && test ! -e /data/del"));
    let meta = std::fs::symlink_metadata(fx.upper.join("data/del")).unwrap();
    assert!(
        meta.file_type().is_char_device(),
        "whiteout is a character device"
    );
    assert_eq!(meta.rdev(), 0, "whiteout is device 0/0");
    assert!(fx.lowers[0].join("data/del").exists());
}

fn xattr(path: &std::path::Path, name: &str) -> Option<Vec<u8>> {
    let path_c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let name_c = std::ffi::CString::new(name).unwrap();
    let mut buf = [0u8; 64];
    // SAFETY: valid strings and buffer.
    let n = unsafe {
        libc::lgetxattr(
            path_c.as_ptr(),
            name_c.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    (n >= 0).then(|| buf[..n as usize].to_vec())
}

#[test]
fn replacing_a_directory_makes_it_opaque() {
    require_env!();
    let fx = Fixture::busybox();
    sh_ok(&fx.spec("rm -rf /olddir && mkdir /olddir && echo n > /olddir/new"));
    let opaque = fx.upper.join("olddir");
    assert_eq!(
        xattr(&opaque, "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    let names: Vec<_> = std::fs::read_dir(&opaque)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec!["new"]);
}

#[test]
fn renaming_a_lower_dir_copies_it_without_redirects() {
    require_env!();
    let fx = Fixture::busybox();
    sh_ok(&fx.spec("mv /olddir /moved && cat /moved/old1"));
    let moved = fx.upper.join("moved");
    assert_eq!(
        xattr(&moved, "trusted.overlay.redirect"),
        None,
        "no redirect xattr"
    );
    assert_eq!(
        std::fs::read_to_string(moved.join("old1")).unwrap(),
        "1\n",
        "data copied up"
    );
    let whiteout = std::fs::symlink_metadata(fx.upper.join("olddir")).unwrap();
    assert!(whiteout.file_type().is_char_device());
}

#[test]
fn user_semantics_match_docker() {
    require_env!();
    let fx = Fixture::busybox();
    let mut spec =
        fx.spec("id -u; id -g; id -G; echo $HOME; touch /tmp/owned; grep CapEff /proc/self/status");
    spec.user = "app".into();
    let out = sh_ok(&spec);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        &lines[..4],
        &["1000", "1000", "1000 10", "/home/app"],
        "{out}"
    );
    assert!(
        lines[4].ends_with("0000000000000000"),
        "non-root has no effective caps: {out}"
    );
    let meta = std::fs::metadata(fx.upper.join("tmp/owned")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (1000, 1000));

    spec.user = "4242:55".into();
    spec.argv[2] = "id -u; id -g; echo $HOME".into();
    assert_eq!(sh_ok(&spec), "4242\n55\n/\n");

    spec.user = "app:wheel".into();
    spec.argv[2] = "id -g; id -G".into();
    assert_eq!(sh_ok(&spec), "10\n10\n");

    spec.user = "ghost".into();
    let err = capture(&spec).err().expect("unknown user must fail");
    assert_eq!(
        err.to_string(),
        "unable to find user ghost: no matching entries in passwd file /etc/passwd"
    );
    spec.user = "app:ghosts".into();
    let err = capture(&spec).err().expect("unknown group must fail");
    assert!(
        err.to_string().contains("unable to find group ghosts"),
        "{err}"
    );
}

#[test]
fn root_gets_dockers_default_capabilities() {
    require_env!();
    let fx = Fixture::busybox();
    let out = sh_ok(&fx.spec("grep -E 'Cap|NoNewPrivs' /proc/self/status"));
    assert!(out.contains("CapInh:\t0000000000000000"), "{out}");
    assert!(out.contains("CapEff:\t00000000a80425fb"), "{out}");
    assert!(out.contains("CapBnd:\t00000000a80425fb"), "{out}");
    assert!(out.contains("CapAmb:\t0000000000000000"), "{out}");
    assert!(out.contains("NoNewPrivs:\t0"), "{out}");
    let mut spec = fx.spec("grep NoNewPrivs /proc/self/status");
    spec.no_new_privileges = true;
    assert_eq!(sh_ok(&spec), "NoNewPrivs:\t1\n");
    // --cap-drop CHOWN --cap-add SYS_PTRACE (19)
    let mut spec =
        fx.spec("grep CapEff /proc/self/status; chown 5 /tmp 2>/dev/null || echo chown-denied");
    spec.capabilities = (kiln_sandbox::DOCKER_DEFAULT_CAPABILITIES & !1) | (1 << 19);
    assert_eq!(sh_ok(&spec), "CapEff:\t00000000a80c25fa\nchown-denied\n");
}

#[test]
fn exit_codes_and_signals_are_reported() {
    require_env!();
    let fx = Fixture::busybox();
    assert_eq!(
        capture(&fx.spec("exit 7")).unwrap().status,
        ExitStatus::Exited(7)
    );
    // A namespace's PID 1 ignores even SIGKILL from inside (as in docker) ...
    assert_eq!(
        capture(&fx.spec("kill -9 $$; echo alive")).unwrap().stdout,
        "alive\n"
    );
    assert_eq!(
        sh_ok(&fx.spec("sleep 10 & kill -9 $!; wait $!; echo $?")),
        "137\n"
    );
    // ... but not from the host.
    let mut running = spawn(&fx.spec("sleep 10")).unwrap();
    running.kill(libc::SIGKILL).unwrap();
    let killed = running.wait().unwrap();
    assert_eq!(killed, ExitStatus::Signaled(9));
    assert_eq!(killed.code(), 137);
    let mut spec = fx.spec("");
    spec.argv = vec!["no-such-command".into()];
    match capture(&spec) {
        Err(SandboxError::ExecNotFound { program }) => assert_eq!(program, "no-such-command"),
        other => panic!("expected ExecNotFound, got {:?}", other.map(|c| c.status)),
    }
    spec.argv = vec!["/data/keep".into()];
    assert!(matches!(capture(&spec), Err(SandboxError::Exec { .. })));
}

#[test]
fn environment_and_working_directory() {
    require_env!();
    let fx = Fixture::busybox();
    let mut spec = fx.spec("pwd; echo $FOO; echo $HOME; stat -c '%u %a' /work/sub");
    spec.env.push("FOO=bar baz".into());
    spec.cwd = "/work/sub".into();
    assert_eq!(sh_ok(&spec), "/work/sub\nbar baz\n/root\n0 755\n");
    assert!(fx.upper.join("work/sub").is_dir(), "missing cwd is created");
}

#[test]
fn workdir_through_proc_fd_cannot_escape() {
    require_env!();
    let fx = Fixture::busybox();
    for fd in 0..8 {
        let mut spec = fx.spec("ls /");
        spec.cwd = format!("/proc/self/fd/{fd}");
        match capture(&spec) {
            Err(_) => {}
            Ok(out) => panic!("cwd /proc/self/fd/{fd} was entered: {}", out.stdout),
        }
    }
}

#[test]
fn only_stdio_fds_reach_the_process() {
    require_env!();
    let fx = Fixture::busybox();
    // An fd without CLOEXEC in the caller must not leak either.
    let leaky = std::fs::File::open("/dev/null").unwrap();
    // SAFETY: clearing FD_CLOEXEC on our own fd.
    unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&leaky), libc::F_SETFD, 0) };
    // Look from the host at the fds the exec'd command (PID 1) holds.
    let mut spec = fx.spec("");
    spec.argv = vec!["sleep".into(), "30".into()];
    let running = spawn(&spec).unwrap();
    let mut fds: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", running.pid()))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    fds.sort();
    assert_eq!(fds, vec!["0", "1", "2"]);
    drop(running);
    drop(leaky);
}

#[test]
fn readonly_bind_refuses_writes_and_rw_bind_writes_through() {
    require_env!();
    let fx = Fixture::busybox();
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("in"), "from host\n").unwrap();
    let mut spec = fx.spec(
        "cat /mnt/ro/in; if echo x > /mnt/ro/x 2>/dev/null; then echo WROTE; else echo refused; fi; echo y > /mnt/rw/y",
    );
    spec.mounts.push(Mount::bind(host.path(), "/mnt/ro", true));
    spec.mounts.push(Mount::bind(host.path(), "/mnt/rw", false));
    assert_eq!(sh_ok(&spec), "from host\nrefused\n");
    assert!(!host.path().join("x").exists());
    assert_eq!(
        std::fs::read_to_string(host.path().join("y")).unwrap(),
        "y\n"
    );
    // Mount stubs are removed again: the upper dir shows no trace of /mnt.
    assert_eq!(fx.upper_entries(), Vec::<String>::new());
}

#[test]
fn bind_source_symlinks_cannot_leave_their_root() {
    require_env!();
    let fx = Fixture::busybox();
    let cache = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/etc", cache.path().join("escape")).unwrap();
    let mut spec = fx.spec("ls /mnt/c");
    spec.mounts.push(Mount {
        target: "/mnt/c".into(),
        kind: kiln_sandbox::MountKind::Bind {
            source_root: cache.path().into(),
            source_path: "escape/../../etc".into(),
            readonly: true,
        },
    });
    // Resolved inside the cache root, "/etc" does not exist there.
    assert!(capture(&spec).is_err());
}

#[test]
fn injected_files_and_tmpfs_never_reach_upper() {
    require_env!();
    let fx = Fixture::busybox();
    let mut spec = fx.spec(
        "cat /etc/hosts /etc/resolv.conf; hostname; echo t > /cache/t; grep -c . /etc/passwd",
    );
    spec.hostname = "buildkitsandbox".into();
    for (target, contents) in [
        ("/etc/hosts", "127.0.0.1\tlocalhost buildkitsandbox\n"),
        ("/etc/resolv.conf", "nameserver 10.0.0.1\n"),
    ] {
        spec.files.push(InjectedFile {
            target: target.into(),
            contents: contents.into(),
            mode: 0o644,
            readonly: true,
        });
    }
    spec.mounts.push(Mount::tmpfs("/cache", None));
    assert_eq!(
        sh_ok(&spec),
        "127.0.0.1\tlocalhost buildkitsandbox\nnameserver 10.0.0.1\nbuildkitsandbox\n3\n"
    );
    let entries = fx.upper_entries();
    assert!(
        !entries
            .iter()
            .any(|e| e.contains("hosts") || e.contains("resolv") || e.contains("cache")),
        "{entries:?}"
    );
}

#[test]
fn a_hundred_and_fifty_lower_layers_work() {
    require_env!();
    let mut fx = Fixture::busybox();
    let mut extra = Vec::new();
    for index in 0..150 {
        // Long-ish absolute paths: 150 of them exceed the 4 KiB mount option page.
        let layer = fx
            .dir
            .path()
            .join(format!("layers/sha256-{index:064}/diff"));
        std::fs::create_dir_all(layer.join("layers")).unwrap();
        std::fs::write(layer.join(format!("layers/f{index}")), format!("{index}\n")).unwrap();
        extra.push(layer);
    }
    extra.append(&mut fx.lowers);
    fx.lowers = extra;
    assert_eq!(
        sh_ok(&fx.spec("ls /layers | wc -l; cat /layers/f149"))
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["150", "149"]
    );
}

#[test]
fn output_is_streamed_in_order_as_it_comes() {
    require_env!();
    let fx = Fixture::busybox();
    let start = Instant::now();
    let mut chunks: Vec<(Stream, String, Duration)> = Vec::new();
    let status = run(
        &fx.spec("echo one; sleep 0.3; echo two >&2; sleep 0.3; echo three"),
        |stream, bytes| {
            chunks.push((
                stream,
                String::from_utf8_lossy(bytes).into_owned(),
                start.elapsed(),
            ))
        },
    )
    .unwrap();
    assert!(status.success());
    let seen: Vec<(Stream, &str)> = chunks.iter().map(|(s, t, _)| (*s, t.as_str())).collect();
    assert_eq!(
        seen,
        vec![
            (Stream::Stdout, "one\n"),
            (Stream::Stderr, "two\n"),
            (Stream::Stdout, "three\n")
        ]
    );
    let total = start.elapsed();
    assert!(
        total - chunks[0].2 >= Duration::from_millis(450),
        "first line arrived before the end"
    );
}

#[test]
fn timeout_kills_the_process() {
    require_env!();
    let fx = Fixture::busybox();
    let mut spec = fx.spec("sleep 30");
    spec.timeout = Some(Duration::from_millis(300));
    let start = Instant::now();
    assert!(matches!(capture(&spec), Err(SandboxError::Timeout(_))));
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn network_none_has_only_loopback_up() {
    require_env!();
    let fx = Fixture::busybox();
    let out = sh_ok(&fx.spec("tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; cat /sys/class/net/lo/operstate; ping -c1 -W1 127.0.0.1 >/dev/null && echo ping-ok"));
    assert_eq!(out.lines().next(), Some("lo"), "{out}");
    assert_eq!(out.lines().filter(|l| !l.is_empty()).count(), 3, "{out}");
    assert!(out.contains("ping-ok"), "{out}");
    let mut spec = fx.spec("tail -n +3 /proc/net/dev | wc -l");
    spec.network = Network::Host;
    let host_ifaces: usize = sh_ok(&spec).trim().parse().unwrap();
    assert!(host_ifaces >= 1);
}

#[test]
fn spawn_kill_and_wait_with_init() {
    require_env!();
    let fx = Fixture::busybox();
    let mut spec = fx.spec("echo $$; exec sleep 30");
    spec.init = true;
    let mut running = spawn(&spec).unwrap();
    let mut stdout = running.take_stdout().unwrap();
    let mut first = [0u8; 2];
    stdout.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"2\n", "under --init the command is PID 2");
    assert_eq!(running.try_wait().unwrap(), None);
    running.kill(libc::SIGTERM).unwrap();
    assert_eq!(
        running.wait().unwrap(),
        ExitStatus::Exited(128 + libc::SIGTERM)
    );
}

#[test]
fn stdin_pipe_and_pty() {
    require_env!();
    let fx = Fixture::busybox();
    let mut spec = fx.spec("tr a-z A-Z");
    spec.stdin = Stdin::Pipe;
    let mut running = spawn(&spec).unwrap();
    let mut stdin = running.take_stdin().unwrap();
    stdin.write_all(b"hello\n").unwrap();
    drop(stdin);
    let mut out = String::new();
    running
        .take_stdout()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(out, "HELLO\n");
    assert!(running.wait().unwrap().success());

    let mut spec =
        fx.spec("test -t 0 && test -t 1 && stty size; tty; ls /dev/pts; read line; echo got:$line");
    spec.tty = Some(WinSize {
        rows: 33,
        cols: 101,
    });
    let mut running = spawn(&spec).unwrap();
    let mut pty = running.take_pty().unwrap();
    pty.write_all(b"typed\n").unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains("got:typed") {
        match pty.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&seen);
    assert!(text.contains("33 101"), "{text}");
    // The terminal comes from the container's own devpts instance.
    assert!(text.contains("/dev/pts/0"), "{text}");
    assert!(text.contains("got:typed"), "{text}");
    assert!(running.wait().unwrap().success());
}

#[test]
fn dir_rootfs_and_readonly_root() {
    require_env!();
    let fx = Fixture::busybox();
    // Merge the layers into one plain dir with cp -a through a first sandbox.
    let merged = fx.dir.path().join("merged");
    std::fs::create_dir_all(&merged).unwrap();
    let mut copy = fx.spec("cp -a /bin /etc /tmp /out/ && test -x /out/bin/busybox");
    copy.mounts.push(Mount::bind(&merged, "/out", false));
    sh_ok(&copy);
    let mut spec = SandboxSpec::new(
        RootFs::Dir(merged.clone()),
        vec![
            "/bin/sh".into(),
            "-c".into(),
            "touch /x 2>/dev/null && echo wrote || echo ro".into(),
        ],
    );
    spec.readonly_rootfs = true;
    assert_eq!(sh_ok(&spec), "ro\n");
    spec.readonly_rootfs = false;
    assert_eq!(sh_ok(&spec), "wrote\n");
    assert!(merged.join("x").exists());
}

#[test]
fn exec_joins_a_running_sandbox() {
    require_env!();
    let fx = Fixture::busybox();
    let mut spec = fx.spec("echo ready > /tmp/ready; exec sleep 30");
    spec.hostname = "box".into();
    let mut container = spawn(&spec).unwrap();
    let start = Instant::now();
    while !fx.upper.join("tmp/ready").exists() {
        assert!(start.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut exec = ExecSpec::new(vec![
        "sh".into(),
        "-c".into(),
        "id -u; hostname; cat /tmp/ready; cat /proc/1/cmdline | tr '\\0' ' '; echo; pwd; echo hi > /tmp/from-exec; grep CapEff /proc/self/status".into(),
    ]);
    exec.user = "app".into();
    exec.cwd = "/home/app".into();
    let mut running = exec_in(container.pid(), &exec).unwrap();
    let mut out = String::new();
    running
        .take_stdout()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(running.wait().unwrap().success(), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        &lines[..5],
        &["1000", "box", "ready", "sleep 30 ", "/home/app"],
        "{out}"
    );
    assert!(lines[5].ends_with("0000000000000000"), "{out}");
    assert_eq!(
        std::fs::read_to_string(fx.upper.join("tmp/from-exec")).unwrap(),
        "hi\n"
    );
    // Unknown users fail clearly; a signal to the exec handle reaches the command.
    exec.user = "ghost".into();
    assert!(matches!(
        exec_in(container.pid(), &exec),
        Err(SandboxError::User(_))
    ));
    let mut sleeper = exec_in(
        container.pid(),
        &ExecSpec::new(vec!["sleep".into(), "30".into()]),
    )
    .unwrap();
    sleeper.kill(libc::SIGTERM).unwrap();
    assert_eq!(
        sleeper.wait().unwrap(),
        ExitStatus::Exited(128 + libc::SIGTERM)
    );
    container.kill(libc::SIGKILL).unwrap();
    assert_eq!(
        container.wait().unwrap(),
        ExitStatus::Signaled(libc::SIGKILL)
    );
}

#[test]
fn spawning_threads_may_exit_and_many_run_at_once() {
    require_env!();
    let fx = std::sync::Arc::new(Fixture::busybox());
    // A sandbox started from a thread that then exits keeps running: the
    // parent-death signal is tied to the long-lived spawner thread.
    let fx2 = fx.clone();
    let mut running =
        std::thread::spawn(move || spawn(&fx2.spec("sleep 0.5; echo survived")).unwrap())
            .join()
            .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        running.try_wait().unwrap(),
        None,
        "still running after its thread exited"
    );
    let mut out = String::new();
    running
        .take_stdout()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(out, "survived\n");
    assert!(running.wait().unwrap().success());

    // Eight threads, ten runs each, on separate upper dirs over the same lowers.
    let handles: Vec<_> = (0..8)
        .map(|thread| {
            let fx = fx.clone();
            std::thread::spawn(move || {
                for round in 0..10 {
                    let upper = fx.dir.path().join(format!("c{thread}-{round}/upper"));
                    let work = fx.dir.path().join(format!("c{thread}-{round}/work"));
                    std::fs::create_dir_all(&upper).unwrap();
                    std::fs::create_dir_all(&work).unwrap();
                    let rootfs = RootFs::Overlay {
                        lower_dirs: fx.lowers.clone(),
                        upper_dir: upper.clone(),
                        work_dir: work,
                    };
                    let script = format!("echo {thread}-{round} > /mine; cat /mine");
                    let spec = SandboxSpec::new(rootfs, vec!["sh".into(), "-c".into(), script]);
                    assert_eq!(sh_ok(&spec), format!("{thread}-{round}\n"));
                    assert_eq!(
                        std::fs::read_to_string(upper.join("mine")).unwrap(),
                        format!("{thread}-{round}\n")
                    );
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
}

#[test]
fn joins_a_prepared_network_namespace() {
    require_env!();
    if std::process::Command::new("ip").arg("-V").output().is_err() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("this test needs `ip` (apt-get install iproute2)");
        }
        eprintln!("skipping: needs `ip` (iproute2)");
        return;
    }
    let name = format!("kiln-sbx-test-{}", std::process::id());
    let ip = |args: &[&str]| {
        let status = std::process::Command::new("ip")
            .args(args)
            .status()
            .unwrap();
        assert!(status.success(), "ip {args:?}");
    };
    ip(&["netns", "add", &name]);
    let result = std::panic::catch_unwind(|| {
        ip(&[
            "-n",
            &name,
            "link",
            "add",
            "kilnveth0",
            "type",
            "veth",
            "peer",
            "name",
            "kilnveth1",
        ]);
        let fx = Fixture::busybox();
        let mut spec = fx.spec("tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort; cat /sys/class/net/lo/operstate");
        spec.network = Network::Join(format!("/run/netns/{name}").into());
        sh_ok(&spec)
    });
    ip(&["netns", "del", &name]);
    let out = result.unwrap();
    assert!(out.starts_with("kilnveth0\nkilnveth1\nlo\n"), "{out}");
}

#[test]
fn seccomp_docker_default_blocks_new_namespaces() {
    require_env!();
    let fx = Fixture::busybox();
    let script = "grep '^Seccomp:' /proc/self/status; unshare -U true 2>/dev/null && echo unshare-ok || echo unshare-denied";
    assert_eq!(sh_ok(&fx.spec(script)), "Seccomp:\t2\nunshare-denied\n");
    let mut spec = fx.spec(script);
    spec.seccomp = kiln_sandbox::Seccomp::Unconfined;
    assert_eq!(sh_ok(&spec), "Seccomp:\t0\nunshare-ok\n");
}

#[test]
fn user_lookup_never_leaves_the_image_root_or_blocks() {
    require_env!();
    let mut fx = Fixture::busybox();
    // A host file the image must not be able to reach.
    let host_passwd = fx.dir.path().join("host-passwd");
    std::fs::write(&host_passwd, "escaped:x:777:777::/:/bin/sh\n").unwrap();
    let evil = fx.dir.path().join("layer-evil");
    std::fs::create_dir_all(evil.join("etc")).unwrap();
    std::os::unix::fs::symlink(&host_passwd, evil.join("etc/passwd")).unwrap();
    // A FIFO as /etc/group: reading it would block forever.
    let fifo =
        std::ffi::CString::new(evil.join("etc/group").as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    fx.lowers.insert(0, evil);
    let mut spec = fx.spec("id -u");
    spec.user = "escaped".into();
    let err = capture(&spec)
        .err()
        .expect("the host's passwd must not be read");
    assert!(
        err.to_string().contains("unable to find user escaped"),
        "{err}"
    );
    spec.user = "1234".into();
    spec.timeout = Some(Duration::from_secs(10));
    assert_eq!(sh_ok(&spec), "1234\n");
}

#[test]
fn run_streams_terminal_output() {
    require_env!();
    let fx = Fixture::busybox();
    let mut spec =
        fx.spec("test -t 1 && echo on-a-tty; head -c 200000 /dev/zero | tr '\\0' x; echo");
    spec.tty = Some(WinSize { rows: 24, cols: 80 });
    let mut seen = Vec::new();
    let status = run(&spec, |stream, bytes| {
        assert_eq!(stream, Stream::Stdout);
        seen.extend_from_slice(bytes);
    })
    .unwrap();
    assert!(status.success());
    let text = String::from_utf8_lossy(&seen);
    assert!(
        text.starts_with("on-a-tty\r\n"),
        "{}",
        &text[..40.min(text.len())]
    );
    assert_eq!(
        text.matches('x').count(),
        200000,
        "all output read, no deadlock on a full pty"
    );
}
