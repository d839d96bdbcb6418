//! Outputs from committed events: print jobs for printers (with the ledger of unanswered jobs
//! and reprints after a printer comes back) and the display state for display devices.

use super::{DeviceSpec, Supervise};
use leitsystem_plugin::HostMessage;
use leitsystem_plugin::messages::Role;
use leitsystem_runtime::catalog::Catalog;
use leitsystem_runtime::domain::{
    Command, CommandRequest, Event, PrintOutcome, PrintState, Ticket, TicketNumber,
};
use leitsystem_runtime::runtime::EngineHandle;
use std::collections::HashMap;
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Print job ids are `<day>/<call number>/<log sequence of the event that asked for it>`:
/// unique per attempt, and they name the ticket without a lookup.
pub(crate) fn print_job_id(ticket: &Ticket, seq: u64) -> String {
    format!("{}/{}/{seq}", ticket.day, ticket.number)
}

pub(crate) fn ticket_of_job(job: &str) -> Option<TicketNumber> {
    let mut parts = job.split('/');
    let (_day, number, _seq) = (parts.next()?, parts.next()?, parts.next()?);
    (!number.is_empty()).then(|| TicketNumber::new(number.to_string()))
}

/// Records a printer's outcome through the engine (one way in: it becomes an event).
/// True when recorded.
pub(crate) async fn record_print(
    engine: &EngineHandle,
    printer: &str,
    job: &str,
    outcome: PrintOutcome,
) -> bool {
    let Some(ticket) = ticket_of_job(job) else {
        tracing::warn!(device = %printer, job = %job, "print report for a job id the daemon did not issue");
        return false;
    };
    let request = CommandRequest {
        request_id: Some(format!("print:{job}")),
        source: format!("printer:{printer}"),
        command: Command::RecordPrint {
            ticket,
            printer: printer.to_string(),
            outcome,
        },
    };
    engine.execute(request).await.is_ok()
}

/// Asks for a reprint of every open ticket of today whose last print failed: the printer is
/// (back) in order, and the visitor still has no paper ticket. True when the scan ran (every
/// failed open ticket was asked for), false when the state could not be read.
pub(crate) async fn reprint_failed(engine: &EngineHandle, printer: &str) -> bool {
    let Ok(view) = engine.state_view().await else {
        return false;
    };
    for ticket in view.tickets {
        // One print state per printer: only the tickets this printer failed to print.
        let PrintState::Failed {
            at, printer: by, ..
        } = &ticket.print
        else {
            continue;
        };
        if by != printer {
            continue;
        }
        if ticket.state.is_final() {
            continue;
        }
        tracing::info!(device = %printer, ticket = %ticket.number, "printer ready again: reprinting");
        let request = CommandRequest {
            request_id: Some(format!("reprint:{}:{at}", ticket.number)),
            source: format!("printer:{printer}"),
            command: Command::Reprint {
                ticket: ticket.number.clone(),
            },
        };
        let _ = engine.execute(request).await;
    }
    true
}

/// Print jobs sent and not yet answered: job id -> (printer, when it is overdue, timeout).
#[derive(Debug, Clone, Default)]
pub(crate) struct PrintLedger {
    pub(crate) jobs: Arc<Mutex<HashMap<String, SentJob>>>,
}

/// A job sent: (printer, when it is overdue, its timeout).
pub(crate) type SentJob = (String, Instant, Duration);

impl PrintLedger {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, SentJob>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `job` went to `printer`, which must answer within `timeout`.
    pub(crate) fn sent(&self, job: &str, printer: &str, timeout: Duration) {
        self.lock().insert(
            job.to_string(),
            (printer.to_string(), Instant::now() + timeout, timeout),
        );
    }

    /// The printer answered `job` (printed or failed).
    pub(crate) fn answered(&self, job: &str) {
        self.lock().remove(job);
    }

    /// Removes and returns the jobs past their time: (job, printer, how long it waited).
    pub(crate) fn take_overdue(&self) -> Vec<(String, String, Duration)> {
        let now = Instant::now();
        let mut jobs = self.lock();
        let overdue: Vec<String> = jobs
            .iter()
            .filter(|(_, (_, due, _))| *due <= now)
            .map(|(job, _)| job.clone())
            .collect();
        overdue
            .into_iter()
            .filter_map(|job| {
                jobs.remove(&job)
                    .map(|(printer, _, timeout)| (job, printer, timeout))
            })
            .collect()
    }
}

/// One printer as the print routing sees it.
#[derive(Debug, Clone)]
pub(crate) struct PrinterRoute {
    pub(crate) id: String,
    pub(crate) terminal: Option<String>,
    pub(crate) departments: Vec<String>,
    pub(crate) tx: SyncSender<Supervise>,
}

/// Which printer prints which ticket: exactly one per ticket.
#[derive(Debug, Clone, Default)]
pub(crate) struct PrintRouting {
    /// In config order.
    pub(crate) printers: Vec<PrinterRoute>,
    /// Scanner device id -> its terminal.
    pub(crate) scanner_terminals: HashMap<String, String>,
}

impl PrintRouting {
    pub(crate) fn new(
        devices: &[(
            DeviceSpec,
            SyncSender<Supervise>,
            std::thread::JoinHandle<()>,
        )],
    ) -> Self {
        let mut routing = Self::default();
        for (spec, tx, _) in devices {
            match spec.role {
                Role::Printer => routing.printers.push(PrinterRoute {
                    id: spec.id.clone(),
                    terminal: spec.terminal.clone(),
                    departments: spec.departments.clone(),
                    tx: tx.clone(),
                }),
                Role::Scanner => {
                    if let Some(terminal) = &spec.terminal {
                        routing
                            .scanner_terminals
                            .insert(spec.id.clone(), terminal.clone());
                    }
                }
                _ => {}
            }
        }
        routing
    }

