//! Test helpers: a fresh, migrated database per test, on Postgres and on SQLite;
//! `harness`: a join service, its accounts and targets; `servers`: servers of a test's own.

pub mod harness;
pub mod servers;

use std::time::{Duration, SystemTime};

use sea_orm::{ConnectionTrait, Database, Statement};
use smart_joiner::store::Store;
use tokio::sync::OnceCell;

/// Prefix of every database the tests create, so stray ones are recognisable.
const DB_PREFIX: &str = "sj_test_";
/// Databases of earlier runs older than this are dropped when a run starts.
const STALE_AFTER: Duration = Duration::from_secs(3600);

fn admin_url() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// `admin_url` with its database name replaced by `db`.
fn url_for(admin: &str, db: &str) -> String {
    let (base, query) = match admin.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (admin, String::new()),
    };
    let after_scheme = base.find("://").map(|i| i + 3).unwrap_or(0);
    let server = match base[after_scheme..].find('/') {
        Some(i) => &base[..after_scheme + i],
        None => base,
    };
    format!("{server}/{db}{query}")
}

fn unreachable(admin: &str, err: impl std::fmt::Display) -> ! {
    panic!(
        "cannot reach Postgres at {admin:?}: {err}\n\
         The store tests need a real Postgres. Start one, e.g.\n  \
         docker run -d -p 5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust postgres:16\n\
         or `docker compose up -d postgres`, or set TEST_POSTGRES_URL to an admin URL of yours."
    )
}

/// Drops test databases of earlier runs (by the time in their ULID), once per process.
async fn drop_stale_databases(admin: &sea_orm::DatabaseConnection) {
    static DONE: OnceCell<()> = OnceCell::const_new();
    DONE.get_or_init(|| async {
        let rows = admin
            .query_all_raw(Statement::from_string(
                admin.get_database_backend(),
                format!("SELECT datname FROM pg_database WHERE datname LIKE '{DB_PREFIX}%'"),
            ))
            .await
            .unwrap_or_default();
        let now = SystemTime::now();
        for row in rows {
            let Ok(name) = row.try_get::<String>("", "datname") else { continue };
            let Ok(id) = ulid::Ulid::from_string(&name[DB_PREFIX.len()..].to_uppercase()) else {
                continue;
            };
            let old = now.duration_since(id.datetime()).is_ok_and(|age| age > STALE_AFTER);
            if old {
                let _ = admin
                    .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await;
            }
        }
    })
    .await;
}

/// Shows the tracing output of the code under test when `TEST_LOG` is set, as an `EnvFilter`
/// (`TEST_LOG=smart_joiner=debug`, `TEST_LOG=info`), through the test harness's capture (so a
/// passing test stays quiet unless `--nocapture`). Called by every helper that opens a store;
/// the first call installs it, later ones do nothing.
pub fn test_log() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        let Ok(filter) = std::env::var("TEST_LOG") else { return };
        let filter = tracing_subscriber::EnvFilter::try_new(&filter)
            .unwrap_or_else(|e| panic!("TEST_LOG={filter:?} is not a tracing filter: {e}"));
        // Another subscriber already installed (a test that sets its own) wins.
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    });
}

/// A store on a brand-new, migrated Postgres database. Panics (never skips) when Postgres is
/// unreachable.
pub async fn pg_store() -> Store {
    pg_database().await.0
}

/// Like [`pg_store`], also returning the database URL (for child processes).
pub async fn pg_database() -> (Store, String) {
    test_log();
    let admin_url = admin_url();
    let admin =
        Database::connect(admin_url.as_str()).await.unwrap_or_else(|e| unreachable(&admin_url, e));
    drop_stale_databases(&admin).await;
    let name = format!("{DB_PREFIX}{}", ulid::Ulid::new().to_string().to_lowercase());
    admin
        .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
        .await
        .unwrap_or_else(|e| unreachable(&admin_url, e));
    admin.close().await.ok();
    let url = url_for(&admin_url, &name);
    let store = Store::connect(&url).await.expect("connect to test db");
    store.migrate().await.expect("migrate test db");
    (store, url)
}

/// The URL of a brand-new, empty Postgres database (no migrations): for tests that build
/// another tool's tables first.
pub async fn pg_empty_database() -> String {
    test_log();
    let admin_url = admin_url();
    let admin =
        Database::connect(admin_url.as_str()).await.unwrap_or_else(|e| unreachable(&admin_url, e));
    drop_stale_databases(&admin).await;
    let name = format!("{DB_PREFIX}{}", ulid::Ulid::new().to_string().to_lowercase());
    admin
        .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
        .await
        .unwrap_or_else(|e| unreachable(&admin_url, e));
    admin.close().await.ok();
    url_for(&admin_url, &name)
}

/// A store on a new, migrated SQLite file; the file lives as long as the returned directory.
pub async fn sqlite_store() -> (Store, tempfile::TempDir) {
    test_log();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("smart_joiner.db");
    let store = Store::connect(&format!("sqlite://{}", path.display())).await.expect("connect");
    store.migrate().await.expect("migrate");
    (store, dir)
}

/// Runs one async store test on both backends: `name::pg` and `name::sqlite`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn pg() {
                super::$name($crate::support::pg_store().await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                let (store, _dir) = $crate::support::sqlite_store().await;
                super::$name(store).await;
            }
        }
    )+};
}
