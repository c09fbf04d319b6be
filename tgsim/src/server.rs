//! The data centre: accepts TCP connections, speaks MTProto 2.0 over `Full`, answers API calls
//! from the scenario and records what happened.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use grammers_tl_types::{self as tl, Cursor, Deserializable, Identifiable, Serializable};
use tokio::io::AsyncWrite;
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::crypto::{self, AuthKey};
use crate::record::{ConnId, Outcome, Recorder, RequestRecord, Violation};
use crate::scenario::{Answer, Scenario, ScenarioError, Step, Trigger, target_key};
use crate::tl::{self as fx, ids};
use crate::transport::{FrameReader, FrameWriter};

/// How long a new connection waits for an older one with the same key to finish closing
/// before it is called a duplicate (a client that reconnects right after closing races the
/// server noticing the close).
const DUPLICATE_GRACE: Duration = Duration::from_millis(200);

/// Deepest nesting of containers / gzip / invoke wrappers accepted.
const MAX_NESTING: usize = 8;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    #[error("cannot listen: {0}")]
    Bind(#[from] io::Error),
}

/// A running loopback data centre. Dropping it stops it too (without waiting).
pub struct Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// Validates the scenario, binds `listen` (use port 0 in tests) and starts serving on the
    /// current tokio runtime.
    pub async fn start(scenario: Scenario, listen: impl ToSocketAddrs) -> Result<Self, StartError> {
        scenario.validate()?;
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(scenario));
        let cancel = CancellationToken::new();
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared), cancel.clone()));
        tracing::info!(%addr, "tgsim listening");
        Ok(Self { addr, shared, cancel, task: Some(task) })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn scenario(&self) -> &Scenario {
        &self.shared.scenario
    }

    /// Every rule broken so far, in order.
    pub fn violations(&self) -> Vec<Violation> {
        self.shared.lock().log.violations.clone()
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.lock().log.requests.clone()
    }

    /// Requests made with one account's key.
    pub fn requests_of(&self, session_name: &str) -> Vec<RequestRecord> {
        self.shared
            .lock()
            .log
            .requests
            .iter()
            .filter(|r| r.account.as_deref() == Some(session_name))
            .cloned()
            .collect()
    }

    /// Number of requests per method name.
    pub fn counters(&self) -> BTreeMap<String, u64> {
        self.shared.lock().log.counters.clone()
    }

    /// session_names of the members of a group, named by `@username`, `+invitehash`, a link or
    /// its id. Empty for an unknown group.
    pub fn members(&self, group: &str) -> Vec<String> {
        self.accounts_in(group, |st, g| &st.members[g])
    }

    /// session_names with a pending join request or guard-bot check for a group.
    pub fn pending(&self, group: &str) -> Vec<String> {
        self.accounts_in(group, |st, g| &st.pending[g])
    }

    fn accounts_in(
        &self,
        group: &str,
        set: impl Fn(&State, usize) -> &BTreeSet<usize>,
    ) -> Vec<String> {
        let Some(&g) = self.shared.groups_by_key.get(&target_key(group)) else {
            return Vec::new();
        };
        let st = self.shared.lock();
        set(&st, g).iter().map(|&a| self.shared.scenario.accounts[a].session_name.clone()).collect()
    }

    /// Connections currently open with the account's key.
    pub fn live_connections(&self, session_name: &str) -> usize {
        let Some(a) = self.shared.account_index(session_name) else {
            return 0;
        };
        self.shared.lock().accounts[a].live.len()
    }

    /// The Telethon string session of an account, pointing at this server.
    pub fn string_session(&self, session_name: &str) -> Option<String> {
        let a = self.shared.account_index(session_name)?;
        Some(self.shared.scenario.accounts[a].string_session(self.shared.scenario.dc_id, self.addr))
    }

    /// SmartJoiner's accounts_config.json for every account, pointing at this server.
    pub fn accounts_config_json(&self) -> serde_json::Value {
        self.shared.scenario.accounts_config_json(self.addr)
    }

    /// Closes every connection and stops listening.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, cancel: CancellationToken) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let conn = shared.next_conn.fetch_add(1, Ordering::Relaxed) + 1;
                    tracing::debug!(conn, %peer, "connection accepted");
                    connections.spawn(serve_connection(Arc::clone(&shared), stream, conn, cancel.child_token()));
                }
                Err(error) => {
                    // Usually too many open files: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
        while connections.try_join_next().is_some() {}
    }
    connections.shutdown().await;
}

/// The scenario plus everything that changes while serving.
pub(crate) struct Shared {
    scenario: Scenario,
    started: Instant,
    started_wall: SystemTime,
    accounts_by_key: HashMap<u64, usize>,
    groups_by_key: HashMap<String, usize>,
    accounts_by_username: HashMap<String, usize>,
    /// Normalised `target` of each script.
    script_targets: Vec<Option<String>>,
    state: Mutex<State>,
    /// Signalled whenever a connection is deregistered.
    released: Notify,
    next_conn: AtomicU64,
}

struct State {
    accounts: Vec<AccountState>,
    members: Vec<BTreeSet<usize>>,
    pending: Vec<BTreeSet<usize>>,
    cursors: Vec<usize>,
    log: Recorder,
}

