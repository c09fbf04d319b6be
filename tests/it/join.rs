//! The join procedure end to end in one process: real database, scripted Telegram.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use smart_joiner::accounts_config::AccountConfig;
use smart_joiner::domain::{AccountStatus, JoinOutcome, JoinTask, TargetLink, TargetStatus};
use smart_joiner::join::{ExecutionOutcome, Settled};
use smart_joiner::lease::{AccountLocks, LocalLocks};
use smart_joiner::modes::batch::SmartJoiner;
use smart_joiner::ops::invariants;
use smart_joiner::store::Store;
use smart_joiner::telegram::fake::{Answer, ConnectAnswer, Script, ScriptedTelegram, check_events};
use smart_joiner::telegram::{ConnectError, Telegram, TelegramSession};

use crate::harness::{JoinEnv, LIMITS, fast_pacing, links, seed};
use crate::on_both_backends;

on_both_backends!(
    a_mixed_batch_settles_with_every_invariant_kept,
    an_in_doubt_join_is_retried_by_the_same_account_and_bound_to_it,
    a_write_under_a_stale_epoch_changes_nothing_and_the_retry_recovers,
    a_leased_account_is_skipped_for_the_next_one,
    a_target_no_account_can_ever_take_goes_back_to_new,
    when_every_account_rests_the_job_waits_for_the_first_to_wake,
    an_account_without_a_valid_entry_here_is_not_used_and_keeps_its_status,
    a_pinned_retry_through_an_outage_keeps_its_pin_and_its_tries,
    a_worker_that_dies_after_sending_a_join_still_holds_the_account_back,
    a_flood_wait_answered_while_the_lease_ran_out_still_cools_the_account_down,
    a_worker_frozen_until_its_hold_ran_out_sends_no_join,
    a_pinned_target_whose_account_is_mid_join_elsewhere_looks_again_shortly,
    workers_whose_clocks_are_30_s_off_keep_flood_waits_and_pauses,
);

fn answers(list: &[&str]) -> Vec<Answer> {
    list.iter().map(|a| a.parse().unwrap()).collect()
}

async fn status_of(store: &Store, link: &TargetLink) -> smart_joiner::store::Target {
    store
        .targets(None, None)
        .await
        .unwrap()
        .into_iter()
        .find(|t| &t.link == link)
        .expect("target exists")
}

async fn account_named(store: &Store, name: &str) -> smart_joiner::store::Account {
    store
        .accounts(None)
        .await
        .unwrap()
        .into_iter()
        .find(|a| a.session_name == name)
        .expect("account")
}

async fn a_mixed_batch_settles_with_every_invariant_kept(store: Store) {
    let targets = links("mixed", 40);
    let accounts = seed(&store, 6, &targets, "cars").await;
    let key = |i: usize| targets[i].to_string();
    let script = Script {
        targets: HashMap::from([
            (key(0), answers(&["flood_wait:1", "joined"])),
            (key(1), answers(&["flood_wait:700", "joined"])),
            (key(2), answers(&["join_request"])),
            (key(3), answers(&["guard_bot"])),
            (key(4), answers(&["invalid:INVITE_HASH_EXPIRED"])),
            (key(5), answers(&["banned_in_channel"])),
            (key(6), answers(&["joined_then_timeout", "joined"])),
            (key(7), answers(&["timeout"])),
            (key(8), answers(&["slowmode_wait:1", "joined"])),
            (key(9), answers(&["peer_flood", "joined"])),
        ]),
        accounts: HashMap::from([("acc_04".to_owned(), answers(&["frozen"]))]),
        connect: HashMap::from([("acc_05".to_owned(), ConnectAnswer::Unauthorized)]),
        ..Script::default()
    };
    let fake = ScriptedTelegram::new(script);
    let svc = JoinEnv::new(&store, Arc::new(fake.clone()), accounts).service();
    let report = SmartJoiner::new(svc, "default", Duration::from_secs(30))
        .run_batch("cars", 40)
        .await
        .unwrap();
    assert_eq!(report.taken, 40);

    let inv = invariants::check(&store, fast_pacing().join_pause_min, &LIMITS).await.unwrap();
    assert!(inv.is_clean(), "{inv}: {inv:#?}");
    let seen = check_events(&fake.events(), fast_pacing().join_pause_min);
    assert!(seen.is_empty(), "{seen:#?}");

    let expect = |i: usize, status: TargetStatus| {
        let store = store.clone();
        let link = targets[i].clone();
        async move {
            let t = status_of(&store, &link).await;
            assert_eq!(t.status, status, "{link}: {t:?}");
            t
        }
    };
    for i in [0, 1, 6, 8, 9] {
        expect(i, TargetStatus::Joined).await;
    }
    assert!(expect(2, TargetStatus::Requested).await.assigned_account_id.is_some());
    expect(3, TargetStatus::Requested).await;
    assert_eq!(
        expect(4, TargetStatus::Error).await.error_code.as_deref(),
        Some("INVITE_HASH_EXPIRED")
    );
    expect(5, TargetStatus::Banned).await;
    assert_eq!(expect(7, TargetStatus::Error).await.error_code.as_deref(), Some("IN_DOUBT"));
    for i in 10..40 {
        let t = expect(i, TargetStatus::Joined).await;
        assert!(t.warmup_ends_at.unwrap() > Utc::now() + chrono::Duration::hours(23));
    }
    assert_eq!(account_named(&store, "acc_04").await.status, AccountStatus::Frozen);
    assert_eq!(account_named(&store, "acc_05").await.status, AccountStatus::Unauthorized);
    let cooled: Vec<_> = store
        .accounts(None)
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.status == AccountStatus::Cooldown)
        .collect();
    assert_eq!(cooled.len(), 2, "one long FloodWait and one PEER_FLOOD: {cooled:?}");
    // Every joined group has exactly one member on Telegram's side too.
    for t in &targets {
        assert!(fake.members(&t.to_string()).len() <= 1, "{t}");
    }
}

