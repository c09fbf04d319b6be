//! `idx_accounts_pick_order` on `accounts (pool, last_action_at NULLS FIRST, id)`: the order of
//! the pick's inner query (`ORDER BY last_action_at ASC NULLS FIRST, id ASC LIMIT spread` among
//! the pool's cheaply eligible accounts). With it Postgres walks the pool in that order and
//! stops after `spread` eligible rows; without it every pick read and sorted the whole pool,
//! which at 10,000 accounts was most of the pick's time (BENCHMARKS.md, "Session 7: the pool of
//! 10,000").
//!
//! m20261124_000003 dropped the older `(pool, last_action_at)` index because the pick never
//! read it (its order put NULLs last) while every decision, which changes `last_action_at`,
//! paid for it as a non-HOT update. This one matches the pick's order exactly, so the decision
//! pays one index entry per join for a pick that no longer grows with the pool.
//!
//! Not partial: the pick binds its statuses as parameters, and a generic plan cannot prove a
//! partial index's predicate from them.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

const NAME: &str = "idx_accounts_pick_order";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        // SQLite sorts NULLs first in ascending order and takes no NULLS FIRST in an index.
        let sql = if db.get_database_backend() == DbBackend::Postgres {
            format!("CREATE INDEX {NAME} ON accounts (pool, last_action_at ASC NULLS FIRST, id)")
        } else {
            format!("CREATE INDEX {NAME} ON accounts (pool, last_action_at, id)")
        };
        db.execute_unprepared(&sql).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(&format!("DROP INDEX {NAME}")).await?;
        Ok(())
    }
}
