//! The contract's parsers, digests and batches.

use super::*;
use crate::domain::EventRecord;

fn calendar() -> Calendar {
    Calendar::berlin()
}

fn booking(id: &str, version: u64, slot: &str) -> WireBooking {
    WireBooking {
        id: id.to_string(),
        version,
        status: WireStatus::Booked,
        service: "ausweis".to_string(),
        slot_start: slot.to_string(),
        duration_minutes: 15,
        desk: None,
        personal: None,
    }
}

#[test]
fn digest_is_order_independent_and_matches_the_definition() {
    let a = day_digest([("BK-1", 1), ("BK-2", 3)]);
    let b = day_digest([("BK-2", 3), ("BK-1", 1)]);
    assert_eq!(a, b);
    let manual = booking_hash("BK-1", 1).wrapping_add(booking_hash("BK-2", 3));
    assert_eq!(a, (2, format!("{manual:016x}")));
    assert_eq!(day_digest([]), (0, "0000000000000000".to_string()));
    // `printf 'BK-1\n1' | sha256sum` starts with these 16 hex digits.
    assert_eq!(
        format!("{:016x}", booking_hash("BK-1", 1)),
        "468cf5a480f23dd1"
    );
}
#[test]
fn event_batches_hold_consecutive_seqs_within_their_limits() {
    let day = parse_day("2026-11-24").unwrap_or_default();
    let records: Vec<EventRecord> = (1..=1_001)
        .map(|seq| EventRecord {
            seq,
            at: 1_795_000_000_000,
            request_id: None,
            source: "test".to_string(),
            event: crate::domain::Event::DayStarted {
                day,
                starts_at: 1_795_000_000_000,
            },
        })
        .collect();
    for (max_events, max_bytes) in [(500, 1 << 20), (10_000, 4_096), (1, 10), (3, 1)] {
        let batches = encode_event_batches(
            "rathaus",
            "00000000000000e1",
            &records,
            max_events,
            max_bytes,
        );
        let mut next = 1;
        for batch in &batches {
            let parsed: Result<EventBatch, _> = serde_json::from_slice(&batch.payload);
            let Ok(parsed) = parsed else {
                panic!("not an EventBatch: {parsed:?}");
            };
            assert_eq!(parsed.site, "rathaus");
            assert_eq!(parsed.epoch, "00000000000000e1");
            let seqs: Vec<u64> = parsed.events.iter().map(|e| e.seq).collect();
            assert_eq!(seqs, (next..=batch.last).collect::<Vec<_>>());
            assert_eq!(batch.first, next);
            assert!(seqs.len() <= max_events);
            assert!(batch.payload.len() <= max_bytes || seqs.len() == 1);
            next = batch.last + 1;
        }
        assert_eq!(next, 1_002);
    }
    assert_eq!(
        encode_event_batches("rathaus", "00000000000000e1", &records, 500, 1 << 20).len(),
        3
    );
    assert!(
        encode_event_batches::<EventRecord>("rathaus", "00000000000000e1", &[], 500, 1 << 20)
            .is_empty()
    );
}

#[test]
fn snapshot_validation_names_the_problem() {
    let cal = calendar();
    let day = parse_day("2026-11-24").unwrap_or_default();
    let topics = Topics::new("leitsystem/v1", "rathaus");
    assert_eq!(
        topics.classify("leitsystem/v1/rathaus/bookings/day/2026-11-24"),
        InboundTopic::DaySnapshot(day)
    );
    assert_eq!(
        topics.classify("leitsystem/v1/rathaus/bookings/day/2026-13-24"),
        InboundTopic::Unknown
    );
    let bookings = vec![booking("BK-1", 2, "2026-11-24T09:00:00+01:00")];
    let (count, digest) = day_digest([("BK-1", 2)]);
    let good = DaySnapshot {
        v: 1,
        site: "rathaus".into(),
        day: "2026-11-24".into(),
        count,
        digest: digest.clone(),
        bookings: bookings.clone(),
    };
    let json = serde_json::to_vec(&good).unwrap_or_default();
    let parsed = parse_snapshot(&json, "rathaus", day, &cal);
    assert!(parsed.is_ok(), "{parsed:?}");
    let wrong_digest = DaySnapshot {
        digest: "0000000000000001".into(),
        ..good.clone()
    };
    let json = serde_json::to_vec(&wrong_digest).unwrap_or_default();
    assert!(parse_snapshot(&json, "rathaus", day, &cal).is_err_and(|e| e.contains("digest")));
    let other_day = DaySnapshot {
        bookings: vec![booking("BK-1", 2, "2026-11-25T09:00:00+01:00")],
        ..good.clone()
    };
    // A booking outside the contract costs only itself: it is handed on as refused (with
    // the reason), counted in the day.
    let json = serde_json::to_vec(&other_day).unwrap_or_default();
    let parsed = parse_snapshot(&json, "rathaus", day, &cal);
    assert!(
        parsed.as_ref().is_ok_and(|p| p.bookings[0]
            .refusal
            .as_ref()
            .is_some_and(|r| r.contains("falls on"))
            && cal.day_of(p.bookings[0].slot_start) == day),
        "{parsed:?}"
    );
    let unknown_field = br#"{"v":1,"site":"rathaus","day":"2026-11-24","count":0,"digest":"0000000000000000","bookings":[],"extra":1}"#;
    assert!(
        parse_snapshot(unknown_field, "rathaus", day, &cal)
            .is_err_and(|e| e.contains("unknown field"))
    );
    let v2 = br#"{"v":2,"site":"rathaus","day":"2026-11-24","count":0,"digest":"0000000000000000","bookings":[]}"#;
    assert!(parse_snapshot(v2, "rathaus", day, &cal).is_err_and(|e| e.contains("version")));
    let no_offset = BookingChange {
        v: 1,
        booking: booking("BK-1", 2, "2026-11-24T09:00:00"),
        day: "2026-11-24".into(),
        day_count: 1,
        day_digest: digest,
    };
    let json = serde_json::to_vec(&no_offset).unwrap_or_default();
    assert!(
        parse_change(&json, &cal)
            .is_ok_and(|c| c.booking.refusal.is_some_and(|r| r.contains("RFC 3339")))
    );
}

