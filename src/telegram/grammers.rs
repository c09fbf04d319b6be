//! The grammers 0.11 adapter behind [`Telegram`]: one sender pool per leased account, built from
//! the account's Telethon session, raw TL calls each bounded by the call timeout, and every
//! answer turned into a [`JoinOutcome`] or a [`ConnectError`].
//!
//! # Choices, and why
//!
//! - **Raw calls, not grammers' high-level client.** `join_chat` / `accept_invite_link` answer
//!   `Ok(None)` both for a guard bot and for "chat not found", and resolve peers through the
//!   session cache. We call `contacts.resolveUsername`, `channels.joinChannel`,
//!   `messages.checkChatInvite` and `messages.importChatInvite` ourselves, on the home DC.
//! - **No retries, no sleeps.** grammers' default policy sleeps through short FloodWaits and
//!   re-sends after I/O errors. Here the policy is [`NoRetries`]: every FloodWait reaches
//!   [`crate::domain::decide()`], and a join is never sent twice by the library (a re-sent join
//!   after a lost answer is exactly the in-doubt case the policy pins to this account).
//! - **A timeout on every call.** grammers has none; a server that accepts TCP but never answers
//!   stalls the pool, and `quit()` is then ignored, so [`disconnect`](TelegramSession::disconnect)
//!   aborts the runner task when it does not stop in [`QUIT_GRACE`], and dropping a session
//!   aborts it too.
//! - **The imported key is the only key.** When the server does not know a session's auth key it
//!   answers transport error 404, and grammers silently runs a new key exchange and stores the new
//!   (unauthorised) key. The session storage used here (`KeyGuard`) refuses to store any other
//!   key for the home DC, so the connection with a replaced key is dropped before any request is
//!   sent on it. A 404, a failed key exchange or a refused key are all reported as
//!   [`ConnectError::Unauthorized`] / [`JoinOutcome::Unauthorized`] with code
//!   [`UNKNOWN_KEY_CODE`]; nothing is ever written back to the account's configuration.
//!
//! # Timeouts and transport trouble
//!
//! A timeout, I/O error, dropped request or malformed answer on the join call itself
//! (`channels.joinChannel`, `messages.importChatInvite`) is [`JoinOutcome::InDoubt`]: the join may
//! have happened. The same trouble on the calls before it (`contacts.resolveUsername`,
//! `messages.checkChatInvite`) is in doubt too, although nothing was joined yet: the connection
//! is then in an unknown state (a stalled pool, a half-read answer), and keeping the target with
//! this account is always safe, because a retried join by the same account is idempotent, while
//! moving it on after a misread answer is not. Only when the connection task had already ended
//! before a request was handed to it is the outcome [`JoinOutcome::ConnectFailed`]: that request
//! was certainly not sent.

use std::fmt;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use grammers_mtproto::transport;
use grammers_mtsender::{
    ConnectionParams, InvocationError, NoRetries, SenderPool, SenderPoolHandle,
};
use grammers_session::storages::{MemorySession, MemorySessionError};
use grammers_session::types::{
    DcOption, PeerId, PeerInfo as SessionPeer, UpdateState, UpdatesState,
};
use grammers_session::{BoxFuture, Session, SessionData};
use grammers_tl_types as tl;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::session::{AUTH_KEY_LEN, TelethonSession};
use super::{ConnectError, Telegram, TelegramSession};
use crate::accounts_config::AccountConfig;
use crate::config::Secret;
use crate::domain::{
    AccountProfile, FolderChat, FolderContents, JoinOutcome, LinkKind, PeerInfo, RequestKind,
    TargetLink, classify_rpc_error,
};

/// How long [`TelegramSession::disconnect`] lets the pool stop by itself before aborting it.
pub const QUIT_GRACE: Duration = Duration::from_secs(2);

/// The code reported when the server does not know the session's auth key (transport error 404,
/// followed by grammers' attempt at a new key exchange). Not a Telegram RPC error name: Telegram
/// answers an unknown key below the RPC layer.
pub const UNKNOWN_KEY_CODE: &str = "AUTH_KEY_UNKNOWN";

/// Builds one grammers connection per [`Telegram::connect`].
#[derive(Debug, Clone)]
pub struct GrammersTelegram {
    call_timeout: Duration,
}

impl GrammersTelegram {
    /// `call_timeout` bounds every single Telegram call (the authorisation check, a resolve, a
    /// join).
    pub fn new(call_timeout: Duration) -> Self {
        Self { call_timeout }
    }
}

#[async_trait]
impl Telegram for GrammersTelegram {
    async fn connect(
        &self,
        account: &AccountConfig,
    ) -> Result<Box<dyn TelegramSession>, ConnectError> {
        let session = GrammersSession::open(account, self.call_timeout).await?;
        Ok(Box::new(session))
    }
}

/// The Telegram calls this adapter makes, named as in Telegram's API (for reasons and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    AuthCheck,
    Resolve,
    JoinChannel,
    CheckInvite,
    ImportInvite,
    AppConfig,
    CheckFolder,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::AuthCheck => "users.getUsers(self)",
            Step::Resolve => "contacts.resolveUsername",
            Step::JoinChannel => "channels.joinChannel",
            Step::CheckInvite => "messages.checkChatInvite",
            Step::ImportInvite => "messages.importChatInvite",
            Step::AppConfig => "help.getAppConfig",
            Step::CheckFolder => "chatlists.checkChatlistInvite",
        })
    }
}

/// Why one call did not return an answer.
#[derive(Debug)]
enum CallError {
    /// No answer within the call timeout.
    Timeout(Duration),
    /// grammers reported an error (an RPC error from Telegram, or transport trouble).
    Invocation(InvocationError),
    /// The connection task had ended before the request was handed to it: nothing was sent.
    RunnerEnded(String),
}

/// One live grammers connection of one account.
struct GrammersSession {
    /// session_name, for logs.
    account: String,
    home_dc: i32,
    addr: SocketAddr,
    handle: SenderPoolHandle,
    storage: Arc<KeyGuard>,
    runner: Runner,
    call_timeout: Duration,
    /// Only to scrub it from error messages (grammers quotes the URL in some of them).
    proxy_url: Option<Secret<String>>,
    /// An account-wide answer the authorisation check got (a FloodWait), which every join of
    /// this session returns without sending anything.
    held: Option<JoinOutcome>,
    /// The `premium` flag of the account's own user, from the authorisation check.
    premium: bool,
}

/// What the client tells Telegram about itself in `initConnection`: grammers' own defaults
/// (the real OS, the library's version, the system locale), read once per process. grammers
/// reads them in `ConnectionParams::default()`, which on Linux runs `lsb_release` each time:
/// once per join that was the most expensive part of a join through the loopback DC.
struct Identity {
    device_model: String,
    system_version: String,
    app_version: String,
    system_lang_code: String,
    lang_code: String,
    updates_channel_capacity: std::num::NonZeroUsize,
}

