//! Time: instants as Unix milliseconds, service days in the site's time zone (Europe/Berlin by
//! default), and the clock the daemon reads. The engine never reads the clock itself; every
//! command is executed "at" an instant handed in, so tests drive time freely.

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;

/// An instant as milliseconds since the Unix epoch (UTC).
pub type Millis = i64;

/// One minute in milliseconds.
pub const MINUTE: Millis = 60_000;

/// The site's calendar: maps instants to service days and local times.
#[derive(Debug, Clone)]
pub struct Calendar {
    tz: TimeZone,
}

/// Errors of the calendar.
#[derive(Debug, thiserror::Error)]
pub enum CalendarError {
    /// The configured time zone is not in the bundled database.
    #[error("unknown time zone '{0}'")]
    UnknownTimeZone(String),
}

impl Calendar {
    /// A calendar for the named IANA time zone (e.g. `Europe/Berlin`).
    pub fn new(time_zone: &str) -> Result<Self, CalendarError> {
        let tz = TimeZone::get(time_zone)
            .map_err(|_| CalendarError::UnknownTimeZone(time_zone.to_string()))?;
        Ok(Self { tz })
    }

    /// Europe/Berlin, the default.
    pub fn berlin() -> Self {
        // The zone is bundled into the binary (jiff's `tzdb-bundle-always`), so the lookup
        // cannot fail; fall back to UTC rather than panic if a build ever drops the bundle.
        Self::new("Europe/Berlin").unwrap_or(Self { tz: TimeZone::UTC })
    }

    /// The service day an instant belongs to (local calendar date).
    pub fn day_of(&self, at: Millis) -> Date {
        to_timestamp(at).to_zoned(self.tz.clone()).date()
    }

    /// The first instant of a local day (local midnight, or the first valid time after it).
    pub fn start_of_day(&self, day: Date) -> Millis {
        match day.to_zoned(self.tz.clone()) {
            Ok(zoned) => zoned.timestamp().as_millisecond(),
            // Only out-of-range dates fail; clamp to the representable range.
            Err(_) => Timestamp::MAX.as_millisecond(),
        }
    }

    /// The instant of local wall-clock time `minute` (0..1440) on `day`. DST-safe: a time in
    /// the spring gap (02:30 in Berlin) becomes the same time after the shift (03:30), a time in
    /// the autumn fold its first occurrence (jiff's `compatible` disambiguation).
    pub fn local_instant(&self, day: Date, minute: u16) -> Millis {
        let (hour, minute) = ((minute / 60).min(23), minute % 60);
        let time = day.at(hour as i8, minute as i8, 0, 0);
        match time.to_zoned(self.tz.clone()) {
            Ok(zoned) => zoned.timestamp().as_millisecond(),
            Err(_) => self.start_of_day(day),
        }
    }

    /// The first instant of the day after `day`.
    pub fn start_of_next_day(&self, day: Date) -> Millis {
        match day.tomorrow() {
            Ok(next) => self.start_of_day(next),
            Err(_) => Timestamp::MAX.as_millisecond(),
        }
    }

    /// Local wall-clock time as `HH:MM`.
    pub fn local_hhmm(&self, at: Millis) -> String {
        let zoned = to_timestamp(at).to_zoned(self.tz.clone());
        format!("{:02}:{:02}", zoned.hour(), zoned.minute())
    }

    /// Local date and time as printed on tickets, e.g. `23.11.2026 09:05`.
    pub fn local_ddmmyyyy_hhmm(&self, at: Millis) -> String {
        let zoned = to_timestamp(at).to_zoned(self.tz.clone());
        format!(
            "{:02}.{:02}.{:04} {:02}:{:02}",
            zoned.day(),
            zoned.month(),
            zoned.year(),
            zoned.hour(),
            zoned.minute()
        )
    }

    /// Local date and time as RFC 3339 with offset, for humans and logs.
    pub fn local_rfc3339(&self, at: Millis) -> String {
        let zoned = to_timestamp(at).to_zoned(self.tz.clone());
        zoned
            .timestamp()
            .display_with_offset(zoned.offset())
            .to_string()
    }
}

fn to_timestamp(at: Millis) -> Timestamp {
    Timestamp::from_millisecond(at).unwrap_or(if at < 0 {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    })
}

/// Where the daemon gets "now" from.
pub trait Clock: Send + Sync {
    /// The current instant.
    fn now(&self) -> Millis;
}

/// The system's real-time clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Millis {
        Timestamp::now().as_millisecond()
    }
}

/// A wall-clock jump the engine does not follow yet (see [`ClockGuard`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClockHold {
    /// The wall clock's time when the jump was seen.
    pub wall_at_jump: Millis,
    /// The engine's time then.
    pub engine_at_jump: Millis,
    /// The wall clock's time at the newest reading.
    pub wall: Millis,
    /// The engine's time at the newest reading (monotonic since the last trusted reading).
    pub engine: Millis,
}

