//! The built `sim` plugin (`libleitsystem_sim.so`), loaded through `leitsystem_plugin::testing`
//! as the daemon loads it: each role behaves like a device (scanner and button lines over TCP,
//! printer jobs as files with a paper-out switch, display state as a file), and destroy stops
//! promptly.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use leitsystem_plugin::messages::{ButtonAction, Paper};
use leitsystem_plugin::testing::{TestDevice, TestPlugin};
use leitsystem_plugin::{HostMessage, PluginMessage};

const WAIT: Duration = Duration::from_secs(5);

fn load() -> Result<TestPlugin, String> {
    TestPlugin::load_built("libleitsystem_sim.so")
}

/// The port a scanner or buttons device listens on, from its "ID listening on ..." log.
fn bound_port(device: &TestDevice<'_>) -> Result<u16, String> {
    let marker = format!("{} listening on 127.0.0.1:", device.id());
    device.wait_until("listening log with a port", WAIT, |messages| {
        messages.iter().find_map(|m| match m {
            PluginMessage::Log { message, .. } => {
                message.split(&marker).nth(1).and_then(|p| p.parse().ok())
            }
            _ => None,
        })
    })
}

fn send_line(stream: &mut TcpStream, line: &str) -> String {
    stream
        .write_all(format!("{line}\n").as_bytes())
        .expect("write to the device");
    let mut answer = String::new();
    BufReader::new(stream.try_clone().expect("clone"))
        .read_line(&mut answer)
        .expect("an answer");
    answer
}

#[test]
fn the_sim_plugin_plays_all_four_roles() -> Result<(), String> {
    let plugin = load()?;
    assert_eq!(plugin.roles(), "scanner,buttons,printer,display");

    // Scanner: every line is a code.
    let mut scanner = plugin
        .create(serde_json::json!({"v":1,"id":"scan-1","role":"scanner","options":{"port":0}}))?;
    let mut stream =
        TcpStream::connect(("127.0.0.1", bound_port(&scanner)?)).expect("connect to the scanner");
    assert_eq!(send_line(&mut stream, "B-2026-000123"), "OK\n");
    let scanned = PluginMessage::Scanned {
        code: "B-2026-000123".into(),
    };
    scanner.wait_for(0, "scan", WAIT, |m| *m == scanned)?;
    drop(stream);
    scanner.wait_for(0, "disconnect", WAIT, |m| {
        matches!(
            m,
            PluginMessage::Connection {
                connected: false,
                ..
            }
        )
    })?;
    assert!(
        scanner.destroy() < Duration::from_secs(1),
        "destroy must stop promptly"
    );

    // Buttons: "DESK ACTION" lines, each press with its own event id.
    let mut buttons = plugin.create(
        serde_json::json!({"v":1,"id":"btn","role":"buttons","desks":["3"],"options":{"port":0}}),
    )?;
    let mut stream =
        TcpStream::connect(("127.0.0.1", bound_port(&buttons)?)).expect("connect to the buttons");
    assert_eq!(send_line(&mut stream, "3 next"), "OK\n");
    assert_eq!(send_line(&mut stream, "3 next"), "OK\n");
    assert!(send_line(&mut stream, "3 dance").starts_with("ERR"));
    let ids = buttons.wait_until("two presses", WAIT, |messages| {
        let ids: Vec<String> = messages
            .iter()
            .filter_map(|m| match m {
                PluginMessage::Button {
                    desk,
                    action: ButtonAction::Next,
                    event_id,
                } if desk == "3" => Some(event_id.clone()),
                _ => None,
            })
            .collect();
        (ids.len() == 2).then_some(ids)
    })?;
    assert_ne!(ids[0], ids[1], "each press has its own event id");
    buttons.destroy();

    // Printer: one file per job; paper out while the switch file exists.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let switch = dir.path().join("paper-out");
    let mut printer = plugin.create(serde_json::json!({"v":1,"id":"prn","role":"printer","options":{"dir": dir.path().join("jobs"), "paper_out_file": switch}}))?;
    let document = |name: &str| leitsystem_plugin::document::Document {
        number: name.into(),
        blocks: vec![leitsystem_plugin::document::Block::text("Grüße")],
    };
    printer.print("A-001", &document("A-001"))?;
    let done = |job: &str| PluginMessage::PrintDone { job: job.into() };
    printer.wait_for(0, "print done", WAIT, |m| *m == done("A-001"))?;
    let printed =
        std::fs::read_to_string(dir.path().join("jobs/A-001.json")).expect("the job file");
    assert!(printed.contains("\"A-001\""), "{printed}");
    std::fs::write(&switch, b"").expect("flip the paper-out switch");
    printer.print("A-002", &document("A-002"))?;
    let paper_out = PluginMessage::PrintFailed {
        job: "A-002".into(),
        reason: "paper out".into(),
    };
    printer.wait_for(0, "paper out", WAIT, |m| *m == paper_out)?;
    printer.wait_for(0, "paper status", WAIT, |m| {
        matches!(
            m,
            PluginMessage::PrinterStatus {
                paper: Paper::Out,
                ..
            }
        )
    })?;
    assert!(!dir.path().join("jobs/A-002.json").exists());
    std::fs::remove_file(&switch).expect("paper refilled");
    printer.print("A-002", &document("A-002"))?;
    printer.wait_for(0, "reprint", WAIT, |m| *m == done("A-002"))?;
    assert!(
        printer
            .send(&HostMessage::Display {
                state: serde_json::json!({})
            })
            .is_err()
    );
    printer.destroy();

    // Display: the latest state as a file.
    let file = dir.path().join("display.json");
    let mut display = plugin
        .create(serde_json::json!({"v":1,"id":"wall","role":"display","options":{"file": file}}))?;
    display.send(&HostMessage::Display {
        state: serde_json::json!({"calls":[{"ticket":"A-001","desk":"3"}]}),
    })?;
    let shown: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).expect("the display file")).expect("JSON");
    assert_eq!(shown["calls"][0]["desk"], "3");
    display.destroy();

    // Bad configs are refused with a reason.
    assert_eq!(
        plugin
            .create(serde_json::json!({"v":1,"id":"x","role":"scanner","options":{}}))
            .err()
            .as_deref(),
        Some("option 'port' is missing")
    );
    assert_eq!(
        plugin
            .create(serde_json::json!({"v":1,"id":"x","role":"display","options":{}}))
            .err()
            .as_deref(),
        Some("option 'file' (a path) is missing")
    );
    Ok(())
}
