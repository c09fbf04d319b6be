//! `smart-joiner accounts`: sync, import, list, check, pause, resume, hours.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Done, cli_actor, done};
use crate::accounts_config::AccountsConfig;
use crate::config::Settings;
use crate::domain::AccountStatus;
use crate::ops::accounts_import::{ImportDefaults, import_dir};
use crate::ops::check::{self, CheckOptions, LeaseMode};
use crate::ops::output::{Cell, Report, Style, Table, account_color, rfc3339, shown, when};
use crate::store::{Account, Store};
use crate::telegram::Telegram;

/// An account of the file left in another pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InOtherPool {
    pub session_name: String,
    pub pool: String,
}

/// `accounts sync`: what making the database know the accounts file did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Synced {
    pub pool: String,
    /// Accounts in the file.
    pub in_file: usize,
    #[serde(skip)]
    pub file: PathBuf,
    pub added: Vec<String>,
    pub moved_to_pool: Vec<String>,
    pub in_database_not_in_file: Vec<String>,
    pub in_other_pools: Vec<InOtherPool>,
    pub repaired: Vec<String>,
}

impl Report for Synced {
    fn render(&self, _style: Style) -> String {
        let unchanged =
            self.in_file - self.added.len() - self.moved_to_pool.len() - self.in_other_pools.len();
        let mut out = format!(
            "{} accounts in {}: added {}, moved to pool {} {}, left in other pools {}, repaired {}, unchanged {unchanged}\n",
            self.in_file,
            self.file.display(),
            self.added.len(),
            self.pool,
            self.moved_to_pool.len(),
            self.in_other_pools.len(),
            self.repaired.len(),
        );
        let mut line = |text: String| {
            out.push_str(&text);
            out.push('\n');
        };
        for name in &self.added {
            line(format!("  added: {}", shown(name)));
        }
        for name in &self.moved_to_pool {
            line(format!("  moved to pool {}: {}", self.pool, shown(name)));
        }
        for o in &self.in_other_pools {
            line(format!(
                "  in pool {}, not moved (pass --move to move it): {}",
                o.pool,
                shown(&o.session_name)
            ));
        }
        for name in &self.repaired {
            line(format!(
                "  made active again (was unauthorized only for a missing config entry): {}",
                shown(name)
            ));
        }
        for name in &self.in_database_not_in_file {
            line(format!("  in the database but not in the file (kept): {}", shown(name)));
        }
        out
    }
}

/// Makes the database know every account of the accounts file (loaded strictly: one bad entry
/// refuses the whole file), new ones in `pool`; `move_existing` moves those of other pools.
pub async fn sync(
    store: &Store,
    accounts_file: &Path,
    pool: &str,
    move_existing: bool,
) -> anyhow::Result<Synced> {
    let accounts = AccountsConfig::load(accounts_file)?;
    let names: Vec<String> = accounts.iter().map(|a| a.session_name.clone()).collect();
    let report = store.sync_accounts_with(&names, pool, move_existing).await?;
    Ok(Synced {
        pool: pool.to_owned(),
        in_file: names.len(),
        file: accounts_file.to_owned(),
        added: report.added,
        moved_to_pool: report.moved_pool,
        in_database_not_in_file: report.missing_from_config,
        in_other_pools: report
            .in_other_pools
            .into_iter()
            .map(|(session_name, pool)| InOtherPool { session_name, pool })
            .collect(),
        repaired: report.repaired,
    })
}

/// `accounts import`: the accounts file written from a folder of `.session` files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Imported {
    /// The file written.
    pub written: String,
    /// Session names, in file-name order.
    pub accounts: Vec<String>,
}

impl Report for Imported {
    fn render(&self, _style: Style) -> String {
        format!(
            "wrote {} account(s) to {} (it holds their sessions: keep it private): {}\n",
            self.accounts.len(),
            self.written,
            self.accounts.iter().map(|n| shown(n)).collect::<Vec<_>>().join(", ")
        )
    }
}

/// Turns the `.session` files of `from` into the accounts file `output`, all or nothing; no
/// database.
pub fn import(
    from: &Path,
    output: &Path,
    overwrite: bool,
    defaults: &ImportDefaults,
) -> anyhow::Result<Imported> {
    use anyhow::Context as _;
    let imported = import_dir(from, defaults)?;
    imported
        .write(output, overwrite)
        .with_context(|| format!("cannot write {}", output.display()))?;
    Ok(Imported { written: output.display().to_string(), accounts: imported.names })
}

/// One account as `accounts list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccountRow {
    pub session_name: String,
    pub pool: String,
    pub status: AccountStatus,
    pub status_reason: Option<String>,
    #[serde(serialize_with = "rfc3339")]
    pub next_allowed_action_time: Option<DateTime<Utc>>,
    #[serde(serialize_with = "rfc3339")]
    pub last_action_at: Option<DateTime<Utc>>,
    /// What Telegram said about the account when it last connected or was checked.
    pub premium: Option<bool>,
    pub channel_limit: Option<u32>,
    #[serde(serialize_with = "rfc3339")]
    pub frozen_until: Option<DateTime<Utc>>,
    pub freeze_appeal_url: Option<String>,
    #[serde(serialize_with = "rfc3339")]
    pub checked_at: Option<DateTime<Utc>>,
    pub check_result: Option<String>,
    /// The account's own active hours (`None`: its pool's).
    pub active_hours: Option<String>,
}

