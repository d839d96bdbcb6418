//! A real Mosquitto broker for the sync tests: on 127.0.0.1 with a free port, anonymous,
//! persistence in a temporary directory (retained messages and persistent sessions survive a
//! restart), default limits (`max_queued_messages` 1000, `max_inflight_messages` 20).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The broker binary: on PATH or in /usr/sbin (Debian puts it there).
pub fn mosquitto_binary() -> anyhow::Result<PathBuf> {
    for dir in std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/sbin")])
    {
        let candidate = dir.join("mosquitto");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!("`mosquitto` is missing: install the Debian package mosquitto (tests/run does)")
}

/// `mosquitto_sub`, or an error naming its package.
pub fn mosquitto_sub_binary() -> anyhow::Result<PathBuf> {
    for dir in std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
    {
        let candidate = dir.join("mosquitto_sub");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!("`mosquitto_sub` is missing: install the Debian package mosquitto-clients")
}

/// A running broker; stopped when dropped.
#[derive(Debug)]
pub struct Mosquitto {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: PathBuf,
}

impl Mosquitto {
    /// Starts a broker with its config and persistence in `dir`.
    pub fn start(dir: &Path) -> anyhow::Result<Mosquitto> {
        let port = crate::daemon::free_port()?;
        std::fs::create_dir_all(dir)?;
        let mut broker = Mosquitto {
            child: None,
            port,
            dir: dir.to_path_buf(),
        };
        broker.launch()?;
        Ok(broker)
    }

    fn launch(&mut self) -> anyhow::Result<()> {
        let config = self.dir.join("mosquitto.conf");
        std::fs::write(
            &config,
            format!(
                "listener {} 127.0.0.1\nallow_anonymous true\npersistence true\n\
                 persistence_location {}/\nautosave_interval 1\n",
                self.port,
                self.dir.display()
            ),
        )?;
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("mosquitto.log"))?;
        let child = Command::new(mosquitto_binary()?)
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting mosquitto")?;
        self.child = Some(child);
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if started.elapsed() > Duration::from_secs(10) {
                bail!(
                    "mosquitto did not accept connections on port {} within 10 s",
                    self.port
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Stops the broker (SIGTERM: it saves its persistence file), waiting for it to exit.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            let pid = libc::pid_t::try_from(child.id())?;
            // SAFETY: signalling our own child process.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
            let started = Instant::now();
            while child.try_wait()?.is_none() {
                if started.elapsed() > Duration::from_secs(10) {
                    let _ = child.kill();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    /// Starts it again on the same port with the same persistence.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop()?;
        self.launch()
    }

    /// The `[mqtt]` section for a daemon using this broker (fast reconnects for tests).
    pub fn mqtt_section(&self) -> String {
        format!(
            "\n[mqtt]\nhost = \"127.0.0.1\"\nport = {}\nreconnect_min_ms = 50\nreconnect_max_ms = 500\n",
            self.port
        )
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
