//! Booking sync with the city website over MQTT (rumqttc), contract v1 (`daemon/docs/mqtt.md`).
//!
//! Three tasks under the daemon's shutdown token:
//! - **connection** owns the rumqttc `EventLoop` and polls it continuously (it only progresses
//!   while polled), sleeping with exponential backoff between failed connection attempts. It
//!   hands inbound publishes to the processor, maps outgoing packet ids to event sequence
//!   numbers and reports PubAcks to the outbox. After a disconnect it drops what rumqttc kept
//!   in RAM (`EventLoop::clean` + `pending.clear()`): the outbox republishes from its cursor.
//! - **processor** takes the publishes that are ready (up to [`MAX_BATCH`], their payloads
//!   within [`INBOUND_BUDGET_KIB`]), sends their bookings to the engine in chunks of
//!   [`CHUNK_COMMANDS`] (`execute_many`; the engine group-commits them with one fsync), then
//!   acknowledges them in receive order — only after their effect is durable (manual acks).
//!   It compares the website's per-day count/digest with the appliance's own (kept up to date
//!   by the engine) and re-fetches a day's retained snapshot on a mismatch.
//! - **outbox** publishes the events in seq order from a persisted cursor, through an
//!   [`EventFeed`](crate::daemon::EventFeed) (the log after the cursor, then the events as they
//!   are committed), batched into messages of consecutive events (QoS 1, at most
//!   [`OUTBOX_WINDOW`] messages unacknowledged), and renews the subscriptions and the retained
//!   status after every ConnAck.

/// The MQTT contract (topics, wire types, validation): lives in the core crate.
pub use leitsystem_core::contract;
#[cfg(test)]
mod contract_schema_tests;
pub mod outbox;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use jiff::civil::Date;
use rumqttc::{
    AsyncClient, Event as MqttEvent, EventLoop, Incoming, LastWill, MqttOptions, Outgoing, Publish,
    QoS, SubscribeFilter, TlsConfiguration, Transport,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::catalog::Catalog;
use crate::config::MqttConfig;
use crate::daemon::{EngineHandle, ExecuteError};
use crate::domain::{BookingInput, Command, CommandError, CommandRequest, Outcome};
use contract::{InboundTopic, StatusMessage, Topics};

/// Most inbound publishes handled by one batch (one round of engine commits, then acks).
pub const MAX_BATCH: usize = 256;
/// Most booking commands collected into one batch before it is executed.
pub const MAX_BATCH_COMMANDS: usize = 1_024;
/// Booking commands sent to the engine as one message ([`EngineHandle::execute_many`]).
pub const CHUNK_COMMANDS: usize = 256;
/// Chunks executing at once: two keep the engine busy (one deciding, one committing).
pub const CHUNKS_IN_FLIGHT: usize = 2;
/// Inbound payload bytes (in KiB) received and not yet acknowledged. When they are used up
/// the connection task stops reading, and TCP holds the rest at the broker.
pub const INBOUND_BUDGET_KIB: u32 = 2_048;
/// Most outbound event messages (each up to [`contract::EVENTS_PER_MESSAGE`] events)
/// published and not yet acknowledged by the broker.
pub const OUTBOX_WINDOW: usize = 8;
/// How long the outbox waits for more events to fill a message once it has one (a commit's
/// events are broadcast one by one; without it a bulk sync went out as thousands of tiny
/// messages and took 60 % longer).
pub const OUTBOX_LINGER: Duration = Duration::from_millis(20);
/// Capacity of the channel from the connection task to the processor (its bytes are bounded
/// by [`INBOUND_BUDGET_KIB`]).
pub const INBOUND_CAPACITY: usize = 1024;
/// The largest packet MQTT can frame (its remaining-length field's maximum).
pub const MQTT_MAX_REMAINING_LENGTH: usize = 268_435_455;
/// Capacity of rumqttc's request channel.
pub const REQUEST_CAPACITY: usize = 1024;
/// How often the outbox cursor is written at most.
pub const CURSOR_PERSIST_INTERVAL: Duration = Duration::from_millis(300);

/// Counters and connection state of the sync, for `ctl sync` (and later `/metrics`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncState {
    /// `[mqtt]` is configured.
    pub enabled: bool,
    /// Connected to the broker now.
    pub connected: bool,
    /// The last connection or protocol error.
    pub last_error: Option<String>,
    /// ConnAcks received since start.
    pub connections: u64,
    /// Inbound publishes received.
    pub received: u64,
    /// Booking changes stored (a newer version).
    pub bookings_applied: u64,
    /// Booking changes ignored (the stored version is the same or newer).
    pub bookings_ignored: u64,
    /// Bookings this appliance cannot take (e.g. an unknown service, a desk that does not
    /// serve it, a field outside the contract), stored as refused so their day still matches;
    /// plus the few the engine could not store at all (an empty id, a slot before today).
    pub bookings_refused: u64,
    /// Payloads rejected as malformed or violating the contract (acked and dropped).
    pub malformed: u64,
    /// Retained snapshots cleared by the website (empty payload).
    pub cleared: u64,
    /// Of those, snapshots of today or a later day: not a deletion (bookings go only by
    /// their tombstones), so their bookings stay; logged as a website error.
    #[serde(default)]
    pub cleared_upcoming: u64,
    /// Day count/digest mismatches found.
    pub gaps_detected: u64,
    /// Mismatched days that match again.
    pub gaps_repaired: u64,
    /// Day snapshots re-fetched by re-subscribing.
    pub refetches: u64,
    /// Days that currently do not match the website.
    pub mismatched_days: Vec<String>,
    /// Events the broker acknowledged since start.
    pub events_published: u64,
    /// Bookings wait unacknowledged at the broker: the service day has not started for an
    /// unsynchronised clock ([`crate::clock::DayGate`]).
    #[serde(default)]
    pub waiting_for_clock: bool,
    /// Highest seq acknowledged with everything before it (persisted).
    pub outbox_cursor: u64,
    /// Events in the log not yet acknowledged.
    pub outbox_backlog: u64,
}

