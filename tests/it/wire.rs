//! Every row of the decision table reached over the wire: `run` and the worker, through the
//! real grammers adapter, against tgsim; tgsim must report zero violations.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use smart_joiner::accounts_config::AccountsConfig;
use smart_joiner::domain::{AccountStatus, Pacing, TargetLink, TargetStatus};
use smart_joiner::modes::batch::SmartJoiner;
use smart_joiner::ops::invariants;
use smart_joiner::store::Limits;
use smart_joiner::telegram::grammers::GrammersTelegram;
use tgsim::{Account, Answer, Group, Scenario, Script, Server, Trigger};

use crate::cluster::{Cluster, PrivateRedis};
use crate::harness::JoinEnv;
use crate::support::{pg_database, sqlite_store};

const LIMITS: Limits = Limits { daily_join_cap: 1000, channel_limit: 500 };

fn pacing() -> Pacing {
    Pacing {
        join_pause_min: Duration::from_millis(300),
        join_pause_max: Duration::from_millis(400),
        error_pause: Duration::from_millis(100),
        ..Pacing::default()
    }
}

/// (link, group, script answers)
fn rows() -> Vec<(&'static str, Group, Vec<Answer>)> {
    let g = |id, name: &str| Group::new(id, name).username(name);
    vec![
        ("@row_joined", g(1, "row_joined"), vec![]),
        ("@row_already", g(2, "row_already"), vec![Answer::AlreadyParticipant]),
        ("t.me/+RowRequest1", Group::new(3, "req").invite("RowRequest1").request_needed(), vec![]),
        ("@row_webview", g(4, "row_webview"), vec![Answer::WebView { bot_id: 7_000_000_001 }]),
        (
            "@row_flood_short",
            g(5, "row_flood_short"),
            vec![Answer::FloodWait { seconds: 2 }, Answer::Ok],
        ),
        (
            "@row_flood_long",
            g(6, "row_flood_long"),
            vec![Answer::FloodPremiumWait { seconds: 700 }, Answer::Ok],
        ),
        (
            "@row_slowmode",
            g(7, "row_slowmode"),
            vec![Answer::SlowmodeWait { seconds: 1 }, Answer::Ok],
        ),
        ("@row_not_occupied", g(8, "row_nobody"), vec![]),
        (
            "t.me/+RowExpired1",
            Group::new(9, "exp").invite("RowExpired1"),
            vec![Answer::InviteHashExpired],
        ),
        ("@row_private", g(10, "row_private"), vec![Answer::ChannelPrivate]),
        (
            "@row_too_many",
            g(11, "row_too_many"),
            vec![Answer::Error { code: 400, message: "USERS_TOO_MUCH".into() }],
        ),
        ("@row_banned_here", g(12, "row_banned_here"), vec![Answer::UserBannedInChannel]),
        ("@row_rpc_fail", g(13, "row_rpc_fail"), vec![Answer::RpcCallFail, Answer::Ok]),
        ("@row_dropped", g(14, "row_dropped"), vec![Answer::Drop { after_join: true }, Answer::Ok]),
        ("@row_silent", g(15, "row_silent"), vec![Answer::Silence]),
    ]
}

