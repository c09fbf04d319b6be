//! Pacing efficiency: with N accounts and a pause p after every join, a batch of M = N x k
//! targets can settle no sooner than about (M/N)·p. Measured in both modes, on a fresh Postgres
//! database with the instant fake Telegram:
//!
//! - `run`: `SmartJoiner::run_batch` in this process (the single-machine mode);
//! - `distributed`: the real `producer` binary and K real `worker` processes (the hidden instant
//!   fake, `SMART_JOINER_FAKE_TELEGRAM`) through a private redis-server.
//!
//! Each run prints its settle time against the bound, the efficiency (bound / settle), and
//! where the time went: how late the last account made its first join (the ramp), and how long
//! after its rest ended each account started its next join (the gap), read from
//! `join_attempts`. Optionally (small N) SmartJoiner's one-account-at-a-time loop (M·p) is
//! timed on a sample of targets.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use sea_orm::{ConnectionTrait, Database, Statement};
use smart_joiner::accounts_config::AccountsConfig;
use smart_joiner::domain::{JoinTask, Pacing, TargetLink};
use smart_joiner::join::{ExecutionOutcome, JoinDeps, JoinService};
use smart_joiner::lease::LocalLocks;
use smart_joiner::modes::batch::SmartJoiner;
use smart_joiner::store::Limits;
use smart_joiner::telegram::fake::{Script, ScriptedTelegram};

use crate::env::{self, FreshDb, PrivateRedis, ProcEnv, machine};

#[derive(Debug, Clone, clap::Args)]
pub struct PacingArgs {
    /// Modes to measure: `run` (SmartJoiner::run_batch in process), `distributed` (the real
    /// producer and workers through Redis), or both.
    #[arg(long, value_delimiter = ',', default_value = "run,distributed")]
    pub mode: Vec<String>,
    /// Account counts to measure (N).
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    pub accounts: Vec<usize>,
    /// Joins per account in the batch (M = N x this).
    #[arg(long, default_value_t = 10)]
    pub per_account: usize,
    /// The pause p after each join (JOIN_PAUSE_MIN = JOIN_PAUSE_MAX = p). Default: 10 s, or
    /// N x 6 ms when that is longer (60 s at N = 10,000), so the rate the bound needs, N/p,
    /// stays at or below about 167 joins/s, well within what this machine joins end to end.
    #[arg(long, value_parser = smart_joiner::modes::wiring::parse_duration)]
    pub pause: Option<Duration>,
    /// Worker processes of the distributed mode.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Jobs per worker (the worker's --concurrency).
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Targets timed through SmartJoiner's one-at-a-time loop (its time is extrapolated to M);
    /// 0 skips it. Run only for N up to --sequential-up-to.
    #[arg(long, default_value_t = 5)]
    pub sequential_sample: usize,
    #[arg(long, default_value_t = 100)]
    pub sequential_up_to: usize,
    /// Where the `producer` and `worker` binaries are (default: next to this binary).
    #[arg(long)]
    pub bin_dir: Option<std::path::PathBuf>,
}

/// The default pause for `n` accounts (see [`PacingArgs::pause`]).
fn default_pause(n: usize) -> Duration {
    Duration::from_secs(10).max(Duration::from_millis(6 * n as u64))
}

/// The efficiency issue 15 asks for at `n` accounts.
fn target_for(n: usize) -> f64 {
    if (1000..10_000).contains(&n) { 0.95 } else { 0.9 }
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

/// A fresh database with `n` accounts and `m` new targets of niche `bench`.
async fn setup(tag: &str, names: &[String], m: usize) -> anyhow::Result<FreshDb> {
    let db = FreshDb::create(tag).await?;
    db.store.sync_accounts(names, "default").await?;
    let links: Vec<TargetLink> =
        (0..m).map(|i| TargetLink::parse(&format!("@pacing_{i:07}")).unwrap()).collect();
    for chunk in links.chunks(50_000) {
        db.store.import_targets(chunk, "bench").await?;
    }
    Ok(db)
}

/// Where the time of one run went, read from `join_attempts` afterwards.
struct Trail {
    joins: i64,
    attempts: i64,
    /// From the first join of the run to the last account's first join.
    ramp: f64,
    /// How long after its rest ended each account started its next join, in seconds.
    gap_mean: f64,
    gap_p50: f64,
    gap_p90: f64,
    gap_p99: f64,
    gap_max: f64,
    /// The shortest distance between two joins of one account, minus p (never negative:
    /// invariant 5).
    min_spacing: f64,
    /// From the first join to the last.
    span: f64,
}

impl std::fmt::Display for Trail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} joins in {} attempts; first to last join {:.2} s; ramp (last account's first join) {:.2} s; \
             next join after the rest ended: mean {:.3} s, p50 {:.3}, p90 {:.3}, p99 {:.3}, max {:.3}; \
             closest two joins of one account: p + {:.3} s",
            self.joins,
            self.attempts,
            self.span,
            self.ramp,
            self.gap_mean,
            self.gap_p50,
            self.gap_p90,
            self.gap_p99,
            self.gap_max,
            self.min_spacing
        )
    }
}

