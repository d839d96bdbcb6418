//! The booking sync against a real Mosquitto (default limits) on 127.0.0.1, driven by
//! `leitsystem-website-sim`: many bookings with duplicate, out-of-order, cancelled and deleted
//! versions; 50,000 bookings into a fresh appliance plus a lost change repaired by the day
//! digests; the broker restarted mid-load with every event delivered once by seq; the daemon
//! SIGKILLed between receiving and acknowledging.
//!
//! Why over 600 lines: one scenario per test of the sync with a real broker; the helpers they share are at the top, and splitting would only scatter them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use leitsystem::control::ControlRequest;
use leitsystem::domain::{BookingStatus, Command, DeskId, Event, EventRecord, Outcome, ServiceId};
use leitsystem::sync::SyncView;
use leitsystem::sync::contract::EventBatch;
use leitsystem_tests::daemon::{
    Daemon, all_events, assert_consistent, execute, free_port, http_get, request, wait_for,
    walk_in, website_sim_binary, write_demo_config,
};
use leitsystem_tests::mosquitto::{Mosquitto, TestPki, mosquitto_pub_binary, password_listener};
use leitsystem_website_sim::{Message, SimState};

const SITE: &str = "musterstadt-rathaus";
const SERVICES: &str = "ausweis,meldung,fuehrerschein";

struct Setup {
    _dir: tempfile::TempDir,
    broker: Mosquitto,
    config: std::path::PathBuf,
    data: std::path::PathBuf,
    state: std::path::PathBuf,
}

fn setup() -> anyhow::Result<Setup> {
    setup_with(tempfile::tempdir()?, None)
}

/// A broker with a second listener configured by `listener` (the daemon's config still points
/// at the plain one until [`Setup::configure`]).
fn setup_with(dir: tempfile::TempDir, listener: Option<&str>) -> anyhow::Result<Setup> {
    let broker = match listener {
        Some(settings) => Mosquitto::start_with_listener(&dir.path().join("broker"), settings)?,
        None => Mosquitto::start(&dir.path().join("broker"))?,
    };
    let data = dir.path().join("data");
    let config = write_demo_config(dir.path(), &data)?;
    let mut text = std::fs::read_to_string(&config)?;
    text.push_str(&broker.mqtt_section());
    std::fs::write(&config, text)?;
    let state = dir.path().join("website.json");
    Ok(Setup {
        _dir: dir,
        broker,
        config,
        data,
        state,
    })
}

impl Setup {
    /// Rewrites the daemon's config with `mqtt_section` as its `[mqtt]`.
    fn configure(&self, mqtt_section: &str) -> anyhow::Result<()> {
        let dir = self.config.parent().context("config without a directory")?;
        let config = write_demo_config(dir, &self.data)?;
        let mut text = std::fs::read_to_string(&config)?;
        text.push_str(mqtt_section);
        std::fs::write(&self.config, text)?;
        Ok(())
    }

    fn start(&self) -> anyhow::Result<Daemon> {
        Daemon::start(&self.config, &self.data, &[])
    }

