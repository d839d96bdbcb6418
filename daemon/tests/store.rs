//! The store with the engine: personal data is kept out of the log and erased after the
//! retention; bookings of past days leave the live view; a reopened store equals the live state.

mod common;

use common::{Sim, local_instant};
use leitsystem::domain::{BookingId, BookingInput, Command, PersonalData, ServiceId};
use leitsystem::store::{Store, StoreOptions};

fn commit_all(sim: &mut Sim, store: &Store) {
    for pending in sim.commits.drain(..) {
        if !pending.is_empty() {
            store
                .commit(&pending)
                .unwrap_or_else(|e| panic!("commit failed: {e}"));
        }
    }
}

fn book_with_name(sim: &mut Sim, id: &str, day: &str, name: &str) {
    sim.ok(Command::UpsertBooking {
        booking: BookingInput {
            id: BookingId::new(id),
            version: 1,
            service: ServiceId::new("ausweis"),
            slot_start: local_instant(day, "10:00"),
            duration_minutes: 15,
            desk: None,
            personal: Some(PersonalData {
                name: Some(name.to_string()),
                note: Some("needs a wheelchair-accessible desk".to_string()),
            }),
            status: Default::default(),
            refusal: None,
        },
    });
}

fn check_purge(retention_days: u32, kept_after_one_day: bool) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store = Store::open(dir.path(), &StoreOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let mut sim = Sim::with_policy(|p| p.personal_data_retention_days = retention_days);
    book_with_name(&mut sim, "today", "2026-06-15", "Erika Mustermann");
    book_with_name(&mut sim, "tomorrow", "2026-06-16", "Max Mustermann");
    commit_all(&mut sim, &store);

    // Names never enter the log.
    let log: Vec<_> = store
        .events(1)
        .map(|r| r.unwrap_or_else(|e| panic!("{e}")))
        .collect();
    let text = serde_json::to_string(&log).unwrap_or_default();
    assert!(
        !text.contains("Mustermann") && !text.contains("wheelchair"),
        "personal data in the log: {text}"
    );
    let personal = |store: &Store, id: &str| {
        store
            .personal_data(&BookingId::new(id))
            .unwrap_or_else(|e| panic!("{e}"))
            .and_then(|p| p.name)
    };
    assert_eq!(
        personal(&store, "today").as_deref(),
        Some("Erika Mustermann")
    );

    // Next day: the day of "today" has ended.
    sim.day = "2026-06-16".to_string();
    sim.at("07:00");
    sim.ok(Command::Tick);
    commit_all(&mut sim, &store);
    assert_eq!(personal(&store, "today").is_some(), kept_after_one_day);
    assert_eq!(
        personal(&store, "tomorrow").as_deref(),
        Some("Max Mustermann")
    );
    assert!(
        !sim.state().bookings.contains_key(&BookingId::new("today")),
        "past bookings leave the live view"
    );

    // Much later everything is gone, and the reopened store equals the live state.
    sim.day = "2026-07-30".to_string();
    sim.at("07:00");
    sim.ok(Command::Tick);
    commit_all(&mut sim, &store);
    assert_eq!(personal(&store, "today"), None);
    assert_eq!(personal(&store, "tomorrow"), None);
    drop(store);
    let store = Store::open(dir.path(), &StoreOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let loaded = store.load().unwrap_or_else(|e| panic!("{e}"));
    let engine = leitsystem::engine::Engine::from_loaded(sim.engine.catalog().clone(), loaded);
    assert_eq!(engine.state(), sim.state());
}

#[test]
fn personal_data_is_erased_at_the_end_of_the_appointment_day_by_default() {
    check_purge(0, false);
}

#[test]
fn personal_data_is_kept_for_the_configured_retention() {
    check_purge(3, true);
}

#[test]
fn a_deleted_booking_loses_its_personal_data_at_once_and_cannot_be_revived_by_an_older_change() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store = Store::open(dir.path(), &StoreOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let mut sim = Sim::new();
    book_with_name(&mut sim, "gone", "2026-06-15", "Erika Mustermann");
    commit_all(&mut sim, &store);
    let delete = |version| Command::UpsertBooking {
        booking: BookingInput {
            id: BookingId::new("gone"),
            version,
            service: ServiceId::new("ausweis"),
            slot_start: local_instant("2026-06-15", "10:00"),
            duration_minutes: 15,
            desk: None,
            personal: None,
            status: leitsystem::domain::BookingStatus::Deleted,
            refusal: None,
        },
    };
    sim.ok(delete(3));
    commit_all(&mut sim, &store);
    assert_eq!(
        store
            .personal_data(&BookingId::new("gone"))
            .unwrap_or_else(|e| panic!("{e}")),
        None
    );
    // A late, older change (version 2) is ignored: the tombstone keeps version 3.
    assert!(matches!(
        sim.run(Command::UpsertBooking {
            booking: BookingInput {
                version: 2,
                status: Default::default(),
                refusal: None,
                ..match delete(0) {
                    Command::UpsertBooking { booking } => booking,
                    _ => unreachable!(),
                }
            }
        }),
        Ok(leitsystem::domain::Outcome::BookingIgnored {
            stored_version: 3,
            ..
        })
    ));
    sim.at("09:30");
    assert!(matches!(
        sim.check_in("gone"),
        Err(leitsystem::domain::CommandError::BookingDeleted { .. })
    ));
}
