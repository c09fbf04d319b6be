//! The fault-injection run (issue 6): tgsim in-process, the real `producer` and several real
//! `worker` processes talking to it through the grammers adapter, a fresh Postgres database
//! and a private redis-server. While the work runs, a driver SIGKILLs and SIGSTOP/SIGCONTs
//! workers, restarts Redis with its data wiped and terminates the database's backends; tgsim
//! scripts inject FloodWaits on both sides of 600 s, bans, dropped connections and silence.
//! At the end every invariant is checked and one line printed; the exit code is non-zero on
//! any violation.

use std::collections::BTreeMap;
use std::process::Child;
use std::time::{Duration, Instant};

use rand::Rng;
use smart_joiner::domain::{TargetLink, TargetStatus};
use smart_joiner::invariants;
use smart_joiner::store::Limits;
use tgsim::{Account, Answer, Group, Outcome, Scenario, Script, Server, Step, Trigger, Violation};

use crate::env::{self, FreshDb, PrivateRedis, ProcEnv};

#[derive(Debug, Clone, clap::Args)]
pub struct FaultArgs {
    /// The CI preset: 600 targets, 60 accounts, 3 workers, 25 s of faults.
    #[arg(long)]
    pub short: bool,
    #[arg(long, default_value_t = 5000)]
    pub targets: usize,
    #[arg(long, default_value_t = 300)]
    pub accounts: usize,
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Jobs per worker process.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// How long the driver injects process and service faults.
    #[arg(long, default_value = "90s", value_parser = smart_joiner::app::parse_duration)]
    pub fault_phase: Duration,
    /// Time between two driver faults.
    #[arg(long, default_value = "3s", value_parser = smart_joiner::app::parse_duration)]
    pub fault_every: Duration,
    /// How long the work may take to settle after the fault phase.
    #[arg(long, default_value = "180s", value_parser = smart_joiner::app::parse_duration)]
    pub settle: Duration,
    /// Pause after a join (scaled from SmartJoiner's 5-10 min); the maximum is 1.5x.
    #[arg(long, default_value = "4s", value_parser = smart_joiner::app::parse_duration)]
    pub join_pause: Duration,
    /// Account lease TTL; SIGSTOPs last 1.75x this, so the lease expires under a paused worker.
    #[arg(long, default_value = "4s", value_parser = smart_joiner::app::parse_duration)]
    pub lease_ttl: Duration,
    /// Directory of the producer and worker binaries (default: next to this binary).
    #[arg(long)]
    pub bin_dir: Option<std::path::PathBuf>,
    /// Keep the database and the work directory (logs) for inspection.
    #[arg(long)]
    pub keep: bool,
    /// Run this many times in a row, stopping at the first run with a violation.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub repeat: u32,
}

impl FaultArgs {
    fn apply_preset(&mut self) {
        if self.short {
            self.targets = 600;
            self.accounts = 60;
            self.workers = 3;
            self.concurrency = 4;
            self.fault_phase = Duration::from_secs(25);
            self.fault_every = Duration::from_secs(2);
            self.settle = Duration::from_secs(60);
            self.join_pause = Duration::from_secs(2);
        }
    }
}

const NICHE: &str = "faults";
const POOL: &str = "default";
/// FloodWaits above this go to another account (the FloodWait threshold, unscaled).
const LONG_FLOOD: u32 = 700;

/// What the driver did, counted.
#[derive(Default, Debug)]
struct Injected {
    sigkill: u32,
    sigstop: u32,
    redis_wipe: u32,
    pg_terminate: u32,
    backends_terminated: u64,
    respawned: u32,
}

fn username(i: usize) -> String {
    format!("fault_grp_{i:05}")
}

