//! The streaming import of targets: pieces inserted in one transaction (all or nothing),
//! duplicates told apart (already stored / repeated in the input) across pieces, an audit row,
//! and `targets import` on the command line naming a bad line by its number, refusing the
//! file, and adding nothing when the same file is imported again.

use sea_orm::ConnectionTrait;
use smart_joiner::domain::TargetLink;
use smart_joiner::store::Store;

use crate::on_both_backends;

on_both_backends!(
    a_streaming_import_counts_duplicates_across_pieces_and_commits_once,
    a_streaming_import_dropped_before_its_commit_stores_nothing,
);

fn links(names: &[&str]) -> Vec<TargetLink> {
    names.iter().map(|n| TargetLink::parse(n).unwrap()).collect()
}

async fn stored_links(store: &Store) -> Vec<String> {
    store.targets(None, None).await.unwrap().into_iter().map(|t| t.link.to_string()).collect()
}

async fn a_streaming_import_counts_duplicates_across_pieces_and_commits_once(store: Store) {
    store.import_targets(&links(&["@stored_one"]), "old").await.unwrap();
    let mut import = store.begin_import("cars").await.unwrap();
    import.add(&links(&["@cars_alpha", "@cars_bravo", "@cars_alpha"])).await.unwrap();
    // Each piece is one transaction's worth of statements; the second repeats a link of the
    // first and has the stored one twice.
    import
        .add(&links(&["@cars_bravo", "@cars_delta", "@stored_one", "@stored_one"]))
        .await
        .unwrap();
    import.add(&links(&["@stored_one", "@cars_delta", "@cars_echo"])).await.unwrap();
    let report = import.commit("cli:tester").await.unwrap();
    assert_eq!(report.inserted, 4, "{report:?}");
    assert_eq!(report.already_stored(), 1, "{report:?}");
    assert_eq!(report.repeated, 5, "{report:?}");
    assert_eq!(report.duplicates, 6, "{report:?}");
    // In the order of the input, after the stored one.
    assert_eq!(
        stored_links(&store).await,
        ["@stored_one", "@cars_alpha", "@cars_bravo", "@cars_delta", "@cars_echo"]
    );
    let audit = store.audit_log(Some("niche:cars"), 10).await.unwrap();
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0].actor, "cli:tester");
    assert_eq!(audit[0].action, "import");
    assert_eq!(audit[0].detail.as_deref(), Some("4 accepted, 6 duplicates"));

    // Again: everything is already stored, each link counted once as such.
    let mut again = store.begin_import("cars").await.unwrap();
    again.add(&links(&["@cars_alpha", "@cars_echo"])).await.unwrap();
    again.add(&links(&["@cars_alpha", "@cars_new"])).await.unwrap();
    let report = again.commit("cli:tester").await.unwrap();
    assert_eq!((report.inserted, report.already_stored(), report.repeated), (1, 2, 1));
}

async fn a_streaming_import_dropped_before_its_commit_stores_nothing(store: Store) {
    let mut import = store.begin_import("cars").await.unwrap();
    import.add(&links(&["@cars_alpha", "@stored_one"])).await.unwrap();
    assert_eq!(import.report().inserted, 2);
    drop(import);
    assert!(stored_links(&store).await.is_empty());
    // The temporary table of the dropped import left nothing behind on the connection.
    store.import_targets(&links(&["@stored_one"]), "old").await.unwrap();
    let mut import = store.begin_import("cars").await.unwrap();
    import.add(&links(&["@stored_one", "@cars_alpha"])).await.unwrap();
    import.add(&links(&["@stored_one"])).await.unwrap();
    let report = import.commit("cli:tester").await.unwrap();
    assert_eq!((report.inserted, report.already_stored(), report.repeated), (1, 1, 1));
    let rows = store
        .connection()
        .query_all_raw(sea_orm::Statement::from_string(
            store.connection().get_database_backend(),
            "SELECT action FROM audit_log",
        ))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "only the committed import is audited");
}

/// Runs the binary against the database of `url`, in `dir`.
fn cli(dir: &std::path::Path, url: &str, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_smart-joiner"))
        .args(args)
        .current_dir(dir)
        .env("DATABASE_URL", url)
        .env("ACCOUNTS_CONFIG", dir.join("accounts_config.json"))
        .env_remove("POSTGRES_HOST")
        .output()
        .expect("run smart-joiner");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn the_command_line_import(store: Store, url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| cli(dir.path(), url, args);
    std::fs::write(
        dir.path().join("groups.csv"),
        "link,title\n@cars_alpha,A\n@cars_bravo,B\nhttps://example.com/x,bad\n@cars_alpha,again\n\n\
         t.me/login/83920\n@cars_charlie,C\n",
    )
    .unwrap();

    let (ok, stdout, stderr) = run(&["targets", "import", "groups.csv", "--niche", "cars"]);
    assert!(!ok, "{stdout}{stderr}");
    assert!(stderr.contains("groups.csv:4: rejected \"https://example.com/x\""), "{stderr}");
    assert!(stderr.contains("groups.csv:7: rejected (line not shown)"), "{stderr}");
    assert!(!stderr.contains("83920"), "a login code was echoed: {stderr}");
    assert!(stderr.contains("2 invalid line(s)") && stderr.contains("nothing imported"));
    assert!(stored_links(&store).await.is_empty());

    let args = ["targets", "import", "groups.csv", "--niche", "cars", "--skip-invalid", "--json"];
    let (ok, stdout, stderr) = run(&args);
    assert!(ok, "{stdout}{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["accepted"], 3, "{report}");
    assert_eq!(report["duplicates_in_database"], 0, "{report}");
    assert_eq!(report["duplicates_in_file"], 1, "{report}");
    let lines: Vec<u64> = report["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [4, 7]);
    assert_eq!(stored_links(&store).await, ["@cars_alpha", "@cars_bravo", "@cars_charlie"]);

    // The same file again adds nothing and changes nothing.
    let (ok, stdout, stderr) = run(&args);
    assert!(ok, "{stdout}{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (&report["accepted"], &report["duplicates_in_database"], &report["duplicates_in_file"]),
        (&serde_json::json!(0), &serde_json::json!(3), &serde_json::json!(1)),
        "{report}"
    );
    assert_eq!(stored_links(&store).await.len(), 3);
    let audit = store.audit_log(Some("niche:cars"), 10).await.unwrap();
    assert_eq!(audit.len(), 2, "{audit:?}");
    assert!(audit.iter().all(|a| a.actor.starts_with("cli:")), "{audit:?}");

    // A line that is not UTF-8 text is named, and nothing of the file is stored.
    std::fs::write(dir.path().join("binary.txt"), b"@cars_golf\n@cars_\xff\n").unwrap();
    let (ok, _, stderr) = run(&["targets", "import", "binary.txt", "--niche", "cars"]);
    assert!(!ok);
    assert!(stderr.contains("cannot read binary.txt: line 2 is not UTF-8 text"), "{stderr}");
    assert_eq!(stored_links(&store).await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_the_command_line_a_bad_line_is_named_and_a_second_import_adds_nothing_pg() {
    let (store, url) = crate::support::pg_database().await;
    the_command_line_import(store, &url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_the_command_line_a_bad_line_is_named_and_a_second_import_adds_nothing_sqlite() {
    let (store, dir) = crate::support::sqlite_store().await;
    let url = format!("sqlite://{}", dir.path().join("smart_joiner.db").display());
    the_command_line_import(store, &url).await;
}
