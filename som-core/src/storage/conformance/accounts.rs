//! Conformance checks: Settings, users and sessions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use super::*;

pub async fn settings_are_initialised_once(s: DynStorage) {
    assert!(s.schema_version().await.unwrap() >= 1);
    s.ping().await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..8u8 {
        let s = Arc::clone(&s);
        tasks.push(tokio::spawn(async move { s.get_or_init_setting("secret", vec![i; 4]).await.unwrap() }));
    }
    let mut values = Vec::new();
    for t in tasks {
        values.push(t.await.unwrap());
    }
    values.dedup();
    assert_eq!(values.len(), 1, "every caller sees the same value");
    assert_eq!(s.get_or_init_setting("secret", vec![9]).await.unwrap(), values[0]);
}

pub async fn users_are_unique_by_username_and_email(s: DynStorage) {
    let alice = user(&s, "alice").await;
    assert_eq!(s.user_by_id(alice.id).await.unwrap(), Some(alice.clone()));
    assert_eq!(s.user_by_username("alice").await.unwrap(), Some(alice.clone()));
    assert_eq!(s.user_by_username("ALICE").await.unwrap(), None, "usernames are case-sensitive");
    let found = s.user_credentials("alice").await.unwrap().unwrap();
    assert_eq!((found.user, found.password_hash.as_str()), (alice.clone(), "$argon2id$not-a-real-hash"));
    let dup = |name: &str, email: &str| NewUserRecord {
        username: Username::parse(name).unwrap(),
        email: Some(Email::parse(email).unwrap()),
        password_hash: "x".into(),
        is_staff: false,
        created_at: Utc::now(),
    };
    let taken = s.insert_user(dup("alice", "other@example.com")).await.unwrap();
    assert_eq!(taken, UserInsert::Taken { username: true, email: false });
    let taken = s.insert_user(dup("alice2", "ALICE@example.com")).await.unwrap();
    assert_eq!(taken, UserInsert::Taken { username: false, email: true });
    let taken = s.insert_user(dup("alice", "alice@example.com")).await.unwrap();
    assert_eq!(taken, UserInsert::Taken { username: true, email: true });
    let no_email = |name: &str| NewUserRecord { email: None, ..dup(name, "x@example.com") };
    s.insert_user(no_email("bob")).await.unwrap();
    s.insert_user(no_email("carol")).await.unwrap();
    assert_eq!(s.user_by_id(UserId::new(999_999)).await.unwrap(), None);
}

pub async fn users_list_in_id_order_and_staff_can_be_set(s: DynStorage) {
    let a = user(&s, "a").await;
    let b = user(&s, "b").await;
    let c = user(&s, "c").await;
    let all = s.list_users(UserQuery { after: None, prefix: None, active_staff: false, limit: 10 }).await.unwrap();
    assert_eq!(all.iter().map(|u| u.id).collect::<Vec<_>>(), vec![a.id, b.id, c.id]);
    let after =
        s.list_users(UserQuery { after: Some(a.id), prefix: None, active_staff: false, limit: 1 }).await.unwrap();
    assert_eq!(after.iter().map(|u| u.id).collect::<Vec<_>>(), vec![b.id]);
    let Some(Transition::Applied(staff)) = s.set_staff(b.id, true).await.unwrap() else { panic!("not made staff") };
    assert!(staff.is_staff);
    assert!(s.user_by_id(b.id).await.unwrap().unwrap().is_staff);
    assert_eq!(s.set_staff(UserId::new(999_999), true).await.unwrap(), None);
}

