//! The store on both backends: every test is one async fn taking a fresh, migrated Store.

use std::collections::HashSet;

use chrono::{DateTime, Duration, TimeZone, Utc};
use migration::{Migrator, MigratorTrait};
use sea_orm::ConnectionTrait;
use smart_joiner::domain::{
    AccountChange, AccountStatus, Decision, JoinOutcome, Next, OutcomeKind, PeerInfo, RequestKind,
    TargetChange, TargetLink, TargetStatus,
};
use smart_joiner::store::{
    Account, Applied, Attempt, AttemptRow, Limits, NO_AVAILABLE_ACCOUNTS, Store, StoreError, Take,
    Target,
};

use crate::on_both_backends;

on_both_backends!(
    migrations_go_up_down_and_up_again,
    sync_accounts_adds_moves_and_reports_missing_names,
    sync_without_move_leaves_other_pools_alone_and_repairs_local_config_marks,
    take_hold_keeps_every_other_process_out_until_released,
    the_gate_before_a_join_opens_only_for_a_live_hold_of_the_epoch,
    import_counts_duplicates_in_the_database_and_in_the_input,
    queue_new_targets_takes_the_oldest_new_targets_of_the_niche,
    target_statuses_reads_every_listed_target_across_pages,
    concurrent_producers_never_take_the_same_target,
    eligible_accounts_apply_every_rule,
    eligible_accounts_are_ordered_least_recently_active_first,
    earliest_eligible_at_is_the_first_moment_an_account_frees_up,
    claim_target_needs_a_current_epoch_and_a_free_or_own_target,
    bump_lease_epoch_counts_up_and_rejects_unknown_accounts,
    joined_binds_the_target_and_paces_the_account,
    requested_binds_the_target,
    flood_wait_requeues_the_target_and_rests_the_account,
    target_failure_is_terminal_with_its_code,
    in_doubt_keeps_the_claim_and_counts_the_try,
    a_pinned_target_due_keeps_free_jobs_off_its_account,
    a_sync_that_adds_accounts_refreshes_the_planners_statistics,
    disabled_account_gives_up_the_target,
    stale_epoch_writes_nothing,
    stale_claim_writes_nothing,
    a_stale_attempt_still_records_telegrams_verdict_about_the_account,
    a_stale_verdict_only_lengthens_a_rest_and_only_worsens_a_status,
    binding_is_write_once,
    unfenced_moves_only_touch_new_or_queued_targets,
    release_claim_needs_the_claim_holder,
    recovery_reads_overdue_queued_and_joining_targets,
    a_taken_account_is_held_until_its_decision_or_release,
    take_for_join_writes_all_or_nothing,
    pick_accounts_draws_from_the_least_recently_active_group,
);

// ---------------------------------------------------------------------------------------------
// helpers

pub(crate) fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 12, 10, 0, 0).unwrap()
}

/// The rest a caller expects after a decision (for accounts mid-join).
const REST: std::time::Duration = std::time::Duration::from_secs(30);

fn mins(m: i64) -> Duration {
    Duration::minutes(m)
}

fn link(s: &str) -> TargetLink {
    TargetLink::parse(s).unwrap()
}

const LIMITS: Limits = Limits { daily_join_cap: 20, channel_limit: 500 };

pub(crate) async fn accounts(store: &Store, names: &[&str], pool: &str) -> Vec<Account> {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    store.sync_accounts(&names, pool).await.unwrap();
    let all = store.accounts(Some(pool)).await.unwrap();
    names.iter().map(|n| all.iter().find(|a| &a.session_name == n).unwrap().clone()).collect()
}

/// Imports `names` as targets of niche "cars" and returns them in order.
pub(crate) async fn targets(store: &Store, names: &[&str]) -> Vec<Target> {
    let links: Vec<TargetLink> = names.iter().map(|n| link(n)).collect();
    store.import_targets(&links, "cars").await.unwrap();
    let all = store.targets(None, None).await.unwrap();
    links.iter().map(|l| all.iter().find(|t| &t.link == l).unwrap().clone()).collect()
}

async fn target(store: &Store, id: i64) -> Target {
    store.target(id).await.unwrap().unwrap()
}

async fn account(store: &Store, id: i64) -> Account {
    store.account(id).await.unwrap().unwrap()
}

/// Leases the account (bumps its epoch) and claims the target; returns the epoch.
async fn lease_and_claim(store: &Store, account_id: i64, target_id: i64) -> i64 {
    let epoch = store.bump_lease_epoch(account_id).await.unwrap();
    assert!(store.claim_target(target_id, account_id, epoch, t0()).await.unwrap(), "claim");
    epoch
}

fn attempt_at(finished_at: DateTime<Utc>) -> Attempt {
    Attempt {
        started_at: finished_at - Duration::seconds(2),
        finished_at,
        worker: "worker-1".to_owned(),
    }
}

fn joined(at: DateTime<Utc>) -> (JoinOutcome, Decision) {
    (
        JoinOutcome::Joined { already: false, peer: PeerInfo::default() },
        Decision {
            target: TargetChange::Joined {
                joined_at: at,
                warmup_ends_at: at + Duration::hours(24),
            },
            account: AccountChange::Pace { until: at },
            next: Next::Done,
        },
    )
}

/// A complete successful join of `target` by `account` finishing at `at`.
pub(crate) async fn join(store: &Store, account_id: i64, target_id: i64, at: DateTime<Utc>) {
    let epoch = lease_and_claim(store, account_id, target_id).await;
    let (outcome, decision) = joined(at);
    let applied = store
        .apply_decision(target_id, account_id, epoch, &outcome, &decision, &attempt_at(at))
        .await
        .unwrap();
    assert_eq!(applied, Applied::Applied);
}

/// Everything the store holds, for "nothing changed" assertions.
async fn snapshot(store: &Store) -> (Vec<Account>, Vec<Target>, Vec<AttemptRow>) {
    (
        store.accounts(None).await.unwrap(),
        store.targets(None, None).await.unwrap(),
        store.attempts(None, None).await.unwrap(),
    )
}

fn ids(accounts: &[Account]) -> Vec<i64> {
    accounts.iter().map(|a| a.id).collect()
}

// ---------------------------------------------------------------------------------------------
// schema

async fn migrations_go_up_down_and_up_again(store: Store) {
    let db = store.connection();
    assert!(Migrator::get_pending_migrations(db).await.unwrap().is_empty());
    accounts(&store, &["before_down"], "default").await;

    Migrator::down(db, None).await.unwrap();
    let all = Migrator::migrations().len();
    assert_eq!(Migrator::get_pending_migrations(db).await.unwrap().len(), all);
    assert!(store.accounts(None).await.is_err(), "tables must be gone after down");

    Migrator::up(db, None).await.unwrap();
    assert!(Migrator::get_pending_migrations(db).await.unwrap().is_empty());
    assert!(store.accounts(None).await.unwrap().is_empty(), "a fresh schema");
    let a = accounts(&store, &["after_up"], "default").await;
    let t = targets(&store, &["@after_up_group"]).await;
    join(&store, a[0].id, t[0].id, t0()).await;
    assert_eq!(store.attempts(None, None).await.unwrap().len(), 1);
}

// ---------------------------------------------------------------------------------------------
// accounts

