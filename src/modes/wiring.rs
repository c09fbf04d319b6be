//! Wiring shared by the binaries: building adapters from settings and flags. No policy here.

use std::sync::Arc;

use crate::accounts_config::{AccountsConfig, AccountsConfigError};
use crate::config::Settings;
pub use crate::config::{RedisArgs, TelegramArgs, parse_duration};
use crate::join::{JoinDeps, JoinService};
use crate::lease::AccountLocks;
use crate::store::{Limits, Store};
use crate::telegram::Telegram;
use crate::telegram::fake::{Script, ScriptedTelegram};

/// The distributed mode's backends: the store, the account leases and the pool's queue.
pub struct Backends {
    pub store: Store,
    pub locks: crate::lease::RedisLocks,
    pub queue: crate::queue::JobQueue,
}

/// Opens the database for a process that needs the schema this build was written for: every
/// `smart-joiner` command but `migrate`, the worker, the producer, the exporter and the Python
/// package. A database with pending migrations, or with migrations this build does not know,
/// is refused here, before anything is read or written, with the same message in every binary
/// ([`schema_refusal`]).
pub async fn open_database(settings: &Settings) -> Result<Store, AppError> {
    let store = Store::connect(settings.database_url.expose()).await.map_err(AppError::Database)?;
    let refused = match store.schema_state().await {
        Ok(state) => match schema_refusal(&state) {
            None => return Ok(store),
            Some(why) => AppError::NotReady(why),
        },
        Err(e) => AppError::Database(e),
    };
    // The refusal is the error to report; a failed close after it would only hide it.
    let _ = store.close().await;
    Err(refused)
}

/// Why a process refuses a database whose schema is not the one this build was written for;
/// `None` when it is.
pub fn schema_refusal(state: &migration::SchemaState) -> Option<String> {
    if !state.unknown.is_empty() {
        return Some(format!(
            "the database has migrations this build does not know ({}): a newer smart-joiner \
             applied them; run that version",
            state.unknown.join(", ")
        ));
    }
    if !state.pending.is_empty() {
        return Some(format!(
            "the database has {} pending migrations: run `smart-joiner migrate up` first",
            state.pending.len()
        ));
    }
    None
}

/// Connects to the database (refusing a schema that is not this build's, see
/// [`open_database`]) and to Redis, as the producer, the worker and the exporter do.
pub async fn connect_backends(
    settings: &Settings,
    redis: &RedisArgs,
) -> Result<Backends, AppError> {
    let store = open_database(settings).await?;
    let redis_url = settings.redis_url.expose();
    let conn = match crate::queue::connect_redis(redis_url).await {
        Ok(conn) => conn,
        Err(e) => {
            let _ = store.close().await;
            return Err(AppError::Redis {
                url: crate::redact::redact_url(redis_url),
                message: e.detail(),
            });
        }
    };
    let locks =
        crate::lease::RedisLocks::new(conn.clone(), redis.prefix.value.clone(), settings.lease_ttl);
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
    Run(#[from] crate::modes::batch::RunError),
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

/// A token cancelled on the first SIGINT or SIGTERM (`run`, `demo`, `console`: joins in flight
/// end cleanly, no new one starts).
pub fn stop_on_signal() -> tokio_util::sync::CancellationToken {
    let stop = tokio_util::sync::CancellationToken::new();
    let cancel = stop.clone();
    tokio::spawn(async move {
        if shutdown_signal().await.is_ok() {
            tracing::warn!("stop requested: ending the joins in flight, starting no new one");
            cancel.cancel();
        }
    });
    stop
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
