//! The README's demo as a newcomer types it: the demo runs (with `--data-dir` elsewhere, as
//! `daemon/demo.sh` allows), and every line of the README's "drive it by hand" block is run
//! by bash exactly as written, from a directory where `target/release/leitsystemd` is the
//! built daemon (the test build stands in for the release build `demo.sh` makes). Each must
//! succeed: `ctl` finds the demo, the demo's bookings check in by plain id and by signed code,
//! the simulated button calls a visitor, and `plugins` loads every plugin while the demo holds
//! the devices.
//!
//! The demo's ports are fixed (7101, 7102, 8080): only this test uses them.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use leitsystem_tests::daemon::daemon_binary;
use serde_json::Value;

/// The shell lines of the README's block after `marker`.
fn readme_block(marker: &str) -> anyhow::Result<Vec<String>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md"))?;
    let after = readme
        .split_once(marker)
        .with_context(|| format!("no '{marker}' in README.md"))?
        .1;
    let body = after
        .split_once("```sh\n")
        .context("no sh block after the marker")?
        .1
        .split_once("```")
        .context("the sh block does not end")?
        .0;
    Ok(body
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect())
}

#[test]
fn the_readme_demo_commands_work_as_written() -> anyhow::Result<()> {
    let commands = readme_block("In a second terminal drive it by hand")?;
    assert!(commands.len() >= 10, "{commands:?}");
    let home = tempfile::tempdir()?;
    let work = tempfile::tempdir()?;
    std::fs::create_dir_all(work.path().join("target/release"))?;
    std::os::unix::fs::symlink(
        daemon_binary()?,
        work.path().join("target/release/leitsystemd"),
    )?;
    let data = home.path().join("somewhere-else");
    let log = home.path().join("demo.log");
    let mut demo = Command::new("target/release/leitsystemd")
        .args(["demo", "--data-dir"])
        .arg(&data)
        .current_dir(work.path())
        .env("HOME", home.path())
        .env_remove("XDG_STATE_HOME")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let result = (|| -> anyhow::Result<()> {
        let code = data.join("demo/DEMO-2.code");
        let started = Instant::now();
        while !code.is_file() {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(30),
                "the demo made no DEMO-2.code in 30 s:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            anyhow::ensure!(
                demo.try_wait()?.is_none(),
                "the demo stopped:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut outputs = Vec::new();
        for command in &commands {
            let output = Command::new("bash")
                .args(["-c", command])
                .current_dir(work.path())
                .env("HOME", home.path())
                .env_remove("XDG_STATE_HOME")
                .stdin(Stdio::null())
                .output()?;
            let (out, err) = (
                String::from_utf8_lossy(&output.stdout).to_string(),
                String::from_utf8_lossy(&output.stderr).to_string(),
            );
            anyhow::ensure!(
                output.status.success(),
                "`{command}` failed ({}):\n{out}\n{err}",
                output.status
            );
            outputs.push((command.clone(), out + &err));
        }
        let output_of = |prefix: &str| -> String {
            outputs
                .iter()
                .find(|(c, _)| c.starts_with(prefix))
                .map(|(_, o)| o.clone())
                .unwrap_or_default()
        };
        assert!(
            output_of("target/release/leitsystemd ctl walk-in ausweis").contains("A-001"),
            "{outputs:#?}"
        );
        let plugins = output_of("target/release/leitsystemd plugins");
        assert!(
            !plugins.contains("ERROR") && plugins.matches(" OK").count() == 4,
            "{plugins}"
        );
        // What the visitors and clerks see: both demo bookings checked in, desk 1 calling
        // the next of them.
        let state: Value = serde_json::from_str(&output_of("target/release/leitsystemd ctl state"))
            .context("ctl state is not JSON")?;
        let tickets = state["state"]["tickets"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for booking in ["DEMO-1", "DEMO-2"] {
            assert!(
                tickets.iter().any(|t| t.to_string().contains(booking)),
                "{booking} did not check in: {state:#}"
            );
        }
        let desk1 = state["state"]["desks"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|d| d["id"] == "1")
            .cloned()
            .unwrap_or_default();
        assert!(
            !desk1["current"].is_null(),
            "the button called nobody: {desk1:#}"
        );
        Ok(())
    })();
    // A clean stop takes the note that lets `ctl` find the demo with it.
    let _ = Command::new("kill")
        .args(["-TERM", &demo.id().to_string()])
        .status();
    let status = demo.wait()?;
    result?;
    assert!(status.success(), "the demo did not stop cleanly: {status}");
    assert!(
        !home
            .path()
            .join(".local/state/leitsystem-demo.current")
            .exists(),
        "the note of a stopped demo is left"
    );
    Ok(())
}
