//! The operator console through the real `smart-joiner console` binary on a seeded database:
//! over plain HTTP (tokens, CSRF, the audit row, no credential in the log) on both backends,
//! and in headless Chromium driven by Playwright (`tests/browser/console.mjs`): every page
//! renders its numbers, filters and sorting work, actions change the database and are
//! audited, a missing or wrong token is refused, and a screenshot of each page is written.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use serde_json::json;
use smart_joiner::domain::{
    AccountChange, AccountStatus, Decision, JoinOutcome, Next, PeerInfo, TargetChange, TargetLink,
    TargetStatus,
};
use smart_joiner::store::{Applied, Attempt, Store};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

const READ_TOKEN: &str = "reader-token-3f9a";
const ADMIN_TOKEN: &str = "admin-token-7c21";

/// What the seed holds, by construction.
struct Seed {
    /// Session name -> id.
    accounts: Vec<(String, i64)>,
    /// The `error` group, the in-doubt pinned group.
    error_target: i64,
    pinned_target: i64,
    expect: serde_json::Value,
}

fn link(s: &str) -> TargetLink {
    TargetLink::parse(s).unwrap()
}

/// Leases `account`, claims `target` and applies `decision` for an attempt finishing at `at`.
async fn attempt(
    store: &Store,
    account: i64,
    target: i64,
    at: DateTime<Utc>,
    outcome: JoinOutcome,
    decision: Decision,
) {
    let epoch = store.bump_lease_epoch(account).await.unwrap();
    assert!(store.claim_target(target, account, epoch, at).await.unwrap(), "claim");
    let attempt = Attempt {
        started_at: at - Duration::seconds(2),
        finished_at: at,
        worker: "seed-worker".to_owned(),
    };
    let applied =
        store.apply_decision(target, account, epoch, &outcome, &decision, &attempt).await.unwrap();
    assert_eq!(applied, Applied::Applied);
}

async fn joined(store: &Store, account: i64, target: i64, at: DateTime<Utc>, title: &str) {
    let outcome = JoinOutcome::Joined {
        already: false,
        peer: PeerInfo { id: Some(-100_000 - target), title: Some(title.to_owned()) },
    };
    let decision = Decision {
        target: TargetChange::Joined { joined_at: at, warmup_ends_at: at + Duration::hours(24) },
        account: AccountChange::Pace { until: at + Duration::minutes(7) },
        next: Next::Done,
    };
    attempt(store, account, target, at, outcome, decision).await;
}

