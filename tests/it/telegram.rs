//! The grammers adapter against tgsim, the loopback data centre, over real TCP: what each
//! Telegram answer becomes, and that no connection outlives its session.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use smart_joiner::accounts_config::{AccountConfig, AccountsConfig};
use smart_joiner::domain::{JoinOutcome, PeerInfo, RequestKind, TargetLink};
use smart_joiner::telegram::grammers::{GrammersTelegram, QUIT_GRACE, UNKNOWN_KEY_CODE};
use smart_joiner::telegram::{ConnectError, Telegram, TelegramSession};
use tgsim::{Account, Answer, Group, Scenario, Script, Server, Trigger};

const CALL_TIMEOUT: Duration = Duration::from_secs(5);

fn scenario() -> Scenario {
    Scenario::new()
        .account(Account::new("alice", 1001))
        .group(Group::new(5001, "Rust Lovers").username("rustlovers"))
        .group(Group::new(5002, "Private Club").invite("AAAAAEhQx3k1bXxv"))
        .group(Group::new(5003, "Guarded").username("guarded").request_needed())
        .group(Group::new(5004, "News").username("newsroom").broadcast())
}

async fn start(scenario: Scenario) -> Server {
    Server::start(scenario, "127.0.0.1:0").await.expect("tgsim starts")
}

/// The account as the real accounts file loader reads it from tgsim's accounts_config.json,
/// with `proxy` set when given.
fn account(server: &Server, name: &str, proxy: Option<String>) -> AccountConfig {
    let mut entries = server.accounts_config_json();
    for entry in entries.as_array_mut().expect("an array") {
        entry["proxy"] = proxy.clone().into();
    }
    let config = AccountsConfig::parse(&entries.to_string()).expect("tgsim writes a valid file");
    config.get(name).expect("account in the file").clone()
}

fn link(text: &str) -> TargetLink {
    TargetLink::parse(text).expect("a valid link")
}

fn telegram() -> GrammersTelegram {
    GrammersTelegram::new(CALL_TIMEOUT)
}

async fn connect(server: &Server, name: &str) -> Box<dyn TelegramSession> {
    telegram().connect(&account(server, name, None)).await.expect("connects")
}

/// A local port nothing listens on.
async fn closed_port() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}

