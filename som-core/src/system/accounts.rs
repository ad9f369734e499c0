//! Accounts and sessions through the facade: registration, login, tokens, profiles, staff tools.

use super::*;

impl OrderSystem {
    /// Creates a (non-staff) account. The email is required (notifications go to it). Every
    /// invalid field is reported; a taken username or email is a validation error on that field.
    pub async fn register(&self, registration: Registration) -> Result<User> {
        self.create_account(registration, false, true).await
    }

    /// Creates an account with the given staff flag; the email may be left out (such users get
    /// no email notifications). Staff callers only.
    pub async fn create_user(&self, caller: Caller, registration: Registration, is_staff: bool) -> Result<User> {
        self.writing(caller, async {
            if !caller.is_staff() {
                return Err(Error::Forbidden("only staff may create accounts with roles".into()));
            }
            self.create_account(registration, is_staff, false).await
        })
        .await
    }

    async fn create_account(&self, r: Registration, is_staff: bool, email_required: bool) -> Result<User> {
        let mut errors = ValidationErrors::new();
        let username = Username::parse(&r.username).map_err(|m| errors.add("username", m)).ok();
        let email = match r.email.as_deref().map(str::trim) {
            None | Some("") if email_required => {
                errors.add("email", "This field is required.");
                None
            }
            None | Some("") => None,
            Some(e) => Email::parse(e).map_err(|m| errors.add("email", m)).ok(),
        };
        let password = Password::parse(&r.password, Some(&r.username)).map_err(|m| errors.add("password", m)).ok();
        errors.into_result()?;
        let (Some(username), Some(password)) = (username, password) else {
            return Err(Error::Internal("validated registration lost a field".into()));
        };
        let password_hash = self.inner.hasher.hash(&password).await?;
        let record = NewUserRecord { username, email, password_hash, is_staff, created_at: self.now() };
        match self.write(move |s| async move { s.insert_user(record).await }).await? {
            UserInsert::Inserted(user) => Ok(user),
            UserInsert::Taken { username, email } => {
                let mut errors = ValidationErrors::new();
                if username {
                    errors.add("username", "a user with that username already exists");
                }
                if email {
                    errors.add("email", "a user with that email already exists");
                }
                Err(Error::Validation(errors))
            }
        }
    }

    /// A new token pair for valid credentials. A wrong password and an unknown username give
    /// the same error after the same work.
    pub async fn login(&self, username: &str, password: &str) -> Result<TokenPair> {
        let rejected = || Error::Unauthorized("no active account found with the given credentials".into());
        let attempt = self.inner.login_failures.begin(username).map_err(|retry_after| Error::TooManyAttempts {
            what: "too many failed logins for this username".into(),
            retry_after,
        })?;
        let Some(password) = Password::for_login(password) else {
            attempt.failed();
            return Err(rejected());
        };
        let credentials = if username.len() <= Username::MAX_CHARS * 4 {
            self.inner.storage.user_credentials(username).await?
        } else {
            None
        };
        let (user, hash) = match credentials {
            Some(c) => (Some((c.user, c.session_version)), Some(c.password_hash)),
            None => (None, None),
        };
        let ok = self.inner.hasher.verify(&password, hash).await?;
        match user {
            Some((user, checked_version)) if ok && user.is_active => {
                attempt.succeeded();
                // Started only if no password change, revoking or disabling came in between.
                self.start_session(user.id, Some(checked_version)).await?.ok_or_else(rejected)
            }
            _ => {
                attempt.failed();
                Err(rejected())
            }
        }
    }

    /// A token pair for `user` without a password: for operators scripting against the API.
    /// Staff callers only.
    pub async fn issue_tokens(&self, caller: Caller, user: UserId) -> Result<TokenPair> {
        if !caller.is_staff() {
            return Err(Error::Forbidden("only staff may issue tokens for other users".into()));
        }
        let found =
            self.inner.storage.user_by_id(user).await?.ok_or_else(|| Error::NotFound(format!("user {user}")))?;
        let disabled = || Error::Conflict(format!("user {user} is disabled"));
        if !found.is_active {
            return Err(disabled());
        }
        self.start_session(user, None).await?.ok_or_else(disabled)
    }

