//! Targets: import, the producer's batch, claims and the unfenced moves, recovery reads.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{
    Expr, ExprTrait, LockBehavior, LockType, OnConflict, Query, UpdateStatement,
};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, QueryTrait, TransactionTrait,
};

use super::entity::{accounts, join_attempts, targets};
use super::sql::sub;
use super::{AttemptRow, CHUNK, Claimable, ImportReport, Store, StoreError, Target, targets_from};
use crate::domain::{TargetLink, TargetStatus};

fn status(s: TargetStatus) -> &'static str {
    s.as_str()
}

/// `status IN ('new', 'queued')`: the only statuses unfenced moves may touch.
fn unclaimed() -> Condition {
    Condition::all().add(
        targets::Column::Status.is_in([status(TargetStatus::New), status(TargetStatus::Queued)]),
    )
}

/// Ids bound per statement by `Store::target_statuses`: well under SQLite's limit of 32,766
/// bound parameters (and Postgres' 65,535), large enough that 50,000 targets take 10 statements.
const STATUS_PAGE: usize = 5_000;

/// Error message of a target given back because no account could take it.
pub const NO_AVAILABLE_ACCOUNTS: &str = "No available accounts";

/// The producer's page: up to `batch_size` `new` targets of `niche` with ids above `after_id`
/// (oldest first) moved to `queued`, due `now`, and returned. On Postgres the ids are chosen
/// `FOR UPDATE SKIP LOCKED`, so overlapping producers never take the same target, and looked
/// up with `= ANY(ARRAY(...))`: the subquery runs once and each id is found by primary key,
/// where `IN (...)` lets the planner hash-join it against a scan of the whole table. Its shape
/// on Postgres, checked by a test against the statement built (`$n` are bound values):
///
/// ```sql
/// UPDATE "targets"
/// SET "status" = $1, "enqueued_at" = $2, "next_run_at" = $3, "updated_at" = $4
/// WHERE ("targets"."id" = ANY(ARRAY((SELECT "id" FROM "targets"
/// WHERE "niche" = $5 AND "status" = $6 AND "id" > $7
/// ORDER BY "id" ASC LIMIT $8 FOR UPDATE SKIP LOCKED))))
/// AND "targets"."status" = $9
/// RETURNING *
/// ```
fn page_update(
    niche: &str,
    after_id: i64,
    batch_size: u64,
    now: DateTime<Utc>,
    postgres: bool,
) -> UpdateStatement {
    let mut pick = Query::select()
        .column(targets::Column::Id)
        .from(targets::Entity)
        .and_where(Expr::col(targets::Column::Niche).eq(niche))
        .and_where(Expr::col(targets::Column::Status).eq(status(TargetStatus::New)))
        .and_where(Expr::col(targets::Column::Id).gt(after_id))
        .order_by(targets::Column::Id, sea_orm::Order::Asc)
        .limit(batch_size)
        .take();
    let chosen = if postgres {
        pick.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
        Expr::cust_with_expr("\"targets\".\"id\" = ANY(ARRAY($1))", sub(pick))
    } else {
        Expr::col((targets::Entity, targets::Column::Id)).in_subquery(pick)
    };
    let mut update = targets::Entity::update_many()
        .col_expr(targets::Column::Status, Expr::val(status(TargetStatus::Queued)))
        .col_expr(targets::Column::EnqueuedAt, Expr::val(now))
        .col_expr(targets::Column::NextRunAt, Expr::val(now))
        .col_expr(targets::Column::UpdatedAt, Expr::val(now))
        .filter(chosen)
        .filter(targets::Column::Status.eq(status(TargetStatus::New)))
        .into_query();
    update.returning_all();
    update
}

impl Store {
    /// Inserts the links as `new` targets of `niche`, in one transaction. A link already
    /// stored (in any niche) or repeated in `links` is counted as a duplicate, not inserted.
    pub async fn import_targets(
        &self,
        links: &[TargetLink],
        niche: &str,
    ) -> Result<ImportReport, StoreError> {
        let txn = self.db.begin().await?;
        let report = import_targets_on(&txn, links, niche, None, self.now()).await?;
        txn.commit().await?;
        Ok(report)
    }

