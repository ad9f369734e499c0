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
    /// Prints the reference (with `json`: an array of `{name, default, help}`) or the .env
    /// example (which is a file format of its own: `--json` is refused).
    pub fn run(self, json: bool) -> anyhow::Result<()> {
        match (self, json) {
            (ConfigCmd::Reference, false) => print!("{}", Config::reference_markdown()),
            (ConfigCmd::Reference, true) => {
                let vars: Vec<_> = som_core::config::VARIABLES
                    .iter()
                    .map(|v| serde_json::json!({ "name": v.name, "default": v.default, "help": v.help }))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&vars)?);
            }
            (ConfigCmd::Env, false) => print!("{}", Config::env_example()),
            (ConfigCmd::Env, true) => {
                return Err(
                    crate::UsageError("`som config env` prints an .env file; --json does not apply".into()).into()
                );
            }
        }
        Ok(())
    }
}
