//! Wiring of the running daemon: the engine thread, its handle, the scheduler and the control
//! socket, under one shutdown token.
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

use anyhow::Context;
use jiff::civil::Date;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::catalog::Catalog;
use crate::clock::{Clock, ClockGuard, ClockWait, DayGate, MINUTE, SystemClock};
use crate::config::Config;
use crate::control::{self, StateView};
use crate::domain::{Command, CommandError, CommandRequest, EventRecord};
use crate::engine::{Engine, Executed};
use crate::store::{Store, StoreError, StoreOptions};

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

enum EngineMessage {
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

/// Committed events in log order without gaps, for outputs that must not miss one (a ticket
/// to print): the broadcast while the subscriber keeps up, the durable log for what the
/// broadcast dropped while it fell behind (a bulk booking sync commits thousands at once).
/// Every event is in the log before it is broadcast, so reading the log never misses one.
pub struct EventFeed {
    committed: tokio::sync::broadcast::Receiver<Arc<EventRecord>>,
    engine: EngineHandle,
    /// The next seq to hand out (`None` until the first event).
    next: Option<u64>,
    /// Records read from the log, to hand out before anything else.
    backlog: std::collections::VecDeque<EventRecord>,
    /// The broadcast dropped records: read the log until it is caught up.
    behind: bool,
    /// Records dropped before the first one was handed out.
    missed_at_start: u64,
    /// The batch [`EventFeed::recv_batch`] is filling. It lives here, not in the future, so
    /// that a `recv_batch` cancelled by a `select!` loses nothing: the next call goes on
    /// filling it.
    batch: Vec<Arc<EventRecord>>,
    /// When the batch being filled is handed out at the latest.
    batch_deadline: Option<tokio::time::Instant>,
}

impl EventFeed {
    /// The next events, at least one and at most `max`: waits for the first, then up to
    /// `linger` for more (a commit's events arrive one by one), taking what is ready. `None`
    /// once the engine has stopped.
    ///
    /// Cancel-safe: records taken before a cancellation stay in the feed's batch and are
    /// handed out by the next call (with the deadline of the first call), never dropped.
    pub async fn recv_batch(
        &mut self,
        max: usize,
        linger: Duration,
    ) -> Option<Vec<Arc<EventRecord>>> {
        if self.batch.is_empty() {
            let first = self.recv().await?;
            // No await between receiving and keeping it.
            self.batch.push(first);
            self.batch_deadline = Some(tokio::time::Instant::now() + linger);
        }
        let deadline = *self
            .batch_deadline
            .get_or_insert_with(|| tokio::time::Instant::now() + linger);
        while self.batch.len() < max {
            if let Some(record) = self.backlog.pop_front() {
                if self.next.is_none_or(|next| record.seq >= next) {
                    self.next = Some(record.seq + 1);
                    self.batch.push(Arc::new(record));
                }
                continue;
            }
            if self.behind {
                break;
            }
            match self.committed.try_recv() {
                Ok(record) if Some(record.seq) == self.next => {
                    self.next = Some(record.seq + 1);
                    self.batch.push(record);
                }
                Ok(record) if self.next.is_some_and(|next| record.seq < next) => {}
                Ok(_) | Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => {
                    // A gap: the log has it; the next call reads it.
                    self.behind = true;
                    break;
                }
                Err(tokio::sync::broadcast::error::TryRecvError::Empty) => {
                    // Nothing ready: wait for the next one until the deadline. Receiving
                    // from a broadcast is cancel-safe, and a record is kept as soon as it
                    // arrives.
                    match tokio::time::timeout_at(deadline, self.committed.recv()).await {
                        Ok(Ok(record)) if Some(record.seq) == self.next => {
                            self.next = Some(record.seq + 1);
                            self.batch.push(record);
                        }
                        Ok(Ok(record)) if self.next.is_some_and(|next| record.seq < next) => {}
                        Ok(Ok(_))
                        | Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {
                            self.behind = true;
                            break;
                        }
                        Ok(Err(_)) | Err(_) => break,
                    }
                }
                Err(_) => break,
            }
        }
        self.batch_deadline = None;
        Some(std::mem::take(&mut self.batch))
    }