    /// Starts a streaming import into `niche` ([`TargetImport`]): one transaction, committed
    /// by [`TargetImport::commit`] with its audit row.
    pub async fn begin_import(&self, niche: &str) -> Result<TargetImport, StoreError> {
        let txn = self.db.begin().await?;
        let importer = Importer::start(&txn, niche, None, self.now()).await?;
        Ok(TargetImport { txn, importer })
    }

    /// [`import_targets`](Self::import_targets) of the chats a folder link listed: each new
    /// target records the folder (`t.me/addlist/SLUG`); one already stored is left as it is.
    pub async fn import_folder_targets(
        &self,
        links: &[TargetLink],
        niche: &str,
        folder: &str,
    ) -> Result<ImportReport, StoreError> {
        let txn = self.db.begin().await?;
        let report = import_targets_on(&txn, links, niche, Some(folder), self.now()).await?;
        txn.commit().await?;
        Ok(report)
    }

    pub async fn target(&self, id: i64) -> Result<Option<Target>, StoreError> {
        targets::Entity::find_by_id(id)
            .filter(targets::Column::Kind.ne(migration::adopt::UNPARSED_KIND))
            .one(&self.db)
            .await?
            .map(Target::try_from)
            .transpose()
    }

    /// The status of each of `ids` that is a stored target (an adopted row that is no target,
    /// or an id not stored, is left out), read 5,000 ids per statement: a batch's
    /// report of tens of thousands of targets in a few round trips, not one per target.
    pub async fn target_statuses(
        &self,
        ids: &[i64],
    ) -> Result<HashMap<i64, TargetStatus>, StoreError> {
        let mut out = HashMap::with_capacity(ids.len());
        for page in ids.chunks(STATUS_PAGE) {
            let rows: Vec<(i64, String)> = targets::Entity::find()
                .select_only()
                .column(targets::Column::Id)
                .column(targets::Column::Status)
                .filter(targets::Column::Id.is_in(page.iter().copied()))
                .filter(targets::Column::Kind.ne(migration::adopt::UNPARSED_KIND))
                .into_tuple()
                .all(&self.db)
                .await?;
            for (id, s) in rows {
                let status = TargetStatus::parse(&s).ok_or_else(|| {
                    super::corrupt("targets", id, format!("unknown status {s:?}"))
                })?;
                out.insert(id, status);
            }
        }
        Ok(out)
    }

    /// Targets by id, optionally of one niche and/or one status.
    pub async fn targets(
        &self,
        niche: Option<&str>,
        status: Option<TargetStatus>,
    ) -> Result<Vec<Target>, StoreError> {
        // An adopted SmartJoiner row whose group is not a link (`migrate adopt` listed it) is
        // kept in the table but is no target: it is never loaded.
        let mut q = targets::Entity::find()
            .filter(targets::Column::Kind.ne(migration::adopt::UNPARSED_KIND))
            .order_by_asc(targets::Column::Id);
        if let Some(niche) = niche {
            q = q.filter(targets::Column::Niche.eq(niche));
        }
        if let Some(status) = status {
            q = q.filter(targets::Column::Status.eq(status.as_str()));
        }
        targets_from(q.all(&self.db).await?)
    }

    /// Moves up to `batch_size` `new` targets of `niche` (oldest id first) to `queued`, due
    /// now, and returns them. On Postgres the rows are taken `FOR UPDATE SKIP LOCKED`, so
    /// overlapping producers never take the same target; SQLite has one writer at a time.
    pub async fn queue_new_targets(
        &self,
        niche: &str,
        batch_size: u64,
        now: DateTime<Utc>,
    ) -> Result<Vec<Target>, StoreError> {
        self.queue_new_targets_after(niche, 0, batch_size, now).await
    }

    /// [`queue_new_targets`](Self::queue_new_targets) among ids above `after_id`: a caller
    /// taking a large batch page by page passes the last id of its previous page, so no page
    /// walks past the rows the earlier ones moved.
    pub async fn queue_new_targets_after(
        &self,
        niche: &str,
        after_id: i64,
        batch_size: u64,
        now: DateTime<Utc>,
    ) -> Result<Vec<Target>, StoreError> {
        // One statement: the ids are chosen by a subquery (locked, skipping rows an overlapping
        // producer holds), moved and returned; no id list travels to the client and back.
        let backend = self.db.get_database_backend();
        let page = page_update(niche, after_id, batch_size, now, self.is_postgres());
        let mut models =
            targets::Entity::find().from_raw_sql(backend.build(&page)).all(&self.db).await?;
        models.sort_unstable_by_key(|t| t.id);
        targets_from(models)
    }

