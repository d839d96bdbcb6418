//! Booking sync benchmark: `cargo bench -p leitsystemd --bench sync` (needs the Debian
//! packages mosquitto and mosquitto-clients).
//!
//! A stock Mosquitto on a free port holds 50,000 bookings over 60 days as retained day
//! snapshots (`BENCH_BOOKINGS` to change), published by the website simulator (`leitsystem-website-sim`'s library). Then it prints:
//! - as baseline A, how long `mosquitto_sub -C 60` takes to receive the same 60 messages;
//! - as baseline B, how long `mosquitto_sub` takes to receive the same bookings as one
//!   retained message per booking (the issue's own measurement: a second Mosquitto with
//!   `max_queued_messages 0`, as a stock broker would lose all but about 1,000 of them);
//! - as reference C, how long raw sled takes to store the same bookings the way the store does
//!   (log record, booking view and personal data per booking as JSON, 256 bookings per batch,
//!   flush and fdatasync per batch), without MQTT, parsing or the engine: the storage floor;
//! - how long a fresh appliance takes from the daemon's start until every booking is durably
//!   stored (the daemon's own `bookings_applied` counter), as bookings per second, and the
//!   ratios baseline / appliance (goal ≥ 0.5);
//! - the daemon's peak RSS (VmHWM) during the sync (goal ≤ 64 MB).
//!
//! Figures only; nothing here asserts a time.

#![allow(clippy::print_stdout, reason = "a benchmark prints its figures")]

use leitsystem_website_sim::{self as sim, Message, SimState};

#[allow(
    dead_code,
    reason = "the shared helpers serve every benchmark; this one uses a few"
)]
mod common;

use std::error::Error;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use leitsystem::control::ControlRequest;

const SITE: &str = "musterstadt-rathaus";
const DAYS: u32 = 60;

fn find(name: &str) -> Result<PathBuf, Box<dyn Error>> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!("`{name}` is missing: install mosquitto and mosquitto-clients").into()
        })
}

fn vm_hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// A Mosquitto on a free loopback port, killed when dropped.
struct Broker {
    child: std::process::Child,
    port: u16,
}

impl Broker {
    fn start(dir: &std::path::Path, name: &str, extra: &str) -> Result<Broker, Box<dyn Error>> {
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))?
            .local_addr()?
            .port();
        let conf = dir.join(format!("{name}.conf"));
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\n{extra}"),
        )?;
        let child = Command::new(find("mosquitto")?)
            .arg("-c")
            .arg(&conf)
            .stderr(Stdio::null())
            .spawn()?;
        let broker = Broker { child, port };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if started.elapsed() > Duration::from_secs(10) {
                return Err("mosquitto did not start".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(broker)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let bookings: usize = std::env::var("BENCH_BOOKINGS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let dir = tempfile::tempdir()?;
    let per_booking = per_booking_baseline(bookings, dir.path())?;
    let raw = raw_sled(bookings, &dir.path().join("raw-sled"))?;
    let broker = Broker::start(dir.path(), "stock", "")?;
    run(bookings, broker.port, dir.path(), per_booking, raw)
}

/// Reference C: the bookings written straight into sled as the store writes them.
#[allow(
    clippy::disallowed_methods,
    reason = "the reference measures raw sled: flush, then the fdatasync the store adds"
)]
fn raw_sled(bookings: usize, dir: &std::path::Path) -> Result<Duration, Box<dyn Error>> {
    use leitsystem::domain::{
        Booking, BookingId, BookingStatus, Event, EventRecord, PersonalData, ServiceId,
    };
    let db = common::raw_sled_db(dir)?;
    let log = std::fs::File::open(dir.join("db"))?;
    let at = jiff::Timestamp::now().as_millisecond();
    let started = Instant::now();
    let mut seq = 0u64;
    for chunk in (0..bookings).collect::<Vec<_>>().chunks(256) {
        let mut batch = sled::Batch::default();
        for i in chunk {
            seq += 1;
            let booking = Booking {
                id: BookingId::new(format!("BK-1-{i:06}")),
                version: 1,
                service: ServiceId::new("ausweis"),
                slot_start: at + (*i as i64) * 60_000,
                duration_minutes: 15,
                status: BookingStatus::Booked,
                desk: None,
                ticket: None,
                refusal: None,
                vouched: false,
            };
            let personal = serde_json::json!({
                "day": "2026-11-24",
                "data": PersonalData { name: Some(format!("Bürgerin {i}")), note: None },
            });
            batch.insert(
                format!("b/{}", booking.id).as_bytes(),
                serde_json::to_vec(&booking)?,
            );
            batch.insert(
                format!("p/{}", booking.id).as_bytes(),
                serde_json::to_vec(&personal)?,
            );
            let record = EventRecord {
                seq,
                at,
                request_id: None,
                source: "mqtt".to_string(),
                event: Event::BookingUpserted {
                    booking,
                    has_personal_data: true,
                },
            };
            let mut key = b"l/".to_vec();
            key.extend_from_slice(&seq.to_be_bytes());
            batch.insert(key, serde_json::to_vec(&record)?);
        }
        db.apply_batch(batch)?;
        db.flush()?;
        log.sync_data()?;
    }
    Ok(started.elapsed())
}

/// What the simulated website holds: `bookings` over [`DAYS`] days from today.
fn website_state(bookings: usize) -> Result<SimState, Box<dyn Error>> {
    let calendar = leitsystem::clock::Calendar::new("Europe/Berlin")?;
    let start = calendar.day_of(jiff::Timestamp::now().as_millisecond());
    let services: Vec<String> = ["ausweis", "meldung", "fuehrerschein"]
        .map(str::to_string)
        .to_vec();
    let generated = sim::generate(bookings, DAYS, 1, &services, start, &calendar)?;
    let mut state = SimState {
        site: SITE.to_string(),
        topic_root: "leitsystem/v1".to_string(),
        ..SimState::default()
    };
    for (day, booking) in generated {
        state.upsert(booking, &day);
    }
    Ok(state)
}

