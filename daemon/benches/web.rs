//! Display push benchmark: `cargo bench -p leitsystemd --bench web`.
//!
//! The real daemon with its web server; 50 WebSocket clients on `/display/ws`, as 50 wall
//! displays would be. Each round pulls a walk-in ticket and calls it with "next"; measured is
//! the time from sending "next" until each client has the new call, p50/p99 over all clients
//! and rounds. Baseline in the same run: the same "next" command with no clients connected,
//! from sending it until its (durable) answer. Also prints the daemon's memory without and
//! with the 50 clients. Asserts nothing.

#![allow(clippy::print_stdout, reason = "a benchmark prints its figures")]

mod common;
use common::{BenchDaemon, percentile, write_config};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use leitsystem::control::{ControlClient, ControlRequest};
use leitsystem::domain::{Command, DeskId, Outcome, ServiceId};

type BenchResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

const CLIENTS: usize = 50;
const ROUNDS: usize = 200;

fn execute(client: &mut ControlClient, command: Command) -> BenchResult<Outcome> {
    let response = client.request(&ControlRequest::Execute {
        request_id: None,
        command,
    })?;
    response
        .outcome
        .ok_or_else(|| format!("refused: {:?}", response.error).into())
}

/// Walk-in plus "next"; returns the called number and when "next" was sent.
fn call_one(client: &mut ControlClient) -> BenchResult<(String, Instant, Duration)> {
    execute(
        client,
        Command::WalkIn {
            service: ServiceId::new("ausweis"),
            priority: 1,
        },
    )?;
    let sent = Instant::now();
    let outcome = execute(
        client,
        Command::CallNext {
            desk: DeskId::new("1"),
        },
    )?;
    let answered = sent.elapsed();
    // The visitor arrives, so the next round's "next" calls on (a "next" within seconds of
    // a call only repeats it).
    execute(
        client,
        Command::StartService {
            desk: DeskId::new("1"),
        },
    )?;
    match outcome {
        Outcome::Called { ticket, .. } => Ok((ticket.to_string(), sent, answered)),
        other => Err(format!("next answered {other:?}").into()),
    }
}

fn memory_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// When each client first saw each called number.
type Arrivals = Arc<Mutex<HashMap<(usize, String), Instant>>>;

fn spawn_client(
    index: usize,
    url: String,
    arrivals: Arrivals,
) -> BenchResult<std::thread::JoinHandle<()>> {
    let (mut socket, _) = tungstenite::connect(url.as_str())?;
    Ok(std::thread::spawn(move || {
        while let Ok(message) = socket.read() {
            let Ok(text) = message.into_text() else {
                continue;
            };
            let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) else {
                continue;
            };
            if let Some(ticket) = value["state"]["calls"][0]["ticket"].as_str() {
                let now = Instant::now();
                arrivals
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry((index, ticket.to_string()))
                    .or_insert(now);
            }
        }
    }))
}

fn main() -> BenchResult {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let config = dir.path().join("leitsystem.toml");
    write_config(
        &config,
        &data,
        &format!("[web]\nlisten = \"127.0.0.1:{port}\"\n"),
    )?;
    let mut daemon = BenchDaemon::start(&config, &data)?;
    execute(
        &mut daemon.client,
        Command::OpenDesk {
            desk: DeskId::new("1"),
        },
    )?;

    // Baseline: "next" with no display connected.
    let mut baseline = Vec::new();
    for _ in 0..ROUNDS {
        let (_, _, answered) = call_one(&mut daemon.client)?;
        baseline.push(answered);
    }
    baseline.sort();
    let rss_before = memory_kib(daemon.pid(), "VmRSS:");

    let arrivals: Arrivals = Arc::new(Mutex::new(HashMap::new()));
    let url = format!("ws://127.0.0.1:{port}/display/ws");
    let mut threads = Vec::new();
    for index in 0..CLIENTS {
        threads.push(spawn_client(index, url.clone(), arrivals.clone())?);
    }
    std::thread::sleep(Duration::from_millis(500));
    let mut sent = Vec::new();
    for _ in 0..ROUNDS {
        let (ticket, at, _) = call_one(&mut daemon.client)?;
        sent.push((ticket, at));
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(500));
    let rss_with = memory_kib(daemon.pid(), "VmRSS:");
    let hwm = memory_kib(daemon.pid(), "VmHWM:");

    let seen = arrivals.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut latencies = Vec::new();
    let mut missing = 0;
    for (ticket, at) in &sent {
        for index in 0..CLIENTS {
            match seen.get(&(index, ticket.clone())) {
                Some(arrived) => latencies.push(arrived.saturating_duration_since(*at)),
                None => missing += 1,
            }
        }
    }
    latencies.sort();
    println!("{CLIENTS} display WebSockets, {ROUNDS} calls:");
    println!(
        "  next -> new call at every client: p50 {:?}, p99 {:?}, max {:?} ({} deliveries, {missing} missing)",
        percentile(&latencies, 50),
        percentile(&latencies, 99),
        latencies.last().copied().unwrap_or_default(),
        latencies.len()
    );
    println!(
        "  baseline, next answered with no clients: p50 {:?}, p99 {:?}",
        percentile(&baseline, 50),
        percentile(&baseline, 99)
    );
    let p50 = percentile(&latencies, 50).as_secs_f64();
    let base = percentile(&baseline, 50).as_secs_f64().max(1e-9);
    println!("  ratio p50 push / p50 baseline: {:.2}", p50 / base);
    println!(
        "  daemon memory: {} KiB resident without clients, {} KiB with {CLIENTS} (peak {} KiB)",
        rss_before, rss_with, hwm
    );
    drop(daemon);
    for thread in threads {
        let _ = thread.join();
    }
    Ok(())
}
