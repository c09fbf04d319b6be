//! The admin commands of `smart-joiner` as library functions. Each takes what it works on (the
//! store, the settings, its options) and returns a report type: `Serialize` for `--json`, and
//! [`crate::ops::output::Report`] for its text, both printed through
//! [`ops::output::render`](crate::ops::output::render). Nothing here parses flags or writes to
//! stdout; `src/main.rs` does that (over the tree in `ops::cli`) and only that.
//!
//! Errors are `anyhow` errors: a command's error is only ever printed, one line per cause.

pub mod accounts;
pub mod migrate;
pub mod overview;
pub mod targets;

use serde::Serialize;

use crate::ops::output::{Report, Style};
use crate::store::{ActionResult, Store};

/// Ends a command that used `store`: the store is closed (on SQLite its WAL is checkpointed
/// into the database file, so a copy of that file is a complete backup) whether the command
/// succeeded or not. A failed close is reported unless the command failed first.
pub async fn finish<T>(store: Store, result: anyhow::Result<T>) -> anyhow::Result<T> {
    let closed = store.close().await;
    let value = result?;
    anyhow::Context::context(closed, "cannot close the database cleanly")?;
    Ok(value)
}

/// Who runs an admin command, for the audit log: `cli:<login name>`.
pub fn cli_actor() -> String {
    let user = std::env::var("USER").or_else(|_| std::env::var("LOGNAME"));
    format!("cli:{}", user.ok().filter(|u| !u.is_empty()).as_deref().unwrap_or("unknown"))
}

/// What an audited action (pause, resume, retry, release) did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Done {
    /// One sentence: `paused anna`, `target 7 is new again`.
    pub done: String,
}

impl Report for Done {
    fn render(&self, _style: Style) -> String {
        format!("{}\n", self.done)
    }
}

/// The report of an audited action; a refusal is an error that says why.
fn done(result: ActionResult, done: String) -> anyhow::Result<Done> {
    match result {
        ActionResult::Done => Ok(Done { done }),
        ActionResult::Refused(why) => anyhow::bail!("nothing done: {why}"),
    }
}