    /// Claims the target for `account` under lease `epoch`: -> `joining` with
    /// claimed_account_id and claim_epoch. Only from `new`/`queued`, or from `joining` claimed
    /// by the same account (an in-doubt retry), and only while the account's lease_epoch still
    /// equals `epoch`. One conditional update; false when the condition failed.
    pub async fn claim_target(
        &self,
        target_id: i64,
        account_id: i64,
        epoch: i64,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        claim_target_on(&self.db, target_id, account_id, epoch, now).await
    }

    /// Reschedules a target no account could take now: `queued`, due at `run_at`. Only from
    /// `new`/`queued`; true when a row changed.
    pub async fn requeue_target(
        &self,
        target_id: i64,
        run_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let now = self.now();
        let res = targets::Entity::update_many()
            .col_expr(targets::Column::Status, Expr::val(status(TargetStatus::Queued)))
            .col_expr(targets::Column::NextRunAt, Expr::val(run_at))
            .col_expr(
                targets::Column::EnqueuedAt,
                Expr::col(targets::Column::EnqueuedAt).if_null(now),
            )
            .col_expr(targets::Column::UpdatedAt, Expr::val(now))
            .filter(targets::Column::Id.eq(target_id))
            .filter(unclaimed())
            .exec(&self.db)
            .await?;
        Ok(res.rows_affected == 1)
    }

    /// Gives a target back (`new`, with `reason` as its error message) when no account of its
    /// pool can ever take it. Only from `new`/`queued`; true when a row changed.
    pub async fn give_back_target(&self, target_id: i64, reason: &str) -> Result<bool, StoreError> {
        let res = targets::Entity::update_many()
            .col_expr(targets::Column::Status, Expr::val(status(TargetStatus::New)))
            .col_expr(targets::Column::ErrorMessage, Expr::val(reason))
            .col_expr(targets::Column::NextRunAt, Expr::val(None::<DateTime<Utc>>))
            .col_expr(targets::Column::EnqueuedAt, Expr::val(None::<DateTime<Utc>>))
            .col_expr(targets::Column::UpdatedAt, Expr::val(self.now()))
            .filter(targets::Column::Id.eq(target_id))
            .filter(unclaimed())
            .exec(&self.db)
            .await?;
        Ok(res.rows_affected == 1)
    }

    /// Drops the claim of a `joining` target whose account can never work again: -> `queued`
    /// due at `run_at`, claim and in-doubt count cleared. Only while `account_id` holds the
    /// claim; true when a row changed.
    pub async fn release_claim(
        &self,
        target_id: i64,
        account_id: i64,
        run_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let res = targets::Entity::update_many()
            .col_expr(targets::Column::Status, Expr::val(status(TargetStatus::Queued)))
            .col_expr(targets::Column::ClaimedAccountId, Expr::val(None::<i64>))
            .col_expr(targets::Column::ClaimEpoch, Expr::val(None::<i64>))
            .col_expr(targets::Column::InDoubtTries, Expr::val(0))
            .col_expr(targets::Column::NextRunAt, Expr::val(run_at))
            .col_expr(targets::Column::UpdatedAt, Expr::val(self.now()))
            .filter(targets::Column::Id.eq(target_id))
            .filter(targets::Column::Status.eq(status(TargetStatus::Joining)))
            .filter(targets::Column::ClaimedAccountId.eq(account_id))
            .exec(&self.db)
            .await?;
        Ok(res.rows_affected == 1)
    }

