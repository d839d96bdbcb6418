//! The wire to the printer: serial, USB printer class device or TCP, behind one [`Link`] trait.
//!
//! Options (in the device's `options`):
//!
//! | transport | options |
//! |---|---|
//! | `"serial"` | `device` (path, required), `baud` (default 9600; 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200 or 230400), `flow_control` (`"none"` (default), `"software"` (XON/XOFF), `"hardware"` (RTS/CTS)); 8 data bits, no parity, 1 stop bit |
//! | `"usb"` | `device` (default `/dev/usb/lp0`, the Linux USB printer class device) |
//! | `"tcp"` | `host` (required), `port` (default 9100, "raw" printing) |
//!
//! All three are file descriptors driven the same way: non-blocking, with `poll(2)` bounding
//! every read and write by a deadline and waking every 50 ms to notice that the driver stops.
//! A serial port is opened (and configured, exclusively) with the `serialport` crate; the USB
//! device is opened read+write as a plain file; a TCP connection is made on a helper thread
//! (name resolution and connect cannot be interrupted) with a 3 s timeout, and sends at once
//! (`TCP_NODELAY`).
//!
//! Write timeouts for a job: serial 2 s plus the job's bytes at the configured baud (10 bits
//! per byte), TCP and USB 5 s.
//!
//! Over 600 lines only with its unit tests (the code is about 550).

use std::fs::File;
use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

/// Standard serial rates the `baud` option accepts.
pub const BAUD_RATES: [u32; 9] = [1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400];
/// The default serial rate (the factory setting of most ESC/POS printers).
pub const DEFAULT_BAUD: u32 = 9600;
/// The default USB printer class device.
pub const DEFAULT_USB_DEVICE: &str = "/dev/usb/lp0";
/// The default TCP port ("raw" / JetDirect printing).
pub const DEFAULT_TCP_PORT: u16 = 9100;
/// How long a TCP connect may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest single wait inside a read or write: how quickly a stopping driver is noticed.
const SLICE: Duration = Duration::from_millis(50);

/// Serial flow control.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowControl {
    /// None.
    None,
    /// XON/XOFF.
    Software,
    /// RTS/CTS.
    Hardware,
}

/// Where and how the printer is connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// A serial port.
    Serial {
        /// Its path, e.g. `/dev/ttyUSB0`.
        device: String,
        /// Bits per second.
        baud: u32,
        /// Flow control.
        flow_control: FlowControl,
    },
    /// A USB printer class device opened as a file, e.g. `/dev/usb/lp0`.
    Usb {
        /// Its path.
        device: String,
    },
    /// A network printer's raw port.
    Tcp {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
}

/// Option names [`Transport::from_options`] reads.
pub const LINK_OPTIONS: [&str; 6] = [
    "transport",
    "device",
    "baud",
    "flow_control",
    "host",
    "port",
];

fn string_option<'a>(
    options: &'a Map<String, Value>,
    key: &str,
) -> Result<Option<&'a str>, String> {
    match options.get(key) {
        None => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s)),
        Some(other) => Err(format!(
            "option '{key}' must be a non-empty string, not {other}"
        )),
    }
}

