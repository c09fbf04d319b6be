//! The worker's operations port: `/healthz`, `/readyz` and Prometheus `/metrics` on one
//! listener.
//!
//! - `/healthz` (liveness) answers 200 while the process runs its apalis monitor. It checks no
//!   dependency on purpose: a Redis outage must not make Kubernetes restart every worker.
//! - `/readyz` (readiness) answers 200 when Postgres and Redis both answer within a short
//!   timeout, 503 with the failing dependency named otherwise.
//! - `/metrics` samples the state gauges (accounts by status, leases held, queue depth,
//!   whether the monitor runs and the dependencies answer) and renders every metric of
//!   [`crate::telemetry::metrics`] as Prometheus text.
//!
//! [`serve`] takes a bound listener and a shutdown future, so tests start it on port 0.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

use crate::lease::RedisLocks;
use crate::queue::JobQueue;
use crate::store::Store;
use crate::telemetry::metrics::Metrics;

/// How long one dependency check may take before it counts as down.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether the apalis monitor runs. The worker sets it around `worker::run`.
#[derive(Debug, Clone, Default)]
pub struct Liveness(Arc<AtomicBool>);

impl Liveness {
    pub fn set_running(&self, running: bool) {
        self.0.store(running, Ordering::SeqCst);
    }

    pub fn is_running(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// What the endpoints look at.
#[derive(Clone)]
pub struct Probes {
    pub liveness: Liveness,
    pub store: Store,
    pub locks: RedisLocks,
    pub queue: JobQueue,
    /// The pool this worker serves (a label of the queue depth).
    pub pool: String,
    pub metrics: &'static Metrics,
}

impl Probes {
    /// Checks Postgres and Redis; the names of those that did not answer.
    pub async fn not_ready(&self) -> Vec<String> {
        let (db, redis) = self.check().await;
        db.into_iter().chain(redis).collect()
    }

    /// Checks Postgres and Redis at once: what failed in each, `None` when it answered.
    async fn check(&self) -> (Option<String>, Option<String>) {
        let db = tokio::time::timeout(CHECK_TIMEOUT, self.store.ping());
        let redis = tokio::time::timeout(CHECK_TIMEOUT, self.queue.ping());
        let (db, redis) = tokio::join!(db, redis);
        let db = match db {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(format!("database: {e}")),
            Err(_) => Some(format!("database: no answer within {CHECK_TIMEOUT:?}")),
        };
        let redis = match redis {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(format!("redis: {}", e.detail())),
            Err(_) => Some(format!("redis: no answer within {CHECK_TIMEOUT:?}")),
        };
        (db, redis)
    }

    /// Reads the state gauges from the database and Redis into the metrics. A dependency that
    /// does not answer leaves its gauges at their last value.
    pub async fn sample(&self) {
        self.metrics.set_worker_running(&self.pool, self.liveness.is_running());
        let (db, redis) = self.check().await;
        self.metrics.set_dependency_up("database", db.is_none());
        self.metrics.set_dependency_up("redis", redis.is_none());
        let accounts = tokio::time::timeout(CHECK_TIMEOUT, self.store.account_status_counts());
        let leases = tokio::time::timeout(CHECK_TIMEOUT, async {
            let max_id = self
                .store
                .max_account_id()
                .await
                .map_err(|e| crate::redact::Chain(&e).to_string())?;
            self.locks.held_count(max_id).await.map_err(|e| crate::redact::Chain(&e).to_string())
        });
        let depth = tokio::time::timeout(CHECK_TIMEOUT, self.queue.depth());
        let (accounts, leases, depth) = tokio::join!(accounts, leases, depth);
        match accounts {
            Ok(Ok(rows)) => {
                let mut pools: Vec<&str> = rows.iter().map(|(p, _, _)| p.as_str()).collect();
                pools.dedup();
                for pool in pools {
                    let counts: Vec<_> = rows
                        .iter()
                        .filter(|(p, _, _)| p == pool)
                        .map(|(_, s, n)| (*s, *n))
                        .collect();
                    self.metrics.set_accounts(pool, &counts);
                }
            }
            Ok(Err(e)) => {
                debug!(error = %crate::redact::Chain(&e), "metrics: cannot count accounts")
            }
            Err(_) => debug!("metrics: counting accounts timed out"),
        }
        match leases {
            Ok(Ok(n)) => self.metrics.set_leases_held(n),
            Ok(Err(e)) => debug!(error = %e, "metrics: cannot count leases"),
            Err(_) => debug!("metrics: counting leases timed out"),
        }
        match depth {
            Ok(Ok((ready, scheduled))) => {
                self.metrics.set_queue_depth(&self.pool, ready, scheduled)
            }
            Ok(Err(e)) => {
                debug!(error = %crate::redact::Chain(&e), "metrics: cannot read the queue depth")
            }
            Err(_) => debug!("metrics: reading the queue depth timed out"),
        }
    }

    /// Samples every `every` until the process ends, so OTLP export sees fresh gauges too.
    pub async fn sample_every(self, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.sample().await;
        }
    }
}

/// Binds the operations port on all interfaces; port 0 picks a free one.
pub async fn bind(port: u16) -> std::io::Result<TcpListener> {
    TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port))).await
}

/// The routes, for [`serve`] and for tests.
pub fn router(probes: Probes) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(Arc::new(probes))
}

/// Serves the endpoints on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    probes: Probes,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    info!(addr = %addr, "operations endpoints on http://{addr} (/healthz, /readyz, /metrics)");
    axum::serve(listener, router(probes)).with_graceful_shutdown(shutdown).await
}

async fn healthz(State(p): State<Arc<Probes>>) -> Response {
    if p.liveness.is_running() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "the job monitor is not running\n").into_response()
    }
}

async fn readyz(State(p): State<Arc<Probes>>) -> Response {
    let down = p.not_ready().await;
    if down.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        warn!(problems = %down.join("; "), "not ready");
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {}\n", down.join("; ")))
            .into_response()
    }
}

async fn metrics(State(p): State<Arc<Probes>>) -> Response {
    p.sample().await;
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        p.metrics.render_prometheus(),
    )
        .into_response()
}