async fn an_in_doubt_join_is_retried_by_the_same_account_and_bound_to_it(store: Store) {
    let targets = links("doubt", 1);
    let accounts = seed(&store, 3, &targets, "cars").await;
    let script = Script {
        targets: HashMap::from([(targets[0].to_string(), answers(&["joined_then_timeout"]))]),
        ..Script::default()
    };
    let fake = ScriptedTelegram::new(script);
    let svc = JoinEnv::new(&store, Arc::new(fake.clone()), accounts).service();
    let report = SmartJoiner::new(svc, "default", Duration::from_secs(10))
        .run_batch("cars", 1)
        .await
        .unwrap();
    assert_eq!(report.by_status.get("joined"), Some(&1));
    let t = status_of(&store, &targets[0]).await;
    let attempts = store.attempts(Some(t.id), None).await.unwrap();
    let outcomes: Vec<_> = attempts.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes, ["in_doubt", "already_participant"]);
    assert_eq!(
        attempts[0].account_id, attempts[1].account_id,
        "the retry stays with the claimed account"
    );
    assert_eq!(t.assigned_account_id, Some(attempts[0].account_id));
    assert_eq!(fake.members(&targets[0].to_string()).len(), 1);
}

/// Bumps the account's epoch while the join is in flight, as a second holder would.
struct EpochThief {
    inner: ScriptedTelegram,
    store: Store,
    steal: std::sync::atomic::AtomicBool,
    /// The account row right after the theft: what a stale write must leave untouched.
    snapshot: std::sync::Mutex<Option<smart_joiner::store::Account>>,
}

#[async_trait]
impl Telegram for EpochThief {
    async fn connect(
        &self,
        account: &AccountConfig,
    ) -> Result<Box<dyn TelegramSession>, ConnectError> {
        if self.steal.swap(false, std::sync::atomic::Ordering::SeqCst) {
            let acc = account_named(&self.store, &account.session_name).await;
            // Another holder takes the account and finishes with it: a newer epoch, no hold.
            let newer = self.store.bump_lease_epoch(acc.id).await.unwrap();
            self.store.release_hold(acc.id, newer).await.unwrap();
            let now = account_named(&self.store, &account.session_name).await;
            *self.snapshot.lock().unwrap() = Some(now);
        }
        self.inner.connect(account).await
    }
}

async fn a_write_under_a_stale_epoch_changes_nothing_and_the_retry_recovers(store: Store) {
    let targets = links("stale", 1);
    let accounts = seed(&store, 1, &targets, "cars").await;
    let fake = ScriptedTelegram::new(Script::default());
    let thief = Arc::new(EpochThief {
        inner: fake.clone(),
        store: store.clone(),
        steal: true.into(),
        snapshot: Default::default(),
    });
    let svc = JoinEnv::new(&store, thief.clone(), accounts).service();
    let queued = store.queue_new_targets("cars", 1, Utc::now()).await.unwrap();
    let job = JoinTask::new(queued[0].id, "default").into_current();

    let outcome = svc.execute(&job).await.unwrap();
    let before = thief.snapshot.lock().unwrap().clone().expect("the thief struck");
    // Still pinned to acc_00: rescheduled under a new schedule rather than left for recovery.
    let ExecutionOutcome::Reschedule { job, .. } = outcome else { panic!("{outcome:?}") };
    let t = status_of(&store, &targets[0]).await;
    assert_eq!(t.status, TargetStatus::Joining, "claimed, then nothing written");
    assert_eq!(t.assigned_account_id, None);
    assert_eq!(t.attempts, 0);
    assert!(store.attempts(None, None).await.unwrap().is_empty());
    let after = account_named(&store, "acc_00").await;
    assert_eq!(
        (after.status, after.next_allowed_action_time, after.last_action_at),
        (before.status, before.next_allowed_action_time, before.last_action_at)
    );

    // The same job again (a duplicate or the recovery push): the claim is pinned to acc_00,
    // which joins idempotently under a fresh epoch.
    let outcome = loop {
        match svc.execute(&job).await.unwrap() {
            // The account is held back for the join pause reserved before the stale attempt.
            ExecutionOutcome::Reschedule { run_at, .. } => {
                tokio::time::sleep((run_at - Utc::now()).to_std().unwrap_or_default()).await;
            }
            done => break done,
        }
    };
    assert_eq!(outcome, ExecutionOutcome::Done(Settled::Finished(TargetStatus::Joined)));
    assert_eq!(status_of(&store, &targets[0]).await.assigned_account_id, Some(after.id));
}