async fn sync_accounts_adds_moves_and_reports_missing_names(store: Store) {
    let names = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let r = store.sync_accounts(&names(&["anna", "boris", "anna"]), "default").await.unwrap();
    assert_eq!(r.added, ["anna", "boris"]);
    assert!(r.moved_pool.is_empty() && r.missing_from_config.is_empty());

    let r = store.sync_accounts(&names(&["boris", "carl"]), "vip").await.unwrap();
    assert_eq!(r.added, ["carl"]);
    assert_eq!(r.moved_pool, ["boris"]);
    assert_eq!(r.missing_from_config, ["anna"]);

    let all = store.accounts(None).await.unwrap();
    let by_name = |n: &str| all.iter().find(|a| a.session_name == n).unwrap().clone();
    assert_eq!(all.len(), 3, "nothing is deleted");
    assert_eq!(by_name("anna").pool, "default");
    assert_eq!(by_name("boris").pool, "vip");
    let carl = by_name("carl");
    assert_eq!(
        (carl.pool.as_str(), carl.status, carl.lease_epoch, carl.last_action_at),
        ("vip", AccountStatus::Active, 0, None)
    );
    assert_eq!(ids(&store.accounts(Some("vip")).await.unwrap()).len(), 2);

    let r = store.sync_accounts(&names(&["boris", "carl"]), "vip").await.unwrap();
    assert!(r.added.is_empty() && r.moved_pool.is_empty());
}

async fn sync_without_move_leaves_other_pools_alone_and_repairs_local_config_marks(store: Store) {
    let a = accounts(&store, &["anna", "boris", "vera"], "default").await;
    for (acc, reason) in [(&a[0], "Account config not found: anna"), (&a[2], "SESSION_REVOKED")] {
        store
            .set_account_status(acc.id, AccountStatus::Unauthorized, Some(reason), None)
            .await
            .unwrap();
    }
    let names: Vec<String> = ["anna", "boris", "vera", "gleb"].map(String::from).into();
    let report = store.sync_accounts_with(&names, "typo", false).await.unwrap();
    assert_eq!(report.added, ["gleb"]);
    assert!(report.moved_pool.is_empty());
    let others: Vec<(&str, &str)> =
        report.in_other_pools.iter().map(|(n, p)| (n.as_str(), p.as_str())).collect();
    assert_eq!(others, [("anna", "default"), ("boris", "default"), ("vera", "default")]);
    assert_eq!(report.repaired, ["anna"], "only a local-config mark is repaired");
    let now = store.accounts(None).await.unwrap();
    let find = |n: &str| now.iter().find(|x| x.session_name == n).unwrap().clone();
    assert_eq!(
        (find("anna").pool.as_str(), find("anna").status),
        ("default", AccountStatus::Active)
    );
    assert_eq!(find("vera").status, AccountStatus::Unauthorized, "Telegram's verdict stays");
    assert_eq!(find("gleb").pool, "typo");
    // With the explicit move, they move and are reported.
    let moved = store.sync_accounts_with(&names, "typo", true).await.unwrap();
    assert_eq!(moved.moved_pool, ["anna", "boris", "vera"]);
}

async fn take_hold_keeps_every_other_process_out_until_released(store: Store) {
    let a = accounts(&store, &["anna"], "default").await;
    let t = targets(&store, &["@target_01"]).await;
    store.queue_new_targets("cars", 10, t0()).await.unwrap();
    let id = a[0].id;
    let epoch = store.take_hold(id, t0(), t0() + mins(2)).await.unwrap().expect("free");
    // A check holds it: no other check, no join takes it before the hold ends.
    assert_eq!(store.take_hold(id, t0() + mins(1), t0() + mins(3)).await.unwrap(), None);
    let take =
        store.take_for_join(id, t[0].id, t0() + mins(1), t0() + mins(3), t0() + mins(1)).await;
    assert_eq!(take.unwrap(), Take::AccountBusy);
    store.release_hold(id, epoch).await.unwrap();
    let next = store.take_hold(id, t0() + mins(1), t0() + mins(3)).await.unwrap();
    assert_eq!(next, Some(epoch + 1));
    // A hold whose holder vanished expires by itself.
    assert!(store.take_hold(id, t0() + mins(4), t0() + mins(5)).await.unwrap().is_some());
}

async fn the_gate_before_a_join_opens_only_for_a_live_hold_of_the_epoch(store: Store) {
    let a = accounts(&store, &["anna"], "default").await;
    let id = a[0].id;
    let epoch = store.take_hold(id, t0(), t0() + mins(2)).await.unwrap().unwrap();
    // A stale epoch, or a hold that ran out, keeps the gate shut and writes nothing.
    assert!(!store.gate_join(id, epoch - 1, t0(), t0() + mins(3), t0() + mins(8)).await.unwrap());
    assert!(
        !store.gate_join(id, epoch, t0() + mins(2), t0() + mins(3), t0() + mins(8)).await.unwrap()
    );
    assert_eq!(account(&store, id).await.next_allowed_action_time, None);
    // Open: the hold moves on and the account is reserved, never for less than before.
    assert!(
        store.gate_join(id, epoch, t0() + mins(1), t0() + mins(3), t0() + mins(8)).await.unwrap()
    );
    assert_eq!(account(&store, id).await.next_allowed_action_time, Some(t0() + mins(8)));
    assert!(
        store.gate_join(id, epoch, t0() + mins(2), t0() + mins(4), t0() + mins(5)).await.unwrap()
    );
    assert_eq!(account(&store, id).await.next_allowed_action_time, Some(t0() + mins(8)));
}

async fn bump_lease_epoch_counts_up_and_rejects_unknown_accounts(store: Store) {
    let a = accounts(&store, &["anna"], "default").await;
    assert_eq!(store.bump_lease_epoch(a[0].id).await.unwrap(), 1);
    assert_eq!(store.bump_lease_epoch(a[0].id).await.unwrap(), 2);
    assert_eq!(account(&store, a[0].id).await.lease_epoch, 2);
    assert!(matches!(
        store.bump_lease_epoch(9999).await,
        Err(StoreError::NotFound { table: "accounts", id: 9999 })
    ));
}

async fn eligible_accounts_apply_every_rule(store: Store) {
    let now = t0();
    let names = [
        "active",
        "banned",
        "flood_over",
        "flood_running",
        "cooldown_running",
        "paced",
        "excluded",
        "at_cap",
        "cap_window_passed",
        "at_channel_limit",
    ];
    let a = accounts(&store, &names, "default").await;
    let other_pool = accounts(&store, &["other_pool"], "other").await;
    let id = |name: &str| a[names.iter().position(|n| *n == name).unwrap()].id;
    let set = |name: &'static str, status, until: Option<DateTime<Utc>>| {
        let store = store.clone();
        let account_id = id(name);
        async move {
            assert!(store.set_account_status(account_id, status, Some(name), until).await.unwrap());
        }
    };
    set("banned", AccountStatus::Banned, None).await;
    set("flood_over", AccountStatus::FloodWait, Some(now - mins(1))).await;
    set("flood_running", AccountStatus::FloodWait, Some(now + mins(1))).await;
    set("cooldown_running", AccountStatus::Cooldown, Some(now + mins(600))).await;
    set("paced", AccountStatus::Active, Some(now + mins(5))).await;

    let limits = Limits { daily_join_cap: 2, channel_limit: 3 };
    let t = targets(
        &store,
        &[
            "@target_01",
            "@target_02",
            "@target_03",
            "@target_04",
            "@target_05",
            "@target_06",
            "@target_07",
        ],
    )
    .await;
    // Two counted joins in the last 24 h: at the cap.
    join(&store, id("at_cap"), t[0].id, now - Duration::hours(23)).await;
    join(&store, id("at_cap"), t[1].id, now - mins(1)).await;
    // One join exactly 24 h ago (outside the window) and one inside: below the cap.
    join(&store, id("cap_window_passed"), t[2].id, now - Duration::hours(24)).await;
    join(&store, id("cap_window_passed"), t[3].id, now - mins(30)).await;
    // Three bound targets (joined long ago): at the channel limit, far from the cap.
    for target in &t[4..7] {
        join(&store, id("at_channel_limit"), target.id, now - Duration::days(3)).await;
    }

    let eligible =
        store.eligible_accounts("default", now, &[id("excluded")], &limits, 100).await.unwrap();
    let mut got: Vec<&str> = eligible.iter().map(|a| a.session_name.as_str()).collect();
    got.sort_unstable();
    assert_eq!(got, ["active", "cap_window_passed", "flood_over"]);

    // Without the exclusion, and with room for more channels, the others appear.
    let roomy = Limits { daily_join_cap: 3, channel_limit: 4 };
    let eligible = store.eligible_accounts("default", now, &[], &roomy, 100).await.unwrap();
    let mut got: Vec<&str> = eligible.iter().map(|a| a.session_name.as_str()).collect();
    got.sort_unstable();
    assert_eq!(
        got,
        ["active", "at_cap", "at_channel_limit", "cap_window_passed", "excluded", "flood_over"]
    );

    // Pool and limit.
    let other = store.eligible_accounts("other", now, &[], &limits, 100).await.unwrap();
    assert_eq!(ids(&other), ids(&other_pool));
    assert_eq!(store.eligible_accounts("default", now, &[], &roomy, 2).await.unwrap().len(), 2);
    // A cap of zero allows nobody.
    let zero = Limits { daily_join_cap: 0, channel_limit: 10 };
    assert!(store.eligible_accounts("default", now, &[], &zero, 100).await.unwrap().is_empty());
}

