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

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::catalog::Catalog;
use crate::daemon::EngineHandle;
use crate::domain::{Event, EventRecord};

/// Calls kept on the display: the current one and ten recent ones.
pub const DISPLAY_CALLS: usize = 11;

/// Log entries read at start to rebuild the calls (more than a busy day produces).
const DISPLAY_REPLAY: u64 = 10_000;

/// A text in both languages the display shows.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Bilingual {
    /// German.
    pub de: String,
    /// English.
    pub en: String,
}

impl From<&crate::config::Text> for Bilingual {
    fn from(text: &crate::config::Text) -> Self {
        Self {
            de: text.de.clone(),
            en: text.en.clone(),
        }
    }
}

/// One call on the display.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DisplayCall {
    /// Call number.
    pub ticket: String,
    /// Desk id.
    pub desk: String,
    /// Desk label (German; kept for display plugins that show one language).
    pub desk_label: String,
    /// Desk label in both languages.
    pub desk_labels: Bilingual,
    /// Department of the desk (a display may show one department).
    pub department: String,
    /// When (ms since the epoch).
    pub at: i64,
    /// A recall rather than the first call.
    pub recall: bool,
    /// Log sequence number of the call: a new one means "sound the gong".
    pub seq: u64,
}

/// The latest calls, newest first.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DisplayState {
    /// Newest first, at most [`DISPLAY_CALLS`].
    pub calls: Vec<DisplayCall>,
}

impl DisplayState {
    /// Applies one committed event; true when the calls changed. The one place the calls
    /// projection is computed, for replaying the log at start and for live events alike.
    pub fn apply(&mut self, record: &EventRecord, catalog: &Catalog) -> bool {
        match &record.event {
            Event::TicketCalled { ticket, desk, .. } | Event::TicketRecalled { ticket, desk } => {
                let known = catalog.desks.get(desk);
                self.calls.insert(
                    0,
                    DisplayCall {
                        ticket: ticket.to_string(),
                        desk: desk.to_string(),
                        desk_label: known.map(|d| d.label.de.clone()).unwrap_or_default(),
                        desk_labels: known.map(|d| (&d.label).into()).unwrap_or_default(),
                        department: known.map(|d| d.department.to_string()).unwrap_or_default(),
                        at: record.at,
                        recall: matches!(record.event, Event::TicketRecalled { .. }),
                        seq: record.seq,
                    },
                );
                self.calls.truncate(DISPLAY_CALLS);
                true
            }
            Event::DayStarted { .. } => {
                self.calls.clear();
                true
            }
            _ => false,
        }
    }
}

/// The waiting line of one service.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct QueueInfo {
    /// Service id.
    pub service: String,
    /// Service name.
    pub name: Bilingual,
    /// Department id.
    pub department: String,
    /// Tickets waiting.
    pub waiting: u32,
    /// Estimated wait for a ticket issued now, in minutes.
    pub wait_minutes: u32,
}

/// Everything a public display shows. Never personal data.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PublicDisplay {
    /// Office name.
    pub site: String,
    /// The site's IANA time zone (`Europe/Berlin`): the page's clock and times use it, not
    /// the browser's.
    pub time_zone: String,
    /// Latest calls, newest first.
    pub calls: Vec<DisplayCall>,
    /// Waiting lines per service, in config order.
    pub queues: Vec<QueueInfo>,
    /// Log sequence number this state reflects.
    pub seq: u64,
}

/// Whether an event can change the waiting counts or estimates.
fn moves_queues(event: &Event) -> bool {
    !matches!(
        event,
        Event::BookingUpserted { .. }
            | Event::BookingCancelled { .. }
            | Event::PersonalDataPurged { .. }
            | Event::TicketPrinted { .. }
            | Event::TicketPrintFailed { .. }
            | Event::ReprintRequested { .. }
            | Event::DeskModeChanged { .. }
            | Event::SilentAlarm { .. }
    )
}

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
