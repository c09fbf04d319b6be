//! `accounts check`: where its leases are taken, and each account connected once, safely.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::accounts_config::AccountsConfig;
use crate::config::Settings;
use crate::domain::AccountStatus;
use crate::lease::{AccountLocks, LeaseError, LocalLocks, RedisLocks};
use crate::ops::output::Color;
use crate::store::{Account, Store, StoreError};
use crate::telegram::Telegram;

/// Where `accounts check` takes its leases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LeaseMode {
    /// Redis when REDIS_URL answers, else in-process leases (single-machine mode).
    Auto,
    /// The workers' Redis leases: safe while workers run.
    Redis,
    /// In-process leases only: safe only when no worker and no `run` is active.
    Local,
}

/// The leases chosen for a check, and how to say which.
pub struct CheckLocks {
    locks: Arc<dyn AccountLocks>,
    description: String,
}

impl CheckLocks {
    pub fn locks(&self) -> &dyn AccountLocks {
        self.locks.as_ref()
    }

    pub fn describe(&self) -> &str {
        &self.description
    }

    /// The locks, to share with a join service.
    pub fn shared(&self) -> Arc<dyn AccountLocks> {
        Arc::clone(&self.locks)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(
        "REDIS_URL does not answer ({0}); start Redis or pass --leases local when no worker runs"
    )]
    RedisDown(String),
    /// Redis (or whatever listens there) answered with an error, or the URL cannot work: not
    /// the absence of Redis, and workers may be using this one.
    #[error(
        "Redis at {url} is not usable ({message}); in-process leases would be unsafe if \
         workers use it: fix REDIS_URL, or pass --leases local when no worker runs"
    )]
    RedisFailed { url: String, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Lease(#[from] LeaseError),
}

/// How long `accounts check` waits for Redis before it gives up.
const REDIS_PROBE: Duration = Duration::from_secs(3);

/// Builds the leases `mode` asks for. `auto` uses the workers' Redis leases when Redis answers,
/// so a check never opens a second connection next to a worker's; only when nothing is there
/// (connection refused, no such host: single-machine mode) does it use in-process leases.
/// A Redis that answers with an error (wrong password, NOAUTH, a protocol or TLS failure) or
/// does not answer in time is an error in every mode: workers may be using it.
pub async fn check_locks(
    mode: LeaseMode,
    settings: &Settings,
    prefix: &str,
) -> Result<CheckLocks, AdminError> {
    let local = |why: &str| CheckLocks {
        locks: Arc::new(LocalLocks::default()),
        description: format!("in-process{why}, behind the database hold every process respects"),
    };
    if mode == LeaseMode::Local {
        return Ok(local(""));
    }
    let url = settings.redis_url.expose();
    let shown = crate::redact::redact_url(url);
    let redis = match tokio::time::timeout(REDIS_PROBE, crate::queue::connect_redis(url)).await {
        Ok(r) => r,
        Err(_) => return Err(AdminError::RedisDown(format!("no answer within {REDIS_PROBE:?}"))),
    };
    match redis {
        Ok(conn) => Ok(CheckLocks {
            locks: Arc::new(RedisLocks::new(conn, prefix, settings.lease_ttl)),
            description: format!("Redis, prefix {prefix:?} (shared with the workers)"),
        }),
        Err(e) if e.is_unreachable() && mode == LeaseMode::Auto => {
            Ok(local(&format!(": no Redis at {shown} ({})", e.detail())))
        }
        Err(e) if e.is_unreachable() => Err(AdminError::RedisDown(e.detail())),
        Err(e) => Err(AdminError::RedisFailed { url: shown, message: e.detail() }),
    }
}

/// Which accounts a check covers.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    pub pool: Option<String>,
    /// Session names; empty means every account (of the pool).
    pub accounts: Vec<String>,
    /// Timeout of connect and of disconnect.
    pub call_timeout: Duration,
}

/// What checking one account found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Connected; the session is authorised.
    Authorised,
    /// Telegram says the session is not authorised.
    NotAuthorised(String),
    /// Telegram says the account is banned.
    Banned(String),
    /// The connection failed (proxy, network, timeout, bad session data).
    Failed(String),
    /// Connected; help.getAppConfig got an account-wide answer (a FloodWait), recorded.
    Limited(String),
    /// Not connected: the account is inside a FloodWait or cooldown until then.
    Waiting { status: AccountStatus, until: DateTime<Utc> },
    /// Not connected: another process holds the account's lease (a join is running).
    Busy,
    /// Not connected: accounts_config.json has no entry for it.
    NoConfig,
    /// Not connected: no such account in the database.
    Unknown,
}

