//! Driver plugins in the real daemon, with the real built `.so` files: a scan on the sim
//! scanner prints a ticket, "next" on the sim buttons reaches the display; broken plugins (ABI
//! mismatch, no entry symbol, not a library, missing) are refused with clear errors while the
//! other devices keep working; panics in create, in a message handler and on a plugin thread
//! leave the daemon running and the device restarted; a plugin written in C runs as a device.
//!
//! Why over 600 lines: one scenario per test, each what a user sees of the plugin host; the helpers they share are at the top, and splitting would only scatter them.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use leitsystem::control::ControlRequest;
use leitsystem::domain::{Command, DeskId, ServiceId};
use leitsystem::plugin_host::DeviceState;
use leitsystem_tests::daemon::{
    Daemon, assert_consistent, book, build_dir, compile_c_plugin, daemon_binary, device,
    device_line, devices, execute, free_port, request, sim_scanner, wait_for, walk_in,
    write_config_with_devices,
};

/// A walk-in, desk 1 opens and calls it: sends a `display` message to every display.
fn issue_and_call(daemon: &Daemon) -> anyhow::Result<()> {
    execute(
        daemon,
        Command::WalkIn {
            service: ServiceId::new("ausweis"),
            priority: 1,
        },
    )?;
    leitsystem_tests::daemon::open_and_call_next(daemon, "1")?;
    Ok(())
}

fn sim_devices(scanner: u16, buttons: u16) -> String {
    format!(
        r#"{}
[[device]]
id = "buttons"
plugin = "libleitsystem_sim.so"
role = "buttons"
desks = ["1", "3"]
options = {{ port = {buttons}, lights_file = "${{data_dir}}/lights.json" }}

[[device]]
id = "printer"
plugin = "libleitsystem_sim.so"
role = "printer"
options = {{ dir = "${{data_dir}}/printed", paper_out_file = "${{data_dir}}/paper-out" }}

[[device]]
id = "display"
plugin = "libleitsystem_sim.so"
role = "display"
options = {{ file = "${{data_dir}}/display.json" }}
"#,
        sim_scanner(scanner)
    )
}

/// Scans `booking` and waits for its printed ticket; returns the ticket number.
fn scan_and_print(
    daemon: &Daemon,
    data: &Path,
    scanner: u16,
    booking: &str,
) -> anyhow::Result<String> {
    book(daemon, booking, "meldung")?;
    wait_for("the scanner to listen", Duration::from_secs(10), || {
        Ok(device_line(scanner, booking).ok())
    })?;
    wait_for("a printed ticket", Duration::from_secs(10), || {
        let Ok(entries) = std::fs::read_dir(data.join("printed")) else {
            return Ok(None);
        };
        for entry in entries {
            let body = std::fs::read_to_string(entry?.path())?;
            let ticket: serde_json::Value = serde_json::from_str(&body)?;
            if body.contains("Termin ") {
                return Ok(ticket["number"].as_str().map(str::to_string));
            }
        }
        Ok(None)
    })
}