    /// Runs `leitsystem-website-sim <args> --port <broker>`.
    fn sim(&self, args: &[&str]) -> anyhow::Result<String> {
        let port = self.broker.port.to_string();
        let output = std::process::Command::new(website_sim_binary()?)
            .args(args)
            .args(["--port", &port])
            .env("RUST_LOG", "warn")
            .output()
            .context("running website-sim")?;
        if !output.status.success() {
            bail!(
                "website-sim {args:?} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    fn publish(&self, bookings: usize, days: u32) -> anyhow::Result<()> {
        let state = self.state.display().to_string();
        self.sim(&[
            "publish",
            "--site",
            SITE,
            "--bookings",
            &bookings.to_string(),
            "--days",
            &days.to_string(),
            "--services",
            SERVICES,
            "--state",
            &state,
        ])?;
        Ok(())
    }

    fn change(&self, booking: &str, extra: &[&str]) -> anyhow::Result<()> {
        let state = self.state.display().to_string();
        let mut args = vec!["change", "--state", &state, "--booking", booking];
        args.extend_from_slice(extra);
        self.sim(&args)?;
        Ok(())
    }
}

fn sync_view(daemon: &Daemon) -> anyhow::Result<SyncView> {
    request(daemon, &ControlRequest::Sync)?
        .sync
        .context("no sync in the answer")
}

/// Waits until the appliance's per-day counts and digests equal the website's.
fn wait_in_sync(daemon: &Daemon, state: &Path, timeout: Duration) -> anyhow::Result<SyncView> {
    let website = SimState::load(state)?;
    let expected: BTreeMap<String, (u64, String)> = website
        .days
        .keys()
        .map(|d| (d.clone(), website.day_digest(d)))
        .collect();
    let mut last = None;
    let result = wait_for("the appliance to match the website", timeout, || {
        let view = sync_view(daemon)?;
        let own: BTreeMap<String, (u64, String)> = view
            .days
            .iter()
            .map(|(d, v)| (d.clone(), (v.count, v.digest.clone())))
            .collect();
        last = Some(view.clone());
        Ok((own == expected).then_some(view))
    });
    result.with_context(|| format!("last sync state: {last:#?}\nlog:\n{}", daemon.log_tail()))
}

/// The newest stored version of every booking, from the log: (version, status, personal).
fn versions(events: &[EventRecord]) -> BTreeMap<String, (u64, BookingStatus, bool)> {
    let mut out = BTreeMap::new();
    for record in events {
        if let Event::BookingUpserted {
            booking,
            has_personal_data,
        } = &record.event
        {
            out.insert(
                booking.id.to_string(),
                (booking.version, booking.status, *has_personal_data),
            );
        }
    }
    out
}

/// Every (booking, version) is in the log exactly once.
fn assert_once_per_version(events: &[EventRecord]) -> anyhow::Result<usize> {
    let mut seen = BTreeSet::new();
    for record in events {
        if let Event::BookingUpserted { booking, .. } = &record.event
            && !seen.insert((booking.id.to_string(), booking.version))
        {
            bail!("{} v{} stored twice", booking.id, booking.version);
        }
    }
    Ok(seen.len())
}

#[test]
fn many_bookings_with_duplicates_out_of_order_versions_cancellation_and_deletion()
-> anyhow::Result<()> {
    let s = setup()?;
    let daemon = s.start()?;
    s.publish(2_000, 10)?;
    wait_in_sync(&daemon, &s.state, Duration::from_secs(60))?;
    let stored = versions(&all_events(&daemon)?);
    assert_eq!(stored.len(), 2_000);
    assert!(
        stored
            .values()
            .all(|(v, status, personal)| *v == 1 && *status == BookingStatus::Booked && *personal)
    );

    // A newer change, then an older one arriving late (from a stale copy of the website).
    let stale = s.state.with_extension("stale.json");
    std::fs::copy(&s.state, &stale)?;
    s.change("BK-1-000010", &["--version", "3"])?;
    let stale_arg = stale.display().to_string();
    s.sim(&[
        "change",
        "--state",
        &stale_arg,
        "--booking",
        "BK-1-000010",
        "--version",
        "2",
        "--status",
        "cancelled",
        "--skip-snapshot",
    ])?;
    // Cancellation and deletion.
    s.change("BK-1-000011", &["--status", "cancelled"])?;
    s.change("BK-1-000012", &["--status", "deleted"])?;
    // Duplicates: every snapshot again.
    let state_arg = s.state.display().to_string();
    s.sim(&["snapshot", "--state", &state_arg])?;
    let view = wait_in_sync(&daemon, &s.state, Duration::from_secs(30))?;
    wait_for(
        "the duplicates to be ignored",
        Duration::from_secs(30),
        || Ok((sync_view(&daemon)?.state.bookings_ignored >= 2_000).then_some(())),
    )?;

    let events = all_events(&daemon)?;
    assert_once_per_version(&events)?;
    let stored = versions(&events);
    assert_eq!(stored["BK-1-000010"], (3, BookingStatus::Booked, true));
    assert_eq!(stored["BK-1-000011"], (2, BookingStatus::Cancelled, false));
    // Deleted: a tombstone with its version, personal data erased.
    assert_eq!(stored["BK-1-000012"], (2, BookingStatus::Deleted, false));
    assert_eq!(view.state.malformed, 0);
    assert_eq!(view.state.bookings_refused, 0);
    assert_consistent(&daemon)?;
    daemon.terminate()?;
    Ok(())
}

#[test]
fn fresh_appliance_gets_50000_bookings_from_a_stock_broker_and_repairs_a_gap() -> anyhow::Result<()>
{
    let s = setup()?;
    // Published before the appliance exists: it gets them only as retained snapshots.
    s.publish(50_000, 60)?;
    let port = free_port()?;
    let mut text = std::fs::read_to_string(&s.config)?;
    text.push_str(&format!("\n[web]\nlisten = \"127.0.0.1:{port}\"\n"));
    std::fs::write(&s.config, text)?;
    let daemon = s.start()?;
    // Visitors are called while the bookings pour in (thousands of events a second, more
    // than the committed-events broadcast holds): every call reaches the wall display.
    // Regression: the display skipped the events it lagged behind, and such a call never
    // showed.
    let desk = DeskId::new("1");
    execute(&daemon, Command::OpenDesk { desk: desk.clone() })?;
    let mut calls_during_sync = 0;
    for _ in 0..200 {
        let syncing = sync_view(&daemon)?.state.bookings_applied < 50_000;
        if !syncing && calls_during_sync > 0 {
            break;
        }
        walk_in(&daemon, "ausweis")?;
        let Outcome::Called { ticket, .. } =
            execute(&daemon, Command::CallNext { desk: desk.clone() })?
        else {
            bail!("next called nobody");
        };
        execute(&daemon, Command::StartService { desk: desk.clone() })?;
        calls_during_sync += usize::from(syncing);
        wait_for("the call on the display", Duration::from_secs(15), || {
            let response = http_get(&format!("http://127.0.0.1:{port}/api/v1/display"))?;
            let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
            let shown: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
            let calls = shown["calls"].as_array().cloned().unwrap_or_default();
            Ok(calls
                .iter()
                .any(|c| c["ticket"] == ticket.as_str())
                .then_some(()))
        })
        .with_context(|| format!("{ticket} never reached the display"))?;
    }
    assert!(calls_during_sync > 0, "no call was made during the sync");
    let view = wait_in_sync(&daemon, &s.state, Duration::from_secs(240))?;
    assert_eq!(view.days.len(), 60);
    assert_eq!(view.days.values().map(|d| d.count).sum::<u64>(), 50_000);
    // The counter follows the engine's answer, a moment after the state is visible.
    let view = wait_for("the applied counter", Duration::from_secs(10), || {
        let view = sync_view(&daemon)?;
        Ok((view.state.bookings_applied >= 50_000).then_some(view))
    })?;
    assert_eq!(
        view.state.bookings_applied, 50_000,
        "each booking applied once"
    );
    daemon.terminate()?;

    // A change lost while the appliance is offline: QoS 0 (not queued for an offline session),
    // and the website's snapshot update is lost too.
    s.change("BK-1-000120", &["--qos0", "--skip-snapshot"])?;
    let daemon = s.start()?;
    wait_for("the reconnect", Duration::from_secs(20), || {
        Ok((sync_view(&daemon)?.state.connected).then_some(()))
    })?;
    // The next change of that day carries the website's digest: the appliance sees it does
    // not match, re-fetches the day, and repairs it once the snapshot is there.
    s.change("BK-1-000180", &["--snapshot-delay-ms", "5000"])?;
    let view = wait_in_sync(&daemon, &s.state, Duration::from_secs(60))?;
    assert!(view.state.gaps_detected >= 1, "{view:#?}");
    assert!(view.state.gaps_repaired >= 1, "{view:#?}");
    assert!(view.state.mismatched_days.is_empty(), "{view:#?}");
    let stored = versions(&all_events(&daemon)?);
    assert_eq!(stored["BK-1-000120"].0, 2);
    assert_eq!(stored["BK-1-000180"].0, 2);
    daemon.terminate()?;
    Ok(())
}

/// Regression: a change over `max_packet_bytes` made the daemon reconnect twice a second
/// forever (the broker redelivers it), and nothing after it was applied; a booking the
/// appliance refused made its day mismatch for good, refused again by every later message
/// (51,235 refusals in 6 s), its deletion included.
#[test]
fn an_oversized_message_and_a_refused_booking_leave_the_sync_working_and_the_day_consistent()
-> anyhow::Result<()> {
    let s = setup()?;
    s.configure(&format!(
        "{}max_packet_bytes = 65536\n",
        s.broker.mqtt_section()
    ))?;
    s.publish(300, 2)?;
    let daemon = s.start()?;
    wait_in_sync(&daemon, &s.state, Duration::from_secs(60))?;
    // 100 KiB on the change topic, QoS 1, for the persistent session.
    let status = std::process::Command::new(mosquitto_pub_binary()?)
        .args(["-p", &s.broker.port.to_string(), "-q", "1"])
        .args(["-t", &format!("leitsystem/v1/{SITE}/bookings/change")])
        .args(["-m", &format!("{{\"pad\":\"{}\"}}", "x".repeat(100 * 1024))])
        .status()?;
    assert!(status.success(), "mosquitto_pub failed");
    // A service this appliance does not have: the website counts the booking, so must we.
    s.change("BK-1-000010", &["--service", "no-such-service"])?;
    s.change("BK-1-000020", &[])?;
    wait_in_sync(&daemon, &s.state, Duration::from_secs(30))?;
    // The day digests follow the commit; the sync's counters follow a moment later, when the
    // processor reads the chunk's outcomes (a view taken in between matched, yet counted 0),
    // and a day found mismatched on the way is cleared when its re-fetch has been compared
    // (seen in CI under load: refetches 1, the day still listed when the digests matched).
    let view = wait_for(
        "the refusal to be counted and no day left mismatched",
        Duration::from_secs(30),
        || {
            let view = sync_view(&daemon)?;
            Ok(
                (view.state.bookings_refused > 0 && view.state.mismatched_days.is_empty())
                    .then_some(view),
            )
        },
    )
    .with_context(|| format!("{:#?}", sync_view(&daemon).ok()))?;
    // At least once: a reconnect between receiving and acking it redelivers it.
    assert!(
        (1..=3).contains(&view.state.malformed),
        "the oversized message: {view:#?}"
    );
    assert_eq!(view.state.bookings_refused, 1, "{view:#?}");
    let stored = versions(&all_events(&daemon)?);
    assert_eq!(stored["BK-1-000010"].0, 2);
    assert_eq!(stored["BK-1-000010"].1, BookingStatus::Refused);
    assert_eq!(
        stored["BK-1-000020"].0, 2,
        "the change after both was applied"
    );
    // Its deletion is taken; later changes of its day go on matching.
    s.change("BK-1-000010", &["--status", "deleted"])?;
    s.change("BK-1-000030", &[])?;
    let view = wait_in_sync(&daemon, &s.state, Duration::from_secs(30))?;
    let stored = versions(&all_events(&daemon)?);
    assert_eq!(stored["BK-1-000010"].1, BookingStatus::Deleted);
    assert_eq!(stored["BK-1-000030"].0, 2);
    assert_eq!(view.state.bookings_refused, 1, "refused once: {view:#?}");
    // The first connection, one that takes the oversized message to drop it (and at most a
    // redelivery's worth more): no reconnect loop.
    assert!(
        view.state.connections <= 4,
        "connections:\n{}",
        daemon.log_tail()
    );
    let log = std::fs::read_to_string(&daemon.log)?;
    assert_eq!(
        log.matches("stored as refused").count(),
        1,
        "one refusal logged:\n{}",
        daemon.log_tail()
    );
    // An empty retained payload for a day that has not passed is no deletion: its bookings
    // stay, and it is counted apart from the clearing of past days.
    let day = SimState::load(&s.state)?
        .days
        .keys()
        .next()
        .cloned()
        .context("the website has no day")?;
    let status = std::process::Command::new(mosquitto_pub_binary()?)
        .args(["-p", &s.broker.port.to_string(), "-q", "1", "-r", "-n"])
        .args(["-t", &format!("leitsystem/v1/{SITE}/bookings/day/{day}")])
        .status()?;
    assert!(status.success(), "mosquitto_pub failed");
    wait_for(
        "the cleared snapshot to be counted",
        Duration::from_secs(20),
        || Ok((sync_view(&daemon)?.state.cleared_upcoming == 1).then_some(())),
    )?;
    let view = wait_in_sync(&daemon, &s.state, Duration::from_secs(10))?;
    assert_eq!(view.state.cleared, 1, "{view:#?}");
    assert_consistent(&daemon)?;
    daemon.terminate()?;
    Ok(())
}

/// A website-side subscriber of the events: persistent session, QoS 1; records every seq it
/// receives (duplicates included), in arrival order. Its broker queue is the stock one
/// (`max_queued_messages` 1000): the appliance must not outrun it.
struct Subscriber {
    /// Every seq received, in arrival order, duplicates included.
    seen: Arc<Mutex<Vec<u64>>>,
    /// ConnAcks the subscriber received (1 = it never reconnected).
    connects: Arc<Mutex<u32>>,
    /// (epoch, seq) of every event received, as the contract tells a website to key them.
    keyed: Arc<Mutex<Vec<(String, u64)>>>,
}

impl Subscriber {
    fn seen(&self) -> anyhow::Result<Vec<u64>> {
        Ok(self
            .seen
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .clone())
    }

    fn keyed(&self) -> Vec<(String, u64)> {
        self.keyed.lock().map(|k| k.clone()).unwrap_or_default()
    }

    fn connects(&self) -> u32 {
        self.connects.lock().map(|c| *c).unwrap_or(0)
    }
}

fn events_subscriber(port: u16, stop: Arc<Mutex<bool>>) -> Subscriber {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let connects = Arc::new(Mutex::new(0));
    let out = seen.clone();
    let connected = connects.clone();
    let keyed = Arc::new(Mutex::new(Vec::new()));
    let keyed_out = keyed.clone();
    let mut options = rumqttc::MqttOptions::new("website-events", "127.0.0.1", port);
    // Event messages are batches of up to 128 KiB (rumqttc accepts 10 KiB by default).
    options
        .set_clean_session(false)
        .set_keep_alive(Duration::from_secs(5))
        .set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut connection) = rumqttc::Client::new(options, 100);
    std::thread::spawn(move || {
        let topic = format!("leitsystem/v1/{SITE}/events");
        loop {
            if stop.lock().map(|s| *s).unwrap_or(true) {
                return;
            }
            match connection.recv_timeout(Duration::from_millis(200)) {
                Ok(Ok(rumqttc::Event::Incoming(rumqttc::Incoming::ConnAck(_)))) => {
                    if let Ok(mut c) = connected.lock() {
                        *c += 1;
                    }
                    let _ = client.try_subscribe(topic.clone(), rumqttc::QoS::AtLeastOnce);
                }
                Ok(Ok(rumqttc::Event::Incoming(rumqttc::Incoming::Publish(p)))) => {
                    if let Ok(batch) = serde_json::from_slice::<EventBatch>(&p.payload)
                        && let Ok(mut seen) = out.lock()
                    {
                        seen.extend(batch.events.iter().map(|e| e.seq));
                        if let Ok(mut keyed) = keyed_out.lock() {
                            keyed.extend(batch.events.iter().map(|e| (batch.epoch.clone(), e.seq)));
                        }
                    }
                }
                Ok(Ok(_)) => {}
                Ok(Err(_)) => std::thread::sleep(Duration::from_millis(100)),
                Err(rumqttc::RecvTimeoutError::Timeout) => {}
                Err(rumqttc::RecvTimeoutError::Disconnected) => return,
            }
        }
    });
    Subscriber {
        seen,
        connects,
        keyed,
    }
}

/// Waits until the subscriber holds every seq `1..=last_seq`; the error lists what is missing.
fn wait_for_every_seq(
    subscriber: &Subscriber,
    daemon: &Daemon,
    last_seq: u64,
    timeout: Duration,
) -> anyhow::Result<()> {
    wait_for("every event at the subscriber", timeout, || {
        let got: BTreeSet<u64> = subscriber.seen()?.into_iter().collect();
        Ok((got.len() as u64 == last_seq && got.last() == Some(&last_seq)).then_some(()))
    })
    .with_context(|| {
        let got: BTreeSet<u64> = subscriber
            .seen()
            .map(|s| s.into_iter().collect())
            .unwrap_or_default();
        let missing: Vec<u64> = (1..=last_seq).filter(|q| !got.contains(q)).collect();
        format!(
            "last seq {last_seq}, {} received, {} missing: {:?}..{:?}\nsync: {:#?}\ndaemon log:\n{}",
            got.len(),
            missing.len(),
            missing.first(),
            missing.last(),
            sync_view(daemon).map(|v| v.state),
            daemon.log_tail(),
        )
    })
}

/// Waits until the outbox's cursor reached `last_seq` and its backlog is 0.
fn wait_for_outbox_done(daemon: &Daemon, last_seq: u64) -> anyhow::Result<SyncView> {
    wait_for("the outbox cursor", Duration::from_secs(30), || {
        let view = sync_view(daemon)?;
        Ok(
            (view.state.outbox_cursor == last_seq && view.state.outbox_backlog == 0)
                .then_some(view),
        )
    })
    .with_context(|| format!("sync: {:#?}", sync_view(daemon).map(|v| v.state)))
}

/// Seqs received more than once.
fn duplicates(seen: &[u64]) -> Vec<u64> {
    let mut taken = BTreeSet::new();
    seen.iter().copied().filter(|q| !taken.insert(*q)).collect()
}

/// Regression: the outbox lost the events its batch held whenever another branch of its
/// `select!` won (551 of 602 seqs never arrived; only a reconnect republished them).
#[test]
fn subscriber_without_reconnect_sees_every_seq_once_live_and_after_a_restart_with_15000_events()
-> anyhow::Result<()> {
    use rand::Rng;
    let s = setup()?;
    let stop = Arc::new(Mutex::new(false));
    let subscriber = events_subscriber(s.broker.port, stop.clone());
    wait_for("the subscriber", Duration::from_secs(10), || {
        Ok((subscriber.connects() == 1).then_some(()))
    })?;
    let daemon = s.start()?;
    wait_for("the sync to connect", Duration::from_secs(30), || {
        Ok(sync_view(&daemon)?.state.connected.then_some(()))
    })?;
    // 500 walk-ins 0-30 ms apart, as a busy foyer and clerks would make them.
    let mut rng = rand::rng();
    let services = ["ausweis", "meldung", "fuehrerschein"];
    for i in 0..500 {
        execute(
            &daemon,
            Command::WalkIn {
                service: ServiceId::new(services[i % services.len()]),
                priority: 1,
            },
        )?;
        std::thread::sleep(Duration::from_millis(rng.random_range(0..=30)));
    }
    let last_seq = all_events(&daemon)?.last().map_or(0, |r| r.seq);
    assert!(last_seq >= 500, "500 walk-ins made only {last_seq} events");
    wait_for_every_seq(&subscriber, &daemon, last_seq, Duration::from_secs(30))?;
    let view = wait_for_outbox_done(&daemon, last_seq)?;
    assert_eq!(view.state.connections, 1, "the appliance reconnected");
    assert_eq!(subscriber.connects(), 1, "the subscriber reconnected");
    assert_eq!(duplicates(&subscriber.seen()?), Vec::<u64>::new());
    daemon.terminate()?;

    // 15,000 events made while the appliance has no broker configured, then a restart with
    // it: the outbox catches up from its cursor through the log.
    let offline_dir = s.data.parent().context("data dir")?.join("offline");
    std::fs::create_dir_all(&offline_dir)?;
    let offline = write_demo_config(&offline_dir, &s.data)?;
    let daemon = Daemon::start(&offline, &s.data, &[])?;
    let day_start = jiff::Timestamp::now().as_millisecond();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let socket = daemon.socket.clone();
            std::thread::spawn(move || -> anyhow::Result<()> {
                let mut client = leitsystem::control::ControlClient::connect(&socket)?;
                for i in 0..1_875 {
                    let booking = leitsystem::domain::BookingInput {
                        id: leitsystem::domain::BookingId::new(format!("bulk-{t}-{i}")),
                        version: 1,
                        service: ServiceId::new("ausweis"),
                        slot_start: day_start + 3_600_000,
                        duration_minutes: 15,
                        desk: None,
                        personal: None,
                        status: Default::default(),
                        refusal: None,
                    };
                    let response = client.request(&ControlRequest::Execute {
                        request_id: None,
                        command: Command::UpsertBooking { booking },
                    })?;
                    if !response.ok {
                        bail!("booking refused: {:?}", response.error);
                    }
                }
                Ok(())
            })
        })
        .collect();
    for thread in threads {
        thread
            .join()
            .map_err(|_| anyhow::anyhow!("booking thread panicked"))??;
    }
    let last_seq = all_events(&daemon)?.last().map_or(0, |r| r.seq);
    assert!(last_seq >= 15_500, "only {last_seq} events");
    daemon.terminate()?;
    let daemon = s.start()?;
    wait_for_every_seq(&subscriber, &daemon, last_seq, Duration::from_secs(120))?;
    let view = wait_for_outbox_done(&daemon, last_seq)?;
    assert_eq!(view.state.connections, 1, "the appliance reconnected");
    assert_eq!(subscriber.connects(), 1, "the subscriber reconnected");
    assert_eq!(duplicates(&subscriber.seen()?), Vec::<u64>::new());
    let epochs: BTreeSet<String> = subscriber.keyed().into_iter().map(|(e, _)| e).collect();
    assert_eq!(
        epochs.len(),
        1,
        "one log, one epoch across restarts: {epochs:?}"
    );
    daemon.terminate()?;

    // The appliance is reinstalled (a new store; its seqs start at 1 again): a new epoch, so a
    // website that keys events by (epoch, seq) takes them as new.
    let before = subscriber.keyed().len();
    std::fs::remove_dir_all(&s.data)?;
    let daemon = s.start()?;
    walk_in(&daemon, "ausweis")?;
    let new_epoch = wait_for("events of the new log", Duration::from_secs(30), || {
        Ok(subscriber.keyed()[before..]
            .iter()
            .find(|(epoch, _)| !epochs.contains(epoch))
            .map(|(epoch, _)| epoch.clone()))
    })?;
    let last_seq = all_events(&daemon)?.last().map_or(0, |r| r.seq);
    wait_for("every seq of the new log", Duration::from_secs(30), || {
        let got: BTreeSet<u64> = subscriber
            .keyed()
            .into_iter()
            .filter(|(epoch, _)| *epoch == new_epoch)
            .map(|(_, seq)| seq)
            .collect();
        Ok((got == (1..=last_seq).collect()).then_some(()))
    })?;
    if let Ok(mut s) = stop.lock() {
        *s = true;
    }
    daemon.terminate()?;
    Ok(())
}

