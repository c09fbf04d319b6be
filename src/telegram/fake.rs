//! A scripted, in-process stand-in for Telegram, for tests and benchmarks.
//!
//! A [`Script`] says what each target (by normalised link) or account answers, in order, one
//! answer per attempt, the last one repeating: `["flood_wait:30", "joined"]` is "FloodWait 30,
//! then joined". Like Telegram, the fake remembers who is a member of what (a second join by a
//! member answers "already a participant") and enforces the FloodWaits it gave.
//!
//! Every connect, disconnect and join is recorded as an [`Event`], in memory and optionally as
//! JSON lines in a file shared by several processes; [`check_events`] reads such a record back
//! and reports the invariant violations it shows (two live connections of one account, a request
//! inside a FloodWait, joins closer than the minimum pause).

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{ConnectError, Telegram, TelegramSession};
use crate::accounts_config::AccountConfig;
use crate::domain::{
    AccountProfile, FREE_CHANNEL_LIMIT, FolderChat, FolderContents, Freeze, JoinOutcome, PeerInfo,
    RequestKind, TargetLink,
};

/// One scripted answer to a join.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Answer {
    Joined,
    AlreadyParticipant,
    JoinRequest,
    GuardBot,
    FloodWait(u32),
    SlowmodeWait(u32),
    PeerFlood,
    Frozen,
    ChannelsTooMuch,
    SessionRevoked,
    AccountBanned,
    /// A dead link: `invalid:INVITE_HASH_EXPIRED`.
    Invalid(String),
    BannedInChannel,
    /// No answer in time; nothing happened.
    Timeout,
    /// The join happened, but the answer was lost.
    JoinedThenTimeout,
}

impl FromStr for Answer {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, arg) = s.split_once(':').unwrap_or((s, ""));
        let secs =
            || arg.parse::<u32>().map_err(|_| format!("answer {s:?}: expected seconds after ':'"));
        Ok(match name {
            "joined" => Answer::Joined,
            "already_participant" => Answer::AlreadyParticipant,
            "join_request" => Answer::JoinRequest,
            "guard_bot" => Answer::GuardBot,
            "flood_wait" => Answer::FloodWait(secs()?),
            "slowmode_wait" => Answer::SlowmodeWait(secs()?),
            "peer_flood" => Answer::PeerFlood,
            "frozen" => Answer::Frozen,
            "channels_too_much" => Answer::ChannelsTooMuch,
            "session_revoked" => Answer::SessionRevoked,
            "account_banned" => Answer::AccountBanned,
            "invalid" if !arg.is_empty() => Answer::Invalid(arg.to_owned()),
            "banned_in_channel" => Answer::BannedInChannel,
            "timeout" => Answer::Timeout,
            "joined_then_timeout" => Answer::JoinedThenTimeout,
            _ => return Err(format!("unknown scripted answer {s:?}")),
        })
    }
}

impl TryFrom<String> for Answer {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Answer> for String {
    fn from(a: Answer) -> String {
        match a {
            Answer::Joined => "joined".into(),
            Answer::AlreadyParticipant => "already_participant".into(),
            Answer::JoinRequest => "join_request".into(),
            Answer::GuardBot => "guard_bot".into(),
            Answer::FloodWait(s) => format!("flood_wait:{s}"),
            Answer::SlowmodeWait(s) => format!("slowmode_wait:{s}"),
            Answer::PeerFlood => "peer_flood".into(),
            Answer::Frozen => "frozen".into(),
            Answer::ChannelsTooMuch => "channels_too_much".into(),
            Answer::SessionRevoked => "session_revoked".into(),
            Answer::AccountBanned => "account_banned".into(),
            Answer::Invalid(code) => format!("invalid:{code}"),
            Answer::BannedInChannel => "banned_in_channel".into(),
            Answer::Timeout => "timeout".into(),
            Answer::JoinedThenTimeout => "joined_then_timeout".into(),
        }
    }
}

/// What happens when an account connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectAnswer {
    Ok,
    Unauthorized,
    Banned,
    Failed,
}

