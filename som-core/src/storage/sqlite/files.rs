//! The database file: where a `sqlite:` URL points, and creating it private to its owner.

use std::path::PathBuf;

/// The database file a `sqlite:` URL names; `None` for an in-memory database or another kind
/// of URL (the URL is read by the configuration's rule, `config::sqlite_file`).
pub fn database_file(url: &str) -> Option<PathBuf> {
    crate::config::sqlite_file(url).ok().flatten()
}

/// Creates the empty file `path` readable and writable by its owner only (0600), or — with
/// `exclusive` false — does nothing if it exists. The database holds password hashes and
/// possibly the token signing key; SQLite gives its `-wal`, `-shm` and `-journal` files the
/// main file's permissions, so they are private too. `create_new` never follows a symbolic
/// link.
pub(super) fn create_private(path: &std::path::Path, exclusive: bool) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if !exclusive && e.kind() == std::io::ErrorKind::AlreadyExists => {
            warn_if_shared(path);
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Warns when an existing database file can be read by other local users.
fn warn_if_shared(path: &std::path::Path) {
    #[cfg(unix)]
    if let Ok(meta) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{:o}", meta.permissions().mode() & 0o777),
                "the database file is readable by other users; it holds password hashes (chmod 600 it and its -wal and -shm files)"
            );
        }
    }
}
