//! The queue engine: the one place where the queue changes.
//!
//! A command is first *decided* against the current state (pure: no change, typed error on
//! refusal), which yields events; the events are then *applied* to the state. Applying is the
//! only mutation and depends on nothing but the event and its time, so replaying the durable
//! log rebuilds exactly the same state. The engine collects what a command changed into a
//! [`PendingCommit`]; the daemon writes it to the store durably and only then acknowledges.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use crate::catalog::{Catalog, Desk};
use crate::clock::Millis;
use crate::contract::DaySums;
use crate::domain::{
    Booking, BookingId, Command, CommandError, CommandRequest, DeskId, DeskMode, DeskState, Event,
    EventRecord, Outcome, PersonalData, ServiceId, Ticket, TicketNumber, TicketState,
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
    /// Who acknowledged it, and when; `None` while it is raised (absent in stores written
    /// before acknowledgements existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged: Option<Acknowledgement>,
}

/// Someone took care of a silent alarm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acknowledgement {
    /// When.
    pub at: Millis,
    /// The input it came from (`web:chef`, `ctl`).
    pub by: String,
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

mod apply;
mod bookings;
mod decide;
mod ranking;
mod verify;

pub use verify::verify_consistency;

use decide::wrong_state;

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