/// Shared view of the sync's state.
#[derive(Debug, Clone, Default)]
pub struct SyncStatus {
    inner: Arc<Mutex<SyncState>>,
}

impl SyncStatus {
    /// A status for a daemon without `[mqtt]`.
    pub fn disabled() -> Self {
        Self::default()
    }

    /// A copy of the current state.
    pub fn snapshot(&self) -> SyncState {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SyncState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update(&self, f: impl FnOnce(&mut SyncState)) {
        f(&mut self.lock());
    }
}

/// One day's count and digest as `ctl sync` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayView {
    /// Bookings of the day (any status).
    pub count: u64,
    /// Digest (contract v1).
    pub digest: String,
}

/// What `ctl sync` answers: the state plus the appliance's own per-day counts and digests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncView {
    /// Connection state and counters.
    #[serde(flatten)]
    pub state: SyncState,
    /// Per local day (`YYYY-MM-DD`).
    pub days: BTreeMap<String, DayView>,
}

/// What an outgoing QoS 1 publish was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    /// Events `first..=last`.
    Events(u64, u64),
    Other,
}

/// Bookkeeping shared by the connection task and the publishers: which packet id carries
/// which event, per connection generation.
#[derive(Debug, Default)]
struct Wire {
    generation: u64,
    connected: bool,
    /// Tags of publishes handed to rumqttc, in order, not yet written.
    queued: VecDeque<Tag>,
    by_pkid: HashMap<u16, Tag>,
    /// Event messages the broker acknowledged: `(first, last)` seqs.
    acked: Vec<(u64, u64)>,
}

type SharedWire = Arc<Mutex<Wire>>;

fn lock_wire(wire: &SharedWire) -> std::sync::MutexGuard<'_, Wire> {
    wire.lock().unwrap_or_else(|p| p.into_inner())
}

struct Inbound {
    generation: u64,
    publish: Publish,
    /// The message exceeded `mqtt.max_packet_bytes` (its size; the payload was dropped): it is
    /// acknowledged in order and counted as malformed.
    oversized: Option<usize>,
    /// This payload's share of [`INBOUND_BUDGET_KIB`], given back when it is dropped.
    _budget: tokio::sync::OwnedSemaphorePermit,
}

/// Everything the tasks share.
#[derive(Clone)]
struct Ctx {
    client: AsyncClient,
    wire: SharedWire,
    status: SyncStatus,
    topics: Arc<Topics>,
    site: Arc<str>,
    catalog: Arc<Catalog>,
    engine: EngineHandle,
    acks: Arc<Notify>,
    stop: CancellationToken,
    /// `mqtt.max_packet_bytes`.
    max_packet_bytes: usize,
}

/// rumqttc options from the config.
pub fn mqtt_options(
    mqtt: &MqttConfig,
    site: &str,
    config_dir: &Path,
) -> anyhow::Result<MqttOptions> {
    let client_id = mqtt
        .client_id
        .as_ref()
        .map(|c| c.get_ref().clone())
        .unwrap_or_else(|| format!("leitsystemd-{site}"));
    let port = u16::try_from(*mqtt.port.get_ref()).context("mqtt.port")?;
    let mut options = MqttOptions::new(client_id, mqtt.host.get_ref().clone(), port);
    let topics = Topics::new(mqtt.topic_root.get_ref(), site);
    let offline = serde_json::to_vec(&StatusMessage {
        v: contract::CONTRACT_VERSION,
        state: "offline".to_string(),
        last_seq: None,
        epoch: None,
        software: None,
    })?;
    let packet = usize::try_from(*mqtt.max_packet_bytes.get_ref()).context("max_packet_bytes")?;
    options
        .set_keep_alive(Duration::from_secs(
            u64::try_from(*mqtt.keep_alive_seconds.get_ref()).unwrap_or(30),
        ))
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_max_packet_size(packet, packet)
        .set_inflight(u16::try_from(OUTBOX_WINDOW + 8).unwrap_or(u16::MAX))
        .set_last_will(LastWill::new(
            topics.status(),
            offline,
            QoS::AtLeastOnce,
            true,
        ));
    if let Some(user) = &mqtt.username {
        options.set_credentials(user.clone(), mqtt.password.clone().unwrap_or_default());
    }
    if let Some(tls) = &mqtt.tls {
        // rustls needs a process-wide crypto provider; ring is the one we build with.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let read = |p: &Path| {
            let path = if p.is_absolute() {
                p.to_path_buf()
            } else {
                config_dir.join(p)
            };
            std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
        };
        let ca = read(&tls.ca_file)?;
        let client_auth = match (&tls.client_cert, &tls.client_key) {
            (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
            _ => None,
        };
        options.set_transport(Transport::Tls(TlsConfiguration::Simple {
            ca,
            alpn: None,
            client_auth,
        }));
    }
    Ok(options)
}

