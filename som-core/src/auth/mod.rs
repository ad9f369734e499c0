//! Passwords (argon2id, off the async runtime, bounded concurrency) and JWT access / refresh
//! tokens that cannot be swapped for each other.

mod failures;
mod password;
mod sessions;
mod token;

pub use failures::LoginFailures;
pub use password::PasswordHasher;
pub use sessions::SessionCache;
pub use token::{AccessClaims, RefreshClaims, TokenKeys, TokenPair};
