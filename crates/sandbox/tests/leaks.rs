//! Nothing leaks: after many runs (success, failure, setup error, timeout) and
//! after SIGKILL of the process that started a sandbox, no mount, process or fd
//! is left behind on the host.

mod common;

use common::{Fixture, capture, environment_ready};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The tests here count the process's fds and children: run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Host mounts that look like ours: anything under the fixture dir or the
/// sandbox mount point.
fn our_mounts(fixture_dir: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let needle = fixture_dir.to_string_lossy().into_owned();
    text.lines()
        .filter(|l| l.contains(&needle) || l.contains("kiln-sandbox-root"))
        .map(str::to_string)
        .collect()
}

fn child_processes() -> Vec<u32> {
    let me = std::process::id().to_string();
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        if status
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["PPid:", me.as_str()])
        {
            out.push(pid);
        }
    }
    out
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn processes_with_cmdline(marker: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if text.trim_end() == marker {
                out.push(pid);
            }
        }
    }
    out
}

#[test]
fn no_leaks_after_a_hundred_runs() {
    if !environment_ready() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let fx = Fixture::busybox();
    // Warm up the spawner thread and lazily opened files before counting.
    capture(&fx.spec("true")).unwrap();
    let mounts_before: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let fds_before = open_fds();
    for round in 0..100 {
        let mut spec = fx.spec(match round % 4 {
            0 => "true",
            1 => "exit 3",
            2 => "sleep 5 & sleep 5 & echo bg",
            _ => "echo x > /f$$",
        });
        if round % 10 == 9 {
            spec.user = "nobody-such".into();
            assert!(capture(&spec).is_err());
            continue;
        }
        if round % 25 == 24 {
            spec.argv = vec!["sleep".into(), "10".into()];
            spec.timeout = Some(Duration::from_millis(50));
            assert!(capture(&spec).is_err());
            continue;
        }
        spec.mounts
            .push(kiln_sandbox::Mount::tmpfs("/scratch", None));
        capture(&spec).unwrap();
    }
    assert_eq!(
        our_mounts(fx.dir.path()),
        Vec::<String>::new(),
        "no sandbox mount visible on the host"
    );
    assert_eq!(
        child_processes(),
        Vec::<u32>::new(),
        "no child process left (background sleeps died with PID 1)"
    );
    assert_eq!(open_fds(), fds_before, "no fd leaked");
    // Other programs on this shared machine (docker builds, ip netns) may mount
    // things meanwhile: every host mount that appeared must be theirs.
    let mounts_after: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let new_mounts: Vec<&String> = mounts_after
        .iter()
        .filter(|m| !mounts_before.contains(m))
        .collect();
    for mount in &new_mounts {
        let fields: Vec<&str> = mount.split_whitespace().collect();
        let fstype = fields
            .iter()
            .skip_while(|f| **f != "-")
            .nth(1)
            .copied()
            .unwrap_or("");
        assert!(
            !["proc", "sysfs", "devpts", "mqueue"].contains(&fstype),
            "a sandbox mount leaked to the host: {mount}"
        );
    }
    eprintln!(
        "host mounts: {} before, {} after ({} new, none ours)",
        mounts_before.len(),
        mounts_after.len(),
        new_mounts.len()
    );
}

#[test]
fn sigkill_of_the_caller_kills_the_sandbox() {
    if !environment_ready() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let fx = Fixture::busybox();
    let marker = "sleep 4242.5";
    let lowers: Vec<String> = fx
        .lowers
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let mut tool = std::process::Command::new(env!("CARGO_BIN_EXE_kiln-sandbox-tool"))
        .arg("overlay")
        .arg(lowers.join(":"))
        .arg(&fx.upper)
        .arg(&fx.work)
        .args(["sleep", "4242.5"])
        .spawn()
        .unwrap();
    let start = Instant::now();
    while processes_with_cmdline(marker).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "sandboxed sleep never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    tool.kill().unwrap(); // SIGKILL
    tool.wait().unwrap();
    let start = Instant::now();
    while !processes_with_cmdline(marker).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "sandboxed process survived its parent"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(our_mounts(fx.dir.path()), Vec::<String>::new());
    // The overlay is unmounted with the namespace: its work dir is reusable.
    let mut spec = fx.spec("echo again");
    spec.argv[2] = "echo again".into();
    assert_eq!(capture(&spec).unwrap().stdout, "again\n");
}

#[test]
fn works_when_the_caller_has_no_stdio() {
    if !environment_ready() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let fx = Fixture::busybox();
    // A daemonized monitor runs with fds 0-2 closed: new pipes then land on
    // 0-2 and must not be clobbered when the child installs its stdio.
    // SAFETY: saving fd 0 and closing it; restored below.
    let saved = unsafe { libc::fcntl(0, libc::F_DUPFD_CLOEXEC, 10) };
    assert!(saved >= 0);
    unsafe { libc::close(0) };
    let result = capture(&fx.spec("cat; echo out; echo err >&2"));
    // SAFETY: restoring fd 0.
    unsafe {
        libc::dup2(saved, 0);
        libc::close(saved);
    }
    let out = result.unwrap();
    assert!(out.status.success());
    assert_eq!(
        (out.stdout.as_str(), out.stderr.as_str()),
        ("out\n", "err\n")
    );
}