impl Transport {
    /// Reads `transport` and its options; errors name the option.
    pub fn from_options(options: &Map<String, Value>) -> Result<Transport, String> {
        let only_for = |keys: &[&str], transport: &str| -> Result<(), String> {
            for key in keys {
                if options.contains_key(*key) {
                    return Err(format!(
                        "option '{key}' does not apply to transport '{transport}'"
                    ));
                }
            }
            Ok(())
        };
        let transport = match string_option(options, "transport")? {
            Some(t) => t,
            None => {
                return Err(
                    "option 'transport' is missing (\"serial\", \"usb\" or \"tcp\")".to_string(),
                );
            }
        };
        match transport {
            "serial" => {
                only_for(&["host", "port"], "serial")?;
                let device = string_option(options, "device")?
                    .ok_or("option 'device' (the serial port, e.g. /dev/ttyUSB0) is missing")?
                    .to_string();
                let baud = match options.get("baud") {
                    None => DEFAULT_BAUD,
                    Some(value) => value
                        .as_u64()
                        .and_then(|b| u32::try_from(b).ok())
                        .filter(|b| BAUD_RATES.contains(b))
                        .ok_or_else(|| {
                            let rates: Vec<String> =
                                BAUD_RATES.iter().map(u32::to_string).collect();
                            format!(
                                "option 'baud' must be one of {}, not {value}",
                                rates.join(", ")
                            )
                        })?,
                };
                let flow_control = match string_option(options, "flow_control") {
                    Ok(None) => FlowControl::None,
                    Ok(Some("none")) => FlowControl::None,
                    Ok(Some("software")) => FlowControl::Software,
                    Ok(Some("hardware")) => FlowControl::Hardware,
                    _ => {
                        return Err(format!(
                            "option 'flow_control' must be \"none\", \"software\" or \"hardware\", not {}",
                            options.get("flow_control").unwrap_or(&Value::Null)
                        ));
                    }
                };
                Ok(Transport::Serial {
                    device,
                    baud,
                    flow_control,
                })
            }
            "usb" => {
                only_for(&["host", "port", "baud", "flow_control"], "usb")?;
                Ok(Transport::Usb {
                    device: string_option(options, "device")?
                        .unwrap_or(DEFAULT_USB_DEVICE)
                        .to_string(),
                })
            }
            "tcp" => {
                only_for(&["device", "baud", "flow_control"], "tcp")?;
                let host = string_option(options, "host")?
                    .ok_or("option 'host' (the printer's name or address) is missing")?
                    .to_string();
                let port = match options.get("port") {
                    None => DEFAULT_TCP_PORT,
                    Some(value) => value
                        .as_u64()
                        .and_then(|p| u16::try_from(p).ok())
                        .filter(|p| *p > 0)
                        .ok_or_else(|| format!("option 'port' must be 1..=65535, not {value}"))?,
                };
                Ok(Transport::Tcp { host, port })
            }
            other => Err(format!(
                "option 'transport' must be \"serial\", \"usb\" or \"tcp\", not \"{other}\""
            )),
        }
    }

    /// For logs and connection details: "serial /dev/ttyUSB0 at 9600 baud", "tcp host:9100".
    pub fn describe(&self) -> String {
        match self {
            Transport::Serial { device, baud, .. } => format!("serial {device} at {baud} baud"),
            Transport::Usb { device } => format!("usb {device}"),
            Transport::Tcp { host, port } => format!("tcp {host}:{port}"),
        }
    }

    /// How long writing a job of `bytes` may take: serial 2 s + the bytes at the baud rate
    /// (10 bits per byte), TCP and USB 5 s.
    pub fn job_write_timeout(&self, bytes: usize) -> Duration {
        match self {
            Transport::Serial { baud, .. } => {
                Duration::from_secs(2)
                    + Duration::from_millis(bytes as u64 * 10 * 1000 / u64::from(*baud))
            }
            Transport::Usb { .. } | Transport::Tcp { .. } => Duration::from_secs(5),
        }
    }

    /// Opens the link. `stop` aborts a slow connect and every later wait on the link.
    pub fn open(&self, stop: Arc<AtomicBool>) -> Result<Box<dyn Link>, String> {
        let device = match self {
            Transport::Serial {
                device,
                baud,
                flow_control,
            } => {
                let port = serialport::new(device.as_str(), *baud)
                    .flow_control(match flow_control {
                        FlowControl::None => serialport::FlowControl::None,
                        FlowControl::Software => serialport::FlowControl::Software,
                        FlowControl::Hardware => serialport::FlowControl::Hardware,
                    })
                    .data_bits(serialport::DataBits::Eight)
                    .parity(serialport::Parity::None)
                    .stop_bits(serialport::StopBits::One)
                    .open_native()
                    .map_err(|e| format!("cannot open {device}: {}", e.description))?;
                set_nonblocking(port.as_raw_fd())
                    .map_err(|e| format!("cannot configure {device}: {e}"))?;
                Device::Serial(port)
            }
            Transport::Usb { device } => {
                let file = File::options()
                    .read(true)
                    .write(true)
                    .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
                    .open(device)
                    .map_err(|e| format!("cannot open {device}: {e}"))?;
                Device::File(file)
            }
            Transport::Tcp { host, port } => {
                let stream = connect_tcp(host, *port, &stop)
                    .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
                let configured = stream
                    .set_nodelay(true)
                    .and_then(|()| stream.set_nonblocking(true));
                configured.map_err(|e| format!("cannot configure the connection: {e}"))?;
                Device::Tcp(stream)
            }
        };
        let fd = device.fd();
        Ok(Box::new(FdLink { device, fd, stop }))
    }
}

