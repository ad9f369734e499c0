//! Per-key locks inside one process.

use super::*;

/// In-process mutual exclusion per key, so concurrent calls on one order reach the provider
/// once. Entries are dropped when no one holds them.
#[derive(Debug)]
pub(super) struct KeyedLocks<K>(Mutex<HashMap<K, Weak<tokio::sync::Mutex<()>>>>);

impl<K> Default for KeyedLocks<K> {
    fn default() -> Self {
        KeyedLocks(Mutex::new(HashMap::new()))
    }
}

impl<K: Hash + Eq + Copy> KeyedLocks<K> {
    pub(super) async fn lock(&self, key: K) -> tokio::sync::OwnedMutexGuard<()> {
        let mutex = {
            let mut map = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if map.len() > 1024 {
                map.retain(|_, w| w.strong_count() > 0);
            }
            match map.get(&key).and_then(Weak::upgrade) {
                Some(m) => m,
                None => {
                    let m = Arc::new(tokio::sync::Mutex::new(()));
                    map.insert(key, Arc::downgrade(&m));
                    m
                }
            }
        };
        mutex.lock_owned().await
    }
}
