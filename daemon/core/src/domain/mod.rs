//! Domain types of the queue: tickets, desks, bookings, the events that change them and the
//! commands every input sends. These are the core types; wire formats (control socket, later
//! MQTT and web) wrap them in their own DTOs at the edges.

use std::fmt;

use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use crate::clock::Millis;

mod command;
mod event;

pub use command::*;
pub use event::*;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            /// Creates the id from anything string-like.
            pub fn new(id: impl Into<String>) -> Self {
                Self(id.into())
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// A department with public traffic (e.g. the citizens' office), with its own waiting area.
    DepartmentId
);
id_type!(
    /// A service ("Anliegen"): what the citizen came for.
    ServiceId
);
id_type!(
    /// A desk ("Platz") where a clerk serves visitors.
    DeskId
);
id_type!(
    /// A booking made on the city website.
    BookingId
);
id_type!(
    /// A call number such as `A-042`, unique within one service day.
    TicketNumber
);

/// Lowest ticket priority (the normal case).
pub const PRIORITY_NORMAL: u8 = 1;
/// Highest ticket priority (e.g. a visitor who cannot wait).
pub const PRIORITY_MAX: u8 = 3;

/// How a ticket came to be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TicketOrigin {
    /// Pulled at the kiosk without an appointment, or a late appointment accepted as a walk-in
    /// (then `booking` names it, so it cannot be checked in twice).
    WalkIn {
        /// The booking of a late arrival.
        #[serde(default)]
        booking: Option<BookingId>,
    },
    /// Checked in with a booking; `slot_start` orders it in the queue.
    Appointment {
        /// The booking this visit belongs to.
        booking: BookingId,
        /// Start of the booked slot.
        slot_start: Millis,
    },
}

/// Where a ticket is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum TicketState {
    /// In the waiting area, waiting to be called.
    Waiting,
    /// Called to a desk, not yet being served.
    Called {
        /// The desk that called it.
        desk: DeskId,
    },
    /// Being served at a desk.
    Serving {
        /// The desk serving it.
        desk: DeskId,
    },
    /// Set aside by a desk (e.g. to fetch a document); resumes later.
    Parked {
        /// The desk that parked it and will continue.
        desk: DeskId,
    },
    /// Served.
    Done,
    /// Did not come when called (final).
    NoShow,
    /// Still open when the service day ended.
    Closed,
}

impl TicketState {
    /// Short name used in messages.
    pub fn name(&self) -> &'static str {
        match self {
            TicketState::Waiting => "waiting",
            TicketState::Called { .. } => "called",
            TicketState::Serving { .. } => "serving",
            TicketState::Parked { .. } => "parked",
            TicketState::Done => "done",
            TicketState::NoShow => "no_show",
            TicketState::Closed => "closed",
        }
    }

    /// The desk currently holding the ticket (called or serving), if any.
    pub fn desk(&self) -> Option<&DeskId> {
        match self {
            TicketState::Called { desk } | TicketState::Serving { desk } => Some(desk),
            _ => None,
        }
    }

    /// True once the ticket can change no more.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            TicketState::Done | TicketState::NoShow | TicketState::Closed
        )
    }
}

/// One visit, identified by its call number within its service day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    /// Call number, e.g. `A-042`.
    pub number: TicketNumber,
    /// Service day (Europe/Berlin) the number belongs to.
    pub day: Date,
    /// Daily sequence number behind the call number; orders tickets issued at the same time.
    pub sequence: u32,
    /// The service the visitor is queued for now (changes on forward).
    pub service: ServiceId,
    /// Walk-in or appointment.
    pub origin: TicketOrigin,
    /// 1 (normal) to 3 (most urgent).
    pub priority: u8,
    /// Desk that should call this ticket first (booking with a named clerk, forward to a desk,
    /// resume after park).
    pub preferred_desk: Option<DeskId>,
    /// Until this instant only the preferred desk may call the ticket; others may afterwards.
    pub preferred_until: Option<Millis>,
    /// Current state.
    pub state: TicketState,
    /// When the ticket was issued.
    pub issued_at: Millis,
    /// When the ticket (re)entered the waiting line; walk-ins are served first come first served
    /// by this time.
    pub queued_at: Millis,
    /// The ticket is not called before this time (a no-show re-queued after a delay).
    pub not_before: Option<Millis>,
    /// How many times the ticket was called (call and recall).
    pub calls: u32,
    /// When it was last called.
    pub called_at: Option<Millis>,
    /// When service started at the current desk.
    pub serving_since: Option<Millis>,
    /// When it reached a final state.
    pub finished_at: Option<Millis>,
    /// Number of times it was forwarded.
    pub forwards: u32,
    /// Whether its paper ticket came out of a printer.
    #[serde(default)]
    pub print: PrintState,
}

