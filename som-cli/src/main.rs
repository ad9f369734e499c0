//! `som`: the operator's command line over SOM, and the one binary that serves and works.
//!
//! Exit codes: [`EXIT_CODES`] (0 success, 1 rejected, 2 usage or configuration, 3 unavailable,
//! 4 internal, 5 newer schema).

mod commands;
mod output;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use som_core::{Config, ErrorKind, OrderSystem};

/// Smart Order Management: orders, payments and notifications.
#[derive(Debug, Parser)]
#[command(name = "som", version, about, propagate_version = true)]
pub struct Cli {
    /// Database URL: sqlite://file.db (default sqlite://som.db), sqlite:///abs/path.db, postgres://…
    #[arg(long, env = "SOM_DATABASE_URL", global = true)]
    database_url: Option<String>,
    /// Print one JSON document on stdout instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Print nothing but errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// More logs on stderr (-v debug, -vv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Read environment variables from this file (default: .env in the working directory, if present).
    #[arg(long, global = true, value_name = "PATH")]
    config_env_file: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create or upgrade the database schema and print its version.
    Migrate,
    /// Manage user accounts.
    #[command(subcommand)]
    Users(commands::users::Users),
    /// Create, inspect, cancel and fulfil orders (fulfil, ship, deliver).
    #[command(subcommand)]
    Orders(commands::orders::Orders),
    /// Ask for, approve, reject and receive returns of delivered items.
    #[command(subcommand)]
    Returns(commands::returns::Returns),
    /// Initiate, confirm and inspect payments.
    #[command(subcommand)]
    Pay(commands::pay::Pay),
    /// Manage webhook endpoints and read their delivery log.
    #[command(subcommand)]
    Webhooks(commands::webhooks::Webhooks),
    /// Redeliver events to webhook endpoints.
    #[command(subcommand)]
    Events(commands::webhooks::Events),
    /// Inspect and retry notifications in the outbox.
    #[command(subcommand)]
    Notifications(commands::notifications::Notifications),
    /// Issue API tokens for scripting.
    #[command(subcommand)]
    Token(commands::token::Token),
    /// Run the HTTP server with the notification dispatcher in-process.
    Serve(commands::serve::Serve),
    /// Run the notification dispatcher alone.
    Worker(commands::worker::Worker),
    /// Copy the SQLite database to a new file while SOM keeps running.
    Backup(commands::backup::Backup),
    /// Check a running server's health endpoint (exit 0 when it answers 200).
    Healthcheck(commands::healthcheck::Healthcheck),
    /// Print the configuration reference or an example .env file.
    #[command(subcommand)]
    Config(commands::config::ConfigCmd),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write man pages (som.1 and one per subcommand) into a directory.
    Man {
        /// Where to write them (created if missing), e.g. /usr/local/share/man/man1.
        #[arg(long)]
        out_dir: std::path::PathBuf,
    },
}

/// A usage or configuration error: the command cannot run as given (exit code 2).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Refuses to run against a SQLite file that is not there, except for the commands that create
/// a database (`migrate`, `serve`, `worker`, and `users create` for the first account), and
/// names the missing directory when one of those cannot create it.
fn check_database_file(config: &som_core::Config, creates: bool) -> Result<(), UsageError> {
    let Some(path) = config.database_file() else { return Ok(()) };
    if path.is_dir() {
        return Err(UsageError(format!("{} is a directory, not a database file (SOM_DATABASE_URL)", path.display())));
    }
    if path.exists() {
        return Ok(());
    }
    if !creates {
        return Err(UsageError(format!("no SOM database at {} — run `som migrate` first", path.display())));
    }
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    if !parent.is_dir() {
        return Err(UsageError(format!(
            "cannot create the database at {}: the directory {} does not exist",
            path.display(),
            parent.display()
        )));
    }
    Ok(())
}

/// What a command needs: the system and how to print.
#[derive(Debug)]
pub struct Ctx {
    /// The order system, opened on the configured database.
    pub som: OrderSystem,
    /// Output mode.
    pub out: output::Output,
}

