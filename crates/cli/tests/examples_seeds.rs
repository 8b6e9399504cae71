//! The examples (`examples/*`: the seed tutorials' apps and Dockerfiles, see
//! issue 8) built with kiln and checked against what their seeds say — the
//! HTTP answers, logs, stop and rm, health, the non-root user, `--target`
//! outputs, cache mounts reused by the second build, and final images a small
//! fraction of their builders. Each test then builds its example again with
//! the real Docker engine (BuildKit) from the same base images and compares
//! the final file tree and config with kiln's (`diff_common`). The last test
//! runs README.md's main command (`scripts/demo.sh`) from a fresh clone.
//!
//! The base images come from `scripts/make-base-images.sh`, run once per test
//! binary into a throwaway store: the first run on a machine debootstraps
//! Debian and builds the toolchain images with kiln (about 4 minutes here);
//! later runs load them from the script's cache (/var/cache/kiln-base, about
//! 10 s). The Docker side gets the same images through `kiln save` +
//! `docker load`.
//!
//! Needs root, debootstrap, busybox-static, jq, network access to Debian's
//! mirror and PyPI (for the base images and the Python example) and a Docker
//! engine. Missing tools skip locally and fail under CI=true.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bases_common::{
    Bases, bases, docker, inspect, load_bases_into_docker, ok, repo_root, run_kiln,
};
use diff_common::{config_fields, describe_differences, flatten_archive, output_text};
use image_common::{have_tool, kiln, kiln_bin};
use serde_json::Value;

mod bases_common;
mod diff_common;
mod image_common;

fn example(name: &str) -> PathBuf {
    repo_root().join("examples").join(name)
}

