//! What a join attempt came back with, in Telegram's terms, and the one function that reads
//! Telegram's error names.

use std::fmt;

/// How a pending join was filed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// INVITE_REQUEST_SENT: the group's admins approve join requests.
    JoinRequest,
    /// `ChatInviteJoinResult::WebView`: a guard bot decides later.
    GuardBot,
}

/// The group as Telegram described it on a successful join.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerInfo {
    pub id: Option<i64>,
    pub title: Option<String>,
}

/// Every answer a join attempt can end in. Built by the Telegram adapter (or a scripted fake);
/// read only by [`crate::domain::decide()`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinOutcome {
    /// Joined now (`already = false`) or was already a participant (`already = true`).
    Joined { already: bool, peer: PeerInfo },
    /// A join request or guard-bot check is pending.
    Requested(RequestKind),
    /// FLOOD_WAIT_X or FLOOD_PREMIUM_WAIT_X.
    FloodWait { seconds: u32 },
    /// SLOWMODE_WAIT_X: the group, not the account, asks us to wait.
    SlowmodeWait { seconds: u32 },
    /// PEER_FLOOD or another account-wide limit without a duration (`code` says which).
    AccountLimited { code: String },
    /// FROZEN_METHOD_INVALID: the account is frozen. A 420 without a number, not a FloodWait.
    Frozen { code: String },
    /// CHANNELS_TOO_MUCH: the account is in too many channels.
    ChannelsTooMuch,
    /// The session no longer works (401s, AUTH_KEY_DUPLICATED, SESSION_PASSWORD_NEEDED).
    Unauthorized { code: String },
    /// The account itself is banned.
    AccountBanned { code: String },
    /// The link is dead or refuses this join for good.
    TargetInvalid { code: String, message: String },
    /// The account is banned in this group.
    TargetBanned { code: String },
    /// The client could not be built or connected: nothing was sent, so the target may move.
    ConnectFailed { reason: String },
    /// Timeout, I/O error, 5xx, RPC_CALL_FAIL: the join may or may not have happened.
    InDoubt { reason: String },
}

impl JoinOutcome {
    /// What kind of answer this is: its name in `join_attempts.outcome`, in logs and as a
    /// metric label.
    pub fn kind(&self) -> OutcomeKind {
        match self {
            JoinOutcome::Joined { already: false, .. } => OutcomeKind::Joined,
            JoinOutcome::Joined { already: true, .. } => OutcomeKind::AlreadyParticipant,
            JoinOutcome::Requested(_) => OutcomeKind::Requested,
            JoinOutcome::FloodWait { .. } => OutcomeKind::FloodWait,
            JoinOutcome::SlowmodeWait { .. } => OutcomeKind::SlowmodeWait,
            JoinOutcome::AccountLimited { .. } => OutcomeKind::AccountLimited,
            JoinOutcome::Frozen { .. } => OutcomeKind::Frozen,
            JoinOutcome::ChannelsTooMuch => OutcomeKind::ChannelsTooMuch,
            JoinOutcome::Unauthorized { .. } => OutcomeKind::Unauthorized,
            JoinOutcome::AccountBanned { .. } => OutcomeKind::AccountBanned,
            JoinOutcome::TargetInvalid { .. } => OutcomeKind::TargetInvalid,
            JoinOutcome::TargetBanned { .. } => OutcomeKind::TargetBanned,
            JoinOutcome::ConnectFailed { .. } => OutcomeKind::ConnectFailed,
            JoinOutcome::InDoubt { .. } => OutcomeKind::InDoubt,
        }
    }

    /// Telegram's error name, when the outcome came from one.
    pub fn error_code(&self) -> Option<&str> {
        match self {
            JoinOutcome::FloodWait { .. } => Some("FLOOD_WAIT"),
            JoinOutcome::SlowmodeWait { .. } => Some("SLOWMODE_WAIT"),
            JoinOutcome::ChannelsTooMuch => Some("CHANNELS_TOO_MUCH"),
            JoinOutcome::Requested(RequestKind::JoinRequest) => Some("INVITE_REQUEST_SENT"),
            JoinOutcome::AccountLimited { code }
            | JoinOutcome::Frozen { code }
            | JoinOutcome::Unauthorized { code }
            | JoinOutcome::AccountBanned { code }
            | JoinOutcome::TargetInvalid { code, .. }
            | JoinOutcome::TargetBanned { code } => Some(code),
            JoinOutcome::ConnectFailed { .. } => Some("CONNECT_FAILED"),
            JoinOutcome::InDoubt { .. } => Some("IN_DOUBT"),
            JoinOutcome::Joined { .. } | JoinOutcome::Requested(RequestKind::GuardBot) => None,
        }
    }
}

