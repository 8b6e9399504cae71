//! Dockerfile frontend: parser directives, syntax tree with source spans, BuildKit-compatible word expansion, typed instructions and stage graph, lint and diagnostics. Knows nothing about images, stores or running processes.

pub mod shell;
