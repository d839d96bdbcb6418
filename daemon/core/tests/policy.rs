//! Queue policy: who is called next, check-in windows, named desks, forward, park, no-show,
//! idempotency and the day boundary in Europe/Berlin.
//!
//! Why over 600 lines: one scenario per test of the queue policy, each readable alone, on one shared simulator set-up.

use leitsystem_core::catalog::LateArrival;
use leitsystem_core::clock::MINUTE;
use leitsystem_core::domain::{
    BookingId, BookingInput, BookingStatus, Command, CommandError, DeskId, ForwardTarget, Outcome,
    PersonalData, ServiceId, TicketNumber, TicketState,
};
use leitsystem_core::testing::{Sim, local_instant};

#[test]
fn walk_ins_are_called_first_come_first_served() {
    let mut sim = Sim::new();
    sim.open("1");
    sim.at("09:00");
    let first = sim.walk_in("ausweis");
    sim.at("09:01");
    let second = sim.walk_in("meldung");
    sim.at("09:02");
    let third = sim.walk_in("ausweis");
    assert_eq!(sim.next("1"), first);
    assert_eq!(sim.next("1"), second);
    assert_eq!(sim.next("1"), third);
    assert_eq!(
        (first.as_str(), second.as_str(), third.as_str()),
        ("A-001", "M-001", "A-002")
    );
}

#[test]
fn a_due_appointment_goes_before_walk_ins_who_came_earlier() {
    let mut sim = Sim::new();
    sim.open("1");
    sim.book("b1", "ausweis", "09:30", None);
    sim.at("09:00");
    let walk_in = sim.walk_in("ausweis");
    sim.at("09:20");
    let appointment = sim.checked_in("b1");
    // 09:24: not yet due (due 5 minutes before the slot): the walk-in goes first.
    sim.at("09:24");
    assert_eq!(sim.next("1"), walk_in);
    sim.ok(Command::Finish {
        desk: DeskId::new("1"),
    });
    let later_walk_in = sim.walk_in("ausweis");
    // 09:25: the appointment is due and beats the walk-in who came at 09:24.
    sim.at("09:25");
    assert_eq!(sim.next("1"), appointment);
    assert_eq!(sim.next("1"), later_walk_in);
}

#[test]
fn an_idle_desk_takes_an_early_appointment_when_nobody_else_waits() {
    let mut sim = Sim::new();
    sim.open("1");
    sim.book("b1", "ausweis", "10:00", None);
    sim.at("09:10");
    let ticket = sim.checked_in("b1");
    assert_eq!(sim.next("1"), ticket);
}

#[test]
fn a_walk_in_waits_no_longer_than_the_bound_even_against_due_appointments() {
    let mut sim = Sim::with_policy(|p| p.walk_in_max_wait = 30 * MINUTE);
    sim.open("1");
    for (i, slot) in [
        "09:05", "09:10", "09:15", "09:20", "09:25", "09:30", "09:35",
    ]
    .iter()
    .enumerate()
    {
        sim.book(&format!("b{i}"), "ausweis", slot, None);
    }
    sim.at("09:00");
    let walk_in = sim.walk_in("ausweis");
    for i in 0..7 {
        sim.checked_in(&format!("b{i}"));
    }
    // Appointments are due and go first while the walk-in has waited less than 30 minutes.
    for hhmm in ["09:05", "09:10", "09:15", "09:20", "09:25"] {
        sim.at(hhmm);
        let called = sim.next("1");
        assert_ne!(called, walk_in, "walk-in called at {hhmm} before its bound");
    }
    // 09:30: 30 minutes waited; the walk-in now beats the due appointment of 09:30.
    sim.at("09:30");
    assert_eq!(sim.next("1"), walk_in);
}

#[test]
fn priority_visitors_go_first() {
    let mut sim = Sim::new();
    sim.open("1");
    let normal = sim.walk_in("ausweis");
    sim.at("08:05");
    let urgent = sim.walk_in_with_priority("ausweis", 3);
    assert_eq!(sim.next("1"), urgent);
    assert_eq!(sim.next("1"), normal);
    let err = sim.run(Command::WalkIn {
        service: ServiceId::new("ausweis"),
        priority: 4,
    });
    assert!(matches!(
        err,
        Err(CommandError::InvalidPriority { priority: 4 })
    ));
}

#[test]
fn a_desk_calls_only_services_it_serves() {
    let mut sim = Sim::new();
    sim.open("1"); // ausweis, meldung
    sim.open("3"); // meldung, fuehrerschein
    let licence = sim.walk_in("fuehrerschein");
    let err = sim.next_result("1");
    assert!(
        matches!(err, Err(CommandError::NothingWaiting { .. })),
        "{err:?}"
    );
    let err = sim.run(Command::CallTicket {
        desk: DeskId::new("1"),
        ticket: TicketNumber::new(&licence),
    });
    assert!(
        matches!(err, Err(CommandError::ServiceNotServed { .. })),
        "{err:?}"
    );
    assert_eq!(sim.next("3"), licence);
}

#[test]
fn check_in_windows_follow_the_policy() {
    let mut sim = Sim::new();
    sim.book("early", "ausweis", "10:00", None);
    sim.book("ontime", "ausweis", "10:00", None);
    sim.book("late", "ausweis", "10:00", None);
    sim.book("verylate", "ausweis", "10:00", None);

    sim.at("08:59");
    let err = sim.check_in("early");
    assert_eq!(
        err,
        Err(CommandError::TooEarly {
            booking: BookingId::new("early"),
            opens_at: "09:00".to_string()
        })
    );
    sim.at("09:00");
    assert!(matches!(
        sim.check_in("ontime"),
        Ok(Outcome::TicketIssued {
            late_as_walk_in: false,
            ..
        })
    ));
    sim.at("10:15");
    assert!(matches!(
        sim.check_in("late"),
        Ok(Outcome::TicketIssued {
            late_as_walk_in: false,
            ..
        })
    ));
    sim.at("10:16");
    let very_late = sim.check_in("verylate");
    let Ok(Outcome::TicketIssued {
        ticket,
        late_as_walk_in: true,
        ..
    }) = very_late
    else {
        panic!("a very late visitor should get a walk-in ticket: {very_late:?}");
    };
    assert!(matches!(
        sim.ticket(ticket.as_str()).origin,
        leitsystem_core::domain::TicketOrigin::WalkIn { booking: Some(_) }
    ));
    // Once checked in, never twice.
    assert!(matches!(
        sim.check_in("verylate"),
        Err(CommandError::AlreadyCheckedIn { .. })
    ));
}

