//! The fault-injection run (issues 6 and 16): tgsim in-process, the real `producer` and several
//! real `worker` processes talking to it through the grammers adapter, a fresh database on a
//! private PostgreSQL cluster and a private redis-server with an append-only file. While the
//! work runs, a driver injects the faults production has:
//!
//! - SIGKILLs and SIGSTOP/SIGCONTs (past the lease) of workers and producer runs, one every
//!   `--fault-every`;
//! - Redis restarted with its data wiped, and Redis SIGKILLed and restarted from its AOF;
//! - PostgreSQL stopped for `--pg-down` (fast and immediate shutdowns alternately) and started
//!   again, and rounds of `pg_terminate_backend`;
//! - three network partitions, each longer than a hold: one worker cut from Redis only, one
//!   from Postgres only, one from both (each worker reaches both servers through TCP proxies
//!   the driver controls; its Telegram connections are untouched);
//! - one worker whose clock runs `--skew` ahead and one `--skew` behind, for the whole run
//!   (`SMART_JOINER_CLOCK_OFFSET`, which shifts the clock the process reads).
//!
//! tgsim scripts inject FloodWaits on both sides of 600 s, bans, dropped connections and
//! silence; tgsim closes a connection silent for 3/4 of the pause, as Telegram closes one
//! whose client stopped pinging (a SIGSTOPped worker's). At the end every invariant is checked and one line printed; the exit code is
//! non-zero on any violation.

use std::collections::BTreeMap;
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use smart_joiner::domain::{TargetLink, TargetStatus};
use smart_joiner::ops::invariants;
use smart_joiner::store::Limits;
use tgsim::{Account, Answer, Group, Outcome, Scenario, Script, Server, Step, Trigger, Violation};

use crate::env::{self, FreshDb, PrivatePostgres, PrivateRedis, ProcEnv};
use crate::proxy::Proxy;

#[derive(Debug, Clone, clap::Args)]
pub struct FaultArgs {
    /// The CI preset: 600 targets, 60 accounts, 3 workers, 50 s of faults, at least one of
    /// each kind.
    #[arg(long)]
    pub short: bool,
    /// Targets; the long run's are enough to keep the workers busy through the fault phase.
    #[arg(long, default_value_t = 10_000)]
    pub targets: usize,
    #[arg(long, default_value_t = 300)]
    pub accounts: usize,
    /// Worker processes (at least 3: two skewed clocks, three partitions).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(3..))]
    pub workers: u16,
    /// Jobs per worker process.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// How long the driver injects faults.
    #[arg(long, default_value = "180s", value_parser = smart_joiner::modes::wiring::parse_duration)]
    pub fault_phase: Duration,
    /// Time between two SIGKILLs/SIGSTOPs (of a worker, or of the producer run).
    #[arg(long, default_value = "1500ms", value_parser = smart_joiner::modes::wiring::parse_duration)]
    pub fault_every: Duration,
    /// Redis faults, spread over the fault phase: restarts from the AOF and wipes, alternately.
    #[arg(long, default_value_t = 10)]
    pub redis_faults: u32,
    /// PostgreSQL restarts, spread over the fault phase.
    #[arg(long, default_value_t = 3)]
    pub pg_restarts: u32,
    /// How long PostgreSQL stays down at each restart.
    #[arg(long, default_value = "12s", value_parser = smart_joiner::modes::wiring::parse_duration)]
    pub pg_down: Duration,
    /// Rounds of pg_terminate_backend on the run's database, spread over the fault phase.
    #[arg(long, default_value_t = 7)]
    pub pg_terminates: u32,
    /// How long each of the three partitions lasts (longer than a lease and than a hold).
    #[arg(long, default_value = "10s", value_parser = smart_joiner::modes::wiring::parse_duration)]
    pub partition_for: Duration,
    /// Clock error of the two skewed workers: one this much ahead, one this much behind.
    #[arg(long, default_value = "30s", value_parser = smart_joiner::modes::wiring::parse_duration)]
    pub skew: Duration,
    /// How long the work may take to settle after the fault phase.
    #[arg(long, default_value = "180s", value_parser = smart_joiner::modes::wiring::parse_duration)]
    pub settle: Duration,
    /// Pause after a join (scaled from SmartJoiner's 5-10 min); the maximum is 1.5x.
    #[arg(long, default_value = "4s", value_parser = smart_joiner::modes::wiring::parse_duration)]
    pub join_pause: Duration,
    /// Account lease TTL; SIGSTOPs last 1.75x this, so the lease expires under a paused worker.
    #[arg(long, default_value = "4s", value_parser = smart_joiner::modes::wiring::parse_duration)]
    pub lease_ttl: Duration,
    /// Directory of the producer and worker binaries (default: next to this binary).
    #[arg(long)]
    pub bin_dir: Option<std::path::PathBuf>,
    /// Keep the database cluster and the work directory (logs) for inspection.
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
            self.fault_phase = Duration::from_secs(50);
            self.fault_every = Duration::from_secs(2);
            self.redis_faults = 2;
            self.pg_restarts = 1;
            self.pg_down = Duration::from_secs(11);
            self.pg_terminates = 2;
            self.settle = Duration::from_secs(90);
            self.join_pause = Duration::from_secs(2);
        }
    }
}

