//! Scale of the data, through the real `smart-joiner` binary: `accounts sync` of 100,000
//! accounts, `targets import` of 1,000,000 and 10,000,000 lines (time and peak memory: the
//! import streams the file, so its memory must not grow with the file), and the pick's p99
//! with 10,000 accounts and 10,000,000 targets.
//!
//! Peak memory is the child's own `ru_maxrss`: each command runs under `bench rusage`, which
//! spawns it as its only child, waits for it and reads `getrusage(RUSAGE_CHILDREN)`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use smart_joiner::store::Limits;

use crate::env::{FreshDb, machine};
use crate::pick::latency;
use crate::throughput::{count, dummy_accounts_json};

#[derive(Debug, Clone, clap::Args)]
pub struct ScaleArgs {
    /// Accounts of the `accounts sync` run (0: skip it).
    #[arg(long, default_value_t = 100_000)]
    pub sync_accounts: usize,
    /// Line counts of the `targets import` runs, each into a fresh database (none: skip).
    #[arg(long, value_delimiter = ',', default_value = "1000000,10000000")]
    pub import_lines: Vec<u64>,
    /// Import each file a second time and check that it adds nothing.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub reimport: bool,
    /// Accounts of the pick measurement (0: skip it).
    #[arg(long, default_value_t = 10_000)]
    pub pick_accounts: u64,
    /// Targets of the pick measurement (30 % bound to the accounts, with their attempts).
    #[arg(long, default_value_t = 10_000_000)]
    pub pick_targets: u64,
    /// Picks timed.
    #[arg(long, default_value_t = 2000)]
    pub picks: usize,
    /// Where the `smart-joiner` binary is (default: next to this one).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Keep the databases (names printed).
    #[arg(long)]
    pub keep: bool,
}

/// One run of a child: wall time, peak resident memory, its output.
struct Measured {
    elapsed: Duration,
    max_rss_kib: u64,
    stdout: String,
}

impl std::fmt::Display for Measured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.1} s, peak RSS {:.1} MiB",
            self.elapsed.as_secs_f64(),
            self.max_rss_kib as f64 / 1024.0
        )
    }
}

/// The marker `bench rusage` writes its figure after, on its standard error.
const RUSAGE_MARK: &str = "bench-rusage: max_rss_kib=";

/// `bench rusage CMD ARGS...`: runs CMD as this process's only child, then prints its peak
/// resident set size (`ru_maxrss` of the children, KiB) on standard error. Exits with CMD's
/// status.
pub fn rusage(cmd: &[String]) -> anyhow::Result<bool> {
    let (bin, args) = cmd.split_first().context("rusage needs a command")?;
    let status = Command::new(bin).args(args).status().with_context(|| format!("run {bin}"))?;
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)?;
    eprintln!("{RUSAGE_MARK}{}", usage.max_rss());
    Ok(status.success())
}

/// Runs `smart-joiner ARGS` under `bench rusage` with `vars`; an error with its output when
/// it fails.
fn measure(sj: &Path, args: &[&str], vars: &[(&str, &str)]) -> anyhow::Result<Measured> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("rusage").arg(sj).args(args);
    cmd.env_remove("DATABASE_URL").env_remove("POSTGRES_HOST").env("RUST_LOG", "warn");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let t = Instant::now();
    let out = cmd.stdin(Stdio::null()).output().context("run bench rusage")?;
    let elapsed = t.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!("smart-joiner {} failed: {}{}", args.join(" "), tail(&stdout), tail(&stderr));
    }
    let max_rss_kib = stderr
        .lines()
        .find_map(|l| l.strip_prefix(RUSAGE_MARK))
        .and_then(|n| n.trim().parse().ok())
        .context("bench rusage printed no figure")?;
    Ok(Measured { elapsed, max_rss_kib, stdout })
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join("\n")
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("").trim()
}

fn smart_joiner_bin(flag: Option<&Path>) -> anyhow::Result<PathBuf> {
    let dir = match flag {
        Some(d) => d.to_path_buf(),
        None => std::env::current_exe()?.parent().context("no exe dir")?.to_path_buf(),
    };
    let bin = dir.join("smart-joiner");
    if !bin.exists() {
        bail!(
            "{} has no `smart-joiner` binary: build it with `cargo build --release -p smart-joiner` \
             or pass --bin-dir",
            dir.display()
        );
    }
    Ok(bin)
}

