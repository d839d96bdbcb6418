//! The scheduler: a `tick` at every local midnight (and at least every minute), more often
//! while a day waits for a synchronised clock.

use super::{EngineHandle, ExecuteError};
use crate::catalog::Catalog;
use crate::clock::{Clock, MINUTE, SystemClock};
use crate::domain::{Command, CommandError, CommandRequest};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Sends a `tick` at every local midnight (and at least every minute), so a service day closes
/// even when nobody uses the system; every few seconds while a day waits for a synchronised
/// clock, so it starts soon after the sync.
pub async fn scheduler(engine: EngineHandle, catalog: Arc<Catalog>, shutdown: CancellationToken) {
    let clock = SystemClock;
    let mut clock_wait = engine.clock_wait();
    loop {
        let now = clock.now();
        let today = catalog.calendar.day_of(now);
        let until_midnight = catalog.calendar.start_of_next_day(today) - now;
        let waiting = clock_wait.borrow_and_update().is_some();
        let most = if waiting { CLOCK_SYNC_POLL } else { MINUTE };
        let wait = Duration::from_millis(u64::try_from(until_midnight.clamp(1, most)).unwrap_or(1));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
            // A day that begins to wait (seen by any command) is polled from then on, not
            // after the minute already begun. While waiting, only the poll matters.
            changed = clock_wait.changed(), if !waiting => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        }
        let request = CommandRequest {
            request_id: None,
            source: "scheduler".to_string(),
            command: Command::Tick,
        };
        match engine.execute(request).await {
            // The gate logged the wait once; /admin and /healthz show it.
            Err(ExecuteError::Rejected(CommandError::ClockUnsynchronised { .. })) => {}
            Err(e) => tracing::warn!(error = %e, "scheduler tick failed"),
            Ok(_) => {}
        }
    }
}

/// How often a service day waiting for a synchronised clock asks again (ms).
pub(crate) const CLOCK_SYNC_POLL: crate::clock::Millis = 5_000;