impl fmt::Display for JoinOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinOutcome::FloodWait { seconds } => write!(f, "FloodWait {seconds}s"),
            JoinOutcome::SlowmodeWait { seconds } => write!(f, "slow mode wait {seconds}s"),
            JoinOutcome::TargetInvalid { code, message } if message.is_empty() => f.write_str(code),
            JoinOutcome::TargetInvalid { code, message } => write!(f, "{code}: {message}"),
            JoinOutcome::ConnectFailed { reason } => write!(f, "Failed to create client: {reason}"),
            JoinOutcome::InDoubt { reason } => write!(f, "in doubt: {reason}"),
            other => match other.error_code() {
                Some(code) => write!(f, "{} ({code})", other.kind()),
                None => f.write_str(other.kind().as_str()),
            },
        }
    }
}

string_enum! {
    /// The kind of a [`JoinOutcome`], without its details: the value of
    /// `join_attempts.outcome`, the `outcome` field of log lines and the metric label.
    OutcomeKind {
        /// Joined now.
        Joined => "joined",
        /// USER_ALREADY_PARTICIPANT: the account was already in the group.
        AlreadyParticipant => "already_participant",
        /// A join request or a guard-bot check is pending.
        Requested => "requested",
        /// FLOOD_WAIT_X or FLOOD_PREMIUM_WAIT_X.
        FloodWait => "flood_wait",
        /// SLOWMODE_WAIT_X.
        SlowmodeWait => "slowmode_wait",
        /// PEER_FLOOD or another account-wide limit without a duration.
        AccountLimited => "account_limited",
        /// FROZEN_METHOD_INVALID.
        Frozen => "frozen",
        /// CHANNELS_TOO_MUCH.
        ChannelsTooMuch => "channels_too_much",
        /// The session no longer works.
        Unauthorized => "unauthorized",
        /// The account is banned.
        AccountBanned => "account_banned",
        /// The link is dead or refuses this join for good.
        TargetInvalid => "target_invalid",
        /// The account is banned in this group.
        TargetBanned => "target_banned",
        /// Nothing was sent: the client could not be built or connected.
        ConnectFailed => "connect_failed",
        /// The join may or may not have happened.
        InDoubt => "in_doubt",
    }
}

impl OutcomeKind {
    /// Whether an attempt that ended this way is a join: it binds the target to the account,
    /// paces the account with the join pause, and counts towards the account's daily join cap.
    /// The one rule for "what counts": the store's eligibility queries and the invariant
    /// checker both read it.
    ///
    /// `already_participant` is a join. The account did send the join call, and Telegram's
    /// anti-spam sees the call, not our bookkeeping; the decision binds the target and paces
    /// the account exactly as for `joined` (the account is in the group either way); and the
    /// usual way to get this answer is the retry of an in-doubt join that did go through, which
    /// is one real join that must be counted once. Leaving it out would let an account pass
    /// its daily cap in real joins.
    pub fn is_join(self) -> bool {
        matches!(
            self,
            OutcomeKind::Joined | OutcomeKind::AlreadyParticipant | OutcomeKind::Requested
        )
    }

    /// Every kind for which [`is_join`](Self::is_join) holds, in declaration order.
    pub fn joins() -> impl Iterator<Item = OutcomeKind> {
        Self::ALL.iter().copied().filter(|k| k.is_join())
    }
}

/// A FLOOD_WAIT without its number never happens in practice; if it does, wait as long as a
/// PEER_FLOOD would make us wait rather than guess short.
const UNNUMBERED_WAIT_SECONDS: u32 = 24 * 3600;

