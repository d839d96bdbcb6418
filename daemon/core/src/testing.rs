//! Test support for engine tests (feature `testing`): the demo site's catalog built in code,
//! no TOML, and [`Sim`], an engine driven through commands at chosen local times.
//!
//! [`demo_catalog`] is the catalog of the daemon's embedded demo config
//! (`daemon/config/demo.toml`); a test in the daemon checks that the two agree.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::catalog::{Catalog, Department, Desk, Policy, Service, Text, TicketLayout, TicketQr};
use crate::clock::{Calendar, MINUTE, Millis, parse_instant};
use crate::domain::{
    BookingId, BookingInput, Command, CommandError, CommandRequest, DepartmentId, DeskId, Outcome,
    ServiceId, Ticket, TicketNumber,
};
use crate::engine::{Engine, PendingCommit, State};
use crate::token::KeyRing;

fn text(de: &str, en: &str) -> Text {
    Text {
        de: de.to_string(),
        en: en.to_string(),
    }
}

/// The demo site: the Bürgerbüro with services `ausweis` (A, 12 min), `meldung` (M, 8 min) and
/// `fuehrerschein` (F, 15 min), desks 1 and 2 (ausweis, meldung), 3 (meldung, fuehrerschein)
/// and 4 (all three), the default policy with `repeat_next_within` 5 s.
pub fn demo_catalog() -> Catalog {
    let office = DepartmentId::new("buergerbuero");
    let department = Department {
        id: office.clone(),
        name: text("Bürgerbüro", "Citizens' office"),
        waiting_area: text(
            "Wartebereich Erdgeschoss, Raum 0.12",
            "Waiting area, ground floor, room 0.12",
        ),
    };
    let service = |id: &str, prefix: &str, name: Text, minutes: i64, documents: Vec<Text>| {
        let id = ServiceId::new(id);
        let service = Service {
            id: id.clone(),
            department: office.clone(),
            prefix: prefix.to_string(),
            name,
            expected: minutes * MINUTE,
            documents,
        };
        (id, service)
    };
    let services = BTreeMap::from([
        service(
            "ausweis",
            "A",
            text("Personalausweis und Reisepass", "ID card and passport"),
            12,
            vec![
                text(
                    "Bisheriger Ausweis oder Reisepass",
                    "Current ID card or passport",
                ),
                text("Ein biometrisches Passfoto", "One biometric passport photo"),
                text(
                    "Bei Namensänderung: Urkunde",
                    "If your name changed: certificate",
                ),
            ],
        ),
        service(
            "meldung",
            "M",
            text("An-, Um- und Abmeldung", "Registering your address"),
            8,
            vec![
                text("Personalausweis oder Reisepass", "ID card or passport"),
                text("Wohnungsgeberbestätigung", "Landlord's confirmation"),
            ],
        ),
        service(
            "fuehrerschein",
            "F",
            text("Führerscheinangelegenheiten", "Driving licence"),
            15,
            vec![
                text("Personalausweis oder Reisepass", "ID card or passport"),
                text("Bisheriger Führerschein", "Current driving licence"),
                text("Ein biometrisches Passfoto", "One biometric passport photo"),
                text("Sehtestbescheinigung", "Eye test certificate"),
            ],
        ),
    ]);
    let desk = |id: &str, services: &[&str]| {
        let desk = Desk {
            id: DeskId::new(id),
            label: text(&format!("Platz {id}"), &format!("Desk {id}")),
            department: office.clone(),
            services: services.iter().map(|s| ServiceId::new(*s)).collect(),
        };
        (desk.id.clone(), desk)
    };
    let desks = BTreeMap::from([
        desk("1", &["ausweis", "meldung"]),
        desk("2", &["ausweis", "meldung"]),
        desk("3", &["meldung", "fuehrerschein"]),
        desk("4", &["ausweis", "meldung", "fuehrerschein"]),
    ]);
    Catalog {
        site_id: "musterstadt-rathaus".to_string(),
        town: "Stadt Musterstadt".to_string(),
        site_name: "Bürgerbüro im Rathaus".to_string(),
        time_zone: "Europe/Berlin".to_string(),
        calendar: Calendar::berlin(),
        policy: Policy::default(),
        departments: BTreeMap::from([(office.clone(), department)]),
        services,
        desks,
        ticket: TicketLayout {
            qr: TicketQr::StatusUrl,
            status_url: Some("https://termine.musterstadt.de/status/{booking}".to_string()),
            ..TicketLayout::default()
        },
        token_keys: KeyRing::new(),
        accept_unsigned: true,
    }
}

