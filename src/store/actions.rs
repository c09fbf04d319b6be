//! Operator actions: pause and resume an account, retry an `error` target, release an in-doubt
//! pin, import targets. Each is one transaction holding one conditional write and its row in
//! `audit_log` (who, when, what), so an action that did not happen leaves no audit row and one
//! that happened always does. The CLI and the console call these same functions.
//!
//! None of them can break an invariant:
//! - a pause only changes which status the next pick sees (`paused` is not a working status).
//!   A join already under way keeps its hold and finishes; its decision writes the rest but
//!   leaves the pause (see `unless_paused` in `apply.rs`). A pause never replaces a worse
//!   status, and a resume lifts only `paused` (the rest, if any, still runs);
//! - a retry moves only an `error` target back to `new`; its binding, if any, is untouched;
//! - a release frees a `joining` target pinned to an account only while no attempt holds that
//!   account: a frozen worker that resumes later finds its claim gone and writes nothing.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, TransactionTrait,
};

use super::entity::{accounts, audit_log, targets};
use super::targets::import_targets_on;
use super::{Account, ImportReport, Store, StoreError};
use crate::domain::{AccountStatus, TargetLink, TargetStatus};

/// What became of an operator action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionResult {
    /// Written and audited.
    Done,
    /// Nothing written: why, in a sentence for the operator.
    Refused(String),
}

impl ActionResult {
    pub fn is_done(&self) -> bool {
        matches!(self, ActionResult::Done)
    }
}

/// One row of `audit_log`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub detail: Option<String>,
}

impl From<audit_log::Model> for AuditEntry {
    fn from(m: audit_log::Model) -> Self {
        AuditEntry {
            id: m.id,
            at: m.at,
            actor: m.actor,
            action: m.action,
            subject: m.subject,
            detail: m.detail,
        }
    }
}

