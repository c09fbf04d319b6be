//! `accounts.bound_targets`, the count of bound targets the pick reads instead of counting an
//! account's targets: every binding keeps it exact, on both backends, the invariants checker
//! reports any drift, and the migration's backfill recounts it.

use chrono::Duration;
use migration::{Migrator, MigratorTrait};
use sea_orm::ConnectionTrait;
use smart_joiner::domain::{
    AccountChange, Decision, JoinOutcome, Next, PeerInfo, RequestKind, TargetChange,
};
use smart_joiner::ops::invariants;
use smart_joiner::store::{Applied, Attempt, Limits, Store, StoreError};

use crate::on_both_backends;
use crate::store::{accounts, join, t0, targets};

on_both_backends!(
    the_count_of_bound_targets_follows_every_binding,
    the_checker_reports_a_drifted_count_and_the_migration_recounts_it,
);

const LIMITS: Limits = Limits { daily_join_cap: 20, channel_limit: 500 };

async fn bound(store: &Store, account_id: i64) -> i64 {
    store.account(account_id).await.unwrap().unwrap().bound_targets
}

/// Takes the account and claims the target, as a join does; returns the epoch.
async fn take(store: &Store, account_id: i64, target_id: i64) -> i64 {
    let epoch = store.bump_lease_epoch(account_id).await.unwrap();
    assert!(store.claim_target(target_id, account_id, epoch, t0()).await.unwrap(), "claim");
    epoch
}

fn attempt() -> Attempt {
    Attempt { started_at: t0() - Duration::seconds(2), finished_at: t0(), worker: "w".to_owned() }
}

fn decision(target: TargetChange) -> Decision {
    Decision { target, account: AccountChange::Pace { until: t0() }, next: Next::Done }
}

fn joined() -> TargetChange {
    TargetChange::Joined { joined_at: t0(), warmup_ends_at: t0() + Duration::hours(1) }
}

async fn apply(
    store: &Store,
    account_id: i64,
    target_id: i64,
    epoch: i64,
    outcome: JoinOutcome,
    change: TargetChange,
) -> Result<Applied, StoreError> {
    store
        .apply_decision(target_id, account_id, epoch, &outcome, &decision(change), &attempt())
        .await
}

async fn the_count_of_bound_targets_follows_every_binding(store: Store) {
    let a = accounts(&store, &["anna", "boris"], "default").await;
    let (anna, boris) = (a[0].id, a[1].id);
    let t =
        targets(&store, &["@target_01", "@target_02", "@target_03", "@target_04", "@target_05"])
            .await;
    assert_eq!((bound(&store, anna).await, bound(&store, boris).await), (0, 0));

    // Joined, and a join request sent: each binds and counts.
    join(&store, anna, t[0].id, t0()).await;
    let epoch = take(&store, anna, t[1].id).await;
    let requested = JoinOutcome::Requested(RequestKind::JoinRequest);
    let applied = apply(&store, anna, t[1].id, epoch, requested, TargetChange::Requested).await;
    assert_eq!(applied.unwrap(), Applied::Applied);
    assert_eq!((bound(&store, anna).await, bound(&store, boris).await), (2, 0));

    // Already a participant of a group bound to nobody: bound now, counted.
    let epoch = take(&store, boris, t[2].id).await;
    let already = JoinOutcome::Joined { already: true, peer: PeerInfo::default() };
    let applied = apply(&store, boris, t[2].id, epoch, already.clone(), joined()).await;
    assert_eq!(applied.unwrap(), Applied::Applied);
    assert_eq!(bound(&store, boris).await, 1);

    // A FloodWait binds nothing.
    let epoch = take(&store, anna, t[3].id).await;
    let flood = JoinOutcome::FloodWait { seconds: 60 };
    let requeue = TargetChange::Requeue { run_at: t0() };
    assert_eq!(
        apply(&store, anna, t[3].id, epoch, flood, requeue).await.unwrap(),
        Applied::Applied
    );
    assert_eq!(bound(&store, anna).await, 2);

    // A stale epoch writes nothing, the count included.
    let epoch = take(&store, boris, t[4].id).await;
    store.bump_lease_epoch(boris).await.unwrap();
    let fresh = JoinOutcome::Joined { already: false, peer: PeerInfo::default() };
    let stale = apply(&store, boris, t[4].id, epoch, fresh.clone(), joined()).await;
    assert_eq!(stale.unwrap(), Applied::Stale);
    assert_eq!(bound(&store, boris).await, 1);

    // The account a target is bound to joins it again (already a participant): bound once,
    // counted once.
    let db = store.connection();
    let requeue_first = format!(
        "UPDATE targets SET claimed_account_id = NULL, claim_epoch = NULL, status = 'queued' \
         WHERE id = {}",
        t[0].id
    );
    db.execute_unprepared(&requeue_first).await.unwrap();
    let epoch = take(&store, anna, t[0].id).await;
    let applied = apply(&store, anna, t[0].id, epoch, already.clone(), joined()).await;
    assert_eq!(applied.unwrap(), Applied::Applied);
    assert_eq!(bound(&store, anna).await, 2);

    // A binding to a second account is refused as corrupt and counts nothing.
    let epoch = store.bump_lease_epoch(boris).await.unwrap();
    db.execute_unprepared(&format!(
        "UPDATE targets SET status = 'joining', claimed_account_id = {boris}, claim_epoch = {epoch} \
         WHERE id = {}",
        t[0].id
    ))
    .await
    .unwrap();
    let refused = apply(&store, boris, t[0].id, epoch, fresh, joined()).await.unwrap_err();
    assert!(matches!(refused, StoreError::Corrupt { .. }), "{refused}");
    assert_eq!((bound(&store, anna).await, bound(&store, boris).await), (2, 1));

    let report = invariants::check(&store, std::time::Duration::ZERO, &LIMITS).await.unwrap();
    assert!(report.bound_counts.is_empty(), "{:?}", report.bound_counts);
}

