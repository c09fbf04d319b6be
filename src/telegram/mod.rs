//! The Telegram edge: a small trait the join procedure talks to, its grammers adapter, a
//! scripted fake for tests, and the Telethon string-session importer.
//!
//! Only this module imports grammers.

pub mod fake;
pub mod grammers;
pub mod session;
pub mod session_file;
pub mod session_import;

use async_trait::async_trait;

use crate::accounts_config::AccountConfig;
use crate::domain::{AccountProfile, FolderContents, JoinOutcome, TargetLink};

/// Opens an account's one Telegram connection. Called only while the account is leased.
#[async_trait]
pub trait Telegram: Send + Sync + 'static {
    async fn connect(
        &self,
        account: &AccountConfig,
    ) -> Result<Box<dyn TelegramSession>, ConnectError>;
}

/// One live connection of one account.
#[async_trait]
pub trait TelegramSession: Send {
    /// Resolves (when needed) and joins the target; every answer, including transport trouble
    /// and timeouts, comes back as an outcome.
    async fn join(&mut self, link: &TargetLink) -> JoinOutcome;

    /// What Telegram says about the account itself: the Premium flag of its own user (read by
    /// the authorisation check at connect) and help.getAppConfig (one request: its channel
    /// limit, its freeze). `Ok(None)`: this connection cannot tell. An account-wide answer (a
    /// FloodWait, a revoked session) comes back as the outcome a join would have had, so the
    /// caller records it and sends nothing more.
    async fn profile(&mut self) -> Result<Option<AccountProfile>, JoinOutcome> {
        Ok(None)
    }

    /// chatlists.checkChatlistInvite: the chats a folder link (its slug) lists, one request.
    /// Never joins anything (the bulk join, chatlists.joinChatlistInvite, is never sent). An
    /// error comes back as the outcome a join would have had (INVITE_SLUG_EXPIRED is a dead
    /// link, a FloodWait is the account's).
    async fn check_folder(&mut self, _slug: &str) -> Result<FolderContents, JoinOutcome> {
        Err(JoinOutcome::ConnectFailed { reason: "this connection cannot read folders".into() })
    }

    /// Closes the connection. Returns only when nothing of it is left running, so the caller
    /// may release the account's lease right after.
    async fn disconnect(self: Box<Self>);
}

/// Why a connection could not be opened. Nothing was sent to Telegram on the account's behalf
/// except, possibly, the authorisation check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// The session is not (or no longer) authorised: Telegram's code, or why we know.
    #[error("session not authorised: {0}")]
    Unauthorized(String),
    /// The account is banned.
    #[error("account banned: {0}")]
    Banned(String),
    /// Anything else: proxy refused, DC unreachable, timeout, bad session data.
    #[error("{0}")]
    Failed(String),
}

impl ConnectError {
    /// The outcome the policy sees for a connection that could not be opened.
    pub fn into_outcome(self) -> JoinOutcome {
        match self {
            ConnectError::Unauthorized(code) => JoinOutcome::Unauthorized { code },
            ConnectError::Banned(code) => JoinOutcome::AccountBanned { code },
            ConnectError::Failed(reason) => JoinOutcome::ConnectFailed { reason },
        }
    }
}
