//! Plugin round-trip benchmark:
//! `cargo build --release -p leitsystem-sim && cargo bench -p leitsystemd --bench plugins`.
//!
//! Runs the real daemon with the sim plugin and measures one event's round trip through the
//! ABI: a `DESK next` line on the simulated button box (plugin emit) → host → engine
//! (`call_next`, committed durably) → committed event → `display` message to the simulated
//! display plugin, which writes its file. Baseline in the same run: a message sent to another
//! thread and answered over in-process channels. Prints p50/p99; asserts nothing.

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
    let port = std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port();
    let display = data.join("display.json");
    let config = base.path().join("bench.toml");
    common::write_config(
        &config,
        &data,
        &format!(
            "[plugins]\ndirs = [\"{}\"]\n\n[[device]]\nid = \"buttons\"\nplugin = \"libleitsystem_sim.so\"\nrole = \"buttons\"\noptions = {{ port = {port} }}\n\n[[device]]\nid = \"display\"\nplugin = \"libleitsystem_sim.so\"\nrole = \"display\"\noptions = {{ file = \"{}\" }}\n",
            build_dir.display(),
            display.display()
        ),
    )?;
    let mut daemon = common::BenchDaemon::start(&config, &data)?;
    let result = measure(&mut daemon.client, port, &display);
    drop(daemon);
    let (plugin_lat, channel_lat) = result?;
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
    let started = Instant::now();
    let mut execute = |command: Command| {
        control.request(&ControlRequest::Execute {
            request_id: None,
            command,
        })
    };
    execute(Command::OpenDesk {
        desk: DeskId::new("1"),
    })?;
    let buttons = loop {
        if let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) {
            break stream;
        }
        if started.elapsed() > Duration::from_secs(60) {
            return Err("the button box did not listen".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    buttons.set_nodelay(true)?;
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