impl Verdict {
    /// A stable one-word result for scripts.
    pub fn kind(&self) -> &'static str {
        match self {
            Verdict::Authorised => "authorised",
            Verdict::NotAuthorised(_) => "unauthorized",
            Verdict::Banned(_) => "banned",
            Verdict::Failed(_) => "failed",
            Verdict::Limited(_) => "limited",
            Verdict::Waiting { .. } => "skipped_waiting",
            Verdict::Busy => "skipped_busy",
            Verdict::NoConfig => "no_config",
            Verdict::Unknown => "unknown",
        }
    }

    pub fn color(&self) -> Option<Color> {
        Some(match self {
            Verdict::Authorised => Color::Green,
            Verdict::NotAuthorised(_) | Verdict::Banned(_) | Verdict::NoConfig => Color::Red,
            Verdict::Failed(_) | Verdict::Limited(_) => Color::Yellow,
            Verdict::Waiting { .. } | Verdict::Busy | Verdict::Unknown => Color::Dim,
        })
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Authorised => f.write_str("session authorised"),
            Verdict::NotAuthorised(why) => write!(f, "not authorised: {why}"),
            Verdict::Banned(why) => write!(f, "banned: {why}"),
            Verdict::Failed(why) => write!(f, "connection failed: {why}"),
            Verdict::Limited(why) => write!(f, "connected; Telegram answered {why} (recorded)"),
            Verdict::Waiting { status, until } => {
                write!(f, "not checked: {status} until {}", until.format("%Y-%m-%d %H:%M:%S UTC"))
            }
            Verdict::Busy => {
                f.write_str("not checked: in use by another process (a join or a check holds it)")
            }
            Verdict::NoConfig => f.write_str("no entry in the accounts file"),
            Verdict::Unknown => {
                f.write_str("no such account in the database (run `accounts sync`)")
            }
        }
    }
}

/// The result for one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    pub session_name: String,
    pub verdict: Verdict,
    /// What the check changed on the account's row (`status active -> frozen`, `premium
    /// no -> yes`); empty when nothing changed or nothing was written.
    pub changes: Vec<String>,
}

/// A FloodWait or cooldown still running at `now`, if any. Connecting then would be a request
/// inside the wait.
fn waiting(account: &Account, now: DateTime<Utc>) -> Option<Verdict> {
    let until = account.next_allowed_action_time.filter(|t| *t > now)?;
    matches!(account.status, AccountStatus::FloodWait | AccountStatus::Cooldown)
        .then_some(Verdict::Waiting { status: account.status, until })
}

/// Connects each selected account once, one at a time, and reports whether its session is
/// authorised. An account is connected only while its lease and its database hold are taken
/// (so never next to a worker's or a `run`'s connection) and never inside a FloodWait or
/// cooldown. Writes nothing but the hold.
pub async fn check_accounts(
    store: &Store,
    config: &AccountsConfig,
    telegram: &dyn Telegram,
    locks: &dyn AccountLocks,
    opts: &CheckOptions,
) -> Result<Vec<CheckResult>, AdminError> {
    let all = store.accounts(opts.pool.as_deref()).await?;
    let mut results = Vec::new();
    let selected: Vec<&Account> = if opts.accounts.is_empty() {
        all.iter().collect()
    } else {
        for name in &opts.accounts {
            if !all.iter().any(|a| &a.session_name == name) {
                results.push(CheckResult {
                    session_name: name.clone(),
                    verdict: Verdict::Unknown,
                    changes: Vec::new(),
                });
            }
        }
        all.iter().filter(|a| opts.accounts.contains(&a.session_name)).collect()
    };
    for account in selected {
        let (verdict, changes) =
            check_one(store, config, telegram, locks, account, opts.call_timeout).await?;
        results.push(CheckResult { session_name: account.session_name.clone(), verdict, changes });
    }
    Ok(results)
}

async fn check_one(
    store: &Store,
    config: &AccountsConfig,
    telegram: &dyn Telegram,
    locks: &dyn AccountLocks,
    account: &Account,
    timeout: Duration,
) -> Result<(Verdict, Vec<String>), AdminError> {
    if let Some(v) = waiting(account, store.earliest_now()) {
        return Ok((v, Vec::new()));
    }
    let Some(entry) = config.get(&account.session_name) else {
        return Ok((Verdict::NoConfig, Vec::new()));
    };
    let Some(lease) = locks.try_acquire(account.id).await? else {
        return Ok((Verdict::Busy, Vec::new()));
    };
    let verdict = check_held(store, entry, telegram, account, timeout).await;
    let _ = locks.release(&lease).await;
    verdict
}

/// The part of a check that runs under the lease: the database hold first (the one lock
/// every process respects, so a `run` or a worker connected to the account is never joined
/// by a second connection), then the connection, the verdict written back under that hold,
/// and the hold ended after the disconnect.
async fn check_held(
    store: &Store,
    entry: &crate::accounts_config::AccountConfig,
    telegram: &dyn Telegram,
    account: &Account,
    timeout: Duration,
) -> Result<(Verdict, Vec<String>), AdminError> {
    // Connect, the app config and disconnect each run under the timeout; the hold outlives
    // them.
    let hold_until = store.latest_now()
        + chrono::Duration::from_std(timeout.saturating_mul(4) + Duration::from_secs(5))
            .unwrap_or(chrono::Duration::MAX);
    let Some(epoch) = store.take_hold(account.id, store.earliest_now(), hold_until).await? else {
        return Ok((Verdict::Busy, Vec::new()));
    };
    // A worker may have received a FloodWait between the listing and the hold.
    let fresh = store.account(account.id).await;
    let result = match fresh {
        Err(e) => Err(e.into()),
        Ok(None) => Ok((Verdict::Unknown, Vec::new())),
        Ok(Some(fresh)) => match waiting(&fresh, store.earliest_now()) {
            Some(v) => Ok((v, Vec::new())),
            None => {
                let found = crate::ops::account_check::connect_once(entry, telegram, timeout).await;
                crate::ops::account_check::write_back(store, &fresh, epoch, found).await
            }
        },
    };
    if let Err(e) = store.release_hold(account.id, epoch).await {
        tracing::warn!(account = %account.session_name, error = %crate::redact::Chain(&e), "hold release failed; it expires by itself");
    }
    result
}
