//! The cost of a join with history: the pick (`Store::pick_accounts`) and a whole join
//! (`JoinService::execute` with the instant in-process fake, as `bench pacing` builds it) timed
//! in a pool whose accounts have a short history (10 joins each by default) and a long one
//! (10,000 each), side by side. The history is seeded by SQL: per account, that many bound
//! targets and as many counted attempts, the newest `--recent` of them in the last 24 h and the
//! rest older. Each join's statements are counted as they run (the store's statement
//! observer), by kind. Every state is seeded first, then a checkpoint flushes the seeding's
//! writes, then the states are timed in interleaved rounds, so the machine's changes of speed
//! fall on all of them alike.
//!
//! Neither cost may grow with history: the bound targets are counted on the account row
//! (`accounts.bound_targets`), and the daily count stops at the cap.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use smart_joiner::accounts_config::AccountsConfig;
use smart_joiner::domain::{JoinTask, Pacing, TargetLink, TargetStatus};
use smart_joiner::join::{ExecutionOutcome, JoinDeps, JoinService};
use smart_joiner::lease::LocalLocks;
use smart_joiner::store::{Limits, Store};
use smart_joiner::telegram::fake::{Script, ScriptedTelegram};

use crate::env::{FreshDb, machine};
use crate::pick::{Latency, latency};

#[derive(Debug, Clone, clap::Args)]
pub struct HistoryArgs {
    /// Accounts in the pool.
    #[arg(long, default_value_t = 1000)]
    pub accounts: usize,
    /// Joins per account in each state measured: bound targets and counted attempts each.
    #[arg(long, value_delimiter = ',', default_value = "10,10000")]
    pub history: Vec<u64>,
    /// Of each account's attempts, how many finished in the last 24 h (one an hour); the rest
    /// are older. Below the cap, so every account stays eligible.
    #[arg(long, default_value_t = 10)]
    pub recent: u64,
    /// The daily join cap.
    #[arg(long, default_value_t = 20)]
    pub cap: u32,
    /// Picks timed per state.
    #[arg(long, default_value_t = 2000)]
    pub picks: usize,
    /// Whole joins timed per state (new targets, each joined by a picked account).
    #[arg(long, default_value_t = 500)]
    pub joins: usize,
}

/// What one state measured.
struct State {
    history: u64,
    seeded: Duration,
    pick: Latency,
    join: Latency,
    /// Statements per join, by kind, and the mean time of one.
    statements: BTreeMap<&'static str, (f64, Duration)>,
}

impl State {
    fn statements_per_join(&self) -> f64 {
        self.statements.values().map(|(n, _)| n).sum()
    }
}

