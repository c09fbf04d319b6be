//! What Telegram says about an account itself when it connects: its Premium flag (on its own
//! user) and, from help.getAppConfig, its channel limit and whether it is frozen.
//!
//! Pure: the Telegram adapter turns the app config's JSON into a `serde_json::Value` and
//! [`AccountProfile::read`] picks the fields; the channel limit the pick enforces is
//! [`effective_channel_limit`].

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::status::AccountStatus;

/// Telegram's channel limit of a free account (`channels_limit_default`): assumed for an
/// account whose own limit was never read.
pub const FREE_CHANNEL_LIMIT: u32 = 500;

/// A freeze, as help.getAppConfig reports it (`freeze_since_date`, `freeze_until_date`,
/// `freeze_appeal_url`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Freeze {
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub appeal_url: Option<String>,
}

/// The account as Telegram sees it, read on connect.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AccountProfile {
    /// The `premium` flag of the account's own user.
    pub premium: bool,
    /// `channels_limit_premium` for a Premium account, else `channels_limit_default`; None when
    /// the app config carries neither.
    pub channel_limit: Option<u32>,
    /// Set when the app config carries any freeze field.
    pub freeze: Option<Freeze>,
}

impl AccountProfile {
    /// Reads the profile from the account's Premium flag and its app config (a JSON object;
    /// anything else, or missing fields, reads as "not said").
    pub fn read(premium: bool, app_config: &Value) -> Self {
        let count = |key: &str| {
            app_config
                .get(key)
                .and_then(Value::as_f64)
                .filter(|n| n.is_finite() && *n >= 1.0 && *n <= f64::from(u32::MAX))
                .map(|n| n as u32)
        };
        let channel_limit = if premium {
            count("channels_limit_premium").or_else(|| count("channels_limit_default"))
        } else {
            count("channels_limit_default")
        };
        let date = |key: &str| {
            app_config
                .get(key)
                .and_then(Value::as_f64)
                .filter(|n| n.is_finite())
                .and_then(|n| DateTime::from_timestamp(n as i64, 0))
        };
        let since = date("freeze_since_date");
        let until = date("freeze_until_date");
        let appeal_url = app_config
            .get("freeze_appeal_url")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        let freeze = (since.is_some() || until.is_some() || appeal_url.is_some())
            .then_some(Freeze { since, until, appeal_url });
        Self { premium, channel_limit, freeze }
    }
}

/// The channel limit the pick enforces for one account: what Telegram gave it (the free
/// default until read), never above the operator's `CHANNEL_LIMIT`.
pub fn effective_channel_limit(account: Option<u32>, operator: u32) -> u32 {
    account.unwrap_or(FREE_CHANNEL_LIMIT).min(operator)
}

impl Freeze {
    /// Whether the freeze still runs at `now` (one without an end date runs).
    pub fn runs_at(&self, now: DateTime<Utc>) -> bool {
        self.until.is_none_or(|until| until > now)
    }
}

/// What `accounts check` found about one account it connected (or tried to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckFinding {
    /// Connected and authorised; the profile when it could be read.
    Authorised(Option<AccountProfile>),
    /// Telegram says the session is not authorised (its code).
    Unauthorized(String),
    /// Telegram says the account is banned (its code).
    Banned(String),
    /// Not reachable (proxy, network, timeout): says nothing about the account.
    Unreachable,
}

/// The status a check writes back, with its reason, or None to leave it.
///
/// Telegram's verdicts worsen the status as a join's would, never replacing a worse one. A
/// session found authorised and not frozen lifts `unauthorized` and `frozen`, the two
/// verdicts a check sees gone by itself; a pause, `full`, a ban and the waits stay.
pub fn status_after_check(
    current: AccountStatus,
    finding: &CheckFinding,
    now: DateTime<Utc>,
) -> Option<(AccountStatus, Option<String>)> {
    let worsen = |status: AccountStatus, reason: String| {
        (status.severity() > current.severity()).then_some((status, Some(reason)))
    };
    match finding {
        CheckFinding::Unauthorized(code) => worsen(AccountStatus::Unauthorized, code.clone()),
        CheckFinding::Banned(code) => worsen(AccountStatus::Banned, code.clone()),
        CheckFinding::Unreachable => None,
        CheckFinding::Authorised(profile) => {
            let freeze = profile.as_ref().and_then(|p| p.freeze.as_ref());
            match freeze.filter(|f| f.runs_at(now)) {
                Some(f) => worsen(AccountStatus::Frozen, freeze_reason(f)),
                // Without a profile nothing is known about a freeze: a frozen account stays.
                None if current == AccountStatus::Frozen && profile.is_none() => None,
                None if matches!(current, AccountStatus::Unauthorized | AccountStatus::Frozen) => {
                    Some((AccountStatus::Active, None))
                }
                None => None,
            }
        }
    }
}

