//! The catalog: the site's fixed master data (departments, services, desks, policy, the ticket
//! layout, the token keys) as plain values, in the shape the engine reads. The daemon builds it
//! from a validated config (`leitsystem::catalog::from_config`); tests build it directly.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::clock::{Calendar, MINUTE, Millis};
use crate::domain::{DepartmentId, DeskId, ServiceId};

/// A text in German and English.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Text {
    /// German.
    pub de: String,
    /// English.
    pub en: String,
}

/// What happens to a visitor who arrives after the appointment's late window.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LateArrival {
    /// Issue a walk-in ticket for the booked service.
    WalkIn,
    /// Refuse the check-in; the kiosk tells the visitor to see the information desk.
    Refuse,
}

/// What the QR code on a ticket holds.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TicketQr {
    /// The booking's status URL from `status_url` (the call number for tickets without a
    /// booking when the template needs one).
    StatusUrl,
    /// The call number (the default).
    #[default]
    CallNumber,
    /// No QR code.
    None,
}

/// `[ticket.texts]`: the ticket's fixed texts in German and English.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TicketTexts {
    /// Above the call number.
    pub heading: Text,
    /// The appointment line; `{time}` is replaced by the slot's time.
    pub appointment: Text,
    /// What to do now.
    pub watch_screen: Text,
    /// Above the documents list.
    pub bring: Text,
}

impl Default for TicketTexts {
    fn default() -> Self {
        let text = |de: &str, en: &str| Text {
            de: de.to_string(),
            en: en.to_string(),
        };
        Self {
            heading: text("Ihre Nummer", "Your number"),
            appointment: text("Termin {time}", "Appointment {time}"),
            watch_screen: text(
                "Bitte achten Sie auf die Anzeige.",
                "Please watch the screen.",
            ),
            bring: text("Bitte mitbringen:", "Please bring:"),
        }
    }
}

/// A language printed on tickets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    /// German.
    De,
    /// English.
    En,
}

impl Language {
    /// The text in this language.
    pub fn pick(self, text: &Text) -> &str {
        match self {
            Language::De => &text.de,
            Language::En => &text.en,
        }
    }
}

/// The validated `[ticket]` section.
#[derive(Debug, Clone)]
pub struct TicketLayout {
    /// Languages, in print order.
    pub languages: Vec<Language>,
    /// What the QR code holds.
    pub qr: TicketQr,
    /// Status URL template.
    pub status_url: Option<String>,
    /// Fixed texts.
    pub texts: TicketTexts,
}

impl Default for TicketLayout {
    /// The layout of an empty `[ticket]` section: German only, the call number as QR code.
    fn default() -> Self {
        Self {
            languages: vec![Language::De],
            qr: TicketQr::default(),
            status_url: None,
            texts: TicketTexts::default(),
        }
    }
}

impl TicketLayout {
    /// One line per language (duplicates collapsed, so a text equal in both prints once).
    pub fn lines(&self, text: &Text) -> String {
        let mut out: Vec<&str> = Vec::new();
        for language in &self.languages {
            let line = language.pick(text);
            if !line.is_empty() && !out.contains(&line) {
                out.push(line);
            }
        }
        out.join("\n")
    }
}

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
    pub ticket: TicketLayout,
    /// Public keys that sign check-in codes; empty = plain booking ids.
    pub token_keys: crate::token::KeyRing,
    /// Plain booking ids are accepted even with keys configured.
    pub accept_unsigned: bool,
}

impl Catalog {
    /// The waiting area (German text) of a service's department.
    pub fn waiting_area_of(&self, service: &ServiceId) -> String {
        self.services
            .get(service)
            .and_then(|s| self.departments.get(&s.department))
            .map(|d| d.waiting_area.de.clone())
            .unwrap_or_default()
    }
}