async fn eligible_accounts_are_ordered_least_recently_active_first(store: Store) {
    let a = accounts(&store, &["old", "recent", "never_b", "never_a", "older"], "default").await;
    let t = targets(&store, &["@target_01", "@target_02", "@target_03"]).await;
    join(&store, a[0].id, t[0].id, t0() - mins(60)).await;
    join(&store, a[1].id, t[1].id, t0() - mins(10)).await;
    join(&store, a[4].id, t[2].id, t0() - mins(120)).await;
    let order = store.eligible_accounts("default", t0(), &[], &LIMITS, 10).await.unwrap();
    let names: Vec<&str> = order.iter().map(|a| a.session_name.as_str()).collect();
    // Never active first (by id), then oldest activity first.
    assert_eq!(names, ["never_b", "never_a", "older", "old", "recent"]);
}

async fn earliest_eligible_at_is_the_first_moment_an_account_frees_up(store: Store) {
    let now = t0();
    let limits = Limits { daily_join_cap: 2, channel_limit: 10 };
    assert_eq!(store.earliest_eligible_at("default", now, &[], &limits, REST).await.unwrap(), None);

    let a = accounts(&store, &["flooded", "capped", "banned"], "default").await;
    let (flooded, capped, banned) = (a[0].id, a[1].id, a[2].id);
    store.set_account_status(banned, AccountStatus::Banned, None, None).await.unwrap();
    let t = targets(&store, &["@target_01", "@target_02", "@target_03"]).await;
    // capped: counted joins at now-20h and now-1h: frees when the older leaves the window.
    join(&store, capped, t[0].id, now - Duration::hours(20)).await;
    join(&store, capped, t[1].id, now - Duration::hours(1)).await;
    store
        .set_account_status(flooded, AccountStatus::FloodWait, None, Some(now + mins(10)))
        .await
        .unwrap();

    let at = |excluded: Vec<i64>, limits: Limits| {
        let store = store.clone();
        async move {
            store.earliest_eligible_at("default", now, &excluded, &limits, REST).await.unwrap()
        }
    };
    assert_eq!(at(vec![], limits).await, Some(now + mins(10)));
    assert_eq!(at(vec![flooded], limits).await, Some(now + Duration::hours(4)));
    assert_eq!(at(vec![flooded, capped], limits).await, None, "only a banned account is left");
    // At the channel limit, the capped account can never work.
    let full = Limits { daily_join_cap: 2, channel_limit: 2 };
    assert_eq!(at(vec![flooded], full).await, None);
    // An eligible account means now.
    store.set_account_status(flooded, AccountStatus::Active, None, None).await.unwrap();
    assert_eq!(at(vec![], limits).await, Some(now));
    // A pace later than the cap: the pace wins.
    store
        .set_account_status(capped, AccountStatus::Active, None, Some(now + Duration::hours(5)))
        .await
        .unwrap();
    assert_eq!(at(vec![flooded], limits).await, Some(now + Duration::hours(5)));
    // An account mid-join rests until its decision: expected back `REST` from now, not at the
    // worst case reserved before the send.
    let t = targets(&store, &["@target_04"]).await;
    let taken = store
        .take_for_join(flooded, t[0].id, now, now + mins(2), now + Duration::hours(2))
        .await
        .unwrap();
    assert!(matches!(taken, Take::Taken { .. }));
    let rest = Duration::from_std(REST).unwrap();
    assert_eq!(at(vec![capped], limits).await, Some(now + rest));
}

// ---------------------------------------------------------------------------------------------
// targets

async fn import_counts_duplicates_in_the_database_and_in_the_input(store: Store) {
    let first = [link("@AutoBazar_UA"), link("https://t.me/+AbCdEf123"), link("t.me/autobazar_ua")];
    let r = store.import_targets(&first, "cars").await.unwrap();
    assert_eq!((r.inserted, r.duplicates), (2, 1));

    let second =
        [link("https://t.me/autobazar_ua"), link("@another_group"), link("@another_group")];
    let r = store.import_targets(&second, "bikes").await.unwrap();
    assert_eq!((r.inserted, r.duplicates), (1, 2));

    let all = store.targets(None, None).await.unwrap();
    let stored: Vec<(String, &str, TargetStatus)> =
        all.iter().map(|t| (t.link.to_string(), t.niche.as_str(), t.status)).collect();
    assert_eq!(
        stored,
        [
            ("@autobazar_ua".to_owned(), "cars", TargetStatus::New),
            ("t.me/+AbCdEf123".to_owned(), "cars", TargetStatus::New),
            ("@another_group".to_owned(), "bikes", TargetStatus::New),
        ]
    );
    assert_eq!(store.targets(Some("bikes"), None).await.unwrap().len(), 1);
    assert_eq!(store.targets(Some("cars"), Some(TargetStatus::New)).await.unwrap().len(), 2);
    assert!(store.targets(None, Some(TargetStatus::Queued)).await.unwrap().is_empty());
    let t = &all[0];
    assert_eq!(
        (t.attempts, t.in_doubt_tries, t.assigned_account_id, t.next_run_at),
        (0, 0, None, None)
    );
    // An empty import is fine.
    let r = store.import_targets(&[], "cars").await.unwrap();
    assert_eq!((r.inserted, r.duplicates), (0, 0));
}

async fn queue_new_targets_takes_the_oldest_new_targets_of_the_niche(store: Store) {
    let cars = targets(&store, &["@cars_one", "@cars_two", "@cars_three"]).await;
    store.import_targets(&[link("@bikes_one")], "bikes").await.unwrap();
    let now = t0();

    let batch = store.queue_new_targets("cars", 2, now).await.unwrap();
    assert_eq!(batch.iter().map(|t| t.id).collect::<Vec<_>>(), [cars[0].id, cars[1].id]);
    for t in &batch {
        assert_eq!((t.status, t.next_run_at), (TargetStatus::Queued, Some(now)));
        assert_eq!(target(&store, t.id).await.status, TargetStatus::Queued);
    }
    let rest = store.queue_new_targets("cars", 10, now).await.unwrap();
    assert_eq!(rest.iter().map(|t| t.id).collect::<Vec<_>>(), [cars[2].id]);
    assert!(store.queue_new_targets("cars", 10, now).await.unwrap().is_empty());
    assert_eq!(store.targets(Some("bikes"), Some(TargetStatus::New)).await.unwrap().len(), 1);
}

