//! Recorded key event sequences, as a USB keyboard scanner delivers them through usbhid and
//! evdev (`MSC_SCAN`, `EV_KEY`, `SYN_REPORT` per key), decoded through the reader's own path
//! (`feed`). The key codes are written out here by hand (from `linux/input-event-codes.h` and
//! the US and German layouts), not derived from the driver's keymap.
//!
//! The last test types through the kernel with a virtual keyboard (`/dev/uinput`). These
//! machines have no uinput, so it is ignored by default and fails loudly when run without it
//! (`cargo test -p leitsystem-hid-scanner -- --ignored`; the hardware rig has a real kernel).

use std::time::{Duration, Instant};

use evdev::{EventType, InputEvent};
use leitsystem_hid_scanner::decoder::{Decoder, DecoderOptions, Frame, Terminator};
use leitsystem_hid_scanner::feed;
use leitsystem_hid_scanner::keymap::Layout;

// Key codes (linux/input-event-codes.h).
const ESC: u16 = 1;
const KEY_1: u16 = 2;
const KEY_7: u16 = 8;
const KEY_0: u16 = 11;
const MINUS: u16 = 12;
const TAB: u16 = 15;
const ENTER: u16 = 28;
const LEFT_CTRL: u16 = 29;
const SEMICOLON: u16 = 39;
const LEFT_SHIFT: u16 = 42;
const KEY_Z: u16 = 44;
const DOT: u16 = 52;
const SLASH: u16 = 53;
const RIGHT_SHIFT: u16 = 54;
const F1: u16 = 59;
const KEY_Y: u16 = 21;
const KP_ENTER: u16 = 96;

/// Letter keys by their US position.
fn letter_key(c: char) -> u16 {
    let row1 = "qwertyuiop";
    let row2 = "asdfghjkl";
    let row3 = "zxcvbnm";
    if let Some(i) = row1.find(c) {
        16 + i as u16
    } else if let Some(i) = row2.find(c) {
        30 + i as u16
    } else if let Some(i) = row3.find(c) {
        44 + i as u16
    } else {
        panic!("no letter key for {c}")
    }
}

/// Digit keys: 1..9 are codes 2..10, 0 is 11.
fn digit_key(c: char) -> u16 {
    match c.to_digit(10) {
        Some(0) => KEY_0,
        Some(d) => KEY_1 + d as u16 - 1,
        None => panic!("not a digit: {c}"),
    }
}

/// One key event as the kernel delivers it: MSC_SCAN, EV_KEY, SYN_REPORT.
fn kernel(code: u16, value: i32) -> Vec<InputEvent> {
    vec![
        InputEvent::new(EventType::MISC.0, 4, 0x70000 + i32::from(code)),
        InputEvent::new(EventType::KEY.0, code, value),
        InputEvent::new(EventType::SYNCHRONIZATION.0, 0, 0),
    ]
}

/// A recording: (key, value) pairs.
fn record(keys: &[(u16, i32)]) -> Vec<InputEvent> {
    keys.iter().flat_map(|&(k, v)| kernel(k, v)).collect()
}

/// A tap: down, up.
fn tap(key: u16) -> [(u16, i32); 2] {
    [(key, 1), (key, 0)]
}

/// A shifted tap, Shift released after the key (as most scanners do).
fn shifted(key: u16) -> [(u16, i32); 4] {
    [(LEFT_SHIFT, 1), (key, 1), (key, 0), (LEFT_SHIFT, 0)]
}

