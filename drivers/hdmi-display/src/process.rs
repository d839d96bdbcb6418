//! The kiosk process: started in a process group of its own, watched without reaping it too
//! early, signalled as a whole group, and never left behind.
//!
//! - [`Kiosk::start`] runs the command with `process_group(0)`, so the browser and everything
//!   it starts (cage, chromium's renderer and GPU processes) share one group whose id is the
//!   leader's pid. On Linux the leader also gets `PR_SET_PDEATHSIG = SIGTERM`: should the
//!   daemon die without stopping the device, the browser is told to quit too.
//! - [`Kiosk::has_exited`] asks `waitid(WNOWAIT)`: the leader stays a zombie until
//!   [`Kiosk::reap`], so its pid, which is the group id, cannot be given to another process
//!   while the driver still signals the group.
//! - Dropping a [`Kiosk`] that was not reaped kills the whole group with SIGKILL and reaps the
//!   leader (a panic on the worker thread cannot leave the browser running).
//! - [`OutputLines`] reads the kiosk's stdout and stderr (non-blocking `poll`) into bounded
//!   lines.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::settings::Settings;

/// Longest line of kiosk output passed on to the log, in bytes; longer lines are cut.
pub const MAX_LINE: usize = 1000;

/// A running (or exited, not yet reaped) kiosk command, leader of its own process group.
pub struct Kiosk {
    child: Child,
    pid: libc::pid_t,
    reaped: bool,
}

impl Kiosk {
    /// Starts `settings.command` in a new process group, stdin from /dev/null, stdout and
    /// stderr piped when `settings.log_output`, else /dev/null. Returns the kiosk and its
    /// output pipes.
    pub fn start(settings: &Settings) -> io::Result<(Kiosk, OutputLines)> {
        let (program, args) = settings
            .command
            .split_first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
        let output = || {
            if settings.log_output {
                Stdio::piped()
            } else {
                Stdio::null()
            }
        };
        let mut command = Command::new(program);
        command
            .args(args)
            .envs(settings.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(output())
            .stderr(output())
            .process_group(0);
        #[cfg(target_os = "linux")]
        {
            // SAFETY: the closure runs in the forked child before exec and only calls
            // `prctl`, which is async-signal-safe; it allocates nothing and takes no locks.
            unsafe {
                command.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = command.spawn()?;
        let pid = libc::pid_t::try_from(child.id()).unwrap_or(0);
        let streams = [
            child
                .stdout
                .take()
                .map(|s| (Stream::Stdout, File::from(OwnedFd::from(s)))),
            child
                .stderr
                .take()
                .map(|s| (Stream::Stderr, File::from(OwnedFd::from(s)))),
        ];
        let kiosk = Kiosk {
            child,
            pid,
            reaped: false,
        };
        if pid <= 1 {
            // Cannot happen; never signal a group we cannot name.
            return Err(io::Error::other(format!("unexpected child pid {pid}")));
        }
        Ok((kiosk, OutputLines::new(streams.into_iter().flatten())))
    }

    /// The leader's pid, which is also the group id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the leader has exited, without reaping it (`waitid` with `WNOWAIT`).
    pub fn has_exited(&self) -> bool {
        if self.reaped {
            return true;
        }
        // SAFETY: an all-zero siginfo_t is a valid value of this plain C struct.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid, writable siginfo_t; `pid` is our own child.
        let result = unsafe {
            libc::waitid(
                libc::P_PID,
                self.pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        if result != 0 {
            // EINTR: look again next time. ECHILD (someone else reaped it, e.g. SIGCHLD is
            // ignored by the process): it is gone.
            return io::Error::last_os_error().raw_os_error() != Some(libc::EINTR);
        }
        // SAFETY: waitid succeeded, so `info` holds a SIGCHLD siginfo (or zeroes).
        unsafe { info.si_pid() != 0 }
    }

    /// Sends `signal` to every process of the kiosk's group. Until [`Kiosk::reap`] the group
    /// id cannot belong to anything else (the leader is at least a zombie).
    pub fn signal_group(&self, signal: libc::c_int) {
        if self.reaped || self.pid <= 1 {
            return;
        }
        // SAFETY: plain syscall; the group is the kiosk's own (pid > 1, leader not reaped).
        unsafe {
            libc::killpg(self.pid, signal);
        }
    }

    /// Kills what is left of the group (SIGKILL) and reaps the leader; returns its status
    /// (`None` when someone else reaped it).
    pub fn reap(&mut self) -> Option<ExitStatus> {
        if self.reaped {
            return None;
        }
        self.signal_group(libc::SIGKILL);
        self.reaped = true;
        self.child.wait().ok()
    }
}

impl Drop for Kiosk {
    fn drop(&mut self) {
        if !self.reaped {
            self.reap();
        }
    }
}

/// How an exit status reads in health details: `exited with status 1`, `was killed by signal
/// 9 (SIGKILL)`.
pub fn describe_status(status: Option<ExitStatus>) -> String {
    match status {
        Some(status) => match (status.code(), status.signal()) {
            (Some(code), _) => format!("exited with status {code}"),
            (None, Some(signal)) => format!(
                "was killed by signal {signal}{}",
                signal_name(signal).map_or(String::new(), |n| format!(" ({n})"))
            ),
            (None, None) => format!("exited ({status})"),
        },
        None => "exited (status unknown)".to_string(),
    }
}

fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        _ => return None,
    })
}

/// Which of the kiosk's outputs a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl Stream {
    /// `stdout` or `stderr`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

struct Pipe {
    stream: Stream,
    file: Option<File>,
    splitter: LineSplitter,
}

/// The kiosk's output pipes, read without blocking for longer than asked.
pub struct OutputLines {
    pipes: Vec<Pipe>,
}

impl OutputLines {
    fn new(streams: impl Iterator<Item = (Stream, File)>) -> OutputLines {
        OutputLines {
            pipes: streams
                .map(|(stream, file)| Pipe {
                    stream,
                    file: Some(file),
                    splitter: LineSplitter::default(),
                })
                .collect(),
        }
    }

    /// Whether any pipe is still open.
    pub fn open(&self) -> bool {
        self.pipes.iter().any(|p| p.file.is_some())
    }

    /// Waits up to `timeout` for output and hands every complete line to `line`. Returns at
    /// once when no pipe is open (the caller then waits elsewhere). A pipe at end of file
    /// hands over its unfinished last line and closes.
    pub fn pump(&mut self, timeout: Duration, mut line: impl FnMut(Stream, String)) {
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(self.pipes.len());
        let mut which = Vec::with_capacity(self.pipes.len());
        for (i, pipe) in self.pipes.iter().enumerate() {
            if let Some(file) = &pipe.file {
                fds.push(libc::pollfd {
                    fd: file.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
                which.push(i);
            }
        }
        if fds.is_empty() {
            return;
        }
        let millis = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs on open descriptors.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, millis) };
        if ready <= 0 {
            return;
        }
        let mut buffer = [0u8; 8192];
        for (fd, &i) in fds.iter().zip(&which) {
            if fd.revents == 0 {
                continue;
            }
            let pipe = &mut self.pipes[i];
            let Some(file) = pipe.file.as_mut() else {
                continue;
            };
            // poll said readable (or hung up): one read does not block.
            match file.read(&mut buffer) {
                Ok(0) => {
                    pipe.file = None;
                    if let Some(rest) = pipe.splitter.finish() {
                        line(pipe.stream, rest);
                    }
                }
                Ok(n) => pipe.splitter.push(&buffer[..n], |l| line(pipe.stream, l)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    pipe.file = None;
                    if let Some(rest) = pipe.splitter.finish() {
                        line(pipe.stream, rest);
                    }
                }
            }
        }
    }
}

/// Splits bytes into lines of at most [`MAX_LINE`] bytes (longer ones are cut and marked),
/// lossy UTF-8, without trailing `\r`; empty lines are skipped.
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
    /// The current line was already cut: drop bytes until its end.
    skipping: bool,
}

impl LineSplitter {
    /// Feeds bytes; calls `line` for each finished line.
    pub fn push(&mut self, bytes: &[u8], mut line: impl FnMut(String)) {
        for &byte in bytes {
            if byte == b'\n' {
                if self.skipping {
                    self.skipping = false;
                } else if let Some(text) = self.take() {
                    line(text);
                }
                continue;
            }
            if self.skipping {
                continue;
            }
            self.partial.push(byte);
            if self.partial.len() > MAX_LINE {
                self.partial.truncate(MAX_LINE);
                if let Some(text) = self.take() {
                    line(format!("{text} [line cut at {MAX_LINE} bytes]"));
                }
                self.skipping = true;
            }
        }
    }