    /// The next event; `None` once the engine has stopped.
    pub async fn recv(&mut self) -> Option<Arc<EventRecord>> {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            if let Some(record) = self.backlog.pop_front() {
                if self.next.is_none_or(|next| record.seq >= next) {
                    self.next = Some(record.seq + 1);
                    return Some(Arc::new(record));
                }
                continue;
            }
            if let (true, Some(next)) = (self.behind, self.next) {
                match self.engine.events(next, FEED_CATCH_UP_READ).await {
                    Ok(records) => {
                        self.behind = records.len() == FEED_CATCH_UP_READ as usize;
                        self.backlog.extend(records);
                    }
                    Err(ExecuteError::ShuttingDown) => return None,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the event log; retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
                continue;
            }
            match self.committed.recv().await {
                Ok(record) => match self.next {
                    Some(next) if record.seq < next => {}
                    // A gap (after a lag): the log has it.
                    Some(next) if record.seq > next => self.behind = true,
                    None if self.missed_at_start > 0 => {
                        // Dropped before the first: they are the ones just before this.
                        self.next = Some(record.seq.saturating_sub(self.missed_at_start).max(1));
                        self.behind = true;
                    }
                    _ => {
                        self.next = Some(record.seq + 1);
                        return Some(record);
                    }
                },
                Err(RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "event feed fell behind; reading the log");
                    if self.next.is_none() {
                        self.missed_at_start += missed;
                    }
                    self.behind = true;
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

/// Opens the store and builds the engine from what it holds.
pub fn open_engine(
    catalog: Arc<Catalog>,
    data_dir: &Path,
    options: &StoreOptions,
) -> Result<(Engine, Store), StoreError> {
    let store = Store::open(data_dir, options)?;
    let loaded = store.load()?;
    Ok((Engine::from_loaded(catalog, loaded), store))
}

/// Store options from the config.
pub fn store_options(config: &Config) -> StoreOptions {
    StoreOptions {
        cache_bytes: u64::try_from(*config.store.cache_mib.get_ref()).unwrap_or(8) * 1024 * 1024,
        lock_wait: Duration::from_secs(
            u64::try_from(*config.store.lock_wait_seconds.get_ref()).unwrap_or(10),
        ),
    }
}

/// Starts the engine thread; returns its handle and the thread (which ends when every handle
/// is dropped, after answering what was queued). `gate` decides whether a service day may
/// start on the clock's word ([`DayGate::open`]: always).
pub fn spawn_engine(
    engine: Engine,
    store: Store,
    clock: Arc<dyn Clock>,
    gate: DayGate,
    fatal: CancellationToken,
) -> std::io::Result<(EngineHandle, std::thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
    let (clock_wait_tx, clock_wait) = tokio::sync::watch::channel(None);
    let (events, _) = tokio::sync::broadcast::channel(EVENT_BROADCAST_CAPACITY);
    let committed = events.clone();
    let last_seq = Arc::new(std::sync::atomic::AtomicU64::new(engine.state().last_seq));
    let log_epoch: Arc<str> = Arc::from(store.log_epoch());
    let durable_seq = last_seq.clone();
    let thread = std::thread::Builder::new()
        .name("engine".to_string())
        .spawn(move || {
            let on_panic = fatal.clone();
            let run = std::panic::AssertUnwindSafe(|| {
                let clock = EngineClock {
                    clock,
                    gate,
                    waits: clock_wait_tx,
                };
                engine_loop(engine, store, clock, rx, fatal, committed, durable_seq)
            });
            if std::panic::catch_unwind(run).is_err() {
                tracing::error!("the engine thread panicked; stopping");
                on_panic.cancel();
            }
        })?;
    Ok((
        EngineHandle {
            tx,
            events,
            last_seq,
            log_epoch,
            clock_wait,
        },
        thread,
    ))
}

/// The engine thread's time: the clock it reads, the gate of the service day, and where the
/// gate's wait is published.
struct EngineClock {
    clock: Arc<dyn Clock>,
    gate: DayGate,
    waits: tokio::sync::watch::Sender<Option<ClockWait>>,
}

fn engine_loop(
    mut engine: Engine,
    store: Store,
    mut clock: EngineClock,
    mut rx: mpsc::Receiver<EngineMessage>,
    fatal: CancellationToken,
    committed: tokio::sync::broadcast::Sender<Arc<EventRecord>>,
    durable_seq: Arc<std::sync::atomic::AtomicU64>,
) {
    let mut batch = Vec::with_capacity(GROUP_COMMIT_MAX);
    let mut witnessed = (engine.state().last_seq, std::time::Instant::now());
    let mut guard = ClockGuard::new(
        engine.catalog().policy.clock_jump,
        engine.catalog().calendar.clone(),
    );
    // Ask the gate once at start, so /healthz, /admin and the sync know at once whether the
    // day waits for the clock (it is asked again by every command).
    let started_at = guard.engine_time(clock.clock.now(), std::time::Instant::now());
    if clock.gate.admit(started_at).is_err() {
        clock.waits.send_replace(clock.gate.waiting().cloned());
    }
    while let Some(first) = rx.blocking_recv() {
        let weight = |m: &EngineMessage| match m {
            EngineMessage::ExecuteMany { requests, .. } => requests.len().max(1),
            _ => 1,
        };
        let mut commands = weight(&first);
        batch.push(first);
        while commands < GROUP_COMMIT_MAX {
            match rx.try_recv() {
                Ok(message) => {
                    commands += weight(&message);
                    batch.push(message);
                }
                Err(_) => break,
            }
        }
        let mut answers = Vec::new();
        let mut queries = Vec::new();
        for message in batch.drain(..) {
            match message {
                EngineMessage::Execute { request, reply } => {
                    let result = match time_for(&mut guard, &mut clock, &request) {
                        Ok(now) => execute_logged(&mut engine, &request, now, false),
                        Err(refused) => Err(refused.into()),
                    };
                    answers.push(Answer::One(reply, result));
                }
                EngineMessage::ExecuteMany { requests, reply } => {
                    let results: Vec<ExecuteResult> = requests
                        .iter()
                        .map(|request| match time_for(&mut guard, &mut clock, request) {
                            Ok(now) => execute_logged(&mut engine, request, now, true),
                            Err(refused) => Err(refused.into()),
                        })
                        .collect();
                    tracing::debug!(
                        commands = results.len(),
                        accepted = results.iter().filter(|r| r.is_ok()).count(),
                        "bulk commands executed"
                    );
                    answers.push(Answer::Many(reply, results));
                }
                other => queries.push(other),
            }
        }
        let waiting = clock.gate.waiting().cloned();
        clock.waits.send_if_modified(|published| {
            let changed = *published != waiting;
            *published = waiting;
            changed
        });
        let pending = engine.take_pending();
        if !pending.is_empty() {
            if let Err(e) = store.commit(&pending) {
                // The batch may be in sled already while its fsync failed: we can neither say
                // "it happened" nor "it did not". Stop; the next start's recovery (and the
                // witness check) decides, and systemd restarts us.
                tracing::error!(error = %e, "commit failed; stopping so recovery can decide");
                let message = format!("{e}; the outcome is unknown and the daemon restarts");
                for answer in answers.drain(..) {
                    answer.fail(&message);
                }
                fatal.cancel();
                return;
            } else {
                durable_seq.store(
                    engine.state().last_seq,
                    std::sync::atomic::Ordering::Release,
                );
                for record in pending.records {
                    // No subscriber is fine; they only derive outputs.
                    let _ = committed.send(Arc::new(record));
                }
            }
        }
        for answer in answers.drain(..) {
            answer.send();
        }
        let last_seq = engine.state().last_seq;
        if last_seq != witnessed.0 && witnessed.1.elapsed() >= WITNESS_INTERVAL {
            match store.record_witness(last_seq) {
                Ok(()) => witnessed = (last_seq, std::time::Instant::now()),
                Err(e) => tracing::warn!(error = %e, "cannot record the witness"),
            }
        }
        for query in queries {
            match query {
                EngineMessage::State { reply } => {
                    let mut view = state_view(&engine);
                    view.clock_hold = guard.hold().cloned();
                    view.clock_wait = clock.gate.waiting().cloned();
                    let _ = reply.send(view);
                }
                EngineMessage::Queues { reply } => {
                    let view = state_queues(&engine);
                    let _ = reply.send(QueueView {
                        last_seq: engine.state().last_seq,
                        waiting: view.0,
                        estimated_wait_minutes: view.1,
                    });
                }
                EngineMessage::Verify { reply } => {
                    let _ = reply.send(verify(&engine, &store));
                }
                EngineMessage::Backup { reply } => {
                    let written = crate::backup::write_backup_in_data_dir(
                        &store,
                        &engine.catalog().site_id,
                        engine.state().last_seq,
                    );
                    match &written {
                        Ok(summary) => tracing::info!(
                            file = %summary.path.display(),
                            last_seq = summary.header.last_seq,
                            records = summary.records,
                            bytes = summary.bytes,
                            millis = summary.millis,
                            "backup written (commands waited this long)"
                        ),
                        Err(e) => tracing::error!(error = %e, "backup failed"),
                    }
                    let _ = reply.send(written.map_err(|e| e.to_string()));
                }
                EngineMessage::Events {
                    from_seq,
                    limit,
                    reply,
                } => {
                    let events: Result<Vec<EventRecord>, String> = store
                        .events(from_seq)
                        .take(limit as usize)
                        .map(|r| r.map_err(|e| e.to_string()))
                        .collect();
                    let _ = reply.send(events);
                }
                EngineMessage::BookingDays { only, reply } => {
                    let _ = reply.send(engine.booking_days(only.as_ref()));
                }
                EngineMessage::Personal { bookings, reply } => {
                    let found = bookings
                        .into_iter()
                        .filter_map(|b| match store.personal_data(&b) {
                            Ok(Some(data)) => Some((b, data)),
                            Ok(None) => None,
                            Err(e) => {
                                tracing::warn!(booking = %b, "cannot read personal data: {e}");
                                None
                            }
                        })
                        .collect();
                    let _ = reply.send(found);
                }
                EngineMessage::Execute { .. } | EngineMessage::ExecuteMany { .. } => {}
            }
        }
    }
    match store.close() {
        Ok(()) => tracing::info!("engine stopped, store closed cleanly"),
        Err(e) => {
            tracing::error!(error = %e, "engine stopped, but the store did not close cleanly")
        }
    }
}

/// The time to execute `request` at: the guard's engine time, once the day gate admits it.
/// A `confirm_clock` first ends the guard's hold and then the gate's wait (refused when
/// neither is there).
fn time_for(
    guard: &mut ClockGuard,
    clock: &mut EngineClock,
    request: &CommandRequest,
) -> Result<crate::clock::Millis, CommandError> {
    let confirming = matches!(request.command, Command::ConfirmClock);
    let mut confirmed = false;
    if confirming {
        if let Some(hold) = guard.confirm() {
            tracing::warn!(
                by = %request.source,
                offset_seconds = hold.offset_seconds(),
                "the new wall-clock time was confirmed; the engine follows it"
            );
            confirmed = true;
        }
    }
    let now = guard.engine_time(clock.clock.now(), std::time::Instant::now());
    if confirming {
        if let Some(wait) = clock.gate.confirm(now) {
            tracing::warn!(
                by = %request.source,
                day = %wait.day,
                reason = %wait.reason,
                "the clock's time was confirmed by hand; the service day starts unsynchronised"
            );
            confirmed = true;
        }
        if !confirmed {
            return Err(CommandError::NoClockJump);
        }
    }
    clock
        .gate
        .admit(now)
        .map_err(|wait| CommandError::ClockUnsynchronised {
            reason: wait.reason,
        })?;
    Ok(now)
}

/// An outcome waiting for its commit.
enum Answer {
    One(oneshot::Sender<ExecuteResult>, ExecuteResult),
    Many(oneshot::Sender<Vec<ExecuteResult>>, Vec<ExecuteResult>),
}

impl Answer {
    /// The commit is durable: sends the outcomes.
    fn send(self) {
        match self {
            Answer::One(reply, result) => {
                let _ = reply.send(result);
            }
            Answer::Many(reply, results) => {
                let _ = reply.send(results);
            }
        }
    }

    /// The commit failed: every command of it gets the storage error.
    fn fail(self, message: &str) {
        let failed = || Err(ExecuteError::Storage(message.to_string()));
        match self {
            Answer::One(reply, _) => {
                let _ = reply.send(failed());
            }
            Answer::Many(reply, results) => {
                let _ = reply.send(results.iter().map(|_| failed()).collect());
            }
        }
    }
}

/// Executes one command and logs it: at info, or at debug for the commands of a bulk input
/// (a booking snapshot would otherwise write a line per booking to the journal).
fn execute_logged(
    engine: &mut Engine,
    request: &CommandRequest,
    now: crate::clock::Millis,
    bulk: bool,
) -> ExecuteResult {
    let result = engine.execute(request, now);
    match &result {
        Ok(_) if matches!(request.command, Command::Tick) => {}
        Ok(executed) if bulk => tracing::debug!(
            command = request.command.name(),
            source = %request.source,
            duplicate = executed.duplicate,
            "command accepted"
        ),
        Ok(executed) => tracing::info!(
            command = request.command.name(),
            source = %request.source,
            request_id = request.request_id.as_deref().unwrap_or(""),
            duplicate = executed.duplicate,
            "command accepted"
        ),
        Err(e) => tracing::info!(
            command = request.command.name(),
            source = %request.source,
            code = e.code(),
            reason = %e,
            "command refused"
        ),
    }
    result.map_err(ExecuteError::from)
}

/// Waiting counts and estimated waits per service (see [`EngineHandle::queue_view`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueView {
    /// Last event sequence number.
    pub last_seq: u64,
    /// Waiting tickets per service.
    pub waiting: std::collections::BTreeMap<String, u32>,
    /// Estimated wait per service in minutes.
    pub estimated_wait_minutes: std::collections::BTreeMap<String, u32>,
}

type Queues = (
    std::collections::BTreeMap<String, u32>,
    std::collections::BTreeMap<String, u32>,
);

fn state_queues(engine: &Engine) -> Queues {
    let view = state_view_without_tickets(engine);
    (view.waiting, view.estimated_wait_minutes)
}

fn state_view(engine: &Engine) -> StateView {
    let mut view = state_view_without_tickets(engine);
    view.tickets = engine.state().tickets.values().cloned().collect();
    view
}

fn state_view_without_tickets(engine: &Engine) -> StateView {
    let state = engine.state();
    let waiting = state.waiting_counts();
    StateView {
        day: state.day.map(|d| d.to_string()),
        last_seq: state.last_seq,
        tickets: Vec::new(),
        alarms: state.alarms.clone(),
        clock_hold: None,
        clock_wait: None,
        desks: state.desks.values().cloned().collect(),
        waiting: engine
            .catalog()
            .services
            .keys()
            .map(|s| (s.to_string(), waiting.get(s).copied().unwrap_or(0)))
            .collect(),
        estimated_wait_minutes: engine
            .catalog()
            .services
            .keys()
            .map(|s| {
                let ms = engine.estimated_wait(s);
                (
                    s.to_string(),
                    u32::try_from((ms + MINUTE - 1) / MINUTE).unwrap_or(u32::MAX),
                )
            })
            .collect(),
    }
}

/// Compares the store's log, its views and the live state. `Err` when the store cannot be read.
pub fn verify(engine: &Engine, store: &Store) -> Result<Vec<String>, String> {
    let loaded = store.load().map_err(|e| e.to_string())?;
    let mut log = Vec::new();
    for record in store.events(1) {
        log.push(record.map_err(|e| e.to_string())?);
    }
    let mut problems =
        crate::engine::verify_consistency(engine.catalog(), loaded, log, Some(engine.state()));
    let recomputed = crate::sync::contract::day_digests(
        engine.state().bookings.values(),
        &engine.catalog().calendar,
        None,
    );
    if engine.booking_days(None) != recomputed {
        problems.push(
            "the per-day booking digests kept by the engine differ from the bookings".to_string(),
        );
    }
    Ok(problems)
}

/// Sends a `tick` at every local midnight (and at least every minute), so a service day closes
/// even when nobody uses the system; every few seconds while a day waits for a synchronised
/// clock, so it starts soon after the sync.
async fn scheduler(engine: EngineHandle, catalog: Arc<Catalog>, shutdown: CancellationToken) {
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
const CLOCK_SYNC_POLL: crate::clock::Millis = 5_000;

/// Where the daemon keeps its data, with `--data-dir` taking precedence over the config.
pub fn data_dir(config: &Config, override_dir: Option<&Path>) -> PathBuf {
    override_dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| config.site.data_dir.clone())
}

/// How long start-up waits for the devices' first start before it reports ready anyway.
const DEVICE_START_WAIT: Duration = Duration::from_secs(20);

/// The daemon's set-up in one line, for systemd's status: site, devices, web and MQTT.
fn readiness_summary(config: &Config, catalog: &Catalog, devices: usize) -> String {
    let web = config.web.as_ref().map_or_else(
        || "no web server".to_string(),
        |w| format!("web on {}", w.listen),
    );
    let mqtt = config.mqtt.as_ref().map_or_else(
        || "no MQTT".to_string(),
        |m| format!("MQTT to {}:{}", m.host.get_ref(), m.port.get_ref()),
    );
    format!("site {}, {devices} devices, {web}, {mqtt}", catalog.site_id)
}

/// Runs the daemon until `shutdown` fires (SIGTERM/SIGINT in `main`) or a fatal error.
pub async fn run(
    config: Config,
    config_dir: PathBuf,
    data_dir: PathBuf,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let catalog = Arc::new(crate::catalog::from_config(&config).context("building the catalog")?);
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let options = store_options(&config);
    let socket_path = config.control_socket(&data_dir);
    crate::service_manager::status(&format!("Opening the store in {}", data_dir.display()));
    let open_catalog = catalog.clone();
    let open_dir = data_dir.clone();
    let (engine, store) =
        tokio::task::spawn_blocking(move || open_engine(open_catalog, &open_dir, &options))
            .await
            .context("store task")?
            .with_context(|| format!("opening the store in {}", data_dir.display()))?;
    tracing::info!(
        data_dir = %data_dir.display(),
        day = ?engine.state().day,
        events = engine.state().last_seq,
        tickets_today = engine.state().tickets.len(),
        "store opened"
    );

    let fatal = CancellationToken::new();
    let gate = match config.clock.sync_source() {
        Some(source) => {
            tracing::info!(
                source = %source.describe(),
                "a service day starts only on a synchronised clock"
            );
            DayGate::requiring(source, catalog.calendar.clone())
        }
        None => DayGate::open(catalog.calendar.clone()),
    };
    let (handle, engine_thread) =
        spawn_engine(engine, store, Arc::new(SystemClock), gate, fatal.clone())
            .context("starting the engine thread")?;

    let listener = control::bind(&socket_path)
        .await
        .context("opening the control socket")?;
    let web_listener = match &config.web {
        Some(web) => Some(
            tokio::net::TcpListener::bind(web.listen)
                .await
                .with_context(|| format!("listening on {} for the web server", web.listen))?,
        ),
        None => None,
    };
    let tracker = TaskTracker::new();
    let stop = CancellationToken::new();
    let specs = crate::plugin_host::device_specs(&config, &config_dir, &data_dir);
    let specs_count = specs.len();
    let display =
        crate::display::spawn_feed(&tracker, handle.clone(), catalog.clone(), stop.clone());
    // Loading plugins (dlopen, the plugins' constructors) blocks: off the async workers, so
    // the engine's and the display's tasks keep running meanwhile (needs the multi-threaded
    // runtime `main` builds).
    crate::service_manager::status("Starting the devices");
    let devices = tokio::task::block_in_place(|| {
        crate::plugin_host::PluginHost::start(
            specs,
            catalog.clone(),
            handle.clone(),
            display.clone(),
            Duration::from_secs(
                u64::try_from(*config.plugins.print_answer_seconds.get_ref()).unwrap_or(30),
            ),
            stop.clone(),
            &tracker,
        )
    });
    // READY waits for every device's first start (a printer that takes a while to open),
    // bounded: a device hanging in its driver must not keep the appliance from starting.
    let still_starting = devices.first_attempts(DEVICE_START_WAIT).await;
    if !still_starting.is_empty() {
        tracing::warn!(
            devices = ?still_starting,
            "devices still starting after {}s; going on without waiting for them",
            DEVICE_START_WAIT.as_secs()
        );
    }
    let sync_status = match &config.mqtt {
        Some(mqtt) => {
            let status = crate::sync::SyncStatus::default();
            crate::sync::start(
                mqtt,
                &config_dir,
                &data_dir,
                catalog.clone(),
                handle.clone(),
                status.clone(),
                stop.clone(),
                &tracker,
            )
            .context("starting the booking sync")?;
            status
        }
        None => crate::sync::SyncStatus::disabled(),
    };
    if let Some(web_listener) = web_listener {
        if let Ok(address) = web_listener.local_addr() {
            tracing::info!(%address, "web server: http://{address}/display");
        }
        let state = crate::web::WebState::new(
            handle.clone(),
            devices.registry(),
            sync_status.clone(),
            display.clone(),
            stop.clone(),
        )
        .with_api(
            catalog.clone(),
            config.web.as_ref(),
            devices.scans(),
            Some(&data_dir),
        );
        tracker.spawn(crate::web::serve(web_listener, state));
    }
    tracker.spawn(control::serve(
        listener,
        handle.clone(),
        devices.registry(),
        sync_status,
        stop.clone(),
        tracker.clone(),
    ));
    tracker.spawn(scheduler(handle.clone(), catalog.clone(), stop.clone()));
    let summary = readiness_summary(&config, &catalog, specs_count);
    tracing::info!(socket = %socket_path.display(), site = %catalog.site_id, "ready");
    // Only now: the store is open, the plugins started, the control socket and the web server
    // listen and the sync (if configured) runs. Then the watchdog and the running status.
    crate::service_manager::ready(&format!("Ready: {summary}"));
    tracker.spawn(crate::service_manager::heartbeat(
        handle.clone(),
        summary,
        stop.clone(),
    ));
    tracker.close();

    let failed = tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = fatal.cancelled() => true,
    };
    tracing::info!("shutting down");
    crate::service_manager::stopping("Stopping: devices first, then the engine finishes its queue");
    stop.cancel();
    // Devices first: they stop sending commands, their instances are destroyed.
    let _ = tokio::task::spawn_blocking(move || devices.stop()).await;
    drop(handle);
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            tasks = tracker.len(),
            "tasks still running after the grace period"
        );
    }
    let _ = std::fs::remove_file(&socket_path);
    // The engine thread ends once the last handle is gone, after answering what was queued.
    let joined = tokio::time::timeout(
        SHUTDOWN_GRACE,
        tokio::task::spawn_blocking(move || engine_thread.join()),
    )
    .await;
    match joined {
        Ok(Ok(Ok(()))) => {}
        Err(_) => tracing::error!("the engine did not stop within the grace period"),
        _ => tracing::error!("the engine thread ended abnormally"),
    }
    if failed {
        anyhow::bail!("stopped after a fatal store error");
    }
    tracing::info!("stopped");
    Ok(())
}