async fn target_statuses_reads_every_listed_target_across_pages(store: Store) {
    // More ids than one statement binds (5,000), so the second page is read too.
    let links: Vec<TargetLink> = (0..5_200).map(|i| link(&format!("@paged_{i:05}"))).collect();
    store.import_targets(&links, "cars").await.unwrap();
    let queued: HashSet<i64> =
        store.queue_new_targets("cars", 5_100, t0()).await.unwrap().iter().map(|t| t.id).collect();
    assert_eq!(queued.len(), 5_100);
    let mut ids: Vec<i64> = store.targets(None, None).await.unwrap().iter().map(|t| t.id).collect();
    let unknown = ids.iter().max().unwrap() + 1_000;
    ids.push(unknown);
    let statuses = store.target_statuses(&ids).await.unwrap();
    assert_eq!(statuses.len(), 5_200, "every stored target, the unknown id left out");
    assert!(!statuses.contains_key(&unknown));
    for (id, status) in &statuses {
        let want = if queued.contains(id) { TargetStatus::Queued } else { TargetStatus::New };
        assert_eq!(*status, want, "target {id}");
    }
    assert!(store.target_statuses(&[]).await.unwrap().is_empty());
}

async fn concurrent_producers_never_take_the_same_target(store: Store) {
    let links: Vec<TargetLink> = (0..60).map(|i| link(&format!("@group_{i:03}"))).collect();
    store.import_targets(&links, "cars").await.unwrap();
    let producers: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                for _ in 0..3 {
                    let batch = store.queue_new_targets("cars", 4, t0()).await.unwrap();
                    mine.extend(batch.into_iter().map(|t| t.id));
                }
                mine
            })
        })
        .collect();
    let mut seen = HashSet::new();
    let mut total = 0;
    for p in producers {
        for id in p.await.unwrap() {
            total += 1;
            assert!(seen.insert(id), "target {id} was taken twice");
        }
    }
    // 8 producers x 3 batches x 4 = 96 requested > 60 available: all taken, once each.
    assert_eq!(total, 60);
    assert_eq!(store.targets(Some("cars"), Some(TargetStatus::Queued)).await.unwrap().len(), 60);
}

async fn claim_target_needs_a_current_epoch_and_a_free_or_own_target(store: Store) {
    let a = accounts(&store, &["anna", "boris"], "default").await;
    let (anna, boris) = (a[0].id, a[1].id);
    let t = targets(&store, &["@target_01", "@target_02"]).await;
    let anna_epoch = store.bump_lease_epoch(anna).await.unwrap();
    let boris_epoch = store.bump_lease_epoch(boris).await.unwrap();

    // A stale epoch claims nothing.
    assert!(!store.claim_target(t[0].id, anna, anna_epoch + 1, t0()).await.unwrap());
    assert_eq!(target(&store, t[0].id).await.status, TargetStatus::New);

    // From `new`.
    assert!(store.claim_target(t[0].id, anna, anna_epoch, t0()).await.unwrap());
    let claimed = target(&store, t[0].id).await;
    assert_eq!(
        (claimed.status, claimed.claimed_account_id, claimed.claim_epoch),
        (TargetStatus::Joining, Some(anna), Some(anna_epoch))
    );
    // Another account cannot take a `joining` target.
    assert!(!store.claim_target(t[0].id, boris, boris_epoch, t0()).await.unwrap());
    assert_eq!(target(&store, t[0].id).await.claimed_account_id, Some(anna));
    // The same account, under a new lease, re-claims it (in-doubt retry).
    let anna_epoch2 = store.bump_lease_epoch(anna).await.unwrap();
    assert!(!store.claim_target(t[0].id, anna, anna_epoch, t0()).await.unwrap());
    assert!(store.claim_target(t[0].id, anna, anna_epoch2, t0()).await.unwrap());
    assert_eq!(target(&store, t[0].id).await.claim_epoch, Some(anna_epoch2));

    // From `queued`.
    store.queue_new_targets("cars", 10, t0()).await.unwrap();
    assert!(store.claim_target(t[1].id, boris, boris_epoch, t0()).await.unwrap());
    // Never from a terminal status.
    let (outcome, decision) = joined(t0());
    store
        .apply_decision(t[1].id, boris, boris_epoch, &outcome, &decision, &attempt_at(t0()))
        .await
        .unwrap();
    assert!(!store.claim_target(t[1].id, boris, boris_epoch, t0()).await.unwrap());
    assert_eq!(target(&store, t[1].id).await.status, TargetStatus::Joined);
    // Nor an unknown target.
    assert!(!store.claim_target(9999, boris, boris_epoch, t0()).await.unwrap());
}

// ---------------------------------------------------------------------------------------------
// apply_decision

struct Fixture {
    store: Store,
    account: i64,
    target: i64,
    epoch: i64,
}

async fn claimed(store: Store) -> Fixture {
    let a = accounts(&store, &["anna"], "default").await;
    let t = targets(&store, &["@target_01"]).await;
    store.queue_new_targets("cars", 10, t0()).await.unwrap();
    let epoch = lease_and_claim(&store, a[0].id, t[0].id).await;
    Fixture { store, account: a[0].id, target: t[0].id, epoch }
}

impl Fixture {
    async fn apply(&self, outcome: &JoinOutcome, decision: &Decision) -> Applied {
        self.store
            .apply_decision(
                self.target,
                self.account,
                self.epoch,
                outcome,
                decision,
                &attempt_at(t0()),
            )
            .await
            .unwrap()
    }

    async fn only_attempt(&self) -> AttemptRow {
        let rows = self.store.attempts(Some(self.target), Some(self.account)).await.unwrap();
        assert_eq!(rows.len(), 1, "{rows:?}");
        rows.into_iter().next().unwrap()
    }
}

async fn joined_binds_the_target_and_paces_the_account(store: Store) {
    let f = claimed(store).await;
    let outcome = JoinOutcome::Joined {
        already: true,
        peer: PeerInfo { id: Some(-100123), title: Some("Auto Bazar".to_owned()) },
    };
    let decision = Decision {
        target: TargetChange::Joined {
            joined_at: t0(),
            warmup_ends_at: t0() + Duration::hours(24),
        },
        account: AccountChange::Pace { until: t0() + mins(7) },
        next: Next::Done,
    };
    assert_eq!(f.apply(&outcome, &decision).await, Applied::Applied);

    let t = target(&f.store, f.target).await;
    assert_eq!(t.status, TargetStatus::Joined);
    assert_eq!(t.assigned_account_id, Some(f.account));
    assert_eq!((t.claimed_account_id, t.claim_epoch), (None, None));
    assert_eq!((t.joined_at, t.warmup_ends_at), (Some(t0()), Some(t0() + Duration::hours(24))));
    assert_eq!((t.peer_id, t.title.as_deref()), (Some(-100123), Some("Auto Bazar")));
    assert_eq!((t.attempts, t.in_doubt_tries, t.next_run_at), (1, 0, None));

    let a = account(&f.store, f.account).await;
    assert_eq!(a.status, AccountStatus::Active);
    assert_eq!(a.next_allowed_action_time, Some(t0() + mins(7)));
    assert_eq!(a.last_action_at, Some(t0()));

    let row = f.only_attempt().await;
    assert_eq!(row.outcome, OutcomeKind::AlreadyParticipant);
    assert_eq!((row.epoch, row.error_code, row.flood_wait_seconds), (f.epoch, None, None));
    assert_eq!((row.started_at, row.finished_at), (t0() - Duration::seconds(2), t0()));
    assert_eq!(row.worker, "worker-1");
}

