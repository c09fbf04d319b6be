//! Sessions as operators hold them, through `accounts_config.json`: Telethon `.session` files
//! built with real SQLite per Telethon's schemas (read by column name, never changed), the
//! `sessions/{session_name}.session` fallback, and every string format in one file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, Statement, Value};
use smart_joiner::accounts_config::AccountsConfig;
use smart_joiner::telegram::session::TelethonSession;

fn key(seed: u8) -> [u8; 256] {
    let mut k = [0u8; 256];
    for (i, b) in k.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(7).wrapping_add(seed) | 1;
    }
    k
}

/// Telethon's schemas of the `sessions` table over the years, and one with the columns in
/// another order plus a column of its own large enough to overflow a 512-byte page.
const SCHEMAS: [(&str, &str, Option<u32>); 3] = [
    (
        "current (version 7, takeout_id)",
        "CREATE TABLE sessions (dc_id integer primary key, server_address text, port integer, \
         auth_key blob, takeout_id integer)",
        None,
    ),
    (
        "old (no takeout_id)",
        "CREATE TABLE sessions (dc_id integer primary key, server_address text, port integer, \
         auth_key blob)",
        None,
    ),
    (
        "reordered, small pages",
        "CREATE TABLE sessions (auth_key blob, notes text, port integer, \"server_address\" text, \
         dc_id integer primary key)",
        Some(512),
    ),
];

/// A Telethon-shaped `.session` file made by SQLite itself (rollback journal, as Telethon).
async fn session_file(
    path: &Path,
    schema: &str,
    page_size: Option<u32>,
    dc: i64,
    addr: &str,
    seed: u8,
) {
    let mut opts = ConnectOptions::new(format!("sqlite://{}?mode=rwc", path.display()));
    opts.max_connections(1).min_connections(1).sqlx_logging(false);
    let db = Database::connect(opts).await.unwrap();
    if let Some(size) = page_size {
        db.execute_unprepared(&format!("PRAGMA page_size = {size}")).await.unwrap();
    }
    db.execute_unprepared("PRAGMA journal_mode = DELETE").await.unwrap();
    db.execute_unprepared(
        "CREATE TABLE version (version integer primary key); INSERT INTO version VALUES (7); \
         CREATE TABLE entities (id integer primary key, hash integer not null, username text, \
         phone integer, name text, date integer); \
         CREATE TABLE sent_files (md5_digest blob, file_size integer, type integer, id integer, \
         hash integer, primary key(md5_digest, file_size, type)); \
         CREATE TABLE update_state (id integer primary key, pts integer, qts integer, date integer, seq integer)",
    )
    .await
    .unwrap();
    db.execute_unprepared(schema).await.unwrap();
    // Enough entities that the file has many pages.
    for i in 0..300 {
        db.execute_unprepared(&format!(
            "INSERT INTO entities VALUES ({i}, {}, 'user_{i}', NULL, 'Name {i}', 0)",
            i * 7
        ))
        .await
        .unwrap();
    }
    let notes = schema.contains("notes");
    let sql = if notes {
        "INSERT INTO sessions (dc_id, server_address, port, auth_key, notes) VALUES ($1, $2, $3, $4, $5)"
    } else {
        "INSERT INTO sessions (dc_id, server_address, port, auth_key) VALUES ($1, $2, $3, $4)"
    };
    let mut values: Vec<Value> =
        vec![dc.into(), addr.into(), 443i64.into(), Value::Bytes(Some(key(seed).to_vec()))];
    if notes {
        values.push("n".repeat(1500).into());
    }
    db.execute_raw(Statement::from_sql_and_values(db.get_database_backend(), sql, values))
        .await
        .unwrap();
    db.close().await.unwrap();
}

/// Every file under `dir` with its bytes and modification time.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, std::time::SystemTime)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                todo.push(entry.path());
            } else {
                out.insert(
                    entry.path(),
                    (std::fs::read(entry.path()).unwrap(), meta.modified().unwrap()),
                );
            }
        }
    }
    out
}

fn entry(name: &str, fields: serde_json::Value) -> serde_json::Value {
    let mut e = serde_json::json!({
        "session_name": name,
        "api_id": 12345,
        "api_hash": "0123456789abcdef0123456789abcdef",
    });
    for (k, v) in fields.as_object().unwrap() {
        e[k] = v.clone();
    }
    e
}

fn write_config(dir: &Path, entries: &[serde_json::Value]) -> PathBuf {
    let path = dir.join("accounts_config.json");
    std::fs::write(&path, serde_json::to_string_pretty(entries).unwrap()).unwrap();
    path
}

