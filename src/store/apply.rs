//! Step 6 of the join: the decision applied all or nothing, fenced by the lease epoch.

use sea_orm::sea_query::{
    Alias, Asterisk, Expr, ExprTrait, Query, SelectStatement, SimpleExpr, Value,
};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, TransactionTrait,
};

use super::entity::{accounts, join_attempts, targets};
use super::shapes::{Shape, v};
use super::sql::{cte, exists_in, ids_of, locked_targets, sub, with_ctes};
use super::{Applied, Attempt, Store, StoreError};
use crate::domain::{
    AccountChange, AccountStatus, Decision, JoinOutcome, TargetChange, TargetStatus,
};

type Sets<C> = Vec<(C, SimpleExpr)>;

/// The writes of one decision: the account's and the target's conditions and new values, and
/// the attempt row.
fn writes(
    target_id: i64,
    account_id: i64,
    epoch: i64,
    outcome: &JoinOutcome,
    decision: &Decision,
    attempt: &Attempt,
) -> Result<Writes, StoreError> {
    let now = attempt.finished_at;
    let mut account_sets: Sets<accounts::Column> = vec![
        (accounts::Column::LastActionAt, Expr::val(attempt.finished_at)),
        (accounts::Column::UpdatedAt, Expr::val(now)),
    ];
    account_sets.extend(account_change(&decision.account, attempt.finished_at));
    // The decision ends the hold taken with the lease.
    account_sets
        .push((accounts::Column::HeldUntil, Expr::val(None::<chrono::DateTime<chrono::Utc>>)));
    let account_cond = Condition::all()
        .add(accounts::Column::Id.eq(account_id))
        .add(accounts::Column::LeaseEpoch.eq(epoch));

    let mut target_cond = Condition::all()
        .add(targets::Column::Id.eq(target_id))
        .add(targets::Column::Status.eq(TargetStatus::Joining.as_str()))
        .add(targets::Column::ClaimedAccountId.eq(account_id))
        .add(targets::Column::ClaimEpoch.eq(epoch));
    if decision.binds() {
        // Write-once binding: only if unbound or already bound to this account.
        target_cond = target_cond.add(
            Condition::any()
                .add(targets::Column::AssignedAccountId.is_null())
                .add(targets::Column::AssignedAccountId.eq(account_id)),
        );
    }
    let mut target_sets: Sets<targets::Column> = vec![
        (targets::Column::Attempts, Expr::col(targets::Column::Attempts).add(1)),
        (targets::Column::UpdatedAt, Expr::val(now)),
    ];
    target_sets.extend(target_change(&decision.target, account_id, outcome)?);

    let flood_wait_seconds = flood_wait_seconds(outcome);
    let row: Sets<join_attempts::Column> = vec![
        (join_attempts::Column::TargetId, Expr::val(target_id)),
        (join_attempts::Column::AccountId, Expr::val(account_id)),
        (join_attempts::Column::Epoch, Expr::val(epoch)),
        (join_attempts::Column::StartedAt, Expr::val(attempt.started_at)),
        (join_attempts::Column::FinishedAt, Expr::val(attempt.finished_at)),
        (join_attempts::Column::Outcome, Expr::val(outcome.kind().as_str())),
        (join_attempts::Column::FloodWaitSeconds, Expr::val(flood_wait_seconds)),
        (join_attempts::Column::ErrorCode, Expr::val(outcome.error_code().map(str::to_owned))),
        (join_attempts::Column::Worker, Expr::val(attempt.worker.as_str())),
    ];
    let binds = decision.binds();
    Ok(Writes { target_id, binds, account_cond, account_sets, target_cond, target_sets, row })
}

/// The attempt row's `flood_wait_seconds`: the wait of a FloodWait, saturated to the column.
fn flood_wait_seconds(outcome: &JoinOutcome) -> Option<i32> {
    match outcome {
        JoinOutcome::FloodWait { seconds } => Some(i32::try_from(*seconds).unwrap_or(i32::MAX)),
        _ => None,
    }
}

