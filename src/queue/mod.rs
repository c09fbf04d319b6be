//! The job queue: apalis-redis storage of [`JoinTask`]s, and how jobs are pushed.
//!
//! apalis-redis 1.0 has defaults that lose or duplicate work (each is named where it is set,
//! below): this module
//! is the one place that sets them right. Jobs are pushed with an idempotency key derived from
//! the target and the moment it is due (`targets.next_run_at`), so pushing the same schedule
//! twice (two producers recovering the same target, a retry after a lost answer) leaves one job,
//! while every new schedule gets a new key.

use std::time::Duration;

use apalis::prelude::{TaskBuilder, TaskSink};
use apalis_redis::RedisStorage;
use chrono::{DateTime, Utc};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::domain::{JoinJobV1, JoinTask};

/// The Redis storage of join jobs.
pub type JoinStorage = RedisStorage<JoinTask>;

/// The queue name jobs of this wire format live under. A new incompatible payload version gets
/// a new name, so old workers never read jobs they cannot decode.
pub const DEFAULT_QUEUE: &str = "smart_joiner:join:v1";

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("redis: {0}")]
    Redis(RedisFailure),
    #[error("cannot push job for target {target_id}: {message}")]
    Push { target_id: i64, message: String },
}

impl From<redis::RedisError> for QueueError {
    fn from(e: redis::RedisError) -> Self {
        QueueError::Redis(RedisFailure::new(&e, None))
    }
}

impl QueueError {
    /// The text without the `redis: ` prefix, for messages that already say it is Redis.
    pub fn detail(&self) -> String {
        match self {
            QueueError::Redis(failure) => failure.to_string(),
            other => other.to_string(),
        }
    }

    /// Whether Redis was not there at all (see [`RedisFailure::is_unreachable`]).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, QueueError::Redis(f) if f.is_unreachable())
    }
}

/// A Redis error as it is reported: the driver's text with each cause once and no password
/// (`RedisError` repeats its I/O source in its own message), and whether Redis was reachable.
/// It has no `source()`, so an error chain prints the text once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisFailure {
    message: String,
    unreachable: bool,
}

impl RedisFailure {
    /// Describes `e`; `url`, when known, has its password cut out of the text as well.
    pub fn new(e: &redis::RedisError, url: Option<&str>) -> Self {
        let text = crate::redact::flatten(e);
        let message = match url {
            Some(url) => crate::redact::scrub(&text, url),
            None => crate::redact::scrub_url_credentials(&text),
        };
        RedisFailure { message, unreachable: redis_unreachable(e, &text) }
    }

    /// True only when nothing answered: the connection was refused (or the Unix socket does
    /// not exist), or the host name does not resolve. A Redis that answered with an error
    /// (wrong password, NOAUTH, a protocol or TLS failure) and a timeout are not "unreachable":
    /// something is there, and it may be the Redis the workers use.
    pub fn is_unreachable(&self) -> bool {
        self.unreachable
    }
}

impl std::fmt::Display for RedisFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RedisFailure {}

fn redis_unreachable(e: &redis::RedisError, text: &str) -> bool {
    if e.is_connection_refusal() {
        return true;
    }
    // A failed name lookup has no io::ErrorKind of its own on stable Rust, only std's text.
    e.is_io_error() && text.contains("failed to lookup address information")
}

/// How the queue behaves; the defaults suit production.
#[derive(Debug, Clone)]
pub struct QueueSettings {
    /// Redis key namespace of the queue.
    pub name: String,
    /// How long a pushed key blocks duplicates. Longer than the producer's recovery grace, so a
    /// recovering producer never doubles a job that is merely late.
    pub idempotency_ttl: Duration,
    /// Worker heartbeat; a worker silent for `heartbeat * missed_heartbeats` has its jobs
    /// handed to others.
    pub heartbeat: Duration,
    pub missed_heartbeats: usize,
    /// Jobs fetched per poll; kept <= the worker's concurrency. A worker fetches as many as it
    /// runs at once (see [`JobQueue::with_batch_size`]); this is what the others use.
    pub batch_size: usize,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            name: DEFAULT_QUEUE.to_owned(),
            idempotency_ttl: Duration::from_secs(3600),
            heartbeat: Duration::from_secs(10),
            missed_heartbeats: 6,
            batch_size: 4,
        }
    }
}

