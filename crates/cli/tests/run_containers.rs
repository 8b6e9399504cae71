//! End-to-end tests of the container verbs (`kiln run`, `ps`, `logs`, `stop`,
//! `kill`, `rm`, `wait`, `exec`) driving the real binary against a throwaway
//! store with a busybox image imported from the host's static busybox.
//! Need root and busybox-static; skip otherwise (fail under CI=true).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use image_common::{busybox, have_tool, is_root, kiln_ok, kiln_output, tar_directory};

mod image_common;

const IMAGE: &str = "kiln-test/busybox:run";

fn skip_or_fail(why: &str) -> bool {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{why} (required under CI=true)");
    }
    eprintln!("SKIP: {why}");
    false
}

/// A fresh store with the busybox image imported; None when the test must skip.
struct Env {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Drop for Env {
    /// A failed test must not leave detached containers (and their monitors)
    /// running: force-remove whatever is left in this store.
    fn drop(&mut self) {
        let Ok(out) = kiln(self).args(["ps", "-a", "-q", "--no-trunc"]).output() else {
            return;
        };
        let ids: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
        if !ids.is_empty() {
            let _ = kiln(self).arg("rm").arg("-f").args(&ids).output();
        }
    }
}

fn setup() -> Option<Env> {
    if !is_root() {
        skip_or_fail("kiln run needs root (namespaces, overlayfs)");
        return None;
    }
    let Some(busybox) = busybox() else {
        skip_or_fail("busybox not found (install busybox-static)");
        return None;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let rootfs = tmp.path().join("rootfs");
    for dir in ["bin", "etc", "tmp", "www", "home/app"] {
        std::fs::create_dir_all(rootfs.join(dir)).expect("mkdir");
    }
    std::fs::copy(&busybox, rootfs.join("bin/busybox")).expect("copy busybox");
    for applet in [
        "sh", "echo", "sleep", "id", "cat", "httpd", "true", "false", "ls", "env", "pwd", "trap",
        "printf", "wget", "mkdir", "hostname", "touch", "head", "grep",
    ] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).expect("symlink");
    }
    std::fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
    )
    .expect("passwd");
    std::fs::write(rootfs.join("etc/group"), "root:x:0:\napp:x:1000:\n").expect("group");
    std::fs::write(rootfs.join("www/index.html"), "kiln says hello\n").expect("index");
    let tar = tmp.path().join("rootfs.tar");
    tar_directory(&rootfs, &tar);
    let root = tmp.path().join("store");
    let env = Env { _tmp: tmp, root };
    ok(&env, &["import", tar.to_str().expect("utf8 path"), IMAGE]);
    Some(env)
}

/// `GET /index.html` from 127.0.0.1:`port`: what came back, if connected.
fn http_get(port: u16) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    stream
        .write_all(b"GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    let _ = stream.read_to_string(&mut body);
    Some(body)
}

/// The host port `ps` shows published for the container `id` (127.0.0.1).
fn published_port(env: &Env, id: &str) -> u16 {
    let line = ok(env, &["ps", "--no-trunc"])
        .lines()
        .find(|l| l.starts_with(id))
        .map(str::to_string)
        .expect("ps row");
    // The PORTS column: `127.0.0.1:HOST->CTR/tcp` (the command may hold
    // addresses too).
    let port: u16 = line
        .split_whitespace()
        .find(|word| word.contains("->"))
        .and_then(|ports| ports.strip_prefix("127.0.0.1:"))
        .and_then(|rest| rest.split("->").next())
        .and_then(|p| p.parse().ok())
        .expect("a host port in ps");
    assert_ne!(port, 0, "{line}");
    port
}

/// Imports setup()'s rootfs again as `name`, a distinct image through the
/// config `change` (`ENV X=1`).
fn import_another(env: &Env, change: &str, name: &str) {
    let tar = env._tmp.path().join("rootfs.tar");
    ok(
        env,
        &[
            "import",
            "-c",
            change,
            tar.to_str().expect("utf8 path"),
            name,
        ],
    );
}

fn kiln(env: &Env) -> Command {
    image_common::kiln(&env.root)
}

