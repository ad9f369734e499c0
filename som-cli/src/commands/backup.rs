//! `som backup`

use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use crate::Ctx;

/// Write a consistent copy of the SQLite database to a new file while SOM keeps running
/// (PostgreSQL: use pg_dump).
#[derive(Debug, Args)]
pub struct Backup {
    /// Where to write the copy; must not exist yet.
    path: PathBuf,
}

impl Backup {
    pub async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let parent = self.path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
        if !parent.is_dir() {
            return Err(crate::UsageError(format!(
                "cannot write a backup to {}: the directory {} does not exist",
                self.path.display(),
                parent.display()
            ))
            .into());
        }
        if std::fs::symlink_metadata(&self.path).is_ok() {
            return Err(crate::UsageError(format!(
                "cannot write a backup to {}: it already exists (backups never overwrite)",
                self.path.display()
            ))
            .into());
        }
        let started = std::time::Instant::now();
        ctx.som.backup(&self.path).await?;
        let bytes = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        let path = self.path.display().to_string();
        ctx.out.record(
            &json!({ "path": path, "bytes": bytes }),
            &[("backup", path.clone()), ("bytes", bytes.to_string()), ("took", format!("{:.1?}", started.elapsed()))],
        )
    }
}
