//! smart-joiner: a pool of Telegram accounts joins target groups, inside Telegram's limits.
//!
//! See ARCHITECTURE.md for the map. `domain` is pure policy; everything else is an adapter.

pub mod account_check;
pub mod accounts_config;
pub mod accounts_import;
pub mod admin;
pub mod app;
pub mod config;
pub mod console;
pub mod demo;
pub mod domain;
pub mod exporter;
pub mod folders;
pub mod fuzzing;
pub mod health;
pub mod invariants;
pub mod join;
pub mod lease;
pub mod metrics;
pub mod producer;
pub mod queue;
pub mod redact;
pub mod runner;
pub mod status;
pub mod store;
pub mod telegram;
pub mod telemetry;
pub mod worker;