/// The loopback DC: accounts, one group per target, and the Telegram-side faults.
fn scenario(args: &FaultArgs) -> Scenario {
    let mut s = Scenario::new().min_join_pause(args.join_pause);
    for j in 0..args.accounts {
        s = s.account(Account::new(format!("acc_{j:04}"), 100_000 + j as i64));
    }
    let long_floods = (args.accounts / 10).max(1);
    let mut long_given = 0;
    for i in 0..args.targets {
        let mut g = Group::new(1_000_000 + i as i64, format!("Group {i}")).username(username(i));
        let answers: Vec<Step> = match i % 40 {
            0 | 1 => vec![Answer::FloodWait { seconds: 2 }.into(), Answer::Ok.into()],
            2 => vec![Answer::Drop { after_join: true }.into(), Answer::Ok.into()],
            3 => vec![Answer::Silence.into(), Answer::Ok.into()],
            4 => vec![Answer::UserBannedInChannel.into()],
            5 => vec![Answer::ChannelPrivate.into()],
            6 => vec![Answer::Drop { after_join: false }.into(), Answer::Ok.into()],
            7 => vec![Answer::RpcCallFail.into(), Answer::Ok.into()],
            8 => vec![Answer::FloodPremiumWait { seconds: 3 }.into(), Answer::Ok.into()],
            9 => {
                g = g.request_needed();
                vec![]
            }
            10 if long_given < long_floods => {
                long_given += 1;
                vec![Answer::FloodWait { seconds: LONG_FLOOD }.into(), Answer::Ok.into()]
            }
            _ => vec![],
        };
        s = s.group(g);
        if !answers.is_empty() {
            s = s.script(Script::join().target(format!("@{}", username(i))).answers(answers));
        }
    }
    // Account-wide faults: some accounts are banned after a few calls, some hit PEER_FLOOD.
    for j in 0..args.accounts {
        let name = format!("acc_{j:04}");
        match j % 20 {
            7 => {
                let mut answers: Vec<Step> = vec![Answer::Ok.into(); 9 + 3 * (j % 5)];
                answers.push(Answer::UserDeactivatedBan.into());
                s = s.script(Script::on(Trigger::Any).account(name).answers(answers));
            }
            13 => {
                let answers: Vec<Step> = vec![
                    Answer::Ok.into(),
                    Answer::Ok.into(),
                    Answer::Ok.into(),
                    Answer::PeerFlood.into(),
                ];
                s = s.script(Script::join().account(name).answers(answers));
            }
            _ => {}
        }
    }
    s
}

struct Workers {
    env: ProcEnv,
    concurrency: usize,
    procs: Vec<Child>,
    spawned: usize,
    /// (index, when to SIGCONT)
    stopped: Vec<(usize, Instant)>,
}

impl Workers {
    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        self.spawned += 1;
        let child = self.env.spawn_worker(&format!("w{i}-{}", self.spawned), self.concurrency)?;
        if i < self.procs.len() {
            self.procs[i] = child;
        } else {
            self.procs.push(child);
        }
        Ok(())
    }

    fn is_stopped(&self, i: usize) -> bool {
        self.stopped.iter().any(|(s, _)| *s == i)
    }

    /// Respawns workers that exited by themselves; SIGCONTs those whose pause is over.
    fn tend(&mut self, injected: &mut Injected) -> anyhow::Result<()> {
        let now = Instant::now();
        let due: Vec<usize> =
            self.stopped.iter().filter(|(_, at)| *at <= now).map(|(i, _)| *i).collect();
        for i in due {
            env::signal(self.procs[i].id(), "CONT");
            self.stopped.retain(|(s, _)| *s != i);
        }
        for i in 0..self.procs.len() {
            if self.procs[i].try_wait()?.is_some() {
                injected.respawned += 1;
                self.spawn(i)?;
            }
        }
        Ok(())
    }

    fn cont_all(&mut self) {
        for (i, _) in self.stopped.drain(..) {
            env::signal(self.procs[i].id(), "CONT");
        }
    }
}

pub async fn run(args: FaultArgs) -> anyhow::Result<bool> {
    let repeat = args.repeat;
    for i in 1..=repeat {
        if repeat > 1 {
            eprintln!("faults: run {i} of {repeat}");
        }
        if !run_once(args.clone()).await? {
            if repeat > 1 {
                eprintln!("faults: run {i} of {repeat} found violations; stopping");
            }
            return Ok(false);
        }
    }
    if repeat > 1 {
        eprintln!("faults: {repeat} runs in a row, no violation");
    }
    Ok(true)
}

