//! The public display's projection: the latest calls ([`DisplayState::apply`]) and the shape
//! of what every display shows ([`PublicDisplay`]): call numbers, desk labels and service
//! names only, nothing a booking carries about a person. The daemon keeps it up to date from
//! the committed events (`leitsystem::display::spawn_feed`).

use serde::{Deserialize, Serialize};

use crate::catalog::{Catalog, Text};
use crate::domain::{Event, EventRecord};

/// Calls kept on the display: the current one and ten recent ones.
pub const DISPLAY_CALLS: usize = 11;

/// A text in both languages the display shows.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Bilingual {
    /// German.
    pub de: String,
    /// English.
    pub en: String,
}

impl From<&Text> for Bilingual {
    fn from(text: &Text) -> Self {
        Self {
            de: text.de.clone(),
            en: text.en.clone(),
        }
    }
}

/// One call on the display.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DisplayCall {
    /// Call number.
    pub ticket: String,
    /// Desk id.
    pub desk: String,
    /// Desk label (German; kept for display plugins that show one language).
    pub desk_label: String,
    /// Desk label in both languages.
    pub desk_labels: Bilingual,
    /// Department of the desk (a display may show one department).
    pub department: String,
    /// When (ms since the epoch).
    pub at: i64,
    /// A recall rather than the first call.
    pub recall: bool,
    /// Log sequence number of the call: a new one means "sound the gong".
    pub seq: u64,
}

/// The latest calls, newest first.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DisplayState {
    /// Newest first, at most [`DISPLAY_CALLS`].
    pub calls: Vec<DisplayCall>,
}

impl DisplayState {
    /// Applies one committed event; true when the calls changed. The one place the calls
    /// projection is computed, for replaying the log at start and for live events alike.
    pub fn apply(&mut self, record: &EventRecord, catalog: &Catalog) -> bool {
        match &record.event {
            Event::TicketCalled { ticket, desk, .. } | Event::TicketRecalled { ticket, desk } => {
                let known = catalog.desks.get(desk);
                self.calls.insert(
                    0,
                    DisplayCall {
                        ticket: ticket.to_string(),
                        desk: desk.to_string(),
                        desk_label: known.map(|d| d.label.de.clone()).unwrap_or_default(),
                        desk_labels: known.map(|d| (&d.label).into()).unwrap_or_default(),
                        department: known.map(|d| d.department.to_string()).unwrap_or_default(),
                        at: record.at,
                        recall: matches!(record.event, Event::TicketRecalled { .. }),
                        seq: record.seq,
                    },
                );
                self.calls.truncate(DISPLAY_CALLS);
                true
            }
            Event::DayStarted { .. } => {
                self.calls.clear();
                true
            }
            _ => false,
        }
    }
}

/// The waiting line of one service.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct QueueInfo {
    /// Service id.
    pub service: String,
    /// Service name.
    pub name: Bilingual,
    /// Department id.
    pub department: String,
    /// Tickets waiting.
    pub waiting: u32,
    /// Estimated wait for a ticket issued now, in minutes.
    pub wait_minutes: u32,
}

/// Everything a public display shows. Never personal data.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PublicDisplay {
    /// Office name.
    pub site: String,
    /// The site's IANA time zone (`Europe/Berlin`): the page's clock and times use it, not
    /// the browser's.
    pub time_zone: String,
    /// Latest calls, newest first.
    pub calls: Vec<DisplayCall>,
    /// Waiting lines per service, in config order.
    pub queues: Vec<QueueInfo>,
    /// Log sequence number this state reflects.
    pub seq: u64,
}

/// Whether an event can change the waiting counts or estimates.
pub fn moves_queues(event: &Event) -> bool {
    !event.is_paperwork()
        && !matches!(
            event,
            Event::DeskModeChanged { .. }
                | Event::SilentAlarm { .. }
                | Event::AlarmAcknowledged { .. }
        )
}