fn run(env: &Env, args: &[&str]) -> Output {
    kiln_output(&env.root, args)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs kiln, asserts success, returns stdout.
fn ok(env: &Env, args: &[&str]) -> String {
    kiln_ok(&env.root, args)
}

/// Waits for a child kiln, killing it (and failing) after `timeout` so a
/// broken forward can never hang the suite.
fn wait_child(child: &mut std::process::Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("kiln did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn attached_run_streams_output_and_returns_exit_code() {
    let Some(env) = setup() else { return };
    let out = run(
        &env,
        &[
            "run",
            "--rm",
            IMAGE,
            "sh",
            "-c",
            "echo hello; echo oops >&2; exit 3",
        ],
    );
    assert_eq!(out.status.code(), Some(3), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hello\n");
    assert_eq!(text(&out.stderr), "oops\n");
    // --rm removed it.
    assert_eq!(ok(&env, &["ps", "-a", "-q"]), "");

    // Config from flags: env, workdir, user, hostname.
    let out = ok(
        &env,
        &[
            "run",
            "--rm",
            "-e",
            "GREETING=hi",
            "-w",
            "/tmp/new",
            "-u",
            "1000",
            "--hostname",
            "box",
            IMAGE,
            "sh",
            "-c",
            "echo $GREETING $(pwd) $(id -u) $(hostname)",
        ],
    );
    assert_eq!(out, "hi /tmp/new 1000 box\n");

    // -v (rw and ro), --env-file, --read-only, --init.
    let shared = env.root.parent().expect("tmp").join("shared");
    std::fs::create_dir_all(&shared).expect("mkdir shared");
    std::fs::write(shared.join("in.txt"), "from host\n").expect("write");
    let env_file = env.root.parent().expect("tmp").join("env.list");
    std::fs::write(&env_file, "# comment\nFROM_FILE=yes\n").expect("env file");
    let volume = format!("{}:/mnt", shared.display());
    let volume_ro = format!("{}:/ro:ro", shared.display());
    let out = ok(
        &env,
        &[
            "run",
            "--rm",
            "-v",
            &volume,
            "-v",
            &volume_ro,
            "--env-file",
            env_file.to_str().expect("utf8"),
            "--init",
            IMAGE,
            "sh",
            "-c",
            "cat /mnt/in.txt; echo out > /mnt/out.txt; echo $FROM_FILE; touch /ro/x 2>/dev/null || echo ro refused; cat /proc/1/cmdline | head -c 4 | grep -q sh || echo init is pid1",
        ],
    );
    assert_eq!(out, "from host\nyes\nro refused\ninit is pid1\n");
    assert_eq!(
        std::fs::read_to_string(shared.join("out.txt")).expect("written through -v"),
        "out\n"
    );
    let out = run(
        &env,
        &["run", "--rm", "--read-only", IMAGE, "touch", "/newfile"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));

    // docker's codes: 127 not found, 125 kiln's own error (no such image).
    let out = run(&env, &["run", "--rm", IMAGE, "no-such-command"]);
    assert_eq!(
        out.status.code(),
        Some(127),
        "stderr: {}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains("executable file not found"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&env, &["run", "--rm", "no-such-image:1"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("No such image"),
        "{}",
        text(&out.stderr)
    );

    // Without --rm the container stays, exited, with its logs.
    ok(
        &env,
        &["run", "--name", "kept", IMAGE, "echo", "kept output"],
    );
    let ps = ok(&env, &["ps", "-a"]);
    assert!(ps.contains("Exited (0)") && ps.contains("kept"), "{ps}");
    assert_eq!(ok(&env, &["logs", "kept"]), "kept output\n");
    let inspect: serde_json::Value =
        serde_json::from_str(&ok(&env, &["container", "inspect", "kept"])).expect("inspect JSON");
    assert_eq!(inspect[0]["Name"], "/kept");
    assert_eq!(inspect[0]["State"]["Status"], "exited");
    assert_eq!(inspect[0]["State"]["ExitCode"], 0);
    assert_eq!(inspect[0]["Path"], "echo");
    assert_eq!(inspect[0]["Config"]["Image"], IMAGE);
    // A container and an image with the same name: `inspect` looks at
    // containers first, as docker's does; --type and `image inspect` choose.
    ok(&env, &["tag", IMAGE, "kept"]);
    let either: serde_json::Value =
        serde_json::from_str(&ok(&env, &["inspect", "kept"])).expect("inspect JSON");
    assert_eq!(either[0]["Name"], "/kept", "the container comes first");
    for args in [
        &["inspect", "--type", "image", "kept"][..],
        &["image", "inspect", "kept"][..],
    ] {
        let image: serde_json::Value = serde_json::from_str(&ok(&env, args)).expect("inspect JSON");
        assert!(image[0]["RootFS"]["Layers"].is_array(), "{args:?}: {image}");
    }
    let container: serde_json::Value =
        serde_json::from_str(&ok(&env, &["inspect", "--type", "container", "kept"]))
            .expect("inspect JSON");
    assert_eq!(container[0]["State"]["Status"], "exited");
    let out = run(&env, &["inspect", "--type", "volume", "kept"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--type"),
        "{}",
        text(&out.stderr)
    );
    ok(&env, &["rmi", "kept"]);
    assert_eq!(ok(&env, &["wait", "kept"]), "0\n");
    ok(&env, &["rm", "kept"]);
}

#[test]
fn detached_run_logs_stop_rm() {
    let Some(env) = setup() else { return };
    let script = "trap 'echo bye; exit 0' TERM; echo started; while true; do sleep 0.1; done";
    let id = ok(
        &env,
        &["run", "-d", "--name", "web", IMAGE, "sh", "-c", script],
    );
    let id = id.trim();
    assert_eq!(id.len(), 64, "{id:?}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));

    let ps = ok(&env, &["ps"]);
    let header = ps.lines().next().expect("header");
    for column in [
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "PORTS",
        "NAMES",
    ] {
        assert!(header.contains(column), "{ps}");
    }
    let json: serde_json::Value =
        serde_json::from_str(ok(&env, &["ps", "--format", "json"]).trim()).expect("ps json");
    assert_eq!(json["Names"], "web");
    assert_eq!(json["State"], "running");
    assert_eq!(json["ID"], &id[..12]);
    let created_at = json["CreatedAt"].as_str().expect("CreatedAt");
    assert!(
        created_at.len() == 29 && created_at.ends_with(" +0000 UTC"),
        "docker's form: {created_at}"
    );
    assert_eq!(json["Image"], IMAGE);
    assert!(
        json["Command"]
            .as_str()
            .is_some_and(|c| c.starts_with("\"sh -c"))
    );
    let line = ps.lines().nth(1).expect("a container row");
    assert!(line.starts_with(&id[..12]), "{ps}");
    assert!(line.contains(" Up ") && line.ends_with("web"), "{ps}");

    wait_for("the log line", Duration::from_secs(10), || {
        ok(&env, &["logs", &id[..6]]).contains("started")
    });
    let stamped = ok(&env, &["logs", "-t", "web"]);
    assert!(
        stamped.starts_with("20") && stamped.contains("Z started"),
        "{stamped}"
    );

    // A running container is not removed without -f.
    let out = run(&env, &["rm", "web"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("is running"),
        "{}",
        text(&out.stderr)
    );

    // logs -f follows until the container ends.
    let follower = kiln(&env)
        .args(["logs", "-f", "web"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn logs -f");
    let started = Instant::now();
    assert_eq!(ok(&env, &["stop", "-t", "5", "web"]), "web\n");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stop took {:?}",
        started.elapsed()
    );
    let ps = ok(&env, &["ps", "-a"]);
    assert!(ps.contains("Exited (0)"), "{ps}");
    let followed = follower.wait_with_output().expect("logs -f");
    assert_eq!(text(&followed.stdout), "started\nbye\n");
    assert_eq!(ok(&env, &["ps", "-q"]), "", "not running any more");
    assert_eq!(ok(&env, &["logs", "web"]), "started\nbye\n");
    assert_eq!(ok(&env, &["logs", "--tail", "1", "web"]), "bye\n");
    assert_eq!(
        ok(&env, &["logs", "--since", "10m", "web"]),
        "started\nbye\n"
    );
    assert_eq!(
        ok(&env, &["logs", "--since", "2099-01-01T00:00:00Z", "web"]),
        ""
    );
    // start runs it again, on the same upper layer, appending to the log.
    assert_eq!(ok(&env, &["start", "web"]), "web\n");
    assert!(ok(&env, &["ps"]).contains(" Up "));
    wait_for("the second start's output", Duration::from_secs(10), || {
        ok(&env, &["logs", "web"]) == "started\nbye\nstarted\n"
    });
    ok(&env, &["stop", "web"]);
    ok(&env, &["rm", "web"]);
    assert_eq!(ok(&env, &["ps", "-a", "-q"]), "");
    assert!(
        !env.root.join("containers").join(id).exists(),
        "rm removes the record"
    );
    let out = run(&env, &["logs", "web"]);
    assert!(
        text(&out.stderr).contains("No such container"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn attached_run_forwards_signals_and_detached_rm_cleans_up() {
    let Some(env) = setup() else { return };
    let mut child = kiln(&env)
        .args([
            "run",
            "--rm",
            IMAGE,
            "sh",
            "-c",
            "trap 'echo got INT; exit 3' INT; echo ready; while true; do sleep 0.1; done",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn kiln run");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut first = [0u8; 6];
    stdout.read_exact(&mut first).expect("ready line");
    assert_eq!(&first, b"ready\n");
    // SAFETY: signalling the child we spawned.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let status = wait_child(&mut child, Duration::from_secs(60));
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).expect("rest");
    assert_eq!(status.code(), Some(3), "{rest}");
    assert_eq!(rest, "got INT\n");

    // -d --rm: the monitor removes the container when it exits.
    let id = ok(&env, &["run", "-d", "--rm", IMAGE, "sh", "-c", "sleep 1"]);
    assert_eq!(ok(&env, &["wait", id.trim()]), "0\n");
    wait_for(
        "the --rm container to disappear",
        Duration::from_secs(5),
        || ok(&env, &["ps", "-a", "-q"]).is_empty(),
    );
}

#[test]
fn stop_kills_after_timeout_and_kill_sends_signals() {
    let Some(env) = setup() else { return };
    // sleep as PID 1 ignores SIGTERM (no handler): stop must SIGKILL it.
    let id = ok(&env, &["run", "-d", IMAGE, "sleep", "1000"]);
    let id = id.trim();
    let started = Instant::now();
    ok(&env, &["stop", "-t", "1", id]);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(10),
        "{took:?}"
    );
    assert!(ok(&env, &["ps", "-a"]).contains("Exited (137)"));
    assert_eq!(ok(&env, &["wait", id]), "137\n");

    let id2 = ok(
        &env,
        &[
            "run",
            "-d",
            IMAGE,
            "sh",
            "-c",
            "trap 'exit 42' USR1; echo armed; while true; do sleep 0.1; done",
        ],
    );
    let id2 = id2.trim();
    // PID 1 ignores signals it has no handler for: wait until the trap is set.
    wait_for("the trap", Duration::from_secs(10), || {
        ok(&env, &["logs", id2]).contains("armed")
    });
    ok(&env, &["kill", "-s", "USR1", id2]);
    assert_eq!(ok(&env, &["wait", id2]), "42\n");
    let out = run(&env, &["kill", id2]);
    assert!(
        text(&out.stderr).contains("is not running"),
        "{}",
        text(&out.stderr)
    );
    ok(&env, &["rm", id, id2]);
}

#[test]
fn published_port_reaches_busybox_httpd() {
    let Some(env) = setup() else { return };
    let id = ok(
        &env,
        &[
            "run",
            "-d",
            "-p",
            "127.0.0.1:18080:8080",
            IMAGE,
            "httpd",
            "-f",
            "-p",
            "8080",
            "-h",
            "/www",
        ],
    );
    let id = id.trim();
    assert!(ok(&env, &["ps"]).contains("127.0.0.1:18080->8080/tcp"));
    // -p with only the container port: a random host port, shown by ps.
    let random = ok(
        &env,
        &[
            "run",
            "-d",
            "-p",
            "127.0.0.1::8080",
            IMAGE,
            "httpd",
            "-f",
            "-p",
            "8080",
            "-h",
            "/www",
        ],
    );
    let host_port = published_port(&env, random.trim());
    wait_for(
        "an HTTP answer on the random port",
        Duration::from_secs(10),
        || http_get(host_port).is_some_and(|body| body.contains("kiln says hello")),
    );
    ok(&env, &["rm", "-f", random.trim()]);
    // Only what listens on the container's address is published, as with
    // docker (whose proxy reaches the container's bridge address): a server
    // on the container's own 127.0.0.1 is not.
    if have_tool("slirp4netns", &["--version"]) {
        let local = ok(
            &env,
            &[
                "run",
                "-d",
                "-p",
                "127.0.0.1::8080",
                IMAGE,
                "httpd",
                "-f",
                "-p",
                "127.0.0.1:8080",
                "-h",
                "/www",
            ],
        );
        let local = local.trim();
        let port = published_port(&env, local);
        wait_for(
            "httpd inside the container",
            Duration::from_secs(10),
            || {
                let out = run(
                    &env,
                    &[
                        "exec",
                        local,
                        "wget",
                        "-q",
                        "-O",
                        "-",
                        "http://127.0.0.1:8080/index.html",
                    ],
                );
                text(&out.stdout).contains("kiln says hello")
            },
        );
        let answer = http_get(port).unwrap_or_default();
        assert!(!answer.contains("kiln says hello"), "{answer}");
        ok(&env, &["rm", "-f", local]);
    }
    let mut body = String::new();
    wait_for(
        "an HTTP answer through the proxy",
        Duration::from_secs(10),
        || {
            body = http_get(18080).unwrap_or_default();
            body.contains("kiln says hello")
        },
    );
    assert!(
        body.starts_with("HTTP/1.") && body.contains(" 200 "),
        "{body}"
    );

    // The port is taken: a clear error, exit 125, and nothing started.
    let out = run(
        &env,
        &[
            "run",
            "-d",
            "-p",
            "127.0.0.1:18080:8080",
            IMAGE,
            "sleep",
            "100",
        ],
    );
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("cannot publish 127.0.0.1:18080"),
        "{}",
        text(&out.stderr)
    );
    let running = ok(&env, &["ps", "-q"]);
    assert_eq!(running.lines().count(), 1, "{running}");

    ok(&env, &["rm", "-f", id]);
    assert!(
        TcpStream::connect("127.0.0.1:18080").is_err(),
        "the proxy is gone with its container"
    );
    // --network none: no published ports, only loopback.
    let out = ok(
        &env,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            IMAGE,
            "cat",
            "/proc/net/dev",
        ],
    );
    assert!(out.contains("lo:") && !out.contains("eth0"), "{out}");
}

#[test]
fn exec_runs_as_the_given_user_in_the_container() {
    let Some(env) = setup() else { return };
    let id = ok(
        &env,
        &[
            "run",
            "-d",
            "--name",
            "box",
            "-e",
            "FROM_RUN=1",
            IMAGE,
            "sleep",
            "1000",
        ],
    );
    let id = id.trim();
    assert_eq!(
        ok(&env, &["exec", "-u", "1000", "box", "id", "-u"]),
        "1000\n"
    );
    assert_eq!(
        ok(&env, &["exec", "box", "sh", "-c", "echo $FROM_RUN $X"]),
        "1\n"
    );
    assert_eq!(
        ok(
            &env,
            &[
                "exec",
                "-e",
                "X=2",
                "-w",
                "/tmp",
                "box",
                "sh",
                "-c",
                "echo $X $(pwd)"
            ]
        ),
        "2 /tmp\n"
    );
    // exec sees the container's processes: PID 1 is the sleep.
    assert_eq!(
        ok(&env, &["exec", "box", "cat", "/proc/1/cmdline"]),
        "sleep\u{0}1000\u{0}"
    );
    let out = run(&env, &["exec", "box", "sh", "-c", "exit 9"]);
    assert_eq!(out.status.code(), Some(9));
    // -i forwards stdin.
    let mut child = kiln(&env)
        .args(["exec", "-i", "box", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn exec -i");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"through stdin\n")
        .expect("write");
    let out = child.wait_with_output().expect("exec -i");
    assert_eq!(text(&out.stdout), "through stdin\n");
    ok(&env, &["rm", "-f", id]);
    let out = run(&env, &["exec", id, "true"]);
    assert!(
        text(&out.stderr).contains("No such container"),
        "{}",
        text(&out.stderr)
    );
}

fn have_slirp4netns() -> bool {
    let found = ["/usr/bin/slirp4netns", "/usr/local/bin/slirp4netns"]
        .iter()
        .any(|p| Path::new(p).is_file());
    found || skip_or_fail("slirp4netns not installed (outbound access of the default network)")
}

/// Processes whose command name is `comm`.
fn count_processes(comm: &str) -> usize {
    std::fs::read_dir("/proc")
        .expect("proc")
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
        .filter(|c| c.trim() == comm)
        .count()
}

#[test]
fn default_network_has_outbound_access() {
    let Some(env) = setup() else { return };
    if !have_slirp4netns() {
        return;
    }
    // The host's own address on its default route (no packet is sent).
    let probe = std::net::UdpSocket::bind("0.0.0.0:0").expect("udp");
    probe
        .connect("192.0.2.1:80")
        .or_else(|_| probe.connect("8.8.8.8:80"))
        .expect("route");
    let host_ip = probe.local_addr().expect("addr").ip();
    let listener = std::net::TcpListener::bind("0.0.0.0:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        let mut request = [0u8; 1024];
        let _ = conn.read(&mut request);
        conn.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 9\r\n\r\noutbound\n")
            .expect("answer");
    });
    let url = format!("http://{host_ip}:{port}/");
    let out = ok(&env, &["run", "--rm", IMAGE, "wget", "-q", "-O", "-", &url]);
    assert_eq!(out, "outbound\n");
    server.join().expect("server");
    let resolv = ok(&env, &["run", "--rm", IMAGE, "cat", "/etc/resolv.conf"]);
    assert_eq!(resolv, "nameserver 10.0.2.3\n");
}

#[test]
fn healthcheck_goes_from_starting_to_healthy_and_unhealthy() {
    let Some(env) = setup() else { return };
    let id = ok(
        &env,
        &[
            "run",
            "-d",
            "--name",
            "doc",
            "-u",
            "1000",
            "--health-cmd",
            "test -f /tmp/ready && id -u",
            "--health-interval",
            "200ms",
            "--health-retries",
            "2",
            // Failures inside the start period do not count: it stays
            // "starting" long enough to be seen even on a loaded machine.
            "--health-start-period",
            "3s",
            IMAGE,
            "sleep",
            "1000",
        ],
    );
    let id = id.trim();
    let health = |env: &Env| -> serde_json::Value {
        let inspect: serde_json::Value =
            serde_json::from_str(&ok(env, &["container", "inspect", "doc"])).expect("inspect JSON");
        inspect[0]["State"]["Health"].clone()
    };
    assert!(ok(&env, &["ps"]).contains("(health: starting)"));
    wait_for(
        "unhealthy after 2 failed probes",
        Duration::from_secs(30),
        || health(&env)["Status"] == "unhealthy",
    );
    assert!(ok(&env, &["ps"]).contains("(unhealthy)"));
    ok(&env, &["exec", "-u", "0", "doc", "touch", "/tmp/ready"]);
    wait_for(
        "healthy after a passing probe",
        Duration::from_secs(30),
        || health(&env)["Status"] == "healthy",
    );
    let h = health(&env);
    let last = h["Log"]
        .as_array()
        .and_then(|l| l.last())
        .cloned()
        .expect("a probe log");
    assert_eq!(last["ExitCode"], 0);
    assert_eq!(
        last["Output"], "1000\n",
        "the probe runs as the container's user"
    );
    assert!(ok(&env, &["ps"]).contains("(healthy)"));
    ok(&env, &["rm", "-f", id]);
}

/// Opens a pty pair: (master, slave).
fn openpty() -> (OwnedFd, OwnedFd) {
    // Both ends close-on-exec: other tests of this binary fork kiln (and
    // long-lived monitors) concurrently, and an inherited slave would keep the
    // terminal open after our kiln exits. (dup2 onto 0-2 clears the flag for
    // the kiln we start on it.)
    // SAFETY: plain libc calls on fds we own; ptsname_r writes into our buffer.
    unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(
            master >= 0,
            "posix_openpt: {}",
            std::io::Error::last_os_error()
        );
        let master = OwnedFd::from_raw_fd(master);
        assert_eq!(libc::grantpt(master.as_raw_fd()), 0, "grantpt");
        assert_eq!(libc::unlockpt(master.as_raw_fd()), 0, "unlockpt");
        let mut name = [0 as libc::c_char; 128];
        assert_eq!(
            libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()),
            0,
            "ptsname_r"
        );
        let slave = libc::open(
            name.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        assert!(
            slave >= 0,
            "open pty slave: {}",
            std::io::Error::last_os_error()
        );
        (master, OwnedFd::from_raw_fd(slave))
    }
}

/// Runs kiln with `args` on a new pseudo-terminal (as its controlling
/// terminal), types `input`, and returns its exit status and what the
/// terminal showed.
fn on_a_terminal(env: &Env, args: &[&str], input: &[u8]) -> (std::process::ExitStatus, String) {
    on_a_terminal_after(env, args, "", input)
}

/// As `on_a_terminal`, but types `input` only once the terminal has shown
/// `marker` (so a key like Ctrl-C arrives after the program is ready for it).
fn on_a_terminal_after(
    env: &Env,
    args: &[&str],
    marker: &str,
    input: &[u8],
) -> (std::process::ExitStatus, String) {
    let (master, slave) = openpty();
    let mut cmd = kiln(env);
    cmd.args(args)
        .stdin(Stdio::from(slave.try_clone().expect("dup")))
        .stdout(Stdio::from(slave.try_clone().expect("dup")))
        .stderr(Stdio::from(slave));
    // SAFETY: async-signal-safe calls only.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            libc::ioctl(0, libc::TIOCSCTTY, 0);
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn kiln on a terminal");
    drop(cmd);
    let mut terminal = std::fs::File::from(master);
    let mut keyboard = terminal.try_clone().expect("dup master");
    // Read until the child exits (EIO once every slave fd is closed).
    let (chunks, received) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = terminal.read(&mut buf) {
            if n == 0 || chunks.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !text(&seen).contains(marker) {
        match received.recv_timeout(Duration::from_millis(100)) {
            Ok(chunk) => seen.extend_from_slice(&chunk),
            Err(_) if Instant::now() > deadline => {
                let _ = child.kill();
                panic!("the terminal never showed {marker:?}: {}", text(&seen));
            }
            Err(_) => {}
        }
    }
    keyboard.write_all(input).expect("type");
    let status = wait_child(&mut child, Duration::from_secs(60));
    // Collect what the terminal showed; never block on a terminal someone
    // else still holds open.
    while let Ok(chunk) = received.recv_timeout(Duration::from_secs(2)) {
        seen.extend_from_slice(&chunk);
    }
    (status, text(&seen))
}

#[test]
fn interactive_tty_gives_a_working_shell() {
    let Some(env) = setup() else { return };
    let (status, seen) = on_a_terminal(
        &env,
        &["run", "-it", "--rm", IMAGE, "sh"],
        b"echo tty=$(tty) sum=$((40+2))\nexit 5\n",
    );
    assert_eq!(status.code(), Some(5), "{seen}");
    assert!(seen.contains("tty=/dev/pts/0 sum=42"), "{seen}");

    // -it needs a terminal on stdin, as docker says.
    let mut piped = kiln(&env)
        .args(["run", "-it", "--rm", IMAGE, "sh"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kiln run -it");
    drop(piped.stdin.take());
    let status = wait_child(&mut piped, Duration::from_secs(30));
    let out = piped.wait_with_output().expect("output");
    assert_eq!(status.code(), Some(1));
    assert_eq!(text(&out.stderr), "the input device is not a TTY\n");

    // Ctrl-C typed on kiln's terminal reaches the container's foreground
    // process as SIGINT (through the container's own terminal).
    let (status, seen) = on_a_terminal_after(
        &env,
        &[
            "run",
            "-it",
            "--rm",
            IMAGE,
            "sh",
            "-c",
            "trap 'echo caught INT; exit 7' INT; echo ready; while true; do sleep 0.1; done",
        ],
        "ready",
        b"\x03",
    );
    assert_eq!(status.code(), Some(7), "{seen}");
    assert!(seen.contains("caught INT"), "{seen}");

    // exec -it into a running container.
    let id = ok(&env, &["run", "-d", IMAGE, "sleep", "1000"]);
    let (status, seen) = on_a_terminal(
        &env,
        &["exec", "-it", "-u", "1000", id.trim(), "sh"],
        b"echo tty=$(tty) uid=$(id -u)\nexit 6\n",
    );
    assert_eq!(status.code(), Some(6), "{seen}");
    assert!(
        seen.contains("tty=/dev/pts/") && seen.contains("uid=1000"),
        "{seen}"
    );
    ok(&env, &["rm", "-f", id.trim()]);
}

#[test]
fn killed_monitor_means_exited_and_nothing_leaks() {
    let Some(env) = setup() else { return };
    let root = env.root.to_string_lossy().into_owned();
    let ours = |needle: &str| -> usize {
        std::fs::read_to_string("/proc/self/mountinfo")
            .expect("mountinfo")
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    };
    let our_processes = || -> usize {
        std::fs::read_dir("/proc")
            .expect("proc")
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
            .filter(|c| String::from_utf8_lossy(c).contains(root.as_str()))
            .count()
    };

    let slirps_before = count_processes("slirp4netns");
    // Monitor killed: ps reports the container exited, promptly.
    let id = ok(&env, &["run", "-d", IMAGE, "sleep", "1000"]);
    let id = id.trim().to_string();
    let state_path = env.root.join("containers").join(&id).join("state.json");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_path).expect("state")).expect("json");
    let monitor = state["monitor_pid"].as_i64().expect("monitor pid") as i32;
    let container_pid = state["pid"].as_i64().expect("pid") as i32;
    assert!(monitor > 0 && container_pid > 0);
    // SAFETY: plain kill of the monitor we started.
    assert_eq!(unsafe { libc::kill(monitor, libc::SIGKILL) }, 0);
    wait_for(
        "the container to die with its monitor",
        Duration::from_secs(10),
        || {
            !Path::new(&format!("/proc/{container_pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{container_pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z "))
        },
    );
    let started = Instant::now();
    let ps = ok(&env, &["ps", "-a"]);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "ps must not hang on a dead monitor"
    );
    assert!(ps.contains("Exited (137)"), "{ps}");
    assert_eq!(ok(&env, &["ps", "-q"]), "");
    ok(&env, &["rm", &id]);

    // (The 100 run/stop/rm cycles of issue 6 are tests/run_leaks.rs, alone in
    // their binary so the host's totals can be compared.)
    wait_for(
        "no kiln process of this store",
        Duration::from_secs(5),
        || our_processes() == 0,
    );
    assert_eq!(ours(&root), 0, "mounts left behind");
    // slirp4netns dies of its PDEATHSIG when the monitor does, soon after.
    wait_for(
        "slirp4netns to die with the killed monitor",
        Duration::from_secs(10),
        || count_processes("slirp4netns") <= slirps_before,
    );
    assert_eq!(ok(&env, &["ps", "-a", "-q"]), "");
    let left: Vec<_> = std::fs::read_dir(env.root.join("containers"))
        .expect("containers dir")
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(left.is_empty(), "container dirs left: {left:?}");
}

#[test]
fn inspect_overrides_and_containers_keep_their_image() {
    let Some(env) = setup() else { return };
    // An image with a HEALTHCHECK and an ENTRYPOINT of its own, built by kiln.
    let context = env.root.parent().expect("tmp").join("ctx-health");
    std::fs::create_dir_all(&context).expect("mkdir");
    std::fs::write(
        context.join("Dockerfile"),
        format!(
            "FROM {IMAGE}\nHEALTHCHECK --interval=200ms CMD true\nEXPOSE 8080\nSTOPSIGNAL SIGUSR2\nENTRYPOINT [\"echo\", \"from-entrypoint\"]\n"
        ),
    )
    .expect("Dockerfile");
    let derived = "kiln-test/health:run";
    ok(
        &env,
        &[
            "build",
            "-q",
            "-t",
            derived,
            context.to_str().expect("utf8"),
        ],
    );
    assert_eq!(
        ok(&env, &["run", "--rm", derived, "x"]),
        "from-entrypoint x\n"
    );
    // --entrypoint replaces the image's Entrypoint and drops its Cmd.
    assert_eq!(
        ok(
            &env,
            &[
                "run",
                "--rm",
                "--entrypoint",
                "sh",
                derived,
                "-c",
                "echo over"
            ]
        ),
        "over\n"
    );

    // --stop-signal overrides the image's STOPSIGNAL; the trap's code is the exit code.
    let script =
        "trap 'exit 42' USR1; trap 'exit 43' USR2; echo armed; while true; do sleep 0.1; done";
    let id = ok(
        &env,
        &[
            "run",
            "-d",
            "--name",
            "probe",
            "-p",
            "127.0.0.1::8080",
            "--stop-signal",
            "USR1",
            "--entrypoint",
            "sh",
            derived,
            "-c",
            script,
        ],
    );
    let id = id.trim().to_string();
    let inspect = |env: &Env, what: &str| -> serde_json::Value {
        let all: serde_json::Value =
            serde_json::from_str(&ok(env, &["inspect", what])).expect("inspect JSON");
        assert_eq!(all.as_array().map(Vec::len), Some(1), "{all}");
        all[0].clone()
    };
    wait_for("healthy", Duration::from_secs(30), || {
        inspect(&env, "probe")["State"]["Health"]["Status"] == "healthy"
    });
    wait_for("the trap", Duration::from_secs(10), || {
        ok(&env, &["logs", "probe"]).contains("armed")
    });
    let running = inspect(&env, &id[..8]);
    assert_eq!(running["Id"], id.as_str());
    assert_eq!(running["Name"], "/probe");
    assert_eq!(running["State"]["Status"], "running");
    assert_eq!(running["State"]["Running"], true);
    assert!(
        running["State"]["Pid"].as_i64().is_some_and(|p| p > 0),
        "{running}"
    );
    assert_ne!(running["State"]["StartedAt"], "0001-01-01T00:00:00Z");
    assert_eq!(running["State"]["FinishedAt"], "0001-01-01T00:00:00Z");
    assert_eq!(running["State"]["Health"]["FailingStreak"], 0);
    assert_eq!(running["State"]["Health"]["Log"][0]["ExitCode"], 0);
    assert_eq!(running["Config"]["Entrypoint"], serde_json::json!(["sh"]));
    assert_eq!(running["Config"]["Cmd"], serde_json::json!(["-c", script]));
    assert_eq!(running["Config"]["StopSignal"], "USR1");
    assert_eq!(
        running["Config"]["Healthcheck"]["Test"],
        serde_json::json!(["CMD-SHELL", "true"])
    );
    assert_eq!(running["Config"]["Healthcheck"]["Interval"], 200_000_000);
    assert!(
        running["Config"]["ExposedPorts"]["8080/tcp"].is_object(),
        "{running}"
    );
    assert_eq!(
        running["HostConfig"]["PortBindings"]["8080/tcp"][0]["HostPort"],
        ""
    );
    let host_port = running["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"]
        .as_str()
        .expect("a bound host port")
        .to_string();
    assert!(
        ok(&env, &["ps"]).contains(&format!("127.0.0.1:{host_port}->8080/tcp")),
        "inspect and ps agree on the bound port"
    );
    // `kiln inspect` still means the image for an image name.
    assert!(inspect(&env, derived)["RepoTags"].is_array());
    let out = run(&env, &["inspect", "no-such-thing"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("No such object: no-such-thing"));

    // A container keeps its image: rmi refuses as docker, naming the container.
    let image_id = inspect(&env, derived)["Id"]
        .as_str()
        .expect("image id")
        .trim_start_matches("sha256:")[..12]
        .to_string();
    let short = &id[..12];
    let out = run(&env, &["rmi", "-f", &image_id]);
    assert!(
        text(&out.stderr).contains(&format!(
            "(cannot be forced) - image is being used by running container {short}"
        )),
        "{}",
        text(&out.stderr)
    );

    ok(&env, &["stop", "probe"]);
    let stopped = inspect(&env, "probe");
    assert_eq!(stopped["State"]["Status"], "exited");
    assert_eq!(stopped["State"]["Running"], false);
    assert_eq!(
        stopped["State"]["ExitCode"], 42,
        "the --stop-signal was sent"
    );
    assert_ne!(stopped["State"]["FinishedAt"], "0001-01-01T00:00:00Z");
    assert_eq!(
        stopped["State"]["Health"]["Status"], "unhealthy",
        "docker marks a stopped container's health unhealthy"
    );
    assert_eq!(stopped["NetworkSettings"]["Ports"], serde_json::json!({}));

    let out = run(&env, &["rmi", derived]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(&format!(
            "unable to remove repository reference \"{derived}\" (must force) - container {short} is using its referenced image {image_id}"
        )),
        "{}",
        text(&out.stderr)
    );
    let out = run(&env, &["rmi", &image_id]);
    assert!(
        text(&out.stderr).contains(&format!(
            "unable to delete {image_id} (must be forced) - image is being used by stopped container {short}"
        )),
        "{}",
        text(&out.stderr)
    );
    // Image prune never takes a container's image (nor the snapshots it
    // runs on); `system prune` would remove the stopped container first.
    ok(&env, &["image", "prune", "-a", "-f"]);
    assert!(ok(&env, &["images"]).contains("kiln-test/health"));
    ok(&env, &["start", "probe"]);
    wait_for(
        "the restarted container's output",
        Duration::from_secs(10),
        || ok(&env, &["logs", "probe"]).matches("armed").count() == 2,
    );
    // docker's STOPSIGNAL from the image when no --stop-signal is given.
    ok(&env, &["rm", "-f", "probe"]);
    let id2 = ok(
        &env,
        &["run", "-d", "--entrypoint", "sh", derived, "-c", script],
    );
    wait_for("the trap", Duration::from_secs(10), || {
        ok(&env, &["logs", id2.trim()]).contains("armed")
    });
    ok(&env, &["stop", id2.trim()]);
    assert_eq!(
        ok(&env, &["wait", id2.trim()]),
        "43\n",
        "the image's STOPSIGNAL"
    );
    ok(&env, &["rm", id2.trim()]);

    // --no-healthcheck drops the image's HEALTHCHECK.
    let id3 = ok(
        &env,
        &[
            "run",
            "-d",
            "--no-healthcheck",
            "--entrypoint",
            "sleep",
            derived,
            "1000",
        ],
    );
    let unchecked = inspect(&env, id3.trim());
    assert!(unchecked["Config"]["Healthcheck"].is_null(), "{unchecked}");
    assert!(unchecked["State"]["Health"].is_null(), "{unchecked}");
    let ps = ok(&env, &["ps"]);
    assert!(!ps.contains("(health") && !ps.contains("healthy)"), "{ps}");
    ok(&env, &["rm", "-f", id3.trim()]);

    // With no container left, the image goes.
    let out = ok(&env, &["rmi", derived]);
    assert!(out.contains("Untagged: kiln-test/health:run"), "{out}");
}

/// A static UDP echo server (`udp-echo PORT`: answers each datagram with
/// `echo:` + it), compiled for the test image: busybox has no UDP server.
const UDP_ECHO_SOURCE: &str = r#"
use std::net::UdpSocket;
fn main() {
    let port: u16 = std::env::args().nth(1).and_then(|p| p.parse().ok()).unwrap_or(9999);
    let socket = UdpSocket::bind(("0.0.0.0", port)).expect("bind");
    println!("listening on {port}/udp");
    let mut buf = [0u8; 2048];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf) else { continue };
        let mut reply = b"echo:".to_vec();
        reply.extend_from_slice(&buf[..n]);
        let _ = socket.send_to(&reply, from);
    }
}
"#;

/// Builds `udp-echo` with the rustc that builds these tests, statically linked.
fn build_udp_echo(dir: &Path) -> Option<PathBuf> {
    let source = dir.join("udp_echo.rs");
    std::fs::write(&source, UDP_ECHO_SOURCE).expect("write source");
    let binary = dir.join("udp-echo");
    let rustc = std::env::var_os("RUSTC")
        .map(PathBuf::from)
        .or_else(|| {
            let cargo = PathBuf::from(std::env::var_os("CARGO")?);
            let sibling = cargo.with_file_name("rustc");
            sibling.is_file().then_some(sibling)
        })
        .unwrap_or_else(|| PathBuf::from("rustc"));
    let out = Command::new(&rustc)
        .args([
            "--edition",
            "2021",
            "-C",
            "target-feature=+crt-static",
            "-o",
        ])
        .arg(&binary)
        .arg(&source)
        .output();
    match out {
        Ok(out) if out.status.success() => Some(binary),
        Ok(out) => {
            skip_or_fail(&format!(
                "cannot build a static UDP echo server with {}: {}",
                rustc.display(),
                text(&out.stderr)
            ));
            None
        }
        Err(e) => {
            skip_or_fail(&format!("cannot run {}: {e}", rustc.display()));
            None
        }
    }
}

#[test]
fn udp_port_is_published_and_a_port_in_use_starts_nothing() {
    let Some(env) = setup() else { return };
    let work = env.root.parent().expect("tmp").join("udp");
    std::fs::create_dir_all(work.join("rootfs/bin")).expect("mkdir");
    let Some(echo) = build_udp_echo(&work) else {
        return;
    };
    std::fs::copy(&echo, work.join("rootfs/bin/udp-echo")).expect("copy");
    let tar = work.join("udp.tar");
    tar_directory(&work.join("rootfs"), &tar);
    let image = "kiln-test/udp-echo:run";
    ok(&env, &["import", tar.to_str().expect("utf8"), image]);

    let id = ok(
        &env,
        &[
            "run",
            "-d",
            "-p",
            "127.0.0.1::9999/udp",
            image,
            "/bin/udp-echo",
            "9999",
        ],
    );
    let id = id.trim().to_string();
    let inspect: serde_json::Value =
        serde_json::from_str(&ok(&env, &["inspect", &id])).expect("inspect JSON");
    let port: u16 = inspect[0]["NetworkSettings"]["Ports"]["9999/udp"][0]["HostPort"]
        .as_str()
        .and_then(|p| p.parse().ok())
        .expect("a bound udp host port");
    assert!(
        ok(&env, &["ps"]).contains(&format!("127.0.0.1:{port}->9999/udp")),
        "{}",
        ok(&env, &["ps"])
    );
    // Two clients, each answered on its own address through the proxy.
    for round in 0..2 {
        let client = std::net::UdpSocket::bind("127.0.0.1:0").expect("client");
        client
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let message = format!("ping {round}");
        let mut answer = String::new();
        wait_for(
            "a UDP answer through the proxy",
            Duration::from_secs(20),
            || {
                let _ = client.send_to(message.as_bytes(), ("127.0.0.1", port));
                let mut buf = [0u8; 256];
                match client.recv(&mut buf) {
                    Ok(n) => {
                        answer = text(&buf[..n]);
                        true
                    }
                    Err(_) => false,
                }
            },
        );
        assert_eq!(answer, format!("echo:{message}"));
    }
    ok(&env, &["rm", "-f", &id]);

    // A host port in use (udp, then tcp): docker's clear error, exit 125, and
    // nothing started: no record, no monitor, no process of this store.
    let root = env.root.to_string_lossy().into_owned();
    let our_processes = || {
        std::fs::read_dir("/proc")
            .expect("proc")
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
            .filter(|c| String::from_utf8_lossy(c).contains(root.as_str()))
            .count()
    };
    let taken_udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    let taken_tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind tcp");
    for (spec, shown) in [
        (
            format!(
                "127.0.0.1:{}:9999/udp",
                taken_udp.local_addr().expect("addr").port()
            ),
            format!(
                "cannot publish 127.0.0.1:{}/udp",
                taken_udp.local_addr().expect("addr").port()
            ),
        ),
        (
            format!(
                "127.0.0.1:{}:80",
                taken_tcp.local_addr().expect("addr").port()
            ),
            format!(
                "cannot publish 127.0.0.1:{}/tcp",
                taken_tcp.local_addr().expect("addr").port()
            ),
        ),
    ] {
        for detach in [true, false] {
            let mut args = vec!["run"];
            if detach {
                args.push("-d");
            }
            args.extend(["--name", "never", "-p", &spec, image, "/bin/udp-echo"]);
            let out = run(&env, &args);
            assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
            assert!(text(&out.stderr).contains(&shown), "{}", text(&out.stderr));
            assert_eq!(ok(&env, &["ps", "-a", "-q"]), "", "no container record");
            assert_eq!(our_processes(), 0, "no process left");
        }
    }
}

#[test]
fn container_prune_removes_stopped_containers_only() {
    let Some(env) = setup() else { return };
    let exited: Vec<String> = (0..2)
        .map(|i| {
            let name = format!("done{i}");
            ok(
                &env,
                &["run", "--name", &name, IMAGE, "sh", "-c", "echo x > /tmp/x"],
            );
            let inspect: serde_json::Value =
                serde_json::from_str(&ok(&env, &["inspect", &name])).expect("inspect JSON");
            inspect[0]["Id"].as_str().expect("id").to_string()
        })
        .collect();
    let running = ok(&env, &["run", "-d", IMAGE, "sleep", "1000"]);
    let running = running.trim();
    let out = ok(&env, &["container", "prune", "-f"]);
    assert!(out.starts_with("Deleted Containers:\n"), "{out}");
    for id in &exited {
        assert!(out.contains(&format!("\n{id}\n")), "{out}");
    }
    assert!(!out.contains(running), "{out}");
    assert!(out.contains("Total reclaimed space: "), "{out}");
    assert_eq!(ok(&env, &["ps", "-a", "-q", "--no-trunc"]).trim(), running);
    ok(&env, &["rm", "-f", running]);
    assert_eq!(
        ok(&env, &["container", "prune", "-f"]),
        "Total reclaimed space: 0B\n"
    );
    // No container left: nothing holds the image.
    assert!(ok(&env, &["rmi", IMAGE]).contains("Untagged:"));
}

#[test]
fn system_prune_removes_stopped_containers_then_their_images() {
    let Some(env) = setup() else { return };
    // A second image only a stopped container uses, and the first one in use
    // by a running container.
    import_another(&env, "ENV SECOND=1", "kiln-test/second");
    let stopped = ok(&env, &["run", "--name", "done", "kiln-test/second", "true"]);
    assert!(stopped.is_empty(), "{stopped}");
    let running = ok(
        &env,
        &["run", "-d", "--name", "alive", IMAGE, "sleep", "1000"],
    );
    let running = running.trim();
    let done_id = {
        let inspect: serde_json::Value =
            serde_json::from_str(&ok(&env, &["container", "inspect", "done"])).unwrap();
        inspect[0]["Id"].as_str().unwrap().to_string()
    };

    let out = ok(&env, &["system", "prune", "-a", "-f"]);
    assert!(
        out.contains("Deleted Containers:") && out.contains(&done_id),
        "{out}"
    );
    assert!(out.contains("Deleted Images:"), "{out}");
    let ps = ok(&env, &["ps", "-a", "--no-trunc"]);
    assert!(!ps.contains(&done_id) && ps.contains(running), "{ps}");
    let images = ok(&env, &["images"]);
    assert!(!images.contains("kiln-test/second"), "{images}");
    assert!(
        images.contains(IMAGE.split(':').next().unwrap()),
        "{images}"
    );
    ok(&env, &["rm", "-f", "alive"]);
}

#[test]
fn rmi_force_of_a_stopped_containers_image_keeps_the_container_startable() {
    let Some(env) = setup() else { return };
    import_another(&env, "ENV FORCED=1", "kiln-test/forced");
    let image: serde_json::Value =
        serde_json::from_str(&ok(&env, &["image", "inspect", "kiln-test/forced"])).unwrap();
    let config_id = image[0]["Id"].as_str().unwrap().to_string();
    ok(
        &env,
        &["run", "--name", "holder", "kiln-test/forced", "echo", "hi"],
    );

    let out = run(&env, &["rmi", "kiln-test/forced"]);
    assert!(!out.status.success(), "refused without -f");
    let removed = ok(&env, &["rmi", "-f", "kiln-test/forced"]);
    assert!(
        removed.contains("Untagged: kiln-test/forced:latest")
            && removed.contains(&format!("Deleted: {config_id}")),
        "{removed}"
    );
    // Gone by name and by id, as in docker...
    assert!(!ok(&env, &["images"]).contains("kiln-test/forced"));
    let out = run(&env, &["image", "inspect", &config_id[7..19]]);
    assert!(!out.status.success(), "the id no longer names it");
    ok(&env, &["image", "prune", "-a", "-f"]);
    // ...but the stopped container still has what it runs on.
    ok(&env, &["start", "holder"]);
    assert_eq!(ok(&env, &["wait", "holder"]), "0\n");
    assert_eq!(ok(&env, &["logs", "holder"]), "hi\nhi\n");
    // Removing the container frees the image's content.
    let blob = env
        .root
        .join("blobs/sha256")
        .join(config_id.trim_start_matches("sha256:"));
    assert!(blob.exists());
    ok(&env, &["rm", "holder"]);
    assert!(
        !blob.exists(),
        "the hidden image went with its last container"
    );
    let check = ok(&env, &["system", "check"]);
    assert!(check.contains("store is clean"), "{check}");
}
