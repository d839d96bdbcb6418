//! `hid-scanner`: a driver plugin for QR code scanners that are USB keyboards (HID), read
//! through the kernel's evdev interface (`/dev/input/event*`) with the `evdev` crate.
//!
//! Options (the device's `options` in the daemon's config), one of `device`, `usb_id` and
//! `model`:
//! - `device`: `/dev/input/eventN`, or a `/dev/input/by-id/` name (`usb-…-event-kbd`);
//! - `usb_id`: `"vvvv:pppp"` (hex vendor and product id): the first keyboard device with it;
//! - `model`: a model of the scanner table (`leitsystem-scanner-models`): the first keyboard
//!   device with the model's keyboard-mode id. An `usb_id` the table knows as a scanner in
//!   another mode (serial, HID POS) is refused with what to do;
//! - `layout`: `us` (default) or `de`: the keyboard layout the *scanner* is set to type in;
//! - `terminator`: `enter` (default: Enter or keypad Enter), `tab`, `enter_or_tab` or `none`;
//! - `idle_gap_ms` (default 200): the pause that ends a code without terminator;
//! - `max_length` (default 4096 characters);
//! - `reconnect_max_ms` (default 5000): longest pause between searches for the device.
//!
//! One blocking reader thread per device: it opens the device and grabs it (`EVIOCGRAB`) at
//! once, so the keystrokes reach nobody else (not the console login, not a desktop), then
//! waits in `poll(2)` (at most 50 ms, so it notices `stop` and idle gaps) and decodes every
//! key event with [`decoder::Decoder`]. Unplugged (`ENODEV`, a hang-up): reported disconnected
//! and searched for again with backoff, so the scanner plugged back in (also as another
//! `eventN`) is found and grabbed again.
//!
//! Like every driver, it must never touch the store or MQTT, block in the host's `emit`, or let a
//! panic cross the ABI: it speaks only plugin messages.

pub mod decoder;
pub mod keymap;

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use evdev::raw_stream::RawDevice;
use evdev::{EventType, KeyCode};
use leitsystem_plugin::messages::Role;
use leitsystem_plugin::{DeviceConfig, Driver, Host, HostMessage, LogLevel, PluginMessage};
use leitsystem_scanner_models::{self as models, Mode, UsbId};
use serde_json::{Map, Value};

use crate::decoder::{Decoder, DecoderOptions, Frame, Input, Terminator};
use crate::keymap::Layout;

/// Where a bare device name is looked up.
pub const BY_ID_DIR: &str = "/dev/input/by-id";
/// The longest wait in `poll(2)`.
const POLL_MS: u64 = 50;
/// First pause before searching for the device again; doubles to `reconnect_max_ms`.
const RECONNECT_INITIAL: Duration = Duration::from_millis(100);
/// `SYN_DROPPED`: the kernel's event buffer overflowed.
const SYN_DROPPED: u16 = 3;
const OPTIONS: [&str; 8] = [
    "device",
    "usb_id",
    "model",
    "layout",
    "terminator",
    "idle_gap_ms",
    "max_length",
    "reconnect_max_ms",
];

/// How the scanner is found: a device file, or the first keyboard with one of the USB ids.
pub use leitsystem_scanner_models::Selector;

/// A device's options, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// How the device is found.
    pub selector: Selector,
    /// How key events become codes.
    pub decoder: DecoderOptions,
    /// Longest pause between searches.
    pub reconnect_max: Duration,
}

