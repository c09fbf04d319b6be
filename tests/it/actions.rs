//! Operator actions (pause, resume, retry, release, import) on both backends: each changes the
//! row it names only when allowed, writes its audit row with it, and keeps the invariants.

use chrono::{DateTime, Duration, TimeZone, Utc};
use smart_joiner::domain::{
    AccountChange, AccountStatus, Decision, JoinOutcome, Next, PeerInfo, TargetChange, TargetLink,
    TargetStatus,
};
use smart_joiner::store::{ActionResult, Applied, Attempt, Limits, Store, Take, TargetFilter};

use crate::on_both_backends;

on_both_backends!(
    a_paused_account_is_never_picked_and_resume_brings_it_back,
    a_pause_mid_join_lets_the_join_finish_and_outlives_its_decision,
    a_pause_never_replaces_a_worse_status_and_resume_lifts_only_a_pause,
    a_ban_during_a_pause_replaces_it,
    retry_moves_only_an_error_target_back_to_new,
    release_frees_an_in_doubt_pin_only_while_its_account_is_not_held,
    an_audited_import_is_one_write_with_its_audit_row,
    console_reads_filter_and_count,
    a_paused_accounts_in_doubt_pin_waits_for_its_resume,
);

const LIMITS: Limits = Limits { daily_join_cap: 20, channel_limit: 500 };

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 12, 10, 0, 0).unwrap()
}

fn link(s: &str) -> TargetLink {
    TargetLink::parse(s).unwrap()
}

async fn setup(store: &Store, accounts: &[&str], groups: &[&str]) -> (Vec<i64>, Vec<i64>) {
    let names: Vec<String> = accounts.iter().map(|n| (*n).to_owned()).collect();
    store.sync_accounts(&names, "default").await.unwrap();
    let links: Vec<TargetLink> = groups.iter().map(|g| link(g)).collect();
    store.import_targets(&links, "cars").await.unwrap();
    let all = store.accounts(None).await.unwrap();
    let a =
        accounts.iter().map(|n| all.iter().find(|a| a.session_name == *n).unwrap().id).collect();
    let ts = store.targets(None, None).await.unwrap();
    let t = links.iter().map(|l| ts.iter().find(|t| &t.link == l).unwrap().id).collect();
    (a, t)
}

async fn status(store: &Store, id: i64) -> AccountStatus {
    store.account(id).await.unwrap().unwrap().status
}

async fn picked(store: &Store, now: DateTime<Utc>) -> Vec<i64> {
    let picked = store.pick_accounts("default", now, &[], &LIMITS, 10, 10).await.unwrap();
    let mut ids: Vec<i64> = picked.iter().map(|a| a.id).collect();
    ids.sort_unstable();
    ids
}

fn joined(at: DateTime<Utc>) -> (JoinOutcome, Decision) {
    (
        JoinOutcome::Joined { already: false, peer: PeerInfo::default() },
        Decision {
            target: TargetChange::Joined {
                joined_at: at,
                warmup_ends_at: at + Duration::hours(24),
            },
            account: AccountChange::Pace { until: at + Duration::minutes(7) },
            next: Next::Done,
        },
    )
}

fn attempt(at: DateTime<Utc>) -> Attempt {
    Attempt { started_at: at - Duration::seconds(2), finished_at: at, worker: "w1".to_owned() }
}

