//! A display plugin that panics on purpose, chosen by the option `panic_in`:
//! `create` (every creation panics), `message` (panics on every message it receives), or
//! `thread` (a plugin thread panics shortly after creation). Used by the system tests to show
//! that a panic never crosses the ABI, the daemon survives and the device is restarted.

use leitsystem_plugin::{DeviceConfig, Driver, Host, HostMessage};

/// The misbehaving device.
pub struct Panicky;

impl Driver for Panicky {
    fn create(config: DeviceConfig, host: Host) -> Result<Self, String> {
        match config.options.get("panic_in").and_then(|v| v.as_str()) {
            Some("create") => panic!("deliberate panic in create"),
            Some("thread") => {
                host.spawn("panicky-worker", || {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    panic!("deliberate panic on a plugin thread");
                })
                .map_err(|e| e.to_string())?;
                Ok(Panicky)
            }
            Some("message") => Ok(Panicky),
            other => Err(format!(
                "option panic_in must be create, message or thread, not {other:?}"
            )),
        }
    }

    fn handle(&mut self, _message: HostMessage) -> Result<(), String> {
        panic!("deliberate panic handling a message")
    }
}

leitsystem_plugin::export_plugin!(Panicky, name: "panicky", version: "0.1.0", roles: "display");
