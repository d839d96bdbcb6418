//! The plugin: one [`EscposPrinter`] per configured printer device.
//!
//! `create` validates the options and starts one worker thread that owns the link; it does not
//! wait for the printer (it may be unplugged at start). `handle` encodes a print job (pure and
//! fast) and queues it for the worker; a job beyond [`MAX_QUEUED_JOBS`] pending ones fails at
//! once with "printer queue full". `stop` wakes the worker, which notices within about 50 ms
//! even in the middle of a read, write or connect.
//!
//! The worker:
//! - **connects** with backoff (0.25 s doubling to `reconnect_max_ms`, default 5 s). A link
//!   counts as up once it is open and, when the profile has `status`, the printer answered the
//!   status queries: then `connection {connected: true}` and one `printer_status` are reported.
//!   The first failure and every loss report `connection {connected: false, detail}`.
//! - **polls** while idle, every `status_interval_ms` (default 2000): the real-time status when
//!   the profile has it (a `printer_status` on every change, a warning log when the paper gets
//!   near its end), else only whether the link is still there. Any I/O error, end of file,
//!   timeout or invalid answer takes the link down and reconnects.
//! - **prints** a job: connect now if down ("printer not reachable: ..." if that fails); drop
//!   pending input; query the status (when supported; each answer within 500 ms) and refuse
//!   with its reason ("paper out", "cover open", "printer error", "printer offline") when not
//!   ready; write the bytes (serial: 2 s + the bytes at the baud rate; TCP, USB: 5 s; on error
//!   "link lost while printing: ..."); query again: paper out now → "paper ran out while
//!   printing", else `print_done`.
//!
//! Why about 660 lines of code in one file: the printer device's life cycle (open, status poll, job, reconnect, reprint signal) is one state machine over one link; split, its states would be spread over files that only make sense together.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use leitsystem_plugin::messages::{Paper, Role};
use leitsystem_plugin::{DeviceConfig, Driver, Host, HostMessage, LogLevel, PluginMessage};
use serde_json::{Map, Value};

use crate::encode::{self, QrMode};
use crate::link::{LINK_OPTIONS, Link, Transport};
use crate::profiles::{self, PROFILE_OPTIONS, Profile};
use crate::status::{InvalidAnswer, PrinterState, Query, check_answer};

/// Jobs waiting for the printer beyond the one printing; more fail with "printer queue full".
pub const MAX_QUEUED_JOBS: usize = 32;
/// How long the printer has to answer one status query.
pub const STATUS_TIMEOUT: Duration = Duration::from_millis(500);
/// Default pause between idle status polls.
pub const DEFAULT_STATUS_INTERVAL: Duration = Duration::from_millis(2000);
/// First pause before reconnecting; doubles up to the maximum.
pub const RECONNECT_INITIAL: Duration = Duration::from_millis(250);
/// Default longest pause between reconnect attempts.
pub const DEFAULT_RECONNECT_MAX: Duration = Duration::from_millis(5000);

/// Option names the driver itself reads (besides the link's and the profile's).
pub const DRIVER_OPTIONS: [&str; 3] = ["qr", "status_interval_ms", "reconnect_max_ms"];

/// Everything a device's options say, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The wire.
    pub transport: Transport,
    /// The printer model.
    pub profile: Profile,
    /// How QR codes are printed.
    pub qr: QrMode,
    /// Pause between idle polls.
    pub status_interval: Duration,
    /// Longest pause between reconnect attempts.
    pub reconnect_max: Duration,
}