#[test]
fn a_scan_prints_a_ticket_and_a_button_press_reaches_the_display() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let (scanner, buttons) = (free_port()?, free_port()?);
    let config = write_config_with_devices(dir.path(), &data, &sim_devices(scanner, buttons))?;
    let daemon = Daemon::start(&config, &data, &[])?;
    let ticket = scan_and_print(&daemon, &data, scanner, "B-100")?;
    assert_eq!(ticket, "M-001");

    assert_eq!(device_line(buttons, "1 open")?, "OK");
    assert_eq!(device_line(buttons, "1 next")?, "OK");
    let shown = wait_for("the call on the display", Duration::from_secs(10), || {
        let Ok(body) = std::fs::read_to_string(data.join("display.json")) else {
            return Ok(None);
        };
        let state: serde_json::Value = serde_json::from_str(&body)?;
        Ok((state["calls"][0]["ticket"] == "M-001").then_some(state))
    })?;
    assert_eq!(shown["calls"][0]["desk"], "1");
    assert!(
        !shown.to_string().contains("B-100"),
        "the display shows no booking data: {shown}"
    );

    // A button for a desk this box is not bound to changes nothing.
    assert_eq!(device_line(buttons, "2 open")?, "OK");
    let state = request(&daemon, &ControlRequest::State)?
        .state
        .context("state")?;
    let desk2 = state
        .desks
        .iter()
        .find(|d| d.id == DeskId::new("2"))
        .context("desk 2")?;
    assert_eq!(desk2.mode, leitsystem::domain::DeskMode::Closed);

    // The desk's alarm button: a silent alarm in the log (for the admin and the website),
    // and nothing of it on the public display.
    assert_eq!(device_line(buttons, "1 alarm")?, "OK");
    wait_for("the silent alarm", Duration::from_secs(10), || {
        Ok(leitsystem_tests::daemon::all_events(&daemon)?
            .into_iter()
            .find(|r| {
                matches!(&r.event, leitsystem::domain::Event::SilentAlarm { desk, .. } if desk.as_str() == "1")
            }))
    })?;
    std::thread::sleep(Duration::from_millis(300));
    let shown = std::fs::read_to_string(data.join("display.json"))?;
    assert!(
        !shown.contains("alarm"),
        "the alarm reached the display: {shown}"
    );
    for d in devices(&daemon)? {
        assert_eq!(d.state, DeviceState::Running, "{d:?}");
    }
    assert_consistent(&daemon)?;
    assert!(daemon.terminate()?.success());

    // The display is derived from the durable log: after a restart it shows the call again.
    std::fs::remove_file(data.join("display.json"))?;
    let daemon = Daemon::start(&config, &data, &[])?;
    wait_for(
        "the call on the display after a restart",
        Duration::from_secs(10),
        || {
            let Ok(body) = std::fs::read_to_string(data.join("display.json")) else {
                return Ok(None);
            };
            let state: serde_json::Value = serde_json::from_str(&body)?;
            Ok((state["calls"][0]["ticket"] == "M-001").then_some(()))
        },
    )?;
    assert!(daemon.terminate()?.success());
    Ok(())
}

/// The state of `ticket` as the control socket reports it.
fn ticket_state(daemon: &Daemon, ticket: &str) -> anyhow::Result<String> {
    let state = request(daemon, &ControlRequest::State)?
        .state
        .context("state")?;
    let t = state
        .tickets
        .iter()
        .find(|t| t.number.as_str() == ticket)
        .with_context(|| format!("no ticket {ticket}"))?;
    Ok(t.state.name().to_string())
}

/// Regression: "next" pressed twice within a second on a button box finished A-001 unserved
/// and called A-002; a parked visitor could not be resumed from a button box at all.
#[test]
fn a_double_next_on_the_button_box_calls_once_and_park_resume_next_brings_the_visitor_back()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let (scanner, buttons) = (free_port()?, free_port()?);
    let config = write_config_with_devices(dir.path(), &data, &sim_devices(scanner, buttons))?;
    let daemon = Daemon::start(&config, &data, &[])?;
    for _ in 0..2 {
        walk_in(&daemon, "ausweis")?;
    }
    wait_for("the button box to listen", Duration::from_secs(10), || {
        Ok(device_line(buttons, "1 open").ok())
    })?;
    // The press and its bounce.
    assert_eq!(device_line(buttons, "1 next")?, "OK");
    assert_eq!(device_line(buttons, "1 next")?, "OK");
    wait_for("A-001 called", Duration::from_secs(10), || {
        Ok((ticket_state(&daemon, "A-001")? == "called").then_some(()))
    })?;
    // Both presses have reached the engine once the display shows the call; give the second
    // one time to arrive, then look at what the visitors see.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(ticket_state(&daemon, "A-001")?, "called");
    assert_eq!(ticket_state(&daemon, "A-002")?, "waiting");
    let display: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("display.json"))?)?;
    let shown: Vec<&str> = display["calls"]
        .as_array()
        .context("calls")?
        .iter()
        .filter_map(|c| c["ticket"].as_str())
        .collect();
    assert_eq!(
        shown,
        ["A-001"],
        "the display called one visitor: {display}"
    );

    // Park A-001, serve A-002, resume A-001 from the box: the next "next" calls A-001.
    for line in ["1 start", "1 park", "1 next"] {
        assert_eq!(device_line(buttons, line)?, "OK");
    }
    wait_for("A-002 called", Duration::from_secs(10), || {
        Ok((ticket_state(&daemon, "A-002")? == "called").then_some(()))
    })?;
    assert_eq!(ticket_state(&daemon, "A-001")?, "parked");
    assert_eq!(device_line(buttons, "1 start")?, "OK");
    assert_eq!(device_line(buttons, "1 resume")?, "OK");
    wait_for("A-001 back in line", Duration::from_secs(10), || {
        Ok((ticket_state(&daemon, "A-001")? == "waiting").then_some(()))
    })?;
    assert_eq!(device_line(buttons, "1 next")?, "OK");
    wait_for("A-001 called again", Duration::from_secs(10), || {
        Ok((ticket_state(&daemon, "A-001")? == "called").then_some(()))
    })?;
    assert_eq!(ticket_state(&daemon, "A-002")?, "done");
    assert_consistent(&daemon)?;
    assert!(daemon.terminate()?.success());
    Ok(())
}

