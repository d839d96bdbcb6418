//! Store benchmark: `cargo bench -p leitsystemd --bench store`.
//!
//! Builds a store holding 100,000 past tickets (`BENCH_TICKETS` to change), then prints:
//! - the time to open that store and be ready (open + load + engine);
//! - acknowledged (durable) commands per second and p50/p99 latency of one acknowledged
//!   command through the real engine thread, with one client and with 16 concurrent clients
//!   (group commit);
//! - as the baseline in the same run, raw sled on the same disk: insert+flush, and
//!   insert+flush+fdatasync (what durability costs), with the ratio ours / raw.
//!
//! Figures only; nothing here asserts a time.

#![allow(clippy::print_stdout, reason = "a benchmark prints its figures")]

mod common;
use common::percentile;

use std::sync::Arc;
use std::time::{Duration, Instant};

use leitsystem::catalog::Catalog;
use leitsystem::clock::{Clock, MINUTE, SystemClock};
use leitsystem::config::Config;
use leitsystem::daemon::{EngineHandle, open_engine, spawn_engine};
use leitsystem::domain::{Command, CommandRequest, DeskId, ServiceId};
use leitsystem::engine::Engine;
use leitsystem::store::{Store, StoreOptions};
use tokio_util::sync::CancellationToken;

type BenchResult = Result<(), Box<dyn std::error::Error>>;

fn main() -> BenchResult {
    let tickets: usize = std::env::var("BENCH_TICKETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let commands: usize = std::env::var("BENCH_COMMANDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
    let catalog = Arc::new(leitsystem::catalog::from_config(&Config::demo()?)?);
    let options = StoreOptions::default();

    // 1. History: `tickets` past tickets over 100 days, each issued, called and finished.
    let data = base.path().join("data");
    let built = Instant::now();
    let events = build_history(&catalog, &data, &options, tickets)?;
    let size = dir_size(&data)?;
    println!(
        "history: {tickets} past tickets, {events} events, {:.1} MiB on disk, built in {:.1} s",
        size as f64 / 1_048_576.0,
        built.elapsed().as_secs_f64()
    );

    // 2. Open and be ready.
    let mut opens = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let (engine, store) = open_engine(catalog.clone(), &data, &options)?;
        opens.push(started.elapsed());
        drop(engine);
        store.close()?;
    }
    opens.sort();
    println!(
        "open store with {tickets} past tickets and be ready: median {:.1} ms (min {:.1}, max {:.1})",
        ms(opens[opens.len() / 2]),
        ms(opens[0]),
        ms(opens[opens.len() - 1])
    );

    // Memory of the real daemon on that store, after 1,000 commands.
    let (rss, peak) = daemon_memory(base.path(), &data)?;
    println!(
        "leitsystemd on that store after 1,000 commands: resident {:.1} MiB, peak {:.1} MiB \
         (sled cache {} MiB)",
        rss as f64 / 1024.0,
        peak as f64 / 1024.0,
        options.cache_bytes / 1_048_576
    );

    // 3. Acknowledged commands through the engine thread.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (engine, store) = open_engine(catalog.clone(), &data, &options)?;
    let fatal = CancellationToken::new();
    let gate = leitsystem::clock::DayGate::open(catalog.calendar.clone());
    let (handle, thread) = spawn_engine(engine, store, Arc::new(SystemClock), gate, fatal)?;
    let (seq_rate, seq_lat) = runtime.block_on(drive(&handle, commands, 1))?;
    let (par_rate, par_lat) = runtime.block_on(drive(&handle, commands * 4, 16))?;
    drop(handle);
    let _ = thread.join();

    // 4. Baseline: raw sled on the same disk.
    let raw_flush = raw_sled(&base.path().join("raw1"), commands, false)?;
    let raw_fsync = raw_sled(&base.path().join("raw2"), commands, true)?;

    println!();
    println!(
        "{:<58} {:>10} {:>10} {:>10}",
        "", "ops/s", "p50 ms", "p99 ms"
    );
    let row = |name: &str, rate: f64, lat: &[Duration]| {
        println!(
            "{name:<58} {rate:>10.0} {:>10.2} {:>10.2}",
            ms(percentile(lat, 50)),
            ms(percentile(lat, 99))
        );
    };
    row(
        "leitsystemd command, acknowledged (1 client)",
        seq_rate,
        &seq_lat,
    );
    row(
        "leitsystemd command, acknowledged (16 clients)",
        par_rate,
        &par_lat,
    );
    row(
        "raw sled insert+flush (baseline, not durable)",
        raw_flush.0,
        &raw_flush.1,
    );
    row(
        "raw sled insert+flush+fdatasync (baseline, durable)",
        raw_fsync.0,
        &raw_fsync.1,
    );
    println!();
    println!(
        "ratio ours/raw insert+flush:           1 client {:.2}, 16 clients {:.2}",
        seq_rate / raw_flush.0,
        par_rate / raw_flush.0
    );
    println!(
        "ratio ours/raw insert+flush+fdatasync: 1 client {:.2}, 16 clients {:.2}",
        seq_rate / raw_fsync.0,
        par_rate / raw_fsync.0
    );
    Ok(())
}