/// What a scanner set to `layout` sends for `text` (the characters these tests use).
fn scanner_types(layout: Layout, text: &str) -> Vec<(u16, i32)> {
    let mut keys = Vec::new();
    for c in text.chars() {
        let lower = c.to_ascii_lowercase();
        let german_letter = |l: char| match l {
            'y' => KEY_Z,
            'z' => KEY_Y,
            other => letter_key(other),
        };
        let key: Vec<(u16, i32)> = match (layout, c) {
            (_, '0'..='9') => tap(digit_key(c)).to_vec(),
            (Layout::Us, 'a'..='z') => tap(letter_key(c)).to_vec(),
            (Layout::Us, 'A'..='Z') => shifted(letter_key(lower)).to_vec(),
            (Layout::De, 'a'..='z') => tap(german_letter(c)).to_vec(),
            (Layout::De, 'A'..='Z') => shifted(german_letter(lower)).to_vec(),
            (Layout::Us, ':') => shifted(SEMICOLON).to_vec(),
            (Layout::Us, '/') => tap(SLASH).to_vec(),
            (Layout::Us, '-') => tap(MINUS).to_vec(),
            (Layout::De, ':') => shifted(DOT).to_vec(),
            (Layout::De, '/') => shifted(KEY_7).to_vec(),
            (Layout::De, '-') => tap(SLASH).to_vec(),
            (_, '.') => tap(DOT).to_vec(),
            other => panic!("the test has no key for {other:?}"),
        };
        keys.extend(key);
    }
    keys
}

fn decoder(layout: Layout, terminator: Terminator) -> Decoder {
    Decoder::new(DecoderOptions {
        layout,
        terminator,
        idle_gap: Duration::from_millis(200),
        max_length: 512,
    })
}

fn codes(frames: &[Frame]) -> Vec<String> {
    frames
        .iter()
        .map(|f| match f {
            Frame::Code(c) => c.clone(),
            Frame::Dropped(r) => format!("<dropped: {r}>"),
        })
        .collect()
}

fn decode(layout: Layout, keys: &[(u16, i32)]) -> Vec<String> {
    let mut d = decoder(layout, Terminator::Enter);
    codes(&feed(&mut d, record(keys), Instant::now()))
}

#[test]
fn shift_held_across_characters_and_released_after_one() {
    // Shift held over B and K.
    let held = [
        (LEFT_SHIFT, 1),
        (letter_key('b'), 1),
        (letter_key('b'), 0),
        (letter_key('k'), 1),
        (letter_key('k'), 0),
        (LEFT_SHIFT, 0),
        (MINUS, 1),
        (MINUS, 0),
        (KEY_1, 1),
        (KEY_1, 0),
        (ENTER, 1),
        (ENTER, 0),
    ];
    assert_eq!(decode(Layout::Us, &held), ["BK-1"]);
    // Shift released before the key's own release: the character is decided at key-down.
    let early = [
        (RIGHT_SHIFT, 1),
        (letter_key('a'), 1),
        (RIGHT_SHIFT, 0),
        (letter_key('a'), 0),
        (letter_key('b'), 1),
        (letter_key('b'), 0),
        (ENTER, 1),
    ];
    assert_eq!(decode(Layout::Us, &early), ["Ab"]);
    // Key-ups lost entirely: every character is still there.
    let no_ups = [
        (letter_key('a'), 1),
        (letter_key('b'), 1),
        (letter_key('c'), 1),
        (ENTER, 1),
    ];
    assert_eq!(decode(Layout::Us, &no_ups), ["abc"]);
}

#[test]
fn a_url_in_the_us_and_the_german_layout() {
    let url = "https://termine.musterstadt.de/status/DEMO-Xyz-2026";
    let mut us = scanner_types(Layout::Us, url);
    us.extend(tap(ENTER));
    assert_eq!(decode(Layout::Us, &us), [url]);
    let mut de = scanner_types(Layout::De, url);
    de.extend(tap(ENTER));
    assert_eq!(decode(Layout::De, &de), [url]);
    // Read with the wrong layout, y and z swap and the punctuation moves.
    let wrong = decode(Layout::Us, &de);
    assert_ne!(wrong, [url]);
    assert!(
        wrong[0].starts_with("https>&&") && wrong[0].contains("DEMO/Xzy"),
        "{wrong:?}"
    );
}