/// The refused part of a parsed booking, `None` when it is accepted.
fn refusal_of(booking_json: &str) -> Result<Option<String>, String> {
    let booking: serde_json::Value =
        serde_json::from_str(booking_json).map_err(|e| e.to_string())?;
    let id = booking["id"].as_str().unwrap_or_default().to_string();
    let version = booking["version"].as_f64().unwrap_or_default() as u64;
    let (count, digest) = day_digest([(id.as_str(), version)]);
    let payload = format!(
        r#"{{"v":1,"site":"rathaus","day":"2026-11-24","count":{count},"digest":"{digest}","bookings":[{booking_json}]}}"#
    );
    let day = parse_day("2026-11-24")?;
    let snapshot = parse_snapshot(payload.as_bytes(), "rathaus", day, &calendar())?;
    Ok(snapshot.bookings[0].refusal.clone())
}

/// Regression: bookings the JSON Schema allows were refused (and took their day's snapshot
/// with them): `maxLength` counts characters where the appliance counted bytes, and
/// `type: integer` allows `2.0`.
#[test]
fn every_booking_the_schema_accepts_is_accepted() {
    let name = "Ä".repeat(600);
    let id = "ü".repeat(MAX_ID_LEN);
    let accepted = [
        format!(
            r#"{{"id":"BK-1","version":2.0,"status":"booked","service":"ausweis","slot_start":"2026-11-24T09:00:00+01:00","duration_minutes":15.0,"personal":{{"name":"{name}","note":"{name}"}}}}"#
        ),
        format!(
            r#"{{"id":"{id}","version":9007199254740991,"status":"cancelled","service":"x","slot_start":"2026-11-24T08:00:00Z","duration_minutes":480,"desk":null,"personal":null}}"#
        ),
        r#"{"id":"BK-3","version":1,"status":"deleted","service":"ausweis","slot_start":"2026-11-24T09:00:00.250+01:00","duration_minutes":1}"#.to_string(),
        r#"{"id":"BK-4","version":1,"status":"booked","service":"ausweis","slot_start":"2026-11-24t09:00:00z","duration_minutes":1,"personal":{"name":null}}"#.to_string(),
    ];
    for booking in &accepted {
        assert_eq!(refusal_of(booking), Ok(None), "{booking}");
    }
    // Outside the contract: counted and refused by id and version, with the reason.
    for (booking, reason) in [
        (
            r#"{"id":"BK-5","version":1,"status":"booked","service":"ausweis","slot_start":"2026-11-24T09:00:00+0100","duration_minutes":15}"#,
            "RFC 3339",
        ),
        (
            r#"{"id":"BK-6","version":1,"status":"booked","service":"ausweis","slot_start":"2026-11-24T09:00:00Z","duration_minutes":15.5}"#,
            "integer",
        ),
        (
            r#"{"id":"BK-7","version":1,"status":"maybe","service":"ausweis","slot_start":"2026-11-24T09:00:00Z","duration_minutes":15}"#,
            "maybe",
        ),
    ] {
        let refusal = refusal_of(booking);
        assert!(
            refusal
                .as_ref()
                .is_ok_and(|r| r.as_ref().is_some_and(|r| r.contains(reason))),
            "{booking}: {refusal:?}"
        );
    }
    let long = format!(
        r#"{{"id":"BK-8","version":1,"status":"booked","service":"ausweis","slot_start":"2026-11-24T09:00:00Z","duration_minutes":15,"personal":{{"name":"{}"}}}}"#,
        "a".repeat(MAX_PERSONAL_LEN + 1)
    );
    assert!(refusal_of(&long).is_ok_and(|r| r.is_some_and(|r| r.contains("characters"))));
    // Without a countable id the day cannot be accounted for: the snapshot is malformed.
    assert!(refusal_of(r#"{"id":"a b","version":1}"#).is_err());
    assert!(refusal_of(r#"{"id":"BK-9","version":0}"#).is_err());
    assert!(refusal_of(r#"{"id":"BK-\u0001","version":1}"#).is_err());
}
