//! argon2id hashing with the crate defaults (m = 19456 KiB, t = 2, p = 1).

use std::sync::{Arc, OnceLock};

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use tokio::sync::Semaphore;

use crate::domain::Password;
use crate::error::{Error, Result};

/// Hashes and verifies passwords on tokio's blocking pool, at most `limit` at a time, so a storm
/// of logins cannot starve the runtime or exhaust memory (each hash takes ~19 MiB).
#[derive(Debug, Clone)]
pub struct PasswordHasher {
    permits: Arc<Semaphore>,
}

/// A hash of a random password, verified against when the user does not exist, so an unknown
/// username costs the same time as a wrong password.
static DUMMY_HASH: OnceLock<Option<String>> = OnceLock::new();

impl PasswordHasher {
    /// A hasher running at most `limit` (at least 1) hashes at once.
    pub fn new(limit: usize) -> Self {
        PasswordHasher { permits: Arc::new(Semaphore::new(limit.max(1))) }
    }

    /// The PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`) of `password`, with a fresh salt.
    pub async fn hash(&self, password: &Password) -> Result<String> {
        let plain = password.expose().to_owned();
        self.run(move || hash_blocking(&plain)).await?
    }

    /// True when `password` matches `phc`. With `phc = None` (no such user) it still spends the
    /// time of a verification and returns false.
    pub async fn verify(&self, password: &Password, phc: Option<String>) -> Result<bool> {
        let plain = password.expose().to_owned();
        self.run(move || {
            let found = phc.is_some();
            let target = match phc {
                Some(h) => Some(h),
                None => DUMMY_HASH.get_or_init(|| hash_blocking("som-dummy-password-for-timing").ok()).clone(),
            };
            let ok = target.is_some_and(|h| Argon2::default().verify_password(plain.as_bytes(), h.as_str()).is_ok());
            ok && found
        })
        .await
    }

    async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let _permit = self.permits.acquire().await.map_err(|_| Error::Internal("password hasher closed".into()))?;
        tokio::task::spawn_blocking(f).await.map_err(|e| Error::Internal(format!("password hashing task failed: {e}")))
    }
}

fn hash_blocking(plain: &str) -> Result<String> {
    Argon2::default()
        .hash_password(plain.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| Error::Internal(format!("password hashing failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_use_argon2id_defaults() {
        let hasher = PasswordHasher::new(2);
        let pw = Password::parse("correct horse battery", None).unwrap();
        let phc = hasher.hash(&pw).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(hasher.verify(&pw, Some(phc.clone())).await.unwrap());
        let wrong = Password::parse("wrong horse battery", None).unwrap();
        assert!(!hasher.verify(&wrong, Some(phc)).await.unwrap());
        assert!(!hasher.verify(&pw, None).await.unwrap());
    }
}
