//! The website simulator behind `leitsystem-website-sim`: generates bookings, keeps what it
//! published in a JSON state file, and publishes day snapshots and changes by contract v1 —
//! for the demo, the tests and the city's developers (it is also a reference for the
//! website's side of the contract).
//!
//! It builds on the core alone and must never ship on the appliance (`tests/tests/layering.rs`).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use jiff::civil::Date;
use rand::{Rng, SeedableRng};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, Outgoing, QoS};
use serde::{Deserialize, Serialize};

use leitsystem_core::clock::Calendar;
use leitsystem_core::contract::{
    BookingChange, CONTRACT_VERSION, DaySnapshot, Topics, WireBooking, WirePersonal, WireStatus,
    day_digest,
};

/// What the simulated website has published: every booking by local day.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimState {
    /// Site id.
    pub site: String,
    /// Topic root.
    pub topic_root: String,
    /// Bookings per day (`YYYY-MM-DD`), by id.
    pub days: BTreeMap<String, BTreeMap<String, WireBooking>>,
}

impl SimState {
    /// Reads a state file.
    pub fn load(path: &Path) -> anyhow::Result<SimState> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
    }

    /// Writes the state file.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let bytes = serde_json::to_vec(self)?;
        std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
    }

    /// Count and digest of a day as the website computes them.
    pub fn day_digest(&self, day: &str) -> (u64, String) {
        match self.days.get(day) {
            Some(bookings) => day_digest(bookings.values().map(|b| (b.id.as_str(), b.version))),
            None => day_digest([]),
        }
    }

    /// The snapshot message of a day.
    pub fn snapshot(&self, day: &str) -> DaySnapshot {
        let (count, digest) = self.day_digest(day);
        DaySnapshot {
            v: CONTRACT_VERSION,
            site: self.site.clone(),
            day: day.to_string(),
            count,
            digest,
            bookings: self
                .days
                .get(day)
                .map(|b| b.values().cloned().collect())
                .unwrap_or_default(),
        }
    }

    /// The day a booking is on, if known.
    pub fn day_of_booking(&self, id: &str) -> Option<String> {
        self.days
            .iter()
            .find(|(_, b)| b.contains_key(id))
            .map(|(d, _)| d.clone())
    }

    /// Replaces (or adds) a booking; returns the days whose snapshot changed.
    pub fn upsert(&mut self, booking: WireBooking, day: &str) -> Vec<String> {
        let mut changed = vec![day.to_string()];
        if let Some(old) = self.day_of_booking(&booking.id) {
            if old != day {
                if let Some(b) = self.days.get_mut(&old) {
                    b.remove(&booking.id);
                }
                changed.push(old);
            }
        }
        self.days
            .entry(day.to_string())
            .or_default()
            .insert(booking.id.clone(), booking);
        changed
    }
}

/// Generates `count` bookings deterministically (by `seed`) spread over `days` days from
/// `start`, with slots every 15 minutes from 08:00 to 15:45 local time.
pub fn generate(
    count: usize,
    days: u32,
    seed: u64,
    services: &[String],
    start: Date,
    calendar: &Calendar,
) -> anyhow::Result<Vec<(String, WireBooking)>> {
    if days == 0 || services.is_empty() {
        bail!("need at least one day and one service");
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let day_index = i % days as usize;
        let nth = i / days as usize;
        let day = start
            .checked_add(jiff::Span::new().days(i64::try_from(day_index)?))
            .context("day out of range")?;
        let minute = 8 * 60 + u16::try_from((nth * 15) % (8 * 60))?;
        let slot = calendar.local_instant(day, minute);
        let service = services[rng.random_range(0..services.len())].clone();
        out.push((
            day.to_string(),
            WireBooking {
                id: format!("BK-{seed}-{i:06}"),
                version: 1,
                status: WireStatus::Booked,
                service,
                slot_start: calendar.local_rfc3339(slot),
                duration_minutes: 15,
                desk: None,
                personal: Some(WirePersonal {
                    name: Some(format!("Bürgerin {i}")),
                    note: None,
                }),
            },
        ));
    }
    Ok(out)
}

/// One message to publish.
#[derive(Debug, Clone)]
pub struct Message {
    /// Topic.
    pub topic: String,
    /// Payload.
    pub payload: Vec<u8>,
    /// QoS 0 or 1.
    pub qos: QoS,
    /// Retained?
    pub retain: bool,
}

impl Message {
    /// The retained QoS 1 snapshot of `day`.
    pub fn snapshot(state: &SimState, day: &str) -> anyhow::Result<Message> {
        let topics = Topics::new(&state.topic_root, &state.site);
        let day_date: Date =
            leitsystem_core::contract::parse_day(day).map_err(anyhow::Error::msg)?;
        Ok(Message {
            topic: topics.day(day_date),
            payload: serde_json::to_vec(&state.snapshot(day))?,
            qos: QoS::AtLeastOnce,
            retain: true,
        })
    }

    /// The change message of a booking, with its day's count and digest after the change.
    pub fn change(
        state: &SimState,
        booking: &WireBooking,
        day: &str,
        qos: QoS,
    ) -> anyhow::Result<Message> {
        let topics = Topics::new(&state.topic_root, &state.site);
        let (day_count, day_digest) = state.day_digest(day);
        let change = BookingChange {
            v: CONTRACT_VERSION,
            booking: booking.clone(),
            day: day.to_string(),
            day_count,
            day_digest,
        };
        Ok(Message {
            topic: topics.change(),
            payload: serde_json::to_vec(&change)?,
            qos,
            retain: false,
        })
    }
}

/// Connects to the broker (clean session), publishes `messages` in order, waits until the
/// broker acknowledged every QoS 1 message (and wrote every QoS 0 one), then disconnects.
pub async fn publish(host: &str, port: u16, messages: Vec<Message>) -> anyhow::Result<()> {
    let id = format!(
        "website-sim-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    );
    let mut options = MqttOptions::new(id, host, port);
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_clean_session(true)
        .set_max_packet_size(64 * 1024 * 1024, 64 * 1024 * 1024)
        .set_inflight(100);
    let total = messages.len();
    let qos1 = messages.iter().filter(|m| m.qos != QoS::AtMostOnce).count();
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    let publisher = client.clone();
    let feeder = tokio::spawn(async move {
        for m in messages {
            publisher
                .publish(m.topic, m.qos, m.retain, m.payload)
                .await
                .context("queueing a publish")?;
        }
        anyhow::Ok(())
    });
    let (mut written, mut acked, mut connected) = (0usize, 0usize, false);
    let work = async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Incoming::ConnAck(_))) => connected = true,
                Ok(Event::Incoming(Incoming::PubAck(_))) => acked += 1,
                Ok(Event::Outgoing(Outgoing::Publish(_))) => written += 1,
                Ok(_) => {}
                Err(e) => bail!("MQTT connection to {host}:{port} failed: {e}"),
            }
            if connected && written >= total && acked >= qos1 {
                return Ok(());
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(300), work)
        .await
        .context("publishing took longer than 300 s")??;
    feeder.await.context("publisher task")??;
    client.disconnect().await?;
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    Ok(())
}