/// The fake's script. Account answers win over target answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Script {
    /// Answer for targets and accounts without a script.
    #[serde(default = "default_answer")]
    pub default: Answer,
    /// Per normalised link (`@name`, `t.me/+hash`): answers in order, the last repeating.
    #[serde(default)]
    pub targets: HashMap<String, Vec<Answer>>,
    /// Per session name: answers in order, the last repeating.
    #[serde(default)]
    pub accounts: HashMap<String, Vec<Answer>>,
    /// Per session name: what connecting does.
    #[serde(default)]
    pub connect: HashMap<String, ConnectAnswer>,
    /// Per session name: what the account's profile (Premium flag, app config) says; without
    /// an entry, a free account with Telegram's default channel limit.
    #[serde(default)]
    pub profiles: HashMap<String, FakeProfile>,
    /// Per folder slug: its chats, `@name` for a public one, anything else the title of a
    /// chat without a username. An unknown slug is INVITE_SLUG_EXPIRED.
    #[serde(default)]
    pub folders: HashMap<String, Vec<String>>,
    /// Delay before each join answer, in milliseconds.
    #[serde(default)]
    pub latency_ms: u64,
}

/// A scripted account profile.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FakeProfile {
    #[serde(default)]
    pub premium: bool,
    /// None: the app config carries no limit.
    #[serde(default)]
    pub channel_limit: Option<u32>,
    /// Frozen until then.
    #[serde(default)]
    pub frozen_until: Option<DateTime<Utc>>,
}

fn default_answer() -> Answer {
    Answer::Joined
}

impl Default for Script {
    fn default() -> Self {
        Self {
            default: Answer::Joined,
            targets: HashMap::new(),
            accounts: HashMap::new(),
            connect: HashMap::new(),
            profiles: HashMap::new(),
            folders: HashMap::new(),
            latency_ms: 0,
        }
    }
}

impl Script {
    /// Reads a script from a JSON file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read fake script {}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("fake script {}: {e}", path.display()))
    }
}

/// What the fake saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventKind {
    Connect,
    Disconnect,
    /// A join request and the answer given (`Answer` spelling, or `flood_wait:N` when the
    /// account was still inside a FloodWait).
    Join {
        target: String,
        answer: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub at: DateTime<Utc>,
    pub pid: u32,
    /// A number unique to the connection within its process.
    pub conn: u64,
    pub account: String,
    #[serde(flatten)]
    pub kind: EventKind,
}

#[derive(Default)]
struct State {
    cursor_target: HashMap<String, usize>,
    cursor_account: HashMap<String, usize>,
    members: HashMap<String, HashSet<String>>,
    flood_until: HashMap<String, DateTime<Utc>>,
    live: HashMap<String, u32>,
    next_conn: u64,
    events: Vec<Event>,
    log: Option<File>,
}

impl State {
    fn record(&mut self, conn: u64, account: &str, kind: EventKind) {
        let event = Event {
            at: Utc::now(),
            pid: std::process::id(),
            conn,
            account: account.to_owned(),
            kind,
        };
        if let Some(file) = self.log.as_mut() {
            // One short line per write: O_APPEND keeps lines of several processes whole.
            if let Ok(mut line) = serde_json::to_vec(&event) {
                line.push(b'\n');
                let _ = file.write_all(&line);
            }
        }
        self.events.push(event);
    }
}

/// The fake itself. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct ScriptedTelegram {
    script: Arc<Script>,
    state: Arc<Mutex<State>>,
}

impl ScriptedTelegram {
    pub fn new(script: Script) -> Self {
        Self { script: Arc::new(script), state: Arc::default() }
    }