const NICHE: &str = "faults";
const POOL: &str = "default";
/// How many times in a row a producer fault that missed its run is tried again.
const PRODUCER_RETRIES: usize = 4;
/// FloodWaits above this go to another account (the FloodWait threshold, unscaled).
const LONG_FLOOD: u32 = 700;

/// What the driver did, counted.
#[derive(Default, Debug)]
struct Injected {
    worker_sigkill: u32,
    worker_sigstop: u32,
    producer_sigkill: u32,
    producer_sigstop: u32,
    /// Producer faults that found the run already over.
    producer_missed: u32,
    redis_wipe: u32,
    redis_aof_restart: u32,
    pg_restart: u32,
    /// Shortest and longest time PostgreSQL was down.
    pg_down: Option<(Duration, Duration)>,
    pg_terminate: u32,
    backends_terminated: u64,
    /// (worker, what was cut, for how long)
    partitions: Vec<(usize, &'static str, Duration)>,
    respawned: u32,
}

/// A fault of the servers or of the network, at a moment of the fault phase.
#[derive(Debug, Clone, Copy)]
enum Infra {
    RedisFromAof,
    RedisWipe,
    PgStop { immediate: bool },
    PgStart,
    PgTerminate,
    Cut { worker: usize, redis: bool, pg: bool },
    Heal { worker: usize },
}

/// The server and network faults of one run, in the order they happen. Each restart and heal
/// is scheduled when its stop or cut has happened.
fn infra_plan(args: &FaultArgs) -> Vec<(Duration, Infra)> {
    let phase = args.fault_phase;
    let at = |k: u32, n: u32, shift: f64| phase.mul_f64((f64::from(k) + shift) / f64::from(n));
    let mut plan = Vec::new();
    for k in 0..args.redis_faults {
        let fault = if k.is_multiple_of(2) { Infra::RedisFromAof } else { Infra::RedisWipe };
        plan.push((at(k, args.redis_faults, 0.5), fault));
    }
    for k in 0..args.pg_restarts {
        let stop = at(k, args.pg_restarts, 0.2);
        plan.push((stop, Infra::PgStop { immediate: k % 2 == 1 }));
    }
    for k in 0..args.pg_terminates {
        plan.push((at(k, args.pg_terminates, 0.1), Infra::PgTerminate));
    }
    let cuts = [(true, false), (false, true), (true, true)];
    for (k, (redis, pg)) in cuts.into_iter().enumerate() {
        let worker = k % usize::from(args.workers);
        let start = at(k as u32, 3, 0.55).min(phase.saturating_sub(args.partition_for));
        plan.push((start, Infra::Cut { worker, redis, pg }));
    }
    plan.sort_by_key(|(t, _)| *t);
    plan
}

fn username(i: usize) -> String {
    format!("fault_grp_{i:05}")
}

/// The loopback DC: accounts, one group per target, and the Telegram-side faults.
fn scenario(args: &FaultArgs) -> Scenario {
    // Telegram closes a connection 75 s after its client stopped pinging, well inside the
    // 5-minute pause that follows an account's hold (invariant 3's limit, docs/design.md); the
    // scaled run keeps that order: silent connections close after 3/4 of the pause.
    let mut s =
        Scenario::new().min_join_pause(args.join_pause).silent_disconnect(args.join_pause * 3 / 4);
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

/// One worker "node": its process, the proxies it reaches Redis and Postgres through, and the
/// variables that make it itself (its clock error).
struct Node {
    proc: Child,
    redis: Proxy,
    pg: Proxy,
    vars: Vec<(String, String)>,
}

struct Workers {
    env: ProcEnv,
    concurrency: usize,
    nodes: Vec<Node>,
    spawned: usize,
    /// (index, when to SIGCONT)
    stopped: Vec<(usize, Instant)>,
}

impl Workers {
    fn spawn_proc(&mut self, i: usize, vars: &[(String, String)]) -> anyhow::Result<Child> {
        self.spawned += 1;
        self.env.spawn_worker_with(&format!("w{i}-{}", self.spawned), self.concurrency, vars)
    }

    fn respawn(&mut self, i: usize) -> anyhow::Result<()> {
        let vars = self.nodes[i].vars.clone();
        self.nodes[i].proc = self.spawn_proc(i, &vars)?;
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
            env::signal(self.nodes[i].proc.id(), "CONT");
            self.stopped.retain(|(s, _)| *s != i);
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i].proc.try_wait()?.is_some() {
                injected.respawned += 1;
                self.respawn(i)?;
            }
        }
        Ok(())
    }

