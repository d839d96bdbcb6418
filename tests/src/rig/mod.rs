//! The hardware rig: Debian's stock kernel under `qemu-system-x86_64` (software emulation),
//! with USB gadgets on `dummy_hcd` standing in for the foyer's devices, and the real daemon
//! inside meeting the kernel's real drivers (usbhid → evdev, cdc_acm, usblp). The test plays
//! the devices' side through the rig agent (`src/bin/rig-agent.rs`) over a virtio-serial port.
//! See `tests/rig/README.md`.

pub mod gpio_sim;
pub mod image;
pub mod keyboard;
pub mod protocol;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use leitsystem::control::{ControlRequest, ControlResponse};
use leitsystem::domain::{Command as EngineCommand, Outcome};
use leitsystem::plugin_host::DeviceHealth;

use crate::daemon::{build_dir, demo_config_text};
use crate::escpos::require_tool;
use image::Image;
use keyboard::Layout;
use protocol::{GpioStep, HELLO, PrinterLink, Request, Response, from_hex, to_hex};

/// How long a boot may take until the agent says hello (TCG on a loaded machine).
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// One of the rig's USB gadgets (see `tests/rig/gadget`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gadget {
    /// The HID keyboard scanner, USB id 1eab:1a03 (a Newland HR22 in USB keyboard mode).
    Scanner,
    /// The CDC ACM serial scanner, 1eab:1a06 (the HR22 in USB serial mode; `/dev/ttyACM0`).
    Serial,
    /// The USB printer, 04b8:0e03 (an Epson TM-T20's id; `/dev/usb/lp0`).
    Printer,
}

impl Gadget {
    fn name(self) -> &'static str {
        match self {
            Gadget::Scanner => "scanner",
            Gadget::Serial => "serial",
            Gadget::Printer => "printer",
        }
    }
}

/// The keyboard scanner's USB id.
pub const SCANNER_USB_ID: &str = "1eab:1a03";
/// The scanner model both scanner gadgets are (`drivers/scanner-models`): its keyboard id is
/// the keyboard gadget's, its serial id the serial gadget's.
pub const SCANNER_MODEL: &str = "newland-hr22";

/// Where the daemon finds its plugins inside the VM.
pub const PLUGIN_DIR: &str = "/opt/leitsystem/plugins";

/// The image, built once per test process.
fn image(agent: &Path) -> anyhow::Result<Image> {
    static IMAGE: OnceLock<Mutex<Option<Image>>> = OnceLock::new();
    let cell = IMAGE.get_or_init(|| Mutex::new(None));
    let mut guard = cell.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(image) = guard.as_ref() {
        return Ok(image.clone());
    }
    // The release build, as the package ships it (`tests/run` builds it before the suite).
    let target = build_dir()?
        .parent()
        .context("the build directory has no parent")?
        .to_path_buf();
    let build = target.join("release");
    let cache = target.join("rig");
    // Written under a name of this process, then renamed over the last one: QEMU reads the
    // whole file at its start, so a VM of another test process keeps what it opened.
    let partial = cache.join(format!("initramfs.cpio.{}", std::process::id()));
    let mut built = image::build(&cache, &build, agent, &partial)?;
    let out = cache.join("initramfs.cpio");
    std::fs::rename(&partial, &out)
        .with_context(|| format!("renaming {} to {}", partial.display(), out.display()))?;
    built.initramfs = out;
    *guard = Some(built.clone());
    Ok(built)
}

/// A booted rig: the VM, and the line to its agent.
#[derive(Debug)]
pub struct Rig {
    qemu: Child,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    console: PathBuf,
    daemon_socket: Option<String>,
    daemon_log: Option<String>,
    _dir: tempfile::TempDir,
}

