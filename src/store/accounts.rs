//! Accounts: sync from the configuration file, eligibility, the fencing counter.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use sea_orm::sea_query::{
    Alias, Asterisk, Expr, ExprTrait, NullOrdering, Query, SelectStatement, Value,
};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, EntityTrait, FromQueryResult, Order,
    QueryFilter, QueryOrder, QuerySelect, QueryTrait, TransactionTrait,
};

use super::entity::{accounts, join_attempts, targets};
use super::shapes::{Shape, v};
use super::sql::{cte, exists_in, ids_of, locked_targets, sub, with_ctes};
use super::targets::{claim_target_where, claimable};
use super::{
    Account, Claimable, Limits, Store, StoreError, SyncReport, Take, Target, accounts_from,
    counted_outcomes,
};
use crate::domain::AccountStatus;

/// The window of the daily join cap.
const DAY: Duration = Duration::hours(24);
/// A target pinned to an account (an in-doubt join's retry, a target waiting for its account)
/// whose run is due within this is the account's next action: free jobs leave the account to it.
pub(super) const PINNED_DUE_WITHIN: Duration = Duration::seconds(60);

/// The targets pinned to `accounts.id` and due by `due`: claimed by the account, `joining`, no
/// epoch owning the claim (the join that pinned it was decided), run at or before `due`. Both
/// conditions are written as literals so that a generic plan can use the partial index
/// `idx_targets_pinned` (`WHERE status = 'joining' AND claim_epoch IS NULL`), which a take
/// never writes to: it stays as small as the pinned targets, whatever the joins since the last
/// vacuum left dead.
fn pinned_to_account(due: DateTime<Utc>) -> SelectStatement {
    let pinned = Alias::new("pinned");
    pinned_targets()
        .expr(Expr::val(1))
        .and_where(Expr::col((pinned, targets::Column::NextRunAt)).lte(due))
        .take()
}

/// `FROM targets AS pinned WHERE` pinned to `accounts.id` (any run time); the caller selects.
fn pinned_targets() -> SelectStatement {
    let pinned = Alias::new("pinned");
    Query::select()
        .from_as(targets::Entity, pinned.clone())
        .and_where(
            Expr::col((pinned.clone(), targets::Column::ClaimedAccountId))
                .equals((accounts::Entity, accounts::Column::Id)),
        )
        .and_where(Expr::cust(format!(
            "\"pinned\".\"status\" = '{}'",
            crate::domain::TargetStatus::Joining.as_str()
        )))
        .and_where(Expr::col((pinned, targets::Column::ClaimEpoch)).is_null())
        .take()
}

/// Reasons earlier versions wrote when the running process had no valid entry for an account.
fn is_local_config_reason(reason: &str) -> bool {
    reason.starts_with("Account config not found") || reason.starts_with("Account config invalid")
}

/// Statuses that may work without an operator (their wait, if any, ends by itself).
fn working_statuses() -> Vec<&'static str> {
    AccountStatus::ALL.iter().filter(|s| s.can_work()).map(|s| s.as_str()).collect()
}

/// `SELECT ... FROM join_attempts WHERE account_id = accounts.id AND outcome counts AND
/// finished_at in (now - 24h, now]`: the attempts of the daily cap, correlated to `accounts`.
fn counted_attempts(now: DateTime<Utc>) -> SelectStatement {
    Query::select()
        .from(join_attempts::Entity)
        .and_where(
            Expr::col((join_attempts::Entity, join_attempts::Column::AccountId))
                .equals((accounts::Entity, accounts::Column::Id)),
        )
        .and_where(Expr::col(join_attempts::Column::Outcome).is_in(counted_outcomes()))
        .and_where(Expr::col(join_attempts::Column::FinishedAt).gt(now - DAY))
        .and_where(Expr::col(join_attempts::Column::FinishedAt).lte(now))
        .take()
}

/// `(SELECT COUNT(*) FROM (SELECT 1 FROM` [`counted_attempts`] `LIMIT cap) AS "c")`: the
/// account's counted attempts of the last 24 h, counted no further than the cap, so an account
/// with a long history costs at most `cap` entries of `idx_join_attempts_account_finished`.
fn counted_attempts_up_to(now: DateTime<Utc>, cap: u32) -> SelectStatement {
    let first = counted_attempts(now).expr(Expr::val(1)).limit(u64::from(cap)).take();
    Query::select().expr(Expr::col(Asterisk).count()).from_subquery(first, Alias::new("c")).take()
}

/// Accounts of `pool` that may ever work again and are not excluded (cheap: no subquery).
fn workable_unlimited(pool: &str, excluded: &[i64]) -> Condition {
    let mut cond = Condition::all()
        .add(accounts::Column::Pool.eq(pool))
        .add(accounts::Column::Status.is_in(working_statuses()));
    if !excluded.is_empty() {
        cond = cond.add(accounts::Column::Id.is_not_in(excluded.iter().copied()));
    }
    cond
}

/// The account's channel limit: what Telegram gave it (`accounts.channel_limit`, the free
/// default until read), never above the operator's (see `domain::effective_channel_limit`).
fn channel_limit_of_account(limits: &Limits) -> Expr {
    let operator = i64::from(limits.channel_limit);
    let telegram = Expr::col((accounts::Entity, accounts::Column::ChannelLimit))
        .if_null(i64::from(crate::domain::FREE_CHANNEL_LIMIT));
    Expr::case(telegram.clone().lt(operator), telegram).finally(Expr::val(operator)).into()
}

