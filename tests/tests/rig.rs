//! The hardware rig (`tests/rig/README.md`): the real daemon and driver plugins inside
//! Debian's stock kernel under QEMU, meeting the kernel's own USB drivers. The devices are USB
//! gadgets on `dummy_hcd`, played by this test through the rig agent:
//! - a keyboard scanner (HID gadget → usbhid → evdev) typing in the US and German layouts,
//!   grabbed so that another reader sees no keystroke, unplugged and plugged back in;
//! - a serial scanner (ACM gadget → cdc_acm, `/dev/ttyACM0`), unplugged in the middle of a code;
//! - a receipt printer (printer gadget → usblp, `/dev/usb/lp0`): the ticket's bytes are the
//!   same as over TCP, and paper out (the ESC/POS status byte) fails the print until the paper
//!   is back, then the ticket is reprinted once;
//! - call buttons on GPIO lines of a gpio-sim chip (the kernel's GPIO character device),
//!   bouncing, held long and double-clicked.
//!
//! Each scenario boots its own VM (about 10 s); they run one at a time.
//!
//! Why about 700 lines in one file: one boot of the VM serves every scenario, and each scenario is a test of its own; the rig itself lives in `tests/src/rig/`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use leitsystem::control::ControlRequest;
use leitsystem::domain::{
    BookingId, BookingInput, Command as EngineCommand, DeskId, Event, EventRecord, Outcome,
    PrintState, ServiceId, Ticket,
};
use leitsystem::token::{TokenClaims, generate_key, sign};
use leitsystem_tests::daemon::{artifacts, device_entry};
use leitsystem_tests::escpos::npos_parse;
use leitsystem_tests::rig::keyboard::{ENTER, KEYPAD_ENTER, Layout};
use leitsystem_tests::rig::protocol::{PrinterLink, Request};
use leitsystem_tests::rig::{Gadget, Rig, SCANNER_MODEL, SCANNER_USB_ID};

/// One VM at a time: two cores cannot emulate several fast enough for the drivers' timeouts.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const SITE: &str = "musterstadt-rathaus";

/// The rig's wall clock at the start of each daemon: a Monday morning, so every run prints the
/// same time on its tickets.
fn morning() -> anyhow::Result<jiff::Zoned> {
    Ok("2026-12-07T09:30:00[Europe/Berlin]".parse::<jiff::Zoned>()?)
}

fn boot() -> anyhow::Result<(std::sync::MutexGuard<'static, ()>, Rig)> {
    let guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    let mut rig = Rig::boot(std::path::Path::new(env!("CARGO_BIN_EXE_rig-agent")))?;
    rig.set_clock(morning()?.timestamp())?;
    eprintln!("rig: booted in {:.1} s", started.elapsed().as_secs_f64());
    Ok((guard, rig))
}

/// Books `id` for `service` with its slot at the rig's morning.
fn book(rig: &mut Rig, id: &str, service: &str) -> anyhow::Result<()> {
    rig.execute(EngineCommand::UpsertBooking {
        booking: BookingInput {
            id: BookingId::new(id),
            version: 1,
            service: ServiceId::new(service),
            slot_start: morning()?.timestamp().as_millisecond(),
            duration_minutes: 15,
            desk: None,
            personal: None,
            status: Default::default(),
            refusal: None,
        },
    })?;
    Ok(())
}

fn tickets(rig: &mut Rig) -> anyhow::Result<Vec<Ticket>> {
    Ok(rig
        .control(&ControlRequest::State)?
        .state
        .context("no state")?
        .tickets)
}