async fn requested_binds_the_target(store: Store) {
    let f = claimed(store).await;
    let decision = Decision {
        target: TargetChange::Requested,
        account: AccountChange::Pace { until: t0() + mins(5) },
        next: Next::Done,
    };
    let outcome = JoinOutcome::Requested(RequestKind::JoinRequest);
    assert_eq!(f.apply(&outcome, &decision).await, Applied::Applied);
    let t = target(&f.store, f.target).await;
    assert_eq!(
        (t.status, t.assigned_account_id, t.claimed_account_id, t.joined_at),
        (TargetStatus::Requested, Some(f.account), None, None)
    );
    let row = f.only_attempt().await;
    assert_eq!(
        (row.outcome.as_str(), row.error_code.as_deref()),
        ("requested", Some("INVITE_REQUEST_SENT"))
    );
}

async fn flood_wait_requeues_the_target_and_rests_the_account(store: Store) {
    let f = claimed(store).await;
    let outcome = JoinOutcome::FloodWait { seconds: 300 };
    let decision = Decision {
        target: TargetChange::Requeue { run_at: t0() },
        account: AccountChange::Wait {
            status: AccountStatus::FloodWait,
            until: t0() + mins(5),
            reason: "FLOOD_WAIT_300".to_owned(),
        },
        next: Next::Reschedule { run_at: t0(), exclude_account: false },
    };
    assert_eq!(f.apply(&outcome, &decision).await, Applied::Applied);
    let t = target(&f.store, f.target).await;
    assert_eq!(
        (t.status, t.assigned_account_id, t.claimed_account_id, t.claim_epoch, t.next_run_at),
        (TargetStatus::Queued, None, None, None, Some(t0()))
    );
    assert_eq!(t.attempts, 1);
    let a = account(&f.store, f.account).await;
    assert_eq!(
        (a.status, a.status_reason.as_deref(), a.next_allowed_action_time, a.last_action_at),
        (AccountStatus::FloodWait, Some("FLOOD_WAIT_300"), Some(t0() + mins(5)), Some(t0()))
    );
    let row = f.only_attempt().await;
    assert_eq!(
        (row.outcome.as_str(), row.flood_wait_seconds, row.error_code.as_deref()),
        ("flood_wait", Some(300), Some("FLOOD_WAIT"))
    );
    // A flood wait is not a join: the daily cap does not count it.
    let eligible_later = f
        .store
        .eligible_accounts(
            "default",
            t0() + mins(6),
            &[],
            &Limits { daily_join_cap: 1, channel_limit: 5 },
            5,
        )
        .await
        .unwrap();
    assert_eq!(ids(&eligible_later), [f.account]);
}

async fn target_failure_is_terminal_with_its_code(store: Store) {
    let f = claimed(store).await;
    let outcome = JoinOutcome::TargetInvalid {
        code: "USERNAME_NOT_OCCUPIED".to_owned(),
        message: "no group or channel has this username".to_owned(),
    };
    let decision = Decision {
        target: TargetChange::Fail {
            status: TargetStatus::Error,
            code: "USERNAME_NOT_OCCUPIED".to_owned(),
            message: "no group or channel has this username".to_owned(),
        },
        account: AccountChange::Pace { until: t0() + mins(1) },
        next: Next::Done,
    };
    assert_eq!(f.apply(&outcome, &decision).await, Applied::Applied);
    let t = target(&f.store, f.target).await;
    assert_eq!(
        (t.status, t.error_code.as_deref(), t.error_message.as_deref()),
        (
            TargetStatus::Error,
            Some("USERNAME_NOT_OCCUPIED"),
            Some("no group or channel has this username")
        )
    );
    assert_eq!((t.assigned_account_id, t.claimed_account_id), (None, None));
    assert_eq!(f.only_attempt().await.outcome, OutcomeKind::TargetInvalid);

    // A failure status that is not terminal is refused.
    let bad = Decision {
        target: TargetChange::Fail {
            status: TargetStatus::Queued,
            code: "X".into(),
            message: "x".into(),
        },
        account: AccountChange::Unchanged,
        next: Next::Done,
    };
    let g = claimed_second(&f).await;
    assert!(matches!(
        f.store.apply_decision(g.0, f.account, g.1, &outcome, &bad, &attempt_at(t0())).await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(target(&f.store, g.0).await.status, TargetStatus::Joining);
}

/// A second target claimed by the fixture's account under a new lease: (target, epoch).
async fn claimed_second(f: &Fixture) -> (i64, i64) {
    let t = targets(&f.store, &["@target_02"]).await;
    (t[0].id, lease_and_claim(&f.store, f.account, t[0].id).await)
}

async fn in_doubt_keeps_the_claim_and_counts_the_try(store: Store) {
    let f = claimed(store).await;
    let outcome = JoinOutcome::InDoubt { reason: "timeout".to_owned() };
    let decision = Decision {
        target: TargetChange::KeepClaim { run_at: t0() + mins(1) },
        account: AccountChange::Unchanged,
        next: Next::RetrySameAccount { run_at: t0() + mins(1) },
    };
    assert_eq!(f.apply(&outcome, &decision).await, Applied::Applied);
    let t = target(&f.store, f.target).await;
    // Pinned to the account, owned by no epoch until the account's next take.
    assert_eq!(
        (t.status, t.claimed_account_id, t.claim_epoch, t.in_doubt_tries, t.attempts),
        (TargetStatus::Joining, Some(f.account), None, 1, 1)
    );
    assert_eq!(t.next_run_at, Some(t0() + mins(1)));
    let a = account(&f.store, f.account).await;
    // Unchanged: the status stays, the rest reserved for the attempt ends with it.
    assert_eq!(
        (a.status, a.next_allowed_action_time, a.last_action_at),
        (AccountStatus::Active, Some(t0()), Some(t0()))
    );
    // The same decision written again under the same epoch (a retry after a lost commit
    // reply) is stale: a decision is applied at most once per epoch.
    assert_eq!(f.apply(&outcome, &decision).await, Applied::Stale);
    assert_eq!(target(&f.store, f.target).await.in_doubt_tries, 1);
    // The in-doubt retry takes the account again and counts up under its own epoch.
    let epoch = lease_and_claim(&f.store, f.account, f.target).await;
    let applied = f
        .store
        .apply_decision(f.target, f.account, epoch, &outcome, &decision, &attempt_at(t0()))
        .await
        .unwrap();
    assert_eq!(applied, Applied::Applied);
    assert_eq!(target(&f.store, f.target).await.in_doubt_tries, 2);
    assert_eq!(f.store.attempts(Some(f.target), None).await.unwrap().len(), 2);
}

/// An account with a target pinned to it (here an in-doubt join) is left to that target once
/// its run is due within a minute: a free job taking the account first could draw a FloodWait
/// and make the pinned target wait a whole rest. Before that, the account joins free targets.
async fn a_pinned_target_due_keeps_free_jobs_off_its_account(store: Store) {
    let a = accounts(&store, &["anna", "bob"], "default").await;
    let (anna, bob) = (a[0].id, a[1].id);
    let t = targets(&store, &["@target_01"]).await;
    store.queue_new_targets("cars", 10, t0()).await.unwrap();
    let epoch = lease_and_claim(&store, anna, t[0].id).await;
    let outcome = JoinOutcome::InDoubt { reason: "timeout".to_owned() };
    let decision = Decision {
        target: TargetChange::KeepClaim { run_at: t0() + mins(5) },
        account: AccountChange::Unchanged,
        next: Next::RetrySameAccount { run_at: t0() + mins(5) },
    };
    let applied =
        store.apply_decision(t[0].id, anna, epoch, &outcome, &decision, &attempt_at(t0())).await;
    assert_eq!(applied.unwrap(), Applied::Applied);
    let picked = |at: DateTime<Utc>| {
        let store = store.clone();
        async move {
            let mut ids: Vec<i64> = store
                .pick_accounts("default", at, &[], &LIMITS, 4, 4)
                .await
                .unwrap()
                .iter()
                .map(|a| a.id)
                .collect();
            ids.sort();
            ids
        }
    };
    // Five minutes before the retry, anna is free for a free job.
    assert_eq!(picked(t0()).await, vec![anna, bob]);
    // Within the last minute before it, she is left to her pinned target.
    assert_eq!(picked(t0() + mins(4) + Duration::seconds(1)).await, vec![bob]);
    assert_eq!(picked(t0() + mins(30)).await, vec![bob]);
    // The book of free moments agrees: free jobs may have her after the pinned join's rest.
    let rest = std::time::Duration::from_secs(90);
    let at = |now: DateTime<Utc>| {
        let store = store.clone();
        async move {
            let times = store.eligible_times("default", now, &[], &LIMITS, rest).await.unwrap();
            times.into_iter().find(|(id, _)| *id == anna).map(|(_, at)| at)
        }
    };
    assert_eq!(at(t0()).await, Some(t0()));
    let late = t0() + mins(4) + Duration::seconds(1);
    assert_eq!(at(late).await, Some(t0() + mins(5) + Duration::seconds(90)));
    // Once the pinned target is settled, she is free for free jobs again.
    let epoch = lease_and_claim(&store, anna, t[0].id).await;
    let failed = Decision {
        target: TargetChange::Fail {
            status: TargetStatus::Error,
            code: "IN_DOUBT".to_owned(),
            message: "given up".to_owned(),
        },
        account: AccountChange::Unchanged,
        next: Next::Done,
    };
    let applied =
        store.apply_decision(t[0].id, anna, epoch, &outcome, &failed, &attempt_at(t0())).await;
    assert_eq!(applied.unwrap(), Applied::Applied);
    assert_eq!(picked(late).await, vec![anna, bob]);
}

/// A pool that just grew must not be planned as the empty table it was: the pick would sort
/// the whole pool instead of reading its index. On Postgres the sync analyzes `accounts`.
async fn a_sync_that_adds_accounts_refreshes_the_planners_statistics(store: Store) {
    accounts(&store, &["anna", "bob", "cleo"], "default").await;
    if store.connection().get_database_backend() == sea_orm::DbBackend::Postgres {
        let row = store
            .connection()
            .query_one_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Postgres,
                "SELECT reltuples::bigint FROM pg_class WHERE relname = 'accounts'",
            ))
            .await
            .unwrap()
            .expect("accounts is in pg_class");
        let rows: i64 = row.try_get_by_index(0).unwrap();
        assert_eq!(rows, 3, "the planner's row count for accounts after the sync");
    }
}

