//! `smart-joiner`: single-machine runs and the admin commands.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use serde_json::json;
use smart_joiner::accounts_config::AccountsConfig;
use smart_joiner::admin::{self, CheckOptions, LeaseMode};
use smart_joiner::app::{self, TelegramArgs, parse_duration};
use smart_joiner::config::{Settings, SettingsArgs};
use smart_joiner::domain::TargetStatus;
use smart_joiner::redact::Redactor;
use smart_joiner::status::{Cell, Style, Table, account_color, target_color, when};
use smart_joiner::store::{Store, StoreError};
use smart_joiner::telemetry;

/// `println!` that treats a closed stdout (`smart-joiner status | head -1`) as the end of the
/// output, as a Unix filter does: the process exits quietly instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => { write_out(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `print!` with the same rule as [`outln!`].
macro_rules! out {
    ($($arg:tt)*) => { write_out(format_args!($($arg)*)) };
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
        /// Account pool to use.
        #[arg(long, env = "POOL", default_value = "default")]
        pool: String,
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
        console_args: smart_joiner::console::ConsoleArgs,
    },
    /// Serve the operator console (web pages on CONSOLE_ADDR; CONSOLE_TOKEN to read,
    /// CONSOLE_ADMIN_TOKEN to act).
    Console {
        #[command(flatten)]
        args: smart_joiner::console::ConsoleArgs,
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
        #[arg(long, env = "EXPORTER_POOLS", value_delimiter = ',', value_parser = non_empty)]
        pools: Vec<String>,
        /// Prefix of the Redis keys of the deployment (as the workers').
        #[arg(long, env = "REDIS_PREFIX", default_value = "smart_joiner:")]
        redis_prefix: String,
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
        #[arg(long, value_parser = non_empty)]
        group_column: Option<String>,
        /// The column of `accounts` holding the session name that keys accounts_config.json;
        /// detected among the usual names when not given.
        #[arg(long, value_parser = non_empty)]
        session_column: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum AccountsAction {
    /// Make the database know every account of accounts_config.json (one transaction); report
    /// what was added, moved to the pool, and database rows the file lacks.
    Sync {
        /// Pool new accounts join.
        #[arg(long, env = "POOL", default_value = "default", value_parser = non_empty)]
        pool: String,
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
        /// Prefix of the Redis keys of the deployment (as the workers').
        #[arg(long, env = "REDIS_PREFIX", default_value = "smart_joiner:")]
        redis_prefix: String,
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
        #[arg(long, value_parser = non_empty)]
        niche: String,
        /// Import the valid lines even when some lines are invalid.
        #[arg(long)]
        skip_invalid: bool,
        /// The pool whose accounts expand folder links.
        #[arg(long, default_value = "default")]
        pool: String,
        /// Where the expanding account's lease is taken (as for `accounts check`).
        #[arg(long, env = "CHECK_LEASES", default_value = "auto")]
        leases: LeaseMode,
        #[arg(long, env = "REDIS_PREFIX", default_value = "smart_joiner:")]
        redis_prefix: String,
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

fn non_empty(s: &str) -> Result<String, String> {
    let t = s.trim();
    if t.is_empty() { Err("must not be empty".to_owned()) } else { Ok(t.to_owned()) }
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
        if app::shutdown_signal().await.is_ok() {
            tracing::warn!("stop requested: ending the joins in flight, starting no new one");
            cancel.cancel();
        }
    });
    stop
}

/// How a command prints.
#[derive(Debug, Clone, Copy)]
struct Out {
    json: bool,
    style: Style,
}

impl Out {
    fn json(&self, value: serde_json::Value) {
        outln!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
    }
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
    let out = Out { json: cli.json, style: Style::detect() };
    let result = match cli.command {
        Command::Run { niche, batch_size, pool, max_wait, telegram } => {
            run_batch(&settings, &niche, batch_size, &pool, max_wait, &telegram).await
        }
        Command::Demo { console, console_args } => demo(console.then_some(console_args)).await,
        Command::Console { args } => console(&settings, args).await,
        Command::Migrate { action } => migrate(&settings, action, out).await,
        Command::Accounts { action } => accounts(&settings, action, out).await,
        Command::Targets { action } => targets(&settings, action, out).await,
        Command::Status { pool, ready_limit } => status(&settings, pool, ready_limit, out).await,
        Command::Exporter { port, pools, redis_prefix, sample_interval } => {
            let metrics = telemetry.metrics();
            exporter(&settings, port, pools, redis_prefix, sample_interval, metrics).await
        }
    };
    telemetry.shutdown().await;
    result
}

async fn exporter(
    settings: &Settings,
    port: u16,
    pools: Vec<String>,
    redis_prefix: String,
    sample_interval: Duration,
    metrics: &'static smart_joiner::metrics::Metrics,
) -> anyhow::Result<()> {
    use smart_joiner::exporter::{self, Exporter};
    let redis = app::RedisArgs {
        redis_prefix: redis_prefix.clone(),
        pool: "default".to_owned(),
        queue_heartbeat: Duration::from_secs(10),
    };
    let app::Backends { store, locks, queue } = app::connect_backends(settings, &redis).await?;
    let listener = smart_joiner::health::bind(port)
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
        metrics,
    };
    let sampler = tokio::spawn(exporter.clone().sample_every(sample_interval));
    let stop = async {
        let _ = app::shutdown_signal().await;
    };
    let served = exporter::serve(listener, exporter, stop).await;
    sampler.abort();
    finish(store, served.context("the exporter's port failed")).await
}

