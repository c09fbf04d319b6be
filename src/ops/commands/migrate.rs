//! `smart-joiner migrate`: apply, roll back, list, adopt. These open the database as it is
//! (the other commands refuse one whose schema is not current).

use serde::Serialize;

use crate::ops::output::{Report, Style, Table};
use crate::store::{AdoptOptions, AdoptionPlan, Store, StoreError};

/// `migrate up`: the migrations it applied, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Applied {
    pub applied: Vec<String>,
}

impl Report for Applied {
    fn render(&self, _style: Style) -> String {
        format!("migrations applied: {}\n", self.applied.len())
    }
}

/// Applies every pending migration.
pub async fn up(store: &Store) -> anyhow::Result<Applied> {
    let applied = store.pending_migrations().await?;
    store.migrate().await?;
    Ok(Applied { applied })
}

/// `migrate down`: the migrations it rolled back, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RolledBack {
    pub rolled_back: Vec<String>,
}

impl Report for RolledBack {
    fn render(&self, _style: Style) -> String {
        if self.rolled_back.is_empty() {
            return "nothing rolled back: no migration is applied\n".to_owned();
        }
        let mut out =
            format!("rolled back {} migration(s), newest first:\n", self.rolled_back.len());
        for name in &self.rolled_back {
            out.push_str(&format!("  {name}\n"));
        }
        out
    }
}

/// Rolls back the last `n` migrations; refuses to drop tables holding rows unless `drop_rows`.
pub async fn down(store: &Store, n: u32, drop_rows: bool) -> anyhow::Result<RolledBack> {
    let rolled_back = match store.migrate_down(n, drop_rows).await {
        Err(e @ StoreError::WouldDropRows { .. }) => {
            anyhow::bail!("{e}. Back the database up, then pass --yes to drop them with every row")
        }
        other => other?,
    };
    Ok(RolledBack { rolled_back })
}

/// One migration and whether it is applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MigrationState {
    pub name: String,
    pub applied: bool,
}

/// `migrate status`: every migration, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Migrations(pub Vec<MigrationState>);

impl Report for Migrations {
    fn render(&self, style: Style) -> String {
        let mut t = Table::new(&["migration", "state"]);
        for m in &self.0 {
            let state = if m.applied { "applied" } else { "pending" };
            t.row(vec![m.name.clone().into(), state.into()]);
        }
        t.render(style)
    }
}

/// Lists every migration and whether it is applied.
pub async fn status(store: &Store) -> anyhow::Result<Migrations> {
    let rows = store.migration_status().await?;
    Ok(Migrations(
        rows.into_iter().map(|(name, applied)| MigrationState { name, applied }).collect(),
    ))
}

/// A target whose group column is not a link smart-joiner can join.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unjoinable {
    pub id: i64,
    pub status: String,
    pub reason: String,
}

/// `migrate adopt`: what taking over a SmartJoiner database does (`dry_run`) or did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Adoption {
    pub dry_run: bool,
    pub adopted: bool,
    pub group_column: String,
    pub session_column: String,
    pub accounts: u64,
    pub targets: u64,
    /// Targets bound to an account, kept bound.
    pub bound: u64,
    /// Every change, in the order it is made.
    pub changes: Vec<String>,
    pub unparsed: Vec<Unjoinable>,
}

impl Adoption {
    fn new(plan: AdoptionPlan, dry_run: bool) -> Self {
        let unparsed = plan
            .unparsed
            .into_iter()
            .map(|u| Unjoinable { id: u.id, status: u.status, reason: u.reason })
            .collect();
        Adoption {
            dry_run,
            adopted: !dry_run,
            group_column: plan.group_column,
            session_column: plan.session_column,
            accounts: plan.accounts,
            targets: plan.targets,
            bound: plan.bound,
            changes: plan.changes,
            unparsed,
        }
    }
}

impl Report for Adoption {
    fn render(&self, _style: Style) -> String {
        let mut out = String::new();
        let mut line = |text: String| {
            out.push_str(&text);
            out.push('\n');
        };
        let verb = if self.dry_run { "would adopt" } else { "adopted" };
        line(format!(
            "{verb} SmartJoiner's tables: {} accounts, {} targets ({} bound, kept bound); group column {}, session column {}",
            self.accounts, self.targets, self.bound, self.group_column, self.session_column
        ));
        line(format!(
            "{}:",
            if self.dry_run { "changes it would make, in order" } else { "changes made" }
        ));
        for change in &self.changes {
            line(format!("  {change}"));
        }
        if !self.unparsed.is_empty() {
            line(format!(
                "{} target(s) whose {} is not a link smart-joiner can join (kept, never joined):",
                self.unparsed.len(),
                self.group_column
            ));
            for u in &self.unparsed {
                line(format!("  targets#{} ({}): {}", u.id, u.status, u.reason));
            }
        }
        if self.dry_run {
            line("nothing was changed (dry run)".to_owned());
        }
        out
    }
}

/// Takes over a SmartJoiner database in place, or (`dry_run`) says what that would do.
pub async fn adopt(store: &Store, opts: &AdoptOptions, dry_run: bool) -> anyhow::Result<Adoption> {
    let plan = if dry_run {
        store.plan_adoption(opts).await?
    } else {
        store.adopt_smartjoiner(opts).await?
    };
    Ok(Adoption::new(plan, dry_run))
}