impl Settings {
    /// Reads and checks the options; an error names the option. `qr` is `"auto"` (default:
    /// native when the profile has it), `"native"` or `"raster"`.
    pub fn from_options(options: &Value) -> Result<Settings, String> {
        let empty = Map::new();
        let options = match options {
            Value::Object(map) => map,
            Value::Null => &empty,
            other => return Err(format!("the options must be a table, not {other}")),
        };
        for key in options.keys() {
            if !LINK_OPTIONS.contains(&key.as_str())
                && !PROFILE_OPTIONS.contains(&key.as_str())
                && !DRIVER_OPTIONS.contains(&key.as_str())
            {
                let mut known: Vec<&str> = LINK_OPTIONS
                    .iter()
                    .chain(&PROFILE_OPTIONS)
                    .chain(&DRIVER_OPTIONS)
                    .copied()
                    .collect();
                known.sort_unstable();
                return Err(format!(
                    "unknown option '{key}'; known options: {}",
                    known.join(", ")
                ));
            }
        }
        let transport = Transport::from_options(options)?;
        let profile = profiles::resolve(options)?;
        let qr = match options.get("qr") {
            None => QrMode::for_profile(&profile),
            Some(Value::String(s)) if s == "auto" => QrMode::for_profile(&profile),
            Some(Value::String(s)) if s == "raster" => QrMode::Raster,
            Some(Value::String(s)) if s == "native" => {
                if !profile.native_qr {
                    return Err(format!(
                        "option 'qr' is \"native\" but the profile '{}' has no native QR codes (set native_qr = true if the printer has them)",
                        profile.name
                    ));
                }
                QrMode::Native
            }
            Some(other) => {
                return Err(format!(
                    "option 'qr' must be \"auto\", \"native\" or \"raster\", not {other}"
                ));
            }
        };
        let millis =
            |key: &str, default: Duration, range: std::ops::RangeInclusive<u64>| match options
                .get(key)
            {
                None => Ok(default),
                Some(value) => value
                    .as_u64()
                    .filter(|ms| range.contains(ms))
                    .map(Duration::from_millis)
                    .ok_or_else(|| {
                        format!(
                            "option '{key}' must be {}..={} milliseconds, not {value}",
                            range.start(),
                            range.end()
                        )
                    }),
            };
        Ok(Settings {
            transport,
            qr,
            status_interval: millis(
                "status_interval_ms",
                DEFAULT_STATUS_INTERVAL,
                50..=3_600_000,
            )?,
            reconnect_max: millis("reconnect_max_ms", DEFAULT_RECONNECT_MAX, 250..=3_600_000)?,
            profile,
        })
    }
}

/// One ESC/POS printer device.
pub struct EscposPrinter {
    id: String,
    host: Host,
    shared: Arc<Shared>,
    settings: Settings,
    worker: Option<JoinHandle<()>>,
}

struct Job {
    id: String,
    bytes: Vec<u8>,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    stopping: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    stop: Arc<AtomicBool>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Driver for EscposPrinter {
    fn create(config: DeviceConfig, host: Host) -> Result<Self, String> {
        if config.role != Role::Printer {
            return Err(format!(
                "the escpos plugin drives printers; device '{}' has role '{}'",
                config.id,
                config.role.as_str()
            ));
        }
        let settings = Settings::from_options(&config.options)?;
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            stop: Arc::new(AtomicBool::new(false)),
        });
        host.log(
            LogLevel::Info,
            format!(
                "printer {}: {} over {}, {} dots, QR {}, status {}",
                config.id,
                settings.profile.name,
                settings.transport.describe(),
                settings.profile.paper_dots,
                match settings.qr {
                    QrMode::Native => "native",
                    QrMode::Raster => "as raster image",
                },
                if settings.profile.status {
                    "queried"
                } else {
                    "not available"
                }
            ),
        );
        let worker = Worker {
            host,
            settings: settings.clone(),
            shared: shared.clone(),
            link: None,
            reported_connection: None,
            last_state: None,
            backoff: RECONNECT_INITIAL,
            next_attempt: Instant::now(),
            next_poll: Instant::now(),
        };
        let thread = host
            .spawn(&format!("escpos-{}", config.id), move || worker.run())
            .map_err(|e| format!("cannot start the printer thread: {e}"))?;
        Ok(EscposPrinter {
            id: config.id,
            host,
            shared,
            settings,
            worker: Some(thread),
        })
    }

    fn handle(&mut self, message: HostMessage) -> Result<(), String> {
        let (job, document) = match message {
            HostMessage::Print { job, document } => (job, document),
            other => {
                return Err(format!("a printer takes no '{}' messages", other.kind()));
            }
        };
        let bytes = match encode::encode(&document, &self.settings.profile, self.settings.qr) {
            Ok(bytes) => bytes,
            Err(e) => {
                self.host.emit(&PluginMessage::PrintFailed {
                    job,
                    reason: format!("the ticket cannot be printed: {e}"),
                });
                return Ok(());
            }
        };
        let mut queue = self.shared.lock();
        if queue.stopping {
            drop(queue);
            self.fail(job, "the printer device is stopping");
        } else if queue.jobs.len() >= MAX_QUEUED_JOBS {
            drop(queue);
            self.fail(job, "printer queue full");
        } else {
            queue.jobs.push_back(Job { id: job, bytes });
            drop(queue);
            self.shared.wake.notify_all();
        }
        Ok(())
    }

    fn stop(&mut self) {
        self.shared.lock().stopping = true;
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.wake.notify_all();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
        self.host
            .log(LogLevel::Info, format!("printer {} stopped", self.id));
    }
}