/// `kiln build --progress plain` of an example; returns the build log.
fn build(
    root: &Path,
    dir: &Path,
    dockerfile: Option<&str>,
    target: Option<&str>,
    tag: &str,
) -> String {
    let mut cmd = kiln(root);
    cmd.args(["build", "--progress", "plain", "-t", tag]);
    if let Some(file) = dockerfile {
        cmd.arg("-f").arg(dir.join(file));
    }
    if let Some(target) = target {
        cmd.args(["--target", target]);
    }
    let start = Instant::now();
    let out = cmd
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .expect("kiln build");
    assert!(
        out.status.success(),
        "kiln build {tag} from {}: {}",
        dir.display(),
        output_text(&out)
    );
    eprintln!("kiln build {tag}: {:.1} s", start.elapsed().as_secs_f64());
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn container_state(root: &Path, name: &str) -> Value {
    let text = ok(root, &["container", "inspect", name]);
    let value: Value = serde_json::from_str(&text).expect("container inspect JSON");
    value[0]["State"].clone()
}

fn image_size(root: &Path, image: &str) -> u64 {
    inspect(root, image)["Size"]
        .as_u64()
        .unwrap_or_else(|| panic!("no Size in kiln inspect {image}"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// GET http://127.0.0.1:PORT/PATH, retried until it answers (or panics after
/// `timeout`); returns the body.
fn http_get(port: u16, path: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    while Instant::now() < deadline {
        match try_get(port, path) {
            Ok(body) => return body,
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("no HTTP answer on 127.0.0.1:{port}{path} within {timeout:?}: {last}");
}

fn try_get(port: u16, path: &str) -> Result<String, String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("not an HTTP response: {text:?}"))?;
    if !head.starts_with("HTTP/1.") || !head.contains(" 200 ") {
        return Err(format!("not 200: {head}"));
    }
    Ok(body.to_string())
}

fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// A detached container removed (with -f) when dropped, so a failed
/// assertion leaves nothing running.
struct Container<'a> {
    root: &'a Path,
    name: String,
}

impl<'a> Container<'a> {
    fn run(root: &'a Path, name: &str, args: &[&str]) -> Self {
        let _ = run_kiln(root, &["rm", "-f", name]);
        let mut all = vec!["run", "-d", "--name", name];
        all.extend_from_slice(args);
        ok(root, &all);
        Container {
            root,
            name: name.to_string(),
        }
    }
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        let _ = run_kiln(self.root, &["rm", "-f", &self.name]);
    }
}

/// The final image is at most `percent` % of the builder stage's size.
fn assert_small_fraction(root: &Path, final_image: &str, builder: &str, percent: u64) {
    let (small, big) = (image_size(root, final_image), image_size(root, builder));
    eprintln!("{final_image}: {small} bytes; {builder}: {big} bytes");
    assert!(
        small * 100 <= big * percent,
        "{final_image} ({small} bytes) is not within {percent}% of {builder} ({big} bytes)"
    );
}

#[test]
fn go_basic_serves_the_greeting_logs_stops_and_is_removed() {
    let Some(bases) = bases("examples") else {
        return;
    };
    let root = &bases.root;
    let dir = example("go-basic");
    let log = build(root, &dir, None, None, "examples/go-basic");
    assert!(
        log.contains("multi-stage:"),
        "size report in the build output: {log}"
    );
    build(
        root,
        &dir,
        None,
        Some("builder"),
        "examples/go-basic:builder",
    );
    assert_small_fraction(root, "examples/go-basic", "examples/go-basic:builder", 2);

    let port = free_port();
    let published = format!("{port}:8080");
    let ctr = Container::run(root, "go-basic", &["-p", &published, "examples/go-basic"]);
    let body = http_get(port, "/", Duration::from_secs(20));
    assert_eq!(
        body,
        "Merhaba, Multi-Stage Dockerfile ile kapsüllenmiş uygulama!"
    );
    let logs = ok(root, &["logs", &ctr.name]);
    assert!(
        logs.contains("Sunucu 8080 portunda çalışıyor..."),
        "logs: {logs}"
    );

    let start = Instant::now();
    ok(root, &["stop", "-t", "10", &ctr.name]);
    assert!(
        start.elapsed() < Duration::from_secs(12),
        "kiln stop -t 10 took {:?}",
        start.elapsed()
    );
    let state = container_state(root, &ctr.name);
    assert_eq!(state["Status"], "exited", "{state}");
    assert!(try_get(port, "/").is_err(), "still answering after stop");
    ok(root, &["rm", &ctr.name]);
    let all = ok(root, &["ps", "-a", "--format", "json"]);
    assert!(
        !all.contains("\"go-basic\""),
        "removed container listed: {all}"
    );

    // The other seeds' Dockerfiles of the same app.
    for (file, seed) in [("Dockerfile.seed001", "001"), ("Dockerfile.seed004", "004")] {
        let tag = format!("examples/go-basic:seed{seed}");
        build(root, &dir, Some(file), None, &tag);
        let port = free_port();
        let published = format!("{port}:8080");
        let _ctr = Container::run(root, &format!("go-basic-{seed}"), &["-p", &published, &tag]);
        let body = http_get(port, "/", Duration::from_secs(20));
        assert!(body.starts_with("Merhaba"), "seed {seed}: {body}");
        compare_with_docker(bases, &dir, file, None, &tag);
    }
    compare_with_docker(bases, &dir, "Dockerfile", None, "examples/go-basic");
}

#[test]
fn go_production_becomes_healthy_and_runs_as_uid_1000() {
    let Some(bases) = bases("examples") else {
        return;
    };
    let root = &bases.root;
    let dir = example("go-production");
    build(root, &dir, None, None, "examples/go-production");
    build(
        root,
        &dir,
        None,
        Some("builder"),
        "examples/go-production:builder",
    );
    assert_small_fraction(
        root,
        "examples/go-production",
        "examples/go-production:builder",
        2,
    );
    let config = inspect(root, "examples/go-production")["Config"].clone();
    assert_eq!(config["User"], "appuser");
    assert_eq!(config["Labels"]["version"], "1.0.0");
    assert_eq!(config["Labels"]["maintainer"], "team@example.com");
    assert!(
        config["Healthcheck"]["Test"].to_string().contains("wget"),
        "{config}"
    );

    let port = free_port();
    let published = format!("{port}:8080");
    let ctr = Container::run(
        root,
        "go-production",
        &["-p", &published, "examples/go-production"],
    );
    let body = http_get(port, "/", Duration::from_secs(20));
    assert!(body.contains("(version 1.0.0)"), "-X main.version: {body}");
    assert_eq!(ok(root, &["exec", &ctr.name, "id", "-u"]).trim(), "1000");
    // While the first health check is 30 s away: the same build by docker.
    compare_with_docker(bases, &dir, "Dockerfile", None, "examples/go-production");
    // HEALTHCHECK --interval=30s: the first check runs 30 s after the start.
    wait_for(
        "the container to become healthy",
        Duration::from_secs(75),
        || container_state(root, &ctr.name)["Health"]["Status"] == "healthy",
    );
    let ps = ok(root, &["ps"]);
    assert!(
        ps.lines()
            .any(|l| l.contains("go-production") && l.contains("(healthy)")),
        "{ps}"
    );
}

#[test]
fn go_targets_build_what_each_target_needs() {
    let Some(bases) = bases("examples") else {
        return;
    };
    let root = &bases.root;
    let dir = example("go-targets");
    let dev_log = build(
        root,
        &dir,
        None,
        Some("development"),
        "examples/go-targets:dev",
    );
    assert!(
        !dev_log.contains("[production"),
        "development built production: {dev_log}"
    );
    let test_log = build(root, &dir, None, Some("test"), "examples/go-targets:test");
    assert!(
        test_log.contains("--- PASS: TestGreeting") && test_log.contains("--- PASS: TestHealth"),
        "{test_log}"
    );
    let prod_log = build(
        root,
        &dir,
        None,
        Some("production-runtime"),
        "examples/go-targets:prod",
    );
    assert!(
        !prod_log.contains("go test"),
        "production-runtime ran the tests: {prod_log}"
    );

    // development: the Go toolchain and an unstripped ./main in /app;
    // production-runtime: busybox and a stripped /main.
    let dev = inspect(root, "examples/go-targets:dev")["Config"].clone();
    assert_eq!(dev["WorkingDir"], "/app");
    let dev_main = ok(
        root,
        &[
            "run",
            "--rm",
            "examples/go-targets:dev",
            "sh",
            "-c",
            "go version >&2; wc -c < main",
        ],
    );
    let prod_main = ok(
        root,
        &[
            "run",
            "--rm",
            "examples/go-targets:prod",
            "sh",
            "-c",
            "wc -c < /main; ! command -v go",
        ],
    );
    let (dev_bytes, prod_bytes): (u64, u64) = (
        dev_main.trim().parse().expect("size"),
        prod_main.trim().parse().expect("size"),
    );
    assert!(
        prod_bytes < dev_bytes,
        "-ldflags=-w -s: {prod_bytes} vs {dev_bytes}"
    );
    assert_eq!(
        ok(
            root,
            &[
                "run",
                "--rm",
                "examples/go-targets:prod",
                "./main",
                "version"
            ]
        )
        .trim(),
        "dev"
    );
    assert_small_fraction(
        root,
        "examples/go-targets:prod",
        "examples/go-targets:dev",
        2,
    );
    compare_with_docker(
        bases,
        &dir,
        "Dockerfile",
        Some("production-runtime"),
        "examples/go-targets:prod",
    );
}

/// Files under `dir` (relative path → size).
fn file_set(dir: &Path) -> BTreeMap<PathBuf, u64> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(path);
            } else {
                out.insert(
                    path.strip_prefix(dir).unwrap_or(&path).to_path_buf(),
                    meta.len(),
                );
            }
        }
    }
    out
}

