//! Passwords (argon2id, off the async runtime, bounded concurrency) and JWT access / refresh
//! tokens that cannot be swapped for each other.

mod password;
mod token;

pub use password::PasswordHasher;
pub use token::{RefreshClaims, TokenKeys, TokenPair};
