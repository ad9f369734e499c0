//! `som config`

use clap::Subcommand;
use som_core::Config;

/// Print the configuration reference, generated from SOM's own definition.
#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Every SOM_* variable with its default and meaning, as a Markdown table.
    Reference,
    /// An .env file listing every variable with its default (all commented out).
    Env,
}

impl ConfigCmd {
    pub fn run(self) {
        match self {
            ConfigCmd::Reference => print!("{}", Config::reference_markdown()),
            ConfigCmd::Env => print!("{}", Config::env_example()),
        }
    }
}
