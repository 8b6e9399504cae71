//! End-to-end: pulls that survive cut connections and killed processes, and
//! pull progress as docker shows it (bars on a terminal, lines otherwise,
//! nothing with -q). Against Debian's docker-registry on 127.0.0.1 with a
//! logging, fault-injecting proxy in front (registry_common).

mod registry_common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use registry_common::*;

/// A registry holding `test/big:1`: busybox plus 3 MB of incompressible data
/// in its one layer. Returns (registry, env with the image, layer size).
fn registry_with_big_image() -> Option<(TestRegistry, Env, String)> {
    if !have_registry_tools() {
        return None;
    }
    let registry = TestRegistry::start(Auth::None, None);
    let env = Env::new();
    let name = format!("{}/test/big:1", registry.host());
    if !env.import_busybox(&name, 3_000_000) {
        return None;
    }
    env.ok(&["push", &name]);
    Some((registry, env, name))
}

fn through(proxy_port: u16) -> String {
    format!("127.0.0.1:{proxy_port}/test/big:1")
}

/// A connection cut in the middle of a layer: kiln asks for the rest with
/// `Range` and nothing is downloaded twice; the store stays clean.
#[test]
fn cut_download_resumes_with_range() {
    let Some((registry, env, _name)) = registry_with_big_image() else {
        return;
    };
    let cut_after = 1_000_000;
    let (proxy, log) = start_faulty_proxy(registry.port, Fault::Cut { after: cut_after }, 2);
    let fresh = env.fresh_root("fresh");
    let out = env.ok_in(&fresh, &["pull", &through(proxy)]);
    assert!(out.contains("Retrying from 1.00 MB"), "{out}");
    assert!(out.contains("Pull complete"), "{out}");

    let gets = log.lock().unwrap().clone();
    let layer = gets
        .iter()
        .find(|g| g.body_sent == cut_after)
        .expect("the layer download was cut")
        .digest
        .clone();
    let layer_gets: Vec<_> = gets.iter().filter(|g| g.digest == layer).collect();
    // Cut at 1 MB twice (at 0 and at 1 MB), then the rest: three requests,
    // each starting where the previous one stopped.
    assert_eq!(layer_gets.len(), 3, "{gets:?}");
    assert_eq!(layer_gets[0].range, None);
    assert_eq!(layer_gets[1].range.as_deref(), Some("bytes=1000000-"));
    assert_eq!(layer_gets[1].status, 206);
    assert_eq!(layer_gets[2].range.as_deref(), Some("bytes=2000000-"));
    let sent: usize = layer_gets.iter().map(|g| g.body_sent).sum();
    let size = std::fs::metadata(
        fresh
            .join("blobs/sha256")
            .join(layer.strip_prefix("sha256:").unwrap()),
    )
    .unwrap()
    .len() as usize;
    assert_eq!(sent, size, "every byte of the layer was sent exactly once");
    let check = env.ok_in(&fresh, &["system", "check"]);
    assert!(check.contains("store is clean"), "{check}");
    // The image is whole: it runs when the sandbox can.
    let listed = env.ok_in(&fresh, &["images"]);
    assert!(listed.contains("test/big"), "{listed}");
}

