//! Pacing efficiency: with N accounts and a pause p after every join, a batch of M targets
//! can settle no sooner than about (M/N)·p. `SmartJoiner::run_batch` (the `run` mode, the same
//! join procedure as the worker) on a fresh Postgres database with the instant in-process fake
//! is timed against that bound, and against SmartJoiner's one-account-at-a-time loop (M·p).

use std::sync::Arc;
use std::time::{Duration, Instant};

use smart_joiner::accounts_config::AccountsConfig;
use smart_joiner::domain::{JoinTask, Pacing, TargetLink};
use smart_joiner::join::{ExecutionOutcome, JoinDeps, JoinService};
use smart_joiner::lease::LocalLocks;
use smart_joiner::modes::batch::SmartJoiner;
use smart_joiner::store::Limits;
use smart_joiner::telegram::fake::{Script, ScriptedTelegram};

use crate::env::{FreshDb, machine};

#[derive(Debug, Clone, clap::Args)]
pub struct PacingArgs {
    /// Account counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "10,100")]
    pub accounts: Vec<usize>,
    /// Joins per account in the batch (M = N x this).
    #[arg(long, default_value_t = 10)]
    pub per_account: usize,
    /// The pause p after each join (JOIN_PAUSE_MIN = JOIN_PAUSE_MAX = p).
    #[arg(long, default_value = "1s", value_parser = smart_joiner::modes::wiring::parse_duration)]
    pub pause: Duration,
    /// Targets timed through the sequential loop (its time is extrapolated to M).
    #[arg(long, default_value_t = 20)]
    pub sequential_sample: usize,
}

fn service(db: &FreshDb, names: &[String], pause: Duration) -> anyhow::Result<JoinService> {
    let accounts = AccountsConfig::parse(&crate::throughput::dummy_accounts_json(names))?;
    Ok(JoinService::new(JoinDeps {
        store: db.store.clone(),
        locks: Arc::new(LocalLocks::default()),
        telegram: Arc::new(ScriptedTelegram::new(Script::default())),
        accounts: Arc::new(accounts),
        pacing: Pacing {
            join_pause_min: pause,
            join_pause_max: pause,
            error_pause: pause,
            ..Pacing::default()
        },
        limits: Limits { daily_join_cap: 100_000, channel_limit: 100_000 },
        call_timeout: Duration::from_secs(5),
        worker_name: "bench".into(),
    }))
}

pub async fn run(args: PacingArgs) -> anyhow::Result<bool> {
    println!("machine: {}", machine());
    let mut ok = true;
    for &n in &args.accounts {
        let m = n * args.per_account;
        let bound = args.pause.mul_f64(m as f64 / n as f64);

        // Parallel: run_batch.
        let db = FreshDb::create("pacing").await?;
        let names: Vec<String> = (0..n).map(|j| format!("acc_{j:04}")).collect();
        db.store.sync_accounts(&names, "default").await?;
        let links: Vec<TargetLink> =
            (0..m).map(|i| TargetLink::parse(&format!("@pacing_{i:06}")).unwrap()).collect();
        db.store.import_targets(&links, "bench").await?;
        let joiner = SmartJoiner::new(
            service(&db, &names, args.pause)?,
            "default",
            Duration::from_secs(3600),
        );
        let t = Instant::now();
        let report = joiner.run_batch("bench", m as u64).await?;
        let achieved = t.elapsed();
        let joined = report.by_status.get("joined").copied().unwrap_or(0);
        let efficiency = bound.as_secs_f64() / achieved.as_secs_f64();
        db.drop_db().await;

        // Sequential, as SmartJoiner's loop: one target at a time, sleep p after each.
        let db = FreshDb::create("pacing_seq").await?;
        db.store.sync_accounts(&names, "default").await?;
        db.store.import_targets(&links[..args.sequential_sample.min(m)], "bench").await?;
        let svc = service(&db, &names, Duration::ZERO)?;
        let queued = db.store.queue_new_targets("bench", m as u64, chrono::Utc::now()).await?;
        let t = Instant::now();
        for target in &queued {
            let job = JoinTask::new(target.id, "default").into_current();
            let mut out = svc.execute(&job).await?;
            while let ExecutionOutcome::Reschedule { job, .. } = out {
                out = svc.execute(&job).await?;
            }
            tokio::time::sleep(args.pause).await;
        }
        let per_target = t.elapsed().div_f64(queued.len().max(1) as f64);
        let sequential = per_target.mul_f64(m as f64);
        db.drop_db().await;

        println!(
            "pacing: N={n} M={m} p={:?}: bound (M/N)p = {:.2} s, run_batch settled in {:.2} s ({joined} joined), efficiency {:.3}; one-at-a-time loop {:.2} s per target -> M·p loop {:.1} s (measured on {} targets), speed-up {:.1}x",
            args.pause,
            bound.as_secs_f64(),
            achieved.as_secs_f64(),
            efficiency,
            per_target.as_secs_f64(),
            sequential.as_secs_f64(),
            queued.len(),
            sequential.as_secs_f64() / achieved.as_secs_f64()
        );
        if efficiency < 0.9 {
            ok = false;
        }
    }
    Ok(ok)
}
