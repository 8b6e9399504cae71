//! `kiln dockerfile stages`: the stages of a Dockerfile, their bases, what
//! each depends on (FROM, COPY --from, RUN --mount from=) and which ones a
//! build of the target needs; as a table, JSON or Graphviz dot.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use kiln_dockerfile::stages::{Base, Dependency, Graph, Reference, Stages};

use super::{SourceFile, print_diagnostics, read_and_parse};

/// Arguments of `kiln dockerfile stages`.
#[derive(Args)]
pub struct StagesArgs {
    /// The Dockerfile (`-` for standard input)
    #[arg(value_name = "FILE", conflicts_with = "file")]
    path: Option<PathBuf>,
    /// The Dockerfile (`-` for standard input) [default: Dockerfile]
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Option<PathBuf>,
    /// The stage to build (default: the last one); marks the stages it needs
    #[arg(long)]
    target: Option<String>,
    /// A value for an ARG declared before the first FROM (used to expand FROM lines)
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    build_args: Vec<String>,
    /// Output format
    #[arg(long, value_enum, default_value_t = StagesFormat::Text)]
    format: StagesFormat,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StagesFormat {
    Text,
    Json,
    Dot,
}

pub fn stages(args: StagesArgs) -> anyhow::Result<ExitCode> {
    let Some((source, dockerfile)) = read_and_parse(args.path, args.file)? else {
        return Ok(ExitCode::FAILURE);
    };
    let stages = match Stages::from_dockerfile(&dockerfile) {
        Ok(stages) => stages,
        Err(errors) => {
            print_diagnostics(&errors, &source);
            return Ok(ExitCode::FAILURE);
        }
    };
    print_diagnostics(&stages.warnings, &source);
    let build_args: Vec<(String, String)> = args
        .build_args
        .iter()
        .map(|arg| match arg.split_once('=') {
            Some((key, value)) => (key.to_string(), value.to_string()),
            // `--build-arg NAME` takes the value from kiln's environment, as docker does.
            None => (arg.clone(), std::env::var(arg).unwrap_or_default()),
        })
        .collect();
    let mut build_args = build_args;
    if let Some(target) = &args.target {
        // FROM lines may use the automatic TARGETSTAGE ARG.
        if !build_args.iter().any(|(k, _)| k == "TARGETSTAGE") {
            build_args.push(("TARGETSTAGE".to_string(), target.to_lowercase()));
        }
    }
    let graph = match stages.resolve(&build_args) {
        Ok(graph) => graph,
        Err(errors) => {
            print_diagnostics(&errors, &source);
            return Ok(ExitCode::FAILURE);
        }
    };
    let target = match graph.target(args.target.as_deref()) {
        Ok(target) => target,
        Err(error) => {
            print_diagnostics(&[error], &source);
            return Ok(ExitCode::FAILURE);
        }
    };
    let needed = graph.required_stages(target);
    let output = match args.format {
        StagesFormat::Text => render_text(&graph, target, &needed, &source),
        StagesFormat::Json => render_json(&graph, target, &needed, &source)?,
        StagesFormat::Dot => render_dot(&graph, target, &needed),
    };
    print!("{output}");
    Ok(ExitCode::SUCCESS)
}

fn stage_label(graph: &Graph, index: usize) -> String {
    graph
        .stages
        .get(index)
        .map_or_else(|| index.to_string(), |s| s.display_name())
}

fn base_text(graph: &Graph, base: &Base) -> String {
    kiln_dockerfile::stages::describe_base(graph, base)
}

fn dependency_text(graph: &Graph, dependency: &Dependency) -> String {
    let what = match &dependency.reference {
        Reference::Stage(index) => stage_label(graph, *index),
        Reference::Image(image) => format!("image {image}"),
        Reference::Context => "build context".to_string(),
    };
    format!("{what} ({})", dependency.kind.as_str())
}

/// A table: one stage a line, `*` on the stages the target needs.
pub fn render_text(graph: &Graph, target: usize, needed: &[usize], source: &SourceFile) -> String {
    let rows: Vec<[String; 5]> = graph
        .stages
        .iter()
        .map(|stage| {
            let deps: Vec<String> = stage
                .dependencies
                .iter()
                .filter(|d| d.kind != kiln_dockerfile::stages::DependencyKind::From)
                .map(|d| dependency_text(graph, d))
                .collect();
            [
                stage.index.to_string(),
                stage.name.clone().unwrap_or_else(|| "-".to_string()),
                base_text(graph, &stage.base),
                if deps.is_empty() {
                    "-".to_string()
                } else {
                    deps.join(", ")
                },
                if needed.contains(&stage.index) {
                    "*".to_string()
                } else {
                    String::new()
                },
            ]
        })
        .collect();
    let header = ["#", "NAME", "BASE", "ALSO USES", "NEEDED"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row.iter()) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: [&str; 5]| {
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths.iter()).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}  "));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(header);
    for row in &rows {
        line([&row[0], &row[1], &row[2], &row[3], &row[4]]);
    }
    let needed_names: Vec<String> = needed.iter().map(|i| stage_label(graph, *i)).collect();
    out.push_str(&format!(
        "{}: target {} needs {} of {} stages: {}\n",
        source.name,
        stage_label(graph, target),
        needed.len(),
        graph.stages.len(),
        needed_names.join(", ")
    ));
    out
}