impl EscposPrinter {
    fn fail(&self, job: String, reason: &str) {
        self.host.emit(&PluginMessage::PrintFailed {
            job,
            reason: reason.to_string(),
        });
    }
}

/// Why a status query gave no state.
enum QueryError {
    /// Nothing came within [`STATUS_TIMEOUT`].
    NoAnswer,
    /// Something that is not a status answer came.
    Invalid(InvalidAnswer),
    /// The link failed.
    Io(io::Error),
}

impl std::fmt::Display for QueryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QueryError::NoAnswer => write!(
                f,
                "no answer to the status query within {} ms",
                STATUS_TIMEOUT.as_millis()
            ),
            QueryError::Invalid(e) => e.fmt(f),
            QueryError::Io(e) => e.fmt(f),
        }
    }
}

struct Worker {
    host: Host,
    settings: Settings,
    shared: Arc<Shared>,
    link: Option<Box<dyn Link>>,
    reported_connection: Option<bool>,
    last_state: Option<PrinterState>,
    backoff: Duration,
    next_attempt: Instant,
    next_poll: Instant,
}

impl Worker {
    fn run(mut self) {
        loop {
            let job = {
                let mut queue = self.shared.lock();
                loop {
                    if queue.stopping {
                        let left: Vec<Job> = queue.jobs.drain(..).collect();
                        drop(queue);
                        for job in left {
                            self.fail(job.id, "the printer device was stopped");
                        }
                        return;
                    }
                    if let Some(job) = queue.jobs.pop_front() {
                        break Some(job);
                    }
                    let due = if self.link.is_some() {
                        self.next_poll
                    } else {
                        self.next_attempt
                    };
                    let now = Instant::now();
                    if now >= due {
                        break None;
                    }
                    queue = self
                        .shared
                        .wake
                        .wait_timeout(queue, due - now)
                        .map(|(guard, _)| guard)
                        .unwrap_or_else(|p| p.into_inner().0);
                }
            };
            match job {
                Some(job) => self.print(job),
                None if self.link.is_some() => self.poll(),
                None => {
                    let _ = self.connect();
                }
            }
        }
    }

    fn stopping(&self) -> bool {
        self.shared.stop.load(Ordering::Relaxed)
    }

    fn fail(&self, job: String, reason: impl Into<String>) {
        // A job cut short by `stop` fails because of it, whatever the interrupted call said.
        let reason = if self.stopping() {
            "the printer device was stopped".to_string()
        } else {
            reason.into()
        };
        self.host.emit(&PluginMessage::PrintFailed { job, reason });
    }

