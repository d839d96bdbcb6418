//! Deciding the desk and ticket commands against the state: pure, a refusal is a typed
//! [`CommandError`] and changes nothing; the result is events and the answer.

use super::{Decided, Engine, TOKEN_BOOKING_MINUTES};
use crate::clock::Millis;
use crate::domain::{
    Booking, BookingStatus, Command, CommandError, DeskId, DeskMode, Event, ForwardTarget, Outcome,
    PRIORITY_MAX, PRIORITY_NORMAL, PrintOutcome, PrintState, Ticket, TicketOrigin, TicketState,
};

impl Engine {
    pub(super) fn decide(&self, command: &Command, now: Millis) -> Result<Decided, CommandError> {
        let policy = &self.catalog.policy;
        match command {
            Command::Tick | Command::ConfirmClock => Ok(Decided::outcome(Outcome::Unchanged)),
            Command::WalkIn { service, priority } => {
                check_priority(*priority)?;
                let ticket = self.new_ticket(
                    service,
                    TicketOrigin::WalkIn { booking: None },
                    *priority,
                    None,
                    None,
                    now,
                )?;
                Ok(Decided::issued(ticket, false))
            }
            Command::CheckIn { booking } => self.decide_check_in(booking, now),
            Command::CheckInWithToken {
                booking,
                service,
                slot_start,
                version,
            } => {
                let stored = self.state.bookings.get(booking);
                if stored.is_some_and(|b| b.version >= *version) {
                    // The website's booking is as new or newer (maybe cancelled or moved):
                    // it decides.
                    return self.decide_check_in(booking, now);
                }
                // Offline first: the booking has not arrived yet (or only an older version):
                // the signed token vouches for it, and it is stored with the check-in.
                if !self.catalog.services.contains_key(service) {
                    return Err(CommandError::UnknownService {
                        service: service.clone(),
                    });
                }
                let vouched = Booking {
                    id: booking.clone(),
                    version: *version,
                    service: service.clone(),
                    slot_start: *slot_start,
                    duration_minutes: stored.map_or(TOKEN_BOOKING_MINUTES, |b| b.duration_minutes),
                    status: BookingStatus::Booked,
                    desk: stored.and_then(|b| b.desk.clone()),
                    ticket: stored.and_then(|b| b.ticket.clone()),
                    refusal: None,
                    vouched: true,
                };
                let mut decided = self.decide_check_in_of(&vouched, now)?;
                decided.events.insert(
                    0,
                    Event::BookingUpserted {
                        booking: vouched,
                        has_personal_data: false,
                    },
                );
                Ok(decided)
            }
            Command::CallNext { desk } => {
                self.require_open(desk)?;
                if let Some(repeated) = self.repeated_call(desk, now)? {
                    return Ok(Decided::outcome(repeated));
                }
                let mut events = Vec::new();
                let mut finished = None;
                if let Some(current) = &self.desk_state(desk)?.current {
                    events.push(Event::TicketFinished {
                        ticket: current.clone(),
                        desk: desk.clone(),
                    });
                    finished = Some(current.clone());
                }
                match self.best_for(desk, now)? {
                    Some(next) => {
                        events.push(Event::TicketCalled {
                            ticket: next.clone(),
                            desk: desk.clone(),
                            out_of_order: false,
                        });
                        Ok(Decided::events(
                            events,
                            Outcome::Called {
                                ticket: next,
                                desk: desk.clone(),
                                finished,
                            },
                        ))
                    }
                    None => match finished {
                        Some(ticket) => Ok(Decided::events(
                            events,
                            Outcome::TicketUpdated {
                                ticket,
                                state: TicketState::Done,
                            },
                        )),
                        None => Err(CommandError::NothingWaiting { desk: desk.clone() }),
                    },
                }
            }
            Command::CallTicket { desk, ticket } => {
                let desk_state = self.require_open(desk)?;
                let t = self.ticket(ticket)?;
                if t.state != TicketState::Waiting {
                    return Err(wrong_state(t, "call_ticket", "waiting"));
                }
                if !self.desk(desk)?.serves(&t.service) {
                    return Err(CommandError::ServiceNotServed {
                        desk: desk.clone(),
                        service: t.service.clone(),
                    });
                }
                let mut events = Vec::new();
                let mut finished = None;
                if let Some(current) = &desk_state.current {
                    events.push(Event::TicketFinished {
                        ticket: current.clone(),
                        desk: desk.clone(),
                    });
                    finished = Some(current.clone());
                }
                events.push(Event::TicketCalled {
                    ticket: ticket.clone(),
                    desk: desk.clone(),
                    out_of_order: true,
                });
                Ok(Decided::events(
                    events,
                    Outcome::Called {
                        ticket: ticket.clone(),
                        desk: desk.clone(),
                        finished,
                    },
                ))
            }
            Command::Recall { desk } => {
                let t = self.current_ticket(desk, "recall", &["called"])?;
                Ok(Decided::ticket_event(
                    Event::TicketRecalled {
                        ticket: t.number.clone(),
                        desk: desk.clone(),
                    },
                    t,
                    t.state.clone(),
                ))
            }
            Command::StartService { desk } => {
                let t = self.current_ticket(desk, "start_service", &["called"])?;
                Ok(Decided::ticket_event(
                    Event::ServiceStarted {
                        ticket: t.number.clone(),
                        desk: desk.clone(),
                    },
                    t,
                    TicketState::Serving { desk: desk.clone() },
                ))
            }
            Command::Finish { desk } => {
                let t = self.current_ticket(desk, "finish", &["called", "serving"])?;
                Ok(Decided::ticket_event(
                    Event::TicketFinished {
                        ticket: t.number.clone(),
                        desk: desk.clone(),
                    },
                    t,
                    TicketState::Done,
                ))
            }
            Command::NoShow { desk } => {
                let t = self.current_ticket(desk, "no_show", &["called"])?;
                let requeue_at =
                    (t.calls < policy.max_calls).then_some(now + policy.no_show_requeue_delay);
                let state = if requeue_at.is_some() {
                    TicketState::Waiting
                } else {
                    TicketState::NoShow
                };
                Ok(Decided::ticket_event(
                    Event::TicketNoShow {
                        ticket: t.number.clone(),
                        desk: desk.clone(),
                        requeue_at,
                    },
                    t,
                    state,
                ))
            }
            Command::Forward { desk, target } => {
                let t = self.current_ticket(desk, "forward", &["called", "serving"])?;
                let (service, to_desk, preferred_until) = match target {
                    ForwardTarget::Service(service) => {
                        if !self.catalog.services.contains_key(service) {
                            return Err(CommandError::UnknownService {
                                service: service.clone(),
                            });
                        }
                        (service.clone(), None, None)
                    }
                    ForwardTarget::Desk(to) => {
                        let to_desk = self.desk(to)?;
                        if to == desk {
                            return Err(CommandError::InvalidForward {
                                reason: format!("ticket {} is already at desk {desk}", t.number),
                            });
                        }
                        if !to_desk.serves(&t.service) {
                            return Err(CommandError::ServiceNotServed {
                                desk: to.clone(),
                                service: t.service.clone(),
                            });
                        }
                        (
                            t.service.clone(),
                            Some(to.clone()),
                            Some(now + policy.named_desk_grace),
                        )
                    }
                };
                Ok(Decided::ticket_event(
                    Event::TicketForwarded {
                        ticket: t.number.clone(),
                        from_desk: desk.clone(),
                        service,
                        desk: to_desk,
                        preferred_until,
                    },
                    t,
                    TicketState::Waiting,
                ))
            }
            Command::Park { desk } => {
                let t = self.current_ticket(desk, "park", &["serving"])?;
                Ok(Decided::ticket_event(
                    Event::TicketParked {
                        ticket: t.number.clone(),
                        desk: desk.clone(),
                    },
                    t,
                    TicketState::Parked { desk: desk.clone() },
                ))
            }
            Command::ResumeAtDesk { desk, ticket } => {
                self.desk(desk)?;
                let parked_here =
                    |t: &&Ticket| matches!(&t.state, TicketState::Parked { desk: d } if d == desk);
                let parked = match ticket {
                    Some(number) => {
                        let t = self.ticket(number)?;
                        if !parked_here(&t) {
                            return Err(wrong_state(
                                t,
                                "resume",
                                &format!("parked at desk {desk}"),
                            ));
                        }
                        t
                    }
                    None => self
                        .state
                        .tickets
                        .values()
                        .filter(parked_here)
                        .min_by_key(|t| (t.called_at, t.sequence))
                        .ok_or_else(|| CommandError::NothingParked { desk: desk.clone() })?,
                };
                self.decide(
                    &Command::Resume {
                        ticket: parked.number.clone(),
                    },
                    now,
                )
            }
            Command::Resume { ticket } => {
                let t = self.ticket(ticket)?;
                let TicketState::Parked { desk } = &t.state else {
                    return Err(wrong_state(t, "resume", "parked"));
                };
                Ok(Decided::ticket_event(
                    Event::TicketResumed {
                        ticket: t.number.clone(),
                        desk: desk.clone(),
                        preferred_until: now + policy.named_desk_grace,
                    },
                    t,
                    TicketState::Waiting,
                ))
            }
            Command::SetPriority { ticket, priority } => {
                check_priority(*priority)?;
                let t = self.ticket(ticket)?;
                if t.state.is_final() {
                    return Err(wrong_state(t, "set_priority", "not finished"));
                }
                if t.priority == *priority {
                    return Ok(Decided::outcome(Outcome::Unchanged));
                }
                Ok(Decided::ticket_event(
                    Event::PriorityChanged {
                        ticket: t.number.clone(),
                        priority: *priority,
                    },
                    t,
                    t.state.clone(),
                ))
            }
            Command::OpenDesk { desk } => self.decide_desk_mode(desk, DeskMode::Open),
            Command::PauseDesk { desk } => self.decide_desk_mode(desk, DeskMode::Paused),
            Command::CloseDesk { desk } => self.decide_desk_mode(desk, DeskMode::Closed),
            Command::UpsertBooking { booking } => self.decide_upsert_booking(booking, now),
            Command::CancelBooking { booking, version } => {
                let existing = self.state.bookings.get(booking).ok_or_else(|| {
                    CommandError::UnknownBooking {
                        booking: booking.clone(),
                    }
                })?;
                if *version <= existing.version {
                    return Ok(Decided::outcome(Outcome::BookingIgnored {
                        booking: booking.clone(),
                        stored_version: existing.version,
                    }));
                }
                Ok(Decided::events(
                    vec![Event::BookingCancelled {
                        booking: booking.clone(),
                        version: *version,
                    }],
                    Outcome::BookingApplied {
                        booking: booking.clone(),
                        version: *version,
                    },
                ))
            }
            Command::RecordPrint {
                ticket,
                printer,
                outcome,
            } => {
                self.ticket(ticket)?;
                let (event, print) = match outcome {
                    PrintOutcome::Printed => (
                        Event::TicketPrinted {
                            ticket: ticket.clone(),
                            printer: printer.clone(),
                        },
                        PrintState::Printed {
                            printer: printer.clone(),
                            at: now,
                        },
                    ),
                    PrintOutcome::Failed { reason } => (
                        Event::TicketPrintFailed {
                            ticket: ticket.clone(),
                            printer: printer.clone(),
                            reason: reason.clone(),
                        },
                        PrintState::Failed {
                            printer: printer.clone(),
                            reason: reason.clone(),
                            at: now,
                        },
                    ),
                };
                Ok(Decided::events(
                    vec![event],
                    Outcome::PrintRecorded {
                        ticket: ticket.clone(),
                        print,
                    },
                ))
            }
            Command::Reprint { ticket } => {
                let t = self.ticket(ticket)?;
                if t.state.is_final() {
                    return Err(wrong_state(
                        t,
                        "reprint",
                        "waiting, called, serving or parked",
                    ));
                }
                // The reprint goes to the printer of the last outcome: the state turns
                // pending with the event, so the event carries it.
                let printer = match &t.print {
                    PrintState::Failed { printer, .. } | PrintState::Printed { printer, .. } => {
                        Some(printer.clone())
                    }
                    PrintState::Pending => None,
                };
                Ok(Decided::events(
                    vec![Event::ReprintRequested {
                        ticket: ticket.clone(),
                        printer,
                    }],
                    Outcome::ReprintRequested {
                        ticket: ticket.clone(),
                    },
                ))
            }
            Command::SilentAlarm { desk } => {
                self.desk(desk)?;
                Ok(Decided::events(
                    vec![Event::SilentAlarm { desk: desk.clone() }],
                    Outcome::AlarmRecorded { desk: desk.clone() },
                ))
            }
            Command::AcknowledgeAlarm { alarm } => {
                let record = self
                    .state
                    .alarms
                    .iter()
                    .find(|a| a.seq == *alarm)
                    .ok_or(CommandError::UnknownAlarm { alarm: *alarm })?;
                if record.acknowledged.is_some() {
                    return Ok(Decided::events(Vec::new(), Outcome::Unchanged));
                }
                Ok(Decided::events(
                    vec![Event::AlarmAcknowledged { alarm: *alarm }],
                    Outcome::AlarmAcknowledged {
                        alarm: *alarm,
                        desk: record.desk.clone(),
                    },
                ))
            }
        }
    }