#[test]
fn broker_restart_mid_load_every_booking_once_every_event_once_by_seq() -> anyhow::Result<()> {
    let mut s = setup()?;
    let stop = Arc::new(Mutex::new(false));
    let seen = events_subscriber(s.broker.port, stop.clone());
    s.publish(10_000, 20)?;
    let daemon = Daemon::start(
        &s.config,
        &s.data,
        &[("RUST_LOG", "warn,leitsystem::sync=info")],
    )?;
    wait_for("the load to start", Duration::from_secs(30), || {
        Ok((sync_view(&daemon)?.state.bookings_applied > 0).then_some(()))
    })?;
    s.broker.stop()?;
    // Check-ins keep working without the broker.
    for _ in 0..5 {
        walk_in(&daemon, "ausweis")?;
    }
    wait_for("the sync to notice", Duration::from_secs(30), || {
        Ok((!sync_view(&daemon)?.state.connected).then_some(()))
    })?;
    s.broker.restart()?;
    wait_in_sync(&daemon, &s.state, Duration::from_secs(120))?;
    let events = all_events(&daemon)?;
    assert_eq!(assert_once_per_version(&events)?, 10_000);
    let last_seq = events.last().map_or(0, |r| r.seq);
    let walk_ins = events
        .iter()
        .filter(|r| matches!(r.event, Event::TicketIssued { .. }))
        .count();
    assert_eq!(walk_ins, 5);
    wait_for_every_seq(&seen, &daemon, last_seq, Duration::from_secs(60))
        .with_context(|| format!("broker log:\n{}", s.broker.log_tail(60)))?;
    if let Ok(mut s) = stop.lock() {
        *s = true;
    }
    // Exactly once by seq: deduplicated, the seqs are 1..=last in arrival order.
    let arrived = seen.seen()?;
    let mut deduplicated = Vec::new();
    let mut taken = BTreeSet::new();
    for seq in &arrived {
        if taken.insert(*seq) {
            deduplicated.push(*seq);
        }
    }
    assert_eq!(deduplicated, (1..=last_seq).collect::<Vec<_>>());
    wait_for_outbox_done(&daemon, last_seq)?;
    daemon.terminate()?;
    Ok(())
}

