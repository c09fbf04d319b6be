//! Read queries for the operator console: searchable target lists, an account's groups, the
//! latest attempts, the attempts of the last days for the activity charts, queued targets due
//! and scheduled. Like the reports, a handful of grouped queries, never one per row.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    Statement,
};

use super::entity::{accounts, join_attempts, targets};
use super::{AttemptRow, Store, StoreError, Target, targets_from};
use crate::domain::TargetStatus;

/// Which targets a list shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetFilter {
    pub niche: Option<String>,
    pub status: Option<TargetStatus>,
    /// A piece of the link or the title (case-insensitive on ASCII).
    pub search: Option<String>,
}

/// Queued targets of a niche: due now (a job should be running or be picked up) and
/// scheduled later.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueuedCount {
    pub niche: String,
    pub due: u64,
    pub scheduled: u64,
}

/// How many attempts of one outcome finished in one hour, for the activity charts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HourCount {
    /// The start of the hour (UTC).
    pub hour: DateTime<Utc>,
    pub outcome: String,
    pub count: u64,
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// `%text%` for LIKE, with LIKE's wildcards in `text` escaped (by `\`).
fn like_pattern(text: &str) -> String {
    let mut p = String::with_capacity(text.len() + 2);
    p.push('%');
    for c in text.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

impl Store {
    /// Targets matching `filter`, newest id first, at most `limit`.
    pub async fn search_targets(
        &self,
        filter: &TargetFilter,
        limit: u64,
    ) -> Result<Vec<Target>, StoreError> {
        let mut q = targets::Entity::find().order_by_desc(targets::Column::Id).limit(limit);
        if let Some(niche) = &filter.niche {
            q = q.filter(targets::Column::Niche.eq(niche.as_str()));
        }
        if let Some(status) = filter.status {
            q = q.filter(targets::Column::Status.eq(status.as_str()));
        }
        if let Some(search) = filter.search.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            let pattern = like_pattern(search);
            let like = |col: targets::Column| {
                Expr::expr(sea_orm::sea_query::Func::lower(Expr::col(col)))
                    .like(sea_orm::sea_query::LikeExpr::new(pattern.clone()).escape('\\'))
            };
            q = q.filter(
                Condition::any().add(like(targets::Column::Link)).add(like(targets::Column::Title)),
            );
        }
        targets_from(q.all(&self.db).await?)
    }

    /// Targets bound to the account or claimed by it now, by id.
    pub async fn targets_of_account(&self, account_id: i64) -> Result<Vec<Target>, StoreError> {
        let models = targets::Entity::find()
            .filter(
                Condition::any()
                    .add(targets::Column::AssignedAccountId.eq(account_id))
                    .add(targets::Column::ClaimedAccountId.eq(account_id)),
            )
            .order_by_asc(targets::Column::Id)
            .all(&self.db)
            .await?;
        targets_from(models)
    }

    /// The newest attempts first, at most `limit`; of one account and/or one target, or all.
    pub async fn recent_attempts(
        &self,
        target_id: Option<i64>,
        account_id: Option<i64>,
        limit: u64,
    ) -> Result<Vec<AttemptRow>, StoreError> {
        let mut q =
            join_attempts::Entity::find().order_by_desc(join_attempts::Column::Id).limit(limit);
        if let Some(t) = target_id {
            q = q.filter(join_attempts::Column::TargetId.eq(t));
        }
        if let Some(a) = account_id {
            q = q.filter(join_attempts::Column::AccountId.eq(a));
        }
        q.all(&self.db).await?.into_iter().map(AttemptRow::try_from).collect()
    }

    /// When each account's last recorded attempt finished (accounts without one are absent).
    pub async fn last_attempt_at(&self) -> Result<HashMap<i64, DateTime<Utc>>, StoreError> {
        let rows: Vec<(i64, Option<DateTime<Utc>>)> = join_attempts::Entity::find()
            .select_only()
            .column(join_attempts::Column::AccountId)
            .expr(Expr::col(join_attempts::Column::FinishedAt).max())
            .group_by(join_attempts::Column::AccountId)
            .into_tuple()
            .all(&self.db)
            .await?;
        Ok(rows.into_iter().filter_map(|(a, t)| t.map(|t| (a, t))).collect())
    }

    /// Attempts that finished in `(since, now]`, counted per UTC hour and outcome, in one
    /// grouped query (a few hundred rows for two weeks, however many attempts there were).
    pub async fn attempts_per_hour(
        &self,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<HourCount>, StoreError> {
        // The hour as text `YYYY-MM-DDTHH`: on SQLite timestamps are RFC 3339 text the
        // application always writes in UTC, so its first 13 characters are the hour.
        let hour = if self.is_postgres() {
            r#"to_char(finished_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24')"#
        } else {
            "substr(finished_at, 1, 13)"
        };
        let backend = self.db.get_database_backend();
        let placeholders = if self.is_postgres() { ("$1", "$2") } else { ("?", "?") };
        let sql = format!(
            "SELECT {hour} AS h, outcome, COUNT(*) AS n FROM join_attempts \
             WHERE finished_at > {} AND finished_at <= {} GROUP BY 1, 2 ORDER BY 1, 2",
            placeholders.0, placeholders.1
        );
        let stmt = Statement::from_sql_and_values(backend, sql, [since.into(), now.into()]);
        let rows = self.db.query_all_raw(stmt).await?;
        rows.into_iter()
            .map(|row| {
                let h: String = row.try_get("", "h")?;
                let outcome: String = row.try_get("", "outcome")?;
                let n: i64 = row.try_get("", "n")?;
                let hour = chrono::NaiveDateTime::parse_from_str(
                    &format!("{h}:00:00"),
                    "%Y-%m-%dT%H:%M:%S",
                )
                .map_err(|e| {
                    super::corrupt("join_attempts", 0, format!("finished_at hour {h:?}: {e}"))
                })?
                .and_utc();
                Ok(HourCount { hour, outcome, count: count(n) })
            })
            .collect()
    }

    /// Queued targets per niche, due at `now` (or without a time) and scheduled later.
    pub async fn queued_counts(&self, now: DateTime<Utc>) -> Result<Vec<QueuedCount>, StoreError> {
        let grouped = |due: bool| {
            let when = if due {
                Condition::any()
                    .add(targets::Column::NextRunAt.is_null())
                    .add(targets::Column::NextRunAt.lte(now))
            } else {
                Condition::all().add(targets::Column::NextRunAt.gt(now))
            };
            targets::Entity::find()
                .select_only()
                .column(targets::Column::Niche)
                .expr(Expr::col(targets::Column::Id).count())
                .filter(targets::Column::Status.eq(TargetStatus::Queued.as_str()))
                .filter(when)
                .group_by(targets::Column::Niche)
                .into_tuple::<(String, i64)>()
                .all(&self.db)
        };
        let mut by_niche: std::collections::BTreeMap<String, QueuedCount> = Default::default();
        for (niche, n) in grouped(true).await? {
            by_niche
                .entry(niche.clone())
                .or_insert_with(|| QueuedCount { niche, ..Default::default() })
                .due = count(n);
        }
        for (niche, n) in grouped(false).await? {
            by_niche
                .entry(niche.clone())
                .or_insert_with(|| QueuedCount { niche, ..Default::default() })
                .scheduled = count(n);
        }
        Ok(by_niche.into_values().collect())
    }

    /// Session names by account id.
    pub async fn account_names(&self) -> Result<HashMap<i64, String>, StoreError> {
        Ok(accounts::Entity::find()
            .select_only()
            .column(accounts::Column::Id)
            .column(accounts::Column::SessionName)
            .into_tuple::<(i64, String)>()
            .all(&self.db)
            .await?
            .into_iter()
            .collect())
    }

    /// Links by target id, of the given targets.
    pub async fn target_links(&self, ids: &[i64]) -> Result<HashMap<i64, String>, StoreError> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let mut out = HashMap::new();
        for chunk in ids.chunks(super::CHUNK) {
            let rows: Vec<(i64, String)> = targets::Entity::find()
                .select_only()
                .column(targets::Column::Id)
                .column(targets::Column::Link)
                .filter(targets::Column::Id.is_in(chunk.iter().copied()))
                .into_tuple()
                .all(&self.db)
                .await?;
            out.extend(rows);
        }
        Ok(out)
    }

    /// The distinct niches, sorted.
    pub async fn niches(&self) -> Result<Vec<String>, StoreError> {
        Ok(targets::Entity::find()
            .select_only()
            .column(targets::Column::Niche)
            .distinct()
            .order_by_asc(targets::Column::Niche)
            .into_tuple::<String>()
            .all(&self.db)
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::like_pattern;

    #[test]
    fn a_search_escapes_like_wildcards() {
        assert_eq!(like_pattern("Cars_UA"), "%cars\\_ua%");
        assert_eq!(like_pattern("100%"), "%100\\%%");
    }
}