/// The values [`decision_statement`] binds for [`writes`]' arguments, in its order ($1, $2,
/// ...): the locked target's conditions, the account's sets and conditions, the target's, the
/// attempt row.
fn decision_values(
    target_id: i64,
    account_id: i64,
    epoch: i64,
    outcome: &JoinOutcome,
    decision: &Decision,
    attempt: &Attempt,
) -> Vec<Value> {
    let now = attempt.finished_at;
    let no_time = || v(None::<chrono::DateTime<chrono::Utc>>);
    let paused = || v(AccountStatus::Paused.as_str());
    let mut values = vec![v(target_id), v(TargetStatus::Joining.as_str()), v(account_id), v(epoch)];
    if decision.binds() {
        values.push(v(account_id));
    }
    values.extend([v(attempt.finished_at), v(now)]);
    match &decision.account {
        AccountChange::Pace { until } => values.extend([
            paused(),
            v(AccountStatus::Active.as_str()),
            paused(),
            v(None::<String>),
            v(*until),
        ]),
        AccountChange::Wait { status, until, reason } => {
            values.extend([paused(), v(status.as_str()), paused(), v(reason.as_str()), v(*until)])
        }
        AccountChange::Disable { status, reason } => {
            values.extend([v(status.as_str()), v(reason.as_str())])
        }
        AccountChange::Unchanged => values.push(v(attempt.finished_at)),
    }
    values.extend([no_time(), v(account_id), v(epoch), v(1), v(1), v(now)]);
    let clear_claim = [v(None::<i64>), v(None::<i64>), v(0)];
    let bind = |status: TargetStatus| {
        let mut sets = clear_claim.to_vec();
        sets.extend([v(status.as_str()), v(account_id), no_time()]);
        sets.extend([v(None::<String>), v(None::<String>)]);
        sets
    };
    match &decision.target {
        TargetChange::Joined { joined_at, warmup_ends_at } => {
            values.extend(bind(TargetStatus::Joined));
            values.extend([v(*joined_at), v(*warmup_ends_at)]);
            if let JoinOutcome::Joined { peer, .. } = outcome {
                values.extend(peer.id.map(v));
                values.extend(peer.title.as_deref().map(v));
            }
        }
        TargetChange::Requested => values.extend(bind(TargetStatus::Requested)),
        TargetChange::Requeue { run_at } => {
            values.extend(clear_claim);
            values.extend([v(TargetStatus::Queued.as_str()), v(*run_at)]);
        }
        TargetChange::Fail { status, code, message } => {
            values.extend(clear_claim);
            values.extend([v(status.as_str()), v(code.as_str()), v(message.as_str()), no_time()]);
        }
        TargetChange::KeepClaim { run_at } => values.extend([v(*run_at), v(1), v(None::<i64>)]),
        TargetChange::AwaitAccount { run_at } => values.extend([v(*run_at), v(None::<i64>)]),
    }
    values.extend([v(1), v(target_id), v(account_id), v(epoch)]);
    values.extend([v(attempt.started_at), v(attempt.finished_at), v(outcome.kind().as_str())]);
    values.extend([v(flood_wait_seconds(outcome)), v(outcome.error_code().map(str::to_owned))]);
    values.extend([v(attempt.worker.as_str()), v(1)]);
    values
}

/// What decides the text of a decision's statement: which changes it writes, and which of the
/// joined chat's id and title it records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct DecisionShape {
    account: std::mem::Discriminant<AccountChange>,
    target: std::mem::Discriminant<TargetChange>,
    peer_id: bool,
    title: bool,
}

impl DecisionShape {
    fn of(outcome: &JoinOutcome, decision: &Decision) -> DecisionShape {
        let peer = match (outcome, &decision.target) {
            (JoinOutcome::Joined { peer, .. }, TargetChange::Joined { .. }) => Some(peer),
            _ => None,
        };
        DecisionShape {
            account: std::mem::discriminant(&decision.account),
            target: std::mem::discriminant(&decision.target),
            peer_id: peer.is_some_and(|p| p.id.is_some()),
            title: peer.is_some_and(|p| p.title.is_some()),
        }
    }
}

/// `bound_targets + (SELECT COUNT(*) FROM <from> WHERE <unbound>)`: the account's count of
/// bound targets, one higher when the target it binds was bound to nobody (a target already
/// bound to it, such as an adopted row assigned ahead of its join, is counted already).
fn count_the_binding(from: SelectStatement) -> SimpleExpr {
    Expr::col(accounts::Column::BoundTargets).add(sub(from))
}

