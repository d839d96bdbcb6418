//! Domain types of the queue: tickets, desks, bookings, the events that change them and the
//! commands every input sends. These are the core types; wire formats (control socket, later
//! MQTT and web) wrap them in their own DTOs at the edges.

use std::fmt;

use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use crate::clock::Millis;

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

/// Everything any input can ask the queue engine to do. One way in: scanner, buttons, web,
/// MQTT and the control socket all send these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// Check a visitor in with a booking; issues the appointment's ticket.
    CheckIn {
        /// The booking.
        booking: BookingId,
    },
    /// Check a visitor in with a verified signed token (see `token.rs`): works even when the
    /// booking has not arrived from the website yet (offline first); the token's data then
    /// stands for the booking. The signature is checked before this command is made.
    CheckInWithToken {
        /// The booking.
        booking: BookingId,
        /// The booked service.
        service: ServiceId,
        /// Slot start.
        slot_start: Millis,
        /// The booking's version the token was issued for.
        version: u64,
    },
    /// Pull a ticket without an appointment.
    WalkIn {
        /// The chosen service.
        service: ServiceId,
        /// 1 (normal) to 3.
        #[serde(default = "default_priority")]
        priority: u8,
    },
    /// Finish the desk's current visitor (if any) and call the best due ticket.
    CallNext {
        /// The calling desk.
        desk: DeskId,
    },
    /// Call a specific waiting ticket, out of order.
    CallTicket {
        /// The calling desk.
        desk: DeskId,
        /// The ticket to call.
        ticket: TicketNumber,
    },
    /// Call the desk's current ticket again.
    Recall {
        /// The desk.
        desk: DeskId,
    },
    /// The called visitor has arrived at the desk.
    StartService {
        /// The desk.
        desk: DeskId,
    },
    /// The desk's visitor is done.
    Finish {
        /// The desk.
        desk: DeskId,
    },
    /// The called visitor did not come.
    NoShow {
        /// The desk.
        desk: DeskId,
    },
    /// Send the desk's visitor to another service or desk, keeping the number.
    Forward {
        /// The desk handing over.
        desk: DeskId,
        /// Where to.
        target: ForwardTarget,
    },
    /// Set the desk's visitor aside (e.g. to fetch a document).
    Park {
        /// The desk.
        desk: DeskId,
    },
    /// Put a parked ticket back in line for the desk that parked it.
    Resume {
        /// The parked ticket.
        ticket: TicketNumber,
    },
    /// Put the desk's longest-parked ticket back in line for it (a button box or a console
    /// that does not name the ticket); the desk's next "next" calls it.
    ResumeAtDesk {
        /// The desk that parked it.
        desk: DeskId,
        /// This one of the desk's parked tickets (refused if it is not parked there); the
        /// longest-parked one when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ticket: Option<TicketNumber>,
    },
    /// Change a waiting ticket's priority.
    SetPriority {
        /// The ticket.
        ticket: TicketNumber,
        /// 1 (normal) to 3.
        priority: u8,
    },
    /// Open a desk.
    OpenDesk {
        /// The desk.
        desk: DeskId,
    },
    /// Pause a desk (no new calls).
    PauseDesk {
        /// The desk.
        desk: DeskId,
    },
    /// Close a desk (must not hold a visitor).
    CloseDesk {
        /// The desk.
        desk: DeskId,
    },
    /// Create or update a booking (applied only if the version is newer).
    UpsertBooking {
        /// The booking.
        booking: BookingInput,
    },
    /// Cancel a booking (applied only if the version is newer).
    CancelBooking {
        /// The booking.
        booking: BookingId,
        /// Website's version of the cancellation.
        version: u64,
    },
    /// A printer reports the outcome of printing a ticket (sent by the plugin host).
    RecordPrint {
        /// The ticket.
        ticket: TicketNumber,
        /// The printer's device id.
        printer: String,
        /// Printed or failed.
        outcome: PrintOutcome,
    },
    /// Print a ticket again (admin, or automatically when a printer is ready after a failure).
    Reprint {
        /// The ticket.
        ticket: TicketNumber,
    },
    /// Let time pass: closes the service day when it has ended. Sent by the scheduler.
    Tick,
    /// An admin accepts the wall clock's time after a jump the engine held (see
    /// [`crate::clock::ClockGuard`]); then time passes as for [`Command::Tick`].
    ConfirmClock,
    /// The silent alarm of a desk (staff safety): recorded in the log, shown to admins, never
    /// on a public display. Changes no queue.
    SilentAlarm {
        /// The desk raising it.
        desk: DeskId,
    },
}

