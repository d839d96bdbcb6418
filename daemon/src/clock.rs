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
