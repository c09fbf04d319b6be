//! `smart-joiner status`: accounts, targets per niche and status, and groups ready for posting.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::config::Settings;
use crate::ops::output::{Cell, Report, Style, Table, account_color, heading, target_color, when};
use crate::store::{AccountOverview, ReadyGroup, Store, TargetCount};

fn rfc3339(t: Option<DateTime<Utc>>) -> Value {
    t.map_or(Value::Null, |t| Value::String(t.to_rfc3339()))
}

/// What `smart-joiner status` shows.
#[derive(Debug, Clone)]
pub struct StatusReport {
    pub now: DateTime<Utc>,
    pub accounts: Vec<AccountOverview>,
    pub targets: Vec<TargetCount>,
    pub ready: Vec<ReadyGroup>,
    /// The operator's channel limit; each account's own (Telegram's, under it) is shown next
    /// to its bound count.
    pub channel_limit: u32,
    pub daily_join_cap: u32,
}

impl StatusReport {
    /// The channel limit the pick holds `account` to.
    fn limit_of(&self, account: &crate::store::Account) -> u32 {
        crate::domain::effective_channel_limit(account.channel_limit, self.channel_limit)
    }

    pub fn to_json(&self) -> Value {
        json!({
            "now": self.now.to_rfc3339(),
            "accounts": self.accounts.iter().map(|a| json!({
                "session_name": a.account.session_name,
                "pool": a.account.pool,
                "status": a.account.status.as_str(),
                "status_reason": a.account.status_reason,
                "next_allowed_action_time": rfc3339(a.account.next_allowed_action_time),
                "last_action_at": rfc3339(a.account.last_action_at),
                "joins_24h": a.joins_24h,
                "daily_join_cap": self.daily_join_cap,
                "channels": a.channels,
                "bound": a.bound,
                "channel_limit": self.limit_of(&a.account),
                "premium": a.account.premium,
                "ready_for_posting": a.ready,
            })).collect::<Vec<_>>(),
            "targets": self.targets.iter().map(|t| json!({
                "niche": t.niche, "status": t.status.as_str(), "count": t.count,
            })).collect::<Vec<_>>(),
            "ready_for_posting": self.ready.iter().map(|g| json!({
                "account": g.account,
                "target_id": g.target_id,
                "link": g.link.to_string(),
                "title": g.title,
                "niche": g.niche,
                "warmup_ended_at": g.warmup_ended_at.to_rfc3339(),
            })).collect::<Vec<_>>(),
        })
    }

    fn render_text(&self, style: Style) -> String {
        let mut out = heading("Accounts", style);
        let mut t = Table::new(&[
            "account",
            "pool",
            "status",
            "next action",
            "joins 24h",
            "channels",
            "bound",
            "ready",
            "reason",
        ]);
        for a in &self.accounts {
            let acc = &a.account;
            t.row(vec![
                crate::accounts_config::display_name(&acc.session_name).to_string().into(),
                acc.pool.clone().into(),
                Cell::colored(acc.status.as_str(), account_color(acc.status)),
                when(acc.next_allowed_action_time, self.now).into(),
                format!("{}/{}", a.joins_24h, self.daily_join_cap).into(),
                a.channels.to_string().into(),
                format!("{}/{}", a.bound, self.limit_of(&a.account)).into(),
                a.ready.to_string().into(),
                acc.status_reason.clone().unwrap_or_default().into(),
            ]);
        }
        out.push_str(&or_none(&t, style, "no accounts: run `smart-joiner accounts sync`"));

        out.push('\n');
        out.push_str(&heading("Targets", style));
        let mut t = Table::new(&["niche", "status", "count"]);
        for c in &self.targets {
            t.row(vec![
                c.niche.clone().into(),
                Cell::colored(c.status.as_str(), target_color(c.status)),
                c.count.to_string().into(),
            ]);
        }
        out.push_str(&or_none(&t, style, "no targets: run `smart-joiner targets import`"));

        out.push('\n');
        out.push_str(&heading("Ready for posting (warm-up ended)", style));
        let mut t = Table::new(&["account", "group", "title", "niche", "warm-up ended"]);
        for g in &self.ready {
            t.row(vec![
                g.account.clone().into(),
                g.link.to_string().into(),
                g.title.clone().unwrap_or_default().into(),
                g.niche.clone().into(),
                g.warmup_ended_at.format("%Y-%m-%d %H:%M").to_string().into(),
            ]);
        }
        out.push_str(&or_none(&t, style, "none yet"));
        out
    }
}

fn or_none(t: &Table, style: Style, empty: &str) -> String {
    if t.is_empty() && style.aligned { format!("  ({empty})\n") } else { t.render(style) }
}

/// Its JSON repeats the daily cap and the channel limit in every account's row, so a script
/// reads each row alone; built from the store's read models, hence by hand.
impl serde::Serialize for StatusReport {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

impl Report for StatusReport {
    fn render(&self, style: Style) -> String {
        self.render_text(style)
    }
}

/// Reads the `status` report: accounts (of `pool`), target counts, and at most `ready_limit`
/// groups ready for posting.
pub async fn status(
    store: &Store,
    settings: &Settings,
    pool: Option<&str>,
    ready_limit: u64,
) -> anyhow::Result<StatusReport> {
    let now = store.now();
    Ok(StatusReport {
        now,
        accounts: store.account_overview(pool, now).await?,
        targets: store.target_counts().await?,
        ready: store.ready_groups(now, ready_limit).await?,
        channel_limit: settings.channel_limit,
        daily_join_cap: settings.daily_join_cap,
    })
}
