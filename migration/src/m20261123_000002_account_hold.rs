//! `accounts.held_until`: while a worker holds an account (from taking its lease until its
//! decision is written) the account is out of the eligible list in Postgres too, not only in
//! Redis. A wiped Redis or a second worker therefore cannot hand the busy account out again,
//! and concurrent jobs stop colliding on the same candidates.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Accounts {
    Table,
    HeldUntil,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Accounts::Table)
                    .add_column(
                        ColumnDef::new(Accounts::HeldUntil).timestamp_with_time_zone().null(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter().table(Accounts::Table).drop_column(Accounts::HeldUntil).to_owned(),
            )
            .await
    }
}