/// The env file named by `--config-env-file`, read before argument parsing so that its
/// variables can fill `env`-backed options.
fn load_env_file() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let named = args.iter().enumerate().find_map(|(i, a)| {
        a.strip_prefix("--config-env-file=")
            .map(str::to_owned)
            .or_else(|| (a == "--config-env-file").then(|| args.get(i + 1).cloned()).flatten())
    });
    match named {
        Some(path) => dotenvy::from_path(&path).map_err(|e| format!("reading {path}: {e}")),
        None => {
            if std::path::Path::new(".env").exists() {
                dotenvy::dotenv().map_err(|e| format!("reading .env: {e}"))?;
            }
            Ok(())
        }
    }
}

/// Logs on stderr: `SOM_LOG` (or -v/-q). Operator commands that are not long-running say
/// nothing unless something is wrong (warnings and errors) when `SOM_LOG` is not set.
fn init_logging(cli: &Cli, config: &Config, long_running: bool) {
    let filter = if cli.quiet {
        "error".to_owned()
    } else {
        match cli.verbose {
            0 if !long_running && std::env::var_os("SOM_LOG").is_none() => "warn".to_owned(),
            0 => config.log.clone(),
            1 => "debug".to_owned(),
            _ => "trace".to_owned(),
        }
    };
    let filter =
        tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if config.log_format == "json" {
        logs.json().try_init()
    } else {
        logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).try_init()
    };
}

/// Every exit status `som` uses, with its meaning (printed in the man page).
pub const EXIT_CODES: &[(u8, &str)] = &[
    (0, "success"),
    (
        1,
        "the operation was rejected: not found, conflict, invalid input (a value out of range, such as a zero quantity or a negative price)",
    ),
    (
        2,
        "usage or configuration error: bad arguments or SOM_* settings, a database URL or path that cannot be used (no database there, a directory, not a SQLite file), an address that cannot be listened on, a backup path that exists or whose directory does not",
    ),
    (
        3,
        "unavailable, try again later: the database server or payment provider does not answer, an attempt limit applies, or `som healthcheck` found no healthy server",
    ),
    (4, "internal error (details are logged)"),
    (5, "the database's schema is newer than this build: run the SOM version that migrated it, or a newer one"),
];

/// The EXIT STATUS and ENVIRONMENT sections of `som.1`, in roff, from [`EXIT_CODES`] and the
/// configuration's own list of variables.
fn man_sections() -> String {
    let escape = |s: &str| s.replace('\\', "\\e").replace('-', "\\-");
    let mut out = String::from(".SH \"EXIT STATUS\"\n");
    for (code, meaning) in EXIT_CODES {
        out.push_str(&format!(".TP\n\\fB{code}\\fR\n{}\n", escape(meaning)));
    }
    out.push_str(".SH ENVIRONMENT\n");
    for var in som_core::config::VARIABLES {
        let default = if var.default.is_empty() { String::new() } else { format!(" (default: {})", var.default) };
        out.push_str(&format!(".TP\n\\fB{}\\fR\n{}{}\n", escape(var.name), escape(var.help), escape(&default)));
    }
    out
}

fn exit_code(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::Unavailable | ErrorKind::IdempotencyInProgress | ErrorKind::TooManyAttempts => 3,
        ErrorKind::Internal => 4,
        ErrorKind::Incompatible => 5,
        _ => 1,
    }
}

/// jemalloc: measured side by side with the system allocator and mimalloc under the HTTP loads
/// (BENCHMARKS.md), it served about a fifth more reads and writes than the system allocator
/// within the same memory bounds; mimalloc was as fast but held 27 MB idle and 87 MB at peak.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    if let Err(e) = load_env_file() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        // Blocking work is SQLite calls (one writer, a bounded pool of readers) and bounded
        // password hashing: 16 threads cover them without hundreds of idle stacks and arenas.
        .max_blocking_threads(16)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::from(4);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let (code, message) = match (e.downcast_ref::<som_core::Error>(), e.downcast_ref::<UsageError>()) {
                (Some(core), _) => (exit_code(core.kind()), core.to_string()),
                (None, Some(usage)) => (2, usage.to_string()),
                (None, None) => (1, format!("{e:#}")),
            };
            eprintln!("error: {message}");
            ExitCode::from(code)
        }
    }
}

