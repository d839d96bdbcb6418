//! The outbox publisher: committed events from the feed, after the acknowledged cursor, in
//! batches with a window of unacknowledged publishes; the cursor moves only over events the
//! broker acknowledged.

use super::{
    CURSOR_PERSIST_INTERVAL, Ctx, OUTBOX_LINGER, OUTBOX_WINDOW, Tag, lock_wire, outbox,
    publish_tagged,
};
use contract::StatusMessage;
use leitsystem_core::contract;
use rumqttc::{QoS, SubscribeFilter};
use std::collections::BTreeMap;
use std::time::Instant;
use tokio::sync::watch;

pub(crate) async fn outbox_task(
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