/// The decision on Postgres, in one statement, so it costs one round trip and one commit. The
/// target row is locked first (and re-checked if it changed meanwhile); the account is updated
/// only if the target matched, the target only if the account did, and the attempt inserted
/// only if both did. A decision that binds the target counts it on the account
/// (`bound_targets`) when the locked row was bound to nobody. Its shape for a join, checked by a
/// test against the statement built (`$n` are bound values):
///
/// ```sql
/// WITH "t0" AS (SELECT "id", "assigned_account_id" FROM "targets"
/// WHERE "targets"."id" = $1
/// AND "targets"."status" = $2
/// AND "targets"."claimed_account_id" = $3
/// AND "targets"."claim_epoch" = $4
/// AND ("targets"."assigned_account_id" IS NULL
/// OR "targets"."assigned_account_id" = $5) FOR UPDATE)
/// , "a" AS (UPDATE "accounts"
/// SET "last_action_at" = $6, "updated_at" = $7, "status" = (CASE WHEN ("status" = $8) THEN
/// "status" ELSE $9 END), "status_reason" = (CASE WHEN ("status" = $10) THEN "status_reason"
/// ELSE $11 END), "next_allowed_action_time" = $12, "held_until" = $13,
/// "bound_targets" = "bound_targets" + (SELECT COUNT(*) FROM "t0"
/// WHERE "assigned_account_id" IS NULL)
/// WHERE "accounts"."id" = $14
/// AND "accounts"."lease_epoch" = $15
/// AND EXISTS(SELECT $16 FROM "t0")
/// RETURNING "id")
/// , "t" AS (UPDATE "targets"
/// SET "attempts" = "attempts" + $17, "updated_at" = $18, "claimed_account_id" = $19,
/// "claim_epoch" = $20, "in_doubt_tries" = $21, "status" = $22, "assigned_account_id" = $23,
/// "next_run_at" = $24, "error_code" = $25, "error_message" = $26, "joined_at" = $27,
/// "warmup_ends_at" = $28
/// WHERE "id" IN (SELECT "id" FROM "t0")
/// AND EXISTS(SELECT $29 FROM "a")
/// RETURNING "id")
/// , "i" AS (INSERT INTO "join_attempts" ("target_id", "account_id", "epoch", "started_at",
/// "finished_at", "outcome", "flood_wait_seconds", "error_code", "worker") SELECT $30, $31,
/// $32, $33, $34, $35, $36, $37, $38
/// WHERE EXISTS(SELECT $39 FROM "t")
/// RETURNING "id") SELECT COUNT(*) FROM "i"
/// ```
fn decision_statement(w: Writes) -> Result<sea_orm::Statement, StoreError> {
    let (t0, a, t, i) = (Alias::new("t0"), Alias::new("a"), Alias::new("t"), Alias::new("i"));
    let mut locked = locked_targets(w.target_cond);
    let mut account_sets = w.account_sets;
    if w.binds {
        // The locked row as it is now: bound to nobody yet, or to this account already.
        locked.column(targets::Column::AssignedAccountId);
        let unbound = Query::select()
            .expr(Expr::col(Asterisk).count())
            .from(t0.clone())
            .and_where(Expr::col(targets::Column::AssignedAccountId).is_null())
            .take();
        account_sets.push((accounts::Column::BoundTargets, count_the_binding(unbound)));
    }
    let mut account = Query::update();
    account
        .table(accounts::Entity)
        .values(account_sets)
        .cond_where(w.account_cond)
        .and_where(exists_in(&t0))
        .returning_col(accounts::Column::Id);
    let mut target = Query::update();
    target
        .table(targets::Entity)
        .values(w.target_sets)
        .and_where(Expr::col(targets::Column::Id).in_subquery(ids_of(&t0)))
        .and_where(exists_in(&a))
        .returning_col(targets::Column::Id);
    let (columns, values): (Vec<_>, Vec<_>) = w.row.into_iter().unzip();
    let mut insert = Query::insert();
    insert
        .into_table(join_attempts::Entity)
        .columns(columns)
        .select_from(Query::select().exprs(values).and_where(exists_in(&t)).take())
        .map_err(|e| StoreError::Invalid(e.to_string()))?
        .returning_col(join_attempts::Column::Id);
    let count = Query::select().expr(Expr::col(Asterisk).count()).from(i.clone()).take();
    let ctes = [cte(t0, locked), cte(a, account), cte(t, target), cte(i, insert)];
    Ok(sea_orm::DbBackend::Postgres.build(&with_ctes(ctes, count)))
}

