//! What the fake data centre knows and how it behaves: accounts (with their auth keys), groups,
//! scripted answers and the rules whose breaking it reports. Built in Rust or read from JSON.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use serde::{Deserialize, Serialize};

/// A complete scenario. See the crate documentation for the JSON format.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// The data centre id tgsim claims to be (written into the sessions).
    #[serde(default = "default_dc_id")]
    pub dc_id: i32,
    /// api_id written into accounts_config.json.
    #[serde(default = "default_api_id")]
    pub api_id: i32,
    /// api_hash written into accounts_config.json (tgsim never checks it; the default is a
    /// placeholder, not a real application's hash).
    #[serde(default = "default_api_hash")]
    pub api_hash: String,
    #[serde(default)]
    pub rules: Rules,
    /// The limits help.getAppConfig reports.
    #[serde(default)]
    pub app_config: AppConfig,
    #[serde(default)]
    pub accounts: Vec<Account>,
    #[serde(default)]
    pub groups: Vec<Group>,
    /// Shared folders (`t.me/addlist/SLUG`), answered by chatlists.checkChatlistInvite.
    #[serde(default)]
    pub folders: Vec<Folder>,
    #[serde(default)]
    pub scripts: Vec<Script>,
}

/// A shared folder: its slug, title and the ids of its groups.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Folder {
    pub slug: String,
    pub title: String,
    pub groups: Vec<i64>,
}

fn default_dc_id() -> i32 {
    2
}
fn default_api_id() -> i32 {
    12345
}
fn default_api_hash() -> String {
    "0123456789abcdef0123456789abcdef".into()
}
fn default_true() -> bool {
    true
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            dc_id: default_dc_id(),
            api_id: default_api_id(),
            api_hash: default_api_hash(),
            rules: Rules::default(),
            app_config: AppConfig::default(),
            accounts: Vec::new(),
            groups: Vec::new(),
            folders: Vec::new(),
            scripts: Vec::new(),
        }
    }
}

/// Rules whose breaking tgsim records as a [`crate::Violation`].
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    /// Minimum time between a successful join (joined, or a join request / guard bot filed) of
    /// an account and its next join attempt. 0 disables the check.
    #[serde(default)]
    pub min_join_pause_ms: u64,
    /// After a second simultaneous connection with one key, every later request with that key
    /// gets `406 AUTH_KEY_DUPLICATED` too (as Telegram kills the session). When false, only the
    /// duplicate connection is refused.
    #[serde(default = "default_true")]
    pub duplicate_kills_key: bool,
    /// Close a connection that sent nothing for this long, as Telegram closes one whose
    /// client stopped pinging (75 s after grammers' last `ping_delay_disconnect`): a process
    /// frozen with its connection open loses it. 0 (the default) keeps silent connections.
    #[serde(default)]
    pub silent_disconnect_ms: u64,
}

impl Default for Rules {
    fn default() -> Self {
        Self { min_join_pause_ms: 0, duplicate_kills_key: true, silent_disconnect_ms: 0 }
    }
}

/// The limits help.getAppConfig reports (Telegram's values by default). An account's freeze
/// is per account ([`Account::frozen`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    #[serde(default = "default_channels_limit")]
    pub channels_limit_default: u32,
    #[serde(default = "default_channels_limit_premium")]
    pub channels_limit_premium: u32,
    #[serde(default = "default_chatlists_joined_limit")]
    pub chatlists_joined_limit_default: u32,
}

fn default_channels_limit() -> u32 {
    500
}
fn default_channels_limit_premium() -> u32 {
    1000
}
fn default_chatlists_joined_limit() -> u32 {
    2
}

impl Default for AppConfig {
    fn default() -> Self {
        Self {
            channels_limit_default: default_channels_limit(),
            channels_limit_premium: default_channels_limit_premium(),
            chatlists_joined_limit_default: default_chatlists_joined_limit(),
        }
    }
}

/// A frozen account, as help.getAppConfig tells it: since and until when (unix seconds) and
/// where to appeal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Freeze {
    pub since: i64,
    pub until: i64,
    pub appeal_url: String,
}

/// A 256-byte auth key; serialised as standard base64, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthKeyBytes(pub [u8; 256]);

impl std::fmt::Debug for AuthKeyBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthKeyBytes([redacted])")
    }
}