    /// A new session for `user`, if the account is active and (with `checked_version`) its
    /// session version is still the one its credentials were checked at; `None` otherwise.
    async fn start_session(&self, user: UserId, checked_version: Option<i64>) -> Result<Option<TokenPair>> {
        let now = self.now();
        let (family, jti) = (crate::util::random_token(16), crate::util::random_token(16));
        let record = RefreshTokenRecord {
            jti: jti.clone(),
            family: family.clone(),
            user_id: user,
            expires_at: self.inner.keys.refresh_expiry(now, now),
            session_started_at: now,
            checked_version,
        };
        let started = self.write(move |s| async move { s.insert_refresh_token(record).await }).await?;
        if !started {
            return Ok(None);
        }
        self.inner.keys.issue_pair(user, &family, now, &jti, now).map(Some)
    }

    /// Exchanges a refresh token for a new pair in the same session. Each refresh token works
    /// once; presenting a used one revokes its whole session (its access tokens stop working
    /// too). A session never lasts beyond `SOM_SESSION_MAX_AGE` from its login, however often
    /// it is refreshed.
    pub async fn refresh(&self, refresh_token: &str) -> Result<TokenPair> {
        let claims = self.inner.keys.verify_refresh(refresh_token, self.now())?;
        let now = self.now();
        if now >= self.inner.keys.session_end(claims.session_started_at) {
            return Err(Error::Unauthorized("the session has reached its maximum age; log in again".into()));
        }
        let new_jti = crate::util::random_token(16);
        let record = RefreshTokenRecord {
            jti: new_jti.clone(),
            family: claims.family.clone(),
            user_id: claims.user_id,
            expires_at: self.inner.keys.refresh_expiry(now, claims.session_started_at),
            session_started_at: claims.session_started_at,
            checked_version: None,
        };
        let (user, family, jti) = (claims.user_id, claims.family.clone(), claims.jti.clone());
        match self.write(move |s| async move { s.rotate_refresh_token(user, &family, &jti, record, now).await }).await?
        {
            RotateOutcome::Rotated => {
                self.inner.keys.issue_pair(claims.user_id, &claims.family, claims.session_started_at, &new_jti, now)
            }
            RotateOutcome::ReuseDetected => {
                self.inner.sessions.invalidate();
                tracing::warn!(user = %claims.user_id, "refresh token reused; session revoked");
                Err(Error::Unauthorized("refresh token was already used; the session has been revoked".into()))
            }
            RotateOutcome::Rejected => Err(Error::Unauthorized("token is invalid".into())),
        }
    }

    /// The caller an access token stands for. The token's session must be live: not logged
    /// out, not ended by a password change or "revoke all", and its account not disabled.
    pub async fn authenticate(&self, access_token: &str) -> Result<Caller> {
        let claims = self.inner.keys.verify_access(access_token, self.now())?;
        let user = self.live_session_user(claims.user_id, &claims.session).await?;
        Ok(Caller::User { id: user.id, is_staff: user.is_staff })
    }

    /// The account a session's refresh token stands for, without using the token up: for a
    /// front end that keeps a session in a cookie (the console). The session must be live, as
    /// for [`OrderSystem::authenticate`], and younger than `SOM_SESSION_MAX_AGE`; the token
    /// unexpired.
    pub async fn session_user(&self, refresh_token: &str) -> Result<User> {
        let now = self.now();
        let claims = self.inner.keys.verify_refresh(refresh_token, now)?;
        if now >= self.inner.keys.session_end(claims.session_started_at) {
            return Err(Error::Unauthorized("the session has reached its maximum age; log in again".into()));
        }
        self.live_session_user(claims.user_id, &claims.family).await
    }

    /// How many live sessions (logged-in devices) `user` has. Staff only.
    pub async fn live_sessions(&self, caller: Caller, user: UserId) -> Result<u64> {
        if !caller.is_staff() {
            return Err(Error::Forbidden("only staff may read accounts".into()));
        }
        let since =
            self.now() - chrono::Duration::from_std(self.config().session_max_age).unwrap_or(chrono::Duration::MAX);
        self.inner.storage.live_sessions(user, since).await
    }

    async fn live_session_user(&self, user_id: UserId, session: &str) -> Result<User> {
        let epoch = match self.inner.sessions.get(user_id, session) {
            Ok(user) => return Ok(user),
            Err(epoch) => epoch,
        };
        match self.inner.storage.session_state(user_id, session).await? {
            Some(state) if state.live => {
                self.inner.sessions.remember(epoch, session, &state.user);
                Ok(state.user)
            }
            Some(_) => Err(Error::Unauthorized("the session has ended; log in again".into())),
            None => Err(Error::Unauthorized("token is invalid".into())),
        }
    }

