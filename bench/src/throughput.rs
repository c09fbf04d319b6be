//! Overhead: end-to-end joins per second with zero pacing through the real producer, Redis,
//! real workers and Postgres, Telegram being either the instant in-process fake (the workers'
//! hidden `--fake-telegram`) or tgsim through the grammers adapter; next to pgbench running
//! the same database writes on the same database.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use sea_orm::{ConnectionTrait, Database, Statement};
use smart_joiner::domain::TargetLink;
use tgsim::{Account, Group, Scenario, Server};

use crate::cpu::CpuSnapshot;
use crate::env::{self, FreshDb, PrivateRedis, ProcEnv, machine};
use crate::redis_stats::RedisSnapshot;

#[derive(Debug, Clone, clap::Args)]
pub struct ThroughputArgs {
    #[arg(long, default_value_t = 5000)]
    pub targets: usize,
    #[arg(long, default_value_t = 200)]
    pub accounts: usize,
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Jobs per worker. 16 settles fastest here: 32 gives 20 % less (more jobs than the
    /// pool's 10 connections, more collisions on the same accounts).
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// `fake`, `tgsim` or both.
    #[arg(long, value_delimiter = ',', default_value = "fake,tgsim")]
    pub telegram: Vec<String>,
    /// Seconds of each pgbench script (0: skip pgbench).
    #[arg(long, default_value_t = 15)]
    pub pgbench_seconds: u64,
    /// pgbench clients (the two workers hold up to 2 x 10 connections).
    #[arg(long, default_value_t = 16)]
    pub pgbench_clients: u32,
    #[arg(long)]
    pub bin_dir: Option<std::path::PathBuf>,
}

/// accounts_config.json with valid but unusable sessions (the fake never connects).
pub fn dummy_accounts_json(names: &[String]) -> String {
    let mut s = Scenario::new();
    for (j, name) in names.iter().enumerate() {
        s = s.account(Account::new(name.clone(), 1000 + j as i64));
    }
    let addr = "127.0.0.1:1".parse().unwrap();
    serde_json::to_string(&s.accounts_config_json(addr)).unwrap()
}

/// Counts settled targets while a run goes on, on one connection for the whole run: a new
/// connection per poll (ten a second) cost Postgres a backend start and a TLS handshake each,
/// on the same two cores as the run it measures.
pub struct Poller {
    db: sea_orm::DatabaseConnection,
}

impl Poller {
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let mut opts = sea_orm::ConnectOptions::new(url.to_owned());
        opts.max_connections(1).min_connections(1).sqlx_logging(false);
        Ok(Poller { db: Database::connect(opts).await? })
    }

    pub async fn count(&self, sql: &str) -> anyhow::Result<i64> {
        let stmt = Statement::from_string(self.db.get_database_backend(), sql.to_owned());
        let row = self.db.query_one_raw(stmt).await?.context("no row")?;
        Ok(row.try_get_by_index::<i64>(0)?)
    }

    pub async fn close(self) {
        self.db.close().await.ok();
    }
}

/// One count on a connection of its own.
pub async fn count(url: &str, sql: &str) -> anyhow::Result<i64> {
    let poller = Poller::connect(url).await?;
    let n = poller.count(sql).await;
    poller.close().await;
    n
}