impl Store {
    /// Applies `decision` for the attempt `target_id` x `account_id` made under lease `epoch`.
    ///
    /// Every write is conditional: the account row on `lease_epoch = epoch`, the target row on
    /// `status = 'joining' AND claimed_account_id = account AND claim_epoch = epoch`. If either
    /// matches nothing the transaction is rolled back and `Stale` returned: a worker whose lease
    /// moved on writes nothing (invariant 6). Binding a target that is already bound to another
    /// account is refused as `Corrupt` (invariant 1), also writing nothing.
    pub async fn apply_decision(
        &self,
        target_id: i64,
        account_id: i64,
        epoch: i64,
        outcome: &JoinOutcome,
        decision: &Decision,
        attempt: &Attempt,
    ) -> Result<Applied, StoreError> {
        let now = attempt.finished_at;
        let writes = || writes(target_id, account_id, epoch, outcome, decision, attempt);
        let applied = if self.is_postgres() {
            // What `writes` refuses is refused before a kept statement is used.
            check_target_change(&decision.target)?;
            let shape = DecisionShape::of(outcome, decision);
            let values = decision_values(target_id, account_id, epoch, outcome, decision, attempt);
            self.apply_in_one_statement(shape, values, writes).await?
        } else {
            self.apply_in_a_transaction(writes()?).await?
        };
        if applied {
            return Ok(Applied::Applied);
        }
        // The attempt's own writes are stale, but what Telegram said about the account is a
        // fact whatever became of the target or the lease: it is recorded, monotonically.
        self.record_account_verdict(account_id, &decision.account, now).await?;
        match binding_conflict(&self.db, target_id, account_id, epoch).await? {
            Some(bound_to) => Err(StoreError::Corrupt {
                table: "targets",
                id: target_id,
                problem: format!("claimed by account {account_id} but bound to account {bound_to}"),
            }),
            None => Ok(Applied::Stale),
        }
    }

    /// Postgres: the three writes as one statement ([`decision_statement`]), kept per shape.
    async fn apply_in_one_statement(
        &self,
        shape: DecisionShape,
        values: Vec<Value>,
        writes: impl FnOnce() -> Result<Writes, StoreError>,
    ) -> Result<bool, StoreError> {
        let stmt = self.shapes.try_statement(Shape::Decision(shape), values, || {
            writes().and_then(decision_statement)
        })?;
        let row = self.join_query_one(stmt).await?;
        let written: i64 = match row {
            Some(row) => row.try_get_by_index(0)?,
            None => 0,
        };
        Ok(written == 1)
    }

    /// SQLite: the same writes in one transaction, rolled back unless all three happen.
    async fn apply_in_a_transaction(&self, w: Writes) -> Result<bool, StoreError> {
        let txn = self.db.begin().await?;
        let mut update = accounts::Entity::update_many().filter(w.account_cond);
        for (col, value) in w.account_sets {
            update = update.col_expr(col, value);
        }
        if w.binds {
            // Read under the transaction's write lock, before the target is written: no other
            // writer can bind it in between, and a rollback takes the count back with it.
            let unbound = Query::select()
                .expr(Expr::col(Asterisk).count())
                .from(targets::Entity)
                .and_where(Expr::col(targets::Column::Id).eq(w.target_id))
                .and_where(Expr::col(targets::Column::AssignedAccountId).is_null())
                .take();
            update = update.col_expr(accounts::Column::BoundTargets, count_the_binding(unbound));
        }
        if update.exec(&txn).await?.rows_affected != 1 {
            txn.rollback().await?;
            return Ok(false);
        }
        let mut update = targets::Entity::update_many().filter(w.target_cond);
        for (col, value) in w.target_sets {
            update = update.col_expr(col, value);
        }
        if update.exec(&txn).await?.rows_affected != 1 {
            txn.rollback().await?;
            return Ok(false);
        }
        let (columns, values): (Vec<_>, Vec<_>) = w.row.into_iter().unzip();
        let mut insert = Query::insert();
        insert
            .into_table(join_attempts::Entity)
            .columns(columns)
            .values(values)
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        txn.execute(&insert).await?;
        txn.commit().await?;
        Ok(true)
    }
}

