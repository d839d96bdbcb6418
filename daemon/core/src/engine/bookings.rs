//! Deciding check-ins and booking changes, and issuing new tickets.

use super::{Decided, Engine, MAX_SEQUENCE};
use crate::catalog::LateArrival;
use crate::clock::{MINUTE, Millis};
use crate::domain::{
    Booking, BookingId, BookingInput, BookingStatus, CommandError, DeskId, Event, Outcome,
    PRIORITY_NORMAL, PrintState, ServiceId, Ticket, TicketNumber, TicketOrigin, TicketState,
};

impl Engine {
    pub(super) fn decide_check_in(
        &self,
        id: &BookingId,
        now: Millis,
    ) -> Result<Decided, CommandError> {
        let booking = self
            .state
            .bookings
            .get(id)
            .ok_or_else(|| CommandError::UnknownBooking {
                booking: id.clone(),
            })?;
        self.decide_check_in_of(booking, now)
    }

    pub(super) fn decide_check_in_of(
        &self,
        booking: &Booking,
        now: Millis,
    ) -> Result<Decided, CommandError> {
        let policy = &self.catalog.policy;
        let calendar = &self.catalog.calendar;
        let id = &booking.id;
        match booking.status {
            BookingStatus::Cancelled => {
                return Err(CommandError::BookingCancelled {
                    booking: id.clone(),
                });
            }
            BookingStatus::Deleted => {
                return Err(CommandError::BookingDeleted {
                    booking: id.clone(),
                });
            }
            BookingStatus::Refused => {
                return Err(CommandError::BookingNotAccepted {
                    booking: id.clone(),
                    reason: booking.refusal.clone().unwrap_or_default(),
                });
            }
            BookingStatus::Booked => {}
        }
        if let Some(ticket) = &booking.ticket {
            return Err(CommandError::AlreadyCheckedIn {
                booking: id.clone(),
                ticket: ticket.clone(),
            });
        }
        let slot_day = calendar.day_of(booking.slot_start);
        if Some(slot_day) != self.state.day {
            return Err(CommandError::WrongDay {
                booking: id.clone(),
                day: slot_day,
            });
        }
        let opens = booking.slot_start - policy.checkin_early;
        if now < opens {
            return Err(CommandError::TooEarly {
                booking: id.clone(),
                opens_at: calendar.local_hhmm(opens),
            });
        }
        let preferred = booking
            .desk
            .clone()
            .filter(|d| self.desk(d).is_ok_and(|desk| desk.serves(&booking.service)));
        if now > booking.slot_start + policy.checkin_late {
            return match policy.late_arrival {
                LateArrival::Refuse => Err(CommandError::TooLate {
                    booking: id.clone(),
                    slot: calendar.local_hhmm(booking.slot_start),
                }),
                LateArrival::WalkIn => {
                    let ticket = self.new_ticket(
                        &booking.service,
                        TicketOrigin::WalkIn {
                            booking: Some(id.clone()),
                        },
                        PRIORITY_NORMAL,
                        None,
                        None,
                        now,
                    )?;
                    Ok(Decided::issued(ticket, true))
                }
            };
        }
        let due = booking.slot_start - policy.appointment_due_before;
        let preferred_until = preferred
            .as_ref()
            .map(|_| due.max(now) + policy.named_desk_grace);
        let ticket = self.new_ticket(
            &booking.service,
            TicketOrigin::Appointment {
                booking: id.clone(),
                slot_start: booking.slot_start,
            },
            PRIORITY_NORMAL,
            preferred,
            preferred_until,
            now,
        )?;
        Ok(Decided::issued(ticket, false))
    }