async fn run_once(mut args: FaultArgs) -> anyhow::Result<bool> {
    args.apply_preset();
    let started = Instant::now();
    let bin_dir = env::bin_dir(args.bin_dir.as_deref())?;
    let work = tempfile::Builder::new().prefix("sj-faults-").tempdir()?;
    let db = FreshDb::create("faults").await?;
    let mut redis = PrivateRedis::start()?;

    // tgsim, and the accounts file pointing at it.
    let server = Server::start(scenario(&args), "127.0.0.1:0").await?;
    let tg_started = Instant::now();
    let accounts_path = work.path().join("accounts_config.json");
    std::fs::write(&accounts_path, serde_json::to_string_pretty(&server.accounts_config_json())?)?;
    let names: Vec<String> = (0..args.accounts).map(|j| format!("acc_{j:04}")).collect();
    db.store.sync_accounts(&names, POOL).await?;
    let links: Vec<TargetLink> = (0..args.targets)
        .map(|i| TargetLink::parse(&format!("@{}", username(i))))
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("bad link: {e}"))?;
    db.store.import_targets(&links, NICHE).await?;

    let pause_ms = args.join_pause.as_millis() as u64;
    let call_timeout = (args.lease_ttl / 3).max(Duration::from_millis(500));
    let mut penv = ProcEnv {
        bin_dir,
        work_dir: work.path().to_path_buf(),
        vars: vec![
            ("DATABASE_URL".into(), db.url.clone()),
            ("REDIS_URL".into(), redis.url.clone()),
            ("REDIS_PREFIX".into(), "faults:".into()),
            ("POOL".into(), POOL.into()),
            ("ACCOUNTS_CONFIG".into(), accounts_path.display().to_string()),
            ("JOIN_PAUSE_MIN".into(), format!("{pause_ms}ms")),
            ("JOIN_PAUSE_MAX".into(), format!("{}ms", pause_ms * 3 / 2)),
            ("ERROR_PAUSE".into(), format!("{}ms", pause_ms / 4)),
            ("DAILY_JOIN_CAP".into(), "100000".into()),
            ("CHANNEL_LIMIT".into(), "500".into()),
            ("LEASE_TTL".into(), format!("{}ms", args.lease_ttl.as_millis())),
            ("CALL_TIMEOUT".into(), format!("{}ms", call_timeout.as_millis())),
            ("QUEUE_HEARTBEAT".into(), "1s".into()),
        ],
    };
    penv.set("IN_DOUBT_MAX_TRIES", "5");
    // The workers' decisions (info lines) are what explains a violation afterwards.
    if std::env::var_os("BENCH_CHILD_LOG").is_none() {
        penv.set("RUST_LOG", "info");
    }
    let mut workers = Workers {
        env: penv.clone(),
        concurrency: args.concurrency,
        procs: Vec::new(),
        spawned: 0,
        stopped: Vec::new(),
    };
    for i in 0..args.workers {
        workers.spawn(i)?;
    }

    let recover_after = format!("{}ms", (args.lease_ttl * 2).as_millis());
    let batch = (args.targets as u64 / 10).max(50);
    let mut injected = Injected::default();
    // When each SIGKILL landed, on tgsim's clock.
    let mut kills: Vec<Duration> = Vec::new();
    let mut pauses: Vec<(Duration, Duration)> = Vec::new();
    let mut rng = rand::rng();
    let fault_end = Instant::now() + args.fault_phase;
    let mut next_fault = Instant::now() + args.fault_every;
    let mut next_produce = Instant::now();
    let mut producing: Option<tokio::task::JoinHandle<()>> = None;
    let mut kind = 0usize;
    eprintln!(
        "faults: {} targets, {} accounts, {} workers x {}, pause {:?}, lease {:?}, faults every {:?} for {:?}",
        args.targets,
        args.accounts,
        args.workers,
        args.concurrency,
        args.join_pause,
        args.lease_ttl,
        args.fault_every,
        args.fault_phase
    );

    // Fault phase.
    while Instant::now() < fault_end {
        // The producer runs beside the driver, so a SIGCONT is never late because a producer
        // run was slow: a pause longer than intended would freeze a worker past its hold.
        if Instant::now() >= next_produce && producing.as_ref().is_none_or(|p| p.is_finished()) {
            let (env, after) = (penv.clone(), recover_after.clone());
            producing = Some(tokio::spawn(async move {
                let _ = env.produce(NICHE, batch, &after).await;
            }));
            next_produce = Instant::now() + Duration::from_secs(1);
        }
        if Instant::now() >= next_fault {
            next_fault = Instant::now() + args.fault_every;
            let w = rng.random_range(0..workers.procs.len());
            match kind % 4 {
                0 if !workers.is_stopped(w) => {
                    env::signal(workers.procs[w].id(), "KILL");
                    let _ = workers.procs[w].wait();
                    workers.spawn(w)?;
                    injected.sigkill += 1;
                    kills.push(tg_started.elapsed());
                }
                1 if !workers.is_stopped(w) => {
                    env::signal(workers.procs[w].id(), "STOP");
                    let stop_for = args.lease_ttl * 7 / 4;
                    workers.stopped.push((w, Instant::now() + stop_for));
                    let from = tg_started.elapsed();
                    pauses.push((from, from + stop_for));
                    injected.sigstop += 1;
                }
                2 => {
                    redis.restart_wiped()?;
                    injected.redis_wipe += 1;
                }
                3 => {
                    injected.backends_terminated += db.terminate_backends().await.unwrap_or(0);
                    injected.pg_terminate += 1;
                }
                _ => {}
            }
            kind += 1;
        }
        workers.tend(&mut injected)?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    workers.cont_all();
    if let Some(p) = producing.take() {
        let _ = p.await;
    }

    // Settle: workers run undisturbed, the producer recovers what the faults lost.
    let settle_end = Instant::now() + args.settle;
    let mut open = usize::MAX;
    while Instant::now() < settle_end {
        workers.tend(&mut injected)?;
        let _ = penv.produce(NICHE, batch, &recover_after).await;
        let store = smart_joiner::store::Store::connect(&db.url).await;
        let targets = match store {
            Ok(store) => store.targets(None, None).await.map_err(anyhow::Error::from),
            Err(e) => Err(e.into()),
        };
        open = match targets {
            Ok(ts) => ts.iter().filter(|t| unsettled(t)).count(),
            Err(_) => usize::MAX,
        };
        if open == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    for w in &mut workers.procs {
        env::stop_child(w, Duration::from_secs(10));
    }

    // Checks.
    let limits = Limits { daily_join_cap: 100_000, channel_limit: 500 };
    // A fresh pool: the driver's own connections were terminated along with the workers'.
    let store = smart_joiner::store::Store::connect(&db.url).await?;
    let report = invariants::check(&store, args.join_pause, &limits).await?;
    let targets = store.targets(None, None).await?;
    let now = chrono::Utc::now();
    // A target still `queued`/`joining` whose next run lies ahead (its account is in a long
    // cooldown) is waiting, not lost; one that is overdue and unclaimed by anyone is lost.
    let waiting: Vec<_> = targets
        .iter()
        .filter(|t| unsettled(t) && t.next_run_at.is_some_and(|at| at > now))
        .collect();
    let lost: Vec<String> = targets
        .iter()
        .filter(|t| unsettled(t) && t.next_run_at.is_none_or(|at| at <= now))
        .map(|t| format!("{} is still {} (next run {:?})", t.link, t.status, t.next_run_at))
        .collect();
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    for t in &targets {
        *by_status.entry(t.status.to_string()).or_default() += 1;
    }

    let violations = server.violations();
    let (mut tg_flood, mut tg_dup, mut tg_dup_paused, mut tg_pause) = (0, 0, 0, 0);
    let mut tg_flood_unrecordable = 0;
    let tg_start_wall = now - chrono::Duration::from_std(tg_started.elapsed()).unwrap_or_default();
    for v in &violations {
        match v {
            Violation::RequestDuringFloodWait { account, at, remaining, .. } => {
                match flood_lost_with_a_kill(
                    &server,
                    &store,
                    account,
                    *at,
                    *remaining,
                    &kills,
                    tg_start_wall,
                )
                .await
                {
                    Some(grant) => {
                        tg_flood_unrecordable += 1;
                        eprintln!(
                            "faults: {account}'s FloodWait at {:.3}s was answered to a worker SIGKILLed {:.0} ms later, before it could record it; the next connection met it (not counted as a violation)",
                            grant.0.as_secs_f64(),
                            grant.1.as_secs_f64() * 1e3
                        );
                    }
                    None => tg_flood += 1,
                }
            }
            Violation::DuplicateConnection { at, .. } => {
                tg_dup += 1;
                let slack = Duration::from_secs(1);
                if pauses.iter().any(|(a, b)| *at + slack >= *a && *at <= *b + slack) {
                    tg_dup_paused += 1;
                }
            }
            Violation::JoinTooSoon { .. } | Violation::JoinOutsideActiveHours { .. } => {
                tg_pause += 1
            }
        }
    }
    let requests = server.requests();
    let mut tg_faults: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &requests {
        let key = match &r.outcome {
            Outcome::RpcError { message, .. } if message.starts_with("FLOOD_WAIT_") => {
                let secs: u32 = message["FLOOD_WAIT_".len()..].parse().unwrap_or(0);
                if secs > 600 { "flood_wait>600" } else { "flood_wait<=600" }
            }
            Outcome::RpcError { message, .. } if message.starts_with("FLOOD_PREMIUM_WAIT_") => {
                "flood_wait<=600"
            }
            Outcome::RpcError { message, .. }
                if matches!(
                    message.as_str(),
                    "USER_DEACTIVATED_BAN" | "USER_BANNED_IN_CHANNEL" | "PEER_FLOOD"
                ) =>
            {
                "ban"
            }
            Outcome::Dropped { .. } => "drop",
            Outcome::Silence => "silence",
            _ => continue,
        };
        *tg_faults.entry(key).or_default() += 1;
    }
    let double_members = (0..args.targets)
        .filter(|i| server.members(&format!("@{}", username(*i))).len() > 1)
        .count();

    let inv = [
        report.binding.len(),
        report.flood_wait.len() + tg_flood,
        tg_dup,
        lost.len(),
        report.pacing.len() + tg_pause,
        report.fencing.len(),
    ];
    let clean = inv.iter().all(|n| *n == 0);
    let status_text: Vec<String> = by_status.iter().map(|(s, n)| format!("{s} {n}")).collect();
    let tg_text: Vec<String> = tg_faults.iter().map(|(k, n)| format!("{k} {n}")).collect();
    println!(
        "faults: targets {} ({}; {} waiting on a long cooldown), attempts {}; faults injected: sigkill {}, sigstop {}, redis wipe {}, pg terminate {} ({} backends), {}; violations: inv1 binding {}, inv2 flood_wait {} ({} more answered to a worker killed before it could record them), inv3 one_connection {} ({} while a worker was SIGSTOPped), inv4 lost {}, inv5 pacing {}, inv6 fencing {}; {:.0} s",
        targets.len(),
        status_text.join(", "),
        waiting.len(),
        report.attempts,
        injected.sigkill,
        injected.sigstop,
        injected.redis_wipe,
        injected.pg_terminate,
        injected.backends_terminated,
        tg_text.join(", "),
        inv[0],
        inv[1],
        tg_flood_unrecordable,
        inv[2],
        tg_dup_paused,
        inv[3],
        inv[4],
        inv[5],
        started.elapsed().as_secs_f64(),
    );
    if open != 0 {
        eprintln!("faults: {open} targets were not settled when the settle phase ended");
    }
    if double_members > 0 {
        eprintln!(
            "faults: note: {double_members} groups have more than one of our accounts as members (tgsim)"
        );
    }
    for line in report
        .binding
        .iter()
        .chain(&report.flood_wait)
        .chain(&report.pacing)
        .chain(&report.fencing)
        .chain(&lost)
        .take(20)
    {
        eprintln!("  violation: {line}");
    }
    for v in violations.iter().take(20) {
        eprintln!("  tgsim violation: {v:?}");
    }
    let names: BTreeMap<i64, String> = store
        .accounts(None)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|a| (a.id, a.session_name))
        .collect();
    let mut flagged = flagged_accounts(&violations, &report, &names);
    // A lost target: its row, and its claimed account's story below.
    for t in targets.iter().filter(|t| unsettled(t) && t.next_run_at.is_none_or(|at| at <= now)) {
        eprintln!(
            "  lost target {} (id {}): {} claimed by {:?} (epoch {:?}), next run {:?}, attempts {}, in-doubt tries {}",
            t.link,
            t.id,
            t.status,
            t.claimed_account_id.and_then(|id| names.get(&id)),
            t.claim_epoch,
            t.next_run_at,
            t.attempts,
            t.in_doubt_tries
        );
        for a in store.attempts(Some(t.id), None).await.unwrap_or_default() {
            eprintln!(
                "     attempt {} by account {} epoch {} {} at {} ({})",
                a.id, a.account_id, a.epoch, a.outcome, a.finished_at, a.worker
            );
        }
        let log = std::fs::read_to_string(work.path().join("logs").join("smart_joiner.log"))
            .unwrap_or_default();
        let link = t.link.to_string();
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(link.as_str())).collect();
        for line in &lines[lines.len().saturating_sub(20)..] {
            eprintln!("     log: {line}");
        }
        if let Some(name) = t.claimed_account_id.and_then(|id| names.get(&id))
            && !flagged.contains(name)
        {
            flagged.push(name.clone());
        }
    }
    for account in flagged.iter().take(5) {
        explain_account(account, &violations, &server, &store, tg_start_wall, work.path()).await;
    }
    server.shutdown().await;
    drop(redis);
    if args.keep {
        let kept = work.keep();
        eprintln!("faults: kept database {} and work dir {}", db.name, kept.display());
    } else {
        db.drop_db().await;
    }
    Ok(clean)
}

