//! Monitoring and autoscaling: the exporter's numbers (due jobs, workable and busy accounts,
//! slots) on real Postgres and Redis, and the dashboard and alert rules checked against what a
//! real worker and a real exporter export.

use std::collections::BTreeSet;
use std::process::Child;
use std::time::{Duration, Instant};

use chrono::{Duration as Span, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use smart_joiner::domain::{AccountStatus, ActiveHours, JoinJobV1, TargetLink};
use smart_joiner::lease::RedisLocks;
use smart_joiner::ops::exporter::{self, Exporter, PoolScaling};
use smart_joiner::queue::{JobQueue, QueueSettings, connect_redis};
use smart_joiner::store::Limits;
use smart_joiner::store::entity::{accounts, targets};
use smart_joiner::telegram::fake::Script;
use smart_joiner::telemetry::metrics::Metrics;

use crate::cluster::{Cluster, PrivateRedis};
use crate::harness::{account_names, accounts_json};
use crate::support::pg_database;

/// GET over plain HTTP/1.1: (status code, body).
async fn get(port: u16, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.unwrap();
    let code = raw.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (code, body)
}

fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

fn job(target_id: i64) -> JoinJobV1 {
    JoinJobV1 {
        target_id,
        pool: "default".into(),
        excluded_accounts: vec![],
        generation: 0,
        wait_for: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exporter_counts_due_jobs_not_jobs_waiting_for_a_flood_wait_and_caps_slots_by_workable_accounts()
 {
    let (store, _url) = pg_database().await;
    let redis = PrivateRedis::start();
    let conn = connect_redis(&redis.url).await.unwrap();
    let prefix = "montest:";
    let names = account_names(4);
    store.sync_accounts(&names, "default").await.unwrap();
    let ids: Vec<i64> =
        store.accounts(Some("default")).await.unwrap().iter().map(|a| a.id).collect();
    let now = Utc::now();
    // acc 1: in a FloodWait for an hour; acc 2: held by a join in flight; acc 3: banned.
    store
        .set_account_status(
            ids[1],
            AccountStatus::FloodWait,
            Some("FLOOD_WAIT"),
            Some(now + Span::hours(1)),
        )
        .await
        .unwrap();
    accounts::Entity::update_many()
        .col_expr(accounts::Column::HeldUntil, Expr::val(Some(now + Span::minutes(2))))
        .filter(accounts::Column::Id.eq(ids[2]))
        .exec(store.connection())
        .await
        .unwrap();
    store
        .set_account_status(ids[3], AccountStatus::Banned, Some("USER_DEACTIVATED_BAN"), None)
        .await
        .unwrap();

    let links: Vec<TargetLink> =
        (0..6).map(|i| TargetLink::parse(&format!("@mon_t{i}")).unwrap()).collect();
    store.import_targets(&links, "cars").await.unwrap();
    let target_ids: Vec<i64> =
        store.targets(None, None).await.unwrap().iter().map(|t| t.id).collect();
    // One target waits for an in-doubt retry.
    targets::Entity::update_many()
        .col_expr(targets::Column::Status, Expr::val("queued"))
        .col_expr(targets::Column::InDoubtTries, Expr::val(1))
        .filter(targets::Column::Id.eq(target_ids[0]))
        .exec(store.connection())
        .await
        .unwrap();

    // Three jobs due now, two waiting for a FloodWait to end, one due on another pool.
    let settings =
        QueueSettings { name: format!("{prefix}join:v1:default"), ..QueueSettings::default() };
    let queue = JobQueue::new(conn.clone(), &settings);
    for &t in &target_ids[..3] {
        queue.push(job(t), now).await.unwrap();
    }
    for &t in &target_ids[3..5] {
        queue.push(job(t), now + Span::minutes(40)).await.unwrap();
    }
    let eu = JobQueue::new(
        conn.clone(),
        &QueueSettings { name: format!("{prefix}join:v1:eu"), ..QueueSettings::default() },
    );
    eu.push(job(target_ids[5]), now).await.unwrap();

    let metrics: &'static Metrics =
        Box::leak(Box::new(Metrics::new(opentelemetry_sdk::Resource::builder_empty().build())));
    let exp = Exporter {
        store: store.clone(),
        queue: queue.clone(),
        locks: RedisLocks::new(conn, prefix, Duration::from_secs(30)),
        redis_prefix: prefix.into(),
        pools: vec!["eu".into()],
        limits: Limits { daily_join_cap: 20, channel_limit: 500 },
        active_hours: None,
        metrics,
    };
    // Scheduled holds all five; only three are due; one account of four is workable.
    assert_eq!(queue.depth().await.unwrap(), (0, 5));
    let got = exp.scaling("default").await.unwrap();
    assert_eq!(got, PoolScaling { pool: "default".into(), due: 3, workable: 1, busy: 1 });
    assert_eq!(got.slots(), 2, "the join in flight plus one due job with an account");
    // Given the pool's active hours (`ACTIVE_HOURS`) closed now, the one free account (it has
    // none of its own) may not join: not workable, and the due jobs want no slot.
    let at = |h: i64| (Utc::now() + Span::hours(h)).format("%H:%M").to_string();
    let closed = ActiveHours::parse(&format!("UTC {}-{}", at(2), at(3))).unwrap();
    let outside = Exporter { active_hours: Some(closed), ..exp.clone() };
    let got = outside.scaling("default").await.unwrap();
    assert_eq!(got, PoolScaling { pool: "default".into(), due: 3, workable: 0, busy: 1 });
    assert_eq!(got.slots(), 1, "only the join in flight");
    let open = ActiveHours::parse(&format!("UTC {}-{}", at(-1), at(1))).unwrap();
    let inside = Exporter { active_hours: Some(open), ..exp.clone() };
    assert_eq!(inside.scaling("default").await.unwrap().workable, 1);
    // Promoting the due jobs to the ready list changes nothing the scaler sees.
    assert_eq!(queue.promote_due().await.unwrap(), 3);
    assert_eq!(exp.scaling("default").await.unwrap().due, 3);
    // A pool with due work and no account at all wants no slot.
    let eu_now = exp.scaling("eu").await.unwrap();
    assert_eq!((eu_now.due, eu_now.workable, eu_now.slots()), (1, 0, 0));
    assert_eq!(exp.pools().await.unwrap(), vec!["default".to_owned(), "eu".to_owned()]);

    let listener = smart_joiner::ops::health::bind(0).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(exporter::serve(listener, exp, stop.clone().cancelled_owned()));
    let (code, body) = get(port, "/scaling/default").await;
    assert_eq!(code, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        answer,
        serde_json::json!({"pool": "default", "due": 3, "workable": 1, "busy": 1, "slots": 2})
    );
    let (_, text) = get(port, "/metrics").await;
    for (series, want) in [
        ("smart_joiner_queue_due{pool=\"default\"}", 3.0),
        ("smart_joiner_queue_due{pool=\"eu\"}", 1.0),
        ("smart_joiner_accounts_workable{pool=\"default\"}", 1.0),
        ("smart_joiner_accounts_busy{pool=\"default\"}", 1.0),
        ("smart_joiner_scaling_slots{pool=\"default\"}", 2.0),
        ("smart_joiner_scaling_slots{pool=\"eu\"}", 0.0),
        ("smart_joiner_queue_depth{pool=\"default\",state=\"scheduled\"}", 2.0),
        ("smart_joiner_queue_depth{pool=\"default\",state=\"ready\"}", 3.0),
        ("smart_joiner_accounts{pool=\"default\",status=\"banned\"}", 1.0),
        ("smart_joiner_accounts{pool=\"eu\",status=\"active\"}", 0.0),
        ("smart_joiner_targets_in_doubt", 1.0),
        ("smart_joiner_dependency_up{dependency=\"database\"}", 1.0),
        ("smart_joiner_dependency_up{dependency=\"redis\"}", 1.0),
    ] {
        assert_eq!(metric_value(&text, series), Some(want), "{series} in:\n{text}");
    }
    assert_eq!(get(port, "/readyz").await, (200, "ready\n".to_owned()));

    // Redis gone: the scaler gets an error (KEDA's fallback applies), never a made-up zero.
    drop(redis);
    let (code, body) = get(port, "/scaling/default").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("redis"), "{body}");
    let (_, text) = get(port, "/metrics").await;
    assert_eq!(metric_value(&text, "smart_joiner_dependency_up{dependency=\"redis\"}"), Some(0.0));
    assert_eq!(get(port, "/readyz").await.0, 503);
    stop.cancel();
    server.await.unwrap().unwrap();
}

/// Every `smart_joiner_*` name a file mentions.
fn names_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("smart_joiner_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}

/// Metric names in a Prometheus text exposition.
fn exported(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next().map(str::to_owned))
        .collect()
}

/// Waits for `needle` followed by a port number in the file at `path`.
async fn logged_port(path: &std::path::Path, needle: &str) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(rest) = text.split(needle).nth(1) {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            return digits.parse().unwrap();
        }
        assert!(Instant::now() < deadline, "no port logged in {}:\n{text}", path.display());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dashboard_and_the_alert_rules_name_only_metrics_a_real_worker_or_the_exporter_exports()
{
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = [
        "deploy/grafana/smart-joiner.json",
        "deploy/prometheus/smart-joiner.rules.yaml",
        "k8s/monitoring/grafana-dashboard.json",
        "k8s/monitoring/prometheusrule.yaml",
    ];
    let mut named: Vec<(&str, BTreeSet<String>)> = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(root.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        let names = names_in(&text);
        assert!(names.len() >= 5, "{f} names only {names:?}");
        named.push((f, names));
    }

    let (store, url) = pg_database().await;
    let redis = PrivateRedis::start();
    let names = account_names(2);
    store.sync_accounts(&names, "default").await.unwrap();
    let links: Vec<TargetLink> =
        ["@mon_a", "@mon_b"].iter().map(|l| TargetLink::parse(l).unwrap()).collect();
    store.import_targets(&links, "cars").await.unwrap();
    let mut script = Script::default();
    // A FloodWait, then a join: every event metric (joins, FloodWait seconds, reschedules,
    // latency) gets a sample.
    script
        .targets
        .insert("@mon_b".into(), vec!["flood_wait:1".parse().unwrap(), "joined".parse().unwrap()]);
    let mut cluster =
        Cluster::new(store, url, &redis.url, &accounts_json(&names), &script, &[]).await;
    cluster.spawn_worker("mon1").await;
    let exporter_log = cluster.dir.path().join("exporter.log");
    let log = std::fs::File::create(&exporter_log).unwrap();
    let exporter = Killed(
        cluster
            .admin(&["exporter", "--port", "0"], &[])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn the exporter"),
    );
    let worker_port = logged_port(
        &cluster.dir.path().join("mon1.out"),
        "operations endpoints on http://0.0.0.0:",
    )
    .await;
    let exporter_port = logged_port(&exporter_log, "exporter on http://0.0.0.0:").await;

    let open = cluster
        .settle("cars", 10, "30s", Duration::from_millis(300), Duration::from_secs(60))
        .await;
    assert_eq!(open, 0, "targets left open:\n{}", cluster.worker_logs());
    let (code, worker_text) = get(worker_port, "/metrics").await;
    assert_eq!(code, 200);
    let (code, exporter_text) = get(exporter_port, "/metrics").await;
    assert_eq!(code, 200, "{exporter_text}");
    assert_eq!(
        metric_value(&worker_text, "smart_joiner_worker_running{pool=\"default\"}"),
        Some(1.0),
        "{worker_text}"
    );
    let (code, scaling) = get(exporter_port, "/scaling/default").await;
    assert_eq!(code, 200, "{scaling}");
    let scaling: serde_json::Value = serde_json::from_str(&scaling).unwrap();
    assert_eq!(scaling["due"], 0, "everything settled: {scaling}");

    let mut available = exported(&worker_text);
    available.extend(exported(&exporter_text));
    for (file, names) in &named {
        let missing: Vec<_> = names.difference(&available).collect();
        assert!(
            missing.is_empty(),
            "{file} names metrics nothing exports: {missing:?}\nexported: {available:?}"
        );
    }
    cluster.stop_all();
    drop(exporter);
}
