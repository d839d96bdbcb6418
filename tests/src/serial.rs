//! A serial scanner's line as the driver sees it: a socat pseudo-terminal pair (a real tty).
//! The driver opens `<dir>/scanner`; the test types into `<dir>/peer` as the scanner would.
//! Unplugging stops socat (the driver's tty hangs up and the file goes away); replugging
//! starts a new pair under the same name.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::escpos::{require_tool, stop_socat};

/// The scanner's end of a pty pair.
#[derive(Debug)]
pub struct ScannerLine {
    dir: PathBuf,
    socat: Option<Child>,
    peer: Option<std::fs::File>,
}

impl ScannerLine {
    /// A new line in `dir` (plugged in).
    pub fn new(dir: &Path) -> anyhow::Result<ScannerLine> {
        require_tool("socat", "socat")?;
        let mut line = ScannerLine {
            dir: dir.to_path_buf(),
            socat: None,
            peer: None,
        };
        line.plug()?;
        Ok(line)
    }

    /// The device file the driver opens.
    pub fn device_path(&self) -> PathBuf {
        self.dir.join("scanner")
    }

    /// Sends bytes as the scanner would.
    pub fn send(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        let peer = self.peer.as_mut().context("the scanner is unplugged")?;
        peer.write_all(bytes)?;
        peer.flush()?;
        Ok(())
    }

    /// Pulls the plug.
    pub fn unplug(&mut self) {
        self.peer = None;
        if let Some(child) = self.socat.take() {
            stop_socat(child);
        }
        for name in ["scanner", "peer"] {
            let _ = std::fs::remove_file(self.dir.join(name));
        }
    }

    /// Plugs it in again (a new pty under the same name).
    pub fn replug(&mut self) -> anyhow::Result<()> {
        self.unplug();
        self.plug()
    }

    fn plug(&mut self) -> anyhow::Result<()> {
        let (device, peer) = (self.device_path(), self.dir.join("peer"));
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("socat.log"))?;
        let mut child = Command::new("socat")
            .arg(format!("pty,raw,echo=0,link={}", device.display()))
            .arg(format!("pty,raw,echo=0,link={}", peer.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting socat")?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while !(device.exists() && peer.exists()) {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "socat exited with {status}; see {}/socat.log",
                    self.dir.display()
                );
            }
            if Instant::now() > deadline {
                stop_socat(child);
                bail!("socat did not create {} within 5 s", device.display());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let file = std::fs::File::options()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(&peer)
            .with_context(|| format!("opening {}", peer.display()))?;
        self.peer = Some(file);
        self.socat = Some(child);
        Ok(())
    }
}

impl Drop for ScannerLine {
    fn drop(&mut self) {
        self.unplug();
    }
}