pub async fn run(args: ThroughputArgs) -> anyhow::Result<bool> {
    println!("machine: {}", machine());
    let bin_dir = env::bin_dir(args.bin_dir.as_deref())?;
    let mut ok = true;
    let mut last_db: Option<FreshDb> = None;
    let mut fake_rate = None;
    for mode in &args.telegram {
        let work = tempfile::Builder::new().prefix("sj-throughput-").tempdir()?;
        let db = FreshDb::create("tput").await?;
        let redis = PrivateRedis::start()?;
        let names: Vec<String> = (0..args.accounts).map(|j| format!("acc_{j:04}")).collect();
        let accounts_path = work.path().join("accounts_config.json");
        let mut server = None;
        let mut vars = vec![
            ("DATABASE_URL".to_owned(), db.url.clone()),
            ("REDIS_URL".into(), redis.url.clone()),
            ("REDIS_PREFIX".into(), "tput:".into()),
            ("ACCOUNTS_CONFIG".into(), accounts_path.display().to_string()),
            ("JOIN_PAUSE_MIN".into(), "0s".into()),
            ("JOIN_PAUSE_MAX".into(), "0s".into()),
            ("ERROR_PAUSE".into(), "0s".into()),
            ("DAILY_JOIN_CAP".into(), "1000000".into()),
            ("CHANNEL_LIMIT".into(), "1000000".into()),
            ("LEASE_TTL".into(), "20s".into()),
            ("CALL_TIMEOUT".into(), "5s".into()),
            ("QUEUE_HEARTBEAT".into(), "2s".into()),
        ];
        match mode.as_str() {
            "fake" => {
                std::fs::write(&accounts_path, dummy_accounts_json(&names))?;
                let script = work.path().join("script.json");
                std::fs::write(&script, "{}")?;
                vars.push(("SMART_JOINER_FAKE_TELEGRAM".into(), script.display().to_string()));
            }
            "tgsim" => {
                let mut s = Scenario::new();
                for (j, name) in names.iter().enumerate() {
                    s = s.account(Account::new(name.clone(), 1000 + j as i64));
                }
                for i in 0..args.targets {
                    s = s.group(
                        Group::new(5_000_000 + i as i64, format!("G{i}"))
                            .username(format!("tput_{i:06}")),
                    );
                }
                let srv = Server::start(s, "127.0.0.1:0").await?;
                std::fs::write(
                    &accounts_path,
                    serde_json::to_string(&srv.accounts_config_json())?,
                )?;
                server = Some(srv);
            }
            other => anyhow::bail!("unknown --telegram {other}: fake or tgsim"),
        }
        db.store.sync_accounts(&names, "default").await?;
        let links: Vec<TargetLink> = (0..args.targets)
            .map(|i| TargetLink::parse(&format!("@tput_{i:06}")).unwrap())
            .collect();
        db.store.import_targets(&links, "bench").await?;

        let penv = ProcEnv { bin_dir: bin_dir.clone(), work_dir: work.path().to_path_buf(), vars };
        let mut workers = Vec::new();
        for i in 0..args.workers {
            workers.push(penv.spawn_worker(&format!("tput{i}"), args.concurrency)?);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;

        let redis_before = RedisSnapshot::take(&redis.url).await?;
        let worker_pids: Vec<u32> = workers.iter().map(|w| w.id()).collect();
        let cpu_before = CpuSnapshot::take(&worker_pids);
        let t0 = Instant::now();
        anyhow::ensure!(penv.produce("bench", args.targets as u64, "1h").await?, "producer failed");
        let produced = t0.elapsed();
        let settled_sql = "SELECT count(*) FROM targets WHERE status IN ('joined', 'requested', 'error', 'banned')";
        let deadline = Instant::now() + Duration::from_secs(600);
        let mut done = 0;
        let poller = Poller::connect(&db.url).await?;
        while Instant::now() < deadline {
            done = poller.count(settled_sql).await?;
            if done as usize >= args.targets {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let elapsed = t0.elapsed();
        poller.close().await;
        let rate = done as f64 / elapsed.as_secs_f64();
        let cpu = cpu_before.until(&CpuSnapshot::take(&worker_pids), done.max(0) as u64);
        let redis_used = redis_before.until(&RedisSnapshot::take(&redis.url).await?);
        let joined = count(&db.url, "SELECT count(*) FROM targets WHERE status = 'joined'").await?;
        for w in &mut workers {
            env::stop_child(w, Duration::from_secs(10));
        }
        let target = if mode == "fake" { 1000.0 } else { 200.0 };
        println!(
            "throughput[{mode}]: {} targets, {} accounts, {} workers x {}: producer {:.2} s, all settled in {:.2} s ({joined} joined) = {rate:.0} joins/s (target {target:.0}: {})",
            args.targets,
            args.accounts,
            args.workers,
            args.concurrency,
            produced.as_secs_f64(),
            elapsed.as_secs_f64(),
            if rate >= target { "met" } else { "MISSED" }
        );
        println!("throughput[{mode}]: redis: {}", redis_used.per_job(done.max(0) as u64));
        println!("throughput[{mode}]: CPU per job: {}", cpu.describe(Some("workers"), "producer"));
        if rate < target {
            ok = false;
        }
        if mode == "fake" {
            fake_rate = Some(rate);
        }
        if let Some(s) = server {
            let v = s.violations();
            if !v.is_empty() {
                println!("throughput[{mode}]: tgsim saw {} violations", v.len());
            }
            s.shutdown().await;
        }
        drop(redis);
        if let Some(old) = last_db.replace(db) {
            old.drop_db().await;
        }
    }
    if let Some(db) = last_db {
        if args.pgbench_seconds > 0 {
            let full_tps = pgbench(&db, &args).await?;
            if let (Some(rate), Some(tps)) = (fake_rate, full_tps) {
                let ratio = rate / tps;
                println!(
                    "throughput: end to end (fake) / pgbench[full join] = {rate:.0} / {tps:.0} = {ratio:.2} (target 0.80: {})",
                    if ratio >= 0.8 { "met" } else { "MISSED" }
                );
                if ratio < 0.8 {
                    ok = false;
                }
            }
        }
        db.drop_db().await;
    }
    Ok(ok)
}

/// `Store::apply_decision` for a join, as the one statement it is on Postgres.
const APPLY_SQL: &str = r#"\set tid random(1, :ntargets)
\set aid (:tid % :naccounts) + 1
WITH t0 AS (SELECT id, assigned_account_id FROM targets WHERE id = :tid FOR UPDATE), a AS (UPDATE accounts SET last_action_at = now(), updated_at = now(), status = 'active', status_reason = NULL, next_allowed_action_time = now(), held_until = NULL, bound_targets = bound_targets + (SELECT count(*) FROM t0 WHERE assigned_account_id IS NULL) WHERE id = :aid AND lease_epoch = lease_epoch AND EXISTS (SELECT 1 FROM t0) RETURNING id), t AS (UPDATE targets SET attempts = attempts + 1, updated_at = now(), claimed_account_id = NULL, claim_epoch = NULL, in_doubt_tries = 0, status = 'joined', assigned_account_id = :aid, next_run_at = NULL, error_code = NULL, error_message = NULL, joined_at = now(), warmup_ends_at = now() + interval '24 hours' WHERE id IN (SELECT id FROM t0) AND EXISTS (SELECT 1 FROM a) RETURNING id), i AS (INSERT INTO join_attempts (target_id, account_id, epoch, started_at, finished_at, outcome, worker) SELECT :tid, :aid, 1, now(), now(), 'joined', 'pgbench' WHERE EXISTS (SELECT 1 FROM t) RETURNING id) SELECT count(*) FROM i;
"#;

/// Every statement one join makes on Postgres (`bench history` counts them): pick accounts (4
/// of the 64 least recently active free ones, below the channel limit by the count on the row
/// and below the daily cap by a count that stops at the cap), take the account and claim the
/// target, returning it (one statement), the gate before the join is sent, then the decision
/// (one statement, counting the binding on the account).
const FULL_SQL: &str = r#"\set tid random(1, :ntargets)
\set aid (:tid % :naccounts) + 1
SELECT * FROM (SELECT * FROM (SELECT * FROM accounts WHERE pool = 'default' AND status IN ('active', 'flood_wait', 'cooldown') AND (next_allowed_action_time IS NULL OR next_allowed_action_time <= now()) AND (held_until IS NULL OR held_until <= now()) ORDER BY last_action_at ASC NULLS FIRST, id ASC LIMIT 64) accounts ORDER BY RANDOM() LIMIT 64) accounts WHERE accounts.bound_targets < 1000000 AND (SELECT count(*) FROM (SELECT 1 FROM join_attempts a WHERE a.account_id = accounts.id AND a.outcome IN ('joined', 'already_participant', 'requested') AND a.finished_at > now() - interval '24 hours' AND a.finished_at <= now() LIMIT 1000000) c) < 1000000 LIMIT 4;
WITH t0 AS (SELECT id FROM targets WHERE id = :tid AND (assigned_account_id IS NULL OR assigned_account_id = :aid) FOR UPDATE), a AS (UPDATE accounts SET lease_epoch = lease_epoch + 1, held_until = now() + interval '20 seconds', next_allowed_action_time = now() WHERE id = :aid AND EXISTS (SELECT 1 FROM t0) RETURNING lease_epoch), t AS (UPDATE targets SET status = 'joining', claimed_account_id = :aid, claim_epoch = (SELECT lease_epoch FROM a), updated_at = now() WHERE id IN (SELECT id FROM t0) AND EXISTS (SELECT 1 FROM a) RETURNING *) SELECT (SELECT lease_epoch FROM a) AS taken_epoch, (SELECT count(*) FROM t0) AS claimable, t.* FROM (SELECT 1) AS one LEFT JOIN t ON TRUE;
UPDATE accounts SET held_until = now() + interval '20 seconds', next_allowed_action_time = CASE WHEN next_allowed_action_time IS NULL OR next_allowed_action_time < now() THEN now() ELSE next_allowed_action_time END WHERE id = :aid AND lease_epoch = lease_epoch AND held_until > now();
WITH t0 AS (SELECT id, assigned_account_id FROM targets WHERE id = :tid FOR UPDATE), a AS (UPDATE accounts SET last_action_at = now(), updated_at = now(), status = 'active', status_reason = NULL, next_allowed_action_time = now(), held_until = NULL, bound_targets = bound_targets + (SELECT count(*) FROM t0 WHERE assigned_account_id IS NULL) WHERE id = :aid AND EXISTS (SELECT 1 FROM t0) RETURNING id), t AS (UPDATE targets SET attempts = attempts + 1, updated_at = now(), claimed_account_id = NULL, claim_epoch = NULL, in_doubt_tries = 0, status = 'joined', assigned_account_id = :aid, next_run_at = NULL, error_code = NULL, error_message = NULL, joined_at = now(), warmup_ends_at = now() + interval '24 hours' WHERE id IN (SELECT id FROM t0) AND EXISTS (SELECT 1 FROM a) RETURNING id), i AS (INSERT INTO join_attempts (target_id, account_id, epoch, started_at, finished_at, outcome, worker) SELECT :tid, :aid, 1, now(), now(), 'joined', 'pgbench' WHERE EXISTS (SELECT 1 FROM t) RETURNING id) SELECT count(*) FROM i;
"#;

/// Runs both scripts; returns the full join's transactions per second.
async fn pgbench(db: &FreshDb, args: &ThroughputArgs) -> anyhow::Result<Option<f64>> {
    let dir = tempfile::tempdir()?;
    let mut full_tps = None;
    // Every target is bound to the account its transactions take (`aid`), so every take claims
    // its target and the gate finds the hold, as in a real join: on targets bound to other
    // accounts by the end-to-end run, the take and the gate wrote nothing in up to half of the
    // transactions, and pgbench measured less work than a join does.
    db.exec(&format!("UPDATE targets SET assigned_account_id = (id % {}) + 1", args.accounts))
        .await?;
    // Each claiming take raises its account's epoch by one.
    let takes_sql = "SELECT COALESCE(sum(lease_epoch), 0)::bigint FROM accounts";
    let takes_before = count(&db.url, takes_sql).await?;
    // The full join first: the decision script inserts an attempt per transaction, and the
    // pick's cap count reads the attempts of the last 24 h.
    for (name, sql) in [("full join", FULL_SQL), ("apply", APPLY_SQL)] {
        let file = dir.path().join(format!("{}.sql", name.replace(' ', "_")));
        std::fs::write(&file, sql)?;
        let cpu_before = CpuSnapshot::take(&[]);
        let out = Command::new("pgbench")
            .args(["-n", "-M", "prepared", "-c", &args.pgbench_clients.to_string(), "-j", "2"])
            .args(["-T", &args.pgbench_seconds.to_string()])
            .args(["-D", &format!("ntargets={}", args.targets)])
            .args(["-D", &format!("naccounts={}", args.accounts)])
            .arg("-f")
            .arg(&file)
            .arg(&db.url)
            .output()
            .context("pgbench must be installed (postgresql-contrib)")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let tps = text.lines().find(|l| l.starts_with("tps")).unwrap_or("no tps line").to_owned();
        let lat = text.lines().find(|l| l.starts_with("latency average")).unwrap_or("").to_owned();
        if !out.status.success() {
            println!("pgbench[{name}] failed: {}", String::from_utf8_lossy(&out.stderr));
        } else {
            println!(
                "pgbench[{name}]: {} clients, {} s: {tps}; {lat}",
                args.pgbench_clients, args.pgbench_seconds
            );
            let txs = parse_transactions(&text).unwrap_or(0);
            let cpu = cpu_before.until(&CpuSnapshot::take(&[]), txs.max(0) as u64);
            println!(
                "pgbench[{name}]: CPU per transaction: {}",
                cpu.describe(None, "pgbench client")
            );
            if name == "full join" {
                full_tps = parse_tps(&tps);
                let takes = count(&db.url, takes_sql).await? - takes_before;
                println!(
                    "pgbench[{name}]: {takes} of {txs} takes claimed their target ({:.0} %)",
                    100.0 * takes as f64 / txs.max(1) as f64
                );
            }
        }
    }
    Ok(full_tps)
}

/// pgbench's `number of transactions actually processed: 1234`.
fn parse_transactions(text: &str) -> Option<i64> {
    let line = text.lines().find(|l| l.starts_with("number of transactions actually processed"))?;
    line.rsplit(':').next()?.split_whitespace().next()?.parse().ok()
}

/// The number of pgbench's `tps = 1234.5 (without initial connection time)`.
fn parse_tps(line: &str) -> Option<f64> {
    line.strip_prefix("tps = ")?.split_whitespace().next()?.parse().ok()
}