/// Fewer targets bound to the account than its channel limit: `accounts.bound_targets`, the
/// count the binding decision keeps on the row, so no account's targets are counted.
fn below_channel_limit(limits: &Limits) -> Expr {
    Expr::col((accounts::Entity, accounts::Column::BoundTargets))
        .lt(channel_limit_of_account(limits))
}

/// Accounts of `pool` that may ever work again, not excluded, below the channel limit.
fn workable(pool: &str, excluded: &[i64], limits: &Limits) -> Condition {
    workable_unlimited(pool, excluded).add(below_channel_limit(limits))
}

/// Not resting (`next_allowed_action_time` passed) and not held by a worker at `now`.
fn free_at(now: DateTime<Utc>) -> Condition {
    Condition::all()
        .add(
            Condition::any()
                .add(accounts::Column::NextAllowedActionTime.is_null())
                .add(accounts::Column::NextAllowedActionTime.lte(now)),
        )
        .add(
            Condition::any()
                .add(accounts::Column::HeldUntil.is_null())
                .add(accounts::Column::HeldUntil.lte(now)),
        )
}

/// The account's half of the take: `lease_epoch + 1`, held until `hold_until` and resting until
/// `rest_until`, if it may still work, rests no longer and is not held at `now`.
fn take_update(
    account_id: i64,
    now: DateTime<Utc>,
    hold_until: DateTime<Utc>,
    rest_until: DateTime<Utc>,
) -> sea_orm::UpdateMany<accounts::Entity> {
    accounts::Entity::update_many()
        .col_expr(accounts::Column::LeaseEpoch, Expr::col(accounts::Column::LeaseEpoch).add(1))
        .col_expr(accounts::Column::HeldUntil, Expr::val(hold_until))
        .col_expr(accounts::Column::NextAllowedActionTime, Expr::val(rest_until))
        .filter(accounts::Column::Id.eq(account_id))
        .filter(accounts::Column::Status.is_in(working_statuses()))
        .filter(free_at(now))
}

/// The values [`take_statement`] binds, in its order ($1, $2, ...): the locked target's
/// conditions, the account's half ([`take_update`]), the claim, the one-row select.
fn take_values(
    account_id: i64,
    target_id: i64,
    which: Claimable,
    now: DateTime<Utc>,
    hold_until: DateTime<Utc>,
    rest_until: DateTime<Utc>,
) -> Vec<Value> {
    use crate::domain::TargetStatus::{Joining, New, Queued};
    let mut values = vec![v(target_id), v(New.as_str()), v(Queued.as_str())];
    if which == Claimable::Any {
        values.extend([v(Joining.as_str()), v(account_id), v(account_id)]);
    }
    values.extend([v(1), v(hold_until), v(rest_until), v(account_id)]);
    values.extend(working_statuses().into_iter().map(v));
    values.extend([v(now), v(now), v(1), v(Joining.as_str()), v(account_id), v(now), v(1), v(1)]);
    values
}

/// The take's column of the new epoch (NULL when the account was not taken).
const TAKEN_EPOCH: &str = "taken_epoch";
/// The take's column saying whether the target could be claimed by the account (0 or 1).
const CLAIMABLE: &str = "claimable";

