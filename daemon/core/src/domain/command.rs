//! The commands every input sends, their answers ([`Outcome`]) and refusals ([`CommandError`]).

use super::{
    BookingId, BookingInput, DepartmentId, DeskId, DeskMode, ForwardTarget, PRIORITY_NORMAL,
    PrintOutcome, PrintState, ServiceId, TicketNumber, TicketState,
};
use crate::clock::Millis;
use jiff::civil::Date;
use serde::{Deserialize, Serialize};

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
    /// Someone responsible (an admin, the security service) has seen the silent alarm and
    /// takes care of it: it stops sounding on the admin pages and blinking on its desk's
    /// light, for everyone. Acknowledging it again changes nothing.
    AcknowledgeAlarm {
        /// The log seq of the alarm's `silent_alarm` event.
        alarm: u64,
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
            Command::AcknowledgeAlarm { .. } => "acknowledge_alarm",
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
    /// The silent alarm was acknowledged.
    AlarmAcknowledged {
        /// The alarm's seq.
        alarm: u64,
        /// Its desk.
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
    /// No silent alarm of today has this seq.
    #[error("no silent alarm {alarm} today")]
    UnknownAlarm {
        /// The seq given.
        alarm: u64,
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
            CommandError::UnknownAlarm { .. } => "unknown_alarm",
        }
    }
}
