//! The per-day booking digest both sides compute to find a gap: a count and a sum of hashes.

use sha2::{Digest, Sha256};

use crate::clock::Calendar;
use crate::domain::Booking;
use jiff::civil::Date;
use std::collections::BTreeMap;

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
