//! The pool exporter (`smart-joiner exporter`): one small always-on process that reports, for
//! every pool, what autoscaling and the alert rules need, whether or not the pool has workers.
//!
//! A gauge exported by workers vanishes when a pool is scaled to zero, so nothing could wake
//! it; and the queue's raw size cannot tell work that is due from jobs that wait for a
//! FloodWait or a pause (apalis-redis keeps both in one sorted set). The exporter reads
//! Postgres and Redis directly and serves, per pool:
//!
//! - `due`: jobs due now (the ready list plus scheduled jobs whose time has come);
//! - `workable`: accounts that could start a join now (free, rested, below the caps, inside
//!   their active hours, their own or else the exporter's `ACTIVE_HOURS`: what the join's pick
//!   would take);
//! - `busy`: accounts held by a join in flight;
//! - `slots = busy + min(due, workable)`: the job slots the pool can use right now. A due job
//!   without a workable account would only be rescheduled, and a workable account without a
//!   due job has nothing to do; joins in flight keep their slots.
//!
//! `/scaling/{pool}` answers that as JSON for KEDA's `metrics-api` scaler (target value
//! `WORKER_CONCURRENCY`, so replicas = ceil(slots / concurrency)); `/metrics` renders the same
//! numbers as gauges, with the accounts by status, queue depth, in-doubt targets and leases,
//! for Prometheus and the alert rules. `/healthz` and `/readyz` behave as the worker's.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

use crate::config::{PoolArg, RedisPrefixArg};
use crate::domain::ActiveHours;
use crate::lease::RedisLocks;
use crate::modes::wiring::RedisArgs;
use crate::queue::JobQueue;
use crate::store::{Limits, Store};
use crate::telemetry::metrics::Metrics;

/// How long one read of a dependency may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// One pool as a scaler sees it at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolScaling {
    pub pool: String,
    /// Jobs due now.
    pub due: u64,
    /// Accounts that could start a join now.
    pub workable: u64,
    /// Accounts held by a join in flight.
    pub busy: u64,
}

impl PoolScaling {
    /// Job slots the pool can use now: `busy + min(due, workable)`.
    pub fn slots(&self) -> u64 {
        self.busy + self.due.min(self.workable)
    }
}

#[derive(Serialize)]
struct ScalingAnswer<'a> {
    #[serde(flatten)]
    pool: &'a PoolScaling,
    slots: u64,
}

/// What the exporter reads and where it records.
#[derive(Clone)]
pub struct Exporter {
    pub store: Store,
    /// Any queue on the deployment's Redis; each pool's queue is built from it.
    pub queue: JobQueue,
    pub locks: RedisLocks,
    /// The deployment's key prefix (`REDIS_PREFIX`), as the workers'.
    pub redis_prefix: String,
    /// Pools reported even while no account is in them; every pool of the database is too.
    pub pools: Vec<String>,
    pub limits: Limits,
    /// The active hours of accounts without their own (`ACTIVE_HOURS`, set as the workers'):
    /// an account outside its hours is not workable.
    pub active_hours: Option<ActiveHours>,
    pub metrics: &'static Metrics,
}

impl Exporter {
    /// The configured pools and every pool of the database, sorted, each once.
    pub async fn pools(&self) -> Result<Vec<String>, String> {
        let mut pools = tokio::time::timeout(CHECK_TIMEOUT, self.store.pools())
            .await
            .map_err(|_| format!("database: no answer within {CHECK_TIMEOUT:?}"))?
            .map_err(|e| format!("database: {e}"))?;
        pools.extend(self.pools.iter().cloned());
        pools.sort();
        pools.dedup();
        Ok(pools)
    }

    fn queue_of(&self, pool: &str) -> JobQueue {
        let args = RedisArgs {
            prefix: RedisPrefixArg { value: self.redis_prefix.clone() },
            pool: PoolArg { name: pool.to_owned() },
            queue_heartbeat: Duration::from_secs(10),
        };
        self.queue.sibling(&args.queue_settings())
    }