/// kill -9 in the middle of a pull: the next pull fetches only the blobs
/// that were not finished, and of the layer cut short only what had not
/// arrived (`partial/` in the store keeps it).
#[test]
fn killed_pull_does_not_fetch_finished_blobs_again() {
    let Some((registry, env, _name)) = registry_with_big_image() else {
        return;
    };
    let (stalling, stalled_log) =
        start_faulty_proxy(registry.port, Fault::Stall { after: 500_000 }, 1);
    let fresh = env.fresh_root("fresh");
    let mut child = env
        .kiln_in(&fresh)
        .args(["pull", &through(stalling)])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the config blob (the GET that was not stalled) is in the store.
    let deadline = Instant::now() + Duration::from_secs(30);
    let finished = loop {
        let gets = stalled_log.lock().unwrap().clone();
        let done = gets.iter().find(|g| g.body_sent != 500_000).and_then(|g| {
            let hex = g.digest.strip_prefix("sha256:")?;
            fresh
                .join("blobs/sha256")
                .join(hex)
                .exists()
                .then(|| g.digest.clone())
        });
        if let (Some(done), true) = (done, gets.iter().any(|g| g.body_sent == 500_000)) {
            break done;
        }
        assert!(Instant::now() < deadline, "pull made no progress: {gets:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    child.kill().unwrap();
    child.wait().unwrap();

    let (proxy, log) = start_faulty_proxy(registry.port, Fault::None, 0);
    let out = env.ok_in(&fresh, &["pull", &through(proxy)]);
    assert!(out.contains("Already exists"), "{out}");
    let gets = log.lock().unwrap().clone();
    assert!(
        gets.iter().all(|g| g.digest != finished),
        "the finished blob {finished} was downloaded again: {gets:?}"
    );
    assert_eq!(gets.len(), 1, "only the unfinished layer: {gets:?}");
    // It continued where the killed pull stopped: the first 500,000 bytes
    // arrived then, all but the last unwritten chunk (64 KiB) were kept.
    let start: usize = gets[0]
        .range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the layer was asked for whole: {gets:?}"));
    assert!(
        (500_000 - 64 * 1024..=500_000).contains(&start),
        "resumed at {start}: {gets:?}"
    );
    assert_eq!(gets[0].status, 206);
    let layer_size = std::fs::metadata(
        fresh
            .join("blobs/sha256")
            .join(gets[0].digest.strip_prefix("sha256:").unwrap()),
    )
    .unwrap()
    .len() as usize;
    assert_eq!(gets[0].body_sent, layer_size - start, "{gets:?}");
    assert!(
        std::fs::read_dir(fresh.join("partial"))
            .unwrap()
            .next()
            .is_none(),
        "the partial file became the blob"
    );
    let check = env.ok_in(&fresh, &["system", "check"]);
    assert!(check.contains("store is clean"), "{check}");
}

/// On a terminal (a pty from `script`): one bar per blob that ends as
/// `Pull complete`; not on a terminal: lines; with -q: only the name.
#[test]
fn progress_bars_on_a_terminal_lines_otherwise() {
    if !have_tool("script", &["--version"]) {
        return;
    }
    let Some((registry, env, name)) = registry_with_big_image() else {
        return;
    };
    let tty_root = env.fresh_root("tty");
    let command = format!("{} --root {} pull {name}", kiln_bin(), tty_root.display());
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("DOCKER_CONFIG", &env.docker_config)
        .env("KILN_CERTS_DIR", &env.certs_dir)
        .env("KILN_DOCKER_DAEMON_JSON", "")
        .env_remove("KILN_INSECURE_REGISTRIES")
        .env("COLUMNS", "120")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_success("kiln pull on a pty", &out);
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(screen.contains("Downloading ["), "no bar drawn:\n{screen}");
    assert!(
        screen.contains("B/") && screen.contains(" MB"),
        "no byte counts:\n{screen}"
    );
    assert!(screen.contains("Pull complete"), "{screen}");

    // A push to another registry (nothing to mount from there) draws bars too.
    let other = TestRegistry::start(Auth::None, None);
    let copy = format!("{}/test/copy:1", other.host());
    env.ok_in(&tty_root, &["tag", &name, &copy]);
    let command = format!("{} --root {} push {copy}", kiln_bin(), tty_root.display());
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("DOCKER_CONFIG", &env.docker_config)
        .env("KILN_CERTS_DIR", &env.certs_dir)
        .env("KILN_DOCKER_DAEMON_JSON", "")
        .env_remove("KILN_INSECURE_REGISTRIES")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_success("kiln push on a pty", &out);
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(screen.contains("Pushing ["), "no bar drawn:\n{screen}");
    assert!(screen.contains("Pushed"), "{screen}");

    let lines_root = env.fresh_root("lines");
    let lines = env.ok_in(&lines_root, &["pull", &name]);
    assert!(
        !lines.contains('\r') && !lines.contains('\x1b'),
        "{lines:?}"
    );
    assert!(lines.contains(": Downloading "), "{lines}");
    assert!(lines.contains(": Pull complete"), "{lines}");

    let quiet_root = env.fresh_root("quiet");
    let quiet = env.ok_in(&quiet_root, &["pull", "-q", &name]);
    assert_eq!(quiet.trim(), name.as_str());
    drop(registry);
}

/// A push whose blob upload the registry answers with 503 starts that blob
/// over in a new upload session and succeeds.
#[test]
fn push_retries_transient_upload_failures() {
    if !have_registry_tools() {
        return;
    }
    let registry = TestRegistry::start(Auth::None, None);
    let env = Env::new();
    let (proxy, seen) = start_upload_failing_proxy(registry.port, 2);
    let name = format!("127.0.0.1:{proxy}/test/retried:1");
    if !env.import_busybox(&name, 0) {
        return;
    }
    let out = env.ok(&["push", &name]);
    assert!(out.contains("Retrying"), "{out}");
    assert!(out.contains("Pushed"), "{out}");
    assert!(seen.load(std::sync::atomic::Ordering::SeqCst) >= 4, "{out}");
    let digest = pushed_digest(&out);
    let direct = format!("{}/test/retried:1", registry.host());
    let inspected = run_ok(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        &format!("docker://{direct}"),
    ]));
    assert!(inspected.contains(&digest), "{inspected}");
}
