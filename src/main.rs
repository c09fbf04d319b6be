//! `smart-joiner`: single-machine runs and the admin commands.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use smart_joiner::accounts_config::AccountsConfig;
use smart_joiner::config::{PoolArg, RedisPrefixArg, Settings, SettingsArgs, not_blank};
use smart_joiner::domain::TargetStatus;
use smart_joiner::modes::wiring::{self, TelegramArgs, parse_duration};
use smart_joiner::ops::check::LeaseMode;
use smart_joiner::ops::commands::{self, accounts::CheckArgs, targets::RELEASE_NEEDS_YES};
use smart_joiner::ops::output::{Format, Report, render};
use smart_joiner::redact::Redactor;
use smart_joiner::store::{AdoptOptions, Store};
use smart_joiner::telemetry;

/// `println!` that treats a closed stdout (`smart-joiner status | head -1`) as the end of the
/// output, as a Unix filter does: the process exits quietly instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => { write_out(format_args!("{}\n", format_args!($($arg)*))) };
}

/// Writes to stdout. A reader that went away (EPIPE) ends the process with status 0, as
/// ripgrep and coreutils' filters do; every write of a command is committed before its output
/// is printed, so nothing is left half-done. Another write error is reported on stderr.
fn write_out(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_fmt(args).and_then(|()| out.flush()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => eprintln!("error: cannot write to standard output: {e}"),
    }
}

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Joins a pool of Telegram accounts to target groups, inside Telegram's limits"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
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
        #[command(flatten)]
        pool: PoolArg,
        /// A target whose next chance is further away than this goes back to `new` for the next run.
        #[arg(long, env = "RUN_MAX_WAIT", default_value = "20m", value_parser = parse_duration)]
        max_wait: Duration,
        #[command(flatten)]
        telegram: TelegramArgs,
    },
    /// See it work: a loopback Telegram DC, a few accounts and groups, the real join path.
    Demo {
        /// Serve the operator console on the demo's database (CONSOLE_ADDR) while the demo
        /// runs and after it ends, until Ctrl-C.
        #[arg(long)]
        console: bool,
        #[command(flatten)]
        console_args: smart_joiner::ops::console::ConsoleArgs,
    },
    /// Serve the operator console (web pages on CONSOLE_ADDR; CONSOLE_TOKEN to read,
    /// CONSOLE_ADMIN_TOKEN to act).
    Console {
        #[command(flatten)]
        args: smart_joiner::ops::console::ConsoleArgs,
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
    /// Accounts, targets per niche and status, and groups ready for posting.
    Status {
        /// Only accounts of this pool.
        #[arg(long)]
        pool: Option<String>,
        /// Most ready-for-posting groups listed.
        #[arg(long, default_value_t = 50)]
        ready_limit: u64,
    },
    /// Serve, for every pool, what autoscaling and the alert rules read (due jobs, workable
    /// and busy accounts, accounts by status, queue depth) on /metrics and /scaling/POOL, until
    /// SIGTERM. One always-on replica per deployment (docs/operations.md).
    Exporter {
        /// Port of /healthz, /readyz, /metrics and /scaling/POOL (all interfaces); 0 picks one.
        #[arg(long, env = "METRICS_PORT", default_value_t = 9090)]
        port: u16,
        /// Pools reported even while no account is in them (comma-separated); every pool of
        /// the database is reported anyway.
        #[arg(long, env = "EXPORTER_POOLS", value_delimiter = ',', value_parser = not_blank)]
        pools: Vec<String>,
        #[command(flatten)]
        redis_prefix: RedisPrefixArg,
        /// How often the gauges are refreshed for OTLP; a scrape always refreshes them.
        #[arg(long, env = "METRICS_SAMPLE_INTERVAL", default_value = "15s", value_parser = parse_duration)]
        sample_interval: Duration,
    },
}

