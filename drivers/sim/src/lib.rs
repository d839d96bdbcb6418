//! `sim`: simulated devices, and the reference driver a newcomer copies.
//!
//! One plugin, four roles, chosen by the device config's `role`:
//! - **scanner**: listens on `127.0.0.1:<port>`; every line a client sends is a scanned code
//!   (at most 512 bytes). Client connect/disconnect are reported as `connection` messages.
//! - **buttons**: listens on `127.0.0.1:<port>`; every line `DESK ACTION` (e.g. `3 next`)
//!   is a button press with a unique `event_id`. Malformed lines are logged and ignored.
//! - **printer**: writes each `print` job to `<dir>/<job>.json`. While the file named by
//!   `paper_out_file` exists the paper is out: jobs fail with a clear reason and the status is
//!   reported; the switch is watched, so when the file goes away the cleared status is
//!   reported at once (and the daemon reprints what failed). While the file named by
//!   `offline_file` exists the printer is switched off: jobs are lost without an answer (as
//!   with a printer that loses power mid-job) and it reports itself offline; when the file
//!   goes away it reports itself online again.
//! - **display**: writes the latest display state to `<file>` (atomically: temp file + rename).
//! - buttons also take the host's `desks` messages (the desk lights): with `lights_file` the
//!   latest list is written there (atomically), as a real box would light its LEDs.
//!
//! Options (in the device's `options`): `port` (scanner, buttons; 0 = any free port, the bound
//! port is logged), `lights_file` (buttons), `dir`, `paper_out_file` and `offline_file`
//! (printer), `file` (display).
//!
//! Threads are started with [`Host::spawn`] (a panic becomes a `failed` message) and stopped in
//! [`Driver::stop`]; listeners poll a stop flag every 20 ms, so `destroy` returns promptly.
//!
//! Like every driver, it must never touch the store or MQTT, block in the host's `emit`, or let a
//! panic cross the ABI: it speaks only plugin messages.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use leitsystem_plugin::messages::{ButtonAction, Paper, Role};
use leitsystem_plugin::{DeviceConfig, Driver, Host, HostMessage, LogLevel, PluginMessage};

/// Longest accepted line from a simulated scanner or button box.
pub const MAX_LINE: usize = 512;
const POLL: Duration = Duration::from_millis(20);

/// A simulated device of any role.
pub struct SimDevice {
    id: String,
    role: Role,
    host: Host,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    printer: Option<PrinterOptions>,
    display_file: Option<PathBuf>,
    lights_file: Option<PathBuf>,
    paper_out: Arc<AtomicBool>,
    offline: Arc<AtomicBool>,
}

#[derive(Debug, Clone)]
struct PrinterOptions {
    dir: PathBuf,
    paper_out_file: Option<PathBuf>,
    offline_file: Option<PathBuf>,
}

fn option_str(config: &DeviceConfig, key: &str) -> Option<String> {
    config
        .options
        .get(key)
        .and_then(|v| v.as_str())
        .map(str::to_string)
}

fn required_path(config: &DeviceConfig, key: &str) -> Result<PathBuf, String> {
    option_str(config, key)
        .map(PathBuf::from)
        .ok_or_else(|| format!("option '{key}' (a path) is missing"))
}