pub async fn run(args: ScaleArgs) -> anyhow::Result<bool> {
    println!("machine: {}", machine());
    println!(
        "scale: sync {} accounts; import {:?} lines (re-import: {}); pick with {} accounts and {} targets",
        args.sync_accounts, args.import_lines, args.reimport, args.pick_accounts, args.pick_targets
    );
    let sj = smart_joiner_bin(args.bin_dir.as_deref())?;
    let work = tempfile::Builder::new().prefix("sj-scale-").tempdir()?;
    let mut ok = true;
    if args.sync_accounts > 0 {
        ok &= sync(&args, &sj, work.path()).await?;
    }
    let mut peaks = Vec::new();
    for &lines in &args.import_lines {
        let (good, peak) = import(&args, &sj, work.path(), lines).await?;
        ok &= good;
        peaks.push((lines, peak));
    }
    if let [(small_n, small), .., (big_n, big)] = peaks[..] {
        // Bounded: ten times the lines may not cost more than a few MiB more.
        let bounded = big <= small + 16 * 1024;
        println!(
            "import: peak memory {:.1} MiB at {small_n} lines, {:.1} MiB at {big_n} lines: {}",
            small as f64 / 1024.0,
            big as f64 / 1024.0,
            if bounded { "does not grow with the file" } else { "GROWS with the file" }
        );
        ok &= bounded;
    }
    if args.pick_accounts > 0 {
        ok &= pick(&args).await?;
    }
    Ok(ok)
}

async fn sync(args: &ScaleArgs, sj: &Path, work: &Path) -> anyhow::Result<bool> {
    let n = args.sync_accounts;
    let db = FreshDb::create("scale_sync").await?;
    let t = Instant::now();
    let names: Vec<String> = (0..n).map(|j| format!("acc_{j:06}")).collect();
    let config = work.join("accounts_config.json");
    std::fs::write(&config, dummy_accounts_json(&names))?;
    let size = std::fs::metadata(&config)?.len();
    println!(
        "sync: wrote accounts_config.json of {n} entries ({:.1} MiB) in {:.1} s",
        size as f64 / 1048576.0,
        t.elapsed().as_secs_f64()
    );
    let config_s = config.display().to_string();
    let vars = [("DATABASE_URL", db.url.as_str()), ("ACCOUNTS_CONFIG", config_s.as_str())];
    let mut ok = true;
    for pass in ["first", "again"] {
        let m = measure(sj, &["accounts", "sync"], &vars)?;
        let stored = count(&db.url, "SELECT count(*) FROM accounts").await?;
        println!("sync[{pass}]: `smart-joiner accounts sync` of {n} accounts: {m}; {stored} rows");
        println!("sync[{pass}]:   said: {}", first_line(&m.stdout));
        if stored as usize != n {
            println!("sync[{pass}]: WRONG: {stored} rows for {n} accounts");
            ok = false;
        }
    }
    finish(db, args.keep).await;
    Ok(ok)
}

/// Writes a targets file of `lines` lines: a header, usernames, and every 1,000th line a
/// repeat of the line before (the file's own duplicates).
fn write_targets(path: &Path, lines: u64) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    writeln!(out, "link")?;
    let mut id = 0u64;
    for line in 1..lines {
        if line % 1000 == 0 {
            writeln!(out, "@scale_{:09}", id.saturating_sub(1))?;
        } else {
            writeln!(out, "@scale_{id:09}")?;
            id += 1;
        }
    }
    out.flush()?;
    Ok(())
}

