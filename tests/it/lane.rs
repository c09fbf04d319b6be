//! Postgres: the join lane, the connections the join's four statements run on outside sqlx's
//! pool. A connection goes back to the lane only after its statement ended cleanly; one that
//! died, or whose caller gave up mid-statement, is closed and replaced.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sea_orm::{ConnectionTrait, Statement, TransactionTrait};
use smart_joiner::store::{Limits, Store};

use crate::store::{accounts, t0};
use crate::support::pg_store;
use crate::support::servers::{as_pg_user, free_port, init_postgres, pg_bin, run, start_postgres};

const LIMITS: Limits = Limits { daily_join_cap: 20, channel_limit: 500 };

async fn pick(store: &Store) -> Result<usize, smart_joiner::store::StoreError> {
    Ok(store.pick_accounts("default", t0(), &[], &LIMITS, 4, 2).await?.len())
}

/// The pids of the backends of this database other than the caller's.
async fn backends(store: &Store, filter: &str) -> Vec<i32> {
    let sql = format!(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
         AND pid <> pg_backend_pid() {filter}"
    );
    let rows = store
        .connection()
        .query_all_raw(Statement::from_string(store.connection().get_database_backend(), sql))
        .await
        .unwrap();
    rows.iter().map(|r| r.try_get_by_index::<i32>(0).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_join_lane_replaces_connections_whose_backend_was_terminated() {
    let store = pg_store().await;
    accounts(&store, &["anna", "boris", "carl"], "default").await;
    // Several picks at once open several lane connections; the observer sees each statement.
    let seen = Arc::new(AtomicUsize::new(0));
    let observed = {
        let seen = seen.clone();
        store.observed(move |info| {
            if info.statement.sql.contains("RANDOM()") {
                seen.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let picks = futures::future::join_all((0..6).map(|_| pick(&observed))).await;
    assert!(picks.iter().all(|p| matches!(p, Ok(2))), "{picks:?}");
    assert_eq!(seen.load(Ordering::Relaxed), 6, "the observer sees the lane's statements");

    let killed = backends(&store, "").await;
    assert!(!killed.is_empty());
    store
        .connection()
        .execute_unprepared(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .await
        .unwrap();
    // Each dead connection fails at most one statement, as a transient error, and is not used
    // again: within as many statements as the lane holds connections, picks work again.
    let mut failures = 0;
    for _ in 0..20 {
        match pick(&store).await {
            Ok(n) => assert_eq!(n, 2),
            Err(e) => {
                assert!(e.is_transient(), "{e}");
                failures += 1;
            }
        }
    }
    assert!(failures <= 6, "{failures} picks failed after the backends were terminated");
    for _ in 0..10 {
        assert_eq!(pick(&store).await.unwrap(), 2, "every pick works once the lane reconnected");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_join_statement_whose_caller_gave_up_closes_its_connection() {
    let store = pg_store().await;
    let a = accounts(&store, &["anna"], "default").await;
    let id = a[0].id;
    let epoch =
        store.take_hold(id, t0(), t0() + chrono::Duration::minutes(2)).await.unwrap().unwrap();
    // Another transaction locks the account's row: the gate (a lane statement) waits for it.
    let txn = store.connection().begin().await.unwrap();
    txn.execute_unprepared(&format!("SELECT id FROM accounts WHERE id = {id} FOR UPDATE"))
        .await
        .unwrap();
    let gate = store.gate_join(id, epoch, t0(), t0() + chrono::Duration::minutes(3), t0());
    let waiting = async {
        loop {
            let blocked = backends(&store, "AND wait_event_type = 'Lock'").await;
            if let [pid] = blocked[..] {
                return pid;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    // The caller gives up while the gate waits on the lock.
    let pid = tokio::select! {
        done = gate => panic!("the gate finished while the row was locked: {done:?}"),
        pid = tokio::time::timeout(Duration::from_secs(10), waiting) => pid.expect("the gate waits on the lock"),
    };
    txn.commit().await.unwrap();
    // Its connection was closed, not kept: the backend ends once it finds no client.
    let gone = async {
        while backends(&store, &format!("AND pid = {pid}")).await.len() == 1 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), gone)
        .await
        .expect("the abandoned statement's backend ends: its connection was not kept");
    // The lane goes on with a new connection.
    assert_eq!(pick(&store).await.unwrap(), 0, "the account is held by the check's hold");
    store.release_hold(id, epoch).await.unwrap();
    assert_eq!(pick(&store).await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_join_statement_waits_for_a_restarting_postgres_instead_of_failing() {
    let dir = tempfile::tempdir().unwrap();
    let (root, port) = (dir.path().to_owned(), free_port());
    let data = init_postgres(&root, "host all all 127.0.0.1/32 trust\n");
    let server = start_postgres(&root, &data, port, &[]);
    let store =
        Store::connect(&format!("postgres://postgres@127.0.0.1:{port}/postgres")).await.unwrap();
    store.migrate().await.unwrap();
    accounts(&store, &["anna", "boris", "carl"], "default").await;
    assert_eq!(pick(&store).await.unwrap(), 2);

    run(as_pg_user(pg_bin().join("pg_ctl"))
        .args(["stop", "-m", "fast", "-D"])
        .arg(&data)
        .stdout(std::process::Stdio::null()));
    drop(server);
    // The lane's connection ended with the server: its next statement fails, as transient.
    let first = pick(&store).await;
    assert!(first.as_ref().is_err_and(|e| e.is_transient()), "{first:?}");
    // The next one finds no server and waits for it, as a statement on the pool would.
    let restart = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        start_postgres(&root, &data, port, &[])
    });
    let asked = std::time::Instant::now();
    let picked = pick(&store).await;
    let waited = asked.elapsed();
    let _server = restart.join().unwrap();
    assert_eq!(picked.unwrap(), 2, "the pick runs once the server is back");
    assert!(waited >= Duration::from_secs(1), "it waited for the server: {waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_join_statement_waits_for_a_free_connection_slot_on_a_full_server() {
    use sea_orm::sqlx::{ConnectOptions as _, postgres::PgConnectOptions};
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let data = init_postgres(dir.path(), "host all all 127.0.0.1/32 trust\n");
    let _server = start_postgres(dir.path(), &data, port, &["max_connections=6".to_owned()]);
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    let store = Store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    accounts(&store, &["anna", "boris", "carl"], "default").await;
    // Other clients take every slot the server has left.
    let opts: PgConnectOptions = url.parse().unwrap();
    let mut others = Vec::new();
    loop {
        match opts.connect().await {
            Ok(conn) => others.push(conn),
            Err(e) => {
                assert!(e.to_string().contains("too many clients"), "{e}");
                break;
            }
        }
        assert!(others.len() < 10, "the server takes more clients than max_connections");
    }
    // A pick needs a lane connection: it waits until one of them leaves.
    let leave = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(others.pop());
        others
    });
    let asked = std::time::Instant::now();
    let picked = pick(&store).await;
    let waited = asked.elapsed();
    let _others = leave.await.unwrap();
    assert_eq!(picked.unwrap(), 2, "the pick runs once a slot is free");
    assert!(waited >= Duration::from_millis(500), "it waited for a slot: {waited:?}");
}
