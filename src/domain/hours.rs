//! Active hours: the daily windows in which an account may join, in its own time zone, with an
//! optional staggered start.
//!
//! Written `Europe/Kyiv 09:00-13:00,14:00-22:00 +30m`: an IANA time zone, one or more windows
//! (`HH:MM-HH:MM`; one whose end is not after its start runs past midnight), and optionally
//! `+DURATION`, the most by which each window opens later. The offset differs per account and
//! per day: it is derived from the account's id, the local date and the window, so every
//! process computes the same one without storing it, and neighbours in the pool do not all
//! start at the same minute.
//!
//! Pure: the time is passed in. A local time that does not exist (the hour skipped when clocks
//! go forward) opens at the first instant after the gap; one that occurs twice, at the first.

use std::fmt;
use std::time::Duration;

use chrono::{
    DateTime, Datelike, Days, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc,
};
use chrono_tz::Tz;

/// How far [`ActiveHours::next_open`] looks ahead, in days; every window opens within one.
const LOOKAHEAD_DAYS: u64 = 3;

/// Why a text is not active hours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HoursError {
    #[error("empty: expected a time zone and windows, like \"Europe/Kyiv 09:00-22:00\"")]
    Empty,
    #[error("unknown time zone {0:?} (an IANA name, like Europe/Kyiv or UTC)")]
    TimeZone(String),
    #[error("no window after the time zone (like 09:00-22:00)")]
    NoWindow,
    #[error("{0:?} is not a window HH:MM-HH:MM")]
    Window(String),
    #[error("window {0:?} is empty: its start and end are the same time")]
    EmptyWindow(String),
    #[error("{0:?} is not a start offset like +30m")]
    Offset(String),
    #[error("the start offset {offset} is not shorter than the shortest window ({window})")]
    OffsetTooLong { offset: String, window: String },
}

/// Daily windows in one time zone, with an optional staggered start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveHours {
    tz: Tz,
    /// Start and end of each window, local times; `end <= start` runs past midnight.
    windows: Vec<(NaiveTime, NaiveTime)>,
    /// Each window opens up to this much later, per account and day.
    stagger: Duration,
}

fn window_len(start: NaiveTime, end: NaiveTime) -> Duration {
    let secs = (end - start).num_seconds();
    let secs = if secs <= 0 { secs + 86_400 } else { secs };
    Duration::from_secs(secs as u64)
}

fn parse_time(s: &str) -> Option<NaiveTime> {
    let (h, m) = s.split_once(':')?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return None;
    }
    NaiveTime::from_hms_opt(h.parse().ok()?, m.parse().ok()?, 0)
}

fn parse_offset(s: &str) -> Option<Duration> {
    let mut total = 0u64;
    let mut digits = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let n: u64 = digits.parse().ok()?;
        digits.clear();
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return None,
        };
        // Saturates: an offset too large to count is refused as longer than any window.
        total = total.saturating_add(n.saturating_mul(unit));
    }
    (digits.is_empty() && !s.is_empty()).then_some(Duration::from_secs(total))
}

fn show_duration(d: Duration) -> String {
    let s = d.as_secs();
    let (h, m, sec) = (s / 3600, s / 60 % 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out += &format!("{h}h");
    }
    if m > 0 {
        out += &format!("{m}m");
    }
    if sec > 0 || out.is_empty() {
        out += &format!("{sec}s");
    }
    out
}