async fn the_checker_reports_a_drifted_count_and_the_migration_recounts_it(store: Store) {
    let a = accounts(&store, &["anna", "boris", "carl"], "default").await;
    let (anna, boris, carl) = (a[0].id, a[1].id, a[2].id);
    let t = targets(&store, &["@target_01", "@target_02", "@target_03"]).await;
    join(&store, anna, t[0].id, t0()).await;
    join(&store, anna, t[1].id, t0() + Duration::minutes(5)).await;
    join(&store, boris, t[2].id, t0()).await;
    let report = invariants::check(&store, std::time::Duration::ZERO, &LIMITS).await.unwrap();
    assert!(report.bound_counts.is_empty(), "{:?}", report.bound_counts);

    // Drift made by hand: boris counts one too few, carl one it does not have.
    let db = store.connection();
    db.execute_unprepared(&format!("UPDATE accounts SET bound_targets = 0 WHERE id = {boris}"))
        .await
        .unwrap();
    db.execute_unprepared(&format!("UPDATE accounts SET bound_targets = 1 WHERE id = {carl}"))
        .await
        .unwrap();
    let report = invariants::check(&store, std::time::Duration::ZERO, &LIMITS).await.unwrap();
    assert_eq!(report.bound_counts.len(), 2, "{:?}", report.bound_counts);
    assert!(report.bound_counts[0].starts_with(&format!("account {boris} ")), "{report:?}");
    assert!(report.bound_counts[1].starts_with(&format!("account {carl} ")), "{report:?}");
    assert!(!report.is_clean());
    assert!(report.to_string().contains("bound counts 2"), "{report}");

    // The drifted count misleads the pick: carl, at a channel limit of 1, is left out.
    let one = Limits { daily_join_cap: 20, channel_limit: 1 };
    let picked = store.eligible_accounts("default", t0(), &[], &one, 10).await.unwrap();
    let names: Vec<&str> = picked.iter().map(|a| a.session_name.as_str()).collect();
    assert_eq!(names, ["boris"], "the pick reads the counts on the rows");

    // Rolled back and applied again, the migration counts every account's targets afresh.
    let newer = Migrator::migrations()
        .iter()
        .rev()
        .position(|m| m.name() == "m20261206_000002_bound_targets")
        .expect("the migration of bound_targets is registered");
    Migrator::down(db, Some(newer as u32 + 1)).await.unwrap();
    let gone = db.execute_unprepared("SELECT bound_targets FROM accounts").await;
    assert!(gone.is_err(), "down drops the column");
    Migrator::up(db, None).await.unwrap();
    let mut counts = Vec::new();
    for id in [anna, boris, carl] {
        counts.push(bound(&store, id).await);
    }
    assert_eq!(counts, [2, 1, 0]);
    let report = invariants::check(&store, std::time::Duration::ZERO, &LIMITS).await.unwrap();
    assert!(report.bound_counts.is_empty(), "{:?}", report.bound_counts);
}