/// Reads one Telegram RPC error, as grammers splits it (`FLOOD_WAIT_31` arrives as name
/// `FLOOD_WAIT`, value `Some(31)`), into an outcome. The only place that matches on error names.
pub fn classify_rpc_error(code: i32, name: &str, value: Option<u32>) -> JoinOutcome {
    let owned = || name.to_owned();
    match name {
        "FLOOD_WAIT" | "FLOOD_PREMIUM_WAIT" | "FLOOD_TEST_PHONE_WAIT" => {
            JoinOutcome::FloodWait { seconds: value.unwrap_or(UNNUMBERED_WAIT_SECONDS) }
        }
        "SLOWMODE_WAIT" => JoinOutcome::SlowmodeWait { seconds: value.unwrap_or(60) },
        "USER_ALREADY_PARTICIPANT" => {
            JoinOutcome::Joined { already: true, peer: PeerInfo::default() }
        }
        "INVITE_REQUEST_SENT" => JoinOutcome::Requested(RequestKind::JoinRequest),
        "PEER_FLOOD" => JoinOutcome::AccountLimited { code: owned() },
        "FROZEN_METHOD_INVALID" | "FROZEN_PARTICIPANT_MISSING" => {
            JoinOutcome::Frozen { code: owned() }
        }
        "CHANNELS_TOO_MUCH" => JoinOutcome::ChannelsTooMuch,
        "AUTH_KEY_UNREGISTERED"
        | "AUTH_KEY_INVALID"
        | "AUTH_KEY_PERM_EMPTY"
        | "SESSION_REVOKED"
        | "SESSION_EXPIRED"
        | "USER_DEACTIVATED"
        | "AUTH_KEY_DUPLICATED"
        | "SESSION_PASSWORD_NEEDED" => JoinOutcome::Unauthorized { code: owned() },
        "USER_DEACTIVATED_BAN" | "PHONE_NUMBER_BANNED" => {
            JoinOutcome::AccountBanned { code: owned() }
        }
        "USER_BANNED_IN_CHANNEL" | "CHANNEL_BANNED" => JoinOutcome::TargetBanned { code: owned() },
        "RPC_CALL_FAIL" | "RPC_MCGET_FAIL" | "TIMEOUT" | "WORKER_BUSY_TOO_LONG_RETRY" => {
            JoinOutcome::InDoubt { reason: format!("{code} {name}") }
        }
        _ => match code {
            401 => JoinOutcome::Unauthorized { code: owned() },
            // Any other wait with a number is a wait; without one it is an account-wide limit.
            420 => match value {
                Some(seconds) => JoinOutcome::FloodWait { seconds },
                None => JoinOutcome::AccountLimited { code: owned() },
            },
            400 | 403 | 406 => JoinOutcome::TargetInvalid {
                code: with_value(name, value),
                message: target_error_message(name).to_owned(),
            },
            _ => JoinOutcome::InDoubt { reason: format!("{code} {}", with_value(name, value)) },
        },
    }
}

fn with_value(name: &str, value: Option<u32>) -> String {
    match value {
        Some(v) => format!("{name}_{v}"),
        None => name.to_owned(),
    }
}

