//! What the appliance publishes: the events in batches of consecutive seqs, and its status.

use super::CONTRACT_VERSION;
use crate::clock::Millis;
use crate::domain::EventRecord;
use serde::{Deserialize, Serialize};

/// Most events in one message on `<prefix>/events`.
pub const EVENTS_PER_MESSAGE: usize = 500;
/// Most bytes of one message on `<prefix>/events` (a single larger event goes alone).
pub const MAX_EVENT_MESSAGE_BYTES: usize = 128 * 1024;

/// `<prefix>/events`: consecutive committed engine events, in seq order.
///
/// Batched because a broker acknowledges a publish as soon as it has it, whatever its
/// subscribers can take: Mosquitto drops what exceeds a subscriber's queue
/// (`max_queued_messages`, 1000 by default), online or not. One message per event made a
/// burst (a reconnect's backlog, the bookings of a fresh appliance) lose events at a live
/// subscriber; in batches, 50,000 events are about 200 messages.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventBatch {
    /// Contract version (1).
    pub v: u32,
    /// Site id.
    pub site: String,
    /// Epoch of the appliance's event log: seqs count from 1 within an epoch; a new epoch
    /// (a reinstalled appliance) starts at 1 again.
    pub epoch: String,
    /// The events, consecutive seqs, ascending.
    pub events: Vec<EventMessage>,
}

/// One committed engine event inside an [`EventBatch`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventMessage {
    /// The site's event sequence number, gapless from 1.
    pub seq: u64,
    /// When, RFC 3339 (UTC).
    pub at: String,
    /// The event as the log holds it (never personal data).
    pub event: serde_json::Value,
}

/// One message of the outbox: the seqs it carries and its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedBatch {
    /// First seq in it.
    pub first: u64,
    /// Last seq in it.
    pub last: u64,
    /// The JSON of an [`EventBatch`].
    pub payload: Vec<u8>,
}

/// Packs log entries (ascending seqs) into [`EventBatch`] payloads of at most `max_events`
/// events and, unless one event alone is larger, `max_bytes` bytes.
pub fn encode_event_batches<R: std::borrow::Borrow<EventRecord>>(
    site: &str,
    epoch: &str,
    records: &[R],
    max_events: usize,
    max_bytes: usize,
) -> Vec<EncodedBatch> {
    let quoted = |text: &str| serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_string());
    let head = format!(
        "{{\"v\":{CONTRACT_VERSION},\"site\":{},\"epoch\":{},\"events\":[",
        quoted(site),
        quoted(epoch)
    );
    let mut out = Vec::new();
    let mut current: Option<EncodedBatch> = None;
    let mut count = 0usize;
    for record in records {
        let record: &EventRecord = record.borrow();
        let item = serde_json::to_vec(&EventMessage::from_record(record)).unwrap_or_default();
        if let Some(batch) = &current
            && (count >= max_events.max(1) || batch.payload.len() + item.len() + 3 > max_bytes)
            && let Some(mut full) = current.take()
        {
            full.payload.extend_from_slice(b"]}");
            out.push(full);
        }
        match &mut current {
            Some(batch) => {
                batch.payload.push(b',');
                batch.payload.extend_from_slice(&item);
                batch.last = record.seq;
                count += 1;
            }
            None => {
                let mut payload = Vec::with_capacity(head.len() + item.len() + 2);
                payload.extend_from_slice(head.as_bytes());
                payload.extend_from_slice(&item);
                current = Some(EncodedBatch {
                    first: record.seq,
                    last: record.seq,
                    payload,
                });
                count = 1;
            }
        }
    }
    if let Some(mut last) = current {
        last.payload.extend_from_slice(b"]}");
        out.push(last);
    }
    out
}

/// `<prefix>/status`: the appliance's status (retained; the last will says offline).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusMessage {
    /// Contract version (1).
    pub v: u32,
    /// `online` or `offline`.
    pub state: String,
    /// Newest event sequence number when it connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seq: Option<u64>,
    /// Epoch of the event log `last_seq` counts in (see [`EventBatch::epoch`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    /// `leitsystemd <version>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub software: Option<String>,
}

impl EventMessage {
    /// The message for one log entry.
    pub fn from_record(record: &EventRecord) -> Self {
        Self {
            seq: record.seq,
            at: rfc3339(record.at),
            event: serde_json::to_value(&record.event).unwrap_or(serde_json::Value::Null),
        }
    }
}

/// An instant as RFC 3339 in UTC.
pub fn rfc3339(at: Millis) -> String {
    jiff::Timestamp::from_millisecond(at)
        .map(|t| t.to_string())
        .unwrap_or_default()
}
