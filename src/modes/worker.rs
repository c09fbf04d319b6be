//! The distributed worker: an apalis-redis worker whose handler runs the join procedure.
//!
//! Every domain outcome is `Ok` to apalis (its Redis retries are fixed and ignore our pacing);
//! a reschedule is a new job pushed with the delay the pacing requires. Waits shorter than a
//! second are slept in the handler instead, because apalis schedules in whole seconds.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use apalis::prelude::{BackendExt, BoxDynError, Data, Monitor, WorkerBuilder, WorkerBuilderExt};
use chrono::{DateTime, Utc};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::domain::{JoinJobV1, JoinTask};
use crate::join::{ExecutionOutcome, JoinService};
use crate::queue::JobQueue;

/// Shortest delay that goes back through Redis; shorter ones are slept in the handler.
const SLEEP_BELOW: Duration = Duration::from_secs(1);
/// After an infrastructure error the job comes back after this long.
const INFRA_RETRY: Duration = Duration::from_secs(5);
/// Most follow-up jobs sent in one script call.
const FOLLOW_UP_BATCH: usize = 256;

#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Base of the worker name; a ULID is appended per start (apalis needs unique names).
    pub name: String,
    /// Jobs run at once by this process.
    pub concurrency: usize,
    /// How often an idle worker looks for due jobs.
    pub poll_interval: Duration,
    /// How long in-flight joins may take to finish after SIGTERM.
    pub shutdown_timeout: Duration,
}

struct HandlerCtx {
    service: JoinService,
    follow_ups: FollowUps,
    /// Every job runs in a task of its own, tracked here. apalis keeps its in-flight handler
    /// futures inside the worker's stream and drops them all when a backend error ends the
    /// worker (a restarted or wiped Redis: "worker not registered"; an acknowledgement after
    /// the job was handed to another worker). Dropping a join mid-flight is a crash in all but
    /// name: Telegram's answer (a FloodWait, say) is lost before it is recorded. A task of its
    /// own finishes its join, its decision and its follow-up push whatever becomes of the
    /// apalis worker that fetched it.
    joins: TaskTracker,
    /// Bounds the joins of the process, including those of a worker instance apalis dropped.
    slots: Arc<Semaphore>,
}

type FollowUp = (JoinJobV1, DateTime<Utc>, oneshot::Sender<Result<(), String>>);

/// The follow-up pushes of the jobs running at once, sent to Redis together: every push asked
/// for while the previous batch was on its way goes out in the next one, one script call for
/// all of them (apalis' batch push, the same idempotency keys and delays as one push each).
/// Each job waits for its own push to be answered before it returns, so apalis acknowledges
/// a job only once its follow-up is in Redis.
#[derive(Clone)]
struct FollowUps {
    tx: mpsc::UnboundedSender<FollowUp>,
}

