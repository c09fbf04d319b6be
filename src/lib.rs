//! smart-joiner: a pool of Telegram accounts joins target groups, inside Telegram's limits.
//!
//! See ARCHITECTURE.md for the map. `domain` is pure policy; everything else is an adapter.

pub mod domain;
pub mod store;