    /// Reports the link state when it changed.
    fn report_connection(&mut self, connected: bool, detail: String) {
        if self.reported_connection == Some(connected) || self.stopping() {
            return;
        }
        self.reported_connection = Some(connected);
        self.host.log(
            if connected {
                LogLevel::Info
            } else {
                LogLevel::Warn
            },
            format!(
                "printer {}: {detail}",
                if connected {
                    "connected"
                } else {
                    "disconnected"
                }
            ),
        );
        self.host.emit(&PluginMessage::Connection {
            connected,
            detail: Some(detail),
        });
    }

    /// Reports the printer's state when it changed (or `always`), with logs for what matters.
    fn report_state(&mut self, state: PrinterState, always: bool) {
        let previous = self.last_state;
        self.last_state = Some(state);
        if previous == Some(state) && !always {
            return;
        }
        self.host.emit(&PluginMessage::PrinterStatus {
            paper: state.paper,
            cover_open: state.cover_open,
            online: state.online,
        });
        if state.paper == Paper::NearEnd && previous.map(|p| p.paper) != Some(Paper::NearEnd) {
            self.host.log(
                LogLevel::Warn,
                "the paper roll is nearly used up; replace it soon",
            );
        }
        let reason = state.failure_reason();
        if reason != previous.and_then(|p| p.failure_reason()) {
            match reason {
                Some(reason) => self
                    .host
                    .log(LogLevel::Warn, format!("printer not ready: {reason}")),
                None if previous.is_some() => self.host.log(LogLevel::Info, "printer ready again"),
                None => {}
            }
        }
    }

    /// Opens the link and, with status, reads the printer's state. On failure schedules the
    /// next attempt with backoff and returns the detail.
    fn connect(&mut self) -> Result<(), String> {
        let result = self
            .settings
            .transport
            .open(self.shared.stop.clone())
            .and_then(|link| {
                self.link = Some(link);
                if self.settings.profile.status {
                    self.query_state()
                        .map(Some)
                        .map_err(|e| format!("{}: {e}", self.settings.transport.describe()))
                } else {
                    Ok(None)
                }
            });
        match result {
            Ok(state) => {
                self.backoff = RECONNECT_INITIAL;
                self.next_poll = Instant::now() + self.settings.status_interval;
                self.report_connection(true, self.settings.transport.describe());
                match state {
                    Some(state) => self.report_state(state, true),
                    // Without status the printer is assumed ready.
                    None => self.report_state(PrinterState::ASSUMED_READY, true),
                }
                Ok(())
            }
            Err(detail) => {
                self.link = None;
                self.last_state = None;
                self.next_attempt = Instant::now() + self.backoff;
                self.backoff = (self.backoff * 2).min(self.settings.reconnect_max);
                self.report_connection(false, detail.clone());
                Err(detail)
            }
        }
    }

    /// Drops the link after a failure; reconnects after the first backoff step.
    fn link_down(&mut self, detail: String) {
        self.link = None;
        self.last_state = None;
        self.backoff = RECONNECT_INITIAL;
        self.next_attempt = Instant::now() + self.backoff;
        self.report_connection(
            false,
            format!("{}: {detail}", self.settings.transport.describe()),
        );
    }

    /// The idle check: status when supported, else whether the link is still there.
    fn poll(&mut self) {
        self.next_poll = Instant::now() + self.settings.status_interval;
        if self.settings.profile.status {
            match self.query_state() {
                Ok(state) => self.report_state(state, false),
                Err(e) => self.link_down(e.to_string()),
            }
        } else if let Some(Err(e)) = self.link.as_mut().map(|link| link.discard_input()) {
            self.link_down(e.to_string());
        }
    }

