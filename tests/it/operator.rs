//! Operator safety, over the real binaries where the operator meets it: no password in any
//! output, each cause of an error printed once and soon, a log file that cannot be opened does
//! not stop a command, `migrate down` does not drop rows unasked, `accounts check` never takes
//! a Redis that answers with an error for "no Redis", and SQLite is left whole on disk.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use smart_joiner::config::Settings;
use smart_joiner::domain::TargetLink;
use smart_joiner::ops::check::{LeaseMode, check_locks};
use smart_joiner::store::{Store, StoreError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::OnceCell;

use crate::cluster::{PrivateRedis, binaries};
use crate::on_both_backends;
use crate::support::pg_database;

on_both_backends!(migrate_down_refuses_to_drop_rows_and_reports_what_it_rolled_back);

/// The password in every URL below, as written (percent-encoded) and as the server knows it.
const SECRET: &str = "s3cr%40t-pw-7781";
const SECRET_DECODED: &str = "s3cr@t-pw-7781";

// ---------------------------------------------------------------------------------------------
// helpers

/// A port nothing listens on (bound once by the OS, then released).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A private redis-server that wants `password`; killed on drop.
struct PasswordRedis {
    child: Child,
    port: u16,
}

impl PasswordRedis {
    fn start(password: &str) -> Self {
        let port = closed_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--requirepass", password, "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (see .ci/services.sh)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "private redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, port }
    }
}

impl Drop for PasswordRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server speaking just enough of the Postgres protocol to ask for a password and reject it
/// (SQLSTATE 28P01), as a Postgres with password authentication does. The Postgres of the
/// tests trusts every local connection, so it cannot show a wrong password.
async fn postgres_rejecting_passwords() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = reject_password(&mut socket).await;
            });
        }
    });
    port
}

async fn reject_password(socket: &mut tokio::net::TcpStream) -> std::io::Result<()> {
    // SSLRequest / GSSENCRequest come before the startup message: "N", no encryption here.
    loop {
        let len = socket.read_i32().await? as usize;
        let code = socket.read_i32().await?;
        let mut rest = vec![0; len.saturating_sub(8)];
        socket.read_exact(&mut rest).await?;
        if code == 80877103 || code == 80877104 {
            socket.write_all(b"N").await?;
            continue;
        }
        break;
    }
    // AuthenticationCleartextPassword, then read the PasswordMessage.
    socket.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 3]).await?;
    let _tag = socket.read_u8().await?;
    let len = socket.read_i32().await? as usize;
    let mut password = vec![0; len.saturating_sub(4)];
    socket.read_exact(&mut password).await?;
    let mut fields = Vec::new();
    for (key, value) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', "28P01"),
        (b'M', "password authentication failed for user \"u\""),
    ] {
        fields.push(key);
        fields.extend_from_slice(value.as_bytes());
        fields.push(0);
    }
    fields.push(0);
    let mut message = vec![b'E'];
    message.extend_from_slice(&((fields.len() + 4) as i32).to_be_bytes());
    message.extend_from_slice(&fields);
    socket.write_all(&message).await?;
    socket.shutdown().await
}

/// A server that is not Redis: it answers anything with an HTTP error and hangs up.
async fn not_redis() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 256];
                let _ = socket.read(&mut buf).await;
                let _ = socket.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
                let _ = socket.shutdown().await;
            });
        }
    });
    port
}

/// The `migration` binary, built once (it belongs to another package).
async fn migration_binary() -> &'static PathBuf {
    static BIN: OnceCell<PathBuf> = OnceCell::const_new();
    BIN.get_or_init(|| async {
        tokio::task::spawn_blocking(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
            let status = Command::new(cargo)
                .args(["build", "--quiet", "-p", "migration"])
                .status()
                .expect("run cargo build");
            assert!(status.success(), "building the migration binary failed");
            let exe = std::env::current_exe().expect("test binary path");
            let dir = exe.parent().and_then(Path::parent).expect("target dir");
            dir.join(format!("migration{}", std::env::consts::EXE_SUFFIX))
        })
        .await
        .expect("build task")
    })
    .await
}

fn smart_joiner() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_smart-joiner"))
}