async fn a_paused_account_is_never_picked_and_resume_brings_it_back(store: Store) {
    let (a, t) = setup(&store, &["anna", "boris"], &["@bazar_one"]).await;
    assert_eq!(picked(&store, t0()).await, a);

    let r = store.pause_account(a[0], "console:admin", Some("proxy moves"), t0()).await.unwrap();
    assert_eq!(r, ActionResult::Done);
    let anna = store.account(a[0]).await.unwrap().unwrap();
    assert_eq!(anna.status, AccountStatus::Paused);
    assert_eq!(anna.status_reason.as_deref(), Some("paused by console:admin: proxy moves"));
    assert_eq!(picked(&store, t0()).await, vec![a[1]]);
    let eligible = store.eligible_accounts("default", t0(), &[], &LIMITS, 10).await.unwrap();
    assert_eq!(eligible.iter().map(|a| a.id).collect::<Vec<_>>(), vec![a[1]]);
    assert_eq!(
        store.take_for_join(a[0], t[0], t0(), t0(), t0()).await.unwrap(),
        Take::AccountBusy,
        "the take re-checks the status"
    );

    let again = store.pause_account(a[0], "cli:ops", None, t0()).await.unwrap();
    assert!(matches!(again, ActionResult::Refused(ref why) if why.contains("already paused")));

    assert_eq!(store.resume_account(a[0], "cli:ops", t0()).await.unwrap(), ActionResult::Done);
    assert_eq!(status(&store, a[0]).await, AccountStatus::Active);
    assert_eq!(store.account(a[0]).await.unwrap().unwrap().status_reason, None);
    assert_eq!(picked(&store, t0()).await, a);

    let log = store.audit_log(None, 10).await.unwrap();
    let rows: Vec<(&str, &str, &str)> =
        log.iter().map(|e| (e.actor.as_str(), e.action.as_str(), e.subject.as_str())).collect();
    let subject = format!("account:{}", a[0]);
    assert_eq!(
        rows,
        vec![("cli:ops", "resume", subject.as_str()), ("console:admin", "pause", subject.as_str())],
        "newest first; the refused pause left no row"
    );
    assert_eq!(log[1].detail.as_deref(), Some("proxy moves"));
    assert_eq!(log[1].at, t0());
}

async fn a_pause_mid_join_lets_the_join_finish_and_outlives_its_decision(store: Store) {
    let (a, t) = setup(&store, &["anna"], &["@bazar"]).await;
    let hold = t0() + Duration::minutes(1);
    let Take::Taken { epoch } =
        store.take_for_join(a[0], t[0], t0(), hold, t0() + Duration::minutes(5)).await.unwrap()
    else {
        panic!("the take must succeed");
    };
    assert_eq!(
        store.pause_account(a[0], "console:admin", None, t0()).await.unwrap(),
        ActionResult::Done
    );
    // The hold is the attempt's own: the gate before the join still opens.
    assert!(store.gate_join(a[0], epoch, t0(), hold, t0() + Duration::minutes(5)).await.unwrap());
    let (outcome, decision) = joined(t0() + Duration::seconds(3));
    let applied = store
        .apply_decision(
            t[0],
            a[0],
            epoch,
            &outcome,
            &decision,
            &attempt(t0() + Duration::seconds(3)),
        )
        .await
        .unwrap();
    assert_eq!(applied, Applied::Applied, "the join in flight is recorded");
    let target = store.target(t[0]).await.unwrap().unwrap();
    assert_eq!((target.status, target.assigned_account_id), (TargetStatus::Joined, Some(a[0])));
    let anna = store.account(a[0]).await.unwrap().unwrap();
    assert_eq!(anna.status, AccountStatus::Paused, "the decision leaves the pause");
    assert_eq!(anna.status_reason.as_deref(), Some("paused by console:admin"));
    assert_eq!(
        anna.next_allowed_action_time,
        Some(t0() + Duration::seconds(3) + Duration::minutes(7)),
        "the pacing is written all the same"
    );
    assert!(picked(&store, t0() + Duration::hours(1)).await.is_empty());

    // A FloodWait arriving for a paused account keeps it paused and lengthens its rest; a
    // resume then leaves the rest running.
    let until = t0() + Duration::hours(2);
    let wait = AccountChange::Wait {
        status: AccountStatus::FloodWait,
        until,
        reason: "FLOOD_WAIT 7200".to_owned(),
    };
    store.record_account_verdict(a[0], &wait, t0()).await.unwrap();
    assert_eq!(status(&store, a[0]).await, AccountStatus::Paused);
    assert_eq!(store.resume_account(a[0], "cli:ops", t0()).await.unwrap(), ActionResult::Done);
    let anna = store.account(a[0]).await.unwrap().unwrap();
    assert_eq!((anna.status, anna.next_allowed_action_time), (AccountStatus::Active, Some(until)));
    assert!(picked(&store, t0() + Duration::hours(1)).await.is_empty(), "the wait still runs");
    assert_eq!(picked(&store, until).await, a);
}

