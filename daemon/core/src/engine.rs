//! The queue engine: the one place where the queue changes.
//!
//! A command is first *decided* against the current state (pure: no change, typed error on
//! refusal), which yields events; the events are then *applied* to the state. Applying is the
//! only mutation and depends on nothing but the event and its time, so replaying the durable
//! log rebuilds exactly the same state. The engine collects what a command changed into a
//! [`PendingCommit`]; the daemon writes it to the store durably and only then acknowledges.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use crate::catalog::LateArrival;
use crate::catalog::{Catalog, Desk};
use crate::clock::{MINUTE, Millis};
use crate::contract::DaySums;
use crate::domain::{
    Booking, BookingId, BookingInput, BookingStatus, Command, CommandError, CommandRequest, DeskId,
    DeskMode, DeskState, Event, EventRecord, ForwardTarget, Outcome, PRIORITY_MAX, PRIORITY_NORMAL,
    PersonalData, PrintOutcome, PrintState, ServiceId, Ticket, TicketNumber, TicketOrigin,
    TicketState,
};

/// Slot length assumed for a booking known only from its check-in token.
pub const TOKEN_BOOKING_MINUTES: u32 = 15;

/// Highest daily sequence per prefix (`A-9999`).
pub const MAX_SEQUENCE: u32 = 9_999;

/// Measured service times of one service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStats {
    /// Visits finished today.
    pub served_today: u32,
    /// Sum of today's service times.
    pub service_ms_today: i64,
    /// Exponentially weighted mean service time over all days (weight 1/4 per new visit).
    pub mean_service_ms: Option<i64>,
}

/// Everything the engine knows: the live views. Derived from the event log alone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The current service day (None before the first event).
    pub day: Option<Date>,
    /// Time of the newest event; the engine's clock never runs backwards.
    pub clock: Millis,
    /// Sequence number of the newest event.
    pub last_seq: u64,
    /// Today's tickets.
    pub tickets: BTreeMap<TicketNumber, Ticket>,
    /// Desks.
    pub desks: BTreeMap<DeskId, DeskState>,
    /// Bookings from today on.
    pub bookings: BTreeMap<BookingId, Booking>,
    /// Last issued daily sequence per prefix.
    pub counters: BTreeMap<String, u32>,
    /// Measured service times.
    pub stats: BTreeMap<ServiceId, ServiceStats>,
    /// Today's silent alarms, oldest first.
    pub alarms: Vec<AlarmRecord>,
}

/// One silent alarm of today (a view of its `silent_alarm` event).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlarmRecord {
    /// Seq of the event.
    pub seq: u64,
    /// When it was raised.
    pub at: Millis,
    /// The desk in danger.
    pub desk: DeskId,
    /// The input it came from (`web:platz1`, `buttons:<device id>`, `ctl`).
    pub source: String,
}

/// The part of the state that is not per-entity (written on every commit).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// See [`State::day`].
    pub day: Option<Date>,
    /// See [`State::clock`].
    pub clock: Millis,
    /// See [`State::last_seq`].
    pub last_seq: u64,
    /// See [`State::counters`].
    pub counters: BTreeMap<String, u32>,
    /// See [`State::stats`].
    pub stats: BTreeMap<ServiceId, ServiceStats>,
    /// See [`State::alarms`] (absent in stores written before it existed).
    #[serde(default)]
    pub alarms: Vec<AlarmRecord>,
}

/// The first answer to a request id, with the fingerprint of the command it answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnsweredRequest {
    /// 16 hex digits of SHA-256 over the command's JSON ("" in answers stored before
    /// fingerprints: those match any command).
    #[serde(default)]
    pub command: String,
    /// The answer.
    pub outcome: Outcome,
}

impl AnsweredRequest {
    /// The fingerprint of `command`.
    pub fn fingerprint(command: &Command) -> String {
        use sha2::Digest;
        let json = serde_json::to_vec(command).unwrap_or_default();
        let digest = sha2::Sha256::digest(&json);
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// What the store loaded: the views and today's answered requests.
#[derive(Debug, Clone, Default)]
pub struct LoadedState {
    /// Meta record.
    pub meta: Meta,
    /// Tickets of `meta.day`.
    pub tickets: Vec<Ticket>,
    /// Desks ever changed.
    pub desks: Vec<DeskState>,
    /// Live bookings.
    pub bookings: Vec<Booking>,
    /// Answered request ids of `meta.day`.
    pub requests: Vec<(String, AnsweredRequest)>,
}

/// Everything one or more commands changed, to be written atomically and durably.
#[derive(Debug, Clone, Default)]
pub struct PendingCommit {
    /// New log entries, in order.
    pub records: Vec<EventRecord>,
    /// Tickets to write (current values).
    pub tickets: Vec<Ticket>,
    /// Desks to write.
    pub desks: Vec<DeskState>,
    /// Bookings to write.
    pub bookings: Vec<Booking>,
    /// Bookings that left the live view.
    pub removed_bookings: Vec<BookingId>,
    /// Answered request ids (of `meta.day`).
    pub requests: Vec<(String, AnsweredRequest)>,
    /// Personal data to store: booking, appointment day, data.
    pub personal: Vec<(BookingId, Date, PersonalData)>,
    /// Erase personal data of appointments before this day.
    pub purge_personal_before: Option<Date>,
    /// Erase the personal data of these bookings (deleted by the website).
    pub erase_personal: Vec<BookingId>,
    /// Forget answered request ids of days before this day.
    pub purge_requests_before: Option<Date>,
    /// Meta record after the commit.
    pub meta: Meta,
}

impl PendingCommit {
    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
            && self.requests.is_empty()
            && self.personal.is_empty()
            && self.erase_personal.is_empty()
    }
}

/// What `execute` returns for an accepted command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Executed {
    /// The answer for the caller.
    pub outcome: Outcome,
    /// The request id was seen before today: this is the first answer, repeated.
    pub duplicate: bool,
}

#[derive(Debug, Default)]
struct Touched {
    /// Tickets of a day that ended within this commit, with their final values.
    retired: Vec<Ticket>,
    tickets: BTreeSet<TicketNumber>,
    desks: BTreeSet<DeskId>,
    bookings: BTreeSet<BookingId>,
    removed_bookings: BTreeSet<BookingId>,
}

/// The queue engine. Single-threaded: the daemon runs it on one task and feeds it commands.
#[derive(Debug)]
pub struct Engine {
    catalog: Arc<Catalog>,
    state: State,
    requests: BTreeMap<String, AnsweredRequest>,
    pending: PendingCommit,
    touched: Touched,
    /// Count and hash sum of the live bookings per day (derived; the booking sync's gap check).
    day_sums: DaySums,
}

impl State {
    /// A fresh state: every configured desk closed.
    pub fn new(catalog: &Catalog) -> Self {
        let mut state = State::default();
        state.add_missing_desks(catalog);
        state
    }

    fn add_missing_desks(&mut self, catalog: &Catalog) {
        for id in catalog.desks.keys() {
            self.desks.entry(id.clone()).or_insert_with(|| DeskState {
                id: id.clone(),
                mode: DeskMode::Closed,
                current: None,
                since: 0,
            });
        }
    }

    /// The meta record of this state.
    pub fn meta(&self) -> Meta {
        Meta {
            day: self.day,
            clock: self.clock,
            last_seq: self.last_seq,
            counters: self.counters.clone(),
            stats: self.stats.clone(),
            alarms: self.alarms.clone(),
        }
    }