#[test]
fn sigkill_between_receive_and_ack_redelivers_and_applies_once() -> anyhow::Result<()> {
    let s = setup()?;
    let daemon = s.start()?;
    wait_for("the connection", Duration::from_secs(20), || {
        Ok((sync_view(&daemon)?.state.connected).then_some(()))
    })?;
    // One big snapshot (one message): SIGKILL as soon as the daemon has it.
    s.publish(4_000, 1)?;
    wait_for("the snapshot to arrive", Duration::from_secs(30), || {
        Ok((sync_view(&daemon)?.state.received > 0).then_some(()))
    })?;
    daemon.kill9()?;
    let daemon = s.start()?;
    wait_in_sync(&daemon, &s.state, Duration::from_secs(60))?;
    let events = all_events(&daemon)?;
    assert_eq!(assert_once_per_version(&events)?, 4_000);
    assert_consistent(&daemon)?;

    // The retained snapshot brings a killed daemon's bookings back by itself. Changes are not
    // retained: after a SIGKILL only the persistent session can deliver them again (those
    // received but not acked, and those queued while the daemon was gone). Version 2 of 600
    // bookings (within the broker's queue of 1,000), published as changes only: the
    // retained snapshot stays at version 1. Half while the daemon runs (killed as soon as
    // the first arrives), half while it is gone.
    let mut website = SimState::load(&s.state)?;
    let day = website.days.keys().next().cloned().context("no day")?;
    let bookings: Vec<_> = website.days[&day].values().take(600).cloned().collect();
    let mut lines = Vec::new();
    for mut booking in bookings {
        booking.version = 2;
        website.upsert(booking.clone(), &day);
        let change = Message::change(&website, &booking, &day, rumqttc::QoS::AtLeastOnce)?;
        lines.push(String::from_utf8(change.payload)?);
    }
    website.save(&s.state)?;
    let topic = leitsystem::sync::contract::Topics::new(&website.topic_root, SITE).change();
    let publish = |lines: &[String]| -> anyhow::Result<std::process::Child> {
        let mut publisher = std::process::Command::new(mosquitto_pub_binary()?)
            .args([
                "-p",
                &s.broker.port.to_string(),
                "-q",
                "1",
                "-t",
                &topic,
                "-l",
            ])
            .stdin(std::process::Stdio::piped())
            .spawn()?;
        let mut stdin = publisher.stdin.take().context("mosquitto_pub stdin")?;
        std::io::Write::write_all(&mut stdin, format!("{}\n", lines.join("\n")).as_bytes())?;
        Ok(publisher)
    };
    let wait_published = |mut publisher: std::process::Child| -> anyhow::Result<()> {
        let status = publisher.wait()?;
        anyhow::ensure!(status.success(), "mosquitto_pub failed: {status}");
        Ok(())
    };
    let received_before = sync_view(&daemon)?.state.received;
    let first_half = publish(&lines[..300])?;
    wait_for(
        "the first changes to arrive",
        Duration::from_secs(30),
        || Ok((sync_view(&daemon)?.state.received > received_before).then_some(())),
    )?;
    daemon.kill9()?;
    wait_published(first_half)?;
    wait_published(publish(&lines[300..])?)?;
    let daemon = s.start()?;
    let view = wait_in_sync(&daemon, &s.state, Duration::from_secs(60))?;
    let events = all_events(&daemon)?;
    assert_eq!(
        assert_once_per_version(&events)?,
        4_600,
        "every version once"
    );
    assert!(
        view.state.bookings_applied >= 300,
        "the 300 changes published while the daemon was gone came from its session: {view:#?}"
    );
    assert_consistent(&daemon)?;
    daemon.terminate()?;
    Ok(())
}

