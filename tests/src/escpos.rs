//! ESC/POS test tools: an independent parser for what a printer driver sent (the npm package
//! `npos`, run by `tests/escpos/parse.js`), a QR decoder for printed images (`zbarimg`), and an
//! emulated printer behind a pseudo terminal or a TCP port that records every byte and answers
//! status queries (`DLE EOT n`) like an Epson printer.
//!
//! None of this uses the driver's own code, so a test cannot agree with the driver just because
//! both share a mistake.
//!
//! Why about 750 lines in one file: the printer emulator is one device (parser, status answers, the three transports it listens on) that the printer tests drive as a whole.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Deserialize;

/// The repository root (the parent of the tests crate).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Fails unless `program` is an executable on `PATH`, naming the Debian package to install
/// (tests never skip silently).
pub fn require_tool(program: &str, package: &str) -> anyhow::Result<()> {
    let executable = |path: &Path| {
        path.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let found = if program.contains('/') {
        executable(Path::new(program))
    } else {
        std::env::var_os("PATH").is_some_and(|paths| {
            std::env::split_paths(&paths).any(|dir| executable(&dir.join(program)))
        })
    };
    if !found {
        bail!(
            "`{program}` not found: install the Debian package {package} (bash tests/run installs it)"
        );
    }
    Ok(())
}

/// What `tests/escpos/parse.js` read from a capture.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParsedCapture {
    /// One per `ESC @` (plus one for leading bytes that are more than status queries).
    pub jobs: Vec<ParsedJob>,
    /// `DLE EOT n` commands in the whole capture.
    pub status_queries: usize,
}

/// One print job of a capture, as npos parsed it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParsedJob {
    /// Every command in order, parameters in decimal: "ESC @", "ESC t 19", "GS ! 51",
    /// "GS ( k 49 80" (cn fn only), "GS v 0 3" (m only), "GS V 66" (m only), "DLE EOT 4".
    pub commands: Vec<String>,
    /// The last `ESC t n` of the job.
    pub codepage: Option<u8>,
    /// All text, decoded by the code page selected when it was sent; line feeds as `\n`.
    pub text: String,
    /// `text` split at `\n` (a final line feed gives a last empty line).
    pub lines: Vec<String>,
    /// Payloads of the native QR codes stored (`GS ( k` cn 49 fn 80), as UTF-8.
    pub native_qr: Vec<String>,
    /// Every `GS v 0` image as a PGM (scaled by its m factor and by 4, 32 px white border).
    pub rasters: Vec<PathBuf>,
    /// Whether a `GS V` (cut) occurs.
    pub cut: bool,
    /// Length of the job in bytes.
    pub bytes: usize,
}

impl ParsedJob {
    /// How often `command` (exactly as in [`ParsedJob::commands`]) occurs.
    pub fn count(&self, command: &str) -> usize {
        self.commands.iter().filter(|c| *c == command).count()
    }
}

/// Parses a capture with npos (`node tests/escpos/parse.js CAPTURE OUT_DIR`); raster images go
/// to `out_dir`. Fails when npos cannot parse the bytes (unknown or truncated commands).
pub fn npos_parse(capture: &Path, out_dir: &Path) -> anyhow::Result<ParsedCapture> {
    require_tool("node", "nodejs")?;
    let dir = repo_root().join("tests/escpos");
    for module in ["npos", "iconv-lite"] {
        if !dir
            .join("node_modules")
            .join(module)
            .join("package.json")
            .is_file()
        {
            bail!(
                "{} is missing: run `npm ci --prefix tests/escpos` (bash tests/run does)",
                dir.join("node_modules").join(module).display()
            );
        }
    }
    let mut command = Command::new("node");
    command.arg(dir.join("parse.js")).arg(capture).arg(out_dir);
    let output = run_bounded(
        command,
        Duration::from_secs(120),
        "node tests/escpos/parse.js",
    )?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    match output.status.code() {
        Some(0) => {}
        Some(2) => bail!(
            "npos could not parse {}: {}",
            capture.display(),
            stderr.trim()
        ),
        _ => bail!(
            "node tests/escpos/parse.js failed ({}): {}",
            output.status,
            stderr.trim()
        ),
    }
    serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "reading the output of parse.js: {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// Decodes the QR codes in an image with `zbarimg` (an empty list when it finds none).
pub fn zbar_decode(image: &Path) -> anyhow::Result<Vec<String>> {
    require_tool("zbarimg", "zbar-tools")?;
    let mut command = Command::new("zbarimg");
    command
        .args([
            "--quiet",
            "--raw",
            "--nodbus",
            "-Sdisable",
            "-Sqrcode.enable",
        ])
        .arg(image);
    let output = run_bounded(command, Duration::from_secs(60), "zbarimg")?;
    match output.status.code() {
        // --raw: each payload followed by a line feed.
        Some(0) => Ok(String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|line| !line.is_empty())
            .map(str::to_string)
            .collect()),
        // "No symbol found".
        Some(4) => Ok(Vec::new()),
        _ => bail!(
            "zbarimg {} failed ({}): {}",
            image.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ),
    }
}

