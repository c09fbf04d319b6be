//! The README's first command, as a test: the demo runs the real join path against tgsim.

use smart_joiner::domain::TargetStatus;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_demo_settles_every_group_through_the_real_client_with_no_violations() {
    let mut lines = Vec::new();
    let report = smart_joiner::modes::demo::run(&mut |l: &str| lines.push(l.to_owned()))
        .await
        .expect("demo runs");
    assert_eq!(report.unsettled(), 0, "{}", report.render());
    assert!(report.violations.is_empty(), "{}", report.render());
    assert!(
        report.elapsed.as_secs() < 60,
        "the demo must stay well under a minute: {:?}",
        report.elapsed
    );

    let status = |link: &str| {
        report
            .targets
            .iter()
            .find(|t| t.0 == link)
            .unwrap_or_else(|| panic!("{link} missing"))
            .clone()
    };
    // Both sides of the FloodWait threshold end joined; the long one by another account.
    assert_eq!(status("@cars_flooded").1, TargetStatus::Joined);
    assert_eq!(status("@cars_very_busy").1, TargetStatus::Joined);
    assert_eq!(status("t.me/+CarsClubApproval1").1, TargetStatus::Requested);
    assert_eq!(status("@cars_guarded").1, TargetStatus::Requested);
    let dead = status("t.me/+DeadInviteLink42");
    assert_eq!((dead.1, dead.3.as_deref()), (TargetStatus::Error, Some("INVITE_HASH_INVALID")));
    let private = status("@cars_private");
    assert_eq!((private.1, private.3.as_deref()), (TargetStatus::Error, Some("CHANNEL_PRIVATE")));

    let account = |name: &str| report.accounts.iter().find(|a| a.0 == name).unwrap().clone();
    assert_eq!(account("taras").1, "banned");
    let cooled: Vec<_> = report.accounts.iter().filter(|a| a.1 == "cooldown").collect();
    assert_eq!(
        cooled.len(),
        1,
        "the 900 s FloodWait cools one account down: {:?}",
        report.accounts
    );
    // The folder link's public chats were joined; the chat without a username was listed.
    assert_eq!(status("@cars_uzhhorod").1, TargetStatus::Joined);
    assert_eq!(status("@cars_lutsk").1, TargetStatus::Joined);
    assert!(report.folder.contains("Lutsk garage (private)"), "{}", report.folder);
    // The account outside its active hours joined nothing (tgsim would report it: none above).
    assert_eq!(account(smart_joiner::modes::demo::RESTING).3, 0, "{:?}", report.accounts);
    let rendered = report.render();
    assert!(
        rendered.contains("smart-joiner run ukraine_cars 5"),
        "says how to go on with real accounts"
    );
}