/// The desk lights the sim button box was sent last: (desk, called, alarm raised).
fn lights(data: &Path) -> anyhow::Result<Option<Vec<(String, bool, bool)>>> {
    let Ok(text) = std::fs::read_to_string(data.join("lights.json")) else {
        return Ok(None);
    };
    let list: Vec<serde_json::Value> = serde_json::from_str(&text)?;
    Ok(Some(
        list.iter()
            .map(|l| {
                (
                    l["desk"].as_str().unwrap_or_default().to_string(),
                    l["called"].as_bool().unwrap_or_default(),
                    l["alarm_at"].is_i64(),
                )
            })
            .collect(),
    ))
}

fn wait_lights(data: &Path, what: &str, want: &[(&str, bool, bool)]) -> anyhow::Result<()> {
    let want: Vec<(String, bool, bool)> = want
        .iter()
        .map(|(d, c, a)| (d.to_string(), *c, *a))
        .collect();
    wait_for(what, Duration::from_secs(10), || {
        Ok((lights(data)?.as_ref() == Some(&want)).then_some(()))
    })
    .with_context(|| format!("the box's lights are {:?}", lights(data)))
}

#[test]
fn the_button_box_gets_its_desks_lights_lit_while_called_and_the_alarm_never_on_the_display()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let (scanner, buttons) = (free_port()?, free_port()?);
    let config = write_config_with_devices(dir.path(), &data, &sim_devices(scanner, buttons))?;
    let daemon = Daemon::start(&config, &data, &[])?;
    // At start: the box's own desks (1 and 3 of the four), all dark.
    wait_lights(
        &data,
        "the first lights",
        &[("1", false, false), ("3", false, false)],
    )?;
    walk_in(&daemon, "ausweis")?;
    wait_for("the button box to listen", Duration::from_secs(10), || {
        Ok(device_line(buttons, "1 open").ok())
    })?;
    assert_eq!(device_line(buttons, "1 next")?, "OK");
    wait_lights(
        &data,
        "desk 1 lit while A-001 is called",
        &[("1", true, false), ("3", false, false)],
    )?;
    assert_eq!(device_line(buttons, "1 start")?, "OK");
    wait_lights(
        &data,
        "desk 1 dark once A-001 is served",
        &[("1", false, false), ("3", false, false)],
    )?;
    // The silent alarm of desk 3 reaches its box's light, and nothing of it the display.
    assert_eq!(device_line(buttons, "3 alarm")?, "OK");
    wait_lights(
        &data,
        "desk 3's alarm",
        &[("1", false, false), ("3", false, true)],
    )?;
    let display = std::fs::read_to_string(data.join("display.json"))?;
    assert!(!display.contains("alarm"), "{display}");
    // Acknowledged (here with `ctl acknowledge-alarm`): the light stops showing it.
    let alarm = request(&daemon, &ControlRequest::State)?
        .state
        .context("state")?
        .alarms[0]
        .seq;
    let status = std::process::Command::new(daemon_binary()?)
        .args(["ctl", "--socket"])
        .arg(&daemon.socket)
        .args(["acknowledge-alarm", &alarm.to_string()])
        .status()?;
    assert!(status.success(), "ctl acknowledge-alarm failed");
    wait_lights(
        &data,
        "desk 3's alarm acknowledged",
        &[("1", false, false), ("3", false, false)],
    )?;
    assert!(daemon.terminate()?.success());
    Ok(())
}

