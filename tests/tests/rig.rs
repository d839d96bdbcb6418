//! The hardware rig (`tests/rig/README.md`): the real daemon and driver plugins inside
//! Debian's stock kernel under QEMU, meeting the kernel's own USB drivers. The devices are USB
//! gadgets on `dummy_hcd`, played by this test through the rig agent:
//! - a keyboard scanner (HID gadget → usbhid → evdev) typing in the US and German layouts,
//!   grabbed so that another reader sees no keystroke, unplugged and plugged back in;
//! - a serial scanner (ACM gadget → cdc_acm, `/dev/ttyACM0`), unplugged in the middle of a code;
//! - a receipt printer (printer gadget → usblp, `/dev/usb/lp0`): the ticket's bytes are the
//!   same as over TCP, and paper out (the ESC/POS status byte) fails the print until the paper
//!   is back, then the ticket is reprinted once.
//!
//! Each scenario boots its own VM (about 10 s); they run one at a time.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use leitsystem::control::ControlRequest;
use leitsystem::domain::{
    BookingId, BookingInput, Command as EngineCommand, Outcome, PrintState, ServiceId, Ticket,
};
use leitsystem::token::{TokenClaims, generate_key, sign};
use leitsystem_tests::daemon::{artifacts, device_entry};
use leitsystem_tests::escpos::npos_parse;
use leitsystem_tests::rig::keyboard::{ENTER, KEYPAD_ENTER, Layout};
use leitsystem_tests::rig::protocol::{PrinterLink, Request};
use leitsystem_tests::rig::{Gadget, Rig, SCANNER_USB_ID};

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

fn hid_scanner(layout: &str) -> String {
    device_entry(
        "foyer-scanner",
        "libleitsystem_hid_scanner.so",
        "scanner",
        &format!("usb_id = \"{SCANNER_USB_ID}\", layout = \"{layout}\", reconnect_max_ms = 500"),
    )
}

#[test]
fn a_usb_keyboard_scanner_checks_visitors_in_through_usbhid_in_us_and_german_layouts()
-> anyhow::Result<()> {
    let (_guard, mut rig) = boot()?;
    let event_device = rig.scanner_event_device()?;

    // US layout: a booking id with the keys that move between layouts (y, z, -).
    rig.start_daemon("hid-us", &hid_scanner("us"))?;
    rig.wait_connected("foyer-scanner", true)?;
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
    // The demo's own [tokens] (plain booking ids accepted) gives way to the website's key.
    rig.start_daemon_edited("hid-de", &hid_scanner("de"), |text| {
        text.replacen(
            "[tokens]\naccept_unsigned = true\n",
            &format!("[tokens]\nkeys = [{{ id = 3, public_key = \"{public}\" }}]\n"),
            1,
        )
    })?;
    rig.wait_connected("foyer-scanner", true)?;
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
    assert_eq!(tickets(&mut rig)?.len(), 2);
    rig.stop_daemon()?;
    Ok(())
}
