//! Operator safety, over the real binaries where the operator meets it: `migrate down` does not
//! drop rows unasked.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use smart_joiner::domain::TargetLink;
use smart_joiner::store::{Store, StoreError};
use tokio::sync::OnceCell;

use crate::on_both_backends;

on_both_backends!(migrate_down_refuses_to_drop_rows_and_reports_what_it_rolled_back);

// ---------------------------------------------------------------------------------------------
// helpers

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
        env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
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
        }
    })
    .await
    .unwrap()
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
    drop(store);

    let ran = run(&sj, &["migrate", "down", "3"], &env, dir.path()).await;
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
    let ran = run(migration, &["down", "3"], &env, dir.path()).await;
    assert_eq!(ran.code, Some(1), "{}", ran.all());
    assert!(ran.stderr.contains("accounts (3 row(s))"), "{}", ran.all());

    let ran = run(&sj, &["--json", "migrate", "down", "5", "--yes"], &env, dir.path()).await;
    assert_eq!(ran.code, Some(0), "{}", ran.all());
    let json: serde_json::Value = serde_json::from_str(&ran.stdout).unwrap();
    assert_eq!(json, serde_json::json!({ "rolled_back": newest_first }));
}