/// A FloodWait the account met again only because the worker it was answered to was SIGKILLed
/// before it could write it down: tgsim answered it (the grant that started the window the
/// violating request fell into), a SIGKILL landed within a second after, and no attempt row
/// records a wait of that length near that moment. Telegram's answer died with the process; no
/// code in another process can know it, and the next connection hears it again at its first
/// request (and records it). Returns (when it was granted, how long before the kill).
async fn flood_lost_with_a_kill(
    server: &Server,
    store: &smart_joiner::store::Store,
    account: &str,
    at: Duration,
    remaining: Duration,
    kills: &[Duration],
    tg_start: chrono::DateTime<chrono::Utc>,
) -> Option<(Duration, Duration)> {
    let window_end = at + remaining;
    let grant = server.requests_of(account).into_iter().rev().find_map(|r| {
        let Outcome::RpcError { message, .. } = &r.outcome else { return None };
        let secs: u64 = message.strip_prefix("FLOOD_WAIT_")?.parse().ok()?;
        let end = r.at + Duration::from_secs(secs);
        (r.at < at && end.abs_diff(window_end) <= Duration::from_secs(2)).then_some((r.at, secs))
    })?;
    let kill = kills.iter().find(|k| **k >= grant.0 && **k <= grant.0 + Duration::from_secs(1))?;
    let row = store.accounts(None).await.ok()?.into_iter().find(|a| a.session_name == account)?;
    let granted_wall = tg_start + chrono::Duration::from_std(grant.0).ok()?;
    let recorded = store.attempts(None, Some(row.id)).await.ok()?.iter().any(|a| {
        a.flood_wait_seconds
            .is_some_and(|s| u64::try_from(s).is_ok_and(|s| s.abs_diff(grant.1) <= 1))
            && (a.finished_at - granted_wall).num_milliseconds().abs() <= 2_000
    });
    (!recorded).then_some((grant.0, *kill - grant.0))
}