/// Runs a command to completion with its output captured, killing it after `timeout`.
fn run_bounded(mut command: Command, timeout: Duration, what: &str) -> anyhow::Result<Output> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buffer = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buffer);
            }
            buffer
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Ok(Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

/// The paper sensors of the emulated printer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Paper {
    /// Enough paper.
    #[default]
    Ok,
    /// The roll is nearly used up (still printing).
    NearEnd,
    /// No paper: the printer stops and is offline.
    Out,
}

/// The answer of an Epson printer to `DLE EOT n` (n = 1 printer, 2 offline cause, 4 paper
/// sensors); None for other n. Bits 1 and 4 are always set.
pub fn status_byte(n: u8, paper: Paper, cover_open: bool) -> Option<u8> {
    let flag = |on: bool, bits: u8| if on { bits } else { 0 };
    let bits = match n {
        1 => flag(cover_open || paper == Paper::Out, 0x08),
        2 => flag(cover_open, 0x04) | flag(paper == Paper::Out, 0x20),
        4 => flag(paper == Paper::NearEnd, 0x0c) | flag(paper == Paper::Out, 0x60),
        _ => return None,
    };
    Some(0x12 | bits)
}

#[derive(Debug, Default)]
struct State {
    captured: Vec<u8>,
    paper: Paper,
    cover_open: bool,
    silent: bool,
    queries: usize,
    connections: usize,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A background thread with a stop flag; its loops check the flag at least every
/// [`POLL_MS`] milliseconds.
#[derive(Debug)]
struct Worker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

const POLL_MS: i32 = 20;

impl Worker {
    fn spawn(body: impl FnOnce(Arc<AtomicBool>) + Send + 'static) -> Worker {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        Worker {
            stop,
            thread: Some(std::thread::spawn(move || body(flag))),
        }
    }

