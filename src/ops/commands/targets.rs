//! `smart-joiner targets`: import (folder links expanded), list, retry, release.

use std::path::Path;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Done, cli_actor, done};
use crate::domain::{FolderLink, JoinOutcome, TargetStatus};
use crate::folders::FolderCheck;
use crate::join::JoinService;
use crate::ops::output::{Cell, Report, Style, Table, rfc3339, shown, target_color};
use crate::ops::targets_file::{Line, TargetsReader, shown_line};
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
    /// The folder links of the file, each expanded by one account ([`expand_folders`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub folders: Vec<FolderImported>,
}

impl TargetsImported {
    /// How many folder links could not be expanded (the command fails after its report).
    pub fn unexpanded(&self) -> usize {
        self.folders.iter().filter(|f| !f.expanded).count()
    }
}

impl Report for TargetsImported {
    fn render(&self, _style: Style) -> String {
        let mut out = format!(
            "accepted {}, duplicates {} ({} already stored, {} repeated in the file), rejected {}\n",
            self.accepted,
            self.duplicates_in_database + self.duplicates_in_file,
            self.duplicates_in_database,
            self.duplicates_in_file,
            self.rejected.len()
        );
        for f in &self.folders {
            let by = f.account.as_deref().map(|a| format!(" (checked by {})", shown(a)));
            out += &format!("folder {}{}: {}\n", f.folder, by.unwrap_or_default(), f.detail);
        }
        out
    }
}

/// A chat of a folder that has no username: listed, never imported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatWithoutUsername {
    pub id: i64,
    pub title: String,
}

/// What one folder link of a targets file gave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FolderImported {
    pub folder: String,
    /// The account that checked the folder, if one could.
    pub account: Option<String>,
    pub accepted: u64,
    pub duplicates_in_database: u64,
    pub without_username: Vec<ChatWithoutUsername>,
    /// One sentence for the operator.
    pub detail: String,
    #[serde(skip)]
    pub expanded: bool,
}

/// Expands each folder link with one account of `pool` (one chatlists.checkChatlistInvite,
/// paced like any request; never the bulk join) and imports its public chats into `niche`.
pub async fn expand_folders(
    service: &JoinService,
    pool: &str,
    folders: &[FolderLink],
    niche: &str,
) -> anyhow::Result<Vec<FolderImported>> {
    let mut out = Vec::new();
    for folder in folders {
        let r = service.import_folder(pool, folder, niche).await?;
        let report = r.report.unwrap_or_default();
        let without_username: Vec<ChatWithoutUsername> = r
            .without_username
            .iter()
            .map(|c| ChatWithoutUsername { id: c.id, title: c.title.clone() })
            .collect();
        let (account, detail, expanded) = match &r.check {
            FolderCheck::Listed { account, contents } => {
                let mut d = format!(
                    "{:?}: {} chats; accepted {}, duplicates {}",
                    contents.title,
                    contents.chats.len(),
                    report.inserted,
                    report.duplicates
                );
                if !without_username.is_empty() {
                    let skipped: Vec<String> = without_username
                        .iter()
                        .map(|c| format!("{:?} ({})", c.title, c.id))
                        .collect();
                    d += &format!(
                        "; without a username, not imported (only the bulk join reaches them): {}",
                        skipped.join(", ")
                    );
                }
                (Some(account.clone()), d, true)
            }
            FolderCheck::Failed { account, outcome } => {
                let answer = match outcome {
                    JoinOutcome::TargetInvalid { code, .. } => code.clone(),
                    other => other.to_string(),
                };
                (Some(account.clone()), format!("not expanded: Telegram answered {answer}"), false)
            }
            FolderCheck::NoAccount { next } => {
                let when = next.map_or("never".to_owned(), |t| t.to_rfc3339());
                let d = format!(
                    "not expanded: no account of pool {pool} may send a request now (next: {when})"
                );
                (None, d, false)
            }
        };
        out.push(FolderImported {
            folder: r.folder.to_string(),
            account,
            accepted: report.inserted,
            duplicates_in_database: report.duplicates,
            without_username,
            detail,
            expanded,
        });
    }
    Ok(out)
}

/// A targets file read and checked, before anything is stored. Only the lines to report are
/// kept (invalid lines and folder links): the links themselves are read again, a piece at a
/// time, by [`import`], so that a file of any length is imported in bounded memory.
pub struct ReadFile {
    path: std::path::PathBuf,
    links: u64,
    repeated_folders: u64,
    rejected: Vec<(usize, String, crate::domain::LinkError)>,
    folders: Vec<(usize, FolderLink)>,
    /// `path:line: rejected "text": why`, one per invalid line, for the operator.
    pub rejected_lines: Vec<String>,
}

/// Links [`import`] reads before it stores them (one piece of the file).
const IMPORT_PIECE: usize = 10_000;