/// The take on Postgres, in one statement: the target row is locked first (and re-checked if it
/// changed meanwhile), the account is taken only if the target can be claimed, and the target
/// claimed under the new epoch only if the account was taken; a locked target cannot change in
/// between. It returns the claimed target as written, so a join reads it nowhere else. Its
/// shape, checked by a test against the statement built (`$n` are bound values):
///
/// ```sql
/// WITH "t0" AS (SELECT "id" FROM "targets"
/// WHERE "targets"."id" = $1
/// AND (("targets"."status" IN ($2, $3)
/// OR ("targets"."status" = $4
/// AND "targets"."claimed_account_id" = $5))
/// AND ("targets"."assigned_account_id" IS NULL
/// OR "targets"."assigned_account_id" = $6)) FOR UPDATE)
/// , "a" AS (UPDATE "accounts"
/// SET "lease_epoch" = "lease_epoch" + $7, "held_until" = $8, "next_allowed_action_time" = $9
/// WHERE "accounts"."id" = $10
/// AND "accounts"."status" IN ($11, $12, $13)
/// AND ("accounts"."next_allowed_action_time" IS NULL
/// OR "accounts"."next_allowed_action_time" <= $14)
/// AND ("accounts"."held_until" IS NULL
/// OR "accounts"."held_until" <= $15)
/// AND EXISTS(SELECT $16 FROM "t0")
/// RETURNING "lease_epoch")
/// , "t" AS (UPDATE "targets"
/// SET "status" = $17, "claimed_account_id" = $18, "claim_epoch" = (SELECT "lease_epoch" FROM
/// "a"), "updated_at" = $19
/// WHERE "id" IN (SELECT "id" FROM "t0")
/// AND EXISTS(SELECT $20 FROM "a")
/// RETURNING *)
/// SELECT (SELECT "lease_epoch" FROM "a") AS "taken_epoch",
/// (SELECT COUNT(*) FROM "t0") AS "claimable", "t".*
/// FROM (SELECT $21) AS "one" LEFT JOIN "t" ON TRUE
/// ```
fn take_statement(
    mut take: sea_orm::sea_query::UpdateStatement,
    account_id: i64,
    target_id: i64,
    which: Claimable,
    now: DateTime<Utc>,
) -> sea_orm::Statement {
    let (t0, a, t) = (Alias::new("t0"), Alias::new("a"), Alias::new("t"));
    let locked = locked_targets(
        Condition::all().add(targets::Column::Id.eq(target_id)).add(claimable(which, account_id)),
    );
    take.and_where(exists_in(&t0)).returning_col(accounts::Column::LeaseEpoch);
    let new_epoch =
        || sub(Query::select().column(accounts::Column::LeaseEpoch).from(a.clone()).take());
    let mut claim = Query::update();
    claim
        .table(targets::Entity)
        .value(targets::Column::Status, crate::domain::TargetStatus::Joining.as_str())
        .value(targets::Column::ClaimedAccountId, account_id)
        .value(targets::Column::ClaimEpoch, new_epoch())
        .value(targets::Column::UpdatedAt, now)
        .and_where(Expr::col(targets::Column::Id).in_subquery(ids_of(&t0)))
        .and_where(exists_in(&a))
        .returning_all();
    let ctes = [cte(t0.clone(), locked), cte(a.clone(), take), cte(t.clone(), claim)];
    let claimable = Query::select().expr(Expr::col(Asterisk).count()).from(t0).take();
    // One row whatever happened; the claimed target's columns are NULL unless it was claimed.
    let main = Query::select()
        .expr_as(new_epoch(), Alias::new(TAKEN_EPOCH))
        .expr_as(sub(claimable), Alias::new(CLAIMABLE))
        .column((t.clone(), Asterisk))
        .from_subquery(Query::select().expr(Expr::val(1)).take(), Alias::new("one"))
        .left_join(t, Expr::cust("TRUE"))
        .take();
    sea_orm::DbBackend::Postgres.build(&with_ctes(ctes, main))
}

/// The pick's query: the cheaply eligible accounts of `pool` in fairness order (the `spread`
/// first ones shuffled when `spread > 1`), then the per-account limits, evaluated only until
/// `limit` accounts pass: the bound targets as kept on the row (`bound_targets`), and the
/// counted attempts of the last 24 h, counted no further than the cap, so neither grows with
/// the account's history. An account with a pinned target due within [`PINNED_DUE_WITHIN`]
/// (an in-doubt join to settle, a target waiting for it) is left out: its free moment is that
/// target's, and a free job taking it first would make the pinned one wait a whole rest. Each account is held to its own channel limit: Telegram's for it
/// (`channel_limit`, the free default until read), never above the operator's. Its shape on Postgres with a spread, checked by a test against the
/// query built (`$n` are bound values):
///
/// ```sql
/// SELECT *
/// FROM (SELECT *
/// FROM (SELECT * FROM "accounts"
/// WHERE "accounts"."pool" = $1
/// AND "accounts"."status" IN ($2, $3, $4)
/// AND "accounts"."id" NOT IN ($5)
/// AND ("accounts"."next_allowed_action_time" IS NULL
/// OR "accounts"."next_allowed_action_time" <= $6)
/// AND ("accounts"."held_until" IS NULL
/// OR "accounts"."held_until" <= $7)
/// AND (NOT EXISTS(SELECT $8 FROM "targets" AS "pinned"
/// WHERE "pinned"."claimed_account_id" = "accounts"."id"
/// AND ("pinned"."status" = 'joining')
/// AND "pinned"."claim_epoch" IS NULL
/// AND "pinned"."next_run_at" <= $9))
/// ORDER BY "last_action_at" ASC NULLS FIRST, "id" ASC
/// LIMIT $10) AS "accounts"
/// ORDER BY RANDOM() ASC
/// LIMIT $11) AS "accounts"
/// WHERE "accounts"."bound_targets"
/// < (CASE WHEN (COALESCE("accounts"."channel_limit", $12) < $13)
/// THEN COALESCE("accounts"."channel_limit", $14) ELSE $15 END)
/// AND (SELECT COUNT(*) FROM (SELECT $16 FROM "join_attempts"
/// WHERE "join_attempts"."account_id" = "accounts"."id"
/// AND "outcome" IN ($17, $18, $19)
/// AND "finished_at" > $20
/// AND "finished_at" <= $21
/// LIMIT $22) AS "c") < $23
/// LIMIT $24
/// ```
fn eligible_query(
    pool: &str,
    now: DateTime<Utc>,
    excluded: &[i64],
    limits: &Limits,
    spread: u64,
    limit: u64,
) -> SelectStatement {
    // The per-account count (attempts of the last 24 h, at most `cap` index rows) is the
    // expensive part. The inner query orders the cheaply eligible accounts; its LIMIT keeps
    // the planner from pushing the count into it (and sorting after evaluating it for every
    // account), so it is evaluated in this order only until `limit` accounts pass.
    // The derived table is named `accounts` so the correlated count refers to it.
    let cheap = || {
        Query::select()
            .column(sea_orm::sea_query::Asterisk)
            .from(accounts::Entity)
            .cond_where(workable_unlimited(pool, excluded))
            .cond_where(free_at(now))
            .and_where(Expr::exists(pinned_to_account(now + PINNED_DUE_WITHIN)).not())
            .order_by_with_nulls(accounts::Column::LastActionAt, Order::Asc, NullOrdering::First)
            .order_by(accounts::Column::Id, Order::Asc)
            .take()
    };
    let ordered = if spread > 1 {
        // The first `spread` in fairness order (a top-N sort), shuffled.
        Query::select()
            .column(sea_orm::sea_query::Asterisk)
            .from_subquery(cheap().limit(spread).take(), accounts::Entity)
            .order_by_expr(Expr::cust("RANDOM()"), Order::Asc)
            .limit(spread)
            .take()
    } else {
        cheap().limit(i64::MAX as u64).take()
    };
    Query::select()
        .column(sea_orm::sea_query::Asterisk)
        .from_subquery(ordered, accounts::Entity)
        .and_where(below_channel_limit(limits))
        .and_where(
            sub(counted_attempts_up_to(now, limits.daily_join_cap))
                .lt(i64::from(limits.daily_join_cap)),
        )
        .limit(limit)
        .take()
}

