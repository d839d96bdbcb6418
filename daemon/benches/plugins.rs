//! Plugin round-trip benchmark:
//! `cargo build --release -p leitsystem-sim && cargo bench -p leitsystemd --bench plugins`.
//!
//! Runs the real daemon with the sim plugin and measures one event's round trip through the
//! ABI: a `DESK next` line on the simulated button box (plugin emit) → host → engine
//! (`call_next`, committed durably) → committed event → `display` message to the simulated
//! display plugin, which writes its file. Baseline in the same run: a message sent to another
//! thread and answered over in-process channels. Prints p50/p99; asserts nothing.
//!
//! Second figure: two button boxes pressing at once. [`PRESSES`] silent-alarm presses (each one
//! durable commit) from one box, then as many from each of two boxes together; the ratio of
//! the two times shows whether the devices wait for each other's commits (a router shared by
//! all devices: about 2) or share group commits (a router per device: about 1). Measured
//! here (2026-12-07, idle 2-core machine): the router per device 1.37 and 1.46 (300 presses
//! 277 ms, two boxes 382/406 ms); the shared router it replaced 2.28 (366 ms, 835 ms).

#![allow(clippy::print_stdout, reason = "a benchmark prints its figures")]

mod common;
use common::percentile;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use leitsystem::control::{ControlClient, ControlRequest};
use leitsystem::domain::{Command, DeskId, ServiceId};

type BenchResult = Result<(), Box<dyn std::error::Error>>;

const ROUNDS: usize = 300;
/// Presses per box in the two-box measurement.
const PRESSES: usize = 300;

fn main() -> BenchResult {
    let build_dir = Path::new(env!("CARGO_BIN_EXE_leitsystemd"))
        .parent()
        .ok_or("no build directory")?
        .to_path_buf();
    if !build_dir.join("libleitsystem_sim.so").is_file() {
        return Err(format!(
            "{} is missing: run `cargo build --release -p leitsystem-sim` first",
            build_dir.join("libleitsystem_sim.so").display()
        )
        .into());
    }
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
    let data = base.path().join("data");
    let free_port = || -> Result<u16, std::io::Error> {
        Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?
            .local_addr()?
            .port())
    };
    let port = free_port()?;
    let second_port = free_port()?;
    let display = data.join("display.json");
    let config = base.path().join("bench.toml");
    common::write_config(
        &config,
        &data,
        &format!(
            "[plugins]\ndirs = [\"{}\"]\n\n[[device]]\nid = \"buttons\"\nplugin = \"libleitsystem_sim.so\"\nrole = \"buttons\"\noptions = {{ port = {port} }}\n\n[[device]]\nid = \"buttons-2\"\nplugin = \"libleitsystem_sim.so\"\nrole = \"buttons\"\noptions = {{ port = {second_port} }}\n\n[[device]]\nid = \"display\"\nplugin = \"libleitsystem_sim.so\"\nrole = \"display\"\noptions = {{ file = \"{}\" }}\n",
            build_dir.display(),
            display.display()
        ),
    )?;
    // Each round presses "next" right after the last call: the demo's 5 s window would turn
    // that press into a repeat of the call, so the window is off here.
    let text = std::fs::read_to_string(&config)?;
    std::fs::write(
        &config,
        text.replace(
            "repeat_next_within_seconds = 5",
            "repeat_next_within_seconds = 0",
        ),
    )?;
    let mut daemon = common::BenchDaemon::start(&config, &data)?;
    let result = measure(&mut daemon.client, port, &display);
    let boxes = result.and_then(|r| Ok((r, two_boxes(&mut daemon.client, port, second_port)?)));
    drop(daemon);
    let ((plugin_lat, channel_lat), (one_box, two)) = boxes?;
    println!("{:<62} {:>10} {:>10}", "", "p50 µs", "p99 µs");
    let row = |name: &str, lat: &[Duration]| {
        println!(
            "{name:<62} {:>10.1} {:>10.1}",
            micros(percentile(lat, 50)),
            micros(percentile(lat, 99))
        );
    };
    row(
        "button plugin -> host -> engine (durable) -> display plugin",
        &plugin_lat,
    );
    row("baseline: in-process channel round trip", &channel_lat);
    println!(
        "ratio p50 plugin round trip / channel round trip: {:.0}",
        micros(percentile(&plugin_lat, 50)) / micros(percentile(&channel_lat, 50)).max(0.001)
    );
    println!(
        "{PRESSES} presses from one box: {:.0} ms; {PRESSES} from each of two boxes at once: {:.0} ms",
        one_box.as_secs_f64() * 1e3,
        two.as_secs_f64() * 1e3
    );
    println!(
        "ratio two boxes / one box: {:.2} (2 = the boxes wait for each other, 1 = they share commits)",
        two.as_secs_f64() / one_box.as_secs_f64().max(1e-9)
    );
    Ok(())
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