/// The audit row of an action, written in the action's transaction.
async fn audit<C: ConnectionTrait>(
    db: &C,
    now: DateTime<Utc>,
    actor: &str,
    action: &str,
    subject: String,
    detail: Option<String>,
) -> Result<(), StoreError> {
    audit_log::Entity::insert(audit_log::ActiveModel {
        at: Set(now),
        actor: Set(actor.to_owned()),
        action: Set(action.to_owned()),
        subject: Set(subject),
        detail: Set(detail),
        ..Default::default()
    })
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// The audit row of an import of targets.
pub(super) async fn audit_import<C: ConnectionTrait>(
    db: &C,
    now: DateTime<Utc>,
    actor: &str,
    niche: &str,
    report: &ImportReport,
) -> Result<(), StoreError> {
    let detail = format!("{} accepted, {} duplicates", report.inserted, report.duplicates);
    audit(db, now, actor, "import", format!("niche:{niche}"), Some(detail)).await
}

/// Runs one conditional write and, when it changed a row, its audit row, in one transaction.
macro_rules! audited {
    ($store:expr, $write:expr, $($audit:expr),+) => {{
        let txn = $store.db.begin().await?;
        let changed = $write.exec(&txn).await?.rows_affected;
        if changed == 1 {
            audit(&txn, $($audit),+).await?;
            txn.commit().await?;
            true
        } else {
            txn.rollback().await?;
            false
        }
    }};
}

impl Store {
    /// The account named `session_name`, if any.
    pub async fn account_by_name(&self, session_name: &str) -> Result<Option<Account>, StoreError> {
        accounts::Entity::find()
            .filter(accounts::Column::SessionName.eq(session_name))
            .one(&self.db)
            .await?
            .map(Account::try_from)
            .transpose()
    }

    /// Pauses an account: the pick never chooses it until [`resume_account`]. Refused when the
    /// account is unknown, already paused, or in a status worse than a pause (banned, ...).
    ///
    /// [`resume_account`]: Store::resume_account
    pub async fn pause_account(
        &self,
        account_id: i64,
        actor: &str,
        note: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<ActionResult, StoreError> {
        let Some(before) = self.account(account_id).await? else {
            return Ok(ActionResult::Refused(format!("account {account_id} does not exist")));
        };
        let note = note.map(str::trim).filter(|n| !n.is_empty());
        let reason = match note {
            Some(note) => format!("paused by {actor}: {note}"),
            None => format!("paused by {actor}"),
        };
        let pausable: Vec<&str> =
            AccountStatus::ALL.iter().filter(|s| s.can_pause()).map(|s| s.as_str()).collect();
        let write = accounts::Entity::update_many()
            .col_expr(accounts::Column::Status, Expr::val(AccountStatus::Paused.as_str()))
            .col_expr(accounts::Column::StatusReason, Expr::val(reason))
            .col_expr(accounts::Column::UpdatedAt, Expr::val(now))
            .filter(accounts::Column::Id.eq(account_id))
            .filter(accounts::Column::Status.is_in(pausable));
        let detail = note.map(str::to_owned);
        let done =
            audited!(self, write, now, actor, "pause", format!("account:{account_id}"), detail);
        Ok(if done {
            ActionResult::Done
        } else {
            let status = self.account(account_id).await?.map_or(before.status, |a| a.status);
            ActionResult::Refused(match status {
                AccountStatus::Paused => format!("account {account_id} is already paused"),
                s => format!("account {account_id} is {s}: a pause never replaces that status"),
            })
        })
    }

    /// Sets an account's own active hours (`None`: the pool's again). Refused for an unknown
    /// account. Takes effect at the next pick and the next decision; a join under way ends.
    pub async fn set_active_hours(
        &self,
        account_id: i64,
        hours: Option<&crate::domain::ActiveHours>,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<ActionResult, StoreError> {
        let text = hours.map(ToString::to_string);
        let write = accounts::Entity::update_many()
            .col_expr(accounts::Column::ActiveHours, Expr::val(text.clone()))
            .col_expr(accounts::Column::UpdatedAt, Expr::val(now))
            .filter(accounts::Column::Id.eq(account_id));
        let detail = Some(text.unwrap_or_else(|| "the pool's".to_owned()));
        let done =
            audited!(self, write, now, actor, "hours", format!("account:{account_id}"), detail);
        Ok(if done {
            ActionResult::Done
        } else {
            ActionResult::Refused(format!("account {account_id} does not exist"))
        })
    }

    /// Lifts an operator's pause: the account is `active` again (a rest it was given, by a
    /// FloodWait or a join's pacing, still runs). Refused unless the account is `paused`.
    pub async fn resume_account(
        &self,
        account_id: i64,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<ActionResult, StoreError> {
        let write = accounts::Entity::update_many()
            .col_expr(accounts::Column::Status, Expr::val(AccountStatus::Active.as_str()))
            .col_expr(accounts::Column::StatusReason, Expr::val(None::<String>))
            .col_expr(accounts::Column::UpdatedAt, Expr::val(now))
            .filter(accounts::Column::Id.eq(account_id))
            .filter(accounts::Column::Status.eq(AccountStatus::Paused.as_str()));
        let done =
            audited!(self, write, now, actor, "resume", format!("account:{account_id}"), None);
        Ok(if done {
            ActionResult::Done
        } else {
            match self.account(account_id).await? {
                None => ActionResult::Refused(format!("account {account_id} does not exist")),
                Some(a) => ActionResult::Refused(format!(
                    "account {account_id} is {}, not paused: only a pause is lifted here",
                    a.status
                )),
            }
        })
    }

    /// Gives an `error` target another chance: back to `new`, its error cleared (the audit row
    /// keeps the old error code). Refused unless the target is `error`.
    pub async fn retry_target(
        &self,
        target_id: i64,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<ActionResult, StoreError> {
        let Some(before) = self.target(target_id).await? else {
            return Ok(ActionResult::Refused(format!("target {target_id} does not exist")));
        };
        let write = targets::Entity::update_many()
            .col_expr(targets::Column::Status, Expr::val(TargetStatus::New.as_str()))
            .col_expr(targets::Column::ErrorCode, Expr::val(None::<String>))
            .col_expr(targets::Column::ErrorMessage, Expr::val(None::<String>))
            .col_expr(targets::Column::NextRunAt, Expr::val(None::<DateTime<Utc>>))
            .col_expr(targets::Column::InDoubtTries, Expr::val(0))
            .col_expr(targets::Column::UpdatedAt, Expr::val(now))
            .filter(targets::Column::Id.eq(target_id))
            .filter(targets::Column::Status.eq(TargetStatus::Error.as_str()));
        let detail = before.error_code.clone().map(|c| format!("was error {c}"));
        let done =
            audited!(self, write, now, actor, "retry", format!("target:{target_id}"), detail);
        Ok(if done {
            ActionResult::Done
        } else {
            let status = self.target(target_id).await?.map_or(before.status, |t| t.status);
            ActionResult::Refused(format!(
                "target {target_id} is {status}: only an error target is retried"
            ))
        })
    }

    /// Releases a `joining` target pinned to an account after an unanswered join (in doubt):
    /// back to `new`, unclaimed, so any account may take it. Only while no attempt holds the
    /// pinned account at `now`; the operator confirms first that the account did not join
    /// (if it did, releasing lets a second account join the group). Refused otherwise.
    pub async fn release_pin(
        &self,
        target_id: i64,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<ActionResult, StoreError> {
        let Some(before) = self.target(target_id).await? else {
            return Ok(ActionResult::Refused(format!("target {target_id} does not exist")));
        };
        let held = Query::select()
            .expr(Expr::val(1))
            .from(accounts::Entity)
            .and_where(
                Expr::col((accounts::Entity, accounts::Column::Id))
                    .equals((targets::Entity, targets::Column::ClaimedAccountId)),
            )
            .and_where(Expr::col((accounts::Entity, accounts::Column::HeldUntil)).gt(now))
            .take();
        let write = targets::Entity::update_many()
            .col_expr(targets::Column::Status, Expr::val(TargetStatus::New.as_str()))
            .col_expr(targets::Column::ClaimedAccountId, Expr::val(None::<i64>))
            .col_expr(targets::Column::ClaimEpoch, Expr::val(None::<i64>))
            .col_expr(targets::Column::InDoubtTries, Expr::val(0))
            .col_expr(targets::Column::NextRunAt, Expr::val(None::<DateTime<Utc>>))
            .col_expr(targets::Column::UpdatedAt, Expr::val(now))
            .filter(targets::Column::Id.eq(target_id))
            .filter(targets::Column::Status.eq(TargetStatus::Joining.as_str()))
            .filter(targets::Column::ClaimedAccountId.is_not_null())
            .filter(Expr::exists(held).not());
        let detail = before.claimed_account_id.map(|a| {
            format!("was pinned to account {a} after {} unanswered tries", before.in_doubt_tries)
        });
        let done =
            audited!(self, write, now, actor, "release", format!("target:{target_id}"), detail);
        Ok(if done {
            ActionResult::Done
        } else {
            let now_t = self.target(target_id).await?;
            ActionResult::Refused(match now_t {
                Some(t) if t.status == TargetStatus::Joining && t.claimed_account_id.is_some() => {
                    format!(
                        "target {target_id} is being joined right now (its account is held): \
                         wait for the attempt to end"
                    )
                }
                Some(t) => format!(
                    "target {target_id} is {}, not pinned to an account: nothing to release",
                    t.status
                ),
                None => format!("target {target_id} does not exist"),
            })
        })
    }

    /// [`Store::import_targets`] with its audit row, in one transaction.
    pub async fn import_targets_audited(
        &self,
        links: &[TargetLink],
        niche: &str,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<ImportReport, StoreError> {
        let txn = self.db.begin().await?;
        let report = import_targets_on(&txn, links, niche, None, now).await?;
        audit_import(&txn, now, actor, niche, &report).await?;
        txn.commit().await?;
        Ok(report)
    }

    /// The newest audit rows first, at most `limit`; of one subject (`account:3`) or all.
    pub async fn audit_log(
        &self,
        subject: Option<&str>,
        limit: u64,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let mut q = audit_log::Entity::find().order_by_desc(audit_log::Column::Id).limit(limit);
        if let Some(subject) = subject {
            q = q.filter(audit_log::Column::Subject.eq(subject));
        }
        Ok(q.all(&self.db).await?.into_iter().map(AuditEntry::from).collect())
    }
}