/// The values [`eligible_query`] binds, in its order ($1, $2, ...).
fn eligible_values(
    pool: &str,
    now: DateTime<Utc>,
    excluded: &[i64],
    limits: &Limits,
    spread: u64,
    limit: u64,
) -> Vec<Value> {
    let mut values = vec![v(pool)];
    values.extend(working_statuses().into_iter().map(v));
    values.extend(excluded.iter().copied().map(v));
    values.extend([v(now), v(now), v(1), v(now + PINNED_DUE_WITHIN)]);
    if spread > 1 {
        values.extend([v(spread), v(spread)]);
    } else {
        values.push(v(i64::MAX as u64));
    }
    let (free, operator) =
        (i64::from(crate::domain::FREE_CHANNEL_LIMIT), i64::from(limits.channel_limit));
    values.extend([v(free), v(operator), v(free), v(operator), v(1)]);
    values.extend(counted_outcomes().map(v));
    let cap = limits.daily_join_cap;
    values.extend([v(now - DAY), v(now), v(u64::from(cap)), v(i64::from(cap)), v(limit)]);
    values
}

impl Store {
    /// Takes the account and claims the target for one join, right after the account's Redis
    /// lease, in one transaction:
    /// - the account, if it is still workable, not resting and not held: `lease_epoch + 1`
    ///   (the fencing token), held until `hold_until` (or until the decision is written), and
    ///   resting until `rest_until`. The join may reach Telegram even if this worker dies
    ///   before it records the answer, so the account is held back for a join pause from the
    ///   start (invariant 5); the decision overwrites it with the real pacing;
    /// - the target, under that epoch (see [`claim_target`](Self::claim_target)).
    ///
    /// If either fails, nothing is written. The Redis lease keeps two workers apart; this
    /// keeps the database's view right even when Redis lost its data.
    pub async fn take_for_join(
        &self,
        account_id: i64,
        target_id: i64,
        now: DateTime<Utc>,
        hold_until: DateTime<Utc>,
        rest_until: DateTime<Utc>,
    ) -> Result<Take, StoreError> {
        let which = Claimable::Any;
        Ok(self.take_and_load(account_id, target_id, which, now, hold_until, rest_until).await?.0)
    }

    /// [`take_for_join`](Self::take_for_join), claiming only a target `which` allows, and
    /// returning the target as the take claimed it (`Some` exactly when taken): read under the
    /// take's lock, in the same statement on Postgres and the same transaction on SQLite, so a
    /// join need not load it before.
    pub async fn take_and_load(
        &self,
        account_id: i64,
        target_id: i64,
        which: Claimable,
        now: DateTime<Utc>,
        hold_until: DateTime<Utc>,
        rest_until: DateTime<Utc>,
    ) -> Result<(Take, Option<Target>), StoreError> {
        let take = || take_update(account_id, now, hold_until, rest_until);
        if self.is_postgres() {
            let values = take_values(account_id, target_id, which, now, hold_until, rest_until);
            let stmt = self.shapes.statement(Shape::Take(which), values, || {
                take_statement(take().into_query(), account_id, target_id, which, now)
            });
            return self.take_in_one_statement(stmt).await;
        }
        let take = take();
        let txn = self.db.begin().await?;
        let taken = take.exec_with_returning(&txn).await?;
        let Some(epoch) = taken.first().map(|a| a.lease_epoch) else {
            txn.rollback().await?;
            return Ok((Take::AccountBusy, None));
        };
        let claim = claimable(which, account_id);
        if !claim_target_where(&txn, target_id, account_id, epoch, now, claim).await? {
            txn.rollback().await?;
            return Ok((Take::TargetGone, None));
        }
        let claimed = targets::Entity::find_by_id(target_id).one(&txn).await?;
        txn.commit().await?;
        let claimed = claimed.map(Target::try_from).transpose()?;
        Ok((Take::Taken { epoch }, claimed))
    }