impl AuthKeyBytes {
    /// A fresh random key.
    pub fn random() -> Self {
        let mut key = [0u8; 256];
        rand::fill(&mut key[..]);
        Self(key)
    }
}

impl Serialize for AuthKeyBytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(self.0))
    }
}

impl<'de> Deserialize<'de> for AuthKeyBytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(serde::de::Error::custom)?;
        let key: [u8; 256] = bytes.try_into().map_err(|b: Vec<u8>| {
            serde::de::Error::custom(format!("auth_key must be 256 bytes, got {}", b.len()))
        })?;
        Ok(Self(key))
    }
}

/// An account: a Telegram user whose auth key tgsim was given in advance.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    /// The key into accounts_config.json and the name tgsim reports it under.
    pub session_name: String,
    pub user_id: i64,
    #[serde(default = "default_first_name")]
    pub first_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    pub auth_key: AuthKeyBytes,
    /// False: the key is unknown to the data centre (connections get transport error -404).
    #[serde(default = "default_true")]
    pub registered: bool,
    /// False: the key is known but logged out (every API call gets 401 AUTH_KEY_UNREGISTERED).
    #[serde(default = "default_true")]
    pub authorized: bool,
    /// Telegram Premium: the account's own user carries the `premium` flag, and
    /// help.getAppConfig's `channels_limit_premium` is its channel limit.
    #[serde(default)]
    pub premium: bool,
    /// Frozen: help.getAppConfig carries `freeze_since_date`, `freeze_until_date` and
    /// `freeze_appeal_url` for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frozen: Option<Freeze>,
    /// UTC windows (`HH:MM-HH:MM`; one whose end is not after its start runs past midnight)
    /// in which the account may join; a join outside all of them is recorded as
    /// [`crate::Violation::JoinOutsideActiveHours`]. Empty: any time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub active_hours_utc: Vec<String>,
}

/// Seconds since midnight of `HH:MM`.
fn minute_of_day(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 3600 + m * 60)
}

/// A window `HH:MM-HH:MM` as seconds since midnight.
fn utc_window(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.split_once('-')?;
    Some((minute_of_day(a)?, minute_of_day(b)?))
}

fn default_first_name() -> String {
    "Test".into()
}

impl Account {
    /// A registered, authorised account with a random key.
    pub fn new(session_name: impl Into<String>, user_id: i64) -> Self {
        let session_name = session_name.into();
        Self {
            first_name: session_name.clone(),
            session_name,
            user_id,
            last_name: None,
            username: None,
            phone: None,
            auth_key: AuthKeyBytes::random(),
            registered: true,
            authorized: true,
            premium: false,
            frozen: None,
            active_hours_utc: Vec::new(),
        }
    }

    /// Joins are expected only inside these UTC windows (`"09:00-22:00"`).
    pub fn active_hours_utc(mut self, windows: &[&str]) -> Self {
        self.active_hours_utc = windows.iter().map(|w| (*w).to_owned()).collect();
        self
    }

    /// Whether a join `secs` seconds after midnight UTC is inside the account's windows.
    pub fn in_active_hours(&self, secs: u32) -> bool {
        self.active_hours_utc.is_empty()
            || self
                .active_hours_utc
                .iter()
                .filter_map(|w| utc_window(w))
                .any(|(a, b)| if a < b { a <= secs && secs < b } else { secs >= a || secs < b })
    }

    /// A Telegram Premium account.
    pub fn premium(mut self) -> Self {
        self.premium = true;
        self
    }

    /// A frozen account (dates in unix seconds), as help.getAppConfig reports it.
    pub fn frozen(mut self, since: i64, until: i64, appeal_url: impl Into<String>) -> Self {
        self.frozen = Some(Freeze { since, until, appeal_url: appeal_url.into() });
        self
    }

    pub fn first_name(mut self, name: impl Into<String>) -> Self {
        self.first_name = name.into();
        self
    }

    pub fn auth_key(mut self, key: [u8; 256]) -> Self {
        self.auth_key = AuthKeyBytes(key);
        self
    }

    /// The data centre does not know this key (the session looks valid to the client).
    pub fn unregistered(mut self) -> Self {
        self.registered = false;
        self
    }

    /// The key is known but not logged in.
    pub fn unauthorized(mut self) -> Self {
        self.authorized = false;
        self
    }