/// Waits until the sync reports a connection error while not connected; returns it.
fn wait_for_connection_error(daemon: &Daemon) -> anyhow::Result<String> {
    wait_for("a connection error", Duration::from_secs(20), || {
        let state = sync_view(daemon)?.state;
        Ok(state.last_error.filter(|_| !state.connected))
    })
    .inspect(|error| eprintln!("connection error as `ctl sync` shows it: {error}"))
}

/// Connects over the configured (secured) connection and syncs bookings through it (the same
/// 30 each time: a later run receives them again and finds them stored).
fn syncs_bookings(s: &Setup) -> anyhow::Result<()> {
    let daemon = s.start()?;
    wait_for("the connection", Duration::from_secs(20), || {
        Ok(sync_view(&daemon)?.state.connected.then_some(()))
    })
    .with_context(|| daemon.log_tail())?;
    s.publish(30, 2)?;
    wait_in_sync(&daemon, &s.state, Duration::from_secs(30))?;
    let view = wait_for(
        "the bookings over this connection",
        Duration::from_secs(30),
        || {
            let view = sync_view(&daemon)?;
            Ok((view.state.bookings_applied + view.state.bookings_ignored >= 30).then_some(view))
        },
    )?;
    assert!(view.state.connected, "{view:#?}");
    assert_eq!(view.state.last_error, None, "{view:#?}");
    assert_eq!(view.state.malformed + view.state.bookings_refused, 0);
    daemon.terminate()?;
    Ok(())
}

