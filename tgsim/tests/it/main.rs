//! tgsim driven by the real grammers 0.11 client over real TCP.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4, SocketAddrV6};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use grammers_client::Client;
use grammers_client::tl;
use grammers_mtproto::transport;
use grammers_mtsender::{ConnectionParams, InvocationError, NoRetries, SenderPool};
use grammers_session::SessionData;
use grammers_session::storages::MemorySession;
use grammers_session::types::DcOption;
use tgsim::{Account, Answer, Group, Outcome, Scenario, Script, Server, Trigger, Violation};
use tokio::task::JoinHandle;

/// Every call in these tests is bounded: grammers has no timeouts of its own.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A decoded Telethon string session.
struct TelethonSession {
    dc_id: u8,
    addr: SocketAddrV4,
    auth_key: [u8; 256],
}

/// The test's own Telethon decoder: `'1'` + urlsafe base64 of dc(1) ip(4) port(2, BE) key(256).
fn decode_telethon(session: &str) -> TelethonSession {
    let body = session.strip_prefix('1').expect("version 1");
    let raw = base64::engine::general_purpose::URL_SAFE.decode(body).expect("urlsafe base64");
    assert_eq!(raw.len(), 1 + 4 + 2 + 256, "IPv4 session length");
    let ip = Ipv4Addr::new(raw[1], raw[2], raw[3], raw[4]);
    let port = u16::from_be_bytes([raw[5], raw[6]]);
    TelethonSession {
        dc_id: raw[0],
        addr: SocketAddrV4::new(ip, port),
        auth_key: raw[7..].try_into().unwrap(),
    }
}

/// A grammers client for one account, built from the Telethon session tgsim wrote.
struct Tg {
    client: Client,
    runner: JoinHandle<()>,
    _updates: tokio::sync::mpsc::Receiver<grammers_session::updates::UpdatesLike>,
}

impl Tg {
    fn connect(server: &Server, session_name: &str) -> Self {
        let session = decode_telethon(&server.string_session(session_name).unwrap());
        let dc_id = i32::from(session.dc_id);
        let mut data =
            SessionData { home_dc: dc_id, dc_options: HashMap::new(), ..SessionData::default() };
        data.dc_options.insert(
            dc_id,
            DcOption {
                id: dc_id,
                ipv4: session.addr,
                ipv6: SocketAddrV6::new(
                    session.addr.ip().to_ipv6_mapped(),
                    session.addr.port(),
                    0,
                    0,
                ),
                auth_key: Some(session.auth_key),
            },
        );
        let params =
            ConnectionParams { retry_policy: Box::new(NoRetries), ..ConnectionParams::default() };
        let pool = SenderPool::with_configuration(
            Arc::new(MemorySession::from(data)),
            server.scenario().api_id,
            params,
        );
        let runner = tokio::spawn(pool.runner.run());
        Self { client: Client::new(pool.handle), runner, _updates: pool.updates }
    }

    async fn call<R: tl::RemoteCall>(&self, request: &R) -> Result<R::Return, InvocationError> {
        tokio::time::timeout(CALL_TIMEOUT, self.client.invoke(request))
            .await
            .expect("call timed out")
    }

    async fn resolve(&self, username: &str) -> Result<tl::types::Channel, InvocationError> {
        let tl::enums::contacts::ResolvedPeer::Peer(resolved) = self
            .call(&tl::functions::contacts::ResolveUsername {
                username: username.into(),
                referer: None,
            })
            .await?;
        let chat = resolved.chats.into_iter().next().expect("a channel");
        match chat {
            tl::enums::Chat::Channel(c) => Ok(c),
            other => panic!("expected a channel, got {other:?}"),
        }
    }

    async fn join_channel(
        &self,
        channel: &tl::types::Channel,
    ) -> Result<tl::enums::messages::ChatInviteJoinResult, InvocationError> {
        self.call(&tl::functions::channels::JoinChannel {
            channel: tl::enums::InputChannel::Channel(tl::types::InputChannel {
                channel_id: channel.id,
                access_hash: channel.access_hash.unwrap(),
            }),
        })
        .await
    }

