//! The database schema of smart-joiner, as sea-orm migrations.
//!
//! Applied as a deployment step (`migration up`, or `smart-joiner migrate`), never silently.
//! Every migration has a working `down`.

pub use sea_orm_migration::prelude::*;

mod m20260112_000001_create_tables;
mod m20261123_000002_account_hold;
mod m20261124_000003_leaner_indexes;

/// All migrations, oldest first.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20260112_000001_create_tables::Migration),
            Box::new(m20261123_000002_account_hold::Migration),
            Box::new(m20261124_000003_leaner_indexes::Migration),
        ]
    }
}