/// Starts the sync's tasks on `tracker`; they stop on `stop`.
#[allow(clippy::too_many_arguments)]
pub fn start(
    mqtt: &MqttConfig,
    config_dir: &Path,
    data_dir: &Path,
    catalog: Arc<Catalog>,
    engine: EngineHandle,
    status: SyncStatus,
    stop: CancellationToken,
    tracker: &TaskTracker,
) -> anyhow::Result<()> {
    let options = mqtt_options(mqtt, &catalog.site_id, config_dir)?;
    let cursor = outbox::Cursor::in_dir(data_dir, engine.log_epoch());
    let mut acked = cursor.load().map_err(anyhow::Error::msg)?;
    if acked > engine.last_seq() {
        // The store is older than the cursor (an old copy of the data directory put back by
        // hand; `leitsystemd restore` gives the store a new epoch instead, which resets the
        // cursor): events from the log's end on go out, else new ones would wait until the
        // log passed the old cursor. Their seqs up to the old cursor were seen under this
        // epoch before, so a website following the contract drops those.
        tracing::warn!(
            cursor = acked,
            last_seq = engine.last_seq(),
            "the outbox cursor is beyond the event log (restored store?); publishing from the \
             log's end, and the website drops seqs it saw before the restore"
        );
        acked = engine.last_seq();
    }
    let (client, eventloop) = AsyncClient::new(options, REQUEST_CAPACITY);
    status.update(|s| {
        s.enabled = true;
        s.outbox_cursor = acked;
    });
    let ctx = Ctx {
        client,
        wire: Arc::new(Mutex::new(Wire::default())),
        status,
        topics: Arc::new(Topics::new(mqtt.topic_root.get_ref(), &catalog.site_id)),
        site: Arc::from(catalog.site_id.as_str()),
        catalog,
        engine,
        acks: Arc::new(Notify::new()),
        stop,
        max_packet_bytes: usize::try_from(*mqtt.max_packet_bytes.get_ref()).unwrap_or(usize::MAX),
    };
    let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_CAPACITY);
    let (connected_tx, connected_rx) = watch::channel(None);
    let backoff = (
        Duration::from_millis(u64::try_from(*mqtt.reconnect_min_ms.get_ref()).unwrap_or(500)),
        Duration::from_millis(u64::try_from(*mqtt.reconnect_max_ms.get_ref()).unwrap_or(30_000)),
    );
    tracing::info!(
        broker = %format!("{}:{}", mqtt.host.get_ref(), mqtt.port.get_ref()),
        prefix = ctx.topics.prefix(),
        outbox_cursor = acked,
        "booking sync starting"
    );
    tracker.spawn(connection_task(
        ctx.clone(),
        eventloop,
        inbound_tx,
        connected_tx,
        backoff,
    ));
    tracker.spawn(processor_task(ctx.clone(), inbound_rx));
    tracker.spawn(outbox_task(ctx, connected_rx, cursor, acked));
    Ok(())
}

/// A connection error as the operator needs it: what failed and which setting to check.
pub fn describe_connection_error(e: &rumqttc::ConnectionError) -> String {
    use rumqttc::{ConnectReturnCode as Code, ConnectionError as E};
    match e {
        E::ConnectionRefused(Code::BadUserNamePassword | Code::NotAuthorized) => {
            "the broker refused the connection: user name or password not accepted or not \
             authorised (check mqtt.username and mqtt.password)"
                .to_string()
        }
        E::ConnectionRefused(code) => format!("the broker refused the connection: {code:?}"),
        E::Tls(tls) => tls_failure(&tls.to_string()),
        // A broker that rejects our certificate (or its absence) says so with a TLS alert
        // after the handshake, while rumqttc already reads MQTT packets.
        other => {
            let text = other.to_string();
            let lower = text.to_lowercase();
            if lower.contains("certificate") || lower.contains("fatal alert") {
                tls_failure(&text)
            } else {
                text
            }
        }
    }
}

fn tls_failure(detail: &str) -> String {
    format!(
        "TLS connection to the broker failed: {detail} (check mqtt.tls.ca_file, and \
         mqtt.tls.client_cert/client_key if the broker requires a client certificate)"
    )
}

