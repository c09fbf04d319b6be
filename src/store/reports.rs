//! Read-only reports for operators: the `status` command, the worker's metrics and readiness.
//!
//! Each report is a handful of grouped queries, never one query per row, so they stay cheap on
//! pools of thousands of targets.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Statement,
};

use super::entity::{accounts, join_attempts, targets};
use super::{Account, Store, StoreError, accounts_from, corrupt, counted_outcomes};
use crate::domain::{AccountStatus, TargetLink, TargetStatus};

/// One account with what it has done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountOverview {
    pub account: Account,
    /// Joins and join requests in the 24 hours before `now` (what the daily cap counts).
    pub joins_24h: u64,
    /// Groups and channels the account joined (bound, status `joined`).
    pub channels: u64,
    /// Every target bound to the account (joined, requested, or later marked banned): what
    /// the channel limit counts.
    pub bound: u64,
    /// Bound groups whose warm-up has ended: ready for posting.
    pub ready: u64,
}

/// How many targets of a niche have a status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetCount {
    pub niche: String,
    pub status: TargetStatus,
    pub count: u64,
}

/// A joined group whose warm-up has ended, with the account it is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyGroup {
    pub account: String,
    pub target_id: i64,
    pub link: TargetLink,
    pub title: Option<String>,
    pub niche: String,
    pub warmup_ended_at: DateTime<Utc>,
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl Store {
    /// Answers when the database does (`SELECT 1`): the readiness probe.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let backend = self.db.get_database_backend();
        self.db.query_one_raw(Statement::from_string(backend, "SELECT 1")).await?;
        Ok(())
    }

    /// Every account (of `pool`, or all), by id, with its activity at `now`.
    pub async fn account_overview(
        &self,
        pool: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Vec<AccountOverview>, StoreError> {
        let mut q = accounts::Entity::find().order_by_asc(accounts::Column::Id);
        if let Some(pool) = pool {
            q = q.filter(accounts::Column::Pool.eq(pool));
        }
        let accounts = accounts_from(q.all(&self.db).await?)?;

        let joins: Vec<(i64, i64)> = join_attempts::Entity::find()
            .select_only()
            .column(join_attempts::Column::AccountId)
            .expr(Expr::col(join_attempts::Column::Id).count())
            .filter(join_attempts::Column::Outcome.is_in(counted_outcomes()))
            .filter(join_attempts::Column::FinishedAt.gt(now - Duration::hours(24)))
            .filter(join_attempts::Column::FinishedAt.lte(now))
            .group_by(join_attempts::Column::AccountId)
            .into_tuple()
            .all(&self.db)
            .await?;
        let joins: HashMap<i64, i64> = joins.into_iter().collect();

        let bound: Vec<(Option<i64>, String, i64)> = targets::Entity::find()
            .select_only()
            .column(targets::Column::AssignedAccountId)
            .column(targets::Column::Status)
            .expr(Expr::col(targets::Column::Id).count())
            .filter(targets::Column::AssignedAccountId.is_not_null())
            .group_by(targets::Column::AssignedAccountId)
            .group_by(targets::Column::Status)
            .into_tuple()
            .all(&self.db)
            .await?;
        let mut by_account: HashMap<i64, (u64, u64)> = HashMap::new();
        for (account, status, n) in bound {
            let Some(account) = account else { continue };
            let entry = by_account.entry(account).or_default();
            entry.1 += count(n);
            if status == TargetStatus::Joined.as_str() {
                entry.0 += count(n);
            }
        }

        let ready: Vec<(Option<i64>, i64)> = targets::Entity::find()
            .select_only()
            .column(targets::Column::AssignedAccountId)
            .expr(Expr::col(targets::Column::Id).count())
            .filter(targets::Column::Status.eq(TargetStatus::Joined.as_str()))
            .filter(targets::Column::WarmupEndsAt.lte(now))
            // An adopted row whose group was not a link (kind `unparsed`) is no group to post in.
            .filter(targets::Column::Kind.ne(migration::adopt::UNPARSED_KIND))
            .group_by(targets::Column::AssignedAccountId)
            .into_tuple()
            .all(&self.db)
            .await?;
        let ready: HashMap<i64, i64> =
            ready.into_iter().filter_map(|(a, n)| a.map(|a| (a, n))).collect();

        Ok(accounts
            .into_iter()
            .map(|account| {
                let (channels, bound) = by_account.get(&account.id).copied().unwrap_or_default();
                AccountOverview {
                    joins_24h: count(joins.get(&account.id).copied().unwrap_or(0)),
                    ready: count(ready.get(&account.id).copied().unwrap_or(0)),
                    channels,
                    bound,
                    account,
                }
            })
            .collect())
    }

    /// The highest account id (0 without accounts): the range of ids whose leases
    /// [`RedisLocks::held_count`](crate::lease::RedisLocks::held_count) counts.
    pub async fn max_account_id(&self) -> Result<i64, StoreError> {
        let max: Option<Option<i64>> = accounts::Entity::find()
            .select_only()
            .column_as(accounts::Column::Id.max(), "max_id")
            .into_tuple()
            .one(&self.db)
            .await?;
        Ok(max.flatten().unwrap_or(0))
    }

    /// Number of accounts per pool and status (only the combinations that occur).
    pub async fn account_status_counts(
        &self,
    ) -> Result<Vec<(String, AccountStatus, u64)>, StoreError> {
        let rows: Vec<(String, String, i64)> = accounts::Entity::find()
            .select_only()
            .column(accounts::Column::Pool)
            .column(accounts::Column::Status)
            .expr(Expr::col(accounts::Column::Id).count())
            .group_by(accounts::Column::Pool)
            .group_by(accounts::Column::Status)
            .order_by_asc(accounts::Column::Pool)
            .order_by_asc(accounts::Column::Status)
            .into_tuple()
            .all(&self.db)
            .await?;
        rows.into_iter()
            .map(|(pool, status, n)| {
                let parsed = AccountStatus::parse(&status).ok_or_else(|| {
                    corrupt("accounts", 0, format!("unknown status {status:?} in pool {pool}"))
                })?;
                Ok((pool, parsed, count(n)))
            })
            .collect()
    }

    /// Number of targets per niche and status, by niche then status (only those that occur).
    pub async fn target_counts(&self) -> Result<Vec<TargetCount>, StoreError> {
        let rows: Vec<(String, String, i64)> = targets::Entity::find()
            .select_only()
            .column(targets::Column::Niche)
            .column(targets::Column::Status)
            .expr(Expr::col(targets::Column::Id).count())
            .group_by(targets::Column::Niche)
            .group_by(targets::Column::Status)
            .order_by_asc(targets::Column::Niche)
            .order_by_asc(targets::Column::Status)
            .into_tuple()
            .all(&self.db)
            .await?;
        rows.into_iter()
            .map(|(niche, status, n)| {
                let parsed = TargetStatus::parse(&status).ok_or_else(|| {
                    corrupt("targets", 0, format!("unknown status {status:?} in niche {niche}"))
                })?;
                Ok(TargetCount { niche, status: parsed, count: count(n) })
            })
            .collect()
    }

    /// Joined groups whose warm-up ended by `now`, by account id then by when the warm-up ended;
    /// at most `limit`.
    pub async fn ready_groups(
        &self,
        now: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<ReadyGroup>, StoreError> {
        let rows = targets::Entity::find()
            .filter(targets::Column::Status.eq(TargetStatus::Joined.as_str()))
            .filter(targets::Column::WarmupEndsAt.lte(now))
            .order_by_asc(targets::Column::AssignedAccountId)
            .order_by_asc(targets::Column::WarmupEndsAt)
            .order_by_asc(targets::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?;
        let names: HashMap<i64, String> = accounts::Entity::find()
            .select_only()
            .column(accounts::Column::Id)
            .column(accounts::Column::SessionName)
            .into_tuple::<(i64, String)>()
            .all(&self.db)
            .await?
            .into_iter()
            .collect();
        rows.into_iter()
            .map(|t| {
                let target = super::Target::try_from(t)?;
                let account =
                    target.assigned_account_id.and_then(|id| names.get(&id).cloned()).ok_or_else(
                        || corrupt("targets", target.id, "joined without a bound account"),
                    )?;
                Ok(ReadyGroup {
                    account,
                    target_id: target.id,
                    warmup_ended_at: target.warmup_ends_at.unwrap_or(now),
                    link: target.link,
                    title: target.title,
                    niche: target.niche,
                })
            })
            .collect()
    }
}
