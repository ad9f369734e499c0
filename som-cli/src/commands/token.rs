//! `som token …`

use clap::Subcommand;

use super::{OPERATOR, resolve_user_id};
use crate::Ctx;

/// Issue API tokens for scripting.
#[derive(Debug, Subcommand)]
pub enum Token {
    /// Issue an access + refresh token pair for a user, without their password.
    Issue {
        /// Username or id (as everywhere else; `--user NAME` is accepted too).
        #[arg(value_name = "USER", required_unless_present = "user_flag")]
        user: Option<String>,
        /// The same as the positional USER, for scripts written for earlier versions.
        #[arg(long = "user", value_name = "USER", hide = true, conflicts_with = "user")]
        user_flag: Option<String>,
    },
}

impl Token {
    pub async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let Token::Issue { user, user_flag } = self;
        let user = user.or(user_flag).unwrap_or_default();
        let id = resolve_user_id(ctx, &user).await?;
        let pair = ctx.som.issue_tokens(OPERATOR, id).await?;
        let fields = [("access", pair.access.clone()), ("refresh", pair.refresh.clone())];
        ctx.out.record(&pair, &fields)
    }
}
