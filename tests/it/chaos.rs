//! The operator-chaos test: the real binaries side by side on one Postgres database, as
//! operators run them: `run`, `accounts check`, a worker and admin commands at once; a pool
//! typo; a partial and an all-invalid accounts file; SIGINT mid-batch. Telegram is tgsim,
//! over the real client path, with a second connection of a key killing it (as Telegram's
//! AUTH_KEY_DUPLICATED does). It fails on any rule tgsim saw broken, any account status or
//! pool nobody asked for, and any lost binding.

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, Statement};
use smart_joiner::domain::{AccountStatus, TargetLink, TargetStatus};
use smart_joiner::ops::invariants;
use tgsim::{Account, Answer, Group, Scenario, Script, Server};

use crate::cluster::{Cluster, PrivateRedis};
use crate::harness::LIMITS;
use crate::support::pg_database;

const ACCOUNTS: usize = 8;

fn group(i: usize) -> String {
    format!("chaos_grp_{i:03}")
}

async fn output(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().expect("run smart-joiner")).await.unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn write_targets(dir: &std::path::Path, name: &str, range: std::ops::Range<usize>) -> String {
    let path = dir.join(name);
    let lines: Vec<String> = range.map(|i| format!("https://t.me/{}", group(i))).collect();
    std::fs::write(&path, lines.join("\n")).unwrap();
    path.display().to_string()
}

