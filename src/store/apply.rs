//! Step 6 of the join: the decision applied in one transaction fenced by the lease epoch.

use sea_orm::sea_query::{Expr, ExprTrait, SimpleExpr};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, DatabaseTransaction, EntityTrait, QueryFilter,
    TransactionTrait,
};

use super::entity::{accounts, join_attempts, targets};
use super::{Applied, Attempt, Store, StoreError};
use crate::domain::{AccountChange, Decision, JoinOutcome, TargetChange, TargetStatus};

type Sets<C> = Vec<(C, SimpleExpr)>;

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
        let txn = self.db.begin().await?;

        // The account first: its row lock serialises us with a concurrent lease bump.
        let mut account_sets: Sets<accounts::Column> = vec![
            (accounts::Column::LastActionAt, Expr::val(attempt.finished_at)),
            (accounts::Column::UpdatedAt, Expr::val(now)),
        ];
        account_sets.extend(account_change(&decision.account));
        // The decision ends the hold taken with the lease.
        account_sets
            .push((accounts::Column::HeldUntil, Expr::val(None::<chrono::DateTime<chrono::Utc>>)));
        let mut update = accounts::Entity::update_many()
            .filter(accounts::Column::Id.eq(account_id))
            .filter(accounts::Column::LeaseEpoch.eq(epoch));
        for (col, value) in account_sets {
            update = update.col_expr(col, value);
        }
        if update.exec(&txn).await?.rows_affected != 1 {
            txn.rollback().await?;
            return Ok(Applied::Stale);
        }

        let claim = Condition::all()
            .add(targets::Column::Id.eq(target_id))
            .add(targets::Column::Status.eq(TargetStatus::Joining.as_str()))
            .add(targets::Column::ClaimedAccountId.eq(account_id))
            .add(targets::Column::ClaimEpoch.eq(epoch));
        let mut target_cond = claim.clone();
        if decision.binds() {
            // Write-once binding: only if unbound or already bound to this account.
            target_cond = target_cond.add(
                Condition::any()
                    .add(targets::Column::AssignedAccountId.is_null())
                    .add(targets::Column::AssignedAccountId.eq(account_id)),
            );
        }
        let mut update = targets::Entity::update_many()
            .filter(target_cond)
            .col_expr(targets::Column::Attempts, Expr::col(targets::Column::Attempts).add(1));
        update = update.col_expr(targets::Column::UpdatedAt, Expr::val(now));
        for (col, value) in target_change(&decision.target, account_id, outcome)? {
            update = update.col_expr(col, value);
        }
        if update.exec(&txn).await?.rows_affected != 1 {
            let problem = binding_conflict(&txn, target_id, account_id, epoch).await?;
            txn.rollback().await?;
            return match problem {
                Some(bound_to) => Err(StoreError::Corrupt {
                    table: "targets",
                    id: target_id,
                    problem: format!(
                        "claimed by account {account_id} but bound to account {bound_to}"
                    ),
                }),
                None => Ok(Applied::Stale),
            };
        }

        let flood_wait_seconds = match outcome {
            JoinOutcome::FloodWait { seconds } => Some(i32::try_from(*seconds).unwrap_or(i32::MAX)),
            _ => None,
        };
        join_attempts::Entity::insert(join_attempts::ActiveModel {
            target_id: Set(target_id),
            account_id: Set(account_id),
            epoch: Set(epoch),
            started_at: Set(attempt.started_at),
            finished_at: Set(attempt.finished_at),
            outcome: Set(outcome.kind().to_owned()),
            flood_wait_seconds: Set(flood_wait_seconds),
            error_code: Set(outcome.error_code().map(str::to_owned)),
            worker: Set(attempt.worker.clone()),
            ..Default::default()
        })
        .exec_without_returning(&txn)
        .await?;
        txn.commit().await?;
        Ok(Applied::Applied)
    }
}

fn account_change(change: &AccountChange) -> Sets<accounts::Column> {
    use accounts::Column as C;
    match change {
        AccountChange::Pace { until } => vec![
            (C::Status, Expr::val(crate::domain::AccountStatus::Active.as_str())),
            (C::StatusReason, Expr::val(None::<String>)),
            (C::NextAllowedActionTime, Expr::val(*until)),
        ],
        AccountChange::Wait { status, until, reason } => vec![
            (C::Status, Expr::val(status.as_str())),
            (C::StatusReason, Expr::val(reason.as_str())),
            (C::NextAllowedActionTime, Expr::val(*until)),
        ],
        AccountChange::Disable { status, reason } => vec![
            (C::Status, Expr::val(status.as_str())),
            (C::StatusReason, Expr::val(reason.as_str())),
        ],
        AccountChange::Unchanged => vec![],
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
            if !matches!(status, TargetStatus::Error | TargetStatus::Banned) {
                return Err(StoreError::Invalid(format!(
                    "a failed target must end `error` or `banned`, not `{status}`"
                )));
            }
            let mut sets = clear_claim();
            sets.extend([
                (C::Status, Expr::val(status.as_str())),
                (C::ErrorCode, Expr::val(code.as_str())),
                (C::ErrorMessage, Expr::val(message.as_str())),
                (C::NextRunAt, none_time()),
            ]);
            sets
        }
        TargetChange::KeepClaim { run_at } => vec![
            (C::NextRunAt, Expr::val(*run_at)),
            (C::InDoubtTries, Expr::col(C::InDoubtTries).add(1)),
        ],
    })
}

/// After a fenced target update matched nothing: `Some(other account)` when the claim was
/// current but the target is bound to another account, `None` when the claim is simply stale.
async fn binding_conflict(
    txn: &DatabaseTransaction,
    target_id: i64,
    account_id: i64,
    epoch: i64,
) -> Result<Option<i64>, StoreError> {
    let Some(t) = targets::Entity::find_by_id(target_id).one(txn).await? else {
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