/// Waits until booking `booking` is checked in; its ticket.
fn wait_checked_in(rig: &mut Rig, booking: &str) -> anyhow::Result<Ticket> {
    let started = Instant::now();
    loop {
        let found = tickets(rig)?.into_iter().find(|t| {
            serde_json::to_string(&t.origin).is_ok_and(|o| o.contains(&format!("\"{booking}\"")))
        });
        if let Some(ticket) = found {
            return Ok(ticket);
        }
        if started.elapsed() > Duration::from_secs(20) {
            bail!(
                "{booking} was not checked in within 20 s; daemon log:\n{}",
                rig.daemon_log()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The keyboard scanner, found by `selector` (`usb_id = ...` or `device = ...`).
fn hid_scanner(selector: &str, layout: &str) -> String {
    device_entry(
        "foyer-scanner",
        "libleitsystem_hid_scanner.so",
        "scanner",
        &format!("{selector}, layout = \"{layout}\", reconnect_max_ms = 500"),
    )
}

#[test]
fn a_usb_keyboard_scanner_checks_visitors_in_through_usbhid_in_us_and_german_layouts()
-> anyhow::Result<()> {
    let (_guard, mut rig) = boot()?;
    let event_device = rig.scanner_event_device()?;

    // US layout: a booking id with the keys that move between layouts (y, z, -).
    rig.start_daemon(
        "hid-us",
        &hid_scanner(&format!("usb_id = \"{SCANNER_USB_ID}\""), "us"),
    )?;
    rig.wait_connected("foyer-scanner", true)?;
    // The driver recognises the model from the id the kernel reports (the scanner table).
    let log = rig.daemon_log();
    assert!(
        log.contains("Newland HR22 / HR3290 corded in USB keyboard mode"),
        "the scanner's model is not named: {log}"
    );
    book(&mut rig, "BK-ZY-1", "meldung")?;
    // A second, ordinary reader of the same event device: while the daemon holds its grab,
    // not one keystroke reaches it (nor the console login on a real appliance).
    rig.call(&Request::WatchKeys {
        path: event_device.clone(),
    })?;
    rig.type_text("BK-ZY-1", Layout::Us, Some(ENTER))?;
    wait_checked_in(&mut rig, "BK-ZY-1")?;
    let seen_while_grabbed = rig.call(&Request::KeysSeen)?.number;
    assert_eq!(
        seen_while_grabbed,
        Some(0),
        "another reader saw keystrokes of a grabbed scanner"
    );
    rig.stop_daemon()?;
    // The same reader sees the keys once nobody grabs the device: the check above can fail.
    rig.call(&Request::WatchKeys {
        path: event_device.clone(),
    })?;
    rig.type_text("x1", Layout::Us, None)?;
    std::thread::sleep(Duration::from_millis(500));
    let seen_ungrabbed = rig.call(&Request::KeysSeen)?.number;
    assert_eq!(seen_ungrabbed, Some(2), "the watcher missed ungrabbed keys");

    // German layout: a signed check-in code inside a URL (':' '/' '.' and '-' are elsewhere
    // on a German keyboard, y and z swap), ended by keypad Enter; the booking never arrived.
    let mut rng = rand::rng();
    let (key, public) = generate_key(&mut rng);
    let morning = morning()?;
    let claims = TokenClaims {
        key_id: 3,
        booking: BookingId::new("BK-SIGNED"),
        service: ServiceId::new("meldung"),
        day: morning.date(),
        slot_minute: 9 * 60 + 30,
        version: 1,
    };
    let token = sign(&claims, SITE, &key)?;
    rig.set_clock(morning.timestamp())?;
    // The website's key besides the demo's plain booking ids; the scanner by the name the
    // packaged udev rules give it (which follows it to its new eventN after a replug).
    let scanner = hid_scanner("device = \"/dev/leitsystem/scanner0\"", "de");
    rig.start_daemon_edited("hid-de", &scanner, |text| {
        text.replacen(
            "[tokens]\naccept_unsigned = true\n",
            &format!(
                "[tokens]\naccept_unsigned = true\n\
                 keys = [{{ id = 3, public_key = \"{public}\" }}]\n"
            ),
            1,
        )
    })?;
    rig.wait_connected("foyer-scanner", true)?;
    // A plain booking id whose y, z and - are on other keys than in the US layout.
    book(&mut rig, "BK-YZ-DE", "meldung")?;
    rig.type_text("BK-YZ-DE", Layout::De, Some(ENTER))?;
    wait_checked_in(&mut rig, "BK-YZ-DE")?;
    rig.type_text(
        &format!("https://termine.musterstadt.de/c/{token}"),
        Layout::De,
        Some(KEYPAD_ENTER),
    )?;
    wait_checked_in(&mut rig, "BK-SIGNED")?;

    // Unplugged: `ctl devices` shows it; plugged back in (a new event device), it is found,
    // grabbed and checks the next visitor in.
    rig.unplug(Gadget::Scanner)?;
    rig.wait_connected("foyer-scanner", false)?;
    rig.plug(Gadget::Scanner)?;
    rig.wait_connected("foyer-scanner", true)?;
    let claims = TokenClaims {
        booking: BookingId::new("BK-REPLUG"),
        ..claims
    };
    let token = sign(&claims, SITE, &key)?;
    rig.type_text(&token, Layout::De, Some(ENTER))?;
    wait_checked_in(&mut rig, "BK-REPLUG")?;
    assert_eq!(tickets(&mut rig)?.len(), 3);
    rig.stop_daemon()?;
    Ok(())
}

/// What udev made of device `node`: (its properties, `ls -ln` of the node a link points to).
fn udev_view(rig: &mut Rig, node: &str) -> anyhow::Result<(String, String)> {
    let properties = rig.shell(&format!("udevadm info --query=property --name={node}"))?;
    // Numeric: busybox cuts group names to eight characters. 990 is leitsystem in the
    // rig's /etc/group.
    let listing = rig.shell(&format!("ls -lnL {node}"))?;
    Ok((properties, listing))
}

#[test]
fn the_packaged_udev_rules_name_the_scanners_and_the_printer_and_give_gpio_to_the_daemon_group()
-> anyhow::Result<()> {
    let (_guard, mut rig) = boot()?;
    // Debian's udev with systemd/60-leitsystem.rules, on the kernel's real uevents.
    for (link, kernel_name) in [
        ("/dev/leitsystem/scanner0", "/dev/input/event"),
        ("/dev/leitsystem/serial-scanner0", "/dev/ttyACM0"),
        ("/dev/leitsystem/printer0", "/dev/usb/lp0"),
    ] {
        let target = rig.shell(&format!("readlink -f {link}"))?;
        assert!(
            target.trim().starts_with(kernel_name),
            "{link} points to {target:?}, not {kernel_name}*; console:\n{}",
            rig.console_tail()
        );
        let (_, listing) = udev_view(&mut rig, link)?;
        assert!(
            listing.starts_with("crw-rw----") && listing.contains(" 990 "),
            "{link} is not the leitsystem group's (0660): {listing}"
        );
    }
    // ModemManager leaves the serial scanner alone.
    let (properties, _) = udev_view(&mut rig, "/dev/ttyACM0")?;
    assert!(
        properties.lines().any(|l| l == "ID_MM_DEVICE_IGNORE=1"),
        "{properties}"
    );
    // The stock rules' stable by-id name for the keyboard scanner is there too.
    let by_id = rig.shell("ls /dev/input/by-id/")?;
    assert!(by_id.contains("-event-kbd"), "{by_id}");
    // The GPIO chip the call buttons use (gpio-sim's, as a Pi's own) is the daemon group's.
    let chips = rig.shell("ls -ln /dev/gpiochip*")?;
    assert!(!chips.trim().is_empty(), "no GPIO chip");
    for listing in chips.lines() {
        assert!(
            listing.starts_with("crw-rw----") && listing.contains(" 990 "),
            "a GPIO chip is not the leitsystem group's (0660): {listing}"
        );
    }
    Ok(())
}

#[test]
fn a_usb_serial_scanner_checks_visitors_in_through_cdc_acm_and_survives_a_replug_mid_code()
-> anyhow::Result<()> {
    let (_guard, mut rig) = boot()?;
    rig.start_daemon(
        "acm",
        &device_entry(
            "desk-scanner",
            "libleitsystem_serial_scanner.so",
            "scanner",
            &format!("model = \"{SCANNER_MODEL}\", aim_prefix = \"strip\", reconnect_max_ms = 500"),
        ),
    )?;
    rig.wait_connected("desk-scanner", true)?;
    // Found by the model's serial-mode USB id, through sysfs on the real kernel.
    let log = rig.daemon_log();
    assert!(
        log.contains("/dev/ttyACM0 open"),
        "not found by its id: {log}"
    );
    // A code with the AIM prefix for QR and CR LF, in two bursts as a scanner sends it.
    book(&mut rig, "BK-ACM-1", "meldung")?;
    rig.serial_send(b"]Q1BK-A")?;
    rig.serial_send(b"CM-1\r\n")?;
    wait_checked_in(&mut rig, "BK-ACM-1")?;

    // Unplugged in the middle of a code: shown disconnected; plugged back in (cdc_acm makes
    // /dev/ttyACM0 anew), connected, and the next code is read whole, without the half one.
    book(&mut rig, "BK-ACM-2", "meldung")?;
    rig.serial_send(b"BK-AC")?;
    rig.unplug(Gadget::Serial)?;
    rig.wait_connected("desk-scanner", false)?;
    rig.plug(Gadget::Serial)?;
    rig.wait_connected("desk-scanner", true)?;
    rig.serial_send(b"BK-ACM-2\r\n")?;
    wait_checked_in(&mut rig, "BK-ACM-2")?;
    assert_eq!(tickets(&mut rig)?.len(), 2);
    rig.stop_daemon()?;
    Ok(())
}

/// An ESC/POS printer at the foyer terminal, on `transport` (the rest of the options).
fn escpos_printer(transport: &str) -> String {
    device_entry(
        "printer",
        "libleitsystem_escpos_printer.so",
        "printer",
        &format!("{transport}, status_interval_ms = 200, reconnect_max_ms = 500"),
    )
}

/// Pulls a walk-in ticket; its number.
fn walk_in(rig: &mut Rig) -> anyhow::Result<String> {
    match rig.execute(EngineCommand::WalkIn {
        service: ServiceId::new("meldung"),
        priority: 1,
    })? {
        Outcome::TicketIssued { ticket, .. } => Ok(ticket.to_string()),
        other => bail!("walk-in answered {other:?}"),
    }
}

/// Pulls a walk-in ticket whose print the printer refuses; asserts the recorded reason
/// names `reason`. The ticket's number.
fn walk_in_refused_by_printer(rig: &mut Rig, reason: &str) -> anyhow::Result<String> {
    let number = walk_in(rig)?;
    let failed = wait_print(rig, &number, false)?;
    let PrintState::Failed {
        reason: recorded, ..
    } = &failed.print
    else {
        bail!("not failed: {:?}", failed.print);
    };
    assert!(recorded.contains(reason), "{recorded}");
    Ok(number)
}

/// Waits until ticket `number` is printed (`printed`) or its print failed; the ticket.
fn wait_print(rig: &mut Rig, number: &str, printed: bool) -> anyhow::Result<Ticket> {
    let started = Instant::now();
    loop {
        if let Some(ticket) = tickets(rig)?
            .into_iter()
            .find(|t| t.number.as_str() == number)
        {
            let done = match &ticket.print {
                PrintState::Printed { .. } => printed,
                PrintState::Failed { .. } => !printed,
                PrintState::Pending => false,
            };
            if done {
                return Ok(ticket);
            }
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!(
                "ticket {number} was not {} within 30 s; daemon log:\n{}",
                if printed { "printed" } else { "refused" },
                rig.daemon_log()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The tickets in a capture: from each initialise (`ESC @`) to the end of its cut
/// (`GS V 66 0`), without the status queries between jobs.
fn jobs(capture: &[u8]) -> Vec<Vec<u8>> {
    let mut jobs = Vec::new();
    let mut at = 0;
    while let Some(start) = find(&capture[at..], &[0x1b, 0x40]).map(|i| at + i) {
        let Some(cut) = find(&capture[start..], &[0x1d, 0x56, 0x42, 0x00]) else {
            break;
        };
        let end = start + cut + 4;
        jobs.push(capture[start..end].to_vec());
        at = end;
    }
    jobs
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn a_usb_printer_gets_the_same_bytes_as_over_tcp_and_paper_out_reprints_once_through_usblp()
-> anyhow::Result<()> {
    let (_guard, mut rig) = boot()?;
    let out = artifacts("rig-printer")?;

    // Over USB: the driver writes to /dev/usb/lp0 and reads the status answers back from it.
    rig.start_daemon(
        "usb",
        &escpos_printer("transport = \"usb\", device = \"/dev/leitsystem/printer0\""),
    )?;
    rig.wait_connected("printer", true)?;
    let number = walk_in(&mut rig)?;
    wait_print(&mut rig, &number, true)?;
    let usb = rig.printer_take(PrinterLink::Usb)?;
    std::fs::write(out.join("usb.bin"), &usb)?;
    let usb_jobs = jobs(&usb);
    assert_eq!(usb_jobs.len(), 1, "one ticket, one job: {usb:02x?}");

    // The independent parser (npos) reads the ticket: its number and its cut.
    let parsed = npos_parse(&out.join("usb.bin"), &out.join("usb"))?;
    assert_eq!(parsed.jobs.len(), 1, "{parsed:?}");
    assert!(
        parsed.jobs[0].lines.iter().any(|l| l.trim() == number),
        "ticket {number} not printed: {:?}",
        parsed.jobs[0].lines
    );

    // Paper out (the ESC/POS status byte through usblp): the print fails, nothing of the
    // ticket is sent, the ticket stays valid; paper back: reprinted by itself, once.
    rig.printer_sensors("out", false)?;
    rig.wait_device("printer", "paper out", |d| {
        d.paper.as_deref() == Some("out")
    })?;
    let refused = walk_in_refused_by_printer(&mut rig, "paper out")?;
    assert!(
        jobs(&rig.printer_take(PrinterLink::Usb)?).is_empty(),
        "a job was sent while the paper was out"
    );
    rig.printer_sensors("ok", false)?;
    wait_print(&mut rig, &refused, true)?;
    // The cover opened (the status byte again): refused with that reason, printed once it is
    // closed.
    rig.printer_sensors("ok", true)?;
    rig.wait_device("printer", "cover open", |d| d.cover_open == Some(true))?;
    let covered = walk_in_refused_by_printer(&mut rig, "cover open")?;
    rig.printer_sensors("ok", false)?;
    wait_print(&mut rig, &covered, true)?;
    // Time for a second, wrong reprint to arrive.
    std::thread::sleep(Duration::from_secs(2));
    let reprint = rig.printer_take(PrinterLink::Usb)?;
    std::fs::write(out.join("usb-reprint.bin"), &reprint)?;
    let reprinted = npos_parse(&out.join("usb-reprint.bin"), &out.join("usb-reprint"))?;
    for ticket in [&refused, &covered] {
        assert_eq!(
            reprinted
                .jobs
                .iter()
                .filter(|j| j.lines.iter().any(|l| l.trim() == ticket.as_str()))
                .count(),
            1,
            "ticket {ticket} is to be reprinted exactly once: {reprinted:?}"
        );
    }
    assert_eq!(reprinted.jobs.len(), 2, "{reprinted:?}");
    rig.stop_daemon()?;

    // The same first ticket over TCP (the same clock, a fresh day): the same bytes.
    let port = rig.tcp_printer_port()?;
    rig.set_clock(morning()?.timestamp())?;
    rig.start_daemon(
        "tcp",
        &escpos_printer(&format!(
            "transport = \"tcp\", host = \"127.0.0.1\", port = {port}"
        )),
    )?;
    rig.wait_connected("printer", true)?;
    let tcp_number = walk_in(&mut rig)?;
    assert_eq!(tcp_number, number);
    wait_print(&mut rig, &tcp_number, true)?;
    let tcp = rig.printer_take(PrinterLink::Tcp)?;
    std::fs::write(out.join("tcp.bin"), &tcp)?;
    let tcp_jobs = jobs(&tcp);
    assert_eq!(tcp_jobs.len(), 1, "{tcp:02x?}");
    assert!(
        usb_jobs[0] == tcp_jobs[0],
        "the ticket's bytes differ between USB ({} bytes) and TCP ({} bytes); see {}",
        usb_jobs[0].len(),
        tcp_jobs[0].len(),
        out.display()
    );
    rig.stop_daemon()?;
    Ok(())
}

/// Today's events of kind `name` (`ticket_called`, `silent_alarm`, ...), oldest first.
fn events_named(rig: &mut Rig, name: &str) -> anyhow::Result<Vec<EventRecord>> {
    let events = rig
        .control(&ControlRequest::Events {
            from_seq: 1,
            limit: 10_000,
        })?
        .events
        .context("no events")?;
    Ok(events
        .into_iter()
        .filter(|record| record.event.name() == name)
        .collect())
}

/// Waits until the log holds `count` events named `name`; then waits `settle` more and checks
/// that no further one came.
fn wait_events(
    rig: &mut Rig,
    name: &str,
    count: usize,
    settle: Duration,
) -> anyhow::Result<Vec<EventRecord>> {
    let started = Instant::now();
    while events_named(rig, name)?.len() < count {
        if started.elapsed() > Duration::from_secs(20) {
            bail!(
                "{count} {name} events expected within 20 s, the log has {}; daemon log:\n{}",
                events_named(rig, name)?.len(),
                rig.daemon_log()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(settle);
    let events = events_named(rig, name)?;
    assert_eq!(
        events.len(),
        count,
        "more {name} events than presses: {events:?}"
    );
    Ok(events)
}

/// How many `command` commands from the buttons the daemon accepted (repeats included: the
/// engine's answer to a repeated "next" changes nothing, so only the log shows it arrived).
fn button_commands(rig: &mut Rig, command: &str) -> anyhow::Result<usize> {
    let count = rig.shell(&format!(
        "grep -c 'command accepted command=\"{command}\" source=buttons:desk-buttons' /data/gpio.log || true"
    ))?;
    Ok(count.trim().parse()?)
}

/// Waits (at most 10 s) until the LED on `line` shows `level` (`'0'`/`'1'`).
fn wait_led(rig: &mut Rig, line: &str, level: char) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let now = rig.gpio_sample(line, 1, 0)?;
        if now.starts_with(level) {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(10) {
            bail!(
                "the LED on {line} is {now}, not {level}, after 10 s; daemon log:\n{}",
                rig.daemon_log()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A contact that bounces on the way down and up (1-2 ms each), held low for `hold_ms`.
fn bouncing_press(hold_ms: u64) -> Vec<(bool, u64)> {
    vec![
        (false, 1),
        (true, 1),
        (false, 2),
        (true, 1),
        (false, hold_ms),
        (true, 1),
        (false, 1),
        (true, 2),
        (false, 1),
        (true, 300),
    ]
}

#[test]
fn call_buttons_on_real_gpio_lines_call_one_visitor_per_press_light_their_desk_and_raise_the_alarm()
-> anyhow::Result<()> {
    let (_guard, mut rig) = boot()?;
    // The lines by their Raspberry Pi names, on the rig's gpio-sim chip (pulled up by the
    // driver; a press pulls the line to ground).
    let buttons = "\n[[device]]\nid = \"desk-buttons\"\nplugin = \"libleitsystem_gpio_buttons.so\"\n\
        role = \"buttons\"\ndesks = [\"1\", \"2\"]\n\
        options = { debounce_ms = 20, long_press_ms = 800, stuck_ms = 4000, buttons = [\n\
        { line = \"GPIO17\", desk = \"1\", action = \"next\", long_action = \"alarm\" },\n\
        { line = \"GPIO27\", desk = \"2\", action = \"next\" },\n],\n\
        leds = [{ line = \"GPIO23\", desk = \"1\" }, { line = \"GPIO24\", desk = \"2\" }],\n\
        blink_ms = 250 }\n";
    rig.start_daemon("gpio", buttons)?;
    rig.wait_connected("desk-buttons", true)?;
    for desk in ["1", "2"] {
        rig.execute(EngineCommand::OpenDesk {
            desk: DeskId::new(desk),
        })?;
    }
    for _ in 0..4 {
        rig.execute(EngineCommand::WalkIn {
            service: ServiceId::new("meldung"),
            priority: 1,
        })?;
    }

    // Desk 2's "next" fires at the press: a contact bouncing down and up is one press, and
    // one visitor is called.
    rig.gpio_drive("GPIO27", &bouncing_press(150))?;
    let calls = wait_events(&mut rig, "ticket_called", 1, Duration::from_millis(1500))?;
    assert!(
        matches!(&calls[0].event, Event::TicketCalled { desk, .. } if desk.as_str() == "2"),
        "{calls:?}"
    );
    assert!(calls[0].source.contains("desk-buttons"), "{calls:?}");
    // Not only the engine's repeat guard hid the bounce: one press left the driver.
    assert_eq!(
        button_commands(&mut rig, "call_next")?,
        1,
        "a bounce became presses"
    );

    // Desk 1's button has a long action: held past long_press_ms, it raises the silent alarm
    // (once, however long it is held) and calls nobody.
    rig.gpio_drive("GPIO17", &bouncing_press(1500))?;
    let alarms = wait_events(&mut rig, "silent_alarm", 1, Duration::from_millis(1000))?;
    assert!(
        matches!(&alarms[0].event, Event::SilentAlarm { desk } if desk.as_str() == "1"),
        "{alarms:?}"
    );
    assert_eq!(events_named(&mut rig, "ticket_called")?.len(), 1);
    assert_eq!(button_commands(&mut rig, "silent_alarm")?, 1);
    // Desk 1's LED blinks (250 ms on, 250 ms off) while its alarm is raised; acknowledged
    // (long before alarm_blink_s, 300 s by default), it goes steadily dark (nobody is called
    // there).
    let blinking = rig.gpio_sample("GPIO23", 16, 50)?;
    let changes = blinking
        .as_bytes()
        .windows(2)
        .filter(|w| w[0] != w[1])
        .count();
    assert!(
        (2..=4).contains(&changes) && blinking.contains('1') && blinking.contains('0'),
        "desk 1's LED did not blink after its alarm: {blinking}"
    );
    rig.execute(EngineCommand::AcknowledgeAlarm {
        alarm: alarms[0].seq,
    })?;
    let started = Instant::now();
    while rig.gpio_sample("GPIO23", 10, 100)? != "0000000000" {
        if started.elapsed() > Duration::from_secs(10) {
            bail!("desk 1's LED still blinks 10 s after its alarm was acknowledged");
        }
    }

    // A short press of the same button: its "next", at the release.
    rig.gpio_drive("GPIO17", &bouncing_press(200))?;
    let calls = wait_events(&mut rig, "ticket_called", 2, Duration::from_millis(1500))?;
    assert!(
        matches!(&calls[1].event, Event::TicketCalled { desk, .. } if desk.as_str() == "1"),
        "{calls:?}"
    );
    wait_led(&mut rig, "GPIO23", '1')?;
    // Serving starts at desk 2: its LED goes dark.
    rig.execute(EngineCommand::StartService {
        desk: DeskId::new("2"),
    })?;
    wait_led(&mut rig, "GPIO24", '0')?;

    // Two real presses of desk 2's button in quick succession (a double click): both reach
    // the engine, which calls the next visitor for the first and takes the second as a repeat
    // of that call (repeat_next_within_seconds), so nobody is skipped: the fourth visitor
    // still waits.
    rig.gpio_drive(
        "GPIO27",
        &[(false, 100), (true, 150), (false, 100), (true, 300)],
    )?;
    let calls = wait_events(&mut rig, "ticket_called", 3, Duration::from_millis(1500))?;
    let presses = rig.shell(
        "grep -c 'command accepted command=\"call_next\" source=buttons:desk-buttons' /data/gpio.log",
    )?;
    assert_eq!(
        presses.trim(),
        "4",
        "every \"next\" press reaches the engine once"
    );
    let waiting: Vec<Ticket> = tickets(&mut rig)?
        .into_iter()
        .filter(|t| t.state.name() == "waiting")
        .collect();
    assert_eq!(waiting.len(), 1, "{waiting:?} / {calls:?}");

    // Held past stuck_ms (4 s): its one press, then a "stuck" line in the journal, nothing
    // repeated; released, it says so.
    rig.gpio_drive("GPIO27", &[(false, 4600), (true, 500)])?;
    assert_eq!(
        button_commands(&mut rig, "call_next")?,
        5,
        "a held button repeated or was lost"
    );
    let log = rig.shell("cat /data/gpio.log")?;
    assert_eq!(
        log.matches("button on GPIO27 held too long").count(),
        1,
        "{log}"
    );
    assert_eq!(
        log.matches("button on GPIO27 released again").count(),
        1,
        "{log}"
    );
    rig.stop_daemon()?;
    Ok(())
}