/// Session names of the accounts any violation names (tgsim's, then the database checks').
fn flagged_accounts(
    violations: &[Violation],
    report: &invariants::InvariantReport,
    by_id: &BTreeMap<i64, String>,
) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let mut add = |name: String| {
        if !names.contains(&name) {
            names.push(name);
        }
    };
    for v in violations {
        add(v.account().to_owned());
    }
    let lines = report.flood_wait.iter().chain(&report.pacing).chain(&report.fencing);
    for line in lines {
        // The checks name accounts as `account <id>`.
        let id = line
            .strip_prefix("account ")
            .and_then(|rest| rest.split([' ', ':']).next())
            .and_then(|id| id.parse::<i64>().ok());
        if let Some(name) = id.and_then(|id| by_id.get(&id)) {
            add(name.clone());
        }
    }
    names
}

/// Prints what the run knows about one account, so a violation can be explained from the
/// output alone: tgsim's requests, the attempts trail, the account row, and the workers'
/// log lines naming it. Times are seconds since tgsim started, as in tgsim's violations.
async fn explain_account(
    account: &str,
    violations: &[Violation],
    server: &Server,
    store: &smart_joiner::store::Store,
    tg_start: chrono::DateTime<chrono::Utc>,
    work_dir: &std::path::Path,
) {
    let secs = |t: chrono::DateTime<chrono::Utc>| (t - tg_start).num_milliseconds() as f64 / 1e3;
    eprintln!("  -- account {account}");
    for v in violations.iter().filter(|v| v.account() == account) {
        eprintln!("     violation: {v:?}");
    }
    for r in server.requests_of(account) {
        let target = r.target.as_deref().unwrap_or("-");
        eprintln!(
            "     tgsim {:>8.3}s conn {:<5} {:<28} {:<24} {:?}",
            r.at.as_secs_f64(),
            r.conn,
            r.method,
            target,
            r.outcome
        );
    }
    let accounts = store.accounts(None).await.unwrap_or_default();
    let Some(row) = accounts.iter().find(|a| a.session_name == account) else {
        eprintln!("     (no account row)");
        return;
    };
    eprintln!(
        "     row: status {} ({}), next action {:?}s, epoch {}",
        row.status,
        row.status_reason.as_deref().unwrap_or("-"),
        row.next_allowed_action_time.map(secs),
        row.lease_epoch
    );
    for a in store.attempts(None, Some(row.id)).await.unwrap_or_default() {
        eprintln!(
            "     attempt {:>8.3}s..{:>8.3}s target {:<5} epoch {:<4} {:<22} {:<14} wait {:?} by {}",
            secs(a.started_at),
            secs(a.finished_at),
            a.target_id,
            a.epoch,
            a.outcome,
            a.error_code.as_deref().unwrap_or("-"),
            a.flood_wait_seconds,
            a.worker
        );
    }
    let log =
        std::fs::read_to_string(work_dir.join("logs").join("smart_joiner.log")).unwrap_or_default();
    let needle_field = format!("account={account}");
    let needle_text = format!(" {account}");
    let lines: Vec<&str> =
        log.lines().filter(|l| l.contains(&needle_field) || l.contains(&needle_text)).collect();
    let skip = lines.len().saturating_sub(40);
    for line in &lines[skip..] {
        eprintln!("     log: {line}");
    }
}

fn unsettled(t: &smart_joiner::store::Target) -> bool {
    matches!(t.status, TargetStatus::Queued | TargetStatus::Joining)
        || (t.status == TargetStatus::New && t.error_message.is_none())
}