async fn disabled_account_gives_up_the_target(store: Store) {
    let f = claimed(store).await;
    let outcome = JoinOutcome::Unauthorized { code: "AUTH_KEY_UNREGISTERED".to_owned() };
    let decision = Decision {
        target: TargetChange::Requeue { run_at: t0() },
        account: AccountChange::Disable {
            status: AccountStatus::Unauthorized,
            reason: "AUTH_KEY_UNREGISTERED".to_owned(),
        },
        next: Next::Reschedule { run_at: t0(), exclude_account: true },
    };
    assert_eq!(f.apply(&outcome, &decision).await, Applied::Applied);
    let a = account(&f.store, f.account).await;
    assert_eq!(
        (a.status, a.status_reason.as_deref()),
        (AccountStatus::Unauthorized, Some("AUTH_KEY_UNREGISTERED"))
    );
    assert_eq!(target(&f.store, f.target).await.status, TargetStatus::Queued);
    assert!(f.store.eligible_accounts("default", t0(), &[], &LIMITS, 5).await.unwrap().is_empty());
    assert_eq!(
        f.store.earliest_eligible_at("default", t0(), &[], &LIMITS, REST).await.unwrap(),
        None
    );
}

async fn stale_epoch_writes_nothing(store: Store) {
    let f = claimed(store).await;
    // Another worker took the account's lease meanwhile.
    f.store.bump_lease_epoch(f.account).await.unwrap();
    let before = snapshot(&f.store).await;
    let (outcome, decision) = joined(t0());
    assert_eq!(f.apply(&outcome, &decision).await, Applied::Stale);
    let in_doubt = Decision {
        target: TargetChange::KeepClaim { run_at: t0() },
        account: AccountChange::Pace { until: t0() + mins(1) },
        next: Next::Done,
    };
    assert_eq!(
        f.apply(&JoinOutcome::InDoubt { reason: "x".into() }, &in_doubt).await,
        Applied::Stale
    );
    assert_eq!(snapshot(&f.store).await, before);
    assert!(f.store.attempts(None, None).await.unwrap().is_empty());
}

async fn stale_claim_writes_nothing(store: Store) {
    let f = claimed(store).await;
    // The claim was dropped (recovery) although the account's epoch did not move.
    assert!(f.store.release_claim(f.target, f.account, t0()).await.unwrap());
    let before = snapshot(&f.store).await;
    let (outcome, decision) = joined(t0() + mins(3));
    assert_eq!(f.apply(&outcome, &decision).await, Applied::Stale);
    assert_eq!(snapshot(&f.store).await, before, "account row must not move either");
}

fn flood_wait(seconds: u32, until: DateTime<Utc>) -> (JoinOutcome, Decision) {
    let status = if seconds > 600 { AccountStatus::Cooldown } else { AccountStatus::FloodWait };
    (
        JoinOutcome::FloodWait { seconds },
        Decision {
            target: TargetChange::Requeue { run_at: until },
            account: AccountChange::Wait { status, until, reason: format!("FLOOD_WAIT_{seconds}") },
            next: Next::Reschedule { run_at: until, exclude_account: seconds > 600 },
        },
    )
}

async fn a_stale_attempt_still_records_telegrams_verdict_about_the_account(store: Store) {
    let f = claimed(store).await;
    // The claim was recovered meanwhile, then the 700 s answer arrives: the target and the
    // attempt row stay as they are, the account still cools down for the whole wait.
    assert!(f.store.release_claim(f.target, f.account, t0()).await.unwrap());
    let target_before = target(&f.store, f.target).await;
    let (outcome, decision) = flood_wait(700, t0() + Duration::seconds(700));
    assert_eq!(f.apply(&outcome, &decision).await, Applied::Stale);
    assert_eq!(target(&f.store, f.target).await, target_before);
    assert!(f.store.attempts(None, None).await.unwrap().is_empty());
    let a = account(&f.store, f.account).await;
    assert_eq!(
        (a.status, a.status_reason.as_deref(), a.next_allowed_action_time),
        (AccountStatus::Cooldown, Some("FLOOD_WAIT_700"), Some(t0() + Duration::seconds(700)))
    );
    assert!(
        f.store
            .eligible_accounts("default", t0() + mins(5), &[], &LIMITS, 5)
            .await
            .unwrap()
            .is_empty()
    );

    // Under a stale epoch as well (another process took the account): a ban is recorded.
    let g = claimed_second(&f).await;
    f.store.bump_lease_epoch(f.account).await.unwrap();
    let ban = Decision {
        target: TargetChange::Requeue { run_at: t0() },
        account: AccountChange::Disable {
            status: AccountStatus::Banned,
            reason: "USER_DEACTIVATED_BAN".into(),
        },
        next: Next::Reschedule { run_at: t0(), exclude_account: true },
    };
    let banned = JoinOutcome::AccountBanned { code: "USER_DEACTIVATED_BAN".into() };
    let applied =
        f.store.apply_decision(g.0, f.account, g.1, &banned, &ban, &attempt_at(t0())).await;
    assert_eq!(applied.unwrap(), Applied::Stale);
    assert_eq!(target(&f.store, g.0).await.status, TargetStatus::Joining);
    let a = account(&f.store, f.account).await;
    assert_eq!(
        (a.status, a.status_reason.as_deref()),
        (AccountStatus::Banned, Some("USER_DEACTIVATED_BAN"))
    );
}