    async fn join_username(
        &self,
        username: &str,
    ) -> Result<tl::enums::messages::ChatInviteJoinResult, InvocationError> {
        let channel = self.resolve(username).await?;
        self.join_channel(&channel).await
    }

    async fn import_invite(
        &self,
        hash: &str,
    ) -> Result<tl::enums::messages::ChatInviteJoinResult, InvocationError> {
        self.call(&tl::functions::messages::ImportChatInvite { hash: hash.into() }).await
    }
}

impl Drop for Tg {
    fn drop(&mut self) {
        // quit() is ignored by a stalled runner: abort it.
        self.runner.abort();
    }
}

fn io_error(result: Result<impl std::fmt::Debug, InvocationError>) -> std::io::ErrorKind {
    match result {
        Err(InvocationError::Io(e)) => e.kind(),
        other => panic!("expected an I/O error, got {other:?}"),
    }
}

/// The RPC error of a failed call, as (code, name, value).
fn rpc(result: Result<impl std::fmt::Debug, InvocationError>) -> (i32, String, Option<u32>) {
    match result {
        Err(InvocationError::Rpc(e)) => (e.code, e.name, e.value),
        other => panic!("expected an RPC error, got {other:?}"),
    }
}

fn base() -> Scenario {
    Scenario::new()
        .account(Account::new("alice", 1001).first_name("Alice"))
        .account(Account::new("bob", 1002).first_name("Bob"))
        .group(Group::new(5001, "Rust Lovers").username("rustlovers"))
        .group(Group::new(5002, "Private Club").invite("AAAAAEhQx3k1bXxv"))
}

async fn start(scenario: Scenario) -> Server {
    Server::start(scenario, "127.0.0.1:0").await.unwrap()
}

#[tokio::test]
async fn get_me_and_is_authorized_work_with_a_preloaded_key() {
    let server = start(base()).await;
    let tg = Tg::connect(&server, "alice");

    let me = tokio::time::timeout(CALL_TIMEOUT, tg.client.get_me()).await.unwrap().unwrap();
    assert_eq!(me.id().bare_id_unchecked(), 1001);
    assert!(tokio::time::timeout(CALL_TIMEOUT, tg.client.is_authorized()).await.unwrap().unwrap());

    let methods: Vec<String> = server.requests().into_iter().map(|r| r.method).collect();
    assert_eq!(methods, ["help.getConfig", "users.getUsers", "updates.getState"]);
    assert!(server.violations().is_empty());
}

