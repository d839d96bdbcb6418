//! What the test and the rig agent inside the VM say to each other: one JSON object per line
//! over a virtio-serial port, a [`Request`] from the test answered by one [`Response`].

use serde::{Deserialize, Serialize};

/// The virtio-serial port's name (`/sys/class/virtio-ports/*/name`).
pub const PORT_NAME: &str = "rig";

/// The agent's first line once it is up.
pub const HELLO: &str = "rig agent ready";

/// Which of the agent's emulated printers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrinterLink {
    /// The USB printer gadget, `/dev/g_printer0` (the daemon sees `/dev/usb/lp0`).
    Usb,
    /// A network printer on 127.0.0.1 inside the VM.
    Tcp,
}

/// A request to the agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Runs `sh -c command`; answers its exit code and its output (stdout, then stderr).
    Shell {
        /// The shell command.
        command: String,
    },
    /// Writes `text` to `path` (a config file).
    PutFile {
        /// The file.
        path: String,
        /// Its new content.
        text: String,
    },
    /// Writes bytes to a device file in chunks, one `write(2)` each (a HID report is one
    /// write); each chunk must be taken within 2 s. A tty is switched to raw mode first.
    Write {
        /// The device file.
        path: String,
        /// The bytes, as hex.
        hex: String,
        /// Bytes per write.
        chunk: usize,
        /// Pause between writes.
        pause_ms: u64,
    },
    /// Sets the VM's wall clock.
    SetClock {
        /// Seconds since 1970 (UTC).
        unix_seconds: i64,
    },
    /// Starts `leitsystemd run --config <config> --data-dir <data_dir>`, its log in
    /// `<data_dir>.log`. One daemon at a time.
    StartDaemon {
        /// The config file.
        config: String,
        /// The data directory.
        data_dir: String,
    },
    /// Stops the daemon (SIGTERM, SIGKILL after 10 s); answers its exit code.
    StopDaemon,
    /// Sends one line to a Unix socket and answers the line it sends back.
    Control {
        /// The socket (the daemon's control socket).
        socket: String,
        /// The request line (JSON).
        line: String,
    },
    /// Sets both emulated printers' sensors.
    PrinterSensors {
        /// `ok`, `near_end` or `out`.
        paper: String,
        /// Whether the cover is open.
        cover_open: bool,
    },
    /// Answers the bytes a printer received so far as hex and forgets them.
    PrinterTake {
        /// Which printer.
        link: PrinterLink,
    },
    /// Answers the TCP printer's port on 127.0.0.1.
    TcpPrinterPort,
    /// Answers the event device (`/dev/input/eventN`) of the keyboard with a USB id.
    FindEventDevice {
        /// `"vvvv:pppp"` (hex).
        usb_id: String,
    },
    /// Starts a second, ordinary (not grabbing) reader of an event device that counts key
    /// presses until [`Request::KeysSeen`].
    WatchKeys {
        /// The event device.
        path: String,
    },
    /// Stops the watcher; answers the key presses it read.
    KeysSeen,
    /// Drives a simulated GPIO line (`/rig/gpio`) from outside, as a button's contact does:
    /// each step pulls it high or low and holds that for `ms`. Answers when all are done.
    GpioDrive {
        /// The line's name (`GPIO17`).
        line: String,
        /// The levels in order.
        steps: Vec<GpioStep>,
    },
    /// Reads a simulated GPIO line's level `count` times, `every_ms` apart (an LED the daemon
    /// drives); answers the samples as a string of `0` and `1`.
    GpioSample {
        /// The line's name.
        line: String,
        /// How many samples.
        count: u32,
        /// Pause between them.
        every_ms: u64,
    },
}

/// One level of a driven GPIO line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpioStep {
    /// Pulled high (true) or low.
    pub high: bool,
    /// How long.
    pub ms: u64,
}

/// The agent's answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Response {
    /// Whether the request was carried out.
    pub ok: bool,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Text: output, hex bytes, a path or a line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// A number: an exit code, a port, a count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<i64>,
}

impl Response {
    /// A success with text.
    pub fn text(text: impl Into<String>) -> Response {
        Response {
            ok: true,
            text: Some(text.into()),
            ..Response::default()
        }
    }

    /// A success with a number.
    pub fn number(number: i64) -> Response {
        Response {
            ok: true,
            number: Some(number),
            ..Response::default()
        }
    }

    /// A failure.
    pub fn failed(error: impl Into<String>) -> Response {
        Response {
            ok: false,
            error: Some(error.into()),
            ..Response::default()
        }
    }
}

/// Bytes as lowercase hex.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex back to bytes.
pub fn from_hex(hex: &str) -> Result<Vec<u8>, String> {
    if !hex.len().is_multiple_of(2) {
        return Err(format!("hex of odd length {}", hex.len()));
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| format!("not hex at {i}"))
        })
        .collect()
}
