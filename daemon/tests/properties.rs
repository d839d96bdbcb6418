//! Property tests over random command sequences and clocks (across days and DST switches):
//! a number is never issued twice on one day; a ticket is in exactly one state and at most one
//! desk; no desk holds two tickets; the views equal the state rebuilt from the event log (also
//! through the real store); a refused command changes nothing.

mod common;

use std::collections::BTreeSet;

use common::{catalog_with, utc};
use leitsystem::clock::{MINUTE, Millis};
use leitsystem::domain::{
    BookingId, BookingInput, Command, CommandRequest, DeskId, Event, EventRecord, ForwardTarget,
    ServiceId, TicketNumber,
};
use leitsystem::engine::{Engine, State};
use leitsystem::store::{Store, StoreOptions};
use proptest::prelude::*;

const DESKS: [&str; 5] = ["1", "2", "3", "4", "9"];
const SERVICES: [&str; 4] = ["ausweis", "meldung", "fuehrerschein", "unknown"];

/// One step: time passes, then a command (by small indices, resolved against the state).
#[derive(Debug, Clone)]
struct Step {
    advance: Millis,
    request_id: Option<u8>,
    op: Op,
}

#[derive(Debug, Clone)]
enum Op {
    WalkIn(usize, u8),
    CheckIn(u8),
    Book {
        id: u8,
        version: u8,
        service: usize,
        offset_min: i64,
        desk: Option<usize>,
    },
    Cancel {
        id: u8,
        version: u8,
    },
    Next(usize),
    CallTicket(usize, u8),
    Recall(usize),
    Start(usize),
    Finish(usize),
    NoShow(usize),
    ForwardService(usize, usize),
    ForwardDesk(usize, usize),
    Park(usize),
    Resume(u8),
    Priority(u8, u8),
    Open(usize),
    Pause(usize),
    Close(usize),
    Tick,
}