    /// Postgres: [`take_and_load`](Self::take_and_load) as one statement ([`take_statement`]).
    async fn take_in_one_statement(
        &self,
        stmt: sea_orm::Statement,
    ) -> Result<(Take, Option<Target>), StoreError> {
        let row = self
            .join_query_one(stmt)
            .await?
            .ok_or_else(|| StoreError::Invalid("the take statement returned no row".to_owned()))?;
        let epoch: Option<i64> = row.try_get("", TAKEN_EPOCH)?;
        let claimable: i64 = row.try_get("", CLAIMABLE)?;
        Ok(match (epoch, claimable) {
            (Some(epoch), _) => {
                let claimed = targets::Model::from_query_result(&row, "")?;
                (Take::Taken { epoch }, Some(Target::try_from(claimed)?))
            }
            (None, 0) => (Take::TargetGone, None),
            (None, _) => (Take::AccountBusy, None),
        })
    }

    /// Pushes the hold of a still-working job to `until` (only under the same epoch). False
    /// when the hold is no longer this epoch's: another process took the account, or the
    /// decision already ended the hold.
    pub async fn extend_hold(
        &self,
        account_id: i64,
        epoch: i64,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let res = accounts::Entity::update_many()
            .col_expr(accounts::Column::HeldUntil, Expr::val(until))
            .filter(accounts::Column::Id.eq(account_id))
            .filter(accounts::Column::LeaseEpoch.eq(epoch))
            .filter(accounts::Column::HeldUntil.is_not_null())
            .exec(&self.db)
            .await?;
        Ok(res.rows_affected == 1)
    }