impl Settings {
    /// Reads and checks the options; an error names the option.
    pub fn from_options(options: &Value) -> Result<Settings, String> {
        let empty = Map::new();
        let options = match options {
            Value::Object(map) => map,
            Value::Null => &empty,
            other => return Err(format!("the options must be a table, not {other}")),
        };
        if let Some(key) = options.keys().find(|k| !OPTIONS.contains(&k.as_str())) {
            return Err(format!(
                "unknown option '{key}'; known options: {}",
                OPTIONS.join(", ")
            ));
        }
        let text = |key: &str| match options.get(key) {
            None => Ok(None),
            Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
            Some(other) => Err(format!(
                "option '{key}' must be a non-empty string, not {other}"
            )),
        };
        let selector = models::select(
            text("device")?,
            text("usb_id")?,
            text("model")?,
            &Mode::Keyboard,
            &models::DeviceHelp {
                by_id_dir: BY_ID_DIR,
                device_example: "/dev/input/event3",
                usb_example: "0c2e:0b61",
            },
        )?;
        let number = |key: &str, default: u64, range: std::ops::RangeInclusive<u64>| match options
            .get(key)
        {
            None => Ok(default),
            Some(value) => value.as_u64().filter(|n| range.contains(n)).ok_or_else(|| {
                format!(
                    "option '{key}' must be a number in {}..={}, not {value}",
                    range.start(),
                    range.end()
                )
            }),
        };
        Ok(Settings {
            selector,
            decoder: DecoderOptions {
                layout: Layout::parse(&text("layout")?.unwrap_or_else(|| "us".into()))?,
                terminator: Terminator::parse(
                    &text("terminator")?.unwrap_or_else(|| "enter".into()),
                )?,
                idle_gap: Duration::from_millis(number("idle_gap_ms", 200, 10..=10_000)?),
                max_length: usize::try_from(number("max_length", 4096, 1..=65_536)?)
                    .map_err(|e| e.to_string())?,
            },
            reconnect_max: Duration::from_millis(number("reconnect_max_ms", 5000, 100..=600_000)?),
        })
    }
}

/// One keyboard scanner.
pub struct HidScanner {
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
}

