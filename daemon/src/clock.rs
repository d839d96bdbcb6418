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

/// The file systemd-timesyncd touches at every synchronisation (gone after a reboot: `/run` is
/// a tmpfs), so its existence means "synchronised since boot" and its mtime is the last sync.
pub const TIMESYNCD_FLAG_FILE: &str = "/run/systemd/timesync/synchronized";

/// Where the daemon learns that the system clock is synchronised (NTP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncSource {
    /// The kernel's NTP status (`adjtimex`, read only): chrony, ntpd and systemd-timesyncd all
    /// set it; `timedatectl` shows it as "System clock synchronized". The packaged unit's
    /// `ProtectClock=yes` forbids this call.
    Kernel,
    /// A file that exists once the clock is synchronised, e.g. [`TIMESYNCD_FLAG_FILE`].
    FlagFile(std::path::PathBuf),
}

/// What a [`SyncSource`] says about the clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncStatus {
    /// Synchronised; with the last synchronisation when the source knows it.
    Synchronised {
        /// The last synchronisation (a flag file's mtime).
        last_sync: Option<Millis>,
    },
    /// Not synchronised, or the source cannot tell: why, in words for an admin.
    Unsynchronised {
        /// Why.
        reason: String,
    },
}

impl SyncSource {
    /// Asks the source now (a `stat` or one system call).
    pub fn probe(&self) -> SyncStatus {
        match self {
            SyncSource::Kernel => kernel_sync_status(),
            SyncSource::FlagFile(path) => match std::fs::metadata(path) {
                Ok(meta) => SyncStatus::Synchronised {
                    last_sync: meta
                        .modified()
                        .ok()
                        .and_then(|t| Timestamp::try_from(t).ok())
                        .map(|t| t.as_millisecond()),
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => SyncStatus::Unsynchronised {
                    reason: format!(
                        "{} does not exist: the clock was not synchronised since boot",
                        path.display()
                    ),
                },
                Err(e) => SyncStatus::Unsynchronised {
                    reason: format!("cannot read {}: {e}", path.display()),
                },
            },
        }
    }

    /// The source as the config spells it: `kernel` or the flag file's path.
    pub fn describe(&self) -> String {
        match self {
            SyncSource::Kernel => "kernel".to_string(),
            SyncSource::FlagFile(path) => path.display().to_string(),
        }
    }
}

/// The kernel's NTP status: `adjtimex` with no modes set only reads it.
#[cfg(target_os = "linux")]
fn kernel_sync_status() -> SyncStatus {
    // SAFETY: `timex` is plain data (integers only), so all-zero is a valid value, and with
    // `modes == 0` the kernel only writes the current values into the struct we own.
    let mut timex: libc::timex = unsafe { std::mem::zeroed() };
    // SAFETY: a valid, exclusively borrowed `timex` for the duration of the call.
    let state = unsafe { libc::adjtimex(&mut timex) };
    if state < 0 {
        let error = std::io::Error::last_os_error();
        return SyncStatus::Unsynchronised {
            reason: format!(
                "cannot read the kernel's clock status (adjtimex: {error}); a unit with \
                 ProtectClock=yes forbids it: use a flag file such as {TIMESYNCD_FLAG_FILE}"
            ),
        };
    }
    if state == libc::TIME_ERROR || timex.status & libc::STA_UNSYNC != 0 {
        SyncStatus::Unsynchronised {
            reason: "the kernel reports the clock as not synchronised (no NTP client has set \
                     it since boot, or it lost its server)"
                .to_string(),
        }
    } else {
        SyncStatus::Synchronised { last_sync: None }
    }
}

#[cfg(not(target_os = "linux"))]
fn kernel_sync_status() -> SyncStatus {
    SyncStatus::Unsynchronised {
        reason: "the kernel's clock status can only be read on Linux".to_string(),
    }
}

/// A service day that does not start because nobody vouched for the clock (see [`DayGate`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClockWait {
    /// The service day the clock says it is.
    pub day: Date,
    /// The wall clock's time at the first refusal.
    pub since: Millis,
    /// The wall clock's time at the newest refusal.
    pub wall: Millis,
    /// Why the clock counts as unsynchronised (the source's answer).
    pub reason: String,
    /// The source asked (`kernel` or a flag file).
    pub source: String,
}

/// Refuses to run a service day on a clock nobody vouched for: with a source configured, the
/// first command of every service day (the first after start-up included) needs the source to
/// say "synchronised", or an admin's confirmation ([`Self::confirm`]). A day once started
/// runs to its end even if the sync is lost later; the [`ClockGuard`] watches it then.
#[derive(Debug)]
pub struct DayGate {
    source: Option<SyncSource>,
    calendar: Calendar,
    open_for: Option<Date>,
    waiting: Option<ClockWait>,
}

impl DayGate {
    /// A gate that admits everything (no sync required).
    pub fn open(calendar: Calendar) -> Self {
        Self {
            source: None,
            calendar,
            open_for: None,
            waiting: None,
        }
    }

    /// A gate that starts a day only when `source` says the clock is synchronised.
    pub fn requiring(source: SyncSource, calendar: Calendar) -> Self {
        Self {
            source: Some(source),
            ..Self::open(calendar)
        }
    }

