//! The three secondary indexes of `targets` become partial, each holding only the rows its
//! query reads. A target's status change is not a HOT update (status is indexed), so before
//! this every move (new -> queued, joining -> joined, ...) inserted into every index. Now:
//! - `new` targets of a niche, for the producer's batch: a target leaves it when queued;
//! - `queued` and `joining` targets by next run, for recovery: a settled target leaves it;
//! - bound targets by account, for the channel limit: an unbound target is never in it.
//!
//! The producer's page update (new -> queued) inserts into one secondary index instead of
//! three, and the decision (joining -> joined) into one instead of three.
//!
//! `accounts` loses `idx_accounts_pool_last_action`: the pick reads the whole pool (a few
//! hundred or thousand rows) and sorts it in another order (never-active accounts first), so
//! the index was never read, but every decision changes `last_action_at`, so every decision
//! was a non-HOT update adding entries to all three indexes of the row. Without it the two
//! updates of a join (take, decision) touch no indexed column; on Postgres the table gets a
//! fillfactor of 50 so they stay on the row's page (HOT) and no index grows.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Accounts {
    Table,
    Pool,
    LastActionAt,
}

#[derive(DeriveIden)]
enum Targets {
    Table,
    Niche,
    Status,
    Id,
    NextRunAt,
    AssignedAccountId,
}

fn index(name: &str) -> IndexCreateStatement {
    Index::create().name(name).table(Targets::Table).take()
}

async fn drop(manager: &SchemaManager<'_>, name: &str) -> Result<(), DbErr> {
    manager.drop_index(Index::drop().name(name).table(Targets::Table).to_owned()).await
}

/// The indexes of the first migration, restored by `down`.
async fn create_full(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    manager
        .create_index(
            index("idx_targets_niche_status_id")
                .col(Targets::Niche)
                .col(Targets::Status)
                .col(Targets::Id)
                .take(),
        )
        .await?;
    manager
        .create_index(
            index("idx_targets_status_next_run")
                .col(Targets::Status)
                .col(Targets::NextRunAt)
                .take(),
        )
        .await?;
    manager
        .create_index(index("idx_targets_assigned_account").col(Targets::AssignedAccountId).take())
        .await
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("idx_accounts_pool_last_action")
                    .table(Accounts::Table)
                    .to_owned(),
            )
            .await?;
        if manager.get_database_backend() == DbBackend::Postgres {
            let db = manager.get_connection();
            db.execute_unprepared("ALTER TABLE accounts SET (fillfactor = 50)").await?;
        }
        for name in [
            "idx_targets_niche_status_id",
            "idx_targets_status_next_run",
            "idx_targets_assigned_account",
        ] {
            drop(manager, name).await?;
        }
        manager
            .create_index(
                index("idx_targets_new_by_niche")
                    .col(Targets::Niche)
                    .col(Targets::Id)
                    .and_where(Expr::col(Targets::Status).eq("new"))
                    .take(),
            )
            .await?;
        manager
            .create_index(
                index("idx_targets_open_by_next_run")
                    .col(Targets::Status)
                    .col(Targets::NextRunAt)
                    .and_where(Expr::col(Targets::Status).is_in(["queued", "joining"]))
                    .take(),
            )
            .await?;
        manager
            .create_index(
                index("idx_targets_bound_account")
                    .col(Targets::AssignedAccountId)
                    .and_where(Expr::col(Targets::AssignedAccountId).is_not_null())
                    .take(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == DbBackend::Postgres {
            let db = manager.get_connection();
            db.execute_unprepared("ALTER TABLE accounts RESET (fillfactor)").await?;
        }
        manager
            .create_index(
                Index::create()
                    .name("idx_accounts_pool_last_action")
                    .table(Accounts::Table)
                    .col(Accounts::Pool)
                    .col(Accounts::LastActionAt)
                    .to_owned(),
            )
            .await?;
        for name in [
            "idx_targets_new_by_niche",
            "idx_targets_open_by_next_run",
            "idx_targets_bound_account",
        ] {
            drop(manager, name).await?;
        }
        create_full(manager).await
    }
}