impl Driver for SimDevice {
    fn create(config: DeviceConfig, host: Host) -> Result<Self, String> {
        let mut device = SimDevice {
            id: config.id.clone(),
            role: config.role,
            host,
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            printer: None,
            display_file: None,
            lights_file: option_str(&config, "lights_file")
                .filter(|_| config.role == Role::Buttons)
                .map(PathBuf::from),
            paper_out: Arc::new(AtomicBool::new(false)),
            offline: Arc::new(AtomicBool::new(false)),
        };
        match config.role {
            Role::Scanner | Role::Buttons => {
                let port = match config.options.get("port") {
                    Some(p) => p
                        .as_u64()
                        .and_then(|p| u16::try_from(p).ok())
                        .ok_or_else(|| format!("option 'port' must be 0..=65535, not {p}"))?,
                    None => return Err("option 'port' is missing".to_string()),
                };
                let listener = TcpListener::bind(("127.0.0.1", port))
                    .map_err(|e| format!("cannot listen on 127.0.0.1:{port}: {e}"))?;
                listener
                    .set_nonblocking(true)
                    .map_err(|e| format!("cannot configure the listener: {e}"))?;
                let bound = listener.local_addr().map_or(port, |a| a.port());
                host.log(
                    LogLevel::Info,
                    format!(
                        "{} {} listening on 127.0.0.1:{bound}",
                        config.role.as_str(),
                        config.id
                    ),
                );
                let stop = device.stop.clone();
                let role = config.role;
                let id = config.id.clone();
                let thread = host
                    .spawn(&format!("sim-{}", config.id), move || {
                        serve(listener, role, &id, host, &stop)
                    })
                    .map_err(|e| format!("cannot start a thread: {e}"))?;
                device.threads.push(thread);
            }
            Role::Printer => {
                let dir = required_path(&config, "dir")?;
                std::fs::create_dir_all(&dir)
                    .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
                device.printer = Some(PrinterOptions {
                    dir,
                    paper_out_file: option_str(&config, "paper_out_file").map(PathBuf::from),
                    offline_file: option_str(&config, "offline_file").map(PathBuf::from),
                });
                device.report_paper(true);
                let switches = device.printer.as_ref().map(|p| {
                    (
                        p.paper_out_file.clone().unwrap_or_default(),
                        p.offline_file.clone().unwrap_or_default(),
                    )
                });
                if let Some((paper_switch, offline_switch)) =
                    switches.filter(|(p, o)| !p.as_os_str().is_empty() || !o.as_os_str().is_empty())
                {
                    let (host, stop, paper_out, offline) = (
                        device.host,
                        device.stop.clone(),
                        device.paper_out.clone(),
                        device.offline.clone(),
                    );
                    let thread = device
                        .host
                        .spawn(&format!("sim-{}", config.id), move || {
                            while !stop.load(Ordering::Relaxed) {
                                let off = !offline_switch.as_os_str().is_empty()
                                    && offline_switch.exists();
                                if offline.swap(off, Ordering::Relaxed) != off {
                                    host.emit(&PluginMessage::PrinterStatus {
                                        paper: if paper_out.load(Ordering::Relaxed) {
                                            Paper::Out
                                        } else {
                                            Paper::Ok
                                        },
                                        cover_open: false,
                                        online: !off,
                                    });
                                }
                                check_paper(&host, &paper_switch, &paper_out, false);
                                std::thread::sleep(POLL * 5);
                            }
                        })
                        .map_err(|e| format!("cannot start a thread: {e}"))?;
                    device.threads.push(thread);
                }
            }
            Role::Display => {
                device.display_file = Some(required_path(&config, "file")?);
            }
        }
        Ok(device)
    }

    fn handle(&mut self, message: HostMessage) -> Result<(), String> {
        match (message, self.role) {
            (HostMessage::Print { job, document }, Role::Printer) => {
                if self.offline.load(Ordering::Relaxed) {
                    // Switched off: the job is lost, nobody answers.
                    return Ok(());
                }
                self.report_paper(false);
                if self.paper_out.load(Ordering::Relaxed) {
                    self.host.emit(&PluginMessage::PrintFailed {
                        job,
                        reason: "paper out".to_string(),
                    });
                    return Ok(());
                }
                let dir = self
                    .printer
                    .as_ref()
                    .map(|p| p.dir.clone())
                    .unwrap_or_default();
                let file = dir.join(format!("{}.json", sanitize(&job)));
                let body = serde_json::to_vec_pretty(&document).unwrap_or_default();
                match write_atomically(&file, &body) {
                    Ok(()) => self.host.emit(&PluginMessage::PrintDone { job }),
                    Err(e) => self.host.emit(&PluginMessage::PrintFailed {
                        job,
                        reason: format!("cannot write {}: {e}", file.display()),
                    }),
                }
                Ok(())
            }
            (HostMessage::Display { state }, Role::Display) => {
                let file = self.display_file.clone().unwrap_or_default();
                let body = serde_json::to_vec_pretty(&state).unwrap_or_default();
                write_atomically(&file, &body)
                    .map_err(|e| format!("cannot write {}: {e}", file.display()))
            }
            (HostMessage::Desks { desks }, Role::Buttons) => match &self.lights_file {
                Some(file) => {
                    let body = serde_json::to_vec_pretty(&desks).unwrap_or_default();
                    write_atomically(file, &body)
                        .map_err(|e| format!("cannot write {}: {e}", file.display()))
                }
                None => Ok(()),
            },
            (message, role) => Err(format!(
                "a {} takes no '{}' messages",
                role.as_str(),
                message.kind()
            )),
        }
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        self.host
            .log(LogLevel::Info, format!("{} stopped", self.id));
    }
}

impl SimDevice {
    /// Reads the paper-out switch and reports it when it changed (or `always`).
    fn report_paper(&mut self, always: bool) {
        if let Some(switch) = self
            .printer
            .as_ref()
            .and_then(|p| p.paper_out_file.as_ref())
        {
            check_paper(&self.host, switch, &self.paper_out, always);
        } else if always {
            check_paper(&self.host, Path::new(""), &self.paper_out, true);
        }
    }
}