#[test]
fn keypad_digits_and_keypad_enter() {
    // KP1 79, KP2 80, KP3 81, KP4 75, KP0 82.
    let keys = [
        (79, 1),
        (79, 0),
        (80, 1),
        (80, 0),
        (81, 1),
        (81, 0),
        (75, 1),
        (75, 0),
        (82, 1),
        (82, 0),
        (KP_ENTER, 1),
        (KP_ENTER, 0),
    ];
    assert_eq!(decode(Layout::Us, &keys), ["12340"]);
    assert_eq!(decode(Layout::De, &keys), ["12340"]);
}

#[test]
fn a_full_signed_check_in_code_decodes_and_verifies() {
    use leitsystem::domain::{BookingId, ServiceId};
    use leitsystem::token::{KeyRing, TokenClaims, generate_key, sign, verify};
    let (key, public) = generate_key(&mut rand::rng());
    let claims = TokenClaims {
        key_id: 7,
        booking: BookingId::new("BK-2026-000123"),
        service: ServiceId::new("ausweis"),
        day: jiff::civil::date(2026, 12, 3),
        slot_minute: 9 * 60 + 30,
        version: 3,
    };
    let code = sign(&claims, "musterstadt-rathaus", &key).expect("signed");
    assert!(code.len() > 200, "{}", code.len());
    for layout in [Layout::Us, Layout::De] {
        let mut keys = scanner_types(layout, &code);
        keys.extend(tap(ENTER));
        let decoded = decode(layout, &keys);
        assert_eq!(
            decoded.as_slice(),
            std::slice::from_ref(&code),
            "{layout:?}"
        );
        let mut ring = KeyRing::default();
        ring.insert_hex(7, &public).expect("key");
        let verified = verify(&decoded[0], "musterstadt-rathaus", &ring).expect("verifies");
        assert_eq!(verified.booking, claims.booking);
    }
}

#[test]
fn auto_repeat_is_no_key_press() {
    let a = letter_key('a');
    let keys = [
        (a, 1),
        (a, 2),
        (a, 2),
        (a, 2),
        (a, 0),
        (ENTER, 1),
        (ENTER, 0),
    ];
    assert_eq!(decode(Layout::Us, &keys), ["a"]);
}

#[test]
fn an_idle_gap_ends_a_scan_without_terminator() {
    let mut d = decoder(Layout::Us, Terminator::None);
    let t = Instant::now();
    let first = record(&scanner_types(Layout::Us, "BK-1"));
    assert!(feed(&mut d, first, t).is_empty());
    assert_eq!(d.deadline(), Some(t + Duration::from_millis(200)));
    // The next scan 300 ms later: the first one is complete before it.
    let second = record(&scanner_types(Layout::Us, "BK-2"));
    let frames = feed(&mut d, second, t + Duration::from_millis(300));
    assert_eq!(codes(&frames), ["BK-1"]);
    assert_eq!(
        d.idle(t + Duration::from_millis(600)),
        Some(Frame::Code("BK-2".into()))
    );
    // Tab as the terminator.
    let mut tab = decoder(Layout::Us, Terminator::Tab);
    let mut keys = scanner_types(Layout::Us, "BK-3");
    keys.extend(tap(TAB));
    assert_eq!(codes(&feed(&mut tab, record(&keys), t)), ["BK-3"]);
}

