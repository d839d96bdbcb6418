//! The contract's event schemas (`docs/asyncapi.yaml`) against events from a real engine: here
//! and not in the core crate beside the contract, because it needs the engine and the demo
//! catalog.

use std::collections::BTreeSet;

/// The `required` fields of the schema of event `kind` in asyncapi.yaml.
fn schema_fields(kind: &str) -> Option<BTreeSet<String>> {
    const ASYNCAPI: &str = include_str!("../../../docs/asyncapi.yaml");
    let at = ASYNCAPI.find(&format!("const: {kind}\n"))?;
    let before = &ASYNCAPI[..at];
    let line = before
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with("required: ["))?;
    let list = line.trim().strip_prefix("required: [")?.strip_suffix(']')?;
    Some(list.split(',').map(|f| f.trim().to_string()).collect())
}

#[test]
fn every_event_type_has_its_schema_with_exactly_its_fields() {
    use leitsystem_core::domain::{
        BookingId, BookingInput, Command, CommandRequest, DeskId, ServiceId,
    };
    // Events from a real engine for the types with whole tickets and bookings ...
    let catalog = std::sync::Arc::new(
        leitsystem_runtime::catalog::from_config(
            &leitsystem_runtime::config::Config::demo().unwrap_or_else(|e| panic!("{e}")),
        )
        .unwrap_or_else(|e| panic!("{e}")),
    );
    let mut engine = leitsystem_runtime::engine::Engine::new(catalog);
    let now = 1_795_420_800_000;
    for command in [
        Command::WalkIn {
            service: ServiceId::new("ausweis"),
            priority: 1,
        },
        Command::UpsertBooking {
            booking: BookingInput {
                id: BookingId::new("BK-1"),
                version: 1,
                service: ServiceId::new("ausweis"),
                slot_start: now + 3_600_000,
                duration_minutes: 15,
                desk: None,
                personal: None,
                status: Default::default(),
                refusal: None,
            },
        },
        Command::SilentAlarm {
            desk: DeskId::new("1"),
        },
    ] {
        let request = CommandRequest {
            request_id: None,
            source: "test".to_string(),
            command,
        };
        engine
            .execute(&request, now)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    // The silent alarm above, acknowledged.
    let alarm = engine.state().alarms[0].seq;
    let acknowledge = CommandRequest {
        request_id: None,
        source: "test".to_string(),
        command: Command::AcknowledgeAlarm { alarm },
    };
    engine
        .execute(&acknowledge, now)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut events: Vec<leitsystem_core::domain::Event> = engine
        .take_pending()
        .records
        .into_iter()
        .map(|r| r.event)
        .collect();
    // ... and the others from their wire form (a renamed or added field fails here).
    for sample in [
        r#"{"type":"day_closed","day":"2026-11-23","closed_tickets":["A-001"]}"#,
        r#"{"type":"ticket_called","ticket":"A-001","desk":"1","out_of_order":false}"#,
        r#"{"type":"ticket_recalled","ticket":"A-001","desk":"1"}"#,
        r#"{"type":"service_started","ticket":"A-001","desk":"1"}"#,
        r#"{"type":"ticket_finished","ticket":"A-001","desk":"1"}"#,
        r#"{"type":"ticket_no_show","ticket":"A-001","desk":"1","requeue_at":null}"#,
        r#"{"type":"ticket_forwarded","ticket":"A-001","from_desk":"1","service":"meldung","desk":null,"preferred_until":null}"#,
        r#"{"type":"ticket_parked","ticket":"A-001","desk":"1"}"#,
        r#"{"type":"ticket_resumed","ticket":"A-001","desk":"1","preferred_until":5}"#,
        r#"{"type":"priority_changed","ticket":"A-001","priority":2}"#,
        r#"{"type":"desk_mode_changed","desk":"1","mode":"open"}"#,
        r#"{"type":"booking_cancelled","booking":"BK-1","version":2}"#,
        r#"{"type":"ticket_printed","ticket":"A-001","printer":"p"}"#,
        r#"{"type":"ticket_print_failed","ticket":"A-001","printer":"p","reason":"paper"}"#,
        r#"{"type":"reprint_requested","ticket":"A-001"}"#,
    ] {
        events.push(serde_json::from_str(sample).unwrap_or_else(|e| panic!("{sample}: {e}")));
    }
    let mut kinds = BTreeSet::new();
    for event in &events {
        let value = serde_json::to_value(event).unwrap_or_else(|e| panic!("{e}"));
        let fields: BTreeSet<String> = value
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        let kind = event.name();
        assert_eq!(
            Some(fields),
            schema_fields(kind),
            "the fields of {kind} and its schema in asyncapi.yaml"
        );
        kinds.insert(kind);
    }
    // Every type of `Event::name` (21 today): a new one needs a sample here and a schema.
    assert_eq!(kinds.len(), 21, "{kinds:?}");
}
