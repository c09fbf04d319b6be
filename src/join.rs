//! The one join procedure (docs/design.md, "One join, step by step"), shared by the worker and
//! `run`.
//!
//! [`JoinService::execute`] runs one job to the end of one step and says what should happen
//! next; it never sleeps for pacing and never relies on the queue's retries. Every domain outcome
//! is `Ok`; `Err` means the infrastructure (database, lease store) failed and the job should be
//! tried again later as it is.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use tracing::{Instrument, info, info_span, warn};

use crate::accounts_config::AccountsConfig;
use crate::domain::{
    AccountChange, AccountStatus, ActiveHours, DecideCtx, Decision, JoinJobV1, JoinOutcome, Next,
    Pacing, TargetStatus, decide, within_hours,
};
use crate::lease::{AccountLocks, Lease, LeaseError};
use crate::store::{Account, Applied, Attempt, Claimable, Limits, Store, StoreError, Take, Target};
use crate::telegram::{ConnectError, Telegram};

/// Concurrent jobs spread over the least recently active accounts in groups of this many.
pub const PICK_SPREAD: u64 = 64;
/// How many eligible accounts one pick returns.
pub const PICK_CANDIDATES: u64 = 4;
/// Picks per execution before a job whose candidates were all taken by others waits a moment.
const PICK_ROUNDS: usize = 4;
/// A hold outlives the longest job (three calls under the call timeout) by this much.
const HOLD_MARGIN: Duration = Duration::from_secs(5);
/// When a target pinned to an account this process cannot connect is looked at again.
const NOT_HERE_RETRY: Duration = Duration::from_secs(600);
/// How long a decision that the database refused for a moment is tried again: longer than a
/// database restart or failover (tens of seconds), because the answer may carry Telegram's
/// verdict about the account that nothing else records.
const DECISION_RETRY_FOR: Duration = Duration::from_secs(60);
/// The gate before a join is sent gets this long: a statement lost in a network partition
/// must not keep a Telegram connection open past the hold (which outlives three calls and the
/// gate by the rest of the margin).
const GATE_TIMEOUT: Duration = Duration::from_millis(2500);
/// When every eligible account is leased by others, look again after this long.
const BUSY_RETRY: Duration = Duration::from_millis(500);
/// The shortest wait of a job sent to an account's free moment (no busy loop on a moment that
/// is just now).
const BOOK_MIN_WAIT: Duration = Duration::from_millis(20);
/// How long the book of free moments ([`WaitBook`]) is used before it is read again.
const BOOK_MAX_AGE: Duration = Duration::from_secs(1);
/// A moment handed to a waiting job counts as still to come for this long after it passed
/// (the queue runs a job up to a second late, plus a poll).
const BOOK_GRACE: chrono::Duration = chrono::Duration::seconds(2);
/// An account's profile (Premium, channel limit, freeze) is read again on a join's connect
/// once it is this old: one help.getAppConfig per account and day.
const PROFILE_MAX_AGE: chrono::Duration = chrono::Duration::hours(24);

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Lease(#[from] LeaseError),
}

/// What the caller does after one execution.
#[derive(Debug, Clone, PartialEq)]
pub enum ExecutionOutcome {
    /// Nothing more for this job: the target is settled, given back, or someone else's.
    Done(Settled),
    /// Run `job` again at `run_at` (the target's `next_run_at` already says so).
    Reschedule { job: JoinJobV1, run_at: DateTime<Utc> },
}

/// Why a job ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Settled {
    /// The target reached a terminal status in this execution.
    Finished(TargetStatus),
    /// The target was already terminal or owned by another claim: a duplicate job.
    NothingToDo,
    /// No account of the pool can ever take it: back to `new`.
    GivenBack,
    /// Our lease epoch was stale: nothing was written.
    Stale,
    /// Pinned to an account this process has no valid config entry for, or that an operator
    /// paused: left pinned.
    AccountNotHere,
}

/// An account taken for one attempt: its Redis lease, its fencing epoch, and when.
struct Held {
    lease: Lease,
    epoch: i64,
    started_at: DateTime<Utc>,
}

enum Taken {
    /// Taken, with the target as the take claimed it.
    Yes(Held, Box<Target>),
    AccountBusy,
    TargetGone,
}

/// What became of a job handled as one for a free target.
enum Free {
    Done(ExecutionOutcome),
    /// The target is not free (pinned to an account, settled, unknown): load it and route it.
    NotFree,
}

/// A workable target no account holds: neither claimed by an in-doubt attempt nor bound.
fn is_free(target: &Target) -> bool {
    target.status.is_workable()
        && !(target.status == TargetStatus::Joining && target.claimed_account_id.is_some())
        && target.assigned_account_id.is_none()
}

/// Everything the procedure needs, passed in.
pub struct JoinDeps {
    pub store: Store,
    pub locks: Arc<dyn AccountLocks>,
    pub telegram: Arc<dyn Telegram>,
    pub accounts: Arc<AccountsConfig>,
    pub pacing: Pacing,
    pub limits: Limits,
    /// Timeout of each Telegram call (connect, join, disconnect).
    pub call_timeout: Duration,
    /// Recorded in join_attempts.worker.
    pub worker_name: String,
}