/// `frozen until 2026-12-31` (the status reason of a frozen account).
pub fn freeze_reason(freeze: &Freeze) -> String {
    match freeze.until {
        Some(until) => format!("FROZEN until {}", until.format("%Y-%m-%d %H:%M UTC")),
        None => "FROZEN".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_780_000_000, 0).unwrap()
    }

    fn frozen_until(secs: i64) -> CheckFinding {
        CheckFinding::Authorised(Some(AccountProfile {
            premium: false,
            channel_limit: Some(500),
            freeze: Some(Freeze {
                since: None,
                until: DateTime::from_timestamp(1_780_000_000 + secs, 0),
                appeal_url: None,
            }),
        }))
    }

    #[test]
    fn a_check_writes_telegrams_verdicts_but_never_hides_a_worse_status() {
        use AccountStatus::*;
        let revoked = CheckFinding::Unauthorized("SESSION_REVOKED".into());
        let got = status_after_check(Active, &revoked, now());
        assert_eq!(got, Some((Unauthorized, Some("SESSION_REVOKED".into()))));
        assert_eq!(status_after_check(Banned, &revoked, now()), None);
        let frozen = status_after_check(Paused, &frozen_until(3600), now()).unwrap();
        assert_eq!(frozen.0, Frozen);
        assert!(frozen.1.unwrap().starts_with("FROZEN until "));
        assert_eq!(status_after_check(Active, &CheckFinding::Unreachable, now()), None);
    }

    #[test]
    fn a_working_unfrozen_session_lifts_unauthorized_and_frozen_and_nothing_else() {
        use AccountStatus::*;
        let fine = CheckFinding::Authorised(Some(AccountProfile::default()));
        assert_eq!(status_after_check(Unauthorized, &fine, now()), Some((Active, None)));
        assert_eq!(status_after_check(Frozen, &fine, now()), Some((Active, None)));
        // A freeze that ended is no freeze.
        assert_eq!(status_after_check(Frozen, &frozen_until(-1), now()), Some((Active, None)));
        for kept in [Active, FloodWait, Cooldown, Paused, Full, Banned] {
            assert_eq!(status_after_check(kept, &fine, now()), None, "{kept}");
        }
        // Authorised but the app config could not be read: a freeze cannot be ruled out.
        let unread = CheckFinding::Authorised(None);
        assert_eq!(status_after_check(Frozen, &unread, now()), None);
        assert_eq!(status_after_check(Unauthorized, &unread, now()), Some((Active, None)));
    }

    fn config() -> Value {
        json!({
            "channels_limit_default": 500.0,
            "channels_limit_premium": 1000.0,
            "chatlists_joined_limit_default": 2.0,
        })
    }

    #[test]
    fn a_free_account_gets_the_default_limit_and_a_premium_one_the_premium_limit() {
        assert_eq!(AccountProfile::read(false, &config()).channel_limit, Some(500));
        assert_eq!(AccountProfile::read(true, &config()).channel_limit, Some(1000));
        assert_eq!(AccountProfile::read(true, &config()).freeze, None);
    }

    #[test]
    fn a_config_without_limits_says_nothing_about_them() {
        let p = AccountProfile::read(true, &json!({ "channels_limit_premium": -3 }));
        assert_eq!(p.channel_limit, None);
        assert_eq!(AccountProfile::read(false, &json!([1, 2])).channel_limit, None);
        // A Premium account whose premium limit is missing falls back to the default one.
        let p = AccountProfile::read(true, &json!({ "channels_limit_default": 500 }));
        assert_eq!(p.channel_limit, Some(500));
    }

    #[test]
    fn freeze_fields_make_a_freeze_with_its_dates_and_appeal() {
        let mut c = config();
        c["freeze_since_date"] = json!(1_764_547_200.0);
        c["freeze_until_date"] = json!(1_796_083_200.0);
        c["freeze_appeal_url"] = json!("https://t.me/spambot");
        let freeze = AccountProfile::read(false, &c).freeze.expect("frozen");
        assert_eq!(freeze.since, DateTime::from_timestamp(1_764_547_200, 0));
        assert_eq!(freeze.until, DateTime::from_timestamp(1_796_083_200, 0));
        assert_eq!(freeze.appeal_url.as_deref(), Some("https://t.me/spambot"));
    }

    #[test]
    fn the_operator_limit_caps_what_telegram_allows_and_unknown_is_the_free_default() {
        assert_eq!(effective_channel_limit(Some(1000), 1000), 1000);
        assert_eq!(effective_channel_limit(Some(1000), 700), 700);
        assert_eq!(effective_channel_limit(Some(500), 1000), 500);
        assert_eq!(effective_channel_limit(None, 1000), FREE_CHANNEL_LIMIT);
        assert_eq!(effective_channel_limit(None, 300), 300);
    }
}
