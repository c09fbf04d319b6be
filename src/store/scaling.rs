//! What autoscaling and the alert rules read about a pool (see [`crate::ops::exporter`]): accounts
//! that could start a join now, accounts mid-join, and targets waiting for an in-doubt retry.

use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect};

use super::entity::{accounts, targets};
use super::{Limits, Store, StoreError};
use crate::domain::{ActiveHours, TargetStatus};

/// The accounts of one pool as a scaler sees them at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolAccounts {
    /// Free, rested, below the daily cap and the channel limit, and inside its active hours: a
    /// join could start now.
    pub workable: u64,
    /// Held by a join in flight (`held_until` after now).
    pub busy: u64,
}

impl Store {
    /// Every pool some account belongs to, sorted.
    pub async fn pools(&self) -> Result<Vec<String>, StoreError> {
        Ok(accounts::Entity::find()
            .select_only()
            .column(accounts::Column::Pool)
            .distinct()
            .order_by_asc(accounts::Column::Pool)
            .into_tuple()
            .all(&self.db)
            .await?)
    }

    /// Workable and busy accounts of `pool` at `now`. "Workable" is exactly what the join's
    /// pick would take: [`eligible_accounts`](Self::eligible_accounts) less the accounts
    /// outside their active hours ([`closed_accounts`](Self::closed_accounts): their own, else
    /// `pool_hours`, the pool's `ACTIVE_HOURS`).
    pub async fn pool_accounts(
        &self,
        pool: &str,
        now: DateTime<Utc>,
        limits: &Limits,
        pool_hours: Option<&ActiveHours>,
    ) -> Result<PoolAccounts, StoreError> {
        let closed = self.closed_accounts(pool, now, pool_hours).await?;
        let workable = self.eligible_accounts(pool, now, &closed, limits, i64::MAX as u64).await?;
        let busy = accounts::Entity::find()
            .filter(accounts::Column::Pool.eq(pool))
            .filter(accounts::Column::HeldUntil.gt(now))
            .count(&self.db)
            .await?;
        Ok(PoolAccounts { workable: workable.len() as u64, busy })
    }

    /// Open targets (queued or joining) whose last join got no clear answer and that wait for
    /// a retry by the same account.
    pub async fn targets_in_doubt(&self) -> Result<u64, StoreError> {
        let open = [TargetStatus::Queued.as_str(), TargetStatus::Joining.as_str()];
        Ok(targets::Entity::find()
            .filter(targets::Column::InDoubtTries.gt(0))
            .filter(targets::Column::Status.is_in(open))
            .count(&self.db)
            .await?)
    }
}