#[test]
fn a_restarted_display_is_sent_the_present_state_without_waiting_for_a_change() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let (scanner, buttons) = (free_port()?, free_port()?);
    let record = dir.path().join("instances.log");
    let restarting = format!(
        "\n[[device]]\nid = \"restarting\"\nplugin = \"libleitsystem_panicky.so\"\nrole = \"display\"\n\
         options = {{ panic_in = \"thread\", record = \"{}\" }}\n",
        record.display()
    );
    let config = write_config_with_devices(
        dir.path(),
        &data,
        &format!("{}{restarting}", sim_devices(scanner, buttons)),
    )?;
    let daemon = Daemon::start(&config, &data, &[])?;
    issue_and_call(&daemon)?;
    // Each instance lives 100 ms (its thread panics); nothing changes meanwhile.
    wait_for("three restarts", Duration::from_secs(20), || {
        Ok((device(&daemon, "restarting")?.restarts >= 3).then_some(()))
    })?;
    let text = std::fs::read_to_string(&record)?;
    let instances: Vec<&str> = text.split("create\n").skip(1).collect();
    assert!(instances.len() >= 3, "{text}");
    let last_seq = request(&daemon, &ControlRequest::State)?
        .state
        .context("state")?
        .last_seq;
    // Every restarted instance was sent the display state, at once, of the latest event.
    for instance in instances.iter().skip(1).take(instances.len() - 2) {
        assert_eq!(
            instance.lines().next(),
            Some(format!("display {last_seq}").as_str()),
            "a restarted instance was not sent the present state:\n{text}"
        );
    }
    assert!(daemon.terminate()?.success());
    Ok(())
}

/// The print jobs a sim printer wrote into `dir`, by ticket number (one entry per job).
fn printed_numbers(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut numbers = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(numbers);
    };
    for entry in entries {
        let body = std::fs::read_to_string(entry?.path())?;
        let ticket: serde_json::Value = serde_json::from_str(&body)?;
        if let Some(n) = ticket["number"].as_str() {
            numbers.push(n.to_string());
        }
    }
    numbers.sort();
    Ok(numbers)
}