/// Imports a file of `lines` lines into a fresh database (twice with `--reimport`); returns
/// whether the counts were right, and the first import's peak RSS in KiB.
async fn import(
    args: &ScaleArgs,
    sj: &Path,
    work: &Path,
    lines: u64,
) -> anyhow::Result<(bool, u64)> {
    let db = FreshDb::create("scale_import").await?;
    let file = work.join(format!("targets_{lines}.txt"));
    let t = Instant::now();
    write_targets(&file, lines)?;
    let size = std::fs::metadata(&file)?.len();
    println!(
        "import: wrote {lines} lines ({:.1} MiB) in {:.1} s",
        size as f64 / 1048576.0,
        t.elapsed().as_secs_f64()
    );
    let links = lines - 1;
    let repeated = (lines - 1) / 1000;
    let unique = links - repeated;
    let file_s = file.display().to_string();
    // No folder link in the file: the accounts file is never read.
    let config = work.join("accounts_config.json").display().to_string();
    let vars = [("DATABASE_URL", db.url.as_str()), ("ACCOUNTS_CONFIG", config.as_str())];
    let cmd = ["targets", "import", file_s.as_str(), "--niche", "scale", "--json"];
    let mut ok = true;
    let mut first_peak = 0;
    let passes: &[&str] = if args.reimport { &["first", "again"] } else { &["first"] };
    for (i, pass) in passes.iter().enumerate() {
        let m = measure(sj, &cmd, &vars)?;
        let report: serde_json::Value =
            serde_json::from_str(&m.stdout).context("targets import --json printed no JSON")?;
        let stored = count(&db.url, "SELECT count(*) FROM targets").await?;
        let rate = links as f64 / m.elapsed.as_secs_f64();
        println!(
            "import[{pass}]: `smart-joiner targets import` of {lines} lines: {m} ({rate:.0} lines/s); \
             accepted {}, already stored {}, repeated in the file {}; {stored} rows",
            report["accepted"], report["duplicates_in_database"], report["duplicates_in_file"]
        );
        let want = if i == 0 { (unique, 0) } else { (0, unique) };
        let got = (
            report["accepted"].as_u64().unwrap_or(u64::MAX),
            report["duplicates_in_database"].as_u64().unwrap_or(u64::MAX),
        );
        if got != want
            || report["duplicates_in_file"].as_u64() != Some(repeated)
            || stored as u64 != unique
        {
            println!(
                "import[{pass}]: WRONG: expected accepted/already stored {want:?}, {repeated} repeated, {unique} rows"
            );
            ok = false;
        }
        if i == 0 {
            first_peak = m.max_rss_kib;
        }
    }
    let audits = count(&db.url, "SELECT count(*) FROM audit_log WHERE action = 'import'").await?;
    if audits != passes.len() as i64 {
        println!("import: WRONG: {audits} audit rows for {} imports", passes.len());
        ok = false;
    }
    std::fs::remove_file(&file)?;
    finish(db, args.keep).await;
    Ok((ok, first_peak))
}

async fn finish(db: FreshDb, keep: bool) {
    if keep {
        println!("kept database {}", db.name);
    } else {
        db.drop_db().await;
    }
}

/// The pick's latency with `--pick-accounts` accounts and `--pick-targets` targets, 30 % of
/// them bound (spread evenly over the accounts) with one attempt each, ten per account in the
/// last 24 hours.
async fn pick(args: &ScaleArgs) -> anyhow::Result<bool> {
    let db = FreshDb::create("scale_pick").await?;
    let accounts = args.pick_accounts;
    let names: Vec<String> = (0..accounts).map(|j| format!("acc_{j:06}")).collect();
    db.store.sync_accounts(&names, "default").await?;
    let t = Instant::now();
    let n = args.pick_targets;
    let (bound, recent) = crate::pick::seed_bound_targets(&db, accounts, n, "@scale_pick_").await?;
    println!(
        "pick: loaded {n} targets ({bound} bound, {} per account) and {bound} attempts \
         ({recent} in the last 24 h) in {:.1} s",
        bound / accounts.max(1),
        t.elapsed().as_secs_f64()
    );
    let limits = Limits { daily_join_cap: 20, channel_limit: 500 };
    let (spread, want) = (smart_joiner::join::PICK_SPREAD, smart_joiner::join::PICK_CANDIDATES);
    for _ in 0..20 {
        db.store.pick_accounts("default", chrono::Utc::now(), &[], &limits, spread, want).await?;
    }
    let mut samples = Vec::with_capacity(args.picks);
    for i in 0..args.picks {
        let excluded: Vec<i64> = if i % 2 == 0 { vec![] } else { vec![1, 2, 3] };
        let now = chrono::Utc::now();
        let t = Instant::now();
        let got = db.store.pick_accounts("default", now, &excluded, &limits, spread, want).await?;
        samples.push(t.elapsed());
        anyhow::ensure!(!got.is_empty(), "no eligible account");
    }
    let lat = latency(samples);
    let ok = lat.p99 < Duration::from_millis(2);
    println!("pick: {accounts} accounts, {n} targets: {lat}");
    println!(
        "pick: target p99 < 2 ms: {} (p99 {:.3} ms)",
        if ok { "met" } else { "MISSED" },
        lat.p99.as_secs_f64() * 1e3
    );
    finish(db, args.keep).await;
    Ok(ok)
}
