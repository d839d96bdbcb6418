//! Contract v1 of the booking sync: topics, the JSON payloads (wire DTOs, apart from the domain
//! types), their validation and the per-day digest. Documented for the website's developers in
//! `daemon/docs/mqtt.md` and `daemon/docs/asyncapi.yaml`.

use std::collections::HashSet;

use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use crate::clock::{Calendar, Millis};
use crate::domain::{BookingId, BookingInput, BookingStatus, DeskId, PersonalData, ServiceId};

mod digest;
mod outbound;

pub use digest::*;
pub use outbound::*;

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
mod tests;
