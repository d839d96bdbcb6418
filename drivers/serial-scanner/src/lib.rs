//! `serial-scanner`: a driver plugin for QR code scanners on a serial line: USB-CDC scanners
//! (`/dev/ttyACM*`), USB-serial adapters (`/dev/ttyUSB*`) and RS-232.
//!
//! Options (the device's `options` in the daemon's config), one of `device`, `usb_id` and
//! `model`:
//! - `device`: the device file, e.g. `/dev/ttyACM0` or `/dev/serial/by-id/usb-…`; a bare name
//!   is looked up in `/dev/serial/by-id/`;
//! - `usb_id`: `"vvvv:pppp"` (hex): the first tty of a USB device with this id (found through
//!   sysfs at every open, so also after a replug under another name);
//! - `model`: a model of the scanner table (`leitsystem-scanner-models`): its serial-mode ids.
//!   An `usb_id` the table knows as a scanner in another mode is refused with what to do;
//! - `baud` (default 9600);
//! - `terminator`: `any` (default: CR, LF or CR LF), `cr`, `lf`, `crlf` or `none` (only the
//!   idle gap ends a code);
//! - `idle_gap_ms` (default 200): the pause that ends a code without terminator;
//! - `aim_prefix`: `strip` (default; `]Q1` and the like before the code) or `keep`;
//! - `max_length` (default 4096 bytes): longer codes are dropped with a log line;
//! - `reconnect_max_ms` (default 5000): longest pause between attempts to open the device.
//!
//! One reader thread per device owns the port: it opens the device (exclusively), reads with
//! a short timeout so it notices `stop` and idle gaps, and reports `connection` on every
//! change. An unplugged scanner (read error, hang-up, the device file gone) is reported
//! disconnected and opened again with backoff until it is back. Codes go to the host as
//! `scanned`; dropped frames (garbage, over-long) only as a warning in the journal. See
//! `README.md` next to this crate.
//!
//! Like every driver, it must never touch the store or MQTT, block in the host's `emit`, or let a
//! panic cross the ABI: it speaks only plugin messages.

pub mod framing;
pub mod usb;

use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use leitsystem_plugin::messages::Role;
use leitsystem_plugin::{DeviceConfig, Driver, Host, HostMessage, LogLevel, PluginMessage};
use leitsystem_scanner_models::{self as models, Mode};
use serde_json::{Map, Value};

use crate::framing::{Frame, Framer, FramingOptions, Terminator};

/// Where a bare device name is looked up.
pub const BY_ID_DIR: &str = "/dev/serial/by-id";
/// How long one read waits before the reader looks at `stop` and the idle gap.
const READ_TIMEOUT: Duration = Duration::from_millis(20);
/// First pause before opening the device again; doubles up to `reconnect_max_ms`.
const RECONNECT_INITIAL: Duration = Duration::from_millis(100);
const OPTIONS: [&str; 9] = [
    "device",
    "usb_id",
    "model",
    "baud",
    "terminator",
    "idle_gap_ms",
    "aim_prefix",
    "max_length",
    "reconnect_max_ms",
];

/// How the scanner's port is found: a device file, or the first tty of a USB device with one
/// of the ids.
pub use leitsystem_scanner_models::Selector as Port;

/// The port's device file now: the path, or the tty sysfs finds for the ids.
pub fn resolve(port: &Port) -> Result<PathBuf, String> {
    match port {
        Port::Path(path) => Ok(path.clone()),
        Port::Usb(ids) => usb::find_tty(Path::new(usb::SYS_CLASS_TTY), Path::new("/dev"), ids),
    }
}

