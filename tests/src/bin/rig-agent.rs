//! The hardware rig's agent: runs inside the QEMU VM (started by `tests/rig/init`) and plays
//! the device side of the USB gadgets for the test outside: keystrokes into `/dev/hidg0`,
//! scanner lines into `/dev/ttyGS0`, an ESC/POS printer on `/dev/g_printer0` (and one on
//! 127.0.0.1 to compare with). It also starts the real daemon and passes control-socket lines
//! through. One JSON request per line on the virtio-serial port named in argv[1], one answer
//! per line (`leitsystem_tests::rig::protocol`).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use leitsystem_tests::escpos::{Paper, PrinterEmulator};
use leitsystem_tests::rig::protocol::{
    GpioStep, HELLO, PrinterLink, Request, Response, from_hex, to_hex,
};

/// A key watcher: its stop flag, its count and its thread.
struct Watcher {
    stop: Arc<AtomicBool>,
    presses: Arc<AtomicI64>,
    thread: JoinHandle<Result<(), String>>,
}

/// What the agent holds between requests.
struct Agent {
    usb_printer: PrinterEmulator,
    tcp_printer: PrinterEmulator,
    daemon: Option<Child>,
    watcher: Option<Watcher>,
}

fn main() -> std::process::ExitCode {
    let Some(port) = std::env::args().nth(1) else {
        eprintln!("usage: rig-agent /dev/vportNpM");
        return std::process::ExitCode::from(2);
    };
    match run(&port) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rig-agent: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(port: &str) -> Result<(), String> {
    let file = std::fs::File::options()
        .read(true)
        .write(true)
        .open(port)
        .map_err(|e| format!("opening {port}: {e}"))?;
    let mut writer = file.try_clone().map_err(|e| e.to_string())?;
    let reader = BufReader::new(file);
    let mut agent = Agent {
        usb_printer: PrinterEmulator::device(std::path::Path::new("/dev/g_printer0"))
            .map_err(|e| format!("{e:#}"))?,
        tcp_printer: PrinterEmulator::tcp().map_err(|e| format!("{e:#}"))?,
        daemon: None,
        watcher: None,
    };
    answer(&mut writer, &Response::text(HELLO))?;
    for line in reader.lines() {
        let line = line.map_err(|e| format!("reading {port}: {e}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let response = match serde_json::from_str::<Request>(&line) {
            Ok(request) => agent.handle(request),
            Err(e) => Response::failed(format!("not a request: {e}")),
        };
        answer(&mut writer, &response)?;
    }
    Ok(())
}

fn answer(writer: &mut impl Write, response: &Response) -> Result<(), String> {
    let mut line = serde_json::to_string(response).map_err(|e| e.to_string())?;
    line.push('\n');
    writer
        .write_all(line.as_bytes())
        .and_then(|()| writer.flush())
        .map_err(|e| format!("answering: {e}"))
}

impl Agent {
    fn handle(&mut self, request: Request) -> Response {
        let result = match request {
            Request::Shell { command } => shell(&command),
            Request::PutFile { path, text } => std::fs::write(&path, text)
                .map(|()| Response::text(path.clone()))
                .map_err(|e| format!("writing {path}: {e}")),
            Request::Write {
                path,
                hex,
                chunk,
                pause_ms,
            } => write_device(&path, &hex, chunk, pause_ms),
            Request::SetClock { unix_seconds } => set_clock(unix_seconds),
            Request::StartDaemon { config, data_dir } => self.start_daemon(&config, &data_dir),
            Request::StopDaemon => self.stop_daemon(),
            Request::Control { socket, line } => control(&socket, &line),
            Request::PrinterSensors { paper, cover_open } => {
                self.printer_sensors(&paper, cover_open)
            }
            Request::PrinterTake { link } => {
                let printer = match link {
                    PrinterLink::Usb => &self.usb_printer,
                    PrinterLink::Tcp => &self.tcp_printer,
                };
                let bytes = printer.captured();
                printer.clear();
                Ok(Response::text(to_hex(&bytes)))
            }
            Request::TcpPrinterPort => self
                .tcp_printer
                .port()
                .map(|port| Response::number(i64::from(port)))
                .ok_or_else(|| "the TCP printer has no port".to_string()),
            Request::FindEventDevice { usb_id } => {
                // Enumeration after a plug takes a moment: look for up to 10 s.
                let deadline = Instant::now() + Duration::from_secs(10);
                loop {
                    match find_event_device(&usb_id) {
                        Err(_) if Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(100));
                        }
                        other => break other,
                    }
                }
            }
            Request::WatchKeys { path } => self.watch_keys(&path),
            Request::KeysSeen => self.keys_seen(),
            Request::GpioDrive { line, steps } => gpio_drive(&line, &steps),
            Request::GpioSample {
                line,
                count,
                every_ms,
            } => gpio_sample(&line, count, every_ms),
        };
        result.unwrap_or_else(Response::failed)
    }

    fn start_daemon(&mut self, config: &str, data_dir: &str) -> Result<Response, String> {
        if let Some(child) = &mut self.daemon
            && child.try_wait().map_err(|e| e.to_string())?.is_none()
        {
            return Err("a daemon is running already".into());
        }
        let log_path = format!("{data_dir}.log");
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("opening {log_path}: {e}"))?;
        let child = Command::new("/opt/leitsystem/leitsystemd")
            .args(["run", "--config", config, "--data-dir", data_dir])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting leitsystemd: {e}"))?;
        let pid = i64::from(child.id());
        self.daemon = Some(child);
        Ok(Response::number(pid))
    }

    fn stop_daemon(&mut self) -> Result<Response, String> {
        let mut child = self.daemon.take().ok_or("no daemon was started")?;
        let pid = libc::pid_t::try_from(child.id()).map_err(|e| e.to_string())?;
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                return Ok(Response::number(i64::from(status.code().unwrap_or(-1))));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err("the daemon did not stop within 10 s of SIGTERM".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn printer_sensors(&mut self, paper: &str, cover_open: bool) -> Result<Response, String> {
        let paper = match paper {
            "ok" => Paper::Ok,
            "near_end" => Paper::NearEnd,
            "out" => Paper::Out,
            other => return Err(format!("paper must be ok, near_end or out, not {other:?}")),
        };
        for printer in [&self.usb_printer, &self.tcp_printer] {
            printer.set_paper(paper);
            printer.set_cover_open(cover_open);
        }
        Ok(Response::text("set"))
    }

    fn watch_keys(&mut self, path: &str) -> Result<Response, String> {
        if self.watcher.is_some() {
            return Err("a watcher is running already".into());
        }
        let file = std::fs::File::options()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| format!("opening {path}: {e}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let presses = Arc::new(AtomicI64::new(0));
        let thread = {
            let (stop, presses) = (Arc::clone(&stop), Arc::clone(&presses));
            std::thread::spawn(move || count_key_presses(file, &stop, &presses))
        };
        self.watcher = Some(Watcher {
            stop,
            presses,
            thread,
        });
        Ok(Response::text(path))
    }

    fn keys_seen(&mut self) -> Result<Response, String> {
        let watcher = self.watcher.take().ok_or("no watcher is running")?;
        watcher.stop.store(true, Ordering::SeqCst);
        watcher
            .thread
            .join()
            .map_err(|_| "the watcher panicked".to_string())??;
        Ok(Response::number(watcher.presses.load(Ordering::SeqCst)))
    }
}

fn shell(command: &str) -> Result<Response, String> {
    let output = Command::new("/bin/sh")
        .args(["-c", command])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running sh: {e}"))?;
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    Ok(Response {
        ok: true,
        text: Some(text),
        number: Some(i64::from(output.status.code().unwrap_or(-1))),
        error: None,
    })
}

/// Waits until `fd` is ready for `events` or `deadline` passes.
fn wait_ready(fd: i32, events: libc::c_short, deadline: Instant) -> Result<bool, String> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        let mut pollfd = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        let millis = i32::try_from(left.as_millis().min(100)).unwrap_or(100);
        // SAFETY: one valid pollfd for the duration of the call.
        let ready = unsafe { libc::poll(&mut pollfd, 1, millis) };
        if ready < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("poll: {error}"));
        }
        if ready > 0 {
            if pollfd.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
                return Err(format!(
                    "the device hung up (revents {:#x})",
                    pollfd.revents
                ));
            }
            return Ok(true);
        }
    }
}

