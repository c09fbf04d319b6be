//! Persistence: the only module that speaks SQL (through SeaORM).
//!
//! Every operation is one statement or one transaction and runs on Postgres (the system of
//! record) and on SQLite (single-machine mode). The API speaks domain types, chrono and std
//! only, so nothing outside this module imports sea_orm.
//!
//! Timestamps are always written by the application in UTC. On SQLite they are text, and a
//! single writer format makes text order equal time order, so range filters work on both.

mod accounts;
mod actions;
mod adopt;
mod apply;
mod browse;
pub mod entity;
mod lane;
mod migrations;
mod policies;
mod reports;
mod scaling;
mod shapes;
mod sql;
mod targets;

pub use actions::{ActionResult, AuditEntry};
pub use adopt::{AdoptOptions, AdoptionPlan, GROUP_COLUMNS, SESSION_COLUMNS, Unparsed};
pub use browse::{HourCount, QueuedCount, TargetFilter};
pub use policies::{CheckRecord, CheckWritten};
pub use reports::{AccountOverview, ReadyGroup, TargetCount};
pub use scaling::PoolAccounts;
pub use targets::{NO_AVAILABLE_ACCOUNTS, TargetImport};

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use migration::{Migrator, MigratorTrait};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement,
};

use crate::clock::Clock;
use crate::domain::{AccountStatus, LinkKind, OutcomeKind, TargetLink, TargetStatus};
use crate::redact;

/// What can go wrong in the store.
///
/// The driver's errors arrive as text, flattened (each cause once) and without any password
/// (see [`crate::redact`]): none of these variants has a `source()`, so `{e}` and `{e:#}` print
/// the same line.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `transient`: the database failed for a moment (see [`StoreError::is_transient`]).
    #[error("database error: {message}")]
    Db { message: String, transient: bool },
    /// The database could not be opened; `url` has its password redacted.
    #[error("cannot connect to the database {url}: {message}")]
    Connect { url: String, message: String },
    /// A row holds a value the code cannot read (an unknown status, a bad link, ...).
    #[error("corrupt row {table}#{id}: {problem}")]
    Corrupt { table: &'static str, id: i64, problem: String },
    /// An operation addressed a row that does not exist.
    #[error("{table}#{id} does not exist")]
    NotFound { table: &'static str, id: i64 },
    /// The caller asked for something the data model forbids (a programming error).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// `migrate_down` was not allowed to drop tables that hold rows: nothing was rolled back.
    #[error("rolling back would drop {}: nothing was rolled back", tables_and_rows(.tables))]
    WouldDropRows { tables: Vec<(String, u64)> },
    /// A rollback failed part way: `done` were rolled back before it.
    #[error("rolling back failed after rolling back [{}]: {message}", done.join(", "))]
    RollbackFailed { done: Vec<String>, message: String },
    /// A database `migrate adopt` cannot adopt as it is: every problem. Nothing was changed.
    #[error("this database cannot be adopted, nothing was changed: {}", problems.join("; "))]
    NotAdoptable { problems: Vec<String> },
    /// `migrate down` would give an adopted SmartJoiner database back, but cannot now: why.
    /// Nothing was rolled back.
    #[error("the tables cannot go back to SmartJoiner's shape, nothing was rolled back: {message}")]
    CannotUndoAdoption { message: String },
    /// The SQLite file this store opened was deleted, moved or replaced.
    #[error("the database file {} {problem}", path.display())]
    File { path: std::path::PathBuf, problem: String },
}

impl From<sea_orm::DbErr> for StoreError {
    fn from(e: sea_orm::DbErr) -> Self {
        let transient = is_transient_db_err(&e);
        StoreError::Db { message: redact::scrub_url_credentials(&redact::flatten(&e)), transient }
    }
}

fn tables_and_rows(tables: &[(String, u64)]) -> String {
    let rows = |n: u64| if n == 1 { "1 row".to_owned() } else { format!("{n} rows") };
    let parts: Vec<String> = tables.iter().map(|(t, n)| format!("{t} ({})", rows(*n))).collect();
    parts.join(", ")
}

impl StoreError {
    /// Whether the database failed for a moment (a lost connection, a terminated backend, a
    /// server restarting, an exhausted pool), so the same statement may succeed if tried again.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Db { transient: true, .. })
    }
}

