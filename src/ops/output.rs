//! How the admin commands print: aligned, coloured tables on a terminal, tab-separated plain
//! text when piped, JSON with `--json`. Every command's report goes through [`render`].

use std::fmt::Write as _;
use std::io::IsTerminal as _;

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::domain::{AccountStatus, TargetStatus};

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

/// A session name as it is printed: control and invisible characters escaped (names are keys
/// an operator wrote; see [`crate::accounts_config::display_name`]).
pub fn shown(name: &str) -> String {
    crate::accounts_config::display_name(name).to_string()
}

/// Serialises an optional time as [`DateTime::to_rfc3339`] writes it
/// (`2026-01-12T10:00:00+00:00`), the spelling of every time in the commands' JSON.
pub fn rfc3339<S: serde::Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&t.to_rfc3339()),
        None => s.serialize_none(),
    }
}

/// How a report is printed: text in a [`Style`], or JSON (`--json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text(Style),
    Json,
}

impl Format {
    /// JSON when asked for, else text styled for where stdout goes ([`Style::detect`]).
    pub fn detect(json: bool) -> Self {
        if json { Format::Json } else { Format::Text(Style::detect()) }
    }
}

/// What a command returns: serialisable for `--json`, and its text form.
pub trait Report: serde::Serialize {
    /// The text form in `style`: tables aligned and coloured on a terminal, plain when piped.
    /// Ends with a newline unless empty.
    fn render(&self, style: Style) -> String;
}

/// The one path from a report to what is printed. JSON is pretty-printed with its keys in
/// alphabetical order, whatever the order of the report's fields.
pub fn render(report: &(impl Report + ?Sized), format: Format) -> String {
    match format {
        Format::Text(style) => report.render(style),
        Format::Json => {
            // Through a `Value`, whose objects sort their keys.
            let value = serde_json::to_value(report).unwrap_or_else(
                |e| json!({ "error": format!("the report could not be serialised: {e}") }),
            );
            let mut text = serde_json::to_string_pretty(&value).unwrap_or_default();
            text.push('\n');
            text
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Table {
        let mut t = Table::new(&["account", "status"]);
        t.row(vec!["acc_1".into(), Cell::colored("active", Some(Color::Green))]);
        t.row(vec!["a_much_longer_name".into(), Cell::colored("banned", Some(Color::Red))]);
        t
    }

    #[derive(serde::Serialize)]
    struct Sample {
        zeta: u32,
        alpha: &'static str,
    }

    impl Report for Sample {
        fn render(&self, style: Style) -> String {
            let mut t = Table::new(&["alpha", "zeta"]);
            t.row(vec![self.alpha.into(), self.zeta.to_string().into()]);
            t.render(style)
        }
    }

    #[test]
    fn a_report_prints_as_json_with_sorted_keys_or_as_its_text_through_one_path() {
        let r = Sample { zeta: 2, alpha: "a" };
        assert_eq!(render(&r, Format::Json), "{\n  \"alpha\": \"a\",\n  \"zeta\": 2\n}\n");
        assert_eq!(render(&r, Format::Text(Style::PLAIN)), "alpha\tzeta\na\t2\n");
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
