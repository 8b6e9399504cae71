//! Dockerfile frontend: parser directives, syntax tree with source spans, BuildKit-compatible word expansion, typed instructions and stage graph, lint and diagnostics. Knows nothing about images, stores or running processes.
//!
//! Start with [`parse`] (text to [`ast::Dockerfile`]), [`dump`] (BuildKit's
//! s-expression form of the tree), [`validate()`] (unknown instructions and
//! flags) and [`Diagnostic`] (how every error and warning is reported).

pub mod ast;
pub mod check;
pub mod diagnostics;
pub mod dump;
mod heredoc;
pub mod instructions;
pub mod mounts;
pub mod parser;
pub mod shell;
pub mod stages;
pub mod validate;

pub use ast::Dockerfile;
pub use diagnostics::{Diagnostic, Severity};
pub use dump::dump;
pub use parser::{ParseError, ParseErrorKind, parse};
pub use validate::validate;
