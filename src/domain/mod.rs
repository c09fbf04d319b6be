//! Pure policy: link parsing, statuses, the outcome taxonomy, the decision table and the job
//! payloads. Imports no I/O crate, no clock and no RNG.

pub mod decide;
pub mod job;
pub mod link;
pub mod outcome;
pub mod status;

pub use decide::{AccountChange, DecideCtx, Decision, Next, Pacing, TargetChange, decide};
pub use job::{JoinJobV1, JoinTask};
pub use link::{LinkError, LinkKind, TargetLink};
pub use outcome::{JoinOutcome, PeerInfo, RequestKind, classify_rpc_error};
pub use status::{AccountStatus, TargetStatus};