async fn a_leased_account_is_skipped_for_the_next_one(store: Store) {
    let targets = links("leased", 1);
    let accounts = seed(&store, 2, &targets, "cars").await;
    let locks = Arc::new(LocalLocks::default());
    let first = store.accounts(None).await.unwrap().into_iter().min_by_key(|a| a.id).unwrap();
    let _held = locks.try_acquire(first.id).await.unwrap().expect("free");
    let fake = ScriptedTelegram::new(Script::default());
    let svc = JoinEnv::new(&store, Arc::new(fake.clone()), accounts).locks(locks).service();
    let queued = store.queue_new_targets("cars", 1, Utc::now()).await.unwrap();
    svc.execute(&JoinTask::new(queued[0].id, "default").into_current()).await.unwrap();
    let t = status_of(&store, &targets[0]).await;
    assert_eq!(t.status, TargetStatus::Joined);
    assert_ne!(t.assigned_account_id, Some(first.id));
    assert!(fake.events().iter().all(|e| e.account != first.session_name));
}

async fn a_target_no_account_can_ever_take_goes_back_to_new(store: Store) {
    let targets = links("orphan", 1);
    let accounts = seed(&store, 2, &targets, "cars").await;
    let script = Script {
        connect: HashMap::from([
            ("acc_00".into(), ConnectAnswer::Banned),
            ("acc_01".into(), ConnectAnswer::Unauthorized),
        ]),
        ..Script::default()
    };
    let svc = JoinEnv::new(&store, Arc::new(ScriptedTelegram::new(script)), accounts).service();
    let report = SmartJoiner::new(svc, "default", Duration::from_secs(5))
        .run_batch("cars", 1)
        .await
        .unwrap();
    assert_eq!(report.by_status.get("new"), Some(&1));
    let t = status_of(&store, &targets[0]).await;
    assert_eq!(t.error_message.as_deref(), Some("No available accounts"));
    assert_eq!(account_named(&store, "acc_00").await.status, AccountStatus::Banned);
    assert_eq!(account_named(&store, "acc_01").await.status, AccountStatus::Unauthorized);
}

async fn when_every_account_rests_the_job_waits_for_the_first_to_wake(store: Store) {
    let targets = links("rest", 3);
    let accounts = seed(&store, 2, &targets, "cars").await;
    let pacing = smart_joiner::domain::Pacing {
        join_pause_min: Duration::from_secs(300),
        join_pause_max: Duration::from_secs(300),
        ..fast_pacing()
    };
    let svc = JoinEnv::new(&store, Arc::new(ScriptedTelegram::new(Script::default())), accounts)
        .pacing(pacing)
        .service();
    let queued = store.queue_new_targets("cars", 3, Utc::now()).await.unwrap();
    for t in &queued[..2] {
        let out = svc.execute(&JoinTask::new(t.id, "default").into_current()).await.unwrap();
        assert_eq!(out, ExecutionOutcome::Done(Settled::Finished(TargetStatus::Joined)));
    }
    let wake = store
        .accounts(None)
        .await
        .unwrap()
        .iter()
        .filter_map(|a| a.next_allowed_action_time)
        .min()
        .unwrap();
    let out = svc.execute(&JoinTask::new(queued[2].id, "default").into_current()).await.unwrap();
    match out {
        ExecutionOutcome::Reschedule { run_at, .. } => {
            assert_eq!(run_at, wake, "due when the first account wakes")
        }
        other => panic!("{other:?}"),
    }
    let t = status_of(&store, &targets[2]).await;
    assert_eq!((t.status, t.next_run_at), (TargetStatus::Queued, Some(wake)));
}

#[test]
fn outcomes_name_smartjoiners_client_failure() {
    let o = ConnectError::Failed("proxy refused".into()).into_outcome();
    assert_eq!(o.to_string(), "Failed to create client: proxy refused");
    assert!(matches!(o, JoinOutcome::ConnectFailed { .. }));
}