fn make_raw(file: &std::fs::File) {
    let fd = file.as_raw_fd();
    // SAFETY: termios is plain data; tcgetattr fills it for a valid fd or fails (not a tty).
    unsafe {
        let mut termios: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(fd, &mut termios) == 0 {
            libc::cfmakeraw(&mut termios);
            libc::tcsetattr(fd, libc::TCSANOW, &termios);
        }
    }
}

fn write_device(path: &str, hex: &str, chunk: usize, pause_ms: u64) -> Result<Response, String> {
    let bytes = from_hex(hex)?;
    if chunk == 0 {
        return Err("chunk must be at least 1".into());
    }
    let mut file = std::fs::File::options()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| format!("opening {path}: {e}"))?;
    make_raw(&file);
    for (index, piece) in bytes.chunks(chunk).enumerate() {
        if index > 0 && pause_ms > 0 {
            std::thread::sleep(Duration::from_millis(pause_ms));
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut written = 0;
        while written < piece.len() {
            if !wait_ready(file.as_raw_fd(), libc::POLLOUT, deadline)? {
                return Err(format!(
                    "{path} took no bytes for 2 s (chunk {index}, {} bytes written)",
                    index * chunk + written
                ));
            }
            match file.write(&piece[written..]) {
                Ok(count) => written += count,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(format!("writing {path}: {e}")),
            }
        }
    }
    Ok(Response::number(i64::try_from(bytes.len()).unwrap_or(-1)))
}