    /// Checks the structural invariants; returns every violation found.
    pub fn check_invariants(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        let mut holders: BTreeMap<&TicketNumber, &DeskId> = BTreeMap::new();
        for (id, desk) in &self.desks {
            if let Some(number) = &desk.current {
                if let Some(other) = holders.insert(number, id) {
                    problems.push(format!("ticket {number} held by desks {other} and {id}"));
                }
                match self.tickets.get(number) {
                    None => problems.push(format!("desk {id} holds unknown ticket {number}")),
                    Some(t) if t.state.desk() != Some(id) => problems.push(format!(
                        "desk {id} holds ticket {number}, which is {:?}",
                        t.state
                    )),
                    Some(_) => {}
                }
                if desk.mode == DeskMode::Closed {
                    problems.push(format!("closed desk {id} holds ticket {number}"));
                }
            }
        }
        let mut sequences: BTreeMap<(String, u32), &TicketNumber> = BTreeMap::new();
        for (number, t) in &self.tickets {
            if &t.number != number {
                problems.push(format!("ticket stored as {number} is {}", t.number));
            }
            if Some(t.day) != self.day {
                problems.push(format!(
                    "ticket {number} of {} in day {:?}",
                    t.day, self.day
                ));
            }
            if let Some(desk) = t.state.desk() {
                let held = self.desks.get(desk).and_then(|d| d.current.as_ref());
                if held != Some(number) {
                    problems.push(format!(
                        "ticket {number} is {} at desk {desk}, which holds {held:?}",
                        t.state.name()
                    ));
                }
            }
            let prefix = number
                .as_str()
                .split('-')
                .next()
                .unwrap_or_default()
                .to_string();
            if let Some(other) = sequences.insert((prefix.clone(), t.sequence), number) {
                problems.push(format!(
                    "sequence {} issued twice: {other} and {number}",
                    t.sequence
                ));
            }
            if self.counters.get(&prefix).copied().unwrap_or(0) < t.sequence {
                problems.push(format!("counter of {prefix} behind ticket {number}"));
            }
            if !(PRIORITY_NORMAL..=PRIORITY_MAX).contains(&t.priority) {
                problems.push(format!("ticket {number} has priority {}", t.priority));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// Tickets waiting (including re-queued no-shows) per service.
    pub fn waiting_counts(&self) -> BTreeMap<ServiceId, u32> {
        let mut counts = BTreeMap::new();
        for t in self.tickets.values() {
            if t.state == TicketState::Waiting {
                *counts.entry(t.service.clone()).or_insert(0) += 1;
            }
        }
        counts
    }

    /// Applies one event. The only place that mutates the state; depends only on the event.
    fn apply(&mut self, record: &EventRecord, touched: &mut Touched) {
        let at = record.at;
        self.clock = self.clock.max(at);
        self.last_seq = record.seq;
        match &record.event {
            Event::DayStarted { day, starts_at } => {
                self.day = Some(*day);
                for number in std::mem::take(&mut touched.tickets) {
                    if let Some(t) = self.tickets.get(&number) {
                        touched.retired.push(t.clone());
                    }
                }
                self.tickets.clear();
                self.counters.clear();
                self.alarms.clear();
                for stats in self.stats.values_mut() {
                    stats.served_today = 0;
                    stats.service_ms_today = 0;
                }
                let past: Vec<BookingId> = self
                    .bookings
                    .values()
                    .filter(|b| b.slot_start < *starts_at)
                    .map(|b| b.id.clone())
                    .collect();
                for id in past {
                    self.bookings.remove(&id);
                    touched.bookings.remove(&id);
                    touched.removed_bookings.insert(id);
                }
            }
            Event::DayClosed { closed_tickets, .. } => {
                for number in closed_tickets {
                    if let Some(t) = self.tickets.get_mut(number) {
                        t.state = TicketState::Closed;
                        t.finished_at = Some(at);
                        touched.tickets.insert(number.clone());
                    }
                }
                for desk in self.desks.values_mut() {
                    if desk.mode != DeskMode::Closed || desk.current.is_some() {
                        desk.mode = DeskMode::Closed;
                        desk.current = None;
                        desk.since = at;
                        touched.desks.insert(desk.id.clone());
                    }
                }
            }
            Event::PersonalDataPurged { .. } => {}
            Event::TicketIssued { ticket } => {
                let prefix = ticket.number.as_str().split('-').next().unwrap_or_default();
                let counter = self.counters.entry(prefix.to_string()).or_insert(0);
                *counter = (*counter).max(ticket.sequence);
                let booking = match &ticket.origin {
                    TicketOrigin::Appointment { booking, .. } => Some(booking),
                    TicketOrigin::WalkIn { booking } => booking.as_ref(),
                };
                if let Some(b) = booking.and_then(|id| self.bookings.get_mut(id)) {
                    b.ticket = Some(ticket.number.clone());
                    touched.bookings.insert(b.id.clone());
                }
                touched.tickets.insert(ticket.number.clone());
                self.tickets.insert(ticket.number.clone(), ticket.clone());
            }
            Event::TicketCalled { ticket, desk, .. } => {
                if let Some(t) = self.tickets.get_mut(ticket) {
                    t.state = TicketState::Called { desk: desk.clone() };
                    t.calls += 1;
                    t.called_at = Some(at);
                    t.not_before = None;
                    t.serving_since = None;
                }
                self.set_current(desk, Some(ticket.clone()), touched);
                touched.tickets.insert(ticket.clone());
            }
            Event::TicketRecalled { ticket, .. } => {
                if let Some(t) = self.tickets.get_mut(ticket) {
                    t.calls += 1;
                    t.called_at = Some(at);
                }
                touched.tickets.insert(ticket.clone());
            }
            Event::ServiceStarted { ticket, desk } => {
                if let Some(t) = self.tickets.get_mut(ticket) {
                    t.state = TicketState::Serving { desk: desk.clone() };
                    t.serving_since = Some(at);
                }
                touched.tickets.insert(ticket.clone());
            }
            Event::TicketFinished { ticket, desk } => {
                if let Some(t) = self.tickets.get_mut(ticket) {
                    let started = t.serving_since.or(t.called_at).unwrap_or(at);
                    let duration = (at - started).max(0);
                    t.state = TicketState::Done;
                    t.finished_at = Some(at);
                    let stats = self.stats.entry(t.service.clone()).or_default();
                    stats.served_today += 1;
                    stats.service_ms_today += duration;
                    stats.mean_service_ms = Some(match stats.mean_service_ms {
                        None => duration,
                        Some(mean) => (mean * 3 + duration) / 4,
                    });
                }
                self.set_current(desk, None, touched);
                touched.tickets.insert(ticket.clone());
            }
            Event::TicketNoShow {
                ticket,
                desk,
                requeue_at,
            } => {
                if let Some(t) = self.tickets.get_mut(ticket) {
                    match requeue_at {
                        Some(when) => {
                            // Back of the line: the visitor who did not come does not jump
                            // ahead of those who waited meanwhile.
                            t.state = TicketState::Waiting;
                            t.not_before = Some(*when);
                            t.queued_at = *when;
                        }
                        None => {
                            t.state = TicketState::NoShow;
                            t.finished_at = Some(at);
                        }
                    }
                }
                self.set_current(desk, None, touched);
                touched.tickets.insert(ticket.clone());
            }
            Event::TicketForwarded {
                ticket,
                from_desk,
                service,
                desk,
                preferred_until,
            } => {
                if let Some(t) = self.tickets.get_mut(ticket) {
                    t.state = TicketState::Waiting;
                    t.service = service.clone();
                    t.preferred_desk = desk.clone();
                    t.preferred_until = *preferred_until;
                    t.forwards += 1;
                    t.serving_since = None;
                    t.not_before = None;
                }
                self.set_current(from_desk, None, touched);
                touched.tickets.insert(ticket.clone());
            }
            Event::TicketParked { ticket, desk } => {
                if let Some(t) = self.tickets.get_mut(ticket) {
                    t.state = TicketState::Parked { desk: desk.clone() };
                    t.serving_since = None;
                }
                self.set_current(desk, None, touched);
                touched.tickets.insert(ticket.clone());
            }
            Event::TicketResumed {
                ticket,
                desk,
                preferred_until,
            } => {
                if let Some(t) = self.tickets.get_mut(ticket) {
                    t.state = TicketState::Waiting;
                    t.preferred_desk = Some(desk.clone());
                    t.preferred_until = Some(*preferred_until);
                }
                touched.tickets.insert(ticket.clone());
            }
            Event::PriorityChanged { ticket, priority } => {
                if let Some(t) = self.tickets.get_mut(ticket) {
                    t.priority = *priority;
                }
                touched.tickets.insert(ticket.clone());
            }
            Event::DeskModeChanged { desk, mode } => {
                let entry = self.desks.entry(desk.clone()).or_insert_with(|| DeskState {
                    id: desk.clone(),
                    mode: DeskMode::Closed,
                    current: None,
                    since: at,
                });
                entry.mode = *mode;
                entry.since = at;
                touched.desks.insert(desk.clone());
            }
            Event::BookingUpserted { booking, .. } => {
                self.bookings.insert(booking.id.clone(), booking.clone());
                touched.removed_bookings.remove(&booking.id);
                touched.bookings.insert(booking.id.clone());
            }
            Event::BookingCancelled { booking, version } => {
                if let Some(b) = self.bookings.get_mut(booking) {
                    b.status = BookingStatus::Cancelled;
                    b.version = *version;
                }
                touched.bookings.insert(booking.clone());
            }
            Event::TicketPrinted { ticket, printer } => {
                if let Some(t) = self.tickets.get_mut(ticket) {
                    t.print = PrintState::Printed {
                        printer: printer.clone(),
                        at,
                    };
                }
                touched.tickets.insert(ticket.clone());
            }
            Event::TicketPrintFailed {
                ticket,
                printer,
                reason,
            } => {
                if let Some(t) = self.tickets.get_mut(ticket) {
                    t.print = PrintState::Failed {
                        printer: printer.clone(),
                        reason: reason.clone(),
                        at,
                    };
                }
                touched.tickets.insert(ticket.clone());
            }
            Event::ReprintRequested { ticket, .. } => {
                if let Some(t) = self.tickets.get_mut(ticket) {
                    t.print = PrintState::Pending;
                }
                touched.tickets.insert(ticket.clone());
            }
            Event::SilentAlarm { desk } => self.alarms.push(AlarmRecord {
                seq: record.seq,
                at,
                desk: desk.clone(),
                source: record.source.clone(),
            }),
        }
    }

    fn set_current(&mut self, desk: &DeskId, ticket: Option<TicketNumber>, touched: &mut Touched) {
        let entry = self.desks.entry(desk.clone()).or_insert_with(|| DeskState {
            id: desk.clone(),
            mode: DeskMode::Closed,
            current: None,
            since: 0,
        });
        entry.current = ticket;
        touched.desks.insert(desk.clone());
    }

    /// Rebuilds the state by applying a log from its first entry.
    pub fn replay<I>(catalog: &Catalog, records: I) -> Result<State, String>
    where
        I: IntoIterator<Item = EventRecord>,
    {
        let mut state = State::new(catalog);
        let mut touched = Touched::default();
        for record in records {
            if record.seq != state.last_seq + 1 {
                return Err(format!(
                    "log gap: entry {} follows entry {}",
                    record.seq, state.last_seq
                ));
            }
            state.apply(&record, &mut touched);
        }
        Ok(state)
    }
}

impl Engine {
    /// An engine on a fresh, empty state.
    pub fn new(catalog: Arc<Catalog>) -> Self {
        let state = State::new(&catalog);
        Self::with_state(catalog, state, BTreeMap::new())
    }

    /// An engine on the state the store loaded.
    pub fn from_loaded(catalog: Arc<Catalog>, loaded: LoadedState) -> Self {
        let meta = loaded.meta;
        let mut state = State {
            day: meta.day,
            clock: meta.clock,
            last_seq: meta.last_seq,
            tickets: loaded
                .tickets
                .into_iter()
                .map(|t| (t.number.clone(), t))
                .collect(),
            desks: loaded
                .desks
                .into_iter()
                .map(|d| (d.id.clone(), d))
                .collect(),
            bookings: loaded
                .bookings
                .into_iter()
                .map(|b| (b.id.clone(), b))
                .collect(),
            counters: meta.counters,
            stats: meta.stats,
            alarms: meta.alarms,
        };
        state.add_missing_desks(&catalog);
        Self::with_state(catalog, state, loaded.requests.into_iter().collect())
    }

    fn with_state(
        catalog: Arc<Catalog>,
        state: State,
        requests: BTreeMap<String, AnsweredRequest>,
    ) -> Self {
        let day_sums = DaySums::of(state.bookings.values(), &catalog.calendar);
        let mut engine = Self {
            catalog,
            state,
            requests,
            pending: PendingCommit::default(),
            touched: Touched::default(),
            day_sums,
        };
        engine.pending.meta = engine.state.meta();
        engine
    }

    /// The live state.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The catalog.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// Executes one command at `now`: first lets time pass (a new service day closes the old
    /// one), then decides and applies the command. On a refusal nothing of the command is
    /// applied (the day change, being due anyway, stays).
    pub fn execute(
        &mut self,
        request: &CommandRequest,
        now: Millis,
    ) -> Result<Executed, CommandError> {
        let now = now.max(self.state.clock);
        self.advance_to(now);
        // Idempotency keys are scoped by input: the kiosk's "1" is not the web's "1".
        let request_key = request
            .request_id
            .as_ref()
            .map(|id| format!("{}\u{1f}{id}", request.source));
        // Only keyed requests need the fingerprint (a booking sync sends thousands without).
        let fingerprint = request_key
            .as_ref()
            .map(|_| AnsweredRequest::fingerprint(&request.command));
        if let (Some(key), Some(fingerprint)) = (&request_key, &fingerprint) {
            if let Some(answered) = self.requests.get(key) {
                // The same key for another command is a client bug: repeating the first
                // answer would tell it that its second command was done.
                if !answered.command.is_empty() && &answered.command != fingerprint {
                    return Err(CommandError::IdempotencyKeyReused {
                        request_id: request.request_id.clone().unwrap_or_default(),
                    });
                }
                return Ok(Executed {
                    outcome: answered.outcome.clone(),
                    duplicate: true,
                });
            }
        }
        let decided = self.decide(&request.command, now)?;
        for event in decided.events {
            self.record(event, now, request);
        }
        if let Some(booking) = decided.erase_personal {
            // Within one commit the later change wins: an erase cancels data stored before it.
            self.pending.personal.retain(|(id, _, _)| id != &booking);
            self.pending.erase_personal.push(booking);
        }
        if let Some((booking, day, data)) = decided.personal {
            self.pending.erase_personal.retain(|id| id != &booking);
            self.pending.personal.push((booking, day, data));
        }
        let outcome = match decided.outcome {
            Some(outcome) => outcome,
            None => self.issued_outcome(&decided.issued, decided.late_as_walk_in),
        };
        if let (Some(key), Some(fingerprint)) = (request_key, fingerprint) {
            let answered = AnsweredRequest {
                command: fingerprint,
                outcome: outcome.clone(),
            };
            self.requests.insert(key.clone(), answered.clone());
            self.pending.requests.push((key, answered));
        }
        Ok(Executed {
            outcome,
            duplicate: false,
        })
    }

    /// Takes everything changed since the last call, ready to be written.
    pub fn take_pending(&mut self) -> PendingCommit {
        let touched = std::mem::take(&mut self.touched);
        let mut pending = std::mem::take(&mut self.pending);
        pending.tickets = touched.retired;
        pending.tickets.extend(
            touched
                .tickets
                .iter()
                .filter_map(|n| self.state.tickets.get(n).cloned()),
        );
        pending.desks = touched
            .desks
            .iter()
            .filter_map(|d| self.state.desks.get(d).cloned())
            .collect();
        pending.bookings = touched
            .bookings
            .iter()
            .filter_map(|b| self.state.bookings.get(b).cloned())
            .collect();
        pending.removed_bookings = touched.removed_bookings.into_iter().collect();
        pending.meta = self.state.meta();
        pending
    }

    fn record(&mut self, event: Event, now: Millis, request: &CommandRequest) {
        let record = EventRecord {
            seq: self.state.last_seq + 1,
            at: now,
            request_id: request.request_id.clone(),
            source: request.source.clone(),
            event,
        };
        // The day sums follow every change of a booking's day, id or version.
        let booking = match &record.event {
            Event::BookingUpserted { booking, .. } => Some(booking.id.clone()),
            Event::BookingCancelled { booking, .. } => Some(booking.clone()),
            _ => None,
        };
        let calendar = &self.catalog.calendar;
        if let Some(before) = booking.as_ref().and_then(|id| self.state.bookings.get(id)) {
            self.day_sums.remove(before, calendar);
        }
        self.state.apply(&record, &mut self.touched);
        if let Some(after) = booking.as_ref().and_then(|id| self.state.bookings.get(id)) {
            self.day_sums.add(after, calendar);
        }
        if matches!(record.event, Event::DayStarted { .. }) {
            // Past bookings left the state.
            self.day_sums = DaySums::of(self.state.bookings.values(), calendar);
        }
        self.pending.records.push(record);
    }

    /// Count and digest of the live bookings (today and later, tombstones included) per local
    /// day, restricted to `only` when given (contract v1 of the booking sync).
    pub fn booking_days(&self, only: Option<&BTreeSet<Date>>) -> BTreeMap<Date, (u64, String)> {
        self.day_sums.view(only)
    }

    /// Closes the service day if `now` lies in a later one.
    fn advance_to(&mut self, now: Millis) {
        let calendar = &self.catalog.calendar;
        let today = calendar.day_of(now);
        let system = CommandRequest {
            request_id: None,
            source: "clock".to_string(),
            command: Command::Tick,
        };
        match self.state.day {
            Some(day) if day >= today => {}
            previous => {
                let starts_at = calendar.start_of_day(today);
                if let Some(day) = previous {
                    let closed_tickets = self
                        .state
                        .tickets
                        .values()
                        .filter(|t| !t.state.is_final())
                        .map(|t| t.number.clone())
                        .collect();
                    self.record(
                        Event::DayClosed {
                            day,
                            closed_tickets,
                        },
                        now,
                        &system,
                    );
                }
                let retention = i64::from(self.catalog.policy.personal_data_retention_days);
                let before = today
                    .checked_sub(jiff::Span::new().days(retention))
                    .unwrap_or(today);
                self.record(Event::PersonalDataPurged { before }, now, &system);
                self.record(
                    Event::DayStarted {
                        day: today,
                        starts_at,
                    },
                    now,
                    &system,
                );
                self.requests.clear();
                self.pending.requests.clear();
                self.pending.purge_personal_before = Some(before);
                self.pending.purge_requests_before = Some(today);
            }
        }
    }

    fn desk(&self, id: &DeskId) -> Result<&Desk, CommandError> {
        self.catalog
            .desks
            .get(id)
            .ok_or_else(|| CommandError::UnknownDesk { desk: id.clone() })
    }

    fn desk_state(&self, id: &DeskId) -> Result<&DeskState, CommandError> {
        self.desk(id)?;
        self.state
            .desks
            .get(id)
            .ok_or_else(|| CommandError::UnknownDesk { desk: id.clone() })
    }

    fn ticket(&self, number: &TicketNumber) -> Result<&Ticket, CommandError> {
        self.state
            .tickets
            .get(number)
            .ok_or_else(|| CommandError::UnknownTicket {
                ticket: number.clone(),
            })
    }

    /// The desk's current ticket, which must be in one of the `allowed` states.
    fn current_ticket(
        &self,
        desk: &DeskId,
        command: &str,
        allowed: &[&str],
    ) -> Result<&Ticket, CommandError> {
        let state = self.desk_state(desk)?;
        let number = state
            .current
            .as_ref()
            .ok_or_else(|| CommandError::DeskIdle { desk: desk.clone() })?;
        let ticket = self.ticket(number)?;
        if !allowed.contains(&ticket.state.name()) {
            return Err(wrong_state(ticket, command, &allowed.join(" or ")));
        }
        Ok(ticket)
    }

    /// A "next" within [`Policy::repeat_next_within`] of the desk's last call (the visitor is
    /// still only called, not served): the same press again, from a bouncing contact or a
    /// double click. It answers with that call and changes nothing, so nobody is finished
    /// unserved and no one-second "service" enters the wait estimates.
    fn repeated_call(&self, desk: &DeskId, now: Millis) -> Result<Option<Outcome>, CommandError> {
        let window = self.catalog.policy.repeat_next_within;
        let Some(current) = &self.desk_state(desk)?.current else {
            return Ok(None);
        };
        let t = self.ticket(current)?;
        let recent = matches!(t.state, TicketState::Called { .. })
            && t.called_at.is_some_and(|at| now >= at && now - at < window);
        Ok(recent.then(|| Outcome::Called {
            ticket: t.number.clone(),
            desk: desk.clone(),
            finished: None,
        }))
    }

    fn require_open(&self, desk: &DeskId) -> Result<&DeskState, CommandError> {
        let state = self.desk_state(desk)?;
        if state.mode != DeskMode::Open {
            return Err(CommandError::DeskNotOpen {
                desk: desk.clone(),
                mode: state.mode,
            });
        }
        Ok(state)
    }

    fn decide(&self, command: &Command, now: Millis) -> Result<Decided, CommandError> {
        let policy = &self.catalog.policy;
        match command {
            Command::Tick | Command::ConfirmClock => Ok(Decided::outcome(Outcome::Unchanged)),
            Command::WalkIn { service, priority } => {
                check_priority(*priority)?;
                let ticket = self.new_ticket(
                    service,
                    TicketOrigin::WalkIn { booking: None },
                    *priority,
                    None,
                    None,
                    now,
                )?;
                Ok(Decided::issued(ticket, false))
            }
            Command::CheckIn { booking } => self.decide_check_in(booking, now),
            Command::CheckInWithToken {
                booking,
                service,
                slot_start,
                version,
            } => {
                let stored = self.state.bookings.get(booking);
                if stored.is_some_and(|b| b.version >= *version) {
                    // The website's booking is as new or newer (maybe cancelled or moved):
                    // it decides.
                    return self.decide_check_in(booking, now);
                }
                // Offline first: the booking has not arrived yet (or only an older version):
                // the signed token vouches for it, and it is stored with the check-in.
                if !self.catalog.services.contains_key(service) {
                    return Err(CommandError::UnknownService {
                        service: service.clone(),
                    });
                }
                let vouched = Booking {
                    id: booking.clone(),
                    version: *version,
                    service: service.clone(),
                    slot_start: *slot_start,
                    duration_minutes: stored.map_or(TOKEN_BOOKING_MINUTES, |b| b.duration_minutes),
                    status: BookingStatus::Booked,
                    desk: stored.and_then(|b| b.desk.clone()),
                    ticket: stored.and_then(|b| b.ticket.clone()),
                    refusal: None,
                    vouched: true,
                };
                let mut decided = self.decide_check_in_of(&vouched, now)?;
                decided.events.insert(
                    0,
                    Event::BookingUpserted {
                        booking: vouched,
                        has_personal_data: false,
                    },
                );
                Ok(decided)
            }
            Command::CallNext { desk } => {
                self.require_open(desk)?;
                if let Some(repeated) = self.repeated_call(desk, now)? {
                    return Ok(Decided::outcome(repeated));
                }
                let mut events = Vec::new();
                let mut finished = None;
                if let Some(current) = &self.desk_state(desk)?.current {
                    events.push(Event::TicketFinished {
                        ticket: current.clone(),
                        desk: desk.clone(),
                    });
                    finished = Some(current.clone());
                }
                match self.best_for(desk, now)? {
                    Some(next) => {
                        events.push(Event::TicketCalled {
                            ticket: next.clone(),
                            desk: desk.clone(),
                            out_of_order: false,
                        });
                        Ok(Decided::events(
                            events,
                            Outcome::Called {
                                ticket: next,
                                desk: desk.clone(),
                                finished,
                            },
                        ))
                    }
                    None => match finished {
                        Some(ticket) => Ok(Decided::events(
                            events,
                            Outcome::TicketUpdated {
                                ticket,
                                state: TicketState::Done,
                            },
                        )),
                        None => Err(CommandError::NothingWaiting { desk: desk.clone() }),
                    },
                }
            }
            Command::CallTicket { desk, ticket } => {
                let desk_state = self.require_open(desk)?;
                let t = self.ticket(ticket)?;
                if t.state != TicketState::Waiting {
                    return Err(wrong_state(t, "call_ticket", "waiting"));
                }
                if !self.desk(desk)?.serves(&t.service) {
                    return Err(CommandError::ServiceNotServed {
                        desk: desk.clone(),
                        service: t.service.clone(),
                    });
                }
                let mut events = Vec::new();
                let mut finished = None;
                if let Some(current) = &desk_state.current {
                    events.push(Event::TicketFinished {
                        ticket: current.clone(),
                        desk: desk.clone(),
                    });
                    finished = Some(current.clone());
                }
                events.push(Event::TicketCalled {
                    ticket: ticket.clone(),
                    desk: desk.clone(),
                    out_of_order: true,
                });
                Ok(Decided::events(
                    events,
                    Outcome::Called {
                        ticket: ticket.clone(),
                        desk: desk.clone(),
                        finished,
                    },
                ))
            }
            Command::Recall { desk } => {
                let t = self.current_ticket(desk, "recall", &["called"])?;
                Ok(Decided::ticket_event(
                    Event::TicketRecalled {
                        ticket: t.number.clone(),
                        desk: desk.clone(),
                    },
                    t,
                    t.state.clone(),
                ))
            }
            Command::StartService { desk } => {
                let t = self.current_ticket(desk, "start_service", &["called"])?;
                Ok(Decided::ticket_event(
                    Event::ServiceStarted {
                        ticket: t.number.clone(),
                        desk: desk.clone(),
                    },
                    t,
                    TicketState::Serving { desk: desk.clone() },
                ))
            }
            Command::Finish { desk } => {
                let t = self.current_ticket(desk, "finish", &["called", "serving"])?;
                Ok(Decided::ticket_event(
                    Event::TicketFinished {
                        ticket: t.number.clone(),
                        desk: desk.clone(),
                    },
                    t,
                    TicketState::Done,
                ))
            }
            Command::NoShow { desk } => {
                let t = self.current_ticket(desk, "no_show", &["called"])?;
                let requeue_at =
                    (t.calls < policy.max_calls).then_some(now + policy.no_show_requeue_delay);
                let state = if requeue_at.is_some() {
                    TicketState::Waiting
                } else {
                    TicketState::NoShow
                };
                Ok(Decided::ticket_event(
                    Event::TicketNoShow {
                        ticket: t.number.clone(),
                        desk: desk.clone(),
                        requeue_at,
                    },
                    t,
                    state,
                ))
            }
            Command::Forward { desk, target } => {
                let t = self.current_ticket(desk, "forward", &["called", "serving"])?;
                let (service, to_desk, preferred_until) = match target {
                    ForwardTarget::Service(service) => {
                        if !self.catalog.services.contains_key(service) {
                            return Err(CommandError::UnknownService {
                                service: service.clone(),
                            });
                        }
                        (service.clone(), None, None)
                    }
                    ForwardTarget::Desk(to) => {
                        let to_desk = self.desk(to)?;
                        if to == desk {
                            return Err(CommandError::InvalidForward {
                                reason: format!("ticket {} is already at desk {desk}", t.number),
                            });
                        }
                        if !to_desk.serves(&t.service) {
                            return Err(CommandError::ServiceNotServed {
                                desk: to.clone(),
                                service: t.service.clone(),
                            });
                        }
                        (
                            t.service.clone(),
                            Some(to.clone()),
                            Some(now + policy.named_desk_grace),
                        )
                    }
                };
                Ok(Decided::ticket_event(
                    Event::TicketForwarded {
                        ticket: t.number.clone(),
                        from_desk: desk.clone(),
                        service,
                        desk: to_desk,
                        preferred_until,
                    },
                    t,
                    TicketState::Waiting,
                ))
            }
            Command::Park { desk } => {
                let t = self.current_ticket(desk, "park", &["serving"])?;
                Ok(Decided::ticket_event(
                    Event::TicketParked {
                        ticket: t.number.clone(),
                        desk: desk.clone(),
                    },
                    t,
                    TicketState::Parked { desk: desk.clone() },
                ))
            }
            Command::ResumeAtDesk { desk, ticket } => {
                self.desk(desk)?;
                let parked_here =
                    |t: &&Ticket| matches!(&t.state, TicketState::Parked { desk: d } if d == desk);
                let parked = match ticket {
                    Some(number) => {
                        let t = self.ticket(number)?;
                        if !parked_here(&t) {
                            return Err(wrong_state(
                                t,
                                "resume",
                                &format!("parked at desk {desk}"),
                            ));
                        }
                        t
                    }
                    None => self
                        .state
                        .tickets
                        .values()
                        .filter(parked_here)
                        .min_by_key(|t| (t.called_at, t.sequence))
                        .ok_or_else(|| CommandError::NothingParked { desk: desk.clone() })?,
                };
                self.decide(
                    &Command::Resume {
                        ticket: parked.number.clone(),
                    },
                    now,
                )
            }
            Command::Resume { ticket } => {
                let t = self.ticket(ticket)?;
                let TicketState::Parked { desk } = &t.state else {
                    return Err(wrong_state(t, "resume", "parked"));
                };
                Ok(Decided::ticket_event(
                    Event::TicketResumed {
                        ticket: t.number.clone(),
                        desk: desk.clone(),
                        preferred_until: now + policy.named_desk_grace,
                    },
                    t,
                    TicketState::Waiting,
                ))
            }
            Command::SetPriority { ticket, priority } => {
                check_priority(*priority)?;
                let t = self.ticket(ticket)?;
                if t.state.is_final() {
                    return Err(wrong_state(t, "set_priority", "not finished"));
                }
                if t.priority == *priority {
                    return Ok(Decided::outcome(Outcome::Unchanged));
                }
                Ok(Decided::ticket_event(
                    Event::PriorityChanged {
                        ticket: t.number.clone(),
                        priority: *priority,
                    },
                    t,
                    t.state.clone(),
                ))
            }
            Command::OpenDesk { desk } => self.decide_desk_mode(desk, DeskMode::Open),
            Command::PauseDesk { desk } => self.decide_desk_mode(desk, DeskMode::Paused),
            Command::CloseDesk { desk } => self.decide_desk_mode(desk, DeskMode::Closed),
            Command::UpsertBooking { booking } => self.decide_upsert_booking(booking, now),
            Command::CancelBooking { booking, version } => {
                let existing = self.state.bookings.get(booking).ok_or_else(|| {
                    CommandError::UnknownBooking {
                        booking: booking.clone(),
                    }
                })?;
                if *version <= existing.version {
                    return Ok(Decided::outcome(Outcome::BookingIgnored {
                        booking: booking.clone(),
                        stored_version: existing.version,
                    }));
                }
                Ok(Decided::events(
                    vec![Event::BookingCancelled {
                        booking: booking.clone(),
                        version: *version,
                    }],
                    Outcome::BookingApplied {
                        booking: booking.clone(),
                        version: *version,
                    },
                ))
            }
            Command::RecordPrint {
                ticket,
                printer,
                outcome,
            } => {
                self.ticket(ticket)?;
                let (event, print) = match outcome {
                    PrintOutcome::Printed => (
                        Event::TicketPrinted {
                            ticket: ticket.clone(),
                            printer: printer.clone(),
                        },
                        PrintState::Printed {
                            printer: printer.clone(),
                            at: now,
                        },
                    ),
                    PrintOutcome::Failed { reason } => (
                        Event::TicketPrintFailed {
                            ticket: ticket.clone(),
                            printer: printer.clone(),
                            reason: reason.clone(),
                        },
                        PrintState::Failed {
                            printer: printer.clone(),
                            reason: reason.clone(),
                            at: now,
                        },
                    ),
                };
                Ok(Decided::events(
                    vec![event],
                    Outcome::PrintRecorded {
                        ticket: ticket.clone(),
                        print,
                    },
                ))
            }
            Command::Reprint { ticket } => {
                let t = self.ticket(ticket)?;
                if t.state.is_final() {
                    return Err(wrong_state(
                        t,
                        "reprint",
                        "waiting, called, serving or parked",
                    ));
                }
                // The reprint goes to the printer of the last outcome: the state turns
                // pending with the event, so the event carries it.
                let printer = match &t.print {
                    PrintState::Failed { printer, .. } | PrintState::Printed { printer, .. } => {
                        Some(printer.clone())
                    }
                    PrintState::Pending => None,
                };
                Ok(Decided::events(
                    vec![Event::ReprintRequested {
                        ticket: ticket.clone(),
                        printer,
                    }],
                    Outcome::ReprintRequested {
                        ticket: ticket.clone(),
                    },
                ))
            }
            Command::SilentAlarm { desk } => {
                self.desk(desk)?;
                Ok(Decided::events(
                    vec![Event::SilentAlarm { desk: desk.clone() }],
                    Outcome::AlarmRecorded { desk: desk.clone() },
                ))
            }
        }
    }

    fn decide_desk_mode(&self, desk: &DeskId, mode: DeskMode) -> Result<Decided, CommandError> {
        let state = self.desk_state(desk)?;
        if state.mode == mode {
            return Ok(Decided::outcome(Outcome::Unchanged));
        }
        if mode == DeskMode::Closed {
            if let Some(ticket) = &state.current {
                return Err(CommandError::DeskBusy {
                    desk: desk.clone(),
                    ticket: ticket.clone(),
                });
            }
        }
        Ok(Decided::events(
            vec![Event::DeskModeChanged {
                desk: desk.clone(),
                mode,
            }],
            Outcome::DeskUpdated {
                desk: desk.clone(),
                mode,
            },
        ))
    }

    fn decide_check_in(&self, id: &BookingId, now: Millis) -> Result<Decided, CommandError> {
        let booking = self
            .state
            .bookings
            .get(id)
            .ok_or_else(|| CommandError::UnknownBooking {
                booking: id.clone(),
            })?;
        self.decide_check_in_of(booking, now)
    }

    fn decide_check_in_of(&self, booking: &Booking, now: Millis) -> Result<Decided, CommandError> {
        let policy = &self.catalog.policy;
        let calendar = &self.catalog.calendar;
        let id = &booking.id;
        match booking.status {
            BookingStatus::Cancelled => {
                return Err(CommandError::BookingCancelled {
                    booking: id.clone(),
                });
            }
            BookingStatus::Deleted => {
                return Err(CommandError::BookingDeleted {
                    booking: id.clone(),
                });
            }
            BookingStatus::Refused => {
                return Err(CommandError::BookingNotAccepted {
                    booking: id.clone(),
                    reason: booking.refusal.clone().unwrap_or_default(),
                });
            }
            BookingStatus::Booked => {}
        }
        if let Some(ticket) = &booking.ticket {
            return Err(CommandError::AlreadyCheckedIn {
                booking: id.clone(),
                ticket: ticket.clone(),
            });
        }
        let slot_day = calendar.day_of(booking.slot_start);
        if Some(slot_day) != self.state.day {
            return Err(CommandError::WrongDay {
                booking: id.clone(),
                day: slot_day,
            });
        }
        let opens = booking.slot_start - policy.checkin_early;
        if now < opens {
            return Err(CommandError::TooEarly {
                booking: id.clone(),
                opens_at: calendar.local_hhmm(opens),
            });
        }
        let preferred = booking
            .desk
            .clone()
            .filter(|d| self.desk(d).is_ok_and(|desk| desk.serves(&booking.service)));
        if now > booking.slot_start + policy.checkin_late {
            return match policy.late_arrival {
                LateArrival::Refuse => Err(CommandError::TooLate {
                    booking: id.clone(),
                    slot: calendar.local_hhmm(booking.slot_start),
                }),
                LateArrival::WalkIn => {
                    let ticket = self.new_ticket(
                        &booking.service,
                        TicketOrigin::WalkIn {
                            booking: Some(id.clone()),
                        },
                        PRIORITY_NORMAL,
                        None,
                        None,
                        now,
                    )?;
                    Ok(Decided::issued(ticket, true))
                }
            };
        }
        let due = booking.slot_start - policy.appointment_due_before;
        let preferred_until = preferred
            .as_ref()
            .map(|_| due.max(now) + policy.named_desk_grace);
        let ticket = self.new_ticket(
            &booking.service,
            TicketOrigin::Appointment {
                booking: id.clone(),
                slot_start: booking.slot_start,
            },
            PRIORITY_NORMAL,
            preferred,
            preferred_until,
            now,
        )?;
        Ok(Decided::issued(ticket, false))
    }

    fn decide_upsert_booking(
        &self,
        input: &BookingInput,
        now: Millis,
    ) -> Result<Decided, CommandError> {
        let invalid = |reason: &str| CommandError::InvalidBooking {
            booking: input.id.clone(),
            reason: reason.to_string(),
        };
        if input.id.as_str().is_empty() || input.id.as_str().chars().count() > 128 {
            return Err(invalid("the id must have 1 to 128 characters"));
        }
        let calendar = &self.catalog.calendar;
        let today = self.state.day.unwrap_or_else(|| calendar.day_of(now));
        let day = calendar.day_of(input.slot_start);
        if day < today {
            return Err(invalid("the slot lies before today"));
        }
        if input.slot_start > calendar.start_of_day(today) + 400 * 24 * 60 * MINUTE {
            return Err(invalid("the slot lies more than a year ahead"));
        }
        let existing = self.state.bookings.get(&input.id);
        if let Some(existing) = existing {
            // A booking vouched for by a signed code is replaced by the website's own of the
            // same version (it brings the duration, the desk and the personal data).
            let replaces_vouched = existing.vouched && input.version == existing.version;
            if input.version <= existing.version && !replaces_vouched {
                return Ok(Decided::outcome(Outcome::BookingIgnored {
                    booking: input.id.clone(),
                    stored_version: existing.version,
                }));
            }
        }
        // What this appliance cannot take is stored as refused, with its version, so the
        // day's count and digest still match the website's and the next message does not
        // refuse it again. Cancelled and deleted bookings are stored whatever they name:
        // nobody is served for them.
        let refusal = match (&input.refusal, input.status) {
            (Some(reason), _) => Some(reason.clone()),
            (None, BookingStatus::Booked | BookingStatus::Refused) => {
                self.booking_refusal(input).err()
            }
            (None, _) => None,
        };
        let status = match &refusal {
            Some(_) => BookingStatus::Refused,
            None => input.status,
        };
        // Cancelled, deleted and refused bookings keep no personal data; a deletion erases
        // what was stored.
        let personal = input
            .personal
            .clone()
            .filter(|p| !p.is_empty() && status == BookingStatus::Booked);
        let booking = Booking {
            id: input.id.clone(),
            version: input.version,
            service: input.service.clone(),
            slot_start: input.slot_start,
            duration_minutes: input.duration_minutes,
            status,
            desk: input.desk.clone(),
            ticket: existing.and_then(|b| b.ticket.clone()),
            refusal: refusal.clone(),
            vouched: false,
        };
        let outcome = match refusal {
            Some(reason) => Outcome::BookingRefused {
                booking: input.id.clone(),
                version: input.version,
                reason,
            },
            None => Outcome::BookingApplied {
                booking: input.id.clone(),
                version: input.version,
            },
        };
        let mut decided = Decided::events(
            vec![Event::BookingUpserted {
                booking,
                has_personal_data: personal.is_some(),
            }],
            outcome,
        );
        decided.personal = personal.map(|p| (input.id.clone(), day, p));
        if status != BookingStatus::Booked {
            decided.erase_personal = Some(input.id.clone());
        }
        Ok(decided)
    }

    /// Why this appliance cannot serve a booked appointment, if it cannot.
    fn booking_refusal(&self, input: &BookingInput) -> Result<(), String> {
        if !self.catalog.services.contains_key(&input.service) {
            return Err(CommandError::UnknownService {
                service: input.service.clone(),
            }
            .to_string());
        }
        if input.duration_minutes == 0 || input.duration_minutes > 480 {
            return Err("duration must be 1 to 480 minutes".to_string());
        }
        if let Some(desk) = &input.desk {
            let d = self.desk(desk).map_err(|e| e.to_string())?;
            if !d.serves(&input.service) {
                return Err(CommandError::ServiceNotServed {
                    desk: desk.clone(),
                    service: input.service.clone(),
                }
                .to_string());
            }
        }
        if let Some(personal) = &input.personal {
            let too_long =
                |f: &Option<String>| f.as_ref().is_some_and(|s| s.chars().count() > 1_000);
            if too_long(&personal.name) || too_long(&personal.note) {
                return Err("personal data fields are limited to 1000 characters".to_string());
            }
        }
        Ok(())
    }

    fn new_ticket(
        &self,
        service: &ServiceId,
        origin: TicketOrigin,
        priority: u8,
        preferred_desk: Option<DeskId>,
        preferred_until: Option<Millis>,
        now: Millis,
    ) -> Result<Ticket, CommandError> {
        let svc =
            self.catalog
                .services
                .get(service)
                .ok_or_else(|| CommandError::UnknownService {
                    service: service.clone(),
                })?;
        let sequence = self.state.counters.get(&svc.prefix).copied().unwrap_or(0) + 1;
        if sequence > MAX_SEQUENCE {
            return Err(CommandError::NumbersExhausted {
                prefix: svc.prefix.clone(),
            });
        }
        let day = self
            .state
            .day
            .unwrap_or_else(|| self.catalog.calendar.day_of(now));
        Ok(Ticket {
            number: TicketNumber::new(format!("{}-{sequence:03}", svc.prefix)),
            day,
            sequence,
            service: service.clone(),
            origin,
            priority,
            preferred_desk,
            preferred_until,
            state: TicketState::Waiting,
            issued_at: now,
            queued_at: now,
            not_before: None,
            calls: 0,
            called_at: None,
            serving_since: None,
            finished_at: None,
            forwards: 0,
            print: PrintState::Pending,
        })
    }

    /// The ticket `desk` would call at `now`, by the queue policy.
    pub fn best_for(
        &self,
        desk: &DeskId,
        now: Millis,
    ) -> Result<Option<TicketNumber>, CommandError> {
        let desk_def = self.desk(desk)?;
        let policy = &self.catalog.policy;
        let best = self
            .state
            .tickets
            .values()
            .filter(|t| t.state == TicketState::Waiting)
            .filter(|t| desk_def.serves(&t.service))
            .filter(|t| t.not_before.is_none_or(|nb| nb <= now))
            .filter(|t| match &t.preferred_desk {
                None => true,
                Some(p) if p == desk => true,
                Some(_) => t.preferred_until.is_none_or(|until| now >= until),
            })
            .min_by_key(|t| queue_rank(t, desk, now, policy));
        Ok(best.map(|t| t.number.clone()))
    }

    /// Estimated wait for a ticket of `service` issued now: the visitors waiting times the
    /// mean service time, shared among the open desks serving it.
    pub fn estimated_wait(&self, service: &ServiceId) -> Millis {
        self.wait_behind(service, self.waiting_for(service))
    }

    fn waiting_for(&self, service: &ServiceId) -> i64 {
        self.state
            .tickets
            .values()
            .filter(|t| t.state == TicketState::Waiting && &t.service == service)
            .count() as i64
    }

    /// The wait behind `ahead` visitors of `service`, from measured service times (the
    /// configured expectation until one is measured) and the open desks serving it.
    fn wait_behind(&self, service: &ServiceId, ahead: i64) -> Millis {
        let mean = self
            .state
            .stats
            .get(service)
            .and_then(|s| s.mean_service_ms)
            .or_else(|| self.catalog.services.get(service).map(|s| s.expected))
            .unwrap_or(10 * MINUTE);
        let open_desks = self
            .catalog
            .desks
            .values()
            .filter(|d| d.serves(service))
            .filter(|d| {
                self.state
                    .desks
                    .get(&d.id)
                    .is_some_and(|s| s.mode == DeskMode::Open)
            })
            .count()
            .max(1) as i64;
        ahead.max(0) * mean / open_desks
    }

    fn issued_outcome(&self, issued: &Option<TicketNumber>, late_as_walk_in: bool) -> Outcome {
        let Some(ticket) = issued.as_ref().and_then(|n| self.state.tickets.get(n)) else {
            return Outcome::Unchanged;
        };
        let department = self
            .catalog
            .services
            .get(&ticket.service)
            .map(|s| s.department.clone())
            .unwrap_or_else(|| crate::domain::DepartmentId::new(""));
        // The new ticket itself is waiting too: only those ahead of it count.
        let wait = self.wait_behind(&ticket.service, self.waiting_for(&ticket.service) - 1);
        Outcome::TicketIssued {
            ticket: ticket.number.clone(),
            service: ticket.service.clone(),
            department,
            waiting_area: self.catalog.waiting_area_of(&ticket.service),
            desk: ticket.preferred_desk.clone(),
            late_as_walk_in,
            estimated_wait_minutes: u32::try_from((wait + MINUTE - 1) / MINUTE).unwrap_or(u32::MAX),
        }
    }
}

/// The order in which a desk calls waiting tickets (smallest first): priority; then the
/// desk's own due tickets (booking with this clerk, forward, resume); then walk-ins that waited
/// past the bound; then due appointments by slot; then walk-ins first come first served; then
/// appointments not yet due (an idle desk may take them early); the daily sequence breaks ties.
fn queue_rank(
    t: &Ticket,
    desk: &DeskId,
    now: Millis,
    policy: &crate::catalog::Policy,
) -> (Reverse<u8>, bool, u8, Millis, u32) {
    let (due_at, time) = match &t.origin {
        TicketOrigin::Appointment { slot_start, .. } => {
            (slot_start - policy.appointment_due_before, *slot_start)
        }
        TicketOrigin::WalkIn { .. } => (t.queued_at, t.queued_at),
    };
    let due = now >= due_at;
    let own = due && t.preferred_desk.as_ref() == Some(desk);
    let class = match &t.origin {
        TicketOrigin::WalkIn { .. } if now - t.queued_at >= policy.walk_in_max_wait => 0,
        TicketOrigin::Appointment { .. } if due => 1,
        TicketOrigin::WalkIn { .. } => 2,
        TicketOrigin::Appointment { .. } => 3,
    };
    (Reverse(t.priority), !own, class, time, t.sequence)
}

fn check_priority(priority: u8) -> Result<(), CommandError> {
    if (PRIORITY_NORMAL..=PRIORITY_MAX).contains(&priority) {
        Ok(())
    } else {
        Err(CommandError::InvalidPriority { priority })
    }
}

fn wrong_state(t: &Ticket, command: &str, expected: &str) -> CommandError {
    CommandError::WrongTicketState {
        ticket: t.number.clone(),
        state: t.state.name().to_string(),
        command: command.to_string(),
        expected: expected.to_string(),
    }
}

/// The result of deciding a command: its events and the answer.
struct Decided {
    events: Vec<Event>,
    outcome: Option<Outcome>,
    issued: Option<TicketNumber>,
    late_as_walk_in: bool,
    personal: Option<(BookingId, Date, PersonalData)>,
    erase_personal: Option<BookingId>,
}

impl Decided {
    fn outcome(outcome: Outcome) -> Self {
        Self::events(Vec::new(), outcome)
    }

    fn events(events: Vec<Event>, outcome: Outcome) -> Self {
        Self {
            events,
            outcome: Some(outcome),
            issued: None,
            late_as_walk_in: false,
            personal: None,
            erase_personal: None,
        }
    }

    fn ticket_event(event: Event, t: &Ticket, state: TicketState) -> Self {
        Self::events(
            vec![event],
            Outcome::TicketUpdated {
                ticket: t.number.clone(),
                state,
            },
        )
    }

    fn issued(ticket: Ticket, late_as_walk_in: bool) -> Self {
        Self {
            issued: Some(ticket.number.clone()),
            events: vec![Event::TicketIssued { ticket }],
            outcome: None,
            late_as_walk_in,
            personal: None,
            erase_personal: None,
        }
    }
}

/// Checks a store's consistency: the views loaded from it must equal the state rebuilt from
/// its log, the live state (if given) must equal both, and the invariants must hold. Returns
/// every problem found (empty when consistent).
pub fn verify_consistency<I>(
    catalog: &Catalog,
    loaded: LoadedState,
    log: I,
    live: Option<&State>,
) -> Vec<String>
where
    I: IntoIterator<Item = EventRecord>,
{
    let mut problems = Vec::new();
    let from_views = Engine::from_loaded(Arc::new(catalog.clone()), loaded).state;
    match State::replay(catalog, log) {
        Err(e) => problems.push(e),
        Ok(replayed) => {
            problems.extend(diff_states("views", &from_views, "log", &replayed));
        }
    }
    if let Some(live) = live {
        problems.extend(diff_states("memory", live, "views", &from_views));
    }
    if let Err(found) = from_views.check_invariants() {
        problems.extend(found);
    }
    problems
}

fn diff_states(a_name: &str, a: &State, b_name: &str, b: &State) -> Vec<String> {
    let mut out = Vec::new();
    if a.day != b.day || a.last_seq != b.last_seq || a.clock != b.clock {
        out.push(format!(
            "{a_name} at day {:?} event {} clock {} but {b_name} at day {:?} event {} clock {}",
            a.day, a.last_seq, a.clock, b.day, b.last_seq, b.clock
        ));
    }
    for (name, x, y) in [
        ("tickets", json_of(&a.tickets), json_of(&b.tickets)),
        ("desks", json_of(&a.desks), json_of(&b.desks)),
        ("bookings", json_of(&a.bookings), json_of(&b.bookings)),
        ("counters", json_of(&a.counters), json_of(&b.counters)),
        ("stats", json_of(&a.stats), json_of(&b.stats)),
        ("alarms", json_of(&a.alarms), json_of(&b.alarms)),
    ] {
        if x != y {
            out.push(format!(
                "{name} differ between {a_name} and {b_name}: {x} vs {y}"
            ));
        }
    }
    out
}

fn json_of<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}