async fn an_account_without_a_valid_entry_here_is_not_used_and_keeps_its_status(store: Store) {
    let targets = links("broken", 4);
    seed(&store, 3, &targets, "cars").await;
    let mut entries: serde_json::Value =
        serde_json::from_str(&crate::harness::accounts_json(&crate::harness::account_names(3)))
            .unwrap();
    // acc_00's session is broken; acc_02 is not in this process's file at all.
    entries[0]["string_session"] = "1AAAA".into();
    entries.as_array_mut().unwrap().pop();
    let (accounts, errors) =
        smart_joiner::accounts_config::AccountsConfig::parse_lenient(&entries.to_string()).unwrap();
    assert_eq!(errors.len(), 1);
    let fake = ScriptedTelegram::new(Script::default());
    let svc = JoinEnv::new(&store, Arc::new(fake.clone()), accounts).service();
    let report = SmartJoiner::new(svc, "default", Duration::from_secs(10))
        .run_batch("cars", 4)
        .await
        .unwrap();
    assert_eq!(report.by_status.get("joined"), Some(&4), "the configured account joins them all");
    // A local problem is not Telegram's verdict: both stay as they were, never connected.
    for name in ["acc_00", "acc_02"] {
        let a = account_named(&store, name).await;
        assert_eq!((a.status, a.status_reason), (AccountStatus::Active, None), "{name}");
        assert!(fake.events().iter().all(|e| e.account != name), "{name} was connected");
    }
}

/// Connects fail for acc_00 while `down` is set: an outage between an in-doubt join and its
/// retry.
struct Outage {
    inner: ScriptedTelegram,
    down: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl Telegram for Outage {
    async fn connect(
        &self,
        account: &AccountConfig,
    ) -> Result<Box<dyn TelegramSession>, ConnectError> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(ConnectError::Failed("connection refused".into()));
        }
        self.inner.connect(account).await
    }
}

async fn a_pinned_retry_through_an_outage_keeps_its_pin_and_its_tries(store: Store) {
    let targets = links("outage", 1);
    let accounts = seed(&store, 2, &targets, "cars").await;
    let script = Script {
        targets: HashMap::from([(targets[0].to_string(), answers(&["timeout", "joined"]))]),
        ..Script::default()
    };
    let fake = ScriptedTelegram::new(script);
    let outage = Arc::new(Outage { inner: fake.clone(), down: false.into() });
    let svc = JoinEnv::new(&store, outage.clone(), accounts).service();
    let queued = store.queue_new_targets("cars", 1, Utc::now()).await.unwrap();
    let job = JoinTask::new(queued[0].id, "default").into_current();
    // The join is left in doubt, then Telegram is unreachable for longer than the budget of
    // in-doubt tries (IN_DOUBT_MAX_TRIES is 3 by default).
    let ExecutionOutcome::Reschedule { mut job, .. } = svc.execute(&job).await.unwrap() else {
        panic!("in doubt: retried")
    };
    let pinned = status_of(&store, &targets[0]).await.claimed_account_id.expect("pinned");
    outage.down.store(true, std::sync::atomic::Ordering::SeqCst);
    for _ in 0..5 {
        let t = status_of(&store, &targets[0]).await;
        let wait = t.next_run_at.map(|at| (at - Utc::now()).to_std().unwrap_or_default());
        tokio::time::sleep(wait.unwrap_or_default()).await;
        match svc.execute(&job).await.unwrap() {
            ExecutionOutcome::Reschedule { job: next, .. } => job = next,
            other => panic!("still waiting for its account: {other:?}"),
        }
        let t = status_of(&store, &targets[0]).await;
        assert_eq!(
            (t.status, t.claimed_account_id, t.in_doubt_tries),
            (TargetStatus::Joining, Some(pinned), 1)
        );
    }
    let account = store.account(pinned).await.unwrap().unwrap();
    assert_eq!(account.status, AccountStatus::Active, "an outage is no verdict");
    // Telegram is back: the same account joins (idempotently) and the group is bound to it.
    outage.down.store(false, std::sync::atomic::Ordering::SeqCst);
    let outcome = loop {
        let t = status_of(&store, &targets[0]).await;
        let wait = t.next_run_at.map(|at| (at - Utc::now()).to_std().unwrap_or_default());
        tokio::time::sleep(wait.unwrap_or_default()).await;
        match svc.execute(&job).await.unwrap() {
            ExecutionOutcome::Reschedule { job: next, .. } => job = next,
            done => break done,
        }
    };
    assert_eq!(outcome, ExecutionOutcome::Done(Settled::Finished(TargetStatus::Joined)));
    assert_eq!(status_of(&store, &targets[0]).await.assigned_account_id, Some(pinned));
}