    /// Logs out: ends the session of `refresh_token` (its refresh token and every access token
    /// issued in it stop working at once). Ending a session that already ended succeeds.
    pub async fn logout(&self, refresh_token: &str) -> Result<()> {
        let claims = self.inner.keys.verify_refresh(refresh_token, self.now())?;
        let (user, family, at) = (claims.user_id, claims.family.clone(), self.now());
        let ended = self.write(move |s| async move { s.revoke_session(user, &family, at).await }).await;
        self.inner.sessions.invalidate();
        ended?;
        Ok(())
    }

    /// Ends every session of the caller (every device is logged out), or — for staff and the
    /// system caller — of `user`.
    pub async fn revoke_sessions(&self, caller: Caller, user: UserId) -> Result<()> {
        if !caller.can_access(user) {
            return Err(Error::Forbidden("only staff may end other users' sessions".into()));
        }
        let at = self.now();
        let ended = self.write(move |s| async move { s.end_sessions(user, None, None, at).await }).await;
        self.inner.sessions.invalidate();
        if !ended? {
            return Err(Error::NotFound(format!("user {user}")));
        }
        tracing::info!(%user, "every session ended");
        Ok(())
    }

    /// Changes the password of the account `access_token` belongs to, after checking
    /// `current_password`; every other session of the account ends, the one presenting the
    /// token stays logged in. Field errors name `current_password` (wrong) or `new_password`
    /// (too weak).
    pub async fn change_password(&self, access_token: &str, current_password: &str, new_password: &str) -> Result<()> {
        let claims = self.inner.keys.verify_access(access_token, self.now())?;
        let user = self.live_session_user(claims.user_id, &claims.session).await?;
        let username = user.username.as_str().to_owned();
        let attempt = self.inner.login_failures.begin(&username).map_err(|retry_after| Error::TooManyAttempts {
            what: "too many failed password checks".into(),
            retry_after,
        })?;
        let new = Password::parse(new_password, Some(&username)).map_err(|m| Error::invalid("new_password", m))?;
        let hash = self.inner.storage.user_credentials(&username).await?.map(|c| c.password_hash);
        let current_ok = match Password::for_login(current_password) {
            Some(current) => self.inner.hasher.verify(&current, hash).await?,
            None => false,
        };
        if !current_ok {
            attempt.failed();
            return Err(Error::invalid("current_password", "is not the account's password"));
        }
        drop(attempt);
        let new_hash = self.inner.hasher.hash(&new).await?;
        let (id, keep, at) = (user.id, claims.session.clone(), self.now());
        let ended = self.write(move |s| async move { s.end_sessions(id, Some(&keep), Some(new_hash), at).await }).await;
        self.inner.sessions.invalidate();
        ended?;
        tracing::info!(user = %user.id, "password changed; other sessions ended");
        Ok(())
    }

    /// Disables (`false`) or re-enables an account. A disabled account cannot log in and every
    /// session of it ends at once. Staff only; staff cannot disable themselves.
    pub async fn set_active(&self, caller: Caller, user: UserId, is_active: bool) -> Result<User> {
        self.writing(caller, async {
            if !caller.is_staff() {
                return Err(Error::Forbidden("only staff may disable or enable accounts".into()));
            }
            if !is_active && caller.user_id() == Some(user) {
                return Err(Error::Conflict("staff cannot disable their own account".into()));
            }
            let at = self.now();
            let changed = self.write(move |s| async move { s.set_active(user, is_active, at).await }).await;
            self.inner.sessions.invalidate();
            staff_change(user, changed?)
        })
        .await
    }

    /// The caller's own account.
    pub async fn profile(&self, caller: Caller) -> Result<User> {
        let id = caller.user_id().ok_or_else(|| Error::NotFound("profile of the system caller".into()))?;
        self.inner.storage.user_by_id(id).await?.ok_or_else(|| Error::NotFound(format!("user {id}")))
    }