async fn a_pause_never_replaces_a_worse_status_and_resume_lifts_only_a_pause(store: Store) {
    let (a, _) = setup(&store, &["anna", "boris", "carl"], &[]).await;
    store
        .set_account_status(a[0], AccountStatus::Banned, Some("USER_DEACTIVATED_BAN"), None)
        .await
        .unwrap();
    let until = t0() + Duration::minutes(5);
    store
        .set_account_status(a[1], AccountStatus::FloodWait, Some("FLOOD_WAIT 300"), Some(until))
        .await
        .unwrap();

    let r = store.pause_account(a[0], "console:admin", None, t0()).await.unwrap();
    assert!(matches!(r, ActionResult::Refused(ref why) if why.contains("banned")), "{r:?}");
    assert_eq!(status(&store, a[0]).await, AccountStatus::Banned);
    let b = store.account(a[0]).await.unwrap().unwrap();
    assert_eq!(b.status_reason.as_deref(), Some("USER_DEACTIVATED_BAN"));

    assert_eq!(
        store.pause_account(a[1], "console:admin", None, t0()).await.unwrap(),
        ActionResult::Done
    );
    let boris = store.account(a[1]).await.unwrap().unwrap();
    assert_eq!(
        (boris.status, boris.next_allowed_action_time),
        (AccountStatus::Paused, Some(until))
    );

    for id in [a[0], a[2]] {
        let r = store.resume_account(id, "cli:ops", t0()).await.unwrap();
        assert!(matches!(r, ActionResult::Refused(ref why) if why.contains("not paused")), "{r:?}");
    }
    assert_eq!(status(&store, a[0]).await, AccountStatus::Banned);
    let unknown = store.pause_account(9999, "cli:ops", None, t0()).await.unwrap();
    assert!(matches!(unknown, ActionResult::Refused(ref why) if why.contains("does not exist")));
    assert_eq!(store.audit_log(None, 10).await.unwrap().len(), 1, "only the one pause");
}

async fn a_ban_during_a_pause_replaces_it(store: Store) {
    let (a, _) = setup(&store, &["anna"], &[]).await;
    store.pause_account(a[0], "cli:ops", None, t0()).await.unwrap();
    let ban = AccountChange::Disable {
        status: AccountStatus::Banned,
        reason: "USER_DEACTIVATED_BAN".to_owned(),
    };
    store.record_account_verdict(a[0], &ban, t0()).await.unwrap();
    assert_eq!(status(&store, a[0]).await, AccountStatus::Banned);
    let r = store.resume_account(a[0], "cli:ops", t0()).await.unwrap();
    assert!(!r.is_done(), "a resume never hides a ban");
}

async fn retry_moves_only_an_error_target_back_to_new(store: Store) {
    let (a, t) = setup(&store, &["anna"], &["@dead_group", "@alive_group"]).await;
    let epoch = store.bump_lease_epoch(a[0]).await.unwrap();
    assert!(store.claim_target(t[0], a[0], epoch, t0()).await.unwrap());
    let fail = Decision {
        target: TargetChange::Fail {
            status: TargetStatus::Error,
            code: "USERNAME_NOT_OCCUPIED".to_owned(),
            message: "no such group".to_owned(),
        },
        account: AccountChange::Pace { until: t0() },
        next: Next::Done,
    };
    let outcome = JoinOutcome::TargetInvalid {
        code: "USERNAME_NOT_OCCUPIED".to_owned(),
        message: "no such group".to_owned(),
    };
    store.apply_decision(t[0], a[0], epoch, &outcome, &fail, &attempt(t0())).await.unwrap();
    assert_eq!(store.target(t[0]).await.unwrap().unwrap().status, TargetStatus::Error);

    let r = store.retry_target(t[1], "console:admin", t0()).await.unwrap();
    assert!(matches!(r, ActionResult::Refused(ref why) if why.contains("is new")), "{r:?}");
    assert_eq!(store.retry_target(t[0], "console:admin", t0()).await.unwrap(), ActionResult::Done);
    let dead = store.target(t[0]).await.unwrap().unwrap();
    assert_eq!((dead.status, dead.error_code, dead.error_message), (TargetStatus::New, None, None));
    assert_eq!(dead.attempts, 1, "its history stays");
    let log = store.audit_log(Some(&format!("target:{}", t[0])), 10).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].detail.as_deref(), Some("was error USERNAME_NOT_OCCUPIED"));
    let again = store.retry_target(t[0], "console:admin", t0()).await.unwrap();
    assert!(!again.is_done());
}