pub async fn run(args: HistoryArgs) -> anyhow::Result<bool> {
    anyhow::ensure!(args.accounts > 0, "--accounts must be at least 1");
    anyhow::ensure!(
        args.recent < u64::from(args.cap) && args.recent <= 23,
        "--recent must be below the cap and at most 23 (one attempt an hour within the last 24 h)"
    );
    anyhow::ensure!(args.history.len() >= 2, "--history needs two states or more (e.g. 10,10000)");
    println!("machine: {}", machine());
    println!(
        "history: {} accounts, daily cap {}, {} counted attempts per account in the last 24 h, \
         {} picks and {} joins per state",
        args.accounts, args.cap, args.recent, args.picks, args.joins
    );
    let mut prepared = Vec::new();
    for &history in &args.history {
        prepared.push(prepare(&args, history).await?);
    }
    let states = measure_all(&args, prepared).await?;
    for state in &states {
        let history = state.history;
        println!(
            "history[{history} joins per account]: pick {}; join {}; {:.2} statements per join ({})",
            state.pick,
            shown(&state.join),
            state.statements_per_join(),
            state
                .statements
                .iter()
                .map(|(kind, (n, mean))| format!("{kind} {n:.2} x {}", ms(*mean)))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }

    println!("history: side by side ({} accounts):", args.accounts);
    println!(
        "| joins per account | seeded in | pick p50 | pick p99 | join p50 | join p99 | statements per join |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for s in &states {
        println!(
            "| {} | {:.1} s | {} | {} | {} | {} | {:.2} |",
            s.history,
            s.seeded.as_secs_f64(),
            ms(s.pick.p50),
            ms(s.pick.p99),
            ms(s.join.p50),
            ms(s.join.p99),
            s.statements_per_join()
        );
    }
    let (first, last) = (&states[0], &states[states.len() - 1]);
    let ratio = |a: Duration, b: Duration| b.as_secs_f64() / a.as_secs_f64().max(1e-9);
    let ratios = [
        ratio(first.pick.p50, last.pick.p50),
        ratio(first.pick.p99, last.pick.p99),
        ratio(first.join.p50, last.join.p50),
        ratio(first.join.p99, last.join.p99),
    ];
    println!(
        "history: ratio {} / {} joins per account: pick p50 {:.2}, p99 {:.2}; join p50 {:.2}, p99 {:.2}",
        last.history, first.history, ratios[0], ratios[1], ratios[2], ratios[3]
    );
    // Each statement's mean in both states. The gate reads nothing of the history (one
    // account row by its key): its ratio is what the machine and the bigger database do to
    // any statement, the control for the others.
    let per_kind = first
        .statements
        .iter()
        .filter_map(|(kind, (_, a))| {
            let (_, b) = last.statements.get(kind)?;
            Some(format!("{kind} {:.2}", ratio(*a, *b)))
        })
        .collect::<Vec<_>>();
    println!("history: ratio of each statement's mean: {}", per_kind.join(", "));
    // The medians decide: a p99 on a shared machine is the machine's as much as the query's.
    let same = ratios[0] < 1.5 && ratios[2] < 1.5;
    println!(
        "history: the cost does not grow with history (medians within 1.5x): {}",
        if same { "yes" } else { "NO" }
    );
    Ok(same)
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn shown(l: &Latency) -> String {
    format!("{} joins, p50 {}, p99 {}, max {}", l.n, ms(l.p50), ms(l.p99), ms(l.max))
}

/// How many rounds the timings of the states are interleaved in: each state's picks and joins
/// are timed a slice at a time, the states taking turns, so a change of the machine's speed
/// while the run goes on (a checkpoint, another process) falls on every state alike instead of
/// on whichever was measured last.
const ROUNDS: usize = 10;

type Counts = Arc<Mutex<BTreeMap<&'static str, (u64, Duration)>>>;

/// One state, seeded and ready to be timed.
struct Prepared {
    history: u64,
    seeded: Duration,
    db: FreshDb,
    svc: JoinService,
    counts: Counts,
    /// Queued new targets not joined yet.
    targets: Vec<i64>,
    queued: usize,
    picks: Vec<Duration>,
    joins: Vec<Duration>,
}

async fn prepare(args: &HistoryArgs, history: u64) -> anyhow::Result<Prepared> {
    let db = FreshDb::create("history").await?;
    let names: Vec<String> = (0..args.accounts).map(|j| format!("acc_{j:05}")).collect();
    db.store.sync_accounts(&names, "default").await?;
    let t = Instant::now();
    seed(&db, args, history).await?;
    let seeded = t.elapsed();
    println!(
        "history[{history} joins per account]: seeded {} bound targets and as many attempts in {:.1} s",
        history * args.accounts as u64,
        seeded.as_secs_f64()
    );
    let limits = limits(args);
    // Every statement of the joins is counted, by kind.
    let counts: Counts = Arc::default();
    let observed = {
        let counts = counts.clone();
        db.store.observed(move |info| {
            let kind = kind_of(&info.statement.sql);
            let mut counts = counts.lock().unwrap_or_else(|p| p.into_inner());
            let entry = counts.entry(kind).or_default();
            entry.0 += 1;
            entry.1 += info.elapsed;
        })
    };
    let svc = service(&observed, &names, limits)?;
    let links: Vec<TargetLink> = (0..args.joins)
        .map(|i| TargetLink::parse(&format!("@history_new_{i:06}")))
        .collect::<Result<_, _>>()?;
    db.store.import_targets(&links, "fresh").await?;
    let queued = db.store.queue_new_targets("fresh", args.joins as u64, db.store.now()).await?;
    let mut targets: Vec<i64> = queued.iter().rev().map(|t| t.id).collect();
    // Warm up the pick and the join's statements, then count from zero.
    for _ in 0..20 {
        pick(&db.store, &limits).await?;
    }
    for _ in 0..10 {
        if let Some(id) = targets.pop() {
            join(&svc, id).await?;
        }
    }
    counts.lock().unwrap_or_else(|p| p.into_inner()).clear();
    Ok(Prepared {
        history,
        seeded,
        db,
        svc,
        counts,
        targets,
        queued: queued.len(),
        picks: Vec::new(),
        joins: Vec::new(),
    })
}

fn limits(args: &HistoryArgs) -> Limits {
    Limits { daily_join_cap: args.cap, channel_limit: 1_000_000 }
}

/// One round of a state: `picks` picks and `joins` whole joins of new targets, timed.
async fn time_round(
    p: &mut Prepared,
    args: &HistoryArgs,
    picks: usize,
    joins: usize,
) -> anyhow::Result<()> {
    let limits = limits(args);
    for _ in 0..picks {
        let t = Instant::now();
        let got = pick(&p.db.store, &limits).await?;
        p.picks.push(t.elapsed());
        anyhow::ensure!(!got.is_empty(), "no eligible account: the seeding left none");
    }
    for _ in 0..joins {
        let Some(id) = p.targets.pop() else { break };
        let t = Instant::now();
        join(&p.svc, id).await?;
        p.joins.push(t.elapsed());
    }
    Ok(())
}

/// Times every state in interleaved rounds and checks that every new target was joined.
async fn measure_all(
    args: &HistoryArgs,
    mut prepared: Vec<Prepared>,
) -> anyhow::Result<Vec<State>> {
    // The seeding's writes are flushed before anything is timed: the checkpoint they trigger
    // would otherwise land on whichever state is timed while it runs.
    if let Some(p) = prepared.first()
        && let Err(e) = p.db.exec("CHECKPOINT").await
    {
        println!("history: CHECKPOINT failed ({e}); timing without it");
    }
    let timed_joins = args.joins.saturating_sub(10);
    anyhow::ensure!(timed_joins > 0, "--joins must be above 10 (the first 10 warm up)");
    for round in 0..ROUNDS {
        let share = |n: usize| n * (round + 1) / ROUNDS - n * round / ROUNDS;
        for p in prepared.iter_mut() {
            time_round(p, args, share(args.picks), share(timed_joins)).await?;
        }
    }
    let mut states = Vec::new();
    for p in prepared {
        let joined = p.db.store.targets(Some("fresh"), None).await?;
        let done = joined.iter().filter(|t| t.status == TargetStatus::Joined).count();
        anyhow::ensure!(done == p.queued, "{done} of {} new targets joined", p.queued);
        let n = p.joins.len() as f64;
        let statements = p
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(kind, (c, total))| (*kind, (*c as f64 / n, *total / (*c).max(1) as u32)))
            .collect();
        drop(p.svc);
        p.db.drop_db().await;
        states.push(State {
            history: p.history,
            seeded: p.seeded,
            pick: latency(p.picks),
            join: latency(p.joins),
            statements,
        });
    }
    Ok(states)
}

/// Per account `history` targets bound to it (joined days ago) and as many counted attempts:
/// the newest `recent` one an hour within the last 24 h, the rest one an hour before that.
/// Telegram's channel limit of every account is read as high, so none is full.
async fn seed(db: &FreshDb, args: &HistoryArgs, history: u64) -> anyhow::Result<()> {
    let accounts = args.accounts as u64;
    let rows = history * accounts;
    let recent = args.recent;
    // Row g belongs to account ((g - 1) % accounts) + 1, as its k-th newest, k = (g - 1) / accounts.
    db.exec(&format!(
        "INSERT INTO targets (link, kind, niche, status, assigned_account_id, attempts, \
         in_doubt_tries, joined_at, created_at, updated_at) \
         SELECT '@history_' || g, 'username', 'history', 'joined', ((g - 1) % {accounts}) + 1, 1, 0, \
                now() - interval '3 days', now(), now() \
         FROM generate_series(1, {rows}) g"
    ))
    .await?;
    db.exec(&format!(
        "INSERT INTO join_attempts (target_id, account_id, epoch, started_at, finished_at, outcome, worker) \
         SELECT g, ((g - 1) % {accounts}) + 1, 1, at - interval '1 second', at, 'joined', 'bench' \
         FROM (SELECT g, now() - ((g - 1) / {accounts} + 1) * interval '1 hour' \
                 - CASE WHEN (g - 1) / {accounts} < {recent} THEN interval '0' ELSE interval '1 day' END AS at \
               FROM generate_series(1, {rows}) g) s"
    ))
    .await?;
    // Bound by hand: the counts on the rows follow, as the migration's backfill sets them.
    db.exec(
        "UPDATE accounts SET channel_limit = 1000000, profile_read_at = now(), \
         last_action_at = now() - interval '1 hour', \
         bound_targets = (SELECT COUNT(*) FROM targets WHERE assigned_account_id = accounts.id)",
    )
    .await?;
    db.exec("VACUUM ANALYZE").await?;
    Ok(())
}

/// The join's pick (`Store::pick_accounts` with the join procedure's parameters).
async fn pick(store: &Store, limits: &Limits) -> anyhow::Result<Vec<smart_joiner::store::Account>> {
    let (spread, want) = (smart_joiner::join::PICK_SPREAD, smart_joiner::join::PICK_CANDIDATES);
    Ok(store.pick_accounts("default", store.now(), &[], limits, spread, want).await?)
}

/// One job to its end, follow-ups included.
pub(crate) async fn join(svc: &JoinService, target_id: i64) -> anyhow::Result<()> {
    let mut out = svc.execute(&JoinTask::new(target_id, "default").into_current()).await?;
    while let ExecutionOutcome::Reschedule { job, .. } = out {
        out = svc.execute(&job).await?;
    }
    Ok(())
}

/// The join procedure on `store` with the instant fake and no pause, as `bench pacing` builds it.
pub(crate) fn service(
    store: &Store,
    names: &[String],
    limits: Limits,
) -> anyhow::Result<JoinService> {
    let accounts = AccountsConfig::parse(&crate::throughput::dummy_accounts_json(names))?;
    Ok(JoinService::new(JoinDeps {
        store: store.clone(),
        locks: Arc::new(LocalLocks::default()),
        telegram: Arc::new(ScriptedTelegram::new(Script::default())),
        accounts: Arc::new(accounts),
        pacing: Pacing {
            join_pause_min: Duration::ZERO,
            join_pause_max: Duration::ZERO,
            error_pause: Duration::ZERO,
            ..Pacing::default()
        },
        limits,
        call_timeout: Duration::from_secs(5),
        worker_name: "bench".into(),
    }))
}

/// What a statement of the join is, from its SQL.
pub(crate) fn kind_of(sql: &str) -> &'static str {
    let has = |s: &str| sql.contains(s);
    if has("INSERT INTO \"join_attempts\"") {
        "decision"
    } else if has("\"lease_epoch\" = \"lease_epoch\" +") {
        "take"
    } else if sql.starts_with("UPDATE \"accounts\" SET \"held_until\"") {
        "gate"
    } else if has("FROM \"join_attempts\"") && has("FROM \"accounts\"") {
        "pick"
    } else if has("\"active_hours\"") && !has("*") {
        "active hours"
    } else if sql.starts_with("SELECT") && has("FROM \"targets\"") {
        "target"
    } else if has("clock_timestamp") {
        "clock"
    } else if sql.starts_with("UPDATE \"accounts\"") {
        "account update"
    } else if sql.starts_with("UPDATE \"targets\"") {
        "target update"
    } else {
        "other"
    }
}