fn default_priority() -> u8 {
    PRIORITY_NORMAL
}

impl Command {
    /// The command's name as used in logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Command::CheckIn { .. } => "check_in",
            Command::CheckInWithToken { .. } => "check_in_with_token",
            Command::WalkIn { .. } => "walk_in",
            Command::CallNext { .. } => "call_next",
            Command::CallTicket { .. } => "call_ticket",
            Command::Recall { .. } => "recall",
            Command::StartService { .. } => "start_service",
            Command::Finish { .. } => "finish",
            Command::NoShow { .. } => "no_show",
            Command::Forward { .. } => "forward",
            Command::Park { .. } => "park",
            Command::Resume { .. } => "resume",
            Command::ResumeAtDesk { .. } => "resume_at_desk",
            Command::SetPriority { .. } => "set_priority",
            Command::OpenDesk { .. } => "open_desk",
            Command::PauseDesk { .. } => "pause_desk",
            Command::CloseDesk { .. } => "close_desk",
            Command::UpsertBooking { .. } => "upsert_booking",
            Command::CancelBooking { .. } => "cancel_booking",
            Command::RecordPrint { .. } => "record_print",
            Command::Reprint { .. } => "reprint",
            Command::Tick => "tick",
            Command::ConfirmClock => "confirm_clock",
            Command::SilentAlarm { .. } => "silent_alarm",
        }
    }
}

/// A command with its origin and an optional idempotency key. The same `request_id` sent twice
/// on one service day (a bouncing button, a retried request) has one effect; the second answer
/// repeats the first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandRequest {
    /// Idempotency key chosen by the sender (device event id, HTTP request id, MQTT message id).
    pub request_id: Option<String>,
    /// Which input sent it, e.g. `ctl`, `scanner:foyer`, `scheduler`.
    pub source: String,
    /// What to do.
    pub command: Command,
}

/// Every change to the queue. Stored in the durable log in order; all views are derived
/// from them. Never holds personal data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A new service day began; numbering restarts, past bookings leave the live view.
    DayStarted {
        /// The new day.
        day: Date,
        /// Its first instant; bookings before it leave the live view.
        starts_at: Millis,
    },
    /// A service day ended: its open tickets were closed and every desk closed.
    DayClosed {
        /// The day that ended.
        day: Date,
        /// Tickets that were still open.
        closed_tickets: Vec<TicketNumber>,
    },
    /// Personal data of bookings before `before` was erased.
    PersonalDataPurged {
        /// Bookings whose slot day is before this day lost their personal data.
        before: Date,
    },
    /// A ticket was issued.
    TicketIssued {
        /// The ticket as issued.
        ticket: Ticket,
    },
    /// A ticket was called to a desk.
    TicketCalled {
        /// The ticket.
        ticket: TicketNumber,
        /// The desk.
        desk: DeskId,
        /// Called out of queue order by `call_ticket`.
        out_of_order: bool,
    },
    /// A called ticket was called again.
    TicketRecalled {
        /// The ticket.
        ticket: TicketNumber,
        /// The desk.
        desk: DeskId,
    },
    /// The visitor arrived at the desk.
    ServiceStarted {
        /// The ticket.
        ticket: TicketNumber,
        /// The desk.
        desk: DeskId,
    },
    /// The visit is done.
    TicketFinished {
        /// The ticket.
        ticket: TicketNumber,
        /// The desk.
        desk: DeskId,
    },
    /// The visitor did not come; re-queued from `requeue_at` if set, else final.
    TicketNoShow {
        /// The ticket.
        ticket: TicketNumber,
        /// The desk.
        desk: DeskId,
        /// When the ticket may be called again, if it is re-queued.
        requeue_at: Option<Millis>,
    },
    /// The ticket was sent to another service or desk, keeping its number.
    TicketForwarded {
        /// The ticket.
        ticket: TicketNumber,
        /// The desk that handed over.
        from_desk: DeskId,
        /// The service it now waits for.
        service: ServiceId,
        /// The desk that should call it first.
        desk: Option<DeskId>,
        /// Until when only that desk may call it.
        preferred_until: Option<Millis>,
    },
    /// The ticket was set aside.
    TicketParked {
        /// The ticket.
        ticket: TicketNumber,
        /// The desk that parked it.
        desk: DeskId,
    },
    /// A parked ticket is back in line for its desk.
    TicketResumed {
        /// The ticket.
        ticket: TicketNumber,
        /// The desk that should call it first.
        desk: DeskId,
        /// Until when only that desk may call it.
        preferred_until: Millis,
    },
    /// A ticket's priority changed.
    PriorityChanged {
        /// The ticket.
        ticket: TicketNumber,
        /// New priority.
        priority: u8,
    },
    /// A desk opened, paused or closed.
    DeskModeChanged {
        /// The desk.
        desk: DeskId,
        /// New mode.
        mode: DeskMode,
    },
    /// A booking was created or updated to a newer version.
    BookingUpserted {
        /// The booking (without personal data).
        booking: Booking,
        /// Whether personal data was stored alongside (kept out of the log).
        has_personal_data: bool,
    },
    /// A booking was cancelled.
    BookingCancelled {
        /// The booking.
        booking: BookingId,
        /// Version of the cancellation.
        version: u64,
    },
    /// A printer printed a ticket.
    TicketPrinted {
        /// The ticket.
        ticket: TicketNumber,
        /// The printer (device id).
        printer: String,
    },
    /// A printer failed to print a ticket; the ticket stays valid.
    TicketPrintFailed {
        /// The ticket.
        ticket: TicketNumber,
        /// The printer (device id).
        printer: String,
        /// Why.
        reason: String,
    },
    /// A ticket is to be printed again.
    ReprintRequested {
        /// The ticket.
        ticket: TicketNumber,
        /// The printer that printed or failed it last (the reprint goes there); absent when
        /// no printer answered for it yet.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        printer: Option<String>,
    },
    /// A desk raised the silent alarm (staff safety). Never shown publicly.
    SilentAlarm {
        /// The desk.
        desk: DeskId,
    },
}

