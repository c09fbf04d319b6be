//! # tgsim: a loopback Telegram data centre
//!
//! tgsim speaks MTProto 2.0 over the `Full` transport on a local TCP port to clients whose auth
//! keys it was given in advance (it cannot run a key exchange: Telegram's RSA keys are compiled
//! into the clients). It answers the calls SmartJoiner makes (resolve, join, import and check
//! invites, `get_me`, `is_authorized`) and those other MTProto clients make right after they
//! connect (see *Start-up calls* below), plays scripted faults, records every request and
//! reports the rules clients break. It runs as tokio tasks inside a test, or as the `tgsim`
//! binary for the demo and fault-injection runs.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use tgsim::{Account, Answer, Group, Scenario, Script, Server};
//!
//! let scenario = Scenario::new()
//!     .min_join_pause(Duration::from_secs(300))
//!     .account(Account::new("alice", 1001))
//!     .group(Group::new(5001, "Rust Lovers").username("rustlovers"))
//!     .script(Script::join().target("@rustlovers").answers([
//!         Answer::FloodWait { seconds: 30 }.into(),
//!         Answer::Ok.after(Duration::from_millis(200)),
//!     ]));
//! let server = Server::start(scenario, "127.0.0.1:0").await?;
//! let accounts_config = server.accounts_config_json(); // Telethon sessions pointing here
//! // ... run the system under test against `accounts_config` ...
//! assert!(server.violations().is_empty());
//! println!("members: {:?}", server.members("@rustlovers"));
//! server.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! ## Public API
//!
//! - [`Scenario`] (builder and serde): [`Account`], [`Group`], [`Script`] of [`Step`]s (an
//!   [`Answer`] plus optional latency), [`Rules`]; [`Scenario::from_json`],
//!   [`Scenario::from_file`], [`Scenario::to_json`], [`Scenario::validate`],
//!   [`Scenario::accounts_config_json`], [`Account::string_session`], [`Scenario::sample`].
//! - [`Server::start`]`(scenario, addr)`, then [`Server::addr`], [`Server::violations`],
//!   [`Server::requests`], [`Server::requests_of`], [`Server::counters`], [`Server::members`],
//!   [`Server::pending`], [`Server::live_connections`], [`Server::string_session`],
//!   [`Server::accounts_config_json`], [`Server::shutdown`].
//! - Records: [`RequestRecord`] with an [`Outcome`]; [`Violation`].
//!
//! ## Scenario JSON
//!
//! ```json
//! {
//!   "dc_id": 2, "api_id": 12345, "api_hash": "0123456789abcdef0123456789abcdef",
//!   "rules": { "min_join_pause_ms": 300000, "duplicate_kills_key": true },
//!   "accounts": [
//!     { "session_name": "alice", "user_id": 1001, "first_name": "Alice",
//!       "auth_key": "<256 bytes, standard base64>" },
//!     { "session_name": "ghost", "user_id": 1009, "auth_key": "...", "registered": false },
//!     { "session_name": "loggedout", "user_id": 1010, "auth_key": "...", "authorized": false }
//!   ],
//!   "groups": [
//!     { "id": 5001, "title": "Rust Lovers", "username": "rustlovers", "access_hash": 77 },
//!     { "id": 5002, "title": "Private", "invite_hash": "AAAAAEhQx3k1bXxv" },
//!     { "id": 5003, "title": "Guarded", "username": "guarded", "request_needed": true }
//!   ],
//!   "scripts": [
//!     { "target": "@rustlovers", "on": "join", "answers": [
//!         { "kind": "flood_wait", "seconds": 30 },
//!         { "kind": "ok", "delay_ms": 200 } ] },
//!     { "account": "alice", "answers": [ { "kind": "drop", "after_join": true }, { "kind": "ok" } ] },
//!     { "account": "alice", "on": "any", "answers": [ { "kind": "session_revoked" } ] }
//!   ]
//! }
//! ```
//!
//! Answer kinds: `ok`, `already_participant`, `join_request`, `web_view` (`bot_id`),
//! `flood_wait` / `flood_premium_wait` / `slowmode_wait` (`seconds`), `peer_flood`, `frozen`,
//! `session_revoked`, `auth_key_unregistered`, `user_deactivated_ban`, `channel_private`,
//! `invite_hash_expired`, `invite_hash_invalid`, `username_not_occupied`,
//! `user_banned_in_channel`, `channels_too_much`, `rpc_call_fail`, `error` (`code`,
//! `message`), `drop` (`after_join`), `silence`; any may carry `delay_ms`. Script `on`: `join`
//! (default: joinChannel and importChatInvite), `resolve`, `check_invite`, `any` (every API
//! call but the connection's help.getConfig). A script's answers are used one per matching
//! request, the last repeating; the most specific matching script wins (account + target,
//! then target, then account), then the first listed. `target` is `@name`, `+hash`, a t.me
//! link or a group id, and matches the group however the client reached it.
//!
//! ## Behaviour
//!
//! - Without a script: resolving a known username gives the channel (with this account's own
//!   access hash; another account's hash gets CHANNEL_INVALID), an unknown one
//!   USERNAME_NOT_OCCUPIED; joining joins (then USER_ALREADY_PARTICIPANT), or files a join
//!   request (INVITE_REQUEST_SENT) if the group has `request_needed`; an unknown invite hash
//!   is INVITE_HASH_INVALID; unimplemented methods get `400 INPUT_METHOD_INVALID`; malformed
//!   arguments `400 INPUT_FETCH_ERROR`. Nothing a client sends makes tgsim panic.
//! - FloodWait / FloodPremiumWait are enforced: until the window ends, every request of the
//!   account (except help.getConfig on connect) gets `420 <NAME>_<remaining seconds>` and is
//!   recorded as [`Violation::RequestDuringFloodWait`].
//! - A second live connection with one key gets `406 AUTH_KEY_DUPLICATED` for everything
//!   (including the connection's initConnection, so grammers fails the call with that RPC
//!   error) and is recorded as [`Violation::DuplicateConnection`]; with
//!   `rules.duplicate_kills_key` (default) the key is dead afterwards on every connection.
//!   A new connection waits 200 ms for an old one that is closing before it counts as one.
//! - [`Violation::JoinTooSoon`]: a join attempt sooner than `rules.min_join_pause_ms` after
//!   the account's previous successful join (joined, join request or guard bot filed). Several
//!   accounts joining one group is not a violation; see [`Server::members`].
//! - `drop` closes the connection instead of answering (grammers: `InvocationError::Io`,
//!   ConnectionReset); with `after_join` the join is applied first. `silence` never answers.
//!   Latency delays the answer; the effect (e.g. the join) applies at once.
//!
//! ## Start-up calls
//!
//! So that clients other than grammers (Telethon, Pyrogram, GramJS, TDLib) can be run against
//! it, tgsim answers what they ask right after connecting. An account's update stream never
//! changes (pts 1, qts 0, seq 1):
//!
//! - `help.getConfig`: a config for the scenario's DC, with no `dc_options` (so the client
//!   keeps the address it has).
//! - `updates.getState`: `updates.state` with that pts and seq and the current date.
//! - `updates.getDifference`: `updates.differenceEmpty` from pts 1; from any other pts an
//!   empty `updates.difference` carrying the state to move to.
//! - `updates.getChannelDifference`: `updates.channelDifferenceEmpty` (final) for a group the
//!   account is in, `CHANNEL_PRIVATE` for one it is not in, `CHANNEL_INVALID` for an unknown one.
//! - `users.getUsers`: `inputUserSelf` (or the account's own id) is the account's own user
//!   (`self` set); other scenario accounts are plain users; unknown ones are left out.
//! - `help.getNearestDc`: the scenario's DC.
//! - `help.getAppConfig`: `help.appConfig` whose JSON carries the scenario's
//!   `channels_limit_default`, `channels_limit_premium` and `chatlists_joined_limit_default`
//!   (`app_config`), and for a frozen account (`"frozen": { "since", "until", "appeal_url" }`)
//!   `freeze_since_date`, `freeze_until_date` and `freeze_appeal_url`. A frozen account's joins
//!   get `420 FROZEN_METHOD_INVALID`. An account with `"premium": true` has the `premium` flag
//!   on its own user.
//! - `chatlists.checkChatlistInvite`: a scenario folder (`"folders": [{ "slug", "title",
//!   "groups": [ids] }]`) lists its groups as this account sees them (with or without a
//!   username); an unknown slug is `400 INVITE_SLUG_EXPIRED`, an empty one `INVITE_SLUG_EMPTY`.
//!   `chatlists.joinChatlistInvite` (the bulk join) is not answered (`INPUT_METHOD_INVALID`)
//!   and shows in the request record.
//! - An account with `"active_hours_utc": ["09:00-22:00", ...]` expects joins only inside those
//!   UTC windows: a join outside them is recorded as [`Violation::JoinOutsideActiveHours`].
//!
//! These are requests like any other: scripts with `on: any` apply to them, and during a
//! FloodWait they are refused and recorded as violations (only the connection's
//! `help.getConfig` is exempt). `users.getFullUser` (Pyrogram's `get_me`) is not answered yet
//! (`INPUT_METHOD_INVALID`).
//!
//! ## Unknown auth keys
//!
//! A packet whose auth_key_id tgsim does not know (or an account with `registered: false`) is
//! answered with transport error `-404` and the socket is closed, as Telegram does. grammers
//! 0.11 (`SenderPoolRunner::connect_sender`) reacts to a 404 on its first initConnection by
//! reconnecting and starting a new key exchange (a plain `req_pq_multi`, auth_key_id 0);
//! tgsim answers that with `-404` too. The call then fails with
//! `InvocationError::Transport(transport::Error::BadStatus { status: 404 })`, and because the
//! connection was never established the session keeps its original key (grammers only stores
//! a key after a successful connect). `Client::is_authorized` returns that error, not
//! `Ok(false)`: the caller must treat it as "unauthorised". Both steps are recorded as
//! requests named `(unknown auth key)` (with the account, if the key is in the scenario) and
//! `(key exchange)`.
//!
//! ## Protocol notes
//!
//! Salt is always 0 and the client's session_id is echoed; tgsim never sends
//! new_session_created, bad_server_salt, msg_copy or future_salt. It unwraps msg_container,
//! gzip_packed, invokeWithLayer, initConnection, invokeWithoutUpdates and invokeAfterMsg;
//! answers ping / ping_delay_disconnect with pong, get_future_salts with future_salts (all 0),
//! rpc_drop_answer with rpc_answer_unknown, and ignores msgs_ack.

pub mod crypto;
#[doc(hidden)]
pub mod fuzzing;
pub mod record;
pub mod scenario;
pub mod server;
pub mod tl;
pub mod transport;

pub use record::{ConnId, Outcome, RequestRecord, Violation};
pub use scenario::{
    Account, Answer, AppConfig, AuthKeyBytes, Folder, Freeze, Group, Rules, Scenario,
    ScenarioError, Script, Step, Trigger, target_key,
};
pub use server::{Server, StartError};