impl ClockHold {
    /// How far the wall clock is ahead of the engine (negative: behind), in seconds.
    pub fn offset_seconds(&self) -> i64 {
        (self.wall - self.engine) / 1_000
    }
}

/// Decides which time the engine runs on. The wall clock is trusted while it advances with
/// the monotonic clock. When one reading differs from the last trusted one plus the monotonic
/// time between them by more than the threshold, the wall clock jumped:
/// - forward within the engine's service day: followed (logged);
/// - forward into another day, or backwards: **held**. The engine keeps counting on the
///   monotonic clock from the last trusted reading, so no day is closed and no ticket is
///   stamped with the wrong time, until an admin confirms the new time ([`Self::confirm`]) or
///   the wall clock comes back within the threshold by itself.
///
/// The hold lives in memory: a daemon restarted during a hold trusts the wall clock again.
#[derive(Debug)]
pub struct ClockGuard {
    threshold: Millis,
    calendar: Calendar,
    trusted: Option<(Millis, std::time::Instant)>,
    hold: Option<ClockHold>,
}

impl ClockGuard {
    /// A guard that treats steps over `threshold` milliseconds as jumps.
    pub fn new(threshold: Millis, calendar: Calendar) -> Self {
        Self {
            threshold,
            calendar,
            trusted: None,
            hold: None,
        }
    }

    /// The time to run the engine at, given a wall-clock reading and the monotonic instant
    /// it was taken at.
    pub fn engine_time(&mut self, wall: Millis, monotonic: std::time::Instant) -> Millis {
        let Some((trusted_wall, trusted_at)) = self.trusted else {
            self.trusted = Some((wall, monotonic));
            return wall;
        };
        let elapsed = monotonic.saturating_duration_since(trusted_at).as_millis();
        let expected = trusted_wall.saturating_add(i64::try_from(elapsed).unwrap_or(i64::MAX));
        let step = wall.saturating_sub(expected);
        if step.abs() <= self.threshold {
            if let Some(hold) = self.hold.take() {
                tracing::info!(
                    offset_seconds = hold.offset_seconds(),
                    "the wall clock came back; the engine follows it again"
                );
            }
            self.trusted = Some((wall, monotonic));
            return wall;
        }
        if let Some(hold) = &mut self.hold {
            hold.wall = wall;
            hold.engine = expected;
            return expected;
        }
        if step > 0 && self.calendar.day_of(wall) == self.calendar.day_of(expected) {
            tracing::warn!(
                step_seconds = step / 1_000,
                "the wall clock jumped forward within the service day; following it"
            );
            self.trusted = Some((wall, monotonic));
            return wall;
        }
        tracing::error!(
            step_seconds = step / 1_000,
            wall = %self.calendar.local_rfc3339(wall),
            engine = %self.calendar.local_rfc3339(expected),
            "the wall clock jumped; the engine keeps its own time until an admin confirms the \
             new time (/admin or `leitsystemd ctl confirm-clock`)"
        );
        self.hold = Some(ClockHold {
            wall_at_jump: wall,
            engine_at_jump: expected,
            wall,
            engine: expected,
        });
        expected
    }

    /// The jump being held, if any.
    pub fn hold(&self) -> Option<&ClockHold> {
        self.hold.as_ref()
    }

    /// Accepts the wall clock's time as right: the engine follows it from the next reading.
    /// Returns the hold that ended (None when nothing was held).
    pub fn confirm(&mut self) -> Option<ClockHold> {
        let hold = self.hold.take()?;
        self.trusted = None;
        Some(hold)
    }
}

