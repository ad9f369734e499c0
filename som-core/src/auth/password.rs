//! argon2id hashing with the crate defaults (m = 19456 KiB, t = 2, p = 1), in working memory
//! that the hasher owns.
//!
//! Each hash needs 19 MiB of working memory. Allocated and freed per hash, glibc keeps it: after
//! the first such block is freed, its dynamic mmap threshold rises above 19 MiB, later blocks
//! come from arenas that are never trimmed, and a login storm leaves gigabytes resident. So the
//! hasher owns its working memory instead:
//!
//! - at most one buffer per permit (the number of hashes that may run at once), reused from one
//!   hash to the next while logins keep coming, and dropped after [`IDLE_RELEASE`] without use;
//! - each buffer reserves more than glibc's largest mmap threshold (32 MiB), so it is always a
//!   mapping of its own, returned to the operating system when dropped; only the 19 MiB a hash
//!   touches ever become resident.
//!
//! Memory for password hashing is therefore bounded by `permits × 19 MiB` at any load and falls
//! back to nothing shortly after the load ends. Callers beyond the permits wait in a bounded
//! queue; when it is full they get [`Error::Unavailable`] at once (HTTP 503 with `Retry-After`)
//! instead of queueing without limit.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::Semaphore;

use crate::domain::Password;
use crate::error::{Error, Result};

/// How long unused working memory is kept before it is returned to the operating system.
pub const IDLE_RELEASE: Duration = Duration::from_secs(5);

/// Blocks reserved per buffer: 33 MiB, above glibc's largest dynamic mmap threshold (32 MiB on
/// 64-bit), so that the buffer is always its own mapping. Pages beyond what a hash uses are
/// never touched and never resident.
const RESERVED_BLOCKS: usize = 33 * 1024;

/// Salt length in bytes (the PHC recommendation).
const SALT_LEN: usize = 16;

/// Hashes and verifies passwords on tokio's blocking pool, at most `limit` at a time, with a
/// bounded queue of waiting callers (see the module docs).
#[derive(Debug, Clone)]
pub struct PasswordHasher {
    permits: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    max_waiting: usize,
    memory: Arc<WorkingMemory>,
}

/// A hash of a random password, verified against when the user does not exist, so an unknown
/// username costs the same time as a wrong password.
static DUMMY_HASH: OnceLock<Option<String>> = OnceLock::new();

/// The hasher's buffers, and a use counter that tells an idle release whether they were used
/// since it was scheduled.
#[derive(Debug, Default)]
struct WorkingMemory {
    buffers: Mutex<Vec<Vec<Block>>>,
    uses: AtomicU64,
}

impl WorkingMemory {
    fn take(&self, blocks: usize) -> Vec<Block> {
        let mut buffer = self
            .buffers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(RESERVED_BLOCKS.max(blocks)));
        buffer.resize_with(blocks, Block::new);
        buffer
    }

    fn give_back(&self, buffer: Vec<Block>) {
        self.buffers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(buffer);
    }

    fn held(&self) -> usize {
        self.buffers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }

    /// Drops every buffer once [`IDLE_RELEASE`] has passed without another hash.
    fn release_when_idle(self: &Arc<Self>) {
        let seen = self.uses.fetch_add(1, Ordering::SeqCst) + 1;
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let memory = Arc::downgrade(self);
        runtime.spawn(async move {
            tokio::time::sleep(IDLE_RELEASE).await;
            if let Some(memory) = memory.upgrade()
                && memory.uses.load(Ordering::SeqCst) == seen
            {
                memory.buffers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
            }
        });
    }
}

/// Decrements the waiting count when a waiter stops waiting, however it stops.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl PasswordHasher {
    /// A hasher running at most `limit` (at least 1) hashes at once, with up to 32 callers per
    /// permit (at least 64) waiting for their turn.
    pub fn new(limit: usize) -> Self {
        Self::with_queue(limit, limit.max(2).saturating_mul(32))
    }

    /// A hasher running at most `limit` (at least 1) hashes at once, with up to `max_waiting`
    /// callers waiting; callers beyond that get [`Error::Unavailable`] at once.
    pub fn with_queue(limit: usize, max_waiting: usize) -> Self {
        PasswordHasher {
            permits: Arc::new(Semaphore::new(limit.max(1))),
            waiting: Arc::new(AtomicUsize::new(0)),
            max_waiting,
            memory: Arc::new(WorkingMemory::default()),
        }
    }

    /// The PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`) of `password`, with a fresh salt.
    pub async fn hash(&self, password: &Password) -> Result<String> {
        let plain = password.expose().to_owned();
        let mut salt = [0u8; SALT_LEN];
        rand::fill(&mut salt);
        self.run(move |memory| hash_with(memory, &plain, &salt)).await?
    }

    /// True when `password` matches `phc`. With `phc = None` (no such user) it still spends the
    /// time of a verification and returns false.
    pub async fn verify(&self, password: &Password, phc: Option<String>) -> Result<bool> {
        let plain = password.expose().to_owned();
        self.run(move |memory| {
            let found = phc.is_some();
            let target = match phc {
                Some(h) => Some(h),
                None => DUMMY_HASH
                    .get_or_init(|| {
                        let mut salt = [0u8; SALT_LEN];
                        rand::fill(&mut salt);
                        hash_with(memory, "som-dummy-password-for-timing", &salt).ok()
                    })
                    .clone(),
            };
            let ok = target.is_some_and(|h| verify_with(memory, &plain, &h));
            ok && found
        })
        .await
    }

    /// Buffers held for reuse right now (for tests and metrics).
    pub fn buffers_held(&self) -> usize {
        self.memory.held()
    }

    async fn run<T: Send + 'static>(&self, f: impl FnOnce(&WorkingMemory) -> T + Send + 'static) -> Result<T> {
        let permit = match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.max_waiting {
                    self.waiting.fetch_sub(1, Ordering::SeqCst);
                    return Err(Error::Unavailable("password hashing (too many logins at once)".into()));
                }
                let _waiting = Waiting(&self.waiting);
                Arc::clone(&self.permits)
                    .acquire_owned()
                    .await
                    .map_err(|_| Error::Internal("password hasher closed".into()))?
            }
        };
        let memory = Arc::clone(&self.memory);
        let out = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            f(&memory)
        })
        .await
        .map_err(|e| Error::Internal(format!("password hashing task failed: {e}")))?;
        self.memory.release_when_idle();
        Ok(out)
    }
}