    fn cont_all(&mut self) {
        for (i, _) in self.stopped.drain(..) {
            env::signal(self.nodes[i].proc.id(), "CONT");
        }
    }
}

/// The producer, run every second during the fault phase as a child the driver can signal.
#[derive(Default)]
struct Producer {
    proc: Option<Child>,
    /// When to SIGCONT it, while it is stopped.
    stopped_until: Option<Instant>,
    next_run: Option<Instant>,
}

impl Producer {
    fn tend(&mut self, env: &ProcEnv, batch: u64, recover_after: &str) -> anyhow::Result<()> {
        if let Some(until) = self.stopped_until
            && Instant::now() >= until
            && let Some(p) = &self.proc
        {
            env::signal(p.id(), "CONT");
            self.stopped_until = None;
        }
        if let Some(p) = &mut self.proc
            && p.try_wait()?.is_some()
        {
            self.proc = None;
            self.stopped_until = None;
        }
        if self.proc.is_none() && self.next_run.is_none_or(|at| Instant::now() >= at) {
            self.proc = Some(env.spawn_producer(NICHE, batch, recover_after)?);
            self.next_run = Some(Instant::now() + Duration::from_secs(1));
        }
        Ok(())
    }

    /// The running producer, if it is running and not stopped.
    fn running(&mut self) -> Option<&mut Child> {
        if self.stopped_until.is_some() { None } else { self.proc.as_mut() }
    }

    fn finish(&mut self) {
        if let Some(p) = &mut self.proc {
            env::signal(p.id(), "CONT");
            let _ = p.wait();
        }
        self.proc = None;
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
    let pg = Arc::new(tokio::task::spawn_blocking(PrivatePostgres::start).await??);
    let db = FreshDb::create_on(&pg.admin_url, "faults").await?;
    let mut redis = PrivateRedis::start_with_aof()?;

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
        nodes: Vec::new(),
        spawned: 0,
        stopped: Vec::new(),
    };
    let skew_ms = args.skew.as_millis();
    for i in 0..usize::from(args.workers) {
        // Each worker reaches Redis and Postgres through proxies of its own (partitions);
        // worker 0's clock runs ahead and worker 1's behind.
        let redis_proxy = Proxy::start(([127, 0, 0, 1], redis.port).into()).await?;
        let pg_proxy = Proxy::start(([127, 0, 0, 1], pg.port).into()).await?;
        let mut vars = vec![
            ("REDIS_URL".to_owned(), format!("redis://127.0.0.1:{}", redis_proxy.port)),
            ("DATABASE_URL".to_owned(), db.url_via_port(pg_proxy.port)),
        ];
        match i {
            0 => vars.push((smart_joiner::clock::OFFSET_VAR.into(), format!("{skew_ms}ms"))),
            1 => vars.push((smart_joiner::clock::OFFSET_VAR.into(), format!("-{skew_ms}ms"))),
            _ => {}
        }
        let proc = workers.spawn_proc(i, &vars)?;
        workers.nodes.push(Node { proc, redis: redis_proxy, pg: pg_proxy, vars });
    }

