//! The one clock that every time compared across processes is read from: the database's.
//!
//! Pacing, holds, FloodWait rests and schedules are timestamps in the database that one process
//! writes and another compares with its own "now". Wall clocks of different machines disagree
//! (a node without NTP, a VM resumed with a stale clock), so no process reads its own wall clock
//! for them: it reads [`Clock::now`], its wall clock corrected by the offset to the database
//! server's clock. The store measures that offset when it connects and again every
//! [`RESYNC_EVERY`] (`Store::sync_clock`): one round trip, the server's time taken halfway.
//! The error left is half a round trip plus the drift between two measurements, milliseconds,
//! against pauses of minutes. See docs/design.md, "Time".
//!
//! The process's wall clock is read in one place, [`Clock::local`]. `SMART_JOINER_CLOCK_OFFSET`
//! (a signed duration such as `30s` or `-30s`) adds an error to it, for the fault run's skewed
//! workers; a process whose clock really is off looks the same to the code.

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

/// How often a long-running process measures the offset to the database's clock again.
pub const RESYNC_EVERY: Duration = Duration::from_secs(30);
/// A reading whose round trip is longer than this and than twice the shortest seen so far is
/// not trusted once a correction exists: its error (up to half the round trip) would be far
/// larger than usual.
pub const TRUSTED_ROUND_TRIP: Duration = Duration::from_millis(50);
/// The environment variable that puts this process's wall clock off by a fixed amount.
pub const OFFSET_VAR: &str = "SMART_JOINER_CLOCK_OFFSET";
/// A correction above this is logged once: the machine's clock deserves a look.
const WORTH_A_WARNING: chrono::TimeDelta = chrono::TimeDelta::seconds(1);
/// How fast two clocks may drift apart between two measurements, in millionths: a quartz
/// clock's tolerance, well above what NTP leaves. At [`RESYNC_EVERY`] it adds 1.5 ms.
pub const DRIFT_PPM: i64 = 50;

/// A wall clock corrected to a reference (the database's). Before the first measurement it is
/// the wall clock itself.
#[derive(Debug, Default)]
pub struct Clock {
    /// Added to the system clock: this process's own clock error (zero unless injected).
    skew: chrono::TimeDelta,
    /// Reference clock minus wall clock, in microseconds.
    correction_us: AtomicI64,
    /// The shortest round trip of a reading so far, in microseconds (0: none yet).
    best_round_trip_us: AtomicI64,
    /// When the correction was last measured; `None` before the first measurement.
    measured: Mutex<Option<Instant>>,
    /// How far the correction in force can be off: half the round trip of the reading it
    /// came from, and when that reading was made (the drift since grows the bound).
    in_force: Mutex<Option<(i64, Instant)>>,
}

impl Clock {
    /// The system clock, put off by `SMART_JOINER_CLOCK_OFFSET` when it is set.
    pub fn from_env() -> Result<Clock, String> {
        match std::env::var(OFFSET_VAR) {
            Ok(text) => {
                let skew = parse_offset(&text).map_err(|e| format!("{OFFSET_VAR}: {e}"))?;
                Ok(Clock::skewed(skew))
            }
            Err(std::env::VarError::NotPresent) => Ok(Clock::default()),
            Err(std::env::VarError::NotUnicode(_)) => Err(format!("{OFFSET_VAR} is not UTF-8")),
        }
    }

    /// A wall clock that runs `skew` ahead (behind when negative) of the system clock.
    pub fn skewed(skew: chrono::TimeDelta) -> Clock {
        Clock { skew, ..Clock::default() }
    }

    /// This process's wall clock, uncorrected. Only the measurement reads it.
    pub fn local(&self) -> DateTime<Utc> {
        Utc::now() + self.skew
    }

    /// The reference's time now: the wall clock plus the last measured correction.
    pub fn now(&self) -> DateTime<Utc> {
        self.local() + self.correction()
    }