fn identity() -> &'static Identity {
    static IDENTITY: std::sync::OnceLock<Identity> = std::sync::OnceLock::new();
    IDENTITY.get_or_init(|| {
        let d = ConnectionParams::default();
        Identity {
            device_model: d.device_model,
            system_version: d.system_version,
            app_version: d.app_version,
            system_lang_code: d.system_lang_code,
            lang_code: d.lang_code,
            updates_channel_capacity: d.updates_channel_capacity,
        }
    })
}

impl GrammersSession {
    /// Builds the pool from the Telethon session, starts its runner and checks that the server
    /// knows the key and that a user is logged in behind it.
    async fn open(account: &AccountConfig, call_timeout: Duration) -> Result<Self, ConnectError> {
        let storage = Arc::new(KeyGuard::new(&account.session));
        let proxy_url = account.proxy.as_ref().map(|p| p.url());
        let id = identity();
        let params = ConnectionParams {
            device_model: id.device_model.clone(),
            system_version: id.system_version.clone(),
            app_version: id.app_version.clone(),
            system_lang_code: id.system_lang_code.clone(),
            lang_code: id.lang_code.clone(),
            proxy_url: proxy_url.as_ref().map(|url| url.expose().clone()),
            use_ipv6: account.session.addr.is_ipv6(),
            retry_policy: Box::new(NoRetries),
            updates_channel_capacity: id.updates_channel_capacity,
            // `..ConnectionParams::default()` would rebuild the identity on every connect.
            __non_exhaustive: (),
        };
        let SenderPool { runner, handle, updates } =
            SenderPool::with_configuration(Arc::clone(&storage), account.api_id, params);
        // Updates are never read; with the receiver gone the runner stops forwarding them.
        drop(updates);
        let mut session = GrammersSession {
            account: account.session_name.clone(),
            home_dc: account.session.dc_id,
            addr: account.session.addr,
            handle: handle.thin,
            storage,
            runner: Runner::spawn(runner.run()),
            call_timeout,
            proxy_url,
            held: None,
            premium: false,
        };
        info!(
            account = %session.account,
            dc = session.home_dc,
            addr = %session.addr,
            proxy = session.proxy_url.is_some(),
            "connecting to Telegram"
        );
        let me = tl::functions::users::GetUsers { id: vec![tl::enums::InputUser::UserSelf] };
        let checked = match session.call(&me).await {
            Ok(users) => match users.first() {
                Some(tl::enums::User::User(user)) => {
                    session.premium = user.premium;
                    Ok(user.id)
                }
                // No user behind the key: logged out.
                _ => Err(ConnectError::Unauthorized("NO_SELF_USER".to_owned())),
            },
            Err(e) => match held_outcome(&e) {
                Some(outcome) => {
                    warn!(account = %session.account, outcome = %outcome, "account-wide limit at connect: held for the join");
                    session.held = Some(outcome);
                    Ok(0)
                }
                None => Err(session.connect_error(e)),
            },
        };
        let checked = checked.and_then(|user_id| {
            // Belt and braces: the storage refuses a replaced key, so this cannot differ.
            if session.storage.key_kept() {
                Ok(user_id)
            } else {
                Err(ConnectError::Unauthorized(UNKNOWN_KEY_CODE.to_owned()))
            }
        });
        match checked {
            Ok(user_id) => {
                info!(account = %session.account, user_id, "connected and authorised");
                Ok(session)
            }
            Err(e) => {
                warn!(account = %session.account, error = %crate::redact::Chain(&e), "connection refused");
                session.runner.stop(&session.handle).await;
                Err(e)
            }
        }
    }

    /// One call on the home DC, bounded by the call timeout.
    async fn call<R: tl::RemoteCall>(&mut self, request: &R) -> Result<R::Return, CallError> {
        if let Some(reason) = self.runner.ended().await {
            return Err(CallError::RunnerEnded(reason));
        }
        let call = self.handle.invoke_in_dc(self.home_dc, request);
        match tokio::time::timeout(self.call_timeout, call).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => Err(CallError::Invocation(e)),
            Err(_) => Err(CallError::Timeout(self.call_timeout)),
        }
    }

    /// The outcome of a failed call during [`join`](TelegramSession::join).
    fn join_error(&self, step: Step, error: CallError) -> JoinOutcome {
        let outcome = join_outcome(step, error, self.storage.key_replaced());
        self.scrub_outcome(outcome)
    }

    /// The connect error of a failed authorisation check.
    fn connect_error(&self, error: CallError) -> ConnectError {
        let via = match &self.proxy_url {
            Some(_) => Via::Proxy,
            None => Via::Direct(self.home_dc, self.addr),
        };
        match connect_error(error, self.storage.key_replaced(), via) {
            ConnectError::Failed(reason) => ConnectError::Failed(self.scrub(reason)),
            other => other,
        }
    }

    fn scrub_outcome(&self, outcome: JoinOutcome) -> JoinOutcome {
        match outcome {
            JoinOutcome::InDoubt { reason } => JoinOutcome::InDoubt { reason: self.scrub(reason) },
            JoinOutcome::ConnectFailed { reason } => {
                JoinOutcome::ConnectFailed { reason: self.scrub(reason) }
            }
            other => other,
        }
    }

    fn scrub(&self, text: String) -> String {
        scrub_proxy(text, self.proxy_url.as_ref())
    }

    async fn join_username(&mut self, username: &str) -> JoinOutcome {
        // access_hash is per account: every account resolves for itself.
        let resolve = tl::functions::contacts::ResolveUsername {
            username: username.to_owned(),
            referer: None,
        };
        let resolved = match self.call(&resolve).await {
            Ok(tl::enums::contacts::ResolvedPeer::Peer(resolved)) => resolved,
            Err(e) => return self.join_error(Step::Resolve, e),
        };
        let channel = match pick_channel(&resolved) {
            Ok(channel) => channel,
            Err(outcome) => return outcome,
        };
        if channel.member {
            // The resolve already says this account is in the channel (an earlier in-doubt join
            // went through): no need to spend a join.
            return JoinOutcome::Joined { already: true, peer: channel.peer };
        }
        let join = tl::functions::channels::JoinChannel { channel: channel.input };
        match self.call(&join).await {
            Ok(result) => join_result(result, channel.peer),
            Err(e) => self.join_error(Step::JoinChannel, e),
        }
    }

    async fn join_invite(&mut self, hash: &str) -> JoinOutcome {
        let check = tl::functions::messages::CheckChatInvite { hash: hash.to_owned() };
        let known = match self.call(&check).await {
            Ok(tl::enums::ChatInvite::Already(already)) => {
                return JoinOutcome::Joined { already: true, peer: peer_of(&already.chat) };
            }
            // With request_needed, importChatInvite answers INVITE_REQUEST_SENT, which is what
            // files the request: go on.
            Ok(tl::enums::ChatInvite::Invite(invite)) => {
                PeerInfo { id: None, title: Some(invite.title) }
            }
            Ok(tl::enums::ChatInvite::Peek(peek)) => peer_of(&peek.chat),
            Err(e) => return self.join_error(Step::CheckInvite, e),
        };
        let import = tl::functions::messages::ImportChatInvite { hash: hash.to_owned() };
        match self.call(&import).await {
            Ok(result) => join_result(result, known),
            Err(e) => self.join_error(Step::ImportInvite, e),
        }
    }
}