#[test]
fn control_keys_lost_events_and_overlong_scans_are_dropped_and_the_next_scan_works() {
    let t = Instant::now();
    let mut d = Decoder::new(DecoderOptions {
        layout: Layout::Us,
        terminator: Terminator::Enter,
        idle_gap: Duration::from_millis(200),
        max_length: 8,
    });
    let mut keys = scanner_types(Layout::Us, "ab");
    keys.extend([
        (LEFT_CTRL, 1),
        (letter_key('c'), 1),
        (letter_key('c'), 0),
        (LEFT_CTRL, 0),
    ]);
    keys.extend(tap(ENTER));
    keys.extend(tap(F1));
    keys.extend(tap(ESC));
    keys.extend(tap(ENTER));
    keys.extend(scanner_types(Layout::Us, "123456789"));
    keys.extend(tap(ENTER));
    keys.extend(scanner_types(Layout::Us, "BK-9"));
    keys.extend(tap(ENTER));
    let frames = codes(&feed(&mut d, record(&keys), t));
    assert_eq!(frames.len(), 4, "{frames:?}");
    assert!(frames[0].contains("Ctrl"), "{frames:?}");
    assert!(frames[1].contains("no character"), "{frames:?}");
    assert!(frames[2].contains("longer than 8"), "{frames:?}");
    assert_eq!(frames[3], "BK-9");
    // SYN_DROPPED in the middle of a scan: that scan is dropped, Shift is not left stuck.
    let mut events = record(&[(LEFT_SHIFT, 1), (letter_key('a'), 1)]);
    events.push(InputEvent::new(EventType::SYNCHRONIZATION.0, 3, 0));
    events.extend(record(&[(ENTER, 1)]));
    events.extend(record(&scanner_types(Layout::Us, "ok")));
    events.extend(record(&[(ENTER, 1)]));
    let frames = codes(&feed(&mut d, events, t));
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert!(frames[0].contains("SYN_DROPPED"), "{frames:?}");
    assert_eq!(frames[1], "ok");
}

/// Through the kernel: a virtual keyboard on /dev/uinput types a code, the driver (the built
/// plugin, as the daemon loads it) grabs the keyboard and reports the code.
#[test]
#[ignore = "needs /dev/uinput (not on these machines): run with --ignored on the hardware rig"]
fn a_virtual_keyboard_through_the_kernel_is_grabbed_and_read() {
    use evdev::uinput::VirtualDevice;
    use evdev::{AttributeSet, KeyCode};
    use leitsystem_plugin::PluginMessage;
    use leitsystem_plugin::testing::TestPlugin;
    assert!(
        std::path::Path::new("/dev/uinput").exists(),
        "/dev/uinput is missing: this kernel has no uinput (load the uinput module, or run the \
         hardware rig); the test cannot pass without it"
    );
    let mut keys = AttributeSet::<KeyCode>::new();
    for code in 1..=120u16 {
        keys.insert(KeyCode::new(code));
    }
    let mut keyboard = VirtualDevice::builder()
        .expect("uinput")
        .name("leitsystem test scanner")
        .with_keys(&keys)
        .expect("keys")
        .build()
        .expect("a virtual keyboard");
    std::thread::sleep(Duration::from_millis(500));
    let node = keyboard
        .enumerate_dev_nodes_blocking()
        .expect("device nodes")
        .filter_map(Result::ok)
        .find(|p| p.to_string_lossy().contains("event"))
        .expect("an event node");
    let plugin = TestPlugin::load_built("libleitsystem_hid_scanner.so").expect("built plugin");
    let device = plugin
        .create(serde_json::json!({
            "v": 1, "id": "foyer", "role": "scanner", "desks": [],
            "options": {"device": node.display().to_string(), "layout": "de"}
        }))
        .expect("created");
    device
        .wait_for(0, "connected", Duration::from_secs(5), |m| {
            matches!(
                m,
                PluginMessage::Connection {
                    connected: true,
                    ..
                }
            )
        })
        .expect("grabbed");
    let mut typed = scanner_types(Layout::De, "BK-Xyz-1");
    typed.extend(tap(ENTER));
    for (key, value) in typed {
        keyboard
            .emit(&[InputEvent::new(EventType::KEY.0, key, value)])
            .expect("typed");
    }
    device
        .wait_for(
            0,
            "the scan",
            Duration::from_secs(5),
            |m| matches!(m, PluginMessage::Scanned { code } if code == "BK-Xyz-1"),
        )
        .expect("scanned");
}
