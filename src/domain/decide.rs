//! The join policy: one pure function from a Telegram answer to what happens next.
//!
//! No clock, no RNG, no I/O: the caller passes `now` and a `jitter` in [0, 1]. Every row of the
//! decision table of docs/design.md is one arm of [`decide`] (the last, active hours, is
//! [`within_hours`]), and the tests below walk the table.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::outcome::JoinOutcome;
use super::status::{AccountStatus, TargetStatus};

/// Pacing knobs, with SmartJoiner's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pacing {
    /// Shortest pause of an account after a join (SmartJoiner: 5 min).
    pub join_pause_min: Duration,
    /// Longest pause of an account after a join (SmartJoiner: 10 min).
    pub join_pause_max: Duration,
    /// Pause of an account after an error (SmartJoiner: 60 s).
    pub error_pause: Duration,
    /// FloodWaits up to this rest the account; longer ones cool it down and move the target
    /// to another account (SmartJoiner: 600 s).
    pub flood_wait_threshold: Duration,
    /// How long a joined group warms up before it may be posted in (SmartJoiner: 24 h).
    pub warmup: Duration,
    /// Cooldown after PEER_FLOOD, which carries no duration (24 h).
    pub peer_flood_cooldown: Duration,
    /// In-doubt answers tolerated for one target before it is given up as an error.
    pub in_doubt_max_tries: u32,
}

impl Default for Pacing {
    fn default() -> Self {
        Self {
            join_pause_min: Duration::from_secs(5 * 60),
            join_pause_max: Duration::from_secs(10 * 60),
            error_pause: Duration::from_secs(60),
            flood_wait_threshold: Duration::from_secs(600),
            warmup: Duration::from_secs(24 * 3600),
            peer_flood_cooldown: Duration::from_secs(24 * 3600),
            in_doubt_max_tries: 3,
        }
    }
}

impl Pacing {
    /// The pause after a join, `jitter` in [0, 1] picking a point between min and max.
    pub fn join_pause(&self, jitter: f64) -> Duration {
        let span = self.join_pause_max.saturating_sub(self.join_pause_min);
        self.join_pause_min + span.mul_f64(jitter.clamp(0.0, 1.0))
    }
}

/// What [`decide`] needs besides the answer.
#[derive(Debug, Clone, Copy)]
pub struct DecideCtx<'a> {
    pub pacing: &'a Pacing,
    pub now: DateTime<Utc>,
    /// Uniform in [0, 1]; picks the pause after a join.
    pub jitter: f64,
    /// In-doubt answers this target already had under its current claim. Non-zero means this
    /// attempt is an in-doubt retry, pinned to the claimed account.
    pub previous_in_doubt: u32,
    /// The exponent of the wait after a failed connect on a pinned retry: the target's attempts
    /// that were not in doubt (connect failures since the pin, and any answer before it), an
    /// approximation that only ever grows while the account stays unreachable.
    pub connect_failures: u32,
}

/// The whole effect of one answer, applied in one fenced transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub target: TargetChange,
    pub account: AccountChange,
    pub next: Next,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TargetChange {
    /// Bind to the account; warm up until `warmup_ends_at`.
    Joined { joined_at: DateTime<Utc>, warmup_ends_at: DateTime<Utc> },
    /// Bind to the account; pending approval.
    Requested,
    /// Back to `queued`, claim cleared, due at `run_at`.
    Requeue { run_at: DateTime<Utc> },
    /// Terminal: `error` or `banned`, with Telegram's code and a message.
    Fail { status: TargetStatus, code: String, message: String },
    /// In doubt: stays `joining` with its claim, retried by the same account at `run_at`.
    KeepClaim { run_at: DateTime<Utc> },
    /// An in-doubt retry whose account could not even connect: nothing was sent, so the try
    /// does not count; stays `joining`, pinned, and waits for its account until `run_at`.
    AwaitAccount { run_at: DateTime<Utc> },
}

#[derive(Debug, Clone, PartialEq)]
pub enum AccountChange {
    /// Stays active; acts again not before `until`.
    Pace { until: DateTime<Utc> },
    /// A wait Telegram imposed (`flood_wait` or `cooldown`), ending at `until`.
    Wait { status: AccountStatus, until: DateTime<Utc>, reason: String },
    /// Out of service until an operator acts (`banned`, `unauthorized`, `frozen`, `full`).
    Disable { status: AccountStatus, reason: String },
    /// Slow mode limits the group, not the account.
    Unchanged,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Nothing more to do for this target.
    Done,
    /// Push a follow-up job due at `run_at`, for any eligible account, this one excluded if
    /// `exclude_account`.
    Reschedule { run_at: DateTime<Utc>, exclude_account: bool },
    /// Push a follow-up job due at `run_at` that only the claimed account may run.
    RetrySameAccount { run_at: DateTime<Utc> },
}

