//! Talking to systemd (`Type=notify`): readiness, a status line a person can read, the
//! watchdog, and stopping.
//!
//! Everything here is a no-op when the daemon is not started by a service manager
//! (`NOTIFY_SOCKET` unset), so the demo and the tests run it unchanged.
//!
//! The watchdog is fed only while the engine answers: every third of `WatchdogSec` a ping goes
//! through the engine's queue (behind every command and query already waiting there) and
//! `WATCHDOG=1` is sent only when the engine thread answered it. A hung engine (a store that
//! blocks, a deadlock) therefore stops the pings and systemd restarts the service; the async
//! runtime alone being alive is not enough.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

use crate::daemon::EngineHandle;

/// How often the status line is refreshed when no watchdog is configured.
const STATUS_INTERVAL: Duration = Duration::from_secs(10);

/// Whether a service manager listens (`NOTIFY_SOCKET` is set).
pub fn enabled() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some_and(|v| !v.is_empty())
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "cannot notify the service manager");
    }
}

/// `STATUS=`: what the daemon is doing, in words (shown by `systemctl status`).
pub fn status(text: &str) {
    // One line: the protocol separates assignments by newlines.
    let line = text.replace('\n', " ");
    send(&[NotifyState::Status(&line)]);
}

/// `READY=1` with a status line: start-up is finished.
pub fn ready(text: &str) {
    let line = text.replace('\n', " ");
    send(&[NotifyState::Ready, NotifyState::Status(&line)]);
}

/// `STOPPING=1` with a status line: shutdown has begun.
pub fn stopping(text: &str) {
    let line = text.replace('\n', " ");
    send(&[NotifyState::Stopping, NotifyState::Status(&line)]);
}

/// The watchdog interval systemd asked for (`WATCHDOG_USEC`, for this process), if any.
pub fn watchdog_timeout() -> Option<Duration> {
    sd_notify::watchdog_enabled().filter(|d| !d.is_zero())
}

/// Feeds the watchdog (if systemd asked for one) and keeps the status line current, until
/// `stop` fires. Started after `READY=1`.
pub async fn heartbeat(engine: EngineHandle, summary: String, stop: CancellationToken) {
    if !enabled() {
        return;
    }
    let watchdog = watchdog_timeout();
    // A third of WatchdogSec, as sd_watchdog_enabled(3) recommends: two pings may be late.
    let interval = watchdog.map_or(STATUS_INTERVAL, |t| (t / 3).max(Duration::from_millis(1)));
    if let Some(timeout) = watchdog {
        tracing::info!(
            timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            "systemd watchdog: pinging while the engine answers"
        );
    }
    let mut last_status = String::new();
    let mut unanswered = false;
    loop {
        let started = tokio::time::Instant::now();
        let answered = tokio::select! {
            _ = stop.cancelled() => return,
            answer = tokio::time::timeout(interval, engine.queue_view()) => answer,
        };
        match answered {
            Ok(Ok(queues)) => {
                if watchdog.is_some() {
                    send(&[NotifyState::Watchdog]);
                }
                if unanswered {
                    tracing::info!("the engine answers again");
                    unanswered = false;
                }
                let waiting: u32 = queues.waiting.values().sum();
                let clock_wait = engine.clock_wait().borrow().clone();
                let line = match clock_wait {
                    Some(wait) => format!(
                        "Waiting for a synchronised clock: day {} not started ({}); confirm \
                         the time on /admin or with `leitsystemd ctl confirm-clock`",
                        wait.day, wait.reason
                    ),
                    None => format!(
                        "Running: {waiting} waiting, {} events; {summary}",
                        queues.last_seq
                    ),
                };
                if line != last_status {
                    status(&line);
                    last_status = line;
                }
            }
            Ok(Err(_)) => {
                // The engine has stopped (shutdown or a fatal store error): no more pings.
                return;
            }
            Err(_) => {
                if !unanswered {
                    tracing::error!(
                        waited_ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
                        "the engine does not answer; the watchdog is not fed"
                    );
                    unanswered = true;
                    status("Engine not answering: the watchdog is not fed");
                    last_status.clear();
                }
            }
        }
        let rest = interval.saturating_sub(started.elapsed());
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(rest) => {}
        }
    }
}