/// What one run of a binary printed.
struct Ran {
    what: String,
    code: Option<i32>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl Ran {
    fn all(&self) -> String {
        format!("{}\n--- stdout\n{}--- stderr\n{}", self.what, self.stdout, self.stderr)
    }
}

/// Runs `bin args` in `dir` with only `env` (and PATH) set; killed after 60 s.
async fn run(bin: &Path, args: &[&str], env: &[(&str, String)], dir: &Path) -> Ran {
    let what = format!(
        "{} {} [{}]",
        bin.file_name().unwrap().to_string_lossy(),
        args.join(" "),
        // The description goes into failure messages, which must not hold the password either.
        env.iter()
            .map(|(k, v)| format!("{k}={}", smart_joiner::redact::redact_url(v)))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        let child = cmd.spawn().expect("spawn");
        let pid = child.id();
        // The watchdog ends a run that hangs, so the test fails instead of hanging.
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let watchdog = std::thread::spawn(move || {
            if done_rx.recv_timeout(Duration::from_secs(60)).is_err() {
                let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            }
        });
        let out = child.wait_with_output().expect("wait");
        let _ = done_tx.send(());
        let _ = watchdog.join();
        Ran {
            what,
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            elapsed: start.elapsed(),
        }
    })
    .await
    .unwrap()
}

/// A clean failure: exit status 1-100 (not a panic's 101, not a signal), no panic message,
/// no password in any form, and `cause` exactly once on stderr.
fn assert_clean_failure(ran: &Ran, cause: &str) {
    let all = ran.all();
    assert!(!all.contains(SECRET) && !all.contains(SECRET_DECODED), "password printed: {all}");
    assert!(matches!(ran.code, Some(1..=100)), "not a clean error exit ({:?}): {all}", ran.code);
    assert!(!all.contains("panicked"), "panic: {all}");
    assert_eq!(ran.stderr.matches(cause).count(), 1, "{cause:?} not exactly once: {all}");
}