/// The argon2id PHC string of `plain` with `salt`, computed in a buffer from `memory`.
fn hash_with(memory: &WorkingMemory, plain: &str, salt: &[u8]) -> Result<String> {
    let failed = |e: &dyn std::fmt::Display| Error::Internal(format!("password hashing failed: {e}"));
    let params = Params::default();
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    let mut buffer = memory.take(params.block_count());
    let hashed = argon2.hash_password_into_with_memory(plain.as_bytes(), salt, &mut out, &mut buffer[..]);
    memory.give_back(buffer);
    hashed.map_err(|e| failed(&e))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| failed(&e))?,
        salt: Some(Salt::new(salt).map_err(|e| failed(&e))?),
        hash: Some(Output::new(&out).map_err(|e| failed(&e))?),
    };
    Ok(phc.to_string())
}

/// Whether `plain` matches the PHC string `phc` (any argon2 variant and parameters it names,
/// within what the buffer allows), computed in a buffer from `memory`. A malformed string never
/// matches.
fn verify_with(memory: &WorkingMemory, plain: &str, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else { return false };
    let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else { return false };
    let Ok(algorithm) = Algorithm::try_from(parsed.algorithm.as_str()) else { return false };
    let version = match parsed.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let Ok(params) = Params::try_from(&parsed) else { return false };
    if params.block_count() > RESERVED_BLOCKS {
        return false;
    }
    let mut out = vec![0u8; expected.len()];
    let argon2 = Argon2::new(algorithm, version, params.clone());
    let mut buffer = memory.take(params.block_count());
    let hashed = argon2.hash_password_into_with_memory(plain.as_bytes(), salt, &mut out, &mut buffer[..]);
    memory.give_back(buffer);
    // `Output`'s equality is constant-time.
    hashed.is_ok() && Output::new(&out).is_ok_and(|computed| &computed == expected)
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
        assert!(!hasher.verify(&pw, Some("$argon2id$garbage".into())).await.unwrap());
    }

    #[tokio::test]
    async fn hashes_made_by_the_argon2_crate_verify_and_ours_verify_there() {
        use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
        let hasher = PasswordHasher::new(1);
        let pw = Password::parse("correct horse battery", None).unwrap();
        let theirs = Argon2::default().hash_password(b"correct horse battery").unwrap().to_string();
        assert!(hasher.verify(&pw, Some(theirs)).await.unwrap());
        let ours = hasher.hash(&pw).await.unwrap();
        assert!(Argon2::default().verify_password(b"correct horse battery", ours.as_str()).is_ok());
    }

    #[tokio::test]
    async fn at_most_one_buffer_per_permit_is_kept_and_idle_buffers_are_released() {
        let hasher = PasswordHasher::new(2);
        let pw = Password::parse("correct horse battery", None).unwrap();
        let mut running = tokio::task::JoinSet::new();
        for _ in 0..6 {
            let (hasher, pw) = (hasher.clone(), pw.clone());
            running.spawn(async move { hasher.hash(&pw).await.unwrap() });
        }
        while let Some(done) = running.join_next().await {
            done.unwrap();
        }
        assert!((1..=2).contains(&hasher.buffers_held()), "{} buffers", hasher.buffers_held());
        // Time moves on without another hash (paused: advanced, not slept).
        tokio::time::pause();
        tokio::time::advance(IDLE_RELEASE + Duration::from_millis(10)).await;
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(hasher.buffers_held(), 0);
    }

    #[tokio::test]
    async fn callers_beyond_the_queue_are_turned_away_at_once() {
        let hasher = PasswordHasher::with_queue(1, 1);
        let pw = Password::parse("correct horse battery", None).unwrap();
        let mut running = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let (hasher, pw) = (hasher.clone(), pw.clone());
            running.spawn(async move { hasher.hash(&pw).await });
        }
        let mut busy = 0;
        while let Some(done) = running.join_next().await {
            match done.unwrap() {
                Ok(_) => {}
                Err(Error::Unavailable(_)) => busy += 1,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(busy >= 1, "every caller was queued");
    }
}