/// An open connection to the printer. Every call is bounded by its timeout and returns early
/// with [`io::ErrorKind::Interrupted`] when the driver stops.
pub trait Link: Send {
    /// Writes all of `bytes` within `timeout` ([`io::ErrorKind::TimedOut`] otherwise).
    fn write_all(&mut self, bytes: &[u8], timeout: Duration) -> io::Result<()>;

    /// Reads one byte within `timeout`: [`io::ErrorKind::TimedOut`] when none came,
    /// [`io::ErrorKind::UnexpectedEof`] when the other side closed.
    fn read_byte(&mut self, timeout: Duration) -> io::Result<u8>;

    /// Drops everything received and not yet read (late answers, automatic status, answers
    /// to `10 04 n` sequences inside image data). Also notices a link that went away.
    fn discard_input(&mut self) -> io::Result<()>;

    /// Waits within `timeout` until written bytes have left the computer (serial: the UART's
    /// queue is empty), so the printer has them before a status query is timed.
    fn drain(&mut self, timeout: Duration) -> io::Result<()>;
}

/// What owns the file descriptor (closing it on drop).
enum Device {
    Serial(serialport::TTYPort),
    File(File),
    Tcp(TcpStream),
}

impl Device {
    fn fd(&self) -> RawFd {
        match self {
            Device::Serial(port) => port.as_raw_fd(),
            Device::File(file) => file.as_raw_fd(),
            Device::Tcp(stream) => stream.as_raw_fd(),
        }
    }
}