impl Rig {
    /// Builds the image (once per process) and boots it; returns once the agent is up and the
    /// three gadgets are plugged in. `agent` is the built `rig-agent` binary.
    pub fn boot(agent: &Path) -> anyhow::Result<Rig> {
        require_tool("qemu-system-x86_64", "qemu-system-x86")?;
        let image = image(agent)?;
        let dir = tempfile::tempdir()?;
        let socket = dir.path().join("rig.sock");
        let console = dir.path().join("console.log");
        let qemu = Command::new("qemu-system-x86_64")
            .args(["-accel", "tcg", "-m", "1024", "-smp", "1"])
            .args([
                "-display",
                "none",
                "-monitor",
                "none",
                "-no-reboot",
                "-nic",
                "none",
            ])
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .arg("-kernel")
            .arg(&image.kernel)
            .arg("-initrd")
            .arg(&image.initramfs)
            .args(["-append", "console=ttyS0 panic=-1 loglevel=4"])
            .args(["-device", "virtio-serial-pci"])
            .arg("-chardev")
            .arg(format!(
                "socket,id=rig,path={},server=on,wait=off",
                socket.display()
            ))
            .args(["-device", "virtserialport,chardev=rig,name=rig"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting qemu-system-x86_64")?;
        let mut qemu = qemu;
        let started = Instant::now();
        let stream = loop {
            if let Some(status) = qemu.try_wait()? {
                let mut stderr = String::new();
                if let Some(mut pipe) = qemu.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
                }
                bail!("qemu exited with {status} at start: {stderr}");
            }
            if let Ok(stream) = UnixStream::connect(&socket) {
                break stream;
            }
            if started.elapsed() > Duration::from_secs(20) {
                let _ = qemu.kill();
                let _ = qemu.wait();
                bail!("qemu made no socket {} within 20 s", socket.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let writer = stream.try_clone()?;
        let mut rig = Rig {
            qemu,
            reader: BufReader::new(stream),
            writer,
            console,
            daemon_socket: None,
            daemon_log: None,
            _dir: dir,
        };
        let hello = rig
            .read_response(BOOT_TIMEOUT)
            .with_context(|| format!("booting {}", image.kernel_package))?;
        if hello.text.as_deref() != Some(HELLO) {
            bail!("the agent said {hello:?} instead of hello");
        }
        Ok(rig)
    }

    /// What the VM's console showed (kernel messages, init and the agent's errors).
    pub fn console_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.console).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn read_response(&mut self, timeout: Duration) -> anyhow::Result<Response> {
        self.reader.get_ref().set_read_timeout(Some(timeout))?;
        let mut line = String::new();
        let read = self.reader.read_line(&mut line);
        match read {
            Ok(0) => bail!(
                "the VM closed the agent's port; console:\n{}",
                self.console_tail()
            ),
            Ok(_) => {
                serde_json::from_str(&line).with_context(|| format!("the agent answered {line:?}"))
            }
            Err(e) => Err(e).with_context(|| {
                format!(
                    "no answer from the agent within {timeout:?}; console:\n{}",
                    self.console_tail()
                )
            }),
        }
    }

    /// Sends a request and returns the agent's answer; an error when it failed.
    pub fn call(&mut self, request: &Request) -> anyhow::Result<Response> {
        let mut line = serde_json::to_string(request)?;
        line.push('\n');
        self.writer.write_all(line.as_bytes())?;
        let response = self.read_response(REQUEST_TIMEOUT)?;
        if !response.ok {
            bail!(
                "the agent could not do {request:?}: {}",
                response.error.as_deref().unwrap_or("no reason")
            );
        }
        Ok(response)
    }

    /// Runs a shell command in the VM; its output, or an error when it exits non-zero.
    pub fn shell(&mut self, command: &str) -> anyhow::Result<String> {
        let response = self.call(&Request::Shell {
            command: command.to_string(),
        })?;
        let text = response.text.unwrap_or_default();
        if response.number != Some(0) {
            bail!("`{command}` exited with {:?}: {text}", response.number);
        }
        Ok(text)
    }

    /// Sets the VM's wall clock.
    pub fn set_clock(&mut self, at: jiff::Timestamp) -> anyhow::Result<()> {
        self.call(&Request::SetClock {
            unix_seconds: at.as_second(),
        })?;
        Ok(())
    }

    /// Starts the daemon on the demo config (no simulated devices) with `extra` appended (the
    /// `[[device]]` entries and more), data in `/data/<name>`; waits until it answers.
    pub fn start_daemon(&mut self, name: &str, extra: &str) -> anyhow::Result<()> {
        self.start_daemon_edited(name, extra, |text| text)
    }

    /// [`Rig::start_daemon`] with the config text passed through `edit` first.
    pub fn start_daemon_edited(
        &mut self,
        name: &str,
        extra: &str,
        edit: impl Fn(String) -> String,
    ) -> anyhow::Result<()> {
        let data = format!("/data/{name}");
        let config = format!("/data/{name}.toml");
        let text = edit(format!(
            "{}\n[plugins]\ndirs = [\"{PLUGIN_DIR}\"]\n\n{extra}\n",
            demo_config_text(&data)
        ));
        self.call(&Request::PutFile {
            path: config.clone(),
            text,
        })?;
        self.call(&Request::StartDaemon {
            config,
            data_dir: data.clone(),
        })?;
        self.daemon_socket = Some(format!("{data}/control.sock"));
        self.daemon_log = Some(format!("{data}.log"));
        let started = Instant::now();
        loop {
            if self
                .control(&ControlRequest::State)
                .is_ok_and(|response| response.ok)
            {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(90) {
                bail!(
                    "the daemon in the VM did not answer within 90 s; its log:\n{}",
                    self.daemon_log()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stops the daemon; an error unless it exits cleanly.
    pub fn stop_daemon(&mut self) -> anyhow::Result<()> {
        let code = self.call(&Request::StopDaemon)?.number;
        if code != Some(0) {
            bail!(
                "the daemon exited with {code:?}; its log:\n{}",
                self.daemon_log()
            );
        }
        Ok(())
    }

    /// The last lines the daemon logged.
    pub fn daemon_log(&mut self) -> String {
        let Some(log) = self.daemon_log.clone() else {
            return "(no daemon started)".into();
        };
        self.shell(&format!("tail -n 60 {log}"))
            .unwrap_or_else(|e| format!("(cannot read {log}: {e:#})"))
    }

    /// One request on the daemon's control socket (what `leitsystemd ctl` sends).
    pub fn control(&mut self, request: &ControlRequest) -> anyhow::Result<ControlResponse> {
        let socket = self
            .daemon_socket
            .clone()
            .context("no daemon was started")?;
        let response = self.call(&Request::Control {
            socket,
            line: serde_json::to_string(request)?,
        })?;
        let line = response.text.unwrap_or_default();
        serde_json::from_str(&line).with_context(|| format!("the daemon answered {line:?}"))
    }

    /// Executes an engine command on the daemon; an error when it is refused.
    pub fn execute(&mut self, command: EngineCommand) -> anyhow::Result<Outcome> {
        let response = self.control(&ControlRequest::Execute {
            request_id: None,
            command,
        })?;
        if !response.ok {
            bail!("command refused: {:?}", response.error);
        }
        response.outcome.context("no outcome in the answer")
    }

    /// Every device's health (`leitsystemd ctl devices`).
    pub fn devices(&mut self) -> anyhow::Result<Vec<DeviceHealth>> {
        self.control(&ControlRequest::Devices)?
            .devices
            .context("no devices in the answer")
    }

    /// Waits until device `id` reports `connected`.
    pub fn wait_connected(&mut self, id: &str, connected: bool) -> anyhow::Result<()> {
        let state = if connected {
            "connected"
        } else {
            "disconnected"
        };
        self.wait_device(id, state, |d| d.connected == Some(connected))
    }

    /// Waits (at most 30 s) until device `id`'s health satisfies `holds`; `what` names the
    /// state in the error.
    pub fn wait_device(
        &mut self,
        id: &str,
        what: &str,
        holds: impl Fn(&DeviceHealth) -> bool,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            let devices = self.devices()?;
            if devices.iter().any(|d| d.id == id && holds(d)) {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!(
                    "{id} did not become {what} within 30 s: {devices:#?}\ndaemon log:\n{}",
                    self.daemon_log()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Unplugs a gadget (its UDC unbound: the host side sees the USB device vanish).
    pub fn unplug(&mut self, gadget: Gadget) -> anyhow::Result<()> {
        self.shell(&format!("/rig/gadget unplug {}", gadget.name()))?;
        Ok(())
    }

    /// Plugs a gadget back in.
    pub fn plug(&mut self, gadget: Gadget) -> anyhow::Result<()> {
        self.shell(&format!("/rig/gadget plug {}", gadget.name()))?;
        Ok(())
    }

    /// Writes bytes to a device file in the VM, `chunk` bytes per write.
    pub fn write(
        &mut self,
        path: &str,
        bytes: &[u8],
        chunk: usize,
        pause_ms: u64,
    ) -> anyhow::Result<()> {
        self.call(&Request::Write {
            path: path.to_string(),
            hex: to_hex(bytes),
            chunk,
            pause_ms,
        })?;
        Ok(())
    }

    /// Types `text` on the keyboard scanner, set to `layout`, then `terminator`, one HID
    /// report every 2 ms.
    pub fn type_text(
        &mut self,
        text: &str,
        layout: Layout,
        terminator: Option<u8>,
    ) -> anyhow::Result<()> {
        let reports = keyboard::reports(text, layout, terminator).map_err(anyhow::Error::msg)?;
        let bytes: Vec<u8> = reports.concat();
        // A report every 2 ms (250 characters a second, a fast scanner). As fast as the
        // emulated USB takes them, the kernel's evdev buffer (64 events) overflowed while
        // the debug daemon under TCG was busy, and the driver rightly dropped the scan
        // (SYN_DROPPED).
        self.write("/dev/hidg0", &bytes, 8, 2)
    }

    /// Sends bytes from the serial scanner (its side of the ACM link, `/dev/ttyGS0`).
    pub fn serial_send(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.write("/dev/ttyGS0", bytes, 64, 0)
    }

    /// The bytes a printer received since the last call.
    pub fn printer_take(&mut self, link: PrinterLink) -> anyhow::Result<Vec<u8>> {
        let hex = self
            .call(&Request::PrinterTake { link })?
            .text
            .unwrap_or_default();
        from_hex(&hex).map_err(anyhow::Error::msg)
    }

    /// Sets both emulated printers' sensors: `paper` is `ok`, `near_end` or `out`.
    pub fn printer_sensors(&mut self, paper: &str, cover_open: bool) -> anyhow::Result<()> {
        self.call(&Request::PrinterSensors {
            paper: paper.to_string(),
            cover_open,
        })?;
        Ok(())
    }

    /// The TCP printer's port inside the VM.
    pub fn tcp_printer_port(&mut self) -> anyhow::Result<u16> {
        let number = self
            .call(&Request::TcpPrinterPort)?
            .number
            .context("no port")?;
        Ok(u16::try_from(number)?)
    }

    /// Drives a GPIO line as a button contact would: `steps` of (high, milliseconds).
    pub fn gpio_drive(&mut self, line: &str, steps: &[(bool, u64)]) -> anyhow::Result<()> {
        self.call(&Request::GpioDrive {
            line: line.to_string(),
            steps: steps
                .iter()
                .map(|&(high, ms)| GpioStep { high, ms })
                .collect(),
        })?;
        Ok(())
    }

    /// Reads a GPIO line `count` times, `every_ms` apart: `'0'`/`'1'` per sample.
    pub fn gpio_sample(&mut self, line: &str, count: u32, every_ms: u64) -> anyhow::Result<String> {
        self.call(&Request::GpioSample {
            line: line.to_string(),
            count,
            every_ms,
        })?
        .text
        .context("no samples")
    }

    /// The keyboard scanner's event device, as the kernel named it.
    pub fn scanner_event_device(&mut self) -> anyhow::Result<String> {
        self.call(&Request::FindEventDevice {
            usb_id: SCANNER_USB_ID.to_string(),
        })?
        .text
        .context("no path")
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = self.qemu.kill();
        let _ = self.qemu.wait();
    }
}