fn set_clock(unix_seconds: i64) -> Result<Response, String> {
    let time = libc::timespec {
        tv_sec: unix_seconds,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec for the duration of the call.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &time) } != 0 {
        return Err(format!(
            "clock_settime: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(Response::number(unix_seconds))
}

fn control(socket: &str, line: &str) -> Result<Response, String> {
    let mut stream =
        UnixStream::connect(socket).map_err(|e| format!("connecting to {socket}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(format!("{line}\n").as_bytes())
        .map_err(|e| format!("writing to {socket}: {e}"))?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .map_err(|e| format!("reading from {socket}: {e}"))?;
    Ok(Response::text(answer.trim_end()))
}

fn find_event_device(usb_id: &str) -> Result<Response, String> {
    let (vendor, product) = usb_id
        .split_once(':')
        .ok_or_else(|| format!("usb_id {usb_id:?} is not vvvv:pppp"))?;
    let entries =
        std::fs::read_dir("/sys/class/input").map_err(|e| format!("/sys/class/input: {e}"))?;
    let mut found: Vec<String> = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("event") {
            continue;
        }
        let id = entry.path().join("device/id");
        let read = |field: &str| {
            std::fs::read_to_string(id.join(field))
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        if read("vendor") == vendor && read("product") == product {
            found.push(format!("/dev/input/{name}"));
        }
    }
    found.sort();
    found
        .into_iter()
        .next()
        .map(Response::text)
        .ok_or_else(|| format!("no event device with USB id {usb_id}"))
}

/// Reads `struct input_event` records (24 bytes on x86_64) and counts key presses
/// (EV_KEY with value 1) until `stop`.
fn count_key_presses(
    mut file: std::fs::File,
    stop: &AtomicBool,
    presses: &AtomicI64,
) -> Result<(), String> {
    const EVENT_SIZE: usize = 24;
    let mut pending: Vec<u8> = Vec::new();
    let mut buffer = [0u8; EVENT_SIZE * 64];
    while !stop.load(Ordering::SeqCst) {
        let deadline = Instant::now() + Duration::from_millis(50);
        if !wait_ready(file.as_raw_fd(), libc::POLLIN, deadline)? {
            continue;
        }
        match file.read(&mut buffer) {
            Ok(0) => return Err("the event device closed".into()),
            Ok(count) => pending.extend_from_slice(&buffer[..count]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(format!("reading the event device: {e}")),
        }
        while pending.len() >= EVENT_SIZE {
            let event: Vec<u8> = pending.drain(..EVENT_SIZE).collect();
            let kind = u16::from_ne_bytes([event[16], event[17]]);
            let value = i32::from_ne_bytes([event[20], event[21], event[22], event[23]]);
            if kind == 1 && value == 1 {
                presses.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
    Ok(())
}

/// The sysfs folder of a gpio-sim line by its name (`/rig/gpio` names them):
/// `/sys/devices/platform/<dev_name>/<chip_name>/sim_gpio<offset>`.
fn sim_line(name: &str) -> Result<PathBuf, String> {
    let root = Path::new("/sys/kernel/config/gpio-sim");
    let entries = |dir: &Path| -> Result<Vec<PathBuf>, String> {
        Ok(std::fs::read_dir(dir)
            .map_err(|e| format!("reading {}: {e}", dir.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect())
    };
    let read = |path: &Path| {
        std::fs::read_to_string(path)
            .map(|s| s.trim().to_string())
            .map_err(|e| format!("reading {}: {e}", path.display()))
    };
    for device in entries(root)? {
        for bank in entries(&device)? {
            for line in entries(&bank)? {
                let Some(offset) = line
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_prefix("line"))
                else {
                    continue;
                };
                if read(&line.join("name"))? == name {
                    return Ok(PathBuf::from("/sys/devices/platform")
                        .join(read(&device.join("dev_name"))?)
                        .join(read(&bank.join("chip_name"))?)
                        .join(format!("sim_gpio{offset}")));
                }
            }
        }
    }
    Err(format!("no simulated GPIO line named {name}"))
}

fn gpio_drive(name: &str, steps: &[GpioStep]) -> Result<Response, String> {
    let pull = sim_line(name)?.join("pull");
    for step in steps {
        let level = if step.high { "pull-up" } else { "pull-down" };
        std::fs::write(&pull, level).map_err(|e| format!("writing {}: {e}", pull.display()))?;
        std::thread::sleep(Duration::from_millis(step.ms));
    }
    Ok(Response::number(steps.len() as i64))
}

fn gpio_sample(name: &str, count: u32, every_ms: u64) -> Result<Response, String> {
    let value = sim_line(name)?.join("value");
    let mut samples = String::new();
    for i in 0..count {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(every_ms));
        }
        let level = std::fs::read_to_string(&value)
            .map_err(|e| format!("reading {}: {e}", value.display()))?;
        samples.push_str(level.trim());
    }
    Ok(Response::text(samples))
}