    /// How far [`Clock::now`] can be from the reference's time: half the round trip of the
    /// reading in force, one microsecond for the reference's truncation, and [`DRIFT_PPM`] of
    /// the time since that reading. Zero before the first measurement (nothing is known, and
    /// nothing is claimed).
    pub fn uncertainty(&self) -> chrono::TimeDelta {
        let in_force = *self.in_force.lock().unwrap_or_else(|p| p.into_inner());
        let Some((half_round_trip_us, at)) = in_force else {
            return chrono::TimeDelta::zero();
        };
        let drift_us = i64::try_from(at.elapsed().as_micros()).unwrap_or(i64::MAX / 2)
            / (1_000_000 / DRIFT_PPM);
        chrono::TimeDelta::microseconds(
            half_round_trip_us.saturating_add(1).saturating_add(drift_us),
        )
    }

    /// The earliest the reference's clock can read now. Before acting on a time another
    /// process wrote (a rest is over, a hold has ended), compare it with this: a rest this
    /// says is over is over on every clock.
    pub fn earliest(&self) -> DateTime<Utc> {
        self.now() - self.uncertainty()
    }

    /// The latest the reference's clock can read now. A rest or a hold this process writes
    /// for others to respect is counted from this: it lasts at least as long on every clock.
    pub fn latest(&self) -> DateTime<Utc> {
        self.now() + self.uncertainty()
    }

    /// Reference clock minus wall clock, as last measured.
    pub fn correction(&self) -> chrono::TimeDelta {
        chrono::TimeDelta::microseconds(self.correction_us.load(Ordering::Relaxed))
    }

    /// Whether the correction is older than `every` (or was never measured).
    pub fn is_due(&self, every: Duration) -> bool {
        self.measured
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none_or(|at| at.elapsed() >= every)
    }

    /// Records one measurement: the wall clock read just before the reference was asked
    /// (`sent`), the reference's answer, and the wall clock just after (`received`). The
    /// reference is taken to have been read halfway. A reading whose round trip is longer than
    /// [`TRUSTED_ROUND_TRIP`] and than twice the shortest so far changes nothing once a
    /// correction exists (it counts as a measurement, so the next one comes on schedule).
    /// Returns the correction in force.
    pub fn record(
        &self,
        sent: DateTime<Utc>,
        reference: DateTime<Utc>,
        received: DateTime<Utc>,
    ) -> chrono::TimeDelta {
        let round_trip = (received - sent).num_microseconds().unwrap_or(i64::MAX).max(1);
        let best = self.best_round_trip_us.load(Ordering::Relaxed);
        let limit = (2 * best).max(TRUSTED_ROUND_TRIP.as_micros() as i64);
        let first = self.measured.lock().unwrap_or_else(|p| p.into_inner()).replace(Instant::now());
        if best == 0 || round_trip < best {
            self.best_round_trip_us.store(round_trip, Ordering::Relaxed);
        }
        if first.is_some() && round_trip > limit {
            tracing::debug!(
                round_trip_ms = round_trip / 1000,
                "the database's clock answered too slowly to be trusted; the last offset stays"
            );
            return self.correction();
        }
        let halfway = sent + (received - sent) / 2;
        let correction = reference - halfway;
        let us = correction.num_microseconds().unwrap_or(i64::MAX);
        self.correction_us.store(us, Ordering::Relaxed);
        *self.in_force.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(((round_trip + 1) / 2, Instant::now()));
        if first.is_none() && correction.abs() > WORTH_A_WARNING {
            tracing::warn!(
                correction_ms = correction.num_milliseconds(),
                "this machine's clock is {} ms {} the database's; every time this process \
                 writes or compares is corrected to the database's clock",
                correction.num_milliseconds().abs(),
                if correction > chrono::TimeDelta::zero() { "behind" } else { "ahead of" }
            );
        }
        correction
    }
}

