//! `idx_targets_pinned` narrowed to the targets actually pinned: `WHERE status = 'joining' AND
//! claim_epoch IS NULL`, instead of every target being joined.
//!
//! The pick and the book of free moments look for targets pinned to an account (an in-doubt
//! join to settle, a target waiting for its account): `joining` with no epoch owning the claim.
//! The old index also held every target a running join had claimed (`joining` under an epoch),
//! so each take added an entry and each decision left it dead. Between two vacuums the index
//! (and the other one on `status`, which Postgres also chose for the same question) filled with
//! the dead entries of every target joined since, and a bitmap scan reads dead entries every
//! time: on a busy table the pick read thousands of them per call, and a join's Postgres CPU
//! grew with the joins since the last vacuum. A take now writes nothing into this index; only
//! a join left in doubt, or a target released to wait for its account, does.
//!
//! The pick and the book write both conditions as literals, so a generic plan proves the
//! predicate.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const NAME: &str = "idx_targets_pinned";

async fn replace(manager: &SchemaManager<'_>, predicate: &str) -> Result<(), DbErr> {
    let db = manager.get_connection();
    db.execute_unprepared(&format!("DROP INDEX IF EXISTS {NAME}")).await?;
    let sql = format!("CREATE INDEX {NAME} ON targets (claimed_account_id) WHERE {predicate}");
    db.execute_unprepared(&sql).await?;
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        replace(manager, "status = 'joining' AND claim_epoch IS NULL").await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        replace(manager, "status = 'joining'").await
    }
}
