//! What an idle worker reads: the leases-held gauge counts the leases of the database's
//! accounts by their ids, among however many other keys Redis holds (the queue keeps a few
//! per waiting job), and sees nothing under another prefix.

use std::time::Duration;

use smart_joiner::lease::{AccountLocks, RedisLocks};
use smart_joiner::queue::connect_redis;

use crate::cluster::PrivateRedis;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leases_are_counted_over_the_accounts_ids_among_many_other_keys() {
    let store = crate::support::pg_store().await;
    let names: Vec<String> = (0..5).map(|i| format!("acc_{i}")).collect();
    store.sync_accounts(&names, "default").await.unwrap();
    let max_id = store.max_account_id().await.unwrap();
    let ids: Vec<i64> = store.accounts(None).await.unwrap().iter().map(|a| a.id).collect();
    assert_eq!(max_id, *ids.iter().max().unwrap());

    let redis = PrivateRedis::start();
    let conn = connect_redis(&redis.url).await.unwrap();
    let mut pipe = redis::pipe();
    for i in 0..5000 {
        pipe.cmd("SET").arg(format!("cnt:join:v1:default:meta:{i}")).arg(i).ignore();
    }
    pipe.query_async::<()>(&mut conn.clone()).await.unwrap();
    let locks = RedisLocks::new(conn.clone(), "cnt:", Duration::from_secs(30));
    let other = RedisLocks::new(conn, "other:", Duration::from_secs(30));
    assert_eq!(locks.held_count(max_id).await.unwrap(), 0);

    let first = locks.try_acquire(ids[0]).await.unwrap().unwrap();
    locks.try_acquire(ids[4]).await.unwrap().unwrap();
    other.try_acquire(ids[2]).await.unwrap().unwrap();
    assert_eq!(locks.held_count(max_id).await.unwrap(), 2);
    assert_eq!(other.held_count(max_id).await.unwrap(), 1);
    assert!(locks.release(&first).await.unwrap());
    assert_eq!(locks.held_count(max_id).await.unwrap(), 1);
    assert_eq!(locks.held_count(0).await.unwrap(), 0, "no accounts, no leases");
}