#[test]
fn late_arrivals_can_be_refused_by_policy() {
    let mut sim = Sim::with_policy(|p| p.late_arrival = LateArrival::Refuse);
    sim.book("b", "meldung", "10:00", None);
    sim.at("10:16");
    assert_eq!(
        sim.check_in("b"),
        Err(CommandError::TooLate {
            booking: BookingId::new("b"),
            slot: "10:00".to_string()
        })
    );
}

#[test]
fn check_in_refuses_other_days_cancelled_and_unknown_bookings() {
    let mut sim = Sim::new();
    let tomorrow = local_instant("2026-06-16", "09:00");
    sim.book_at("tomorrow", "ausweis", tomorrow, None);
    assert!(matches!(
        sim.check_in("tomorrow"),
        Err(CommandError::WrongDay { .. })
    ));
    sim.book("gone", "ausweis", "09:00", None);
    sim.ok(Command::CancelBooking {
        booking: BookingId::new("gone"),
        version: 2,
    });
    assert!(matches!(
        sim.check_in("gone"),
        Err(CommandError::BookingCancelled { .. })
    ));
    assert!(matches!(
        sim.check_in("nope"),
        Err(CommandError::UnknownBooking { .. })
    ));
}

#[test]
fn booking_versions_apply_only_when_newer() {
    let mut sim = Sim::new();
    sim.book("b", "ausweis", "09:00", None);
    let stale = sim.ok(Command::CancelBooking {
        booking: BookingId::new("b"),
        version: 1,
    });
    assert!(
        matches!(
            stale,
            Outcome::BookingIgnored {
                stored_version: 1,
                ..
            }
        ),
        "{stale:?}"
    );
    assert!(sim.check_in("b").is_ok());
}

#[test]
fn a_named_desk_calls_its_visitor_first_and_others_only_after_the_grace() {
    let mut sim = Sim::with_policy(|p| p.named_desk_grace = 10 * MINUTE);
    sim.open("1");
    sim.open("2");
    sim.book("b", "ausweis", "09:30", Some("2"));
    sim.at("09:20");
    let outcome = sim.check_in("b");
    let Ok(Outcome::TicketIssued { ticket, desk, .. }) = outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(desk, Some(DeskId::new("2")), "the visitor is told the desk");
    // Due at 09:25; desk 1 may take it only from 09:35.
    sim.at("09:30");
    assert!(matches!(
        sim.next_result("1"),
        Err(CommandError::NothingWaiting { .. })
    ));
    // Desk 2 calls its own visitor before an earlier walk-in.
    let walk_in = sim.walk_in("ausweis");
    assert_eq!(sim.next("2"), ticket.to_string());
    assert_eq!(sim.next("1"), walk_in);

    // After the grace another desk may call a named-desk visitor.
    sim.book("c", "ausweis", "10:00", Some("2"));
    sim.at("09:50");
    let named = sim.checked_in("c");
    sim.at("10:04");
    assert!(
        matches!(sim.next_result("1"), Ok(Outcome::TicketUpdated { .. })),
        "desk 1 only finishes its visitor"
    );
    sim.at("10:05");
    assert_eq!(sim.next("1"), named);
}

#[test]
fn forward_keeps_the_number_and_changes_the_queue() {
    let mut sim = Sim::new();
    sim.open("1");
    sim.open("3");
    let ticket = sim.walk_in("meldung");
    assert_eq!(sim.next("1"), ticket);
    sim.ok(Command::StartService {
        desk: DeskId::new("1"),
    });
    sim.ok(Command::Forward {
        desk: DeskId::new("1"),
        target: ForwardTarget::Service(ServiceId::new("fuehrerschein")),
    });
    let t = sim.ticket(&ticket);
    assert_eq!(
        (t.state.clone(), t.service.as_str()),
        (TicketState::Waiting, "fuehrerschein")
    );
    assert!(sim.state().desks[&DeskId::new("1")].current.is_none());
    // Desk 1 does not serve driving licences; desk 3 calls the same number.
    assert!(sim.next_result("1").is_err());
    assert_eq!(sim.next("3"), ticket);

    // Forward to a desk: that desk calls it first.
    sim.open("4");
    sim.ok(Command::Forward {
        desk: DeskId::new("3"),
        target: ForwardTarget::Desk(DeskId::new("4")),
    });
    let other = sim.walk_in("fuehrerschein");
    assert_eq!(sim.next("4"), ticket);
    assert_eq!(sim.next("3"), other);
    assert_eq!(sim.ticket(&ticket).forwards, 2);
}

#[test]
fn a_parked_visitor_returns_to_the_same_desk() {
    let mut sim = Sim::new();
    sim.open("1");
    sim.open("2");
    let parked = sim.walk_in("ausweis");
    let other = sim.walk_in("ausweis");
    assert_eq!(sim.next("1"), parked);
    sim.ok(Command::StartService {
        desk: DeskId::new("1"),
    });
    sim.ok(Command::Park {
        desk: DeskId::new("1"),
    });
    assert_eq!(
        sim.ticket(&parked).state,
        TicketState::Parked {
            desk: DeskId::new("1")
        }
    );
    assert_eq!(sim.next("1"), other, "the desk serves others meanwhile");
    sim.ok(Command::Resume {
        ticket: TicketNumber::new(&parked),
    });
    assert!(matches!(
        sim.next_result("2"),
        Err(CommandError::NothingWaiting { .. })
    ));
    assert_eq!(sim.next("1"), parked);
}

