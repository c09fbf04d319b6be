//! The operator surface: the command line, what the admin commands do and how they print, the
//! console, the worker's health port, the exporter, and the invariant checker.

pub mod account_check;
pub mod accounts_import;
pub mod check;
pub mod cli;
pub mod commands;
pub mod console;
pub mod exporter;
pub mod health;
pub mod invariants;
pub mod output;
pub mod targets_file;
