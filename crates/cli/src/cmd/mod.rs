//! One module per group of subcommands.
pub mod build;
pub mod check;
pub mod dockerfile;
pub mod image;
pub mod output;
pub mod registry;
pub mod run;
pub mod system;
