//! `som token …`

use clap::Subcommand;
use som_server::dto::TokenResponse;

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
        let dto = TokenResponse { access: pair.access, refresh: pair.refresh };
        let fields = [("access", dto.access.clone()), ("refresh", dto.refresh.clone())];
        ctx.out.record(&dto, &fields)
    }
}
