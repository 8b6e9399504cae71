//! Every Dockerfile of the seed tutorials (`../shared/seeds/`, extracted into
//! `crates/dockerfile/tests/seeds/`) built by kiln and by the real Docker
//! engine (BuildKit) from the same context and the same local base images;
//! the final images are flattened and compared on files, modes, owners, link
//! targets, contents and config. Dockerfiles the tutorials show as fragments
//! or mistakes must be refused by both, and kiln must say why.
//!
//! The seeds name Docker Hub images; no registry is reachable here, so each
//! Dockerfile is given to both engines with the local stand-ins that
//! `scripts/make-base-images.sh` makes (`golang:*` -> `kiln/golang:1.19`,
//! `alpine:*` -> `kiln/busybox`, ...; see `STAND_INS`) and with the two
//! Alpine-only commands adapted (`LOCAL_COMMANDS`). Both engines get the very
//! same rewritten text, which the test prints.
//!
//! Contexts are the examples' sources (`examples/*`) plus a small Node.js app
//! in `tests/seed_contexts/node-dist`. Costs: the Go seeds share most steps
//! (both engines cache them), seed 003's Python builder and Ubuntu seed run
//! apt-get; about 3-5 minutes in all on this 2-core machine after the base
//! images exist.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use bases_common::{Bases, bases, docker, load_bases_into_docker, ok, repo_root, run_kiln};
use diff_common::{Node, config_fields, describe_differences, flatten_archive, output_text};
use image_common::have_tool;

mod bases_common;
mod diff_common;
mod image_common;

/// Docker Hub image (name before the tag) -> local stand-in.
const STAND_INS: [(&str, &str); 6] = [
    ("golang", "kiln/golang:1.19"),
    ("alpine", "kiln/busybox:latest"),
    ("node", "kiln/node:18"),
    ("nginx", "kiln/nginx:latest"),
    ("python", "kiln/python:3.11"),
    ("ubuntu", "kiln/debian:bookworm"),
];

/// Commands of Alpine images the stand-ins do without: (from, to, only in
/// stages FROM an image starting with this, why).
const LOCAL_COMMANDS: [(&str, &str, &str, &str); 2] = [
    (
        "apk ",
        ": apk ",
        "",
        "no apk in the stand-ins; kiln/golang has git and ca-certificates, kiln/busybox \
         needs none for these apps (the command is kept as a no-op `:` line)",
    ),
    (
        "adduser -D -u 1000 appuser",
        "useradd -m -u 1000 appuser",
        "node:",
        "Alpine's adduser on a Debian-based stand-in (kiln/node) is Debian's useradd \
         (kiln/busybox has an Alpine-like adduser)",
    ),
];