async fn release_frees_an_in_doubt_pin_only_while_its_account_is_not_held(store: Store) {
    let (a, t) = setup(&store, &["anna"], &["@doubt"]).await;
    let hold = t0() + Duration::minutes(1);
    let Take::Taken { epoch } =
        store.take_for_join(a[0], t[0], t0(), hold, t0() + Duration::minutes(5)).await.unwrap()
    else {
        panic!("the take must succeed");
    };
    let r = store.release_pin(t[0], "console:admin", t0()).await.unwrap();
    assert!(matches!(r, ActionResult::Refused(ref why) if why.contains("held")), "{r:?}");

    let in_doubt = Decision {
        target: TargetChange::KeepClaim { run_at: t0() + Duration::minutes(5) },
        account: AccountChange::Pace { until: t0() + Duration::minutes(5) },
        next: Next::Done,
    };
    let outcome = JoinOutcome::InDoubt { reason: "no answer".to_owned() };
    let at = t0() + Duration::seconds(30);
    store.apply_decision(t[0], a[0], epoch, &outcome, &in_doubt, &attempt(at)).await.unwrap();
    let pinned = store.target(t[0]).await.unwrap().unwrap();
    assert_eq!((pinned.status, pinned.claimed_account_id), (TargetStatus::Joining, Some(a[0])));

    assert_eq!(store.release_pin(t[0], "console:admin", at).await.unwrap(), ActionResult::Done);
    let freed = store.target(t[0]).await.unwrap().unwrap();
    assert_eq!(
        (freed.status, freed.claimed_account_id, freed.claim_epoch, freed.in_doubt_tries),
        (TargetStatus::New, None, None, 0)
    );
    assert_eq!(freed.assigned_account_id, None, "the binding is untouched (there was none)");
    let log = store.audit_log(None, 10).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!((log[0].action.as_str(), log[0].actor.as_str()), ("release", "console:admin"));
    let r = store.release_pin(t[0], "console:admin", at).await.unwrap();
    assert!(matches!(r, ActionResult::Refused(ref why) if why.contains("not pinned")), "{r:?}");
}

async fn an_audited_import_is_one_write_with_its_audit_row(store: Store) {
    let links = vec![link("@group_one"), link("@group_two"), link("@group_one")];
    let r = store.import_targets_audited(&links, "cars", "console:admin", t0()).await.unwrap();
    assert_eq!((r.inserted, r.duplicates), (2, 1));
    let log = store.audit_log(None, 10).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(
        (log[0].action.as_str(), log[0].subject.as_str(), log[0].detail.as_deref()),
        ("import", "niche:cars", Some("2 accepted, 1 duplicates"))
    );
    assert_eq!(store.targets(Some("cars"), None).await.unwrap().len(), 2);
}

async fn console_reads_filter_and_count(store: Store) {
    let (a, t) = setup(&store, &["anna"], &["@cars_ua", "@cars_pl", "@bikes", "@vans_kyiv"]).await;
    let epoch = store.bump_lease_epoch(a[0]).await.unwrap();
    assert!(store.claim_target(t[0], a[0], epoch, t0()).await.unwrap());
    let (outcome, decision) = joined(t0());
    store.apply_decision(t[0], a[0], epoch, &outcome, &decision, &attempt(t0())).await.unwrap();

    let search = |s: &str| TargetFilter { search: Some(s.to_owned()), ..Default::default() };
    let found = store.search_targets(&search("CARS_"), 10).await.unwrap();
    assert_eq!(found.iter().map(|t| t.id).collect::<Vec<_>>(), vec![t[1], t[0]]);
    let joined_only = TargetFilter { status: Some(TargetStatus::Joined), ..Default::default() };
    assert_eq!(store.search_targets(&joined_only, 10).await.unwrap().len(), 1);
    assert_eq!(store.search_targets(&search("nothing"), 10).await.unwrap().len(), 0);

    assert_eq!(store.targets_of_account(a[0]).await.unwrap().len(), 1);
    let recent = store.recent_attempts(None, Some(a[0]), 5).await.unwrap();
    assert_eq!(recent.len(), 1);
    assert_eq!(store.last_attempt_at().await.unwrap().get(&a[0]), Some(&t0()));
    // Two more attempts: a FloodWait in the same hour, a join an hour later.
    let (epoch, at) = (store.bump_lease_epoch(a[0]).await.unwrap(), t0() + Duration::minutes(20));
    assert!(store.claim_target(t[1], a[0], epoch, at).await.unwrap());
    let flood = Decision {
        target: TargetChange::Requeue { run_at: at + Duration::minutes(5) },
        account: AccountChange::Pace { until: at },
        next: Next::Done,
    };
    let outcome = JoinOutcome::FloodWait { seconds: 300 };
    store.apply_decision(t[1], a[0], epoch, &outcome, &flood, &attempt(at)).await.unwrap();
    let (epoch, at) = (store.bump_lease_epoch(a[0]).await.unwrap(), t0() + Duration::minutes(70));
    assert!(store.claim_target(t[3], a[0], epoch, at).await.unwrap());
    let (outcome, decision) = joined(at);
    store.apply_decision(t[3], a[0], epoch, &outcome, &decision, &attempt(at)).await.unwrap();
    let hours = store.attempts_per_hour(t0() - Duration::hours(1), t0() + Duration::hours(3)).await;
    let hours: Vec<_> = hours.unwrap().into_iter().map(|h| (h.hour, h.outcome, h.count)).collect();
    let h = |n: i64| t0() + Duration::hours(n);
    assert_eq!(
        hours,
        [
            (h(0), "flood_wait".to_owned(), 1),
            (h(0), "joined".to_owned(), 1),
            (h(1), "joined".to_owned(), 1)
        ]
    );
    let since_first = store.attempts_per_hour(t0(), t0() + Duration::hours(3)).await.unwrap();
    assert_eq!(since_first.iter().map(|h| h.count).sum::<u64>(), 2, "(since, now] excludes since");

    store.requeue_target(t[1], t0() + Duration::hours(1)).await.unwrap();
    store.requeue_target(t[2], t0() - Duration::hours(1)).await.unwrap();
    let q = store.queued_counts(t0()).await.unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!((q[0].niche.as_str(), q[0].due, q[0].scheduled), ("cars", 1, 1));
    assert_eq!(store.niches().await.unwrap(), vec!["cars".to_owned()]);
    let links = store.target_links(&[t[2]]).await.unwrap();
    assert_eq!(links.get(&t[2]).map(String::as_str), Some("@bikes"));
}