#[test]
fn tls_with_a_client_certificate_syncs_and_a_wrong_ca_is_a_clear_error() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = TestPki::create(&dir.path().join("pki"))?;
    let s = setup_with(dir, Some(&pki.listener_settings()))?;
    let tls = |ca: &Path| {
        format!(
            "tls = {{ ca_file = \"{}\", client_cert = \"{}\", client_key = \"{}\" }}",
            ca.display(),
            pki.client_cert.display(),
            pki.client_key.display()
        )
    };

    // A CA that did not sign the broker's certificate: refused, with a clear error.
    s.configure(
        &s.broker
            .secure_mqtt_section("127.0.0.1", &tls(&pki.other_ca))?,
    )?;
    let daemon = s.start()?;
    let error = wait_for_connection_error(&daemon)?;
    assert!(
        error.contains("TLS") && error.contains("certificate") && error.contains("ca_file"),
        "{error}"
    );
    wait_for("the logged error", Duration::from_secs(10), || {
        let log = std::fs::read_to_string(&daemon.log)?;
        Ok(log
            .lines()
            .any(|l| l.contains("MQTT connection failed") && l.contains("TLS"))
            .then_some(()))
    })
    .with_context(|| daemon.log_tail())?;
    daemon.terminate()?;

    // The right CA and the client certificate, by IP address and by host name.
    s.configure(&s.broker.secure_mqtt_section("127.0.0.1", &tls(&pki.ca))?)?;
    syncs_bookings(&s)?;
    s.configure(&s.broker.secure_mqtt_section("localhost", &tls(&pki.ca))?)?;
    syncs_bookings(&s)?;

    // Without a client certificate the broker refuses the handshake.
    let no_client = format!("tls = {{ ca_file = \"{}\" }}", pki.ca.display());
    s.configure(&s.broker.secure_mqtt_section("127.0.0.1", &no_client)?)?;
    let daemon = s.start()?;
    let error = wait_for_connection_error(&daemon)?;
    assert!(
        error.contains("CertificateRequired") && error.contains("client_cert"),
        "{error}"
    );
    daemon.terminate()?;
    Ok(())
}