#[derive(Default)]
struct AccountState {
    live: Vec<ConnId>,
    /// End of the FloodWait window and the error name it was given under.
    flood: Option<(Instant, &'static str)>,
    /// The key was used from two connections at once: every request gets AUTH_KEY_DUPLICATED.
    killed: bool,
    last_join: Option<Instant>,
}

impl Shared {
    pub(crate) fn new(scenario: Scenario) -> Self {
        let accounts_by_key = scenario
            .accounts
            .iter()
            .enumerate()
            .map(|(i, a)| (AuthKey::new(a.auth_key.0).id_u64(), i))
            .collect();
        let groups_by_key = scenario
            .groups
            .iter()
            .enumerate()
            .flat_map(|(i, g)| g.keys().into_iter().map(move |k| (k, i)))
            .collect();
        let accounts_by_username = scenario
            .accounts
            .iter()
            .enumerate()
            .filter_map(|(i, a)| a.username.as_ref().map(|u| (u.to_lowercase(), i)))
            .collect();
        let script_targets =
            scenario.scripts.iter().map(|s| s.target.as_deref().map(target_key)).collect();
        let state = State {
            accounts: scenario.accounts.iter().map(|_| AccountState::default()).collect(),
            members: vec![BTreeSet::new(); scenario.groups.len()],
            pending: vec![BTreeSet::new(); scenario.groups.len()],
            cursors: vec![0; scenario.scripts.len()],
            log: Recorder::default(),
        };
        Self {
            scenario,
            started: Instant::now(),
            started_wall: SystemTime::now(),
            accounts_by_key,
            groups_by_key,
            accounts_by_username,
            script_targets,
            state: Mutex::new(state),
            released: Notify::new(),
            next_conn: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the log half-written in a way that
        // matters to readers, so keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn account_index(&self, session_name: &str) -> Option<usize> {
        self.scenario.accounts.iter().position(|a| a.session_name == session_name)
    }

    fn record(
        &self,
        st: &mut State,
        conn: ConnId,
        account: Option<usize>,
        method: &str,
        target: Option<String>,
        outcome: Outcome,
    ) {
        let at = self.started.elapsed();
        let a = account.map(|a| &self.scenario.accounts[a]);
        st.log.request(RequestRecord {
            conn,
            account: a.map(|a| a.session_name.clone()),
            user_id: a.map(|a| a.user_id),
            method: method.to_owned(),
            target,
            at,
            wall_time: self.started_wall + at,
            outcome,
        });
    }

    /// Marks `conn` live for the account. Returns false if another connection with the key is
    /// live (after a short grace for one that is closing): a duplicate.
    async fn register(&self, account: usize, conn: ConnId) -> bool {
        let deadline = Instant::now() + DUPLICATE_GRACE;
        loop {
            let released = self.released.notified();
            {
                let mut st = self.lock();
                let live = &mut st.accounts[account].live;
                if live.is_empty() || Instant::now() >= deadline {
                    let first_live = live.first().copied();
                    live.push(conn);
                    if let Some(live_conn) = first_live {
                        if self.scenario.rules.duplicate_kills_key {
                            st.accounts[account].killed = true;
                        }
                        let v = Violation::DuplicateConnection {
                            account: self.scenario.accounts[account].session_name.clone(),
                            live_conn,
                            new_conn: conn,
                            at: self.started.elapsed(),
                        };
                        st.log.violation(v);
                        return false;
                    }
                    return true;
                }
            }
            let _ = tokio::time::timeout_at(deadline, released).await;
        }
    }

    fn deregister(&self, account: usize, conn: ConnId) {
        let mut st = self.lock();
        st.accounts[account].live.retain(|&c| c != conn);
        drop(st);
        self.released.notify_waiters();
    }

    fn unix_now(&self) -> i32 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i32).unwrap_or(0)
    }
}

/// What goes to the connection's writer task.
pub(crate) enum Outgoing {
    Message { session_id: i64, body: Vec<u8>, content_related: bool },
    Close,
}