    let recover_after = format!("{}ms", (args.lease_ttl * 2).as_millis());
    let batch = (args.targets as u64 / 10).max(50);
    let mut injected = Injected::default();
    // When each SIGKILL of a worker landed, on tgsim's clock.
    let mut kills: Vec<Duration> = Vec::new();
    let mut pauses: Vec<(Duration, Duration)> = Vec::new();
    let mut rng = rand::rng();
    let phase_start = Instant::now();
    let fault_end = phase_start + args.fault_phase;
    let mut next_fault = phase_start + args.fault_every;
    let mut plan: Vec<(Instant, Infra)> =
        infra_plan(&args).into_iter().map(|(t, f)| (phase_start + t, f)).collect();
    let mut producer = Producer::default();
    let mut process_faults = 0usize;
    let mut producer_retries = 0usize;
    // A PostgreSQL stop or start runs beside the driver, so a SIGCONT is never late because
    // pg_ctl was slow: a pause longer than intended would freeze a worker past its hold.
    let mut pg_ctl: Option<tokio::task::JoinHandle<anyhow::Result<Instant>>> = None;
    let mut pg_stopped_at: Option<Instant> = None;
    let mut cut_since: BTreeMap<usize, (Instant, &'static str)> = BTreeMap::new();
    eprintln!(
        "faults: {} targets, {} accounts, {} workers x {}, pause {:?}, lease {:?}, a kill or stop every {:?} for {:?}; {} Redis faults, {} Postgres restarts ({:?} down), 3 partitions of {:?}, clocks +-{:?}",
        args.targets,
        args.accounts,
        args.workers,
        args.concurrency,
        args.join_pause,
        args.lease_ttl,
        args.fault_every,
        args.fault_phase,
        args.redis_faults,
        args.pg_restarts,
        args.pg_down,
        args.partition_for,
        args.skew,
    );

    // Fault phase: runs until the phase is over and every server is back.
    while Instant::now() < fault_end || !plan.is_empty() || pg_ctl.is_some() {
        producer.tend(&penv, batch, &recover_after)?;
        if Instant::now() < fault_end && Instant::now() >= next_fault {
            next_fault = Instant::now() + args.fault_every;
            let kill = process_faults.is_multiple_of(2);
            let stop_for = args.lease_ttl * 7 / 4;
            if process_faults % 5 == 4 {
                // A producer run, hit part way (connecting, recovering or queueing): one
                // starts now unless one runs, and is signalled a few milliseconds later.
                producer.next_run = None;
                producer.tend(&penv, batch, &recover_after)?;
                let after = Duration::from_millis(rng.random_range(0..30));
                tokio::time::sleep(after).await;
                let alive = match producer.running() {
                    Some(p) => p.try_wait()?.is_none(),
                    None => false,
                };
                match producer.running().filter(|_| alive) {
                    Some(p) => {
                        if kill {
                            env::signal(p.id(), "KILL");
                            injected.producer_sigkill += 1;
                        } else {
                            env::signal(p.id(), "STOP");
                            producer.stopped_until = Some(Instant::now() + stop_for);
                            injected.producer_sigstop += 1;
                        }
                        producer_retries = 0;
                        process_faults += 1;
                    }
                    _ => {
                        // The run ended before the signal (a loaded machine delays this
                        // driver): the next fault is a producer's again, a few times at most.
                        injected.producer_missed += 1;
                        producer_retries += 1;
                        if producer_retries > PRODUCER_RETRIES {
                            producer_retries = 0;
                            process_faults += 1;
                        }
                    }
                }
            } else {
                let free: Vec<usize> =
                    (0..workers.nodes.len()).filter(|w| !workers.is_stopped(*w)).collect();
                if !free.is_empty() {
                    let w = free[rng.random_range(0..free.len())];
                    if kill {
                        env::signal(workers.nodes[w].proc.id(), "KILL");
                        let _ = workers.nodes[w].proc.wait();
                        workers.respawn(w)?;
                        injected.worker_sigkill += 1;
                        kills.push(tg_started.elapsed());
                    } else {
                        env::signal(workers.nodes[w].proc.id(), "STOP");
                        workers.stopped.push((w, Instant::now() + stop_for));
                        let from = tg_started.elapsed();
                        pauses.push((from, from + stop_for));
                        injected.worker_sigstop += 1;
                    }
                    process_faults += 1;
                }
            }
        }
        if let Some(task) = pg_ctl.take_if(|t| t.is_finished()) {
            let done_at = task.await??;
            // A stop finished: down from then on; a start finished: up again.
            pg_stopped_at = if pg_stopped_at.is_none() {
                plan.push((done_at + args.pg_down, Infra::PgStart));
                Some(done_at)
            } else {
                None
            };
        }
        while pg_ctl.is_none()
            && let Some(due) = plan.iter().position(|(t, _)| *t <= Instant::now())
        {
            let (_, fault) = plan.remove(due);
            match fault {
                Infra::RedisFromAof => {
                    redis.restart_from_aof()?;
                    injected.redis_aof_restart += 1;
                }
                Infra::RedisWipe => {
                    redis.restart_wiped()?;
                    injected.redis_wipe += 1;
                }
                Infra::PgStop { immediate } => {
                    let pg = pg.clone();
                    pg_ctl = Some(tokio::task::spawn_blocking(move || {
                        pg.stop_server(immediate)?;
                        Ok(Instant::now())
                    }));
                }
                Infra::PgStart => {
                    if let Some(down_since) = pg_stopped_at {
                        let down = down_since.elapsed();
                        injected.pg_down = Some(match injected.pg_down {
                            None => (down, down),
                            Some((lo, hi)) => (lo.min(down), hi.max(down)),
                        });
                    }
                    injected.pg_restart += 1;
                    let pg = pg.clone();
                    pg_ctl = Some(tokio::task::spawn_blocking(move || {
                        pg.start_server()?;
                        Ok(Instant::now())
                    }));
                }
                // Not while the server is down (there is nothing to terminate), and bounded:
                // the driver must not wait for a connection while workers are SIGSTOPped.
                Infra::PgTerminate if pg_stopped_at.is_none() => {
                    let terminate = db.terminate_backends();
                    if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(3), terminate).await
                    {
                        injected.backends_terminated += n;
                        injected.pg_terminate += 1;
                    }
                }
                Infra::PgTerminate => {}
                Infra::Cut { worker, redis, pg } => {
                    workers.nodes[worker].redis.set_cut(redis);
                    workers.nodes[worker].pg.set_cut(pg);
                    let what = match (redis, pg) {
                        (true, false) => "redis",
                        (false, true) => "postgres",
                        _ => "redis+postgres",
                    };
                    cut_since.insert(worker, (Instant::now(), what));
                    plan.push((Instant::now() + args.partition_for, Infra::Heal { worker }));
                }
                Infra::Heal { worker } => {
                    workers.nodes[worker].redis.set_cut(false);
                    workers.nodes[worker].pg.set_cut(false);
                    if let Some((since, what)) = cut_since.remove(&worker) {
                        injected.partitions.push((worker, what, since.elapsed()));
                    }
                }
            }
        }
        workers.tend(&mut injected)?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    workers.cont_all();
    producer.finish();

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
        // Targets whose next run lies beyond the settle phase (an account in a long cooldown)
        // are waiting, not open.
        let beyond = chrono::Utc::now()
            + chrono::Duration::from_std(settle_end.saturating_duration_since(Instant::now()))
                .unwrap_or_default();
        open = match targets {
            Ok(ts) => ts
                .iter()
                .filter(|t| unsettled(t) && t.next_run_at.is_none_or(|at| at <= beyond))
                .count(),
            Err(_) => usize::MAX,
        };
        if open == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    for node in &mut workers.nodes {
        env::stop_child(&mut node.proc, Duration::from_secs(10));
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
            Outcome::Dropped { .. } if r.method == "(silent connection closed)" => "silent close",
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
    // Every kind of fault asked for must have happened, or the run proves less than it says.
    let kinds = [
        ("worker SIGKILL", injected.worker_sigkill > 0),
        ("worker SIGSTOP", injected.worker_sigstop > 0),
        ("producer SIGKILL or SIGSTOP", injected.producer_sigkill + injected.producer_sigstop > 0),
        ("Redis restart from AOF", args.redis_faults < 1 || injected.redis_aof_restart > 0),
        ("Redis wipe", args.redis_faults < 2 || injected.redis_wipe > 0),
        ("Postgres restart", args.pg_restarts < 1 || injected.pg_restart > 0),
        ("three partitions", injected.partitions.len() == 3),
    ];
    let missing: Vec<&str> = kinds.iter().filter(|(_, done)| !done).map(|(k, _)| *k).collect();
    if !missing.is_empty() {
        eprintln!("faults: not injected: {}", missing.join(", "));
    }
    let clean = inv.iter().all(|n| *n == 0) && missing.is_empty();
    let status_text: Vec<String> = by_status.iter().map(|(s, n)| format!("{s} {n}")).collect();
    let tg_text: Vec<String> = tg_faults.iter().map(|(k, n)| format!("{k} {n}")).collect();
    let pg_down = injected.pg_down.map_or("-".to_owned(), |(lo, hi)| {
        format!("{:.1}-{:.1} s down", lo.as_secs_f64(), hi.as_secs_f64())
    });
    let cuts: Vec<String> = injected
        .partitions
        .iter()
        .map(|(w, what, d)| format!("w{w} from {what} {:.1} s", d.as_secs_f64()))
        .collect();
    println!(
        "faults: targets {} ({}; {} waiting on a long cooldown), attempts {}; faults injected: sigkill {} workers + {} producers, sigstop {} workers + {} producers ({} producer runs ended before their signal), redis wipe {}, redis restart from AOF {}, pg restart {} ({pg_down}), pg terminate {} ({} backends), partitions {} ({}), clocks w0 +{:?} w1 -{:?}, {}; violations: inv1 binding {}, inv2 flood_wait {} ({} more answered to a worker killed before it could record them), inv3 one_connection {} ({} while a worker was SIGSTOPped), inv4 lost {}, inv5 pacing {}, inv6 fencing {}; {:.0} s",
        targets.len(),
        status_text.join(", "),
        waiting.len(),
        report.attempts,
        injected.worker_sigkill,
        injected.producer_sigkill,
        injected.worker_sigstop,
        injected.producer_sigstop,
        injected.producer_missed,
        injected.redis_wipe,
        injected.redis_aof_restart,
        injected.pg_restart,
        injected.pg_terminate,
        injected.backends_terminated,
        injected.partitions.len(),
        cuts.join(", "),
        args.skew,
        args.skew,
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
    drop(workers);
    if args.keep {
        let kept = work.keep();
        let cluster = Arc::try_unwrap(pg).ok().map(|mut pg| (pg.keep(), pg.port));
        eprintln!(
            "faults: kept database {} (cluster {cluster:?}, still running) and work dir {}",
            db.name,
            kept.display()
        );
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
    let lines = report
        .flood_wait
        .iter()
        .chain(&report.pacing)
        .chain(&report.fencing)
        .chain(&report.bound_counts);
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