pub async fn concurrent_demotions_leave_an_active_staff_account(s: DynStorage) {
    let now = Utc::now();
    let active_staff = |s: DynStorage| async move {
        s.list_users(UserQuery { after: None, prefix: None, active_staff: true, limit: 10 }).await.unwrap()
    };
    let customer = user(&s, "customer").await;
    assert!(matches!(s.set_active(customer.id, false, now).await.unwrap(), Some(Transition::Applied(_))));
    let mut keeper = user(&s, "keeper").await;
    s.set_staff(keeper.id, true).await.unwrap();
    // The last active staff account can be neither demoted nor disabled.
    assert!(matches!(s.set_staff(keeper.id, false).await.unwrap(), Some(Transition::NotApplied(_))));
    assert!(matches!(s.set_active(keeper.id, false, now).await.unwrap(), Some(Transition::NotApplied(_))));
    for round in 0..20 {
        // Two staff accounts (the keeper steps down), which then demote or disable each other
        // at once: exactly one change goes through.
        let (a, b) = (user(&s, &format!("a{round}")).await, user(&s, &format!("b{round}")).await);
        s.set_staff(a.id, true).await.unwrap();
        s.set_staff(b.id, true).await.unwrap();
        assert!(matches!(s.set_staff(keeper.id, false).await.unwrap(), Some(Transition::Applied(_))));
        let (sa, sb) = (Arc::clone(&s), Arc::clone(&s));
        let one = tokio::spawn(async move {
            if round % 2 == 0 { sa.set_staff(a.id, false).await } else { sa.set_active(a.id, false, now).await }
        });
        let two = tokio::spawn(async move { sb.set_staff(b.id, false).await });
        let (first, second) = (one.await.unwrap().unwrap(), two.await.unwrap().unwrap());
        let applied = [&first, &second].iter().filter(|t| matches!(t, Some(Transition::Applied(_)))).count();
        assert_eq!(applied, 1, "round {round}: {first:?} {second:?}");
        let left = active_staff(Arc::clone(&s)).await;
        assert_eq!(left.len(), 1, "round {round}: {left:?}");
        keeper = left[0].clone();
    }
}

pub async fn refresh_tokens_rotate_once_and_reuse_revokes_the_family(s: DynStorage) {
    let u = user(&s, "alice").await;
    let now = Utc::now();
    let rec = |jti: &str, family: &str| RefreshTokenRecord {
        jti: jti.into(),
        family: family.into(),
        user_id: u.id,
        expires_at: now + Duration::days(1),
        session_started_at: now,
        checked_version: None,
    };
    let rotate = |uid: UserId, fam: &'static str, old: &'static str, new: &'static str, at| {
        let s = Arc::clone(&s);
        let r = rec(new, fam);
        async move { s.rotate_refresh_token(uid, fam, old, r, at).await.unwrap() }
    };
    assert!(s.insert_refresh_token(rec("t1", "f")).await.unwrap());
    assert_eq!(rotate(u.id, "f", "t1", "t2", now).await, RotateOutcome::Rotated);
    assert_eq!(rotate(u.id, "f", "t1", "t3", now).await, RotateOutcome::ReuseDetected);
    assert_eq!(rotate(u.id, "f", "t2", "t4", now).await, RotateOutcome::Rejected, "the family is revoked after reuse");
    assert!(s.insert_refresh_token(rec("g1", "g")).await.unwrap());
    assert_eq!(rotate(u.id, "other", "g1", "g2", now).await, RotateOutcome::Rejected);
    assert_eq!(rotate(UserId::new(u.id.get() + 1), "g", "g1", "g2", now).await, RotateOutcome::Rejected);
    assert_eq!(rotate(u.id, "g", "g1", "g2", now + Duration::days(2)).await, RotateOutcome::Rejected, "expired");
    assert_eq!(rotate(u.id, "g", "nope", "g2", now).await, RotateOutcome::Rejected);
    assert_eq!(rotate(u.id, "g", "g1", "g2", now).await, RotateOutcome::Rotated);
}