fn op() -> impl Strategy<Value = Op> {
    let desk = 0..DESKS.len();
    let service = 0..SERVICES.len();
    prop_oneof![
        4 => (service.clone(), 1u8..=4).prop_map(|(s, p)| Op::WalkIn(s, p)),
        2 => any::<u8>().prop_map(|b| Op::CheckIn(b % 12)),
        2 => (any::<u8>(), 1u8..4, service.clone(), -180i64..600, proptest::option::of(desk.clone()))
            .prop_map(|(id, version, service, offset_min, desk)| Op::Book { id: id % 12, version, service, offset_min, desk }),
        1 => (any::<u8>(), 1u8..5).prop_map(|(id, version)| Op::Cancel { id: id % 12, version }),
        6 => desk.clone().prop_map(Op::Next),
        1 => (desk.clone(), any::<u8>()).prop_map(|(d, t)| Op::CallTicket(d, t)),
        1 => desk.clone().prop_map(Op::Recall),
        3 => desk.clone().prop_map(Op::Start),
        2 => desk.clone().prop_map(Op::Finish),
        2 => desk.clone().prop_map(Op::NoShow),
        1 => (desk.clone(), service.clone()).prop_map(|(d, s)| Op::ForwardService(d, s)),
        1 => (desk.clone(), desk.clone()).prop_map(|(d, t)| Op::ForwardDesk(d, t)),
        1 => desk.clone().prop_map(Op::Park),
        1 => any::<u8>().prop_map(Op::Resume),
        1 => (any::<u8>(), 0u8..=4).prop_map(|(t, p)| Op::Priority(t, p)),
        3 => desk.clone().prop_map(Op::Open),
        1 => desk.clone().prop_map(Op::Pause),
        1 => desk.clone().prop_map(Op::Close),
        1 => Just(Op::Tick),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    let advance = prop_oneof![
        10 => 0i64..(20 * MINUTE),
        1 => (2i64 * 60 * MINUTE)..(40 * 60 * MINUTE),
    ];
    (advance, proptest::option::of(0u8..6), op()).prop_map(|(advance, rid, op)| Step {
        advance,
        request_id: rid.filter(|r| *r < 2),
        op,
    })
}

/// Start instants: ordinary days and the evenings before both DST switches of 2026.
fn start() -> impl Strategy<Value = Millis> {
    prop_oneof![
        Just(utc("2026-06-15T06:00:00Z")),
        Just(utc("2026-03-28T20:30:00Z")),
        Just(utc("2026-10-24T20:30:00Z")),
        Just(utc("2026-12-31T21:00:00Z")),
    ]
}

/// Picks the `pick`-th of today's tickets (or a number that does not exist).
fn ticket_of(state: &State, pick: u8) -> TicketNumber {
    let numbers: Vec<&TicketNumber> = state.tickets.keys().collect();
    if numbers.is_empty() || pick == 255 {
        return TicketNumber::new("Z-999");
    }
    numbers[pick as usize % numbers.len()].clone()
}

fn command(op: &Op, state: &State, now: Millis) -> Command {
    let desk = |i: usize| DeskId::new(DESKS[i]);
    let service = |i: usize| ServiceId::new(SERVICES[i]);
    match op {
        Op::WalkIn(s, p) => Command::WalkIn {
            service: service(*s),
            priority: *p,
        },
        Op::CheckIn(b) => Command::CheckIn {
            booking: BookingId::new(format!("b{b}")),
        },
        Op::Book {
            id,
            version,
            service: s,
            offset_min,
            desk: d,
        } => Command::UpsertBooking {
            booking: BookingInput {
                id: BookingId::new(format!("b{id}")),
                version: u64::from(*version),
                service: service(*s),
                slot_start: now + offset_min * MINUTE,
                duration_minutes: 15,
                desk: d.map(desk),
                personal: None,
                status: Default::default(),
                refusal: None,
            },
        },
        Op::Cancel { id, version } => Command::CancelBooking {
            booking: BookingId::new(format!("b{id}")),
            version: u64::from(*version),
        },
        Op::Next(d) => Command::CallNext { desk: desk(*d) },
        Op::CallTicket(d, t) => Command::CallTicket {
            desk: desk(*d),
            ticket: ticket_of(state, *t),
        },
        Op::Recall(d) => Command::Recall { desk: desk(*d) },
        Op::Start(d) => Command::StartService { desk: desk(*d) },
        Op::Finish(d) => Command::Finish { desk: desk(*d) },
        Op::NoShow(d) => Command::NoShow { desk: desk(*d) },
        Op::ForwardService(d, s) => Command::Forward {
            desk: desk(*d),
            target: ForwardTarget::Service(service(*s)),
        },
        Op::ForwardDesk(d, t) => Command::Forward {
            desk: desk(*d),
            target: ForwardTarget::Desk(desk(*t)),
        },
        Op::Park(d) => Command::Park { desk: desk(*d) },
        Op::Resume(t) => Command::Resume {
            ticket: ticket_of(state, *t),
        },
        Op::Priority(t, p) => Command::SetPriority {
            ticket: ticket_of(state, *t),
            priority: *p,
        },
        Op::Open(d) => Command::OpenDesk { desk: desk(*d) },
        Op::Pause(d) => Command::PauseDesk { desk: desk(*d) },
        Op::Close(d) => Command::CloseDesk { desk: desk(*d) },
        Op::Tick => Command::Tick,
    }
}

/// Runs the steps, checking the per-step properties; returns the engine and the whole log.
fn run_steps(
    start: Millis,
    steps: &[Step],
    mut on_commit: impl FnMut(&leitsystem::engine::PendingCommit),
) -> Result<(Engine, Vec<EventRecord>), TestCaseError> {
    let catalog = catalog_with(|_| {});
    let mut engine = Engine::new(catalog);
    let mut now = start;
    let mut log = Vec::new();
    let mut issued: BTreeSet<(String, String)> = BTreeSet::new();
    for (i, step) in steps.iter().enumerate() {
        now += step.advance;
        // Let the clock act first, so a refusal can be compared with the state just before.
        let tick = CommandRequest {
            request_id: None,
            source: "test".into(),
            command: Command::Tick,
        };
        engine
            .execute(&tick, now)
            .map_err(|e| TestCaseError::fail(format!("tick refused: {e}")))?;
        let before = engine.state().clone();
        let pending_before = engine.take_pending();
        on_commit(&pending_before);
        log.extend(pending_before.records);

        let request = CommandRequest {
            request_id: step.request_id.map(|r| format!("req-{r}")),
            source: "test".into(),
            command: command(&step.op, &before, now),
        };
        let result = engine.execute(&request, now);
        let pending = engine.take_pending();
        if let Err(e) = &result {
            prop_assert!(
                pending.records.is_empty(),
                "step {i}: refused {:?} ({e}) wrote events",
                request.command
            );
            prop_assert_eq!(
                engine.state(),
                &before,
                "step {}: refused {:?} changed the state",
                i,
                request.command
            );
        }
        if let Ok(executed) = &result {
            if executed.duplicate {
                prop_assert!(
                    pending.records.is_empty(),
                    "step {i}: a duplicate request wrote events"
                );
            }
        }
        for record in &pending.records {
            if let Event::TicketIssued { ticket } = &record.event {
                let fresh = issued.insert((ticket.day.to_string(), ticket.number.to_string()));
                prop_assert!(
                    fresh,
                    "step {}: {} issued twice on {}",
                    i,
                    ticket.number,
                    ticket.day
                );
            }
        }
        on_commit(&pending);
        log.extend(pending.records);
        if let Err(problems) = engine.state().check_invariants() {
            return Err(TestCaseError::fail(format!(
                "step {i} ({:?}): {problems:?}",
                request.command
            )));
        }
    }
    Ok((engine, log))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn random_sequences_keep_every_invariant_and_the_log_rebuilds_the_views(
        start in start(),
        steps in proptest::collection::vec(step(), 1..120),
    ) {
        let (engine, log) = run_steps(start, &steps, |_| {})?;
        let catalog = catalog_with(|_| {});
        let replayed = State::replay(&catalog, log).map_err(TestCaseError::fail)?;
        prop_assert_eq!(&replayed, engine.state());
        // Counts in the views equal counts derived from the log.
        prop_assert_eq!(replayed.waiting_counts(), engine.state().waiting_counts());
    }
}

proptest! {
    // Each case opens a real sled store and fsyncs every commit: fewer, longer cases.
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    #[test]
    fn the_store_holds_exactly_what_the_engine_committed(
        start in start(),
        steps in proptest::collection::vec(step(), 1..80),
    ) {
        let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let store = Store::open(dir.path(), &StoreOptions::default())
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut failure = None;
        let (engine, log) = run_steps(start, &steps, |pending| {
            if failure.is_none() && !pending.is_empty() {
                if let Err(e) = store.commit(pending) {
                    failure = Some(e.to_string());
                }
            }
        })?;
        prop_assert!(failure.is_none(), "commit failed: {failure:?}");
        let stored: Result<Vec<EventRecord>, _> = store.events(1).collect();
        let stored = stored.map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&stored, &log);
        drop(store);

        // Reopen: the loaded views equal the live state and the replayed log.
        let store = Store::open(dir.path(), &StoreOptions::default())
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let loaded = store.load().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let catalog = catalog_with(|_| {});
        let problems = leitsystem::engine::verify_consistency(&catalog, loaded.clone(), stored, Some(engine.state()));
        prop_assert!(problems.is_empty(), "{problems:?}");
        let reopened = Engine::from_loaded(catalog, loaded);
        prop_assert_eq!(reopened.state(), engine.state());
    }
}
