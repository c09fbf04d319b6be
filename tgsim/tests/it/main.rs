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
