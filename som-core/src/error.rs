//! The one error type callers of som-core see, with a [`ErrorKind`] a front end maps to its own
//! vocabulary (an HTTP status, an exit code) in one place.

use std::collections::BTreeMap;
use std::fmt;

/// Field-by-field validation messages: field name (`items[0].price`, `email`) → messages.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct ValidationErrors(BTreeMap<String, Vec<String>>);

impl ValidationErrors {
    /// An empty set; add to it with [`ValidationErrors::add`].
    pub fn new() -> Self {
        Self::default()
    }

    /// One message for one field.
    pub fn single(field: impl Into<String>, message: impl Into<String>) -> Self {
        let mut errors = Self::new();
        errors.add(field, message);
        errors
    }

    /// Records `message` against `field`, keeping earlier messages for the same field.
    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.entry(field.into()).or_default().push(message.into());
    }

    /// Moves every message of `other` into `self`, prefixing its field names with `prefix`.
    pub fn merge_prefixed(&mut self, prefix: &str, other: ValidationErrors) {
        for (field, messages) in other.0 {
            let name = if field.is_empty() { prefix.to_owned() } else { format!("{prefix}.{field}") };
            self.0.entry(name).or_default().extend(messages);
        }
    }

    /// Keeps the messages of `error` (a validation error's by field, another's under no
    /// field), so that several checks report together.
    pub fn take(&mut self, error: Error) {
        match error {
            Error::Validation(v) => {
                for (field, messages) in v.0 {
                    self.0.entry(field).or_default().extend(messages);
                }
            }
            other => self.add("", other.to_string()),
        }
    }

    /// True when no field has a message.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(())` when empty, otherwise `Err(Error::Validation(self))`.
    pub fn into_result(self) -> Result<(), Error> {
        if self.is_empty() { Ok(()) } else { Err(Error::Validation(self)) }
    }

    /// The messages by field name, in field order.
    pub fn fields(&self) -> &BTreeMap<String, Vec<String>> {
        &self.0
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (field, messages) in &self.0 {
            for message in messages {
                if !first {
                    f.write_str("; ")?;
                }
                first = false;
                write!(f, "{field}: {message}")?;
            }
        }
        Ok(())
    }
}

/// Everything that can go wrong in a call to som-core.
///
/// Messages are safe to show to the caller except for [`Error::Internal`], whose text is for
/// logs only.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input was rejected; every offending field is named.
    #[error("invalid input: {0}")]
    Validation(ValidationErrors),
    /// Well-formed input that names what does not fit the thing it is about (an item that
    /// is not the order's); every offending field is named.
    #[error("unprocessable input: {0}")]
    Unprocessable(ValidationErrors),
    /// The thing does not exist, or belongs to someone else (never told apart).
    #[error("{0} not found")]
    NotFound(String),
    /// The request is valid but the current state does not allow it (an illegal transition, a
    /// duplicate username).
    #[error("{0}")]
    Conflict(String),
    /// Credentials or token missing, wrong, expired or revoked.
    #[error("{0}")]
    Unauthorized(String),
    /// The caller is known but the operation is for staff only.
    #[error("{0}")]
    Forbidden(String),
    /// The payment provider declined the payment; final for this payment.
    #[error("payment declined: {0}")]
    PaymentDeclined(String),
    /// An idempotency key was reused with a different request.
    #[error("idempotency key was already used with a different request")]
    IdempotencyMismatch,
    /// An idempotency key is in use by a request that has not finished.
    #[error("a request with this idempotency key is still in progress")]
    IdempotencyInProgress,
    /// Too many attempts (failed logins for one username): refused without trying until
    /// `retry_after` has passed.
    #[error("{what}; try again in {} s", retry_after.as_secs().max(1))]
    TooManyAttempts {
        /// What was attempted too often.
        what: String,
        /// How long until an attempt is accepted again.
        retry_after: std::time::Duration,
    },
    /// A dependency (storage, payment provider) is unreachable or busy; retrying may succeed.
    #[error("{0} is unavailable, try again later")]
    Unavailable(String),
    /// The database's schema is newer than this build knows: a newer SOM migrated it. Run
    /// that version (or newer) instead.
    #[error("{0}")]
    Incompatible(String),
    /// A bug or an unexpected state; details are logged, not shown.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The category of an [`Error`], for front ends to map without matching messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// See [`Error::Validation`].
    Validation,
    /// See [`Error::Unprocessable`].
    Unprocessable,
    /// See [`Error::NotFound`].
    NotFound,
    /// See [`Error::Conflict`].
    Conflict,
    /// See [`Error::Unauthorized`].
    Unauthorized,
    /// See [`Error::Forbidden`].
    Forbidden,
    /// See [`Error::PaymentDeclined`].
    PaymentDeclined,
    /// See [`Error::IdempotencyMismatch`].
    IdempotencyMismatch,
    /// See [`Error::IdempotencyInProgress`].
    IdempotencyInProgress,
    /// See [`Error::TooManyAttempts`].
    TooManyAttempts,
    /// See [`Error::Unavailable`].
    Unavailable,
    /// See [`Error::Incompatible`].
    Incompatible,
    /// See [`Error::Internal`].
    Internal,
}

impl Error {
    /// The category of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Validation(_) => ErrorKind::Validation,
            Error::Unprocessable(_) => ErrorKind::Unprocessable,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::Conflict(_) => ErrorKind::Conflict,
            Error::Unauthorized(_) => ErrorKind::Unauthorized,
            Error::Forbidden(_) => ErrorKind::Forbidden,
            Error::PaymentDeclined(_) => ErrorKind::PaymentDeclined,
            Error::IdempotencyMismatch => ErrorKind::IdempotencyMismatch,
            Error::IdempotencyInProgress => ErrorKind::IdempotencyInProgress,
            Error::TooManyAttempts { .. } => ErrorKind::TooManyAttempts,
            Error::Unavailable(_) => ErrorKind::Unavailable,
            Error::Incompatible(_) => ErrorKind::Incompatible,
            Error::Internal(_) => ErrorKind::Internal,
        }
    }

    /// True when the same call may succeed later without any change by the caller.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable(_) | Error::IdempotencyInProgress)
    }

    /// A validation error on a single field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Validation(ValidationErrors::single(field, message))
    }

    /// How long to wait before retrying, when the error says.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Error::TooManyAttempts { retry_after, .. } => Some(*retry_after),
            Error::Unavailable(_) => Some(std::time::Duration::from_secs(1)),
            _ => None,
        }
    }

    /// The field messages when this is a validation error.
    pub fn validation_errors(&self) -> Option<&ValidationErrors> {
        match self {
            Error::Validation(errors) | Error::Unprocessable(errors) => Some(errors),
            _ => None,
        }
    }
}

/// som-core's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
