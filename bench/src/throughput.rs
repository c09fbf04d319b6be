//! Overhead: end-to-end joins per second with zero pacing through the real producer, Redis,
//! real workers and Postgres, Telegram being either the instant in-process fake (the workers'
//! hidden `--fake-telegram`) or tgsim through the grammers adapter; next to pgbench running
//! the same database writes on the same database.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use sea_orm::{ConnectionTrait, Database, Statement};
use smart_joiner::domain::TargetLink;
use smart_joiner::store::Limits;
use tgsim::{Account, Group, Scenario, Server};

use crate::cpu::{CpuSnapshot, CpuUse};
use crate::env::{self, FreshDb, PrivateRedis, ProcEnv, machine};
use crate::join_script;
use crate::redis_stats::{RedisDelta, RedisSnapshot};

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
    /// Seconds of the pgbench run (0: skip pgbench).
    #[arg(long, default_value_t = 15)]
    pub pgbench_seconds: u64,
    /// pgbench clients (the two workers hold up to 2 x 10 connections).
    #[arg(long, default_value_t = 16)]
    pub pgbench_clients: u32,
    /// Also write pgbench's script (the recorded join's statements) to this file.
    #[arg(long)]
    pub pgbench_script: Option<std::path::PathBuf>,
    /// With pgbench: the fake run and pgbench alternate this many times, each taking its share
    /// of the targets and of the seconds, so that a machine whose speed drifts slows both alike
    /// (where it drifts within minutes, more rounds of more targets: `--targets 50000
    /// --pgbench-seconds 50 --rounds 10`).
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
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

/// Counts targets while a run goes on, on one connection for the whole run: a new
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
            ("DAILY_JOIN_CAP".into(), UNLIMITED.to_string()),
            ("CHANNEL_LIMIT".into(), UNLIMITED.to_string()),
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

        let worker_pids: Vec<u32> = workers.iter().map(|w| w.id()).collect();
        let compared = mode == "fake" && args.pgbench_seconds > 0;
        let rounds = if compared { args.rounds.max(1) } else { 1 };
        let (mut ours, mut theirs) = (Totals::default(), Totals::default());
        let script = if compared { Some(pgbench_script(&args).await?) } else { None };
        let mut settled_before = 0;
        for round in 0..rounds {
            // The targets are shared out in order: round r takes the next share of them.
            let share = share_of(args.targets, rounds, round);
            let phase = our_phase(&db, &redis, &penv, &worker_pids, share, settled_before).await?;
            settled_before += phase.joins;
            ours.add(&phase);
            if let Some(script) = &script {
                let seconds = share_of(args.pgbench_seconds as usize, rounds, round) as u64;
                if let Some(phase) = pgbench(&db, &args, script, seconds, round).await? {
                    theirs.add(&phase);
                }
            }
        }
        let rate = ours.rate();
        let joined = count(
            &db.url,
            "SELECT count(*) FROM targets WHERE niche = 'bench' AND status = 'joined'",
        )
        .await?;
        for w in &mut workers {
            env::stop_child(w, Duration::from_secs(10));
        }
        let target = if mode == "fake" { 1000.0 } else { 200.0 };
        println!(
            "throughput[{mode}]: {} targets, {} accounts, {} workers x {}, {rounds} round(s): producer {:.2} s, all settled in {:.2} s ({joined} joined) = {rate:.0} joins/s (target {target:.0}: {})",
            args.targets,
            args.accounts,
            args.workers,
            args.concurrency,
            ours.producer_seconds,
            ours.seconds,
            if rate >= target { "met" } else { "MISSED" }
        );
        println!("throughput[{mode}]: redis: {}", ours.redis_per_job());
        println!("throughput[{mode}]: CPU per job: {}", ours.describe(Some("workers"), "producer"));
        if rate < target {
            ok = false;
        }
        if compared && theirs.joins > 0 {
            let (ours_cpu, theirs_cpu) = (ours.cpu_per_unit(), theirs.cpu_per_unit());
            println!(
                "pgbench[full join]: in all {:.1} s: {:.0} tps; CPU per transaction: {}",
                theirs.seconds,
                theirs.rate(),
                theirs.describe(None, "pgbench client")
            );
            // The same comparison in CPU per join, which the machine's speed moves less.
            println!(
                "throughput: CPU per join, pgbench[full join] / end to end (fake, Redis included) = {theirs_cpu:.0} / {ours_cpu:.0} µs = {:.2}",
                theirs_cpu / ours_cpu
            );
            let ratio = rate / theirs.rate();
            println!(
                "throughput: end to end (fake) / pgbench[full join] = {rate:.0} / {:.0} = {ratio:.2} (target 0.80: {})",
                theirs.rate(),
                if ratio >= 0.8 { "met" } else { "MISSED" }
            );
            if ratio < 0.8 {
                ok = false;
            }
        }
        if let Some(s) = server {
            let v = s.violations();
            if !v.is_empty() {
                println!("throughput[{mode}]: tgsim saw {} violations", v.len());
            }
            s.shutdown().await;
        }
        drop(redis);
        db.drop_db().await;
    }
    Ok(ok)
}