/// Regression: with two printers every ticket went to both, the last outcome won, and any
/// successful print reprinted "failed" tickets on all printers (A-002 printed six times while
/// the other printer was down; another ticket never reached it).
#[test]
fn two_terminals_each_print_their_own_tickets_once_even_while_the_other_printer_is_out()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let (scan_a, scan_b) = (free_port()?, free_port()?);
    let terminal = |name: &str, port: u16| {
        format!(
            r#"
[[device]]
id = "scanner-{name}"
plugin = "libleitsystem_sim.so"
role = "scanner"
terminal = "{name}"
options = {{ port = {port} }}

[[device]]
id = "printer-{name}"
plugin = "libleitsystem_sim.so"
role = "printer"
terminal = "{name}"
options = {{ dir = "${{data_dir}}/printed-{name}", paper_out_file = "${{data_dir}}/paper-out-{name}" }}
"#
        )
    };
    let devices = format!("{}{}", terminal("a", scan_a), terminal("b", scan_b));
    let config = write_config_with_devices(dir.path(), &data, &devices)?;
    let daemon = Daemon::start(&config, &data, &[])?;
    for (booking, port) in [("B-1", scan_a), ("B-2", scan_b)] {
        book(&daemon, booking, "meldung")?;
        wait_for("the scanner", Duration::from_secs(10), || {
            Ok(device_line(port, booking).ok())
        })?;
    }
    wait_for("both tickets printed", Duration::from_secs(10), || {
        Ok((printed_numbers(&data.join("printed-a"))?.len()
            + printed_numbers(&data.join("printed-b"))?.len()
            == 2)
            .then_some(()))
    })?;
    assert_eq!(printed_numbers(&data.join("printed-a"))?, ["M-001"]);
    assert_eq!(printed_numbers(&data.join("printed-b"))?, ["M-002"]);
    // Printer b runs out of paper; a visitor at b gets a failed print, a at a prints on.
    std::fs::write(data.join("paper-out-b"), "")?;
    wait_for("paper out reported", Duration::from_secs(10), || {
        Ok((device(&daemon, "printer-b")?.paper.as_deref() == Some("out")).then_some(()))
    })?;
    book(&daemon, "B-3", "meldung")?;
    device_line(scan_b, "B-3")?;
    wait_for("the failed print", Duration::from_secs(10), || {
        Ok((device(&daemon, "printer-b")?.print_failures == 1).then_some(()))
    })?;
    for booking in ["B-4", "B-5"] {
        book(&daemon, booking, "meldung")?;
        device_line(scan_a, booking)?;
    }
    wait_for("a prints on", Duration::from_secs(10), || {
        Ok((printed_numbers(&data.join("printed-a"))?.len() == 3).then_some(()))
    })?;
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        printed_numbers(&data.join("printed-a"))?,
        ["M-001", "M-004", "M-005"],
        "a printed its own tickets once, none of b's"
    );
    assert_eq!(printed_numbers(&data.join("printed-b"))?, ["M-002"]);
    // Paper back at b: its own failed ticket is printed there, once; a prints nothing again.
    std::fs::remove_file(data.join("paper-out-b"))?;
    wait_for(
        "b to reprint its failed ticket",
        Duration::from_secs(15),
        || Ok((printed_numbers(&data.join("printed-b"))?.len() == 2).then_some(())),
    )
    .with_context(|| {
        format!(
            "devices: {:#?}\nlog:\n{}",
            devices_of(&daemon),
            daemon.log_tail()
        )
    })?;
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        printed_numbers(&data.join("printed-b"))?,
        ["M-002", "M-003"]
    );
    assert_eq!(
        printed_numbers(&data.join("printed-a"))?,
        ["M-001", "M-004", "M-005"]
    );
    assert_consistent(&daemon)?;
    assert!(daemon.terminate()?.success());
    Ok(())
}

fn devices_of(daemon: &Daemon) -> Vec<leitsystem::plugin_host::DeviceHealth> {
    devices(daemon).unwrap_or_default()
}

/// Regression: a job that never reached the printer (a full queue, a restarting driver, a
/// printer switched off mid-job) left its ticket "pending" for good: no paper, no reprint.
#[test]
fn a_print_job_nobody_answers_is_shown_failed_and_reprinted_when_the_printer_is_back()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let devices = r#"
[[device]]
id = "printer"
plugin = "libleitsystem_sim.so"
role = "printer"
options = { dir = "${data_dir}/printed", offline_file = "OFFLINE" }
"#;
    let offline = dir.path().join("offline");
    let devices = devices.replace("OFFLINE", &offline.display().to_string());
    let config = write_config_with_devices(dir.path(), &data, &devices)?;
    let text = std::fs::read_to_string(&config)?.replacen(
        "[plugins]\n",
        "[plugins]\nprint_answer_seconds = 2\n",
        1,
    );
    std::fs::write(&config, text)?;
    std::fs::write(&offline, "")?;
    let daemon = Daemon::start(&config, &data, &[])?;
    walk_in(&daemon, "ausweis")?;
    // 2 s without an answer: failed. Generous bound, for a loaded CI machine (it once took
    // over 15 s there while two builds ran alongside); the daemon's log says why on failure.
    let failed = wait_for(
        "the print to count as failed",
        Duration::from_secs(30),
        || {
            let state = request(&daemon, &ControlRequest::State)?
                .state
                .context("state")?;
            Ok(state
                .tickets
                .into_iter()
                .find(|t| t.number.as_str() == "A-001")
                .and_then(|t| match t.print {
                    leitsystem::domain::PrintState::Failed { reason, .. } => Some(reason),
                    _ => None,
                }))
        },
    )
    .with_context(|| daemon.log_tail())?;
    assert!(failed.contains("no answer"), "{failed}");
    assert!(printed_numbers(&data.join("printed"))?.is_empty());
    std::fs::remove_file(&offline)?;
    wait_for("the reprint", Duration::from_secs(15), || {
        Ok((printed_numbers(&data.join("printed"))? == ["A-001"]).then_some(()))
    })?;
    assert!(daemon.terminate()?.success());
    Ok(())
}

