//! Human output (aligned tables, `key: value` blocks) or one JSON document on stdout.

use comfy_table::presets::UTF8_BORDERS_ONLY;
use comfy_table::{ContentArrangement, Table};
use serde::Serialize;

/// What a table or record shows for a value that is not there.
pub const NONE: &str = "-";

/// How to print.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    /// One JSON document instead of human output.
    pub json: bool,
    /// Nothing but errors.
    pub quiet: bool,
}

impl Output {
    /// Prints one record: JSON, or `key: value` lines.
    pub fn record<T: Serialize>(&self, value: &T, fields: &[(&str, String)]) -> anyhow::Result<()> {
        if self.json {
            println!("{}", serde_json::to_string_pretty(value)?);
        } else if !self.quiet {
            let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
            for (k, v) in fields {
                println!("{k:>width$}: {v}");
            }
        }
        Ok(())
    }

    /// Prints a list: in JSON `{"items": [...], "next_cursor": "…" | null}` (every list has
    /// this shape; pass `next_cursor` as `--cursor` for the next page), or a table followed by
    /// the command for the next page.
    pub fn table<T: Serialize>(
        &self,
        values: &[T],
        next_cursor: Option<String>,
        header: &[&str],
        rows: Vec<Vec<String>>,
    ) -> anyhow::Result<()> {
        if self.json {
            let page = serde_json::json!({ "items": values, "next_cursor": next_cursor });
            println!("{}", serde_json::to_string_pretty(&page)?);
        } else if !self.quiet {
            if rows.is_empty() {
                println!("(none)");
                return Ok(());
            }
            // Columns with nothing in any row take no width.
            let shown: Vec<usize> = (0..header.len())
                .filter(|&c| rows.iter().any(|r| r.get(c).is_some_and(|v| !v.is_empty() && v != NONE)))
                .collect();
            let pick = |row: &[String]| -> Vec<String> {
                shown
                    .iter()
                    .map(|&c| row.get(c).filter(|v| !v.is_empty()).cloned().unwrap_or_else(|| NONE.to_owned()))
                    .collect()
            };
            let mut table = Table::new();
            table
                .load_preset(UTF8_BORDERS_ONLY)
                .set_content_arrangement(ContentArrangement::Dynamic)
                .set_header(shown.iter().map(|&c| header[c]).collect::<Vec<_>>());
            for row in rows {
                table.add_row(pick(&row));
            }
            println!("{table}");
            if let Some(next) = next_cursor {
                println!("more: --cursor {next}");
            }
        }
        Ok(())
    }

    /// A spinner on stderr for a long operation: drawn only on a terminal, and never in JSON
    /// or quiet mode.
    pub fn progress(&self, message: &str) -> indicatif::ProgressBar {
        let bar = if self.json || self.quiet {
            indicatif::ProgressBar::hidden()
        } else {
            indicatif::ProgressBar::new_spinner()
        };
        bar.set_message(message.to_owned());
        bar.enable_steady_tick(std::time::Duration::from_millis(100));
        bar
    }

    /// A line for humans only (not in JSON or quiet mode).
    pub fn note(&self, line: &str) {
        if !self.json && !self.quiet {
            println!("{line}");
        }
    }
}