/// Round `round`'s share of `total` split into `rounds` (the first ones take the remainder).
fn share_of(total: usize, rounds: u32, round: u32) -> usize {
    let (rounds, round) = (rounds.max(1) as usize, round as usize);
    total / rounds + usize::from(round < total % rounds)
}

/// One phase of a run: the work done (joins, or pgbench's transactions), how long it took and
/// the CPU it cost in µs, by whom (`CpuSnapshot::until` per 1), Redis' part apart.
struct Phase {
    joins: u64,
    seconds: f64,
    producer_seconds: f64,
    cpu: CpuUse,
    redis: RedisDelta,
}

/// The phases of one kind added up.
#[derive(Default)]
struct Totals {
    joins: u64,
    seconds: f64,
    producer_seconds: f64,
    cpu: CpuUse,
    redis: RedisDelta,
}

impl Totals {
    fn add(&mut self, p: &Phase) {
        self.joins += p.joins;
        self.seconds += p.seconds;
        self.producer_seconds += p.producer_seconds;
        self.cpu.add(&p.cpu);
        self.redis.add(&p.redis);
    }

    fn rate(&self) -> f64 {
        self.joins as f64 / self.seconds.max(1e-9)
    }

    /// CPU µs per join (or transaction), by whom.
    fn per_unit(&self) -> CpuUse {
        self.cpu.per(self.joins)
    }

    /// CPU µs per join in all, Redis included.
    fn cpu_per_unit(&self) -> f64 {
        self.per_unit().total() + self.redis.cpu_us_per_job(self.joins)
    }

    fn describe(&self, pids: Option<&str>, reaped: &str) -> String {
        self.per_unit().describe(pids, reaped)
    }

    fn redis_per_job(&self) -> String {
        self.redis.per_job(self.joins)
    }
}

/// Ours: the producer queues the next `share` targets of the niche `bench` and the workers
/// join them; returns once none of them is queued or in flight any more.
async fn our_phase(
    db: &FreshDb,
    redis: &PrivateRedis,
    penv: &ProcEnv,
    worker_pids: &[u32],
    share: usize,
    settled_before: u64,
) -> anyhow::Result<Phase> {
    let redis_before = RedisSnapshot::take(&redis.url).await?;
    let cpu_before = CpuSnapshot::take(worker_pids);
    let t0 = Instant::now();
    anyhow::ensure!(penv.produce("bench", share as u64, "1h").await?, "producer failed");
    let producer_seconds = t0.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(600);
    let poller = Poller::connect(&db.url).await?;
    while Instant::now() < deadline {
        let open = poller.count(OPEN_SQL).await?.max(0) as u64;
        if open == 0 {
            break;
        }
        // The count runs on the cores the run is measured on: it is taken less often while
        // much is left (a tenth of a millisecond per target left, at about a tenth of the time
        // left at the rates measured here), every 100 ms at the end.
        let pause = Duration::from_micros(100 * open).clamp(POLL_MIN, POLL_MAX);
        tokio::time::sleep(pause).await;
    }
    let seconds = t0.elapsed().as_secs_f64();
    let cpu = cpu_before.until(&CpuSnapshot::take(worker_pids), 1);
    let redis = redis_before.until(&RedisSnapshot::take(&redis.url).await?);
    // What settled, counted once the time and the CPU are taken: a target given back (to
    // `new`) leaves the open ones without settling, and a run that timed out settled less.
    let settled = poller.count(SETTLED_SQL).await?.max(0) as u64;
    poller.close().await;
    Ok(Phase {
        joins: settled.saturating_sub(settled_before),
        seconds,
        producer_seconds,
        cpu,
        redis,
    })
}

