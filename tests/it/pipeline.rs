//! The distributed pipeline through the real binaries: producer + several workers on one
//! Postgres and one Redis, with crashes, a wiped Redis and a paused worker.

use std::collections::HashMap;
use std::time::Duration;

use smart_joiner::domain::TargetStatus;
use smart_joiner::ops::invariants;
use smart_joiner::telegram::fake::{Answer, Script, check_events};

use crate::cluster::{Cluster, PrivateRedis};
use crate::harness::{LIMITS, account_names, accounts_json, fast_pacing, links};
use crate::support::pg_database;

fn answers(list: &[&str]) -> Vec<Answer> {
    list.iter().map(|a| a.parse().unwrap()).collect()
}

async fn statuses(cluster: &Cluster) -> HashMap<TargetStatus, usize> {
    let mut counts = HashMap::new();
    for t in cluster.store.targets(None, None).await.unwrap() {
        *counts.entry(t.status).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn several_workers_and_the_producer_settle_hundreds_of_targets_keeping_every_invariant() {
    let (store, url) = pg_database().await;
    let redis = PrivateRedis::start();
    let names = account_names(12);
    store.sync_accounts(&names, "default").await.unwrap();
    let targets = links("grp", 240);
    store.import_targets(&targets, "cars").await.unwrap();

    let mut scripted = HashMap::new();
    for (i, t) in targets.iter().enumerate() {
        let seq: &[&str] = match i % 12 {
            0 => &["flood_wait:1", "joined"],
            1 => &["join_request"],
            2 => &["invalid:USERNAME_NOT_OCCUPIED"],
            3 => &["joined_then_timeout", "joined"],
            4 if i < 50 => &["flood_wait:900", "joined"],
            5 => &["slowmode_wait:1", "joined"],
            6 => &["banned_in_channel"],
            _ => continue,
        };
        scripted.insert(t.to_string(), answers(seq));
    }
    let script = Script { targets: scripted, latency_ms: 5, ..Script::default() };
    let mut cluster =
        Cluster::new(store, url, &redis.url, &accounts_json(&names), &script, &[]).await;
    for name in ["w1", "w2", "w3"] {
        cluster.spawn_worker(name).await;
    }
    let open = cluster
        .settle("cars", 60, "30s", Duration::from_millis(500), Duration::from_secs(240))
        .await;
    cluster.stop_all();
    assert_eq!(
        open,
        0,
        "unsettled targets: {:?}\n{}",
        statuses(&cluster).await,
        cluster.worker_logs()
    );

    let inv =
        invariants::check(&cluster.store, fast_pacing().join_pause_min, &LIMITS).await.unwrap();
    assert!(inv.is_clean(), "{inv}\n{inv:#?}");
    let seen = check_events(&cluster.events(), fast_pacing().join_pause_min);
    assert!(seen.is_empty(), "{seen:#?}");
    let counts = statuses(&cluster).await;
    assert_eq!(counts.get(&TargetStatus::Requested), Some(&20), "{counts:?}");
    assert_eq!(counts.get(&TargetStatus::Error), Some(&20), "{counts:?}");
    assert_eq!(counts.get(&TargetStatus::Banned), Some(&20), "{counts:?}");
    // In-doubt targets whose account then cooled down for 900 s wait for it, pinned.
    let accounts = cluster.store.accounts(None).await.unwrap();
    let pinned = cluster.store.targets(None, Some(TargetStatus::Joining)).await.unwrap();
    let logs = cluster.worker_logs();
    for t in &pinned {
        let holder = accounts.iter().find(|a| Some(a.id) == t.claimed_account_id).unwrap();
        let story: Vec<&str> = logs
            .lines()
            .filter(|l| l.contains(&t.link.to_string()) || l.contains(&holder.session_name))
            .collect();
        assert_eq!(
            holder.status,
            smart_joiner::domain::AccountStatus::Cooldown,
            "{t:?}\n{holder:?}\n{}",
            story.join("\n")
        );
    }
    let joined = counts.get(&TargetStatus::Joined).copied().unwrap_or(0);
    assert_eq!(joined + pinned.len(), 180, "{counts:?}");
    // Every worker took part, and the long FloodWaits cooled accounts down.
    let attempts = cluster.store.attempts(None, None).await.unwrap();
    for w in ["w1", "w2", "w3"] {
        assert!(attempts.iter().any(|a| a.worker == w), "{w} did no work");
    }
    assert!(attempts.iter().any(|a| a.flood_wait_seconds == Some(900)));
    every_job_fetched_was_acknowledged(&redis.url, cluster.prefix()).await;
}

/// Workers fetch a batch of jobs at once and apalis acknowledges them in batches: after the
/// workers stopped, no job is left in a worker's in-flight set, and every job in Redis is done,
/// waiting (a pinned target's follow-up) or ready; none vanished between fetch and
/// acknowledgement.
async fn every_job_fetched_was_acknowledged(url: &str, prefix: &str) {
    use smart_joiner::queue::{JobQueue, QueueSettings, connect_redis};

    let conn = connect_redis(url).await.unwrap();
    let settings = QueueSettings { name: format!("{prefix}join:v1:default"), ..Default::default() };
    let queue = JobQueue::new(conn.clone(), &settings);
    let config = queue.storage().get_config().clone();
    let mut conn = conn;
    let inflight: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", config.inflight_jobs_set()))
        .query_async(&mut conn)
        .await
        .unwrap();
    for key in &inflight {
        let held: u64 = redis::cmd("SCARD").arg(key).query_async(&mut conn).await.unwrap();
        assert_eq!(held, 0, "{key} still holds jobs");
    }
    let (jobs, done): (u64, u64) = redis::pipe()
        .cmd("HLEN")
        .arg(config.job_data_hash())
        .cmd("SCARD")
        .arg(config.done_jobs_set())
        .query_async(&mut conn)
        .await
        .unwrap();
    let (ready, scheduled) = queue.depth().await.unwrap();
    assert!(done >= 240, "{done} jobs done for 240 targets");
    assert_eq!(done + ready + scheduled, jobs, "jobs neither done nor queued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_workers_and_a_wiped_redis_lose_nothing() {
    let (store, url) = pg_database().await;
    let redis = PrivateRedis::start();
    let names = account_names(8);
    store.sync_accounts(&names, "default").await.unwrap();
    let targets = links("kill", 120);
    store.import_targets(&targets, "cars").await.unwrap();
    // Slow joins, so a kill lands mid-join.
    let script = Script { latency_ms: 150, ..Script::default() };
    let env = [("LEASE_TTL", "2s"), ("CALL_TIMEOUT", "800ms")];
    let mut cluster =
        Cluster::new(store, url, &redis.url, &accounts_json(&names), &script, &env).await;
    cluster.spawn_worker("k1").await;
    cluster.spawn_worker("k2").await;
    cluster.produce("cars", 120, "1s").await;

    // Wait until work is under way, then kill one worker mid-join and wipe Redis.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while cluster.store.attempts(None, None).await.unwrap().len() < 15 {
        assert!(std::time::Instant::now() < deadline, "no progress\n{}", cluster.worker_logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.signal(0, "KILL");
    redis.flushall().await;
    cluster.spawn_worker("k3").await;

    let open = cluster
        .settle("cars", 120, "1s", Duration::from_millis(700), Duration::from_secs(240))
        .await;
    cluster.stop_all();
    assert_eq!(
        open,
        0,
        "unsettled targets: {:?}\n{}",
        statuses(&cluster).await,
        cluster.worker_logs()
    );
    let counts = statuses(&cluster).await;
    assert_eq!(counts.get(&TargetStatus::Joined), Some(&120), "{counts:?}");
    let inv =
        invariants::check(&cluster.store, fast_pacing().join_pause_min, &LIMITS).await.unwrap();
    assert!(inv.is_clean(), "{inv}\n{inv:#?}");
    // The killed worker's open connection ends with the process; no account ever had two.
    let seen = check_events(&cluster.events(), fast_pacing().join_pause_min);
    assert!(seen.requests_in_flood_wait.is_empty() && seen.joins_too_close.is_empty(), "{seen:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_paused_past_its_lease_cannot_write_with_its_stale_epoch() {
    let (store, url) = pg_database().await;
    let redis = PrivateRedis::start();
    let names = account_names(1);
    store.sync_accounts(&names, "default").await.unwrap();
    let targets = links("paused", 1);
    store.import_targets(&targets, "cars").await.unwrap();
    // A join takes 1.5 s; the lease lives 4 s unless renewed.
    let script = Script { latency_ms: 1500, ..Script::default() };
    let env = [("LEASE_TTL", "4s"), ("CALL_TIMEOUT", "2s")];
    let mut cluster =
        Cluster::new(store, url, &redis.url, &accounts_json(&names), &script, &env).await;
    cluster.spawn_worker("sleeper").await;
    cluster.produce("cars", 1, "1s").await;

    // Wait for the claim, then freeze the worker past its lease.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let t = &cluster.store.targets(None, None).await.unwrap()[0];
        if t.status == TargetStatus::Joining {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never claimed\n{}", cluster.worker_logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.signal(0, "STOP");
    tokio::time::sleep(Duration::from_millis(4500)).await;

    // Another worker takes over the in-doubt target through recovery, under a newer epoch.
    cluster.spawn_worker("rescuer").await;
    let open =
        cluster.settle("cars", 1, "1s", Duration::from_millis(500), Duration::from_secs(60)).await;
    assert_eq!(open, 0, "{}", cluster.worker_logs());
    cluster.signal(0, "CONT");
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.stop_all();

    let attempts = cluster.store.attempts(None, None).await.unwrap();
    assert!(
        attempts.iter().all(|a| a.worker == "rescuer"),
        "the paused worker wrote: {attempts:#?}"
    );
    let t = &cluster.store.targets(None, None).await.unwrap()[0];
    assert_eq!(t.status, TargetStatus::Joined);
    let inv =
        invariants::check(&cluster.store, fast_pacing().join_pause_min, &LIMITS).await.unwrap();
    assert!(inv.is_clean(), "{inv}\n{inv:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_lets_in_flight_joins_finish_and_releases_their_leases() {
    let (store, url) = pg_database().await;
    let redis = PrivateRedis::start();
    let names = account_names(3);
    store.sync_accounts(&names, "default").await.unwrap();
    let targets = links("term", 3);
    store.import_targets(&targets, "cars").await.unwrap();
    let script = Script { latency_ms: 1500, ..Script::default() };
    let env = [("LEASE_TTL", "10s"), ("CALL_TIMEOUT", "5s")];
    let mut cluster =
        Cluster::new(store, url, &redis.url, &accounts_json(&names), &script, &env).await;
    cluster.spawn_worker("graceful").await;
    cluster.produce("cars", 3, "1m").await;

    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let joining = cluster.store.targets(None, Some(TargetStatus::Joining)).await.unwrap().len();
        if joining == 3 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "joins never started\n{}",
            cluster.worker_logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.signal(0, "TERM");
    let status = cluster.wait_exit(0, Duration::from_secs(15)).expect("worker exits after SIGTERM");
    assert!(status.success(), "{status:?}\n{}", cluster.worker_logs());

    let counts = statuses(&cluster).await;
    assert_eq!(counts.get(&TargetStatus::Joined), Some(&3), "in-flight joins finished: {counts:?}");
    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let leases: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}lease:*", cluster.prefix()))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(leases.is_empty(), "leases left behind: {leases:?}");
}

/// A batch larger than one page of the producer (10,000): every page is moved and pushed once,
/// in id order, and nothing of another niche or beyond the batch is touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_producer_queues_a_batch_of_several_pages_exactly_once() {
    use smart_joiner::domain::TargetLink;
    use smart_joiner::lease::RedisLocks;
    use smart_joiner::modes::producer::{ProduceOptions, produce};
    use smart_joiner::queue::{JobQueue, QueueSettings, connect_redis};

    let (store, _url) = pg_database().await;
    let redis = PrivateRedis::start();
    let conn = connect_redis(&redis.url).await.unwrap();
    let queue = JobQueue::new(conn.clone(), &QueueSettings::default());
    let locks = RedisLocks::new(conn, "pages:", Duration::from_secs(30));
    let bulk: Vec<TargetLink> =
        (0..25_000).map(|i| TargetLink::parse(&format!("@bulk_{i:05}")).unwrap()).collect();
    store.import_targets(&bulk, "bulk").await.unwrap();
    store.import_targets(&links("other", 50), "other").await.unwrap();
    let opts = |batch_size| ProduceOptions {
        niche: "bulk".into(),
        batch_size,
        pool: "default".into(),
        recover_after: Duration::from_secs(3600),
    };

    // The LIMIT of every page statement, in order: the first page is small, so the workers get
    // their first jobs after one push of 1,000 instead of after a whole page of 10,000, and
    // each page is at most twice the last, up to 10,000.
    let pages = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let observed = {
        let pages = pages.clone();
        store.observed(move |info| {
            let sql = &info.statement.sql;
            if sql.starts_with("UPDATE \"targets\"") && sql.contains("SKIP LOCKED") {
                let limit = info.statement.values.as_ref().and_then(|v| v.0.get(7));
                let digits: String =
                    format!("{limit:?}").chars().filter(char::is_ascii_digit).collect();
                pages.lock().unwrap().push(digits);
            }
        })
    };
    let report = produce(&observed, &queue, &locks, &opts(22_222)).await.unwrap();
    assert_eq!((report.queued, report.push_failures), (22_222, 0));
    assert_eq!(*pages.lock().unwrap(), ["1000", "2000", "4000", "8000", "7222"], "page sizes");
    let jobs =
        || async { queue.depth().await.map(|(ready, scheduled)| ready + scheduled).unwrap() };
    assert_eq!(jobs().await, 22_222, "jobs in Redis");
    let queued = store.targets(Some("bulk"), Some(TargetStatus::Queued)).await.unwrap();
    let new = store.targets(Some("bulk"), Some(TargetStatus::New)).await.unwrap();
    assert_eq!((queued.len(), new.len()), (22_222, 2_778));
    let last_queued = queued.iter().map(|t| t.id).max().unwrap();
    assert!(new.iter().all(|t| t.id > last_queued), "the oldest targets go first");
    assert_eq!(store.targets(Some("other"), Some(TargetStatus::New)).await.unwrap().len(), 50);

    // The next run takes the rest and stops at the end of the niche.
    let report = produce(&store, &queue, &locks, &opts(100_000)).await.unwrap();
    assert_eq!(report.queued, 2_778);
    assert_eq!(queue.depth().await.unwrap(), (25_000, 0));
    assert!(store.targets(Some("bulk"), Some(TargetStatus::New)).await.unwrap().is_empty());

    // A job due later stays scheduled; promoting again moves nothing.
    let later = chrono::Utc::now() + chrono::Duration::hours(1);
    let job = smart_joiner::domain::JoinTask::new(1, "default").into_current();
    queue.push(job, later).await.unwrap();
    assert_eq!(queue.promote_due().await.unwrap(), 0);
    assert_eq!(queue.depth().await.unwrap(), (25_000, 1));
}

/// A job that ended without a follow-up (a worker whose retry push failed, say) leaves its
/// target on the schedule that job carried, and the job's idempotency key lives on for an hour.
/// The producer's recovery must push the target again instead of being swallowed by that key,
/// and must still push nothing while the job is alive. Before `JobQueue::push_recovery` the
/// push was a silent no-op (reported as a recovery) and the target waited for the key to expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_job_does_not_swallow_the_recovery_of_its_target() {
    use apalis::prelude::{BackendExt, BoxDynError, WorkerBuilder};
    use smart_joiner::domain::JoinTask;
    use smart_joiner::lease::RedisLocks;
    use smart_joiner::modes::producer::{ProduceOptions, produce};
    use smart_joiner::queue::{JobQueue, QueueSettings, connect_redis};

    let (store, _url) = pg_database().await;
    let redis = PrivateRedis::start();
    let conn = connect_redis(&redis.url).await.unwrap();
    let queue = JobQueue::new(conn.clone(), &QueueSettings::default());
    let locks = RedisLocks::new(conn, "lost:", Duration::from_secs(30));
    store.import_targets(&links("lost", 1), "lost").await.unwrap();
    let opts = |recover_after| ProduceOptions {
        niche: "lost".into(),
        batch_size: 10,
        pool: "default".into(),
        recover_after,
    };
    let jobs =
        || async { queue.depth().await.map(|(ready, scheduled)| ready + scheduled).unwrap() };

    let report = produce(&store, &queue, &locks, &opts(Duration::from_secs(3600))).await.unwrap();
    assert_eq!(report.queued, 1);
    assert_eq!(jobs().await, 1);
    tokio::time::sleep(Duration::from_millis(20)).await;

    // While its job is alive, a recovery pass (everything counts as overdue) pushes nothing.
    let report = produce(&store, &queue, &locks, &opts(Duration::ZERO)).await.unwrap();
    assert_eq!((report.recovered_queued, report.push_failures), (0, 0), "{report}");
    assert_eq!(jobs().await, 1, "a live job is never doubled");

    // The job runs and ends without touching the target.
    async fn ends_without_follow_up(_task: JoinTask) -> Result<(), BoxDynError> {
        Ok(())
    }
    let worker = WorkerBuilder::new(format!("ack-{}", ulid::Ulid::new()))
        .backend(queue.storage().poll_with_interval(Duration::from_millis(50)))
        .build(ends_without_follow_up);
    let watched = queue.clone();
    let ran = async move {
        while watched.depth().await.map(|(ready, scheduled)| ready + scheduled).unwrap() > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Let the worker acknowledge the job it ran.
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    tokio::time::timeout(
        Duration::from_secs(30),
        worker.run_until(async {
            ran.await;
            Ok::<(), std::io::Error>(())
        }),
    )
    .await
    .expect("the job ran within 30 s")
    .unwrap();
    let target = &store.targets(Some("lost"), None).await.unwrap()[0];
    assert_eq!(target.status, TargetStatus::Queued, "the job left the target as it was");

    let report = produce(&store, &queue, &locks, &opts(Duration::ZERO)).await.unwrap();
    assert_eq!((report.recovered_queued, report.push_failures), (1, 0), "{report}");
    assert_eq!(jobs().await, 1, "the target has a job again");
}

/// A Redis wiped mid-join ends the apalis worker that fetched the jobs ("worker not registered"
/// at its next heartbeat), and apalis drops the handler futures that worker holds. Every join
/// must still finish and record Telegram's answer, here a 700 s FloodWait arriving after the
/// wipe: a dropped join loses it, and the account's next connection would meet the wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn joins_in_flight_when_redis_is_wiped_still_record_their_answers() {
    use smart_joiner::domain::AccountStatus;

    let (store, url) = pg_database().await;
    let redis = PrivateRedis::start();
    let names = account_names(3);
    store.sync_accounts(&names, "default").await.unwrap();
    store.import_targets(&links("wiped", 3), "cars").await.unwrap();
    let script = Script {
        default: "flood_wait:700".parse().unwrap(),
        latency_ms: 3000,
        ..Script::default()
    };
    let env = [("CALL_TIMEOUT", "6s"), ("QUEUE_HEARTBEAT", "200ms")];
    let mut cluster =
        Cluster::new(store, url, &redis.url, &accounts_json(&names), &script, &env).await;
    cluster.spawn_worker("wiped").await;
    cluster.produce("cars", 3, "1h").await;

    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let joining = || async {
        let targets = cluster.store.targets(None, Some(TargetStatus::Joining)).await.unwrap();
        targets.len()
    };
    while joining().await < 3 {
        assert!(std::time::Instant::now() < deadline, "never claimed\n{}", cluster.worker_logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    redis.flushall().await;

    // The answers come about 3 s after the claims.
    let recorded = || async {
        let accounts = cluster.store.accounts(None).await.unwrap();
        accounts.iter().filter(|a| a.status == AccountStatus::Cooldown).count()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while recorded().await < 3 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let logs = cluster.worker_logs();
    cluster.stop_all();
    assert!(
        logs.contains("worker stopped on a backend error"),
        "the wipe did not end the apalis worker, so nothing was tested\n{logs}"
    );
    let accounts = cluster.store.accounts(None).await.unwrap();
    assert!(
        accounts.iter().all(|a| a.status == AccountStatus::Cooldown),
        "every FloodWait must be recorded: {accounts:#?}\n{logs}"
    );
    let attempts = cluster.store.attempts(None, None).await.unwrap();
    let waits: Vec<_> = attempts.iter().map(|a| a.flood_wait_seconds).collect();
    assert_eq!(waits, vec![Some(700); 3], "{attempts:#?}");
}
