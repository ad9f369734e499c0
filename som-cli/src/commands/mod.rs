//! One module per command group; `///` comments are the help text.

pub mod backup;
pub mod config;
pub mod healthcheck;
pub mod notifications;
pub mod orders;
pub mod pay;
pub mod returns;
pub mod serve;
pub mod token;
pub mod users;
pub mod webhooks;
pub mod worker;

use som_core::domain::{Caller, User, UserId};

use crate::Ctx;

/// Operators act as the system caller: staff rights, recorded as `system` in the audit trail.
pub const OPERATOR: Caller = Caller::System;

/// A user by id or username.
pub async fn resolve_user(ctx: &Ctx, who: &str) -> anyhow::Result<User> {
    Ok(ctx.som.find_user(OPERATOR, who).await?)
}

/// The id of a user named by id or username.
pub async fn resolve_user_id(ctx: &Ctx, who: &str) -> anyhow::Result<UserId> {
    Ok(resolve_user(ctx, who).await?.id)
}

/// A value parser taking exactly the names of `all`, a som-core enum's list (clap shows them in
/// the help and in its error for anything else).
pub fn names_parser<T, const N: usize>(
    all: [T; N],
    name: fn(T) -> &'static str,
    parse: fn(&str) -> Option<T>,
) -> impl clap::builder::TypedValueParser<Value = T>
where
    T: Clone + Send + Sync + 'static,
{
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(all.map(name)).try_map(move |raw| parse(&raw).ok_or(raw))
}
