//! The producer with 1,000,000 `new` targets: one run with batch_size 1,000,000 into a private
//! redis-server, timed, with its peak resident memory (`/usr/bin/time -v`, Maximum resident
//! set size). Also the worker's memory per leased account against tgsim.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use tgsim::{Account, Answer, Group, Scenario, Script, Server};

use crate::env::{self, FreshDb, PrivateRedis, ProcEnv, machine};
use crate::throughput::count;

#[derive(Debug, Clone, clap::Args)]
pub struct ProducerArgs {
    #[arg(long, default_value_t = 1_000_000)]
    pub targets: u64,
    #[arg(long)]
    pub bin_dir: Option<std::path::PathBuf>,
}

pub async fn run(args: ProducerArgs) -> anyhow::Result<bool> {
    println!("machine: {}", machine());
    let bin_dir = env::bin_dir(args.bin_dir.as_deref())?;
    let db = FreshDb::create("producer").await?;
    let redis = PrivateRedis::start()?;
    let work = tempfile::tempdir()?;
    let n = args.targets;
    db.exec(&format!(
        "INSERT INTO targets (link, kind, niche, status, attempts, in_doubt_tries, created_at, updated_at) \
         SELECT '@producer_target_' || g, 'username', 'bench', 'new', 0, 0, now(), now() \
         FROM generate_series(1, {n}) g"
    ))
    .await?;
    db.exec("VACUUM ANALYZE targets").await?;
    std::fs::write(work.path().join("accounts_config.json"), "[]")?;
    let penv = ProcEnv {
        bin_dir: bin_dir.clone(),
        work_dir: work.path().to_path_buf(),
        vars: vec![
            ("DATABASE_URL".into(), db.url.clone()),
            ("REDIS_URL".into(), redis.url.clone()),
            ("REDIS_PREFIX".into(), "prod:".into()),
            (
                "ACCOUNTS_CONFIG".into(),
                work.path().join("accounts_config.json").display().to_string(),
            ),
        ],
    };
    let mut cmd = Command::new("/usr/bin/time");
    let inner = penv.command("producer");
    cmd.arg("-v").arg(inner.get_program()).args(["bench", &n.to_string(), "--recover-after", "1h"]);
    cmd.current_dir(&penv.work_dir);
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let t = Instant::now();
    let out = tokio::task::spawn_blocking(move || cmd.stdout(Stdio::piped()).output())
        .await?
        .context("run /usr/bin/time -v producer")?;
    let elapsed = t.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let max_rss_kb: u64 = stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes):"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    println!("producer output: {}", String::from_utf8_lossy(&out.stdout).trim());
    if !out.status.success() {
        println!("producer failed: {stderr}");
    }
    let queued = count(&db.url, "SELECT count(*) FROM targets WHERE status = 'queued'").await?;
    let rate = queued as f64 / elapsed.as_secs_f64();
    let mb = max_rss_kb as f64 / 1024.0;
    println!(
        "producer: {n} targets -> {queued} queued and pushed in {:.1} s = {rate:.0} targets/s (target 20000: {}), peak RSS {mb:.0} MiB (target < 200: {})",
        elapsed.as_secs_f64(),
        if rate >= 20_000.0 { "met" } else { "MISSED" },
        if mb < 200.0 { "met" } else { "MISSED" }
    );
    drop(redis);
    db.drop_db().await;
    Ok(rate >= 20_000.0 && mb < 200.0)
}

#[derive(Debug, Clone, clap::Args)]
pub struct WorkerMemArgs {
    /// Leases held at once (worker concurrency), measured in turn.
    #[arg(long, value_delimiter = ',', default_value = "1,50,200")]
    pub leased: Vec<usize>,
    #[arg(long)]
    pub bin_dir: Option<std::path::PathBuf>,
}

/// One worker with concurrency K against tgsim whose joins answer only after 40 s: K accounts
/// stay leased and connected; the worker's RSS is read once all K joins are in flight.
pub async fn worker_mem(args: WorkerMemArgs) -> anyhow::Result<bool> {
    println!("machine: {}", machine());
    let bin_dir = env::bin_dir(args.bin_dir.as_deref())?;
    let mut rows = Vec::new();
    for &k in &args.leased {
        let db = FreshDb::create("wmem").await?;
        let redis = PrivateRedis::start()?;
        let work = tempfile::tempdir()?;
        let mut s = Scenario::new();
        let names: Vec<String> = (0..k).map(|j| format!("acc_{j:04}")).collect();
        for (j, name) in names.iter().enumerate() {
            s = s.account(Account::new(name.clone(), 1000 + j as i64));
        }
        for i in 0..k {
            s = s.group(
                Group::new(9_000_000 + i as i64, format!("M{i}")).username(format!("wmem_{i:05}")),
            );
        }
        s = s.script(Script::join().answers([Answer::Ok.after(Duration::from_secs(40))]));
        let server = Server::start(s, "127.0.0.1:0").await?;
        let accounts_path = work.path().join("accounts_config.json");
        std::fs::write(&accounts_path, serde_json::to_string(&server.accounts_config_json())?)?;
        db.store.sync_accounts(&names, "default").await?;
        let links: Vec<_> = (0..k)
            .map(|i| smart_joiner::domain::TargetLink::parse(&format!("@wmem_{i:05}")).unwrap())
            .collect();
        db.store.import_targets(&links, "bench").await?;
        let penv = ProcEnv {
            bin_dir: bin_dir.clone(),
            work_dir: work.path().to_path_buf(),
            vars: vec![
                ("DATABASE_URL".into(), db.url.clone()),
                ("REDIS_URL".into(), redis.url.clone()),
                ("ACCOUNTS_CONFIG".into(), accounts_path.display().to_string()),
                ("LEASE_TTL".into(), "120s".into()),
                ("CALL_TIMEOUT".into(), "60s".into()),
                ("DAILY_JOIN_CAP".into(), "1000".into()),
            ],
        };
        let mut worker = penv.spawn_worker("wmem", k)?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let idle = env::vm_rss_kib(worker.id()).unwrap_or(0);
        penv.produce("bench", k as u64, "1h").await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut live = 0;
        while Instant::now() < deadline {
            live = names.iter().filter(|n| server.live_connections(n) > 0).count();
            if live >= k {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let busy = env::vm_rss_kib(worker.id()).unwrap_or(0);
        println!(
            "worker memory: {k} leases requested, {live} live connections: RSS idle {:.1} MiB, busy {:.1} MiB",
            idle as f64 / 1024.0,
            busy as f64 / 1024.0
        );
        rows.push((live, busy));
        env::stop_child(&mut worker, Duration::from_secs(2));
        server.shutdown().await;
        drop(redis);
        db.drop_db().await;
    }
    if let (Some(first), Some(last)) = (rows.first(), rows.last())
        && last.0 > first.0
    {
        let per = (last.1 as f64 - first.1 as f64) / (last.0 - first.0) as f64;
        println!(
            "worker memory: {per:.0} KiB per leased, connected account ({} -> {} connections)",
            first.0, last.0
        );
    }
    Ok(true)
}
