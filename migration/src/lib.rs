//! The database schema of smart-joiner, as sea-orm migrations.
//!
//! Applied as a deployment step (`migration up`, or `smart-joiner migrate`), never silently.
//! Every migration has a working `down`.

pub use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::Statement;

pub mod adopt;
mod m20260112_000001_create_tables;
mod m20261123_000002_account_hold;
mod m20261124_000003_leaner_indexes;
mod m20261202_000004_audit_log;
mod m20261206_000001_policies;
mod m20261206_000002_bound_targets;
mod m20261206_000003_pick_order_index;
mod m20261206_000004_pinned_targets_index;
mod m20261207_000001_pinned_index_without_takes;

/// All migrations, oldest first.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20260112_000001_create_tables::Migration),
            Box::new(m20261123_000002_account_hold::Migration),
            Box::new(m20261124_000003_leaner_indexes::Migration),
            Box::new(m20261202_000004_audit_log::Migration),
            Box::new(m20261206_000001_policies::Migration),
            Box::new(m20261206_000002_bound_targets::Migration),
            Box::new(m20261206_000003_pick_order_index::Migration),
            Box::new(m20261206_000004_pinned_targets_index::Migration),
            Box::new(m20261207_000001_pinned_index_without_takes::Migration),
        ]
    }
}

/// Creates sea-orm-migration's table of applied migrations when it is missing (an adoption
/// marks the migrations whose schema it built as applied, inside its transaction).
pub async fn install_migrations_table<C: ConnectionTrait>(db: &C) -> Result<(), DbErr> {
    Migrator::install(db).await
}

/// The tables a migration's `down` drops, with every row in them, by migration name.
///
/// `migrate down` counts the rows of these tables before it rolls anything back and refuses
/// while they hold any, unless told to go on. A new migration whose `down` drops a table must
/// be listed here (the crate's tests check every `down` against this list).
pub fn tables_dropped_by(migration: &str) -> &'static [&'static str] {
    match migration {
        "m20260112_000001_create_tables" => &["join_attempts", "targets", "accounts"],
        "m20261202_000004_audit_log" => &["audit_log"],
        _ => &[],
    }
}

/// What rolling back the last `n` applied migrations would do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollback {
    /// The migrations that would be rolled back, newest first: at most `n`, fewer when fewer
    /// are applied.
    pub migrations: Vec<String>,
    /// The tables they drop that hold rows, with the row counts.
    pub tables_with_rows: Vec<(String, u64)>,
}

/// Plans rolling back the last `n` applied migrations without changing anything (not even
/// creating the migrations table on a database that was never migrated).
pub async fn plan_rollback<C: ConnectionTrait>(db: &C, n: u32) -> Result<Rollback, DbErr> {
    let applied = Migrator::get_applied_migrations_read_only(db).await?;
    let migrations: Vec<String> =
        applied.iter().rev().take(n as usize).map(|m| m.name().to_owned()).collect();
    let backend = db.get_database_backend();
    let mut tables_with_rows = Vec::new();
    // On an adopted SmartJoiner database the first migration's `down` gives the tables back
    // in their original shape instead of dropping them: only `join_attempts` goes.
    let adopted = adopt::is_adopted(db).await?;
    for migration in &migrations {
        let dropped = match tables_dropped_by(migration) {
            tables if adopted && migration == "m20260112_000001_create_tables" => &tables[..1],
            tables => tables,
        };
        for table in dropped {
            // The names come from the list above, never from input.
            let sql = format!("SELECT COUNT(*) AS n FROM \"{table}\"");
            let row = db.query_one_raw(Statement::from_string(backend, sql)).await?;
            let rows: i64 = match row {
                Some(row) => row.try_get("", "n")?,
                None => 0,
            };
            if rows > 0 {
                tables_with_rows.push(((*table).to_owned(), rows as u64));
            }
        }
    }
    Ok(Rollback { migrations, tables_with_rows })
}

/// Where a database's schema stands next to the migrations this build knows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchemaState {
    /// Migrations of this build that are not applied, oldest first.
    pub pending: Vec<String>,
    /// Migrations recorded as applied that this build does not know (a newer build applied
    /// them), in name order.
    pub unknown: Vec<String>,
}

impl SchemaState {
    /// Whether the schema is exactly the one this build was written for.
    pub fn is_current(&self) -> bool {
        self.pending.is_empty() && self.unknown.is_empty()
    }
}