impl QueueSettings {
    fn apalis_config(&self) -> apalis_redis::Config {
        apalis_redis::Config::default()
            .queue(&self.name)
            .idempotency_ttl(Some(self.idempotency_ttl))
            .heartbeat_interval(self.heartbeat)
            .missed_heartbeats(self.missed_heartbeats)
            .batch_size(self.batch_size.max(1))
            // apalis' task locks (a second script call per batch of started jobs) mark a
            // fetched job `Running`; the claim that counts is the fetch itself, which puts the
            // job in the worker's in-flight set, where the acknowledgement looks for it and
            // from which a dead worker's jobs are re-queued. The lock's script also scans the
            // whole ready list once per job (LREM), a cost that grows with the backlog.
            .lock_tasks(false)
            // Pub/sub events on every push, lock and acknowledgement: nothing subscribes.
            .emit_events(false)
    }
}

/// Connects to Redis with timeouts that tolerate a busy server (apalis' own helper gives up
/// after 500 ms), and sends one PING: a server that wants a password the URL lacks answers
/// only the first command with NOAUTH, and that should stop a process at start, not at its
/// first job. Errors never hold the URL's password.
///
/// `rediss://` URLs connect over TLS (rustls): the server's certificate is checked against the
/// system's roots, or the file named by `SSL_CERT_FILE` (a private CA); `rediss://...#insecure`
/// skips the check.
pub async fn connect_redis(url: &str) -> Result<ConnectionManager, QueueError> {
    install_tls_provider();
    let fail = |e: redis::RedisError| QueueError::Redis(RedisFailure::new(&e, Some(url)));
    let client = redis::Client::open(url).map_err(fail)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(10)))
        .set_number_of_retries(3);
    let conn = ConnectionManager::new_with_config(client, config).await.map_err(fail)?;
    let mut probe = conn.clone();
    redis::cmd("PING").query_async::<String>(&mut probe).await.map_err(fail)?;
    Ok(conn)
}

/// Makes ring rustls' process-wide crypto provider (the redis crate's TLS asks for the default
/// one; sqlx picks its own). Safe to call any number of times.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Jobs moved per call of [`PROMOTE_DUE`]: well below the 8,000 values one Lua `unpack` takes.
const PROMOTE_CHUNK: usize = 1_000;

/// Moves up to ARGV[2] jobs due at ARGV[1] (seconds) from the scheduled set (KEYS[1]) to the
/// ready list (KEYS[2]) and raises the signal list (KEYS[3]), as apalis' fetch does.
const PROMOTE_DUE: &str = r#"
local ids = redis.call('zrangebyscore', KEYS[1], 0, ARGV[1], 'LIMIT', 0, ARGV[2])
if #ids > 0 then
    redis.call('rpush', KEYS[2], unpack(ids))
    redis.call('zrem', KEYS[1], unpack(ids))
    redis.call('del', KEYS[3])
    redis.call('lpush', KEYS[3], 1)
end
return #ids
"#;

/// Frees a recovery push's idempotency key when the job that claimed it is finished.
///
/// KEYS: the key's field, the done set, the dead set, the task data hash. Returns 1 when the
/// key is free (never claimed, or claimed by a finished or vanished job, and now deleted), 0
/// when a live job (scheduled, ready, in flight or waiting for apalis' retry) holds it.
const FREE_FINISHED_KEY: &str = r#"
local id = redis.call('get', KEYS[1])
if not id then
    return 1
end
if redis.call('sismember', KEYS[2], id) == 1 or redis.call('sismember', KEYS[3], id) == 1
    or redis.call('hexists', KEYS[4], id) == 0 then
    redis.call('del', KEYS[1])
    return 1
end
return 0
"#;

/// The idempotency key of a job: one target, one schedule.
pub fn idempotency_key(target_id: i64, due: Option<DateTime<Utc>>) -> String {
    format!("t{target_id}:{}", due.map_or(0, |d| d.timestamp_millis()))
}

/// The apalis task of one job: idempotency key from the schedule, run at `due` rounded up to
/// the whole second (apalis schedules in seconds) so a job never runs before it is due and at
/// most a second after. (A delay rounded up and added to the clock, as apalis' `run_after`
/// does, lands anywhere from a second early to a second late.)
fn task(job: JoinJobV1, due: DateTime<Utc>) -> apalis::prelude::Task<JoinTask> {
    let key = idempotency_key(job.target_id, Some(due));
    let mut builder = TaskBuilder::new(JoinTask::V1(job)).idempotency_key(key);
    if due > Utc::now() {
        builder = builder.run_at_timestamp(run_at_second(due));
    }
    builder.build()
}

/// `due` as apalis' run time: seconds since the epoch, rounded up.
fn run_at_second(due: DateTime<Utc>) -> u64 {
    let secs = due.timestamp() + i64::from(due.timestamp_subsec_nanos() > 0);
    u64::try_from(secs).unwrap_or(0)
}

/// Pushes join jobs.
#[derive(Clone)]
pub struct JobQueue {
    storage: JoinStorage,
    conn: ConnectionManager,
}

