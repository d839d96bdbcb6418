//! The daemon's clock: core's pure time ([`leitsystem_core::clock`], re-exported here, so
//! `crate::clock::Calendar` and friends read as before) plus what reads the system: where the
//! daemon learns that the clock is synchronised ([`SyncSource`]), and the gate that keeps a
//! service day closed until it is ([`DayGate`]).

pub use leitsystem_core::clock::*;

use jiff::Timestamp;
use jiff::civil::Date;

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

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Millis {
        parse_instant(text).unwrap_or_else(|e| panic!("bad instant {text}: {e}"))
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
}