/// Where the jobs of this process that find no account free are sent: per pool, the next
/// moment each account may act that no waiting job was sent to yet, earliest first.
///
/// Without it every such job waited for the same earliest moment: with N accounts resting
/// and N jobs waiting, each account that freed up woke all of them, one took it, and the rest
/// read every account's times again to sleep until the next one (a thundering herd that cost
/// O(N) per job and per account freed, and left accounts idle while the herd ran). Now each
/// waiting job gets a moment of its own: the book hands out the earliest one and puts the
/// account back one shortest pause later (after the job it was handed to has used it). It is
/// read from the database ([`Store::eligible_times`]) at most every [`BOOK_MAX_AGE`], keeping
/// the moments it handed out that are still to come. It only decides when a job looks again:
/// eligibility is checked by the pick and the take as before, so a stale book costs a wasted
/// look, never a rest cut short. Processes keep books of their own; two processes may send a
/// job each to one moment, and the second picks again.
#[derive(Default)]
struct WaitBook {
    pools: std::collections::HashMap<String, PoolBook>,
}

struct PoolBook {
    read_at: tokio::time::Instant,
    /// (free at, account), earliest first.
    slots: std::collections::BinaryHeap<std::cmp::Reverse<(DateTime<Utc>, i64)>>,
    /// The last moment handed out per account.
    handed: std::collections::HashMap<i64, DateTime<Utc>>,
}

impl PoolBook {
    /// Hands out the earliest moment at or after `now` of an account not in `excluded`, and
    /// puts the account back `pause` later (`next_open` keeps it inside its hours).
    fn hand_out(
        &mut self,
        now: DateTime<Utc>,
        excluded: &[i64],
        pause: chrono::Duration,
        next_open: impl Fn(i64, DateTime<Utc>) -> DateTime<Utc>,
    ) -> Option<(i64, DateTime<Utc>)> {
        let mut aside = Vec::new();
        let found = loop {
            let Some(std::cmp::Reverse((at, id))) = self.slots.pop() else { break None };
            if excluded.contains(&id) {
                aside.push((at, id));
                continue;
            }
            if let Some(handed) = self.handed.get(&id)
                && at < *handed + pause
            {
                // A job was sent to this account at `handed` since this entry was written (it
                // came early and waits for the account): the account is free for the next job
                // a pause after that.
                self.slots.push(std::cmp::Reverse((next_open(id, *handed + pause), id)));
                continue;
            }
            if at < now {
                // It was free by the book, yet the caller found no account free: someone took
                // it since, so it rests again from about now.
                self.slots.push(std::cmp::Reverse((next_open(id, now + pause), id)));
                continue;
            }
            self.handed.insert(id, at);
            self.slots.push(std::cmp::Reverse((next_open(id, at + pause), id)));
            break Some((id, at));
        };
        for (at, id) in aside {
            self.slots.push(std::cmp::Reverse((at, id)));
        }
        found
    }
}

#[derive(Clone)]
pub struct JoinService {
    pub(crate) deps: Arc<JoinDeps>,
    /// Accounts of the database this process has no valid config entry for: never eligible
    /// here, and their status is left alone (a local problem is not Telegram's verdict).
    unconfigured: Arc<std::sync::Mutex<std::collections::HashSet<i64>>>,
    /// The active hours of the pool's accounts that have none of their own (`ACTIVE_HOURS`).
    pool_hours: Option<Arc<ActiveHours>>,
    /// When waiting jobs look again (see [`WaitBook`]).
    book: Arc<tokio::sync::Mutex<WaitBook>>,
}

impl JoinService {
    pub fn new(deps: JoinDeps) -> Self {
        Self {
            deps: Arc::new(deps),
            unconfigured: Arc::default(),
            pool_hours: None,
            book: Arc::default(),
        }
    }

    /// Gives the accounts without their own active hours these (the pool's).
    pub fn with_active_hours(mut self, hours: Option<ActiveHours>) -> Self {
        self.pool_hours = hours.map(Arc::new);
        self
    }

    /// An account's active hours: its own (as stored), else the pool's.
    fn hours_of(&self, account_id: i64, own: Option<&str>) -> Option<ActiveHours> {
        let (hours, unreadable) = ActiveHours::of_account(own, self.pool_hours.as_deref());
        if let Some(e) = unreadable {
            warn!(account_id, error = %e, "stored active hours unreadable: the pool's apply");
        }
        hours
    }

    /// The workable accounts of `pool` that have active hours, with them.
    pub(crate) async fn hours_in_pool(
        &self,
        pool: &str,
    ) -> Result<std::collections::HashMap<i64, ActiveHours>, JoinError> {
        Ok(self.deps.store.hours_in_pool(pool, self.pool_hours.as_deref()).await?)
    }

    pub(crate) fn unconfigured(&self) -> Vec<i64> {
        self.unconfigured.lock().unwrap_or_else(|p| p.into_inner()).iter().copied().collect()
    }

    /// Whether this process can connect `account`; the first time it cannot, says why once.
    pub(crate) fn configured(&self, account: &Account) -> bool {
        let d = &*self.deps;
        if d.accounts.get(&account.session_name).is_some() {
            return true;
        }
        let first = self.unconfigured.lock().unwrap_or_else(|p| p.into_inner()).insert(account.id);
        if first {
            let name = crate::accounts_config::display_name(&account.session_name);
            match d.accounts.rejection(&account.session_name) {
                Some(problem) => {
                    warn!(account = %name, "account not used by this process: its entry in the accounts file is invalid: {problem}")
                }
                None => {
                    warn!(account = %name, "account not used by this process: the accounts file has no entry for it")
                }
            }
        }
        false
    }

    pub fn store(&self) -> &Store {
        &self.deps.store
    }

    pub fn pacing(&self) -> &Pacing {
        &self.deps.pacing
    }