    /// The Telethon `StringSession` for this account, pointing at `addr`:
    /// `'1'` + urlsafe base64 (padded) of dc_id (1 byte), IPv4 (4) or IPv6 (16), port (2, big
    /// endian), auth_key (256): 352 base64 characters after the '1' for IPv4, 368 for IPv6.
    pub fn string_session(&self, dc_id: i32, addr: SocketAddr) -> String {
        let mut raw = Vec::with_capacity(1 + 16 + 2 + 256);
        raw.push(dc_id as u8);
        match addr.ip() {
            IpAddr::V4(ip) => raw.extend_from_slice(&ip.octets()),
            IpAddr::V6(ip) => raw.extend_from_slice(&ip.octets()),
        }
        raw.extend_from_slice(&addr.port().to_be_bytes());
        raw.extend_from_slice(&self.auth_key.0);
        format!("1{}", base64::engine::general_purpose::URL_SAFE.encode(raw))
    }
}

/// A channel or supergroup, reachable by username and/or invite hash.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    pub id: i64,
    pub title: String,
    /// Public username, without '@'.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Invite hash (the part after `t.me/+` or `joinchat/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invite_hash: Option<String>,
    /// Base access hash; each account sees its own one derived from it (as on Telegram), and
    /// `channels.joinChannel` with another account's hash gets CHANNEL_INVALID.
    #[serde(default)]
    pub access_hash: i64,
    /// A broadcast channel rather than a supergroup.
    #[serde(default)]
    pub broadcast: bool,
    /// Joining files a join request (INVITE_REQUEST_SENT) instead of joining.
    #[serde(default)]
    pub request_needed: bool,
}

impl Group {
    pub fn new(id: i64, title: impl Into<String>) -> Self {
        Self {
            id,
            title: title.into(),
            username: None,
            invite_hash: None,
            access_hash: id.wrapping_mul(0x9e37_79b9_7f4a_7c15u64 as i64),
            broadcast: false,
            request_needed: false,
        }
    }

    pub fn username(mut self, username: impl Into<String>) -> Self {
        self.username = Some(username.into().trim_start_matches('@').to_owned());
        self
    }

    pub fn invite(mut self, hash: impl Into<String>) -> Self {
        self.invite_hash = Some(hash.into().trim_start_matches('+').to_owned());
        self
    }

    pub fn broadcast(mut self) -> Self {
        self.broadcast = true;
        self
    }

    pub fn request_needed(mut self) -> Self {
        self.request_needed = true;
        self
    }

    /// The access hash `account` sees for this group.
    pub fn access_hash_for(&self, user_id: i64) -> i64 {
        self.access_hash ^ user_id.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// The keys scripts and [`crate::Server::members`] can name this group by.
    pub fn keys(&self) -> Vec<String> {
        let mut keys = vec![self.id.to_string()];
        if let Some(u) = &self.username {
            keys.push(format!("@{}", u.to_lowercase()));
        }
        if let Some(h) = &self.invite_hash {
            keys.push(format!("+{h}"));
        }
        keys
    }
}

/// Normalises a target name: `@name`, `name`, `t.me/name` -> `@name` (lowercase);
/// `+hash`, `t.me/+hash`, `t.me/joinchat/hash` -> `+hash`; a number stays a group id.
pub fn target_key(target: &str) -> String {
    let t = target.trim();
    let t = t.trim_start_matches("https://").trim_start_matches("http://");
    let t = ["t.me/", "telegram.me/", "telegram.dog/"]
        .iter()
        .find_map(|p| t.strip_prefix(p))
        .unwrap_or(t);
    if let Some(h) = t.strip_prefix("joinchat/") {
        return format!("+{h}");
    }
    if let Some(h) = t.strip_prefix('+') {
        return format!("+{h}");
    }
    if t.parse::<i64>().is_ok() {
        return t.to_owned();
    }
    format!("@{}", t.trim_start_matches('@').to_lowercase())
}

/// Which requests a script answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// `channels.joinChannel` and `messages.importChatInvite`.
    #[default]
    Join,
    /// `contacts.resolveUsername`.
    Resolve,
    /// `messages.checkChatInvite`.
    CheckInvite,
    /// Every API request of the account except the connection's `help.getConfig`.
    Any,
}

/// Scripted answers for the requests matching `account`, `target` and `on`: one answer per
/// matching request, in order; the last one repeats. When several scripts match, the most
/// specific wins (account and target, then target, then account), then the first listed.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Script {
    /// session_name of the account; absent: any account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// `@username`, `+invitehash`, a link, or a group id; absent: any target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default)]
    pub on: Trigger,
    pub answers: Vec<Step>,
}