    /// A user by id or exact username. Staff see anyone; users only themselves.
    pub async fn find_user(&self, caller: Caller, id_or_username: &str) -> Result<User> {
        let by_id = id_or_username.parse::<UserId>().ok();
        let user = match by_id {
            Some(id) => self.inner.storage.user_by_id(id).await?,
            None => self.inner.storage.user_by_username(id_or_username).await?,
        };
        user.filter(|u| caller.can_access(u.id)).ok_or_else(|| Error::NotFound(format!("user {id_or_username}")))
    }

    /// An account by id, for staff (and the system caller); `Forbidden` for anyone else, who
    /// reads their own account with [`OrderSystem::profile`].
    pub async fn account(&self, caller: Caller, id: UserId) -> Result<User> {
        if !caller.is_staff() {
            return Err(Error::Forbidden("only staff may read accounts".into()));
        }
        self.inner.storage.user_by_id(id).await?.ok_or_else(|| Error::NotFound(format!("user {id}")))
    }

    /// A page of users by ascending id, after the previous page's `next_cursor`, optionally
    /// only those whose username or email starts with `prefix` (case-insensitively). Staff
    /// only; `limit` 1 to [`MAX_ADMIN_PAGE_SIZE`].
    pub async fn users_page(&self, caller: Caller, query: UserListQuery) -> Result<Page<User>> {
        if !caller.is_staff() {
            return Err(Error::Forbidden("only staff may list users".into()));
        }
        let UserListQuery { search, cursor, limit } = query;
        let limit = admin_page_size(limit.unwrap_or(DEFAULT_PAGE_SIZE))?;
        let prefix = search.as_deref().map(str::trim).filter(|p| !p.is_empty());
        if prefix.is_some_and(|p| p.chars().count() > Email::MAX_CHARS) {
            return Err(Error::invalid("q", format!("must be at most {} characters", Email::MAX_CHARS)));
        }
        let query =
            UserQuery { after: cursor, prefix: prefix.map(str::to_owned), active_staff: false, limit: limit + 1 };
        let users = self.may_lag(caller, self.inner.storage.list_users(query)).await?;
        Ok(Page::of(users, limit, |u| u.id.to_string()))
    }

    /// Grants or revokes staff. Staff only.
    pub async fn set_staff(&self, caller: Caller, user: UserId, is_staff: bool) -> Result<User> {
        self.writing(caller, async {
            if !caller.is_staff() {
                return Err(Error::Forbidden("only staff may change roles".into()));
            }
            if !is_staff && caller.user_id() == Some(user) {
                return Err(Error::Conflict(
                    "staff cannot revoke their own staff rights; another staff member can".into(),
                ));
            }
            let changed = self.write(move |s| async move { s.set_staff(user, is_staff).await }).await;
            self.inner.sessions.invalidate();
            staff_change(user, changed?)
        })
        .await
    }

    /// Changes an account's staff flag and/or whether it is active (staff only), checking both
    /// changes before making either: staff cannot revoke their own rights nor disable their own
    /// account. The account unchanged when neither is given.
    pub async fn update_user(
        &self,
        caller: Caller,
        user: UserId,
        is_staff: Option<bool>,
        is_active: Option<bool>,
    ) -> Result<User> {
        self.writing(caller, async {
            if !caller.is_staff() {
                return Err(Error::Forbidden("only staff may change accounts".into()));
            }
            let own = caller.user_id() == Some(user);
            if own && is_staff == Some(false) {
                return Err(Error::Conflict(
                    "staff cannot revoke their own staff rights; another staff member can".into(),
                ));
            }
            if own && is_active == Some(false) {
                return Err(Error::Conflict("staff cannot disable their own account".into()));
            }
            let mut current =
                self.inner.storage.user_by_id(user).await?.ok_or_else(|| Error::NotFound(format!("user {user}")))?;
            if let Some(is_staff) = is_staff {
                current = self.set_staff(caller, user, is_staff).await?;
            }
            if let Some(is_active) = is_active {
                current = self.set_active(caller, user, is_active).await?;
            }
            Ok(current)
        })
        .await
    }
}

/// The changed account, `NotFound`, or `Conflict` when the change would have left no active
/// staff account.
fn staff_change(user: UserId, changed: Option<Transition<User>>) -> Result<User> {
    match changed {
        Some(Transition::Applied(u)) => Ok(u),
        Some(Transition::NotApplied(_)) => Err(Error::Conflict(format!(
            "user {user} is the last active staff account; make another account staff first"
        ))),
        None => Err(Error::NotFound(format!("user {user}"))),
    }
}