#[tokio::test]
async fn telethon_session_files_of_every_schema_are_read_by_column_name_and_never_changed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sessions")).unwrap();
    let mut entries = Vec::new();
    for (i, (what, schema, page)) in SCHEMAS.iter().enumerate() {
        let file = dir.path().join(format!("acc_{i}.session"));
        session_file(&file, schema, *page, 2, "149.154.167.51", i as u8).await;
        entries.push(entry(
            &format!("acc_{i}"),
            serde_json::json!({ "session_file": format!("acc_{i}.session"), "what": what }),
        ));
    }
    // SmartJoiner's fallback: an empty string_session and sessions/{name}.session.
    session_file(
        &dir.path().join("sessions/fallback.session"),
        SCHEMAS[0].1,
        None,
        4,
        "2001:67c:4e8:f004::a",
        9,
    )
    .await;
    entries.push(entry("fallback", serde_json::json!({ "string_session": "" })));
    let config = write_config(dir.path(), &entries);
    let before = snapshot(dir.path());

    let accounts = AccountsConfig::load(&config).unwrap();
    for (i, (what, _, _)) in SCHEMAS.iter().enumerate() {
        let a = accounts.get(&format!("acc_{i}")).unwrap();
        let want = TelethonSession::new(2, "149.154.167.51:443".parse().unwrap(), key(i as u8));
        assert_eq!(a.session, want, "{what}");
    }
    let fallback = accounts.get("fallback").unwrap();
    assert_eq!(
        fallback.session,
        TelethonSession::new(4, "[2001:67c:4e8:f004::a]:443".parse().unwrap(), key(9))
    );

    // Read-only: the same files, byte for byte, and nothing beside them (no -journal, no -wal).
    assert_eq!(snapshot(dir.path()), before);
}

#[tokio::test]
async fn an_unreadable_session_file_is_named_with_its_entry_and_format() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.session");
    session_file(&good, SCHEMAS[0].1, None, 2, "149.154.167.51", 1).await;
    // Not logged in: the sessions table is empty.
    let empty = dir.path().join("empty.session");
    session_file(&empty, SCHEMAS[0].1, None, 2, "149.154.167.51", 2).await;
    {
        let db = Database::connect(format!("sqlite://{}", empty.display())).await.unwrap();
        db.execute_unprepared("PRAGMA journal_mode = DELETE; DELETE FROM sessions").await.unwrap();
        db.close().await.unwrap();
    }
    std::fs::write(dir.path().join("text.session"), "not a database").unwrap();
    let walled = dir.path().join("walled.session");
    std::fs::copy(&good, &walled).unwrap();
    std::fs::write(dir.path().join("walled.session-wal"), [1u8; 32]).unwrap();
    let config = write_config(
        dir.path(),
        &[
            entry("missing", serde_json::json!({ "session_file": "nowhere.session" })),
            entry("empty", serde_json::json!({ "session_file": "empty.session" })),
            entry("text", serde_json::json!({ "session_file": "text.session" })),
            entry("walled", serde_json::json!({ "session_file": "walled.session" })),
            entry("none", serde_json::json!({})),
        ],
    );
    let err = AccountsConfig::load(&config).unwrap_err().to_string();
    for want in [
        "entry 0 (session 'missing'): field session_file: cannot read ",
        "nowhere.session: No such file or directory",
        "entry 1 (session 'empty'): field session_file: ",
        "the sessions table is empty: the account never logged in (read as a Telethon .session file)",
        "entry 2 (session 'text'): field session_file: ",
        "not an SQLite database",
        "entry 3 (session 'walled'): field session_file: ",
        "has a -wal file beside it",
        "entry 4 (session 'none'): field string_session: missing (give string_session or session_file, and there is no sessions/none.session)",
    ] {
        assert!(err.contains(want), "{want:?} not in:\n{err}");
    }
}

#[tokio::test]
async fn every_string_format_loads_in_one_accounts_file() {
    let telethon = TelethonSession::new(2, "149.154.167.51:443".parse().unwrap(), key(1)).encode();
    let mut gramjs = vec![4u8];
    gramjs.extend_from_slice(&14u16.to_be_bytes());
    gramjs.extend_from_slice(b"149.154.167.91");
    gramjs.extend_from_slice(&443u16.to_be_bytes());
    gramjs.extend_from_slice(&key(2));
    let gramjs = format!("1{}", STANDARD.encode(gramjs));
    let mut pyrogram = vec![1u8];
    pyrogram.extend_from_slice(&12345u32.to_be_bytes());
    pyrogram.push(0);
    pyrogram.extend_from_slice(&key(3));
    pyrogram.extend_from_slice(&42u64.to_be_bytes());
    pyrogram.push(0);
    let pyrogram = URL_SAFE_NO_PAD.encode(pyrogram);
    assert_eq!(pyrogram.len(), 362);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &[
            entry("t", serde_json::json!({ "string_session": telethon })),
            entry("g", serde_json::json!({ "string_session": gramjs })),
            entry("p", serde_json::json!({ "string_session": pyrogram })),
        ],
    );
    let accounts = AccountsConfig::load(&config).unwrap();
    let addr = |n: &str| accounts.get(n).unwrap().session.addr;
    assert_eq!(addr("t"), "149.154.167.51:443".parse().unwrap());
    assert_eq!(addr("g"), "149.154.167.91:443".parse().unwrap());
    assert_eq!(addr("p"), "149.154.175.53:443".parse().unwrap(), "DC 1 from the DC table");
    assert_eq!(accounts.get("p").unwrap().session.auth_key(), &key(3));
}

