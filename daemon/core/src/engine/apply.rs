//! Applying events: the only mutation of [`State`], depending on nothing but the event and
//! its time (so replaying the log rebuilds the same state); replay and the invariants.

use super::{Acknowledgement, AlarmRecord, Meta, State, Touched};
use crate::catalog::Catalog;
use crate::domain::{
    BookingId, BookingStatus, DeskId, DeskMode, DeskState, Event, EventRecord, PRIORITY_MAX,
    PRIORITY_NORMAL, PrintState, ServiceId, TicketNumber, TicketOrigin, TicketState,
};
use std::collections::BTreeMap;

impl State {
    /// A fresh state: every configured desk closed.
    pub fn new(catalog: &Catalog) -> Self {
        let mut state = State::default();
        state.add_missing_desks(catalog);
        state
    }

    pub(super) fn add_missing_desks(&mut self, catalog: &Catalog) {
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
    pub(super) fn apply(&mut self, record: &EventRecord, touched: &mut Touched) {
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
                acknowledged: None,
            }),
            Event::AlarmAcknowledged { alarm } => {
                if let Some(raised) = self.alarms.iter_mut().find(|a| a.seq == *alarm) {
                    raised.acknowledged = Some(Acknowledgement {
                        at,
                        by: record.source.clone(),
                    });
                }
            }
        }
    }

    pub(super) fn set_current(
        &mut self,
        desk: &DeskId,
        ticket: Option<TicketNumber>,
        touched: &mut Touched,
    ) {
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