/// Reads `path` for `targets import`; `Err` when it cannot be read or holds no link at all.
pub fn read(path: &Path) -> anyhow::Result<ReadFile> {
    let cannot = || format!("cannot read {}", path.display());
    let mut reader = TargetsReader::open(path).with_context(cannot)?;
    let mut file = ReadFile {
        path: path.to_path_buf(),
        links: 0,
        repeated_folders: 0,
        rejected: Vec::new(),
        folders: Vec::new(),
        rejected_lines: Vec::new(),
    };
    while let Some((line, parsed)) = reader.next_line().with_context(cannot)? {
        match parsed {
            Line::Skipped => {}
            Line::Link(_) => file.links += 1,
            Line::Folder(folder) => file.folders.push((line, folder)),
            Line::RepeatedFolder => file.repeated_folders += 1,
            Line::Rejected(text, why) => file.rejected.push((line, text, why)),
        }
    }
    if file.links == 0 && file.rejected.is_empty() && file.folders.is_empty() {
        anyhow::bail!(
            "{} holds no link (one link per line, or a CSV whose first column is the link)",
            path.display()
        );
    }
    file.rejected_lines = file
        .rejected
        .iter()
        .map(|(line, text, why)| {
            format!("{}:{line}: rejected {}: {why}", path.display(), shown_line(text, why))
        })
        .collect();
    Ok(file)
}

impl ReadFile {
    /// The folder links of the file, to expand with [`expand_folders`].
    pub fn folders(&self) -> Vec<FolderLink> {
        self.folders.iter().map(|(_, f)| f.clone()).collect()
    }

    /// Whether some line is not a link.
    pub fn has_invalid_lines(&self) -> bool {
        !self.rejected.is_empty()
    }

    /// The refusal when invalid lines are not to be skipped.
    pub fn refusal(&self, path: &Path) -> anyhow::Error {
        anyhow::anyhow!(
            "{} invalid line(s) in {}: nothing imported (fix them or pass --skip-invalid)",
            self.rejected.len(),
            path.display()
        )
    }
}

/// Stores the valid links of `read` in `niche`, reading the file again a piece at a time:
/// one transaction (all or nothing), with its audit row (`import` by `cli:<user>`). Links
/// already stored are counted, not changed, so importing a file again adds nothing.
pub async fn import(
    store: &Store,
    read: &ReadFile,
    niche: &str,
) -> anyhow::Result<TargetsImported> {
    let path = &read.path;
    let cannot = || format!("cannot read {}", path.display());
    let mut reader = TargetsReader::open(path).with_context(cannot)?;
    let mut import = store.begin_import(niche).await?;
    let mut piece = Vec::with_capacity(IMPORT_PIECE);
    let (mut links, mut rejected) = (0u64, 0usize);
    while let Some((_, parsed)) = reader.next_line().with_context(cannot)? {
        match parsed {
            Line::Link(link) => {
                links += 1;
                piece.push(link);
                if piece.len() == IMPORT_PIECE {
                    import.add(&piece).await?;
                    piece.clear();
                }
            }
            Line::Rejected(..) => rejected += 1,
            Line::Skipped | Line::Folder(_) | Line::RepeatedFolder => {}
        }
    }
    import.add(&piece).await?;
    if links != read.links || rejected != read.rejected.len() {
        // Dropping the import rolls it back.
        anyhow::bail!("{} changed while it was imported: nothing imported", path.display());
    }
    let report = import.commit(&cli_actor()).await?;
    let rejected = read
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
        duplicates_in_database: report.already_stored(),
        duplicates_in_file: report.repeated + read.repeated_folders,
        rejected,
        folders: Vec::new(),
    })
}

/// How `targets import` expands folder links: one account of `pool`, taken under the lease
/// mode's locks, through the Telegram the flags choose.
pub struct FolderArgs {
    pub pool: crate::config::PoolArg,
    pub leases: crate::ops::check::LeaseMode,
    pub redis_prefix: crate::config::RedisPrefixArg,
    pub telegram: crate::modes::wiring::TelegramArgs,
}

/// `targets import`: [`import`], then the file's folder links expanded by one account each.
/// A folder that could not be expanded is in the report ([`TargetsImported::unexpanded`]).
pub async fn import_with_folders(
    store: &Store,
    settings: &crate::config::Settings,
    read: &ReadFile,
    niche: &str,
    folders: FolderArgs,
) -> anyhow::Result<TargetsImported> {
    use crate::modes::wiring;
    let mut report = import(store, read, niche).await?;
    let links = read.folders();
    if !links.is_empty() {
        let accounts = crate::accounts_config::AccountsConfig::load(&settings.accounts_config)?;
        let tg = wiring::telegram(&folders.telegram, settings)?;
        let locks =
            crate::ops::check::check_locks(folders.leases, settings, &folders.redis_prefix.value)
                .await?;
        let service = wiring::join_service(
            settings,
            store.clone(),
            locks.shared(),
            tg,
            accounts,
            cli_actor(),
        );
        report.folders = expand_folders(&service, &folders.pool.name, &links, niche).await?;
    }
    Ok(report)
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