type Latencies = (Vec<Duration>, Vec<Duration>);

fn measure(
    control: &mut ControlClient,
    port: u16,
    display: &Path,
) -> Result<Latencies, Box<dyn std::error::Error>> {
    let mut execute = |command: Command| {
        control.request(&ControlRequest::Execute {
            request_id: None,
            command,
        })
    };
    execute(Command::OpenDesk {
        desk: DeskId::new("1"),
    })?;
    let buttons = button_box(port)?;
    let mut writer = buttons.try_clone()?;
    let mut reader = BufReader::new(buttons);
    let mut plugin = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS + 20 {
        let issued = execute(Command::WalkIn {
            service: ServiceId::new("ausweis"),
            priority: 1,
        })?;
        let ticket = match issued.outcome {
            Some(leitsystem::domain::Outcome::TicketIssued { ticket, .. }) => ticket.to_string(),
            other => return Err(format!("walk-in answered {other:?}").into()),
        };
        let sent = Instant::now();
        writer.write_all(b"1 next\n")?;
        let mut answer = String::new();
        reader.read_line(&mut answer)?;
        loop {
            if let Ok(body) = std::fs::read(display) {
                if let Ok(state) = serde_json::from_slice::<serde_json::Value>(&body) {
                    if state["calls"][0]["ticket"] == ticket.as_str() {
                        break;
                    }
                }
            }
            if sent.elapsed() > Duration::from_secs(10) {
                return Err(format!("{ticket} never reached the display").into());
            }
            std::hint::spin_loop();
        }
        if round >= 20 {
            plugin.push(sent.elapsed());
        }
    }
    plugin.sort();

    let (to_worker, worker_in) = std::sync::mpsc::channel::<Instant>();
    let (to_main, main_in) = std::sync::mpsc::channel::<Instant>();
    let worker = std::thread::spawn(move || {
        for message in worker_in {
            if to_main.send(message).is_err() {
                return;
            }
        }
    });
    let mut channel = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let sent = Instant::now();
        to_worker.send(sent)?;
        main_in.recv()?;
        channel.push(sent.elapsed());
    }
    drop(to_worker);
    let _ = worker.join();
    channel.sort();
    Ok((plugin, channel))
}

/// A connected button box of the sim plugin on `port`.
fn button_box(port: u16) -> Result<TcpStream, Box<dyn std::error::Error>> {
    let started = Instant::now();
    loop {
        if let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) {
            stream.set_nodelay(true)?;
            return Ok(stream);
        }
        if started.elapsed() > Duration::from_secs(60) {
            return Err(format!("the button box on port {port} did not listen").into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Presses "alarm" at desk 1 [`PRESSES`] times on `port`, each answered by the box.
fn press_alarms(port: u16) -> Result<(), String> {
    let stream = button_box(port).map_err(|e| e.to_string())?;
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    for _ in 0..PRESSES {
        writer.write_all(b"1 alarm\n").map_err(|e| e.to_string())?;
        let mut answer = String::new();
        reader.read_line(&mut answer).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Waits until the log holds `seq`.
fn wait_for_seq(control: &mut ControlClient, seq: u64) -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();
    loop {
        let state = control
            .request(&ControlRequest::State)?
            .state
            .ok_or("no state")?;
        if state.last_seq >= seq {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(120) {
            return Err(format!("the log stopped at {} of {seq}", state.last_seq).into());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn last_seq(control: &mut ControlClient) -> Result<u64, Box<dyn std::error::Error>> {
    Ok(control
        .request(&ControlRequest::State)?
        .state
        .ok_or("no state")?
        .last_seq)
}

/// The time for [`PRESSES`] presses from one box to be committed, then for as many from each
/// of two boxes pressing at once.
fn two_boxes(
    control: &mut ControlClient,
    first: u16,
    second: u16,
) -> Result<(Duration, Duration), Box<dyn std::error::Error>> {
    let presses = u64::try_from(PRESSES)?;
    let before = last_seq(control)?;
    let started = Instant::now();
    press_alarms(first)?;
    wait_for_seq(control, before + presses)?;
    let one_box = started.elapsed();

    let before = last_seq(control)?;
    let started = Instant::now();
    let other = std::thread::spawn(move || press_alarms(second));
    press_alarms(first)?;
    other
        .join()
        .map_err(|_| "the second box's thread panicked")??;
    wait_for_seq(control, before + 2 * presses)?;
    Ok((one_box, started.elapsed()))
}