#[test]
fn go_cache_mounts_are_reused_by_the_second_build() {
    let Some(bases) = bases("examples") else {
        return;
    };
    let root = &bases.root;
    let ctx = bases.dir.join("go-cache-mounts");
    copy_dir(&example("go-cache-mounts"), &ctx);
    let log = build(root, &ctx, None, None, "examples/go-cache-mounts");
    // `# syntax=docker/dockerfile:1` is informational to kiln: no frontend
    // image is fetched (nor anything else).
    assert!(
        !log.contains("[internal] pulling") && !log.contains("docker/dockerfile"),
        "the syntax line made kiln fetch something: {log}"
    );
    // The go build cache lives in the store, not in the image.
    let caches = root.join("cache-mounts");
    let go_build = fs::read_dir(&caches)
        .expect("cache-mounts dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("trim.txt").exists() || p.join("README").exists())
        .unwrap_or_else(|| panic!("no go build cache under {}", caches.display()));
    let first = file_set(&go_build);
    assert!(
        first.len() > 100,
        "go build cache has {} files",
        first.len()
    );

    // Change the source: the build step runs again and finds the standard
    // library already compiled in the cache mount.
    let main = ctx.join("main.go");
    let mut source = fs::read_to_string(&main).expect("main.go");
    source.push_str("\n// changed by the test\n");
    fs::write(&main, source).expect("main.go");
    let log = build(root, &ctx, None, None, "examples/go-cache-mounts");
    let build_step = log
        .lines()
        .find(|l| l.contains("go build -o main") && l.contains("RUN"))
        .unwrap_or_default()
        .to_string();
    let step_id = build_step
        .split_whitespace()
        .next()
        .unwrap_or("#?")
        .to_string();
    assert!(
        !log.contains(&format!("{step_id} CACHED")),
        "the go build step should run again after the source change: {log}"
    );
    let second = file_set(&go_build);
    assert!(
        first.keys().all(|k| second.contains_key(k)),
        "cache entries lost"
    );
    let added = second.len() - first.len();
    eprintln!(
        "go build cache: {} files after the first build, {added} added by the second",
        first.len()
    );
    assert!(
        added * 10 < first.len(),
        "the second build added {added} cache entries to {}: the standard library was compiled again",
        first.len()
    );
    let tree = ok(
        root,
        &["run", "--rm", "examples/go-cache-mounts", "ls", "-a", "/"],
    );
    assert!(
        !tree.contains("go-build") && !tree.contains(".cache"),
        "{tree}"
    );
    compare_with_docker(bases, &ctx, "Dockerfile", None, "examples/go-cache-mounts");
}

fn copy_dir(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("cp");
    assert!(status.success());
}

#[test]
fn go_scratch_three_stage_and_single_vs_multi() {
    let Some(bases) = bases("examples") else {
        return;
    };
    let root = &bases.root;
    build(
        root,
        &example("go-scratch"),
        None,
        None,
        "examples/go-scratch",
    );
    build(
        root,
        &example("go-scratch"),
        None,
        Some("builder"),
        "examples/go-scratch:builder",
    );
    assert_small_fraction(
        root,
        "examples/go-scratch",
        "examples/go-scratch:builder",
        1,
    );
    let port = free_port();
    let published = format!("{port}:8080");
    {
        let ctr = Container::run(
            root,
            "go-scratch",
            &["-p", &published, "examples/go-scratch"],
        );
        assert!(
            http_get(port, "/", Duration::from_secs(20))
                .starts_with("Hello from a multi-stage Go build!")
        );
        assert!(
            !run_kiln(root, &["exec", &ctr.name, "sh", "-c", "true"])
                .status
                .success(),
            "scratch has no shell"
        );
    }

    build(
        root,
        &example("go-three-stage"),
        None,
        None,
        "examples/go-three-stage",
    );
    let port = free_port();
    let published = format!("{port}:8080");
    {
        let _ctr = Container::run(
            root,
            "go-three-stage",
            &["-p", &published, "examples/go-three-stage"],
        );
        assert!(
            http_get(port, "/", Duration::from_secs(20))
                .starts_with("Hello from a multi-stage Go build!")
        );
    }

    let dir = example("single-vs-multi");
    build(
        root,
        &dir,
        Some("Dockerfile.single"),
        None,
        "examples/svm:single",
    );
    build(
        root,
        &dir,
        Some("Dockerfile.multi"),
        None,
        "examples/svm:multi",
    );
    // Seed 003: "~800MB" single-stage, "~15MB" multi-stage.
    assert_small_fraction(root, "examples/svm:multi", "examples/svm:single", 2);
    let single = ok(
        root,
        &[
            "run",
            "--rm",
            "examples/svm:single",
            "sh",
            "-c",
            "ls /app; command -v go",
        ],
    );
    assert!(
        single.contains("main.go") && single.contains("go"),
        "{single}"
    );
    compare_with_docker(
        bases,
        &example("go-scratch"),
        "Dockerfile",
        None,
        "examples/go-scratch",
    );
    compare_with_docker(
        bases,
        &example("go-three-stage"),
        "Dockerfile",
        None,
        "examples/go-three-stage",
    );
    compare_with_docker(bases, &dir, "Dockerfile.multi", None, "examples/svm:multi");
}

#[test]
fn python_app_installs_with_pip_user_and_serves() {
    let Some(bases) = bases("examples") else {
        return;
    };
    let root = &bases.root;
    let dir = example("python-app");
    // pip install --user ran in this build or in an earlier one now cached:
    // the site-packages check below is what shows it.
    build(root, &dir, None, None, "examples/python-app");
    build(
        root,
        &dir,
        None,
        Some("builder"),
        "examples/python-app:builder",
    );
    // The runtime stage leaves gcc and apt's lists behind.
    assert_small_fraction(
        root,
        "examples/python-app",
        "examples/python-app:builder",
        60,
    );
    let site = ok(
        root,
        &[
            "run",
            "--rm",
            "-u",
            "0",
            "examples/python-app",
            "ls",
            "/root/.local/lib/python3.11/site-packages",
        ],
    );
    assert!(site.contains("bottle.py"), "{site}");
    assert!(
        !run_kiln(
            root,
            &[
                "run",
                "--rm",
                "examples/python-app",
                "sh",
                "-c",
                "command -v gcc"
            ]
        )
        .status
        .success()
    );
    let port = free_port();
    let published = format!("{port}:8000");
    let _ctr = Container::run(
        root,
        "python-app",
        &["-p", &published, "examples/python-app"],
    );
    let body = http_get(port, "/", Duration::from_secs(20));
    assert!(
        body.starts_with("Hello from the multi-stage Python app") && body.contains("uid 1000"),
        "{body}"
    );
    compare_with_docker(bases, &dir, "Dockerfile", None, "examples/python-app");
}

#[test]
fn node_build_served_by_nginx() {
    let Some(bases) = bases("examples") else {
        return;
    };
    let root = &bases.root;
    let dir = example("node-nginx");
    build(root, &dir, None, None, "examples/node-nginx");
    build(root, &dir, None, Some("build"), "examples/node-nginx:build");
    assert_small_fraction(root, "examples/node-nginx", "examples/node-nginx:build", 60);
    let config = inspect(root, "examples/node-nginx")["Config"].clone();
    assert_eq!(config["StopSignal"], "SIGQUIT");
    assert_eq!(
        config["Cmd"],
        serde_json::json!(["nginx", "-g", "daemon off;"])
    );
    let port = free_port();
    let published = format!("{port}:80");
    let ctr = Container::run(
        root,
        "node-nginx",
        &["-p", &published, "examples/node-nginx"],
    );
    let page = http_get(port, "/", Duration::from_secs(20));
    assert!(page.contains("built with Node.js v18"), "{page}");
    let script = http_get(port, "/static/app.js", Duration::from_secs(5));
    assert!(script.contains("served by nginx"), "{script}");
    wait_for(
        "nginx's access log in kiln logs",
        Duration::from_secs(5),
        || ok(root, &["logs", &ctr.name]).contains("GET /static/app.js"),
    );
    let start = Instant::now();
    ok(root, &["stop", &ctr.name]);
    eprintln!("nginx stopped (SIGQUIT) in {:?}", start.elapsed());
    compare_with_docker(bases, &dir, "Dockerfile", None, "examples/node-nginx");
}

// ---- The same examples through the real Docker engine ----

/// Python writes the source file's mtime into bytes 8..12 of a .pyc
/// header; pip compiles what it installs, so that field is the install time
/// and differs between any two builds (docker's included). Zeroed on both
/// sides; the rest of the file is compared.
fn normalize_pyc(tree: &mut BTreeMap<String, diff_common::Node>) {
    for (path, node) in tree.iter_mut() {
        if path.ends_with(".pyc") && node.content.len() >= 16 {
            node.content[8..12].fill(0);
        }
    }
}

/// Builds `context` with the real Docker engine (BuildKit) from the same
/// base images and compares the final file tree and config with kiln's
/// image `kiln_tag` built from it. Skips (fails under CI=true) without docker.
fn compare_with_docker(
    bases: &Bases,
    context: &Path,
    dockerfile: &str,
    target: Option<&str>,
    kiln_tag: &str,
) {
    if !have_tool("/usr/bin/docker", &["info"]) {
        return;
    }
    load_bases_into_docker(bases);
    let name = kiln_tag.replace(['/', ':'], "-");
    let work = bases.dir.join("differential").join(&name);
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).expect("work dir");
    let kiln_archive = work.join("kiln.tar");
    ok(
        &bases.root,
        &["save", kiln_tag, "-o", kiln_archive.to_str().expect("utf8")],
    );

    // The Docker engine would fetch the `# syntax=` frontend image from
    // Docker Hub; kiln reads the line as informational. Give docker the
    // Dockerfile without it.
    let source = fs::read_to_string(context.join(dockerfile)).expect("Dockerfile");
    let for_docker = work.join("Dockerfile");
    let stripped: String = source
        .lines()
        .filter(|l| !l.trim_start().starts_with("# syntax="))
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(&for_docker, stripped).expect("Dockerfile copy");
    let tag = format!("kiln-examples-test/{name}-{}", std::process::id());
    let mut cmd = docker();
    cmd.args(["build", "-q", "-t", &tag, "-f"]).arg(&for_docker);
    if let Some(target) = target {
        cmd.args(["--target", target]);
    }
    let start = Instant::now();
    let out = cmd.arg(context).output().expect("docker build");
    assert!(
        out.status.success(),
        "docker build {name}: {}",
        output_text(&out)
    );
    eprintln!(
        "docker build {name}: {:.1} s",
        start.elapsed().as_secs_f64()
    );
    let docker_archive = work.join("docker.tar");
    let out = docker()
        .args(["save", "-o"])
        .arg(&docker_archive)
        .arg(&tag)
        .output()
        .expect("docker save");
    let _ = docker().args(["rmi", "-f", &tag]).output();
    assert!(out.status.success(), "docker save: {}", output_text(&out));

    let (mut docker_tree, docker_config) = flatten_archive(&docker_archive, &work);
    let (mut kiln_tree, kiln_config) = flatten_archive(&kiln_archive, &work);
    normalize_pyc(&mut docker_tree);
    normalize_pyc(&mut kiln_tree);
    let mut diffs = describe_differences(&docker_tree, &kiln_tree);
    let (dc, kc) = (config_fields(&docker_config), config_fields(&kiln_config));
    if dc != kc {
        diffs.push(format!("config: docker {dc:?}\n        kiln   {kc:?}"));
    }
    eprintln!(
        "{name} vs docker: {} paths compared, {} differences",
        docker_tree.len(),
        diffs.len()
    );
    let _ = fs::remove_dir_all(&work);
    assert!(
        diffs.is_empty(),
        "{kiln_tag}: kiln and BuildKit differ:\n  {}",
        diffs.join("\n  ")
    );
}