/// What MTProto clients (Telethon, Pyrogram, GramJS, TDLib) ask right after they connect,
/// asked as they ask it: the config, the update state and the difference from it, their own
/// user, the nearest DC; and, after a join, the channel's difference.
#[tokio::test]
async fn the_calls_clients_make_right_after_connecting_get_sensible_answers() {
    use tl::enums::updates::{ChannelDifference, Difference, State};
    let server = start(base()).await;
    let tg = Tg::connect(&server, "alice");

    let tl::enums::Config::Config(config) =
        tg.call(&tl::functions::help::GetConfig {}).await.unwrap();
    assert_eq!(config.this_dc, server.scenario().dc_id);

    let State::State(state) = tg.call(&tl::functions::updates::GetState {}).await.unwrap();
    let difference = |pts: i32| tl::functions::updates::GetDifference {
        pts,
        pts_limit: None,
        pts_total_limit: None,
        date: state.date,
        qts: state.qts,
        qts_limit: None,
    };
    match tg.call(&difference(state.pts)).await.unwrap() {
        Difference::Empty(empty) => {
            assert_eq!(empty.seq, state.seq);
            assert!(empty.date >= state.date);
        }
        other => panic!("a client at the current state gets differenceEmpty, got {other:?}"),
    }
    // A client that lost its state (pts 0) is given the state to move to.
    match tg.call(&difference(0)).await.unwrap() {
        Difference::Difference(d) => {
            let State::State(new) = d.state;
            assert_eq!((new.pts, new.seq), (state.pts, state.seq));
            assert!(d.new_messages.is_empty() && d.other_updates.is_empty());
        }
        other => panic!("a client behind gets an empty difference with the state, got {other:?}"),
    }

    let users = tg
        .call(&tl::functions::users::GetUsers { id: vec![tl::enums::InputUser::UserSelf] })
        .await
        .unwrap();
    match &users[..] {
        [tl::enums::User::User(me)] => {
            assert!(me.is_self);
            assert_eq!((me.id, me.first_name.as_deref()), (1001, Some("Alice")));
        }
        other => panic!("users.getUsers([inputUserSelf]) is the account itself, got {other:?}"),
    }

    let tl::enums::NearestDc::Dc(nearest) =
        tg.call(&tl::functions::help::GetNearestDc {}).await.unwrap();
    assert_eq!((nearest.this_dc, nearest.nearest_dc), (config.this_dc, config.this_dc));

    let channel = tg.resolve("rustlovers").await.unwrap();
    let channel_difference = tl::functions::updates::GetChannelDifference {
        force: false,
        channel: tl::enums::InputChannel::Channel(tl::types::InputChannel {
            channel_id: channel.id,
            access_hash: channel.access_hash.unwrap(),
        }),
        filter: tl::enums::ChannelMessagesFilter::Empty,
        pts: 1,
        limit: 100,
    };
    assert_eq!(rpc(tg.call(&channel_difference).await), (400, "CHANNEL_PRIVATE".into(), None));
    tg.join_channel(&channel).await.unwrap();
    match tg.call(&channel_difference).await.unwrap() {
        ChannelDifference::Empty(empty) => assert!(empty.r#final),
        other => panic!("a member's channel difference is empty, got {other:?}"),
    }

    let methods: Vec<String> = server.requests_of("alice").into_iter().map(|r| r.method).collect();
    assert_eq!(
        methods,
        [
            "help.getConfig", // grammers' own initConnection
            "help.getConfig",
            "updates.getState",
            "updates.getDifference",
            "updates.getDifference",
            "users.getUsers",
            "help.getNearestDc",
            "contacts.resolveUsername",
            "updates.getChannelDifference",
            "channels.joinChannel",
            "updates.getChannelDifference",
        ]
    );
    assert!(server.violations().is_empty(), "{:?}", server.violations());
}

/// The start-up calls are requests like any other: during a FloodWait they are refused and
/// recorded as violations, so a client that polls its updates through a wait is caught.
#[tokio::test]
async fn start_up_calls_during_a_flood_wait_are_violations() {
    let scenario =
        base().script(Script::join().account("alice").answers([Answer::FloodWait { seconds: 30 }]));
    let server = start(scenario).await;
    let tg = Tg::connect(&server, "alice");
    let flood = tg.join_username("rustlovers").await;
    assert_eq!(rpc(flood).0, 420);
    let state = tg.call(&tl::functions::updates::GetState {}).await;
    assert_eq!(rpc(state).1, "FLOOD_WAIT");
    assert!(matches!(
        &server.violations()[..],
        [Violation::RequestDuringFloodWait { method, .. }] if method == "updates.getState"
    ));
}

#[tokio::test]
async fn resolve_then_join_channel_joins_and_a_second_join_is_already_participant() {
    let server = start(base()).await;
    let tg = Tg::connect(&server, "alice");

    let result = tg.join_username("rustlovers").await.unwrap();
    let tl::enums::messages::ChatInviteJoinResult::Ok(ok) = result else {
        panic!("expected a join, got {result:?}");
    };
    let tl::enums::Updates::Updates(updates) = ok.updates else {
        panic!("expected updates");
    };
    assert!(matches!(&updates.chats[..], [tl::enums::Chat::Channel(c)] if c.id == 5001 && !c.left));
    assert_eq!(server.members("@rustlovers"), ["alice"]);

    let again = tg.join_username("RustLovers").await;
    assert_eq!(rpc(again), (400, "USER_ALREADY_PARTICIPANT".into(), None));
    assert_eq!(server.counters()["channels.joinChannel"], 2);
}

#[tokio::test]
async fn import_chat_invite_joins_and_check_chat_invite_follows_membership() {
    let server = start(base()).await;
    let tg = Tg::connect(&server, "bob");

    let check = tg
        .call(&tl::functions::messages::CheckChatInvite { hash: "AAAAAEhQx3k1bXxv".into() })
        .await
        .unwrap();
    assert!(matches!(check, tl::enums::ChatInvite::Invite(ref i) if i.title == "Private Club"));

    let joined = tg.import_invite("AAAAAEhQx3k1bXxv").await.unwrap();
    assert!(matches!(joined, tl::enums::messages::ChatInviteJoinResult::Ok(_)));
    assert_eq!(server.members("+AAAAAEhQx3k1bXxv"), ["bob"]);
    assert_eq!(server.members("5002"), ["bob"]);
    assert!(server.members("@rustlovers").is_empty());

    let check = tg
        .call(&tl::functions::messages::CheckChatInvite { hash: "AAAAAEhQx3k1bXxv".into() })
        .await
        .unwrap();
    assert!(matches!(check, tl::enums::ChatInvite::Already(_)));
}

#[tokio::test]
async fn unknown_targets_answer_as_telegram_does() {
    let server = start(base()).await;
    let tg = Tg::connect(&server, "alice");

    assert_eq!(rpc(tg.resolve("nosuchgroup").await), (400, "USERNAME_NOT_OCCUPIED".into(), None));
    assert_eq!(
        rpc(tg.import_invite("nosuchhash").await),
        (400, "INVITE_HASH_INVALID".into(), None)
    );
    assert_eq!(
        rpc(tg.call(&tl::functions::messages::CheckChatInvite { hash: "nosuchhash".into() }).await),
        (400, "INVITE_HASH_INVALID".into(), None)
    );
    // Another account's access hash is not valid for this account.
    let mut channel = tg.resolve("rustlovers").await.unwrap();
    channel.access_hash = channel.access_hash.map(|h| h ^ 1);
    assert_eq!(rpc(tg.join_channel(&channel).await), (400, "CHANNEL_INVALID".into(), None));
    // A method tgsim does not implement is an RPC error, not a crash.
    assert_eq!(
        rpc(tg.call(&tl::functions::messages::GetDialogFilters {}).await),
        (400, "INPUT_METHOD_INVALID".into(), None)
    );
    // And the connection still works.
    assert!(tg.resolve("rustlovers").await.is_ok());
}

#[tokio::test]
async fn each_scripted_error_reaches_the_caller_as_its_rpc_error() {
    type Expected<'a> = (i32, &'a str, Option<u32>);
    let cases: Vec<(Answer, Expected)> = vec![
        (Answer::AlreadyParticipant, (400, "USER_ALREADY_PARTICIPANT", None)),
        (Answer::JoinRequest, (400, "INVITE_REQUEST_SENT", None)),
        (Answer::FloodWait { seconds: 31 }, (420, "FLOOD_WAIT", Some(31))),
        (Answer::FloodPremiumWait { seconds: 7 }, (420, "FLOOD_PREMIUM_WAIT", Some(7))),
        (Answer::SlowmodeWait { seconds: 12 }, (420, "SLOWMODE_WAIT", Some(12))),
        (Answer::PeerFlood, (400, "PEER_FLOOD", None)),
        (Answer::Frozen, (420, "FROZEN_METHOD_INVALID", None)),
        (Answer::SessionRevoked, (401, "SESSION_REVOKED", None)),
        (Answer::AuthKeyUnregistered, (401, "AUTH_KEY_UNREGISTERED", None)),
        (Answer::UserDeactivatedBan, (401, "USER_DEACTIVATED_BAN", None)),
        (Answer::ChannelPrivate, (400, "CHANNEL_PRIVATE", None)),
        (Answer::InviteHashExpired, (400, "INVITE_HASH_EXPIRED", None)),
        (Answer::InviteHashInvalid, (400, "INVITE_HASH_INVALID", None)),
        (Answer::UsernameNotOccupied, (400, "USERNAME_NOT_OCCUPIED", None)),
        (Answer::UserBannedInChannel, (400, "USER_BANNED_IN_CHANNEL", None)),
        (Answer::ChannelsTooMuch, (400, "CHANNELS_TOO_MUCH", None)),
        (Answer::RpcCallFail, (500, "RPC_CALL_FAIL", None)),
        (
            Answer::Error { code: 400, message: "STARS_PAYMENT_REQUIRED".into() },
            (400, "STARS_PAYMENT_REQUIRED", None),
        ),
    ];
    for (answer, (code, name, value)) in cases {
        let server =
            start(base().script(Script::join().target("@rustlovers").then(answer.clone()))).await;
        let tg = Tg::connect(&server, "alice");
        let got = rpc(tg.join_username("rustlovers").await);
        assert_eq!(got, (code, name.to_owned(), value), "answer {answer:?}");
        // Invites are joined through the same scripts, by their own target.
        let server =
            start(base().script(Script::join().target("+AAAAAEhQx3k1bXxv").then(answer.clone())))
                .await;
        let tg = Tg::connect(&server, "alice");
        let got = rpc(tg.import_invite("AAAAAEhQx3k1bXxv").await);
        assert_eq!(got, (code, name.to_owned(), value), "invite answer {answer:?}");
        assert!(server.members("+AAAAAEhQx3k1bXxv").len() <= 1);
    }
}