async fn serve_connection(
    shared: Arc<Shared>,
    stream: TcpStream,
    conn: ConnId,
    cancel: CancellationToken,
) {
    let (rd, wr) = stream.into_split();
    let mut reader = FrameReader::new(rd);
    let mut writer = FrameWriter::new(wr);

    let first = tokio::select! {
        _ = cancel.cancelled() => return,
        packet = reader.read() => match packet {
            Ok(p) => p,
            Err(error) => {
                tracing::debug!(conn, %error, "connection closed before its first packet");
                return;
            }
        },
    };

    let key_id = crypto::packet_key_id(&first).unwrap_or(0);
    let account = shared.accounts_by_key.get(&key_id).copied();
    let registered = account.is_some_and(|a| shared.scenario.accounts[a].registered);
    if !registered {
        // Telegram answers an unknown key with transport error 404; the client then tries a
        // new key exchange (a plain message, key id 0), which tgsim cannot do: 404 again.
        let event = if key_id == 0 { "(key exchange)" } else { "(unknown auth key)" };
        {
            let mut st = shared.lock();
            shared.record(
                &mut st,
                conn,
                account,
                event,
                None,
                Outcome::TransportError { status: 404 },
            );
        }
        let _ = writer.write_error(404).await;
        let _ = writer.shutdown().await;
        return;
    }
    let account = account.expect("registered implies known");
    let refused = !shared.register(account, conn).await;
    let key = AuthKey::new(shared.scenario.accounts[account].auth_key.0);
    tracing::debug!(conn, account = %shared.scenario.accounts[account].session_name, refused, "session started");

    let (tx, rx) = mpsc::unbounded_channel();
    let conn_cancel = cancel.child_token();
    let writer_task = tokio::spawn(write_loop(
        writer,
        key.clone(),
        rx,
        Arc::clone(&shared),
        account,
        conn,
        conn_cancel.clone(),
    ));

    let ctx = Conn { shared: Arc::clone(&shared), account, conn, refused, key, tx };
    let silent_limit = match shared.scenario.rules.silent_disconnect_ms {
        0 => None,
        ms => Some(Duration::from_millis(ms)),
    };
    let mut packet = Some(first);
    while let Some(p) = packet.take() {
        if let Err(error) = ctx.on_packet(&p) {
            tracing::warn!(conn, %error, "bad packet; closing");
            break;
        }
        let next = async {
            match silent_limit {
                Some(limit) => tokio::time::timeout(limit, reader.read()).await.ok(),
                None => Some(reader.read().await),
            }
        };
        tokio::select! {
            _ = conn_cancel.cancelled() => break,
            next = next => match next {
                Some(Ok(p)) => packet = Some(p),
                Some(Err(error)) => tracing::debug!(conn, %error, "connection closed"),
                None => {
                    // The client went silent (a frozen process): closed, as Telegram does.
                    let mut st = shared.lock();
                    shared.record(
                        &mut st,
                        conn,
                        Some(account),
                        "(silent connection closed)",
                        None,
                        Outcome::Dropped { join_applied: false },
                    );
                }
            },
        }
    }
    shared.deregister(account, conn);
    conn_cancel.cancel();
    let _ = writer_task.await;
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut writer: FrameWriter<W>,
    key: AuthKey,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    shared: Arc<Shared>,
    account: usize,
    conn: ConnId,
    cancel: CancellationToken,
) {
    let mut ids = MsgIds::default();
    loop {
        let out = tokio::select! {
            _ = cancel.cancelled() => break,
            out = rx.recv() => match out {
                Some(out) => out,
                None => break,
            },
        };
        match out {
            Outgoing::Message { session_id, body, content_related } => {
                let mut plain = Vec::with_capacity(32 + body.len());
                0i64.serialize(&mut plain); // salt: always 0
                session_id.serialize(&mut plain);
                ids.next_id().serialize(&mut plain);
                ids.next_seq(content_related).serialize(&mut plain);
                (body.len() as i32).serialize(&mut plain);
                plain.extend_from_slice(&body);
                let packet = crypto::encrypt_for_client(&key, &plain);
                if writer.write(&packet).await.is_err() {
                    break;
                }
            }
            Outgoing::Close => {
                // Deregister before the client can see the close and reconnect, so its new
                // connection is not taken for a duplicate.
                shared.deregister(account, conn);
                let _ = writer.shutdown().await;
                break;
            }
        }
    }
    cancel.cancel();
}

/// Server message ids: time-based, increasing, `== 1 (mod 4)` (answers to the client).
#[derive(Default)]
struct MsgIds {
    last: i64,
    seq: i32,
}

impl MsgIds {
    fn next_id(&mut self) -> i64 {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let based = ((now.as_secs() as i64) << 32) | ((now.subsec_nanos() as i64) << 2);
        let mut id = (based & !3) | 1;
        if id <= self.last {
            id = self.last + 4;
        }
        self.last = id;
        id
    }

    fn next_seq(&mut self, content_related: bool) -> i32 {
        if content_related {
            self.seq += 1;
            self.seq * 2 - 1
        } else {
            self.seq * 2
        }
    }
}

