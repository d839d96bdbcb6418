//! The events the engine commits: every change to the queue, in the durable log's order.

use super::{Booking, BookingId, DeskId, DeskMode, ServiceId, Ticket, TicketNumber};
use crate::clock::Millis;
use jiff::civil::Date;
use serde::{Deserialize, Serialize};

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
    /// A silent alarm was acknowledged by someone who takes care of it (the record's source).
    AlarmAcknowledged {
        /// The log seq of the `silent_alarm` event.
        alarm: u64,
    },
}

impl Event {
    /// Whether the event only records paperwork (bookings, prints, purges): it changes no
    /// ticket's place, no desk and no alarm, so what the display and the desk lights show
    /// stays the same.
    pub fn is_paperwork(&self) -> bool {
        matches!(
            self,
            Event::BookingUpserted { .. }
                | Event::BookingCancelled { .. }
                | Event::PersonalDataPurged { .. }
                | Event::TicketPrinted { .. }
                | Event::TicketPrintFailed { .. }
                | Event::ReprintRequested { .. }
        )
    }

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
            Event::AlarmAcknowledged { .. } => "alarm_acknowledged",
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