/// Machine-readable form of the graph.
pub fn render_json(
    graph: &Graph,
    target: usize,
    needed: &[usize],
    source: &SourceFile,
) -> anyhow::Result<String> {
    use serde_json::{Value, json};
    let reference = |reference: &Reference| -> Value {
        match reference {
            Reference::Stage(index) => {
                json!({ "stage": index, "name": stage_label(graph, *index) })
            }
            Reference::Image(image) => json!({ "image": image }),
            Reference::Context => json!({ "context": true }),
        }
    };
    let stages: Vec<Value> = graph
        .stages
        .iter()
        .map(|stage| {
            let base = match &stage.base {
                Base::Scratch => json!({ "scratch": true }),
                Base::Image(image) => json!({ "image": image }),
                Base::Stage(index) => json!({ "stage": index, "name": stage_label(graph, *index) }),
            };
            let dependencies: Vec<Value> = stage
                .dependencies
                .iter()
                .map(|d| {
                    let mut value = reference(&d.reference);
                    if let Value::Object(map) = &mut value {
                        map.insert("kind".into(), json!(d.kind.as_str()));
                        map.insert("line".into(), json!(d.span.start.line));
                    }
                    value
                })
                .collect();
            json!({
                "index": stage.index,
                "name": stage.name,
                "base": base,
                "platform": stage.platform,
                "dependencies": dependencies,
                "depends_on_stages": stage.stage_dependencies(),
                "needed": needed.contains(&stage.index),
            })
        })
        .collect();
    let document = json!({
        "file": source.name,
        "target": { "index": target, "name": graph.stages.get(target).and_then(|s| s.name.clone()) },
        "needed": needed,
        "stages": stages,
    });
    Ok(format!("{}\n", serde_json::to_string_pretty(&document)?))
}

fn dot_quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for ch in text.chars() {
        match ch {
            '"' | '\\' => {
                out.push('\\');
                out.push(ch);
            }
            '\n' => out.push_str("\\n"),
            _ => out.push(ch),
        }
    }
    out.push('"');
    out
}

/// Graphviz: stages as boxes (filled when needed), images as ellipses,
/// edges from what is used to the stage that uses it.
pub fn render_dot(graph: &Graph, target: usize, needed: &[usize]) -> String {
    let mut out = String::from("digraph stages {\n  rankdir=LR;\n  node [shape=box];\n");
    let mut images: Vec<String> = Vec::new();
    for stage in &graph.stages {
        let mut label = format!("{}: {}", stage.index, stage.display_name());
        match &stage.base {
            Base::Image(image) => label.push_str(&format!("\nFROM {image}")),
            Base::Scratch => label.push_str("\nFROM scratch"),
            Base::Stage(_) => {}
        }
        let mut attributes = vec![format!("label={}", dot_quote(&label))];
        if needed.contains(&stage.index) {
            attributes.push("style=filled".into());
            attributes.push("fillcolor=lightblue".into());
        }
        if stage.index == target {
            attributes.push("peripheries=2".into());
        }
        out.push_str(&format!(
            "  s{} [{}];\n",
            stage.index,
            attributes.join(", ")
        ));
    }
    for stage in &graph.stages {
        for dependency in &stage.dependencies {
            let from = match &dependency.reference {
                Reference::Stage(index) => format!("s{index}"),
                Reference::Image(image) => {
                    if !images.contains(image) {
                        images.push(image.clone());
                    }
                    dot_quote(&format!("image:{image}"))
                }
                Reference::Context => "context".to_string(),
            };
            out.push_str(&format!(
                "  {from} -> s{} [label={}];\n",
                stage.index,
                dot_quote(dependency.kind.as_str())
            ));
        }
    }
    for image in &images {
        out.push_str(&format!(
            "  {} [shape=ellipse, label={}];\n",
            dot_quote(&format!("image:{image}")),
            dot_quote(image)
        ));
    }
    if graph.stages.iter().any(|s| {
        s.dependencies
            .iter()
            .any(|d| d.reference == Reference::Context)
    }) {
        out.push_str("  context [shape=folder, label=\"build context\"];\n");
    }
    out.push_str("}\n");
    out
}