#[test]
fn a_no_show_is_requeued_after_the_delay_until_max_calls() {
    let mut sim = Sim::with_policy(|p| {
        p.no_show_requeue_delay = 5 * MINUTE;
        p.max_calls = 2;
    });
    sim.open("1");
    sim.at("09:00");
    let ticket = sim.walk_in("ausweis");
    assert_eq!(sim.next("1"), ticket);
    sim.ok(Command::NoShow {
        desk: DeskId::new("1"),
    });
    assert_eq!(sim.ticket(&ticket).state, TicketState::Waiting);
    sim.at("09:04");
    assert!(matches!(
        sim.next_result("1"),
        Err(CommandError::NothingWaiting { .. })
    ));
    sim.at("09:05");
    assert_eq!(sim.next("1"), ticket);
    sim.ok(Command::NoShow {
        desk: DeskId::new("1"),
    });
    assert_eq!(
        sim.ticket(&ticket).state,
        TicketState::NoShow,
        "second no-show is final"
    );
}

#[test]
fn recall_start_finish_follow_the_state_machine() {
    let mut sim = Sim::new();
    sim.open("1");
    let ticket = sim.walk_in("ausweis");
    let d = || DeskId::new("1");
    assert!(matches!(
        sim.run(Command::Recall { desk: d() }),
        Err(CommandError::DeskIdle { .. })
    ));
    sim.next("1");
    sim.ok(Command::Recall { desk: d() });
    assert_eq!(sim.ticket(&ticket).calls, 2);
    sim.ok(Command::StartService { desk: d() });
    assert!(matches!(
        sim.run(Command::Recall { desk: d() }),
        Err(CommandError::WrongTicketState { .. })
    ));
    assert!(matches!(
        sim.run(Command::NoShow { desk: d() }),
        Err(CommandError::WrongTicketState { .. })
    ));
    assert!(matches!(
        sim.run(Command::CloseDesk { desk: d() }),
        Err(CommandError::DeskBusy { .. })
    ));
    sim.ok(Command::Finish { desk: d() });
    assert_eq!(sim.ticket(&ticket).state, TicketState::Done);
    sim.ok(Command::CloseDesk { desk: d() });
    assert!(matches!(
        sim.next_result("1"),
        Err(CommandError::DeskNotOpen { .. })
    ));
    assert!(matches!(
        sim.next_result("99"),
        Err(CommandError::UnknownDesk { .. })
    ));
}

#[test]
fn a_refused_command_changes_nothing() {
    let mut sim = Sim::new();
    sim.open("1");
    sim.walk_in("ausweis");
    let before = sim.state().clone();
    let refused = [
        Command::CallNext {
            desk: DeskId::new("2"),
        },
        Command::StartService {
            desk: DeskId::new("1"),
        },
        Command::WalkIn {
            service: ServiceId::new("nope"),
            priority: 1,
        },
        Command::Resume {
            ticket: TicketNumber::new("A-001"),
        },
        Command::CheckIn {
            booking: BookingId::new("nope"),
        },
    ];
    for command in refused {
        let name = command.name();
        assert!(sim.run(command).is_err(), "{name} should be refused");
        assert_eq!(sim.state(), &before, "{name} changed the state");
        assert!(
            sim.commits.last().is_some_and(|c| c.records.is_empty()),
            "{name} wrote events"
        );
    }
}

#[test]
fn the_same_request_id_has_one_effect() {
    let mut sim = Sim::new();
    let command = Command::WalkIn {
        service: ServiceId::new("ausweis"),
        priority: 1,
    };
    let first = sim.run_with_id(Some("button-7"), command.clone());
    let second = sim.run_with_id(Some("button-7"), command.clone());
    assert_eq!(first, second);
    assert_eq!(sim.state().tickets.len(), 1);
    let third = sim.run_with_id(Some("button-8"), command);
    assert_ne!(first, third);
    assert_eq!(sim.state().tickets.len(), 2);
}

#[test]
fn estimated_wait_uses_measured_service_times() {
    let mut sim = Sim::new();
    sim.open("1");
    sim.at("09:00");
    sim.walk_in("meldung");
    sim.next("1");
    sim.ok(Command::StartService {
        desk: DeskId::new("1"),
    });
    sim.at("09:20");
    sim.ok(Command::Finish {
        desk: DeskId::new("1"),
    });
    // One measured visit of 20 minutes replaces the configured 8 minutes.
    sim.walk_in("meldung");
    sim.walk_in("meldung");
    let third = sim.ok(Command::WalkIn {
        service: ServiceId::new("meldung"),
        priority: 1,
    });
    let Outcome::TicketIssued {
        estimated_wait_minutes,
        ..
    } = third
    else {
        panic!("{third:?}");
    };
    assert_eq!(
        estimated_wait_minutes, 40,
        "two ahead x 20 minutes at one open desk"
    );
    sim.open("2");
    assert_eq!(
        sim.engine.estimated_wait(&ServiceId::new("meldung")),
        3 * 20 * MINUTE / 2
    );
}

/// Runs a day change from `day` 23:59 to the next day 00:00 local time.
fn check_day_rollover(day: &str, next_day: &str) {
    let mut sim = Sim::new();
    sim.day = day.to_string();
    sim.at("08:00");
    sim.open("1");
    let first = sim.walk_in("ausweis");
    assert_eq!(first, "A-001");
    sim.at("23:59");
    let open_ticket = sim.walk_in("ausweis");
    assert_eq!(open_ticket, "A-002");
    assert_eq!(sim.state().day.map(|d| d.to_string()).as_deref(), Some(day));

    sim.day = next_day.to_string();
    sim.at("00:00");
    let new_first = sim.walk_in("ausweis");
    assert_eq!(new_first, "A-001", "numbering restarts at local midnight");
    assert_eq!(
        sim.state().day.map(|d| d.to_string()).as_deref(),
        Some(next_day)
    );
    assert_eq!(sim.state().tickets.len(), 1);
    assert_eq!(
        sim.state().desks[&DeskId::new("1")].mode,
        leitsystem_core::domain::DeskMode::Closed
    );
    let closed: Vec<_> = sim
        .log()
        .into_iter()
        .filter_map(|r| match r.event {
            leitsystem_core::domain::Event::DayClosed {
                closed_tickets,
                day: closed_day,
            } => Some((closed_day.to_string(), closed_tickets)),
            _ => None,
        })
        .collect();
    assert_eq!(
        closed,
        vec![(
            day.to_string(),
            vec![TicketNumber::new("A-001"), TicketNumber::new("A-002")]
        )]
    );
}