#[derive(Debug, Subcommand)]
enum MigrateAction {
    /// Apply every pending migration.
    Up,
    /// Roll back the last `n` applied migrations. Refuses while a table the rollback would
    /// drop holds rows (rolling back the first migration drops every table), unless --yes.
    Down {
        #[arg(default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        n: u32,
        /// Drop those tables anyway: every row in them is lost.
        #[arg(long)]
        yes: bool,
    },
    /// List migrations and whether they are applied.
    Status,
    /// Take over a SmartJoiner database in place: its accounts and targets (every row,
    /// status, binding, timestamp and column) become smart-joiner's, in one transaction.
    /// `migrate down` of the first migration gives them back in their original shape.
    Adopt {
        /// Print every change and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// The column of `targets` holding the group (`@username` or a link); detected among
        /// the usual names when not given.
        #[arg(long, value_parser = not_blank)]
        group_column: Option<String>,
        /// The column of `accounts` holding the session name that keys accounts_config.json;
        /// detected among the usual names when not given.
        #[arg(long, value_parser = not_blank)]
        session_column: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum AccountsAction {
    /// Make the database know every account of accounts_config.json (one transaction); report
    /// what was added, moved to the pool, and database rows the file lacks.
    Sync {
        #[command(flatten)]
        pool: PoolArg,
        /// Also move accounts of the file that are in another pool to this one (each move is
        /// reported). Without it they stay where they are.
        #[arg(long = "move")]
        move_existing: bool,
    },
    /// Turn a folder of Telethon `.session` files (with their optional `.json` companions:
    /// app_id, app_hash, proxy) into an accounts_config.json. Session files are only read;
    /// every file imports or nothing is written.
    Import {
        /// The folder holding NAME.session (and NAME.json) files.
        #[arg(long = "from", value_name = "DIR")]
        from: PathBuf,
        /// The accounts file to write (default: ACCOUNTS_CONFIG).
        #[arg(long)]
        output: Option<PathBuf>,
        /// Replace the output file when it exists.
        #[arg(long)]
        force: bool,
        /// api_id of the entries whose .json lacks app_id.
        #[arg(long)]
        api_id: Option<i32>,
        /// api_hash of the entries whose .json lacks app_hash.
        #[arg(long, env = "IMPORT_API_HASH", hide_env_values = true)]
        api_hash: Option<String>,
    },
    /// List accounts and their state.
    List {
        /// Only accounts of this pool.
        #[arg(long)]
        pool: Option<String>,
    },
    /// Connect each account once, read whether its session is authorised and what Telegram
    /// says about it (Premium, channel limit, freeze; help.getAppConfig), write that back and
    /// report what changed. Takes the account's lease and hold first, skips accounts in a
    /// FloodWait or cooldown, and sends Telegram nothing else.
    Check {
        /// Only accounts of this pool.
        #[arg(long)]
        pool: Option<String>,
        /// Only these accounts (session names; repeatable).
        #[arg(long = "account", value_name = "SESSION_NAME")]
        accounts: Vec<String>,
        /// Where leases are taken: `redis` (shared with the workers), `local` (only this
        /// process: use it when nothing else runs), or `auto` (redis when REDIS_URL answers;
        /// local only when nothing listens there or the host is unknown, never when Redis
        /// answers with an error).
        #[arg(long, env = "CHECK_LEASES", default_value = "auto")]
        leases: LeaseMode,
        #[command(flatten)]
        redis_prefix: RedisPrefixArg,
        #[command(flatten)]
        telegram: TelegramArgs,
    },
    /// Pause an account: it is never picked until resumed; a join under way finishes first.
    /// Refused for an account in a worse status (banned, ...). Audited as cli:<user>.
    Pause {
        session_name: String,
        /// Why (kept as the status reason and in the audit log).
        #[arg(long)]
        note: Option<String>,
    },
    /// Resume a paused account (only a pause is lifted; a rest it has still runs). Audited.
    Resume { session_name: String },
    /// Set an account's own active hours, the daily windows in which it may join:
    /// "Europe/Kyiv 09:00-13:00,14:00-22:00 +30m" (an IANA time zone, HH:MM-HH:MM windows, and
    /// optionally how much later each day's start may be, per account). --clear gives it the
    /// pool's (ACTIVE_HOURS) again. Audited as cli:<user>.
    Hours {
        session_name: String,
        #[arg(required_unless_present = "clear", conflicts_with = "clear", value_parser = active_hours)]
        hours: Option<smart_joiner::domain::ActiveHours>,
        #[arg(long)]
        clear: bool,
    },
}

#[derive(Debug, Subcommand)]
enum TargetsAction {
    /// Give an `error` target another chance (back to `new`). Audited as cli:<user>.
    Retry { id: i64 },
    /// Release a `joining` target pinned to an account after unanswered joins (back to `new`,
    /// unclaimed), once you checked the account is not a member. Audited as cli:<user>.
    Release {
        id: i64,
        /// Confirm that the pinned account is not a member of the group.
        #[arg(long)]
        yes: bool,
    },
    /// Import targets from a file: one link per line, or a CSV whose first column is the link.
    /// All or nothing: a file with an invalid line imports nothing unless --skip-invalid.
    /// A folder link (t.me/addlist/SLUG) is expanded by one eligible account of --pool (one
    /// chatlists.checkChatlistInvite, paced like any request; never the bulk join): each chat
    /// with a username becomes a target recorded with its folder; chats without one are listed.
    Import {
        file: PathBuf,
        #[arg(long, value_parser = not_blank)]
        niche: String,
        /// Import the valid lines even when some lines are invalid.
        #[arg(long)]
        skip_invalid: bool,
        /// The pool whose accounts expand folder links.
        #[command(flatten)]
        pool: PoolArg,
        /// Where the expanding account's lease is taken (as for `accounts check`).
        #[arg(long, env = "CHECK_LEASES", default_value = "auto")]
        leases: LeaseMode,
        #[command(flatten)]
        redis_prefix: RedisPrefixArg,
        #[command(flatten)]
        telegram: TelegramArgs,
    },
    /// List targets.
    List {
        #[arg(long)]
        niche: Option<String>,
        /// Only targets with this status (new, queued, joining, joined, requested, error,
        /// banned).
        #[arg(long, value_parser = target_status)]
        status: Option<TargetStatus>,
    },
}

fn active_hours(s: &str) -> Result<smart_joiner::domain::ActiveHours, String> {
    smart_joiner::domain::ActiveHours::parse(s).map_err(|e| e.to_string())
}

fn target_status(s: &str) -> Result<TargetStatus, String> {
    TargetStatus::parse(s).ok_or_else(|| {
        let all: Vec<&str> = TargetStatus::ALL.iter().map(|s| s.as_str()).collect();
        format!("unknown target status {s:?}; one of: {}", all.join(", "))
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut redactor = Redactor::default();
    match run(cli, &mut redactor).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<Interrupted>() => {
            eprintln!("{e}");
            // 128 + SIGINT, what shells report for a command stopped by Ctrl-C.
            ExitCode::from(130)
        }
        Err(e) => {
            // Every error is built without secrets; scrubbing the final text as well keeps a
            // mistake in some error path from printing one.
            eprintln!("error: {}", redactor.scrub(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

/// `run` or `demo` stopped by SIGINT or SIGTERM after ending its joins in flight.
#[derive(Debug, thiserror::Error)]
#[error("interrupted: joins in flight were ended and recorded; the rest waits for the next run")]
struct Interrupted;

/// A token cancelled on the first SIGINT or SIGTERM.
fn stop_on_signal() -> tokio_util::sync::CancellationToken {
    let stop = tokio_util::sync::CancellationToken::new();
    let cancel = stop.clone();
    tokio::spawn(async move {
        if wiring::shutdown_signal().await.is_ok() {
            tracing::warn!("stop requested: ending the joins in flight, starting no new one");
            cancel.cancel();
        }
    });
    stop
}

/// Prints a command's report: `--json`, else text for a terminal or a pipe.
fn print(report: &impl Report, format: Format) {
    write_out(format_args!("{}", render(report, format)));
}

async fn run(cli: Cli, redactor: &mut Redactor) -> anyhow::Result<()> {
    let settings = cli.settings.into_settings()?;
    *redactor = settings.redactor();
    let mut logs = telemetry::LogSettings::from_settings(&settings);
    if !matches!(
        cli.command,
        Command::Run { .. }
            | Command::Demo { .. }
            | Command::Console { .. }
            | Command::Exporter { .. }
    ) {
        logs = logs.for_admin_command();
    }
    let telemetry = telemetry::init(&logs, "smart-joiner")?;
    let format = Format::detect(cli.json);
    let result = match cli.command {
        Command::Run { niche, batch_size, pool, max_wait, telegram } => {
            run_batch(&settings, &niche, batch_size, &pool.name, max_wait, &telegram).await
        }
        Command::Demo { console, console_args } => demo(console.then_some(console_args)).await,
        Command::Console { args } => console(&settings, args).await,
        Command::Migrate { action } => migrate(&settings, action, format).await,
        Command::Accounts { action } => accounts(&settings, action, format).await,
        Command::Targets { action } => targets(&settings, action, format).await,
        Command::Status { pool, ready_limit } => {
            let store = wiring::open_database(&settings).await?;
            let report =
                commands::overview::status(&store, &settings, pool.as_deref(), ready_limit).await;
            finish(store, report).await.map(|r| print(&r, format))
        }
        Command::Exporter { port, pools, redis_prefix, sample_interval } => {
            let metrics = telemetry.metrics();
            exporter(&settings, port, pools, redis_prefix.value, sample_interval, metrics).await
        }
    };
    telemetry.shutdown().await;
    result
}

/// Ends a command that used `store`: the store is closed (on SQLite its WAL is checkpointed
/// into the database file, so a copy of that file is a complete backup) whether the command
/// succeeded or not. A failed close is reported unless the command failed first.
async fn finish<T>(store: Store, result: anyhow::Result<T>) -> anyhow::Result<T> {
    let closed = store.close().await;
    let value = result?;
    closed.context("cannot close the database cleanly")?;
    Ok(value)
}

async fn migrate(settings: &Settings, action: MigrateAction, format: Format) -> anyhow::Result<()> {
    use commands::migrate;
    // The one command that opens the database whatever its schema.
    let store = Store::connect(settings.database_url.expose()).await?;
    let printed = match action {
        MigrateAction::Up => migrate::up(&store).await.map(|r| print(&r, format)),
        MigrateAction::Down { n, yes } => {
            migrate::down(&store, n, yes).await.map(|r| print(&r, format))
        }
        MigrateAction::Status => migrate::status(&store).await.map(|r| print(&r, format)),
        MigrateAction::Adopt { dry_run, group_column, session_column } => {
            let opts = AdoptOptions { group_column, session_column };
            migrate::adopt(&store, &opts, dry_run).await.map(|r| print(&r, format))
        }
    };
    finish(store, printed).await
}

async fn accounts(
    settings: &Settings,
    action: AccountsAction,
    format: Format,
) -> anyhow::Result<()> {
    use commands::accounts;
    if let AccountsAction::Import { from, output, force, api_id, api_hash } = action {
        // A file operation: no database.
        let defaults = smart_joiner::ops::accounts_import::ImportDefaults { api_id, api_hash };
        let output = output.unwrap_or_else(|| settings.accounts_config.clone());
        print(&accounts::import(&from, &output, force, &defaults)?, format);
        return Ok(());
    }
    let store = wiring::open_database(settings).await?;
    let printed = match action {
        AccountsAction::Import { .. } => Ok(()),
        AccountsAction::Sync { pool, move_existing } => {
            accounts::sync(&store, &settings.accounts_config, &pool.name, move_existing)
                .await
                .map(|r| print(&r, format))
        }
        AccountsAction::List { pool } => {
            accounts::list(&store, pool.as_deref()).await.map(|r| print(&r, format))
        }
        AccountsAction::Check { pool, accounts: only, leases, redis_prefix, telegram } => {
            match wiring::telegram(&telegram, settings) {
                Ok(tg) => {
                    let args = CheckArgs {
                        pool,
                        accounts: only,
                        leases,
                        redis_prefix: redis_prefix.value,
                    };
                    let said = |leases: &str| {
                        if format != Format::Json {
                            eprintln!("leases: {leases}");
                        }
                    };
                    accounts::check(&store, settings, tg.as_ref(), args, said)
                        .await
                        .map(|r| print(&r, format))
                }
                Err(e) => Err(e.into()),
            }
        }
        AccountsAction::Pause { session_name, note } => {
            accounts::pause(&store, &session_name, note.as_deref()).await.map(|r| print(&r, format))
        }
        AccountsAction::Resume { session_name } => {
            accounts::resume(&store, &session_name).await.map(|r| print(&r, format))
        }
        AccountsAction::Hours { session_name, hours, clear: _ } => {
            accounts::hours(&store, &session_name, hours.as_ref()).await.map(|r| print(&r, format))
        }
    };
    finish(store, printed).await
}

async fn targets(settings: &Settings, action: TargetsAction, format: Format) -> anyhow::Result<()> {
    use commands::targets;
    let mut read = None;
    match &action {
        TargetsAction::Release { yes: false, .. } => anyhow::bail!(RELEASE_NEEDS_YES),
        TargetsAction::Import { file, skip_invalid, .. } => {
            // The file is checked before the database is opened.
            let file_read = targets::read(file)?;
            if file_read.has_invalid_lines() && (!skip_invalid || format != Format::Json) {
                for line in &file_read.rejected_lines {
                    eprintln!("{line}");
                }
            }
            if file_read.has_invalid_lines() && !skip_invalid {
                return Err(file_read.refusal(file));
            }
            read = Some(file_read);
        }
        _ => {}
    }
    let store = wiring::open_database(settings).await?;
    let printed = match action {
        TargetsAction::Retry { id } => targets::retry(&store, id).await.map(|r| print(&r, format)),
        TargetsAction::Release { id, .. } => {
            targets::release(&store, id).await.map(|r| print(&r, format))
        }
        TargetsAction::Import { niche, pool, leases, redis_prefix, telegram, .. } => match &read {
            Some(read) => {
                let folders = FolderArgs { pool, leases, redis_prefix, telegram };
                import_targets(&store, settings, read, &niche, folders, format).await
            }
            None => Ok(()),
        },
        TargetsAction::List { niche, status } => {
            targets::list(&store, niche.as_deref(), status).await.map(|r| print(&r, format))
        }
    };
    finish(store, printed).await
}

struct FolderArgs {
    pool: PoolArg,
    leases: LeaseMode,
    redis_prefix: RedisPrefixArg,
    telegram: TelegramArgs,
}

/// `targets import`: the file's links, then its folder links expanded by one account each; the
/// command fails after its report when a folder could not be expanded.
async fn import_targets(
    store: &Store,
    settings: &Settings,
    read: &commands::targets::ReadFile,
    niche: &str,
    folders: FolderArgs,
    format: Format,
) -> anyhow::Result<()> {
    let mut report = commands::targets::import(store, read, niche).await?;
    let links = read.folders();
    if !links.is_empty() {
        let accounts = AccountsConfig::load(&settings.accounts_config)?;
        let tg = wiring::telegram(&folders.telegram, settings)?;
        let locks = smart_joiner::ops::check::check_locks(
            folders.leases,
            settings,
            &folders.redis_prefix.value,
        )
        .await?;
        let service = wiring::join_service(
            settings,
            store.clone(),
            locks.shared(),
            tg,
            accounts,
            commands::cli_actor(),
        );
        report.folders =
            commands::targets::expand_folders(&service, &folders.pool.name, &links, niche).await?;
    }
    print(&report, format);
    match report.unexpanded() {
        0 => Ok(()),
        n => anyhow::bail!("{n} folder link(s) not expanded; import the file again later"),
    }
}

async fn run_batch(
    settings: &Settings,
    niche: &str,
    batch_size: u64,
    pool: &str,
    max_wait: Duration,
    telegram: &TelegramArgs,
) -> anyhow::Result<()> {
    // The same batch the Python package's run_batch runs.
    let report = smart_joiner::modes::batch::run_batch(
        settings,
        niche,
        batch_size,
        pool,
        max_wait,
        telegram,
        stop_on_signal(),
    )
    .await?;
    outln!("{report}");
    if report.interrupted {
        return Err(Interrupted.into());
    }
    Ok(())
}

async fn demo(console: Option<smart_joiner::ops::console::ConsoleArgs>) -> anyhow::Result<()> {
    let progress = &mut |line: &str| tracing::info!("{line}");
    let Some(args) = console else {
        let report = smart_joiner::modes::demo::run_until(progress, stop_on_signal()).await?;
        return demo_end(report);
    };
    let auth = smart_joiner::ops::console::auth_from_env()?;
    let listener = smart_joiner::ops::console::bind(args.addr, &auth).await?;
    let (tx, rx) = tokio::sync::oneshot::channel::<smart_joiner::modes::demo::DemoDb>();
    let stop = stop_on_signal();
    let done = stop.clone();
    let server = tokio::spawn(async move {
        let Ok(db) = rx.await else { return (Ok(()), None) };
        let limits = smart_joiner::store::Limits { daily_join_cap: 20, channel_limit: 500 };
        let c = smart_joiner::ops::console::Console { store: db.store, auth, limits, queues: None };
        // The directory is handed back, so it outlives the demo's last write.
        (smart_joiner::ops::console::serve(listener, c, done.cancelled_owned()).await, Some(db.dir))
    });
    let report = smart_joiner::modes::demo::run_observed(progress, stop.clone(), Some(tx)).await;
    let result = report.map_err(anyhow::Error::from).and_then(demo_end);
    if !stop.is_cancelled() {
        tracing::info!("the demo ended; the console stays up on its database until Ctrl-C");
        stop.cancelled().await;
    }
    let (served, dir) = server.await.context("the console task failed")?;
    drop(dir);
    served?;
    result
}

fn demo_end(report: smart_joiner::modes::demo::DemoReport) -> anyhow::Result<()> {
    write_out(format_args!("{}", report.render()));
    if report.interrupted {
        return Err(Interrupted.into());
    }
    if report.unsettled() > 0 || !report.violations.is_empty() {
        anyhow::bail!("the demo did not settle cleanly");
    }
    Ok(())
}

async fn console(
    settings: &Settings,
    args: smart_joiner::ops::console::ConsoleArgs,
) -> anyhow::Result<()> {
    let auth = smart_joiner::ops::console::auth_from_env()?;
    let listener = smart_joiner::ops::console::bind(args.addr, &auth).await?;
    let store = wiring::open_database(settings).await?;
    let limits = smart_joiner::store::Limits {
        daily_join_cap: settings.daily_join_cap,
        channel_limit: settings.channel_limit,
    };
    let queues = match smart_joiner::ops::console::queues(&args, settings.redis_url.expose()).await
    {
        Ok(queues) => queues,
        Err(e) => return finish(store, Err(e.into())).await,
    };
    let c = smart_joiner::ops::console::Console { store: store.clone(), auth, limits, queues };
    let stop = stop_on_signal();
    let served = smart_joiner::ops::console::serve(listener, c, stop.cancelled_owned()).await;
    finish(store, served.context("the console stopped")).await
}

async fn exporter(
    settings: &Settings,
    port: u16,
    pools: Vec<String>,
    redis_prefix: String,
    sample_interval: Duration,
    metrics: &'static smart_joiner::telemetry::metrics::Metrics,
) -> anyhow::Result<()> {
    use smart_joiner::ops::exporter::{self, Exporter};
    let redis = wiring::RedisArgs {
        prefix: RedisPrefixArg { value: redis_prefix.clone() },
        pool: PoolArg { name: smart_joiner::config::DEFAULT_POOL.to_owned() },
        queue_heartbeat: Duration::from_secs(10),
    };
    let wiring::Backends { store, locks, queue } =
        wiring::connect_backends(settings, &redis).await?;
    let listener = smart_joiner::ops::health::bind(port)
        .await
        .with_context(|| format!("cannot listen on the exporter port {port}"))?;
    let exporter = Exporter {
        store: store.clone(),
        queue,
        locks,
        redis_prefix,
        pools,
        limits: smart_joiner::store::Limits {
            daily_join_cap: settings.daily_join_cap,
            channel_limit: settings.channel_limit,
        },
        active_hours: settings.active_hours.clone(),
        metrics,
    };
    let sampler = tokio::spawn(exporter.clone().sample_every(sample_interval));
    let stop = async {
        let _ = wiring::shutdown_signal().await;
    };
    let served = exporter::serve(listener, exporter, stop).await;
    sampler.abort();
    finish(store, served.context("the exporter's port failed")).await
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn every_setting_has_a_flag_a_variable_help_text_and_a_readme_row() {
        let readme = include_str!("../README.md");
        let problems = smart_joiner::config::undocumented_settings(&super::Cli::command(), readme);
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }
}
