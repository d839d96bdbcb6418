//! The built plugin (`libleitsystem_escpos_printer.so`), loaded through
//! `leitsystem_plugin::testing` as the daemon loads it, driving pretend printers: a TCP listener
//! on 127.0.0.1 and, through `socat`, a pseudo-terminal pair (serial, and the USB transport's
//! plain device file). Each pretend printer records every byte and answers each `DLE EOT n` with
//! a status byte the test sets.
//!
//! `socat` is required (Debian package `socat`); without it the pty tests fail.
//!
//! Why over 600 lines: one scenario per test of the built printer plugin against the emulator; the helpers they share are at the top.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use leitsystem_escpos_printer::encode::{QrMode, encode, encode_for, sample_document};
use leitsystem_escpos_printer::profiles::lookup;
use leitsystem_plugin::PluginMessage;
use leitsystem_plugin::document::{Align, Block, Document};
use leitsystem_plugin::messages::Paper;
use leitsystem_plugin::testing::{TestDevice, TestPlugin};
use serde_json::json;

const READY: [u8; 3] = [0x12, 0x12, 0x12];
const PAPER_OUT: [u8; 3] = [0x1A, 0x32, 0x72];
const COVER_OPEN: [u8; 3] = [0x1A, 0x36, 0x12];
const WAIT: Duration = Duration::from_secs(5);

fn load() -> Result<TestPlugin, String> {
    TestPlugin::load_built("libleitsystem_escpos_printer.so")
}

/// Waits of a printer device, bounded by [`WAIT`].
trait PrinterDevice {
    /// The outcome (done or failed) of `job`.
    fn outcome(&self, job: &str) -> Result<PluginMessage, String>;
    /// A connection message after `from` saying `connected`.
    fn wait_connection(&self, from: usize, connected: bool) -> Result<PluginMessage, String>;
}

impl PrinterDevice for TestDevice<'_> {
    fn outcome(&self, job: &str) -> Result<PluginMessage, String> {
        self.wait_for(0, &format!("outcome of {job}"), WAIT, |m| {
            matches!(m, PluginMessage::PrintDone { job: j } | PluginMessage::PrintFailed { job: j, .. } if j == job)
        })
    }

    fn wait_connection(&self, from: usize, connected: bool) -> Result<PluginMessage, String> {
        self.wait_for(
            from,
            &format!("connection {connected}"),
            WAIT,
            |m| matches!(m, PluginMessage::Connection { connected: c, .. } if *c == connected),
        )
    }
}

fn printed(job: &str) -> PluginMessage {
    PluginMessage::PrintDone { job: job.into() }
}

fn failed(job: &str, reason: &str) -> PluginMessage {
    PluginMessage::PrintFailed {
        job: job.into(),
        reason: reason.into(),
    }
}

fn is_status(m: &PluginMessage, paper: Paper) -> bool {
    matches!(m, PluginMessage::PrinterStatus { paper: p, .. } if *p == paper)
}

fn ticket() -> Document {
    Document {
        number: "A-042".into(),
        blocks: vec![
            Block::Text {
                text: "Bürgerbüro".into(),
                align: Align::Center,
                width: 1,
                height: 1,
                bold: true,
            },
            Block::Text {
                text: "A-042".into(),
                align: Align::Center,
                width: 4,
                height: 4,
                bold: true,
            },
            Block::text("Größe, Öffnungszeiten, Übersicht, Ärger"),
            Block::Qr {
                data: "https://termine.musterstadt.de/status/BK-4711-0815-2342".into(),
            },
        ],
    }
}

/// What a pretend printer answers and what it got.
struct PrinterState {
    status: [u8; 3],
    answering: bool,
    /// Switch to paper out once a cut command arrives.
    paper_out_after_cut: bool,
    received: Vec<u8>,
}

/// A pretend printer: the state shared with the test.
#[derive(Clone)]
struct Pretend(Arc<Mutex<PrinterState>>);

