//! Contract v1 of the booking sync: topics, the JSON payloads (wire DTOs, apart from the domain
//! types), their validation and the per-day digest. Documented for the website's developers in
//! `daemon/docs/mqtt.md` and `daemon/docs/asyncapi.yaml`.

use std::collections::{BTreeMap, HashSet};

use jiff::civil::Date;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::clock::{Calendar, Millis};
use crate::domain::{
    Booking, BookingId, BookingInput, BookingStatus, DeskId, EventRecord, PersonalData, ServiceId,
};

/// The contract version every payload carries as `"v"`.
pub const CONTRACT_VERSION: u32 = 1;
/// Longest booking id, in characters (Unicode scalar values, as JSON Schema's `maxLength`
/// counts them).
pub const MAX_ID_LEN: usize = 64;
/// Longest personal data field, in characters (the engine enforces the same limit).
pub const MAX_PERSONAL_LEN: usize = 1_000;

/// Integers as JSON Schema's `type: integer` accepts them: `2` and also `2.0` (a number with
/// a zero fractional part), which many JSON encoders write for whole floats.
mod integer {
    use serde::{Deserialize, Deserializer, de::Error};

    fn whole<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        let number = serde_json::Number::deserialize(deserializer)?;
        if let Some(n) = number.as_u64() {
            return Ok(n);
        }
        match number.as_f64() {
            Some(f) if f.fract() == 0.0 && (0.0..=9_007_199_254_740_992.0).contains(&f) => {
                Ok(f as u64)
            }
            _ => Err(D::Error::custom(format!(
                "{number} is not a non-negative integer"
            ))),
        }
    }

    /// A `u64`.
    pub fn u64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        whole(deserializer)
    }

    /// A `u32`.
    pub fn u32<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
        let n = whole(deserializer)?;
        u32::try_from(n).map_err(|_| D::Error::custom(format!("{n} is out of range")))
    }
}

/// The topics of one site under `<root>/<site>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
}

/// What an inbound topic is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundTopic {
    /// `<prefix>/bookings/day/<day>`: the day snapshot (retained).
    DaySnapshot(Date),
    /// `<prefix>/bookings/change`: one booking change.
    Change,
    /// Anything else.
    Unknown,
}

impl Topics {
    /// Topics of `site` under `root` (e.g. `leitsystem/v1`).
    pub fn new(root: &str, site: &str) -> Self {
        Self {
            prefix: format!("{root}/{site}"),
        }
    }

    /// `<root>/<site>`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The day snapshot of `day`.
    pub fn day(&self, day: Date) -> String {
        format!("{}/bookings/day/{day}", self.prefix)
    }

    /// The subscription for every day snapshot.
    pub fn all_days(&self) -> String {
        format!("{}/bookings/day/+", self.prefix)
    }

    /// Booking changes.
    pub fn change(&self) -> String {
        format!("{}/bookings/change", self.prefix)
    }

    /// The appliance's events.
    pub fn events(&self) -> String {
        format!("{}/events", self.prefix)
    }

    /// The appliance's retained status.
    pub fn status(&self) -> String {
        format!("{}/status", self.prefix)
    }

    /// Classifies an inbound topic.
    pub fn classify(&self, topic: &str) -> InboundTopic {
        let Some(rest) = topic
            .strip_prefix(self.prefix.as_str())
            .and_then(|r| r.strip_prefix('/'))
        else {
            return InboundTopic::Unknown;
        };
        if rest == "bookings/change" {
            return InboundTopic::Change;
        }
        match rest
            .strip_prefix("bookings/day/")
            .and_then(|d| parse_day(d).ok())
        {
            Some(day) => InboundTopic::DaySnapshot(day),
            None => InboundTopic::Unknown,
        }
    }
}

/// Parses a strict `YYYY-MM-DD`.
pub fn parse_day(text: &str) -> Result<Date, String> {
    if text.len() != 10 {
        return Err(format!("'{text}' is not a date YYYY-MM-DD"));
    }
    text.parse::<Date>()
        .map_err(|e| format!("'{text}' is not a date YYYY-MM-DD: {e}"))
}