    /// Ends a hold that no decision ended (the job found nothing to do). Only under the same
    /// epoch; a newer holder's hold is left alone.
    pub async fn release_hold(&self, account_id: i64, epoch: i64) -> Result<(), StoreError> {
        accounts::Entity::update_many()
            .col_expr(accounts::Column::HeldUntil, Expr::val(None::<DateTime<Utc>>))
            .filter(accounts::Column::Id.eq(account_id))
            .filter(accounts::Column::LeaseEpoch.eq(epoch))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Makes the accounts table know every session of the configuration file: missing ones
    /// are inserted as active accounts of `pool`, known ones are moved to `pool`. Nothing is
    /// deleted (attempts and bindings refer to accounts); the report lists rows the file no
    /// longer has. See [`sync_accounts_with`](Self::sync_accounts_with).
    pub async fn sync_accounts(
        &self,
        session_names: &[String],
        pool: &str,
    ) -> Result<SyncReport, StoreError> {
        self.sync_accounts_with(session_names, pool, true).await
    }

    /// [`sync_accounts`](Self::sync_accounts), moving known accounts of another pool to `pool`
    /// only when `move_existing` (an operator's explicit choice); otherwise they stay where they
    /// are and the report lists them. Either way, accounts that earlier versions marked
    /// `unauthorized` only because the running process had no valid entry for them (a local
    /// problem, not Telegram's verdict) are made active again: the file has them now.
    pub async fn sync_accounts_with(
        &self,
        session_names: &[String],
        pool: &str,
        move_existing: bool,
    ) -> Result<SyncReport, StoreError> {
        // In the file's order, each name once.
        let mut wanted: Vec<&str> = Vec::with_capacity(session_names.len());
        let mut seen = HashSet::new();
        for name in session_names {
            if seen.insert(name.as_str()) {
                wanted.push(name);
            }
        }
        let now = self.now();
        let txn = self.db.begin().await?;
        let existing =
            accounts::Entity::find().order_by_asc(accounts::Column::Id).all(&txn).await?;
        let known: HashMap<&str, &accounts::Model> =
            existing.iter().map(|a| (a.session_name.as_str(), a)).collect();
        let mut report = SyncReport::default();
        for name in &wanted {
            match known.get(*name) {
                None => report.added.push((*name).to_owned()),
                Some(a) if a.pool != pool && move_existing => {
                    report.moved_pool.push((*name).to_owned())
                }
                Some(a) if a.pool != pool => {
                    report.in_other_pools.push(((*name).to_owned(), a.pool.clone()))
                }
                Some(_) => {}
            }
            if let Some(a) = known.get(*name)
                && a.status == AccountStatus::Unauthorized.as_str()
                && a.status_reason.as_deref().is_some_and(is_local_config_reason)
            {
                report.repaired.push((*name).to_owned());
            }
        }
        report.missing_from_config = existing
            .iter()
            .filter(|a| !seen.contains(a.session_name.as_str()))
            .map(|a| a.session_name.clone())
            .collect();
        for chunk in report.added.chunks(super::CHUNK) {
            let rows = chunk.iter().map(|name| accounts::ActiveModel {
                session_name: Set(name.clone()),
                pool: Set(pool.to_owned()),
                status: Set(AccountStatus::Active.as_str().to_owned()),
                lease_epoch: Set(0),
                created_at: Set(now),
                updated_at: Set(now),
                ..Default::default()
            });
            accounts::Entity::insert_many(rows).exec_without_returning(&txn).await?;
        }
        for chunk in report.moved_pool.chunks(super::CHUNK) {
            accounts::Entity::update_many()
                .col_expr(accounts::Column::Pool, Expr::val(pool))
                .col_expr(accounts::Column::UpdatedAt, Expr::val(now))
                .filter(accounts::Column::SessionName.is_in(chunk.iter().cloned()))
                .exec(&txn)
                .await?;
        }
        for chunk in report.repaired.chunks(super::CHUNK) {
            accounts::Entity::update_many()
                .col_expr(accounts::Column::Status, Expr::val(AccountStatus::Active.as_str()))
                .col_expr(accounts::Column::StatusReason, Expr::val(None::<String>))
                .col_expr(accounts::Column::UpdatedAt, Expr::val(now))
                .filter(accounts::Column::SessionName.is_in(chunk.iter().cloned()))
                .filter(accounts::Column::Status.eq(AccountStatus::Unauthorized.as_str()))
                .exec(&txn)
                .await?;
        }
        txn.commit().await?;
        // The planner's statistics for a pool that just grew: until autovacuum's next visit
        // (a minute or more) they said a pool of 10,000 new accounts held 31, and the pick
        // sorted the whole pool instead of reading its index (20 ms instead of 0.2 ms per
        // pick; BENCHMARKS.md, "Session 8"). One ANALYZE of the table takes milliseconds.
        // The sync is committed by now: a failed ANALYZE is worth a warning, not an error.
        if self.is_postgres()
            && (!report.added.is_empty() || !report.moved_pool.is_empty())
            && let Err(e) = self.db.execute_unprepared("ANALYZE accounts").await
        {
            tracing::warn!(error = %crate::redact::Chain(&e), "accounts synced; ANALYZE accounts failed, the planner's statistics wait for autovacuum");
        }
        Ok(report)
    }

    /// The last step before a join is sent: true only while the hold is still `epoch`'s and
    /// has not run out at `now`. Then the hold is extended to `hold_until` and the account
    /// reserved (never shortened) until `rest_until`.
    pub async fn gate_join(
        &self,
        account_id: i64,
        epoch: i64,
        now: DateTime<Utc>,
        hold_until: DateTime<Utc>,
        rest_until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        use accounts::Column as C;
        let build = || {
            let gate = accounts::Entity::update_many()
                .col_expr(C::HeldUntil, Expr::val(hold_until))
                .col_expr(C::NextAllowedActionTime, super::sql::rest_at_least(rest_until))
                .filter(C::Id.eq(account_id))
                .filter(C::LeaseEpoch.eq(epoch))
                .filter(C::HeldUntil.gt(now))
                .into_query();
            self.db.get_database_backend().build(&gate)
        };
        let values =
            || vec![v(hold_until), v(rest_until), v(rest_until), v(account_id), v(epoch), v(now)];
        let stmt = self.join_statement(Shape::Gate, values, build);
        Ok(self.join_execute(stmt).await? == 1)
    }

    /// Takes the account's hold for a connection that is not a join (`accounts check`): one
    /// conditional update that succeeds only when no other process holds the account, bumps
    /// the epoch and sets `held_until`. `None` when the account is held elsewhere or unknown.
    /// End it with [`release_hold`](Self::release_hold).
    pub async fn take_hold(
        &self,
        account_id: i64,
        now: DateTime<Utc>,
        hold_until: DateTime<Utc>,
    ) -> Result<Option<i64>, StoreError> {
        let taken = accounts::Entity::update_many()
            .col_expr(accounts::Column::LeaseEpoch, Expr::col(accounts::Column::LeaseEpoch).add(1))
            .col_expr(accounts::Column::HeldUntil, Expr::val(hold_until))
            .filter(accounts::Column::Id.eq(account_id))
            .filter(
                Condition::any()
                    .add(accounts::Column::HeldUntil.is_null())
                    .add(accounts::Column::HeldUntil.lte(now)),
            )
            .exec_with_returning(&self.db)
            .await?;
        Ok(taken.first().map(|a| a.lease_epoch))
    }

    pub async fn account(&self, id: i64) -> Result<Option<Account>, StoreError> {
        accounts::Entity::find_by_id(id).one(&self.db).await?.map(Account::try_from).transpose()
    }

    /// Accounts by id, of one pool or all.
    pub async fn accounts(&self, pool: Option<&str>) -> Result<Vec<Account>, StoreError> {
        let mut q = accounts::Entity::find().order_by_asc(accounts::Column::Id);
        if let Some(pool) = pool {
            q = q.filter(accounts::Column::Pool.eq(pool));
        }
        accounts_from(q.all(&self.db).await?)
    }

    /// Accounts of `pool` that can act at `now`, least recently active first (never active
    /// ones before all others), then by id; at most `limit`. One query.
    ///
    /// Eligible: status active, flood_wait or cooldown; next_allowed_action_time null or
    /// passed; not held; not `excluded`; fewer than `daily_join_cap` counted attempts (joined,
    /// already a participant, requested) finished in (now - 24h, now]; fewer than
    /// its channel limit of targets bound to it (Telegram's limit for the account, the free
    /// default until read, never above `limits.channel_limit`).
    pub async fn eligible_accounts(
        &self,
        pool: &str,
        now: DateTime<Utc>,
        excluded: &[i64],
        limits: &Limits,
        limit: u64,
    ) -> Result<Vec<Account>, StoreError> {
        let mut models = self.eligible_models(pool, now, excluded, limits, 1, limit).await?;
        // Both backends stream the ordered derived table as it is; sorting the few rows again
        // makes the order a guarantee rather than a plan property.
        models.sort_by(|a, b| {
            (a.last_action_at.is_some(), a.last_action_at, a.id).cmp(&(
                b.last_action_at.is_some(),
                b.last_action_at,
                b.id,
            ))
        });
        accounts_from(models)
    }

    /// The join's pick: up to `want` eligible accounts (as in
    /// [`eligible_accounts`](Self::eligible_accounts)) drawn in random order from the `spread`
    /// least recently active ones that are free now. Concurrent jobs that read the same
    /// accounts therefore try different ones first, and the per-account counts run only until
    /// `want` accounts pass. When none of those `spread` is below its limits, the pick goes
    /// further down the fairness order, as `eligible_accounts` does.
    pub async fn pick_accounts(
        &self,
        pool: &str,
        now: DateTime<Utc>,
        excluded: &[i64],
        limits: &Limits,
        spread: u64,
        want: u64,
    ) -> Result<Vec<Account>, StoreError> {
        let mut picked = self.eligible_models(pool, now, excluded, limits, spread, want).await?;
        if picked.is_empty() && spread > 1 {
            picked = self.eligible_models(pool, now, excluded, limits, 1, want).await?;
        }
        accounts_from(picked)
    }

    async fn eligible_models(
        &self,
        pool: &str,
        now: DateTime<Utc>,
        excluded: &[i64],
        limits: &Limits,
        spread: u64,
        limit: u64,
    ) -> Result<Vec<accounts::Model>, StoreError> {
        let build = || {
            let query = eligible_query(pool, now, excluded, limits, spread, limit);
            self.db.get_database_backend().build(&query)
        };
        let shape = Shape::Pick { excluded: excluded.len(), spread: spread > 1 };
        let values = || eligible_values(pool, now, excluded, limits, spread, limit);
        let stmt = self.join_statement(shape, values, build);
        let rows = self.join_query_all(stmt).await?;
        Ok(rows
            .iter()
            .map(|row| accounts::Model::from_query_result(row, ""))
            .collect::<Result<_, _>>()?)
    }

    /// The earliest moment at or after `now` at which some workable account of `pool` (not
    /// `excluded`, below the channel limit) may act: its rest has passed and the oldest of its
    /// counted attempts that keep it at the daily cap has left the 24 h window. `None` when no
    /// account of the pool can ever take the target (all need an operator, excluded, or full).
    ///
    /// An account held by a worker has a join in flight; its `next_allowed_action_time` is the
    /// worst case reserved before the send, and its decision will rest it from the end of the
    /// join. It is counted as free `held_rest` from now (the caller's estimate of the rest a
    /// decision writes), so a caller that finds every account mid-join looks again then, not
    /// after the worst case; taking an account re-checks everything anyway.
    pub async fn earliest_eligible_at(
        &self,
        pool: &str,
        now: DateTime<Utc>,
        excluded: &[i64],
        limits: &Limits,
        held_rest: std::time::Duration,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let times = self.eligible_times(pool, now, excluded, limits, held_rest).await?;
        Ok(times.into_iter().map(|(_, at)| at).min())
    }

    /// Per workable account of `pool` (as in
    /// [`earliest_eligible_at`](Self::earliest_eligible_at)), its id and the earliest moment at
    /// or after `now` at which it may act, as far as the database can tell (a caller adds
    /// what it knows besides, such as active hours).
    pub async fn eligible_times(
        &self,
        pool: &str,
        now: DateTime<Utc>,
        excluded: &[i64],
        limits: &Limits,
        held_rest: std::time::Duration,
    ) -> Result<Vec<(i64, DateTime<Utc>)>, StoreError> {
        let Some(cap_offset) = u64::from(limits.daily_join_cap).checked_sub(1) else {
            return Ok(Vec::new());
        };
        // The cap-th newest counted attempt in the window (NULL below the cap): when it
        // leaves the window the account is under the cap again. At most `cap` index rows.
        let cap_edge = counted_attempts(now)
            .column(join_attempts::Column::FinishedAt)
            .order_by(join_attempts::Column::FinishedAt, Order::Desc)
            .limit(1)
            .offset(cap_offset)
            .take();
        // The earliest run of a target pinned to the account (see `eligible_query`).
        let pinned_at = pinned_targets()
            .expr(Expr::col((Alias::new("pinned"), targets::Column::NextRunAt)).min())
            .take();
        type T = Option<DateTime<Utc>>;
        let rows: Vec<(i64, T, T, T, T)> = accounts::Entity::find()
            .select_only()
            .column(accounts::Column::Id)
            .column(accounts::Column::NextAllowedActionTime)
            .column(accounts::Column::HeldUntil)
            .expr(sub(cap_edge))
            .expr(sub(pinned_at))
            .filter(workable(pool, excluded, limits))
            .into_tuple()
            .all(&self.db)
            .await?;
        let rest = Duration::from_std(held_rest).unwrap_or(Duration::MAX);
        let held_free = now + rest;
        let times = rows
            .into_iter()
            .map(|(id, next_allowed, held_until, cap_edge, pinned_at)| {
                let mut paced = next_allowed.unwrap_or(now);
                if held_until.is_some_and(|h| h > now) {
                    paced = Ord::min(paced, held_free);
                }
                // A pinned target due by then goes first; free jobs come after its join.
                paced = Ord::max(paced, now);
                if let Some(pinned_at) = pinned_at
                    && paced >= pinned_at - PINNED_DUE_WITHIN
                {
                    paced = Ord::max(paced, pinned_at) + rest;
                }
                let cap_frees = cap_edge.map_or(now, |t| t + DAY);
                (id, Ord::max(Ord::max(paced, cap_frees), now))
            })
            .collect();
        Ok(times)
    }

    /// `lease_epoch += 1`, unconditionally; returns the new value. Workers use
    /// [`take_for_join`](Self::take_for_join); this fences off whoever holds the account now
    /// (an operator's tool against a stuck holder, and tests).
    pub async fn bump_lease_epoch(&self, account_id: i64) -> Result<i64, StoreError> {
        let txn = self.db.begin().await?;
        let res = accounts::Entity::update_many()
            .col_expr(accounts::Column::LeaseEpoch, Expr::col(accounts::Column::LeaseEpoch).add(1))
            .filter(accounts::Column::Id.eq(account_id))
            .exec(&txn)
            .await?;
        if res.rows_affected == 0 {
            return Err(StoreError::NotFound { table: "accounts", id: account_id });
        }
        let epoch: Option<i64> = accounts::Entity::find_by_id(account_id)
            .select_only()
            .column(accounts::Column::LeaseEpoch)
            .into_tuple()
            .one(&txn)
            .await?;
        txn.commit().await?;
        epoch.ok_or(StoreError::NotFound { table: "accounts", id: account_id })
    }

    /// Sets an account's status by hand (the operator's reset after a ban or a new login, and
    /// tests). True when the account exists.
    pub async fn set_account_status(
        &self,
        account_id: i64,
        status: AccountStatus,
        reason: Option<&str>,
        next_allowed_action_time: Option<DateTime<Utc>>,
    ) -> Result<bool, StoreError> {
        let res = accounts::Entity::update_many()
            .col_expr(accounts::Column::Status, Expr::val(status.as_str()))
            .col_expr(accounts::Column::StatusReason, Expr::val(reason.map(str::to_owned)))
            .col_expr(accounts::Column::NextAllowedActionTime, Expr::val(next_allowed_action_time))
            .col_expr(accounts::Column::UpdatedAt, Expr::val(self.now()))
            .filter(accounts::Column::Id.eq(account_id))
            .exec(&self.db)
            .await?;
        Ok(res.rows_affected == 1)
    }
}

#[cfg(test)]
mod statement_shape {
    use super::*;
    use crate::store::sql::assert_documented;

