//! Who is calling: the subject every OrderSystem method checks access against.

use serde::{Deserialize, Serialize};

use super::{Actor, UserId};

/// The authenticated party of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Caller {
    /// A user, from a verified access token.
    User {
        /// Their id.
        id: UserId,
        /// Whether they are staff (may read everyone's orders).
        is_staff: bool,
    },
    /// An operator or SOM itself (CLI, worker): acts as staff.
    System,
}

impl Caller {
    /// True for staff users and the system.
    pub fn is_staff(self) -> bool {
        match self {
            Caller::User { is_staff, .. } => is_staff,
            Caller::System => true,
        }
    }

    /// The user id, when the caller is a user.
    pub fn user_id(self) -> Option<UserId> {
        match self {
            Caller::User { id, .. } => Some(id),
            Caller::System => None,
        }
    }

    /// True when the caller may see and act on `owner`'s things.
    pub fn can_access(self, owner: UserId) -> bool {
        self.is_staff() || self.user_id() == Some(owner)
    }

    /// How the caller is recorded in the audit trail.
    pub fn actor(self) -> Actor {
        match self {
            Caller::User { id, .. } => Actor::User(id),
            Caller::System => Actor::System,
        }
    }

    /// The scope idempotency keys are kept in: each user has their own keys.
    pub fn scope(self) -> String {
        match self {
            Caller::User { id, .. } => format!("user:{id}"),
            Caller::System => "system".to_owned(),
        }
    }
}