/// Drops everything rumqttc holds in RAM for the connection that just ended.
fn forget_connection(eventloop: &mut EventLoop, wire: &SharedWire) {
    let mut w = lock_wire(wire);
    // Moves in-flight publishes and queued requests into `pending` ...
    eventloop.clean();
    // ... which we drop: the outbox republishes from its cursor, the broker redelivers
    // unacknowledged inbound messages, subscriptions are renewed after the next ConnAck.
    eventloop.pending.clear();
    w.generation += 1;
    w.connected = false;
    w.queued.clear();
    w.by_pkid.clear();
}

async fn connection_task(
    ctx: Ctx,
    mut eventloop: EventLoop,
    inbound: mpsc::Sender<Inbound>,
    connected: watch::Sender<Option<u64>>,
    (backoff_min, backoff_max): (Duration, Duration),
) {
    let mut backoff = backoff_min;
    let mut failures = 0u64;
    let budget = Arc::new(tokio::sync::Semaphore::new(INBOUND_BUDGET_KIB as usize));
    // `mqtt.max_packet_bytes`. rumqttc drops the connection on a larger packet, and the broker
    // redelivers it after every reconnect (persistent session): one oversized message stopped
    // the sync for good. So the next connection accepts it once, to acknowledge and drop it.
    // (The same limit applies to what we send.)
    let configured = eventloop.mqtt_options.max_packet_size();
    let mut accepting_oversized = false;
    loop {
        let polled = tokio::select! {
            _ = ctx.stop.cancelled() => break,
            polled = eventloop.poll() => polled,
        };
        match polled {
            Ok(MqttEvent::Incoming(Incoming::ConnAck(ack))) => {
                backoff = backoff_min;
                failures = 0;
                let generation = {
                    let mut w = lock_wire(&ctx.wire);
                    w.generation += 1;
                    w.connected = true;
                    w.queued.clear();
                    w.by_pkid.clear();
                    w.generation
                };
                ctx.status.update(|s| {
                    s.connected = true;
                    s.connections += 1;
                });
                tracing::info!(
                    session_present = ack.session_present,
                    "connected to the MQTT broker"
                );
                let _ = connected.send(Some(generation));
            }
            Ok(MqttEvent::Incoming(Incoming::Publish(mut publish))) => {
                // The packet's remaining length, as rumqttc measures it against the limit.
                let packet_id = if publish.qos == QoS::AtMostOnce { 0 } else { 2 };
                let size = 2 + publish.topic.len() + packet_id + publish.payload.len();
                let oversized = (size > configured).then_some(size);
                if let Some(size) = oversized {
                    tracing::error!(
                        topic = %publish.topic,
                        size,
                        limit = configured,
                        "dropped a message larger than mqtt.max_packet_bytes (acknowledged, \
                         counted as malformed)"
                    );
                    publish.payload = Default::default();
                    if accepting_oversized {
                        accepting_oversized = false;
                        eventloop
                            .mqtt_options
                            .set_max_packet_size(configured, configured);
                    }
                }
                let kib = u32::try_from(publish.payload.len() / 1024)
                    .unwrap_or(u32::MAX)
                    .clamp(1, INBOUND_BUDGET_KIB);
                let permit = tokio::select! {
                    _ = ctx.stop.cancelled() => break,
                    permit = budget.clone().acquire_many_owned(kib) => match permit {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                };
                let generation = lock_wire(&ctx.wire).generation;
                let item = Inbound {
                    generation,
                    publish,
                    oversized,
                    _budget: permit,
                };
                tokio::select! {
                    _ = ctx.stop.cancelled() => break,
                    sent = inbound.send(item) => if sent.is_err() { break },
                }
            }
            Ok(MqttEvent::Incoming(Incoming::PubAck(ack))) => {
                let mut w = lock_wire(&ctx.wire);
                if let Some(Tag::Events(first, last)) = w.by_pkid.remove(&ack.pkid) {
                    w.acked.push((first, last));
                    drop(w);
                    ctx.acks.notify_one();
                }
            }
            Ok(MqttEvent::Outgoing(Outgoing::Publish(pkid))) => {
                let mut w = lock_wire(&ctx.wire);
                if let Some(tag) = w.queued.pop_front() {
                    if pkid != 0 {
                        w.by_pkid.insert(pkid, tag);
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                if let rumqttc::ConnectionError::MqttState(rumqttc::StateError::Deserialization(
                    rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(size),
                )) = &e
                    && *size <= MQTT_MAX_REMAINING_LENGTH
                {
                    tracing::warn!(
                        size,
                        limit = configured,
                        "the broker sent a message larger than mqtt.max_packet_bytes; the next \
                         connection takes it once to drop it"
                    );
                    accepting_oversized = true;
                    eventloop
                        .mqtt_options
                        .set_max_packet_size(*size + 16, configured);
                }
                forget_connection(&mut eventloop, &ctx.wire);
                let _ = connected.send(None);
                failures += 1;
                let message = describe_connection_error(&e);
                ctx.status.update(|s| {
                    s.connected = false;
                    s.last_error = Some(message.clone());
                });
                if failures == 1 || failures % 10 == 0 {
                    tracing::warn!(error = %message, retry_in = ?backoff, failures, "MQTT connection failed");
                } else {
                    tracing::debug!(error = %message, retry_in = ?backoff, "MQTT connection failed");
                }
                tokio::select! {
                    _ = ctx.stop.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(backoff_max);
            }
        }
    }
    // Shutting down: say so (a clean disconnect suppresses the last will), then disconnect.
    let connected_now = lock_wire(&ctx.wire).connected;
    if connected_now {
        let offline = serde_json::to_vec(&StatusMessage {
            v: contract::CONTRACT_VERSION,
            state: "offline".to_string(),
            last_seq: None,
            epoch: None,
            software: None,
        })
        .unwrap_or_default();
        let _ = ctx
            .client
            .try_publish(ctx.topics.status(), QoS::AtLeastOnce, true, offline);
        let _ = ctx.client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                match eventloop.poll().await {
                    Ok(MqttEvent::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
    }
    ctx.status.update(|s| s.connected = false);
    tracing::info!("booking sync stopped");
}

/// Publishes with QoS 1 on the connection `generation`, tagging the packet; `false` when that
/// connection is gone.
async fn publish_tagged(
    ctx: &Ctx,
    generation: u64,
    tag: Tag,
    topic: &str,
    retain: bool,
    payload: Vec<u8>,
) -> bool {
    loop {
        {
            let mut w = lock_wire(&ctx.wire);
            if w.generation != generation || !w.connected {
                return false;
            }
            w.queued.push_back(tag);
            match ctx
                .client
                .try_publish(topic, QoS::AtLeastOnce, retain, payload.clone())
            {
                Ok(()) => return true,
                Err(_) => {
                    w.queued.pop_back();
                }
            }
        }
        // The request channel is full: let the connection task drain it.
        tokio::select! {
            _ = ctx.stop.cancelled() => return false,
            _ = tokio::time::sleep(Duration::from_millis(5)) => {}
        }
    }
}

async fn outbox_task(
    ctx: Ctx,
    mut connected: watch::Receiver<Option<u64>>,
    cursor_file: outbox::Cursor,
    mut cursor: u64,
) {
    let mut persisted = cursor;
    let mut last_persist = Instant::now();
    // A message must fit the packet limit too (rumqttc refuses to send a larger one and drops
    // the connection): topic, header and packet id on top of the payload.
    let max_message_bytes = ctx
        .max_packet_bytes
        .saturating_sub(ctx.topics.events().len() + 16)
        .clamp(1, contract::MAX_EVENT_MESSAGE_BYTES);
    // Acknowledged messages beyond the cursor: first seq -> last seq.
    let mut acked_above: BTreeMap<u64, u64> = BTreeMap::new();
    'session: loop {
        let generation = loop {
            if let Some(generation) = *connected.borrow_and_update() {
                break generation;
            }
            tokio::select! {
                _ = ctx.stop.cancelled() => break 'session,
                changed = connected.changed() => if changed.is_err() { break 'session },
            }
        };
        // Subscriptions are renewed after every ConnAck, with or without a session; the
        // broker then (re)sends every retained day snapshot.
        let filters = vec![
            SubscribeFilter::new(ctx.topics.all_days(), QoS::AtLeastOnce),
            SubscribeFilter::new(ctx.topics.change(), QoS::AtLeastOnce),
        ];
        if let Err(e) = ctx.client.subscribe_many(filters).await {
            tracing::warn!(error = %e, "cannot subscribe");
        }
        let online = serde_json::to_vec(&StatusMessage {
            v: contract::CONTRACT_VERSION,
            state: "online".to_string(),
            last_seq: Some(ctx.engine.last_seq()),
            epoch: Some(ctx.engine.log_epoch().to_string()),
            software: Some(format!("leitsystemd {}", env!("CARGO_PKG_VERSION"))),
        })
        .unwrap_or_default();
        publish_tagged(
            &ctx,
            generation,
            Tag::Other,
            &ctx.topics.status(),
            true,
            online,
        )
        .await;
        // Everything after the cursor goes out again, in order: from the log, then as it is
        // committed (a feed that keeps up never reads the log back).
        let mut feed = ctx.engine.feed_from(cursor + 1);
        // Messages not yet acknowledged: first seq -> last seq.
        let mut in_flight: BTreeMap<u64, u64> = BTreeMap::new();
        acked_above.clear();
        loop {
            // Acknowledgements.
            let acked = std::mem::take(&mut lock_wire(&ctx.wire).acked);
            let mut published = 0;
            for (first, last) in acked {
                if in_flight.remove(&first) == Some(last) {
                    published += last - first + 1;
                    if first > cursor {
                        acked_above.insert(first, last);
                    }
                }
            }
            while let Some(last) = acked_above.remove(&(cursor + 1)) {
                cursor = last;
            }
            if cursor != persisted
                && (last_persist.elapsed() >= CURSOR_PERSIST_INTERVAL || ctx.stop.is_cancelled())
            {
                // fsync blocks: off the async workers.
                let file = cursor_file.clone();
                match tokio::task::spawn_blocking(move || file.store(cursor)).await {
                    Ok(Ok(())) => persisted = cursor,
                    Ok(Err(e)) => tracing::warn!(error = %e, "cannot write the outbox cursor"),
                    Err(e) => tracing::warn!(error = %e, "the cursor write task died"),
                }
                last_persist = Instant::now();
            }
            ctx.status.update(|s| {
                s.events_published += published;
                s.outbox_cursor = cursor;
                s.outbox_backlog = ctx.engine.last_seq().saturating_sub(cursor);
            });
            if ctx.stop.is_cancelled() {
                break 'session;
            }
            if *connected.borrow() != Some(generation) {
                continue 'session;
            }
            // Publish what the window allows.
            let room = in_flight.len() < OUTBOX_WINDOW;
            tokio::select! {
                _ = ctx.stop.cancelled() => {}
                _ = ctx.acks.notified() => {}
                _ = connected.changed() => {}
                // Cancel-safe: a batch being filled when another branch wins stays in the feed.
                records = feed.recv_batch(contract::EVENTS_PER_MESSAGE, OUTBOX_LINGER), if room => {
                    let Some(records) = records else {
                        break 'session;
                    };
                    let batches = contract::encode_event_batches(
                        &ctx.site,
                        ctx.engine.log_epoch(),
                        &records,
                        contract::EVENTS_PER_MESSAGE,
                        max_message_bytes,
                    );
                    drop(records);
                    for batch in batches {
                        if !publish_tagged(
                            &ctx,
                            generation,
                            Tag::Events(batch.first, batch.last),
                            &ctx.topics.events(),
                            false,
                            batch.payload,
                        )
                        .await
                        {
                            continue 'session;
                        }
                        in_flight.insert(batch.first, batch.last);
                    }
                }
                _ = tokio::time::sleep(CURSOR_PERSIST_INTERVAL) => {}
            }
        }
    }
    if cursor != persisted {
        if let Err(e) = cursor_file.store(cursor) {
            tracing::warn!(error = %e, "cannot write the outbox cursor");
        }
    }
}

/// What one inbound publish asked for, after parsing.
enum Parsed {
    /// Nothing to execute (malformed, unknown topic, cleared snapshot); just ack.
    Nothing,
    Snapshot(contract::ValidSnapshot),
    Change(contract::ValidChange),
}

#[derive(Default)]
struct ItemResult {
    applied: u64,
    /// A booking could not be stored (the daemon is stopping or the store failed): this
    /// publish and the ones after it are not acknowledged.
    failed: bool,
}

/// The processor's memory of days that did not match.
#[derive(Default)]
struct GapState {
    /// Day -> the website digest it did not match.
    mismatched: BTreeMap<Date, String>,
    /// Day -> the website digest a re-fetch was asked for (once per digest, so a snapshot
    /// the appliance cannot match does not loop).
    refetched: BTreeMap<Date, String>,
}

async fn processor_task(ctx: Ctx, mut inbound: mpsc::Receiver<Inbound>) {
    let mut gaps = GapState::default();
    let mut batch: Vec<Inbound> = Vec::new();
    loop {
        if batch.is_empty() {
            let first = tokio::select! {
                _ = ctx.stop.cancelled() => return,
                first = inbound.recv() => match first {
                    Some(first) => first,
                    None => return,
                },
            };
            batch.push(first);
        }
        while batch.len() < MAX_BATCH {
            match inbound.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        match process_batch(&ctx, std::mem::take(&mut batch), &mut gaps).await {
            Some(rest) => batch = rest,
            None => return,
        }
    }
}

fn parse(ctx: &Ctx, item: &Inbound) -> Result<Parsed, String> {
    let publish = &item.publish;
    if let Some(size) = item.oversized {
        return Err(format!(
            "{size} bytes exceed mqtt.max_packet_bytes ({})",
            ctx.max_packet_bytes
        ));
    }
    let calendar = &ctx.catalog.calendar;
    match ctx.topics.classify(&publish.topic) {
        InboundTopic::DaySnapshot(day) => {
            if publish.payload.is_empty() {
                let today = calendar.day_of(crate::clock::Clock::now(&crate::clock::SystemClock));
                let upcoming = day >= today;
                if upcoming {
                    tracing::warn!(
                        %day,
                        "the website cleared the snapshot of a day that has not passed; its \
                         bookings stay (only tombstones delete bookings)"
                    );
                }
                ctx.status.update(|s| {
                    s.cleared += 1;
                    s.cleared_upcoming += u64::from(upcoming);
                });
                return Ok(Parsed::Nothing);
            }
            contract::parse_snapshot(&publish.payload, &ctx.site, day, calendar)
                .map(Parsed::Snapshot)
        }
        InboundTopic::Change => {
            contract::parse_change(&publish.payload, calendar).map(Parsed::Change)
        }
        InboundTopic::Unknown => Err("not a topic of contract v1".to_string()),
    }
}

/// Handles one batch (or its first part, up to [`MAX_BATCH_COMMANDS`] bookings); returns the
/// publishes left for the next round, `None` when the sync must stop.
async fn process_batch(
    ctx: &Ctx,
    batch: Vec<Inbound>,
    gaps: &mut GapState,
) -> Option<Vec<Inbound>> {
    let mut parsed = Vec::with_capacity(batch.len());
    let mut commands: Vec<(usize, BookingInput)> = Vec::new();
    for (index, item) in batch.iter().enumerate() {
        let mut p = match parse(ctx, item) {
            Ok(p) => p,
            Err(reason) => {
                tracing::warn!(topic = %item.publish.topic, %reason, "rejected a malformed MQTT payload");
                ctx.status.update(|s| s.malformed += 1);
                Parsed::Nothing
            }
        };
        match &mut p {
            Parsed::Snapshot(s) => {
                // Moved, not copied: only the day, count and digest are needed later.
                commands.extend(
                    std::mem::take(&mut s.bookings)
                        .into_iter()
                        .map(|b| (index, b)),
                );
            }
            Parsed::Change(c) => commands.push((index, c.booking.clone())),
            Parsed::Nothing => {}
        }
        parsed.push(p);
        ctx.status.update(|s| s.received += 1);
        if commands.len() > MAX_BATCH_COMMANDS {
            // Bounded: the rest of the batch waits for the next round (unacked, in order).
            break;
        }
    }
    // Execute the bookings in chunks, [`CHUNKS_IN_FLIGHT`] at a time: the engine commits
    // them in groups with one fsync.
    let mut results: Vec<ItemResult> = parsed.iter().map(|_| ItemResult::default()).collect();
    let mut running = tokio::task::JoinSet::new();
    // The publishes of each running chunk, so a chunk whose task died (a panic) fails them:
    // never acknowledged unstored.
    let mut chunk_items: BTreeMap<tokio::task::Id, Vec<usize>> = BTreeMap::new();
    let mut commands = commands.into_iter().peekable();
    let mut clock_refused = false;
    loop {
        while running.len() < CHUNKS_IN_FLIGHT && commands.peek().is_some() {
            let mut origin = Vec::with_capacity(CHUNK_COMMANDS);
            let mut requests = Vec::with_capacity(CHUNK_COMMANDS);
            for (index, booking) in commands.by_ref().take(CHUNK_COMMANDS) {
                origin.push((index, booking.id.clone()));
                requests.push(CommandRequest {
                    request_id: None,
                    source: "mqtt".to_string(),
                    command: Command::UpsertBooking { booking },
                });
            }
            let engine = ctx.engine.clone();
            let items = origin.iter().map(|(index, _)| *index).collect();
            let task = running.spawn(async move { (origin, engine.execute_many(requests).await) });
            chunk_items.insert(task.id(), items);
        }
        let Some(joined) = running.join_next_with_id().await else {
            break;
        };
        let (origin, outcomes) = match joined {
            Ok((id, done)) => {
                chunk_items.remove(&id);
                done
            }
            Err(e) => {
                tracing::error!(error = %e, "a booking chunk's task died; its messages are not acknowledged");
                for index in chunk_items.remove(&e.id()).unwrap_or_default() {
                    if let Some(r) = results.get_mut(index) {
                        r.failed = true;
                    }
                }
                continue;
            }
        };
        let outcomes = match outcomes {
            Ok(outcomes) => outcomes,
            Err(e) => origin
                .iter()
                .map(|_| Err(ExecuteError::Storage(e.to_string())))
                .collect(),
        };
        let (mut applied, mut ignored) = (0, 0);
        for ((index, id), result) in origin.into_iter().zip(outcomes) {
            let Some(r) = results.get_mut(index) else {
                continue;
            };
            match result {
                Ok(executed) => match executed.outcome {
                    Outcome::BookingIgnored { .. } => ignored += 1,
                    Outcome::BookingRefused {
                        booking,
                        version,
                        reason,
                    } => {
                        // Stored as refused (so the day's digest still matches): logged once
                        // per version, since a repeat of it is ignored.
                        tracing::warn!(
                            topic = %batch[index].publish.topic,
                            %booking,
                            version,
                            %reason,
                            "a booking from the website was stored as refused"
                        );
                        r.applied += 1;
                        ctx.status.update(|s| s.bookings_refused += 1);
                    }
                    _ => {
                        r.applied += 1;
                        applied += 1;
                    }
                },
                Err(ExecuteError::Rejected(CommandError::ClockUnsynchronised { .. })) => {
                    // Not the booking's fault: it is stored once the day starts.
                    r.failed = true;
                    clock_refused = true;
                }
                Err(ExecuteError::Rejected(e)) => {
                    tracing::warn!(
                        topic = %batch[index].publish.topic,
                        booking = %id,
                        code = e.code(),
                        reason = %e,
                        "the engine refused a booking from MQTT"
                    );
                    ctx.status.update(|s| s.bookings_refused += 1);
                }
                Err(e) => {
                    tracing::warn!(booking = %id, error = %e, "a booking from MQTT was not stored; it is not acknowledged");
                    r.failed = true;
                }
            }
        }
        ctx.status.update(|s| {
            s.bookings_applied += applied;
            s.bookings_ignored += ignored;
        });
    }
    let failed_at = results.iter().position(|r| r.failed);

    // Gap detection: the last expectation per day in this batch (a stale change says
    // nothing about the day's state now).
    let mut expected: BTreeMap<Date, (u64, String, bool)> = BTreeMap::new();
    for (p, r) in parsed.iter().zip(&results) {
        match p {
            Parsed::Snapshot(s) => {
                expected.insert(s.day, (s.count, s.digest.clone(), true));
            }
            Parsed::Change(c) if r.applied > 0 => {
                expected.insert(c.day, (c.day_count, c.day_digest.clone(), false));
            }
            _ => {}
        }
    }
    if failed_at.is_none() && !expected.is_empty() {
        let days: BTreeSet<Date> = expected.keys().copied().collect();
        match ctx.engine.booking_days(Some(days)).await {
            Ok(own) => {
                for (day, (count, digest, from_snapshot)) in expected {
                    let mine = own.get(&day).cloned().unwrap_or((0, format!("{:016x}", 0)));
                    compare_day(ctx, gaps, day, (count, digest), mine, from_snapshot).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the day digests"),
        }
    }

    // Acknowledge in receive order, each only after its effect is durable.
    let current = {
        let w = lock_wire(&ctx.wire);
        w.connected.then_some(w.generation)
    };
    for (index, item) in batch.iter().enumerate().take(parsed.len()) {
        if failed_at.is_some_and(|f| index >= f) {
            break;
        }
        if Some(item.generation) != current {
            // Received on a connection that is gone: the broker redelivers it.
            continue;
        }
        if let Err(e) = ctx.client.ack(&item.publish).await {
            tracing::warn!(error = %e, "cannot acknowledge a message");
        }
    }
    // Messages beyond the command bound of this round are handled again by the next one.
    if let Some(failed) = failed_at.filter(|_| clock_refused) {
        // The day waits for a synchronised clock: so do these bookings (unacknowledged, in
        // order), then they are handled again. The ones after `failed` that were stored are
        // ignored the second time (same version).
        wait_for_the_day(ctx).await?;
        return Some(batch.into_iter().skip(failed).collect());
    }
    if failed_at.is_some() {
        // Not stored: the daemon is stopping, or the store failed and it restarts. The
        // broker redelivers what was not acknowledged.
        ctx.stop.cancelled().await;
        return None;
    }
    Some(batch.into_iter().skip(parsed.len()).collect())
}

/// Waits until no service day waits for a synchronised clock; `None` when the sync stops.
async fn wait_for_the_day(ctx: &Ctx) -> Option<()> {
    let mut clock_wait = ctx.engine.clock_wait();
    if clock_wait.borrow_and_update().is_some() {
        tracing::warn!(
            "bookings from the website wait at the broker until the service day starts (the \
             clock is not synchronised)"
        );
        ctx.status.update(|s| s.waiting_for_clock = true);
        while clock_wait.borrow_and_update().is_some() {
            tokio::select! {
                _ = ctx.stop.cancelled() => return None,
                changed = clock_wait.changed() => changed.ok()?,
            }
        }
        ctx.status.update(|s| s.waiting_for_clock = false);
        tracing::info!("the service day started; the waiting bookings are stored now");
    }
    Some(())
}

async fn compare_day(
    ctx: &Ctx,
    gaps: &mut GapState,
    day: Date,
    website: (u64, String),
    mine: (u64, String),
    from_snapshot: bool,
) {
    if website == mine {
        if gaps.mismatched.remove(&day).is_some() {
            tracing::info!(%day, count = mine.0, "day matches the website again: gap repaired");
            ctx.status.update(|s| s.gaps_repaired += 1);
        }
        if gaps.refetched.remove(&day).is_some() {
            let _ = ctx.client.unsubscribe(ctx.topics.day(day)).await;
        }
    } else {
        // One gap per day until it matches again, however often the website's digest moves.
        if !gaps.mismatched.contains_key(&day) {
            tracing::warn!(
                %day,
                website_count = website.0,
                website_digest = %website.1,
                own_count = mine.0,
                own_digest = %mine.1,
                from_snapshot,
                "the day does not match the website: gap detected"
            );
            ctx.status.update(|s| s.gaps_detected += 1);
        }
        gaps.mismatched.insert(day, website.1.clone());
        if gaps.refetched.get(&day) != Some(&website.1) {
            gaps.refetched.insert(day, website.1.clone());
            ctx.status.update(|s| s.refetches += 1);
            // (Re)subscribing makes the broker send the day's retained snapshot again.
            if let Err(e) = ctx
                .client
                .subscribe(ctx.topics.day(day), QoS::AtLeastOnce)
                .await
            {
                tracing::warn!(error = %e, %day, "cannot re-fetch the day snapshot");
            }
        }
    }
    let days: Vec<String> = gaps.mismatched.keys().map(|d| d.to_string()).collect();
    ctx.status.update(|s| s.mismatched_days = days);
}