async fn trail(url: &str, pause: Duration) -> anyhow::Result<Trail> {
    let db = Database::connect(url).await?;
    let p = pause.as_secs_f64();
    let sql = format!(
        "WITH j AS (SELECT account_id, started_at, finished_at FROM join_attempts WHERE outcome = 'joined'), \
         firsts AS (SELECT min(started_at) AS f FROM j GROUP BY account_id), \
         g AS (SELECT extract(epoch FROM started_at - lag(finished_at) OVER w) - {p} AS gap, \
                      extract(epoch FROM started_at - lag(started_at) OVER w) - {p} AS spacing \
               FROM j WINDOW w AS (PARTITION BY account_id ORDER BY started_at)) \
         SELECT (SELECT count(*) FROM j)::bigint, (SELECT count(*) FROM join_attempts)::bigint, \
                coalesce(extract(epoch FROM (SELECT max(f) - min(f) FROM firsts)), 0)::float8, \
                coalesce(avg(gap), 0)::float8, \
                coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY gap), 0)::float8, \
                coalesce(percentile_cont(0.9) WITHIN GROUP (ORDER BY gap), 0)::float8, \
                coalesce(percentile_cont(0.99) WITHIN GROUP (ORDER BY gap), 0)::float8, \
                coalesce(max(gap), 0)::float8, coalesce(min(spacing), 0)::float8, \
                coalesce(extract(epoch FROM (SELECT max(started_at) - min(started_at) FROM j)), 0)::float8 \
         FROM g WHERE gap IS NOT NULL"
    );
    let row = db
        .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await?
        .context("no row")?;
    db.close().await.ok();
    Ok(Trail {
        joins: row.try_get_by_index(0)?,
        attempts: row.try_get_by_index(1)?,
        ramp: row.try_get_by_index(2)?,
        gap_mean: row.try_get_by_index(3)?,
        gap_p50: row.try_get_by_index(4)?,
        gap_p90: row.try_get_by_index(5)?,
        gap_p99: row.try_get_by_index(6)?,
        gap_max: row.try_get_by_index(7)?,
        min_spacing: row.try_get_by_index(8)?,
        span: row.try_get_by_index(9)?,
    })
}

/// One measurement: how long the batch took to settle and how many targets were joined.
struct Settled {
    elapsed: Duration,
    joined: usize,
    /// The producer run (distributed mode only).
    produced: Option<Duration>,
}

async fn run_mode(
    db: &FreshDb,
    names: &[String],
    m: usize,
    pause: Duration,
) -> anyhow::Result<Settled> {
    let joiner = SmartJoiner::new(service(db, names, pause)?, "default", Duration::from_secs(3600));
    let t = Instant::now();
    let report = joiner.run_batch("bench", m as u64).await?;
    let elapsed = t.elapsed();
    let joined = report.by_status.get("joined").copied().unwrap_or(0);
    Ok(Settled { elapsed, joined, produced: None })
}

