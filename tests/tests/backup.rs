//! Backup and restore as the town's IT admin uses them: `leitsystemd backup FILE` against the
//! running daemon while clerks and the terminal keep sending commands, then
//! `leitsystemd restore` into a stopped appliance and `leitsystemd verify`.
//!
//! What must hold: every command acknowledged before the backup was asked for is in the
//! restored log; the restored log is exactly the first events of the original one (a
//! consistent state, not a mix); the restored appliance goes on numbering tickets where the
//! backup ends; a damaged backup, a non-empty target and a running daemon are refused with
//! nothing changed.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, bail, ensure};
use leitsystem::domain::{Event, EventRecord};
use leitsystem_tests::daemon::{
    Daemon, all_events, assert_consistent, daemon_binary, walk_in, write_demo_config,
};
use leitsystem_tests::load::{Load, missing_from_log};
use rand::SeedableRng;
use rand::rngs::StdRng;

fn leitsystemd(args: &[&str]) -> anyhow::Result<std::process::Output> {
    Command::new(daemon_binary()?)
        .args(args)
        .output()
        .context("running leitsystemd")
}

/// `leitsystemd <command> --config CONFIG --data-dir DATA [extra...] [FILE]`, as the admin
/// types it.
fn admin(
    config: &Path,
    command: &str,
    data: &Path,
    extra: &[&str],
    file: Option<&Path>,
) -> anyhow::Result<std::process::Output> {
    let mut args = vec![
        command,
        "--config",
        path(config)?,
        "--data-dir",
        path(data)?,
    ];
    args.extend_from_slice(extra);
    if let Some(file) = file {
        args.push(path(file)?);
    }
    leitsystemd(&args)
}

fn text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn path(p: &Path) -> anyhow::Result<&str> {
    p.to_str().context("non-UTF-8 path")
}

