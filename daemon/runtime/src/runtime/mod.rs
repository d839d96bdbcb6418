//! The runtime every edge talks to: the engine thread, its handle ([`EngineHandle`]), the
//! event feed ([`EventFeed`]) and the scheduler.
//!
//! The engine runs on its own OS thread and owns the store: it takes the commands queued for
//! it (up to [`GROUP_COMMIT_MAX`] at a time), executes them in order, writes everything they
//! changed in one atomic, fsynced commit and only then answers each caller. One fsync thus
//! covers a burst of commands (group commit), and no answer goes out before its write is
//! durable.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jiff::civil::Date;
use tokio::sync::{mpsc, oneshot};

use crate::clock::ClockWait;
use crate::config::Config;
use crate::domain::{CommandError, CommandRequest, EventRecord};
use crate::engine::Executed;

mod feed;
pub use feed::EventFeed;
mod engine_thread;
pub use engine_thread::{QueueView, open_engine, spawn_engine, store_options, verify};
mod scheduler;
pub use scheduler::scheduler;

/// Most commands written by one commit.
pub const GROUP_COMMIT_MAX: usize = 256;
/// Capacity of the engine's command queue.
pub const QUEUE_CAPACITY: usize = 1024;
/// How often the engine refreshes the store's witness of committed events.
pub const WITNESS_INTERVAL: Duration = Duration::from_secs(30);
/// How long shutdown waits for tasks to finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Why a command got no outcome.
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError {
    /// The engine refused it; nothing changed.
    #[error(transparent)]
    Rejected(#[from] CommandError),
    /// Storing failed; whether it happened is unknown until the daemon restarted (read the
    /// state again then).
    #[error("the store failed: {0}")]
    Storage(String),
    /// The daemon is shutting down.
    #[error("the daemon is shutting down")]
    ShuttingDown,
}

impl ExecuteError {
    /// Machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ExecuteError::Rejected(e) => e.code(),
            ExecuteError::Storage(_) => "storage",
            ExecuteError::ShuttingDown => "shutting_down",
        }
    }
}

/// The outcome of one command.
pub type ExecuteResult = Result<Executed, ExecuteError>;

pub(crate) enum EngineMessage {
    Execute {
        request: CommandRequest,
        reply: oneshot::Sender<ExecuteResult>,
    },
    ExecuteMany {
        requests: Vec<CommandRequest>,
        reply: oneshot::Sender<Vec<ExecuteResult>>,
    },
    State {
        reply: oneshot::Sender<StateView>,
    },
    Queues {
        reply: oneshot::Sender<QueueView>,
    },
    Verify {
        reply: oneshot::Sender<Result<Vec<String>, String>>,
    },
    Backup {
        reply: oneshot::Sender<Result<crate::backup::BackupSummary, String>>,
    },
    Events {
        from_seq: u64,
        limit: u32,
        reply: oneshot::Sender<Result<Vec<EventRecord>, String>>,
    },
    BookingDays {
        only: Option<BTreeSet<Date>>,
        reply: oneshot::Sender<BookingDays>,
    },
    Personal {
        bookings: Vec<crate::domain::BookingId>,
        reply: oneshot::Sender<PersonalByBooking>,
    },
}

/// Personal data by booking (see [`EngineHandle::personal_data`]).
pub type PersonalByBooking = BTreeMap<crate::domain::BookingId, crate::domain::PersonalData>;

/// Count and digest (contract v1 of the booking sync) of the live bookings per local day.
pub type BookingDays = BTreeMap<Date, (u64, String)>;

/// Capacity of the committed-events broadcast; a subscriber that falls further behind loses
/// the oldest events and is told so ([`EventFeed`] then reads them from the log). It holds the
/// newest records (each with its whole booking or ticket), so it is kept small: a bulk sync
/// of 50,000 bookings held 3 MB in it at 4,096.
pub const EVENT_BROADCAST_CAPACITY: usize = 512;
/// Most log records an [`EventFeed`] reads at once while it catches up.
pub const FEED_CATCH_UP_READ: u32 = 256;

/// The one way into the engine, shared by every input.
#[derive(Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<EngineMessage>,
    events: tokio::sync::broadcast::Sender<Arc<EventRecord>>,
    /// Seq of the newest durable event (0 before the first), set by the engine thread after
    /// each commit, before the commit's events are broadcast.
    last_seq: Arc<std::sync::atomic::AtomicU64>,
    /// The log's epoch ([`crate::store::Store::log_epoch`]).
    log_epoch: Arc<str>,
    /// The service day waiting for a synchronised clock ([`DayGate`]), as the engine thread
    /// last saw it.
    clock_wait: tokio::sync::watch::Receiver<Option<ClockWait>>,
}

impl EngineHandle {
    /// Watches the service day waiting for a synchronised clock: `Some` while commands are
    /// refused for it, `None` once the day runs.
    pub fn clock_wait(&self) -> tokio::sync::watch::Receiver<Option<ClockWait>> {
        self.clock_wait.clone()
    }

