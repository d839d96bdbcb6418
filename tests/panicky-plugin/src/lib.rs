//! A display plugin that panics on purpose, chosen by the option `panic_in`:
//! `create` (every creation panics), `message` (panics on every message it receives), or
//! `thread` (a plugin thread panics shortly after creation; its messages are taken). Used by the system tests to show
//! that a panic never crosses the ABI, the daemon survives and the device is restarted.
//!
//! With the option `record` (a file), every creation appends a line `create` and every
//! message it takes a line with the message's type and, for a display state, its `seq`: the
//! tests read what each instance was sent.

use std::io::Write;

use leitsystem_plugin::{DeviceConfig, Driver, Host, HostMessage};

/// The misbehaving device.
pub struct Panicky {
    record: Option<std::path::PathBuf>,
    panic_on_messages: bool,
}

impl Panicky {
    fn note(&self, line: &str) {
        if let Some(path) = &self.record
            && let Ok(mut file) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
        {
            let _ = writeln!(file, "{line}");
        }
    }
}

impl Driver for Panicky {
    fn create(config: DeviceConfig, host: Host) -> Result<Self, String> {
        let mode = config.options.get("panic_in").and_then(|v| v.as_str());
        let device = Panicky {
            panic_on_messages: mode == Some("message"),
            record: config
                .options
                .get("record")
                .and_then(|v| v.as_str())
                .map(std::path::PathBuf::from),
        };
        device.note("create");
        match mode {
            Some("create") => panic!("deliberate panic in create"),
            Some("thread") => {
                host.spawn("panicky-worker", || {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    panic!("deliberate panic on a plugin thread");
                })
                .map_err(|e| e.to_string())?;
                Ok(device)
            }
            Some("message") => Ok(device),
            other => Err(format!(
                "option panic_in must be create, message or thread, not {other:?}"
            )),
        }
    }

    fn handle(&mut self, message: HostMessage) -> Result<(), String> {
        match &message {
            HostMessage::Display { state } => {
                self.note(&format!("display {}", state["seq"]));
            }
            other => self.note(other.kind()),
        }
        if self.panic_on_messages {
            panic!("deliberate panic handling a message")
        }
        Ok(())
    }
}

leitsystem_plugin::export_plugin!(Panicky, name: "panicky", version: "0.1.0", roles: "display");
