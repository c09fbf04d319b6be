//! smart-joiner: a pool of Telegram accounts joins target groups, inside Telegram's limits.
//!
//! See ARCHITECTURE.md for the map. `domain` is pure policy; everything else is an adapter.

pub mod accounts_config;
pub mod config;
pub mod domain;
pub mod fuzzing;
pub mod join;
pub mod lease;
pub mod modes;
pub mod ops;
pub mod queue;
pub mod redact;
pub mod store;
pub mod telegram;
pub mod telemetry;
