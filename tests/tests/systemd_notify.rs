//! `Type=notify` as systemd sees it: the real daemon talks to a real unix datagram socket
//! given as `NOTIFY_SOCKET` (what systemd does), with `WATCHDOG_USEC` set.
//!
//! - `READY=1` only once everything is up: at that moment the control socket answers, the web
//!   server accepts, the device plugin runs.
//! - `WATCHDOG=1` at a third of the watchdog timeout.
//! - A hung engine (its thread stopped with ptrace, the rest of the process running) gets no
//!   more `WATCHDOG=1`, so systemd would restart it; pings resume when it runs again.
//! - `STOPPING=1` on SIGTERM, and a clean exit.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use leitsystem::control::{ControlClient, ControlRequest};
use leitsystem::plugin_host::DeviceState;
use leitsystem_tests::daemon::{
    Daemon, compile_c_plugin, device_entry, devices, free_port, sim_scanner,
    write_config_with_devices,
};

/// 600 ms: pings every 200 ms, so a few seconds show the rate.
const WATCHDOG_USEC: u64 = 600_000;

/// The next message (one datagram), or `None` after `timeout`.
fn next_message(socket: &UnixDatagram, timeout: Duration) -> anyhow::Result<Option<String>> {
    if timeout.is_zero() {
        return Ok(None);
    }
    socket.set_read_timeout(Some(timeout))?;
    let mut buffer = [0u8; 4096];
    match socket.recv(&mut buffer) {
        Ok(n) => Ok(Some(String::from_utf8_lossy(&buffer[..n]).into_owned())),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e).context("reading the notify socket"),
    }
}

/// The messages that arrive within `window`.
fn receive_for(socket: &UnixDatagram, window: Duration) -> anyhow::Result<Vec<String>> {
    let until = Instant::now() + window;
    let mut messages = Vec::new();
    while let Some(message) = next_message(socket, until.saturating_duration_since(Instant::now()))?
    {
        messages.push(message);
    }
    Ok(messages)
}

/// Waits for a message with the line `line`; returns every message up to it (later ones stay
/// in the socket).
fn receive_until(
    socket: &UnixDatagram,
    line: &str,
    timeout: Duration,
    daemon: &Daemon,
) -> anyhow::Result<Vec<String>> {
    let until = Instant::now() + timeout;
    let mut seen = Vec::new();
    while let Some(message) = next_message(socket, until.saturating_duration_since(Instant::now()))?
    {
        let found = message.lines().any(|l| l == line);
        seen.push(message);
        if found {
            return Ok(seen);
        }
    }
    bail!(
        "no {line} within {timeout:?}; got {seen:?}; log:\n{}",
        daemon.log_tail()
    )
}

fn watchdog_pings(messages: &[String]) -> usize {
    messages
        .iter()
        .filter(|m| m.lines().any(|l| l == "WATCHDOG=1"))
        .count()
}

/// The thread of `pid` named `name` (its `comm`).
fn thread_named(pid: u32, name: &str) -> anyhow::Result<libc::pid_t> {
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let entry = entry?;
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.trim() == name {
            return entry
                .file_name()
                .to_string_lossy()
                .parse()
                .context("thread id");
        }
    }
    bail!("leitsystemd ({pid}) has no thread named {name:?}")
}

/// One thread stopped by ptrace while the rest of its process runs: a hung thread.
struct StoppedThread(libc::pid_t);

impl StoppedThread {
    fn stop(tid: libc::pid_t) -> anyhow::Result<StoppedThread> {
        // SAFETY: ptrace on a thread of our own child; no memory of this process is touched.
        let seized = unsafe { libc::ptrace(libc::PTRACE_SEIZE, tid, 0, 0) };
        if seized != 0 {
            bail!(
                "ptrace(PTRACE_SEIZE) on the engine thread failed: {} (the test needs \
                 ptrace on its own child: root or kernel.yama.ptrace_scope <= 1)",
                std::io::Error::last_os_error()
            );
        }
        // SAFETY: as above.
        let interrupted = unsafe { libc::ptrace(libc::PTRACE_INTERRUPT, tid, 0, 0) };
        if interrupted != 0 {
            bail!(
                "ptrace(PTRACE_INTERRUPT): {}",
                std::io::Error::last_os_error()
            );
        }
        let mut status = 0;
        // SAFETY: waiting for the tracee's stop; `status` is a valid out pointer.
        let waited = unsafe { libc::waitpid(tid, &mut status, libc::__WALL) };
        if waited != tid || !libc::WIFSTOPPED(status) {
            bail!("the engine thread did not stop (waitpid {waited}, status {status:#x})");
        }
        Ok(StoppedThread(tid))
    }