fn import(args: &[&str], cwd: &Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_smart-joiner"))
        .args(["accounts", "import"])
        .args(args)
        .current_dir(cwd)
        .env_remove("ACCOUNTS_CONFIG")
        .output()
        .expect("run smart-joiner")
}

#[tokio::test]
async fn accounts_import_turns_a_folder_of_session_files_into_an_accounts_file() {
    let folder = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let d = folder.path();
    session_file(&d.join("alice.session"), SCHEMAS[0].1, None, 2, "149.154.167.51", 1).await;
    std::fs::write(
        d.join("alice.json"),
        r#"{"app_id": 2040, "app_hash": "b18441a1ff607e10a989891a5462e627", "phone": "+10000000",
           "proxy": ["socks5", "10.0.0.1", 1080, true, "user", "pass-1"]}"#,
    )
    .unwrap();
    session_file(&d.join("bob.session"), SCHEMAS[1].1, None, 4, "149.154.167.91", 2).await;
    session_file(&d.join("+380501112233.session"), SCHEMAS[2].1, Some(512), 5, "91.108.56.130", 3)
        .await;
    std::fs::write(
        d.join("+380501112233.json"),
        r#"{"api_id": "777", "proxy": {"type": "socks5", "addr": "proxy.example", "port": 9050}}"#,
    )
    .unwrap();
    let before = snapshot(d);
    let out = work.path().join("accounts_config.json");
    let hash = "0123456789abcdef0123456789abcdef";
    let args = [
        "--from",
        d.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--api-id",
        "1",
        "--api-hash",
        hash,
    ];
    let ran = import(&args, work.path());
    let stdout = String::from_utf8_lossy(&ran.stdout);
    let stderr = String::from_utf8_lossy(&ran.stderr);
    assert!(ran.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("wrote 3 account(s)"), "{stdout}");
    assert_eq!(snapshot(d), before, "the session files are only read");

    let accounts = AccountsConfig::load(&out).unwrap();
    let a = accounts.get("alice").unwrap();
    assert_eq!(a.session, TelethonSession::new(2, "149.154.167.51:443".parse().unwrap(), key(1)));
    assert_eq!(a.api_id, 2040);
    assert_eq!(a.proxy.as_ref().unwrap().url().expose(), "socks5://user:pass-1@10.0.0.1:1080");
    let b = accounts.get("bob").unwrap();
    assert_eq!((b.api_id, b.proxy.is_none()), (1, true), "the defaults fill a missing .json");
    let p = accounts.get("+380501112233").unwrap();
    assert_eq!(p.session.addr, "91.108.56.130:443".parse().unwrap());
    assert_eq!(p.api_id, 777);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o600);
    }

    // An existing file is not replaced without --force.
    let written = std::fs::read(&out).unwrap();
    let again = import(&args, work.path());
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists (pass --force to replace it)"));
    assert_eq!(std::fs::read(&out).unwrap(), written);

    // One unreadable file: nothing is written, every problem is named, no secret printed.
    std::fs::write(d.join("broken.session"), "garbage").unwrap();
    std::fs::write(d.join("carol.session"), std::fs::read(d.join("bob.session")).unwrap()).unwrap();
    let other = work.path().join("other.json");
    let ran =
        import(&["--from", d.to_str().unwrap(), "--output", other.to_str().unwrap()], work.path());
    let stderr = String::from_utf8_lossy(&ran.stderr);
    assert!(!ran.status.success());
    assert!(
        stderr.contains("broken.session: ") && stderr.contains("not an SQLite database"),
        "{stderr}"
    );
    assert!(
        stderr.contains("bob.session: no app_id in bob.json and no --api-id given"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("b18441a1ff607e10a989891a5462e627") && !stderr.contains("pass-1"),
        "{stderr}"
    );
    assert!(!other.exists(), "nothing half-written");
}
