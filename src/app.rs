//! Wiring shared by the binaries: building adapters from settings and flags. No policy here.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::accounts_config::{AccountsConfig, AccountsConfigError};
use crate::config::Settings;
use crate::join::{JoinDeps, JoinService};
use crate::lease::AccountLocks;
use crate::queue::QueueSettings;
use crate::store::{Limits, Store};
use crate::telegram::Telegram;
use crate::telegram::fake::{Script, ScriptedTelegram};

/// Flags choosing the Telegram implementation. The fake exists for tests and benchmarks of the
/// real binaries; it is hidden from `--help`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TelegramArgs {
    /// Use the scripted fake Telegram with this JSON script instead of real Telegram.
    #[arg(long, env = "SMART_JOINER_FAKE_TELEGRAM", hide = true)]
    pub fake_telegram: Option<PathBuf>,
    /// Append the fake's events (JSON lines) to this file.
    #[arg(long, env = "SMART_JOINER_FAKE_TELEGRAM_LOG", hide = true, requires = "fake_telegram")]
    pub fake_telegram_log: Option<PathBuf>,
}

/// Flags of the Redis side, shared by producer and worker.
#[derive(Debug, Clone, clap::Args)]
pub struct RedisArgs {
    /// Prefix of every Redis key this deployment uses (leases and the queue).
    #[arg(long, env = "REDIS_PREFIX", default_value = "smart_joiner:")]
    pub redis_prefix: String,
    /// The account pool this process serves; each pool has its own queue.
    #[arg(long, env = "POOL", default_value = "default")]
    pub pool: String,
    /// Worker heartbeat; a worker silent for 6 heartbeats has its jobs handed to others.
    #[arg(long, env = "QUEUE_HEARTBEAT", default_value = "10s", value_parser = parse_duration)]
    pub queue_heartbeat: Duration,
}

impl RedisArgs {
    pub fn queue_settings(&self) -> QueueSettings {
        QueueSettings {
            name: format!("{}join:v1:{}", self.redis_prefix, self.pool),
            heartbeat: self.queue_heartbeat,
            ..QueueSettings::default()
        }
    }
}

/// A session name as it is printed: control and invisible characters escaped (names are keys
/// an operator wrote; see [`crate::accounts_config::display_name`]).
pub fn shown(name: &str) -> String {
    crate::accounts_config::display_name(name).to_string()
}

/// Parses a human duration (`500ms`, `90s`, `10m`, `24h`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

/// The distributed mode's backends: the store, the account leases and the pool's queue.
pub struct Backends {
    pub store: Store,
    pub locks: crate::lease::RedisLocks,
    pub queue: crate::queue::JobQueue,
}

