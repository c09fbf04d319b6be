//! Single-machine mode: SmartJoiner's `run_batch`, on the same join procedure, without Redis.
//!
//! One batch per run (cron every two hours, as SmartJoiner): leftovers of an interrupted run
//! plus up to `batch_size` `new` targets of the niche. Every target gets its own task; accounts
//! are shared through in-process leases, so each account keeps its own pace while different
//! accounts work in parallel. A target whose next chance lies further away than `max_wait` is
//! given back to `new` for the next run, as SmartJoiner does.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::accounts_config::AccountsConfig;
use crate::config::Settings;
use crate::domain::{JoinTask, TargetStatus};
use crate::join::{ExecutionOutcome, JoinError, JoinService};
use crate::modes::wiring::{AppError, TelegramArgs, join_service, open_database, telegram};
use crate::ops::output::shown;
use crate::store::{Store, StoreError, Target};

/// Steps of a batch run at once (each holds a database connection for its statements).
const RUN_LANES: usize = 16;
/// How often a batch checks that its SQLite file is still the one it opened.
const FILE_CHECK_EVERY: Duration = Duration::from_secs(2);

/// What one batch came to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchReport {
    /// Targets the batch took (leftovers included).
    pub taken: usize,
    /// Final status of each taken target, counted.
    pub by_status: BTreeMap<String, usize>,
    /// The batch was stopped (SIGINT/SIGTERM) before every target settled.
    pub interrupted: bool,
}

