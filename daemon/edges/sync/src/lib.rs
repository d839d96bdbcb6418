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
//!   [`EventFeed`](leitsystem_runtime::runtime::EventFeed) (the log after the cursor, then the events as they
//!   are committed), batched into messages of consecutive events (QoS 1, at most
//!   [`OUTBOX_WINDOW`] messages unacknowledged), and renews the subscriptions and the retained
//!   status after every ConnAck.
//!
//! An edge of the daemon (`leitsystem-sync`): builds on the runtime and never on another
//! edge; the composition root (`leitsystemd`) starts it. It must never touch the store but
//! through the engine's handle and feed.

/// The MQTT contract (topics, wire types, validation): lives in the core crate.
pub use leitsystem_core::contract;
#[cfg(test)]
mod contract_schema_tests;
pub mod outbox;

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use rumqttc::{AsyncClient, LastWill, MqttOptions, Publish, QoS, TlsConfiguration, Transport};
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use contract::{StatusMessage, Topics};
use leitsystem_runtime::catalog::Catalog;
use leitsystem_runtime::config::MqttConfig;
use leitsystem_runtime::runtime::EngineHandle;

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

pub use leitsystem_runtime::status::{DayView, SyncState, SyncStatus, SyncView};

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

mod connection;
pub use connection::describe_connection_error;
pub(crate) use connection::{connection_task, publish_tagged};
mod publisher;
pub(crate) use publisher::outbox_task;
mod processor;
pub(crate) use processor::processor_task;

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