#[test]
fn the_day_rolls_over_at_local_midnight_in_summer() {
    check_day_rollover("2026-06-15", "2026-06-16");
}

#[test]
fn the_day_rolls_over_into_and_out_of_the_spring_dst_switch() {
    check_day_rollover("2026-03-28", "2026-03-29");
    check_day_rollover("2026-03-29", "2026-03-30");
}

#[test]
fn the_day_rolls_over_into_and_out_of_the_autumn_dst_switch() {
    check_day_rollover("2026-10-24", "2026-10-25");
    check_day_rollover("2026-10-25", "2026-10-26");
}

#[test]
fn a_tick_one_second_before_midnight_does_not_close_the_day() {
    let mut sim = Sim::new();
    sim.day = "2026-10-25".to_string();
    sim.at("08:00");
    sim.walk_in("ausweis");
    // 23:59:59 on the 25-hour day is 22:59:59 UTC.
    sim.now = leitsystem_core::testing::utc("2026-10-25T22:59:59Z");
    sim.ok(Command::Tick);
    assert_eq!(sim.state().tickets.len(), 1);
    sim.now = leitsystem_core::testing::utc("2026-10-25T23:00:00Z");
    sim.ok(Command::Tick);
    assert_eq!(sim.state().tickets.len(), 0);
    assert_eq!(
        sim.state().day.map(|d| d.to_string()).as_deref(),
        Some("2026-10-26")
    );
}

#[test]
fn a_clock_running_backwards_never_moves_events_back() {
    let mut sim = Sim::new();
    sim.at("10:00");
    sim.walk_in("ausweis");
    sim.at("09:00");
    let second = sim.walk_in("ausweis");
    assert_eq!(sim.ticket(&second).issued_at, sim.local("10:00"));
    let times: Vec<_> = sim.log().iter().map(|r| r.at).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
}

#[test]
fn a_requeued_no_show_goes_to_the_back_of_the_line() {
    let mut sim = Sim::with_policy(|p| {
        p.no_show_requeue_delay = 5 * MINUTE;
        p.max_calls = 2;
    });
    sim.open("1");
    sim.at("09:00");
    let absent = sim.walk_in("ausweis");
    sim.at("09:01");
    let present = sim.walk_in("ausweis");
    assert_eq!(sim.next("1"), absent);
    sim.ok(Command::NoShow {
        desk: DeskId::new("1"),
    });
    sim.at("09:06");
    assert_eq!(sim.next("1"), present, "the visitor who waited goes first");
    assert_eq!(sim.next("1"), absent);
}

#[test]
fn request_ids_are_scoped_by_input() {
    let mut sim = Sim::new();
    let walk_in = |service: &str| leitsystem_core::domain::CommandRequest {
        request_id: Some("1".to_string()),
        source: String::new(),
        command: Command::WalkIn {
            service: ServiceId::new(service),
            priority: 1,
        },
    };
    let mut kiosk = walk_in("ausweis");
    kiosk.source = "kiosk".to_string();
    let mut web = walk_in("meldung");
    web.source = "web".to_string();
    let now = sim.now;
    let first = sim.engine.execute(&kiosk, now).map(|e| e.duplicate);
    let second = sim.engine.execute(&web, now).map(|e| e.duplicate);
    assert_eq!((first, second), (Ok(false), Ok(false)));
    assert_eq!(sim.state().tickets.len(), 2);
    assert_eq!(
        sim.engine.execute(&kiosk, now).map(|e| e.duplicate),
        Ok(true)
    );
}

#[test]
fn a_failed_print_keeps_the_ticket_valid_and_can_be_reprinted_until_it_is_final() {
    use leitsystem_core::domain::{PrintOutcome, PrintState};
    let mut sim = Sim::new();
    sim.open("1");
    sim.at("09:00");
    let ticket = sim.walk_in("ausweis");
    let number = TicketNumber::new(ticket.clone());
    assert_eq!(sim.ticket(&ticket).print, PrintState::Pending);
    let record = |outcome| Command::RecordPrint {
        ticket: number.clone(),
        printer: "foyer-printer".into(),
        outcome,
    };
    sim.ok(record(PrintOutcome::Failed {
        reason: "paper out".into(),
    }));
    assert!(
        matches!(&sim.ticket(&ticket).print, PrintState::Failed { reason, printer, .. }
            if reason == "paper out" && printer == "foyer-printer"),
        "{:?}",
        sim.ticket(&ticket).print
    );
    // The ticket is still in line and is called as usual.
    assert_eq!(sim.ticket(&ticket).state, TicketState::Waiting);
    assert_eq!(
        sim.ok(Command::Reprint {
            ticket: number.clone()
        }),
        Outcome::ReprintRequested {
            ticket: number.clone()
        }
    );
    assert_eq!(sim.ticket(&ticket).print, PrintState::Pending);
    sim.ok(record(PrintOutcome::Printed));
    assert!(matches!(
        sim.ticket(&ticket).print,
        PrintState::Printed { .. }
    ));
    assert_eq!(sim.next("1"), ticket);
    sim.ok(Command::Finish {
        desk: DeskId::new("1"),
    });
    // Done: nothing to reprint any more; unknown tickets are refused.
    assert!(matches!(
        sim.run(Command::Reprint {
            ticket: number.clone()
        }),
        Err(CommandError::WrongTicketState { .. })
    ));
    assert!(matches!(
        sim.run(Command::RecordPrint {
            ticket: TicketNumber::new("Z-999"),
            printer: "foyer-printer".into(),
            outcome: PrintOutcome::Printed,
        }),
        Err(CommandError::UnknownTicket { .. })
    ));
}

