//! Postgres: the join's own statements (the pick, the take, the gate and the decision) on
//! connections of their own, outside sqlx's pool.
//!
//! sqlx's pool sends a round trip of its own (a Sync, answered by ReadyForQuery) on every
//! connection handed back to it, to find a connection a cancelled caller left mid-statement.
//! A join hands a connection back four times, so half of the round trips a worker made to
//! Postgres were those checks, each waking a backend and a worker task. On this project's
//! benchmark machine they cost about a sixth of a join's CPU (BENCHMARKS.md, session 11).
//!
//! The lane keeps that safety without the round trip: a connection goes back to the lane only
//! when its statement finished (with rows or with an error Postgres answered; either leaves
//! the connection ready for the next). A statement whose caller was dropped half way, or that
//! failed on the wire, drops its connection instead. A connection idle longer than
//! `PG_PING_IF_IDLE_FOR` is checked before use, as the pool checks its own.
//!
//! Every statement here is one statement in autocommit, never a transaction, so there is no
//! rollback to flush. The lane opens its connections as they are needed, up to
//! [`Lane::new`]'s `max` beside the pool's (`PG_LANE_CONNECTIONS`), and a connect that finds
//! the server away is tried again until the acquire timeout, as the pool does.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sea_orm::sqlx::postgres::{PgConnectOptions, PgConnection};
use sea_orm::sqlx::{self, ConnectOptions as _, Connection as _};
use sea_orm::{ConnAcquireErr, ConnectionTrait as _, DbErr, QueryResult, RuntimeErr, Statement};
use sea_query_sqlx::SqlxValues;
use tokio::sync::{Semaphore, SemaphorePermit};

/// The first pause before a failed connect is tried again; each next one is twice as long,
/// up to [`CONNECT_RETRY_MAX`].
const CONNECT_RETRY_FIRST: Duration = Duration::from_millis(10);
const CONNECT_RETRY_MAX: Duration = Duration::from_secs(1);
/// Postgres' `too_many_connections`: `max_connections` is reached.
const TOO_MANY_CONNECTIONS: &str = "53300";
/// An idle connection is closed after this long (sqlx's pool default).
const IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// A connection is closed after this long open, so a backend's caches do not grow for ever
/// (sqlx's pool default).
const MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);

/// What the store's observer is told of each statement (see `Store::observed`).
pub(super) type Observer = Arc<dyn Fn(&sea_orm::metric::Info<'_>) + Send + Sync>;

/// The connections of the lane, and the options to open more.
pub(super) struct Lane {
    options: PgConnectOptions,
    idle: Mutex<Vec<Idle>>,
    slots: Semaphore,
    connect_timeout: Duration,
    acquire_timeout: Duration,
}

struct Idle {
    conn: PgConnection,
    /// When it was handed back.
    since: Instant,
    /// When it was opened.
    born: Instant,
}

/// One statement's connection. Dropped, it goes back to the lane only if `keep` says its
/// statement ended cleanly; otherwise it is closed.
struct Held<'a> {
    lane: &'a Lane,
    conn: Option<PgConnection>,
    born: Instant,
    keep: bool,
    _permit: SemaphorePermit<'a>,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        if self.keep && !self.lane.slots.is_closed() && self.born.elapsed() < MAX_LIFETIME {
            let mut idle = self.lane.idle.lock().unwrap_or_else(|p| p.into_inner());
            idle.push(Idle { conn, since: Instant::now(), born: self.born });
        }
    }
}

/// Class 08 (connection exception) and 57P0x (the server shutting down, or this backend
/// terminated): the session is over even though Postgres answered.
fn ends_the_session(code: &str) -> bool {
    code.starts_with("08") || code.starts_with("57P0")
}

impl std::fmt::Debug for Lane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let idle = self.idle.lock().map_or(0, |idle| idle.len());
        f.debug_struct("Lane").field("idle", &idle).finish_non_exhaustive()
    }
}

