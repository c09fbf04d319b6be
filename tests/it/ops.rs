//! Operations: the store's reports, `accounts check`, and a real worker's operations port and
//! OTLP export (received by a small OTLP/HTTP receiver inside the test).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use chrono::{Duration as Span, Utc};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message as _;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, EntityTrait};
use smart_joiner::accounts_config::AccountsConfig;
use smart_joiner::domain::{AccountStatus, TargetLink, TargetStatus};
use smart_joiner::lease::{AccountLocks, LocalLocks};
use smart_joiner::ops::check::{CheckOptions, Verdict, check_accounts};
use smart_joiner::store::entity::{join_attempts, targets};
use smart_joiner::store::{Store, TargetCount};
use smart_joiner::telegram::fake::{ConnectAnswer, Script, ScriptedTelegram};

use crate::cluster::{Cluster, PrivateRedis};
use crate::harness::{account_names, accounts_json};
use crate::on_both_backends;
use crate::support::pg_database;

on_both_backends!(
    status_reports_count_accounts_targets_and_groups_ready_for_posting,
    account_status_counts_group_by_pool_and_status,
    ping_answers_on_a_live_database,
);

// ---------------------------------------------------------------------------------------------
// store reports

async fn target_id(store: &Store, link: &str) -> i64 {
    let link = TargetLink::parse(link).unwrap();
    store.targets(None, None).await.unwrap().into_iter().find(|t| t.link == link).unwrap().id
}

/// Binds a target to `account` as joined, warm-up ending at `warmup_ends_at`.
async fn bind(
    store: &Store,
    target: i64,
    account: i64,
    status: TargetStatus,
    warm: chrono::DateTime<Utc>,
) {
    let model = targets::Entity::find_by_id(target).one(store.connection()).await.unwrap().unwrap();
    let mut active: targets::ActiveModel = model.into();
    active.status = Set(status.as_str().to_owned());
    active.assigned_account_id = Set(Some(account));
    active.joined_at = Set(Some(warm - Span::hours(24)));
    active.warmup_ends_at = Set(Some(warm));
    active.title = Set(Some("Cars".to_owned()));
    active.update(store.connection()).await.unwrap();
}

async fn attempt(
    store: &Store,
    target: i64,
    account: i64,
    outcome: &str,
    at: chrono::DateTime<Utc>,
) {
    join_attempts::ActiveModel {
        target_id: Set(target),
        account_id: Set(account),
        epoch: Set(1),
        started_at: Set(at),
        finished_at: Set(at),
        outcome: Set(outcome.to_owned()),
        worker: Set("test".to_owned()),
        ..Default::default()
    }
    .insert(store.connection())
    .await
    .unwrap();
}

async fn status_reports_count_accounts_targets_and_groups_ready_for_posting(store: Store) {
    let now = Utc::now();
    store.sync_accounts(&["acc_a".into(), "acc_b".into()], "default").await.unwrap();
    let accounts = store.accounts(None).await.unwrap();
    let (a, b) = (accounts[0].id, accounts[1].id);
    let links: Vec<TargetLink> = ["@group1", "@group2", "@group3", "@group4", "@group5"]
        .iter()
        .map(|l| TargetLink::parse(l).unwrap())
        .collect();
    store.import_targets(&links, "cars").await.unwrap();
    store.import_targets(&[TargetLink::parse("@boats_1").unwrap()], "boats").await.unwrap();
    let (g1, g2, g3, g4) = (
        target_id(&store, "@group1").await,
        target_id(&store, "@group2").await,
        target_id(&store, "@group3").await,
        target_id(&store, "@group4").await,
    );
    // acc_a: g1 warm (ended an hour ago), g2 still warming up, g3 a pending request.
    bind(&store, g1, a, TargetStatus::Joined, now - Span::hours(1)).await;
    bind(&store, g2, a, TargetStatus::Joined, now + Span::hours(3)).await;
    bind(&store, g3, a, TargetStatus::Requested, now - Span::hours(2)).await;
    // acc_b: g4 warm, ended earlier than g1.
    bind(&store, g4, b, TargetStatus::Joined, now - Span::hours(5)).await;
    // Counted joins: two for acc_a in the last 24 h, one older; failures never count.
    attempt(&store, g1, a, "joined", now - Span::hours(2)).await;
    attempt(&store, g2, a, "requested", now - Span::minutes(10)).await;
    attempt(&store, g3, a, "joined", now - Span::hours(30)).await;
    attempt(&store, g4, a, "flood_wait", now - Span::minutes(5)).await;
    attempt(&store, g4, b, "already_participant", now - Span::minutes(1)).await;

    let overview = store.account_overview(None, now).await.unwrap();
    let row = |name: &str| overview.iter().find(|o| o.account.session_name == name).unwrap();
    let (oa, ob) = (row("acc_a"), row("acc_b"));
    assert_eq!((oa.joins_24h, oa.channels, oa.bound, oa.ready), (2, 2, 3, 1));
    assert_eq!((ob.joins_24h, ob.channels, ob.bound, ob.ready), (1, 1, 1, 1));
    assert!(store.account_overview(Some("other"), now).await.unwrap().is_empty());

    let counts = store.target_counts().await.unwrap();
    let count = |niche: &str, status: TargetStatus| {
        counts.iter().find(|c| c.niche == niche && c.status == status).map(|c| c.count)
    };
    assert_eq!(count("cars", TargetStatus::Joined), Some(3));
    assert_eq!(count("cars", TargetStatus::Requested), Some(1));
    assert_eq!(count("cars", TargetStatus::New), Some(1));
    assert_eq!(count("boats", TargetStatus::New), Some(1));
    assert_eq!(counts.len(), 4, "{counts:?}");
    assert!(
        counts
            .windows(2)
            .all(|w| (&w[0].niche, w[0].status.as_str()) <= (&w[1].niche, w[1].status.as_str()))
    );
    let _: &TargetCount = &counts[0];

    let ready = store.ready_groups(now, 10).await.unwrap();
    let got: Vec<(String, String)> =
        ready.iter().map(|r| (r.account.clone(), r.link.to_string())).collect();
    assert_eq!(got, vec![("acc_a".into(), "@group1".into()), ("acc_b".into(), "@group4".into())]);
    assert_eq!(ready[0].title.as_deref(), Some("Cars"));
    assert_eq!(store.ready_groups(now, 1).await.unwrap().len(), 1);
    // Before any warm-up ended, nothing is ready.
    assert!(store.ready_groups(now - Span::hours(6), 10).await.unwrap().is_empty());
}

