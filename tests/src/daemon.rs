//! Running the real `leitsystemd` binary in tests: start it on a config and data directory,
//! wait until its control socket answers, drive it, kill or stop it.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use leitsystem::control::{ControlClient, ControlRequest, ControlResponse};
use leitsystem::domain::{
    BookingId, BookingInput, Command as EngineCommand, DeskId, EventRecord, Outcome, PersonalData,
    ServiceId,
};
use leitsystem::plugin_host::DeviceHealth;

/// The daemon binary of the same build profile as the running test.
///
/// `tests/run` (and `.ci/run`) build it before the tests; when run by hand, build it with
/// `cargo build -p leitsystemd` first.
pub fn daemon_binary() -> anyhow::Result<PathBuf> {
    workspace_binary("leitsystemd", "leitsystemd")
}

/// The website simulator built next to the daemon (`cargo build -p leitsystem-website-sim`).
pub fn website_sim_binary() -> anyhow::Result<PathBuf> {
    workspace_binary("leitsystem-website-sim", "leitsystem-website-sim")
}

/// Binary `name` of package `package` in the target directory of the running test.
fn workspace_binary(name: &str, package: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the test binary")?;
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("the test binary has no target directory")?;
    let binary = profile_dir.join(name);
    if !binary.is_file() {
        bail!(
            "{} is missing: build it first with `cargo build -p {package}` \
             (the README's test command does this)",
            binary.display()
        );
    }
    Ok(binary)
}

/// Writes the demo config without its simulated devices, with `data_dir` as its data
/// directory; returns its path.
pub fn write_demo_config(dir: &Path, data_dir: &Path) -> anyhow::Result<PathBuf> {
    let text = demo_config_text(&data_dir.display().to_string());
    let path = dir.join("leitsystem.toml");
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// The demo config's text without its simulated devices, with `data_dir` as its data
/// directory.
pub fn demo_config_text(data_dir: &str) -> String {
    leitsystem::config::DEMO_CONFIG
        .split("# --- devices ---")
        .next()
        .unwrap_or_default()
        .replace(
            "data_dir = \"/var/lib/leitsystem\"",
            &format!("data_dir = \"{data_dir}\""),
        )
}

/// A running daemon.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    /// Its control socket.
    pub socket: PathBuf,
    /// Where its stderr goes.
    pub log: PathBuf,
}

impl Daemon {
    /// Starts `leitsystemd run --config CONFIG --data-dir DATA` with extra environment and
    /// waits until it answers on its control socket.
    pub fn start(config: &Path, data_dir: &Path, env: &[(&str, &str)]) -> anyhow::Result<Daemon> {
        let mut daemon = Self::spawn(config, data_dir, env)?;
        daemon.wait_ready(Duration::from_secs(20))?;
        Ok(daemon)
    }

    /// Starts the daemon without waiting until it is ready (to kill it during startup).
    pub fn spawn(config: &Path, data_dir: &Path, env: &[(&str, &str)]) -> anyhow::Result<Daemon> {
        let log = data_dir.with_extension("log");
        let log_file = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("opening {}", log.display()))?;
        let mut command = Command::new(daemon_binary()?);
        command
            .arg("run")
            .arg("--config")
            .arg(config)
            .arg("--data-dir")
            .arg(data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .env("RUST_LOG", "warn");
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn().context("starting leitsystemd")?;
        Ok(Daemon {
            child,
            socket: data_dir.join("control.sock"),
            log,
        })
    }

    fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "leitsystemd exited with {status} before it was ready; log:\n{}",
                    self.log_tail()
                );
            }
            if let Ok(mut client) = ControlClient::connect(&self.socket)
                && client.request(&ControlRequest::State).is_ok_and(|r| r.ok)
            {
                return Ok(());
            }
            if started.elapsed() > timeout {
                let _ = self.child.kill();
                bail!(
                    "leitsystemd did not answer within {timeout:?}; log:\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The last lines the daemon logged.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// A new control connection.
    pub fn client(&self) -> anyhow::Result<ControlClient> {
        ControlClient::connect(&self.socket)
            .with_context(|| format!("connecting to {}", self.socket.display()))
    }

    /// The exit status, if the daemon has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, then reap.
    pub fn kill9(mut self) -> anyhow::Result<()> {
        let _ = self.child.kill();
        self.child.wait()?;
        Ok(())
    }

    /// SIGTERM, then wait (bounded) for the exit status.
    pub fn terminate(mut self) -> anyhow::Result<ExitStatus> {
        let pid = libc::pid_t::try_from(self.child.id()).context("pid out of range")?;
        // SAFETY: sending a signal to our own child process has no memory-safety impact.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if started.elapsed() > Duration::from_secs(20) {
                let _ = self.child.kill();
                bail!("leitsystemd did not stop within 20 s after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Sends one request on a fresh connection.
pub fn request(daemon: &Daemon, request: &ControlRequest) -> anyhow::Result<ControlResponse> {
    Ok(daemon.client()?.request(request)?)
}

/// The whole durable log, read through the daemon.
pub fn all_events(daemon: &Daemon) -> anyhow::Result<Vec<EventRecord>> {
    events_from(daemon, 1)
}

/// The durable log from `first_seq` on, read through the daemon.
pub fn events_from(daemon: &Daemon, first_seq: u64) -> anyhow::Result<Vec<EventRecord>> {
    let mut client = daemon.client()?;
    let mut out: Vec<EventRecord> = Vec::new();
    loop {
        let from_seq = out.last().map_or(first_seq, |r| r.seq + 1);
        let response = client.request(&ControlRequest::Events {
            from_seq,
            limit: 10_000,
        })?;
        let batch = response.events.context("no events in the answer")?;
        if batch.is_empty() {
            return Ok(out);
        }
        out.extend(batch);
    }
}

/// Log entries grouped by the request id that caused them.
pub fn events_by_request(events: &[EventRecord]) -> BTreeMap<String, Vec<EventRecord>> {
    let mut map: BTreeMap<String, Vec<EventRecord>> = BTreeMap::new();
    for record in events {
        if let Some(id) = &record.request_id {
            map.entry(id.clone()).or_default().push(record.clone());
        }
    }
    map
}

/// Asks the daemon to replay its log and compare; fails with the problems found.
pub fn assert_consistent(daemon: &Daemon) -> anyhow::Result<()> {
    let response = request(daemon, &ControlRequest::Verify)?;
    let problems = response.problems.unwrap_or_default();
    if !response.ok || !problems.is_empty() {
        bail!(
            "the store is inconsistent: {problems:#?} {:?}",
            response.error
        );
    }
    Ok(())
}

/// The directory holding the built binaries and plugins (`target/<profile>`).
pub fn build_dir() -> anyhow::Result<PathBuf> {
    Ok(daemon_binary()?
        .parent()
        .context("the daemon binary has no directory")?
        .to_path_buf())
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}

/// Writes the demo config without its devices plus `[plugins] dirs = [<build dir>]` and the
/// given `[[device]]` entries; returns its path.
pub fn write_config_with_devices(
    dir: &Path,
    data_dir: &Path,
    devices: &str,
) -> anyhow::Result<PathBuf> {
    let path = write_demo_config(dir, data_dir)?;
    let mut text = std::fs::read_to_string(&path)?;
    text.push_str(&format!(
        "\n[plugins]\ndirs = [\"{}\"]\n\n{devices}\n",
        build_dir()?.display()
    ));
    std::fs::write(&path, text)?;
    Ok(path)
}

/// One `[[device]]` entry of a config; `options` is the inside of its inline table.
pub fn device_entry(id: &str, plugin: &str, role: &str, options: &str) -> String {
    format!(
        "\n[[device]]\nid = \"{id}\"\nplugin = \"{plugin}\"\nrole = \"{role}\"\noptions = {{ {options} }}\n"
    )
}

/// The simulated scanner (`drivers/sim`) listening on 127.0.0.1:`port`.
pub fn sim_scanner(port: u16) -> String {
    device_entry(
        "scanner",
        "libleitsystem_sim.so",
        "scanner",
        &format!("port = {port}"),
    )
}

/// Compiles a C plugin source with the system compiler (`-I plugins/include`); the error
/// names the Debian package when `cc` is missing.
pub fn compile_c_plugin(source: &Path, out: &Path, defines: &[&str]) -> anyhow::Result<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut command = Command::new("cc");
    command
        .args(["-shared", "-fPIC", "-O2", "-D_GNU_SOURCE"])
        .arg("-I")
        .arg(root.join("plugins/include"));
    for define in defines {
        command.arg(format!("-D{define}"));
    }
    let status = command
        .arg(root.join(source))
        .arg("-o")
        .arg(out)
        .status()
        .map_err(|e| anyhow::anyhow!("cannot run `cc` ({e}): install the Debian package gcc"))?;
    if !status.success() {
        bail!("compiling {} failed", source.display());
    }
    Ok(out.to_path_buf())
}

impl Drop for Daemon {
    /// A daemon a test left running (e.g. after a failed assertion) is killed, so it cannot
    /// linger and reconnect to ports a later test reuses.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Executes a command on the daemon; an error when it is refused.
pub fn execute(daemon: &Daemon, command: EngineCommand) -> anyhow::Result<Outcome> {
    let response = request(
        daemon,
        &ControlRequest::Execute {
            request_id: None,
            command,
        },
    )?;
    if !response.ok {
        bail!("command refused: {:?}", response.error);
    }
    response.outcome.context("no outcome in the answer")
}

/// Opens `desk` and calls its next visitor ("next"); the call's outcome.
pub fn open_and_call_next(daemon: &Daemon, desk: &str) -> anyhow::Result<Outcome> {
    execute(
        daemon,
        EngineCommand::OpenDesk {
            desk: DeskId::new(desk),
        },
    )?;
    execute(
        daemon,
        EngineCommand::CallNext {
            desk: DeskId::new(desk),
        },
    )
}

/// Pulls a walk-in ticket for `service` (priority 1); returns its call number.
pub fn walk_in(daemon: &Daemon, service: &str) -> anyhow::Result<String> {
    match execute(
        daemon,
        EngineCommand::WalkIn {
            service: ServiceId::new(service),
            priority: 1,
        },
    )? {
        Outcome::TicketIssued { ticket, .. } => Ok(ticket.to_string()),
        other => bail!("walk-in answered {other:?}"),
    }
}

/// Device health as `leitsystemd ctl devices` shows it.
pub fn devices(daemon: &Daemon) -> anyhow::Result<Vec<DeviceHealth>> {
    let response = request(daemon, &ControlRequest::Devices)
        .with_context(|| format!("daemon log:\n{}", daemon.log_tail()))?;
    response.devices.context("no devices in the answer")
}

/// One device's health.
pub fn device(daemon: &Daemon, id: &str) -> anyhow::Result<DeviceHealth> {
    devices(daemon)?
        .into_iter()
        .find(|d| d.id == id)
        .with_context(|| format!("no device {id}"))
}

/// `target/test-artifacts/<name>/` (created): where tests keep screenshots and prints to look at.
pub fn artifacts(name: &str) -> anyhow::Result<PathBuf> {
    let dir = daemon_binary()?
        .parent()
        .and_then(Path::parent)
        .context("no target directory")?
        .join("test-artifacts")
        .join(name);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Books `id` for `service` with its slot now: always today (a slot minutes ahead falls on
/// tomorrow just before midnight, and check-in is then refused as the wrong day) and within
/// the check-in window.
pub fn book(daemon: &Daemon, id: &str, service: &str) -> anyhow::Result<()> {
    book_named(daemon, id, service, None)
}

/// [`book`] with the visitor's name as personal data.
pub fn book_named(
    daemon: &Daemon,
    id: &str,
    service: &str,
    name: Option<&str>,
) -> anyhow::Result<()> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    execute(
        daemon,
        EngineCommand::UpsertBooking {
            booking: BookingInput {
                id: BookingId::new(id),
                version: 1,
                service: ServiceId::new(service),
                slot_start: now,
                duration_minutes: 15,
                desk: None,
                personal: name.map(|name| PersonalData {
                    name: Some(name.to_string()),
                    note: None,
                }),
                status: Default::default(),
                refusal: None,
            },
        },
    )?;
    Ok(())
}

/// Waits (bounded) until `check` returns Some.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let started = Instant::now();
    loop {
        if let Some(value) = check()? {
            return Ok(value);
        }
        if started.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends one line to a simulated device's TCP port and returns its answer.
pub fn device_line(port: u16, line: &str) -> anyhow::Result<String> {
    use std::io::{BufRead, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(format!("{line}\n").as_bytes())?;
    let mut answer = String::new();
    std::io::BufReader::new(stream).read_line(&mut answer)?;
    Ok(answer.trim().to_string())
}

/// A plain HTTP/1.1 GET on loopback; the whole response, headers included.
pub fn http_get(url: &str) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").context("http only")?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut stream = std::net::TcpStream::connect(host)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}