    /// Runs one job (the steps of docs/design.md).
    pub async fn execute(&self, job: &JoinJobV1) -> Result<ExecutionOutcome, JoinError> {
        let d = &*self.deps;
        d.store.resync_clock_if_due().await;
        // Rests and holds other processes wrote are compared with the earliest the database's
        // clock can read now, so a rest ends late rather than early by this clock's error.
        let now = d.store.earliest_now();
        let span = info_span!(
            "join",
            target_id = job.target_id,
            target = tracing::field::Empty,
            account = tracing::field::Empty,
            outcome = tracing::field::Empty
        );
        async move {
            // A follow-up (generation > 0) is often a retry pinned to its account (an in-doubt
            // join): its target is loaded first, so the retry reaches its account without a
            // detour through the pick, ahead of free jobs sent to the same free moment.
            if job.generation > 0 {
                return self.execute_loaded(job, now).await;
            }
            // Most first jobs are for a free target: pick an account and take it, and the take
            // loads the target under its lock. A target it cannot claim (pinned to an account,
            // settled, unknown) is loaded and routed as such.
            match self.execute_free(job, None, now).await? {
                Free::Done(outcome) => Ok(outcome),
                Free::NotFree => self.execute_loaded(job, now).await,
            }
        }
        .instrument(span)
        .await
    }

    /// A job whose target is loaded first.
    async fn execute_loaded(
        &self,
        job: &JoinJobV1,
        now: DateTime<Utc>,
    ) -> Result<ExecutionOutcome, JoinError> {
        // 1. Load the target; anything not workable is a duplicate job.
        let Some(target) = self.deps.store.target(job.target_id).await? else {
            warn!(target_id = job.target_id, "job for an unknown target dropped");
            return Ok(ExecutionOutcome::Done(Settled::NothingToDo));
        };
        if !target.status.is_workable() {
            return Ok(ExecutionOutcome::Done(Settled::NothingToDo));
        }
        tracing::Span::current().record("target", tracing::field::display(&target.link));
        // 2. Pick an account: a claimed (in-doubt) target stays with its account, and so does a
        // target bound before it was joined (an adopted SmartJoiner row assigned ahead of its
        // join): a binding is forever.
        match (target.status, target.claimed_account_id, target.assigned_account_id) {
            (TargetStatus::Joining, Some(account_id), _) => {
                self.execute_pinned(job, &target, account_id, true, now).await
            }
            (_, _, Some(bound)) => self.execute_pinned(job, &target, bound, false, now).await,
            _ => match self.execute_free(job, Some(&target), now).await? {
                Free::Done(outcome) => Ok(outcome),
                // Claimed or bound between the load and the take: another job's now.
                Free::NotFree => Ok(ExecutionOutcome::Done(Settled::NothingToDo)),
            },
        }
    }

    /// Steps 2-7 for a target no account holds: `target` is `None` when it was not loaded (the
    /// take loads it), and then `NotFree` says the target is not one this path may handle.
    async fn execute_free(
        &self,
        job: &JoinJobV1,
        target: Option<&Target>,
        now: DateTime<Utc>,
    ) -> Result<Free, JoinError> {
        let d = &*self.deps;
        // Accounts outside their active hours are not picked; they count again once open. Each
        // candidate is checked by the rule the pool's hours are read with; the first one found
        // closed has the whole pool's read, and every closed account is left out from then on.
        let mut hours: Option<std::collections::HashMap<i64, ActiveHours>> = None;
        let mut closed: Vec<i64> = Vec::new();
        // Accounts other jobs took between our pick and our lease are left out of the next
        // pick, so a crowd of jobs spreads over the pool instead of waiting for the first few.
        let mut not_here = job.excluded_accounts.clone();
        not_here.extend(self.unconfigured());
        let mut tried = not_here.clone();
        for _ in 0..PICK_ROUNDS {
            let candidates = d
                .store
                .pick_accounts(&job.pool, now, &tried, &d.limits, PICK_SPREAD, PICK_CANDIDATES)
                .await?;
            if candidates.is_empty() {
                break;
            }
            for account in candidates {
                if !self.configured(&account) {
                    not_here.push(account.id);
                    tried.push(account.id);
                    continue;
                }
                let own = self.hours_of(account.id, account.active_hours.as_deref());
                if own.is_some_and(|h| !h.is_open(account.id, now)) {
                    if hours.is_none() {
                        let pool = self.hours_in_pool(&job.pool).await?;
                        closed = pool
                            .iter()
                            .filter(|(id, h)| !h.is_open(**id, now))
                            .map(|(id, _)| *id)
                            .collect();
                        tried.extend(&closed);
                        hours = Some(pool);
                    }
                    if !closed.contains(&account.id) {
                        closed.push(account.id);
                        tried.push(account.id);
                    }
                    continue;
                }
                // 3. Lease it; a busy or no-longer-eligible account means: next candidate.
                match self.take(&account, job.target_id, Claimable::FreeOnly).await? {
                    Taken::Yes(held, claimed) => {
                        tracing::Span::current()
                            .record("target", tracing::field::display(&claimed.link));
                        let outcome =
                            self.attempt_and_give_back(job, &claimed, &account, held, 0).await?;
                        return Ok(Free::Done(outcome));
                    }
                    Taken::AccountBusy => tried.push(account.id),
                    Taken::TargetGone if target.is_some() => {
                        return Ok(Free::Done(ExecutionOutcome::Done(Settled::NothingToDo)));
                    }
                    Taken::TargetGone => return Ok(Free::NotFree),
                }
            }
        }
        // Nothing taken: what follows moves the target, so it must be a free one.
        let loaded;
        let target = match target {
            Some(target) => target,
            None => match d.store.target(job.target_id).await? {
                Some(t) if is_free(&t) => {
                    loaded = t;
                    &loaded
                }
                _ => return Ok(Free::NotFree),
            },
        };
        let any_candidate = tried.len() > not_here.len() + closed.len();
        let retry_at = now + chrono::Duration::from_std(BUSY_RETRY).unwrap_or_default();
        // Eligible accounts exist, other jobs took them first: look again shortly.
        let earliest = if any_candidate {
            Some((retry_at, job.wait_for))
        } else {
            let hours = match hours {
                Some(hours) => hours,
                None => self.hours_in_pool(&job.pool).await?,
            };
            let soon = now + chrono::Duration::from_std(BOOK_MIN_WAIT).unwrap_or_default();
            // Nobody free now. A job sent to an account's free moment that came before the
            // account is free again waits for it; any other gets a moment of its own from the
            // book, or gives the target back when no account of the pool can ever take it.
            match self.appointed_wait(job, &not_here, &hours, now).await? {
                Some(at) => Some((at.max(soon), job.wait_for)),
                None => self
                    .appointment(&job.pool, now, &not_here, &hours)
                    .await?
                    .map(|(id, at)| (at.max(soon), Some(id))),
            }
        };
        Ok(Free::Done(match earliest {
            Some((run_at, wait_for)) => {
                d.store.requeue_target(target.id, run_at).await?;
                ExecutionOutcome::Reschedule { job: JoinJobV1 { wait_for, ..job.clone() }, run_at }
            }
            None => {
                info!(target = %target.link, "No available accounts");
                d.store.give_back_target(target.id, "No available accounts").await?;
                ExecutionOutcome::Done(Settled::GivenBack)
            }
        }))
    }