/// Baseline B: publishes every booking as its own retained message (the change payload of
/// contract v1) to a Mosquitto with `max_queued_messages 0`, then times how long
/// `mosquitto_sub` takes to receive all of them.
fn per_booking_baseline(
    bookings: usize,
    dir: &std::path::Path,
) -> Result<Duration, Box<dyn Error>> {
    let broker = Broker::start(dir, "unlimited", "max_queued_messages 0\n")?;
    let state = website_state(bookings)?;
    let mut messages = Vec::with_capacity(bookings);
    for (day, bookings_of_day) in &state.days {
        for booking in bookings_of_day.values() {
            let mut message = Message::change(&state, booking, day, rumqttc::QoS::AtLeastOnce)?;
            message.topic = format!("bench/{SITE}/booking/{}", booking.id);
            message.retain = true;
            messages.push(message);
        }
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime
        .block_on(sim::publish("127.0.0.1", broker.port, messages))
        .map_err(|e| format!("publishing the per-booking messages: {e:#}"))?;
    let started = Instant::now();
    let status = Command::new(find("mosquitto_sub")?)
        .args(["-p", &broker.port.to_string(), "-q", "1"])
        .args([
            "-C",
            &bookings.to_string(),
            "-t",
            &format!("bench/{SITE}/booking/+"),
        ])
        .args(["-W", "120"])
        .stdout(Stdio::null())
        .status()?;
    let elapsed = started.elapsed();
    if !status.success() {
        return Err("mosquitto_sub did not receive every per-booking message".into());
    }
    Ok(elapsed)
}

fn run(
    bookings: usize,
    port: u16,
    dir: &std::path::Path,
    per_booking: Duration,
    raw: Duration,
) -> Result<(), Box<dyn Error>> {
    // The website's side: the same bookings as retained day snapshots, published by the
    // website simulator's library.
    let state = website_state(bookings)?;
    let snapshots = state
        .days
        .keys()
        .map(|day| Message::snapshot(&state, day))
        .collect::<anyhow::Result<Vec<_>>>()?;
    tokio::runtime::Runtime::new()?
        .block_on(sim::publish("127.0.0.1", port, snapshots))
        .map_err(|e| format!("publishing the day snapshots: {e:#}"))?;

    // Baseline: a plain subscriber receiving the same retained snapshots.
    let topic = format!("leitsystem/v1/{SITE}/bookings/day/+");
    let started = Instant::now();
    let status = Command::new(find("mosquitto_sub")?)
        .args([
            "-p",
            &port.to_string(),
            "-q",
            "1",
            "-C",
            &DAYS.to_string(),
            "-t",
            &topic,
        ])
        .stdout(Stdio::null())
        .status()?;
    let baseline = started.elapsed();
    if !status.success() {
        return Err("mosquitto_sub failed".into());
    }

    let data = dir.join("data");
    let config = dir.join("leitsystem.toml");
    common::write_config(
        &config,
        &data,
        &format!("[mqtt]\nhost = \"127.0.0.1\"\nport = {port}\n"),
    )?;
    let started = Instant::now();
    let mut daemon = common::BenchDaemon::start(&config, &data)?;
    let mut peak_kib = 0;
    let synced = loop {
        peak_kib = peak_kib.max(vm_hwm_kib(daemon.pid()));
        let view = daemon
            .client
            .request(&ControlRequest::Sync)?
            .sync
            .ok_or("no sync state")?;
        if view.state.bookings_applied as usize >= bookings {
            break started.elapsed();
        }
        if started.elapsed() > Duration::from_secs(600) {
            return Err(format!("not synced after 600 s: {:?}", view.state).into());
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // The outbox still publishes the events; let it finish for the memory figure.
    std::thread::sleep(Duration::from_secs(2));
    peak_kib = peak_kib.max(vm_hwm_kib(daemon.pid()));
    drop(daemon);

    let per_second = bookings as f64 / synced.as_secs_f64();
    println!(
        "booking sync, {bookings} bookings over {DAYS} days, fresh appliance, stock Mosquitto"
    );
    println!(
        "  A: mosquitto_sub receiving the {DAYS} snapshots:                  {:>8.3} s",
        baseline.as_secs_f64()
    );
    println!(
        "  B: mosquitto_sub receiving {bookings} per-booking messages:        {:>8.3} s",
        per_booking.as_secs_f64()
    );
    println!(
        "  C: raw sled storing the same bookings (the storage floor):      {:>8.3} s",
        raw.as_secs_f64()
    );
    println!(
        "  appliance, start until all durably stored:                    {:>8.3} s  ({per_second:.0} bookings/s)",
        synced.as_secs_f64()
    );
    println!(
        "  ratio A / appliance: {:.2}; ratio B / appliance: {:.2} (goal >= 0.5)",
        baseline.as_secs_f64() / synced.as_secs_f64(),
        per_booking.as_secs_f64() / synced.as_secs_f64()
    );
    println!(
        "  ratio C / appliance: {:.2}; ratio B / C: {:.2} (what storage alone allows)",
        raw.as_secs_f64() / synced.as_secs_f64(),
        per_booking.as_secs_f64() / raw.as_secs_f64()
    );
    println!(
        "  daemon peak RSS (VmHWM): {:.1} MB (goal <= 64 MB)",
        peak_kib as f64 / 1024.0
    );
    Ok(())
}
