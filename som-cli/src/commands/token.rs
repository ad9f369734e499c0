//! `som token …`

use clap::Subcommand;

use super::{OPERATOR, resolve_user_id};
use crate::Ctx;

/// Issue API tokens for scripting.
#[derive(Debug, Subcommand)]
pub enum Token {
    /// Issue an access + refresh token pair for a user, without their password.
    Issue {
        /// Username or id.
        #[arg(long)]
        user: String,
    },
}

impl Token {
    pub async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let Token::Issue { user } = self;
        let id = resolve_user_id(ctx, &user).await?;
        let pair = ctx.som.issue_tokens(OPERATOR, id).await?;
        let fields = [("access", pair.access.clone()), ("refresh", pair.refresh.clone())];
        ctx.out.record(&pair, &fields)
    }
}