/// A non-blocking file descriptor driven with `poll(2)`.
struct FdLink {
    device: Device,
    fd: RawFd,
    stop: Arc<AtomicBool>,
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own; F_GETFL/F_SETFL take and return plain ints.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn stopping() -> io::Error {
    io::Error::new(io::ErrorKind::Interrupted, "the printer driver is stopping")
}

fn would_block(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

impl FdLink {
    /// Waits until the descriptor is ready for `events` (`POLLIN`/`POLLOUT`) or the deadline.
    fn wait(&self, events: libc::c_short, deadline: Instant) -> io::Result<()> {
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Err(stopping());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"));
            }
            let slice = (deadline - now).min(SLICE);
            let mut poll = libc::pollfd {
                fd: self.fd,
                events,
                revents: 0,
            };
            // SAFETY: one valid pollfd; the timeout is at most SLICE.
            let ready =
                unsafe { libc::poll(&mut poll, 1, slice.as_millis().max(1) as libc::c_int) };
            if ready < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if ready == 0 {
                continue;
            }
            if poll.revents & events != 0 {
                return Ok(());
            }
            if poll.revents & libc::POLLNVAL != 0 {
                return Err(io::Error::other("the device was closed"));
            }
            if poll.revents & (libc::POLLHUP | libc::POLLERR) != 0 {
                return Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the device hung up",
                ));
            }
        }
    }

    fn raw_read(&self, buffer: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buffer` is valid for `buffer.len()` writable bytes.
        let n = unsafe { libc::read(self.fd, buffer.as_mut_ptr().cast(), buffer.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    fn raw_write(&self, bytes: &[u8]) -> io::Result<usize> {
        // SAFETY: `bytes` is valid for `bytes.len()` readable bytes.
        let n = unsafe { libc::write(self.fd, bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

impl Link for FdLink {
    fn write_all(&mut self, bytes: &[u8], timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut written = 0;
        while written < bytes.len() {
            self.wait(libc::POLLOUT, deadline)?;
            match self.raw_write(&bytes[written..]) {
                Ok(n) => written += n,
                Err(e) if would_block(&e) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn read_byte(&mut self, timeout: Duration) -> io::Result<u8> {
        let deadline = Instant::now() + timeout;
        let mut byte = [0u8; 1];
        loop {
            self.wait(libc::POLLIN, deadline)?;
            match self.raw_read(&mut byte) {
                Ok(1) => return Ok(byte[0]),
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the printer closed the connection",
                    ));
                }
                Err(e) if would_block(&e) => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn discard_input(&mut self) -> io::Result<()> {
        if let Device::Serial(_) = self.device {
            // SAFETY: tcflush on the tty we own.
            if unsafe { libc::tcflush(self.fd, libc::TCIFLUSH) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        let mut buffer = [0u8; 256];
        // Bounded: a printer cannot flood faster than we read, but do not spin forever.
        for _ in 0..64 {
            let mut poll = libc::pollfd {
                fd: self.fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd, no waiting.
            let ready = unsafe { libc::poll(&mut poll, 1, 0) };
            if ready < 0 {
                return Err(io::Error::last_os_error());
            }
            if ready == 0 {
                return Ok(());
            }
            if poll.revents & libc::POLLIN == 0 {
                return Err(if poll.revents & libc::POLLNVAL != 0 {
                    io::Error::other("the device was closed")
                } else {
                    io::Error::new(io::ErrorKind::BrokenPipe, "the device hung up")
                });
            }
            match self.raw_read(&mut buffer) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the printer closed the connection",
                    ));
                }
                Ok(_) => {}
                Err(e) if would_block(&e) => return Ok(()),
                // A one-way USB printer has no input channel: nothing to discard.
                Err(e)
                    if matches!(self.device, Device::File(_))
                        && e.raw_os_error() == Some(libc::EINVAL) =>
                {
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn drain(&mut self, timeout: Duration) -> io::Result<()> {
        let Device::Serial(_) = self.device else {
            return Ok(());
        };
        let deadline = Instant::now() + timeout;
        loop {
            let mut queued: libc::c_int = 0;
            // SAFETY: TIOCOUTQ writes one int.
            if unsafe { libc::ioctl(self.fd, libc::TIOCOUTQ, &mut queued) } < 0 {
                return Err(io::Error::last_os_error());
            }
            if queued <= 0 {
                return Ok(());
            }
            if self.stop.load(Ordering::Relaxed) {
                return Err(stopping());
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{queued} bytes still queued for the serial port"),
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Resolves and connects on a helper thread (neither can be interrupted), waiting for it in
/// short slices so a stopping driver does not wait for the connect timeout. An abandoned
/// helper ends by itself within [`CONNECT_TIMEOUT`] per address and touches nothing shared.
fn connect_tcp(host: &str, port: u16, stop: &AtomicBool) -> io::Result<TcpStream> {
    let (tx, rx) = std::sync::mpsc::channel();
    let target = host.to_string();
    std::thread::Builder::new()
        .name("escpos-connect".to_string())
        .spawn(move || {
            let result = (|| {
                let mut last = io::Error::new(io::ErrorKind::NotFound, "no address found");
                for address in (target.as_str(), port).to_socket_addrs()? {
                    match TcpStream::connect_timeout(&address, CONNECT_TIMEOUT) {
                        Ok(stream) => return Ok(stream),
                        Err(e) => last = e,
                    }
                }
                Err(last)
            })();
            let _ = tx.send(result);
        })?;
    loop {
        match rx.recv_timeout(SLICE) {
            Ok(result) => return result,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if stop.load(Ordering::Relaxed) {
                    return Err(stopping());
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(io::Error::other(
                    "the connect thread ended without a result",
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: Value) -> Result<Transport, String> {
        match value {
            Value::Object(map) => Transport::from_options(&map),
            _ => Err("not an object".to_string()),
        }
    }

    #[test]
    fn options_are_read_with_defaults() {
        assert_eq!(
            parse(json!({"transport": "serial", "device": "/dev/ttyUSB0"})),
            Ok(Transport::Serial {
                device: "/dev/ttyUSB0".into(),
                baud: 9600,
                flow_control: FlowControl::None
            })
        );
        assert_eq!(
            parse(
                json!({"transport": "serial", "device": "/dev/ttyS0", "baud": 115200, "flow_control": "hardware"})
            ),
            Ok(Transport::Serial {
                device: "/dev/ttyS0".into(),
                baud: 115200,
                flow_control: FlowControl::Hardware
            })
        );
        assert_eq!(
            parse(json!({"transport": "usb"})),
            Ok(Transport::Usb {
                device: "/dev/usb/lp0".into()
            })
        );
        assert_eq!(
            parse(json!({"transport": "tcp", "host": "10.0.0.9"})),
            Ok(Transport::Tcp {
                host: "10.0.0.9".into(),
                port: 9100
            })
        );
    }

    #[test]
    fn bad_options_name_the_option() {
        for (options, expected) in [
            (json!({}), "option 'transport' is missing"),
            (
                json!({"transport": "bluetooth"}),
                "option 'transport' must be",
            ),
            (json!({"transport": "serial"}), "option 'device'"),
            (
                json!({"transport": "serial", "device": "/dev/x", "baud": 9601}),
                "option 'baud' must be one of 1200,",
            ),
            (
                json!({"transport": "serial", "device": "/dev/x", "baud": "fast"}),
                "option 'baud'",
            ),
            (
                json!({"transport": "serial", "device": "/dev/x", "flow_control": "rts"}),
                "option 'flow_control'",
            ),
            (
                json!({"transport": "serial", "device": "/dev/x", "port": 9100}),
                "option 'port' does not apply",
            ),
            (
                json!({"transport": "usb", "device": 3}),
                "option 'device' must be",
            ),
            (json!({"transport": "tcp"}), "option 'host'"),
            (
                json!({"transport": "tcp", "host": "p", "port": 70000}),
                "option 'port' must be",
            ),
            (
                json!({"transport": "tcp", "host": "p", "baud": 9600}),
                "option 'baud' does not apply",
            ),
        ] {
            let err = parse(options.clone()).expect_err("refused");
            assert!(err.contains(expected), "{options}: {err}");
        }
    }

    #[test]
    fn write_timeouts_follow_the_wire_speed() {
        let serial = Transport::Serial {
            device: "/dev/x".into(),
            baud: 9600,
            flow_control: FlowControl::None,
        };
        assert_eq!(serial.job_write_timeout(960), Duration::from_millis(3000));
        let tcp = Transport::Tcp {
            host: "p".into(),
            port: 9100,
        };
        assert_eq!(tcp.job_write_timeout(100_000), Duration::from_secs(5));
    }

    #[test]
    fn a_missing_device_is_a_clear_error() {
        let stop = Arc::new(AtomicBool::new(false));
        let err = Transport::Usb {
            device: "/nonexistent/lp9".into(),
        }
        .open(stop.clone())
        .err()
        .unwrap_or_default();
        assert!(err.starts_with("cannot open /nonexistent/lp9: "), "{err}");
        let err = Transport::Serial {
            device: "/nonexistent/ttyUSB9".into(),
            baud: 9600,
            flow_control: FlowControl::None,
        }
        .open(stop)
        .err()
        .unwrap_or_default();
        assert!(
            err.starts_with("cannot open /nonexistent/ttyUSB9: "),
            "{err}"
        );
    }

    #[test]
    fn tcp_reads_writes_and_discards_with_deadlines() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let mut link = Transport::Tcp {
            host: "127.0.0.1".into(),
            port,
        }
        .open(stop.clone())
        .expect("connects");
        let (mut printer, _) = listener.accept().expect("accept");
        printer.write_all(b"junk").expect("write");
        std::thread::sleep(Duration::from_millis(50));
        link.discard_input().expect("discard");
        let started = Instant::now();
        let err = link
            .read_byte(Duration::from_millis(120))
            .expect_err("nothing to read");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(120));
        link.write_all(b"\x10\x04\x01", Duration::from_secs(1))
            .expect("write");
        let mut query = [0u8; 3];
        printer.read_exact(&mut query).expect("query");
        assert_eq!(query, [0x10, 0x04, 0x01]);
        printer.write_all(&[0x12]).expect("answer");
        assert_eq!(
            link.read_byte(Duration::from_secs(1)).expect("answer"),
            0x12
        );
        // Stopping interrupts a wait at once.
        stop.store(true, Ordering::Relaxed);
        let started = Instant::now();
        let err = link.read_byte(Duration::from_secs(5)).expect_err("stopped");
        assert_eq!(err.kind(), io::ErrorKind::Interrupted);
        assert!(started.elapsed() < Duration::from_millis(100));
        stop.store(false, Ordering::Relaxed);
        drop(printer);
        let err = link.read_byte(Duration::from_secs(1)).expect_err("closed");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert!(link.discard_input().is_err());
    }
}