/// A well-mixed 64-bit hash (splitmix64's finaliser) of the account, the day and the window.
fn mix(account_id: i64, day: NaiveDate, window: usize) -> u64 {
    let mut x = (account_id as u64)
        ^ (i64::from(day.num_days_from_ce()) as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ (window as u64).wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl ActiveHours {
    /// Reads `TZ HH:MM-HH:MM[,HH:MM-HH:MM ...] [+OFFSET]`; windows may also be separated by
    /// spaces. Every problem is named.
    pub fn parse(text: &str) -> Result<Self, HoursError> {
        let mut tokens = text.split([' ', ',', '\t']).filter(|t| !t.is_empty());
        let zone = tokens.next().ok_or(HoursError::Empty)?;
        let tz: Tz = zone.parse().map_err(|_| HoursError::TimeZone(zone.to_owned()))?;
        let mut windows = Vec::new();
        let mut stagger = Duration::ZERO;
        for token in tokens {
            if let Some(offset) = token.strip_prefix('+') {
                stagger = parse_offset(offset).ok_or_else(|| HoursError::Offset(token.into()))?;
                continue;
            }
            let (a, b) = token.split_once('-').ok_or_else(|| HoursError::Window(token.into()))?;
            let (Some(start), Some(end)) = (parse_time(a), parse_time(b)) else {
                return Err(HoursError::Window(token.into()));
            };
            if start == end {
                return Err(HoursError::EmptyWindow(token.into()));
            }
            windows.push((start, end));
        }
        let shortest = windows.iter().map(|(s, e)| window_len(*s, *e)).min();
        let shortest = shortest.ok_or(HoursError::NoWindow)?;
        if stagger >= shortest {
            return Err(HoursError::OffsetTooLong {
                offset: show_duration(stagger),
                window: show_duration(shortest),
            });
        }
        Ok(Self { tz, windows, stagger })
    }

    /// The hours an account keeps: its own (`own`, as stored) when they read, else the pool's
    /// (`ACTIVE_HOURS`); None when neither has any. Own hours that no longer read give way to
    /// the pool's, and the second value says why. The pick, the folder check and the exporter's
    /// workable count all apply this one rule.
    pub fn of_account(
        own: Option<&str>,
        pool: Option<&Self>,
    ) -> (Option<Self>, Option<HoursError>) {
        match own.map(Self::parse) {
            Some(Ok(hours)) => (Some(hours), None),
            Some(Err(e)) => (pool.cloned(), Some(e)),
            None => (pool.cloned(), None),
        }
    }

    /// The instant a local date and time of this zone means (see the module docs for gaps and
    /// repeats).
    fn instant(&self, local: NaiveDateTime) -> DateTime<Utc> {
        let mut probe = local;
        // Gaps are at most a few hours; step forward by minutes until a time exists.
        for _ in 0..=24 * 60 {
            match self.tz.from_local_datetime(&probe) {
                LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => {
                    return t.with_timezone(&Utc);
                }
                LocalResult::None => probe += chrono::Duration::minutes(1),
            }
        }
        Utc.from_utc_datetime(&local)
    }

    /// This account's windows that start on local dates `from..=to`, as instants, in order of
    /// their (staggered) start.
    fn intervals(
        &self,
        account_id: i64,
        from: NaiveDate,
        days: u64,
    ) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
        let mut out = Vec::new();
        for day in (0..=days).filter_map(|d| from.checked_add_days(Days::new(d))) {
            for (i, (start, end)) in self.windows.iter().enumerate() {
                let offset = match self.stagger.as_secs() {
                    0 => 0,
                    max => mix(account_id, day, i) % (max + 1),
                };
                let opens = day.and_time(*start) + chrono::Duration::seconds(offset as i64);
                let end_day = if end <= start { day.succ_opt().unwrap_or(day) } else { day };
                out.push((self.instant(opens), self.instant(end_day.and_time(*end))));
            }
        }
        out.sort();
        out
    }

    fn local_date(&self, at: DateTime<Utc>) -> NaiveDate {
        at.with_timezone(&self.tz).date_naive()
    }

    /// Whether `account_id` may act at `at`.
    pub fn is_open(&self, account_id: i64, at: DateTime<Utc>) -> bool {
        let from = self.local_date(at).pred_opt().unwrap_or(self.local_date(at));
        self.intervals(account_id, from, 1).iter().any(|(s, e)| *s <= at && at < *e)
    }

    /// The first moment at or after `at` at which `account_id` may act: `at` itself inside a
    /// window, else the next (staggered) opening.
    pub fn next_open(&self, account_id: i64, at: DateTime<Utc>) -> DateTime<Utc> {
        let from = self.local_date(at).pred_opt().unwrap_or(self.local_date(at));
        let intervals = self.intervals(account_id, from, LOOKAHEAD_DAYS);
        if intervals.iter().any(|(s, e)| *s <= at && at < *e) {
            return at;
        }
        intervals.into_iter().map(|(s, _)| s).find(|s| *s > at).unwrap_or(at)
    }
}

impl fmt::Display for ActiveHours {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.tz.name())?;
        for (i, (s, e)) in self.windows.iter().enumerate() {
            let sep = if i == 0 { ' ' } else { ',' };
            write!(f, "{sep}{}-{}", s.format("%H:%M"), e.format("%H:%M"))?;
        }
        if !self.stagger.is_zero() {
            write!(f, " +{}", show_duration(self.stagger))?;
        }
        Ok(())
    }
}