    /// Whether a command at engine time `now` may run: its day is started, or the source says
    /// synchronised now (which starts it). Otherwise the wait, which is also kept for
    /// [`Self::waiting`].
    pub fn admit(&mut self, now: Millis) -> Result<(), ClockWait> {
        let Some(source) = &self.source else {
            return Ok(());
        };
        let day = self.calendar.day_of(now);
        if self.open_for == Some(day) {
            return Ok(());
        }
        match source.probe() {
            SyncStatus::Synchronised { last_sync } => {
                let waited = self.waiting.take();
                tracing::info!(
                    %day,
                    source = %source.describe(),
                    last_sync = %last_sync.map_or_else(String::new, |t| self.calendar.local_rfc3339(t)),
                    waited_seconds = waited.map_or(0, |w| (now - w.since) / 1_000),
                    "the clock is synchronised; the service day runs"
                );
                self.open_for = Some(day);
                Ok(())
            }
            SyncStatus::Unsynchronised { reason } => {
                let wait = match self.waiting.take() {
                    Some(wait) if wait.day == day && wait.reason == reason => {
                        ClockWait { wall: now, ..wait }
                    }
                    _ => {
                        tracing::error!(
                            %day,
                            wall = %self.calendar.local_rfc3339(now),
                            %reason,
                            "the clock is not synchronised: the service day does not start until \
                             it is, or until an admin confirms the time (/admin or `leitsystemd \
                             ctl confirm-clock`)"
                        );
                        ClockWait {
                            day,
                            since: now,
                            wall: now,
                            reason,
                            source: source.describe(),
                        }
                    }
                };
                self.waiting = Some(wait.clone());
                Err(wait)
            }
        }
    }

    /// An admin vouches for the clock: the day of `now` starts. Returns the wait that ended
    /// (None when nothing waited).
    pub fn confirm(&mut self, now: Millis) -> Option<ClockWait> {
        let wait = self.waiting.take()?;
        self.open_for = Some(self.calendar.day_of(now));
        Some(wait)
    }

    /// The day waiting for a synchronised clock, if any.
    pub fn waiting(&self) -> Option<&ClockWait> {
        self.waiting.as_ref()
    }
}

/// The clock as `/api/v1/clock` and `/healthz` show it: `held` with the held jump's times
/// (both in the site's zone, RFC 3339 and `DD.MM.YYYY HH:MM` for people, and the wall clock's
/// offset), and `unsynchronised`: `null`, or the day that waits for a synchronised clock.
pub fn clock_json(
    calendar: &Calendar,
    hold: Option<&ClockHold>,
    wait: Option<&ClockWait>,
) -> serde_json::Value {
    let unsynchronised = wait.map_or(serde_json::Value::Null, |wait| {
        serde_json::json!({
            "day": wait.day.to_string(),
            "day_local": wait.day.strftime("%d.%m.%Y").to_string(),
            "wall": calendar.local_rfc3339(wait.wall),
            "wall_local": calendar.local_ddmmyyyy_hhmm(wait.wall),
            "since": calendar.local_rfc3339(wait.since),
            "reason": wait.reason,
            "source": wait.source,
        })
    });
    let mut clock = match hold {
        None => serde_json::json!({"held": false}),
        Some(hold) => serde_json::json!({
            "held": true,
            "wall": calendar.local_rfc3339(hold.wall),
            "engine": calendar.local_rfc3339(hold.engine),
            "wall_at_jump": calendar.local_rfc3339(hold.wall_at_jump),
            "wall_local": calendar.local_ddmmyyyy_hhmm(hold.wall),
            "engine_local": calendar.local_ddmmyyyy_hhmm(hold.engine),
            "offset_seconds": hold.offset_seconds(),
        }),
    };
    clock["unsynchronised"] = unsynchronised;
    clock
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
    fn a_day_starts_only_once_the_flag_file_exists_or_an_admin_confirms() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let flag = dir.path().join("synchronized");
        let mut gate = DayGate::requiring(SyncSource::FlagFile(flag.clone()), Calendar::berlin());
        let (morning, noon) = (at("2026-12-02T08:00:00Z"), at("2026-12-02T11:00:00Z"));

        let wait = gate.admit(morning).err();
        assert_eq!(
            wait.as_ref().map(|w| w.day.to_string()),
            Some("2026-12-02".into())
        );
        assert!(
            wait.as_ref()
                .is_some_and(|w| w.reason.contains("synchronized")),
            "{wait:?}"
        );
        // Still waiting later: the first refusal's time is kept, the newest reading moves.
        let later = gate.admit(noon).err();
        assert_eq!(
            later.as_ref().map(|w| (w.since, w.wall)),
            Some((morning, noon))
        );
        assert_eq!(gate.waiting(), later.as_ref());

        std::fs::write(&flag, "").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(gate.admit(noon), Ok(()));
        assert_eq!(gate.waiting(), None);
        // The day runs to its end even when the flag goes ...
        std::fs::remove_file(&flag).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(gate.admit(at("2026-12-02T22:59:00Z")), Ok(()));
        // ... but the next day needs it again; an admin's word starts it too.
        assert!(gate.admit(at("2026-12-02T23:00:00Z")).is_err());
        assert!(gate.confirm(at("2026-12-02T23:01:00Z")).is_some());
        assert_eq!(gate.admit(at("2026-12-03T07:00:00Z")), Ok(()));
        assert_eq!(
            gate.confirm(at("2026-12-03T07:00:00Z")),
            None,
            "nothing waits"
        );
    }

    #[test]
    fn an_open_gate_admits_any_clock_and_the_kernel_answers() {
        let mut gate = DayGate::open(Calendar::berlin());
        assert_eq!(gate.admit(0), Ok(()));
        assert_eq!(gate.confirm(0), None);
        // The kernel's status is readable here (outside a ProtectClock=yes unit): synchronised
        // or not, but never "cannot read".
        match SyncSource::Kernel.probe() {
            SyncStatus::Synchronised { .. } => {}
            SyncStatus::Unsynchronised { reason } => {
                assert!(!reason.contains("cannot read"), "{reason}")
            }
        }
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