impl JobQueue {
    pub fn new(conn: ConnectionManager, settings: &QueueSettings) -> Self {
        Self {
            storage: RedisStorage::new(conn.clone()).with_config(settings.apalis_config()),
            conn,
        }
    }

    /// The storage, for building a worker on the same queue.
    pub fn storage(&self) -> JoinStorage {
        self.storage.clone()
    }

    /// This queue, fetching `n` jobs per poll (at least one). A worker fetches as many jobs as
    /// it runs at once: one fetch per `n` jobs instead of one per four. Fetched jobs belong to
    /// the worker that fetched them (its in-flight set) until they are acknowledged, or
    /// re-queued when the worker stops or misses its heartbeats, so `n` must not exceed the
    /// worker's concurrency: more would hold jobs back from other workers.
    pub fn with_batch_size(&self, n: usize) -> JobQueue {
        let config = self.storage.get_config().clone().batch_size(n.max(1));
        JobQueue {
            storage: RedisStorage::new(self.conn.clone()).with_config(config),
            conn: self.conn.clone(),
        }
    }

    /// Jobs waiting in this queue: (ready now, scheduled for later).
    pub async fn depth(&self) -> Result<(u64, u64), QueueError> {
        let config = self.storage.get_config();
        let mut conn = self.conn.clone();
        let (ready, scheduled): (u64, u64) = redis::pipe()
            .cmd("LLEN")
            .arg(config.active_jobs_list())
            .cmd("ZCARD")
            .arg(config.scheduled_jobs_set())
            .query_async(&mut conn)
            .await?;
        Ok((ready, scheduled))
    }

    /// Jobs of this queue due now: the ready list plus the scheduled jobs whose time has come
    /// (apalis-redis keeps due and future jobs alike in its scheduled set until a fetch or
    /// [`promote_due`](Self::promote_due) moves them). What autoscaling reads: a job that waits
    /// for a FloodWait or a pause to end is scheduled in the future and not counted.
    pub async fn due(&self) -> Result<u64, QueueError> {
        let config = self.storage.get_config();
        let now = Utc::now().timestamp().max(0);
        let mut conn = self.conn.clone();
        let (ready, due): (u64, u64) = redis::pipe()
            .cmd("LLEN")
            .arg(config.active_jobs_list())
            .cmd("ZCOUNT")
            .arg(config.scheduled_jobs_set())
            .arg("-inf")
            .arg(now)
            .query_async(&mut conn)
            .await?;
        Ok(ready + due)
    }

    /// The queue named in `settings`, on this queue's Redis connection.
    pub fn sibling(&self, settings: &QueueSettings) -> JobQueue {
        JobQueue::new(self.conn.clone(), settings)
    }

    /// Moves every due job from the scheduled set to the ready list, a chunk at a time, and
    /// returns how many it moved.
    ///
    /// apalis-redis 1.0 puts every job in its scheduled set (a run time is never in the past),
    /// and its fetch promotes all due jobs with one Lua `unpack`, which fails beyond about
    /// 8,000 values. With that many jobs due at once (a large producer batch, or follow-ups
    /// piled up while no worker ran) every fetch fails and the queue stands still. The producer
    /// calls this after each page and every worker every poll interval, so the due part of the
    /// set stays small, and a backlog that did pile up drains in chunks.
    pub async fn promote_due(&self) -> Result<u64, QueueError> {
        let config = self.storage.get_config();
        let script = redis::Script::new(PROMOTE_DUE);
        let mut conn = self.conn.clone();
        let mut moved = 0;
        loop {
            let now = Utc::now().timestamp().max(0);
            let n: usize = script
                .key(config.scheduled_jobs_set())
                .key(config.active_jobs_list())
                .key(config.signal_list())
                .arg(now)
                .arg(PROMOTE_CHUNK)
                .invoke_async(&mut conn)
                .await?;
            moved += n as u64;
            if n < PROMOTE_CHUNK {
                return Ok(moved);
            }
        }
    }