/// Booking status on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireStatus {
    /// The appointment stands.
    Booked,
    /// Cancelled.
    Cancelled,
    /// Deleted (personal data erased; kept as a versioned tombstone).
    Deleted,
}

impl From<WireStatus> for BookingStatus {
    fn from(s: WireStatus) -> Self {
        match s {
            WireStatus::Booked => BookingStatus::Booked,
            WireStatus::Cancelled => BookingStatus::Cancelled,
            WireStatus::Deleted => BookingStatus::Deleted,
        }
    }
}

/// Personal data on the wire (for the clerk only; never in the event log).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WirePersonal {
    /// Name.
    #[serde(default)]
    pub name: Option<String>,
    /// Note for the clerk.
    #[serde(default)]
    pub note: Option<String>,
}

/// A booking on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireBooking {
    /// The website's booking id.
    pub id: String,
    /// Version, increasing with every change of the booking.
    #[serde(deserialize_with = "integer::u64")]
    pub version: u64,
    /// Booked, cancelled or deleted.
    pub status: WireStatus,
    /// Service id as configured on the appliance.
    pub service: String,
    /// Slot start, RFC 3339 with offset.
    pub slot_start: String,
    /// Slot length in minutes.
    #[serde(deserialize_with = "integer::u32")]
    pub duration_minutes: u32,
    /// The desk the appointment is with.
    #[serde(default)]
    pub desk: Option<String>,
    /// Personal data for the clerk.
    #[serde(default)]
    pub personal: Option<WirePersonal>,
}

/// `<prefix>/bookings/day/<day>`: every booking of one local day (retained).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaySnapshot {
    /// Contract version (1).
    #[serde(deserialize_with = "integer::u32")]
    pub v: u32,
    /// Site id.
    pub site: String,
    /// The local day, `YYYY-MM-DD`.
    pub day: String,
    /// Number of bookings.
    #[serde(deserialize_with = "integer::u64")]
    pub count: u64,
    /// Digest of the bookings' ids and versions ([`day_digest`]).
    pub digest: String,
    /// All bookings of the day, cancelled and deleted ones included.
    pub bookings: Vec<WireBooking>,
}

/// A day snapshot as it is read: the bookings still raw, so that one booking the appliance
/// cannot read costs only that booking, not the day.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDaySnapshot {
    #[serde(deserialize_with = "integer::u32")]
    v: u32,
    site: String,
    day: String,
    #[serde(deserialize_with = "integer::u64")]
    count: u64,
    digest: String,
    bookings: Vec<Box<serde_json::value::RawValue>>,
}

/// What is read of a booking that is not a valid [`WireBooking`]: enough to count it in the
/// day and to refuse it by id and version.
#[derive(Debug, Deserialize)]
struct BookingKey {
    id: String,
    #[serde(deserialize_with = "integer::u64")]
    version: u64,
    #[serde(default)]
    slot_start: Option<serde_json::Value>,
}

/// `<prefix>/bookings/change`: one booking changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BookingChange {
    /// Contract version (1).
    #[serde(deserialize_with = "integer::u32")]
    pub v: u32,
    /// The booking as it is now.
    pub booking: WireBooking,
    /// The booking's local day.
    pub day: String,
    /// The website's count of bookings of that day after this change.
    #[serde(deserialize_with = "integer::u64")]
    pub day_count: u64,
    /// The website's digest of that day after this change.
    pub day_digest: String,
}

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

/// One booking's contribution to a day digest: the first 8 bytes (big-endian) of
/// SHA-256(`"<id>\n<version>"`).
pub fn booking_hash(id: &str, version: u64) -> u64 {
    let digest = Sha256::digest(format!("{id}\n{version}").as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// Count and digest of one day: the wrapping sum of [`booking_hash`] over every booking of the
/// day (any status), as 16 lowercase hex digits. Order does not matter.
pub fn day_digest<'a>(bookings: impl IntoIterator<Item = (&'a str, u64)>) -> (u64, String) {
    let mut count = 0u64;
    let mut sum = 0u64;
    for (id, version) in bookings {
        count += 1;
        sum = sum.wrapping_add(booking_hash(id, version));
    }
    (count, format!("{sum:016x}"))
}

