//! Schema management for the admin CLI: migrations are a deployment step, never a side effect
//! of running.

use migration::{Migrator, MigratorTrait};

use super::{Store, StoreError};

impl Store {
    /// Names of migrations not yet applied. Reads only: on a database that was never
    /// migrated it does not create the migrations table (a `status` must not change anything).
    pub async fn pending_migrations(&self) -> Result<Vec<String>, StoreError> {
        let pending = Migrator::get_pending_migrations_read_only(self.connection()).await?;
        Ok(pending.iter().map(|m| m.name().to_owned()).collect())
    }

    /// Where the schema stands next to this build's migrations: the pending ones and those it
    /// does not know (applied by a newer build). Reads only, like
    /// [`pending_migrations`](Self::pending_migrations).
    pub async fn schema_state(&self) -> Result<migration::SchemaState, StoreError> {
        Ok(migration::schema_state(self.connection()).await?)
    }

    /// Every migration, oldest first, with whether it is applied.
    pub async fn migration_status(&self) -> Result<Vec<(String, bool)>, StoreError> {
        let pending = self.pending_migrations().await?;
        Ok(Migrator::migrations()
            .iter()
            .map(|m| (m.name().to_owned(), !pending.iter().any(|p| p == m.name())))
            .collect())
    }

    /// Rolls back the last `n` applied migrations (fewer when fewer are applied) and returns
    /// the names of those it rolled back, newest first.
    ///
    /// Rolling back the first migration drops the tables with every row in them. Unless
    /// `drop_rows` is set, nothing is rolled back while a table the rollback would drop holds
    /// a row: the error names each such table and its row count.
    pub async fn migrate_down(&self, n: u32, drop_rows: bool) -> Result<Vec<String>, StoreError> {
        let db = self.connection();
        let plan = migration::plan_rollback(db, n).await?;
        if !plan.tables_with_rows.is_empty() && !drop_rows {
            return Err(StoreError::WouldDropRows { tables: plan.tables_with_rows });
        }
        if plan.migrations.is_empty() {
            return Ok(Vec::new());
        }
        // On an adopted SmartJoiner database the first migration's down gives the tables back
        // in their shape; when that cannot work now, nothing is rolled back.
        let first = migration::adopt::ADOPTED_MIGRATIONS[0];
        if plan.migrations.iter().any(|m| m == first)
            && migration::adopt::is_adopted(db).await?
            && let Some(message) = migration::adopt::undo_blocker(db).await?
        {
            return Err(StoreError::CannotUndoAdoption { message });
        }
        let steps = u32::try_from(plan.migrations.len()).unwrap_or(u32::MAX);
        if let Err(e) = Migrator::down(db, Some(steps)).await {
            // Each migration is rolled back on its own: say which ones went before the failure.
            let message = StoreError::from(e).to_string();
            let still = migration::plan_rollback(db, n).await.map(|p| p.migrations);
            let done = match still {
                Ok(still) => plan.migrations.into_iter().filter(|m| !still.contains(m)).collect(),
                Err(_) => vec!["unknown".to_owned()],
            };
            return Err(StoreError::RollbackFailed { done, message });
        }
        Ok(plan.migrations)
    }
}