/// Read off the driver's error before it is flattened to text.
fn is_transient_db_err(e: &sea_orm::DbErr) -> bool {
    use sea_orm::{DbErr, RuntimeErr};
    let runtime = match e {
        DbErr::ConnectionAcquire(_) => return true,
        DbErr::Conn(e) | DbErr::Exec(e) | DbErr::Query(e) => e,
        _ => return false,
    };
    let RuntimeErr::SqlxError(e) = runtime else { return false };
    match e.as_ref() {
        sea_orm::sqlx::Error::Io(_)
        | sea_orm::sqlx::Error::PoolTimedOut
        | sea_orm::sqlx::Error::WorkerCrashed
        | sea_orm::sqlx::Error::Protocol(_) => true,
        // Class 08: connection exception; 57P01-57P03: the server is shutting down or
        // starting, or terminated this backend; 40001/40P01: serialisation, deadlock.
        sea_orm::sqlx::Error::Database(db) => db.code().is_some_and(|c| {
            c.starts_with("08") || c.starts_with("57P0") || c == "40001" || c == "40P01"
        }),
        _ => false,
    }
}

/// An account of the pool, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: i64,
    pub session_name: String,
    pub pool: String,
    pub status: AccountStatus,
    pub status_reason: Option<String>,
    pub next_allowed_action_time: Option<DateTime<Utc>>,
    pub last_action_at: Option<DateTime<Utc>>,
    /// Fencing counter: bumped each time the account's lease is taken.
    pub lease_epoch: i64,
    /// While a join holds the account: when that hold ends unless extended.
    pub held_until: Option<DateTime<Utc>>,
    /// Telegram Premium, as last read when it connected (None: never read).
    pub premium: Option<bool>,
    /// The channel limit Telegram gives it, as last read (None: never read).
    pub channel_limit: Option<u32>,
    /// The freeze help.getAppConfig reported when it last connected.
    pub frozen_since: Option<DateTime<Utc>>,
    pub frozen_until: Option<DateTime<Utc>>,
    pub freeze_appeal_url: Option<String>,
    /// When those were last read.
    pub profile_read_at: Option<DateTime<Utc>>,
    /// When `accounts check` last connected it, and its one-word verdict.
    pub checked_at: Option<DateTime<Utc>>,
    pub check_result: Option<String>,
    /// The account's own active hours, as stored (`Europe/Kyiv 09:00-22:00`); None: the pool's.
    pub active_hours: Option<String>,
    /// How many targets are bound to it, as kept on its row (the invariants checker compares
    /// it with the targets).
    pub bound_targets: i64,
}

/// A target group or channel, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub id: i64,
    pub link: TargetLink,
    pub niche: String,
    pub status: TargetStatus,
    pub assigned_account_id: Option<i64>,
    pub claimed_account_id: Option<i64>,
    pub claim_epoch: Option<i64>,
    pub attempts: i32,
    pub in_doubt_tries: i32,
    pub next_run_at: Option<DateTime<Utc>>,
    pub joined_at: Option<DateTime<Utc>>,
    pub warmup_ends_at: Option<DateTime<Utc>>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub peer_id: Option<i64>,
    pub title: Option<String>,
    /// The folder link it was expanded from, if any.
    pub folder: Option<String>,
}

/// One row of `join_attempts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRow {
    pub id: i64,
    pub target_id: i64,
    pub account_id: i64,
    pub epoch: i64,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// `JoinOutcome::kind()`.
    pub outcome: OutcomeKind,
    pub flood_wait_seconds: Option<i32>,
    pub error_code: Option<String>,
    pub worker: String,
}

/// Per-account limits the eligibility queries enforce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Successful joins (and join requests) per account in any 24 hours.
    pub daily_join_cap: u32,
    /// Targets bound to one account at most.
    pub channel_limit: u32,
}