#[test]
fn a_signed_token_checks_in_before_the_booking_arrived_and_only_once() {
    let mut sim = Sim::new();
    sim.open("1");
    sim.at("09:20");
    let token = |booking: &str, slot: i64, version: u64| Command::CheckInWithToken {
        booking: BookingId::new(booking),
        service: ServiceId::new("ausweis"),
        slot_start: slot,
        version,
    };
    // Offline first: the booking never arrived, the token vouches for it.
    let slot = sim.local("09:30");
    let ticket = match sim.run(token("t1", slot, 1)) {
        Ok(Outcome::TicketIssued { ticket, .. }) => ticket,
        other => panic!("token check-in answered {other:?}"),
    };
    let booking = &sim.state().bookings[&BookingId::new("t1")];
    assert_eq!((booking.version, booking.slot_start), (1, slot));
    assert_eq!(booking.ticket.as_ref(), Some(&ticket));
    // A replayed token is refused.
    assert!(matches!(
        sim.run(token("t1", slot, 1)),
        Err(CommandError::AlreadyCheckedIn { .. })
    ));
    // The booking arrived and was cancelled since the token was issued: the newer booking wins.
    sim.book("t2", "ausweis", "09:40", None);
    sim.ok(Command::CancelBooking {
        booking: BookingId::new("t2"),
        version: 2,
    });
    assert!(matches!(
        sim.run(token("t2", sim.local("09:40"), 1)),
        Err(CommandError::BookingCancelled { .. })
    ));
    // Other days and check-in windows apply as for any booking, and a refusal stores nothing.
    let tomorrow = local_instant("2026-06-16", "09:30");
    assert!(matches!(
        sim.run(token("t3", tomorrow, 1)),
        Err(CommandError::WrongDay { .. })
    ));
    assert!(matches!(
        sim.run(token("t4", sim.local("11:00"), 1)),
        Err(CommandError::TooEarly { .. })
    ));
    assert!(!sim.state().bookings.contains_key(&BookingId::new("t3")));
    assert!(!sim.state().bookings.contains_key(&BookingId::new("t4")));
}

/// Regression: a second "next" a second after the first (a bouncing button, a double click)
/// finished the called visitor unserved, called the one after, and pulled the wait estimate
/// down with a one-second "service".
#[test]
fn a_second_next_within_the_window_repeats_the_call_and_serves_nobody_away() {
    let mut sim = Sim::with_policy(|p| p.repeat_next_within = 5_000);
    sim.open("1");
    sim.at("09:00");
    let first = sim.walk_in("ausweis");
    let second = sim.walk_in("ausweis");
    assert_eq!(sim.next("1"), first);
    let seq = sim.engine.state().last_seq;
    sim.now += 1_000;
    assert_eq!(sim.next("1"), first, "the second press repeats the call");
    assert_eq!(
        sim.engine.state().last_seq,
        seq,
        "the repeat changes nothing"
    );
    assert_eq!(
        sim.ticket(&first).state,
        TicketState::Called {
            desk: DeskId::new("1")
        }
    );
    assert_eq!(sim.ticket(&second).state, TicketState::Waiting);
    let served = |sim: &Sim| {
        sim.engine
            .state()
            .stats
            .get(&ServiceId::new("ausweis"))
            .map_or(0, |s| s.served_today)
    };
    assert_eq!(served(&sim), 0, "no one-second service in the statistics");
    // The visitor can still be recalled and served.
    sim.ok(Command::Recall {
        desk: DeskId::new("1"),
    });
    // Once the window has passed (counted from the recall), "next" finishes and calls on.
    sim.now += 5_000;
    assert_eq!(sim.next("1"), second);
    assert_eq!(sim.ticket(&first).state, TicketState::Done);
}

#[test]
fn next_after_the_service_started_is_never_a_repeat() {
    let mut sim = Sim::with_policy(|p| p.repeat_next_within = 5_000);
    sim.open("1");
    let first = sim.walk_in("ausweis");
    let second = sim.walk_in("ausweis");
    assert_eq!(sim.next("1"), first);
    sim.ok(Command::StartService {
        desk: DeskId::new("1"),
    });
    sim.now += 1_000;
    assert_eq!(sim.next("1"), second);
    assert_eq!(sim.ticket(&first).state, TicketState::Done);
}

#[test]
fn with_the_window_off_a_quick_second_next_finishes_and_calls_on() {
    let mut sim = Sim::with_policy(|p| p.repeat_next_within = 0);
    sim.open("1");
    let first = sim.walk_in("ausweis");
    let second = sim.walk_in("ausweis");
    assert_eq!(sim.next("1"), first);
    assert_eq!(sim.next("1"), second);
}