pub async fn sessions_end_by_revocation_version_and_disabling(s: DynStorage) {
    let u = user(&s, "alice").await;
    let now = Utc::now();
    let record = |jti: &str, family: &str| RefreshTokenRecord {
        jti: jti.into(),
        family: family.into(),
        user_id: u.id,
        expires_at: now + Duration::days(1),
        session_started_at: now,
        checked_version: None,
    };
    let start = |jti: &str, family: &str| {
        let (s, rec) = (Arc::clone(&s), record(jti, family));
        async move { assert!(s.insert_refresh_token(rec).await.unwrap()) }
    };
    let live = |family: &'static str| {
        let s = Arc::clone(&s);
        async move { s.session_state(u.id, family).await.unwrap().map(|state| state.live) }
    };
    for (jti, family) in [("a1", "a"), ("b1", "b"), ("c1", "c"), ("d1", "d")] {
        start(jti, family).await;
    }
    assert_eq!(live("a").await, Some(true));
    assert_eq!(live("nope").await, None, "an unknown session");
    assert_eq!(s.session_state(UserId::new(999_999), "a").await.unwrap(), None, "an unknown user");

    // Logging out ends one session and its refresh tokens.
    assert!(s.revoke_session(u.id, "a", now).await.unwrap());
    assert!(!s.revoke_session(u.id, "a", now).await.unwrap(), "already ended");
    assert_eq!(live("a").await, Some(false));
    assert_eq!(live("b").await, Some(true));
    let next = record("a2", "a");
    assert_eq!(s.rotate_refresh_token(u.id, "a", "a1", next, now).await.unwrap(), RotateOutcome::Rejected);

    // A password change ends every session but the one that made it, in one transaction.
    assert!(s.end_sessions(u.id, Some("b"), Some("new-hash".into()), now).await.unwrap());
    assert_eq!((live("b").await, live("c").await, live("d").await), (Some(true), Some(false), Some(false)));
    assert_eq!(s.user_credentials("alice").await.unwrap().map(|c| c.password_hash), Some("new-hash".to_owned()));
    let next = record("b2", "b");
    assert_eq!(s.rotate_refresh_token(u.id, "b", "b1", next, now).await.unwrap(), RotateOutcome::Rotated);
    assert!(!s.end_sessions(UserId::new(999_999), None, None, now).await.unwrap());

    // A session started after the change is live; disabling ends it and every other.
    start("e1", "e").await;
    assert_eq!(live("e").await, Some(true));
    let Some(Transition::Applied(disabled)) = s.set_active(u.id, false, now).await.unwrap() else {
        panic!("not disabled")
    };
    assert!(!disabled.is_active);
    assert_eq!((live("b").await, live("e").await), (Some(false), Some(false)));
    let Some(Transition::Applied(enabled)) = s.set_active(u.id, true, now).await.unwrap() else {
        panic!("not enabled")
    };
    assert!(enabled.is_active);
    assert_eq!(live("e").await, Some(false), "enabling does not bring ended sessions back");
    start("f1", "f").await;
    assert_eq!(live("f").await, Some(true));
    assert_eq!(s.set_active(UserId::new(999_999), false, now).await.unwrap(), None);

    // Expired tokens and old sessions without tokens are pruned; live ones stay.
    assert!(s.prune_sessions(now + Duration::days(2), now - Duration::days(1)).await.unwrap() > 0);
    assert_eq!(live("f").await, Some(true), "a session's row stays while it may have access tokens");
    s.prune_sessions(now + Duration::days(2), now + Duration::seconds(1)).await.unwrap();
    assert_eq!(live("f").await, None);

    // A login whose password was checked before a password change (or a revoke-all, or a
    // disable and enable) cannot start its session afterwards: the version it read is gone.
    let checked = s.user_credentials("alice").await.unwrap().unwrap().session_version;
    let at_checked =
        |jti: &str, family: &str| RefreshTokenRecord { checked_version: Some(checked), ..record(jti, family) };
    assert!(s.insert_refresh_token(at_checked("g1", "g")).await.unwrap(), "nothing changed in between");
    assert!(s.end_sessions(u.id, None, Some("newer-hash".into()), now).await.unwrap());
    assert!(!s.insert_refresh_token(at_checked("h1", "h")).await.unwrap(), "the password changed in between");
    assert_eq!(live("h").await, None, "no session was written");
    let checked_again = s.user_credentials("alice").await.unwrap().unwrap().session_version;
    s.set_active(u.id, false, now).await.unwrap();
    s.set_active(u.id, true, now).await.unwrap();
    let record_i = RefreshTokenRecord { checked_version: Some(checked_again), ..record("i1", "i") };
    assert!(!s.insert_refresh_token(record_i).await.unwrap(), "the account was disabled in between");
    s.set_active(u.id, false, now).await.unwrap();
    assert!(!s.insert_refresh_token(record("j1", "j")).await.unwrap(), "a disabled account starts no session");
    s.set_active(u.id, true, now).await.unwrap();
}