impl Script {
    /// A script for join attempts.
    pub fn join() -> Self {
        Self::on(Trigger::Join)
    }

    pub fn on(trigger: Trigger) -> Self {
        Self { account: None, target: None, on: trigger, answers: Vec::new() }
    }

    pub fn account(mut self, session_name: impl Into<String>) -> Self {
        self.account = Some(session_name.into());
        self
    }

    pub fn target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }

    pub fn then(mut self, step: impl Into<Step>) -> Self {
        self.answers.push(step.into());
        self
    }

    pub fn answers<I: IntoIterator<Item = S>, S: Into<Step>>(mut self, steps: I) -> Self {
        self.answers.extend(steps.into_iter().map(Into::into));
        self
    }
}

/// One scripted answer, optionally delayed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    #[serde(flatten)]
    pub answer: Answer,
    /// Latency before the answer is sent (the effect, e.g. a join, applies at once).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub delay_ms: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl From<Answer> for Step {
    fn from(answer: Answer) -> Self {
        Self { answer, delay_ms: 0 }
    }
}

impl Answer {
    /// This answer after `delay`.
    pub fn after(self, delay: Duration) -> Step {
        Step { answer: self, delay_ms: delay.as_millis() as u64 }
    }
}

/// What the data centre answers. Join-specific answers given to other methods mean `ok`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Answer {
    /// The normal behaviour (a join joins; joining again gives USER_ALREADY_PARTICIPANT).
    Ok,
    /// 400 USER_ALREADY_PARTICIPANT (the account becomes a member).
    AlreadyParticipant,
    /// 400 INVITE_REQUEST_SENT (a join request is filed: pending).
    JoinRequest,
    /// `messages.chatInviteJoinResultWebView`: a guard bot decides later (pending).
    WebView {
        #[serde(default = "default_bot_id")]
        bot_id: i64,
    },
    /// 420 `FLOOD_WAIT_<seconds>`; tgsim enforces the window for the whole account.
    FloodWait { seconds: u32 },
    /// 420 `FLOOD_PREMIUM_WAIT_<seconds>`; enforced like FloodWait.
    FloodPremiumWait { seconds: u32 },
    /// 420 `SLOWMODE_WAIT_<seconds>` (not enforced: it is per chat).
    SlowmodeWait { seconds: u32 },
    /// 400 PEER_FLOOD.
    PeerFlood,
    /// 420 FROZEN_METHOD_INVALID.
    Frozen,
    /// 401 SESSION_REVOKED.
    SessionRevoked,
    /// 401 AUTH_KEY_UNREGISTERED.
    AuthKeyUnregistered,
    /// 401 USER_DEACTIVATED_BAN.
    UserDeactivatedBan,
    /// 400 CHANNEL_PRIVATE.
    ChannelPrivate,
    /// 400 INVITE_HASH_EXPIRED.
    InviteHashExpired,
    /// 400 INVITE_HASH_INVALID.
    InviteHashInvalid,
    /// 400 USERNAME_NOT_OCCUPIED.
    UsernameNotOccupied,
    /// 400 USER_BANNED_IN_CHANNEL.
    UserBannedInChannel,
    /// 400 CHANNELS_TOO_MUCH.
    ChannelsTooMuch,
    /// 500 RPC_CALL_FAIL.
    RpcCallFail,
    /// Any other RPC error.
    Error { code: i32, message: String },
    /// Close the connection instead of answering; with `after_join` the join is applied first,
    /// so the caller cannot know whether it happened.
    Drop {
        #[serde(default)]
        after_join: bool,
    },
    /// Never answer this request (the connection stays open).
    Silence,
}

fn default_bot_id() -> i64 {
    7_000_000_001
}