#[test]
fn resume_at_a_desk_takes_its_longest_parked_visitor_back_and_next_calls_them() {
    let mut sim = Sim::new();
    sim.open("1");
    sim.open("2");
    let desk = DeskId::new("1");
    let park = |sim: &mut Sim| {
        sim.ok(Command::StartService { desk: desk.clone() });
        sim.ok(Command::Park { desk: desk.clone() });
    };
    assert!(matches!(
        sim.run(Command::ResumeAtDesk {
            desk: desk.clone(),
            ticket: None
        }),
        Err(CommandError::NothingParked { .. })
    ));
    let first = sim.walk_in("ausweis");
    let second = sim.walk_in("ausweis");
    let other = sim.walk_in("ausweis");
    sim.at("09:00");
    assert_eq!(sim.next("1"), first);
    park(&mut sim);
    sim.at("09:05");
    assert_eq!(sim.next("1"), second);
    park(&mut sim);
    // Desk 2 cannot resume desk 1's visitors.
    assert!(
        sim.run(Command::ResumeAtDesk {
            desk: DeskId::new("2"),
            ticket: Some(TicketNumber::new(&second)),
        })
        .is_err()
    );
    sim.ok(Command::ResumeAtDesk {
        desk: desk.clone(),
        ticket: None,
    });
    assert_eq!(sim.ticket(&first).state, TicketState::Waiting);
    assert_eq!(
        sim.ticket(&second).state,
        TicketState::Parked { desk: desk.clone() }
    );
    assert_eq!(
        sim.next("1"),
        first,
        "the resumed visitor goes before the line"
    );
    sim.ok(Command::ResumeAtDesk {
        desk: desk.clone(),
        ticket: Some(TicketNumber::new(&second)),
    });
    sim.at("09:10");
    assert_eq!(sim.next("1"), second);
    assert_eq!(sim.next("1"), other);
}

fn booking_input(
    id: &str,
    version: u64,
    service: &str,
    slot: i64,
    desk: Option<&str>,
) -> BookingInput {
    BookingInput {
        id: BookingId::new(id),
        version,
        service: ServiceId::new(service),
        slot_start: slot,
        duration_minutes: 20,
        desk: desk.map(DeskId::new),
        personal: Some(PersonalData {
            name: Some("Erika Mustermann".into()),
            note: None,
        }),
        status: BookingStatus::Booked,
        refusal: None,
    }
}

/// Regression: a booking the appliance refused (a desk that does not serve its service) was
/// not stored, so its day's digest never matched the website's again and every later
/// message re-fetched and refused it; even its deletion was refused.
#[test]
fn a_booking_the_appliance_cannot_take_is_stored_as_refused_counted_and_replaceable() {
    let mut sim = Sim::new();
    sim.open("1");
    sim.at("09:00");
    let slot = sim.local("09:30");
    // Desk 3 serves meldung and fuehrerschein, not ausweis.
    let bad = booking_input("r1", 1, "ausweis", slot, Some("3"));
    match sim.run(Command::UpsertBooking {
        booking: bad.clone(),
    }) {
        Ok(Outcome::BookingRefused {
            version: 1, reason, ..
        }) => {
            assert!(reason.contains("does not serve"), "{reason}")
        }
        other => panic!("answered {other:?}"),
    }
    let stored = sim.state().bookings[&BookingId::new("r1")].clone();
    assert_eq!(stored.status, BookingStatus::Refused);
    // Counted in the day's digest exactly as the website counts it.
    let day = sim.engine.catalog().calendar.day_of(slot);
    let (count, digest) = leitsystem_core::contract::day_digest([("r1", 1)]);
    assert_eq!(
        sim.engine.booking_days(None).get(&day),
        Some(&(count, digest))
    );
    // The same version again changes nothing (no second refusal).
    assert!(matches!(
        sim.run(Command::UpsertBooking {
            booking: bad.clone()
        }),
        Ok(Outcome::BookingIgnored { .. })
    ));
    // It cannot be checked in, with a reason.
    sim.at("09:20");
    assert!(matches!(
        sim.check_in("r1"),
        Err(CommandError::BookingNotAccepted { .. })
    ));
    // A corrected version replaces it and checks in; an unknown service is refused the same way.
    let good = booking_input("r1", 2, "ausweis", slot, Some("1"));
    assert!(matches!(
        sim.run(Command::UpsertBooking { booking: good }),
        Ok(Outcome::BookingApplied { version: 2, .. })
    ));
    sim.checked_in("r1");
    assert!(matches!(
        sim.run(Command::UpsertBooking {
            booking: booking_input("r2", 1, "no-such-service", slot, None)
        }),
        Ok(Outcome::BookingRefused { .. })
    ));
    // Its deletion is taken, whatever it names.
    let mut deleted = booking_input("r2", 2, "no-such-service", slot, None);
    deleted.status = BookingStatus::Deleted;
    assert!(matches!(
        sim.run(Command::UpsertBooking { booking: deleted }),
        Ok(Outcome::BookingApplied { version: 2, .. })
    ));
    assert_eq!(
        sim.state().bookings[&BookingId::new("r2")].status,
        BookingStatus::Deleted
    );
}

/// Regression: after a check-in with a signed code (before the booking arrived), the website's
/// booking of the same version was ignored: no name for the evacuation list, no desk, the
/// token's default duration.
#[test]
fn the_websites_booking_replaces_the_one_a_signed_code_vouched_for() {
    let mut sim = Sim::new();
    sim.open("1");
    sim.at("09:20");
    let slot = sim.local("09:30");
    let ticket = match sim.run(Command::CheckInWithToken {
        booking: BookingId::new("t1"),
        service: ServiceId::new("ausweis"),
        slot_start: slot,
        version: 3,
    }) {
        Ok(Outcome::TicketIssued { ticket, .. }) => ticket,
        other => panic!("token check-in answered {other:?}"),
    };
    assert!(sim.state().bookings[&BookingId::new("t1")].vouched);
    let website = booking_input("t1", 3, "ausweis", slot, Some("1"));
    assert!(matches!(
        sim.run(Command::UpsertBooking {
            booking: website.clone()
        }),
        Ok(Outcome::BookingApplied { version: 3, .. })
    ));
    let stored = &sim.state().bookings[&BookingId::new("t1")];
    assert!(!stored.vouched);
    assert_eq!(stored.duration_minutes, 20);
    assert_eq!(stored.desk, Some(DeskId::new("1")));
    assert_eq!(stored.ticket.as_ref(), Some(&ticket), "the check-in stays");
    let personal = sim.commits.last().and_then(|c| c.personal.first().cloned());
    assert!(
        personal.is_some_and(
            |(id, _, p)| id.as_str() == "t1" && p.name.as_deref() == Some("Erika Mustermann")
        ),
        "the name is stored for the evacuation list"
    );
    // Once it is the website's, the same version again is a repeat.
    assert!(matches!(
        sim.run(Command::UpsertBooking { booking: website }),
        Ok(Outcome::BookingIgnored { .. })
    ));
}