/// Malformed input from a client.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PacketError {
    #[error(transparent)]
    Crypto(#[from] crypto::CryptoError),
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    #[error("tl: {0}")]
    Tl(#[from] tl::deserialize::Error),
}

/// One accepted, authenticated connection.
pub(crate) struct Conn {
    shared: Arc<Shared>,
    account: usize,
    conn: ConnId,
    /// A duplicate connection: everything gets 406 AUTH_KEY_DUPLICATED.
    refused: bool,
    key: AuthKey,
    tx: mpsc::UnboundedSender<Outgoing>,
}

/// The decided answer to one API call.
enum Reply {
    Result(Vec<u8>),
    Error(i32, String),
    Close { join_applied: bool },
    Silence,
}

/// A parsed API call.
enum Call {
    GetConfig,
    GetState,
    GetDifference { pts: i32 },
    GetChannelDifference(tl::enums::InputChannel),
    GetNearestDc,
    GetAppConfig,
    GetUsers(Vec<tl::enums::InputUser>),
    Resolve(String),
    JoinChannel(tl::enums::InputChannel),
    ImportInvite(String),
    CheckInvite(String),
    CheckChatlist(String),
    Unsupported,
}

impl Conn {
    /// A connection of `account` that is not attached to a socket: what it sends goes to `tx`.
    pub(crate) fn for_fuzzing(
        shared: Arc<Shared>,
        account: usize,
        key: AuthKey,
        tx: mpsc::UnboundedSender<Outgoing>,
    ) -> Self {
        Self { shared, account, conn: 1, refused: false, key, tx }
    }

    pub(crate) fn on_packet(&self, packet: &[u8]) -> Result<(), PacketError> {
        let plain = crypto::decrypt_from_client(&self.key, packet)?;
        let mut c = Cursor::from_slice(&plain);
        let _salt = i64::deserialize(&mut c)?;
        let session_id = i64::deserialize(&mut c)?;
        let msg_id = i64::deserialize(&mut c)?;
        let _seq_no = i32::deserialize(&mut c)?;
        let len = i32::deserialize(&mut c)?;
        let start = c.pos();
        let body = usize::try_from(len)
            .ok()
            .and_then(|len| plain.get(start..start + len))
            .ok_or(PacketError::Malformed("message length past the end"))?;
        self.on_message(session_id, msg_id, body, 0)
    }

    fn send(&self, session_id: i64, body: Vec<u8>, content_related: bool) {
        let _ = self.tx.send(Outgoing::Message { session_id, body, content_related });
    }

    fn on_message(
        &self,
        session_id: i64,
        msg_id: i64,
        body: &[u8],
        depth: usize,
    ) -> Result<(), PacketError> {
        if depth > MAX_NESTING {
            return Err(PacketError::Malformed("nested too deep"));
        }
        let mut c = Cursor::from_slice(body);
        let id = u32::deserialize(&mut c)?;
        match id {
            ids::MSG_CONTAINER => {
                let count = i32::deserialize(&mut c)?;
                for _ in 0..count {
                    let inner_id = i64::deserialize(&mut c)?;
                    let _seq = i32::deserialize(&mut c)?;
                    let len = i32::deserialize(&mut c)?;
                    let start = c.pos();
                    let inner = usize::try_from(len)
                        .ok()
                        .and_then(|len| body.get(start..start + len))
                        .ok_or(PacketError::Malformed("container item past the end"))?;
                    self.on_message(session_id, inner_id, inner, depth + 1)?;
                    let mut skip = vec![0; inner.len()];
                    c.read_exact(&mut skip)?;
                }
                Ok(())
            }
            ids::GZIP_PACKED => {
                let packed = Vec::<u8>::deserialize(&mut c)?;
                let unpacked = gunzip(&packed)?;
                self.on_message(session_id, msg_id, &unpacked, depth + 1)
            }
            ids::MSGS_ACK | ids::MSGS_STATE_REQ | ids::HTTP_WAIT => Ok(()),
            ids::PING => {
                let ping_id = i64::deserialize(&mut c)?;
                self.send(session_id, fx::pong(msg_id, ping_id), false);
                Ok(())
            }
            ids::PING_DELAY_DISCONNECT => {
                let ping_id = i64::deserialize(&mut c)?;
                self.send(session_id, fx::pong(msg_id, ping_id), false);
                Ok(())
            }
            ids::GET_FUTURE_SALTS => {
                let num = i32::deserialize(&mut c)?;
                let now = self.shared.unix_now();
                self.send(session_id, fx::future_salts(msg_id, now, num.clamp(2, 64)), false);
                Ok(())
            }
            ids::DESTROY_SESSION => {
                let sid = i64::deserialize(&mut c)?;
                self.send(session_id, fx::rpc_result(msg_id, &fx::destroy_session_none(sid)), true);
                Ok(())
            }
            ids::RPC_DROP_ANSWER => {
                self.send(session_id, fx::rpc_result(msg_id, &fx::rpc_answer_unknown()), true);
                Ok(())
            }
            _ => {
                self.on_call(session_id, msg_id, body);
                Ok(())
            }
        }
    }

    /// An API call: unwrap invokeWithLayer / initConnection / invokeWithoutUpdates /
    /// invokeAfterMsg by hand (generic functions do not deserialize), then answer the query.
    fn on_call(&self, session_id: i64, msg_id: i64, body: &[u8]) {
        let (method_id, args) = match unwrap_query(body) {
            Ok(x) => x,
            Err(_) => {
                self.reply(session_id, msg_id, Reply::Error(400, "INPUT_FETCH_ERROR".into()), 0);
                return;
            }
        };
        let call = parse_call(method_id, args);
        let (reply, delay_ms) = self.decide(method_id, call);
        self.reply(session_id, msg_id, reply, delay_ms);
    }

    fn reply(&self, session_id: i64, msg_id: i64, reply: Reply, delay_ms: u64) {
        let out = match reply {
            Reply::Result(bytes) => Outgoing::Message {
                session_id,
                body: fx::rpc_result(msg_id, &bytes),
                content_related: true,
            },
            Reply::Error(code, message) => Outgoing::Message {
                session_id,
                body: fx::rpc_result(msg_id, &fx::rpc_error(code, &message)),
                content_related: true,
            },
            Reply::Close { .. } => Outgoing::Close,
            Reply::Silence => return,
        };
        if delay_ms == 0 {
            let _ = self.tx.send(out);
        } else {
            let tx = self.tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                let _ = tx.send(out);
            });
        }
    }

    /// Decides the answer to one call and records it (all under the state lock).
    fn decide(&self, method_id: u32, call: Result<Call, ()>) -> (Reply, u64) {
        let shared = &*self.shared;
        let method = tl::name_for_id(method_id);
        let method = if method == "(unknown)" {
            format!("(unknown {method_id:08x})")
        } else {
            method.to_owned()
        };
        let now = Instant::now();
        let acc = self.account;
        let account = &shared.scenario.accounts[acc];
        let mut st = shared.lock();

        let (call, target_keys, group) = match call {
            Ok(call) => {
                let (keys, group) = shared.target_of(&call);
                (call, keys, group)
            }
            Err(()) => {
                let reply = Reply::Error(400, "INPUT_FETCH_ERROR".into());
                shared.record(&mut st, self.conn, Some(acc), &method, None, outcome_of(&reply));
                return (reply, 0);
            }
        };
        let target = target_keys.first().cloned();
        let is_config = matches!(call, Call::GetConfig);
        let is_join = matches!(call, Call::JoinChannel(_) | Call::ImportInvite(_));

        let mut delay_ms = 0;
        let reply = 'reply: {
            if self.refused || st.accounts[acc].killed {
                break 'reply Reply::Error(406, "AUTH_KEY_DUPLICATED".into());
            }
            if !account.authorized && !is_config {
                break 'reply Reply::Error(401, "AUTH_KEY_UNREGISTERED".into());
            }
            if !is_config && let Some((until, name)) = st.accounts[acc].flood {
                if until > now {
                    let remaining = until - now;
                    st.log.violation(Violation::RequestDuringFloodWait {
                        account: account.session_name.clone(),
                        conn: self.conn,
                        method: method.clone(),
                        at: shared.started.elapsed(),
                        remaining,
                    });
                    let secs = remaining.as_millis().div_ceil(1000);
                    break 'reply Reply::Error(420, format!("{name}_{secs}"));
                }
                st.accounts[acc].flood = None;
            }
            if is_join {
                let secs = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| (d.as_secs() % 86_400) as u32)
                    .unwrap_or(0);
                if !account.in_active_hours(secs) {
                    st.log.violation(Violation::JoinOutsideActiveHours {
                        account: account.session_name.clone(),
                        conn: self.conn,
                        method: method.clone(),
                        at: shared.started.elapsed(),
                        utc: format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60),
                    });
                }
            }
            if is_join && account.frozen.is_some() {
                break 'reply Reply::Error(420, "FROZEN_METHOD_INVALID".into());
            }
            if is_join {
                let min = Duration::from_millis(shared.scenario.rules.min_join_pause_ms);
                if let Some(last) = st.accounts[acc].last_join
                    && !min.is_zero()
                    && now - last < min
                {
                    st.log.violation(Violation::JoinTooSoon {
                        account: account.session_name.clone(),
                        conn: self.conn,
                        method: method.clone(),
                        at: shared.started.elapsed(),
                        since_previous: now - last,
                        min_pause: min,
                    });
                }
            }
            let trigger = match call {
                Call::JoinChannel(_) | Call::ImportInvite(_) => Some(Trigger::Join),
                Call::Resolve(_) => Some(Trigger::Resolve),
                Call::CheckInvite(_) => Some(Trigger::CheckInvite),
                Call::GetConfig => None,
                _ => Some(Trigger::Any),
            };
            let step = match trigger {
                Some(t) => shared.next_step(&mut st, acc, t, &target_keys),
                None => None,
            };
            let Step { answer, delay_ms: d } = step.unwrap_or_else(|| Answer::Ok.into());
            delay_ms = d;
            shared.apply(&mut st, acc, &call, group, &answer, is_join, now)
        };
        shared.record(&mut st, self.conn, Some(acc), &method, target, outcome_of(&reply));
        (reply, delay_ms)
    }
}