    /// Sends `DLE EOT 1, 2, 4`, one at a time, each after dropping pending input. The answer
    /// is the first valid status byte within [`STATUS_TIMEOUT`]; bytes that cannot be one
    /// (automatic status back, flow control) are skipped, and when only such bytes came the
    /// answer is invalid (a wrong baud rate, say).
    fn query_state(&mut self) -> Result<PrinterState, QueryError> {
        let Some(link) = self.link.as_mut() else {
            return Err(QueryError::Io(io::Error::new(
                io::ErrorKind::NotConnected,
                "not connected",
            )));
        };
        let mut answers = [0u8; 3];
        for (query, answer) in Query::ALL.into_iter().zip(answers.iter_mut()) {
            link.discard_input().map_err(QueryError::Io)?;
            link.write_all(&query.bytes(), STATUS_TIMEOUT)
                .map_err(QueryError::Io)?;
            let deadline = Instant::now() + STATUS_TIMEOUT;
            let mut invalid = None;
            *answer = loop {
                match link.read_byte(deadline.saturating_duration_since(Instant::now())) {
                    Ok(byte) => match check_answer(query, byte) {
                        Ok(byte) => break byte,
                        Err(e) => invalid = Some(e),
                    },
                    Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                        return Err(invalid.map_or(QueryError::NoAnswer, QueryError::Invalid));
                    }
                    Err(e) => return Err(QueryError::Io(e)),
                }
            };
        }
        PrinterState::from_answers(answers[0], answers[1], answers[2]).map_err(QueryError::Invalid)
    }

    /// Reads (and drops) the printer's answers to `DLE EOT n` sequences that happened to be
    /// inside the job's data (image bits, a QR payload): a real printer answers those too, and
    /// one arriving late would be taken for the answer to the next query. Bounded by
    /// [`STATUS_TIMEOUT`]; a printer that stays silent is fine.
    fn consume_stray_answers(&mut self, bytes: &[u8]) -> io::Result<()> {
        let strays = stray_queries(bytes);
        let Some(link) = self.link.as_mut() else {
            return Ok(());
        };
        let deadline = Instant::now() + STATUS_TIMEOUT;
        for _ in 0..strays {
            match link.read_byte(deadline.saturating_duration_since(Instant::now())) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::TimedOut => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn print(&mut self, job: Job) {
        let Job { id, bytes } = job;
        if self.link.is_none() {
            if let Err(detail) = self.connect() {
                return self.fail(id, format!("printer not reachable: {detail}"));
            }
        }
        if self.settings.profile.status {
            let state = match self.query_state() {
                Ok(state) => state,
                // A link that broke while idle (a network printer closing an idle
                // connection, say) gets one fresh try before the job fails.
                Err(QueryError::Io(e)) => {
                    self.link_down(e.to_string());
                    if let Err(detail) = self.connect() {
                        return self.fail(id, format!("printer not reachable: {detail}"));
                    }
                    match self.last_state {
                        Some(state) => state,
                        None => return self.fail(id, "printer not reachable"),
                    }
                }
                Err(e) => {
                    let reason = e.to_string();
                    self.link_down(reason.clone());
                    return self.fail(id, reason);
                }
            };
            self.report_state(state, false);
            if let Some(reason) = state.failure_reason() {
                return self.fail(id, reason);
            }
        } else if let Some(Err(e)) = self.link.as_mut().map(|link| link.discard_input()) {
            self.link_down(e.to_string());
            if let Err(detail) = self.connect() {
                return self.fail(id, format!("printer not reachable: {detail}"));
            }
        }
        let timeout = self.settings.transport.job_write_timeout(bytes.len());
        let written = match self.link.as_mut() {
            Some(link) => {
                let started = Instant::now();
                link.write_all(&bytes, timeout)
                    .and_then(|()| link.drain(timeout.saturating_sub(started.elapsed())))
            }
            None => Err(io::Error::new(io::ErrorKind::NotConnected, "not connected")),
        };
        if let Err(e) = written {
            let reason = format!("link lost while printing: {e}");
            self.link_down(e.to_string());
            return self.fail(id, reason);
        }
        self.next_poll = Instant::now() + self.settings.status_interval;
        if !self.settings.profile.status {
            return self.done(id);
        }
        if let Err(e) = self.consume_stray_answers(&bytes) {
            let reason = format!("link lost while printing: {e}");
            self.link_down(e.to_string());
            return self.fail(id, reason);
        }
        match self.query_state() {
            Ok(state) => {
                self.report_state(state, false);
                if state.paper == Paper::Out {
                    self.fail(id, "paper ran out while printing");
                } else if let Some(reason) = state.failure_reason() {
                    self.fail(id, reason);
                } else {
                    self.done(id);
                }
            }
            Err(QueryError::Io(e)) => {
                let reason = format!("link lost while printing: {e}");
                self.link_down(e.to_string());
                self.fail(id, reason);
            }
            Err(e) => {
                let reason = e.to_string();
                self.link_down(reason.clone());
                self.fail(id, reason);
            }
        }
    }

    fn done(&self, job: String) {
        self.host.emit(&PluginMessage::PrintDone { job });
    }
}

/// How many real-time status requests (`DLE EOT n`, n = 1 to 4) `bytes` holds by accident.
/// Raster images sent in quadruple mode never do (their bits come in pairs, and neither 0x10
/// nor 0x04 is made of pairs); text never does (no control characters).
pub fn stray_queries(bytes: &[u8]) -> usize {
    bytes
        .windows(3)
        .filter(|w| w[0] == 0x10 && w[1] == 0x04 && (1..=4).contains(&w[2]))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stray_status_requests_are_counted() {
        assert_eq!(
            stray_queries(b"\x10\x04\x01ab\x10\x04\x04\x10\x04\x09\x10\x04"),
            2
        );
        let profile = profiles::lookup("epson-tm-t20").expect("built-in");
        let sample = encode::sample_document();
        for qr in [QrMode::Native, QrMode::Raster] {
            let bytes = encode::encode(&sample, &profile, qr).expect("encodes");
            assert_eq!(stray_queries(&bytes), 0, "{qr:?}");
        }
    }

    #[test]
    fn settings_default_and_validate() {
        let settings =
            Settings::from_options(&json!({"transport": "tcp", "host": "printer.local"}))
                .expect("valid");
        assert_eq!(settings.qr, QrMode::Native);
        assert_eq!(settings.status_interval, DEFAULT_STATUS_INTERVAL);
        assert_eq!(settings.reconnect_max, DEFAULT_RECONNECT_MAX);
        assert_eq!(settings.profile.name, "Epson TM-T20 (80 mm)");
        let raster = Settings::from_options(
            &json!({"transport": "usb", "profile": "generic-80mm", "qr": "auto"}),
        )
        .expect("valid");
        assert_eq!(raster.qr, QrMode::Raster);
        for (options, expected) in [
            (
                json!({"transport": "usb", "colour": "red"}),
                "unknown option 'colour'; known options: baud, code_page,",
            ),
            (
                json!({"transport": "usb", "profile": "generic-80mm", "qr": "native"}),
                "option 'qr' is \"native\"",
            ),
            (
                json!({"transport": "usb", "qr": "svg"}),
                "option 'qr' must be",
            ),
            (
                json!({"transport": "usb", "status_interval_ms": 0}),
                "option 'status_interval_ms' must be 50..=",
            ),
            (
                json!({"transport": "usb", "reconnect_max_ms": "soon"}),
                "option 'reconnect_max_ms'",
            ),
            (
                json!({"transport": "usb", "profile": "tm-x"}),
                "known profiles: epson-tm-t20,",
            ),
            (json!([1]), "the options must be a table"),
        ] {
            let err = Settings::from_options(&options).expect_err("refused");
            assert!(err.contains(expected), "{options}: {err}");
        }
    }
}
