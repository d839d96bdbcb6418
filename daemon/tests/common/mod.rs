//! Test helpers: an engine on the demo catalog driven through commands at chosen local times.

#![allow(dead_code)]

use std::sync::Arc;

use leitsystem::catalog::{Catalog, Policy};
use leitsystem::clock::{Millis, parse_instant};
use leitsystem::config::Config;
use leitsystem::domain::{
    BookingId, BookingInput, Command, CommandError, CommandRequest, DeskId, Outcome, ServiceId,
    Ticket, TicketNumber,
};
use leitsystem::engine::{Engine, PendingCommit, State};

/// The demo catalog with `policy` changed by `tweak`.
pub fn catalog_with(tweak: impl FnOnce(&mut Policy)) -> Arc<Catalog> {
    let config = Config::demo().expect("the demo config is valid");
    let mut catalog = leitsystem::catalog::from_config(&config).expect("Europe/Berlin is known");
    // The ranking scenarios press "next" back to back at one instant; the window that turns
    // such a press into a repeat of the call has tests of its own that set it.
    catalog.policy.repeat_next_within = 0;
    tweak(&mut catalog.policy);
    Arc::new(catalog)
}

/// An engine plus a clock set to local times of one day.
pub struct Sim {
    pub engine: Engine,
    pub day: String,
    pub now: Millis,
    pub commits: Vec<PendingCommit>,
}

impl Sim {
    /// A simulation on 2026-06-15 (a Monday, summer time) at 08:00 local time.
    pub fn new() -> Self {
        Self::with_policy(|_| {})
    }

    pub fn with_policy(tweak: impl FnOnce(&mut Policy)) -> Self {
        let mut sim = Sim {
            engine: Engine::new(catalog_with(tweak)),
            day: "2026-06-15".to_string(),
            now: 0,
            commits: Vec::new(),
        };
        sim.at("08:00");
        sim
    }

    /// Local instant `HH:MM` on the simulation's day.
    pub fn local(&self, hhmm: &str) -> Millis {
        local_instant(&self.day, hhmm)
    }

    /// Sets the clock to local `HH:MM` on the simulation's day.
    pub fn at(&mut self, hhmm: &str) {
        self.now = self.local(hhmm);
    }

    pub fn run(&mut self, command: Command) -> Result<Outcome, CommandError> {
        self.run_with_id(None, command)
    }

    pub fn run_with_id(
        &mut self,
        request_id: Option<&str>,
        command: Command,
    ) -> Result<Outcome, CommandError> {
        let request = CommandRequest {
            request_id: request_id.map(str::to_string),
            source: "test".to_string(),
            command,
        };
        let result = self.engine.execute(&request, self.now);
        self.commits.push(self.engine.take_pending());
        result.map(|e| e.outcome)
    }

    pub fn ok(&mut self, command: Command) -> Outcome {
        let name = command.name();
        self.run(command)
            .unwrap_or_else(|e| panic!("{name} refused: {e}"))
    }

    pub fn open(&mut self, desk: &str) {
        self.ok(Command::OpenDesk {
            desk: DeskId::new(desk),
        });
    }

    pub fn walk_in(&mut self, service: &str) -> String {
        self.walk_in_with_priority(service, 1)
    }

    pub fn walk_in_with_priority(&mut self, service: &str, priority: u8) -> String {
        match self.ok(Command::WalkIn {
            service: ServiceId::new(service),
            priority,
        }) {
            Outcome::TicketIssued { ticket, .. } => ticket.to_string(),
            other => panic!("walk_in answered {other:?}"),
        }
    }

    /// Stores a booking at local `HH:MM` today.
    pub fn book(&mut self, id: &str, service: &str, hhmm: &str, desk: Option<&str>) {
        let slot = self.local(hhmm);
        self.book_at(id, service, slot, desk);
    }

    pub fn book_at(&mut self, id: &str, service: &str, slot_start: Millis, desk: Option<&str>) {
        self.ok(Command::UpsertBooking {
            booking: BookingInput {
                id: BookingId::new(id),
                version: 1,
                service: ServiceId::new(service),
                slot_start,
                duration_minutes: 15,
                desk: desk.map(DeskId::new),
                personal: None,
                status: Default::default(),
                refusal: None,
            },
        });
    }

    pub fn check_in(&mut self, booking: &str) -> Result<Outcome, CommandError> {
        self.run(Command::CheckIn {
            booking: BookingId::new(booking),
        })
    }

    pub fn checked_in(&mut self, booking: &str) -> String {
        match self.check_in(booking) {
            Ok(Outcome::TicketIssued { ticket, .. }) => ticket.to_string(),
            other => panic!("check-in of {booking} answered {other:?}"),
        }
    }

    /// Desk calls next; returns the called number.
    pub fn next(&mut self, desk: &str) -> String {
        match self.run(Command::CallNext {
            desk: DeskId::new(desk),
        }) {
            Ok(Outcome::Called { ticket, .. }) => ticket.to_string(),
            other => panic!("next at desk {desk} answered {other:?}"),
        }
    }

    pub fn next_result(&mut self, desk: &str) -> Result<Outcome, CommandError> {
        self.run(Command::CallNext {
            desk: DeskId::new(desk),
        })
    }

    pub fn ticket(&self, number: &str) -> &Ticket {
        self.engine
            .state()
            .tickets
            .get(&TicketNumber::new(number))
            .unwrap_or_else(|| panic!("no ticket {number}"))
    }

    pub fn state(&self) -> &State {
        self.engine.state()
    }

    /// Every record committed so far, in order.
    pub fn log(&self) -> Vec<leitsystem::domain::EventRecord> {
        self.commits
            .iter()
            .flat_map(|c| c.records.clone())
            .collect()
    }
}

/// The instant of local `HH:MM` on `day` (YYYY-MM-DD) in Europe/Berlin.
pub fn local_instant(day: &str, hhmm: &str) -> Millis {
    let zoned: jiff::Zoned = format!("{day}T{hhmm}[Europe/Berlin]")
        .parse()
        .unwrap_or_else(|e| panic!("bad local time {day} {hhmm}: {e}"));
    zoned.timestamp().as_millisecond()
}

pub fn utc(text: &str) -> Millis {
    parse_instant(text).unwrap_or_else(|e| panic!("bad instant {text}: {e}"))
}