fn outcome_of(reply: &Reply) -> Outcome {
    match reply {
        Reply::Result(bytes) => {
            let id = bytes
                .get(..4)
                .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
                .unwrap_or(0);
            Outcome::Result { constructor: tl::name_for_id(id).to_owned() }
        }
        Reply::Error(code, message) => Outcome::RpcError { code: *code, message: message.clone() },
        Reply::Close { join_applied } => Outcome::Dropped { join_applied: *join_applied },
        Reply::Silence => Outcome::Silence,
    }
}

impl Shared {
    /// The target keys of a call (`@name`, `+hash`, id) and the group it is about, if known.
    fn target_of(&self, call: &Call) -> (Vec<String>, Option<usize>) {
        let key = match call {
            Call::Resolve(name) => format!("@{}", name.to_lowercase()),
            Call::ImportInvite(hash) | Call::CheckInvite(hash) => format!("+{hash}"),
            Call::JoinChannel(tl::enums::InputChannel::Channel(c)) => c.channel_id.to_string(),
            Call::JoinChannel(tl::enums::InputChannel::FromMessage(c)) => c.channel_id.to_string(),
            Call::GetChannelDifference(tl::enums::InputChannel::Channel(c)) => {
                c.channel_id.to_string()
            }
            Call::GetChannelDifference(tl::enums::InputChannel::FromMessage(c)) => {
                c.channel_id.to_string()
            }
            _ => return (Vec::new(), None),
        };
        match self.groups_by_key.get(&key) {
            Some(&g) => {
                let mut keys = self.scenario.groups[g].keys();
                // The key the client used first: it is the one recorded.
                keys.retain(|k| k != &key);
                keys.insert(0, key);
                (keys, Some(g))
            }
            None => (vec![key], None),
        }
    }

    /// The next scripted step for a request, from the most specific matching script.
    fn next_step(
        &self,
        st: &mut State,
        acc: usize,
        trigger: Trigger,
        keys: &[String],
    ) -> Option<Step> {
        let name = &self.scenario.accounts[acc].session_name;
        let mut best: Option<(u8, usize)> = None;
        for (i, script) in self.scenario.scripts.iter().enumerate() {
            if script.on != Trigger::Any && script.on != trigger {
                continue;
            }
            if script.account.as_ref().is_some_and(|a| a != name) {
                continue;
            }
            if let Some(t) = &self.script_targets[i]
                && !keys.contains(t)
            {
                continue;
            }
            let specificity =
                2 * u8::from(script.target.is_some()) + u8::from(script.account.is_some());
            if best.is_none_or(|(b, _)| specificity > b) {
                best = Some((specificity, i));
            }
        }
        let (_, i) = best?;
        let answers = &self.scenario.scripts[i].answers;
        let step = answers[st.cursors[i].min(answers.len() - 1)].clone();
        st.cursors[i] += 1;
        Some(step)
    }

