//! `accounts.bound_targets`: how many targets are bound to the account
//! (`targets.assigned_account_id`), kept on its row so the pick compares it with the channel
//! limit without counting the account's targets on every join. Backfilled here from the
//! targets; from then on every write that binds a target keeps it exact in the same statement
//! (Postgres) or transaction (SQLite), and the invariants checker compares it with the real
//! count.
//!
//! Apply it with no older worker running: an older build binds targets without counting them.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Accounts {
    Table,
    BoundTargets,
}

/// Sets every account's count to the number of targets bound to it.
const RECOUNT: &str = "UPDATE accounts SET bound_targets = \
     (SELECT COUNT(*) FROM targets WHERE targets.assigned_account_id = accounts.id)";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let column =
            ColumnDef::new(Accounts::BoundTargets).integer().not_null().default(0).to_owned();
        manager
            .alter_table(Table::alter().table(Accounts::Table).add_column(column).to_owned())
            .await?;
        let db = manager.get_connection();
        if db.get_database_backend() == DbBackend::Postgres {
            // No binding may commit between the count and the end of this migration's
            // transaction.
            db.execute_unprepared("LOCK TABLE targets IN SHARE MODE").await?;
        }
        db.execute_unprepared(RECOUNT).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Accounts::Table)
                    .drop_column(Accounts::BoundTargets)
                    .to_owned(),
            )
            .await
    }
}