/// Parses an RFC 3339 instant (`2026-03-29T09:30:00+02:00`) into milliseconds.
pub fn parse_instant(text: &str) -> Result<Millis, jiff::Error> {
    Ok(text.parse::<Timestamp>()?.as_millisecond())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Millis {
        parse_instant(text).unwrap_or_else(|e| panic!("bad instant {text}: {e}"))
    }

    /// Readings of a wall clock against a monotonic one: `(monotonic ms, wall)`.
    fn engine_times(guard: &mut ClockGuard, readings: &[(u64, &str)]) -> Vec<Millis> {
        let start = std::time::Instant::now();
        readings
            .iter()
            .map(|(mono, wall)| {
                let at = start + std::time::Duration::from_millis(*mono);
                guard.engine_time(super::parse_instant(wall).unwrap_or(0), at)
            })
            .collect()
    }

    #[test]
    fn a_jump_into_the_next_day_is_held_until_confirmed() {
        let mut guard = ClockGuard::new(300_000, Calendar::berlin());
        let times = engine_times(
            &mut guard,
            &[
                (0, "2026-12-02T10:00:00Z"),
                // One minute later by both clocks: followed.
                (60_000, "2026-12-02T10:01:00Z"),
                // One more minute, but the wall clock says tomorrow: held.
                (120_000, "2026-12-03T10:02:00Z"),
                (180_000, "2026-12-03T10:03:00Z"),
            ],
        );
        assert_eq!(times[1], at("2026-12-02T10:01:00Z"));
        assert_eq!(times[2], at("2026-12-02T10:02:00Z"), "the jump is followed");
        assert_eq!(times[3], at("2026-12-02T10:03:00Z"));
        let hold = guard.hold().cloned();
        assert_eq!(
            hold.as_ref().map(ClockHold::offset_seconds),
            Some(24 * 3600)
        );
        assert_eq!(guard.confirm(), hold);
        assert!(guard.hold().is_none());
        let start = std::time::Instant::now();
        assert_eq!(
            guard.engine_time(at("2026-12-03T10:04:00Z"), start),
            at("2026-12-03T10:04:00Z"),
            "after the confirmation the wall clock is followed"
        );
    }

    #[test]
    fn a_held_jump_ends_when_the_wall_clock_comes_back() {
        let mut guard = ClockGuard::new(300_000, Calendar::berlin());
        let times = engine_times(
            &mut guard,
            &[
                (0, "2026-12-02T10:00:00Z"),
                (60_000, "2027-06-01T00:00:00Z"),
                // Back to the right time (one minute off the monotonic count: within 5 min).
                (120_000, "2026-12-02T10:03:00Z"),
                (180_000, "2026-12-02T10:04:00Z"),
            ],
        );
        assert_eq!(times[1], at("2026-12-02T10:01:00Z"));
        assert_eq!(times[2], at("2026-12-02T10:03:00Z"));
        assert_eq!(times[3], at("2026-12-02T10:04:00Z"));
        assert!(guard.hold().is_none());
        assert_eq!(guard.confirm(), None, "nothing left to confirm");
    }

    #[test]
    fn forward_steps_within_the_day_are_followed_and_backward_jumps_held() {
        let mut guard = ClockGuard::new(300_000, Calendar::berlin());
        let times = engine_times(
            &mut guard,
            &[
                (0, "2026-12-02T08:00:00Z"),
                // NTP after boot: two hours forward, same day.
                (1_000, "2026-12-02T10:00:01Z"),
                // Four minutes slow against the monotonic clock: within the threshold.
                (61_000, "2026-12-02T10:00:21Z"),
                // An hour back: held; the engine counts on.
                (121_000, "2026-12-02T09:01:21Z"),
            ],
        );
        assert_eq!(times[1], at("2026-12-02T10:00:01Z"));
        assert_eq!(times[2], at("2026-12-02T10:00:21Z"));
        assert_eq!(times[3], at("2026-12-02T10:01:21Z"));
        assert_eq!(guard.hold().map(ClockHold::offset_seconds), Some(-3600));
    }

    #[test]
    fn day_boundary_is_local_midnight_in_winter_and_summer() {
        let cal = Calendar::berlin();
        // Winter: UTC+1. 22:59:59Z is 23:59:59 local, 23:00Z is the next day.
        assert_eq!(
            cal.day_of(at("2026-01-14T22:59:59Z")).to_string(),
            "2026-01-14"
        );
        assert_eq!(
            cal.day_of(at("2026-01-14T23:00:00Z")).to_string(),
            "2026-01-15"
        );
        // Summer: UTC+2.
        assert_eq!(
            cal.day_of(at("2026-07-14T21:59:59Z")).to_string(),
            "2026-07-14"
        );
        assert_eq!(
            cal.day_of(at("2026-07-14T22:00:00Z")).to_string(),
            "2026-07-15"
        );
    }

    #[test]
    fn dst_switch_days_start_at_local_midnight() {
        let cal = Calendar::berlin();
        // 2026-03-29: clocks go 02:00 -> 03:00; the day is 23 hours long.
        let spring = jiff::civil::date(2026, 3, 29);
        assert_eq!(
            cal.start_of_next_day(spring) - cal.start_of_day(spring),
            23 * 60 * MINUTE
        );
        // 2026-10-25: clocks go 03:00 -> 02:00; the day is 25 hours long.
        let autumn = jiff::civil::date(2026, 10, 25);
        assert_eq!(
            cal.start_of_next_day(autumn) - cal.start_of_day(autumn),
            25 * 60 * MINUTE
        );
        assert_eq!(cal.start_of_day(autumn), at("2026-10-24T22:00:00Z"));
        assert_eq!(cal.start_of_next_day(autumn), at("2026-10-25T23:00:00Z"));
    }
}