/// Five accounts in two pools, 15 groups in two niches, a day and a half of attempts.
async fn seed(store: &Store) -> Seed {
    let now = Utc::now();
    let names = ["anna", "boris", "carl", "dana"];
    let owned: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    store.sync_accounts(&owned, "default").await.unwrap();
    store.sync_accounts(&["erik".to_owned()], "vip").await.unwrap();
    let all = store.accounts(None).await.unwrap();
    let id = |n: &str| all.iter().find(|a| a.session_name == n).unwrap().id;
    let (anna, boris, carl, dana) = (id("anna"), id("boris"), id("carl"), id("dana"));

    let cities = ["kyiv", "lviv", "odesa", "dnipro", "kharkiv", "poltava"];
    let mut cars: Vec<TargetLink> = Vec::new();
    for city in cities {
        cars.push(link(&format!("@cars_{city}")));
        cars.push(link(&format!("@auto_{city}")));
    }
    store.import_targets(&cars, "cars").await.unwrap();
    let bikes = [link("@bikes_kyiv"), link("@bikes_lviv"), link("@bikes_odesa")];
    store.import_targets(&bikes, "bikes").await.unwrap();
    let targets = store.targets(None, None).await.unwrap();
    let t = |l: &str| targets.iter().find(|t| t.link == link(l)).unwrap().id;

    // anna: three joins 30 h ago (warm-up over: ready for posting, outside the 24 h window).
    for (i, g) in ["@cars_kyiv", "@cars_lviv", "@cars_odesa"].iter().enumerate() {
        joined(store, anna, t(g), now - Duration::hours(30) + Duration::minutes(i as i64), g).await;
    }
    // boris: two joins 2 h ago (warming up; counted in his 24 h).
    joined(store, boris, t("@auto_kyiv"), now - Duration::hours(2), "Auto Kyiv").await;
    joined(store, boris, t("@auto_lviv"), now - Duration::minutes(110), "Auto Lviv").await;
    // carl: a FloodWait an hour ago, a dead link three hours ago, an unanswered join 50 min ago.
    let fw_until = now + Duration::minutes(20);
    let flood = Decision {
        target: TargetChange::Requeue { run_at: fw_until },
        account: AccountChange::Wait {
            status: AccountStatus::FloodWait,
            until: fw_until,
            reason: "FLOOD_WAIT 4800".to_owned(),
        },
        next: Next::Done,
    };
    let at = now - Duration::hours(1);
    attempt(store, carl, t("@cars_dnipro"), at, JoinOutcome::FloodWait { seconds: 4800 }, flood)
        .await;
    let dead = t("@auto_odesa");
    let fail = Decision {
        target: TargetChange::Fail {
            status: TargetStatus::Error,
            code: "USERNAME_NOT_OCCUPIED".to_owned(),
            message: "no such group".to_owned(),
        },
        account: AccountChange::Pace { until: now - Duration::hours(3) },
        next: Next::Done,
    };
    let invalid = JoinOutcome::TargetInvalid {
        code: "USERNAME_NOT_OCCUPIED".to_owned(),
        message: "no such group".to_owned(),
    };
    attempt(store, carl, dead, now - Duration::hours(3), invalid, fail).await;
    let pinned = t("@auto_dnipro");
    let doubt = Decision {
        target: TargetChange::KeepClaim { run_at: now + Duration::hours(1) },
        account: AccountChange::Wait {
            status: AccountStatus::FloodWait,
            until: fw_until,
            reason: "FLOOD_WAIT 4800".to_owned(),
        },
        next: Next::Done,
    };
    let no_answer = JoinOutcome::InDoubt { reason: "no answer in time".to_owned() };
    attempt(store, carl, pinned, now - Duration::minutes(50), no_answer, doubt).await;
    // dana: banned by Telegram.
    store
        .set_account_status(dana, AccountStatus::Banned, Some("USER_DEACTIVATED_BAN"), None)
        .await
        .unwrap();

    let accounts: Vec<(String, i64)> = all.iter().map(|a| (a.session_name.clone(), a.id)).collect();
    let expect = json!({
        "accounts": 5,
        "pools": { "default": { "accounts": 4, "workable": 2, "joins": 2, "bound": 5,
                                "status": { "active": 2, "flood_wait": 1, "banned": 1 } },
                   "vip": { "accounts": 1, "workable": 1, "joins": 0, "bound": 0 } },
        "niches": { "cars": { "total": 12, "joined": 5, "error": 1, "queued": 1, "joining": 1, "new": 4 },
                    "bikes": { "total": 3, "new": 3 } },
        "queue": { "cars": { "due": 0, "scheduled": 1 } },
        "accounts_by_status": { "banned": 1, "active": 3, "flood_wait": 1 },
        "most_joins_24h": "boris",
        "anna": { "id": anna, "attempts": 3, "groups": 3 },
        "carl": { "id": carl, "attempts": 3 },
        "search": { "kyiv": 3, "cars_": 6 },
        "ready": 3,
        "activity": { "joins": 5, "flood_waits": 1, "errors": 2 },
        "error_target": dead,
        "pinned_target": pinned,
    });
    Seed { accounts, error_target: dead, pinned_target: pinned, expect }
}

fn smart_joiner() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_smart-joiner"))
}

