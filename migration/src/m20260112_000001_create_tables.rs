//! accounts, targets and join_attempts, with the indexes of the hot queries.
//!
//! Timestamps are `timestamp with time zone` on Postgres; on SQLite sea-query stores them as
//! text, which the application always writes in UTC so that text order is time order.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Accounts {
    Table,
    Id,
    SessionName,
    Pool,
    Status,
    StatusReason,
    NextAllowedActionTime,
    LastActionAt,
    LeaseEpoch,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Targets {
    Table,
    Id,
    Link,
    Kind,
    Niche,
    Status,
    AssignedAccountId,
    ClaimedAccountId,
    ClaimEpoch,
    JoinedAt,
    WarmupEndsAt,
    ErrorCode,
    ErrorMessage,
    Attempts,
    InDoubtTries,
    EnqueuedAt,
    NextRunAt,
    PeerId,
    Title,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum JoinAttempts {
    Table,
    Id,
    TargetId,
    AccountId,
    Epoch,
    StartedAt,
    FinishedAt,
    Outcome,
    FloodWaitSeconds,
    ErrorCode,
    Worker,
}

fn pk(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).big_integer().not_null().auto_increment().primary_key().take()
}

fn text(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).text().not_null().take()
}

fn text_null(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).text().null().take()
}

fn text_default(col: impl IntoIden, default: &str) -> ColumnDef {
    ColumnDef::new(col).text().not_null().default(default).take()
}

fn int_zero(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).integer().not_null().default(0).take()
}

fn time_null(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).timestamp_with_time_zone().null().take()
}

fn time_now(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col)
        .timestamp_with_time_zone()
        .not_null()
        .default(Expr::current_timestamp())
        .take()
}

fn index(name: &str, table: impl IntoIden) -> IndexCreateStatement {
    Index::create().name(name).table(table).take()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Accounts::Table)
                    .col(pk(Accounts::Id))
                    .col(text(Accounts::SessionName).unique_key())
                    .col(text_default(Accounts::Pool, "default"))
                    .col(text_default(Accounts::Status, "active"))
                    .col(text_null(Accounts::StatusReason))
                    .col(time_null(Accounts::NextAllowedActionTime))
                    .col(time_null(Accounts::LastActionAt))
                    .col(ColumnDef::new(Accounts::LeaseEpoch).big_integer().not_null().default(0))
                    .col(time_now(Accounts::CreatedAt))
                    .col(time_now(Accounts::UpdatedAt))
                    .take(),
            )
            .await?;
        // Eligible accounts of a pool, in fairness order.
        manager
            .create_index(
                index("idx_accounts_pool_last_action", Accounts::Table)
                    .col(Accounts::Pool)
                    .col(Accounts::LastActionAt)
                    .take(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Targets::Table)
                    .col(pk(Targets::Id))
                    .col(text(Targets::Link).unique_key())
                    .col(text(Targets::Kind))
                    .col(text(Targets::Niche))
                    .col(text_default(Targets::Status, "new"))
                    .col(ColumnDef::new(Targets::AssignedAccountId).big_integer().null())
                    .col(ColumnDef::new(Targets::ClaimedAccountId).big_integer().null())
                    .col(ColumnDef::new(Targets::ClaimEpoch).big_integer().null())
                    .col(time_null(Targets::JoinedAt))
                    .col(time_null(Targets::WarmupEndsAt))
                    .col(text_null(Targets::ErrorCode))
                    .col(text_null(Targets::ErrorMessage))
                    .col(int_zero(Targets::Attempts))
                    .col(int_zero(Targets::InDoubtTries))
                    .col(time_null(Targets::EnqueuedAt))
                    .col(time_null(Targets::NextRunAt))
                    .col(ColumnDef::new(Targets::PeerId).big_integer().null())
                    .col(text_null(Targets::Title))
                    .col(time_now(Targets::CreatedAt))
                    .col(time_now(Targets::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_targets_assigned_account")
                            .from(Targets::Table, Targets::AssignedAccountId)
                            .to(Accounts::Table, Accounts::Id)
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_targets_claimed_account")
                            .from(Targets::Table, Targets::ClaimedAccountId)
                            .to(Accounts::Table, Accounts::Id)
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .take(),
            )
            .await?;
        // The producer's batch: `new` targets of a niche, oldest first.
        manager
            .create_index(
                index("idx_targets_niche_status_id", Targets::Table)
                    .col(Targets::Niche)
                    .col(Targets::Status)
                    .col(Targets::Id)
                    .take(),
            )
            .await?;
        // Recovery: `queued` targets long past their next_run_at, `joining` targets.
        manager
            .create_index(
                index("idx_targets_status_next_run", Targets::Table)
                    .col(Targets::Status)
                    .col(Targets::NextRunAt)
                    .take(),
            )
            .await?;
        // The channel limit: targets bound to an account.
        manager
            .create_index(
                index("idx_targets_assigned_account", Targets::Table)
                    .col(Targets::AssignedAccountId)
                    .take(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(JoinAttempts::Table)
                    .col(pk(JoinAttempts::Id))
                    .col(ColumnDef::new(JoinAttempts::TargetId).big_integer().not_null())
                    .col(ColumnDef::new(JoinAttempts::AccountId).big_integer().not_null())
                    .col(ColumnDef::new(JoinAttempts::Epoch).big_integer().not_null())
                    .col(
                        ColumnDef::new(JoinAttempts::StartedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(JoinAttempts::FinishedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(text(JoinAttempts::Outcome))
                    .col(ColumnDef::new(JoinAttempts::FloodWaitSeconds).integer().null())
                    .col(text_null(JoinAttempts::ErrorCode))
                    .col(text(JoinAttempts::Worker))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_join_attempts_target")
                            .from(JoinAttempts::Table, JoinAttempts::TargetId)
                            .to(Targets::Table, Targets::Id)
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_join_attempts_account")
                            .from(JoinAttempts::Table, JoinAttempts::AccountId)
                            .to(Accounts::Table, Accounts::Id)
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .take(),
            )
            .await?;
        // The daily cap: an account's attempts of the last 24 hours.
        manager
            .create_index(
                index("idx_join_attempts_account_finished", JoinAttempts::Table)
                    .col(JoinAttempts::AccountId)
                    .col(JoinAttempts::FinishedAt)
                    .take(),
            )
            .await?;
        manager
            .create_index(
                index("idx_join_attempts_target", JoinAttempts::Table)
                    .col(JoinAttempts::TargetId)
                    .take(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // An adopted SmartJoiner database keeps its tables: they go back to their shape.
        if crate::adopt::is_adopted(manager.get_connection()).await? {
            return crate::adopt::undo(manager.get_connection()).await;
        }
        // Indexes go with their tables; children before parents.
        for table in [
            JoinAttempts::Table.into_iden(),
            Targets::Table.into_iden(),
            Accounts::Table.into_iden(),
        ] {
            manager.drop_table(Table::drop().table(table).take()).await?;
        }
        Ok(())
    }
}
