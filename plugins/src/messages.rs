//! Messages across the plugin boundary: JSON objects with a version `"v"` and a `"type"`.
//!
//! Plugin → host ([`PluginMessage`]), e.g. `{"v":1,"type":"scanned","code":"..."}`;
//! host → plugin ([`HostMessage`]), e.g. `{"v":1,"type":"display","state":{...}}`;
//! device config passed to `create` ([`DeviceConfig`]), e.g.
//! `{"v":1,"id":"foyer-scanner","role":"scanner","desks":[],"options":{"port":7001}}`.
//!
//! A receiver accepts version [`MESSAGE_VERSION`] and refuses others with a clear error; unknown
//! `type`s are refused, so a newer plugin cannot be silently misunderstood.

use serde::{Deserialize, Serialize};

/// Version of the message formats below.
pub const MESSAGE_VERSION: u64 = 1;

/// Longest message accepted in either direction.
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// What a device does for the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Emits scanned codes.
    Scanner,
    /// Emits desk actions.
    Buttons,
    /// Prints tickets, reports paper and cover status.
    Printer,
    /// Shows the display state.
    Display,
}

impl Role {
    /// The role's name as in configs and descriptors.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Scanner => "scanner",
            Role::Buttons => "buttons",
            Role::Printer => "printer",
            Role::Display => "display",
        }
    }
}

/// The config a device instance is created from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceConfig {
    /// Message format version.
    #[serde(default = "version")]
    pub v: u64,
    /// Device id from the daemon's config.
    pub id: String,
    /// Role the device plays.
    pub role: Role,
    /// Desks the device belongs to (buttons), if any.
    #[serde(default)]
    pub desks: Vec<String>,
    /// Plugin-specific options, as written in the daemon's config.
    #[serde(default)]
    pub options: serde_json::Value,
}

fn version() -> u64 {
    MESSAGE_VERSION
}

/// A desk action from a button.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ButtonAction {
    /// Finish the current visitor and call the next.
    Next,
    /// Call the current ticket again.
    Recall,
    /// The visitor arrived.
    Start,
    /// The visit is done.
    Finish,
    /// The visitor did not come.
    NoShow,
    /// Set the visitor aside.
    Park,
    /// Put the desk's longest-parked visitor back in line (the next "next" calls them).
    Resume,
    /// Open the desk.
    Open,
    /// Pause the desk.
    Pause,
    /// Close the desk.
    Close,
    /// The desk's silent alarm (staff safety): shown to admins and the website, never on a
    /// public display.
    Alarm,
}

/// Paper level of a printer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Paper {
    /// Enough paper.
    Ok,
    /// The roll is nearly used up.
    NearEnd,
    /// No paper.
    Out,
}

/// Log levels of plugin log messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    /// Debug detail.
    Debug,
    /// Normal operation.
    Info,
    /// Something is off but works.
    Warn,
    /// Something failed.
    Error,
}

/// Plugin → host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum PluginMessage {
    /// A code was scanned.
    Scanned {
        /// The code as read.
        code: String,
    },
    /// The device (dis)connected.
    Connection {
        /// Connected now?
        connected: bool,
        /// Why, for the admin.
        #[serde(default)]
        detail: Option<String>,
    },
    /// A desk button was pressed.
    Button {
        /// The desk.
        desk: String,
        /// What to do.
        action: ButtonAction,
        /// Unique per press, so a repeated delivery has one effect.
        event_id: String,
    },
    /// A print job is done.
    PrintDone {
        /// The job.
        job: String,
    },
    /// A print job failed.
    PrintFailed {
        /// The job.
        job: String,
        /// Why (paper out, cover open, offline, ...).
        reason: String,
    },
    /// Printer status changed.
    PrinterStatus {
        /// Paper level.
        paper: Paper,
        /// Cover open?
        cover_open: bool,
        /// Reachable?
        online: bool,
    },
    /// The device failed (e.g. a plugin thread panicked); the host restarts it.
    Failed {
        /// Why.
        reason: String,
    },
    /// A log line.
    Log {
        /// Level.
        level: LogLevel,
        /// Text.
        message: String,
    },
}

/// Host → plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum HostMessage {
    /// Print a ticket.
    Print {
        /// Job id, echoed in `print_done` / `print_failed`.
        job: String,
        /// The ticket, laid out by the daemon.
        document: crate::document::Document,
    },
    /// Show a display state.
    Display {
        /// The public display state (never personal data).
        state: serde_json::Value,
    },
    /// The state of the desks a buttons device serves (its desk LEDs): sent at start and
    /// whenever it changes, always the whole list.
    Desks {
        /// One entry per desk of the device.
        desks: Vec<DeskLight>,
    },
}