/// The shortest and the longest pause between two counts of the open targets.
const POLL_MIN: Duration = Duration::from_millis(100);
const POLL_MAX: Duration = Duration::from_secs(1);

/// The `bench` targets queued or in flight, read in the partial index of open targets: the
/// round is over when none is left. (Counting the settled ones while the run went on was a
/// scan of the whole table on the cores being measured, which grew with every pgbench round.)
const OPEN_SQL: &str =
    "SELECT count(*) FROM targets WHERE status IN ('queued', 'joining') AND niche = 'bench'";
/// The `bench` targets settled, counted once per round after its time is taken.
const SETTLED_SQL: &str = "SELECT count(*) FROM targets WHERE niche = 'bench' \
    AND status IN ('joined', 'requested', 'error', 'banned')";

/// The daily cap and the channel limit of every run here, the workers' and pgbench's recorded
/// join alike: high enough that no account reaches either.
const UNLIMITED: u32 = 1_000_000;

/// Transactions per second pgbench could reach here, at most: the pgbench run gets this many
/// fresh targets per second of it, so no transaction finds its target taken.
const PGBENCH_TARGETS_PER_SECOND: u64 = 4_000;

/// What pgbench runs before the join's statements: a target no other transaction of the run
/// takes (`base` + a counter per client, interleaved across clients), and an account of the
/// client's own (the clients' accounts are disjoint, so no take finds its account held by
/// another client, as a worker whose lease failed would pick another).
const PGBENCH_HEADER: &str = r#"\set n :n + 1
\set tid :base + :n * :nclients + :client_id + 1
\set aid :client_id + 1 + :nclients * (:n % (:naccounts / :nclients))
"#;

/// pgbench's script: its header, then the statements of one real join ([`join_script`]),
/// written to `--pgbench-script` too when asked.
async fn pgbench_script(args: &ThroughputArgs) -> anyhow::Result<String> {
    let limits = Limits { daily_join_cap: UNLIMITED, channel_limit: UNLIMITED };
    let script = format!("{PGBENCH_HEADER}{}", join_script::record(limits).await?);
    if let Some(copy) = &args.pgbench_script {
        std::fs::write(copy, &script)
            .with_context(|| format!("cannot write the script to {}", copy.display()))?;
    }
    Ok(script)
}