impl FollowUps {
    /// Starts the task that sends the batches; it ends when every handle is dropped.
    fn start(queue: JobQueue) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(send_follow_ups(queue, rx));
        FollowUps { tx }
    }

    /// Pushes `job` due at `run_at` (see [`JobQueue::push`]); the error says why not.
    async fn push(&self, job: JoinJobV1, run_at: DateTime<Utc>) -> Result<(), String> {
        let (reply, answer) = oneshot::channel();
        let stopped = || "the follow-up sender stopped".to_owned();
        self.tx.send((job, run_at, reply)).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn send_follow_ups(queue: JobQueue, mut rx: mpsc::UnboundedReceiver<FollowUp>) {
    let mut batch = Vec::with_capacity(FOLLOW_UP_BATCH);
    while rx.recv_many(&mut batch, FOLLOW_UP_BATCH).await > 0 {
        let (jobs, replies): (Vec<_>, Vec<_>) =
            batch.drain(..).map(|(job, at, reply)| ((job, at), reply)).unzip();
        let result = queue.push_many(jobs).await.map_err(|e| crate::redact::Chain(&e).to_string());
        for reply in replies {
            let _ = reply.send(result.clone());
        }
    }
}

/// Handles one job until it is settled or pushed back to the queue.
async fn handle_job(service: &JoinService, follow_ups: &FollowUps, job: JoinJobV1) {
    let mut job = job;
    loop {
        match service.execute(&job).await {
            Ok(ExecutionOutcome::Done(_)) => return,
            Ok(ExecutionOutcome::Reschedule { job: next, run_at }) => {
                let wait = (run_at - service.store().now()).to_std().unwrap_or(Duration::ZERO);
                crate::telemetry::metrics::job_rescheduled(wait);
                if wait < SLEEP_BELOW {
                    tokio::time::sleep(wait).await;
                    job = next;
                    continue;
                }
                if let Err(e) = follow_ups.push(next, run_at).await {
                    // The target is `queued` (or `joining`) with next_run_at set: the producer
                    // recovers it.
                    warn!(target_id = job.target_id, error = %e, "follow-up push failed; left for recovery");
                }
                return;
            }
            Err(e) => {
                error!(target_id = job.target_id, error = %crate::redact::Chain(&e), "join step failed; retrying later");
                let run_at = service.store().now()
                    + chrono::Duration::from_std(INFRA_RETRY).unwrap_or_default();
                if let Err(e) = follow_ups.push(job.clone(), run_at).await {
                    warn!(target_id = job.target_id, error = %e, "retry push failed; left for recovery");
                }
                return;
            }
        }
    }
}

async fn apalis_handler(task: JoinTask, ctx: Data<Arc<HandlerCtx>>) -> Result<(), BoxDynError> {
    let ctx = Arc::clone(&ctx);
    let job = task.into_current();
    let target_id = job.target_id;
    let run = ctx.joins.clone().spawn(async move {
        let _slot = ctx.slots.clone().acquire_owned().await;
        handle_job(&ctx.service, &ctx.follow_ups, job).await;
    });
    if let Err(e) = run.await {
        // Only a panic ends the task early; the target stays in the database for recovery.
        error!(target_id, error = %crate::redact::Chain(&e), "join task failed");
    }
    Ok(())
}

/// Runs the worker until `shutdown` resolves; in-flight jobs then get `shutdown_timeout` to
/// finish. Returns when the monitor stops; the caller should exit the process then.
pub async fn run(
    service: JoinService,
    queue: JobQueue,
    opts: WorkerOptions,
    shutdown: impl Future<Output = std::io::Result<()>> + Send + 'static,
) -> Result<(), BoxDynError> {
    let joins = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(opts.concurrency.max(1)));
    let follow_ups = FollowUps::start(queue.clone());
    let ctx = Arc::new(HandlerCtx { service, follow_ups, joins: joins.clone(), slots });
    // When the signal came, so the joins still running after the monitor stopped (those of a
    // worker instance apalis dropped) get what is left of the shutdown timeout.
    let signalled = Arc::new(std::sync::OnceLock::new());
    let seen = signalled.clone();
    let shutdown = async move {
        let result = shutdown.await;
        let _ = seen.set(Instant::now());
        result
    };
    // One fetch brings as many jobs as the worker runs at once.
    let storage = queue.with_batch_size(opts.concurrency).storage();
    let factory_opts = opts.clone();
    let monitor = Monitor::new()
        .register(move |restarts| {
            let name = format!("{}-{}", factory_opts.name, ulid::Ulid::new());
            if restarts > 0 {
                warn!(worker = %name, restarts, "worker restarted");
            }
            WorkerBuilder::new(name)
                .backend(storage.clone().poll_with_interval(factory_opts.poll_interval))
                .data(ctx.clone())
                .concurrency(factory_opts.concurrency.max(1))
                .build(apalis_handler)
        })
        .should_restart(|_, err| {
            error!(error = %crate::redact::Chain(&err), "worker stopped on a backend error; restarting");
            true
        })
        .shutdown_timeout(opts.shutdown_timeout);
    info!(worker = %opts.name, concurrency = opts.concurrency, "worker started");
    let promoter = tokio::spawn(promote_due_jobs(queue, opts.poll_interval));
    let stopped = monitor.run_with_signal(shutdown).await;
    joins.close();
    let since = signalled.get().map_or(Duration::ZERO, Instant::elapsed);
    let left = opts.shutdown_timeout.saturating_sub(since);
    if tokio::time::timeout(left, joins.wait()).await.is_err() {
        warn!(running = joins.len(), "shutdown timeout reached with joins still running");
    }
    promoter.abort();
    stopped?;
    info!(worker = %opts.name, "worker stopped");
    Ok(())
}

/// Keeps the due part of the queue's scheduled set small (see [`JobQueue::promote_due`]).
async fn promote_due_jobs(queue: JobQueue, every: Duration) {
    let every = every.max(Duration::from_millis(50));
    let mut failing = false;
    loop {
        match queue.promote_due().await {
            Ok(_) if failing => {
                info!("moving due jobs to the ready list works again");
                failing = false;
            }
            Ok(_) => {}
            Err(e) if !failing => {
                warn!(error = %crate::redact::Chain(&e), "moving due jobs to the ready list failed; retrying");
                failing = true;
            }
            Err(_) => {}
        }
        tokio::time::sleep(every).await;
    }
}