/// A configuration error (a `SOM_*` variable, a flag, the database URL) as a usage error:
/// exit code 2, whatever part of SOM found it.
fn configuration(e: som_core::Error) -> anyhow::Error {
    match e.kind() {
        ErrorKind::Validation => UsageError(format!("configuration: {e}")).into(),
        _ => e.into(),
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut config = Config::from_env().map_err(configuration)?;
    if let Some(url) = &cli.database_url {
        config.database_url.clone_from(url);
    }
    let long_running = matches!(cli.command, Command::Serve(_) | Command::Worker(_));
    init_logging(&cli, &config, long_running);
    for (unknown, nearest) in som_core::config::unknown_variables(std::env::vars().map(|(name, _)| name)) {
        match nearest {
            Some(known) => tracing::warn!("{unknown} is not a SOM setting and is ignored; did you mean {known}?"),
            None => tracing::warn!("{unknown} is not a SOM setting and is ignored (`som config reference` lists them)"),
        }
    }
    let out = output::Output { json: cli.json, quiet: cli.quiet };
    // Commands that need no database.
    let command = match cli.command {
        Command::Completions { .. } | Command::Man { .. } if cli.json => {
            return Err(
                UsageError("this command writes files in their own formats; --json does not apply".into()).into()
            );
        }
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "som", &mut script);
            // A reader that stops early (`| head`) is not an error.
            return match std::io::Write::write_all(&mut std::io::stdout().lock(), &script) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
                _ => Ok(()),
            };
        }
        Command::Man { out_dir } => {
            std::fs::create_dir_all(&out_dir)?;
            let command = <Cli as clap::CommandFactory>::command();
            clap_mangen::generate_to(command.clone(), &out_dir)?;
            let mut page = Vec::new();
            clap_mangen::Man::new(command).render(&mut page)?;
            page.extend_from_slice(man_sections().as_bytes());
            std::fs::write(out_dir.join("som.1"), page)?;
            out.note(&format!("man pages written to {}", out_dir.display()));
            return Ok(());
        }
        Command::Healthcheck(c) => return c.run(&config.listen, cli.json),
        Command::Config(c) => return c.run(cli.json),
        other => other,
    };
    let creates = matches!(
        command,
        Command::Migrate
            | Command::Serve(_)
            | Command::Worker(_)
            | Command::Users(commands::users::Users::Create { .. })
    );
    check_database_file(&config, creates)?;
    // Opening the database applies pending migrations; on a big database that takes a while.
    let progress = out.progress(&format!("opening {}", config.redacted_database_url()));
    let som = OrderSystem::builder().config(config).build().await;
    progress.finish_and_clear();
    let som = som.map_err(configuration)?;
    let ctx = Ctx { som, out };
    match command {
        Command::Migrate => {
            let version = ctx.som.schema_version().await?;
            let backend = ctx.som.backend();
            ctx.out.record(
                &serde_json::json!({ "backend": backend, "schema_version": version }),
                &[("backend", backend.to_owned()), ("schema version", version.to_string())],
            )
        }
        Command::Users(c) => c.run(&ctx).await,
        Command::Orders(c) => c.run(&ctx).await,
        Command::Pay(c) => c.run(&ctx).await,
        Command::Returns(c) => c.run(&ctx).await,
        Command::Webhooks(c) => c.run(&ctx).await,
        Command::Events(c) => c.run(&ctx).await,
        Command::Notifications(c) => c.run(&ctx).await,
        Command::Token(c) => c.run(&ctx).await,
        Command::Serve(c) => c.run(ctx).await,
        Command::Worker(c) => c.run(&ctx).await,
        Command::Backup(c) => c.run(&ctx).await,
        Command::Completions { .. } | Command::Man { .. } | Command::Healthcheck(_) | Command::Config(_) => Ok(()),
    }
}