/// Waits until tgsim has seen every connection of the account close.
async fn assert_no_live_connection(server: &Server, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.live_connections(name) > 0 {
        assert!(Instant::now() < deadline, "{name} still has a live connection");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn joinings(server: &Server, name: &str) -> usize {
    server
        .requests_of(name)
        .iter()
        .filter(|r| r.method.contains("joinChannel") || r.method.contains("importChatInvite"))
        .count()
}

#[tokio::test]
async fn joining_by_username_joins_and_names_the_group() {
    let server = start(scenario()).await;
    let mut session = connect(&server, "alice").await;

    let outcome = session.join(&link("@rustlovers")).await;
    let peer = PeerInfo { id: Some(5001), title: Some("Rust Lovers".to_owned()) };
    assert_eq!(outcome, JoinOutcome::Joined { already: false, peer: peer.clone() });
    assert_eq!(server.members("@rustlovers"), vec!["alice".to_owned()]);

    // Again: the resolve says the account is in, and no second join is sent.
    let again = session.join(&link("https://t.me/rustlovers")).await;
    assert_eq!(again, JoinOutcome::Joined { already: true, peer });
    assert_eq!(joinings(&server, "alice"), 1);

    session.disconnect().await;
    assert_no_live_connection(&server, "alice").await;
    assert!(server.violations().is_empty(), "{:?}", server.violations());
}

#[tokio::test]
async fn joining_by_invite_joins_and_a_second_time_is_already_joined() {
    let server = start(scenario()).await;
    let mut session = connect(&server, "alice").await;

    let outcome = session.join(&link("https://t.me/+AAAAAEhQx3k1bXxv")).await;
    assert!(
        matches!(&outcome, JoinOutcome::Joined { already: false, peer } if peer.id == Some(5002)),
        "{outcome:?}"
    );
    assert_eq!(server.members("+AAAAAEhQx3k1bXxv"), vec!["alice".to_owned()]);

    let again = session.join(&link("t.me/joinchat/AAAAAEhQx3k1bXxv")).await;
    assert!(matches!(again, JoinOutcome::Joined { already: true, .. }), "{again:?}");
    assert_eq!(joinings(&server, "alice"), 1);
    session.disconnect().await;
}

#[tokio::test]
async fn a_group_that_approves_members_gets_a_join_request() {
    let server = start(scenario()).await;
    let mut session = connect(&server, "alice").await;
    let outcome = session.join(&link("@guarded")).await;
    assert_eq!(outcome, JoinOutcome::Requested(RequestKind::JoinRequest));
    assert_eq!(server.pending("@guarded"), vec!["alice".to_owned()]);
    assert!(server.members("@guarded").is_empty());
    session.disconnect().await;
}

#[tokio::test]
async fn a_guard_bot_web_view_is_pending_not_joined() {
    let scenario =
        scenario().script(Script::join().target("@newsroom").then(Answer::WebView { bot_id: 7 }));
    let server = start(scenario).await;
    let mut session = connect(&server, "alice").await;
    let outcome = session.join(&link("@newsroom")).await;
    assert_eq!(outcome, JoinOutcome::Requested(RequestKind::GuardBot));
    session.disconnect().await;
}

#[tokio::test]
async fn a_flood_wait_reaches_the_caller_with_its_number_and_nothing_is_retried() {
    let scenario = scenario()
        .script(Script::join().target("@rustlovers").then(Answer::FloodWait { seconds: 31 }));
    let server = start(scenario).await;
    let mut session = connect(&server, "alice").await;

    let started = Instant::now();
    let outcome = session.join(&link("@rustlovers")).await;
    assert_eq!(outcome, JoinOutcome::FloodWait { seconds: 31 });
    assert!(started.elapsed() < Duration::from_secs(5), "grammers slept on the FloodWait");
    assert_eq!(joinings(&server, "alice"), 1, "the join was re-sent");
    session.disconnect().await;

    // tgsim enforces the window for the whole account, so even the authorisation check of a
    // new connection gets it: the join reports the wait and sends nothing.
    let mut session = connect(&server, "alice").await;
    let outcome = session.join(&link("@newsroom")).await;
    assert!(matches!(outcome, JoinOutcome::FloodWait { seconds } if seconds <= 31), "{outcome:?}");
    session.disconnect().await;
    let resolves =
        server.requests_of("alice").iter().filter(|r| r.method.contains("resolveUsername")).count();
    assert_eq!(resolves, 1, "a request was sent during the FloodWait");
    assert!(server.members("@rustlovers").is_empty());
}

#[tokio::test]
async fn a_premium_flood_wait_arrives_with_its_number() {
    let scenario = scenario()
        .script(Script::join().target("@newsroom").then(Answer::FloodPremiumWait { seconds: 900 }));
    let server = start(scenario).await;
    let mut session = connect(&server, "alice").await;
    assert_eq!(session.join(&link("@newsroom")).await, JoinOutcome::FloodWait { seconds: 900 });
    session.disconnect().await;
}

#[tokio::test]
async fn errors_from_the_join_are_classified() {
    let scenario = scenario()
        .script(Script::join().target("@rustlovers").then(Answer::Frozen))
        .script(Script::join().target("@newsroom").then(Answer::ChannelsTooMuch))
        .script(
            Script::on(Trigger::Resolve).target("@nobody_here").then(Answer::UsernameNotOccupied),
        );
    let server = start(scenario).await;
    let mut session = connect(&server, "alice").await;
    assert_eq!(
        session.join(&link("@rustlovers")).await,
        JoinOutcome::Frozen { code: "FROZEN_METHOD_INVALID".to_owned() }
    );
    assert_eq!(session.join(&link("@newsroom")).await, JoinOutcome::ChannelsTooMuch);
    let outcome = session.join(&link("@nobody_here")).await;
    assert!(
        matches!(&outcome, JoinOutcome::TargetInvalid { code, .. } if code == "USERNAME_NOT_OCCUPIED"),
        "{outcome:?}"
    );
    session.disconnect().await;
}

#[tokio::test]
async fn a_key_the_server_does_not_know_is_unauthorized_and_never_replaced() {
    let scenario = scenario().account(Account::new("ghost", 2001).unregistered());
    let server = start(scenario).await;
    let ghost = account(&server, "ghost", None);
    let original = ghost.session.encode();

    let result = telegram().connect(&ghost).await;
    assert_eq!(result.err(), Some(ConnectError::Unauthorized(UNKNOWN_KEY_CODE.to_owned())));
    assert_eq!(ghost.session.encode(), original);
    assert_no_live_connection(&server, "ghost").await;
}

#[tokio::test]
async fn a_logged_out_key_is_unauthorized_with_telegrams_code() {
    let scenario = scenario().account(Account::new("loggedout", 2002).unauthorized());
    let server = start(scenario).await;
    let result = telegram().connect(&account(&server, "loggedout", None)).await;
    assert_eq!(result.err(), Some(ConnectError::Unauthorized("AUTH_KEY_UNREGISTERED".to_owned())));
}

#[tokio::test]
async fn a_banned_account_is_reported_banned_at_connect() {
    let scenario = scenario()
        .script(Script::on(Trigger::Any).account("alice").then(Answer::UserDeactivatedBan));
    let server = start(scenario).await;
    let result = telegram().connect(&account(&server, "alice", None)).await;
    assert_eq!(result.err(), Some(ConnectError::Banned("USER_DEACTIVATED_BAN".to_owned())));
}

#[tokio::test]
async fn silence_on_the_join_is_in_doubt_after_the_timeout() {
    let scenario = scenario().script(Script::join().then(Answer::Silence));
    let server = start(scenario).await;
    let timeout = Duration::from_millis(800);
    let mut session =
        GrammersTelegram::new(timeout).connect(&account(&server, "alice", None)).await.unwrap();

    let started = Instant::now();
    let outcome = session.join(&link("@rustlovers")).await;
    assert!(started.elapsed() >= timeout);
    match outcome {
        JoinOutcome::InDoubt { reason } => {
            assert!(reason.contains("channels.joinChannel"), "{reason}");
            assert!(reason.contains("no answer within"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let started = Instant::now();
    session.disconnect().await;
    assert!(started.elapsed() <= QUIT_GRACE + Duration::from_secs(1));
    assert_no_live_connection(&server, "alice").await;
}

#[tokio::test]
async fn silence_at_connect_is_a_failed_connection_naming_the_wait() {
    let scenario = scenario().script(Script::on(Trigger::Any).then(Answer::Silence));
    let server = start(scenario).await;
    let result = GrammersTelegram::new(Duration::from_millis(800))
        .connect(&account(&server, "alice", None))
        .await;
    match result.err() {
        Some(ConnectError::Failed(reason)) => assert!(reason.contains("no answer"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_no_live_connection(&server, "alice").await;
}

#[tokio::test]
async fn a_connection_dropped_after_the_join_is_in_doubt_and_a_retry_finds_it_joined() {
    let scenario = scenario()
        .script(Script::join().target("@rustlovers").then(Answer::Drop { after_join: true }));
    let server = start(scenario).await;
    let mut session = connect(&server, "alice").await;
    let outcome = session.join(&link("@rustlovers")).await;
    assert!(matches!(outcome, JoinOutcome::InDoubt { .. }), "{outcome:?}");
    session.disconnect().await;
    assert_eq!(server.members("@rustlovers"), vec!["alice".to_owned()]);
    assert_eq!(joinings(&server, "alice"), 1, "grammers re-sent the join");

    // The in-doubt retry, by the same account, finds the join done.
    let mut session = connect(&server, "alice").await;
    let retry = session.join(&link("@rustlovers")).await;
    assert!(matches!(retry, JoinOutcome::Joined { already: true, .. }), "{retry:?}");
    session.disconnect().await;
}

#[tokio::test]
async fn a_proxy_that_refuses_is_a_failed_connection() {
    let server = start(scenario()).await;
    let proxy = closed_port().await;
    let alice = account(&server, "alice", Some(format!("socks5://user:hunter2@{proxy}")));
    let result = telegram().connect(&alice).await;
    match result.err() {
        Some(ConnectError::Failed(reason)) => {
            assert!(reason.contains("proxy"), "{reason}");
            assert!(!reason.contains("hunter2"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(server.requests_of("alice").is_empty());
}

#[tokio::test]
async fn an_unreachable_dc_is_a_failed_connection() {
    let scenario = scenario();
    let addr = closed_port().await;
    let entries = scenario.accounts_config_json(addr).to_string();
    let alice = AccountsConfig::parse(&entries).unwrap().get("alice").unwrap().clone();
    let result = telegram().connect(&alice).await;
    match result.err() {
        Some(ConnectError::Failed(reason)) => {
            assert!(reason.contains(&format!("could not reach DC 2 at {addr}")), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_dc_that_accepts_but_never_answers_fails_the_connection_and_closes_the_socket() {
    use tokio::io::AsyncReadExt as _;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let entries = scenario().accounts_config_json(addr).to_string();
    let alice = AccountsConfig::parse(&entries).unwrap().get("alice").unwrap().clone();

    let connecting = tokio::spawn(async move {
        GrammersTelegram::new(Duration::from_millis(500)).connect(&alice).await.err()
    });
    // Accept, read what the client sends, never answer.
    let (mut socket, _) = listener.accept().await.unwrap();
    let result = connecting.await.unwrap();
    match result {
        Some(ConnectError::Failed(reason)) => {
            assert!(reason.contains(&format!("no answer from DC 2 at {addr}")), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // The stalled pool ignores quit(); it must have been aborted, closing the connection.
    let mut buf = vec![0u8; 4096];
    let closed = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the client kept the stalled connection open");
}
