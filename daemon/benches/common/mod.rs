//! Helpers shared by the benchmarks.

use std::time::Duration;

/// The `p`-th percentile of sorted latencies.
pub fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

use std::error::Error;
use std::path::Path;
use std::process::Child;
use std::time::Instant;

use leitsystem::control::ControlClient;

/// A raw sled database with the store's settings (for baselines that measure sled alone).
#[allow(
    dead_code,
    reason = "each benchmark compiles this module; only the store and sync ones use raw sled"
)]
pub fn raw_sled_db(dir: &Path) -> sled::Result<sled::Db> {
    sled::Config::new()
        .path(dir)
        .cache_capacity(8 * 1024 * 1024)
        .mode(sled::Mode::HighThroughput)
        .flush_every_ms(None)
        .open()
}

/// Writes the demo config without its devices, on `data_dir`, followed by `extra` TOML.
pub fn write_config(path: &Path, data_dir: &Path, extra: &str) -> std::io::Result<()> {
    let core = leitsystem::config::DEMO_CONFIG
        .split("# --- devices ---")
        .next()
        .unwrap_or_default()
        .replace(
            "data_dir = \"/var/lib/leitsystem\"",
            &format!("data_dir = \"{}\"", data_dir.display()),
        );
    std::fs::write(path, format!("{core}\n{extra}"))
}

/// The real daemon, started for a benchmark; stopped with SIGTERM when dropped.
pub struct BenchDaemon {
    child: Child,
    /// A control connection.
    pub client: ControlClient,
}

impl BenchDaemon {
    /// Starts `leitsystemd run --config CONFIG` and waits (at most 60 s) for its socket.
    pub fn start(config: &Path, data_dir: &Path) -> Result<BenchDaemon, Box<dyn Error>> {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_leitsystemd"))
            .arg("run")
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "warn")
            .spawn()?;
        let socket = data_dir.join("control.sock");
        let started = Instant::now();
        loop {
            if let Ok(client) = ControlClient::connect(&socket) {
                return Ok(BenchDaemon { child, client });
            }
            if started.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                let _ = child.wait();
                return Err("the daemon did not start".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its process id.
    #[allow(
        dead_code,
        reason = "each benchmark compiles this module; only one reads the pid"
    )]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for BenchDaemon {
    fn drop(&mut self) {
        // SAFETY: signalling our own child process.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}