    /// Also appends every event to `path` as a JSON line (several processes may share it).
    pub fn with_log_file(self, path: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        self.lock().log = Some(file);
        Ok(self)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Everything this process's fake saw, in order.
    pub fn events(&self) -> Vec<Event> {
        self.lock().events.clone()
    }

    /// Accounts that are members of `link` (joined or already participant).
    pub fn members(&self, link: &str) -> HashSet<String> {
        self.lock().members.get(link).cloned().unwrap_or_default()
    }

    fn next_answer(&self, state: &mut State, account: &str, link: &str) -> Answer {
        fn pick(seq: &[Answer], cursor: &mut usize) -> Answer {
            let answer = seq[(*cursor).min(seq.len() - 1)].clone();
            *cursor += 1;
            answer
        }
        if let Some(seq) = self.script.accounts.get(account).filter(|s| !s.is_empty()) {
            return pick(seq, state.cursor_account.entry(account.to_owned()).or_default());
        }
        if let Some(seq) = self.script.targets.get(link).filter(|s| !s.is_empty()) {
            return pick(seq, state.cursor_target.entry(link.to_owned()).or_default());
        }
        self.script.default.clone()
    }
}

#[async_trait]
impl Telegram for ScriptedTelegram {
    async fn connect(
        &self,
        account: &AccountConfig,
    ) -> Result<Box<dyn TelegramSession>, ConnectError> {
        let name = account.session_name.clone();
        match self.script.connect.get(&name).copied().unwrap_or(ConnectAnswer::Ok) {
            ConnectAnswer::Ok => {}
            ConnectAnswer::Unauthorized => {
                return Err(ConnectError::Unauthorized("AUTH_KEY_UNREGISTERED".into()));
            }
            ConnectAnswer::Banned => {
                return Err(ConnectError::Banned("USER_DEACTIVATED_BAN".into()));
            }
            ConnectAnswer::Failed => {
                return Err(ConnectError::Failed("scripted connection failure".into()));
            }
        }
        let mut state = self.lock();
        state.next_conn += 1;
        let conn = state.next_conn;
        *state.live.entry(name.clone()).or_default() += 1;
        state.record(conn, &name, EventKind::Connect);
        drop(state);
        Ok(Box::new(FakeSession { fake: self.clone(), account: name, conn }))
    }
}

struct FakeSession {
    fake: ScriptedTelegram,
    account: String,
    conn: u64,
}

#[async_trait]
impl TelegramSession for FakeSession {
    async fn join(&mut self, link: &TargetLink) -> JoinOutcome {
        if self.fake.script.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.fake.script.latency_ms)).await;
        }
        let key = link.to_string();
        let now = Utc::now();
        let mut state = self.fake.lock();
        // Like Telegram: inside a FloodWait every request gets the remaining wait.
        if let Some(until) = state.flood_until.get(&self.account).copied()
            && until > now
        {
            let left = (until - now).num_seconds().max(1) as u32;
            state.record(
                self.conn,
                &self.account,
                EventKind::Join { target: key, answer: format!("flood_wait:{left}") },
            );
            return JoinOutcome::FloodWait { seconds: left };
        }
        let member = state.members.get(&key).is_some_and(|m| m.contains(&self.account));
        let answer = if member {
            Answer::AlreadyParticipant
        } else {
            self.fake.next_answer(&mut state, &self.account, &key)
        };
        let joined_now = matches!(
            answer,
            Answer::Joined | Answer::AlreadyParticipant | Answer::JoinedThenTimeout
        );
        if joined_now {
            state.members.entry(key.clone()).or_default().insert(self.account.clone());
        }
        if let Answer::FloodWait(secs) = answer {
            state
                .flood_until
                .insert(self.account.clone(), now + chrono::Duration::seconds(secs.into()));
        }
        state.record(
            self.conn,
            &self.account,
            EventKind::Join { target: key, answer: answer.clone().into() },
        );
        drop(state);
        let code = |c: &str| c.to_owned();
        match answer {
            Answer::Joined => JoinOutcome::Joined { already: false, peer: PeerInfo::default() },
            Answer::AlreadyParticipant => {
                JoinOutcome::Joined { already: true, peer: PeerInfo::default() }
            }
            Answer::JoinRequest => JoinOutcome::Requested(RequestKind::JoinRequest),
            Answer::GuardBot => JoinOutcome::Requested(RequestKind::GuardBot),
            Answer::FloodWait(seconds) => JoinOutcome::FloodWait { seconds },
            Answer::SlowmodeWait(seconds) => JoinOutcome::SlowmodeWait { seconds },
            Answer::PeerFlood => JoinOutcome::AccountLimited { code: code("PEER_FLOOD") },
            Answer::Frozen => JoinOutcome::Frozen { code: code("FROZEN_METHOD_INVALID") },
            Answer::ChannelsTooMuch => JoinOutcome::ChannelsTooMuch,
            Answer::SessionRevoked => JoinOutcome::Unauthorized { code: code("SESSION_REVOKED") },
            Answer::AccountBanned => {
                JoinOutcome::AccountBanned { code: code("USER_DEACTIVATED_BAN") }
            }
            Answer::Invalid(c) => crate::domain::classify_rpc_error(400, &c, None),
            Answer::BannedInChannel => {
                JoinOutcome::TargetBanned { code: code("USER_BANNED_IN_CHANNEL") }
            }
            Answer::Timeout | Answer::JoinedThenTimeout => {
                JoinOutcome::InDoubt { reason: "timeout".into() }
            }
        }
    }

    async fn profile(&mut self) -> Result<Option<AccountProfile>, JoinOutcome> {
        let state = self.fake.lock();
        if let Some(until) = state.flood_until.get(&self.account).copied()
            && until > Utc::now()
        {
            let left = (until - Utc::now()).num_seconds().max(1) as u32;
            return Err(JoinOutcome::FloodWait { seconds: left });
        }
        drop(state);
        let scripted = self.fake.script.profiles.get(&self.account);
        let profile = match scripted {
            None => AccountProfile {
                premium: false,
                channel_limit: Some(FREE_CHANNEL_LIMIT),
                freeze: None,
            },
            Some(p) => AccountProfile {
                premium: p.premium,
                channel_limit: p.channel_limit,
                freeze: p.frozen_until.map(|until| Freeze {
                    since: None,
                    until: Some(until),
                    appeal_url: None,
                }),
            },
        };
        Ok(Some(profile))
    }

    async fn check_folder(&mut self, slug: &str) -> Result<FolderContents, JoinOutcome> {
        let Some(chats) = self.fake.script.folders.get(slug) else {
            return Err(crate::domain::classify_rpc_error(400, "INVITE_SLUG_EXPIRED", None));
        };
        let chats = chats
            .iter()
            .zip(1..)
            .map(|(chat, id)| match chat.strip_prefix('@') {
                Some(name) => {
                    FolderChat { id, title: name.to_owned(), username: Some(name.into()) }
                }
                None => FolderChat { id, title: chat.clone(), username: None },
            })
            .collect();
        Ok(FolderContents { title: slug.to_owned(), chats })
    }

    async fn disconnect(self: Box<Self>) {
        let mut state = self.fake.lock();
        if let Some(n) = state.live.get_mut(&self.account) {
            *n = n.saturating_sub(1);
        }
        state.record(self.conn, &self.account, EventKind::Disconnect);
    }
}

