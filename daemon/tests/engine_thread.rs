//! The engine thread on a real store: bulk execution (one message, one outcome per command),
//! the per-day booking digests it keeps up to date, and an event feed that falls far behind
//! the broadcast yet hands out every event in order.

mod common;

use std::sync::Arc;

use leitsystem::clock::{Millis, SystemClock};
use leitsystem::daemon::{self, EVENT_BROADCAST_CAPACITY, EngineHandle, ExecuteError};
use leitsystem::domain::{
    BookingId, BookingInput, BookingStatus, Command, CommandRequest, PersonalData, ServiceId,
};
use leitsystem::store::StoreOptions;
use tokio_util::sync::CancellationToken;

/// The real engine thread on a fresh store in `dir`.
fn engine(dir: &std::path::Path) -> (EngineHandle, std::thread::JoinHandle<()>) {
    let catalog = common::catalog_with(|_| {});
    let gate = leitsystem::clock::DayGate::open(catalog.calendar.clone());
    let (engine, store) = daemon::open_engine(catalog, dir, &StoreOptions::default())
        .unwrap_or_else(|e| panic!("opening the store: {e}"));
    daemon::spawn_engine(
        engine,
        store,
        Arc::new(SystemClock),
        gate,
        CancellationToken::new(),
    )
    .unwrap_or_else(|e| panic!("starting the engine thread: {e}"))
}

/// 10:00 local time `days_ahead` days from today.
fn slot(days_ahead: i64) -> Millis {
    let calendar = &common::catalog_with(|_| {}).calendar;
    let today = calendar.day_of(jiff::Timestamp::now().as_millisecond());
    let day = today
        .checked_add(jiff::Span::new().days(days_ahead))
        .unwrap_or_else(|e| panic!("{e}"));
    calendar.local_instant(day, 10 * 60)
}

fn upsert(
    id: &str,
    version: u64,
    service: &str,
    days_ahead: i64,
    status: BookingStatus,
) -> CommandRequest {
    CommandRequest {
        request_id: None,
        source: "mqtt".to_string(),
        command: Command::UpsertBooking {
            booking: BookingInput {
                id: BookingId::new(id),
                version,
                service: ServiceId::new(service),
                slot_start: slot(days_ahead),
                duration_minutes: 15,
                desk: None,
                personal: Some(PersonalData {
                    name: Some(format!("Bürger {id}")),
                    note: None,
                }),
                status,
                refusal: None,
            },
        },
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn bulk_execution_answers_each_command_in_order_and_keeps_day_digests_true() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (handle, thread) = engine(dir.path());
    runtime().block_on(async {
        let mut requests: Vec<CommandRequest> = (0..300)
            .map(|i| {
                upsert(
                    &format!("B{i}"),
                    1,
                    "ausweis",
                    1 + i % 3,
                    BookingStatus::Booked,
                )
            })
            .collect();
        // A refusal in the middle does not touch the commands around it.
        // (A booking for a service this appliance lacks is stored as refused, so the
        // refusal here is a booking that cannot even be keyed: an empty id.)
        requests.insert(150, upsert("", 1, "ausweis", 1, BookingStatus::Booked));
        let results = handle
            .execute_many(requests)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(results.len(), 301);
        for (i, result) in results.iter().enumerate() {
            match (i, result) {
                (150, Err(ExecuteError::Rejected(_))) => {}
                (150, other) => panic!("the empty id was not refused: {other:?}"),
                (_, Ok(_)) => {}
                (i, Err(e)) => panic!("command {i} failed: {e}"),
            }
        }

        // Changes that move a booking between days, cancel and delete bookings, and an
        // outdated version that must change nothing.
        let changes = vec![
            upsert("B0", 2, "ausweis", 5, BookingStatus::Booked),
            upsert("B1", 2, "ausweis", 2, BookingStatus::Cancelled),
            upsert("B2", 3, "ausweis", 3, BookingStatus::Deleted),
            upsert("B3", 1, "meldung", 9, BookingStatus::Booked),
        ];
        let results = handle
            .execute_many(changes)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(results.iter().all(Result::is_ok), "{results:?}");

        let days = handle
            .booking_days(None)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let total: u64 = days.values().map(|(count, _)| count).sum();
        assert_eq!(
            total, 300,
            "every booking (tombstones too) counted once: {days:?}"
        );
        assert_eq!(days.len(), 4, "days 1, 2, 3 and 5: {days:?}");
        // `verify` recomputes the digests from the bookings and compares.
        let problems = handle.verify().await.unwrap_or_else(|e| panic!("{e}"));
        assert!(problems.is_empty(), "{problems:?}");
    });
    drop(handle);
    let _ = thread.join();

    // Everything answered was durable: a reopened store has the same digests.
    let (reopened, _store) = daemon::open_engine(
        common::catalog_with(|_| {}),
        dir.path(),
        &StoreOptions::default(),
    )
    .unwrap_or_else(|e| panic!("reopening: {e}"));
    let days = reopened.booking_days(None);
    assert_eq!(days.values().map(|(count, _)| count).sum::<u64>(), 300);
}

#[test]
fn a_feed_that_falls_behind_the_broadcast_still_gets_every_event_in_order() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (handle, thread) = engine(dir.path());
    runtime().block_on(async {
        let mut feed = handle.feed();
        let mut plain = handle.subscribe();
        let bookings = EVENT_BROADCAST_CAPACITY * 4;
        // Nobody reads while they are committed: the broadcast drops most of them.
        for chunk in 0..4 {
            let requests = (0..EVENT_BROADCAST_CAPACITY)
                .map(|i| {
                    let id = format!("F{}", chunk * EVENT_BROADCAST_CAPACITY + i);
                    upsert(&id, 1, "meldung", 1, BookingStatus::Booked)
                })
                .collect();
            handle
                .execute_many(requests)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        // The plain receiver lagged (this is what the feed has to make up for) ...
        assert!(
            matches!(
                plain.try_recv(),
                Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_))
            ),
            "the broadcast kept everything; the test proves nothing"
        );
        // ... the feed hands out every booking event, each once, in log order.
        let mut seqs = Vec::new();
        let mut upserts = 0;
        while upserts < bookings {
            let record = tokio::time::timeout(std::time::Duration::from_secs(10), feed.recv())
                .await
                .unwrap_or_else(|_| panic!("the feed stalled after {upserts} bookings"))
                .unwrap_or_else(|| panic!("the feed ended"));
            if record.event.name() == "booking_upserted" {
                upserts += 1;
            }
            seqs.push(record.seq);
        }
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0] + 1),
            "gaps or repeats in {} seqs",
            seqs.len()
        );
        // It goes on live afterwards.
        handle
            .execute(upsert("live", 1, "meldung", 1, BookingStatus::Booked))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let record = tokio::time::timeout(std::time::Duration::from_secs(10), feed.recv())
            .await
            .unwrap_or_else(|_| panic!("the live event did not arrive"))
            .unwrap_or_else(|| panic!("the feed ended"));
        assert_eq!(Some(record.seq), seqs.last().map(|s| s + 1));
    });
    drop(handle);
    let _ = thread.join();
}