    /// Due jobs, workable and busy accounts of `pool`, read now.
    pub async fn scaling(&self, pool: &str) -> Result<PoolScaling, String> {
        self.store.resync_clock_if_due().await;
        let now = self.store.now();
        let queue = self.queue_of(pool);
        let due = tokio::time::timeout(CHECK_TIMEOUT, queue.due());
        let accounts =
            self.store.pool_accounts(pool, now, &self.limits, self.active_hours.as_ref());
        let accounts = tokio::time::timeout(CHECK_TIMEOUT, accounts);
        let (due, accounts) = tokio::join!(due, accounts);
        let due = due
            .map_err(|_| format!("redis: no answer within {CHECK_TIMEOUT:?}"))?
            .map_err(|e| format!("redis: {}", e.detail()))?;
        let accounts = accounts
            .map_err(|_| format!("database: no answer within {CHECK_TIMEOUT:?}"))?
            .map_err(|e| format!("database: {e}"))?;
        Ok(PoolScaling {
            pool: pool.to_owned(),
            due,
            workable: accounts.workable,
            busy: accounts.busy,
        })
    }

    /// Reads everything the gauges show into the metrics. What cannot be read keeps its last
    /// value, and the dependency that failed reads 0 in `smart_joiner_dependency_up`.
    pub async fn sample(&self) {
        let db_up = tokio::time::timeout(CHECK_TIMEOUT, self.store.ping()).await;
        let redis_up = tokio::time::timeout(CHECK_TIMEOUT, self.queue.ping()).await;
        let db_up = matches!(db_up, Ok(Ok(())));
        self.metrics.set_dependency_up("database", db_up);
        self.metrics.set_dependency_up("redis", matches!(redis_up, Ok(Ok(()))));
        if !db_up {
            return;
        }
        let pools = match self.pools().await {
            Ok(p) => p,
            Err(e) => return debug!(error = %e, "exporter: cannot list pools"),
        };
        match self.store.account_status_counts().await {
            Ok(rows) => {
                for pool in &pools {
                    let counts: Vec<_> = rows
                        .iter()
                        .filter(|(p, _, _)| p == pool)
                        .map(|(_, s, n)| (*s, *n))
                        .collect();
                    self.metrics.set_accounts(pool, &counts);
                }
            }
            Err(e) => debug!(error = %crate::redact::Chain(&e), "exporter: cannot count accounts"),
        }
        for pool in &pools {
            match self.scaling(pool).await {
                Ok(s) => self.metrics.set_pool_scaling(&s),
                Err(e) => debug!(pool = %pool, error = %e, "exporter: cannot read the pool"),
            }
            match self.queue_of(pool).depth().await {
                Ok((ready, scheduled)) => self.metrics.set_queue_depth(pool, ready, scheduled),
                Err(e) => debug!(pool = %pool, error = %e.detail(), "exporter: no queue depth"),
            }
        }
        match self.store.targets_in_doubt().await {
            Ok(n) => self.metrics.set_targets_in_doubt(n),
            Err(e) => {
                debug!(error = %crate::redact::Chain(&e), "exporter: cannot count in-doubt targets")
            }
        }
        let leases = match self.store.max_account_id().await {
            Ok(max_id) => self
                .locks
                .held_count(max_id)
                .await
                .map_err(|e| crate::redact::Chain(&e).to_string()),
            Err(e) => Err(crate::redact::Chain(&e).to_string()),
        };
        match leases {
            Ok(n) => self.metrics.set_leases_held(n),
            Err(e) => debug!(error = %e, "exporter: cannot count leases"),
        }
    }

    /// Postgres and Redis checks: what did not answer.
    async fn not_ready(&self) -> Vec<String> {
        let db = tokio::time::timeout(CHECK_TIMEOUT, self.store.ping());
        let redis = tokio::time::timeout(CHECK_TIMEOUT, self.queue.ping());
        let (db, redis) = tokio::join!(db, redis);
        let mut down = Vec::new();
        match db {
            Ok(Ok(())) => {}
            Ok(Err(e)) => down.push(format!("database: {e}")),
            Err(_) => down.push(format!("database: no answer within {CHECK_TIMEOUT:?}")),
        }
        match redis {
            Ok(Ok(())) => {}
            Ok(Err(e)) => down.push(format!("redis: {}", e.detail())),
            Err(_) => down.push(format!("redis: no answer within {CHECK_TIMEOUT:?}")),
        }
        down
    }

    /// Samples every `every` until the process ends (for OTLP export).
    pub async fn sample_every(self, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.sample().await;
        }
    }
}

