//! Issue 6's leak check: 100 `kiln run -d -p` / `stop` / `rm` cycles on the
//! default network (own network namespace, slirp4netns, a published port)
//! leave the host as they found it: mounts, processes, network namespaces,
//! network interfaces and the store's own directories, compared before and
//! after. Alone in its test binary so that nothing else of this suite runs
//! containers meanwhile (cargo runs test binaries one after another).
//! Needs root, busybox-static and slirp4netns; skips without them (fails
//! under CI=true). Takes about 25 s on a 2-core machine (debug build).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use image_common::{busybox, is_root, kiln_ok, tar_directory};

mod image_common;

const IMAGE: &str = "kiln-test/busybox:leaks";
const CYCLES: usize = 100;

fn skip_or_fail(why: &str) -> bool {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{why} (required under CI=true)");
    }
    eprintln!("SKIP: {why}");
    false
}

/// Mounts of the host's mount namespace (mount point, type, source), except
/// the docker engine's own (other programs may run containers meanwhile).
fn mounts() -> BTreeSet<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let mount_point = fields.get(4)?;
            let dash = fields.iter().position(|f| *f == "-")?;
            let fs_type = fields.get(dash + 1)?;
            let source = fields.get(dash + 2)?;
            Some(format!("{mount_point} {fs_type} {source}"))
        })
        .filter(|m| !m.contains("/var/lib/docker/") && !m.contains("/run/docker/"))
        .collect()
}

/// The host's network interfaces, except docker's per-container veths.
fn interfaces() -> BTreeSet<String> {
    std::fs::read_dir("/sys/class/net")
        .expect("/sys/class/net")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with("veth"))
        .collect()
}

/// Processes that belong to this test: kiln processes of this store and the
/// containers' shells (their command line carries `marker`), with the network
/// namespaces they are in.
fn our_processes(root: &str, marker: &str) -> (Vec<String>, BTreeSet<String>) {
    let mut found = Vec::new();
    let mut namespaces = BTreeSet::new();
    for entry in std::fs::read_dir("/proc").expect("proc").flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(root) || cmdline.contains(marker) {
            if let Ok(ns) = std::fs::read_link(entry.path().join("ns/net")) {
                namespaces.insert(ns.display().to_string());
            }
            found.push(format!(
                "{}: {cmdline}",
                entry.file_name().to_string_lossy()
            ));
        }
    }
    (found, namespaces)
}

fn count_comm(comm: &str) -> usize {
    std::fs::read_dir("/proc")
        .expect("proc")
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
        .filter(|c| c.trim() == comm)
        .count()
}

/// The store's files outside blobs (which these cycles must not change
/// either): containers, snapshots, temp files, lock files.
fn store_entries(root: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for dir in ["containers", "snapshots", "tmp", "locks", "blobs/sha256"] {
        if let Ok(entries) = std::fs::read_dir(root.join(dir)) {
            for entry in entries.flatten() {
                found.insert(format!("{dir}/{}", entry.file_name().to_string_lossy()));
            }
        }
    }
    found
}

#[derive(Debug, PartialEq)]
struct HostState {
    mounts: BTreeSet<String>,
    interfaces: BTreeSet<String>,
    processes: Vec<String>,
    net_namespaces: BTreeSet<String>,
    store: BTreeSet<String>,
}

fn host_state(root: &Path, marker: &str) -> HostState {
    let (processes, net_namespaces) = our_processes(&root.to_string_lossy(), marker);
    HostState {
        mounts: mounts(),
        interfaces: interfaces(),
        processes,
        net_namespaces,
        store: store_entries(root),
    }
}

#[test]
fn hundred_run_stop_rm_cycles_leave_the_host_as_found() {
    if !is_root() {
        skip_or_fail("kiln run needs root (namespaces, overlayfs)");
        return;
    }
    let Some(busybox) = busybox() else {
        skip_or_fail("busybox not found (install busybox-static)");
        return;
    };
    let have_slirp = ["/usr/bin/slirp4netns", "/usr/local/bin/slirp4netns"]
        .iter()
        .any(|p| Path::new(p).is_file());
    if !have_slirp && !skip_or_fail("slirp4netns not installed (the default network)") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let rootfs = tmp.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).expect("mkdir");
    std::fs::copy(&busybox, rootfs.join("bin/busybox")).expect("copy busybox");
    for applet in ["sh", "sleep", "true"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).expect("symlink");
    }
    let tar = tmp.path().join("rootfs.tar");
    tar_directory(&rootfs, &tar);
    let root: PathBuf = tmp.path().join("store");
    kiln_ok(&root, &["import", tar.to_str().expect("utf8"), IMAGE]);
    // Once, so that the store's lazily made directories and the image's
    // snapshots exist before the "before" picture.
    kiln_ok(&root, &["run", "--rm", "--network", "none", IMAGE, "true"]);

    let marker = format!("kiln-leak-test-{}", std::process::id());
    // `wait` returns as soon as the trapped TERM arrives: stop is immediate,
    // and the background sleep dies with the container's PID namespace.
    // (Until the trap is set, PID 1 ignores TERM and stop would wait its 10 s
    // for the SIGKILL: each cycle waits for "armed" first.)
    let script = format!("trap 'exit 0' TERM; echo armed; sleep 1000 & wait # {marker}");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let publish = format!("127.0.0.1:{port}:80");
    let slirps_before = count_comm("slirp4netns");
    let before = host_state(&root, &marker);
    assert!(before.processes.is_empty(), "{:?}", before.processes);

    let started = Instant::now();
    for i in 0..CYCLES {
        let id = kiln_ok(
            &root,
            &["run", "-d", "-p", &publish, IMAGE, "sh", "-c", &script],
        );
        let id = id.trim();
        if i == 0 {
            // The picture is taken of the right things: a running container
            // shows up in it.
            let during = host_state(&root, &marker);
            assert!(
                during.processes.len() >= 2 && during.net_namespaces.len() >= 2,
                "monitor and container, in their own network namespace: {during:?}"
            );
            assert!(during.store.len() > before.store.len(), "{during:?}");
        }
        let armed = Instant::now() + Duration::from_secs(10);
        while !kiln_ok(&root, &["logs", id]).contains("armed") {
            assert!(Instant::now() < armed, "cycle {i}: the trap was never set");
            std::thread::sleep(Duration::from_millis(5));
        }
        kiln_ok(&root, &["stop", id]);
        kiln_ok(&root, &["rm", id]);
    }
    let took = started.elapsed();
    eprintln!("{CYCLES} run -d -p / stop / rm cycles took {took:?}");

    // Processes may take a moment to be reaped after rm returns.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut after = host_state(&root, &marker);
    while after != before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        after = host_state(&root, &marker);
    }
    assert_eq!(after.processes, before.processes, "processes left behind");
    assert_eq!(
        after.net_namespaces, before.net_namespaces,
        "network namespaces left behind"
    );
    assert_eq!(after.mounts, before.mounts, "mounts left behind");
    assert_eq!(
        after.interfaces, before.interfaces,
        "network interfaces left behind"
    );
    assert_eq!(after.store, before.store, "store leftovers");
    assert!(
        count_comm("slirp4netns") <= slirps_before,
        "slirp4netns left behind"
    );
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
        "the published port is free again"
    );
    // No container holds the image any more: it can be removed without -f.
    let out = kiln_ok(&root, &["rmi", IMAGE]);
    assert!(out.contains("Untagged:"), "{out}");
}
