//! The invariants of docs/design.md, checked after the fact from the database and the attempt
//! trail (and, for invariant 7, the accounts' active hours).
//!
//! Used by the integration tests and the fault-injection run.
//! Invariant 3 (one live connection per account) can only be seen from Telegram's side: the fake
//! and the loopback DC check it from their own records.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::domain::{ActiveHours, TargetStatus, effective_channel_limit};
use crate::store::{AttemptRow, Limits, Store, StoreError};

/// Violations found, per invariant. Empty vectors mean the invariant holds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct InvariantReport {
    pub targets: usize,
    pub attempts: usize,
    /// 1. Bound targets have exactly the account that joined them.
    pub binding: Vec<String>,
    /// 2. No attempt inside a FloodWait the account had received.
    pub flood_wait: Vec<String>,
    /// 4. Every target is terminal, `new` or `queued` once the system is quiet.
    pub lost: Vec<String>,
    /// 5. Successive joins of one account at least the minimum pause apart; caps kept.
    pub pacing: Vec<String>,
    /// 6. No write under a stale epoch: per account, epochs never go back in time.
    pub fencing: Vec<String>,
    /// 7. An account with active hours started every attempt inside one of its windows.
    pub hours: Vec<String>,
    /// The count of bound targets kept on each account row (`accounts.bound_targets`, which
    /// the pick holds to the channel limit) equals the targets bound to the account.
    pub bound_counts: Vec<String>,
}

impl InvariantReport {
    pub fn violations(&self) -> usize {
        self.binding.len()
            + self.flood_wait.len()
            + self.lost.len()
            + self.pacing.len()
            + self.fencing.len()
            + self.hours.len()
            + self.bound_counts.len()
    }

    pub fn is_clean(&self) -> bool {
        self.violations() == 0
    }
}

impl std::fmt::Display for InvariantReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} targets, {} attempts; violations: binding {}, flood_wait {}, lost {}, pacing {}, fencing {}, hours {}, bound counts {}",
            self.targets,
            self.attempts,
            self.binding.len(),
            self.flood_wait.len(),
            self.lost.len(),
            self.pacing.len(),
            self.fencing.len(),
            self.hours.len(),
            self.bound_counts.len()
        )
    }
}

/// Checks invariants 1, 2, 4, 5, 6 and 7 (each account's own active hours) over the whole
/// database, and each account's count of bound targets.
pub async fn check(
    store: &Store,
    min_pause: Duration,
    limits: &Limits,
) -> Result<InvariantReport, StoreError> {
    check_with_hours(store, min_pause, limits, &HashMap::new()).await
}

