//! Idempotency keys: an operation runs at most once per (caller, operation, key).

use super::*;

/// A request holding an idempotency key this long without finishing is presumed dead.
pub(super) const IDEMPOTENCY_STALE_AFTER: chrono::Duration = chrono::Duration::seconds(120);

/// Checks a caller's idempotency key: 1 to [`MAX_IDEMPOTENCY_KEY_LEN`] characters, no control
/// characters.
pub(super) fn validate_idempotency_key(key: &str) -> Result<()> {
    if key.is_empty() || key.chars().count() > MAX_IDEMPOTENCY_KEY_LEN || key.chars().any(char::is_control) {
        return Err(Error::invalid(
            "idempotency_key",
            format!("must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} characters without control characters"),
        ));
    }
    Ok(())
}

pub(super) fn request_hash<T: Serialize>(request: &T) -> Result<String> {
    let bytes = serde_json::to_vec(request).map_err(|e| Error::Internal(format!("hashing request: {e}")))?;
    Ok(crate::util::hex(&Sha256::digest(&bytes)))
}

impl OrderSystem {
    /// Runs `run` at most once per (caller, operation, key): a repeat with the same request
    /// gets the stored result, a repeat with another request `IdempotencyMismatch`, and a
    /// repeat while the first runs `IdempotencyInProgress`.
    pub(super) async fn idempotent<T, R, F, Fut>(
        &self,
        caller: Caller,
        operation: &'static str,
        key: Option<&str>,
        request: &R,
        run: F,
    ) -> Result<T>
    where
        T: Serialize + DeserializeOwned,
        R: Serialize,
        F: FnOnce(Option<IdempotencySlot>) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let Some(key) = key else { return run(None).await };
        validate_idempotency_key(key)?;
        let key = IdempotencyKey { scope: caller.scope(), operation, key: key.to_owned() };
        let hash = request_hash(request)?;
        let now = self.now();
        let ttl = chrono::Duration::from_std(self.inner.config.idempotency_ttl).unwrap_or(chrono::Duration::days(1));
        let begin = {
            let (key, hash) = (key.clone(), hash.clone());
            let (until, stale) = (now + ttl, now - IDEMPOTENCY_STALE_AFTER);
            self.write(move |s| async move { s.begin_idempotency(&key, &hash, now, until, stale).await }).await?
        };
        match begin {
            IdempotencyBegin::Replay(json) => {
                serde_json::from_str(&json).map_err(|e| Error::Internal(format!("stored idempotent response: {e}")))
            }
            IdempotencyBegin::Mismatch => Err(Error::IdempotencyMismatch),
            IdempotencyBegin::InProgress => Err(Error::IdempotencyInProgress),
            IdempotencyBegin::Started => {
                let result = run(Some(IdempotencySlot { key: key.clone() })).await;
                match &result {
                    Ok(value) => {
                        let json = crate::storage::rows::response_json(value)?;
                        self.write(move |s| async move { s.finish_idempotency(&key, &json).await }).await?
                    }
                    Err(_) => {
                        if let Err(e) = self.write(move |s| async move { s.abandon_idempotency(&key).await }).await {
                            tracing::warn!(error = %e, "could not release idempotency key");
                        }
                    }
                }
                result
            }
        }
    }
}