/// Starts the real daemon on `data`, sends 1,000 commands over its control socket, and returns
/// its resident and peak memory in KiB; stops it with SIGTERM.
fn daemon_memory(
    base: &std::path::Path,
    data: &std::path::Path,
) -> Result<(u64, u64), Box<dyn std::error::Error>> {
    use leitsystem::control::ControlRequest;
    let config = base.join("bench.toml");
    common::write_config(&config, data, "")?;
    let mut daemon = common::BenchDaemon::start(&config, data)?;
    for i in 0..1_000 {
        let command = if i % 2 == 0 {
            Command::WalkIn {
                service: ServiceId::new("ausweis"),
                priority: 1,
            }
        } else {
            Command::CallNext {
                desk: DeskId::new("4"),
            }
        };
        if i < 4 {
            daemon.client.request(&ControlRequest::Execute {
                request_id: None,
                command: Command::OpenDesk {
                    desk: DeskId::new((i + 1).to_string()),
                },
            })?;
        }
        daemon.client.request(&ControlRequest::Execute {
            request_id: None,
            command,
        })?;
    }
    let status = format!("/proc/{}/status", daemon.pid());
    let rss = status_kib(&status, "VmRSS");
    let peak = status_kib(&status, "VmHWM");
    drop(daemon);
    Ok((rss, peak))
}

/// A field of a /proc status file in KiB (0 when unavailable).
fn status_kib(path: &str, field: &str) -> u64 {
    std::fs::read_to_string(path)
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

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn dir_size(dir: &std::path::Path) -> std::io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

fn request(command: Command) -> CommandRequest {
    CommandRequest {
        request_id: None,
        source: "bench".to_string(),
        command,
    }
}

/// Fills a store with `tickets` walk-ins over the 100 days before today, each called and
/// finished, committing in batches of 1,000 commands. Returns the number of events.
fn build_history(
    catalog: &Arc<Catalog>,
    data: &std::path::Path,
    options: &StoreOptions,
    tickets: usize,
) -> Result<u64, Box<dyn std::error::Error>> {
    let store = Store::open(data, options)?;
    let mut engine = Engine::new(catalog.clone());
    let days = 100usize;
    let per_day = tickets.div_ceil(days);
    let today = catalog.calendar.day_of(SystemClock.now());
    let services = ["ausweis", "meldung", "fuehrerschein"];
    let desks = ["4", "3", "4", "1", "2"];
    let mut pending_commands = 0;
    let mut issued = 0usize;
    for d in (1..=days).rev() {
        let day = today.checked_sub(jiff::Span::new().days(d as i64))?;
        let mut now = catalog.calendar.start_of_day(day) + 8 * 60 * MINUTE;
        for desk in ["1", "2", "3", "4"] {
            engine.execute(
                &request(Command::OpenDesk {
                    desk: DeskId::new(desk),
                }),
                now,
            )?;
        }
        for i in 0..per_day {
            if issued == tickets {
                break;
            }
            now += 20_000;
            let service = ServiceId::new(services[i % services.len()]);
            engine.execute(
                &request(Command::WalkIn {
                    service,
                    priority: 1,
                }),
                now,
            )?;
            issued += 1;
            now += 20_000;
            // Serve with a desk that serves the service (4 serves all).
            let desk = DeskId::new(desks[i % desks.len()]);
            let _ = engine.execute(&request(Command::CallNext { desk }), now);
            pending_commands += 2;
            if pending_commands >= 1_000 {
                store.commit(&engine.take_pending())?;
                pending_commands = 0;
            }
        }
    }
    store.commit(&engine.take_pending())?;
    let events = engine.state().last_seq;
    store.close()?;
    Ok(events)
}

/// Sends `total` commands from `clients` concurrent tasks; returns acknowledged commands per
/// second and the sorted latencies.
async fn drive(
    handle: &EngineHandle,
    total: usize,
    clients: usize,
) -> Result<(f64, Vec<Duration>), Box<dyn std::error::Error>> {
    for desk in ["1", "2", "3", "4"] {
        let _ = handle
            .execute(request(Command::OpenDesk {
                desk: DeskId::new(desk),
            }))
            .await;
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let handle = handle.clone();
        let count = total / clients;
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(count);
            for i in 0..count {
                // Alternate a walk-in and a call: the two commands a busy morning consists of.
                let command = if i % 2 == 0 {
                    Command::WalkIn {
                        service: ServiceId::new("meldung"),
                        priority: 1,
                    }
                } else {
                    Command::CallNext {
                        desk: DeskId::new(((c % 4) + 1).to_string()),
                    }
                };
                let sent = Instant::now();
                let _ = handle.execute(request(command)).await;
                latencies.push(sent.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    Ok((latencies.len() as f64 / elapsed, latencies))
}

#[allow(
    clippy::disallowed_methods,
    reason = "the baseline measures raw sled flush, with and without the fsync"
)]
/// Raw sled with the store's settings: one insert of a typical event (300 bytes) + flush
/// (+ fdatasync of the log file) per operation.
fn raw_sled(
    dir: &std::path::Path,
    ops: usize,
    fsync: bool,
) -> Result<(f64, Vec<Duration>), Box<dyn std::error::Error>> {
    let db = common::raw_sled_db(dir)?;
    let log = std::fs::File::open(dir.join("db"))?;
    let value = vec![b'x'; 300];
    let mut latencies = Vec::with_capacity(ops);
    let started = Instant::now();
    for i in 0..ops as u64 {
        let t = Instant::now();
        db.insert(i.to_be_bytes(), value.as_slice())?;
        db.flush()?;
        if fsync {
            log.sync_data()?;
        }
        latencies.push(t.elapsed());
    }
    let rate = ops as f64 / started.elapsed().as_secs_f64();
    latencies.sort();
    Ok((rate, latencies))
}