    pub(super) fn decide_desk_mode(
        &self,
        desk: &DeskId,
        mode: DeskMode,
    ) -> Result<Decided, CommandError> {
        let state = self.desk_state(desk)?;
        if state.mode == mode {
            return Ok(Decided::outcome(Outcome::Unchanged));
        }
        if mode == DeskMode::Closed {
            if let Some(ticket) = &state.current {
                return Err(CommandError::DeskBusy {
                    desk: desk.clone(),
                    ticket: ticket.clone(),
                });
            }
        }
        Ok(Decided::events(
            vec![Event::DeskModeChanged {
                desk: desk.clone(),
                mode,
            }],
            Outcome::DeskUpdated {
                desk: desk.clone(),
                mode,
            },
        ))
    }
}

pub(super) fn check_priority(priority: u8) -> Result<(), CommandError> {
    if (PRIORITY_NORMAL..=PRIORITY_MAX).contains(&priority) {
        Ok(())
    } else {
        Err(CommandError::InvalidPriority { priority })
    }
}

pub(super) fn wrong_state(t: &Ticket, command: &str, expected: &str) -> CommandError {
    CommandError::WrongTicketState {
        ticket: t.number.clone(),
        state: t.state.name().to_string(),
        command: command.to_string(),
        expected: expected.to_string(),
    }
}
