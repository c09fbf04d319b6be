//! `smart-joiner targets`: import, list, retry, release.

use std::path::Path;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Done, cli_actor, done};
use crate::domain::TargetStatus;
use crate::ops::output::{Cell, Report, Style, Table, rfc3339, target_color};
use crate::ops::targets_file::{TargetsFile, read_targets_file, shown_line};
use crate::store::{Store, Target};

/// Gives an `error` target another chance (audited as `cli:<user>`).
pub async fn retry(store: &Store, id: i64) -> anyhow::Result<Done> {
    let result = store.retry_target(id, &cli_actor(), store.now()).await?;
    done(result, format!("target {id} is new again"))
}

/// Releases a `joining` target pinned to an account (audited as `cli:<user>`), once the
/// operator checked the account is not a member of the group ([`RELEASE_NEEDS_YES`]).
pub async fn release(store: &Store, id: i64) -> anyhow::Result<Done> {
    let result = store.release_pin(id, &cli_actor(), store.now()).await?;
    done(result, format!("target {id} released: new and unclaimed"))
}

/// The refusal of `targets release` without `--yes`.
pub const RELEASE_NEEDS_YES: &str = "check that the pinned account is not a member of the group \
     (otherwise a second account would join it), then pass --yes";

/// A line of a targets file that is not a link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejected {
    pub line: usize,
    /// The line as it may be printed ([`shown_line`]).
    pub text: String,
    pub reason: String,
}

/// `targets import`: what a file added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetsImported {
    pub niche: String,
    pub accepted: u64,
    pub duplicates_in_database: u64,
    pub duplicates_in_file: u64,
    pub rejected: Vec<Rejected>,
}

impl Report for TargetsImported {
    fn render(&self, _style: Style) -> String {
        format!(
            "accepted {}, duplicates {} ({} already stored, {} repeated in the file), rejected {}\n",
            self.accepted,
            self.duplicates_in_database + self.duplicates_in_file,
            self.duplicates_in_database,
            self.duplicates_in_file,
            self.rejected.len()
        )
    }
}

/// A targets file read and checked, before anything is stored.
pub struct ReadFile {
    file: TargetsFile,
    /// `path:line: rejected "text": why`, one per invalid line, for the operator.
    pub rejected_lines: Vec<String>,
}

/// Reads `path` for `targets import`; `Err` when it cannot be read or holds no link at all.
pub fn read(path: &Path) -> anyhow::Result<ReadFile> {
    let file =
        read_targets_file(path).with_context(|| format!("cannot read {}", path.display()))?;
    if file.links.is_empty() && file.rejected.is_empty() {
        anyhow::bail!(
            "{} holds no link (one link per line, or a CSV whose first column is the link)",
            path.display()
        );
    }
    let rejected_lines = file
        .rejected
        .iter()
        .map(|(line, text, why)| {
            format!("{}:{line}: rejected {}: {why}", path.display(), shown_line(text, why))
        })
        .collect();
    Ok(ReadFile { file, rejected_lines })
}

impl ReadFile {
    /// Whether some line is not a link.
    pub fn has_invalid_lines(&self) -> bool {
        !self.file.rejected.is_empty()
    }

    /// The refusal when invalid lines are not to be skipped.
    pub fn refusal(&self, path: &Path) -> anyhow::Error {
        anyhow::anyhow!(
            "{} invalid line(s) in {}: nothing imported (fix them or pass --skip-invalid)",
            self.file.rejected.len(),
            path.display()
        )
    }
}

/// Stores the valid links of `read` in `niche` (one transaction; links already stored are
/// counted, not changed).
pub async fn import(
    store: &Store,
    read: &ReadFile,
    niche: &str,
) -> anyhow::Result<TargetsImported> {
    let links: Vec<_> = read.file.links.iter().map(|(_, l)| l.clone()).collect();
    let report = store.import_targets(&links, niche).await?;
    let rejected = read
        .file
        .rejected
        .iter()
        .map(|(line, text, why)| Rejected {
            line: *line,
            text: shown_line(text, why),
            reason: why.to_string(),
        })
        .collect();
    Ok(TargetsImported {
        niche: niche.to_owned(),
        accepted: report.inserted,
        duplicates_in_database: report.duplicates,
        duplicates_in_file: read.file.duplicate_lines.len() as u64,
        rejected,
    })
}

/// One target as `targets list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetRow {
    pub id: i64,
    pub link: String,
    pub niche: String,
    pub status: TargetStatus,
    pub assigned_account_id: Option<i64>,
    #[serde(serialize_with = "rfc3339")]
    pub joined_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "rfc3339")]
    pub warmup_ends_at: Option<DateTime<Utc>>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    #[serde(skip)]
    pub title: Option<String>,
}

impl From<Target> for TargetRow {
    fn from(t: Target) -> Self {
        TargetRow {
            id: t.id,
            link: t.link.to_string(),
            niche: t.niche,
            status: t.status,
            assigned_account_id: t.assigned_account_id,
            joined_at: t.joined_at,
            warmup_ends_at: t.warmup_ends_at,
            error_code: t.error_code,
            error_message: t.error_message,
            title: t.title,
        }
    }
}

/// `targets list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct TargetList(pub Vec<TargetRow>);

impl Report for TargetList {
    fn render(&self, style: Style) -> String {
        let mut tab = Table::new(&["id", "link", "niche", "status", "detail"]);
        for t in &self.0 {
            let detail = match (&t.error_code, &t.error_message) {
                (Some(c), Some(m)) => format!("{c}: {m}"),
                (Some(c), None) => c.clone(),
                (None, Some(m)) => m.clone(),
                (None, None) => t.title.clone().unwrap_or_default(),
            };
            tab.row(vec![
                t.id.to_string().into(),
                t.link.clone().into(),
                t.niche.clone().into(),
                Cell::colored(t.status.as_str(), target_color(t.status)),
                detail.into(),
            ]);
        }
        tab.render(style)
    }
}

/// Lists targets, of a niche and a status when given.
pub async fn list(
    store: &Store,
    niche: Option<&str>,
    status: Option<TargetStatus>,
) -> anyhow::Result<TargetList> {
    let targets = store.targets(niche, status).await?;
    Ok(TargetList(targets.into_iter().map(TargetRow::from).collect()))
}
