//! The plugin: one [`HdmiDisplay`] per configured wall display.
//!
//! `create` checks the options and starts one supervisor thread ([`Host::spawn`]); it does not
//! wait for the browser. The supervisor:
//! - **starts** the kiosk command in its own process group and reports
//!   `connection {connected: true, detail: "kiosk running, pid N"}`;
//! - **watches** it (every 20 ms, or at once when output arrives) and passes its stdout and
//!   stderr to the daemon's log as `log` lines (at most [`MAX_LINE`](crate::process::MAX_LINE)
//!   bytes each and [`LOG_BUDGET`] lines per [`LOG_WINDOW`]; the rest is counted and reported);
//! - **restarts** it when it exits or dies: whatever else is left of its process group is
//!   killed, `connection {connected: false, detail: "kiosk exited with status X, restart in Y
//!   ms"}` is reported, and after the pause it starts again. The pause starts at
//!   `restart_min_ms` and doubles after every run shorter than `healthy_after_ms`, up to
//!   `restart_max_ms`; a run that lasted `healthy_after_ms` starts the pauses over. A command
//!   that cannot be started at all (`cannot start '<program>': <error>, retry in Y ms`) is
//!   retried the same way.
//!
//! `stop` (the ABI's `destroy`) wakes the supervisor, which sends SIGTERM to the whole group,
//! waits up to `stop_timeout_ms` for the kiosk to exit, then SIGKILLs the group, reaps the
//! kiosk and returns; `stop` joins it. Nothing of the kiosk is left running.
//!
//! `display` messages: the browser shows the daemon's `/display` page and gets its updates
//! from the daemon itself, so the driver draws nothing. It only remembers a summary of the
//! latest state (number of calls, newest call) for its health details and logs.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use leitsystem_plugin::messages::Role;
use leitsystem_plugin::{DeviceConfig, Driver, Host, HostMessage, LogLevel, PluginMessage};
use serde_json::Value;

use crate::process::{Kiosk, OutputLines, Stream, describe_status};
use crate::settings::Settings;

/// How often the supervisor looks at the kiosk (and at a stop request) when nothing happens.
pub const POLL: Duration = Duration::from_millis(20);
/// Lines of kiosk output logged per [`LOG_WINDOW`]; more are counted and reported as one line.
pub const LOG_BUDGET: u32 = 100;
/// The window of [`LOG_BUDGET`].
pub const LOG_WINDOW: Duration = Duration::from_secs(10);
/// How long the output of an exited kiosk is still read (what it wrote last) before the
/// pipes are given up (a process that left the group may hold them open).
const DRAIN: Duration = Duration::from_millis(200);

/// What the latest display state said; the driver keeps nothing else of it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DisplaySummary {
    /// Number of calls in the state.
    pub calls: usize,
    /// The newest call's ticket number, if any.
    pub newest: Option<String>,
}

impl DisplaySummary {
    /// Summarises a display state (`{"calls": [{"ticket": "A-001", ...}, ...]}`, newest
    /// first); anything else in it is ignored.
    pub fn of(state: &Value) -> DisplaySummary {
        let calls = state.get("calls").and_then(Value::as_array);
        DisplaySummary {
            calls: calls.map_or(0, Vec::len),
            newest: calls
                .and_then(|c| c.first())
                .and_then(|c| c.get("ticket"))
                .and_then(Value::as_str)
                .map(str::to_string),
        }
    }

    fn describe(&self) -> String {
        match &self.newest {
            Some(newest) => format!("display state: {} calls, newest {newest}", self.calls),
            None => format!("display state: {} calls", self.calls),
        }
    }
}

