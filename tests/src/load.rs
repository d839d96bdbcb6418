//! A random command load with unique request ids, recording exactly what the daemon
//! acknowledged, and the check that every acknowledged command is in the durable log.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use leitsystem::control::{ControlClient, ControlRequest};
use leitsystem::domain::{Command, DeskId, Event, EventRecord, Outcome, ServiceId};
use rand::Rng;
use rand::rngs::StdRng;

/// A command the daemon acknowledged (answered with success).
#[derive(Debug, Clone)]
pub struct Acked {
    /// Its idempotency key.
    pub request_id: String,
    /// What was asked.
    pub command: Command,
    /// What the daemon answered.
    pub outcome: Outcome,
}

/// The request id and command in flight when the connection broke, if any.
pub type InFlight = Option<(String, Command)>;

/// Generates commands for the demo config.
#[derive(Debug)]
pub struct Load {
    rng: StdRng,
    run: String,
    next: u64,
}

const SERVICES: [&str; 3] = ["ausweis", "meldung", "fuehrerschein"];
const DESKS: [&str; 4] = ["1", "2", "3", "4"];

impl Load {
    /// A load whose request ids start with `run`.
    pub fn new(rng: StdRng, run: &str) -> Self {
        Self {
            rng,
            run: run.to_string(),
            next: 0,
        }
    }

    /// The random generator (for kill timing etc.).
    pub fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }

    /// A fresh request id.
    pub fn request_id(&mut self) -> String {
        self.next += 1;
        format!("{}-{}", self.run, self.next)
    }

    /// A random command: mostly walk-ins and calls, some desk and service steps.
    pub fn command(&mut self) -> Command {
        let desk = DeskId::new(DESKS[self.rng.random_range(0..DESKS.len())]);
        match self.rng.random_range(0..100) {
            0..35 => Command::WalkIn {
                service: ServiceId::new(SERVICES[self.rng.random_range(0..SERVICES.len())]),
                priority: if self.rng.random_range(0..10) == 0 {
                    2
                } else {
                    1
                },
            },
            35..60 => Command::CallNext { desk },
            60..70 => Command::StartService { desk },
            70..80 => Command::Finish { desk },
            80..85 => Command::NoShow { desk },
            85..95 => Command::OpenDesk { desk },
            95..98 => Command::PauseDesk { desk },
            _ => Command::Recall { desk },
        }
    }

    /// Drives the load against `daemon` and SIGKILLs it after `delay`, mid-load; reaps it.
    /// Returns the acknowledged commands and the one in flight at the kill.
    pub fn drive_until_killed(
        &mut self,
        daemon: crate::daemon::Daemon,
        delay: std::time::Duration,
    ) -> anyhow::Result<(Vec<Acked>, InFlight)> {
        let mut client = daemon.client()?;
        let stop = Arc::new(AtomicBool::new(false));
        let pid = libc::pid_t::try_from(daemon.pid())?;
        let killer_stop = stop.clone();
        let killer = std::thread::spawn(move || {
            std::thread::sleep(delay);
            // SAFETY: signalling our own child process has no memory-safety impact.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
            killer_stop.store(true, Ordering::Relaxed);
        });
        let result = self.drive(&mut client, &stop, 100_000);
        let _ = killer.join();
        daemon.kill9()?;
        Ok(result)
    }

    /// Sends commands on `client` until `stop` is set or the connection breaks (the daemon was
    /// killed). Returns the acknowledged commands and the one in flight when it broke.
    pub fn drive(
        &mut self,
        client: &mut ControlClient,
        stop: &Arc<AtomicBool>,
        max_commands: usize,
    ) -> (Vec<Acked>, InFlight) {
        let mut acked = Vec::new();
        for _ in 0..max_commands {
            if stop.load(Ordering::Relaxed) {
                return (acked, None);
            }
            let request_id = self.request_id();
            let command = self.command();
            let request = ControlRequest::Execute {
                request_id: Some(request_id.clone()),
                command: command.clone(),
            };
            match client.request(&request) {
                Ok(response) => {
                    if let (true, Some(outcome)) = (response.ok, response.outcome) {
                        acked.push(Acked {
                            request_id,
                            command,
                            outcome,
                        });
                    }
                }
                Err(_) => return (acked, Some((request_id, command))),
            }
        }
        (acked, None)
    }
}

/// Checks that every acknowledged command that changed something is in the log, with the
/// effect it reported. Returns one line per lost or wrong command.
pub fn missing_from_log(acked: &[Acked], log: &[EventRecord]) -> Vec<String> {
    let mut by_request: BTreeMap<&str, Vec<&Event>> = BTreeMap::new();
    for record in log {
        if let Some(id) = &record.request_id {
            by_request
                .entry(id.as_str())
                .or_default()
                .push(&record.event);
        }
    }
    let mut problems = Vec::new();
    for a in acked {
        if matches!(a.outcome, Outcome::Unchanged) {
            continue;
        }
        let Some(events) = by_request.get(a.request_id.as_str()) else {
            // A "next" right after a call repeats that call and writes nothing: it is durable
            // when the call it repeats is in the log.
            if let Outcome::Called {
                ticket,
                desk,
                finished: None,
            } = &a.outcome
                && log.iter().any(|r| {
                    matches!(&r.event, Event::TicketCalled { ticket: t, desk: d, .. } if t == ticket && d == desk)
                })
            {
                continue;
            }
            problems.push(format!(
                "acknowledged {} ({}) is not in the log: {:?}",
                a.command.name(),
                a.request_id,
                a.outcome
            ));
            continue;
        };
        let matches = match &a.outcome {
            Outcome::TicketIssued { ticket, .. } => events.iter().any(
                |e| matches!(e, Event::TicketIssued { ticket: t } if &t.number == ticket),
            ),
            Outcome::Called { ticket, desk, .. } => events.iter().any(|e| {
                matches!(e, Event::TicketCalled { ticket: t, desk: d, .. } if t == ticket && d == desk)
            }),
            _ => !events.is_empty(),
        };
        if !matches {
            problems.push(format!(
                "acknowledged {} ({}) answered {:?} but the log holds {:?}",
                a.command.name(),
                a.request_id,
                a.outcome,
                events
            ));
        }
    }
    problems
}