/// Count and wrapping hash sum of each local day's bookings, kept up to date booking by booking
/// (the engine updates it with every change), so the sync's gap check costs nothing per
/// booking. [`day_digests`] computes the same from scratch (for `verify`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DaySums {
    sums: BTreeMap<Date, (u64, u64)>,
}

impl DaySums {
    /// The sums of `bookings`.
    pub fn of<'a>(bookings: impl IntoIterator<Item = &'a Booking>, calendar: &Calendar) -> Self {
        let mut sums = Self::default();
        for booking in bookings {
            sums.add(booking, calendar);
        }
        sums
    }

    /// Counts `booking` in its day.
    pub fn add(&mut self, booking: &Booking, calendar: &Calendar) {
        let entry = self
            .sums
            .entry(calendar.day_of(booking.slot_start))
            .or_insert((0, 0));
        entry.0 += 1;
        entry.1 = entry
            .1
            .wrapping_add(booking_hash(booking.id.as_str(), booking.version));
    }

    /// Takes `booking` (as it was counted) out of its day.
    pub fn remove(&mut self, booking: &Booking, calendar: &Calendar) {
        let day = calendar.day_of(booking.slot_start);
        if let Some(entry) = self.sums.get_mut(&day) {
            entry.0 = entry.0.saturating_sub(1);
            entry.1 = entry
                .1
                .wrapping_sub(booking_hash(booking.id.as_str(), booking.version));
            if entry.0 == 0 {
                self.sums.remove(&day);
            }
        }
    }

    /// Count and digest per day as the contract writes them, restricted to `only` when given
    /// (days without bookings then show count 0).
    pub fn view(
        &self,
        only: Option<&std::collections::BTreeSet<Date>>,
    ) -> BTreeMap<Date, (u64, String)> {
        let digest = |(count, sum): &(u64, u64)| (*count, format!("{sum:016x}"));
        match only {
            None => self.sums.iter().map(|(day, s)| (*day, digest(s))).collect(),
            Some(days) => days
                .iter()
                .map(|day| {
                    (
                        *day,
                        self.sums
                            .get(day)
                            .map_or((0, format!("{:016x}", 0)), digest),
                    )
                })
                .collect(),
        }
    }
}

/// Count and digest of an appliance's bookings per local day (the engine's live bookings:
/// today and later, tombstones included), restricted to `only` when given: computed from
/// scratch, the reference for [`DaySums`].
pub fn day_digests<'a>(
    bookings: impl IntoIterator<Item = &'a Booking>,
    calendar: &Calendar,
    only: Option<&std::collections::BTreeSet<Date>>,
) -> BTreeMap<Date, (u64, String)> {
    let mut sums: BTreeMap<Date, (u64, u64)> = BTreeMap::new();
    for booking in bookings {
        let day = calendar.day_of(booking.slot_start);
        if only.is_some_and(|days| !days.contains(&day)) {
            continue;
        }
        let entry = sums.entry(day).or_insert((0, 0));
        entry.0 += 1;
        entry.1 = entry
            .1
            .wrapping_add(booking_hash(booking.id.as_str(), booking.version));
    }
    let mut out: BTreeMap<Date, (u64, String)> = sums
        .into_iter()
        .map(|(day, (count, sum))| (day, (count, format!("{sum:016x}"))))
        .collect();
    if let Some(days) = only {
        for day in days {
            out.entry(*day)
                .or_insert_with(|| (0, format!("{:016x}", 0)));
        }
    }
    out
}

fn check_version(v: u32) -> Result<(), String> {
    if v == CONTRACT_VERSION {
        Ok(())
    } else {
        Err(format!(
            "contract version {v} is not supported (this appliance speaks v{CONTRACT_VERSION})"
        ))
    }
}

fn check_digest(digest: &str) -> Result<(), String> {
    if digest.len() == 16
        && digest
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    {
        Ok(())
    } else {
        Err(format!("digest '{digest}' is not 16 lowercase hex digits"))
    }
}

