//! The integration tests of the smart-joiner crate: one binary, real Postgres and SQLite.
//!
//! Postgres must be running (see `support::pg_store` for how to point at it); every test gets
//! its own database.

mod actions;
mod adopt;
mod bound_counts;
mod chaos;
mod cluster;
mod console;
mod demo;
mod faults;
mod idle;
mod import;
mod join;
mod lane;
mod monitoring;
mod operator;
mod ops;
mod pipeline;
mod policies;
mod sessions;
mod store;
mod support;
mod telegram;
mod tls;
mod wire;

// The join harness lives with the other test helpers; `crate::harness` stays its short path.
use support::harness;
