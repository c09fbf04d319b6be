//! What tgsim observed: every request, the rules clients broke, and counters per method.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::Serialize;

/// Identifies one TCP connection (numbered from 1 in accept order).
pub type ConnId = u64;

/// One request as the data centre saw it.
#[derive(Clone, Debug, Serialize)]
pub struct RequestRecord {
    pub conn: ConnId,
    /// session_name of the account, when the auth key is known to the scenario.
    pub account: Option<String>,
    pub user_id: Option<i64>,
    /// TL method name (`channels.joinChannel`), the innermost query of any wrappers, or a
    /// bracketed transport event (`(unknown auth key)`, `(key exchange)`).
    pub method: String,
    /// Target as a key (`@name`, `+hash`, channel id) for resolve/join/check calls.
    pub target: Option<String>,
    /// Time since the server started.
    pub at: Duration,
    pub wall_time: SystemTime,
    pub outcome: Outcome,
}

/// How tgsim answered a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// An `rpc_result` with this TL constructor.
    Result {
        constructor: String,
    },
    RpcError {
        code: i32,
        message: String,
    },
    /// The connection was closed instead of answering.
    Dropped {
        join_applied: bool,
    },
    /// No answer, on purpose.
    Silence,
    /// A transport error (negative length) followed by a close.
    TransportError {
        status: i32,
    },
}

/// A rule a client broke.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Violation {
    /// A request inside a FloodWait window the data centre gave the account.
    RequestDuringFloodWait {
        account: String,
        conn: ConnId,
        method: String,
        at: Duration,
        remaining: Duration,
    },
    /// A second live connection with the account's key (answered 406 AUTH_KEY_DUPLICATED).
    DuplicateConnection { account: String, live_conn: ConnId, new_conn: ConnId, at: Duration },
    /// A join attempt sooner than the configured pause after the account's previous join.
    JoinTooSoon {
        account: String,
        conn: ConnId,
        method: String,
        at: Duration,
        since_previous: Duration,
        min_pause: Duration,
    },
    /// A join attempt outside the account's active hours (`active_hours_utc`); `utc` is the
    /// time of day it arrived, `HH:MM:SS`.
    JoinOutsideActiveHours {
        account: String,
        conn: ConnId,
        method: String,
        at: Duration,
        utc: String,
    },
}

impl Violation {
    pub fn account(&self) -> &str {
        match self {
            Violation::RequestDuringFloodWait { account, .. }
            | Violation::DuplicateConnection { account, .. }
            | Violation::JoinTooSoon { account, .. }
            | Violation::JoinOutsideActiveHours { account, .. } => account,
        }
    }
}

/// The append-only log behind [`crate::Server::requests`] and friends.
#[derive(Default, Debug)]
pub(crate) struct Recorder {
    pub requests: Vec<RequestRecord>,
    pub violations: Vec<Violation>,
    pub counters: BTreeMap<String, u64>,
}

impl Recorder {
    pub fn request(&mut self, record: RequestRecord) {
        tracing::debug!(
            conn = record.conn,
            account = record.account.as_deref().unwrap_or("-"),
            method = %record.method,
            target = record.target.as_deref().unwrap_or("-"),
            outcome = ?record.outcome,
            "request"
        );
        *self.counters.entry(record.method.clone()).or_default() += 1;
        self.requests.push(record);
    }

    pub fn violation(&mut self, violation: Violation) {
        tracing::warn!(account = violation.account(), ?violation, "violation");
        self.violations.push(violation);
    }
}
