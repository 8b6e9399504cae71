//! Stage graphs of the seed Dockerfiles (`tests/seeds/*.Dockerfile`, the
//! fenced blocks of the tutorials kiln grew from): every complete Dockerfile
//! resolves into a graph, the fragments (snippets without FROM, templates
//! with `<placeholders>`) are rejected with BuildKit's error, and the graphs
//! of the multi-target examples are exactly what the tutorials describe.

use std::path::PathBuf;

use kiln_dockerfile::stages::{Base, DependencyKind, Graph, Reference, Stages};

fn seeds_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/seeds")
}

fn load(name: &str) -> Result<Graph, String> {
    let path = seeds_dir().join(name);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let dockerfile = kiln_dockerfile::parse(&text).map_err(|e| e.to_diagnostic().message)?;
    let stages = Stages::from_dockerfile(&dockerfile).map_err(|errors| {
        errors
            .iter()
            .map(|e| e.message.clone())
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    stages.resolve(&[]).map_err(|errors| {
        errors
            .iter()
            .map(|e| e.message.clone())
            .collect::<Vec<_>>()
            .join("; ")
    })
}

fn graph(name: &str) -> Graph {
    load(name).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn names(graph: &Graph, indexes: &[usize]) -> Vec<String> {
    indexes
        .iter()
        .map(|i| graph.stages[*i].display_name())
        .collect()
}

/// Seeds that are snippets of a larger Dockerfile, not buildable alone.
const FRAGMENTS: [(&str, &str); 5] = [
    (
        "003_bd9c9442b771737f-03.Dockerfile",
        "invalid name for build stage",
    ),
    (
        "003_bd9c9442b771737f-04.Dockerfile",
        "no build stage in current context",
    ),
    (
        "003_bd9c9442b771737f-21.Dockerfile",
        "no build stage in current context",
    ),
    (
        "003_bd9c9442b771737f-22.Dockerfile",
        "no build stage in current context",
    ),
    (
        "003_bd9c9442b771737f-24.Dockerfile",
        "no build stage in current context",
    ),
];

#[test]
fn every_seed_dockerfile_has_a_stage_graph_or_is_a_known_fragment() {
    let mut files: Vec<String> = std::fs::read_dir(seeds_dir())
        .expect("tests/seeds exists")
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".Dockerfile"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 30,
        "expected the 30 seed Dockerfiles, found {}",
        files.len()
    );
    let mut graphs = 0;
    for file in &files {
        let result = load(file);
        match FRAGMENTS.iter().find(|(name, _)| name == file) {
            Some((_, expected)) => {
                let error = result.expect_err(file);
                assert!(error.contains(expected), "{file}: {error}");
            }
            None => {
                let graph = result.unwrap_or_else(|e| panic!("{file}: {e}"));
                let target = graph.target(None).expect("a last stage");
                let needed = graph.required_stages(target);
                assert!(needed.contains(&target), "{file}");
                graphs += 1;
            }
        }
    }
    assert_eq!(graphs, files.len() - FRAGMENTS.len());
}

#[test]
fn seed_003_development_and_production_targets() {
    let g = graph("003_bd9c9442b771737f-10.Dockerfile");
    assert_eq!(
        names(&g, &[0, 1, 2, 3]),
        ["base", "development", "production", "production-runtime"]
    );
    assert_eq!(g.stages[0].base, Base::Image("golang:1.21-alpine".into()));
    assert_eq!(g.stages[1].base, Base::Stage(0));
    assert_eq!(g.stages[2].base, Base::Stage(0));
    assert_eq!(g.stages[3].base, Base::Image("alpine:latest".into()));
    let copy = &g.stages[3].dependencies[0];
    assert_eq!(
        (copy.kind, &copy.reference),
        (DependencyKind::CopyFrom, &Reference::Stage(2))
    );
    let needs = |target: Option<&str>| names(&g, &g.required_stages(g.target(target).unwrap()));
    assert_eq!(needs(Some("base")), ["base"]);
    assert_eq!(needs(Some("development")), ["base", "development"]);
    assert_eq!(needs(Some("production")), ["base", "production"]);
    assert_eq!(needs(None), ["base", "production", "production-runtime"]);
}

#[test]
fn seed_003_test_target_is_skipped_by_the_default_build() {
    let g = graph("003_bd9c9442b771737f-12.Dockerfile");
    assert_eq!(
        names(&g, &[0, 1, 2, 3]),
        ["base", "test", "builder", "stage-3"]
    );
    let needs = |target: Option<&str>| names(&g, &g.required_stages(g.target(target).unwrap()));
    assert_eq!(needs(Some("test")), ["base", "test"]);
    assert_eq!(needs(None), ["base", "builder", "stage-3"]);
    let error = g.target(Some("prod")).unwrap_err();
    assert_eq!(error.message, "target stage \"prod\" could not be found");
    assert!(
        error
            .hint
            .unwrap()
            .ends_with("stages are: base, test, builder")
    );
}

#[test]
fn seed_003_parallel_builders_share_a_base() {
    let g = graph("003_bd9c9442b771737f-17.Dockerfile");
    assert_eq!(g.stages[1].base, Base::Stage(0));
    assert_eq!(g.stages[2].base, Base::Stage(0));
    assert_eq!(
        g.stages[3]
            .stage_dependencies()
            .into_iter()
            .collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(g.required_stages(3), [0, 1, 2, 3]);
    assert_eq!(
        g.required_stages(g.target(Some("migrate-builder")).unwrap()),
        [0, 2]
    );
}

#[test]
fn seed_copy_from_unknown_name_is_an_image() {
    // A snippet that copies from a stage defined elsewhere: BuildKit would
    // pull an image called "builder".
    let g = graph("003_bd9c9442b771737f-20.Dockerfile");
    assert_eq!(
        g.stages[0].dependencies[0].reference,
        Reference::Image("builder".into())
    );
    let g = graph("003_bd9c9442b771737f-18.Dockerfile");
    assert_eq!(
        g.stages[1].dependencies[0].reference,
        Reference::Stage(0),
        "COPY --from=0"
    );
}