// ---------------------------------------------------------------------------------------------
// no secret in any output; each cause once; a refused connection said at once

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_database_and_redis_urls_fail_cleanly_in_every_binary_without_printing_the_password() {
    let (producer, worker) = binaries().await;
    let migration = migration_binary().await;
    let sj = smart_joiner();
    let (_store, good_db) = pg_database().await;
    let wrong_pw_pg = postgres_rejecting_passwords().await;
    let redis = PasswordRedis::start("the-right-one");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("accounts_config.json"), "[]").unwrap();
    let closed = closed_port();

    let base = |db: &str, redis: &str| {
        vec![
            ("DATABASE_URL", db.to_owned()),
            ("REDIS_URL", redis.to_owned()),
            ("ACCOUNTS_CONFIG", dir.path().join("accounts_config.json").display().to_string()),
            ("LOG_DIR", dir.path().join("logs").display().to_string()),
            ("METRICS_PORT", "0".to_owned()),
        ]
    };
    let unused_redis = format!("redis://:{SECRET}@127.0.0.1:{closed}/");

    // Database URLs: unparseable, unreachable, wrong password. The cause each must name once.
    let databases = [
        (format!("postgres://u:{SECRET}@host:99999/db"), "invalid port number", true),
        (format!("postgres://u:{SECRET}@/db"), "empty host", true),
        (format!("postgres://u:{SECRET}@127.0.0.1:{closed}/db"), "Connection refused", false),
        (
            format!("postgres://u:{SECRET}@127.0.0.1:{wrong_pw_pg}/db"),
            "password authentication failed",
            true,
        ),
    ];
    for (db, cause, with_migration_binary) in &databases {
        let env = base(db, &unused_redis);
        let mut runs = Vec::new();
        for args in [
            &["status"][..],
            &["migrate", "up"],
            &["--json", "migrate", "down", "--yes"],
            &["accounts", "check", "--leases", "redis"],
            &["run", "cars", "1"],
        ] {
            runs.push(run(&sj, args, &env, dir.path()).await);
        }
        runs.push(run(producer, &["cars", "1"], &env, dir.path()).await);
        runs.push(run(worker, &["--metrics-port", "0"], &env, dir.path()).await);
        // The schema crate's own tool waits out its pool on a refused connection; its text
        // is checked where it fails at once.
        for ran in &runs {
            assert_clean_failure(ran, cause);
            assert!(
                ran.elapsed < Duration::from_secs(10),
                "too slow ({:?}): {}",
                ran.elapsed,
                ran.all()
            );
        }
        // It reports sea-orm's text (which, for a URL it cannot parse, names no cause).
        if *with_migration_binary {
            let ran = run(migration, &["status"], &env, dir.path()).await;
            assert_clean_failure(&ran, "cannot connect to the database");
        }
    }

    // Redis URLs, with a good database: unparseable, unreachable (plain and TLS), wrong
    // password. `accounts check` is the admin command that talks to Redis.
    let redises = [
        (format!("redis://:{SECRET}@127.0.0.1:99999/"), "did not parse"),
        (format!("redis://:{SECRET}@/"), "did not parse"),
        (format!("redis://:{SECRET}@127.0.0.1:{closed}/"), "Connection refused"),
        (format!("rediss://:{SECRET}@127.0.0.1:{closed}/"), "Connection refused"),
        (format!("redis://:{SECRET}@127.0.0.1:{}/", redis.port), "authentication failed"),
    ];
    for (url, cause) in &redises {
        let env = base(&good_db, url);
        let mut runs = vec![
            run(&sj, &["accounts", "check", "--leases", "redis"], &env, dir.path()).await,
            run(producer, &["cars", "1"], &env, dir.path()).await,
            run(worker, &["--metrics-port", "0"], &env, dir.path()).await,
        ];
        if *cause == "authentication failed" {
            // `auto` must not take a Redis that rejected the password for "no Redis".
            runs.push(run(&sj, &["accounts", "check"], &env, dir.path()).await);
        }
        for ran in &runs {
            assert_clean_failure(ran, cause);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_postgres_connection_is_reported_as_refused_within_seconds() {
    let url = format!("postgres://u:{SECRET}@127.0.0.1:{}/db", closed_port());
    let start = Instant::now();
    let err = Store::connect(&url).await.unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
    let text = err.to_string();
    assert!(matches!(err, StoreError::Connect { .. }), "{err:?}");
    assert_eq!(text.matches("Connection refused").count(), 1, "{text}");
    assert!(text.contains("127.0.0.1") && !text.contains(SECRET), "{text}");
    // No source: a `{:#}` chain prints the line once.
    assert!(std::error::Error::source(&err).is_none());
}

// ---------------------------------------------------------------------------------------------
// a log file that cannot be opened

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_file_that_cannot_be_opened_is_named_once_and_logging_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    // A regular file where the log directory should be: no log file can be made under it,
    // even for root.
    let not_a_dir = dir.path().join("logs_is_a_file");
    std::fs::write(&not_a_dir, "").unwrap();
    let log_file = not_a_dir.join("smart_joiner.log").display().to_string();
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("smart_joiner.db").display());
    let env = [("DATABASE_URL", db), ("LOG_DIR", not_a_dir.display().to_string())];
    let sj = smart_joiner();

    for args in [&["migrate", "up"][..], &["status"]] {
        let ran = run(&sj, args, &env, dir.path()).await;
        assert_eq!(ran.code, Some(0), "{}", ran.all());
        assert_eq!(ran.stderr.matches("cannot open the log file").count(), 1, "{}", ran.all());
        assert!(ran.stderr.contains(&log_file), "the path is not named: {}", ran.all());
        assert!(ran.stderr.contains("logging to stderr only"), "{}", ran.all());
    }
    let status = run(&sj, &["status"], &env, dir.path()).await;
    assert!(!status.stdout.is_empty(), "{}", status.all());

    // A binary whose log lines go to stdout keeps writing them there.
    let (producer, _) = binaries().await;
    let (_store, pg) = pg_database().await;
    let redis = PrivateRedis::start();
    let env = [
        ("DATABASE_URL", pg),
        ("REDIS_URL", redis.url.clone()),
        ("LOG_DIR", not_a_dir.display().to_string()),
        ("REDIS_PREFIX", "optest:".to_owned()),
    ];
    let ran = run(producer, &["cars", "1"], &env, dir.path()).await;
    assert_eq!(ran.code, Some(0), "{}", ran.all());
    assert_eq!(ran.stdout.matches("cannot open the log file").count(), 1, "{}", ran.all());
    assert!(ran.stdout.contains(&log_file) && ran.stdout.contains("logging to stdout only"));
    assert!(ran.stdout.contains("producer: niche cars"), "{}", ran.all());
}

// ---------------------------------------------------------------------------------------------
// migrate down