    /// When the account a job was sent to (`wait_for`) is free again, if that is still to come
    /// and no further off than one longest pause: the job came a little before its account
    /// (the queue runs jobs in whole seconds, the previous join ended late) and keeps its turn.
    async fn appointed_wait(
        &self,
        job: &JoinJobV1,
        not_here: &[i64],
        hours: &std::collections::HashMap<i64, ActiveHours>,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, JoinError> {
        let d = &*self.deps;
        let Some(id) = job.wait_for.filter(|id| !not_here.contains(id)) else {
            return Ok(None);
        };
        let Some(account) = d.store.account(id).await? else { return Ok(None) };
        if account.pool != job.pool || !account.status.can_work() {
            return Ok(None);
        }
        let mut free = account.next_allowed_action_time.unwrap_or(now);
        if account.held_until.is_some_and(|h| h > now) {
            // Mid-join: its decision rests it from the end of that join.
            let held_rest = d.pacing.join_pause_min.min(d.pacing.error_pause);
            free = free.min(now + chrono::Duration::from_std(held_rest).unwrap_or_default());
        }
        if let Some(h) = hours.get(&id) {
            free = h.next_open(id, free);
        }
        let horizon = chrono::Duration::from_std(d.pacing.join_pause_max).unwrap_or_default()
            + chrono::Duration::seconds(1);
        if free <= now || free > now + horizon {
            return Ok(None);
        }
        // The book learns that this moment of the account is taken.
        let mut book = self.book.lock().await;
        if let Some(pool_book) = book.pools.get_mut(&job.pool) {
            let handed = pool_book.handed.entry(id).or_insert(free);
            *handed = (*handed).max(free);
        }
        Ok(Some(free))
    }

    /// A moment of its own for a job that found no account free (see [`WaitBook`]): the
    /// account and when it may act. `None` when no account of the pool can ever take the
    /// target (all need an operator, are excluded, or are full).
    async fn appointment(
        &self,
        pool: &str,
        now: DateTime<Utc>,
        not_here: &[i64],
        hours: &std::collections::HashMap<i64, ActiveHours>,
    ) -> Result<Option<(i64, DateTime<Utc>)>, JoinError> {
        let d = &*self.deps;
        let pause = chrono::Duration::from_std(d.pacing.join_pause_min).unwrap_or_default();
        let next_open =
            |id: i64, at: DateTime<Utc>| hours.get(&id).map_or(at, |h| h.next_open(id, at));
        let mut book = self.book.lock().await;
        let stale = book.pools.get(pool).is_none_or(|b| {
            b.read_at.elapsed() >= BOOK_MAX_AGE || b.slots.iter().all(|s| not_here.contains(&s.0.1))
        });
        if stale {
            // An account mid-join is expected back after the shortest pause a decision writes.
            let held_rest = d.pacing.join_pause_min.min(d.pacing.error_pause);
            let unconfigured = self.unconfigured();
            let times =
                d.store.eligible_times(pool, now, &unconfigured, &d.limits, held_rest).await?;
            let handed = book.pools.remove(pool).map(|b| b.handed).unwrap_or_default();
            // Moments handed out that are still to come stay taken: the account is free for
            // the next job only a pause after them.
            let handed: std::collections::HashMap<i64, DateTime<Utc>> =
                handed.into_iter().filter(|(_, at)| *at + BOOK_GRACE > now).collect();
            let slots = times
                .into_iter()
                .map(|(id, at)| {
                    let at = next_open(id, at);
                    let at = match handed.get(&id) {
                        Some(h) => at.max(next_open(id, *h + pause)),
                        None => at,
                    };
                    std::cmp::Reverse((at, id))
                })
                .collect();
            let fresh = PoolBook { read_at: tokio::time::Instant::now(), slots, handed };
            book.pools.insert(pool.to_owned(), fresh);
        }
        let Some(pool_book) = book.pools.get_mut(pool) else { return Ok(None) };
        Ok(pool_book.hand_out(now, not_here, pause, next_open))
    }

    async fn execute_pinned(
        &self,
        job: &JoinJobV1,
        target: &Target,
        account_id: i64,
        in_doubt: bool,
        now: DateTime<Utc>,
    ) -> Result<ExecutionOutcome, JoinError> {
        let d = &*self.deps;
        let account = d.store.account(account_id).await?;
        if account.as_ref().is_some_and(|a| a.status == AccountStatus::Paused) {
            // Paused by an operator: it works again once resumed, so the pin stays (moving it
            // could make a second account join); an operator who knows the account is not a
            // member releases it (`targets release`, the console).
            let later = now + chrono::Duration::from_std(NOT_HERE_RETRY).unwrap_or_default();
            d.store.touch_next_run(&[target.id], later).await?;
            return Ok(ExecutionOutcome::Done(Settled::AccountNotHere));
        }
        if !in_doubt && !account.as_ref().is_some_and(|a| a.status.can_work()) {
            // Bound to an account that will not act again: no other account may take the
            // group, so it waits for an operator, back in `new`.
            let reason = format!("bound to account {account_id}, which cannot work");
            d.store.give_back_target(target.id, &reason).await?;
            return Ok(ExecutionOutcome::Done(Settled::GivenBack));
        }
        let Some(account) = account.filter(|a| a.status.can_work()) else {
            // The account needs an operator: whatever its last join did, it will not act again.
            let run_at = now;
            d.store.release_claim(target.id, account_id, run_at).await?;
            return Ok(ExecutionOutcome::Reschedule {
                job: job.follow_up(Some(account_id)),
                run_at,
            });
        };
        if let Some(at) = account.next_allowed_action_time.filter(|t| *t > now) {
            // An account mid-join (another target's) is reserved until its hold could end, and
            // that join's decision brings its rest back to one pause after the join: look again
            // shortly instead of waiting out the whole reservation.
            let busy = now + chrono::Duration::from_std(BUSY_RETRY).unwrap_or_default();
            let run_at =
                if account.held_until.is_some_and(|h| h > now) { at.min(busy) } else { at };
            d.store.touch_next_run(&[target.id], run_at).await?;
            return Ok(ExecutionOutcome::Reschedule { job: job.clone(), run_at });
        }
        if let Some(hours) = self.hours_of(account.id, account.active_hours.as_deref())
            && !hours.is_open(account.id, now)
        {
            // Outside its active hours: the pinned target waits for its window.
            let run_at = hours.next_open(account.id, now);
            d.store.touch_next_run(&[target.id], run_at).await?;
            return Ok(ExecutionOutcome::Reschedule { job: job.clone(), run_at });
        }
        if !self.configured(&account) {
            // Pinned to an account this process cannot connect: it stays pinned, for a process
            // that has the account's entry (the producer recovers it once it is overdue, `run`
            // takes it as a leftover next time).
            let later = now + chrono::Duration::from_std(NOT_HERE_RETRY).unwrap_or_default();
            d.store.touch_next_run(&[target.id], later).await?;
            return Ok(ExecutionOutcome::Done(Settled::AccountNotHere));
        }
        // A claim without a recorded in-doubt answer is a crash mid-join: in doubt as well.
        let tries = u32::try_from(target.in_doubt_tries).unwrap_or(0);
        let previous = if in_doubt { tries.max(1) } else { tries };
        match self.take(&account, target.id, Claimable::Any).await? {
            Taken::Yes(held, claimed) => {
                self.attempt_and_give_back(job, &claimed, &account, held, previous).await
            }
            Taken::AccountBusy => {
                let run_at = now + chrono::Duration::from_std(BUSY_RETRY).unwrap_or_default();
                d.store.touch_next_run(&[target.id], run_at).await?;
                Ok(ExecutionOutcome::Reschedule { job: job.clone(), run_at })
            }
            Taken::TargetGone => Ok(ExecutionOutcome::Done(Settled::NothingToDo)),
        }
    }

    /// Steps 3-4: leases the account in Redis, then takes it and claims the target in
    /// Postgres (between listing and leasing another holder may have used the account). The
    /// account is held back for the shortest join pause from here on, counted from the latest
    /// moment the join can be sent (after the connect and the join call, each under the call
    /// timeout): the join may reach Telegram even if this process dies before recording the
    /// answer (invariant 5).
    async fn take(
        &self,
        account: &Account,
        target_id: i64,
        which: Claimable,
    ) -> Result<Taken, JoinError> {
        let d = &*self.deps;
        let Some(lease) = d.locks.try_acquire(account.id).await? else {
            return Ok(Taken::AccountBusy);
        };
        let started_at = d.store.earliest_now();
        let rest = d.call_timeout.saturating_mul(2) + d.pacing.join_pause_min;
        let rest_until =
            started_at + chrono::Duration::from_std(rest).unwrap_or(chrono::Duration::MAX);
        let taken = d
            .store
            .take_and_load(account.id, target_id, which, started_at, self.hold_until(), rest_until)
            .await;
        match taken {
            Ok((Take::Taken { epoch }, Some(claimed))) => {
                Ok(Taken::Yes(Held { lease, epoch, started_at }, Box::new(claimed)))
            }
            Ok((Take::Taken { .. }, None)) => {
                // Claimed under the take's lock, so it exists: a store that says otherwise is
                // not trusted with the join.
                self.release(&lease).await;
                Err(StoreError::Invalid(format!("target {target_id} taken but not returned"))
                    .into())
            }
            Ok((Take::AccountBusy, _)) => {
                self.release(&lease).await;
                Ok(Taken::AccountBusy)
            }
            Ok((Take::TargetGone, _)) => {
                self.release(&lease).await;
                Ok(Taken::TargetGone)
            }
            Err(e) => {
                self.release(&lease).await;
                Err(e.into())
            }
        }
    }

    /// Runs the attempt, then gives the account back: ends a hold no decision ended (the
    /// decision was not written), then the Redis lease.
    async fn attempt_and_give_back(
        &self,
        job: &JoinJobV1,
        target: &Target,
        account: &Account,
        held: Held,
        previous_in_doubt: u32,
    ) -> Result<ExecutionOutcome, JoinError> {
        let result = self.attempt(job, target, account, &held, previous_in_doubt).await;
        if matches!(result, Err(_) | Ok(ExecutionOutcome::Done(Settled::Stale))) {
            let (id, epoch) = (held.lease.account_id, held.epoch);
            if let Err(e) = self.deps.store.release_hold(id, epoch).await {
                warn!(account_id = id, error = %crate::redact::Chain(&e), "hold release failed; it expires by itself");
            }
        }
        self.release(&held.lease).await;
        match result {
            Ok(ExecutionOutcome::Done(Settled::Stale)) => {
                self.after_stale(job, target.id, held.lease.account_id).await
            }
            other => other,
        }
    }

    /// After a stale decision: a target still pinned to this account (another process took the
    /// account meanwhile, a check or a join elsewhere) would otherwise wait, unscheduled, for
    /// the producer's recovery under the schedule its consumed job carried. It gets a new
    /// schedule and a follow-up job instead, which retries it with its account once free.
    async fn after_stale(
        &self,
        job: &JoinJobV1,
        target_id: i64,
        account_id: i64,
    ) -> Result<ExecutionOutcome, JoinError> {
        let d = &*self.deps;
        let Some(now) = d.store.target(target_id).await? else {
            return Ok(ExecutionOutcome::Done(Settled::Stale));
        };
        if !(now.status == TargetStatus::Joining && now.claimed_account_id == Some(account_id)) {
            return Ok(ExecutionOutcome::Done(Settled::Stale));
        }
        let run_at = d.store.now() + chrono::Duration::from_std(BUSY_RETRY).unwrap_or_default();
        d.store.touch_next_run(&[target_id], run_at).await?;
        Ok(ExecutionOutcome::Reschedule { job: job.follow_up(None), run_at })
    }

    async fn release(&self, lease: &Lease) {
        match self.deps.locks.release(lease).await {
            Ok(true) => {}
            Ok(false) => warn!(account_id = lease.account_id, "lease was already lost at release"),
            Err(e) => {
                warn!(account_id = lease.account_id, error = %crate::redact::Chain(&e), "lease release failed; it will expire")
            }
        }
    }

    /// Steps 5-6 with the account taken and the target claimed: call Telegram, decide, write.
    async fn attempt(
        &self,
        job: &JoinJobV1,
        target: &Target,
        account: &Account,
        held: &Held,
        previous_in_doubt: u32,
    ) -> Result<ExecutionOutcome, JoinError> {
        let d = &*self.deps;
        let (lease, epoch, started_at) = (&held.lease, held.epoch, held.started_at);
        tracing::Span::current().record("account", account.session_name.as_str());
        info!(account = %account.session_name, target = %target.link, "using account");

        // 5. Connect and join while the account stays taken; losing it aborts at once. An
        // answer that is already there wins over a loss noticed at the same moment (a process
        // resumed after a freeze sees both): Telegram's verdict must not be dropped.
        let outcome = tokio::select! {
            biased;
            outcome = self.call_telegram(account, target, epoch) => outcome,
            lost = self.keep_held(lease, epoch) => {
                warn!(account = %account.session_name, reason = %lost, "account lost: join aborted");
                JoinOutcome::InDoubt { reason: format!("account lost: {lost}") }
            }
        };
        // Every rest the decision writes is counted from the latest the database's clock can
        // read: a FloodWait rests its full length on every worker's clock (invariant 2).
        let finished_at = d.store.latest_now();
        tracing::Span::current().record("outcome", outcome.kind().as_str());
        crate::telemetry::metrics::join_finished(&outcome, started_at, finished_at);

        // 6. Decide and write, fenced by the epoch.
        let jitter: f64 = rand::rng().random();
        let connect_failures = if previous_in_doubt > 0 {
            u32::try_from(target.attempts - target.in_doubt_tries).unwrap_or(0)
        } else {
            0
        };
        let ctx = DecideCtx {
            pacing: &d.pacing,
            now: finished_at,
            jitter,
            previous_in_doubt,
            connect_failures,
        };
        let decision = decide(&outcome, &ctx);
        let decision = match self.hours_of(account.id, account.active_hours.as_deref()) {
            Some(hours) => {
                let within = within_hours(decision.clone(), |t| hours.next_open(account.id, t));
                if let (AccountChange::Pace { until } | AccountChange::Wait { until, .. }, true) =
                    (&within.account, within.account != decision.account)
                {
                    info!(account = %account.session_name, until = %until, "{} rests outside its active hours until {until}", account.session_name);
                }
                within
            }
            None => decision,
        };
        let attempt = Attempt { started_at, finished_at, worker: d.worker_name.clone() };
        match self.write_decision(target, account, epoch, &outcome, &decision, &attempt).await? {
            Applied::Stale => {
                warn!(account = %account.session_name, target = %target.link, epoch, "stale lease epoch: nothing written");
                return Ok(ExecutionOutcome::Done(Settled::Stale));
            }
            Applied::Applied => {}
        }
        log_decision(&account.session_name, target, &outcome, &decision);

        // 7. The caller releases the lease and pushes the follow-up.
        Ok(match decision.next {
            Next::Done => ExecutionOutcome::Done(Settled::Finished(finished_status(&decision))),
            Next::Reschedule { run_at, exclude_account } => ExecutionOutcome::Reschedule {
                job: job.follow_up(exclude_account.then_some(account.id)),
                run_at,
            },
            Next::RetrySameAccount { run_at } => {
                ExecutionOutcome::Reschedule { job: job.follow_up(None), run_at }
            }
        })
    }

    async fn call_telegram(&self, account: &Account, target: &Target, epoch: i64) -> JoinOutcome {
        let d = &*self.deps;
        let Some(config) = d.accounts.get(&account.session_name) else {
            // Checked before the take; a local problem is never recorded as Telegram's verdict.
            let reason = "no valid entry in this process's accounts file".to_owned();
            return ConnectError::Failed(reason).into_outcome();
        };
        let session = match tokio::time::timeout(d.call_timeout, d.telegram.connect(config)).await {
            Ok(Ok(session)) => session,
            Ok(Err(e)) => {
                warn!(account = %account.session_name, "Failed to create client: {e}");
                return e.into_outcome();
            }
            Err(_) => {
                let e =
                    ConnectError::Failed(format!("connect timed out after {:?}", d.call_timeout));
                warn!(account = %account.session_name, "Failed to create client: {e}");
                return e.into_outcome();
            }
        };
        let mut session = session;
        if let Err(outcome) = self.read_profile(account, session.as_mut()).await {
            if tokio::time::timeout(d.call_timeout, session.disconnect()).await.is_err() {
                warn!(account = %account.session_name, "disconnect timed out; connection torn down");
            }
            return outcome;
        }
        // The gate before the join is sent: the hold must still be this attempt's, and the
        // account is reserved until a join pause after the hold's new end. A process frozen
        // after its take (SIGSTOP, a stalled VM) that resumes once its hold ran out must not send
        // a join another process may already have followed; and whoever takes the account next
        // must wait for this hold to end, so the rest counted from there covers a join sent at
        // any moment of it (invariant 5).
        let hold_until = self.hold_until();
        let rest = chrono::Duration::from_std(d.pacing.join_pause_min).unwrap_or_default();
        let gate = d.store.gate_join(
            account.id,
            epoch,
            d.store.latest_now(),
            hold_until,
            hold_until + rest,
        );
        let open = match tokio::time::timeout(GATE_TIMEOUT, gate).await {
            Ok(Ok(open)) => open,
            Ok(Err(e)) => {
                warn!(account = %account.session_name, error = %crate::redact::Chain(&e), "the hold could not be checked before the join");
                false
            }
            Err(_) => {
                warn!(account = %account.session_name, "the hold could not be checked before the join: no answer within {GATE_TIMEOUT:?}");
                false
            }
        };
        if !open {
            if tokio::time::timeout(d.call_timeout, session.disconnect()).await.is_err() {
                warn!(account = %account.session_name, "disconnect timed out; connection torn down");
            }
            let reason = "the account's hold was no longer this attempt's: nothing was sent";
            return ConnectError::Failed(reason.to_owned()).into_outcome();
        }
        let outcome = match tokio::time::timeout(d.call_timeout, session.join(&target.link)).await {
            Ok(outcome) => outcome,
            Err(_) => {
                JoinOutcome::InDoubt { reason: format!("no answer within {:?}", d.call_timeout) }
            }
        };
        if tokio::time::timeout(d.call_timeout, session.disconnect()).await.is_err() {
            warn!(account = %account.session_name, "disconnect timed out; connection torn down");
        }
        outcome
    }

    /// Reads the account's profile (its channel limit, Premium, a freeze) when it was never
    /// read or is a day old, and records it. An account-wide answer (a FloodWait) is the
    /// attempt's outcome: nothing more is sent.
    async fn read_profile(
        &self,
        account: &Account,
        session: &mut dyn crate::telegram::TelegramSession,
    ) -> Result<(), JoinOutcome> {
        let d = &*self.deps;
        let now = d.store.now();
        if account.profile_read_at.is_some_and(|at| now - at < PROFILE_MAX_AGE) {
            return Ok(());
        }
        let profile = match tokio::time::timeout(d.call_timeout, session.profile()).await {
            Ok(Ok(Some(profile))) => profile,
            Ok(Ok(None)) => return Ok(()),
            Ok(Err(outcome)) => return Err(outcome),
            Err(_) => {
                // The connection is in an unknown state: nothing more is sent on it.
                let reason = format!("help.getAppConfig: no answer within {:?}", d.call_timeout);
                return Err(JoinOutcome::ConnectFailed { reason });
            }
        };
        info!(
            account = %account.session_name,
            premium = profile.premium,
            channel_limit = profile.channel_limit,
            frozen = profile.freeze.is_some(),
            "account profile read"
        );
        if let Err(e) = d.store.record_profile(account.id, &profile, now).await {
            warn!(account = %account.session_name, error = %e, "account profile not recorded");
        }
        Ok(())
    }

    /// Writes the decision; a database that fails for a moment (a restart, a terminated
    /// backend) is tried again for a while, because the answer may carry Telegram's verdict
    /// about the account (a FloodWait) that nothing else records. A decision is applied at
    /// most once per epoch (see `Store::apply_decision`), so a retry after a lost commit reply
    /// is stale, not a second write.
    async fn write_decision(
        &self,
        target: &Target,
        account: &Account,
        epoch: i64,
        outcome: &JoinOutcome,
        decision: &Decision,
        attempt: &Attempt,
    ) -> Result<Applied, StoreError> {
        let store = &self.deps.store;
        let mut delay = Duration::from_millis(100);
        let give_up = tokio::time::Instant::now() + DECISION_RETRY_FOR;
        loop {
            match store
                .apply_decision(target.id, account.id, epoch, outcome, decision, attempt)
                .await
            {
                Err(e) if e.is_transient() && tokio::time::Instant::now() + delay < give_up => {
                    warn!(account = %account.session_name, target = %target.link, error = %crate::redact::Chain(&e), "decision not written, trying again");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                other => return other,
            }
        }
    }

    /// Keeps the account taken while the attempt runs; returns only when it is no longer
    /// this attempt's.
    ///
    /// The database hold is the lock every process checks before it connects an account; the
    /// Redis lease is the fast path in front of it. A lease that vanished under a frozen
    /// process or a wiped Redis is therefore no reason to abort while the hold is still this
    /// epoch's: nobody else can take the account, and aborting would throw away an answer
    /// Telegram may already have given (a FloodWait the next attempt would run into). The
    /// attempt ends when the hold's epoch moved on (another process took the account after
    /// the hold ran out) or when the hold could not be extended before it ran out.
    ///
    /// A process frozen mid-call stops extending, so its account stays held for a whole hold
    /// after the last extension: with the default call timeout that is longer than the 75 s
    /// after which Telegram drops a connection that stopped pinging, so the frozen process's
    /// socket is gone before anyone else connects the account.
    async fn keep_held(&self, lease: &Lease, epoch: i64) -> String {
        let d = &*self.deps;
        let hold = self.hold_duration();
        let every = (d.locks.ttl() / 3).min(hold / 3).max(Duration::from_millis(50));
        let mut hold_ends = tokio::time::Instant::now() + hold;
        let mut lease_lost = false;
        loop {
            tokio::time::sleep(every).await;
            // Each call is bounded by the interval: a Redis or database that stopped answering
            // (a network partition) must not stop the loop, or the hold would run out unseen.
            if !lease_lost {
                match tokio::time::timeout(every, d.locks.renew(lease)).await {
                    Ok(Ok(true)) => {}
                    Ok(Ok(false)) => {
                        lease_lost = true;
                        warn!(
                            account_id = lease.account_id,
                            "lease lost; the database hold keeps the account"
                        );
                    }
                    Ok(Err(e)) => {
                        warn!(account_id = lease.account_id, error = %crate::redact::Chain(&e), "lease not renewed; the database hold keeps the account")
                    }
                    Err(_) => {
                        warn!(
                            account_id = lease.account_id,
                            "lease not renewed: no answer within {every:?}; the database hold keeps the account"
                        )
                    }
                }
            }
            let extended_at = tokio::time::Instant::now();
            let extend = d.store.extend_hold(lease.account_id, epoch, self.hold_until());
            let extended = tokio::time::timeout(every, extend).await.unwrap_or_else(|_| {
                Err(StoreError::Db {
                    message: format!("no answer within {every:?}"),
                    transient: true,
                })
            });
            match extended {
                Ok(true) => hold_ends = extended_at + hold,
                Ok(false) => return "another process took the account".to_owned(),
                Err(e) if tokio::time::Instant::now() + every >= hold_ends => {
                    return format!("the hold could not be extended before it ran out: {e}");
                }
                Err(e) => {
                    warn!(account_id = lease.account_id, error = %crate::redact::Chain(&e), "hold not extended; trying again")
                }
            }
        }
    }

    /// How long a hold lasts without extension: three calls under the call timeout.
    fn hold_duration(&self) -> Duration {
        self.deps.call_timeout.saturating_mul(3) + HOLD_MARGIN
    }

    /// The end of a hold taken or extended now.
    pub(crate) fn hold_until(&self) -> chrono::DateTime<Utc> {
        self.deps.store.latest_now()
            + chrono::Duration::from_std(self.hold_duration()).unwrap_or(chrono::Duration::MAX)
    }
}

fn finished_status(decision: &Decision) -> TargetStatus {
    use crate::domain::TargetChange::*;
    match &decision.target {
        Joined { .. } => TargetStatus::Joined,
        Requested => TargetStatus::Requested,
        Fail { status, .. } => *status,
        Requeue { .. } => TargetStatus::Queued,
        KeepClaim { .. } | AwaitAccount { .. } => TargetStatus::Joining,
    }
}

fn log_decision(account: &str, target: &Target, outcome: &JoinOutcome, decision: &Decision) {
    use crate::domain::TargetChange::*;
    match &decision.target {
        Joined { .. } => {
            info!(account, target = %target.link, outcome = outcome.kind().as_str(), "joined {} with {account}, bound", target.link)
        }
        Requested => {
            info!(account, target = %target.link, "join request sent to {} by {account}, bound", target.link)
        }
        Fail { status, code, message } => {
            info!(account, target = %target.link, code, "group {} ended as {status}: {code}: {message}", target.link)
        }
        Requeue { run_at } => {
            info!(account, target = %target.link, outcome = %outcome, "{} rescheduled for {run_at}: {outcome}", target.link)
        }
        KeepClaim { run_at } => {
            warn!(account, target = %target.link, outcome = %outcome, "{} in doubt, retry with {account} at {run_at}", target.link)
        }
        AwaitAccount { run_at } => {
            warn!(account, target = %target.link, outcome = %outcome, "{} waits for {account} until {run_at}: {outcome}", target.link)
        }
    }
}