#[test]
fn a_visitor_forwarded_to_a_desk_waits_for_that_desk_during_the_grace_only() {
    // Desks 3 and 4 both serve driving licences; the named-desk grace is 10 minutes.
    let mut sim = Sim::new();
    sim.open("3");
    sim.open("4");
    let ticket = sim.walk_in("fuehrerschein");
    assert_eq!(sim.next("3"), ticket);
    sim.ok(Command::StartService {
        desk: DeskId::new("3"),
    });
    sim.ok(Command::Forward {
        desk: DeskId::new("3"),
        target: ForwardTarget::Desk(DeskId::new("4")),
    });
    sim.at("08:09");
    assert!(
        matches!(
            sim.next_result("3"),
            Err(CommandError::NothingWaiting { .. })
        ),
        "desk 3 took a visitor sent to desk 4 within the grace"
    );
    sim.at("08:11");
    assert_eq!(sim.next("3"), ticket, "after the grace any desk may call");
}

#[test]
fn a_resumed_visitor_goes_to_any_desk_once_the_grace_is_over() {
    let mut sim = Sim::new();
    sim.open("1");
    sim.open("2");
    let parked = sim.walk_in("ausweis");
    assert_eq!(sim.next("1"), parked);
    sim.ok(Command::StartService {
        desk: DeskId::new("1"),
    });
    sim.ok(Command::Park {
        desk: DeskId::new("1"),
    });
    sim.ok(Command::Resume {
        ticket: TicketNumber::new(&parked),
    });
    sim.at("08:09");
    assert!(matches!(
        sim.next_result("2"),
        Err(CommandError::NothingWaiting { .. })
    ));
    sim.at("08:11");
    assert_eq!(sim.next("2"), parked);
}

#[test]
fn a_raised_priority_is_called_first_and_the_same_priority_changes_nothing() {
    let mut sim = Sim::new();
    sim.open("1");
    let first = sim.walk_in("ausweis");
    let second = sim.walk_in("ausweis");
    let logged = sim.log().len();
    assert_eq!(
        sim.ok(Command::SetPriority {
            ticket: TicketNumber::new(&first),
            priority: 1,
        }),
        Outcome::Unchanged
    );
    assert_eq!(
        sim.log().len(),
        logged,
        "an unchanged priority logged an event"
    );
    sim.ok(Command::SetPriority {
        ticket: TicketNumber::new(&second),
        priority: 3,
    });
    assert_eq!(sim.ticket(&second).priority, 3);
    assert_eq!(sim.next("1"), second);
}

#[test]
fn the_wait_estimate_is_the_visitors_ahead_times_the_service_time_over_the_open_desks() {
    // `meldung` is expected to take 8 minutes until a visit is measured; desks 1 to 4 serve it.
    let mut sim = Sim::new();
    sim.open("1");
    for _ in 0..3 {
        sim.walk_in("meldung");
    }
    let wait = |sim: &Sim| sim.engine.estimated_wait(&ServiceId::new("meldung")) / MINUTE;
    assert_eq!(wait(&sim), 24, "3 ahead × 8 min at one open desk");
    sim.open("2");
    assert_eq!(wait(&sim), 12, "3 ahead × 8 min over two open desks");
}

#[test]
fn the_invariant_check_finds_a_desk_holding_a_waiting_ticket_and_meta_mirrors_the_state() {
    let mut sim = Sim::new();
    sim.open("1");
    sim.ok(Command::SilentAlarm {
        desk: DeskId::new("1"),
    });
    let ticket = sim.walk_in("ausweis");
    assert_eq!(sim.state().check_invariants(), Ok(()));
    let mut broken = sim.state().clone();
    if let Some(desk) = broken.desks.get_mut(&DeskId::new("1")) {
        desk.current = Some(TicketNumber::new(&ticket));
    }
    let problems = broken.check_invariants().err().unwrap_or_default();
    assert!(
        problems.iter().any(|p| p.contains("holds ticket")),
        "a desk holding a waiting ticket went unnoticed: {problems:?}"
    );

    let state = sim.state();
    let meta = state.meta();
    assert!(meta.last_seq > 0 && !meta.counters.is_empty() && !meta.alarms.is_empty());
    assert_eq!(
        (
            meta.day,
            meta.clock,
            meta.last_seq,
            &meta.counters,
            &meta.alarms
        ),
        (
            state.day,
            state.clock,
            state.last_seq,
            &state.counters,
            &state.alarms
        )
    );
}

#[test]
fn waiting_counts_are_per_service_and_drop_as_visitors_are_called() {
    let mut sim = Sim::new();
    sim.open("1");
    for (at, service) in [
        ("08:01", "meldung"),
        ("08:02", "meldung"),
        ("08:03", "meldung"),
        ("08:04", "ausweis"),
    ] {
        sim.at(at);
        sim.walk_in(service);
    }
    let counts = |sim: &Sim| {
        let counts = sim.state().waiting_counts();
        let of = |service: &str| counts.get(&ServiceId::new(service)).copied();
        (of("meldung"), of("ausweis"), of("fuehrerschein"))
    };
    assert_eq!(counts(&sim), (Some(3), Some(1), None));
    sim.next("1");
    assert_eq!(counts(&sim), (Some(2), Some(1), None));
}

#[test]
fn a_new_day_drops_the_bookings_of_past_days_and_keeps_the_coming_ones() {
    let mut sim = Sim::new();
    sim.book("BK-TODAY", "meldung", "10:00", None);
    let tomorrow_slot = local_instant("2026-06-16", "09:00");
    sim.book_at("BK-TOMORROW", "meldung", tomorrow_slot, None);
    assert_eq!(sim.state().bookings.len(), 2);
    sim.now = local_instant("2026-06-16", "07:00");
    sim.walk_in("meldung");
    let kept: Vec<&str> = sim.state().bookings.keys().map(|id| id.as_str()).collect();
    assert_eq!(kept, vec!["BK-TOMORROW"]);
}

