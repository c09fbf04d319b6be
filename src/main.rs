//! `smart-joiner`: single-machine runs and the admin commands.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use smart_joiner::accounts_config::AccountsConfig;
use smart_joiner::admin;
use smart_joiner::app::{self, TelegramArgs, parse_duration};
use smart_joiner::config::{Settings, SettingsArgs};
use smart_joiner::lease::LocalLocks;
use smart_joiner::runner::SmartJoiner;
use smart_joiner::store::Store;
use smart_joiner::telemetry;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Joins a pool of Telegram accounts to target groups, inside Telegram's limits"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    settings: SettingsArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one batch on this machine (SmartJoiner's mode): `run ukraine_cars 5`.
    Run {
        /// Niche of the targets to join.
        #[arg(default_value = "ukraine_cars")]
        niche: String,
        /// How many new targets this run takes.
        #[arg(default_value_t = 5)]
        batch_size: u64,
        /// Account pool to use.
        #[arg(long, env = "POOL", default_value = "default")]
        pool: String,
        /// A target whose next chance is further away than this goes back to `new` for the next run.
        #[arg(long, env = "RUN_MAX_WAIT", default_value = "20m", value_parser = parse_duration)]
        max_wait: Duration,
        #[command(flatten)]
        telegram: TelegramArgs,
    },
    /// Apply or inspect database migrations.
    Migrate {
        #[command(subcommand)]
        action: MigrateAction,
    },
    /// Manage accounts.
    Accounts {
        #[command(subcommand)]
        action: AccountsAction,
    },
    /// Manage targets.
    Targets {
        #[command(subcommand)]
        action: TargetsAction,
    },
}

#[derive(Debug, Subcommand)]
enum MigrateAction {
    /// Apply every pending migration.
    Up,
    /// Roll back the last `n` migrations.
    Down {
        #[arg(default_value_t = 1)]
        n: u32,
    },
    /// List migrations and whether they are applied.
    Status,
}

#[derive(Debug, Subcommand)]
enum AccountsAction {
    /// Add the accounts of accounts_config.json that the database lacks.
    Sync {
        /// Pool new accounts join.
        #[arg(long, env = "POOL", default_value = "default")]
        pool: String,
    },
    /// List accounts and their state.
    List,
}

#[derive(Debug, Subcommand)]
enum TargetsAction {
    /// Import targets from a file: one link per line, or a CSV whose first column is the link.
    Import {
        file: PathBuf,
        #[arg(long)]
        niche: String,
        /// Import the valid lines even when some lines are invalid.
        #[arg(long)]
        skip_invalid: bool,
    },
    /// List targets.
    List {
        #[arg(long)]
        niche: Option<String>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = cli.settings.into_settings()?;
    telemetry::init(&telemetry::LogSettings::from_settings(&settings))
        .context("cannot open the log file")?;
    match cli.command {
        Command::Run { niche, batch_size, pool, max_wait, telegram } => {
            run_batch(&settings, &niche, batch_size, &pool, max_wait, &telegram).await
        }
        Command::Migrate { action } => migrate(&settings, action).await,
        Command::Accounts { action } => accounts(&settings, action).await,
        Command::Targets { action } => targets(&settings, action).await,
    }
}

async fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    let store =
        Store::connect(settings.database_url.expose()).await.context("cannot open the database")?;
    let pending = store.pending_migrations().await?;
    if !pending.is_empty() {
        bail!(
            "the database has {} pending migrations: run `smart-joiner migrate up` first",
            pending.len()
        );
    }
    Ok(store)
}

async fn run_batch(
    settings: &Settings,
    niche: &str,
    batch_size: u64,
    pool: &str,
    max_wait: Duration,
    telegram: &TelegramArgs,
) -> anyhow::Result<()> {
    let accounts = AccountsConfig::load(&settings.accounts_config)?;
    let store = open_store(settings).await?;
    let names: Vec<String> = accounts.iter().map(|a| a.session_name.clone()).collect();
    store.sync_accounts(&names, pool).await?;
    let telegram = app::telegram(telegram, settings)?;
    let service = app::join_service(
        settings,
        store,
        Arc::new(LocalLocks::default()),
        telegram,
        accounts,
        "run".to_owned(),
    );
    let report = SmartJoiner::new(service, pool, max_wait).run_batch(niche, batch_size).await?;
    println!("{report}");
    Ok(())
}

async fn migrate(settings: &Settings, action: MigrateAction) -> anyhow::Result<()> {
    let store =
        Store::connect(settings.database_url.expose()).await.context("cannot open the database")?;
    match action {
        MigrateAction::Up => {
            store.migrate().await?;
            println!("migrations applied");
        }
        MigrateAction::Down { n } => {
            store.migrate_down(n).await?;
            println!("rolled back {n} migration(s)");
        }
        MigrateAction::Status => {
            for (name, applied) in store.migration_status().await? {
                println!("{name}\t{}", if applied { "applied" } else { "pending" });
            }
        }
    }
    Ok(())
}

async fn accounts(settings: &Settings, action: AccountsAction) -> anyhow::Result<()> {
    let store = open_store(settings).await?;
    match action {
        AccountsAction::Sync { pool } => {
            let accounts = AccountsConfig::load(&settings.accounts_config)?;
            let names: Vec<String> = accounts.iter().map(|a| a.session_name.clone()).collect();
            let report = store.sync_accounts(&names, &pool).await?;
            println!(
                "added {}, moved to pool {pool}: {}, in the database but not in the file: {}",
                report.added.len(),
                report.moved_pool.len(),
                report.missing_from_config.join(", ")
            );
        }
        AccountsAction::List => {
            for a in store.accounts(None).await? {
                let next = a
                    .next_allowed_action_time
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_else(|| "-".into());
                println!("{}\t{}\t{}\t{}", a.session_name, a.pool, a.status, next);
            }
        }
    }
    Ok(())
}

async fn targets(settings: &Settings, action: TargetsAction) -> anyhow::Result<()> {
    let store = open_store(settings).await?;
    match action {
        TargetsAction::Import { file, niche, skip_invalid } => {
            let parsed = admin::read_targets_file(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            for (line, text, why) in &parsed.rejected {
                eprintln!("{}:{line}: rejected {text:?}: {why}", file.display());
            }
            if !parsed.rejected.is_empty() && !skip_invalid {
                bail!(
                    "{} invalid line(s) in {}: nothing imported (fix them or pass --skip-invalid)",
                    parsed.rejected.len(),
                    file.display()
                );
            }
            let links: Vec<_> = parsed.links.into_iter().map(|(_, l)| l).collect();
            let report = store.import_targets(&links, &niche).await?;
            println!(
                "accepted {}, duplicates {} (in file {}), rejected {}",
                report.inserted,
                report.duplicates + parsed.duplicate_lines.len() as u64,
                parsed.duplicate_lines.len(),
                parsed.rejected.len()
            );
        }
        TargetsAction::List { niche } => {
            for t in store.targets(niche.as_deref(), None).await? {
                println!("{}\t{}\t{}\t{}", t.id, t.link, t.niche, t.status);
            }
        }
    }
    Ok(())
}
