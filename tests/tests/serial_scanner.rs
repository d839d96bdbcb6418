//! The `serial-scanner` driver plugin in the real daemon, each scanner on a real tty (a socat
//! pty pair): codes framed by CR, LF, CR LF, by an idle gap alone, and with an AIM prefix
//! check visitors in, and the kiosk page (headless Chromium) shows the number; garbage and
//! over-long input check nobody in and the next code still works; a scanner unplugged mid-code
//! is shown disconnected, and once plugged back in it is connected and checks visitors in
//! again.

use std::time::Duration;

use leitsystem_tests::browser::Browser;
use leitsystem_tests::daemon::{book, device, request, wait_for};
use leitsystem_tests::serial::ScannerLine;
use leitsystem_tests::site::start;

/// The scanners: (device id, its options besides the device, what ends a code).
const SCANNERS: [(&str, &str, &[u8]); 5] = [
    ("scan-cr", r#"terminator = "cr""#, b"\r"),
    ("scan-lf", r#"terminator = "lf""#, b"\n"),
    ("scan-crlf", r#"terminator = "crlf""#, b"\r\n"),
    ("scan-gap", r#"terminator = "none", idle_gap_ms = 150"#, b""),
    (
        "scan-aim",
        r#"aim_prefix = "strip", max_length = 64"#,
        b"\r\n",
    ),
];

fn checked_in(
    site: &leitsystem_tests::site::Site,
    booking: &str,
) -> anyhow::Result<Option<String>> {
    let state = request(&site.daemon, &leitsystem::control::ControlRequest::State)?
        .state
        .ok_or_else(|| anyhow::anyhow!("no state"))?;
    Ok(state
        .tickets
        .iter()
        .find(|t| {
            serde_json::to_string(&t.origin).is_ok_and(|o| o.contains(&format!("\"{booking}\"")))
        })
        .map(|t| t.number.to_string()))
}

fn wait_connected(
    site: &leitsystem_tests::site::Site,
    id: &str,
    connected: bool,
) -> anyhow::Result<()> {
    wait_for(
        &format!(
            "{id} to be {}",
            if connected {
                "connected"
            } else {
                "disconnected"
            }
        ),
        Duration::from_secs(10),
        || Ok((device(&site.daemon, id)?.connected == Some(connected)).then_some(())),
    )
}

#[test]
fn codes_typed_on_a_serial_tty_check_visitors_in_through_every_framing_and_a_replug()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut lines = Vec::new();
    let mut devices = String::new();
    for (id, options, _) in SCANNERS {
        let sub = dir.path().join(id);
        std::fs::create_dir_all(&sub)?;
        let line = ScannerLine::new(&sub)?;
        devices.push_str(&format!(
            "\n[[device]]\nid = \"{id}\"\nplugin = \"libleitsystem_serial_scanner.so\"\n\
             role = \"scanner\"\noptions = {{ device = \"{}\", {options} }}\n",
            line.device_path().display()
        ));
        lines.push(line);
    }
    let site = start(|t| format!("{t}{devices}"))?;
    for (id, _, _) in SCANNERS {
        wait_connected(&site, id, true)?;
    }
    let mut browser = Browser::start()?;
    browser.open(&format!("{}/kiosk", site.url), 1280, 720)?;
    browser.wait_text("#services", "Personalausweis", 5_000)?;

    // One booking per scanner, each typed in with that scanner's framing.
    for (n, (id, _, end)) in SCANNERS.iter().enumerate() {
        let booking = format!("BK-SER-{n}");
        book(&site.daemon, &booking, "meldung")?;
        let line = &mut lines[n];
        let typed = if *id == "scan-aim" {
            format!("]Q1{booking}")
        } else {
            booking.clone()
        };
        // Typed in two bursts, as a USB-serial adapter delivers it.
        let (first, second) = typed.as_bytes().split_at(4);
        line.send(first)?;
        std::thread::sleep(Duration::from_millis(20));
        line.send(second)?;
        line.send(end)?;
        let ticket = wait_for(
            &format!("{booking} checked in by {id}"),
            Duration::from_secs(5),
            || checked_in(&site, &booking),
        )?;
        browser.wait_text("#result-number", &ticket, 5_000)?;
    }

    // Garbage (as at a wrong baud rate) and an over-long code check nobody in; the next good
    // code after them does.
    book(&site.daemon, "BK-AFTER", "meldung")?;
    let aim = &mut lines[4];
    aim.send(b"\xff\xfe\x13\x00BK-AFTER\r\n")?;
    aim.send(format!("{}\r\n", "7".repeat(100)).as_bytes())?;
    aim.send(b"BK-AFTER\r\n")?;
    wait_for(
        "the good code after garbage",
        Duration::from_secs(5),
        || checked_in(&site, "BK-AFTER"),
    )?;
    let state = request(&site.daemon, &leitsystem::control::ControlRequest::State)?
        .state
        .ok_or_else(|| anyhow::anyhow!("no state"))?;
    assert_eq!(
        state.tickets.len(),
        SCANNERS.len() + 1,
        "garbage or the over-long code made a ticket: {:#?}",
        state.tickets
    );

    // Unplugged in the middle of a code: disconnected; plugged back in: connected, and the
    // half code is gone (the next code is read whole).
    book(&site.daemon, "BK-REPLUG", "meldung")?;
    let cr = &mut lines[0];
    cr.send(b"BK-RE")?;
    cr.unplug();
    wait_connected(&site, "scan-cr", false)?;
    cr.replug()?;
    wait_connected(&site, "scan-cr", true)?;
    cr.send(b"BK-REPLUG\r")?;
    let ticket = wait_for(
        "a check-in after the replug",
        Duration::from_secs(5),
        || checked_in(&site, "BK-REPLUG"),
    )?;
    browser.wait_text("#result-number", &ticket, 5_000)?;
    Ok(())
}