/// One wall display: the supervisor of its kiosk browser.
pub struct HdmiDisplay {
    id: String,
    host: Host,
    shared: Arc<Shared>,
    worker: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct State {
    stopping: bool,
    display: Option<DisplaySummary>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stopping(&self) -> bool {
        self.lock().stopping
    }

    /// Waits up to `timeout` or until stopped; true when stopped.
    fn wait(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        loop {
            if state.stopping {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            state = self
                .wake
                .wait_timeout(state, deadline - now)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    fn display(&self) -> Option<DisplaySummary> {
        self.lock().display.clone()
    }
}

impl Driver for HdmiDisplay {
    fn create(config: DeviceConfig, host: Host) -> Result<Self, String> {
        if config.role != Role::Display {
            return Err(format!(
                "the hdmi-display plugin drives wall displays; device '{}' has role '{}'",
                config.id,
                config.role.as_str()
            ));
        }
        let settings = Settings::from_options(&config.options)?;
        host.log(
            LogLevel::Info,
            format!(
                "display {}: kiosk command {:?}, restart pause {}..{} ms, output {}",
                config.id,
                settings.command,
                settings.restart_min.as_millis(),
                settings.restart_max.as_millis(),
                if settings.log_output {
                    "logged"
                } else {
                    "discarded"
                }
            ),
        );
        let shared = Arc::new(Shared::default());
        let supervisor = Supervisor {
            host,
            backoff: settings.restart_min,
            settings,
            shared: shared.clone(),
            budget: LogBudget::new(),
        };
        let worker = host
            .spawn(&format!("hdmi-{}", config.id), move || supervisor.run())
            .map_err(|e| format!("cannot start the supervisor thread: {e}"))?;
        Ok(HdmiDisplay {
            id: config.id,
            host,
            shared,
            worker: Some(worker),
        })
    }

    /// A display state is remembered (as a [`DisplaySummary`]) and otherwise ignored: the
    /// kiosk browser shows the daemon's `/display` page, which gets its updates from the
    /// daemon directly.
    fn handle(&mut self, message: HostMessage) -> Result<(), String> {
        match message {
            HostMessage::Display { state } => {
                self.shared.lock().display = Some(DisplaySummary::of(&state));
                Ok(())
            }
            other => Err(format!("a display takes no '{}' messages", other.kind())),
        }
    }

    fn stop(&mut self) {
        self.shared.lock().stopping = true;
        self.shared.wake.notify_all();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
        self.host
            .log(LogLevel::Info, format!("display {} stopped", self.id));
    }
}

/// How one run of the kiosk ended.
enum RunEnd {
    /// It exited by itself (or was killed by someone else).
    Exited(String),
    /// The device is stopping; the kiosk was terminated.
    Stopped,
}

/// Limits how many lines of kiosk output reach the log.
struct LogBudget {
    window_start: Instant,
    lines: u32,
    suppressed: u64,
}

impl LogBudget {
    fn new() -> LogBudget {
        LogBudget {
            window_start: Instant::now(),
            lines: 0,
            suppressed: 0,
        }
    }

    /// Starts a new window when the current one is over; reports what it suppressed.
    fn roll(&mut self, host: &Host) {
        if self.window_start.elapsed() >= LOG_WINDOW {
            self.flush(host);
            self.window_start = Instant::now();
            self.lines = 0;
        }
    }

    fn flush(&mut self, host: &Host) {
        if self.suppressed > 0 {
            host.log(
                LogLevel::Warn,
                format!(
                    "{} lines of kiosk output not logged (more than {LOG_BUDGET} in {} s)",
                    self.suppressed,
                    LOG_WINDOW.as_secs()
                ),
            );
            self.suppressed = 0;
        }
    }

    fn line(&mut self, host: &Host, stream: Stream, text: String) {
        self.roll(host);
        if self.lines >= LOG_BUDGET {
            self.suppressed += 1;
            return;
        }
        self.lines += 1;
        host.log(LogLevel::Info, format!("kiosk {}: {text}", stream.as_str()));
    }
}

struct Supervisor {
    host: Host,
    settings: Settings,
    shared: Arc<Shared>,
    /// The pause before the next restart.
    backoff: Duration,
    budget: LogBudget,
}

impl Supervisor {
    fn run(mut self) {
        while !self.shared.stopping() {
            let started = Instant::now();
            let problem = match Kiosk::start(&self.settings) {
                Ok((kiosk, output)) => match self.supervise(kiosk, output) {
                    RunEnd::Stopped => break,
                    RunEnd::Exited(how) => {
                        if started.elapsed() >= self.settings.healthy_after {
                            self.backoff = self.settings.restart_min;
                        }
                        format!("kiosk {how}, restart in")
                    }
                },
                Err(e) => format!("cannot start '{}': {e}, retry in", self.settings.program()),
            };
            let pause = self.next_pause();
            let detail = format!("{problem} {} ms", pause.as_millis());
            self.report(false, detail);
            if self.shared.wait(pause) {
                break;
            }
        }
        self.budget.flush(&self.host);
    }

    /// The pause before the next restart; doubles the one after it, up to the maximum.
    fn next_pause(&mut self) -> Duration {
        let pause = self.backoff;
        self.backoff = (self.backoff * 2).min(self.settings.restart_max);
        pause
    }

    fn report(&self, connected: bool, detail: String) {
        if self.shared.stopping() {
            return;
        }
        self.host.log(
            if connected {
                LogLevel::Info
            } else {
                LogLevel::Warn
            },
            match self.shared.display() {
                Some(display) => format!("{detail} ({})", display.describe()),
                None => detail.clone(),
            },
        );
        self.host.emit(&PluginMessage::Connection {
            connected,
            detail: Some(detail),
        });
    }

    /// Watches one run until the kiosk exits or the device stops.
    fn supervise(&mut self, mut kiosk: Kiosk, mut output: OutputLines) -> RunEnd {
        let pid = kiosk.pid();
        self.report(true, format!("kiosk running, pid {pid}"));
        loop {
            if self.shared.stopping() {
                self.terminate(&mut kiosk, &mut output);
                return RunEnd::Stopped;
            }
            self.wait_output(&mut output, POLL);
            if kiosk.has_exited() {
                // The leader is a zombie until reaped: its group id is still ours to kill what
                // it left behind.
                let status = kiosk.reap();
                self.drain(&mut output);
                return RunEnd::Exited(describe_status(status));
            }
        }
    }

    /// SIGTERM to the group, up to `stop_timeout` for the kiosk to exit, then SIGKILL.
    fn terminate(&mut self, kiosk: &mut Kiosk, output: &mut OutputLines) {
        let pid = kiosk.pid();
        kiosk.signal_group(libc::SIGTERM);
        let deadline = Instant::now() + self.settings.stop_timeout;
        while !kiosk.has_exited() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.host.log(
                    LogLevel::Warn,
                    format!(
                        "kiosk (pid {pid}) did not exit within {} ms of SIGTERM; killing it",
                        self.settings.stop_timeout.as_millis()
                    ),
                );
                break;
            }
            self.pump_or_sleep(output, left.min(POLL));
        }
        let status = kiosk.reap();
        self.drain(output);
        self.host.log(
            LogLevel::Info,
            format!("kiosk (pid {pid}) stopped: {}", describe_status(status)),
        );
    }

    /// Up to `timeout` for output (logged) or a stop request.
    fn wait_output(&mut self, output: &mut OutputLines, timeout: Duration) {
        if output.open() {
            let (host, budget) = (self.host, &mut self.budget);
            output.pump(timeout, |stream, line| budget.line(&host, stream, line));
            self.budget.roll(&self.host);
        } else {
            self.shared.wait(timeout);
        }
    }

    /// Like [`Supervisor::wait_output`], but sleeps even while stopping.
    fn pump_or_sleep(&mut self, output: &mut OutputLines, timeout: Duration) {
        if output.open() {
            let (host, budget) = (self.host, &mut self.budget);
            output.pump(timeout, |stream, line| budget.line(&host, stream, line));
        } else {
            std::thread::sleep(timeout);
        }
    }

    /// Reads what the exited kiosk still wrote, until end of file or [`DRAIN`].
    fn drain(&mut self, output: &mut OutputLines) {
        let deadline = Instant::now() + DRAIN;
        while output.open() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let (host, budget) = (self.host, &mut self.budget);
            output.pump(left.min(POLL), |stream, line| {
                budget.line(&host, stream, line)
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn display_states_are_summarised() {
        let state = json!({"calls": [
            {"ticket": "B-007", "desk": "3", "desk_label": "Platz 3", "at": 1, "recall": false},
            {"ticket": "A-001", "desk": "1", "desk_label": "Platz 1", "at": 0, "recall": false},
        ]});
        assert_eq!(
            DisplaySummary::of(&state),
            DisplaySummary {
                calls: 2,
                newest: Some("B-007".into())
            }
        );
        assert_eq!(
            DisplaySummary::of(&state).describe(),
            "display state: 2 calls, newest B-007"
        );
        assert_eq!(DisplaySummary::of(&json!({})), DisplaySummary::default());
        assert_eq!(
            DisplaySummary::of(&json!("odd")).describe(),
            "display state: 0 calls"
        );
    }
}