/// Where the paper ticket is. The ticket is valid whatever this says; a failed print is
/// reprinted when the printer is ready again, or on request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum PrintState {
    /// Sent to the printers, no outcome yet (also: no printer configured).
    #[default]
    Pending,
    /// A printer reported it printed.
    Printed {
        /// The printer (device id).
        printer: String,
        /// When.
        at: Millis,
    },
    /// The last attempt failed.
    Failed {
        /// The printer (device id).
        printer: String,
        /// Why, as the printer reported it.
        reason: String,
        /// When.
        at: Millis,
    },
}

/// How a printer reported a print job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum PrintOutcome {
    /// The ticket came out.
    Printed,
    /// It did not.
    Failed {
        /// Why (paper out, cover open, offline, ...).
        reason: String,
    },
}

/// Open, paused or closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeskMode {
    /// Calls visitors.
    Open,
    /// Finishes the current visitor but calls no new one.
    Paused,
    /// Not staffed.
    Closed,
}

impl fmt::Display for DeskMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeskMode::Open => "open",
            DeskMode::Paused => "paused",
            DeskMode::Closed => "closed",
        })
    }
}

/// The live state of one desk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeskState {
    /// Which desk.
    pub id: DeskId,
    /// Open, paused or closed.
    pub mode: DeskMode,
    /// The ticket called to or served at this desk.
    pub current: Option<TicketNumber>,
    /// When the mode last changed.
    pub since: Millis,
}

/// Booked, cancelled or deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BookingStatus {
    /// The appointment stands.
    #[default]
    Booked,
    /// The citizen or the office cancelled it.
    Cancelled,
    /// The website deleted it (e.g. made in error); its personal data is erased at once. Kept
    /// as a tombstone with its version, so an older change arriving late cannot revive it.
    Deleted,
    /// Booked at the website, but this appliance cannot take it (a service or desk it does not
    /// have, a desk that does not serve the service, a field outside the contract): kept with
    /// its version and the reason, so the day still matches the website's digest and the
    /// refusal is not repeated for every message; never checked in. A newer version replaces
    /// it.
    Refused,
}

/// A booking as the queue sees it. Personal data is kept apart (see [`PersonalData`]) so it
/// never enters the event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Booking {
    /// Website's booking id.
    pub id: BookingId,
    /// Website's version; a change is applied only if its version is newer.
    pub version: u64,
    /// Booked service.
    pub service: ServiceId,
    /// Slot start.
    pub slot_start: Millis,
    /// Slot length in minutes.
    pub duration_minutes: u32,
    /// Booked or cancelled.
    pub status: BookingStatus,
    /// The desk (clerk) the appointment is with, if the website names one.
    pub desk: Option<DeskId>,
    /// The ticket issued at check-in, once checked in.
    pub ticket: Option<TicketNumber>,
    /// Why the appliance refused it ([`BookingStatus::Refused`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    /// Stored from a signed check-in code before the website's booking arrived: the website's
    /// booking of the same version replaces it (with its duration, desk and personal data).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub vouched: bool,
}

/// Minimal personal data for the clerk only; stored apart from the event log and purged after
/// the configured retention.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PersonalData {
    /// Name as given on the website.
    pub name: Option<String>,
    /// Free-text note for the clerk.
    pub note: Option<String>,
}

impl PersonalData {
    /// True when nothing is set.
    pub fn is_empty(&self) -> bool {
        self.name.is_none() && self.note.is_none()
    }
}

/// Where a ticket is forwarded to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "to", content = "id", rename_all = "snake_case")]
pub enum ForwardTarget {
    /// Queue for another service, any desk serving it.
    Service(ServiceId),
    /// Queue for a specific desk, keeping the service; refused if that desk does not serve it.
    Desk(DeskId),
}

/// A booking as it arrives (from the website or the control socket).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BookingInput {
    /// Website's booking id.
    pub id: BookingId,
    /// Website's version (newer wins).
    pub version: u64,
    /// Booked service.
    pub service: ServiceId,
    /// Slot start.
    pub slot_start: Millis,
    /// Slot length in minutes.
    pub duration_minutes: u32,
    /// The desk the appointment is with, if named.
    #[serde(default)]
    pub desk: Option<DeskId>,
    /// Minimal personal data for the clerk.
    #[serde(default)]
    pub personal: Option<PersonalData>,
    /// Booked (the default), cancelled or deleted.
    #[serde(default)]
    pub status: BookingStatus,
    /// Set by the sync's contract layer for a booking it cannot accept as sent but can count
    /// (id and version readable): the engine stores it as [`BookingStatus::Refused`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
}