    /// The printer for a ticket of `department` issued by the input `source`: the printer of
    /// the issuing scanner's terminal; else the first printer bound to the department; else
    /// the first printer bound to no department and no terminal; else the first printer.
    pub(crate) fn printer_for(
        &self,
        source: &str,
        department: Option<&str>,
    ) -> Option<&PrinterRoute> {
        let terminal = source
            .strip_prefix("scanner:")
            .and_then(|scanner| self.scanner_terminals.get(scanner));
        let at_terminal = terminal.and_then(|terminal| {
            self.printers
                .iter()
                .find(|p| p.terminal.as_ref() == Some(terminal))
        });
        at_terminal
            .or_else(|| {
                self.printers
                    .iter()
                    .find(|p| department.is_some_and(|d| p.departments.iter().any(|pd| pd == d)))
            })
            .or_else(|| {
                self.printers
                    .iter()
                    .find(|p| p.departments.is_empty() && p.terminal.is_none())
            })
            .or_else(|| self.printers.first())
    }

    pub(crate) fn by_id(&self, id: &str) -> Option<&PrinterRoute> {
        self.printers.iter().find(|p| p.id == id)
    }
}

/// Printers, fed from committed events: a ticket issued or to be reprinted becomes a print
/// job for one printer ([`PrintRouting`]; a reprint goes to the printer that failed it).
/// Every job is entered in the ledger, so one that is never answered counts as failed.
/// At start, open tickets that never got an answer before the daemon stopped are reprinted.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn derive_outputs(
    mut committed: leitsystem_runtime::runtime::EventFeed,
    engine: EngineHandle,
    printers: PrintRouting,
    ledger: PrintLedger,
    print_answer_timeout: Duration,
    started_at: i64,
    catalog: Arc<Catalog>,
    shutdown: CancellationToken,
) {
    let department_of = |ticket: &Ticket| {
        catalog
            .services
            .get(&ticket.service)
            .map(|s| s.department.as_str().to_string())
    };
    if !printers.printers.is_empty() {
        reprint_unanswered(&engine, started_at).await;
    }
    loop {
        let record = tokio::select! {
            _ = shutdown.cancelled() => return,
            record = committed.recv() => record,
        };
        let Some(record) = record else {
            return;
        };
        let job = match &record.event {
            Event::TicketIssued { ticket } => printers
                .printer_for(&record.source, department_of(ticket).as_deref())
                .map(|printer| (ticket.clone(), printer)),
            Event::ReprintRequested { ticket, printer } => match engine.state_view().await {
                Ok(view) => view
                    .tickets
                    .into_iter()
                    .find(|t| &t.number == ticket)
                    .and_then(|t| {
                        // The event names the printer of the last outcome (the ticket's print
                        // state is pending again by now).
                        let earlier = printer.as_deref().and_then(|p| printers.by_id(p));
                        earlier
                            .or_else(|| printers.printer_for("", department_of(&t).as_deref()))
                            .map(|printer| (t, printer))
                    }),
                Err(e) => {
                    tracing::warn!(ticket = %ticket, "cannot read the ticket to reprint: {e}");
                    None
                }
            },
            _ => None,
        };
        let Some((ticket, printer)) = job else {
            continue;
        };
        let id = print_job_id(&ticket, record.seq);
        let message = HostMessage::Print {
            job: id.clone(),
            document: leitsystem_runtime::ticket::ticket_document(&ticket, &catalog, record.at),
        };
        if printer.tx.try_send(Supervise::Deliver(message)).is_err() {
            // Not delivered: recorded as failed at once, and reprinted when the printer is
            // ready again.
            tracing::warn!(device = %printer.id, job = %id, "printer queue full; print job not delivered");
            record_print(
                &engine,
                &printer.id,
                &id,
                PrintOutcome::Failed {
                    reason: "the printer's queue is full".to_string(),
                },
            )
            .await;
        } else {
            ledger.sent(&id, &printer.id, print_answer_timeout);
        }
    }
}

/// Open tickets issued before this start whose print never got an answer (the daemon stopped
/// between committing the ticket and the printer's report): reprinted, so no visitor is left
/// without paper because of a restart.
pub(crate) async fn reprint_unanswered(engine: &EngineHandle, started_at: i64) {
    let Ok(view) = engine.state_view().await else {
        return;
    };
    for ticket in view.tickets {
        if ticket.print != PrintState::Pending
            || ticket.state.is_final()
            || ticket.issued_at >= started_at
        {
            continue;
        }
        tracing::warn!(ticket = %ticket.number, "no print outcome was recorded before the restart: reprinting");
        let request = CommandRequest {
            request_id: Some(format!("reprint-unanswered:{}:{started_at}", ticket.number)),
            source: "printer:restart".to_string(),
            command: Command::Reprint {
                ticket: ticket.number.clone(),
            },
        };
        let _ = engine.execute(request).await;
    }
}

/// Displays get the public display state ([`leitsystem_runtime::display`]) whenever it changes.
pub(crate) async fn feed_displays(
    mut display: tokio::sync::watch::Receiver<Arc<leitsystem_runtime::display::PublicDisplay>>,
    displays: Vec<(String, SyncSender<Supervise>)>,
    shutdown: CancellationToken,
) {
    loop {
        let state = serde_json::to_value(&**display.borrow_and_update()).unwrap_or_default();
        for (id, tx) in &displays {
            let message = HostMessage::Display {
                state: state.clone(),
            };
            if tx.try_send(Supervise::Deliver(message)).is_err() {
                tracing::warn!(device = %id, "device queue full; display state not delivered");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = display.changed() => if changed.is_err() { return },
        }
    }
}