impl std::fmt::Display for BatchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.interrupted {
            write!(f, "interrupted: ")?;
        }
        write!(f, "{} targets:", self.taken)?;
        for (status, n) in &self.by_status {
            write!(f, " {status} {n}")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Join(#[from] JoinError),
    #[error("a batch task failed: {0}")]
    Task(String),
}

/// The counterpart of SmartJoiner's Python class.
pub struct SmartJoiner {
    service: JoinService,
    pool: String,
    max_wait: Duration,
    stop: CancellationToken,
}

impl SmartJoiner {
    /// `service` must be built on [`crate::lease::LocalLocks`] (or Redis leases when several
    /// machines share accounts).
    pub fn new(service: JoinService, pool: impl Into<String>, max_wait: Duration) -> Self {
        Self { service, pool: pool.into(), max_wait, stop: CancellationToken::new() }
    }

    /// Stops the batch when `stop` is cancelled: no new attempt starts, joins in flight end
    /// and are recorded (an in-doubt one stays pinned to its account), waiting targets stay
    /// `queued` for the next run, and `run_batch` returns a report marked interrupted.
    pub fn with_stop(mut self, stop: CancellationToken) -> Self {
        self.stop = stop;
        self
    }

    /// Runs one batch to the end and reports how each target ended.
    pub async fn run_batch(&self, niche: &str, batch_size: u64) -> Result<BatchReport, RunError> {
        let store = self.service.store();
        let mut batch = leftovers(store, niche).await?;
        let now = store.now();
        batch.extend(store.queue_new_targets(niche, batch_size, now).await?);
        let total = batch.len();
        if total == 0 {
            info!(niche, "no new targets in niche {niche}");
        }
        // A lane is held while a target's step runs, not while it waits for its account's
        // moment: up to RUN_LANES steps at once (fewer with fewer accounts), which is what the
        // database's connections serve; the waiting targets are sent to moments of their own
        // (see `join::WaitBook`), so they do not wake together.
        let workable =
            store.accounts(Some(&self.pool)).await?.iter().filter(|a| a.status.can_work()).count();
        let lanes = Arc::new(Semaphore::new(workable.clamp(1, RUN_LANES)));
        let mut tasks = tokio::task::JoinSet::new();
        for (i, target) in batch.iter().enumerate() {
            let service = self.service.clone();
            let job = JoinTask::new(target.id, self.pool.clone()).into_current();
            let max_wait = self.max_wait;
            let lanes = lanes.clone();
            let line = format!("[{}/{total}] group {}", i + 1, target.link);
            let stop = self.stop.clone();
            tasks.spawn(async move { settle(&service, job, max_wait, &stop, &lanes, &line).await });
        }
        // The database file is watched while the batch runs: SQLite goes on writing to a file
        // that was deleted or replaced, and everything would be lost at exit.
        let mut watch = tokio::time::interval(FILE_CHECK_EVERY);
        let mut file_error = None;
        loop {
            tokio::select! {
                joined = tasks.join_next() => match joined {
                    Some(joined) => joined.map_err(|e| RunError::Task(e.to_string()))??,
                    None => break,
                },
                _ = watch.tick(), if file_error.is_none() => {
                    if let Err(e) = store.check_file() {
                        warn!(error = %crate::redact::Chain(&e), "stopping the batch");
                        self.stop.cancel();
                        file_error = Some(e);
                    }
                }
            }
        }
        if let Some(e) = file_error {
            return Err(e.into());
        }
        store.check_file()?;
        let interrupted = self.stop.is_cancelled();
        if interrupted {
            warn!(
                niche,
                "batch interrupted: joins in flight ended, the rest waits for the next run"
            );
        }
        let mut report = BatchReport { taken: total, interrupted, ..BatchReport::default() };
        // One statement per few thousand targets (`Store::target_statuses`), not one per target:
        // at 50,000 targets the per-target reads took longer than minutes of joins.
        let ids: Vec<i64> = batch.iter().map(|t| t.id).collect();
        let statuses = store.target_statuses(&ids).await?;
        for id in &ids {
            let status = statuses.get(id).copied().unwrap_or(TargetStatus::New);
            *report.by_status.entry(status.to_string()).or_default() += 1;
        }
        info!(niche, "batch done: {report}");
        Ok(report)
    }
}

/// Targets an interrupted run left `queued` or `joining` in this niche: with no queue in this
/// mode, nothing else would ever pick them up.
async fn leftovers(store: &Store, niche: &str) -> Result<Vec<Target>, StoreError> {
    let mut found = store.targets(Some(niche), Some(TargetStatus::Queued)).await?;
    found.extend(store.targets(Some(niche), Some(TargetStatus::Joining)).await?);
    Ok(found)
}

async fn settle(
    service: &JoinService,
    job: crate::domain::JoinJobV1,
    max_wait: Duration,
    stop: &CancellationToken,
    lanes: &Arc<Semaphore>,
    line: &str,
) -> Result<(), RunError> {
    let store = service.store();
    let mut job = job;
    let mut first = true;
    loop {
        let lane = tokio::select! {
            lane = lanes.clone().acquire_owned() => lane.map_err(|e| RunError::Task(e.to_string()))?,
            () = stop.cancelled() => return Ok(()),
        };
        // An attempt that started runs to its end (its answer is recorded); none starts after
        // the stop.
        if stop.is_cancelled() {
            return Ok(());
        }
        if first {
            info!("{line}");
            first = false;
        }
        let outcome = service.execute(&job).await?;
        drop(lane);
        match outcome {
            ExecutionOutcome::Done(_) => return Ok(()),
            ExecutionOutcome::Reschedule { job: next, run_at } => {
                let wait = (run_at - service.store().now()).to_std().unwrap_or(Duration::ZERO);
                if wait > max_wait {
                    // Not in this run: a fresh target goes back to `new`; an in-doubt one stays
                    // claimed by its account and is picked up by the next run.
                    let reason = format!("next chance at {run_at}, after this run");
                    if store.give_back_target(next.target_id, &reason).await? {
                        info!(target_id = next.target_id, "given back for the next run: {reason}");
                    }
                    return Ok(());
                }
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = stop.cancelled() => return Ok(()),
                }
                job = next;
            }
        }
    }
}

/// One batch as `smart-joiner run` runs it, for every caller of SmartJoiner's
/// `run_batch(niche, batch_size)` (the command, the Python package): the accounts file
/// validated whole, the database opened by [`open_database`], new accounts added to `pool`,
/// then [`SmartJoiner::run_batch`] with in-process
/// leases; the store is closed at the end, whatever happened.
pub async fn run_batch(
    settings: &Settings,
    niche: &str,
    batch_size: u64,
    pool: &str,
    max_wait: Duration,
    telegram_args: &TelegramArgs,
    stop: tokio_util::sync::CancellationToken,
) -> Result<BatchReport, AppError> {
    let accounts = AccountsConfig::load(&settings.accounts_config)?;
    let store = open_database(settings).await?;
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
) -> Result<BatchReport, AppError> {
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
    Ok(SmartJoiner::new(service, pool, max_wait)
        .with_stop(stop)
        .run_batch(niche, batch_size)
        .await?)
}
