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
    let answer = if state < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok((state, timex.status))
    };
    interpret_adjtimex(answer)
}

/// What `adjtimex`'s answer means: the clock state it returned with the `status` bits it
/// filled in, or why the call failed.
#[cfg(target_os = "linux")]
fn interpret_adjtimex(answer: std::io::Result<(libc::c_int, libc::c_int)>) -> SyncStatus {
    let (state, status) = match answer {
        Ok(answer) => answer,
        Err(error) => {
            return SyncStatus::Unsynchronised {
                reason: format!(
                    "cannot read the kernel's clock status (adjtimex: {error}); a unit with \
                     ProtectClock=yes forbids it: use a flag file such as {TIMESYNCD_FLAG_FILE}"
                ),
            };
        }
    };
    if state == libc::TIME_ERROR || status & libc::STA_UNSYNC != 0 {
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

    #[test]
    fn a_flag_file_that_cannot_be_read_is_told_apart_from_one_not_yet_written() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let parent = dir.path().join("timesync");
        let flag = parent.join("synchronized");
        let source = SyncSource::FlagFile(flag.clone());
        assert_eq!(source.describe(), flag.display().to_string());
        assert_eq!(SyncSource::Kernel.describe(), "kernel");

        let mut gate = DayGate::requiring(source.clone(), Calendar::berlin());
        let (morning, noon) = (at("2026-12-02T08:00:00Z"), at("2026-12-02T11:00:00Z"));
        let missing = gate.admit(morning).err();
        let expected_missing = format!(
            "{} does not exist: the clock was not synchronised since boot",
            flag.display()
        );
        assert_eq!(
            missing.as_ref().map(|w| (&w.reason, &w.source)),
            Some((&expected_missing, &flag.display().to_string()))
        );

        // The folder is a file now (ENOTDIR): not "missing" but unreadable, and the wait
        // says the new reason from the time it changed.
        std::fs::write(&parent, "").unwrap_or_else(|e| panic!("{e}"));
        match source.probe() {
            SyncStatus::Unsynchronised { reason } => assert!(
                reason.starts_with(&format!("cannot read {}: ", flag.display())),
                "{reason}"
            ),
            other => panic!("an unreadable flag file counted as {other:?}"),
        }
        let unreadable = gate.admit(noon).err();
        assert_eq!(
            unreadable
                .as_ref()
                .map(|w| (w.since, w.reason.starts_with("cannot read"))),
            Some((noon, true)),
            "{unreadable:?}"
        );
    }

    #[test]
    fn a_wait_carried_into_the_next_day_is_that_day_s_wait() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let source = SyncSource::FlagFile(dir.path().join("synchronized"));
        let mut gate = DayGate::requiring(source, Calendar::berlin());
        assert!(gate.admit(at("2026-12-02T08:00:00Z")).is_err());
        let next_day = at("2026-12-02T23:30:00Z"); // 00:30 in Berlin
        let wait = gate.admit(next_day).err();
        assert_eq!(
            wait.as_ref().map(|w| (w.day.to_string(), w.since, w.wall)),
            Some(("2026-12-03".to_string(), next_day, next_day))
        );
    }

    #[test]
    fn the_kernel_s_answer_is_read_from_its_state_and_status_bits() {
        let synchronised = SyncStatus::Synchronised { last_sync: None };
        let unsynchronised = |status: SyncStatus| match status {
            SyncStatus::Unsynchronised { reason } => reason,
            SyncStatus::Synchronised { .. } => String::from("synchronised"),
        };
        assert_eq!(interpret_adjtimex(Ok((libc::TIME_OK, 0))), synchronised);
        // PLL mode and other bits alone do not make a clock unsynchronised.
        assert_eq!(
            interpret_adjtimex(Ok((libc::TIME_OK, libc::STA_PLL | libc::STA_NANO))),
            synchronised
        );
        assert_eq!(
            interpret_adjtimex(Ok((libc::TIME_INS, libc::STA_PLL))),
            synchronised
        );
        for (state, status) in [
            (libc::TIME_ERROR, 0),
            (libc::TIME_OK, libc::STA_UNSYNC),
            (libc::TIME_OK, libc::STA_UNSYNC | libc::STA_PLL),
        ] {
            assert!(
                unsynchronised(interpret_adjtimex(Ok((state, status))))
                    .starts_with("the kernel reports the clock as not synchronised"),
                "state {state}, status {status:#x}"
            );
        }
        let refused = interpret_adjtimex(Err(std::io::Error::from_raw_os_error(libc::EPERM)));
        assert!(
            unsynchronised(refused).contains("cannot read the kernel's clock status"),
            "a refused adjtimex must say so"
        );
    }

    #[test]
    fn the_clock_as_pages_show_it() {
        let calendar = Calendar::berlin();
        assert_eq!(
            clock_json(&calendar, None, None),
            serde_json::json!({"held": false, "unsynchronised": null})
        );
        let hold = ClockHold {
            wall_at_jump: at("2026-12-02T09:00:00Z"),
            engine_at_jump: at("2026-12-02T08:00:00Z"),
            wall: at("2026-12-02T09:30:00Z"),
            engine: at("2026-12-02T08:30:00Z"),
        };
        let wait = ClockWait {
            day: "2026-12-02".parse().unwrap_or_else(|e| panic!("{e}")),
            since: at("2026-12-02T07:00:00Z"),
            wall: at("2026-12-02T07:05:00Z"),
            reason: "no sync".into(),
            source: "kernel".into(),
        };
        assert_eq!(
            clock_json(&calendar, Some(&hold), Some(&wait)),
            serde_json::json!({
                "held": true,
                "wall": "2026-12-02T10:30:00+01:00",
                "engine": "2026-12-02T09:30:00+01:00",
                "wall_at_jump": "2026-12-02T10:00:00+01:00",
                "wall_local": "02.12.2026 10:30",
                "engine_local": "02.12.2026 09:30",
                "offset_seconds": 3600,
                "unsynchronised": {
                    "day": "2026-12-02",
                    "day_local": "02.12.2026",
                    "wall": "2026-12-02T08:05:00+01:00",
                    "wall_local": "02.12.2026 08:05",
                    "since": "2026-12-02T08:00:00+01:00",
                    "reason": "no sync",
                    "source": "kernel",
                },
            })
        );
    }
}
