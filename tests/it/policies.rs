//! Telegram's word about each account (Premium, channel limit, freeze) and `accounts check`'s
//! verdicts written back: the store on both backends, the check with the scripted fake, and
//! both over the wire against tgsim.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Duration as Span, Utc};
use smart_joiner::accounts_config::AccountsConfig;
use smart_joiner::domain::{
    AccountProfile, AccountStatus, ActiveHours, FolderLink, Freeze, JoinJobV1, Pacing, TargetLink,
};
use smart_joiner::folders::FolderCheck;
use smart_joiner::join::ExecutionOutcome;
use smart_joiner::lease::LocalLocks;
use smart_joiner::modes::batch::SmartJoiner;
use smart_joiner::ops::check::{CheckOptions, Verdict, check_accounts};
use smart_joiner::store::{Account, ActionResult, CheckRecord, CheckWritten, Limits, Store};
use smart_joiner::telegram::fake::{
    ConnectAnswer, EventKind, FakeProfile, Script, ScriptedTelegram,
};
use smart_joiner::telegram::grammers::GrammersTelegram;

use crate::harness::{JoinEnv, accounts_json};
use crate::on_both_backends;
use crate::store::{accounts, join, t0, targets};
use crate::support::sqlite_store;

on_both_backends!(
    each_account_is_held_to_its_own_channel_limit_under_the_operators,
    a_check_writes_only_under_its_own_hold_and_never_over_a_newer_verdict,
    accounts_check_writes_back_its_verdicts_and_says_what_changed,
);

fn limits(channel_limit: u32) -> Limits {
    Limits { daily_join_cap: 20, channel_limit }
}

fn profile(premium: bool, channel_limit: u32) -> AccountProfile {
    AccountProfile { premium, channel_limit: Some(channel_limit), freeze: None }
}

async fn eligible(store: &Store, limits: Limits) -> Vec<String> {
    let list = store.eligible_accounts("default", t0(), &[], &limits, 100).await.unwrap();
    let mut names: Vec<String> = list.into_iter().map(|a| a.session_name).collect();
    names.sort();
    names
}

async fn each_account_is_held_to_its_own_channel_limit_under_the_operators(store: Store) {
    let a = accounts(&store, &["free", "premium", "unread"], "default").await;
    let t = targets(
        &store,
        &["@limit_g1", "@limit_g2", "@limit_g3", "@limit_g4", "@limit_g5", "@limit_g6"],
    )
    .await;
    // Telegram gave `free` 2 channels and `premium` 4; `unread` was never read (500 assumed).
    store.record_profile(a[0].id, &profile(false, 2), t0()).await.unwrap();
    store.record_profile(a[1].id, &profile(true, 4), t0()).await.unwrap();
    for (i, account) in a.iter().enumerate() {
        for target in &t[2 * i..2 * i + 2] {
            join(&store, account.id, target.id, t0() - Span::days(3)).await;
        }
    }
    // Two bound each: `free` is at Telegram's limit whatever the operator allows.
    assert_eq!(eligible(&store, limits(1000)).await, ["premium", "unread"]);
    assert_eq!(eligible(&store, limits(3)).await, ["premium", "unread"]);
    // The operator's limit caps everyone, Premium included.
    assert!(eligible(&store, limits(2)).await.is_empty());
    // The wait for an account knows it too: `free` never frees up.
    let rest = Duration::from_secs(30);
    let others = [a[1].id, a[2].id];
    let roomy = limits(1000);
    let earliest = store.earliest_eligible_at("default", t0(), &others, &roomy, rest).await;
    assert_eq!(earliest.unwrap(), None);

    let row = store.account(a[1].id).await.unwrap().unwrap();
    assert_eq!((row.premium, row.channel_limit), (Some(true), Some(4)));
    assert_eq!(row.profile_read_at, Some(t0()));
    let row = store.account(a[2].id).await.unwrap().unwrap();
    assert_eq!((row.premium, row.channel_limit, row.profile_read_at), (None, None, None));
}

async fn row(store: &Store, id: i64) -> Account {
    store.account(id).await.unwrap().unwrap()
}

