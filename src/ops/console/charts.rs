//! The activity charts: attempts per hour (joins, FloodWaits, errors) drawn as SVG by the
//! server. No script, no library: a few rectangles per hour.

use std::fmt::Write as _;

use chrono::{DateTime, Duration, DurationRound, Utc};

use crate::domain::OutcomeKind;
use crate::store::HourCount;

/// What an attempt counts as in the charts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Joined, already a participant, or a join request filed (what the daily cap counts).
    Join,
    FloodWait,
    /// Everything else (errors, bans, no answer, connection failures, slow mode).
    Error,
}

pub(crate) fn kind(outcome: &str) -> Kind {
    if OutcomeKind::parse(outcome).is_some_and(OutcomeKind::is_join) {
        Kind::Join
    } else if outcome == "flood_wait" {
        Kind::FloodWait
    } else {
        Kind::Error
    }
}

/// Attempts of one hour.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Hour {
    pub joins: u64,
    pub flood_waits: u64,
    pub errors: u64,
}

/// The `hours` hours up to `now` (the last one is the current, partial hour), oldest first,
/// with their starts and the attempts counted in each.
pub(crate) fn per_hour(
    counts: &[HourCount],
    now: DateTime<Utc>,
    hours: usize,
) -> Vec<(DateTime<Utc>, Hour)> {
    let current = now.duration_trunc(Duration::hours(1)).unwrap_or(now);
    let first = current - Duration::hours(hours.saturating_sub(1) as i64);
    let mut out: Vec<(DateTime<Utc>, Hour)> =
        (0..hours).map(|i| (first + Duration::hours(i as i64), Hour::default())).collect();
    for c in counts {
        if c.hour < first || c.hour > current {
            continue;
        }
        let i = ((c.hour - first).num_seconds() / 3600) as usize;
        let Some((_, h)) = out.get_mut(i) else { continue };
        match kind(&c.outcome) {
            Kind::Join => h.joins += c.count,
            Kind::FloodWait => h.flood_waits += c.count,
            Kind::Error => h.errors += c.count,
        }
    }
    out
}

const W: usize = 960;
const H: usize = 160;
const PAD_L: usize = 36;
const PAD_B: usize = 20;

/// One bar chart of `value(hour)` per hour, in `color`, with a `title` for screen readers.
pub(crate) fn svg(
    hours: &[(DateTime<Utc>, Hour)],
    title: &str,
    color: &str,
    value: fn(&Hour) -> u64,
) -> String {
    let max = hours.iter().map(|(_, h)| value(h)).max().unwrap_or(0).max(1);
    let n = hours.len().max(1);
    let plot_w = W - PAD_L;
    let plot_h = H - PAD_B;
    let slot = plot_w as f64 / n as f64;
    let bar_w = (slot * 0.8).max(1.0);
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg class=\"chart\" role=\"img\" viewBox=\"0 0 {W} {H}\" width=\"100%\" \
         aria-label=\"{title}\" data-max=\"{max}\"><title>{title}</title>"
    );
    // Axis: 0 and the maximum.
    let _ = write!(
        s,
        "<line x1=\"{PAD_L}\" y1=\"{plot_h}\" x2=\"{W}\" y2=\"{plot_h}\" stroke=\"#d0d5dd\"/>\
         <text x=\"{x}\" y=\"10\" text-anchor=\"end\">{max}</text>\
         <text x=\"{x}\" y=\"{plot_h}\" text-anchor=\"end\">0</text>",
        x = PAD_L - 4
    );
    for (i, (start, h)) in hours.iter().enumerate() {
        let v = value(h);
        let x = PAD_L as f64 + i as f64 * slot + (slot - bar_w) / 2.0;
        if v > 0 {
            let bh = (v as f64 / max as f64 * (plot_h - 12) as f64).max(1.0);
            let y = plot_h as f64 - bh;
            let _ = write!(
                s,
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bar_w:.1}\" height=\"{bh:.1}\" fill=\"{color}\">\
                 <title>{} {v}</title></rect>",
                start.format("%m-%d %H:00")
            );
        }
        // A label every 6 hours, at the hour's start.
        if start.format("%H").to_string().parse::<u32>().is_ok_and(|hh| hh % 6 == 0) {
            let label = if start.format("%H").to_string() == "00" {
                start.format("%m-%d").to_string()
            } else {
                start.format("%H:00").to_string()
            };
            let _ = write!(s, "<text x=\"{x:.1}\" y=\"{}\">{label}</text>", H - 6);
        }
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 12, h, m, 0).unwrap()
    }

    fn c(hour: DateTime<Utc>, outcome: &str, count: u64) -> HourCount {
        HourCount { hour, outcome: outcome.to_owned(), count }
    }

    #[test]
    fn counts_land_in_their_hour_by_kind() {
        let now = at(10, 30);
        let counts = [
            c(at(7, 0), "joined", 9), // before the window of 3 hours (8, 9, 10)
            c(at(8, 0), "joined", 1),
            c(at(8, 0), "requested", 1),
            c(at(9, 0), "flood_wait", 1),
            c(at(10, 0), "target_invalid", 1),
            c(at(10, 0), "already_participant", 1),
        ];
        let hours = per_hour(&counts, now, 3);
        let starts: Vec<_> = hours.iter().map(|(s, _)| *s).collect();
        assert_eq!(starts, [at(8, 0), at(9, 0), at(10, 0)]);
        let counts: Vec<_> =
            hours.iter().map(|(_, h)| (h.joins, h.flood_waits, h.errors)).collect();
        assert_eq!(counts, [(2, 0, 0), (0, 1, 0), (1, 0, 1)]);
    }

    #[test]
    fn a_chart_has_one_bar_per_hour_with_attempts() {
        let now = at(10, 30);
        let hours = per_hour(&[c(at(9, 0), "joined", 1), c(at(10, 0), "joined", 1)], now, 24);
        let svg = svg(&hours, "joins", "#12805c", |h| h.joins);
        assert_eq!(svg.matches("<rect").count(), 2);
        assert!(svg.contains("data-max=\"1\""));
    }
}