impl Decision {
    /// Whether the target ends bound to the account.
    pub fn binds(&self) -> bool {
        matches!(self.target, TargetChange::Joined { .. } | TargetChange::Requested)
    }
}

fn plus(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// The decision table (docs/design.md, "Decisions"), as code.
pub fn decide(outcome: &JoinOutcome, ctx: &DecideCtx<'_>) -> Decision {
    let p = ctx.pacing;
    let now = ctx.now;
    let pinned = ctx.previous_in_doubt > 0;
    let error_pace = AccountChange::Pace { until: plus(now, p.error_pause) };
    let requeue_elsewhere = |account: AccountChange| Decision {
        target: TargetChange::Requeue { run_at: now },
        account,
        next: Next::Reschedule { run_at: now, exclude_account: true },
    };
    let fail = |status, code: &str, message: String| Decision {
        target: TargetChange::Fail { status, code: code.to_owned(), message },
        account: AccountChange::Pace { until: plus(now, p.error_pause) },
        next: Next::Done,
    };
    let in_doubt = |reason: &str| {
        let tries = ctx.previous_in_doubt + 1;
        if tries >= p.in_doubt_max_tries {
            return fail(
                TargetStatus::Error,
                "IN_DOUBT",
                format!("no clear answer after {tries} tries: {reason}"),
            );
        }
        // The join may have happened: rest the account as after a join, not just an error,
        // so successive joins stay at least the minimum pause apart (invariant 5).
        let run_at = plus(now, p.join_pause(ctx.jitter).max(p.error_pause));
        Decision {
            target: TargetChange::KeepClaim { run_at },
            account: AccountChange::Pace { until: run_at },
            next: Next::RetrySameAccount { run_at },
        }
    };

    match outcome {
        JoinOutcome::Joined { .. } => Decision {
            target: TargetChange::Joined { joined_at: now, warmup_ends_at: plus(now, p.warmup) },
            account: AccountChange::Pace { until: plus(now, p.join_pause(ctx.jitter)) },
            next: Next::Done,
        },
        JoinOutcome::Requested(_) => Decision {
            target: TargetChange::Requested,
            account: AccountChange::Pace { until: plus(now, p.join_pause(ctx.jitter)) },
            next: Next::Done,
        },
        JoinOutcome::FloodWait { seconds } => {
            let wait = Duration::from_secs(u64::from(*seconds));
            let until = plus(now, wait);
            let reason = format!("FLOOD_WAIT_{seconds}");
            if wait <= p.flood_wait_threshold {
                let account =
                    AccountChange::Wait { status: AccountStatus::FloodWait, until, reason };
                if pinned {
                    // An in-doubt join stays with its account: wait for it.
                    return Decision {
                        target: TargetChange::KeepClaim { run_at: until },
                        account,
                        next: Next::RetrySameAccount { run_at: until },
                    };
                }
                Decision {
                    target: TargetChange::Requeue { run_at: now },
                    account,
                    next: Next::Reschedule { run_at: now, exclude_account: false },
                }
            } else {
                requeue_elsewhere(AccountChange::Wait {
                    status: AccountStatus::Cooldown,
                    until,
                    reason,
                })
            }
        }
        JoinOutcome::SlowmodeWait { seconds } => {
            let run_at = plus(now, Duration::from_secs(u64::from(*seconds)));
            if pinned {
                return Decision {
                    target: TargetChange::KeepClaim { run_at },
                    account: AccountChange::Unchanged,
                    next: Next::RetrySameAccount { run_at },
                };
            }
            Decision {
                target: TargetChange::Requeue { run_at },
                account: AccountChange::Unchanged,
                next: Next::Reschedule { run_at, exclude_account: false },
            }
        }
        JoinOutcome::AccountLimited { code } => requeue_elsewhere(AccountChange::Wait {
            status: AccountStatus::Cooldown,
            until: plus(now, p.peer_flood_cooldown),
            reason: code.clone(),
        }),
        JoinOutcome::Frozen { code } => requeue_elsewhere(AccountChange::Disable {
            status: AccountStatus::Frozen,
            reason: code.clone(),
        }),
        JoinOutcome::ChannelsTooMuch => requeue_elsewhere(AccountChange::Disable {
            status: AccountStatus::Full,
            reason: "CHANNELS_TOO_MUCH".to_owned(),
        }),
        JoinOutcome::Unauthorized { code } => requeue_elsewhere(AccountChange::Disable {
            status: AccountStatus::Unauthorized,
            reason: code.clone(),
        }),
        JoinOutcome::AccountBanned { code } => requeue_elsewhere(AccountChange::Disable {
            status: AccountStatus::Banned,
            reason: code.clone(),
        }),
        JoinOutcome::TargetInvalid { code, message } => {
            fail(TargetStatus::Error, code, message.clone())
        }
        JoinOutcome::TargetBanned { code } => {
            fail(TargetStatus::Banned, code, "the account is banned in this group".to_owned())
        }
        // Nothing reached Telegram: a fresh target may move on; a pinned one must not, and the
        // failure counts towards its in-doubt limit so a dead account cannot hold it forever.
        // Nothing reached Telegram: the pin and the budget of in-doubt tries stay, and the
        // target waits for its account, longer after each failure (an outage, a dead proxy).
        JoinOutcome::ConnectFailed { .. } if pinned => {
            let backoff = p.error_pause.saturating_mul(1 << ctx.connect_failures.min(4));
            let run_at = plus(now, backoff);
            Decision {
                target: TargetChange::AwaitAccount { run_at },
                account: error_pace,
                next: Next::RetrySameAccount { run_at },
            }
        }
        JoinOutcome::ConnectFailed { .. } => requeue_elsewhere(error_pace),
        JoinOutcome::InDoubt { reason } => in_doubt(reason),
    }
}

/// The decision for an account with active hours (the table's last row): its rest, a wait
/// Telegram imposed, and a retry pinned to it end no earlier than its next opening
/// (`next_open(t)`: `t` inside a window, else the next opening), so it never acts outside its
/// windows. A target free for any account is not held back by this account's hours.
pub fn within_hours(
    mut decision: Decision,
    next_open: impl Fn(DateTime<Utc>) -> DateTime<Utc>,
) -> Decision {
    match &mut decision.account {
        AccountChange::Pace { until } | AccountChange::Wait { until, .. } => {
            *until = next_open(*until)
        }
        AccountChange::Disable { .. } | AccountChange::Unchanged => {}
    }
    match &mut decision.target {
        TargetChange::KeepClaim { run_at } | TargetChange::AwaitAccount { run_at } => {
            *run_at = next_open(*run_at)
        }
        _ => {}
    }
    if let Next::RetrySameAccount { run_at } = &mut decision.next {
        *run_at = next_open(*run_at);
    }
    decision
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::outcome::{PeerInfo, RequestKind};
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 12, 10, 0, 1).unwrap()
    }

    fn at(secs: i64) -> DateTime<Utc> {
        now() + chrono::Duration::seconds(secs)
    }

    fn decide_with(outcome: JoinOutcome, previous_in_doubt: u32) -> Decision {
        let pacing = Pacing::default();
        let ctx = DecideCtx {
            pacing: &pacing,
            now: now(),
            jitter: 0.5,
            previous_in_doubt,
            connect_failures: 0,
        };
        decide(&outcome, &ctx)
    }

    #[track_caller]
    fn check(outcome: JoinOutcome, target: TargetChange, account: AccountChange, next: Next) {
        let got = decide_with(outcome.clone(), 0);
        assert_eq!(got, Decision { target, account, next }, "outcome {outcome:?}");
    }

    fn s(x: &str) -> String {
        x.to_owned()
    }

    fn requeue_now() -> TargetChange {
        TargetChange::Requeue { run_at: now() }
    }

    fn elsewhere() -> Next {
        Next::Reschedule { run_at: now(), exclude_account: true }
    }

    fn error_pace() -> AccountChange {
        AccountChange::Pace { until: at(60) }
    }

    #[test]
    fn a_join_binds_the_target_warms_it_up_and_paces_the_account() {
        let joined = TargetChange::Joined { joined_at: now(), warmup_ends_at: at(24 * 3600) };
        // jitter 0.5 between 5 and 10 minutes: 7.5 minutes.
        let pace = AccountChange::Pace { until: at(450) };
        check(
            JoinOutcome::Joined { already: false, peer: PeerInfo::default() },
            joined.clone(),
            pace.clone(),
            Next::Done,
        );
        check(
            JoinOutcome::Joined { already: true, peer: PeerInfo::default() },
            joined,
            pace,
            Next::Done,
        );
    }

    #[test]
    fn a_join_request_or_guard_bot_binds_the_target_as_requested() {
        for kind in [RequestKind::JoinRequest, RequestKind::GuardBot] {
            check(
                JoinOutcome::Requested(kind),
                TargetChange::Requested,
                AccountChange::Pace { until: at(450) },
                Next::Done,
            );
        }
    }

    #[test]
    fn the_join_pause_spans_five_to_ten_minutes_uniformly_in_jitter() {
        let p = Pacing::default();
        assert_eq!(p.join_pause(0.0), Duration::from_secs(300));
        assert_eq!(p.join_pause(1.0), Duration::from_secs(600));
        assert_eq!(p.join_pause(7.0), Duration::from_secs(600), "jitter is clamped");
    }

    #[test]
    fn short_flood_wait_rests_the_account_and_requeues_for_any_account() {
        for seconds in [1, 31, 600] {
            check(
                JoinOutcome::FloodWait { seconds },
                requeue_now(),
                AccountChange::Wait {
                    status: AccountStatus::FloodWait,
                    until: at(seconds.into()),
                    reason: format!("FLOOD_WAIT_{seconds}"),
                },
                Next::Reschedule { run_at: now(), exclude_account: false },
            );
        }
    }

    #[test]
    fn long_flood_wait_cools_the_account_down_and_excludes_it() {
        for seconds in [601, 86_400] {
            check(
                JoinOutcome::FloodWait { seconds },
                requeue_now(),
                AccountChange::Wait {
                    status: AccountStatus::Cooldown,
                    until: at(seconds.into()),
                    reason: format!("FLOOD_WAIT_{seconds}"),
                },
                elsewhere(),
            );
        }
    }

    #[test]
    fn slow_mode_delays_the_target_and_leaves_the_account_alone() {
        check(
            JoinOutcome::SlowmodeWait { seconds: 42 },
            TargetChange::Requeue { run_at: at(42) },
            AccountChange::Unchanged,
            Next::Reschedule { run_at: at(42), exclude_account: false },
        );
    }

    #[test]
    fn peer_flood_cools_the_account_down_for_a_day_and_excludes_it() {
        check(
            JoinOutcome::AccountLimited { code: s("PEER_FLOOD") },
            requeue_now(),
            AccountChange::Wait {
                status: AccountStatus::Cooldown,
                until: at(86_400),
                reason: s("PEER_FLOOD"),
            },
            elsewhere(),
        );
    }

    #[test]
    fn account_problems_disable_the_account_and_move_the_target() {
        let cases = [
            (
                JoinOutcome::Frozen { code: s("FROZEN_METHOD_INVALID") },
                AccountStatus::Frozen,
                "FROZEN_METHOD_INVALID",
            ),
            (JoinOutcome::ChannelsTooMuch, AccountStatus::Full, "CHANNELS_TOO_MUCH"),
            (
                JoinOutcome::Unauthorized { code: s("SESSION_REVOKED") },
                AccountStatus::Unauthorized,
                "SESSION_REVOKED",
            ),
            (
                JoinOutcome::AccountBanned { code: s("USER_DEACTIVATED_BAN") },
                AccountStatus::Banned,
                "USER_DEACTIVATED_BAN",
            ),
        ];
        for (outcome, status, reason) in cases {
            check(
                outcome,
                requeue_now(),
                AccountChange::Disable { status, reason: s(reason) },
                elsewhere(),
            );
        }
    }

    #[test]
    fn dead_links_end_as_errors_and_pace_the_account_a_minute() {
        check(
            JoinOutcome::TargetInvalid {
                code: s("INVITE_HASH_EXPIRED"),
                message: s("the invite link has expired"),
            },
            TargetChange::Fail {
                status: TargetStatus::Error,
                code: s("INVITE_HASH_EXPIRED"),
                message: s("the invite link has expired"),
            },
            error_pace(),
            Next::Done,
        );
    }

    #[test]
    fn a_ban_in_the_group_ends_the_target_as_banned() {
        check(
            JoinOutcome::TargetBanned { code: s("USER_BANNED_IN_CHANNEL") },
            TargetChange::Fail {
                status: TargetStatus::Banned,
                code: s("USER_BANNED_IN_CHANNEL"),
                message: s("the account is banned in this group"),
            },
            error_pace(),
            Next::Done,
        );
    }

    #[test]
    fn a_failed_connection_moves_a_fresh_target_to_another_account() {
        check(
            JoinOutcome::ConnectFailed { reason: s("proxy refused") },
            requeue_now(),
            error_pace(),
            elsewhere(),
        );
    }

    #[test]
    fn in_doubt_keeps_the_claim_and_rests_the_account_as_after_a_join() {
        let got = decide_with(JoinOutcome::InDoubt { reason: s("timeout") }, 0);
        assert_eq!(
            got,
            Decision {
                target: TargetChange::KeepClaim { run_at: at(450) },
                account: AccountChange::Pace { until: at(450) },
                next: Next::RetrySameAccount { run_at: at(450) },
            }
        );
        assert!(!got.binds());
    }

    #[test]
    fn in_doubt_gives_up_as_an_error_after_the_last_try() {
        let got = decide_with(JoinOutcome::InDoubt { reason: s("timeout") }, 2);
        assert_eq!(got.next, Next::Done);
        match got.target {
            TargetChange::Fail { status: TargetStatus::Error, code, message } => {
                assert_eq!(code, "IN_DOUBT");
                assert!(message.contains("3 tries"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_pinned_retry_stays_with_its_account_through_short_waits_and_connect_failures() {
        let short = decide_with(JoinOutcome::FloodWait { seconds: 30 }, 1);
        assert_eq!(short.target, TargetChange::KeepClaim { run_at: at(30) });
        assert_eq!(short.next, Next::RetrySameAccount { run_at: at(30) });

        let slow = decide_with(JoinOutcome::SlowmodeWait { seconds: 5 }, 1);
        assert_eq!(slow.next, Next::RetrySameAccount { run_at: at(5) });

        // A connect that failed sent nothing: no try is counted, even at the last one.
        let last = decide_with(JoinOutcome::ConnectFailed { reason: s("refused") }, 2);
        assert_eq!(last.target, TargetChange::AwaitAccount { run_at: at(60) });
        assert_eq!(last.next, Next::RetrySameAccount { run_at: at(60) });

        // A long wait releases the pin: the account is out for long.
        let long = decide_with(JoinOutcome::FloodWait { seconds: 601 }, 1);
        assert_eq!(long.next, elsewhere());
    }

    #[test]
    fn a_pinned_account_that_cannot_connect_is_waited_for_longer_each_time() {
        let pacing = Pacing::default();
        let wait = |failures| {
            let ctx = DecideCtx {
                pacing: &pacing,
                now: now(),
                jitter: 0.5,
                previous_in_doubt: 1,
                connect_failures: failures,
            };
            match decide(&JoinOutcome::ConnectFailed { reason: s("refused") }, &ctx).target {
                TargetChange::AwaitAccount { run_at } => (run_at - now()).num_seconds(),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!([wait(0), wait(1), wait(2), wait(4), wait(9)], [60, 120, 240, 960, 960]);
    }

    #[test]
    fn outside_its_hours_an_account_rests_until_its_window_opens_and_its_pins_wait_for_it() {
        // Open 10:00-10:05 every day (now is 10:00:01): anything due after 10:05 moves to
        // 10:00 the next day.
        let hours = crate::domain::ActiveHours::parse("UTC 10:00-10:05").unwrap();
        let next = |t| hours.next_open(1, t);
        let tomorrow = Utc.with_ymd_and_hms(2026, 1, 13, 10, 0, 0).unwrap();
        let joined =
            decide_with(JoinOutcome::Joined { already: false, peer: PeerInfo::default() }, 0);
        let got = within_hours(joined.clone(), next);
        assert_eq!(got.account, AccountChange::Pace { until: tomorrow });
        assert_eq!((got.target, got.next), (joined.target, joined.next));

        // A short FloodWait inside the window stays as Telegram said; the target moves on.
        let flood = within_hours(decide_with(JoinOutcome::FloodWait { seconds: 30 }, 0), next);
        assert!(matches!(flood.account, AccountChange::Wait { until, .. } if until == at(30)));
        assert_eq!(flood.next, Next::Reschedule { run_at: now(), exclude_account: false });

        // An in-doubt retry is pinned to the account: it waits for the window too.
        let doubt = within_hours(decide_with(JoinOutcome::InDoubt { reason: s("t") }, 0), next);
        assert_eq!(doubt.target, TargetChange::KeepClaim { run_at: tomorrow });
        assert_eq!(doubt.next, Next::RetrySameAccount { run_at: tomorrow });

        // A target given up or moved elsewhere is untouched.
        let ban = decide_with(JoinOutcome::AccountBanned { code: s("USER_DEACTIVATED_BAN") }, 0);
        assert_eq!(within_hours(ban.clone(), next), ban);
    }

    #[test]
    fn a_pinned_retry_that_joins_binds_as_usual() {
        let got = decide_with(JoinOutcome::Joined { already: true, peer: PeerInfo::default() }, 2);
        assert!(got.binds());
    }
}
