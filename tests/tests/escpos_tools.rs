//! The ESC/POS test tools themselves, without any printer driver: npos parses a capture written
//! by hand (text in code page 858, a native QR code, a QR code as a raster image, a cut) and
//! zbarimg reads the image back; the emulated printer answers status queries behind a pseudo
//! terminal and on TCP, stays silent when hung, and can be unplugged and plugged in again.

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use leitsystem_tests::escpos::{
    Paper, PrinterEmulator, npos_parse, repo_root, require_tool, status_byte, zbar_decode,
};
use qrcode::{Color, EcLevel, QrCode};

const URL: &str = "https://termine.musterstadt.de/status/b7f3a9c21e4d05b6a";

/// Code page 858 for the few non-ASCII letters the test uses.
fn cp858(text: &str) -> Vec<u8> {
    text.chars()
        .map(|c| match c {
            'ä' => 0x84,
            'ö' => 0x94,
            'ü' => 0x81,
            'Ä' => 0x8e,
            'Ö' => 0x99,
            'Ü' => 0x9a,
            'ß' => 0xe1,
            '€' => 0xd5,
            c if c.is_ascii() => c as u8,
            c => panic!("{c} is not in the test's code page table"),
        })
        .collect()
}

/// `GS ( k pL pH cn fn [m] data`.
fn gs_k(function: u8, parameters: &[u8]) -> Vec<u8> {
    let length = u16::try_from(parameters.len() + 2).expect("short parameters");
    let mut bytes = vec![0x1d, b'(', b'k'];
    bytes.extend(length.to_le_bytes());
    bytes.extend([49, function]);
    bytes.extend(parameters);
    bytes
}

/// A QR code of `data` as `GS v 0` with m = 3 (double width and height), 2 x 2 dots per module.
fn raster_qr(data: &str) -> Vec<u8> {
    let code = QrCode::with_error_correction_level(data, EcLevel::M).expect("a QR code");
    let modules = code.width();
    let colors = code.to_colors();
    let dots = modules * 2;
    let row_bytes = dots.div_ceil(8);
    let mut bytes = vec![0x1d, b'v', b'0', 3];
    bytes.extend(u16::try_from(row_bytes).expect("narrow").to_le_bytes());
    bytes.extend(u16::try_from(dots).expect("short").to_le_bytes());
    for y in 0..dots {
        let mut row = vec![0u8; row_bytes];
        for x in 0..dots {
            if colors[(y / 2) * modules + x / 2] == Color::Dark {
                row[x / 8] |= 0x80 >> (x % 8);
            }
        }
        bytes.extend(row);
    }
    bytes
}

#[test]
fn npos_and_zbar_read_a_hand_made_capture() -> anyhow::Result<()> {
    assert_eq!(URL.len(), 55);
    let dir = tempfile::tempdir()?;
    let mut capture = vec![0x1b, b'@', 0x1b, b't', 19];
    capture.extend(cp858("Straße Führerschein\n"));
    let mut store = vec![48];
    store.extend(URL.as_bytes());
    capture.extend(gs_k(80, &store));
    capture.extend(gs_k(81, &[48]));
    capture.extend(raster_qr(URL));
    capture.extend([0x1d, b'V', 66, 0]);
    let file = dir.path().join("capture.bin");
    std::fs::write(&file, &capture)?;

    let started = Instant::now();
    let parsed = npos_parse(&file, &dir.path().join("out"))?;
    let parse_time = started.elapsed();
    assert_eq!(parsed.status_queries, 0);
    assert_eq!(parsed.jobs.len(), 1, "{parsed:#?}");
    let job = &parsed.jobs[0];
    assert_eq!(
        job.commands,
        [
            "ESC @",
            "ESC t 19",
            "GS ( k 49 80",
            "GS ( k 49 81",
            "GS v 0 3",
            "GS V 66"
        ]
    );
    assert_eq!(job.codepage, Some(19));
    assert_eq!(job.text, "Straße Führerschein\n");
    assert_eq!(job.lines, ["Straße Führerschein", ""]);
    assert_eq!(job.native_qr, [URL]);
    assert!(job.cut);
    assert_eq!(job.bytes, capture.len());
    assert_eq!(job.count("GS ( k 49 80"), 1);
    assert_eq!(job.rasters.len(), 1);

    let started = Instant::now();
    let decoded = zbar_decode(&job.rasters[0])?;
    let zbar_time = started.elapsed();
    assert_eq!(decoded, [URL]);
    eprintln!("parse.js took {parse_time:?}, zbarimg {zbar_time:?}");

    // An image without a code decodes to nothing, and bytes npos does not know are an error.
    let blank = dir.path().join("blank.pgm");
    let mut pgm = b"P5\n64 64\n255\n".to_vec();
    pgm.extend([255u8; 64 * 64]);
    std::fs::write(&blank, pgm)?;
    assert_eq!(zbar_decode(&blank)?, Vec::<String>::new());
    std::fs::write(&file, [0x1b, b'@', 0x1b, 0xff, b'A'])?;
    let error = npos_parse(&file, &dir.path().join("out")).expect_err("an unknown command");
    assert!(
        format!("{error:#}").contains("npos could not parse"),
        "{error:#}"
    );
    Ok(())
}