#[tokio::test]
async fn scripted_answers_are_consumed_in_order_and_the_last_repeats() {
    let scenario = base()
        .script(Script::join().account("alice").answers([Answer::RpcCallFail, Answer::PeerFlood]));
    let server = start(scenario).await;
    let alice = Tg::connect(&server, "alice");
    let bob = Tg::connect(&server, "bob");

    assert_eq!(rpc(alice.join_username("rustlovers").await).1, "RPC_CALL_FAIL");
    assert_eq!(rpc(alice.join_username("rustlovers").await).1, "PEER_FLOOD");
    assert_eq!(rpc(alice.join_username("rustlovers").await).1, "PEER_FLOOD");
    // The script names alice only.
    assert!(bob.join_username("rustlovers").await.is_ok());
    assert_eq!(server.members("@rustlovers"), ["bob"]);
}

#[tokio::test]
async fn a_flood_wait_window_is_enforced_for_every_request_and_recorded_as_a_violation() {
    let scenario =
        base().script(Script::join().target("@rustlovers").then(Answer::FloodWait { seconds: 30 }));
    let server = start(scenario).await;
    let tg = Tg::connect(&server, "alice");

    assert_eq!(rpc(tg.join_username("rustlovers").await), (420, "FLOOD_WAIT".into(), Some(30)));
    assert!(server.violations().is_empty());

    // Any request inside the window, even an unrelated one, gets the remaining wait.
    let (code, name, value) = rpc(tg.resolve("rustlovers").await);
    assert_eq!((code, name.as_str()), (420, "FLOOD_WAIT"));
    let remaining = value.unwrap();
    assert!((29..=30).contains(&remaining), "remaining {remaining}");

    let violations = server.violations();
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert!(matches!(
        &violations[0],
        Violation::RequestDuringFloodWait { account, method, .. }
            if account == "alice" && method == "contacts.resolveUsername"
    ));
    // Other accounts are not affected.
    let bob = Tg::connect(&server, "bob");
    assert!(bob.resolve("rustlovers").await.is_ok());
    assert_eq!(server.violations().len(), 1);
}