/// Sends the join, then dies before the answer is recorded.
struct DiesAfterJoin(ScriptedTelegram);

#[async_trait]
impl Telegram for DiesAfterJoin {
    async fn connect(
        &self,
        account: &AccountConfig,
    ) -> Result<Box<dyn TelegramSession>, ConnectError> {
        let session = self.0.connect(account).await?;
        struct Dying(Option<Box<dyn TelegramSession>>);
        #[async_trait]
        impl TelegramSession for Dying {
            async fn join(&mut self, link: &TargetLink) -> JoinOutcome {
                let mut inner = self.0.take().expect("one join");
                inner.join(link).await;
                inner.disconnect().await;
                panic!("the worker dies right after Telegram applied the join");
            }
            async fn disconnect(self: Box<Self>) {}
        }
        Ok(Box::new(Dying(Some(session))))
    }
}

async fn a_worker_that_dies_after_sending_a_join_still_holds_the_account_back(store: Store) {
    let targets = links("dies", 1);
    let accounts = seed(&store, 1, &targets, "cars").await;
    let pacing = smart_joiner::domain::Pacing {
        join_pause_min: Duration::from_secs(300),
        join_pause_max: Duration::from_secs(600),
        ..fast_pacing()
    };
    let fake = ScriptedTelegram::new(Script::default());
    let svc = JoinEnv::new(&store, Arc::new(DiesAfterJoin(fake.clone())), accounts)
        .pacing(pacing)
        .service();
    let queued = store.queue_new_targets("cars", 1, Utc::now()).await.unwrap();
    let job = JoinTask::new(queued[0].id, "default").into_current();
    let started = Utc::now();
    let died = tokio::spawn(async move { svc.execute(&job).await }).await;
    assert!(died.is_err(), "the task panicked as scripted");
    assert_eq!(fake.members(&targets[0].to_string()).len(), 1, "Telegram applied the join");

    let account = account_named(&store, "acc_00").await;
    let held_until = account.next_allowed_action_time.expect("reserved before the join");
    assert!(held_until >= started + chrono::Duration::seconds(300), "{held_until} vs {started}");
    let t = status_of(&store, &targets[0]).await;
    assert_eq!((t.status, t.claimed_account_id), (TargetStatus::Joining, Some(account.id)));
}

/// Leases that are lost on demand, with a short TTL so they are renewed often: what a wiped
/// Redis or a lease expired under a frozen process looks like to the holder.
#[derive(Default)]
struct LosableLocks {
    inner: LocalLocks,
    lost: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl AccountLocks for LosableLocks {
    async fn try_acquire(
        &self,
        id: i64,
    ) -> Result<Option<smart_joiner::lease::Lease>, smart_joiner::lease::LeaseError> {
        self.inner.try_acquire(id).await
    }
    async fn renew(
        &self,
        lease: &smart_joiner::lease::Lease,
    ) -> Result<bool, smart_joiner::lease::LeaseError> {
        if self.lost.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(false);
        }
        self.inner.renew(lease).await
    }
    async fn release(
        &self,
        lease: &smart_joiner::lease::Lease,
    ) -> Result<bool, smart_joiner::lease::LeaseError> {
        self.inner.release(lease).await
    }
    async fn is_held(&self, id: i64) -> Result<bool, smart_joiner::lease::LeaseError> {
        self.inner.is_held(id).await
    }
    fn ttl(&self) -> Duration {
        Duration::from_millis(150)
    }
}

/// Telegram answers the first join, then the process freezes before it reads the answer:
/// the lease is lost meanwhile, and the answer is read only after the freeze.
struct FreezesAfterTheAnswer {
    inner: ScriptedTelegram,
    locks: Arc<LosableLocks>,
    froze: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl Telegram for FreezesAfterTheAnswer {
    async fn connect(
        &self,
        account: &AccountConfig,
    ) -> Result<Box<dyn TelegramSession>, ConnectError> {
        let session = self.inner.connect(account).await?;
        if self.froze.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Ok(session);
        }
        struct Frozen(Box<dyn TelegramSession>, Arc<LosableLocks>);
        #[async_trait]
        impl TelegramSession for Frozen {
            async fn join(&mut self, link: &TargetLink) -> JoinOutcome {
                let answer = self.0.join(link).await;
                self.1.lost.store(true, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(600)).await;
                answer
            }
            async fn disconnect(self: Box<Self>) {
                self.0.disconnect().await
            }
        }
        Ok(Box::new(Frozen(session, self.locks.clone())))
    }
}