#[test]
fn parse_js_passes_its_self_test_and_missing_tools_name_their_package() -> anyhow::Result<()> {
    require_tool("node", "nodejs")?;
    let output = std::process::Command::new("node")
        .arg(repo_root().join("tests/escpos/selftest.js"))
        .output()?;
    assert!(
        output.status.success(),
        "selftest.js failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let error = require_tool("no-such-tool-here", "no-such-package").expect_err("missing");
    assert_eq!(
        error.to_string(),
        "`no-such-tool-here` not found: install the Debian package no-such-package \
         (bash tests/run installs it)"
    );
    Ok(())
}

/// Reads one byte within `timeout` (None if nothing came); fails on end of file.
fn read_byte(file: &mut File, timeout: Duration) -> anyhow::Result<Option<u8>> {
    let deadline = Instant::now() + timeout;
    let mut byte = [0u8; 1];
    loop {
        match file.read(&mut byte) {
            Ok(1) => return Ok(Some(byte[0])),
            Ok(_) => bail!("end of file"),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.into()),
        }
        if Instant::now() > deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn open_device(path: &Path) -> anyhow::Result<File> {
    std::fs::File::options()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

#[test]
fn the_pty_printer_answers_status_queries_and_can_be_unplugged() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut printer = PrinterEmulator::pty(dir.path())?;
    let path = printer.device_path().context("a device path")?;
    assert_eq!(path, dir.path().join("printer"));
    let mut device = open_device(&path)?;
    let second = Duration::from_secs(1);

    printer.set_paper(Paper::Out);
    device.write_all(&[0x10, 0x04, 0x04])?;
    assert_eq!(read_byte(&mut device, second)?, Some(0x72));
    assert_eq!(status_byte(4, Paper::Out, false), Some(0x72));

    // A query split over two writes, in the middle of other bytes; the cover is open.
    printer.set_paper(Paper::Ok);
    printer.set_cover_open(true);
    device.write_all(b"ab\x10")?;
    std::thread::sleep(Duration::from_millis(20));
    device.write_all(&[0x04, 0x02, b'c'])?;
    assert_eq!(read_byte(&mut device, second)?, Some(0x16));
    printer.wait_for_bytes(|b| b.ends_with(b"c"), second)?;
    assert_eq!(printer.status_queries(), 2);

    // Hung: takes the bytes, answers nothing.
    printer.set_answering(false);
    device.write_all(&[0x10, 0x04, 0x01])?;
    printer.wait_for_bytes(|b| b.ends_with(&[0x10, 0x04, 0x01]), second)?;
    assert_eq!(read_byte(&mut device, Duration::from_millis(100))?, None);
    printer.set_answering(true);
    printer.clear();
    assert!(printer.captured().is_empty());

    // Unplugged: the open device hangs up and the path is gone; plugged in again, it works.
    printer.unplug()?;
    assert!(
        read_byte(&mut device, second).is_err(),
        "the device did not hang up"
    );
    assert!(!path.exists());
    printer.replug()?;
    let mut device = open_device(&path)?;
    printer.set_cover_open(false);
    device.write_all(&[0x10, 0x04, 0x01])?;
    assert_eq!(read_byte(&mut device, second)?, Some(0x12));
    assert_eq!(printer.captured(), [0x10, 0x04, 0x01]);
    Ok(())
}

#[test]
fn the_network_printer_answers_status_queries_and_can_be_unplugged() -> anyhow::Result<()> {
    let mut printer = PrinterEmulator::tcp()?;
    let port = printer.port().context("a port")?;
    assert_eq!(printer.device_path(), None);
    let second = Duration::from_secs(1);
    let connect = || -> anyhow::Result<TcpStream> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(second))?;
        Ok(stream)
    };
    let mut stream = connect()?;
    printer.set_paper(Paper::NearEnd);
    stream.write_all(&[0x10, 0x04, 0x04])?;
    let mut byte = [0u8; 1];
    stream.read_exact(&mut byte)?;
    assert_eq!(byte[0], 0x1e);

    // A second connection replaces the first.
    let mut newer = connect()?;
    newer.write_all(&[0x1b, b'@', 0x10, 0x04, 0x01])?;
    newer.read_exact(&mut byte)?;
    assert_eq!(byte[0], 0x12);
    assert_eq!(stream.read(&mut byte)?, 0, "the old connection stays open");
    assert_eq!(printer.connections(), 2);
    assert_eq!(
        printer.captured(),
        [0x10, 0x04, 0x04, 0x1b, b'@', 0x10, 0x04, 0x01]
    );

    printer.unplug()?;
    assert_eq!(newer.read(&mut byte)?, 0, "the connection stays open");
    assert!(
        connect().is_err(),
        "an unplugged printer accepts connections"
    );
    printer.replug()?;
    assert_eq!(printer.port(), Some(port));
    let mut stream = connect()?;
    stream.write_all(&[0x10, 0x04, 0x02])?;
    stream.read_exact(&mut byte)?;
    assert_eq!(byte[0], 0x12);
    Ok(())
}