#[test]
fn broken_plugins_are_refused_clearly_and_the_other_devices_keep_working() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let abi99 = compile_c_plugin(
        Path::new("plugins/tests/c/echo_plugin.c"),
        &dir.path().join("abi99.so"),
        &["TEST_ABI_VERSION=99"],
    )?;
    let no_entry = compile_c_plugin(
        Path::new("tests/c/no_entry.c"),
        &dir.path().join("noentry.so"),
        &[],
    )?;
    // Needs a function no library has: refused at load (RTLD_NOW), not a crash at first call.
    let unresolved = compile_c_plugin(
        Path::new("plugins/tests/c/echo_plugin.c"),
        &dir.path().join("unresolved.so"),
        &["TEST_UNRESOLVED_SYMBOL"],
    )?;
    let fake = dir.path().join("fake.so");
    std::fs::write(&fake, "this is a text file, not a library\n")?;
    let (scanner, buttons) = (free_port()?, free_port()?);
    let broken = format!(
        r#"
[[device]]
id = "abi"
plugin = "{}"
role = "display"

[[device]]
id = "noentry"
plugin = "{}"
role = "display"

[[device]]
id = "fake"
plugin = "{}"
role = "display"

[[device]]
id = "unresolved"
plugin = "{}"
role = "display"

[[device]]
id = "missing"
plugin = "libnot_there.so"
role = "display"

[[device]]
id = "wrongrole"
plugin = "libleitsystem_sim.so"
role = "display"
options = {{ }}
"#,
        abi99.display(),
        no_entry.display(),
        fake.display(),
        unresolved.display()
    );
    let config = write_config_with_devices(
        dir.path(),
        &data,
        &format!("{}{broken}", sim_devices(scanner, buttons)),
    )?;

    // `leitsystemd plugins` reports each device with its error and fails.
    let out = std::process::Command::new(daemon_binary()?)
        .args(["plugins", "--config", &config.display().to_string()])
        .output()?;
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{report}");
    for expected in [
        "plugin built for ABI version 99, but this leitsystemd speaks ABI version 1",
        "no entry symbol `leitsystem_plugin_entry`: not a Leitsystem plugin",
        "fake.so: not a loadable shared library",
        "undefined symbol: leitsystem_test_missing_function",
        "libnot_there.so: file not found",
        "refused device 'wrongrole': option 'file' (a path) is missing",
    ] {
        assert!(
            report.contains(expected),
            "missing '{expected}' in:\n{report}"
        );
    }
    let scanner_line = report
        .lines()
        .find(|l| l.starts_with("scanner"))
        .unwrap_or_default();
    assert!(
        scanner_line.contains("sim 0.1.0")
            && scanner_line.contains(" 1 ")
            && scanner_line.ends_with("OK"),
        "{report}"
    );
    assert!(
        !data.exists(),
        "checking the plugins must not write into the data directory"
    );

    // The daemon runs anyway: broken devices are reported, the others work.
    let daemon = Daemon::start(&config, &data, &[])?;
    for (id, text) in [
        ("abi", "ABI version 99"),
        ("noentry", "no entry symbol"),
        ("fake", "not a loadable"),
        ("missing", "file not found"),
        ("unresolved", "leitsystem_test_missing_function"),
    ] {
        let health = device(&daemon, id)?;
        assert_eq!(health.state, DeviceState::NotLoaded, "{health:?}");
        assert!(
            health.last_error.as_deref().unwrap_or("").contains(text),
            "{health:?}"
        );
    }
    let wrong = wait_for(
        "the refused device to be marked failed",
        Duration::from_secs(10),
        || {
            let h = device(&daemon, "wrongrole")?;
            Ok((h.state == DeviceState::Failed).then_some(h))
        },
    )?;
    assert!(
        wrong
            .last_error
            .unwrap_or_default()
            .contains("option 'file'")
    );
    assert_eq!(scan_and_print(&daemon, &data, scanner, "B-200")?, "M-001");
    // A call goes to every display: the daemon lives on.
    issue_and_call(&daemon)?;
    assert!(daemon.terminate()?.success());
    Ok(())
}