/// `30s`, `-1500ms`, `+2m`: a signed duration.
fn parse_offset(text: &str) -> Result<chrono::TimeDelta, String> {
    let text = text.trim();
    let (negative, magnitude) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let d = humantime::parse_duration(magnitude)
        .map_err(|e| format!("invalid duration {text:?}: {e}"))?;
    let d = chrono::TimeDelta::from_std(d).map_err(|_| format!("{text:?} is too long"))?;
    Ok(if negative { -d } else { d })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_skewed_clock_is_corrected_to_the_reference_read_halfway() {
        let clock = Clock::skewed(chrono::TimeDelta::seconds(-30));
        assert!(clock.is_due(RESYNC_EVERY), "never measured");
        let sent = clock.local();
        let received = sent + chrono::TimeDelta::milliseconds(10);
        // The reference, read halfway, is 30 s ahead of this clock.
        let reference = sent + chrono::TimeDelta::milliseconds(5) + chrono::TimeDelta::seconds(30);
        assert_eq!(clock.record(sent, reference, received), chrono::TimeDelta::seconds(30));
        assert!(!clock.is_due(RESYNC_EVERY));
        let off = (clock.now() - Utc::now()).abs();
        assert!(off < chrono::TimeDelta::milliseconds(100), "corrected clock off by {off}");
    }

    #[test]
    fn a_reading_much_slower_than_usual_keeps_the_last_correction() {
        let clock = Clock::default();
        let ms = chrono::TimeDelta::milliseconds;
        let sent = clock.local();
        // A fast reading: the reference is 2 s ahead.
        clock.record(sent, sent + ms(1) + ms(2000), sent + ms(2));
        assert_eq!(clock.correction(), ms(2000));
        // A reading that waited 400 ms for a connection: its halfway point is 200 ms off.
        let sent = clock.local();
        assert_eq!(clock.record(sent, sent + ms(395) + ms(2000), sent + ms(400)), ms(2000));
        // One about as fast as the first counts.
        let sent = clock.local();
        assert_eq!(clock.record(sent, sent + ms(1) + ms(2100), sent + ms(2)), ms(2100));
    }

    #[test]
    fn the_bounds_cover_half_the_round_trip_of_the_reading_in_force() {
        let clock = Clock::default();
        assert_eq!(clock.uncertainty(), chrono::TimeDelta::zero(), "nothing measured yet");
        let ms = chrono::TimeDelta::milliseconds;
        let sent = clock.local();
        clock.record(sent, sent + ms(5) + ms(2000), sent + ms(10));
        let u = clock.uncertainty();
        assert!(u >= ms(5) && u < ms(6), "half of a 10 ms round trip, plus a little: {u}");
        let (earliest, now, latest) = (clock.earliest(), clock.now(), clock.latest());
        assert!(earliest < now && now < latest);
        assert!(latest - earliest >= ms(10), "{earliest} .. {latest}");
        // A slow reading that is not trusted keeps the bound of the reading in force.
        let sent = clock.local();
        clock.record(sent, sent + ms(200) + ms(2000), sent + ms(400));
        let u = clock.uncertainty();
        assert!(u >= ms(5) && u < ms(6), "the 400 ms reading was not trusted: {u}");
        // A faster one narrows it.
        let sent = clock.local();
        clock.record(sent, sent + ms(1) + ms(2000), sent + ms(2));
        let u = clock.uncertainty();
        assert!(u >= ms(1) && u < ms(2), "{u}");
    }

    #[test]
    fn offsets_are_signed_durations_and_nonsense_is_named() {
        assert_eq!(parse_offset("30s"), Ok(chrono::TimeDelta::seconds(30)));
        assert_eq!(parse_offset("-30s"), Ok(chrono::TimeDelta::seconds(-30)));
        assert_eq!(parse_offset("+1500ms"), Ok(chrono::TimeDelta::milliseconds(1500)));
        let err = parse_offset("soon").unwrap_err();
        assert!(err.contains("soon"), "{err}");
    }
}