/// A human sentence for the common dead-link errors (stored in targets.error_message).
fn target_error_message(name: &str) -> &'static str {
    match name {
        "USERNAME_NOT_OCCUPIED" => "no group or channel has this username",
        "USERNAME_INVALID" => "the username is invalid",
        "INVITE_HASH_INVALID" | "INVITE_HASH_EMPTY" => "the invite link is invalid",
        "INVITE_HASH_EXPIRED" => "the invite link has expired",
        "CHANNEL_INVALID" => "the channel is invalid",
        "CHANNEL_PRIVATE" => "the channel is private or the account was banned from it",
        "USERS_TOO_MUCH" => "the group is full",
        "STARS_PAYMENT_REQUIRED" => "joining requires a Telegram Stars payment",
        _ => "Telegram refused the join",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(code: i32, name: &str, value: Option<u32>, expected: JoinOutcome) {
        assert_eq!(classify_rpc_error(code, name, value), expected, "{code} {name} {value:?}");
    }

    fn s(x: &str) -> String {
        x.to_owned()
    }

    #[test]
    fn flood_waits_keep_their_number() {
        check(420, "FLOOD_WAIT", Some(31), JoinOutcome::FloodWait { seconds: 31 });
        check(420, "FLOOD_PREMIUM_WAIT", Some(900), JoinOutcome::FloodWait { seconds: 900 });
        check(420, "SLOWMODE_WAIT", Some(12), JoinOutcome::SlowmodeWait { seconds: 12 });
        check(420, "2FA_CONFIRM_WAIT", Some(3600), JoinOutcome::FloodWait { seconds: 3600 });
    }

    #[test]
    fn frozen_method_invalid_is_not_read_as_a_flood_wait() {
        check(
            420,
            "FROZEN_METHOD_INVALID",
            None,
            JoinOutcome::Frozen { code: s("FROZEN_METHOD_INVALID") },
        );
    }

    #[test]
    fn account_wide_errors_name_the_account_problem() {
        check(400, "PEER_FLOOD", None, JoinOutcome::AccountLimited { code: s("PEER_FLOOD") });
        check(400, "CHANNELS_TOO_MUCH", None, JoinOutcome::ChannelsTooMuch);
        for name in [
            "AUTH_KEY_UNREGISTERED",
            "SESSION_REVOKED",
            "SESSION_EXPIRED",
            "USER_DEACTIVATED",
            "AUTH_KEY_DUPLICATED",
            "SESSION_PASSWORD_NEEDED",
        ] {
            check(401, name, None, JoinOutcome::Unauthorized { code: s(name) });
        }
        check(401, "SOMETHING_NEW", None, JoinOutcome::Unauthorized { code: s("SOMETHING_NEW") });
        for name in ["USER_DEACTIVATED_BAN", "PHONE_NUMBER_BANNED"] {
            check(401, name, None, JoinOutcome::AccountBanned { code: s(name) });
        }
    }

    #[test]
    fn join_answers_that_are_not_errors() {
        check(
            400,
            "USER_ALREADY_PARTICIPANT",
            None,
            JoinOutcome::Joined { already: true, peer: PeerInfo::default() },
        );
        check(400, "INVITE_REQUEST_SENT", None, JoinOutcome::Requested(RequestKind::JoinRequest));
    }

    #[test]
    fn dead_links_are_target_errors_with_a_message() {
        for name in [
            "USERNAME_NOT_OCCUPIED",
            "USERNAME_INVALID",
            "INVITE_HASH_INVALID",
            "INVITE_HASH_EXPIRED",
            "INVITE_HASH_EMPTY",
            "CHANNEL_INVALID",
            "CHANNEL_PRIVATE",
            "USERS_TOO_MUCH",
            "STARS_PAYMENT_REQUIRED",
            "SOME_OTHER_400",
        ] {
            match classify_rpc_error(400, name, None) {
                JoinOutcome::TargetInvalid { code, message } => {
                    assert_eq!(code, name);
                    assert!(!message.is_empty());
                }
                other => panic!("{name}: {other:?}"),
            }
        }
        check(
            400,
            "USER_BANNED_IN_CHANNEL",
            None,
            JoinOutcome::TargetBanned { code: s("USER_BANNED_IN_CHANNEL") },
        );
        check(400, "CHANNEL_BANNED", None, JoinOutcome::TargetBanned { code: s("CHANNEL_BANNED") });
    }

    #[test]
    fn server_trouble_is_in_doubt() {
        for (code, name) in
            [(500, "RPC_CALL_FAIL"), (500, "INTERNAL"), (-503, "TIMEOUT"), (303, "NETWORK_MIGRATE")]
        {
            assert!(
                matches!(classify_rpc_error(code, name, None), JoinOutcome::InDoubt { .. }),
                "{code} {name}"
            );
        }
    }

    #[test]
    fn kinds_are_distinct_labels() {
        let all = [
            JoinOutcome::Joined { already: false, peer: PeerInfo::default() },
            JoinOutcome::Joined { already: true, peer: PeerInfo::default() },
            JoinOutcome::Requested(RequestKind::GuardBot),
            JoinOutcome::FloodWait { seconds: 1 },
            JoinOutcome::SlowmodeWait { seconds: 1 },
            JoinOutcome::AccountLimited { code: s("PEER_FLOOD") },
            JoinOutcome::Frozen { code: s("F") },
            JoinOutcome::ChannelsTooMuch,
            JoinOutcome::Unauthorized { code: s("U") },
            JoinOutcome::AccountBanned { code: s("B") },
            JoinOutcome::TargetInvalid { code: s("T"), message: s("m") },
            JoinOutcome::TargetBanned { code: s("X") },
            JoinOutcome::ConnectFailed { reason: s("r") },
            JoinOutcome::InDoubt { reason: s("r") },
        ];
        let kinds: std::collections::HashSet<_> = all.iter().map(JoinOutcome::kind).collect();
        assert_eq!(kinds.len(), all.len());
        assert_eq!(kinds.len(), OutcomeKind::ALL.len(), "every kind has an outcome");
        for kind in OutcomeKind::ALL {
            assert_eq!(OutcomeKind::parse(kind.as_str()), Some(*kind));
        }
    }

    #[test]
    fn the_answers_that_bind_a_target_are_the_joins_the_daily_cap_counts() {
        use crate::domain::decide::{DecideCtx, Pacing, decide};
        let pacing = Pacing::default();
        let ctx = DecideCtx {
            now: chrono::DateTime::UNIX_EPOCH,
            pacing: &pacing,
            jitter: 0.5,
            previous_in_doubt: 0,
            connect_failures: 0,
        };
        for (outcome, counted) in [
            (JoinOutcome::Joined { already: false, peer: PeerInfo::default() }, true),
            (JoinOutcome::Joined { already: true, peer: PeerInfo::default() }, true),
            (JoinOutcome::Requested(RequestKind::JoinRequest), true),
            (JoinOutcome::FloodWait { seconds: 30 }, false),
            (JoinOutcome::TargetInvalid { code: s("T"), message: s("m") }, false),
            (JoinOutcome::InDoubt { reason: s("r") }, false),
        ] {
            assert_eq!(outcome.kind().is_join(), counted, "{outcome}");
            assert_eq!(decide(&outcome, &ctx).binds(), counted, "{outcome}");
        }
        let joins: Vec<_> = OutcomeKind::joins().map(OutcomeKind::as_str).collect();
        assert_eq!(joins, ["joined", "already_participant", "requested"]);
    }
}