    #[test]
    fn the_take_is_the_statement_its_doc_comment_shows() {
        let now = DateTime::UNIX_EPOCH;
        let take = take_update(1, now, now, now).into_query();
        let stmt = take_statement(take, 1, 2, Claimable::Any, now);
        assert_documented(include_str!("accounts.rs"), "take_statement", &stmt.sql);
    }

    #[test]
    fn the_pick_is_the_query_its_doc_comment_shows() {
        let limits = Limits { daily_join_cap: 20, channel_limit: 500 };
        let query = eligible_query("default", DateTime::UNIX_EPOCH, &[7], &limits, 8, 4);
        let stmt = sea_orm::DbBackend::Postgres.build(&query);
        assert_documented(include_str!("accounts.rs"), "eligible_query", &stmt.sql);
    }

    /// Distinct moments, so a value listed in the wrong place cannot match by chance.
    fn moments() -> [DateTime<Utc>; 3] {
        let t = DateTime::UNIX_EPOCH + Duration::days(20_000);
        [t, t + Duration::seconds(7), t + Duration::seconds(300)]
    }

    #[test]
    fn the_takes_listed_values_are_the_ones_it_binds() {
        let [now, hold, rest] = moments();
        for which in [Claimable::Any, Claimable::FreeOnly] {
            let built =
                take_statement(take_update(3, now, hold, rest).into_query(), 3, 9, which, now);
            let listed = take_values(3, 9, which, now, hold, rest);
            assert_eq!(built.values.map(|v| v.0), Some(listed), "{which:?}");
            // Other inputs of the same shape: the same text.
            let other = take_update(4, hold, rest, now).into_query();
            assert_eq!(built.sql, take_statement(other, 4, 10, which, rest).sql, "{which:?}");
        }
    }

    #[test]
    fn the_picks_listed_values_are_the_ones_it_binds() {
        let [now, ..] = moments();
        let limits = Limits { daily_join_cap: 20, channel_limit: 500 };
        for excluded in [&[][..], &[7], &[7, 8, 11]] {
            for (spread, want) in [(1, 4), (64, 4), (8, 1)] {
                let query = eligible_query("p", now, excluded, &limits, spread, want);
                let built = sea_orm::DbBackend::Postgres.build(&query);
                let listed = eligible_values("p", now, excluded, &limits, spread, want);
                assert_eq!(built.values.map(|v| v.0), Some(listed), "{excluded:?} {spread}");
                // Other inputs of the same shape: the same text.
                let others: Vec<i64> = excluded.iter().map(|id| id + 100).collect();
                let other = Limits { daily_join_cap: 3, channel_limit: 9 };
                let later = now + Duration::hours(5);
                let other_spread = if spread > 1 { spread * 2 } else { 1 };
                let query = eligible_query("q", later, &others, &other, other_spread, 9);
                let again = sea_orm::DbBackend::Postgres.build(&query);
                assert_eq!(built.sql, again.sql, "{excluded:?} {spread}");
            }
        }
    }
}
