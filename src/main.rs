//! `smart-joiner`: single-machine runs and the admin commands.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use smart_joiner::config::Settings;
use smart_joiner::modes;
use smart_joiner::modes::wiring::{self, TelegramArgs, stop_on_signal};
use smart_joiner::ops;
use smart_joiner::ops::cli::{AccountsAction, Cli, Command, MigrateAction, TargetsAction};
use smart_joiner::ops::commands::{self, accounts::CheckArgs, finish, targets::RELEASE_NEEDS_YES};
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

/// `run` joins as a worker does: see the worker's allocator (BENCHMARKS.md, session 12).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        Command::Console { args } => ops::console::run(&settings, args, stop_on_signal()).await,
        Command::Migrate { action } => migrate(&settings, action, format).await,
        Command::Accounts { action } => accounts(&settings, action, format).await,
        Command::Targets { action } => targets(&settings, action, format).await,
        Command::Status { pool, ready_limit } => {
            let store = wiring::open_database(&settings).await?;
            let report =
                commands::overview::status(&store, &settings, pool.as_deref(), ready_limit).await;
            finish(store, report).await.map(|r| print(&r, format))
        }
        Command::Exporter { args } => {
            ops::exporter::run(&settings, args, telemetry.metrics()).await
        }
    };
    telemetry.shutdown().await;
    result
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
                let folders = targets::FolderArgs { pool, leases, redis_prefix, telegram };
                match targets::import_with_folders(&store, settings, read, &niche, folders).await {
                    Ok(report) => {
                        print(&report, format);
                        match report.unexpanded() {
                            0 => Ok(()),
                            n => Err(anyhow::anyhow!(
                                "{n} folder link(s) not expanded; import the file again later"
                            )),
                        }
                    }
                    Err(e) => Err(e),
                }
            }
            None => Ok(()),
        },
        TargetsAction::List { niche, status } => {
            targets::list(&store, niche.as_deref(), status).await.map(|r| print(&r, format))
        }
    };
    finish(store, printed).await
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

async fn demo(console: Option<ops::console::ConsoleArgs>) -> anyhow::Result<()> {
    let progress = &mut |line: &str| tracing::info!("{line}");
    match console {
        None => demo_end(modes::demo::run_until(progress, stop_on_signal()).await?),
        Some(args) => {
            modes::demo::run_with_console(args, progress, stop_on_signal(), demo_end).await
        }
    }
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
