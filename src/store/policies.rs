//! What Telegram says about an account itself (its Premium flag, channel limit and freeze),
//! recorded when it connects, `accounts check`'s verdicts, and the accounts' own active hours.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect, TransactionTrait};

use super::entity::accounts;
use super::{Store, StoreError};
use crate::domain::{AccountProfile, AccountStatus, ActiveHours};

/// What one `accounts check` writes about an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckRecord<'a> {
    /// The one-word verdict (`authorised`, `unauthorized`, `banned`, `failed`).
    pub result: &'a str,
    /// The profile, when it was read.
    pub profile: Option<&'a AccountProfile>,
    /// The status the check found before (under its hold) and the one it writes, if any.
    pub status: Option<(AccountStatus, AccountStatus, Option<String>)>,
}

/// What [`Store::record_check`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckWritten {
    /// Written; `status_changed` says whether the status write went through (a verdict
    /// recorded meanwhile by a stale join wins over the check's).
    Written { status_changed: bool },
    /// The hold was no longer the check's: nothing written.
    HoldLost,
}

/// The profile's columns, for an update.
fn profile_columns(
    update: sea_orm::UpdateMany<accounts::Entity>,
    profile: &AccountProfile,
    now: DateTime<Utc>,
) -> sea_orm::UpdateMany<accounts::Entity> {
    use accounts::Column as C;
    let freeze = profile.freeze.as_ref();
    let limit = profile.channel_limit.map(|l| i32::try_from(l).unwrap_or(i32::MAX));
    update
        .col_expr(C::Premium, Expr::val(profile.premium))
        .col_expr(C::ChannelLimit, Expr::val(limit))
        .col_expr(C::FrozenSince, Expr::val(freeze.and_then(|f| f.since)))
        .col_expr(C::FrozenUntil, Expr::val(freeze.and_then(|f| f.until)))
        .col_expr(C::FreezeAppealUrl, Expr::val(freeze.and_then(|f| f.appeal_url.clone())))
        .col_expr(C::ProfileReadAt, Expr::val(now))
}

impl Store {
    /// The accounts of `pool` that may work (by status) and their own active hours as stored:
    /// every one when `all`, else only those that have their own.
    pub async fn active_hours_of_pool(
        &self,
        pool: &str,
        all: bool,
    ) -> Result<Vec<(i64, Option<String>)>, StoreError> {
        use accounts::Column as C;
        let working: Vec<&str> =
            AccountStatus::ALL.iter().filter(|s| s.can_work()).map(|s| s.as_str()).collect();
        let mut q = accounts::Entity::find()
            .select_only()
            .column(C::Id)
            .column(C::ActiveHours)
            .filter(C::Pool.eq(pool))
            .filter(C::Status.is_in(working));
        if !all {
            q = q.filter(C::ActiveHours.is_not_null());
        }
        Ok(q.into_tuple().all(&self.db).await?)
    }

    /// The accounts of `pool` that may work by status and have active hours, with them: their
    /// own, else `pool_hours` (the pool's `ACTIVE_HOURS`), by [`ActiveHours::of_account`].
    pub async fn hours_in_pool(
        &self,
        pool: &str,
        pool_hours: Option<&ActiveHours>,
    ) -> Result<HashMap<i64, ActiveHours>, StoreError> {
        let rows = self.active_hours_of_pool(pool, pool_hours.is_some()).await?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, own)| {
                let (hours, unreadable) = ActiveHours::of_account(own.as_deref(), pool_hours);
                if let Some(e) = unreadable {
                    tracing::warn!(account_id = id, error = %e, "stored active hours unreadable: the pool's apply");
                }
                hours.map(|h| (id, h))
            })
            .collect())
    }

    /// The accounts of `pool` that may work by status but are outside their active hours
    /// ([`hours_in_pool`](Self::hours_in_pool)) at `now`. The pick leaves them out, and so does
    /// the exporter's workable count.
    pub async fn closed_accounts(
        &self,
        pool: &str,
        now: DateTime<Utc>,
        pool_hours: Option<&ActiveHours>,
    ) -> Result<Vec<i64>, StoreError> {
        let hours = self.hours_in_pool(pool, pool_hours).await?;
        Ok(hours.into_iter().filter(|(id, h)| !h.is_open(*id, now)).map(|(id, _)| id).collect())
    }

    /// Ends a hold taken for a request that is not a join (a folder's check) and rests the
    /// account as after any request: `next_allowed_action_time` becomes at least `rest_until`,
    /// `last_action_at` now. Only under the same epoch; false when the hold is another's.
    pub async fn end_hold_with_rest(
        &self,
        account_id: i64,
        epoch: i64,
        now: DateTime<Utc>,
        rest_until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        use accounts::Column as C;
        let res = accounts::Entity::update_many()
            .col_expr(C::HeldUntil, Expr::val(None::<DateTime<Utc>>))
            .col_expr(C::NextAllowedActionTime, super::sql::rest_at_least(rest_until))
            .col_expr(C::LastActionAt, Expr::val(now))
            .filter(C::Id.eq(account_id))
            .filter(C::LeaseEpoch.eq(epoch))
            .exec(&self.db)
            .await?;
        Ok(res.rows_affected == 1)
    }

    /// Records what Telegram said about the account itself when it connected. Unfenced, like
    /// Telegram's other verdicts about an account: a fact whoever holds it now; it changes no
    /// status (a join on a frozen account hears FROZEN_METHOD_INVALID and its decision says so).
    pub async fn record_profile(
        &self,
        account_id: i64,
        profile: &AccountProfile,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        profile_columns(accounts::Entity::update_many(), profile, now)
            .filter(accounts::Column::Id.eq(account_id))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// `accounts check`'s write, only while the hold it took (`epoch`) is still its own: when
    /// it checked and what it found, the profile if read, and the status it found changed. The
    /// status is written only if it is still the one the check saw, so a verdict a stale join
    /// recorded meanwhile is never overwritten. One transaction.
    pub async fn record_check(
        &self,
        account_id: i64,
        epoch: i64,
        now: DateTime<Utc>,
        check: &CheckRecord<'_>,
    ) -> Result<CheckWritten, StoreError> {
        use accounts::Column as C;
        let txn = self.db.begin().await?;
        let mut update = accounts::Entity::update_many()
            .col_expr(C::CheckedAt, Expr::val(now))
            .col_expr(C::CheckResult, Expr::val(check.result))
            .filter(C::Id.eq(account_id))
            .filter(C::LeaseEpoch.eq(epoch))
            .filter(C::HeldUntil.gt(now));
        if let Some(profile) = check.profile {
            update = profile_columns(update, profile, now);
        }
        if update.exec(&txn).await?.rows_affected != 1 {
            txn.rollback().await?;
            return Ok(CheckWritten::HoldLost);
        }
        let mut status_changed = false;
        if let Some((before, after, reason)) = &check.status {
            let res = accounts::Entity::update_many()
                .col_expr(C::Status, Expr::val(after.as_str()))
                .col_expr(C::StatusReason, Expr::val(reason.clone()))
                .col_expr(C::UpdatedAt, Expr::val(now))
                .filter(C::Id.eq(account_id))
                .filter(C::LeaseEpoch.eq(epoch))
                .filter(C::Status.eq(before.as_str()))
                .exec(&txn)
                .await?;
            status_changed = res.rows_affected == 1;
        }
        txn.commit().await?;
        Ok(CheckWritten::Written { status_changed })
    }
}
