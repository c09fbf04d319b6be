//! Folder links as targets: `targets import` expands each `t.me/addlist/SLUG` with one
//! chatlists.checkChatlistInvite by one eligible account of the pool, taken and paced like a
//! join (its lease and hold, never inside a rest or outside its active hours, rested for the
//! error pause after). Each chat with a username becomes its own target, recorded with its
//! folder. Chats without one are listed, not imported: only the bulk join
//! (chatlists.joinChatlistInvite) could reach them, and it is never used (docs/design.md).

use chrono::{DateTime, Utc};
use tracing::{info, warn};

use crate::domain::{
    DecideCtx, FolderChat, FolderContents, FolderLink, JoinOutcome, TargetLink, decide,
};
use crate::join::{JoinError, JoinService, PICK_CANDIDATES, PICK_SPREAD};
use crate::store::ImportReport;
use crate::telegram::ConnectError;

/// What checking one folder gave.
#[derive(Debug, Clone, PartialEq)]
pub enum FolderCheck {
    /// The folder's chats, as `account` saw them.
    Listed { account: String, contents: FolderContents },
    /// Telegram's answer instead (a dead or empty slug, the account's FloodWait, ...).
    Failed { account: String, outcome: JoinOutcome },
    /// No account of the pool may send a request now: the first moment one may, if any.
    NoAccount { next: Option<DateTime<Utc>> },
}

/// What importing one folder did.
#[derive(Debug, Clone, PartialEq)]
pub struct FolderImport {
    pub folder: FolderLink,
    pub check: FolderCheck,
    /// The public chats' targets: inserted and duplicates.
    pub report: Option<ImportReport>,
    /// Chats without a username: not imported.
    pub without_username: Vec<FolderChat>,
}

impl JoinService {
    /// One chatlists.checkChatlistInvite for `folder` by one eligible account of `pool`.
    pub async fn check_folder(
        &self,
        pool: &str,
        folder: &FolderLink,
    ) -> Result<FolderCheck, JoinError> {
        let d = &*self.deps;
        let now = d.store.earliest_now();
        let hours = self.hours_in_pool(pool).await?;
        let mut excluded = self.unconfigured();
        excluded.extend(hours.iter().filter(|(id, h)| !h.is_open(**id, now)).map(|(id, _)| *id));
        let candidates = d
            .store
            .pick_accounts(pool, now, &excluded, &d.limits, PICK_SPREAD, PICK_CANDIDATES)
            .await?;
        for account in candidates {
            if !self.configured(&account) {
                continue;
            }
            let Some(lease) = d.locks.try_acquire(account.id).await? else { continue };
            let taken =
                d.store.take_hold(account.id, d.store.earliest_now(), self.hold_until()).await;
            let epoch = match taken {
                Ok(Some(epoch)) => epoch,
                Ok(None) => {
                    let _ = d.locks.release(&lease).await;
                    continue;
                }
                Err(e) => {
                    let _ = d.locks.release(&lease).await;
                    return Err(e.into());
                }
            };
            // A join may have rested it between the pick and the hold.
            let fresh = d.store.account(account.id).await;
            let resting = fresh.as_ref().map(|a| {
                a.as_ref()
                    .and_then(|a| a.next_allowed_action_time)
                    .is_some_and(|t| t > d.store.earliest_now())
            });
            let checked = match resting {
                Ok(false) => Some(self.folder_call(&account.session_name, folder).await),
                Ok(true) => None,
                Err(_) => None,
            };
            let done_at = d.store.latest_now();
            let rest = chrono::Duration::from_std(d.pacing.error_pause).unwrap_or_default();
            if let Some(Err(outcome)) = &checked {
                // What Telegram said about the account (a FloodWait) is recorded as a join's.
                let ctx = DecideCtx {
                    pacing: &d.pacing,
                    now: done_at,
                    jitter: 0.0,
                    previous_in_doubt: 0,
                    connect_failures: 0,
                };
                let change = decide(outcome, &ctx).account;
                d.store.record_account_verdict(account.id, &change, done_at).await?;
            }
            let ended = match checked {
                Some(_) => {
                    d.store.end_hold_with_rest(account.id, epoch, done_at, done_at + rest).await
                }
                None => d.store.release_hold(account.id, epoch).await.map(|()| true),
            };
            let _ = d.locks.release(&lease).await;
            if let Err(e) = ended {
                warn!(account = %account.session_name, error = %e, "hold not ended; it expires by itself");
            }
            let name = account.session_name.clone();
            match checked {
                None => continue,
                Some(Ok(contents)) => {
                    return Ok(FolderCheck::Listed { account: name, contents });
                }
                Some(Err(outcome)) => return Ok(FolderCheck::Failed { account: name, outcome }),
            }
        }
        let held_rest = d.pacing.error_pause;
        let not_here = self.unconfigured();
        let times = d.store.eligible_times(pool, now, &not_here, &d.limits, held_rest).await?;
        let next = times
            .into_iter()
            .map(|(id, at)| hours.get(&id).map_or(at, |h| h.next_open(id, at)))
            .min();
        Ok(FolderCheck::NoAccount { next })
    }

    /// Connects `session_name`, checks the folder, disconnects.
    async fn folder_call(
        &self,
        session_name: &str,
        folder: &FolderLink,
    ) -> Result<FolderContents, JoinOutcome> {
        let d = &*self.deps;
        let Some(config) = d.accounts.get(session_name) else {
            let reason = "no valid entry in this process's accounts file".to_owned();
            return Err(ConnectError::Failed(reason).into_outcome());
        };
        let mut session =
            match tokio::time::timeout(d.call_timeout, d.telegram.connect(config)).await {
                Ok(Ok(session)) => session,
                Ok(Err(e)) => return Err(e.into_outcome()),
                Err(_) => {
                    let reason = format!("connect timed out after {:?}", d.call_timeout);
                    return Err(JoinOutcome::ConnectFailed { reason });
                }
            };
        let answer =
            match tokio::time::timeout(d.call_timeout, session.check_folder(folder.slug())).await {
                Ok(answer) => answer,
                Err(_) => Err(JoinOutcome::ConnectFailed {
                    reason: format!("no answer within {:?}", d.call_timeout),
                }),
            };
        if tokio::time::timeout(d.call_timeout, session.disconnect()).await.is_err() {
            warn!(account = session_name, "disconnect timed out; connection torn down");
        }
        answer
    }

    /// Expands `folder` and imports its public chats as targets of `niche`, each recording the
    /// folder.
    pub async fn import_folder(
        &self,
        pool: &str,
        folder: &FolderLink,
        niche: &str,
    ) -> Result<FolderImport, JoinError> {
        let check = self.check_folder(pool, folder).await?;
        let mut result = FolderImport {
            folder: folder.clone(),
            check,
            report: None,
            without_username: Vec::new(),
        };
        let FolderCheck::Listed { account, contents } = &result.check else {
            return Ok(result);
        };
        let mut links = Vec::new();
        for chat in &contents.chats {
            match chat.username.as_deref().map(|u| TargetLink::parse(&format!("@{u}"))) {
                Some(Ok(link)) => links.push(link),
                _ => result.without_username.push(chat.clone()),
            }
        }
        let stored = folder.to_string();
        let report = self.deps.store.import_folder_targets(&links, niche, &stored).await?;
        info!(folder = %stored, account = %account, public = links.len(), without_username = result.without_username.len(), "folder expanded");
        result.report = Some(report);
        Ok(result)
    }
}
