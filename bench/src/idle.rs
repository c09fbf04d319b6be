//! Idle cost: what real `worker` processes spend while every account rests and jobs wait for
//! them. 10,000 accounts rest (their `next_allowed_action_time` hours ahead, set by SQL), and
//! 10,000 then 100,000 jobs wait in the queue's scheduled set (queued targets whose jobs were
//! pushed through the project's `JobQueue`, due when the accounts are free again). Over a
//! window after a warm-up, per worker: Postgres statements/s (`pg_stat_statements` of a private
//! cluster this run starts), Redis commands/s (`INFO commandstats` of a private redis-server,
//! per command) and CPU (utime + stime from `/proc/PID/stat`, as % of one core).
//!
//! The cost of waiting must not grow with the number of waiting jobs, and a worker with
//! nothing due should spend under 1 % of a core.

use std::collections::BTreeMap;
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::Context;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};
use smart_joiner::domain::JoinJobV1;
use smart_joiner::queue::{JobQueue, QueueSettings};

use crate::env::{self, FreshDb, PrivatePostgres, PrivateRedis, ProcEnv, machine};
use crate::throughput::dummy_accounts_json;

#[derive(Debug, Clone, clap::Args)]
pub struct IdleArgs {
    #[arg(long, default_value_t = 10_000)]
    pub accounts: usize,
    /// Waiting jobs, measured in this order (the queue is topped up between measurements).
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    pub jobs: Vec<u64>,
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// The workers' poll interval (the production default).
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    pub poll_interval: Duration,
    /// Seconds after the jobs are pushed before the window opens.
    #[arg(long, default_value_t = 15)]
    pub warmup: u64,
    /// Seconds of the measurement window.
    #[arg(long, default_value_t = 60)]
    pub window: u64,
    #[arg(long)]
    pub bin_dir: Option<std::path::PathBuf>,
    /// Keep the Postgres cluster and its database (for inspection).
    #[arg(long)]
    pub keep: bool,
}

/// Clock ticks per second of `/proc/PID/stat`.
fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("process {pid} is gone"))?;
    // The command name (field 2) may hold spaces: the fields after it follow the last ')'.
    let rest = &stat[stat.rfind(')').context("odd /proc stat")? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the line are the 12th and 13th after the name.
    Ok(fields[11].parse::<u64>()? + fields[12].parse::<u64>()?)
}

/// Calls per command of a redis-server (`INFO commandstats`), and its CPU seconds.
async fn redis_stats(
    conn: &mut redis::aio::MultiplexedConnection,
) -> anyhow::Result<(BTreeMap<String, u64>, f64)> {
    let info: String = redis::cmd("INFO").arg("commandstats").query_async(conn).await?;
    let mut calls = BTreeMap::new();
    for line in info.lines() {
        let Some(rest) = line.strip_prefix("cmdstat_") else { continue };
        let Some((name, stats)) = rest.split_once(':') else { continue };
        let n = stats
            .split(',')
            .find_map(|kv| kv.strip_prefix("calls="))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        calls.insert(name.to_owned(), n);
    }
    let cpu: String = redis::cmd("INFO").arg("cpu").query_async(conn).await?;
    let secs: f64 = cpu
        .lines()
        .filter(|l| l.starts_with("used_cpu_sys:") || l.starts_with("used_cpu_user:"))
        .filter_map(|l| l.split_once(':').and_then(|(_, v)| v.trim().parse::<f64>().ok()))
        .sum();
    Ok((calls, secs))
}

