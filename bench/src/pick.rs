//! The cost of picking an account (`Store::pick_accounts`, step 2 of every join) with
//! 1,000 accounts in the pool, before and after 1,000,000 targets (30 % of them bound, 300 per
//! account) and 300,000 attempt rows are added. It must not grow with the number of targets.

use std::time::{Duration, Instant};

use smart_joiner::store::Limits;

use crate::env::{FreshDb, machine};

#[derive(Debug, Clone, clap::Args)]
pub struct PickArgs {
    #[arg(long, default_value_t = 1000)]
    pub accounts: usize,
    #[arg(long, default_value_t = 1_000_000)]
    pub targets: u64,
    /// Picks measured per phase.
    #[arg(long, default_value_t = 2000)]
    pub picks: usize,
    #[arg(long)]
    pub keep: bool,
    /// The pool as a running deployment has it, instead of every account fresh (never
    /// active, all free): 70 % resting after a recent join, 10 % in cooldown (their last join
    /// the oldest), 20 % free (rested an hour ago).
    #[arg(long)]
    pub mix: bool,
}

/// The states of `--mix`, by account id: resting (ids ending in 0-6), cooldown (7), free (8, 9).
const MIX: &str = "UPDATE accounts SET \
     status = CASE WHEN id % 10 = 7 THEN 'cooldown' ELSE 'active' END, \
     next_allowed_action_time = CASE WHEN id % 10 < 7 THEN now() + interval '1 hour' \
          WHEN id % 10 = 7 THEN now() + interval '2 hours' ELSE now() - interval '1 hour' END, \
     last_action_at = CASE WHEN id % 10 < 7 THEN now() - (id % 600) * interval '1 second' \
          WHEN id % 10 = 7 THEN now() - interval '3 hours' - id * interval '1 millisecond' \
          ELSE now() - interval '2 hours' - id * interval '1 millisecond' END";

pub async fn run(args: PickArgs) -> anyhow::Result<bool> {
    println!("machine: {}", machine());
    let db = FreshDb::create("pick").await?;
    let names: Vec<String> = (0..args.accounts).map(|j| format!("acc_{j:04}")).collect();
    db.store.sync_accounts(&names, "default").await?;
    let pool = if args.mix {
        db.exec(MIX).await?;
        db.exec("VACUUM ANALYZE accounts").await?;
        "mixed: 70 % resting, 10 % cooldown, 20 % free"
    } else {
        "fresh: all free, never active"
    };
    println!(
        "pick: {} accounts ({pool}), {} targets, {} picks per phase",
        args.accounts, args.targets, args.picks
    );
    let limits = Limits { daily_join_cap: 20, channel_limit: 500 };

    let empty = measure(&db, &limits, args.picks).await?;
    println!("pick: {} accounts, 0 targets: {empty}", args.accounts);

    let t = Instant::now();
    let n = args.targets;
    let (bound, _recent) =
        seed_bound_targets(&db, args.accounts as u64, n, "@pick_target_").await?;
    println!(
        "pick: loaded {n} targets ({bound} bound) and {bound} attempts in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let full = measure(&db, &limits, args.picks).await?;
    println!("pick: {} accounts, {n} targets: {full}", args.accounts);
    let ok = full.p99 < Duration::from_millis(2);
    println!(
        "pick: target p99 < 2 ms with {n} targets: {} (p99 {:.3} ms)",
        if ok { "met" } else { "MISSED" },
        full.p99.as_secs_f64() * 1e3
    );
    if !args.keep {
        db.drop_db().await;
    } else {
        println!("pick: kept database {}", db.name);
    }
    Ok(true)
}

pub struct Latency {
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    pub n: usize,
}

impl std::fmt::Display for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} picks, p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            self.n,
            self.p50.as_secs_f64() * 1e3,
            self.p99.as_secs_f64() * 1e3,
            self.max.as_secs_f64() * 1e3
        )
    }
}

/// Seeds `n` targets named `prefix` + number, 30 % of them bound (spread evenly over the
/// `accounts` accounts, joined three days ago) with one attempt each, ten per account in the last
/// 24 hours; recounts the accounts' `bound_targets` and analyses. Returns (bound, recent).
pub async fn seed_bound_targets(
    db: &FreshDb,
    accounts: u64,
    n: u64,
    prefix: &str,
) -> anyhow::Result<(u64, u64)> {
    let bound = n * 3 / 10;
    db.exec(&format!(
        "INSERT INTO targets (link, kind, niche, status, assigned_account_id, attempts, in_doubt_tries, \
         joined_at, warmup_ends_at, created_at, updated_at) \
         SELECT '{prefix}' || g, 'username', 'bench', \
                CASE WHEN g <= {bound} THEN 'joined' ELSE 'new' END, \
                CASE WHEN g <= {bound} THEN (g % {accounts}) + 1 ELSE NULL END, \
                CASE WHEN g <= {bound} THEN 1 ELSE 0 END, 0, \
                CASE WHEN g <= {bound} THEN now() - interval '3 days' ELSE NULL END, \
                CASE WHEN g <= {bound} THEN now() - interval '2 days' ELSE NULL END, now(), now() \
         FROM generate_series(1, {n}) g"
    ))
    .await?;
    let recent = accounts * 10;
    db.exec(&format!(
        "INSERT INTO join_attempts (target_id, account_id, epoch, started_at, finished_at, outcome, worker) \
         SELECT g, (g % {accounts}) + 1, 1, \
                CASE WHEN g <= {recent} THEN now() - interval '1 hour' ELSE now() - interval '3 days' END, \
                CASE WHEN g <= {recent} THEN now() - interval '1 hour' ELSE now() - interval '3 days' END, \
                'joined', 'bench' \
         FROM generate_series(1, {bound}) g"
    ))
    .await?;
    // Bound by hand: the count each account keeps of its bound targets follows.
    db.exec(
        "UPDATE accounts SET bound_targets = \
         (SELECT COUNT(*) FROM targets WHERE assigned_account_id = accounts.id)",
    )
    .await?;
    db.exec("VACUUM ANALYZE").await?;
    Ok((bound, recent))
}

pub fn latency(mut samples: Vec<Duration>) -> Latency {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    Latency { p50: at(0.50), p99: at(0.99), max: *samples.last().unwrap(), n: samples.len() }
}

/// The join's pick (`Store::pick_accounts` with the join procedure's parameters).
async fn pick(
    db: &FreshDb,
    excluded: &[i64],
    limits: &Limits,
) -> anyhow::Result<Vec<smart_joiner::store::Account>> {
    let (spread, want) = (smart_joiner::join::PICK_SPREAD, smart_joiner::join::PICK_CANDIDATES);
    let now = chrono::Utc::now();
    Ok(db.store.pick_accounts("default", now, excluded, limits, spread, want).await?)
}

async fn measure(db: &FreshDb, limits: &Limits, picks: usize) -> anyhow::Result<Latency> {
    // Warm the pool and the caches.
    for _ in 0..20 {
        pick(db, &[], limits).await?;
    }
    let mut samples = Vec::with_capacity(picks);
    for i in 0..picks {
        let excluded: Vec<i64> = if i % 2 == 0 { vec![] } else { vec![1, 2, 3] };
        let t = Instant::now();
        let got = pick(db, &excluded, limits).await?;
        samples.push(t.elapsed());
        anyhow::ensure!(!got.is_empty(), "no eligible account");
    }
    Ok(latency(samples))
}