impl HostMessage {
    /// The message's `type`, as on the wire.
    pub fn kind(&self) -> &'static str {
        match self {
            HostMessage::Print { .. } => "print",
            HostMessage::Display { .. } => "display",
            HostMessage::Desks { .. } => "desks",
        }
    }
}

/// What a desk's light shows: lit while a visitor is called there (not yet being served),
/// blinking while the desk's silent alarm is raised. Staff-facing only: never sent to displays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeskLight {
    /// The desk.
    pub desk: String,
    /// A visitor is called to the desk and has not been served yet.
    pub called: bool,
    /// When the desk's latest silent alarm of the day that nobody has acknowledged yet was
    /// raised (ms since 1970, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alarm_at: Option<i64>,
}

fn with_version<T: Serialize>(message: &T) -> Vec<u8> {
    let mut value = serde_json::to_value(message).unwrap_or(serde_json::Value::Null);
    if let serde_json::Value::Object(map) = &mut value {
        map.insert("v".to_string(), serde_json::Value::from(MESSAGE_VERSION));
    }
    serde_json::to_vec(&value).unwrap_or_default()
}

fn without_version(bytes: &[u8]) -> Result<serde_json::Value, String> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(format!(
            "message of {} bytes exceeds {MAX_MESSAGE_BYTES}",
            bytes.len()
        ));
    }
    let mut value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let serde_json::Value::Object(map) = &mut value else {
        return Err("not a JSON object".to_string());
    };
    match map.remove("v").and_then(|v| v.as_u64()) {
        Some(MESSAGE_VERSION) => Ok(value),
        Some(other) => Err(format!(
            "message version {other} not supported (this side speaks {MESSAGE_VERSION})"
        )),
        None => Err("message without a version \"v\"".to_string()),
    }
}

/// Encodes a plugin message with its version.
pub fn encode_plugin_message(message: &PluginMessage) -> Vec<u8> {
    with_version(message)
}

/// Decodes a plugin message, checking size and version.
pub fn decode_plugin_message(bytes: &[u8]) -> Result<PluginMessage, String> {
    serde_json::from_value(without_version(bytes)?).map_err(|e| format!("invalid message: {e}"))
}

/// Encodes a host message with its version.
pub fn encode_host_message(message: &HostMessage) -> Vec<u8> {
    with_version(message)
}

/// Decodes a host message, checking size and version.
pub fn decode_host_message(bytes: &[u8]) -> Result<HostMessage, String> {
    serde_json::from_value(without_version(bytes)?).map_err(|e| format!("invalid message: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_with_their_version() {
        let message = PluginMessage::Button {
            desk: "3".into(),
            action: ButtonAction::NoShow,
            event_id: "b-17".into(),
        };
        let bytes = encode_plugin_message(&message);
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            text.contains("\"v\":1") && text.contains("\"type\":\"button\""),
            "{text}"
        );
        assert_eq!(decode_plugin_message(&bytes), Ok(message));
        let desks = HostMessage::Desks {
            desks: vec![DeskLight {
                desk: "1".into(),
                called: true,
                alarm_at: Some(1_796_632_200_000),
            }],
        };
        let bytes = encode_host_message(&desks);
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            text.contains("\"type\":\"desks\"") && text.contains("\"alarm_at\":1796632200000"),
            "{text}"
        );
        assert_eq!(decode_host_message(&bytes), Ok(desks));
    }

    #[test]
    fn other_versions_unknown_types_and_garbage_are_refused_clearly() {
        let cases: [(&[u8], &str); 5] = [
            (
                br#"{"v":2,"type":"scanned","code":"x"}"#,
                "message version 2 not supported",
            ),
            (br#"{"type":"scanned","code":"x"}"#, "without a version"),
            (br#"{"v":1,"type":"teleport"}"#, "invalid message"),
            (br#"[1,2]"#, "not a JSON object"),
            (b"\xff\xfe", "not JSON"),
        ];
        for (bytes, expected) in cases {
            let err = decode_plugin_message(bytes).err().unwrap_or_default();
            assert!(err.contains(expected), "{err} should contain {expected}");
        }
        let big = vec![b' '; MAX_MESSAGE_BYTES + 1];
        assert!(decode_host_message(&big).is_err());
    }
}