    fn finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits up to `POLL_MS` for `fd` to become readable; Ok(false) on timeout.
fn poll_readable(fd: i32) -> std::io::Result<bool> {
    let mut pollfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, for the duration of the call.
    let ready = unsafe { libc::poll(&mut pollfd, 1, POLL_MS) };
    if ready < 0 {
        let error = std::io::Error::last_os_error();
        return if error.kind() == std::io::ErrorKind::Interrupted {
            Ok(false)
        } else {
            Err(error)
        };
    }
    Ok(ready > 0 && pollfd.revents != 0)
}

/// The printer's side of one link: records what arrives and answers status queries, until the
/// link closes or `stop` is set. `io` is non-blocking.
fn serve(mut io: impl Read + Write + AsRawFd, shared: &Shared, stop: &AtomicBool) {
    let mut buffer = [0u8; 4096];
    // The last bytes of a possibly unfinished `DLE EOT n`.
    let mut window: Vec<u8> = Vec::with_capacity(2);
    while !stop.load(Ordering::SeqCst) {
        match poll_readable(io.as_raw_fd()) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(_) => return,
        }
        let count = match io.read(&mut buffer) {
            // End of file, or EIO from a pty whose other end went away.
            Ok(0) => return,
            Ok(count) => count,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        let mut answers = Vec::new();
        {
            let mut state = shared.lock();
            state.captured.extend_from_slice(&buffer[..count]);
            for &byte in &buffer[..count] {
                if window == [0x10, 0x04] {
                    window.clear();
                    if let Some(answer) = status_byte(byte, state.paper, state.cover_open) {
                        state.queries += 1;
                        if !state.silent {
                            answers.push(answer);
                        }
                        continue;
                    }
                }
                if window.len() == 2 {
                    window.remove(0);
                }
                window.push(byte);
            }
        }
        shared.changed.notify_all();
        // Like a printer with a full buffer, drop answers the host does not take.
        if !answers.is_empty() && io.write_all(&answers).is_err() {
            return;
        }
    }
}

#[derive(Debug)]
enum Link {
    Pty {
        dir: PathBuf,
        socat: Option<Child>,
        reader: Option<Worker>,
    },
    Tcp {
        port: u16,
        acceptor: Option<Worker>,
    },
    /// The printer's own end of a USB link, e.g. the printer gadget's `/dev/g_printer0` on the
    /// hardware rig: opened again whenever it fails (the USB cable pulled and plugged back).
    Device {
        path: PathBuf,
        reader: Option<Worker>,
    },
}

/// An emulated ESC/POS printer: records every byte a driver sends and answers `DLE EOT n`
/// (n = 1, 2, 4) from its emulated sensors, behind a pseudo terminal (like a USB or serial
/// printer's device file) or a TCP port (like a network printer on port 9100).
///
/// A `DLE EOT n` is answered wherever it appears in the byte stream, also inside image data,
/// as real printers do.
#[derive(Debug)]
pub struct PrinterEmulator {
    shared: Arc<Shared>,
    link: Link,
}

impl PrinterEmulator {
    /// A printer behind a pseudo terminal: the driver opens `<dir>/printer`
    /// ([`PrinterEmulator::device_path`]); socat relays it to `<dir>/peer`, the printer's side.
    pub fn pty(dir: &Path) -> anyhow::Result<Self> {
        require_tool("socat", "socat")?;
        let mut emulator = PrinterEmulator {
            shared: Arc::default(),
            link: Link::Pty {
                dir: dir.to_path_buf(),
                socat: None,
                reader: None,
            },
        };
        emulator.plug()?;
        Ok(emulator)
    }