/// [`check`], with the active hours of pools (`ACTIVE_HOURS`) for their accounts that have
/// none of their own.
pub async fn check_with_hours(
    store: &Store,
    min_pause: Duration,
    limits: &Limits,
    pool_hours: &HashMap<String, ActiveHours>,
) -> Result<InvariantReport, StoreError> {
    let targets = store.targets(None, None).await?;
    let attempts = store.attempts(None, None).await?;
    let mut report =
        InvariantReport { targets: targets.len(), attempts: attempts.len(), ..Default::default() };

    let mut by_target: HashMap<i64, Vec<&AttemptRow>> = HashMap::new();
    let mut by_account: HashMap<i64, Vec<&AttemptRow>> = HashMap::new();
    for a in &attempts {
        by_target.entry(a.target_id).or_default().push(a);
        by_account.entry(a.account_id).or_default().push(a);
    }

    for t in &targets {
        let successes: Vec<i64> = by_target
            .get(&t.id)
            .into_iter()
            .flatten()
            .filter(|a| a.outcome.is_join())
            .map(|a| a.account_id)
            .collect();
        let bound = matches!(t.status, TargetStatus::Joined | TargetStatus::Requested);
        match (bound, t.assigned_account_id) {
            (true, None) => {
                report.binding.push(format!("{} is {} but bound to no account", t.link, t.status))
            }
            (true, Some(acc)) if !successes.contains(&acc) => report.binding.push(format!(
                "{} is bound to account {acc}, which has no successful attempt on it",
                t.link
            )),
            (false, Some(acc)) => report
                .binding
                .push(format!("{} is {} yet bound to account {acc}", t.link, t.status)),
            _ => {}
        }
        if let Some(first) = successes.first()
            && successes.iter().any(|a| a != first)
        {
            report
                .binding
                .push(format!("{} was joined by several accounts: {successes:?}", t.link));
        }
        // An in-doubt target waiting for its own account (a retry due later) is not lost.
        let pending_retry =
            t.status == TargetStatus::Joining && t.next_run_at.is_some_and(|at| at > store.now());
        let settled =
            t.status.is_terminal() || matches!(t.status, TargetStatus::New | TargetStatus::Queued);
        if !settled && !pending_retry {
            report.lost.push(format!("{} is still {}", t.link, t.status));
        }
    }

    let mut bound_to: HashMap<i64, i64> = HashMap::new();
    for account in targets.iter().filter_map(|t| t.assigned_account_id) {
        *bound_to.entry(account).or_default() += 1;
    }

    // 7. Active hours: the account's own, else its pool's.
    let mut channel_limits = HashMap::new();
    for account in store.accounts(None).await? {
        let bound = bound_to.get(&account.id).copied().unwrap_or(0);
        if account.bound_targets != bound {
            report.bound_counts.push(format!(
                "account {} counts {} bound targets on its row, but {bound} targets are bound to it",
                account.id, account.bound_targets
            ));
        }
        let limit = effective_channel_limit(account.channel_limit, limits.channel_limit);
        channel_limits.insert(account.id, limit);
        // The pick's rule: the account's own hours, else its pool's.
        let (hours, _) =
            ActiveHours::of_account(account.active_hours.as_deref(), pool_hours.get(&account.pool));
        let Some(hours) = hours else { continue };
        for a in by_account.get(&account.id).into_iter().flatten() {
            if !hours.is_open(account.id, a.started_at) {
                report.hours.push(format!(
                    "account {} started attempt {} at {} outside its active hours ({hours})",
                    account.id, a.id, a.started_at
                ));
            }
        }
    }

    let min_pause = chrono::Duration::from_std(min_pause).unwrap_or(chrono::Duration::MAX);
    let day = chrono::Duration::hours(24);
    for (account, mut rows) in by_account {
        rows.sort_by_key(|a| a.started_at);
        let mut flood_until: Option<DateTime<Utc>> = None;
        let mut last_join: Option<DateTime<Utc>> = None;
        let mut joins: Vec<DateTime<Utc>> = Vec::new();
        for a in &rows {
            if let Some(until) = flood_until
                && a.started_at < until
            {
                report.flood_wait.push(format!(
                    "account {account} attempted target {} at {} inside a FloodWait until {until}",
                    a.target_id, a.started_at
                ));
            }
            if let Some(secs) = a.flood_wait_seconds {
                let until = a.finished_at + chrono::Duration::seconds(secs.into());
                flood_until = Some(flood_until.map_or(until, |u| u.max(until)));
            }
            if a.outcome.is_join() {
                if let Some(prev) = last_join
                    && a.finished_at - prev < min_pause
                {
                    report.pacing.push(format!(
                        "account {account} joined target {} {} ms after its previous join",
                        a.target_id,
                        (a.finished_at - prev).num_milliseconds()
                    ));
                }
                last_join = Some(a.finished_at);
                joins.push(a.finished_at);
            }
        }
        for (i, t) in joins.iter().enumerate() {
            let in_window = joins[i..].iter().take_while(|u| **u - *t < day).count();
            if in_window > limits.daily_join_cap as usize {
                report.pacing.push(format!(
                    "account {account} made {in_window} joins within 24 h of {t}, cap {}",
                    limits.daily_join_cap
                ));
                break;
            }
        }
        let bound = bound_to.get(&account).copied().unwrap_or(0);
        let limit = channel_limits.get(&account).copied().unwrap_or(limits.channel_limit);
        if bound > i64::from(limit) {
            report
                .pacing
                .push(format!("account {account} is bound to {bound} groups, limit {limit}"));
        }
        let mut by_finish = rows.clone();
        by_finish.sort_by_key(|a| a.finished_at);
        for pair in by_finish.windows(2) {
            if pair[1].epoch < pair[0].epoch {
                report.fencing.push(format!(
                    "account {account}: attempt {} with epoch {} was written after attempt {} with epoch {}",
                    pair[1].id, pair[1].epoch, pair[0].id, pair[0].epoch
                ));
            }
        }
    }
    Ok(report)
}