#[async_trait]
impl TelegramSession for GrammersSession {
    async fn join(&mut self, link: &TargetLink) -> JoinOutcome {
        if let Some(held) = &self.held {
            return held.clone();
        }
        let outcome = match link.kind() {
            LinkKind::Username => self.join_username(link.value()).await,
            LinkKind::Invite => self.join_invite(link.value()).await,
        };
        debug!(account = %self.account, target = %link, outcome = %outcome, "join answered");
        outcome
    }

    async fn profile(&mut self) -> Result<Option<AccountProfile>, JoinOutcome> {
        if let Some(held) = &self.held {
            return Err(held.clone());
        }
        match self.call(&tl::functions::help::GetAppConfig { hash: 0 }).await {
            Ok(tl::enums::help::AppConfig::Config(config)) => {
                Ok(Some(AccountProfile::read(self.premium, &json_of(&config.config))))
            }
            // Only answered to a non-zero hash; nothing to read.
            Ok(tl::enums::help::AppConfig::NotModified) => Ok(None),
            Err(e) => match self.join_error(Step::AppConfig, e) {
                // What Telegram said about the account is recorded; nothing more is sent.
                outcome @ (JoinOutcome::FloodWait { .. }
                | JoinOutcome::AccountLimited { .. }
                | JoinOutcome::Frozen { .. }
                | JoinOutcome::Unauthorized { .. }
                | JoinOutcome::AccountBanned { .. }) => Err(outcome),
                // The connection is in an unknown state: nothing more is sent on it, and
                // nothing was joined.
                JoinOutcome::InDoubt { reason } | JoinOutcome::ConnectFailed { reason } => {
                    Err(JoinOutcome::ConnectFailed { reason })
                }
                other => {
                    warn!(account = %self.account, outcome = %other, "app config not read");
                    Ok(None)
                }
            },
        }
    }

    async fn check_folder(&mut self, slug: &str) -> Result<FolderContents, JoinOutcome> {
        if let Some(held) = &self.held {
            return Err(held.clone());
        }
        let check = tl::functions::chatlists::CheckChatlistInvite { slug: slug.to_owned() };
        let (title, chats) = match self.call(&check).await {
            Ok(tl::enums::chatlists::ChatlistInvite::Invite(invite)) => {
                let tl::enums::TextWithEntities::Entities(title) = invite.title;
                (title.text, invite.chats)
            }
            // The account already has the folder: the chats it lists are all there too.
            Ok(tl::enums::chatlists::ChatlistInvite::Already(already)) => {
                (String::new(), already.chats)
            }
            Err(e) => return Err(self.join_error(Step::CheckFolder, e)),
        };
        Ok(FolderContents { title, chats: chats.iter().filter_map(folder_chat).collect() })
    }

    async fn disconnect(mut self: Box<Self>) {
        self.runner.stop(&self.handle).await;
        debug!(account = %self.account, "disconnected");
    }
}

/// A chat a folder lists: its id, title and public username (the first active one).
fn folder_chat(chat: &tl::enums::Chat) -> Option<FolderChat> {
    match chat {
        tl::enums::Chat::Channel(c) => {
            let extra = c.usernames.iter().flatten().find_map(|u| match u {
                tl::enums::Username::Username(u) if u.active => Some(u.username.clone()),
                _ => None,
            });
            Some(FolderChat {
                id: c.id,
                title: c.title.clone(),
                username: c.username.clone().or(extra),
            })
        }
        // Basic groups have no username.
        tl::enums::Chat::Chat(c) => {
            Some(FolderChat { id: c.id, title: c.title.clone(), username: None })
        }
        tl::enums::Chat::Forbidden(c) => {
            Some(FolderChat { id: c.id, title: c.title.clone(), username: None })
        }
        tl::enums::Chat::ChannelForbidden(c) => {
            Some(FolderChat { id: c.id, title: c.title.clone(), username: None })
        }
        _ => None,
    }
}

/// Telegram's JSON (help.getAppConfig) as a `serde_json::Value`.
fn json_of(value: &tl::enums::Jsonvalue) -> serde_json::Value {
    use serde_json::Value;
    use tl::enums::Jsonvalue as J;
    match value {
        J::JsonNull => Value::Null,
        J::JsonBool(b) => Value::Bool(b.value),
        J::JsonNumber(n) => {
            serde_json::Number::from_f64(n.value).map_or(Value::Null, Value::Number)
        }
        J::JsonString(s) => Value::String(s.value.clone()),
        J::JsonArray(a) => Value::Array(a.value.iter().map(json_of).collect()),
        J::JsonObject(o) => Value::Object(
            o.value
                .iter()
                .map(|tl::enums::JsonobjectValue::JsonObjectValue(kv)| {
                    (kv.key.clone(), json_of(&kv.value))
                })
                .collect(),
        ),
    }
}

/// The pool's runner task. Dropping it aborts the task, so a session dropped without
/// `disconnect` (a cancelled join, a lost lease) leaves no connection behind.
struct Runner {
    task: Option<JoinHandle<()>>,
    /// Why the task ended, once it is known to have ended.
    ended: Option<String>,
}

impl Runner {
    fn spawn(run: impl Future<Output = ()> + Send + 'static) -> Self {
        Self { task: Some(tokio::spawn(run)), ended: None }
    }

    /// `Some(reason)` when the task has ended (stopped, panicked or was aborted).
    async fn ended(&mut self) -> Option<String> {
        if let Some(task) = self.task.take_if(|task| task.is_finished()) {
            let reason = match task.await {
                Ok(()) => "the connection task stopped".to_owned(),
                Err(e) if e.is_panic() => {
                    format!("the connection task panicked: {}", panic_message(e.into_panic()))
                }
                Err(_) => "the connection task was cancelled".to_owned(),
            };
            warn!(reason = %reason, "grammers runner ended early");
            self.ended = Some(reason);
        }
        self.ended.clone()
    }