    /// Applies an answer to a call: state changes and the reply.
    #[allow(clippy::too_many_arguments)]
    fn apply(
        &self,
        st: &mut State,
        acc: usize,
        call: &Call,
        group: Option<usize>,
        answer: &Answer,
        is_join: bool,
        now: Instant,
    ) -> Reply {
        match answer {
            Answer::FloodWait { seconds } | Answer::FloodPremiumWait { seconds } => {
                let name = if matches!(answer, Answer::FloodWait { .. }) {
                    "FLOOD_WAIT"
                } else {
                    "FLOOD_PREMIUM_WAIT"
                };
                st.accounts[acc].flood =
                    Some((now + Duration::from_secs(u64::from(*seconds)), name));
                Reply::Error(420, format!("{name}_{seconds}"))
            }
            Answer::Drop { after_join } => {
                let join_applied = *after_join
                    && is_join
                    && group.is_some_and(|g| {
                        if st.members[g].contains(&acc) {
                            return false;
                        }
                        self.join(st, acc, g, now);
                        true
                    });
                Reply::Close { join_applied }
            }
            Answer::Silence => Reply::Silence,
            Answer::Ok => self.normal(st, acc, call, group, now),
            Answer::AlreadyParticipant | Answer::JoinRequest | Answer::WebView { .. }
                if !is_join =>
            {
                self.normal(st, acc, call, group, now)
            }
            Answer::AlreadyParticipant => {
                if let Some(g) = group {
                    st.members[g].insert(acc);
                    st.pending[g].remove(&acc);
                }
                Reply::Error(400, "USER_ALREADY_PARTICIPANT".into())
            }
            Answer::JoinRequest => {
                if let Some(g) = group {
                    st.pending[g].insert(acc);
                }
                st.accounts[acc].last_join = Some(now);
                Reply::Error(400, "INVITE_REQUEST_SENT".into())
            }
            Answer::WebView { bot_id } => {
                if let Some(g) = group {
                    st.pending[g].insert(acc);
                }
                st.accounts[acc].last_join = Some(now);
                Reply::Result(fx::join_web_view(*bot_id, rand::random()).to_bytes())
            }
            other => {
                let (code, message) =
                    other.rpc_error().expect("every remaining answer is an RPC error");
                Reply::Error(code, message)
            }
        }
    }

    fn join(&self, st: &mut State, acc: usize, g: usize, now: Instant) {
        st.members[g].insert(acc);
        st.pending[g].remove(&acc);
        st.accounts[acc].last_join = Some(now);
    }

    fn channel_for(&self, st: &State, acc: usize, g: usize) -> tl::enums::Chat {
        let group = &self.scenario.groups[g];
        let user_id = self.scenario.accounts[acc].user_id;
        fx::channel(
            group,
            group.access_hash_for(user_id),
            st.members[g].contains(&acc),
            self.unix_now(),
        )
    }