    /// A network printer listening on 127.0.0.1 (a free port, [`PrinterEmulator::port`]). It
    /// serves one connection at a time; a new one replaces the old.
    pub fn tcp() -> anyhow::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).context("binding 127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let mut emulator = PrinterEmulator {
            shared: Arc::default(),
            link: Link::Tcp {
                port,
                acceptor: None,
            },
        };
        emulator.start_acceptor(listener)?;
        Ok(emulator)
    }

    /// A printer on the device side of a USB link (the Linux printer gadget's
    /// `/dev/g_printer0`): the driver writes to the host's `/dev/usb/lp0`, and the bytes and
    /// status answers travel through the kernel's usblp and g_printer drivers.
    pub fn device(path: &Path) -> anyhow::Result<Self> {
        let mut emulator = PrinterEmulator {
            shared: Arc::default(),
            link: Link::Device {
                path: path.to_path_buf(),
                reader: None,
            },
        };
        emulator.start_device_reader()?;
        Ok(emulator)
    }

    /// Serves the device file until stopped, opening it again after each failure.
    fn start_device_reader(&mut self) -> anyhow::Result<()> {
        let Link::Device { path, reader } = &mut self.link else {
            bail!("not a device printer");
        };
        let path = path.clone();
        let shared = Arc::clone(&self.shared);
        *reader = Some(Worker::spawn(move |stop| {
            while !stop.load(Ordering::SeqCst) {
                let file = std::fs::File::options()
                    .read(true)
                    .write(true)
                    .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
                    .open(&path);
                match file {
                    Ok(file) => {
                        shared.lock().connections += 1;
                        serve(file, &shared, &stop);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(POLL_MS as u64)),
                }
                std::thread::sleep(Duration::from_millis(POLL_MS as u64));
            }
        }));
        Ok(())
    }

    /// The device file a driver opens (pseudo terminal only).
    pub fn device_path(&self) -> Option<PathBuf> {
        match &self.link {
            Link::Pty { dir, .. } => Some(dir.join("printer")),
            Link::Tcp { .. } | Link::Device { .. } => None,
        }
    }

    /// The TCP port (network printer only).
    pub fn port(&self) -> Option<u16> {
        match &self.link {
            Link::Pty { .. } | Link::Device { .. } => None,
            Link::Tcp { port, .. } => Some(*port),
        }
    }

    /// Every byte received since the start or the last [`PrinterEmulator::clear`].
    pub fn captured(&self) -> Vec<u8> {
        self.shared.lock().captured.clone()
    }

    /// Forgets the bytes received so far.
    pub fn clear(&self) {
        self.shared.lock().captured.clear();
    }

    /// Writes the bytes received so far to `path`.
    pub fn write_capture(&self, path: &Path) -> anyhow::Result<()> {
        std::fs::write(path, self.captured()).with_context(|| format!("writing {}", path.display()))
    }

    /// Parses the bytes received so far with npos ([`npos_parse`]); the capture and the images
    /// go to `out_dir`.
    pub fn parse(&self, out_dir: &Path) -> anyhow::Result<ParsedCapture> {
        std::fs::create_dir_all(out_dir)?;
        let capture = out_dir.join("capture.bin");
        self.write_capture(&capture)?;
        npos_parse(&capture, out_dir)
    }

    /// Waits until `predicate` holds for the bytes received, and returns them.
    pub fn wait_for_bytes(
        &self,
        mut predicate: impl FnMut(&[u8]) -> bool,
        timeout: Duration,
    ) -> anyhow::Result<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        loop {
            if predicate(&state.captured) {
                return Ok(state.captured.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                let tail = &state.captured[state.captured.len().saturating_sub(32)..];
                bail!(
                    "timed out after {timeout:?} waiting for the printer to receive the expected \
                     bytes; it has {} bytes, ending in {tail:02x?}",
                    state.captured.len()
                );
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Sets the paper sensors.
    pub fn set_paper(&self, paper: Paper) {
        self.shared.lock().paper = paper;
    }

    /// Opens or closes the cover (an open cover makes the printer offline).
    pub fn set_cover_open(&self, open: bool) {
        self.shared.lock().cover_open = open;
    }

    /// With `false`, the printer still takes bytes but answers no status query (hung).
    pub fn set_answering(&self, answering: bool) {
        self.shared.lock().silent = !answering;
    }

    /// Status queries (`DLE EOT 1/2/4`) received, answered or not.
    pub fn status_queries(&self) -> usize {
        self.shared.lock().queries
    }

    /// TCP connections accepted so far (0 behind a pseudo terminal).
    pub fn connections(&self) -> usize {
        self.shared.lock().connections
    }

    /// Pulls the plug: behind a pseudo terminal, socat is stopped, so the driver's open device
    /// hangs up and `<dir>/printer` disappears; on TCP, the connection is dropped and
    /// connections are refused.
    pub fn unplug(&mut self) -> anyhow::Result<()> {
        match &mut self.link {
            Link::Pty { dir, socat, reader } => {
                if let Some(mut reader) = reader.take() {
                    reader.stop();
                }
                if let Some(child) = socat.take() {
                    stop_socat(child);
                }
                for name in ["printer", "peer"] {
                    let _ = std::fs::remove_file(dir.join(name));
                }
            }
            Link::Tcp { acceptor, .. } => {
                if let Some(mut acceptor) = acceptor.take() {
                    acceptor.stop();
                }
            }
            Link::Device { reader, .. } => {
                if let Some(mut reader) = reader.take() {
                    reader.stop();
                }
            }
        }
        Ok(())
    }

    /// Plugs the printer in again: the same `<dir>/printer` (a new pseudo terminal) or the
    /// same port.
    pub fn replug(&mut self) -> anyhow::Result<()> {
        self.unplug()?;
        match &self.link {
            Link::Pty { .. } => self.plug(),
            Link::Device { .. } => self.start_device_reader(),
            Link::Tcp { port, .. } => {
                let port = *port;
                let listener = TcpListener::bind(("127.0.0.1", port))
                    .with_context(|| format!("binding 127.0.0.1:{port} again"))?;
                self.start_acceptor(listener)
            }
        }
    }

    /// Starts socat and the reader on `<dir>/peer`.
    fn plug(&mut self) -> anyhow::Result<()> {
        let Link::Pty { dir, socat, reader } = &mut self.link else {
            bail!("not a pseudo terminal printer");
        };
        let printer = dir.join("printer");
        let peer = dir.join("peer");
        for path in [&printer, &peer] {
            let _ = std::fs::remove_file(path);
        }
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(dir.join("socat.log"))
            .context("opening socat.log")?;
        let mut child = Command::new("socat")
            .arg("-d")
            .arg("-d")
            .arg(format!("pty,raw,echo=0,link={}", printer.display()))
            .arg(format!("pty,raw,echo=0,link={}", peer.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting socat")?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while !(printer.exists() && peer.exists()) {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "socat exited with {status} before creating the pseudo terminals; see {}",
                    dir.join("socat.log").display()
                );
            }
            if Instant::now() > deadline {
                stop_socat(child);
                bail!("socat did not create {} within 5 s", printer.display());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let file = std::fs::File::options()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
            .open(&peer);
        let file = match file {
            Ok(file) => file,
            Err(e) => {
                stop_socat(child);
                return Err(e).with_context(|| format!("opening {}", peer.display()));
            }
        };
        let shared = Arc::clone(&self.shared);
        *reader = Some(Worker::spawn(move |stop| serve(file, &shared, &stop)));
        *socat = Some(child);
        Ok(())
    }

    /// Accepts connections on `listener` in the background, one at a time.
    fn start_acceptor(&mut self, listener: TcpListener) -> anyhow::Result<()> {
        let Link::Tcp { acceptor, .. } = &mut self.link else {
            bail!("not a network printer");
        };
        listener.set_nonblocking(true)?;
        let shared = Arc::clone(&self.shared);
        *acceptor = Some(Worker::spawn(move |stop| {
            let mut current: Option<(Worker, TcpStream)> = None;
            while !stop.load(Ordering::SeqCst) {
                if let Some((worker, _)) = &current
                    && worker.finished()
                {
                    current = None;
                }
                match poll_readable(listener.as_raw_fd()) {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(_) => break,
                }
                let Ok((stream, _)) = listener.accept() else {
                    continue;
                };
                if let Some((mut worker, old)) = current.take() {
                    worker.stop();
                    let _ = old.shutdown(Shutdown::Both);
                }
                let Ok(reading) = stream.try_clone() else {
                    continue;
                };
                if stream.set_nonblocking(true).is_err() {
                    continue;
                }
                shared.lock().connections += 1;
                let shared = Arc::clone(&shared);
                let worker = Worker::spawn(move |stop| serve(reading, &shared, &stop));
                current = Some((worker, stream));
            }
            if let Some((mut worker, stream)) = current.take() {
                worker.stop();
                let _ = stream.shutdown(Shutdown::Both);
            }
            // The listener is dropped here: connections are refused from now on.
        }));
        Ok(())
    }
}

impl Drop for PrinterEmulator {
    fn drop(&mut self) {
        let _ = self.unplug();
    }
}

/// SIGTERM (socat then removes its links), SIGKILL after 2 s; always reaped.
/// Stops a socat started by a test: SIGTERM, then SIGKILL after 2 s.
pub fn stop_socat(mut child: Child) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: signalling our own child process has no memory-safety impact.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = child.kill();
    let _ = child.wait();
}