    /// Receives every event once it is durable, in log order (for derived outputs: printers,
    /// displays, later the web and MQTT).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<EventRecord>> {
        self.events.subscribe()
    }

    /// Seq of the newest durable event (0 while the log is empty).
    pub fn last_seq(&self) -> u64 {
        self.last_seq.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Every committed event from now on, in order and without gaps (see [`EventFeed`]).
    pub fn feed(&self) -> EventFeed {
        EventFeed {
            committed: self.events.subscribe(),
            engine: self.clone(),
            next: None,
            backlog: std::collections::VecDeque::new(),
            behind: false,
            missed_at_start: 0,
            batch: Vec::new(),
            batch_deadline: None,
        }
    }

    /// Every event from `seq` on: first from the log, then as they are committed.
    pub fn feed_from(&self, seq: u64) -> EventFeed {
        EventFeed {
            next: Some(seq.max(1)),
            behind: true,
            ..self.feed()
        }
    }

    /// Sends a message carrying a reply channel and waits for the reply.
    async fn ask<T>(
        &self,
        message: impl FnOnce(oneshot::Sender<T>) -> EngineMessage,
    ) -> Result<T, ExecuteError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(message(reply))
            .await
            .map_err(|_| ExecuteError::ShuttingDown)?;
        answer.await.map_err(|_| ExecuteError::ShuttingDown)
    }

    /// The epoch of the event log: seqs count from 1 within it (see
    /// [`crate::store::Store::log_epoch`]).
    pub fn log_epoch(&self) -> &str {
        &self.log_epoch
    }

    /// Executes a command; answers once its effects are durable.
    pub async fn execute(&self, request: CommandRequest) -> Result<Executed, ExecuteError> {
        self.ask(|reply| EngineMessage::Execute { request, reply })
            .await?
    }

    /// Executes commands of one bulk input (a booking snapshot) in order, as one message: each
    /// is decided on its own, and they are written with the commands around them in group
    /// commits. Answers once all are durable, one outcome per command.
    pub async fn execute_many(
        &self,
        requests: Vec<CommandRequest>,
    ) -> Result<Vec<ExecuteResult>, ExecuteError> {
        self.ask(|reply| EngineMessage::ExecuteMany { requests, reply })
            .await
    }

    /// Today's state (only durable changes).
    pub async fn state_view(&self) -> Result<StateView, ExecuteError> {
        self.ask(|reply| EngineMessage::State { reply }).await
    }

    /// Waiting counts and estimated waits per service: the part of [`Self::state_view`] the
    /// display needs, without copying today's tickets.
    pub async fn queue_view(&self) -> Result<QueueView, ExecuteError> {
        self.ask(|reply| EngineMessage::Queues { reply }).await
    }

    /// Reads durable log entries from `from_seq` on.
    pub async fn events(
        &self,
        from_seq: u64,
        limit: u32,
    ) -> Result<Vec<EventRecord>, ExecuteError> {
        self.ask(|reply| EngineMessage::Events {
            from_seq,
            limit,
            reply,
        })
        .await?
        .map_err(ExecuteError::Storage)
    }

    /// Count and digest of the live bookings (today and later, tombstones included) per local
    /// day, restricted to `only` when given (days without bookings then show count 0), for
    /// the booking sync's gap detection. Read-only; computed on the engine thread.
    pub async fn booking_days(
        &self,
        only: Option<BTreeSet<Date>>,
    ) -> Result<BookingDays, ExecuteError> {
        self.ask(|reply| EngineMessage::BookingDays { only, reply })
            .await
    }

    /// The stored personal data of these bookings (those that have some), for the admin's
    /// presence list only. Read-only; read on the engine thread.
    pub async fn personal_data(
        &self,
        bookings: Vec<crate::domain::BookingId>,
    ) -> Result<PersonalByBooking, ExecuteError> {
        self.ask(|reply| EngineMessage::Personal { bookings, reply })
            .await
    }

    /// Writes a backup of the store into `<data_dir>/backups/` between two commits: every
    /// command acknowledged before this call is in it.
    pub async fn backup(&self) -> Result<crate::backup::BackupSummary, ExecuteError> {
        self.ask(|reply| EngineMessage::Backup { reply })
            .await?
            .map_err(ExecuteError::Storage)
    }

    /// Replays the log and compares it with the views and the live state.
    pub async fn verify(&self) -> Result<Vec<String>, ExecuteError> {
        self.ask(|reply| EngineMessage::Verify { reply })
            .await?
            .map_err(ExecuteError::Storage)
    }
}

/// Where the daemon keeps its data, with `--data-dir` taking precedence over the config.
pub fn data_dir(config: &Config, override_dir: Option<&Path>) -> PathBuf {
    override_dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| config.site.data_dir.clone())
}

/// Today's state as the control socket shows it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct StateView {
    /// Service day.
    pub day: Option<String>,
    /// Last event sequence number.
    pub last_seq: u64,
    /// Today's tickets.
    pub tickets: Vec<crate::domain::Ticket>,
    /// Desks.
    pub desks: Vec<crate::domain::DeskState>,
    /// Waiting tickets per service.
    pub waiting: BTreeMap<String, u32>,
    /// Estimated wait per service in minutes.
    pub estimated_wait_minutes: BTreeMap<String, u32>,
    /// Today's silent alarms, oldest first.
    #[serde(default)]
    pub alarms: Vec<crate::engine::AlarmRecord>,
    /// A wall-clock jump the engine does not follow until an admin confirms it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_hold: Option<crate::clock::ClockHold>,
    /// The service day waiting for a synchronised clock (or an admin's confirmation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_wait: Option<crate::clock::ClockWait>,
}