async fn account_status_counts_group_by_pool_and_status(store: Store) {
    store.sync_accounts(&["a1".into(), "a2".into(), "a3".into()], "eu").await.unwrap();
    store.sync_accounts(&["b1".into()], "us").await.unwrap();
    let a2 = store.accounts(Some("eu")).await.unwrap()[1].id;
    store.set_account_status(a2, AccountStatus::Banned, Some("test"), None).await.unwrap();
    let counts = store.account_status_counts().await.unwrap();
    assert_eq!(
        counts,
        vec![
            ("eu".to_owned(), AccountStatus::Active, 2),
            ("eu".to_owned(), AccountStatus::Banned, 1),
            ("us".to_owned(), AccountStatus::Active, 1),
        ]
    );
}

async fn ping_answers_on_a_live_database(store: Store) {
    store.ping().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// accounts check

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_check_connects_each_free_account_once_and_never_one_in_a_flood_wait() {
    let (store, _dir) = crate::support::sqlite_store().await;
    let names: Vec<String> = ["ok", "revoked", "banned", "waiting", "leased", "no_file"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    store.sync_accounts(&names, "default").await.unwrap();
    let file_names: Vec<String> = names.iter().filter(|n| *n != "no_file").cloned().collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("accounts_config.json");
    std::fs::write(&path, accounts_json(&file_names)).unwrap();
    let config = AccountsConfig::load(&path).unwrap();

    let all = store.accounts(None).await.unwrap();
    let id = |n: &str| all.iter().find(|a| a.session_name == n).unwrap().id;
    let until = Utc::now() + Span::minutes(10);
    store
        .set_account_status(
            id("waiting"),
            AccountStatus::FloodWait,
            Some("FLOOD_WAIT"),
            Some(until),
        )
        .await
        .unwrap();
    let mut script = Script::default();
    script.connect.insert("revoked".into(), ConnectAnswer::Unauthorized);
    script.connect.insert("banned".into(), ConnectAnswer::Banned);
    let telegram = ScriptedTelegram::new(script);
    let locks = LocalLocks::default();
    let held = locks.try_acquire(id("leased")).await.unwrap().unwrap();

    let opts =
        CheckOptions { call_timeout: Duration::from_secs(5), accounts: Vec::new(), pool: None };
    let results = check_accounts(&store, &config, &telegram, &locks, &opts).await.unwrap();
    let verdict = |n: &str| results.iter().find(|r| r.session_name == n).unwrap().verdict.clone();
    assert_eq!(verdict("ok"), Verdict::Authorised);
    assert!(matches!(verdict("revoked"), Verdict::NotAuthorised(_)), "{results:?}");
    assert!(matches!(verdict("banned"), Verdict::Banned(_)), "{results:?}");
    assert!(matches!(
        verdict("waiting"),
        Verdict::Waiting { status: AccountStatus::FloodWait, .. }
    ));
    assert_eq!(verdict("leased"), Verdict::Busy);
    assert_eq!(verdict("no_file"), Verdict::NoConfig);

    // Only the free accounts were connected, each once, and every connection was closed.
    let events = telegram.events();
    let mut connected: Vec<&str> = events
        .iter()
        .filter(|e| matches!(e.kind, smart_joiner::telegram::fake::EventKind::Connect))
        .map(|e| e.account.as_str())
        .collect();
    connected.sort();
    assert_eq!(connected, vec!["ok"], "{events:?}");
    // The check gave every lease back (only the test's own is held).
    assert!(locks.is_held(id("leased")).await.unwrap());
    assert!(!locks.is_held(id("ok")).await.unwrap());
    assert!(locks.release(&held).await.unwrap());

    // Selecting by name reports unknown names instead of ignoring them.
    let opts = CheckOptions { accounts: vec!["ok".into(), "ghost".into()], ..opts };
    let results = check_accounts(&store, &config, &telegram, &locks, &opts).await.unwrap();
    let got: Vec<(&str, &str)> =
        results.iter().map(|r| (r.session_name.as_str(), r.verdict.kind())).collect();
    assert_eq!(got, vec![("ghost", "unknown"), ("ok", "authorised")]);
}

// ---------------------------------------------------------------------------------------------
// a real worker: operations port and OTLP export

/// Bodies of the OTLP/HTTP export requests received, by path.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<(String, Bytes)>>>);

impl Received {
    fn bodies(&self, path: &str) -> Vec<Bytes> {
        self.0.lock().unwrap().iter().filter(|(p, _)| p == path).map(|(_, b)| b.clone()).collect()
    }
}

/// A minimal OTLP/HTTP receiver: accepts protobuf export requests on the standard paths.
async fn otlp_receiver() -> (String, Received) {
    let received = Received::default();
    async fn keep(State(r): State<Received>, uri: axum::http::Uri, body: Bytes) -> &'static str {
        r.0.lock().unwrap().push((uri.path().to_owned(), body));
        ""
    }
    let app = Router::new()
        .route("/v1/traces", post(keep))
        .route("/v1/metrics", post(keep))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

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

/// The operations port a worker logged.
async fn ops_port(cluster: &Cluster, name: &str) -> u16 {
    let path = cluster.dir.path().join(format!("{name}.out"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if let Some(rest) = text.split("operations endpoints on http://0.0.0.0:").nth(1) {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            return digits.parse().unwrap();
        }
        assert!(Instant::now() < deadline, "worker never logged its port:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_serves_health_readiness_and_metrics_and_exports_spans_and_metrics_over_otlp() {
    let (store, url) = pg_database().await;
    let redis = PrivateRedis::start();
    let (otlp_url, received) = otlp_receiver().await;
    let names = account_names(2);
    store.sync_accounts(&names, "default").await.unwrap();
    let links: Vec<TargetLink> =
        ["@ops_a", "@ops_b"].iter().map(|l| TargetLink::parse(l).unwrap()).collect();
    store.import_targets(&links, "cars").await.unwrap();
    let mut script = Script::default();
    script
        .targets
        .insert("@ops_b".into(), vec!["flood_wait:1".parse().unwrap(), "joined".parse().unwrap()]);
    let env = [
        ("METRICS_PORT", "0"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_url.as_str()),
        ("OTEL_SERVICE_NAME", "ops-test-worker"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "500"),
        ("OTEL_BSP_SCHEDULE_DELAY", "200"),
    ];
    let mut cluster =
        Cluster::new(store, url, &redis.url, &accounts_json(&names), &script, &env).await;
    cluster.spawn_worker("ops1").await;
    let port = ops_port(&cluster, "ops1").await;

    assert_eq!(get(port, "/healthz").await, (200, "ok\n".to_owned()));
    assert_eq!(get(port, "/readyz").await, (200, "ready\n".to_owned()));
    let (code, before) = get(port, "/metrics").await;
    assert_eq!(code, 200);
    assert_eq!(
        metric_value(&before, "smart_joiner_accounts{pool=\"default\",status=\"active\"}"),
        Some(2.0),
        "{before}"
    );
    assert_eq!(metric_value(&before, "smart_joiner_leases_held"), Some(0.0), "{before}");
    assert_eq!(get(port, "/nope").await.0, 404);

    let open = cluster
        .settle("cars", 10, "30s", Duration::from_millis(300), Duration::from_secs(60))
        .await;
    assert_eq!(open, 0, "targets left open:\n{}", cluster.worker_logs());
    let (_, after) = get(port, "/metrics").await;
    assert_eq!(
        metric_value(&after, "smart_joiner_joins_total{outcome=\"joined\"}"),
        Some(2.0),
        "{after}"
    );
    assert_eq!(metric_value(&after, "smart_joiner_joins_total{outcome=\"flood_wait\"}"), Some(1.0));
    assert_eq!(metric_value(&after, "smart_joiner_flood_wait_seconds_total"), Some(1.0));
    assert!(metric_value(&after, "smart_joiner_jobs_rescheduled_total").is_some_and(|n| n >= 1.0));
    assert_eq!(
        metric_value(&after, "smart_joiner_join_duration_seconds_count{outcome=\"joined\"}"),
        Some(2.0)
    );
    assert!(
        after.contains("smart_joiner_queue_depth{pool=\"default\",state=\"ready\"}"),
        "{after}"
    );

    // SIGTERM flushes what is left; then the receiver must hold both signals.
    cluster.stop_all();
    let status = cluster.workers[0].try_wait().unwrap();
    assert!(status.is_some_and(|s| s.success()), "worker did not stop cleanly: {status:?}");
    let traces: Vec<ExportTraceServiceRequest> = received
        .bodies("/v1/traces")
        .iter()
        .map(|b| ExportTraceServiceRequest::decode(b.as_ref()).expect("OTLP trace protobuf"))
        .collect();
    let spans: Vec<_> = traces
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .collect();
    let joins: Vec<_> = spans.iter().filter(|s| s.name == "join").collect();
    assert!(!joins.is_empty(), "no join span among {} spans", spans.len());
    let attr = |span: &opentelemetry_proto::tonic::trace::v1::Span, key: &str| {
        span.attributes.iter().find(|a| a.key == key).and_then(|a| match &a.value.as_ref()?.value {
            Some(AnyValue::StringValue(s)) => Some(s.clone()),
            _ => None,
        })
    };
    assert!(
        joins.iter().any(|s| attr(s, "outcome").as_deref() == Some("joined")
            && attr(s, "target").as_deref() == Some("@ops_a")
            && attr(s, "account").is_some_and(|a| a.starts_with("acc_"))),
        "join spans lack target/account/outcome: {joins:?}"
    );
    let service = traces[0].resource_spans[0]
        .resource
        .as_ref()
        .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
        .and_then(|a| match &a.value.as_ref()?.value {
            Some(AnyValue::StringValue(s)) => Some(s.clone()),
            _ => None,
        });
    assert_eq!(service.as_deref(), Some("ops-test-worker"));

    let metric_names: Vec<String> = received
        .bodies("/v1/metrics")
        .iter()
        .map(|b| ExportMetricsServiceRequest::decode(b.as_ref()).expect("OTLP metrics protobuf"))
        .flat_map(|r| r.resource_metrics)
        .flat_map(|rm| rm.scope_metrics)
        .flat_map(|sm| sm.metrics)
        .map(|m| m.name)
        .collect();
    for name in ["smart_joiner.joins", "smart_joiner.join.duration", "smart_joiner.accounts"] {
        assert!(metric_names.iter().any(|n| n == name), "{name} not exported: {metric_names:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_names_the_dependency_that_is_down_while_liveness_follows_the_monitor() {
    use smart_joiner::lease::RedisLocks;
    use smart_joiner::ops::health::{self, Liveness, Probes};
    use smart_joiner::queue::{JobQueue, QueueSettings, connect_redis};
    use smart_joiner::telemetry::metrics::Metrics;

    let (store, _url) = pg_database().await;
    let redis = PrivateRedis::start();
    let conn = connect_redis(&redis.url).await.unwrap();
    let metrics: &'static Metrics =
        Box::leak(Box::new(Metrics::new(opentelemetry_sdk::Resource::builder_empty().build())));
    let liveness = Liveness::default();
    let probes = Probes {
        liveness: liveness.clone(),
        store,
        locks: RedisLocks::new(conn.clone(), "opstest:", Duration::from_secs(30)),
        queue: JobQueue::new(conn, &QueueSettings::default()),
        pool: "default".into(),
        metrics,
    };
    let listener = health::bind(0).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(health::serve(listener, probes, stop.clone().cancelled_owned()));

    assert_eq!(get(port, "/healthz").await.0, 503, "no monitor yet");
    liveness.set_running(true);
    assert_eq!(get(port, "/healthz").await, (200, "ok\n".to_owned()));
    assert_eq!(get(port, "/readyz").await, (200, "ready\n".to_owned()));

    drop(redis);
    let (code, body) = get(port, "/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.starts_with("not ready: redis"), "{body}");
    assert!(!body.contains("database"), "{body}");
    // A dependency outage is not a reason to restart the process.
    assert_eq!(get(port, "/healthz").await.0, 200);
    // /metrics still answers, with the gauges it could not refresh left out or stale.
    assert_eq!(get(port, "/metrics").await.0, 200);

    liveness.set_running(false);
    assert_eq!(get(port, "/healthz").await.0, 503);
    stop.cancel();
    server.await.unwrap().unwrap();
}
