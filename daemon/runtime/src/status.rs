//! The boards the edges publish their state on and others read: device health (written by
//! the device host, read by the control socket, the web and the API) and the sync's state
//! (written by the sync, read by the control socket and the web). Plain data behind a lock, so
//! no edge needs to import another to show its state.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// A plugin call running longer than this marks its device [`DeviceState::Stuck`].
pub const STUCK_AFTER: std::time::Duration = std::time::Duration::from_secs(10);

/// Where a device is.
/// Where a device is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceState {
    /// Being created.
    Starting,
    /// Created and working.
    Running,
    /// Failed; restarting after a backoff.
    Failed,
    /// The plugin could not be loaded; not retried until the daemon restarts.
    NotLoaded,
    /// Stopped at shutdown.
    Stopped,
    /// A call into the plugin has not returned for [`STUCK_AFTER`]: the device gets no
    /// messages meanwhile (they queue, then are dropped), and a stop does not wait for it.
    Stuck,
}

/// Health of one device, for the admin, the web and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceHealth {
    /// Device id.
    pub id: String,
    /// Role.
    pub role: String,
    /// Plugin file.
    pub plugin_file: String,
    /// Plugin name and version, once loaded.
    pub plugin: Option<String>,
    /// State.
    pub state: DeviceState,
    /// Whether the device reports a connection (scanner client, printer link).
    pub connected: Option<bool>,
    /// Printer paper level: `ok`, `near_end` (warn the admin) or `out`.
    pub paper: Option<String>,
    /// Printer cover open.
    pub cover_open: Option<bool>,
    /// Tickets printed since the daemon started.
    pub printed: u64,
    /// Print jobs that failed since the daemon started.
    pub print_failures: u64,
    /// Last error.
    pub last_error: Option<String>,
    /// Restarts since the daemon started.
    pub restarts: u32,
    /// Messages dropped because the host's queue was full.
    pub dropped_messages: u64,
}

/// Device health by device id, shared with the control socket (and later the web).
pub type DeviceRegistry = Arc<Mutex<BTreeMap<String, DeviceHealth>>>;

/// Counters and connection state of the sync, for `ctl sync` (and later `/metrics`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncState {
    /// `[mqtt]` is configured.
    pub enabled: bool,
    /// Connected to the broker now.
    pub connected: bool,
    /// The last connection or protocol error.
    pub last_error: Option<String>,
    /// ConnAcks received since start.
    pub connections: u64,
    /// Inbound publishes received.
    pub received: u64,
    /// Booking changes stored (a newer version).
    pub bookings_applied: u64,
    /// Booking changes ignored (the stored version is the same or newer).
    pub bookings_ignored: u64,
    /// Bookings this appliance cannot take (e.g. an unknown service, a desk that does not
    /// serve it, a field outside the contract), stored as refused so their day still matches;
    /// plus the few the engine could not store at all (an empty id, a slot before today).
    pub bookings_refused: u64,
    /// Payloads rejected as malformed or violating the contract (acked and dropped).
    pub malformed: u64,
    /// Retained snapshots cleared by the website (empty payload).
    pub cleared: u64,
    /// Of those, snapshots of today or a later day: not a deletion (bookings go only by
    /// their tombstones), so their bookings stay; logged as a website error.
    #[serde(default)]
    pub cleared_upcoming: u64,
    /// Day count/digest mismatches found.
    pub gaps_detected: u64,
    /// Mismatched days that match again.
    pub gaps_repaired: u64,
    /// Day snapshots re-fetched by re-subscribing.
    pub refetches: u64,
    /// Days that currently do not match the website.
    pub mismatched_days: Vec<String>,
    /// Events the broker acknowledged since start.
    pub events_published: u64,
    /// Bookings wait unacknowledged at the broker: the service day has not started for an
    /// unsynchronised clock ([`crate::clock::DayGate`]).
    #[serde(default)]
    pub waiting_for_clock: bool,
    /// Highest seq acknowledged with everything before it (persisted).
    pub outbox_cursor: u64,
    /// Events in the log not yet acknowledged.
    pub outbox_backlog: u64,
}

/// Shared view of the sync's state.
#[derive(Debug, Clone, Default)]
pub struct SyncStatus {
    inner: Arc<Mutex<SyncState>>,
}

impl SyncStatus {
    /// A status for a daemon without `[mqtt]`.
    pub fn disabled() -> Self {
        Self::default()
    }

    /// A copy of the current state.
    pub fn snapshot(&self) -> SyncState {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SyncState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes the state (the sync edge, which alone writes it).
    pub fn update(&self, f: impl FnOnce(&mut SyncState)) {
        f(&mut self.lock());
    }
}

/// One day's count and digest as `ctl sync` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayView {
    /// Bookings of the day (any status).
    pub count: u64,
    /// Digest (contract v1).
    pub digest: String,
}

/// What `ctl sync` answers: the state plus the appliance's own per-day counts and digests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncView {
    /// Connection state and counters.
    #[serde(flatten)]
    pub state: SyncState,
    /// Per local day (`YYYY-MM-DD`).
    pub days: BTreeMap<String, DayView>,
}