/// Where a seed's context comes from.
#[derive(Clone, Copy)]
enum Context {
    Example(&'static str),
    Fixture(&'static str),
    Empty,
}

/// What both engines must do with a seed.
#[derive(Clone, Copy)]
enum Expect {
    /// Build, with identical final images.
    Builds,
    /// Refuse; kiln's error contains this text.
    Refused(&'static str),
}

struct Seed {
    file: &'static str,
    context: Context,
    expect: Expect,
    why: &'static str,
}

const fn seed(file: &'static str, context: Context, expect: Expect, why: &'static str) -> Seed {
    Seed {
        file,
        context,
        expect,
        why,
    }
}

fn seeds() -> Vec<Seed> {
    use Context::*;
    use Expect::*;
    let go = Example("go-basic");
    vec![
        seed(
            "000_3c478a5a2a7f5e0d-01",
            go,
            Builds,
            "the Turkish tutorial's app",
        ),
        seed(
            "001_a7730368a5f63452-01",
            go,
            Builds,
            "golang:latest builder, alpine runtime",
        ),
        seed(
            "002_91727fd31c560451-01",
            go,
            Builds,
            "COPY . . before go mod download",
        ),
        seed(
            "002_91727fd31c560451-02",
            Example("node-nginx"),
            Builds,
            "npm build served by nginx",
        ),
        seed(
            "002_91727fd31c560451-03",
            Example("java-maven"),
            Refused("maven"),
            "no Maven/Temurin stand-in: Maven Central is unreachable here (examples/java-maven/README.md)",
        ),
        seed("003_bd9c9442b771737f-01", go, Builds, "single stage"),
        seed(
            "003_bd9c9442b771737f-02",
            go,
            Builds,
            "two stages, CGO_ENABLED=0",
        ),
        seed(
            "003_bd9c9442b771737f-03",
            Empty,
            Refused("<image>"),
            "placeholder syntax",
        ),
        seed(
            "003_bd9c9442b771737f-04",
            Empty,
            Refused("FROM"),
            "fragment without FROM",
        ),
        seed(
            "003_bd9c9442b771737f-05",
            go,
            Builds,
            "deps -> builder -> runtime",
        ),
        seed(
            "003_bd9c9442b771737f-06",
            Example("go-production"),
            Builds,
            "production: USER, HEALTHCHECK, LABELs",
        ),
        seed(
            "003_bd9c9442b771737f-07",
            go,
            Builds,
            "FROM scratch with CA certificates",
        ),
        seed(
            "003_bd9c9442b771737f-08",
            Fixture("node-dist"),
            Builds,
            "Node.js three stages",
        ),
        seed(
            "003_bd9c9442b771737f-09",
            Example("python-app"),
            Builds,
            "pip install --user",
        ),
        seed(
            "003_bd9c9442b771737f-10",
            Example("go-targets"),
            Builds,
            "targets, default: the last stage",
        ),
        seed(
            "003_bd9c9442b771737f-11",
            Empty,
            Builds,
            "COPY --from images",
        ),
        seed(
            "003_bd9c9442b771737f-12",
            Example("go-targets"),
            Builds,
            "test stage not needed by the default target",
        ),
        seed(
            "003_bd9c9442b771737f-13",
            go,
            Builds,
            "cache and bind mounts",
        ),
        seed(
            "003_bd9c9442b771737f-14",
            Empty,
            Builds,
            "apt-get with locked cache mounts",
        ),
        seed(
            "003_bd9c9442b771737f-15",
            go,
            Builds,
            "the 'bad' single-stage example",
        ),
        seed(
            "003_bd9c9442b771737f-16",
            go,
            Builds,
            "the 'good' multi-stage example",
        ),
        seed(
            "003_bd9c9442b771737f-17",
            Example("go-production"),
            Refused("migrate"),
            "`go install ...@latest` needs the Go module proxy, unreachable here",
        ),
        seed(
            "003_bd9c9442b771737f-18",
            Empty,
            Refused("/app/main"),
            "COPY --from=0 of a file stage 0 lacks",
        ),
        seed(
            "003_bd9c9442b771737f-19",
            Empty,
            Refused("/app/main"),
            "COPY --from=builder of a file it lacks",
        ),
        seed(
            "003_bd9c9442b771737f-20",
            go,
            Refused("builder"),
            "fragment: no stage named builder",
        ),
        seed(
            "003_bd9c9442b771737f-21",
            Empty,
            Refused("FROM"),
            "fragment without FROM",
        ),
        seed(
            "003_bd9c9442b771737f-22",
            Empty,
            Refused("FROM"),
            "fragment without FROM",
        ),
        seed(
            "003_bd9c9442b771737f-23",
            go,
            Refused("builder"),
            "fragment: no stage named builder",
        ),
        seed(
            "003_bd9c9442b771737f-24",
            Empty,
            Refused("FROM"),
            "fragment without FROM",
        ),
        seed(
            "004_ff4abaff19bed358-01",
            go,
            Builds,
            "golang:1.18-alpine builder",
        ),
    ]
}

/// The seed's Dockerfile with the local stand-ins; also the notes of what changed.
fn localize(text: &str) -> (String, Vec<String>) {
    let map_image = |image: &str| -> Option<&'static str> {
        let name = image.split(':').next().unwrap_or(image);
        STAND_INS
            .iter()
            .find(|(hub, _)| *hub == name)
            .map(|(_, local)| *local)
    };
    let mut notes = Vec::new();
    let mut out = String::new();
    // The image the current stage's FROM names in the seed.
    let mut stage_image = String::new();
    for line in text.lines() {
        let mut line = line.to_string();
        let words: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        if words
            .first()
            .is_some_and(|w| w.eq_ignore_ascii_case("FROM"))
        {
            if let Some(image) = words.iter().skip(1).find(|w| !w.starts_with("--")) {
                stage_image = image.clone();
                if let Some(local) = map_image(image) {
                    notes.push(format!("FROM {image} -> {local}"));
                    line = line.replacen(image.as_str(), local, 1);
                }
            }
        }
        for word in &words {
            if let Some(image) = word.strip_prefix("--from=") {
                if let Some(local) = map_image(image).filter(|_| image.contains(':')) {
                    notes.push(format!("--from={image} -> {local}"));
                    line = line.replacen(word.as_str(), &format!("--from={local}"), 1);
                }
            }
        }
        for (from, to, stage, why) in LOCAL_COMMANDS {
            if line.contains(from) && !line.contains(to) && stage_image.starts_with(stage) {
                notes.push(format!("`{}` -> `{}`: {why}", from.trim(), to.trim()));
                line = line.replacen(from, to, 1);
            }
        }
        out.push_str(&line);
        out.push('\n');
    }
    (out, notes)
}

fn context_dir(context: Context, empty: &Path) -> PathBuf {
    match context {
        Context::Example(name) => repo_root().join("examples").join(name),
        Context::Fixture(name) => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/seed_contexts")
            .join(name),
        Context::Empty => empty.to_path_buf(),
    }
}

/// Paths whose contents record when they were made (apt and dpkg logs,
/// debconf's and ldconfig's caches, byte-compiled Python with source mtimes):
/// compared on kind, mode and owner only.
fn volatile(path: &str) -> bool {
    let path = path.trim_start_matches('/');
    path.starts_with("var/log/")
        || path.starts_with("var/cache/debconf/")
        || path.starts_with("var/cache/ldconfig/")
        || path.ends_with(".pyc")
}

/// Entries of Go's build cache (single-stage images keep it): which entries
/// exist is not reproducible between two builds of the same inputs (one run
/// had one differently named action entry on each side, another run none),
/// so they are not compared.
fn go_build_cache_entry(path: &str) -> bool {
    path.contains(".cache/go-build/")
}

fn without_volatile_contents(tree: BTreeMap<String, Node>) -> BTreeMap<String, Node> {
    tree.into_iter()
        .filter(|(path, _)| !go_build_cache_entry(path))
        .map(|(path, mut node)| {
            if volatile(&path) {
                node.content.clear();
            }
            (path, node)
        })
        .collect()
}

/// `myregistry.com/myapp:1.0.0`, which seed 003-11 copies a config file from:
/// made by kiln and handed to docker, so both have the very same image.
fn make_myapp_image(bases: &Bases) {
    let dir = bases.dir.join("myapp-image");
    fs::create_dir_all(&dir).expect("myapp dir");
    fs::write(
        dir.join("Dockerfile"),
        "FROM scratch\nCOPY config.yaml /app/config.yaml\n",
    )
    .expect("Dockerfile");
    fs::write(dir.join("config.yaml"), "listen: \":8080\"\n").expect("config.yaml");
    let tag = "myregistry.com/myapp:1.0.0";
    ok(
        &bases.root,
        &["build", "-q", "-t", tag, dir.to_str().expect("utf8 path")],
    );
    let archive = dir.join("myapp.tar");
    ok(
        &bases.root,
        &["save", "-o", archive.to_str().expect("utf8 path"), tag],
    );
    let out = docker()
        .arg("load")
        .arg("-i")
        .arg(&archive)
        .output()
        .expect("docker load");
    assert!(out.status.success(), "docker load: {}", output_text(&out));
}

#[test]
fn every_seed_dockerfile_builds_as_buildkit_builds_it() {
    let Some(bases) = bases("seeds") else { return };
    if !have_tool("/usr/bin/docker", &["info"]) {
        return;
    }
    load_bases_into_docker(bases);
    make_myapp_image(bases);
    let root = &bases.root;
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dockerfile/tests/seeds");
    let work = bases.dir.join("seeds");
    let empty = work.join("empty-context");
    fs::create_dir_all(&empty).expect("work dirs");

    let all = seeds();
    // Every extracted seed Dockerfile is in the table, and nothing else.
    let mut on_disk: Vec<String> = fs::read_dir(&fixtures)
        .expect("seed fixtures")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".Dockerfile"))
                .map(str::to_string)
        })
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = all.iter().map(|s| s.file.to_string()).collect();
    listed.sort();
    assert_eq!(on_disk, listed, "the table names every seed Dockerfile");

    // KILN_SEEDS=003_bd9c9442b771737f-08,004 narrows a run while debugging.
    let only: Vec<String> = std::env::var("KILN_SEEDS")
        .map(|v| v.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    let mut failures = Vec::new();
    let mut summary = Vec::new();
    for seed in all
        .iter()
        .filter(|s| only.is_empty() || only.iter().any(|o| s.file.contains(o.as_str())))
    {
        let text = fs::read_to_string(fixtures.join(format!("{}.Dockerfile", seed.file)))
            .expect("seed Dockerfile");
        let (local, notes) = localize(&text);
        let dockerfile = work.join(format!("{}.Dockerfile", seed.file));
        fs::write(&dockerfile, &local).expect("localized Dockerfile");
        // The Docker engine would fetch the `# syntax=` frontend image from
        // Docker Hub (unreachable); kiln reads the line as informational and
        // implements the syntax itself. Docker gets the text without it.
        let for_docker = work.join(format!("{}.docker.Dockerfile", seed.file));
        let without_syntax: String = local
            .lines()
            .filter(|l| !l.trim_start().starts_with("# syntax="))
            .map(|l| format!("{l}\n"))
            .collect();
        fs::write(&for_docker, without_syntax).expect("Dockerfile for docker");
        let context = context_dir(seed.context, &empty);
        eprintln!(
            "=== seed {} ({}), context {}\n{}",
            seed.file,
            seed.why,
            context.display(),
            notes.join("\n")
        );
        let tag = format!("kiln-seeds/{}", seed.file.to_lowercase());

        let start = Instant::now();
        let kiln_out = image_common::kiln(root)
            .args(["build", "--progress", "plain", "-t", &tag, "-f"])
            .arg(&dockerfile)
            .arg(&context)
            .stdin(Stdio::null())
            .output()
            .expect("kiln build");
        let kiln_secs = start.elapsed().as_secs_f64();
        let start = Instant::now();
        let docker_out = docker()
            .args(["build", "-q", "-t", &tag, "-f"])
            .arg(&for_docker)
            .arg(&context)
            .stdin(Stdio::null())
            .output()
            .expect("docker build");
        let docker_secs = start.elapsed().as_secs_f64();
        let kiln_text = output_text(&kiln_out);
        assert!(
            !kiln_text.contains("panicked"),
            "kiln panicked on seed {}: {kiln_text}",
            seed.file
        );

        match seed.expect {
            Expect::Refused(needle) => {
                let kiln_error = kiln_text.lines().rev().take(30).collect::<Vec<_>>();
                let kiln_error: Vec<&str> = kiln_error.into_iter().rev().collect();
                if kiln_out.status.success() {
                    failures.push(format!(
                        "{}: kiln built what must be refused ({})",
                        seed.file, seed.why
                    ));
                } else if !kiln_text.contains(needle) {
                    failures.push(format!(
                        "{}: kiln's error does not mention {needle:?}:\n{}",
                        seed.file,
                        kiln_error.join("\n")
                    ));
                }
                if docker_out.status.success() {
                    failures.push(format!("{}: docker built what kiln refuses", seed.file));
                }
                summary.push(format!(
                    "{}: refused by both ({}); kiln: {}",
                    seed.file,
                    seed.why,
                    kiln_error
                        .iter()
                        .find(|l| l.contains("error"))
                        .unwrap_or(&"")
                        .trim()
                ));
            }
            Expect::Builds => {
                if !kiln_out.status.success() || !docker_out.status.success() {
                    failures.push(format!(
                        "{}: must build; kiln {} docker {}\nkiln: {}\ndocker: {}",
                        seed.file,
                        kiln_out.status,
                        docker_out.status,
                        kiln_text,
                        output_text(&docker_out)
                    ));
                    continue;
                }
                let kiln_archive = work.join(format!("{}-kiln.tar", seed.file));
                ok(
                    root,
                    &["save", "-o", kiln_archive.to_str().expect("utf8"), &tag],
                );
                let docker_archive = work.join(format!("{}-docker.tar", seed.file));
                let out = docker()
                    .args(["save", "-o"])
                    .arg(&docker_archive)
                    .arg(&tag)
                    .output()
                    .expect("docker save");
                assert!(out.status.success(), "docker save: {}", output_text(&out));
                let _ = docker().args(["rmi", "-f", &tag]).output();
                let (docker_tree, docker_config) = flatten_archive(&docker_archive, &work);
                let (kiln_tree, kiln_config) = flatten_archive(&kiln_archive, &work);
                let volatile_paths = docker_tree
                    .keys()
                    .filter(|p| volatile(p) || go_build_cache_entry(p))
                    .count();
                let mut diffs = describe_differences(
                    &without_volatile_contents(docker_tree.clone()),
                    &without_volatile_contents(kiln_tree),
                );
                let (dc, kc) = (config_fields(&docker_config), config_fields(&kiln_config));
                if dc != kc {
                    diffs.push(format!("config: docker {dc:?}\n        kiln   {kc:?}"));
                }
                if !diffs.is_empty() {
                    failures.push(format!("{}:\n  {}", seed.file, diffs.join("\n  ")));
                }
                let _ = fs::remove_dir_all(work.join(format!("unpacked-{}-kiln.tar", seed.file)));
                let _ = fs::remove_dir_all(work.join(format!("unpacked-{}-docker.tar", seed.file)));
                let _ = fs::remove_file(&kiln_archive);
                let _ = fs::remove_file(&docker_archive);
                summary.push(format!(
                    "{}: built by both, {} paths compared ({} volatile: contents or Go build-cache entries not compared), {} differences; kiln {kiln_secs:.1} s, BuildKit {docker_secs:.1} s",
                    seed.file,
                    docker_tree.len(),
                    volatile_paths,
                    diffs.len()
                ));
            }
        }
        let _ = run_kiln(root, &["rmi", &tag]);
    }
    eprintln!("--- seeds ---\n{}", summary.join("\n"));
    assert!(
        failures.is_empty(),
        "seeds where kiln and BuildKit differ:\n{}",
        failures.join("\n")
    );
}
