//! One connection of `accounts check` and the verdict it writes back: whether the session is
//! authorised, the account's Premium flag, channel limit and freeze (help.getAppConfig), and
//! the status that follows ([`crate::domain::status_after_check`]). Read-only towards
//! Telegram: the authorisation check and help.getAppConfig are the only requests, nothing is
//! joined or sent. The caller holds the account's hold; every write is fenced by it.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::accounts_config::AccountConfig;
use crate::domain::{
    AccountProfile, CheckFinding, DecideCtx, JoinOutcome, Pacing, decide, status_after_check,
};
use crate::ops::check::{AdminError, Verdict};
use crate::store::{Account, CheckRecord, CheckWritten, Store};
use crate::telegram::{ConnectError, Telegram};

/// What one connection found.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub verdict: Verdict,
    pub profile: Option<AccountProfile>,
    /// An account-wide answer to help.getAppConfig (a FloodWait), to be recorded.
    pub limited: Option<JoinOutcome>,
}

impl Found {
    fn only(verdict: Verdict) -> Self {
        Self { verdict, profile: None, limited: None }
    }
}

/// Connects once, reads the profile, disconnects.
pub async fn connect_once(
    entry: &AccountConfig,
    telegram: &dyn Telegram,
    timeout: Duration,
) -> Found {
    let mut session = match tokio::time::timeout(timeout, telegram.connect(entry)).await {
        Ok(Ok(session)) => session,
        Ok(Err(ConnectError::Unauthorized(why))) => {
            return Found::only(Verdict::NotAuthorised(why));
        }
        Ok(Err(ConnectError::Banned(why))) => return Found::only(Verdict::Banned(why)),
        Ok(Err(ConnectError::Failed(why))) => return Found::only(Verdict::Failed(why)),
        Err(_) => return Found::only(Verdict::Failed(format!("no answer within {timeout:?}"))),
    };
    let found = match tokio::time::timeout(timeout, session.profile()).await {
        Ok(Ok(profile)) => Found { verdict: Verdict::Authorised, profile, limited: None },
        Ok(Err(JoinOutcome::Unauthorized { code })) => Found::only(Verdict::NotAuthorised(code)),
        Ok(Err(JoinOutcome::AccountBanned { code })) => Found::only(Verdict::Banned(code)),
        Ok(Err(JoinOutcome::ConnectFailed { reason })) => {
            Found::only(Verdict::Failed(format!("connected, then: {reason}")))
        }
        Ok(Err(outcome)) => Found {
            verdict: Verdict::Limited(outcome.to_string()),
            profile: None,
            limited: Some(outcome),
        },
        Err(_) => Found::only(Verdict::Failed(format!(
            "connected, then help.getAppConfig: no answer within {timeout:?}"
        ))),
    };
    if tokio::time::timeout(timeout, session.disconnect()).await.is_err() {
        tracing::warn!(account = %entry.session_name, "disconnect timed out");
    }
    found
}

/// Writes what the check found about `before` (the row as read under the hold `epoch`) and
/// says what changed.
pub async fn write_back(
    store: &Store,
    before: &Account,
    epoch: i64,
    found: Found,
) -> Result<(Verdict, Vec<String>), AdminError> {
    // A wait found here is counted from the latest the database's clock can read now.
    let now = store.latest_now();
    if let Some(outcome) = &found.limited {
        // A wait Telegram imposed is recorded as a join's would be (invariant 2).
        let pacing = Pacing::default();
        let ctx = DecideCtx {
            pacing: &pacing,
            now,
            jitter: 0.0,
            previous_in_doubt: 0,
            connect_failures: 0,
        };
        store.record_account_verdict(before.id, &decide(outcome, &ctx).account, now).await?;
    }
    let finding = match &found.verdict {
        Verdict::Authorised => CheckFinding::Authorised(found.profile.clone()),
        Verdict::NotAuthorised(code) => CheckFinding::Unauthorized(code.clone()),
        Verdict::Banned(code) => CheckFinding::Banned(code.clone()),
        _ => CheckFinding::Unreachable,
    };
    let status = status_after_check(before.status, &finding, now);
    let record = CheckRecord {
        result: found.verdict.kind(),
        profile: found.profile.as_ref(),
        status: status.clone().map(|(after, reason)| (before.status, after, reason)),
    };
    let changes = match store.record_check(before.id, epoch, now, &record).await? {
        CheckWritten::HoldLost => {
            tracing::warn!(account = %before.session_name, "the check's hold ran out: nothing written");
            Vec::new()
        }
        CheckWritten::Written { status_changed } => changes(
            before,
            status.filter(|_| status_changed).map(|(s, _)| s),
            found.profile.as_ref(),
            now,
        ),
    };
    Ok((found.verdict, changes))
}

/// What differs between the row before and what was written, in words.
fn changes(
    before: &Account,
    status: Option<crate::domain::AccountStatus>,
    profile: Option<&AccountProfile>,
    now: DateTime<Utc>,
) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(after) = status {
        out.push(format!("status {} -> {after}", before.status));
    }
    let Some(p) = profile else { return out };
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    match before.premium {
        Some(was) if was == p.premium => {}
        Some(was) => out.push(format!("premium {} -> {}", yes_no(was), yes_no(p.premium))),
        None => out.push(format!("premium {}", yes_no(p.premium))),
    }
    if before.channel_limit != p.channel_limit {
        let shown = |l: Option<u32>| l.map_or_else(|| "unknown".to_owned(), |l| l.to_string());
        out.push(format!(
            "channel limit {} -> {}",
            shown(before.channel_limit),
            shown(p.channel_limit)
        ));
    }
    let until = p.freeze.as_ref().filter(|f| f.runs_at(now)).and_then(|f| f.until);
    let was_until = before.frozen_until.filter(|u| *u > now);
    if until != was_until {
        match until {
            Some(u) => out.push(format!("frozen until {}", u.format("%Y-%m-%d %H:%M UTC"))),
            None if p.freeze.is_some() => out.push("frozen".to_owned()),
            None => out.push("no longer frozen".to_owned()),
        }
    }
    out
}
