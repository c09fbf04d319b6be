//! `idx_targets_pinned` on `targets (claimed_account_id) WHERE status = 'joining'`: the pick
//! leaves out an account that has a target pinned to it and due (an in-doubt join to settle, a
//! target waiting for its account), so that target, not a free one, is the account's next
//! join. The pick asks that per candidate account (`NOT EXISTS`); the book of free moments
//! reads each account's earliest pinned run. Only the targets being joined or pinned are in
//! the index (a handful per account at most), so it stays small whatever the table holds.
//!
//! The pick writes `status = 'joining'` as a literal, so a generic plan proves the predicate.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const NAME: &str = "idx_targets_pinned";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let sql =
            format!("CREATE INDEX {NAME} ON targets (claimed_account_id) WHERE status = 'joining'");
        manager.get_connection().execute_unprepared(&sql).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(&format!("DROP INDEX {NAME}")).await?;
        Ok(())
    }
}
