//! `smart-joiner demo`: the whole single-machine path against a loopback Telegram DC.
//!
//! Starts `tgsim` on 127.0.0.1 with a generated scenario (a few accounts, a few dozen groups,
//! FloodWaits on both sides of the threshold, a join request, a guard bot, a dead invite, a
//! private channel and a banned account), writes an accounts_config.json whose Telethon sessions
//! point at it, uses a SQLite file in a temporary directory and fast pacing, and runs the real
//! join path: the grammers adapter over TCP, the policy, the store. A folder link is expanded
//! into its public chats first, and one account rests outside its active hours throughout.
//! Nothing touches Telegram.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tgsim::{Account, Answer, Group, Scenario, Script, Server};

use crate::accounts_config::AccountsConfig;
use crate::domain::{ActiveHours, FolderLink, Pacing, TargetLink, TargetStatus};
use crate::folders::FolderCheck;
use crate::join::{JoinDeps, JoinService};
use crate::lease::LocalLocks;
use crate::modes::batch::SmartJoiner;
use crate::store::{Limits, Store};
use crate::telegram::grammers::GrammersTelegram;

/// The demo's niche.
pub const NICHE: &str = "demo_cars";
/// The demo's folder link.
pub const FOLDER: &str = "https://t.me/addlist/CarsOfTheWest";
/// The account that rests outside its active hours.
pub const RESTING: &str = "yaryna";

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot start the loopback Telegram DC: {0}")]
    Tgsim(String),
    #[error("demo setup: {0}")]
    Setup(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Run(#[from] crate::modes::batch::RunError),
    #[error(transparent)]
    Join(#[from] crate::join::JoinError),
}

/// What the demo did, for the final table (and for its test).
#[derive(Debug, Clone)]
pub struct DemoReport {
    pub elapsed: Duration,
    /// Per target: link, final status, account (session name), error code.
    pub targets: Vec<(String, TargetStatus, Option<String>, Option<String>)>,
    /// Per account: status, status reason, groups bound.
    pub accounts: Vec<(String, String, Option<String>, usize)>,
    /// Rules tgsim saw broken (FloodWait ignored, two connections, joins too close).
    pub violations: Vec<String>,
    /// Stopped by a signal before every group settled.
    pub interrupted: bool,
    /// What expanding the folder link gave, in words.
    pub folder: String,
    /// The account resting outside its active hours, and those hours.
    pub resting: (String, String),
}

/// Demo pacing: SmartJoiner's shape, minutes scaled to seconds.
fn pacing() -> Pacing {
    Pacing {
        join_pause_min: Duration::from_millis(1500),
        join_pause_max: Duration::from_millis(2500),
        error_pause: Duration::from_millis(500),
        ..Pacing::default()
    }
}

/// `HH:MM-HH:MM` UTC, starting `from` hours after now and lasting an hour: closed now.
fn later_window(from: i64) -> String {
    let at = |h: i64| (chrono::Utc::now() + chrono::Duration::hours(h)).format("%H:%M").to_string();
    format!("{}-{}", at(from), at(from + 1))
}

fn scenario(pacing: &Pacing, resting_window: &str) -> (Scenario, Vec<String>) {
    let mut scenario = Scenario::new().min_join_pause(pacing.join_pause_min);
    let names = ["anna", "bohdan", "dmytro", "olena", "taras"];
    for (i, name) in names.iter().enumerate() {
        scenario = scenario.account(Account::new(*name, 1001 + i as i64));
    }
    // Expected to join only in a window hours away: tgsim reports any join of it now.
    scenario = scenario.account(Account::new(RESTING, 1009).active_hours_utc(&[resting_window]));
    // A shared folder: two public chats and one reachable only by invitation.
    scenario = scenario
        .group(Group::new(6101, "Cars Uzhhorod").username("cars_uzhhorod"))
        .group(Group::new(6102, "Cars Lutsk").username("cars_lutsk"))
        .group(Group::new(6103, "Lutsk garage (private)").invite("LutskGarage42"))
        .folder("CarsOfTheWest", "Cars of the west", &[6101, 6102, 6103]);
    // One account Telegram has banned: its first join says so.
    scenario =
        scenario.script(Script::join().account("taras").answers([Answer::UserDeactivatedBan]));

    let mut links = Vec::new();
    let cities = ["kyiv", "lviv", "odesa", "dnipro", "kharkiv", "poltava"];
    let kinds = ["cars", "auto_market", "car_parts", "drivers"];
    let mut id = 5000;
    for city in cities {
        for kind in kinds {
            id += 1;
            let username = format!("{kind}_{city}");
            scenario = scenario.group(Group::new(id, format!("{kind} {city}")).username(&username));
            links.push(format!("@{username}"));
        }
    }
    let mut special = |group: Group, link: String, script: Option<Script>| {
        scenario = std::mem::take(&mut scenario).group(group);
        if let Some(s) = script {
            scenario = std::mem::take(&mut scenario).script(s);
        }
        links.push(link);
    };
    special(
        Group::new(6001, "Car flood").username("cars_flooded"),
        "@cars_flooded".into(),
        Some(
            Script::join()
                .target("@cars_flooded")
                .answers([Answer::FloodWait { seconds: 3 }, Answer::Ok]),
        ),
    );
    special(
        Group::new(6002, "Very busy cars").username("cars_very_busy"),
        "@cars_very_busy".into(),
        Some(
            Script::join()
                .target("@cars_very_busy")
                .answers([Answer::FloodWait { seconds: 900 }, Answer::Ok]),
        ),
    );
    special(
        Group::new(6003, "Cars club (approval)").invite("CarsClubApproval1").request_needed(),
        "https://t.me/+CarsClubApproval1".into(),
        None,
    );
    special(
        Group::new(6004, "Guarded cars").username("cars_guarded"),
        "@cars_guarded".into(),
        Some(
            Script::join()
                .target("@cars_guarded")
                .answers([Answer::WebView { bot_id: 7_000_000_001 }]),
        ),
    );
    special(
        Group::new(6005, "Private cars").username("cars_private"),
        "@cars_private".into(),
        Some(Script::join().target("@cars_private").answers([Answer::ChannelPrivate])),
    );
    // An invite nobody has: a dead link.
    links.push("https://t.me/joinchat/DeadInviteLink42".into());
    (scenario, links)
}

/// Runs the demo; `progress` receives human lines as it goes.
pub async fn run(progress: &mut (dyn FnMut(&str) + Send)) -> Result<DemoReport, DemoError> {
    run_until(progress, tokio_util::sync::CancellationToken::new()).await
}

/// [`run`], stopped early (joins in flight end cleanly) when `stop` is cancelled.
pub async fn run_until(
    progress: &mut (dyn FnMut(&str) + Send),
    stop: tokio_util::sync::CancellationToken,
) -> Result<DemoReport, DemoError> {
    run_observed(progress, stop, None).await
}

/// `demo --console`: the demo, with the operator console served on its database from before
/// the first join until `stop` is cancelled, also after the demo ends. `end` receives the
/// demo's report as soon as it ends (it prints it and says whether the demo succeeded); its
/// result is returned once the console has stopped.
pub async fn run_with_console(
    args: crate::ops::console::ConsoleArgs,
    progress: &mut (dyn FnMut(&str) + Send),
    stop: tokio_util::sync::CancellationToken,
    end: impl FnOnce(DemoReport) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    use crate::ops::console;
    use anyhow::Context as _;
    let auth = console::auth_from_env()?;
    let listener = console::bind(args.addr, &auth).await?;
    let (tx, rx) = tokio::sync::oneshot::channel::<DemoDb>();
    let done = stop.clone();
    let server = tokio::spawn(async move {
        let Ok(db) = rx.await else { return (Ok(()), None) };
        let limits = Limits { daily_join_cap: 20, channel_limit: 500 };
        let c = console::Console { store: db.store, auth, limits, queues: None };
        // The directory is handed back, so it outlives the demo's last write.
        (console::serve(listener, c, done.cancelled_owned()).await, Some(db.dir))
    });
    let report = run_observed(progress, stop.clone(), Some(tx)).await;
    let result = report.map_err(anyhow::Error::from).and_then(end);
    if !stop.is_cancelled() {
        tracing::info!("the demo ended; the console stays up on its database until Ctrl-C");
        stop.cancelled().await;
    }
    let (served, dir) = server.await.context("the console task failed")?;
    drop(dir);
    served?;
    result
}

/// The demo's database, handed to an observer (`demo --console`) as soon as it is filled:
/// the store and the temporary directory holding it, which lives as long as the observer
/// keeps it.
pub struct DemoDb {
    pub store: Store,
    pub dir: tempfile::TempDir,
}

/// [`run_until`], handing the database to `observer` before the first join.
pub async fn run_observed(
    progress: &mut (dyn FnMut(&str) + Send),
    stop: tokio_util::sync::CancellationToken,
    observer: Option<tokio::sync::oneshot::Sender<DemoDb>>,
) -> Result<DemoReport, DemoError> {
    let started = Instant::now();
    let pacing = pacing();
    let resting_window = later_window(6);
    let (scenario, links) = scenario(&pacing, &resting_window);
    let server = Server::start(scenario, "127.0.0.1:0")
        .await
        .map_err(|e| DemoError::Tgsim(e.to_string()))?;
    progress(&format!("loopback Telegram DC (tgsim) listening on {}", server.addr()));

    let dir =
        tempfile::tempdir().map_err(|e| DemoError::Setup(format!("temporary directory: {e}")))?;
    let accounts_path = dir.path().join("accounts_config.json");
    let accounts_json = serde_json::to_string_pretty(&server.accounts_config_json())
        .map_err(|e| DemoError::Setup(e.to_string()))?;
    std::fs::write(&accounts_path, accounts_json)
        .map_err(|e| DemoError::Setup(format!("{}: {e}", accounts_path.display())))?;
    let accounts =
        AccountsConfig::load(&accounts_path).map_err(|e| DemoError::Setup(e.to_string()))?;
    let db_url = format!("sqlite://{}?mode=rwc", dir.path().join("smart_joiner.db").display());
    let store = Store::connect(&db_url).await?;
    store.migrate().await?;
    let names: Vec<String> = accounts.iter().map(|a| a.session_name.clone()).collect();
    store.sync_accounts(&names, "default").await?;
    let parsed: Vec<TargetLink> = links
        .iter()
        .map(|l| TargetLink::parse(l))
        .collect::<Result<_, _>>()
        .map_err(|e| DemoError::Setup(e.to_string()))?;
    store.import_targets(&parsed, NICHE).await?;
    let resting_hours = ActiveHours::parse(&format!("UTC {resting_window}"))
        .map_err(|e| DemoError::Setup(e.to_string()))?;
    if let Some(a) = store.account_by_name(RESTING).await? {
        store.set_active_hours(a.id, Some(&resting_hours), "demo", store.now()).await?;
    }
    progress(&format!("{RESTING} is active {resting_hours} only: it rests through this demo"));
    progress(&format!(
        "{} accounts, {} target groups, SQLite in a temporary directory; pacing {:?}-{:?} per account",
        names.len(),
        parsed.len(),
        pacing.join_pause_min,
        pacing.join_pause_max
    ));

    // Without an observer the directory (and the database in it) goes when the demo ends.
    let _dir = match observer {
        Some(observer) => {
            // An observer that went away simply does not see the demo.
            let _ = observer.send(DemoDb { store: store.clone(), dir });
            None
        }
        None => Some(dir),
    };

    let call_timeout = Duration::from_secs(5);
    let service = JoinService::new(JoinDeps {
        store: store.clone(),
        locks: Arc::new(LocalLocks::default()),
        telegram: Arc::new(GrammersTelegram::new(call_timeout)),
        accounts: Arc::new(accounts),
        pacing,
        limits: Limits { daily_join_cap: 20, channel_limit: 500 },
        call_timeout,
        worker_name: "demo".into(),
    });
    let folder_link = FolderLink::parse(FOLDER).ok_or_else(|| DemoError::Setup(FOLDER.into()))?;
    let expanded = service.import_folder("default", &folder_link, NICHE).await?;
    let folder = match &expanded.check {
        FolderCheck::Listed { account, contents } => format!(
            "folder {folder_link} ({:?}) checked by {account}: {} chats, {} imported as targets; without a username, not imported: {}",
            contents.title,
            contents.chats.len(),
            expanded.report.map_or(0, |r| r.inserted),
            expanded
                .without_username
                .iter()
                .map(|c| c.title.clone())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => format!("folder {folder_link} not expanded: {other:?}"),
    };
    progress(&folder);
    let batch = SmartJoiner::new(service, "default", Duration::from_secs(30))
        .with_stop(stop)
        .run_batch(NICHE, parsed.len() as u64 + 10)
        .await?;

    let accounts = store.accounts(None).await?;
    let by_id: BTreeMap<i64, String> =
        accounts.iter().map(|a| (a.id, a.session_name.clone())).collect();
    let targets = store.targets(Some(NICHE), None).await?;
    let report = DemoReport {
        elapsed: started.elapsed(),
        targets: targets
            .iter()
            .map(|t| {
                (
                    t.link.to_string(),
                    t.status,
                    t.assigned_account_id.and_then(|a| by_id.get(&a).cloned()),
                    t.error_code.clone(),
                )
            })
            .collect(),
        accounts: accounts
            .iter()
            .map(|a| {
                let bound = targets.iter().filter(|t| t.assigned_account_id == Some(a.id)).count();
                (a.session_name.clone(), a.status.to_string(), a.status_reason.clone(), bound)
            })
            .collect(),
        violations: server.violations().iter().map(|v| format!("{v:?}")).collect(),
        interrupted: batch.interrupted,
        folder,
        resting: (RESTING.to_owned(), resting_hours.to_string()),
    };
    server.shutdown().await;
    Ok(report)
}

impl DemoReport {
    /// The closing tables and what to do next.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "\nAccounts");
        let _ = writeln!(out, "  {:<10} {:<14} {:<24} groups", "account", "status", "reason");
        for (name, status, reason, bound) in &self.accounts {
            let _ = writeln!(
                out,
                "  {:<10} {:<14} {:<24} {:>6}",
                name,
                status,
                reason.as_deref().unwrap_or("-"),
                bound
            );
        }
        let _ = writeln!(out, "\nTargets");
        let _ = writeln!(out, "  {:<40} {:<10} {:<10} code", "group", "status", "account");
        for (link, status, account, code) in &self.targets {
            let _ = writeln!(
                out,
                "  {:<40} {:<10} {:<10} {}",
                link,
                status.to_string(),
                account.as_deref().unwrap_or("-"),
                code.as_deref().unwrap_or("")
            );
        }
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for (_, status, _, _) in &self.targets {
            *counts.entry(status.to_string()).or_default() += 1;
        }
        let summary: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
        let _ = writeln!(
            out,
            "\n{} groups in {:.1} s: {}",
            self.targets.len(),
            self.elapsed.as_secs_f64(),
            summary.join(", ")
        );
        let _ = writeln!(out, "{}", self.folder);
        let _ = writeln!(
            out,
            "{} rested outside its active hours ({}) and joined nothing",
            self.resting.0, self.resting.1
        );
        let _ = writeln!(
            out,
            "Telegram-side rule violations seen by the loopback DC: {}",
            self.violations.len()
        );
        for v in &self.violations {
            let _ = writeln!(out, "  {v}");
        }
        let _ = writeln!(
            out,
            "\nWith real accounts: put SmartJoiner's accounts_config.json here, then\n  \
             smart-joiner migrate up\n  smart-joiner accounts sync\n  \
             smart-joiner targets import groups.txt --niche ukraine_cars\n  \
             smart-joiner run ukraine_cars 5\n(see README.md; real pacing is 5-10 minutes per account per join).\n\
             `smart-joiner demo --console` shows the groups being joined in the operator console."
        );
        out
    }

    /// Targets still waiting (none, after a normal demo).
    pub fn unsettled(&self) -> usize {
        self.targets.iter().filter(|(_, s, _, _)| !s.is_terminal()).count()
    }
}