async fn a_stale_verdict_only_lengthens_a_rest_and_only_worsens_a_status(store: Store) {
    let a = accounts(&store, &["anna"], "default").await;
    let id = a[0].id;
    let wait = |status, secs: i64| AccountChange::Wait {
        status,
        until: t0() + Duration::seconds(secs),
        reason: format!("FLOOD_WAIT_{secs}"),
    };
    let state = |store: Store| async move {
        let a = account(&store, id).await;
        (a.status, a.status_reason, a.next_allowed_action_time.map(|t| (t - t0()).num_seconds()))
    };
    let s = |st: AccountStatus, r: &str, secs: i64| (st, Some(r.to_owned()), Some(secs));

    assert!(
        store.record_account_verdict(id, &wait(AccountStatus::Cooldown, 900), t0()).await.unwrap()
    );
    assert_eq!(state(store.clone()).await, s(AccountStatus::Cooldown, "FLOOD_WAIT_900", 900));
    // A shorter, milder wait changes nothing.
    assert!(
        !store
            .record_account_verdict(id, &wait(AccountStatus::FloodWait, 300), t0())
            .await
            .unwrap()
    );
    assert_eq!(state(store.clone()).await, s(AccountStatus::Cooldown, "FLOOD_WAIT_900", 900));
    // A longer mild wait lengthens the rest but keeps the worse status and its reason.
    assert!(
        store
            .record_account_verdict(id, &wait(AccountStatus::FloodWait, 1200), t0())
            .await
            .unwrap()
    );
    assert_eq!(state(store.clone()).await, s(AccountStatus::Cooldown, "FLOOD_WAIT_900", 1200));
    // Pacing is not a verdict.
    let pace = AccountChange::Pace { until: t0() + Duration::hours(5) };
    assert!(!store.record_account_verdict(id, &pace, t0()).await.unwrap());
    // A newer ban is never undone by an older wait or a milder disable.
    let disable = |status, reason: &str| AccountChange::Disable { status, reason: reason.into() };
    assert!(
        store
            .record_account_verdict(
                id,
                &disable(AccountStatus::Banned, "USER_DEACTIVATED_BAN"),
                t0()
            )
            .await
            .unwrap()
    );
    assert!(
        !store
            .record_account_verdict(
                id,
                &disable(AccountStatus::Unauthorized, "SESSION_REVOKED"),
                t0()
            )
            .await
            .unwrap()
    );
    assert!(
        store.record_account_verdict(id, &wait(AccountStatus::Cooldown, 5000), t0()).await.unwrap()
    );
    assert_eq!(state(store.clone()).await, s(AccountStatus::Banned, "USER_DEACTIVATED_BAN", 5000));
}

async fn binding_is_write_once(store: Store) {
    let a = accounts(&store, &["anna", "boris"], "default").await;
    let (anna, boris) = (a[0].id, a[1].id);
    let t = targets(&store, &["@target_01"]).await;
    join(&store, anna, t[0].id, t0()).await;
    assert_eq!(target(&store, t[0].id).await.assigned_account_id, Some(anna));

    // Force the impossible: the bound target back in `joining`, claimed by boris.
    let epoch = store.bump_lease_epoch(boris).await.unwrap();
    store
        .connection()
        .execute_unprepared(&format!(
            "UPDATE targets SET status = 'joining', claimed_account_id = {boris}, \
             claim_epoch = {epoch} WHERE id = {}",
            t[0].id
        ))
        .await
        .unwrap();
    let before = snapshot(&store).await;
    let (outcome, decision) = joined(t0() + mins(30));
    let err = store
        .apply_decision(t[0].id, boris, epoch, &outcome, &decision, &attempt_at(t0() + mins(30)))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { table: "targets", .. }), "{err}");
    assert_eq!(snapshot(&store).await, before, "a refused binding writes nothing");
    assert_eq!(target(&store, t[0].id).await.assigned_account_id, Some(anna));

    // The bound account itself may re-join (already a participant): still bound to it.
    store
        .connection()
        .execute_unprepared(&format!(
            "UPDATE targets SET claimed_account_id = NULL, claim_epoch = NULL, status = 'queued' \
             WHERE id = {}",
            t[0].id
        ))
        .await
        .unwrap();
    join(&store, anna, t[0].id, t0() + mins(40)).await;
    let t = target(&store, t[0].id).await;
    assert_eq!(
        (t.status, t.assigned_account_id, t.attempts),
        (TargetStatus::Joined, Some(anna), 2)
    );
}

// ---------------------------------------------------------------------------------------------
// unfenced moves and recovery

async fn unfenced_moves_only_touch_new_or_queued_targets(store: Store) {
    let a = accounts(&store, &["anna"], "default").await;
    let t = targets(&store, &["@target_new", "@target_queued", "@target_joining", "@target_done"])
        .await;
    let (new, queued, joining, done) = (t[0].id, t[1].id, t[2].id, t[3].id);
    store.requeue_target(queued, t0()).await.unwrap();
    lease_and_claim(&store, a[0].id, joining).await;
    join(&store, a[0].id, done, t0()).await;

    let later = t0() + mins(15);
    assert!(store.requeue_target(new, later).await.unwrap());
    let tn = target(&store, new).await;
    assert_eq!((tn.status, tn.next_run_at), (TargetStatus::Queued, Some(later)));
    assert!(store.requeue_target(queued, later).await.unwrap());
    assert_eq!(target(&store, queued).await.next_run_at, Some(later));
    assert!(!store.requeue_target(joining, later).await.unwrap());
    assert!(!store.requeue_target(done, later).await.unwrap());
    assert!(!store.requeue_target(9999, later).await.unwrap());

    assert!(store.give_back_target(queued, NO_AVAILABLE_ACCOUNTS).await.unwrap());
    let tq = target(&store, queued).await;
    assert_eq!(
        (tq.status, tq.error_message.as_deref(), tq.next_run_at),
        (TargetStatus::New, Some("No available accounts"), None)
    );
    assert!(!store.give_back_target(joining, NO_AVAILABLE_ACCOUNTS).await.unwrap());
    assert!(!store.give_back_target(done, NO_AVAILABLE_ACCOUNTS).await.unwrap());
    assert_eq!(target(&store, joining).await.status, TargetStatus::Joining);
    assert_eq!(target(&store, done).await.status, TargetStatus::Joined);
    assert_eq!(target(&store, done).await.error_message, None);
    // A given-back target is taken by the next producer run again.
    let again = store.queue_new_targets("cars", 10, t0()).await.unwrap();
    assert_eq!(again.iter().map(|t| t.id).collect::<Vec<_>>(), [queued]);
}

async fn release_claim_needs_the_claim_holder(store: Store) {
    let f = claimed(store).await;
    let other = accounts(&f.store, &["boris"], "default").await[0].id;
    assert!(!f.store.release_claim(f.target, other, t0()).await.unwrap());
    assert_eq!(target(&f.store, f.target).await.claimed_account_id, Some(f.account));
    assert!(f.store.release_claim(f.target, f.account, t0() + mins(2)).await.unwrap());
    let t = target(&f.store, f.target).await;
    assert_eq!(
        (t.status, t.claimed_account_id, t.claim_epoch, t.in_doubt_tries, t.next_run_at),
        (TargetStatus::Queued, None, None, 0, Some(t0() + mins(2)))
    );
    assert!(!f.store.release_claim(f.target, f.account, t0()).await.unwrap(), "no longer joining");
}