impl Store {
    /// Records Telegram's verdict about an account (a FloodWait, a cooldown, a ban, a revoked
    /// session) from an attempt whose fenced decision was stale. Unfenced, so it must never
    /// undo newer work: it only ever lengthens a rest (`next_allowed_action_time` becomes the
    /// later of the two) and only ever worsens a status (by [`AccountStatus::severity`]); the
    /// reason follows the status. Pacing is our own policy, not a verdict, and is not recorded.
    /// Returns whether the row changed.
    pub async fn record_account_verdict(
        &self,
        account_id: i64,
        change: &AccountChange,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool, StoreError> {
        use accounts::Column as C;
        let (status, until, reason) = match change {
            AccountChange::Wait { status, until, reason } => (*status, Some(*until), reason),
            AccountChange::Disable { status, reason } => (*status, None, reason),
            AccountChange::Pace { .. } | AccountChange::Unchanged => return Ok(false),
        };
        let milder: Vec<&str> = AccountStatus::ALL
            .iter()
            .filter(|s| s.severity() < status.severity())
            .map(|s| s.as_str())
            .collect();
        let as_severe: Vec<&str> = AccountStatus::ALL
            .iter()
            .filter(|s| s.severity() <= status.severity())
            .map(|s| s.as_str())
            .collect();
        // Every right-hand side reads the row as it was before the update (SQL semantics).
        let worse_status = Expr::case(Expr::col(C::Status).is_in(milder.clone()), status.as_str())
            .finally(Expr::col(C::Status));
        let reason_expr = Expr::case(Expr::col(C::Status).is_in(as_severe), reason.as_str())
            .finally(Expr::col(C::StatusReason));
        let mut update = accounts::Entity::update_many()
            .col_expr(C::Status, worse_status.into())
            .col_expr(C::StatusReason, reason_expr.into())
            .col_expr(C::UpdatedAt, Expr::val(now))
            .filter(C::Id.eq(account_id));
        let mut changes = Condition::any().add(C::Status.is_in(milder));
        if let Some(until) = until {
            update = update.col_expr(C::NextAllowedActionTime, super::sql::rest_at_least(until));
            changes = changes.add(super::sql::rest_ends_before(until));
        }
        let res = update.filter(changes).exec(&self.db).await?;
        if res.rows_affected > 0 {
            tracing::warn!(
                account_id,
                status = status.as_str(),
                until = ?until,
                "Telegram's verdict from a stale attempt recorded on the account: {reason}"
            );
        }
        Ok(res.rows_affected > 0)
    }
}

/// The conditional writes of one decision.
struct Writes {
    target_id: i64,
    /// The decision binds the target to the account: its `bound_targets` counts it.
    binds: bool,
    account_cond: Condition,
    account_sets: Sets<accounts::Column>,
    target_cond: Condition,
    target_sets: Sets<targets::Column>,
    row: Sets<join_attempts::Column>,
}

fn account_change(
    change: &AccountChange,
    finished_at: chrono::DateTime<chrono::Utc>,
) -> Sets<accounts::Column> {
    use accounts::Column as C;
    match change {
        AccountChange::Pace { until } => vec![
            (C::Status, unless_paused(Expr::val(AccountStatus::Active.as_str()), C::Status)),
            (C::StatusReason, unless_paused(Expr::val(None::<String>), C::StatusReason)),
            (C::NextAllowedActionTime, Expr::val(*until)),
        ],
        AccountChange::Wait { status, until, reason } => vec![
            (C::Status, unless_paused(Expr::val(status.as_str()), C::Status)),
            (C::StatusReason, unless_paused(Expr::val(reason.as_str()), C::StatusReason)),
            (C::NextAllowedActionTime, Expr::val(*until)),
        ],
        AccountChange::Disable { status, reason } => vec![
            (C::Status, Expr::val(status.as_str())),
            (C::StatusReason, Expr::val(reason.as_str())),
        ],
        // Nothing happened to the account (slow mode limits the group): the rest reserved for a
        // join that might have been made ends with the attempt. The account was free when it
        // was taken, so no earlier rest of its own is cut short.
        AccountChange::Unchanged => vec![(C::NextAllowedActionTime, Expr::val(finished_at))],
    }
}

/// `value`, unless an operator paused the account while its join ran: then the column keeps
/// what it holds, so the pause (and its reason) outlives the decision. The rest is written
/// either way, and a status worse than a pause (`Disable`) replaces it.
fn unless_paused(value: SimpleExpr, column: accounts::Column) -> SimpleExpr {
    Expr::case(
        Expr::col(accounts::Column::Status).eq(AccountStatus::Paused.as_str()),
        Expr::col(column),
    )
    .finally(value)
    .into()
}

/// A failed target must end `error` or `banned`.
fn check_target_change(change: &TargetChange) -> Result<(), StoreError> {
    match change {
        TargetChange::Fail { status, .. }
            if !matches!(status, TargetStatus::Error | TargetStatus::Banned) =>
        {
            Err(StoreError::Invalid(format!(
                "a failed target must end `error` or `banned`, not `{status}`"
            )))
        }
        _ => Ok(()),
    }
}

fn target_change(
    change: &TargetChange,
    account_id: i64,
    outcome: &JoinOutcome,
) -> Result<Sets<targets::Column>, StoreError> {
    use targets::Column as C;
    let none_time = || Expr::val(None::<chrono::DateTime<chrono::Utc>>);
    let clear_claim = || {
        vec![
            (C::ClaimedAccountId, Expr::val(None::<i64>)),
            (C::ClaimEpoch, Expr::val(None::<i64>)),
            (C::InDoubtTries, Expr::val(0)),
        ]
    };
    let bind = |status: TargetStatus| {
        let mut sets = clear_claim();
        sets.extend([
            (C::Status, Expr::val(status.as_str())),
            (C::AssignedAccountId, Expr::val(account_id)),
            (C::NextRunAt, none_time()),
            (C::ErrorCode, Expr::val(None::<String>)),
            (C::ErrorMessage, Expr::val(None::<String>)),
        ]);
        sets
    };
    Ok(match change {
        TargetChange::Joined { joined_at, warmup_ends_at } => {
            let mut sets = bind(TargetStatus::Joined);
            sets.push((C::JoinedAt, Expr::val(*joined_at)));
            sets.push((C::WarmupEndsAt, Expr::val(*warmup_ends_at)));
            if let JoinOutcome::Joined { peer, .. } = outcome {
                if let Some(id) = peer.id {
                    sets.push((C::PeerId, Expr::val(id)));
                }
                if let Some(title) = &peer.title {
                    sets.push((C::Title, Expr::val(title.as_str())));
                }
            }
            sets
        }
        TargetChange::Requested => bind(TargetStatus::Requested),
        TargetChange::Requeue { run_at } => {
            let mut sets = clear_claim();
            sets.push((C::Status, Expr::val(TargetStatus::Queued.as_str())));
            sets.push((C::NextRunAt, Expr::val(*run_at)));
            sets
        }
        TargetChange::Fail { status, code, message } => {
            check_target_change(change)?;
            let mut sets = clear_claim();
            sets.extend([
                (C::Status, Expr::val(status.as_str())),
                (C::ErrorCode, Expr::val(code.as_str())),
                (C::ErrorMessage, Expr::val(message.as_str())),
                (C::NextRunAt, none_time()),
            ]);
            sets
        }
        // The claim stays pinned to the account, but no epoch owns it until the next take:
        // the same decision written twice (a retry after a lost commit reply) matches nothing
        // the second time, so a decision is applied at most once per epoch.
        TargetChange::KeepClaim { run_at } => vec![
            (C::NextRunAt, Expr::val(*run_at)),
            (C::InDoubtTries, Expr::col(C::InDoubtTries).add(1)),
            (C::ClaimEpoch, Expr::val(None::<i64>)),
        ],
        TargetChange::AwaitAccount { run_at } => {
            vec![(C::NextRunAt, Expr::val(*run_at)), (C::ClaimEpoch, Expr::val(None::<i64>))]
        }
    })
}

/// After a fenced target update matched nothing: `Some(other account)` when the claim was
/// current but the target is bound to another account, `None` when the claim is simply stale.
async fn binding_conflict(
    db: &impl ConnectionTrait,
    target_id: i64,
    account_id: i64,
    epoch: i64,
) -> Result<Option<i64>, StoreError> {
    let Some(t) = targets::Entity::find_by_id(target_id).one(db).await? else {
        return Ok(None);
    };
    let claim_current = t.status == TargetStatus::Joining.as_str()
        && t.claimed_account_id == Some(account_id)
        && t.claim_epoch == Some(epoch);
    Ok(match t.assigned_account_id {
        Some(bound) if claim_current && bound != account_id => Some(bound),
        _ => None,
    })
}

#[cfg(test)]
mod statement_shape {
    use chrono::DateTime;