/// Reads the paper-out switch file and reports the status when it changed (or `always`).
fn check_paper(host: &Host, switch: &Path, paper_out: &AtomicBool, always: bool) {
    let out = !switch.as_os_str().is_empty() && switch.exists();
    if paper_out.swap(out, Ordering::Relaxed) != out || always {
        host.emit(&PluginMessage::PrinterStatus {
            paper: if out { Paper::Out } else { Paper::Ok },
            cover_open: false,
            online: true,
        });
    }
}

fn sanitize(job: &str) -> String {
    job.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn write_atomically(file: &Path, body: &[u8]) -> std::io::Result<()> {
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, body)?;
    std::fs::rename(&tmp, file)
}

fn parse_action(word: &str) -> Option<ButtonAction> {
    Some(match word {
        "next" => ButtonAction::Next,
        "recall" => ButtonAction::Recall,
        "start" => ButtonAction::Start,
        "finish" => ButtonAction::Finish,
        "no_show" | "no-show" => ButtonAction::NoShow,
        "park" => ButtonAction::Park,
        "resume" => ButtonAction::Resume,
        "open" => ButtonAction::Open,
        "pause" => ButtonAction::Pause,
        "close" => ButtonAction::Close,
        "alarm" => ButtonAction::Alarm,
        _ => return None,
    })
}

/// Accepts clients one at a time and turns their lines into messages until `stop`.
fn serve(listener: TcpListener, role: Role, id: &str, host: Host, stop: &AtomicBool) {
    // Unique across restarts of the device: a repeated delivery has one effect, a new press
    // never collides with one from before a restart.
    let boot = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let presses = AtomicU64::new(0);
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, peer)) => {
                host.emit(&PluginMessage::Connection {
                    connected: true,
                    detail: Some(format!("client {peer}")),
                });
                read_lines(stream, role, id, host, stop, boot, &presses);
                host.emit(&PluginMessage::Connection {
                    connected: false,
                    detail: Some(format!("client {peer} left")),
                });
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(POLL),
            Err(e) => {
                host.log(LogLevel::Warn, format!("accept failed: {e}"));
                std::thread::sleep(POLL);
            }
        }
    }
}

fn read_lines(
    stream: TcpStream,
    role: Role,
    id: &str,
    host: Host,
    stop: &AtomicBool,
    boot: u128,
    presses: &AtomicU64,
) {
    if stream.set_nonblocking(false).is_err() || stream.set_read_timeout(Some(POLL)).is_err() {
        return;
    }
    let mut reply = match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    };
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => return,
            Ok(_) if line.ends_with(b"\n") => {
                let text = String::from_utf8_lossy(&line).trim().to_string();
                line.clear();
                if text.is_empty() {
                    continue;
                }
                let answer = handle_line(&text, role, id, host, boot, presses);
                let _ = reply.write_all(answer.as_bytes());
            }
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
        if line.len() > MAX_LINE {
            host.log(
                LogLevel::Warn,
                format!("{id}: line longer than {MAX_LINE} bytes dropped"),
            );
            let _ = reply.write_all(b"ERR line too long\n");
            line.clear();
        }
    }
}

fn handle_line(
    text: &str,
    role: Role,
    id: &str,
    host: Host,
    boot: u128,
    presses: &AtomicU64,
) -> String {
    match role {
        Role::Scanner => {
            host.emit(&PluginMessage::Scanned {
                code: text.to_string(),
            });
            "OK\n".to_string()
        }
        _ => {
            let mut words = text.split_whitespace();
            match (
                words.next(),
                words.next().and_then(parse_action),
                words.next(),
            ) {
                (Some(desk), Some(action), None) => {
                    let n = presses.fetch_add(1, Ordering::Relaxed) + 1;
                    host.emit(&PluginMessage::Button {
                        desk: desk.to_string(),
                        action,
                        event_id: format!("{id}-{boot}-{n}"),
                    });
                    "OK\n".to_string()
                }
                _ => {
                    host.log(
                        LogLevel::Warn,
                        format!("{id}: ignored malformed line '{text}'"),
                    );
                    "ERR expected 'DESK ACTION' (next, recall, start, finish, no_show, park, open, pause, close)\n"
                        .to_string()
                }
            }
        }
    }
}

leitsystem_plugin::export_plugin!(
    SimDevice,
    name: "sim",
    version: env!("CARGO_PKG_VERSION"),
    roles: "scanner,buttons,printer,display"
);
