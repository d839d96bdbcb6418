//! Tickets on paper, end to end: the real daemon with the real `escpos-printer` plugin writing
//! to a real tty (a socat pty pair) and to a TCP "port 9100" printer, with the sim scanner in
//! front. What reaches the printer side is parsed by npos, an ESC/POS parser we did not write;
//! raster QR codes it extracts and the PNG preview are decoded by zbarimg. Status bytes fed
//! back through the link drive paper-out failures, health and the automatic reprint; the pty
//! is closed and reopened to unplug and replug the printer.
//!
//! PNGs are kept in `target/test-artifacts/tickets/` to look at.

use std::path::Path;
use std::process::Command as Process;
use std::time::Duration;

use anyhow::{Context, bail};
use leitsystem::domain::{PrintState, Ticket};
use leitsystem::plugin_host::DeviceHealth;
use leitsystem_tests::daemon::{
    Daemon, artifacts, book, daemon_binary, device, device_entry, device_line, free_port, request,
    sim_scanner, wait_for, write_config_with_devices,
};
use leitsystem_tests::escpos::{
    Paper, ParsedJob, PrinterEmulator, npos_parse, require_tool, zbar_decode,
};

/// The status URL the demo config's `[ticket]` puts into the QR code.
fn status_url(booking: &str) -> String {
    format!("https://termine.musterstadt.de/status/{booking}")
}