async fn wait_child(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operators_commands_side_by_side_cost_no_account_and_no_binding() {
    let mut scenario = Scenario::new().min_join_pause(Duration::from_millis(50));
    for j in 0..ACCOUNTS {
        scenario = scenario.account(Account::new(format!("acc_{j:02}"), 300_000 + j as i64));
    }
    for i in 0..140 {
        scenario = scenario
            .group(Group::new(3_000_000 + i as i64, format!("Chaos {i}")).username(group(i)));
    }
    // One join of `run` is left in doubt (no answer), and its retry finds it joined.
    scenario = scenario.script(
        Script::join().target(format!("@{}", group(3))).answers([Answer::Silence, Answer::Ok]),
    );
    let server = Server::start(scenario, "127.0.0.1:0").await.unwrap();
    let (store, url) = pg_database().await;
    let redis = PrivateRedis::start();
    let accounts_json = server.accounts_config_json();
    let env = [
        ("CALL_TIMEOUT", "2s"),
        ("LEASE_TTL", "6s"),
        ("JOIN_PAUSE_MIN", "300ms"),
        ("JOIN_PAUSE_MAX", "500ms"),
        ("ERROR_PAUSE", "100ms"),
    ];
    let mut cluster =
        Cluster::new(store, url, &redis.url, &accounts_json.to_string(), &Default::default(), &env)
            .await
            .with_real_telegram();
    let dir = cluster.dir.path().to_path_buf();

    // The operator's setup, through the admin binary.
    let out = output(cluster.admin(&["accounts", "sync"], &[])).await;
    assert!(out.status.success(), "{}", text(&out));
    for (niche, file, range) in [("run", "run.txt", 0..30), ("work", "work.txt", 30..60)] {
        let path = write_targets(&dir, file, range);
        let out = output(cluster.admin(&["targets", "import", &path, "--niche", niche], &[])).await;
        assert!(out.status.success(), "{}", text(&out));
    }

    // A worker serves the pool while `run` works another niche with the same accounts, and
    // the operator checks accounts and reads reports meanwhile.
    cluster.spawn_worker("chaos-w1").await;
    cluster.produce("work", 30, "30s").await;
    let mut run = cluster
        .admin(&["run", "run", "30"], &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut checks = 0;
    while run.try_wait().unwrap().is_none() && checks < 12 {
        for args in [
            &["accounts", "check", "--leases", "local", "--json"][..],
            &["accounts", "check", "--json"],
            &["status", "--json"],
            &["accounts", "list"],
            &["targets", "list", "--niche", "run"],
        ] {
            let out = output(cluster.admin(args, &[])).await;
            assert!(out.status.success(), "{args:?}: {}", text(&out));
        }
        checks += 1;
    }
    assert!(checks > 0, "run ended before any check ran alongside it");
    let status = wait_child(&mut run, Duration::from_secs(120)).await.expect("run ends");
    let run_out = run.wait_with_output().unwrap();
    assert!(status.success(), "{}", text(&run_out));
    let open = cluster
        .settle("work", 30, "30s", Duration::from_millis(500), Duration::from_secs(90))
        .await;
    assert_eq!(open, 0, "{}", cluster.worker_logs());

    // A pool typo: refused, nothing moved.
    let out = output(cluster.admin(&["run", "run", "5", "--pool", "defualt"], &[])).await;
    assert!(!out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("defualt"), "{}", text(&out));

    // An accounts file without two of the accounts: they are not used and keep their status.
    let mut partial = accounts_json.clone();
    let entries = partial.as_array_mut().unwrap();
    entries.truncate(ACCOUNTS - 2);
    std::fs::write(dir.join("partial.json"), partial.to_string()).unwrap();
    let left_out = ["acc_06", "acc_07"];
    let before: Vec<usize> = left_out.iter().map(|a| server.requests_of(a).len()).collect();
    let path = write_targets(&dir, "partial.txt", 60..80);
    let out = output(cluster.admin(&["targets", "import", &path, "--niche", "partial"], &[])).await;
    assert!(out.status.success(), "{}", text(&out));
    let partial_path = dir.join("partial.json").display().to_string();
    let out = output(
        cluster.admin(&["run", "partial", "20"], &[("ACCOUNTS_CONFIG", partial_path.as_str())]),
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let after: Vec<usize> = left_out.iter().map(|a| server.requests_of(a).len()).collect();
    assert_eq!(before, after, "accounts missing from the file were connected");

    // A file whose every entry is invalid: refused before anything is written.
    let mut invalid = accounts_json.clone();
    for e in invalid.as_array_mut().unwrap() {
        e["api_hash"] = "not-a-hash".into();
        e["session_name"] = format!("new_{}", e["session_name"].as_str().unwrap()).into();
    }
    std::fs::write(dir.join("invalid.json"), invalid.to_string()).unwrap();
    let invalid_path = dir.join("invalid.json").display().to_string();
    let rows_before = cluster.store.accounts(None).await.unwrap().len();
    let out = output(
        cluster.admin(&["run", "partial", "5"], &[("ACCOUNTS_CONFIG", invalid_path.as_str())]),
    )
    .await;
    assert!(!out.status.success(), "{}", text(&out));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("not-a-hash"), "secret echoed");
    assert_eq!(cluster.store.accounts(None).await.unwrap().len(), rows_before);

    // SIGINT mid-batch, at a real pace: joins in flight end, holds are released, exit 130.
    let path = write_targets(&dir, "sigint.txt", 80..140);
    let out = output(cluster.admin(&["targets", "import", &path, "--niche", "sigint"], &[])).await;
    assert!(out.status.success(), "{}", text(&out));
    let mut run = cluster
        .admin(&["run", "sigint", "60"], &[("JOIN_PAUSE_MIN", "5s"), ("JOIN_PAUSE_MAX", "6s")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sent = Command::new("kill").args(["-INT", &run.id().to_string()]).status().unwrap();
    assert!(sent.success());
    let status = wait_child(&mut run, Duration::from_secs(30)).await.expect("SIGINT stops run");
    let out = run.wait_with_output().unwrap();
    assert_eq!(status.code(), Some(130), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("interrupted"), "{}", text(&out));
    cluster.stop_all();
    let held = cluster
        .store
        .connection()
        .query_one_raw(Statement::from_string(
            sea_orm::DatabaseBackend::Postgres,
            "SELECT COUNT(*) FROM accounts WHERE held_until > now()",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index::<i64>(0)
        .unwrap();
    assert_eq!(held, 0, "holds left behind");

    // Nothing nobody asked for: no rule broken on Telegram's side, every account active in
    // its pool, every binding whole and matching Telegram's members.
    let violations = server.violations();
    assert!(violations.is_empty(), "{violations:#?}\n{}", cluster.worker_logs());
    let accounts = cluster.store.accounts(None).await.unwrap();
    assert_eq!(accounts.len(), ACCOUNTS);
    for a in &accounts {
        assert_eq!((a.pool.as_str(), a.status), ("default", AccountStatus::Active), "{a:?}");
    }
    let inv = invariants::check(&cluster.store, Duration::from_millis(300), &LIMITS).await.unwrap();
    assert!(
        inv.binding.is_empty() && inv.flood_wait.is_empty() && inv.pacing.is_empty(),
        "{inv:#?}"
    );
    let targets = cluster.store.targets(None, None).await.unwrap();
    for t in targets.iter().filter(|t| t.status == TargetStatus::Joined) {
        let bound = accounts.iter().find(|a| Some(a.id) == t.assigned_account_id).unwrap();
        assert_eq!(
            server.members(&t.link.to_string()),
            vec![bound.session_name.clone()],
            "{}",
            t.link
        );
    }
    let joined_run =
        targets.iter().filter(|t| t.niche == "run" && t.status == TargetStatus::Joined).count();
    assert_eq!(joined_run, 30, "{targets:#?}");
    let link = TargetLink::parse(&format!("@{}", group(3))).unwrap();
    let in_doubt = targets.iter().find(|t| t.link == link).unwrap();
    assert_eq!(in_doubt.status, TargetStatus::Joined, "the in-doubt join was found joined");
    server.shutdown().await;
}