impl Event {
    /// The event's type name as used in logs.
    pub fn name(&self) -> &'static str {
        match self {
            Event::DayStarted { .. } => "day_started",
            Event::DayClosed { .. } => "day_closed",
            Event::PersonalDataPurged { .. } => "personal_data_purged",
            Event::TicketIssued { .. } => "ticket_issued",
            Event::TicketCalled { .. } => "ticket_called",
            Event::TicketRecalled { .. } => "ticket_recalled",
            Event::ServiceStarted { .. } => "service_started",
            Event::TicketFinished { .. } => "ticket_finished",
            Event::TicketNoShow { .. } => "ticket_no_show",
            Event::TicketForwarded { .. } => "ticket_forwarded",
            Event::TicketParked { .. } => "ticket_parked",
            Event::TicketResumed { .. } => "ticket_resumed",
            Event::PriorityChanged { .. } => "priority_changed",
            Event::DeskModeChanged { .. } => "desk_mode_changed",
            Event::BookingUpserted { .. } => "booking_upserted",
            Event::BookingCancelled { .. } => "booking_cancelled",
            Event::TicketPrinted { .. } => "ticket_printed",
            Event::TicketPrintFailed { .. } => "ticket_print_failed",
            Event::ReprintRequested { .. } => "reprint_requested",
            Event::SilentAlarm { .. } => "silent_alarm",
        }
    }
}

/// An event as stored: with its position in the site's log, its time and what caused it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Per-site sequence number, gapless from 1.
    pub seq: u64,
    /// When it happened.
    pub at: Millis,
    /// The idempotency key of the command that caused it, if any.
    pub request_id: Option<String>,
    /// Which input caused it.
    pub source: String,
    /// What happened.
    pub event: Event,
}

