//! How the admin commands print: aligned, coloured tables on a terminal, tab-separated plain
//! text when piped, JSON with `--json`; and the `status` report built from the store's reports.

use std::fmt::Write as _;
use std::io::IsTerminal as _;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::domain::{AccountStatus, TargetStatus};
use crate::store::{AccountOverview, ReadyGroup, TargetCount};

/// How text output looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    /// Columns padded to a common width (a terminal); else tab-separated (a pipe).
    pub aligned: bool,
    /// ANSI colours (a terminal without `NO_COLOR`).
    pub color: bool,
}

impl Style {
    /// Tables and colour on a terminal, plain text when piped; `NO_COLOR` turns colour off.
    pub fn detect() -> Self {
        let tty = std::io::stdout().is_terminal();
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Style { aligned: tty, color: tty && !no_color }
    }

    /// Tab-separated, no colour.
    pub const PLAIN: Style = Style { aligned: false, color: false };
}

/// ANSI colours used for statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Color {
    Green,
    Yellow,
    Red,
    Dim,
}

impl Color {
    fn code(self) -> &'static str {
        match self {
            Color::Green => "32",
            Color::Yellow => "33",
            Color::Red => "31",
            Color::Dim => "2",
        }
    }
}

/// One table cell: text and an optional colour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    pub text: String,
    pub color: Option<Color>,
}

impl<T: Into<String>> From<T> for Cell {
    fn from(text: T) -> Self {
        Cell { text: text.into(), color: None }
    }
}

impl Cell {
    pub fn colored(text: impl Into<String>, color: Option<Color>) -> Self {
        Cell { text: text.into(), color }
    }
}

/// A table of rows under a header.
#[derive(Debug, Clone, Default)]
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<Cell>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Self {
        Table { headers: headers.to_vec(), rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<Cell>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The header line and one line per row.
    pub fn render(&self, style: Style) -> String {
        let mut out = String::new();
        if !style.aligned {
            let _ = writeln!(out, "{}", self.headers.join("\t"));
            for row in &self.rows {
                let texts: Vec<&str> = row.iter().map(|c| c.text.as_str()).collect();
                let _ = writeln!(out, "{}", texts.join("\t"));
            }
            return out;
        }
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, c) in row.iter().enumerate() {
                if i < widths.len() {
                    widths[i] = widths[i].max(c.text.chars().count());
                }
            }
        }
        let line = |cells: Vec<(String, Option<&str>)>| {
            let last = cells.len().saturating_sub(1);
            let mut s = String::new();
            for (i, (text, code)) in cells.into_iter().enumerate() {
                let pad = if i == last { 0 } else { widths[i] - text.chars().count() + 2 };
                match code.filter(|_| style.color) {
                    Some(code) => {
                        let _ = write!(s, "\x1b[{code}m{text}\x1b[0m");
                    }
                    None => s.push_str(&text),
                }
                s.push_str(&" ".repeat(pad));
            }
            s
        };
        let header = self.headers.iter().map(|h| (h.to_uppercase(), Some("1"))).collect();
        let _ = writeln!(out, "{}", line(header));
        for row in &self.rows {
            let cells = row.iter().map(|c| (c.text.clone(), c.color.map(Color::code))).collect();
            let _ = writeln!(out, "{}", line(cells));
        }
        out
    }
}

/// A section title.
pub fn heading(title: &str, style: Style) -> String {
    if style.color { format!("\x1b[1m{title}\x1b[0m\n") } else { format!("{title}\n") }
}

/// The colour of an account status: green works, yellow waits, red needs an operator.
pub fn account_color(status: AccountStatus) -> Option<Color> {
    Some(match status {
        AccountStatus::Active => Color::Green,
        AccountStatus::Paused => Color::Yellow,
        s if s.can_work() => Color::Yellow,
        _ => Color::Red,
    })
}

/// The colour of a target status.
pub fn target_color(status: TargetStatus) -> Option<Color> {
    match status {
        TargetStatus::Joined => Some(Color::Green),
        TargetStatus::Requested | TargetStatus::Joining | TargetStatus::Queued => {
            Some(Color::Yellow)
        }
        TargetStatus::Error | TargetStatus::Banned => Some(Color::Red),
        _ => None,
    }
}

/// `2026-01-12 10:00 (in 5m)`, `now` when past or unset.
pub fn when(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    match t {
        Some(t) if t > now => {
            let left = (t - now).to_std().unwrap_or_default();
            let rounded = std::time::Duration::from_secs(left.as_secs().max(1));
            format!("{} (in {})", t.format("%Y-%m-%d %H:%M"), humantime::format_duration(rounded))
        }
        _ => "now".to_owned(),
    }
}

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

    pub fn render(&self, style: Style) -> String {
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
                format!("{}/{}", a.bound, self.limit_of(acc)).into(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Table {
        let mut t = Table::new(&["account", "status"]);
        t.row(vec!["acc_1".into(), Cell::colored("active", Some(Color::Green))]);
        t.row(vec!["a_much_longer_name".into(), Cell::colored("banned", Some(Color::Red))]);
        t
    }

    #[test]
    fn piped_output_is_tab_separated_without_escape_codes() {
        let text = table().render(Style::PLAIN);
        assert_eq!(text, "account\tstatus\nacc_1\tactive\na_much_longer_name\tbanned\n");
    }

    #[test]
    fn terminal_output_aligns_columns_and_colours_cells() {
        let text = table().render(Style { aligned: true, color: true });
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains("ACCOUNT"), "{text}");
        assert!(lines[1].starts_with("acc_1               \x1b[32mactive\x1b[0m"), "{text:?}");
        let no_color = table().render(Style { aligned: true, color: false });
        assert!(!no_color.contains('\x1b'));
        assert!(no_color.lines().nth(2).unwrap().starts_with("a_much_longer_name  banned"));
    }

    #[test]
    fn a_time_in_the_future_says_how_far_and_the_past_says_now() {
        let now = DateTime::parse_from_rfc3339("2026-01-12T10:00:00Z").unwrap().to_utc();
        assert_eq!(when(Some(now + chrono::Duration::minutes(5)), now), "2026-01-12 10:05 (in 5m)");
        assert_eq!(when(Some(now - chrono::Duration::minutes(5)), now), "now");
        assert_eq!(when(None, now), "now");
    }
}