impl Pretend {
    fn new() -> Pretend {
        Pretend(Arc::new(Mutex::new(PrinterState {
            status: READY,
            answering: true,
            paper_out_after_cut: false,
            received: Vec::new(),
        })))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, PrinterState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_status(&self, status: [u8; 3]) {
        self.state().status = status;
    }

    fn set_answering(&self, answering: bool) {
        self.state().answering = answering;
    }

    fn received(&self) -> Vec<u8> {
        self.state().received.clone()
    }

    fn assert_printed(&self, expected: &[u8]) {
        let received = self.received();
        assert!(
            received.windows(expected.len()).any(|w| w == expected),
            "the job's bytes are not in what the printer received:\n{}",
            received.escape_ascii()
        );
    }

    /// Records `stream`'s bytes and answers every `10 04 n` until EOF, an error or `stop`.
    fn serve(&self, stream: &mut (impl Read + Write), stop: &AtomicBool) {
        let mut buffer = [0u8; 4096];
        let mut last = [0u8; 2];
        while !stop.load(Ordering::Relaxed) {
            let n = match stream.read(&mut buffer) {
                Ok(0) => return,
                Ok(n) => n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                }
                Err(_) => return,
            };
            let mut answers = Vec::new();
            {
                let mut state = self.state();
                for &byte in &buffer[..n] {
                    state.received.push(byte);
                    if last == [0x10, 0x04] && state.answering {
                        match byte {
                            1 => answers.push(state.status[0]),
                            2 => answers.push(state.status[1]),
                            // Error status: none.
                            3 => answers.push(0x12),
                            4 => answers.push(state.status[2]),
                            _ => {}
                        }
                    }
                    last = [last[1], byte];
                    if state.paper_out_after_cut && state.received.ends_with(&[0x1D, 0x56, 66, 0]) {
                        state.paper_out_after_cut = false;
                        state.status = PAPER_OUT;
                    }
                }
            }
            if !answers.is_empty() && stream.write_all(&answers).is_err() {
                return;
            }
        }
    }
}