/// What [`Store::sync_accounts`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Session names inserted as new active accounts.
    pub added: Vec<String>,
    /// Existing accounts whose pool was changed to the requested one.
    pub moved_pool: Vec<String>,
    /// Accounts in the database whose session name is not in the configuration (kept).
    pub missing_from_config: Vec<String>,
    /// Accounts of the file that belong to another pool and were left there: (name, pool).
    pub in_other_pools: Vec<(String, String)>,
    /// Accounts of the file made active again: an earlier version had marked them
    /// `unauthorized` only because its process had no valid entry for them.
    pub repaired: Vec<String>,
}

/// What [`Store::import_targets`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub inserted: u64,
    /// Links already stored, or repeated in the input.
    pub duplicates: u64,
    /// Of the duplicates, the links repeating an earlier one of the input (the rest were
    /// already stored).
    pub repeated: u64,
}

impl ImportReport {
    /// Links of the input that were already stored before the import.
    pub fn already_stored(&self) -> u64 {
        self.duplicates - self.repeated
    }
}

/// Facts about one Telegram attempt, recorded in `join_attempts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// Which worker (host/pod) made the attempt.
    pub worker: String,
}

/// Whether a fenced write happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Applied,
    /// The lease epoch or the claim moved on: nothing was written.
    Stale,
}

/// Which targets a take may claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Claimable {
    /// Whatever the account may claim: a free target, its own in-doubt claim, one bound to it.
    Any,
    /// Only a free target: `new` or `queued` and bound to nobody. A job that has not loaded its
    /// target takes it so; a target pinned to an account goes through its own path.
    FreeOnly,
}

/// What [`Store::take_for_join`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// Account taken and target claimed under this epoch.
    Taken { epoch: i64 },
    /// The account is held, resting or no longer workable: try another one.
    AccountBusy,
    /// The target is settled or claimed by another account: nothing to do.
    TargetGone,
}

/// The stored outcomes that count towards the daily join cap: the joins
/// ([`OutcomeKind::is_join`], which says why `already_participant` is one).
fn counted_outcomes() -> impl Iterator<Item = &'static str> {
    OutcomeKind::joins().map(OutcomeKind::as_str)
}

/// Handle to the database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    db: DatabaseConnection,
    /// The SQLite file opened, as found at connect time (`None` for Postgres and in-memory).
    file: Option<Arc<DbFile>>,
    /// The database's clock, as this process reads it (see [`Store::now`]).
    clock: Arc<Clock>,
    /// Postgres: the connections the join's statements run on (see [`lane`]).
    lane: Option<Arc<lane::Lane>>,
    /// Told of every statement this store runs, the lane's included (see [`Store::observed`]).
    observer: Option<Observer>,
    /// Postgres: the SQL of the pick, the take and the gate, kept per shape (see [`shapes`]).
    shapes: Arc<shapes::Shapes>,
}

/// [`lane::Observer`], printable as the store is.
#[derive(Clone)]
struct Observer(lane::Observer);

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Observer")
    }
}

/// A SQLite database file and the identity it had when it was opened.
#[derive(Debug)]
struct DbFile {
    path: PathBuf,
    /// Device and inode on Unix: a file put in its place has other ones.
    identity: Option<(u64, u64)>,
}