    fn resume(self) -> anyhow::Result<()> {
        let tid = self.0;
        std::mem::forget(self);
        // SAFETY: detaching our tracee lets it run on.
        let detached = unsafe { libc::ptrace(libc::PTRACE_DETACH, tid, 0, 0) };
        if detached != 0 {
            bail!("ptrace(PTRACE_DETACH): {}", std::io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for StoppedThread {
    /// A failed assertion must not leave the thread traced: a killed daemon with a traced
    /// thread cannot be reaped until its tracer lets go.
    fn drop(&mut self) {
        // SAFETY: as in `resume`.
        unsafe {
            libc::ptrace(libc::PTRACE_DETACH, self.0, 0, 0);
        }
    }
}

fn start(dir: &Path, socket_path: &Path) -> anyhow::Result<(Daemon, u16)> {
    let data = dir.join("data");
    let web_port = free_port()?;
    let scanner_port = free_port()?;
    let config = write_config_with_devices(
        dir,
        &data,
        &format!(
            "[web]\nlisten = \"127.0.0.1:{web_port}\"\n{}",
            sim_scanner(scanner_port)
        ),
    )?;
    // A device that takes 1.5 s to open: READY must wait for it.
    let slow = compile_c_plugin(
        Path::new("plugins/tests/c/echo_plugin.c"),
        &dir.join("slow.so"),
        &["TEST_SLOW_CREATE_MS=1500"],
    )?;
    let mut text = std::fs::read_to_string(&config)?;
    text.push_str(&device_entry(
        "slow-display",
        &slow.display().to_string(),
        "display",
        "",
    ));
    std::fs::write(&config, text)?;
    let usec = WATCHDOG_USEC.to_string();
    let notify = socket_path.display().to_string();
    let daemon = Daemon::spawn(
        &config,
        &data,
        &[
            ("NOTIFY_SOCKET", notify.as_str()),
            ("WATCHDOG_USEC", usec.as_str()),
        ],
    )?;
    Ok((daemon, web_port))
}

#[test]
fn ready_after_start_up_watchdog_while_the_engine_answers_stopping_on_sigterm() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).context("binding the notify socket")?;
    let (daemon, web_port) = start(dir.path(), &socket_path)?;

    let before_ready = receive_until(&socket, "READY=1", Duration::from_secs(30), &daemon)?;
    // At READY everything answers, without waiting.
    let mut control = ControlClient::connect(&daemon.socket)
        .context("the control socket does not accept at READY=1")?;
    let state = control.request(&ControlRequest::State)?;
    if !state.ok {
        bail!("the control socket refused a state request at READY=1: {state:?}");
    }
    std::net::TcpStream::connect(("127.0.0.1", web_port))
        .context("the web server does not accept at READY=1")?;
    let at_ready = devices(&daemon)?;
    for id in ["scanner", "slow-display"] {
        let device = at_ready
            .iter()
            .find(|d| d.id == id)
            .with_context(|| format!("no {id} in `ctl devices` at READY=1: {at_ready:?}"))?;
        if device.state != DeviceState::Running {
            bail!("the {id} plugin is {:?} at READY=1", device.state);
        }
    }
    let statuses: Vec<&str> = before_ready
        .iter()
        .flat_map(|m| m.lines())
        .filter_map(|l| l.strip_prefix("STATUS="))
        .collect();
    for expected in ["Opening the store", "Starting the devices", "Ready: site "] {
        if !statuses.iter().any(|s| s.starts_with(expected)) {
            bail!("no STATUS line starting {expected:?} before READY: {statuses:?}");
        }
    }

    // Pings every 200 ms: about 15 in 3 s.
    let running = receive_for(&socket, Duration::from_secs(3))?;
    let pings = watchdog_pings(&running);
    if !(8..=20).contains(&pings) {
        bail!("{pings} WATCHDOG=1 in 3 s at WATCHDOG_USEC={WATCHDOG_USEC} (expected ~15)");
    }
    let status = running
        .iter()
        .flat_map(|m| m.lines())
        .any(|l| l.starts_with("STATUS=Running: 0 waiting"));
    if !status {
        bail!("no running status line (STATUS=Running: ...): {running:?}");
    }

    // The engine hangs; the rest of the process (runtime, web, control socket) runs on.
    let engine = thread_named(daemon.pid(), "engine")?;
    let stopped = StoppedThread::stop(engine)?;
    // A ping answered just before the stop may still arrive.
    let settling = receive_for(&socket, Duration::from_millis(300))?;
    let hung = receive_for(&socket, Duration::from_secs(2))?;
    if watchdog_pings(&hung) != 0 {
        bail!(
            "WATCHDOG=1 sent {} times while the engine thread was stopped",
            watchdog_pings(&hung)
        );
    }
    let said = settling
        .iter()
        .chain(&hung)
        .flat_map(|m| m.lines())
        .any(|l| l.starts_with("STATUS=Engine not answering"));
    if !said {
        bail!("no status line saying the engine does not answer: {hung:?}");
    }
    stopped.resume()?;
    let again = receive_for(&socket, Duration::from_secs(2))?;
    if watchdog_pings(&again) < 3 {
        bail!(
            "only {} WATCHDOG=1 in 2 s after the engine ran again",
            watchdog_pings(&again)
        );
    }

    // SIGTERM: STOPPING=1, then a clean exit.
    let pid = libc::pid_t::try_from(daemon.pid())?;
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let stopping = receive_until(&socket, "STOPPING=1", Duration::from_secs(10), &daemon)?;
    let after_stop = receive_for(&socket, Duration::from_millis(500))?;
    let last = stopping.last().cloned().unwrap_or_default();
    if watchdog_pings(&after_stop) > 1 {
        bail!("WATCHDOG=1 went on after STOPPING=1: {after_stop:?}");
    }
    if !last.lines().any(|l| l.starts_with("STATUS=Stopping")) {
        bail!("STOPPING=1 came without a status line: {last:?}");
    }
    let exit = daemon.terminate()?;
    if !exit.success() {
        bail!("leitsystemd exited with {exit} after SIGTERM");
    }
    Ok(())
}
