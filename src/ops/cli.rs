//! The command line of `smart-joiner`: its subcommand tree, flags and their help. `src/main.rs`
//! parses it and dispatches each subcommand to the library function that does it.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config::{ExporterArgs, PoolArg, RedisPrefixArg, SettingsArgs, not_blank};
use crate::domain::TargetStatus;
use crate::modes::wiring::{TelegramArgs, parse_duration};
use crate::ops::check::LeaseMode;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Joins a pool of Telegram accounts to target groups, inside Telegram's limits"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(flatten)]
    pub settings: SettingsArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
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
        console_args: crate::ops::console::ConsoleArgs,
    },
    /// Serve the operator console (web pages on CONSOLE_ADDR; CONSOLE_TOKEN to read,
    /// CONSOLE_ADMIN_TOKEN to act).
    Console {
        #[command(flatten)]
        args: crate::ops::console::ConsoleArgs,
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
        #[command(flatten)]
        args: ExporterArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum MigrateAction {
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
pub enum AccountsAction {
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
    /// Refused for an account in a worse status (banned, ...). Audited as cli:$USER.
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
    /// pool's (ACTIVE_HOURS) again. Audited as cli:$USER.
    Hours {
        session_name: String,
        #[arg(required_unless_present = "clear", conflicts_with = "clear", value_parser = active_hours)]
        hours: Option<crate::domain::ActiveHours>,
        #[arg(long)]
        clear: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TargetsAction {
    /// Give an `error` target another chance (back to `new`). Audited as cli:$USER.
    Retry { id: i64 },
    /// Release a `joining` target pinned to an account after unanswered joins (back to `new`,
    /// unclaimed), once you checked the account is not a member. Audited as cli:$USER.
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

fn active_hours(s: &str) -> Result<crate::domain::ActiveHours, String> {
    crate::domain::ActiveHours::parse(s).map_err(|e| e.to_string())
}

fn target_status(s: &str) -> Result<TargetStatus, String> {
    TargetStatus::parse(s).ok_or_else(|| {
        let all: Vec<&str> = TargetStatus::ALL.iter().map(|s| s.as_str()).collect();
        format!("unknown target status {s:?}; one of: {}", all.join(", "))
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn every_setting_has_a_flag_a_variable_help_text_and_a_readme_row() {
        let readme = include_str!("../../README.md");
        let problems = crate::config::undocumented_settings(&super::Cli::command(), readme);
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }
}