    /// Whether Redis answers.
    pub async fn ping(&self) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        redis::cmd("PING").query_async::<String>(&mut conn).await?;
        Ok(())
    }

    /// Pushes `job`, due at `due` (now if in the past). `due` must be the target's
    /// `next_run_at`: it is part of the idempotency key.
    pub async fn push(&self, job: JoinJobV1, due: DateTime<Utc>) -> Result<(), QueueError> {
        let target_id = job.target_id;
        let mut storage = self.storage.clone();
        storage
            .push_task(task(job, due))
            .await
            .map_err(|e| QueueError::Push { target_id, message: e.to_string() })
    }

    /// Pushes the job of a target presumed lost, unless a live job already carries its
    /// schedule. Returns whether a job was pushed.
    ///
    /// A plain [`push`](Self::push) is a no-op while the schedule's idempotency key lives (an
    /// hour), also when the job that claimed it has finished: a job that ended without a
    /// follow-up (its retry push failed, say) leaves the target on that same schedule, and its
    /// recovery would be swallowed for the key's whole lifetime. Here the key is freed first
    /// when its job is done, dead or gone, so the target is pushed again; while the job is
    /// alive (it will run, or apalis re-queues it from a dead worker) nothing is pushed.
    pub async fn push_recovery(
        &self,
        job: JoinJobV1,
        due: DateTime<Utc>,
    ) -> Result<bool, QueueError> {
        let target_id = job.target_id;
        let config = self.storage.get_config();
        let field =
            format!("{}:{}", config.idempotency_key_set(), idempotency_key(target_id, Some(due)));
        let mut conn = self.conn.clone();
        let free: i64 = redis::Script::new(FREE_FINISHED_KEY)
            .key(field)
            .key(config.done_jobs_set())
            .key(config.dead_jobs_set())
            .key(config.job_data_hash())
            .invoke_async(&mut conn)
            .await?;
        if free == 0 {
            return Ok(false);
        }
        self.push(job, due).await?;
        Ok(true)
    }

    /// Pushes many jobs in one round trip (one script call in Redis), with the same keys and
    /// delays as [`push`](Self::push) would give each.
    pub async fn push_many(&self, jobs: Vec<(JoinJobV1, DateTime<Utc>)>) -> Result<(), QueueError> {
        let Some(first) = jobs.first().map(|(j, _)| j.target_id) else { return Ok(()) };
        let count = jobs.len();
        let mut tasks = futures::stream::iter(jobs.into_iter().map(|(job, due)| task(job, due)));
        let mut storage = self.storage.clone();
        storage.push_all(&mut tasks).await.map_err(|e| QueueError::Push {
            target_id: first,
            message: format!("batch of {count} jobs: {e}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(e: redis::RedisError) -> RedisFailure {
        RedisFailure::new(&e, Some("redis://:secretpw@127.0.0.1:1/"))
    }

    #[test]
    fn a_job_runs_at_its_due_second_rounded_up() {
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        assert_eq!(run_at_second(at("2026-12-06T12:00:10Z")), 1_796_558_410);
        assert_eq!(run_at_second(at("2026-12-06T12:00:10.001Z")), 1_796_558_411);
        assert_eq!(run_at_second(at("2026-12-06T12:00:10.999Z")), 1_796_558_411);
    }

    #[test]
    fn only_a_refused_connection_or_an_unknown_host_is_unreachable() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(failure(refused.into()).is_unreachable());
        let no_host = std::io::Error::other(
            "failed to lookup address information: Name or service not known",
        );
        assert!(failure(no_host.into()).is_unreachable());
        let timeout = std::io::Error::from(std::io::ErrorKind::TimedOut);
        assert!(!failure(timeout.into()).is_unreachable());
        let auth = redis::RedisError::from((
            redis::ErrorKind::AuthenticationFailed,
            "Password authentication failed",
        ));
        assert!(!failure(auth).is_unreachable());
        let config =
            redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "TLS not enabled"));
        assert!(!failure(config).is_unreachable());
    }

    #[test]
    fn the_text_holds_each_cause_once_and_no_password() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let f = failure(refused.into());
        let text = f.to_string();
        assert_eq!(text.matches("refused").count(), 1, "{text}");
        let echoed = redis::RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "bad URL",
            "redis://:secretpw@127.0.0.1:1/ and secretpw".to_owned(),
        ));
        let text = failure(echoed).to_string();
        assert!(!text.contains("secretpw"), "{text}");
    }
}

/// The depth of every pool's queue of one deployment, for the operator console (which serves
/// all pools and knows their names only from the database).
#[derive(Clone)]
pub struct QueueDepths {
    conn: ConnectionManager,
    prefix: String,
}

impl QueueDepths {
    /// Connects to `url` (see [`connect_redis`]); `prefix` is the deployment's `REDIS_PREFIX`.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, QueueError> {
        Ok(QueueDepths { conn: connect_redis(url).await?, prefix: prefix.to_owned() })
    }

    /// The queue of `pool`: (ready now, scheduled for later), as [`JobQueue::depth`].
    pub async fn depth(&self, pool: &str) -> Result<(u64, u64), QueueError> {
        let settings =
            QueueSettings { name: format!("{}join:v1:{pool}", self.prefix), ..Default::default() };
        JobQueue::new(self.conn.clone(), &settings).depth().await
    }
}
