//! The catalog: the site's fixed master data (departments, services, desks, policy) built from
//! a validated config, in the shape the engine reads.

use std::collections::BTreeMap;

use crate::clock::{Calendar, MINUTE, Millis};
use crate::config::{Config, LateArrival, Text};
use crate::domain::{DepartmentId, DeskId, ServiceId};

/// A department with its waiting area.
#[derive(Debug, Clone)]
pub struct Department {
    /// Id.
    pub id: DepartmentId,
    /// Name.
    pub name: Text,
    /// Where its visitors wait.
    pub waiting_area: Text,
}

/// A service.
#[derive(Debug, Clone)]
pub struct Service {
    /// Id.
    pub id: ServiceId,
    /// Department offering it.
    pub department: DepartmentId,
    /// Ticket prefix.
    pub prefix: String,
    /// Name.
    pub name: Text,
    /// Expected visit duration, used until service times are measured.
    pub expected: Millis,
    /// Documents to bring.
    pub documents: Vec<Text>,
}

/// A desk.
#[derive(Debug, Clone)]
pub struct Desk {
    /// Id.
    pub id: DeskId,
    /// Label.
    pub label: Text,
    /// Department.
    pub department: DepartmentId,
    /// Services served here.
    pub services: Vec<ServiceId>,
}

impl Desk {
    /// Whether this desk serves the service.
    pub fn serves(&self, service: &ServiceId) -> bool {
        self.services.contains(service)
    }
}

/// The queue policy in milliseconds.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Check-in opens this long before the slot.
    pub checkin_early: Millis,
    /// Check-in for the appointment closes this long after the slot start.
    pub checkin_late: Millis,
    /// What happens to later visitors.
    pub late_arrival: LateArrival,
    /// Appointments are due this long before their slot.
    pub appointment_due_before: Millis,
    /// Walk-ins that waited this long go before due appointments.
    pub walk_in_max_wait: Millis,
    /// Exclusive time of a named desk.
    pub named_desk_grace: Millis,
    /// Delay before a no-show is called again.
    pub no_show_requeue_delay: Millis,
    /// Total calls before a no-show is final.
    pub max_calls: u32,
    /// A "next" this soon after the desk's last call repeats the call instead of finishing
    /// the visitor (0 = off).
    pub repeat_next_within: Millis,
    /// A wall-clock step larger than this against the monotonic clock is a jump
    /// (see [`crate::clock::ClockGuard`]).
    pub clock_jump: Millis,
    /// Days personal data is kept after the appointment's day.
    pub personal_data_retention_days: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            checkin_early: 60 * MINUTE,
            checkin_late: 15 * MINUTE,
            late_arrival: LateArrival::WalkIn,
            appointment_due_before: 5 * MINUTE,
            walk_in_max_wait: 45 * MINUTE,
            named_desk_grace: 10 * MINUTE,
            no_show_requeue_delay: 5 * MINUTE,
            max_calls: 2,
            repeat_next_within: 5_000,
            clock_jump: 300_000,
            personal_data_retention_days: 0,
        }
    }
}

/// Everything fixed about a site.
#[derive(Debug, Clone)]
pub struct Catalog {
    /// Site id.
    pub site_id: String,
    /// Town name.
    pub town: String,
    /// Office name.
    pub site_name: String,
    /// The site's IANA time zone name (`Europe/Berlin`): every page shows times in it.
    pub time_zone: String,
    /// Calendar of the service day.
    pub calendar: Calendar,
    /// Queue policy.
    pub policy: Policy,
    /// Departments by id.
    pub departments: BTreeMap<DepartmentId, Department>,
    /// Services by id.
    pub services: BTreeMap<ServiceId, Service>,
    /// Desks by id.
    pub desks: BTreeMap<DeskId, Desk>,
    /// Layout of the printed ticket.
    pub ticket: crate::ticket::TicketLayout,
    /// Public keys that sign check-in codes; empty = plain booking ids.
    pub token_keys: crate::token::KeyRing,
    /// Plain booking ids are accepted even with keys configured.
    pub accept_unsigned: bool,
}

impl Catalog {
    /// Builds the catalog from a config that passed validation.
    pub fn from_config(config: &Config) -> Result<Self, crate::clock::CalendarError> {
        let p = &config.policy;
        let minutes = |v: &serde_spanned::Spanned<i64>| *v.get_ref() * MINUTE;
        let policy = Policy {
            checkin_early: minutes(&p.checkin_early_minutes),
            checkin_late: minutes(&p.checkin_late_minutes),
            late_arrival: p.late_arrival,
            appointment_due_before: minutes(&p.appointment_due_before_minutes),
            walk_in_max_wait: minutes(&p.walk_in_max_wait_minutes),
            named_desk_grace: minutes(&p.named_desk_grace_minutes),
            no_show_requeue_delay: minutes(&p.no_show_requeue_delay_minutes),
            max_calls: u32::try_from(*p.max_calls.get_ref()).unwrap_or(1).max(1),
            repeat_next_within: *p.repeat_next_within_seconds.get_ref() * 1_000,
            clock_jump: *p.clock_jump_seconds.get_ref() * 1_000,
            personal_data_retention_days: u32::try_from(*p.personal_data_retention_days.get_ref())
                .unwrap_or(0),
        };
        let departments = config
            .departments
            .iter()
            .map(|d| {
                let id = DepartmentId::new(d.id.get_ref().clone());
                (
                    id.clone(),
                    Department {
                        id,
                        name: d.name.clone(),
                        waiting_area: d.waiting_area.clone(),
                    },
                )
            })
            .collect();
        let services = config
            .services
            .iter()
            .map(|s| {
                let id = ServiceId::new(s.id.get_ref().clone());
                (
                    id.clone(),
                    Service {
                        id,
                        department: DepartmentId::new(s.department.get_ref().clone()),
                        prefix: s.prefix.get_ref().clone(),
                        name: s.name.clone(),
                        expected: *s.expected_minutes.get_ref() * MINUTE,
                        documents: s.documents.clone(),
                    },
                )
            })
            .collect();
        let desks = config
            .desks
            .iter()
            .map(|d| {
                let id = DeskId::new(d.id.get_ref().clone());
                (
                    id.clone(),
                    Desk {
                        id,
                        label: d.label.clone(),
                        department: DepartmentId::new(d.department.get_ref().clone()),
                        services: d
                            .services
                            .iter()
                            .map(|s| ServiceId::new(s.get_ref().clone()))
                            .collect(),
                    },
                )
            })
            .collect();
        Ok(Self {
            site_id: config.site.id.get_ref().clone(),
            town: config.site.town.clone(),
            site_name: config.site.name.clone(),
            time_zone: config.site.time_zone.get_ref().clone(),
            calendar: Calendar::new(config.site.time_zone.get_ref())?,
            policy,
            departments,
            services,
            desks,
            ticket: crate::ticket::TicketLayout::from_config(&config.ticket),
            token_keys: {
                let mut ring = crate::token::KeyRing::new();
                for key in &config.tokens.keys {
                    // Validated with the config; a key that fails here is left out.
                    let _ = ring.insert_hex(
                        u8::try_from(*key.id.get_ref()).unwrap_or(0),
                        key.public_key.get_ref(),
                    );
                }
                ring
            },
            accept_unsigned: config.tokens.accept_unsigned,
        })
    }

    /// The waiting area (German text) of a service's department.
    pub fn waiting_area_of(&self, service: &ServiceId) -> String {
        self.services
            .get(service)
            .and_then(|s| self.departments.get(&s.department))
            .map(|d| d.waiting_area.de.clone())
            .unwrap_or_default()
    }
}