/// A device's options, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// How the port is found.
    pub port: Port,
    /// Line speed.
    pub baud: u32,
    /// How codes are cut.
    pub framing: FramingOptions,
    /// Longest pause between open attempts.
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
        let text_option = |key: &str| match options.get(key) {
            None => Ok(None),
            Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
            Some(other) => Err(format!(
                "option '{key}' must be a non-empty string, not {other}"
            )),
        };
        let port = models::select(
            text_option("device")?,
            text_option("usb_id")?,
            text_option("model")?,
            &Mode::Serial,
            &models::DeviceHelp {
                by_id_dir: BY_ID_DIR,
                device_example: "/dev/ttyACM0",
                usb_example: "1eab:1a06",
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
        let text = |key: &str, default: &str| match options.get(key) {
            None => Ok(default.to_string()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(format!("option '{key}' must be a string, not {other}")),
        };
        let terminator = Terminator::parse(&text("terminator", "any")?)?;
        let strip_aim = match text("aim_prefix", "strip")?.as_str() {
            "strip" => true,
            "keep" => false,
            other => {
                return Err(format!(
                    "option 'aim_prefix' must be \"strip\" or \"keep\", not \"{other}\""
                ));
            }
        };
        Ok(Settings {
            port,
            baud: u32::try_from(number("baud", 9600, 300..=4_000_000)?)
                .map_err(|e| e.to_string())?,
            framing: FramingOptions {
                terminator,
                idle_gap: Duration::from_millis(number("idle_gap_ms", 200, 10..=10_000)?),
                max_length: usize::try_from(number("max_length", 4096, 1..=65_536)?)
                    .map_err(|e| e.to_string())?,
                strip_aim,
            },
            reconnect_max: Duration::from_millis(number("reconnect_max_ms", 5000, 100..=600_000)?),
        })
    }
}

/// One serial scanner.
pub struct SerialScanner {
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
}

impl Driver for SerialScanner {
    fn create(config: DeviceConfig, host: Host) -> Result<Self, String> {
        if config.role != Role::Scanner {
            return Err(format!(
                "the serial-scanner plugin drives scanners; device '{}' has role '{}'",
                config.id,
                config.role.as_str()
            ));
        }
        let settings = Settings::from_options(&config.options)?;
        host.log(
            LogLevel::Info,
            format!(
                "scanner {} on {:?} at {} baud, terminator {:?}, idle gap {} ms",
                config.id,
                settings.port,
                settings.baud,
                settings.framing.terminator,
                settings.framing.idle_gap.as_millis()
            ),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let reader = host
            .spawn(&format!("scanner-{}", config.id), move || {
                read_loop(&settings, host, &flag);
            })
            .map_err(|e| format!("cannot start the reader thread: {e}"))?;
        Ok(SerialScanner {
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

impl Drop for SerialScanner {
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

/// Opens the device, reads codes until it goes away, and opens it again; until `stop`.
fn read_loop(settings: &Settings, host: Host, stop: &AtomicBool) {
    let mut backoff = RECONNECT_INITIAL;
    let mut reported_down: Option<String> = None;
    while !stop.load(Ordering::Relaxed) {
        match resolve(&settings.port).and_then(|path| open(&path, settings.baud)) {
            Ok((port, path)) => {
                backoff = RECONNECT_INITIAL;
                connection(host, true, format!("{} open", path.display()));
                let why = read_codes(port, &path, settings, host, stop);
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                host.log(LogLevel::Warn, format!("scanner lost: {why}"));
                connection(host, false, why.clone());
                reported_down = Some(why);
            }
            Err(why) => {
                // Reported once per outage, not at every attempt.
                if reported_down.as_deref() != Some(why.as_str()) {
                    connection(host, false, why.clone());
                    reported_down = Some(why);
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

fn open(device: &Path, baud: u32) -> Result<(serialport::TTYPort, PathBuf), String> {
    let path = device.display().to_string();
    serialport::new(path.as_str(), baud)
        .data_bits(serialport::DataBits::Eight)
        .parity(serialport::Parity::None)
        .stop_bits(serialport::StopBits::One)
        .flow_control(serialport::FlowControl::None)
        .timeout(READ_TIMEOUT)
        .open_native()
        .map(|port| (port, device.to_path_buf()))
        .map_err(|e| format!("cannot open {path}: {e}"))
}

/// Reads until the port fails or `stop`; returns why it ended.
fn read_codes(
    mut port: serialport::TTYPort,
    device: &Path,
    settings: &Settings,
    host: Host,
    stop: &AtomicBool,
) -> String {
    let mut framer = Framer::new(settings.framing);
    let mut buffer = [0u8; 512];
    let deliver = |frame: Frame| match frame {
        Frame::Code(code) => host.emit(&PluginMessage::Scanned { code }),
        Frame::Dropped(reason) => host.log(LogLevel::Warn, format!("scan dropped: {reason}")),
    };
    while !stop.load(Ordering::Relaxed) {
        match port.read(&mut buffer) {
            // A tty whose other side hung up reads 0 bytes at once, again and again.
            Ok(0) => return "the device hung up".to_string(),
            Ok(n) => framer
                .push(&buffer[..n], Instant::now())
                .into_iter()
                .for_each(deliver),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::TimedOut | ErrorKind::WouldBlock | ErrorKind::Interrupted
                ) =>
            {
                if let Some(frame) = framer.idle(Instant::now()) {
                    deliver(frame);
                }
                // A USB scanner that is unplugged can leave the port open but the file gone.
                if !device.exists() {
                    return format!("{} disappeared", device.display());
                }
            }
            Err(e) => return format!("read error: {e}"),
        }
    }
    String::new()
}

leitsystem_plugin::export_plugin!(
    SerialScanner,
    name: "serial-scanner",
    version: env!("CARGO_PKG_VERSION"),
    roles: "scanner"
);

#[cfg(test)]
mod tests {
    use super::*;
    use leitsystem_scanner_models::UsbId;
    use serde_json::json;

    #[test]
    fn options_are_checked_with_the_option_named() {
        let ok = Settings::from_options(&json!({"device": "/dev/ttyACM0"})).expect("valid");
        assert_eq!(ok.baud, 9600);
        assert_eq!(ok.framing.terminator, Terminator::Any);
        assert!(ok.framing.strip_aim);
        let by_id =
            Settings::from_options(&json!({"device": "usb-Scanner_123-if00"})).expect("valid");
        assert_eq!(
            by_id.port,
            Port::Path(PathBuf::from("/dev/serial/by-id/usb-Scanner_123-if00"))
        );
        let by_model =
            Settings::from_options(&json!({"model": "metrologic-ms7120"})).expect("valid");
        assert_eq!(
            by_model.port,
            Port::Usb(vec![
                UsbId::parse("0c2e:0700").expect("id"),
                UsbId::parse("0c2e:0720").expect("id")
            ])
        );
        assert_eq!(
            Settings::from_options(&json!({"usb_id": "0403:6001"}))
                .expect("an id the table does not know")
                .port,
            Port::Usb(vec![UsbId::parse("0403:6001").expect("id")])
        );
        for (options, named) in [
            (json!({}), "or 'model' is missing"),
            (json!({"device": "/dev/x", "baud": 0}), "baud"),
            (
                json!({"device": "/dev/x", "terminator": "tab"}),
                "terminator",
            ),
            (
                json!({"device": "/dev/x", "aim_prefix": "drop"}),
                "aim_prefix",
            ),
            (json!({"device": "/dev/x", "idle_gap_ms": 1}), "idle_gap_ms"),
            (json!({"device": "/dev/x", "colour": "red"}), "colour"),
            (json!({"usb_id": "1eab"}), "usb_id"),
            (
                json!({"usb_id": ""}),
                "option 'usb_id' must be a non-empty string",
            ),
            // The HR22 in keyboard mode: the hid-scanner driver reads it.
            (json!({"usb_id": "1eab:1a03"}), "hid-scanner driver"),
            (json!({"usb_id": "1eab:1a10"}), "HID POS mode"),
            (json!({"model": "scanmaster"}), "newland-hr22"),
            (
                json!({"model": "newland-hr22", "device": "/dev/x"}),
                "not several",
            ),
        ] {
            let error = Settings::from_options(&options).expect_err("invalid");
            assert!(error.contains(named), "{options}: {error}");
        }
    }
}
