//! HTML pieces: escaping, the page layout, status badges, times. Every value from the database
//! goes through [`esc`] (or [`attr`]) before it reaches a page.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use crate::domain::{AccountStatus, TargetStatus};

/// Text fit for HTML content and attribute values.
pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A session name as the CLI shows it (invisible characters escaped), then HTML-escaped.
pub(crate) fn name(session_name: &str) -> String {
    esc(&crate::ops::output::shown(session_name))
}

/// One query-string value, percent-encoded.
pub(crate) fn q(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// Which top-level page a page belongs to (its tab is highlighted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tab {
    Pools,
    Accounts,
    Groups,
    Ready,
    Activity,
    Audit,
}

/// What the header shows about the visitor.
pub(crate) struct Visitor<'a> {
    /// `Some(actor)` for the admin token.
    pub actor: Option<&'a str>,
    /// Whether actions exist at all (an admin token is configured).
    pub actions_enabled: bool,
}

/// A whole page.
pub(crate) fn page(title: &str, tab: Tab, visitor: &Visitor<'_>, body: &str) -> String {
    let tabs = [
        (Tab::Pools, "/", "Pools"),
        (Tab::Accounts, "/accounts", "Accounts"),
        (Tab::Groups, "/groups", "Groups"),
        (Tab::Ready, "/ready", "Ready for posting"),
        (Tab::Activity, "/activity", "Activity"),
        (Tab::Audit, "/audit", "Audit log"),
    ];
    let mut nav = String::new();
    for (t, href, label) in tabs {
        let on = if t == tab { " class=\"on\"" } else { "" };
        let _ = write!(nav, "<a href=\"{href}\"{on}>{label}</a>");
    }
    let who = match (visitor.actor, visitor.actions_enabled) {
        (Some(actor), _) => format!("acting as {}", esc(actor)),
        (None, true) => "read-only · <a href=\"/login\">sign in to act</a>".to_owned(),
        (None, false) => "read-only console".to_owned(),
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · smart-joiner</title><link rel=\"stylesheet\" href=\"/static/console.css\">\
         </head><body><header><span class=\"brand\">smart-joiner</span><nav>{nav}</nav>\
         <span class=\"who\">{who}</span></header><main>{body}</main>\
         <script src=\"/static/console.js\"></script></body></html>",
        title = esc(title),
    )
}

/// `<span class="s s-green">joined</span>`
fn badge(text: &str, color: Option<&str>) -> String {
    match color {
        Some(c) => format!("<span class=\"s s-{c}\">{}</span>", esc(text)),
        None => format!("<span class=\"s\">{}</span>", esc(text)),
    }
}

/// An account status as a coloured badge (green works, yellow waits or paused, red needs an
/// operator), the CLI's colours.
pub(crate) fn account_badge(status: AccountStatus) -> String {
    let color = crate::ops::output::account_color(status).map(color_name);
    badge(status.as_str(), color)
}

pub(crate) fn target_badge(status: TargetStatus) -> String {
    let color = crate::ops::output::target_color(status).map(color_name);
    badge(status.as_str(), color)
}

fn color_name(c: crate::ops::output::Color) -> &'static str {
    use crate::ops::output::Color;
    match c {
        Color::Green => "green",
        Color::Yellow => "yellow",
        Color::Red => "red",
        Color::Dim => "dim",
    }
}

/// An attempt's outcome as a badge.
pub(crate) fn outcome_badge(outcome: &str) -> String {
    let color = match outcome {
        "joined" | "already_participant" | "requested" => Some("green"),
        "flood_wait" | "slowmode_wait" | "in_doubt" | "connect_failed" => Some("yellow"),
        _ => Some("red"),
    };
    badge(outcome, color)
}

/// `2026-01-12 10:00:05 UTC`
pub(crate) fn time(t: DateTime<Utc>) -> String {
    format!("<time datetime=\"{}\">{}</time>", t.to_rfc3339(), t.format("%Y-%m-%d %H:%M:%S"))
}

/// A time, or a dash.
pub(crate) fn time_opt(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(|| "<span class=\"muted\">–</span>".to_owned(), time)
}

/// `in 5m 3s` / `now` for a moment that passed or is unset.
pub(crate) fn until(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    match t {
        Some(t) if t > now => {
            let left = (t - now).to_std().unwrap_or_default();
            let secs = std::time::Duration::from_secs(left.as_secs().max(1));
            format!(
                "{} <span class=\"muted\">(in {})</span>",
                time(t),
                humantime::format_duration(secs)
            )
        }
        _ => "now".to_owned(),
    }
}

/// A gauge of `used` out of `cap`.
pub(crate) fn bar(used: u64, cap: u64) -> String {
    format!("<progress value=\"{}\" max=\"{cap}\"></progress> {used} / {cap}", used.min(cap))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_data_is_escaped() {
        assert_eq!(esc("<script>\"x\"&'y'"), "&lt;script&gt;&quot;x&quot;&amp;&#39;y&#39;");
        assert_eq!(q("a b&c"), "a+b%26c");
    }
}