/// Statements of `pg_stat_statements` in the run's database: (calls, exec ms, top by calls).
async fn pg_stats(db: &DatabaseConnection) -> anyhow::Result<(i64, f64, Vec<(i64, String)>)> {
    let backend = db.get_database_backend();
    let of_db = "dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                 AND query NOT LIKE '%pg_stat_statements%'";
    let row = db
        .query_one_raw(Statement::from_string(
            backend,
            format!(
                "SELECT COALESCE(sum(calls), 0)::bigint, COALESCE(sum(total_exec_time), 0)::float8 \
                 FROM pg_stat_statements WHERE {of_db}"
            ),
        ))
        .await?
        .context("no row")?;
    let calls: i64 = row.try_get_by_index(0)?;
    let ms: f64 = row.try_get_by_index(1)?;
    let top = db
        .query_all_raw(Statement::from_string(
            backend,
            format!(
                "SELECT calls, left(regexp_replace(query, '\\s+', ' ', 'g'), 110) \
                 FROM pg_stat_statements WHERE {of_db} ORDER BY calls DESC LIMIT 6"
            ),
        ))
        .await?
        .into_iter()
        .map(|r| Ok((r.try_get_by_index::<i64>(0)?, r.try_get_by_index::<String>(1)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok((calls, ms, top))
}

/// One measurement: figures over the window, for all workers together.
struct Window {
    jobs: u64,
    secs: f64,
    pg_calls: i64,
    pg_ms: f64,
    redis_calls: BTreeMap<String, u64>,
    redis_cpu: f64,
    cpu_pct: Vec<f64>,
}

pub async fn run(args: IdleArgs) -> anyhow::Result<bool> {
    println!("machine: {}", machine());
    println!(
        "idle: {} accounts resting, waiting jobs {:?}, {} workers x {} (poll interval {:?}), \
         warm-up {} s, window {} s",
        args.accounts,
        args.jobs,
        args.workers,
        args.concurrency,
        args.poll_interval,
        args.warmup,
        args.window
    );
    let bin_dir = env::bin_dir(args.bin_dir.as_deref())?;
    let mut pg = PrivatePostgres::start_with(
        "-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all",
    )?;
    let db = FreshDb::create_on(&pg.admin_url, "idle").await?;
    db.exec("CREATE EXTENSION IF NOT EXISTS pg_stat_statements").await?;
    let stats_db = Database::connect(db.url.as_str()).await?;
    let redis = PrivateRedis::start()?;
    let mut redis_conn =
        redis::Client::open(redis.url.as_str())?.get_multiplexed_async_connection().await?;
    let work = tempfile::Builder::new().prefix("sj-idle-").tempdir()?;

    let names: Vec<String> = (0..args.accounts).map(|j| format!("acc_{j:05}")).collect();
    let accounts_path = work.path().join("accounts_config.json");
    std::fs::write(&accounts_path, dummy_accounts_json(&names))?;
    let script = work.path().join("script.json");
    std::fs::write(&script, "{}")?;
    db.store.sync_accounts(&names, "default").await?;
    // Every account rests for three hours; the jobs are due in two to three hours.
    db.exec("UPDATE accounts SET next_allowed_action_time = now() + interval '3 hours'").await?;
    let base = chrono::Utc::now().timestamp() + 2 * 3600;

    let prefix = "idle:";
    let vars = vec![
        ("DATABASE_URL".to_owned(), db.url.clone()),
        ("REDIS_URL".into(), redis.url.clone()),
        ("REDIS_PREFIX".into(), prefix.into()),
        ("ACCOUNTS_CONFIG".into(), accounts_path.display().to_string()),
        ("SMART_JOINER_FAKE_TELEGRAM".into(), script.display().to_string()),
    ];
    let penv = ProcEnv { bin_dir, work_dir: work.path().to_path_buf(), vars };
    let mut workers: Vec<Child> = Vec::new();
    for i in 0..args.workers {
        let log = std::fs::File::create(work.path().join(format!("idle{i}.out")))?;
        let child = penv
            .command("worker")
            .args(["--name", &format!("idle{i}"), "--concurrency", &args.concurrency.to_string()])
            .arg("--poll-interval")
            .arg(humantime::format_duration(args.poll_interval).to_string())
            .args(["--shutdown-timeout", "5s"])
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawn worker")?;
        workers.push(child);
    }

    let queue = JobQueue::new(
        smart_joiner::queue::connect_redis(&redis.url).await?,
        &QueueSettings { name: format!("{prefix}join:v1:default"), ..QueueSettings::default() },
    );
    let ticks = clock_ticks();
    let mut windows = Vec::new();
    let mut have = 0u64;
    let result: anyhow::Result<()> = async {
        for &jobs in &args.jobs {
            if jobs > have {
                let t = Instant::now();
                top_up(&db, &queue, have, jobs, base).await?;
                println!(
                    "idle: {} more queued targets and jobs ({jobs} in all) in {:.1} s",
                    jobs - have,
                    t.elapsed().as_secs_f64()
                );
                have = jobs;
            }
            let (ready, scheduled) = queue.depth().await?;
            tokio::time::sleep(Duration::from_secs(args.warmup)).await;
            for w in &mut workers {
                anyhow::ensure!(w.try_wait()?.is_none(), "a worker exited; see its log");
            }
            stats_db.execute_unprepared("SELECT pg_stat_statements_reset()").await?;
            let (redis0, rcpu0) = redis_stats(&mut redis_conn).await?;
            let cpu0: Vec<u64> =
                workers.iter().map(|w| cpu_ticks(w.id())).collect::<anyhow::Result<_>>()?;
            let t0 = Instant::now();
            tokio::time::sleep(Duration::from_secs(args.window)).await;
            let cpu1: Vec<u64> =
                workers.iter().map(|w| cpu_ticks(w.id())).collect::<anyhow::Result<_>>()?;
            let secs = t0.elapsed().as_secs_f64();
            let (redis1, rcpu1) = redis_stats(&mut redis_conn).await?;
            let (pg_calls, pg_ms, top) = pg_stats(&stats_db).await?;
            let (ready1, scheduled1) = queue.depth().await?;
            let mut redis_calls = BTreeMap::new();
            for (cmd, n) in &redis1 {
                let d = n - redis0.get(cmd).copied().unwrap_or(0);
                // The bench's own INFO calls are not the workers'.
                if d > 0 && cmd != "info" {
                    redis_calls.insert(cmd.clone(), d);
                }
            }
            let cpu_pct: Vec<f64> = cpu0
                .iter()
                .zip(&cpu1)
                .map(|(a, b)| (b - a) as f64 / ticks / secs * 100.0)
                .collect();
            println!(
                "idle[{jobs} jobs]: queue before the window {ready} ready, {scheduled} scheduled; \
                 after {ready1} ready, {scheduled1} scheduled"
            );
            for (calls, query) in &top {
                println!("idle[{jobs} jobs]:   pg {calls:>6} x {query}");
            }
            let w = Window {
                jobs,
                secs,
                pg_calls,
                pg_ms,
                redis_calls,
                redis_cpu: rcpu1 - rcpu0,
                cpu_pct,
            };
            print_window(&w, args.workers);
            windows.push(w);
        }
        Ok(())
    }
    .await;
    for w in &mut workers {
        env::stop_child(w, Duration::from_secs(10));
    }
    result?;

    let mut ok = true;
    let per_worker = |w: &Window| {
        let redis: u64 = w.redis_calls.values().sum();
        (
            w.pg_calls as f64 / w.secs / args.workers as f64,
            redis as f64 / w.secs / args.workers as f64,
            w.cpu_pct.iter().cloned().fold(0.0, f64::max),
        )
    };
    for w in &windows {
        let (_, _, cpu) = per_worker(w);
        let met = cpu < 1.0;
        ok &= met;
        println!(
            "idle: target under 1 % of a core per worker with {} waiting jobs: {} (busiest {cpu:.2} %)",
            w.jobs,
            if met { "met" } else { "MISSED" }
        );
    }
    if let [first, .., last] = &windows[..] {
        let (p0, r0, c0) = per_worker(first);
        let (p1, r1, c1) = per_worker(last);
        // Flat: within 20 % (or a small absolute slack, for figures near zero).
        let flat = |a: f64, b: f64, slack: f64| b <= a * 1.2 + slack;
        let grows = !(flat(p0, p1, 0.5) && flat(r0, r1, 1.0) && flat(c0, c1, 0.2));
        println!(
            "idle: from {} to {} waiting jobs, per worker: statements/s {p0:.2} -> {p1:.2}, \
             Redis commands/s {r0:.2} -> {r1:.2}, CPU {c0:.2} % -> {c1:.2} %: {}",
            first.jobs,
            last.jobs,
            if grows { "GROWS with the waiting jobs" } else { "does not grow" }
        );
        ok &= !grows;
    }
    stats_db.close().await.ok();
    drop(redis);
    if args.keep {
        println!("idle: kept database {} in the cluster at {}", db.name, pg.keep().display());
    } else {
        db.drop_db().await;
    }
    Ok(ok)
}

fn print_window(w: &Window, workers: usize) {
    let k = workers as f64;
    let redis: u64 = w.redis_calls.values().sum();
    let per_cmd: Vec<String> = w
        .redis_calls
        .iter()
        .map(|(cmd, n)| format!("{cmd} {:.2}", *n as f64 / w.secs / k))
        .collect();
    let cpu: Vec<String> = w.cpu_pct.iter().map(|c| format!("{c:.2} %")).collect();
    println!(
        "idle[{} jobs]: {:.0} s window, per worker: Postgres {:.2} statements/s ({:.2} ms of \
         execution/s), Redis {:.2} commands/s ({}), CPU {} of one core; redis-server CPU {:.2} %",
        w.jobs,
        w.secs,
        w.pg_calls as f64 / w.secs / k,
        w.pg_ms / w.secs / k,
        redis as f64 / w.secs / k,
        per_cmd.join(", "),
        cpu.join(", "),
        w.redis_cpu / w.secs * 100.0
    );
}

/// Adds targets `have + 1 ..= want` as `queued` (due in two to three hours, the ids spread
/// over that hour) and pushes their jobs through the project's queue, due at the same time.
async fn top_up(
    db: &FreshDb,
    queue: &JobQueue,
    have: u64,
    want: u64,
    base: i64,
) -> anyhow::Result<()> {
    db.exec(&format!(
        "INSERT INTO targets (link, kind, niche, status, attempts, in_doubt_tries, enqueued_at, \
         next_run_at, created_at, updated_at) \
         SELECT '@idle_target_' || g, 'username', 'idle', 'queued', 0, 0, now(), \
                to_timestamp({base} + g % 3600), now(), now() \
         FROM generate_series({}, {want}) g",
        have + 1
    ))
    .await?;
    let conn = Database::connect(db.url.as_str()).await?;
    let rows = conn
        .query_all_raw(Statement::from_string(
            conn.get_database_backend(),
            format!("SELECT id, next_run_at FROM targets WHERE link LIKE '@idle_target_%' AND id > {have} ORDER BY id"),
        ))
        .await?;
    conn.close().await.ok();
    let mut batch = Vec::with_capacity(1000);
    for row in rows {
        let id: i64 = row.try_get_by_index(0)?;
        let due: chrono::DateTime<chrono::Utc> = row.try_get_by_index(1)?;
        let job = JoinJobV1 {
            target_id: id,
            pool: "default".into(),
            excluded_accounts: Vec::new(),
            generation: 0,
            wait_for: None,
        };
        batch.push((job, due));
        if batch.len() == 1000 {
            queue.push_many(std::mem::take(&mut batch)).await?;
        }
    }
    queue.push_many(batch).await?;
    Ok(())
}