#[test]
fn readme_main_command_ends_with_the_greeting_and_the_size_report() {
    let Some(bases) = bases("examples") else {
        return;
    };
    // scripts/demo.sh as README.md gives it, from a fresh clone of this
    // repository, with the kiln under test instead of a new release build
    // (KILN_DEMO_BIN), a throwaway store and a free port. The base images
    // come from make-base-images.sh's cache, warm after bases().
    let clone = bases.dir.join("fresh-clone");
    let cloned = Command::new("git")
        .args(["clone", "-q"])
        .arg(repo_root())
        .arg(&clone)
        .output()
        .is_ok_and(|o| o.status.success());
    let checkout = if cloned {
        clone
    } else {
        eprintln!("not a git checkout: running demo.sh from the working tree");
        repo_root()
    };
    let port = free_port();
    let start = Instant::now();
    let out = Command::new("bash")
        .arg(checkout.join("scripts/demo.sh"))
        .env("KILN_DEMO_BIN", kiln_bin())
        .env("KILN_ROOT", bases.dir.join("demo-store"))
        .env("KILN_DEMO_PORT", port.to_string())
        .stdin(Stdio::null())
        .output()
        .expect("running scripts/demo.sh");
    eprintln!("scripts/demo.sh: {:.1} s", start.elapsed().as_secs_f64());
    assert!(
        out.status.success(),
        "scripts/demo.sh: {}",
        output_text(&out)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let tail: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("== curl http://localhost"))
        .collect();
    assert!(
        tail.get(1) == Some(&"Merhaba, Multi-Stage Dockerfile ile kapsüllenmiş uygulama!"),
        "the greeting after the curl heading: {stdout}"
    );
    let report = tail
        .iter()
        .position(|l| l.starts_with("== Size report"))
        .unwrap_or_else(|| panic!("no size report after the greeting: {stdout}"));
    let lines = &tail[report..];
    assert!(
        lines.iter().any(|l| l.contains("builder stage"))
            && lines.iter().any(|l| l.contains("final image"))
            && lines
                .last()
                .is_some_and(|l| l.contains("multi-stage saved")),
        "size report at the end: {stdout}"
    );
}
