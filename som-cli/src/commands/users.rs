//! `som users …`

use std::io::{BufRead, IsTerminal};

use clap::Subcommand;
use som_core::Registration;
use som_core::domain::User;

use super::{OPERATOR, resolve_user};
use crate::Ctx;

/// Manage user accounts.
#[derive(Debug, Subcommand)]
pub enum Users {
    /// Create an account. The password is prompted for (without echo) or read from stdin.
    Create {
        /// Username: letters, digits and @ . + - _
        username: String,
        /// Email address for notifications. Optional here (unlike registration over HTTP): an
        /// operator may create an account that gets no email, such as a service account.
        #[arg(long)]
        email: Option<String>,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        /// Make the account staff (reads every user's orders).
        #[arg(long)]
        staff: bool,
    },
    /// List accounts, by id.
    List {
        /// Only users whose username or email starts with this (case-insensitive).
        #[arg(long)]
        search: Option<String>,
        #[arg(long, default_value_t = 100, help = format!("Show at most this many (1-{})", som_core::system::MAX_ADMIN_PAGE_SIZE), value_parser = clap::value_parser!(u32).range(1..=i64::from(som_core::system::MAX_ADMIN_PAGE_SIZE)))]
        limit: u32,
        /// The `next_cursor` of the previous page.
        #[arg(long)]
        cursor: Option<som_core::domain::UserId>,
    },
    /// Show one account.
    Show {
        /// Username or id.
        user: String,
    },
    /// Grant or revoke staff rights.
    SetStaff {
        /// Username or id.
        user: String,
        /// true or false.
        #[arg(action = clap::ArgAction::Set)]
        staff: bool,
    },
    /// Disable an account: it can no longer log in, and every session of it ends at once.
    Disable {
        /// Username or id.
        user: String,
    },
    /// Enable a disabled account again (its old sessions stay ended).
    Enable {
        /// Username or id.
        user: String,
    },
    /// End every session of an account (log it out everywhere); its password stays.
    RevokeSessions {
        /// Username or id.
        user: String,
    },
}

fn read_password(from_stdin: bool) -> anyhow::Result<String> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_owned());
    }
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("no terminal to prompt for the password on; use --password-stdin");
    }
    let first = rpassword::prompt_password("Password: ")?;
    let second = rpassword::prompt_password("Password (again): ")?;
    if first != second {
        anyhow::bail!("the passwords do not match");
    }
    Ok(first)
}

fn fields(u: &User) -> Vec<(&'static str, String)> {
    vec![
        ("id", u.id.to_string()),
        ("username", u.username.to_string()),
        ("email", u.email.as_ref().map_or_else(|| crate::output::NONE.into(), ToString::to_string)),
        ("staff", u.is_staff.to_string()),
        ("active", u.is_active.to_string()),
    ]
}

impl Users {
    pub async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        match self {
            Users::Create { username, email, password_stdin, staff } => {
                let password = read_password(password_stdin)?;
                let user = ctx.som.create_user(OPERATOR, Registration { username, email, password }, staff).await?;
                ctx.out.record(&user, &fields(&user))
            }
            Users::List { search, limit, cursor } => {
                let page = ctx
                    .som
                    .users_page(OPERATOR, som_core::UserListQuery { search, cursor, limit: Some(limit) })
                    .await?;
                let next_cursor = page.next_cursor;
                let users = page.items;
                let rows = users
                    .iter()
                    .map(|u| {
                        vec![
                            u.id.to_string(),
                            u.username.to_string(),
                            u.email.as_ref().map(ToString::to_string).unwrap_or_default(),
                            u.is_staff.to_string(),
                            u.is_active.to_string(),
                        ]
                    })
                    .collect();
                ctx.out.table(&users, next_cursor, &["id", "username", "email", "staff", "active"], rows)
            }
            Users::Show { user } => {
                let user = resolve_user(ctx, &user).await?;
                ctx.out.record(&user, &fields(&user))
            }
            Users::SetStaff { user, staff } => {
                let id = resolve_user(ctx, &user).await?.id;
                let user = ctx.som.set_staff(OPERATOR, id, staff).await?;
                ctx.out.record(&user, &fields(&user))
            }
            Users::Disable { user } => {
                let id = resolve_user(ctx, &user).await?.id;
                let user = ctx.som.set_active(OPERATOR, id, false).await?;
                ctx.out.record(&user, &fields(&user))
            }
            Users::Enable { user } => {
                let id = resolve_user(ctx, &user).await?.id;
                let user = ctx.som.set_active(OPERATOR, id, true).await?;
                ctx.out.record(&user, &fields(&user))
            }
            Users::RevokeSessions { user } => {
                let found = resolve_user(ctx, &user).await?;
                ctx.som.revoke_sessions(OPERATOR, found.id).await?;
                ctx.out.record(&found, &fields(&found))
            }
        }
    }
}