    /// Recovery: `queued` targets of any niche due before `before` (or never scheduled),
    /// longest overdue first.
    pub async fn stale_queued_targets(
        &self,
        before: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<Target>, StoreError> {
        let models = targets::Entity::find()
            .filter(targets::Column::Status.eq(status(TargetStatus::Queued)))
            .filter(
                Condition::any()
                    .add(targets::Column::NextRunAt.lt(before))
                    .add(targets::Column::NextRunAt.is_null()),
            )
            .order_by_asc(targets::Column::NextRunAt)
            .order_by_asc(targets::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?;
        targets_from(models)
    }

    /// Recovery: `joining` targets (each with its claim); the caller checks the leases.
    pub async fn joining_targets(&self, limit: u64) -> Result<Vec<Target>, StoreError> {
        let models = targets::Entity::find()
            .filter(targets::Column::Status.eq(status(TargetStatus::Joining)))
            .order_by_asc(targets::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?;
        targets_from(models)
    }

    /// Sets next_run_at of re-enqueued `queued`/`joining` targets, so the next recovery pass
    /// does not enqueue them again at once. Terminal and `new` targets are left alone.
    pub async fn touch_next_run(
        &self,
        target_ids: &[i64],
        run_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if target_ids.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin().await?;
        for chunk in target_ids.chunks(CHUNK) {
            targets::Entity::update_many()
                .col_expr(targets::Column::NextRunAt, Expr::val(run_at))
                .col_expr(targets::Column::UpdatedAt, Expr::val(self.now()))
                .filter(targets::Column::Id.is_in(chunk.iter().copied()))
                .filter(
                    targets::Column::Status
                        .is_in([status(TargetStatus::Queued), status(TargetStatus::Joining)]),
                )
                .exec(&txn)
                .await?;
        }
        txn.commit().await?;
        Ok(())
    }

    /// Attempt rows, oldest first, optionally of one target and/or one account.
    pub async fn attempts(
        &self,
        target_id: Option<i64>,
        account_id: Option<i64>,
    ) -> Result<Vec<AttemptRow>, StoreError> {
        let mut q = join_attempts::Entity::find().order_by_asc(join_attempts::Column::Id);
        if let Some(t) = target_id {
            q = q.filter(join_attempts::Column::TargetId.eq(t));
        }
        if let Some(a) = account_id {
            q = q.filter(join_attempts::Column::AccountId.eq(a));
        }
        q.all(&self.db).await?.into_iter().map(AttemptRow::try_from).collect()
    }
}

/// `new`/`queued`, or `joining` claimed by `account_id` (its own in-doubt retry); and bound to
/// nobody or to `account_id` (a binding is forever: no other account may take the group).
pub(super) fn claimable_by(account_id: i64) -> Condition {
    Condition::all()
        .add(
            Condition::any().add(unclaimed()).add(
                Condition::all()
                    .add(targets::Column::Status.eq(status(TargetStatus::Joining)))
                    .add(targets::Column::ClaimedAccountId.eq(account_id)),
            ),
        )
        .add(
            Condition::any()
                .add(targets::Column::AssignedAccountId.is_null())
                .add(targets::Column::AssignedAccountId.eq(account_id)),
        )
}

/// The targets a take may claim for `account_id` (see [`Claimable`]).
pub(super) fn claimable(which: Claimable, account_id: i64) -> Condition {
    match which {
        Claimable::Any => claimable_by(account_id),
        Claimable::FreeOnly => {
            Condition::all().add(unclaimed()).add(targets::Column::AssignedAccountId.is_null())
        }
    }
}

/// [`Store::claim_target`] on a connection or inside a transaction.
pub(super) async fn claim_target_on<C: ConnectionTrait>(
    db: &C,
    target_id: i64,
    account_id: i64,
    epoch: i64,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    claim_target_where(db, target_id, account_id, epoch, now, claimable_by(account_id)).await
}

/// [`claim_target_on`], claiming only a target that matches `claimable`.
pub(super) async fn claim_target_where<C: ConnectionTrait>(
    db: &C,
    target_id: i64,
    account_id: i64,
    epoch: i64,
    now: DateTime<Utc>,
    claimable: Condition,
) -> Result<bool, StoreError> {
    let lease_current = Query::select()
        .expr(Expr::val(1))
        .from(accounts::Entity)
        .and_where(Expr::col(accounts::Column::Id).eq(account_id))
        .and_where(Expr::col(accounts::Column::LeaseEpoch).eq(epoch))
        .take();
    let res = targets::Entity::update_many()
        .col_expr(targets::Column::Status, Expr::val(status(TargetStatus::Joining)))
        .col_expr(targets::Column::ClaimedAccountId, Expr::val(account_id))
        .col_expr(targets::Column::ClaimEpoch, Expr::val(epoch))
        .col_expr(targets::Column::UpdatedAt, Expr::val(now))
        .filter(targets::Column::Id.eq(target_id))
        .filter(claimable)
        .filter(Expr::exists(lease_current))
        .exec(db)
        .await?;
    Ok(res.rows_affected == 1)
}

/// Rows of one `INSERT` of an import: 9 values each, well under Postgres's 65,535 and
/// SQLite's 32,766 bound parameters.
const IMPORT_ROWS: usize = 2000;

/// The temporary table of an import's links that were already stored, so that a second line
/// with one of them counts as repeated in the input rather than already stored. It lives in
/// the database, not in memory: a re-import of a file of millions of lines finds them all.
const SEEN_TABLE: &str = "sj_import_stored";

/// An import of targets in progress, on a transaction of its caller: links arrive in pieces
/// ([`Importer::add`]), each piece is inserted in statements of [`IMPORT_ROWS`] rows, and
/// nothing but the current piece is held in memory.
pub(super) struct Importer {
    niche: String,
    folder: Option<String>,
    now: DateTime<Utc>,
    /// The highest target id before the import: a link that conflicts with a row above it
    /// was inserted by this import (an earlier line), one at or below it was already stored.
    before_max_id: i64,
    seen_table: bool,
    report: ImportReport,
}

impl Importer {
    pub(super) async fn start<C: ConnectionTrait>(
        txn: &C,
        niche: &str,
        folder: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Importer, StoreError> {
        let max: Option<Option<i64>> = targets::Entity::find()
            .select_only()
            .column_as(targets::Column::Id.max(), "max_id")
            .into_tuple()
            .one(txn)
            .await?;
        Ok(Importer {
            niche: niche.to_owned(),
            folder: folder.map(str::to_owned),
            now,
            before_max_id: max.flatten().unwrap_or(0),
            seen_table: false,
            report: ImportReport::default(),
        })
    }

    /// Inserts the links not stored yet, in their order; counts the others.
    pub(super) async fn add<C: ConnectionTrait>(
        &mut self,
        txn: &C,
        links: &[TargetLink],
    ) -> Result<(), StoreError> {
        for piece in links.chunks(IMPORT_ROWS) {
            self.add_piece(txn, piece).await?;
        }
        Ok(())
    }

    async fn add_piece<C: ConnectionTrait>(
        &mut self,
        txn: &C,
        links: &[TargetLink],
    ) -> Result<(), StoreError> {
        let mut seen = HashSet::new();
        let unique: Vec<&TargetLink> = links.iter().filter(|l| seen.insert(*l)).collect();
        self.report.repeated += (links.len() - unique.len()) as u64;
        self.report.duplicates += (links.len() - unique.len()) as u64;
        if unique.is_empty() {
            return Ok(());
        }
        let rows = unique.iter().map(|link| targets::ActiveModel {
            link: Set(link.to_string()),
            kind: Set(link.kind().as_str().to_owned()),
            niche: Set(self.niche.clone()),
            status: Set(status(TargetStatus::New).to_owned()),
            attempts: Set(0),
            in_doubt_tries: Set(0),
            folder: Set(self.folder.clone()),
            created_at: Set(self.now),
            updated_at: Set(self.now),
            ..Default::default()
        });
        // ON CONFLICT DO NOTHING also covers a concurrent import of the same link.
        let inserted = targets::Entity::insert_many(rows)
            .on_conflict(OnConflict::column(targets::Column::Link).do_nothing().to_owned())
            .exec_without_returning(txn)
            .await?;
        self.report.inserted += inserted;
        let conflicts = unique.len() as u64 - inserted;
        if conflicts == 0 {
            return Ok(());
        }
        self.report.duplicates += conflicts;
        // Which of them were stored before the import: each counts once as already stored,
        // and again (a later line) as repeated.
        let texts: Vec<String> = unique.iter().map(|l| l.to_string()).collect();
        let first_seen = self.mark_stored_seen(txn, texts).await?;
        self.report.repeated += conflicts - first_seen;
        Ok(())
    }

    /// Adds those of `links` that were stored before the import to [`SEEN_TABLE`], in one
    /// statement (`INSERT INTO seen SELECT link FROM targets WHERE link IN (...) AND id <=
    /// before`): the links go to the database once and nothing comes back but the count.
    /// Returns how many were not in the table yet.
    async fn mark_stored_seen<C: ConnectionTrait>(
        &mut self,
        txn: &C,
        links: Vec<String>,
    ) -> Result<u64, StoreError> {
        let backend = txn.get_database_backend();
        if !self.seen_table {
            // Emptied as well as created: a table left on a pooled connection holds nothing
            // of this import.
            let create = match backend {
                sea_orm::DbBackend::Postgres => format!(
                    "CREATE TEMPORARY TABLE IF NOT EXISTS {SEEN_TABLE} (link TEXT PRIMARY KEY) ON COMMIT DROP"
                ),
                _ => format!(
                    "CREATE TEMPORARY TABLE IF NOT EXISTS {SEEN_TABLE} (link TEXT PRIMARY KEY)"
                ),
            };
            txn.execute_unprepared(&create).await?;
            txn.execute_unprepared(&format!("DELETE FROM {SEEN_TABLE}")).await?;
            self.seen_table = true;
        }
        let table = sea_orm::sea_query::Alias::new(SEEN_TABLE);
        let link = sea_orm::sea_query::Alias::new("link");
        let stored = Query::select()
            .column(targets::Column::Link)
            .from(targets::Entity)
            .and_where(targets::Column::Link.is_in(links))
            .and_where(targets::Column::Id.lte(self.before_max_id))
            .take();
        let mut insert = Query::insert();
        insert
            .into_table(table)
            .columns([link.clone()])
            .select_from(stored)
            .map_err(|e| StoreError::Invalid(format!("the import's lookup statement: {e}")))?
            .on_conflict(OnConflict::column(link).do_nothing().to_owned());
        Ok(txn.execute(&insert).await?.rows_affected())
    }

    /// Ends the import (its rows are written when the caller commits); its report.
    pub(super) async fn finish<C: ConnectionTrait>(
        self,
        txn: &C,
    ) -> Result<ImportReport, StoreError> {
        if self.seen_table && txn.get_database_backend() != sea_orm::DbBackend::Postgres {
            txn.execute_unprepared(&format!("DROP TABLE IF EXISTS temp.{SEEN_TABLE}")).await?;
        }
        Ok(self.report)
    }
}

/// A streaming import of targets ([`Store::begin_import`]): links are added in pieces of any
/// size, all in one transaction, so that a file of any length is imported in bounded memory
/// and all or nothing. Dropped without [`TargetImport::commit`], it stores nothing.
pub struct TargetImport {
    txn: sea_orm::DatabaseTransaction,
    importer: Importer,
}

impl TargetImport {
    /// Inserts the links not stored yet (in their order, as `new` targets); counts the
    /// others. Visible to nobody until the commit.
    pub async fn add(&mut self, links: &[TargetLink]) -> Result<(), StoreError> {
        self.importer.add(&self.txn, links).await
    }

    /// What was added so far.
    pub fn report(&self) -> ImportReport {
        self.importer.report
    }

    /// Commits the import with its audit row (`import`, subject `niche:NICHE`, the counts).
    pub async fn commit(self, actor: &str) -> Result<ImportReport, StoreError> {
        let TargetImport { txn, importer } = self;
        let (niche, now) = (importer.niche.clone(), importer.now);
        let report = importer.finish(&txn).await?;
        super::actions::audit_import(&txn, now, actor, &niche, &report).await?;
        txn.commit().await?;
        Ok(report)
    }
}

/// [`Store::import_targets`] inside a transaction (the console's audited import shares it).
pub(super) async fn import_targets_on<C: ConnectionTrait>(
    txn: &C,
    links: &[TargetLink],
    niche: &str,
    folder: Option<&str>,
    now: DateTime<Utc>,
) -> Result<ImportReport, StoreError> {
    let mut importer = Importer::start(txn, niche, folder, now).await?;
    importer.add(txn, links).await?;
    importer.finish(txn).await
}

#[cfg(test)]
mod statement_shape {
    use super::*;
    use crate::store::sql::assert_documented;

    #[test]
    fn the_producers_page_is_the_statement_its_doc_comment_shows() {
        let page = page_update("cars", 100, 10_000, DateTime::UNIX_EPOCH, true);
        let stmt = sea_orm::DbBackend::Postgres.build(&page);
        assert_documented(include_str!("targets.rs"), "page_update", &stmt.sql);
    }
}