/// A running `smart-joiner console` and the port it serves.
struct Running {
    child: Child,
    port: u16,
    /// Every line the console printed so far is appended here by a task.
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Running {
    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

/// Starts the console binary on 127.0.0.1:0 against `db_url` with the given tokens.
async fn start_console(db_url: &str, dir: &Path, tokens: &[(&str, &str)]) -> Running {
    let mut cmd = Command::new(smart_joiner());
    cmd.arg("console")
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", db_url)
        .env("CONSOLE_ADDR", "127.0.0.1:0")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in tokens {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn smart-joiner console");
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let (port_tx, mut port_rx) = tokio::sync::mpsc::channel::<u16>(1);
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let log = log.clone();
        let port_tx = port_tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(rest) = line.split("console on http://127.0.0.1:").nth(1) {
                    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    if let Ok(p) = digits.parse() {
                        let _ = port_tx.send(p).await;
                    }
                }
                let mut l = log.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
    }
    let port =
        tokio::time::timeout(StdDuration::from_secs(60), port_rx.recv()).await.ok().flatten();
    let Some(port) = port else {
        let _ = child.kill().await;
        panic!("the console never said where it listens:\n{}", log.lock().unwrap());
    };
    Running { child, port, log }
}

/// One plain HTTP/1.1 request: (status, raw head, body).
async fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &str,
) -> (u16, String, String) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: 127.0.0.1:{port}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if method == "POST" {
        req.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let code = raw.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    (code, head.to_owned(), body.to_owned())
}

fn basic(user: &str, token: &str) -> (&'static str, String) {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{token}"));
    ("Authorization", format!("Basic {b64}"))
}

fn csrf_of(page: &str) -> String {
    let rest = page.split("name=\"csrf\" value=\"").nth(1).expect("a CSRF field on the page");
    rest.split('"').next().unwrap().to_owned()
}

async fn tokens_csrf_and_audit(store: Store, db_url: String) {
    let seed = seed(&store).await;
    let dir = tempfile::tempdir().unwrap();
    let console = start_console(
        &db_url,
        dir.path(),
        &[("CONSOLE_TOKEN", READ_TOKEN), ("CONSOLE_ADMIN_TOKEN", ADMIN_TOKEN)],
    )
    .await;
    let port = console.port;
    let anna = seed.accounts.iter().find(|(n, _)| n == "anna").unwrap().1;

    // The probes answer without a token; every page needs one.
    assert_eq!(http(port, "GET", "/healthz", &[], "").await.0, 200);
    assert_eq!(http(port, "GET", "/readyz", &[], "").await.0, 200);
    let (code, head, _) = http(port, "GET", "/", &[], "").await;
    assert_eq!(code, 401);
    assert!(head.to_lowercase().contains("www-authenticate: basic"), "{head}");
    assert_eq!(http(port, "GET", "/accounts", &[basic("x", "wrong")], "").await.0, 401);
    let bearer = ("Authorization", format!("Bearer {READ_TOKEN}"));
    let (code, head, page) = http(port, "GET", "/", &[bearer], "").await;
    assert_eq!(code, 200, "{page}");
    assert!(head.to_lowercase().contains("content-security-policy: default-src 'none'"), "{head}");
    assert!(page.contains("data-pool=\"default\""), "{page}");

    // A reader sees no form and cannot act.
    let reader = basic("rita", READ_TOKEN);
    let (_, _, page) =
        http(port, "GET", &format!("/accounts/{anna}"), std::slice::from_ref(&reader), "").await;
    assert!(!page.contains("name=\"csrf\""), "no form for a reader");
    let path = format!("/accounts/{anna}/pause");
    assert_eq!(http(port, "POST", &path, &[reader], "csrf=x").await.0, 401);

    // The admin: a form without the right CSRF token, or from another site, is refused.
    let admin = basic("alice", ADMIN_TOKEN);
    let (_, _, page) =
        http(port, "GET", &format!("/accounts/{anna}"), std::slice::from_ref(&admin), "").await;
    let csrf = csrf_of(&page);
    assert_eq!(http(port, "POST", &path, std::slice::from_ref(&admin), "note=x").await.0, 403);
    assert_eq!(http(port, "POST", &path, std::slice::from_ref(&admin), "csrf=forged").await.0, 403);
    let other_site = ("Origin", "https://evil.example".to_owned());
    let form = format!("csrf={csrf}");
    assert_eq!(http(port, "POST", &path, &[admin.clone(), other_site], &form).await.0, 403);
    // Another credential's token does not pass either.
    let other = basic("alice", READ_TOKEN);
    assert_eq!(http(port, "POST", &path, &[other], &form).await.0, 401);
    assert_eq!(store.account(anna).await.unwrap().unwrap().status, AccountStatus::Active);
    assert!(store.audit_log(None, 10).await.unwrap().is_empty(), "nothing refused is audited");

    // With it: one write, audited with the admin's name.
    let form = format!("csrf={csrf}&note=proxy+moves");
    let (code, head, _) = http(port, "POST", &path, std::slice::from_ref(&admin), &form).await;
    assert_eq!(code, 303, "{head}");
    assert!(head.contains(&format!("location: /accounts/{anna}?notice=paused")), "{head}");
    let a = store.account(anna).await.unwrap().unwrap();
    assert_eq!(a.status, AccountStatus::Paused);
    assert_eq!(a.status_reason.as_deref(), Some("paused by console:alice: proxy moves"));
    let log = store.audit_log(None, 10).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(
        (log[0].actor.as_str(), log[0].action.as_str(), log[0].subject.clone()),
        ("console:alice", "pause", format!("account:{anna}"))
    );
    // Pausing again is refused with the reason, and changes nothing.
    let (code, _, page) = http(port, "POST", &path, std::slice::from_ref(&admin), &form).await;
    assert_eq!(code, 409);
    assert!(page.contains("already paused"), "{page}");
    assert_eq!(store.audit_log(None, 10).await.unwrap().len(), 1);

    // The CSV of the groups ready for posting.
    let (code, head, csv) = http(port, "GET", "/ready.csv", std::slice::from_ref(&admin), "").await;
    assert_eq!(code, 200);
    assert!(head.to_lowercase().contains("content-type: text/csv"), "{head}");
    assert_eq!(csv.lines().count(), 1 + seed.expect["ready"].as_u64().unwrap() as usize, "{csv}");
    assert!(csv.starts_with("account,target_id,link,title,niche,warmup_ended_at"));

    let boris = seed.accounts.iter().find(|(n, _)| n == "boris").unwrap().1;
    telegrams_word_and_active_hours_are_shown_read_only_and_escaped(&store, port, anna, boris)
        .await;

    // No token and no database password ever reaches the log.
    let mut console = console;
    let _ = console.child.start_kill();
    let _ = console.child.wait().await;
    let out = console.log();
    assert!(out.contains("console request"), "requests are logged:\n{out}");
    for secret in [READ_TOKEN, ADMIN_TOKEN] {
        assert!(!out.contains(secret), "a token in the log:\n{out}");
    }
    if let Ok(u) = url::Url::parse(&db_url)
        && let Some(pw) = u.password()
    {
        assert!(!out.contains(pw), "the database password in the log");
    }
    let base64_admin = basic("alice", ADMIN_TOKEN).1;
    assert!(!out.contains(base64_admin.trim_start_matches("Basic ")), "a credential in the log");
}

/// The `<tr>` of `account` on the accounts page.
fn account_row<'a>(page: &'a str, account: &str) -> &'a str {
    let start = page.find(&format!("<tr data-account=\"{account}\">")).unwrap_or_else(|| {
        panic!("no row for {account} in:\n{page}");
    });
    let row = &page[start..];
    &row[..row.find("</tr>").unwrap_or(row.len())]
}