impl Lane {
    /// A lane to `url` of at most `max` connections, none open yet. `url` has been parsed and
    /// connected to before (the store's first connection), so this does not fail on it again;
    /// an error is the parser's text.
    pub(super) fn new(
        url: &str,
        max: usize,
        connect_timeout: Duration,
        acquire_timeout: Duration,
    ) -> Result<Lane, String> {
        let options: PgConnectOptions =
            url.parse().map_err(|e: sqlx::Error| crate::redact::flatten(&e))?;
        Ok(Lane {
            // As the pool's connections: statements are not logged by the driver.
            options: options.disable_statement_logging(),
            idle: Mutex::new(Vec::new()),
            slots: Semaphore::new(max),
            connect_timeout,
            acquire_timeout,
        })
    }

    /// Runs `stmt` and returns its rows.
    pub(super) async fn query_all(
        &self,
        stmt: &Statement,
        observer: Option<&Observer>,
    ) -> Result<Vec<QueryResult>, DbErr> {
        let rows = self.run(stmt, observer, DbErr::Query, async |c| query(stmt).fetch_all(c).await);
        Ok(rows.await?.into_iter().map(QueryResult::from).collect())
    }

    /// Runs `stmt` and returns its first row, if any.
    pub(super) async fn query_one(
        &self,
        stmt: &Statement,
        observer: Option<&Observer>,
    ) -> Result<Option<QueryResult>, DbErr> {
        let row =
            self.run(stmt, observer, DbErr::Query, async |c| query(stmt).fetch_optional(c).await);
        Ok(row.await?.map(QueryResult::from))
    }

    /// Runs `stmt` and returns how many rows it changed.
    pub(super) async fn execute(
        &self,
        stmt: &Statement,
        observer: Option<&Observer>,
    ) -> Result<u64, DbErr> {
        let done = self.run(stmt, observer, DbErr::Exec, async |c| query(stmt).execute(c).await);
        Ok(done.await?.rows_affected())
    }

    /// Runs `op` (`stmt` on a connection of the lane) and tells `observer` about it, as
    /// sea-orm tells the observer of the pool's statements. `kind` wraps a driver error as
    /// sea-orm would for the same call.
    async fn run<T>(
        &self,
        stmt: &Statement,
        observer: Option<&Observer>,
        kind: fn(RuntimeErr) -> DbErr,
        op: impl AsyncFnOnce(&mut PgConnection) -> Result<T, sqlx::Error>,
    ) -> Result<T, DbErr> {
        let started = observer.map(|_| std::time::SystemTime::now());
        let result = self.run_unobserved(kind, op).await;
        if let (Some(started), Some(observe)) = (started, observer) {
            observe(&sea_orm::metric::Info {
                elapsed: started.elapsed().unwrap_or_default(),
                statement: stmt,
                failed: result.is_err(),
            });
        }
        result
    }

    async fn run_unobserved<T>(
        &self,
        kind: fn(RuntimeErr) -> DbErr,
        op: impl AsyncFnOnce(&mut PgConnection) -> Result<T, sqlx::Error>,
    ) -> Result<T, DbErr> {
        let mut held = self.checkout().await?;
        let conn = held.conn.as_mut().expect("a checked-out connection is there until dropped");
        let result = op(conn).await;
        // Rows, or an error Postgres answered, leave the connection ready for the next
        // statement; anything else (the wire, a backend shutting down) leaves it in doubt.
        held.keep = match &result {
            Ok(_) => true,
            Err(sqlx::Error::Database(e)) => !e.code().is_some_and(|c| ends_the_session(&c)),
            Err(_) => false,
        };
        result.map_err(|e| kind(RuntimeErr::SqlxError(Arc::new(e))))
    }

