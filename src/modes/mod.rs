//! The run modes: the distributed worker and producer, the single-machine batch, the demo, and
//! the wiring they share (adapters built from settings and flags).

pub mod batch;
pub mod demo;
pub mod producer;
pub mod wiring;
pub mod worker;