#[test]
fn username_and_password_sync_and_wrong_ones_are_a_clear_error() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let listener = password_listener(&dir.path().join("auth"), "rathaus", "s3cret pass")?;
    let s = setup_with(dir, Some(&listener))?;

    s.configure(
        &s.broker
            .secure_mqtt_section("127.0.0.1", "username = \"rathaus\"\npassword = \"wrong\"")?,
    )?;
    let daemon = s.start()?;
    let error = wait_for_connection_error(&daemon)?;
    assert!(
        error.contains("refused") && error.contains("mqtt.password"),
        "{error}"
    );
    daemon.terminate()?;

    s.configure(&s.broker.secure_mqtt_section(
        "127.0.0.1",
        "username = \"rathaus\"\npassword = \"s3cret pass\"",
    )?)?;
    syncs_bookings(&s)?;
    Ok(())
}

/// A walk-in is refused because the day waits for a synchronised clock (`when`: for the message).
fn assert_walk_in_refused_for_the_clock(daemon: &Daemon, when: &str) -> anyhow::Result<()> {
    let refused = walk_in(daemon, "ausweis")
        .err()
        .with_context(|| format!("a walk-in was accepted {when} on an unsynchronised clock"))?;
    assert!(
        refused.to_string().contains("clock_unsynchronised"),
        "{refused}"
    );
    Ok(())
}

