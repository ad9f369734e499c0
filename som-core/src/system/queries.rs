//! What the facade's list operations take and return, and their limits.

use super::*;

/// Default and largest page sizes for order lists.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// Largest page size for order lists.
pub const MAX_PAGE_SIZE: u32 = 200;
/// Longest accepted idempotency key.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// What a new account is made of, as submitted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Registration {
    /// 1-150 characters: letters, digits, `@ . + - _`.
    pub username: String,
    /// Required by [`OrderSystem::register`]; optional for accounts staff create. Must be a
    /// valid address when given (empty means none).
    #[serde(default)]
    pub email: Option<String>,
    /// At least 8 characters, not entirely numeric, not a common password.
    #[serde(skip_serializing)]
    pub password: String,
}

/// Which orders to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderListQuery {
    /// Staff only: whose orders. Ignored for other users (they always see their own). The
    /// system caller lists every user's orders when `None`.
    pub user: Option<UserId>,
    /// Only orders in this status.
    pub status: Option<OrderStatus>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1 to 200; 50 when `None`.
    pub limit: Option<u32>,
    /// Staff and the system caller only: every user's orders (`user` is then ignored).
    /// `Forbidden` for other callers.
    pub all_users: bool,
    /// Only orders placed at or after this time.
    pub created_after: Option<DateTime<Utc>>,
    /// Only orders placed before this time.
    pub created_before: Option<DateTime<Utc>>,
    /// Staff and the system caller only: only the order with this id, or orders whose owner's
    /// username or email contains this text (case-insensitively). At most 254 characters.
    pub search: Option<String>,
}

/// Which accounts to list (staff only), by ascending id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserListQuery {
    /// Only accounts whose username or email starts with this, case-insensitively.
    pub search: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<UserId>,
    /// Page size, 1 to [`MAX_ADMIN_PAGE_SIZE`]; 50 when `None`.
    pub limit: Option<u32>,
}

/// Which notifications (outbox rows) to list (staff only), by ascending id.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NotificationListQuery {
    /// Only rows in this delivery state.
    pub status: Option<NotificationStatus>,
    /// Only rows about this order.
    pub order: Option<OrderId>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<NotificationId>,
    /// Page size, 1 to [`MAX_ADMIN_PAGE_SIZE`]; 50 when `None`.
    pub limit: Option<u32>,
}

/// One page of a list, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// The first `limit` of `items` (fetched with one more than `limit`), with the cursor of the
    /// last one when there were more.
    pub(super) fn of(mut items: Vec<T>, limit: u32, cursor: impl Fn(&T) -> String) -> Page<T> {
        let more = items.len() > limit as usize;
        items.truncate(limit as usize);
        let next_cursor = if more { items.last().map(cursor) } else { None };
        Page { items, next_cursor }
    }
}

/// Largest page of users or notifications.
pub const MAX_ADMIN_PAGE_SIZE: u32 = 1000;
