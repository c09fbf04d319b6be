//! Pure policy: link parsing, statuses, the outcome taxonomy, the decision table and the job
//! payloads. Imports no I/O crate, no clock and no RNG.

pub mod decide;
pub mod job;
pub mod link;
// `string_enum!`, defined in `status`, is used by `outcome`: `status` is declared first.
#[macro_use]
pub mod status;

pub mod outcome;

pub use decide::{AccountChange, DecideCtx, Decision, Next, Pacing, TargetChange, decide};
pub use job::{JoinJobV1, JoinTask};
pub use link::{LinkError, LinkKind, TargetLink};
pub use outcome::{JoinOutcome, OutcomeKind, PeerInfo, RequestKind, classify_rpc_error};
pub use status::{AccountStatus, TargetStatus};