    /// Asks the pool to quit, waits [`QUIT_GRACE`], then aborts it. Returns once the task is
    /// gone (its connections are dropped with it).
    async fn stop(&mut self, handle: &SenderPoolHandle) {
        let Some(mut task) = self.task.take() else { return };
        handle.quit();
        if tokio::time::timeout(QUIT_GRACE, &mut task).await.is_err() {
            // A stalled connection (the server accepted TCP but never answers) keeps the runner
            // inside a connect, where it does not read the quit request.
            warn!(grace = ?QUIT_GRACE, "grammers runner did not quit: aborting it");
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(s) => (*s).to_owned(),
            Err(_) => "(no message)".to_owned(),
        },
    }
}

/// What a username resolved to, when it is a channel or supergroup this account can join.
#[derive(Debug)]
struct ResolvedChannel {
    input: tl::enums::InputChannel,
    peer: PeerInfo,
    /// The account is already a participant (`left` is false).
    member: bool,
}

/// Picks the channel out of a resolve answer; anything else is the outcome to report.
fn pick_channel(
    resolved: &tl::types::contacts::ResolvedPeer,
) -> Result<ResolvedChannel, JoinOutcome> {
    let not_a_group = |what: &str| JoinOutcome::TargetInvalid {
        code: "NOT_A_GROUP".to_owned(),
        message: format!("not a group or channel: the username belongs to {what}"),
    };
    let channel_id = match &resolved.peer {
        tl::enums::Peer::Channel(peer) => peer.channel_id,
        tl::enums::Peer::User(peer) => {
            let bot = resolved.users.iter().any(|u| match u {
                tl::enums::User::User(u) => u.id == peer.user_id && u.bot,
                tl::enums::User::Empty(_) => false,
            });
            return Err(not_a_group(if bot { "a bot" } else { "a user" }));
        }
        tl::enums::Peer::Chat(_) => return Err(not_a_group("a basic group")),
    };
    match resolved.chats.iter().find(|chat| chat.id() == channel_id) {
        Some(tl::enums::Chat::Channel(channel)) => match channel.access_hash {
            Some(access_hash) => Ok(ResolvedChannel {
                input: tl::enums::InputChannel::Channel(tl::types::InputChannel {
                    channel_id,
                    access_hash,
                }),
                peer: PeerInfo { id: Some(channel.id), title: Some(channel.title.clone()) },
                member: !channel.left,
            }),
            None => Err(JoinOutcome::InDoubt {
                reason: format!(
                    "{}: channel {channel_id} came without an access hash",
                    Step::Resolve
                ),
            }),
        },
        Some(tl::enums::Chat::ChannelForbidden(_)) => Err(JoinOutcome::TargetInvalid {
            code: "CHANNEL_FORBIDDEN".to_owned(),
            message: "the channel is private or the account was banned from it".to_owned(),
        }),
        Some(_) => Err(not_a_group("something else (a community?)")),
        None => Err(JoinOutcome::InDoubt {
            reason: format!(
                "{}: the answer names channel {channel_id} but does not describe it",
                Step::Resolve
            ),
        }),
    }
}

/// The outcome of a join call that answered.
fn join_result(result: tl::enums::messages::ChatInviteJoinResult, known: PeerInfo) -> JoinOutcome {
    match result {
        tl::enums::messages::ChatInviteJoinResult::Ok(ok) => {
            let chats = match &ok.updates {
                tl::enums::Updates::Updates(u) => u.chats.as_slice(),
                tl::enums::Updates::Combined(u) => u.chats.as_slice(),
                _ => &[],
            };
            let peer = match known.id {
                Some(id) => chats.iter().find(|c| c.id() == id),
                None => chats
                    .iter()
                    .find(|c| matches!(c, tl::enums::Chat::Channel(_) | tl::enums::Chat::Chat(_))),
            }
            .map(peer_of)
            .unwrap_or(known);
            JoinOutcome::Joined { already: false, peer }
        }
        // A guard bot decides later: pending, not joined.
        tl::enums::messages::ChatInviteJoinResult::WebView(_) => {
            JoinOutcome::Requested(RequestKind::GuardBot)
        }
    }
}

fn peer_of(chat: &tl::enums::Chat) -> PeerInfo {
    use tl::enums::Chat;
    let title = match chat {
        Chat::Empty(_) => None,
        Chat::Chat(c) => Some(&c.title),
        Chat::Forbidden(c) => Some(&c.title),
        Chat::Channel(c) => Some(&c.title),
        Chat::ChannelForbidden(c) => Some(&c.title),
        Chat::Community(c) => Some(&c.title),
        Chat::CommunityForbidden(c) => Some(&c.title),
    };
    PeerInfo { id: Some(chat.id()), title: title.cloned() }
}

/// An answer to the authorisation check that is not about the session but about the account's
/// pace (a FloodWait, PEER_FLOOD, a frozen account). [`ConnectError`] cannot carry it, and the
/// policy must see it (to stop sending during the wait), so the connection is kept and every
/// join reports it without sending anything. The key is known (Telegram answered on it with an
/// RPC error, not a transport 404) and a logged-out key answers 401 before any limit.
fn held_outcome(error: &CallError) -> Option<JoinOutcome> {
    let CallError::Invocation(InvocationError::Rpc(rpc)) = error else { return None };
    match classify_rpc_error(rpc.code, &rpc.name, rpc.value) {
        outcome @ (JoinOutcome::FloodWait { .. }
        | JoinOutcome::AccountLimited { .. }
        | JoinOutcome::Frozen { .. }) => Some(outcome),
        _ => None,
    }
}

/// Whether the server refused the session's key: transport 404, a key exchange (grammers only
/// runs one after a 404, since the session always carries a key), or a new key the storage
/// refused.
fn is_unknown_key(error: &InvocationError) -> bool {
    match error {
        InvocationError::Transport(transport::Error::BadStatus { status: 404 })
        | InvocationError::Authentication(_) => true,
        InvocationError::Session(e) => {
            matches!(e.downcast_ref::<StorageError>(), Some(StorageError::KeyReplaced { .. }))
        }
        _ => false,
    }
}

/// Maps a failed call during a join. `key_replaced`: the storage refused a new key.
fn join_outcome(step: Step, error: CallError, key_replaced: bool) -> JoinOutcome {
    let unknown_key = || JoinOutcome::Unauthorized { code: UNKNOWN_KEY_CODE.to_owned() };
    let in_doubt = |what: String| JoinOutcome::InDoubt { reason: format!("{step}: {what}") };
    let error = match error {
        CallError::Timeout(limit) => return in_doubt(format!("no answer within {limit:?}")),
        CallError::RunnerEnded(reason) => {
            return JoinOutcome::ConnectFailed { reason: format!("{reason}; {step} was not sent") };
        }
        CallError::Invocation(error) => error,
    };
    if key_replaced || is_unknown_key(&error) {
        return unknown_key();
    }
    match error {
        InvocationError::Rpc(rpc) => classify_rpc_error(rpc.code, &rpc.name, rpc.value),
        InvocationError::Io(e) => in_doubt(format!("connection lost: {e}")),
        InvocationError::Transport(e) => in_doubt(format!("transport error: {e}")),
        InvocationError::Deserialize(e) => in_doubt(format!("malformed answer: {e}")),
        InvocationError::Dropped(why) => in_doubt(format!("request dropped: {why}")),
        InvocationError::Session(e) => in_doubt(format!("session storage error: {e}")),
        InvocationError::InvalidDc => in_doubt("the session's home DC is unknown".to_owned()),
        InvocationError::Authentication(e) => in_doubt(format!("key exchange failed: {e}")),
    }
}