impl Driver for HidScanner {
    fn create(config: DeviceConfig, host: Host) -> Result<Self, String> {
        if config.role != Role::Scanner {
            return Err(format!(
                "the hid-scanner plugin drives scanners; device '{}' has role '{}'",
                config.id,
                config.role.as_str()
            ));
        }
        let settings = Settings::from_options(&config.options)?;
        host.log(
            LogLevel::Info,
            format!(
                "scanner {}: {:?}, layout {:?}, terminator {:?}",
                config.id, settings.selector, settings.decoder.layout, settings.decoder.terminator
            ),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let reader = host
            .spawn(&format!("scanner-{}", config.id), move || {
                read_loop(&settings, host, &flag);
            })
            .map_err(|e| format!("cannot start the reader thread: {e}"))?;
        Ok(HidScanner {
            stop,
            reader: Some(reader),
        })
    }

    fn handle(&mut self, message: HostMessage) -> Result<(), String> {
        Err(format!(
            "a scanner takes no messages from the host, got '{}'",
            message.kind()
        ))
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

impl Drop for HidScanner {
    fn drop(&mut self) {
        self.stop();
    }
}

fn connection(host: Host, connected: bool, detail: String) {
    host.emit(&PluginMessage::Connection {
        connected,
        detail: Some(detail),
    });
}

/// Finds the device, grabs it, reads codes until it goes away, and searches again; until
/// `stop`.
fn read_loop(settings: &Settings, host: Host, stop: &AtomicBool) {
    let mut backoff = RECONNECT_INITIAL;
    let mut reported: Option<String> = None;
    while !stop.load(Ordering::Relaxed) {
        match open_and_grab(&settings.selector) {
            Ok((device, path)) => {
                backoff = RECONNECT_INITIAL;
                let name = device.name().unwrap_or("?").to_string();
                let usb = match usb_id_of(&device) {
                    Some(usb) => match models::identify(usb) {
                        Some((model, mode)) => format!(", USB id {usb}: {} in {mode}", model.name),
                        None => format!(", USB id {usb}"),
                    },
                    None => String::new(),
                };
                connection(
                    host,
                    true,
                    format!("{} ({name}{usb}) grabbed", path.display()),
                );
                let why = read_codes(device, settings, host, stop);
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                host.log(LogLevel::Warn, format!("scanner lost: {why}"));
                connection(host, false, why.clone());
                reported = Some(why);
            }
            Err(why) => {
                if reported.as_deref() != Some(why.as_str()) {
                    connection(host, false, why.clone());
                    reported = Some(why);
                }
            }
        }
        let until = Instant::now() + backoff;
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
        }
        backoff = (backoff * 2).min(settings.reconnect_max);
    }
}

/// The device's USB vendor and product id; `None` when it is not on USB.
fn usb_id_of(device: &RawDevice) -> Option<UsbId> {
    let id = device.input_id();
    (id.bus_type() == evdev::BusType::BUS_USB).then(|| UsbId {
        vendor: id.vendor(),
        product: id.product(),
    })
}

/// Whether a device types (has Enter or the letter A): a scanner's keyboard interface.
fn is_keyboard(device: &RawDevice) -> bool {
    device
        .supported_keys()
        .is_some_and(|keys| keys.contains(KeyCode::KEY_ENTER) || keys.contains(KeyCode::KEY_A))
}

fn open_and_grab(selector: &Selector) -> Result<(RawDevice, PathBuf), String> {
    let (mut device, path) = match selector {
        Selector::Path(path) => (
            RawDevice::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?,
            path.clone(),
        ),
        Selector::Usb(ids) => evdev::raw_stream::enumerate()
            .find(|(_, d)| usb_id_of(d).is_some_and(|usb| ids.contains(&usb)) && is_keyboard(d))
            .map(|(path, device)| (device, path))
            .ok_or_else(|| {
                let ids: Vec<String> = ids.iter().map(UsbId::to_string).collect();
                format!("no keyboard with USB id {}", ids.join(" or "))
            })?,
    };
    // Grabbed at once: no keystroke of a scan reaches the console or another reader.
    device.grab().map_err(|e| {
        format!(
            "cannot grab {} (another program holds it?): {e}",
            path.display()
        )
    })?;
    let fd = device.as_raw_fd();
    // SAFETY: fcntl on a descriptor this device owns; no memory is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(format!("cannot make {} non-blocking", path.display()));
    }
    Ok((device, path))
}

/// Waits until the device is readable or `timeout` passes; an error when it is gone.
fn wait_readable(device: &RawDevice, timeout: Duration) -> Result<bool, String> {
    let mut poll = libc::pollfd {
        fd: device.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let millis = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: one valid pollfd for the length given.
    let ready = unsafe { libc::poll(&mut poll, 1, millis) };
    if ready < 0 {
        let e = std::io::Error::last_os_error();
        return if e.kind() == std::io::ErrorKind::Interrupted {
            Ok(false)
        } else {
            Err(format!("poll failed: {e}"))
        };
    }
    if poll.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
        return Err("the device went away".to_string());
    }
    Ok(ready > 0)
}

/// Translates one kernel event for the decoder (None: not a key or a drop).
pub fn input_of(event: &evdev::InputEvent) -> Option<Input> {
    if event.event_type() == EventType::KEY {
        Some(Input::Key(event.code(), event.value()))
    } else if event.event_type() == EventType::SYNCHRONIZATION && event.code() == SYN_DROPPED {
        Some(Input::Dropped)
    } else {
        None
    }
}

/// Decodes events the kernel delivered together at `now`: the reader's one path from
/// `input_event`s to frames (the tests feed recorded events through it too).
pub fn feed(
    decoder: &mut Decoder,
    events: impl IntoIterator<Item = evdev::InputEvent>,
    now: Instant,
) -> Vec<Frame> {
    events
        .into_iter()
        .filter_map(|e| input_of(&e))
        .flat_map(|input| decoder.event(input, now))
        .collect()
}

/// Hands a frame to the host: a code as `scanned`, a dropped one as a warning.
fn deliver(host: Host, frame: Frame) {
    match frame {
        Frame::Code(code) => host.emit(&PluginMessage::Scanned { code }),
        Frame::Dropped(reason) => host.log(LogLevel::Warn, format!("scan dropped: {reason}")),
    }
}

fn read_codes(mut device: RawDevice, settings: &Settings, host: Host, stop: &AtomicBool) -> String {
    let mut decoder = Decoder::new(settings.decoder);
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let wait = decoder
            .deadline()
            .map_or(Duration::from_millis(POLL_MS), |d| {
                d.saturating_duration_since(now)
                    .min(Duration::from_millis(POLL_MS))
            });
        match wait_readable(&device, wait) {
            Ok(true) => {}
            Ok(false) => {
                if let Some(frame) = decoder.idle(Instant::now()) {
                    deliver(host, frame);
                }
                continue;
            }
            Err(why) => return why,
        }
        match device.fetch_events() {
            Ok(events) => {
                let events: Vec<evdev::InputEvent> = events.collect();
                for frame in feed(&mut decoder, events, Instant::now()) {
                    deliver(host, frame);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => {
                return "the scanner was unplugged (ENODEV)".to_string();
            }
            Err(e) => return format!("read error: {e}"),
        }
    }
    String::new()
}

leitsystem_plugin::export_plugin!(
    HidScanner,
    name: "hid-scanner",
    version: env!("CARGO_PKG_VERSION"),
    roles: "scanner"
);