async fn migrate_down_refuses_to_drop_rows_and_reports_what_it_rolled_back(store: Store) {
    let names: Vec<String> = migration_names().into_iter().rev().collect::<Vec<_>>();
    // The newest migration drops no table: it goes without asking, and is named.
    assert_eq!(store.migrate_down(1, false).await.unwrap(), names[..1].to_vec());
    store.migrate().await.unwrap();

    store.sync_accounts(&["a1".into(), "a2".into()], "default").await.unwrap();
    store.import_targets(&[TargetLink::parse("@rows_kept").unwrap()], "cars").await.unwrap();
    match store.migrate_down(99, false).await {
        Err(StoreError::WouldDropRows { tables }) => {
            assert_eq!(tables, vec![("targets".to_owned(), 1), ("accounts".to_owned(), 2)]);
            let text = StoreError::WouldDropRows { tables }.to_string();
            assert!(text.contains("targets (1 row), accounts (2 rows)"), "{text}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Nothing was rolled back: the rows are still there.
    assert!(store.pending_migrations().await.unwrap().is_empty());
    assert_eq!(store.accounts(None).await.unwrap().len(), 2);

    // Asked to, it rolls back only what is applied, newest first, and says so.
    assert_eq!(store.migrate_down(99, true).await.unwrap(), names);
    assert_eq!(store.pending_migrations().await.unwrap().len(), names.len());
    // A database with nothing applied has nothing to roll back.
    assert!(store.migrate_down(3, false).await.unwrap().is_empty());
    store.migrate().await.unwrap();
}

fn migration_names() -> Vec<String> {
    use migration::{Migrator, MigratorTrait};
    Migrator::migrations().iter().map(|m| m.name().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_down_on_the_command_line_names_tables_rows_and_rollbacks() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("smart_joiner.db").display());
    let env =
        [("DATABASE_URL", db.clone()), ("LOG_DIR", dir.path().join("logs").display().to_string())];
    let sj = smart_joiner();
    let newest_first: Vec<String> = migration_names().into_iter().rev().collect();

    // Never migrated: nothing to roll back, and it says so (it used to claim one).
    let ran = run(&sj, &["--json", "migrate", "down", "2"], &env, dir.path()).await;
    assert_eq!(ran.code, Some(0), "{}", ran.all());
    let json: serde_json::Value = serde_json::from_str(&ran.stdout).unwrap();
    assert_eq!(json, serde_json::json!({ "rolled_back": [] }));
    let ran = run(&sj, &["migrate", "down"], &env, dir.path()).await;
    assert!(ran.stdout.contains("nothing rolled back"), "{}", ran.all());

    assert_eq!(run(&sj, &["migrate", "up"], &env, dir.path()).await.code, Some(0));
    let store = Store::connect(&db).await.unwrap();
    store.sync_accounts(&["a1".into(), "a2".into(), "a3".into()], "default").await.unwrap();
    store.close().await.unwrap();

    // Rolling back every migration drops the tables with the rows.
    let all = newest_first.len().to_string();
    let ran = run(&sj, &["migrate", "down", &all], &env, dir.path()).await;
    assert_eq!(ran.code, Some(1), "{}", ran.all());
    assert!(
        ran.stderr.contains("accounts (3 rows)") && ran.stderr.contains("--yes"),
        "{}",
        ran.all()
    );
    assert!(ran.stderr.contains("nothing was rolled back"), "{}", ran.all());
    let ran = run(&sj, &["--json", "migrate", "status"], &env, dir.path()).await;
    assert!(!ran.stdout.contains("false"), "a migration was rolled back: {}", ran.all());

    // The schema crate's own tool keeps the same rule.
    let migration = migration_binary().await;
    let ran = run(migration, &["down", &all], &env, dir.path()).await;
    assert_eq!(ran.code, Some(1), "{}", ran.all());
    assert!(ran.stderr.contains("accounts (3 row(s))"), "{}", ran.all());

    let more = (newest_first.len() + 1).to_string();
    let ran = run(&sj, &["--json", "migrate", "down", &more, "--yes"], &env, dir.path()).await;
    assert_eq!(ran.code, Some(0), "{}", ran.all());
    let json: serde_json::Value = serde_json::from_str(&ran.stdout).unwrap();
    assert_eq!(json, serde_json::json!({ "rolled_back": newest_first }));
}

// ---------------------------------------------------------------------------------------------
// one "open a migrated database" step: every binary refuses a schema that is not its own

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_binary_refuses_a_database_with_pending_or_unknown_migrations_with_one_message() {
    let (producer, worker) = binaries().await;
    let sj = smart_joiner();
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("smart_joiner.db").display());
    std::fs::write(dir.path().join("accounts_config.json"), "[]").unwrap();
    let env = [
        ("DATABASE_URL", db.clone()),
        // Nothing listens there: a binary that got past the database would fail on Redis.
        ("REDIS_URL", format!("redis://127.0.0.1:{}/", closed_port())),
        ("ACCOUNTS_CONFIG", dir.path().join("accounts_config.json").display().to_string()),
        ("LOG_DIR", dir.path().join("logs").display().to_string()),
    ];
    let every_binary = || async {
        vec![
            run(&sj, &["status"], &env, dir.path()).await,
            run(&sj, &["run", "cars", "1"], &env, dir.path()).await,
            run(&sj, &["targets", "list"], &env, dir.path()).await,
            run(producer, &["cars", "1"], &env, dir.path()).await,
            run(worker, &["--metrics-port", "0"], &env, dir.path()).await,
        ]
    };

    // Never migrated: every migration is pending.
    let n = migration_names().len();
    let behind =
        format!("the database has {n} pending migrations: run `smart-joiner migrate up` first");
    for ran in every_binary().await {
        assert_clean_failure(&ran, &behind);
    }

    // Migrated by a newer build: a migration this one does not know.
    assert_eq!(run(&sj, &["migrate", "up"], &env, dir.path()).await.code, Some(0));
    let store = Store::connect(&db).await.unwrap();
    store.sync_accounts(&["a1".into()], "default").await.unwrap();
    store.close().await.unwrap();
    let sql =
        "INSERT INTO seaql_migrations (version, applied_at) VALUES ('m29990101_000001_later', 0)";
    let conn = sea_orm::Database::connect(&db).await.unwrap();
    sea_orm::ConnectionTrait::execute_unprepared(&conn, sql).await.unwrap();
    conn.close().await.unwrap();
    let ahead = "the database has migrations this build does not know (m29990101_000001_later)";
    for ran in every_binary().await {
        assert_clean_failure(&ran, ahead);
    }
    let store = Store::connect(&db).await.unwrap();
    assert_eq!(store.accounts(None).await.unwrap().len(), 1, "nothing was changed");
    store.close().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// accounts check: which Redis answers count as "no Redis"

fn settings_with_redis(url: &str) -> Settings {
    Settings::from_env_lookup(|k| (k == "REDIS_URL").then(|| url.to_owned())).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_check_falls_back_to_local_leases_only_when_nothing_answers() {
    let redis = PasswordRedis::start(SECRET_DECODED);
    let garbage = not_redis().await;
    let closed = closed_port();
    let prefix = "optest:";
    let describe = |r: Result<smart_joiner::ops::check::CheckLocks, _>| match r {
        Ok(locks) => Ok(locks.describe().to_owned()),
        Err(e) => Err(e),
    };

    // Nothing listening: single-machine mode, in-process leases.
    let refused = settings_with_redis(&format!("redis://127.0.0.1:{closed}/"));
    let local = describe(check_locks(LeaseMode::Auto, &refused, prefix).await).unwrap();
    assert!(local.starts_with("in-process"), "{local}");
    // ... but not when Redis leases were asked for.
    let err = check_locks(LeaseMode::Redis, &refused, prefix).await.err().unwrap();
    assert!(err.to_string().contains("refused"), "{err}");

    // Something answered, with an error: never "no Redis".
    let answered_badly = [
        (format!("redis://:wrong@127.0.0.1:{}/", redis.port), "authentication failed"),
        (format!("redis://127.0.0.1:{}/", redis.port), "NOAUTH"),
        (format!("redis://127.0.0.1:{garbage}/"), ""),
        // A TLS client on a plain port: the server waits for a line the handshake never
        // sends, so the check times out; that is an error too, never "no Redis".
        (format!("rediss://127.0.0.1:{}/", redis.port), "no answer within"),
    ];
    for (url, cause) in &answered_badly {
        let settings = settings_with_redis(url);
        for mode in [LeaseMode::Auto, LeaseMode::Redis] {
            match describe(check_locks(mode, &settings, prefix).await) {
                Ok(d) => panic!("{url} ({mode:?}) was taken for usable: {d}"),
                Err(e) => {
                    let text = e.to_string();
                    assert!(text.contains(cause), "{url}: {text}");
                    assert!(text.contains("--leases local"), "{url}: {text}");
                }
            }
        }
    }

    // The right password: the workers' leases.
    let good = settings_with_redis(&format!("redis://:{SECRET}@127.0.0.1:{}/", redis.port));
    let shared = describe(check_locks(LeaseMode::Auto, &good, prefix).await).unwrap();
    assert!(shared.starts_with("Redis"), "{shared}");
}

// ---------------------------------------------------------------------------------------------
// SQLite: closing leaves a complete file; a vanished file is noticed

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_close_the_sqlite_file_alone_holds_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("smart_joiner.db");
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let store = Store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    let names: Vec<String> = (0..5).map(|i| format!("acc_{i}")).collect();
    store.sync_accounts(&names, "default").await.unwrap();
    let links: Vec<TargetLink> =
        (0..7).map(|i| TargetLink::parse(&format!("@group_{i}")).unwrap()).collect();
    store.import_targets(&links, "cars").await.unwrap();

    // Copies of the .db file alone, the obvious backup, opened on their own.
    let copy = |name: &str| {
        let copy_dir = dir.path().join(name);
        std::fs::create_dir(&copy_dir).unwrap();
        let target = copy_dir.join("smart_joiner.db");
        std::fs::copy(&path, &target).unwrap();
        format!("sqlite://{}", target.display())
    };
    // While the store is open, recent writes live in the -wal file only: the copy lacks them.
    let early = Store::connect(&copy("early")).await.unwrap();
    let early_rows = early.accounts(None).await.map(|a| a.len()).unwrap_or(0);
    assert!(early_rows < names.len(), "the WAL was already checkpointed; the test shows nothing");
    early.close().await.unwrap();

    store.close().await.unwrap();
    let wal = dir.path().join("smart_joiner.db-wal");
    assert!(std::fs::metadata(&wal).map_or(true, |m| m.len() == 0), "WAL left behind");
    let late = Store::connect(&copy("late")).await.unwrap();
    assert_eq!(late.accounts(None).await.unwrap().len(), names.len());
    assert_eq!(late.targets(None, None).await.unwrap().len(), links.len());
    late.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_file_notices_a_deleted_or_replaced_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("smart_joiner.db");
    let store = Store::connect(&format!("sqlite://{}?mode=rwc", path.display())).await.unwrap();
    store.migrate().await.unwrap();
    store.check_file().unwrap();

    std::fs::remove_file(&path).unwrap();
    let err = store.check_file().unwrap_err();
    assert!(matches!(err, StoreError::File { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&path.display().to_string()) && text.contains("no longer exists"),
        "{text}"
    );

    // Another file put in its place (a restored backup, a careless copy) is not the one open.
    let other = dir.path().join("other.db");
    let second = Store::connect(&format!("sqlite://{}?mode=rwc", other.display())).await.unwrap();
    second.check_file().unwrap();
    std::fs::write(dir.path().join("impostor"), b"").unwrap();
    std::fs::rename(dir.path().join("impostor"), &other).unwrap();
    let text = second.check_file().unwrap_err().to_string();
    assert!(text.contains("other.db") && text.contains("replaced"), "{text}");

    // Nothing to watch on Postgres or in memory.
    crate::support::pg_store().await.check_file().unwrap();
    Store::connect("sqlite::memory:").await.unwrap().check_file().unwrap();
}

/// `smart-joiner ... | head -1`: a reader that goes away before the output is written ends
/// the command quietly (status 0, nothing on stderr) instead of a panic, in the plain and the
/// JSON output, and the command's work is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stdout_ends_a_command_quietly_instead_of_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("smart_joiner.db").display());
    let sj = smart_joiner();
    for args in
        [&["migrate", "up"][..], &["--json", "migrate", "status"][..], &["migrate", "status"][..]]
    {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = std::process::Command::new(&sj)
            .args(args)
            .env("DATABASE_URL", &db)
            .env("LOG_DIR", dir.path().join("logs"))
            .current_dir(dir.path())
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    // The first command's work was done although nobody read its output.
    let store = Store::connect(&db).await.unwrap();
    assert!(store.pending_migrations().await.unwrap().is_empty());
    store.close().await.unwrap();
}
