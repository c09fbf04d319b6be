//! Building blocks for tests of the join pipeline: accounts files, fast pacing, a seeded store.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use smart_joiner::accounts_config::AccountsConfig;
use smart_joiner::domain::{Pacing, TargetLink};
use smart_joiner::join::{JoinDeps, JoinService};
use smart_joiner::lease::AccountLocks;
use smart_joiner::store::{Limits, Store};
use smart_joiner::telegram::Telegram;
use smart_joiner::telegram::session::TelethonSession;

/// Session names `acc_00`, `acc_01`, ...
pub fn account_names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("acc_{i:02}")).collect()
}

/// An accounts_config.json for `names`, with valid (unusable) sessions: the fake never connects.
pub fn accounts_json(names: &[String]) -> String {
    let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let entries: Vec<serde_json::Value> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let mut key = [0u8; 256];
            key[0] = 1;
            key[1] = i as u8;
            serde_json::json!({
                "session_name": name,
                "api_id": 12345,
                "api_hash": "0123456789abcdef0123456789abcdef",
                "string_session": TelethonSession::new(2, addr, key).encode(),
                "proxy": null,
            })
        })
        .collect();
    serde_json::to_string_pretty(&entries).unwrap()
}

/// Pacing scaled from minutes to milliseconds: joins 60-90 ms apart, errors 20 ms.
pub fn fast_pacing() -> Pacing {
    Pacing {
        join_pause_min: Duration::from_millis(60),
        join_pause_max: Duration::from_millis(90),
        error_pause: Duration::from_millis(20),
        ..Pacing::default()
    }
}

pub const LIMITS: Limits = Limits { daily_join_cap: 1000, channel_limit: 500 };

/// Usernames `{prefix}_0000`, ...
pub fn links(prefix: &str, n: usize) -> Vec<TargetLink> {
    (0..n).map(|i| TargetLink::parse(&format!("@{prefix}_{i:04}")).unwrap()).collect()
}

/// Syncs `n` accounts into the default pool and imports `targets` into `niche`.
pub async fn seed(store: &Store, n: usize, targets: &[TargetLink], niche: &str) -> AccountsConfig {
    let names = account_names(n);
    let accounts = AccountsConfig::parse(&accounts_json(&names)).unwrap();
    store.sync_accounts(&names, "default").await.unwrap();
    store.import_targets(targets, niche).await.unwrap();
    accounts
}

pub fn service(
    store: &Store,
    locks: Arc<dyn AccountLocks>,
    telegram: Arc<dyn Telegram>,
    accounts: AccountsConfig,
    pacing: Pacing,
    limits: Limits,
) -> JoinService {
    service_with_timeout(store, locks, telegram, accounts, pacing, limits, Duration::from_secs(5))
}

pub fn service_with_timeout(
    store: &Store,
    locks: Arc<dyn AccountLocks>,
    telegram: Arc<dyn Telegram>,
    accounts: AccountsConfig,
    pacing: Pacing,
    limits: Limits,
    call_timeout: Duration,
) -> JoinService {
    JoinService::new(JoinDeps {
        store: store.clone(),
        locks,
        telegram,
        accounts: Arc::new(accounts),
        pacing,
        limits,
        call_timeout,
        worker_name: "test".to_owned(),
    })
}