/// How the connection was made, to say what could not be reached.
#[derive(Debug, Clone, Copy)]
enum Via {
    Proxy,
    Direct(i32, SocketAddr),
}

/// Maps a failed authorisation check.
fn connect_error(error: CallError, key_replaced: bool, via: Via) -> ConnectError {
    let error = match error {
        CallError::Timeout(limit) => {
            return ConnectError::Failed(match via {
                Via::Proxy => format!("no answer from Telegram through the proxy within {limit:?}"),
                Via::Direct(dc, addr) => {
                    format!("no answer from DC {dc} at {addr} within {limit:?}")
                }
            });
        }
        CallError::RunnerEnded(reason) => return ConnectError::Failed(reason),
        CallError::Invocation(error) => error,
    };
    if key_replaced || is_unknown_key(&error) {
        return ConnectError::Unauthorized(UNKNOWN_KEY_CODE.to_owned());
    }
    match error {
        InvocationError::Rpc(rpc) => match classify_rpc_error(rpc.code, &rpc.name, rpc.value) {
            JoinOutcome::Unauthorized { code } => ConnectError::Unauthorized(code),
            JoinOutcome::AccountBanned { code } => ConnectError::Banned(code),
            other => ConnectError::Failed(format!(
                "{} answered {} {} ({other})",
                Step::AuthCheck,
                rpc.code,
                rpc.name
            )),
        },
        InvocationError::Io(e) => ConnectError::Failed(match via {
            Via::Proxy => format!("could not reach Telegram through the proxy: {e}"),
            Via::Direct(dc, addr) => format!("could not reach DC {dc} at {addr}: {e}"),
        }),
        InvocationError::Transport(e) => ConnectError::Failed(format!("transport error: {e}")),
        InvocationError::Deserialize(e) => ConnectError::Failed(format!("malformed answer: {e}")),
        InvocationError::Dropped(why) => ConnectError::Failed(format!("request dropped: {why}")),
        InvocationError::Session(e) => ConnectError::Failed(format!("session storage error: {e}")),
        InvocationError::InvalidDc => {
            ConnectError::Failed("the session's home DC is unknown".to_owned())
        }
        InvocationError::Authentication(e) => {
            ConnectError::Failed(format!("key exchange failed: {e}"))
        }
    }
}

/// grammers quotes the proxy URL (with its password) in some error messages.
fn scrub_proxy(text: String, proxy_url: Option<&Secret<String>>) -> String {
    match proxy_url {
        Some(url) if !url.expose().is_empty() && text.contains(url.expose().as_str()) => {
            text.replace(url.expose().as_str(), "[proxy]")
        }
        _ => text,
    }
}

/// grammers' session storage for one connection: the imported home DC (address and key) in a
/// [`MemorySession`], which refuses to store any other auth key for that DC.
///
/// grammers stores the key of every connection it opens; after a 404 that is a freshly
/// exchanged, unauthorised key. Refusing it makes grammers drop that connection and fail the
/// request with [`InvocationError::Session`], before anything is sent with the new key.
struct KeyGuard {
    inner: MemorySession,
    home_dc: i32,
    original: [u8; AUTH_KEY_LEN],
    replaced: AtomicBool,
}

#[derive(Debug, thiserror::Error)]
enum StorageError {
    #[error(transparent)]
    Memory(#[from] MemorySessionError),
    #[error(
        "refused to replace the auth key of DC {dc_id}: the server did not know the session's key"
    )]
    KeyReplaced { dc_id: i32 },
}

impl KeyGuard {
    fn new(session: &TelethonSession) -> Self {
        let key = *session.auth_key();
        let mut data = SessionData { home_dc: session.dc_id, ..SessionData::default() };
        // Start from grammers' entry for this DC (if any), so only what the session knows changes.
        let mut option = data.dc_options.remove(&session.dc_id).unwrap_or(DcOption {
            id: session.dc_id,
            ipv4: SocketAddrV4::new([0, 0, 0, 0].into(), 0),
            ipv6: SocketAddrV6::new([0; 16].into(), 0, 0, 0),
            auth_key: None,
        });
        match session.addr {
            SocketAddr::V4(v4) => {
                option.ipv4 = v4;
                option.ipv6 = SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0);
            }
            SocketAddr::V6(v6) => option.ipv6 = v6,
        }
        option.auth_key = Some(key);
        data.dc_options.insert(session.dc_id, option);
        Self {
            inner: MemorySession::from(data),
            home_dc: session.dc_id,
            original: key,
            replaced: AtomicBool::new(false),
        }
    }

    /// grammers tried to store another key for the home DC.
    fn key_replaced(&self) -> bool {
        self.replaced.load(Ordering::SeqCst)
    }

    /// The stored home DC key is still the imported one.
    fn key_kept(&self) -> bool {
        !self.key_replaced()
            && matches!(
                self.inner.dc_option(self.home_dc),
                Ok(Some(DcOption { auth_key: Some(key), .. })) if key == self.original
            )
    }
}

impl Session for KeyGuard {
    type Error = StorageError;

    fn home_dc_id(&self) -> Result<i32, StorageError> {
        Ok(self.inner.home_dc_id()?)
    }