/// Runs the join's statements (recorded from a real join, [`join_script`]) on fresh targets;
/// returns the transactions per second and the CPU µs per transaction (Postgres and pgbench).
async fn pgbench(
    db: &FreshDb,
    args: &ThroughputArgs,
    script: &str,
    seconds: u64,
    round: u32,
) -> anyhow::Result<Option<Phase>> {
    let clients = u64::from(args.pgbench_clients.max(1));
    anyhow::ensure!(
        args.accounts as u64 >= clients,
        "pgbench gives each of its {clients} clients accounts of its own: --accounts must be at least that"
    );
    // Fresh queued targets, unbound, as the producer leaves them for the workers; ids are
    // consecutive (one statement, nothing else inserting), from base + 1.
    // Each round has a niche of its own.
    let niche = format!("pgbench_{round}");
    let fresh = seconds * PGBENCH_TARGETS_PER_SECOND;
    db.exec(&format!(
        "INSERT INTO targets (link, kind, niche, status, attempts, in_doubt_tries, next_run_at, \
         created_at, updated_at) \
         SELECT '@{niche}_' || g, 'username', '{niche}', 'queued', 0, 0, now(), now(), now() \
         FROM generate_series(1, {fresh}) g"
    ))
    .await?;
    let first =
        count(&db.url, &format!("SELECT min(id) FROM targets WHERE niche = '{niche}'")).await?;
    let last =
        count(&db.url, &format!("SELECT max(id) FROM targets WHERE niche = '{niche}'")).await?;
    anyhow::ensure!(last - first + 1 == fresh as i64, "pgbench's targets are not consecutive");
    db.exec("ANALYZE").await?;
    println!(
        "pgbench[full join]: the statements of one real join (pick, take, gate, decision), recorded from the store"
    );

    let dir = tempfile::tempdir()?;
    let file = dir.path().join("join.sql");
    std::fs::write(&file, script)?;
    // Each claiming take raises its account's epoch by one.
    let takes_sql = "SELECT COALESCE(sum(lease_epoch), 0)::bigint FROM accounts";
    let takes_before = count(&db.url, takes_sql).await?;
    let cpu_before = CpuSnapshot::take(&[]);
    let out = Command::new("pgbench")
        .args(["-n", "-M", "prepared", "-c", &clients.to_string(), "-j", "2"])
        .args(["-T", &seconds.to_string()])
        .args(["-D", "n=-1", "-D", &format!("base={}", first - 1)])
        .args(["-D", &format!("nclients={clients}")])
        .args(["-D", &format!("naccounts={}", args.accounts)])
        .arg("-f")
        .arg(&file)
        .arg(&db.url)
        .output()
        .context("pgbench must be installed (postgresql-contrib)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        println!("pgbench[full join] failed: {}", String::from_utf8_lossy(&out.stderr));
        println!("pgbench[full join]: its script:\n{script}");
        return Ok(None);
    }
    let tps = text.lines().find(|l| l.starts_with("tps")).unwrap_or("no tps line").to_owned();
    let lat = text.lines().find(|l| l.starts_with("latency average")).unwrap_or("").to_owned();
    println!("pgbench[full join] round {round}: {clients} clients, {seconds} s: {tps}; {lat}");
    let txs = parse_transactions(&text).unwrap_or(0).max(0) as u64;
    let cpu = cpu_before.until(&CpuSnapshot::take(&[]), 1);
    let takes = count(&db.url, takes_sql).await? - takes_before;
    let joined_sql =
        format!("SELECT count(*) FROM targets WHERE niche = '{niche}' AND status = 'joined'");
    let joined = count(&db.url, &joined_sql).await?;
    println!(
        "pgbench[full join] round {round}: {takes} of {txs} takes claimed their target, {joined} targets joined ({:.0} %)",
        100.0 * joined as f64 / txs.max(1) as f64
    );
    // The targets no transaction reached are removed: left queued, they would lie in the
    // index of open targets that the next rounds' statements and counts read.
    db.exec(&format!(
        "DELETE FROM targets WHERE niche = '{niche}' AND status = 'queued' \
         AND claimed_account_id IS NULL AND assigned_account_id IS NULL"
    ))
    .await?;
    // pgbench's own measure of its time, connections left out.
    Ok(parse_tps(&tps).map(|tps| Phase {
        joins: txs,
        seconds: txs as f64 / tps.max(1e-9),
        producer_seconds: 0.0,
        cpu,
        redis: RedisDelta::default(),
    }))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rounds_share_out_every_target_and_second() {
        for (total, rounds) in [(15_000, 3), (15, 4), (2, 3), (7, 1), (5, 0)] {
            let shares: Vec<usize> =
                (0..rounds.max(1)).map(|r| share_of(total, rounds, r)).collect();
            assert_eq!(shares.iter().sum::<usize>(), total, "{total} in {rounds}");
            let (min, max) = (shares.iter().min().unwrap(), shares.iter().max().unwrap());
            assert!(max - min <= 1, "{shares:?}");
        }
    }

    #[test]
    fn totals_add_up_work_time_and_cpu_before_dividing() {
        let phase = |joins, seconds, postgres| Phase {
            joins,
            seconds,
            producer_seconds: 0.0,
            cpu: CpuUse { postgres, pids: 10.0, reaped: 0.0, me: 0.0 },
            redis: RedisDelta { calls: [("set".to_owned(), joins)].into(), cpu_seconds: 0.001 },
        };
        let mut t = Totals::default();
        t.add(&phase(100, 1.0, 100_000.0));
        t.add(&phase(300, 2.0, 500_000.0));
        assert_eq!(t.rate(), 400.0 / 3.0);
        assert_eq!(t.per_unit().postgres, 1_500.0);
        // (600,000 µs + 20 µs) / 400 + 2,000 µs of Redis / 400.
        assert_eq!(t.cpu_per_unit(), (600_020.0 + 2_000.0) / 400.0);
        assert_eq!(t.redis.calls["set"], 400);
    }
}
