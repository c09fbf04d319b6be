//! One producer run (cron): recover lost work, then turn up to `batch_size` `new` targets of a
//! niche into jobs.
//!
//! Redis holds only what can be rebuilt. A `queued` target whose `next_run_at` is well past,
//! or a `joining` target whose account lease is gone and whose retry is well past due, gets its
//! job pushed again. The push's idempotency key is derived from the target's `next_run_at`, the
//! same key its original job carried, so while that job is alive in Redis the push is a no-op:
//! overlapping or repeated producer runs never put a target into two live jobs. A key whose job
//! has finished is freed first ([`JobQueue::push_recovery`]), so it cannot swallow the push.

use std::time::Duration;

use chrono::Utc;
use tracing::{debug, warn};

use crate::domain::{JoinJobV1, JoinTask, TargetStatus};
use crate::lease::AccountLocks;
use crate::queue::{JobQueue, QueueError};
use crate::store::{Store, StoreError, Target};

/// What one run should do.
#[derive(Debug, Clone)]
pub struct ProduceOptions {
    pub niche: String,
    pub batch_size: u64,
    pub pool: String,
    /// How far past due a target must be before its job is presumed lost.
    pub recover_after: Duration,
}

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProduceReport {
    /// `new` targets moved to `queued` and pushed.
    pub queued: usize,
    /// Past-due `queued` targets whose job was pushed again.
    pub recovered_queued: usize,
    /// Abandoned `joining` targets whose job was pushed again.
    pub recovered_joining: usize,
    /// Pushes that failed (the targets stay `queued` and are recovered by a later run).
    pub push_failures: usize,
}

impl std::fmt::Display for ProduceReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "queued {} new targets, recovered {} queued and {} joining, {} push failures",
            self.queued, self.recovered_queued, self.recovered_joining, self.push_failures
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Lease(#[from] crate::lease::LeaseError),
}

/// Most `new` targets taken per transaction of one run.
const PAGE: u64 = 10_000;
/// The first page is smaller: the workers get their first jobs after one push of this many
/// instead of after a whole page has been moved and pushed. Each next page is at most twice
/// the last, so the workers, busy with page k while page k + 1 is moved, are not left idle
/// waiting for a page much larger than the one they were given.
const FIRST_PAGE: u64 = PUSH_BATCH as u64;
/// Jobs pushed in one Redis round trip.
const PUSH_BATCH: usize = 1_000;

/// Most targets one run recovers; a larger backlog is worked off over the next runs.
const RECOVERY_LIMIT: u64 = 10_000;

pub async fn produce(
    store: &Store,
    queue: &JobQueue,
    locks: &dyn AccountLocks,
    opts: &ProduceOptions,
) -> Result<ProduceReport, ProduceError> {
    let now = store.now();
    let cutoff = now - chrono::Duration::from_std(opts.recover_after).unwrap_or_default();
    let mut report = ProduceReport::default();

    for target in store.stale_queued_targets(cutoff, RECOVERY_LIMIT).await? {
        if target.niche == opts.niche && push(queue, &target, &opts.pool, &mut report).await {
            report.recovered_queued += 1;
        }
    }
    for target in store.joining_targets(RECOVERY_LIMIT).await? {
        let past_due = target.next_run_at.is_none_or(|t| t < cutoff);
        if target.niche != opts.niche || target.status != TargetStatus::Joining || !past_due {
            continue;
        }
        let leased = match target.claimed_account_id {
            Some(account) => locks.is_held(account).await?,
            None => false,
        };
        if !leased && push(queue, &target, &opts.pool, &mut report).await {
            report.recovered_joining += 1;
        }
    }

    // The batch is taken in pages so memory stays flat whatever batch_size is, and each page is
    // pushed in batches of one Redis round trip each. Page k is pushed to Redis while page k + 1
    // is moved in Postgres: the two servers work side by side instead of taking turns.
    let mut remaining = opts.batch_size;
    let mut page = remaining.min(FIRST_PAGE);
    let niche = opts.niche.as_str();
    let mut current = if page > 0 {
        store.queue_new_targets_after(niche, 0, page, now).await?
    } else {
        Vec::new()
    };
    remaining -= current.len() as u64;
    while !current.is_empty() {
        let more = current.len() as u64 == page && remaining > 0;
        page = remaining.min(PAGE).min(page * 2);
        let after = current.last().map_or(0, |t| t.id);
        let next_page = async {
            if more {
                store.queue_new_targets_after(niche, after, page, now).await
            } else {
                Ok(Vec::new())
            }
        };
        let (next, (pushed, failed)) =
            tokio::join!(next_page, push_page(queue, &current, &opts.pool, now));
        report.queued += pushed;
        report.push_failures += failed;
        current = next?;
        remaining -= current.len() as u64;
    }
    debug!(niche = %opts.niche, pool = %opts.pool, "producer: {report}");
    Ok(report)
}

/// Pushes one page in batches of [`PUSH_BATCH`]; returns (pushed, failed).
async fn push_page(
    queue: &JobQueue,
    targets: &[Target],
    pool: &str,
    now: chrono::DateTime<Utc>,
) -> (usize, usize) {
    let (mut pushed, mut failed) = (0, 0);
    for chunk in targets.chunks(PUSH_BATCH) {
        let jobs = chunk
            .iter()
            .map(|t| (JoinTask::new(t.id, pool).into_current(), t.next_run_at.unwrap_or(now)))
            .collect();
        match queue.push_many(jobs).await {
            Ok(()) => pushed += chunk.len(),
            Err(e) => {
                warn!(error = %crate::redact::Chain(&e), "push failed; the targets stay queued for recovery");
                failed += chunk.len();
                continue;
            }
        }
        // Due jobs must not pile up in the scheduled set (see `JobQueue::promote_due`), and the
        // workers can start on this chunk while the next one is pushed.
        if let Err(e) = queue.promote_due().await {
            warn!(error = %crate::redact::Chain(&e), "moving due jobs to the ready list failed; workers do it too");
        }
    }
    (pushed, failed)
}

/// Pushes the job of a target presumed lost; returns whether one was pushed (not when a live
/// job already carries its schedule).
async fn push(queue: &JobQueue, target: &Target, pool: &str, report: &mut ProduceReport) -> bool {
    let job: JoinJobV1 = JoinTask::new(target.id, pool).into_current();
    let due = target.next_run_at.unwrap_or_else(Utc::now);
    match queue.push_recovery(job, due).await {
        Ok(pushed) => pushed,
        Err(e) => {
            warn!(target = %target.link, error = %crate::redact::Chain(&e), "push failed; the target stays queued for recovery");
            report.push_failures += 1;
            false
        }
    }
}
