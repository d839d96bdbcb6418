//! Fuzzes the booking sync's inbound payload parsers (contract v1, `core/src/contract.rs`):
//! arbitrary bytes as a day snapshot, as a booking change and as a topic must never panic;
//! a snapshot or change they accept must be one the contract allows.
#![no_main]

use std::sync::OnceLock;

use leitsystem_core::clock::Calendar;
use leitsystem_core::contract::{Topics, day_digest, parse_change, parse_day, parse_snapshot};
use libfuzzer_sys::fuzz_target;

fn calendar() -> &'static Calendar {
    static CALENDAR: OnceLock<Calendar> = OnceLock::new();
    CALENDAR.get_or_init(Calendar::berlin)
}

const SITE: &str = "fuzz-site";

fuzz_target!(|data: &[u8]| {
    let calendar = calendar();
    let Ok(day) = parse_day("2026-11-24") else {
        return;
    };
    if let Ok(snapshot) = parse_snapshot(data, SITE, day, calendar) {
        assert_eq!(snapshot.day, day);
        assert_eq!(usize::try_from(snapshot.count).ok(), Some(snapshot.bookings.len()));
        let (count, digest) = day_digest(
            snapshot
                .bookings
                .iter()
                .map(|b| (b.id.as_str(), b.version)),
        );
        assert_eq!((count, digest.as_str()), (snapshot.count, snapshot.digest.as_str()));
    }
    if let Ok(change) = parse_change(data, calendar) {
        assert!(change.booking.version >= 1);
        assert_eq!(calendar.day_of(change.booking.slot_start), change.day);
    }
    let text = String::from_utf8_lossy(data);
    let _ = Topics::new("leitsystem/v1", SITE).classify(&text);
    let _ = parse_day(&text);
});