async fn a_check_writes_only_under_its_own_hold_and_never_over_a_newer_verdict(store: Store) {
    let id = accounts(&store, &["checked"], "default").await[0].id;
    let now = t0();
    let epoch = store.take_hold(id, now, now + Span::seconds(60)).await.unwrap().unwrap();
    let until = now + Span::days(7);
    let frozen = AccountProfile {
        premium: true,
        channel_limit: Some(1000),
        freeze: Some(Freeze {
            since: Some(now - Span::days(1)),
            until: Some(until),
            appeal_url: Some("https://t.me/spambot".into()),
        }),
    };
    let record = CheckRecord {
        result: "authorised",
        profile: Some(&frozen),
        status: Some((
            AccountStatus::Active,
            AccountStatus::Frozen,
            Some("FROZEN until 2026-01-19 10:00 UTC".into()),
        )),
    };
    // A stale join recorded a ban meanwhile: the check's verdict does not replace it.
    store
        .set_account_status(id, AccountStatus::Banned, Some("USER_DEACTIVATED_BAN"), None)
        .await
        .unwrap();
    let written = store.record_check(id, epoch, now, &record).await.unwrap();
    assert_eq!(written, CheckWritten::Written { status_changed: false });
    let r = row(&store, id).await;
    assert_eq!(r.status, AccountStatus::Banned);
    assert_eq!((r.premium, r.channel_limit), (Some(true), Some(1000)));
    assert_eq!((r.frozen_since, r.frozen_until), (Some(now - Span::days(1)), Some(until)));
    assert_eq!(r.freeze_appeal_url.as_deref(), Some("https://t.me/spambot"));
    assert_eq!((r.checked_at, r.check_result.as_deref()), (Some(now), Some("authorised")));

    // Under the status it saw, the status is written.
    store.set_account_status(id, AccountStatus::Active, None, None).await.unwrap();
    let written = store.record_check(id, epoch, now, &record).await.unwrap();
    assert_eq!(written, CheckWritten::Written { status_changed: true });
    let r = row(&store, id).await;
    assert_eq!(r.status, AccountStatus::Frozen);
    assert!(r.status_reason.unwrap().starts_with("FROZEN until"));

    // Once another process took the account, the check writes nothing.
    store.release_hold(id, epoch).await.unwrap();
    let later = now + Span::seconds(1);
    store.take_hold(id, later, later + Span::seconds(60)).await.unwrap().unwrap();
    let unreachable = CheckRecord { result: "failed", profile: None, status: None };
    let written = store.record_check(id, epoch, later, &unreachable).await.unwrap();
    assert_eq!(written, CheckWritten::HoldLost);
    assert_eq!(row(&store, id).await.check_result.as_deref(), Some("authorised"));
}