/// Connects to the database and to Redis, as the producer and the worker both do.
pub async fn connect_backends(
    settings: &Settings,
    redis: &RedisArgs,
) -> Result<Backends, AppError> {
    let store = Store::connect(settings.database_url.expose()).await.map_err(AppError::Database)?;
    let redis_url = settings.redis_url.expose();
    let conn = crate::queue::connect_redis(redis_url).await.map_err(|e| AppError::Redis {
        url: crate::redact::redact_url(redis_url),
        message: e.detail(),
    })?;
    let locks =
        crate::lease::RedisLocks::new(conn.clone(), redis.redis_prefix.clone(), settings.lease_ttl);
    let queue = crate::queue::JobQueue::new(conn, &redis.queue_settings());
    Ok(Backends { store, locks, queue })
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Names the database (password redacted) itself.
    #[error(transparent)]
    Database(crate::store::StoreError),
    /// `url` has its password redacted.
    #[error("cannot connect to Redis {url}: {message}")]
    Redis { url: String, message: String },
    #[error(transparent)]
    Accounts(#[from] AccountsConfigError),
    #[error("{0}")]
    Telegram(String),
    /// The database or the pool is not fit for a run (pending migrations, an empty pool).
    #[error("{0}")]
    NotReady(String),
    #[error(transparent)]
    Run(#[from] crate::runner::RunError),
}

/// One batch as `smart-joiner run` runs it, for every caller of SmartJoiner's
/// `run_batch(niche, batch_size)` (the command, the Python package): the accounts file
/// validated whole, the database checked for pending migrations, new accounts added to `pool`,
/// then [`SmartJoiner::run_batch`](crate::runner::SmartJoiner::run_batch) with in-process
/// leases; the store is closed at the end, whatever happened.
pub async fn run_batch(
    settings: &Settings,
    niche: &str,
    batch_size: u64,
    pool: &str,
    max_wait: Duration,
    telegram_args: &TelegramArgs,
    stop: tokio_util::sync::CancellationToken,
) -> Result<crate::runner::BatchReport, AppError> {
    let accounts = AccountsConfig::load(&settings.accounts_config)?;
    let store = Store::connect(settings.database_url.expose()).await.map_err(AppError::Database)?;
    let result = run_batch_on(
        &store,
        settings,
        accounts,
        niche,
        batch_size,
        pool,
        max_wait,
        telegram_args,
        stop,
    )
    .await;
    let closed = store.close().await;
    let report = result?;
    closed.map_err(AppError::Database)?;
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
async fn run_batch_on(
    store: &Store,
    settings: &Settings,
    accounts: AccountsConfig,
    niche: &str,
    batch_size: u64,
    pool: &str,
    max_wait: Duration,
    telegram_args: &TelegramArgs,
    stop: tokio_util::sync::CancellationToken,
) -> Result<crate::runner::BatchReport, AppError> {
    let pending = store.pending_migrations().await.map_err(AppError::Database)?;
    if !pending.is_empty() {
        return Err(AppError::NotReady(format!(
            "the database has {} pending migrations: run `smart-joiner migrate up` first",
            pending.len()
        )));
    }
    // New accounts join the pool; known ones stay in theirs (moving is `accounts sync --move`).
    let names = accounts.session_names();
    let sync = store.sync_accounts_with(&names, pool, false).await.map_err(AppError::Database)?;
    for name in &sync.repaired {
        tracing::info!(account = %shown(name), "account made active again: it was marked unauthorized only for a missing config entry");
    }
    if !sync.in_other_pools.is_empty() {
        let in_pool = names.len() - sync.in_other_pools.len();
        let mut pools: Vec<&str> = sync.in_other_pools.iter().map(|(_, p)| p.as_str()).collect();
        pools.sort_unstable();
        pools.dedup();
        if in_pool == 0 {
            return Err(AppError::NotReady(format!(
                "pool {pool:?} has none of the {} accounts of {}; they are in pool(s) {} (pass --pool, or move them with `smart-joiner accounts sync --pool {pool} --move`)",
                names.len(),
                settings.accounts_config.display(),
                pools.join(", ")
            )));
        }
        tracing::warn!(
            "{} accounts of the file are in other pools ({}) and are not used by this run",
            sync.in_other_pools.len(),
            pools.join(", ")
        );
    }
    let telegram = telegram(telegram_args, settings)?;
    let service = join_service(
        settings,
        store.clone(),
        Arc::new(crate::lease::LocalLocks::default()),
        telegram,
        accounts,
        "run".to_owned(),
    );
    Ok(crate::runner::SmartJoiner::new(service, pool, max_wait)
        .with_stop(stop)
        .run_batch(niche, batch_size)
        .await?)
}

/// Loads the accounts file for running (`run`, `worker`): valid entries are used, each invalid
/// one is logged and later ends as that account's outcome, so one bad session does not stop the
/// pool. Admin commands that change the database (`accounts sync`) load it strictly instead.
pub fn load_accounts_for_running(path: &std::path::Path) -> Result<AccountsConfig, AppError> {
    let (config, errors) = AccountsConfig::load_lenient(path)?;
    for e in &errors {
        tracing::warn!("accounts file {}: {e}; that account is left out", path.display());
    }
    Ok(config)
}

/// The Telegram implementation the flags ask for.
pub fn telegram(args: &TelegramArgs, settings: &Settings) -> Result<Arc<dyn Telegram>, AppError> {
    match &args.fake_telegram {
        Some(script) => {
            let script = Script::load(script).map_err(AppError::Telegram)?;
            let mut fake = ScriptedTelegram::new(script);
            if let Some(log) = &args.fake_telegram_log {
                fake = fake.with_log_file(log).map_err(|e| {
                    AppError::Telegram(format!("cannot open {}: {e}", log.display()))
                })?;
            }
            Ok(Arc::new(fake))
        }
        None => {
            Ok(Arc::new(crate::telegram::grammers::GrammersTelegram::new(settings.call_timeout)))
        }
    }
}

/// Builds the join procedure from settings and adapters.
pub fn join_service(
    settings: &Settings,
    store: Store,
    locks: Arc<dyn AccountLocks>,
    telegram: Arc<dyn Telegram>,
    accounts: AccountsConfig,
    worker_name: String,
) -> JoinService {
    JoinService::new(JoinDeps {
        store,
        locks,
        telegram,
        accounts: Arc::new(accounts),
        pacing: settings.pacing.clone(),
        limits: Limits {
            daily_join_cap: settings.daily_join_cap,
            channel_limit: settings.channel_limit,
        },
        call_timeout: settings.call_timeout,
        worker_name,
    })
    .with_active_hours(settings.active_hours.clone())
}

/// Resolves when SIGINT or SIGTERM arrives.
pub async fn shutdown_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}