/// What the cell (`<td>` or `<dd>`) marked `data-k="{key}"` holds.
fn cell<'a>(html: &'a str, key: &str) -> &'a str {
    let rest = html.split(&format!("data-k=\"{key}\">")).nth(1).unwrap_or_else(|| {
        panic!("no {key} in:\n{html}");
    });
    let end = ["</td>", "</dd>"].iter().filter_map(|e| rest.find(e)).min();
    &rest[..end.unwrap_or(rest.len())]
}

/// Each account's channel limit (Premium-aware, under the operator's CHANNEL_LIMIT, 1000 by
/// default), Premium, freeze, last check and own active hours, on the list and on its page.
async fn telegrams_word_and_active_hours_are_shown_read_only_and_escaped(
    store: &Store,
    port: u16,
    anna: i64,
    boris: i64,
) {
    use sea_orm::sea_query::Expr;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    use smart_joiner::domain::{AccountProfile, ActiveHours, Freeze};
    use smart_joiner::store::entity::accounts as rows;
    let now = Utc::now();
    // anna: Premium, Telegram allows 2000, the operator's 1000 applies; checked; own hours.
    let premium = AccountProfile { premium: true, channel_limit: Some(2000), freeze: None };
    store.record_profile(anna, &premium, now).await.unwrap();
    rows::Entity::update_many()
        .col_expr(rows::Column::CheckedAt, Expr::val(now - Duration::minutes(5)))
        .col_expr(rows::Column::CheckResult, Expr::val("authorised"))
        .filter(rows::Column::Id.eq(anna))
        .exec(store.connection())
        .await
        .unwrap();
    let kyiv = ActiveHours::parse("Europe/Kyiv 09:00-22:00 +30m").unwrap();
    store.set_active_hours(anna, Some(&kyiv), "test", now).await.unwrap();
    // boris: free, frozen for a month, with an appeal link carrying markup.
    let freeze = Freeze {
        since: Some(now - Duration::days(1)),
        until: Some(now + Duration::days(30)),
        appeal_url: Some("https://t.me/spambot?start=<b>x</b>".to_owned()),
    };
    let frozen = AccountProfile { premium: false, channel_limit: Some(500), freeze: Some(freeze) };
    store.record_profile(boris, &frozen, now).await.unwrap();

    let reader = basic("rita", READ_TOKEN);
    let (code, _, page) = http(port, "GET", "/accounts", std::slice::from_ref(&reader), "").await;
    assert_eq!(code, 200, "{page}");
    let row = account_row(&page, "anna");
    assert_eq!(cell(row, "limit"), "1000");
    assert_eq!(cell(row, "premium"), "yes");
    assert_eq!(cell(row, "frozen"), "no");
    assert!(cell(row, "check").contains("authorised"), "{row}");
    assert_eq!(cell(row, "hours"), "Europe/Kyiv 09:00-22:00 +30m");
    let row = account_row(&page, "boris");
    assert_eq!((cell(row, "limit"), cell(row, "premium")), ("500", "no"));
    assert!(cell(row, "frozen").contains("frozen</b> until"), "{row}");
    assert!(cell(row, "check").contains("never"), "{row}");
    assert!(cell(row, "hours").contains("the pool's"), "{row}");
    // Never read: the free default, and it says so.
    let row = account_row(&page, "carl");
    assert_eq!((cell(row, "limit"), cell(row, "premium")), ("500", "not read yet"));
    assert_eq!(cell(row, "frozen"), "not read yet");

    let (_, _, page) =
        http(port, "GET", &format!("/accounts/{boris}"), std::slice::from_ref(&reader), "").await;
    assert!(cell(&page, "limit").starts_with("500 "), "{page}");
    assert!(cell(&page, "frozen").contains("frozen</b> until"), "{page}");
    assert_eq!(cell(&page, "appeal"), "https://t.me/spambot?start=&lt;b&gt;x&lt;/b&gt;");
    assert!(!page.contains("<b>x</b>"), "the appeal link's markup is escaped");
    let (_, _, page) =
        http(port, "GET", &format!("/accounts/{anna}"), std::slice::from_ref(&reader), "").await;
    assert!(
        cell(&page, "limit")
            .contains("1000 <span class=\"muted\">(CHANNEL_LIMIT (Telegram allows 2000))"),
        "{page}"
    );
    assert_eq!(cell(&page, "premium"), "yes");
    assert_eq!(cell(&page, "hours"), "Europe/Kyiv 09:00-22:00 +30m");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn console_over_http_on_postgres() {
    let (store, url) = crate::support::pg_database().await;
    tokens_csrf_and_audit(store, url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn console_over_http_on_sqlite() {
    let (store, dir) = crate::support::sqlite_store().await;
    let url = format!("sqlite://{}", dir.path().join("smart_joiner.db").display());
    tokens_csrf_and_audit(store, url).await;
}

#[tokio::test]
async fn the_console_refuses_a_non_loopback_address_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("smart_joiner.db").display());
    let out = Command::new(smart_joiner())
        .arg("console")
        .current_dir(dir.path())
        .env_clear()
        .env("DATABASE_URL", &db)
        .env("CONSOLE_ADDR", "0.0.0.0:0")
        .env("CONSOLE_ADMIN_TOKEN", "only-the-admin-token-here")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it must not start:\n{stderr}");
    assert!(
        stderr.contains("not a loopback address") && stderr.contains("set CONSOLE_TOKEN"),
        "{stderr}"
    );
    assert!(!stderr.contains("only-the-admin-token-here"));
}

/// Where the Playwright script lives.
fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("browser")
}

