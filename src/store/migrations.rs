//! Schema management for the admin CLI: migrations are a deployment step, never a side effect
//! of running.

use migration::{Migrator, MigratorTrait};

use super::{Store, StoreError};

impl Store {
    /// Names of migrations not yet applied.
    pub async fn pending_migrations(&self) -> Result<Vec<String>, StoreError> {
        let pending = Migrator::get_pending_migrations(self.connection()).await?;
        Ok(pending.iter().map(|m| m.name().to_owned()).collect())
    }

    /// Every migration, oldest first, with whether it is applied.
    pub async fn migration_status(&self) -> Result<Vec<(String, bool)>, StoreError> {
        let pending = self.pending_migrations().await?;
        Ok(Migrator::migrations()
            .iter()
            .map(|m| (m.name().to_owned(), !pending.iter().any(|p| p == m.name())))
            .collect())
    }

    /// Rolls back the last `n` applied migrations.
    pub async fn migrate_down(&self, n: u32) -> Result<(), StoreError> {
        Migrator::down(self.connection(), Some(n)).await?;
        Ok(())
    }
}