    /// What a healthy data centre answers.
    fn normal(
        &self,
        st: &mut State,
        acc: usize,
        call: &Call,
        group: Option<usize>,
        now: Instant,
    ) -> Reply {
        let account = &self.scenario.accounts[acc];
        let unix = self.unix_now();
        match call {
            Call::GetConfig => Reply::Result(fx::config(self.scenario.dc_id, unix).to_bytes()),
            Call::GetState => Reply::Result(fx::updates_state(unix).to_bytes()),
            // Nothing ever happens in an account's update stream: a client at the state
            // getState gave is told so; one elsewhere gets an empty difference that carries
            // the state to move to.
            Call::GetDifference { pts } => Reply::Result(fx::difference(*pts, unix).to_bytes()),
            Call::GetChannelDifference(_) => match group {
                Some(g) if st.members[g].contains(&acc) => {
                    Reply::Result(fx::channel_difference_empty().to_bytes())
                }
                Some(_) => Reply::Error(400, "CHANNEL_PRIVATE".into()),
                None => Reply::Error(400, "CHANNEL_INVALID".into()),
            },
            Call::GetNearestDc => Reply::Result(fx::nearest_dc(self.scenario.dc_id).to_bytes()),
            Call::GetAppConfig => {
                Reply::Result(fx::app_config(&self.scenario.app_config, account).to_bytes())
            }
            Call::GetUsers(ids) => {
                let users: Vec<tl::enums::User> = ids
                    .iter()
                    .filter_map(|input| match input {
                        tl::enums::InputUser::UserSelf => Some(fx::self_user(account)),
                        tl::enums::InputUser::User(u) if u.user_id == account.user_id => {
                            Some(fx::self_user(account))
                        }
                        tl::enums::InputUser::User(u) => {
                            self.scenario.accounts.iter().find(|a| a.user_id == u.user_id).map(
                                |a| {
                                    fx::user(
                                        a.user_id,
                                        a.user_id ^ account.user_id,
                                        &a.first_name,
                                        a.username.as_deref(),
                                        false,
                                    )
                                },
                            )
                        }
                        _ => None,
                    })
                    .collect();
                Reply::Result(users.to_bytes())
            }
            Call::Resolve(name) => {
                if let Some(g) = group {
                    let chat = self.channel_for(st, acc, g);
                    return Reply::Result(
                        fx::resolved_channel(chat, self.scenario.groups[g].id).to_bytes(),
                    );
                }
                match self.accounts_by_username.get(&name.to_lowercase()) {
                    Some(&other) => {
                        let o = &self.scenario.accounts[other];
                        let user = fx::user(
                            o.user_id,
                            o.user_id ^ account.user_id,
                            &o.first_name,
                            o.username.as_deref(),
                            other == acc,
                        );
                        let resolved = tl::enums::contacts::ResolvedPeer::Peer(
                            tl::types::contacts::ResolvedPeer {
                                peer: tl::enums::Peer::User(tl::types::PeerUser {
                                    user_id: o.user_id,
                                }),
                                chats: Vec::new(),
                                users: vec![user],
                            },
                        );
                        Reply::Result(resolved.to_bytes())
                    }
                    None => Reply::Error(400, "USERNAME_NOT_OCCUPIED".into()),
                }
            }
            Call::JoinChannel(input) => {
                let Some(g) = group else {
                    return Reply::Error(400, "CHANNEL_INVALID".into());
                };
                let tl::enums::InputChannel::Channel(c) = input else {
                    return Reply::Error(400, "CHANNEL_INVALID".into());
                };
                if c.access_hash != self.scenario.groups[g].access_hash_for(account.user_id) {
                    return Reply::Error(400, "CHANNEL_INVALID".into());
                }
                self.normal_join(st, acc, g, now)
            }
            Call::ImportInvite(_) => match group {
                Some(g) => self.normal_join(st, acc, g, now),
                None => Reply::Error(400, "INVITE_HASH_INVALID".into()),
            },
            Call::CheckInvite(_) => match group {
                Some(g) if st.members[g].contains(&acc) => {
                    let chat = self.channel_for(st, acc, g);
                    Reply::Result(fx::chat_invite_already(chat).to_bytes())
                }
                Some(g) => {
                    let count = st.members[g].len() as i32;
                    Reply::Result(fx::chat_invite(&self.scenario.groups[g], count).to_bytes())
                }
                None => Reply::Error(400, "INVITE_HASH_INVALID".into()),
            },
            Call::CheckChatlist(slug) if slug.is_empty() => {
                Reply::Error(400, "INVITE_SLUG_EMPTY".into())
            }
            Call::CheckChatlist(slug) => {
                let Some(folder) = self.scenario.folders.iter().find(|f| &f.slug == slug) else {
                    return Reply::Error(400, "INVITE_SLUG_EXPIRED".into());
                };
                let groups: Vec<usize> = folder
                    .groups
                    .iter()
                    .filter_map(|id| self.scenario.groups.iter().position(|g| g.id == *id))
                    .collect();
                let chats = groups.iter().map(|&g| self.channel_for(st, acc, g)).collect();
                Reply::Result(
                    fx::chatlist_invite(&folder.title, &self.scenario.groups, &groups, chats)
                        .to_bytes(),
                )
            }
            Call::Unsupported => Reply::Error(400, "INPUT_METHOD_INVALID".into()),
        }
    }

    fn normal_join(&self, st: &mut State, acc: usize, g: usize, now: Instant) -> Reply {
        if st.members[g].contains(&acc) {
            return Reply::Error(400, "USER_ALREADY_PARTICIPANT".into());
        }
        if self.scenario.groups[g].request_needed {
            st.pending[g].insert(acc);
            st.accounts[acc].last_join = Some(now);
            return Reply::Error(400, "INVITE_REQUEST_SENT".into());
        }
        self.join(st, acc, g, now);
        let chat = self.channel_for(st, acc, g);
        Reply::Result(fx::join_ok(chat, self.unix_now()).to_bytes())
    }
}

/// Strips the invoke wrappers grammers (and other clients) put around a query and returns the
/// query's constructor id and its arguments.
fn unwrap_query(body: &[u8]) -> Result<(u32, &[u8]), tl::deserialize::Error> {
    let mut body = body;
    for _ in 0..MAX_NESTING {
        let mut c = Cursor::from_slice(body);
        let id = u32::deserialize(&mut c)?;
        match id {
            ids::INVOKE_WITH_LAYER => {
                let _layer = i32::deserialize(&mut c)?;
            }
            ids::INIT_CONNECTION => {
                let flags = u32::deserialize(&mut c)?;
                let _api_id = i32::deserialize(&mut c)?;
                for _ in 0..6 {
                    // device_model, system_version, app_version, system_lang_code, lang_pack,
                    // lang_code
                    let _ = String::deserialize(&mut c)?;
                }
                if flags & 1 != 0 {
                    let _ = tl::enums::InputClientProxy::deserialize(&mut c)?;
                }
                if flags & 2 != 0 {
                    let _ = tl::enums::Jsonvalue::deserialize(&mut c)?;
                }
            }
            ids::INVOKE_WITHOUT_UPDATES => {}
            ids::INVOKE_AFTER_MSG => {
                let _msg_id = i64::deserialize(&mut c)?;
            }
            _ => return Ok((id, &body[4..])),
        }
        body = &body[c.pos()..];
    }
    Err(tl::deserialize::Error::UnexpectedEof)
}

