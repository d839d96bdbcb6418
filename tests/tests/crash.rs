//! Crash test on the real binary: a command load while the daemon is SIGKILLed at random
//! moments (200 times), restarted each time. Every acknowledged command must be in the durable
//! log afterwards, a retried in-flight command must take effect at most once, and the store
//! must stay consistent (log replay equals the views, invariants hold).
//!
//! After each restart the log's tail since a checkpoint is checked against everything
//! acknowledged since that checkpoint; every [`FULL_CHECK_EVERY`] kills (and at the end) the
//! whole log is checked against every acknowledgement and replayed against the views.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use leitsystem::control::ControlRequest;
use leitsystem_tests::daemon::{
    Daemon, all_events, assert_consistent, events_from, write_demo_config,
};
use leitsystem_tests::load::{Acked, Load, missing_from_log};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const KILLS: usize = 200;
const FULL_CHECK_EVERY: usize = 20;

fn seed() -> u64 {
    std::env::var("LEITSYSTEM_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

#[test]
fn acknowledged_commands_survive_200_random_sigkills() -> anyhow::Result<()> {
    let seed = seed();
    eprintln!("crash test seed: {seed} (set LEITSYSTEM_TEST_SEED to repeat)");
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let config = write_demo_config(dir.path(), &data)?;
    let mut load = Load::new(StdRng::seed_from_u64(seed), "crash");
    let mut acked: Vec<Acked> = Vec::new();
    let mut retried = 0usize;
    let started = Instant::now();
    // Log entries from `checkpoint_seq` on hold everything acknowledged from `checkpoint_ack`.
    let mut checkpoint_seq = 1u64;
    let mut checkpoint_ack = 0usize;

    for kill in 0..KILLS {
        let daemon = Daemon::start(&config, &data, &[])
            .with_context(|| format!("restart after kill {kill}"))?;
        // After every restart: what was acknowledged is durable and the store consistent.
        let (log, since) = if kill % FULL_CHECK_EVERY == 0 {
            assert_consistent(&daemon).with_context(|| format!("after kill {kill}"))?;
            (all_events(&daemon)?, 0)
        } else {
            // Some events before the checkpoint too: a repeated "next" writes nothing and is
            // durable when the call it repeats (seconds earlier) is in the log.
            (
                events_from(&daemon, checkpoint_seq.saturating_sub(2_000).max(1))?,
                checkpoint_ack,
            )
        };
        let lost = missing_from_log(&acked[since..], &log);
        if !lost.is_empty() {
            bail!(
                "after kill {kill}: {} lost:\n{}",
                lost.len(),
                lost.join("\n")
            );
        }
        checkpoint_seq = log.last().map_or(checkpoint_seq, |r| r.seq + 1);
        checkpoint_ack = acked.len();

        let delay = Duration::from_millis(load.rng().random_range(2..120));
        let (new_acks, in_flight) = load.drive_until_killed(daemon, delay)?;
        acked.extend(new_acks);

        // Retry what was in flight with the same request id: applied at most once.
        if let Some((request_id, command)) = in_flight {
            let daemon = Daemon::start(&config, &data, &[])?;
            let before = events_from(&daemon, checkpoint_seq)?;
            let applied_before = before
                .iter()
                .filter(|r| r.request_id.as_deref() == Some(request_id.as_str()))
                .count();
            let response = daemon.client()?.request(&ControlRequest::Execute {
                request_id: Some(request_id.clone()),
                command: command.clone(),
            })?;
            let after = events_from(&daemon, checkpoint_seq)?;
            let applied_after = after
                .iter()
                .filter(|r| r.request_id.as_deref() == Some(request_id.as_str()))
                .count();
            if applied_before > 0 && applied_after != applied_before {
                bail!(
                    "retried {request_id} was applied twice ({applied_before} then {applied_after} events)"
                );
            }
            if applied_before > 0 && !response.duplicate {
                bail!("retried {request_id} was already applied but not answered as a duplicate");
            }
            if let (true, Some(outcome)) = (response.ok, response.outcome) {
                acked.push(Acked {
                    request_id,
                    command,
                    outcome,
                });
                retried += 1;
            }
            daemon.kill9()?;
        }
    }

    let daemon = Daemon::start(&config, &data, &[])?;
    let log = all_events(&daemon)?;
    let lost = missing_from_log(&acked, &log);
    if !lost.is_empty() {
        bail!("at the end: {} lost:\n{}", lost.len(), lost.join("\n"));
    }
    assert_consistent(&daemon)?;
    let status = daemon.terminate()?;
    if !status.success() {
        bail!("leitsystemd exited with {status} on SIGTERM");
    }
    let issued = acked
        .iter()
        .filter(|a| matches!(a.outcome, leitsystem::domain::Outcome::TicketIssued { .. }))
        .count();
    eprintln!(
        "crash test: {KILLS} kills, {} acknowledged commands ({issued} tickets, {retried} retried in-flight), {} log entries, {:.1} s",
        acked.len(),
        log.len(),
        started.elapsed().as_secs_f64()
    );
    if acked.len() < KILLS {
        bail!(
            "the load acknowledged only {} commands; the test did not exercise the daemon",
            acked.len()
        );
    }
    Ok(())
}

/// SIGKILL during startup: while a fresh store is being created, and while a cleanly stopped
/// store is being checked and opened. The next start must always succeed with nothing lost.
#[test]
fn kills_during_startup_never_leave_a_store_that_will_not_open() -> anyhow::Result<()> {
    let seed = seed();
    eprintln!("startup kill seed: {seed} (set LEITSYSTEM_TEST_SEED to repeat)");
    let mut rng = StdRng::seed_from_u64(seed);
    for round in 0..40 {
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        let config = write_demo_config(dir.path(), &data)?;

        // Killed while creating the store.
        let early = Daemon::spawn(&config, &data, &[])?;
        std::thread::sleep(Duration::from_micros(rng.random_range(0..40_000)));
        early.kill9()?;
        let daemon = Daemon::start(&config, &data, &[])
            .with_context(|| format!("round {round}: start after a kill during creation"))?;
        let issued = daemon.client()?.request(&ControlRequest::Execute {
            request_id: Some(format!("startup-{round}")),
            command: leitsystem::domain::Command::WalkIn {
                service: leitsystem::domain::ServiceId::new("ausweis"),
                priority: 1,
            },
        })?;
        if !issued.ok {
            bail!("round {round}: walk-in refused: {:?}", issued.error);
        }
        let status = daemon.terminate()?;
        if !status.success() {
            bail!("round {round}: stop ended with {status}");
        }

        // Killed while checking and opening a cleanly stopped store.
        let early = Daemon::spawn(&config, &data, &[])?;
        std::thread::sleep(Duration::from_micros(rng.random_range(0..40_000)));
        early.kill9()?;
        let daemon = Daemon::start(&config, &data, &[])
            .with_context(|| format!("round {round}: start after a kill while opening"))?;
        let state = daemon.client()?.request(&ControlRequest::State)?;
        let tickets = state.state.map(|s| s.tickets.len()).unwrap_or(0);
        if tickets != 1 {
            bail!("round {round}: the acknowledged ticket is gone ({tickets} tickets)");
        }
        assert_consistent(&daemon)?;
        daemon.kill9()?;
    }
    Ok(())
}