/// `accounts list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct AccountList {
    pub accounts: Vec<AccountRow>,
    #[serde(skip)]
    pub now: DateTime<Utc>,
}

impl Report for AccountList {
    fn render(&self, style: Style) -> String {
        let mut t = Table::new(&["account", "pool", "status", "next action", "reason"]);
        for a in &self.accounts {
            t.row(vec![
                shown(&a.session_name).into(),
                a.pool.clone().into(),
                Cell::colored(a.status.as_str(), account_color(a.status)),
                when(a.next_allowed_action_time, self.now).into(),
                a.status_reason.clone().unwrap_or_default().into(),
            ]);
        }
        t.render(style)
    }
}

/// Lists the accounts (of `pool`) and their state.
pub async fn list(store: &Store, pool: Option<&str>) -> anyhow::Result<AccountList> {
    let accounts = store.accounts(pool).await?;
    let row = |a: Account| AccountRow {
        session_name: a.session_name,
        pool: a.pool,
        status: a.status,
        status_reason: a.status_reason,
        next_allowed_action_time: a.next_allowed_action_time,
        last_action_at: a.last_action_at,
        premium: a.premium,
        channel_limit: a.channel_limit,
        frozen_until: a.frozen_until,
        freeze_appeal_url: a.freeze_appeal_url,
        checked_at: a.checked_at,
        check_result: a.check_result,
        active_hours: a.active_hours,
    };
    Ok(AccountList { accounts: accounts.into_iter().map(row).collect(), now: store.now() })
}

/// What checking one account found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Checked {
    pub session_name: String,
    /// A stable word for scripts ([`check::Verdict::kind`]).
    pub result: &'static str,
    pub detail: String,
    /// What the check changed on the account's row (`status active -> frozen`, `premium
    /// no -> yes`); empty when nothing changed or nothing was written.
    pub changed: Vec<String>,
    #[serde(skip)]
    pub verdict: check::Verdict,
}

/// `accounts check`: one row per account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct CheckReport {
    pub accounts: Vec<Checked>,
}

impl Report for CheckReport {
    fn render(&self, style: Style) -> String {
        let mut t = Table::new(&["account", "result", "detail", "changed"]);
        for r in &self.accounts {
            t.row(vec![
                shown(&r.session_name).into(),
                Cell::colored(r.result, r.verdict.color()),
                r.detail.clone().into(),
                r.changed.join("; ").into(),
            ]);
        }
        t.render(style)
    }
}

/// Which accounts `accounts check` covers and how it takes their leases.
#[derive(Debug, Clone)]
pub struct CheckArgs {
    pub pool: Option<String>,
    pub accounts: Vec<String>,
    pub leases: LeaseMode,
    pub redis_prefix: String,
}

/// Connects each selected account once (under its lease and hold), says whether its session
/// is authorised and what Telegram says about it (Premium, channel limit, freeze), and writes
/// that back while it still holds the account. `leases_taken` hears where the leases are taken before the first connection.
pub async fn check(
    store: &Store,
    settings: &Settings,
    telegram: &dyn Telegram,
    args: CheckArgs,
    leases_taken: impl FnOnce(&str),
) -> anyhow::Result<CheckReport> {
    let config = AccountsConfig::load(&settings.accounts_config)?;
    let locks = check::check_locks(args.leases, settings, &args.redis_prefix).await?;
    leases_taken(locks.describe());
    let opts = CheckOptions {
        pool: args.pool,
        accounts: args.accounts,
        call_timeout: settings.call_timeout,
    };
    let results = check::check_accounts(store, &config, telegram, locks.locks(), &opts).await?;
    let accounts = results
        .into_iter()
        .map(|r| Checked {
            session_name: r.session_name,
            result: r.verdict.kind(),
            detail: r.verdict.to_string(),
            changed: r.changes,
            verdict: r.verdict,
        })
        .collect();
    Ok(CheckReport { accounts })
}

/// Pauses an account (audited as `cli:<user>`): never picked until resumed.
pub async fn pause(store: &Store, session_name: &str, note: Option<&str>) -> anyhow::Result<Done> {
    let account = named(store, session_name).await?;
    let result = store.pause_account(account.id, &cli_actor(), note, store.now()).await?;
    done(result, format!("paused {}", shown(session_name)))
}

/// Resumes a paused account (audited as `cli:<user>`).
pub async fn resume(store: &Store, session_name: &str) -> anyhow::Result<Done> {
    let account = named(store, session_name).await?;
    let result = store.resume_account(account.id, &cli_actor(), store.now()).await?;
    done(result, format!("resumed {}", shown(session_name)))
}

/// Sets (or with `None` clears) an account's own active hours (audited as `cli:<user>`).
pub async fn hours(
    store: &Store,
    session_name: &str,
    hours: Option<&crate::domain::ActiveHours>,
) -> anyhow::Result<Done> {
    let account = named(store, session_name).await?;
    let result = store.set_active_hours(account.id, hours, &cli_actor(), store.now()).await?;
    let shown = shown(session_name);
    let said = match hours {
        Some(h) => format!("{shown} is active {h}"),
        None => format!("{shown} follows the pool's active hours"),
    };
    done(result, said)
}

async fn named(store: &Store, session_name: &str) -> anyhow::Result<Account> {
    match store.account_by_name(session_name).await? {
        Some(account) => Ok(account),
        None => anyhow::bail!("no account named {}", shown(session_name)),
    }
}