impl WireBooking {
    /// Validates the booking and turns it into the engine's input; `day` is the local day it
    /// must fall on (the snapshot's or change's day).
    pub fn to_input(&self, calendar: &Calendar, day: Date) -> Result<BookingInput, String> {
        check_key(&self.id, self.version)?;
        let id = &self.id;
        let slot = parse_slot(&self.slot_start).map_err(|e| format!("booking '{id}': {e}"));
        let slot_start = slot
            .as_ref()
            .map_or_else(|_| calendar.start_of_day(day), |s| *s);
        let mut input = BookingInput {
            id: BookingId::new(id.clone()),
            version: self.version,
            service: ServiceId::new(self.service.clone()),
            slot_start,
            duration_minutes: self.duration_minutes,
            desk: self.desk.clone().map(DeskId::new),
            personal: self.personal.as_ref().map(|p| PersonalData {
                name: p.name.clone(),
                note: p.note.clone(),
            }),
            status: self.status.into(),
            refusal: None,
        };
        // Violations below leave the booking countable by id and version: it is handed on
        // as refused (stored so, with its reason), so the day still matches the website.
        let refusal = if let Err(e) = slot {
            Some(e)
        } else if calendar.day_of(slot_start) != day {
            Some(format!(
                "booking '{id}': its slot falls on {}, not on {day}",
                calendar.day_of(slot_start)
            ))
        } else if !(1..=480).contains(&self.duration_minutes) {
            Some(format!(
                "booking '{id}': duration_minutes {} is out of range 1..=480",
                self.duration_minutes
            ))
        } else if self.personal.as_ref().is_some_and(|p| {
            let too_long = |f: &Option<String>| {
                f.as_ref()
                    .is_some_and(|s| s.chars().count() > MAX_PERSONAL_LEN)
            };
            too_long(&p.name) || too_long(&p.note)
        }) {
            Some(format!(
                "booking '{id}': personal fields are limited to {MAX_PERSONAL_LEN} characters"
            ))
        } else {
            None
        };
        if let Some(reason) = refusal {
            // Counted in the day it was sent for.
            if calendar.day_of(input.slot_start) != day {
                input.slot_start = calendar.start_of_day(day);
            }
            input.personal = None;
            input.refusal = Some(reason);
        }
        Ok(input)
    }
}

/// Checks what every booking must have to be counted at all: an id of 1 to [`MAX_ID_LEN`]
/// printable characters without spaces, and a version of at least 1.
fn check_key(id: &str, version: u64) -> Result<(), String> {
    if id.is_empty()
        || id.chars().count() > MAX_ID_LEN
        || id.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(format!(
            "booking id {id:?} must be 1-{MAX_ID_LEN} printable characters without spaces"
        ));
    }
    if version == 0 {
        return Err(format!("booking '{id}': version must be at least 1"));
    }
    Ok(())
}

/// An RFC 3339 instant with its offset written as RFC 3339 requires (`Z` or `+HH:MM`; jiff
/// alone also takes ISO 8601's `+HHMM`).
fn parse_slot(text: &str) -> Result<Millis, String> {
    let bytes = text.as_bytes();
    let zulu = matches!(bytes.last(), Some(b'Z' | b'z'));
    let offset = bytes.len() >= 6 && {
        let tail = &bytes[bytes.len() - 6..];
        matches!(tail[0], b'+' | b'-')
            && tail[1].is_ascii_digit()
            && tail[2].is_ascii_digit()
            && tail[3] == b':'
            && tail[4].is_ascii_digit()
            && tail[5].is_ascii_digit()
    };
    let parsed: Result<jiff::Timestamp, String> = if zulu || offset {
        text.parse().map_err(|e: jiff::Error| e.to_string())
    } else {
        Err("the offset must be Z or +HH:MM".to_string())
    };
    parsed
        .map(|t| t.as_millisecond())
        .map_err(|e| format!("slot_start '{text}' is not RFC 3339 with offset: {e}"))
}

/// A booking whose JSON is not a valid [`WireBooking`] but has an id and a version: refused
/// with the reason, counted in its day.
fn refused_input(key: BookingKey, reason: String, calendar: &Calendar, day: Date) -> BookingInput {
    let slot_start = key
        .slot_start
        .as_ref()
        .and_then(|v| v.as_str())
        .and_then(|s| parse_slot(s).ok())
        .filter(|s| calendar.day_of(*s) == day)
        .unwrap_or_else(|| calendar.start_of_day(day));
    BookingInput {
        id: BookingId::new(key.id.clone()),
        version: key.version,
        service: ServiceId::new(String::new()),
        slot_start,
        duration_minutes: 1,
        desk: None,
        personal: None,
        status: BookingStatus::Booked,
        refusal: Some(format!("booking '{}': {reason}", key.id)),
    }
}