/// A network printer on 127.0.0.1: one connection at a time.
struct TcpPrinter {
    pretend: Pretend,
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TcpPrinter {
    fn start() -> TcpPrinter {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("address").port();
        let pretend = Pretend::new();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (pretend, stop) = (pretend.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            let _ = stream.set_nonblocking(true);
                            pretend.serve(&mut stream, &stop);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        TcpPrinter {
            pretend,
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for TcpPrinter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A serial printer: `socat` makes two linked ptys, `DIR/printer` for the driver and
/// `DIR/peer` where the pretend printer sits.
struct PtyPrinter {
    pretend: Pretend,
    dir: PathBuf,
    socat: Option<Child>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl PtyPrinter {
    fn start(dir: &Path) -> PtyPrinter {
        let mut printer = PtyPrinter {
            pretend: Pretend::new(),
            dir: dir.to_path_buf(),
            socat: None,
            stop: Arc::new(AtomicBool::new(false)),
            thread: None,
        };
        printer.plug();
        printer
    }

    fn device(&self) -> String {
        self.dir.join("printer").display().to_string()
    }

    /// Starts socat and the pretend printer on the peer side.
    fn plug(&mut self) {
        let link = |name: &str| format!("pty,raw,echo=0,link={}", self.dir.join(name).display());
        let log = std::fs::File::create(self.dir.join("socat.log")).expect("socat log");
        let child = ["socat", "/usr/bin/socat"]
            .iter()
            .find_map(|program| {
                Command::new(program)
                    .args(["-d", "-d", &link("printer"), &link("peer")])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(log.try_clone().ok()?)
                    .spawn()
                    .ok()
            })
            .unwrap_or_else(|| {
                panic!("cannot run socat, which these tests need: install the Debian package socat (apt-get install socat)")
            });
        self.socat = Some(child);
        let deadline = Instant::now() + WAIT;
        let peer = loop {
            // The links point to fresh ptys once socat is ready (a dangling old link fails).
            if std::fs::metadata(self.dir.join("printer")).is_ok() {
                if let Ok(peer) = std::fs::File::options()
                    .read(true)
                    .write(true)
                    .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
                    .open(self.dir.join("peer"))
                {
                    break peer;
                }
            }
            assert!(Instant::now() < deadline, "socat made no ptys");
            std::thread::sleep(Duration::from_millis(10));
        };
        self.stop = Arc::new(AtomicBool::new(false));
        let (pretend, stop) = (self.pretend.clone(), self.stop.clone());
        self.thread = Some(std::thread::spawn(move || {
            let mut peer = peer;
            pretend.serve(&mut peer, &stop);
        }));
    }

    /// Kills socat: to the driver, the cable was pulled.
    fn unplug(&mut self) {
        if let Some(mut child) = self.socat.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        // The links still point to the ptys that are gone.
        self.pretend.state().received.clear();
    }
}

impl Drop for PtyPrinter {
    fn drop(&mut self) {
        self.unplug();
    }
}

fn tcp_options(printer: &TcpPrinter) -> serde_json::Value {
    json!({
        "transport": "tcp", "host": "127.0.0.1", "port": printer.port,
        "status_interval_ms": 100, "reconnect_max_ms": 500,
    })
}

#[test]
fn a_network_printer_prints_refuses_without_paper_and_recovers() -> Result<(), String> {
    let plugin = load()?;
    assert_eq!(
        (plugin.name(), plugin.roles()),
        ("escpos-printer", "printer")
    );
    let printer = TcpPrinter::start();
    let mut device = plugin.create_device("foyer-printer", "printer", tcp_options(&printer))?;
    device.wait_connection(0, true)?;
    device.wait_for(0, "status ok", WAIT, |m| {
        *m == PluginMessage::PrinterStatus {
            paper: Paper::Ok,
            cover_open: false,
            online: true,
        }
    })?;

    // A job: exactly the encoder's bytes, umlauts in cp858, the cut at the end.
    let document = ticket();
    device.print("A-042", &document)?;
    assert_eq!(device.outcome("A-042")?, printed("A-042"));
    let expected =
        encode_for(&document, &lookup("epson-tm-t20").expect("profile")).expect("encodes");
    assert!(expected.starts_with(&[0x1B, 0x40, 0x1B, 0x74, 19]));
    assert!(expected.windows(3).any(|w| w == b"Gr\x94"), "ö as 0x94");
    assert!(expected.windows(2).any(|w| w == b"\xE1e"), "ß as 0xE1");
    assert!(expected.ends_with(&[0x1D, 0x56, 66, 0]));
    printer.pretend.assert_printed(&expected);
    // Status queried before and after the job, each query separately.
    let received = printer.pretend.received();
    let at = received
        .windows(expected.len())
        .position(|w| w == expected)
        .expect("the job");
    assert!(received[..at].ends_with(&[0x10, 0x04, 0x01, 0x10, 0x04, 0x02, 0x10, 0x04, 0x04]));
    assert!(received[at + expected.len()..].starts_with(&[0x10, 0x04, 0x01]));

    // Paper out: the job fails with the reason, the status says so.
    let mark = device.mark();
    printer.pretend.set_status(PAPER_OUT);
    device.print("A-043", &document)?;
    assert_eq!(device.outcome("A-043")?, failed("A-043", "paper out"));
    device.wait_for(mark, "paper out status", WAIT, |m| {
        *m == PluginMessage::PrinterStatus {
            paper: Paper::Out,
            cover_open: false,
            online: false,
        }
    })?;
    // New paper: the idle poll reports it.
    let mark = device.mark();
    printer.pretend.set_status(READY);
    device.wait_for(mark, "paper ok again", WAIT, |m| is_status(m, Paper::Ok))?;
    device.print("A-044", &document)?;
    assert_eq!(device.outcome("A-044")?, printed("A-044"));

    // The paper runs out during the job: the query after it says so.
    printer.pretend.state().paper_out_after_cut = true;
    device.print("A-045", &document)?;
    assert_eq!(
        device.outcome("A-045")?,
        failed("A-045", "paper ran out while printing")
    );
    let mark = device.mark();
    printer.pretend.set_status(READY);
    device.wait_for(mark, "paper ok again", WAIT, |m| is_status(m, Paper::Ok))?;

    // A printer that stops answering: the job fails with the timeout, the link goes down,
    // and comes back when it answers again.
    let mark = device.mark();
    printer.pretend.set_answering(false);
    let started = Instant::now();
    device.print("A-046", &document)?;
    match device.outcome("A-046")? {
        PluginMessage::PrintFailed { reason, .. } => assert!(
            reason.contains("no answer to the status query within 500 ms"),
            "{reason}"
        ),
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    device.wait_connection(mark, false)?;
    let mark = device.mark();
    printer.pretend.set_answering(true);
    device.wait_connection(mark, true)?;
    device.print("A-047", &document)?;
    assert_eq!(device.outcome("A-047")?, printed("A-047"));

    assert!(
        device.destroy() < Duration::from_millis(300),
        "destroy must stop promptly"
    );
    Ok(())
}

#[test]
fn a_full_queue_fails_jobs_at_once_and_destroy_fails_the_rest() -> Result<(), String> {
    let plugin = load()?;
    let printer = TcpPrinter::start();
    printer.pretend.set_answering(false);
    let mut device = plugin.create_device("slow", "printer", tcp_options(&printer))?;
    let document = ticket();
    let jobs: Vec<String> = (0..40).map(|n| format!("J-{n:03}")).collect();
    for job in &jobs {
        device.print(job, &document)?;
    }
    let full = device
        .messages()
        .iter()
        .filter(|m| matches!(m, PluginMessage::PrintFailed { reason, .. } if reason == "printer queue full"))
        .count();
    assert!((6..=8).contains(&full), "{full} jobs refused as queue full");
    assert_eq!(device.invalid_messages(), Vec::<String>::new());
    let took = device.destroy();
    assert!(took < Duration::from_millis(300), "destroy took {took:?}");
    // Every job has exactly one outcome.
    let messages = device.messages();
    for job in &jobs {
        let outcomes = messages
            .iter()
            .filter(|m| matches!(m, PluginMessage::PrintDone { job: j } | PluginMessage::PrintFailed { job: j, .. } if j == job))
            .count();
        assert_eq!(outcomes, 1, "{job}: {messages:#?}");
    }
    assert!(messages.contains(&failed("J-039", "printer queue full")));
    assert!(messages.contains(&failed("J-020", "the printer device was stopped")));
    Ok(())
}

#[test]
fn a_printer_without_status_prints_blind_and_notices_a_closed_link() -> Result<(), String> {
    let plugin = load()?;
    let printer = TcpPrinter::start();
    let mut options = tcp_options(&printer);
    options["profile"] = json!("generic-58mm");
    let mut device = plugin.create_device("kiosk", "printer", options)?;
    device.wait_connection(0, true)?;
    let document = ticket();
    device.print("K-1", &document)?;
    assert_eq!(device.outcome("K-1")?, printed("K-1"));
    let profile = lookup("generic-58mm").expect("profile");
    let expected = encode(&document, &profile, QrMode::Raster).expect("encodes");
    assert!(
        expected.ends_with(&[0x1B, 0x64, 4]),
        "no cutter: feed 4 lines"
    );
    // Done means written: the last bytes may still be on their way.
    let deadline = Instant::now() + WAIT;
    while printer.pretend.received().len() < expected.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(printer.pretend.received(), expected, "no status queries");
    // The printer closes the connection: noticed by the idle check, then reconnected.
    let mark = device.mark();
    drop(printer);
    device.wait_connection(mark, false)?;
    device.destroy();
    Ok(())
}

#[test]
fn a_serial_printer_prints_and_survives_being_unplugged() -> Result<(), String> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut printer = PtyPrinter::start(dir.path());
    let plugin = load()?;
    let mut device = plugin.create_device(
        "serial-printer",
        "printer",
        json!({
            "transport": "serial", "device": printer.device(), "baud": 115200,
            "qr": "raster", "status_interval_ms": 100, "reconnect_max_ms": 500,
        }),
    )?;
    match device.wait_connection(0, true)? {
        PluginMessage::Connection { detail, .. } => assert_eq!(
            detail.as_deref(),
            Some(format!("serial {} at 115200 baud", printer.device()).as_str())
        ),
        other => panic!("{other:?}"),
    }
    let document = sample_document();
    let expected = encode(
        &document,
        &lookup("epson-tm-t20").expect("profile"),
        QrMode::Raster,
    )
    .expect("encodes");
    assert!(expected.starts_with(&[0x1B, 0x40]));
    assert!(expected.windows(2).any(|w| w == b"\x81h"), "ü as 0x81");
    assert!(expected.ends_with(&[0x1D, 0x56, 66, 0]));
    device.print("F-007", &document)?;
    assert_eq!(device.outcome("F-007")?, printed("F-007"));
    printer.pretend.assert_printed(&expected);

    // Unplugged: the link goes down; plugged in again: it comes back and prints.
    let mark = device.mark();
    printer.unplug();
    device.wait_connection(mark, false)?;
    let mark = device.mark();
    printer.plug();
    device.wait_connection(mark, true)?;
    device.print("F-008", &document)?;
    assert_eq!(device.outcome("F-008")?, printed("F-008"));
    printer.pretend.assert_printed(&expected);
    assert!(device.destroy() < Duration::from_millis(300));
    Ok(())
}

#[test]
fn the_usb_transport_drives_a_device_file() -> Result<(), String> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let printer = PtyPrinter::start(dir.path());
    let plugin = load()?;
    let mut device = plugin.create_device(
        "usb-printer",
        "printer",
        json!({"transport": "usb", "device": printer.device(), "status_interval_ms": 100}),
    )?;
    device.wait_connection(0, true)?;
    let document = ticket();
    device.print("U-1", &document)?;
    assert_eq!(device.outcome("U-1")?, printed("U-1"));
    printer.pretend.assert_printed(
        &encode_for(&document, &lookup("epson-tm-t20").expect("profile")).expect("encodes"),
    );
    let mark = device.mark();
    printer.pretend.set_status(COVER_OPEN);
    device.print("U-2", &document)?;
    assert_eq!(device.outcome("U-2")?, failed("U-2", "cover open"));
    device.wait_for(mark, "cover open status", WAIT, |m| {
        matches!(
            m,
            PluginMessage::PrinterStatus {
                cover_open: true,
                ..
            }
        )
    })?;
    assert!(device.destroy() < Duration::from_millis(300));
    Ok(())
}

#[test]
fn bad_configs_are_refused_and_a_missing_printer_is_not_fatal() -> Result<(), String> {
    let plugin = load()?;
    for (role, options, expected) in [
        (
            "display",
            json!({"transport": "usb"}),
            "device 'p' has role 'display'",
        ),
        ("printer", json!({}), "option 'transport' is missing"),
        (
            "printer",
            json!({"transport": "usb", "profile": "tm-9000"}),
            "unknown printer profile 'tm-9000'; known profiles: epson-tm-t20, epson-tm-t20-58mm, epson-tm-t88, generic-58mm, generic-80mm",
        ),
        (
            "printer",
            json!({"transport": "serial", "device": "/dev/ttyUSB0", "baud": 9000}),
            "option 'baud' must be one of",
        ),
        ("printer", json!({"transport": "tcp"}), "option 'host'"),
        (
            "printer",
            json!({"transport": "usb", "speed": 1}),
            "unknown option 'speed'",
        ),
    ] {
        let err = plugin
            .create_device("p", role, options.clone())
            .err()
            .unwrap_or_default();
        assert!(err.contains(expected), "{options}: {err}");
    }
    // An unplugged printer: created anyway, reported as not connected, retried.
    let mut device = plugin.create_device(
        "unplugged",
        "printer",
        json!({"transport": "usb", "device": "/nonexistent/lp0"}),
    )?;
    match device.wait_connection(0, false)? {
        PluginMessage::Connection { detail, .. } => {
            let detail = detail.unwrap_or_default();
            assert!(
                detail.starts_with("cannot open /nonexistent/lp0: "),
                "{detail}"
            );
        }
        other => panic!("{other:?}"),
    }
    device.print("X-1", &ticket())?;
    match device.outcome("X-1")? {
        PluginMessage::PrintFailed { reason, .. } => {
            assert!(
                reason.starts_with("printer not reachable: cannot open /nonexistent/lp0"),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(device.destroy() < Duration::from_millis(300));
    Ok(())
}

#[test]
fn destroy_is_prompt_even_while_connecting() -> Result<(), String> {
    let plugin = load()?;
    // A non-routable address: the connect hangs until its timeout (or fails at once when the
    // network says so); destroy must not wait for it either way.
    let mut device = plugin.create_device(
        "far",
        "printer",
        json!({"transport": "tcp", "host": "10.255.255.1", "port": 9100}),
    )?;
    std::thread::sleep(Duration::from_millis(100));
    let took = device.destroy();
    assert!(took < Duration::from_millis(300), "destroy took {took:?}");
    Ok(())
}
