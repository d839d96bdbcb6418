//! Power-cut test: kill -9 keeps the page cache, so it cannot show what a power cut loses.
//! Here the daemon runs under the power-cut shim (`tests/powercut/`), which keeps only what was
//! made durable by fsync/fdatasync (data) and directory fsyncs (names). After each SIGKILL the
//! data directory is rebuilt from that durable image, as after a real power cut, and the daemon
//! restarted on it: every acknowledged command must be there.
//!
//! The negative control runs the same load with the store's explicit fsync switched off
//! (`LEITSYSTEMD_UNSAFE_NO_FSYNC`, so only sled's own `flush()` = `sync_file_range` remains)
//! and must lose acknowledged commands: proof that the test catches a missing fsync.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use leitsystem::control::ControlRequest;
use leitsystem::domain::{Command, DeskId};
use leitsystem::store::UNSAFE_NO_FSYNC_ENV;
use leitsystem_tests::daemon::{Daemon, all_events, assert_consistent, write_demo_config};
use leitsystem_tests::load::{Acked, Load, missing_from_log};
use leitsystem_tests::powercut::{ROOT_ENV, SHADOW_ENV, build_shim, materialize, reset_shadow};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

struct CutReport {
    acknowledged: usize,
    lost: Vec<String>,
}

fn run_power_cuts(cuts: usize, fsync: bool, seed: u64) -> anyhow::Result<CutReport> {
    let dir = tempfile::tempdir()?;
    let shim = build_shim(dir.path())?;
    let data = dir.path().join("data");
    let shadow = dir.path().join("shadow");
    let config = write_demo_config(dir.path(), &data)?;
    let mut load = Load::new(
        StdRng::seed_from_u64(seed),
        if fsync { "safe" } else { "unsafe" },
    );
    let mut acked: Vec<Acked> = Vec::new();

    let preload = shim.display().to_string();
    let root = data.display().to_string();
    let shadow_text = shadow.display().to_string();
    let under_shim = [
        ("LD_PRELOAD", preload.as_str()),
        (ROOT_ENV, root.as_str()),
        (SHADOW_ENV, shadow_text.as_str()),
    ];

    // First boot: create the store and open the desks. With the fsync on, this happens under
    // the shim too and ends in a power cut, so creating the store must be durable as well.
    // Without it, the first boot runs normally so that the loss shows in commands, not in a
    // store that never existed.
    std::fs::create_dir_all(&data)?;
    reset_shadow(&shadow)?;
    let daemon = Daemon::start(&config, &data, if fsync { &under_shim[..] } else { &[] })?;
    for desk in ["1", "2", "3", "4"] {
        let request_id = format!("open-{desk}");
        let command = Command::OpenDesk {
            desk: DeskId::new(desk),
        };
        let response = daemon.client()?.request(&ControlRequest::Execute {
            request_id: Some(request_id.clone()),
            command: command.clone(),
        })?;
        match (response.ok, response.outcome) {
            (true, Some(outcome)) => acked.push(Acked {
                request_id,
                command,
                outcome,
            }),
            _ => bail!("opening desk {desk} failed: {:?}", response.error),
        }
    }
    if fsync {
        daemon.kill9()?;
        power_cut(&shadow, &data, usize::MAX)?;
        let daemon = Daemon::start(&config, &data, &[]).context("restart after the first cut")?;
        let missing = missing_from_log(&acked, &all_events(&daemon)?);
        if !missing.is_empty() {
            bail!(
                "the first boot lost acknowledged commands:\n{}",
                missing.join("\n")
            );
        }
        daemon.terminate()?;
    } else {
        let status = daemon.terminate()?;
        if !status.success() {
            bail!("first boot ended with {status}");
        }
    }

    let mut lost = Vec::new();
    for cut in 0..cuts {
        reset_shadow(&shadow)?;
        let mut env = under_shim.to_vec();
        if !fsync {
            env.push((UNSAFE_NO_FSYNC_ENV, "1"));
        }
        let daemon = Daemon::start(&config, &data, &env)
            .with_context(|| format!("boot under the shim before cut {cut}"))?;
        let delay = Duration::from_millis(load.rng().random_range(80..400));
        let (new_acks, _in_flight) = load.drive_until_killed(daemon, delay)?;
        if new_acks.is_empty() {
            bail!("cut {cut}: the load got no acknowledgement before the cut");
        }
        acked.extend(new_acks);

        // The power cut: keep only what was durable.
        power_cut(&shadow, &data, cut)?;

        let daemon = Daemon::start(&config, &data, &[])
            .with_context(|| format!("restart after power cut {cut}"))?;
        let log = all_events(&daemon)?;
        let missing = missing_from_log(&acked, &log);
        if !missing.is_empty() {
            lost.extend(missing);
            // Later cuts would count the same loss again.
            daemon.kill9()?;
            break;
        }
        assert_consistent(&daemon).with_context(|| format!("after power cut {cut}"))?;
        let status = daemon.terminate()?;
        if !status.success() {
            bail!("stop after cut {cut} ended with {status}");
        }
    }
    Ok(CutReport {
        acknowledged: acked.len(),
        lost,
    })
}

/// Replaces `data` with the durable image recorded in `shadow`.
fn power_cut(shadow: &Path, data: &Path, cut: usize) -> anyhow::Result<()> {
    let after = data.with_extension(format!("after-cut-{cut}"));
    materialize(shadow, &after)?;
    std::fs::remove_dir_all(data)?;
    std::fs::rename(&after, data)?;
    Ok(())
}

fn seed() -> u64 {
    std::env::var("LEITSYSTEM_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_123)
}

#[test]
fn acknowledged_commands_survive_power_cuts() -> anyhow::Result<()> {
    let report = run_power_cuts(12, true, seed())?;
    if !report.lost.is_empty() {
        bail!(
            "{} of {} acknowledged commands lost:\n{}",
            report.lost.len(),
            report.acknowledged,
            report.lost.join("\n")
        );
    }
    eprintln!(
        "power cuts: 12 cuts, {} acknowledged commands, none lost",
        report.acknowledged
    );
    Ok(())
}

#[test]
fn without_the_fsync_power_cuts_lose_acknowledged_commands() -> anyhow::Result<()> {
    let report = run_power_cuts(3, false, seed())?;
    eprintln!(
        "negative control: {} of {} acknowledged commands lost without fsync",
        report.lost.len(),
        report.acknowledged
    );
    if report.lost.is_empty() {
        bail!(
            "no acknowledged command was lost with the fsync switched off: the power-cut test \
             would not catch a missing fsync"
        );
    }
    Ok(())
}