/// A snapshot, checked against its topic and the contract.
#[derive(Debug, Clone)]
pub struct ValidSnapshot {
    /// Its day.
    pub day: Date,
    /// The website's count.
    pub count: u64,
    /// The website's digest.
    pub digest: String,
    /// The bookings as engine input.
    pub bookings: Vec<BookingInput>,
}

/// Parses and validates a day snapshot received on the topic of `topic_day`.
pub fn parse_snapshot(
    payload: &[u8],
    site: &str,
    topic_day: Date,
    calendar: &Calendar,
) -> Result<ValidSnapshot, String> {
    let snapshot: RawDaySnapshot =
        serde_json::from_slice(payload).map_err(|e| format!("invalid JSON: {e}"))?;
    check_version(snapshot.v)?;
    if snapshot.site != site {
        return Err(format!(
            "site '{}' is not this site ('{site}')",
            snapshot.site
        ));
    }
    let day = parse_day(&snapshot.day)?;
    if day != topic_day {
        return Err(format!(
            "day {day} does not match the topic's day {topic_day}"
        ));
    }
    check_digest(&snapshot.digest)?;
    let mut bookings = Vec::with_capacity(snapshot.bookings.len());
    for (index, raw) in snapshot.bookings.iter().enumerate() {
        let input = match serde_json::from_str::<WireBooking>(raw.get()) {
            Ok(wire) => wire.to_input(calendar, day)?,
            Err(e) => {
                let key: BookingKey = serde_json::from_str(raw.get())
                    .map_err(|_| format!("booking {index} has no readable id and version: {e}"))?;
                check_key(&key.id, key.version)?;
                refused_input(key, e.to_string(), calendar, day)
            }
        };
        bookings.push(input);
    }
    drop(snapshot.bookings);
    let mut ids = HashSet::new();
    for b in &bookings {
        if !ids.insert(b.id.as_str()) {
            return Err(format!("booking '{}' appears twice", b.id));
        }
    }
    let (count, digest) = day_digest(bookings.iter().map(|b| (b.id.as_str(), b.version)));
    if count != snapshot.count || digest != snapshot.digest {
        return Err(format!(
            "count/digest {}/{} do not match its bookings ({count}/{digest})",
            snapshot.count, snapshot.digest
        ));
    }
    Ok(ValidSnapshot {
        day,
        count,
        digest,
        bookings,
    })
}

/// A change, checked against the contract.
#[derive(Debug, Clone)]
pub struct ValidChange {
    /// The booking's day.
    pub day: Date,
    /// The website's count of that day after the change.
    pub day_count: u64,
    /// The website's digest of that day after the change.
    pub day_digest: String,
    /// The booking as engine input.
    pub booking: BookingInput,
}

/// Parses and validates a booking change.
pub fn parse_change(payload: &[u8], calendar: &Calendar) -> Result<ValidChange, String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RawChange {
        #[serde(deserialize_with = "integer::u32")]
        v: u32,
        booking: Box<serde_json::value::RawValue>,
        day: String,
        #[serde(deserialize_with = "integer::u64")]
        day_count: u64,
        day_digest: String,
    }
    let change: RawChange =
        serde_json::from_slice(payload).map_err(|e| format!("invalid JSON: {e}"))?;
    check_version(change.v)?;
    let day = parse_day(&change.day)?;
    check_digest(&change.day_digest)?;
    let booking = match serde_json::from_str::<WireBooking>(change.booking.get()) {
        Ok(wire) => wire.to_input(calendar, day)?,
        Err(e) => {
            let key: BookingKey = serde_json::from_str(change.booking.get())
                .map_err(|_| format!("the booking has no readable id and version: {e}"))?;
            check_key(&key.id, key.version)?;
            refused_input(key, e.to_string(), calendar, day)
        }
    };
    Ok(ValidChange {
        day,
        day_count: change.day_count,
        day_digest: change.day_digest,
        booking,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