impl std::str::FromStr for ActiveHours {
    type Err = HoursError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(text: &str) -> ActiveHours {
        ActiveHours::parse(text).unwrap()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_window_in_its_own_time_zone_is_open_inside_and_closed_outside() {
        // Kyiv is UTC+2 in January: 09:00-22:00 local is 07:00-20:00 UTC.
        let kyiv = h("Europe/Kyiv 09:00-22:00");
        assert!(!kyiv.is_open(1, utc("2026-01-12T06:59:59Z")));
        assert!(kyiv.is_open(1, utc("2026-01-12T07:00:00Z")));
        assert!(kyiv.is_open(1, utc("2026-01-12T19:59:59Z")));
        assert!(!kyiv.is_open(1, utc("2026-01-12T20:00:00Z")));
        assert_eq!(kyiv.next_open(1, utc("2026-01-12T21:00:00Z")), utc("2026-01-13T07:00:00Z"));
        assert_eq!(kyiv.next_open(1, utc("2026-01-12T12:00:00Z")), utc("2026-01-12T12:00:00Z"));
    }

    #[test]
    fn several_windows_and_one_past_midnight() {
        let split = h("UTC 09:00-12:00,14:00-18:00");
        assert_eq!(split.next_open(7, utc("2026-01-12T12:30:00Z")), utc("2026-01-12T14:00:00Z"));
        let night = h("UTC 22:00-02:00");
        assert!(night.is_open(7, utc("2026-01-12T01:00:00Z")));
        assert!(night.is_open(7, utc("2026-01-12T23:00:00Z")));
        assert!(!night.is_open(7, utc("2026-01-12T02:00:00Z")));
        assert_eq!(night.next_open(7, utc("2026-01-12T03:00:00Z")), utc("2026-01-12T22:00:00Z"));
    }

    #[test]
    fn the_staggered_start_differs_per_account_and_day_and_stays_within_the_offset() {
        let hours = h("UTC 09:00-22:00 +45m");
        let before = utc("2026-01-12T08:00:00Z");
        let mut starts = std::collections::HashSet::new();
        for account in 0..50 {
            let opens = hours.next_open(account, before);
            assert!(opens >= utc("2026-01-12T09:00:00Z") && opens <= utc("2026-01-12T09:45:00Z"));
            // Closed until then, open from then on: the same answer from both questions.
            assert!(!hours.is_open(account, opens - chrono::Duration::seconds(1)));
            assert!(hours.is_open(account, opens));
            starts.insert(opens);
        }
        assert!(starts.len() > 25, "accounts spread over the offset: {}", starts.len());
        let next_day = hours.next_open(3, utc("2026-01-13T08:00:00Z")) - chrono::Duration::days(1);
        let today = hours.next_open(3, before);
        let other_days: Vec<_> = (13..20)
            .map(|d| hours.next_open(3, utc(&format!("2026-01-{d}T08:00:00Z"))).time())
            .collect();
        assert!(other_days.iter().any(|t| *t != today.time()), "{today} {next_day} {other_days:?}");
    }

    #[test]
    fn clocks_going_forward_open_the_window_after_the_gap() {
        // 2026-03-29 02:00-03:00 does not exist in Berlin (CET -> CEST).
        let berlin = h("Europe/Berlin 02:30-05:00");
        assert_eq!(berlin.next_open(1, utc("2026-03-29T00:00:00Z")), utc("2026-03-29T01:00:00Z"));
    }

    #[test]
    fn text_round_trips_and_every_mistake_is_named() {
        let text = "Europe/Kyiv 09:00-13:00,14:00-22:00 +30m";
        assert_eq!(h(text).to_string(), text);
        assert_eq!(h("UTC 9:00-17:30 1:00-2:00").to_string(), "UTC 09:00-17:30,01:00-02:00");
        let err = |t: &str| ActiveHours::parse(t).unwrap_err();
        assert_eq!(err(""), HoursError::Empty);
        assert_eq!(err("Mars/Base 09:00-10:00"), HoursError::TimeZone("Mars/Base".into()));
        assert_eq!(err("UTC"), HoursError::NoWindow);
        assert_eq!(err("UTC 25:00-26:00"), HoursError::Window("25:00-26:00".into()));
        assert_eq!(err("UTC 9-17"), HoursError::Window("9-17".into()));
        assert_eq!(err("UTC 09:00-09:00"), HoursError::EmptyWindow("09:00-09:00".into()));
        assert_eq!(err("UTC 09:00-10:00 +5x"), HoursError::Offset("+5x".into()));
        assert_eq!(
            err("UTC 09:00-10:00 +1h"),
            HoursError::OffsetTooLong { offset: "1h".into(), window: "1h".into() }
        );
        // An offset too large for a u64 of seconds is refused, not an overflow.
        assert!(matches!(
            err("UTC 09:00-10:00 +18446744073709551h"),
            HoursError::OffsetTooLong { .. }
        ));
    }
}