fn scenario() -> (Scenario, Vec<TargetLink>) {
    let mut s = Scenario::new().min_join_pause(pacing().join_pause_min);
    for i in 0..6 {
        s = s.account(Account::new(format!("plain_{i}"), 1000 + i));
    }
    s = s
        .account(Account::new("frozen_one", 2001))
        .script(Script::join().account("frozen_one").answers([Answer::Frozen]))
        .account(Account::new("full_one", 2002))
        .script(Script::join().account("full_one").answers([Answer::ChannelsTooMuch]))
        .account(Account::new("flooded_one", 2003))
        .script(Script::join().account("flooded_one").answers([Answer::PeerFlood]))
        .account(Account::new("revoked_one", 2004))
        .script(Script::on(Trigger::Any).account("revoked_one").answers([Answer::SessionRevoked]))
        .account(Account::new("banned_one", 2005))
        .script(Script::join().account("banned_one").answers([Answer::UserDeactivatedBan]))
        .account(Account::new("ghost_one", 2006).unregistered());
    let mut links = Vec::new();
    for (link, group, answers) in rows() {
        // The dead username is not registered with the DC at all.
        if link != "@row_not_occupied" {
            s = s.group(group);
        }
        if !answers.is_empty() {
            s = s.script(Script::join().target(link).answers(answers));
        }
        links.push(TargetLink::parse(link).unwrap());
    }
    for i in 0..12 {
        let name = format!("spare_group_{i:02}");
        s = s.group(Group::new(300 + i, &name).username(&name));
    }
    for i in 0..20 {
        let name = format!("plain_group_{i:02}");
        s = s.group(Group::new(100 + i, &name).username(&name));
        links.push(TargetLink::parse(&format!("@{name}")).unwrap());
    }
    (s, links)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_reaches_every_row_of_the_decision_table_over_the_wire() {
    let (scenario, links) = scenario();
    let server = Server::start(scenario, "127.0.0.1:0").await.unwrap();
    let accounts = AccountsConfig::parse(&server.accounts_config_json().to_string()).unwrap();
    let (store, _dir) = sqlite_store().await;
    // Accounts scripted to fail serve their own pool and niche, so which target they meet
    // first never depends on scheduling.
    let (plain, special): (Vec<String>, Vec<String>) =
        accounts.iter().map(|a| a.session_name.clone()).partition(|n| n.starts_with("plain_"));
    store.sync_accounts(&plain, "default").await.unwrap();
    store.sync_accounts(&special, "special").await.unwrap();
    store.import_targets(&links, "wire").await.unwrap();
    let spare: Vec<TargetLink> =
        (0..12).map(|i| TargetLink::parse(&format!("@spare_group_{i:02}")).unwrap()).collect();
    store.import_targets(&spare, "wire_special").await.unwrap();

    let telegram = Arc::new(GrammersTelegram::new(Duration::from_secs(1)));
    // A short call timeout makes the silent group fail fast.
    let svc = JoinEnv::new(&store, telegram, accounts)
        .pacing(pacing())
        .call_timeout(Duration::from_secs(1))
        .service();
    SmartJoiner::new(svc.clone(), "default", Duration::from_secs(30))
        .run_batch("wire", links.len() as u64)
        .await
        .unwrap();
    let report = SmartJoiner::new(svc, "special", Duration::from_secs(30))
        .run_batch("wire_special", 12)
        .await
        .unwrap();
    assert_eq!(
        report.by_status.get("new"),
        Some(&12),
        "no special account can join: all given back"
    );

    let targets: HashMap<String, _> = store
        .targets(None, None)
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.link.to_string(), t))
        .collect();
    let expect = |link: &str, status: TargetStatus, code: Option<&str>| {
        let t = &targets[link];
        assert_eq!((t.status, t.error_code.as_deref()), (status, code), "{link}: {t:?}");
        t.clone()
    };
    use TargetStatus::*;
    for link in [
        "@row_joined",
        "@row_already",
        "@row_flood_short",
        "@row_flood_long",
        "@row_slowmode",
        "@row_rpc_fail",
        "@row_dropped",
    ] {
        assert!(expect(link, Joined, None).assigned_account_id.is_some());
    }
    expect("t.me/+RowRequest1", Requested, None);
    expect("@row_webview", Requested, None);
    expect("@row_not_occupied", Error, Some("USERNAME_NOT_OCCUPIED"));
    expect("t.me/+RowExpired1", Error, Some("INVITE_HASH_EXPIRED"));
    expect("@row_private", Error, Some("CHANNEL_PRIVATE"));
    expect("@row_too_many", Error, Some("USERS_TOO_MUCH"));
    expect("@row_banned_here", Banned, Some("USER_BANNED_IN_CHANNEL"));
    expect("@row_silent", Error, Some("IN_DOUBT"));
    for i in 0..20 {
        expect(&format!("@plain_group_{i:02}"), Joined, None);
    }

    let accounts: HashMap<String, _> = store
        .accounts(None)
        .await
        .unwrap()
        .into_iter()
        .map(|a| (a.session_name.clone(), a))
        .collect();
    let status = |name: &str| {
        (accounts[name].status, accounts[name].status_reason.clone().unwrap_or_default())
    };
    assert_eq!(status("frozen_one"), (AccountStatus::Frozen, "FROZEN_METHOD_INVALID".into()));
    assert_eq!(status("full_one"), (AccountStatus::Full, "CHANNELS_TOO_MUCH".into()));
    assert_eq!(status("flooded_one"), (AccountStatus::Cooldown, "PEER_FLOOD".into()));
    assert_eq!(status("revoked_one"), (AccountStatus::Unauthorized, "SESSION_REVOKED".into()));
    assert_eq!(status("banned_one"), (AccountStatus::Banned, "USER_DEACTIVATED_BAN".into()));
    assert_eq!(status("ghost_one").0, AccountStatus::Unauthorized);
    assert!(
        accounts.values().any(|a| a.status_reason.as_deref() == Some("FLOOD_WAIT_700")),
        "the long wait cooled its account down"
    );

    let violations = server.violations();
    assert!(violations.is_empty(), "{violations:#?}");
    let inv = invariants::check(&store, pacing().join_pause_min, &LIMITS).await.unwrap();
    assert!(inv.is_clean(), "{inv}\n{inv:#?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_join_through_the_real_client_with_no_violations() {
    let mut s = Scenario::new().min_join_pause(Duration::from_millis(60));
    for i in 0..6 {
        s = s.account(Account::new(format!("w_{i}"), 3000 + i));
    }
    let mut links = Vec::new();
    for i in 0..40 {
        let name = format!("wire_group_{i:02}");
        s = s.group(Group::new(200 + i, &name).username(&name));
        links.push(TargetLink::parse(&format!("@{name}")).unwrap());
    }
    s = s
        .script(
            Script::join()
                .target("@wire_group_00")
                .answers([Answer::FloodWait { seconds: 1 }, Answer::Ok]),
        )
        .script(
            Script::join()
                .target("@wire_group_01")
                .answers([Answer::FloodWait { seconds: 900 }, Answer::Ok]),
        )
        .script(
            Script::join()
                .target("@wire_group_02")
                .answers([Answer::Drop { after_join: true }, Answer::Ok]),
        )
        .script(Script::join().target("@wire_group_03").answers([Answer::UsernameNotOccupied]));
    let server = Server::start(s, "127.0.0.1:0").await.unwrap();
    let (store, url) = pg_database().await;
    let accounts = AccountsConfig::parse(&server.accounts_config_json().to_string()).unwrap();
    let names: Vec<String> = accounts.iter().map(|a| a.session_name.clone()).collect();
    store.sync_accounts(&names, "default").await.unwrap();
    store.import_targets(&links, "wire").await.unwrap();

    let redis = PrivateRedis::start();
    let accounts_json = server.accounts_config_json().to_string();
    let mut cluster = Cluster::new(
        store,
        url,
        &redis.url,
        &accounts_json,
        &Default::default(),
        &[("CALL_TIMEOUT", "2s"), ("LEASE_TTL", "6s")],
    )
    .await
    .with_real_telegram();
    cluster.spawn_worker("real1").await;
    cluster.spawn_worker("real2").await;
    let open = cluster
        .settle("wire", 40, "30s", Duration::from_millis(500), Duration::from_secs(120))
        .await;
    cluster.stop_all();
    assert_eq!(open, 0, "{}", cluster.worker_logs());

    let targets = cluster.store.targets(None, None).await.unwrap();
    let joined = targets.iter().filter(|t| t.status == TargetStatus::Joined).count();
    // The in-doubt group may wait, pinned, for its account if that account met the 900 s wait.
    let pinned = targets.iter().filter(|t| t.status == TargetStatus::Joining).count();
    assert!(pinned <= 1, "{targets:#?}");
    assert_eq!(joined + pinned, 39, "all but the dead username: {targets:#?}");
    let violations = server.violations();
    assert!(violations.is_empty(), "{violations:#?}");
    let inv = invariants::check(&cluster.store, Duration::from_millis(60), &LIMITS).await.unwrap();
    assert!(inv.is_clean(), "{inv}\n{inv:#?}");
    // Telegram's side agrees: every joined group has exactly its bound account as a member.
    let accounts = cluster.store.accounts(None).await.unwrap();
    for t in targets.iter().filter(|t| t.status == TargetStatus::Joined) {
        let bound = accounts.iter().find(|a| Some(a.id) == t.assigned_account_id).unwrap();
        assert_eq!(
            server.members(&t.link.to_string()),
            vec![bound.session_name.clone()],
            "{}",
            t.link
        );
    }
    server.shutdown().await;
}
