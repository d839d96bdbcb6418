//! The public display: what the wall display, the `/display` web page and display plugins show.
//!
//! One projection of the committed events ([`DisplayState::apply`]: the latest calls) plus the
//! waiting counts and estimated waits per service, published as one immutable
//! [`PublicDisplay`] on a watch channel ([`spawn_feed`]). It holds call numbers, desk labels
//! and service names only: nothing a booking carries about a person can reach it.
//!
//! At start the calls are rebuilt from the tail of the durable log, so a restarted daemon shows
//! today's calls again; afterwards the feed follows the live events, and a burst of events is
//! folded into one update.

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::catalog::Catalog;
use crate::runtime::EngineHandle;

pub use leitsystem_core::display::*;

/// Log entries read at start to rebuild the calls (more than a busy day produces).
const DISPLAY_REPLAY: u64 = 10_000;

async fn snapshot(
    engine: &EngineHandle,
    catalog: &Catalog,
    calls: &DisplayState,
    seq: u64,
) -> PublicDisplay {
    let view = engine.queue_view().await.ok();
    let queues = catalog
        .services
        .values()
        .map(|s| QueueInfo {
            service: s.id.to_string(),
            name: (&s.name).into(),
            department: s.department.to_string(),
            waiting: view
                .as_ref()
                .and_then(|v| v.waiting.get(s.id.as_str()).copied())
                .unwrap_or(0),
            wait_minutes: view
                .as_ref()
                .and_then(|v| v.estimated_wait_minutes.get(s.id.as_str()).copied())
                .unwrap_or(0),
        })
        .collect();
    PublicDisplay {
        site: catalog.site_name.clone(),
        time_zone: catalog.time_zone.clone(),
        calls: calls.calls.clone(),
        queues,
        seq: view.map_or(seq, |v| v.last_seq.max(seq)),
    }
}

/// Starts the display projection; the receiver always holds the latest [`PublicDisplay`].
pub fn spawn_feed(
    tracker: &tokio_util::task::TaskTracker,
    engine: EngineHandle,
    catalog: Arc<Catalog>,
    shutdown: CancellationToken,
) -> watch::Receiver<Arc<PublicDisplay>> {
    let (tx, rx) = watch::channel(Arc::new(PublicDisplay::default()));
    tracker.spawn(feed(engine, catalog, tx, shutdown));
    rx
}

/// Most events folded into one display update.
const DISPLAY_BURST: usize = 512;

async fn feed(
    engine: EngineHandle,
    catalog: Arc<Catalog>,
    tx: watch::Sender<Arc<PublicDisplay>>,
    shutdown: CancellationToken,
) {
    let mut calls = DisplayState::default();
    let seeded_up_to = engine.state_view().await.map_or(0, |view| view.last_seq);
    let from = seeded_up_to.saturating_sub(DISPLAY_REPLAY).max(1);
    match engine.events(from, DISPLAY_REPLAY as u32 + 1).await {
        Ok(history) => {
            for record in history.iter().filter(|r| r.seq <= seeded_up_to) {
                calls.apply(record, &catalog);
            }
        }
        Err(e) => tracing::warn!("cannot rebuild the display from the log: {e}"),
    }
    let _ = tx.send(Arc::new(
        snapshot(&engine, &catalog, &calls, seeded_up_to).await,
    ));
    // Every event after the seed, without gaps: a call committed during a bulk booking sync
    // (thousands of events at once, more than the broadcast holds) still reaches the wall
    // display. Before, lagged events were skipped and such a call never showed.
    let mut committed = engine.feed_from(seeded_up_to + 1);
    loop {
        let burst = tokio::select! {
            _ = shutdown.cancelled() => return,
            burst = committed.recv_batch(DISPLAY_BURST, std::time::Duration::ZERO) => burst,
        };
        let Some(burst) = burst else {
            return;
        };
        let mut changed = false;
        let mut last_seq = seeded_up_to;
        for record in &burst {
            last_seq = record.seq;
            changed |= calls.apply(record, &catalog) | moves_queues(&record.event);
        }
        if changed {
            let next = snapshot(&engine, &catalog, &calls, last_seq).await;
            tx.send_replace(Arc::new(next));
        }
    }
}