    fn set_home_dc_id(&self, dc_id: i32) -> BoxFuture<'_, Result<(), StorageError>> {
        Box::pin(async move { Ok(self.inner.set_home_dc_id(dc_id).await?) })
    }

    fn dc_option(&self, dc_id: i32) -> Result<Option<DcOption>, StorageError> {
        Ok(self.inner.dc_option(dc_id)?)
    }

    fn set_dc_option(&self, dc_option: &DcOption) -> BoxFuture<'_, Result<(), StorageError>> {
        let mut dc_option = dc_option.clone();
        if dc_option.id == self.home_dc {
            if dc_option.auth_key.is_some_and(|key| key != self.original) {
                self.replaced.store(true, Ordering::SeqCst);
                warn!(
                    dc = dc_option.id,
                    "refused a replaced auth key: the server did not know ours"
                );
                let refused = StorageError::KeyReplaced { dc_id: dc_option.id };
                return Box::pin(std::future::ready(Err(refused)));
            }
            dc_option.auth_key = Some(self.original);
        }
        Box::pin(async move { Ok(self.inner.set_dc_option(&dc_option).await?) })
    }

    fn peer(&self, peer: PeerId) -> BoxFuture<'_, Result<Option<SessionPeer>, StorageError>> {
        Box::pin(async move { Ok(self.inner.peer(peer).await?) })
    }

    fn cache_peer(&self, peer: SessionPeer) -> BoxFuture<'_, Result<(), StorageError>> {
        Box::pin(async move { Ok(self.inner.cache_peer(peer).await?) })
    }

    fn updates_state(&self) -> BoxFuture<'_, Result<UpdatesState, StorageError>> {
        Box::pin(async move { Ok(self.inner.updates_state().await?) })
    }

    fn set_update_state(&self, update: UpdateState) -> BoxFuture<'_, Result<(), StorageError>> {
        Box::pin(async move { Ok(self.inner.set_update_state(update).await?) })
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use grammers_mtsender::RpcError;
    use grammers_tl_types::{Deserializable as _, Serializable as _};

    use super::*;

    /// The identity read once is grammers' own default, and later reads are that same value.
    #[test]
    fn the_client_identity_is_grammers_default_read_once() {
        let d = ConnectionParams::default();
        let id = identity();
        assert_eq!(
            (&id.device_model, &id.system_version, &id.app_version),
            (&d.device_model, &d.system_version, &d.app_version)
        );
        assert_eq!((&id.system_lang_code, &id.lang_code), (&d.system_lang_code, &d.lang_code));
        assert_eq!(id.updates_channel_capacity, d.updates_channel_capacity);
        assert!(std::ptr::eq(id, identity()), "computed once per process");
    }

    /// An RPC error exactly as grammers builds it from Telegram's `rpc_error`, splitting the
    /// number out of the message ("FLOOD_WAIT_31" -> name "FLOOD_WAIT", value 31).
    fn rpc(code: i32, message: &str) -> CallError {
        CallError::Invocation(InvocationError::Rpc(RpcError::from(tl::types::RpcError {
            error_code: code,
            error_message: message.to_owned(),
        })))
    }

    fn on_join(error: CallError) -> JoinOutcome {
        join_outcome(Step::JoinChannel, error, false)
    }

    fn on_connect(error: CallError) -> ConnectError {
        connect_error(error, false, Via::Direct(2, "127.0.0.1:4430".parse().unwrap()))
    }

    fn s(x: &str) -> String {
        x.to_owned()
    }

    #[track_caller]
    fn in_doubt_naming(outcome: JoinOutcome, words: &[&str]) {
        match outcome {
            JoinOutcome::InDoubt { reason } => {
                for word in words {
                    assert!(reason.contains(word), "{reason:?} should mention {word:?}");
                }
            }
            other => panic!("expected in doubt, got {other:?}"),
        }
    }

    #[test]
    fn flood_waits_arrive_with_their_number() {
        assert_eq!(on_join(rpc(420, "FLOOD_WAIT_31")), JoinOutcome::FloodWait { seconds: 31 });
        assert_eq!(
            on_join(rpc(420, "FLOOD_PREMIUM_WAIT_900")),
            JoinOutcome::FloodWait { seconds: 900 }
        );
        assert_eq!(
            on_join(rpc(420, "SLOWMODE_WAIT_10")),
            JoinOutcome::SlowmodeWait { seconds: 10 }
        );
    }

    #[test]
    fn frozen_method_invalid_is_frozen_not_a_flood_wait() {
        assert_eq!(
            on_join(rpc(420, "FROZEN_METHOD_INVALID")),
            JoinOutcome::Frozen { code: s("FROZEN_METHOD_INVALID") }
        );
    }

    #[test]
    fn join_answers_that_are_errors_on_the_wire() {
        assert_eq!(
            join_outcome(Step::ImportInvite, rpc(400, "INVITE_REQUEST_SENT"), false),
            JoinOutcome::Requested(RequestKind::JoinRequest)
        );
        assert_eq!(
            on_join(rpc(400, "USER_ALREADY_PARTICIPANT")),
            JoinOutcome::Joined { already: true, peer: PeerInfo::default() }
        );
        assert_eq!(on_join(rpc(400, "CHANNELS_TOO_MUCH")), JoinOutcome::ChannelsTooMuch);
        assert!(matches!(
            on_join(rpc(400, "CHANNEL_PRIVATE")),
            JoinOutcome::TargetInvalid { code, .. } if code == "CHANNEL_PRIVATE"
        ));
    }

    #[test]
    fn dead_sessions_and_banned_accounts_are_named_during_a_join() {
        for name in ["AUTH_KEY_UNREGISTERED", "SESSION_REVOKED"] {
            assert_eq!(on_join(rpc(401, name)), JoinOutcome::Unauthorized { code: s(name) });
        }
        assert_eq!(
            on_join(rpc(406, "AUTH_KEY_DUPLICATED")),
            JoinOutcome::Unauthorized { code: s("AUTH_KEY_DUPLICATED") }
        );
        assert_eq!(
            on_join(rpc(401, "USER_DEACTIVATED_BAN")),
            JoinOutcome::AccountBanned { code: s("USER_DEACTIVATED_BAN") }
        );
    }

    #[test]
    fn the_authorisation_check_maps_401_to_unauthorized_and_the_ban_to_banned() {
        assert_eq!(
            on_connect(rpc(401, "AUTH_KEY_UNREGISTERED")),
            ConnectError::Unauthorized(s("AUTH_KEY_UNREGISTERED"))
        );
        assert_eq!(
            on_connect(rpc(406, "AUTH_KEY_DUPLICATED")),
            ConnectError::Unauthorized(s("AUTH_KEY_DUPLICATED"))
        );
        assert_eq!(
            on_connect(rpc(401, "USER_DEACTIVATED_BAN")),
            ConnectError::Banned(s("USER_DEACTIVATED_BAN"))
        );
        match on_connect(rpc(400, "SOMETHING_ODD")) {
            ConnectError::Failed(reason) => assert!(reason.contains("SOMETHING_ODD"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn account_wide_limits_at_connect_are_held_for_the_join() {
        assert_eq!(
            held_outcome(&rpc(420, "FLOOD_WAIT_5")),
            Some(JoinOutcome::FloodWait { seconds: 5 })
        );
        assert_eq!(
            held_outcome(&rpc(420, "FROZEN_METHOD_INVALID")),
            Some(JoinOutcome::Frozen { code: s("FROZEN_METHOD_INVALID") })
        );
        assert_eq!(
            held_outcome(&rpc(400, "PEER_FLOOD")),
            Some(JoinOutcome::AccountLimited { code: s("PEER_FLOOD") })
        );
        assert_eq!(held_outcome(&rpc(401, "AUTH_KEY_UNREGISTERED")), None);
        assert_eq!(held_outcome(&CallError::Timeout(Duration::from_secs(1))), None);
    }

    #[test]
    fn server_trouble_on_the_join_is_in_doubt() {
        in_doubt_naming(on_join(rpc(500, "RPC_CALL_FAIL")), &["RPC_CALL_FAIL"]);
        in_doubt_naming(on_join(rpc(500, "INTERNAL_SERVER_ERROR")), &["500"]);
    }

    #[test]
    fn transport_trouble_on_the_join_is_in_doubt_and_names_its_cause() {
        let io = io::Error::new(io::ErrorKind::ConnectionReset, "connection reset by peer");
        in_doubt_naming(
            on_join(CallError::Invocation(InvocationError::Io(io))),
            &["channels.joinChannel", "connection lost", "reset"],
        );
        in_doubt_naming(
            on_join(CallError::Invocation(InvocationError::Dropped("runner gone"))),
            &["dropped", "runner gone"],
        );
        // A malformed answer, as grammers reports it when an answer does not deserialize.
        let malformed = InvocationError::from(tl::deserialize::Error::UnexpectedEof);
        in_doubt_naming(on_join(CallError::Invocation(malformed)), &["malformed answer"]);
        let bad_crc = transport::Error::BadCrc { expected: 1, got: 2 };
        in_doubt_naming(
            on_join(CallError::Invocation(InvocationError::Transport(bad_crc))),
            &["transport error"],
        );
    }

    #[test]
    fn a_timeout_is_in_doubt_on_every_step() {
        for step in [Step::Resolve, Step::CheckInvite, Step::JoinChannel, Step::ImportInvite] {
            let outcome = join_outcome(step, CallError::Timeout(Duration::from_secs(7)), false);
            in_doubt_naming(outcome, &[&step.to_string(), "no answer within 7s"]);
        }
    }

    #[test]
    fn a_runner_that_ended_before_the_request_means_nothing_was_sent() {
        let outcome = on_join(CallError::RunnerEnded(s("the connection task panicked: boom")));
        match outcome {
            JoinOutcome::ConnectFailed { reason } => {
                assert!(reason.contains("panicked: boom"), "{reason}");
                assert!(reason.contains("channels.joinChannel was not sent"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_unknown_key_is_unauthorized_however_it_shows() {
        let unknown = || JoinOutcome::Unauthorized { code: s(UNKNOWN_KEY_CODE) };
        let not_found = || {
            CallError::Invocation(InvocationError::Transport(transport::Error::BadStatus {
                status: 404,
            }))
        };
        let exchange_failed = || {
            CallError::Invocation(InvocationError::Authentication(
                grammers_mtproto::authentication::Error::DhParamsFail,
            ))
        };
        let refused = || {
            CallError::Invocation(InvocationError::Session(Box::new(StorageError::KeyReplaced {
                dc_id: 2,
            })))
        };
        for error in [not_found(), exchange_failed(), refused()] {
            assert_eq!(on_join(error), unknown());
        }
        for error in [not_found(), exchange_failed(), refused()] {
            assert_eq!(on_connect(error), ConnectError::Unauthorized(s(UNKNOWN_KEY_CODE)));
        }
        // Whatever the error, a key the storage had to refuse means the session is dead.
        let io = CallError::Invocation(InvocationError::Io(io::ErrorKind::BrokenPipe.into()));
        assert_eq!(join_outcome(Step::Resolve, io, true), unknown());
    }

    #[test]
    fn connect_failures_say_what_could_not_be_reached() {
        let refused = || {
            CallError::Invocation(InvocationError::Io(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "Connection refused (os error 111)",
            )))
        };
        let direct = on_connect(refused()).to_string();
        assert!(direct.contains("could not reach DC 2 at 127.0.0.1:4430"), "{direct}");
        assert!(direct.contains("refused"), "{direct}");
        let proxied = connect_error(refused(), false, Via::Proxy).to_string();
        assert!(proxied.contains("through the proxy"), "{proxied}");
        let silent = on_connect(CallError::Timeout(Duration::from_secs(3))).to_string();
        assert!(silent.contains("no answer from DC 2") && silent.contains("3s"), "{silent}");
    }

    #[test]
    fn the_proxy_url_is_scrubbed_from_messages() {
        let url = Secret::new(s("socks5://user:hunter2@10.0.0.1:1080"));
        let text = s("proxy host is missing from url: socks5://user:hunter2@10.0.0.1:1080");
        let scrubbed = scrub_proxy(text, Some(&url));
        assert!(!scrubbed.contains("hunter2"), "{scrubbed}");
        assert!(scrubbed.contains("[proxy]"), "{scrubbed}");
    }

    /// A `channel` as Telegram serialises it, with only the fields a resolve needs.
    fn channel(id: i64, access_hash: Option<i64>, title: &str, left: bool) -> tl::enums::Chat {
        let mut flags = 0u32;
        if left {
            flags |= 1 << 2;
        }
        if access_hash.is_some() {
            flags |= 1 << 13;
        }
        let mut bytes = Vec::new();
        bytes.extend(tl::types::Channel::CONSTRUCTOR_ID.to_bytes());
        bytes.extend(flags.to_bytes());
        bytes.extend(0u32.to_bytes()); // flags2
        bytes.extend(id.to_bytes());
        if let Some(hash) = access_hash {
            bytes.extend(hash.to_bytes());
        }
        bytes.extend(title.to_owned().to_bytes());
        bytes.extend(tl::enums::ChatPhoto::Empty.to_bytes());
        bytes.extend(1_700_000_000i32.to_bytes()); // date
        tl::enums::Chat::from_bytes(&bytes).expect("a valid channel")
    }

    use grammers_tl_types::Identifiable as _;

    fn resolved(
        peer: tl::enums::Peer,
        chats: Vec<tl::enums::Chat>,
    ) -> tl::types::contacts::ResolvedPeer {
        tl::types::contacts::ResolvedPeer { peer, chats, users: Vec::new() }
    }

    fn peer_channel(channel_id: i64) -> tl::enums::Peer {
        tl::enums::Peer::Channel(tl::types::PeerChannel { channel_id })
    }

    #[test]
    fn a_resolved_channel_gives_its_input_channel_with_this_accounts_hash() {
        let answer =
            resolved(peer_channel(5001), vec![channel(5001, Some(77), "Rust Lovers", true)]);
        let picked = pick_channel(&answer).unwrap();
        assert!(!picked.member);
        assert_eq!(picked.peer, PeerInfo { id: Some(5001), title: Some(s("Rust Lovers")) });
        match picked.input {
            tl::enums::InputChannel::Channel(c) => {
                assert_eq!((c.channel_id, c.access_hash), (5001, 77));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_channel_the_account_has_not_left_is_already_joined() {
        let answer = resolved(peer_channel(5001), vec![channel(5001, Some(77), "Rust", false)]);
        assert!(pick_channel(&answer).unwrap().member);
    }

    #[test]
    fn a_user_or_bot_username_is_not_a_group() {
        let user = tl::enums::Peer::User(tl::types::PeerUser { user_id: 42 });
        match pick_channel(&resolved(user, Vec::new())) {
            Err(JoinOutcome::TargetInvalid { message, .. }) => {
                assert!(message.contains("not a group or channel"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_resolve_answer_without_the_channel_or_its_hash_is_in_doubt_not_a_panic() {
        let missing = resolved(peer_channel(5001), Vec::new());
        assert!(matches!(pick_channel(&missing), Err(JoinOutcome::InDoubt { .. })));
        let no_hash = resolved(peer_channel(5001), vec![channel(5001, None, "Min", true)]);
        assert!(matches!(pick_channel(&no_hash), Err(JoinOutcome::InDoubt { .. })));
    }

    #[test]
    fn a_joined_answer_names_the_group_from_its_updates() {
        let updates = tl::enums::Updates::Updates(tl::types::Updates {
            updates: Vec::new(),
            users: Vec::new(),
            chats: vec![channel(5002, Some(1), "Private Club", false)],
            date: 0,
            seq: 0,
        });
        let ok = tl::enums::messages::ChatInviteJoinResult::Ok(
            tl::types::messages::ChatInviteJoinResultOk { updates },
        );
        let known = PeerInfo { id: None, title: Some(s("from the invite")) };
        assert_eq!(
            join_result(ok, known),
            JoinOutcome::Joined {
                already: false,
                peer: PeerInfo { id: Some(5002), title: Some(s("Private Club")) }
            }
        );
    }

    #[test]
    fn a_joined_answer_without_chats_keeps_what_the_resolve_said() {
        let ok = tl::enums::messages::ChatInviteJoinResult::Ok(
            tl::types::messages::ChatInviteJoinResultOk { updates: tl::enums::Updates::TooLong },
        );
        let known = PeerInfo { id: Some(5001), title: Some(s("Rust")) };
        assert_eq!(
            join_result(ok, known.clone()),
            JoinOutcome::Joined { already: false, peer: known }
        );
    }

    #[test]
    fn a_web_view_answer_is_a_pending_guard_bot_check() {
        let web_view = tl::enums::messages::ChatInviteJoinResult::WebView(
            tl::types::messages::ChatInviteJoinResultWebView {
                bot_id: 7,
                query_id: 8,
                users: Vec::new(),
            },
        );
        assert_eq!(
            join_result(web_view, PeerInfo::default()),
            JoinOutcome::Requested(RequestKind::GuardBot)
        );
    }

    fn key(seed: u8) -> [u8; AUTH_KEY_LEN] {
        let mut k = [seed; AUTH_KEY_LEN];
        k[0] = 1;
        k
    }

    fn guard() -> KeyGuard {
        KeyGuard::new(&TelethonSession::new(2, "127.0.0.1:4430".parse().unwrap(), key(9)))
    }

    #[test]
    fn the_storage_holds_the_sessions_address_and_key_as_the_home_dc() {
        let guard = guard();
        assert_eq!(guard.home_dc_id().unwrap(), 2);
        let home = guard.dc_option(2).unwrap().unwrap();
        assert_eq!(home.ipv4, "127.0.0.1:4430".parse().unwrap());
        assert_eq!(home.auth_key, Some(key(9)));
        assert!(guard.key_kept());
    }

    #[tokio::test]
    async fn the_storage_refuses_a_replaced_home_key_and_keeps_the_original() {
        let guard = guard();
        let mut option = guard.dc_option(2).unwrap().unwrap();
        option.auth_key = Some(key(3));
        let refused = guard.set_dc_option(&option).await;
        assert!(matches!(refused, Err(StorageError::KeyReplaced { dc_id: 2 })), "{refused:?}");
        assert!(guard.key_replaced());
        assert!(!guard.key_kept());
        assert_eq!(guard.dc_option(2).unwrap().unwrap().auth_key, Some(key(9)));
    }

    #[tokio::test]
    async fn the_storage_accepts_the_same_key_and_other_dcs() {
        let guard = guard();
        let mut home = guard.dc_option(2).unwrap().unwrap();
        home.ipv4 = "127.0.0.1:4431".parse().unwrap();
        guard.set_dc_option(&home).await.unwrap();
        let mut other = guard.dc_option(4).unwrap().unwrap();
        other.auth_key = Some(key(5));
        guard.set_dc_option(&other).await.unwrap();
        assert!(guard.key_kept());
        assert_eq!(guard.dc_option(2).unwrap().unwrap().ipv4.port(), 4431);
    }

    /// A session whose pool runner is replaced by `runner`, to test the task handling alone.
    fn session_with_runner(runner: impl Future<Output = ()> + Send + 'static) -> GrammersSession {
        let storage = Arc::new(guard());
        let params = ConnectionParams { retry_policy: Box::new(NoRetries), ..Default::default() };
        let pool = SenderPool::with_configuration(Arc::clone(&storage), 1, params);
        GrammersSession {
            account: s("test"),
            home_dc: 2,
            addr: "127.0.0.1:4430".parse().unwrap(),
            handle: pool.handle.thin,
            storage,
            runner: Runner::spawn(runner),
            call_timeout: Duration::from_secs(5),
            proxy_url: None,
            held: None,
            premium: false,
        }
    }

    #[tokio::test]
    async fn a_runner_that_panicked_surfaces_as_an_outcome_instead_of_hanging() {
        let mut session = session_with_runner(async { panic!("boom") });
        tokio::time::timeout(Duration::from_secs(5), async {
            while !session.runner.task.as_ref().is_some_and(|t| t.is_finished()) {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
        let link = TargetLink::parse("@rustlovers").unwrap();
        let outcome = tokio::time::timeout(Duration::from_secs(5), session.join(&link)).await;
        match outcome.expect("join must not hang") {
            JoinOutcome::ConnectFailed { reason } => {
                assert!(reason.contains("panicked: boom"), "{reason}");
                assert!(reason.contains("contacts.resolveUsername was not sent"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        Box::new(session).disconnect().await;
    }

    #[tokio::test]
    async fn dropping_a_session_aborts_its_runner() {
        let (alive, gone) = tokio::sync::oneshot::channel::<()>();
        let session = session_with_runner(async move {
            let _alive = alive;
            std::future::pending::<()>().await;
        });
        drop(session);
        let closed = tokio::time::timeout(Duration::from_secs(5), gone).await;
        assert!(matches!(closed, Ok(Err(_))), "the runner task was not aborted");
    }

    #[tokio::test]
    async fn disconnect_aborts_a_runner_that_ignores_quit() {
        let (alive, gone) = tokio::sync::oneshot::channel::<()>();
        let session = session_with_runner(async move {
            let _alive = alive;
            std::future::pending::<()>().await;
        });
        let started = std::time::Instant::now();
        Box::new(session).disconnect().await;
        assert!(started.elapsed() >= QUIT_GRACE);
        assert!(gone.await.is_err(), "the runner task is still running");
    }
}