fn issued_numbers(log: &[EventRecord]) -> Vec<String> {
    log.iter()
        .filter_map(|r| match &r.event {
            Event::TicketIssued { ticket } => Some(ticket.number.to_string()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_backup_under_load_restores_every_acknowledged_command() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let config = write_demo_config(dir.path(), &data)?;
    let daemon = Daemon::start(&config, &data, &[])?;

    // Phase 1: a mixed load (walk-ins, check-ins, calls, ...), all acknowledged before the
    // backup is asked for.
    let mut load = Load::new(StdRng::seed_from_u64(7), "backup");
    let never = Arc::new(AtomicBool::new(false));
    let (before, _) = load.drive(&mut daemon.client()?, &never, 400);
    ensure!(
        before.len() > 300,
        "only {} of 400 commands acknowledged",
        before.len()
    );

    // Phase 2: the load goes on from another connection while the backup is taken.
    let stop = Arc::new(AtomicBool::new(false));
    let mut during_load = Load::new(StdRng::seed_from_u64(8), "during");
    let mut client = daemon.client()?;
    let stop_load = stop.clone();
    let load_thread = std::thread::spawn(move || during_load.drive(&mut client, &stop_load, 5_000));
    std::thread::sleep(std::time::Duration::from_millis(150));
    let file = dir.path().join("rathaus.lsb");
    let backup = admin(&config, "backup", &data, &[], Some(&file))?;
    std::thread::sleep(std::time::Duration::from_millis(150));
    stop.store(true, Ordering::Relaxed);
    let (during, _) = load_thread
        .join()
        .map_err(|_| anyhow::anyhow!("the load thread panicked"))?;
    ensure!(
        backup.status.success(),
        "leitsystemd backup failed: {}",
        text(&backup)
    );
    eprintln!("{}", text(&backup).trim());
    ensure!(
        !during.is_empty(),
        "no command was acknowledged while the backup ran: it was not taken under load"
    );
    let original = all_events(&daemon)?;

    // A running daemon's store is never replaced.
    let refused = admin(&config, "restore", &data, &["--replace"], Some(&file))?;
    ensure!(
        !refused.status.success() && text(&refused).contains("running daemon"),
        "restore over the running daemon's store was not refused: {}",
        text(&refused)
    );
    daemon.kill9()?;

    // Restore into a new data directory of the stopped appliance, then verify it.
    let restored = dir.path().join("restored");
    let restore = admin(&config, "restore", &restored, &[], Some(&file))?;
    ensure!(
        restore.status.success(),
        "leitsystemd restore failed: {}",
        text(&restore)
    );
    // The restored log is a new history after the backup's last seq: a new epoch, so a
    // website does not drop its new events as seqs it saw before (daemon/docs/mqtt.md).
    let header_line = std::fs::read(&file)?
        .split(|&b| b == b'\n')
        .nth(1)
        .map(<[u8]>::to_vec)
        .context("the backup has no header line")?;
    let header: serde_json::Value = serde_json::from_slice(&header_line)?;
    let old_epoch = header["epoch"].as_str().context("no epoch in the header")?;
    ensure!(
        old_epoch.len() == 16 && !text(&restore).contains(old_epoch),
        "the restored store kept the epoch {old_epoch}: {}",
        text(&restore)
    );
    ensure!(
        text(&restore).contains("new log epoch "),
        "restore did not name the new epoch: {}",
        text(&restore)
    );
    let verify = admin(&config, "verify", &restored, &[], None)?;
    ensure!(
        verify.status.success() && text(&verify).contains("consistent"),
        "leitsystemd verify on the restored store: {}",
        text(&verify)
    );

    let daemon = Daemon::start(&config, &restored, &[])?;
    assert_consistent(&daemon)?;
    let log = all_events(&daemon)?;
    let lost = missing_from_log(&before, &log);
    if !lost.is_empty() {
        bail!(
            "{} commands acknowledged before the backup are missing after the restore:\n{}",
            lost.len(),
            lost.join("\n")
        );
    }
    // One consistent state: the restored log is the original's first events, unchanged.
    ensure!(
        log.len() <= original.len() && !log.is_empty(),
        "restored {} events, the original has {}",
        log.len(),
        original.len()
    );
    for (restored_event, original_event) in log.iter().zip(&original) {
        ensure!(
            serde_json::to_value(restored_event)? == serde_json::to_value(original_event)?,
            "seq {} differs after the restore:\n{restored_event:?}\n{original_event:?}",
            restored_event.seq
        );
    }
    eprintln!(
        "backup test: {} commands before and {} during the backup; restored {} of {} events",
        before.len(),
        during.len(),
        log.len(),
        original.len()
    );
    // The restored appliance numbers on from the backup: no call number twice in a day.
    let issued = issued_numbers(&log);
    let next = walk_in(&daemon, "ausweis")?;
    ensure!(
        !issued.contains(&next),
        "the restored appliance issued {next} again (already in the backup)"
    );
    daemon.terminate()?;
    Ok(())
}

#[test]
fn a_damaged_backup_or_a_used_target_is_refused_and_nothing_changes() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let config = write_demo_config(dir.path(), &data)?;
    let daemon = Daemon::start(&config, &data, &[])?;
    let first = walk_in(&daemon, "meldung")?;
    daemon.terminate()?;

    // The stopped appliance is backed up from its store directly.
    let file = dir.path().join("offline.lsb");
    let backup = admin(&config, "backup", &data, &[], Some(&file))?;
    ensure!(
        backup.status.success() && text(&backup).contains("stopped appliance"),
        "offline backup: {}",
        text(&backup)
    );

    // One changed byte: refused whole, the target directory is not even created.
    let mut bytes = std::fs::read(&file)?;
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    let damaged = dir.path().join("damaged.lsb");
    std::fs::write(&damaged, &bytes)?;
    let target = dir.path().join("target");
    let out = admin(&config, "restore", &target, &[], Some(&damaged))?;
    ensure!(
        !out.status.success() && text(&out).contains("checksum"),
        "a damaged backup was not refused by its checksum: {}",
        text(&out)
    );
    ensure!(
        !target.exists(),
        "a refused restore created {}",
        target.display()
    );

    // A non-empty data directory is only replaced on request, and then kept aside.
    let out = admin(&config, "restore", &data, &[], Some(&file))?;
    ensure!(
        !out.status.success() && text(&out).contains("--replace"),
        "restore into a used data directory without --replace: {}",
        text(&out)
    );
    let out = admin(&config, "restore", &data, &["--replace"], Some(&file))?;
    ensure!(out.status.success(), "restore --replace: {}", text(&out));
    let kept = std::fs::read_dir(dir.path())?
        .filter_map(|e| e.ok())
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("data.replaced-")
        });
    ensure!(
        kept,
        "the replaced data directory was not kept: {}",
        text(&out)
    );
    let daemon = Daemon::start(&config, &data, &[])?;
    let log = all_events(&daemon)?;
    ensure!(
        issued_numbers(&log) == vec![first.clone()],
        "after the restore the log holds tickets {:?}, expected [{first}]",
        issued_numbers(&log)
    );
    daemon.terminate()?;
    Ok(())
}
