//! Inbound processing: booking batches parsed, validated by the contract and executed in
//! order, each acked only after its effect is durable; gap detection by the day digests and
//! re-fetch.

use super::{
    CHUNK_COMMANDS, CHUNKS_IN_FLIGHT, Ctx, Inbound, MAX_BATCH, MAX_BATCH_COMMANDS, lock_wire,
};
use contract::InboundTopic;
use jiff::civil::Date;
use leitsystem_core::contract;
use leitsystem_runtime::domain::{BookingInput, Command, CommandError, CommandRequest, Outcome};
use leitsystem_runtime::runtime::ExecuteError;
use rumqttc::QoS;
use std::collections::{BTreeMap, BTreeSet};
use tokio::sync::mpsc;

/// What one inbound publish asked for, after parsing.
pub(crate) enum Parsed {
    /// Nothing to execute (malformed, unknown topic, cleared snapshot); just ack.
    Nothing,
    Snapshot(contract::ValidSnapshot),
    Change(contract::ValidChange),
}

#[derive(Default)]
pub(crate) struct ItemResult {
    pub(crate) applied: u64,
    /// A booking could not be stored (the daemon is stopping or the store failed): this
    /// publish and the ones after it are not acknowledged.
    pub(crate) failed: bool,
}

/// The processor's memory of days that did not match.
#[derive(Default)]
pub(crate) struct GapState {
    /// Day -> the website digest it did not match.
    pub(crate) mismatched: BTreeMap<Date, String>,
    /// Day -> the website digest a re-fetch was asked for (once per digest, so a snapshot
    /// the appliance cannot match does not loop).
    pub(crate) refetched: BTreeMap<Date, String>,
}

pub(crate) async fn processor_task(ctx: Ctx, mut inbound: mpsc::Receiver<Inbound>) {
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

pub(crate) fn parse(ctx: &Ctx, item: &Inbound) -> Result<Parsed, String> {
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
                let today = calendar.day_of(leitsystem_runtime::clock::Clock::now(
                    &leitsystem_runtime::clock::SystemClock,
                ));
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
pub(crate) async fn process_batch(
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
pub(crate) async fn wait_for_the_day(ctx: &Ctx) -> Option<()> {
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

pub(crate) async fn compare_day(
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
