//! The demo ticket on the wire and as a PNG.
//!
//! `cargo bench -p leitsystemd --bench ticket` lays out the demo config's sample ticket (the
//! service with four documents, an appointment, the 55-character status URL as QR code),
//! encodes it with the ESC/POS driver's encoder (native QR and raster QR) and, as the baseline
//! in the same run, with python-escpos from PyPI (its defaults, and `native=True`), through
//! `tests/escpos/python_escpos_baseline.py` in a venv made by `tests/escpos/setup-python.sh`.
//! Prints bytes, time on the wire at 9600 and 115200 baud (8N1: 10 bits a byte) and the
//! ratios, then the time to render the PNG preview (goal: under 20 ms).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use leitsystem::config::Config;
use leitsystem::ticket::{Paper, render_png, sample_ticket, ticket_document};
use leitsystem_escpos_printer::encode::{QrMode, encode};
use leitsystem_escpos_printer::profiles;
use leitsystem_plugin::document::Document;

/// 2026-11-23 09:00 in Berlin: a fixed instant, so every run prints the same ticket.
const NOW: i64 = 1_795_420_800_000;

fn wire_seconds(bytes: usize, baud: u32) -> f64 {
    bytes as f64 * 10.0 / f64::from(baud)
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Bytes python-escpos produces for `document`.
fn python_escpos(python: &Path, document: &Path, native: bool) -> anyhow::Result<usize> {
    let mut command = Command::new(python);
    command
        .arg(repo_root().join("tests/escpos/python_escpos_baseline.py"))
        .arg(document);
    if native {
        command.arg("--native");
    }
    let output = command
        .output()
        .context("running the python-escpos baseline")?;
    if !output.status.success() {
        bail!(
            "python-escpos baseline failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    answer["bytes"]
        .as_u64()
        .map(|b| b as usize)
        .context("no byte count from the baseline")
}

fn python_venv() -> anyhow::Result<PathBuf> {
    let output = Command::new("bash")
        .arg(repo_root().join("tests/escpos/setup-python.sh"))
        .output()
        .context("running tests/escpos/setup-python.sh")?;
    if !output.status.success() {
        bail!(
            "setting up python-escpos failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .last()
        .map(PathBuf::from)
        .context("setup-python.sh printed no python path")
}

fn median_ms(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn demo_document() -> anyhow::Result<Document> {
    let config = Config::demo()?;
    let catalog = leitsystem::catalog::from_config(&config)?;
    let ticket = sample_ticket(&catalog, None, true, NOW).context("no sample ticket")?;
    Ok(ticket_document(&ticket, &catalog, NOW))
}

fn main() -> anyhow::Result<()> {
    let document = demo_document()?;
    let profile = profiles::lookup("epson-tm-t20").map_err(anyhow::Error::msg)?;
    let native = encode(&document, &profile, QrMode::Native)?;
    let raster = encode(&document, &profile, QrMode::Raster)?;

    let dir = tempfile::tempdir()?;
    let json = dir.path().join("ticket.json");
    std::fs::write(&json, serde_json::to_vec(&document)?)?;
    let python = python_venv()?;
    let baseline_default = python_escpos(&python, &json, false)?;
    let baseline_native = python_escpos(&python, &json, true)?;

    let text_chars: usize = document
        .blocks
        .iter()
        .map(|b| match b {
            leitsystem_plugin::document::Block::Text { text, .. } => text.chars().count(),
            _ => 0,
        })
        .sum();
    eprintln!(
        "demo ticket {}: {} blocks, {text_chars} characters of text, QR of {} bytes",
        document.number,
        document.blocks.len(),
        document
            .blocks
            .iter()
            .find_map(|b| match b {
                leitsystem_plugin::document::Block::Qr { data } => Some(data.len()),
                _ => None,
            })
            .unwrap_or(0)
    );
    eprintln!(
        "{:<34} {:>6} {:>11} {:>12}",
        "", "bytes", "9600 baud", "115200 baud"
    );
    for (name, bytes) in [
        ("ours, native QR (GS ( k)", native.len()),
        ("ours, raster QR (GS v 0, 2x)", raster.len()),
        ("python-escpos 3.1, defaults", baseline_default),
        ("python-escpos 3.1, native=True", baseline_native),
    ] {
        eprintln!(
            "{name:<34} {bytes:>6} {:>9.3} s {:>10.3} s",
            wire_seconds(bytes, 9600),
            wire_seconds(bytes, 115_200)
        );
    }
    eprintln!(
        "ratio ours native / python-escpos defaults: {:.3} (goal <= 0.333)",
        native.len() as f64 / baseline_default as f64
    );
    eprintln!(
        "ratio ours native / python-escpos native:   {:.3} (goal <= 1.1)",
        native.len() as f64 / baseline_native as f64
    );
    eprintln!(
        "ratio ours raster / python-escpos defaults: {:.3}",
        raster.len() as f64 / baseline_default as f64
    );

    for paper in [Paper::Mm58, Paper::Mm80] {
        let mut samples = Vec::new();
        let mut size = 0;
        for _ in 0..50 {
            let started = Instant::now();
            let png = render_png(&document, paper)?;
            samples.push(started.elapsed().as_secs_f64() * 1000.0);
            size = png.len();
        }
        eprintln!(
            "PNG preview {paper:?}: median {:.2} ms over 50 renders ({size} bytes; goal < 20 ms)",
            median_ms(samples)
        );
    }
    let mut samples = Vec::new();
    for _ in 0..200 {
        let started = Instant::now();
        let _ = encode(&document, &profile, QrMode::Native)?;
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    eprintln!(
        "ESC/POS encoding (native QR): median {:.3} ms",
        median_ms(samples)
    );
    Ok(())
}