#[test]
fn booking_ids_slots_and_durations_are_checked_at_their_bounds() {
    let mut sim = Sim::new();
    let slot = sim.local("10:00");
    let upsert =
        |sim: &mut Sim, input: BookingInput| sim.run(Command::UpsertBooking { booking: input });
    let invalid = |answer: &Result<Outcome, CommandError>| {
        matches!(answer, Err(CommandError::InvalidBooking { .. }))
    };
    let refused = |answer: &Result<Outcome, CommandError>| {
        matches!(answer, Ok(Outcome::BookingRefused { .. }))
    };
    // Ids of 1 to 128 characters.
    assert!(invalid(&upsert(
        &mut sim,
        booking_input("", 1, "meldung", slot, None)
    )));
    let longest = "x".repeat(128);
    let answer = upsert(&mut sim, booking_input(&longest, 1, "meldung", slot, None));
    assert!(answer.is_ok() && !refused(&answer), "{answer:?}");
    let too_long = "y".repeat(129);
    assert!(invalid(&upsert(
        &mut sim,
        booking_input(&too_long, 1, "meldung", slot, None)
    )));
    // Durations of 1 to 480 minutes; others are stored as refused.
    for (id, minutes, expect_refused) in
        [("d0", 0, true), ("d480", 480, false), ("d481", 481, true)]
    {
        let mut input = booking_input(id, 1, "meldung", slot, None);
        input.duration_minutes = minutes;
        let answer = upsert(&mut sim, input);
        assert_eq!(
            refused(&answer),
            expect_refused,
            "{minutes} min: {answer:?}"
        );
        assert!(answer.is_ok(), "{minutes} min: {answer:?}");
    }
    // Slots up to 400 days after the start of today.
    let today = sim.engine.catalog().calendar.day_of(sim.now);
    let limit = sim.engine.catalog().calendar.start_of_day(today) + 400 * 24 * 60 * MINUTE;
    assert!(upsert(&mut sim, booking_input("far", 1, "meldung", limit, None)).is_ok());
    assert!(invalid(&upsert(
        &mut sim,
        booking_input("too-far", 1, "meldung", limit + 1, None)
    )));
}

#[test]
fn measured_service_times_count_the_visits_and_weigh_the_newest_by_a_quarter() {
    let mut sim = Sim::new();
    sim.open("1");
    let desk = || DeskId::new("1");
    for (start, done) in [("08:00", "08:10"), ("08:10", "08:16")] {
        sim.at(start);
        sim.walk_in("meldung");
        sim.next("1");
        sim.ok(Command::StartService { desk: desk() });
        sim.at(done);
        sim.ok(Command::Finish { desk: desk() });
    }
    let stats = &sim.state().stats[&ServiceId::new("meldung")];
    assert_eq!(stats.served_today, 2);
    assert_eq!(stats.service_ms_today, 16 * MINUTE);
    // First visit 10 min; then (3 × 10 + 6) / 4 = 9 min.
    assert_eq!(stats.mean_service_ms, Some(9 * MINUTE));
}

#[test]
fn personal_data_is_written_for_a_booked_visit_only_and_erased_when_it_is_cancelled() {
    let mut sim = Sim::new();
    let slot = sim.local("10:00");
    sim.ok(Command::UpsertBooking {
        booking: booking_input("p1", 1, "meldung", slot, None),
    });
    let booked = sim.commits.last().cloned().unwrap_or_default();
    assert_eq!(
        booked.personal.len(),
        1,
        "the name of a booked visit is kept"
    );
    assert!(booked.erase_personal.is_empty());

    let mut cancelled = booking_input("p1", 2, "meldung", slot, None);
    cancelled.status = BookingStatus::Cancelled;
    sim.ok(Command::UpsertBooking { booking: cancelled });
    let commit = sim.commits.last().cloned().unwrap_or_default();
    assert!(
        commit.personal.is_empty(),
        "a cancelled booking wrote personal data"
    );
    assert_eq!(commit.erase_personal, vec![BookingId::new("p1")]);
}

/// A silent alarm stays raised until someone acknowledges it: once, with who and when; a
/// second acknowledgement changes nothing, an unknown one is refused; the log alone rebuilds
/// the same state.
#[test]
fn a_silent_alarm_is_acknowledged_once_by_whoever_took_care_of_it() {
    let mut sim = Sim::new();
    sim.ok(Command::SilentAlarm {
        desk: DeskId::new("2"),
    });
    let seq = sim.state().alarms[0].seq;
    assert_eq!(sim.state().alarms[0].acknowledged, None);
    assert_eq!(
        sim.run(Command::AcknowledgeAlarm { alarm: seq + 100 }),
        Err(CommandError::UnknownAlarm { alarm: seq + 100 })
    );
    sim.at("08:05");
    assert_eq!(
        sim.ok(Command::AcknowledgeAlarm { alarm: seq }),
        Outcome::AlarmAcknowledged {
            alarm: seq,
            desk: DeskId::new("2"),
        }
    );
    let acknowledged = sim.state().alarms[0].acknowledged.clone();
    assert_eq!(
        acknowledged.as_ref().map(|a| (a.at, a.by.as_str())),
        Some((sim.local("08:05"), "test"))
    );
    let events = sim.log().len();
    sim.at("08:06");
    assert_eq!(
        sim.ok(Command::AcknowledgeAlarm { alarm: seq }),
        Outcome::Unchanged
    );
    assert_eq!(
        sim.log().len(),
        events,
        "a second acknowledgement was logged"
    );
    assert_eq!(sim.state().alarms[0].acknowledged, acknowledged);
    let replayed = leitsystem_core::engine::State::replay(sim.engine.catalog(), sim.log())
        .unwrap_or_else(|e| panic!("replay: {e}"));
    assert_eq!(replayed.alarms, sim.state().alarms);
}