#[tokio::test]
async fn two_live_connections_with_one_key_get_auth_key_duplicated_and_a_violation() {
    let server = start(base()).await;
    let first = Tg::connect(&server, "alice");
    first.resolve("rustlovers").await.unwrap();
    assert_eq!(server.live_connections("alice"), 1);

    let second = Tg::connect(&server, "alice");
    assert_eq!(rpc(second.resolve("rustlovers").await), (406, "AUTH_KEY_DUPLICATED".into(), None));
    // As on Telegram, the key is dead afterwards, on the first connection too.
    assert_eq!(rpc(first.resolve("rustlovers").await), (406, "AUTH_KEY_DUPLICATED".into(), None));
    let violations = server.violations();
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert!(matches!(
        &violations[0],
        Violation::DuplicateConnection { account, .. } if account == "alice"
    ));
}

#[tokio::test]
async fn a_connection_silent_past_the_limit_is_closed_and_a_new_one_is_no_duplicate() {
    let server = start(base().silent_disconnect(Duration::from_millis(300))).await;
    let frozen = Tg::connect(&server, "alice");
    frozen.resolve("rustlovers").await.unwrap();
    assert_eq!(server.live_connections("alice"), 1);
    // The client stays open but sends nothing, as a frozen process would.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while server.live_connections("alice") > 0 {
        assert!(std::time::Instant::now() < deadline, "the silent connection was never closed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let next = Tg::connect(&server, "alice");
    next.resolve("rustlovers").await.unwrap();
    assert!(server.violations().is_empty(), "{:?}", server.violations());
    assert!(
        server.requests().iter().any(|r| r.method == "(silent connection closed)"),
        "the close is in the record"
    );
    drop(frozen);
}

#[tokio::test]
async fn reconnecting_after_closing_is_not_a_duplicate() {
    let server = start(base()).await;
    for _ in 0..3 {
        let tg = Tg::connect(&server, "alice");
        tg.resolve("rustlovers").await.unwrap();
        drop(tg);
    }
    assert!(server.violations().is_empty(), "{:?}", server.violations());
}

#[tokio::test]
async fn silence_never_answers() {
    let scenario = base().script(Script::on(Trigger::Resolve).then(Answer::Silence));
    let server = start(scenario).await;
    let tg = Tg::connect(&server, "alice");
    let stalled = tokio::time::timeout(
        Duration::from_millis(700),
        tg.client.invoke(&tl::functions::contacts::ResolveUsername {
            username: "rustlovers".into(),
            referer: None,
        }),
    )
    .await;
    assert!(stalled.is_err(), "expected no answer, got {stalled:?}");
    assert_eq!(server.requests().last().unwrap().outcome, Outcome::Silence);
}

#[tokio::test]
async fn latency_delays_the_answer() {
    let scenario = base()
        .script(Script::on(Trigger::Resolve).then(Answer::Ok.after(Duration::from_millis(300))));
    let server = start(scenario).await;
    let tg = Tg::connect(&server, "alice");
    tg.call(&tl::functions::help::GetConfig {}).await.unwrap();
    let started = std::time::Instant::now();
    tg.resolve("rustlovers").await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn a_dropped_connection_is_an_io_error_and_after_join_leaves_the_join_in_doubt() {
    let scenario = base()
        .script(
            Script::join()
                .target("@rustlovers")
                .answers([Answer::Drop { after_join: true }, Answer::Ok]),
        )
        .script(
            Script::join().target("+AAAAAEhQx3k1bXxv").then(Answer::Drop { after_join: false }),
        );
    let server = start(scenario).await;
    let tg = Tg::connect(&server, "alice");

    let kind = io_error(tg.join_username("rustlovers").await);
    assert_eq!(kind, std::io::ErrorKind::ConnectionReset);
    // The join happened although the caller could not know it.
    assert_eq!(server.members("@rustlovers"), ["alice"]);
    // The next call reconnects; retrying the join is idempotent.
    assert_eq!(
        rpc(tg.join_username("rustlovers").await),
        (400, "USER_ALREADY_PARTICIPANT".into(), None)
    );

    io_error(tg.import_invite("AAAAAEhQx3k1bXxv").await);
    assert!(server.members("+AAAAAEhQx3k1bXxv").is_empty());
    assert!(server.violations().is_empty(), "{:?}", server.violations());
}

#[tokio::test]
async fn an_unknown_key_surfaces_as_transport_error_404_and_the_key_is_kept() {
    let scenario = base().account(Account::new("ghost", 1009).unregistered());
    let server = start(scenario).await;
    let tg = Tg::connect(&server, "ghost");

    let result = tg.call(&tl::functions::updates::GetState {}).await;
    assert!(
        matches!(
            result,
            Err(InvocationError::Transport(transport::Error::BadStatus { status: 404 }))
        ),
        "{result:?}"
    );
    // grammers retried with a fresh key exchange, which tgsim also refused.
    let events: Vec<String> = server.requests_of("ghost").into_iter().map(|r| r.method).collect();
    assert_eq!(events, ["(unknown auth key)"]);
    let exchanges = server.requests().into_iter().filter(|r| r.method == "(key exchange)").count();
    assert_eq!(exchanges, 1);
    // is_authorized reports the error rather than `false`.
    assert!(tokio::time::timeout(CALL_TIMEOUT, tg.client.is_authorized()).await.unwrap().is_err());
}

#[tokio::test]
async fn a_logged_out_key_is_not_authorized() {
    let scenario = base().account(Account::new("loggedout", 1010).unauthorized());
    let server = start(scenario).await;
    let tg = Tg::connect(&server, "loggedout");
    let authorized =
        tokio::time::timeout(CALL_TIMEOUT, tg.client.is_authorized()).await.unwrap().unwrap();
    assert!(!authorized);
    assert_eq!(
        rpc(tg.join_username("rustlovers").await),
        (401, "AUTH_KEY_UNREGISTERED".into(), None)
    );
}

#[tokio::test]
async fn a_scripted_any_answer_applies_to_every_call_of_the_account() {
    let scenario =
        base().script(Script::on(Trigger::Any).account("alice").then(Answer::SessionRevoked));
    let server = start(scenario).await;
    let tg = Tg::connect(&server, "alice");
    let authorized =
        tokio::time::timeout(CALL_TIMEOUT, tg.client.is_authorized()).await.unwrap().unwrap();
    assert!(!authorized);
    assert_eq!(rpc(tg.resolve("rustlovers").await), (401, "SESSION_REVOKED".into(), None));
}

#[tokio::test]
async fn guard_bots_and_join_requests_leave_the_account_pending() {
    let scenario = base()
        .group(Group::new(5003, "Guarded").username("guarded").request_needed())
        .group(Group::new(5004, "Bot Guarded").username("botguarded"))
        .script(Script::join().target("@botguarded").then(Answer::WebView { bot_id: 4242 }));
    let server = start(scenario).await;
    let tg = Tg::connect(&server, "alice");

    assert_eq!(rpc(tg.join_username("guarded").await), (400, "INVITE_REQUEST_SENT".into(), None));
    let result = tg.join_username("botguarded").await.unwrap();
    assert!(matches!(
        result,
        tl::enums::messages::ChatInviteJoinResult::WebView(ref w) if w.bot_id == 4242
    ));
    assert!(server.members("@guarded").is_empty());
    assert!(server.members("@botguarded").is_empty());
    assert_eq!(server.pending("@guarded"), ["alice"]);
    assert_eq!(server.pending("@botguarded"), ["alice"]);
}

#[tokio::test]
async fn joins_closer_than_the_minimum_pause_are_violations_but_shared_groups_are_not() {
    let scenario = base()
        .group(Group::new(5005, "Third").username("third"))
        .min_join_pause(Duration::from_secs(60));
    let server = start(scenario).await;
    let alice = Tg::connect(&server, "alice");
    let bob = Tg::connect(&server, "bob");

    alice.join_username("rustlovers").await.unwrap();
    // Another account joining the same group is fine for tgsim.
    bob.join_username("rustlovers").await.unwrap();
    assert!(server.violations().is_empty(), "{:?}", server.violations());
    assert_eq!(server.members("@rustlovers"), ["alice", "bob"]);

    alice.join_username("third").await.unwrap();
    let violations = server.violations();
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert!(matches!(
        &violations[0],
        Violation::JoinTooSoon { account, min_pause, .. }
            if account == "alice" && *min_pause == Duration::from_secs(60)
    ));
}

#[tokio::test]
async fn telethon_sessions_are_352_characters_and_decode_to_the_server_and_key() {
    let scenario = base();
    let server = start(scenario.clone()).await;
    let config = server.accounts_config_json();
    let entries = config.as_array().unwrap();
    assert_eq!(entries.len(), 2);
    for (entry, account) in entries.iter().zip(&scenario.accounts) {
        assert_eq!(entry["session_name"], account.session_name.as_str());
        assert_eq!(entry["api_id"], scenario.api_id);
        assert_eq!(entry["api_hash"], scenario.api_hash.as_str());
        assert!(entry["proxy"].is_null());
        let string = entry["string_session"].as_str().unwrap();
        // '1' + 352 base64 characters for IPv4.
        assert_eq!(string.len(), 1 + 352);
        assert!(string.ends_with('='), "Telethon keeps the padding");
        let decoded = decode_telethon(string);
        assert_eq!(i32::from(decoded.dc_id), scenario.dc_id);
        assert_eq!(std::net::SocketAddr::V4(decoded.addr), server.addr());
        assert_eq!(decoded.auth_key, account.auth_key.0);
    }
}

#[tokio::test]
async fn a_json_scenario_drives_the_server() {
    let json = r#"{
        "rules": { "min_join_pause_ms": 0 },
        "accounts": [
            { "session_name": "alice", "user_id": 1001, "auth_key": "KEY" }
        ],
        "groups": [
            { "id": 5001, "title": "Rust Lovers", "username": "rustlovers", "access_hash": 77 }
        ],
        "scripts": [
            { "target": "@rustlovers", "answers": [
                { "kind": "flood_premium_wait", "seconds": 0 },
                { "kind": "ok", "delay_ms": 10 }
            ] }
        ]
    }"#;
    let key = base64::engine::general_purpose::STANDARD.encode([7u8; 256]);
    let scenario = Scenario::from_json(&json.replace("KEY", &key)).unwrap();
    let server = start(scenario).await;
    let tg = Tg::connect(&server, "alice");
    assert_eq!(
        rpc(tg.join_username("rustlovers").await),
        (420, "FLOOD_PREMIUM_WAIT".into(), Some(0))
    );
    tg.join_username("rustlovers").await.unwrap();
    assert_eq!(server.members("@rustlovers"), ["alice"]);
    let counters = server.counters();
    assert_eq!(counters["channels.joinChannel"], 2);
    assert_eq!(counters["contacts.resolveUsername"], 2);
}

#[tokio::test]
async fn many_accounts_join_concurrently() {
    let mut scenario = Scenario::new().group(Group::new(5001, "Big").username("big"));
    for i in 0..100 {
        scenario = scenario.account(Account::new(format!("acc{i:03}"), 10_000 + i));
    }
    let server = start(scenario).await;
    let started = std::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..100 {
        let tg = Tg::connect(&server, &format!("acc{i:03}"));
        tasks.spawn(async move { tg.join_username("big").await.map(|_| ()) });
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap().unwrap();
    }
    assert_eq!(server.members("@big").len(), 100);
    assert!(server.violations().is_empty());
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
}

#[tokio::test]
async fn shutdown_closes_client_connections() {
    let server = start(base()).await;
    let tg = Tg::connect(&server, "alice");
    tg.resolve("rustlovers").await.unwrap();
    server.shutdown().await;
    assert!(tg.resolve("rustlovers").await.is_err());
}

#[tokio::test]
async fn large_requests_arrive_gzip_packed_and_are_unpacked() {
    let server = start(base()).await;
    let tg = Tg::connect(&server, "alice");
    // grammers compresses requests of 512 bytes or more.
    let long = "a".repeat(2000);
    assert_eq!(rpc(tg.resolve(&long).await), (400, "USERNAME_NOT_OCCUPIED".into(), None));
    let last = server.requests().pop().unwrap();
    assert_eq!(last.method, "contacts.resolveUsername");
    assert_eq!(last.target, Some(format!("@{long}")));
}