/// Reads where the schema stands, changing nothing (not even creating the migrations table on
/// a database that was never migrated).
pub async fn schema_state<C: ConnectionTrait>(db: &C) -> Result<SchemaState, DbErr> {
    let refused = match Migrator::get_pending_migrations_read_only(db).await {
        Ok(pending) => {
            let pending = pending.iter().map(|m| m.name().to_owned()).collect();
            return Ok(SchemaState { pending, unknown: Vec::new() });
        }
        Err(e) => e,
    };
    // sea-orm-migration refuses a database that holds migrations it does not know (then the
    // table exists): read the recorded versions to name them. Any other failure is its own.
    let sql = "SELECT version FROM seaql_migrations";
    let Ok(rows) = db.query_all_raw(Statement::from_string(db.get_database_backend(), sql)).await
    else {
        return Err(refused);
    };
    let applied: Vec<String> =
        rows.iter().map(|r| r.try_get::<String>("", "version")).collect::<Result<_, _>>()?;
    let known: Vec<String> = Migrator::migrations().iter().map(|m| m.name().to_owned()).collect();
    let mut unknown: Vec<String> = applied.iter().filter(|v| !known.contains(v)).cloned().collect();
    if unknown.is_empty() {
        return Err(refused);
    }
    unknown.sort();
    let pending = known.into_iter().filter(|m| !applied.contains(m)).collect();
    Ok(SchemaState { pending, unknown })
}

#[cfg(test)]
mod tests {
    use sea_orm_migration::sea_orm::{ConnectOptions, Database, DatabaseConnection, DbBackend};

    use super::*;

    async fn sqlite() -> DatabaseConnection {
        // One connection: every statement sees the same in-memory database.
        let mut opts = ConnectOptions::new("sqlite::memory:");
        opts.max_connections(1).min_connections(1).sqlx_logging(false);
        Database::connect(opts).await.unwrap()
    }

    async fn tables(db: &DatabaseConnection) -> Vec<String> {
        let sql = "SELECT name FROM sqlite_master WHERE type = 'table' \
                   AND name NOT LIKE 'sqlite_%' AND name <> 'seaql_migrations' ORDER BY name";
        let rows = db.query_all_raw(Statement::from_string(DbBackend::Sqlite, sql)).await.unwrap();
        rows.iter().map(|r| r.try_get::<String>("", "name").unwrap()).collect()
    }

    #[tokio::test]
    async fn every_down_drops_exactly_the_tables_it_is_listed_with() {
        let db = sqlite().await;
        Migrator::up(&db, None).await.unwrap();
        for migration in Migrator::migrations().iter().rev() {
            let before = tables(&db).await;
            Migrator::down(&db, Some(1)).await.unwrap();
            let after = tables(&db).await;
            let mut dropped: Vec<String> =
                before.iter().filter(|t| !after.contains(t)).cloned().collect();
            let mut listed: Vec<String> =
                tables_dropped_by(migration.name()).iter().map(|t| (*t).to_owned()).collect();
            dropped.sort();
            listed.sort();
            assert_eq!(dropped, listed, "tables dropped by {}", migration.name());
        }
    }

    #[tokio::test]
    async fn a_plan_names_only_applied_migrations_and_counts_rows() {
        let db = sqlite().await;
        let never = plan_rollback(&db, 5).await.unwrap();
        assert_eq!(never, Rollback { migrations: vec![], tables_with_rows: vec![] });
        Migrator::up(&db, None).await.unwrap();
        let all: Vec<String> =
            Migrator::migrations().iter().rev().map(|m| m.name().to_owned()).collect();
        let empty = plan_rollback(&db, 99).await.unwrap();
        assert_eq!(empty.migrations, all);
        assert!(empty.tables_with_rows.is_empty());
        db.execute_unprepared("INSERT INTO accounts (session_name) VALUES ('a'), ('b')")
            .await
            .unwrap();
        let last = plan_rollback(&db, 1).await.unwrap();
        assert_eq!(last.migrations, all[..1].to_vec());
        assert!(last.tables_with_rows.is_empty());
        let full = plan_rollback(&db, 99).await.unwrap();
        assert_eq!(full.tables_with_rows, vec![("accounts".to_owned(), 2)]);
    }

    #[tokio::test]
    async fn the_schema_state_names_pending_and_unknown_migrations_and_changes_nothing() {
        let db = sqlite().await;
        let all: Vec<String> = Migrator::migrations().iter().map(|m| m.name().to_owned()).collect();
        let never = schema_state(&db).await.unwrap();
        assert_eq!(never, SchemaState { pending: all.clone(), unknown: vec![] });
        let sql = "SELECT name FROM sqlite_master WHERE name = 'seaql_migrations'";
        let made = db.query_all_raw(Statement::from_string(DbBackend::Sqlite, sql)).await.unwrap();
        assert!(made.is_empty(), "reading created the migrations table");
        Migrator::up(&db, Some(1)).await.unwrap();
        assert_eq!(schema_state(&db).await.unwrap().pending, all[1..].to_vec());
        Migrator::up(&db, None).await.unwrap();
        assert!(schema_state(&db).await.unwrap().is_current());
        db.execute_unprepared(
            "INSERT INTO seaql_migrations (version, applied_at) VALUES ('m29990101_000001_later', 0)",
        )
        .await
        .unwrap();
        let ahead = schema_state(&db).await.unwrap();
        assert_eq!(ahead.unknown, ["m29990101_000001_later"]);
        assert!(ahead.pending.is_empty());
        assert!(!ahead.is_current());
    }
}