    use super::*;
    use crate::domain::{Next, PeerInfo};
    use crate::store::sql::assert_documented;

    #[test]
    fn the_decision_is_the_statement_its_doc_comment_shows() {
        let now = DateTime::UNIX_EPOCH;
        let outcome = JoinOutcome::Joined { already: false, peer: PeerInfo::default() };
        let decision = Decision {
            target: TargetChange::Joined { joined_at: now, warmup_ends_at: now },
            account: AccountChange::Pace { until: now },
            next: Next::Done,
        };
        let attempt = Attempt { started_at: now, finished_at: now, worker: "w".to_owned() };
        let w = writes(2, 1, 5, &outcome, &decision, &attempt).unwrap();
        let stmt = decision_statement(w).unwrap();
        assert_documented(include_str!("apply.rs"), "decision_statement", &stmt.sql);
    }

    #[test]
    fn the_decisions_listed_values_are_the_ones_it_binds_for_every_change() {
        let t = DateTime::UNIX_EPOCH + chrono::Duration::days(20_000);
        let at = |s| t + chrono::Duration::seconds(s);
        let attempt = Attempt { started_at: at(1), finished_at: at(2), worker: "w1".to_owned() };
        let accounts = [
            AccountChange::Pace { until: at(3) },
            AccountChange::Wait {
                status: AccountStatus::FloodWait,
                until: at(4),
                reason: "FloodWait 30s".to_owned(),
            },
            AccountChange::Disable { status: AccountStatus::Banned, reason: "banned".to_owned() },
            AccountChange::Unchanged,
        ];
        let targets = [
            TargetChange::Joined { joined_at: at(5), warmup_ends_at: at(6) },
            TargetChange::Requested,
            TargetChange::Requeue { run_at: at(7) },
            TargetChange::Fail {
                status: TargetStatus::Error,
                code: "INVITE_HASH_EXPIRED".to_owned(),
                message: "expired".to_owned(),
            },
            TargetChange::KeepClaim { run_at: at(8) },
            TargetChange::AwaitAccount { run_at: at(9) },
        ];
        let peers = [
            PeerInfo::default(),
            PeerInfo { id: Some(-100_777), title: None },
            PeerInfo { id: Some(-100_777), title: Some("Cars".to_owned()) },
            PeerInfo { id: None, title: Some("Cars".to_owned()) },
        ];
        let mut outcomes: Vec<JoinOutcome> =
            peers.into_iter().map(|peer| JoinOutcome::Joined { already: false, peer }).collect();
        outcomes.push(JoinOutcome::FloodWait { seconds: 45 });
        outcomes.push(crate::domain::classify_rpc_error(400, "CHANNEL_PRIVATE", None));
        let mut shapes = std::collections::HashSet::new();
        for account in &accounts {
            for target in &targets {
                for outcome in &outcomes {
                    let decision = Decision {
                        target: target.clone(),
                        account: account.clone(),
                        next: Next::Done,
                    };
                    let w = writes(2, 1, 5, outcome, &decision, &attempt).unwrap();
                    let built = decision_statement(w).unwrap();
                    let listed = decision_values(2, 1, 5, outcome, &decision, &attempt);
                    let case = format!("{account:?} {target:?} {outcome:?}");
                    assert_eq!(built.values.map(|v| v.0), Some(listed), "{case}");
                    let shape = DecisionShape::of(outcome, &decision);
                    shapes.insert((shape, built.sql));
                }
            }
        }
        // One text per shape: a shape that two texts share would send the wrong one.
        let by_shape: std::collections::HashSet<_> = shapes.iter().map(|(s, _)| *s).collect();
        assert_eq!(by_shape.len(), shapes.len());
    }

    #[test]
    fn a_failed_target_that_does_not_end_failed_is_refused_before_any_statement() {
        let change = TargetChange::Fail {
            status: TargetStatus::Joined,
            code: "X".to_owned(),
            message: "x".to_owned(),
        };
        assert!(matches!(check_target_change(&change), Err(StoreError::Invalid(_))));
    }
}
