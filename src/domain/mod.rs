//! Pure policy: link parsing, statuses, the outcome taxonomy, the decision table, the job
//! payloads, what an account's app config says and active hours. Imports no I/O crate, no clock and no RNG.

pub mod decide;
pub mod folder;
pub mod hours;
pub mod job;
pub mod link;
// `string_enum!`, defined in `status`, is used by `outcome`: `status` is declared first.
#[macro_use]
pub mod status;

pub mod outcome;
pub mod profile;

pub use decide::{
    AccountChange, DecideCtx, Decision, Next, Pacing, TargetChange, decide, within_hours,
};
pub use folder::{FolderChat, FolderContents, FolderLink};
pub use hours::{ActiveHours, HoursError};
pub use job::{JoinJobV1, JoinTask};
pub use link::{LinkError, LinkKind, TargetLink};
pub use outcome::{JoinOutcome, OutcomeKind, PeerInfo, RequestKind, classify_rpc_error};
pub use profile::{
    AccountProfile, CheckFinding, FREE_CHANNEL_LIMIT, Freeze, effective_channel_limit,
    freeze_reason, status_after_check,
};
pub use status::{AccountStatus, TargetStatus};