#[test]
fn the_png_preview_shows_the_ticket_and_its_qr_code_decodes_to_the_configured_content()
-> anyhow::Result<()> {
    require_tool("zbarimg", "zbar-tools")?;
    let out = artifacts("tickets")?;
    let cases = [
        ("58", false, status_url("BK-4711-0815-2342")),
        ("80", false, status_url("BK-4711-0815-2342")),
        // A walk-in has no booking: its QR code holds the call number.
        ("80", true, "F-007".to_string()),
    ];
    for (paper, walk_in, expected) in cases {
        let png = out.join(format!(
            "preview-{paper}mm-{}.png",
            if walk_in { "walk-in" } else { "appointment" }
        ));
        let mut command = Process::new(daemon_binary()?);
        command
            .args(["ticket-preview", "--paper", paper, "--out"])
            .arg(&png);
        if walk_in {
            command.arg("--walk-in");
        }
        let output = command.output()?;
        if !output.status.success() {
            bail!(
                "ticket-preview failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let decoder = image_size(&png)?;
        let width = if paper == "58" { 463 } else { 639 };
        assert_eq!(
            decoder.0,
            width,
            "{} is the paper's width at 203 dpi",
            png.display()
        );
        assert_eq!(
            zbar_decode(&png)?,
            vec![expected.clone()],
            "{}",
            png.display()
        );
    }
    // A bad paper width is a clear error.
    let output = Process::new(daemon_binary()?)
        .args(["ticket-preview", "--paper", "99", "--out", "/dev/null"])
        .output()?;
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("not 58 or 80"));
    Ok(())
}

/// Width and height from a PNG's IHDR chunk.
fn image_size(png: &Path) -> anyhow::Result<(u32, u32)> {
    let bytes = std::fs::read(png)?;
    if bytes.len() < 24 || &bytes[1..4] != b"PNG" {
        bail!("{} is not a PNG", png.display());
    }
    let be =
        |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    Ok((be(16), be(20)))
}

/// Devices: the sim scanner and an ESC/POS printer with the given options.
fn devices(scanner: u16, printer_options: &str) -> String {
    sim_scanner(scanner)
        + &device_entry(
            "printer",
            "libleitsystem_escpos_printer.so",
            "printer",
            &format!("{printer_options}, status_interval_ms = 100, reconnect_max_ms = 500"),
        )
}

/// Today's ticket `number`, once issued (a scan is acknowledged by the scanner before the
/// check-in is committed).
fn ticket(daemon: &Daemon, number: &str) -> anyhow::Result<Option<Ticket>> {
    let response = request(daemon, &leitsystem::control::ControlRequest::State)?;
    Ok(response
        .state
        .context("no state")?
        .tickets
        .into_iter()
        .find(|t| t.number.as_str() == number))
}

/// Books `booking` for the driving licence service (four documents, umlauts) and scans it.
fn scan(daemon: &Daemon, scanner: u16, booking: &str) -> anyhow::Result<()> {
    book(daemon, booking, "fuehrerschein")?;
    wait_for("the scanner to listen", Duration::from_secs(10), || {
        Ok(device_line(scanner, booking).ok())
    })?;
    Ok(())
}

fn wait_for_cut(printer: &PrinterEmulator, jobs: usize) -> anyhow::Result<()> {
    printer.wait_for_bytes(
        |bytes| {
            // GS V: each finished ticket ends with a cut.
            bytes.windows(2).filter(|w| w == &[0x1d, 0x56]).count() >= jobs
        },
        Duration::from_secs(10),
    )?;
    Ok(())
}

fn wait_for_print(daemon: &Daemon, number: &str, printed: bool) -> anyhow::Result<Ticket> {
    wait_for("the print outcome", Duration::from_secs(10), || {
        let Some(t) = ticket(daemon, number)? else {
            return Ok(None);
        };
        let done = match &t.print {
            PrintState::Printed { .. } => printed,
            PrintState::Failed { .. } => !printed,
            PrintState::Pending => false,
        };
        Ok(done.then_some(t))
    })
}

/// How the printer is connected.
enum Link {
    /// Serial port: a socat pty pair, a real tty.
    Serial,
    /// Ethernet printer: a TCP listener on 127.0.0.1.
    Tcp,
}

/// A foyer terminal: the daemon with the sim scanner and an ESC/POS printer on `link`.
struct Terminal {
    daemon: Daemon,
    scanner: u16,
    printer: PrinterEmulator,
    dir: tempfile::TempDir,
}

impl Terminal {
    /// Starts it and waits until the printer link is up.
    fn start(link: Link, profile: &str) -> anyhow::Result<Terminal> {
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        let (printer, transport) = match link {
            Link::Serial => {
                let printer = PrinterEmulator::pty(dir.path())?;
                let device = printer.device_path().context("pty path")?;
                let transport = format!(
                    r#"transport = "serial", device = "{}", baud = 9600"#,
                    device.display()
                );
                (printer, transport)
            }
            Link::Tcp => {
                let printer = PrinterEmulator::tcp()?;
                let port = printer.port().context("tcp port")?;
                let transport = format!(r#"transport = "tcp", host = "127.0.0.1", port = {port}"#);
                (printer, transport)
            }
        };
        let scanner = free_port()?;
        let options = format!(r#"{transport}, profile = "{profile}""#);
        let config = write_config_with_devices(dir.path(), &data, &devices(scanner, &options))?;
        let daemon = Daemon::start(&config, &data, &[])?;
        let terminal = Terminal {
            daemon,
            scanner,
            printer,
            dir,
        };
        terminal.wait_connected(true)?;
        Ok(terminal)
    }

    fn wait_connected(&self, connected: bool) -> anyhow::Result<()> {
        wait_for("the printer link", Duration::from_secs(10), || {
            Ok((self.health()?.connected == Some(connected)).then_some(()))
        })
    }

    fn health(&self) -> anyhow::Result<DeviceHealth> {
        device(&self.daemon, "printer")
    }

    fn scan(&self, booking: &str) -> anyhow::Result<()> {
        scan(&self.daemon, self.scanner, booking)
    }

    /// Everything the printer received so far, parsed by npos; the finished (cut) jobs.
    fn printed_jobs(&self) -> anyhow::Result<Vec<ParsedJob>> {
        let capture = self.dir.path().join("capture.bin");
        std::fs::write(&capture, self.printer.captured())?;
        let parsed = npos_parse(&capture, self.dir.path())?;
        Ok(parsed.jobs.into_iter().filter(|j| j.cut).collect())
    }
}

#[test]
fn a_scan_prints_on_a_serial_printer_and_an_independent_parser_reads_text_umlauts_qr_and_cut()
-> anyhow::Result<()> {
    let terminal = Terminal::start(Link::Serial, "epson-tm-t20")?;
    terminal.scan("BK-1")?;
    wait_for_cut(&terminal.printer, 1)?;
    wait_for_print(&terminal.daemon, "F-001", true)?;

    let jobs = terminal.printed_jobs()?;
    let [job] = jobs.as_slice() else {
        bail!("expected one ticket, got {jobs:?}");
    };
    assert_eq!(job.codepage, Some(19), "CP858 selected the Epson way");
    for line in [
        "Stadt Musterstadt",
        "Bürgerbüro im Rathaus",
        "F-001",
        "Führerscheinangelegenheiten",
        "- Bisheriger Führerschein",
        "- Sehtestbescheinigung",
    ] {
        assert!(
            job.lines.iter().any(|l| l.trim() == line),
            "{line:?} not among {:?}",
            job.lines
        );
    }
    assert_eq!(job.native_qr, vec![status_url("BK-1")]);
    assert!(
        job.rasters.is_empty(),
        "native QR, no raster: {:?}",
        job.commands
    );
    assert!(
        job.bytes < 480,
        "{} bytes: more than 0.5 s at 9600 baud",
        job.bytes
    );
    Ok(())
}

#[test]
fn a_tcp_printer_without_native_qr_gets_a_raster_qr_that_decodes() -> anyhow::Result<()> {
    require_tool("zbarimg", "zbar-tools")?;
    let terminal = Terminal::start(Link::Tcp, "generic-80mm")?;
    terminal.scan("BK-2")?;
    wait_for_cut(&terminal.printer, 1)?;
    wait_for_print(&terminal.daemon, "F-001", true)?;

    let jobs = terminal.printed_jobs()?;
    let [job] = jobs.as_slice() else {
        bail!("expected one ticket, got {jobs:?}");
    };
    assert_eq!(job.codepage, Some(0), "the generic profile uses CP437");
    assert!(
        job.lines
            .iter()
            .any(|l| l.trim() == "Führerscheinangelegenheiten")
    );
    assert!(job.native_qr.is_empty());
    let [raster] = job.rasters.as_slice() else {
        bail!("expected one raster image, got {:?}", job.rasters);
    };
    std::fs::copy(raster, artifacts("tickets")?.join("tcp-raster-qr.pgm"))?;
    assert_eq!(zbar_decode(raster)?, vec![status_url("BK-2")]);
    Ok(())
}

#[test]
fn paper_out_fails_the_print_keeps_the_ticket_and_reprints_when_paper_is_back() -> anyhow::Result<()>
{
    let terminal = Terminal::start(Link::Serial, "epson-tm-t20")?;
    let (daemon, printer) = (&terminal.daemon, &terminal.printer);
    printer.set_paper(Paper::Out);
    wait_for("paper out in the health", Duration::from_secs(10), || {
        Ok((terminal.health()?.paper.as_deref() == Some("out")).then_some(()))
    })?;
    terminal.scan("BK-3")?;
    let failed = wait_for_print(daemon, "F-001", false)?;
    let PrintState::Failed { reason, .. } = &failed.print else {
        bail!("not failed: {:?}", failed.print);
    };
    assert!(reason.contains("paper out"), "{reason}");
    // The ticket is valid: still in line.
    assert_eq!(failed.state, leitsystem::domain::TicketState::Waiting);
    let health = terminal.health()?;
    assert!(
        health
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("paper out")),
        "{health:?}"
    );
    assert_eq!(health.print_failures, 1);
    // Nothing of the ticket was sent while the paper was out.
    assert!(!printer.captured().windows(2).any(|w| w == [0x1d, 0x56]));

    // Paper back: the idle status poll sees it, the daemon reprints by itself.
    printer.set_paper(Paper::Ok);
    wait_for_cut(printer, 1)?;
    wait_for_print(daemon, "F-001", true)?;
    let jobs = terminal.printed_jobs()?;
    assert!(
        jobs.iter()
            .any(|j| j.lines.iter().any(|l| l.trim() == "F-001")
                && j.native_qr == vec![status_url("BK-3")]),
        "{jobs:?}"
    );

    // Near end of paper reaches the admin's device health.
    printer.set_paper(Paper::NearEnd);
    wait_for("near end in the health", Duration::from_secs(10), || {
        Ok((terminal.health()?.paper.as_deref() == Some("near_end")).then_some(()))
    })?;
    Ok(())
}

#[test]
fn an_unplugged_printer_is_reported_and_prints_again_when_plugged_back_in() -> anyhow::Result<()> {
    let mut terminal = Terminal::start(Link::Serial, "epson-tm-t20")?;
    terminal.printer.unplug()?;
    terminal.wait_connected(false)?;
    // A ticket issued meanwhile fails to print but is valid.
    terminal.scan("BK-4")?;
    wait_for_print(&terminal.daemon, "F-001", false)?;

    terminal.printer.replug()?;
    terminal.wait_connected(true)?;
    // Back: the failed ticket is reprinted, and new tickets print.
    wait_for_print(&terminal.daemon, "F-001", true)?;
    terminal.scan("BK-5")?;
    wait_for_print(&terminal.daemon, "F-002", true)?;
    wait_for_cut(&terminal.printer, 2)?;
    Ok(())
}