/// The short fault run's invariant-2 violation, step by step: a worker got FLOOD_WAIT_700, was
/// frozen before it read the answer, and found its lease gone when it resumed. It used to
/// abort the join as in doubt, drop the answer, rest the account for an error pause and retry
/// with the same account inside the FloodWait. The database hold was still its own, so the
/// answer is read and recorded: the account cools down and the group moves on.
async fn a_flood_wait_answered_while_the_lease_ran_out_still_cools_the_account_down(store: Store) {
    let targets = links("frozen", 1);
    let accounts = seed(&store, 2, &targets, "cars").await;
    let script = Script {
        targets: HashMap::from([(targets[0].to_string(), answers(&["flood_wait:700", "joined"]))]),
        ..Script::default()
    };
    let fake = ScriptedTelegram::new(script);
    let locks = Arc::new(LosableLocks::default());
    let telegram = Arc::new(FreezesAfterTheAnswer {
        inner: fake.clone(),
        locks: locks.clone(),
        froze: false.into(),
    });
    let svc = JoinEnv::new(&store, telegram, accounts).locks(locks).service();
    let queued = store.queue_new_targets("cars", 1, Utc::now()).await.unwrap();
    let mut job = JoinTask::new(queued[0].id, "default").into_current();
    let started = Utc::now();

    let mut outcome = svc.execute(&job).await.unwrap();
    let flooded = fake.events()[0].account.clone();
    let a = account_named(&store, &flooded).await;
    assert_eq!(a.status, AccountStatus::Cooldown, "{a:?}");
    assert!(
        a.next_allowed_action_time.unwrap() >= started + chrono::Duration::seconds(699),
        "{a:?}"
    );
    for _ in 0..20 {
        match outcome {
            ExecutionOutcome::Reschedule { job: next, run_at } => {
                tokio::time::sleep((run_at - Utc::now()).to_std().unwrap_or_default()).await;
                job = next;
                outcome = svc.execute(&job).await.unwrap();
            }
            ExecutionOutcome::Done(_) => break,
        }
    }
    assert_eq!(outcome, ExecutionOutcome::Done(Settled::Finished(TargetStatus::Joined)));
    let t = status_of(&store, &targets[0]).await;
    assert_ne!(t.assigned_account_id, Some(a.id), "the group moved to the other account");
    let seen = check_events(&fake.events(), fast_pacing().join_pause_min);
    assert!(seen.is_empty(), "{seen:#?}");
    let inv = invariants::check(&store, fast_pacing().join_pause_min, &LIMITS).await.unwrap();
    assert!(inv.is_clean(), "{inv}: {inv:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_sqlite_file_is_deleted_stops_with_an_error_naming_it() {
    let (store, dir) = crate::support::sqlite_store().await;
    let targets = links("vanish", 6);
    let accounts = seed(&store, 1, &targets, "cars").await;
    // One account, a pause of seconds between joins: the batch is still running when the
    // file goes.
    let pacing = smart_joiner::domain::Pacing {
        join_pause_min: Duration::from_secs(3),
        join_pause_max: Duration::from_secs(3),
        ..fast_pacing()
    };
    let svc = JoinEnv::new(&store, Arc::new(ScriptedTelegram::new(Script::default())), accounts)
        .pacing(pacing)
        .service();
    let run = tokio::spawn(async move {
        SmartJoiner::new(svc, "default", Duration::from_secs(60)).run_batch("cars", 6).await
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let path = dir.path().join("smart_joiner.db");
    std::fs::remove_file(&path).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(20), run).await.expect("stops").unwrap();
    let err = result.expect_err("a vanished database file is an error");
    let text = err.to_string();
    assert!(text.contains("smart_joiner.db") && text.contains("no longer exists"), "{text}");
}

/// Connects, then the process freezes until its hold has run out and another process has
/// taken the account.
struct FrozenAfterConnect {
    inner: ScriptedTelegram,
    store: Store,
}

#[async_trait]
impl Telegram for FrozenAfterConnect {
    async fn connect(
        &self,
        account: &AccountConfig,
    ) -> Result<Box<dyn TelegramSession>, ConnectError> {
        let session = self.inner.connect(account).await?;
        let acc = account_named(&self.store, &account.session_name).await;
        // The hold runs out under the frozen process, and someone else takes the account.
        let past = Utc::now() - chrono::Duration::seconds(1);
        let newer = self.store.take_hold(acc.id, Utc::now(), past).await.unwrap();
        assert_eq!(newer, None, "held by the frozen attempt");
        self.store.release_hold(acc.id, acc.lease_epoch).await.unwrap();
        let other =
            self.store.take_hold(acc.id, Utc::now(), Utc::now() + chrono::Duration::seconds(30));
        assert!(other.await.unwrap().is_some());
        Ok(session)
    }
}

/// The long fault run's pacing violation: a worker frozen between its take and its join
/// resumed after its hold ran out and sent the join next to another process's. The gate
/// before the join sees the hold is no longer its own and sends nothing.
async fn a_worker_frozen_until_its_hold_ran_out_sends_no_join(store: Store) {
    let targets = links("gate", 1);
    let accounts = seed(&store, 1, &targets, "cars").await;
    let fake = ScriptedTelegram::new(Script::default());
    let telegram = Arc::new(FrozenAfterConnect { inner: fake.clone(), store: store.clone() });
    let svc = JoinEnv::new(&store, telegram, accounts).service();
    let queued = store.queue_new_targets("cars", 1, Utc::now()).await.unwrap();
    let out = svc.execute(&JoinTask::new(queued[0].id, "default").into_current()).await.unwrap();
    assert!(
        fake.events()
            .iter()
            .all(|e| !matches!(e.kind, smart_joiner::telegram::fake::EventKind::Join { .. })),
        "a join was sent: {:?}",
        fake.events()
    );
    assert!(
        !matches!(out, ExecutionOutcome::Done(Settled::Finished(TargetStatus::Joined))),
        "{out:?}"
    );
    assert_eq!(status_of(&store, &targets[0]).await.assigned_account_id, None);
}

/// An in-doubt target stays with its account. While that account is mid-join for another
/// target, its rest is a reservation to the hold's end (a minute and more), which the other
/// join's decision shortens to one pause: the pinned job looks again shortly instead of waiting
/// out the reservation.
async fn a_pinned_target_whose_account_is_mid_join_elsewhere_looks_again_shortly(store: Store) {
    let targets = links("midjoin", 2);
    let accounts = seed(&store, 1, &targets, "cars").await;
    let script = Script {
        targets: HashMap::from([(targets[0].to_string(), answers(&["joined_then_timeout"]))]),
        ..Script::default()
    };
    let svc = JoinEnv::new(&store, Arc::new(ScriptedTelegram::new(script)), accounts).service();
    let queued = store.queue_new_targets("cars", 2, Utc::now()).await.unwrap();
    let job = JoinTask::new(queued[0].id, "default").into_current();
    let first = svc.execute(&job).await.unwrap();
    assert!(matches!(first, ExecutionOutcome::Reschedule { .. }), "{first:?}");
    let pinned = status_of(&store, &targets[0]).await;
    assert_eq!(pinned.status, TargetStatus::Joining, "in doubt, pinned");
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Another process takes the account for the second target and is mid-join.
    let account = account_named(&store, "acc_00").await;
    let now = Utc::now();
    let hold = now + chrono::Duration::seconds(90);
    let take = store.take_for_join(account.id, queued[1].id, now, hold, hold).await.unwrap();
    assert!(matches!(take, smart_joiner::store::Take::Taken { .. }), "{take:?}");

    let again = svc.execute(&job).await.unwrap();
    let ExecutionOutcome::Reschedule { run_at, .. } = again else { panic!("{again:?}") };
    assert!(
        run_at < Utc::now() + chrono::Duration::seconds(2),
        "waits for the reservation: {run_at}"
    );
    let t = status_of(&store, &targets[0]).await;
    assert_eq!(t.status, TargetStatus::Joining);
    let stored = t.next_run_at.expect("scheduled");
    assert!((stored - run_at).num_milliseconds().abs() <= 1, "{stored} vs {run_at}");
}

/// Two workers on one database, one whose clock runs 30 s ahead and one 30 s behind, share one
/// account. The one behind receives a FloodWait and makes joins; the one ahead asks for the
/// account right after each. Read from their own clocks, the rest the one behind writes would
/// end 30 s early and the one ahead would find every rest over 30 s early: the account would
/// be asked inside the FloodWait and join again without a pause. Both read the database's clock
/// (`Store::now`), so Telegram sees neither (invariants 2 and 5, checked on Telegram's side
/// and in the database).
async fn workers_whose_clocks_are_30_s_off_keep_flood_waits_and_pauses(store: Store) {
    use smart_joiner::clock::Clock;
    let targets = links("skew", 4);
    let accounts = seed(&store, 1, &targets, "cars").await;
    let pacing = smart_joiner::domain::Pacing {
        join_pause_min: Duration::from_millis(800),
        join_pause_max: Duration::from_millis(800),
        ..fast_pacing()
    };
    let script = Script {
        targets: HashMap::from([(targets[0].to_string(), answers(&["flood_wait:2", "joined"]))]),
        ..Script::default()
    };
    let fake = ScriptedTelegram::new(script);
    let locks: Arc<dyn AccountLocks> = Arc::new(LocalLocks::default());
    let mut services = Vec::new();
    for skew in [-30, 30] {
        let skewed = store.with_clock(Clock::skewed(chrono::TimeDelta::seconds(skew))).await;
        let skewed = skewed.unwrap();
        let off = (skewed.now() - Utc::now()).abs();
        assert!(off < chrono::TimeDelta::seconds(1), "clock {skew:+} s corrected to within {off}");
        let svc = JoinEnv::new(&skewed, Arc::new(fake.clone()), accounts.clone())
            .locks(locks.clone())
            .pacing(pacing.clone())
            .service();
        services.push(svc);
    }
    let queued = store.queue_new_targets("cars", 4, store.now()).await.unwrap();
    assert_eq!(queued.len(), 4);
    // The worker behind takes the FloodWait; then the two take turns, the one ahead first.
    let mut order: Vec<_> =
        queued.iter().map(|t| (targets.iter().position(|l| *l == t.link).unwrap(), t.id)).collect();
    order.sort();
    let behind = &services[0];
    let first = behind.execute(&JoinTask::new(order[0].1, "default").into_current()).await;
    assert!(
        matches!(first.unwrap(), ExecutionOutcome::Reschedule { .. }),
        "the FloodWait reschedules"
    );
    let mut runs = Vec::new();
    for (i, (_, id)) in order.iter().enumerate() {
        let svc = services[(i + 1) % 2].clone();
        let job = JoinTask::new(*id, "default").into_current();
        runs.push(tokio::spawn(async move {
            let mut job = job;
            for _ in 0..50 {
                match svc.execute(&job).await.unwrap() {
                    ExecutionOutcome::Done(settled) => return settled,
                    ExecutionOutcome::Reschedule { job: next, run_at } => {
                        let wait: Duration =
                            (run_at - svc.store().now()).to_std().unwrap_or_default();
                        tokio::time::sleep(wait).await;
                        job = next;
                    }
                }
            }
            panic!("target {} not settled after 50 steps", job.target_id);
        }));
        // The one ahead asks first, while the other's FloodWait runs.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for run in runs {
        assert_eq!(run.await.unwrap(), Settled::Finished(TargetStatus::Joined));
    }
    let events = fake.events();
    let seen = check_events(&events, pacing.join_pause_min);
    assert!(seen.is_empty(), "{seen:#?}\n{events:#?}");
    let joins = events
        .iter()
        .filter(|e| matches!(e.kind, smart_joiner::telegram::fake::EventKind::Join { .. }))
        .count();
    assert_eq!(
        joins, 5,
        "one FloodWait and four joins, nothing asked inside the wait: {events:#?}"
    );
    let inv = invariants::check(&store, pacing.join_pause_min, &LIMITS).await.unwrap();
    assert!(inv.is_clean(), "{inv}: {inv:#?}");
}

/// Joins that end (joined, here) write nothing to `idx_targets_pinned`, the index the pick
/// reads for each candidate's pinned target: a take claims its target under an epoch, outside
/// the index's predicate (`claim_epoch IS NULL`). When every take wrote an entry there, the
/// decision left it dead, and until a vacuum the pick read the dead entries of every join
/// since (BENCHMARKS.md, session 12). A btree nothing was ever written to is its metapage
/// alone; a target left in doubt at the end shows that the measure sees an entry.
#[tokio::test]
async fn joins_write_nothing_to_the_index_of_pinned_targets() {
    use sea_orm::{ConnectionTrait, DbBackend, Statement};
    let store = crate::support::pg_store().await;
    let db = store.connection();
    // No vacuum may tidy up behind the test.
    db.execute_unprepared("ALTER TABLE targets SET (autovacuum_enabled = false)").await.unwrap();
    let size = || async {
        let sql = "SELECT pg_relation_size('idx_targets_pinned') AS n";
        let row = db.query_one_raw(Statement::from_string(DbBackend::Postgres, sql)).await;
        row.unwrap().unwrap().try_get::<i64>("", "n").unwrap()
    };
    let empty = size().await;
    let targets = links("unpinned", 30);
    let accounts = seed(&store, 6, &targets, "cars").await;
    let fake = ScriptedTelegram::new(Script::default());
    let svc = JoinEnv::new(&store, Arc::new(fake), accounts).service();
    let report = SmartJoiner::new(svc, "default", Duration::from_secs(30))
        .run_batch("cars", 30)
        .await
        .unwrap();
    assert_eq!(report.taken, 30);
    let joined = store.targets(None, None).await.unwrap();
    assert!(joined.iter().all(|t| t.status == TargetStatus::Joined), "{joined:?}");
    assert_eq!(size().await, empty, "30 joins wrote to the index of pinned targets");

    // A target left in doubt (claimed, no epoch owning the claim) is what the index is for.
    let pinned = format!(
        "UPDATE targets SET status = 'joining', claimed_account_id = assigned_account_id, \
         claim_epoch = NULL WHERE id = {}",
        joined[0].id
    );
    db.execute_unprepared(&pinned).await.unwrap();
    assert!(size().await > empty, "an in-doubt target is not in the index");
}