/// Runs `node console.mjs` against a console on a seeded Postgres database, then checks in
/// the database what the browser did. Fails (never skips) without node, chromium or
/// `npm ci` in tests/browser.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_console_in_a_real_browser() {
    let dir = browser_dir();
    assert!(
        dir.join("node_modules").join("playwright-core").exists(),
        "playwright-core is not installed: run `npm ci` in tests/browser (.ci/run does)"
    );
    let chromium = which("chromium")
        .expect("chromium is not on PATH: install Debian's `chromium` package (.ci/run does)");
    let (store, url) = crate::support::pg_database().await;
    let seed = seed(&store).await;
    let work = tempfile::tempdir().unwrap();
    let console = start_console(
        &url,
        work.path(),
        &[("CONSOLE_TOKEN", READ_TOKEN), ("CONSOLE_ADMIN_TOKEN", ADMIN_TOKEN)],
    )
    .await;
    let shots = match std::env::var_os("CONSOLE_SCREENSHOTS") {
        Some(d) => PathBuf::from(d),
        None => work.path().join("screenshots"),
    };
    std::fs::create_dir_all(&shots).unwrap();
    let out = Command::new("node")
        .arg("console.mjs")
        .current_dir(&dir)
        .env("CONSOLE_URL", format!("http://127.0.0.1:{}", console.port))
        .env("CONSOLE_TOKEN", READ_TOKEN)
        .env("CONSOLE_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("CHROMIUM", &chromium)
        .env("SCREENSHOT_DIR", &shots)
        .env("EXPECT", seed.expect.to_string())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(StdDuration::from_secs(300), out)
        .await
        .expect("the browser run took more than 5 minutes")
        .expect("node is not installed (apt-get install nodejs npm; .ci/run does)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the browser run failed:\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- console\n{}",
        console.log()
    );

    // What the browser did, seen in the database.
    let carl = seed.accounts.iter().find(|(n, _)| n == "carl").unwrap().1;
    let c = store.account(carl).await.unwrap().unwrap();
    assert_eq!(c.status, AccountStatus::Paused, "the browser paused carl");
    let retried = store.target(seed.error_target).await.unwrap().unwrap();
    assert_eq!(retried.status, TargetStatus::New, "the browser retried the error group");
    let released = store.target(seed.pinned_target).await.unwrap().unwrap();
    assert_eq!((released.status, released.claimed_account_id), (TargetStatus::New, None));
    let imported = store.targets(Some("browser_import"), None).await.unwrap();
    assert_eq!(imported.len(), 2, "the browser imported two links");
    let log = store.audit_log(None, 20).await.unwrap();
    let mut actions: Vec<(&str, &str)> =
        log.iter().map(|e| (e.action.as_str(), e.actor.as_str())).collect();
    actions.sort_unstable();
    assert_eq!(
        actions,
        [
            ("import", "console:browser"),
            ("pause", "console:browser"),
            ("release", "console:browser"),
            ("retry", "console:browser"),
        ],
        "each action audited once, refused ones not at all"
    );
    for page in ["pools", "accounts", "account", "groups", "group", "ready", "activity", "audit"] {
        let shot = shots.join(format!("console-{page}.png"));
        let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
        assert!(size > 10_000, "{} is missing or blank ({size} bytes)", shot.display());
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// Runs `smart-joiner args` on `db_url` as the login `ops`: (success, stdout, stderr).
async fn cli(db_url: &str, dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(smart_joiner())
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", db_url)
        .env("USER", "ops")
        .output()
        .await
        .unwrap();
    let (o, e) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), o.into_owned(), e.into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cli_pauses_resumes_retries_and_releases_through_the_same_audited_writes() {
    let (store, dir) = crate::support::sqlite_store().await;
    let url = format!("sqlite://{}", dir.path().join("smart_joiner.db").display());
    let seed = seed(&store).await;
    let id = |n: &str| seed.accounts.iter().find(|(a, _)| a == n).unwrap().1;
    let d = dir.path();

    let (ok, out, err) = cli(&url, d, &["accounts", "pause", "anna", "--note", "new proxy"]).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("paused anna"), "{out}");
    let anna = store.account(id("anna")).await.unwrap().unwrap();
    assert_eq!(anna.status, AccountStatus::Paused);
    assert_eq!(anna.status_reason.as_deref(), Some("paused by cli:ops: new proxy"));
    let (ok, _, err) = cli(&url, d, &["accounts", "pause", "dana"]).await;
    assert!(!ok && err.contains("nothing done") && err.contains("banned"), "{err}");
    let (ok, _, err) = cli(&url, d, &["accounts", "pause", "nobody"]).await;
    assert!(!ok && err.contains("no account named nobody"), "{err}");
    let (ok, out, err) = cli(&url, d, &["accounts", "resume", "anna"]).await;
    assert!(ok, "{out}{err}");
    assert_eq!(store.account(id("anna")).await.unwrap().unwrap().status, AccountStatus::Active);

    let error = seed.error_target.to_string();
    let (ok, out, err) = cli(&url, d, &["--json", "targets", "retry", &error]).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("\"done\""), "{out}");
    let t = store.target(seed.error_target).await.unwrap().unwrap();
    assert_eq!(t.status, TargetStatus::New);

    let pinned = seed.pinned_target.to_string();
    let (ok, _, err) = cli(&url, d, &["targets", "release", &pinned]).await;
    assert!(!ok && err.contains("--yes"), "{err}");
    assert_eq!(
        store.target(seed.pinned_target).await.unwrap().unwrap().status,
        TargetStatus::Joining,
        "nothing released without --yes"
    );
    let (ok, out, err) = cli(&url, d, &["targets", "release", &pinned, "--yes"]).await;
    assert!(ok, "{out}{err}");
    let t = store.target(seed.pinned_target).await.unwrap().unwrap();
    assert_eq!((t.status, t.claimed_account_id), (TargetStatus::New, None));

    let log = store.audit_log(None, 10).await.unwrap();
    let rows: Vec<(&str, &str)> =
        log.iter().map(|e| (e.action.as_str(), e.actor.as_str())).collect();
    assert_eq!(
        rows,
        [("release", "cli:ops"), ("retry", "cli:ops"), ("resume", "cli:ops"), ("pause", "cli:ops")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn demo_with_the_console_serves_the_groups_while_and_after_they_are_joined() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(smart_joiner())
        .args(["demo", "--console"])
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CONSOLE_ADDR", "127.0.0.1:0")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let (port_tx, mut port_rx) = tokio::sync::mpsc::channel::<u16>(1);
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let (log, port_tx) = (log.clone(), port_tx.clone());
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(rest) = line.split("console on http://127.0.0.1:").nth(1) {
                    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    if let Ok(p) = digits.parse() {
                        let _ = port_tx.send(p).await;
                    }
                }
                let mut l = log.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
    }
    let port = tokio::time::timeout(StdDuration::from_secs(60), port_rx.recv())
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("no console port:\n{}", log.lock().unwrap()));
    // Without a token it answers only to a loopback name (no DNS rebinding).
    let rebound = ("Host", "rebound.example:8080".to_owned());
    assert_eq!(http(port, "GET", "/groups", &[rebound], "").await.0, 421);
    // While the demo runs, the groups are there.
    let (code, _, page) = http(port, "GET", "/groups?niche=demo_cars", &[], "").await;
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("demo_cars"), "{page}");
    // After it ends the console stays up on the same database.
    let deadline = std::time::Instant::now() + StdDuration::from_secs(120);
    while !log.lock().unwrap().contains("the console stays up") {
        assert!(
            std::time::Instant::now() < deadline,
            "the demo never ended:\n{}",
            log.lock().unwrap()
        );
        tokio::time::sleep(StdDuration::from_millis(200)).await;
    }
    let (code, _, page) = http(port, "GET", "/groups?status=joined", &[], "").await;
    assert_eq!(code, 200);
    let joined = page.matches("data-status=\"joined\"><td class=\"num\">").count();
    assert!(joined >= 20, "the joined groups are listed after the demo ({joined}):\n{page}");
    let (code, _, page) = http(port, "GET", "/activity", &[], "").await;
    assert_eq!(code, 200);
    assert!(page.contains("<rect"), "the joins are charted");
    // Ctrl-C ends it cleanly.
    let pid = child.id().expect("running").to_string();
    let killed = Command::new("kill").args(["-INT", &pid]).status().await.unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(StdDuration::from_secs(30), child.wait())
        .await
        .expect("the demo stops on Ctrl-C")
        .unwrap();
    assert!(status.success(), "{status:?}\n{}", log.lock().unwrap());
}

