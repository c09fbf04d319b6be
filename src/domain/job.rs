//! The queue's wire format: versioned job payloads.
//!
//! A job only names a target; everything else is read from the database when it runs, so a
//! stale or duplicated job is harmless. New fields must carry `#[serde(default)]`: jobs already
//! sitting in Redis have to decode after an upgrade.

use serde::{Deserialize, Serialize};

/// A join job, as stored in Redis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "version")]
pub enum JoinTask {
    #[serde(rename = "1")]
    V1(JoinJobV1),
}

/// Version 1 of the join job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinJobV1 {
    /// `targets.id`.
    pub target_id: i64,
    /// The account pool that serves this job.
    pub pool: String,
    /// Accounts that must not take this target (they hit a long wait or a ban on it).
    #[serde(default)]
    pub excluded_accounts: Vec<i64>,
    /// Which push this is for the target (0 = first); makes the idempotency key unique per
    /// reschedule while duplicates of one push collapse.
    #[serde(default)]
    pub generation: u32,
    /// The account whose next free moment this job was sent to when no account was free (see
    /// `JoinService::execute`): arriving before that account is free again, the job waits for
    /// it rather than for a new moment. A hint only; any eligible account may take the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_for: Option<i64>,
}

impl JoinTask {
    pub fn new(target_id: i64, pool: impl Into<String>) -> Self {
        JoinTask::V1(JoinJobV1 {
            target_id,
            pool: pool.into(),
            excluded_accounts: Vec::new(),
            generation: 0,
            wait_for: None,
        })
    }

    /// The current version's payload (older versions are upgraded here when there are any).
    pub fn into_current(self) -> JoinJobV1 {
        match self {
            JoinTask::V1(job) => job,
        }
    }
}

impl JoinJobV1 {
    /// The follow-up job for a reschedule, optionally excluding one more account.
    pub fn follow_up(&self, exclude: Option<i64>) -> JoinJobV1 {
        let mut excluded = self.excluded_accounts.clone();
        if let Some(id) = exclude
            && !excluded.contains(&id)
        {
            excluded.push(id);
        }
        JoinJobV1 {
            excluded_accounts: excluded,
            generation: self.generation + 1,
            wait_for: None,
            ..self.clone()
        }
    }

    /// Duplicate pushes of the same (target, generation) collapse into one job.
    pub fn idempotency_key(&self) -> String {
        format!("join:{}:{}", self.target_id, self.generation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payload_round_trips_through_json_with_its_version_tag() {
        let task = JoinTask::V1(JoinJobV1 {
            target_id: 42,
            pool: "default".into(),
            excluded_accounts: vec![3, 7],
            generation: 2,
            wait_for: None,
        });
        let json = serde_json::to_string(&task).unwrap();
        assert_eq!(
            json,
            r#"{"version":"1","target_id":42,"pool":"default","excluded_accounts":[3,7],"generation":2}"#
        );
        assert_eq!(serde_json::from_str::<JoinTask>(&json).unwrap(), task);
        let waiting = JoinTask::V1(JoinJobV1 { wait_for: Some(11), ..task.into_current() });
        let json = serde_json::to_string(&waiting).unwrap();
        assert!(json.ends_with(r#""generation":2,"wait_for":11}"#), "{json}");
        assert_eq!(serde_json::from_str::<JoinTask>(&json).unwrap(), waiting);
    }

    #[test]
    fn a_minimal_v1_payload_still_decodes() {
        let task: JoinTask =
            serde_json::from_str(r#"{"version":"1","target_id":1,"pool":"p"}"#).unwrap();
        assert_eq!(task, JoinTask::new(1, "p"));
    }

    #[test]
    fn an_unknown_version_is_refused() {
        assert!(
            serde_json::from_str::<JoinTask>(r#"{"version":"9","target_id":1,"pool":"p"}"#)
                .is_err()
        );
    }

    #[test]
    fn a_follow_up_excludes_once_and_gets_a_new_key() {
        let job = JoinTask::new(5, "p").into_current();
        let next = job.follow_up(Some(9)).follow_up(Some(9));
        assert_eq!(next.excluded_accounts, vec![9]);
        assert_eq!(next.generation, 2);
        assert_ne!(job.idempotency_key(), next.idempotency_key());
    }
}