#[test]
fn panicking_plugins_are_restarted_and_the_daemon_survives() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let (scanner, buttons) = (free_port()?, free_port()?);
    let panicky = r#"
[[device]]
id = "panic-create"
plugin = "libleitsystem_panicky.so"
role = "display"
options = { panic_in = "create" }

[[device]]
id = "panic-message"
plugin = "libleitsystem_panicky.so"
role = "display"
options = { panic_in = "message" }

[[device]]
id = "panic-thread"
plugin = "libleitsystem_panicky.so"
role = "display"
options = { panic_in = "thread" }
"#;
    let config = write_config_with_devices(
        dir.path(),
        &data,
        &format!("{}{panicky}", sim_devices(scanner, buttons)),
    )?;
    let mut daemon = Daemon::start(&config, &data, &[])?;
    // A call sends a display message to every display, the panicking one included.
    issue_and_call(&daemon)?;
    for (id, reason) in [
        (
            "panic-create",
            "panicked in create: deliberate panic in create",
        ),
        (
            "panic-message",
            "panicked handling a message: deliberate panic handling a message",
        ),
        (
            "panic-thread",
            "thread 'panicky-worker' panicked: deliberate panic on a plugin thread",
        ),
    ] {
        let health = wait_for(
            &format!("{id} to be restarted"),
            Duration::from_secs(15),
            || {
                if let Some(status) = daemon.try_status() {
                    bail!(
                        "leitsystemd exited with {status}; log:\n{}",
                        daemon.log_tail()
                    );
                }
                let h = device(&daemon, id)?;
                Ok((h.restarts >= 1 && h.last_error.as_deref() == Some(reason)).then_some(h))
            },
        )?;
        assert!(health.restarts >= 1, "{health:?}");
    }
    // The queue and the good devices keep working.
    assert_eq!(scan_and_print(&daemon, &data, scanner, "B-300")?, "M-001");
    assert_consistent(&daemon)?;
    assert!(
        daemon.terminate()?.success(),
        "a clean stop despite the panicking plugins"
    );
    Ok(())
}

#[test]
fn a_plugin_written_in_c_runs_as_a_device() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let echo = compile_c_plugin(
        Path::new("plugins/tests/c/echo_plugin.c"),
        &dir.path().join("libecho.so"),
        &[],
    )?;
    let config = write_config_with_devices(
        dir.path(),
        &data,
        &format!(
            "[[device]]\nid = \"c-display\"\nplugin = \"{}\"\nrole = \"display\"\n",
            echo.display()
        ),
    )?;
    let daemon = Daemon::start(&config, &data, &[("RUST_LOG", "info")])?;
    assert_eq!(
        device(&daemon, "c-display")?.plugin.as_deref(),
        Some("c-echo 1.0.0")
    );
    issue_and_call(&daemon)?;
    wait_for("the C plugin's log line", Duration::from_secs(10), || {
        Ok(std::fs::read_to_string(&daemon.log)?
            .contains("C plugin got message 1 of")
            .then_some(()))
    })?;
    let _ = build_dir()?;
    assert!(daemon.terminate()?.success());
    Ok(())
}

