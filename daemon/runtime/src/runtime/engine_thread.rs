//! The engine thread: opening the engine on its store, the loop that takes up to
//! [`GROUP_COMMIT_MAX`] queued commands, executes them in order and answers each only after
//! the one fsynced commit, and what it answers queries with.

use super::{
    EVENT_BROADCAST_CAPACITY, EngineHandle, EngineMessage, ExecuteError, ExecuteResult,
    GROUP_COMMIT_MAX, QUEUE_CAPACITY, StateView, WITNESS_INTERVAL,
};
use crate::catalog::Catalog;
use crate::clock::{Clock, ClockGuard, ClockWait, DayGate, MINUTE};
use crate::config::Config;
use crate::domain::{Command, CommandError, CommandRequest, EventRecord};
use crate::engine::Engine;
use crate::store::{Store, StoreError, StoreOptions};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

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
pub(crate) struct EngineClock {
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) gate: DayGate,
    pub(crate) waits: tokio::sync::watch::Sender<Option<ClockWait>>,
}

pub(crate) fn engine_loop(
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
pub(crate) fn time_for(
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
pub(crate) enum Answer {
    One(oneshot::Sender<ExecuteResult>, ExecuteResult),
    Many(oneshot::Sender<Vec<ExecuteResult>>, Vec<ExecuteResult>),
}

impl Answer {
    /// The commit is durable: sends the outcomes.
    pub(crate) fn send(self) {
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
    pub(crate) fn fail(self, message: &str) {
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
pub(crate) fn execute_logged(
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

pub(crate) type Queues = (
    std::collections::BTreeMap<String, u32>,
    std::collections::BTreeMap<String, u32>,
);

pub(crate) fn state_queues(engine: &Engine) -> Queues {
    let view = state_view_without_tickets(engine);
    (view.waiting, view.estimated_wait_minutes)
}

pub(crate) fn state_view(engine: &Engine) -> StateView {
    let mut view = state_view_without_tickets(engine);
    view.tickets = engine.state().tickets.values().cloned().collect();
    view
}

pub(crate) fn state_view_without_tickets(engine: &Engine) -> StateView {
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
    let recomputed = leitsystem_core::contract::day_digests(
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