    /// A connection for one statement: an idle one (pinged first when it has been idle long),
    /// else a new one while the lane has room, else the first one handed back.
    async fn checkout(&self) -> Result<Held<'_>, DbErr> {
        let started = Instant::now();
        let permit = match tokio::time::timeout(self.acquire_timeout, self.slots.acquire()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed)),
            Err(_) => return Err(DbErr::ConnectionAcquire(ConnAcquireErr::Timeout)),
        };
        while let Some(Idle { mut conn, since, born }) = self.pop_idle() {
            if since.elapsed() < super::PG_PING_IF_IDLE_FOR || conn.ping().await.is_ok() {
                return Ok(Held {
                    lane: self,
                    conn: Some(conn),
                    born,
                    keep: false,
                    _permit: permit,
                });
            }
        }
        let conn = self.connect(started).await?;
        Ok(Held {
            lane: self,
            conn: Some(conn),
            born: Instant::now(),
            keep: false,
            _permit: permit,
        })
    }

    /// A new connection. A server that is not there for a moment (restarting, refusing, not
    /// yet accepting connections, every connection slot taken) is tried again, with a growing
    /// pause, until the acquire timeout counted from `started`: as sqlx's pool does, so a short outage delays a join's
    /// statement instead of failing it. Anything else (a rejected password, an unknown
    /// database) fails at once.
    async fn connect(&self, started: Instant) -> Result<PgConnection, DbErr> {
        let mut pause = CONNECT_RETRY_FIRST;
        loop {
            let error =
                match tokio::time::timeout(self.connect_timeout, self.options.connect()).await {
                    Ok(Ok(conn)) => return Ok(conn),
                    Ok(Err(e)) => e,
                    Err(_) => return Err(DbErr::ConnectionAcquire(ConnAcquireErr::Timeout)),
                };
            let retry = match &error {
                sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => true,
                // Besides a server going away or starting: 53300, every connection slot taken
                // (a slot frees when another client leaves).
                sqlx::Error::Database(e) => {
                    e.code().is_some_and(|c| ends_the_session(&c) || c == TOO_MANY_CONNECTIONS)
                }
                _ => false,
            };
            if !retry || started.elapsed() + pause >= self.acquire_timeout {
                return Err(DbErr::Conn(RuntimeErr::SqlxError(Arc::new(error))));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(CONNECT_RETRY_MAX);
        }
    }

    /// The most recently used idle connection; connections idle or open too long are closed
    /// on the way (by dropping them: the server sees the socket close).
    fn pop_idle(&self) -> Option<Idle> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.retain(|c| c.since.elapsed() < IDLE_TIMEOUT && c.born.elapsed() < MAX_LIFETIME);
        idle.pop()
    }

    /// Closes the idle connections (the store is closing). Connections in use close when
    /// their statement ends and finds the lane closed.
    pub(super) async fn close(&self) {
        self.slots.close();
        let idle = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|p| p.into_inner()));
        for Idle { conn, .. } in idle {
            let _ = conn.close().await;
        }
    }
}

fn query(stmt: &Statement) -> sqlx::query::Query<'_, sqlx::Postgres, SqlxValues> {
    let values = stmt.values.clone().unwrap_or(sea_orm::sea_query::Values(Vec::new()));
    sqlx::query_with(sqlx::AssertSqlSafe(stmt.sql.as_str()), SqlxValues(values))
}

impl super::Store {
    fn observer(&self) -> Option<&Observer> {
        self.observer.as_ref().map(|o| &o.0)
    }

    /// The rows of one of the join's statements: on the lane on Postgres, else on the pool.
    pub(super) async fn join_query_all(
        &self,
        stmt: Statement,
    ) -> Result<Vec<QueryResult>, super::StoreError> {
        Ok(match &self.lane {
            Some(lane) => lane.query_all(&stmt, self.observer()).await?,
            None => self.db.query_all_raw(stmt).await?,
        })
    }

    /// The first row of one of the join's statements, as [`join_query_all`](Self::join_query_all).
    pub(super) async fn join_query_one(
        &self,
        stmt: Statement,
    ) -> Result<Option<QueryResult>, super::StoreError> {
        Ok(match &self.lane {
            Some(lane) => lane.query_one(&stmt, self.observer()).await?,
            None => self.db.query_one_raw(stmt).await?,
        })
    }

    /// The rows one of the join's statements changed, as [`join_query_all`](Self::join_query_all).
    pub(super) async fn join_execute(&self, stmt: Statement) -> Result<u64, super::StoreError> {
        Ok(match &self.lane {
            Some(lane) => lane.execute(&stmt, self.observer()).await?,
            None => self.db.execute_raw(stmt).await?.rows_affected(),
        })
    }
}