/// A driver whose call never returns (waiting for a device that never answers) is shown as
/// stuck, the other devices work on, and the daemon still stops within systemd's
/// `TimeoutStopSec` (20 s): it used to wait for the call forever.
#[test]
fn a_plugin_call_that_never_returns_is_shown_stuck_and_does_not_hold_up_the_stop()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let blocking = compile_c_plugin(
        Path::new("plugins/tests/c/echo_plugin.c"),
        &dir.path().join("blocking.so"),
        &["TEST_BLOCK_IN_SEND"],
    )?;
    let (scanner, buttons) = (free_port()?, free_port()?);
    let config = write_config_with_devices(
        dir.path(),
        &data,
        &format!(
            "{}\n[[device]]\nid = \"hung-display\"\nplugin = \"{}\"\nrole = \"display\"\n",
            sim_devices(scanner, buttons),
            blocking.display()
        ),
    )?;
    let daemon = Daemon::start(&config, &data, &[])?;
    issue_and_call(&daemon)?;
    let hung = wait_for(
        "the hung device to be shown stuck",
        Duration::from_secs(30),
        || {
            let h = device(&daemon, "hung-display")?;
            Ok((h.state == DeviceState::Stuck).then_some(h))
        },
    )?;
    assert!(
        hung.last_error
            .as_deref()
            .is_some_and(|e| e.contains("`send` has not returned")),
        "{hung:?}"
    );
    // The sim display got the call; scanning and printing work on.
    wait_for(
        "the sim display to show the call",
        Duration::from_secs(10),
        || {
            let shown = std::fs::read_to_string(data.join("display.json")).unwrap_or_default();
            Ok(shown.contains("A-001").then_some(()))
        },
    )?;
    assert_eq!(scan_and_print(&daemon, &data, scanner, "B-300")?, "M-001");
    let started = std::time::Instant::now();
    let status = daemon.terminate()?;
    assert!(status.success(), "{status}");
    eprintln!("stopped in {:?} with a hung plugin call", started.elapsed());
    Ok(())
}

/// A scanner that floods the daemon (a stuck key, a faulty reader sending one code in a loop)
/// must not cost the clerks their button presses: each device has its own emit queue, and the
/// router takes from them in turn. All devices used to share one queue of 1,024.
#[test]
fn a_flooding_scanner_does_not_drop_the_button_presses() -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let (scanner, buttons) = (free_port()?, free_port()?);
    let config = write_config_with_devices(dir.path(), &data, &sim_devices(scanner, buttons))?;
    let daemon = Daemon::start(&config, &data, &[])?;
    wait_for("the scanner to listen", Duration::from_secs(10), || {
        Ok(device_line(scanner, "NOT-A-CODE").ok())
    })?;
    wait_for("the button box to listen", Duration::from_secs(10), || {
        Ok(device_line(buttons, "3 pause").ok())
    })?;
    let mut flood = std::net::TcpStream::connect(("127.0.0.1", scanner))?;
    let mut replies = flood.try_clone()?;
    let drain = std::thread::spawn(move || {
        let mut sink = [0u8; 65_536];
        while matches!(replies.read(&mut sink), Ok(n) if n > 0) {}
    });
    let lines: String = (0..300_000).map(|i| format!("BK-FLOOD-{i}\n")).collect();
    let writer = std::thread::spawn(move || flood.write_all(lines.as_bytes()));
    // While the flood overflows (the scanner's own messages are being dropped): desk 1
    // opens, desk 3 opens, desk 1 pauses, desk 3 closes.
    wait_for("the flood to overflow", Duration::from_secs(30), || {
        Ok((device(&daemon, "scanner")?.dropped_messages > 0).then_some(()))
    })?;
    for line in ["1 open", "3 open", "1 pause", "3 close"] {
        assert_eq!(device_line(buttons, line)?, "OK");
    }
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("writer panicked"))??;
    let modes = || -> anyhow::Result<Vec<String>> {
        let view = request(&daemon, &leitsystem::control::ControlRequest::State)?
            .state
            .context("no state")?;
        Ok(["1", "3"]
            .iter()
            .map(|id| {
                view.desks
                    .iter()
                    .find(|d| d.id.as_str() == *id)
                    .map_or_else(String::new, |d| format!("{:?}", d.mode))
            })
            .collect())
    };
    let settled = wait_for(
        "the presses to take effect",
        Duration::from_secs(20),
        || {
            let now = modes()?;
            Ok((now == ["Paused", "Closed"]).then_some(now))
        },
    );
    let buttons_health = device(&daemon, "buttons")?;
    let scanner_health = device(&daemon, "scanner")?;
    eprintln!(
        "dropped: scanner {}, buttons {}",
        scanner_health.dropped_messages, buttons_health.dropped_messages
    );
    settled.with_context(|| format!("desk modes {:?}", modes().unwrap_or_default()))?;
    assert_eq!(buttons_health.dropped_messages, 0, "{buttons_health:?}");
    drop(drain);
    assert!(daemon.terminate()?.success());
    Ok(())
}