    pub(super) fn decide_upsert_booking(
        &self,
        input: &BookingInput,
        now: Millis,
    ) -> Result<Decided, CommandError> {
        let invalid = |reason: &str| CommandError::InvalidBooking {
            booking: input.id.clone(),
            reason: reason.to_string(),
        };
        if input.id.as_str().is_empty() || input.id.as_str().chars().count() > 128 {
            return Err(invalid("the id must have 1 to 128 characters"));
        }
        let calendar = &self.catalog.calendar;
        let today = self.state.day.unwrap_or_else(|| calendar.day_of(now));
        let day = calendar.day_of(input.slot_start);
        if day < today {
            return Err(invalid("the slot lies before today"));
        }
        if input.slot_start > calendar.start_of_day(today) + 400 * 24 * 60 * MINUTE {
            return Err(invalid("the slot lies more than a year ahead"));
        }
        let existing = self.state.bookings.get(&input.id);
        if let Some(existing) = existing {
            // A booking vouched for by a signed code is replaced by the website's own of the
            // same version (it brings the duration, the desk and the personal data).
            let replaces_vouched = existing.vouched && input.version == existing.version;
            if input.version <= existing.version && !replaces_vouched {
                return Ok(Decided::outcome(Outcome::BookingIgnored {
                    booking: input.id.clone(),
                    stored_version: existing.version,
                }));
            }
        }
        // What this appliance cannot take is stored as refused, with its version, so the
        // day's count and digest still match the website's and the next message does not
        // refuse it again. Cancelled and deleted bookings are stored whatever they name:
        // nobody is served for them.
        let refusal = match (&input.refusal, input.status) {
            (Some(reason), _) => Some(reason.clone()),
            (None, BookingStatus::Booked | BookingStatus::Refused) => {
                self.booking_refusal(input).err()
            }
            (None, _) => None,
        };
        let status = match &refusal {
            Some(_) => BookingStatus::Refused,
            None => input.status,
        };
        // Cancelled, deleted and refused bookings keep no personal data; a deletion erases
        // what was stored.
        let personal = input
            .personal
            .clone()
            .filter(|p| !p.is_empty() && status == BookingStatus::Booked);
        let booking = Booking {
            id: input.id.clone(),
            version: input.version,
            service: input.service.clone(),
            slot_start: input.slot_start,
            duration_minutes: input.duration_minutes,
            status,
            desk: input.desk.clone(),
            ticket: existing.and_then(|b| b.ticket.clone()),
            refusal: refusal.clone(),
            vouched: false,
        };
        let outcome = match refusal {
            Some(reason) => Outcome::BookingRefused {
                booking: input.id.clone(),
                version: input.version,
                reason,
            },
            None => Outcome::BookingApplied {
                booking: input.id.clone(),
                version: input.version,
            },
        };
        let mut decided = Decided::events(
            vec![Event::BookingUpserted {
                booking,
                has_personal_data: personal.is_some(),
            }],
            outcome,
        );
        decided.personal = personal.map(|p| (input.id.clone(), day, p));
        if status != BookingStatus::Booked {
            decided.erase_personal = Some(input.id.clone());
        }
        Ok(decided)
    }

    /// Why this appliance cannot serve a booked appointment, if it cannot.
    pub(super) fn booking_refusal(&self, input: &BookingInput) -> Result<(), String> {
        if !self.catalog.services.contains_key(&input.service) {
            return Err(CommandError::UnknownService {
                service: input.service.clone(),
            }
            .to_string());
        }
        if input.duration_minutes == 0 || input.duration_minutes > 480 {
            return Err("duration must be 1 to 480 minutes".to_string());
        }
        if let Some(desk) = &input.desk {
            let d = self.desk(desk).map_err(|e| e.to_string())?;
            if !d.serves(&input.service) {
                return Err(CommandError::ServiceNotServed {
                    desk: desk.clone(),
                    service: input.service.clone(),
                }
                .to_string());
            }
        }
        if let Some(personal) = &input.personal {
            let too_long =
                |f: &Option<String>| f.as_ref().is_some_and(|s| s.chars().count() > 1_000);
            if too_long(&personal.name) || too_long(&personal.note) {
                return Err("personal data fields are limited to 1000 characters".to_string());
            }
        }
        Ok(())
    }

    pub(super) fn new_ticket(
        &self,
        service: &ServiceId,
        origin: TicketOrigin,
        priority: u8,
        preferred_desk: Option<DeskId>,
        preferred_until: Option<Millis>,
        now: Millis,
    ) -> Result<Ticket, CommandError> {
        let svc =
            self.catalog
                .services
                .get(service)
                .ok_or_else(|| CommandError::UnknownService {
                    service: service.clone(),
                })?;
        let sequence = self.state.counters.get(&svc.prefix).copied().unwrap_or(0) + 1;
        if sequence > MAX_SEQUENCE {
            return Err(CommandError::NumbersExhausted {
                prefix: svc.prefix.clone(),
            });
        }
        let day = self
            .state
            .day
            .unwrap_or_else(|| self.catalog.calendar.day_of(now));
        Ok(Ticket {
            number: TicketNumber::new(format!("{}-{sequence:03}", svc.prefix)),
            day,
            sequence,
            service: service.clone(),
            origin,
            priority,
            preferred_desk,
            preferred_until,
            state: TicketState::Waiting,
            issued_at: now,
            queued_at: now,
            not_before: None,
            calls: 0,
            called_at: None,
            serving_since: None,
            finished_at: None,
            forwards: 0,
            print: PrintState::Pending,
        })
    }
}
