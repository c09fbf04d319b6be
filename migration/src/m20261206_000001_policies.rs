//! What Telegram says about each account, kept on its row, and the account's active hours:
//!
//! - `premium`, `channel_limit`: the account's Premium flag and the channel limit
//!   help.getAppConfig gives it (`channels_limit_default` or `channels_limit_premium`), read
//!   when it connects; NULL until first read.
//! - `frozen_since`, `frozen_until`, `freeze_appeal_url`: the freeze help.getAppConfig reports.
//! - `profile_read_at`: when those were last read (a join's connect reads them once a day).
//! - `checked_at`, `check_result`: when `accounts check` last connected it, and what it found.
//! - `active_hours`: the account's own daily windows (`Europe/Kyiv 09:00-22:00`), NULL for the
//!   pool's.
//! - `targets.folder`: the folder link (`t.me/addlist/SLUG`) a target was expanded from.
//!
//! One column per statement: SQLite alters one column at a time.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum Accounts {
    Table,
    Premium,
    ChannelLimit,
    FrozenSince,
    FrozenUntil,
    FreezeAppealUrl,
    ProfileReadAt,
    CheckedAt,
    CheckResult,
    ActiveHours,
}

fn columns() -> Vec<ColumnDef> {
    use Accounts::*;
    vec![
        ColumnDef::new(Premium).boolean().null().to_owned(),
        ColumnDef::new(ChannelLimit).integer().null().to_owned(),
        ColumnDef::new(FrozenSince).timestamp_with_time_zone().null().to_owned(),
        ColumnDef::new(FrozenUntil).timestamp_with_time_zone().null().to_owned(),
        ColumnDef::new(FreezeAppealUrl).text().null().to_owned(),
        ColumnDef::new(ProfileReadAt).timestamp_with_time_zone().null().to_owned(),
        ColumnDef::new(CheckedAt).timestamp_with_time_zone().null().to_owned(),
        ColumnDef::new(CheckResult).text().null().to_owned(),
        ColumnDef::new(ActiveHours).text().null().to_owned(),
    ]
}

const NAMES: [Accounts; 9] = [
    Accounts::Premium,
    Accounts::ChannelLimit,
    Accounts::FrozenSince,
    Accounts::FrozenUntil,
    Accounts::FreezeAppealUrl,
    Accounts::ProfileReadAt,
    Accounts::CheckedAt,
    Accounts::CheckResult,
    Accounts::ActiveHours,
];

#[derive(DeriveIden)]
enum Targets {
    Table,
    Folder,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in columns() {
            manager
                .alter_table(Table::alter().table(Accounts::Table).add_column(column).to_owned())
                .await?;
        }
        let folder = ColumnDef::new(Targets::Folder).text().null().to_owned();
        manager
            .alter_table(Table::alter().table(Targets::Table).add_column(folder).to_owned())
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter().table(Targets::Table).drop_column(Targets::Folder).to_owned(),
            )
            .await?;
        for name in NAMES.iter().rev() {
            manager
                .alter_table(Table::alter().table(Accounts::Table).drop_column(*name).to_owned())
                .await?;
        }
        Ok(())
    }
}