/// What a successful command did, for the caller (kiosk, clerk, ctl).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Outcome {
    /// A ticket was issued (walk-in or check-in).
    TicketIssued {
        /// Call number.
        ticket: TicketNumber,
        /// Service.
        service: ServiceId,
        /// Department.
        department: DepartmentId,
        /// Where to wait.
        waiting_area: String,
        /// The desk the booking is with, if it names one.
        desk: Option<DeskId>,
        /// A late appointment accepted as a walk-in.
        late_as_walk_in: bool,
        /// Estimated wait in minutes when issued.
        estimated_wait_minutes: u32,
    },
    /// A ticket was called (the desk's previous visitor finished first, if any).
    Called {
        /// The ticket.
        ticket: TicketNumber,
        /// The desk.
        desk: DeskId,
        /// The desk's previous visitor, finished by this call.
        finished: Option<TicketNumber>,
    },
    /// The command changed a ticket.
    TicketUpdated {
        /// The ticket.
        ticket: TicketNumber,
        /// Its state afterwards.
        state: TicketState,
    },
    /// A desk changed mode.
    DeskUpdated {
        /// The desk.
        desk: DeskId,
        /// New mode.
        mode: DeskMode,
    },
    /// A booking change was stored.
    BookingApplied {
        /// The booking.
        booking: BookingId,
        /// Its version now.
        version: u64,
    },
    /// A booking the appliance cannot take was stored as refused (counted in its day's
    /// digest, never checked in).
    BookingRefused {
        /// The booking.
        booking: BookingId,
        /// Its version.
        version: u64,
        /// Why.
        reason: String,
    },
    /// A booking change was older than or equal to what is stored; nothing changed.
    BookingIgnored {
        /// The booking.
        booking: BookingId,
        /// The stored version.
        stored_version: u64,
    },
    /// A print outcome was recorded.
    PrintRecorded {
        /// The ticket.
        ticket: TicketNumber,
        /// Its print state now.
        print: PrintState,
    },
    /// The ticket goes to the printers again.
    ReprintRequested {
        /// The ticket.
        ticket: TicketNumber,
    },
    /// The silent alarm was recorded.
    AlarmRecorded {
        /// The desk.
        desk: DeskId,
    },
    /// Nothing to do (e.g. a tick before the day ends, a desk already in that mode).
    Unchanged,
}

/// Why a command was refused. The state is unchanged after any of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum CommandError {
    /// No such service in the config.
    #[error("unknown service '{service}'")]
    UnknownService {
        /// The id given.
        service: ServiceId,
    },
    /// No such desk in the config.
    #[error("unknown desk '{desk}'")]
    UnknownDesk {
        /// The id given.
        desk: DeskId,
    },
    /// No such booking.
    #[error("unknown booking '{booking}'")]
    UnknownBooking {
        /// The id given.
        booking: BookingId,
    },
    /// No such ticket today.
    #[error("no ticket '{ticket}' today")]
    UnknownTicket {
        /// The number given.
        ticket: TicketNumber,
    },
    /// The desk must be open to call.
    #[error("desk '{desk}' is {mode}, open it first")]
    DeskNotOpen {
        /// The desk.
        desk: DeskId,
        /// Its mode.
        mode: DeskMode,
    },
    /// The desk holds no visitor.
    #[error("desk '{desk}' has no current visitor")]
    DeskIdle {
        /// The desk.
        desk: DeskId,
    },
    /// The desk still holds a visitor.
    #[error("desk '{desk}' is still with ticket {ticket}")]
    DeskBusy {
        /// The desk.
        desk: DeskId,
        /// Its ticket.
        ticket: TicketNumber,
    },
    /// The ticket is not in a state that allows the command.
    #[error("ticket {ticket} is {state}, but {command} needs it {expected}")]
    WrongTicketState {
        /// The ticket.
        ticket: TicketNumber,
        /// Its state.
        state: String,
        /// The command.
        command: String,
        /// The state(s) the command needs.
        expected: String,
    },
    /// Nobody the desk may call is waiting.
    #[error("nobody waiting for desk '{desk}'")]
    NothingWaiting {
        /// The desk.
        desk: DeskId,
    },
    /// The request id was used today for another command (a retry must repeat its command).
    #[error("request id '{request_id}' was used for another command")]
    IdempotencyKeyReused {
        /// The request id.
        request_id: String,
    },
    /// `confirm_clock` while the engine follows the wall clock: there is nothing to confirm.
    #[error("the clock did not jump and no day waits for it: there is nothing to confirm")]
    NoClockJump,
    /// The service day does not start: the system clock is not synchronised (see
    /// [`crate::clock::DayGate`]) and no admin confirmed the time.
    #[error(
        "the clock is not synchronised, so the service day does not start ({reason}); wait for \
         the time sync or confirm the time on /admin or with `leitsystemd ctl confirm-clock`"
    )]
    ClockUnsynchronised {
        /// The sync source's answer.
        reason: String,
    },
    /// The desk has no parked visitor to resume.
    #[error("no parked visitor at desk '{desk}'")]
    NothingParked {
        /// The desk.
        desk: DeskId,
    },
    /// The desk does not serve the ticket's service.
    #[error("desk '{desk}' does not serve '{service}'")]
    ServiceNotServed {
        /// The desk.
        desk: DeskId,
        /// The service.
        service: ServiceId,
    },
    /// The booking was cancelled.
    #[error("booking '{booking}' was cancelled")]
    BookingCancelled {
        /// The booking.
        booking: BookingId,
    },
    /// The booking was deleted by the website.
    #[error("booking '{booking}' was deleted")]
    BookingDeleted {
        /// The booking.
        booking: BookingId,
    },
    /// The appliance refused the booking when it arrived (see [`BookingStatus::Refused`]).
    #[error("booking '{booking}' was not accepted by this appliance: {reason}")]
    BookingNotAccepted {
        /// The booking.
        booking: BookingId,
        /// Why it was refused.
        reason: String,
    },
    /// The booking already has a ticket.
    #[error("booking '{booking}' is already checked in with ticket {ticket}")]
    AlreadyCheckedIn {
        /// The booking.
        booking: BookingId,
        /// Its ticket.
        ticket: TicketNumber,
    },
    /// The booking is for another day.
    #[error("booking '{booking}' is for {day}, not today")]
    WrongDay {
        /// The booking.
        booking: BookingId,
        /// Its day.
        day: Date,
    },
    /// Check-in opens later.
    #[error("booking '{booking}': check-in opens at {opens_at}")]
    TooEarly {
        /// The booking.
        booking: BookingId,
        /// When check-in opens (local time, HH:MM).
        opens_at: String,
    },
    /// Check-in closed and the policy refuses late arrivals.
    #[error("booking '{booking}': the appointment at {slot} has passed")]
    TooLate {
        /// The booking.
        booking: BookingId,
        /// The slot (local time, HH:MM).
        slot: String,
    },
    /// Priority out of range.
    #[error("priority {priority} is out of range 1..=3")]
    InvalidPriority {
        /// The value given.
        priority: u8,
    },
    /// A booking input is invalid.
    #[error("invalid booking '{booking}': {reason}")]
    InvalidBooking {
        /// The booking.
        booking: BookingId,
        /// Why.
        reason: String,
    },
    /// The forward target makes no sense.
    #[error("cannot forward: {reason}")]
    InvalidForward {
        /// Why.
        reason: String,
    },
    /// The daily number range of a prefix is used up.
    #[error("call numbers for prefix '{prefix}' are used up for today")]
    NumbersExhausted {
        /// The prefix.
        prefix: String,
    },
}