/// A service day starts only on a synchronised clock (`[clock] require_synchronised`, here with
/// the flag file systemd-timesyncd writes): until then a walk-in is refused with the reason,
/// the website's bookings wait at the broker (none stored, none refused, none lost) and the
/// sync says so; once the flag exists the day starts and every booking arrives once. After a
/// restart without the flag (a reboot) the day waits again until an admin confirms the time,
/// and its numbers go on.
#[test]
fn a_day_waits_for_a_synchronised_clock_and_loses_no_booking_meanwhile() -> anyhow::Result<()> {
    let s = setup()?;
    let flag = s._dir.path().join("synchronized");
    let text = std::fs::read_to_string(&s.config)?.replace(
        "[clock]\nrequire_synchronised = false\n",
        &format!(
            "[clock]\nrequire_synchronised = true\nsynchronised_when = \"{}\"\n",
            flag.display()
        ),
    );
    assert!(
        text.contains("require_synchronised = true"),
        "the demo config has no [clock] section to turn on"
    );
    std::fs::write(&s.config, text)?;
    let state = |daemon: &Daemon| -> anyhow::Result<leitsystem::control::StateView> {
        request(daemon, &ControlRequest::State)?
            .state
            .context("no state in the answer")
    };
    let daemon = s.start()?;
    wait_for("the connection", Duration::from_secs(20), || {
        Ok(sync_view(&daemon)?.state.connected.then_some(()))
    })
    .with_context(|| daemon.log_tail())?;

    assert_walk_in_refused_for_the_clock(&daemon, "at the start")?;
    let wait = state(&daemon)?
        .clock_wait
        .context("no clock_wait in the state")?;
    assert!(
        wait.reason.contains(&flag.display().to_string()),
        "{wait:?}"
    );

    s.publish(30, 2)?;
    let waiting = wait_for("the bookings to wait", Duration::from_secs(20), || {
        let view = sync_view(&daemon)?;
        Ok(view.state.waiting_for_clock.then_some(view))
    })
    .with_context(|| daemon.log_tail())?;
    assert_eq!(
        waiting.state.bookings_refused + waiting.state.malformed,
        0,
        "{waiting:#?}"
    );
    assert!(
        all_events(&daemon)?.is_empty(),
        "something was stored before the day started"
    );

    std::fs::write(&flag, "")?;
    wait_in_sync(&daemon, &s.state, Duration::from_secs(30))?;
    let view = wait_for("the sync to stop waiting", Duration::from_secs(10), || {
        let view = sync_view(&daemon)?;
        Ok((!view.state.waiting_for_clock).then_some(view))
    })?;
    assert_eq!(
        view.state.bookings_refused + view.state.malformed,
        0,
        "{view:#?}"
    );
    assert_eq!(assert_once_per_version(&all_events(&daemon)?)?, 30);
    assert_eq!(walk_in(&daemon, "ausweis")?, "A-001");
    assert!(state(&daemon)?.clock_wait.is_none());
    daemon.terminate()?;

    // A reboot: the flag is gone (it lives in /run), the day waits again.
    std::fs::remove_file(&flag)?;
    let daemon = s.start()?;
    assert_walk_in_refused_for_the_clock(&daemon, "after a restart")?;
    execute(&daemon, Command::ConfirmClock)?;
    assert_eq!(walk_in(&daemon, "ausweis")?, "A-002", "the day goes on");
    assert!(state(&daemon)?.clock_wait.is_none());
    let refused = execute(&daemon, Command::ConfirmClock)
        .err()
        .context("a second confirmation was accepted")?;
    assert!(refused.to_string().contains("no_clock_jump"), "{refused}");
    daemon.terminate()?;
    Ok(())
}