async fn distributed_mode(
    db: &FreshDb,
    names: &[String],
    m: usize,
    pause: Duration,
    args: &PacingArgs,
    bound: Duration,
) -> anyhow::Result<Settled> {
    // Absolute: the children run in their own working directory.
    let bin_dir = std::path::absolute(env::bin_dir(args.bin_dir.as_deref())?)?;
    let work = tempfile::Builder::new().prefix("sj-pacing-").tempdir()?;
    let redis = PrivateRedis::start()?;
    let accounts_path = work.path().join("accounts_config.json");
    std::fs::write(&accounts_path, crate::throughput::dummy_accounts_json(names))?;
    let script = work.path().join("script.json");
    std::fs::write(&script, "{}")?;
    let p = format!("{}ms", pause.as_millis());
    let vars = vec![
        ("DATABASE_URL".to_owned(), db.url.clone()),
        ("REDIS_URL".into(), redis.url.clone()),
        ("REDIS_PREFIX".into(), "pacing:".into()),
        ("ACCOUNTS_CONFIG".into(), accounts_path.display().to_string()),
        ("JOIN_PAUSE_MIN".into(), p.clone()),
        ("JOIN_PAUSE_MAX".into(), p.clone()),
        ("ERROR_PAUSE".into(), p),
        ("DAILY_JOIN_CAP".into(), "100000".into()),
        ("CHANNEL_LIMIT".into(), "100000".into()),
        ("LEASE_TTL".into(), "20s".into()),
        ("CALL_TIMEOUT".into(), "5s".into()),
        ("QUEUE_HEARTBEAT".into(), "2s".into()),
        ("SMART_JOINER_FAKE_TELEGRAM".into(), script.display().to_string()),
    ];
    let penv = ProcEnv { bin_dir, work_dir: work.path().to_path_buf(), vars };
    let mut workers = Vec::new();
    for i in 0..args.workers {
        workers.push(penv.spawn_worker(&format!("pacing{i}"), args.concurrency)?);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    let t0 = Instant::now();
    let produced = penv.produce("bench", m as u64, "1h").await;
    let produced_in = t0.elapsed();
    let settled_sql =
        "SELECT count(*) FROM targets WHERE status IN ('joined', 'requested', 'error', 'banned')";
    let deadline = Instant::now() + bound.mul_f64(5.0).max(Duration::from_secs(120));
    let mut done = 0;
    let result = async {
        anyhow::ensure!(produced?, "the producer failed");
        let poller = crate::throughput::Poller::connect(&db.url).await?;
        while Instant::now() < deadline {
            done = poller.count(settled_sql).await?;
            if done as usize >= m {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        poller.close().await;
        Ok(())
    }
    .await;
    let elapsed = t0.elapsed();
    for w in &mut workers {
        env::stop_child(w, Duration::from_secs(10));
    }
    drop(redis);
    result?;
    if (done as usize) < m {
        println!("pacing[distributed]: only {done} of {m} targets settled within {deadline:?}");
    }
    let joined =
        crate::throughput::count(&db.url, "SELECT count(*) FROM targets WHERE status = 'joined'")
            .await? as usize;
    Ok(Settled { elapsed, joined, produced: Some(produced_in) })
}

/// SmartJoiner's loop: one target at a time, sleep p after each; per-target time.
async fn sequential(
    names: &[String],
    sample: usize,
    pause: Duration,
) -> anyhow::Result<(Duration, usize)> {
    let db = setup("pacing_seq", names, sample).await?;
    let svc = service(&db, names, Duration::ZERO)?;
    let queued = db.store.queue_new_targets("bench", sample as u64, chrono::Utc::now()).await?;
    let t = Instant::now();
    for target in &queued {
        let job = JoinTask::new(target.id, "default").into_current();
        let mut out = svc.execute(&job).await?;
        while let ExecutionOutcome::Reschedule { job, .. } = out {
            out = svc.execute(&job).await?;
        }
        tokio::time::sleep(pause).await;
    }
    let per_target = t.elapsed().div_f64(queued.len().max(1) as f64);
    db.drop_db().await;
    Ok((per_target, queued.len()))
}

fn uptime() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

pub async fn run(args: PacingArgs) -> anyhow::Result<bool> {
    println!("machine: {}", machine());
    for mode in &args.mode {
        anyhow::ensure!(
            mode == "run" || mode == "distributed",
            "unknown --mode {mode}: run or distributed"
        );
    }
    anyhow::ensure!(args.per_account > 0, "--per-account must be at least 1");
    let mut ok = true;
    for &n in &args.accounts {
        anyhow::ensure!(n > 0, "--accounts: every count must be at least 1");
        let m = n * args.per_account;
        let pause = args.pause.unwrap_or_else(|| default_pause(n));
        let bound = pause.mul_f64(m as f64 / n as f64);
        let names: Vec<String> = (0..n).map(|j| format!("acc_{j:05}")).collect();
        let target = target_for(n);
        for mode in &args.mode {
            let db = setup("pacing", &names, m).await?;
            let load_before = uptime();
            let settled = if mode == "run" {
                run_mode(&db, &names, m, pause).await
            } else {
                distributed_mode(&db, &names, m, pause, &args, bound).await
            };
            let settled = match settled {
                Ok(settled) => settled,
                Err(e) => {
                    db.drop_db().await;
                    return Err(e);
                }
            };
            let trail = trail(&db.url, pause).await?;
            db.drop_db().await;
            let efficiency = bound.as_secs_f64() / settled.elapsed.as_secs_f64();
            let setup = match (mode.as_str(), settled.produced) {
                ("distributed", Some(p)) => format!(
                    "producer + {} workers x {} (producer run {:.2} s)",
                    args.workers,
                    args.concurrency,
                    p.as_secs_f64()
                ),
                _ => "run_batch".to_owned(),
            };
            let verdict = if efficiency >= target { "met" } else { "MISSED" };
            println!(
                "pacing[{mode}]: N={n} M={m} p={pause:?}: bound (M/N)p = {:.1} s; {setup}: settled in {:.2} s ({} joined), efficiency {:.3} (target {target}: {verdict}); load {load_before} -> {}",
                bound.as_secs_f64(),
                settled.elapsed.as_secs_f64(),
                settled.joined,
                efficiency,
                uptime()
            );
            println!("pacing[{mode}]: N={n}: {trail}");
            if efficiency < target || settled.joined < m || trail.min_spacing < -0.001 {
                ok = false;
            }
        }
        if args.sequential_sample > 0 && n <= args.sequential_up_to {
            let (per_target, measured) = sequential(&names, args.sequential_sample, pause).await?;
            let loop_time = per_target.mul_f64(m as f64);
            println!(
                "pacing[one-at-a-time]: N={n} M={m}: {:.2} s per target (measured on {measured}) -> M·p loop {:.1} s, {:.1}x the bound",
                per_target.as_secs_f64(),
                loop_time.as_secs_f64(),
                loop_time.as_secs_f64() / bound.as_secs_f64()
            );
        }
    }
    Ok(ok)
}