fn parse_call(method_id: u32, args: &[u8]) -> Result<Call, ()> {
    use tl::functions as f;
    let call = match method_id {
        f::help::GetConfig::CONSTRUCTOR_ID => Call::GetConfig,
        f::updates::GetState::CONSTRUCTOR_ID => Call::GetState,
        f::updates::GetDifference::CONSTRUCTOR_ID => Call::GetDifference {
            pts: f::updates::GetDifference::from_bytes(args).map_err(drop)?.pts,
        },
        f::updates::GetChannelDifference::CONSTRUCTOR_ID => Call::GetChannelDifference(
            f::updates::GetChannelDifference::from_bytes(args).map_err(drop)?.channel,
        ),
        f::help::GetNearestDc::CONSTRUCTOR_ID => Call::GetNearestDc,
        f::help::GetAppConfig::CONSTRUCTOR_ID => Call::GetAppConfig,
        f::users::GetUsers::CONSTRUCTOR_ID => {
            Call::GetUsers(f::users::GetUsers::from_bytes(args).map_err(drop)?.id)
        }
        f::contacts::ResolveUsername::CONSTRUCTOR_ID => {
            Call::Resolve(f::contacts::ResolveUsername::from_bytes(args).map_err(drop)?.username)
        }
        f::channels::JoinChannel::CONSTRUCTOR_ID => {
            Call::JoinChannel(f::channels::JoinChannel::from_bytes(args).map_err(drop)?.channel)
        }
        f::messages::ImportChatInvite::CONSTRUCTOR_ID => {
            Call::ImportInvite(f::messages::ImportChatInvite::from_bytes(args).map_err(drop)?.hash)
        }
        f::messages::CheckChatInvite::CONSTRUCTOR_ID => {
            Call::CheckInvite(f::messages::CheckChatInvite::from_bytes(args).map_err(drop)?.hash)
        }
        f::chatlists::CheckChatlistInvite::CONSTRUCTOR_ID => Call::CheckChatlist(
            f::chatlists::CheckChatlistInvite::from_bytes(args).map_err(drop)?.slug,
        ),
        _ => Call::Unsupported,
    };
    Ok(call)
}

fn gunzip(data: &[u8]) -> Result<Vec<u8>, PacketError> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .take(crate::transport::MAX_PACKET as u64 * 4)
        .read_to_end(&mut out)
        .map_err(|_| PacketError::Malformed("bad gzip_packed"))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{Account, Group};

    fn conn() -> (Conn, mpsc::UnboundedReceiver<Outgoing>) {
        let scenario = Scenario::new()
            .account(Account::new("alice", 1001))
            .group(Group::new(5001, "G").username("g"));
        let key = AuthKey::new(scenario.accounts[0].auth_key.0);
        let (tx, rx) = mpsc::unbounded_channel();
        let conn = Conn {
            shared: Arc::new(Shared::new(scenario)),
            account: 0,
            conn: 1,
            refused: false,
            key,
            tx,
        };
        (conn, rx)
    }

    fn message(msg_id: i64, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        msg_id.serialize(&mut out);
        1i32.serialize(&mut out);
        (body.len() as i32).serialize(&mut out);
        out.extend_from_slice(body);
        out
    }

    fn bodies(rx: &mut mpsc::UnboundedReceiver<Outgoing>) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Ok(Outgoing::Message { body, .. }) = rx.try_recv() {
            out.push(body);
        }
        out
    }

    #[test]
    fn a_container_with_ack_ping_and_gzipped_init_connection_is_answered() {
        use std::io::Write;
        let (conn, mut rx) = conn();

        let init = tl::functions::InvokeWithLayer {
            layer: tl::LAYER,
            query: tl::functions::InitConnection {
                api_id: 1,
                device_model: "d".into(),
                system_version: "s".into(),
                app_version: "a".into(),
                system_lang_code: "en".into(),
                lang_pack: "".into(),
                lang_code: "en".into(),
                proxy: None,
                params: Some(tl::enums::Jsonvalue::JsonNull),
                query: tl::functions::help::GetConfig {},
            },
        }
        .to_bytes();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&init).unwrap();
        let mut gzip = Vec::new();
        ids::GZIP_PACKED.serialize(&mut gzip);
        gz.finish().unwrap().serialize(&mut gzip);

        let mut ack = Vec::new();
        ids::MSGS_ACK.serialize(&mut ack);
        vec![5i64].serialize(&mut ack);
        let mut ping = Vec::new();
        ids::PING.serialize(&mut ping);
        99i64.serialize(&mut ping);

        let mut container = Vec::new();
        ids::MSG_CONTAINER.serialize(&mut container);
        3i32.serialize(&mut container);
        container.extend(message(100, &ack));
        container.extend(message(104, &ping));
        container.extend(message(108, &gzip));

        conn.on_message(7, 112, &container, 0).unwrap();
        let out = bodies(&mut rx);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], fx::pong(104, 99));
        assert_eq!(&out[1][..12], &fx::rpc_result(108, &[])[..]);
        let config = tl::enums::Config::from_bytes(&out[1][12..]).unwrap();
        let tl::enums::Config::Config(config) = config;
        assert!(config.dc_options.is_empty());
        assert_eq!(conn.shared.lock().log.requests[0].method, "help.getConfig");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let (conn, mut rx) = conn();
        for body in [&[][..], &[1, 2, 3], &[0xdc, 0xf8, 0xf1, 0x73, 9, 0, 0, 0]] {
            let _ = conn.on_message(1, 4, body, 0);
        }
        // A known method with truncated arguments is answered INPUT_FETCH_ERROR.
        let mut body = Vec::new();
        tl::functions::channels::JoinChannel::CONSTRUCTOR_ID.serialize(&mut body);
        conn.on_message(1, 8, &body, 0).unwrap();
        let out = bodies(&mut rx);
        assert_eq!(out.last().unwrap()[12..], fx::rpc_error(400, "INPUT_FETCH_ERROR")[..]);
    }
}