async fn a_paused_accounts_in_doubt_pin_waits_for_its_resume(store: Store) {
    use std::collections::HashMap;
    use std::sync::Arc;

    use smart_joiner::domain::JoinTask;
    use smart_joiner::join::{ExecutionOutcome, Settled};
    use smart_joiner::telegram::fake::{Script, ScriptedTelegram};

    use crate::harness::{JoinEnv, links, seed};

    let targets = links("paused_pin", 1);
    let accounts = seed(&store, 2, &targets, "cars").await;
    let answers = ["timeout", "joined"].iter().map(|a| a.parse().unwrap()).collect();
    let script =
        Script { targets: HashMap::from([(targets[0].to_string(), answers)]), ..Script::default() };
    let fake = ScriptedTelegram::new(script);
    let svc = JoinEnv::new(&store, Arc::new(fake.clone()), accounts).service();
    let queued = store.queue_new_targets("cars", 1, Utc::now()).await.unwrap();
    let id = queued[0].id;
    let job = JoinTask::new(id, "default").into_current();
    let ExecutionOutcome::Reschedule { job, .. } = svc.execute(&job).await.unwrap() else {
        panic!("in doubt: retried");
    };
    let pinned = store.target(id).await.unwrap().unwrap().claimed_account_id.expect("pinned");
    let r = store.pause_account(pinned, "cli:ops", None, Utc::now()).await.unwrap();
    assert_eq!(r, ActionResult::Done);

    // Paused: the retry neither uses it nor moves the pin to the other account.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(svc.execute(&job).await.unwrap(), ExecutionOutcome::Done(Settled::AccountNotHere));
    let t = store.target(id).await.unwrap().unwrap();
    assert_eq!((t.status, t.claimed_account_id), (TargetStatus::Joining, Some(pinned)));
    assert!(t.next_run_at.is_some_and(|at| at > Utc::now()), "looked at again later");
    assert_eq!(store.attempts(Some(id), None).await.unwrap().len(), 1, "no attempt while paused");

    // Resumed: the same account finishes the join and the group is bound to it.
    store.resume_account(pinned, "cli:ops", Utc::now()).await.unwrap();
    let mut job = job;
    let mut outcome = None;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        match svc.execute(&job).await.unwrap() {
            ExecutionOutcome::Reschedule { job: next, .. } => job = next,
            done => {
                outcome = Some(done);
                break;
            }
        }
    }
    let outcome = outcome.expect("the resumed account finishes within 50 tries");
    assert_eq!(outcome, ExecutionOutcome::Done(Settled::Finished(TargetStatus::Joined)));
    let t = store.target(id).await.unwrap().unwrap();
    assert_eq!(t.assigned_account_id, Some(pinned));
    assert_eq!(fake.members(&targets[0].to_string()).len(), 1);
}
