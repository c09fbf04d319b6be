//! Building blocks for tests of the join pipeline: accounts files, fast pacing, a seeded store.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use smart_joiner::accounts_config::AccountsConfig;
use smart_joiner::domain::{Pacing, TargetLink};
use smart_joiner::join::{JoinDeps, JoinService};
use smart_joiner::lease::{AccountLocks, LocalLocks};
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

/// A join service for a test, from what the test is about (the store, the Telegram fake or
/// tgsim, the accounts file); in-process leases, [`fast_pacing`], [`LIMITS`] and a 5 s call
/// timeout unless the test says otherwise:
/// `JoinEnv::new(&store, telegram, accounts).pacing(p).service()`.
pub struct JoinEnv {
    store: Store,
    telegram: Arc<dyn Telegram>,
    accounts: AccountsConfig,
    locks: Arc<dyn AccountLocks>,
    pacing: Pacing,
    limits: Limits,
    call_timeout: Duration,
}

impl JoinEnv {
    pub fn new(store: &Store, telegram: Arc<dyn Telegram>, accounts: AccountsConfig) -> Self {
        JoinEnv {
            store: store.clone(),
            telegram,
            accounts,
            locks: Arc::new(LocalLocks::default()),
            pacing: fast_pacing(),
            limits: LIMITS,
            call_timeout: Duration::from_secs(5),
        }
    }

    /// Leases other than this process's (Redis, or locks shared with a second service).
    pub fn locks(mut self, locks: Arc<dyn AccountLocks>) -> Self {
        self.locks = locks;
        self
    }

    pub fn pacing(mut self, pacing: Pacing) -> Self {
        self.pacing = pacing;
        self
    }

    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    pub fn call_timeout(mut self, call_timeout: Duration) -> Self {
        self.call_timeout = call_timeout;
        self
    }

    pub fn service(self) -> JoinService {
        JoinService::new(JoinDeps {
            store: self.store,
            locks: self.locks,
            telegram: self.telegram,
            accounts: Arc::new(self.accounts),
            pacing: self.pacing,
            limits: self.limits,
            call_timeout: self.call_timeout,
            worker_name: "test".to_owned(),
        })
    }
}