/// How long a SQLite writer waits for another process's lock before giving up.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Postgres pool size of one process (every statement but the join's own four).
const PG_MAX_CONNECTIONS: u32 = 10;
/// The join lane's connections at most ([`lane`]), beside the pool's: a process opens them
/// only when it runs joins, one per join statement in flight, so no more than it runs joins
/// at once. The lane has its own so the join's statements and everything else (requeues,
/// holds, reads) never wait for each other's connections.
const PG_LANE_CONNECTIONS: u32 = 6;
/// A Postgres connection (the pool's or the join lane's) idle this long is pinged before it is
/// handed out; a busy one is not. sqlx's default pings on every checkout: a round trip of its
/// own before every statement. A busy connection that died (a restart, `pg_terminate_backend`)
/// fails its next statement, and every statement's caller already handles that failure.
const PG_PING_IF_IDLE_FOR: Duration = Duration::from_secs(10);
/// How long a statement waits for a free connection before it fails as transient.
const PG_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the first Postgres connection may take (TCP, TLS, authentication).
const PG_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl Store {
    /// Connects to `url` (`postgres://...` or `sqlite://path`).
    ///
    /// Postgres: one connection is opened first, on its own, so a refused connection, an
    /// unknown host or a rejected password is reported as such at once; the pool would retry
    /// until its acquire timeout and then only say that it timed out.
    ///
    /// SQLite: the file is created if missing, in WAL mode with a busy timeout. The pool keeps
    /// one connection, so the tasks of one process take turns and never meet SQLITE_BUSY in the
    /// middle of a transaction; the busy timeout covers other processes (the admin CLI).
    ///
    /// Errors name the URL with its password redacted, and carry no password anywhere.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        let fail = |message: String| StoreError::Connect {
            url: redact::redact_url(url),
            message: redact::scrub(&message, url),
        };
        // sea-orm would quote the whole URL, password included, in its own parse error.
        if let Err(e) = url::Url::parse(url) {
            return Err(fail(format!("not a valid URL: {e}")));
        }
        let sqlite = url.starts_with("sqlite:");
        let mut opts = ConnectOptions::new(url.to_owned());
        opts.sqlx_logging(false).connect_timeout(Duration::from_secs(10));
        if sqlite {
            use sea_orm::sqlx::sqlite::SqliteJournalMode;
            opts.max_connections(1).min_connections(1).map_sqlx_sqlite_opts(|o| {
                o.create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .busy_timeout(SQLITE_BUSY_TIMEOUT)
                    .foreign_keys(true)
            });
        } else {
            probe_postgres(url).await.map_err(fail)?;
            opts.max_connections(PG_MAX_CONNECTIONS)
                .min_connections(0)
                .acquire_timeout(PG_ACQUIRE_TIMEOUT)
                .test_before_acquire_if_idle_for(PG_PING_IF_IDLE_FOR);
        }
        let clock = Clock::from_env().map_err(fail)?;
        let db = Database::connect(opts).await.map_err(|e| fail(redact::flatten(&e)))?;
        let file =
            if sqlite { sqlite_file(&db).await.map_err(|e| fail(e.to_string()))? } else { None };
        let lane = if sqlite {
            None
        } else {
            let lanes = PG_LANE_CONNECTIONS as usize;
            let lane = lane::Lane::new(url, lanes, PG_CONNECT_TIMEOUT, PG_ACQUIRE_TIMEOUT);
            Some(Arc::new(lane.map_err(fail)?))
        };
        let store = Store {
            db,
            file: file.map(Arc::new),
            clock: Arc::new(clock),
            lane,
            observer: None,
            shapes: Arc::default(),
        };
        store.sync_clock().await.map_err(|e| fail(e.to_string()))?;
        Ok(store)
    }

    /// The same database read through another clock, measured against the database at once:
    /// what a process on a machine whose clock is off sees (tests and the fault run).
    pub async fn with_clock(&self, clock: Clock) -> Result<Store, StoreError> {
        let store = Store { clock: Arc::new(clock), ..self.clone() };
        store.sync_clock().await?;
        Ok(store)
    }

    /// Now, on the database's clock: every time this process writes for another process to
    /// compare, and every time it compares with one, is taken from here (docs/design.md,
    /// "Time"). No round trip: this process's clock corrected by the last measured offset.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The earliest the database's clock can read now ([`Clock::earliest`]): what a process
    /// compares a rest or a hold with before it acts on the account (the pick, the take, a
    /// check). Another process's rest that is over by this is over on every clock.
    pub fn earliest_now(&self) -> DateTime<Utc> {
        self.clock.earliest()
    }

    /// The latest the database's clock can read now ([`Clock::latest`]): what a rest or a
    /// hold this process writes for others is counted from (after a FloodWait, a join, an
    /// error), so it lasts its full length on every clock.
    pub fn latest_now(&self) -> DateTime<Utc> {
        self.clock.latest()
    }

    /// Measures the offset between this process's clock and the database server's and returns
    /// the correction [`Store::now`] applies from now on. The server's clock is read three
    /// times on one connection taken beforehand (setting up a connection is not part of the
    /// round trip), and the read with the shortest round trip counts, taken to have been made
    /// halfway through it: its error is at most half that round trip. A reading much slower
    /// than the usual (a loaded machine, a server just back) keeps the previous correction
    /// ([`Clock::record`]). On SQLite the database's clock is this machine's.
    pub async fn sync_clock(&self) -> Result<chrono::TimeDelta, StoreError> {
        use sea_orm::TransactionTrait as _;
        let sql = if self.is_postgres() {
            "SELECT CAST(FLOOR(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000) AS BIGINT)"
        } else {
            "SELECT CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER)"
        };
        let backend = self.db.get_database_backend();
        let txn = self.db.begin().await?;
        let mut best: Option<(DateTime<Utc>, DateTime<Utc>, DateTime<Utc>)> = None;
        for _ in 0..3 {
            let sent = self.clock.local();
            let row = txn.query_one_raw(Statement::from_string(backend, sql)).await?;
            let received = self.clock.local();
            let micros: i64 = row
                .ok_or_else(|| StoreError::Invalid("the database did not tell its time".into()))?
                .try_get_by_index(0)?;
            let reference = DateTime::<Utc>::from_timestamp_micros(micros).ok_or_else(|| {
                StoreError::Invalid(format!("the database's time {micros} us is out of range"))
            })?;
            if best.is_none_or(|(s, _, r)| received - sent < r - s) {
                best = Some((sent, reference, received));
            }
        }
        txn.rollback().await?;
        let Some((sent, reference, received)) = best else { unreachable!("three reads") };
        Ok(self.clock.record(sent, reference, received))
    }

    /// Measures the offset again when the last measurement is older than
    /// [`crate::clock::RESYNC_EVERY`]; a failure keeps the last one (and is logged).
    pub async fn resync_clock_if_due(&self) {
        if self.clock.is_due(crate::clock::RESYNC_EVERY)
            && let Err(e) = self.sync_clock().await
        {
            tracing::warn!(error = %crate::redact::Chain(&e), "the database's clock could not be read; keeping the last offset");
        }
    }

    /// Applies every pending migration.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        Migrator::up(&self.db, None).await?;
        Ok(())
    }

    /// The underlying connection, for migrations and the admin CLI.
    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    /// This store with every statement it runs reported to `observe` once it has run (what it
    /// was, how long it took): a benchmark counts a join's statements with it. Clones made
    /// before are not observed.
    pub fn observed(
        &self,
        observe: impl Fn(&sea_orm::metric::Info<'_>) + Send + Sync + 'static,
    ) -> Store {
        let mut store = self.clone();
        let observe: lane::Observer = Arc::new(observe);
        let pool_observe = observe.clone();
        store.db.set_metric_callback(move |info| pool_observe(info));
        store.observer = Some(Observer(observe));
        store
    }

    fn is_postgres(&self) -> bool {
        self.db.get_database_backend() == DbBackend::Postgres
    }

    /// Ends the use of the database; call it last, on the way out of a command.
    ///
    /// SQLite keeps recent writes in the `-wal` file beside the database until a checkpoint
    /// copies them in, so a copy of the `.db` file alone (the obvious backup) would miss them.
    /// This checkpoints the whole WAL into the file and truncates it, then closes the pool
    /// (which closes it for every clone of this store). When another process has the database
    /// open the checkpoint may not finish; that is logged, not an error.
    pub async fn close(self) -> Result<(), StoreError> {
        if self.db.get_database_backend() == DbBackend::Sqlite {
            let stmt = Statement::from_string(DbBackend::Sqlite, "PRAGMA wal_checkpoint(TRUNCATE)");
            if let Some(row) = self.db.query_one_raw(stmt).await? {
                let busy: i32 = row.try_get_by_index(0).unwrap_or(0);
                if busy != 0 {
                    let path = self.file.as_ref().map(|f| f.path.display().to_string());
                    tracing::warn!(
                        file = path.as_deref().unwrap_or(":memory:"),
                        "the SQLite WAL could not be fully checkpointed: another process has the \
                         database open; a copy of the .db file alone may miss recent writes"
                    );
                }
            }
        }
        if let Some(lane) = &self.lane {
            lane.close().await;
        }
        self.db.close().await?;
        Ok(())
    }

    /// Checks that the SQLite file this store opened is still there and is the same file
    /// (same device and inode on Unix). A deleted, moved or replaced file is an error naming
    /// its path: SQLite would go on writing to the unlinked file, and every write would be
    /// lost when the process ends. Always `Ok` on Postgres.
    pub fn check_file(&self) -> Result<(), StoreError> {
        let Some(file) = &self.file else { return Ok(()) };
        let fail = |problem: String| StoreError::File { path: file.path.clone(), problem };
        match std::fs::metadata(&file.path) {
            Ok(meta) if file_identity(&meta) == file.identity => Ok(()),
            Ok(_) => Err(fail("was replaced by another file since it was opened".to_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(fail("no longer exists (deleted or moved since it was opened)".to_owned()))
            }
            Err(e) => Err(fail(format!("cannot be examined: {e}"))),
        }
    }
}

/// Opens one Postgres connection and closes it again: the real cause of a failure, fast.
async fn probe_postgres(url: &str) -> Result<(), String> {
    use sea_orm::sqlx::postgres::{PgConnectOptions, PgConnection};
    use sea_orm::sqlx::{ConnectOptions as _, Connection as _};
    let opts: PgConnectOptions = url.parse().map_err(|e| redact::flatten(&e))?;
    match tokio::time::timeout(PG_CONNECT_TIMEOUT, opts.connect()).await {
        Ok(Ok(conn)) => {
            let conn: PgConnection = conn;
            let _ = conn.close().await;
            Ok(())
        }
        Ok(Err(e)) => Err(redact::flatten(&e)),
        Err(_) => Err(format!("no answer within {PG_CONNECT_TIMEOUT:?}")),
    }
}

/// The file behind the `main` database of a SQLite connection, as SQLite itself reports it
/// (an absolute path; empty for an in-memory database).
async fn sqlite_file(db: &DatabaseConnection) -> Result<Option<DbFile>, StoreError> {
    let stmt = Statement::from_string(DbBackend::Sqlite, "PRAGMA database_list");
    let rows = db.query_all_raw(stmt).await?;
    for row in rows {
        let name: String = row.try_get("", "name")?;
        let file: String = row.try_get("", "file")?;
        if name == "main" && !file.is_empty() {
            let path = PathBuf::from(file);
            let meta = std::fs::metadata(&path).map_err(|e| StoreError::File {
                path: path.clone(),
                problem: format!("cannot be examined: {e}"),
            })?;
            return Ok(Some(DbFile { identity: file_identity(&meta), path }));
        }
    }
    Ok(None)
}

#[cfg(unix)]
fn file_identity(meta: &std::fs::Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    Some((meta.dev(), meta.ino()))
}

#[cfg(not(unix))]
fn file_identity(_meta: &std::fs::Metadata) -> Option<(u64, u64)> {
    None
}

fn corrupt(table: &'static str, id: i64, problem: impl Into<String>) -> StoreError {
    StoreError::Corrupt { table, id, problem: problem.into() }
}

impl TryFrom<entity::accounts::Model> for Account {
    type Error = StoreError;
    fn try_from(m: entity::accounts::Model) -> Result<Self, StoreError> {
        let status = AccountStatus::parse(&m.status)
            .ok_or_else(|| corrupt("accounts", m.id, format!("unknown status {:?}", m.status)))?;
        Ok(Account {
            id: m.id,
            session_name: m.session_name,
            pool: m.pool,
            status,
            status_reason: m.status_reason,
            next_allowed_action_time: m.next_allowed_action_time,
            last_action_at: m.last_action_at,
            lease_epoch: m.lease_epoch,
            held_until: m.held_until,
            premium: m.premium,
            channel_limit: m.channel_limit.and_then(|l| u32::try_from(l).ok()),
            frozen_since: m.frozen_since,
            frozen_until: m.frozen_until,
            freeze_appeal_url: m.freeze_appeal_url,
            profile_read_at: m.profile_read_at,
            checked_at: m.checked_at,
            check_result: m.check_result,
            active_hours: m.active_hours,
            bound_targets: i64::from(m.bound_targets),
        })
    }
}

impl TryFrom<entity::targets::Model> for Target {
    type Error = StoreError;
    fn try_from(m: entity::targets::Model) -> Result<Self, StoreError> {
        let status = TargetStatus::parse(&m.status)
            .ok_or_else(|| corrupt("targets", m.id, format!("unknown status {:?}", m.status)))?;
        let kind = LinkKind::parse(&m.kind)
            .ok_or_else(|| corrupt("targets", m.id, format!("unknown kind {:?}", m.kind)))?;
        let link = TargetLink::from_stored(kind, &m.link)
            .map_err(|e| corrupt("targets", m.id, format!("bad link {:?}: {e}", m.link)))?;
        Ok(Target {
            id: m.id,
            link,
            niche: m.niche,
            status,
            assigned_account_id: m.assigned_account_id,
            claimed_account_id: m.claimed_account_id,
            claim_epoch: m.claim_epoch,
            attempts: m.attempts,
            in_doubt_tries: m.in_doubt_tries,
            next_run_at: m.next_run_at,
            joined_at: m.joined_at,
            warmup_ends_at: m.warmup_ends_at,
            error_code: m.error_code,
            error_message: m.error_message,
            peer_id: m.peer_id,
            title: m.title,
            folder: m.folder,
        })
    }
}

impl TryFrom<entity::join_attempts::Model> for AttemptRow {
    type Error = StoreError;
    fn try_from(m: entity::join_attempts::Model) -> Result<Self, StoreError> {
        let outcome = OutcomeKind::parse(&m.outcome).ok_or_else(|| {
            corrupt("join_attempts", m.id, format!("unknown outcome {:?}", m.outcome))
        })?;
        Ok(AttemptRow {
            id: m.id,
            target_id: m.target_id,
            account_id: m.account_id,
            epoch: m.epoch,
            started_at: m.started_at,
            finished_at: m.finished_at,
            outcome,
            flood_wait_seconds: m.flood_wait_seconds,
            error_code: m.error_code,
            worker: m.worker,
        })
    }
}

fn targets_from(models: Vec<entity::targets::Model>) -> Result<Vec<Target>, StoreError> {
    models.into_iter().map(Target::try_from).collect()
}

fn accounts_from(models: Vec<entity::accounts::Model>) -> Result<Vec<Account>, StoreError> {
    models.into_iter().map(Account::try_from).collect()
}

/// Rows per statement when a list is bound as parameters (SQLite allows 32766 per statement).
const CHUNK: usize = 500;

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sea_orm::{ConnAcquireErr, DbErr, RuntimeErr};

    use super::StoreError;

    #[test]
    fn a_lost_connection_is_transient_and_a_logic_error_is_not() {
        let io = || std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let exec = DbErr::Exec(RuntimeErr::SqlxError(Arc::new(sea_orm::sqlx::Error::Io(io()))));
        let cases = [
            (DbErr::ConnectionAcquire(ConnAcquireErr::Timeout), true),
            (exec, true),
            (DbErr::RecordNotFound("x".into()), false),
            (DbErr::Custom("constraint".into()), false),
        ];
        for (err, transient) in cases {
            let shown = err.to_string();
            assert_eq!(StoreError::from(err).is_transient(), transient, "{shown}");
        }
    }
}