/// The routes: `/healthz`, `/readyz`, `/metrics`, `/scaling/{pool}`.
pub fn router(exporter: Exporter) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/scaling/{pool}", get(scaling))
        .with_state(Arc::new(exporter))
}

/// `smart-joiner exporter`: connects the database and Redis, listens on `port` (all
/// interfaces), refreshes the gauges every `sample_interval` and serves until SIGINT or
/// SIGTERM; the database is closed in every case.
pub async fn run(
    settings: &crate::config::Settings,
    args: crate::config::ExporterArgs,
    metrics: &'static Metrics,
) -> anyhow::Result<()> {
    let crate::config::ExporterArgs { port, pools, redis_prefix, sample_interval } = args;
    let redis_prefix = redis_prefix.value;
    use crate::modes::wiring;
    use anyhow::Context as _;
    let redis = RedisArgs {
        prefix: RedisPrefixArg { value: redis_prefix.clone() },
        pool: PoolArg { name: crate::config::DEFAULT_POOL.to_owned() },
        queue_heartbeat: Duration::from_secs(10),
    };
    let wiring::Backends { store, locks, queue } =
        wiring::connect_backends(settings, &redis).await?;
    let listener = crate::ops::health::bind(port)
        .await
        .with_context(|| format!("cannot listen on the exporter port {port}"))?;
    let exporter = Exporter {
        store: store.clone(),
        queue,
        locks,
        redis_prefix,
        pools,
        limits: Limits {
            daily_join_cap: settings.daily_join_cap,
            channel_limit: settings.channel_limit,
        },
        active_hours: settings.active_hours.clone(),
        metrics,
    };
    let sampler = tokio::spawn(exporter.clone().sample_every(sample_interval));
    let stop = async {
        let _ = wiring::shutdown_signal().await;
    };
    let served = serve(listener, exporter, stop).await;
    sampler.abort();
    crate::ops::commands::finish(store, served.context("the exporter's port failed")).await
}

/// Serves the routes on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    exporter: Exporter,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    info!(addr = %addr, "exporter on http://{addr} (/healthz, /readyz, /metrics, /scaling/POOL)");
    axum::serve(listener, router(exporter)).with_graceful_shutdown(shutdown).await
}

async fn readyz(State(e): State<Arc<Exporter>>) -> Response {
    let down = e.not_ready().await;
    if down.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        warn!(problems = %down.join("; "), "not ready");
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {}\n", down.join("; ")))
            .into_response()
    }
}

async fn metrics(State(e): State<Arc<Exporter>>) -> Response {
    e.sample().await;
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        e.metrics.render_prometheus(),
    )
        .into_response()
}

/// `{"pool":..,"due":..,"workable":..,"busy":..,"slots":..}`, or 503 with `{"error":..}`
/// (KEDA then counts a failure and, after its threshold, applies the ScaledObject's fallback).
async fn scaling(State(e): State<Arc<Exporter>>, Path(pool): Path<String>) -> Response {
    let (code, body) = match e.scaling(&pool).await {
        Ok(s) => {
            (StatusCode::OK, serde_json::to_string(&ScalingAnswer { pool: &s, slots: s.slots() }))
        }
        Err(err) => {
            warn!(pool = %pool, error = %err, "scaling: cannot read the pool");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::to_string(&serde_json::json!({ "error": err })),
            )
        }
    };
    (code, [(header::CONTENT_TYPE, "application/json")], body.unwrap_or_default()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(due: u64, workable: u64, busy: u64) -> PoolScaling {
        PoolScaling { pool: "p".into(), due, workable, busy }
    }

    #[test]
    fn slots_are_joins_in_flight_plus_due_jobs_that_have_an_account() {
        // Work due, accounts to spare: one slot per due job.
        assert_eq!(pool(3, 10, 0).slots(), 3);
        // More due jobs than workable accounts: the extra jobs would only be rescheduled.
        assert_eq!(pool(500, 7, 2).slots(), 9);
        // Every account resting (FloodWait, pause): nothing due can run, only the joins in flight.
        assert_eq!(pool(40, 0, 1).slots(), 1);
        // Jobs waiting for a FloodWait are not due: an idle pool wants no slot.
        assert_eq!(pool(0, 12, 0).slots(), 0);
    }
}
