//! The broker connection: the rumqttc event loop, what each acknowledgement means for the
//! outbox, readable connection errors (TLS above all), and QoS 1 publishes tagged with the
//! events they carry.

use super::{
    Ctx, INBOUND_BUDGET_KIB, Inbound, MQTT_MAX_REMAINING_LENGTH, SharedWire, Tag, lock_wire,
};
use contract::StatusMessage;
use leitsystem_core::contract;
use rumqttc::{Event as MqttEvent, EventLoop, Incoming, Outgoing, QoS};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

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

pub(crate) fn tls_failure(detail: &str) -> String {
    format!(
        "TLS connection to the broker failed: {detail} (check mqtt.tls.ca_file, and \
         mqtt.tls.client_cert/client_key if the broker requires a client certificate)"
    )
}

/// Drops everything rumqttc holds in RAM for the connection that just ended.
pub(crate) fn forget_connection(eventloop: &mut EventLoop, wire: &SharedWire) {
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

pub(crate) async fn connection_task(
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
pub(crate) async fn publish_tagged(
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
