//! Accounts: usernames, emails and passwords that are valid by construction.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::UserId;

/// A username: 1 to 150 characters, ASCII letters, digits and `@ . + - _` only.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Username(String);

impl Username {
    /// Longest accepted username, in characters.
    pub const MAX_CHARS: usize = 150;

    /// Checks and wraps `raw` (not trimmed: surrounding spaces are an error).
    pub fn parse(raw: &str) -> Result<Username, String> {
        let count = raw.chars().count();
        if count == 0 {
            return Err("must not be empty".into());
        }
        if count > Self::MAX_CHARS {
            return Err(format!("must be at most {} characters", Self::MAX_CHARS));
        }
        if !raw.chars().all(|c| c.is_ascii_alphanumeric() || "@.+-_".contains(c)) {
            return Err("may contain only letters, digits and @ . + - _".into());
        }
        Ok(Username(raw.to_owned()))
    }

    /// The username as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Username {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Username::parse(&value)
    }
}

impl From<Username> for String {
    fn from(value: Username) -> Self {
        value.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An email address, lower-cased so that uniqueness is case-insensitive.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

impl Email {
    /// The longest address accepted (RFC 5321's path limit less its brackets), in bytes.
    pub const MAX_CHARS: usize = 254;

    /// Checks the usual shape `local@domain.tld` (RFC 5321 lengths) and lower-cases it.
    pub fn parse(raw: &str) -> Result<Email, String> {
        let invalid = || "must be a valid email address".to_owned();
        if raw.len() > Self::MAX_CHARS {
            return Err(format!("must be at most {} characters", Self::MAX_CHARS));
        }
        let (local, domain) = raw.rsplit_once('@').ok_or_else(invalid)?;
        if local.is_empty() || local.len() > 64 || domain.is_empty() {
            return Err(invalid());
        }
        let local_ok = local.chars().all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~.-".contains(c))
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..");
        let labels: Vec<&str> = domain.split('.').collect();
        let domain_ok = labels.len() >= 2
            && labels.iter().all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            });
        if !local_ok || !domain_ok {
            return Err(invalid());
        }
        Ok(Email(raw.to_ascii_lowercase()))
    }

    /// The address, lower case.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Email {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Email::parse(&value)
    }
}

impl From<Email> for String {
    fn from(value: Email) -> Self {
        value.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Well-known passwords that are refused outright (lower case, one per line).
const COMMON_PASSWORDS: &str = include_str!("common-passwords.txt");

/// A plaintext password that passed the strength rules. Its `Debug` never shows it.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    /// Shortest accepted password, in characters.
    pub const MIN_CHARS: usize = 8;
    /// Longest accepted password, in characters; longer input is refused before hashing.
    pub const MAX_CHARS: usize = 128;

    /// Checks length, that it is not entirely numeric, not a well-known common password and
    /// not the username itself.
    pub fn parse(raw: &str, username: Option<&str>) -> Result<Password, String> {
        // Byte length bounds the work before counting characters of a huge input.
        if raw.len() > Self::MAX_CHARS * 4 || raw.chars().count() > Self::MAX_CHARS {
            return Err(format!("must be at most {} characters", Self::MAX_CHARS));
        }
        if raw.chars().count() < Self::MIN_CHARS {
            return Err(format!("is too short: it must contain at least {} characters", Self::MIN_CHARS));
        }
        if raw.chars().all(|c| c.is_ascii_digit()) {
            return Err("is entirely numeric".into());
        }
        let lower = raw.to_lowercase();
        if COMMON_PASSWORDS.lines().any(|p| p == lower) {
            return Err("is too common".into());
        }
        if username.is_some_and(|u| u.to_lowercase() == lower) {
            return Err("is too similar to the username".into());
        }
        Ok(Password(raw.to_owned()))
    }

    /// Wraps a password for verification only (login), without the strength rules.
    pub(crate) fn for_login(raw: &str) -> Option<Password> {
        (raw.len() <= Self::MAX_CHARS * 4).then(|| Password(raw.to_owned()))
    }

    /// The plaintext, for hashing.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// A registered account as callers see it; the password hash never leaves storage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The account id.
    pub id: UserId,
    /// Unique, case-sensitive.
    pub username: Username,
    /// Unique case-insensitively when present; accounts may have none.
    pub email: Option<Email>,
    /// Staff read every user's orders and run operator actions.
    pub is_staff: bool,
    /// False for a disabled account: it cannot log in and its tokens do not work.
    #[serde(default = "active")]
    pub is_active: bool,
    /// When the account was registered.
    pub created_at: DateTime<Utc>,
}

fn active() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_follow_the_allowed_alphabet_and_length() {
        assert!(Username::parse("alice").is_ok());
        assert!(Username::parse("a.l+i-c_e@x").is_ok());
        assert!(Username::parse("").is_err());
        assert!(Username::parse("has space").is_err());
        assert!(Username::parse("semi;colon").is_err());
        assert!(Username::parse(&"a".repeat(150)).is_ok());
        assert!(Username::parse(&"a".repeat(151)).is_err());
    }

    #[test]
    fn emails_are_lower_cased_and_shape_checked() {
        assert_eq!(Email::parse("Alice@Example.COM").map(|e| e.0), Ok("alice@example.com".into()));
        for bad in [
            "",
            "alice",
            "@example.com",
            "alice@",
            "alice@localhost",
            "a b@example.com",
            "alice@exa mple.com",
            "alice@-x.com",
            "a..b@example.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
        assert!(Email::parse(&format!("{}@example.com", "a".repeat(65))).is_err());
    }

    #[test]
    fn passwords_must_be_long_not_numeric_and_not_common() {
        assert!(Password::parse("correct horse battery", None).is_ok());
        assert!(Password::parse("short1", None).is_err());
        assert!(Password::parse("1234567890", None).is_err());
        assert!(Password::parse("password", None).is_err());
        assert!(Password::parse("Password123", None).is_err());
        assert!(Password::parse("alicealice", Some("AliceAlice")).is_err());
        assert!(Password::parse(&"x".repeat(129), None).is_err());
        assert!(Password::parse(&"é".repeat(128), None).is_ok());
    }

    #[test]
    fn password_debug_is_redacted() {
        let p = Password::parse("correct horse battery", None).map(|p| format!("{p:?}"));
        assert_eq!(p.as_deref(), Ok("Password(<redacted>)"));
    }
}