impl CommandError {
    /// Stable machine-readable code, e.g. `desk_not_open`.
    pub fn code(&self) -> &'static str {
        match self {
            CommandError::UnknownService { .. } => "unknown_service",
            CommandError::UnknownDesk { .. } => "unknown_desk",
            CommandError::UnknownBooking { .. } => "unknown_booking",
            CommandError::UnknownTicket { .. } => "unknown_ticket",
            CommandError::DeskNotOpen { .. } => "desk_not_open",
            CommandError::DeskIdle { .. } => "desk_idle",
            CommandError::DeskBusy { .. } => "desk_busy",
            CommandError::WrongTicketState { .. } => "wrong_ticket_state",
            CommandError::NothingWaiting { .. } => "nothing_waiting",
            CommandError::NothingParked { .. } => "nothing_parked",
            CommandError::NoClockJump => "no_clock_jump",
            CommandError::ClockUnsynchronised { .. } => "clock_unsynchronised",
            CommandError::IdempotencyKeyReused { .. } => "idempotency_key_reused",
            CommandError::ServiceNotServed { .. } => "service_not_served",
            CommandError::BookingCancelled { .. } => "booking_cancelled",
            CommandError::BookingNotAccepted { .. } => "booking_not_accepted",
            CommandError::BookingDeleted { .. } => "booking_deleted",
            CommandError::AlreadyCheckedIn { .. } => "already_checked_in",
            CommandError::WrongDay { .. } => "wrong_day",
            CommandError::TooEarly { .. } => "too_early",
            CommandError::TooLate { .. } => "too_late",
            CommandError::InvalidPriority { .. } => "invalid_priority",
            CommandError::InvalidBooking { .. } => "invalid_booking",
            CommandError::InvalidForward { .. } => "invalid_forward",
            CommandError::NumbersExhausted { .. } => "numbers_exhausted",
        }
    }
}