/// Reads a JSON-lines event log written by one or more fakes.
pub fn read_event_log(path: &Path) -> Result<Vec<Event>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut events = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line)
                .map_err(|e| format!("{} line {}: {e}", path.display(), i + 1))
        })
        .collect::<Result<Vec<Event>, _>>()?;
    events.sort_by_key(|e| e.at);
    Ok(events)
}

/// Invariant violations a record of events shows.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Violations {
    /// Invariant 3: an account connected while another connection of it was live.
    pub double_connections: Vec<String>,
    /// Invariant 2: a join sent while a FloodWait the account received was running.
    pub requests_in_flood_wait: Vec<String>,
    /// Invariant 5: two successful joins of one account closer than the minimum pause.
    pub joins_too_close: Vec<String>,
}

impl Violations {
    pub fn is_empty(&self) -> bool {
        self.double_connections.is_empty()
            && self.requests_in_flood_wait.is_empty()
            && self.joins_too_close.is_empty()
    }

    pub fn total(&self) -> usize {
        self.double_connections.len()
            + self.requests_in_flood_wait.len()
            + self.joins_too_close.len()
    }
}

/// Checks a time-ordered record against invariants 2, 3 and 5. `min_pause` is the shortest
/// allowed gap between two successful joins of one account.
pub fn check_events(events: &[Event], min_pause: Duration) -> Violations {
    let mut v = Violations::default();
    let mut live: HashMap<&str, HashSet<(u32, u64)>> = HashMap::new();
    let mut flood_until: HashMap<&str, DateTime<Utc>> = HashMap::new();
    let mut last_join: HashMap<&str, DateTime<Utc>> = HashMap::new();
    let min_pause = chrono::Duration::from_std(min_pause).unwrap_or(chrono::Duration::MAX);
    for e in events {
        let account = e.account.as_str();
        match &e.kind {
            EventKind::Connect => {
                let conns = live.entry(account).or_default();
                if !conns.is_empty() {
                    v.double_connections.push(format!(
                        "{account} connected at {} while {} other live",
                        e.at,
                        conns.len()
                    ));
                }
                conns.insert((e.pid, e.conn));
            }
            EventKind::Disconnect => {
                live.entry(account).or_default().remove(&(e.pid, e.conn));
            }
            EventKind::Join { target, answer } => {
                if let Some(until) = flood_until.get(account)
                    && e.at < *until
                {
                    v.requests_in_flood_wait.push(format!(
                        "{account} asked for {target} at {} inside a FloodWait until {until}",
                        e.at
                    ));
                }
                if let Ok(Answer::FloodWait(secs)) = answer.parse::<Answer>() {
                    let until = e.at + chrono::Duration::seconds(secs.into());
                    let entry = flood_until.entry(account).or_insert(until);
                    *entry = (*entry).max(until);
                }
                let success = matches!(
                    answer.parse::<Answer>(),
                    Ok(Answer::Joined
                        | Answer::JoinRequest
                        | Answer::GuardBot
                        | Answer::JoinedThenTimeout)
                );
                if success {
                    if let Some(prev) = last_join.get(account)
                        && e.at - *prev < min_pause
                    {
                        v.joins_too_close.push(format!(
                            "{account} joined {target} {} ms after its previous join",
                            (e.at - *prev).num_milliseconds()
                        ));
                    }
                    last_join.insert(account, e.at);
                }
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_round_trip_through_their_spelling() {
        for s in [
            "joined",
            "flood_wait:30",
            "invalid:INVITE_HASH_EXPIRED",
            "joined_then_timeout",
            "guard_bot",
        ] {
            let a: Answer = s.parse().unwrap();
            assert_eq!(String::from(a), s);
        }
        assert!("flood_wait:x".parse::<Answer>().is_err());
        assert!("nope".parse::<Answer>().is_err());
    }

    fn ev(ms: i64, account: &str, conn: u64, kind: EventKind) -> Event {
        let t0 = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap();
        Event {
            at: t0 + chrono::Duration::milliseconds(ms),
            pid: 1,
            conn,
            account: account.into(),
            kind,
        }
    }

    fn join(target: &str, answer: &str) -> EventKind {
        EventKind::Join { target: target.into(), answer: answer.into() }
    }

    #[test]
    fn the_checker_sees_each_kind_of_violation() {
        let events = vec![
            ev(0, "a", 1, EventKind::Connect),
            ev(1, "a", 2, EventKind::Connect),
            ev(2, "a", 1, join("@x1234", "flood_wait:10")),
            ev(3, "a", 1, join("@x1234", "joined")),
            ev(4, "a", 1, join("@y1234", "joined")),
        ];
        let v = check_events(&events, Duration::from_millis(100));
        assert_eq!(v.double_connections.len(), 1);
        assert_eq!(v.requests_in_flood_wait.len(), 2);
        assert_eq!(v.joins_too_close.len(), 1);
    }

    #[test]
    fn a_clean_record_has_no_violations() {
        let events = vec![
            ev(0, "a", 1, EventKind::Connect),
            ev(1, "a", 1, join("@x1234", "flood_wait:1")),
            ev(2, "a", 1, EventKind::Disconnect),
            ev(1500, "a", 2, EventKind::Connect),
            ev(1501, "a", 2, join("@x1234", "joined")),
            ev(1502, "a", 2, EventKind::Disconnect),
            ev(1700, "a", 3, EventKind::Connect),
            ev(1701, "a", 3, join("@y1234", "joined")),
        ];
        assert!(check_events(&events, Duration::from_millis(100)).is_empty());
    }
}