impl Answer {
    /// The RPC error this answer stands for, if it is a plain error.
    pub fn rpc_error(&self) -> Option<(i32, String)> {
        let (code, name): (i32, &str) = match self {
            Answer::AlreadyParticipant => (400, "USER_ALREADY_PARTICIPANT"),
            Answer::JoinRequest => (400, "INVITE_REQUEST_SENT"),
            Answer::FloodWait { seconds } => return Some((420, format!("FLOOD_WAIT_{seconds}"))),
            Answer::FloodPremiumWait { seconds } => {
                return Some((420, format!("FLOOD_PREMIUM_WAIT_{seconds}")));
            }
            Answer::SlowmodeWait { seconds } => {
                return Some((420, format!("SLOWMODE_WAIT_{seconds}")));
            }
            Answer::PeerFlood => (400, "PEER_FLOOD"),
            Answer::Frozen => (420, "FROZEN_METHOD_INVALID"),
            Answer::SessionRevoked => (401, "SESSION_REVOKED"),
            Answer::AuthKeyUnregistered => (401, "AUTH_KEY_UNREGISTERED"),
            Answer::UserDeactivatedBan => (401, "USER_DEACTIVATED_BAN"),
            Answer::ChannelPrivate => (400, "CHANNEL_PRIVATE"),
            Answer::InviteHashExpired => (400, "INVITE_HASH_EXPIRED"),
            Answer::InviteHashInvalid => (400, "INVITE_HASH_INVALID"),
            Answer::UsernameNotOccupied => (400, "USERNAME_NOT_OCCUPIED"),
            Answer::UserBannedInChannel => (400, "USER_BANNED_IN_CHANNEL"),
            Answer::ChannelsTooMuch => (400, "CHANNELS_TOO_MUCH"),
            Answer::RpcCallFail => (500, "RPC_CALL_FAIL"),
            Answer::Error { code, message } => return Some((*code, message.clone())),
            Answer::Ok | Answer::WebView { .. } | Answer::Drop { .. } | Answer::Silence => {
                return None;
            }
        };
        Some((code, name.to_owned()))
    }
}

/// A scenario that does not hold together; lists every problem.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read scenario: {0}")]
    Io(#[from] std::io::Error),
    #[error("scenario is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("invalid scenario: {}", .0.join("; "))]
    Invalid(Vec<String>),
}

impl Scenario {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn account(mut self, account: Account) -> Self {
        self.accounts.push(account);
        self
    }

    pub fn group(mut self, group: Group) -> Self {
        self.groups.push(group);
        self
    }

    pub fn script(mut self, script: Script) -> Self {
        self.scripts.push(script);
        self
    }

    /// A shared folder of the groups with these ids.
    pub fn folder(mut self, slug: &str, title: &str, groups: &[i64]) -> Self {
        self.folders.push(Folder { slug: slug.into(), title: title.into(), groups: groups.into() });
        self
    }

    pub fn min_join_pause(mut self, pause: Duration) -> Self {
        self.rules.min_join_pause_ms = pause.as_millis() as u64;
        self
    }

    /// Closes connections that sent nothing for `after` ([`Rules::silent_disconnect_ms`]).
    pub fn silent_disconnect(mut self, after: Duration) -> Self {
        self.rules.silent_disconnect_ms = after.as_millis() as u64;
        self
    }

    pub fn dc_id(mut self, dc_id: i32) -> Self {
        self.dc_id = dc_id;
        self
    }

    /// Parses and validates a JSON scenario.
    pub fn from_json(text: &str) -> Result<Self, ScenarioError> {
        let scenario: Scenario = serde_json::from_str(text)?;
        scenario.validate()?;
        Ok(scenario)
    }

    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ScenarioError> {
        Self::from_json(&std::fs::read_to_string(path)?)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a scenario always serialises")
    }

    /// Checks that names, ids and keys are unique and that scripts name known accounts.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        let mut problems = Vec::new();
        if !(1..=255).contains(&self.dc_id) {
            problems.push(format!("dc_id {} does not fit one byte", self.dc_id));
        }
        let mut names = HashSet::new();
        let mut ids = HashSet::new();
        let mut keys = HashSet::new();
        for a in &self.accounts {
            if !names.insert(a.session_name.as_str()) {
                problems.push(format!("duplicate session_name {:?}", a.session_name));
            }
            if !ids.insert(a.user_id) {
                problems.push(format!("duplicate user_id {}", a.user_id));
            }
            if !keys.insert(crate::crypto::AuthKey::new(a.auth_key.0).id_u64()) {
                problems.push(format!("account {:?} reuses an auth key", a.session_name));
            }
            for w in a.active_hours_utc.iter().filter(|w| utc_window(w).is_none()) {
                problems.push(format!(
                    "account {:?}: active hours {w:?} is not HH:MM-HH:MM",
                    a.session_name
                ));
            }
        }
        let mut group_keys = HashSet::new();
        for g in &self.groups {
            for k in g.keys() {
                if !group_keys.insert(k.clone()) {
                    problems.push(format!("two groups answer to {k:?}"));
                }
            }
        }
        for f in &self.folders {
            for id in f.groups.iter().filter(|id| !self.groups.iter().any(|g| g.id == **id)) {
                problems.push(format!("folder {:?} lists unknown group {id}", f.slug));
            }
        }
        for (i, s) in self.scripts.iter().enumerate() {
            if s.answers.is_empty() {
                problems.push(format!("script #{i} has no answers"));
            }
            if let Some(a) = &s.account
                && !names.contains(a.as_str())
            {
                problems.push(format!("script #{i} names unknown account {a:?}"));
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(ScenarioError::Invalid(problems)) }
    }