async fn accounts_check_writes_back_its_verdicts_and_says_what_changed(store: Store) {
    let names: Vec<String> = ["fine", "premium", "frozen", "revoked", "was_revoked", "unreachable"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    store.sync_accounts(&names, "default").await.unwrap();
    let config = AccountsConfig::parse(&accounts_json(&names)).unwrap();
    let all = store.accounts(None).await.unwrap();
    let id = |n: &str| all.iter().find(|a| a.session_name == n).unwrap().id;
    store
        .set_account_status(
            id("was_revoked"),
            AccountStatus::Unauthorized,
            Some("SESSION_REVOKED"),
            None,
        )
        .await
        .unwrap();
    let frozen_until: DateTime<Utc> =
        DateTime::from_timestamp(Utc::now().timestamp() + 7 * 86_400, 0).unwrap();
    let mut script = Script::default();
    script.connect.insert("revoked".into(), ConnectAnswer::Unauthorized);
    script.connect.insert("unreachable".into(), ConnectAnswer::Failed);
    script.profiles.insert(
        "premium".into(),
        FakeProfile { premium: true, channel_limit: Some(1000), frozen_until: None },
    );
    script.profiles.insert(
        "frozen".into(),
        FakeProfile { premium: false, channel_limit: Some(500), frozen_until: Some(frozen_until) },
    );
    let telegram = ScriptedTelegram::new(script);
    let locks = LocalLocks::default();
    let opts =
        CheckOptions { call_timeout: Duration::from_secs(5), accounts: Vec::new(), pool: None };

    let results = check_accounts(&store, &config, &telegram, &locks, &opts).await.unwrap();
    let changes: HashMap<&str, Vec<String>> =
        results.iter().map(|r| (r.session_name.as_str(), r.changes.clone())).collect();
    let free = ["premium no", "channel limit unknown -> 500"];
    assert_eq!(changes["fine"], free);
    assert_eq!(changes["premium"], ["premium yes", "channel limit unknown -> 1000"]);
    let until_text = frozen_until.format("%Y-%m-%d %H:%M UTC").to_string();
    assert_eq!(
        changes["frozen"],
        [
            "status active -> frozen".to_owned(),
            free[0].to_owned(),
            free[1].to_owned(),
            format!("frozen until {until_text}")
        ]
    );
    assert_eq!(changes["revoked"], ["status active -> unauthorized"]);
    assert_eq!(changes["was_revoked"], ["status unauthorized -> active", free[0], free[1]]);
    assert!(changes["unreachable"].is_empty(), "{results:?}");
    assert!(matches!(
        results.iter().find(|r| r.session_name == "unreachable").unwrap().verdict,
        Verdict::Failed(_)
    ));

    let rows: HashMap<String, Account> = store
        .accounts(None)
        .await
        .unwrap()
        .into_iter()
        .map(|a| (a.session_name.clone(), a))
        .collect();
    let frozen = &rows["frozen"];
    assert_eq!(frozen.status, AccountStatus::Frozen);
    assert_eq!(
        frozen.status_reason.as_deref(),
        Some(format!("FROZEN until {until_text}").as_str())
    );
    assert_eq!(frozen.frozen_until, Some(frozen_until));
    assert_eq!(rows["premium"].channel_limit, Some(1000));
    assert_eq!(rows["revoked"].status_reason.as_deref(), Some("AUTH_KEY_UNREGISTERED"));
    for (name, result) in [
        ("fine", "authorised"),
        ("frozen", "authorised"),
        ("revoked", "unauthorized"),
        ("unreachable", "failed"),
    ] {
        assert_eq!(rows[name].check_result.as_deref(), Some(result), "{name}");
        assert!(rows[name].checked_at.is_some(), "{name}");
    }
    // Every hold the check took is over.
    assert!(rows.values().all(|a| a.held_until.is_none()), "{rows:?}");

    // Checked again, nothing changes; and nothing was ever joined.
    let again = check_accounts(&store, &config, &telegram, &locks, &opts).await.unwrap();
    assert!(again.iter().all(|r| r.changes.is_empty()), "{again:?}");
    assert!(!telegram.events().iter().any(|e| matches!(e.kind, EventKind::Join { .. })));
}

// ---------------------------------------------------------------------------------------------
// over the wire

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn over_the_wire_a_check_and_a_join_read_premium_limits_and_freezes_from_the_app_config() {
    let since = Utc::now().timestamp() - 86_400;
    let until = Utc::now().timestamp() + 30 * 86_400;
    let scenario = tgsim::Scenario::new()
        .account(tgsim::Account::new("plain", 3001))
        .account(tgsim::Account::new("gold", 3002).premium())
        .account(tgsim::Account::new("icy", 3003).frozen(since, until, "https://t.me/spambot"))
        .account(tgsim::Account::new("gone", 3004).unauthorized())
        .account(tgsim::Account::new("silver", 3005).premium())
        .group(tgsim::Group::new(7001, "Policy group").username("wire_policy_group"));
    let server = tgsim::Server::start(scenario, "127.0.0.1:0").await.unwrap();
    let config = AccountsConfig::parse(&server.accounts_config_json().to_string()).unwrap();
    let (store, _dir) = sqlite_store().await;
    let checked: Vec<String> = ["plain", "gold", "icy", "gone"].map(str::to_owned).to_vec();
    store.sync_accounts(&checked, "default").await.unwrap();
    store.sync_accounts(&["silver".to_owned()], "joiners").await.unwrap();

    let telegram = Arc::new(GrammersTelegram::new(Duration::from_secs(5)));
    let locks = LocalLocks::default();
    let opts = CheckOptions {
        call_timeout: Duration::from_secs(5),
        accounts: Vec::new(),
        pool: Some("default".into()),
    };
    let results = check_accounts(&store, &config, telegram.as_ref(), &locks, &opts).await.unwrap();
    let rows: HashMap<String, Account> = store
        .accounts(None)
        .await
        .unwrap()
        .into_iter()
        .map(|a| (a.session_name.clone(), a))
        .collect();
    assert_eq!(
        (rows["plain"].premium, rows["plain"].channel_limit),
        (Some(false), Some(500)),
        "{results:?}"
    );
    assert_eq!((rows["gold"].premium, rows["gold"].channel_limit), (Some(true), Some(1000)));
    let icy = &rows["icy"];
    assert_eq!(icy.status, AccountStatus::Frozen, "{results:?}");
    assert_eq!(icy.frozen_since, DateTime::from_timestamp(since, 0));
    assert_eq!(icy.frozen_until, DateTime::from_timestamp(until, 0));
    assert_eq!(icy.freeze_appeal_url.as_deref(), Some("https://t.me/spambot"));
    assert_eq!(rows["gone"].status, AccountStatus::Unauthorized);
    // Read-only towards Telegram: the authorisation check and the app config, nothing else.
    for name in ["plain", "gold", "icy"] {
        let methods: Vec<String> = server.requests_of(name).into_iter().map(|r| r.method).collect();
        assert!(methods.iter().any(|m| m == "help.getAppConfig"), "{name}: {methods:?}");
        assert!(
            methods.iter().all(|m| matches!(
                m.as_str(),
                "help.getConfig" | "users.getUsers" | "help.getAppConfig"
            )),
            "{name}: {methods:?}"
        );
    }

    // A join's connect reads the profile of an account never read, before the join.
    let link = TargetLink::parse("@wire_policy_group").unwrap();
    store.import_targets(std::slice::from_ref(&link), "policies").await.unwrap();
    let pacing = Pacing {
        join_pause_min: Duration::from_millis(100),
        join_pause_max: Duration::from_millis(200),
        error_pause: Duration::from_millis(50),
        ..Pacing::default()
    };
    let svc = JoinEnv::new(&store, telegram, config).pacing(pacing).limits(limits(1000)).service();
    SmartJoiner::new(svc, "joiners", Duration::from_secs(30))
        .run_batch("policies", 1)
        .await
        .unwrap();
    let silver = store.accounts(Some("joiners")).await.unwrap().remove(0);
    assert_eq!((silver.premium, silver.channel_limit), (Some(true), Some(1000)));
    let methods: Vec<String> = server.requests_of("silver").into_iter().map(|r| r.method).collect();
    let config_at = methods.iter().position(|m| m == "help.getAppConfig").expect("app config read");
    let join_at = methods.iter().position(|m| m == "channels.joinChannel").expect("joined");
    assert!(config_at < join_at, "{methods:?}");
    assert_eq!(server.members("@wire_policy_group"), ["silver"]);
    assert!(server.violations().is_empty(), "{:?}", server.violations());
    server.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// active hours

on_both_backends!(
    an_account_outside_its_hours_is_never_picked_and_the_target_waits_for_the_next_window,
    the_invariant_checker_reports_an_attempt_outside_the_accounts_hours,
    an_operator_sets_and_clears_an_accounts_hours_with_an_audit_row,
    the_exporters_workable_count_leaves_out_accounts_outside_their_hours,
);

/// `UTC HH:MM-HH:MM` from `from` to `to` hours after now (whole minutes).
fn utc_window(from: i64, to: i64) -> String {
    let at = |h: i64| (Utc::now() + Span::hours(h)).format("%H:%M").to_string();
    format!("{}-{}", at(from), at(to))
}

fn hours(text: &str) -> ActiveHours {
    ActiveHours::parse(text).unwrap()
}

async fn an_account_outside_its_hours_is_never_picked_and_the_target_waits_for_the_next_window(
    store: Store,
) {
    let names: Vec<String> = vec!["night".into(), "pooled".into()];
    store.sync_accounts(&names[..1], "own").await.unwrap();
    store.sync_accounts(&names[1..], "pooled").await.unwrap();
    let config = AccountsConfig::parse(&accounts_json(&names)).unwrap();
    let closed = hours(&format!("UTC {}", utc_window(3, 4)));
    let night = store.account_by_name("night").await.unwrap().unwrap();
    let r = store.set_active_hours(night.id, Some(&closed), "test", Utc::now()).await.unwrap();
    assert_eq!(r, ActionResult::Done);
    let links: Vec<TargetLink> =
        ["@hours_own_1", "@hours_pool_1"].map(|l| TargetLink::parse(l).unwrap()).to_vec();
    store.import_targets(&links[..1], "own").await.unwrap();
    store.import_targets(&links[1..], "pooled").await.unwrap();
    let telegram = Arc::new(ScriptedTelegram::new(Script::default()));
    let svc = JoinEnv::new(&store, telegram.clone(), config)
        .pacing(crate::harness::fast_pacing())
        .limits(limits(1000))
        .service()
        // The pool's hours, for `pooled`, which has none of its own.
        .with_active_hours(Some(closed.clone()));
    for (pool, niche, account) in [("own", "own", &night), ("pooled", "pooled", &night)] {
        let queued = store.queue_new_targets(niche, 10, Utc::now()).await.unwrap();
        assert_eq!(queued.len(), 1);
        let before = Utc::now();
        let job = JoinJobV1 {
            target_id: queued[0].id,
            pool: pool.into(),
            excluded_accounts: Vec::new(),
            generation: 0,
            wait_for: None,
        };
        match svc.execute(&job).await.unwrap() {
            ExecutionOutcome::Reschedule { run_at, .. } => {
                // Not given back, not run now: at the window's opening (no stagger: the same
                // instant for every account).
                assert_eq!(run_at, closed.next_open(account.id, before), "{pool}");
                assert!(run_at > before + Span::hours(2), "{pool}: {run_at}");
            }
            other => panic!("{pool}: {other:?}"),
        }
    }
    assert!(telegram.events().is_empty(), "nobody connected: {:?}", telegram.events());

    // Inside its hours the same account is picked at once.
    let open = hours(&format!("UTC {}", utc_window(-1, 1)));
    store.set_active_hours(night.id, Some(&open), "test", Utc::now()).await.unwrap();
    let target = store.targets(Some("own"), None).await.unwrap().remove(0);
    let job = JoinJobV1 {
        target_id: target.id,
        pool: "own".into(),
        excluded_accounts: Vec::new(),
        generation: 0,
        wait_for: None,
    };
    let done = svc.execute(&job).await.unwrap();
    assert!(matches!(done, ExecutionOutcome::Done(_)), "{done:?}");
    assert_eq!(telegram.members("@hours_own_1").len(), 1);
}

async fn the_invariant_checker_reports_an_attempt_outside_the_accounts_hours(store: Store) {
    let a = accounts(&store, &["inside", "outside", "pooled"], "default").await;
    let t = targets(&store, &["@hours_inv_1", "@hours_inv_2", "@hours_inv_3"]).await;
    // t0 is 10:00 UTC; the attempts start two seconds before.
    store.set_active_hours(a[0].id, Some(&hours("UTC 09:00-11:00")), "test", t0()).await.unwrap();
    store.set_active_hours(a[1].id, Some(&hours("UTC 12:00-13:00")), "test", t0()).await.unwrap();
    for i in 0..3 {
        join(&store, a[i].id, t[i].id, t0()).await;
    }
    let report =
        smart_joiner::ops::invariants::check(&store, Duration::ZERO, &limits(1000)).await.unwrap();
    assert_eq!(report.hours.len(), 1, "{:?}", report.hours);
    assert!(report.hours[0].starts_with(&format!("account {} ", a[1].id)), "{:?}", report.hours);
    // The pool's hours apply to the account without its own.
    let pool_hours = HashMap::from([("default".to_owned(), hours("UTC 20:00-21:00"))]);
    let report = smart_joiner::ops::invariants::check_with_hours(
        &store,
        Duration::ZERO,
        &limits(1000),
        &pool_hours,
    )
    .await
    .unwrap();
    assert_eq!(report.hours.len(), 2, "{:?}", report.hours);
}

/// What autoscaling reads: an account outside its hours (its own, else the pool's given to the
/// exporter; unreadable own hours give way to the pool's) is not workable, as it is not picked.
async fn the_exporters_workable_count_leaves_out_accounts_outside_their_hours(store: Store) {
    use sea_orm::sea_query::Expr;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    use smart_joiner::store::entity::accounts as rows;
    let a = accounts(&store, &["open", "closed", "pooled", "unreadable"], "default").await;
    // t0 is 10:00 UTC.
    store.set_active_hours(a[0].id, Some(&hours("UTC 09:00-11:00")), "test", t0()).await.unwrap();
    store.set_active_hours(a[1].id, Some(&hours("UTC 12:00-13:00")), "test", t0()).await.unwrap();
    rows::Entity::update_many()
        .col_expr(rows::Column::ActiveHours, Expr::val("Mars/Base 09:00-11:00"))
        .filter(rows::Column::Id.eq(a[3].id))
        .exec(store.connection())
        .await
        .unwrap();
    let count = |pool_hours: Option<&'static str>| {
        let store = store.clone();
        async move {
            let pool_hours = pool_hours.map(hours);
            let limits = limits(1000);
            let got = store.pool_accounts("default", t0(), &limits, pool_hours.as_ref());
            let mut closed =
                store.closed_accounts("default", t0(), pool_hours.as_ref()).await.unwrap();
            closed.sort();
            (got.await.unwrap().workable, closed)
        }
    };
    // No pool hours: only the account with its own closed window is left out.
    assert_eq!(count(None).await, (3, vec![a[1].id]));
    // The pool's hours closed: they apply to the account without its own and to the one whose
    // own do not read; the account open by its own hours stays workable.
    assert_eq!(count(Some("UTC 20:00-21:00")).await, (1, vec![a[1].id, a[2].id, a[3].id]));
    assert_eq!(count(Some("UTC 09:30-10:30")).await, (3, vec![a[1].id]));
    // The same accounts the pick leaves out: it takes exactly the workable ones.
    let pool_hours = hours("UTC 20:00-21:00");
    let closed = store.closed_accounts("default", t0(), Some(&pool_hours)).await.unwrap();
    let picked =
        store.eligible_accounts("default", t0(), &closed, &limits(1000), 100).await.unwrap();
    assert_eq!(picked.iter().map(|p| p.id).collect::<Vec<_>>(), vec![a[0].id]);
}

async fn an_operator_sets_and_clears_an_accounts_hours_with_an_audit_row(store: Store) {
    let a = accounts(&store, &["worker"], "default").await;
    let kyiv = hours("Europe/Kyiv 9:00-13:00 14:00-22:00 +30m");
    let r = store.set_active_hours(a[0].id, Some(&kyiv), "cli:op", t0()).await.unwrap();
    assert_eq!(r, ActionResult::Done);
    let stored = row(&store, a[0].id).await.active_hours;
    assert_eq!(stored.as_deref(), Some("Europe/Kyiv 09:00-13:00,14:00-22:00 +30m"));
    store.set_active_hours(a[0].id, None, "cli:op", t0()).await.unwrap();
    assert_eq!(row(&store, a[0].id).await.active_hours, None);
    let refused = store.set_active_hours(a[0].id + 100, None, "cli:op", t0()).await.unwrap();
    assert!(matches!(refused, ActionResult::Refused(_)));
    let log = store.audit_log(Some(&format!("account:{}", a[0].id)), 10).await.unwrap();
    let details: Vec<Option<String>> = log.iter().map(|e| e.detail.clone()).collect();
    assert_eq!(
        details,
        [
            Some("the pool's".to_owned()),
            Some("Europe/Kyiv 09:00-13:00,14:00-22:00 +30m".to_owned())
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn over_the_wire_an_account_rests_outside_its_window_and_tgsim_reports_one_that_does_not() {
    let now_open = utc_window(-1, 1);
    let now_closed = utc_window(3, 4);
    let scenario = tgsim::Scenario::new()
        .account(tgsim::Account::new("early", 4001).active_hours_utc(&[now_open.as_str()]))
        .account(tgsim::Account::new("late", 4002).active_hours_utc(&[now_closed.as_str()]))
        .account(tgsim::Account::new("rogue", 4003).active_hours_utc(&[now_closed.as_str()]))
        .group(tgsim::Group::new(7101, "Hours one").username("wire_hours_one"))
        .group(tgsim::Group::new(7102, "Hours two").username("wire_hours_two"));
    let server = tgsim::Server::start(scenario, "127.0.0.1:0").await.unwrap();
    let config = AccountsConfig::parse(&server.accounts_config_json().to_string()).unwrap();
    let (store, _dir) = sqlite_store().await;
    store.sync_accounts(&["early".to_owned(), "late".to_owned()], "hours").await.unwrap();
    store.sync_accounts(&["rogue".to_owned()], "rogue").await.unwrap();
    let late = store.account_by_name("late").await.unwrap().unwrap();
    let late_hours = hours(&format!("UTC {now_closed}"));
    store.set_active_hours(late.id, Some(&late_hours), "test", Utc::now()).await.unwrap();
    let early_hours = hours(&format!("UTC {now_open}"));
    let links = ["@wire_hours_one", "@wire_hours_two"].map(|l| TargetLink::parse(l).unwrap());
    store.import_targets(&links[..1], "hours").await.unwrap();
    store.import_targets(&links[1..], "rogue").await.unwrap();
    let pacing = Pacing {
        join_pause_min: Duration::from_millis(100),
        join_pause_max: Duration::from_millis(200),
        error_pause: Duration::from_millis(50),
        ..Pacing::default()
    };
    let svc = JoinEnv::new(&store, Arc::new(GrammersTelegram::new(Duration::from_secs(5))), config)
        .pacing(pacing)
        .limits(limits(1000))
        .service();
    // The pool's hours for `early`; `late` has its own, closed now.
    let hours_pool = svc.clone().with_active_hours(Some(early_hours));
    SmartJoiner::new(hours_pool, "hours", Duration::from_secs(30))
        .run_batch("hours", 1)
        .await
        .unwrap();
    assert_eq!(server.members("@wire_hours_one"), ["early"]);
    assert!(server.requests_of("late").is_empty(), "{:?}", server.requests_of("late"));
    assert!(server.violations().is_empty(), "{:?}", server.violations());

    // An account that tgsim expects to rest, run without hours: tgsim reports the join.
    SmartJoiner::new(svc, "rogue", Duration::from_secs(30)).run_batch("rogue", 1).await.unwrap();
    assert_eq!(server.members("@wire_hours_two"), ["rogue"]);
    let violations = server.violations();
    assert!(
        matches!(violations.as_slice(), [tgsim::Violation::JoinOutsideActiveHours { account, .. }] if account == "rogue"),
        "{violations:?}"
    );
    server.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// folder links

on_both_backends!(a_folder_link_expands_into_one_target_per_public_chat_recorded_with_its_folder);

async fn a_folder_link_expands_into_one_target_per_public_chat_recorded_with_its_folder(
    store: Store,
) {
    let names: Vec<String> = vec!["reader_a".into(), "reader_b".into()];
    store.sync_accounts(&names, "default").await.unwrap();
    let config = AccountsConfig::parse(&accounts_json(&names)).unwrap();
    let mut script = Script::default();
    script.folders.insert(
        "CarsFolder1".into(),
        vec!["@folder_pub_one".into(), "@folder_pub_two".into(), "Private club".into()],
    );
    let telegram = Arc::new(ScriptedTelegram::new(script));
    let mut pacing = crate::harness::fast_pacing();
    pacing.error_pause = Duration::from_secs(60);
    let svc = JoinEnv::new(&store, telegram.clone(), config)
        .pacing(pacing)
        .limits(limits(1000))
        .service();
    let folder = FolderLink::parse("https://t.me/addlist/CarsFolder1").unwrap();
    let before = Utc::now();
    let first = svc.import_folder("default", &folder, "cars").await.unwrap();
    let FolderCheck::Listed { account, contents } = &first.check else { panic!("{first:?}") };
    assert_eq!(contents.chats.len(), 3);
    assert_eq!(first.report.unwrap().inserted, 2);
    let skipped: Vec<&str> = first.without_username.iter().map(|c| c.title.as_str()).collect();
    assert_eq!(skipped, ["Private club"]);
    let targets = store.targets(Some("cars"), None).await.unwrap();
    let mut got: Vec<(String, Option<String>)> =
        targets.iter().map(|t| (t.link.to_string(), t.folder.clone())).collect();
    got.sort();
    let tag = Some("t.me/addlist/CarsFolder1".to_owned());
    assert_eq!(got, [("@folder_pub_one".into(), tag.clone()), ("@folder_pub_two".into(), tag)]);
    // Paced like any request: the account rests for the error pause, its hold is over.
    let reader = store.account_by_name(account.as_str()).await.unwrap().unwrap();
    assert!(reader.next_allowed_action_time.unwrap() >= before + Span::seconds(59), "{reader:?}");
    assert_eq!(reader.held_until, None);

    // The other account checks the next folder; a dead slug is Telegram's answer.
    let dead = FolderLink::parse("t.me/addlist/GoneFolder").unwrap();
    let second = svc.import_folder("default", &dead, "cars").await.unwrap();
    match &second.check {
        FolderCheck::Failed { account: other, outcome } => {
            assert_ne!(other, account);
            assert!(outcome.to_string().contains("INVITE_SLUG_EXPIRED"), "{outcome}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(second.report, None);
    // Both rest now: nobody sends a third request, and the report says when one may.
    let third = svc.import_folder("default", &folder, "cars").await.unwrap();
    match third.check {
        FolderCheck::NoAccount { next: Some(next) } => {
            assert!(next > Utc::now() + Span::seconds(50))
        }
        other => panic!("{other:?}"),
    }
    // Two connections, no join, and never a bulk join.
    let events = telegram.events();
    assert_eq!(events.iter().filter(|e| matches!(e.kind, EventKind::Connect)).count(), 2);
    assert!(!events.iter().any(|e| matches!(e.kind, EventKind::Join { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn over_the_wire_a_folder_is_checked_once_and_its_public_chats_are_joined_one_by_one() {
    let scenario = tgsim::Scenario::new()
        .account(tgsim::Account::new("folder_reader", 5001))
        .account(tgsim::Account::new("folder_joiner", 5002))
        .group(tgsim::Group::new(7201, "Folder one").username("wire_folder_one"))
        .group(tgsim::Group::new(7202, "Folder two").username("wire_folder_two"))
        .group(tgsim::Group::new(7203, "Folder private").invite("WireFolderPriv"))
        .folder("WireFolder", "Cars of Kyiv", &[7201, 7202, 7203]);
    let server = tgsim::Server::start(scenario, "127.0.0.1:0").await.unwrap();
    let config = AccountsConfig::parse(&server.accounts_config_json().to_string()).unwrap();
    let (store, _dir) = sqlite_store().await;
    store
        .sync_accounts(&["folder_reader".to_owned(), "folder_joiner".to_owned()], "default")
        .await
        .unwrap();
    let pacing = Pacing {
        join_pause_min: Duration::from_millis(100),
        join_pause_max: Duration::from_millis(200),
        error_pause: Duration::from_millis(50),
        ..Pacing::default()
    };
    let svc = JoinEnv::new(&store, Arc::new(GrammersTelegram::new(Duration::from_secs(5))), config)
        .pacing(pacing)
        .limits(limits(1000))
        .service();
    let folder = FolderLink::parse("t.me/addlist/WireFolder").unwrap();
    let imported = svc.import_folder("default", &folder, "folder").await.unwrap();
    let FolderCheck::Listed { contents, .. } = &imported.check else { panic!("{imported:?}") };
    assert_eq!(contents.title, "Cars of Kyiv");
    assert_eq!(imported.report.unwrap().inserted, 2);
    assert_eq!(imported.without_username.iter().map(|c| c.id).collect::<Vec<_>>(), [7203]);
    let dead = FolderLink::parse("t.me/addlist/NoSuchFolder").unwrap();
    let failed = svc.import_folder("default", &dead, "folder").await.unwrap();
    assert!(
        matches!(&failed.check, FolderCheck::Failed { outcome, .. } if outcome.to_string().contains("INVITE_SLUG_EXPIRED")),
        "{failed:?}"
    );

    SmartJoiner::new(svc, "default", Duration::from_secs(30)).run_batch("folder", 2).await.unwrap();
    let mut members = server.members("@wire_folder_one");
    members.extend(server.members("@wire_folder_two"));
    assert_eq!(members.len(), 2, "{members:?}");
    let methods: Vec<String> = server.requests().into_iter().map(|r| r.method).collect();
    assert_eq!(methods.iter().filter(|m| *m == "chatlists.checkChatlistInvite").count(), 2);
    assert!(!methods.iter().any(|m| m == "chatlists.joinChatlistInvite"), "{methods:?}");
    assert!(server.members("+WireFolderPriv").is_empty());
    assert!(server.violations().is_empty(), "{:?}", server.violations());
    server.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// the command line

/// Runs the binary in `dir` (its SQLite database, accounts file and fake script), with
/// `ACTIVE_HOURS` set when given.
fn cli(dir: &std::path::Path, args: &[&str], hours: Option<&str>) -> (bool, String, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_smart-joiner"));
    cmd.args(args)
        .current_dir(dir)
        .env("DATABASE_URL", format!("sqlite://{}?mode=rwc", dir.join("t.db").display()))
        .env("ACCOUNTS_CONFIG", dir.join("accounts_config.json"))
        .env("SMART_JOINER_FAKE_TELEGRAM", dir.join("fake.json"))
        .env_remove("ACTIVE_HOURS");
    if let Some(hours) = hours {
        cmd.env("ACTIVE_HOURS", hours);
    }
    let out = cmd.output().expect("run smart-joiner");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn on_the_command_line_folders_expand_on_import_and_hours_are_set_and_refused_when_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<String> = vec!["acc_a".into(), "acc_b".into()];
    std::fs::write(dir.path().join("accounts_config.json"), accounts_json(&names)).unwrap();
    let script =
        serde_json::json!({ "folders": { "WestCars": ["@west_cars_one", "Secret garage"] } });
    std::fs::write(dir.path().join("fake.json"), script.to_string()).unwrap();
    std::fs::write(
        dir.path().join("groups.txt"),
        "@plain_group\nhttps://t.me/addlist/WestCars\nt.me/addlist/Nope42\n",
    )
    .unwrap();
    let run = |args: &[&str]| cli(dir.path(), args, None);
    assert!(run(&["migrate", "up"]).0);
    assert!(run(&["accounts", "sync"]).0);

    let (ok, stdout, stderr) =
        run(&["targets", "import", "groups.txt", "--niche", "cars", "--leases", "local"]);
    // The dead folder fails the command, after the rest was imported and reported.
    assert!(!ok, "{stdout}{stderr}");
    assert!(stdout.contains("accepted 1,"), "{stdout}");
    assert!(stdout.contains("folder t.me/addlist/WestCars (checked by acc_"), "{stdout}");
    assert!(stdout.contains("accepted 1, duplicates 0; without a username"), "{stdout}");
    assert!(stdout.contains("\"Secret garage\""), "{stdout}");
    assert!(stdout.contains("t.me/addlist/Nope42 (checked by acc_"), "{stdout}");
    assert!(stdout.contains("Telegram answered INVITE_SLUG_EXPIRED"), "{stdout}");
    assert!(stderr.contains("1 folder link(s) not expanded"), "{stderr}");
    let (ok, stdout, _) = run(&["targets", "list", "--json"]);
    assert!(ok);
    assert!(stdout.contains("@west_cars_one") && stdout.contains("@plain_group"), "{stdout}");

    let (ok, stdout, stderr) = run(&["accounts", "hours", "acc_a", "Europe/Kyiv 9:00-22:00 +20m"]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout.trim(), "acc_a is active Europe/Kyiv 09:00-22:00 +20m");
    let (ok, _, stderr) = run(&["accounts", "hours", "acc_a", "Mars/Base 09:00-22:00"]);
    assert!(!ok && stderr.contains("unknown time zone \"Mars/Base\""), "{stderr}");
    let (ok, stdout, _) = run(&["accounts", "list", "--json"]);
    assert!(
        ok && stdout.contains("\"active_hours\": \"Europe/Kyiv 09:00-22:00 +20m\""),
        "{stdout}"
    );
    let (ok, stdout, _) = run(&["accounts", "hours", "acc_a", "--clear"]);
    assert!(ok && stdout.contains("follows the pool's active hours"), "{stdout}");
    let (ok, _, stderr) = cli(dir.path(), &["status"], Some("UTC 9-10"));
    assert!(
        !ok && stderr.contains("ACTIVE_HOURS (--active-hours): \"9-10\" is not a window"),
        "{stderr}"
    );
}