    /// The unfinished last line, if any (at end of file).
    pub fn finish(&mut self) -> Option<String> {
        self.skipping = false;
        self.take()
    }

    fn take(&mut self) -> Option<String> {
        let text = String::from_utf8_lossy(&self.partial)
            .trim_end_matches('\r')
            .to_string();
        self.partial.clear();
        (!text.trim().is_empty()).then_some(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<String> {
        let mut splitter = LineSplitter::default();
        let mut lines = Vec::new();
        for chunk in chunks {
            splitter.push(chunk, |l| lines.push(l));
        }
        lines.extend(splitter.finish());
        lines
    }

    #[test]
    fn lines_are_split_and_bounded() {
        assert_eq!(
            split(&[b"one\r\ntw", b"o\n\n  \nthree"]),
            ["one", "two", "three"]
        );
        let long = vec![b'x'; MAX_LINE * 3];
        let lines = split(&[&long, b"\nafter\n"]);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].starts_with(&"x".repeat(MAX_LINE)));
        assert!(lines[0].ends_with(&format!(" [line cut at {MAX_LINE} bytes]")));
        assert_eq!(lines[1], "after");
        assert_eq!(split(&[b"bad \xff byte\n"]), ["bad \u{fffd} byte"]);
    }

    #[test]
    fn statuses_read_well() {
        assert_eq!(
            describe_status(Some(ExitStatus::from_raw(3 << 8))),
            "exited with status 3"
        );
        assert_eq!(
            describe_status(Some(ExitStatus::from_raw(9))),
            "was killed by signal 9 (SIGKILL)"
        );
        assert_eq!(describe_status(None), "exited (status unknown)");
    }
}