/// The demo catalog with `policy` changed by `tweak`; `repeat_next_within` is 0 first: the
/// ranking scenarios press "next" back to back at one instant, and the window that turns such
/// a press into a repeat of the call has tests of its own that set it.
pub fn catalog_with(tweak: impl FnOnce(&mut Policy)) -> Arc<Catalog> {
    let mut catalog = demo_catalog();
    catalog.policy.repeat_next_within = 0;
    tweak(&mut catalog.policy);
    Arc::new(catalog)
}

/// An engine plus a clock set to local times of one day.
pub struct Sim {
    /// The engine under test.
    pub engine: Engine,
    /// The simulated day (YYYY-MM-DD).
    pub day: String,
    /// The simulated instant.
    pub now: Millis,
    /// What every command committed, in order.
    pub commits: Vec<PendingCommit>,
}

impl Default for Sim {
    fn default() -> Self {
        Self::new()
    }
}

impl Sim {
    /// A simulation on 2026-06-15 (a Monday, summer time) at 08:00 local time.
    pub fn new() -> Self {
        Self::with_policy(|_| {})
    }

    /// A simulation as [`Sim::new`] with the policy changed by `tweak`.
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

    /// Executes `command` now; its answer.
    pub fn run(&mut self, command: Command) -> Result<Outcome, CommandError> {
        self.run_with_id(None, command)
    }

    /// Executes `command` now under a request id (a retried request answers the same).
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

    /// Executes `command` now; panics if it is refused.
    pub fn ok(&mut self, command: Command) -> Outcome {
        let name = command.name();
        self.run(command)
            .unwrap_or_else(|e| panic!("{name} refused: {e}"))
    }

    /// Opens `desk`.
    pub fn open(&mut self, desk: &str) {
        self.ok(Command::OpenDesk {
            desk: DeskId::new(desk),
        });
    }

    /// A walk-in ticket for `service`; its number.
    pub fn walk_in(&mut self, service: &str) -> String {
        self.walk_in_with_priority(service, 1)
    }

    /// A walk-in ticket for `service` with `priority`; its number.
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

    /// Stores a booking with its slot at `slot_start`.
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

    /// Checks `booking` in; the answer.
    pub fn check_in(&mut self, booking: &str) -> Result<Outcome, CommandError> {
        self.run(Command::CheckIn {
            booking: BookingId::new(booking),
        })
    }

    /// Checks `booking` in; the ticket number (panics if refused).
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

    /// Desk calls next; the answer.
    pub fn next_result(&mut self, desk: &str) -> Result<Outcome, CommandError> {
        self.run(Command::CallNext {
            desk: DeskId::new(desk),
        })
    }

    /// The ticket `number` (panics if there is none).
    pub fn ticket(&self, number: &str) -> &Ticket {
        self.engine
            .state()
            .tickets
            .get(&TicketNumber::new(number))
            .unwrap_or_else(|| panic!("no ticket {number}"))
    }

    /// The engine's state.
    pub fn state(&self) -> &State {
        self.engine.state()
    }

    /// Every record committed so far, in order.
    pub fn log(&self) -> Vec<crate::domain::EventRecord> {
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

/// An RFC 3339 instant in ms (panics on a bad one).
pub fn utc(text: &str) -> Millis {
    parse_instant(text).unwrap_or_else(|e| panic!("bad instant {text}: {e}"))
}
