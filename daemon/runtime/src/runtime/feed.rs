//! [`EventFeed`]: the committed events without gaps, from the broadcast while it keeps up and
//! from the durable log when a subscriber fell behind.

use super::{EngineHandle, ExecuteError, FEED_CATCH_UP_READ};
use crate::domain::EventRecord;
use std::sync::Arc;
use std::time::Duration;

/// Committed events in log order without gaps, for outputs that must not miss one (a ticket
/// to print): the broadcast while the subscriber keeps up, the durable log for what the
/// broadcast dropped while it fell behind (a bulk booking sync commits thousands at once).
/// Every event is in the log before it is broadcast, so reading the log never misses one.
pub struct EventFeed {
    pub(crate) committed: tokio::sync::broadcast::Receiver<Arc<EventRecord>>,
    pub(crate) engine: EngineHandle,
    /// The next seq to hand out (`None` until the first event).
    pub(crate) next: Option<u64>,
    /// Records read from the log, to hand out before anything else.
    pub(crate) backlog: std::collections::VecDeque<EventRecord>,
    /// The broadcast dropped records: read the log until it is caught up.
    pub(crate) behind: bool,
    /// Records dropped before the first one was handed out.
    pub(crate) missed_at_start: u64,
    /// The batch [`EventFeed::recv_batch`] is filling. It lives here, not in the future, so
    /// that a `recv_batch` cancelled by a `select!` loses nothing: the next call goes on
    /// filling it.
    pub(crate) batch: Vec<Arc<EventRecord>>,
    /// When the batch being filled is handed out at the latest.
    pub(crate) batch_deadline: Option<tokio::time::Instant>,
}

impl EventFeed {
    /// The next events, at least one and at most `max`: waits for the first, then up to
    /// `linger` for more (a commit's events arrive one by one), taking what is ready. `None`
    /// once the engine has stopped.
    ///
    /// Cancel-safe: records taken before a cancellation stay in the feed's batch and are
    /// handed out by the next call (with the deadline of the first call), never dropped.
    pub async fn recv_batch(
        &mut self,
        max: usize,
        linger: Duration,
    ) -> Option<Vec<Arc<EventRecord>>> {
        if self.batch.is_empty() {
            let first = self.recv().await?;
            // No await between receiving and keeping it.
            self.batch.push(first);
            self.batch_deadline = Some(tokio::time::Instant::now() + linger);
        }
        let deadline = *self
            .batch_deadline
            .get_or_insert_with(|| tokio::time::Instant::now() + linger);
        while self.batch.len() < max {
            if let Some(record) = self.backlog.pop_front() {
                if self.next.is_none_or(|next| record.seq >= next) {
                    self.next = Some(record.seq + 1);
                    self.batch.push(Arc::new(record));
                }
                continue;
            }
            if self.behind {
                break;
            }
            match self.committed.try_recv() {
                Ok(record) if Some(record.seq) == self.next => {
                    self.next = Some(record.seq + 1);
                    self.batch.push(record);
                }
                Ok(record) if self.next.is_some_and(|next| record.seq < next) => {}
                Ok(_) | Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => {
                    // A gap: the log has it; the next call reads it.
                    self.behind = true;
                    break;
                }
                Err(tokio::sync::broadcast::error::TryRecvError::Empty) => {
                    // Nothing ready: wait for the next one until the deadline. Receiving
                    // from a broadcast is cancel-safe, and a record is kept as soon as it
                    // arrives.
                    match tokio::time::timeout_at(deadline, self.committed.recv()).await {
                        Ok(Ok(record)) if Some(record.seq) == self.next => {
                            self.next = Some(record.seq + 1);
                            self.batch.push(record);
                        }
                        Ok(Ok(record)) if self.next.is_some_and(|next| record.seq < next) => {}
                        Ok(Ok(_))
                        | Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {
                            self.behind = true;
                            break;
                        }
                        Ok(Err(_)) | Err(_) => break,
                    }
                }
                Err(_) => break,
            }
        }
        self.batch_deadline = None;
        Some(std::mem::take(&mut self.batch))
    }

    /// The next event; `None` once the engine has stopped.
    pub async fn recv(&mut self) -> Option<Arc<EventRecord>> {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            if let Some(record) = self.backlog.pop_front() {
                if self.next.is_none_or(|next| record.seq >= next) {
                    self.next = Some(record.seq + 1);
                    return Some(Arc::new(record));
                }
                continue;
            }
            if let (true, Some(next)) = (self.behind, self.next) {
                match self.engine.events(next, FEED_CATCH_UP_READ).await {
                    Ok(records) => {
                        self.behind = records.len() == FEED_CATCH_UP_READ as usize;
                        self.backlog.extend(records);
                    }
                    Err(ExecuteError::ShuttingDown) => return None,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the event log; retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
                continue;
            }
            match self.committed.recv().await {
                Ok(record) => match self.next {
                    Some(next) if record.seq < next => {}
                    // A gap (after a lag): the log has it.
                    Some(next) if record.seq > next => self.behind = true,
                    None if self.missed_at_start > 0 => {
                        // Dropped before the first: they are the ones just before this.
                        self.next = Some(record.seq.saturating_sub(self.missed_at_start).max(1));
                        self.behind = true;
                    }
                    _ => {
                        self.next = Some(record.seq + 1);
                        return Some(record);
                    }
                },
                Err(RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "event feed fell behind; reading the log");
                    if self.next.is_none() {
                        self.missed_at_start += missed;
                    }
                    self.behind = true;
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }
}
