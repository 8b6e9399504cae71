//! One module per group of subcommands.
pub mod dockerfile;
pub mod image;
pub mod output;
pub mod system;
