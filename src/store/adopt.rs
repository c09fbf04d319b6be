//! Adopting a SmartJoiner database in place (`smart-joiner migrate adopt`): the schema work is
//! `migration::adopt`; this side gives it the domain's statuses and link parsing.

use migration::adopt::{self, AdoptError, Options};
pub use migration::adopt::{GROUP_COLUMNS, Plan as AdoptionPlan, SESSION_COLUMNS, Unparsed};

use super::{Store, StoreError};
use crate::domain::{AccountStatus, TargetLink, TargetStatus};

/// What the operator tells the adoption.
#[derive(Debug, Clone, Default)]
pub struct AdoptOptions {
    /// The group column of `targets`; detected among [`GROUP_COLUMNS`] when None.
    pub group_column: Option<String>,
    /// The session-name column of `accounts`; detected among [`SESSION_COLUMNS`] when None.
    pub session_column: Option<String>,
}

fn normalise(value: &str) -> Result<(String, String), String> {
    TargetLink::parse(value)
        .map(|l| (l.to_string(), l.kind().as_str().to_owned()))
        .map_err(|e| e.to_string())
}

/// The statuses smart-joiner reads: accounts, targets, targets still to be joined.
fn statuses() -> (Vec<&'static str>, Vec<&'static str>, Vec<&'static str>) {
    let accounts = AccountStatus::ALL.iter().map(|s| s.as_str()).collect();
    let targets = TargetStatus::ALL.iter().map(|s| s.as_str()).collect();
    let workable =
        TargetStatus::ALL.iter().filter(|s| s.is_workable()).map(|s| s.as_str()).collect();
    (accounts, targets, workable)
}

fn store_error(e: AdoptError) -> StoreError {
    match e {
        AdoptError::Refused(problems) => StoreError::NotAdoptable { problems },
        AdoptError::Db(e) => e.into(),
    }
}

impl Store {
    /// What adopting this database would do; changes nothing.
    pub async fn plan_adoption(&self, opts: &AdoptOptions) -> Result<AdoptionPlan, StoreError> {
        let (accounts, targets, workable) = statuses();
        let options = Options {
            group_column: opts.group_column.clone(),
            session_column: opts.session_column.clone(),
            account_statuses: &accounts,
            target_statuses: &targets,
            workable_statuses: &workable,
            normalise: &normalise,
        };
        adopt::plan(self.connection(), &options).await.map_err(store_error)
    }

    /// Adopts a SmartJoiner database in place, in one transaction (see `migration::adopt`).
    /// Refused with every problem named, changing nothing, when it cannot be adopted.
    pub async fn adopt_smartjoiner(&self, opts: &AdoptOptions) -> Result<AdoptionPlan, StoreError> {
        let (accounts, targets, workable) = statuses();
        let options = Options {
            group_column: opts.group_column.clone(),
            session_column: opts.session_column.clone(),
            account_statuses: &accounts,
            target_statuses: &targets,
            workable_statuses: &workable,
            normalise: &normalise,
        };
        let plan = adopt::adopt(self.connection(), &options).await.map_err(store_error)?;
        // The adoption builds the schema of the migrations it marks applied; the later ones
        // (the audit log, ...) are applied on top, as `migrate up` would.
        self.migrate().await?;
        Ok(plan)
    }
}
