//! tgsim: a loopback Telegram data centre for tests and demos.
//!
//! (Crate documentation is filled in below.)

pub mod crypto;
pub mod record;
pub mod scenario;
pub mod server;
pub mod tl;
pub mod transport;

pub use record::{ConnId, Outcome, RequestRecord, Violation};
pub use scenario::{
    Account, Answer, AuthKeyBytes, Group, Rules, Scenario, ScenarioError, Script, Step, Trigger,
    target_key,
};
pub use server::{Server, StartError};
