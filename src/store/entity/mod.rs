//! SeaORM entities: one per table, mirroring `migration/`. Statuses and kinds are plain text
//! here; `store` converts them into domain types at the boundary.

pub mod accounts;
pub mod audit_log;
pub mod join_attempts;
pub mod targets;