/// The number in `<span data-k="{key}">N</span>` inside the section of `pool`.
fn pool_number(page: &str, pool: &str, key: &str) -> u64 {
    let section = page.split(&format!("data-pool=\"{pool}\"")).nth(1).expect("the pool's section");
    let section = section.split("</section>").next().unwrap();
    let rest = section.split(&format!("data-k=\"{key}\">")).nth(1).unwrap_or_else(|| {
        panic!("no {key} in the section of {pool}: {section}");
    });
    rest.split('<').next().unwrap().trim().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_pools_page_shows_each_pools_redis_queue_when_asked() {
    use smart_joiner::domain::JoinTask;
    use smart_joiner::queue::{JobQueue, QueueSettings, connect_redis};

    let (store, url) = crate::support::pg_database().await;
    seed(&store).await;
    let redis = crate::cluster::PrivateRedis::start();
    let prefix = "console_test:";
    let conn = connect_redis(&redis.url).await.unwrap();
    let settings = |pool: &str| QueueSettings {
        name: format!("{prefix}join:v1:{pool}"),
        ..QueueSettings::default()
    };
    let queue = JobQueue::new(conn, &settings("default"));
    let later = Utc::now() + Duration::hours(1);
    for target in [101, 102] {
        queue.push(JoinTask::new(target, "default").into_current(), later).await.unwrap();
    }
    queue.push(JoinTask::new(103, "default").into_current(), Utc::now()).await.unwrap();
    assert_eq!(queue.promote_due().await.unwrap(), 1);

    let dir = tempfile::tempdir().unwrap();
    let mut cmd_env = vec![("CONSOLE_TOKEN", READ_TOKEN), ("CONSOLE_QUEUE", "true")];
    cmd_env.push(("REDIS_URL", redis.url.as_str()));
    cmd_env.push(("REDIS_PREFIX", prefix));
    let console = start_console(&url, dir.path(), &cmd_env).await;
    let (code, _, page) = http(console.port, "GET", "/", &[basic("rita", READ_TOKEN)], "").await;
    assert_eq!(code, 200, "{page}");
    assert_eq!(pool_number(&page, "default", "redis-ready"), 1, "{page}");
    assert_eq!(pool_number(&page, "default", "redis-scheduled"), 2, "{page}");
    assert_eq!(pool_number(&page, "vip", "redis-ready"), 0);
    assert_eq!(pool_number(&page, "vip", "redis-scheduled"), 0);
}