async fn recovery_reads_overdue_queued_and_joining_targets(store: Store) {
    let a = accounts(&store, &["anna"], "default").await;
    let t =
        targets(&store, &["@target_old", "@target_fresh", "@target_joining", "@target_new"]).await;
    let (old, fresh, joining) = (t[0].id, t[1].id, t[2].id);
    store.requeue_target(old, t0() - mins(30)).await.unwrap();
    store.requeue_target(fresh, t0() + mins(30)).await.unwrap();
    lease_and_claim(&store, a[0].id, joining).await;

    let stale = store.stale_queued_targets(t0() - mins(10), 10).await.unwrap();
    assert_eq!(stale.iter().map(|t| t.id).collect::<Vec<_>>(), [old]);
    let stale = store.stale_queued_targets(t0() + mins(60), 10).await.unwrap();
    assert_eq!(stale.iter().map(|t| t.id).collect::<Vec<_>>(), [old, fresh]);
    assert_eq!(store.stale_queued_targets(t0() + mins(60), 1).await.unwrap().len(), 1);

    let js = store.joining_targets(10).await.unwrap();
    assert_eq!(
        js.iter().map(|t| (t.id, t.claimed_account_id)).collect::<Vec<_>>(),
        [(joining, Some(a[0].id))]
    );

    store.touch_next_run(&[old, joining, t[3].id], t0() + mins(20)).await.unwrap();
    assert_eq!(target(&store, old).await.next_run_at, Some(t0() + mins(20)));
    assert_eq!(target(&store, joining).await.next_run_at, Some(t0() + mins(20)));
    assert_eq!(target(&store, t[3].id).await.next_run_at, None, "`new` is left alone");
    assert!(store.stale_queued_targets(t0() - mins(10), 10).await.unwrap().is_empty());
    store.touch_next_run(&[], t0()).await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// holds

async fn a_taken_account_is_held_until_its_decision_or_release(store: Store) {
    let a = accounts(&store, &["held"], "default").await;
    let t = targets(&store, &["@held_group"]).await;
    let id = a[0].id;
    let now = t0();
    let eligible = |at| {
        let store = store.clone();
        async move { ids(&store.eligible_accounts("default", at, &[], &LIMITS, 10).await.unwrap()) }
    };
    assert_eq!(eligible(now).await, vec![id]);

    let take = |target_id: i64| {
        let store = store.clone();
        async move {
            store.take_for_join(id, target_id, now, now + mins(2), now - mins(1)).await.unwrap()
        }
    };
    let Take::Taken { epoch } = take(t[0].id).await else { panic!("free") };
    assert_eq!(epoch, 1, "taking bumps the epoch");
    assert!(eligible(now).await.is_empty(), "held: out of the eligible list");
    assert_eq!(take(t[0].id).await, Take::AccountBusy, "held once");
    assert_eq!(eligible(now + mins(3)).await, vec![id], "a hold ends by itself");
    // A stale holder can neither extend nor end the hold of the current one.
    store.extend_hold(id, epoch - 1, now + mins(60)).await.unwrap();
    store.release_hold(id, epoch - 1).await.unwrap();
    assert!(eligible(now + mins(1)).await.is_empty());
    store.extend_hold(id, epoch, now + mins(60)).await.unwrap();
    assert!(eligible(now + mins(30)).await.is_empty(), "extended by its holder");
    store.release_hold(id, epoch).await.unwrap();
    assert_eq!(eligible(now).await, vec![id], "released by its holder");

    // The decision ends the hold, and a late extension cannot bring it back.
    let Take::Taken { epoch } = take(t[0].id).await else { panic!("free again") };
    let (outcome, decision) = joined(now);
    let applied = store
        .apply_decision(t[0].id, id, epoch, &outcome, &decision, &attempt_at(now))
        .await
        .unwrap();
    assert_eq!(applied, Applied::Applied);
    store.extend_hold(id, epoch, now + mins(60)).await.unwrap();
    let paced_until = account(&store, id).await.next_allowed_action_time.unwrap();
    assert_eq!(eligible(paced_until).await, vec![id], "only the join pause holds it back");
}

async fn take_for_join_writes_all_or_nothing(store: Store) {
    let a = accounts(&store, &["anna", "boris"], "default").await;
    let (anna, boris) = (a[0].id, a[1].id);
    let t = targets(&store, &["@target_01", "@target_02"]).await;
    let now = t0();
    let (hold, rest) = (now + mins(2), now + mins(7));

    let Take::Taken { epoch } = store.take_for_join(anna, t[0].id, now, hold, rest).await.unwrap()
    else {
        panic!("anna and target_01 are free");
    };
    let (acc, tgt) = (account(&store, anna).await, target(&store, t[0].id).await);
    assert_eq!((acc.lease_epoch, acc.next_allowed_action_time), (epoch, Some(rest)));
    assert_eq!(
        (tgt.status, tgt.claimed_account_id, tgt.claim_epoch),
        (TargetStatus::Joining, Some(anna), Some(epoch))
    );

    // A target claimed by another account: boris is left exactly as he was.
    let before = account(&store, boris).await;
    assert_eq!(
        store.take_for_join(boris, t[0].id, now, hold, rest).await.unwrap(),
        Take::TargetGone
    );
    assert_eq!(account(&store, boris).await, before, "no epoch bump, no hold, no rest");
    // A held (and resting) account: the target stays unclaimed.
    assert_eq!(
        store.take_for_join(anna, t[1].id, now, hold, rest).await.unwrap(),
        Take::AccountBusy
    );
    assert_eq!(target(&store, t[1].id).await.status, TargetStatus::New);
    // An account that needs an operator is never taken.
    store.set_account_status(boris, AccountStatus::Banned, None, None).await.unwrap();
    assert_eq!(
        store.take_for_join(boris, t[1].id, now, hold, rest).await.unwrap(),
        Take::AccountBusy
    );
    // The same account takes its own in-doubt target again under a new epoch.
    let later = rest + mins(1);
    let again = store.take_for_join(anna, t[0].id, later, later + mins(2), later).await.unwrap();
    assert_eq!(again, Take::Taken { epoch: epoch + 1 });
    assert_eq!(target(&store, t[0].id).await.claim_epoch, Some(epoch + 1));
}

async fn pick_accounts_draws_from_the_least_recently_active_group(store: Store) {
    let names: Vec<String> = (0..12).map(|i| format!("acc_{i:02}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let a = accounts(&store, &refs, "default").await;
    // acc_00 was active longest ago, acc_11 most recently.
    let links: Vec<String> = (0..12).map(|i| format!("@group_{i:02}")).collect();
    let links: Vec<&str> = links.iter().map(String::as_str).collect();
    let t = targets(&store, &links).await;
    for (i, acc) in a.iter().enumerate() {
        join(&store, acc.id, t[i].id, t0() - Duration::hours(2) + mins(i as i64)).await;
    }
    let oldest4: HashSet<i64> = a[..4].iter().map(|x| x.id).collect();
    let mut firsts = HashSet::new();
    for _ in 0..60 {
        let picked = store.pick_accounts("default", t0(), &[], &LIMITS, 4, 2).await.unwrap();
        assert_eq!(picked.len(), 2);
        for p in &picked {
            assert!(oldest4.contains(&p.id), "{} is not among the 4 least recently active", p.id);
        }
        firsts.insert(picked[0].id);
    }
    assert!(firsts.len() > 1, "concurrent jobs must not all start with the same account");
    // Groups are taken in order: with the first group excluded, the second one is drawn from.
    let excluded: Vec<i64> = oldest4.iter().copied().collect();
    let picked = store.pick_accounts("default", t0(), &excluded, &LIMITS, 4, 4).await.unwrap();
    let second: HashSet<i64> = a[4..8].iter().map(|x| x.id).collect();
    assert_eq!(picked.iter().map(|x| x.id).collect::<HashSet<_>>(), second);
}