async fn demo(console: Option<smart_joiner::console::ConsoleArgs>) -> anyhow::Result<()> {
    let progress = &mut |line: &str| tracing::info!("{line}");
    let Some(args) = console else {
        let report = smart_joiner::demo::run_until(progress, stop_on_signal()).await?;
        return demo_end(report);
    };
    let auth = smart_joiner::console::auth_from_env()?;
    let listener = smart_joiner::console::bind(args.addr, &auth).await?;
    let (tx, rx) = tokio::sync::oneshot::channel::<smart_joiner::demo::DemoDb>();
    let stop = stop_on_signal();
    let done = stop.clone();
    let server = tokio::spawn(async move {
        let Ok(db) = rx.await else { return (Ok(()), None) };
        let limits = smart_joiner::store::Limits { daily_join_cap: 20, channel_limit: 500 };
        let c = smart_joiner::console::Console { store: db.store, auth, limits, queues: None };
        // The directory is handed back, so it outlives the demo's last write.
        (smart_joiner::console::serve(listener, c, done.cancelled_owned()).await, Some(db.dir))
    });
    let report = smart_joiner::demo::run_observed(progress, stop.clone(), Some(tx)).await;
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

fn demo_end(report: smart_joiner::demo::DemoReport) -> anyhow::Result<()> {
    out!("{}", report.render());
    if report.interrupted {
        return Err(Interrupted.into());
    }
    if report.unsettled() > 0 || !report.violations.is_empty() {
        bail!("the demo did not settle cleanly");
    }
    Ok(())
}

/// Opens the database for a command that needs the current schema.
async fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    let store = Store::connect(settings.database_url.expose()).await?;
    let pending = match store.pending_migrations().await {
        Ok(pending) => pending,
        Err(e) => return finish(store, Err(e.into())).await,
    };
    if !pending.is_empty() {
        let n = pending.len();
        let result = Err(anyhow::anyhow!(
            "the database has {n} pending migrations: run `smart-joiner migrate up` first"
        ));
        return finish(store, result).await;
    }
    Ok(store)
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

async fn run_batch(
    settings: &Settings,
    niche: &str,
    batch_size: u64,
    pool: &str,
    max_wait: Duration,
    telegram: &TelegramArgs,
) -> anyhow::Result<()> {
    // The same batch the Python package's run_batch runs (app::run_batch).
    let report =
        app::run_batch(settings, niche, batch_size, pool, max_wait, telegram, stop_on_signal())
            .await?;
    outln!("{report}");
    if report.interrupted {
        return Err(Interrupted.into());
    }
    Ok(())
}

async fn migrate(settings: &Settings, action: MigrateAction, out: Out) -> anyhow::Result<()> {
    let store = Store::connect(settings.database_url.expose()).await?;
    let result = migrate_with(&store, action, out).await;
    finish(store, result).await
}

async fn migrate_with(store: &Store, action: MigrateAction, out: Out) -> anyhow::Result<()> {
    match action {
        MigrateAction::Up => {
            let pending = store.pending_migrations().await?;
            store.migrate().await?;
            if out.json {
                out.json(json!({ "applied": pending }));
            } else {
                outln!("migrations applied: {}", pending.len());
            }
        }
        MigrateAction::Down { n, yes } => {
            let rolled_back = match store.migrate_down(n, yes).await {
                Err(e @ StoreError::WouldDropRows { .. }) => {
                    bail!("{e}. Back the database up, then pass --yes to drop them with every row")
                }
                other => other?,
            };
            if out.json {
                out.json(json!({ "rolled_back": rolled_back }));
            } else if rolled_back.is_empty() {
                outln!("nothing rolled back: no migration is applied");
            } else {
                outln!("rolled back {} migration(s), newest first:", rolled_back.len());
                for name in &rolled_back {
                    outln!("  {name}");
                }
            }
        }
        MigrateAction::Adopt { dry_run, group_column, session_column } => {
            let opts = smart_joiner::store::AdoptOptions { group_column, session_column };
            let plan = if dry_run {
                store.plan_adoption(&opts).await?
            } else {
                store.adopt_smartjoiner(&opts).await?
            };
            print_adoption(&plan, dry_run, out);
        }
        MigrateAction::Status => {
            let rows = store.migration_status().await?;
            if out.json {
                let list: Vec<_> =
                    rows.iter().map(|(n, a)| json!({ "name": n, "applied": a })).collect();
                out.json(json!(list));
            } else {
                let mut t = Table::new(&["migration", "state"]);
                for (name, applied) in rows {
                    let state = if applied { "applied" } else { "pending" };
                    t.row(vec![name.into(), state.into()]);
                }
                out!("{}", t.render(out.style));
            }
        }
    }
    Ok(())
}

fn print_adoption(plan: &smart_joiner::store::AdoptionPlan, dry_run: bool, out: Out) {
    if out.json {
        let unparsed: Vec<_> = plan
            .unparsed
            .iter()
            .map(|u| json!({ "id": u.id, "status": u.status, "reason": u.reason }))
            .collect();
        out.json(json!({
            "dry_run": dry_run,
            "adopted": !dry_run,
            "group_column": plan.group_column,
            "session_column": plan.session_column,
            "accounts": plan.accounts,
            "targets": plan.targets,
            "bound": plan.bound,
            "changes": plan.changes,
            "unparsed": unparsed,
        }));
        return;
    }
    let verb = if dry_run { "would adopt" } else { "adopted" };
    outln!(
        "{verb} SmartJoiner's tables: {} accounts, {} targets ({} bound, kept bound); group column {}, session column {}",
        plan.accounts,
        plan.targets,
        plan.bound,
        plan.group_column,
        plan.session_column
    );
    outln!("{}:", if dry_run { "changes it would make, in order" } else { "changes made" });
    for change in &plan.changes {
        outln!("  {change}");
    }
    if !plan.unparsed.is_empty() {
        outln!(
            "{} target(s) whose {} is not a link smart-joiner can join (kept, never joined):",
            plan.unparsed.len(),
            plan.group_column
        );
        for u in &plan.unparsed {
            outln!("  targets#{} ({}): {}", u.id, u.status, u.reason);
        }
    }
    if dry_run {
        outln!("nothing was changed (dry run)");
    }
}

async fn accounts(settings: &Settings, action: AccountsAction, out: Out) -> anyhow::Result<()> {
    if let AccountsAction::Import { from, output, force, api_id, api_hash } = action {
        // A file operation: no database.
        let defaults = smart_joiner::accounts_import::ImportDefaults { api_id, api_hash };
        let imported = smart_joiner::accounts_import::import_dir(&from, &defaults)?;
        let path = output.unwrap_or_else(|| settings.accounts_config.clone());
        imported.write(&path, force).with_context(|| format!("cannot write {}", path.display()))?;
        if out.json {
            out.json(json!({ "written": path.display().to_string(), "accounts": imported.names }));
        } else {
            outln!(
                "wrote {} account(s) to {} (it holds their sessions: keep it private): {}",
                imported.names.len(),
                path.display(),
                imported.names.iter().map(|n| app::shown(n)).collect::<Vec<_>>().join(", ")
            );
        }
        return Ok(());
    }
    let store = open_store(settings).await?;
    let result = accounts_with(&store, settings, action, out).await;
    finish(store, result).await
}

/// Who runs an admin command, for the audit log: `cli:<login name>`.
fn cli_actor() -> String {
    let user = std::env::var("USER").or_else(|_| std::env::var("LOGNAME"));
    format!("cli:{}", user.ok().filter(|u| !u.is_empty()).as_deref().unwrap_or("unknown"))
}

/// Prints what an audited action did; a refusal is an error.
fn report_action(
    result: smart_joiner::store::ActionResult,
    done: &str,
    out: Out,
) -> anyhow::Result<()> {
    match result {
        smart_joiner::store::ActionResult::Done if out.json => {
            out.json(json!({ "done": done }));
            Ok(())
        }
        smart_joiner::store::ActionResult::Done => {
            outln!("{done}");
            Ok(())
        }
        smart_joiner::store::ActionResult::Refused(why) => bail!("nothing done: {why}"),
    }
}

async fn console(
    settings: &Settings,
    args: smart_joiner::console::ConsoleArgs,
) -> anyhow::Result<()> {
    let auth = smart_joiner::console::auth_from_env()?;
    let listener = smart_joiner::console::bind(args.addr, &auth).await?;
    let store = open_store(settings).await?;
    let limits = smart_joiner::store::Limits {
        daily_join_cap: settings.daily_join_cap,
        channel_limit: settings.channel_limit,
    };
    let queues = match smart_joiner::console::queues(&args, settings.redis_url.expose()).await {
        Ok(queues) => queues,
        Err(e) => return finish(store, Err(e.into())).await,
    };
    let c = smart_joiner::console::Console { store: store.clone(), auth, limits, queues };
    let stop = stop_on_signal();
    let served = smart_joiner::console::serve(listener, c, stop.cancelled_owned()).await;
    finish(store, served.context("the console stopped")).await
}

async fn accounts_with(
    store: &Store,
    settings: &Settings,
    action: AccountsAction,
    out: Out,
) -> anyhow::Result<()> {
    match action {
        AccountsAction::Pause { session_name, note } => {
            let Some(a) = store.account_by_name(&session_name).await? else {
                bail!("no account named {}", app::shown(&session_name));
            };
            let r = store
                .pause_account(a.id, &cli_actor(), note.as_deref(), chrono::Utc::now())
                .await?;
            report_action(r, &format!("paused {}", app::shown(&session_name)), out)?;
        }
        AccountsAction::Resume { session_name } => {
            let Some(a) = store.account_by_name(&session_name).await? else {
                bail!("no account named {}", app::shown(&session_name));
            };
            let r = store.resume_account(a.id, &cli_actor(), chrono::Utc::now()).await?;
            report_action(r, &format!("resumed {}", app::shown(&session_name)), out)?;
        }
        AccountsAction::Hours { session_name, hours, clear: _ } => {
            let Some(a) = store.account_by_name(&session_name).await? else {
                bail!("no account named {}", app::shown(&session_name));
            };
            let r = store
                .set_active_hours(a.id, hours.as_ref(), &cli_actor(), chrono::Utc::now())
                .await?;
            let shown = app::shown(&session_name);
            let done = match &hours {
                Some(h) => format!("{shown} is active {h}"),
                None => format!("{shown} follows the pool's active hours"),
            };
            report_action(r, &done, out)?;
        }
        // Handled before the database is opened.
        AccountsAction::Import { .. } => {}
        AccountsAction::Sync { pool, move_existing } => {
            let accounts = AccountsConfig::load(&settings.accounts_config)?;
            let names: Vec<String> = accounts.iter().map(|a| a.session_name.clone()).collect();
            let report = store.sync_accounts_with(&names, &pool, move_existing).await?;
            if out.json {
                out.json(json!({
                    "pool": pool,
                    "in_file": names.len(),
                    "added": report.added,
                    "moved_to_pool": report.moved_pool,
                    "in_database_not_in_file": report.missing_from_config,
                    "in_other_pools": report.in_other_pools.iter().map(|(n, p)| json!({ "session_name": n, "pool": p })).collect::<Vec<_>>(),
                    "repaired": report.repaired,
                }));
            } else {
                outln!(
                    "{} accounts in {}: added {}, moved to pool {pool} {}, left in other pools {}, repaired {}, unchanged {}",
                    names.len(),
                    settings.accounts_config.display(),
                    report.added.len(),
                    report.moved_pool.len(),
                    report.in_other_pools.len(),
                    report.repaired.len(),
                    names.len()
                        - report.added.len()
                        - report.moved_pool.len()
                        - report.in_other_pools.len(),
                );
                let shown = app::shown;
                for name in &report.added {
                    outln!("  added: {}", shown(name));
                }
                for name in &report.moved_pool {
                    outln!("  moved to pool {pool}: {}", shown(name));
                }
                for (name, other) in &report.in_other_pools {
                    outln!(
                        "  in pool {other}, not moved (pass --move to move it): {}",
                        shown(name)
                    );
                }
                for name in &report.repaired {
                    outln!(
                        "  made active again (was unauthorized only for a missing config entry): {}",
                        shown(name)
                    );
                }
                for name in &report.missing_from_config {
                    outln!("  in the database but not in the file (kept): {}", shown(name));
                }
            }
        }
        AccountsAction::List { pool } => {
            let now = chrono::Utc::now();
            let list = store.accounts(pool.as_deref()).await?;
            if out.json {
                let rows: Vec<_> = list
                    .iter()
                    .map(|a| {
                        json!({
                            "session_name": a.session_name,
                            "pool": a.pool,
                            "status": a.status.as_str(),
                            "status_reason": a.status_reason,
                            "next_allowed_action_time": a.next_allowed_action_time.map(|t| t.to_rfc3339()),
                            "last_action_at": a.last_action_at.map(|t| t.to_rfc3339()),
                            "premium": a.premium,
                            "channel_limit": a.channel_limit,
                            "frozen_until": a.frozen_until.map(|t| t.to_rfc3339()),
                            "freeze_appeal_url": a.freeze_appeal_url,
                            "checked_at": a.checked_at.map(|t| t.to_rfc3339()),
                            "check_result": a.check_result,
                            "active_hours": a.active_hours,
                        })
                    })
                    .collect();
                out.json(json!(rows));
            } else {
                let mut t = Table::new(&["account", "pool", "status", "next action", "reason"]);
                for a in list {
                    t.row(vec![
                        app::shown(&a.session_name).into(),
                        a.pool.into(),
                        Cell::colored(a.status.as_str(), account_color(a.status)),
                        when(a.next_allowed_action_time, now).into(),
                        a.status_reason.unwrap_or_default().into(),
                    ]);
                }
                out!("{}", t.render(out.style));
            }
        }
        AccountsAction::Check { pool, accounts: only, leases, redis_prefix, telegram } => {
            let config = AccountsConfig::load(&settings.accounts_config)?;
            let tg = app::telegram(&telegram, settings)?;
            let locks = admin::check_locks(leases, settings, &redis_prefix).await?;
            if !out.json {
                eprintln!("leases: {}", locks.describe());
            }
            let opts = CheckOptions { pool, accounts: only, call_timeout: settings.call_timeout };
            let results =
                admin::check_accounts(store, &config, tg.as_ref(), locks.locks(), &opts).await?;
            if out.json {
                let rows: Vec<_> = results
                    .iter()
                    .map(|r| json!({ "session_name": r.session_name, "result": r.verdict.kind(), "detail": r.verdict.to_string(), "changed": r.changes }))
                    .collect();
                out.json(json!(rows));
            } else {
                let mut t = Table::new(&["account", "result", "detail", "changed"]);
                for r in &results {
                    t.row(vec![
                        app::shown(&r.session_name).into(),
                        Cell::colored(r.verdict.kind(), r.verdict.color()),
                        r.verdict.to_string().into(),
                        r.changes.join("; ").into(),
                    ]);
                }
                out!("{}", t.render(out.style));
            }
        }
    }
    Ok(())
}

async fn targets(settings: &Settings, action: TargetsAction, out: Out) -> anyhow::Result<()> {
    match action {
        TargetsAction::Retry { id } => {
            let store = open_store(settings).await?;
            let r = store.retry_target(id, &cli_actor(), chrono::Utc::now()).await;
            let r = finish(store, r.map_err(anyhow::Error::from)).await?;
            report_action(r, &format!("target {id} is new again"), out)?;
        }
        TargetsAction::Release { id, yes } => {
            if !yes {
                bail!(
                    "check that the pinned account is not a member of the group (otherwise a \
                     second account would join it), then pass --yes"
                );
            }
            let store = open_store(settings).await?;
            let r = store.release_pin(id, &cli_actor(), chrono::Utc::now()).await;
            let r = finish(store, r.map_err(anyhow::Error::from)).await?;
            report_action(r, &format!("target {id} released: new and unclaimed"), out)?;
        }
        TargetsAction::Import {
            file,
            niche,
            skip_invalid,
            pool,
            leases,
            redis_prefix,
            telegram,
        } => {
            let parsed = admin::read_targets_file(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            if parsed.links.is_empty() && parsed.rejected.is_empty() && parsed.folders.is_empty() {
                bail!(
                    "{} holds no link (one link per line, or a CSV whose first column is the link)",
                    file.display()
                );
            }
            if !parsed.rejected.is_empty() && !skip_invalid {
                for (line, text, why) in &parsed.rejected {
                    eprintln!(
                        "{}:{line}: rejected {}: {why}",
                        file.display(),
                        admin::shown_line(text, why)
                    );
                }
                bail!(
                    "{} invalid line(s) in {}: nothing imported (fix them or pass --skip-invalid)",
                    parsed.rejected.len(),
                    file.display()
                );
            }
            let store = open_store(settings).await?;
            let links: Vec<_> = parsed.links.iter().map(|(_, l)| l.clone()).collect();
            let report = store.import_targets(&links, &niche).await;
            let report = finish(store, report.map_err(anyhow::Error::from)).await?;
            let in_file = parsed.duplicate_lines.len() as u64;
            let mut json_summary = None;
            if out.json {
                let rejected: Vec<_> = parsed
                    .rejected
                    .iter()
                    .map(|(line, text, why)| json!({ "line": line, "text": admin::shown_line(text, why), "reason": why.to_string() }))
                    .collect();
                let summary = json!({
                    "niche": niche,
                    "accepted": report.inserted,
                    "duplicates_in_database": report.duplicates,
                    "duplicates_in_file": in_file,
                    "rejected": rejected,
                });
                // With folders, one document holds both (printed after the expansion).
                if parsed.folders.is_empty() {
                    out.json(summary);
                } else {
                    json_summary = Some(summary);
                }
            } else {
                for (line, text, why) in &parsed.rejected {
                    eprintln!(
                        "{}:{line}: rejected {}: {why}",
                        file.display(),
                        admin::shown_line(text, why)
                    );
                }
                outln!(
                    "accepted {}, duplicates {} ({} already stored, {} repeated in the file), rejected {}",
                    report.inserted,
                    report.duplicates + in_file,
                    report.duplicates,
                    in_file,
                    parsed.rejected.len()
                );
            }
            if !parsed.folders.is_empty() {
                let folders: Vec<_> = parsed.folders.into_iter().map(|(_, f)| f).collect();
                let opts = FolderArgs { pool, leases, redis_prefix, telegram };
                import_folders(settings, &folders, &niche, opts, out, json_summary).await?;
            }
        }
        TargetsAction::List { niche, status } => {
            let store = open_store(settings).await?;
            let list = store.targets(niche.as_deref(), status).await;
            let list = finish(store, list.map_err(anyhow::Error::from)).await?;
            if out.json {
                let rows: Vec<_> = list
                    .iter()
                    .map(|t| {
                        json!({
                            "id": t.id,
                            "link": t.link.to_string(),
                            "niche": t.niche,
                            "status": t.status.as_str(),
                            "assigned_account_id": t.assigned_account_id,
                            "joined_at": t.joined_at.map(|x| x.to_rfc3339()),
                            "warmup_ends_at": t.warmup_ends_at.map(|x| x.to_rfc3339()),
                            "error_code": t.error_code,
                            "error_message": t.error_message,
                        })
                    })
                    .collect();
                out.json(json!(rows));
            } else {
                let mut tab = Table::new(&["id", "link", "niche", "status", "detail"]);
                for t in list {
                    let detail = match (&t.error_code, &t.error_message) {
                        (Some(c), Some(m)) => format!("{c}: {m}"),
                        (Some(c), None) => c.clone(),
                        (None, Some(m)) => m.clone(),
                        (None, None) => t.title.clone().unwrap_or_default(),
                    };
                    tab.row(vec![
                        t.id.to_string().into(),
                        t.link.to_string().into(),
                        t.niche.into(),
                        Cell::colored(t.status.as_str(), target_color(t.status)),
                        detail.into(),
                    ]);
                }
                out!("{}", tab.render(out.style));
            }
        }
    }
    Ok(())
}

struct FolderArgs {
    pool: String,
    leases: LeaseMode,
    redis_prefix: String,
    telegram: TelegramArgs,
}

/// Expands each folder link with one account of the pool (see `smart_joiner::folders`) and
/// imports its public chats; fails after reporting when a folder could not be expanded.
async fn import_folders(
    settings: &Settings,
    folders: &[smart_joiner::domain::FolderLink],
    niche: &str,
    opts: FolderArgs,
    out: Out,
    json_summary: Option<serde_json::Value>,
) -> anyhow::Result<()> {
    use smart_joiner::folders::FolderCheck;
    let accounts = AccountsConfig::load(&settings.accounts_config)?;
    let tg = app::telegram(&opts.telegram, settings)?;
    let locks = admin::check_locks(opts.leases, settings, &opts.redis_prefix).await?;
    let store = open_store(settings).await?;
    let svc = app::join_service(settings, store.clone(), locks.shared(), tg, accounts, cli_actor());
    let mut results = Vec::new();
    for folder in folders {
        match svc.import_folder(&opts.pool, folder, niche).await {
            Ok(r) => results.push(r),
            Err(e) => return finish(store, Err(e.into())).await,
        }
    }
    finish(store, Ok(())).await?;
    let mut unexpanded = 0;
    let mut rows = Vec::new();
    for r in &results {
        let (account, detail) = match &r.check {
            FolderCheck::Listed { account, contents } => {
                let report = r.report.unwrap_or_default();
                let skipped: Vec<String> = r
                    .without_username
                    .iter()
                    .map(|c| format!("{:?} ({})", c.title, c.id))
                    .collect();
                let mut d = format!(
                    "{:?}: {} chats; accepted {}, duplicates {}",
                    contents.title,
                    contents.chats.len(),
                    report.inserted,
                    report.duplicates
                );
                if !skipped.is_empty() {
                    d += &format!(
                        "; without a username, not imported (only the bulk join reaches them): {}",
                        skipped.join(", ")
                    );
                }
                (Some(account.clone()), d)
            }
            FolderCheck::Failed { account, outcome } => {
                unexpanded += 1;
                let answer = match outcome {
                    smart_joiner::domain::JoinOutcome::TargetInvalid { code, .. } => code.clone(),
                    other => other.to_string(),
                };
                (Some(account.clone()), format!("not expanded: Telegram answered {answer}"))
            }
            FolderCheck::NoAccount { next } => {
                unexpanded += 1;
                let when = next.map_or("never".to_owned(), |t| t.to_rfc3339());
                (
                    None,
                    format!(
                        "not expanded: no account of pool {} may send a request now (next: {when})",
                        opts.pool
                    ),
                )
            }
        };
        rows.push((r.folder.to_string(), account, detail, r));
    }
    if out.json {
        let rows: Vec<_> = rows
            .iter()
            .map(|(folder, account, detail, r)| {
                let report = r.report.unwrap_or_default();
                json!({
                    "folder": folder,
                    "account": account,
                    "accepted": report.inserted,
                    "duplicates_in_database": report.duplicates,
                    "without_username": r.without_username.iter().map(|c| json!({ "id": c.id, "title": c.title })).collect::<Vec<_>>(),
                    "detail": detail,
                })
            })
            .collect();
        let mut doc = json_summary.unwrap_or_else(|| json!({}));
        doc["folders"] = json!(rows);
        out.json(doc);
    } else {
        for (folder, account, detail, _) in &rows {
            let by = account.as_deref().map(|a| format!(" (checked by {})", app::shown(a)));
            outln!("folder {folder}{}: {detail}", by.unwrap_or_default());
        }
    }
    if unexpanded > 0 {
        bail!("{unexpanded} folder link(s) not expanded; import the file again later");
    }
    Ok(())
}

async fn status(
    settings: &Settings,
    pool: Option<String>,
    ready_limit: u64,
    out: Out,
) -> anyhow::Result<()> {
    let store = open_store(settings).await?;
    let now = chrono::Utc::now();
    let read = async {
        Ok::<_, StoreError>(smart_joiner::status::StatusReport {
            now,
            accounts: store.account_overview(pool.as_deref(), now).await?,
            targets: store.target_counts().await?,
            ready: store.ready_groups(now, ready_limit).await?,
            channel_limit: settings.channel_limit,
            daily_join_cap: settings.daily_join_cap,
        })
    };
    let report = read.await;
    let report = finish(store, report.map_err(anyhow::Error::from)).await?;
    if out.json {
        out.json(report.to_json());
    } else {
        out!("{}", report.render(out.style));
    }
    Ok(())
}
