//! smart-joiner: a pool of Telegram accounts joins target groups, inside Telegram's limits.
//!
//! See ARCHITECTURE.md for the map. `domain` is pure policy; everything else is an adapter.

// The public API is what the binaries, the Python package, the benchmarks and the tests use;
// an item public inside a private module only looks like part of it.
#![warn(unreachable_pub)]

pub mod accounts_config;
pub mod clock;
pub mod config;
pub mod domain;
pub mod folders;
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