    /// SmartJoiner's accounts_config.json: one entry per account, each with a Telethon string
    /// session pointing at `addr`. `proxy` is null (loopback needs none).
    pub fn accounts_config_json(&self, addr: SocketAddr) -> serde_json::Value {
        serde_json::Value::Array(
            self.accounts
                .iter()
                .map(|a| {
                    serde_json::json!({
                        "session_name": a.session_name,
                        "api_id": self.api_id,
                        "api_hash": self.api_hash,
                        "string_session": a.string_session(self.dc_id, addr),
                        "proxy": null,
                    })
                })
                .collect(),
        )
    }

    /// A small example: three accounts, four groups, a few scripted faults.
    pub fn sample() -> Self {
        Scenario::new()
            .min_join_pause(Duration::from_secs(1))
            .account(Account::new("alice", 1001).first_name("Alice"))
            .account(Account::new("bob", 1002).first_name("Bob"))
            .account(Account::new("carol", 1003).first_name("Carol"))
            .group(Group::new(5001, "Rust Lovers").username("rustlovers"))
            .group(Group::new(5002, "Private Club").invite("AAAAAEhQx3k1bXxv"))
            .group(Group::new(5003, "Guarded").username("guarded").request_needed())
            .group(Group::new(5004, "News").username("news").broadcast())
            .script(
                Script::join()
                    .target("@rustlovers")
                    .then(Answer::FloodWait { seconds: 30 })
                    .then(Answer::Ok.after(Duration::from_millis(200))),
            )
            .script(
                Script::join()
                    .account("carol")
                    .then(Answer::Drop { after_join: true })
                    .then(Answer::Ok),
            )
            .script(
                Script::join().target("@news").then(Answer::WebView { bot_id: default_bot_id() }),
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_round_trips_through_json() {
        let sample = Scenario::sample();
        let json = sample.to_json();
        let back = Scenario::from_json(&json).unwrap();
        assert_eq!(back.to_json(), json);
        assert_eq!(back.scripts[0].answers, sample.scripts[0].answers);
    }

    #[test]
    fn steps_read_flat_json_with_an_optional_delay() {
        let step: Step =
            serde_json::from_str(r#"{"kind":"flood_wait","seconds":30,"delay_ms":5}"#).unwrap();
        assert_eq!(step.answer, Answer::FloodWait { seconds: 30 });
        assert_eq!(step.delay_ms, 5);
        let step: Step = serde_json::from_str(r#"{"kind":"drop"}"#).unwrap();
        assert_eq!(step.answer, Answer::Drop { after_join: false });
    }

    #[test]
    fn validation_lists_every_problem() {
        let a = Account::new("a", 1);
        let mut b = a.clone();
        b.session_name = "b".into();
        let s = Scenario::new()
            .account(a.clone())
            .account(a)
            .account(b)
            .script(Script::join().account("nobody"));
        let Err(ScenarioError::Invalid(problems)) = s.validate() else {
            panic!("expected an invalid scenario");
        };
        assert_eq!(problems.len(), 7, "{problems:?}");
    }

    #[test]
    fn target_keys_normalise_links() {
        assert_eq!(target_key("@RustLovers"), "@rustlovers");
        assert_eq!(target_key("https://t.me/rustlovers"), "@rustlovers");
        assert_eq!(target_key("t.me/+AbC"), "+AbC");
        assert_eq!(target_key("https://t.me/joinchat/AbC"), "+AbC");
        assert_eq!(target_key("5001"), "5001");
    }
}
